//! The cache manager: pages of append-only files cached in arena blocks, prefetched ahead
//! of sequential readers, and records validated before they are handed out.
//!
//! Pages are one arena page of the configured class (4 KiB by default) at page-aligned file
//! offsets. A page read near the end of a file may be partly filled; it records how many of
//! its bytes are file bytes (`valid`) and only those are ever served. When a reader needs
//! bytes past a partial page's `valid` and the file has grown, that page is invalidated and
//! read again, so a tailing reader never sees a stale tail.
//!
//! Every [`TailReader`] watches its own page accesses; after a few consecutive pages it is
//! *sequential* and asks the background prefetcher for the next window of pages (one
//! `preadv` into arena blocks). A reader's windows queue for one prefetch thread and are
//! read in file order, unless its source wants more reads in flight for the file
//! ([`PageSource::reads_in_flight`]); different readers start on different threads. The
//! window doubles each time a whole window of prefetched pages was used, and halves
//! whenever one of the reader's prefetched pages is evicted or invalidated unused. Pages
//! live in a SIEVE-ordered map; when the arena's used bytes pass a little under its `min`
//! (or an allocation finds it at `max`) unpinned pages are evicted; evicted pages are freed
//! after the cache's lock is released, so a reader never waits for a prefetch worker's
//! frees (and a reader spins briefly on a busy lock rather than sleeping on it). The
//! prefetcher makes room before it allocates a window, and the margin under `min` leaves
//! room for pages freed inside chunks that are not empty yet, so a streaming reader keeps
//! the arena's held bytes at `min` and emptied chunks are reused, not unmapped and mapped
//! (and faulted in) again. Only a re-reference marks a page visited for SIEVE: the first
//! use of a prefetched page does not, so the hand evicts the pages a tailing reader has
//! consumed before the prefetched pages ahead of it. A page a reader currently holds is
//! pinned and never evicted.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::arena::{Arena, ArenaStats, Block, PageClass};
use crate::error::{Error, Result};
use crate::format::{DefaultFraming, Framing};
use crate::hash::KeyBuild;
use crate::sieve::Sieve;
use crate::source::{FileId, PageSource};

/// Tuning of a [`CacheManager`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// Page class of cached pages (default 4 KiB: the O_DIRECT unit).
    pub class: PageClass,
    /// Whether sequential readers get background prefetch (default on).
    pub prefetch: bool,
    /// Prefetch window of a newly sequential reader, in pages (default 4).
    pub initial_window: usize,
    /// Largest prefetch window, in pages (default 1024: 4 MiB of 4 KiB pages). A reader asks
    /// for more when about half a window is left ahead of it, so reads are about half this
    /// size: large enough for an O_DIRECT read to stream (128 KiB reads do not), and far
    /// enough ahead that a buffered read reaches the kernel's readahead marker early (with
    /// 256 pages, a tailing reader caught up with the prefetcher about once per MiB on cold
    /// data; with 1024 it does so mostly where the disk itself stalls).
    pub max_window: usize,
    /// Background prefetch threads (default 2). At least 1. Each reader's windows go to
    /// one thread and are read in order, unless its source asks for more reads in flight
    /// ([`PageSource::reads_in_flight`]: 2 for `O_DIRECT` files, which need two reads
    /// in flight to keep a disk busy); readers are spread over the threads.
    pub prefetch_threads: usize,
    /// Consecutive pages a reader must touch before it counts as sequential (default 2).
    pub sequential_after: usize,
    /// How long a read waits for memory at the arena's `max` (when nothing can be evicted)
    /// or for a page the prefetcher is loading (default 5 s).
    pub wait_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            class: PageClass::Large,
            prefetch: true,
            initial_window: 4,
            max_window: 1024,
            prefetch_threads: 2,
            sequential_after: 2,
            wait_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of a [`CacheManager`] since it was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Page lookups served from the cache.
    pub hits: u64,
    /// Page lookups that read from the source in the reader's thread.
    pub misses: u64,
    /// Page lookups that waited for a prefetch already in flight (counted in `hits` too).
    pub late_hits: u64,
    /// Pages the prefetcher loaded.
    pub prefetched: u64,
    /// Prefetched pages a reader then used.
    pub prefetched_used: u64,
    /// Prefetched pages evicted or invalidated before any reader used them.
    pub prefetched_wasted: u64,
    /// Pages evicted by SIEVE.
    pub evictions: u64,
    /// Partial tail pages dropped because their file grew.
    pub invalidations: u64,
    /// Pages currently cached.
    pub cached_pages: u64,
    /// Readers alive now.
    pub readers: u64,
    /// Bytes of cached pages (`cached_pages * page size`).
    pub cached_bytes: u64,
    /// Bytes the arena holds from the OS (all its users).
    pub held_bytes: u64,
    /// The most bytes the arena ever held at once.
    pub peak_held_bytes: u64,
}

impl CacheStats {
    /// `hits / (hits + misses)`, 0 when nothing was looked up.
    pub fn hit_rate(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

type Key = (FileId, u64);

/// One cached page: `valid` leading bytes of `block` are the file's bytes at the page start.
struct Page {
    block: Block,
    valid: usize,
}

struct Entry {
    page: Arc<Page>,
    /// Loaded by the prefetcher for this reader and not used yet.
    prefetched_for: Option<u64>,
}

struct Cache {
    pages: Sieve<Key, Entry>,
    /// Pages the prefetcher is loading right now.
    pending: HashSet<Key, KeyBuild>,
    /// Readers with prefetched pages wasted since they last looked.
    wasted: HashSet<u64, KeyBuild>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    late_hits: AtomicU64,
    prefetched: AtomicU64,
    prefetched_used: AtomicU64,
    prefetched_wasted: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

struct Shared {
    source: Arc<dyn PageSource>,
    framing: Box<dyn Framing>,
    arena: Arena,
    config: CacheConfig,
    cache: Mutex<Cache>,
    /// Signalled when a pending page is loaded (or given up).
    loaded: Condvar,
    /// Held by a prefetch worker from making room for a run until its blocks are allocated,
    /// so two workers cannot both see the same room and allocate a window each into it.
    room: Mutex<()>,
    counters: Counters,
    /// Set if the prefetcher died of a panic; sticky.
    poisoned: AtomicBool,
    next_reader: AtomicU64,
    live_readers: AtomicU64,
}

enum Msg {
    Prefetch {
        file: FileId,
        pages: Vec<u64>,
        reader: u64,
    },
    Shutdown,
}

/// Caches and prefetches pages of a [`PageSource`] for readers of framed records.
pub struct CacheManager {
    shared: Arc<Shared>,
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
        if config.initial_window == 0
            || config.max_window < config.initial_window
            || config.prefetch_threads == 0
        {
            return Err(Error::InvalidConfig {
                reason: "need 0 < initial_window <= max_window and prefetch_threads > 0"
                    .to_string(),
            });
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

/// The used bytes the cache trims to for an arena with `min` bytes: `min` less an
/// allowance for pages freed inside chunks that are not empty yet (an eighth of `min`, at
/// most four chunks). Without it the arena holds more than `min` whenever the cache uses
/// `min`, so every chunk that empties is unmapped and the next prefetch maps (and faults
/// in) a fresh one; with it, emptied chunks stay mapped and are reused.
fn trim_target(min: u64) -> u64 {
    min - (min / 8).min(4 * crate::arena::CHUNK_BYTES)
}

/// The prefetch queue for request number `request` of reader `reader`, when the source
/// wants `in_flight` reads of its file in flight and there are `queues` queues: a reader's
/// requests take turns over `in_flight` consecutive queues from its own (so with 1 they
/// are read in order by one thread), and readers start on different queues.
fn prefetch_queue(reader: u64, request: u64, in_flight: usize, queues: usize) -> usize {
    let lanes = in_flight.clamp(1, queues) as u64;
    ((reader + request % lanes) % queues as u64) as usize
}

/// Attempts a reader spins on a busy cache lock before it yields ([`Shared::lock_reader`]).
const LOCK_SPINS: u32 = 64;
/// Attempts a reader yields the CPU between, after spinning, before it blocks on the lock.
const LOCK_YIELDS: u32 = 2000;

/// Marks the manager poisoned if the prefetcher thread unwinds.
struct PanicGuard<'a>(&'a Shared);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.poisoned.store(true, Ordering::SeqCst);
            // Wake readers waiting on pages that will now never load.
            let _guard = self.0.lock();
            self.0.loaded.notify_all();
        }
    }
}

fn prefetch_worker(shared: &Shared, rx: &mpsc::Receiver<Msg>) {
    let _guard = PanicGuard(shared);
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
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn page_size(&self) -> usize {
        self.config.class.page_size()
    }

    /// Evicts one unpinned page by SIEVE and returns it; `None` if none can go.
    fn evict_one(&self, cache: &mut Cache) -> Option<Entry> {
        let (_, entry) = cache
            .pages
            .evict(|e: &Entry| Arc::strong_count(&e.page) == 1)?;
        bump(&self.counters.evictions);
        self.note_dropped(cache, &entry);
        Some(entry)
    }

    /// Accounts a page leaving the cache (evicted or invalidated).
    fn note_dropped(&self, cache: &mut Cache, entry: &Entry) {
        if let Some(reader) = entry.prefetched_for {
            bump(&self.counters.prefetched_wasted);
            cache.wasted.insert(reader);
        }
    }

    /// Evicts while the arena's used bytes, less those of the pages evicted so far, plus
    /// `reserve` (bytes about to be allocated) are above [`trim_target`] of its `min`.
    ///
    /// Returns the evicted pages instead of freeing them: the caller drops them after
    /// releasing the cache's lock (and before allocating into the room they leave), so a
    /// reader looking up its next page does not wait for a window's worth of frees. Each
    /// evicted page was unpinned (only the cache held it), so dropping it frees its block.
    #[must_use = "drop the evicted pages after releasing the cache's lock"]
    fn trim(&self, cache: &mut Cache, reserve: u64) -> Vec<Entry> {
        let target = trim_target(self.arena.config().min_bytes());
        let used = self.arena.used_bytes();
        let mut evicted = Vec::new();
        let mut freed = 0u64;
        while used.saturating_sub(freed) + reserve > target {
            let Some(entry) = self.evict_one(cache) else {
                break;
            };
            freed += entry.page.block.len() as u64;
            evicted.push(entry);
        }
        evicted
    }

    /// The cache's lock for a reader: it tries a while (spinning, then yielding) before it
    /// blocks. Workers hold the lock only for short bookkeeping, so it is usually free
    /// again within microseconds, while a reader that sleeps on it waits for a wake-up
    /// (tens of microseconds on a VM), which is a whole page of records.
    fn lock_reader(&self) -> MutexGuard<'_, Cache> {
        for _ in 0..LOCK_SPINS {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            std::hint::spin_loop();
        }
        for _ in 0..LOCK_YIELDS {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            std::thread::yield_now();
        }
        self.lock()
    }

    fn try_lock(&self) -> Option<MutexGuard<'_, Cache>> {
        match self.cache.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// One page's worth of arena memory, evicting to make room; waits (up to the
    /// configured timeout) only if nothing can be evicted. `wait` false: never waits.
    fn alloc_page(&self, wait: bool) -> Result<Option<Block>> {
        loop {
            match self.arena.try_alloc(self.config.class, 1) {
                Ok(b) => return Ok(Some(b)),
                Err(Error::Exhausted { .. }) => {
                    let evicted = self.evict_one(&mut self.lock());
                    if evicted.is_some() {
                        drop(evicted); // frees its block, outside the cache's lock
                        continue;
                    }
                    if !wait {
                        return Ok(None);
                    }
                    return self
                        .arena
                        .alloc(self.config.class, 1, self.config.wait_timeout)
                        .map(Some);
                }
                Err(e) => return Err(e),
            }
        }
    }

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

    /// Waits until no prefetch is in flight (or `timeout` passes); true if idle.
    fn wait_idle(&self, timeout: Duration) -> bool {
        let cache = self.lock();
        let (cache, _) = self
            .loaded
            .wait_timeout_while(cache, timeout, |c| !c.pending.is_empty())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.pending.is_empty()
    }
}

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
    shared: Arc<Shared>,
    /// The prefetch threads' queues.
    queues: Arc<[mpsc::Sender<Msg>]>,
    id: u64,
    /// Prefetch requests sent so far.
    requests: u64,
    file: FileId,
    /// Offset of the next record.
    offset: u64,
    /// The page the reader is on, pinned while held.
    current: Option<(u64, Arc<Page>)>,
    last_page: Option<u64>,
    /// Consecutive sequential page steps.
    run: usize,
    window: usize,
    used_in_window: usize,
    /// Pages below this index were requested from the prefetcher.
    prefetched_until: u64,
    /// False after a wait for an in-flight prefetch timed out, until a prefetched page is
    /// used again: a stuck prefetcher costs a reader one timeout, not one per page.
    patient: bool,
    header: Vec<u8>,
    /// The sequence number the next record must carry, once set.
    expected: Option<u64>,
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
        if self.shared.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
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
        if shared.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{ArenaConfig, CHUNK_BYTES};
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
        let config = CacheConfig {
            wait_timeout: Duration::from_millis(200),
            ..CacheConfig::default()
        };
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
    fn reader_lock_takes_a_free_or_poisoned_lock_and_reports_a_busy_one() {
        let arena = Arena::new(ArenaConfig::with_limits(0, CHUNK_BYTES).unwrap());
        let m =
            CacheManager::new(Arc::new(FileSource::new()), arena, CacheConfig::default()).unwrap();
        let shared = &m.shared;
        assert!(shared.try_lock().is_some(), "a free lock is taken");
        let held = shared.lock();
        assert!(shared.try_lock().is_none(), "a held lock is reported busy");
        drop(held);
        assert_eq!(shared.lock_reader().pages.len(), 0);
        // A panic while holding the lock poisons it; readers keep going.
        let poisoner = Arc::clone(shared);
        let _ = std::thread::spawn(move || {
            let _guard = poisoner.lock();
            panic!("poison the cache lock");
        })
        .join();
        assert!(shared.cache.is_poisoned());
        assert!(
            shared.try_lock().is_some(),
            "a poisoned lock is still taken"
        );
        assert_eq!(shared.lock_reader().pending.len(), 0);
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

    #[test]
    fn trim_target_leaves_an_eighth_of_min_up_to_four_chunks() {
        assert_eq!(trim_target(0), 0);
        assert_eq!(trim_target(CHUNK_BYTES), CHUNK_BYTES - CHUNK_BYTES / 8);
        assert_eq!(trim_target(8 * CHUNK_BYTES), 7 * CHUNK_BYTES);
        assert_eq!(trim_target(32 * CHUNK_BYTES), 28 * CHUNK_BYTES);
        assert_eq!(trim_target(64 * CHUNK_BYTES), 60 * CHUNK_BYTES);
    }

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
        let config = CacheConfig {
            class: PageClass::Small,
            ..CacheConfig::default()
        };
        let m = CacheManager::new(Arc::new(source), arena, config).unwrap();
        assert_eq!(m.shared.page_size(), 512);
        let mut r = m.reader(0, 0);
        assert_eq!(r.next_record().unwrap().unwrap().payload(), &[7; 1000][..]);
        assert_eq!(m.stats().misses, 2, "1024 bytes in two 512-byte pages");
        assert_eq!(m.stats().cached_bytes, m.stats().cached_pages * 512);
    }
}
