//! The `apigate-loadtest` binary as operators use it: usage errors, the `backend` and
//! `l4-baseline` subcommands, `run`/`compare` with `--json`, and exit codes. Every child
//! process is killed when its handle drops (`kill_on_drop`) and every wait is bounded.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const BIN: &str = env!("CARGO_BIN_EXE_apigate-loadtest");

async fn output(
    args: &[&str],
) -> Result<std::process::Output, Box<dyn std::error::Error + Send + Sync>> {
    let child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    Ok(tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await??)
}

fn spawn(args: &[&str]) -> std::io::Result<Child> {
    Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
}

/// Waits (bounded) for a file written by a child and returns its content.
async fn wait_for_file(path: &Path) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    for _ in 0..200 {
        if let Ok(s) = std::fs::read_to_string(path) {
            if !s.is_empty() {
                return Ok(s);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("{} did not appear", path.display()).into())
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('\'').to_owned()))
        .collect()
}

#[tokio::test]
async fn invalid_flags_are_usage_errors_with_exit_code_2() -> TestResult {
    for (args, mention) in [
        (vec!["run"], "--target"),
        (
            vec!["run", "--target", "https://127.0.0.1:1", "--duration", "10"],
            "duration",
        ),
        (
            vec![
                "run",
                "--target",
                "https://127.0.0.1:1",
                "--mode",
                "closed",
                "--rate",
                "5",
            ],
            "--rate",
        ),
        (
            vec!["run", "--target", "https://127.0.0.1:1", "--mix", "get=0"],
            "mix",
        ),
        (
            vec![
                "compare",
                "--target",
                "a=https://127.0.0.1:1",
                "--target",
                "a=https://127.0.0.1:2",
            ],
            "twice",
        ),
        (
            vec!["backend", "--service-time", "sometimes"],
            "service-time",
        ),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        let out = output(&args).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(mention),
            "{args:?} should mention {mention:?}: {stderr}"
        );
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("Usage") || stderr.contains("--help"),
            "{args:?} should point to usage: {stderr}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn backend_run_compare_json_and_exit_codes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let out_dir = dir.path().join("backend");
    let out_dir_s = out_dir.to_string_lossy().to_string();
    let mut backend = spawn(&[
        "backend",
        "--replicas",
        "2",
        "--out-dir",
        &out_dir_s,
        "--run-for",
        "60s",
    ])?;
    let env = parse_env(&wait_for_file(&out_dir.join("backends.env")).await?);
    let ca = env.get("CA").ok_or("CA")?.clone();
    let ids = env.get("REPLICA_IDS").ok_or("ids")?.clone();
    let addrs: Vec<String> = env
        .get("REPLICA_ADDRS")
        .ok_or("addrs")?
        .split(' ')
        .map(str::to_owned)
        .collect();
    let direct = format!("https://{}", addrs[0]);
    let common = [
        "--ca",
        &ca,
        "--clients",
        "2",
        "--rate",
        "200",
        "--warmup",
        "0",
        "--duration",
        "1s",
        "-q",
        "--json",
        "--replicas",
        &ids,
    ];

    // run: thresholds met → 0, JSON on stdout.
    let mut args = vec!["run", "--target", &direct, "--max-error-rate", "0"];
    args.extend(common);
    let out = output(&args).await?;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["schema"], "apigate-loadtest/run/v1");
    assert!(v["requests"]["ok"].as_u64().unwrap_or(0) > 100);
    assert!(
        (v["distribution"]["cv"].as_f64().unwrap_or(0.0) - 1.0).abs() < 1e-9,
        "all on one of two replicas: CV 1"
    );

    // run: p99 threshold missed → 3.
    let mut args = vec!["run", "--target", &direct, "--max-p99", "1us"];
    args.extend(common);
    let out = output(&args).await?;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["verdict"]["passed"], false);

    // l4-baseline + compare: one table, one JSON document with both runs.
    let addr_file = dir.path().join("l4.addr");
    let addr_file_s = addr_file.to_string_lossy().to_string();
    let mut l4 = spawn(&[
        "l4-baseline",
        "--backend",
        &addrs.join(","),
        "--addr-file",
        &addr_file_s,
        "--run-for",
        "60s",
    ])?;
    let l4_addr = wait_for_file(&addr_file).await?;
    let direct_t = format!("direct={direct}");
    let l4_t = format!("l4=https://{}", l4_addr.trim());
    let mut args = vec![
        "compare", "--target", &direct_t, "--target", &l4_t, "--pause", "0",
    ];
    args.extend(common);
    let report = dir.path().join("report.html");
    let report_s = report.to_string_lossy().to_string();
    args.extend(["--report", &report_s]);
    let out = output(&args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("per-replica share"),
        "table on stderr with --json: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["schema"], "apigate-loadtest/compare/v1");
    let runs = v["runs"].as_array().ok_or("runs")?;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["target"], "l4");
    // Two equal clients, one connection each, round robin over two replicas: even.
    assert!(
        runs[1]["distribution"]["cv"].as_f64().unwrap_or(9.0) < 0.1,
        "{}",
        runs[1]["distribution"]
    );
    let html = std::fs::read_to_string(&report)?;
    assert!(html.contains("<svg") && html.contains("Per-replica request share"));

    l4.kill().await?;
    backend.kill().await?;
    Ok(())
}

#[tokio::test]
async fn backend_admin_flips_readiness() -> TestResult {
    use apigate_loadtest::backend::{Backend, BackendOptions};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn http(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").as_bytes()).await?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await??;
        Ok(out)
    }

    let b = Backend::start(BackendOptions {
        replicas: 2,
        plain: true,
        ..BackendOptions::default()
    })
    .await?;
    let admin = b.admin_addr();
    let r1 = b.replicas()[1].addr;
    assert!(http(r1, "GET", "/readyz")
        .await?
        .starts_with("HTTP/1.1 200"));
    assert!(http(admin, "POST", "/replicas/replica-1/ready?value=false")
        .await?
        .starts_with("HTTP/1.1 204"));
    let readyz = http(r1, "GET", "/readyz").await?;
    assert!(!readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    let list = http(admin, "GET", "/replicas").await?;
    assert!(list.contains("\"ready\": false"), "{list}");
    assert!(http(admin, "POST", "/replicas/nope/ready?value=false")
        .await?
        .starts_with("HTTP/1.1 404"));
    assert!(http(admin, "POST", "/replicas/replica-1/ready?value=maybe")
        .await?
        .starts_with("HTTP/1.1 400"));
    assert!(b.set_ready("replica-1", true));
    assert!(http(r1, "GET", "/readyz")
        .await?
        .starts_with("HTTP/1.1 200"));
    // A current kube-apiserver's conditions: not ready with a failing etcd check.
    assert!(http(
        admin,
        "POST",
        "/replicas/replica-1/condition?value=not-ready"
    )
    .await?
    .starts_with("HTTP/1.1 204"));
    let readyz = http(r1, "GET", "/readyz").await?;
    assert!(readyz.contains("[-]etcd failed"), "{readyz}");
    let list = http(admin, "GET", "/replicas").await?;
    assert!(list.contains("\"condition\": \"not-ready\""), "{list}");
    assert!(http(
        admin,
        "POST",
        "/replicas/replica-1/condition?value=sideways"
    )
    .await?
    .starts_with("HTTP/1.1 400"));
    b.shutdown().await;
    Ok(())
}
