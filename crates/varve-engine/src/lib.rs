//! The Varve event store: append-only streams with payloads of any size.
//!
//! The engine composes the four lower layers: the WAL makes appends durable, LMDB
//! (`events.mdb`) holds checkpointed events, the sidecar holds large payloads, the slotted
//! store holds mutable snapshots, and the arena serves tailing readers.
//!
//! Status: this crate holds its error type only; the engine is not built yet.

mod error;

pub use error::{Error, Result};
