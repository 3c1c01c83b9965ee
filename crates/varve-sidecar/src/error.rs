//! The crate's one error type.

use std::io;

use crate::payload::BlobHash;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an operation of this crate can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed (including a failed write to the caller's writer).
    #[error("I/O error")]
    Io(#[from] io::Error),

    /// LMDB (through heed) refused an operation; `heed::Error::EnvAlreadyOpened` means the
    /// store is already open in this process.
    #[error("LMDB error")]
    Lmdb(#[from] heed::Error),

    /// Stored bytes do not match their checksum: a record header, digest table or refcount
    /// record is damaged, or the content of a version-1 blob does not hash to its SHA-256
    /// address. `what` says which. No byte of such a blob is handed out as data. (Damaged
    /// content of a version-2 blob is [`Error::CorruptedChunk`].)
    #[error("blob {hash} is corrupted: {what}")]
    Corrupted {
        /// Address of the damaged blob (the location of the damage).
        hash: BlobHash,
        /// Which check failed.
        what: &'static str,
    },

    /// A chunk of a blob's content does not match the digest stored with the blob (or, for
    /// a blob written by format version 1, the bytes read in the first pass). The chunks
    /// before it may have reached the caller's writer; no byte of this chunk or any later
    /// one did.
    #[error("blob {hash} is corrupted: content bytes {offset}..{end} do not match their digest", end = offset + len)]
    CorruptedChunk {
        /// Address of the damaged blob.
        hash: BlobHash,
        /// Offset of the damaged chunk in the blob's content.
        offset: u64,
        /// Length of the damaged chunk.
        len: u64,
    },

    /// The store's format record (in the `meta` database) is damaged or absent in a
    /// non-empty store.
    #[error("blob store format record is corrupted: {what}")]
    CorruptedMeta {
        /// Which check failed.
        what: &'static str,
    },

    /// The store was written by an unknown (newer) format version; it is not opened.
    #[error("blob store has format version {found}, this build reads version {supported}")]
    UnsupportedVersion {
        /// Version found on disk.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },

    /// A `BlobRef` names a blob that is not in the store.
    #[error("blob {0} is not in the store")]
    MissingBlob(BlobHash),

    /// A payload was larger than `SidecarOptions::max_blob_size`; nothing was written.
    #[error("payload of {size} bytes exceeds the maximum blob size of {max} bytes")]
    BlobTooLarge {
        /// Size of the rejected payload.
        size: u64,
        /// The configured maximum.
        max: u64,
    },

    /// Bytes handed to `Payload::decode` are not a valid encoded payload.
    #[error("invalid encoded payload: {reason}")]
    InvalidPayload {
        /// What is wrong with the bytes.
        reason: &'static str,
    },

    /// A blob's reference count would overflow `u64`.
    #[error("reference count of blob {0} would overflow")]
    RefcountOverflow(BlobHash),

    /// The map would have to grow past `SidecarOptions::max_map_size`; nothing was written.
    #[error("blob store is full: map size {map_size} cannot grow past {max_map_size}")]
    StoreFull {
        /// Current map size in bytes.
        map_size: u64,
        /// The configured ceiling.
        max_map_size: u64,
    },

    /// Options handed to `Sidecar::open` contradict each other; nothing was created.
    #[error("invalid sidecar option {what}: {why}")]
    InvalidOptions {
        /// The option at fault.
        what: &'static str,
        /// Why it is refused.
        why: &'static str,
    },

    /// An earlier commit failed with an I/O error (for example a failed fsync). The store
    /// refuses further writes until it is reopened, because a failed fsync cannot be
    /// retried safely; reads keep working.
    #[error("blob store is poisoned by an earlier failed commit; reopen it")]
    Poisoned(#[source] std::sync::Arc<io::Error>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wrapped error is the source, not part of the message: a report that walks the
    /// chain prints it once.
    #[test]
    fn a_wrapped_io_error_is_the_source_and_not_repeated_in_the_message() {
        let e = Error::from(io::Error::other("disk on fire"));
        varve_testkit::errors::assert_wraps(&e, "I/O error", "disk on fire");
        let l = Error::from(heed::Error::Io(io::Error::other("map failed")));
        varve_testkit::errors::assert_wraps(&l, "LMDB error", "map failed");
    }
}
