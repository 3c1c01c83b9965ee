//! [`CacheManager`]: the handle that owns the shared state and the prefetch threads, and
//! hands out readers.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::CacheConfig;
use super::prefetch::{Msg, prefetch_worker};
use super::reader::TailReader;
use super::shared::{Cache, Shared};
use super::stats::{CacheStats, Counters};
use crate::arena::{Arena, ArenaStats};
use crate::error::{Error, Result};
use crate::format::{DefaultFraming, Framing};
use crate::sieve::Sieve;
use crate::source::{FileId, PageSource};

/// Caches and prefetches pages of a [`PageSource`] for readers of framed records.
pub struct CacheManager {
    pub(super) shared: Arc<Shared>,
    /// One queue per prefetch thread.
    queues: Arc<[mpsc::Sender<Msg>]>,
    workers: Vec<JoinHandle<()>>,
}

impl fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheManager")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl CacheManager {
    /// A manager reading `source` through the default (WAL) framing, caching in `arena`.
    pub fn new(source: Arc<dyn PageSource>, arena: Arena, config: CacheConfig) -> Result<Self> {
        Self::with_framing(source, arena, config, DefaultFraming::default())
    }

    /// A manager with a custom record framing.
    pub fn with_framing(
        source: Arc<dyn PageSource>,
        arena: Arena,
        config: CacheConfig,
        framing: impl Framing,
    ) -> Result<Self> {
        let bad = |what, why| Err(Error::InvalidOptions { what, why });
        if config.initial_window == 0 {
            return bad("initial_window", "must be at least 1");
        }
        if config.max_window < config.initial_window {
            return bad("max_window", "must be at least initial_window");
        }
        if config.prefetch_threads == 0 {
            return bad("prefetch_threads", "must be at least 1");
        }
        let shared = Arc::new(Shared {
            source,
            framing: Box::new(framing),
            arena,
            config,
            cache: Mutex::new(Cache {
                pages: Sieve::new(),
                pending: HashSet::default(),
                wasted: HashSet::default(),
            }),
            loaded: Condvar::new(),
            room: Mutex::new(()),
            counters: Counters::default(),
            poisoned: AtomicBool::new(false),
            poison_cause: std::sync::OnceLock::new(),
            next_reader: AtomicU64::new(0),
            live_readers: AtomicU64::new(0),
        });
        let (queues, receivers): (Vec<_>, Vec<_>) = (0..config.prefetch_threads)
            .map(|_| mpsc::channel())
            .unzip();
        let mut manager = CacheManager {
            shared,
            queues: queues.into(),
            workers: Vec::new(),
        };
        for rx in receivers {
            let shared = Arc::clone(&manager.shared);
            let worker = std::thread::Builder::new()
                .name("varve-arena-prefetch".to_string())
                .spawn(move || prefetch_worker(&shared, &rx))?;
            // On a spawn error `manager` drops here and stops the workers already started.
            manager.workers.push(worker);
        }
        Ok(manager)
    }

    /// A reader of the records of `file` starting at `offset`, which must be the start of
    /// a record (else the first record reads as corrupt, or as not yet available).
    pub fn reader(&self, file: FileId, offset: u64) -> TailReader {
        self.shared.live_readers.fetch_add(1, Ordering::Relaxed);
        TailReader {
            shared: Arc::clone(&self.shared),
            queues: Arc::clone(&self.queues),
            id: self.shared.next_reader.fetch_add(1, Ordering::Relaxed),
            requests: 0,
            file,
            offset,
            current: None,
            last_page: None,
            run: 0,
            window: self.shared.config.initial_window,
            used_in_window: 0,
            prefetched_until: 0,
            patient: true,
            header: Vec::new(),
            expected: None,
        }
    }

    /// Counters and memory figures.
    pub fn stats(&self) -> CacheStats {
        let c = &self.shared.counters;
        let cached = self.shared.lock().pages.len() as u64;
        let arena: ArenaStats = self.shared.arena.stats();
        CacheStats {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            late_hits: c.late_hits.load(Ordering::Relaxed),
            prefetched: c.prefetched.load(Ordering::Relaxed),
            prefetched_used: c.prefetched_used.load(Ordering::Relaxed),
            prefetched_wasted: c.prefetched_wasted.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            invalidations: c.invalidations.load(Ordering::Relaxed),
            cached_pages: cached,
            readers: self.shared.live_readers.load(Ordering::Relaxed),
            cached_bytes: cached * self.shared.config.class.page_size() as u64,
            held_bytes: arena.held_bytes,
            peak_held_bytes: arena.peak_held_bytes,
        }
    }

    /// The arena the pages live in.
    pub fn arena(&self) -> &Arena {
        &self.shared.arena
    }

    /// True if the page of `file` containing `offset` is cached (for tests and tools).
    pub fn is_cached(&self, file: FileId, offset: u64) -> bool {
        let ps = self.shared.config.class.page_size() as u64;
        self.shared
            .lock()
            .pages
            .peek_mut(&(file, offset / ps))
            .is_some()
    }

    /// Waits until the prefetcher has no page in flight, up to `timeout`; true if it is
    /// idle. For tests and benchmarks that want a settled cache.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        self.shared.wait_idle(timeout)
    }

    /// Drops every unpinned cached page (their blocks go back to the arena).
    pub fn clear(&self) {
        let mut cache = self.shared.lock();
        while self.shared.evict_one(&mut cache).is_some() {}
    }
}

impl Drop for CacheManager {
    fn drop(&mut self) {
        for queue in self.queues.iter() {
            let _ = queue.send(Msg::Shutdown);
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{ArenaConfig, CHUNK_BYTES, PageClass};
    use crate::source::FileSource;

    #[test]
    fn small_page_class() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let mut bytes = Vec::new();
        crate::format::encode_record(0, 0, &[7; 1000], &mut bytes).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        let source = FileSource::new();
        source.open(0, &path).unwrap();
        let arena = Arena::new(ArenaConfig::with_limits(0, CHUNK_BYTES).unwrap());
        let config = CacheConfig::default().class(PageClass::Small);
        let m = CacheManager::new(Arc::new(source), arena, config).unwrap();
        assert_eq!(m.shared.page_size(), 512);
        let mut r = m.reader(0, 0);
        assert_eq!(r.next_record().unwrap().unwrap().payload(), &[7; 1000][..]);
        assert_eq!(m.stats().misses, 2, "1024 bytes in two 512-byte pages");
        assert_eq!(m.stats().cached_bytes, m.stats().cached_pages * 512);
    }
}
