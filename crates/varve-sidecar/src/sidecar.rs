//! `Sidecar`: the blob store (open, write path, reference counts, map growth).
//!
//! Every LMDB transaction of this process is opened under a read guard of `gate`; growing
//! the map takes the write guard, so it runs only when no transaction of this process is
//! open, as `mdb_env_set_mapsize` requires.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, MdbError, RwTxn, WithoutTls};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};
use crate::format::{
    BLOB_HEADER_LEN, BlobHeader, FORMAT_KEY, FORMAT_VERSION, FormatRecord, LMDB_PAGE_HEADER,
    RefRecord,
};
use crate::mapping::MapLocator;
use crate::options::{CachePolicy, SidecarOptions};
use crate::os;
use crate::payload::{BlobHash, Payload, routes_to_sidecar};
use crate::read::{FileReader, Located, READ_AHEAD_CHUNKS};

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

/// A blob found in a read transaction.
enum Blob<'t> {
    /// Its content in LMDB's map (header already checked).
    Mapped(&'t [u8]),
    /// Where its record lies in the file.
    File(Located),
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

/// The large-payload store: content-addressed blobs in their own LMDB environment.
///
/// `Sidecar` is `Send + Sync`: share it (e.g. in an `Arc`) between any number of reader
/// threads; writers serialize on LMDB's write lock.
pub struct Sidecar {
    env: heed::Env<WithoutTls>,
    /// Held (shared) for the life of every transaction; held exclusively to resize the map.
    gate: RwLock<()>,
    blobs: Db,
    refs: Db,
    reader: FileReader,
    locator: MapLocator,
    page_size: usize,
    options: SidecarOptions,
    poisoned: AtomicBool,
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
    /// any LMDB environment; blob contents are still checked against their SHA-256 on read.
    ///
    /// # Errors
    /// `Error::Lmdb(heed::Error::EnvAlreadyOpened)` if this process has it open already;
    /// `Error::UnknownVersion` / `Error::CorruptedMeta` for a store this build cannot read;
    /// I/O and LMDB errors.
    pub fn open(dir: impl AsRef<Path>, options: SidecarOptions) -> Result<Sidecar> {
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
                    if version != FORMAT_VERSION {
                        return Err(Error::UnknownVersion {
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
            blobs,
            refs,
            reader,
            locator,
            page_size,
            options,
            poisoned: AtomicBool::new(false),
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
        let mut blobs: Vec<(BlobHash, &[u8])> = Vec::new();
        let mut needed = WRITE_SLACK;
        for p in payloads {
            if routes_to_sidecar(p.len()) {
                let h = BlobHash::of(p);
                blobs.push((h, p));
                needed += (p.len() + BLOB_HEADER_LEN + 2 * self.page_size) as u64;
                out.push(Payload::BlobRef(h));
            } else {
                out.push(Payload::Inline(p.to_vec()));
            }
        }
        if blobs.is_empty() {
            return Ok(out);
        }
        let mut written = Vec::new();
        self.write(needed, |txn| {
            written.clear();
            for &(hash, bytes) in &blobs {
                if self.add_ref(txn, &hash, bytes)? {
                    written.push(hash);
                }
            }
            Ok(())
        })?;
        if self.options.cache_policy != CachePolicy::Keep {
            // Advice only, after a durable commit: a failure here must not make the caller
            // believe the store failed (a retry would add a second reference).
            let _ = self.drop_written(&written);
        }
        Ok(out)
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

    /// Adds one reference to `hash`, writing the blob if it is new (then returns true).
    fn add_ref(&self, txn: &mut RwTxn<'_>, hash: &BlobHash, bytes: &[u8]) -> Result<bool> {
        let len = bytes.len() as u64;
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
                let header = BlobHeader::encode(hash, len);
                // MDB_RESERVE: LMDB allocates the value's pages and we copy straight into
                // them, instead of LMDB copying from our buffer after we built a record.
                self.blobs
                    .put_reserved(txn, &hash.0, BLOB_HEADER_LEN + bytes.len(), |space| {
                        space.write_all(&header)?;
                        space.write_all(bytes)
                    })?;
                RefRecord { count: 1, len }
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
    /// With `verify_on_read` (the default) no byte of a blob reaches `out` before the
    /// blob's SHA-256 has been checked (see the crate docs for how, per blob size).
    ///
    /// The call holds an LMDB read transaction while it writes to `out`, which keeps the
    /// blob's pages from being reused and delays map growth (a writer that needs a larger
    /// map waits for it): keep `out` moving, and do not call back into this `Sidecar` from
    /// `out` (that can deadlock against a writer growing the map).
    ///
    /// # Errors
    /// `Error::MissingBlob`, `Error::Corrupted` (nothing of the blob was written to `out`
    /// when verification is on), `Error::Io` (also for failures of `out`), LMDB errors.
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
            let loc = match blob {
                Blob::Mapped(content) => {
                    return self.read_mapped(hash, content, |c| Ok(out.write_all(c)?));
                }
                Blob::File(loc) => loc,
            };
            let len = loc.record_len.saturating_sub(BLOB_HEADER_LEN as u64);
            if !verify {
                self.reader
                    .stream(hash, &loc, self.chunk(), |c| Ok(out.write_all(c)?))?;
            } else if len <= self.options.verify_buffer as u64 {
                // One pass: the whole blob into a private buffer, verified, then written.
                let mut hasher = Sha256::new();
                let whole = self
                    .reader
                    .read_whole(hash, &loc, self.chunk(), |c| hasher.update(c))?;
                if BlobHash(hasher.finalize().into()) != *hash {
                    return Err(corrupted_content(hash));
                }
                out.write_all(whole.content())?;
            } else {
                // Two passes: hash chunk by chunk, then stream chunk by chunk.
                let mut hasher = Sha256::new();
                self.reader.stream(hash, &loc, self.chunk(), |c| {
                    hasher.update(c);
                    Ok(())
                })?;
                if BlobHash(hasher.finalize().into()) != *hash {
                    return Err(corrupted_content(hash));
                }
                self.reader
                    .stream(hash, &loc, self.chunk(), |c| Ok(out.write_all(c)?))?;
            }
            Ok(len)
        })
    }

    /// Reads blob `hash` into a new vector.
    fn read_blob(&self, hash: &BlobHash) -> Result<Vec<u8>> {
        let verify = self.options.verify_on_read;
        self.with_blob(hash, |blob| {
            let mut buf = Vec::new();
            match blob {
                Blob::Mapped(content) => {
                    buf.reserve_exact(content.len());
                    self.read_mapped(hash, content, |c| {
                        buf.extend_from_slice(c);
                        Ok(())
                    })?;
                }
                Blob::File(loc) => {
                    let len = loc.record_len.saturating_sub(BLOB_HEADER_LEN as u64);
                    // The length comes from LMDB's node, not yet checked against the blob
                    // header: reserve at most 64 MiB up front, grow beyond that as it reads.
                    buf.reserve_exact(usize::try_from(len.min(64 << 20)).unwrap_or(0));
                    self.reader.stream(hash, &loc, self.chunk(), |c| {
                        buf.extend_from_slice(c);
                        Ok(())
                    })?;
                    if verify {
                        check_hash(hash, &buf)?;
                    }
                }
            }
            Ok(buf)
        })
    }

    /// Reads `content` straight from the map (policy `Keep`, or a value whose file offset
    /// could not be established): verify, then hand out.
    fn read_mapped(
        &self,
        hash: &BlobHash,
        content: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<u64> {
        // LMDB's map is MADV_RANDOM (MDB_NORDAHEAD): without explicit read-ahead every page
        // would be its own I/O. Ask for the next chunks while the current one is consumed.
        let chunk = self.chunk();
        let ahead = |i: usize| {
            let from = ((i + 1) * chunk).min(content.len());
            let to = (from + READ_AHEAD_CHUNKS as usize * chunk).min(content.len());
            os::will_need_mapped(content.get(from..to).unwrap_or_default(), self.page_size)
        };
        os::will_need_mapped(
            content.get(..chunk.min(content.len())).unwrap_or_default(),
            self.page_size,
        )?;
        if self.options.verify_on_read {
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
        if self.options.cache_policy != CachePolicy::Keep {
            os::drop_mapped(content, self.page_size)?;
        }
        Ok(content.len() as u64)
    }

    fn chunk(&self) -> usize {
        self.options
            .read_chunk
            .max(self.page_size)
            .next_multiple_of(self.page_size)
    }

    /// Runs `f` with blob `hash` inside one read transaction: located in the file (the
    /// map is not touched), or, under `Keep` or when no file offset can be found, as the
    /// content in LMDB's map after its header has been checked.
    fn with_blob<R>(&self, hash: &BlobHash, f: impl FnOnce(Blob<'_>) -> Result<R>) -> Result<R> {
        let txn = self.read_txn()?;
        let record = self
            .blobs
            .get(&txn, &hash.0)?
            .ok_or(Error::MissingBlob(*hash))?;
        if self.options.cache_policy != CachePolicy::Keep
            && let Some(run_start) = self.run_start(record)?
        {
            return f(Blob::File(Located {
                run_start,
                record_len: record.len() as u64,
            }));
        }
        BlobHeader::decode(hash, record).map_err(|what| Error::Corrupted { hash: *hash, what })?;
        f(Blob::Mapped(
            record.get(BLOB_HEADER_LEN..).unwrap_or_default(),
        ))
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
            if self.poisoned.load(Ordering::Acquire) {
                return Err(Error::Poisoned);
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
                            Ok(()) => Ok(r),
                            Err(heed::Error::Io(e)) => {
                                // A failed commit (write or fsync) is not retried: the
                                // kernel may have dropped the dirty pages already.
                                self.poisoned.store(true, Ordering::Release);
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
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        pages * rustix::param::page_size() as u64
    }

    #[test]
    fn mapped_fallback_reads_leave_rss_unless_keep() {
        for (policy, rss_expected_to_grow) in
            [(CachePolicy::DropBehind, false), (CachePolicy::Keep, true)]
        {
            let dir = tempfile::tempdir().unwrap();
            let opts = SidecarOptions {
                cache_policy: policy,
                ..SidecarOptions::default()
            };
            let sc = Sidecar::open(dir.path(), opts).unwrap();
            let blob: Vec<u8> = (0..4096u64).flat_map(|p| [p as u8; 4096]).collect();
            let hash = BlobHash::of(&blob);
            sc.store(&blob).unwrap();
            drop(blob);
            let _g = sc.read_gate();
            let txn = sc.env.read_txn().unwrap();
            let record = sc.blobs.get(&txn, &hash.0).unwrap().unwrap();
            let content = &record[BLOB_HEADER_LEN..];
            let before = rss();
            let mut sum = 0u64;
            let n = sc
                .read_mapped(&hash, content, |c| {
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
}
