//! How a store is opened or created: [`Options`], [`Compression`], the crash hook of the
//! tests and the bounds of the page size.

use std::fmt;
use std::sync::Arc;

use super::PAGE_ALIGN;
use crate::error::{Error, Result};
use crate::format::{MIN_CONTAINER, PAGE_HEADER_LEN, SLOT_LEN};

/// Default minimum page size: 32 MiB.
pub const DEFAULT_PAGE_SIZE: u64 = 32 * 1024 * 1024;
/// Smallest allowed `min_page_size`.
pub const MIN_PAGE_SIZE: u64 = 16 * 1024;
/// Largest allowed page (and so the bound on `max_value_size`): 1 GiB.
pub const MAX_PAGE_SIZE: u64 = 1 << 30;
/// Largest allowed `max_id`: the tracker file holds 16 bytes per id below the largest
/// one (sparse, but its apparent size must stay within what file systems allow).
const MAX_ID_LIMIT: u64 = (1 << 39) - 1;

/// How values are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Store every value as given (every read is zero-copy).
    None,
    /// lz4 block format (with the newest trained dictionary, if any); a value whose
    /// compressed container would not be smaller than its raw one is stored raw.
    Lz4,
}

/// A test hook called at named points of the write path (see `Options::crash_hook`).
#[cfg(feature = "test-hooks")]
pub type CrashHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// How to open or create a store.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    pub(crate) min_page_size: u64,
    pub(crate) compression: Compression,
    pub(crate) max_id: u64,
    pub(crate) max_value_size: u32,
    pub(crate) compact_threshold: f64,
    pub(crate) compact_step_bytes: u32,
    pub(crate) keep_empty_pages: u32,
    pub(crate) flush_after_retired_bytes: u64,
    pub(crate) punch_min_bytes: u64,
    /// Test hook: called with a point name during writes and flushes (feature
    /// `test-hooks`).
    pub(crate) crash_hook: Option<Arc<dyn Fn(&'static str) + Send + Sync>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_page_size: DEFAULT_PAGE_SIZE,
            compression: Compression::Lz4,
            max_id: u64::from(u32::MAX),
            max_value_size: 64 * 1024 * 1024,
            compact_threshold: 0.3,
            compact_step_bytes: 256 * 1024,
            keep_empty_pages: 1,
            flush_after_retired_bytes: 8 * 1024 * 1024,
            punch_min_bytes: 64 * 1024,
            crash_hook: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("min_page_size", &self.min_page_size)
            .field("compression", &self.compression)
            .field("max_id", &self.max_id)
            .field("max_value_size", &self.max_value_size)
            .field("compact_threshold", &self.compact_threshold)
            .field("compact_step_bytes", &self.compact_step_bytes)
            .field("keep_empty_pages", &self.keep_empty_pages)
            .field("flush_after_retired_bytes", &self.flush_after_retired_bytes)
            .field("punch_min_bytes", &self.punch_min_bytes)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Minimum size of a page file in bytes (a multiple of 4096, 16 KiB..=1 GiB). A value
    /// too large for one gets a page of its own, rounded up to 4096. Default 32 MiB.
    pub fn min_page_size(mut self, bytes: u64) -> Options {
        self.min_page_size = bytes;
        self
    }

    /// Compression of values. Default [`Compression::Lz4`].
    pub fn compression(mut self, c: Compression) -> Options {
        self.compression = c;
        self
    }

    /// Largest id accepted, at most 2^39 - 1 (the sparse tracker file then spans 8 TiB,
    /// within ext4's file size limit). Ids index a sparse table: memory and disk
    /// grow with the ids in use (4096 neighbouring ids share a 32 KiB block of memory and
    /// 256 share a 4 KiB block of the tracker file), not with the largest id, so a single
    /// large id is cheap, but dense ids are the cheapest. Default `u32::MAX`.
    pub fn max_id(mut self, id: u64) -> Options {
        self.max_id = id;
        self
    }

    /// Largest value accepted, in bytes (at most 1 GiB minus a page header and slot).
    /// Default 64 MiB.
    pub fn max_value_size(mut self, bytes: u32) -> Options {
        self.max_value_size = bytes;
        self
    }

    /// Fraction of a page's bytes that may be fragmented free space (free bytes outside its
    /// largest free extent) before writes start moving its live values out to other pages
    /// (compact on write). Default 0.3.
    pub fn compact_threshold(mut self, fraction: f64) -> Options {
        self.compact_threshold = fraction;
        self
    }

    /// Container bytes moved by compaction per write (bounds how long compaction holds up
    /// the writer). Default 256 KiB.
    pub fn compact_step_bytes(mut self, bytes: u32) -> Options {
        self.compact_step_bytes = bytes;
        self
    }

    /// Empty pages kept for reuse after compaction; further empty pages are deleted.
    /// Default 1.
    pub fn keep_empty_pages(mut self, pages: u32) -> Options {
        self.keep_empty_pages = pages;
        self
    }

    /// Smallest run of whole free file blocks a flush gives back to the file system (hole
    /// punching). Each punched run is a file-system transaction, and a punched range must
    /// be reserved again before it is reused, so small runs are left allocated: the space
    /// stays in the page for reuse and is still reclaimed by compaction. 0 (or 4096)
    /// punches every whole free block.
    /// Default 64 KiB.
    pub fn punch_min_bytes(mut self, bytes: u64) -> Options {
        self.punch_min_bytes = bytes;
        self
    }

    /// Container bytes of replaced, deleted or moved values (retired: their space may be
    /// reused only once a flush has made the new pointers durable) after which a write
    /// flushes by itself. This bounds how much a long run of updates without
    /// [`Store::flush`] grows the files: without it, every old version keeps its space
    /// until the caller flushes. The write that triggers the flush pays for it; if that
    /// flush fails, the write returns the error and the store is poisoned. 0 turns it off.
    /// Default 8 MiB.
    ///
    /// [`Store::flush`]: crate::Store::flush
    pub fn flush_after_retired_bytes(mut self, bytes: u64) -> Options {
        self.flush_after_retired_bytes = bytes;
        self
    }

    /// Test hook (feature `test-hooks`, for this crate's crash tests): `hook` is called
    /// with a point name during writes and flushes, e.g. to panic there.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn crash_hook(mut self, hook: CrashHook) -> Options {
        self.crash_hook = Some(hook);
        self
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.min_page_size < MIN_PAGE_SIZE || self.min_page_size > MAX_PAGE_SIZE {
            return Err(Error::InvalidOptions {
                what: "min_page_size",
                why: "must be 16 KiB..=1 GiB",
            });
        }
        if !self.min_page_size.is_multiple_of(PAGE_ALIGN) {
            return Err(Error::InvalidOptions {
                what: "min_page_size",
                why: "must be a multiple of 4096",
            });
        }
        if u64::from(self.max_value_size)
            + u64::from(PAGE_HEADER_LEN + SLOT_LEN + PAGE_ALIGN as u32)
            > MAX_PAGE_SIZE
        {
            return Err(Error::InvalidOptions {
                what: "max_value_size",
                why: "must leave room in a 1 GiB page",
            });
        }
        if !(self.compact_threshold > 0.0 && self.compact_threshold <= 1.0) {
            return Err(Error::InvalidOptions {
                what: "compact_threshold",
                why: "must be in (0, 1]",
            });
        }
        if self.max_id > MAX_ID_LIMIT {
            return Err(Error::InvalidOptions {
                what: "max_id",
                why: "must be below 2^39",
            });
        }
        if self.compact_step_bytes < MIN_CONTAINER {
            return Err(Error::InvalidOptions {
                what: "compact_step_bytes",
                why: "must be at least 128",
            });
        }
        Ok(())
    }
}
