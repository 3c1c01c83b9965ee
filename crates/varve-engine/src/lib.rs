//! The Varve event store: append-only streams with payloads of any size.
//!
//! The engine composes the lower layers: the WAL makes appends durable, LMDB
//! (`events.mdb`) holds checkpointed events, the sidecar holds large payloads.

mod codec;
mod engine;
mod error;
mod lmdb;
mod options;
mod tail;
mod types;

pub use engine::{RecoveryReport, Stats, StreamAppend, Varve};
pub use error::{Error, Result};
pub use options::{Options, SyncMode};
pub use types::{
    AppendResult, BlobHash, Direction, EventData, EventPayload, EventView, ExpectedVersion,
    PayloadRef, RecordedEvent,
};
pub use varve_sidecar::MAX_INLINE_SIZE;
