//! From the watched world to a snapshot, one route's mistake at a time.
//!
//! The file source is all-or-nothing: a bad file changes nothing. In a cluster, routes
//! belong to different teams, so a bad route must not hold the others back: each route
//! is accepted or rejected on its own, and a rejected route keeps serving its last
//! accepted version (with the current endpoints). Pure: no I/O, so every rule here is
//! tested without a cluster.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::translate::{claimed_host, crd_field, route_ref, translate, Translated};
use super::world::{
    secret_names, AclExtension, Changed, ObjectKey, RouteObject, SecretState, ServicePort, Slice,
    World,
};
use crate::compile::{compile_cached, RouteCache};
use crate::error::{ConfigError, ObjectRef, Problem};
use crate::model::Object;
use crate::snapshot::Snapshot;
use crate::source::Inputs;

/// What became of a route's current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Valid and serving.
    Accepted,
    /// It waits: for a referenced Secret's first list, or for the acl Extensions to
    /// be readable. Its last accepted version (if any) keeps serving meanwhile.
    Pending(super::translate::Waiting),
    /// Invalid; `reason` is the condition reason, `errors` say which field and why.
    Rejected {
        /// PascalCase reason for the `Accepted=False` condition.
        reason: &'static str,
        /// Every problem found, in the custom resource's field names.
        errors: Vec<ConfigError>,
    },
}

/// Which version of a route the new snapshot serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serving {
    /// The current spec.
    Current,
    /// The last accepted spec (with current endpoints when they could be resolved).
    LastGood,
    /// Nothing: never accepted, or the last accepted version no longer fits.
    Nothing,
}

/// The outcome for one route, as its status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteReport {
    /// `metadata.generation` the verdict is about.
    pub generation: i64,
    /// Accepted, pending or rejected.
    pub verdict: Verdict,
    /// What serves.
    pub serving: Serving,
    /// Ready endpoints of the backend Service.
    pub ready_endpoints: usize,
    /// Terminating or not-ready endpoints.
    pub unready_endpoints: usize,
}

/// The result of one reconcile.
#[derive(Debug)]
pub struct Outcome {
    /// The snapshot to install, or the errors of the non-Kubernetes part (the gateway
    /// file), which no route can fix.
    pub snapshot: Result<Snapshot, Vec<ConfigError>>,
    /// What the snapshot was compiled from (empty when it failed): the policy a
    /// configuration rollout compares and stages.
    pub inputs: Inputs,
    /// One report per route in the world.
    pub reports: BTreeMap<ObjectKey, RouteReport>,
}

/// Remembers, between reconciles, each route's translation and last accepted version,
/// the compiled routes, and the world it last saw: routes are translated again only in
/// namespaces where something changed, and compiled again only when their translation
/// did. Planning hostnames and the compile cache's check still pass over every route,
/// with small constants.
#[derive(Default)]
pub struct Reconciler {
    last_good: HashMap<ObjectKey, Arc<Translated>>,
    /// Every route of the world last reconciled: what its translation read.
    routes: BTreeMap<ObjectKey, Reads>,
    /// The same routes' current translations, oldest first (creation time, then key):
    /// the older route wins every conflict, and compile reports a conflict on the
    /// later object.
    order: BTreeMap<(i64, ObjectKey), Arc<Translated>>,
    /// The world last reconciled; `None` until the first, when every route is looked at.
    seen: Option<World>,
    /// Compiled routes of the previous reconcile: a change recompiles only the routes
    /// it touched.
    cache: RouteCache,
}

/// What translating a route read from the world. The watches replace a value that
/// changed (a route's status alone is changed in place, and translation does not read
/// it; a route this holds is copied then), so the same allocations mean the same
/// translation. Holding them keeps an address from being reused meanwhile.
struct Reads {
    /// The route itself; its creation time is its place in [`Reconciler::order`].
    route: Arc<RouteObject>,
    service: Option<Arc<Vec<ServicePort>>>,
    slices: Vec<Arc<Slice>>,
    secrets: Vec<Option<Arc<SecretState>>>,
    extension: Option<Arc<AclExtension>>,
    extensions_unreadable: bool,
}

impl Reads {
    /// What translating `route` (at `key`) reads from `world`.
    fn of(world: &World, key: &ObjectKey, route: &Arc<RouteObject>) -> Reads {
        let service = ObjectKey::new(
            key.namespace.clone(),
            route.spec.backend_ref.service.clone(),
        );
        let from = ObjectKey::new(key.namespace.clone(), String::new());
        let slices = world
            .slices
            .range(from..)
            .take_while(|(k, _)| k.namespace == key.namespace)
            .filter(|(_, s)| s.service == service.name)
            .map(|(_, s)| s.clone())
            .collect();
        let secrets = secret_names(&route.spec)
            .into_iter()
            .map(|name| {
                world
                    .secrets
                    .get(&ObjectKey::new(key.namespace.clone(), name))
                    .cloned()
            })
            .collect();
        let extension = world
            .acl_extension(&key.namespace)
            .and_then(|(k, _)| world.extensions.get(k).cloned());
        Reads {
            route: route.clone(),
            service: world.services.get(&service).cloned(),
            slices,
            secrets,
            extension,
            extensions_unreadable: world.extensions_unreadable,
        }
    }

    /// The same allocations as `other`.
    fn same(&self, other: &Reads) -> bool {
        fn one<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        Arc::ptr_eq(&self.route, &other.route)
            && one(&self.service, &other.service)
            && self.slices.len() == other.slices.len()
            && self
                .slices
                .iter()
                .zip(&other.slices)
                .all(|(a, b)| Arc::ptr_eq(a, b))
            && self.secrets.len() == other.secrets.len()
            && self
                .secrets
                .iter()
                .zip(&other.secrets)
                .all(|(a, b)| one(a, b))
            && one(&self.extension, &other.extension)
            && self.extensions_unreadable == other.extensions_unreadable
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Choice {
    Current,
    LastGood,
}

/// A route whose version compiles: its key, which version, and its current
/// translation (whose endpoints a last good version takes).
type Chosen<'a> = (&'a ObjectKey, Choice, &'a Arc<Translated>);

/// Who holds a hostname while [`plan`] claims them.
#[derive(Clone, Copy)]
enum Holder<'a> {
    /// A route of the gateway file.
    Base(&'a ObjectRef),
    /// A route of the cluster.
    Route(&'a ObjectKey),
}

impl Reconciler {
    /// Compile `base` (the gateway file's objects) plus every route in `world`.
    pub fn reconcile(&mut self, base: &Inputs, world: &World) -> Outcome {
        self.update_routes(world);
        let Reconciler {
            last_good,
            routes,
            order,
            cache,
            ..
        } = self;

        // Versions compile refused: the current spec (with its errors) or the last good
        // one. Each round adds at least one, so this ends; claims are made afresh each
        // round, so a version compile refused never holds a hostname.
        let mut refused: HashMap<ObjectKey, Vec<ConfigError>> = HashMap::new();
        let mut refused_last_good: HashSet<ObjectKey> = HashSet::new();
        let (snapshot, chosen, reports) = loop {
            let (chosen, reports) = plan(order, last_good, base, &refused, &refused_last_good);
            let inputs = inputs(last_good, base, &chosen);
            let errors = match compile_cached(&inputs, cache) {
                Ok(snapshot) => break (Ok((snapshot, inputs)), chosen, reports),
                Err(errors) => errors,
            };
            let mut by_route: BTreeMap<ObjectKey, Vec<ConfigError>> = BTreeMap::new();
            let mut foreign = Vec::new();
            for error in errors {
                match route_key(&error.object).filter(|k| routes.contains_key(k)) {
                    Some(key) => by_route.entry(key).or_default().push(error),
                    None => foreign.push(error),
                }
            }
            let mut progress = false;
            for (key, errors) in by_route {
                match chosen.iter().find(|(k, _, _)| **k == key) {
                    Some((_, Choice::Current, translated)) => {
                        let errors = errors
                            .into_iter()
                            .map(|e| in_crd_terms(e, translated))
                            .collect();
                        progress |= refused.insert(key, errors).is_none();
                    }
                    Some((_, Choice::LastGood, _)) => progress |= refused_last_good.insert(key),
                    None => foreign.extend(errors),
                }
            }
            if !foreign.is_empty() || !progress {
                break (Err(foreign), chosen, reports);
            }
        };
        let mut reports = reports;

        if snapshot.is_ok() {
            for (key, choice, current) in &chosen {
                let serving = match choice {
                    Choice::Current => {
                        if !last_good.get(*key).is_some_and(|t| Arc::ptr_eq(t, current)) {
                            last_good.insert((*key).clone(), Arc::clone(current));
                        }
                        Serving::Current
                    }
                    Choice::LastGood => Serving::LastGood,
                };
                if let Some(report) = reports.get_mut(*key) {
                    report.serving = serving;
                }
            }
        }
        let (snapshot, inputs) = match snapshot {
            Ok((snapshot, inputs)) => (Ok(snapshot), inputs),
            Err(errors) => (Err(errors), Inputs::default()),
        };
        Outcome {
            snapshot,
            inputs,
            reports,
        }
    }

    /// Bring the routes' translations up to `world`: only routes in namespaces where
    /// something changed since the last reconcile are looked at, and of those only the
    /// ones whose reads were replaced are translated again.
    fn update_routes(&mut self, world: &World) {
        let changed = match &self.seen {
            Some(seen) => world.changed_since(seen),
            None => Changed::All,
        };
        self.seen = Some(world.clone());
        match &changed {
            Changed::All => self.resync(world, None),
            Changed::Namespaces(namespaces) => {
                for namespace in namespaces {
                    self.resync(world, Some(namespace));
                }
            }
        }
    }

    /// Bring the routes of `namespace` (of every namespace when `None`) up to `world`:
    /// forget those it no longer has, translate again those whose reads were replaced.
    fn resync(&mut self, world: &World, namespace: Option<&str>) {
        let within = |key: &ObjectKey| namespace.is_none_or(|ns| key.namespace == ns);
        // The smallest key of the namespace (of all keys when `None`).
        let from = ObjectKey::new(namespace.unwrap_or_default(), String::new());
        let gone: Vec<ObjectKey> = self
            .routes
            .range(from.clone()..)
            .take_while(|(k, _)| within(k))
            .filter(|(k, _)| !world.routes.contains_key(*k))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.forget(&key);
        }
        for (key, route) in world.routes.range(from..).take_while(|(k, _)| within(k)) {
            self.refresh(world, key, route);
        }
    }

    /// Translate `key` again if what it reads was replaced.
    fn refresh(&mut self, world: &World, key: &ObjectKey, route: &Arc<RouteObject>) {
        let reads = Reads::of(world, key, route);
        if let Some(before) = self.routes.get(key) {
            if before.same(&reads) {
                return;
            }
            if before.route.created != route.created {
                self.order.remove(&(before.route.created, key.clone()));
            }
        }
        let translated = Arc::new(translate(world, key, route));
        self.order
            .insert((route.created, key.clone()), translated.clone());
        self.routes.insert(key.clone(), reads);
    }

    /// A route left the world.
    fn forget(&mut self, key: &ObjectKey) {
        if let Some(reads) = self.routes.remove(key) {
            self.order.remove(&(reads.route.created, key.clone()));
        }
        self.last_good.remove(key);
    }
}

/// Which version of each route to compile, oldest route first claiming its
/// hostnames, and the verdicts so far.
fn plan<'a>(
    order: &'a BTreeMap<(i64, ObjectKey), Arc<Translated>>,
    last_good: &HashMap<ObjectKey, Arc<Translated>>,
    base: &Inputs,
    refused: &HashMap<ObjectKey, Vec<ConfigError>>,
    refused_last_good: &HashSet<ObjectKey>,
) -> (Vec<Chosen<'a>>, BTreeMap<ObjectKey, RouteReport>) {
    let mut reports = BTreeMap::new();
    let mut chosen = Vec::with_capacity(order.len());
    let base_refs: Vec<(ObjectRef, Vec<String>)> = base
        .objects
        .iter()
        .filter_map(|object| match object {
            Object::Route(route) => Some((
                route.object_ref(),
                route
                    .spec
                    .hostnames
                    .iter()
                    .map(|h| claimed_host(h))
                    .collect(),
            )),
            Object::Gateway(_) => None,
        })
        .collect();
    let mut claimed: HashMap<&str, Holder<'_>> = HashMap::with_capacity(order.len());
    for (object, hosts) in &base_refs {
        for host in hosts {
            claimed.insert(host, Holder::Base(object));
        }
    }
    for ((_, key), translated) in order {
        let mut report = RouteReport {
            generation: translated.generation,
            verdict: Verdict::Accepted,
            serving: Serving::Nothing,
            ready_endpoints: translated.ready_endpoints,
            unready_endpoints: translated.unready_endpoints,
        };
        // A definite problem outranks a Secret still being listed.
        if !translated.problems.is_empty() {
            report.verdict = rejected(translated.problems.clone());
        } else if let Some(waiting) = translated.pending {
            report.verdict = Verdict::Pending(waiting);
        } else if let Some(errors) = refused.get(key) {
            report.verdict = rejected(errors.clone());
        } else {
            let conflicts = hostname_conflicts(translated, &claimed, key);
            if conflicts.is_empty() {
                for host in &translated.claimed_hosts {
                    claimed.insert(host, Holder::Route(key));
                }
                chosen.push((key, Choice::Current, translated));
                reports.insert(key.clone(), report);
                continue;
            }
            report.verdict = rejected(conflicts);
        }
        // The current version cannot serve: the last good one, if it still fits.
        if let Some(version) = last_good
            .get(key)
            .filter(|_| !refused_last_good.contains(key))
        {
            if hostname_conflicts(version, &claimed, key).is_empty() {
                for host in &version.claimed_hosts {
                    claimed.insert(host, Holder::Route(key));
                }
                chosen.push((key, Choice::LastGood, translated));
            }
        }
        reports.insert(key.clone(), report);
    }
    (chosen, reports)
}

/// The compile inputs: the base objects, then each chosen route version. A last
/// good version takes the current endpoints when they resolved, so a route whose
/// new spec is broken still follows its replicas.
fn inputs(
    last_good: &HashMap<ObjectKey, Arc<Translated>>,
    base: &Inputs,
    chosen: &[Chosen<'_>],
) -> Inputs {
    let mut inputs = Inputs {
        objects: Vec::with_capacity(base.objects.len() + chosen.len()),
        scope: crate::inputs::Scope::Cluster,
        files: base.files.clone(),
    };
    inputs.objects.extend(base.objects.iter().cloned());
    let files: usize = chosen.iter().map(|(_, _, t)| t.files.len()).sum();
    inputs.files.reserve(files);
    for (key, choice, now) in chosen {
        let version: &Translated = match choice {
            Choice::Current => now,
            Choice::LastGood => &last_good[*key],
        };
        let mut object = version.object.clone();
        if *choice == Choice::LastGood {
            let backends_resolved = !now
                .problems
                .iter()
                .any(|e| e.field.starts_with("spec.backendRef"));
            if backends_resolved && object.spec.backends != now.object.spec.backends {
                Arc::make_mut(&mut object).spec.backends = now.object.spec.backends.clone();
            }
        }
        inputs
            .files
            .extend(version.files.iter().map(|(k, v)| (k.clone(), v.clone())));
        inputs.objects.push(Object::Route(object));
    }
    inputs
}
fn hostname_conflicts(
    version: &Translated,
    claimed: &HashMap<&str, Holder<'_>>,
    key: &ObjectKey,
) -> Vec<ConfigError> {
    let spec_hosts = &version.object.spec.hostnames;
    version
        .claimed_hosts
        .iter()
        .zip(spec_hosts)
        .enumerate()
        .filter_map(|(i, (claimed_as, host))| {
            let owner = match claimed.get(claimed_as.as_str())? {
                Holder::Route(other) if *other == key => return None,
                Holder::Route(other) => route_ref(other),
                // A file route of the same name is not a hostname conflict: compile
                // reports the name itself.
                Holder::Base(object) if **object == route_ref(key) => return None,
                Holder::Base(object) => (*object).clone(),
            };
            Some(ConfigError::new(
                route_ref(key),
                format!("spec.hostnames[{i}]"),
                Problem::Conflict {
                    value: host.clone(),
                    other: format!("{owner} (older)"),
                },
            ))
        })
        .collect()
}

fn route_key(object: &ObjectRef) -> Option<ObjectKey> {
    match object {
        ObjectRef::Named {
            kind,
            namespace,
            name,
        } if kind == "ApiServerRoute" => Some(ObjectKey::new(namespace.clone(), name.clone())),
        _ => None,
    }
}

/// Rename a compile error's field from the file form to the custom resource, and say
/// so when the allowlist came from a Gardener Extension.
fn in_crd_terms(mut error: ConfigError, translated: &Translated) -> ConfigError {
    match (
        &translated.acl_extension,
        error.field.strip_prefix("spec.acl"),
    ) {
        (Some(ext), Some(rest)) if translated.object.spec.acl.is_some() => {
            error.field = format!("spec.acl (from Extension {ext} spec.providerConfig{rest})");
        }
        _ => error.field = crd_field(&error.field),
    }
    error
}

/// The verdict for a set of errors, with the condition reason of the first.
fn rejected(errors: Vec<ConfigError>) -> Verdict {
    let reason = errors.first().map(reason_of).unwrap_or("Invalid");
    Verdict::Rejected { reason, errors }
}

/// The condition reason for an error.
pub fn reason_of(error: &ConfigError) -> &'static str {
    let field = error.field.as_str();
    match &error.problem {
        Problem::Conflict { .. } if field.starts_with("spec.hostnames") => "HostnameConflict",
        Problem::Conflict { .. } if field.starts_with("spec.destinations") => "DestinationConflict",
        _ if field.starts_with("spec.backendRef") => "BackendNotFound",
        _ if field.starts_with("spec.acl")
            || field.starts_with("spec.accessControl")
            || field.starts_with("spec.alwaysAllowedCIDRs") =>
        {
            "InvalidAcl"
        }
        Problem::Invalid { .. }
            if field.starts_with("spec.tls") || field.starts_with("spec.upstream") =>
        {
            "InvalidSecretRef"
        }
        Problem::Tls(_) | Problem::Unreadable { .. } => "InvalidCertificate",
        _ => "Invalid",
    }
}
