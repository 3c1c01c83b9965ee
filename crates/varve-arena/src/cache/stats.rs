//! [`CacheStats`], what a cache manager reports, and the counters behind it.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a [`CacheManager`](super::CacheManager) since it was made.
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

#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) late_hits: AtomicU64,
    pub(super) prefetched: AtomicU64,
    pub(super) prefetched_used: AtomicU64,
    pub(super) prefetched_wasted: AtomicU64,
    pub(super) evictions: AtomicU64,
    pub(super) invalidations: AtomicU64,
}

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}
