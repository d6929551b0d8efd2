//! The caller's identity arrives intact; spoofed identity and forwarding headers never
//! do; and only verified client certificates ever reach a replica over the connection
//! that presents the front-proxy certificate, on every path.

use apigate_fake_apiserver::{
    AUTHN_HEADER, GROUPS_HEADER, PEER_CERT_HEADER, SOURCE_IP_HEADER, USER_HEADER,
};
use apigate_test_support::client::H2Client;

use crate::support::{header, read_head, write_all, Harness, TOKEN};

const SPOOF: [(&str, &str); 8] = [
    ("X-Remote-User", "system:admin"),
    ("X-Remote-Group", "system:masters"),
    ("x-remote-group", "root"),
    ("X-Remote-Extra-Scopes", "everything"),
    ("X-Remote-Uid", "0"),
    ("X-Forwarded-For", "203.0.113.66"),
    ("X-Real-Ip", "203.0.113.67"),
    ("Forwarded", "for=203.0.113.68"),
];

/// `(user, how it authenticated, which client certificate its connection presented)`
/// as the replica saw an HTTP/1.1 request or upgrade.
async fn over_http1(h: &Harness, alice: bool, token: bool, upgrade: bool) -> String {
    let mut stream = h.h1_stream(alice.then_some(&h.pki.alice)).await;
    let mut request = format!(
        "GET /api/v1/namespaces/default/pods/p/exec HTTP/1.1\r\nHost: {}\r\n",
        crate::support::HOST
    );
    for (name, value) in SPOOF {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if token {
        request.push_str(&format!("Authorization: Bearer {TOKEN}\r\n"));
    }
    if upgrade {
        request.push_str("Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n");
    }
    request.push_str("\r\n");
    write_all(&mut stream, request.as_bytes()).await;
    read_head(&mut stream).await.to_ascii_lowercase()
}

fn line<'a>(head: &'a str, name: &str) -> &'a str {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
        .trim()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_becomes_user_and_groups_and_spoofed_headers_are_dropped() {
    let h = Harness::start(2).await;
    let client = h.h2(Some(&h.pki.alice)).await;
    for _ in 0..4 {
        let r = client
            .get("/api/v1/namespaces/default/pods", &SPOOF)
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(header(&r, USER_HEADER), "alice");
        assert_eq!(header(&r, GROUPS_HEADER), "devs,testers");
        assert_eq!(header(&r, AUTHN_HEADER), "front-proxy");
        assert_eq!(header(&r, PEER_CERT_HEADER), "front-proxy");
        assert_eq!(header(&r, "x-apiserver-extra"), "", "no extra survives");
        // What kube-apiserver's audit log would record as the source: the client, as
        // apigate saw it, never a planted address.
        assert_eq!(header(&r, SOURCE_IP_HEADER), "127.0.0.1");
        // The access log is off: apigate makes no audit ID (the replica echoes one).
        assert_eq!(header(&r, "audit-id"), "");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_anonymous_requests_never_use_the_front_proxy_connection() {
    let h = Harness::start(2).await;
    let bearer = format!("Bearer {TOKEN}");
    let mut with_token = SPOOF.to_vec();
    with_token.push(("Authorization", &bearer));

    // HTTP/2.
    let client = h.h2(None).await;
    for _ in 0..4 {
        let r = client
            .get("/api/v1/namespaces/default/pods", &with_token)
            .await
            .unwrap();
        assert_eq!(
            header(&r, USER_HEADER),
            "bob",
            "the token decides, not the headers"
        );
        assert_eq!(header(&r, AUTHN_HEADER), "token");
        assert_eq!(
            header(&r, PEER_CERT_HEADER),
            "none",
            "no front-proxy certificate"
        );
        let r = client
            .get("/api/v1/namespaces/default/pods", &SPOOF)
            .await
            .unwrap();
        assert_eq!(header(&r, USER_HEADER), "system:anonymous");
        assert_eq!(header(&r, PEER_CERT_HEADER), "none");
        assert_eq!(header(&r, SOURCE_IP_HEADER), "127.0.0.1");
    }
    // HTTP/1.1 requests and upgrades (apigate's own forwarder).
    for upgrade in [false, true] {
        let head = over_http1(&h, false, true, upgrade).await;
        assert_eq!(line(&head, USER_HEADER), "bob", "{head}");
        assert_eq!(line(&head, PEER_CERT_HEADER), "none", "{head}");
        let head = over_http1(&h, false, false, upgrade).await;
        assert_eq!(line(&head, USER_HEADER), "system:anonymous", "{head}");
        assert_eq!(line(&head, PEER_CERT_HEADER), "none", "{head}");
        assert_eq!(line(&head, SOURCE_IP_HEADER), "127.0.0.1", "{head}");
        // A verified certificate does use it, on the same paths.
        let head = over_http1(&h, true, false, upgrade).await;
        assert_eq!(line(&head, USER_HEADER), "alice", "{head}");
        assert_eq!(line(&head, PEER_CERT_HEADER), "front-proxy", "{head}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_with_empty_common_name_gets_400_status() {
    let h = Harness::start(1).await;
    let nameless = h.pki.client_ca.issue_client("", &["devs"]).unwrap();
    let client = h.h2(Some(&nameless)).await;
    let r = client.get("/api", &[]).await.unwrap();
    assert_eq!(r.status, 400);
    let status = crate::support::status(&r.body);
    assert_eq!(status["code"], 400);
    assert!(status["message"]
        .as_str()
        .unwrap()
        .contains("empty Common Name"));
    assert_eq!(h.replicas[0].requests_total(), 0, "nothing was forwarded");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_from_an_unknown_ca_fails_the_handshake() {
    let h = Harness::start(1).await;
    let rogue_ca = apigate_fake_apiserver::pki::Ca::new("rogue").unwrap();
    let rogue = rogue_ca.issue_client("admin", &["system:masters"]).unwrap();
    let tls = h.tls(Some(&rogue));
    let result = async {
        let client = H2Client::connect(h.addr(), &tls).await?;
        client.get("/api", &[]).await
    }
    .await;
    assert!(
        result.is_err(),
        "a certificate apigate cannot verify is refused"
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    let failures = || {
        h.metrics().sum(
            "apigate_tls_handshake_failures_total",
            &[
                ("route", crate::support::ROUTE),
                ("reason", "bad_client_certificate"),
            ],
        )
    };
    // Counted as apigate ends the handshake, which may be just after the client saw it
    // fail: read once counted.
    let counted =
        crate::support::eventually(std::time::Duration::from_secs(5), || failures() >= 1.0).await;
    assert!(counted, "a handshake failure names its route");
    assert_eq!(failures(), 1.0, "counted once");
    h.stop().await;
}
