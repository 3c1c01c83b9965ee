//! The crate's one error type.

use std::io;

use crate::arena::PageClass;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an operation of this crate can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed (mapping a chunk, reading a page source).
    #[error("I/O error")]
    Io(#[from] io::Error),

    /// The arena is at its `max` watermark and no memory was freed in time.
    #[error("arena exhausted: no room for {pages} page(s) of class {class:?} within max")]
    Exhausted {
        /// The class asked for.
        class: PageClass,
        /// The number of pages asked for.
        pages: usize,
    },

    /// A block request of zero pages or of more pages than one chunk holds.
    #[error("invalid block size: {pages} page(s) of class {class:?}")]
    InvalidBlockSize {
        /// The class asked for.
        class: PageClass,
        /// The number of pages asked for.
        pages: usize,
    },

    /// A configuration that cannot work (watermarks out of order, too small, a prefetch
    /// window of 0, ...); nothing was created.
    #[error("invalid option {what}: {why}")]
    InvalidOptions {
        /// The option.
        what: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },

    /// A record failed validation (checksum mismatch, impossible length): its bytes are
    /// not returned.
    #[error("corrupted record in file {file} at offset {offset}: {what}")]
    Corrupted {
        /// The file id the record was read from.
        file: u64,
        /// Byte offset of the record's header in that file.
        offset: u64,
        /// What failed.
        what: &'static str,
    },

    /// The manager's background prefetcher is gone (it panicked). Sticky: from then on
    /// every read through this manager, by every reader, returns this error; drop the
    /// manager and make a new one. The source says what stopped it.
    #[error("background prefetcher stopped; this cache manager serves no more reads")]
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
    }
}
