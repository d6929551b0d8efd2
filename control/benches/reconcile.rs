//! Benchmark of one Kubernetes-source reconcile at 5,000 routes (the scale target):
//! what a batch of changes pays between the watches and a snapshot.
//!
//! * `reconcile/5000/copy_world`: taking the world for a reconcile;
//! * `reconcile/5000/one_changed`: [`Reconciler::reconcile`] after one route's hostname
//!   changed to one never seen before (that route translated and compiled anew).
//!
//! Each route is a terminate route with its own serving Secret, a CA Secret per
//! namespace and a front-proxy Secret, real PEMs, and a Service with one slice of three
//! endpoints, like the `kube-scale` bench's objects.
//!
//! Run: `cargo bench -p apigate-control --bench reconcile`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use apigate_control::model::{parse_documents, RouteMode};
use apigate_control::source::kubernetes::crd::{
    BackendRef, RouteSpec, SecretKeyRef, ServingTlsRef, UpstreamRef,
};
use apigate_control::source::kubernetes::reconcile::Reconciler;
use apigate_control::source::kubernetes::world::{
    Endpoint, ObjectKey, RouteObject, SecretState, ServicePort, Slice, World,
};
use apigate_control::source::Inputs;
use criterion::{criterion_group, criterion_main, Criterion};

mod common;

use common::pem_pair;

const ROUTES: usize = 5_000;

fn spec(i: usize) -> RouteSpec {
    let reference = |name: &str, key: &str| SecretKeyRef {
        name: name.into(),
        key: Some(key.into()),
    };
    RouteSpec {
        hostnames: vec![format!("api.s{i}.example.com")],
        mode: RouteMode::Terminate,
        backend_ref: BackendRef {
            service: "kube-apiserver".into(),
            port: 443,
        },
        tls: Some(ServingTlsRef {
            secret_name: "serving".into(),
            client_ca: Some(reference("ca", "ca.crt")),
        }),
        upstream: Some(UpstreamRef {
            ca: reference("ca", "ca.crt"),
            server_name: None,
            front_proxy_secret_name: Some("front-proxy".into()),
        }),
        balancing: None,
        access_control: None,
        acl: None,
        always_allowed_cidrs: Vec::new(),
        destinations: Vec::new(),
        health: None,
        flow_control: None,
    }
}

fn world() -> World {
    let (ca_pem, _, ca, ca_key) = pem_pair("ca", None);
    let (srv, srv_key, _, _) = pem_pair("kubernetes.default.svc", Some((&ca, &ca_key)));
    let (fp, fp_key, _, _) = pem_pair("apigate-front-proxy", Some((&ca, &ca_key)));
    let tls = |crt: &str, key: &str| {
        SecretState::Present(BTreeMap::from([
            ("tls.crt".to_string(), crt.as_bytes().into()),
            ("tls.key".to_string(), key.as_bytes().into()),
        ]))
    };
    let mut world = World::default();
    for i in 0..ROUTES {
        let ns = format!("shoot--p--s{i}");
        world.routes.insert(
            ObjectKey::new(&ns, "kube-apiserver"),
            Arc::new(RouteObject {
                generation: 1,
                created: i as i64,
                uid: String::new(),
                resource_version: String::new(),
                labels: BTreeMap::new(),
                spec: spec(i),
                status: None,
            }),
        );
        world.services.insert(
            ObjectKey::new(&ns, "kube-apiserver"),
            Arc::new(vec![ServicePort {
                name: "https".into(),
                port: 443,
            }]),
        );
        world.slices.insert(
            ObjectKey::new(&ns, "kube-apiserver-abc"),
            Arc::new(Slice {
                service: "kube-apiserver".into(),
                ports: vec![("https".into(), 6443)],
                endpoints: (0..3)
                    .map(|r| Endpoint {
                        addresses: vec![format!("10.{r}.{}.{}", i / 256, i % 256)],
                        ready: true,
                        terminating: false,
                    })
                    .collect(),
            }),
        );
        world.secrets.insert(
            ObjectKey::new(&ns, "serving"),
            Arc::new(tls(&srv, &srv_key)),
        );
        world.secrets.insert(
            ObjectKey::new(&ns, "front-proxy"),
            Arc::new(tls(&fp, &fp_key)),
        );
        world.secrets.insert(
            ObjectKey::new(&ns, "ca"),
            Arc::new(SecretState::Present(BTreeMap::from([(
                "ca.crt".to_string(),
                ca_pem.as_bytes().into(),
            )]))),
        );
    }
    world
}

fn bench(c: &mut Criterion) {
    let base = Inputs {
        objects: parse_documents(
            "apiVersion: apigate.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: gw}\nspec:\n  listeners: [{name: https, address: '127.0.0.1:0'}]\n",
            "bench.yaml",
        )
        .unwrap_or_else(|e| panic!("{e:?}")),
        ..Inputs::default()
    };
    let mut world = world();
    let mut reconciler = Reconciler::default();
    if let Err(errors) = reconciler.reconcile(&base, &world).snapshot {
        panic!("{errors:?}");
    }
    let mut group = c.benchmark_group(format!("reconcile/{ROUTES}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.bench_function("copy_world", |b| b.iter(|| black_box(world.clone())));
    let changed = ObjectKey::new("shoot--p--s7", "kube-apiserver");
    let mut round = 0u64;
    group.bench_function("one_changed", |b| {
        b.iter(|| {
            round += 1;
            if let Some(route) = world.routes.get_mut(&changed) {
                Arc::make_mut(route).spec.hostnames = vec![format!("h{round}.s7.example.com")];
            }
            black_box(reconciler.reconcile(&base, &world).snapshot.is_ok())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
