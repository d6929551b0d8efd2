//! Runs one scenario against one target and produces its [`RunReport`].
//!
//! Shape of a run:
//! 1. build the endpoint and K clients; open each client's first connection in client
//!    order (bounded by the connect timeout in total);
//! 2. scrape the replicas' `apiserver_request_total` (if asked);
//! 3. one driver task per client sends requests on the open- or closed-loop schedule
//!    from `start` to `end` (warm-up requests are sent but not recorded), plus the
//!    client's standing watches;
//! 4. at `end`, in-flight requests get `grace` to finish; what is left is aborted and
//!    counted as `unfinished`, so the run always ends on time;
//! 5. scrape again and build the report.
//!
//! Every loop here is bounded by the run's end time, and every task is owned by a
//! `JoinSet` that is shut down before `run` returns.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use http::HeaderName;
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

use crate::actions::{self, Action};
use crate::client::tls::{self, TlsError, TlsOptions};
use crate::client::{ClientError, Endpoint, ErrorKind, HttpConn, Target};
use crate::distribution::{distribution, ReplicaSet};
use crate::progress;
use crate::report::{RunMeta, RunReport};
use crate::requests::RequestFactory;
use crate::retry;
use crate::scenario::{Mode, Op, Protocol, Scenario, ScenarioError};
use crate::schedule::{OpenSchedule, Tickets, Window};
use crate::scrape::{self, LabelMatch, ScrapeTarget};
use crate::stats::{Outcome, Sample, Stats};
use crate::verdict::{self, Thresholds};

/// Timeline resolution of a fault run (coarser when the run is longer than 600 of them).
const FAULT_RESOLUTION: Duration = Duration::from_millis(100);

/// Everything needed to run one scenario against one target.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// Name of the target in reports.
    pub name: String,
    /// The target.
    pub target: Target,
    /// The load.
    pub scenario: Arc<Scenario>,
    /// TLS settings for the target (and the scrapes).
    pub tls: TlsOptions,
    /// Bearer token sent with every request.
    pub token: Option<String>,
    /// The replica set, for the header distribution.
    pub replicas: ReplicaSet,
    /// Replicas to scrape before and after.
    pub scrape: Vec<ScrapeTarget>,
    /// Label matchers for the scrape.
    pub scrape_labels: Vec<LabelMatch>,
    /// Thresholds for the verdict.
    pub thresholds: Thresholds,
    /// Print the live progress line.
    pub progress: bool,
    /// Timed actions during the measured phase (a fault run).
    pub actions: Vec<Action>,
}

/// A run that could not start (bad local configuration). Network failures during the
/// run are never errors here: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Scenario configuration.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
}

/// Shared state of the tasks of one run.
struct Ctx {
    scenario: Arc<Scenario>,
    factory: RequestFactory,
    stats: Arc<Stats>,
    window: Window,
    tickets: Tickets,
    replica_header: HeaderName,
}

fn endpoint_for(
    target: &Target,
    tls_opts: &TlsOptions,
    protocol: Protocol,
    connect_timeout: Duration,
) -> Result<Arc<Endpoint>, TlsError> {
    let tls = if target.https {
        Some((
            tls::client_config(tls_opts, protocol)?,
            tls::server_name(tls_opts, target.bare_host())?,
        ))
    } else {
        None
    };
    Ok(Arc::new(Endpoint::new(
        target.clone(),
        tls,
        protocol,
        connect_timeout,
    )))
}

/// Runs the plan to completion. Returns within `warmup + duration + grace` plus bounded
/// connect and scrape time, whatever the target does.
pub async fn run(plan: &RunPlan) -> Result<RunReport, RunError> {
    let sc = Arc::clone(&plan.scenario);
    sc.validate()?;
    let endpoint = endpoint_for(&plan.target, &plan.tls, sc.protocol, sc.connect_timeout)?;
    let factory = RequestFactory::new(
        &sc,
        plan.target.scheme(),
        &plan.target.authority(),
        plan.token.as_deref(),
    )?;
    let replica_header = HeaderName::from_bytes(sc.replica_header.as_bytes()).map_err(|_| {
        ScenarioError::Invalid("--replica-header is not a valid header name".into())
    })?;

    let conns: Vec<Arc<HttpConn>> = (0..sc.clients)
        .map(|_| Arc::new(HttpConn::new(Arc::clone(&endpoint), sc.h1_pool)))
        .collect();
    preconnect(&conns, sc.connect_timeout).await;

    let before = scrape_all(plan).await;

    let shards = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
        .min(sc.clients);
    // A fault run splits its report at the actions: finer buckets cut it closer.
    let resolution = if plan.actions.is_empty() {
        Duration::from_secs(1)
    } else {
        FAULT_RESOLUTION
    };
    let stats = Arc::new(Stats::with_resolution(sc.duration, shards, resolution));
    let window = Window::new(Instant::now(), sc.warmup, sc.duration);
    let ctx = Arc::new(Ctx {
        scenario: Arc::clone(&sc),
        factory,
        stats: Arc::clone(&stats),
        window,
        tickets: Tickets::new(sc.max_requests),
        replica_header,
    });
    let _progress = plan
        .progress
        .then(|| progress::spawn(Arc::clone(&stats), window, plan.name.clone()));

    let actions = (!plan.actions.is_empty()).then(|| {
        tokio::spawn(actions::run(
            plan.actions.clone(),
            window.measure_start,
            window.end,
        ))
    });
    let weights = sc.client_weights();
    let mut drivers = JoinSet::new();
    for (c, conn) in conns.iter().enumerate() {
        let weight = weights.get(c).copied().unwrap_or(0.0);
        drivers.spawn(drive_client(Arc::clone(&ctx), Arc::clone(conn), c, weight));
    }
    let hard_deadline = window.end + sc.grace + Duration::from_secs(2);
    let all_done = timeout_at(hard_deadline, async {
        while drivers.join_next().await.is_some() {}
    })
    .await;
    if all_done.is_err() {
        tracing::warn!("drivers did not stop by the hard deadline; aborting them");
    }
    drivers.shutdown().await;
    // Every action started before the end; the last may still run, bounded by its timeout.
    let actions = match actions {
        Some(task) => task.await.unwrap_or_default(),
        None => Vec::new(),
    };
    drop(_progress);
    if plan.progress {
        progress::finish();
    }
    for c in &conns {
        c.close().await;
    }

    let unfinished = stats.live.in_flight.load(Ordering::Relaxed).max(0) as u64;
    let never_sent = stats.live.never_sent.load(Ordering::Relaxed);
    stats.add_unfinished(unfinished, never_sent, sc.grace);
    let after = scrape_all(plan).await;

    let Some(totals) = stats.finish() else {
        return Err(RunError::Scenario(ScenarioError::Invalid(
            "no statistics recorded".into(),
        )));
    };
    let measured = if ctx.tickets.exhausted() && totals.last_completion < sc.duration {
        totals.last_completion.max(Duration::from_millis(1))
    } else {
        sc.duration
    };
    let header_dist =
        (!totals.replicas.is_empty() || plan.replicas != ReplicaSet::Seen).then(|| {
            distribution(
                "header",
                &plan.replicas,
                &totals.replicas,
                totals.unattributed,
            )
        });
    let (scraped, scrape_errors) = scraped_distribution(plan, before, after);
    let mut report = RunReport::build(
        RunMeta {
            target: &plan.name,
            url: &plan.target.to_string(),
            scenario: &sc,
            measured,
            distribution: header_dist,
            scraped,
            scrape_errors,
            actions,
        },
        &totals,
    );
    report.verdict = verdict::evaluate(&report, &plan.thresholds);
    Ok(report)
}

/// Opens each client's first connection in order; stops early if the target is down
/// (the requests will then record the failures) and never takes longer than
/// `connect_timeout` in total.
async fn preconnect(conns: &[Arc<HttpConn>], connect_timeout: Duration) {
    let all = async {
        for (i, c) in conns.iter().enumerate() {
            if let Err(e) = c.preconnect().await {
                tracing::warn!(client = i, error = %e, "pre-connect failed; requests will retry");
                return;
            }
        }
    };
    if timeout(connect_timeout, all).await.is_err() {
        tracing::warn!("pre-connecting all clients took longer than the connect timeout; the rest connect lazily");
    }
}

type ScrapeResult = (BTreeMap<String, f64>, Vec<String>);

async fn scrape_all(plan: &RunPlan) -> ScrapeResult {
    let mut values = BTreeMap::new();
    let mut errors = Vec::new();
    for t in &plan.scrape {
        let ep = match endpoint_for(
            &t.target,
            &plan.tls,
            Protocol::H1,
            plan.scenario.connect_timeout,
        ) {
            Ok(ep) => ep,
            Err(e) => {
                errors.push(format!("scrape {}: {e}", t.name));
                continue;
            }
        };
        match scrape::scrape_one(
            t,
            ep,
            &plan.scrape_labels,
            plan.scenario.timeout,
            plan.token.as_deref(),
        )
        .await
        {
            Ok(v) => {
                values.insert(t.name.clone(), v);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    (values, errors)
}

fn scraped_distribution(
    plan: &RunPlan,
    (before, mut errors): ScrapeResult,
    (after, after_errors): ScrapeResult,
) -> (Option<crate::distribution::Distribution>, Vec<String>) {
    if plan.scrape.is_empty() {
        return (None, Vec::new());
    }
    errors.extend(after_errors);
    if !errors.is_empty() || before.len() != plan.scrape.len() || after.len() != plan.scrape.len() {
        return (None, errors);
    }
    let ids: Vec<String> = plan.scrape.iter().map(|t| t.name.clone()).collect();
    let counts = scrape::delta(&before, &after);
    (
        Some(distribution("scrape", &ReplicaSet::Ids(ids), &counts, 0)),
        errors,
    )
}

/// Drives one client: its standing watches and its requests, then drains.
async fn drive_client(ctx: Arc<Ctx>, conn: Arc<HttpConn>, c: usize, weight: f64) {
    let mut tasks = JoinSet::new();
    for _ in 0..ctx.scenario.watches_per_client {
        tasks.spawn(watch_loop(Arc::clone(&ctx), Arc::clone(&conn), c));
    }
    let seed = ctx.scenario.seed ^ (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match ctx.scenario.mode {
        Mode::Open { rate } => open_loop(&ctx, &conn, c, weight, rate, seed).await,
        Mode::Closed { concurrency } => {
            for w in 0..concurrency {
                let rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
                tasks.spawn(closed_worker(Arc::clone(&ctx), Arc::clone(&conn), c, rng));
            }
        }
    }
    let deadline = ctx.window.end + ctx.scenario.grace;
    let _ = timeout_at(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.shutdown().await;
}

/// Open loop: send on the timetable whatever happened before; wait (counted in latency)
/// only when `max_inflight` requests are outstanding.
///
/// The client's requests run as futures inside this driver task (not one spawned task
/// each): a client's requests share one connection task anyway, and spawning per request
/// costs more than the rest of the generator's work.
async fn open_loop(ctx: &Ctx, conn: &HttpConn, c: usize, weight: f64, rate: f64, seed: u64) {
    let sched = OpenSchedule::new(ctx.window.start, rate, weight, c, ctx.scenario.clients);
    let mut rng = StdRng::seed_from_u64(seed);
    let end = ctx.window.end;
    let max_inflight = ctx.scenario.max_inflight;
    let mut inflight = FuturesUnordered::new();
    // Requests due just before the end may go out a timer tick or two late.
    let send_until = end + SEND_TOLERANCE;
    // When the driver was last released from waiting for a free slot.
    let mut released = ctx.window.start;
    let total = ctx.scenario.warmup + ctx.scenario.duration;
    // Bound in count as well as time: the timetable has at most this many entries.
    let max_i = (total.as_secs_f64() / sched.interval().as_secs_f64()).ceil() as u64 + 1;
    'sending: for i in 0..max_i {
        let intended = sched.intended(i);
        if intended >= end {
            break;
        }
        // Wait until the send time and a free slot, completing responses meanwhile.
        let mut blocked = false;
        let lag_ref = loop {
            let now = Instant::now();
            if now >= send_until {
                // Due before the end but not sent by then — because the target held every
                // slot, or the generator fell behind (see send lag). A generator that kept
                // up would have sent them, so they count, as `unfinished`.
                let n = never_sent(ctx, &sched, i, max_i);
                ctx.stats.live.never_sent.fetch_add(n, Ordering::Relaxed);
                break 'sending;
            }
            let full = inflight.len() >= max_inflight;
            let due = intended <= now;
            if due && !full {
                if blocked {
                    // Held up by the target: the lag of this and the following
                    // (now overdue) requests counts from here.
                    released = now;
                }
                break intended.max(released);
            }
            blocked |= due && full;
            tokio::select! {
                biased;
                Some(_) = inflight.next(), if !inflight.is_empty() => {}
                _ = sleep_until(intended), if !due => {}
                _ = sleep_until(send_until), if due => {}
            }
        };
        let measured = ctx.window.is_measured(intended);
        if measured && !ctx.tickets.take() {
            break;
        }
        let planned = Planned::next(ctx, &mut rng, intended, lag_ref, measured);
        inflight.push(one_request(ctx, conn, c, planned));
        // Start it now (and collect whatever finished), with this task's waker.
        std::future::poll_fn(|cx| {
            while let std::task::Poll::Ready(Some(_)) = inflight.poll_next_unpin(cx) {}
            std::task::Poll::Ready(())
        })
        .await;
    }
    // Drain; what is still running at `end + grace` is dropped and counts as unfinished.
    let _ = timeout_at(end + ctx.scenario.grace, async {
        while inflight.next().await.is_some() {}
    })
    .await;
}

/// How late after the end a request that was due before it may still be sent.
const SEND_TOLERANCE: Duration = Duration::from_millis(10);

/// Number of measured timetable entries from `from` on that were due before the end
/// (bounded by `--max-requests`).
fn never_sent(ctx: &Ctx, sched: &OpenSchedule, from: u64, max_i: u64) -> u64 {
    let mut n = 0;
    for j in from..max_i {
        let t = sched.intended(j);
        if t >= ctx.window.end {
            break;
        }
        if ctx.window.is_measured(t) {
            if !ctx.tickets.take() {
                break;
            }
            n += 1;
        }
    }
    n
}

/// Closed loop: one outstanding request at a time per worker, timed from the actual send.
async fn closed_worker(ctx: Arc<Ctx>, conn: Arc<HttpConn>, c: usize, mut rng: StdRng) {
    // Bounded by time; the count bound guards against a clock that does not advance.
    for _ in 0..u32::MAX {
        let now = Instant::now();
        if now >= ctx.window.end {
            break;
        }
        let measured = ctx.window.is_measured(now);
        if measured && !ctx.tickets.take() {
            break;
        }
        let planned = Planned::next(&ctx, &mut rng, now, now, measured);
        let retry_after = one_request(&ctx, &conn, c, planned).await;
        if let Some(wait) = retry_after.filter(|_| ctx.scenario.honor_retry_after) {
            // As client-go: wait out the server's `Retry-After` (within the run).
            tokio::time::sleep_until((Instant::now() + wait).min(ctx.window.end)).await;
        }
    }
}

/// Sends one request and records it (if measured) with latency from `t_ref`.
/// One request about to be sent.
struct Planned {
    op: Op,
    req: Result<http::Request<http_body_util::Full<bytes::Bytes>>, http::Error>,
    /// Latency is measured from here: the intended (open loop) or actual send time.
    t_ref: Instant,
    /// Send lag is measured from here: the intended time, or later if the driver was
    /// held up waiting for a free `--max-inflight` slot (the target's backpressure, not
    /// generator lateness).
    lag_ref: Instant,
    /// Whether it is recorded.
    measured: bool,
}

impl Planned {
    /// The next request of the mix, timed from `t_ref` (latency) and `lag_ref` (send lag).
    fn next(ctx: &Ctx, rng: &mut StdRng, t_ref: Instant, lag_ref: Instant, measured: bool) -> Self {
        let op = ctx.scenario.mix.pick(rng);
        let req = ctx.factory.build(op, rng);
        Planned {
            op,
            req,
            t_ref,
            lag_ref,
            measured,
        }
    }
}

/// Returns the `Retry-After` of a 429 or 5xx answer.
async fn one_request(ctx: &Ctx, conn: &HttpConn, c: usize, p: Planned) -> Option<Duration> {
    let Planned {
        op,
        req,
        t_ref,
        lag_ref,
        measured,
    } = p;
    if measured {
        ctx.stats.live.in_flight.fetch_add(1, Ordering::Relaxed);
    }
    let send_lag = Instant::now().saturating_duration_since(lag_ref);
    let result = match req {
        Ok(req) => attempts(ctx, conn, req, measured.then_some(c)).await,
        Err(e) => Err(ClientError::new(
            ErrorKind::Other,
            format!("building request: {e}"),
        )),
    };
    let done = Instant::now();
    let (outcome, replica, bytes, error, retry_after) = match result {
        Ok(answer) => (
            answer.outcome,
            answer.replica,
            answer.bytes,
            None,
            answer.retry_after,
        ),
        Err(e) => {
            tracing::debug!(client = c, error = %e, "request failed");
            (Outcome::Failed(e.kind), None, 0, Some(e.message), None)
        }
    };
    if measured {
        ctx.stats.live.in_flight.fetch_sub(1, Ordering::Relaxed);
        ctx.stats.record(
            c,
            Sample {
                op,
                since_start: t_ref.saturating_duration_since(ctx.window.measure_start),
                latency: done.saturating_duration_since(t_ref),
                outcome,
                replica,
                bytes,
                send_lag,
                error,
            },
        );
    } else {
        ctx.stats.live.warmup.fetch_add(1, Ordering::Relaxed);
    }
    retry_after
}

/// Send `req`, and with `--retries` send it again on what client-go retries (within
/// the run's grace after its end); the last attempt's result. Each retry is recorded
/// for client `measured` (`None`: a warm-up request, not recorded).
async fn attempts(
    ctx: &Ctx,
    conn: &HttpConn,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
    measured: Option<usize>,
) -> Result<Exchanged, ClientError> {
    let once = |req| async {
        match timeout(ctx.scenario.timeout, exchange(ctx, conn, req)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::new(ErrorKind::Timeout, "request timed out")),
        }
    };
    if !ctx.scenario.retries {
        return once(req).await;
    }
    let last_send = ctx.window.end + ctx.scenario.grace;
    // Ends: `retry::after` answers `None` after `MAX_RETRIES`.
    let mut done = 0;
    loop {
        // A copy to send (its body is shared bytes); `req` stays for the next attempt.
        let result = once(req.clone()).await;
        let attempt = match &result {
            Ok(answer) => retry::Attempt::Answered {
                status: answer.status,
                retry_after: answer.retry_after,
            },
            Err(e) => retry::Attempt::Failed(e),
        };
        let Some((signal, wait)) = retry::after(req.method(), done, attempt) else {
            return result;
        };
        let resend = Instant::now() + wait;
        if resend >= last_send {
            return result;
        }
        sleep_until(resend).await;
        if let Some(client) = measured {
            let at = resend.saturating_duration_since(ctx.window.measure_start);
            ctx.stats.retried(client, signal, at);
        }
        done += 1;
    }
}

/// An answer, read whole.
struct Exchanged {
    outcome: Outcome,
    /// The replica that answered (from the replica header).
    replica: Option<String>,
    bytes: u64,
    /// The `Retry-After` of a 429 or 5xx, in seconds.
    retry_after: Option<Duration>,
    /// Its status code.
    status: u16,
}

/// Sends, reads the whole body, and classifies the status.
async fn exchange(
    ctx: &Ctx,
    conn: &HttpConn,
    req: http::Request<http_body_util::Full<bytes::Bytes>>,
) -> Result<Exchanged, ClientError> {
    let (resp, lease) = conn.send(req).await?;
    let status = resp.status();
    let retry_after = (status.as_u16() == 429 || status.is_server_error())
        .then(|| resp.headers().get(http::header::RETRY_AFTER))
        .flatten()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let replica = resp
        .headers()
        .get(&ctx.replica_header)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::classify(&e, ErrorKind::Reset))?;
        if let Some(d) = frame.data_ref() {
            bytes += d.len() as u64;
        }
    }
    drop(lease);
    let outcome = if status.is_success() || ctx.scenario.accept_status.contains(&status.as_u16()) {
        Outcome::Ok
    } else {
        Outcome::Failed(ErrorKind::Status(status.as_u16()))
    };
    Ok(Exchanged {
        outcome,
        replica,
        bytes,
        retry_after,
        status: status.as_u16(),
    })
}

/// How a watch stream ended.
enum WatchEnd {
    HeldToEnd,
    EndedEarly,
    Failed(ErrorKind),
}

/// Keeps one watch open from the start to the end of the run, re-opening it (after a
/// short pause) when the server ends it. Counted as streams and events, never as
/// latency samples.
async fn watch_loop(ctx: Arc<Ctx>, conn: Arc<HttpConn>, c: usize) {
    let end = ctx.window.end;
    const MAX_ATTEMPTS: u32 = 100_000;
    for _ in 0..MAX_ATTEMPTS {
        if Instant::now() >= end {
            break;
        }
        let server_timeout = end.saturating_duration_since(Instant::now()).as_secs() + 60;
        let req = match ctx.factory.watch(server_timeout) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot build watch request");
                return;
            }
        };
        let opened = tokio::select! {
            r = timeout(ctx.scenario.timeout, conn.send(req)) => r,
            _ = sleep_until(end) => break,
        };
        let result = match opened {
            Err(_) => WatchEnd::Failed(ErrorKind::Timeout),
            Ok(Err(e)) => {
                tracing::debug!(client = c, error = %e, "watch failed");
                WatchEnd::Failed(e.kind)
            }
            Ok(Ok((resp, lease))) if !resp.status().is_success() => {
                drop(lease);
                WatchEnd::Failed(ErrorKind::Status(resp.status().as_u16()))
            }
            Ok(Ok((resp, lease))) => {
                let replica = resp
                    .headers()
                    .get(&ctx.replica_header)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                ctx.stats.watch(c, |w| {
                    w.opened += 1;
                    if let Some(r) = &replica {
                        *w.per_replica.entry(r.clone()).or_default() += 1;
                    }
                });
                ctx.stats.live.watches_open.fetch_add(1, Ordering::Relaxed);
                let mut body = resp.into_body();
                let mut events = 0u64;
                let how = loop {
                    tokio::select! {
                        f = body.frame() => match f {
                            None => break WatchEnd::EndedEarly,
                            Some(Err(e)) => break WatchEnd::Failed(ClientError::classify(&e, ErrorKind::Reset).kind),
                            Some(Ok(frame)) => {
                                if let Some(d) = frame.data_ref() {
                                    events += d.iter().filter(|&&b| b == b'\n').count() as u64;
                                }
                            }
                        },
                        _ = sleep_until(end) => break WatchEnd::HeldToEnd,
                    }
                };
                drop(body);
                drop(lease);
                ctx.stats.live.watches_open.fetch_sub(1, Ordering::Relaxed);
                ctx.stats.watch(c, |w| w.events += events);
                how
            }
        };
        ctx.stats.watch(c, |w| match result {
            WatchEnd::HeldToEnd => w.held_to_end += 1,
            WatchEnd::EndedEarly => w.ended_early += 1,
            WatchEnd::Failed(k) => *w.errors.entry(k).or_default() += 1,
        });
        // Do not hammer a failing target; bounded by the end of the run.
        let pause = Instant::now() + Duration::from_millis(200);
        sleep_until(pause.min(end)).await;
    }
}
