//! The bodies of apigate's fuzz targets, one per parser of untrusted input.
//!
//! `fuzz/` (built with `cargo fuzz`) calls these from libFuzzer; the test suite replays
//! the committed corpora and every past crash through the same functions on stable
//! Rust, so a corpus keeps guarding the code without a fuzzer. A body panics only when
//! a property it checks fails, and each checks more than "no panic":
//! - the PROXY header and CONNECT readers decide the same however the bytes are split
//!   over reads (a byte of the input sets the split), and never let an untrusted
//!   peer claim another address or a destination select a route it merely contains;
//! - ClientHello peeking answers the same split or whole, and the SNI selects only a
//!   route that lists it;
//! - a configuration that compiles keeps the snapshot's invariants and reads back, from
//!   its own rendering, as the same objects.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use apigate_control::model::{Object, ProxyProtocolMode};
use apigate_control::snapshot::Snapshot;
use apigate_control::source::{parse_documents, render_documents, Files, Inputs};

use crate::listener::client_hello::HelloParser;
use crate::listener::{connect, proxy_header};

/// The CONNECT destination header the targets parse (Gardener's default).
const DESTINATION_HEADER: &str = "X-Gardener-Destination";

/// Hostnames and destinations of [`fixture`]'s routes, which seed inputs aim at.
pub const HOSTNAMES: [&str; 3] = ["a.example.com", "b.example.com", "p.example.com"];
/// A destination that selects the first route.
pub const DESTINATION: &str = "outbound|443||kube-apiserver.shoot--a.svc.cluster.local";

/// The prefix lengths at which a reader looks at the input: every `step` bytes (a step
/// of 0 means one read of everything), then the whole input.
fn prefixes(len: usize, step: u8) -> impl Iterator<Item = usize> {
    let step = if step == 0 {
        len.max(1)
    } else {
        usize::from(step)
    };
    (step..len).step_by(step).chain(std::iter::once(len))
}

/// Input: `[flags, step, bytes…]`; flags bit 0–1 the mode (off, optional, required),
/// bit 2 whether the peer is trusted.
pub fn proxy_header(data: &[u8]) {
    let [flags, step, bytes @ ..] = data else {
        return;
    };
    let mode = match flags & 3 {
        0 => ProxyProtocolMode::Off,
        1 => ProxyProtocolMode::Optional,
        _ => ProxyProtocolMode::Required,
    };
    let trusted = flags & 4 != 0;
    let peer: SocketAddr = ([10, 0, 0, 1], 40000).into();
    // Errors compared by kind: their text may quote more or fewer bytes.
    let decide = |prefix: &[u8]| {
        proxy_header::parse(prefix, peer, mode, trusted).map_err(|e| match e {
            proxy_header::ProxyHeaderError::Untrusted(ip) => (e.reason(), Some(ip)),
            proxy_header::ProxyHeaderError::Malformed(_) => (e.reason(), None),
        })
    };
    let whole = decide(bytes);
    // What the reader decides: at the first read after which the bytes decide.
    let read = prefixes(bytes.len(), *step)
        .map(|n| (n, decide(&bytes[..n])))
        .find(|(_, d)| *d != Ok(proxy_header::Parsed::NeedMore));
    if let Some((n, decided)) = &read {
        assert_eq!(
            decided, &whole,
            "the answer after {n} bytes changed with more bytes"
        );
    }
    if let Ok(proxy_header::Parsed::Done { addrs, length }) = whole {
        assert!(length <= bytes.len(), "header longer than the input");
        assert_eq!(addrs.direct, peer, "the TCP peer is always kept");
        if !trusted || mode == ProxyProtocolMode::Off {
            assert_eq!(addrs.remote, peer, "an untrusted peer claimed an address");
            assert_eq!(length, 0, "bytes dropped from an untrusted peer");
        }
    }
}

/// Input: `[step, bytes…]`.
pub fn connect_request(data: &[u8]) {
    let [step, bytes @ ..] = data else {
        return;
    };
    let decide = |prefix: &[u8]| connect::parse(prefix, DESTINATION_HEADER).map_err(|_| ());
    let whole = decide(bytes);
    let read = prefixes(bytes.len(), *step)
        .map(|n| (n, decide(&bytes[..n])))
        .find(|(_, d)| *d != Ok(None));
    if let Some((n, decided)) = &read {
        assert_eq!(
            decided, &whole,
            "the answer after {n} bytes changed with more bytes"
        );
    }
    let Ok(Some(head)) = whole else {
        return;
    };
    assert!(head.length <= bytes.len(), "head longer than the input");
    assert!(!head.destination.is_empty(), "empty destination accepted");
    assert_eq!(head.destination.trim(), head.destination, "untrimmed");
    if let Some(route) = fixture().snapshot.route_for_destination(&head.destination) {
        let wanted = head.destination.to_ascii_lowercase();
        assert!(
            route.destinations.contains(&wanted),
            "destination {wanted:?} selected route {} which does not list it",
            route.id
        );
    }
}

/// Input: `[step, bytes…]`.
pub fn client_hello(data: &[u8]) {
    let [step, bytes @ ..] = data else {
        return;
    };
    let whole = HelloParser::default().parse(bytes).map_err(|_| ());
    let mut parser = HelloParser::default();
    let read = prefixes(bytes.len(), *step)
        .map(|n| (n, parser.parse(&bytes[..n]).map_err(|_| ())))
        .find(|(_, d)| *d != Ok(None));
    if let Some((n, decided)) = &read {
        assert_eq!(
            decided, &whole,
            "read in steps of {step}, the answer after {n} bytes differs from one read"
        );
    }
    let Ok(Some(Some(sni))) = whole else {
        return;
    };
    assert_eq!(sni, sni.to_ascii_lowercase(), "SNI not lowercased");
    match fixture().snapshot.route_for_sni(&sni) {
        Some(route) => assert!(
            route.hostnames.contains(&sni),
            "SNI {sni:?} selected route {} which does not list it",
            route.id
        ),
        None => assert!(
            !HOSTNAMES.contains(&sni.as_str()),
            "SNI {sni:?} selected no route"
        ),
    }
}

/// Input: a configuration file (YAML), whose file references may name the fixture's
/// files: the demo's PEM files (see [`fixture_config`]) and the names the README's
/// reference configuration uses.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(objects) = parse_documents(text, "fuzz") else {
        return;
    };
    let Ok(snapshot) = compile(objects.clone()) else {
        return;
    };
    snapshot.check_invariants();
    let rendered = match render_documents(&objects) {
        Ok(rendered) => rendered,
        Err(e) => panic!("a configuration that compiles does not render: {e}"),
    };
    match parse_documents(&rendered, "rendered") {
        Ok(again) => assert!(
            again == objects,
            "a configuration read back from its rendering differs:\n{rendered}"
        ),
        Err(errors) => panic!("its rendering does not parse: {errors:?}\n{rendered}"),
    }
}

fn compile(objects: Vec<Object>) -> Result<Snapshot, Vec<apigate_control::error::ConfigError>> {
    apigate_control::compile(&Inputs {
        objects,
        files: fixture().files.clone(),
        ..Inputs::default()
    })
}

/// PEM files and a snapshot compiled from [`fixture_config`], made once per process.
pub struct Fixture {
    /// The files the fixture's configuration names, by name.
    pub files: Files,
    /// The fixture's configuration, compiled.
    pub snapshot: Snapshot,
}

/// The README's file names, and the fixture's file each stands for.
const README_FILES: [(&str, &str); 5] = [
    ("serving.pem", "apigate-serving.pem"),
    ("serving-key.pem", "apigate-serving-key.pem"),
    ("cluster-ca.pem", "replica-ca.pem"),
    ("front-proxy.pem", "front-proxy.pem"),
    ("front-proxy-key.pem", "front-proxy-key.pem"),
];

/// The fixture; panics only if the fixed configuration stops compiling (a bug here).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let pki = match crate::demo::pki::DemoPki::generate() {
            Ok(pki) => pki,
            Err(e) => panic!("generating the fixture's certificates: {e:#}"),
        };
        let mut files: Files = pki
            .files()
            .into_iter()
            .map(|(name, pem)| (Arc::from(name), Ok(Arc::from(pem.into_bytes()))))
            .collect();
        // The names the README's reference configuration uses, so it compiles too.
        for (alias, name) in README_FILES {
            if let Some(content) = files.get(name).cloned() {
                files.insert(Arc::from(alias), content);
            }
        }
        for name in ["admin-token", "healthcheck-token"] {
            files.insert(
                Arc::from(name),
                Ok(Arc::from(&b"fuzz-token-0123456789abcdef\n"[..])),
            );
        }
        let objects = match parse_documents(&fixture_config(), "fixture") {
            Ok(objects) => objects,
            Err(e) => panic!("the fixture's configuration does not parse: {e:?}"),
        };
        let snapshot = match apigate_control::compile(&Inputs {
            objects,
            files: Files::clone(&files),
            ..Inputs::default()
        }) {
            Ok(snapshot) => snapshot,
            Err(e) => panic!("the fixture's configuration does not compile: {e:?}"),
        };
        Fixture { files, snapshot }
    })
}

/// A configuration with a terminate route of two hostnames and an extra destination,
/// and a passthrough route, naming the demo's PEM files; the config target's seed.
pub fn fixture_config() -> String {
    let [a, b, p] = HOSTNAMES;
    format!(
        "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata:
  name: fuzz
spec:
  listeners:
  - name: https
    address: \"127.0.0.1:8443\"
    proxyProtocol: optional
    trustedProxies: [\"10.0.0.0/8\"]
  - name: connect
    kind: connect
    address: \"127.0.0.1:8132\"
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata:
  name: a
  namespace: shoot--a
spec:
  hostnames: [\"{a}\", \"{b}\"]
  destinations: [\"{DESTINATION}\"]
  backends:
    static: [\"10.0.0.10:443\", \"10.0.0.11:443\"]
  accessControl:
    rules:
    - {{action: deny, type: remote_ip, cidrs: [\"192.0.2.128/25\"]}}
    - {{action: allow, type: remote_ip, cidrs: [\"192.0.2.0/24\", \"2001:db8::/32\"]}}
  tls:
    certFile: apigate-serving.pem
    keyFile: apigate-serving-key.pem
    clientCAFile: client-ca.pem
  upstream:
    caFile: replica-ca.pem
    serverName: kubernetes.default.svc
    frontProxyCertFile: front-proxy.pem
    frontProxyKeyFile: front-proxy-key.pem
---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata:
  name: p
  namespace: shoot--p
spec:
  hostnames: [\"{p}\"]
  mode: passthrough
  backends:
    static: [\"10.0.0.20:443\"]
"
    )
}
