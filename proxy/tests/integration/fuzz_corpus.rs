//! The fuzz targets' corpora and past crashes, replayed through the same bodies on
//! stable Rust (`apigate::fuzzing`): what the fuzzer found keeps being checked.
//!
//! `APIGATE_WRITE_SEEDS=1` also writes the seed inputs below into `fuzz/corpus/`, where
//! a fuzzing run starts from them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use apigate::fuzzing;

type Body = fn(&[u8]);

const TARGETS: [(&str, Body); 4] = [
    ("proxy_header", fuzzing::proxy_header),
    ("connect_request", fuzzing::connect_request),
    ("client_hello", fuzzing::client_hello),
    ("config", fuzzing::config),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `dir`, or none if it does not exist.
fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn corpora_and_past_crashes_replay_clean() {
    let write = std::env::var_os("APIGATE_WRITE_SEEDS").is_some();
    for (target, body) in TARGETS {
        let seeds = seeds(target);
        for (i, seed) in seeds.iter().enumerate() {
            body(seed);
            if write {
                let dir = fuzz_dir().join("corpus").join(target);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
            }
        }
        let corpus = inputs(&fuzz_dir().join("corpus").join(target));
        let crashes = inputs(&fuzz_dir().join("regressions").join(target));
        assert!(
            corpus.len() >= seeds.len(),
            "{target}: the committed corpus has {} inputs, fewer than its seeds",
            corpus.len()
        );
        for (path, bytes) in corpus.iter().chain(&crashes) {
            let replay = std::panic::catch_unwind(|| body(bytes));
            assert!(replay.is_ok(), "{target}: {} fails", path.display());
        }
    }
}

/// Well-formed inputs a fuzzing run starts from: what real peers send.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let framed = |head: &[u8], bytes: &[u8]| [head, bytes].concat();
    match target {
        "proxy_header" => {
            let tls = b"\x16\x03\x01\x00\x05hello".to_vec();
            let headers = [
                b"PROXY TCP4 192.0.2.7 10.0.0.2 56324 443\r\n".to_vec(),
                b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n".to_vec(),
                b"PROXY UNKNOWN\r\n".to_vec(),
                v2(ppp::v2::Command::Proxy, "192.0.2.7:1234", "10.0.0.2:443"),
                v2(
                    ppp::v2::Command::Proxy,
                    "[2001:db8::7]:1234",
                    "[2001:db8::1]:443",
                ),
                v2(ppp::v2::Command::Local, "192.0.2.7:1234", "10.0.0.2:443"),
                Vec::new(),
            ];
            let mut seeds = Vec::new();
            for header in &headers {
                // optional + trusted in one read; required + trusted in steps of 7.
                seeds.push(framed(&[1 | 4, 0], &[header.as_slice(), &tls].concat()));
                seeds.push(framed(&[2 | 4, 7], &[header.as_slice(), &tls].concat()));
            }
            // untrusted peers, and the mode off.
            seeds.push(framed(&[1, 0], &[headers[0].as_slice(), &tls].concat()));
            seeds.push(framed(&[0, 3], &[headers[3].as_slice(), &tls].concat()));
            seeds
        }
        "connect_request" => {
            let head = |destination: &str| {
                format!(
                    "CONNECT kube-apiserver:443 HTTP/1.1\r\nHost: kube-apiserver:443\r\nX-Gardener-Destination: {destination}\r\n\r\n\x16\x03\x01"
                )
                .into_bytes()
            };
            vec![
                framed(&[0], &head(fuzzing::DESTINATION)),
                framed(&[5], &head(fuzzing::DESTINATION)),
                framed(
                    &[0],
                    &head("outbound|443||kube-apiserver.shoot--p.svc.cluster.local"),
                ),
                framed(
                    &[0],
                    &head("OUTBOUND|443||kube-apiserver.shoot--a.svc.cluster.local.evil"),
                ),
            ]
        }
        "client_hello" => {
            let mut seeds = Vec::new();
            for name in fuzzing::HOSTNAMES
                .iter()
                .chain(&["unknown.example.com", "192.0.2.1"])
            {
                let hello = crate::support::client_hello(name);
                seeds.push(framed(&[0], &hello));
                seeds.push(framed(&[100], &hello));
            }
            seeds
        }
        "config" => vec![
            fuzzing::fixture_config().into_bytes(),
            readme_config().into_bytes(),
        ],
        _ => Vec::new(),
    }
}

fn v2(command: ppp::v2::Command, source: &str, destination: &str) -> Vec<u8> {
    let addresses = (
        source.parse::<SocketAddr>().unwrap(),
        destination.parse::<SocketAddr>().unwrap(),
    );
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | command,
        ppp::v2::Protocol::Stream,
        addresses,
    )
    .write_tlv(ppp::v2::Type::Authority, b"api.example.com")
    .unwrap()
    .build()
    .unwrap()
}

/// The README's reference configuration (its first YAML block).
fn readme_config() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme.find("```yaml\n").unwrap() + "```yaml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    readme[start..end].to_string()
}

#[test]
fn the_seeds_reach_what_they_aim_at() {
    // The fixture routes the seeds' names and destination (or every routing property
    // above would be checked against nothing).
    let snapshot = &fuzzing::fixture().snapshot;
    for name in fuzzing::HOSTNAMES {
        assert!(snapshot.route_for_sni(name).is_some(), "{name}");
    }
    assert!(snapshot
        .route_for_destination(fuzzing::DESTINATION)
        .is_some());
    // The README's reference configuration compiles with the fixture's files.
    let objects = apigate_control::source::parse_documents(&readme_config(), "README").unwrap();
    let inputs = apigate_control::source::Inputs {
        objects,
        files: fuzzing::fixture().files.clone(),
        ..Default::default()
    };
    if let Err(errors) = apigate_control::compile(&inputs) {
        panic!("{errors:#?}");
    }
}
