//! Helpers shared by the integration tests: fake replicas with TLS material on disk, and
//! short scenarios. Everything binds ports the OS picks on loopback.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use apigate_fake_apiserver::pki::Ca;
use apigate_fake_apiserver::{spawn, spawn_many, Replica, ReplicaOptions, TlsMaterial};
use apigate_loadtest::client::tls::TlsOptions;
use apigate_loadtest::client::Target;
use apigate_loadtest::distribution::ReplicaSet;
use apigate_loadtest::runner::RunPlan;
use apigate_loadtest::scenario::{Mix, Mode, Protocol, Scenario};
use apigate_loadtest::verdict::Thresholds;

pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// TLS material for fake replicas, with the CA written to a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
    pub tls: TlsMaterial,
}

pub fn pki() -> Result<Pki, Box<dyn std::error::Error + Send + Sync>> {
    let ca = Ca::new("test CA")?;
    let server = ca.issue_server(&["localhost", "127.0.0.1", "::1"])?;
    let dir = tempfile::tempdir()?;
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.cert_pem())?;
    Ok(Pki {
        dir,
        ca_path,
        tls: TlsMaterial::from_issued(&server),
    })
}

pub fn replica_options(pki: &Pki) -> ReplicaOptions {
    ReplicaOptions {
        tls: Some(pki.tls.clone()),
        ..ReplicaOptions::default()
    }
}

pub async fn replicas(
    n: usize,
    opts: ReplicaOptions,
) -> Result<Vec<Replica>, apigate_fake_apiserver::Error> {
    spawn_many(n, IpAddr::from([127, 0, 0, 1]), opts).await
}

pub async fn replica_at(
    addr: SocketAddr,
    opts: ReplicaOptions,
) -> Result<Replica, apigate_fake_apiserver::Error> {
    spawn(addr, opts).await
}

pub async fn stop(replicas: Vec<Replica>) {
    for r in replicas {
        r.shutdown().await;
    }
}

pub fn ids(replicas: &[Replica]) -> Vec<String> {
    replicas.iter().map(|r| r.id().to_owned()).collect()
}

/// A short open-loop scenario: `rate` req/s over `clients`, no warm-up.
pub fn scenario(clients: usize, rate: f64, duration: Duration) -> Scenario {
    Scenario {
        clients,
        protocol: Protocol::H2,
        h1_pool: 4,
        mode: Mode::Open { rate },
        warmup: Duration::ZERO,
        duration,
        max_requests: None,
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        grace: Duration::from_millis(500),
        mix: Mix::default(),
        list_size: 10,
        namespace: "default".into(),
        objects: 10,
        body_bytes: 256,
        watches_per_client: 0,
        client_skew: 0.0,
        max_inflight: 1000,
        accept_status: vec![],
        replica_header: apigate_fake_apiserver::REPLICA_HEADER.into(),
        seed: 1,
        honor_retry_after: false,
        retries: false,
    }
}

pub fn plan(
    url: &str,
    ca: Option<PathBuf>,
    scenario: Scenario,
) -> Result<RunPlan, Box<dyn std::error::Error + Send + Sync>> {
    let target: Target = url.parse()?;
    Ok(RunPlan {
        name: url.to_owned(),
        target,
        scenario: Arc::new(scenario),
        tls: TlsOptions {
            ca,
            ..TlsOptions::default()
        },
        token: None,
        replicas: ReplicaSet::Seen,
        scrape: vec![],
        scrape_labels: vec![],
        thresholds: Thresholds::default(),
        progress: false,
        actions: vec![],
    })
}
