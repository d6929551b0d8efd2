//! A static, path-compressed multibit trie answering one question: is an address inside
//! any of a set of prefixes? One trie per address family; built once per snapshot, never
//! modified.
//!
//! Because only *membership* matters (not which prefix matched), prefixes covered by a
//! shorter one are dropped at build time; the rest are pairwise disjoint, so every slot of
//! a node is exactly one of: covered, a child, or empty. Each node branches on up to
//! [`STRIDE`] bits at its own position, with a 64-bit "covered" bitmap (prefixes ending
//! inside the stride are expanded into the slots they cover) and a 64-bit "child" bitmap
//! whose popcount indexes the children, stored contiguously (breadth-first).
//!
//! Path compression: a node sits at the first bit where its prefixes diverge, so chains
//! of single-child levels vanish and a /128 costs no more than a /20. The bits skipped on
//! the way are verified once, against the key of the node where the walk ends on a
//! covered slot (a walk ending on an empty slot is a miss whatever those bits were). Keys
//! live in a parallel array, keeping nodes at 24 bytes and misses off the keys entirely.
//!
//! A lookup visits one node per branching point on the address's path: about
//! log64(n) + 1 nodes for random sets (4–5 at a million prefixes), never more than the
//! address width. Keys are `u128`, left-aligned (IPv4 in the top 32 bits), so one code
//! path serves both families.

use std::collections::VecDeque;

/// Bits consumed per node: 6 gives 64 slots, one `u64` bitmap each.
const STRIDE: u8 = 6;

/// One prefix: left-aligned key with host bits zero, and its length.
pub(super) type Prefix = (u128, u8);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Node {
    /// Slots (values of bits `pos..pos+stride`) entirely inside a prefix.
    covered: u64,
    /// Slots with a child node.
    children: u64,
    /// Index of the first child; the others follow in slot order.
    base: u32,
    /// First bit this node branches on (0 = most significant).
    pos: u8,
    /// Bits branched on, 1..=STRIDE.
    stride: u8,
}

/// The trie; empty (no nodes) contains nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Trie {
    nodes: Vec<Node>,
    /// Per node: the key bits above its `pos` (the rest zero), checked on a covered slot.
    keys: Vec<u128>,
}

/// Mask of the `len` most significant bits.
fn mask(len: u8) -> u128 {
    !u128::MAX.checked_shr(u32::from(len)).unwrap_or(0)
}

/// Whether `outer` contains `inner`.
fn covers(outer: Prefix, inner: Prefix) -> bool {
    outer.1 <= inner.1 && inner.0 & mask(outer.1) == outer.0
}

/// Sort, deduplicate and drop every prefix covered by another: what is left is pairwise
/// disjoint, in address order.
pub(super) fn disjoint(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
    prefixes.sort_unstable();
    let mut out: Vec<Prefix> = Vec::with_capacity(prefixes.len());
    for p in prefixes {
        // In (key, len) order a covering prefix comes first, and anything between it and
        // `p` lies inside it and was dropped: checking the last kept prefix suffices.
        if out.last().is_some_and(|last| covers(*last, p)) {
            continue;
        }
        out.push(p);
    }
    out
}

/// The `stride` bits of `key` starting at bit `pos`.
#[inline(always)]
fn slot(key: u128, pos: u8, stride: u8) -> u32 {
    (key.wrapping_shl(u32::from(pos)) >> (128 - u32::from(stride))) as u32
}

impl Trie {
    /// Build from prefixes of an address family `width` bits wide (32 or 128), keys
    /// left-aligned with host bits zero.
    pub(super) fn build(prefixes: Vec<Prefix>, width: u8) -> Trie {
        let prefixes = disjoint(prefixes);
        if prefixes.is_empty() {
            return Trie::default();
        }
        let mut nodes = vec![Node::default()];
        let mut keys = vec![0u128];
        // (node index, prefixes below it, first bit not yet consumed by its parent)
        let mut queue = VecDeque::from([(0usize, 0..prefixes.len(), 0u8)]);
        while let Some((index, range, start)) = queue.pop_front() {
            let group = &prefixes[range.clone()];
            let (first, last) = (group[0], group[group.len() - 1]);
            let pos = if group.len() == 1 {
                // A lone prefix: branch on its last bit, so it ends inside this node.
                first.1.saturating_sub(1).max(start)
            } else {
                // Disjoint prefixes differ before either ends: lcp < every length.
                (first.0 ^ last.0).leading_zeros().min(u32::from(width)) as u8
            };
            let stride = STRIDE.min(width - pos);
            let end = pos + stride;
            keys[index] = first.0 & mask(pos);
            let mut node = Node {
                pos,
                stride,
                base: nodes.len() as u32,
                ..Node::default()
            };
            let mut i = 0;
            while i < group.len() {
                let (key, len) = group[i];
                let s = slot(key, pos, stride);
                if len <= end {
                    let count = 1u32 << (end - len);
                    let bits = if count >= 64 {
                        u64::MAX
                    } else {
                        ((1u64 << count) - 1) << s
                    };
                    node.covered |= bits;
                    i += 1;
                } else {
                    let mut j = i + 1;
                    while j < group.len() && group[j].1 > end && slot(group[j].0, pos, stride) == s
                    {
                        j += 1;
                    }
                    node.children |= 1u64 << s;
                    queue.push_back((nodes.len(), range.start + i..range.start + j, end));
                    nodes.push(Node::default());
                    keys.push(0);
                    i = j;
                }
            }
            nodes[index] = node;
        }
        Trie { nodes, keys }
    }

    /// Whether the left-aligned address `addr` lies in any prefix.
    #[inline]
    pub(super) fn contains(&self, addr: u128) -> bool {
        let mut index = 0usize;
        while let Some(node) = self.nodes.get(index) {
            let bit = 1u64 << slot(addr, node.pos, node.stride);
            if node.covered & bit != 0 {
                let above = !u128::MAX.wrapping_shr(u32::from(node.pos));
                return self
                    .keys
                    .get(index)
                    .is_some_and(|key| (addr ^ key) & above == 0);
            }
            if node.children & bit == 0 {
                return false;
            }
            index = node.base as usize + (node.children & (bit - 1)).count_ones() as usize;
        }
        false
    }

    /// Number of nodes (24 bytes plus a 16-byte key each), for memory estimates in tests.
    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// Whether the union of `outer` covers every address of every prefix in `inner` (a prefix
/// may be covered by several of `outer` together). Not a hot path: for reload analysis.
pub(super) fn union_covers(outer: &[Prefix], inner: &[Prefix]) -> bool {
    // Merge the disjoint, sorted prefixes into maximal address intervals.
    let mut intervals: Vec<(u128, u128)> = Vec::new();
    for &(key, len) in &disjoint(outer.to_vec()) {
        let end = key | !mask(len);
        match intervals.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(key) => last.1 = end,
            _ => intervals.push((key, end)),
        }
    }
    inner.iter().all(|&(key, len)| {
        let end = key | !mask(len);
        let i = intervals.partition_point(|iv| iv.0 <= key);
        i > 0 && intervals[i - 1].1 >= end
    })
}
