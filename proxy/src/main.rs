//! The `apigate` binary: `run`, `validate`, `demo`, `crd`, `rollout`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: the proxy allocates and frees many small,
/// short-lived buffers per request across threads; with glibc malloc, allocation was a
/// fifth of apigate's CPU profile under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often `run` checks the configuration files for changes unless told otherwise.
const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// apigate: TLS-terminating, per-request load balancer for kube-apiservers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `apigate=debug`.
    #[arg(long, env = "APIGATE_LOG", default_value = "info", global = true)]
    log: String,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    /// Worker threads of the proxy (1 to 1024; default: one per core apigate may run
    /// on, as its CPU affinity allows).
    #[arg(long, env = "APIGATE_WORKERS", global = true, value_parser = apigate::runtime::workers)]
    workers: Option<std::num::NonZeroUsize>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a configuration file; reload it on SIGHUP or when it changes. With
    /// `--kubernetes`, the file gives the gateway (listeners, defaults) and routes come
    /// from the cluster.
    Run {
        /// Multi-document YAML with one GatewayConfig and ApiServerRoutes.
        #[arg(long, short)]
        config: PathBuf,
        /// How long shutdown waits for open connections.
        #[arg(long, default_value = "30s", value_parser = apigate::flags::wait)]
        grace: Duration,
        /// After SIGTERM, how long to keep accepting while `/readyz` already says
        /// not-ready (load balancers notice with a delay).
        #[arg(long, default_value = "0s", value_parser = apigate::flags::wait)]
        shutdown_delay: Duration,
        /// How often the configuration files are checked for changes (default 2s). Not
        /// with `--kubernetes`, where the gateway file is read once at start.
        #[arg(long, value_parser = apigate::flags::period)]
        watch_interval: Option<Duration>,
        #[command(flatten)]
        kubernetes: apigate::kubernetes::KubernetesArgs,
    },
    /// Print a CustomResourceDefinition (as in manifests/crd/).
    Crd {
        /// `routes` (ApiServerRoute) or `rollouts` (ApiGateRollout).
        #[arg(value_enum, default_value = "routes")]
        kind: CrdKind,
    },
    /// Check a configuration file; exit non-zero listing every problem.
    Validate {
        /// The configuration file.
        config: PathBuf,
    },
    /// Start fake API-server replicas and apigate in front of them, on loopback.
    Demo(apigate::demo::DemoArgs),
    /// Show or steer the configuration rollout of a running apigate: through its admin
    /// endpoint (file mode), or its `ApiGateRollout` object (`--record`, Kubernetes mode).
    Rollout {
        /// `status`, `resume` (a frozen rollout bakes again; a held one is promoted),
        /// `abort` (withdraw the pending revision) or `promote` (to every route now).
        #[arg(value_parser = ["status", "resume", "abort", "promote"])]
        action: String,
        /// The admin endpoint's address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: std::net::SocketAddr,
        /// File with the admin token (`spec.admin.tokenFile`); needed for actions from
        /// anywhere but loopback.
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Kubernetes mode: act through this `ApiGateRollout` (NAMESPACE/NAME, the
        /// gateway's name in apigate's namespace) instead of an admin endpoint.
        #[arg(long, conflicts_with_all = ["admin", "token_file"])]
        record: Option<String>,
        /// Kubeconfig for `--record` (in-cluster credentials without it).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
    },
}

/// The custom resources apigate defines.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CrdKind {
    /// `ApiServerRoute`: one API server behind apigate.
    Routes,
    /// `ApiGateRollout`: the record of a gateway's configuration rollout.
    Rollouts,
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    let runtime = match apigate::runtime::build(cli.workers) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("apigate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Validate { config } => return validate(&config),
        Command::Run {
            kubernetes,
            watch_interval: Some(_),
            ..
        } if kubernetes.kubernetes => {
            eprintln!(
                "apigate: --watch-interval does not apply with --kubernetes: the gateway file is read once at start (routes come from the cluster); restart apigate to change it (the kustomization rolls the Deployment when the file changes)"
            );
            return ExitCode::from(2);
        }
        Command::Run {
            config,
            grace,
            shutdown_delay,
            kubernetes,
            ..
        } if kubernetes.kubernetes => runtime.block_on(apigate::kubernetes::run(
            config,
            apigate::server::Stopping {
                delay: shutdown_delay,
                grace,
            },
            kubernetes,
        )),
        Command::Run {
            config,
            grace,
            shutdown_delay,
            watch_interval,
            ..
        } => runtime.block_on(apigate::server::run(
            config,
            apigate::server::Stopping {
                delay: shutdown_delay,
                grace,
            },
            watch_interval.unwrap_or(DEFAULT_WATCH_INTERVAL),
        )),
        Command::Crd { kind } => match match kind {
            CrdKind::Routes => apigate_control::source::kubernetes::crd::crd_yaml(),
            CrdKind::Rollouts => apigate_control::source::kubernetes::rollout_record::crd_yaml(),
        } {
            Ok(yaml) => {
                print!("{yaml}");
                return ExitCode::SUCCESS;
            }
            Err(e) => Err(anyhow::anyhow!("rendering the CRD: {e}")),
        },
        Command::Demo(args) => runtime.block_on(apigate::demo::run(args)),
        Command::Rollout {
            action,
            record: Some(record),
            kubeconfig,
            ..
        } => {
            use apigate_control::source::kubernetes::rollout_record::RolloutAction;
            let action = match action.as_str() {
                "resume" => Some(RolloutAction::Resume),
                "abort" => Some(RolloutAction::Abort),
                "promote" => Some(RolloutAction::Promote),
                _ => None,
            };
            runtime
                .block_on(apigate::kubernetes::rollout_command(
                    kubeconfig.as_ref(),
                    &record,
                    action,
                ))
                .map(|out| print!("{out}"))
        }
        Command::Rollout {
            action,
            admin,
            token_file,
            ..
        } => {
            let action = (action != "status").then_some(action.as_str());
            match runtime.block_on(apigate::admin::client::rollout(
                admin,
                action,
                token_file.as_deref(),
            )) {
                Ok(body) => {
                    print!("{body}");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            }
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("apigate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// "certificate expires in 5days 3h (2026-12-04T10:00:00Z)" or "certificate expired at …".
fn expiry_text(now: std::time::SystemTime, at: std::time::SystemTime) -> String {
    let date = humantime::format_rfc3339_seconds(at);
    match at.duration_since(now) {
        Ok(left) => format!(
            "certificate expires in {} ({date})",
            humantime::format_duration(std::time::Duration::from_secs(
                left.as_secs() / 3600 * 3600
            ))
        ),
        Err(_) => format!("certificate expired at {date}"),
    }
}

fn validate(config: &std::path::Path) -> ExitCode {
    let result = apigate_control::source::load_file(config)
        .and_then(|inputs| apigate_control::compile(&inputs));
    match result {
        Ok(snapshot) => {
            println!(
                "{}: valid ({} route(s), {} listener(s))",
                config.display(),
                snapshot.routes.len(),
                snapshot.gateway.listeners.len()
            );
            let now = std::time::SystemTime::now();
            for route in &snapshot.routes {
                let Some(terminate) = route.terminate() else {
                    continue;
                };
                for (_, field, at) in terminate.expiry.expiring(now) {
                    eprintln!(
                        "  warning: ApiServerRoute {}: {field}: {}",
                        route.id,
                        expiry_text(now, at)
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {} error(s)", config.display(), errors.len());
            for error in errors {
                eprintln!("  {error}");
            }
            ExitCode::from(2)
        }
    }
}
