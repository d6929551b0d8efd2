//! Certificate rotation under load (issue 15): each certificate apigate holds is
//! replaced in its file while clients with client certificates keep using the route.
//! New handshakes get the new material, open connections finish on the old, and no
//! request fails or meets a 401 from the replicas.

use std::time::Duration;

use apigate_fake_apiserver::pki::Ca;
use apigate_fake_apiserver::{AUTHN_HEADER, PEER_CERT_HEADER};
use apigate_test_support::config::files;

use crate::support::load::Load;
use crate::support::{header, Harness, HOST};

/// Replace `name` next to the configuration with `content`, wait until apigate runs a
/// configuration built from it, and let the load run on it for a second.
async fn rotate(h: &Harness, name: &str, content: &str) {
    let before = h.revision();
    std::fs::write(h.dir.path().join(name), content).unwrap();
    h.activated_after(before, &format!("rotated {name}")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The leaf certificate apigate presents to a new connection.
async fn served_leaf(h: &Harness) -> Vec<u8> {
    let tls = h.h1_stream(None).await;
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_certificate_rotates_under_load_without_a_failure_or_a_401() {
    let h = Harness::start(2).await;
    let pki = h.pki.clone();
    let load = Load::start(&h, Some(&pki.alice)).await;
    let early = h.h2(Some(&pki.alice)).await;
    let mut watch = early
        .stream("/api/v1/namespaces/default/pods?watch=true", &[])
        .await
        .unwrap();
    let first_leaf = served_leaf(&h).await;

    // The serving certificate: a new key and certificate from the same CA.
    let serving = pki.server_ca.issue_server(&[HOST]).unwrap();
    std::fs::write(h.dir.path().join(files::SERVING_KEY), &serving.key_pem).unwrap();
    rotate(&h, files::SERVING_CERT, &serving.cert_pem).await;
    let leaf = served_leaf(&h).await;
    assert_ne!(leaf, first_leaf, "a new handshake gets the new certificate");

    // The client CA: a second CA added to the bundle; old clients stay, new ones enter.
    let next_client_ca = Ca::new("client-ca-2").unwrap();
    let bundle = format!("{}{}", pki.client_ca.cert_pem(), next_client_ca.cert_pem());
    rotate(&h, files::CLIENT_CA, &bundle).await;
    let bob = next_client_ca.issue_client("bob", &["devs"]).unwrap();
    let r = h.h2(Some(&bob)).await.get("/version", &[]).await.unwrap();
    assert_eq!(r.status, 200, "a client of the new CA is admitted");

    // The front-proxy certificate: a new key and certificate from the front-proxy CA.
    let front_proxy = pki
        .front_proxy_ca
        .issue_client("apigate-front-proxy", &[])
        .unwrap();
    std::fs::write(
        h.dir.path().join(files::FRONT_PROXY_KEY),
        &front_proxy.key_pem,
    )
    .unwrap();
    rotate(&h, files::FRONT_PROXY_CERT, &front_proxy.cert_pem).await;

    // The upstream CA: a second CA added to the bundle the replicas are verified with.
    let next_replica_ca = Ca::new("replica-ca-2").unwrap();
    let bundle = format!(
        "{}{}",
        pki.replica_ca.cert_pem(),
        next_replica_ca.cert_pem()
    );
    rotate(&h, files::REPLICA_CA, &bundle).await;

    // After every rotation: a new connection's requests still reach the replicas as
    // alice through the front-proxy certificate, and the open ones carried on.
    let fresh = h.h2(Some(&pki.alice)).await;
    let r = fresh
        .get("/api/v1/namespaces/default/pods", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, AUTHN_HEADER), "front-proxy");
    assert_eq!(header(&r, PEER_CERT_HEADER), "front-proxy");
    assert_eq!(early.get("/version", &[]).await.unwrap().status, 200);
    assert!(
        watch.next_chunk(Duration::from_secs(5)).await.is_some(),
        "the watch opened before the rotations still delivers"
    );
    let (served, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} failed of {served}: {failures:?}",
        failures.len()
    );
    assert!(served > 500, "the load ran throughout: {served}");
    h.stop().await;
}
