//! [`CacheConfig`]: the tuning of a cache manager.

use std::time::Duration;

use crate::arena::PageClass;

/// Tuning of a [`CacheManager`](super::CacheManager): `CacheConfig::default()` and the
/// setters below; [`CacheManager::new`](super::CacheManager::new) checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheConfig {
    pub(crate) class: PageClass,
    pub(crate) prefetch: bool,
    pub(crate) initial_window: usize,
    pub(crate) max_window: usize,
    pub(crate) prefetch_threads: usize,
    pub(crate) sequential_after: usize,
    pub(crate) wait_timeout: Duration,
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

impl CacheConfig {
    /// Page class of cached pages (default 4 KiB: the O_DIRECT unit).
    #[must_use]
    pub fn class(mut self, class: PageClass) -> Self {
        self.class = class;
        self
    }

    /// Whether sequential readers get background prefetch (default on).
    #[must_use]
    pub fn prefetch(mut self, prefetch: bool) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Prefetch window of a newly sequential reader, in pages (default 4).
    #[must_use]
    pub fn initial_window(mut self, initial_window: usize) -> Self {
        self.initial_window = initial_window;
        self
    }

    /// Largest prefetch window, in pages (default 1024: 4 MiB of 4 KiB pages). A reader asks
    /// for more when about half a window is left ahead of it, so reads are about half this
    /// size: large enough for an O_DIRECT read to stream (128 KiB reads do not), and far
    /// enough ahead that a buffered read reaches the kernel's readahead marker early (with
    /// 256 pages, a tailing reader caught up with the prefetcher about once per MiB on cold
    /// data; with 1024 it does so mostly where the disk itself stalls).
    #[must_use]
    pub fn max_window(mut self, max_window: usize) -> Self {
        self.max_window = max_window;
        self
    }

    /// Background prefetch threads (default 2). At least 1. Each reader's windows go to
    /// one thread and are read in order, unless its source asks for more reads in flight
    /// ([`PageSource::reads_in_flight`]: 2 for `O_DIRECT` files, which need two reads
    /// in flight to keep a disk busy); readers are spread over the threads.
    ///
    /// [`PageSource::reads_in_flight`]: crate::source::PageSource::reads_in_flight
    #[must_use]
    pub fn prefetch_threads(mut self, prefetch_threads: usize) -> Self {
        self.prefetch_threads = prefetch_threads;
        self
    }

    /// Consecutive pages a reader must touch before it counts as sequential (default 2).
    #[must_use]
    pub fn sequential_after(mut self, sequential_after: usize) -> Self {
        self.sequential_after = sequential_after;
        self
    }

    /// How long a read waits for memory at the arena's `max` (when nothing can be evicted)
    /// or for a page the prefetcher is loading (default 5 s).
    #[must_use]
    pub fn wait_timeout(mut self, wait_timeout: Duration) -> Self {
        self.wait_timeout = wait_timeout;
        self
    }
}
