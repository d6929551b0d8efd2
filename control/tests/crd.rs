//! The checked-in CRD must be exactly what the Rust types generate.

use std::path::PathBuf;

use apigate_control::source::kubernetes::crd::crd_yaml;
use apigate_control::source::kubernetes::rollout_record;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/crd/apigate.dev_apiserverroutes.yaml")
}

#[test]
fn checked_in_crd_matches_the_rust_types() {
    let generated = crd_yaml().expect("the CRD renders");
    if std::env::var_os("APIGATE_UPDATE_CRD").is_some() {
        std::fs::write(checked_in(), &generated).expect("write the CRD");
    }
    let file = std::fs::read_to_string(checked_in()).unwrap_or_default();
    assert!(
        file == generated,
        "manifests/crd/apigate.dev_apiserverroutes.yaml differs from the types in \
         control/src/source/kubernetes/crd.rs; regenerate it with \
         `APIGATE_UPDATE_CRD=1 cargo test -p apigate-control --test crd` \
         (or `apigate crd > manifests/crd/apigate.dev_apiserverroutes.yaml`)"
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

fn checked_in_rollout() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/crd/apigate.dev_apigaterollouts.yaml")
}

#[test]
fn checked_in_rollout_crd_matches_the_rust_types() {
    let generated = rollout_record::crd_yaml().expect("the CRD renders");
    if std::env::var_os("APIGATE_UPDATE_CRD").is_some() {
        std::fs::write(checked_in_rollout(), &generated).expect("write the CRD");
    }
    let file = std::fs::read_to_string(checked_in_rollout()).unwrap_or_default();
    assert!(
        file == generated,
        "manifests/crd/apigate.dev_apigaterollouts.yaml differs from the types in \
         control/src/source/kubernetes/rollout_record.rs; regenerate it with \
         `APIGATE_UPDATE_CRD=1 cargo test -p apigate-control --test crd` \
         (or `apigate crd rollouts > manifests/crd/apigate.dev_apigaterollouts.yaml`)"
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
