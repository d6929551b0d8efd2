//! What compile reads: the objects, and the bytes of every file they reference.
//!
//! Plain data between the sources (which do all the I/O and fill it) and
//! [`crate::compile()`] (which reads it and does none), so that neither imports the other.

use std::collections::HashMap;
use std::sync::Arc;

use crate::model::{ApiServerRoute, Object};

/// Referenced file contents keyed by the path as written. The bytes are shared: the
/// Kubernetes source hands the same allocation from the Secret it watched to every
/// compile, and a rollout's fallback keeps them without a copy.
pub type Files = HashMap<Arc<str>, FileContent>;

/// One referenced file: its bytes, or why it could not be read.
pub type FileContent = Result<Arc<[u8]>, String>;

/// Whether the objects are a whole configuration or a cluster's routes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scope {
    /// A file: checked whole, so a canary selection that matches no route or every
    /// route is an error.
    #[default]
    Whole,
    /// Routes from a cluster, which change under the gateway: the rollout controller
    /// judges the canary selection per revision instead, so that one team's route
    /// change never blocks every other route's.
    Cluster,
}

/// Everything compile needs: the objects, and the bytes of every file they reference.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Parsed objects in source order.
    pub objects: Vec<Object>,
    /// Where they come from.
    pub scope: Scope,
    /// Referenced files keyed by the path as written in the object; a read error is
    /// kept as its message so compile can report it against the field that named it.
    pub files: Files,
}

/// The file paths an object refers to, as written.
pub(crate) fn referenced_files(object: &Object) -> Vec<String> {
    match object {
        Object::Gateway(gateway) => gateway
            .spec
            .admin
            .iter()
            .filter_map(|a| a.token_file.clone())
            .filter(|f| !f.is_empty())
            .collect(),
        Object::Route(route) => route_files(route).map(str::to_string).collect(),
    }
}

/// The file paths a route refers to, as written, without copying them.
pub(crate) fn route_files(route: &ApiServerRoute) -> impl Iterator<Item = &str> {
    let spec = &route.spec;
    let tls = spec.tls.iter().flat_map(|tls| {
        [
            Some(&tls.cert_file),
            Some(&tls.key_file),
            tls.client_ca_file.as_ref(),
        ]
    });
    let upstream = spec.upstream.iter().flat_map(|u| {
        [
            Some(&u.ca_file),
            u.front_proxy_cert_file.as_ref(),
            u.front_proxy_key_file.as_ref(),
        ]
    });
    let health = spec.health.iter().map(|h| h.token_file.as_ref());
    tls.chain(upstream)
        .chain(health)
        .flatten()
        .map(String::as_str)
        .filter(|f| !f.is_empty())
}
