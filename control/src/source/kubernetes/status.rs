//! `ApiServerRoute.status` and Events: what the operator sees with `kubectl get/describe`.
//!
//! Only the Lease holder writes. A status is written only when a condition's meaning
//! changed (not for a new timestamp), so N reconciles of an unchanged route write
//! nothing. A rejection also becomes a Warning Event, once per distinct message.

use std::collections::{BTreeMap, HashMap};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Client;

use super::crd::{ApiServerRoute, Condition, RouteStatus};
use super::reconcile::{RouteReport, Serving, Verdict};
use super::translate::Waiting;
use super::world::{ObjectKey, RouteObject};

/// Longest condition message written; the API allows 32 KiB, people read far less.
const MAX_MESSAGE: usize = 4096;
/// Event notes are limited to 1 KiB by the API.
const MAX_NOTE: usize = 1024;
/// Status writes in flight at once: enough to write thousands of statuses quickly
/// without flooding the API server.
const CONCURRENT_WRITES: usize = 8;

/// The status a report asks for, with `note`, the data plane's problem with the route
/// if any (health probes refused). Transition times are kept from `existing` for
/// conditions whose status did not change.
pub fn desired_status(
    report: &RouteReport,
    existing: Option<&RouteStatus>,
    now: &str,
    note: Option<&str>,
) -> RouteStatus {
    let generation = Some(report.generation);
    let (status, reason, message) = match &report.verdict {
        Verdict::Accepted => ("True", "Accepted", "serving this generation".to_string()),
        Verdict::Pending(Waiting::Secrets) => (
            "Unknown",
            "SecretsPending",
            "waiting for the first list of a referenced Secret".to_string(),
        ),
        Verdict::Pending(Waiting::AclExtensions) => (
            "Unknown",
            "AclExtensionsUnreadable",
            match report.serving {
                Serving::LastGood => "the acl Extensions cannot be read now; the last accepted version (and its allowlist) keeps serving",
                Serving::Current | Serving::Nothing => "the acl Extensions cannot be read now; not serving until they can",
            }
            .to_string(),
        ),
        Verdict::Rejected { reason, errors } => {
            let problems: Vec<String> = errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.problem))
                .collect();
            let serving = match report.serving {
                Serving::LastGood => "the last accepted version keeps serving",
                Serving::Current | Serving::Nothing => "not serving",
            };
            (
                "False",
                *reason,
                truncate(format!("{}; {serving}", problems.join("; ")), MAX_MESSAGE),
            )
        }
    };
    let accepted = condition("Accepted", status, reason, message, generation);
    let ready = report.ready_endpoints;
    let mut backends_message = format!("{ready} ready endpoint(s)");
    if report.unready_endpoints > 0 {
        backends_message.push_str(&format!(
            ", {} terminating or not ready",
            report.unready_endpoints
        ));
    }
    let backends = if ready > 0 {
        condition(
            "BackendsReady",
            "True",
            "EndpointsReady",
            backends_message,
            generation,
        )
    } else {
        condition(
            "BackendsReady",
            "False",
            "NoReadyEndpoints",
            backends_message,
            generation,
        )
    };
    let health = match note {
        Some(problem) => condition(
            "HealthChecks",
            "False",
            "ProbeUnauthorized",
            truncate(problem.to_string(), MAX_MESSAGE),
            generation,
        ),
        None => condition(
            "HealthChecks",
            "True",
            "NoProblem",
            "health probes are answered, or checks are off".into(),
            generation,
        ),
    };
    let conditions = [accepted, backends, health]
        .into_iter()
        .map(|mut c| {
            let old = existing.and_then(|s| s.conditions.iter().find(|o| o.type_ == c.type_));
            c.last_transition_time = match old {
                Some(old) if old.status == c.status => old.last_transition_time.clone(),
                _ => now.to_string(),
            };
            c
        })
        .collect();
    RouteStatus {
        observed_generation: generation,
        conditions,
    }
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: String::new(),
        observed_generation,
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max.saturating_sub(3);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

/// Writes status and Events for the routes whose outcome changed.
pub struct StatusWriter {
    client: Client,
    recorder: Recorder,
    /// What this writer last wrote per route: fresher than the watched status, which
    /// lags our own writes, so a write is never repeated while its echo is in flight.
    written: HashMap<ObjectKey, RouteStatus>,
    /// The rejection message last announced per route, so an Event is published once
    /// per distinct problem rather than on every reconcile.
    announced: HashMap<ObjectKey, String>,
}

/// Counts of one write pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    /// Statuses written.
    pub written: usize,
    /// Status writes that failed (retried on the next pass).
    pub failed: usize,
    /// Events published.
    pub events: usize,
}

impl StatusWriter {
    /// A writer reporting as `controller` / `instance` (the pod name).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        let reporter = Reporter {
            controller: controller.into(),
            instance: Some(instance.into()),
        };
        StatusWriter {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            written: HashMap::new(),
            announced: HashMap::new(),
        }
    }

    /// Forget what this writer wrote: after a leadership change another replica may
    /// have written since, so compare with the watched status again.
    pub fn forget(&mut self) {
        self.written.clear();
    }

    /// Bring every route's status in line with its report. `live` holds the routes
    /// as currently watched (their status as written); `routes` supplies the
    /// references for Events.
    pub async fn write(
        &mut self,
        routes: &BTreeMap<ObjectKey, std::sync::Arc<RouteObject>>,
        live: &BTreeMap<ObjectKey, std::sync::Arc<RouteObject>>,
        reports: &BTreeMap<ObjectKey, RouteReport>,
        notes: &BTreeMap<ObjectKey, String>,
    ) -> WriteCounts {
        let now = Timestamp::now().to_string();
        let mut counts = WriteCounts::default();
        let mut patches = Vec::new();
        let mut events = Vec::new();
        self.written.retain(|k, _| reports.contains_key(k));
        self.announced.retain(|k, _| reports.contains_key(k));
        for (key, report) in reports {
            let Some(watched) = live.get(key) else {
                continue; // deleted since the reconcile
            };
            let existing = self.written.get(key).or(watched.status.as_ref());
            let desired =
                desired_status(report, existing, &now, notes.get(key).map(String::as_str));
            if !same_meaning(existing, &desired) {
                patches.push((key.clone(), desired.clone()));
            }
            let message = accepted_message(&desired);
            let already_said = existing.is_some_and(|e| {
                accepted_status(e) == Some("False") && accepted_message(e) == message
            });
            match &report.verdict {
                Verdict::Rejected { reason, .. } => {
                    // Once per distinct problem: not again when this writer (or the
                    // leader before it, whose status says so) already announced it.
                    if self.announced.get(key) != Some(&message) && !already_said {
                        events.push((key.clone(), EventType::Warning, *reason, message));
                    }
                }
                Verdict::Accepted => {
                    if accepted_status_of(existing) == Some("False") {
                        events.push((
                            key.clone(),
                            EventType::Normal,
                            "Accepted",
                            "the route is valid again and serves its current generation".into(),
                        ));
                    }
                }
                Verdict::Pending(_) => {}
            }
        }

        let client = &self.client;
        let results: Vec<(ObjectKey, RouteStatus, bool)> = futures_util::stream::iter(patches)
            .map(|(key, status)| async move {
                let api = Api::<ApiServerRoute>::namespaced(client.clone(), &key.namespace);
                let body = serde_json::json!({ "status": status });
                let ok = match api
                    .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
                {
                    Ok(_) => true,
                    Err(error) => {
                        tracing::warn!(route = %key, %error, "status write failed; retried");
                        false
                    }
                };
                (key, status, ok)
            })
            .buffer_unordered(CONCURRENT_WRITES)
            .collect()
            .await;
        for (key, status, ok) in results {
            if ok {
                counts.written += 1;
                self.written.insert(key, status);
            } else {
                counts.failed += 1;
            }
        }

        for (key, type_, reason, note) in events {
            let Some(route) = routes.get(&key) else {
                continue;
            };
            let event = Event {
                type_,
                reason: reason.into(),
                note: Some(truncate(note.clone(), MAX_NOTE)),
                action: "Reconcile".into(),
                secondary: None,
            };
            match self.recorder.publish(&event, &reference(&key, route)).await {
                Ok(()) => {
                    counts.events += 1;
                    if type_ == EventType::Warning {
                        self.announced.insert(key, note);
                    } else {
                        self.announced.remove(&key);
                    }
                }
                Err(error) => tracing::warn!(route = %key, %error, "event not published"),
            }
        }
        counts
    }
}

fn accepted(status: &RouteStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Accepted")
}

fn accepted_status(status: &RouteStatus) -> Option<&str> {
    accepted(status).map(|c| c.status.as_str())
}

fn accepted_status_of(status: Option<&RouteStatus>) -> Option<&str> {
    status.and_then(accepted_status)
}

fn accepted_message(status: &RouteStatus) -> String {
    accepted(status)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

/// Equal except for transition times: nothing worth a write.
pub fn same_meaning(existing: Option<&RouteStatus>, desired: &RouteStatus) -> bool {
    let Some(existing) = existing else {
        return false;
    };
    let strip = |s: &RouteStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time.clear();
        }
        s
    };
    strip(existing) == strip(desired)
}

fn reference(key: &ObjectKey, route: &RouteObject) -> ObjectReference {
    ObjectReference {
        api_version: Some("apigate.dev/v1alpha1".into()),
        kind: Some("ApiServerRoute".into()),
        name: Some(key.name.clone()),
        namespace: Some(key.namespace.clone()),
        uid: Some(route.uid.clone()).filter(|u| !u.is_empty()),
        resource_version: Some(route.resource_version.clone()).filter(|v| !v.is_empty()),
        ..ObjectReference::default()
    }
}
