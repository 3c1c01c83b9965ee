//! Lock-free group-commit write-ahead log.
//!
//! Writers append opaque records through a lock-free queue; one flusher thread
//! sequences them, writes each group with one write and syncs once, then wakes the group.
//! Recovery truncates a torn tail and reports corruption in the middle with its location.
//!
//! Status: this crate holds its error type only; the layer itself is not built yet.

mod error;

pub use error::{Error, Result};
