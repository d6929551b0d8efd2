//! Compile objects into a [`Snapshot`]: a pure function, no I/O.
//!
//! Every problem in every object is reported in one pass. Nothing is published unless the
//! whole input is valid: a bad config never replaces a good one.

mod gateway;
mod health;
mod rollout;
mod route;
mod setting;
mod tls;

pub use gateway::{
    DEFAULT_DESTINATION_HEADER, DEFAULT_MAX_CIDRS_PER_ROUTE, DEFAULT_MAX_REQUEST_HEADER_BYTES,
};
pub use route::{default_destination, DEFAULT_UPSTREAM_SERVER_NAME};
pub use tls::{provider, ALPN};

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ConfigError, Errors, ObjectRef, Problem};
use crate::inputs::{Inputs, Scope};
use crate::model::Object;
use crate::snapshot::{RouteId, Snapshot};

/// Compile inputs into a snapshot, or return every error found.
pub fn compile(inputs: &Inputs) -> Result<Snapshot, Vec<ConfigError>> {
    compile_cached(inputs, &mut RouteCache::default())
}

/// The routes of the previous compile, so that a source compiling often (the
/// Kubernetes source, after every change) rebuilds only the routes whose inputs
/// changed: parsing certificates and building TLS configs is most of compile's cost.
///
/// An entry is keyed by everything a route's compile reads (the object, the bytes of
/// the files it references, the `GatewayConfig`, whether it is alone in its
/// namespace) and holds the same `Arc<Route>`, so the proxy can keep what it derived
/// from an unchanged route too. Entries the last compile did not use are kept for one
/// more compile, then dropped: a caller alternating between two sets of inputs (a
/// rollout compiles the stable and the new revision) finds both.
#[derive(Default)]
pub struct RouteCache {
    entries: HashMap<u64, CachedRoute>,
    /// Entries of the compile before the last one that the last one did not use.
    previous: HashMap<u64, CachedRoute>,
}

#[derive(Clone)]
struct CachedRoute {
    object: crate::model::ApiServerRoute,
    route: Option<Arc<crate::snapshot::Route>>,
    errors: Vec<ConfigError>,
}

impl RouteCache {
    /// Routes held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn cache_key(
    object: &crate::model::ApiServerRoute,
    files: &crate::inputs::Files,
    gateway: u64,
    sole: bool,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // The object as serialized, straight into the hasher (a match is confirmed by
    // comparing the objects).
    crate::hashing::hash_serialized(&mut hasher, object);
    for path in crate::inputs::route_files(object) {
        path.hash(&mut hasher);
        files.get(path).hash(&mut hasher);
    }
    gateway.hash(&mut hasher);
    sole.hash(&mut hasher);
    hasher.finish()
}

/// [`compile`], reusing the routes in `cache` whose inputs did not change, and
/// leaving this compile's routes in it.
pub fn compile_cached(
    inputs: &Inputs,
    cache: &mut RouteCache,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let mut next = HashMap::new();

    let gateways: Vec<_> = inputs
        .objects
        .iter()
        .filter_map(|o| match o {
            Object::Gateway(g) => Some(g),
            Object::Route(_) => None,
        })
        .collect();
    let gateway_key = {
        use std::hash::Hasher;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        if let Some(g) = gateways.first() {
            crate::hashing::hash_serialized(&mut hasher, g);
        }
        hasher.finish()
    };
    let gateway = match gateways.as_slice() {
        [] => {
            errors.push(
                &ObjectRef::Config,
                "",
                Problem::Missing("exactly one GatewayConfig object"),
            );
            None
        }
        [one] => gateway::compile(one, &inputs.files, &mut errors),
        [first, second, ..] => {
            errors.push(
                &second.object_ref(),
                "",
                Problem::Conflict {
                    value: "GatewayConfig".into(),
                    other: first.object_ref().to_string(),
                },
            );
            None
        }
    };

    let mut routes = Vec::new();
    let mut ids: HashMap<RouteId, ObjectRef> = HashMap::new();
    let mut hosts: HashMap<String, ObjectRef> = HashMap::new();
    let mut destinations: HashMap<String, ObjectRef> = HashMap::new();
    // The default CONNECT destination names a namespace's kube-apiserver; it is only
    // unambiguous when the namespace holds one route.
    let mut per_namespace: HashMap<&str, usize> = HashMap::new();
    for object in &inputs.objects {
        if let Object::Route(route) = object {
            *per_namespace.entry(route::namespace_of(route)).or_default() += 1;
        }
    }
    for object in &inputs.objects {
        let Object::Route(object) = object else {
            continue;
        };
        let Some(gateway) = gateway.as_ref() else {
            continue;
        };
        let object_ref = object.object_ref();
        let sole = per_namespace.get(route::namespace_of(object)) == Some(&1);
        let key = cache_key(object, &inputs.files, gateway_key, sole);
        // Taken out of the cache, not copied: what is left unused becomes `previous`.
        let hit = cache
            .entries
            .remove(&key)
            .or_else(|| cache.previous.remove(&key));
        let cached = match hit {
            Some(hit) if hit.object == *object => hit,
            _ => {
                let mut route_errors = Errors::default();
                let route = route::compile(object, &inputs.files, gateway, sole, &mut route_errors)
                    .map(Arc::new);
                CachedRoute {
                    object: object.clone(),
                    route,
                    errors: route_errors.into_vec(),
                }
            }
        };
        errors.extend(cached.errors.iter().cloned());
        let route = cached.route.clone();
        next.insert(key, cached);
        let Some(route) = route else {
            continue;
        };
        if let Some(other) = ids.get(&route.id) {
            errors.push(
                &object_ref,
                "metadata.name",
                Problem::Conflict {
                    value: route.id.to_string(),
                    other: other.to_string(),
                },
            );
            continue;
        }
        let mut conflict = false;
        for (i, host) in route.hostnames.iter().enumerate() {
            if let Some(other) = hosts.get(host) {
                errors.push(
                    &object_ref,
                    format!("spec.hostnames[{i}]"),
                    Problem::Conflict {
                        value: host.clone(),
                        other: other.to_string(),
                    },
                );
                conflict = true;
            }
        }
        for destination in &route.destinations {
            if let Some(other) = destinations.get(destination) {
                errors.push(
                    &object_ref,
                    "spec.destinations",
                    Problem::Conflict {
                        value: destination.clone(),
                        other: other.to_string(),
                    },
                );
                conflict = true;
            }
        }
        if conflict {
            continue;
        }
        for host in &route.hostnames {
            hosts.insert(host.clone(), object_ref.clone());
        }
        for destination in &route.destinations {
            destinations.insert(destination.clone(), object_ref.clone());
        }
        ids.insert(route.id.clone(), object_ref);
        routes.push(route);
    }
    // What this compile did not use stays one more compile (a rollout's two views
    // share one cache).
    cache.previous = std::mem::replace(&mut cache.entries, next);
    if let (Some(gateway), Some(object), Scope::Whole) = (&gateway, gateways.first(), inputs.scope)
    {
        rollout::check_selection(
            &gateway.settings.rollout,
            inputs.objects.iter().filter_map(|o| match o {
                Object::Route(r) => Some(r),
                Object::Gateway(_) => None,
            }),
            &object.object_ref(),
            &mut errors,
        );
    }

    match gateway {
        Some(gateway) if errors.is_empty() => Ok(Snapshot::new(gateway.settings, routes)),
        _ => Err(errors.into_vec()),
    }
}

#[cfg(test)]
mod tests;
