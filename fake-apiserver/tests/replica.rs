//! Integration tests: real sockets on 127.0.0.1 and [::1], ports picked by the OS.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use apigate_fake_apiserver::{
    spawn, spawn_many, ReplicaOptions, ServiceTime, AUTHN_HEADER, EXTRA_HEADER, GROUPS_HEADER,
    REPLICA_HEADER, USER_HEADER,
};
use bytes::Bytes;
use common::{bounded, eventually, header, Client, Pki, Proto, Tls};
use http::StatusCode;
use http_body_util::{BodyExt as _, Empty};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn any_port(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, 0)
}

fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn public_types_cross_threads() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let fut = spawn(any_port(V4), ReplicaOptions::default());
    send(&fut);
    let many = spawn_many(1, V4, ReplicaOptions::default());
    send(&many);
    send_sync(&ReplicaOptions::default());
    fn replica_is_send_sync(r: &apigate_fake_apiserver::Replica) {
        send_sync(r);
    }
    let _ = replica_is_send_sync;
}

#[tokio::test]
async fn https_version_over_h2_and_h1() {
    let pki = Pki::new();
    let opts = ReplicaOptions {
        id: "tls-replica".into(),
        ..pki.options()
    };
    for ip in [V4, V6] {
        let replica = spawn(any_port(ip), opts.clone()).await.unwrap();
        assert_eq!(replica.id(), "tls-replica");
        for proto in [Proto::H2, Proto::H1] {
            let tls = Tls::new(&pki.server_ca.cert_pem(), None, proto);
            let mut client = Client::connect(replica.local_addr(), Some(&tls), proto).await;
            let want_alpn: &[u8] = if proto == Proto::H2 {
                b"h2"
            } else {
                b"http/1.1"
            };
            assert_eq!(client.alpn.as_deref(), Some(want_alpn));
            let (status, headers, body) = client.get("/version", &[]).await;
            assert_eq!(status, StatusCode::OK, "{proto:?} on {ip}");
            assert_eq!(header(&headers, REPLICA_HEADER), "tls-replica");
            assert_eq!(header(&headers, "content-type"), "application/json");
            assert_eq!(json(&body)["gitVersion"], "v1.20.2-fake");
        }
        assert_eq!(replica.requests_total(), 2);
        bounded(replica.shutdown()).await;
    }
}

#[tokio::test]
async fn plaintext_h1_and_h2c_on_ipv6() {
    let replica = spawn(any_port(V6), ReplicaOptions::default())
        .await
        .unwrap();
    for proto in [Proto::H1, Proto::H2] {
        let mut client = Client::connect(replica.local_addr(), None, proto).await;
        let (status, headers, body) = client.get("/api", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&headers, REPLICA_HEADER), "replica-0");
        assert_eq!(json(&body)["kind"], "APIVersions");
        let (status, _, body) = client.get("/apis", &[]).await;
        assert_eq!(
            (status, json(&body)["kind"].as_str()),
            (StatusCode::OK, Some("APIGroupList"))
        );
        let (_, _, body) = client.get("/api/v1", &[]).await;
        let names: Vec<_> = json(&body)["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        assert!(names.contains(&"pods".to_owned()) && names.contains(&"configmaps".to_owned()));
    }
    bounded(replica.shutdown()).await;
}

#[tokio::test]
async fn api_objects_and_errors() {
    let opts = ReplicaOptions {
        list_size: 4,
        object_bytes: 1000,
        ..ReplicaOptions::default()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();
    let mut c = Client::connect(replica.local_addr(), None, Proto::H2).await;

    let (status, _, body) = c.get("/api/v1/namespaces/ns1/pods", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let list = json(&body);
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["items"].as_array().unwrap().len(), 4);
    assert!(body.len() > 4 * 1000);
    let (_, _, body) = c.get("/api/v1/pods", &[]).await;
    assert_eq!(json(&body)["items"].as_array().unwrap().len(), 4);

    let (status, _, body) = c.get("/api/v1/namespaces/ns1/pods/web-1", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let pod = json(&body);
    assert_eq!(
        (pod["kind"].as_str(), pod["metadata"]["name"].as_str()),
        (Some("Pod"), Some("web-1"))
    );

    for (method, want) in [
        ("POST", StatusCode::METHOD_NOT_ALLOWED), // POST on an object
        ("PUT", StatusCode::OK),
        ("PATCH", StatusCode::OK),
        ("DELETE", StatusCode::OK),
    ] {
        let req = c
            .request(method, "/api/v1/namespaces/ns1/pods/web-1")
            .body(Empty::new())
            .unwrap();
        let (status, headers, _) = c.call(req).await;
        assert_eq!(status, want, "{method}");
        assert_eq!(header(&headers, REPLICA_HEADER), "replica-0");
    }
    let req = c
        .request("POST", "/api/v1/namespaces/ns1/configmaps")
        .body(Empty::new())
        .unwrap();
    let (status, _, body) = c.call(req).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(json(&body)["kind"], "ConfigMap");

    let (status, headers, body) = c.get("/apis/apps/v1/deployments", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, REPLICA_HEADER), "replica-0");
    let st = json(&body);
    assert_eq!(
        (
            st["kind"].as_str(),
            st["status"].as_str(),
            st["reason"].as_str(),
            st["code"].as_u64()
        ),
        (Some("Status"), Some("Failure"), Some("NotFound"), Some(404))
    );
    bounded(replica.shutdown()).await;
}

#[tokio::test]
async fn identity_follows_kube_rules() {
    let pki = Pki::new();
    let opts = ReplicaOptions {
        front_proxy_allowed_names: vec!["front-proxy-client".into()],
        tokens: vec![(
            "s3cret".into(),
            "token-user".into(),
            vec!["tg1".into(), "tg2".into()],
        )],
        ..pki.options()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();
    let addr = replica.local_addr();
    let ca = pki.server_ca.cert_pem();
    let spoof = [
        ("X-Remote-User", "admin"),
        ("X-Remote-Group", "system:masters"),
        ("X-Remote-Group", "devs"),
        ("X-Remote-Extra-Scopes", "view"),
    ];

    // (1) Front-proxy certificate: the headers are believed.
    let fp = pki
        .front_proxy_ca
        .issue_client("front-proxy-client", &[])
        .unwrap();
    let mut c = Client::connect(addr, Some(&Tls::new(&ca, Some(&fp), Proto::H2)), Proto::H2).await;
    let (status, h, _) = c.get("/api/v1/namespaces/default/pods", &spoof).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, USER_HEADER), "admin");
    assert_eq!(header(&h, GROUPS_HEADER), "system:masters,devs");
    assert_eq!(header(&h, EXTRA_HEADER), "scopes=view");
    assert_eq!(header(&h, AUTHN_HEADER), "front-proxy");

    // Same headers without any certificate: ignored, anonymous.
    let mut c = Client::connect(addr, Some(&Tls::new(&ca, None, Proto::H1)), Proto::H1).await;
    let (status, h, _) = c.get("/api/v1/namespaces/default/pods", &spoof).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, USER_HEADER), "system:anonymous");
    assert_eq!(header(&h, GROUPS_HEADER), "system:unauthenticated");
    assert_eq!(header(&h, EXTRA_HEADER), "");

    // (2) End-user client certificate: CN/O, headers still ignored.
    let alice = pki
        .client_ca
        .issue_client("alice", &["system:masters", "team-a"])
        .unwrap();
    let mut c = Client::connect(
        addr,
        Some(&Tls::new(&ca, Some(&alice), Proto::H2)),
        Proto::H2,
    )
    .await;
    let (_, h, _) = c.get("/version", &spoof).await;
    assert_eq!(header(&h, USER_HEADER), "alice");
    assert_eq!(header(&h, GROUPS_HEADER), "system:masters,team-a");
    assert_eq!(header(&h, AUTHN_HEADER), "x509");

    // A client-CA certificate does not make its holder a front proxy, whatever its CN.
    let fake_fp = pki
        .client_ca
        .issue_client("front-proxy-client", &[])
        .unwrap();
    let mut c = Client::connect(
        addr,
        Some(&Tls::new(&ca, Some(&fake_fp), Proto::H1)),
        Proto::H1,
    )
    .await;
    let (_, h, _) = c.get("/version", &spoof).await;
    assert_eq!(header(&h, USER_HEADER), "front-proxy-client");
    assert_eq!(header(&h, AUTHN_HEADER), "x509");

    // (3) Bearer token, on plain TLS.
    let mut c = Client::connect(addr, Some(&Tls::new(&ca, None, Proto::H2)), Proto::H2).await;
    let mut with_token = spoof.to_vec();
    with_token.push(("Authorization", "Bearer s3cret"));
    let (_, h, _) = c.get("/version", &with_token).await;
    assert_eq!(header(&h, USER_HEADER), "token-user");
    assert_eq!(header(&h, GROUPS_HEADER), "tg1,tg2");

    // Bad credentials are 401, like kube: unknown token, front-proxy CN not allowed.
    let (status, h, _) = c
        .get("/version", &[("Authorization", "Bearer wrong")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&h, REPLICA_HEADER), "replica-0");
    let other = pki
        .front_proxy_ca
        .issue_client("someone-else", &[])
        .unwrap();
    let mut c = Client::connect(
        addr,
        Some(&Tls::new(&ca, Some(&other), Proto::H2)),
        Proto::H2,
    )
    .await;
    let (status, _, _) = c.get("/version", &spoof).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A certificate from an unknown CA fails the handshake.
    let stranger = pki.server_ca.issue_client("mallory", &[]).unwrap();
    let tls = Tls::new(&ca, Some(&stranger), Proto::H2);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let result = bounded(async {
        let mut s = connector.connect(addr.ip().into(), tcp).await?;
        // TLS 1.3: the server's verdict arrives after the client's handshake completes.
        s.write_all(b"GET /version HTTP/1.1\r\nhost: x\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        match s.read(&mut buf).await? {
            0 => Err(std::io::Error::other("closed")),
            _ => Ok(()),
        }
    })
    .await;
    assert!(result.is_err(), "an unknown client CA must be rejected");
    bounded(replica.shutdown()).await;
}

#[tokio::test]
async fn unready_replica_still_serves() {
    let replica = spawn(any_port(V4), ReplicaOptions::default())
        .await
        .unwrap();
    let mut c = Client::connect(replica.local_addr(), None, Proto::H1).await;
    assert_eq!(c.get("/readyz", &[]).await.0, StatusCode::OK);
    replica.set_ready(false);
    let (status, h, _) = c.get("/readyz", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&h, REPLICA_HEADER), "replica-0");
    assert_eq!(c.get("/livez", &[]).await.0, StatusCode::OK);
    assert_eq!(c.get("/healthz", &[]).await.0, StatusCode::OK);
    assert_eq!(
        c.get("/api/v1/namespaces/a/pods", &[]).await.0,
        StatusCode::OK
    );
    replica.set_ready(true);
    assert_eq!(c.get("/readyz", &[]).await.0, StatusCode::OK);
    // Health checks are not counted.
    assert_eq!(replica.requests_total(), 1);
    bounded(replica.shutdown()).await;
}

/// Reads body frames until `n` complete watch events arrived.
async fn read_events(body: &mut hyper::body::Incoming, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut events = Vec::new();
    while events.len() < n {
        let frame = bounded(body.frame()).await.expect("stream ended").unwrap();
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
    }
    events
}

#[tokio::test]
async fn watch_streams_and_counts_open_watches() {
    let opts = ReplicaOptions {
        watch_event_interval: Duration::from_millis(20),
        ..ReplicaOptions::default()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();

    // HTTP/2: dropping the body resets the stream.
    let mut c = Client::connect(replica.local_addr(), None, Proto::H2).await;
    let req = c
        .request("GET", "/api/v1/namespaces/ns/pods?watch=true")
        .body(Empty::new())
        .unwrap();
    let resp = c.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(resp.headers(), REPLICA_HEADER), "replica-0");
    let mut body = resp.into_body();
    let events = read_events(&mut body, 3).await;
    assert!(events
        .iter()
        .all(|e| e["type"] == "ADDED" && e["object"]["kind"] == "Pod"));
    assert_eq!(events[0]["object"]["metadata"]["namespace"], "ns");
    assert_eq!(replica.open_watches(), 1);
    drop(body);
    eventually("h2 watch to close", || replica.open_watches() == 0).await;

    // HTTP/1.1 (chunked): closing the connection ends the watch.
    let mut c = Client::connect(replica.local_addr(), None, Proto::H1).await;
    let req = c
        .request("GET", "/api/v1/watch/pods")
        .body(Empty::new())
        .unwrap();
    let mut body = c.send(req).await.into_body();
    read_events(&mut body, 2).await;
    assert_eq!(replica.open_watches(), 1);
    c.driver.abort();
    drop((body, c));
    eventually("h1 watch to close", || replica.open_watches() == 0).await;

    // timeoutSeconds ends the stream from the server side.
    let mut c = Client::connect(replica.local_addr(), None, Proto::H1).await;
    let req = c
        .request(
            "GET",
            "/api/v1/namespaces/ns/configmaps?watch=1&timeoutSeconds=1",
        )
        .body(Empty::new())
        .unwrap();
    let started = Instant::now();
    let (status, _, body) = c.call(req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(
        body.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count()
            >= 5
    );
    eventually("timed-out watch to close", || replica.open_watches() == 0).await;
    bounded(replica.shutdown()).await;
}

async fn upgrade_echo(tls: bool, headers: &[(&str, &str)]) -> http::HeaderMap {
    let pki = Pki::new();
    let opts = if tls {
        pki.options()
    } else {
        ReplicaOptions::default()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();
    let tls = tls.then(|| Tls::new(&pki.server_ca.cert_pem(), None, Proto::H1));
    let mut c = Client::connect(replica.local_addr(), tls.as_ref(), Proto::H1).await;
    let mut b = c.request(
        "POST",
        "/api/v1/namespaces/ns/pods/p/exec?command=sh&stdin=true",
    );
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c.send(b.body(Empty::new()).unwrap()).await;
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let headers = resp.headers().clone();
    assert_eq!(header(&headers, REPLICA_HEADER), "replica-0");
    let upgraded = bounded(hyper::upgrade::on(resp)).await.unwrap();
    let mut io = hyper_util::rt::TokioIo::new(upgraded);
    for msg in [
        &b"hello"[..],
        &[0u8, 1, 2, 255][..],
        &vec![b'z'; 100_000][..],
    ] {
        bounded(io.write_all(msg)).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        bounded(io.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, msg);
    }
    bounded(io.shutdown()).await.unwrap();
    let mut rest = Vec::new();
    bounded(io.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(replica.requests_total(), 1);
    bounded(replica.shutdown()).await;
    headers
}

#[tokio::test]
async fn spdy_upgrade_echoes_bytes() {
    let h = upgrade_echo(
        false,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "SPDY/3.1"),
            ("X-Stream-Protocol-Version", "v4.channel.k8s.io"),
            ("X-Stream-Protocol-Version", "v3.channel.k8s.io"),
        ],
    )
    .await;
    assert_eq!(header(&h, "upgrade"), "SPDY/3.1");
    assert_eq!(header(&h, "x-stream-protocol-version"), "v4.channel.k8s.io");
}

#[tokio::test]
async fn websocket_upgrade_over_tls_echoes_bytes() {
    let h = upgrade_echo(
        true,
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "WebSocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            (
                "Sec-WebSocket-Protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            ),
        ],
    )
    .await;
    assert_eq!(header(&h, "upgrade"), "WebSocket");
    assert_eq!(
        header(&h, "sec-websocket-accept"),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
    assert_eq!(header(&h, "sec-websocket-protocol"), "v5.channel.k8s.io");
}

#[tokio::test]
async fn exec_without_upgrade_is_bad_request() {
    let replica = spawn(any_port(V4), ReplicaOptions::default())
        .await
        .unwrap();
    for proto in [Proto::H1, Proto::H2] {
        let mut c = Client::connect(replica.local_addr(), None, proto).await;
        let (status, _, body) = c.get("/api/v1/namespaces/ns/pods/p/attach", &[]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{proto:?}");
        assert_eq!(json(&body)["kind"], "Status");
    }
    bounded(replica.shutdown()).await;
}

fn metric(text: &str, verb: &str, code: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter(|l| {
            l.contains(&format!("verb=\"{verb}\"")) && l.contains(&format!("code=\"{code}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

#[tokio::test]
async fn metrics_count_list_get_watch() {
    let opts = ReplicaOptions {
        watch_event_interval: Duration::from_millis(10),
        ..ReplicaOptions::default()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();
    let mut c = Client::connect(replica.local_addr(), None, Proto::H2).await;
    for _ in 0..3 {
        c.get("/api/v1/namespaces/a/pods", &[]).await;
    }
    c.get("/api/v1/pods", &[]).await;
    for _ in 0..2 {
        c.get("/api/v1/namespaces/a/pods/p", &[]).await;
    }
    c.get("/nope", &[]).await;
    c.get("/readyz", &[]).await;
    let req = c
        .request("GET", "/api/v1/namespaces/a/pods?watch=1")
        .body(Empty::new())
        .unwrap();
    let mut watch = c.send(req).await.into_body();
    read_events(&mut watch, 1).await;

    let (status, h, body) = c.get("/metrics", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(header(&h, "content-type").starts_with("text/plain"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(metric(&text, "LIST", "200"), 4, "{text}");
    assert_eq!(metric(&text, "GET", "200"), 2, "{text}");
    assert_eq!(metric(&text, "WATCH", "200"), 1, "{text}");
    assert_eq!(metric(&text, "GET", "404"), 1, "{text}");
    assert!(text.contains("resource=\"pods\",scope=\"cluster\""));
    assert!(text.contains("fake_apiserver_open_watches{replica=\"replica-0\"} 1"));
    assert_eq!(replica.requests_total(), 8);
    drop(watch);
    bounded(replica.shutdown()).await;
}

#[tokio::test]
async fn service_time_delays_api_but_not_health() {
    let opts = ReplicaOptions {
        service_time: "fixed:150ms".parse::<ServiceTime>().unwrap(),
        ..ReplicaOptions::default()
    };
    let replica = spawn(any_port(V4), opts).await.unwrap();
    let mut c = Client::connect(replica.local_addr(), None, Proto::H1).await;
    let t = Instant::now();
    c.get("/readyz", &[]).await;
    assert!(t.elapsed() < Duration::from_millis(150));
    let t = Instant::now();
    c.get("/version", &[]).await;
    assert!(t.elapsed() >= Duration::from_millis(150));
    bounded(replica.shutdown()).await;
}

#[tokio::test]
async fn spawn_many_and_shutdown_ends_watches() {
    let opts = ReplicaOptions {
        watch_event_interval: Duration::from_millis(10),
        ..ReplicaOptions::default()
    };
    let replicas = spawn_many(3, V4, opts).await.unwrap();
    let ids: Vec<_> = replicas.iter().map(|r| r.id().to_owned()).collect();
    assert_eq!(ids, ["replica-0", "replica-1", "replica-2"]);
    let mut ports: Vec<_> = replicas.iter().map(|r| r.local_addr().port()).collect();
    ports.dedup();
    assert_eq!(ports.len(), 3);

    let mut watches = Vec::new();
    for r in &replicas {
        let mut c = Client::connect(r.local_addr(), None, Proto::H2).await;
        let (_, h, _) = c.get("/version", &[]).await;
        assert_eq!(header(&h, REPLICA_HEADER), r.id());
        let req = c
            .request("GET", "/api/v1/pods?watch=true")
            .body(Empty::new())
            .unwrap();
        let mut body = c.send(req).await.into_body();
        read_events(&mut body, 1).await;
        watches.push((c, body));
    }
    let addr = replicas[0].local_addr();
    for r in replicas {
        let t = Instant::now();
        r.shutdown().await;
        // Well under the 2 s grace: nothing lingers.
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "shutdown took {:?}",
            t.elapsed()
        );
    }
    // Every watch stream ends (EOF or error), and the port no longer accepts.
    for (_c, mut body) in watches {
        while let Some(Ok(_)) = bounded(body.frame()).await {}
    }
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
