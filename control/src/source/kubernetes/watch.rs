//! Watchers: keep the [`World`] in step with the API server.
//!
//! Each resource has one kube-runtime watcher, which lists, watches, re-lists after a
//! `410 Gone` and retries with back-off after a disconnect. A (re-)list is applied to
//! the world atomically at `InitDone`, so objects deleted while the watch was down
//! disappear and nothing is half-updated. Secrets come from one cluster-wide watch
//! filtered on arrival: only those a route references are kept.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use super::crd::ApiServerRoute;
use super::world::{
    AclExtension, Endpoint, ObjectKey, RouteObject, SecretState, ServicePort, Slice, Table, World,
};

/// The resources watched as a whole; each must finish its first list before apigate
/// reports ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watched {
    /// `ApiServerRoute`.
    Routes,
    /// `Service`.
    Services,
    /// `EndpointSlice`.
    Slices,
    /// Gardener `Extension`.
    Extensions,
    /// A referenced `Secret` (readiness waits for no Secret being `Pending` instead).
    Secrets,
}

impl Watched {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Watched::Routes => "apiserverroutes",
            Watched::Services => "services",
            Watched::Slices => "endpointslices",
            Watched::Extensions => "extensions",
            Watched::Secrets => "secrets",
        }
    }
}

/// State shared between the watchers and the reconcile loop.
#[derive(Default)]
pub struct Shared {
    world: Mutex<World>,
    synced: Mutex<BTreeSet<Watched>>,
    /// Set on every change; the reconcile loop waits on it.
    pub changed: Notify,
    /// When the oldest change not yet compiled arrived.
    pending_since: Mutex<Option<Instant>>,
    errors: Mutex<BTreeMap<Watched, u64>>,
    /// Events applied, all resources.
    pub events: AtomicU64,
    /// The Secrets routes reference: the Secret watch keeps these and drops the rest.
    referenced: Mutex<BTreeSet<ObjectKey>>,
    /// The Secret watch has listed once: a newly referenced Secret it dropped before
    /// must be read on its own.
    secrets_listed: std::sync::atomic::AtomicBool,
    /// Watches failing now (an error, and no event since).
    failing: Mutex<BTreeSet<Watched>>,
    /// The acl Extension API exists and is watched.
    extensions_watched: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Lock the world. Poisoning is ignored: the world is plain data, always valid.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touch(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let mut since = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
        since.get_or_insert_with(Instant::now);
        self.changed.notify_one();
    }

    /// Take the arrival time of the oldest uncompiled change.
    pub fn take_pending_since(&self) -> Option<Instant> {
        self.pending_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Whether every listed resource finished its first list.
    pub fn synced(&self, required: &[Watched]) -> bool {
        let synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        required.iter().all(|r| synced.contains(r))
    }

    fn mark_synced(&self, resource: Watched) {
        self.synced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(resource);
    }

    /// Record whether `resource`'s watch works now (an event arrived, or it failed).
    /// Working again wakes the reconcile loop, so what waited on it is looked at once;
    /// failing does not (what serves stays).
    fn watch_health(&self, resource: Watched, working: bool) {
        let changed = {
            let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
            if working {
                failing.remove(&resource)
            } else {
                failing.insert(resource)
            }
        };
        if changed {
            tracing::info!(resource = resource.label(), working, "watch health changed");
            if working {
                self.touch();
            }
        }
    }

    /// A copy of the world for one reconcile, with what the watches' health says of
    /// it: the acl Extensions are unreadable while their API is watched but has not
    /// listed yet, or its watch is failing.
    pub fn world_for_reconcile(&self) -> World {
        let watched = self.extensions_watched.load(Ordering::Acquire);
        let unreadable = watched
            && (!self.synced(&[Watched::Extensions])
                || self
                    .failing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&Watched::Extensions));
        let mut world = self.world().clone();
        world.extensions_unreadable = unreadable;
        world
    }

    fn is_referenced(&self, key: &ObjectKey) -> bool {
        self.referenced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    pub(super) fn count_error(&self, resource: Watched) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(resource)
            .or_default() += 1;
    }

    /// Watch errors so far, per resource (disconnects, expired watches, denials).
    pub fn errors(&self) -> BTreeMap<Watched, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One change to a table of the world.
enum Change<T> {
    /// A complete (re-)list: replaces the table.
    Replace(BTreeMap<ObjectKey, T>),
    /// Added or modified.
    Upsert(ObjectKey, T),
    /// Deleted (or no longer of interest).
    Remove(ObjectKey),
}

/// A [`Change`] applied to a whole-resource table; whether it is worth a reconcile
/// (everything but an update to an equal value). A value equal to the one held keeps
/// the held allocation, so a reconcile sees it unchanged.
fn table<T: PartialEq>(table: &mut Table<T>, change: Change<T>) -> bool {
    match change {
        Change::Replace(all) => {
            let old = std::mem::take(table);
            *table = all
                .into_iter()
                .map(|(key, value)| {
                    let kept = old.get(&key).filter(|held| ***held == value).cloned();
                    let value = kept.unwrap_or_else(|| Arc::new(value));
                    (key, value)
                })
                .collect();
        }
        Change::Upsert(key, value) => {
            if table.get(&key).is_some_and(|held| **held == value) {
                return false;
            }
            table.insert(key, Arc::new(value));
        }
        Change::Remove(key) => {
            table.remove(&key);
        }
    }
    true
}

/// Set a held Secret's state, keeping the allocation when it did not change.
fn set_secret(slot: &mut Arc<SecretState>, state: SecretState) {
    if **slot != state {
        *slot = Arc::new(state);
    }
}

/// Routes: a change of status alone (our own writes) is recorded without a reconcile.
fn routes(routes: &mut Table<RouteObject>, change: Change<RouteObject>) -> bool {
    if let Change::Upsert(key, new) = &change {
        if let Some(old) = routes.get_mut(key) {
            if old.generation == new.generation && old.spec == new.spec && old.labels == new.labels
            {
                let old = Arc::make_mut(old);
                old.status = new.status.clone();
                old.resource_version = new.resource_version.clone();
                return false;
            }
        }
    }
    table(routes, change)
}

/// Apply one watcher stream to one table of the world until the stream ends.
async fn apply<K, T, S, C, F>(
    stream: S,
    shared: Arc<Shared>,
    resource: Watched,
    convert: C,
    write: F,
) where
    K: kube::Resource,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
    C: Fn(&K) -> Option<T>,
    F: Fn(&mut World, Change<T>) -> bool,
{
    let key_of = |object: &K| {
        ObjectKey::new(
            object.meta().namespace.clone().unwrap_or_default(),
            object.meta().name.clone().unwrap_or_default(),
        )
    };
    let mut buffer: Option<BTreeMap<ObjectKey, T>> = None;
    futures_util::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => {
                shared.watch_health(resource, true);
                event
            }
            Err(error) => {
                shared.watch_health(resource, false);
                shared.count_error(resource);
                tracing::warn!(resource = resource.label(), %error, "watch failed; retrying with back-off, the current configuration keeps serving");
                continue;
            }
        };
        match event {
            Event::Init => buffer = Some(BTreeMap::new()),
            Event::InitApply(object) => {
                if let (Some(buffer), Some(value)) = (buffer.as_mut(), convert(&object)) {
                    buffer.insert(key_of(&object), value);
                }
            }
            Event::InitDone => {
                let listed = buffer.take().unwrap_or_default();
                tracing::debug!(
                    resource = resource.label(),
                    objects = listed.len(),
                    "list complete"
                );
                write(&mut shared.world(), Change::Replace(listed));
                shared.mark_synced(resource);
                shared.touch();
            }
            Event::Apply(object) => {
                let key = key_of(&object);
                let change = match convert(&object) {
                    Some(value) => Change::Upsert(key, value),
                    None => Change::Remove(key),
                };
                if write(&mut shared.world(), change) {
                    shared.touch();
                }
            }
            Event::Delete(object) => {
                if write(&mut shared.world(), Change::Remove(key_of(&object))) {
                    shared.touch();
                }
            }
        }
    }
}

/// Seconds since the epoch of `metadata.creationTimestamp`.
fn created<K: kube::Resource>(object: &K) -> i64 {
    object
        .meta()
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or_default()
}

fn route(object: &ApiServerRoute) -> Option<RouteObject> {
    Some(RouteObject {
        generation: object.metadata.generation.unwrap_or_default(),
        created: created(object),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        resource_version: object.resource_version().unwrap_or_default(),
        labels: object.metadata.labels.clone().unwrap_or_default(),
        spec: object.spec.clone(),
        status: object.status.clone(),
    })
}

fn service(object: &Service) -> Option<Vec<ServicePort>> {
    let ports = object.spec.as_ref()?.ports.as_ref()?;
    Some(
        ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone().unwrap_or_default(),
                port: p.port,
            })
            .collect(),
    )
}

/// An EndpointSlice of `discovery.k8s.io/v1` or `v1beta1`: the fields apigate reads
/// are the same in both.
fn slice(object: &DynamicObject) -> Option<Slice> {
    let service = object.labels().get("kubernetes.io/service-name")?.clone();
    let data = &object.data;
    let ports = data
        .get("ports")
        .and_then(|p| p.as_array())
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let name = p.get("name").and_then(|n| n.as_str()).unwrap_or_default();
                    let port = p.get("port").and_then(|n| n.as_i64())?;
                    Some((name.to_string(), i32::try_from(port).ok()?))
                })
                .collect()
        })
        .unwrap_or_default();
    let endpoints = data
        .get("endpoints")
        .and_then(|e| e.as_array())
        .map(|endpoints| {
            endpoints
                .iter()
                .map(|e| {
                    let condition = |name: &str| {
                        e.get("conditions")
                            .and_then(|c| c.get(name))
                            .and_then(|v| v.as_bool())
                    };
                    Endpoint {
                        addresses: e
                            .get("addresses")
                            .and_then(|a| a.as_array())
                            .map(|a| {
                                a.iter()
                                    .filter_map(|s| s.as_str().map(String::from))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        // The API: "nil should be interpreted as ready".
                        ready: condition("ready").unwrap_or(true),
                        terminating: condition("terminating").unwrap_or(false),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Slice {
        service,
        ports,
        endpoints,
    })
}

fn extension(object: &DynamicObject) -> Option<AclExtension> {
    let spec = object.data.get("spec")?;
    if spec.get("type").and_then(|t| t.as_str()) != Some("acl") {
        return None;
    }
    Some(AclExtension {
        created: created(object),
        provider_config: spec.get("providerConfig").cloned(),
    })
}

fn secret(object: &Secret) -> Option<SecretState> {
    let data = object
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), Arc::from(v.0.as_slice())))
        .collect();
    Some(SecretState::Present(data))
}

/// Whether the server serves `plural` in `group_version`. Only a definitive answer is
/// `Ok`: the group version listed without it, or `404 Not Found` for the group version.
/// Any other answer (401, 403, 429, 5xx, a transport error, a timeout) is an error to
/// retry: guessing "absent" would serve routes without the allowlists the API holds.
pub async fn serves(
    client: &Client,
    group_version: &str,
    plural: &str,
) -> Result<bool, kube::Error> {
    let listing = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.list_api_group_resources(group_version),
    )
    .await;
    match listing {
        Ok(Ok(list)) => Ok(list.resources.iter().any(|r| r.name == plural)),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(false),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(kube::Error::Service(
            format!("discovery of {group_version} timed out after 10 s").into(),
        )),
    }
}

/// [`serves`], retried with back-off (0.5 s doubling to 30 s) until the server answers
/// definitively; each failure is logged, counted against `resource` and announced
/// through `errors`.
pub async fn serves_eventually(
    client: &Client,
    shared: &Shared,
    resource: Watched,
    (group_version, plural): (&str, &str),
    errors: &(dyn Fn() + Sync),
) -> bool {
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        match serves(client, group_version, plural).await {
            Ok(answer) => return answer,
            Err(error) => {
                shared.count_error(resource);
                errors();
                tracing::warn!(group_version, %error, retry_in = ?delay, "API discovery failed; not ready until it answers");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(30));
    }
}

/// The EndpointSlice API the server offers: `v1`, else `v1beta1` (Kubernetes < 1.21),
/// decided only on a definitive answer.
pub async fn slice_resource(
    client: &Client,
    shared: &Shared,
    errors: &(dyn Fn() + Sync),
) -> ApiResource {
    let v1 = serves_eventually(
        client,
        shared,
        Watched::Slices,
        ("discovery.k8s.io/v1", "endpointslices"),
        errors,
    )
    .await;
    let version = if v1 { "v1" } else { "v1beta1" };
    tracing::info!(version, "EndpointSlice API");
    ApiResource {
        group: "discovery.k8s.io".into(),
        version: version.into(),
        api_version: format!("discovery.k8s.io/{version}"),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    }
}

/// Gardener's `Extension` API group version.
pub const EXTENSIONS: &str = "extensions.gardener.cloud/v1alpha1";

/// Gardener's `Extension` resource.
pub fn extension_resource() -> ApiResource {
    ApiResource {
        group: "extensions.gardener.cloud".into(),
        version: "v1alpha1".into(),
        api_version: EXTENSIONS.into(),
        kind: "Extension".into(),
        plural: "extensions".into(),
    }
}

/// Watch the acl Extensions (owned by `tasks`). Until its first list completes, routes
/// whose allowlist may come from one wait ([`Shared::world_for_reconcile`]).
pub fn spawn_extension_watcher(client: &Client, shared: &Arc<Shared>, tasks: &mut Tasks) {
    shared.extensions_watched.store(true, Ordering::Release);
    let resource = extension_resource();
    tasks.push(tokio::spawn(apply(
        watcher::watcher(
            Api::<DynamicObject>::all_with(client.clone(), &resource),
            watcher::Config::default().any_semantic(),
        )
        .default_backoff(),
        shared.clone(),
        Watched::Extensions,
        extension,
        |w, c| table(&mut w.extensions, c),
    )));
}

/// While the Extension API is absent, look for it again every `every`; once it
/// appears, watch it (the watcher lives as long as this task). Allowlists from
/// Extensions created after apigate started are enforced without a restart.
pub async fn rediscover_extensions(
    client: Client,
    shared: Arc<Shared>,
    every: std::time::Duration,
) {
    let mut tasks = Tasks::default();
    loop {
        tokio::time::sleep(every).await;
        match serves(&client, EXTENSIONS, "extensions").await {
            Ok(true) => {
                tracing::info!(
                    "the extensions.gardener.cloud/v1alpha1 API appeared; watching acl Extensions"
                );
                spawn_extension_watcher(&client, &shared, &mut tasks);
                // Keep the watcher (held by `tasks`) until this task is aborted.
                std::future::pending::<()>().await;
            }
            Ok(false) => {}
            Err(error) => {
                shared.count_error(Watched::Extensions);
                tracing::warn!(%error, "rediscovery of the Extension API failed; trying again");
            }
        }
    }
}

/// Aborts its tasks when dropped: the source's background tasks end with it, also
/// when the source itself is cancelled.
#[derive(Default)]
pub struct Tasks(Vec<tokio::task::AbortHandle>);

impl Tasks {
    /// Keep `task` until drop.
    pub fn push<T>(&mut self, task: tokio::task::JoinHandle<T>) {
        self.0.push(task.abort_handle());
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Start the whole-resource watchers (owned by `tasks`); returns the resources that
/// must sync.
pub fn spawn_watchers(
    client: &Client,
    shared: &Arc<Shared>,
    route_selector: Option<&str>,
    slices: ApiResource,
    extensions: bool,
    tasks: &mut Tasks,
) -> Vec<Watched> {
    // Secrets too: their watch starts once the routes have listed (see SecretWatch).
    let mut required = vec![
        Watched::Routes,
        Watched::Services,
        Watched::Slices,
        Watched::Secrets,
    ];
    let mut route_config = watcher::Config::default().any_semantic();
    if let Some(selector) = route_selector {
        route_config = route_config.labels(selector);
    }
    let config = || watcher::Config::default().any_semantic();
    tasks.push(tokio::spawn(apply(
        watcher::watcher(Api::<ApiServerRoute>::all(client.clone()), route_config)
            .default_backoff(),
        shared.clone(),
        Watched::Routes,
        route,
        |w, c| routes(&mut w.routes, c),
    )));
    tasks.push(tokio::spawn(apply(
        watcher::watcher(Api::<Service>::all(client.clone()), config()).default_backoff(),
        shared.clone(),
        Watched::Services,
        service,
        |w, c| table(&mut w.services, c),
    )));
    tasks.push(tokio::spawn(apply(
        watcher::watcher(
            Api::<DynamicObject>::all_with(client.clone(), &slices),
            config(),
        )
        .default_backoff(),
        shared.clone(),
        Watched::Slices,
        slice,
        |w, c| table(&mut w.slices, c),
    )));
    if extensions {
        required.push(Watched::Extensions);
        spawn_extension_watcher(client, shared, tasks);
    } else {
        tracing::info!(
            "no extensions.gardener.cloud/v1alpha1 API (404); allowlists come from routes only until it appears"
        );
    }
    required
}

/// The Secrets routes reference, from one cluster-wide watch filtered on arrival.
///
/// One watch replaces one per referenced Secret (one HTTP/1.1 + TLS connection each,
/// ~75 KiB and ~2 ms of start-up apiece). The watch decodes every Secret of the seed
/// as it passes but keeps only the referenced ones; the rest are dropped at once. A
/// Secret that becomes referenced after the watch dropped it is read with one list by
/// name (list/watch is all the RBAC grants).
#[derive(Default)]
pub struct SecretWatch {
    /// The watch, once started (after the routes' first list, so that its own first
    /// list already knows which Secrets to keep).
    watch: Option<Tasks>,
}

impl SecretWatch {
    fn spawn(client: &Client, shared: &Arc<Shared>, tasks: &mut Tasks) {
        let filter = shared.clone();
        let done = shared.clone();
        tasks.push(tokio::spawn(apply(
            watcher::watcher(
                Api::<Secret>::all(client.clone()),
                watcher::Config::default().any_semantic(),
            )
            .default_backoff(),
            shared.clone(),
            Watched::Secrets,
            move |object: &Secret| {
                let key = ObjectKey::new(
                    object.metadata.namespace.clone().unwrap_or_default(),
                    object.metadata.name.clone().unwrap_or_default(),
                );
                if filter.is_referenced(&key) {
                    secret(object)
                } else {
                    None
                }
            },
            move |w, change| {
                let changed = match change {
                    // A complete list: every referenced Secret not in it does not exist.
                    Change::Replace(mut listed) => {
                        for (key, slot) in w.secrets.iter_mut() {
                            set_secret(slot, listed.remove(key).unwrap_or(SecretState::Absent));
                        }
                        true
                    }
                    Change::Upsert(key, state) => match w.secrets.get_mut(&key) {
                        Some(slot) => {
                            set_secret(slot, state);
                            true
                        }
                        None => false,
                    },
                    // Deleted, or (filtered out) not referenced: only a referenced one
                    // changes anything.
                    Change::Remove(key) => match w.secrets.get_mut(&key) {
                        Some(slot) => {
                            set_secret(slot, SecretState::Absent);
                            true
                        }
                        None => false,
                    },
                };
                done.secrets_listed.store(true, Ordering::Release);
                changed
            },
        )));
    }

    /// Make the held Secrets match `wanted`: forget the ones no longer referenced; read
    /// the newly referenced ones (they start `Pending`).
    pub fn sync(&mut self, client: &Client, shared: &Arc<Shared>, wanted: &BTreeSet<ObjectKey>) {
        let added: Vec<ObjectKey> = {
            let mut referenced = shared.referenced.lock().unwrap_or_else(|e| e.into_inner());
            let added = wanted.difference(&referenced).cloned().collect();
            referenced.clone_from(wanted);
            added
        };
        {
            let mut world = shared.world();
            // Only when one is gone: writing copies the table a reconcile still holds.
            if world.secrets.keys().any(|key| !wanted.contains(key)) {
                world.secrets.retain(|key, _| wanted.contains(key));
            }
            for key in &added {
                world
                    .secrets
                    .insert(key.clone(), Arc::new(SecretState::Pending));
            }
        }
        if self.watch.is_none() {
            if shared.synced(&[Watched::Routes]) {
                let mut tasks = Tasks::default();
                Self::spawn(client, shared, &mut tasks);
                self.watch = Some(tasks);
            }
            return;
        }
        // Before the first list, the list brings them.
        if !shared.secrets_listed.load(Ordering::Acquire) {
            return;
        }
        for key in added {
            let (client, shared) = (client.clone(), shared.clone());
            tokio::spawn(async move {
                // A list by name, not a get: list/watch is all the RBAC grants.
                let api = Api::<Secret>::namespaced(client, &key.namespace);
                let params =
                    kube::api::ListParams::default().fields(&format!("metadata.name={}", key.name));
                let state = match api.list(&params).await {
                    Ok(list) => list
                        .items
                        .first()
                        .and_then(secret)
                        .unwrap_or(SecretState::Absent),
                    Err(error) => {
                        // The watch's next re-list settles it; until then it waits.
                        shared.count_error(Watched::Secrets);
                        tracing::warn!(secret = %key, %error, "reading a newly referenced Secret failed");
                        return;
                    }
                };
                let mut world = shared.world();
                // Only if no watch event settled it meanwhile (that one is newer).
                if let Some(slot) = world
                    .secrets
                    .get_mut(&key)
                    .filter(|s| ***s == SecretState::Pending)
                {
                    *slot = Arc::new(state);
                    drop(world);
                    shared.touch();
                }
            });
        }
    }
}
