//! The crate's one error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an operation of this crate can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    #[error("I/O error")]
    Io(#[from] io::Error),

    /// Another process (or another open handle in this one) holds the directory's `LOCK`.
    #[error("WAL directory {0} is locked by another open WAL")]
    Locked(PathBuf),

    /// A checksum or structural check failed where valid data must be.
    #[error("WAL segment {} is corrupted at offset {offset}: {what}", segment.display())]
    Corrupted {
        /// The segment file.
        segment: PathBuf,
        /// Byte offset in that file of the first bad byte found (a record or header start).
        offset: u64,
        /// What was wrong.
        what: &'static str,
    },

    /// A `.wal` file in the directory is not a Varve WAL segment (unknown magic).
    #[error("{} is not a Varve WAL segment (unknown magic)", segment.display())]
    BadMagic {
        /// The file.
        segment: PathBuf,
    },

    /// A segment was written by a format version this build does not read.
    #[error("WAL segment {} has format version {version}; this build reads version {supported}", segment.display())]
    UnsupportedVersion {
        /// The file.
        segment: PathBuf,
        /// The version found.
        version: u32,
        /// The newest version this build reads (it reads every version from 1 up to it).
        supported: u32,
    },

    /// A write or sync failed earlier; the WAL accepts nothing more (sticky, no retry).
    #[error("WAL is poisoned by an earlier I/O failure")]
    Poisoned(#[source] Arc<io::Error>),

    /// A record is larger than `max_record_size`; nothing was written.
    #[error("record of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Payload size asked for.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A batch's framed size exceeds one segment's capacity; nothing was written.
    #[error("batch of {size} framed bytes does not fit in one segment ({max} bytes)")]
    BatchTooLarge {
        /// Framed size of the batch.
        size: usize,
        /// Record capacity of a segment.
        max: usize,
    },

    /// `append_batch` was given no records.
    #[error("a batch must hold at least one record")]
    EmptyBatch,

    /// `try_append`: the queued-but-unwritten bytes are at their cap.
    #[error("the WAL queue is full (backpressure)")]
    Backpressure,

    /// The LSN asked for is below the first one still kept (removed by `truncate_before`).
    #[error("LSN {requested} is no longer in the log (first kept LSN is {first})")]
    Truncated {
        /// LSN asked for.
        requested: u64,
        /// First LSN still in the log.
        first: u64,
    },

    /// An [`Options`](crate::Options) value is out of range; nothing was opened.
    #[error("invalid option {what}: {why}")]
    InvalidOptions {
        /// The option.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
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
        let p = Error::Poisoned(Arc::new(io::Error::other("fsync failed")));
        varve_testkit::errors::assert_wraps(
            &p,
            "WAL is poisoned by an earlier I/O failure",
            "fsync failed",
        );
    }
}
