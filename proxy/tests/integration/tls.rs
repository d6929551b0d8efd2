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
