//! `SidecarOptions` and the read-path `CachePolicy`.

use crate::error::{Error, Result};

/// How reads of blobs treat the page cache and the process's memory. Blobs of at most
/// [`SidecarOptions::small_blob_max`] bytes are read like any LMDB value under every policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CachePolicy {
    /// The default: read the blob's file pages with `pread` on a separate read-only file
    /// descriptor (with `POSIX_FADV_RANDOM`, so the kernel reads exactly the requested
    /// ranges), in pieces of [`SidecarOptions::read_chunk`], keep a read-ahead window of
    /// 2 MiB requested with `POSIX_FADV_WILLNEED` ahead of the piece being read, and drop
    /// every piece with `POSIX_FADV_DONTNEED` once it is in the read buffer. Page-cache
    /// residency stays within about two pieces plus the read-ahead window; RSS within the
    /// read buffer (one digest chunk). With [`SidecarOptions::hot_budget`], recently read
    /// blobs stay cached within that budget. Where no file offset can be derived for a blob (see the
    /// crate docs), it is read through LMDB's map and only its RSS is given back.
    DropBehind,
    /// Read with `O_DIRECT`, bypassing the page cache entirely (falls back to
    /// [`CachePolicy::DropBehind`] where the filesystem refuses `O_DIRECT`). Nothing of
    /// the blob enters the page cache, but a blob that happens to be cached is read from
    /// the device again. A blob of two or more digest chunks is read with a helper thread
    /// that reads the next chunk while the current one is checked and handed out (about
    /// three chunks of memory).
    Direct,
    /// No cache advice (the "advice off" mode): hand out slices of LMDB's memory map
    /// directly (zero-copy) after `MADV_WILLNEED`; pages stay in the page cache and in the
    /// process's RSS. For small hot blob sets only.
    Keep,
}

/// Options of [`crate::Sidecar::open`]: `SidecarOptions::default()` and the setters below;
/// `open` checks them ([`SidecarOptions::validate`]).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SidecarOptions {
    pub(crate) max_blob_size: u64,
    pub(crate) initial_map_size: u64,
    pub(crate) max_map_size: u64,
    pub(crate) cache_policy: CachePolicy,
    pub(crate) verify_on_read: bool,
    pub(crate) verify_buffer: usize,
    pub(crate) read_chunk: usize,
    pub(crate) group_commit: bool,
    pub(crate) hot_budget: u64,
    pub(crate) small_blob_max: u64,
}

impl SidecarOptions {
    /// Largest blob accepted by `store`; larger payloads are rejected with
    /// `Error::BlobTooLarge` before anything is written. Default 1 GiB.
    #[must_use]
    pub fn max_blob_size(mut self, max_blob_size: u64) -> Self {
        self.max_blob_size = max_blob_size;
        self
    }

    /// Initial LMDB map size in bytes (rounded up to the page size). The map grows by
    /// doubling when a write needs more room. Default 256 MiB.
    #[must_use]
    pub fn initial_map_size(mut self, initial_map_size: u64) -> Self {
        self.initial_map_size = initial_map_size;
        self
    }

    /// Ceiling for map growth; a write that needs more fails with `Error::StoreFull`.
    /// Default 16 TiB (address space, not disk).
    #[must_use]
    pub fn max_map_size(mut self, max_map_size: u64) -> Self {
        self.max_map_size = max_map_size;
        self
    }

    /// Read-path cache policy. Default [`CachePolicy::DropBehind`].
    #[must_use]
    pub fn cache_policy(mut self, cache_policy: CachePolicy) -> Self {
        self.cache_policy = cache_policy;
        self
    }

    /// Check each chunk of a blob against the digest stored with it before handing the
    /// chunk out (default true). With it off, content bytes go to the writer unchecked
    /// (headers and the digest table are still checked) and content damage goes
    /// undetected.
    #[must_use]
    pub fn verify_on_read(mut self, verify_on_read: bool) -> Self {
        self.verify_on_read = verify_on_read;
        self
    }

    /// For blobs written by format version 1 only (they carry no chunk digests): up to this
    /// size they are read into one private buffer, verified against their SHA-256, then
    /// written; larger ones are read twice (the first pass verifies and notes a digest of
    /// every read chunk, the second hands out chunks that still match). Default 16 MiB.
    #[must_use]
    pub fn verify_buffer(mut self, verify_buffer: usize) -> Self {
        self.verify_buffer = verify_buffer;
        self
    }

    /// Size of the pieces a blob is read from the file in (rounded up to the page size):
    /// each piece is read with one `pread` and dropped from the page cache right after.
    /// Default 256 KiB. Page-cache residency of a read stays within about two pieces plus
    /// the read-ahead window (2 MiB). With [`CachePolicy::Direct`] pieces are at least
    /// 1 MiB (each is a synchronous device request).
    #[must_use]
    pub fn read_chunk(mut self, read_chunk: usize) -> Self {
        self.read_chunk = read_chunk;
        self
    }

    /// Let concurrent `store`/`store_many` calls share one LMDB write transaction and
    /// commit (default true). Off, every call commits (and syncs) on its own.
    #[must_use]
    pub fn group_commit(mut self, group_commit: bool) -> Self {
        self.group_commit = group_commit;
        self
    }

    /// Bytes of recently read blobs kept in the page cache (default 0: none, every read
    /// drops what it read). A blob whose overflow run (whole pages) fits the budget is
    /// kept after it is read; the blobs kept are chosen by SIEVE (a blob read again is
    /// marked and survives the next sweep), and a blob that leaves the set is dropped from
    /// the page cache (`POSIX_FADV_DONTNEED`, after `MADV_DONTNEED` on its pages in the
    /// map) before the blob that replaces it is read. A blob read again while kept is read
    /// through LMDB's map, at page-cache speed, still verified chunk by chunk. The page
    /// cache then holds at most the budget of kept blobs (plus the read window of reads
    /// that drop behind); the pages count in this process's RSS while kept. Not with
    /// [`CachePolicy::Keep`] (which keeps everything) or [`CachePolicy::Direct`] (which
    /// reads around the page cache): `Sidecar::open` refuses those with
    /// `Error::InvalidOptions`.
    #[must_use]
    pub fn hot_budget(mut self, hot_budget: u64) -> Self {
        self.hot_budget = hot_budget;
        self
    }

    /// Blobs of at most this many bytes (default 64 KiB; version-1 blobs up to 24 bytes
    /// more) are read and written like any LMDB value, whatever the [`CachePolicy`]: read
    /// through LMDB's map (verified as every blob is), and neither read nor write gives
    /// cache advice, so their pages stay in the page cache (and, once read, in this
    /// process's RSS as shared file pages) until the kernel reclaims them, as the event
    /// B-tree's pages do. Advice costs more than such a blob's I/O: each
    /// `POSIX_FADV_DONTNEED` that meets a page it cannot drop drains every CPU's page
    /// lists, and a dropped small blob is a device read the next time. The hot set
    /// ([`SidecarOptions::hot_budget`]) holds only larger blobs. 0: the policy applies to
    /// every blob.
    #[must_use]
    pub fn small_blob_max(mut self, small_blob_max: u64) -> Self {
        self.small_blob_max = small_blob_max;
        self
    }

    /// Checks that the options do not contradict each other.
    ///
    /// # Errors
    /// `Error::InvalidOptions` naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.hot_budget > 0 && self.cache_policy != CachePolicy::DropBehind {
            return Err(Error::InvalidOptions {
                what: "hot_budget",
                why: "a hot set needs CachePolicy::DropBehind (Keep keeps every blob, \
                      Direct reads around the page cache)",
            });
        }
        Ok(())
    }
}

impl Default for SidecarOptions {
    fn default() -> Self {
        SidecarOptions {
            max_blob_size: 1 << 30,
            initial_map_size: 256 << 20,
            max_map_size: 16 << 40,
            cache_policy: CachePolicy::DropBehind,
            verify_on_read: true,
            verify_buffer: 16 << 20,
            read_chunk: 256 << 10,
            group_commit: true,
            hot_budget: 0,
            small_blob_max: 64 << 10,
        }
    }
}
