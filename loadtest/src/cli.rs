//! The command line: subcommands and flags (clap), and their conversion into the typed
//! [`Scenario`] and [`RunPlan`]s. Flags are parsed here once; nothing else reads them.
//!
//! Value syntax is checked by clap's value parsers (so bad input is a usage error with
//! exit code 2); combinations are checked by [`Scenario::validate`] and reported the same
//! way by `main`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::actions::Action;
use crate::client::tls::TlsOptions;
use crate::client::Target;
use crate::distribution::ReplicaSet;
use crate::runner::RunPlan;
use crate::scenario::{Mix, Mode, Protocol, Scenario, ScenarioError};
use crate::scrape::{LabelMatch, ScrapeTarget};
use crate::units::{parse_duration, parse_fraction};
use crate::verdict::Thresholds;

/// apigate-loadtest: drive Kubernetes-like load through a front end and show how requests
/// spread over the API-server replicas behind it.
#[derive(Debug, Parser)]
#[command(name = "apigate-loadtest", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 run met the thresholds, 1 could not run, 2 usage error, 3 thresholds missed."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Log filter for stderr logs (tracing env-filter syntax, e.g. `info` or `apigate_loadtest=debug`).
    #[arg(
        long,
        global = true,
        default_value = "warn",
        env = "APIGATE_LOADTEST_LOG"
    )]
    pub log: String,
    /// Run everything on one thread (a current-thread runtime), e.g. to measure the
    /// generator's own ceiling on one core with `taskset -c 0`.
    #[arg(long, global = true)]
    pub current_thread: bool,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Drive load against one target URL and report latency, errors and the per-replica spread.
    Run(RunArgs),
    /// Run the same scenario against several targets, one after the other, and print one table.
    Compare(CompareArgs),
    /// Start N fake API-server replicas (TLS, HTTP/2 + HTTP/1.1) as a controllable target.
    Backend(BackendArgs),
    /// Start the built-in L4 baseline: TCP round robin per connection (TLS passes through).
    #[command(name = "l4-baseline")]
    L4Baseline(L4Args),
}

/// TLS and authentication towards the target.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) that signed the target's serving certificate; required for https.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mTLS.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// TLS server name (SNI and certificate check) instead of the URL host.
    #[arg(long, value_name = "NAME")]
    pub sni: Option<String>,
    /// Bearer token sent with every request.
    #[arg(long, env = "APIGATE_LOADTEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl TlsArgs {
    /// The TLS options of the client.
    pub fn options(&self) -> TlsOptions {
        TlsOptions {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            sni: self.sni.clone(),
        }
    }
}

/// Pacing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Constant arrival rate (--rate), latency from the intended send time.
    Open,
    /// Each client keeps --concurrency requests outstanding.
    Closed,
}

/// HTTP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HttpArg {
    /// One HTTP/2 connection per client (like client-go).
    H2,
    /// A pool of HTTP/1.1 keep-alive connections per client (--h1-pool).
    H1,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn fraction_arg(s: &str) -> Result<f64, String> {
    parse_fraction(s).map_err(|e| e.to_string())
}

fn mix_arg(s: &str) -> Result<Mix, String> {
    Mix::from_str(s).map_err(|e| e.to_string())
}

/// The load: clients, pacing, mix, bounds. Shared by `run` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Number of clients (each like one client-go process).
    #[arg(long, short = 'c', default_value_t = 10)]
    pub clients: usize,
    /// HTTP version.
    #[arg(long = "http", value_enum, default_value_t = HttpArg::H2)]
    pub http: HttpArg,
    /// HTTP/1.1 connections per client.
    #[arg(long, default_value_t = 4)]
    pub h1_pool: usize,
    /// Pacing: open loop (constant rate) or closed loop.
    #[arg(long, value_enum, default_value_t = ModeArg::Open)]
    pub mode: ModeArg,
    /// Open loop: total requests per second over all clients [default: 1000].
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Closed loop: outstanding requests per client [default: 1].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Warm-up: requests are sent but not recorded.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub warmup: Duration,
    /// Measured duration.
    #[arg(long, short = 'd', default_value = "10s", value_parser = duration_arg)]
    pub duration: Duration,
    /// Stop after this many measured requests (the duration still bounds the run).
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Per-request deadline.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    pub timeout: Duration,
    /// TCP connect + TLS handshake deadline.
    #[arg(long, default_value = "3s", value_parser = duration_arg)]
    pub connect_timeout: Duration,
    /// After the end, in-flight requests get this long before they count as `unfinished`.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub grace: Duration,
    /// Request mix as op=weight: get, list, create (post), patch.
    #[arg(long, default_value = "get=70,list=10,create=10,patch=10", value_parser = mix_arg)]
    pub mix: Mix,
    /// `limit` of LIST requests.
    #[arg(long, default_value_t = 100)]
    pub list_size: u32,
    /// Namespace of all requests.
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// GET/PATCH address pods named pod-0 .. pod-(N-1).
    #[arg(long, default_value_t = 100)]
    pub objects: u32,
    /// Size of POST bodies in bytes.
    #[arg(long, default_value_t = 1024)]
    pub body_bytes: usize,
    /// Watches each client keeps open for the whole run (counted as streams, not latency).
    #[arg(long, default_value_t = 0)]
    pub watches_per_client: u32,
    /// Skew of the open-loop rate over clients: client c gets weight 1/(c+1)^skew
    /// (0 = equal). Real control planes have a few heavy clients.
    #[arg(long, default_value_t = 0.0)]
    pub client_skew: f64,
    /// Open loop: at most this many outstanding requests per client (beyond, sends wait
    /// and the wait counts in latency).
    #[arg(long, default_value_t = 1000)]
    pub max_inflight: usize,
    /// Non-2xx statuses that count as success, comma-separated (e.g. 404,409 against a
    /// real API server without the objects).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(100..600))]
    pub accept_status: Vec<u16>,
    /// Response header naming the replica that answered.
    #[arg(long, default_value = "x-apiserver-replica")]
    pub replica_header: String,
    /// Seed for op and object choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Retry as client-go does: a request never sent (its connection closed first) or
    /// refused before processing (REFUSED_STREAM, a graceful GOAWAY) at once, a GET cut by a reset after 1 s, a 429 or 5xx with
    /// Retry-After after waiting it out; at most 10 times. Retries are reported apart
    /// as signals a client handles; the last attempt is the request's outcome.
    #[arg(long)]
    pub retries: bool,
}

impl LoadArgs {
    /// The typed, validated scenario.
    pub fn scenario(&self) -> Result<Scenario, ScenarioError> {
        let mode = match self.mode {
            ModeArg::Open => {
                if self.concurrency.is_some() {
                    return Err(ScenarioError::Invalid(
                        "--concurrency applies to --mode closed; use --rate for open loop".into(),
                    ));
                }
                Mode::Open {
                    rate: self.rate.unwrap_or(1000.0),
                }
            }
            ModeArg::Closed => {
                if self.rate.is_some() {
                    return Err(ScenarioError::Invalid(
                        "--rate applies to --mode open; use --concurrency for closed loop".into(),
                    ));
                }
                Mode::Closed {
                    concurrency: self.concurrency.unwrap_or(1),
                }
            }
        };
        let s = Scenario {
            clients: self.clients,
            protocol: match self.http {
                HttpArg::H2 => Protocol::H2,
                HttpArg::H1 => Protocol::H1,
            },
            h1_pool: self.h1_pool,
            mode,
            warmup: self.warmup,
            duration: self.duration,
            max_requests: self.max_requests,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            grace: self.grace,
            mix: self.mix.clone(),
            list_size: self.list_size,
            namespace: self.namespace.clone(),
            objects: self.objects,
            body_bytes: self.body_bytes,
            watches_per_client: self.watches_per_client,
            client_skew: self.client_skew,
            max_inflight: self.max_inflight,
            accept_status: self.accept_status.clone(),
            replica_header: self.replica_header.to_ascii_lowercase(),
            seed: self.seed,
            honor_retry_after: false,
            retries: self.retries,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Where the per-replica numbers come from.
#[derive(Debug, Clone, Args)]
pub struct MeasureArgs {
    /// The replica set: a count (`3`) or ids (`replica-0,replica-1,replica-2`). Replicas
    /// that got nothing count as zeros; without it only replicas that answered count.
    #[arg(long, value_name = "N|IDS")]
    pub replicas: Option<ReplicaSet>,
    /// Scrape `apiserver_request_total` of this replica before and after the run:
    /// `[name=]https://host:port[/metrics]`. Repeat per replica.
    #[arg(long, value_name = "[NAME=]URL")]
    pub scrape: Vec<ScrapeTarget>,
    /// Only sum scraped samples with this label (e.g. `resource=pods`); repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    pub scrape_label: Vec<LabelMatch>,
}

/// Outputs.
#[derive(Debug, Clone, Args)]
pub struct OutputArgs {
    /// Print the report as JSON on stdout (the text summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Write plots: an HTML page, or an SVG if the name ends in .svg.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// No live progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// Pass/fail thresholds (exit code 3 when missed).
#[derive(Debug, Clone, Args)]
pub struct GateArgs {
    /// Highest acceptable error rate, e.g. 0.01 or 1%.
    #[arg(long, value_parser = fraction_arg)]
    pub max_error_rate: Option<f64>,
    /// Highest acceptable p99 latency, e.g. 200ms.
    #[arg(long, value_parser = duration_arg)]
    pub max_p99: Option<Duration>,
}

impl GateArgs {
    /// The thresholds.
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            max_error_rate: self.max_error_rate,
            max_p99: self.max_p99,
        }
    }
}

/// The flags `run` and `compare` share: one scenario, how to reach and measure the
/// target(s), what to print, and when the run counts as failed.
#[derive(Debug, Clone, Args)]
pub struct ScenarioArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub tls: TlsArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub load: LoadArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub measure: MeasureArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub output: OutputArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub gate: GateArgs,
}

/// `run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Target URL, e.g. https://127.0.0.1:8443.
    #[arg(long, short = 't', value_name = "URL")]
    pub target: Target,
    /// Name of the target in reports [default: the URL].
    #[arg(long)]
    pub name: Option<String>,
    /// The scenario, TLS, measurement, output and threshold flags.
    #[command(flatten)]
    pub common: ScenarioArgs,
    /// A second client group running at the same time (a noisy neighbour).
    #[command(flatten)]
    pub neighbor: NeighborArgs,
    /// A fault to cause during the run: at AT after the measured phase began, run
    /// COMMAND with `sh -c` (at most 2 minutes), shown as LABEL. Repeat for each; the
    /// report counts requests per window between actions and marks them on the plots.
    #[arg(long = "action", value_name = "AT=LABEL=COMMAND")]
    pub actions: Vec<Action>,
}

/// A second group of clients on the same target during the run, with its own load,
/// request mix and identity, reported apart: how a noisy neighbour affects the main
/// group (and what flow control does about it). Either an open-loop flood that never
/// backs off (`--neighbor-rate`), or client-go-like clients sending in a loop that wait
/// out a 429's `Retry-After` (`--neighbor-concurrency`).
#[derive(Debug, Clone, Args)]
pub struct NeighborArgs {
    /// Open-loop requests per second of the neighbour group, whatever it is answered.
    #[arg(long, value_name = "RATE", group = "neighbor_load")]
    pub neighbor_rate: Option<f64>,
    /// Closed loop: requests each neighbour client keeps outstanding. After a 429 or
    /// 5xx with `Retry-After`, a client waits that long first, as client-go does.
    #[arg(long, value_name = "N", group = "neighbor_load")]
    pub neighbor_concurrency: Option<usize>,
    /// Clients of the neighbour group.
    #[arg(long, default_value_t = 1, requires = "neighbor_load")]
    pub neighbor_clients: usize,
    /// Request mix of the neighbour group.
    #[arg(long, default_value = "list=1", value_parser = mix_arg, requires = "neighbor_load")]
    pub neighbor_mix: Mix,
    /// Bearer token of the neighbour group [default: the main group's].
    #[arg(
        long,
        env = "APIGATE_LOADTEST_NEIGHBOR_TOKEN",
        hide_env_values = true,
        requires = "neighbor_load"
    )]
    pub neighbor_token: Option<String>,
}

impl NeighborArgs {
    /// The neighbour's plan beside `main`'s: same target, TLS and timing, its own
    /// clients, load, mix and token (its 429s show among its errors as `http_429`).
    /// `None` without a neighbour; an error for a load that would send nothing.
    pub fn plan(&self, main: &RunPlan) -> Option<Result<RunPlan, ScenarioError>> {
        let mut scenario = (*main.scenario).clone();
        match (self.neighbor_rate, self.neighbor_concurrency) {
            (Some(rate), _) => scenario.mode = Mode::Open { rate },
            (None, Some(concurrency)) => {
                scenario.mode = Mode::Closed { concurrency };
                scenario.honor_retry_after = true;
            }
            (None, None) => return None,
        }
        scenario.clients = self.neighbor_clients;
        scenario.mix = self.neighbor_mix.clone();
        scenario.watches_per_client = 0;
        scenario.client_skew = 0.0;
        if let Err(e) = scenario.validate() {
            return Some(Err(e));
        }
        Some(Ok(RunPlan {
            name: format!("{} (neighbour)", main.name),
            scenario: Arc::new(scenario),
            token: self.neighbor_token.clone().or_else(|| main.token.clone()),
            scrape: Vec::new(),
            progress: false,
            actions: Vec::new(),
            ..main.clone()
        }))
    }
}

/// A `NAME=URL` target of `compare`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedTarget {
    /// Name in the table.
    pub name: String,
    /// URL.
    pub target: Target,
}

impl FromStr for NamedTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected NAME=URL, e.g. l4=https://127.0.0.1:9443"))?;
        let name = name.trim();
        if name.is_empty() || name.contains("://") {
            return Err(format!("{s:?}: expected NAME=URL"));
        }
        Ok(Self {
            name: name.to_owned(),
            target: url.trim().parse().map_err(|e| format!("{e}"))?,
        })
    }
}

/// `compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// A target as NAME=URL; repeat for each (run in the given order).
    #[arg(long = "target", short = 't', value_name = "NAME=URL", required = true)]
    pub targets: Vec<NamedTarget>,
    /// Pause between targets so one run's tail does not overlap the next.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub pause: Duration,
    /// The scenario, TLS, measurement, output and threshold flags.
    #[command(flatten)]
    pub common: ScenarioArgs,
}

/// `backend`.
#[derive(Debug, Clone, Args)]
pub struct BackendArgs {
    /// Number of replicas.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub replicas: usize,
    /// Address the replicas listen on (ports are picked by the OS).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Service time of every non-watch request: `5ms`, `fixed:5ms`, `uniform:1ms..9ms`, `exp:5ms`.
    #[arg(long, default_value = "0ms")]
    pub service_time: apigate_fake_apiserver::ServiceTime,
    /// Items in a LIST response.
    #[arg(long, default_value_t = 10)]
    pub list_size: usize,
    /// Padding bytes per object.
    #[arg(long, default_value_t = 256)]
    pub object_bytes: usize,
    /// A watch sends one event per interval.
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    pub watch_event_interval: Duration,
    /// Serve plaintext (HTTP/1.1 + h2c) instead of TLS.
    #[arg(long)]
    pub plain: bool,
    /// Extra DNS names / IPs for the serving certificate (localhost, 127.0.0.1, ::1 and
    /// --host are always included).
    #[arg(long, value_name = "NAME")]
    pub san: Vec<String>,
    /// Directory for ca.pem, server.pem, server-key.pem, server-bundle.pem (cert+key, for
    /// HAProxy), client.pem, client-key.pem, backends.json and backends.env.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Admin endpoint (plain HTTP): `GET /replicas`, `POST /replicas/{id}/ready?value=false`.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub admin: SocketAddr,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = duration_arg)]
    pub run_for: Option<Duration>,
}

/// `l4-baseline`.
#[derive(Debug, Clone, Args)]
pub struct L4Args {
    /// Listen address (port 0 = the OS picks; see --addr-file).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Backend address; repeat or comma-separate. Connections go round robin.
    #[arg(long = "backend", short = 'b', value_delimiter = ',', required = true)]
    pub backends: Vec<SocketAddr>,
    /// Write the bound address to this file once listening.
    #[arg(long, value_name = "FILE")]
    pub addr_file: Option<PathBuf>,
    /// Stop after this long (default: until SIGINT/SIGTERM).
    #[arg(long, value_parser = duration_arg)]
    pub run_for: Option<Duration>,
}

impl ScenarioArgs {
    /// The plan for one target.
    pub fn plan(&self, name: String, target: Target, scenario: Arc<Scenario>) -> RunPlan {
        RunPlan {
            name,
            target,
            scenario,
            tls: self.tls.options(),
            token: self.tls.token.clone(),
            replicas: self.measure.replicas.clone().unwrap_or_default(),
            scrape: self.measure.scrape.clone(),
            scrape_labels: self.measure.scrape_label.clone(),
            thresholds: self.gate.thresholds(),
            progress: !self.output.quiet,
            actions: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_flags_make_a_scenario() -> Result<(), Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from([
            "apigate-loadtest",
            "run",
            "--target",
            "https://127.0.0.1:8443",
            "--ca",
            "ca.pem",
            "--rate",
            "500",
            "--clients",
            "3",
            "--duration",
            "5s",
            "--mix",
            "get=1",
            "--accept-status",
            "404,409",
        ])?;
        let Command::Run(args) = cli.command else {
            return Err("not run".into());
        };
        let s = args.common.load.scenario()?;
        assert_eq!(s.mode, Mode::Open { rate: 500.0 });
        assert_eq!(s.accept_status, vec![404, 409]);
        assert_eq!(s.duration, Duration::from_secs(5));
        Ok(())
    }

    /// The main plan and the neighbour's (if any) for `run` with these flags.
    type Plans = (RunPlan, Option<Result<RunPlan, ScenarioError>>);

    fn plans(flags: &[&str]) -> Result<Plans, Box<dyn std::error::Error>> {
        let mut argv = vec![
            "apigate-loadtest",
            "run",
            "--target",
            "https://127.0.0.1:8443",
        ];
        argv.extend_from_slice(flags);
        let Command::Run(args) = Cli::try_parse_from(argv)?.command else {
            return Err("not run".into());
        };
        let scenario = Arc::new(args.common.load.scenario()?);
        let main = args.common.plan("t".into(), args.target.clone(), scenario);
        let neighbor = args.neighbor.plan(&main);
        Ok((main, neighbor))
    }

    #[test]
    fn a_neighbour_group_gets_its_own_load_mix_clients_and_token(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let (main, neighbor) = plans(&[
            "--rate",
            "100",
            "--mix",
            "get=1",
            "--token",
            "quiet",
            "--neighbor-rate",
            "2000",
            "--neighbor-clients",
            "2",
            "--neighbor-token",
            "noisy",
        ])?;
        let neighbor = neighbor.ok_or("no neighbour")??;
        assert_eq!(neighbor.scenario.mode, Mode::Open { rate: 2000.0 });
        assert_eq!(neighbor.scenario.clients, 2);
        assert_eq!(neighbor.scenario.mix.to_string(), "list=1");
        assert_eq!(neighbor.token.as_deref(), Some("noisy"));
        assert_eq!(main.token.as_deref(), Some("quiet"));
        assert_eq!(neighbor.scenario.duration, main.scenario.duration);
        assert!(!neighbor.progress && !neighbor.scenario.honor_retry_after);
        // A client-go-like neighbour: closed loop, waiting out Retry-After.
        let (main, neighbor) = plans(&["--neighbor-concurrency", "4"])?;
        let neighbor = neighbor.ok_or("no neighbour")??;
        assert_eq!(neighbor.scenario.mode, Mode::Closed { concurrency: 4 });
        assert!(neighbor.scenario.honor_retry_after && !main.scenario.honor_retry_after);
        // No neighbour without its load; a load that sends nothing is refused; not both.
        assert!(plans(&[])?.1.is_none());
        assert!(plans(&["--neighbor-clients", "2"]).is_err());
        assert!(matches!(plans(&["--neighbor-rate", "0"])?.1, Some(Err(_))));
        assert!(plans(&["--neighbor-rate", "5", "--neighbor-concurrency", "4"]).is_err());
        Ok(())
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for args in [
            vec!["apigate-loadtest", "run"],
            vec!["apigate-loadtest", "run", "--target", "ftp://x"],
            vec![
                "apigate-loadtest",
                "run",
                "--target",
                "https://x",
                "--duration",
                "10",
            ],
            vec![
                "apigate-loadtest",
                "run",
                "--target",
                "https://x",
                "--mix",
                "watch=1",
            ],
            vec![
                "apigate-loadtest",
                "run",
                "--target",
                "https://x",
                "--max-error-rate",
                "2",
            ],
            vec![
                "apigate-loadtest",
                "run",
                "--target",
                "https://x",
                "--cert",
                "c.pem",
            ],
            vec!["apigate-loadtest", "compare", "--target", "https://x"],
            vec!["apigate-loadtest", "l4-baseline"],
        ] {
            assert!(
                Cli::try_parse_from(&args).is_err(),
                "{args:?} should be rejected"
            );
        }
    }

    #[test]
    fn mode_flag_conflicts_are_reported() -> Result<(), Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from([
            "apigate-loadtest",
            "run",
            "-t",
            "https://x",
            "--mode",
            "closed",
            "--rate",
            "5",
        ])?;
        let Command::Run(args) = cli.command else {
            return Err("not run".into());
        };
        assert!(args.common.load.scenario().is_err());
        Ok(())
    }

    #[test]
    fn named_targets() {
        assert!("l4=https://127.0.0.1:1".parse::<NamedTarget>().is_ok());
        assert!("https://127.0.0.1:1".parse::<NamedTarget>().is_err());
        assert!("=https://127.0.0.1:1".parse::<NamedTarget>().is_err());
    }
}
