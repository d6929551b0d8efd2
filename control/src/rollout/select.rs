//! Which routes are canaries.

use std::collections::BTreeSet;

use super::{RolloutSettings, Selector};
use crate::error::Problem;
use crate::model::ApiServerRoute;
use crate::snapshot::RouteId;

/// The id a route object compiles to.
pub fn route_id(object: &ApiServerRoute) -> RouteId {
    RouteId {
        namespace: object.namespace().to_string(),
        name: object.metadata.name.clone(),
    }
}

/// The canary routes among `routes` under `selector`. A fraction picks the routes with
/// the lowest stable hashes of their ids, at least one: adding a route moves at most
/// one route in or out of the set, and every replica of apigate picks the same ones.
pub fn canaries<'a>(
    selector: &Selector,
    routes: impl Iterator<Item = &'a ApiServerRoute>,
) -> BTreeSet<RouteId> {
    match selector {
        Selector::Label(key) => routes
            .filter(|r| r.metadata.labels.get(key).map(String::as_str) == Some("true"))
            .map(route_id)
            .collect(),
        Selector::Fraction(fraction) => {
            let mut ranked: Vec<(u64, RouteId)> = routes
                .map(route_id)
                .map(|id| (stable_hash(&id), id))
                .collect();
            if ranked.is_empty() {
                return BTreeSet::new();
            }
            ranked.sort();
            // Rounded up: a fraction above 0 always selects a route.
            let wanted = ((ranked.len() as f64) * fraction.clamp(0.0, 1.0)).ceil() as usize;
            ranked
                .into_iter()
                .take(wanted.max(1))
                .map(|(_, id)| id)
                .collect()
        }
    }
}

/// A hash of `namespace/name` that every replica computes alike.
fn stable_hash(id: &RouteId) -> u64 {
    use std::hash::Hasher;
    let mut hash = crate::hashing::Fnv::default();
    hash.write(id.namespace.as_bytes());
    hash.write_u8(b'/');
    hash.write(id.name.as_bytes());
    hash.finish()
}

/// What is wrong with the canary selection of `settings` over `routes`, as the field
/// and the problem: with rollouts on it must leave routes on both sides. One that
/// matches nothing canaries nothing; one that matches everything protects nothing
/// (unless `allowAllRoutes`). A file is refused for it (compile); with the Kubernetes
/// source, where routes change under the gateway, the rollout controller freezes the
/// revision it cannot canary instead, so no team's route change blocks another's.
pub fn selection_problem<'a>(
    settings: &RolloutSettings,
    routes: impl Iterator<Item = &'a ApiServerRoute> + Clone,
) -> Option<(String, Problem)> {
    let total = routes.clone().count();
    if !settings.enabled || total == 0 {
        return None;
    }
    let chosen = canaries(&settings.canary, routes).len();
    let (field, value) = match &settings.canary {
        Selector::Label(key) => ("spec.rollout.canary.label", format!("{key}=true")),
        Selector::Fraction(f) => ("spec.rollout.canary.fraction", f.to_string()),
    };
    let reason = if chosen == 0 {
        format!("selects no route (of {total}); label at least one ApiServerRoute as a canary")
    } else if chosen == total && !settings.allow_all_routes {
        format!("selects every route ({total}), leaving none to protect; set canary.allowAllRoutes: true to accept that")
    } else {
        return None;
    };
    Some((field.to_string(), Problem::Invalid { value, reason }))
}
