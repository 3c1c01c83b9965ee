//! Stream snapshots: a projection's state at a version, kept beside the stream so a reader
//! loads it and replays only the events after it.

use crate::engine::Varve;
use crate::error::Result;

impl Varve {
    /// Stores `bytes` as the snapshot of `stream` at `version` (the state after the event
    /// of that version). It is kept in the store's slotted payload store (`snapshots/`,
    /// lz4-compressed) under the stream's id and flushed before this returns, so it
    /// survives a crash. One snapshot per stream is kept: the one of the highest version.
    /// Returns `false` (and stores nothing) if a snapshot of a later version is already
    /// there; one of the same version is replaced.
    ///
    /// # Errors
    /// [`Error::StreamNotFound`](crate::Error::StreamNotFound) if the stream has no event;
    /// [`Error::VersionNotFound`](crate::Error::VersionNotFound) if `version` is past its
    /// last event; [`Error::SnapshotTooLarge`](crate::Error::SnapshotTooLarge); the
    /// slotted store's errors. Nothing is written on an error.
    pub fn put_snapshot(&self, stream: &str, version: u64, bytes: &[u8]) -> Result<bool> {
        self.core().put_snapshot(stream, version, bytes)
    }

    /// The latest snapshot of `stream`: its version and bytes; `None` if it has none.
    ///
    /// # Errors
    /// [`Error::Corrupted`](crate::Error::Corrupted) if the stored snapshot is damaged; the
    /// slotted store's errors.
    pub fn latest_snapshot(&self, stream: &str) -> Result<Option<(u64, Vec<u8>)>> {
        self.core().latest_snapshot(stream)
    }
}
