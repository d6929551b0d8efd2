//! The trie's own invariants: covered prefixes dropped, size linear in the input,
//! and interval coverage exact against brute force.

use std::net::Ipv4Addr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::trie::{disjoint, union_covers, Prefix, Trie};

fn v4(text: &str) -> Prefix {
    let net: ipnet::Ipv4Net = text.parse().unwrap();
    (u128::from(u32::from(net.network())) << 96, net.prefix_len())
}

fn addr(a: Ipv4Addr) -> u128 {
    u128::from(u32::from(a)) << 96
}

#[test]
fn covered_prefixes_are_dropped() {
    let out = disjoint(vec![
        v4("10.1.0.0/16"),
        v4("10.0.0.0/8"),
        v4("10.0.0.0/8"),
        v4("11.0.0.0/24"),
        v4("11.0.0.0/25"),
        v4("11.0.1.0/24"),
    ]);
    assert_eq!(
        out,
        [v4("10.0.0.0/8"), v4("11.0.0.0/24"), v4("11.0.1.0/24")]
    );
}

#[test]
fn single_prefixes_at_every_length() {
    for len in 0..=32u8 {
        let net = ipnet::Ipv4Net::new(Ipv4Addr::new(203, 0, 113, 77), len)
            .unwrap()
            .trunc();
        let trie = Trie::build(vec![(addr(net.network()), len)], 32);
        assert!(trie.contains(addr(net.network())), "/{len}");
        assert!(trie.contains(addr(net.broadcast())), "/{len}");
        if len > 0 {
            let outside = u32::from(net.network()) ^ (1 << (32 - u32::from(len)));
            assert!(!trie.contains(addr(outside.into())), "/{len}");
        }
    }
    let trie = Trie::build(vec![(1u128, 128)], 128);
    assert!(trie.contains(1));
    assert!(!trie.contains(0) && !trie.contains(3));
    assert!(!Trie::default().contains(0));
}

#[test]
fn size_is_linear_in_the_prefixes() {
    let mut rng = StdRng::seed_from_u64(0x7e1e);
    let n = 20_000;
    let prefixes: Vec<Prefix> = (0..n)
        .map(|_| {
            let len = rng.gen_range(16..=128u8);
            let key = rng.gen::<u128>() & !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            (key, len)
        })
        .collect();
    let trie = Trie::build(prefixes.clone(), 128);
    assert!(trie.node_count() < 2 * n, "{} nodes", trie.node_count());
    for (key, _) in prefixes.iter().take(1000) {
        assert!(trie.contains(*key));
    }
}

#[test]
fn union_covers_matches_brute_force() {
    // Prefixes inside 10.0.0.0/24 so that every address can be enumerated.
    let mut rng = StdRng::seed_from_u64(0xc0fe);
    let random = |rng: &mut StdRng| -> Prefix {
        let len = rng.gen_range(24..=32u8);
        let net_bits = !u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
        let host = u32::from(rng.gen::<u8>()) & net_bits;
        (addr(Ipv4Addr::from(0x0A00_0000 | host)), len)
    };
    for _ in 0..300 {
        let outer: Vec<Prefix> = (0..rng.gen_range(0..8)).map(|_| random(&mut rng)).collect();
        let inner: Vec<Prefix> = (0..rng.gen_range(0..3)).map(|_| random(&mut rng)).collect();
        let trie = Trie::build(outer.clone(), 32);
        let naive = inner.iter().all(|&(key, len)| {
            let size = 1u32 << (32 - u32::from(len));
            let base = (key >> 96) as u32;
            (0..size).all(|i| trie.contains(u128::from(base + i) << 96))
        });
        assert_eq!(union_covers(&outer, &inner), naive, "{outer:?} ⊇ {inner:?}");
    }
}

#[test]
fn deep_branches_match_brute_force() {
    // Many prefixes sharing 100+ leading bits: branches far below bit 64, and every
    // length from the common prefix to /128, nested and adjacent.
    let mut rng = StdRng::seed_from_u64(0xdee9);
    let common: u128 = 0x2001_0db8_0001_0002_0003_0004_0005_0000;
    for _ in 0..50 {
        let prefixes: Vec<Prefix> = (0..rng.gen_range(1..60))
            .map(|_| {
                let len = rng.gen_range(104..=128u8);
                let key = (common | u128::from(rng.gen::<u32>() & 0x00FF_FFFF))
                    & !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
                (key, len)
            })
            .collect();
        let trie = Trie::build(prefixes.clone(), 128);
        for _ in 0..300 {
            let a = common | u128::from(rng.gen::<u32>() & 0x00FF_FFFF);
            let naive = prefixes
                .iter()
                .any(|&(key, len)| a & !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0) == key);
            assert_eq!(trie.contains(a), naive, "{a:x} in {prefixes:x?}");
        }
        assert!(!trie.contains(common ^ (1 << 100)));
    }
}

#[test]
fn root_table_matches_brute_force() {
    // Big enough for the root table, in both families, with some nesting, neighbours,
    // and probes both inside and just outside.
    let mut rng = StdRng::seed_from_u64(0x7ab1e);
    for (width, lens) in [(32u8, 18..=32u8), (128, 28..=128)] {
        let prefixes: Vec<Prefix> = (0..12_000)
            .map(|_| {
                // A few short prefixes cover whole root-table entries.
                let len = if rng.gen_bool(0.01) {
                    rng.gen_range(6..=10)
                } else {
                    rng.gen_range(lens.clone())
                };
                let bits = rng.gen::<u128>();
                (
                    bits & !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0),
                    len,
                )
            })
            .collect();
        let trie = Trie::build(prefixes.clone(), width);
        assert!(
            trie.root_table_len() > 0,
            "/{width}: the root table is exercised"
        );
        let inside =
            |p: &Prefix, a: u128| a & !u128::MAX.checked_shr(u32::from(p.1)).unwrap_or(0) == p.0;
        for _ in 0..1500 {
            let p = prefixes[rng.gen_range(0..prefixes.len())];
            let host = rng.gen::<u128>() & u128::MAX.checked_shr(u32::from(p.1)).unwrap_or(0);
            let mut a = p.0 | host;
            if rng.gen_bool(0.5) {
                a ^= 1 << (128 - u32::from(p.1));
            }
            if width == 32 {
                a &= !(u128::MAX >> 32);
            }
            let naive = prefixes.iter().any(|p| inside(p, a));
            assert_eq!(trie.contains(a), naive, "/{width}: {a:x}");
        }
    }
}
