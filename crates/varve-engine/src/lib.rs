//! The Varve event store: append-only streams with payloads of any size, embedded in the
//! process that links it.
//!
//! ```
//! use varve_engine::{Direction, EventData, ExpectedVersion, Options, Varve};
//! # fn main() -> varve_engine::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let db = Varve::open(dir.path(), Options::default())?;
//! let r = db.append(
//!     "order-17",
//!     ExpectedVersion::NoStream,
//!     &[EventData::new("created", b"{\"total\": 12}"), EventData::new("paid", b"{}")],
//! )?;
//! assert_eq!((r.first_position, r.last_version), (0, 1));
//!
//! // A second writer that expected an empty stream is refused, and nothing is written.
//! assert!(db.append("order-17", ExpectedVersion::NoStream, &[EventData::new("x", b"")]).is_err());
//!
//! // Large payloads go to the blob sidecar; the event keeps a reference.
//! let scan = vec![7u8; 1 << 20];
//! db.append("order-17", ExpectedVersion::Exact(1), &[EventData::new("scanned", &scan)])?;
//! db.close()?;
//!
//! // Open is crash-only: the same recovery runs after a close and after a kill -9.
//! let db = Varve::open(dir.path(), Options::default())?;
//! let events = db.read_stream("order-17", Direction::Forward, 0, 100)?;
//! assert_eq!(events.len(), 3);
//! assert_eq!(events[0].event_type, "created");
//! assert_eq!(db.read_payload(&events[2])?, scan);
//! assert_eq!(db.read_all(0, Direction::Forward, 10)?.len(), 3);
//! # Ok(()) }
//! ```
//!
//! # How it works
//!
//! An append validates its input, stores payloads of [`MAX_INLINE_SIZE`] bytes and more in
//! the blob sidecar (`blobs/blobs.mdb`, content-addressed, deduplicated), encodes the call
//! as one log record (its own bytes; inline payloads stay borrowed from the caller), and
//! then, in one short critical section without I/O, checks the expected versions against
//! the stream heads held in memory, assigns versions and global positions and queues the
//! record on the write-ahead log (`wal/`), which copies it, payloads spliced in, into its
//! buffer: an inline payload is copied once on its way to the log. The WAL's flusher
//! writes and syncs records in groups; the append returns once its record is durable. A
//! background checkpointer applies acknowledged records to LMDB (`events.mdb`) in large
//! transactions, with the LSN of the last record applied written in the same
//! transaction, and then drops the log segments it no longer needs. Of records
//! acknowledged but not yet checkpointed (at most [`Options::max_tail_bytes`] of them;
//! appends wait for the checkpointer past that) the engine keeps only an index in memory:
//! where each lies in the WAL and which streams it extends. Reads of them fetch the record
//! from the WAL segments through `varve-arena`'s cache manager, whose memory is bounded by
//! [`Options::tail_cache_bytes`]; older events come from LMDB read transactions.
//!
//! # Durability and visibility
//!
//! - With the default [`SyncMode::Always`] an append returns only after its record was
//!   written and `fdatasync`ed: a crash of the process, the OS or the machine loses no
//!   acknowledged event. Under `SyncMode::Interval`/`Never` an acknowledged event survives
//!   a process crash; an OS crash can lose the last interval's events (see `varve-wal`).
//! - An append is atomic: after a crash all of its events are there or none. So is an
//!   [`Varve::append_multi`] across its streams.
//! - Positions are `u64`, 0-based, gapless, in commit order, never reused: a rejected or
//!   failed append consumes none. Stream versions are 0-based and contiguous.
//! - A reader never sees an event before it is acknowledged durable, never sees position
//!   `p + 1` before `p`, and never sees part of an append. An append's own thread sees its
//!   events as soon as the call returns.
//! - A payload is stored in the sidecar (and synced) before the record that refers to it;
//!   a crash between the two leaves an unreferenced blob reference, which the next open
//!   releases ([`RecoveryReport::orphan_blob_refs_released`]).
//!
//! # Errors and degraded mode
//!
//! Input that breaks a limit gets its own error and writes nothing: no position, no blob,
//! no log byte ([`Error::InvalidStreamName`], [`Error::InvalidEventType`],
//! [`Error::MetadataTooLarge`], [`Error::PayloadTooLarge`], [`Error::CallTooLarge`],
//! [`Error::EmptyAppend`], [`Error::DuplicateStream`]). An expectation that does not hold
//! is [`Error::WrongExpectedVersion`] with the stream's actual version. Bytes read from disk
//! that fail a checksum or a structural check are [`Error::Corrupted`] with their location,
//! never returned as data and never a panic.
//!
//! When a log write or sync, a blob write or a checkpoint fails with an I/O error, the store
//! turns *degraded*: appends fail with [`Error::Degraded`] (carrying the cause), reads of
//! everything acknowledged keep working, [`Stats::degraded`] says why, and nothing retries
//! an `fsync` (its failure may have dropped dirty pages). Reopening the store recovers
//! every acknowledged event.
//!
//! # Limits (defaults; see [`Options`])
//!
//! Stream names 1..=256 bytes without NUL; event types 1..=256 bytes; metadata up to 64
//! KiB; a payload up to 64 MiB; one call up to 128 MiB, and its log record (the call
//! without its large payloads) up to half a WAL segment (32 MiB).
//!
//! # Subscriptions
//!
//! [`Varve::subscribe_all`] (from the start, the end or after a position, with a
//! [`Filter`] on event-type prefix, stream prefix or a predicate) and
//! [`Varve::subscribe_stream`] give a [`Subscription`]: one pull loop that first reads what
//! is stored and then waits for new events, in position (version) order with no gap and
//! no duplicate, never before an event is acknowledged. The store keeps no queue per
//! subscriber: a subscriber that stops pulling only falls behind, and a subscription holds
//! at most one batch of events ([`Subscription::with_batch`]). Owned events come from
//! `next`, `next_timeout`, `try_next` and `next_batch`; [`Subscription::next_batch_with`]
//! hands borrowed views instead (no allocation per event, for catch-up reads and hot
//! consumers). With the `async` feature a subscription is also an async stream (see "Cargo
//! features" below).
//!
//! ```
//! use varve_engine::{EventData, ExpectedVersion, Filter, Options, SubscribeFrom, Varve};
//! # fn main() -> varve_engine::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let db = Varve::open(dir.path(), Options::default())?;
//! let mut orders = db.subscribe_all(SubscribeFrom::Start, Filter::all().stream_prefix("order-"));
//! db.append("order-1", ExpectedVersion::Any, &[EventData::new("created", b"{}")])?;
//! db.append("user-9", ExpectedVersion::Any, &[EventData::new("renamed", b"{}")])?;
//! let e = orders.next().expect("open store")?; // blocks until an event passes the filter
//! assert_eq!((e.position, &*e.stream), (0, "order-1"));
//! assert!(orders.try_next()?.is_none());
//! assert_eq!(orders.position(), 2); // past the filtered-out event
//! # Ok(()) }
//! ```
//!
//! A [`Consumer`] ([`Varve::consumer`]) is a named cursor saved in the store:
//! [`Consumer::commit`] goes through the write-ahead log and is durable when it returns, the
//! checkpointer stores it in `events.mdb`, and [`Consumer::subscribe`] resumes from it.
//! Delivery is at least once: after a crash, events from the last acknowledged commit on
//! come again, none before it.
//!
//! # Snapshots
//!
//! [`Varve::put_snapshot`] keeps a stream's state at a version (the highest version
//! wins) in the slotted payload store under `snapshots/`, flushed before it returns;
//! [`Varve::latest_snapshot`] reads it back, so a reader replays only the events after it.
//! [`Varve::snapshots`] lists and verifies every stored snapshot (`varve check` uses it).
//!
//! # Deletion and retention
//!
//! [`Varve::delete_stream`] with [`DeleteMode::Soft`] hides a stream (reads give
//! [`Error::StreamNotFound`], [`Varve::read_all`] and subscriptions skip its events, and an
//! `Any`/`NoStream` append starts it again at the old last version + 1); with
//! [`DeleteMode::Tombstone`] every later operation on the name gives
//! [`Error::StreamDeleted`]. [`Varve::truncate_before`] removes a stream's events below a
//! version and keeps its head. Each goes through the write-ahead log and is durable when it
//! returns; a stream's snapshot goes with the versions it describes. The checkpointer then
//! removes the events from `events.mdb` in its transaction and, once that is committed,
//! releases the blobs no remaining event refers to. Global positions are never reused: a
//! deleted event leaves a gap that [`Varve::get`] answers with `None`.
//!
//! # Cargo features
//!
//! - `async`: `Subscription::into_stream` turns a subscription into a
//!   `futures_core::Stream` whose `poll_next` never blocks (the store wakes the task when
//!   events are published). It adds `futures-core` and no runtime.

mod codec;
mod consumer;
mod delete;
mod engine;
mod error;
mod lmdb;
mod options;
mod snapshot;
mod subscribe;
mod tail;
mod txns;
mod types;
mod walsource;

pub use consumer::Consumer;
pub use delete::DeleteMode;
pub use engine::{RecoveryReport, Stats, StreamAppend, Varve};
pub use error::{Error, Result};
pub use options::{Options, SyncMode};
pub use snapshot::SnapshotInfo;
#[cfg(feature = "async")]
pub use subscribe::SubscriptionStream;
pub use subscribe::{DEFAULT_SUBSCRIPTION_BATCH, Filter, SubscribeFrom, Subscription};
pub use types::{
    AppendResult, BlobHash, Direction, EventData, EventPayload, EventView, ExpectedVersion,
    PayloadRef, RecordedEvent,
};
pub use varve_sidecar::MAX_INLINE_SIZE;
