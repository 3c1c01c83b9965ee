//! A set of disjoint half-open `u64` ranges, merged on insert: the byte ranges of a file
//! known to be reserved on disk, or dirtied since the last flush.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `start..end`, keyed by start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<u64, u64>,
}

impl RangeSet {
    /// True when every byte of `start..end` is in the set (an empty range always is).
    pub(crate) fn covers(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        self.ranges
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &e)| e >= end)
    }

    /// Adds `start..end`, merging it with the ranges it overlaps or touches.
    pub(crate) fn insert(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
    }

    /// Removes `start..end` from the set (splitting a range that straddles either end).
    pub(crate) fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // The range starting before `start` keeps its part below `start` (all of it when
        // it ends there or earlier) and, when it reaches past `end`, its part above.
        if let Some((&s, &e)) = self.ranges.range(..start).next_back() {
            self.ranges.insert(s, e.min(start));
            if e > end {
                self.ranges.insert(end, e);
            }
        }
        let inside: Vec<(u64, u64)> = self
            .ranges
            .range(start..end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in inside {
            self.ranges.remove(&s);
            if e > end {
                self.ranges.insert(end, e);
            }
        }
    }

    /// The ranges in order, as `(start, end)`.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn insert_merges_overlapping_and_touching_ranges() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 20), (30, 40)]);
        r.insert(20, 30);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(10, 40)]);
        r.insert(5, 12);
        r.insert(38, 50);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(5, 50)]);
        r.insert(7, 7);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(5, 50)]);
        assert!(r.covers(5, 50) && r.covers(20, 21) && r.covers(60, 60));
        assert!(!r.covers(4, 6) && !r.covers(49, 51) && !r.covers(50, 51));
    }

    #[test]
    fn remove_splits_straddling_ranges() {
        let mut r = RangeSet::default();
        r.insert(0, 100);
        r.remove(40, 60);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 40), (60, 100)]);
        r.remove(30, 70);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(0, 30), (70, 100)]);
        r.remove(50, 50);
        r.remove(0, 30);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![(70, 100)]);
        r.remove(0, 200);
        assert_eq!(r.iter().next(), None);
    }

    proptest! {
        /// Any sequence of inserts and removes describes exactly the bytes a plain bitmap
        /// holds, with ranges kept disjoint, non-empty and non-adjacent.
        #[test]
        fn matches_a_bitmap(ops in proptest::collection::vec((any::<bool>(), 0u64..64, 0u64..64), 0..40),
                            probes in proptest::collection::vec((0u64..66, 0u64..66), 0..20)) {
            let mut r = RangeSet::default();
            let mut bits = [false; 66];
            for (add, a, b) in ops {
                let (s, e) = (a.min(b), a.max(b));
                if add { r.insert(s, e) } else { r.remove(s, e) }
                for bit in &mut bits[s as usize..e as usize] {
                    *bit = add;
                }
                let mut last_end = None;
                for (s, e) in r.iter() {
                    prop_assert!(s < e);
                    prop_assert!(last_end.is_none_or(|l| l < s), "adjacent or overlapping");
                    last_end = Some(e);
                }
                let mut from_set = [false; 66];
                for (s, e) in r.iter() {
                    for bit in &mut from_set[s as usize..e as usize] {
                        *bit = true;
                    }
                }
                prop_assert_eq!(from_set, bits);
            }
            for (a, b) in probes {
                let (s, e) = (a.min(b), a.max(b));
                prop_assert_eq!(r.covers(s, e), bits[s as usize..e as usize].iter().all(|&b| b));
            }
                    }
    }
}
