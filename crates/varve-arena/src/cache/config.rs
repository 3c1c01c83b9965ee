//! [`CacheConfig`]: the tuning of a cache manager.

use std::time::Duration;

use crate::arena::PageClass;

/// Tuning of a [`CacheManager`](super::CacheManager).
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
    ///
    /// [`PageSource::reads_in_flight`]: crate::source::PageSource::reads_in_flight
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
