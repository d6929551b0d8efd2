//! Wiring: bind listeners, start the HTTP engine, the admin endpoint and the reloader,
//! and shut down gracefully.
//!
//! Used by `apigate run`, `apigate demo` and the in-process integration tests alike, so
//! what the tests exercise is what production runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apigate_control::inputs::Inputs;
use apigate_control::snapshot::GatewaySettings;
use apigate_control::source::FileSource;
use apigate_control::Snapshot;
use pingora::apps::HttpServerOptions;
use pingora::server::configuration::ServerConf;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::{self, Readiness};
use crate::http::Apigate;
use crate::listener::{self, Connections, ListenerContext};
use crate::metrics::Metrics;
use crate::rollout::shared::RecordName;
use crate::rollout::Rollout;
use crate::state::State;

/// The HTTP engine with apigate's hooks.
type Engine = pingora::proxy::HttpProxy<Apigate>;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener address could not be bound.
    #[error("cannot bind {name} on {address}: {source}")]
    Bind {
        /// Listener name.
        name: String,
        /// Address.
        address: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// A running apigate.
pub struct Running {
    /// Shared state (config, backends, metrics).
    pub state: Arc<State>,
    /// Bound TLS listeners (name, address) — useful when port 0 was configured.
    pub listeners: Vec<(String, SocketAddr)>,
    /// Bound admin address.
    pub admin: Option<SocketAddr>,
    /// `/readyz` state.
    pub readiness: Arc<Readiness>,
    /// The rollout controller (file or Kubernetes source).
    pub rollout: Option<Arc<Rollout>>,
    connections: Arc<Connections>,
    engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
}

/// pingora's HTTP engine with apigate's hooks and the settings it fixes per process.
fn engine(state: &Arc<State>, gateway: &GatewaySettings) -> Arc<Engine> {
    let defaults = &gateway.defaults;
    // The forwarding core decides every retry; pingora's own loop must never stop it
    // earlier.
    let conf = Arc::new(ServerConf {
        max_retries: crate::upstream::MAX_ATTEMPTS,
        ..ServerConf::default()
    });
    let mut app = pingora::proxy::http_proxy(&conf, Apigate::new(state.clone()));
    let mut server_options = HttpServerOptions::default();
    server_options.h2_idle_timeout = Some(defaults.timeouts.idle);
    // CONNECT reaches apigate's hooks, which answer it with a kube Status (pingora's
    // own refusal has an empty body).
    server_options.allow_connect_method_proxying = true;
    app.server_options = Some(server_options);
    let mut h2 = pingora::protocols::http::v2::server::H2Options::new();
    let settings = &gateway.http2;
    h2.max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.initial_stream_window)
        .initial_connection_window_size(settings.initial_connection_window)
        .max_pending_accept_reset_streams(
            usize::try_from(settings.max_pending_reset_streams).unwrap_or(usize::MAX),
        );
    // The HTTP/2 layer refuses larger header lists itself (431 and a stream reset)
    // before decoding them fully; the hooks apply the route's current limit to what
    // passes. (pingora's default is 64 KiB; h2's own would be 16 MiB.)
    h2.max_header_list_size(u32::try_from(defaults.max_request_header_bytes).unwrap_or(u32::MAX));
    app.h2_options = Some(h2);
    Arc::new(app)
}

/// A configuration file to serve and reload: the source, what it held when loaded,
/// and how often to look for changes.
pub struct FileConfig {
    /// The file.
    pub source: FileSource,
    /// Its contents as loaded (the rollout controller's first stable revision).
    pub inputs: Inputs,
    /// How often the files are checked for changes.
    pub interval: Duration,
}

impl FileConfig {
    /// Load and compile `path`: the snapshot to start with, and the source to reload.
    pub fn load(
        path: &std::path::Path,
        interval: Duration,
    ) -> Result<(Snapshot, FileConfig), Vec<apigate_control::ConfigError>> {
        let source = FileSource::new(path);
        // Before anything else: a change from here on is seen by the reloader.
        let inputs = source.load()?;
        let snapshot = apigate_control::compile(&inputs)?;
        Ok((
            snapshot,
            FileConfig {
                source,
                inputs,
                interval,
            },
        ))
    }
}

/// Where a server's configuration comes from after it starts.
pub enum Source {
    /// Nowhere: the snapshot it starts with stays (tests, benchmarks).
    Fixed,
    /// A file, reloaded on SIGHUP and changes.
    File(FileConfig),
    /// The cluster ([`crate::kubernetes::serve`]): `base` holds the gateway file's
    /// objects; `record` is where the replicas share rollouts, if anywhere.
    Kubernetes {
        /// The gateway file's objects.
        base: Inputs,
        /// The `ApiGateRollout` object.
        record: Option<RecordName>,
    },
}

/// Start serving `snapshot`. With a file, reload on SIGHUP and file changes.
pub async fn start(snapshot: Snapshot, file: Option<FileConfig>) -> Result<Running, StartError> {
    start_with(snapshot, file.map_or(Source::Fixed, Source::File), true).await
}

/// [`start`], reporting ready on `/readyz` only when `ready` (a source that still has
/// to sync sets readiness itself once it has).
pub async fn start_with(
    snapshot: Snapshot,
    source: Source,
    ready: bool,
) -> Result<Running, StartError> {
    // Before anything awaits: a change from here on is seen by the reloader.
    let seen = match &source {
        Source::File(file) => Some(crate::reload::Seen::now(&file.source)),
        _ => None,
    };
    let gateway = snapshot.gateway.clone();
    let state = State::new(snapshot, Metrics::new());
    let rollout = match &source {
        Source::Fixed => None,
        Source::File(file) => Some(Rollout::new(state.clone(), file.inputs.clone())),
        Source::Kubernetes { base, record } => Some(Rollout::for_kubernetes(
            state.clone(),
            base.clone(),
            record.clone(),
        )),
    };
    let (shutdown, shutdown_rx) = watch::channel(false);

    let app = engine(&state, &gateway);

    let connections = Arc::new(Connections::default());
    let mut bound = Vec::new();
    for spec in &gateway.listeners {
        let tcp = TcpListener::bind(spec.address)
            .await
            .map_err(|source| StartError::Bind {
                name: spec.name.clone(),
                address: spec.address,
                source,
            })?;
        let address = tcp.local_addr().unwrap_or(spec.address);
        bound.push((spec.name.clone(), address));
        let ctx = ListenerContext {
            name: spec.name.as_str().into(),
            state: state.clone(),
            engine: app.clone(),
            shutdown: shutdown_rx.clone(),
            connections: connections.clone(),
        };
        tracing::info!(listener = %spec.name, %address, kind = ?spec.kind, proxy_protocol = ?spec.proxy_protocol, "listening");
        tokio::spawn(listener::serve(tcp, spec.clone(), ctx));
    }

    let readiness = Arc::new(Readiness::default());
    let admin = match gateway.admin {
        Some(address) => {
            let tcp = TcpListener::bind(address)
                .await
                .map_err(|source| StartError::Bind {
                    name: "admin".into(),
                    address,
                    source,
                })?;
            let address = tcp.local_addr().unwrap_or(address);
            tracing::info!(%address, "admin listening");
            tokio::spawn(admin::serve(
                tcp,
                admin::Admin {
                    state: state.clone(),
                    readiness: readiness.clone(),
                    rollout: rollout.clone(),
                },
                shutdown_rx.clone(),
            ));
            Some(address)
        }
        None => None,
    };

    if let Some(rollout) = &rollout {
        tokio::spawn(rollout.clone().run(shutdown_rx.clone()));
    }
    if let (Source::File(file), Some(seen), Some(rollout)) = (source, seen, rollout.clone()) {
        tokio::spawn(crate::reload::watch(
            file.source,
            seen,
            rollout,
            file.interval,
            shutdown_rx.clone(),
        ));
    }
    readiness.set(ready);
    Ok(Running {
        state,
        listeners: bound,
        admin,
        readiness,
        rollout,
        connections,
        engine: app,
        shutdown,
    })
}

impl Running {
    /// Stop at once, without waiting: not ready, stop accepting, close HTTP/1.1
    /// connections after their response and GOAWAY HTTP/2 ones. For callers that
    /// cannot wait (a test harness dropped after a failed assertion).
    pub fn stop_now(&self) {
        self.readiness.set(false);
        self.state.start_draining();
        let _ = self.shutdown.send(true);
    }

    /// The first TLS listener's address.
    pub fn address(&self) -> Option<SocketAddr> {
        self.listeners.first().map(|(_, a)| *a)
    }

    /// Graceful shutdown: report not-ready, stop accepting, close idle HTTP/1.1
    /// keep-alive connections and let busy ones close after their current response
    /// (`Connection: close`), send HTTP/2 connections GOAWAY, then wait up to `grace`
    /// for open connections to finish. Returns how many were still open.
    pub async fn shutdown(self, grace: Duration) -> usize {
        self.readiness.set(false);
        self.state.start_draining();
        let _ = self.shutdown.send(true);
        listener::stop_idle_reads(&self.engine).await;
        let left = self.connections.drain(grace).await;
        if left > 0 {
            tracing::warn!(
                open = left,
                "grace period over; closing remaining connections"
            );
        }
        left
    }
}

/// How `apigate run` stops.
#[derive(Debug, Clone, Copy)]
pub struct Stopping {
    /// After SIGTERM, report not-ready but keep accepting this long, so load balancers
    /// (whose health checks lag) stop sending before the listeners close.
    pub delay: Duration,
    /// Then wait this long for open connections to finish.
    pub grace: Duration,
}

impl Stopping {
    /// Not ready, wait `delay`, then stop accepting and drain for `grace`.
    pub async fn stop(self, running: Running) {
        running.readiness.set(false);
        if !self.delay.is_zero() {
            tracing::info!(delay = ?self.delay, "not ready; still accepting until the load balancer has noticed");
            tokio::time::sleep(self.delay).await;
        }
        tracing::info!("shutting down");
        running.shutdown(self.grace).await;
    }
}

/// The binary's error for a configuration that does not load or compile: the file,
/// then one line per problem.
pub fn invalid_configuration(
    config: &std::path::Path,
    errors: &[apigate_control::ConfigError],
) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
    anyhow::anyhow!(
        "invalid configuration {}:\n  {}",
        config.display(),
        lines.join("\n  ")
    )
}

/// `apigate run`: serve a configuration file until SIGTERM or SIGINT.
pub async fn run(
    config: PathBuf,
    stopping: Stopping,
    watch_interval: Duration,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let (snapshot, file) = FileConfig::load(&config, watch_interval)
        .map_err(|errors| invalid_configuration(&config, &errors))?;
    let running = start(snapshot, Some(file))
        .await
        .context("starting apigate")?;
    wait_for_termination().await;
    stopping.stop(running).await;
    Ok(())
}

/// Resolve on SIGTERM or SIGINT.
pub async fn wait_for_termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
