//! Benchmarks of the source-IP allowlist core (`apigate_control::access`).
//!
//! * `contains/<n>/<hit|miss>`: one [`CidrSet::contains`] lookup in a set of `n` random
//!   networks, half IPv4 (prefix lengths 8..=32), half IPv6 (16..=128). The target is
//!   < 100 ns at 1,000,000 networks: the lookup must not grow with the set.
//! * `decide/<n>/<hit|miss>`: the full per-connection decision of a policy with one allow
//!   rule of `n` networks plus a few always-allowed networks, as the proxy calls it.
//! * `compile/5000x50`: [`compile_policy`] for 5,000 routes of 50 CIDRs each, i.e. the
//!   allowlist share of compiling a large snapshot.
//!
//! Run: `cargo bench -p apigate-control --bench access`. Measurement times are short so
//! the whole run stays around a minute on a small machine.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use apigate_control::access::{
    compile_policy, AccessControlSpec, CidrSet, GardenerAclConfig, RuleSpec,
};
use apigate_control::error::Errors;
use apigate_control::ObjectRef;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SIZES: [usize; 3] = [50, 10_000, 1_000_000];
/// Addresses cycled through per benchmark, so one lookup's trie path is not simply cached.
const PROBES: usize = 4096;

fn random_net(rng: &mut StdRng) -> IpNet {
    if rng.gen_bool(0.5) {
        let len = rng.gen_range(8..=32);
        Ipv4Net::new(Ipv4Addr::from(rng.gen::<u32>()), len)
            .map(|n| IpNet::V4(n.trunc()))
            .unwrap_or_else(|_| unreachable!("prefix length in range"))
    } else {
        let len = rng.gen_range(16..=128);
        Ipv6Net::new(Ipv6Addr::from(rng.gen::<u128>()), len)
            .map(|n| IpNet::V6(n.trunc()))
            .unwrap_or_else(|_| unreachable!("prefix length in range"))
    }
}

/// A random address inside `net`.
fn inside(net: IpNet, rng: &mut StdRng) -> IpAddr {
    match net {
        IpNet::V4(n) => {
            let host = u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(
                u32::from(n.network()) | (rng.gen::<u32>() & host),
            ))
        }
        IpNet::V6(n) => {
            let host = u128::MAX
                .checked_shr(u32::from(n.prefix_len()))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(
                u128::from(n.network()) | (rng.gen::<u128>() & host),
            ))
        }
    }
}

fn random_addr(rng: &mut StdRng) -> IpAddr {
    if rng.gen_bool(0.5) {
        IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>()))
    } else {
        IpAddr::V6(Ipv6Addr::from(rng.gen::<u128>()))
    }
}

struct Fixture {
    nets: Vec<IpNet>,
    hits: Vec<IpAddr>,
    misses: Vec<IpAddr>,
}

fn fixture(n: usize, set: impl Fn(&[IpNet]) -> CidrSet) -> (Fixture, CidrSet) {
    let mut rng = StdRng::seed_from_u64(0x00ac_1000 + n as u64);
    let nets: Vec<IpNet> = (0..n).map(|_| random_net(&mut rng)).collect();
    let cidrs = set(&nets);
    let hits = (0..PROBES)
        .map(|_| inside(nets[rng.gen_range(0..nets.len())], &mut rng))
        .collect();
    // Random addresses not in the set. With a million short IPv4 prefixes the whole IPv4
    // space is covered, so misses may end up IPv6 only; the count printed says so.
    let mut misses = Vec::with_capacity(PROBES);
    for _ in 0..PROBES * 1000 {
        if misses.len() == PROBES {
            break;
        }
        let ip = random_addr(&mut rng);
        if !cidrs.contains(ip) {
            misses.push(ip);
        }
    }
    // A power-of-two count lets the benchmark loop pick probes with a mask, not a division.
    let keep = if misses.is_empty() {
        0
    } else {
        1usize << misses.len().ilog2()
    };
    misses.truncate(keep);
    let v4 = misses.iter().filter(|ip| ip.is_ipv4()).count();
    eprintln!(
        "{n} networks: {} miss probes ({v4} IPv4, {} IPv6)",
        misses.len(),
        misses.len() - v4
    );
    (Fixture { nets, hits, misses }, cidrs)
}

fn object() -> ObjectRef {
    ObjectRef::Named {
        kind: "ApiServerRoute".into(),
        namespace: "bench".into(),
        name: "route".into(),
    }
}

fn lookups(c: &mut Criterion) {
    let mut contains = c.benchmark_group("contains");
    contains
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .throughput(Throughput::Elements(1));
    let mut fixtures = Vec::new();
    for n in SIZES {
        let (fx, set) = fixture(n, |nets| CidrSet::from_nets(nets.iter().copied()));
        for (kind, probes) in [("hit", &fx.hits), ("miss", &fx.misses)] {
            if probes.is_empty() {
                continue;
            }
            let mut i = 0usize;
            contains.bench_function(BenchmarkId::new(n.to_string(), kind), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(set.contains(black_box(probes[i & (probes.len() - 1)])))
                })
            });
        }
        drop(set);
        fixtures.push(fx);
    }
    contains.finish();

    let mut decide = c.benchmark_group("decide");
    decide
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .throughput(Throughput::Elements(1));
    let always: Vec<IpNet> = ["10.250.0.0/16", "100.64.0.0/10", "fd00:10::/64"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    for (n, fx) in SIZES.into_iter().zip(&fixtures) {
        let spec = GardenerAclConfig::new(RuleSpec {
            action: "ALLOW".into(),
            address_type: Some("remote_ip".into()),
            cidrs: fx.nets.iter().map(|n| n.to_string()).collect(),
        });
        let mut errors = Errors::default();
        let Some(policy) =
            compile_policy(None, Some(&spec), &always, &[], n, &object(), &mut errors)
        else {
            panic!("benchmark policy must compile: {:?}", errors.into_vec());
        };
        let peer: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        for (kind, probes) in [("hit", &fx.hits), ("miss", &fx.misses)] {
            if probes.is_empty() {
                continue;
            }
            let mut i = 0usize;
            decide.bench_function(BenchmarkId::new(n.to_string(), kind), |b| {
                b.iter(|| {
                    i = i.wrapping_add(1);
                    black_box(policy.decide(peer, black_box(probes[i & (probes.len() - 1)])))
                })
            });
        }
    }
    decide.finish();
}

fn compile(c: &mut Criterion) {
    const ROUTES: usize = 5000;
    const PER_ROUTE: usize = 50;
    let mut rng = StdRng::seed_from_u64(0x00ac_2000);
    let specs: Vec<AccessControlSpec> = (0..ROUTES)
        .map(|_| AccessControlSpec {
            rules: vec![RuleSpec {
                action: "allow".into(),
                address_type: None,
                cidrs: (0..PER_ROUTE)
                    .map(|_| random_net(&mut rng).to_string())
                    .collect(),
            }],
            default_action: None,
        })
        .collect();
    let always: Vec<IpNet> = ["10.250.0.0/16", "100.64.0.0/10"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let route_always = vec!["10.180.0.0/16".to_string(), "203.0.113.7/32".to_string()];
    let object = object();
    let mut group = c.benchmark_group("compile");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(8))
        .sample_size(10)
        .throughput(Throughput::Elements(ROUTES as u64));
    group.bench_function(format!("{ROUTES}x{PER_ROUTE}"), |b| {
        b.iter(|| {
            let mut errors = Errors::default();
            let policies: Vec<_> = specs
                .iter()
                .map(|spec| {
                    compile_policy(
                        Some(spec),
                        None,
                        &always,
                        &route_always,
                        1000,
                        &object,
                        &mut errors,
                    )
                })
                .collect();
            assert!(errors.is_empty());
            black_box(policies)
        })
    });
    group.finish();
}

criterion_group!(benches, lookups, compile);
criterion_main!(benches);
