//! Active health checks: one prober per replica and probe identity, shared by every
//! route that uses both, stopped when no snapshot uses it.
//!
//! A prober checks its replica every interval (±10% jitter, the first check at a random
//! point of the first interval so a thousand replicas are not probed in step) and feeds
//! the verdict to the replica's health ([`crate::balance::health`]). The registry holds
//! the probers the active configuration needs ([`ProbeRegistry::hold`], at every
//! swap); route runtimes only refer to them. So a prober stops as soon as no route of
//! the active configuration uses it, even while requests that started under an older
//! configuration are still running.
//!
//! The probers run on a thread of their own ([`ProbeRegistry::on_own_thread`]): their
//! timers and sockets never wait behind client traffic on a busy worker, and one thread
//! that owns all of them wakes no other. Measured in the README: at 500 checks/s that
//! costs a fifth of the kernel time the shared multi-threaded runtime did.
//!
//! A 401 or 403 answer means the probe's identity is wrong, not that the replica is:
//! it is counted and logged as misconfiguration and never makes a replica unready.

pub mod check;

use std::future::Future;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::weak_map::WeakMap;
use std::time::Duration;

use apigate_control::snapshot::{Ejection, HealthCheck, Mode, RouteSettings, SlowStart};
use apigate_control::Route;
use rand::Rng;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use self::check::{Check, Connection, Outcome};
use crate::balance::health::{now_nanos, ProbeRules};
use crate::balance::{observe, BackendState};
use crate::metrics::Metrics;

/// When a probe is due and what its verdict is checked against: the latest settings of
/// the routes that share the prober.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Time between probes (jittered).
    pub interval: Duration,
    /// A probe without an answer within this failed.
    pub timeout: Duration,
    /// Passed probes in a row that make an unready replica ready.
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a replica unready.
    pub unhealthy_threshold: u32,
    /// The ramp a replica coming back goes through.
    pub slow_start: SlowStart,
    /// Passive ejection: a failed probe in probation ejects again.
    pub ejection: Ejection,
}

impl Schedule {
    fn of(health: &HealthCheck, settings: &RouteSettings) -> Schedule {
        Schedule {
            interval: health.interval,
            timeout: health.timeout,
            healthy_threshold: health.healthy_threshold,
            unhealthy_threshold: health.unhealthy_threshold,
            slow_start: settings.slow_start,
            ejection: settings.ejection,
        }
    }

    fn rules(&self) -> ProbeRules<'_> {
        ProbeRules {
            healthy_threshold: self.healthy_threshold,
            unhealthy_threshold: self.unhealthy_threshold,
            ejection: &self.ejection,
            slow_start: &self.slow_start,
        }
    }
}

struct Shared {
    backend: Arc<BackendState>,
    kind: &'static str,
    schedule: Mutex<Schedule>,
    /// The last probe was refused (401/403); logged once per change.
    misconfigured: AtomicBool,
    /// How long the last probe took, in microseconds (0: none yet).
    last_micros: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn schedule(&self) -> Schedule {
        match self.schedule.lock() {
            Ok(s) => *s,
            Err(poisoned) => *poisoned.into_inner(),
        }
    }
}

/// A running prober. Dropping the last handle stops it.
pub struct Prober {
    shared: Arc<Shared>,
    task: Option<AbortHandle>,
}

impl Prober {
    /// Whether the probe's identity is refused (401/403) by the replica.
    pub fn misconfigured(&self) -> bool {
        self.shared.misconfigured.load(Ordering::Relaxed)
    }

    /// How long the last probe took, if one ran.
    pub fn last_duration(&self) -> Option<Duration> {
        match self.shared.last_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// How the replica is checked (`https`, `tcp`).
    pub fn kind(&self) -> &'static str {
        self.shared.kind
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
        let backend = &self.shared.backend;
        if backend.prober_stopped() {
            // Nothing checks the replica any more: an unready verdict no longer
            // stands, and its probe series go with it (pod addresses come and go).
            let slow_start = self.shared.schedule().slow_start;
            let metrics = &self.shared.metrics;
            observe(
                metrics,
                backend,
                backend.health.unprobed(now_nanos(), &slow_start),
                "checks_off",
            );
            for result in Outcome::LABELS {
                let _ = metrics
                    .probes
                    .remove_label_values(&[backend.label.as_str(), result]);
            }
        }
    }
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober")
            .field("backend", &self.shared.backend.addr)
            .field("kind", &self.shared.kind)
            .finish()
    }
}

/// Hands out one prober per (replica, probe identity) while any route runtime holds it.
pub struct ProbeRegistry {
    /// Where probers run; `None` outside a runtime (unit tests build routes without
    /// one, and nothing is probed there).
    runtime: Option<tokio::runtime::Handle>,
    /// Stops the probe thread, and every prober on it, when the registry goes.
    _thread: Option<tokio::sync::oneshot::Sender<()>>,
    probers: Mutex<WeakMap<(SocketAddr, u64), Prober>>,
    /// Probers made for a configuration being built, until it is active.
    pending: Mutex<Vec<Arc<Prober>>>,
    /// The probers of the active configuration.
    held: Mutex<Vec<Arc<Prober>>>,
    metrics: Arc<Metrics>,
}

/// A single-threaded runtime on its own thread, running until the sender is dropped.
fn probe_thread() -> std::io::Result<(tokio::runtime::Handle, tokio::sync::oneshot::Sender<()>)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("apigate-probes".into())
        .spawn(move || {
            // Returns when the registry drops the sender; dropping the runtime then
            // cancels every prober.
            let _ = runtime.block_on(stopped);
        })?;
    Ok((handle, stop))
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl ProbeRegistry {
    /// A registry whose probers run on a thread of their own. If that thread cannot
    /// start, they run on the current runtime instead (and it is logged).
    pub fn on_own_thread(metrics: Arc<Metrics>) -> Self {
        match probe_thread() {
            Ok((runtime, stop)) => ProbeRegistry {
                runtime: Some(runtime),
                _thread: Some(stop),
                ..ProbeRegistry::new(metrics)
            },
            Err(error) => {
                tracing::warn!(%error, "no thread of their own for health checks: they share the proxy's runtime");
                ProbeRegistry::new(metrics)
            }
        }
    }

    /// A registry whose probers run on the current tokio runtime, if any (tests run
    /// them under a paused clock there).
    pub fn new(metrics: Arc<Metrics>) -> Self {
        ProbeRegistry {
            runtime: tokio::runtime::Handle::try_current().ok(),
            _thread: None,
            probers: Mutex::new(WeakMap::default()),
            pending: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// Keep exactly `probers` running: those of the configuration now active. Any
    /// other prober (of replicas or identities no route uses any more) stops.
    pub fn hold(&self, probers: impl IntoIterator<Item = Arc<Prober>>) {
        let keep: Vec<Arc<Prober>> = probers.into_iter().collect();
        let old = std::mem::replace(&mut *locked(&self.held), keep);
        locked(&self.pending).clear();
        drop(old);
    }

    /// The probers of `route`'s replicas, aligned with `backends`; `None` for each when
    /// the route does not probe. A prober already running for the same replica and
    /// identity is shared, and takes this route's schedule. They run until the next
    /// [`ProbeRegistry::hold`] that leaves them out.
    pub fn for_route(
        &self,
        route: &Route,
        backends: &[Arc<BackendState>],
    ) -> Vec<Option<Weak<Prober>>> {
        let Some(health) = &route.health else {
            return vec![None; backends.len()];
        };
        let check = match &route.mode {
            Mode::Passthrough => Ok(Check::Tcp),
            Mode::Terminate(terminate) => Check::https(terminate, health),
        };
        let check = match check {
            Ok(check) => check,
            Err(error) => {
                tracing::error!(route = %route.id, %error, "health checks cannot run for this route");
                return vec![None; backends.len()];
            }
        };
        let identity = identity_of(route, health);
        let schedule = Schedule::of(health, &route.settings);
        let probers: Vec<Arc<Prober>> = backends
            .iter()
            .map(|backend| self.get(backend, identity, &check, schedule))
            .collect();
        let weak = probers.iter().map(|p| Some(Arc::downgrade(p))).collect();
        locked(&self.pending).extend(probers);
        weak
    }

    fn get(
        &self,
        backend: &Arc<BackendState>,
        identity: u64,
        check: &Check,
        schedule: Schedule,
    ) -> Arc<Prober> {
        let mut probers = locked(&self.probers);
        let key = (backend.addr, identity);
        if let Some(prober) = probers.get(&key) {
            if let Ok(mut current) = prober.shared.schedule.lock() {
                *current = schedule;
            }
            return prober;
        }
        let shared = Arc::new(Shared {
            backend: backend.clone(),
            kind: match check {
                Check::Tcp => "tcp",
                Check::Https(_) => "https",
            },
            schedule: Mutex::new(schedule),
            misconfigured: AtomicBool::new(false),
            last_micros: AtomicU64::new(0),
            metrics: self.metrics.clone(),
        });
        let task = self.runtime.as_ref().map(|runtime| {
            let live = Live {
                check: check.clone(),
                addr: backend.addr,
                connection: Connection::default(),
            };
            runtime.spawn(run(shared.clone(), live)).abort_handle()
        });
        backend.prober_started();
        let prober = Arc::new(Prober { shared, task });
        probers.insert(key, &prober);
        prober
    }

    /// Probers running now.
    pub fn running(&self) -> usize {
        locked(&self.probers).live().count()
    }
}

/// What makes two routes' probes of one replica the same probe: the upstream trust,
/// the replica's name, the path and the identity presented.
fn identity_of(route: &Route, health: &HealthCheck) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match &route.mode {
        Mode::Passthrough => 0u8.hash(&mut hasher),
        Mode::Terminate(terminate) => {
            1u8.hash(&mut hasher);
            terminate.upstream.fingerprint.hash(&mut hasher);
            terminate.upstream.server_name.hash(&mut hasher);
            health.path.hash(&mut hasher);
            health.credentials.hash(&mut hasher);
        }
    }
    hasher.finish()
}

/// The interval with ±10% jitter.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::thread_rng().gen_range(0.9..1.1))
}

/// One probe of a replica; the loop's only contact with the network, so that the loop
/// is tested with a paused clock and scripted answers.
pub trait Probe: Send {
    /// Probe once, within `timeout`.
    fn probe(&mut self, timeout: Duration) -> impl Future<Output = Outcome> + Send + '_;
}

/// The real probe: the prober's check over its kept-alive connection.
struct Live {
    check: Check,
    addr: SocketAddr,
    connection: Connection,
}

impl Probe for Live {
    fn probe(&mut self, timeout: Duration) -> impl Future<Output = Outcome> + Send + '_ {
        self.connection.probe(&self.check, self.addr, timeout)
    }
}

/// Probes requested by responses (suspected shutdowns) come at most this often, so a
/// storm of throttled requests cannot turn into a storm of probes.
const MIN_CONFIRM_GAP: Duration = Duration::from_secs(1);

/// The prober's loop: wait for the next probe (or a request to confirm a shutdown),
/// probe, record.
async fn run(shared: Arc<Shared>, mut probe: impl Probe) {
    let first = shared.schedule().interval;
    let mut next = Instant::now() + first.mul_f64(rand::thread_rng().gen::<f64>());
    let mut last: Option<Instant> = None;
    loop {
        let confirming = tokio::select! {
            () = tokio::time::sleep_until(next) => false,
            () = shared.backend.shutdown_suspected() => true,
        };
        if confirming {
            if let Some(last) = last {
                tokio::time::sleep_until(last + MIN_CONFIRM_GAP).await;
            }
        }
        let schedule = shared.schedule();
        let started = Instant::now();
        last = Some(started);
        next = started + jittered(schedule.interval);
        let outcome = probe.probe(schedule.timeout).await;
        record(&shared, outcome, started.elapsed(), &schedule);
    }
}

/// Feed one probe's verdict to the replica's health, metrics and logs.
fn record(shared: &Shared, outcome: Outcome, took: Duration, schedule: &Schedule) {
    let backend = &shared.backend;
    let metrics = &shared.metrics;
    metrics
        .probes
        .with_label_values(&[backend.label.as_str(), outcome.label()])
        .inc();
    metrics
        .probe_duration
        .with_label_values(&[outcome.label()])
        .observe(took.as_secs_f64());
    let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
    shared.last_micros.store(micros, Ordering::Relaxed);
    let refused = outcome == Outcome::Unauthorized;
    if shared.misconfigured.swap(refused, Ordering::Relaxed) != refused {
        if refused {
            tracing::warn!(
                backend = %backend.addr,
                "health probe refused (401/403): the probe's identity is not allowed to read readiness; set the route's health.tokenFile or health.frontProxyUser. The replica keeps serving."
            );
        } else {
            tracing::info!(backend = %backend.addr, "health probe accepted again");
        }
    }
    let Some(passed) = outcome.passed() else {
        // The replica answers, but not to this identity: the probe cannot judge it,
        // so it cannot keep it out either (as if nothing probed it).
        let transition = backend.health.unprobed(now_nanos(), &schedule.slow_start);
        observe(metrics, backend, transition, outcome.label());
        return;
    };
    let shutting_down = matches!(
        outcome,
        Outcome::NotReady {
            shutting_down: true
        }
    );
    // Only the replica's own `shutdown` check drains at once, also when a 429 made us
    // suspect a shutdown: a slow or failing readiness of an overloaded replica counts
    // towards unhealthyThreshold like any other failure.
    let transition =
        backend
            .health
            .record_probe(now_nanos(), passed, shutting_down, &schedule.rules());
    observe(metrics, backend, transition, outcome.label());
}

#[cfg(test)]
mod tests;
