//! The values the engine's API takes and returns.

use std::sync::Arc;

pub use varve_sidecar::BlobHash;

/// What an append expects of a stream's current version (the version of its last event;
/// versions are 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// No check: append at the stream's head, creating the stream if needed.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must exist (hold at least one event).
    StreamExists,
    /// The stream's last event must have exactly this version.
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last event has version `actual` (`None`: no event) passes.
    #[must_use]
    pub fn admits(self, actual: Option<u64>) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual.is_none(),
            ExpectedVersion::StreamExists => actual.is_some(),
            ExpectedVersion::Exact(v) => actual == Some(v),
        }
    }
}

/// One event to append. Borrows the caller's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventData<'a> {
    /// The event type (1..=256 bytes by default).
    pub event_type: &'a str,
    /// The payload. Payloads of [`MAX_INLINE_SIZE`](crate::MAX_INLINE_SIZE) bytes and more
    /// are stored in the blob sidecar and referenced from the event.
    pub payload: &'a [u8],
    /// Caller-defined metadata (at most 64 KiB by default).
    pub metadata: &'a [u8],
    /// An optional caller-chosen 16-byte id (e.g. a UUID), stored as given.
    pub id: Option<[u8; 16]>,
}

impl<'a> EventData<'a> {
    /// An event with a type and a payload, no metadata and no id.
    #[must_use]
    pub fn new(event_type: &'a str, payload: &'a [u8]) -> Self {
        EventData {
            event_type,
            payload,
            metadata: &[],
            id: None,
        }
    }

    /// Sets the metadata.
    #[must_use]
    pub fn with_metadata(mut self, metadata: &'a [u8]) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the id.
    #[must_use]
    pub fn with_id(mut self, id: [u8; 16]) -> Self {
        self.id = Some(id);
        self
    }
}

/// What a successful append assigned. Positions are global, versions per stream; for
/// `append_multi` the versions are those of the first and last stream of the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResult {
    /// Global position of the first event appended.
    pub first_position: u64,
    /// Global position of the last event appended.
    pub last_position: u64,
    /// Stream version of the first event appended.
    pub first_version: u64,
    /// Stream version of the last event appended.
    pub last_version: u64,
}

/// Which way a read walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From lower positions (versions) to higher.
    Forward,
    /// From higher positions (versions) to lower.
    Backward,
}

/// A payload as read: the bytes of a small one, or the reference to a large one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPayload {
    /// The payload's bytes (shorter than [`MAX_INLINE_SIZE`](crate::MAX_INLINE_SIZE)).
    Inline(Vec<u8>),
    /// A payload kept in the blob sidecar; fetch it with
    /// [`Varve::read_payload`](crate::Varve::read_payload) or
    /// [`Varve::read_payload_to`](crate::Varve::read_payload_to).
    Blob {
        /// The payload's SHA-256.
        hash: BlobHash,
        /// The payload's length in bytes.
        len: u64,
    },
}

impl EventPayload {
    /// The payload's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            EventPayload::Inline(b) => b.len() as u64,
            EventPayload::Blob { len, .. } => *len,
        }
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventPayload {
    /// A borrowed form.
    #[must_use]
    pub fn as_ref(&self) -> PayloadRef<'_> {
        match self {
            EventPayload::Inline(b) => PayloadRef::Inline(b),
            EventPayload::Blob { hash, len } => PayloadRef::Blob {
                hash: *hash,
                len: *len,
            },
        }
    }
}

/// A borrowed payload, as [`EventView`] shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadRef<'a> {
    /// The payload's bytes.
    Inline(&'a [u8]),
    /// A payload kept in the blob sidecar.
    Blob {
        /// The payload's SHA-256.
        hash: BlobHash,
        /// The payload's length in bytes.
        len: u64,
    },
}

impl PayloadRef<'_> {
    /// The payload's length in bytes.
    #[must_use]
    pub fn len(&self) -> u64 {
        match self {
            PayloadRef::Inline(b) => b.len() as u64,
            PayloadRef::Blob { len, .. } => *len,
        }
    }

    /// Whether the payload is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An owned copy.
    #[must_use]
    pub fn to_owned(self) -> EventPayload {
        match self {
            PayloadRef::Inline(b) => EventPayload::Inline(b.to_vec()),
            PayloadRef::Blob { hash, len } => EventPayload::Blob { hash, len },
        }
    }
}

/// An event as stored, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Global position (0-based, gapless).
    pub position: u64,
    /// The stream's name.
    pub stream: Arc<str>,
    /// Version in its stream (0-based).
    pub version: u64,
    /// The event type.
    pub event_type: String,
    /// The metadata.
    pub metadata: Vec<u8>,
    /// The payload, or a reference to it.
    pub payload: EventPayload,
    /// When the append that wrote it was sequenced: microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// The caller's id, if one was given.
    pub id: Option<[u8; 16]>,
}

impl RecordedEvent {
    /// A borrowed view of this event (for example to test it with a
    /// [`Filter`](crate::Filter)).
    #[must_use]
    pub fn as_view(&self) -> EventView<'_> {
        EventView {
            position: self.position,
            stream: &self.stream,
            version: self.version,
            event_type: &self.event_type,
            metadata: &self.metadata,
            payload: self.payload.as_ref(),
            timestamp_us: self.timestamp_us,
            id: self.id,
        }
    }
}

/// An event borrowed from the store's memory (LMDB's map or the log tail), for hot loops
/// that need no copy. Valid only inside the closure it is handed to.
#[derive(Debug, Clone, Copy)]
pub struct EventView<'a> {
    /// Global position.
    pub position: u64,
    /// The stream's name.
    pub stream: &'a str,
    /// Version in its stream.
    pub version: u64,
    /// The event type.
    pub event_type: &'a str,
    /// The metadata.
    pub metadata: &'a [u8],
    /// The payload, or a reference to it.
    pub payload: PayloadRef<'a>,
    /// Microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// The caller's id.
    pub id: Option<[u8; 16]>,
}

impl EventView<'_> {
    /// An owned copy.
    #[must_use]
    pub fn to_owned(&self) -> RecordedEvent {
        RecordedEvent {
            position: self.position,
            stream: Arc::from(self.stream),
            version: self.version,
            event_type: self.event_type.to_owned(),
            metadata: self.metadata.to_vec(),
            payload: self.payload.to_owned(),
            timestamp_us: self.timestamp_us,
            id: self.id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_lengths_and_emptiness_owned_and_borrowed() {
        let hash = BlobHash([7; 32]);
        let cases = [
            (EventPayload::Inline(vec![1, 2, 3, 4, 5]), 5, false),
            (EventPayload::Inline(Vec::new()), 0, true),
            (EventPayload::Blob { hash, len: 7000 }, 7000, false),
        ];
        for (owned, len, empty) in cases {
            assert_eq!((owned.len(), owned.is_empty()), (len, empty), "{owned:?}");
            let borrowed = owned.as_ref();
            assert_eq!((borrowed.len(), borrowed.is_empty()), (len, empty));
            assert_eq!(borrowed.to_owned(), owned);
        }
    }
}
