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
//!
//! One file per concern: [`config`] (the tuning), [`stats`] (the counters), [`shared`] (the
//! page map, its lock and eviction), [`manager`] (the handle), [`prefetch`] (the background
//! threads) and [`reader`] (the tailing reader).
//!
//! [`PageSource::reads_in_flight`]: crate::source::PageSource::reads_in_flight

mod config;
mod manager;
mod prefetch;
mod reader;
mod shared;
mod stats;

pub use config::CacheConfig;
pub use manager::CacheManager;
pub use reader::{Record, TailReader};
pub use stats::CacheStats;
