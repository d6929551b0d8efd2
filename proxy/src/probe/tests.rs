//! The prober's loop against scripted answers, on tokio's paused clock.

use std::sync::atomic::{AtomicU64, AtomicUsize};

use super::*;
use crate::balance::BackendRegistry;

const RAMP: SlowStart = SlowStart {
    window: Duration::from_secs(30),
    min_weight_percent: 10,
};

const SCHEDULE: Schedule = Schedule {
    interval: Duration::from_secs(2),
    timeout: Duration::from_secs(1),
    healthy_threshold: 2,
    unhealthy_threshold: 3,
    slow_start: RAMP,
    ejection: apigate_control::snapshot::Ejection {
        consecutive_failures: 5,
        base: Duration::from_secs(5),
        max: Duration::from_secs(120),
        max_ejected_percent: 10,
    },
};

/// Answers whatever the test sets, and counts probes.
#[derive(Clone)]
struct Script {
    answer: Arc<Mutex<Outcome>>,
    probes: Arc<AtomicUsize>,
}

impl Script {
    fn new() -> Script {
        Script {
            answer: Arc::new(Mutex::new(Outcome::Ready)),
            probes: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn set(&self, outcome: Outcome) {
        *self.answer.lock().unwrap() = outcome;
    }

    fn count(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }
}

impl Probe for Script {
    fn probe(&mut self, _timeout: Duration) -> impl Future<Output = Outcome> + Send + '_ {
        self.probes.fetch_add(1, Ordering::SeqCst);
        let answer = *self.answer.lock().unwrap();
        async move { answer }
    }
}

struct Running {
    shared: Arc<Shared>,
    script: Script,
    metrics: Arc<Metrics>,
    _registry: BackendRegistry,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn state(&self) -> &'static str {
        self.shared.backend.health.state(now_nanos(), &RAMP).label()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start() -> Running {
    let registry = BackendRegistry::default();
    let (backend, _) = registry.get("127.0.0.1:6443".parse().unwrap());
    backend.health.settle(now_nanos(), &RAMP);
    let metrics = Arc::new(Metrics::new());
    let shared = Arc::new(Shared {
        backend,
        kind: "https",
        schedule: Mutex::new(SCHEDULE),
        misconfigured: AtomicBool::new(false),
        last_micros: AtomicU64::new(0),
        metrics: metrics.clone(),
    });
    let script = Script::new();
    let task = tokio::spawn(run(shared.clone(), script.clone()));
    Running {
        shared,
        script,
        metrics,
        _registry: registry,
        task,
    }
}

async fn advance(by: Duration) {
    tokio::time::sleep(by).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_readyz_takes_a_replica_out_within_interval_times_threshold() {
    let p = start();
    advance(Duration::from_secs(10)).await;
    assert_eq!(p.state(), "healthy");
    assert!(p.script.count() >= 4, "probed every interval");
    p.script.set(Outcome::NotReady {
        shutting_down: false,
    });
    let failed_at = tokio::time::Instant::now();
    // Two failures are not enough (threshold 3): the fastest two intervals with jitter
    // are 2 × 1.8 s.
    advance(Duration::from_millis(3500)).await;
    assert_eq!(p.state(), "healthy");
    // The third failure comes within 3 intervals of +10% jitter.
    while p.state() != "unready" {
        advance(Duration::from_millis(10)).await;
        assert!(
            failed_at.elapsed() <= Duration::from_millis(6600),
            "too slow"
        );
    }
    assert_eq!(
        p.shared.backend.health.admission(now_nanos(), &RAMP),
        crate::balance::health::Admission::Out
    );
    // Ready again: two passes bring it back, ramping up.
    p.script.set(Outcome::Ready);
    while p.state() == "unready" {
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(p.state(), "slow_start");
    assert!(p.shared.backend.health.probes().passed >= 2);
    advance(Duration::from_secs(31)).await;
    assert_eq!(p.state(), "healthy");
    let text = p.metrics.render();
    assert!(
        text.contains("apigate_backend_transitions_total{to=\"unready\"} 1"),
        "{text}"
    );
    assert!(text.contains("result=\"not_ready\""));
}

#[tokio::test(start_paused = true)]
async fn a_replica_announcing_its_shutdown_drains_after_one_probe() {
    let p = start();
    advance(Duration::from_secs(5)).await;
    p.script.set(Outcome::NotReady {
        shutting_down: true,
    });
    let before = p.script.count();
    while p.state() != "draining" {
        advance(Duration::from_millis(10)).await;
    }
    assert_eq!(p.script.count(), before + 1, "one probe was enough");
}

#[tokio::test(start_paused = true)]
async fn a_refused_probe_is_misconfiguration_and_never_unreadiness() {
    let p = start();
    p.script.set(Outcome::Unauthorized);
    advance(Duration::from_secs(30)).await;
    assert_eq!(p.state(), "healthy");
    assert!(p.shared.misconfigured.load(Ordering::Relaxed));
    assert!(p.metrics.render().contains("result=\"unauthorized\""));
    p.script.set(Outcome::Ready);
    advance(Duration::from_secs(3)).await;
    assert!(!p.shared.misconfigured.load(Ordering::Relaxed));
    // Nor does it keep a replica out that probes found unready before (a restarted
    // kube-apiserver answering with anonymous auth off): it comes back, ramping up.
    p.script.set(Outcome::NotReady {
        shutting_down: false,
    });
    advance(Duration::from_secs(10)).await;
    assert_eq!(p.state(), "unready");
    p.script.set(Outcome::Unauthorized);
    advance(Duration::from_secs(3)).await;
    assert_eq!(p.state(), "slow_start");
}

#[tokio::test]
async fn when_the_last_prober_of_a_replica_stops_its_unready_verdict_goes() {
    let registry = ProbeRegistry::new(Arc::new(Metrics::new()));
    let backends = BackendRegistry::default();
    let (backend, _) = backends.get("127.0.0.1:1".parse().unwrap());
    let rules = SCHEDULE.rules();
    for _ in 0..3 {
        backend
            .health
            .record_probe(now_nanos(), false, false, &rules);
    }
    let state = || backend.health.state(now_nanos(), &RAMP).label();
    assert_eq!(state(), "unready");
    let a = registry.get(&backend, 7, &Check::Tcp, SCHEDULE);
    let b = registry.get(&backend, 8, &Check::Tcp, SCHEDULE);
    assert!(backend.probed());
    drop(a);
    assert_eq!(state(), "unready", "another identity still probes it");
    drop(b);
    assert!(!backend.probed());
    assert_eq!(state(), "slow_start");
}

#[tokio::test(start_paused = true)]
async fn a_suspected_shutdown_probes_at_once_and_drains_only_on_the_shutdown_check() {
    let p = start();
    advance(Duration::from_secs(5)).await;
    // Throttling: the replica is ready, so nothing changes.
    let before = p.script.count();
    p.shared.backend.suspect_shutdown();
    // At once, or a second after the last probe if that was more recent.
    advance(Duration::from_millis(1001)).await;
    assert_eq!(p.script.count(), before + 1, "probed within a second");
    assert_eq!(p.state(), "healthy");
    // A storm of suspicions: at most one probe per second.
    let before = p.script.count();
    for _ in 0..100 {
        p.shared.backend.suspect_shutdown();
        advance(Duration::from_millis(10)).await;
    }
    assert!(
        p.script.count() - before <= 2,
        "{}",
        p.script.count() - before
    );
    // An overloaded replica whose readiness times out once is not taken for one
    // going away: only its `shutdown` check says that.
    let p = start();
    advance(Duration::from_secs(5)).await;
    p.script.set(Outcome::Timeout);
    let before = p.script.count();
    p.shared.backend.suspect_shutdown();
    while p.script.count() == before {
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(p.state(), "healthy");
    // A shutting-down replica fails its readiness with that check: it drains.
    p.script.set(Outcome::NotReady {
        shutting_down: true,
    });
    advance(Duration::from_millis(1100)).await;
    let before = p.script.count();
    p.shared.backend.suspect_shutdown();
    while p.script.count() == before {
        advance(Duration::from_millis(1)).await;
    }
    assert_eq!(p.state(), "draining");
}

#[tokio::test]
async fn the_registry_runs_exactly_the_probers_the_active_configuration_holds() {
    let registry = ProbeRegistry::new(Arc::new(Metrics::new()));
    let backends = BackendRegistry::default();
    let (one, _) = backends.get("127.0.0.1:1".parse().unwrap());
    let (two, _) = backends.get("127.0.0.1:2".parse().unwrap());
    let a = registry.get(&one, 7, &Check::Tcp, SCHEDULE);
    let b = registry.get(&two, 7, &Check::Tcp, SCHEDULE);
    let weak_b = Arc::downgrade(&b);
    registry.hold([a.clone(), b]);
    assert_eq!(registry.running(), 2);
    // The next configuration needs only the first: the second stops although a
    // request of the old configuration may still refer to it.
    registry.hold([a]);
    assert_eq!(registry.running(), 1);
    assert!(weak_b.upgrade().is_none());
    registry.hold([]);
    assert_eq!(registry.running(), 0);
}

#[tokio::test]
async fn probers_are_shared_per_replica_and_identity_and_stop_with_their_last_route() {
    let metrics = Arc::new(Metrics::new());
    let registry = ProbeRegistry::new(metrics);
    let backends = BackendRegistry::default();
    let (backend, _) = backends.get("127.0.0.1:1".parse().unwrap());
    let a = registry.get(&backend, 7, &Check::Tcp, SCHEDULE);
    let b = registry.get(&backend, 7, &Check::Tcp, SCHEDULE);
    assert!(Arc::ptr_eq(&a, &b));
    let other = registry.get(&backend, 8, &Check::Tcp, SCHEDULE);
    assert!(!Arc::ptr_eq(&a, &other));
    assert_eq!(registry.running(), 2);
    let task = a.task.clone().unwrap();
    drop((a, b));
    assert_eq!(registry.running(), 1);
    tokio::task::yield_now().await;
    assert!(task.is_finished(), "the prober's task was stopped");
    drop(other);
    assert_eq!(registry.running(), 0);
}

#[test]
fn probers_on_their_own_thread_need_no_runtime_of_the_caller_and_stop_with_the_registry() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let registry = ProbeRegistry::on_own_thread(Arc::new(Metrics::new()));
    let backends = BackendRegistry::default();
    let (backend, _) = backends.get(listener.local_addr().unwrap());
    let prober = registry.get(&backend, 7, &Check::Tcp, SCHEDULE);
    let task = prober.task.clone().expect("the probe thread runs it");
    // No runtime here: the probe thread connects within its first interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while listener.accept().is_err() {
        assert!(std::time::Instant::now() < deadline, "never probed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!task.is_finished());
    drop(registry);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !task.is_finished() {
        assert!(
            std::time::Instant::now() < deadline,
            "the prober outlived its registry's thread"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(prober);
}
