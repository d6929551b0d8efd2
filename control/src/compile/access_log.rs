//! `spec.accessLog`: checked and resolved into [`AccessLogSettings`], or `None` when the
//! log is off.

use std::sync::Arc;

use crate::error::{Errors, ObjectRef, Problem};
use crate::model::AccessLogSpec;
use crate::snapshot::AccessLogSettings;

/// Resolve the access log's settings; each bad field is reported by name.
pub(super) fn compile(
    spec: &AccessLogSpec,
    object_ref: &ObjectRef,
    errors: &mut Errors,
) -> Option<Arc<AccessLogSettings>> {
    let ratio = spec.success_sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        errors.push(
            object_ref,
            "spec.accessLog.successSampleRatio",
            Problem::Invalid {
                value: ratio.to_string(),
                reason:
                    "must be a share from 0 to 1 (0.01 logs one successful request in a hundred)"
                        .into(),
            },
        );
    }
    let path = match spec.path.as_deref().map(str::trim) {
        None => None,
        Some("") => {
            errors.push(
                object_ref,
                "spec.accessLog.path",
                Problem::Invalid {
                    value: String::new(),
                    reason: "must name a file; leave it out to write to standard output".into(),
                },
            );
            None
        }
        Some(path) if !path.starts_with('/') => {
            errors.push(
                object_ref,
                "spec.accessLog.path",
                Problem::Invalid {
                    value: path.to_string(),
                    reason: "must be an absolute path".into(),
                },
            );
            None
        }
        Some(path) => Some(Arc::from(path)),
    };
    if !spec.enabled.unwrap_or(false) {
        return None;
    }
    Some(Arc::new(AccessLogSettings {
        format: spec.format.unwrap_or_default(),
        success_sample_ratio: ratio,
        always_log_errors: spec.always_log_errors.unwrap_or(true),
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccessLogFormat;

    fn object() -> ObjectRef {
        ObjectRef::Named {
            kind: "GatewayConfig".into(),
            namespace: String::new(),
            name: "gw".into(),
        }
    }

    #[test]
    fn off_by_default_and_defaults_when_on() {
        let mut errors = Errors::default();
        assert_eq!(
            compile(&AccessLogSpec::default(), &object(), &mut errors),
            None
        );
        let on = AccessLogSpec {
            enabled: Some(true),
            ..AccessLogSpec::default()
        };
        let settings = compile(&on, &object(), &mut errors);
        assert_eq!(
            settings.as_deref().cloned(),
            Some(AccessLogSettings {
                format: AccessLogFormat::Json,
                success_sample_ratio: 1.0,
                always_log_errors: true,
                path: None,
            })
        );
        assert!(errors.is_empty());
    }

    #[test]
    fn bad_fields_are_named_even_when_the_log_is_off() {
        let mut errors = Errors::default();
        let spec = AccessLogSpec {
            success_sample_ratio: Some(1.5),
            path: Some("access.log".into()),
            ..AccessLogSpec::default()
        };
        compile(&spec, &object(), &mut errors);
        let text: Vec<String> = errors.into_vec().iter().map(|e| e.to_string()).collect();
        let text = text.join("\n");
        assert!(text.contains("spec.accessLog.successSampleRatio"), "{text}");
        assert!(text.contains("spec.accessLog.path"), "{text}");
        assert!(text.contains("absolute"), "{text}");
    }
}
