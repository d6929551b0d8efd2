//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every apigate replica serves; only the leader writes route status and Events, so N
//! replicas do not fight over the same fields. The Lease is taken when absent or
//! expired and renewed well before it expires; every write carries the read
//! `resourceVersion`, so two replicas racing for it cannot both win.

use std::time::Duration;

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
pub async fn run(client: Client, config: LeaseConfig, leader: watch::Sender<bool>) {
    let api = Api::<Lease>::namespaced(client, &config.namespace);
    let retry = config.duration / 3;
    loop {
        let holding = match try_acquire(&api, &config).await {
            Ok(holding) => holding,
            Err(error) => {
                tracing::warn!(lease = %config.name, %error, "lease update failed");
                // Without a successful renewal we must assume another replica took over
                // once our term could have run out; stop writing status early.
                false
            }
        };
        if holding != *leader.borrow() {
            tracing::info!(lease = %config.name, identity = %config.identity, leader = holding, "leadership changed");
        }
        leader.send_replace(holding);
        tokio::time::sleep(retry).await;
    }
}

/// One round: create, renew or take over the Lease. Returns whether we hold it.
async fn try_acquire(api: &Api<Lease>, config: &LeaseConfig) -> Result<bool, kube::Error> {
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
    let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
        (Some(renewed), Some(duration)) => {
            let deadline = renewed.0.as_second() + i64::from(duration);
            now.as_second() > deadline
        }
        _ => true,
    };
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
