//! The large-payload tier: content-addressed blobs in their own LMDB environment.
//!
//! Payloads of `MAX_INLINE_SIZE` (2048) bytes or more are stored by SHA-256 in `blobs.mdb`,
//! apart from the event B-tree, and read back in chunks with advice that keeps them out of
//! the process's RSS and the page cache.
//!
//! Status: this crate holds its error type only; the layer itself is not built yet.

mod error;

pub use error::{Error, Result};
