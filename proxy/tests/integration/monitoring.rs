//! The shipped Grafana dashboard and Prometheus alert rules query only metrics apigate
//! exports, and cover what an operator watches. (`promtool check rules` and
//! `promtool test rules` run on the rules in the test command, `tests/run.sh`.)

use std::collections::BTreeSet;
use std::path::PathBuf;

fn monitoring(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/monitoring")
        .join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `apigate_…` metric name in a text, without a histogram's series suffix.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("apigate_"))
        .map(|word| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word)
                .to_string()
        })
        .collect()
}

/// Every PromQL expression of the dashboard's panels.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value = serde_json::from_str(&monitoring("apigate-dashboard.json"))
        .expect("the dashboard is valid JSON");
    let mut exprs = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    exprs
}

#[test]
fn the_dashboard_and_the_alerts_query_only_exported_metrics() {
    let metrics = apigate::metrics::Metrics::new();
    let exported: BTreeSet<&str> = metrics.names().iter().map(String::as_str).collect();
    for (file, text) in [
        ("apigate-dashboard.json", dashboard_exprs().join("\n")),
        ("apigate-alerts.yaml", monitoring("apigate-alerts.yaml")),
    ] {
        let queried = metric_names(&text);
        assert!(!queried.is_empty(), "{file} queries no apigate metric");
        let unknown: Vec<&String> = queried
            .iter()
            .filter(|name| !exported.contains(name.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "{file} queries metrics apigate does not export: {unknown:?}"
        );
    }
}

#[test]
fn the_dashboard_covers_what_an_operator_watches() {
    let queried = metric_names(&dashboard_exprs().join("\n"));
    for needed in [
        // Traffic, errors and latency per route; per-replica share and balance.
        "apigate_requests_total",
        "apigate_request_duration_seconds",
        // Ejections and health states.
        "apigate_backend_state",
        "apigate_backend_ejections_total",
        // TLS and allowlist refusals.
        "apigate_tls_handshake_failures_total",
        "apigate_access_total",
        // Configuration reloads.
        "apigate_config_reloads_total",
        // Rollouts.
        "apigate_rollout_phase",
        // API traffic by verb and resource.
        "apigate_apiserver_request_total",
        // Certificates.
        "apigate_certificate_expiry_timestamp_seconds",
        // The access log's own health.
        "apigate_access_log_lines_total",
        // Throttling.
        "apigate_flow_control_rejected_total",
        "apigate_flow_control_queued",
    ] {
        assert!(queried.contains(needed), "the dashboard shows no {needed}");
    }
    let alerts = monitoring("apigate-alerts.yaml");
    for alert in [
        "ApigateCertificateExpiresSoon",
        "ApigateCertificateExpiresVerySoon",
        "ApigateConfigReloadFailing",
        "ApigateAccessLogDropping",
        "ApigateFlowControlThrottling",
    ] {
        assert!(
            alerts.contains(&format!("alert: {alert}")),
            "no {alert} rule"
        );
    }
}

#[test]
fn every_metric_family_is_known_by_name_before_it_has_a_series() {
    let metrics = apigate::metrics::Metrics::new();
    let names = metrics.names();
    // Families with labels have no series until first used: they are known anyway.
    assert!(names.iter().any(|n| n == "apigate_apiserver_request_total"));
    assert!(names
        .iter()
        .any(|n| n == "apigate_certificate_expiry_timestamp_seconds"));
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "each name once");
    assert!(names.iter().all(|n| n.starts_with("apigate_")));
}
