//! The snapshot served during a canary stage: canary routes from the new revision,
//! every other route and the gateway-wide settings from the previous one.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::{ConfigError, ObjectRef, Problem};
use crate::snapshot::{Route, RouteId, Snapshot};

/// Combine `stable` (every route but the canaries, and the gateway settings) with
/// `target` (the canaries). A route the target removed is gone from the canaries; one
/// it added is served only if it is a canary. Fails when the two halves claim the same
/// hostname or destination (for example a hostname moved from a canary route to
/// another route): such a revision cannot be staged and must be promoted or
/// withdrawn as a whole.
pub fn merge(
    stable: &Snapshot,
    target: &Snapshot,
    canaries: &BTreeSet<RouteId>,
) -> Result<Snapshot, Vec<ConfigError>> {
    let routes: Vec<Arc<Route>> = stable
        .routes
        .iter()
        .filter(|r| !canaries.contains(&r.id))
        .chain(target.routes.iter().filter(|r| canaries.contains(&r.id)))
        .cloned()
        .collect();
    let mut errors = Vec::new();
    let mut hosts: HashMap<&str, &RouteId> = HashMap::new();
    let mut destinations: HashMap<&str, &RouteId> = HashMap::new();
    for route in &routes {
        let object = ObjectRef::Named {
            kind: "ApiServerRoute".into(),
            namespace: route.id.namespace.clone(),
            name: route.id.name.clone(),
        };
        for (field, values, seen) in [
            ("spec.hostnames", &route.hostnames, &mut hosts),
            ("spec.destinations", &route.destinations, &mut destinations),
        ] {
            for value in values {
                if let Some(other) = seen.insert(value, &route.id) {
                    errors.push(ConfigError::new(
                        object.clone(),
                        field,
                        Problem::Conflict {
                            value: value.clone(),
                            other: format!(
                                "ApiServerRoute {other} while only the canary routes run the new revision"
                            ),
                        },
                    ));
                }
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Snapshot::new(stable.gateway.clone(), routes))
}
