//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every apigate replica serves; only the leader writes route status and Events, so N
//! replicas do not fight over the same fields. The Lease is taken when absent or
//! expired and renewed well before it expires; every write carries the read
//! `resourceVersion`, so two replicas racing for it cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use tokio::sync::watch;

/// Where the Lease lives and who we are.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (apigate's own).
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a leader holds the Lease without renewing it.
    pub duration: Duration,
}

/// Hold or contend for the Lease forever; `leader` follows whether we hold it.
///
/// Expiry of another holder's Lease is judged by this replica's own monotonic clock:
/// the Lease is free once its record has not changed for a whole lease duration, so
/// clock skew between replicas cannot cause an early takeover. A leader that has not
/// renewed for two thirds of the duration (an API server that hangs) steps down before
/// another replica can take over.
pub async fn run(client: Client, config: LeaseConfig, leader: watch::Sender<bool>) {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let retry = config.duration / 3;
    let mut observed: Option<(String, Instant)> = None;
    let mut renewed: Option<Instant> = None;
    loop {
        let attempt = tokio::time::timeout(retry, try_acquire(&api, &config, &mut observed)).await;
        match attempt {
            Ok(Ok(true)) => renewed = Some(Instant::now()),
            Ok(Ok(false)) => renewed = None,
            Ok(Err(error)) => {
                tracing::warn!(lease = %config.name, %error, "lease update failed");
            }
            Err(_) => tracing::warn!(lease = %config.name, "lease update timed out"),
        }
        let holding = renewed.is_some_and(|at| at.elapsed() < retry * 2);
        leader.send_if_modified(|current| {
            if *current == holding {
                return false;
            }
            tracing::info!(lease = %config.name, identity = %config.identity, leader = holding, "leadership changed");
            *current = holding;
            true
        });
        tokio::time::sleep(retry).await;
    }
}

/// One round: create, renew or take over the Lease. Returns whether we hold it.
async fn try_acquire(
    api: &Api<Lease>,
    config: &LeaseConfig,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let seconds = i32::try_from(config.duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&config.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(config.name.clone()),
                namespace: Some(config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(config.identity.clone()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    let ours = spec.holder_identity.as_deref() == Some(config.identity.as_str());
    // The record (holder + renew time) and when we first saw it unchanged.
    let record = format!(
        "{}@{}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default()
    );
    let since = match observed {
        Some((seen, at)) if *seen == record => *at,
        _ => {
            *observed = Some((record, Instant::now()));
            Instant::now()
        }
    };
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(config.duration);
    let vacant = spec
        .holder_identity
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    let expired = vacant || since.elapsed() > duration;
    if !ours && !expired {
        return Ok(false);
    }
    if !ours {
        spec.holder_identity = Some(config.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(seconds);
    // `replace` sends the resourceVersion we read: a concurrent writer makes it 409.
    match api
        .replace(&config.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
