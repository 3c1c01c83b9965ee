//! Stream snapshots: a projection's state at a version, kept beside the stream so a reader
//! loads it and replays only the events after it.

use std::sync::Arc;

use crate::engine::Varve;
use crate::error::Result;

/// A stored snapshot, as [`Varve::snapshots`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SnapshotInfo {
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// The stream version it was taken at.
    pub version: u64,
    /// Its length in bytes, as given to [`Varve::put_snapshot`].
    pub len: u64,
}

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

    /// Every stored snapshot (at most one per stream), in the order streams were created,
    /// each read whole from the slotted store and verified (slot entry and value
    /// checksums, lz4 decoding, the snapshot's header). Snapshots of deleted streams and
    /// of versions truncated away are not listed. A damaged snapshot is an `Err` item and
    /// the listing goes on after it; `varve check` uses this.
    ///
    /// Each step reads under the store's read lock on its own: snapshots put during the
    /// listing may or may not be listed.
    ///
    /// # Errors (per item)
    /// [`Error::Corrupted`](crate::Error::Corrupted) naming the file under `snapshots/`
    /// and the byte offset of the damaged slot entry or tracker entry; the slotted store's
    /// other errors.
    pub fn snapshots(&self) -> impl Iterator<Item = Result<SnapshotInfo>> + '_ {
        self.core().snapshots()
    }
}
