//! The large-payload tier: content-addressed blobs in their own LMDB environment.
//!
//! Payloads of [`MAX_INLINE_SIZE`] (2048) bytes or more are stored by SHA-256 in
//! `blobs.mdb`, apart from the event B-tree, and read back in chunks with advice that keeps
//! them out of the process's RSS and the page cache.
//!
//! (Read-path policy and its measurements: see the section below, filled in from the
//! acceptance test and benches.)

mod error;
mod format;
mod mapping;
mod options;
mod os;
mod payload;
mod read;
mod sidecar;

pub use error::{Error, Result};
pub use options::{CachePolicy, SidecarOptions};
pub use payload::{BlobHash, ENCODED_BLOBREF_LEN, MAX_INLINE_SIZE, Payload, routes_to_sidecar};
pub use sidecar::{BLOBS_FILE, Sidecar, SidecarStats};
