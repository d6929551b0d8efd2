//! The Kubernetes source: routes, backends, Secrets and Gardener allowlists from the
//! API server, reconciled into snapshots.
//!
//! ```text
//!  watchers ──▶ World ──(debounce)──▶ Reconciler (pure) ──▶ publish(Snapshot)
//!  (routes, Services, EndpointSlices,          │
//!   Extensions, referenced Secrets)            └──▶ StatusWriter (Lease holder only)
//! ```
//!
//! The gateway itself (listeners, admin, defaults) stays in the configuration file: it
//! is process-level and changes with a rollout. Routes come from the cluster, one bad
//! route never holding back the others.

pub mod crd;
pub mod debounce;
pub mod lease;
pub mod reconcile;
pub mod rollout_record;
pub mod status;
pub mod translate;
pub mod watch;
pub mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::Client;
use tokio::sync::watch as channel;

use self::debounce::Debounce;
use self::lease::LeaseConfig;
use self::reconcile::{Reconciler, RouteReport};
use self::status::{StatusWriter, WriteCounts};
use self::watch::{SecretWatch, Shared, Tasks, Watched};
use self::world::{ObjectKey, RouteObject, SecretState};
use crate::error::ConfigError;
use crate::snapshot::Snapshot;
use crate::source::Inputs;

/// How the source behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only routes with these labels (a Kubernetes label selector); all when `None`.
    pub route_selector: Option<String>,
    /// A change after this long without a compile is compiled at once; the changes
    /// that follow it are compiled once no further change arrived for this long...
    pub debounce: Duration,
    /// ...but no change waits longer than this for changes to pause.
    pub max_delay: Duration,
    /// Leader election for status writes; `None` makes this replica write (one replica).
    pub lease: Option<LeaseConfig>,
    /// Told whether this replica leads, for others that act only on the leader (the
    /// rollout record's writer).
    pub leadership: Option<channel::Sender<bool>>,
    /// `reportingController` of Events.
    pub controller: String,
    /// `reportingInstance` of Events (the pod name).
    pub instance: String,
    /// While the Gardener Extension API is absent, how often to look for it again.
    pub rediscovery: Duration,
    /// What the data plane finds wrong with routes at run time (health probes refused),
    /// shown in each route's `HealthChecks` condition; `None`: nothing to report.
    pub data_plane: Option<channel::Receiver<DataPlaneNotes>>,
}

/// Problems the data plane found per route (the `HealthChecks` condition's message);
/// routes not listed have none.
pub type DataPlaneNotes = Arc<BTreeMap<ObjectKey, String>>;

/// One compiled configuration, ready to install.
#[derive(Debug)]
pub struct Update {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// What it was compiled from.
    pub inputs: Inputs,
    /// Per-route outcome.
    pub reports: Arc<BTreeMap<ObjectKey, RouteReport>>,
    /// From the oldest change this update includes until compile finished.
    pub latency: Option<Duration>,
    /// Time spent translating and compiling.
    pub compile_time: Duration,
    /// The first update after the initial full sync.
    pub first: bool,
    /// Referenced Secrets held.
    pub secrets: usize,
}

/// What the source reports besides snapshots.
#[derive(Debug)]
pub enum Report {
    /// A new configuration.
    Update(Box<Update>),
    /// The gateway part is invalid (cannot happen for a base that compiled alone).
    Rejected(Vec<ConfigError>),
    /// A status write pass finished.
    Status(WriteCounts),
    /// Watch errors so far, per resource label.
    WatchErrors(BTreeMap<&'static str, u64>),
}

/// How soon failed status writes are tried again.
const STATUS_RETRY: Duration = Duration::from_secs(5);

type Statuses = Option<
    Arc<(
        world::Table<RouteObject>,
        Arc<BTreeMap<ObjectKey, RouteReport>>,
    )>,
>;

/// Watch the cluster and call `report` with every new configuration, forever: API
/// discovery that does not answer definitively is retried (nothing is reported, so
/// apigate is not ready, until it does), like every watch. Dropping the future
/// (aborting its task) stops every watch it started.
///
/// `base` holds the objects from the configuration file (the `GatewayConfig`, and any
/// static routes); they take part in every compile.
pub async fn run(
    client: Client,
    base: Inputs,
    options: Options,
    report: impl Fn(Report) + Send + Sync + 'static,
) {
    let report = Arc::new(report);
    let shared = Arc::new(Shared::default());
    // Only a definitive answer decides; anything else is retried, and nothing is
    // reported (so apigate is not ready) until then.
    let errors = || report_errors(&*report, &shared);
    tracing::debug!("discovering the EndpointSlice and Extension APIs");
    let slices = watch::slice_resource(&client, &shared, &errors).await;
    let extensions = watch::serves_eventually(
        &client,
        &shared,
        Watched::Extensions,
        (watch::EXTENSIONS, "extensions"),
        &errors,
    )
    .await;
    let mut tasks = Tasks::default();
    let required = watch::spawn_watchers(
        &client,
        &shared,
        options.route_selector.as_deref(),
        slices,
        extensions,
        &mut tasks,
    );
    if !extensions {
        tasks.push(tokio::spawn(watch::rediscover_extensions(
            client.clone(),
            shared.clone(),
            options.rediscovery,
        )));
    }

    let (leader_tx, leader_rx) = channel::channel(options.lease.is_none());
    if let Some(lease) = options.lease.clone() {
        tasks.push(tokio::spawn(lease::run(client.clone(), lease, leader_tx)));
    }
    if let Some(outside) = options.leadership.clone() {
        tasks.push(tokio::spawn(forward(leader_rx.clone(), outside)));
    }
    let (status_tx, status_rx) = channel::channel::<Statuses>(None);
    tasks.push(tokio::spawn(write_statuses(
        StatusWriter::new(client.clone(), &options.controller, &options.instance),
        shared.clone(),
        status_rx,
        leader_rx,
        options.data_plane.clone(),
        report.clone(),
    )));

    let base = Arc::new(base);
    let mut reconciler = Reconciler::default();
    let mut secrets = SecretWatch::default();
    let mut first = true;
    // Until the first configuration, nothing serves that a burst could disturb, and
    // each list is applied whole: the first compile starts as soon as everything has
    // listed, and the Secret watch as soon as the routes have.
    let mut debounce = Debounce::new(options.debounce, options.max_delay);
    // The verdicts whose statuses were last handed to the writer.
    let mut reported: Option<Arc<BTreeMap<ObjectKey, RouteReport>>> = None;
    loop {
        let at_once = debounce.settle(&shared.changed).await;
        let wanted = shared.world().referenced_secrets();
        secrets.sync(&client, &shared, &wanted);
        if !shared.synced(&required) {
            continue;
        }
        let world = shared.world_for_reconcile();
        // Until the first full sync, a Secret still being listed would look missing.
        if first && world.secrets.values().any(|s| **s == SecretState::Pending) {
            continue;
        }
        let since = shared.take_pending_since();
        let compile_started = Instant::now();
        let base_ref = base.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let outcome = reconciler.reconcile(&base_ref, &world);
            (reconciler, outcome, world)
        })
        .await;
        let (back, outcome, world) = match joined {
            Ok(done) => done,
            Err(error) => {
                // A panic in compile is a bug; it must not take the source down with it.
                tracing::error!(%error, "reconcile failed; the current configuration keeps serving");
                reconciler = Reconciler::default();
                continue;
            }
        };
        reconciler = back;
        let compile_time = compile_started.elapsed();
        let reports = Arc::new(outcome.reports);
        let was_first = first;
        match outcome.snapshot {
            Ok(snapshot) => {
                report(Report::Update(Box::new(Update {
                    snapshot,
                    inputs: outcome.inputs,
                    reports: reports.clone(),
                    latency: since.map(|s| s.elapsed()),
                    compile_time,
                    first,
                    secrets: wanted.len(),
                })));
                first = false;
            }
            Err(errors) => report(Report::Rejected(errors)),
        }
        report_errors(&*report, &shared);
        // A compile made at once may have run before the rest of a multi-object apply
        // (a route before the Service it routes to) arrived. If it rejects a route
        // anew, its statuses and Events wait for the next compile, which waits for
        // changes to pause: a route that becomes valid meanwhile is never announced as
        // rejected. The snapshot itself was installed above either way.
        if at_once && !was_first && newly_rejected(reported.as_deref(), &reports) {
            shared.changed.notify_one();
        } else {
            reported = Some(reports.clone());
            status_tx.send_replace(Some(Arc::new((world.routes, reports))));
        }
        // Until the first configuration, nothing is debounced.
        if !first {
            debounce.compiled();
        }
    }
}

/// Whether `now` rejects a route that `before` did not (or did not know).
fn newly_rejected(
    before: Option<&BTreeMap<ObjectKey, RouteReport>>,
    now: &BTreeMap<ObjectKey, RouteReport>,
) -> bool {
    let rejected = |r: &RouteReport| matches!(r.verdict, reconcile::Verdict::Rejected { .. });
    now.iter().any(|(key, report)| {
        rejected(report) && !before.and_then(|b| b.get(key)).is_some_and(rejected)
    })
}

/// Copy `from` into `to` until either side closes.
async fn forward(mut from: channel::Receiver<bool>, to: channel::Sender<bool>) {
    loop {
        to.send_replace(*from.borrow_and_update());
        tokio::select! {
            changed = from.changed() => if changed.is_err() { return },
            () = to.closed() => return,
        }
    }
}

/// Report the watch and discovery errors so far.
fn report_errors(report: &dyn Fn(Report), shared: &Shared) {
    report(Report::WatchErrors(
        shared
            .errors()
            .into_iter()
            .map(|(r, n)| (r.label(), n))
            .collect(),
    ));
}

/// Write statuses whenever new reports arrive, the data plane's notes change, or this
/// replica becomes the leader.
async fn write_statuses(
    mut writer: StatusWriter,
    shared: Arc<Shared>,
    mut statuses: channel::Receiver<Statuses>,
    mut leader: channel::Receiver<bool>,
    mut data_plane: Option<channel::Receiver<DataPlaneNotes>>,
    report: Arc<impl Fn(Report) + Send + Sync + 'static>,
) {
    let mut retry = false;
    loop {
        let notes_changed = async {
            match data_plane.as_mut() {
                Some(notes) => notes.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = statuses.changed() => if changed.is_err() { return },
            open = notes_changed => if !open {
                // The data plane stopped reporting: nothing more to show.
                data_plane = None;
            },
            changed = leader.changed() => {
                if changed.is_err() { return }
                // Another replica may have written meanwhile.
                writer.forget();
            }
            // Failed writes are retried even when nothing else changes.
            () = tokio::time::sleep(STATUS_RETRY), if retry => {}
        }
        if !*leader.borrow_and_update() {
            retry = false;
            continue;
        }
        let Some(current) = statuses.borrow_and_update().clone() else {
            continue;
        };
        let (routes, reports) = &*current;
        // The routes as watched now (the table is shared, not copied).
        let live = shared.world().routes.clone();
        let notes = data_plane
            .as_mut()
            .map(|n| n.borrow_and_update().clone())
            .unwrap_or_default();
        let counts = writer.write(routes, &live, reports, &notes).await;
        retry = counts.failed > 0;
        report(Report::Status(counts));
    }
}

#[cfg(test)]
mod tests;
