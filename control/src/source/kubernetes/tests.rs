//! The pure half of the Kubernetes source: translation, per-route acceptance, last good
//! versions, conflicts and status, without a cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::crd::{BackendRef, RouteSpec, SecretKeyRef, ServingTlsRef, UpstreamRef};
use super::reconcile::{Reconciler, RouteReport, Serving, Verdict};
use super::status::{desired_status, same_meaning};
use super::translate::Waiting;
use super::world::{
    AclExtension, Endpoint, ObjectKey, RouteObject, SecretState, ServicePort, Slice, World,
};
use crate::model::RouteMode;
use crate::source::{parse_documents, Inputs};

fn base() -> Inputs {
    let objects = parse_documents(
        "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {name: test}
spec:
  listeners: [{name: https, address: \"127.0.0.1:0\"}]
",
        "test",
    )
    .unwrap();
    Inputs {
        objects,
        ..Inputs::default()
    }
}

fn spec(host: &str) -> RouteSpec {
    RouteSpec {
        hostnames: vec![host.into()],
        mode: RouteMode::Passthrough,
        backend_ref: BackendRef {
            service: "kube-apiserver".into(),
            port: 443,
        },
        tls: None,
        upstream: None,
        balancing: None,
        access_control: None,
        acl: None,
        always_allowed_cidrs: Vec::new(),
        destinations: Vec::new(),
        health: None,
        flow_control: None,
    }
}

fn route(created: i64, spec: RouteSpec) -> RouteObject {
    RouteObject {
        generation: 1,
        created,
        uid: String::new(),
        resource_version: String::new(),
        labels: Default::default(),
        spec,
        status: None,
    }
}

/// A namespace with a Service and one slice of `ready` and `terminating` endpoints.
fn backends(world: &mut World, namespace: &str, ready: &[&str], terminating: &[&str]) {
    world.services.insert(
        ObjectKey::new(namespace, "kube-apiserver"),
        Arc::new(vec![ServicePort {
            name: "https".into(),
            port: 443,
        }]),
    );
    let endpoint = |ip: &&str, ready: bool| Endpoint {
        addresses: vec![ip.to_string()],
        ready,
        terminating: !ready,
    };
    world.slices.insert(
        ObjectKey::new(namespace, "kube-apiserver-abc"),
        Arc::new(Slice {
            service: "kube-apiserver".into(),
            ports: vec![("https".into(), 6443)],
            endpoints: ready
                .iter()
                .map(|ip| endpoint(ip, true))
                .chain(terminating.iter().map(|ip| endpoint(ip, false)))
                .collect(),
        }),
    );
}

fn key(namespace: &str) -> ObjectKey {
    ObjectKey::new(namespace, "kube-apiserver")
}

fn rejected_reason(verdict: &Verdict) -> &'static str {
    match verdict {
        Verdict::Rejected { reason, .. } => reason,
        other => panic!("not rejected: {other:?}"),
    }
}

#[test]
fn only_ready_endpoints_become_backends() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1", "10.0.0.2"], &["10.0.0.3"]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    let snapshot = outcome.snapshot.unwrap();
    let backends: Vec<String> = snapshot.routes[0]
        .backends
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(backends, ["10.0.0.1:6443", "10.0.0.2:6443"]);
    // The terminating one is listed apart: no new requests, visibly draining.
    let draining: Vec<String> = snapshot.routes[0]
        .draining
        .iter()
        .map(|b| b.to_string())
        .collect();
    assert_eq!(draining, ["10.0.0.3:6443"]);
    let report = &outcome.reports[&key("a")];
    assert_eq!(report.verdict, Verdict::Accepted);
    assert_eq!((report.ready_endpoints, report.unready_endpoints), (2, 1));
}

#[test]
fn a_not_ready_endpoint_is_neither_served_nor_draining() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    if let Some(slice) = world.slices.values_mut().next() {
        Arc::make_mut(slice).endpoints.push(Endpoint {
            addresses: vec!["10.0.0.9".into()],
            ready: false,
            terminating: false,
        });
    }
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes[0].backends.len(), 1);
    assert!(snapshot.routes[0].draining.is_empty());
}

#[test]
fn a_service_without_ready_endpoints_is_served_with_no_backends() {
    let mut world = World::default();
    backends(&mut world, "a", &[], &["10.0.0.3"]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    assert!(outcome.snapshot.unwrap().routes[0].backends.is_empty());
    assert_eq!(outcome.reports[&key("a")].verdict, Verdict::Accepted);
}

#[test]
fn a_missing_service_rejects_only_that_route() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    world
        .routes
        .insert(key("b"), Arc::new(route(2, spec("b.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes.len(), 1);
    assert_eq!(
        rejected_reason(&outcome.reports[&key("b")].verdict),
        "BackendNotFound"
    );
    assert_eq!(outcome.reports[&key("b")].serving, Serving::Nothing);
    assert_eq!(outcome.reports[&key("a")].verdict, Verdict::Accepted);
}

#[test]
fn an_invalid_update_keeps_the_last_good_version_with_current_endpoints() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let mut reconciler = Reconciler::default();
    reconciler.reconcile(&base(), &world).snapshot.unwrap();

    let mut bad = spec("a.example.com");
    bad.always_allowed_cidrs = vec!["10.0.0.1/8".into()]; // host bits set
    world.routes.insert(key("a"), Arc::new(route(1, bad)));
    backends(&mut world, "a", &["10.0.0.9"], &[]);
    let outcome = reconciler.reconcile(&base(), &world);
    let report = &outcome.reports[&key("a")];
    assert_eq!(rejected_reason(&report.verdict), "InvalidAcl");
    assert_eq!(report.serving, Serving::LastGood);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes[0].hostnames, ["a.example.com"]);
    assert_eq!(snapshot.routes[0].backends[0].to_string(), "10.0.0.9:6443");
}

#[test]
fn the_older_route_wins_a_hostname_conflict() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    backends(&mut world, "b", &["10.0.0.2"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(20, spec("shared.example.com"))));
    world
        .routes
        .insert(key("b"), Arc::new(route(10, spec("Shared.Example.com."))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    assert_eq!(
        rejected_reason(&outcome.reports[&key("a")].verdict),
        "HostnameConflict"
    );
    assert_eq!(outcome.reports[&key("b")].verdict, Verdict::Accepted);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes.len(), 1);
    assert_eq!(snapshot.routes[0].id.namespace, "b");
}

#[test]
fn a_file_route_of_the_same_name_is_a_name_conflict_not_a_hostname_one() {
    let mut base = base();
    base.objects.extend(
        parse_documents(
            "apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {name: kube-apiserver, namespace: a}
spec:
  hostnames: [a.example.com]
  mode: passthrough
  backends: {static: ['127.0.0.1:1']}
",
            "file",
        )
        .unwrap(),
    );
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let outcome = Reconciler::default().reconcile(&base, &world);
    let Verdict::Rejected { errors, .. } = &outcome.reports[&key("a")].verdict else {
        panic!("accepted a route named like a file route");
    };
    assert_eq!(errors[0].field, "metadata.name", "{errors:?}");
}

/// A reconcile looks only at namespaces where something changed since the last one:
/// each kind of change must still reach its route, and leave the other's compiled
/// route as it was.
#[test]
fn each_change_reaches_the_routes_of_its_namespace_and_no_other() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    backends(&mut world, "b", &["10.0.0.2"], &[]);
    for (ns, created) in [("a", 1), ("b", 2)] {
        world.routes.insert(
            key(ns),
            Arc::new(route(created, spec(&format!("{ns}.example.com")))),
        );
    }
    let mut reconciler = Reconciler::default();
    let routes = |snapshot: &crate::snapshot::Snapshot| {
        let find = |ns: &str| {
            snapshot
                .routes
                .iter()
                .find(|r| r.id.namespace == ns)
                .cloned()
        };
        (find("a"), find("b"))
    };
    let (_, b) = routes(&reconciler.reconcile(&base(), &world).snapshot.unwrap());
    let b = b.unwrap();

    // An endpoint of a's Service moved (its slice alone changed).
    let mut slice = (*world.slices[&ObjectKey::new("a", "kube-apiserver-abc")]).clone();
    slice.endpoints[0].addresses = vec!["10.0.0.9".into()];
    world
        .slices
        .insert(ObjectKey::new("a", "kube-apiserver-abc"), Arc::new(slice));
    let (a2, b2) = routes(&reconciler.reconcile(&base(), &world).snapshot.unwrap());
    let a2 = a2.unwrap();
    assert_eq!(a2.backends[0].to_string(), "10.0.0.9:6443");
    assert!(Arc::ptr_eq(&b, &b2.unwrap()), "b was compiled again");

    // b got an allowlist from an acl Extension.
    world.extensions.insert(
        ObjectKey::new("b", "acl"),
        Arc::new(AclExtension {
            created: 1,
            provider_config: Some(
                serde_json::json!({"rule": {"action": "ALLOW", "cidrs": ["10.0.0.0/8"]}}),
            ),
        }),
    );
    let (a3, b3) = routes(&reconciler.reconcile(&base(), &world).snapshot.unwrap());
    let b3 = b3.unwrap();
    assert!(!b3.access.decide(ip("192.0.2.1"), ip("192.0.2.1")).allowed());
    assert!(Arc::ptr_eq(&a2, &a3.unwrap()), "a was compiled again");

    // b's Service lost its port: b is rejected, its last good version keeps serving.
    world
        .services
        .insert(ObjectKey::new("b", "kube-apiserver"), Arc::new(Vec::new()));
    let outcome = reconciler.reconcile(&base(), &world);
    assert_eq!(
        rejected_reason(&outcome.reports[&key("b")].verdict),
        "BackendNotFound"
    );
    assert_eq!(outcome.reports[&key("b")].serving, Serving::LastGood);

    // a's route was deleted.
    world.routes.remove(&key("a"));
    let outcome = reconciler.reconcile(&base(), &world);
    assert!(!outcome.reports.contains_key(&key("a")));
    let (a5, b5) = routes(&outcome.snapshot.unwrap());
    assert!(a5.is_none());
    assert!(Arc::ptr_eq(&b3, &b5.unwrap()), "b was compiled again");
}

#[test]
fn the_acl_extension_becomes_the_allowlist_and_a_malformed_one_keeps_the_old() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let extension = |config: serde_json::Value| AclExtension {
        created: 1,
        provider_config: Some(config),
    };
    world.extensions.insert(
        ObjectKey::new("a", "acl"),
        Arc::new(extension(serde_json::json!({"rule": {"action": "ALLOW", "type": "remote_ip", "cidrs": ["10.0.0.0/8"]}}))),
    );
    let mut reconciler = Reconciler::default();
    let snapshot = reconciler.reconcile(&base(), &world).snapshot.unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let access = &snapshot.routes[0].access;
    assert!(access.decide(ip("10.1.2.3"), ip("10.1.2.3")).allowed());
    assert!(!access.decide(ip("192.0.2.1"), ip("192.0.2.1")).allowed());

    world.extensions.insert(
        ObjectKey::new("a", "acl"),
        Arc::new(extension(
            serde_json::json!({"rule": {"action": "ALLOW", "cidrs": ["not-a-cidr"]}}),
        )),
    );
    let outcome = reconciler.reconcile(&base(), &world);
    let report = &outcome.reports[&key("a")];
    let Verdict::Rejected { reason, errors } = &report.verdict else {
        panic!("accepted a malformed acl");
    };
    assert_eq!(*reason, "InvalidAcl");
    assert!(errors[0].field.contains("Extension a/acl"), "{errors:?}");
    assert_eq!(report.serving, Serving::LastGood);
    let snapshot = outcome.snapshot.unwrap();
    assert!(!snapshot.routes[0]
        .access
        .decide(ip("192.0.2.1"), ip("192.0.2.1"))
        .allowed());
}

#[test]
fn unreadable_acl_extensions_never_mean_allow_all() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let outsider = ip("192.0.2.1");
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    world.extensions.insert(
        ObjectKey::new("a", "acl"),
        Arc::new(AclExtension {
            created: 1,
            provider_config: Some(
                serde_json::json!({"rule": {"action": "ALLOW", "cidrs": ["10.0.0.0/8"]}}),
            ),
        }),
    );
    // Never accepted, Extensions unreadable: the route waits and is not served.
    world.extensions_unreadable = true;
    let mut reconciler = Reconciler::default();
    let outcome = reconciler.reconcile(&base(), &world);
    let report = &outcome.reports[&key("a")];
    assert_eq!(report.verdict, Verdict::Pending(Waiting::AclExtensions));
    assert_eq!(report.serving, Serving::Nothing);
    assert!(outcome.snapshot.unwrap().routes.is_empty());
    let status = desired_status(report, None, "2026-01-01T00:00:00Z", None);
    assert_eq!(status.conditions[0].reason, "AclExtensionsUnreadable");

    // Readable: accepted with the Extension's allowlist.
    world.extensions_unreadable = false;
    let snapshot = reconciler.reconcile(&base(), &world).snapshot.unwrap();
    assert!(!snapshot.routes[0]
        .access
        .decide(outsider, outsider)
        .allowed());

    // Unreadable again, and the Extension gone from what we last saw, while the route
    // changes: the new version waits and the last accepted one, with its allowlist,
    // keeps serving.
    world.extensions_unreadable = true;
    world.extensions.clear();
    let mut changed = spec("a.example.com");
    changed.hostnames.push("b.example.com".into());
    world.routes.insert(key("a"), Arc::new(route(1, changed)));
    let outcome = reconciler.reconcile(&base(), &world);
    let report = &outcome.reports[&key("a")];
    assert_eq!(report.verdict, Verdict::Pending(Waiting::AclExtensions));
    assert_eq!(report.serving, Serving::LastGood);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes[0].hostnames, vec!["a.example.com"]);
    assert!(!snapshot.routes[0]
        .access
        .decide(outsider, outsider)
        .allowed());

    // A route with its own acl does not depend on Extensions.
    let mut own = spec("c.example.com");
    own.acl = Some(crate::access::GardenerAclConfig::new(
        crate::access::RuleSpec {
            action: "ALLOW".into(),
            address_type: None,
            cidrs: vec!["10.0.0.0/8".into()],
        },
    ));
    backends(&mut world, "c", &["10.0.0.3"], &[]);
    world.routes.insert(key("c"), Arc::new(route(2, own)));
    let outcome = reconciler.reconcile(&base(), &world);
    assert_eq!(outcome.reports[&key("c")].verdict, Verdict::Accepted);
}

fn terminate_spec() -> RouteSpec {
    let mut spec = spec("t.example.com");
    spec.mode = RouteMode::Terminate;
    spec.tls = Some(ServingTlsRef {
        secret_name: "serving".into(),
        client_ca: None,
    });
    spec.upstream = Some(UpstreamRef {
        ca: SecretKeyRef {
            name: "ca".into(),
            key: None,
        },
        server_name: None,
        front_proxy_secret_name: None,
    });
    spec
}

fn pem_pair() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["t.example.com".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem().into_bytes(), key.serialize_pem().into_bytes())
}

#[test]
fn secrets_pending_missing_keyless_and_present() {
    let mut world = World::default();
    backends(&mut world, "t", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("t"), Arc::new(route(1, terminate_spec())));
    let serving = ObjectKey::new("t", "serving");
    let ca = ObjectKey::new("t", "ca");
    let mut reconciler = Reconciler::default();

    world
        .secrets
        .insert(serving.clone(), Arc::new(SecretState::Pending));
    world
        .secrets
        .insert(ca.clone(), Arc::new(SecretState::Pending));
    let outcome = reconciler.reconcile(&base(), &world);
    assert_eq!(
        outcome.reports[&key("t")].verdict,
        Verdict::Pending(Waiting::Secrets)
    );

    world
        .secrets
        .insert(serving.clone(), Arc::new(SecretState::Absent));
    world
        .secrets
        .insert(ca.clone(), Arc::new(SecretState::Present(BTreeMap::new())));
    let outcome = reconciler.reconcile(&base(), &world);
    let Verdict::Rejected { reason, errors } = &outcome.reports[&key("t")].verdict else {
        panic!("accepted without Secrets");
    };
    assert_eq!(*reason, "InvalidSecretRef");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        text.iter()
            .any(|e| e.contains("spec.tls.secretName") && e.contains("does not exist")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("spec.upstream.ca") && e.contains("no key \"ca.crt\"")),
        "{text:?}"
    );

    let (cert, key_pem) = pem_pair();
    world.secrets.insert(
        serving.clone(),
        Arc::new(SecretState::Present(BTreeMap::from([
            ("tls.crt".to_string(), b"not a certificate"[..].into()),
            ("tls.key".to_string(), key_pem.clone().into()),
        ]))),
    );
    world.secrets.insert(
        ca.clone(),
        Arc::new(SecretState::Present(BTreeMap::from([(
            "ca.crt".to_string(),
            cert.clone().into(),
        )]))),
    );
    let outcome = reconciler.reconcile(&base(), &world);
    let report = &outcome.reports[&key("t")];
    let Verdict::Rejected { reason, errors } = &report.verdict else {
        panic!("accepted a malformed certificate");
    };
    assert_eq!(*reason, "InvalidCertificate", "{errors:?}");
    assert!(
        errors
            .iter()
            .all(|e| e.field.starts_with("spec.tls.secretName")),
        "{errors:?}"
    );

    world.secrets.insert(
        serving,
        Arc::new(SecretState::Present(BTreeMap::from([
            ("tls.crt".to_string(), cert.into()),
            ("tls.key".to_string(), key_pem.into()),
        ]))),
    );
    let outcome = reconciler.reconcile(&base(), &world);
    assert_eq!(outcome.reports[&key("t")].verdict, Verdict::Accepted);
    assert!(outcome.snapshot.unwrap().routes[0].terminate().is_some());
}

/// The reconcile report of one route with one ready endpoint.
fn one_accepted_route() -> RouteReport {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    world
        .routes
        .insert(key("a"), Arc::new(route(1, spec("a.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    outcome.reports[&key("a")].clone()
}

#[test]
fn status_keeps_transition_times_and_skips_unchanged_writes() {
    let report = &one_accepted_route();
    let first = desired_status(report, None, "2026-01-01T00:00:00Z", None);
    assert_eq!(first.observed_generation, Some(1));
    let accepted = &first.conditions[0];
    assert_eq!(
        (accepted.type_.as_str(), accepted.status.as_str()),
        ("Accepted", "True")
    );
    assert_eq!(first.conditions[1].message, "1 ready endpoint(s)");

    let again = desired_status(report, Some(&first), "2026-06-01T00:00:00Z", None);
    assert_eq!(
        again, first,
        "unchanged conditions keep their transition time"
    );
    assert!(same_meaning(Some(&first), &again));

    let mut empty = report.clone();
    empty.ready_endpoints = 0;
    let changed = desired_status(&empty, Some(&first), "2026-06-01T00:00:00Z", None);
    assert!(!same_meaning(Some(&first), &changed));
    assert_eq!(changed.conditions[1].status, "False");
    assert_eq!(
        changed.conditions[1].last_transition_time,
        "2026-06-01T00:00:00Z"
    );
    assert_eq!(
        changed.conditions[0].last_transition_time,
        "2026-01-01T00:00:00Z"
    );
}

#[test]
fn refused_health_probes_show_in_the_health_checks_condition() {
    let report = &one_accepted_route();
    let fine = desired_status(report, None, "2026-01-01T00:00:00Z", None);
    let health = |s: &crate::source::kubernetes::crd::RouteStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == "HealthChecks")
            .cloned()
            .unwrap()
    };
    assert_eq!(health(&fine).status, "True");
    let refused = desired_status(
        report,
        Some(&fine),
        "2026-01-02T00:00:00Z",
        Some("health probes of 1 of 1 replicas are refused (401/403)"),
    );
    assert!(!same_meaning(Some(&fine), &refused), "a change to write");
    let condition = health(&refused);
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("False", "ProbeUnauthorized")
    );
    assert!(condition.message.contains("401/403"));
    // The route itself stays accepted: a probe problem never rejects it.
    assert_eq!(refused.conditions[0].status, "True");
}

#[test]
fn an_older_route_that_fails_compile_holds_no_hostname() {
    let mut world = World::default();
    backends(&mut world, "a", &["10.0.0.1"], &[]);
    backends(&mut world, "b", &["10.0.0.2"], &[]);
    let mut broken = spec("shared.example.com");
    broken.always_allowed_cidrs = vec!["10.0.0.1/8".into()]; // refused by compile
    world.routes.insert(key("a"), Arc::new(route(10, broken)));
    world
        .routes
        .insert(key("b"), Arc::new(route(20, spec("shared.example.com"))));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    assert_eq!(
        rejected_reason(&outcome.reports[&key("a")].verdict),
        "InvalidAcl"
    );
    assert_eq!(outcome.reports[&key("a")].serving, Serving::Nothing);
    assert_eq!(outcome.reports[&key("b")].verdict, Verdict::Accepted);
    let snapshot = outcome.snapshot.unwrap();
    assert_eq!(snapshot.routes.len(), 1);
    assert_eq!(snapshot.routes[0].id.namespace, "b");
}

#[test]
fn a_secret_name_that_is_no_object_name_is_refused_and_never_watched() {
    let mut world = World::default();
    backends(&mut world, "t", &["10.0.0.1"], &[]);
    let mut spec = terminate_spec();
    if let Some(tls) = spec.tls.as_mut() {
        tls.secret_name = "a,b=c".into();
    }
    world.routes.insert(key("t"), Arc::new(route(1, spec)));
    assert!(!world
        .referenced_secrets()
        .contains(&ObjectKey::new("t", "a,b=c")));
    assert!(super::world::is_object_name("kube-apiserver.tls-1"));
    assert!(!super::world::is_object_name("Upper"));
    let outcome = Reconciler::default().reconcile(&base(), &world);
    assert_eq!(
        rejected_reason(&outcome.reports[&key("t")].verdict),
        "InvalidSecretRef"
    );
}

#[test]
fn only_a_rejection_that_is_new_holds_back_the_statuses_of_a_compile_made_at_once() {
    use super::newly_rejected;
    let report = |verdict: Verdict| RouteReport {
        generation: 1,
        verdict,
        serving: Serving::Nothing,
        ready_endpoints: 0,
        unready_endpoints: 0,
    };
    let rejected = || {
        report(Verdict::Rejected {
            reason: "InvalidSecretRef",
            errors: Vec::new(),
        })
    };
    let accepted = BTreeMap::from([(key("a"), report(Verdict::Accepted))]);
    let now_rejected = BTreeMap::from([(key("a"), rejected())]);
    assert!(newly_rejected(Some(&accepted), &now_rejected));
    assert!(newly_rejected(None, &now_rejected));
    assert!(newly_rejected(Some(&BTreeMap::new()), &now_rejected));
    assert!(!newly_rejected(Some(&now_rejected), &now_rejected));
    assert!(!newly_rejected(Some(&now_rejected), &accepted));
}
