//! What the watchers have seen, reduced to what apigate needs.
//!
//! Watch events are converted into these small values as they arrive, so memory grows
//! with what apigate uses (a Service's ports, an EndpointSlice's addresses and
//! conditions) rather than with whole API objects. The world is plain data: translating
//! and compiling it is pure and testable without a cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use super::crd::{self, RouteSpec};

/// Namespace and name of an object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// Shorthand constructor.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An `ApiServerRoute` as the watcher last saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteObject {
    /// `metadata.generation`: what `status.observedGeneration` reports back.
    pub generation: i64,
    /// `metadata.creationTimestamp` (seconds since the epoch): the older route wins a
    /// hostname conflict.
    pub created: i64,
    /// `metadata.uid`, for Events.
    pub uid: String,
    /// `metadata.resourceVersion`, for Events.
    pub resource_version: String,
    /// `metadata.labels`: a rollout's canary label is one.
    pub labels: std::collections::BTreeMap<String, String>,
    /// The spec.
    pub spec: RouteSpec,
    /// The status as last written, so that unchanged conditions are not rewritten.
    pub status: Option<crd::RouteStatus>,
}

/// A Service port: the name links it to the EndpointSlice port of the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// Port name; empty for a Service's single unnamed port.
    pub name: String,
    /// The Service port number.
    pub port: i32,
}

/// One EndpointSlice of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slice {
    /// `kubernetes.io/service-name` label: the Service it belongs to.
    pub service: String,
    /// Port name → port number on the endpoints.
    pub ports: Vec<(String, i32)>,
    /// The endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of an EndpointSlice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Its addresses (all of the slice's address family).
    pub addresses: Vec<String>,
    /// `conditions.ready`; an absent value means ready, as the API specifies.
    pub ready: bool,
    /// `conditions.terminating`: finishing what it has, not taking new requests.
    pub terminating: bool,
}

/// A referenced Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretState {
    /// Its watch has not finished the first list: routes using it wait rather than
    /// being rejected for a Secret that merely has not arrived yet.
    Pending,
    /// It does not exist.
    Absent,
    /// Its `data`.
    Present(BTreeMap<String, Arc<[u8]>>),
}

/// A Gardener `Extension` of `spec.type: acl`.
#[derive(Debug, Clone, PartialEq)]
pub struct AclExtension {
    /// `metadata.creationTimestamp` in seconds: with several in a namespace the one
    /// named `acl` wins, then the oldest.
    pub created: i64,
    /// `spec.providerConfig` as raw JSON (`None` when absent).
    pub provider_config: Option<serde_json::Value>,
}

/// One table of the world, copied on write. Taking the world for a reconcile shares
/// every table; the first change to a table the reconcile still holds copies that
/// table (its keys and `Arc`s, never the values), once. So taking the world costs
/// nothing however large it is, and a change pays for at most the tables it touches.
#[derive(Debug)]
pub struct Table<T>(Arc<BTreeMap<ObjectKey, Arc<T>>>);

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table(self.0.clone())
    }
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table(Arc::default())
    }
}

impl<T> std::ops::Deref for Table<T> {
    type Target = BTreeMap<ObjectKey, Arc<T>>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl<T> FromIterator<(ObjectKey, Arc<T>)> for Table<T> {
    fn from_iter<I: IntoIterator<Item = (ObjectKey, Arc<T>)>>(iter: I) -> Self {
        Table(Arc::new(iter.into_iter().collect()))
    }
}

/// Writing copies the table first while a reconcile still holds it.
impl<T> std::ops::DerefMut for Table<T> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        Arc::make_mut(&mut self.0)
    }
}

/// Everything watched, keyed by namespace/name. Values are shared (`Arc`): taking the
/// world for a reconcile copies no Secret data (nor any table, see [`Table`]), and a
/// value the watches did not replace is the same allocation as before, which is how a
/// reconcile knows what it need not translate again.
#[derive(Debug, Clone, Default)]
pub struct World {
    /// `ApiServerRoute` objects.
    pub routes: Table<RouteObject>,
    /// Services: their ports.
    pub services: Table<Vec<ServicePort>>,
    /// EndpointSlices, keyed by the slice's own name.
    pub slices: Table<Slice>,
    /// The Secrets routes reference, and only those.
    pub secrets: Table<SecretState>,
    /// Gardener `acl` Extensions.
    pub extensions: Table<AclExtension>,
    /// The Extension API exists but its objects cannot be read now (not listed yet, or
    /// the watch is failing; set from the watches' health when the world is taken for
    /// a reconcile): a route whose allowlist would come from an Extension cannot be
    /// translated anew, so it keeps its last accepted version or waits. Never
    /// allow-all for want of an answer.
    pub extensions_unreadable: bool,
}

impl World {
    /// Every Secret some route references: the ones the Secret watch keeps.
    pub fn referenced_secrets(&self) -> BTreeSet<ObjectKey> {
        self.routes
            .iter()
            .flat_map(|(key, route)| {
                secret_names(&route.spec)
                    .into_iter()
                    .map(|name| ObjectKey::new(key.namespace.clone(), name))
            })
            .collect()
    }

    /// The slices of a Service, by slice name.
    pub fn slices_of<'a>(&'a self, service: &'a ObjectKey) -> impl Iterator<Item = &'a Slice> {
        let from = ObjectKey::new(service.namespace.clone(), String::new());
        self.slices
            .range(from..)
            .take_while(move |(k, _)| k.namespace == service.namespace)
            .filter(move |(_, s)| s.service == service.name)
            .map(|(_, s)| &**s)
    }

    /// The `acl` Extension that applies to a namespace: the one named `acl`, else the
    /// oldest.
    pub fn acl_extension(&self, namespace: &str) -> Option<(&ObjectKey, &AclExtension)> {
        let from = ObjectKey::new(namespace, String::new());
        self.extensions
            .range(from..)
            .take_while(|(k, _)| k.namespace == namespace)
            .min_by_key(|(k, e)| (k.name != "acl", e.created, k.name.clone()))
            .map(|(k, e)| (k, &**e))
    }
}

/// What changed between two worlds, as far as translating routes goes: every route
/// reads only objects of its own namespace (and whether the acl Extensions can be
/// read), so a namespace is the unit of change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Changed {
    /// Anything may have: look at every route.
    All,
    /// Only objects in these namespaces were added, replaced or removed.
    Namespaces(BTreeSet<String>),
}

impl World {
    /// The namespaces in which some object differs from `before`. A table both share
    /// (nothing was written to it since) costs nothing; another is walked once in key
    /// order, values compared by address (the watches replace a value that changed).
    pub fn changed_since(&self, before: &World) -> Changed {
        if self.extensions_unreadable != before.extensions_unreadable {
            return Changed::All;
        }
        let mut namespaces = BTreeSet::new();
        self.routes.changes(&before.routes, &mut namespaces);
        self.services.changes(&before.services, &mut namespaces);
        self.slices.changes(&before.slices, &mut namespaces);
        self.secrets.changes(&before.secrets, &mut namespaces);
        self.extensions.changes(&before.extensions, &mut namespaces);
        Changed::Namespaces(namespaces)
    }
}

impl<T> Table<T> {
    /// Add to `namespaces` those of keys added, removed or given another value since
    /// `before`.
    fn changes(&self, before: &Table<T>, namespaces: &mut BTreeSet<String>) {
        if Arc::ptr_eq(&self.0, &before.0) {
            return;
        }
        let mut mark = |key: &ObjectKey| {
            if !namespaces.contains(&key.namespace) {
                namespaces.insert(key.namespace.clone());
            }
        };
        let (mut old, mut new) = (before.iter().peekable(), self.iter().peekable());
        loop {
            match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some((key, _)), None) => {
                    mark(key);
                    old.next();
                }
                (None, Some((key, _))) => {
                    mark(key);
                    new.next();
                }
                (Some((a, va)), Some((b, vb))) => match a.cmp(b) {
                    std::cmp::Ordering::Less => {
                        mark(a);
                        old.next();
                    }
                    std::cmp::Ordering::Greater => {
                        mark(b);
                        new.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if !Arc::ptr_eq(va, vb) {
                            mark(a);
                        }
                        old.next();
                        new.next();
                    }
                },
            }
        }
    }
}

/// Whether `name` can name a Secret (a DNS-1123 subdomain). Anything else is refused
/// before it reaches a field selector, where it could break the watch.
pub fn is_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 253
        && bytes.first().is_some_and(edge)
        && bytes.last().is_some_and(edge)
        && bytes.iter().all(|b| edge(b) || *b == b'-' || *b == b'.')
}

/// Names of the Secrets a route spec references (only valid names: a route naming
/// an invalid one is rejected, nothing is watched for it).
pub fn secret_names(spec: &RouteSpec) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(tls) = &spec.tls {
        names.push(tls.secret_name.clone());
        names.extend(tls.client_ca.as_ref().map(|r| r.name.clone()));
    }
    if let Some(upstream) = &spec.upstream {
        names.push(upstream.ca.name.clone());
        names.extend(upstream.front_proxy_secret_name.clone());
    }
    if let Some(token) = spec.health.as_ref().and_then(|h| h.token.as_ref()) {
        names.push(token.name.clone());
    }
    names.retain(|n| is_object_name(n));
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_found_per_namespace_by_address() {
        let mut world = World::default();
        let absent =
            |ns: &str, name: &str| (ObjectKey::new(ns, name), Arc::new(SecretState::Absent));
        for (key, value) in [absent("a", "x"), absent("b", "x"), absent("c", "x")] {
            world.secrets.insert(key, value);
        }
        let before = world.clone();
        assert_eq!(
            world.changed_since(&before),
            Changed::Namespaces(BTreeSet::new())
        );
        // An equal value in a new allocation is a change; a removal and an addition too.
        world
            .secrets
            .insert(ObjectKey::new("b", "x"), Arc::new(SecretState::Absent));
        world.secrets.remove(&ObjectKey::new("c", "x"));
        world
            .services
            .insert(ObjectKey::new("d", "s"), Arc::new(Vec::new()));
        let namespaces = ["b", "c", "d"].map(String::from).into_iter().collect();
        assert_eq!(
            world.changed_since(&before),
            Changed::Namespaces(namespaces)
        );
        world.extensions_unreadable = true;
        assert_eq!(world.changed_since(&before), Changed::All);
    }

    #[test]
    fn a_taken_world_keeps_its_tables_while_the_watches_write() {
        let mut world = World::default();
        let key = ObjectKey::new("ns", "a");
        world
            .secrets
            .insert(key.clone(), Arc::new(SecretState::Absent));
        let taken = world.clone();
        *world.secrets.get_mut(&key).unwrap() = Arc::new(SecretState::Pending);
        world
            .secrets
            .insert(ObjectKey::new("ns", "b"), Arc::new(SecretState::Absent));
        assert_eq!(taken.secrets.len(), 1);
        assert_eq!(*taken.secrets[&key], SecretState::Absent);
        assert_eq!(*world.secrets[&key], SecretState::Pending);
    }
}
