//! SIEVE eviction (Zhang et al., NSDI '24) over a slab-backed doubly linked list.
//!
//! New entries go to the head; a hit only sets the entry's `visited` bit. To evict, a hand
//! walks from the tail toward the head (wrapping), clearing `visited` bits, and evicts the
//! first entry that is neither visited nor refused by the caller (pinned). Entries the hand
//! passes keep their place, so one-hit wonders leave quickly and hot entries stay.

use std::collections::HashMap;
use std::hash::Hash;

use crate::hash::KeyBuild;

const NIL: usize = usize::MAX;

struct Node<K, V> {
    key: K,
    value: V,
    visited: bool,
    /// Toward the head (newer).
    newer: usize,
    /// Toward the tail (older).
    older: usize,
}

/// A SIEVE-ordered map.
pub(crate) struct Sieve<K, V> {
    map: HashMap<K, usize, KeyBuild>,
    slots: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    head: usize,
    tail: usize,
    hand: usize,
}

impl<K: Hash + Eq + Copy, V> Sieve<K, V> {
    pub(crate) fn new() -> Self {
        Sieve {
            map: HashMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            hand: NIL,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node<K, V>> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// The entry for `key`, without marking it visited.
    pub(crate) fn peek_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.map.get(key)?;
        self.node_mut(i).map(|n| &mut n.value)
    }

    /// The entry for `key`, marking it visited (a hit).
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.map.get(key)?;
        self.node_mut(i).map(|n| {
            n.visited = true;
            &mut n.value
        })
    }

    /// Inserts `key` at the head; an existing entry for it is replaced and returned.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.remove(&key);
        let node = Node {
            key,
            value,
            visited: false,
            newer: NIL,
            older: self.head,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(node);
                i
            }
            None => {
                self.slots.push(Some(node));
                self.slots.len() - 1
            }
        };
        if let Some(h) = self.node_mut(self.head) {
            h.newer = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
        self.map.insert(key, i);
        old
    }

    /// Removes `key`'s entry.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.map.remove(key)?;
        let node = self.slots.get_mut(i)?.take()?;
        if self.hand == i {
            self.hand = node.newer;
        }
        match self.node_mut(node.newer) {
            Some(n) => n.older = node.older,
            None => self.head = node.older,
        }
        match self.node_mut(node.older) {
            Some(n) => n.newer = node.newer,
            None => self.tail = node.newer,
        }
        self.free.push(i);
        Some(node.value)
    }

    /// Evicts one entry by SIEVE, skipping those `evictable` refuses; `None` if no entry
    /// can be evicted.
    pub(crate) fn evict(&mut self, mut evictable: impl FnMut(&V) -> bool) -> Option<(K, V)> {
        // Two full sweeps clear every visited bit; a third finds nothing only if every
        // entry is refused.
        let budget = 2 * self.len() + 1;
        let mut i = if self.hand == NIL {
            self.tail
        } else {
            self.hand
        };
        for _ in 0..budget {
            let Some(n) = self.node_mut(i) else {
                i = self.tail;
                if i == NIL {
                    return None;
                }
                continue;
            };
            if n.visited {
                n.visited = false;
                i = n.newer;
                continue;
            }
            if !evictable(&n.value) {
                i = n.newer;
                continue;
            }
            let key = n.key;
            self.hand = n.newer;
            let value = self.remove(&key)?;
            return Some((key, value));
        }
        self.hand = i;
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook SIEVE over a Vec (index 0 = tail/oldest), for comparison.
    #[derive(Default)]
    struct Model {
        q: Vec<(u8, bool)>,
        hand: Option<usize>,
    }

    impl Model {
        fn insert(&mut self, k: u8) {
            self.remove(k);
            self.q.push((k, false));
        }
        fn hit(&mut self, k: u8) -> bool {
            self.q
                .iter_mut()
                .find(|e| e.0 == k)
                .map(|e| e.1 = true)
                .is_some()
        }
        fn remove(&mut self, k: u8) -> bool {
            let Some(pos) = self.q.iter().position(|e| e.0 == k) else {
                return false;
            };
            self.q.remove(pos);
            if let Some(h) = self.hand {
                // The hand moves to the next newer entry, which shifts down into `pos`.
                if h > pos {
                    self.hand = Some(h - 1);
                } else if h == pos && pos >= self.q.len() {
                    self.hand = None;
                }
            }
            true
        }
        fn evict(&mut self, pinned: &dyn Fn(u8) -> bool) -> Option<u8> {
            let n = self.q.len();
            let mut i = self.hand.unwrap_or(0);
            for _ in 0..2 * n + 1 {
                if i >= self.q.len() {
                    i = 0;
                    if self.q.is_empty() {
                        return None;
                    }
                    continue;
                }
                if self.q[i].1 {
                    self.q[i].1 = false;
                    i += 1;
                    continue;
                }
                if pinned(self.q[i].0) {
                    i += 1;
                    continue;
                }
                let k = self.q.remove(i).0;
                self.hand = (i < self.q.len()).then_some(i);
                return Some(k);
            }
            self.hand = (i < self.q.len()).then_some(i);
            None
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Hit(u8),
        Remove(u8),
        Evict,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..12).prop_map(Op::Insert),
            2 => (0u8..12).prop_map(Op::Hit),
            1 => (0u8..12).prop_map(Op::Remove),
            2 => Just(Op::Evict),
        ]
    }

    proptest! {
        #[test]
        fn matches_textbook_sieve(ops in proptest::collection::vec(op(), 1..120)) {
            let mut s: Sieve<u8, u32> = Sieve::new();
            let mut m = Model::default();
            // Keys divisible by 5 are pinned.
            let pinned = |k: u8| k.is_multiple_of(5);
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let had = m.q.iter().any(|e| e.0 == k);
                        m.insert(k);
                        prop_assert_eq!(s.insert(k, u32::from(k) * 3).is_some(), had);
                    }
                    Op::Hit(k) => {
                        let v = s.get_mut(&k).map(|v| *v);
                        prop_assert_eq!(v.is_some(), m.hit(k));
                        if let Some(v) = v { prop_assert_eq!(v, u32::from(k) * 3); }
                    }
                    Op::Remove(k) => {
                        prop_assert_eq!(s.remove(&k).is_some(), m.remove(k));
                    }
                    Op::Evict => {
                        let got = s.evict(|v| !pinned((*v / 3) as u8)).map(|(k, _)| k);
                        prop_assert_eq!(got, m.evict(&pinned));
                    }
                }
                prop_assert_eq!(s.len(), m.q.len());
                for (k, _) in &m.q {
                    prop_assert!(s.peek_mut(k).is_some());
                }
            }
        }
    }

    #[test]
    fn a_sweep_that_finds_nothing_leaves_the_hand_at_the_tail() {
        for n in 1..6u32 {
            let mut s: Sieve<u32, ()> = Sieve::new();
            for k in 0..n {
                s.insert(k, ());
            }
            s.get_mut(&(n - 1));
            assert_eq!(s.evict(|_| false), None);
            // The next eviction starts again from the oldest entry.
            assert_eq!(s.evict(|_| true).map(|e| e.0), Some(0), "n = {n}");
        }
    }

    #[test]
    fn hot_entry_survives_a_scan() {
        let mut s: Sieve<u32, ()> = Sieve::new();
        s.insert(0, ());
        for k in 1..4 {
            s.insert(k, ());
        }
        s.get_mut(&0);
        let evicted: Vec<u32> = (0..3)
            .filter_map(|_| s.evict(|_| true))
            .map(|e| e.0)
            .collect();
        assert_eq!(evicted, vec![1, 2, 3]);
        assert!(s.peek_mut(&0).is_some());
        assert_eq!(s.evict(|_| false), None);
        assert_eq!(s.evict(|_| true).map(|e| e.0), Some(0));
        assert_eq!(s.evict(|_| true), None);
    }
}
