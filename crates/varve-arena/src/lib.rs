//! Read-side memory for tailing readers: an arena allocator and a cache manager.
//!
//! - [`Arena`] hands out page-aligned [`Block`]s from 256 KiB bump chunks of one page class
//!   (512 B or 4 KiB) under `min`/`max` watermarks: it never holds more than `max` bytes
//!   from the OS, returns emptied chunks above `min`, and at `max` blocks (with a timeout)
//!   or fails at once. [`ArenaStats`] explains the footprint: held = used + wasted + free.
//! - [`CacheManager`] reads append-only files through a [`PageSource`], caches pages in
//!   arena blocks with SIEVE eviction, prefetches ahead of sequential [`TailReader`]s with
//!   an adaptive window, and validates each record's checksum ([`Framing`]; the default is
//!   the WAL's 24-byte header) before handing it out.
//!
//! ```
//! use std::sync::Arc;
//! use varve_arena::{Arena, ArenaConfig, CacheConfig, CacheManager, FileSource, format};
//!
//! # fn main() -> varve_arena::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("log");
//! let mut bytes = Vec::new();
//! format::encode_record(0, 1, b"hello", &mut bytes);
//! std::fs::write(&path, &bytes)?;
//!
//! let source = Arc::new(FileSource::new());
//! source.open(7, &path)?;
//! let arena = Arena::new(ArenaConfig::with_limits(1 << 20, 4 << 20)?);
//! let cache = CacheManager::new(source, arena, CacheConfig::default())?;
//! let mut reader = cache.reader(7, 0);
//! let rec = reader.next_record()?.expect("one record");
//! assert_eq!(rec.payload(), b"hello");
//! assert!(reader.next_record()?.is_none()); // caught up: nothing more yet
//! # Ok(())
//! # }
//! ```

mod arena;
mod cache;
mod error;
pub mod format;
mod hash;
mod raw;
mod sieve;
mod source;

pub use arena::{Arena, ArenaConfig, ArenaStats, Block, CHUNK_BYTES, ClassStats, PageClass};
pub use cache::{CacheConfig, CacheManager, CacheStats, Record, TailReader};
pub use error::{Error, Result};
pub use format::{DefaultFraming, Framing, RecordHeader};
pub use raw::mapped_bytes;
pub use source::{FileId, FileSource, PageSource};
