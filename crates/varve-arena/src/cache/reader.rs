//! [`TailReader`], which reads one file's records in order through the cache, and the
//! [`Record`]s it hands out.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use super::prefetch::{Msg, prefetch_queue};
use super::shared::{Entry, Page, Shared};
use super::stats::bump;
use crate::error::{Error, Result};
use crate::format::Framing;
use crate::source::FileId;

/// A record read by a [`TailReader`]: its header and payload, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    offset: u64,
    header_len: usize,
    bytes: Vec<u8>,
}

impl Record {
    /// File offset of the record's header.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// File offset just past the record (where the next one starts).
    pub fn next_offset(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }

    /// The header bytes.
    pub fn header(&self) -> &[u8] {
        self.bytes.get(..self.header_len).unwrap_or_default()
    }

    /// The payload bytes.
    pub fn payload(&self) -> &[u8] {
        self.bytes.get(self.header_len..).unwrap_or_default()
    }

    /// Header and payload, as framed on disk.
    pub fn framed(&self) -> &[u8] {
        &self.bytes
    }
}

/// Reads the records of one file in order, from a starting offset, following the file as
/// it grows. Not `Clone`: each reader has its own position and prefetch window.
pub struct TailReader {
    pub(super) shared: Arc<Shared>,
    /// The prefetch threads' queues.
    pub(super) queues: Arc<[mpsc::Sender<Msg>]>,
    pub(super) id: u64,
    /// Prefetch requests sent so far.
    pub(super) requests: u64,
    pub(super) file: FileId,
    /// Offset of the next record.
    pub(super) offset: u64,
    /// The page the reader is on, pinned while held.
    pub(super) current: Option<(u64, Arc<Page>)>,
    pub(super) last_page: Option<u64>,
    /// Consecutive sequential page steps.
    pub(super) run: usize,
    pub(super) window: usize,
    pub(super) used_in_window: usize,
    /// Pages below this index were requested from the prefetcher.
    pub(super) prefetched_until: u64,
    /// False after a wait for an in-flight prefetch timed out, until a prefetched page is
    /// used again: a stuck prefetcher costs a reader one timeout, not one per page.
    pub(super) patient: bool,
    pub(super) header: Vec<u8>,
    /// The sequence number the next record must carry, once set.
    pub(super) expected: Option<u64>,
}

impl fmt::Debug for TailReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailReader")
            .field("file", &self.file)
            .field("offset", &self.offset)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl Drop for TailReader {
    fn drop(&mut self) {
        self.shared.lock().wasted.remove(&self.id);
        self.shared.live_readers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl TailReader {
    /// Offset of the next record this reader will return.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The current prefetch window, in pages.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Pages of the file below this index have been requested from the prefetcher (the
    /// reader keeps more than half a window requested ahead of the page it is on).
    pub fn requested_until(&self) -> u64 {
        self.prefetched_until
    }

    /// From now on, the next record must carry sequence number `sequence` (as the framing's
    /// [`Framing::sequence`] reads it), the one after it `sequence + 1`, and so on. A record
    /// with another number is [`Error::Corrupted`] and the reader stays on it: a reader
    /// over a log whose files are reused (the WAL's recycled segments) can then never take
    /// a stale record of the file's earlier life for one it is waiting for.
    pub fn expect_sequence(&mut self, sequence: u64) {
        self.expected = Some(sequence);
    }

    /// The sequence number the next record must carry, if one was set.
    pub fn expected_sequence(&self) -> Option<u64> {
        self.expected
    }

    /// Moves to the record starting at `offset` (which resets sequential detection).
    pub fn seek(&mut self, offset: u64) {
        self.offset = offset;
        self.run = 0;
    }

    /// The next record, or `None` if the file holds no complete record at the reader's
    /// offset yet (call again after the file grows). A record that fails validation is
    /// [`Error::Corrupted`]; the reader stays on it.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        let mut rec = Record::default();
        Ok(self.next_into(&mut rec)?.then_some(rec))
    }

    /// Like [`TailReader::next_record`] but reuses `rec`'s buffer; returns `true` if a
    /// record was read into it.
    pub fn next_into(&mut self, rec: &mut Record) -> Result<bool> {
        if self.shared.poisoned.load(Ordering::Acquire) {
            return Err(self.shared.poisoned_error());
        }
        let framing = Arc::clone(&self.shared);
        let framing = &framing.framing;
        let hlen = framing.header_len();
        let mut header = std::mem::take(&mut self.header);
        header.clear();
        let got = self.copy_out(self.offset, hlen, |s| header.extend_from_slice(s));
        let result = self.decode(got, &header, framing.as_ref(), rec);
        self.header = header;
        result
    }

    fn decode(
        &mut self,
        got: Result<bool>,
        header: &[u8],
        framing: &dyn Framing,
        rec: &mut Record,
    ) -> Result<bool> {
        if !got? {
            return Ok(false);
        }
        let (file, offset) = (self.file, self.offset);
        let corrupted = |what| Error::Corrupted { file, offset, what };
        let plen = framing.payload_len(header).map_err(corrupted)?;
        let hlen = header.len();
        rec.bytes.clear();
        rec.bytes.extend_from_slice(header);
        let bytes = &mut rec.bytes;
        if !self.copy_out(self.offset + hlen as u64, plen, |s| {
            bytes.extend_from_slice(s)
        })? {
            return Ok(false);
        }
        if !framing.verify_framed(&mut rec.bytes, hlen) {
            rec.bytes.clear();
            return Err(corrupted("checksum mismatch"));
        }
        if let Some(want) = self.expected {
            if framing.sequence(header) != Some(want) {
                rec.bytes.clear();
                return Err(corrupted("unexpected sequence number"));
            }
            self.expected = Some(want + 1);
        }
        rec.offset = self.offset;
        rec.header_len = hlen;
        self.offset += rec.bytes.len() as u64;
        Ok(true)
    }

    /// Hands the file's `len` bytes at `offset` to `sink`, one slice per page, straight
    /// from the cached pages; false (possibly after some slices) if the file is not that
    /// long yet.
    fn copy_out(&mut self, offset: u64, len: usize, mut sink: impl FnMut(&[u8])) -> Result<bool> {
        let ps = self.shared.page_size() as u64;
        let end = offset + len as u64;
        // One step per page the range touches (a bounded loop: no progress bug can spin).
        for idx in offset / ps..end.div_ceil(ps) {
            let page_start = idx * ps;
            let from = offset.max(page_start);
            let to = end.min(page_start + ps);
            let in_page = (from - page_start) as usize;
            let n = (to - from) as usize;
            if !self.load(idx, in_page + n)? {
                return Ok(false);
            }
            let Some(src) = self
                .current
                .as_ref()
                .and_then(|(_, page)| page.block.get(in_page..in_page + n))
            else {
                return Ok(false);
            };
            sink(src);
        }
        Ok(true)
    }

    /// Makes page `idx`, with at least `need` valid bytes, the reader's current (pinned)
    /// page; false if the file is too short for that.
    fn load(&mut self, idx: u64, need: usize) -> Result<bool> {
        if let Some((i, p)) = &self.current
            && *i == idx
            && p.valid >= need
        {
            return Ok(true);
        }
        // Unpin the old page before looking (it may be the partial page to invalidate).
        self.current = None;
        let Some(page) = self.fetch(idx, need)? else {
            return Ok(false);
        };
        self.current = Some((idx, page));
        Ok(true)
    }

    fn fetch(&mut self, idx: u64, need: usize) -> Result<Option<Arc<Page>>> {
        let shared = Arc::clone(&self.shared);
        let ps = shared.page_size() as u64;
        let key = (self.file, idx);
        let new_page = self.last_page != Some(idx);
        if new_page {
            self.run = match self.last_page {
                Some(last) if last + 1 == idx => self.run + 1,
                _ => 0,
            };
            self.last_page = Some(idx);
        }
        let mut cache = shared.lock_reader();
        if cache.wasted.remove(&self.id) {
            self.window = (self.window / 2).max(1);
            self.used_in_window = 0;
        }
        // A page the prefetcher is loading: wait for it rather than read it twice, unless
        // the prefetcher already kept this reader waiting in vain (then read it here).
        let in_flight = cache.pending.contains(&key);
        if in_flight && self.patient {
            let (guard, res) = shared
                .loaded
                .wait_timeout_while(cache, shared.config.wait_timeout, |c| {
                    c.pending.contains(&key)
                })
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cache = guard;
            self.patient = !res.timed_out();
        }
        if shared.poisoned.load(Ordering::Acquire) {
            return Err(shared.poisoned_error());
        }
        let mut stale = false;
        if let Some(e) = cache.pages.peek_mut(&key) {
            if e.page.valid >= need {
                let page = Arc::clone(&e.page);
                let was_prefetched = e.prefetched_for.take().is_some();
                if !was_prefetched {
                    // A re-reference: SIEVE keeps it for another round. The first use of
                    // a prefetched page is the access the prefetch stood in for, not a
                    // re-reference; marking it would make the hand pass over every page
                    // a tailing reader has consumed and evict the prefetched pages ahead
                    // of it instead.
                    cache.pages.get_mut(&key);
                }
                bump(&shared.counters.hits);
                if in_flight {
                    bump(&shared.counters.late_hits);
                }
                if was_prefetched {
                    self.patient = true;
                    bump(&shared.counters.prefetched_used);
                    self.used_in_window += 1;
                    if self.used_in_window >= self.window {
                        self.window = (self.window * 2).min(shared.config.max_window);
                        self.used_in_window = 0;
                    }
                }
                drop(cache);
                if new_page {
                    self.maybe_prefetch(idx);
                }
                return Ok(Some(page));
            }
            stale = true;
        }
        drop(cache);
        let len = shared.source.len(self.file)?;
        let page_start = idx * ps;
        if len < page_start + need as u64 {
            // Not yet written: not an error, the tail reader comes back later.
            return Ok(None);
        }
        if stale {
            // The file grew past this partial page: drop it and read it again.
            let mut cache = shared.lock();
            if let Some(e) = cache.pages.remove(&key) {
                bump(&shared.counters.invalidations);
                shared.note_dropped(&mut cache, &e);
            }
        }
        bump(&shared.counters.misses);
        // If this page was asked for and is not there, the promise is void: ask again.
        self.prefetched_until = self.prefetched_until.min(idx);
        let Some(mut block) = shared.alloc_page(true)? else {
            return Err(Error::Exhausted {
                class: shared.config.class,
                pages: 1,
            });
        };
        let n = shared.source.read_at(self.file, page_start, &mut block)?;
        let valid = (n as u64).min(len - page_start) as usize;
        if valid < need {
            return Ok(None);
        }
        let page = Arc::new(Page { block, valid });
        {
            let mut cache = shared.lock();
            if let Some(old) = cache.pages.insert(
                key,
                Entry {
                    page: Arc::clone(&page),
                    prefetched_for: None,
                },
            ) {
                shared.note_dropped(&mut cache, &old);
            }
            let evicted = shared.trim(&mut cache, 0);
            drop(cache);
            drop(evicted); // freed outside the cache's lock
        }
        if new_page {
            self.maybe_prefetch(idx);
        }
        Ok(Some(page))
    }

    /// Asks for the next window past `idx` if the reader is sequential and at most half a
    /// window is already requested ahead of it. The pages are marked pending here, so a
    /// reader that catches up waits for the prefetcher instead of reading them twice.
    fn maybe_prefetch(&mut self, idx: u64) {
        let cfg = &self.shared.config;
        if !cfg.prefetch || self.run < cfg.sequential_after {
            return;
        }
        let from = self.prefetched_until.max(idx + 1);
        if from - (idx + 1) > (self.window / 2) as u64 {
            return;
        }
        let end = idx + 1 + self.window as u64;
        self.prefetched_until = end;
        let pages: Vec<u64> = {
            let mut cache = self.shared.lock_reader();
            (from..end)
                .filter(|&p| {
                    let key = (self.file, p);
                    cache.pages.peek_mut(&key).is_none() && cache.pending.insert(key)
                })
                .collect()
        };
        if pages.is_empty() {
            return;
        }
        let msg = Msg::Prefetch {
            file: self.file,
            pages,
            reader: self.id,
        };
        let queue = &self.queues[prefetch_queue(
            self.id,
            self.requests,
            self.shared.source.reads_in_flight(self.file),
            self.queues.len(),
        )];
        self.requests += 1;
        if let Err(mpsc::SendError(Msg::Prefetch { pages, .. })) = queue.send(msg) {
            // The prefetcher is gone (shutting down): nobody will load these.
            let mut cache = self.shared.lock();
            for p in pages {
                cache.pending.remove(&(self.file, p));
            }
            self.shared.loaded.notify_all();
        }
    }
}
