//! The sparse in-memory index of a segment: the LSN and offset of a record about every
//! [`INDEX_EVERY`] bytes, so a reader starting at an LSN decodes at most that many bytes
//! of records before it instead of the whole segment. Built by the flusher as it writes
//! and by recovery as it verifies; never stored on disk.

use crate::Lsn;
use crate::format::SEGMENT_HEADER_LEN;

/// Bytes between two index entries (at least; entries fall on record starts).
pub(crate) const INDEX_EVERY: u64 = 64 << 10;

/// (LSN, offset) of records of one segment, both increasing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SparseIndex {
    entries: Vec<(Lsn, u64)>,
}

impl SparseIndex {
    /// The offset from which the next entry is due.
    pub(crate) fn next_due(&self) -> u64 {
        self.entries
            .last()
            .map_or(SEGMENT_HEADER_LEN as u64, |e| e.1)
            + INDEX_EVERY
    }

    /// Notes that record `lsn` starts at `offset`, if an entry is due there.
    pub(crate) fn note(&mut self, lsn: Lsn, offset: u64) {
        if offset >= self.next_due() {
            self.entries.push((lsn, offset));
        }
    }

    /// The entry with the highest LSN at or below `lsn`.
    pub(crate) fn seek(&self, lsn: Lsn) -> Option<(Lsn, u64)> {
        let i = self.entries.partition_point(|e| e.0 <= lsn);
        i.checked_sub(1).and_then(|i| self.entries.get(i)).copied()
    }

    /// Drops the entries at or past `end` (records recovery did not keep).
    pub(crate) fn truncate_at(&mut self, end: u64) {
        self.entries.retain(|e| e.1 < end);
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> &[(Lsn, u64)] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_fall_every_index_every_bytes_and_seek_finds_the_closest_below() {
        let h = SEGMENT_HEADER_LEN as u64;
        let mut ix = SparseIndex::default();
        assert_eq!(ix.next_due(), h + INDEX_EVERY);
        assert_eq!(ix.seek(5), None);
        ix.note(2, h + INDEX_EVERY - 1);
        assert_eq!(ix.entries(), []);
        ix.note(3, h + INDEX_EVERY);
        ix.note(4, h + INDEX_EVERY + 10);
        ix.note(9, h + 2 * INDEX_EVERY + 5);
        assert_eq!(
            ix.entries(),
            [(3, h + INDEX_EVERY), (9, h + 2 * INDEX_EVERY + 5)]
        );
        assert_eq!(ix.next_due(), h + 3 * INDEX_EVERY + 5);
        assert_eq!(ix.seek(2), None);
        assert_eq!(ix.seek(3), Some((3, h + INDEX_EVERY)));
        assert_eq!(ix.seek(8), Some((3, h + INDEX_EVERY)));
        assert_eq!(ix.seek(9), Some((9, h + 2 * INDEX_EVERY + 5)));
        assert_eq!(ix.seek(u64::MAX), Some((9, h + 2 * INDEX_EVERY + 5)));
        ix.truncate_at(h + 2 * INDEX_EVERY + 5);
        assert_eq!(ix.entries(), [(3, h + INDEX_EVERY)]);
        ix.truncate_at(h + INDEX_EVERY + 1);
        assert_eq!(ix.entries(), [(3, h + INDEX_EVERY)]);
    }
}
