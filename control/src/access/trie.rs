//! A static, path-compressed multibit trie answering one question: is an address inside
//! any of a set of prefixes? One trie per address family; built once per snapshot, never
//! modified.
//!
//! Because only *membership* matters (not which prefix matched), prefixes covered by a
//! shorter one are dropped at build time; the rest are pairwise disjoint, so every slot of
//! a branch is exactly one of: covered, a child, or empty.
//!
//! * A **branch** consumes up to [`STRIDE`] bits at its own position, with a 64-bit
//!   "covered" bitmap (prefixes ending inside the stride are expanded into the slots they
//!   cover) and a 64-bit "child" bitmap whose popcount indexes the children, stored
//!   contiguously (breadth-first). It sits at the first bit where its prefixes diverge
//!   (path compression) and checks the bits above that in one masked compare, so chains
//!   of single-child levels vanish and a /128 costs no more than a /20.
//! * A **leaf** holds up to [`LEAF`] prefixes, compared directly. Below the first few
//!   (cache-hot) levels almost every path ends in one: a lookup in a big set touches about
//!   one cold cache line, instead of one per remaining level.
//!
//! * Sets of 4096 prefixes or more start with a **root table** indexed by the top 10–16
//!   bits, replacing the first two or three branch levels with one array read.
//!
//! Nodes are one cache line each. A lookup visits one node per branching point on the
//! address's path — about log64(n) + 1 for random sets; at a million prefixes one root
//! table read and 2–3 nodes — never more than the address width. Keys are `u128`,
//! left-aligned (IPv4 in the top 32 bits), so one code path serves both families.

use std::collections::VecDeque;

/// Bits consumed per branch: 6 gives 64 slots, one `u64` bitmap each.
const STRIDE: u8 = 6;
/// Prefixes per leaf: as many as fit in a 64-byte node.
const LEAF: usize = 3;

/// One prefix: left-aligned key with host bits zero, and its length.
pub(super) type Prefix = (u128, u8);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(align(64))]
enum Node {
    Branch {
        /// Key bits above `pos` (the rest zero): the bits every address below carries.
        key: u128,
        /// `mask(pos)`, precomputed: variable shifts of a `u128` are not free.
        above: u128,
        /// Slots (values of bits `pos..pos+stride`) entirely inside a prefix.
        covered: u64,
        /// Slots with a child node.
        children: u64,
        /// Index of the first child; the others follow in slot order.
        base: u32,
        /// `128 - (pos + stride)`: the slot is `(addr >> shift) & slots`.
        shift: u8,
        /// `2^stride - 1`.
        slots: u8,
    },
    Leaf {
        /// The first `count` entries are prefixes.
        keys: [u128; LEAF],
        lens: [u8; LEAF],
        count: u8,
    },
}

const _: () = assert!(std::mem::size_of::<Node>() == 64);

/// The trie; empty (no nodes) contains nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Trie {
    /// For big sets: entries for every value of the top bits ([`EMPTY`], [`COVERED`] or
    /// a node index plus [`FIRST_NODE`]), replacing the first two or three branch levels
    /// with one array read. Empty for small sets: then the walk starts at node 0.
    root: Vec<u32>,
    /// `128 - root table bits`.
    root_shift: u32,
    nodes: Vec<Node>,
}

/// Sets at least this big get a root table (4 KiB at this size, 256 KiB at most).
const ROOT_TABLE_MIN: usize = 4096;
/// Root table entry: no prefix under these top bits.
const EMPTY: u32 = 0;
/// Root table entry: a prefix covers every address with these top bits.
const COVERED: u32 = 1;
/// Root table entry: node `entry - FIRST_NODE` holds the prefixes under these top bits.
const FIRST_NODE: u32 = 2;

/// Mask of the `len` most significant bits.
#[inline(always)]
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
        let mut trie = Trie::default();
        // (node index, prefixes below it, first bit not yet consumed above it)
        let mut queue = VecDeque::new();
        if prefixes.len() >= ROOT_TABLE_MIN {
            let bits = (prefixes.len().ilog2() as u8)
                .saturating_sub(2)
                .clamp(8, 16)
                .min(width);
            let mut table = vec![EMPTY; 1 << bits];
            split(&prefixes, 0, 0, bits, |part| match part {
                Part::Covered { slot, count } => {
                    for entry in table.iter_mut().skip(slot as usize).take(count as usize) {
                        *entry = COVERED;
                    }
                }
                Part::Child { slot, range } => {
                    if let Some(entry) = table.get_mut(slot as usize) {
                        *entry = trie.nodes.len() as u32 + FIRST_NODE;
                    }
                    queue.push_back((trie.nodes.len(), range, bits));
                    trie.nodes.push(leaf(&[]));
                }
            });
            trie.root = table;
            trie.root_shift = 128 - u32::from(bits);
        } else if !prefixes.is_empty() {
            queue.push_back((0, 0..prefixes.len(), 0));
            trie.nodes.push(leaf(&[]));
        }
        while let Some((index, range, start)) = queue.pop_front() {
            let group = &prefixes[range.clone()];
            if group.len() <= LEAF {
                trie.nodes[index] = leaf(group);
                continue;
            }
            // Disjoint prefixes differ before either ends, so the longest common prefix
            // of the group is shorter than all of them (and at least `start`).
            let (first, last) = (group[0], group[group.len() - 1]);
            let pos = ((first.0 ^ last.0).leading_zeros() as u8).max(start);
            let stride = STRIDE.min(width.saturating_sub(pos)).max(1);
            let end = pos + stride;
            let (mut covered, mut children) = (0u64, 0u64);
            let base = trie.nodes.len() as u32;
            split(group, range.start, pos, end, |part| match part {
                Part::Covered { slot, count } => {
                    covered |= if count >= 64 {
                        u64::MAX
                    } else {
                        ((1u64 << count) - 1) << slot
                    };
                }
                Part::Child { slot, range } => {
                    children |= 1u64 << slot;
                    queue.push_back((trie.nodes.len(), range, end));
                    trie.nodes.push(leaf(&[]));
                }
            });
            trie.nodes[index] = Node::Branch {
                key: first.0 & mask(pos),
                above: mask(pos),
                covered,
                children,
                base,
                shift: 128 - end,
                slots: ((1u16 << stride) - 1) as u8,
            };
        }
        trie
    }

    /// Whether the left-aligned address `addr` lies in any prefix.
    #[inline]
    pub(super) fn contains(&self, addr: u128) -> bool {
        let mut index = 0usize;
        if !self.root.is_empty() {
            match self.root.get(addr.wrapping_shr(self.root_shift) as usize) {
                Some(&COVERED) => return true,
                Some(&entry) if entry >= FIRST_NODE => index = (entry - FIRST_NODE) as usize,
                _ => return false,
            }
        }
        while let Some(node) = self.nodes.get(index) {
            match *node {
                Node::Branch {
                    key,
                    above,
                    covered,
                    children,
                    base,
                    shift,
                    slots,
                } => {
                    // The bits skipped by path compression must match; checking all bits
                    // above `pos` is as cheap and ends a miss as early as possible.
                    if (addr ^ key) & above != 0 {
                        return false;
                    }
                    let bit =
                        1u64 << ((addr.wrapping_shr(u32::from(shift)) as u32) & u32::from(slots));
                    if covered & bit != 0 {
                        return true;
                    }
                    if children & bit == 0 {
                        return false;
                    }
                    index = base as usize + (children & (bit - 1)).count_ones() as usize;
                }
                Node::Leaf { keys, lens, count } => {
                    return keys
                        .iter()
                        .zip(lens)
                        .take(usize::from(count))
                        .any(|(key, len)| (addr ^ key).leading_zeros() >= u32::from(len));
                }
            }
        }
        false
    }

    /// Entries of the root table (0 without one), for tests.
    #[cfg(test)]
    pub(super) fn root_table_len(&self) -> usize {
        self.root.len()
    }

    /// Number of nodes (64 bytes each), for memory estimates in tests.
    #[cfg(test)]
    pub(super) fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

/// What [`split`] finds at a slot of a branch or the root table.
enum Part {
    /// A prefix ending within the stride covers `count` slots from `slot`.
    Covered { slot: u32, count: u32 },
    /// Longer prefixes (`range` of the full list) share `slot`: they go to a child.
    Child {
        slot: u32,
        range: std::ops::Range<usize>,
    },
}

/// Walk `group` (sorted, disjoint, sharing the bits above `pos`; it starts at
/// `offset` in the full list) by the value of bits `pos..end`.
fn split(group: &[Prefix], offset: usize, pos: u8, end: u8, mut visit: impl FnMut(Part)) {
    let stride = end - pos;
    let mut i = 0;
    while i < group.len() {
        let (key, len) = group[i];
        let s = slot(key, pos, stride);
        if len <= end {
            visit(Part::Covered {
                slot: s,
                count: 1u32 << (end - len.max(pos)),
            });
            i += 1;
        } else {
            // A prefix ending by `end` in this slot would cover the whole run; disjoint
            // prefixes rule that out, so the run is contiguous.
            let mut j = i + 1;
            while j < group.len() && group[j].1 > end && slot(group[j].0, pos, stride) == s {
                j += 1;
            }
            visit(Part::Child {
                slot: s,
                range: offset + i..offset + j,
            });
            i = j;
        }
    }
}

/// A leaf holding `group` (at most [`LEAF`] prefixes).
fn leaf(group: &[Prefix]) -> Node {
    let mut keys = [0u128; LEAF];
    let mut lens = [0u8; LEAF];
    for (i, (key, len)) in group.iter().take(LEAF).enumerate() {
        keys[i] = *key;
        lens[i] = *len;
    }
    Node::Leaf {
        keys,
        lens,
        count: group.len().min(LEAF) as u8,
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
