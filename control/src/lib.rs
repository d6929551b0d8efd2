//! apigate control plane: the object model users write, the sources that produce those
//! objects, and the pure compile step that turns them into an immutable [`Snapshot`].
//!
//! Data flows one way: **sources** (a YAML file today, the Kubernetes API later) produce
//! [`inputs::Inputs`] → [`compile()`] validates everything and builds a [`Snapshot`] →
//! the proxy swaps it in atomically; [`rollout`] holds the pure half of canary
//! rollouts (what a revision changes, which routes go first, the staged snapshot).
//! This crate knows nothing of the proxy engine
//! (pingora): the proxy depends on it, never the other way round.

#![forbid(unsafe_code)]

pub mod access;
pub mod compile;
pub mod error;
pub mod flow_settings;
mod hashing;
pub mod inputs;
pub mod model;
pub mod rollout;
pub mod rollout_settings;
pub mod snapshot;
pub mod source;

pub use compile::compile;
pub use error::{ConfigError, ObjectRef, Problem};
pub use snapshot::{pair_by_id, Paired, Route, RouteId, Snapshot, SnapshotDiff};
