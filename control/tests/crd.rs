//! The checked-in CRD must be exactly what the Rust types generate.

use std::path::PathBuf;

use apigate_control::source::kubernetes::crd::crd_yaml;
use apigate_control::source::kubernetes::rollout_record;

/// The checked-in file `name` under `manifests/crd/` must equal `generated` (rendered
/// from `source`, printed by `apigate crd <kind>`); `APIGATE_UPDATE_CRD=1` rewrites it.
fn assert_checked_in(name: &str, generated: &str, source: &str, kind: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/crd")
        .join(name);
    if std::env::var_os("APIGATE_UPDATE_CRD").is_some() {
        let written = std::fs::write(&path, generated);
        assert!(written.is_ok(), "writing {}: {written:?}", path.display());
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        file == generated,
        "manifests/crd/{name} differs from the types in {source}; regenerate it with \
         `APIGATE_UPDATE_CRD=1 cargo test -p apigate-control --test crd` \
         (or `apigate crd {kind} > manifests/crd/{name}`)"
    );
}

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("the CRD renders");
    assert_checked_in(
        "apigate.dev_apiserverroutes.yaml",
        &generated,
        "control/src/source/kubernetes/crd.rs",
        "routes",
    );
}

#[test]
fn crd_is_namespaced_with_a_status_subresource_and_a_structural_schema() {
    let text = crd_yaml().unwrap();
    let crd: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["group"], "apigate.dev");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_mapping());
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let required: Vec<&str> = spec["required"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(required.contains(&"hostnames") && required.contains(&"backendRef"));
    // Structural schemas forbid references; every subschema must be inlined.
    assert!(!text.contains("$ref"));
}

#[test]
fn checked_in_rollout_crd_matches_the_rust_types() {
    let generated = rollout_record::crd_yaml().expect("the CRD renders");
    assert_checked_in(
        "apigate.dev_apigaterollouts.yaml",
        &generated,
        "control/src/source/kubernetes/rollout_record.rs",
        "rollouts",
    );
}

#[test]
fn rollout_crd_has_a_status_subresource_and_a_structural_schema() {
    let text = rollout_record::crd_yaml().unwrap();
    let crd: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert!(version["subresources"]["status"].is_mapping());
    let routes = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        ["stableRoutes"]["items"]["properties"]["route"];
    assert_eq!(routes["x-kubernetes-preserve-unknown-fields"], true);
    assert!(!text.contains("$ref"));
}
