//! End-to-end behaviour of the load generator against its own fake backends and small
//! misbehaving servers on loopback: distribution numbers for known splits, latency from
//! the intended send time, watches as streams, errors by kind, bounded run time.

mod common;

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use apigate_loadtest::client::ErrorKind;
use apigate_loadtest::distribution::ReplicaSet;
use apigate_loadtest::l4::L4Baseline;
use apigate_loadtest::report::terminal::{fmt_ms, fmt_ratio, fmt_rps, fmt_share};
use apigate_loadtest::report::RunReport;
use apigate_loadtest::runner::run;
use apigate_loadtest::scenario::{Mode, Protocol};
use apigate_loadtest::scrape::ScrapeTarget;
use apigate_loadtest::verdict::Thresholds;
use apigate_loadtest::{compare, report};
use bytes::Bytes;
use common::*;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_requests_to_one_of_three_replicas_gives_cv_sqrt2() -> TestResult {
    let pki = pki()?;
    let reps = replicas(3, replica_options(&pki)).await?;
    let url = format!("https://{}", reps[0].local_addr());
    let mut p = plan(
        &url,
        Some(pki.ca_path.clone()),
        scenario(3, 300.0, Duration::from_secs(1)),
    )?;
    p.replicas = ReplicaSet::Ids(ids(&reps));
    let r = run(&p).await?;
    stop(reps).await;
    let d = r.distribution.as_ref().ok_or("no distribution")?;
    assert_eq!(r.requests.errors, 0, "{:?}", r.errors);
    assert!(r.requests.ok >= 250, "{}", r.requests.ok);
    assert_eq!(d.replicas.len(), 3, "unseen replicas count as zeros");
    assert_eq!(d.replicas[0].requests, r.requests.ok);
    assert!((d.cv - 2f64.sqrt()).abs() < 1e-9, "cv {}", d.cv);
    assert!((d.max_over_mean - 3.0).abs() < 1e-9);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_baseline_even_clients_spread_evenly_and_skewed_clients_stay_pinned() -> TestResult {
    let pki = pki()?;
    let reps = replicas(3, replica_options(&pki)).await?;
    let lb = L4Baseline::start(
        "127.0.0.1:0".parse()?,
        reps.iter().map(|r| r.local_addr()).collect(),
    )
    .await?;
    let url = format!("https://{}", lb.local_addr());

    // Three equal clients, one HTTP/2 connection each: round robin puts one on each replica.
    let mut even = plan(
        &url,
        Some(pki.ca_path.clone()),
        scenario(3, 600.0, Duration::from_secs(1)),
    )?;
    even.name = "l4-even".into();
    even.replicas = ReplicaSet::Ids(ids(&reps));
    // Same, but client 0 sends half of all requests: pinning shows as a high CV.
    let mut skewed_sc = scenario(3, 600.0, Duration::from_secs(1));
    skewed_sc.client_skew = 1.0;
    let mut skewed = plan(&url, Some(pki.ca_path.clone()), skewed_sc)?;
    skewed.name = "l4-skewed".into();
    skewed.replicas = ReplicaSet::Ids(ids(&reps));
    let c = compare::compare(&[even, skewed], Duration::ZERO).await?;
    lb.shutdown().await;
    stop(reps).await;

    let even = c.runs[0].distribution.as_ref().ok_or("no distribution")?;
    assert!(
        even.cv < 0.05,
        "even clients: cv {} {:?}",
        even.cv,
        even.replicas
    );
    assert!(
        even.replicas
            .iter()
            .all(|r| (r.share - 1.0 / 3.0).abs() < 0.03),
        "{:?}",
        even.replicas
    );
    let skewed = c.runs[1].distribution.as_ref().ok_or("no distribution")?;
    // Weights 1, 1/2, 1/3 → shares 6/11, 3/11, 2/11: CV ≈ 0.47.
    assert!(
        skewed.cv > 0.4 && skewed.cv < 0.55,
        "skewed clients: cv {} {:?}",
        skewed.cv,
        skewed.replicas
    );
    let table = report::terminal::compare_table(&c);
    assert!(
        table.contains("l4-even") && table.contains("l4-skewed"),
        "{table}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_distribution_agrees_with_header() -> TestResult {
    let pki = pki()?;
    let reps = replicas(3, replica_options(&pki)).await?;
    let url = format!("https://{}", reps[1].local_addr());
    let mut p = plan(
        &url,
        Some(pki.ca_path.clone()),
        scenario(2, 200.0, Duration::from_millis(800)),
    )?;
    p.scrape = reps
        .iter()
        .map(|r| format!("{}=https://{}", r.id(), r.local_addr()).parse::<ScrapeTarget>())
        .collect::<Result<_, _>>()?;
    let r = run(&p).await?;
    stop(reps).await;
    assert!(r.scrape_errors.is_empty(), "{:?}", r.scrape_errors);
    let s = r.scraped.as_ref().ok_or("no scraped distribution")?;
    let counts: Vec<u64> = s.replicas.iter().map(|x| x.requests).collect();
    assert_eq!(
        counts,
        vec![0, r.requests.ok, 0],
        "scrape delta = requests served"
    );
    assert!((s.cv - 2f64.sqrt()).abs() < 1e-9);
    Ok(())
}

/// A plaintext h2c server that answers at once, except that for one second starting one
/// second after its first request it holds every response until the stall is over.
async fn stalling_server() -> Result<(std::net::SocketAddr, JoinSet<()>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let first = Arc::new(OnceLock::<Instant>::new());
    let mut set = JoinSet::new();
    set.spawn(async move {
        let mut conns = JoinSet::new();
        for _ in 0..64 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let first = Arc::clone(&first);
            conns.spawn(async move {
                let svc = service_fn(move |_req| {
                    let first = Arc::clone(&first);
                    async move {
                        let t0 = *first.get_or_init(Instant::now);
                        let (from, to) = (t0 + Duration::from_secs(1), t0 + Duration::from_secs(2));
                        let now = Instant::now();
                        if now >= from && now < to {
                            tokio::time::sleep_until(to).await;
                        }
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                            b"{}",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
        conns.shutdown().await;
    });
    Ok((addr, set))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_latency_includes_a_one_second_stall_closed_loop_hides_it() -> TestResult {
    // Open loop: 200 req/s for 3 s; a third of the requests are due during the stall and
    // carry it in their latency (measured from the intended send time).
    let (addr, mut server) = stalling_server().await?;
    let mut sc = scenario(1, 200.0, Duration::from_secs(3));
    sc.mix = "get=1".parse()?;
    let open = run(&plan(&format!("http://{addr}"), None, sc.clone())?).await?;
    server.shutdown().await;
    assert_eq!(open.requests.errors, 0, "{:?}", open.errors);
    assert!(
        open.latency_ms.p99 >= 800.0,
        "open-loop p99 {} should show the 1 s stall",
        open.latency_ms.p99
    );
    assert!(
        open.latency_ms.p90 >= 300.0,
        "open-loop p90 {} (a third of requests are stalled)",
        open.latency_ms.p90
    );

    // Closed loop, one outstanding request: only the one request in flight sees the stall.
    let (addr, mut server) = stalling_server().await?;
    sc.mode = Mode::Closed { concurrency: 1 };
    let closed = run(&plan(&format!("http://{addr}"), None, sc.clone())?).await?;
    server.shutdown().await;
    assert!(
        closed.latency_ms.max >= 800.0,
        "the stalled request itself: max {}",
        closed.latency_ms.max
    );
    assert!(
        closed.latency_ms.p99 < 100.0,
        "closed loop hides the stall (coordinated omission): p99 {}",
        closed.latency_ms.p99
    );

    // Open loop with a single slot: requests due during the stall wait for it. The wait
    // is in their latency (target backpressure) but not in the generator's send lag.
    let (addr, mut server) = stalling_server().await?;
    sc.mode = Mode::Open { rate: 200.0 };
    sc.max_inflight = 1;
    let one_slot = run(&plan(&format!("http://{addr}"), None, sc)?).await?;
    server.shutdown().await;
    assert!(
        one_slot.latency_ms.p99 >= 800.0,
        "p99 {}",
        one_slot.latency_ms.p99
    );
    assert!(
        one_slot.send_lag_ms.p99 < 100.0,
        "send lag excludes slot waits: {}",
        one_slot.send_lag_ms.p99
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_are_open_streams_not_slow_requests() -> TestResult {
    let pki = pki()?;
    let opts = apigate_fake_apiserver::ReplicaOptions {
        watch_event_interval: Duration::from_millis(100),
        ..replica_options(&pki)
    };
    let reps = replicas(1, opts).await?;
    let url = format!("https://{}", reps[0].local_addr());
    let mut sc = scenario(2, 100.0, Duration::from_millis(1500));
    sc.watches_per_client = 2;
    let p = plan(&url, Some(pki.ca_path.clone()), sc)?;
    let r = run(&p).await?;
    let open_after = reps[0].open_watches();
    stop(reps).await;
    let w = &r.watches;
    assert_eq!(w.opened, 4, "{w:?}");
    assert_eq!(w.held_to_end, 4, "{w:?}");
    assert_eq!(w.ended_early, 0);
    assert!(w.errors.is_empty(), "{w:?}");
    assert!(w.events >= 4 * 5, "events {}", w.events);
    assert_eq!(w.per_replica.values().sum::<u64>(), 4);
    // Watches lasted > 1.5 s each; none of that is in the latency of requests.
    assert_eq!(r.latency_ms.count, r.requests.ok);
    assert!(r.latency_ms.max < 1000.0, "max {}", r.latency_ms.max);
    assert_eq!(
        r.requests.by_op.values().sum::<u64>(),
        r.requests.ok + r.requests.errors
    );
    assert!(
        open_after <= 4,
        "watches closed by the client at the end ({open_after} still open on the server)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_parses_and_matches_the_terminal_summary() -> TestResult {
    let pki = pki()?;
    let reps = replicas(2, replica_options(&pki)).await?;
    let url = format!("https://{}", reps[0].local_addr());
    let mut p = plan(
        &url,
        Some(pki.ca_path.clone()),
        scenario(2, 200.0, Duration::from_millis(800)),
    )?;
    p.replicas = ReplicaSet::Ids(ids(&reps));
    p.thresholds = Thresholds {
        max_error_rate: Some(0.01),
        max_p99: Some(Duration::from_secs(5)),
    };
    let r = run(&p).await?;
    stop(reps).await;

    let text = report::json::run_json(&r)?;
    let back: RunReport = serde_json::from_str(&text)?;
    assert_eq!(
        (back.requests.ok, back.latency_ms.count, &back.errors),
        (r.requests.ok, r.latency_ms.count, &r.errors)
    );
    let v: serde_json::Value = serde_json::from_str(&text)?;
    assert_eq!(v["schema"], "apigate-loadtest/run/v1");
    let summary = report::terminal::run_summary(&r);
    let f = |k: &str| v["latency_ms"][k].as_f64().unwrap_or(f64::NAN);
    for (label, key) in [
        ("p50", "p50"),
        ("p90", "p90"),
        ("p99", "p99"),
        ("p99.9", "p999"),
        ("max", "max"),
    ] {
        let needle = format!("{label} {}", fmt_ms(f(key)));
        assert!(
            summary.contains(&needle),
            "summary lacks {needle:?}:\n{summary}"
        );
    }
    let ok = v["requests"]["ok"].as_u64().unwrap_or(0);
    assert!(summary.contains(&format!("ok {ok} ")), "{summary}");
    let rps = v["requests"]["throughput_rps"].as_f64().unwrap_or(f64::NAN);
    assert!(
        summary.contains(&format!("throughput {} req/s", fmt_rps(rps))),
        "{summary}"
    );
    let d = &v["distribution"];
    assert!(
        summary.contains(&format!(
            "CV {}",
            fmt_ratio(d["cv"].as_f64().unwrap_or(f64::NAN))
        )),
        "{summary}"
    );
    for rep in d["replicas"].as_array().ok_or("replicas")? {
        let line = format!(
            "{}  {:>10}  {:>7}",
            rep["id"].as_str().unwrap_or(""),
            rep["requests"].as_u64().unwrap_or(0),
            fmt_share(rep["share"].as_f64().unwrap_or(f64::NAN))
        );
        assert!(
            summary.contains(&line),
            "summary lacks {line:?}:\n{summary}"
        );
    }
    assert_eq!(v["verdict"]["passed"], true);
    assert!(summary.contains("verdict    PASS"), "{summary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_counts_connect_errors_ends_on_time_and_fails_threshold() -> TestResult {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let pki = pki()?;
    let mut p = plan(
        &format!("https://127.0.0.1:{port}"),
        Some(pki.ca_path.clone()),
        scenario(2, 100.0, Duration::from_secs(1)),
    )?;
    p.thresholds = Thresholds {
        max_error_rate: Some(0.01),
        max_p99: None,
    };
    let t = Instant::now();
    let r = run(&p).await?;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(r.requests.ok, 0);
    assert!(
        r.errors.get("connect").copied().unwrap_or(0) >= 50,
        "{:?}",
        r.errors
    );
    assert!(!r.verdict.passed);
    assert_eq!(r.requests.error_rate, 1.0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failure_is_counted_as_tls() -> TestResult {
    let served = pki()?;
    let other = pki()?; // a CA that did not sign the server certificate
    let reps = replicas(1, replica_options(&served)).await?;
    let p = plan(
        &format!("https://{}", reps[0].local_addr()),
        Some(other.ca_path.clone()),
        scenario(1, 50.0, Duration::from_millis(500)),
    )?;
    let r = run(&p).await?;
    stop(reps).await;
    assert_eq!(r.requests.ok, 0);
    assert!(
        r.errors.get("tls").copied().unwrap_or(0) > 0,
        "{:?}",
        r.errors
    );
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    Ok(())
}

/// A server that accepts and immediately resets every connection (SO_LINGER 0), or that
/// accepts and never says anything.
async fn bad_server(reset: bool) -> Result<(std::net::SocketAddr, JoinSet<()>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut set = JoinSet::new();
    set.spawn(async move {
        let mut held = Vec::new();
        for _ in 0..10_000 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            if reset {
                // Linger 0 makes close send RST at once (it only blocks for a non-zero linger).
                #[allow(deprecated)]
                let _ = tcp.set_linger(Some(Duration::ZERO));
                drop(tcp);
            } else {
                held.push(tcp);
            }
        }
    });
    Ok((addr, set))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_backend_is_counted_as_reset() -> TestResult {
    let (addr, mut server) = bad_server(true).await?;
    let pki = pki()?;
    let p = plan(
        &format!("https://{addr}"),
        Some(pki.ca_path.clone()),
        scenario(1, 50.0, Duration::from_millis(500)),
    )?;
    let r = run(&p).await?;
    server.shutdown().await;
    assert_eq!(r.requests.ok, 0);
    assert!(
        r.errors.get("reset").copied().unwrap_or(0) > 0,
        "{:?}",
        r.errors
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_backend_times_out_and_the_run_ends_on_time() -> TestResult {
    let (addr, mut server) = bad_server(false).await?;
    let mut sc = scenario(2, 50.0, Duration::from_secs(1));
    sc.timeout = Duration::from_millis(400);
    sc.connect_timeout = Duration::from_millis(300);
    let pki = pki()?;
    let p = plan(&format!("https://{addr}"), Some(pki.ca_path.clone()), sc)?;
    let t = Instant::now();
    let r = run(&p).await?;
    let took = t.elapsed();
    server.shutdown().await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(r.requests.ok, 0);
    assert!(
        r.errors.get("timeout").copied().unwrap_or(0) > 0,
        "{:?}",
        r.errors
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_pool_ipv6_and_max_requests() -> TestResult {
    let pki = pki()?;
    let rep = match replica_at("[::1]:0".parse()?, replica_options(&pki)).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return Ok(());
        }
    };
    let mut sc = scenario(2, 400.0, Duration::from_secs(2));
    sc.protocol = Protocol::H1;
    sc.h1_pool = 2;
    sc.max_requests = Some(100);
    let p = plan(
        &format!("https://[::1]:{}", rep.local_addr().port()),
        Some(pki.ca_path.clone()),
        sc,
    )?;
    let t = Instant::now();
    let r = run(&p).await?;
    let took = t.elapsed();
    rep.shutdown().await;
    assert_eq!(r.requests.ok + r.requests.errors, 100, "bounded total");
    assert_eq!(r.requests.errors, 0, "{:?}", r.errors);
    assert!(
        took < Duration::from_millis(1500),
        "stops when the bound is reached: {took:?}"
    );
    assert!(
        r.measured_seconds < 1.0,
        "throughput uses the time until the bound: {}",
        r.measured_seconds
    );
    assert_eq!(r.errors.get(&ErrorKind::Timeout.label()), None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_and_sni_override() -> TestResult {
    use apigate_fake_apiserver::pki::Ca;
    let ca = Ca::new("mtls CA")?;
    let server = ca.issue_server(&["api.shoot.example"])?;
    let client = ca.issue_client("loadtest-user", &["system:masters"])?;
    let dir = tempfile::tempdir()?;
    let (ca_path, cert, key) = (
        dir.path().join("ca.pem"),
        dir.path().join("c.pem"),
        dir.path().join("k.pem"),
    );
    std::fs::write(&ca_path, ca.cert_pem())?;
    std::fs::write(&cert, &client.cert_pem)?;
    std::fs::write(&key, &client.key_pem)?;
    let opts = apigate_fake_apiserver::ReplicaOptions {
        tls: Some(apigate_fake_apiserver::TlsMaterial::from_issued(&server)),
        client_ca_pem: Some(ca.cert_pem()),
        ..apigate_fake_apiserver::ReplicaOptions::default()
    };
    let reps = replicas(1, opts).await?;
    let url = format!("https://{}", reps[0].local_addr());

    // The certificate only names api.shoot.example: connecting to 127.0.0.1 needs --sni.
    let mut p = plan(
        &url,
        Some(ca_path.clone()),
        scenario(1, 50.0, Duration::from_millis(400)),
    )?;
    p.tls.cert = Some(cert.clone());
    p.tls.key = Some(key.clone());
    let without_sni = run(&p).await?;
    p.tls.sni = Some("api.shoot.example".into());
    let with_sni = run(&p).await?;
    stop(reps).await;
    assert!(
        without_sni.errors.get("tls").copied().unwrap_or(0) > 0,
        "{:?}",
        without_sni.errors
    );
    assert_eq!(with_sni.requests.errors, 0, "{:?}", with_sni.errors);
    assert!(with_sni.requests.ok > 0);

    // A key without its certificate is a configuration error, reported before any load.
    p.tls.cert = None;
    assert!(run(&p).await.is_err());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_could_not_be_sent_count_as_unfinished() -> TestResult {
    // A server that accepts and never answers holds the one allowed slot for the whole
    // run: every later request of the timetable is due but never sent.
    let (addr, mut server) = bad_server(false).await?;
    let mut sc = scenario(1, 100.0, Duration::from_secs(1));
    sc.max_inflight = 1;
    sc.timeout = Duration::from_secs(10);
    sc.grace = Duration::from_millis(300);
    let t = Instant::now();
    let r = run(&plan(&format!("http://{addr}"), None, sc)?).await?;
    let took = t.elapsed();
    server.shutdown().await;
    assert!(took < Duration::from_millis(2500), "ends on time: {took:?}");
    assert_eq!(r.requests.ok, 0);
    let unfinished = r.errors.get("unfinished").copied().unwrap_or(0);
    assert!((98..=100).contains(&unfinished), "{:?}", r.errors);
    assert!(r
        .error_examples
        .get("unfinished")
        .is_some_and(|m| m.contains("never sent")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_go_like_client_waits_out_retry_after_and_a_flood_does_not() -> TestResult {
    let pki = pki()?;
    let reps = replicas(1, replica_options(&pki)).await?;
    // API Priority and Fairness throttling every request: 429 with `Retry-After: 1`.
    reps[0].set_condition(apigate_fake_apiserver::Condition::Throttling);
    let url = format!("https://{}", reps[0].local_addr());
    let mut sent = Vec::new();
    for honor in [true, false] {
        let mut s = scenario(1, 1.0, Duration::from_millis(2500));
        s.mode = Mode::Closed { concurrency: 1 };
        s.honor_retry_after = honor;
        let r = run(&plan(&url, Some(pki.ca_path.clone()), s)?).await?;
        let throttled = r.errors.get("http_429").copied().unwrap_or(0);
        assert_eq!(
            throttled,
            r.requests.ok + r.requests.errors,
            "{:?}",
            r.errors
        );
        sent.push(throttled);
    }
    stop(reps).await;
    // Waiting a second after each 429, one client sends at most one request a second.
    assert!(sent[0] <= 4, "honouring Retry-After: {}", sent[0]);
    assert!(sent[1] > 10, "not honouring it: {}", sent[1]);
    Ok(())
}

/// An HTTP/2 server (plain, prior knowledge) that refuses every other stream with
/// `REFUSED_STREAM` before looking at it, and answers the rest 200.
async fn refusing_server() -> Result<(std::net::SocketAddr, JoinSet<()>), std::io::Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut set = JoinSet::new();
    set.spawn(async move {
        let mut conns = JoinSet::new();
        for _ in 0..64 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            conns.spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                let mut n = 0u64;
                while let Some(Ok((_request, mut respond))) = conn.accept().await {
                    n += 1;
                    if n % 2 == 1 {
                        respond.send_reset(h2::Reason::REFUSED_STREAM);
                    } else {
                        let _ = respond.send_response(hyper::Response::new(()), true);
                    }
                }
            });
        }
        conns.shutdown().await;
    });
    Ok((addr, set))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_retries_a_refused_stream_is_a_signal_sent_again_not_a_failure() -> TestResult {
    let (addr, mut server) = refusing_server().await?;
    let mut reports = Vec::new();
    for retries in [true, false] {
        let mut s = scenario(1, 1.0, Duration::from_millis(1500));
        s.mode = Mode::Closed { concurrency: 1 };
        // POSTs: a refused stream was never processed, so any method may go again.
        s.mix = "create=1".parse()?;
        s.retries = retries;
        reports.push(run(&plan(&format!("http://{addr}"), None, s)?).await?);
    }
    server.shutdown().await;
    let (with, without) = (&reports[0], &reports[1]);
    assert_eq!(with.requests.errors, 0, "{:?}", with.errors);
    assert!(with.requests.ok > 10, "{:?}", with.requests);
    let refused = with.retried.get("unprocessed").copied().unwrap_or(0);
    assert!(
        refused.abs_diff(with.requests.ok) <= 1,
        "every other stream refused and sent again: {refused} for {} ok",
        with.requests.ok
    );
    assert!(
        without.errors.get("reset").copied().unwrap_or(0) > 10,
        "without retries the refusals are failures: {:?}",
        without.errors
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_run_reports_each_action_and_the_requests_of_its_window() -> TestResult {
    let pki = pki()?;
    let reps = replicas(1, replica_options(&pki)).await?;
    let dir = tempfile::tempdir()?;
    let (throttle, recover) = (dir.path().join("throttle"), dir.path().join("recover"));
    let mut s = scenario(2, 1.0, Duration::from_millis(4500));
    s.mode = Mode::Closed { concurrency: 1 };
    s.retries = true;
    let mut p = plan(
        &format!("https://{}", reps[0].local_addr()),
        Some(pki.ca_path.clone()),
        s,
    )?;
    p.actions = vec![
        format!("1s=throttle=touch {}", throttle.display()).parse()?,
        format!("2.5s=recover=touch {}", recover.display()).parse()?,
        "3.5s=broken=exit 7".parse()?,
    ];
    // The actions' commands leave files; this flips the replica when they appear.
    let flip = async {
        for _ in 0..1_000 {
            if recover.exists() {
                reps[0].set_condition(apigate_fake_apiserver::Condition::Ready);
                return;
            }
            if throttle.exists() {
                reps[0].set_condition(apigate_fake_apiserver::Condition::Throttling);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (r, ()) = tokio::join!(run(&p), flip);
    let r = r?;
    stop(reps).await;
    let labels: Vec<_> = r.actions.iter().map(|a| a.label.as_str()).collect();
    assert_eq!(labels, ["throttle", "recover", "broken"]);
    assert!(r.actions[0].ok && r.actions[1].ok);
    assert!(
        !r.actions[2].ok && r.actions[2].detail.contains('7'),
        "{:?}",
        r.actions[2]
    );
    let started = r.actions[0].started_s.unwrap_or_default();
    assert!((1.0..1.5).contains(&started), "started at {started}");
    let windows: Vec<_> = r.windows.iter().map(|w| w.after.as_str()).collect();
    assert_eq!(windows, ["start", "throttle", "recover", "broken"]);
    // Throttled (429, Retry-After: 1), the clients waited and sent again (a second
    // after the throttling began, in its window): retried, not failed; before and long
    // after, nothing was sent again.
    assert_eq!(r.requests.errors, 0, "{:?}", r.errors);
    assert!(
        r.windows[0].ok > 5 && r.windows[0].retried == 0,
        "{:?}",
        r.windows[0]
    );
    assert!(r.windows[1].retried > 0, "{:?}", r.windows[1]);
    assert!(
        r.windows[3].ok > 5 && r.windows[3].retried == 0,
        "{:?}",
        r.windows[3]
    );
    assert!(
        r.retried.get("http_429_retry_after").copied().unwrap_or(0) > 0,
        "{:?}",
        r.retried
    );
    let summary = report::terminal::run_summary(&r);
    assert!(
        summary.contains("action     broken") && summary.contains("FAILED"),
        "{summary}"
    );
    let svg = report::html::svg(std::slice::from_ref(&r))?;
    assert!(
        svg.contains("throttle") && svg.contains("recover"),
        "actions marked on the plot"
    );
    Ok(())
}
