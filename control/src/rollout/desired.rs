//! One revision of desired policy, and the inputs that serve it with what always
//! applies at once.
//!
//! A revision's *policy* is what an operator wrote: the `GatewayConfig` and every
//! route's spec. What never waits for a rollout is kept apart: a route's replicas
//! (endpoints) and the contents of the files it references (certificates, CAs, keys,
//! tokens, Secrets), so that a rotation reaches every route at once whichever revision
//! of its policy it serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::inputs::{Files, Inputs};
use crate::model::{ApiServerRoute, GatewayConfig, Object};
use crate::snapshot::RouteId;

use super::route_id;

/// The policy of one revision.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub(super) gateway: Option<GatewayConfig>,
    pub(super) routes: BTreeMap<RouteId, Arc<ApiServerRoute>>,
    /// Its content id, once computed ([`Desired::revision`]); reset by every change.
    pub(super) id: std::sync::OnceLock<String>,
}

impl PartialEq for Desired {
    fn eq(&self, other: &Desired) -> bool {
        self.gateway == other.gateway && self.routes == other.routes
    }
}

impl Desired {
    /// The policy `inputs` carry.
    pub fn of(inputs: &Inputs) -> Desired {
        let mut desired = Desired::default();
        for object in &inputs.objects {
            match object {
                Object::Gateway(g) if desired.gateway.is_none() => {
                    desired.gateway = Some(g.clone())
                }
                Object::Gateway(_) => {}
                Object::Route(r) => {
                    desired.routes.insert(route_id(r), r.clone());
                }
            }
        }
        desired
    }

    /// Forget the content id: the routes changed.
    pub(super) fn changed(&mut self) {
        self.id = std::sync::OnceLock::new();
    }

    /// Its route objects.
    pub fn routes(&self) -> impl Iterator<Item = &ApiServerRoute> + Clone {
        self.routes.values().map(|r| &**r)
    }

    /// Inputs that serve this policy with what applies at once taken from `live` (the
    /// source's newest inputs): each route's replicas, the file contents (falling back
    /// to `fallback` for files only this policy references), and the gateway settings
    /// that never roll out (listeners, admin, the rollout settings themselves, the
    /// allowlist size limit).
    pub fn stage(&self, live: &Inputs, fallback: &Files) -> Inputs {
        let live_desired = Desired::of(live);
        let mut objects = Vec::with_capacity(self.routes.len() + 1);
        if let Some(gateway) = &self.gateway {
            let mut gateway = gateway.clone();
            if let Some(now) = &live_desired.gateway {
                at_once_from(&mut gateway, now);
            }
            objects.push(Object::Gateway(gateway));
        }
        for (id, route) in &self.routes {
            let mut route = route.clone();
            if let Some(now) = live_desired.routes.get(id) {
                if now.spec.backends != route.spec.backends {
                    Arc::make_mut(&mut route).spec.backends = now.spec.backends.clone();
                }
            }
            objects.push(Object::Route(route));
        }
        let mut files = fallback.clone();
        files.extend(live.files.iter().map(|(k, v)| (k.clone(), v.clone())));
        Inputs {
            objects,
            scope: live.scope,
            files,
        }
    }
}

/// Copy into `gateway` the settings of `now` that apply at once.
fn at_once_from(gateway: &mut GatewayConfig, now: &GatewayConfig) {
    gateway.spec.listeners = now.spec.listeners.clone();
    gateway.spec.admin = now.spec.admin.clone();
    gateway.spec.rollout = now.spec.rollout.clone();
    gateway.spec.access.max_cidrs_per_route = now.spec.access.max_cidrs_per_route;
    // Per connection, not per route: nothing to try on canaries first.
    gateway.spec.http2 = now.spec.http2.clone();
    gateway.spec.connections = now.spec.connections.clone();
}
