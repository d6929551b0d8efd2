//! Numeric settings as users write them: a duration or a count with its default and
//! accepted range, resolved with an error that names the field. Shared by the gateway
//! defaults and the per-route overrides (health).

use std::time::Duration;

use crate::error::{Errors, Problem};

pub(super) const MILLISECOND: Duration = Duration::from_millis(1);
pub(super) const SECOND: Duration = Duration::from_secs(1);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(24 * 3600);

/// One duration setting: field name, default and the accepted range. The bounds keep
/// every value meaningful (a 0 s idle timeout would mean "never") and far from the
/// overflow of clock arithmetic (an absurd value must be an error, not a panic).
pub(super) struct DurationSetting {
    field: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
}

pub(super) const fn setting(
    field: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> DurationSetting {
    DurationSetting {
        field,
        default,
        min,
        max,
    }
}

impl DurationSetting {
    /// The value when unset.
    pub(super) fn default(&self) -> Duration {
        self.default
    }

    /// The configured value or the default; out of range is recorded and the default used.
    pub(super) fn resolve(
        &self,
        value: Option<crate::model::Duration>,
        object_ref: &crate::error::ObjectRef,
        errors: &mut Errors,
    ) -> Duration {
        self.resolve_at("spec.defaults", value, self.default, object_ref, errors)
    }

    /// [`Self::resolve`] for the field under `prefix` (e.g. a route's `spec.health`),
    /// with `default` when unset (e.g. the gateway's resolved value).
    pub(super) fn resolve_at(
        &self,
        prefix: &str,
        value: Option<crate::model::Duration>,
        default: Duration,
        object_ref: &crate::error::ObjectRef,
        errors: &mut Errors,
    ) -> Duration {
        let Some(crate::model::Duration(value)) = value else {
            return default;
        };
        if value < self.min || value > self.max {
            errors.push(
                object_ref,
                format!("{prefix}.{}", self.field),
                Problem::Invalid {
                    value: humantime::format_duration(value).to_string(),
                    reason: format!(
                        "must be between {} and {}",
                        humantime::format_duration(self.min),
                        humantime::format_duration(self.max)
                    ),
                },
            );
            return default;
        }
        value
    }
}

/// A whole number in `range`, or the default; out of range is recorded.
pub(super) fn count_in(
    value: Option<u32>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    field: &str,
    object_ref: &crate::error::ObjectRef,
    errors: &mut Errors,
) -> u32 {
    let Some(value) = value else {
        return default;
    };
    if !range.contains(&value) {
        errors.push(
            object_ref,
            field,
            Problem::Invalid {
                value: value.to_string(),
                reason: format!("must be between {} and {}", range.start(), range.end()),
            },
        );
        return default;
    }
    value
}
