//! Test helpers shared by the Varve crates' tests (a dev-dependency only, never published).
//!
//! - [`bytes`]: deterministic byte patterns (compressible and not).
//! - [`mem`]: this process's RSS, a file's page-cache residency, and a [`mem::Sampler`]
//!   that samples both from its own thread at a fixed interval.
//! - [`crash`]: the kill -9 harness: a test binary runs one of its own tests as a child
//!   process, lets it acknowledge work, SIGKILLs it at a random moment and returns what it
//!   acknowledged; `VARVE_CRASH_ROUNDS` is read in one place.
//! - [`errors`]: a wrapped error must be the source of its wrapper, not repeated in the
//!   wrapper's message.
//! - [`dirs`]: temporary directories on the real disk (checked not to be tmpfs) for
//!   durability tests, or in memory for the others.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

pub mod bytes;
pub mod crash;
pub mod dirs;
pub mod errors;
pub mod mem;
