//! Stream deletion and truncation.

use crate::codec::StreamMeta;
use crate::engine::Varve;
use crate::error::{Error, Result};
use crate::types::ExpectedVersion;

/// How [`Varve::delete_stream`] deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    /// Hides the stream: reads give [`Error::StreamNotFound`], `read_all` and
    /// subscriptions skip its events. An append with `Any` or `NoStream` starts it again,
    /// at the old last version + 1 (the old events stay gone).
    Soft,
    /// Deletes the stream for good: every later operation on its name gives
    /// [`Error::StreamDeleted`].
    Tombstone,
}

impl Varve {
    /// Deletes `stream` if its version is what `expected` says (a soft-deleted stream has
    /// none). Durable when it returns: readers no longer see its events, its snapshot is
    /// removed, and the checkpointer removes the events from `events.mdb` and releases the
    /// blobs no other event refers to (a blob shared with another stream stays).
    ///
    /// # Errors
    /// [`Error::StreamNotFound`] (no such stream, or a soft delete of one with no visible
    /// event); [`Error::StreamDeleted`]; [`Error::WrongExpectedVersion`]; as appends
    /// ([`Error::Degraded`], [`Error::Closed`]). Nothing is written on an error.
    pub fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        mode: DeleteMode,
    ) -> Result<()> {
        self.core().change_stream(stream, |next_version, last, _| {
            if !expected.admits(last) {
                return Err(Error::WrongExpectedVersion {
                    stream: stream.to_owned(),
                    expected,
                    actual: last,
                });
            }
            if last.is_none() && mode == DeleteMode::Soft {
                return Err(Error::StreamNotFound {
                    stream: stream.to_owned(),
                });
            }
            Ok(Some(StreamMeta {
                hidden_before: next_version,
                tombstone: mode == DeleteMode::Tombstone,
            }))
        })
    }

    /// Removes the events of `stream` below `version`: reads start there, the stream's
    /// version (and what appends expect) does not change while it keeps an event. A
    /// `version` at or below an earlier truncation changes nothing. Truncating at the
    /// stream's next version removes every event: the stream then reads and is expected as
    /// a soft-deleted one (`StreamNotFound`; `NoStream` passes; versions continue).
    /// Durable when it returns; space comes back as for
    /// [`delete_stream`](Self::delete_stream).
    ///
    /// # Errors
    /// [`Error::StreamNotFound`]; [`Error::StreamDeleted`]; [`Error::VersionNotFound`] if
    /// `version` is past the stream's last version + 1; as appends.
    pub fn truncate_before(&self, stream: &str, version: u64) -> Result<()> {
        self.core().change_stream(stream, |next_version, _, meta| {
            if version > next_version {
                return Err(Error::VersionNotFound {
                    stream: stream.to_owned(),
                    version,
                    last: next_version.saturating_sub(1),
                });
            }
            Ok((version > meta.hidden_before).then_some(StreamMeta {
                hidden_before: version,
                tombstone: false,
            }))
        })
    }
}
