//! `apigate run --kubernetes`: routes from the cluster, the gateway from the file.
//!
//! The listeners start at once with the file's configuration (its static routes, if
//! any) but `/readyz` stays not-ready until the Kubernetes source has listed every
//! resource and installed its first snapshot, so a new replica takes traffic only
//! with its full configuration. After that, every update goes through the same
//! installer as a file reload ([`crate::install`]), through the rollout controller:
//! atomically, without closing anything, with the same metrics and log lines.
//!
//! With rollouts on and a Lease namespace, the replicas decide rollouts together
//! through one `ApiGateRollout` object ([`share`]).

pub mod share;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use apigate_control::source::kubernetes::lease::LeaseConfig;
use apigate_control::source::kubernetes::reconcile::Verdict;
use apigate_control::source::kubernetes::rollout_record::{RecordStore, RolloutAction};
use apigate_control::source::kubernetes::world::ObjectKey;
use apigate_control::source::kubernetes::{
    self as source, DataPlaneNotes, Options, Report, Update,
};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::admin::Readiness;
use crate::install::{self, Origin};
use crate::rollout::shared::RecordName;
use crate::rollout::Rollout;
use crate::server::Running;
use crate::state::State;

/// Settings of the Kubernetes source, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct KubernetesArgs {
    /// Read routes, Services, EndpointSlices, Secrets and Gardener acl Extensions from
    /// the Kubernetes API (in-cluster credentials unless `--kubeconfig` is given).
    #[arg(long)]
    pub kubernetes: bool,
    /// Kubeconfig to use instead of the in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Serve only ApiServerRoutes matching this label selector.
    #[arg(long)]
    pub route_selector: Option<String>,
    /// A change that comes this long after the last compile is compiled at once; the
    /// changes that follow a compile sooner wait until they have been quiet this long.
    #[arg(long, default_value = "100ms", value_parser = crate::flags::wait)]
    pub debounce: Duration,
    /// ...but no change waits longer than this for changes to pause.
    #[arg(long, default_value = "1s", value_parser = crate::flags::wait)]
    pub max_delay: Duration,
    /// Namespace of the Lease that elects the replica writing status; without it
    /// this replica always writes (a single replica).
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of that Lease.
    #[arg(long, default_value = "apigate-status")]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME", default_value = "apigate")]
    pub identity: String,
}

/// A client from `--kubeconfig` or the in-cluster service account.
pub async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Client> {
    // kube's rustls uses the process-wide provider; apigate uses ring everywhere.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::incluster().context("in-cluster Kubernetes configuration")?,
    };
    kube::Client::try_from(config).context("building the Kubernetes client")
}

/// How often the data plane's notes on routes (refused health probes) are gathered
/// for their status.
const NOTES_INTERVAL: Duration = Duration::from_secs(2);

/// The data plane's problems with routes, for their status (`HealthChecks`): routes
/// whose health probes some replica refuses (401/403). Gathered from `state` every
/// `NOTES_INTERVAL` (2 s) until the receiver is dropped.
pub fn data_plane_notes(state: Arc<State>) -> tokio::sync::watch::Receiver<DataPlaneNotes> {
    let (tx, rx) = tokio::sync::watch::channel(DataPlaneNotes::default());
    tokio::spawn(async move {
        loop {
            let notes = probe_notes(&state);
            tx.send_if_modified(|current| {
                let changed = **current != notes;
                if changed {
                    *current = Arc::new(notes);
                }
                changed
            });
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(NOTES_INTERVAL) => {}
            }
        }
    });
    rx
}

/// Routes whose probes are refused, with what to do about it.
fn probe_notes(state: &State) -> BTreeMap<ObjectKey, String> {
    let active = state.load();
    let mut notes = BTreeMap::new();
    for runtime in &active.routes {
        let Some(health) = &runtime.route.health else {
            continue;
        };
        let probers: Vec<_> = runtime.probers().collect();
        let refused = probers.iter().filter(|p| p.misconfigured()).count();
        if refused == 0 {
            continue;
        }
        let id = &runtime.route.id;
        notes.insert(
            ObjectKey::new(id.namespace.clone(), id.name.clone()),
            format!(
                "health probes of {refused} of {} replicas are refused (401/403): the API server does not let the probe's identity ({}) read {}; set spec.health.token or spec.health.frontProxyUser. The replicas keep serving",
                probers.len(),
                health.credentials.kind(),
                health.path
            ),
        );
    }
    notes
}

/// While the Gardener Extension API is absent, how often apigate looks for it again:
/// acl Extensions created after the API appears are enforced within this.
pub const EXTENSION_REDISCOVERY: Duration = Duration::from_secs(10);

/// The source's options from the arguments; `state` is where the data plane's notes
/// on routes come from.
pub fn options(args: &KubernetesArgs, state: Arc<State>) -> Options {
    Options {
        route_selector: args.route_selector.clone(),
        debounce: args.debounce,
        max_delay: args.max_delay,
        lease: args.lease_namespace.clone().map(|namespace| LeaseConfig {
            namespace,
            name: args.lease_name.clone(),
            identity: args.identity.clone(),
            duration: Duration::from_secs(15),
        }),
        leadership: None,
        controller: CONTROLLER.into(),
        instance: args.identity.clone(),
        rediscovery: EXTENSION_REDISCOVERY,
        data_plane: Some(data_plane_notes(state)),
    }
}

/// Install what the source reports: snapshots through the rollout controller, counts
/// into metrics, readiness once the first full snapshot is active (unless `readiness`
/// is `None`: the rollout record's reader sets it).
pub fn installer(
    rollout: Arc<Rollout>,
    readiness: Option<Arc<Readiness>>,
) -> impl Fn(Report) + Send + Sync {
    move |report| {
        let state = rollout.state();
        match report {
            // Building the proxy's view of thousands of routes (TLS configs) takes a
            // while; tell the runtime so other tasks move to another worker meanwhile.
            Report::Update(update) => match tokio::runtime::Handle::try_current() {
                Ok(handle)
                    if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
                {
                    tokio::task::block_in_place(|| install(&rollout, readiness.as_deref(), *update))
                }
                _ => install(&rollout, readiness.as_deref(), *update),
            },
            other => report_other(state, other),
        }
    }
}

/// Counts and rejections.
fn report_other(state: &State, report: Report) {
    match report {
        Report::Update(_) => {}
        Report::Rejected(errors) => install::reject(state, &errors, Origin::Kubernetes),
        Report::Status(counts) => {
            let writes = &state.metrics.kube_status_writes;
            writes
                .with_label_values(&["written"])
                .inc_by(counts.written as u64);
            writes
                .with_label_values(&["failed"])
                .inc_by(counts.failed as u64);
            writes
                .with_label_values(&["event"])
                .inc_by(counts.events as u64);
        }
        Report::WatchErrors(errors) => {
            for (resource, total) in errors {
                let counter = state
                    .metrics
                    .kube_watch_errors
                    .with_label_values(&[resource]);
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
    }
}

fn install(rollout: &Rollout, readiness: Option<&Readiness>, update: Update) {
    let state = rollout.state();
    let (mut accepted, mut rejected, mut pending) = (0i64, 0i64, 0i64);
    state.metrics.kube_rejected.reset();
    for (key, report) in update.reports.iter() {
        match &report.verdict {
            Verdict::Accepted => accepted += 1,
            Verdict::Pending(_) => pending += 1,
            Verdict::Rejected { reason, errors } => {
                rejected += 1;
                state
                    .metrics
                    .kube_rejected
                    .with_label_values(&[reason])
                    .inc();
                // A gauge, not apigate_config_errors_total: a route stays rejected
                // across many installs and must not count again on each.
                tracing::debug!(route = %key, reason, errors = errors.len(), serving = ?report.serving, "route rejected");
            }
        }
    }
    let routes = &state.metrics.kube_routes;
    routes.with_label_values(&["accepted"]).set(accepted);
    routes.with_label_values(&["rejected"]).set(rejected);
    routes.with_label_values(&["pending"]).set(pending);
    state.metrics.kube_secrets.set(update.secrets as i64);
    let apply = &state.metrics.kube_apply_seconds;
    apply
        .with_label_values(&["compile"])
        .observe(update.compile_time.as_secs_f64());
    tracing::info!(
        accepted,
        rejected,
        pending,
        compile_ms = update.compile_time.as_millis() as u64,
        first = update.first,
        "kubernetes routes reconciled"
    );
    rollout.submit_compiled(update.inputs, update.snapshot, Origin::Kubernetes);
    if let Some(latency) = update.latency {
        apply
            .with_label_values(&["apply"])
            .observe(latency.as_secs_f64());
    }
    if let (true, Some(readiness)) = (update.first, readiness) {
        readiness.set(true);
        tracing::info!("initial sync complete; ready");
    }
}

/// Where the replicas share rollouts: with a Lease namespace, the `ApiGateRollout`
/// named after the gateway (its `GatewayConfig`) in that namespace. Without one there
/// is a single replica, which decides alone.
pub fn record_name(
    args: &KubernetesArgs,
    base: &apigate_control::inputs::Inputs,
) -> Option<RecordName> {
    let namespace = args.lease_namespace.clone()?;
    let name = base.objects.iter().find_map(|o| match o {
        apigate_control::model::Object::Gateway(g) => Some(g.metadata.name.clone()),
        apigate_control::model::Object::Route(_) => None,
    })?;
    Some(RecordName { namespace, name })
}

/// How often the rollout record is read.
pub const RECORD_PERIOD: Duration = Duration::from_secs(1);

/// The rollout record's reader and writer for `record`, as `identity`.
pub fn sharing(client: &kube::Client, record: RecordName, identity: &str) -> share::Sharing {
    share::Sharing {
        store: RecordStore::new(
            client.clone(),
            &record.namespace,
            &record.name,
            CONTROLLER,
            identity,
        ),
        name: record,
        identity: identity.into(),
        period: RECORD_PERIOD,
    }
}

/// The controller and readiness of a server started with
/// [`crate::server::Source::Kubernetes`].
pub fn parts(running: &Running) -> anyhow::Result<(Arc<Rollout>, Arc<Readiness>)> {
    let rollout = running
        .rollout
        .clone()
        .context("apigate was not started for the Kubernetes source")?;
    Ok((rollout, running.readiness.clone()))
}

/// Feed a server from the cluster until dropped: the source, and with `sharing` (and
/// rollouts on) the rollout record's reader and writer.
pub async fn serve(
    client: kube::Client,
    base: apigate_control::inputs::Inputs,
    mut options: Options,
    (rollout, readiness): (Arc<Rollout>, Arc<Readiness>),
    sharing: Option<share::Sharing>,
) {
    let sharing = sharing.filter(|_| rollout.enabled());
    let Some(sharing) = sharing else {
        let report = installer(rollout, Some(readiness));
        source::run(client, base, options, report).await;
        return;
    };
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
    options.leadership = Some(leader_tx);
    let report = installer(rollout.clone(), None);
    tokio::join!(
        source::run(client, base, options, report),
        share::share(rollout, sharing, leader_rx, readiness),
    );
}

/// How long `apigate rollout <action> --record` waits for the leader's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(15);

/// `apigate rollout status|resume|abort|promote --record NAMESPACE/NAME`: through the
/// `ApiGateRollout` object instead of an admin endpoint (Kubernetes mode, where the
/// object decides and its RBAC says who may act). Status prints the record; an action
/// is set in `spec.action` and the leader's answer awaited.
pub async fn rollout_command(
    kubeconfig: Option<&PathBuf>,
    record: &str,
    action: Option<RolloutAction>,
) -> anyhow::Result<String> {
    let (namespace, name) = record
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .with_context(|| format!("--record {record:?}: expected NAMESPACE/NAME"))?;
    let client = client(kubeconfig).await?;
    let store = RecordStore::new(client, namespace, name, CONTROLLER, "apigate-cli");
    let read = || async {
        store
            .get()
            .await
            .with_context(|| format!("reading ApiGateRollout {record}"))?
            .with_context(|| {
                format!("no ApiGateRollout {record}: no leader has recorded a rollout yet")
            })
    };
    let object = read().await?;
    let Some(action) = action else {
        return Ok(serde_json::to_string_pretty(&object.status)? + "\n");
    };
    let before = object.status.and_then(|s| s.last_action);
    store
        .request(action)
        .await
        .with_context(|| format!("setting spec.action of ApiGateRollout {record}"))?;
    let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let answer = read().await?.status.and_then(|s| s.last_action);
        if let Some(answer) = answer.filter(|a| Some(a) != before.as_ref()) {
            anyhow::ensure!(
                answer.result == "Done",
                "{:?} not taken: {}",
                answer.action,
                answer.result
            );
            return Ok(format!("{:?}: done\n", answer.action));
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no answer from the leader within {ANSWER_WAIT:?}; spec.action stays set until one takes it"
        );
    }
}

/// `reportingController` of apigate's Events.
pub const CONTROLLER: &str = "apigate.dev/apigate";

/// `apigate run --kubernetes`: serve until SIGTERM or SIGINT.
pub async fn run(
    config: PathBuf,
    stopping: crate::server::Stopping,
    args: KubernetesArgs,
) -> anyhow::Result<()> {
    let invalid = |errors: Vec<_>| crate::server::invalid_configuration(&config, &errors);
    let base = apigate_control::source::load_file(&config).map_err(invalid)?;
    let snapshot = apigate_control::compile(&base).map_err(invalid)?;
    let client = client(args.kubeconfig.as_ref()).await?;
    let record = record_name(&args, &base);
    let running = crate::server::start_with(
        snapshot,
        crate::server::Source::Kubernetes {
            base: base.clone(),
            record: record.clone(),
        },
        false,
    )
    .await
    .context("starting apigate")?;
    let options = options(&args, running.state.clone());
    let sharing = record.map(|r| sharing(&client, r, &args.identity));
    let source_task = tokio::spawn(serve(client, base, options, parts(&running)?, sharing));
    tokio::select! {
        () = crate::server::wait_for_termination() => {}
        result = source_task => {
            // The source runs until aborted; it can only end by panicking.
            running.shutdown(Duration::ZERO).await;
            return Err(anyhow::anyhow!("Kubernetes source failed: {result:?}"));
        }
    }
    stopping.stop(running).await;
    Ok(())
}
