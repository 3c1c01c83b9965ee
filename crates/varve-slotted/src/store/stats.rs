//! What a store reports about itself: [`Stats`], from [`Store::stats`].

use super::Store;
use crate::error::Result;

/// Figures describing the store, from [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Ids that have a value.
    pub live_values: u64,
    /// Bytes of those values as given (uncompressed).
    pub live_bytes: u64,
    /// Bytes of those values as stored (after compression).
    pub stored_bytes: u64,
    /// Bytes of all the store's files (page files, tracker, dictionaries), as `ls` sees them
    /// (apparent sizes: page and tracker files are sparse).
    pub bytes_on_disk: u64,
    /// Page bytes that hold neither a live value nor one contiguous free run (old versions
    /// waiting for a flush plus fragmented free space), over all page bytes.
    pub garbage_ratio: f64,
    /// `live_bytes / stored_bytes` (1.0 when empty).
    pub compression_ratio: f64,
    /// Page files.
    pub pages: u32,
    /// Pages being drained by compaction.
    pub pages_compacting: u32,
    /// Tracker entries found unreadable on open: an entry that fails its checksum or names
    /// no page (its id reads as [`Error::CorruptedEntry`]), or one whose slot does not
    /// verify (its id reads as [`Error::Corrupted`]).
    ///
    /// [`Error::CorruptedEntry`]: crate::Error::CorruptedEntry
    /// [`Error::Corrupted`]: crate::Error::Corrupted
    pub corrupt_entries: u64,
    /// Page summaries found stale on open and rebuilt.
    pub summaries_rebuilt: u64,
    /// Dictionaries stored.
    pub dictionaries: u32,
    /// Values moved by compaction since open.
    pub moved_values: u64,
    /// Bytes of page ranges written back by flushes since open: the 4 KiB blocks each
    /// flush found dirtied since the previous one, not whole page files.
    pub synced_bytes: u64,
    /// Bytes of freed space given back to the file system (hole punching) since open.
    pub punched_bytes: u64,
}

impl Store {
    /// Figures describing the store (see [`Stats`]).
    pub fn stats(&self) -> Result<Stats> {
        let w = self.lock_writer()?;
        let mut st = Stats {
            corrupt_entries: w.corrupt_entries,
            summaries_rebuilt: w.summaries_rebuilt,
            bytes_on_disk: w.tracker.file_len() + w.dict_bytes,
            pages_compacting: w.compacting.len() as u32,
            dictionaries: self.read_shared()?.dicts.len() as u32,
            moved_values: w.moved_values,
            synced_bytes: w.synced_bytes,
            punched_bytes: w.punched_bytes,
            ..Stats::default()
        };
        let mut page_bytes = 0u64;
        let mut garbage = 0u64;
        for (_, p) in w.pages.iter() {
            st.pages += 1;
            st.live_values += u64::from(p.live);
            st.live_bytes += p.live_raw;
            st.stored_bytes += p.live_stored;
            page_bytes += u64::from(p.size());
            garbage += p.garbage_bytes();
        }
        st.bytes_on_disk += page_bytes;
        st.garbage_ratio = if page_bytes == 0 {
            0.0
        } else {
            garbage as f64 / page_bytes as f64
        };
        st.compression_ratio = if st.stored_bytes == 0 {
            1.0
        } else {
            st.live_bytes as f64 / st.stored_bytes as f64
        };
        Ok(st)
    }
}
