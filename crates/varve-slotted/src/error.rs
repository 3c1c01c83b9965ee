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
    /// A value or slot read from disk failed its checks; the bytes are not returned.
    #[error("corrupted value at page {page}, slot {slot}: {what}")]
    Corrupted {
        /// Page number.
        page: u32,
        /// Slot number inside the page.
        slot: u32,
        /// Which check failed.
        what: &'static str,
    },
    /// The tracker entry of an id, read on open, failed its checksum or names no page; the
    /// id has no readable value until it is written or deleted.
    #[error("corrupted tracker entry of id {id}")]
    CorruptedEntry {
        /// The id whose entry is corrupt (its entry is at byte `64 + 16 * id` of
        /// `tracker.vvt`).
        id: u64,
    },
    /// A file of the store is not what it should be (wrong magic, version, size, checksum).
    #[error("bad store file {path:?}: {what}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Which check failed.
        what: &'static str,
    },
    /// An earlier flush failed (or a thread panicked while it held the store's lock); the
    /// store refuses further writes (no silent retry after a failed msync/fsync). Reopen
    /// the store to continue from its durable state. The source is that first failure.
    #[error("store poisoned by an earlier failure; reopen it")]
    Poisoned(#[source] Arc<io::Error>),
    /// The id is larger than the configured maximum.
    #[error("id {id} is past the maximum id {max}")]
    IdTooLarge {
        /// The id given.
        id: u64,
        /// The configured maximum.
        max: u64,
    },
    /// The value is larger than the configured maximum.
    #[error("value of {size} bytes exceeds the maximum of {max} bytes")]
    ValueTooLarge {
        /// Size of the rejected value.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// An [`Options`](crate::Options) value is out of range (nothing was opened), or the
    /// options cannot hold a value (`put`; nothing was written).
    #[error("invalid option {what}: {why}")]
    InvalidOptions {
        /// The option.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error("store {0:?} is locked by another handle")]
    Locked(PathBuf),
    /// `open` found no store at the path.
    #[error("no store at {0:?}")]
    NotFound(PathBuf),
    /// `create` found a store already at the path.
    #[error("a store already exists at {0:?}")]
    AlreadyExists(PathBuf),
    /// Every dictionary id is in use.
    #[error("no dictionary id left")]
    TooManyDictionaries,
}

impl Error {
    /// The cause a poisoned store keeps: this error, as an I/O error (its kind kept).
    pub(crate) fn as_cause(&self) -> Arc<io::Error> {
        match self {
            Error::Io(e) => Arc::new(io::Error::new(e.kind(), e.to_string())),
            other => Arc::new(io::Error::other(other.to_string())),
        }
    }

    /// The error of a lock that a panicking thread held.
    pub(crate) fn panicked() -> Error {
        Error::Poisoned(Arc::new(io::Error::other(
            "a thread panicked while it held the store's lock",
        )))
    }

    /// Where in the store's directory the damage an error reports is: the file's name and
    /// the byte offset of the structure that failed its check. For
    /// [`Error::Corrupted`], the slot's 40-byte entry in its page file (the entry names
    /// the value's container); for [`Error::CorruptedEntry`], the id's tracker entry.
    /// `None` for every other error.
    pub fn location(&self) -> Option<(String, u64)> {
        match *self {
            Error::Corrupted { page, slot, .. } => Some((
                crate::store::page_file_name(page),
                crate::format::slot_offset(slot),
            )),
            Error::CorruptedEntry { id } => Some((
                crate::store::TRACKER_FILE.to_owned(),
                crate::tracker::entry_offset(id),
            )),
            _ => None,
        }
    }
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
    }

    #[test]
    fn a_poisoned_store_keeps_its_first_failure_as_the_source() {
        let full = Error::Io(io::Error::new(io::ErrorKind::StorageFull, "no space"));
        let cause = full.as_cause();
        assert_eq!(cause.kind(), io::ErrorKind::StorageFull);
        let p = Error::Poisoned(cause);
        varve_testkit::errors::assert_wraps(
            &p,
            "store poisoned by an earlier failure; reopen it",
            "no space",
        );
        let other = Error::CorruptedEntry { id: 3 }.as_cause();
        assert_eq!(other.to_string(), "corrupted tracker entry of id 3");
        let panicked = Error::panicked();
        assert!(
            std::error::Error::source(&panicked)
                .unwrap()
                .to_string()
                .contains("panicked")
        );
    }
}
