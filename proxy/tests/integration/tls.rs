//! TLS as clients meet it: the server's cipher-suite preference, and the binary's own
//! refusal of absurd durations on its command line.

use std::sync::Arc;

use rustls::crypto::ring::cipher_suite;
use rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;

use crate::support::{Harness, HOST};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_chooses_the_cipher_suite_by_its_own_preference() {
    let h = Harness::start(1).await;
    // A client that prefers ChaCha20 over AES-256 (rustls' server order is the reverse).
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
    ];
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        rustls::pki_types::CertificateDer::pem_slice_iter(h.pki.server_ca.cert_pem().as_bytes())
    {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(h.addr()).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
    h.stop().await;
}

#[test]
fn absurd_durations_on_the_command_line_are_usage_errors() {
    for (flag, value) in [
        ("--grace", "1000000y"),
        ("--shutdown-delay", "100y"),
        ("--watch-interval", "0s"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_apigate"))
            .args(["run", "--config", "/nonexistent.yaml", flag, value])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(flag) && stderr.contains("out of range"),
            "{stderr}"
        );
    }
}

#[test]
fn watch_interval_with_kubernetes_is_refused_not_ignored() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_apigate"))
        .args([
            "run",
            "--config",
            "/nonexistent.yaml",
            "--kubernetes",
            "--watch-interval",
            "5s",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--watch-interval does not apply with --kubernetes"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiry_is_exported_per_route_and_a_close_one_is_warned_about() {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use apigate_test_support::config::files;

    let pki = Arc::new(crate::support::Pki::new());
    // The serving certificate expires in five days, to the second.
    let soon = SystemTime::now() + Duration::from_secs(5 * 24 * 3600);
    let soon = UNIX_EPOCH + Duration::from_secs(soon.duration_since(UNIX_EPOCH).unwrap().as_secs());
    let serving = pki
        .server_ca
        .issue_server_until(&[HOST], Some(soon))
        .unwrap();
    let replicas =
        apigate_fake_apiserver::spawn_many(1, "127.0.0.1".parse().unwrap(), pki.replica_options())
            .await
            .unwrap();
    let backends: Vec<_> = replicas.iter().map(|r| r.local_addr()).collect();
    let config = crate::support::base_config("127.0.0.1".parse().unwrap(), &backends);
    let h = Harness::start_config_with_files(
        pki,
        replicas,
        config,
        &[
            (files::SERVING_CERT, &serving.cert_pem),
            (files::SERVING_KEY, &serving.key_pem),
        ],
    )
    .await;
    let m = h.metrics();
    let expiry = |certificate: &str| {
        m.sum(
            "apigate_certificate_expiry_timestamp_seconds",
            &[
                ("route", crate::support::ROUTE),
                ("certificate", certificate),
            ],
        )
    };
    let seconds = soon.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(expiry("serving"), seconds);
    // The test CAs and the front-proxy certificate carry rcgen's default: year 4096.
    let far = 4096.0 * 365.0 * 24.0 * 3600.0 - 1970.0 * 365.0 * 24.0 * 3600.0;
    for certificate in ["client_ca", "upstream_ca", "front_proxy"] {
        assert!(
            expiry(certificate) > far * 0.99,
            "{certificate}: {}",
            expiry(certificate)
        );
    }

    // `apigate validate` names the route, the field and when.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_apigate"))
        .arg("validate")
        .arg(h.config_path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains(
            "ApiServerRoute garden-test/shoot: spec.tls.certFile: certificate expires in 4days"
        ),
        "{stderr}"
    );
    h.stop().await;
}
