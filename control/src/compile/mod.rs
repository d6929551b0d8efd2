//! Compile objects into a [`Snapshot`]: a pure function, no I/O (a large compile spreads
//! over the cores; the result does not depend on how).
//!
//! Every problem in every object is reported in one pass. Nothing is published unless the
//! whole input is valid: a bad config never replaces a good one.

mod access_log;
mod flow;
mod gateway;
mod health;
mod rollout;
mod route;
mod sessions;
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
use crate::inputs::{FileContent, Inputs, Scope};
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
/// An entry is found by the route's namespace and name and holds everything its
/// compile read (the object, the files it references, the `GatewayConfig`, whether it
/// is alone in its namespace), which must all be equal for a hit; then the same
/// `Arc<Route>` is reused, so the proxy can keep what it derived from an unchanged
/// route too. Finding an unchanged route costs a comparison, not a hash of the object:
/// file contents are shared `Arc`s, compared by address first. Entries the last
/// compile did not use are kept for one more compile, then dropped: a caller
/// alternating between two sets of inputs (a rollout compiles the stable and the new
/// revision) finds both.
#[derive(Default)]
pub struct RouteCache {
    entries: HashMap<u64, CachedRoute>,
    /// Entries of the compile before the last one that the last one did not use.
    previous: HashMap<u64, CachedRoute>,
}

struct CachedRoute {
    object: Arc<crate::model::ApiServerRoute>,
    /// The referenced files' contents, in `route_files` order.
    files: Vec<Option<FileContent>>,
    gateway: u64,
    sole: bool,
    route: Option<Arc<crate::snapshot::Route>>,
    errors: Vec<ConfigError>,
}

impl CachedRoute {
    /// Whether compiling `object` now would read exactly what this entry was built from.
    fn fits(
        &self,
        object: &Arc<crate::model::ApiServerRoute>,
        files: &crate::inputs::Files,
        gateway: u64,
        sole: bool,
    ) -> bool {
        fn same(a: Option<&FileContent>, b: Option<&FileContent>) -> bool {
            match (a, b) {
                (Some(Ok(a)), Some(Ok(b))) => Arc::ptr_eq(a, b) || a == b,
                (a, b) => a == b,
            }
        }
        self.gateway == gateway
            && self.sole == sole
            && (Arc::ptr_eq(&self.object, object) || self.object == *object)
            && crate::inputs::route_files(object)
                .map(|path| files.get(path))
                .zip(&self.files)
                .all(|(now, then)| same(now, then.as_ref()))
    }
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

    /// The entry for `object` if it still fits, taken out of the cache (not copied):
    /// what is left unused becomes `previous`. An entry of the last compile that no
    /// longer fits is kept as `previous` too, for a caller alternating between two
    /// versions of a route.
    fn take(
        &mut self,
        key: u64,
        object: &Arc<crate::model::ApiServerRoute>,
        files: &crate::inputs::Files,
        gateway: u64,
        sole: bool,
        stale: &mut Vec<(u64, CachedRoute)>,
    ) -> Option<CachedRoute> {
        if let Some(entry) = self.entries.remove(&key) {
            if entry.fits(object, files, gateway, sole) {
                return Some(entry);
            }
            stale.push((key, entry));
        }
        self.previous
            .remove(&key)
            .filter(|entry| entry.fits(object, files, gateway, sole))
    }
}

/// Routes compiled at once, in order, on up to one thread per core: a first
/// configuration of thousands of terminating routes spends most of its time building
/// TLS configs, each independent of the others. A few routes (an ordinary change) are
/// compiled on the calling thread.
fn compile_routes(
    jobs: &[(&Arc<crate::model::ApiServerRoute>, bool)],
    files: &crate::inputs::Files,
    gateway: &gateway::CompiledGateway,
    gateway_key: u64,
) -> Vec<CachedRoute> {
    let one = |(object, sole): &(&Arc<crate::model::ApiServerRoute>, bool)| {
        let mut errors = Errors::default();
        let route = route::compile(object, files, gateway, *sole, &mut errors).map(Arc::new);
        CachedRoute {
            object: Arc::clone(object),
            files: crate::inputs::route_files(object)
                .map(|path| files.get(path).cloned())
                .collect(),
            gateway: gateway_key,
            sole: *sole,
            route,
            errors: errors.into_vec(),
        }
    };
    if jobs.len() < PARALLEL_FROM || cores() < 2 {
        return jobs.iter().map(one).collect();
    }
    let threads = cores();
    std::thread::scope(|scope| {
        let parts: Vec<_> = jobs
            .chunks(jobs.len().div_ceil(threads))
            .map(|part| {
                let work = move || part.iter().map(one).collect::<Vec<_>>();
                // A thread that cannot be started leaves its part to this one.
                std::thread::Builder::new()
                    .name("apigate-compile".into())
                    .spawn_scoped(scope, work)
                    .map_err(|_| part)
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| match part {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(part) => part.iter().map(one).collect(),
            })
            .collect()
    })
}

/// The cores this process may use (at most 8), asked of the OS once.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(8)))
}

/// Fewer routes to compile than this are compiled on the calling thread.
pub(crate) const PARALLEL_FROM: usize = 64;

/// Where a route's entry is kept: its namespace and name. Two routes whose keys
/// collide only miss the cache; a hit is always confirmed by [`CachedRoute::fits`].
fn cache_key(object: &crate::model::ApiServerRoute) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    object.metadata.namespace.hash(&mut hasher);
    object.metadata.name.hash(&mut hasher);
    hasher.finish()
}

/// [`compile`], reusing the routes in `cache` whose inputs did not change, and
/// leaving this compile's routes in it.
pub fn compile_cached(
    inputs: &Inputs,
    cache: &mut RouteCache,
) -> Result<Snapshot, Vec<ConfigError>> {
    let mut errors = Errors::default();
    let mut next = HashMap::with_capacity(cache.entries.len());
    let mut stale = Vec::new();

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

    // The default CONNECT destination names a namespace's kube-apiserver; it is only
    // unambiguous when the namespace holds one route.
    let mut per_namespace: HashMap<&str, usize> = HashMap::new();
    for object in &inputs.objects {
        if let Object::Route(route) = object {
            *per_namespace.entry(route::namespace_of(route)).or_default() += 1;
        }
    }
    // Each route on its own (from the cache where its inputs did not change)...
    let mut slots = Vec::new();
    if let Some(gateway) = gateway.as_ref() {
        for object in &inputs.objects {
            let Object::Route(object) = object else {
                continue;
            };
            let sole = per_namespace.get(route::namespace_of(object)) == Some(&1);
            let key = cache_key(object);
            let hit = cache.take(key, object, &inputs.files, gateway_key, sole, &mut stale);
            slots.push((key, object, sole, hit));
        }
        let missing: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].3.is_none()).collect();
        let jobs: Vec<_> = missing.iter().map(|&i| (slots[i].1, slots[i].2)).collect();
        let built = compile_routes(&jobs, &inputs.files, gateway, gateway_key);
        for (i, cached) in missing.into_iter().zip(built) {
            slots[i].3 = Some(cached);
        }
    }
    let mut resolved = Vec::with_capacity(slots.len());
    for (key, object, _, cached) in slots {
        let Some(cached) = cached else {
            continue;
        };
        resolved.push((object, cached.route.clone(), cached.errors.clone()));
        next.insert(key, cached);
    }
    // ...then against each other: the first to claim an id, hostname or destination
    // keeps it. The maps borrow from the routes and name the holder by its position;
    // object references are only built for an error.
    let mut ids: HashMap<&RouteId, usize> = HashMap::with_capacity(resolved.len());
    let mut hosts: HashMap<&str, usize> = HashMap::with_capacity(resolved.len());
    let mut destinations: HashMap<&str, usize> = HashMap::new();
    let mut routes = Vec::with_capacity(resolved.len());
    for (i, (object, route, route_errors)) in resolved.iter().enumerate() {
        errors.extend(route_errors.iter().cloned());
        let Some(route) = route else {
            continue;
        };
        let holder = |other: usize| resolved[other].0.object_ref().to_string();
        if let Some(&other) = ids.get(&route.id) {
            errors.push(
                &object.object_ref(),
                "metadata.name",
                Problem::Conflict {
                    value: route.id.to_string(),
                    other: holder(other),
                },
            );
            continue;
        }
        let mut conflict = false;
        for (h, host) in route.hostnames.iter().enumerate() {
            if let Some(&other) = hosts.get(host.as_str()) {
                errors.push(
                    &object.object_ref(),
                    format!("spec.hostnames[{h}]"),
                    Problem::Conflict {
                        value: host.clone(),
                        other: holder(other),
                    },
                );
                conflict = true;
            }
        }
        for destination in &route.destinations {
            if let Some(&other) = destinations.get(destination.as_str()) {
                errors.push(
                    &object.object_ref(),
                    "spec.destinations",
                    Problem::Conflict {
                        value: destination.clone(),
                        other: holder(other),
                    },
                );
                conflict = true;
            }
        }
        if conflict {
            continue;
        }
        for host in &route.hostnames {
            hosts.insert(host, i);
        }
        for destination in &route.destinations {
            destinations.insert(destination, i);
        }
        ids.insert(&route.id, i);
        routes.push(route.clone());
    }
    // What this compile did not use stays one more compile (a rollout's two views
    // share one cache).
    cache.previous = std::mem::replace(&mut cache.entries, next);
    cache.previous.extend(stale);
    if let (Some(gateway), Some(object), Scope::Whole) = (&gateway, gateways.first(), inputs.scope)
    {
        rollout::check_selection(
            &gateway.settings.rollout,
            inputs.objects.iter().filter_map(|o| match o {
                Object::Route(r) => Some(&**r),
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
