//! The hot set: which recently read blobs stay in the page cache, under a byte budget,
//! evicted by SIEVE (Zhang et al., "SIEVE is Simpler than LRU", NSDI 2024).
//!
//! Entries sit in one queue, newest at the head. A hit only sets the entry's visited bit
//! (no reordering, so a hit takes the lock for a moment and moves nothing). To make room,
//! the hand walks from where it stopped last (at first, the tail) towards the head,
//! clearing visited bits, and evicts the first entry whose bit was already clear; the hand
//! stays at the entry after the evicted one (towards the head), wrapping to the tail.
//! New entries go in at the head, not visited.

use std::collections::HashMap;
use std::hash::Hash;

/// One entry of the queue (a slot of the slab).
#[derive(Debug)]
struct Node<K, V> {
    key: K,
    value: V,
    size: u64,
    visited: bool,
    /// Towards the head (newer).
    newer: Option<usize>,
    /// Towards the tail (older).
    older: Option<usize>,
}

/// A SIEVE-managed set of keys, each with a size and a value, whose sizes sum to at most
/// a budget.
#[derive(Debug)]
pub(crate) struct Sieve<K, V> {
    budget: u64,
    used: u64,
    slots: Vec<Option<Node<K, V>>>,
    free: Vec<usize>,
    head: Option<usize>,
    tail: Option<usize>,
    hand: Option<usize>,
    index: HashMap<K, usize>,
}

/// What [`Sieve::admit`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit<K, V> {
    /// The key is in the set now (it was not before); these entries left to make room,
    /// in eviction order.
    Admitted(Vec<(K, V)>),
    /// The key was in the set already (marked visited); nothing changed otherwise.
    Present,
    /// The size exceeds the whole budget: nothing changed.
    TooLarge,
}

impl<K: Copy + Eq + Hash, V> Sieve<K, V> {
    /// An empty set with room for `budget` (sum of sizes).
    pub(crate) fn new(budget: u64) -> Sieve<K, V> {
        Sieve {
            budget,
            used: 0,
            slots: Vec::new(),
            free: Vec::new(),
            head: None,
            tail: None,
            hand: None,
            index: HashMap::new(),
        }
    }

    /// Sum of the sizes of the entries.
    pub(crate) fn used(&self) -> u64 {
        self.used
    }

    /// Number of entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.index.len()
    }

    fn node(&self, i: usize) -> Option<&Node<K, V>> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, i: usize) -> Option<&mut Node<K, V>> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// The value of `key` if it is in the set, after marking it visited (a hit).
    pub(crate) fn hit(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        let node = self.node_mut(i)?;
        node.visited = true;
        Some(&mut node.value)
    }

    /// The value of `key` without counting a hit.
    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = *self.index.get(key)?;
        self.node_mut(i).map(|n| &mut n.value)
    }

    /// True when `key` is in the set (not a hit).
    #[cfg(test)]
    fn contains(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// Puts `key` (of `size`) in the set, at the head and not visited, after evicting
    /// entries until it fits the budget. A key already present only counts as a hit; a
    /// size larger than the budget changes nothing.
    pub(crate) fn admit(&mut self, key: K, size: u64, value: V) -> Admit<K, V> {
        if self.hit(&key).is_some() {
            return Admit::Present;
        }
        if size > self.budget {
            return Admit::TooLarge;
        }
        let mut evicted = Vec::new();
        while self.used + size > self.budget {
            match self.evict_one() {
                Some(e) => evicted.push(e),
                None => break, // empty (cannot happen while used > 0)
            }
        }
        let node = Node {
            key,
            value,
            size,
            visited: false,
            newer: None,
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
        if let Some(h) = self.head
            && let Some(n) = self.node_mut(h)
        {
            n.newer = Some(i);
        }
        self.head = Some(i);
        if self.tail.is_none() {
            self.tail = Some(i);
        }
        self.index.insert(key, i);
        self.used += size;
        Admit::Admitted(evicted)
    }

    /// Evicts one entry (the SIEVE way, see the module docs); `None` when empty.
    fn evict_one(&mut self) -> Option<(K, V)> {
        let mut at = self.hand.or(self.tail)?;
        loop {
            let node = self.node_mut(at)?;
            if !node.visited {
                break;
            }
            node.visited = false;
            let newer = node.newer;
            at = newer.or(self.tail)?;
        }
        let newer = self.node(at)?.newer;
        let (key, value) = self.unlink(at)?;
        // The hand stays where the evicted entry was: at the next newer entry.
        self.hand = newer;
        Some((key, value))
    }

    /// Takes `key` out of the set; returns its value.
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        let i = *self.index.get(key)?;
        if self.hand == Some(i) {
            self.hand = self.node(i)?.newer;
        }
        self.unlink(i).map(|(_, v)| v)
    }

    /// Unlinks slot `i` from the queue and the index and frees it.
    fn unlink(&mut self, i: usize) -> Option<(K, V)> {
        let node = self.slots.get_mut(i)?.take()?;
        match node.newer {
            Some(n) => {
                if let Some(x) = self.node_mut(n) {
                    x.older = node.older;
                }
            }
            None => self.head = node.older,
        }
        match node.older {
            Some(o) => {
                if let Some(x) = self.node_mut(o) {
                    x.newer = node.newer;
                }
            }
            None => self.tail = node.newer,
        }
        self.index.remove(&node.key);
        self.free.push(i);
        self.used -= node.size;
        Some((node.key, node.value))
    }

    /// Keys from the head (newest) to the tail, with their visited bits (for tests).
    #[cfg(test)]
    fn order(&self) -> Vec<(K, bool)> {
        let mut out = Vec::new();
        let mut at = self.head;
        while let Some(i) = at {
            let n = self.node(i).expect("linked slot");
            out.push((n.key, n.visited));
            at = n.older;
        }
        out
    }

    /// The key under the hand (for tests).
    #[cfg(test)]
    fn hand_key(&self) -> Option<K> {
        self.hand.and_then(|i| self.node(i)).map(|n| n.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(s: &Sieve<u32, ()>) -> Vec<u32> {
        s.order().into_iter().map(|(k, _)| k).collect()
    }

    fn admitted(a: Admit<u32, ()>) -> Vec<u32> {
        match a {
            Admit::Admitted(e) => e.into_iter().map(|(k, ())| k).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn new_entries_go_in_at_the_head_unvisited() {
        let mut s = Sieve::new(10);
        for k in 1..=3 {
            assert!(admitted(s.admit(k, 1, ())).is_empty());
        }
        assert_eq!(s.order(), vec![(3, false), (2, false), (1, false)]);
        assert_eq!((s.used(), s.len()), (3, 3));
        assert!(s.hit(&2).is_some());
        assert_eq!(s.order(), vec![(3, false), (2, true), (1, false)]);
        // A hit does not reorder; a second admit of a present key is a hit.
        assert_eq!(s.admit(1, 1, ()), Admit::Present);
        assert_eq!(s.order(), vec![(3, false), (2, true), (1, true)]);
        assert_eq!(s.used(), 3);
        assert!(s.hit(&9).is_none());
        assert!(s.contains(&3) && !s.contains(&9));
    }

    #[test]
    fn the_hand_skips_visited_entries_and_clears_their_bits() {
        // Budget of 4 unit entries: 1 (oldest) .. 4 (newest).
        let mut s = Sieve::new(4);
        for k in 1..=4 {
            s.admit(k, 1, ());
        }
        s.hit(&1);
        s.hit(&2);
        // 5 needs room: the hand starts at the tail (1, visited: cleared), moves to 2
        // (visited: cleared), then 3 (not visited): 3 goes.
        assert_eq!(admitted(s.admit(5, 1, ())), vec![3]);
        assert_eq!(keys(&s), vec![5, 4, 2, 1]);
        assert_eq!(
            s.order(),
            vec![(5, false), (4, false), (2, false), (1, false)]
        );
        // The hand stays where 3 was: at 4 (the next newer entry).
        assert_eq!(s.hand_key(), Some(4));
        // Next eviction starts at the hand (4), not at the tail (1).
        assert_eq!(admitted(s.admit(6, 1, ())), vec![4]);
        assert_eq!(s.hand_key(), Some(5));
        assert_eq!(admitted(s.admit(7, 1, ())), vec![5]);
        // 5 was the newest but one; after it comes 6, then 7 (the head).
        assert_eq!(s.hand_key(), Some(6));
        s.hit(&6);
        s.hit(&7);
        // 6 and 7 visited: cleared; the hand wraps to the tail (1, clear): 1 goes.
        assert_eq!(admitted(s.admit(8, 1, ())), vec![1]);
        assert_eq!(keys(&s), vec![8, 7, 6, 2]);
        assert_eq!(s.hand_key(), Some(2));
        assert_eq!(s.used(), 4);
    }

    #[test]
    fn all_visited_evicts_the_oldest_after_one_sweep() {
        let mut s = Sieve::new(3);
        for k in 1..=3 {
            s.admit(k, 1, ());
            s.hit(&k);
        }
        assert_eq!(admitted(s.admit(4, 1, ())), vec![1]);
        // Every bit was cleared by the sweep.
        assert_eq!(s.order(), vec![(4, false), (3, false), (2, false)]);
        assert_eq!(s.hand_key(), Some(2));
    }

    #[test]
    fn eviction_order_follows_insertion_without_hits() {
        let mut s = Sieve::new(3);
        for k in 1..=3 {
            s.admit(k, 1, ());
        }
        let mut order = Vec::new();
        for k in 4..=9 {
            order.extend(admitted(s.admit(k, 1, ())));
        }
        assert_eq!(order, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(keys(&s), vec![9, 8, 7]);
    }

    #[test]
    fn budget_accounting_with_sizes() {
        let mut s = Sieve::new(100);
        assert!(admitted(s.admit(1, 40, ())).is_empty());
        assert!(admitted(s.admit(2, 40, ())).is_empty());
        assert_eq!(s.used(), 80);
        // 30 more does not fit (110): the oldest (40) goes, 70 used.
        assert_eq!(admitted(s.admit(3, 30, ())), vec![1]);
        assert_eq!(s.used(), 70);
        // Exactly the budget fits without evicting.
        assert!(admitted(s.admit(4, 30, ())).is_empty());
        assert_eq!(s.used(), 100);
        // One entry the size of the whole budget evicts everything.
        let mut gone = admitted(s.admit(5, 100, ()));
        gone.sort_unstable();
        assert_eq!(gone, vec![2, 3, 4]);
        assert_eq!((s.used(), s.len()), (100, 1));
        // Larger than the budget: refused, nothing evicted.
        assert_eq!(s.admit(6, 101, ()), Admit::TooLarge);
        assert_eq!((s.used(), keys(&s)), (100, vec![5]));
        // A zero budget admits nothing but empty entries.
        let mut z: Sieve<u32, ()> = Sieve::new(0);
        assert_eq!(z.admit(1, 1, ()), Admit::TooLarge);
        assert_eq!(z.used(), 0);
    }

    #[test]
    fn remove_keeps_the_queue_and_hand_consistent() {
        let mut s = Sieve::new(4);
        for k in 1..=4 {
            s.admit(k, 1, ());
        }
        s.hit(&1);
        assert_eq!(admitted(s.admit(5, 1, ())), vec![2]);
        assert_eq!(s.hand_key(), Some(3));
        // Removing the entry under the hand moves the hand to the next newer one.
        assert!(s.remove(&3).is_some());
        assert_eq!(s.hand_key(), Some(4));
        assert_eq!(keys(&s), vec![5, 4, 1]);
        assert_eq!(s.used(), 3);
        // Head and tail removals.
        assert!(s.remove(&5).is_some());
        assert!(s.remove(&1).is_some());
        assert_eq!(keys(&s), vec![4]);
        assert!(s.remove(&1).is_none());
        assert!(s.remove(&4).is_some());
        assert_eq!((s.used(), s.len(), keys(&s)), (0, 0, vec![]));
        // Freed slots are reused and the set works as new.
        for k in 10..=13 {
            s.admit(k, 1, ());
        }
        assert_eq!(keys(&s), vec![13, 12, 11, 10]);
        assert_eq!(s.slots.len(), 4);
        assert_eq!(admitted(s.admit(14, 2, ())), vec![10, 11]);
    }

    #[test]
    fn values_travel_with_their_keys() {
        let mut s: Sieve<u32, &str> = Sieve::new(2);
        s.admit(1, 1, "one");
        s.admit(2, 1, "two");
        assert_eq!(s.hit(&1).map(|v| *v), Some("one"));
        *s.get_mut(&2).unwrap() = "zwei";
        match s.admit(3, 1, "three") {
            Admit::Admitted(e) => assert_eq!(e, vec![(2, "zwei")]),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.remove(&3), Some("three"));
    }
}
