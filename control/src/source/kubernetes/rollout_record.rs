//! The `ApiGateRollout` object: the one record of a gateway's configuration rollout,
//! which every apigate replica applies.
//!
//! The replica holding the Lease decides (its gates, its clock) and writes `status`;
//! the others read it and serve what it says. Operators act by setting `spec.action`,
//! which the leader takes, answers in `status.lastAction`, and clears: who may act is
//! decided by RBAC on the object. Events on the object mark promotions, freezes,
//! resumptions and aborts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, CustomResource, Resource};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::model::ApiServerRoute;
use crate::rollout::Overrides;
use crate::snapshot::RouteId;

/// Spec of the `ApiGateRollout` custom resource (`apigate.dev/v1alpha1`): what an
/// operator asks for.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "apigate.dev",
    version = "v1alpha1",
    kind = "ApiGateRollout",
    namespaced,
    status = "RolloutRecord",
    shortname = "agr",
    category = "apigate",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Stable","type":"string","jsonPath":".status.stableRevision"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetRevision"}"#,
    printcolumn = r#"{"name":"Leader","type":"string","jsonPath":".status.leader"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutControl {
    /// `Resume` (a frozen rollout bakes again, a held one is promoted), `Abort` (the
    /// pending revision is withdrawn) or `Promote` (it goes to every route now). The
    /// leader takes it once, answers in `status.lastAction`, and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<RolloutAction>,
}

/// An operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum RolloutAction {
    /// Go on.
    Resume,
    /// Withdraw the pending revision.
    Abort,
    /// Promote the pending revision now.
    Promote,
}

/// `status` of an `ApiGateRollout`: the rollout as the leader decided it. Absent
/// fields are written as `null` so that a merge patch clears them (all but
/// `lastAction`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// `Idle`, `Baking`, `Held` or `Frozen`.
    #[serde(default)]
    pub phase: String,
    /// The replica that decided (the Lease holder).
    #[serde(default)]
    pub leader: String,
    /// Content id of the policy every non-canary route serves.
    #[serde(default)]
    pub stable_revision: String,
    /// Content id of the revision being rolled out.
    #[serde(default)]
    pub target_revision: Option<String>,
    /// Its canary routes (`namespace/name`).
    #[serde(default)]
    pub canaries: Vec<String>,
    /// Why it is frozen or held.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the phase began (RFC 3339).
    #[serde(default)]
    pub since: Option<String>,
    /// While baking: when passing gates promote the target (RFC 3339). A new leader
    /// continues to the same deadline.
    #[serde(default)]
    pub deadline: Option<String>,
    /// The limit a bake may be extended to (RFC 3339).
    #[serde(default)]
    pub limit: Option<String>,
    /// Routes whose stable policy differs from the newest routes: what a replica needs
    /// to serve the stable revision.
    #[serde(default)]
    pub stable_routes: Vec<StableRoute>,
    /// Content id of a revision an operator aborted that the routes still hold: a new
    /// leader keeps it withdrawn.
    #[serde(default)]
    pub aborted_revision: Option<String>,
    /// The last operator action taken from `spec.action` (written on its own; a
    /// leader's decision leaves it as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_action: Option<ActionResult>,
}

/// One route's stable policy while a rollout is in progress.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableRoute {
    /// Namespace of the route.
    pub namespace: String,
    /// Name of the route.
    pub name: String,
    /// The route as the stable revision has it; absent when the stable revision does
    /// not have the route.
    #[serde(default)]
    #[schemars(schema_with = "any_object")]
    pub route: Option<serde_json::Value>,
}

/// How the leader answered an operator's action.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionResult {
    /// The action.
    pub action: RolloutAction,
    /// `Done`, or why it did not apply.
    pub result: String,
    /// When (RFC 3339).
    pub time: String,
}

/// A free-form object in a structural schema.
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Why recorded overrides cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("status.stableRoutes: {namespace}/{name}: {message}")]
pub struct BadStableRoute {
    /// Namespace of the entry.
    pub namespace: String,
    /// Name of the entry.
    pub name: String,
    /// What is wrong.
    pub message: String,
}

/// The record's form of `overrides`.
pub fn stable_routes(overrides: &Overrides) -> Vec<StableRoute> {
    overrides
        .iter()
        .map(|(id, route)| StableRoute {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            route: route.as_ref().and_then(|r| serde_json::to_value(r).ok()),
        })
        .collect()
}

/// The overrides a record holds.
pub fn overrides(record: &RolloutRecord) -> Result<Overrides, BadStableRoute> {
    let mut out = BTreeMap::new();
    for entry in &record.stable_routes {
        let route = match &entry.route {
            None => None,
            Some(value) => Some(
                serde_json::from_value::<ApiServerRoute>(value.clone()).map_err(|e| {
                    BadStableRoute {
                        namespace: entry.namespace.clone(),
                        name: entry.name.clone(),
                        message: e.to_string(),
                    }
                })?,
            ),
        };
        let id = RouteId {
            namespace: entry.namespace.clone(),
            name: entry.name.clone(),
        };
        out.insert(id, route);
    }
    Ok(out)
}

/// Reads and writes one `ApiGateRollout`, and publishes its Events.
pub struct RecordStore {
    api: Api<ApiGateRollout>,
    name: String,
    recorder: Recorder,
}

impl RecordStore {
    /// The object `name` in `namespace`; Events are reported as `controller` and
    /// `instance`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        controller: &str,
        instance: &str,
    ) -> RecordStore {
        let reporter = Reporter {
            controller: controller.into(),
            instance: Some(instance.into()),
        };
        RecordStore {
            api: Api::namespaced(client.clone(), namespace),
            name: name.into(),
            recorder: Recorder::new(client, reporter),
        }
    }

    /// The object, if it exists.
    pub async fn get(&self) -> Result<Option<ApiGateRollout>, kube::Error> {
        self.api.get_opt(&self.name).await
    }

    /// The object, created empty if absent (the leader does this).
    pub async fn get_or_create(&self) -> Result<ApiGateRollout, kube::Error> {
        if let Some(object) = self.get().await? {
            return Ok(object);
        }
        let object = ApiGateRollout::new(&self.name, RolloutControl::default());
        match self.api.create(&PostParams::default(), &object).await {
            Ok(created) => Ok(created),
            Err(kube::Error::Api(e)) if e.code == 409 => self.api.get(&self.name).await,
            Err(e) => Err(e),
        }
    }

    /// Replace the status with `record`.
    pub async fn write(&self, record: &RolloutRecord) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "status": record });
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    /// Ask the leader for `action`: what `kubectl patch` of `spec.action` does.
    pub async fn request(&self, action: RolloutAction) -> Result<(), kube::Error> {
        let patch = serde_json::json!({ "spec": { "action": action } });
        self.api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(drop)
    }

    /// Clear `spec.action` of the version `seen`, not a newer one an operator set
    /// meanwhile: `false` on that conflict (the newer one is taken on the next read).
    pub async fn clear_action(&self, seen: &ApiGateRollout) -> Result<bool, kube::Error> {
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": seen.metadata.resource_version },
            "spec": { "action": null },
        });
        match self
            .api
            .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Answer an action in `status.lastAction`.
    pub async fn answer(&self, answer: ActionResult) -> Result<(), kube::Error> {
        let status = serde_json::json!({ "status": { "lastAction": answer } });
        self.api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(drop)
    }

    /// A Kubernetes Event on the object: `reason` such as `Promoted`, and a note.
    pub async fn event(
        &self,
        object: &ApiGateRollout,
        warning: bool,
        reason: &str,
        note: String,
    ) -> Result<(), kube::Error> {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Rollout".into(),
            secondary: None,
        };
        self.recorder.publish(&event, &reference(object)).await
    }
}

fn reference(object: &ApiGateRollout) -> ObjectReference {
    let mut reference = object.object_ref(&());
    reference.resource_version = None;
    reference
}

/// The CRD as YAML, exactly as checked in under `manifests/crd/`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    super::crd::render(
        &ApiGateRollout::crd(),
        "control/src/source/kubernetes/rollout_record.rs",
    )
}
