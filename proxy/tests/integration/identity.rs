//! The caller's identity arrives intact; spoofed identity headers never do.

use apigate_fake_apiserver::{GROUPS_HEADER, USER_HEADER};

use crate::support::{Harness, TOKEN};

const SPOOF: [(&str, &str); 5] = [
    ("X-Remote-User", "system:admin"),
    ("X-Remote-Group", "system:masters"),
    ("x-remote-group", "root"),
    ("X-Remote-Extra-Scopes", "everything"),
    ("X-Remote-Uid", "0"),
];

fn header(r: &apigate::demo::client::Response, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
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
        assert_eq!(header(&r, "x-apiserver-extra"), "", "no extra survives");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_and_anonymous_requests_never_borrow_the_front_proxy_identity() {
    let h = Harness::start(2).await;
    let client = h.h2(None).await;
    let mut with_token = SPOOF.to_vec();
    let bearer = format!("Bearer {TOKEN}");
    with_token.push(("Authorization", &bearer));
    let r = client
        .get("/api/v1/namespaces/default/pods", &with_token)
        .await
        .unwrap();
    assert_eq!(
        header(&r, USER_HEADER),
        "bob",
        "the token decides, not the headers"
    );
    let r = client
        .get("/api/v1/namespaces/default/pods", &SPOOF)
        .await
        .unwrap();
    assert_eq!(header(&r, USER_HEADER), "system:anonymous");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_with_empty_common_name_gets_400_status() {
    let h = Harness::start(1).await;
    let nameless = h.pki.client_ca.issue_client("", &["devs"]).unwrap();
    let client = h.h2(Some(&nameless)).await;
    let r = client.get("/api", &[]).await.unwrap();
    assert_eq!(r.status, 400);
    let status: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(status["kind"], "Status");
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
        let client = apigate::demo::client::H2Client::connect(h.addr(), &tls).await?;
        client.get("/api", &[]).await
    }
    .await;
    assert!(
        result.is_err(),
        "a certificate apigate cannot verify is refused"
    );
    assert_eq!(h.replicas[0].requests_total(), 0);
    h.stop().await;
}
