//! Benchmarks of what sharing a rollout costs per pass over the routes, at 5,000
//! routes (the Kubernetes source's scale target):
//!
//! * `overrides/5000/<changed>`: [`Desired::overrides`] of a stable revision against the
//!   newest with `changed` routes different, what the leader writes;
//! * `rebuild/5000/<changed>`: [`Desired::with_overrides`] plus its content id
//!   ([`Desired::revision`], computed afresh for the rebuilt revision), what a follower
//!   does with the record; with 0 changed routes it is a copy plus the id.
//!
//! Run: `cargo bench -p apigate-control --bench rollout`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use apigate_control::inputs::Inputs;
use apigate_control::model::parse_documents;
use apigate_control::rollout::Desired;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const ROUTES: usize = 5_000;

/// `ROUTES` terminate routes like the Kubernetes source's; the first `wide` of them
/// with a second hostname.
fn desired(wide: usize) -> Desired {
    let mut text = String::from(
        "apiVersion: apigate.dev/v1alpha1\nkind: GatewayConfig\nmetadata: {name: gw}\nspec:\n  listeners: [{name: https, address: '127.0.0.1:0'}]\n",
    );
    for i in 0..ROUTES {
        let extra = if i < wide {
            format!(", wide{i}.example.com")
        } else {
            String::new()
        };
        text += &format!(
            "---
apiVersion: apigate.dev/v1alpha1
kind: ApiServerRoute
metadata: {{name: kube-apiserver, namespace: shoot--p--s{i}, labels: {{apigate.dev/canary: 'false'}}}}
spec:
  hostnames: [api.s{i}.example.com{extra}]
  backends: {{static: ['10.0.{}.{}:443', '10.1.{}.{}:443', '10.2.{}.{}:443']}}
  tls: {{certFile: 'Secret shoot--p--s{i}/serving key tls.crt', keyFile: 'Secret shoot--p--s{i}/serving key tls.key', clientCAFile: 'Secret shoot--p--s{i}/ca key ca.crt'}}
  upstream: {{caFile: 'Secret shoot--p--s{i}/ca key ca.crt', serverName: kubernetes.default.svc, frontProxyCertFile: 'Secret shoot--p--s{i}/fp key tls.crt', frontProxyKeyFile: 'Secret shoot--p--s{i}/fp key tls.key'}}
  accessControl: {{rules: [{{action: allow, cidrs: ['10.0.0.0/8', '192.168.0.0/16', '2001:db8::/32']}}]}}
",
            i / 256, i % 256, i / 256, i % 256, i / 256, i % 256
        );
    }
    let objects = parse_documents(&text, "bench.yaml").unwrap_or_else(|e| panic!("{e:?}"));
    Desired::of(&Inputs {
        objects,
        ..Inputs::default()
    })
}

fn bench(c: &mut Criterion) {
    let stable = desired(0);
    let mut group = c.benchmark_group("rollout");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(3));
    for changed in [0, 1, 1_000] {
        let newest = desired(changed);
        group.bench_function(
            BenchmarkId::new(format!("overrides/{ROUTES}"), changed),
            |b| b.iter(|| black_box(stable.overrides(&newest))),
        );
        let overrides = stable.overrides(&newest);
        let id = stable.revision();
        group.bench_function(
            BenchmarkId::new(format!("rebuild/{ROUTES}"), changed),
            |b| {
                b.iter(|| {
                    let rebuilt = Desired::with_overrides(&newest, &overrides);
                    assert_eq!(rebuilt.revision(), id);
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
