//! The trie against a naive linear scan, and the whole decision against a naive
//! re-implementation, over random networks and addresses (fixed seed, bounded count).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn random_net(rng: &mut StdRng) -> IpNet {
    // Few distinct leading bits so that networks nest and overlap often.
    if rng.gen_bool(0.5) {
        let addr = Ipv4Addr::from(rng.gen::<u32>() & 0xC0FF_FFFF | 0x0A00_0000);
        IpNet::V4(Ipv4Net::new(addr, rng.gen_range(0..=32)).unwrap().trunc())
    } else {
        let addr = Ipv6Addr::from(rng.gen::<u128>() & !(0xFFFF_u128 << 112) | (0x2001 << 112));
        IpNet::V6(Ipv6Net::new(addr, rng.gen_range(0..=128)).unwrap().trunc())
    }
}

fn random_addr(rng: &mut StdRng, nets: &[IpNet]) -> IpAddr {
    // Half inside some network (hits, and addresses near boundaries), half random.
    let addr = if rng.gen_bool(0.5) && !nets.is_empty() {
        let net = nets[rng.gen_range(0..nets.len())];
        let flip = rng.gen_bool(0.2);
        match net {
            IpNet::V4(n) => {
                let host = u32::MAX.checked_shr(n.prefix_len().into()).unwrap_or(0);
                let mut a = u32::from(n.network()) | (rng.gen::<u32>() & host);
                if flip && n.prefix_len() > 0 {
                    a ^= 1 << (32 - u32::from(n.prefix_len())); // just outside
                }
                IpAddr::V4(a.into())
            }
            IpNet::V6(n) => {
                let host = u128::MAX.checked_shr(n.prefix_len().into()).unwrap_or(0);
                let mut a = u128::from(n.network()) | (rng.gen::<u128>() & host);
                if flip && n.prefix_len() > 0 {
                    a ^= 1 << (128 - u32::from(n.prefix_len()));
                }
                IpAddr::V6(a.into())
            }
        }
    } else if rng.gen_bool(0.5) {
        IpAddr::V4((rng.gen::<u32>() & 0xC0FF_FFFF | 0x0A00_0000).into())
    } else {
        IpAddr::V6((rng.gen::<u128>() & !(0xFFFF_u128 << 112) | (0x2001 << 112)).into())
    };
    // Sometimes present IPv4 clients as IPv4-mapped IPv6, as dual-stack sockets do.
    match addr {
        IpAddr::V4(a) if rng.gen_bool(0.25) => IpAddr::V6(a.to_ipv6_mapped()),
        other => other,
    }
}

fn naive_contains(nets: &[IpNet], addr: IpAddr) -> bool {
    let addr = addr.to_canonical();
    nets.iter().any(|n| n.contains(&addr))
}

#[test]
fn trie_matches_linear_scan() {
    let mut rng = StdRng::seed_from_u64(0x05ee_dac1);
    for round in 0..40 {
        let count = rng.gen_range(0..=200);
        let nets: Vec<IpNet> = (0..count).map(|_| random_net(&mut rng)).collect();
        let set = CidrSet::from_nets(nets.iter().copied());
        for _ in 0..500 {
            let addr = random_addr(&mut rng, &nets);
            assert_eq!(
                set.contains(addr),
                naive_contains(&nets, addr),
                "round {round}: {addr} in {nets:?}"
            );
        }
    }
}

#[test]
fn decide_matches_naive_evaluation() {
    let mut rng = StdRng::seed_from_u64(0xdec1de);
    let types = ["remote_ip", "direct_remote_ip", "source_ip"];
    for _ in 0..60 {
        let always: Vec<IpNet> = (0..rng.gen_range(0..4))
            .map(|_| random_net(&mut rng))
            .collect();
        let rules: Vec<(Action, bool, Vec<IpNet>)> = (0..rng.gen_range(0..5))
            .map(|_| {
                let action = if rng.gen_bool(0.5) {
                    Action::Allow
                } else {
                    Action::Deny
                };
                let direct = rng.gen_bool(0.3);
                let nets = (0..rng.gen_range(1..20))
                    .map(|_| random_net(&mut rng))
                    .collect();
                (action, direct, nets)
            })
            .collect();
        let default = if rng.gen_bool(0.5) {
            Action::Allow
        } else {
            Action::Deny
        };
        let spec = AccessControlSpec {
            rules: rules
                .iter()
                .map(|(action, direct, nets)| RuleSpec {
                    action: action.as_str().to_uppercase(),
                    address_type: Some(
                        if *direct {
                            types[1]
                        } else {
                            types[rng.gen_range(0..2) * 2]
                        }
                        .into(),
                    ),
                    cidrs: nets.iter().map(|n| n.to_string()).collect(),
                })
                .collect(),
            default_action: Some(default.as_str().into()),
        };
        let mut errors = Errors::default();
        let p = compile_policy(
            Some(&spec),
            None,
            &always,
            &[],
            1000,
            &object(),
            &mut errors,
        )
        .unwrap_or_else(|| panic!("{:?}", errors.into_vec()));
        let all: Vec<IpNet> = rules
            .iter()
            .flat_map(|r| r.2.clone())
            .chain(always.clone())
            .collect();
        for _ in 0..300 {
            let direct = random_addr(&mut rng, &all);
            let remote = random_addr(&mut rng, &all);
            let expected = if naive_contains(&always, remote) {
                Action::Allow
            } else {
                rules
                    .iter()
                    .find(|(_, is_direct, nets)| {
                        naive_contains(nets, if *is_direct { direct } else { remote })
                    })
                    .map_or(default, |r| r.0)
            };
            assert_eq!(
                p.decide(direct, remote).action,
                expected,
                "{direct} {remote} {spec:?}"
            );
        }
    }
}

#[test]
fn may_tighten_is_never_a_wrong_no() {
    // Random single-rule policies (the common shapes): whenever may_tighten says no, no
    // sampled address may go from allowed to denied.
    let mut rng = StdRng::seed_from_u64(0x7167);
    let make = |rng: &mut StdRng| {
        if rng.gen_bool(0.1) {
            return (AccessPolicy::allow_all(), Vec::new());
        }
        let nets: Vec<IpNet> = (0..rng.gen_range(1..6)).map(|_| random_net(rng)).collect();
        let always: Vec<IpNet> = (0..rng.gen_range(0..2)).map(|_| random_net(rng)).collect();
        let action = if rng.gen_bool(0.5) { "ALLOW" } else { "DENY" };
        let address_type = if rng.gen_bool(0.5) {
            "remote_ip"
        } else {
            "direct_remote_ip"
        };
        let config = GardenerAclConfig::new(RuleSpec {
            action: action.into(),
            address_type: Some(address_type.into()),
            cidrs: nets.iter().map(|n| n.to_string()).collect(),
        });
        let mut errors = Errors::default();
        let p = compile_policy(
            None,
            Some(&config),
            &always,
            &[],
            100,
            &object(),
            &mut errors,
        )
        .unwrap();
        (p, nets.into_iter().chain(always).collect())
    };
    let mut nos = 0;
    for _ in 0..300 {
        let (old, old_nets) = make(&mut rng);
        let (new, new_nets) = make(&mut rng);
        if new.may_tighten(&old) {
            continue;
        }
        nos += 1;
        let nets: Vec<IpNet> = old_nets.into_iter().chain(new_nets).collect();
        for _ in 0..200 {
            let (direct, remote) = (random_addr(&mut rng, &nets), random_addr(&mut rng, &nets));
            if old.decide(direct, remote).allowed() {
                assert!(
                    new.decide(direct, remote).allowed(),
                    "{old:?} -> {new:?}: {direct} {remote}"
                );
            }
        }
    }
    assert!(
        nos > 10,
        "the sample must exercise the 'no' answers ({nos})"
    );
}

#[test]
fn large_trie_matches_linear_scan() {
    let mut rng = StdRng::seed_from_u64(0x1a29e);
    let nets: Vec<IpNet> = (0..3000).map(|_| random_net(&mut rng)).collect();
    let set = CidrSet::from_nets(nets.iter().copied());
    for _ in 0..3000 {
        let addr = random_addr(&mut rng, &nets);
        assert_eq!(set.contains(addr), naive_contains(&nets, addr), "{addr}");
    }
}
