//! Revisions shared between apigate replicas: a content id for a revision of policy,
//! and the routes where the stable revision differs from the newest one.
//!
//! In Kubernetes mode every replica sees the same routes, but not the same sequence of
//! revisions, and a replica that starts during a rollout never saw the stable one. The
//! leader therefore records revisions by content ([`Desired::revision`]) and writes down
//! the stable revision as the newest one plus [`Overrides`]: each route where the two
//! differ, with its stable policy. Any replica rebuilds the stable revision from what
//! it sees now with [`Desired::with_overrides`] and checks it against the recorded id.

use std::collections::BTreeMap;

use crate::model::ApiServerRoute;
use crate::snapshot::RouteId;

use super::Desired;

/// Routes whose stable policy differs from the newest revision's: the stable version,
/// or `None` where the stable revision does not have the route.
pub type Overrides = BTreeMap<RouteId, Option<ApiServerRoute>>;

/// FNV-1a: the same on every build and every replica, unlike the standard library's
/// hasher. Not a security boundary: it names revisions, it does not authenticate them.
pub(super) fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A route's policy as compared between revisions: the spec without replicas, the
/// metadata without labels and annotations (which do not roll out).
fn policy_json(route: &ApiServerRoute) -> serde_json::Value {
    let mut value = serde_json::to_value(route).unwrap_or(serde_json::Value::Null);
    if let Some(spec) = value.get_mut("spec").and_then(|s| s.as_object_mut()) {
        spec.remove("backends");
    }
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("labels");
        meta.remove("annotations");
    }
    value
}

impl Desired {
    /// A content id of the routes' policy (16 hex digits): equal on every replica for
    /// equal route specs, whatever replicas, file contents or labels the routes have.
    /// The gateway is left out: in Kubernetes mode each replica reads it from its own
    /// file, which rolls with the Deployment, not with this rollout.
    pub fn revision(&self) -> String {
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|(id, route)| (id.to_string(), policy_json(route)))
            .collect();
        let text = serde_json::json!(routes).to_string();
        format!("{:016x}", fnv1a(text.into_bytes()))
    }

    /// Where `self` (the stable revision) differs from `newest`: what a replica that
    /// knows only `newest` needs to rebuild `self`. The gateway is not included; every
    /// replica reads it from its own file.
    pub fn overrides(&self, newest: &Desired) -> Overrides {
        let mut out = Overrides::new();
        for (id, route) in &self.routes {
            let same = newest
                .routes
                .get(id)
                .is_some_and(|n| policy_json(n) == policy_json(route));
            if !same {
                out.insert(id.clone(), Some(route.clone()));
            }
        }
        for id in newest.routes.keys() {
            if !self.routes.contains_key(id) {
                out.insert(id.clone(), None);
            }
        }
        out
    }

    /// `newest` with `overrides` applied: the stable revision rebuilt. A route kept
    /// from an override keeps its recorded replicas unless `newest` has the route, whose
    /// current replicas it takes (replicas always apply at once).
    pub fn with_overrides(newest: &Desired, overrides: &Overrides) -> Desired {
        let mut out = newest.clone();
        for (id, route) in overrides {
            match route {
                Some(route) => {
                    let mut route = route.clone();
                    if let Some(now) = newest.routes.get(id) {
                        route.spec.backends = now.spec.backends.clone();
                        route.metadata.labels = now.metadata.labels.clone();
                    }
                    out.routes.insert(id.clone(), route);
                }
                None => {
                    out.routes.remove(id);
                }
            }
        }
        out
    }
}
