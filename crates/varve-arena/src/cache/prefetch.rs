//! The background prefetcher: one queue and thread per worker, and the windows of pages
//! each worker reads (one `preadv` per run of consecutive pages) into the cache.

use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};

use super::shared::{Entry, Page, Shared};
use super::stats::bump;
use crate::arena::Block;
use crate::source::FileId;

pub(super) enum Msg {
    Prefetch {
        file: FileId,
        pages: Vec<u64>,
        reader: u64,
    },
    Shutdown,
}

/// The prefetch queue for request number `request` of reader `reader`, when the source
/// wants `in_flight` reads of its file in flight and there are `queues` queues: a reader's
/// requests take turns over `in_flight` consecutive queues from its own (so with 1 they
/// are read in order by one thread), and readers start on different queues.
pub(super) fn prefetch_queue(reader: u64, request: u64, in_flight: usize, queues: usize) -> usize {
    let lanes = in_flight.clamp(1, queues) as u64;
    ((reader + request % lanes) % queues as u64) as usize
}

/// Runs the prefetcher's loop; if it panics, the manager is poisoned with the panic's
/// message as the cause, and readers waiting on pages that will never load are woken.
pub(super) fn prefetch_worker(shared: &Shared, rx: &mpsc::Receiver<Msg>) {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        loop {
            match rx.recv() {
                Ok(Msg::Prefetch {
                    file,
                    pages,
                    reader,
                }) => shared.prefetch(file, &pages, reader),
                Ok(Msg::Shutdown) | Err(_) => return,
            }
        }
    }));
    if let Err(payload) = run {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        let _ = shared
            .poison_cause
            .set(Arc::new(std::io::Error::other(format!(
                "the prefetch thread panicked: {what}"
            ))));
        shared.poisoned.store(true, Ordering::Release);
        // Wake readers waiting on pages that will now never load.
        let _guard = shared.lock();
        shared.loaded.notify_all();
    }
}

impl Shared {
    /// Loads `pages` (ascending, already marked pending by the requesting reader) of
    /// `file` for `reader`, one `preadv` per run of consecutive pages, and clears their
    /// pending marks whatever happens. Failures only mean less prefetch: a reader's own
    /// read reports errors.
    fn prefetch(&self, file: FileId, pages: &[u64], reader: u64) {
        let ps = self.page_size() as u64;
        let len = self.source.len(file).ok();
        // Runs of consecutive pages: (first page, count).
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for &p in pages {
            match runs.last_mut() {
                Some((first, n)) if *first + *n == p => *n += 1,
                _ => runs.push((p, 1)),
            }
        }
        for (start, count) in runs {
            // Pages at or past the end of the file seen now cannot be loaded yet.
            let avail = len.map_or(0, |l| l.div_ceil(ps).saturating_sub(start));
            let want = count.min(avail);
            // Make room first, so the new pages do not take the arena above its min.
            let room = self
                .room
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let evicted = self.trim(&mut self.lock(), want * ps);
            drop(evicted); // frees the room, outside the cache's lock
            let mut blocks: Vec<Block> = (0..want)
                .map_while(|_| self.alloc_page(false).ok().flatten())
                .collect();
            drop(room);
            let read = if blocks.is_empty() {
                Ok(0)
            } else {
                let mut bufs: Vec<&mut [u8]> = blocks.iter_mut().map(|b| &mut b[..]).collect();
                self.source.read_vectored_at(file, start * ps, &mut bufs)
            };
            // The pages are built before the lock is taken; under it, only the map changes.
            let mut loaded: Vec<Arc<Page>> = Vec::new();
            if let (Ok(n), Some(len)) = (read, len) {
                // Only bytes below the length seen before the read are trusted.
                let n = (n as u64).min(len.saturating_sub(start * ps));
                let full_or_partial = n.div_ceil(ps) as usize;
                loaded = (0u64..)
                    .zip(blocks)
                    .take(full_or_partial)
                    .map(|(k, block)| {
                        let valid = (n - k * ps).min(ps) as usize;
                        Arc::new(Page { block, valid })
                    })
                    .collect();
            }
            let mut cache = self.lock();
            let mut unused = Vec::new();
            for (k, page) in (0u64..).zip(loaded) {
                let key = (file, start + k);
                cache.pending.remove(&key);
                if cache.pages.peek_mut(&key).is_some() {
                    unused.push(page); // a reader loaded it meanwhile
                    continue;
                }
                cache.pages.insert(
                    key,
                    Entry {
                        page,
                        prefetched_for: Some(reader),
                    },
                );
                bump(&self.counters.prefetched);
            }
            let evicted = self.trim(&mut cache, 0);
            drop(cache);
            drop((evicted, unused)); // freed outside the cache's lock
            self.loaded.notify_all();
        }
        // Whatever could not be loaded (end of file, no memory, a failed read) is no
        // longer in flight either.
        let mut cache = self.lock();
        for &p in pages {
            cache.pending.remove(&(file, p));
        }
        drop(cache);
        self.loaded.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::arena::{Arena, ArenaConfig, CHUNK_BYTES};
    use crate::cache::{CacheConfig, CacheManager};
    use crate::source::FileSource;

    /// A quick end-to-end check in the unit-test binary (which runs first), so a broken
    /// prefetcher fails fast instead of stalling the slower integration tests.
    #[test]
    fn prefetcher_loads_pages_and_goes_idle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = Vec::new();
        for seq in 0..200u64 {
            crate::format::encode_record(0, seq, &[seq as u8; 200], &mut bytes).unwrap();
        }
        std::fs::write(&path, &bytes).unwrap();
        let source = FileSource::new();
        source.open(0, &path).unwrap();
        let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
        let config = CacheConfig::default().wait_timeout(Duration::from_millis(200));
        let m = CacheManager::new(Arc::new(source), arena.clone(), config).unwrap();
        assert_eq!(m.shared.page_size(), 4096);
        let mut r = m.reader(0, 0);
        for seq in 0..200u64 {
            let rec = r.next_record().unwrap().unwrap();
            assert_eq!(rec.payload(), &[seq as u8; 200][..]);
        }
        assert!(
            m.wait_idle(Duration::from_secs(2)),
            "prefetch never finished"
        );
        let st = m.stats();
        let pages = (bytes.len() as u64).div_ceil(4096);
        assert_eq!(
            (st.misses, st.hits, st.prefetched_used),
            (3, pages - 3, pages - 3)
        );
        drop(r);
        drop(m);
        assert_eq!(
            arena.used_bytes(),
            0,
            "dropping the manager frees every page"
        );
    }

    #[test]
    fn prefetch_queues_keep_a_readers_requests_in_order_or_take_turns() {
        let q = |reader, in_flight, queues| -> Vec<usize> {
            (0..5)
                .map(|r| prefetch_queue(reader, r, in_flight, queues))
                .collect()
        };
        // One read in flight: every request of a reader goes to its own queue.
        assert_eq!(q(0, 1, 2), [0; 5]);
        assert_eq!(q(1, 1, 2), [1; 5]);
        assert_eq!(q(5, 1, 3), [2; 5]);
        // Two: alternate between two queues, starting at the reader's own.
        assert_eq!(q(0, 2, 2), [0, 1, 0, 1, 0]);
        assert_eq!(q(1, 2, 3), [1, 2, 1, 2, 1]);
        assert_eq!(q(2, 2, 3), [2, 0, 2, 0, 2]);
        // More than there are queues, or none: clamped.
        assert_eq!(q(0, 9, 2), [0, 1, 0, 1, 0]);
        assert_eq!(q(1, 0, 2), [1; 5]);
        assert_eq!(q(3, 4, 1), [0; 5]);
    }
}
