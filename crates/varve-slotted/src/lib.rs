//! Memory-mapped slotted-page store for mutable payloads keyed by dense ids.
//!
//! Values are lz4-compressed into slotted pages that live in mmapped files; an
//! id -> (page, slot) tracker is persisted in its own mapped file. One writer, many readers.
//!
//! Status: this crate holds its error type only; the layer itself is not built yet.

mod error;

pub use error::{Error, Result};
