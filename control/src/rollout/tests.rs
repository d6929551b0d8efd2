//! Rollout tests: canary selection, validation naming fields, the typed diff, the
//! boundary of "tightening-only", transplanting a tightening, staging and merging.

use std::collections::BTreeSet;

use super::*;
use crate::inputs::Inputs;
use crate::model::parse_documents;
use crate::snapshot::RouteId;
use crate::{compile, Problem, Snapshot};

fn gateway(rollout: &str) -> String {
    format!(
        "apiVersion: apigate.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: gw}}
spec:
  listeners: [{{name: https, address: '127.0.0.1:0'}}]
{rollout}"
    )
}

const ON: &str = "  rollout: {enabled: true, bakeTime: 30s}\n";

/// A passthrough route (no files needed) with an allowlist of `allow` CIDRs, alone in
/// its namespace (so its CONNECT destination does not depend on the others).
fn route(name: &str, canary: bool, hosts: &str, allow: &str) -> String {
    let labels = if canary {
        "labels: {apigate.dev/canary: 'true'}"
    } else {
        "labels: {}"
    };
    format!(
        "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: {name}, namespace: shoot--{name}, {labels}}}
spec:
  hostnames: [{hosts}]
  mode: passthrough
  backends: {{static: ['127.0.0.1:6443']}}
  accessControl: {{rules: [{{action: allow, cidrs: [{allow}]}}]}}
"
    )
}

fn inputs(text: &str) -> Inputs {
    Inputs {
        scope: Default::default(),
        objects: parse_documents(text, "test.yaml").unwrap(),
        files: Default::default(),
    }
}

fn id(name: &str) -> RouteId {
    RouteId {
        namespace: format!("shoot--{name}"),
        name: name.into(),
    }
}

fn compiled(text: &str) -> Snapshot {
    compile(&inputs(text)).unwrap()
}

fn errors(text: &str) -> Vec<(String, Problem)> {
    compile(&inputs(text))
        .unwrap_err()
        .into_iter()
        .map(|e| (e.field, e.problem))
        .collect()
}

fn two_routes(rollout: &str) -> String {
    gateway(rollout)
        + &route("a", true, "a.example.com", "10.0.0.0/8")
        + &route("b", false, "b.example.com", "10.0.0.0/8")
}

#[test]
fn rollouts_are_off_by_default() {
    let snapshot = compiled(&two_routes(""));
    assert!(!snapshot.gateway.rollout.enabled);
}

#[test]
fn canaries_are_chosen_by_label() {
    let desired = Desired::of(&inputs(&two_routes(ON)));
    let chosen = canaries(
        &Selector::Label(DEFAULT_CANARY_LABEL.into()),
        desired.routes(),
    );
    assert_eq!(chosen, BTreeSet::from([id("a")]));
}

#[test]
fn a_fraction_selects_at_least_one_route_and_the_same_ones_each_time() {
    let mut text = gateway("");
    for i in 0..20 {
        text += &route(
            &format!("r{i}"),
            false,
            &format!("r{i}.example.com"),
            "10.0.0.0/8",
        );
    }
    let desired = Desired::of(&inputs(&text));
    let tenth = canaries(&Selector::Fraction(0.1), desired.routes());
    assert_eq!(tenth.len(), 2);
    assert_eq!(tenth, canaries(&Selector::Fraction(0.1), desired.routes()));
    assert_eq!(
        canaries(&Selector::Fraction(0.001), desired.routes()).len(),
        1
    );
    // A larger fraction keeps the smaller one's routes: growing the canary set never
    // reshuffles it.
    assert!(tenth.is_subset(&canaries(&Selector::Fraction(0.5), desired.routes())));
}

#[test]
fn thresholds_outside_zero_to_one_name_their_field() {
    let errs = errors(&two_routes(
        "  rollout: {enabled: true, gates: {minSuccessRate: 1.5, maxACLDenialRate: -0.1}}\n",
    ));
    let fields: Vec<&str> = errs.iter().map(|(f, _)| f.as_str()).collect();
    assert!(
        fields.contains(&"spec.rollout.gates.minSuccessRate"),
        "{errs:?}"
    );
    assert!(
        fields.contains(&"spec.rollout.gates.maxACLDenialRate"),
        "{errs:?}"
    );
    let errs = errors(&two_routes(
        "  rollout: {enabled: true, canary: {fraction: 0}}\n",
    ));
    assert_eq!(errs[0].0, "spec.rollout.canary.fraction", "{errs:?}");
}

#[test]
fn a_zero_bake_time_with_gates_is_refused_and_accepted_without_them() {
    let errs = errors(&two_routes("  rollout: {enabled: true, bakeTime: 0s}\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, "spec.rollout.bakeTime");
    compiled(&two_routes(
        "  rollout: {enabled: true, bakeTime: 0s, gates: {enabled: false}}\n",
    ));
}

#[test]
fn a_selection_of_no_route_or_of_every_route_is_refused() {
    let none = gateway("  rollout: {enabled: true, canary: {label: team/canary}}\n")
        + &route("a", true, "a.example.com", "10.0.0.0/8");
    let errs = errors(&none);
    assert_eq!(errs[0].0, "spec.rollout.canary.label", "{errs:?}");
    assert!(
        errs[0].1.to_string().contains("selects no route"),
        "{errs:?}"
    );

    let all = gateway(ON) + &route("a", true, "a.example.com", "10.0.0.0/8");
    let errs = errors(&all);
    assert!(
        errs[0].1.to_string().contains("selects every route"),
        "{errs:?}"
    );
    let allowed =
        gateway("  rollout: {enabled: true, bakeTime: 30s, canary: {allowAllRoutes: true}}\n")
            + &route("a", true, "a.example.com", "10.0.0.0/8");
    compiled(&allowed);
    // Off, the selection is not checked.
    compiled(&(gateway("") + &route("a", true, "a.example.com", "10.0.0.0/8")));
}

fn change(old: &str, new: &str) -> (PolicyDiff, bool) {
    let (old_in, new_in) = (inputs(old), inputs(new));
    let diff = Desired::of(&new_in).diff(&Desired::of(&old_in));
    let tightens = diff.tightens_only(&compile(&old_in).unwrap(), &compile(&new_in).unwrap());
    (diff, tightens)
}

#[test]
fn the_diff_names_each_changed_field() {
    let old = two_routes(ON);
    let new = gateway(ON)
        + &route("a", true, "a.example.com, x.example.com", "10.0.0.0/16")
        + &route("c", false, "c.example.com", "10.0.0.0/8");
    let (diff, _) = change(&old, &new);
    assert_eq!(diff.added, vec![id("c")]);
    assert_eq!(diff.removed, vec![id("b")]);
    assert_eq!(
        diff.changed,
        vec![RouteChange {
            id: id("a"),
            fields: vec![RouteField::Hostnames, RouteField::Access],
        }]
    );
    // Backends and labels are not policy.
    let moved = two_routes(ON).replace("127.0.0.1:6443", "127.0.0.2:6443");
    assert!(change(&old, &moved).0.is_empty());
}

#[test]
fn a_routes_flow_control_is_policy_and_changes_its_revision() {
    let old = two_routes(ON);
    let new = gateway(ON)
        + &route("a", true, "a.example.com", "10.0.0.0/8")
        + "  flowControl: {maxInFlight: 5}\n"
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    let (old, new) = (Desired::of(&inputs(&old)), Desired::of(&inputs(&new)));
    let diff = new.diff(&old);
    assert_eq!(
        diff.changed,
        vec![RouteChange {
            id: id("a"),
            fields: vec![RouteField::FlowControl],
        }]
    );
    assert_ne!(new.revision(), old.revision());
}

#[test]
fn http2_and_connection_settings_apply_at_once_and_never_roll_out() {
    let old = two_routes(ON);
    let added =
        format!("{ON}  http2: {{maxResetsPerSecond: 5}}\n  connections: {{maxPerSource: 3}}\n");
    let new = old.replace(ON, &added);
    let (diff, _) = change(&old, &new);
    assert!(diff.is_empty(), "{diff:?}");
    // Staged into whatever revision a route serves.
    let staged = Desired::of(&inputs(&old)).stage(&inputs(&new), &Default::default());
    let gateway = compile(&staged).unwrap().gateway;
    assert_eq!(gateway.http2.max_resets_per_second, 5);
    assert_eq!(gateway.connections.per_source, Some(3));
}

#[test]
fn the_boundary_of_tightening_only() {
    let old = two_routes(ON);
    let narrower = gateway(ON)
        + &route("a", true, "a.example.com", "10.0.0.0/16")
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    assert!(change(&old, &narrower).1, "a CIDR narrowed");
    let all = "  rollout: {enabled: true, bakeTime: 30s, canary: {allowAllRoutes: true}}\n";
    let removed = gateway(all) + &route("a", true, "a.example.com", "10.0.0.0/8");
    assert!(change(&old, &removed).1, "a route removed");
    let fewer_hosts = gateway(ON)
        + &route("a", true, "a.example.com", "10.0.0.0/8")
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    let more_hosts = fewer_hosts.replace("[b.example.com]", "[b.example.com, c.example.com]");
    assert!(change(&more_hosts, &fewer_hosts).1, "a hostname removed");
    assert!(!change(&fewer_hosts, &more_hosts).1, "a hostname added");
    let mixed = gateway(ON)
        + &route("a", true, "a.example.com", "10.0.0.0/16")
        + &route("b", false, "b.example.com", "0.0.0.0/0");
    assert!(
        !change(&old, &mixed).1,
        "one route tightened, another loosened"
    );
    let added = two_routes(ON) + &route("c", false, "c.example.com", "10.0.0.0/8");
    assert!(!change(&old, &added).1, "a route added");
    let moved = gateway(ON)
        + &route("a", true, "a.example.com", "192.168.0.0/16")
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    assert!(
        !change(&old, &moved).1,
        "an allowlist replaced by a disjoint one"
    );
    assert!(!change(&old, &old).1, "no change is not a tightening");
}

#[test]
fn a_tightening_is_transplanted_into_the_stable_revision_unless_the_rollout_changes_the_same_field()
{
    let stable = Desired::of(&inputs(&two_routes(ON)));
    // The rollout in progress changes route a's hostnames.
    let target_text = gateway(ON)
        + &route("a", true, "a.example.com, x.example.com", "10.0.0.0/8")
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    let target = Desired::of(&inputs(&target_text));
    // Then route b's allowlist is narrowed.
    let newest_text = target_text.replace(
        "[b.example.com]\n  mode: passthrough\n  backends: {static: ['127.0.0.1:6443']}\n  accessControl: {rules: [{action: allow, cidrs: [10.0.0.0/8]",
        "[b.example.com]\n  mode: passthrough\n  backends: {static: ['127.0.0.1:6443']}\n  accessControl: {rules: [{action: allow, cidrs: [10.1.0.0/16]",
    );
    let newest = Desired::of(&inputs(&newest_text));
    let diff = newest.diff(&target);
    assert_eq!(diff.changed.len(), 1, "{diff:?}");
    let stable2 = stable.transplant(&target, &newest, &diff).unwrap();
    let b = &stable2.routes[&id("b")];
    assert_eq!(
        b.spec.access_control,
        newest.routes[&id("b")].spec.access_control
    );
    // Route a keeps the stable hostnames: only the tightening moved.
    assert_eq!(
        stable2.routes[&id("a")].spec.hostnames,
        vec!["a.example.com"]
    );

    // Narrowing route a's allowlist is separable too, but dropping the hostname the
    // rollout added is not: that field differs between the revisions.
    let dropped = newest_text.replace("[a.example.com, x.example.com]", "[a.example.com]");
    let dropped = Desired::of(&inputs(&dropped));
    let diff = dropped.diff(&newest);
    assert!(stable.transplant(&newest, &dropped, &diff).is_none());
}

#[test]
fn staging_takes_replicas_and_file_contents_from_the_newest_inputs() {
    let old = Desired::of(&inputs(&two_routes(ON)));
    let mut live = inputs(&two_routes(ON).replace("127.0.0.1:6443", "127.0.0.9:6443"));
    live.files.insert("new.pem".into(), Ok(b"new"[..].into()));
    let mut fallback = crate::inputs::Files::new();
    fallback.insert("old.pem".into(), Ok(b"old"[..].into()));
    fallback.insert("new.pem".into(), Ok(b"stale"[..].into()));
    let staged = old.stage(&live, &fallback);
    let snapshot = compile(&staged).unwrap();
    assert_eq!(
        snapshot.route(&id("a")).unwrap().backends,
        vec!["127.0.0.9:6443".parse().unwrap()]
    );
    assert_eq!(staged.files["new.pem"], Ok(b"new"[..].into()));
    assert_eq!(staged.files["old.pem"], Ok(b"old"[..].into()));
}

#[test]
fn merging_serves_canaries_from_the_target_and_refuses_a_split_hostname() {
    let stable = compiled(&two_routes(ON));
    let target = compiled(
        &(gateway(ON)
            + &route("a", true, "a.example.com", "10.0.0.0/16")
            + &route("b", false, "b.example.com", "10.0.0.0/16")),
    );
    let canary = BTreeSet::from([id("a")]);
    let merged = merge(&stable, &target, &canary).unwrap();
    let a = merged.route(&id("a")).unwrap();
    let b = merged.route(&id("b")).unwrap();
    assert!(std::sync::Arc::ptr_eq(a, target.route(&id("a")).unwrap()));
    assert!(std::sync::Arc::ptr_eq(b, stable.route(&id("b")).unwrap()));

    // The target moves b's hostname to the canary a: staged, both would claim it.
    let moved = compiled(
        &(gateway(ON)
            + &route("a", true, "a.example.com, b.example.com", "10.0.0.0/8")
            + &route("b", false, "c.example.com", "10.0.0.0/8")),
    );
    let errs = merge(&stable, &moved, &canary).unwrap_err();
    assert_eq!(errs[0].field, "spec.hostnames", "{errs:?}");
}

#[test]
fn revision_ids_follow_policy_only() {
    let base = Desired::of(&inputs(&two_routes(ON)));
    let same = Desired::of(&inputs(&two_routes(ON).replace(
        "backends: {static: ['127.0.0.1:6443']}",
        "backends: {static: ['127.0.0.1:7443']}",
    )));
    assert_eq!(base.revision(), same.revision(), "replicas are not policy");
    let relabelled = Desired::of(&inputs(
        &two_routes(ON).replace("labels: {apigate.dev/canary: 'true'}", "labels: {}"),
    ));
    assert_eq!(
        base.revision(),
        relabelled.revision(),
        "labels are not policy"
    );
    let changed = Desired::of(&inputs(
        &(gateway(ON)
            + &route("a", true, "a.example.com", "10.0.0.0/16")
            + &route("b", false, "b.example.com", "10.0.0.0/8")),
    ));
    assert_ne!(base.revision(), changed.revision());
    assert_eq!(base.revision().len(), 16);
}

#[test]
fn overrides_rebuild_the_stable_revision_from_the_newest() {
    let stable = Desired::of(&inputs(
        &(gateway(ON)
            + &route("a", true, "a.example.com", "10.0.0.0/8")
            + &route("b", false, "b.example.com", "10.0.0.0/8")
            + &route("gone", false, "gone.example.com", "10.0.0.0/8")),
    ));
    let newest = Desired::of(&inputs(
        &(gateway(ON)
            + &route("a", true, "a.example.com", "10.1.0.0/16")
            + &route("b", false, "b.example.com", "10.0.0.0/8")
            + &route("new", false, "new.example.com", "10.0.0.0/8")),
    ));
    let overrides = stable.overrides(&newest);
    assert_eq!(
        overrides.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([id("a"), id("gone"), id("new")]),
        "only the routes that differ"
    );
    assert!(
        overrides[&id("new")].is_none(),
        "stable lacks the new route"
    );
    let rebuilt = Desired::with_overrides(&newest, &overrides);
    assert_eq!(rebuilt.revision(), stable.revision());
    assert!(stable.overrides(&stable).is_empty());
    // Through JSON, as the record carries them.
    let json: std::collections::BTreeMap<RouteId, Option<serde_json::Value>> = overrides
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref().map(|r| serde_json::to_value(r).unwrap()),
            )
        })
        .collect();
    let back: Overrides = json
        .into_iter()
        .map(|(k, v)| (k, v.map(|v| serde_json::from_value(v).unwrap())))
        .collect();
    assert_eq!(
        Desired::with_overrides(&newest, &back).revision(),
        stable.revision()
    );
}

#[test]
fn a_clusters_routes_compile_whatever_the_canary_selection() {
    let text = gateway(ON)
        + &route("a", false, "a.example.com", "10.0.0.0/8")
        + &route("b", false, "b.example.com", "10.0.0.0/8");
    assert!(compile(&inputs(&text)).is_err(), "a file is refused");
    let cluster = Inputs {
        scope: crate::inputs::Scope::Cluster,
        ..inputs(&text)
    };
    assert!(
        compile(&cluster).is_ok(),
        "the rollout controller judges instead"
    );
    let settings = compiled(&gateway(ON)).gateway.rollout;
    let desired = Desired::of(&inputs(&text));
    let (field, _) = selection_problem(&settings, desired.routes()).unwrap();
    assert_eq!(field, "spec.rollout.canary.label");
}
