//! `Sidecar`: the blob store (open, write path, reference counts, map growth).
//!
//! Every LMDB transaction of this process is opened under a read guard of `gate`; growing
//! the map takes the write guard, so it runs only when no transaction of this process is
//! open, as `mdb_env_set_mapsize` requires.

use std::borrow::Cow;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{
    Arc, Mutex, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, mpsc,
};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, MdbError, RwTxn, WithoutTls};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::format::{
    BLOB_HEADER_LEN, BLOB_VERSION, BlobHeader, DIGEST_LEN, FORMAT_KEY, FORMAT_VERSION,
    FORMAT_VERSION_V1, FormatRecord, LMDB_PAGE_HEADER, RefRecord, chunk_digest, table_digest,
};
use crate::hot::{Admit, Sieve};
use crate::mapping::MapLocator;
use crate::options::{CachePolicy, SidecarOptions};
use crate::os;
use crate::payload::{BlobHash, Payload, routes_to_sidecar};
use crate::read::{FileReader, Located, READ_AHEAD};

/// A read transaction and the gate guard it runs under (fields drop in order: the
/// transaction ends before the guard is released).
struct ReadTxn<'s> {
    txn: heed::RoTxn<'s, WithoutTls>,
    _guard: RwLockReadGuard<'s, ()>,
}

impl<'s> std::ops::Deref for ReadTxn<'s> {
    type Target = heed::RoTxn<'s, WithoutTls>;

    fn deref(&self) -> &Self::Target {
        &self.txn
    }
}

/// A blob found in a read transaction, and whether its pages stay in the page cache
/// after the read (a hot blob).
enum Blob<'t> {
    /// Its record in LMDB's map, with the header (and digest table) already checked.
    Mapped(BlobHeader, &'t [u8], bool),
    /// Where its record lies in the file.
    File(Located, bool),
}

/// A blob in the hot set: where its overflow run lies in the file, and whether its pages
/// have been read in (and mapped) since it was admitted.
#[derive(Debug)]
struct HotBlob {
    run_start: u64,
    run_len: u64,
    ready: bool,
}

/// How a read treats the hot set.
enum HotRead {
    /// No hot set, or a blob larger than its budget: read and drop behind.
    Off,
    /// A hot blob whose pages are in: read through the map, nothing dropped.
    Hit,
    /// A blob admitted now (or still being read in by another call): read from the file,
    /// nothing dropped.
    Load,
}

/// Smallest piece an `O_DIRECT` read asks for (each is a synchronous device request).
const DIRECT_MIN_IO: usize = 1 << 20;

/// One blob of a `store_many` call, hashed and with its record prefix (header and chunk
/// digests) built outside any lock.
struct Prepared<'a> {
    hash: BlobHash,
    prefix: Vec<u8>,
    bytes: Cow<'a, [u8]>,
}

impl Prepared<'_> {
    /// A copy that outlives the caller's buffer (for a call queued behind another's commit).
    fn into_owned(self) -> Prepared<'static> {
        Prepared {
            hash: self.hash,
            prefix: self.prefix,
            bytes: Cow::Owned(self.bytes.into_owned()),
        }
    }
}

/// The group-commit queue: whether a commit is being led, and the calls waiting for one.
#[derive(Default)]
struct GroupState {
    leading: bool,
    queue: Vec<Pending>,
}

/// A queued `store_many` call.
struct Pending {
    blobs: Vec<Prepared<'static>>,
    tx: mpsc::Sender<GroupMsg>,
}

/// What a queued call is told.
enum GroupMsg {
    /// Lead the next commit (of every call queued now, this one included).
    Lead,
    /// Its blobs are committed (the hashes it wrote anew), or why not.
    Done(Result<Vec<BlobHash>>),
}

/// Hands the lead on when a leader is done, also when it unwinds.
struct HandOff<'s>(&'s Sidecar);

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        self.0.hand_off();
    }
}

/// The error of a commit that returned no result for a batch (not expected: one result
/// per batch).
fn no_result() -> Error {
    Error::Io(std::io::Error::other("a commit returned no result"))
}

/// A copy of `e` for each caller of a group commit that failed as a whole.
fn share_error(e: &Error) -> Error {
    match e {
        Error::Io(io) => Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        Error::Lmdb(heed::Error::Mdb(m)) => Error::Lmdb(heed::Error::Mdb(*m)),
        Error::StoreFull {
            map_size,
            max_map_size,
        } => Error::StoreFull {
            map_size: *map_size,
            max_map_size: *max_map_size,
        },
        Error::Poisoned(cause) => Error::Poisoned(Arc::clone(cause)),
        other => Error::Io(std::io::Error::other(other.to_string())),
    }
}

/// Name of the LMDB data file inside the sidecar's directory (its lock file is
/// `blobs.mdb-lock`).
pub const BLOBS_FILE: &str = "blobs.mdb";

/// How often a write retries after growing the map before it gives up.
const MAX_WRITE_ATTEMPTS: usize = 8;
/// Room a write asks for beyond its values: B-tree pages, free-list pages.
const WRITE_SLACK: u64 = 1 << 20;

type Db = Database<'static, Bytes, Bytes>;

/// Counts that describe a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SidecarStats {
    /// Number of distinct blobs stored.
    pub blobs: u64,
    /// Sum of the content lengths of the distinct blobs.
    pub blob_bytes: u64,
    /// Current LMDB map size in bytes.
    pub map_size: u64,
    /// Size of `blobs.mdb` on disk.
    pub file_size: u64,
}

/// One stored blob, as [`Sidecar::blobs`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlobInfo {
    /// The blob's address (SHA-256 of its content).
    pub hash: BlobHash,
    /// Its reference count (at least 1).
    pub refcount: u64,
    /// Its content length in bytes.
    pub len: u64,
}

/// The large-payload store: content-addressed blobs in their own LMDB environment.
///
/// `Sidecar` is `Send + Sync`: share it (e.g. in an `Arc`) between any number of reader
/// and writer threads. Concurrent `store`/`store_many` calls share write transactions and
/// commits (see [`Sidecar::store_many`]); `release` takes LMDB's write lock on its own.
pub struct Sidecar {
    env: heed::Env<WithoutTls>,
    /// Held (shared) for the life of every transaction; held exclusively to resize the map.
    gate: RwLock<()>,
    /// The format record's database (written by `open` only).
    #[cfg_attr(not(test), allow(dead_code))]
    meta: Db,
    blobs: Db,
    refs: Db,
    reader: FileReader,
    locator: MapLocator,
    /// Recently read blobs kept in the page cache (`None` with a zero budget).
    hot: Option<Mutex<Sieve<BlobHash, HotBlob>>>,
    page_size: usize,
    options: SidecarOptions,
    /// The failed commit that poisoned the store, if one did.
    poisoned: OnceLock<Arc<std::io::Error>>,
    /// Write transactions committed (for tests of the group commit).
    commits: AtomicU64,
    /// Group commit of concurrent `store_many` calls.
    group: Mutex<GroupState>,
    path: PathBuf,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("path", &self.path)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Sidecar {
    /// Opens the store in `dir` (created if missing): the LMDB file `dir/blobs.mdb` and
    /// its lock file `dir/blobs.mdb-lock`.
    ///
    /// The file is memory-mapped. The caller must not let anything but this crate (or
    /// another program using LMDB's locking) modify `blobs.mdb` while it is open, as for
    /// any LMDB environment; blob contents are still checked against their stored chunk
    /// digests on read. A store of format version 1 is opened and its format record
    /// rewritten to version 2 (its blobs stay readable).
    ///
    /// # Errors
    /// `Error::InvalidOptions` for options that contradict each other (checked before
    /// anything is created); `Error::Lmdb(heed::Error::EnvAlreadyOpened)` if this process
    /// has it open already; `Error::UnsupportedVersion` / `Error::CorruptedMeta` for a store
    /// this build cannot read; I/O and LMDB errors.
    pub fn open(dir: impl AsRef<Path>, options: SidecarOptions) -> Result<Sidecar> {
        options.validate()?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        let path = dir.join(BLOBS_FILE);
        let page_size = rustix::param::page_size();
        let map_size = usize::try_from(options.initial_map_size.max(1 << 20))
            .unwrap_or(usize::MAX / 2)
            .next_multiple_of(page_size);
        let env = os::open_env(&path, map_size, 3)?;
        let wtxn = env.write_txn()?;
        let opened = env.create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            let meta = dbo.create_database::<Bytes, Bytes>(wtxn, Some("meta"))?;
            let blobs = dbo.create_database::<Bytes, Bytes>(wtxn, Some("blobs"))?;
            let refs = dbo.create_database::<Bytes, Bytes>(wtxn, Some("refs"))?;
            Ok(CommitOrAbort::<_, ()>::Commit((meta, blobs, refs)))
        })?;
        let Some((meta, blobs, refs)) = opened.commit() else {
            return Err(Error::CorruptedMeta {
                what: "could not create the store's databases",
            });
        };
        // LMDB uses the page size recorded in the file, which may differ from the OS's.
        let page_size = usize::try_from(env.unnamed_database_stat().page_size)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(page_size);
        {
            let mut wtxn = env.write_txn()?;
            match meta.get(&wtxn, FORMAT_KEY)? {
                Some(rec) => {
                    let version =
                        FormatRecord::decode(rec).map_err(|what| Error::CorruptedMeta { what })?;
                    if version == FORMAT_VERSION_V1 {
                        // Version-1 blob records stay readable; from now on version-2 records
                        // are written too, which a version-1 build must refuse to open.
                        meta.put(&mut wtxn, FORMAT_KEY, &FormatRecord::encode())?;
                    } else if version != FORMAT_VERSION {
                        return Err(Error::UnsupportedVersion {
                            found: version,
                            supported: FORMAT_VERSION,
                        });
                    }
                }
                None => {
                    if !blobs.is_empty(&wtxn)? || !refs.is_empty(&wtxn)? {
                        return Err(Error::CorruptedMeta {
                            what: "format record missing in a store that holds blobs",
                        });
                    }
                    meta.put(&mut wtxn, FORMAT_KEY, &FormatRecord::encode())?;
                }
            }
            wtxn.commit()?;
        }
        let reader = FileReader::open(&path, options.cache_policy, page_size)?;
        let locator = MapLocator::new(&path)?;
        Ok(Sidecar {
            env,
            gate: RwLock::new(()),
            meta,
            blobs,
            refs,
            reader,
            locator,
            hot: (options.hot_budget > 0).then(|| Mutex::new(Sieve::new(options.hot_budget))),
            page_size,
            options,
            poisoned: OnceLock::new(),
            commits: AtomicU64::new(0),
            group: Mutex::new(GroupState::default()),
            path,
        })
    }

    /// Path of the LMDB data file (`dir/blobs.mdb`).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when blob reads bypass the page cache with `O_DIRECT` (policy
    /// [`CachePolicy::Direct`] on a filesystem that allows it).
    #[must_use]
    pub fn direct_io(&self) -> bool {
        self.reader.is_direct()
    }

    /// The options the store was opened with.
    #[must_use]
    pub fn options(&self) -> &SidecarOptions {
        &self.options
    }

    /// Stores one payload: shorter than `MAX_INLINE_SIZE` it comes back as
    /// `Payload::Inline` and nothing is written; otherwise it is stored under its SHA-256
    /// (or the existing blob's count goes up) and durable when this returns.
    ///
    /// # Errors
    /// `Error::BlobTooLarge` (nothing written), `Error::Poisoned`, `Error::StoreFull`,
    /// I/O and LMDB errors.
    pub fn store(&self, bytes: &[u8]) -> Result<Payload> {
        let mut out = self.store_many(&[bytes])?;
        out.pop().ok_or(Error::CorruptedMeta {
            what: "store_many returned no payload",
        })
    }

    /// Stores many payloads in one LMDB transaction (one fsync); returns their payloads in
    /// order. The same bytes twice in a batch are stored once with a count of two.
    ///
    /// Concurrent calls from many threads share commits (with
    /// [`SidecarOptions::group_commit`], the default): while one call's transaction
    /// commits, the calls that arrive queue up, and the first of them then writes all of
    /// their blobs in one transaction with one commit. Each call's blobs go in as one
    /// nested transaction, so a call that fails (for example on a damaged refcount record)
    /// changes nothing and does not fail the others; every call returns only after the
    /// commit that holds its blobs is durable.
    ///
    /// # Errors
    /// As [`Sidecar::store`]; when any payload is too large, nothing is written.
    pub fn store_many(&self, payloads: &[&[u8]]) -> Result<Vec<Payload>> {
        let max = self.options.max_blob_size;
        if let Some(big) = payloads.iter().find(|p| p.len() as u64 > max) {
            return Err(Error::BlobTooLarge {
                size: big.len() as u64,
                max,
            });
        }
        let mut out = Vec::with_capacity(payloads.len());
        let mut blobs: Vec<Prepared<'_>> = Vec::new();
        for p in payloads {
            if routes_to_sidecar(p.len()) {
                // The address and the chunk digests, in one pass, before any lock.
                let (hash, prefix) = BlobHeader::encode(p);
                blobs.push(Prepared {
                    hash,
                    prefix,
                    bytes: Cow::Borrowed(p),
                });
                out.push(Payload::BlobRef(hash));
            } else {
                out.push(Payload::Inline(p.to_vec()));
            }
        }
        if blobs.is_empty() {
            return Ok(out);
        }
        let written = if self.options.group_commit {
            self.commit_grouped(blobs)?
        } else {
            self.commit_batches(&[&blobs])
                .pop()
                .unwrap_or_else(|| Err(no_result()))?
        };
        if self.options.cache_policy != CachePolicy::Keep {
            // Advice only, after a durable commit: a failure here must not make the caller
            // believe the store failed (a retry would add a second reference).
            let _ = self.drop_written(&written);
        }
        Ok(out)
    }

    /// Commits `blobs` together with those of concurrent callers (leader/follower): returns
    /// the hashes this call wrote anew, once their commit is durable.
    fn commit_grouped(&self, blobs: Vec<Prepared<'_>>) -> Result<Vec<BlobHash>> {
        let mut group = self.group_state();
        if !group.leading {
            // No commit in progress: lead one with our own (borrowed) blobs.
            group.leading = true;
            drop(group);
            let _handoff = HandOff(self);
            return self
                .commit_batches(&[&blobs])
                .pop()
                .unwrap_or_else(|| Err(no_result()));
        }
        // A commit is in progress: queue a copy of our blobs and wait for an answer.
        let (tx, rx) = mpsc::channel();
        group.queue.push(Pending {
            blobs: blobs.into_iter().map(Prepared::into_owned).collect(),
            tx,
        });
        drop(group);
        loop {
            match rx.recv() {
                Ok(GroupMsg::Done(r)) => return r,
                Ok(GroupMsg::Lead) => self.lead_queued(),
                Err(mpsc::RecvError) => {
                    return Err(Error::Io(std::io::Error::other(
                        "the group commit that held this store's blobs stopped without an answer",
                    )));
                }
            }
        }
    }

    /// Commits every queued call's blobs in one transaction (this thread's own call is
    /// among them) and answers each; then hands the lead on.
    fn lead_queued(&self) {
        let _handoff = HandOff(self);
        let batch = std::mem::take(&mut self.group_state().queue);
        let lists: Vec<&[Prepared<'static>]> = batch.iter().map(|p| p.blobs.as_slice()).collect();
        let results = self.commit_batches(&lists);
        for (pending, r) in batch.iter().zip(results) {
            // The receiver waits for this answer; it is gone only if its thread is.
            let _ = pending.tx.send(GroupMsg::Done(r));
        }
    }

    /// After a commit: the first queued call leads the next one, or no one leads.
    fn hand_off(&self) {
        let mut group = self.group_state();
        while let Some(first) = group.queue.first() {
            if first.tx.send(GroupMsg::Lead).is_ok() {
                return; // `leading` stays true: the lead passed on
            }
            group.queue.remove(0);
        }
        group.leading = false;
    }

    fn group_state(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.group.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the callers' `batches` in one write transaction with one commit; returns,
    /// per batch, the hashes it wrote anew or its error. With more than one batch each runs
    /// in a nested transaction, so a failing batch is undone alone.
    fn commit_batches(&self, batches: &[&[Prepared<'_>]]) -> Vec<Result<Vec<BlobHash>>> {
        let needed = batches
            .iter()
            .flat_map(|b| b.iter())
            .map(|p| (p.prefix.len() + p.bytes.len() + 2 * self.page_size) as u64)
            .fold(WRITE_SLACK, u64::saturating_add);
        let apply = |txn: &mut RwTxn<'_>, batch: &[Prepared<'_>]| -> Result<Vec<BlobHash>> {
            let mut written = Vec::new();
            for p in batch {
                if self.add_ref(txn, p)? {
                    written.push(p.hash);
                }
            }
            Ok(written)
        };
        let outcome = if let [single] = batches {
            self.write(needed, |txn| Ok(vec![apply(txn, single)]))
        } else {
            self.write(needed, |txn| {
                let mut results = Vec::with_capacity(batches.len());
                for batch in batches {
                    let mut child = self.env.nested_write_txn(txn)?;
                    match apply(&mut child, batch) {
                        Ok(w) => {
                            child.commit()?;
                            results.push(Ok(w));
                        }
                        // The whole group grows the map and runs again.
                        Err(e @ Error::Lmdb(heed::Error::Mdb(MdbError::MapFull))) => {
                            return Err(e);
                        }
                        Err(e) => {
                            child.abort();
                            results.push(Err(e));
                        }
                    }
                }
                Ok(results)
            })
        };
        match outcome {
            Ok(results) => results,
            Err(e) => batches.iter().map(|_| Err(share_error(&e))).collect(),
        }
    }

    /// Drops the file pages of just-written (and committed, so clean) blobs from the page
    /// cache: a large write must not evict hot pages either.
    fn drop_written(&self, hashes: &[BlobHash]) -> Result<()> {
        if hashes.is_empty() {
            return Ok(());
        }
        let txn = self.read_txn()?;
        // One drop over the span of all runs: each POSIX_FADV_DONTNEED that meets a page
        // it cannot drop (a B-tree page mapped by LMDB) drains every CPU's LRU cache, so
        // one call per batch, not per blob.
        let mut span: Option<(u64, u64)> = None;
        for hash in hashes {
            let Some(record) = self.blobs.get(&txn, &hash.0)? else {
                continue;
            };
            if self.is_small(record) {
                continue;
            }
            if let Some(start) = self.run_start(record)? {
                let end = start + (LMDB_PAGE_HEADER + record.len()) as u64;
                let (s, e) = span.unwrap_or((start, end));
                span = Some((s.min(start), e.max(end)));
            }
        }
        if let Some((start, end)) = span {
            self.reader.drop_range_widened(start, end - start)?;
        }
        Ok(())
    }

    /// Adds one reference to `p.hash`, writing the blob if it is new (then returns true).
    fn add_ref(&self, txn: &mut RwTxn<'_>, p: &Prepared<'_>) -> Result<bool> {
        let hash = &p.hash;
        let rec = match self.refs.get(txn, &hash.0)? {
            Some(raw) => {
                let mut rec = RefRecord::decode(hash, raw)
                    .map_err(|what| Error::Corrupted { hash: *hash, what })?;
                rec.count = rec
                    .count
                    .checked_add(1)
                    .ok_or(Error::RefcountOverflow(*hash))?;
                rec
            }
            None => {
                // MDB_RESERVE: LMDB allocates the value's pages and we copy straight into
                // them, instead of LMDB copying from our buffer after we built a record.
                self.blobs
                    .put_reserved(txn, &hash.0, p.prefix.len() + p.bytes.len(), |space| {
                        space.write_all(&p.prefix)?;
                        space.write_all(&p.bytes)
                    })?;
                RefRecord {
                    count: 1,
                    len: p.bytes.len() as u64,
                }
            }
        };
        self.refs.put(txn, &hash.0, &rec.encode(hash))?;
        Ok(rec.count == 1)
    }

    /// Drops one reference to a blob; at zero the blob is deleted. Returns the references
    /// left.
    ///
    /// # Errors
    /// `Error::MissingBlob` if no such blob is stored; `Error::Corrupted` for a damaged
    /// refcount record; `Error::Poisoned`; I/O and LMDB errors.
    pub fn release(&self, hash: &BlobHash) -> Result<u64> {
        self.write(WRITE_SLACK, |txn| {
            let raw = self
                .refs
                .get(txn, &hash.0)?
                .ok_or(Error::MissingBlob(*hash))?;
            let mut rec = RefRecord::decode(hash, raw)
                .map_err(|what| Error::Corrupted { hash: *hash, what })?;
            rec.count -= 1;
            if rec.count == 0 {
                self.forget_hot(hash, self.blobs.get(txn, &hash.0)?)?;
                self.refs.delete(txn, &hash.0)?;
                self.blobs.delete(txn, &hash.0)?;
            } else {
                self.refs.put(txn, &hash.0, &rec.encode(hash))?;
            }
            Ok(rec.count)
        })
    }

    /// The reference count of `hash`, or `None` if it is not stored.
    ///
    /// # Errors
    /// `Error::Corrupted` for a damaged refcount record; LMDB errors.
    pub fn refcount(&self, hash: &BlobHash) -> Result<Option<u64>> {
        Ok(self.ref_record(hash)?.map(|r| r.count))
    }

    /// The content length of blob `hash`, or `None` if it is not stored (read from the
    /// refcount record: the blob's pages are not touched).
    ///
    /// # Errors
    /// As [`Sidecar::refcount`].
    pub fn blob_len(&self, hash: &BlobHash) -> Result<Option<u64>> {
        Ok(self.ref_record(hash)?.map(|r| r.len))
    }

    fn ref_record(&self, hash: &BlobHash) -> Result<Option<RefRecord>> {
        let txn = self.read_txn()?;
        match self.refs.get(&txn, &hash.0)? {
            None => Ok(None),
            Some(raw) => RefRecord::decode(hash, raw)
                .map(Some)
                .map_err(|what| Error::Corrupted { hash: *hash, what }),
        }
    }

    /// Every stored blob with its reference count and length, in hash order, read in one
    /// read transaction from the refcount records (no blob page is read). For the engine's
    /// recovery: a blob stored before a crash whose event never reached the log is listed
    /// here and referenced by no event, and can be released.
    ///
    /// # Errors
    /// `Error::Corrupted` for a damaged refcount record, `Error::CorruptedMeta` for a key
    /// that is not a hash; LMDB errors.
    pub fn blobs(&self) -> Result<Vec<BlobInfo>> {
        let txn = self.read_txn()?;
        let mut out = Vec::new();
        for item in self.refs.iter(&txn)? {
            let (k, v) = item?;
            let hash = BlobHash(k.try_into().map_err(|_| Error::CorruptedMeta {
                what: "refcount key is not 32 bytes",
            })?);
            let rec =
                RefRecord::decode(&hash, v).map_err(|what| Error::Corrupted { hash, what })?;
            out.push(BlobInfo {
                hash,
                refcount: rec.count,
                len: rec.len,
            });
        }
        Ok(out)
    }

    /// Counts and sizes of the store.
    ///
    /// # Errors
    /// `Error::Corrupted` for a damaged refcount record; I/O and LMDB errors.
    pub fn stats(&self) -> Result<SidecarStats> {
        let txn = self.read_txn()?;
        let mut blobs = 0;
        let mut blob_bytes = 0;
        for item in self.refs.iter(&txn)? {
            let (k, v) = item?;
            let hash = BlobHash(k.try_into().map_err(|_| Error::CorruptedMeta {
                what: "refcount key is not 32 bytes",
            })?);
            let rec =
                RefRecord::decode(&hash, v).map_err(|what| Error::Corrupted { hash, what })?;
            blobs += 1;
            blob_bytes += rec.len;
        }
        Ok(SidecarStats {
            blobs,
            blob_bytes,
            map_size: self.env.info().map_size as u64,
            file_size: std::fs::metadata(&self.path)?.len(),
        })
    }

    /// Writes the bytes of `payload` to `out`: inline bytes directly, a blob streamed from
    /// the store under the configured [`CachePolicy`]. Returns the bytes written.
    ///
    /// With `verify_on_read` (the default) the blob goes to `out` one chunk (1 MiB) at a
    /// time, each only after it matched the digest stored with the blob; a chunk that does
    /// not match ends the call with `Error::CorruptedChunk` before any byte of it is written
    /// (the chunks before it have been).
    ///
    /// The call holds an LMDB read transaction while it writes to `out`, which keeps the
    /// blob's pages from being reused and delays map growth (a writer that needs a larger
    /// map waits for it): keep `out` moving, and do not call back into this `Sidecar` from
    /// `out` (that can deadlock against a writer growing the map).
    ///
    /// # Errors
    /// `Error::MissingBlob`; `Error::Corrupted` for a damaged header or digest table
    /// (nothing of the blob was written to `out`) or a version-1 blob whose SHA-256 does
    /// not match; `Error::CorruptedChunk` (see above); `Error::Io` (also for failures of
    /// `out`); LMDB errors.
    pub fn read_to<W: Write + ?Sized>(&self, payload: &Payload, out: &mut W) -> Result<u64> {
        match payload {
            Payload::Inline(b) => {
                out.write_all(b)?;
                Ok(b.len() as u64)
            }
            Payload::BlobRef(hash) => self.read_blob_to(hash, out),
        }
    }

    /// The bytes of `payload`, read with the same cache policy and verification as
    /// [`Sidecar::read_to`].
    ///
    /// # Errors
    /// As [`Sidecar::read_to`].
    pub fn read(&self, payload: &Payload) -> Result<Vec<u8>> {
        match payload {
            Payload::Inline(b) => Ok(b.clone()),
            Payload::BlobRef(hash) => self.read_blob(hash),
        }
    }

    /// Streams blob `hash` into `out`.
    fn read_blob_to<W: Write + ?Sized>(&self, hash: &BlobHash, out: &mut W) -> Result<u64> {
        let verify = self.options.verify_on_read;
        self.with_blob(hash, |blob| {
            let (loc, keep) = match blob {
                Blob::Mapped(head, record, keep) => {
                    return self.read_mapped(hash, &head, record, keep, |c| Ok(out.write_all(c)?));
                }
                Blob::File(loc, keep) => (loc, keep),
            };
            let (head, first, run) = self.reader.open_record(hash, &loc, self.io(), keep)?;
            if head.version == BLOB_VERSION {
                // One pass: each chunk checked against its stored digest, then written.
                self.reader
                    .stream_v2(hash, &head, &first, run, self.io(), verify, |c| {
                        Ok(out.write_all(c)?)
                    })?;
                return Ok(head.len);
            }
            // A version-1 record (no stored digests).
            let len = head.len;
            if !verify {
                self.reader
                    .stream_v1(hash, &loc, self.io(), keep, |c| Ok(out.write_all(c)?))?;
            } else if len <= self.options.verify_buffer as u64 {
                // One pass: the whole blob into a private buffer, verified, then written.
                let mut hasher = Sha256::new();
                let whole = self
                    .reader
                    .read_whole_v1(hash, &loc, self.io(), keep, |c| hasher.update(c))?;
                if BlobHash(hasher.finalize().into()) != *hash {
                    return Err(corrupted_content(hash));
                }
                out.write_all(whole.content())?;
            } else {
                // Two passes: the first checks the SHA-256 and notes a digest of every
                // piece; the second hands out each piece only if it still has that digest.
                let mut hasher = Sha256::new();
                let mut digests = Vec::new();
                self.reader.stream_v1(hash, &loc, self.io(), keep, |c| {
                    hasher.update(c);
                    digests.push(chunk_digest(c));
                    Ok(())
                })?;
                if BlobHash(hasher.finalize().into()) != *hash {
                    return Err(corrupted_content(hash));
                }
                let mut i = 0;
                let mut offset = 0u64;
                self.reader.stream_v1(hash, &loc, self.io(), keep, |c| {
                    if digests.get(i) != Some(&chunk_digest(c)) {
                        return Err(Error::CorruptedChunk {
                            hash: *hash,
                            offset,
                            len: c.len() as u64,
                        });
                    }
                    i += 1;
                    offset += c.len() as u64;
                    Ok(out.write_all(c)?)
                })?;
            }
            Ok(len)
        })
    }

    /// Reads blob `hash` into a new vector.
    fn read_blob(&self, hash: &BlobHash) -> Result<Vec<u8>> {
        let verify = self.options.verify_on_read;
        self.with_blob(hash, |blob| {
            let mut buf = Vec::new();
            let append = |buf: &mut Vec<u8>, c: &[u8]| {
                buf.extend_from_slice(c);
                Ok(())
            };
            match blob {
                Blob::Mapped(head, record, keep) => {
                    buf.reserve_exact(usize::try_from(head.len).unwrap_or(0));
                    self.read_mapped(hash, &head, record, keep, |c| append(&mut buf, c))?;
                }
                Blob::File(loc, keep) => {
                    let (head, first, run) =
                        self.reader.open_record(hash, &loc, self.io(), keep)?;
                    // The length was checked against LMDB's value length.
                    buf.reserve_exact(usize::try_from(head.len).unwrap_or(0));
                    if head.version == BLOB_VERSION {
                        self.reader.stream_v2(
                            hash,
                            &head,
                            &first,
                            run,
                            self.io(),
                            verify,
                            |c| append(&mut buf, c),
                        )?;
                    } else {
                        self.reader
                            .stream_v1(hash, &loc, self.io(), keep, |c| append(&mut buf, c))?;
                        if verify {
                            check_hash(hash, &buf)?;
                        }
                    }
                }
            }
            Ok(buf)
        })
    }

    /// Reads a blob straight from the map (policy `Keep`, a hot blob, or a value whose file
    /// offset could not be established): `record` is the whole record, `head` its checked
    /// header. A version-2 blob goes out chunk by chunk, each after its digest matched; a
    /// version-1 blob is hashed whole before it goes out. Unless `keep` (or the policy is
    /// `Keep`), the pages leave this process's RSS afterwards.
    fn read_mapped(
        &self,
        hash: &BlobHash,
        head: &BlobHeader,
        record: &[u8],
        keep: bool,
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        let bad = |what| Error::Corrupted { hash: *hash, what };
        let content = record
            .get(usize::try_from(head.content_at).map_err(|_| bad("blob header truncated"))?..)
            .ok_or(bad("blob record shorter than its header"))?;
        // LMDB's map is MADV_RANDOM (MDB_NORDAHEAD): without explicit read-ahead every page
        // would be its own I/O. Ask for the next chunks while the current one is consumed.
        let chunk = match head.version {
            BLOB_VERSION => usize::try_from(head.chunk).unwrap_or(usize::MAX),
            _ => self.chunk(),
        };
        let window = usize::try_from(READ_AHEAD).unwrap_or(usize::MAX);
        let ahead = |i: usize| {
            let from = i.saturating_add(1).saturating_mul(chunk).min(content.len());
            let to = from.saturating_add(window.max(chunk)).min(content.len());
            os::will_need_mapped(content.get(from..to).unwrap_or_default(), self.page_size)
        };
        os::will_need_mapped(
            content.get(..chunk.min(content.len())).unwrap_or_default(),
            self.page_size,
        )?;
        let verify = self.options.verify_on_read;
        if head.version == BLOB_VERSION {
            let table = record
                .get(BLOB_HEADER_LEN..head.content_at as usize)
                .unwrap_or_default();
            for (i, c) in content.chunks(chunk).enumerate() {
                ahead(i)?;
                if verify && table_digest(table, i as u64) != Some(chunk_digest(c)) {
                    return Err(Error::CorruptedChunk {
                        hash: *hash,
                        offset: (i * chunk) as u64,
                        len: c.len() as u64,
                    });
                }
                sink(c)?;
            }
        } else if verify {
            let mut hasher = Sha256::new();
            for (i, c) in content.chunks(chunk).enumerate() {
                ahead(i)?;
                hasher.update(c);
            }
            if BlobHash(hasher.finalize().into()) != *hash {
                return Err(corrupted_content(hash));
            }
            sink(content)?;
        } else {
            for (i, c) in content.chunks(chunk).enumerate() {
                ahead(i)?;
                sink(c)?;
            }
        }
        if !keep && self.options.cache_policy != CachePolicy::Keep {
            os::drop_mapped(content, self.page_size)?;
        }
        Ok(content.len() as u64)
    }

    /// Size of the pieces a file read asks for: the configured read chunk (at least a
    /// page); with `O_DIRECT`, where each piece is a synchronous device request with
    /// nothing read ahead, at least [`DIRECT_MIN_IO`].
    fn io(&self) -> usize {
        if self.reader.is_direct() {
            self.chunk().max(DIRECT_MIN_IO)
        } else {
            self.chunk()
        }
    }

    fn chunk(&self) -> usize {
        self.options
            .read_chunk
            .max(self.page_size)
            .next_multiple_of(self.page_size)
    }

    /// Runs `f` with blob `hash` inside one read transaction: located in the file (the
    /// map is not touched), or, under `Keep`, for a small blob
    /// ([`SidecarOptions::small_blob_max`]), for a hot blob whose pages are in, or when no
    /// file offset can be found, as the content in LMDB's map after its header has been
    /// checked. With a hot set ([`SidecarOptions::hot_budget`]) the blob is looked up in
    /// it first: a hit is read through the map with nothing dropped; a blob admitted now
    /// (evicting others first, so the set stays within its budget) is read from the file
    /// with nothing dropped, then its pages are mapped for the next hit; a blob that left
    /// the set while it was read is dropped afterwards.
    fn with_blob<R>(&self, hash: &BlobHash, f: impl FnOnce(Blob<'_>) -> Result<R>) -> Result<R> {
        let txn = self.read_txn()?;
        let record = self
            .blobs
            .get(&txn, &hash.0)?
            .ok_or(Error::MissingBlob(*hash))?;
        if self.options.cache_policy != CachePolicy::Keep
            && !self.is_small(record)
            && let Some(run_start) = self.run_start(record)?
        {
            let loc = Located {
                run_start,
                record_len: record.len() as u64,
            };
            let run_len = self.run_len(record);
            let outcome = match self.hot_lookup(&txn, hash, run_start, run_len)? {
                HotRead::Off => return f(Blob::File(loc, false)),
                HotRead::Hit => {
                    let head = BlobHeader::decode(hash, record)
                        .map_err(|what| Error::Corrupted { hash: *hash, what });
                    head.and_then(|head| f(Blob::Mapped(head, record, true)))
                }
                HotRead::Load => f(Blob::File(loc, true)),
            };
            let done = self.hot_done(hash, record, outcome.is_ok());
            // A failed read reports its own error, not the advice's after it.
            let read = outcome?;
            done?;
            return Ok(read);
        }
        let head = BlobHeader::decode(hash, record)
            .map_err(|what| Error::Corrupted { hash: *hash, what })?;
        // A small blob stays mapped (no advice); otherwise this is `Keep`, or a blob with
        // no file offset, whose pages leave the RSS after the read.
        f(Blob::Mapped(head, record, self.is_small(record)))
    }

    /// How a blob found at `run_start..run_start + run_len` is read with respect to the
    /// hot set (in the read transaction `txn`, which evicted entries are looked up in).
    fn hot_lookup(
        &self,
        txn: &heed::RoTxn<'_, WithoutTls>,
        hash: &BlobHash,
        run_start: u64,
        run_len: u64,
    ) -> Result<HotRead> {
        let Some(hot) = &self.hot else {
            return Ok(HotRead::Off);
        };
        let mut set = hot.lock().unwrap_or_else(PoisonError::into_inner);
        let moved = match set.hit(hash) {
            Some(e) if e.run_start == run_start && e.run_len == run_len => {
                return Ok(if e.ready { HotRead::Hit } else { HotRead::Load });
            }
            Some(_) => set.remove(hash),
            None => None,
        };
        let entry = HotBlob {
            run_start,
            run_len,
            ready: false,
        };
        let read = match set.admit(*hash, run_len, entry) {
            Admit::Admitted(evicted) => {
                drop(set);
                for (gone, e) in evicted {
                    // Out of the set already: its pages go even if its record cannot be
                    // looked up (then only from the page cache).
                    let record = self.blobs.get(txn, &gone.0).ok().flatten();
                    self.drop_hot(record, &e)?;
                }
                HotRead::Load
            }
            Admit::Present => HotRead::Load,
            Admit::TooLarge => HotRead::Off,
        };
        if let Some(old) = moved {
            // The same blob at another place (deleted and stored again): its old pages.
            self.reader.drop_range(old.run_start, old.run_len)?;
        }
        Ok(read)
    }

    /// After a read that kept its pages (a hot blob): maps the pages of a blob that was
    /// just read in (so the next hit reads them without a page fault each), or drops
    /// them when the blob left the hot set meanwhile or the read failed.
    fn hot_done(&self, hash: &BlobHash, record: &[u8], ok: bool) -> Result<()> {
        let Some(hot) = &self.hot else {
            return Ok(());
        };
        let mut set = hot.lock().unwrap_or_else(PoisonError::into_inner);
        if ok && let Some(e) = set.get_mut(hash) {
            if !e.ready {
                e.ready = true;
                drop(set);
                // Advice only: without it the next hit faults the pages in one by one.
                let _ = os::populate_mapped(record, self.page_size);
            }
            return Ok(());
        }
        let entry = set.remove(hash);
        drop(set);
        let run_start = self.run_start(record)?;
        let e = entry.or(run_start.map(|run_start| HotBlob {
            run_start,
            run_len: self.run_len(record),
            ready: true,
        }));
        match e {
            Some(e) => self.drop_hot(Some(record), &e),
            None => Ok(()),
        }
    }

    /// Drops a blob that left the hot set: its pages leave this process's mappings (when
    /// `record`, its value in a live transaction, lies in LMDB's map of our file), then the
    /// page cache (exactly its run: its neighbours may be hot).
    fn drop_hot(&self, record: Option<&[u8]>, e: &HotBlob) -> Result<()> {
        if let Some(record) = record
            && self.run_start(record)?.is_some()
        {
            os::drop_mapped(record, self.page_size)?;
        }
        self.reader.drop_range(e.run_start, e.run_len)
    }

    /// Takes a blob that is being deleted out of the hot set and drops its pages (`record`
    /// is its value, read in the deleting transaction before the delete).
    fn forget_hot(&self, hash: &BlobHash, record: Option<&[u8]>) -> Result<()> {
        let Some(hot) = &self.hot else {
            return Ok(());
        };
        let entry = hot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(hash);
        match entry {
            Some(e) => self.drop_hot(record, &e),
            None => Ok(()),
        }
    }

    /// Bytes of blobs held in the page cache by the hot set ([`SidecarOptions::hot_budget`]):
    /// the sum of their overflow runs (whole pages), at most the budget; 0 without a hot
    /// set.
    #[must_use]
    pub fn hot_bytes(&self) -> u64 {
        self.hot.as_ref().map_or(0, |h| {
            h.lock().unwrap_or_else(PoisonError::into_inner).used()
        })
    }
    /// Length of the overflow run holding `record` (LMDB's page header and the record, in
    /// whole pages).
    /// Whether the blob stored as `record` is read and written without cache advice
    /// ([`SidecarOptions::small_blob_max`]): its content, behind a version-2 header with
    /// one digest (a version-1 header is shorter), is at most that long. Decided from the
    /// record's length alone, so the blob's pages are not touched to decide it.
    fn is_small(&self, record: &[u8]) -> bool {
        // With 0 no blob qualifies: every record is longer than its header.
        let header = (BLOB_HEADER_LEN + DIGEST_LEN) as u64;
        record.len() as u64 <= self.options.small_blob_max.saturating_add(header)
    }

    fn run_len(&self, record: &[u8]) -> u64 {
        (LMDB_PAGE_HEADER + record.len()).next_multiple_of(self.page_size) as u64
    }

    /// File offset of the overflow run holding `record` (a value in LMDB's map, from a live
    /// read transaction), found without reading the record's bytes. `None` if the record is
    /// not page-aligned as an overflow value is, or no mapping of our file holds it.
    fn run_start(&self, record: &[u8]) -> Result<Option<u64>> {
        let Some(value_at) = self.locator.file_offset(record.as_ptr() as usize)? else {
            return Ok(None);
        };
        let run_start = value_at.checked_sub(LMDB_PAGE_HEADER as u64);
        Ok(run_start.filter(|s| s % self.page_size as u64 == 0))
    }

    /// Begins a read transaction under the gate. When another process has grown the map
    /// past ours (`MDB_MAP_RESIZED`), adopts its size and tries again.
    fn read_txn(&self) -> Result<ReadTxn<'_>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let guard = self.read_gate();
            match self.env.read_txn() {
                Ok(txn) => return Ok(ReadTxn { txn, _guard: guard }),
                Err(heed::Error::Mdb(MdbError::MapResized)) if attempt < MAX_WRITE_ATTEMPTS => {
                    drop(guard);
                    self.adopt_map_size()?;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Takes the map size another process set (LMDB reads it from the file's meta page).
    fn adopt_map_size(&self) -> Result<()> {
        let g = self.write_gate();
        self.locator.invalidate();
        os::resize_env(&self.env, &g, 0)?;
        Ok(())
    }

    fn read_gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_gate(&self) -> RwLockWriteGuard<'_, ()> {
        self.gate.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` in a write transaction and commits it, growing the map and retrying when
    /// LMDB runs out of room. `needed` is an estimate of the bytes the transaction adds.
    fn write<R>(&self, needed: u64, mut f: impl FnMut(&mut RwTxn<'_>) -> Result<R>) -> Result<R> {
        let mut attempt = 0;
        loop {
            if let Some(cause) = self.poisoned.get() {
                return Err(Error::Poisoned(Arc::clone(cause)));
            }
            attempt += 1;
            self.grow(needed, false)?;
            let outcome = {
                let _g = self.read_gate();
                match self.env.write_txn() {
                    Err(e) => Err(Error::Lmdb(e)),
                    Ok(mut txn) => match f(&mut txn) {
                        Err(e) => Err(e),
                        Ok(r) => match txn.commit() {
                            Ok(()) => {
                                self.commits.fetch_add(1, Ordering::Relaxed);
                                Ok(r)
                            }
                            Err(heed::Error::Io(e)) => {
                                // A failed commit (write or fsync) is not retried: the
                                // kernel may have dropped the dirty pages already.
                                let _ = self
                                    .poisoned
                                    .set(Arc::new(std::io::Error::new(e.kind(), e.to_string())));
                                Err(Error::Io(e))
                            }
                            Err(e) => Err(Error::Lmdb(e)),
                        },
                    },
                }
            };
            match outcome {
                Err(Error::Lmdb(heed::Error::Mdb(MdbError::MapFull)))
                    if attempt < MAX_WRITE_ATTEMPTS =>
                {
                    self.grow(needed, true)?;
                }
                Err(Error::Lmdb(heed::Error::Mdb(MdbError::MapResized)))
                    if attempt < MAX_WRITE_ATTEMPTS =>
                {
                    // Another process grew the map: adopt its size.
                    self.adopt_map_size()?;
                }
                other => return other,
            }
        }
    }

    /// Grows the map when it lacks `needed` bytes beyond the last used page (or always,
    /// with `force`, after LMDB reported MDB_MAP_FULL), by doubling or to fit `needed`.
    fn grow(&self, needed: u64, force: bool) -> Result<()> {
        let room = |info: &heed::EnvInfo| {
            let used = (info.last_page_number as u64 + 1) * self.page_size as u64;
            (used, info.map_size as u64)
        };
        if !force {
            let _g = self.read_gate();
            let (used, map) = room(&self.env.info());
            if used.saturating_add(needed) <= map {
                return Ok(());
            }
        }
        let g = self.write_gate();
        let (used, map) = room(&self.env.info());
        if !force && used.saturating_add(needed) <= map {
            return Ok(()); // another thread grew it meanwhile
        }
        let max = self.options.max_map_size;
        let want = map
            .saturating_mul(2)
            .max(used.saturating_add(needed.saturating_mul(2)))
            .next_multiple_of(self.page_size as u64);
        let target = if want <= max {
            want
        } else if used.saturating_add(needed) <= max && map < max {
            max / self.page_size as u64 * self.page_size as u64
        } else {
            return Err(Error::StoreFull {
                map_size: map,
                max_map_size: max,
            });
        };
        let target = usize::try_from(target).map_err(|_| Error::StoreFull {
            map_size: map,
            max_map_size: max,
        })?;
        // LMDB remaps: forget where the old map was.
        self.locator.invalidate();
        os::resize_env(&self.env, &g, target)?;
        Ok(())
    }
}

fn corrupted_content(hash: &BlobHash) -> Error {
    Error::Corrupted {
        hash: *hash,
        what: "content does not match its SHA-256",
    }
}

fn check_hash(hash: &BlobHash, content: &[u8]) -> Result<()> {
    if BlobHash::of(content) == *hash {
        Ok(())
    } else {
        Err(corrupted_content(hash))
    }
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::os::unix::fs::FileExt as _;

    use super::*;
    use crate::format::check_overflow_header;

    fn rss() -> u64 {
        varve_testkit::mem::rss().total
    }

    #[test]
    fn a_store_poisoned_by_a_failed_commit_refuses_writes_with_that_failure() {
        let dir = tempfile::tempdir().unwrap();
        for group_commit in [true, false] {
            let sc = Sidecar::open(
                dir.path(),
                SidecarOptions::default().group_commit(group_commit),
            )
            .unwrap();
            let kept = sc.store(&vec![1u8; 5000]).unwrap();
            let _ = sc
                .poisoned
                .set(Arc::new(std::io::Error::other("fdatasync failed")));
            let refused = [
                sc.store(&vec![2u8; 5000]).map(|_| ()),
                sc.release(&BlobHash::of(&vec![1u8; 5000])).map(|_| ()),
            ];
            for r in refused {
                match r {
                    Err(e @ Error::Poisoned(_)) => assert_eq!(
                        std::error::Error::source(&e).unwrap().to_string(),
                        "fdatasync failed"
                    ),
                    other => panic!("{group_commit}: {other:?}"),
                }
            }
            assert_eq!(sc.read(&kept).unwrap(), vec![1u8; 5000], "reads go on");
            // Each caller of a failed group commit gets the same cause.
            match share_error(&Error::Poisoned(Arc::clone(sc.poisoned.get().unwrap()))) {
                Error::Poisoned(c) => assert_eq!(c.to_string(), "fdatasync failed"),
                other => panic!("{other:?}"),
            }
            drop(sc);
        }
    }

    #[test]
    fn mapped_fallback_reads_leave_rss_unless_keep() {
        for (policy, rss_expected_to_grow) in
            [(CachePolicy::DropBehind, false), (CachePolicy::Keep, true)]
        {
            let dir = tempfile::tempdir().unwrap();
            let opts = SidecarOptions::default().cache_policy(policy);
            let sc = Sidecar::open(dir.path(), opts).unwrap();
            let blob: Vec<u8> = (0..4096u64).flat_map(|p| [p as u8; 4096]).collect();
            let hash = BlobHash::of(&blob);
            sc.store(&blob).unwrap();
            drop(blob);
            let _g = sc.read_gate();
            let txn = sc.env.read_txn().unwrap();
            let record = sc.blobs.get(&txn, &hash.0).unwrap().unwrap();
            let head = BlobHeader::decode(&hash, record).unwrap();
            let before = rss();
            let mut sum = 0u64;
            let n = sc
                .read_mapped(&hash, &head, record, false, |c| {
                    sum += c.iter().step_by(4096).map(|&b| u64::from(b)).sum::<u64>();
                    Ok(())
                })
                .unwrap();
            assert_eq!(n, 16 << 20);
            assert_eq!(sum, (0..4096u64).map(|p| p % 256).sum::<u64>());
            let grew = rss().saturating_sub(before);
            assert_eq!(
                grew > 8 << 20,
                rss_expected_to_grow,
                "{policy:?}: RSS +{grew}"
            );
        }
    }

    /// A sink that checks every byte against `want` and runs `on_first` before its first
    /// buffer.
    struct Checking<'a, F: FnMut()> {
        want: &'a [u8],
        got: usize,
        wrong: usize,
        on_first: Option<F>,
    }

    impl<F: FnMut()> Write for Checking<'_, F> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(mut f) = self.on_first.take() {
                f();
            }
            let want = self.want.get(self.got..).unwrap_or_default();
            self.wrong += buf.iter().zip(want).filter(|(a, b)| a != b).count();
            self.wrong += buf.len().saturating_sub(want.len());
            self.got += buf.len();
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn pattern(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Writes `blobs` as format version 1 wrote them (a format record of version 1, blob
    /// records without chunk digests) into the store in `dir`.
    fn write_version_1_store(dir: &Path, blobs: &[&[u8]]) {
        let sc = Sidecar::open(dir, SidecarOptions::default()).unwrap();
        let mut txn = sc.env.write_txn().unwrap();
        let meta = sc.meta;
        let mut rec = [0u8; 16];
        rec[..8].copy_from_slice(b"VARVSIDE");
        rec[8..12].copy_from_slice(&1u32.to_le_bytes());
        let check = xxhash_rust::xxh3::xxh3_64(&rec[..12]) as u32;
        rec[12..].copy_from_slice(&check.to_le_bytes());
        meta.put(&mut txn, FORMAT_KEY, &rec).unwrap();
        for b in blobs {
            let hash = BlobHash::of(b);
            let mut record = BlobHeader::encode_v1(&hash, b.len() as u64).to_vec();
            record.extend_from_slice(b);
            sc.blobs.put(&mut txn, &hash.0, &record).unwrap();
            let r = RefRecord {
                count: 1,
                len: b.len() as u64,
            };
            sc.refs.put(&mut txn, &hash.0, &r.encode(&hash)).unwrap();
        }
        txn.commit().unwrap();
    }

    /// A version-1 blob (no chunk digests) whose content was damaged after it was
    /// written: `read` checks the whole blob against its SHA-256, as `read_to` does.
    #[test]
    fn a_damaged_version_1_blob_is_corrupted_for_read() {
        let dir = tempfile::tempdir().unwrap();
        let big = pattern((3 << 20) + 5, 2);
        write_version_1_store(dir.path(), &[&big]);
        let file = dir.path().join(BLOBS_FILE);
        let mut image = std::fs::read(&file).unwrap();
        let at = image
            .windows(64)
            .position(|w| w == &big[1 << 20..(1 << 20) + 64])
            .unwrap();
        image[at] ^= 0x01;
        std::fs::write(&file, &image).unwrap();
        let opts = SidecarOptions::default().verify_buffer(64 << 10);
        let sc = Sidecar::open(dir.path(), opts).unwrap();
        let p = Payload::BlobRef(BlobHash::of(&big));
        assert!(
            matches!(sc.read(&p), Err(Error::Corrupted { .. })),
            "damaged content read back"
        );
    }

    #[test]
    fn version_1_stores_stay_readable_and_are_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let small = pattern(100_000, 1);
        let big = pattern((3 << 20) + 5, 2);
        write_version_1_store(dir.path(), &[&small, &big]);
        let d = SidecarOptions::default().verify_buffer(64 << 10);
        for opts in [
            d.clone(),
            SidecarOptions::default(),
            SidecarOptions {
                cache_policy: CachePolicy::Direct,
                ..d.clone()
            },
            SidecarOptions {
                cache_policy: CachePolicy::Keep,
                ..d.clone()
            },
            SidecarOptions {
                verify_on_read: false,
                ..d.clone()
            },
        ] {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            for b in [&small, &big] {
                let p = Payload::BlobRef(BlobHash::of(b));
                let mut out = Vec::new();
                assert_eq!(sc.read_to(&p, &mut out).unwrap(), b.len() as u64);
                assert!(out == *b, "{opts:?}");
                assert!(sc.read(&p).unwrap() == *b, "{opts:?}");
            }
            // Opening upgraded the format record: a version-1 build now refuses the store.
            let txn = sc.read_txn().unwrap();
            let meta = sc.meta;
            let rec = meta.get(&txn, FORMAT_KEY).unwrap().unwrap();
            assert_eq!(FormatRecord::decode(rec), Ok(FORMAT_VERSION));
        }
        // A damaged version-1 header is Corrupted before any byte goes out, on every path.
        let file = dir.path().join(BLOBS_FILE);
        let image = std::fs::read(&file).unwrap();
        let at = image.windows(64).position(|w| w == &big[..64]).unwrap() - 24 + 9;
        let mut damaged = image.clone();
        damaged[at] ^= 0x01; // the length field
        std::fs::write(&file, &damaged).unwrap();
        for opts in [
            d.clone(),
            SidecarOptions {
                verify_on_read: false,
                ..d.clone()
            },
            SidecarOptions {
                cache_policy: CachePolicy::Keep,
                ..d.clone()
            },
        ] {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut out = Vec::new();
            let p = Payload::BlobRef(BlobHash::of(&big));
            assert!(
                matches!(sc.read_to(&p, &mut out), Err(Error::Corrupted { .. })),
                "{opts:?}"
            );
            assert!(out.is_empty());
            assert!(matches!(sc.read(&p), Err(Error::Corrupted { .. })));
        }
        std::fs::write(&file, &image).unwrap();
        // A new blob next to the old ones is written as version 2; both read back.
        let sc = Sidecar::open(dir.path(), d).unwrap();
        let new = pattern(5000, 3);
        let p = sc.store(&new).unwrap();
        assert!(sc.read(&p).unwrap() == new);
        let txn = sc.read_txn().unwrap();
        let rec = sc.blobs.get(&txn, &BlobHash::of(&new).0).unwrap().unwrap();
        assert_eq!(
            BlobHeader::decode(&BlobHash::of(&new), rec)
                .unwrap()
                .version,
            2
        );
        let rec = sc.blobs.get(&txn, &BlobHash::of(&big).0).unwrap().unwrap();
        assert_eq!(
            BlobHeader::decode(&BlobHash::of(&big), rec)
                .unwrap()
                .version,
            1
        );
    }

    /// A version-1 blob larger than the verify buffer is read twice; bytes that change
    /// between the passes are caught by the digests the first pass noted, before the
    /// changed chunk is written.
    #[test]
    fn version_1_blob_changed_between_passes_never_reaches_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let big = pattern((3 << 20) + 5, 4);
        write_version_1_store(dir.path(), &[&big]);
        let file = dir.path().join(BLOBS_FILE);
        let image = std::fs::read(&file).unwrap();
        let content = image.windows(64).position(|w| w == &big[..64]).unwrap() as u64;
        let target = content + (2 << 20) + 1;
        let flip = || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)
                .unwrap();
            let mut b = [0u8];
            f.read_exact_at(&mut b, target).unwrap();
            f.write_all_at(&[b[0] ^ 0x08], target).unwrap();
        };
        for policy in [CachePolicy::DropBehind, CachePolicy::Direct] {
            let sc = Sidecar::open(
                dir.path(),
                SidecarOptions::default()
                    .verify_buffer(64 << 10)
                    .cache_policy(policy)
                    .read_chunk(1 << 20),
            )
            .unwrap();
            let mut sink = Checking {
                want: &big,
                got: 0,
                wrong: 0,
                on_first: Some(flip),
            };
            let r = sc.read_to(&Payload::BlobRef(BlobHash::of(&big)), &mut sink);
            assert_eq!(
                sink.wrong, 0,
                "{policy:?}: changed bytes reached the writer"
            );
            // Chunks are 1 MiB of the file from the run's first page: the first holds the
            // two headers (40 bytes) and 1 MiB - 40 bytes of content.
            let first = (1 << 20) - 40;
            match r {
                Err(Error::CorruptedChunk { offset, len, .. }) => {
                    assert_eq!((offset, len), (first + (1 << 20), 1 << 20), "{policy:?}");
                }
                other => panic!("{policy:?}: {other:?}"),
            }
            assert_eq!(sink.got as u64, first + (1 << 20), "{policy:?}");
            flip();
        }
    }

    /// Runs `calls` on their own threads while a (pretend) commit is being led, waits
    /// until all of them are queued, then hands the lead on as a finishing leader would.
    fn queue_then_hand_off(
        sc: &Sidecar,
        calls: Vec<Vec<Vec<u8>>>,
    ) -> (u64, Vec<Result<Vec<Payload>>>) {
        sc.group_state().leading = true;
        let before = sc.commits.load(Ordering::Relaxed);
        let n = calls.len();
        let results = std::thread::scope(|scope| {
            let handles: Vec<_> = calls
                .iter()
                .map(|blobs| {
                    scope.spawn(move || {
                        let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
                        sc.store_many(&refs)
                    })
                })
                .collect();
            let mut early = false;
            while sc.group_state().queue.len() < n {
                // A call that ended without queueing (it failed or panicked) never will:
                // hand off (the others would wait for ever) and fail below.
                if handles
                    .iter()
                    .any(std::thread::ScopedJoinHandle::is_finished)
                {
                    early = true;
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            // Nothing was committed while they waited.
            let committed = sc.commits.load(Ordering::Relaxed) - before;
            sc.hand_off();
            let results = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .collect::<Vec<_>>();
            assert!(!early, "a store call ended before it queued");
            assert_eq!(committed, 0);
            results
        });
        assert!(!sc.group_state().leading);
        assert!(sc.group_state().queue.is_empty());
        (sc.commits.load(Ordering::Relaxed) - before, results)
    }

    #[test]
    fn queued_stores_share_one_commit() {
        let dir = tempfile::tempdir().unwrap();
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        let shared = pattern(3000, 9);
        let calls: Vec<Vec<Vec<u8>>> = (0..6)
            .map(|t| vec![pattern(2048 + t * 1000, t as u64 + 10), shared.clone()])
            .collect();
        let (commits, results) = queue_then_hand_off(&sc, calls.clone());
        assert_eq!(commits, 1, "six queued calls, one commit");
        for (call, r) in calls.iter().zip(results) {
            let payloads = r.unwrap();
            for (b, p) in call.iter().zip(&payloads) {
                assert_eq!(*p, Payload::BlobRef(BlobHash::of(b)));
                assert!(sc.read(p).unwrap() == *b);
            }
            assert_eq!(sc.refcount(&BlobHash::of(&call[0])).unwrap(), Some(1));
        }
        assert_eq!(sc.refcount(&BlobHash::of(&shared)).unwrap(), Some(6));
        assert_eq!(sc.blobs().unwrap().len(), 7);
    }

    #[test]
    fn a_failing_call_in_a_group_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        // A blob whose count cannot go up.
        let full = pattern(4000, 20);
        let full_hash = BlobHash::of(&full);
        sc.store(&full).unwrap();
        {
            let mut txn = sc.env.write_txn().unwrap();
            let r = RefRecord {
                count: u64::MAX,
                len: full.len() as u64,
            };
            sc.refs
                .put(&mut txn, &full_hash.0, &r.encode(&full_hash))
                .unwrap();
            txn.commit().unwrap();
        }
        let fresh = pattern(5000, 21);
        let calls = vec![
            vec![pattern(2100, 22)],
            vec![fresh.clone(), full.clone()], // fails as a whole: `fresh` is not stored
            vec![pattern(2200, 23), pattern(2300, 24)],
        ];
        let (commits, results) = queue_then_hand_off(&sc, calls.clone());
        assert_eq!(commits, 1);
        let mut results = results.into_iter();
        assert!(results.next().unwrap().is_ok());
        assert!(matches!(
            results.next().unwrap(),
            Err(Error::RefcountOverflow(h)) if h == full_hash
        ));
        assert!(results.next().unwrap().is_ok());
        assert_eq!(sc.refcount(&BlobHash::of(&fresh)).unwrap(), None);
        assert_eq!(sc.refcount(&full_hash).unwrap(), Some(u64::MAX));
        for b in calls[0].iter().chain(&calls[2]) {
            assert_eq!(sc.refcount(&BlobHash::of(b)).unwrap(), Some(1));
        }
    }

    #[test]
    fn without_group_commit_every_store_commits_alone() {
        let dir = tempfile::tempdir().unwrap();
        let opts = SidecarOptions::default().group_commit(false);
        let sc = Sidecar::open(dir.path(), opts).unwrap();
        let before = sc.commits.load(Ordering::Relaxed);
        std::thread::scope(|scope| {
            for t in 0..4u64 {
                let sc = &sc;
                scope.spawn(move || {
                    for i in 0..5 {
                        sc.store(&pattern(2048 + i, t * 100 + i as u64)).unwrap();
                    }
                });
            }
        });
        assert_eq!(sc.commits.load(Ordering::Relaxed) - before, 20);
        assert_eq!(sc.blobs().unwrap().len(), 20);
        assert!(sc.group_state().queue.is_empty());
    }

    /// Records may declare another digest chunk size than this build writes: the reader
    /// follows the record (here 8 KiB chunks, whose boundaries fall inside pages, so every
    /// chunk shares a page with the next), under every policy and read size.
    #[test]
    fn records_with_other_chunk_sizes_read_and_verify_per_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(100_000, 30);
        let (hash, prefix) = BlobHeader::encode_chunked(&data, 8192);
        assert_eq!(prefix.len(), 32 + 13 * 16);
        {
            let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
            let p = Prepared {
                hash,
                prefix,
                bytes: Cow::Borrowed(&data),
            };
            sc.commit_batches(&[&[p]]).pop().unwrap().unwrap();
        }
        let cases = |opts: &SidecarOptions| {
            [
                opts.clone(),
                SidecarOptions {
                    read_chunk: 4096,
                    ..opts.clone()
                },
                SidecarOptions {
                    read_chunk: 12288,
                    ..opts.clone()
                },
                SidecarOptions {
                    cache_policy: CachePolicy::Direct,
                    ..opts.clone()
                },
                SidecarOptions {
                    cache_policy: CachePolicy::Keep,
                    ..opts.clone()
                },
            ]
        };
        let p = Payload::BlobRef(hash);
        for opts in cases(&SidecarOptions::default()) {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut out = Vec::new();
            assert_eq!(sc.read_to(&p, &mut out).unwrap(), data.len() as u64);
            assert!(out == data, "{opts:?}");
            assert!(sc.read(&p).unwrap() == data, "{opts:?}");
        }
        // Damage in chunk 5 (content bytes 40960..49152): chunks 0..5 go out, then the error.
        let file = dir.path().join(BLOBS_FILE);
        let image = std::fs::read(&file).unwrap();
        let content = image.windows(64).position(|w| w == &data[..64]).unwrap();
        let at = (content + 45_000) as u64;
        let flip = || {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&file)
                .unwrap();
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 1], at).unwrap();
        };
        flip();
        for opts in cases(&SidecarOptions::default()) {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut sink = Checking::<fn()> {
                want: &data,
                got: 0,
                wrong: 0,
                on_first: None,
            };
            match sc.read_to(&p, &mut sink) {
                Err(Error::CorruptedChunk { offset, len, .. }) => {
                    assert_eq!((offset, len), (40_960, 8192), "{opts:?}");
                }
                other => panic!("{opts:?}: {other:?}"),
            }
            assert_eq!((sink.got, sink.wrong), (40_960, 0), "{opts:?}");
        }
        flip();
    }

    /// One pass: reading a blob reads each page of its overflow run from the file exactly
    /// once (the page two chunks share is carried over, not read again), at any read size,
    /// with and without O_DIRECT, and a table longer than a page.
    #[test]
    fn a_read_reads_each_page_of_the_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let big = pattern((3 << 20) + 5, 40);
        let many = pattern(600 * 4096 + 3, 41); // 4 KiB chunks: a 9.6 KB digest table
        let (many_hash, many_prefix) = BlobHeader::encode_chunked(&many, 4096);
        {
            let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
            sc.store(&big).unwrap();
            let p = Prepared {
                hash: many_hash,
                prefix: many_prefix,
                bytes: Cow::Borrowed(&many),
            };
            sc.commit_batches(&[&[p]]).pop().unwrap().unwrap();
        }
        for opts in [
            SidecarOptions::default(),
            SidecarOptions::default().read_chunk(12288),
            SidecarOptions::default().cache_policy(CachePolicy::Direct),
        ] {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            for b in [&big, &many] {
                let hash = BlobHash::of(b);
                let run = {
                    let txn = sc.read_txn().unwrap();
                    let record = sc.blobs.get(&txn, &hash.0).unwrap().unwrap();
                    ((LMDB_PAGE_HEADER + record.len()) as u64).next_multiple_of(sc.page_size as u64)
                };
                let before = sc.reader.bytes_read.load(Ordering::Relaxed);
                let mut out = Vec::new();
                sc.read_to(&Payload::BlobRef(hash), &mut out).unwrap();
                assert!(out == *b, "{opts:?}");
                let read = sc.reader.bytes_read.load(Ordering::Relaxed) - before;
                assert_eq!(read, run, "{opts:?}, blob of {} bytes", b.len());
            }
        }
    }

    #[test]
    fn derived_file_offsets_point_at_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        assert_eq!(sc.options().max_blob_size, 1 << 30);
        assert!(!sc.direct_io());
        let blobs: Vec<Vec<u8>> = [2048usize, 4056, 5000, 100_000, 3 << 20]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 13 + n) as u8).collect())
            .collect();
        for b in &blobs {
            sc.store(b).unwrap();
        }
        let file = File::open(sc.path()).unwrap();
        let _g = sc.read_gate();
        let txn = sc.env.read_txn().unwrap();
        let ps = sc.page_size as u64;
        for b in &blobs {
            let hash = BlobHash::of(b);
            let record = sc.blobs.get(&txn, &hash.0).unwrap().unwrap();
            let start = sc.run_start(record).unwrap().unwrap();
            assert_eq!(start % ps, 0);
            let mut header = [0u8; LMDB_PAGE_HEADER];
            file.read_exact_at(&mut header, start).unwrap();
            check_overflow_header(&header, start / ps, ps, record.len() as u64).unwrap();
            let mut on_disk = vec![0u8; record.len()];
            file.read_exact_at(&mut on_disk, start + LMDB_PAGE_HEADER as u64)
                .unwrap();
            assert!(on_disk == record, "record of {} bytes", b.len());
        }
    }

    /// The file range of blob `hash`'s overflow run (whole pages).
    fn run_of(sc: &Sidecar, hash: &BlobHash) -> (u64, u64) {
        let txn = sc.read_txn().unwrap();
        let record = sc.blobs.get(&txn, &hash.0).unwrap().unwrap();
        let start = sc.run_start(record).unwrap().unwrap();
        let len = (LMDB_PAGE_HEADER + record.len()).next_multiple_of(sc.page_size) as u64;
        (start, len)
    }

    /// Bytes of `path`'s range `start..start + len` (page aligned) in the page cache.
    fn resident(path: &Path, (start, len): (u64, u64)) -> u64 {
        use std::os::fd::AsRawFd as _;
        let f = File::open(path).unwrap();
        let ps = rustix::param::page_size();
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open file at a
        // page-aligned offset; never dereferenced (mincore only reports page-cache state)
        // and unmapped below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                start as libc::off_t,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        let mut vec = vec![0u8; (len as usize).div_ceil(ps)];
        // SAFETY: `addr..addr + len` is the mapping made above; one byte per page.
        let rc = unsafe { libc::mincore(addr, len as usize, vec.as_mut_ptr()) };
        // SAFETY: unmapping exactly the mapping made above.
        unsafe { libc::munmap(addr, len as usize) };
        assert_eq!(rc, 0);
        vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * ps as u64
    }

    /// A blob of at most `small_blob_max` bytes is written and read with no cache advice
    /// (its pages stay cached after the store, and after a read through the map); one byte
    /// more, or with the option off, the policy applies (nothing of it is cached after a
    /// read). The kernel maps the cached neighbours of a faulting page ("fault-around") and
    /// never drops mapped pages, so the blob is placed between two large blobs, away from
    /// the meta and B-tree pages LMDB maps, and read in a freshly opened store.
    #[test]
    fn small_blobs_get_no_cache_advice() {
        for policy in [CachePolicy::DropBehind, CachePolicy::Direct] {
            for (small_max, len, small) in [
                (64 << 10, 64 << 10, true),
                (64 << 10, (64 << 10) + 1, false),
                (8 << 10, 8 << 10, true),
                (8 << 10, (8 << 10) + 1, false),
                (0, 4096, false),
            ] {
                let dir = tempfile::tempdir().unwrap();
                let opts = SidecarOptions::default()
                    .cache_policy(policy)
                    .small_blob_max(small_max);
                let case = format!("{policy:?}, small_blob_max {small_max}, {len} B");
                let data = pattern(len, len as u64);
                let (hash, run) = {
                    let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
                    // Large blobs around it keep the blob away from the pages LMDB maps
                    // (meta and B-tree pages), whose neighbours the kernel maps too.
                    sc.store(&pattern(4 << 20, 1)).unwrap();
                    let Payload::BlobRef(hash) = sc.store(&data).unwrap() else {
                        panic!("a {len}-byte payload is a blob");
                    };
                    let run = run_of(&sc, &hash);
                    if small {
                        assert_eq!(resident(sc.path(), run), run.1, "{case}: after store");
                    }
                    sc.store(&pattern(4 << 20, 2)).unwrap();
                    (hash, run)
                };
                let sc = Sidecar::open(dir.path(), opts).unwrap();
                // Opening reads the file's head with read-ahead: drop what is not mapped.
                drop_file(sc.path());
                assert_eq!(resident(sc.path(), run), 0, "{case}: dropped");
                assert!(sc.read(&Payload::BlobRef(hash)).unwrap() == data, "{case}");
                let read = resident(sc.path(), run);
                assert_eq!(read, if small { run.1 } else { 0 }, "{case}: after read");
            }
        }
    }

    /// Drops the whole file from the page cache (pages mapped by LMDB stay).
    fn drop_file(path: &Path) {
        let f = File::open(path).unwrap();
        f.sync_all().unwrap();
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }

    fn hot_opts(budget: u64) -> SidecarOptions {
        SidecarOptions::default().hot_budget(budget)
    }

    /// Blobs read are kept while they fit the budget; a blob read again is marked
    /// (SIEVE's visited bit) and survives the sweep that makes room for a new one; the
    /// blob evicted leaves the page cache, the others stay whole.
    #[test]
    fn hot_blobs_stay_resident_and_evicted_ones_leave_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<Vec<u8>> = (0..3).map(|i| pattern(1 << 20, 50 + 2 * i)).collect();
        let hashes: Vec<BlobHash> = blobs.iter().map(|b| BlobHash::of(b)).collect();
        let run = {
            let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
            // The first pages after LMDB's meta pages can share a large folio with them
            // (left by the writes that created the file), which stays cached while LMDB
            // maps the meta pages: a filler blob takes that place.
            sc.store(&pattern(3 << 20, 1)).unwrap();
            for b in &blobs {
                sc.store(b).unwrap();
            }
            run_of(&sc, &hashes[0]).1
        };
        let sc = Sidecar::open(dir.path(), hot_opts(2 * run)).unwrap();
        drop_file(sc.path());
        let ranges: Vec<(u64, u64)> = hashes.iter().map(|h| run_of(&sc, h)).collect();
        let path = sc.path().to_path_buf();
        let cached = |i: usize| resident(&path, ranges[i]);
        assert_eq!((cached(0), cached(1), cached(2)), (0, 0, 0));
        let read = |i: usize| {
            let mut out = Vec::new();
            sc.read_to(&Payload::BlobRef(hashes[i]), &mut out).unwrap();
            assert!(out == blobs[i], "blob {i}");
        };
        read(0);
        assert_eq!((cached(0), sc.hot_bytes()), (run, run));
        read(1);
        assert_eq!((cached(0), cached(1), sc.hot_bytes()), (run, run, 2 * run));
        // Blob 0 is read again (a hit): visited. Blob 2 needs room: the hand passes 0
        // (clearing its bit) and evicts 1.
        read(0);
        read(2);
        assert_eq!(
            (cached(0), cached(1), cached(2), sc.hot_bytes()),
            (run, 0, run, 2 * run)
        );
        // Now 0 is not visited any more and the hand (past the newest entry) wraps to the
        // tail: blob 1 comes back in place of 0.
        read(1);
        assert_eq!(
            (cached(0), cached(1), cached(2), sc.hot_bytes()),
            (0, run, run, 2 * run)
        );
        // `read` takes the same path.
        assert!(sc.read(&Payload::BlobRef(hashes[2])).unwrap() == blobs[2]);
        assert!(sc.read(&Payload::BlobRef(hashes[0])).unwrap() == blobs[0]);
        assert_eq!((cached(0), cached(1), cached(2)), (run, 0, run));
    }

    /// A hot entry whose blob now lies elsewhere in the file (deleted and stored again by
    /// another process) is read from its new place and kept there; its old range is
    /// dropped, and the next read is a hit at the new place.
    #[test]
    fn a_hot_blob_found_at_another_place_is_kept_at_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let blob = pattern(500_000, 64);
        let hash = BlobHash::of(&blob);
        let sc = Sidecar::open(dir.path(), hot_opts(4 << 20)).unwrap();
        sc.store(&pattern(3 << 20, 1)).unwrap(); // see the first hot test
        let p = sc.store(&blob).unwrap();
        assert!(sc.read(&p).unwrap() == blob);
        let (start, len) = run_of(&sc, &hash);
        // Pretend the entry was made for a run one page further on.
        let old = start + sc.page_size as u64;
        sc.hot
            .as_ref()
            .unwrap()
            .lock()
            .unwrap()
            .get_mut(&hash)
            .unwrap()
            .run_start = old;
        // Pages of the pretended old place, cached by an ordinary read of the file.
        let f = File::open(sc.path()).unwrap();
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, old).unwrap();
        assert_eq!(
            resident(sc.path(), (start + len, sc.page_size as u64)),
            4096
        );
        assert!(sc.read(&p).unwrap() == blob);
        let entry_start = {
            let mut set = sc.hot.as_ref().unwrap().lock().unwrap();
            let e = set.get_mut(&hash).unwrap();
            (e.run_start, e.run_len, e.ready)
        };
        assert_eq!(entry_start, (start, len, true));
        assert_eq!(sc.hot_bytes(), len);
        // The page past the real run (only in the old range) was dropped.
        assert_eq!(resident(sc.path(), (start + len, sc.page_size as u64)), 0);
        let txn = sc.read_txn().unwrap();
        assert!(matches!(
            sc.hot_lookup(&txn, &hash, start, len).unwrap(),
            HotRead::Hit
        ));
    }

    /// A zero budget is the old behaviour: nothing read stays in the page cache; a blob
    /// whose run is larger than the budget is not kept either.
    #[test]
    fn zero_budget_or_a_blob_larger_than_the_budget_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let big = pattern(1 << 20, 60);
        let small = pattern(100_000, 61);
        let (hb, hs) = (BlobHash::of(&big), BlobHash::of(&small));
        let run_small = {
            let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
            sc.store(&pattern(3 << 20, 1)).unwrap(); // see the test above
            sc.store(&big).unwrap();
            sc.store(&small).unwrap();
            run_of(&sc, &hs).1
        };
        for budget in [0, run_small] {
            let sc = Sidecar::open(dir.path(), hot_opts(budget)).unwrap();
            assert_eq!(sc.hot.is_some(), budget > 0);
            drop_file(sc.path());
            for _ in 0..2 {
                assert!(sc.read(&Payload::BlobRef(hb)).unwrap() == big);
                assert_eq!(resident(sc.path(), run_of(&sc, &hb)), 0, "budget {budget}");
            }
            assert!(sc.read(&Payload::BlobRef(hs)).unwrap() == small);
            let kept = if budget > 0 { run_small } else { 0 };
            assert_eq!(
                resident(sc.path(), run_of(&sc, &hs)),
                kept,
                "budget {budget}"
            );
            assert_eq!(sc.hot_bytes(), kept);
        }
    }

    /// A hit is still verified: bytes of a hot blob changed in the file (and so in the
    /// page cache) are caught, and the blob leaves the hot set.
    #[test]
    fn a_hot_blob_changed_in_the_file_is_caught_and_leaves_the_set() {
        let dir = tempfile::tempdir().unwrap();
        let blob = pattern(600_000, 62);
        let hash = BlobHash::of(&blob);
        let sc = Sidecar::open(dir.path(), hot_opts(4 << 20)).unwrap();
        let p = sc.store(&blob).unwrap();
        assert!(sc.read(&p).unwrap() == blob); // admitted
        assert!(sc.read(&p).unwrap() == blob); // a hit, through the map
        assert!(matches!(
            sc.hot_lookup(
                &sc.read_txn().unwrap(),
                &hash,
                run_of(&sc, &hash).0,
                run_of(&sc, &hash).1
            )
            .unwrap(),
            HotRead::Hit
        ));
        let image = std::fs::read(sc.path()).unwrap();
        let at = image.windows(64).position(|w| w == &blob[..64]).unwrap() as u64 + 500_000;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(sc.path())
            .unwrap();
        let flip = || {
            let mut b = [0u8];
            f.read_exact_at(&mut b, at).unwrap();
            f.write_all_at(&[b[0] ^ 4], at).unwrap();
        };
        flip();
        let mut sink = Checking::<fn()> {
            want: &blob,
            got: 0,
            wrong: 0,
            on_first: None,
        };
        match sc.read_to(&p, &mut sink) {
            Err(Error::CorruptedChunk { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("{other:?}"),
        }
        assert_eq!((sink.got, sink.wrong), (0, 0));
        assert_eq!(sc.hot_bytes(), 0);
        flip();
        assert!(sc.read(&p).unwrap() == blob);
        assert_eq!(sc.hot_bytes(), run_of(&sc, &hash).1);
    }

    /// Releasing a hot blob takes it out of the set and its pages out of the page cache.
    #[test]
    fn releasing_a_hot_blob_drops_it() {
        let dir = tempfile::tempdir().unwrap();
        let blob = pattern(700_000, 63);
        let hash = BlobHash::of(&blob);
        let sc = Sidecar::open(dir.path(), hot_opts(4 << 20)).unwrap();
        let p = sc.store(&blob).unwrap();
        sc.store(&blob).unwrap(); // two references
        let range = run_of(&sc, &hash);
        drop_file(sc.path());
        assert!(sc.read(&p).unwrap() == blob);
        assert!(sc.read(&p).unwrap() == blob);
        assert_eq!(resident(sc.path(), range), range.1);
        assert_eq!(sc.release(&hash).unwrap(), 1);
        assert_eq!(
            (sc.hot_bytes(), resident(sc.path(), range)),
            (range.1, range.1)
        );
        assert_eq!(sc.release(&hash).unwrap(), 0);
        assert_eq!(sc.hot_bytes(), 0);
        // LMDB may reuse a few of the freed pages at once (for its free list); the rest of
        // the run left the page cache.
        let left = resident(sc.path(), range);
        assert!(
            left <= 16 * 4096,
            "{left} bytes of the released blob cached"
        );
        assert!(matches!(sc.read(&p), Err(Error::MissingBlob(_))));
    }

    /// A hot set needs the drop-behind policy: other policies are refused before anything
    /// is created.
    #[test]
    fn hot_budget_with_another_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for policy in [CachePolicy::Keep, CachePolicy::Direct] {
            let sub = dir.path().join(format!("{policy:?}"));
            let opts = SidecarOptions::default().cache_policy(policy).hot_budget(1);
            match Sidecar::open(&sub, opts) {
                Err(Error::InvalidOptions { what, .. }) => assert_eq!(what, "hot_budget"),
                other => panic!("{policy:?}: {other:?}"),
            }
            assert!(!sub.exists());
            let opts = SidecarOptions::default().cache_policy(policy);
            assert!(opts.validate().is_ok());
        }
        assert!(hot_opts(1).validate().is_ok());
    }

    /// Threads reading a working set larger than the budget: every read is right, and
    /// once they are done the page cache holds no more than the hot set, which fits the
    /// budget.
    #[test]
    fn concurrent_reads_keep_the_hot_set_within_its_budget() {
        let dir = tempfile::tempdir().unwrap();
        let blobs: Vec<Vec<u8>> = (0..8).map(|i| pattern(300_000, 70 + 2 * i)).collect();
        let sc = Sidecar::open(dir.path(), hot_opts(1 << 20)).unwrap();
        let payloads: Vec<Payload> = blobs.iter().map(|b| sc.store(b).unwrap()).collect();
        drop_file(sc.path());
        let file_len = std::fs::metadata(sc.path()).unwrap().len();
        let before = resident(sc.path(), (0, file_len));
        std::thread::scope(|scope| {
            for t in 0..4usize {
                let (sc, blobs, payloads) = (&sc, &blobs, &payloads);
                scope.spawn(move || {
                    for i in 0..24usize {
                        // Skewed: blobs 0 and 1 every other read.
                        let k = if i % 2 == 0 {
                            i / 2 % 2
                        } else {
                            (i * 7 + t) % 8
                        };
                        assert!(sc.read(&payloads[k]).unwrap() == blobs[k]);
                    }
                });
            }
        });
        let hot = sc.hot_bytes();
        assert!(hot > 0 && hot <= 1 << 20, "hot {hot}");
        let after = resident(sc.path(), (0, file_len));
        assert!(
            after <= before + hot,
            "cached {after}, before {before}, hot {hot}"
        );
    }
}
