//! What load to generate: the typed scenario (clients, protocol, mode, mix, bounds).
//!
//! The scenario is parsed once from the command line into these types; the runner never
//! looks at flags. The requests themselves are built by [`crate::requests`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use http::header::HeaderName;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// HTTP version the clients speak. `H2` is what client-go uses: one connection per client
/// carrying every request as a stream, which is exactly what pins load behind an L4
/// balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// One HTTP/2 connection per client, all requests multiplexed on it.
    H2,
    /// A keep-alive pool of HTTP/1.1 connections per client.
    H1,
}

impl FromStr for Protocol {
    type Err = ScenarioError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "h2" | "http2" => Ok(Self::H2),
            "h1" | "http1" | "http1.1" => Ok(Self::H1),
            _ => Err(ScenarioError::Invalid(format!(
                "protocol {s:?}: expected h2 or h1"
            ))),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::H2 => "h2",
            Self::H1 => "h1",
        })
    }
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Mode {
    /// Constant arrival rate over all clients (requests/s); latency is measured from the
    /// intended send time, so queueing caused by a slow target is counted.
    Open {
        /// Total requests per second over all clients.
        rate: f64,
    },
    /// Each client keeps `concurrency` requests outstanding, sending the next one when the
    /// previous completes; latency is measured from the actual send time. Shows the
    /// maximum throughput, but hides stalls (coordinated omission).
    Closed {
        /// Outstanding requests per client.
        concurrency: usize,
    },
}

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `GET /api/v1/namespaces/{ns}/pods/{name}`.
    Get,
    /// `GET /api/v1/namespaces/{ns}/pods?limit={list_size}`.
    List,
    /// `POST /api/v1/namespaces/{ns}/pods`.
    Create,
    /// `PATCH /api/v1/namespaces/{ns}/pods/{name}` (merge patch).
    Patch,
}

impl Op {
    /// All ops, in the order they are listed in reports.
    pub const ALL: [Op; 4] = [Op::Get, Op::List, Op::Create, Op::Patch];

    /// The name used in `--mix` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Op::Get => "get",
            Op::List => "list",
            Op::Create => "create",
            Op::Patch => "patch",
        }
    }
}

/// Relative weights of the ops; a request's op is drawn from them at random (seeded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// `(op, weight)` pairs with weight > 0, in [`Op::ALL`] order.
    pub weights: Vec<(Op, u32)>,
}

impl Mix {
    /// Picks an op according to the weights.
    pub fn pick<R: Rng>(&self, rng: &mut R) -> Op {
        let total: u32 = self.weights.iter().map(|(_, w)| w).sum();
        let mut x = rng.gen_range(0..total.max(1));
        for (op, w) in &self.weights {
            if x < *w {
                return *op;
            }
            x -= w;
        }
        self.weights.first().map_or(Op::Get, |(op, _)| *op)
    }
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            weights: vec![
                (Op::Get, 70),
                (Op::List, 10),
                (Op::Create, 10),
                (Op::Patch, 10),
            ],
        }
    }
}

impl FromStr for Mix {
    type Err = ScenarioError;
    /// Parses `get=70,list=10,create=10,patch=10` (`post` is an alias of `create`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |m: String| ScenarioError::Invalid(format!("mix {s:?}: {m}"));
        let mut weights = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, w) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} is not op=weight")))?;
            let op = match name.trim() {
                "get" => Op::Get,
                "list" => Op::List,
                "create" | "post" => Op::Create,
                "patch" => Op::Patch,
                other => {
                    return Err(bad(format!(
                        "unknown op {other:?}; valid: get, list, create (post), patch \
                         (watches: --watches-per-client)"
                    )))
                }
            };
            let w: u32 = w
                .trim()
                .parse()
                .map_err(|_| bad(format!("weight {w:?} is not a whole number")))?;
            if weights.iter().any(|(o, _)| *o == op) {
                return Err(bad(format!("{} given twice", op.name())));
            }
            if w > 0 {
                weights.push((op, w));
            }
        }
        if weights.is_empty() {
            return Err(bad("needs at least one op with weight > 0".into()));
        }
        weights.sort_by_key(|(op, _)| *op);
        Ok(Self { weights })
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .weights
            .iter()
            .map(|(op, w)| format!("{}={w}", op.name()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A scenario flag combination that makes no sense; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScenarioError {
    /// A value or combination that is not valid, with what would be.
    #[error("{0}")]
    Invalid(String),
}

/// Everything that defines the load, independent of the target. The same scenario is run
/// against every target of a `compare`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scenario {
    /// Number of independent clients (each like one client-go process).
    pub clients: usize,
    /// HTTP version.
    pub protocol: Protocol,
    /// HTTP/1.1 connections per client (ignored for h2).
    pub h1_pool: usize,
    /// Pacing.
    #[serde(flatten)]
    pub mode: Mode,
    /// Requests are sent but not recorded for this long at the start.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// Measured phase length.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Upper bound on measured requests (the run stops early when reached).
    pub max_requests: Option<u64>,
    /// Per-request deadline (connect + response + body).
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// TCP connect + TLS handshake deadline.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// How long in-flight requests may finish after the end before they count as
    /// `unfinished`.
    #[serde(with = "secs")]
    pub grace: Duration,
    /// Request mix.
    pub mix: Mix,
    /// `limit` of LIST requests.
    pub list_size: u32,
    /// Namespace of all requests.
    pub namespace: String,
    /// GET/PATCH pick a name among `pod-0 .. pod-{objects-1}`.
    pub objects: u32,
    /// Size of the POST body (padded with an annotation).
    pub body_bytes: usize,
    /// Watches each client keeps open for the whole run (like informers).
    pub watches_per_client: u32,
    /// Client load skew: client `c` gets weight `1/(c+1)^skew` of the open-loop rate
    /// (0 = all equal). Real control planes have a few heavy clients.
    pub client_skew: f64,
    /// Open loop: per-client cap on outstanding requests (beyond it, sends wait, and the
    /// wait counts in latency).
    pub max_inflight: usize,
    /// Non-2xx status codes that count as success (e.g. 404 against a real API server).
    pub accept_status: Vec<u16>,
    /// Response header naming the replica that served a request.
    pub replica_header: String,
    /// Seed of the op/name choice, for reproducible runs.
    pub seed: u64,
    /// After a 429 or 5xx with `Retry-After`, a client waits that long before its next
    /// request, as client-go does (closed loop; the open loop keeps its timetable).
    #[serde(default)]
    pub honor_retry_after: bool,
    /// Retry as client-go does ([`crate::retry`]): what it retries is counted as a
    /// signal, and only the last attempt's result is the request's outcome.
    #[serde(default)]
    pub retries: bool,
}

impl Scenario {
    /// Checks cross-field constraints that clap cannot express.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_owned()));
        if self.clients == 0 || self.clients > 100_000 {
            return bad("--clients must be between 1 and 100000");
        }
        if self.h1_pool == 0 || self.h1_pool > 10_000 {
            return bad("--h1-pool must be between 1 and 10000");
        }
        match self.mode {
            Mode::Open { rate } if !(rate > 0.0 && rate.is_finite() && rate <= 10_000_000.0) => {
                return bad("--rate must be > 0 and <= 10000000 requests/s in open-loop mode")
            }
            Mode::Closed { concurrency } if concurrency == 0 || concurrency > 10_000 => {
                return bad("--concurrency must be between 1 and 10000 in closed-loop mode")
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return bad("--duration must be > 0");
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return bad("--timeout and --connect-timeout must be > 0");
        }
        if self.max_requests == Some(0) {
            return bad("--max-requests must be > 0");
        }
        if !(0.0..=5.0).contains(&self.client_skew) {
            return bad("--client-skew must be between 0 and 5");
        }
        if self.protocol == Protocol::H1 && self.watches_per_client as usize >= self.h1_pool {
            return bad("--h1-pool must be larger than --watches-per-client (each HTTP/1.1 watch holds a connection)");
        }
        if self.max_inflight == 0 {
            return bad("--max-inflight must be > 0");
        }
        if self.objects == 0 {
            return bad("--objects must be > 0");
        }
        if HeaderName::from_bytes(self.replica_header.as_bytes()).is_err() {
            return bad("--replica-header is not a valid header name");
        }
        if http::uri::PathAndQuery::from_str(&format!("/api/v1/namespaces/{}/pods", self.namespace))
            .is_err()
            || self.namespace.is_empty()
            || self.namespace.contains('/')
        {
            return bad("--namespace must be a plain namespace name");
        }
        Ok(())
    }

    /// Relative load weight of each client, summing to 1 (see `client_skew`).
    pub fn client_weights(&self) -> Vec<f64> {
        let raw: Vec<f64> = (0..self.clients)
            .map(|c| 1.0 / ((c + 1) as f64).powf(self.client_skew))
            .collect();
        let sum: f64 = raw.iter().sum();
        raw.into_iter().map(|w| w / sum).collect()
    }
}

/// Serde helper: durations as fractional seconds in JSON.
pub(crate) mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// A small scenario for unit tests of this crate.
#[cfg(test)]
pub(crate) fn test_scenario(clients: usize, rate: f64) -> Scenario {
    Scenario {
        clients,
        protocol: Protocol::H2,
        h1_pool: 4,
        mode: Mode::Open { rate },
        warmup: Duration::ZERO,
        duration: Duration::from_secs(1),
        max_requests: None,
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        grace: Duration::from_secs(1),
        mix: Mix::default(),
        list_size: 50,
        namespace: "default".into(),
        objects: 10,
        body_bytes: 512,
        watches_per_client: 0,
        client_skew: 0.0,
        max_inflight: 100,
        accept_status: vec![],
        replica_header: "x-apiserver-replica".into(),
        seed: 1,
        honor_retry_after: false,
        retries: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn scenario() -> Scenario {
        test_scenario(3, 100.0)
    }

    #[test]
    fn mix_parses_and_rejects() {
        let m: Mix = "list=1, get=3,post=0".parse().unwrap_or_default();
        assert_eq!(m.weights, vec![(Op::Get, 3), (Op::List, 1)]);
        assert_eq!(m.to_string(), "get=3,list=1");
        assert!("get".parse::<Mix>().is_err());
        assert!("watch=1".parse::<Mix>().is_err());
        assert!("get=0".parse::<Mix>().is_err());
        assert!("get=1,get=2".parse::<Mix>().is_err());
        assert!("get=x".parse::<Mix>().is_err());
    }

    #[test]
    fn mix_pick_follows_weights() {
        let m: Mix = "get=3,list=1".parse().unwrap_or_default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let gets = (0..4000).filter(|_| m.pick(&mut rng) == Op::Get).count();
        assert!((2800..3200).contains(&gets), "{gets}");
    }

    #[test]
    fn validation() {
        assert_eq!(scenario().validate(), Ok(()));
        let mut s = scenario();
        s.mode = Mode::Open { rate: 0.0 };
        assert!(s.validate().is_err());
        let mut s = scenario();
        s.clients = 0;
        assert!(s.validate().is_err());
        let mut s = scenario();
        s.namespace = "a/b".into();
        assert!(s.validate().is_err());
    }

    #[test]
    fn skew_weights_sum_to_one() {
        let mut s = scenario();
        assert!(s
            .client_weights()
            .iter()
            .all(|w| (w - 1.0 / 3.0).abs() < 1e-9));
        s.client_skew = 1.0;
        let w = s.client_weights();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        assert!(w[0] > w[1] && w[1] > w[2]);
    }
}
