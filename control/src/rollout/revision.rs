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

use std::hash::Hasher;

use crate::hashing::{hash_serialized, Fnv};
use crate::model::ApiServerRoute;
use crate::snapshot::RouteId;

use super::Desired;

/// Routes whose stable policy differs from the newest revision's: the stable version,
/// or `None` where the stable revision does not have the route.
pub type Overrides = BTreeMap<RouteId, Option<ApiServerRoute>>;

impl Desired {
    /// A content id of the routes' policy (16 hex digits): equal on every replica for
    /// equal route specs, whatever replicas, file contents or labels the routes have
    /// (exactly the fields [`Desired::diff`] compares). The gateway is left out: in
    /// Kubernetes mode each replica reads it from its own file, which rolls with the
    /// Deployment, not with this rollout. Computed once per revision.
    pub fn revision(&self) -> String {
        self.id
            .get_or_init(|| {
                let mut hash = Fnv::default();
                for (id, route) in &self.routes {
                    let s = &route.spec;
                    let policy = (
                        &id.namespace,
                        &id.name,
                        &s.hostnames,
                        &s.mode,
                        &s.tls,
                        &s.upstream,
                        &s.balancing,
                        &s.access_control,
                        &s.acl,
                        &s.always_allowed_cidrs,
                        &s.destinations,
                        &s.health,
                    );
                    hash_serialized(&mut hash, &policy);
                    // Only when set, so the revisions of routes without it keep the ids
                    // they had before the field existed.
                    if let Some(flow) = &s.flow_control {
                        hash_serialized(&mut hash, flow);
                    }
                    hash.write_u8(b'\n');
                }
                format!("{:016x}", hash.finish())
            })
            .clone()
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
                .is_some_and(|n| super::diff::route_fields(n, route).is_empty());
            if !same {
                out.insert(id.clone(), Some((**route).clone()));
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
        out.changed();
        for (id, route) in overrides {
            match route {
                Some(route) => {
                    let mut route = route.clone();
                    if let Some(now) = newest.routes.get(id) {
                        route.spec.backends = now.spec.backends.clone();
                        route.metadata.labels = now.metadata.labels.clone();
                    }
                    out.routes.insert(id.clone(), std::sync::Arc::new(route));
                }
                None => {
                    out.routes.remove(id);
                }
            }
        }
        out
    }
}
