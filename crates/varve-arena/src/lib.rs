//! Read-side memory for tailing readers: an arena allocator and a cache manager.
//!
//! The arena hands out page-aligned blocks from 256 KiB bump chunks of one page class
//! (512 B or 4 KiB) under min/max watermarks; the cache manager prefetches ahead of
//! sequential readers and validates record checksums before handing records out.
//!
//! Status: this crate holds its error type only; the layer itself is not built yet.

mod error;

pub use error::{Error, Result};
