//! The in-memory id -> pointer table: sparse, so one large id costs one leaf of memory,
//! not a table entry for every id below it.

use std::collections::BTreeMap;

/// Ids per leaf (a leaf is 32 KiB).
const LEAF: u64 = 4096;

/// The in-memory value of an id whose tracker entry does not decode (bad checksum or an
/// impossible pointer): non-zero, and no page/slot pair (see `format::decode_ptr`).
pub(crate) const CORRUPT: u64 = u32::MAX as u64;

#[derive(Clone, Debug)]
struct Leaf {
    ptrs: Box<[u64]>,
    /// Non-zero entries in `ptrs`.
    used: u32,
}

/// Tracker pointers by id (0 = no value), in leaves of 4096 ids allocated on first use and
/// dropped when their last pointer is cleared.
#[derive(Clone, Debug, Default)]
pub(crate) struct PtrTable {
    leaves: BTreeMap<u64, Leaf>,
}

impl PtrTable {
    /// The pointer of `id` (0 when it has none).
    pub(crate) fn get(&self, id: u64) -> u64 {
        self.leaves
            .get(&(id / LEAF))
            .map_or(0, |l| l.ptrs[(id % LEAF) as usize])
    }

    /// Sets the pointer of `id` (0 clears it).
    pub(crate) fn set(&mut self, id: u64, ptr: u64) {
        let key = id / LEAF;
        let i = (id % LEAF) as usize;
        if ptr == 0 {
            let Some(leaf) = self.leaves.get_mut(&key) else {
                return;
            };
            if leaf.ptrs[i] != 0 {
                leaf.ptrs[i] = 0;
                leaf.used -= 1;
                if leaf.used == 0 {
                    self.leaves.remove(&key);
                }
            }
            return;
        }
        let leaf = self.leaves.entry(key).or_insert_with(|| Leaf {
            ptrs: vec![0; LEAF as usize].into_boxed_slice(),
            used: 0,
        });
        if leaf.ptrs[i] == 0 {
            leaf.used += 1;
        }
        leaf.ptrs[i] = ptr;
    }

    /// The first id at or after `from` that has a pointer, with it.
    pub(crate) fn next_from(&self, from: u64) -> Option<(u64, u64)> {
        self.leaves.range(from / LEAF..).find_map(|(&key, leaf)| {
            let skip = if key == from / LEAF { from % LEAF } else { 0 };
            leaf.ptrs
                .iter()
                .enumerate()
                .skip(skip as usize)
                .find(|&(_, &p)| p != 0)
                .map(|(i, &p)| (key * LEAF + i as u64, p))
        })
    }

    /// Every id that has a pointer, with it, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.leaves.iter().flat_map(|(&key, leaf)| {
            leaf.ptrs
                .iter()
                .enumerate()
                .filter(|&(_, &p)| p != 0)
                .map(move |(i, &p)| (key * LEAF + i as u64, p))
        })
    }

    /// Leaves allocated (for tests of the memory bound).
    #[cfg(test)]
    pub(crate) fn leaves(&self) -> usize {
        self.leaves.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_large_id_costs_one_leaf() {
        let mut t = PtrTable::default();
        t.set(4_000_000_000, 7);
        assert_eq!(t.leaves(), 1);
        assert_eq!(t.get(4_000_000_000), 7);
        assert_eq!(t.get(3_999_999_999), 0);
        assert_eq!(t.next_from(0), Some((4_000_000_000, 7)));
        t.set(4_000_000_000, 0);
        assert_eq!(
            t.leaves(),
            0,
            "a leaf whose last pointer is cleared is dropped"
        );
        assert_eq!(t.next_from(0), None);
    }

    proptest! {
        /// The table behaves like a map from id to non-zero pointer.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((0u64..20_000, 0u64..4), 0..200),
                         probes in proptest::collection::vec(0u64..21_000, 0..20)) {
            let mut t = PtrTable::default();
            let mut m = BTreeMap::new();
            for (id, p) in ops {
                t.set(id, p);
                if p == 0 { m.remove(&id); } else { m.insert(id, p); }
            }
            prop_assert_eq!(t.iter().collect::<Vec<_>>(), m.iter().map(|(&k, &v)| (k, v)).collect::<Vec<_>>());
            let keys: std::collections::BTreeSet<u64> = m.keys().map(|k| k / LEAF).collect();
            prop_assert_eq!(t.leaves(), keys.len());
            for id in probes {
                prop_assert_eq!(t.get(id), m.get(&id).copied().unwrap_or(0));
                prop_assert_eq!(t.next_from(id), m.range(id..).next().map(|(&k, &v)| (k, v)));
            }
        }
    }
}
