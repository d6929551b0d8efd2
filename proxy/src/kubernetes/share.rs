//! The rollout record's reader and writer: the leader writes its decision into the
//! `ApiGateRollout` object, takes operators' actions from it and publishes Events;
//! the other replicas read it and serve what it says.

use std::sync::Arc;
use std::time::Duration;

use apigate_control::source::kubernetes::rollout_record::{
    ActionResult, RecordStore, RolloutRecord,
};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::admin::Readiness;
use crate::rollout::shared::RecordName;
use crate::rollout::Rollout;

/// How a replica shares the rollout.
pub struct Sharing {
    /// The object.
    pub store: RecordStore,
    /// Its name, for the controller's messages.
    pub name: RecordName,
    /// This replica's identity, recorded as the leader's.
    pub identity: String,
    /// How often the record is read (and written when the decision changed).
    pub period: Duration,
}

/// Read or write the record every `period` and whenever the decision or leadership
/// changes, until `leader` closes. Readiness is set once the record has been read
/// (and, on a follower, applied when it can be), so a new replica does not serve the
/// newest revision to routes the rollout has not reached.
pub async fn share(
    rollout: Arc<Rollout>,
    sharing: Sharing,
    mut leader: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
) {
    let mut changes = rollout.changes();
    let mut leading = false;
    let mut written: Option<RolloutRecord> = None;
    let mut followed: Option<RolloutRecord> = None;
    let mut ready = false;
    loop {
        let lead = *leader.borrow_and_update();
        if leading && !lead {
            tracing::info!("no longer leading; following the rollout record");
            rollout.step_down(sharing.name.clone());
            written = None;
        }
        let round = if lead {
            lead_round(&rollout, &sharing, &mut leading, &mut written).await
        } else {
            leading = false;
            follow_round(&rollout, &sharing, &mut followed, &mut changes).await
        };
        match round {
            Ok(()) => {
                if rollout.synced() && !ready {
                    ready = true;
                    readiness.set(true);
                    tracing::info!("initial sync complete and rollout record read; ready");
                }
            }
            Err(error) => tracing::warn!(%error, "rollout record not read or written"),
        }
        changes.borrow_and_update();
        tokio::select! {
            () = tokio::time::sleep(sharing.period) => {}
            changed = leader.changed() => if changed.is_err() {
                rollout.step_down(sharing.name.clone());
                return;
            },
            _ = changes.changed() => {}
        }
    }
}

async fn lead_round(
    rollout: &Rollout,
    sharing: &Sharing,
    leading: &mut bool,
    written: &mut Option<RolloutRecord>,
) -> Result<(), kube::Error> {
    let object = sharing.store.get_or_create().await?;
    if !*leading {
        rollout.lead(object.status.as_ref(), sharing.name.clone());
        *leading = true;
        *written = None;
    }
    if let Some(action) = object.spec.action {
        let result = match rollout.act_from_record(action) {
            Ok(()) => "Done".to_string(),
            Err(e) => e.to_string(),
        };
        tracing::info!(action = ?action, %result, "rollout action from the record");
        let answer = ActionResult {
            action,
            result,
            time: Timestamp::now().to_string(),
        };
        sharing.store.answer(&object, answer).await?;
    }
    let record = rollout.record(&sharing.identity);
    if written.as_ref() != Some(&record) {
        sharing.store.write(&record).await?;
        *written = Some(record);
    }
    for event in rollout.take_announcements() {
        if let Err(error) = sharing
            .store
            .event(&object, event.warning, event.reason, event.note)
            .await
        {
            tracing::warn!(%error, reason = event.reason, "rollout event not published");
        }
    }
    Ok(())
}

async fn follow_round(
    rollout: &Rollout,
    sharing: &Sharing,
    followed: &mut Option<RolloutRecord>,
    changes: &mut watch::Receiver<u64>,
) -> Result<(), kube::Error> {
    let Some(object) = sharing.store.get().await? else {
        // No leader has written yet: serve this replica's own view.
        return Ok(());
    };
    let Some(record) = object.status else {
        return Ok(());
    };
    // Only when the record or this replica's routes changed: rebuilding costs a pass
    // over every route.
    if followed.as_ref() != Some(&record) || changes.has_changed().unwrap_or(false) {
        rollout.follow(&record);
        *followed = Some(record);
    }
    Ok(())
}
