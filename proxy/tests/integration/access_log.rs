//! The access log and the per-verb metrics, through real TLS, HTTP/2 and HTTP/1.1
//! clients: one line per request, on every path (pooled, upgrade, apigate's own
//! answers), joined to the replica's audit log by `Audit-ID`.

use std::path::Path;
use std::time::Duration;

use apigate_control::model::{AccessLogFormat, AccessLogSpec};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{eventually, header, read_head, write_all, Harness, HOST, TOKEN};

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

async fn lines_when(path: &Path, count: usize) -> Vec<String> {
    eventually(Duration::from_secs(10), || lines(path).len() >= count).await;
    // Anything beyond `count` would show up here too.
    tokio::time::sleep(Duration::from_millis(200)).await;
    lines(path)
}

fn logged(path: &Path, format: AccessLogFormat, sample: Option<f64>) -> AccessLogSpec {
    AccessLogSpec {
        enabled: Some(true),
        format: Some(format),
        success_sample_ratio: sample,
        path: Some(path.display().to_string()),
        ..AccessLogSpec::default()
    }
}

/// JSON lines, parsed.
fn parsed(text: &[String]) -> Vec<Value> {
    text.iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The one line whose field `key` is `value`.
fn find<'a>(lines: &'a [Value], key: &str, value: impl Into<Value>) -> &'a Value {
    let value = value.into();
    let found: Vec<&Value> = lines.iter().filter(|l| l[key] == value).collect();
    assert_eq!(found.len(), 1, "one line with {key}={value}: {lines:#?}");
    found[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_has_one_line_saying_who_what_where_and_how_it_ended() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let h = Harness::start_with(2, |c| {
        c.gateway.spec.access_log = logged(&path, AccessLogFormat::Json, None);
    })
    .await;

    // A certificate user's list over HTTP/2, without an audit ID: apigate makes one and
    // the replica (like kube-apiserver) answers with the one it was sent.
    let alice = h.h2(Some(&h.pki.alice)).await;
    let r = alice
        .get("/api/v1/namespaces/default/pods", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let made = header(&r, "audit-id");
    assert_eq!(made.len(), 36, "a UUID reached the replica: {made:?}");

    // A token user's get, with its own audit ID: kept.
    let anonymous = h.h2(None).await;
    let bearer = format!("Bearer {TOKEN}");
    let r = anonymous
        .get(
            "/api/v1/namespaces/default/configmaps/c1",
            &[("Authorization", &bearer), ("Audit-ID", "client-chosen-1")],
        )
        .await
        .unwrap();
    assert_eq!(header(&r, "audit-id"), "client-chosen-1");

    // A request apigate answers itself: it has an audit ID too.
    let r = anonymous.connect_method().await.unwrap();
    assert_eq!(r.status, 405);
    let refused_id = header(&r, "audit-id");
    assert_eq!(refused_id.len(), 36);

    // A watch, cancelled by the client.
    let watch = alice
        .stream("/api/v1/namespaces/default/pods?watch=1", &[])
        .await
        .unwrap();
    assert_eq!(watch.status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(watch);

    // An exec over HTTP/1.1: upgraded, five bytes each way, closed by the client.
    let mut exec = h.h1_stream(Some(&h.pki.alice)).await;
    let request = format!(
        "POST /api/v1/namespaces/default/pods/p/exec?command=sh HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n"
    );
    write_all(&mut exec, request.as_bytes()).await;
    let head = read_head(&mut exec).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    write_all(&mut exec, b"hello").await;
    let mut echo = [0u8; 5];
    exec.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"hello");
    exec.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), exec.read_to_end(&mut rest)).await;
    drop(exec);

    let text = lines_when(&path, 5).await;
    assert_eq!(text.len(), 5, "one line per request: {text:#?}");
    let lines = parsed(&text);
    for line in &lines {
        assert_eq!(line["log"], "access");
        assert_eq!(line["route"], "garden-test/shoot");
        assert_eq!(line["listener"], "https");
        assert_eq!(
            line["client"].as_str().unwrap().split(':').next(),
            Some("127.0.0.1")
        );
        assert!(line["time"].as_str().unwrap().ends_with('Z'), "{line}");
        assert!(line["duration_seconds"].as_f64().is_some(), "{line}");
    }

    let list = find(&lines, "verb", "list");
    assert_eq!(list["user"], "alice");
    assert_eq!(list["groups"], serde_json::json!(["devs", "testers"]));
    assert_eq!(list["protocol"], "HTTP/2");
    assert_eq!(list["resource"], "pods");
    assert_eq!(list["namespace"], "default");
    assert_eq!(list["status"], 200);
    assert_eq!(list["audit_id"], made.as_str());
    assert_ne!(list["backend"], "none");
    assert!(list["bytes_out"].as_u64().unwrap() > 0, "{list}");
    assert_eq!(list["retries"], 0);

    let get = find(&lines, "verb", "get");
    let user = get["user"].as_str().unwrap();
    assert!(user.starts_with("token:") && !user.contains(TOKEN), "{get}");
    assert_eq!(get["name"], "c1");
    assert_eq!(get["audit_id"], "client-chosen-1");

    let refused = find(&lines, "status", 405);
    assert_eq!(refused["method"], "CONNECT");
    assert_eq!(refused["answered_by_apigate"], "method_not_allowed");
    assert_eq!(refused["user"], "anonymous");
    assert_eq!(refused["backend"], "none");
    assert_eq!(refused["audit_id"], refused_id.as_str());

    let watch = find(&lines, "verb", "watch");
    assert_eq!(watch["status"], 200);
    assert!(
        watch["duration_seconds"].as_f64().unwrap() >= 0.3,
        "{watch}"
    );

    let exec = find(&lines, "verb", "connect");
    assert_eq!(exec["status"], 101);
    assert_eq!(exec["protocol"], "HTTP/1.1");
    assert_eq!(exec["subresource"], "exec");
    assert_eq!(exec["bytes_in"], 5);
    assert_eq!(exec["bytes_out"], 5);
    assert_eq!(exec["user"], "alice");

    // The same requests in the per-verb metrics, shaped like kube-apiserver's.
    let m = h.metrics();
    let count = |labels: &[(&str, &str)]| m.sum("apigate_apiserver_request_total", labels);
    assert_eq!(
        count(&[("verb", "LIST"), ("resource", "pods"), ("code", "200")]),
        1.0
    );
    assert_eq!(
        count(&[
            ("verb", "GET"),
            ("resource", "configmaps"),
            ("scope", "resource")
        ]),
        1.0
    );
    assert_eq!(count(&[("verb", "WATCH"), ("scope", "namespace")]), 1.0);
    assert_eq!(
        count(&[
            ("verb", "CONNECT"),
            ("subresource", "exec"),
            ("code", "101")
        ]),
        1.0
    );
    assert_eq!(
        m.sum("apigate_access_log_lines_total", &[("result", "written")]),
        5.0
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_out_successes_leave_only_failures_in_the_log() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.access_log = logged(&path, AccessLogFormat::Logfmt, Some(0.0));
    })
    .await;
    let client = h.h2(None).await;
    for _ in 0..5 {
        let r = client.get("/api/v1/pods", &[]).await.unwrap();
        assert_eq!(r.status, 200);
    }
    let r = client.connect_method().await.unwrap();
    assert_eq!(r.status, 405);
    let text = lines_when(&path, 1).await;
    assert_eq!(text.len(), 1, "{text:#?}");
    assert!(text[0].starts_with("log=access time="), "{}", text[0]);
    assert!(
        text[0].contains(" status=405 answered_by_apigate=method_not_allowed "),
        "{}",
        text[0]
    );
    assert!(text[0].contains(" user=anonymous "), "{}", text[0]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_the_transport_refuses_are_logged_too() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("access.log");
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.access_log = logged(&path, AccessLogFormat::Json, Some(0.0));
    })
    .await;
    // A head over maxRequestHeaderBytes (64 KiB), and one the HTTP engine cannot parse.
    let mut large = h.h1_stream(None).await;
    let padding = "a".repeat(70 * 1024);
    write_all(
        &mut large,
        format!("GET /api/v1/pods HTTP/1.1\r\nHost: {HOST}\r\nX-Pad: {padding}\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(read_head(&mut large).await.starts_with("HTTP/1.1 431"));
    let mut garbage = h.h1_stream(None).await;
    write_all(&mut garbage, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(read_head(&mut garbage).await.starts_with("HTTP/1.1 400"));
    let text = lines_when(&path, 2).await;
    assert_eq!(text.len(), 2, "{text:#?}");
    let lines = parsed(&text);
    let large = find(&lines, "status", 431);
    assert_eq!(large["answered_by_apigate"], "too_large");
    assert_eq!(large["protocol"], "HTTP/1.1");
    assert_eq!(large["route"], "garden-test/shoot");
    assert!(
        large.get("method").is_none(),
        "the head was never read: {large}"
    );
    let garbage = find(&lines, "status", 400);
    assert_eq!(garbage["answered_by_apigate"], "malformed");
    h.stop().await;

    // With errors sampled like successes (here: none kept), a refused head is not logged
    // either: it goes through the same choice as every other line.
    let quiet = logs.path().join("quiet.log");
    let h = Harness::start_with(1, |c| {
        c.gateway.spec.access_log = AccessLogSpec {
            always_log_errors: Some(false),
            ..logged(&quiet, AccessLogFormat::Json, Some(0.0))
        };
    })
    .await;
    let mut garbage = h.h1_stream(None).await;
    write_all(&mut garbage, b"NOT HTTP AT ALL\r\n\r\n").await;
    assert!(read_head(&mut garbage).await.starts_with("HTTP/1.1 400"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = std::fs::read_to_string(&quiet).unwrap_or_default();
    assert!(text.is_empty(), "{text}");
    h.stop().await;
}
