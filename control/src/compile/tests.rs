//! Compile tests: valid input, and every kind of bad input naming object and field.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;

use crate::inputs::Inputs;
use crate::model::parse_documents;
use crate::model::Balancing;
use crate::{compile, Problem};

struct Pki {
    files: crate::inputs::Files,
}

fn key_and_cert(
    cn: &str,
    ca: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> (String, String, rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    let cert = match ca {
        Some((ca_cert, ca_key)) => params.signed_by(&key, ca_cert, ca_key).unwrap(),
        None => {
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.self_signed(&key).unwrap()
        }
    };
    (cert.pem(), key.serialize_pem(), cert, key)
}

fn pki() -> Pki {
    let (ca_pem, _, ca, ca_key) = key_and_cert("test-ca", None);
    let (srv_pem, srv_key, _, _) = key_and_cert("api.a.example.com", Some((&ca, &ca_key)));
    let (fp_pem, fp_key, _, _) = key_and_cert("apigate-front-proxy", Some((&ca, &ca_key)));
    let (_, other_key, _, _) = key_and_cert("other", Some((&ca, &ca_key)));
    let mut files = crate::inputs::Files::new();
    for (name, content) in [
        ("ca.pem", ca_pem),
        ("srv.pem", srv_pem),
        ("srv.key", srv_key),
        ("fp.pem", fp_pem),
        ("fp.key", fp_key),
        ("other.key", other_key),
        ("garbage.pem", "not a pem".to_string()),
    ] {
        files.insert(name.into(), Ok(content.into_bytes().into()));
    }
    files.insert(
        "missing.pem".into(),
        Err("No such file or directory".into()),
    );
    Pki { files }
}

const GATEWAY: &str = "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: gw}
spec:
  listeners: [{name: https, address: '127.0.0.1:8443'}]
  admin: {address: '127.0.0.1:9090'}
";

fn route(name: &str, host: &str, extra_tls: &str, backends: &str) -> String {
    format!(
        "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: garden}}
spec:
  hostnames: [{host}]
  backends: {{static: [{backends}]}}
  tls: {{certFile: srv.pem, keyFile: srv.key{extra_tls}}}
  upstream: {{caFile: ca.pem, frontProxyCertFile: fp.pem, frontProxyKeyFile: fp.key}}
"
    )
}

fn inputs(text: &str) -> Inputs {
    Inputs {
        scope: Default::default(),
        objects: parse_documents(text, "test.yaml").unwrap(),
        files: pki().files,
    }
}

fn errors_of(text: &str) -> Vec<String> {
    compile(&inputs(text))
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect()
}

/// `setting` (YAML flow-map entries) under the gateway's `block` is refused with an
/// error naming `field` and the accepted range.
fn assert_out_of_range(block: &str, setting: &str, field: &str) {
    let text = GATEWAY.replace("  admin:", &format!("  {block}: {{{setting}}}\n  admin:"));
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains(field) && e.contains("must be between")),
        "{setting}: {errors:?}"
    );
}

#[test]
fn valid_config_compiles_with_defaults() {
    let text = format!(
        "{GATEWAY}{}",
        route(
            "a",
            "API.A.example.com",
            ", clientCAFile: ca.pem",
            "'127.0.0.1:1', '[::1]:2'"
        )
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    snapshot.check_invariants();
    let r = snapshot.route_for_sni("api.a.example.com").unwrap();
    assert_eq!(r.id.to_string(), "garden/a");
    let t = r.terminate().unwrap();
    assert!(t.client_auth);
    assert_eq!(r.backends.len(), 2);
    assert_eq!(t.upstream.server_name, "kubernetes.default.svc");
    assert_eq!(
        snapshot
            .route_for_sni("Api.A.Example.Com")
            .map(|r| r.id.name.as_str()),
        Some("a")
    );
    assert!(snapshot.route_for_sni("other.example.com").is_none());
    assert_eq!(
        snapshot.gateway.defaults.timeouts.long_running.as_secs(),
        24 * 3600
    );
    assert_eq!(
        t.server_tls.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
}

#[test]
fn every_error_is_reported_with_object_and_field() {
    let text = format!(
        "{GATEWAY}{}",
        route("a", "'*.bad'", "", "'not-an-address', '127.0.0.1:0'")
    );
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|e| e
            .starts_with("ApiServerRoute garden/a: spec.hostnames[0]: invalid value \"*.bad\"")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|e| e.starts_with(
            "ApiServerRoute garden/a: spec.backends.static[0]: invalid value \"not-an-address\""
        )),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("ApiServerRoute garden/a: spec.backends.static[1]")),
        "{errors:?}"
    );
}

#[test]
fn duplicate_hostname_across_routes_names_the_holder() {
    let text = format!(
        "{GATEWAY}{}{}",
        route("a", "api.x.example.com", "", "'127.0.0.1:1'"),
        route("b", "api.x.example.com", "", "'127.0.0.1:2'")
    );
    let errors = errors_of(&text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("ApiServerRoute garden/b: spec.hostnames[0]: \"api.x.example.com\" is already used by ApiServerRoute garden/a"), "{errors:?}");
}

#[test]
fn empty_backend_list_is_rejected() {
    let errors = errors_of(&format!("{GATEWAY}{}", route("a", "h.example.com", "", "")));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.backends.static: is required")),
        "{errors:?}"
    );
}

#[test]
fn key_that_does_not_match_certificate_is_rejected() {
    let text = format!(
        "{GATEWAY}{}",
        route("a", "h.example.com", "", "'127.0.0.1:1'")
    )
    .replace("keyFile: srv.key", "keyFile: other.key");
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.tls.keyFile: key does not fit certFile")),
        "{errors:?}"
    );
}

#[test]
fn unreadable_and_malformed_files_are_reported_per_field() {
    let text = format!(
        "{GATEWAY}{}",
        route("a", "h.example.com", "", "'127.0.0.1:1'")
    )
    .replace("certFile: srv.pem", "certFile: missing.pem")
    .replace("caFile: ca.pem", "caFile: garbage.pem");
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.tls.certFile: cannot read missing.pem")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.upstream.caFile: no PEM CERTIFICATE block")),
        "{errors:?}"
    );
}

#[test]
fn client_ca_requires_front_proxy_identity() {
    let text = format!(
        "{GATEWAY}{}",
        route(
            "a",
            "h.example.com",
            ", clientCAFile: ca.pem",
            "'127.0.0.1:1'"
        )
    )
    .replace(
        ", frontProxyCertFile: fp.pem, frontProxyKeyFile: fp.key",
        "",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.upstream.frontProxyCertFile: is required")),
        "{errors:?}"
    );
}

#[test]
fn missing_or_duplicate_gateway_is_an_error() {
    let errors = errors_of(&route("a", "h.example.com", "", "'127.0.0.1:1'"));
    assert!(
        errors[0].contains("exactly one GatewayConfig"),
        "{errors:?}"
    );
    let text = format!("{GATEWAY}---\n{}", GATEWAY.replace("name: gw", "name: gw2"));
    let errors = compile(&inputs(&text)).unwrap_err();
    assert!(matches!(errors[0].problem, Problem::Conflict { .. }));
}

#[test]
fn invalid_timeouts_are_rejected() {
    let text = GATEWAY.replace(
        "  admin:",
        "  defaults: {requestTimeout: 10m, longRunningTimeout: 1m}\n  admin:",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.defaults.longRunningTimeout")),
        "{errors:?}"
    );
}

#[test]
fn absurd_and_meaningless_durations_name_their_field() {
    for (setting, field) in [
        // Far beyond any clock arithmetic: must be an error, never a panic later.
        (
            "handshakeTimeout: 300000000y",
            "spec.defaults.handshakeTimeout",
        ),
        (
            "requestHeaderTimeout: 1000y",
            "spec.defaults.requestHeaderTimeout",
        ),
        (
            "longRunningTimeout: 100y",
            "spec.defaults.longRunningTimeout",
        ),
        // Below one second an HTTP/1.1 keep-alive of 0 s would mean "forever".
        ("idleTimeout: 500ms", "spec.defaults.idleTimeout"),
        ("connectTimeout: 0s", "spec.defaults.connectTimeout"),
        (
            "upstreamMaxConnectionAge: 100ms",
            "spec.defaults.upstreamMaxConnectionAge",
        ),
    ] {
        assert_out_of_range("defaults", setting, field);
    }
}

#[test]
fn request_header_limit_has_a_default_and_kube_apiservers_ceiling() {
    let snapshot = compile(&inputs(GATEWAY)).unwrap();
    assert_eq!(snapshot.gateway.defaults.max_request_header_bytes, 65536);
    for bad in ["0", "100", "2000000"] {
        let text = GATEWAY.replace(
            "  admin:",
            &format!("  defaults: {{maxRequestHeaderBytes: {bad}}}\n  admin:"),
        );
        let errors = errors_of(&text);
        assert!(
            errors
                .iter()
                .any(|e| e.contains("spec.defaults.maxRequestHeaderBytes")),
            "{bad}: {errors:?}"
        );
    }
    let text = GATEWAY.replace(
        "  admin:",
        "  defaults: {maxRequestHeaderBytes: 1048576}\n  admin:",
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    assert_eq!(snapshot.gateway.defaults.max_request_header_bytes, 1 << 20);
}

#[test]
fn gateway_defaults_are_resolved_into_every_route() {
    let text = format!(
        "{}{}{}",
        GATEWAY.replace(
            "  admin:",
            "  defaults: {requestTimeout: 7s, balancing: roundRobin, ejection: {consecutiveFailures: 2}}\n  admin:"
        ),
        route("a", "a.example.com", "", "'127.0.0.1:1'"),
        passthrough("p", "p.example.com", "")
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    for r in &snapshot.routes {
        assert_eq!(
            r.settings.timeouts.request,
            std::time::Duration::from_secs(7)
        );
        assert_eq!(r.settings.ejection.consecutive_failures, 2);
        assert_eq!(r.settings, snapshot.gateway.defaults);
    }
    let a = snapshot.route_for_sni("a.example.com").unwrap();
    assert_eq!(a.terminate().unwrap().balancing, Balancing::RoundRobin);
    assert!(snapshot
        .route_for_sni("p.example.com")
        .unwrap()
        .terminate()
        .is_none());
}

#[test]
fn the_server_prefers_its_own_cipher_suite_order() {
    let text = format!(
        "{GATEWAY}{}",
        route("a", "a.example.com", "", "'127.0.0.1:1'")
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    let t = snapshot.routes[0].terminate().unwrap();
    assert!(t.server_tls.ignore_client_order);
}

#[test]
fn front_proxy_expiry_and_upstream_clients_are_prepared_at_compile() {
    let text = format!(
        "{GATEWAY}{}",
        route(
            "a",
            "a.example.com",
            ", clientCAFile: ca.pem",
            "'127.0.0.1:1'"
        )
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    let upstream = &snapshot.routes[0].terminate().unwrap().upstream;
    let identity = upstream.front_proxy.as_ref().unwrap();
    assert!(identity.not_after > std::time::SystemTime::now());
    assert!(upstream.http1.front_proxy.is_some());
    assert_eq!(
        upstream.http1.anonymous.alpn_protocols,
        vec![b"http/1.1".to_vec()]
    );
}

#[test]
fn diff_reports_added_removed_changed() {
    let one = format!(
        "{GATEWAY}{}{}{}{}",
        route("a", "a.example.com", "", "'127.0.0.1:1'"),
        route("b", "b.example.com", "", "'127.0.0.1:1'"),
        route("d", "d.example.com", "", "'127.0.0.1:1'"),
        route("e", "e.example.com", "", "'127.0.0.1:1'")
    );
    let two = format!(
        "{GATEWAY}{}{}{}{}",
        route("a", "a.example.com", "", "'127.0.0.1:2'"),
        route("c", "c.example.com", "", "'127.0.0.1:1'"),
        route("d", "d.example.com", "", "'127.0.0.1:1'"),
        route("f", "f.example.com", "", "'127.0.0.1:1'")
    );
    // The same certificates for both, so that only what the text changed differs.
    let files = pki().files;
    let with_files = |text: &str| Inputs {
        files: files.clone(),
        ..inputs(text)
    };
    let old = compile(&with_files(&one)).unwrap();
    let new = compile(&with_files(&two)).unwrap();
    let diff = new.diff(&old);
    let names = |ids: &[crate::snapshot::RouteId]| -> Vec<String> {
        ids.iter().map(|id| id.name.clone()).collect()
    };
    assert_eq!(names(&diff.added), ["c", "f"]);
    assert_eq!(names(&diff.removed), ["b", "e"]);
    assert_eq!(names(&diff.changed), ["a"]);
    assert!(!diff.gateway_changed);
    assert!(new.diff(&new).is_empty());
}

fn passthrough(name: &str, host: &str, extra: &str) -> String {
    format!(
        "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: {name}-ns}}
spec:
  hostnames: [{host}]
  mode: passthrough
  backends: {{static: ['127.0.0.1:1']}}
{extra}"
    )
}

#[test]
fn passthrough_needs_no_tls_material_and_rejects_it() {
    let snapshot = compile(&inputs(&format!(
        "{GATEWAY}{}",
        passthrough("p", "p.example.com", "")
    )))
    .unwrap();
    let r = snapshot.route_for_sni("p.example.com").unwrap();
    assert!(r.terminate().is_none());
    let errors = errors_of(&format!(
        "{GATEWAY}{}",
        passthrough(
            "p",
            "p.example.com",
            "  tls: {certFile: srv.pem, keyFile: srv.key}\n"
        )
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.tls: invalid value") && e.contains("passthrough")),
        "{errors:?}"
    );
}

#[test]
fn terminate_requires_tls_and_upstream() {
    let text = format!("{GATEWAY}{}", passthrough("t", "t.example.com", ""))
        .replace("mode: passthrough", "mode: terminate");
    let errors = errors_of(&text);
    assert!(
        errors.iter().any(|e| e.contains("spec.tls: is required")),
        "{errors:?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.upstream: is required")),
        "{errors:?}"
    );
}

#[test]
fn connect_destinations_match_exactly_and_must_be_unique() {
    let text = format!(
        "{GATEWAY}{}{}",
        passthrough("a", "a.example.com", "  destinations: [Alias-A]\n"),
        passthrough("b", "b.example.com", "")
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    let by = |d: &str| snapshot.route_for_destination(d).map(|r| r.id.name.clone());
    assert_eq!(
        by("outbound|443||kube-apiserver.a-ns.svc.cluster.local").as_deref(),
        Some("a")
    );
    assert_eq!(by("alias-a").as_deref(), Some("a"));
    assert_eq!(
        by("outbound|443||kube-apiserver.b-ns.svc.cluster.local").as_deref(),
        Some("b")
    );
    assert_eq!(
        by("outbound|443||kube-apiserver.a-ns.svc.cluster.local.evil"),
        None
    );
    assert_eq!(
        by("xoutbound|443||kube-apiserver.a-ns.svc.cluster.local"),
        None
    );
    let clash = format!(
        "{GATEWAY}{}{}",
        passthrough("a", "a.example.com", "  destinations: [shared]\n"),
        passthrough("b", "b.example.com", "  destinations: [SHARED]\n")
    );
    let errors = errors_of(&clash);
    assert!(
        errors.iter().any(|e| e.contains("spec.destinations")
            && e.contains("already used by ApiServerRoute a-ns/a")),
        "{errors:?}"
    );
    // Two routes in one namespace: the default destination would be ambiguous, so
    // neither gets it.
    let shared = format!(
        "{GATEWAY}{}{}",
        passthrough("a", "a.example.com", ""),
        passthrough("b", "b.example.com", "")
    )
    .replace("namespace: b-ns", "namespace: a-ns");
    let snapshot = compile(&inputs(&shared)).unwrap();
    assert!(snapshot
        .route_for_destination("outbound|443||kube-apiserver.a-ns.svc.cluster.local")
        .is_none());
}

#[test]
fn listeners_with_proxy_protocol_need_trusted_proxies() {
    let text = GATEWAY.replace(
        "address: '127.0.0.1:8443'}",
        "address: '127.0.0.1:8443', proxyProtocol: required}",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.listeners[0].trustedProxies: is required")),
        "{errors:?}"
    );
    let ok = GATEWAY.replace(
        "address: '127.0.0.1:8443'}",
        "address: '127.0.0.1:8443', proxyProtocol: optional, trustedProxies: [10.0.0.0/8]}",
    );
    let snapshot = compile(&inputs(&ok)).unwrap();
    assert!(snapshot.gateway.listeners[0].trusts("10.1.2.3".parse().unwrap()));
    assert!(!snapshot.gateway.listeners[0].trusts("127.0.0.1".parse().unwrap()));
}

#[test]
fn route_allowlists_compile_in_both_spellings_and_not_both() {
    let gardener = passthrough(
        "g",
        "g.example.com",
        "  acl: {rule: {action: ALLOW, type: remote_ip, cidrs: [192.0.2.0/24]}}\n",
    );
    let snapshot = compile(&inputs(&format!("{GATEWAY}{gardener}"))).unwrap();
    let r = snapshot.route_for_sni("g.example.com").unwrap();
    let ip = |s: &str| s.parse().unwrap();
    assert!(r.access.decide(ip("10.0.0.1"), ip("192.0.2.7")).allowed());
    assert!(!r
        .access
        .decide(ip("10.0.0.1"), ip("198.51.100.7"))
        .allowed());
    let both = passthrough(
        "g",
        "g.example.com",
        "  acl: {rule: {action: ALLOW, type: remote_ip, cidrs: [192.0.2.0/24]}}\n  accessControl: {rules: [{action: allow, cidrs: [192.0.2.0/24]}]}\n",
    );
    assert!(!errors_of(&format!("{GATEWAY}{both}")).is_empty());
    let host_bits = passthrough(
        "g",
        "g.example.com",
        "  acl: {rule: {action: ALLOW, type: remote_ip, cidrs: [1.2.3.4/24]}}\n",
    );
    let errors = errors_of(&format!("{GATEWAY}{host_bits}"));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.acl.rule.cidrs[0]") && e.contains("1.2.3.4/24")),
        "{errors:?}"
    );
}

#[test]
fn cached_compile_reuses_unchanged_routes_and_rebuilds_changed_ones() {
    use std::sync::Arc;
    let text = format!(
        "{GATEWAY}{}{}",
        route("a", "api.a.example.com", "", "'10.0.0.1:443'"),
        route("b", "api.b.example.com", "", "'10.0.0.2:443'")
    );
    let mut inputs = inputs(&text);
    let mut cache = crate::compile::RouteCache::default();
    let first = crate::compile::compile_cached(&inputs, &mut cache).unwrap();
    let again = crate::compile::compile_cached(&inputs, &mut cache).unwrap();
    assert!(Arc::ptr_eq(&first.routes[0], &again.routes[0]));
    assert!(Arc::ptr_eq(&first.routes[1], &again.routes[1]));

    // A referenced file changes: both routes read srv.key, so both are rebuilt, and
    // the broken key is reported exactly as an uncached compile reports it.
    let good = inputs.files.get("srv.key").cloned();
    inputs
        .files
        .insert("srv.key".into(), Ok(b"garbage"[..].into()));
    let cached_errors = crate::compile::compile_cached(&inputs, &mut cache).unwrap_err();
    assert_eq!(cached_errors, compile(&inputs).unwrap_err());
    if let Some(good) = good {
        inputs.files.insert("srv.key".into(), good);
    }

    // One route's object changes: only that one is rebuilt.
    let changed = format!(
        "{GATEWAY}{}{}",
        route("a", "api.a.example.com", "", "'10.0.0.1:443'"),
        route("b", "api.b.example.com", "", "'10.0.0.3:443'")
    );
    inputs.objects = parse_documents(&changed, "test.yaml").unwrap();
    let base = crate::compile::compile_cached(&inputs, &mut cache).unwrap();
    let next = {
        let mut more = inputs.clone();
        more.objects = parse_documents(
            &format!(
                "{GATEWAY}{}{}",
                route("a", "api.a.example.com", "", "'10.0.0.1:443'"),
                route("b", "api.b.example.com", "", "'10.0.0.4:443'")
            ),
            "test.yaml",
        )
        .unwrap();
        crate::compile::compile_cached(&more, &mut cache).unwrap()
    };
    assert!(Arc::ptr_eq(&base.routes[0], &next.routes[0]));
    assert!(!Arc::ptr_eq(&base.routes[1], &next.routes[1]));
    assert_eq!(next.routes[1].backends[0].to_string(), "10.0.0.4:443");
    assert_eq!(cache.len(), 2);

    // Alternating between the two (as a rollout compiles its stable and new
    // revisions): the version the last compile did not use is still found.
    let back = crate::compile::compile_cached(&inputs, &mut cache).unwrap();
    assert!(Arc::ptr_eq(&base.routes[1], &back.routes[1]));
    let forth = crate::compile::compile_cached(&inputs, &mut cache).unwrap();
    assert!(Arc::ptr_eq(&back.routes[1], &forth.routes[1]));
}

#[test]
fn rendered_objects_parse_back_to_the_same_objects() {
    let text = format!(
        "{}{}{}",
        GATEWAY.replace(
            "  admin:",
            "  defaults: {requestTimeout: 90s, longRunningTimeout: 1h30m, maxRequestHeaderBytes: 4096, ejection: {consecutiveFailures: 2}}\n  access: {alwaysAllowedCIDRs: [10.0.0.0/8]}\n  admin:"
        ),
        route("a", "a.example.com", ", clientCAFile: ca.pem", "'127.0.0.1:1', '[::1]:2'"),
        passthrough(
            "p",
            "p.example.com",
            "  acl: {rule: {action: ALLOW, type: remote_ip, cidrs: [192.0.2.0/24]}}\n  destinations: [p-alias]\n"
        )
    );
    let objects = parse_documents(&text, "test.yaml").unwrap();
    let rendered = crate::model::render_documents(&objects).unwrap();
    assert_eq!(
        parse_documents(&rendered, "rendered.yaml").unwrap(),
        objects
    );
}

#[test]
fn health_checks_default_on_and_routes_override_them() {
    let text = format!(
        "{}{}",
        GATEWAY.replace(
            "  admin:",
            "  defaults: {health: {interval: 5s, unhealthyThreshold: 2}, slowStart: {window: 1m, minWeightPercent: 20}}\n  admin:"
        ),
        route("a", "api.a.example.com", "", "'127.0.0.1:1'")
            + "  health: {timeout: 2s, frontProxyUser: 'system:apigate-probe'}\n",
    );
    let snapshot = compile(&inputs(&text)).unwrap();
    let r = snapshot.route_for_sni("api.a.example.com").unwrap();
    let health = r.health.as_ref().unwrap();
    assert_eq!(health.interval.as_secs(), 5);
    assert_eq!(health.timeout.as_secs(), 2);
    assert_eq!(
        (health.healthy_threshold, health.unhealthy_threshold),
        (2, 2)
    );
    assert_eq!(health.path, "/readyz");
    assert_eq!(health.credentials.kind(), "front_proxy");
    assert_eq!(r.settings.slow_start.window.as_secs(), 60);
    assert_eq!(r.settings.slow_start.min_weight_percent, 20);
    assert_eq!(r.settings.ejection.max_ejected_percent, 10);

    let off = format!(
        "{GATEWAY}{}",
        route("a", "api.a.example.com", "", "'127.0.0.1:1'") + "  health: {enabled: false}\n",
    );
    let snapshot = compile(&inputs(&off)).unwrap();
    assert!(snapshot
        .route_for_sni("api.a.example.com")
        .unwrap()
        .health
        .is_none());
}

#[test]
fn bad_health_settings_name_their_field() {
    let mut pki = pki();
    pki.files
        .insert("empty-token".into(), Ok(b"  \n"[..].into()));
    pki.files.insert("token".into(), Ok(b"s3cret\n"[..].into()));
    for (gateway, route_health, field, words) in [
        (
            "health: {healthyThreshold: 0}",
            "",
            "spec.defaults.health.healthyThreshold",
            "between",
        ),
        (
            "health: {unhealthyThreshold: 0}",
            "",
            "spec.defaults.health.unhealthyThreshold",
            "between",
        ),
        (
            "health: {interval: 1s, timeout: 2s}",
            "",
            "spec.defaults.health.timeout",
            "shorter than the interval",
        ),
        (
            "",
            "{interval: 1s, timeout: 1s}",
            "spec.health.timeout",
            "shorter than the interval",
        ),
        (
            "slowStart: {window: 0s, minWeightPercent: 20}",
            "",
            "spec.defaults.slowStart",
            "window",
        ),
        (
            "slowStart: {minWeightPercent: 0}",
            "",
            "spec.defaults.slowStart.minWeightPercent",
            "between",
        ),
        (
            "ejection: {maxEjectedPercent: 101}",
            "",
            "spec.defaults.ejection.maxEjectedPercent",
            "between",
        ),
        (
            "",
            "{tokenFile: empty-token}",
            "spec.health.tokenFile",
            "empty",
        ),
        (
            "",
            "{tokenFile: nowhere}",
            "spec.health.tokenFile",
            "nowhere",
        ),
        (
            "",
            "{tokenFile: token, frontProxyUser: probe}",
            "spec.health.frontProxyUser",
            "not both",
        ),
        ("", "{path: readyz}", "spec.health.path", "absolute path"),
        (
            "health: {tokenFile: token}",
            "",
            "spec.defaults.health.tokenFile",
            "ApiServerRoute",
        ),
    ] {
        let gateway_text = if gateway.is_empty() {
            GATEWAY.to_string()
        } else {
            GATEWAY.replace("  admin:", &format!("  defaults: {{{gateway}}}\n  admin:"))
        };
        let mut route_text = route("a", "api.a.example.com", "", "'127.0.0.1:1'");
        if !route_health.is_empty() {
            route_text.push_str(&format!("  health: {route_health}\n"));
        }
        let objects = parse_documents(&format!("{gateway_text}{route_text}"), "test.yaml").unwrap();
        let errors: Vec<String> = compile(&Inputs {
            scope: Default::default(),
            objects,
            files: pki.files.clone(),
        })
        .unwrap_err()
        .iter()
        .map(|e| e.to_string())
        .collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains(field) && e.contains(words)),
            "{gateway} {route_health}: {errors:?}"
        );
    }
}

#[test]
fn the_admin_token_file_is_read_and_checked() {
    let gateway = |token_file: &str| {
        GATEWAY.replace(
            "admin: {address: '127.0.0.1:9090'}",
            &format!("admin: {{address: '127.0.0.1:9090', tokenFile: {token_file}}}"),
        )
    };
    let mut good = inputs(&gateway("token"));
    good.files.insert(
        "token".into(),
        Ok(b"  s3cret-token-0123456789\n"[..].into()),
    );
    let snapshot = compile(&good).unwrap();
    let token = snapshot.gateway.admin_token.unwrap();
    assert!(token.matches("s3cret-token-0123456789"));
    assert!(!token.matches("s3cret-token-012345678"));
    assert!(!format!("{token:?}").contains("s3cret"), "never printed");

    let mut short = inputs(&gateway("token"));
    short.files.insert("token".into(), Ok(b"short"[..].into()));
    let errs: Vec<String> = compile(&short)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(errs[0].contains("spec.admin.tokenFile"), "{errs:?}");
    assert!(errs[0].contains("at least 16"), "{errs:?}");

    let errs = errors_of(&gateway("missing.pem"));
    assert!(
        errs[0].contains("spec.admin.tokenFile") && errs[0].contains("cannot read"),
        "{errs:?}"
    );
}

/// One TLS handshake in memory; how it went (full or resumed), once the client has
/// read the server's session tickets.
fn handshake(
    client: &Arc<rustls::ClientConfig>,
    server: &Arc<rustls::ServerConfig>,
) -> rustls::HandshakeKind {
    let name = rustls::pki_types::ServerName::try_from("api.a.example.com").unwrap();
    let mut c = rustls::ClientConnection::new(client.clone(), name).unwrap();
    let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
    for _ in 0..10 {
        let mut wire = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut wire).unwrap();
        }
        s.read_tls(&mut wire.as_slice()).unwrap();
        s.process_new_packets().unwrap();
        let mut wire = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut wire).unwrap();
        }
        c.read_tls(&mut wire.as_slice()).unwrap();
        c.process_new_packets().unwrap();
    }
    assert!(!c.is_handshaking());
    c.handshake_kind().unwrap()
}

#[test]
fn a_tls_session_resumes_on_its_routes_config_only() {
    let files = pki().files;
    let mut roots = rustls::RootCertStore::empty();
    let ca = files["ca.pem"].as_ref().unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let client = Arc::new(
        rustls::ClientConfig::builder_with_provider(crate::compile::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let text = format!(
        "{GATEWAY}{}",
        route("a", "api.a.example.com", "", "'127.0.0.1:1'")
    );
    let server = |text: &str| {
        let snapshot = compile(&Inputs {
            files: files.clone(),
            ..inputs(text)
        })
        .unwrap();
        let route = snapshot.route_for_sni("api.a.example.com").unwrap();
        route.terminate().unwrap().server_tls.clone()
    };
    let first = server(&text);
    assert_eq!(handshake(&client, &first), rustls::HandshakeKind::Full);
    assert_eq!(handshake(&client, &first), rustls::HandshakeKind::Resumed);
    // The route compiled again (its client CAs could have changed): a new scope.
    let second = server(&text);
    assert_eq!(handshake(&client, &second), rustls::HandshakeKind::Full);
    assert_eq!(handshake(&client, &second), rustls::HandshakeKind::Resumed);
}

#[test]
fn many_routes_compile_on_several_threads_with_errors_in_object_order() {
    let count = 2 * super::PARALLEL_FROM;
    let text = |broken: &[usize]| {
        let mut text = GATEWAY.to_string();
        for i in 0..count {
            let backend = if broken.contains(&i) {
                "'not-an-address'".to_string()
            } else {
                format!("'10.0.0.{}:443'", i % 250 + 1)
            };
            text += &route(
                &format!("r{i}"),
                &format!("api.r{i}.example.com"),
                "",
                &backend,
            );
        }
        text
    };
    let snapshot = compile(&inputs(&text(&[]))).unwrap();
    assert_eq!(snapshot.routes.len(), count);
    let names: Vec<String> = errors_of(&text(&[count - 2, 3]))
        .into_iter()
        .map(|e| e.split(':').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "ApiServerRoute garden/r3".to_string(),
            format!("ApiServerRoute garden/r{}", count - 2)
        ]
    );
}

#[test]
fn http2_settings_default_to_gardeners_envoy_and_bad_values_name_their_field() {
    let snapshot = compile(&inputs(GATEWAY)).unwrap();
    let h2 = snapshot.gateway.http2;
    assert_eq!(h2.max_concurrent_streams, 100);
    assert_eq!(h2.initial_stream_window, 65536);
    assert_eq!(h2.initial_connection_window, 1 << 20);
    assert_eq!(h2.max_resets_per_second, 100);
    assert_eq!(h2.max_pending_reset_streams, 20);
    assert_eq!(h2.keepalive_interval, std::time::Duration::from_secs(30));
    assert_eq!(h2.keepalive_timeout, std::time::Duration::from_secs(10));
    assert_eq!(
        h2.upstream_ping_interval,
        std::time::Duration::from_secs(30)
    );
    assert_eq!(h2.upstream_stream_window, 256 * 1024);
    assert_eq!(h2.max_control_frames_per_second, 100);
    for (setting, field) in [
        ("maxConcurrentStreams: 0", "spec.http2.maxConcurrentStreams"),
        (
            "initialStreamWindowBytes: 100",
            "spec.http2.initialStreamWindowBytes",
        ),
        (
            "initialStreamWindowBytes: 2147483648",
            "spec.http2.initialStreamWindowBytes",
        ),
        (
            "initialConnectionWindowBytes: 1000",
            "spec.http2.initialConnectionWindowBytes",
        ),
        ("maxResetsPerSecond: 0", "spec.http2.maxResetsPerSecond"),
        (
            "maxPendingResetStreams: 0",
            "spec.http2.maxPendingResetStreams",
        ),
        (
            "maxControlFramesPerSecond: 0",
            "spec.http2.maxControlFramesPerSecond",
        ),
        ("keepaliveInterval: 10ms", "spec.http2.keepaliveInterval"),
        ("keepaliveTimeout: 1h", "spec.http2.keepaliveTimeout"),
        (
            "upstreamPingInterval: 0s",
            "spec.http2.upstreamPingInterval",
        ),
        (
            "upstreamStreamWindowBytes: 100000000",
            "spec.http2.upstreamStreamWindowBytes",
        ),
    ] {
        assert_out_of_range("http2", setting, field);
    }
    // A connection window below the stream window would leave the stream's unusable.
    let text = GATEWAY.replace(
        "  admin:",
        "  http2: {initialStreamWindowBytes: 1048576, initialConnectionWindowBytes: 65535}\n  admin:",
    );
    let errors = errors_of(&text);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.http2.initialConnectionWindowBytes")
                && e.contains("initialStreamWindowBytes")),
        "{errors:?}"
    );
    let text = GATEWAY.replace(
        "  admin:",
        "  http2: {maxConcurrentStreams: 250, initialStreamWindowBytes: 131072, maxResetsPerSecond: 7}\n  admin:",
    );
    let h2 = compile(&inputs(&text)).unwrap().gateway.http2;
    assert_eq!(
        (
            h2.max_concurrent_streams,
            h2.initial_stream_window,
            h2.max_resets_per_second
        ),
        (250, 131072, 7)
    );
}

#[test]
fn connection_caps_default_on_per_source_off_and_nest() {
    let limits = compile(&inputs(GATEWAY)).unwrap().gateway.connections;
    assert_eq!(
        (limits.max, limits.per_route, limits.per_source),
        (100_000, 10_000, None)
    );
    assert_eq!(
        (
            limits.keepalive_idle,
            limits.keepalive_interval,
            limits.keepalive_probes
        ),
        (
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(10),
            6
        )
    );
    let text = GATEWAY.replace(
        "  admin:",
        "  connections: {max: 500, maxPerRoute: 50, maxPerSource: 5}\n  admin:",
    );
    let limits = compile(&inputs(&text)).unwrap().gateway.connections;
    assert_eq!(
        (limits.max, limits.per_route, limits.per_source),
        (500, 50, Some(5))
    );
    // A small global cap bounds the per-route default too.
    let text = GATEWAY.replace("  admin:", "  connections: {max: 500}\n  admin:");
    assert_eq!(
        compile(&inputs(&text))
            .unwrap()
            .gateway
            .connections
            .per_route,
        500
    );
    for (setting, field) in [
        ("max: 0", "spec.connections.max"),
        ("max: 100, maxPerRoute: 200", "spec.connections.maxPerRoute"),
        (
            "maxPerRoute: 10, maxPerSource: 11",
            "spec.connections.maxPerSource",
        ),
        (
            "tcpKeepaliveIdle: 500ms",
            "spec.connections.tcpKeepaliveIdle",
        ),
        (
            "tcpKeepaliveInterval: 2h",
            "spec.connections.tcpKeepaliveInterval",
        ),
        (
            "tcpKeepaliveProbes: 0",
            "spec.connections.tcpKeepaliveProbes",
        ),
    ] {
        assert_out_of_range("connections", setting, field);
    }
}

#[test]
fn a_chain_expires_with_its_first_certificate_and_a_ca_bundle_with_its_last() {
    // An old CA that expires at the start of 2030, beside the test CA (year 4096).
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["old-ca".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.not_after = rcgen::date_time_ymd(2030, 1, 1);
    let old = params.self_signed(&key).unwrap().pem();
    let mut inputs = inputs(&format!(
        "{GATEWAY}{}",
        route("a", "a.example.com", "", "'127.0.0.1:1'")
            .replace("certFile: srv.pem", "certFile: chain.pem")
            .replace("caFile: ca.pem", "caFile: bundle.pem")
    ));
    let file = |name: &str| match inputs.files.get(name) {
        Some(Ok(bytes)) => String::from_utf8(bytes.to_vec()).unwrap(),
        _ => panic!("{name}"),
    };
    let (chain, bundle) = (file("srv.pem") + &old, file("ca.pem") + &old);
    inputs
        .files
        .insert("chain.pem".into(), Ok(chain.into_bytes().into()));
    inputs
        .files
        .insert("bundle.pem".into(), Ok(bundle.into_bytes().into()));
    let snapshot = compile(&inputs).unwrap();
    let expiry = snapshot.routes[0].terminate().unwrap().expiry;
    let year_2030 = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_893_456_000);
    assert_eq!(
        expiry.serving, year_2030,
        "the chain's first certificate to expire"
    );
    assert!(expiry.upstream_ca > year_2030, "the bundle's last CA");
    assert_eq!(expiry.client_ca, None, "no client CA file");
}

#[test]
fn flow_control_on_a_passthrough_route_is_refused() {
    let errors = errors_of(&format!(
        "{GATEWAY}{}",
        passthrough("p", "p.example.com", "  flowControl: {maxInFlight: 10}\n")
    ));
    assert!(
        errors
            .iter()
            .any(|e| e.contains("spec.flowControl: invalid value") && e.contains("passthrough")),
        "{errors:?}"
    );
}
