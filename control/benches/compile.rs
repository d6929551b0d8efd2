//! Benchmark of compiling 5,000 terminate routes (the Kubernetes source's scale
//! target) when nothing or one route changed: what every reconcile batch pays before a
//! change is active.
//!
//! * `compile_cached/5000/warm`: [`compile_cached`] with every route in the cache;
//! * `compile_cached/5000/one_changed`: the same with one route's hostname changed to
//!   one never compiled before (that route is compiled anew, the rest are cached).
//!
//! Every route references five files (serving certificate and key, client CA, upstream
//! CA, front-proxy certificate and key) named like the Kubernetes source's Secret keys,
//! with real PEM contents.
//!
//! Run: `cargo bench -p apigate-control --bench compile`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use apigate_control::compile::{compile_cached, RouteCache};
use apigate_control::inputs::{Files, Inputs};
use apigate_control::model::parse_documents;
use criterion::{criterion_group, criterion_main, Criterion};

mod common;

use common::pem_pair;

const ROUTES: usize = 5_000;

/// The PEMs every route references: CA, serving certificate and key, front-proxy
/// certificate and key.
struct Pems {
    ca: String,
    srv: String,
    srv_key: String,
    fp: String,
    fp_key: String,
}

fn pems() -> Pems {
    let (ca_pem, _, ca, ca_key) = pem_pair("ca", None);
    let (srv, srv_key, _, _) = pem_pair("kubernetes.default.svc", Some((&ca, &ca_key)));
    let (fp, fp_key, _, _) = pem_pair("apigate-front-proxy", Some((&ca, &ca_key)));
    Pems {
        ca: ca_pem,
        srv,
        srv_key,
        fp,
        fp_key,
    }
}

/// The routes, route 7 with `host7` as its hostname's first label.
fn inputs(pems: &Pems, host7: &str) -> Inputs {
    let Pems {
        ca: ca_pem,
        srv,
        srv_key,
        fp,
        fp_key,
    } = pems;
    let mut text = String::from(
        "apiVersion: apigate.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: gw}\nspec:\n  listeners: [{name: https, address: '127.0.0.1:0'}]\n",
    );
    let mut files = Files::new();
    for i in 0..ROUTES {
        let ns = format!("shoot--p--s{i}");
        let file = |secret: &str, key: &str| format!("Secret {ns}/{secret} key {key}");
        for (path, content) in [
            (file("serving", "tls.crt"), srv),
            (file("serving", "tls.key"), srv_key),
            (file("ca", "ca.crt"), ca_pem),
            (file("fp", "tls.crt"), fp),
            (file("fp", "tls.key"), fp_key),
        ] {
            files.insert(path.into(), Ok(content.as_bytes().into()));
        }
        let host = if i == 7 { host7 } else { "api" };
        text += &format!(
            "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: kube-apiserver, namespace: {ns}}}
spec:
  hostnames: [{host}.s{i}.example.com]
  backends: {{static: ['10.0.{}.{}:443']}}
  tls: {{certFile: '{}', keyFile: '{}', clientCAFile: '{}'}}
  upstream: {{caFile: '{}', serverName: kubernetes.default.svc, frontProxyCertFile: '{}', frontProxyKeyFile: '{}'}}
  accessControl: {{rules: [{{action: allow, cidrs: ['10.0.0.0/8', '192.168.0.0/16']}}]}}
",
            i / 256,
            i % 256,
            file("serving", "tls.crt"),
            file("serving", "tls.key"),
            file("ca", "ca.crt"),
            file("ca", "ca.crt"),
            file("fp", "tls.crt"),
            file("fp", "tls.key"),
        );
    }
    let objects = parse_documents(&text, "bench.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    Inputs {
        objects,
        files,
        ..Inputs::default()
    }
}

fn bench(c: &mut Criterion) {
    let pems = pems();
    let base = inputs(&pems, "api");
    let mut cache = RouteCache::default();
    if let Err(errors) = compile_cached(&base, &mut cache) {
        panic!("{errors:?}");
    }
    let mut group = c.benchmark_group(format!("compile_cached/{ROUTES}"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("warm", |b| {
        b.iter(|| black_box(compile_cached(&base, &mut cache).is_ok()))
    });
    // A hostname never seen before on each iteration; building the inputs is setup.
    let mut round = 0u64;
    group.bench_function("one_changed", |b| {
        b.iter_batched(
            || {
                round += 1;
                inputs(&pems, &format!("h{round}"))
            },
            |changed| black_box(compile_cached(&changed, &mut cache).is_ok()),
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
