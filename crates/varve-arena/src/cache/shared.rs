//! The state the manager, its readers and the prefetch threads share: the SIEVE-ordered
//! page map behind one lock, the pages being prefetched, and eviction to the arena's
//! watermarks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::config::CacheConfig;
use super::stats::{Counters, bump};
use crate::arena::{Arena, Block};
use crate::error::{Error, Result};
use crate::format::Framing;
use crate::hash::KeyBuild;
use crate::sieve::Sieve;
use crate::source::{FileId, PageSource};

type Key = (FileId, u64);

/// One cached page: `valid` leading bytes of `block` are the file's bytes at the page start.
pub(super) struct Page {
    pub(super) block: Block,
    pub(super) valid: usize,
}

pub(super) struct Entry {
    pub(super) page: Arc<Page>,
    /// Loaded by the prefetcher for this reader and not used yet.
    pub(super) prefetched_for: Option<u64>,
}

pub(super) struct Cache {
    pub(super) pages: Sieve<Key, Entry>,
    /// Pages the prefetcher is loading right now.
    pub(super) pending: HashSet<Key, KeyBuild>,
    /// Readers with prefetched pages wasted since they last looked.
    pub(super) wasted: HashSet<u64, KeyBuild>,
}

pub(super) struct Shared {
    pub(super) source: Arc<dyn PageSource>,
    pub(super) framing: Box<dyn Framing>,
    pub(super) arena: Arena,
    pub(super) config: CacheConfig,
    pub(super) cache: Mutex<Cache>,
    /// Signalled when a pending page is loaded (or given up).
    pub(super) loaded: Condvar,
    /// Held by a prefetch worker from making room for a run until its blocks are allocated,
    /// so two workers cannot both see the same room and allocate a window each into it.
    pub(super) room: Mutex<()>,
    pub(super) counters: Counters,
    /// Set if the prefetcher died of a panic; sticky.
    pub(super) poisoned: AtomicBool,
    /// Why it died (set before `poisoned`).
    pub(super) poison_cause: std::sync::OnceLock<Arc<std::io::Error>>,
    pub(super) next_reader: AtomicU64,
    pub(super) live_readers: AtomicU64,
}

/// The used bytes the cache trims to for an arena with `min` bytes: `min` less an
/// allowance for pages freed inside chunks that are not empty yet (an eighth of `min`, at
/// most four chunks). Without it the arena holds more than `min` whenever the cache uses
/// `min`, so every chunk that empties is unmapped and the next prefetch maps (and faults
/// in) a fresh one; with it, emptied chunks stay mapped and are reused.
fn trim_target(min: u64) -> u64 {
    min - (min / 8).min(4 * crate::arena::CHUNK_BYTES)
}

/// Attempts a reader spins on a busy cache lock before it yields ([`Shared::lock_reader`]).
const LOCK_SPINS: u32 = 64;
/// Attempts a reader yields the CPU between, after spinning, before it blocks on the lock.
const LOCK_YIELDS: u32 = 2000;

impl Shared {
    /// The error every read returns once the prefetcher died (`poisoned` is set).
    pub(super) fn poisoned_error(&self) -> Error {
        Error::Poisoned(self.poison_cause.get().map_or_else(
            || Arc::new(std::io::Error::other("the prefetch thread stopped")),
            Arc::clone,
        ))
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn page_size(&self) -> usize {
        self.config.class.page_size()
    }

    /// Evicts one unpinned page by SIEVE and returns it; `None` if none can go.
    pub(super) fn evict_one(&self, cache: &mut Cache) -> Option<Entry> {
        let (_, entry) = cache
            .pages
            .evict(|e: &Entry| Arc::strong_count(&e.page) == 1)?;
        bump(&self.counters.evictions);
        self.note_dropped(cache, &entry);
        Some(entry)
    }

    /// Accounts a page leaving the cache (evicted or invalidated).
    pub(super) fn note_dropped(&self, cache: &mut Cache, entry: &Entry) {
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
    pub(super) fn trim(&self, cache: &mut Cache, reserve: u64) -> Vec<Entry> {
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
    pub(super) fn lock_reader(&self) -> MutexGuard<'_, Cache> {
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
    pub(super) fn alloc_page(&self, wait: bool) -> Result<Option<Block>> {
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

    /// Waits until no prefetch is in flight (or `timeout` passes); true if idle.
    pub(super) fn wait_idle(&self, timeout: Duration) -> bool {
        let cache = self.lock();
        let (cache, _) = self
            .loaded
            .wait_timeout_while(cache, timeout, |c| !c.pending.is_empty())
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arena::{ArenaConfig, CHUNK_BYTES};
    use crate::cache::CacheManager;
    use crate::source::FileSource;

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
    fn trim_target_leaves_an_eighth_of_min_up_to_four_chunks() {
        assert_eq!(trim_target(0), 0);
        assert_eq!(trim_target(CHUNK_BYTES), CHUNK_BYTES - CHUNK_BYTES / 8);
        assert_eq!(trim_target(8 * CHUNK_BYTES), 7 * CHUNK_BYTES);
        assert_eq!(trim_target(32 * CHUNK_BYTES), 28 * CHUNK_BYTES);
        assert_eq!(trim_target(64 * CHUNK_BYTES), 60 * CHUNK_BYTES);
    }
}
