//! The event store: open and recovery, the sequencer, reads, the checkpointer.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heed::{PutFlags, WithoutTls};
use varve_arena::{Arena, ArenaConfig, CacheConfig, CacheManager, Record};
use varve_sidecar::{BlobHash, MAX_INLINE_SIZE, Payload, Sidecar, SidecarOptions};
use varve_wal::Wal;

use crate::codec::{
    self, AppendRecord, BodyPayload, KIND_APPEND, KIND_CONSUMER, KIND_STREAM_META, StreamMeta,
};
use crate::error::{Error, Result};
use crate::lmdb::{self, Checkpoint, Dbs};
use crate::options::Options;
use crate::snapshot::SnapshotInfo;
use crate::tail::{Loaded, Run, Tail, TailEntry, entry_from_parsed};
use crate::txns::{KeptTxn, ReadTxns};
use crate::types::{
    AppendResult, Direction, EventData, EventView, ExpectedVersion, PayloadRef, RecordedEvent,
};
use crate::walsource::WalPages;

/// Names by (store instance, stream id), per thread; see `Core::with_name`.
type NameCache = std::cell::RefCell<HashMap<(u64, u64), Arc<str>>>;

/// The tail record a thread read last: (store instance, LSN, record).
type LoadedCache = std::cell::RefCell<Option<(u64, u64, Arc<Loaded>)>>;

thread_local! {
    static NAMES: NameCache = std::cell::RefCell::new(HashMap::new());
    static LOADED: LoadedCache = const { std::cell::RefCell::new(None) };
}

/// Largest tail record a thread keeps after reading it (see `Core::load`).
const LOADED_CACHE_MAX: u64 = 1 << 20;

/// Entries a thread's name cache holds before it starts over.
const NAME_CACHE_ENTRIES: usize = 4096;

/// Numbers every store opened in this process, so that name caches never mix two stores.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// A cursor over `events.mdb`'s events, in key order.
type EventsRange<'t> = heed::RoRange<'t, heed::types::Bytes, heed::types::Bytes>;

/// Name of the store's lock file.
const LOCK_FILE: &str = "LOCK";
/// Subdirectory of the write-ahead log.
const WAL_DIR: &str = "wal";
/// Subdirectory of the blob sidecar.
const BLOBS_DIR: &str = "blobs";
/// Subdirectory of the snapshots' slotted store.
const SNAPSHOTS_DIR: &str = "snapshots";
/// Removes the snapshot of stream `id` if `meta` hides its version.
fn drop_hidden_snapshot(snapshots: &varve_slotted::Store, id: u64, meta: StreamMeta) -> Result<()> {
    let stored = snapshots.get_with(id, |v| {
        v.get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    })?;
    if let Some(version) = stored
        && version.is_none_or(|v| meta.hides(v))
    {
        snapshots.delete(id)?;
        snapshots.flush()?;
    }
    Ok(())
}

/// The deletion state of the streams, as one reader took it ([`Core::hidden`]): `None`
/// while the store has had no deletion.
struct Hidden(Option<Arc<HashMap<u64, StreamMeta>>>);

impl Hidden {
    /// The deletion state of stream `id`, if it has one.
    fn get(&self, id: &u64) -> Option<&StreamMeta> {
        self.0.as_ref()?.get(id)
    }

    /// Whether no stream has a deletion state.
    fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|m| m.is_empty())
    }

    /// Streams with a deletion state.
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |m| m.len())
    }
}

/// Format byte at the start of a stored snapshot (then the version, u64 LE, then the bytes).
const SNAPSHOT_FORMAT: u8 = 1;
/// Bytes a stored snapshot adds before the caller's.
const SNAPSHOT_HEADER: usize = 1 + 8;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Test-only crash points. Built with the `failpoints` feature (the engine's own tests turn
/// it on), `VARVE_ENGINE_FAILPOINT=<name>:<n>` aborts the process the `n`-th time it reaches
/// `<name>` (`<name>` alone: the first time), so a crash test can stop it exactly between
/// two steps. Without the feature it is nothing.
#[cfg(feature = "failpoints")]
fn failpoint(name: &str) {
    use std::sync::atomic::AtomicU64;
    static POINT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let point = POINT.get_or_init(|| {
        let v = std::env::var("VARVE_ENGINE_FAILPOINT").ok()?;
        Some(match v.split_once(':') {
            Some((n, k)) => (n.to_owned(), k.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((p, k)) = point
        && p == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *k
    {
        std::process::abort();
    }
}
#[cfg(not(feature = "failpoints"))]
fn failpoint(_name: &str) {}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What open found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The WAL's own recovery report (torn tail cut, segments, ...).
    pub wal: varve_wal::RecoveryReport,
    /// LSN of the last record the checkpoint in `events.mdb` had applied.
    pub checkpoint_lsn: u64,
    /// Records replayed from the WAL: appends (into the tail index) and consumer commits.
    pub replayed_records: u64,
    /// Events in those records.
    pub replayed_events: u64,
    /// Blob references released because no event refers to them (an append that stored
    /// its blobs but never reached the log).
    pub orphan_blob_refs_released: u64,
}

/// Counts that describe an open store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// One past the last acknowledged position (the number of events ever appended).
    pub next_position: u64,
    /// Streams that exist.
    pub streams: u64,
    /// One past the last position applied to `events.mdb`.
    pub checkpointed_position: u64,
    /// LSN of the last WAL record applied to `events.mdb`.
    pub checkpoint_lsn: u64,
    /// Events acknowledged but not yet checkpointed.
    pub checkpoint_lag_events: u64,
    /// Bytes of acknowledged records not yet checkpointed (they are in the WAL; the engine
    /// holds only an index of them), plus that index's memory. Bounded by
    /// [`Options::max_tail_bytes`](crate::Options::max_tail_bytes).
    pub tail_bytes: u64,
    /// Memory the arena's cache of WAL pages holds for reads of the not-yet-checkpointed
    /// tail. Bounded by [`Options::tail_cache_bytes`](crate::Options::tail_cache_bytes).
    pub tail_cache_bytes: u64,
    /// Page lookups in that cache since open (hits and misses): how much of the tail was
    /// read from the WAL.
    pub tail_cache_lookups: u64,
    /// Of those lookups, the ones the cache served without reading the WAL (prefetched
    /// pages included).
    pub tail_cache_hits: u64,
    /// Consumers that committed a position.
    pub consumers: u64,
    /// Streams that were deleted (soft or tombstone) or truncated: their removed events
    /// leave gaps in the positions and their versions start above 0.
    pub deleted_streams: u64,
    /// Stream snapshots stored (one per stream at most), and their bytes as given.
    pub snapshots: u64,
    /// Bytes of those snapshots (with a 9-byte header each), before compression.
    pub snapshot_bytes: u64,
    /// Bytes the snapshots take in the slotted store's pages (after compression).
    pub snapshot_stored_bytes: u64,
    /// Page files of the snapshots' slotted store.
    pub snapshot_pages: u64,
    /// The WAL's highest durable LSN.
    pub wal_durable_lsn: u64,
    /// The first LSN the WAL still keeps.
    pub wal_first_lsn: u64,
    /// Bytes of the WAL's segment files (preallocated; spares not counted).
    pub wal_bytes: u64,
    /// WAL segments in the log.
    pub wal_segments: u64,
    /// Bytes queued for the WAL but not yet written.
    pub wal_queued_bytes: u64,
    /// WAL `fdatasync`s since open.
    pub wal_syncs: u64,
    /// Distinct blobs in the sidecar.
    pub blobs: u64,
    /// Bytes of those blobs.
    pub blob_bytes: u64,
    /// Checkpoints completed since open.
    pub checkpoints: u64,
    /// Times an append (or a consumer commit or deletion) found the WAL's queue full
    /// ([`Options::wal_queue_bytes`](crate::Options::wal_queue_bytes)) and waited for the
    /// log outside the sequencer's lock before sequencing again, since open.
    pub append_retries: u64,
    /// Why the store is degraded (appends refused), if it is.
    pub degraded: Option<String>,
}

/// What the sequencer hands back to an appender: its result, its record's LSN, the WAL
/// ticket to wait on and its tail entry (which gets the record's location once durable).
type Sequenced = (AppendResult, u64, varve_wal::Ticket, Arc<TailEntry>);

/// A stream's head as the sequencer knows it.
#[derive(Debug, Clone, Copy)]
struct Head {
    id: u64,
    /// Number of events in the stream (the next version).
    next_version: u64,
    /// What was deleted of it.
    meta: StreamMeta,
}

impl Head {
    /// The version of its last visible event, for expected-version checks: `None` if it
    /// has none (never had, or soft-deleted since its last event).
    fn visible_last(&self) -> Option<u64> {
        (self.next_version > self.meta.hidden_before).then(|| self.next_version - 1)
    }
}

/// State only the sequencer's critical section touches.
#[derive(Debug)]
struct Seq {
    next_position: u64,
    next_lsn: u64,
    heads: HashMap<Arc<str>, Head>,
}

/// Consumers' cursors: the latest position of each, and the commits the checkpointer has
/// not yet written to `events.mdb`.
#[derive(Debug, Default)]
struct Consumers {
    positions: HashMap<Arc<str>, u64>,
    /// (LSN, consumer, position) in LSN order.
    pending: Vec<(u64, Arc<str>, u64)>,
}

/// Stream names by id and ids by name, for readers.
#[derive(Debug, Default)]
struct Catalog {
    names: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u64>,
}

#[derive(Debug, Default)]
struct Signal {
    requested: bool,
    shutdown: bool,
}

/// Everything the handles and the checkpointer thread share.
pub(crate) struct Core {
    /// This open store's number in the process (keys the per-thread name caches).
    uid: u64,
    dir: PathBuf,
    opts: Options,
    wal: Arc<Wal>,
    /// Reads of the not-yet-checkpointed tail: the WAL's segments through the arena.
    cache: CacheManager,
    env: heed::Env<WithoutTls>,
    dbs: Dbs,
    sidecar: Sidecar,
    /// Stream snapshots: the slotted store, keyed by stream id.
    snapshots: varve_slotted::Store,
    /// Serializes `put_snapshot`'s compare-and-put.
    snapshot_lock: Mutex<()>,
    seq: Mutex<Seq>,
    /// Taken inside `seq` by a consumer commit; alone by readers and the checkpointer.
    consumers: Mutex<Consumers>,
    /// What readers must hide: the deletion state of each stream that has one (published
    /// once its record is durable). Replaced whole on a change; readers clone the `Arc`.
    hidden: RwLock<Arc<HashMap<u64, StreamMeta>>>,
    /// Whether `hidden` was ever non-empty: set (and never cleared) after the map is
    /// published, so a reader that sees `false` may skip the map (it is empty).
    any_hidden: AtomicBool,
    /// Read transactions kept between point reads (see the `txns` module).
    txns: ReadTxns,
    /// Deletions the checkpointer has not applied yet: (LSN, stream id, new state), in LSN
    /// order. Pushed inside `seq`.
    meta_pending: Mutex<Vec<(u64, u64, StreamMeta)>>,
    catalog: RwLock<Catalog>,
    tail: RwLock<Tail>,
    /// One past the last position readers may see (durable and published in order).
    visible_end: AtomicU64,
    /// One past the last position in `events.mdb`.
    checkpointed_end: AtomicU64,
    checkpoint_lsn: AtomicU64,
    /// One past the highest stream id in `events.mdb`.
    ck_next_stream_id: AtomicU64,
    checkpoints: AtomicU64,
    append_retries: AtomicU64,
    tail_bytes: AtomicU64,
    /// An appender asked the checkpointer to run and it has not started since.
    ckpt_requested: AtomicBool,
    degraded: OnceLock<Arc<Error>>,
    closed: AtomicBool,
    /// Serializes checkpoints (the background thread and `checkpoint()`).
    ckpt_lock: Mutex<()>,
    signal: Mutex<Signal>,
    signal_cv: Condvar,
    room: Mutex<()>,
    room_cv: Condvar,
    /// Subscribers blocked until `visible_end` moves (see [`Core::wait_visible`]).
    watchers: AtomicUsize,
    watch: Mutex<()>,
    watch_cv: Condvar,
    /// Async subscribers waiting for `visible_end` to move (each also counted in
    /// `watchers`).
    wakers: Mutex<Vec<std::task::Waker>>,
    report: RecoveryReport,
    _lock: File,
}

/// An open event store. Cheap to clone (all clones share one store); `Send + Sync`.
///
/// See the crate docs for the durability and visibility contract.
#[derive(Clone)]
pub struct Varve {
    inner: Arc<Handle>,
}

struct Handle {
    core: Arc<Core>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.core.stop_checkpointer(&self.checkpointer);
    }
}

impl std::fmt::Debug for Varve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Varve")
            .field("dir", &self.inner.core.dir)
            .field(
                "visible_end",
                &self.inner.core.visible_end.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

/// How [`Core::wait_visible`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// More events are visible.
    Moved,
    /// The store was closed or degraded: no more events will come.
    Ended,
    /// The deadline passed.
    TimedOut,
}

/// A call of `append_multi`: a stream, what it expects, its events.
pub type StreamAppend<'a> = (&'a str, ExpectedVersion, &'a [EventData<'a>]);

impl Varve {
    /// Opens (creating if needed) the store in `dir` and recovers it: the same path after a
    /// clean close and after a crash. Layout: `dir/wal/`, `dir/events.mdb`, `dir/blobs/`,
    /// `dir/snapshots/`.
    ///
    /// `events.mdb` and `blobs/blobs.mdb` are memory-mapped: nothing but this library may
    /// write them while the store is open.
    ///
    /// # Errors
    /// [`Error::Locked`] if another open store holds `dir`; [`Error::InvalidOptions`];
    /// [`Error::UnsupportedVersion`]; [`Error::Corrupted`] (and the layers' corruption
    /// errors) for damage recovery must not paper over; I/O errors.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Varve> {
        let core = Arc::new(Core::open(dir.as_ref(), opts)?);
        let thread_core = Arc::clone(&core);
        let handle = std::thread::Builder::new()
            .name("varve-checkpointer".into())
            .spawn(move || thread_core.checkpointer_loop())?;
        Ok(Varve {
            inner: Arc::new(Handle {
                core,
                checkpointer: Mutex::new(Some(handle)),
            }),
        })
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// What open found and did.
    #[must_use]
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.core().report
    }

    /// The store's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.core().dir
    }

    /// Appends `events` to `stream` if its version is what `expected` says; returns once
    /// the events are durable (under the configured `SyncMode`) and visible to readers.
    ///
    /// # Errors
    /// [`Error::WrongExpectedVersion`] (nothing written); a limit error
    /// ([`Error::InvalidStreamName`], [`Error::InvalidEventType`],
    /// [`Error::MetadataTooLarge`], [`Error::PayloadTooLarge`], [`Error::CallTooLarge`],
    /// [`Error::EmptyAppend`]; nothing written); [`Error::Degraded`] after an I/O failure;
    /// [`Error::Closed`].
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedVersion,
        events: &[EventData<'_>],
    ) -> Result<AppendResult> {
        self.core().append(&[(stream, expected, events)])
    }

    /// Appends to several streams atomically: every stream's expectation must hold or
    /// nothing is written; the events get one contiguous run of positions, in the order of
    /// `calls`. Readers never see part of it.
    ///
    /// # Errors
    /// As [`append`](Self::append), plus [`Error::DuplicateStream`].
    pub fn append_multi(&self, calls: &[StreamAppend<'_>]) -> Result<AppendResult> {
        self.core().append(calls)
    }

    /// The event at `position`, if it exists and is visible.
    ///
    /// # Errors
    /// [`Error::Corrupted`] if its stored bytes fail their checksum; LMDB errors.
    pub fn get(&self, position: u64) -> Result<Option<RecordedEvent>> {
        self.core().with_event(position, owned)
    }

    /// Calls `f` with a borrowed view of the event at `position` (no copy); `Ok(None)` if
    /// there is no such visible event.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn with_event<R>(
        &self,
        position: u64,
        f: impl FnOnce(&EventView<'_>) -> R,
    ) -> Result<Option<R>> {
        self.core().with_event(position, |v, _| f(v))
    }

    /// Up to `limit` events of the global log from `from` (inclusive) in `direction`.
    /// Backward from a position past the end starts at the last event.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn read_all(
        &self,
        from: u64,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        // Room for what is visible in the range up front: a large read then fills one
        // allocation instead of copying its events each time the vector doubles.
        let end = self.core().visible_end();
        let visible = match direction {
            Direction::Forward => end.saturating_sub(from),
            Direction::Backward => from.saturating_add(1).min(end),
        };
        let mut out = Vec::with_capacity(limit.min(usize::try_from(visible).unwrap_or(limit)));
        self.core()
            .scan_all(from, direction, limit, |v, n| out.push(owned(v, n)))?;
        Ok(out)
    }

    /// Like [`read_all`](Self::read_all) but hands each event to `f` as a borrowed view.
    /// Returns how many events it visited.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn scan_all(
        &self,
        from: u64,
        direction: Direction,
        limit: usize,
        mut f: impl FnMut(&EventView<'_>),
    ) -> Result<usize> {
        Ok(self.core().scan_all(from, direction, limit, |v, _| f(v))?.0)
    }

    /// Up to `limit` events of `stream` from version `from` (inclusive) in `direction`.
    ///
    /// # Errors
    /// [`Error::StreamNotFound`] if the stream has no visible event; as [`get`](Self::get).
    pub fn read_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        let mut out = Vec::new();
        self.core()
            .scan_stream(stream, direction, from, limit, |v, n| out.push(owned(v, n)))?;
        Ok(out)
    }

    /// Like [`read_stream`](Self::read_stream) with borrowed views. Returns how many
    /// events it visited.
    ///
    /// # Errors
    /// As [`read_stream`](Self::read_stream).
    pub fn scan_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: u64,
        limit: usize,
        mut f: impl FnMut(&EventView<'_>),
    ) -> Result<usize> {
        self.core()
            .scan_stream(stream, direction, from, limit, |v, _| f(v))
    }

    /// The version of the stream's last visible event, `None` if it has none.
    ///
    /// # Errors
    /// LMDB errors.
    pub fn stream_version(&self, stream: &str) -> Result<Option<u64>> {
        let Some(id) = read(&self.core().catalog).ids.get(stream).copied() else {
            return Ok(None);
        };
        self.core().check_not_tombstoned(stream, id)?;
        self.core().visible_head(id)
    }

    /// The whole payload of `event` (read from the sidecar for a large one, its SHA-256
    /// checked).
    ///
    /// # Errors
    /// [`Error::Sidecar`] if the blob is missing or corrupted.
    pub fn read_payload(&self, event: &RecordedEvent) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(event.payload.len() as usize);
        self.read_payload_to(event, &mut out)?;
        Ok(out)
    }

    /// Streams the payload of `event` into `out` through the sidecar's cache-safe read
    /// path (large payloads do not stay in the page cache). Returns the bytes written.
    ///
    /// # Errors
    /// As [`read_payload`](Self::read_payload), and the writer's errors.
    pub fn read_payload_to<W: Write + ?Sized>(
        &self,
        event: &RecordedEvent,
        out: &mut W,
    ) -> Result<u64> {
        match &event.payload {
            crate::EventPayload::Inline(b) => {
                out.write_all(b)?;
                Ok(b.len() as u64)
            }
            crate::EventPayload::Blob { hash, .. } => {
                Ok(self.core().sidecar.read_to(&Payload::BlobRef(*hash), out)?)
            }
        }
    }

    /// Applies every acknowledged event to `events.mdb` now and drops the WAL segments
    /// that held only applied records. Returns the number of events applied.
    ///
    /// # Errors
    /// [`Error::Degraded`] if the store is degraded; LMDB and WAL errors (which degrade it).
    pub fn checkpoint(&self) -> Result<u64> {
        self.core().checkpoint()
    }

    /// Counts that describe the store.
    ///
    /// # Errors
    /// I/O errors reading file sizes; sidecar errors.
    pub fn stats(&self) -> Result<Stats> {
        self.core().stats()
    }

    /// Checkpoints what is acknowledged, stops the checkpointer and closes this handle.
    /// Appends through other clones then get [`Error::Closed`] (their reads keep working);
    /// the files are released when the last clone is dropped. A crash instead of a close loses nothing acknowledged: open recovers the
    /// same state either way.
    ///
    /// # Errors
    /// The final checkpoint's error, or [`Error::Degraded`] if the store was degraded.
    pub fn close(self) -> Result<()> {
        let core = &self.inner.core;
        core.closed.store(true, Ordering::SeqCst);
        core.wake_watchers();
        core.stop_checkpointer(&self.inner.checkpointer);
        if core.degraded.get().is_some() {
            Err(core.degraded_error())
        } else {
            core.checkpoint().map(|_| ())
        }
    }
}

impl Core {
    fn open(dir: &Path, opts: Options) -> Result<Core> {
        opts.validate()?;
        std::fs::create_dir_all(dir)?;
        let lock_file = acquire_lock(dir)?;
        let (env, dbs, ck) = lmdb::open(dir, opts.map_size)?;

        // Stream catalog and heads from the last checkpoint.
        let mut catalog = Catalog::default();
        let mut heads = HashMap::new();
        let mut consumers = Consumers::default();
        {
            let rtxn = env.read_txn()?;
            let n = usize::try_from(ck.next_stream_id)
                .map_err(|_| Error::corrupted(lmdb::location(dir), "stream count overflows"))?;
            let mut names: Vec<Option<Arc<str>>> = vec![None; n];
            for item in dbs.streams.iter(&rtxn)? {
                let (name, v) = item?;
                let bad = || Error::corrupted(lmdb::location(dir), "bad stream record");
                let (id, next_version) = codec::decode_stream(v).ok_or_else(bad)?;
                let name: Arc<str> = Arc::from(std::str::from_utf8(name).map_err(|_| bad())?);
                let slot = usize::try_from(id)
                    .ok()
                    .and_then(|i| names.get_mut(i))
                    .ok_or_else(bad)?;
                if slot.replace(Arc::clone(&name)).is_some() {
                    return Err(bad());
                }
                heads.insert(
                    Arc::clone(&name),
                    Head {
                        id,
                        next_version,
                        meta: StreamMeta::default(),
                    },
                );
                catalog.ids.insert(name, id);
            }
            for item in dbs.consumers.iter(&rtxn)? {
                let (name, v) = item?;
                let bad = || Error::corrupted(lmdb::location(dir), "bad consumer record");
                let name = std::str::from_utf8(name).map_err(|_| bad())?;
                let position = codec::decode_consumer_position(v).ok_or_else(bad)?;
                consumers.positions.insert(Arc::from(name), position);
            }
            catalog.names = names
                .into_iter()
                .map(|n| {
                    n.ok_or_else(|| {
                        Error::corrupted(lmdb::location(dir), "stream id without a name")
                    })
                })
                .collect::<Result<_>>()?;
        }

        let mut hidden: HashMap<u64, StreamMeta> = HashMap::new();
        {
            let rtxn = env.read_txn()?;
            for item in dbs.stream_meta.iter(&rtxn)? {
                let (k, v) = item?;
                let bad = || Error::corrupted(lmdb::location(dir), "bad stream meta record");
                let id = codec::be_u64(k).ok_or_else(bad)?;
                let meta = StreamMeta::decode(v).ok_or_else(bad)?;
                let name = usize::try_from(id)
                    .ok()
                    .and_then(|i| catalog.names.get(i))
                    .ok_or_else(bad)?;
                heads.get_mut(name).ok_or_else(bad)?.meta = meta;
                hidden.insert(id, meta);
            }
        }
        let mut meta_pending = Vec::new();
        let sidecar = Sidecar::open(dir.join(BLOBS_DIR), SidecarOptions::default())?;
        let snapshots = varve_slotted::Store::open_or_create(
            dir.join(SNAPSHOTS_DIR),
            varve_slotted::Options::default()
                .min_page_size(1 << 20)
                .max_value_size(opts.max_snapshot_bytes as u32 + SNAPSHOT_HEADER as u32),
        )?;
        let max_record = opts.max_record_bytes();
        let wal_opts = varve_wal::Options::default()
            .sync_mode(opts.sync_mode)
            .segment_size(opts.wal_segment_size)
            .max_record_size(max_record)
            .max_queued_bytes(opts.wal_queue_bytes)
            // After every segment is gone (deleted, or cut by recovery), numbering still
            // continues above what events.mdb has applied.
            .start_lsn(ck.lsn + 1);
        let wal = Arc::new(Wal::open(dir.join(WAL_DIR), wal_opts)?);

        let mut report = RecoveryReport {
            wal: wal.recovery_report().clone(),
            checkpoint_lsn: ck.lsn,
            ..RecoveryReport::default()
        };
        let wal_loc = || dir.join(WAL_DIR).display().to_string();
        let durable = wal.durable_lsn();
        if durable > ck.lsn && wal.first_lsn() > ck.lsn + 1 {
            return Err(Error::corrupted(
                wal_loc(),
                "log records after the checkpoint are missing",
            ));
        }

        // Replay the log after the checkpoint into the tail index.
        let mut tail = Tail::default();
        let mut next_position = ck.next_position;
        let mut tail_refs: HashMap<BlobHash, u64> = HashMap::new();
        if durable > ck.lsn {
            let mut it = wal.iter_from(ck.lsn + 1)?;
            while let Some(rec) = it.next_ref() {
                let rec = rec?;
                let at = |what| Error::corrupted(format!("{} LSN {}", wal_loc(), rec.lsn), what);
                if rec.kind == KIND_CONSUMER {
                    let (name, position) = codec::parse_consumer(rec.payload).map_err(at)?;
                    if position > next_position {
                        return Err(at("consumer position past the end of the log"));
                    }
                    let name: Arc<str> = Arc::from(name);
                    consumers.positions.insert(Arc::clone(&name), position);
                    consumers.pending.push((rec.lsn, name, position));
                    report.replayed_records += 1;
                    continue;
                }
                if rec.kind == KIND_STREAM_META {
                    let (id, meta) = codec::parse_stream_meta(rec.payload).map_err(at)?;
                    let name = usize::try_from(id)
                        .ok()
                        .and_then(|i| catalog.names.get(i))
                        .ok_or_else(|| at("stream meta record of an unknown stream"))?;
                    let head = heads
                        .get_mut(name)
                        .ok_or_else(|| at("stream meta record of an unknown stream"))?;
                    if meta.hidden_before > head.next_version {
                        return Err(at("stream meta record past the stream's head"));
                    }
                    head.meta = meta;
                    hidden.insert(id, meta);
                    meta_pending.push((rec.lsn, id, meta));
                    drop_hidden_snapshot(&snapshots, id, meta)?;
                    report.replayed_records += 1;
                    continue;
                }
                if rec.kind != KIND_APPEND {
                    return Err(at("unknown record kind"));
                }
                let parsed = codec::parse_append(rec.payload).map_err(at)?;
                if parsed.first_position != next_position {
                    return Err(at("record does not continue the positions"));
                }
                for g in &parsed.groups {
                    let name = std::str::from_utf8(&rec.payload[g.name.clone()])
                        .map_err(|_| at("stream name is not UTF-8"))?;
                    match heads.get_mut(name) {
                        Some(h) if h.id == g.stream_id && h.next_version == g.first_version => {
                            h.next_version += u64::from(g.count);
                        }
                        Some(_) => return Err(at("stream id or version does not continue")),
                        None => {
                            if g.stream_id != catalog.names.len() as u64 || g.first_version != 0 {
                                return Err(at("new stream with a wrong id or version"));
                            }
                            let name: Arc<str> = Arc::from(name);
                            catalog.names.push(Arc::clone(&name));
                            catalog.ids.insert(Arc::clone(&name), g.stream_id);
                            heads.insert(
                                name,
                                Head {
                                    id: g.stream_id,
                                    next_version: u64::from(g.count),
                                    meta: StreamMeta::default(),
                                },
                            );
                        }
                    }
                }
                for &(off, len) in &parsed.events {
                    let body = rec
                        .payload
                        .get(off as usize..(off + len) as usize)
                        .and_then(|b| codec::body_at(b).ok());
                    if let Some(b) = body
                        && let PayloadRef::Blob { hash, .. } = b.payload
                    {
                        *tail_refs.entry(hash).or_default() += 1;
                    }
                }
                let entry = entry_from_parsed(
                    rec.lsn,
                    rec.payload.len(),
                    (rec.segment, rec.offset),
                    &parsed,
                );
                next_position = entry.end();
                report.replayed_records += 1;
                report.replayed_events += u64::from(entry.events);
                tail.push(Arc::new(entry));
            }
        }
        tail.visible = tail.entries.len();

        report.orphan_blob_refs_released = release_orphan_blobs(&env, &dbs, &sidecar, &tail_refs)?;

        let tail_bytes = tail.bytes;
        // Emptied chunks up to a quarter of the budget stay mapped: a read of the record
        // just appended replaces the partial page that held the log's end, and with no
        // floor each such read unmapped one chunk and mapped another. Whole chunks only, so
        // a budget under 1 MiB keeps none: with the floor at the whole budget (one chunk),
        // reads in tests/tail_reads.rs failed with `Exhausted` now and then.
        let chunk = varve_arena::CHUNK_BYTES;
        let keep = opts.tail_cache_bytes / 4 / chunk * chunk;
        let arena = Arena::new(ArenaConfig::with_limits(keep, opts.tail_cache_bytes)?);
        let cache = CacheManager::new(
            Arc::new(WalPages::new(Arc::clone(&wal))),
            arena,
            CacheConfig::default(),
        )?;
        Ok(Core {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            dir: dir.to_path_buf(),
            opts,
            seq: Mutex::new(Seq {
                next_position,
                next_lsn: wal.durable_lsn() + 1,
                heads,
            }),
            wal,
            cache,
            env,
            dbs,
            sidecar,
            snapshots,
            snapshot_lock: Mutex::new(()),
            consumers: Mutex::new(consumers),
            any_hidden: AtomicBool::new(!hidden.is_empty()),
            txns: ReadTxns::new(),
            hidden: RwLock::new(Arc::new(hidden)),
            meta_pending: Mutex::new(meta_pending),
            catalog: RwLock::new(catalog),
            tail: RwLock::new(tail),
            visible_end: AtomicU64::new(next_position),
            checkpointed_end: AtomicU64::new(ck.next_position),
            checkpoint_lsn: AtomicU64::new(ck.lsn),
            ck_next_stream_id: AtomicU64::new(ck.next_stream_id),
            checkpoints: AtomicU64::new(0),
            append_retries: AtomicU64::new(0),
            tail_bytes: AtomicU64::new(tail_bytes),
            ckpt_requested: AtomicBool::new(false),
            degraded: OnceLock::new(),
            closed: AtomicBool::new(false),
            ckpt_lock: Mutex::new(()),
            signal: Mutex::new(Signal::default()),
            signal_cv: Condvar::new(),
            room: Mutex::new(()),
            room_cv: Condvar::new(),
            watchers: AtomicUsize::new(0),
            watch: Mutex::new(()),
            watch_cv: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            report,
            _lock: lock_file,
        })
    }

    /// The longest stream (and consumer) name allowed.
    pub(crate) fn max_stream_name(&self) -> usize {
        self.opts.max_stream_name
    }

    /// One past the last position readers may see.
    pub(crate) fn visible_end(&self) -> u64 {
        self.visible_end.load(Ordering::SeqCst)
    }

    /// [`Error::Degraded`] with its cause, or [`Error::Closed`] if the store is not
    /// degraded.
    pub(crate) fn degraded_error(&self) -> Error {
        match self.degraded.get() {
            Some(cause) => Error::Degraded {
                cause: Arc::clone(cause),
            },
            None => Error::Closed,
        }
    }

    /// Puts the store in degraded mode (first cause wins) and returns the error to report.
    fn degrade(&self, cause: Error) -> Error {
        let _ = self.degraded.set(Arc::new(cause));
        self.room_cv.notify_all();
        self.wake_watchers();
        self.degraded_error()
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if self.degraded.get().is_some() {
            return Err(self.degraded_error());
        }
        Ok(())
    }

    fn validate(&self, calls: &[StreamAppend<'_>]) -> Result<usize> {
        let o = &self.opts;
        if calls.is_empty() {
            return Err(Error::EmptyAppend);
        }
        let mut call_bytes = codec::APPEND_HEADER_LEN;
        for (stream, _, events) in calls {
            if stream.is_empty() {
                return Err(Error::InvalidStreamName { why: "empty" });
            }
            if stream.len() > o.max_stream_name {
                return Err(Error::InvalidStreamName {
                    why: "longer than max_stream_name",
                });
            }
            if stream.as_bytes().contains(&0) {
                return Err(Error::InvalidStreamName {
                    why: "contains a NUL byte",
                });
            }
            if events.is_empty() {
                return Err(Error::EmptyAppend);
            }
            call_bytes += AppendRecord::group_len(stream);
            for ev in *events {
                if ev.event_type.is_empty() {
                    return Err(Error::InvalidEventType { why: "empty" });
                }
                if ev.event_type.len() > o.max_event_type {
                    return Err(Error::InvalidEventType {
                        why: "longer than max_event_type",
                    });
                }
                if ev.metadata.len() > o.max_metadata_bytes {
                    return Err(Error::MetadataTooLarge {
                        size: ev.metadata.len(),
                        max: o.max_metadata_bytes,
                    });
                }
                if ev.payload.len() > o.max_payload_bytes {
                    return Err(Error::PayloadTooLarge {
                        size: ev.payload.len(),
                        max: o.max_payload_bytes,
                    });
                }
                call_bytes = call_bytes
                    .saturating_add(codec::body_len(ev, &BodyPayload::Inline(ev.payload)));
            }
        }
        if call_bytes > o.max_call_bytes {
            return Err(Error::CallTooLarge {
                size: call_bytes,
                max: o.max_call_bytes,
            });
        }
        if calls.len() > 1 {
            let mut seen = HashSet::with_capacity(calls.len());
            for (stream, _, _) in calls {
                if !seen.insert(*stream) {
                    return Err(Error::DuplicateStream {
                        stream: (*stream).to_owned(),
                    });
                }
            }
        }
        if calls.len() > u16::MAX as usize {
            return Err(Error::CallTooLarge {
                size: calls.len(),
                max: u16::MAX as usize,
            });
        }
        Ok(call_bytes)
    }

    fn append(&self, calls: &[StreamAppend<'_>]) -> Result<AppendResult> {
        self.check_writable()?;
        let call_bytes = self.validate(calls)?;
        let total: usize = calls.iter().map(|c| c.2.len()).sum();
        let total_u32 = u32::try_from(total).map_err(|_| Error::CallTooLarge {
            size: total,
            max: u32::MAX as usize,
        })?;

        // Large payloads go to the sidecar first: durable before anything refers to them.
        let mut blobs = BlobGuard {
            sidecar: &self.sidecar,
            hashes: Vec::new(),
        };
        let mut payloads = Vec::with_capacity(total);
        for (_, _, events) in calls {
            for ev in *events {
                if ev.payload.len() >= MAX_INLINE_SIZE {
                    let p = self
                        .sidecar
                        .store(ev.payload)
                        .map_err(|e| self.io_failure(e.into()))?;
                    let Payload::BlobRef(hash) = p else {
                        return Err(Error::corrupted(
                            "sidecar",
                            "a large payload was not stored as a blob",
                        ));
                    };
                    blobs.hashes.push(hash);
                    payloads.push(BodyPayload::Blob {
                        hash,
                        len: ev.payload.len() as u64,
                    });
                } else {
                    payloads.push(BodyPayload::Inline(ev.payload));
                }
            }
        }

        if !blobs.hashes.is_empty() {
            failpoint("after_blob_store");
        }
        let mut rec = AppendRecord::new(now_us(), total_u32, calls.len() as u16, call_bytes);
        let mut k = 0;
        for (stream, _, events) in calls {
            rec.begin_group(stream, events.len() as u32);
            for ev in *events {
                rec.push_event(ev, &payloads[k]);
                k += 1;
            }
        }

        if rec.len() > self.opts.max_record_bytes() {
            return Err(Error::CallTooLarge {
                size: rec.len(),
                max: self.opts.max_record_bytes(),
            });
        }
        self.wait_for_room()?;

        let (result, lsn, ticket, entry) = loop {
            match self.sequence(calls, &mut rec, total as u64)? {
                Some(done) => break done,
                // The WAL's queue is full: wait outside the lock for the flusher to
                // drain some of it, then sequence again (the heads may have moved).
                None => self.wait_for_log()?,
            }
        };
        blobs.hashes.clear(); // referenced by a queued record now

        match ticket.wait_location() {
            Ok(loc) if loc.lsn == lsn => {
                let _ = entry.location.set((loc.segment, loc.offset));
            }
            Ok(_) => {
                return Err(self.degrade(Error::corrupted(
                    self.dir.join(WAL_DIR).display().to_string(),
                    "the log assigned an LSN out of the sequencer's order",
                )));
            }
            Err(e) => return Err(self.wal_failure(e)),
        }
        drop(entry);
        // Another appender's publish may have covered this record already.
        if self.visible_end.load(Ordering::SeqCst) <= result.last_position {
            self.publish();
        }
        if self.tail_bytes.load(Ordering::Relaxed) >= self.opts.checkpoint_bytes
            && !self.ckpt_requested.swap(true, Ordering::SeqCst)
        {
            self.request_checkpoint();
        }
        Ok(result)
    }

    /// The sequencer's critical section: checks the expected versions against the heads,
    /// assigns positions, stream ids and versions, queues the record with the WAL (a
    /// memory copy, no I/O) and adds it to the tail index. `None` if the WAL's queue is
    /// full (nothing was assigned).
    fn sequence(
        &self,
        calls: &[StreamAppend<'_>],
        rec: &mut AppendRecord<'_>,
        total: u64,
    ) -> Result<Option<Sequenced>> {
        let mut seq = lock(&self.seq);
        self.check_writable()?;
        let mut new_streams = 0u64;
        let next_id = read(&self.catalog).names.len() as u64;
        let mut assigned = Vec::with_capacity(calls.len());
        for (stream, expected, _) in calls {
            let head = seq.heads.get(*stream).copied();
            if head.is_some_and(|h| h.meta.tombstone) {
                return Err(Error::StreamDeleted {
                    stream: (*stream).to_owned(),
                });
            }
            let actual = head.and_then(|h| h.visible_last());
            if !expected.admits(actual) {
                return Err(Error::WrongExpectedVersion {
                    stream: (*stream).to_owned(),
                    expected: *expected,
                    actual,
                });
            }
            let (id, first_version) = match head {
                Some(h) => (h.id, h.next_version),
                None => {
                    new_streams += 1;
                    (next_id + new_streams - 1, 0)
                }
            };
            assigned.push((id, first_version));
        }
        let first_position = seq.next_position;
        rec.set_first_position(first_position);
        for (g, &(id, v)) in assigned.iter().enumerate() {
            rec.set_group(g, id, v);
        }
        let ticket = match self.wal.try_append_kind_parts(KIND_APPEND, &rec.parts()) {
            Ok(t) => t,
            Err(varve_wal::Error::Backpressure) => return Ok(None),
            Err(e) => return Err(self.wal_failure(e)),
        };
        // From here on nothing fails: commit the sequencer's state.
        let lsn = seq.next_lsn;
        seq.next_lsn += 1;
        seq.next_position += total;
        if new_streams > 0 {
            let mut cat = write(&self.catalog);
            for ((stream, _, _), &(id, _)) in calls.iter().zip(&assigned) {
                if id >= next_id {
                    let name: Arc<str> = Arc::from(*stream);
                    cat.names.push(Arc::clone(&name));
                    cat.ids.insert(name, id);
                }
            }
        }
        for ((stream, _, events), &(id, v)) in calls.iter().zip(&assigned) {
            let next_version = v + events.len() as u64;
            match seq.heads.get_mut(*stream) {
                Some(h) => h.next_version = next_version,
                None => {
                    seq.heads.insert(
                        Arc::from(*stream),
                        Head {
                            id,
                            next_version,
                            meta: StreamMeta::default(),
                        },
                    );
                }
            }
        }
        let (&(_, first_version), &(_, last_first)) = match (assigned.first(), assigned.last()) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(Error::EmptyAppend),
        };
        let last_count = calls.last().map_or(0, |c| c.2.len() as u64);
        let result = AppendResult {
            first_position,
            last_position: first_position + total - 1,
            first_version,
            last_version: last_first + last_count - 1,
        };
        let entry = Arc::new(TailEntry {
            lsn,
            first_position,
            events: total as u32,
            record_len: rec.len() as u64,
            groups: rec.groups.clone(),
            location: OnceLock::new(),
            placement: Some(ticket.placement()),
        });
        let cost = entry.cost();
        write(&self.tail).push(Arc::clone(&entry));
        self.tail_bytes.fetch_add(cost, Ordering::SeqCst);
        Ok(Some((result, lsn, ticket, entry)))
    }

    /// Stores `bytes` as the snapshot of `stream` at `version` unless one of a later version
    /// is stored; flushed before it returns. Returns whether it became the latest.
    pub(crate) fn put_snapshot(&self, stream: &str, version: u64, bytes: &[u8]) -> Result<bool> {
        if bytes.len() > self.opts.max_snapshot_bytes {
            return Err(Error::SnapshotTooLarge {
                size: bytes.len(),
                max: self.opts.max_snapshot_bytes,
            });
        }
        let not_found = || Error::StreamNotFound {
            stream: stream.to_owned(),
        };
        let id = read(&self.catalog)
            .ids
            .get(stream)
            .copied()
            .ok_or_else(not_found)?;
        self.check_not_tombstoned(stream, id)?;
        let head = self.visible_head(id)?.ok_or_else(not_found)?;
        let floor = self.hidden().get(&id).map_or(0, |m| m.hidden_before);
        if version > head || version < floor {
            return Err(Error::VersionNotFound {
                stream: stream.to_owned(),
                version,
                last: head,
            });
        }
        let _g = lock(&self.snapshot_lock);
        if let Some((stored, _)) = self.snapshot_of(id, |_| ())?
            && stored > version
        {
            return Ok(false);
        }
        let mut value = Vec::with_capacity(SNAPSHOT_HEADER + bytes.len());
        value.push(SNAPSHOT_FORMAT);
        value.extend_from_slice(&version.to_le_bytes());
        value.extend_from_slice(bytes);
        self.snapshots.put(id, &value)?;
        self.snapshots.flush()?;
        Ok(true)
    }

    /// The stored snapshot of stream `id`: its version and `f` of its bytes.
    pub(crate) fn snapshot_of<R>(
        &self,
        id: u64,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<(u64, R)>> {
        let got = self
            .snapshots
            .get_with(id, |v| {
                self.parse_snapshot(id, v)
                    .map(|(version, bytes)| (version, f(bytes)))
            })
            .map_err(|e| self.snapshot_error(e))?;
        got.transpose()
    }

    /// A stored snapshot's version and bytes, from the value the slotted store holds.
    fn parse_snapshot<'v>(&self, id: u64, v: &'v [u8]) -> Result<(u64, &'v [u8])> {
        let bad = || {
            Error::corrupted(
                format!("{} id {id}", self.dir.join(SNAPSHOTS_DIR).display()),
                "bad snapshot header",
            )
        };
        let (&format, rest) = v.split_first().ok_or_else(bad)?;
        if format != SNAPSHOT_FORMAT {
            return Err(bad());
        }
        let (version, bytes) = rest.split_first_chunk::<8>().ok_or_else(bad)?;
        Ok((u64::from_le_bytes(*version), bytes))
    }

    /// A slotted-store error of the snapshots, damage located by file and offset.
    fn snapshot_error(&self, e: varve_slotted::Error) -> Error {
        let what = match e {
            varve_slotted::Error::Corrupted { what, .. } => what,
            varve_slotted::Error::CorruptedEntry { .. } => "snapshot tracker entry fails its check",
            other => return other.into(),
        };
        match e.location() {
            Some((file, offset)) => Error::corrupted(
                format!(
                    "{} at byte {offset}",
                    self.dir.join(SNAPSHOTS_DIR).join(file).display()
                ),
                what,
            ),
            None => e.into(),
        }
    }

    /// Every stored snapshot the readers can see, in stream-id order; see
    /// [`Varve::snapshots`].
    pub(crate) fn snapshots(&self) -> impl Iterator<Item = Result<SnapshotInfo>> + '_ {
        let hidden = self.hidden();
        self.snapshots.iter().filter_map(move |item| {
            let info = item
                .map_err(|e| self.snapshot_error(e))
                .and_then(|(id, v)| {
                    let (version, bytes) = self.parse_snapshot(id, &v)?;
                    let stream = self.name_of(id)?;
                    Ok((
                        id,
                        SnapshotInfo {
                            stream,
                            version,
                            len: bytes.len() as u64,
                        },
                    ))
                });
            match info {
                Ok((id, info)) if hidden.get(&id).is_some_and(|m| m.hides(info.version)) => None,
                Ok((_, info)) => Some(Ok(info)),
                Err(e) => Some(Err(e)),
            }
        })
    }

    /// The latest snapshot of `stream`, if it has one.
    pub(crate) fn latest_snapshot(&self, stream: &str) -> Result<Option<(u64, Vec<u8>)>> {
        let Some(id) = read(&self.catalog).ids.get(stream).copied() else {
            return Ok(None);
        };
        self.check_not_tombstoned(stream, id)?;
        let meta = self.hidden().get(&id).copied().unwrap_or_default();
        Ok(self
            .snapshot_of(id, <[u8]>::to_vec)?
            .filter(|(v, _)| !meta.hides(*v)))
    }

    /// Changes what is deleted of `stream`: `change` gets its head and returns the new state
    /// (`None`: nothing to do). The record goes through the WAL (kind 3); readers hide the
    /// events once it is durable, the checkpointer removes them from `events.mdb` and
    /// releases their blobs.
    pub(crate) fn change_stream(
        &self,
        stream: &str,
        change: impl Fn(u64, Option<u64>, StreamMeta) -> Result<Option<StreamMeta>>,
    ) -> Result<()> {
        self.check_writable()?;
        let (lsn, id, meta, ticket) = loop {
            let mut seq = lock(&self.seq);
            let Some(head) = seq.heads.get(stream).copied() else {
                return Err(Error::StreamNotFound {
                    stream: stream.to_owned(),
                });
            };
            if head.meta.tombstone {
                return Err(Error::StreamDeleted {
                    stream: stream.to_owned(),
                });
            }
            let Some(meta) = change(head.next_version, head.visible_last(), head.meta)? else {
                return Ok(());
            };
            let record = codec::encode_stream_meta(head.id, meta);
            match self.wal.try_append_kind(KIND_STREAM_META, &record) {
                Ok(ticket) => {
                    let lsn = seq.next_lsn;
                    seq.next_lsn += 1;
                    if let Some(h) = seq.heads.get_mut(stream) {
                        h.meta = meta;
                    }
                    lock(&self.meta_pending).push((lsn, head.id, meta));
                    break (lsn, head.id, meta, ticket);
                }
                Err(varve_wal::Error::Backpressure) => {
                    drop(seq);
                    self.wait_for_log()?;
                }
                Err(e) => return Err(self.wal_failure(e)),
            }
        };
        self.wait_durable(ticket, lsn)?;
        self.publish_deletions(&[(lsn, id, meta)]);
        let _g = lock(&self.snapshot_lock);
        drop_hidden_snapshot(&self.snapshots, id, meta)
    }

    /// [`Error::StreamDeleted`] if stream `id` is tombstoned.
    fn check_not_tombstoned(&self, stream: &str, id: u64) -> Result<()> {
        if self.hidden().get(&id).is_some_and(|m| m.tombstone) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        Ok(())
    }

    /// Makes readers hide what `metas` (durable deletion records) delete. Called by the
    /// deleting call once its record is durable, and by the checkpointer before it removes
    /// the events (whichever comes first: readers must hide events before they go).
    fn publish_deletions(&self, metas: &[(u64, u64, StreamMeta)]) {
        if metas.is_empty() {
            return;
        }
        let mut h = write(&self.hidden);
        let mut map = HashMap::clone(&h);
        for &(_, id, meta) in metas {
            // Changes only ever hide more; two racing ones may publish out of order.
            let e = map.entry(id).or_default();
            e.hidden_before = e.hidden_before.max(meta.hidden_before);
            e.tombstone |= meta.tombstone;
        }
        *h = Arc::new(map);
        self.any_hidden.store(true, Ordering::Release);
    }

    /// The kept read transactions (for tests).
    #[cfg(test)]
    pub(crate) fn txns(&self) -> &ReadTxns {
        &self.txns
    }

    /// A read transaction of `events.mdb` as it is now, kept as a point read would keep it
    /// (for tests).
    #[cfg(test)]
    pub(crate) fn begin_kept(&self) -> KeptTxn {
        let end = self.checkpointed_end.load(Ordering::SeqCst);
        KeptTxn {
            txn: self.env.clone().static_read_txn().expect("read txn"),
            end,
        }
    }

    /// The deletion state readers see now. While the store has never had a deletion (the
    /// common case) this is one atomic load: no lock, no `Arc` count touched by every read.
    fn hidden(&self) -> Hidden {
        if !self.any_hidden.load(Ordering::Acquire) {
            return Hidden(None);
        }
        Hidden(Some(Arc::clone(&read(&self.hidden))))
    }

    /// The committed position of consumer `name` (0 if it never committed).
    pub(crate) fn consumer_position(&self, name: &str) -> u64 {
        lock(&self.consumers)
            .positions
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Every consumer and its position, sorted by name.
    pub(crate) fn consumer_positions(&self) -> Vec<(Arc<str>, u64)> {
        let mut v: Vec<_> = lock(&self.consumers)
            .positions
            .iter()
            .map(|(n, &p)| (Arc::clone(n), p))
            .collect();
        v.sort();
        v
    }

    /// Moves consumer `name` to `position` through the WAL (its own record kind) and waits
    /// until that record is durable. `forward_only`: refuse a position below the current.
    pub(crate) fn move_consumer(
        &self,
        name: &Arc<str>,
        position: u64,
        forward_only: bool,
    ) -> Result<()> {
        self.check_writable()?;
        let record = codec::encode_consumer(name, position);
        let (lsn, ticket) = loop {
            let mut seq = lock(&self.seq);
            let mut c = lock(&self.consumers);
            if position > self.visible_end() {
                return Err(Error::InvalidPosition {
                    position,
                    why: "past the last visible event",
                });
            }
            let current = c.positions.get(name).copied().unwrap_or(0);
            if forward_only && position < current {
                return Err(Error::InvalidPosition {
                    position,
                    why: "behind the consumer's committed position (reset moves it back)",
                });
            }
            match self.wal.try_append_kind(KIND_CONSUMER, &record) {
                Ok(ticket) => {
                    let lsn = seq.next_lsn;
                    seq.next_lsn += 1;
                    c.positions.insert(Arc::clone(name), position);
                    c.pending.push((lsn, Arc::clone(name), position));
                    break (lsn, ticket);
                }
                Err(varve_wal::Error::Backpressure) => {
                    drop((c, seq));
                    self.wait_for_log()?;
                }
                Err(e) => return Err(self.wal_failure(e)),
            }
        };
        self.wait_durable(ticket, lsn)
    }

    /// Waits, outside the sequencer's lock, for the WAL to write some of its full queue
    /// (counted in [`Stats::append_retries`]).
    fn wait_for_log(&self) -> Result<()> {
        self.append_retries.fetch_add(1, Ordering::Relaxed);
        let next = self.wal.durable_lsn() + 1;
        self.wal
            .wait_for(next, Duration::from_millis(10))
            .map_err(|e| self.wal_failure(e))?;
        Ok(())
    }

    /// Waits until the record the sequencer queued as `lsn` is durable; a different LSN
    /// from the log degrades the store.
    fn wait_durable(&self, ticket: varve_wal::Ticket, lsn: u64) -> Result<()> {
        match ticket.wait() {
            Ok(got) if got == lsn => Ok(()),
            Ok(_) => Err(self.degrade(Error::corrupted(
                self.dir.join(WAL_DIR).display().to_string(),
                "the log assigned an LSN out of the sequencer's order",
            ))),
            Err(e) => Err(self.wal_failure(e)),
        }
    }

    fn wal_failure(&self, e: varve_wal::Error) -> Error {
        match e {
            e @ (varve_wal::Error::Poisoned(_) | varve_wal::Error::Io(_)) => {
                let err = self.degrade(Error::Wal(e));
                let freed = write(&self.tail).truncate_invisible();
                self.tail_bytes.fetch_sub(freed, Ordering::SeqCst);
                err
            }
            e => Error::Wal(e),
        }
    }

    fn io_failure(&self, e: Error) -> Error {
        match e {
            Error::Sidecar(varve_sidecar::Error::Io(_)) | Error::Io(_) => self.degrade(e),
            e => e,
        }
    }

    /// Makes every durable tail entry visible, in order.
    fn publish(&self) {
        let durable = self.wal.durable_lsn();
        let mut t = write(&self.tail);
        let mut end = None;
        // Whether the run stopped at a durable record whose place is not known yet: its
        // appender publishes next (it publishes after recording the place, and its record
        // is not visible), so the subscribers are woken by it, once for the run.
        let mut more_coming = false;
        while let Some(e) = t.entries.get(t.visible) {
            // Durable, and placed: the first publish after a sync makes the whole synced
            // run visible, without waiting for each appender's thread to come back.
            if e.lsn > durable {
                break;
            }
            if e.placed().is_none() {
                more_coming = true;
                break;
            }
            end = Some(e.end());
            t.visible += 1;
        }
        if let Some(end) = end {
            self.visible_end.store(end, Ordering::SeqCst);
            drop(t);
            if !more_coming {
                self.wake_watchers();
            }
        }
    }

    /// Wakes the subscribers waiting in [`wait_visible`](Self::wait_visible). Cheap when
    /// there are none: one atomic load, no lock, no system call.
    fn wake_watchers(&self) {
        // SeqCst pairs with `wait_visible`: either the waiter's load of `visible_end` sees
        // the new value, or this load sees the waiter counted and takes `watch`, which the
        // waiter holds from its check until it sleeps: no wake-up is lost.
        if self.watchers.load(Ordering::SeqCst) > 0 {
            drop(lock(&self.watch));
            self.watch_cv.notify_all();
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            self.watchers.fetch_sub(wakers.len(), Ordering::SeqCst);
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Registers `waker` to be woken when `visible_end` passes `seen_end` (or the store
    /// ends), then checks: `Moved` or `Ended` if that already happened (the registration
    /// stays: one spurious wake-up later), `TimedOut` if the caller must wait.
    #[cfg(feature = "async")]
    pub(crate) fn register_waker(&self, seen_end: u64, waker: &std::task::Waker) -> Waited {
        // The same handshake as `wait_visible`: count, register, then check.
        self.watchers.fetch_add(1, Ordering::SeqCst);
        lock(&self.wakers).push(waker.clone());
        if self.visible_end.load(Ordering::SeqCst) > seen_end {
            Waited::Moved
        } else if self.closed.load(Ordering::SeqCst) || self.degraded.get().is_some() {
            Waited::Ended
        } else {
            Waited::TimedOut
        }
    }

    /// Blocks until `visible_end` passes `seen_end`, the store is closed or degraded (no
    /// event will come), or `deadline` passes.
    pub(crate) fn wait_visible(&self, seen_end: u64, deadline: Option<Instant>) -> Waited {
        self.watchers.fetch_add(1, Ordering::SeqCst);
        let mut g = lock(&self.watch);
        let out = loop {
            if self.visible_end.load(Ordering::SeqCst) > seen_end {
                break Waited::Moved;
            }
            if self.closed.load(Ordering::SeqCst) || self.degraded.get().is_some() {
                break Waited::Ended;
            }
            let cv = &self.watch_cv;
            g = match deadline {
                None => cv
                    .wait(g)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let Some(left) = d.checked_duration_since(Instant::now()) else {
                        break Waited::TimedOut;
                    };
                    cv.wait_timeout(g, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        };
        drop(g);
        self.watchers.fetch_sub(1, Ordering::SeqCst);
        out
    }

    fn wait_for_room(&self) -> Result<()> {
        while self.tail_bytes.load(Ordering::SeqCst) > self.opts.max_tail_bytes {
            self.check_writable()?;
            self.request_checkpoint();
            let g = lock(&self.room);
            let _ = self
                .room_cv
                .wait_timeout(g, Duration::from_millis(50))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    fn request_checkpoint(&self) {
        lock(&self.signal).requested = true;
        self.signal_cv.notify_one();
    }

    fn stop_checkpointer(&self, h: &Mutex<Option<JoinHandle<()>>>) {
        lock(&self.signal).shutdown = true;
        self.signal_cv.notify_all();
        if let Some(h) = lock(h).take() {
            let _ = h.join();
        }
    }

    fn checkpointer_loop(&self) {
        let mut sig = lock(&self.signal);
        loop {
            if sig.shutdown {
                return;
            }
            if !sig.requested {
                sig = match self
                    .signal_cv
                    .wait_timeout(sig, self.opts.checkpoint_interval)
                {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
                if sig.shutdown {
                    return;
                }
            }
            sig.requested = false;
            drop(sig);
            if self.degraded.get().is_none() {
                // A failure degrades the store; the loop then only idles until shutdown.
                let _ = self.checkpoint();
            }
            sig = lock(&self.signal);
        }
    }

    fn checkpoint(&self) -> Result<u64> {
        if let Some(_cause) = self.degraded.get() {
            return Err(self.degraded_error());
        }
        let _g = lock(&self.ckpt_lock);
        self.ckpt_requested.store(false, Ordering::SeqCst);
        self.publish();
        // Every record below `next_lsn` is in the tail index, among the consumers' pending
        // commits or among the pending stream deletions (all filled inside the sequencer's
        // section), so everything at or below `bound` is durable and in one of the lists; a
        // record past a not-yet-visible append must wait for it (the checkpoint LSN covers
        // a prefix of the log).
        let next_lsn = lock(&self.seq).next_lsn;
        let durable = self.wal.durable_lsn();
        let (entries, first_hidden): (Vec<Arc<TailEntry>>, Option<u64>) = {
            let t = read(&self.tail);
            let visible = t.entries.iter().take(t.visible).cloned().collect();
            (visible, t.entries.get(t.visible).map(|e| e.lsn))
        };
        let bound = (next_lsn - 1)
            .min(durable)
            .min(first_hidden.map_or(u64::MAX, |l| l - 1));
        let commits: Vec<(u64, Arc<str>, u64)> = lock(&self.consumers)
            .pending
            .iter()
            .take_while(|c| c.0 <= bound)
            .cloned()
            .collect();
        let metas: Vec<(u64, u64, StreamMeta)> = lock(&self.meta_pending)
            .iter()
            .take_while(|m| m.0 <= bound)
            .copied()
            .collect();
        let last_lsn = match (entries.last(), commits.last(), metas.last()) {
            (None, None, None) => return Ok(0),
            (e, c, m) => e
                .map_or(0, |e| e.lsn)
                .max(c.map_or(0, |c| c.0))
                .max(m.map_or(0, |m| m.0)),
        };
        self.publish_deletions(&metas);
        let (applied, released) = self
            .apply(&entries, &commits, &metas)
            .map_err(|e| self.degrade(e))?;
        lock(&self.meta_pending).drain(..metas.len());
        // After the commit: a crash before these releases leaves blob references that no
        // event holds, which the next open releases.
        for hash in &released {
            self.sidecar
                .release(hash)
                .map_err(|e| self.degrade(e.into()))?;
        }
        if let Some(last) = entries.last() {
            self.checkpointed_end.store(last.end(), Ordering::SeqCst);
        }
        // Kept read transactions would pin the pages this commit freed.
        self.txns.drop_idle();
        self.checkpoint_lsn.store(last_lsn, Ordering::SeqCst);
        let freed = write(&self.tail).pop(entries.len());
        lock(&self.consumers).pending.drain(..commits.len());
        self.tail_bytes.fetch_sub(freed, Ordering::SeqCst);
        self.room_cv.notify_all();
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        self.wal
            .truncate_before(last_lsn + 1)
            .map_err(|e| self.degrade(Error::Wal(e)))?;
        Ok(applied)
    }

    /// Writes `entries` to `events.mdb` in one transaction with the checkpoint record,
    /// reading their records back from the WAL (sequentially, past the arena: the
    /// checkpointer reads each record once).
    /// Returns the events applied and one blob hash per blob reference the deletions
    /// removed (to release from the sidecar once the transaction is committed).
    fn apply(
        &self,
        entries: &[Arc<TailEntry>],
        commits: &[(u64, Arc<str>, u64)],
        metas: &[(u64, u64, StreamMeta)],
    ) -> Result<(u64, Vec<BlobHash>)> {
        let dbs = &self.dbs;
        let mut wtxn = self.env.write_txn()?;
        let mut value = Vec::new();
        let mut heads: HashMap<u64, u64> = HashMap::new();
        let mut refs: HashMap<BlobHash, u64> = HashMap::new();
        let mut applied = 0u64;
        let mut it = None;
        for e in entries {
            let at = |what| {
                Error::corrupted(
                    format!("{} LSN {}", self.dir.join(WAL_DIR).display(), e.lsn),
                    what,
                )
            };
            let it = match &mut it {
                Some(it) => it,
                slot @ None => slot.insert(self.wal.iter_from(e.lsn)?),
            };
            // Consumer and deletion records between appends are applied from `commits`
            // and `metas` below.
            let rec = loop {
                match it.next_ref() {
                    Some(r) => {
                        let r = r?;
                        if matches!(r.kind, KIND_CONSUMER | KIND_STREAM_META) && r.lsn < e.lsn {
                            continue;
                        }
                        break r;
                    }
                    None => return Err(at("a durable record is missing from the log")),
                }
            };
            if rec.lsn != e.lsn || rec.kind != KIND_APPEND {
                return Err(at("the log holds another record than the tail expects"));
            }
            let parsed = codec::parse_append(rec.payload).map_err(at)?;
            if parsed.first_position != e.first_position || parsed.events.len() != e.events as usize
            {
                return Err(at("the record differs from the one appended"));
            }
            for (i, &(off, len)) in parsed.events.iter().enumerate() {
                let (stream_id, version) = e.locate(i);
                let position = e.first_position + i as u64;
                let body = rec
                    .payload
                    .get(off as usize..(off + len) as usize)
                    .ok_or_else(|| at("event body out of the record"))?;
                codec::encode_value(
                    &mut value,
                    position,
                    stream_id,
                    version,
                    parsed.timestamp_us,
                    body,
                );
                dbs.events.put_with_flags(
                    &mut wtxn,
                    PutFlags::APPEND,
                    &codec::position_key(position),
                    &value,
                )?;
                dbs.stream_index.put(
                    &mut wtxn,
                    &codec::stream_key(stream_id, version),
                    &codec::position_key(position),
                )?;
                if let Ok(b) = codec::body_at(body)
                    && let PayloadRef::Blob { hash, .. } = b.payload
                {
                    *refs.entry(hash).or_default() += 1;
                }
                applied += 1;
            }
            for group in &e.groups {
                heads.insert(
                    group.stream_id,
                    group.first_version + u64::from(group.count),
                );
            }
        }
        for (&id, &next) in &heads {
            let name = self.name_of(id)?;
            dbs.streams
                .put(&mut wtxn, name.as_bytes(), &codec::encode_stream(id, next))?;
        }
        for (hash, n) in refs {
            let cur = lmdb::blob_refs(dbs, &wtxn, &hash.0)?;
            dbs.blob_refs
                .put(&mut wtxn, &hash.0, &(cur + n).to_le_bytes())?;
        }
        for (_, name, position) in commits {
            dbs.consumers
                .put(&mut wtxn, name.as_bytes(), &position.to_le_bytes())?;
        }
        let released = self.apply_deletions(&mut wtxn, metas)?;
        let last = entries
            .last()
            .map_or(0, |e| e.lsn)
            .max(commits.last().map_or(0, |c| c.0))
            .max(metas.last().map_or(0, |m| m.0));
        let next_position = entries
            .last()
            .map_or(self.checkpointed_end.load(Ordering::SeqCst), |e| e.end());
        // Only streams whose first event is applied here or earlier: the catalog also holds
        // streams that exist only in the tail.
        let next_stream_id = heads
            .keys()
            .map(|id| id + 1)
            .max()
            .unwrap_or(0)
            .max(self.ck_next_stream_id.load(Ordering::SeqCst));
        Checkpoint {
            lsn: last,
            next_position,
            next_stream_id,
        }
        .put(dbs, &mut wtxn)?;
        failpoint("before_checkpoint_commit");
        wtxn.commit()?;
        failpoint("after_checkpoint_commit");
        self.ck_next_stream_id
            .store(next_stream_id, Ordering::SeqCst);
        Ok((applied, released))
    }

    /// Removes from `events.mdb` (in `wtxn`) the events each deletion in `metas` hides
    /// (their events, stream index entries and blob references) and stores the streams'
    /// deletion states. Returns one hash per blob reference removed.
    fn apply_deletions(
        &self,
        wtxn: &mut heed::RwTxn<'_>,
        metas: &[(u64, u64, StreamMeta)],
    ) -> Result<Vec<BlobHash>> {
        let dbs = &self.dbs;
        let mut dropped: HashMap<BlobHash, u64> = HashMap::new();
        for &(lsn, id, meta) in metas {
            let at = |what| {
                Error::corrupted(
                    format!("{} (stream id {id}, LSN {lsn})", lmdb::location(&self.dir)),
                    what,
                )
            };
            let key = id.to_be_bytes();
            let old = match dbs.stream_meta.get(wtxn, &key)? {
                Some(v) => StreamMeta::decode(v).ok_or_else(|| at("bad stream meta record"))?,
                None => StreamMeta::default(),
            };
            let lo = codec::stream_key(id, old.hidden_before);
            let hi = codec::stream_key(
                id,
                if meta.tombstone {
                    u64::MAX
                } else {
                    meta.hidden_before
                },
            );
            let range = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
            let mut doomed = Vec::new();
            if !old.tombstone {
                for item in dbs.stream_index.range(wtxn, &range)? {
                    let (k, p) = item?;
                    let position = codec::be_u64(p).ok_or_else(|| at("bad stream index entry"))?;
                    doomed.push((codec::stream_key(id, version_of_key(k)?), position));
                }
                // With a tombstone the last version (u64::MAX) is excluded by the range; no
                // stream reaches it.
            }
            for (k, position) in doomed {
                let pk = codec::position_key(position);
                if let Some(v) = dbs.events.get(wtxn, &pk)? {
                    let value = self.decode(position, v)?;
                    if let PayloadRef::Blob { hash, .. } = value.body.payload {
                        *dropped.entry(hash).or_default() += 1;
                    }
                }
                dbs.events.delete(wtxn, &pk)?;
                dbs.stream_index.delete(wtxn, &k)?;
            }
            let merged = StreamMeta {
                hidden_before: old.hidden_before.max(meta.hidden_before),
                tombstone: old.tombstone || meta.tombstone,
            };
            dbs.stream_meta.put(wtxn, &key, &merged.encode())?;
        }
        let mut released = Vec::new();
        for (hash, n) in dropped {
            let cur = lmdb::blob_refs(dbs, wtxn, &hash.0)?;
            let left = cur.checked_sub(n).ok_or_else(|| {
                Error::corrupted(
                    lmdb::location(&self.dir),
                    "a deleted event's blob has fewer references than events",
                )
            })?;
            if left == 0 {
                dbs.blob_refs.delete(wtxn, &hash.0)?;
            } else {
                dbs.blob_refs.put(wtxn, &hash.0, &left.to_le_bytes())?;
            }
            released.extend(std::iter::repeat_n(hash, n as usize));
        }
        Ok(released)
    }

    /// Calls `f` with the name of stream `stream_id`, from this thread's cache of names when
    /// it has it: no lock and no shared reference count touched per event, so readers on
    /// several threads do not contend. A stream's name never changes once assigned.
    fn with_name<R>(&self, stream_id: u64, f: impl FnOnce(&Arc<str>) -> R) -> Result<R> {
        NAMES.with(|cell| {
            if let Ok(cache) = cell.try_borrow()
                && let Some(name) = cache.get(&(self.uid, stream_id))
            {
                return Ok(f(name));
            }
            let name = self.name_of(stream_id)?;
            // Busy when `f` of an outer call reads again on this thread: then no caching.
            if let Ok(mut cache) = cell.try_borrow_mut() {
                if cache.len() >= NAME_CACHE_ENTRIES {
                    cache.clear();
                }
                cache.insert((self.uid, stream_id), Arc::clone(&name));
            }
            Ok(f(&name))
        })
    }

    /// The name of `stream_id`, kept in `last` while the stream stays the same.
    fn cached_name<'a>(
        &self,
        last: &'a mut Option<(u64, Arc<str>)>,
        stream_id: u64,
    ) -> Result<&'a Arc<str>> {
        if last.as_ref().is_none_or(|(id, _)| *id != stream_id) {
            *last = None;
        }
        let (_, name) = match last.take() {
            Some(hit) => last.insert(hit),
            None => last.insert((stream_id, self.with_name(stream_id, Arc::clone)?)),
        };
        Ok(name)
    }

    fn name_of(&self, stream_id: u64) -> Result<Arc<str>> {
        usize::try_from(stream_id)
            .ok()
            .and_then(|i| read(&self.catalog).names.get(i).cloned())
            .ok_or_else(|| {
                Error::corrupted(
                    lmdb::location(&self.dir),
                    "event names an unknown stream id",
                )
            })
    }

    fn with_event<R>(
        &self,
        position: u64,
        f: impl FnOnce(&EventView<'_>, &Arc<str>) -> R,
    ) -> Result<Option<R>> {
        if position >= self.visible_end.load(Ordering::SeqCst) {
            return Ok(None);
        }
        let hidden = self.hidden();
        let hides = |id: u64, v: u64| hidden.get(&id).is_some_and(|m| m.hides(v));
        loop {
            let checkpointed = self.checkpointed_end.load(Ordering::SeqCst);
            if position < checkpointed {
                // This thread's kept transaction if it holds `position` (see `txns`), else a
                // new one (kept for the next read when the slot is free).
                let mut slot = self.txns.slot();
                let mut own = None;
                let rtxn = match slot.as_deref_mut() {
                    Some(kept) => match kept {
                        Some(k) if position < k.end => &k.txn,
                        _ => {
                            *kept = None; // its reader slot is free before a new one is taken
                            let txn = self.env.clone().static_read_txn()?;
                            &kept
                                .insert(KeptTxn {
                                    txn,
                                    end: checkpointed,
                                })
                                .txn
                        }
                    },
                    None => &*own.insert(self.env.read_txn()?),
                };
                let Some(v) = self.dbs.events.get(rtxn, &codec::position_key(position))? else {
                    if !hidden.is_empty() || !self.hidden().is_empty() {
                        return Ok(None); // a deleted event (without deletions: damage)
                    }
                    return Err(self.missing(position));
                };
                let value = self.decode(position, v)?;
                if hides(value.stream_id, value.version) {
                    return Ok(None);
                }
                return self
                    .with_name(value.stream_id, |n| f(&lmdb_view(position, &value, n), n))
                    .map(Some);
            }
            let entry = {
                let t = read(&self.tail);
                t.find(position).map(|i| Arc::clone(&t.entries[i]))
            };
            if let Some(e) = entry
                && let Some(rec) = self.load(&e)?
            {
                let i = (position - e.first_position) as usize;
                let (id, v) = e.locate(i);
                if hides(id, v) {
                    return Ok(None);
                }
                return self
                    .with_name(id, |n| tail_view(&e, &rec, i, n).map(|view| f(&view, n)))?
                    .map(Some);
            }
            // Checkpointed meanwhile: loop to read it from LMDB.
        }
    }

    /// The record of visible tail entry `e`, read back from the WAL through the arena (or
    /// this thread's copy of the record it read last). `None` if the record is no longer in
    /// the log because a checkpoint applied it meanwhile: the caller reads `events.mdb`.
    ///
    /// A read fetches the whole record (one append call), so the first read of one event
    /// of a large batch copies the batch; reads that follow on the same thread reuse it.
    fn load(&self, e: &TailEntry) -> Result<Option<Arc<Loaded>>> {
        let hit = LOADED.with(|c| {
            c.try_borrow().ok().and_then(|c| match &*c {
                Some((uid, lsn, rec)) if *uid == self.uid && *lsn == e.lsn => Some(Arc::clone(rec)),
                _ => None,
            })
        });
        if hit.is_some() {
            return Ok(hit);
        }
        let at = || format!("{} LSN {}", self.dir.join(WAL_DIR).display(), e.lsn);
        let Some(&(segment, offset)) = e.location.get() else {
            return Err(Error::corrupted(
                at(),
                "a visible tail record has no location",
            ));
        };
        let mut reader = self.cache.reader(segment, offset);
        reader.expect_sequence(e.lsn);
        let mut record = Record::default();
        let read = reader.next_into(&mut record);
        drop(reader);
        let checkpointed = || e.end() <= self.checkpointed_end.load(Ordering::SeqCst);
        match read {
            Ok(true) => {}
            Ok(false) | Err(_) if checkpointed() => return Ok(None),
            Ok(false) => {
                return Err(Error::corrupted(
                    at(),
                    "a durable record is missing from the log",
                ));
            }
            Err(varve_arena::Error::Corrupted { .. }) => {
                return Err(Error::corrupted(at(), "a durable record fails its checks"));
            }
            Err(err) => return Err(err.into()),
        }
        if record.header().get(4) != Some(&KIND_APPEND) {
            return Err(Error::corrupted(
                at(),
                "the log holds another record kind there",
            ));
        }
        let parsed =
            codec::parse_append(record.payload()).map_err(|what| Error::corrupted(at(), what))?;
        if parsed.first_position != e.first_position || parsed.events.len() != e.events as usize {
            return Err(Error::corrupted(
                at(),
                "the record differs from the one appended",
            ));
        }
        let loaded = Arc::new(Loaded { record, parsed });
        if e.record_len <= LOADED_CACHE_MAX {
            LOADED.with(|c| {
                if let Ok(mut c) = c.try_borrow_mut() {
                    *c = Some((self.uid, e.lsn, Arc::clone(&loaded)));
                }
            });
        }
        Ok(Some(loaded))
    }

    fn decode<'a>(&self, position: u64, bytes: &'a [u8]) -> Result<codec::Value<'a>> {
        codec::decode_value(position, bytes).map_err(|what| {
            Error::corrupted(
                format!("{} position {position}", lmdb::location(&self.dir)),
                what,
            )
        })
    }

    /// Visits up to `limit` visible events from `from` in `direction`, skipping events a
    /// deletion hides. Returns the events visited and, going forward, the position after
    /// the last one looked at (hidden ones included).
    pub(crate) fn scan_all(
        &self,
        from: u64,
        direction: Direction,
        limit: usize,
        mut f: impl FnMut(&EventView<'_>, &Arc<str>),
    ) -> Result<(usize, u64)> {
        let end = self.visible_end.load(Ordering::SeqCst);
        let hidden = self.hidden();
        // Deleted events leave holes in `events.mdb`; without any deletion a hole is damage.
        // (Looked up again: a deletion published after `hidden` was taken may have been
        // checkpointed before this scan's read transaction began.)
        let holes = || !hidden.is_empty() || !self.hidden().is_empty();
        let shown = |id: u64, v: u64| hidden.get(&id).is_none_or(|m| !m.hides(v));
        let mut n = 0;
        // Consecutive events are often of one stream: its name is looked up once.
        let mut last: Option<(u64, Arc<str>)> = None;
        match direction {
            Direction::Forward => {
                let mut p = from;
                while n < limit && p < end {
                    let ck = self.checkpointed_end.load(Ordering::SeqCst);
                    if p < ck {
                        let stop = ck.min(end);
                        let rtxn = self.env.read_txn()?;
                        let lo = codec::position_key(p);
                        let hi = codec::position_key(stop);
                        let range = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
                        for item in self.dbs.events.range(&rtxn, &range)? {
                            let (k, v) = item?;
                            match codec::be_u64(k) {
                                Some(at) if at == p => {}
                                Some(at) if at > p && holes() => p = at,
                                _ => return Err(self.missing(p)),
                            }
                            if self.visit_value(p, v, &shown, &mut last, &mut f)? {
                                n += 1;
                            }
                            p += 1;
                            if n == limit {
                                break;
                            }
                        }
                        if n < limit && p < stop {
                            if !holes() {
                                return Err(self.missing(p));
                            }
                            p = stop;
                        }
                    } else {
                        let entries = self.tail_from(p, end);
                        if entries.is_empty() {
                            continue; // checkpointed meanwhile
                        }
                        for e in entries {
                            if n == limit || p >= end {
                                return Ok((n, p));
                            }
                            let Some(rec) = self.load(&e)? else {
                                break; // checkpointed meanwhile: go on from LMDB
                            };
                            let start = (p - e.first_position) as usize;
                            for i in start..e.events as usize {
                                if n == limit || p >= end {
                                    return Ok((n, p));
                                }
                                let (id, v) = e.locate(i);
                                if shown(id, v) {
                                    let name = self.cached_name(&mut last, id)?;
                                    f(&tail_view(&e, &rec, i, name)?, name);
                                    n += 1;
                                }
                                p += 1;
                            }
                        }
                    }
                }
                Ok((n, p))
            }
            Direction::Backward => {
                if end == 0 {
                    return Ok((0, 0));
                }
                let mut p = from.min(end - 1);
                loop {
                    if n == limit {
                        break;
                    }
                    let ck = self.checkpointed_end.load(Ordering::SeqCst);
                    if p >= ck {
                        let entry = {
                            let t = read(&self.tail);
                            t.find(p).map(|i| Arc::clone(&t.entries[i]))
                        };
                        let Some(e) = entry else { continue };
                        let Some(rec) = self.load(&e)? else { continue };
                        let mut i = (p - e.first_position) as usize;
                        loop {
                            let (id, v) = e.locate(i);
                            if shown(id, v) {
                                let name = self.cached_name(&mut last, id)?;
                                f(&tail_view(&e, &rec, i, name)?, name);
                                n += 1;
                            }
                            if p == 0 {
                                return Ok((n, 0));
                            }
                            p -= 1;
                            if n == limit || i == 0 {
                                break;
                            }
                            i -= 1;
                        }
                    } else {
                        let rtxn = self.env.read_txn()?;
                        let hi = codec::position_key(p);
                        let range = (Bound::Unbounded, Bound::Included(&hi[..]));
                        for item in self.dbs.events.rev_range(&rtxn, &range)? {
                            let (k, v) = item?;
                            match codec::be_u64(k) {
                                Some(at) if at == p => {}
                                Some(at) if at < p && holes() => p = at,
                                _ => return Err(self.missing(p)),
                            }
                            if self.visit_value(p, v, &shown, &mut last, &mut f)? {
                                n += 1;
                            }
                            if p == 0 || n == limit {
                                return Ok((n, p));
                            }
                            p -= 1;
                        }
                        if holes() {
                            return Ok((n, 0));
                        }
                        return Err(self.missing(p));
                    }
                }
                Ok((n, p))
            }
        }
    }

    /// Decodes the `events` value of `position` and hands it to `f` unless `shown` says a
    /// deletion hides it. Returns whether `f` got it.
    fn visit_value(
        &self,
        position: u64,
        bytes: &[u8],
        shown: &impl Fn(u64, u64) -> bool,
        last: &mut Option<(u64, Arc<str>)>,
        f: &mut impl FnMut(&EventView<'_>, &Arc<str>),
    ) -> Result<bool> {
        let value = self.decode(position, bytes)?;
        if !shown(value.stream_id, value.version) {
            return Ok(false);
        }
        let name = self.cached_name(last, value.stream_id)?;
        f(&lmdb_view(position, &value, name), name);
        Ok(true)
    }

    fn missing(&self, position: u64) -> Error {
        Error::corrupted(
            format!("{} position {position}", lmdb::location(&self.dir)),
            "a checkpointed event is missing",
        )
    }

    /// Clones of the visible tail entries from the one holding `p` on (empty if the tail
    /// no longer holds `p`).
    fn tail_from(&self, p: u64, end: u64) -> Vec<Arc<TailEntry>> {
        let t = read(&self.tail);
        match t.find(p) {
            None => Vec::new(),
            Some(i) => t
                .entries
                .range(i..t.visible)
                .take_while(|e| e.first_position < end)
                .cloned()
                .collect(),
        }
    }

    /// Version of the last visible event of stream `id`.
    fn visible_head(&self, id: u64) -> Result<Option<u64>> {
        let meta = self.hidden().get(&id).copied().unwrap_or_default();
        Ok(self.last_version(id)?.filter(|&v| !meta.hides(v)))
    }

    /// Version of the last event of stream `id` that is visible or hidden by a deletion not
    /// yet checkpointed.
    fn last_version(&self, id: u64) -> Result<Option<u64>> {
        let end = self.visible_end.load(Ordering::SeqCst);
        let runs = read(&self.tail).visible_runs(id, end);
        if let Some(r) = runs.last() {
            return Ok(Some(r.first_version() + r.count() - 1));
        }
        let rtxn = self.env.read_txn()?;
        let lo = codec::stream_key(id, 0);
        let hi = codec::stream_key(id, u64::MAX);
        let range = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
        match self.dbs.stream_index.rev_range(&rtxn, &range)?.next() {
            None => {
                // The tail may have been checkpointed between the two looks.
                let runs = read(&self.tail).visible_runs(id, end);
                if runs.is_empty() {
                    let rtxn = self.env.read_txn()?;
                    let last = self.dbs.stream_index.rev_range(&rtxn, &range)?.next();
                    return match last {
                        None => Ok(None),
                        Some(item) => Ok(Some(version_of_key(item?.0)?)),
                    };
                }
                Ok(runs.last().map(|r| r.first_version() + r.count() - 1))
            }
            Some(item) => Ok(Some(version_of_key(item?.0)?)),
        }
    }

    pub(crate) fn scan_stream(
        &self,
        stream: &str,
        direction: Direction,
        from: u64,
        limit: usize,
        mut f: impl FnMut(&EventView<'_>, &Arc<str>),
    ) -> Result<usize> {
        let Some(id) = read(&self.catalog).ids.get(stream).copied() else {
            return Err(Error::StreamNotFound {
                stream: stream.to_owned(),
            });
        };
        let meta = self.hidden().get(&id).copied().unwrap_or_default();
        if meta.tombstone {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let Some(head) = self.visible_head(id)? else {
            return Err(Error::StreamNotFound {
                stream: stream.to_owned(),
            });
        };
        let name = self.name_of(id)?;
        let mut n = 0;
        // Versions below `floor` were deleted (truncated or soft-deleted).
        let floor = meta.hidden_before;
        let mut v = match direction {
            Direction::Forward => from.max(floor),
            Direction::Backward => from.min(head),
        };
        if v < floor {
            return Ok(0);
        }
        let mut stuck = 0;
        while n < limit {
            match direction {
                Direction::Forward if v > head => break,
                _ => {}
            }
            let end = self.visible_end.load(Ordering::SeqCst);
            let runs = read(&self.tail).visible_runs(id, end);
            let tail_first = runs.first().map(Run::first_version);
            let before = n;
            if tail_first.is_some_and(|t| v >= t) {
                match direction {
                    Direction::Forward => {
                        for r in &runs {
                            let last = r.first_version() + r.count() - 1;
                            if v > last {
                                continue;
                            }
                            let Some(rec) = self.load(&r.entry)? else {
                                break; // checkpointed meanwhile: retry from LMDB
                            };
                            while n < limit && v <= last && v <= head {
                                if v >= r.first_version() {
                                    let i = r.index_of(v);
                                    f(&tail_view(&r.entry, &rec, i, &name)?, &name);
                                    n += 1;
                                }
                                v += 1;
                            }
                        }
                        if v > head {
                            break;
                        }
                    }
                    Direction::Backward => {
                        for r in runs.iter().rev() {
                            if v < r.first_version() {
                                continue;
                            }
                            let Some(rec) = self.load(&r.entry)? else {
                                break; // checkpointed meanwhile: retry from LMDB
                            };
                            while n < limit && v >= r.first_version() {
                                let last = r.first_version() + r.count() - 1;
                                if v <= last {
                                    let i = r.index_of(v);
                                    f(&tail_view(&r.entry, &rec, i, &name)?, &name);
                                    n += 1;
                                }
                                if v == floor {
                                    return Ok(n);
                                }
                                v -= 1;
                            }
                        }
                    }
                }
            } else {
                let upto = tail_first.unwrap_or(u64::MAX);
                let rtxn = self.env.read_txn()?;
                match direction {
                    Direction::Forward => {
                        let lo = codec::stream_key(id, v);
                        let hi = codec::stream_key(id, upto.min(head + 1));
                        let range = (Bound::Included(&lo[..]), Bound::Excluded(&hi[..]));
                        // A stream's events often lie at consecutive positions (written in
                        // one call, or while no other stream was written): a cursor over
                        // `events` follows such a run instead of searching for each one.
                        let mut walk: Option<(EventsRange<'_>, u64)> = None;
                        for item in self.dbs.stream_index.range(&rtxn, &range)? {
                            let (k, p) = item?;
                            if version_of_key(k)? != v {
                                return Err(self.stream_gap(stream, v));
                            }
                            let position =
                                codec::be_u64(p).ok_or_else(|| self.stream_gap(stream, v))?;
                            let next = match &mut walk {
                                Some((it, at)) if *at == position => it.next(),
                                _ => None,
                            };
                            let bytes = match next {
                                Some(Ok((key, val))) if codec::be_u64(key) == Some(position) => val,
                                _ => {
                                    let lo = codec::position_key(position);
                                    let from = (Bound::Included(&lo[..]), Bound::Unbounded);
                                    let mut it = self.dbs.events.range(&rtxn, &from)?;
                                    match it.next().transpose()? {
                                        Some((key, val))
                                            if codec::be_u64(key) == Some(position) =>
                                        {
                                            walk = Some((it, position));
                                            val
                                        }
                                        _ => return Err(self.missing(position)),
                                    }
                                }
                            };
                            if let Some((_, at)) = &mut walk {
                                *at = position + 1;
                            }
                            let value = self.decode(position, bytes)?;
                            if value.version != v {
                                return Err(self.stream_gap(stream, v));
                            }
                            f(&lmdb_view(position, &value, &name), &name);
                            n += 1;
                            v += 1;
                            if n == limit {
                                break;
                            }
                        }
                        if v > head {
                            break;
                        }
                    }
                    Direction::Backward => {
                        let lo = codec::stream_key(id, floor);
                        let hi = codec::stream_key(id, v);
                        let range = (Bound::Included(&lo[..]), Bound::Included(&hi[..]));
                        for item in self.dbs.stream_index.rev_range(&rtxn, &range)? {
                            let (k, p) = item?;
                            self.visit_indexed(&rtxn, stream, &name, v, k, p, &mut f)?;
                            n += 1;
                            if v == floor {
                                return Ok(n);
                            }
                            v -= 1;
                            if n == limit {
                                break;
                            }
                        }
                    }
                }
            }
            if n == before {
                // Neither place had version `v`: the tail was checkpointed between the two
                // looks (retry) or the version is missing (damage).
                stuck += 1;
                if stuck > 3 {
                    return Err(self.stream_gap(stream, v));
                }
            } else {
                stuck = 0;
            }
        }
        Ok(n)
    }

    /// Reads the event a stream index entry points to and hands it to `f`, checking it is
    /// version `v` of the stream.
    #[allow(clippy::too_many_arguments)]
    fn visit_indexed(
        &self,
        rtxn: &heed::RoTxn<'_>,
        stream: &str,
        name: &Arc<str>,
        v: u64,
        key: &[u8],
        pos: &[u8],
        f: &mut impl FnMut(&EventView<'_>, &Arc<str>),
    ) -> Result<()> {
        if version_of_key(key)? != v {
            return Err(self.stream_gap(stream, v));
        }
        let position = codec::be_u64(pos).ok_or_else(|| self.stream_gap(stream, v))?;
        let Some(bytes) = self.dbs.events.get(rtxn, &codec::position_key(position))? else {
            return Err(self.missing(position));
        };
        let value = self.decode(position, bytes)?;
        if value.version != v {
            return Err(self.stream_gap(stream, v));
        }
        f(&lmdb_view(position, &value, name), name);
        Ok(())
    }

    fn stream_gap(&self, stream: &str, version: u64) -> Error {
        Error::corrupted(
            format!(
                "{} stream {stream:?} version {version}",
                lmdb::location(&self.dir)
            ),
            "the stream index does not hold the expected version",
        )
    }

    fn stats(&self) -> Result<Stats> {
        let side = self.sidecar.stats()?;
        let wal = self.wal.stats();
        // From the WAL's own list: a directory listing races with the checkpointer's
        // truncation (a file listed, then gone before its size is read).
        let wal_bytes = self.wal.segments().iter().map(|s| s.file_len).sum();
        let next_position = self.visible_end.load(Ordering::SeqCst);
        let checkpointed = self.checkpointed_end.load(Ordering::SeqCst);
        let streams = lock(&self.seq)
            .heads
            .values()
            .filter(|h| h.next_version > 0)
            .count() as u64;
        let cache = self.cache.stats();
        let snaps = self.snapshots.stats()?;
        Ok(Stats {
            next_position,
            streams,
            checkpointed_position: checkpointed,
            checkpoint_lsn: self.checkpoint_lsn.load(Ordering::SeqCst),
            checkpoint_lag_events: next_position.saturating_sub(checkpointed),
            tail_bytes: self.tail_bytes.load(Ordering::SeqCst),
            tail_cache_bytes: self.cache.arena().used_bytes(),
            tail_cache_lookups: cache.hits + cache.misses,
            tail_cache_hits: cache.hits,
            consumers: lock(&self.consumers).positions.len() as u64,
            deleted_streams: self.hidden().len() as u64,
            snapshots: snaps.live_values,
            snapshot_bytes: snaps.live_bytes,
            snapshot_stored_bytes: snaps.stored_bytes,
            snapshot_pages: u64::from(snaps.pages),
            wal_durable_lsn: wal.durable_lsn,
            wal_first_lsn: wal.first_lsn,
            wal_bytes,
            wal_segments: wal.segments,
            wal_queued_bytes: wal.queued_bytes,
            wal_syncs: wal.syncs,
            blobs: side.blobs,
            blob_bytes: side.blob_bytes,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            append_retries: self.append_retries.load(Ordering::Relaxed),
            degraded: self.degraded.get().map(|e| error_chain(e)),
        })
    }
}

/// An error and its sources, one line.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn version_of_key(key: &[u8]) -> Result<u64> {
    key.get(8..)
        .and_then(codec::be_u64)
        .ok_or_else(|| Error::corrupted("events.mdb stream_index", "key is not 16 bytes"))
}

/// An owned copy of a view, sharing the stream's name.
pub(crate) fn owned(v: &EventView<'_>, name: &Arc<str>) -> RecordedEvent {
    RecordedEvent {
        position: v.position,
        stream: Arc::clone(name),
        version: v.version,
        event_type: v.event_type.to_owned(),
        metadata: v.metadata.to_vec(),
        payload: v.payload.to_owned(),
        timestamp_us: v.timestamp_us,
        id: v.id,
    }
}

fn lmdb_view<'a>(position: u64, v: &codec::Value<'a>, name: &'a str) -> EventView<'a> {
    EventView {
        position,
        stream: name,
        version: v.version,
        event_type: v.body.event_type,
        metadata: v.body.metadata,
        payload: v.body.payload,
        timestamp_us: v.timestamp_us,
        id: v.body.id,
    }
}

/// The view of event `i` of tail entry `e`, whose record is `rec`.
fn tail_view<'a>(e: &TailEntry, rec: &'a Loaded, i: usize, name: &'a str) -> Result<EventView<'a>> {
    let (_, version) = e.locate(i);
    let body = rec.body(i).ok_or_else(|| {
        Error::corrupted(
            format!("WAL LSN {}", e.lsn),
            "a tail record has fewer events than its index",
        )
    })?;
    Ok(EventView {
        position: e.first_position + i as u64,
        stream: name,
        version,
        event_type: body.event_type,
        metadata: body.metadata,
        payload: body.payload,
        timestamp_us: rec.parsed.timestamp_us,
        id: body.id,
    })
}

/// Releases blobs stored by an append that failed before its record was queued.
struct BlobGuard<'a> {
    sidecar: &'a Sidecar,
    hashes: Vec<BlobHash>,
}

impl Drop for BlobGuard<'_> {
    fn drop(&mut self) {
        for h in &self.hashes {
            // A failure leaves an orphan reference, which the next open releases.
            let _ = self.sidecar.release(h);
        }
    }
}

fn acquire_lock(dir: &Path) -> Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked(dir.to_path_buf())),
        Err(e) => Err(Error::Io(e.into())),
    }
}

/// Releases sidecar references that no event holds: each blob's count in the sidecar
/// against the checkpointed references in `events.mdb` plus those in the replayed tail.
/// A kill between an append's blob store and its log write leaves such references; a
/// blob whose count reaches zero is removed by the sidecar. Returns the references
/// released. A blob referenced more often than the sidecar counts is left as it is (its
/// reads still work; `varve check` reports it).
fn release_orphan_blobs(
    env: &heed::Env<WithoutTls>,
    dbs: &Dbs,
    sidecar: &Sidecar,
    tail_refs: &HashMap<BlobHash, u64>,
) -> Result<u64> {
    let blobs = sidecar.blobs()?;
    let rtxn = env.read_txn()?;
    let mut released = 0;
    for b in blobs {
        let referenced =
            lmdb::blob_refs(dbs, &rtxn, &b.hash.0)? + tail_refs.get(&b.hash).copied().unwrap_or(0);
        for _ in referenced..b.refcount {
            sidecar.release(&b.hash)?;
            released += 1;
        }
    }
    Ok(released)
}
