//! The in-memory id -> pointer table: sparse, so one large id costs one leaf of memory,
//! not a table entry for every id below it. Next to each pointer it keeps where the value
//! is and how to check it ([`Loc`]), copied from a verified slot entry, so a read goes from
//! the id straight to the value's bytes without reading the slot entry.

use std::collections::BTreeMap;

use crate::format::Slot;

/// Ids per leaf (a leaf is 128 KiB: 32 bytes per id).
const LEAF: u64 = 4096;

/// The in-memory value of an id whose tracker entry does not decode (bad checksum or an
/// impossible pointer): non-zero, and no page/slot pair (see `format::decode_ptr`).
pub(crate) const CORRUPT: u64 = u32::MAX as u64;

/// Where an id's value is and how to check it: the fields of its slot entry a read needs,
/// copied when the entry was written or verified on open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Loc {
    /// Container offset in the page.
    pub offset: u32,
    /// Stored bytes.
    pub stored_len: u32,
    /// Raw bytes.
    pub raw_len: u32,
    /// Checksum of the stored bytes.
    pub value_sum: u32,
    /// Dictionary id.
    pub dict_id: u16,
    /// Codec; 0 (no codec has it) when nothing is known: the reader then reads and checks
    /// the slot entry.
    pub codec: u8,
}

impl Loc {
    /// The fields of a verified slot.
    pub(crate) fn of(s: &Slot) -> Loc {
        Loc {
            offset: s.offset,
            stored_len: s.stored_len,
            raw_len: s.raw_len,
            value_sum: s.value_sum,
            dict_id: s.dict_id,
            codec: s.codec,
        }
    }

    fn known(&self) -> bool {
        self.codec != 0
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    ptr: u64,
    loc: Loc,
}

#[derive(Clone, Debug)]
struct Leaf {
    entries: Box<[Entry]>,
    /// Entries with a non-zero pointer.
    used: u32,
}

/// Tracker pointers by id (0 = no value), in leaves of 4096 ids allocated on first use and
/// dropped when their last pointer is cleared.
#[derive(Clone, Debug, Default)]
pub(crate) struct PtrTable {
    leaves: BTreeMap<u64, Leaf>,
}

impl PtrTable {
    fn entry(&self, id: u64) -> Option<&Entry> {
        self.leaves
            .get(&(id / LEAF))
            .map(|l| &l.entries[(id % LEAF) as usize])
    }

    /// The pointer of `id` (0 when it has none).
    pub(crate) fn get(&self, id: u64) -> u64 {
        self.entry(id).map_or(0, |e| e.ptr)
    }

    /// The pointer of `id` and, when known, where its value is.
    pub(crate) fn get_with_loc(&self, id: u64) -> (u64, Option<Loc>) {
        self.entry(id).map_or((0, None), |e| {
            (e.ptr, (e.ptr != 0 && e.loc.known()).then_some(e.loc))
        })
    }

    /// Sets the pointer of `id` (0 clears it); where its value is becomes unknown.
    pub(crate) fn set(&mut self, id: u64, ptr: u64) {
        self.set_with_loc(id, ptr, Loc::default());
    }

    /// Sets the pointer of `id` (0 clears it) and where its value is.
    pub(crate) fn set_with_loc(&mut self, id: u64, ptr: u64, loc: Loc) {
        let key = id / LEAF;
        let i = (id % LEAF) as usize;
        if ptr == 0 {
            let Some(leaf) = self.leaves.get_mut(&key) else {
                return;
            };
            if leaf.entries[i].ptr != 0 {
                leaf.entries[i] = Entry::default();
                leaf.used -= 1;
                if leaf.used == 0 {
                    self.leaves.remove(&key);
                }
            }
            return;
        }
        let leaf = self.leaves.entry(key).or_insert_with(|| Leaf {
            entries: vec![Entry::default(); LEAF as usize].into_boxed_slice(),
            used: 0,
        });
        if leaf.entries[i].ptr == 0 {
            leaf.used += 1;
        }
        leaf.entries[i] = Entry { ptr, loc };
    }

    /// Sets where the value of `id` is, when `id` has a pointer.
    pub(crate) fn set_loc(&mut self, id: u64, loc: Loc) {
        if let Some(leaf) = self.leaves.get_mut(&(id / LEAF)) {
            let e = &mut leaf.entries[(id % LEAF) as usize];
            if e.ptr != 0 {
                e.loc = loc;
            }
        }
    }

    /// The first id at or after `from` that has a pointer, with it.
    pub(crate) fn next_from(&self, from: u64) -> Option<(u64, u64)> {
        self.leaves.range(from / LEAF..).find_map(|(&key, leaf)| {
            let skip = if key == from / LEAF { from % LEAF } else { 0 };
            leaf.entries
                .iter()
                .enumerate()
                .skip(skip as usize)
                .find(|&(_, e)| e.ptr != 0)
                .map(|(i, e)| (key * LEAF + i as u64, e.ptr))
        })
    }

    /// Every id that has a pointer, with it, in id order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.leaves.iter().flat_map(|(&key, leaf)| {
            leaf.entries
                .iter()
                .enumerate()
                .filter(|&(_, e)| e.ptr != 0)
                .map(move |(i, e)| (key * LEAF + i as u64, e.ptr))
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

    fn loc(n: u32) -> Loc {
        Loc {
            offset: n,
            stored_len: n + 1,
            raw_len: n + 2,
            value_sum: n ^ 0xABCD,
            dict_id: n as u16,
            codec: 1 + (n % 3) as u8,
        }
    }

    proptest! {
        /// The table behaves like a map from id to non-zero pointer and, for pointers set
        /// with one (and not replaced since by a plain `set`), where the value is.
        #[test]
        fn matches_a_map(ops in proptest::collection::vec((0u64..20_000, 0u64..4, 0u8..3), 0..200),
                         probes in proptest::collection::vec(0u64..21_000, 0..20)) {
            let mut t = PtrTable::default();
            let mut m: BTreeMap<u64, (u64, Option<Loc>)> = BTreeMap::new();
            for (id, p, how) in ops {
                let l = loc(id as u32 + p as u32);
                match how {
                    0 => {
                        t.set(id, p);
                        if p == 0 { m.remove(&id); } else { m.insert(id, (p, None)); }
                    }
                    1 => {
                        t.set_with_loc(id, p, l);
                        if p == 0 { m.remove(&id); } else { m.insert(id, (p, Some(l))); }
                    }
                    _ => {
                        t.set_loc(id, l);
                        if let Some(e) = m.get_mut(&id) { e.1 = Some(l); }
                    }
                }
            }
            prop_assert_eq!(t.iter().collect::<Vec<_>>(), m.iter().map(|(&k, &(v, _))| (k, v)).collect::<Vec<_>>());
            let keys: std::collections::BTreeSet<u64> = m.keys().map(|k| k / LEAF).collect();
            prop_assert_eq!(t.leaves(), keys.len());
            for id in probes.into_iter().chain(m.keys().copied().take(20)) {
                prop_assert_eq!(t.get(id), m.get(&id).map_or(0, |e| e.0));
                prop_assert_eq!(t.get_with_loc(id), m.get(&id).copied().unwrap_or((0, None)));
                prop_assert_eq!(t.next_from(id), m.range(id..).next().map(|(&k, &(v, _))| (k, v)));
            }
        }
    }
}
