//! Memory-mapped slotted-page store for mutable payloads keyed by dense integer ids.
//!
//! Values live in *pages*: files of at least [`Options::min_page_size`] bytes (32 MiB by
//! default, larger when one value needs it), mapped into memory. Each page is a slotted
//! page: a 64-byte header, a directory of fixed 40-byte slots growing up from it, and value
//! containers (at least 128 bytes, 8-byte aligned) cut from the free space. Values are
//! lz4-compressed (block format, optionally with a trained dictionary) and stored raw when
//! compression would not shrink their container. An id -> (page, slot) *tracker* lives in
//! its own mapped file. One writer at a time, any number of readers.
//!
//! ```
//! use varve_slotted::{Options, Store};
//! # let dir = tempfile::tempdir()?;
//! let store = Store::create(dir.path(), Options::default().min_page_size(64 * 1024))?;
//! assert!(!store.put(7, b"{\"name\":\"seven\"}")?);
//! assert_eq!(store.get(7)?.as_deref(), Some(&b"{\"name\":\"seven\"}"[..]));
//! store.flush()?; // durable from here on
//! assert_eq!(store.delete(7)?, Some(16));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Durability protocol
//!
//! The page files are written through shared mappings, so the kernel may write any dirty
//! byte back at any moment, before or after a `flush`. The protocol therefore never relies
//! on a write *not* reaching disk; it only relies on what `fdatasync` makes durable:
//!
//! 1. **Out of place.** A `put` writes its value and slot entry into space no *durable*
//!    pointer reaches: a free container and a free (or new) directory slot. The in-memory
//!    pointer of the id is then swapped (readers see the old or the new value, never a mix).
//!    The tracker file is not touched.
//! 2. **In place only when it is safe.** A value written since the last flush ("fresh") is
//!    reached by no durable pointer, so a later `put` of the same id that fits overwrites it
//!    in place (and a smaller value gives its container's tail back, down to 128 bytes).
//!    A value made durable by a flush is never overwritten: the new one goes elsewhere.
//! 3. **Old versions.** A replaced or deleted fresh value is freed at once (no leak between
//!    flushes). A replaced or deleted durable value is only marked *pending*: the on-disk
//!    tracker still points at it until the next flush. Pending space cannot be reused,
//!    so a write that brings the pending bytes to
//!    [`Options::flush_after_retired_bytes`] (default 8 MiB) runs the flush itself: a long
//!    run of updates without `flush` grows the files by at most about that much.
//! 4. **`flush` orders data, pointers, frees:** (a) write back the 4 KiB blocks of every
//!    page dirtied since the last flush (values and slot entries: `sync_file_range` of
//!    each, then `fdatasync` of each page file); (b) write the changed ids' entries into
//!    the tracker mapping and `fdatasync` it (plus `fsync` when it grew); (c) only then
//!    free the pending containers (their slot entries become tombstones; whole file
//!    blocks of free space are given back to the file system by hole punching) and mark
//!    fresh values durable. A crash before (b) completes leaves the tracker naming old,
//!    intact values; a crash during (b) leaves each 16-byte entry (inside one sector) old
//!    or new (both name intact values); a crash after it leaks nothing: free space is
//!    derived, see 6.
//! 5. **New files** (pages, dictionaries, the tracker) are written as `*.tmp`, synced and
//!    renamed, and the directory is synced, before anything points into them; `*.tmp`
//!    leftovers are deleted on open.
//! 6. **Derived metadata is rebuilt on open.** Liveness comes from the tracker alone: a
//!    slot is live iff a tracker pointer names it and its entry verifies (checksum bound to
//!    its location, owner id, bounds, no overlap). Free space, slot reuse lists, counters
//!    and the page-header summaries are recomputed from that; a stored summary that
//!    disagrees is counted ([`Stats::summaries_rebuilt`]) and rewritten. A pointer whose
//!    slot does not verify makes only that id read as [`Error::Corrupted`]; open succeeds.
//!
//! So after a crash (panic, kill -9, power loss with sector-atomic writes) every id
//! reads its value as of the last completed flush or a newer one, never a torn value, and
//! opening needs no repair step.
//!
//! # Disk space
//!
//! Page and tracker files are sparse, and freed space is punched. Every range is reserved
//! with `fallocate` before it is first written through its mapping (and again after a
//! punch), so a full file system makes the write that needed the space fail with an
//! [`Error::Io`] (`ENOSPC`), changing nothing, instead of a SIGBUS. `put` and `delete`
//! reserve the id's tracker entry too, so a flush needs no new space. Ids index a sparse
//! table (see [`Options::max_id`]).
//!
//! # Readers and the writer
//!
//! Readers take a read lock on the pointer table for the duration of one read (a lookup,
//! a checksum and a decompression or a zero-copy callback). The writer writes new values
//! into unreachable space without that lock and takes the write lock only to swap a pointer,
//! overwrite a fresh value in place, or add/remove a page mapping.
//!
//! # Compaction
//!
//! When a page's fragmented free space passes [`Options::compact_threshold`] of its size,
//! the page is marked for compaction and every later write moves at most
//! [`Options::compact_step_bytes`] of its live values to other pages (best fit, skipping
//! pages being compacted). Readers are held up only for each pointer swap; the writer for
//! one bounded step. Once drained and flushed the page is empty: it is reused, or deleted
//! when more than [`Options::keep_empty_pages`] pages are empty. [`Store::compact`] does
//! the same for every page with fragmented space, releasing the writer lock between steps.
//!
//! # Dictionaries
//!
//! [`Store::train_dictionary`] samples stored values, trains an lz4 dictionary, stores it
//! durably as `dict-NNNNN.vvd` with its id, and compresses later writes with it; each value
//! records the id of the dictionary it needs.

mod dict;
mod error;
mod format;
mod mmap;
mod page;
mod ptrs;
mod ranges;
mod store;
mod tracker;

pub use error::{Error, Result};
pub use format::MIN_CONTAINER;
#[cfg(feature = "test-hooks")]
pub use store::CrashHook;
pub use store::{
    CompactReport, Compression, DEFAULT_PAGE_SIZE, Iter, MAX_PAGE_SIZE, MIN_PAGE_SIZE, Options,
    Stats, Store,
};
