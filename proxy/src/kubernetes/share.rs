//! The rollout record's reader and writer: the leader writes its decision into the
//! `ApiGateRollout` object, takes operators' actions from it and publishes Events;
//! the other replicas read it and serve what it says.

use std::sync::Arc;
use std::time::Duration;

use apigate_control::source::kubernetes::rollout_record::{
    ActionResult, ApiGateRollout, RecordStore, RolloutRecord,
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
    /// How often the record is read (and written when it differs from the decision).
    pub period: Duration,
}

/// Run blocking controller work (it compiles and walks every route) off the runtime's
/// workers.
async fn blocking<T: Send + 'static>(
    rollout: &Arc<Rollout>,
    work: impl FnOnce(&Rollout) -> T + Send + 'static,
) -> Option<T> {
    let rollout = rollout.clone();
    tokio::task::spawn_blocking(move || work(&rollout))
        .await
        .ok()
}

/// Read or write the record every `period` and whenever this replica's routes or
/// leadership change, until `leader` closes. Readiness is set once the first full
/// configuration arrived and this replica serves the record's stable revision (or
/// there is no record yet, or it leads), so a new replica does not take traffic while
/// serving a revision the rollout has not promoted.
pub async fn share(
    rollout: Arc<Rollout>,
    sharing: Sharing,
    mut leader: watch::Receiver<bool>,
    readiness: Arc<Readiness>,
) {
    let mut changes = rollout.changes();
    let mut leading = false;
    let mut followed: Option<(RolloutRecord, bool)> = None;
    let mut unanswered: Option<ActionResult> = None;
    let mut ready = false;
    let mut routes_changed = true;
    loop {
        // Marked seen before the round: a change during it wakes the next one.
        routes_changed |= changes.has_changed().unwrap_or(false);
        changes.borrow_and_update();
        let lead = *leader.borrow_and_update();
        if leading && !lead {
            tracing::info!("no longer leading; following the rollout record");
            rollout.step_down(sharing.name.clone());
            leading = false;
        }
        let round = if lead {
            lead_round(&rollout, &sharing, &mut leading, &mut unanswered).await
        } else {
            follow_round(&rollout, &sharing, &mut followed, routes_changed).await
        };
        match round {
            Ok(serving) => {
                // Taken into account; a failed round keeps it for the next.
                routes_changed = false;
                if serving && !ready {
                    ready = true;
                    readiness.set(true);
                    tracing::info!("initial sync complete and rollout record applied; ready");
                }
            }
            Err(error) => tracing::warn!(%error, "rollout record not read or written"),
        }
        tokio::select! {
            () = tokio::time::sleep(sharing.period) => {}
            changed = leader.changed() => if changed.is_err() {
                rollout.step_down(sharing.name.clone());
                return;
            },
            _ = changes.changed() => routes_changed = true,
        }
    }
}

/// Lead: take an operator's action, publish Events, write the decision where the
/// object's status differs from it. Returns whether this replica leads.
async fn lead_round(
    rollout: &Arc<Rollout>,
    sharing: &Sharing,
    leading: &mut bool,
    unanswered: &mut Option<ActionResult>,
) -> Result<bool, kube::Error> {
    let object = sharing.store.get_or_create().await?;
    if !*leading {
        let status = object.status.clone();
        let name = sharing.name.clone();
        let took = blocking(rollout, move |r| r.lead(status.as_ref(), name)).await;
        if took != Some(true) {
            // Not synced yet: nothing to decide with.
            return Ok(false);
        }
        *leading = true;
    }
    if object.spec.action.is_some() {
        if let Some(answer) = take_action(rollout, sharing, &object).await? {
            *unanswered = Some(answer);
        }
    }
    // An action is taken once; its answer is written until that succeeds.
    if let Some(answer) = unanswered.take() {
        if let Err(error) = sharing.store.answer(answer.clone()).await {
            tracing::warn!(%error, "rollout action answer not written; retrying");
            *unanswered = Some(answer);
        }
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
    let identity = sharing.identity.clone();
    let Some(record) = blocking(rollout, move |r| r.record(&identity)).await else {
        return Ok(true);
    };
    // Against what the object holds, not what was last written: a deleted or
    // overwritten record is written again.
    let current = object.status.map(|mut s| {
        s.last_action = None;
        s
    });
    if current.as_ref() != Some(&record) {
        sharing.store.write(&record).await?;
    }
    Ok(true)
}

/// An operator's `spec.action`: cleared first (only the version read, so a newer
/// action is not lost), then taken, so it is never taken twice. Returns the answer to
/// write.
async fn take_action(
    rollout: &Arc<Rollout>,
    sharing: &Sharing,
    object: &ApiGateRollout,
) -> Result<Option<ActionResult>, kube::Error> {
    let Some(action) = object.spec.action else {
        return Ok(None);
    };
    if !sharing.store.clear_action(object).await? {
        // Changed meanwhile: the next read takes the newer one.
        return Ok(None);
    }
    let result = match blocking(rollout, move |r| r.act_from_record(action)).await {
        Some(Ok(())) => "Done".to_string(),
        Some(Err(e)) => e.to_string(),
        None => "internal error taking the action".to_string(),
    };
    tracing::info!(action = ?action, %result, "rollout action from the record");
    Ok(Some(ActionResult {
        action,
        result,
        time: Timestamp::now().to_string(),
    }))
}

/// Follow: serve what the record says. Returns whether this replica serves its stable
/// revision (or there is nothing recorded to serve).
async fn follow_round(
    rollout: &Arc<Rollout>,
    sharing: &Sharing,
    followed: &mut Option<(RolloutRecord, bool)>,
    routes_changed: bool,
) -> Result<bool, kube::Error> {
    let status = sharing.store.get().await?.and_then(|o| o.status);
    let Some(record) = status else {
        // No leader has written yet: serve this replica's own view.
        return Ok(rollout.synced());
    };
    // Only when the record or this replica's routes changed: rebuilding costs a pass
    // over every route.
    if let Some((seen, serving)) = followed.as_ref() {
        if *seen == record && !routes_changed {
            return Ok(*serving);
        }
    }
    let applied = record.clone();
    let serving = blocking(rollout, move |r| r.follow(&applied))
        .await
        .unwrap_or(false);
    *followed = Some((record, serving));
    Ok(serving)
}
