//! Canary rollouts of configuration, the pure half: settings, which routes are
//! canaries, what a revision changes and whether it only tightens access, and the
//! snapshot served while only the canaries run a new revision.
//!
//! No I/O and no clock: the proxy's rollout controller owns time, gates and state.

mod desired;
mod diff;
mod merge;
mod revision;
mod select;

#[cfg(test)]
mod tests;

pub use crate::rollout_settings::{
    Gates, RolloutSettings, Selector, DEFAULT_BAKE, DEFAULT_CANARY_LABEL,
};
pub use desired::Desired;
pub use diff::{GatewayField, PolicyDiff, RouteChange, RouteField};
pub use merge::merge;
pub use revision::Overrides;
pub use select::{canaries, route_id, selection_problem};
