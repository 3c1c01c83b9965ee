//! The engine's error type. Layer errors are wrapped, not flattened, and each prints once:
//! the wrapper's message names the layer and the inner error is its `source()`.

use std::path::PathBuf;
use std::sync::Arc;

use crate::types::ExpectedVersion;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an engine operation can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error")]
    Io(#[from] std::io::Error),
    /// The write-ahead log failed.
    #[error("write-ahead log")]
    Wal(#[from] varve_wal::Error),
    /// The slotted payload store failed.
    #[error("slotted store")]
    Slotted(#[from] varve_slotted::Error),
    /// The large-payload sidecar failed.
    #[error("blob sidecar")]
    Sidecar(#[from] varve_sidecar::Error),
    /// The read-side arena or cache manager failed.
    #[error("arena")]
    Arena(#[from] varve_arena::Error),
    /// LMDB (`events.mdb`) refused an operation.
    #[error("events.mdb (LMDB)")]
    Lmdb(#[from] heed::Error),

    /// Another open store (in this process or another) holds the directory.
    #[error("store directory {} is locked by another open store", .0.display())]
    Locked(PathBuf),

    /// An [`Options`](crate::Options) value is out of range; nothing was opened.
    #[error("invalid option {what}: {why}")]
    InvalidOptions {
        /// The option.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },

    /// The store on disk was written by a format version this build does not read.
    #[error("events.mdb has format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },

    /// Bytes read from disk failed a checksum or structural check. Wrong bytes are never
    /// returned as data.
    #[error("corrupted data in {location}: {what}")]
    Corrupted {
        /// Where: a file and a position, LSN or key.
        location: String,
        /// What check failed.
        what: &'static str,
    },

    /// The stream does not exist (no event was ever appended to it).
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The stream name.
        stream: String,
    },

    /// The stream was deleted with a tombstone: no operation on its name succeeds again.
    #[error("stream {stream:?} is deleted (tombstoned)")]
    StreamDeleted {
        /// The stream name.
        stream: String,
    },

    /// The stream's version is not what the append expected; nothing was written.
    #[error(
        "wrong expected version on stream {stream:?}: expected {expected:?}, actual {actual:?}"
    )]
    WrongExpectedVersion {
        /// The stream name.
        stream: String,
        /// What the caller expected.
        expected: ExpectedVersion,
        /// The version of the stream's last event, `None` if the stream has none.
        actual: Option<u64>,
    },

    /// A stream name is empty, too long or contains a NUL byte; nothing was written.
    #[error("invalid stream name: {why}")]
    InvalidStreamName {
        /// What is wrong.
        why: &'static str,
    },
    /// A snapshot or truncation names a version its stream does not have (past its last
    /// event, or removed); nothing was written.
    #[error("stream {stream:?} has no version {version} (its last is {last})")]
    VersionNotFound {
        /// The stream name.
        stream: String,
        /// The version asked for.
        version: u64,
        /// The stream's last version.
        last: u64,
    },
    /// A snapshot is larger than `Options::max_snapshot_bytes`; nothing was written.
    #[error("snapshot of {size} bytes exceeds the maximum of {max} bytes")]
    SnapshotTooLarge {
        /// Size asked for.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A consumer name is empty, too long or contains a NUL byte.
    #[error("invalid consumer name: {why}")]
    InvalidConsumerName {
        /// What is wrong.
        why: &'static str,
    },
    /// A consumer was asked to move to a position it may not take; nothing was written.
    #[error("invalid consumer position {position}: {why}")]
    InvalidPosition {
        /// The position asked for.
        position: u64,
        /// What is wrong with it.
        why: &'static str,
    },
    /// An event type is empty or too long; nothing was written.
    #[error("invalid event type: {why}")]
    InvalidEventType {
        /// What is wrong.
        why: &'static str,
    },
    /// An event's metadata is larger than `Options::max_metadata_bytes`; nothing was written.
    #[error("metadata of {size} bytes exceeds the maximum of {max} bytes")]
    MetadataTooLarge {
        /// Size asked for.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An event's payload is larger than `Options::max_payload_bytes`; nothing was written.
    #[error("payload of {size} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// Size asked for.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// One call's payload and metadata bytes (or its encoded log record) exceed
    /// `Options::max_call_bytes`; nothing was written.
    #[error("one call of {size} bytes exceeds the maximum of {max} bytes")]
    CallTooLarge {
        /// Size asked for.
        size: usize,
        /// The maximum.
        max: usize,
    },
    /// An append carried no event, or `append_multi` no stream; nothing was written.
    #[error("an append needs at least one event")]
    EmptyAppend,
    /// `append_multi` named the same stream twice; nothing was written.
    #[error("stream {stream:?} appears twice in one append_multi call")]
    DuplicateStream {
        /// The stream name.
        stream: String,
    },

    /// A write or sync failed earlier (the WAL or a checkpoint): appends are refused until
    /// the store is reopened; reads of everything acknowledged keep working.
    #[error("store is degraded by an earlier I/O failure; reopen it to recover")]
    Degraded {
        /// The failure that degraded the store.
        #[source]
        cause: Arc<Error>,
    },

    /// The store was closed through another handle.
    #[error("store is closed")]
    Closed,
}

impl Error {
    pub(crate) fn corrupted(location: impl Into<String>, what: &'static str) -> Error {
        Error::Corrupted {
            location: location.into(),
            what,
        }
    }
}
