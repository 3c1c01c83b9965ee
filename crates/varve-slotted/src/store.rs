//! The store: options, the write path, the read path, flush, compaction and open/recovery.
//!
//! Locking: `writer` (a mutex) serializes every mutation; `shared` (a read-write lock)
//! guards what readers see: the id -> pointer table, the page mappings and the
//! dictionaries. Lock order is always `writer` then `shared`. The writer writes value
//! bytes into space no published pointer reaches without holding `shared` at all, and takes
//! the `shared` write lock only to publish a pointer, to overwrite a value in place, or to
//! add/remove a page mapping. See the crate docs for the durability protocol.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::dict;
use crate::error::{Error, Result};
use crate::format::{
    CODEC_LZ4, CODEC_LZ4_DICT, CODEC_RAW, FLAG_TOMBSTONE, MIN_CONTAINER, PAGE_HEADER_LEN,
    PageHeader, PageSummary, SLOT_LEN, Slot, SlotEntry, container_len, decode_ptr, encode_ptr,
    slot_offset, value_sum,
};
use crate::mmap::{BLOCK, Map};
use crate::page::{LiveSlot, PageAlloc, Pages, SlotState};
use crate::ptrs::PtrTable;
use crate::ranges::RangeSet;
use crate::tracker::Tracker;

/// Default minimum page size: 32 MiB.
pub const DEFAULT_PAGE_SIZE: u64 = 32 * 1024 * 1024;
/// Smallest allowed `min_page_size`.
pub const MIN_PAGE_SIZE: u64 = 16 * 1024;
/// Largest allowed page (and so the bound on `max_value_size`): 1 GiB.
pub const MAX_PAGE_SIZE: u64 = 1 << 30;
/// File system block granularity pages are sized in.
const PAGE_ALIGN: u64 = 4096;
/// Name of the tracker file.
pub(crate) const TRACKER_FILE: &str = "tracker.vvt";
/// Name of the lock file.
const LOCK_FILE: &str = "LOCK";
/// Alignment down to which free space below a new container is reserved along with it
/// (see `Store::allocate`).
const RESERVE_AHEAD: u32 = 64 * 1024;
/// Largest allowed `max_id`: the tracker file holds 16 bytes per id below the largest
/// one (sparse, but its apparent size must stay within what file systems allow).
const MAX_ID_LIMIT: u64 = (1 << 39) - 1;

/// How values are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Store every value as given (every read is zero-copy).
    None,
    /// lz4 block format (with the newest trained dictionary, if any); a value whose
    /// compressed container would not be smaller than its raw one is stored raw.
    Lz4,
}

/// A test hook called at named points of the write path (see `Options::crash_hook`).
pub type CrashHook = Arc<dyn Fn(&'static str) + Send + Sync>;

/// How to open or create a store.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// Minimum size of a page file in bytes (a multiple of 4096, 16 KiB..=1 GiB). A value
    /// too large for one gets a page of its own, rounded up to 4096. Default 32 MiB.
    pub min_page_size: u64,
    /// Compression of values. Default [`Compression::Lz4`].
    pub compression: Compression,
    /// Largest id accepted, at most 2^39 - 1 (the sparse tracker file then spans 8 TiB,
    /// within ext4's file size limit). Ids index a sparse table: memory and disk
    /// grow with the ids in use (4096 neighbouring ids share a 32 KiB block of memory and
    /// 256 share a 4 KiB block of the tracker file), not with the largest id, so a single
    /// large id is cheap, but dense ids are the cheapest. Default `u32::MAX`.
    pub max_id: u64,
    /// Largest value accepted, in bytes (at most 1 GiB minus a page header and slot).
    /// Default 64 MiB.
    pub max_value_size: u32,
    /// Fraction of a page's bytes that may be fragmented free space (free bytes outside its
    /// largest free extent) before writes start moving its live values out to other pages
    /// (compact on write). Default 0.3.
    pub compact_threshold: f64,
    /// Container bytes moved by compaction per write (bounds how long compaction holds up
    /// the writer). Default 256 KiB.
    pub compact_step_bytes: u32,
    /// Empty pages kept for reuse after compaction; further empty pages are deleted.
    /// Default 1.
    pub keep_empty_pages: u32,
    /// Container bytes of replaced, deleted or moved values (retired: their space may be
    /// reused only once a flush has made the new pointers durable) after which a write
    /// flushes by itself. This bounds how much a long run of updates without
    /// [`Store::flush`] grows the files: without it, every old version keeps its space
    /// until the caller flushes. The write that triggers the flush pays for it; if that
    /// flush fails, the write returns the error and the store is poisoned. 0 turns it off.
    /// Default 8 MiB.
    pub flush_after_retired_bytes: u64,
    /// Smallest run of whole free file blocks a flush gives back to the file system (hole
    /// punching). Each punched run is a file-system transaction, and a punched range must
    /// be reserved again before it is reused, so small runs are left allocated: the space
    /// stays in the page for reuse and is still reclaimed by compaction. 0 (or 4096)
    /// punches every whole free block.
    /// Default 64 KiB.
    pub punch_min_bytes: u64,
    /// Test hook: called with a point name during writes and flushes, e.g. to panic there.
    #[doc(hidden)]
    pub crash_hook: Option<CrashHook>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            min_page_size: DEFAULT_PAGE_SIZE,
            compression: Compression::Lz4,
            max_id: u64::from(u32::MAX),
            max_value_size: 64 * 1024 * 1024,
            compact_threshold: 0.3,
            compact_step_bytes: 256 * 1024,
            keep_empty_pages: 1,
            flush_after_retired_bytes: 8 * 1024 * 1024,
            punch_min_bytes: 64 * 1024,
            crash_hook: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("min_page_size", &self.min_page_size)
            .field("compression", &self.compression)
            .field("max_id", &self.max_id)
            .field("max_value_size", &self.max_value_size)
            .field("compact_threshold", &self.compact_threshold)
            .field("compact_step_bytes", &self.compact_step_bytes)
            .field("keep_empty_pages", &self.keep_empty_pages)
            .field("flush_after_retired_bytes", &self.flush_after_retired_bytes)
            .field("punch_min_bytes", &self.punch_min_bytes)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Sets [`Options::min_page_size`].
    pub fn min_page_size(mut self, bytes: u64) -> Options {
        self.min_page_size = bytes;
        self
    }

    /// Sets [`Options::compression`].
    pub fn compression(mut self, c: Compression) -> Options {
        self.compression = c;
        self
    }

    /// Sets [`Options::max_id`].
    pub fn max_id(mut self, id: u64) -> Options {
        self.max_id = id;
        self
    }

    /// Sets [`Options::max_value_size`].
    pub fn max_value_size(mut self, bytes: u32) -> Options {
        self.max_value_size = bytes;
        self
    }

    /// Sets [`Options::compact_threshold`].
    pub fn compact_threshold(mut self, fraction: f64) -> Options {
        self.compact_threshold = fraction;
        self
    }

    /// Sets [`Options::compact_step_bytes`].
    pub fn compact_step_bytes(mut self, bytes: u32) -> Options {
        self.compact_step_bytes = bytes;
        self
    }

    /// Sets [`Options::keep_empty_pages`].
    pub fn keep_empty_pages(mut self, pages: u32) -> Options {
        self.keep_empty_pages = pages;
        self
    }

    /// Sets [`Options::punch_min_bytes`].
    pub fn punch_min_bytes(mut self, bytes: u64) -> Options {
        self.punch_min_bytes = bytes;
        self
    }

    /// Sets [`Options::flush_after_retired_bytes`] (0: never flush by itself).
    pub fn flush_after_retired_bytes(mut self, bytes: u64) -> Options {
        self.flush_after_retired_bytes = bytes;
        self
    }

    fn validate(&self) -> Result<()> {
        if self.min_page_size < MIN_PAGE_SIZE || self.min_page_size > MAX_PAGE_SIZE {
            return Err(Error::InvalidOptions(
                "min_page_size must be 16 KiB..=1 GiB",
            ));
        }
        if !self.min_page_size.is_multiple_of(PAGE_ALIGN) {
            return Err(Error::InvalidOptions(
                "min_page_size must be a multiple of 4096",
            ));
        }
        if u64::from(self.max_value_size)
            + u64::from(PAGE_HEADER_LEN + SLOT_LEN + PAGE_ALIGN as u32)
            > MAX_PAGE_SIZE
        {
            return Err(Error::InvalidOptions(
                "max_value_size must leave room in a 1 GiB page",
            ));
        }
        if !(self.compact_threshold > 0.0 && self.compact_threshold <= 1.0) {
            return Err(Error::InvalidOptions("compact_threshold must be in (0, 1]"));
        }
        if self.max_id > MAX_ID_LIMIT {
            return Err(Error::InvalidOptions("max_id must be below 2^39"));
        }
        if self.compact_step_bytes < MIN_CONTAINER {
            return Err(Error::InvalidOptions(
                "compact_step_bytes must be at least 128",
            ));
        }
        Ok(())
    }
}

/// Figures describing the store, from [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Stats {
    /// Ids that have a value.
    pub live_values: u64,
    /// Bytes of those values as given (uncompressed).
    pub live_bytes: u64,
    /// Bytes of those values as stored (after compression).
    pub stored_bytes: u64,
    /// Bytes of all the store's files (page files, tracker, dictionaries), as `ls` sees them
    /// (apparent sizes: page and tracker files are sparse).
    pub bytes_on_disk: u64,
    /// Page bytes that hold neither a live value nor one contiguous free run (old versions
    /// waiting for a flush plus fragmented free space), over all page bytes.
    pub garbage_ratio: f64,
    /// `live_bytes / stored_bytes` (1.0 when empty).
    pub compression_ratio: f64,
    /// Page files.
    pub pages: u32,
    /// Pages being drained by compaction.
    pub pages_compacting: u32,
    /// Tracker entries found unreadable on open: an entry that fails its checksum or names
    /// no page (its id reads as [`Error::CorruptedEntry`]), or one whose slot does not
    /// verify (its id reads as [`Error::Corrupted`]).
    pub corrupt_entries: u64,
    /// Page summaries found stale on open and rebuilt.
    pub summaries_rebuilt: u64,
    /// Dictionaries stored.
    pub dictionaries: u32,
    /// Values moved by compaction since open.
    pub moved_values: u64,
    /// Bytes of page ranges written back by flushes since open: the 4 KiB blocks each
    /// flush found dirtied since the previous one, not whole page files.
    pub synced_bytes: u64,
    /// Bytes of freed space given back to the file system (hole punching) since open.
    pub punched_bytes: u64,
}

/// What an explicit [`Store::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Values moved to other pages.
    pub moved_values: u64,
    /// Container bytes moved.
    pub moved_bytes: u64,
    /// Page files deleted.
    pub pages_removed: u32,
}

struct Shared {
    ptrs: PtrTable,
    maps: Vec<Option<Arc<Map>>>,
    dicts: BTreeMap<u16, Arc<[u8]>>,
}

struct Writer {
    tracker: Tracker,
    pages: Pages,
    maps: Vec<Option<Arc<Map>>>,
    dirty_ids: Vec<u64>,
    fresh: Vec<(u32, u32)>,
    pending: Vec<(u32, u32)>,
    /// Container bytes of the `pending` slots.
    retired_bytes: u64,
    /// `(page, offset, capacity)` of containers freed since the last flush: their whole
    /// free blocks are punched at its end.
    freed: Vec<(u32, u32, u32)>,
    /// Block-aligned byte ranges of each page written since the last flush.
    dirty: BTreeMap<u32, RangeSet>,
    summary_dirty: BTreeSet<u32>,
    compacting: BTreeSet<u32>,
    compact_cursor: BTreeMap<u32, u32>,
    active_dict: Option<(u16, Arc<[u8]>)>,
    poisoned: bool,
    corrupt_entries: u64,
    summaries_rebuilt: u64,
    dict_bytes: u64,
    moved_values: u64,
    synced_bytes: u64,
    punched_bytes: u64,
}

/// A memory-mapped slotted-page store of values keyed by dense `u64` ids.
///
/// One writer at a time (writes serialize on an internal mutex), any number of concurrent
/// readers; a reader never sees a torn value. See the crate docs for the durability
/// protocol: a value is durable once a [`Store::flush`] that started after its `put`
/// returns.
pub struct Store {
    dir: PathBuf,
    opts: Options,
    shared: RwLock<Shared>,
    writer: Mutex<Writer>,
    _lock: File,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

pub(crate) fn page_file_name(page: u32) -> String {
    format!("page-{page:08}.vvp")
}

fn parse_page_name(name: &str) -> Option<u32> {
    name.strip_prefix("page-")?
        .strip_suffix(".vvp")?
        .parse()
        .ok()
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn corrupted(page: u32, slot: u32, what: &'static str) -> Error {
    Error::Corrupted { page, slot, what }
}

/// The page and slot `id` points to, `None` when it has no value, or
/// [`Error::CorruptedEntry`] when its tracker entry was found corrupt on open.
fn pointer_of(sh: &Shared, id: u64) -> Result<Option<(u32, u32)>> {
    match sh.ptrs.get(id) {
        0 => Ok(None),
        p => decode_ptr(p).map(Some).ok_or(Error::CorruptedEntry { id }),
    }
}

/// A value encoded for storage.
struct Encoded<'a> {
    bytes: Cow<'a, [u8]>,
    codec: u8,
    dict_id: u16,
}

fn encode<'a>(value: &'a [u8], c: Compression, dict: Option<&(u16, Arc<[u8]>)>) -> Encoded<'a> {
    let raw = Encoded {
        bytes: Cow::Borrowed(value),
        codec: CODEC_RAW,
        dict_id: 0,
    };
    if c == Compression::None {
        return raw;
    }
    let (bytes, codec, dict_id) = match dict {
        Some((id, d)) => (
            lz4_flex::block::compress_with_dict(value, d),
            CODEC_LZ4_DICT,
            *id,
        ),
        None => (lz4_flex::block::compress(value), CODEC_LZ4, 0),
    };
    // Compression pays only when it makes the container smaller.
    if container_len(bytes.len() as u32) < container_len(value.len() as u32) {
        Encoded {
            bytes: Cow::Owned(bytes),
            codec,
            dict_id,
        }
    } else {
        raw
    }
}

/// Reads and verifies the slot `(page, slot)` that `id` points to; returns the slot and its
/// stored bytes.
fn locate(sh: &Shared, id: u64, page: u32, slot: u32) -> Result<(Slot, &[u8])> {
    let map = sh
        .maps
        .get(page as usize)
        .and_then(Option::as_ref)
        .ok_or_else(|| corrupted(page, slot, "pointer to a missing page"))?;
    // SAFETY: the caller holds the read lock and `(page, slot)` is the published pointer
    // of `id`: the writer writes a published slot entry only under the write lock.
    let entry = unsafe { map.read(slot_offset(slot), SLOT_LEN as usize) }
        .ok_or_else(|| corrupted(page, slot, "pointer past the end of the page"))?;
    let entry: SlotEntry = bytemuck::pod_read_unaligned(entry);
    let s = entry
        .decode(page, slot)
        .ok_or_else(|| corrupted(page, slot, "slot entry checksum mismatch"))?;
    if s.id != id {
        return Err(corrupted(page, slot, "slot belongs to another id"));
    }
    if s.flags & FLAG_TOMBSTONE != 0 {
        return Err(corrupted(page, slot, "pointer to a tombstone"));
    }
    if s.stored_len > s.capacity {
        return Err(corrupted(page, slot, "stored length past its container"));
    }
    // SAFETY: the container is named by the verified entry of a published pointer; the
    // caller holds the read lock, and the writer overwrites a published container only
    // under the write lock.
    let stored = unsafe { map.read(u64::from(s.offset), s.stored_len as usize) }
        .ok_or_else(|| corrupted(page, slot, "value past the end of the page"))?;
    if value_sum(stored) != s.value_sum {
        return Err(corrupted(page, slot, "value checksum mismatch"));
    }
    Ok((s, stored))
}

/// Decodes stored bytes into the value.
fn decode(sh: &Shared, page: u32, slot: u32, s: &Slot, stored: &[u8]) -> Result<Vec<u8>> {
    let mut out = vec![0u8; s.raw_len as usize];
    let n = match s.codec {
        CODEC_RAW if s.raw_len == s.stored_len => {
            out.copy_from_slice(stored);
            stored.len()
        }
        CODEC_LZ4 => lz4_flex::block::decompress_into(stored, &mut out)
            .map_err(|_| corrupted(page, slot, "lz4 data does not decode"))?,
        CODEC_LZ4_DICT => {
            let d = sh
                .dicts
                .get(&s.dict_id)
                .ok_or_else(|| corrupted(page, slot, "value needs a missing dictionary"))?;
            lz4_flex::block::decompress_into_with_dict(stored, &mut out, d)
                .map_err(|_| corrupted(page, slot, "lz4 data does not decode"))?
        }
        _ => return Err(corrupted(page, slot, "unknown codec or bad raw length")),
    };
    if n != out.len() {
        return Err(corrupted(
            page,
            slot,
            "decoded length differs from the slot's",
        ));
    }
    Ok(out)
}

impl Store {
    /// Creates a new store in `dir` (created if missing; it must not hold a store yet).
    ///
    /// # Safety (mapped files)
    /// The store maps its files into memory. It takes an exclusive lock on the directory so
    /// no other `Store` modifies them; other programs that truncate or write the files while
    /// the store is open break its guarantees (a truncated mapping faults with SIGBUS).
    pub fn create(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)?;
        if dir.join(TRACKER_FILE).exists() {
            return Err(Error::AlreadyExists(dir.to_path_buf()));
        }
        let lock = lock_dir(dir)?;
        Tracker::create(&dir.join(TRACKER_FILE))?;
        sync_dir(dir)?;
        Store::open_locked(dir, opts, lock)
    }

    /// Opens the store in `dir`, running the same recovery after a clean close and after a
    /// crash: derived metadata (free space, counters, page summaries) is rebuilt from the
    /// tracker and the slot entries it points to. See [`Store::create`] about mapped files.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        opts.validate()?;
        let dir = dir.as_ref();
        if !dir.join(TRACKER_FILE).exists() {
            return Err(Error::NotFound(dir.to_path_buf()));
        }
        let lock = lock_dir(dir)?;
        Store::open_locked(dir, opts, lock)
    }

    /// Opens the store in `dir`, creating it when there is none.
    pub fn open_or_create(dir: impl AsRef<Path>, opts: Options) -> Result<Store> {
        if dir.as_ref().join(TRACKER_FILE).exists() {
            Store::open(dir, opts)
        } else {
            Store::create(dir, opts)
        }
    }

    fn open_locked(dir: &Path, opts: Options, lock: File) -> Result<Store> {
        // Leftovers of a page, tracker or dictionary creation cut short by a crash.
        let mut page_files = Vec::new();
        let mut dict_files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
            } else if let Some(page) = parse_page_name(name) {
                page_files.push((page, entry.path()));
            } else if let Some(id) = dict::parse_name(name) {
                dict_files.push((id, entry.path()));
            }
        }
        let (tracker, ptrs) = Tracker::open(&dir.join(TRACKER_FILE))?;

        let mut dicts = BTreeMap::new();
        let mut dict_bytes = 0;
        for (id, path) in dict_files {
            let d = dict::read(&path, id)?;
            dict_bytes += (d.len() + crate::format::DICT_HEADER_LEN) as u64;
            dicts.insert(id, Arc::<[u8]>::from(d));
        }
        let active_dict = dicts.iter().next_back().map(|(&id, d)| (id, Arc::clone(d)));

        let mut maps: Vec<Option<Arc<Map>>> = Vec::new();
        for (page, path) in page_files {
            let map = open_page(&path, page)?;
            let i = page as usize;
            if maps.len() <= i {
                maps.resize_with(i + 1, || None);
            }
            maps[i] = Some(Arc::new(map));
        }

        let mut w = Writer {
            tracker,
            pages: Pages::default(),
            maps: maps.clone(),
            dirty_ids: Vec::new(),
            fresh: Vec::new(),
            pending: Vec::new(),
            retired_bytes: 0,
            freed: Vec::new(),
            dirty: BTreeMap::new(),
            summary_dirty: BTreeSet::new(),
            compacting: BTreeSet::new(),
            compact_cursor: BTreeMap::new(),
            active_dict,
            poisoned: false,
            corrupt_entries: 0,
            summaries_rebuilt: 0,
            dict_bytes,
            moved_values: 0,
            synced_bytes: 0,
            punched_bytes: 0,
        };
        rebuild(&mut w, &ptrs)?;
        let store = Store {
            dir: dir.to_path_buf(),
            opts,
            shared: RwLock::new(Shared { ptrs, maps, dicts }),
            writer: Mutex::new(w),
            _lock: lock,
        };
        Ok(store)
    }

    fn read_shared(&self) -> Result<RwLockReadGuard<'_, Shared>> {
        self.shared.read().map_err(|_| Error::Poisoned)
    }

    fn write_shared(&self) -> Result<RwLockWriteGuard<'_, Shared>> {
        self.shared.write().map_err(|_| Error::Poisoned)
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock().map_err(|_| Error::Poisoned)?;
        if w.poisoned {
            return Err(Error::Poisoned);
        }
        Ok(w)
    }

    fn hook(&self, point: &'static str) {
        if let Some(h) = &self.opts.crash_hook {
            h(point);
        }
    }

    fn check_id(&self, id: u64) -> Result<()> {
        if id > self.opts.max_id {
            return Err(Error::IdTooLarge {
                id,
                max: self.opts.max_id,
            });
        }
        Ok(())
    }

    /// The raw in-memory pointer of `id` (0: none; see [`crate::ptrs::CORRUPT`]).
    fn raw_ptr(&self, id: u64) -> Result<u64> {
        Ok(self.read_shared()?.ptrs.get(id))
    }

    /// Stores `value` under `id`; returns true when it replaced a value.
    ///
    /// The value is durable after the next [`Store::flush`]. Errors: [`Error::IdTooLarge`],
    /// [`Error::ValueTooLarge`] (nothing is changed), I/O errors, [`Error::Poisoned`].
    pub fn put(&self, id: u64, value: &[u8]) -> Result<bool> {
        self.check_id(id)?;
        if value.len() > self.opts.max_value_size as usize {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: self.opts.max_value_size,
            });
        }
        let mut w = self.lock_writer()?;
        // The tracker entry is written by the next flush: its block is reserved now, so a
        // full disk fails this put rather than the flush.
        w.tracker.reserve(id)?;
        let enc = encode(value, self.opts.compression, w.active_dict.as_ref());
        let stored_len = enc.bytes.len() as u32;
        let cap = container_len(stored_len);
        let slot = Slot {
            id,
            offset: 0,
            capacity: cap,
            stored_len,
            raw_len: value.len() as u32,
            codec: enc.codec,
            flags: 0,
            dict_id: enc.dict_id,
            value_sum: value_sum(&enc.bytes),
        };
        let old_raw = self.raw_ptr(id)?;
        let old = decode_ptr(old_raw);
        if let Some((op, os)) = old
            && let Some(SlotState::Live(l)) = w.pages.get(op).and_then(|p| p.slot(os)).copied()
            && l.fresh
            && cap <= l.capacity
        {
            // In place: no durable pointer reaches this slot (it was written after the last
            // flush), so overwriting it cannot lose a durable value. Readers may be reading it:
            // hold the shared write lock for the copy.
            let slot = Slot {
                offset: l.offset,
                ..slot
            };
            let map = w.map(op)?;
            {
                let _g = self.write_shared()?;
                // SAFETY: (both writes) the shared write lock is held, so no reader holds a
                // slice of this published container or slot entry.
                unsafe {
                    self.write_value(&map, l.offset, &enc.bytes)?;
                    map.write(
                        slot_offset(os),
                        bytemuck::bytes_of(&SlotEntry::encode(&slot, op, os)),
                    )?;
                }
            }
            w.pages
                .with(op, |p| p.update_in_place(os, stored_len, slot.raw_len, cap));
            w.mark_dirty(op, u64::from(l.offset), u64::from(stored_len));
            w.mark_dirty(op, slot_offset(os), u64::from(SLOT_LEN));
            w.after_change(op, &self.opts);
            self.compact_step(&mut w)?;
            return Ok(true);
        }
        let (page, s, offset) = self.allocate(&mut w, cap)?;
        let slot = Slot { offset, ..slot };
        let map = w.map(page)?;
        // SAFETY: (both writes) `allocate` just took this container and slot from free
        // space; no published pointer reaches them, so no reader holds a slice of them.
        unsafe {
            self.write_value(&map, offset, &enc.bytes)?;
            map.write(
                slot_offset(s),
                bytemuck::bytes_of(&SlotEntry::encode(&slot, page, s)),
            )?;
        }
        self.install(&mut w, page, s, &slot)?;
        if let Some((op, os)) = old {
            w.drop_old(op, os, &self.opts)?;
        }
        self.compact_step(&mut w)?;
        self.flush_if_retired(&mut w)?;
        Ok(old_raw != 0)
    }

    /// Copies stored bytes into a container: all but the last byte, a hook (so tests can
    /// stop a write in its middle), then the last byte.
    ///
    /// # Safety
    /// As for [`Map::write`]: no reader holds a slice of the container.
    unsafe fn write_value(&self, map: &Map, offset: u32, bytes: &[u8]) -> Result<()> {
        let Some((last, rest)) = bytes.split_last() else {
            return Ok(());
        };
        // SAFETY: the caller guarantees that no reader holds a slice of the container.
        unsafe { map.write(u64::from(offset), rest) }?;
        self.hook("value-half-written");
        // SAFETY: as above.
        unsafe { map.write(u64::from(offset) + rest.len() as u64, &[*last]) }?;
        Ok(())
    }

    /// Records a freshly written slot as live and publishes the pointer of `id` to it.
    fn install(&self, w: &mut Writer, page: u32, s: u32, slot: &Slot) -> Result<()> {
        w.pages.with(page, |p| {
            p.set_live(
                s,
                LiveSlot {
                    id: slot.id,
                    offset: slot.offset,
                    capacity: slot.capacity,
                    stored_len: slot.stored_len,
                    raw_len: slot.raw_len,
                    fresh: true,
                },
            );
        });
        w.fresh.push((page, s));
        w.mark_dirty(page, u64::from(slot.offset), u64::from(slot.stored_len));
        w.mark_dirty(page, slot_offset(s), u64::from(SLOT_LEN));
        w.summary_dirty.insert(page);
        {
            self.write_shared()?.ptrs.set(slot.id, encode_ptr(page, s));
        }
        w.dirty_ids.push(slot.id);
        Ok(())
    }

    /// Finds room for a container of `cap` bytes (best fit, else a new page).
    fn allocate(&self, w: &mut Writer, cap: u32) -> Result<(u32, u32, u32)> {
        let page = match w.pages.best_fit(cap, &w.compacting) {
            Some(p) => p,
            None => self.new_page(w, cap)?,
        };
        let (slot, offset) = w
            .pages
            .with(page, |p| p.place(cap))
            .flatten()
            .ok_or(Error::InvalidOptions("page cannot hold the value"))?;
        // Reserve the blocks before anything is written through the map (a full disk is an
        // error here, not a SIGBUS later); on failure the placement is undone. Containers
        // are cut from the high end of a free extent, so the next ones from this extent go
        // right below this one: the reservation reaches down to the RESERVE_AHEAD boundary
        // below the container (within the free extent), so one call serves many values.
        let map = w.map(page)?;
        let from = offset
            .checked_sub(1)
            .and_then(|below| w.pages.get(page)?.free_extent_at(below))
            .map_or(offset, |(o, _)| {
                o.max(offset / RESERVE_AHEAD * RESERVE_AHEAD)
            });
        let reserved = map
            .reserve(u64::from(from), u64::from(offset + cap - from))
            .and_then(|()| map.reserve(slot_offset(slot), u64::from(SLOT_LEN)));
        if let Err(e) = reserved {
            w.pages.with(page, |p| p.unplace(slot, offset, cap));
            return Err(e.into());
        }
        Ok((page, slot, offset))
    }

    /// Creates, syncs and maps a new page big enough for a container of `cap` bytes.
    fn new_page(&self, w: &mut Writer, cap: u32) -> Result<u32> {
        let need = u64::from(PAGE_HEADER_LEN + SLOT_LEN) + u64::from(cap);
        let size = self
            .opts
            .min_page_size
            .max(need.div_ceil(PAGE_ALIGN) * PAGE_ALIGN);
        let page = w.pages.next_free_number();
        let path = self.dir.join(page_file_name(page));
        let tmp = path.with_extension("tmp");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_len(size)?;
        f.write_all_at(bytemuck::bytes_of(&PageHeader::new(page, size)), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let map = Arc::new(Map::new(&f, size)?);
        set_map(&mut w.maps, page, Some(Arc::clone(&map)));
        set_map(&mut self.write_shared()?.maps, page, Some(map));
        w.pages.insert(page, PageAlloc::new(size as u32));
        Ok(page)
    }

    /// Moves up to `compact_step_bytes` of live values out of pages being compacted.
    fn compact_step(&self, w: &mut Writer) -> Result<(u64, u64)> {
        let (mut values, mut bytes) = (0u64, 0u64);
        while bytes < u64::from(self.opts.compact_step_bytes) {
            let Some((page, s, l)) = w.next_to_move() else {
                break;
            };
            self.move_value(w, page, s, &l)?;
            w.moved_values += 1;
            values += 1;
            bytes += u64::from(l.capacity);
        }
        Ok((values, bytes))
    }

    /// Copies the live value in `(page, s)` to another page and repoints its id.
    fn move_value(&self, w: &mut Writer, page: u32, s: u32, l: &LiveSlot) -> Result<()> {
        let src = w.map(page)?;
        // SAFETY: only the writer (this thread, holding the writer lock) writes slot entries
        // and containers; readers only read, so nothing writes this range meanwhile.
        let entry = unsafe { src.read(slot_offset(s), SLOT_LEN as usize) }
            .ok_or_else(|| corrupted(page, s, "pointer past the end of the page"))?;
        let entry: SlotEntry = bytemuck::pod_read_unaligned(entry);
        let Some(old) = entry.decode(page, s).filter(|e| e.id == l.id) else {
            return Err(corrupted(page, s, "slot entry checksum mismatch"));
        };
        // SAFETY: as above; the writes below go to a container `allocate` took from free
        // space, never to this live one.
        let bytes = unsafe { src.read(u64::from(l.offset), l.stored_len as usize) }
            .ok_or_else(|| corrupted(page, s, "value past the end of the page"))?;
        let (np, ns, noff) = self.allocate(w, l.capacity)?;
        let slot = Slot {
            offset: noff,
            ..old
        };
        let dst = w.map(np)?;
        // SAFETY: (both writes) `allocate` took this container and slot from free space on
        // another page (pages being compacted receive nothing); no published pointer
        // reaches them.
        unsafe {
            dst.write(u64::from(noff), bytes)?;
            dst.write(
                slot_offset(ns),
                bytemuck::bytes_of(&SlotEntry::encode(&slot, np, ns)),
            )?;
        }
        self.install(w, np, ns, &slot)?;
        w.drop_old(page, s, &self.opts)
    }

    /// Removes the value of `id`; returns the length of the removed value (as it was given
    /// to `put`), `Some(0)` for an entry found unreadable on open, `None` when there was none.
    pub fn delete(&self, id: u64) -> Result<Option<usize>> {
        self.check_id(id)?;
        let mut w = self.lock_writer()?;
        let raw = self.raw_ptr(id)?;
        if raw == 0 {
            return Ok(None);
        }
        w.tracker.reserve(id)?;
        let old = decode_ptr(raw);
        let len = match old.and_then(|(op, os)| w.pages.get(op)?.slot(os)) {
            Some(SlotState::Live(l)) => l.raw_len as usize,
            _ => 0,
        };
        self.write_shared()?.ptrs.set(id, 0);
        w.dirty_ids.push(id);
        if let Some((op, os)) = old {
            w.drop_old(op, os, &self.opts)?;
        }
        self.compact_step(&mut w)?;
        self.flush_if_retired(&mut w)?;
        Ok(Some(len))
    }

    /// The value of `id`, or `None`. A value whose bytes fail their checks is
    /// [`Error::Corrupted`] with its page and slot; an id whose tracker entry was found
    /// corrupt on open is [`Error::CorruptedEntry`].
    pub fn get(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.check_id(id)?;
        let sh = self.read_shared()?;
        let Some((page, slot)) = pointer_of(&sh, id)? else {
            return Ok(None);
        };
        let (s, stored) = locate(&sh, id, page, slot)?;
        decode(&sh, page, slot, &s, stored).map(Some)
    }

    /// Calls `f` with the value of `id` and returns its result, or `None` when there is no
    /// value. A value stored uncompressed is passed straight from the mapped page (no copy);
    /// a compressed one is decompressed first. `f` runs under the store's read lock: it
    /// must not call back into the store.
    pub fn get_with<R>(&self, id: u64, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.check_id(id)?;
        let sh = self.read_shared()?;
        let Some((page, slot)) = pointer_of(&sh, id)? else {
            return Ok(None);
        };
        let (s, stored) = locate(&sh, id, page, slot)?;
        if s.codec == CODEC_RAW && s.raw_len == s.stored_len {
            return Ok(Some(f(stored)));
        }
        let v = decode(&sh, page, slot, &s, stored)?;
        Ok(Some(f(&v)))
    }

    /// Iterates over `(id, value)` in id order. Each step reads under the read lock on its
    /// own, so writes made during the iteration may or may not be seen (each value read is
    /// whole). An id whose value or tracker entry is corrupt yields its error
    /// ([`Error::Corrupted`], [`Error::CorruptedEntry`]) and the iteration goes on.
    pub fn iter(&self) -> Iter<'_> {
        Iter {
            store: self,
            next: 0,
        }
    }

    /// Makes every write made before this call durable, then frees the space of the values
    /// they replaced. Order: the data blocks written since the last flush, then the
    /// tracker, then frees. A failure poisons the store (see [`Error::Poisoned`]).
    pub fn flush(&self) -> Result<()> {
        let mut w = self.lock_writer()?;
        self.flush_or_poison(&mut w).map(|_| ())
    }

    /// `flush_locked`, poisoning the store if it fails. Returns the pages removed.
    fn flush_or_poison(&self, w: &mut Writer) -> Result<u32> {
        let r = self.flush_locked(w);
        if r.is_err() {
            w.poisoned = true;
        }
        r
    }

    /// Flushes once the retired bytes reach [`Options::flush_after_retired_bytes`]; a
    /// failure poisons the store, as a failed [`Store::flush`] does.
    fn flush_if_retired(&self, w: &mut Writer) -> Result<()> {
        let limit = self.opts.flush_after_retired_bytes;
        if limit == 0 || w.retired_bytes < limit {
            return Ok(());
        }
        self.flush_or_poison(w).map(|_| ())
    }

    fn flush_locked(&self, w: &mut Writer) -> Result<u32> {
        // 1. Data: every value and slot entry written since the last flush. Writeback of
        // each dirtied range starts first (all pages at once), then each page waits for its
        // own and its metadata (fdatasync).
        let dirty = std::mem::take(&mut w.dirty);
        for (&page, ranges) in &dirty {
            if let Some(Some(map)) = w.maps.get(page as usize) {
                for (lo, hi) in ranges.iter() {
                    map.start_writeback(lo, hi - lo)?;
                    w.synced_bytes += hi - lo;
                }
            }
        }
        for &page in dirty.keys() {
            if let Some(Some(map)) = w.maps.get(page as usize) {
                map.sync_data()?;
            }
        }
        self.hook("data-flushed");
        // 2. Pointers: the tracker entries of every id changed since the last flush.
        let mut ids = std::mem::take(&mut w.dirty_ids);
        ids.sort_unstable();
        ids.dedup();
        {
            let sh = self.read_shared()?;
            for &id in &ids {
                w.tracker.set(id, sh.ptrs.get(id))?;
            }
        }
        w.tracker.sync()?;
        self.hook("tracker-flushed");
        // 3. The new values are durable now: they may no longer be overwritten in place.
        for (page, s) in std::mem::take(&mut w.fresh) {
            w.pages.with(page, |p| p.settle(s));
        }
        // 4. Frees: no durable pointer reaches the replaced values any more.
        for (page, s) in std::mem::take(&mut w.pending) {
            w.free_slot(page, s, &self.opts)?;
        }
        w.retired_bytes = 0;
        // 5. Derived page summaries (checked and rebuilt on open; written for the next flush).
        for page in std::mem::take(&mut w.summary_dirty) {
            w.write_summary(page)?;
        }
        // 6. Reclaim pages left empty, then give freed blocks back to the file system.
        let removed = self.reclaim(w)?;
        w.punch_freed(self.opts.punch_min_bytes);
        Ok(removed)
    }

    /// Ends the compaction of drained pages and deletes empty pages beyond
    /// `keep_empty_pages` (highest numbers first).
    fn reclaim(&self, w: &mut Writer) -> Result<u32> {
        let drained: Vec<u32> = w
            .compacting
            .iter()
            .copied()
            .filter(|&p| w.pages.get(p).is_none_or(PageAlloc::is_empty))
            .collect();
        for page in drained {
            w.compacting.remove(&page);
            w.compact_cursor.remove(&page);
        }
        let empty: Vec<u32> = w
            .pages
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut removed = 0;
        for &page in empty.iter().skip(self.opts.keep_empty_pages as usize).rev() {
            w.pages.remove(page);
            w.compacting.remove(&page);
            w.compact_cursor.remove(&page);
            w.dirty.remove(&page);
            w.summary_dirty.remove(&page);
            set_map(&mut w.maps, page, None);
            set_map(&mut self.write_shared()?.maps, page, None);
            std::fs::remove_file(self.dir.join(page_file_name(page)))?;
            sync_dir(&self.dir)?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Compacts every page holding garbage: flushes (so replaced values become free space),
    /// moves the live values of those pages to other pages in bounded steps (releasing the
    /// writer lock between steps, so other writes interleave; readers are held up only for
    /// each pointer swap), then flushes again and deletes the emptied pages.
    pub fn compact(&self) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        self.flush()?;
        let live = {
            let mut w = self.lock_writer()?;
            let targets: Vec<u32> = w
                .pages
                .iter()
                .filter(|(_, p)| p.fragmented_bytes() > 0)
                .map(|(i, _)| i)
                .collect();
            w.compacting.extend(targets);
            w.pages.iter().map(|(_, p)| u64::from(p.live)).sum::<u64>()
        };
        // Each step moves at least one value out of a page being compacted into one that
        // is not, so there are never more steps than live values.
        for _ in 0..=live {
            let mut w = self.lock_writer()?;
            let (v, b) = self.compact_step(&mut w)?;
            if v == 0 {
                break;
            }
            report.moved_values += v;
            report.moved_bytes += b;
        }
        let mut w = self.lock_writer()?;
        report.pages_removed = self.flush_or_poison(&mut w)?;
        Ok(report)
    }

    /// Trains an lz4 dictionary of at most `max_len` bytes (capped at 64 KiB) from the first
    /// `samples` live values in id order, stores it durably with a new id, and
    /// compresses every later write with it. Returns the new dictionary's id, or `None` when
    /// the samples share too little to build one (nothing changes then).
    pub fn train_dictionary(&self, samples: usize, max_len: usize) -> Result<Option<u16>> {
        let ids: Vec<u64> = {
            let sh = self.read_shared()?;
            sh.ptrs
                .iter()
                .filter(|&(_, p)| decode_ptr(p).is_some())
                .map(|(id, _)| id)
                .take(samples)
                .collect()
        };
        let mut values = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = self.get(id)? {
                values.push(v);
            }
        }
        let trained = dict::train(&values, max_len);
        if trained.is_empty() {
            return Ok(None);
        }
        let mut w = self.lock_writer()?;
        let id = {
            let sh = self.read_shared()?;
            match sh.dicts.keys().next_back() {
                Some(&last) => last.checked_add(1).ok_or(Error::TooManyDictionaries)?,
                None => 1,
            }
        };
        dict::write(&self.dir, id, &trained)?;
        sync_dir(&self.dir)?;
        w.dict_bytes += (trained.len() + crate::format::DICT_HEADER_LEN) as u64;
        let d: Arc<[u8]> = Arc::from(trained);
        self.write_shared()?.dicts.insert(id, Arc::clone(&d));
        w.active_dict = Some((id, d));
        Ok(Some(id))
    }

    /// Figures describing the store (see [`Stats`]).
    pub fn stats(&self) -> Result<Stats> {
        let w = self.lock_writer()?;
        let mut st = Stats {
            corrupt_entries: w.corrupt_entries,
            summaries_rebuilt: w.summaries_rebuilt,
            bytes_on_disk: w.tracker.file_len() + w.dict_bytes,
            pages_compacting: w.compacting.len() as u32,
            dictionaries: self.read_shared()?.dicts.len() as u32,
            moved_values: w.moved_values,
            synced_bytes: w.synced_bytes,
            punched_bytes: w.punched_bytes,
            ..Stats::default()
        };
        let mut page_bytes = 0u64;
        let mut garbage = 0u64;
        for (_, p) in w.pages.iter() {
            st.pages += 1;
            st.live_values += u64::from(p.live);
            st.live_bytes += p.live_raw;
            st.stored_bytes += p.live_stored;
            page_bytes += u64::from(p.size());
            garbage += p.garbage_bytes();
        }
        st.bytes_on_disk += page_bytes;
        st.garbage_ratio = if page_bytes == 0 {
            0.0
        } else {
            garbage as f64 / page_bytes as f64
        };
        st.compression_ratio = if st.stored_bytes == 0 {
            1.0
        } else {
            st.live_bytes as f64 / st.stored_bytes as f64
        };
        Ok(st)
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.lock()
            && !w.poisoned
        {
            // Errors cannot be returned from drop; the store is poisoned by the failure.
            let _ = self.flush_or_poison(&mut w);
        }
    }
}

fn set_map(maps: &mut Vec<Option<Arc<Map>>>, page: u32, map: Option<Arc<Map>>) {
    let i = page as usize;
    if maps.len() <= i {
        maps.resize_with(i + 1, || None);
    }
    maps[i] = map;
}

fn lock_dir(dir: &Path) -> Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_FILE))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| Error::Locked(dir.to_path_buf()))?;
    Ok(f)
}

/// Opens and checks page file `path` named as page `page`.
fn open_page(path: &Path, page: u32) -> Result<Map> {
    let bad = |what| Error::BadFile {
        path: path.to_path_buf(),
        what,
    };
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    if len < MIN_PAGE_SIZE || !len.is_multiple_of(PAGE_ALIGN) || len > MAX_PAGE_SIZE {
        return Err(bad(
            "page file size is not a whole number of 4 KiB blocks within 1 GiB",
        ));
    }
    let map = Map::new(&f, len)?;
    // SAFETY: the map was just created; nothing else has it.
    let head = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
        .ok_or_else(|| bad("page header unreadable"))?;
    let h: PageHeader = bytemuck::pod_read_unaligned(head);
    if !h.ident_ok() {
        return Err(bad("page header: wrong magic, version or checksum"));
    }
    if h.page_id() != page {
        return Err(bad("page number differs from its file name"));
    }
    if h.page_size() != len {
        return Err(bad("page file size differs from its header"));
    }
    Ok(map)
}

/// Rebuilds the writer's page state from the tracker pointers and the slot entries they
/// reach; unreadable entries are counted and reserved (their ids read as `Corrupted`).
fn rebuild(w: &mut Writer, ptrs: &PtrTable) -> Result<()> {
    let mut refs: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for (id, p) in ptrs.iter() {
        let Some((page, slot)) = decode_ptr(p) else {
            // A tracker entry that failed its checksum or names no page.
            w.corrupt_entries += 1;
            continue;
        };
        let fits = w
            .maps
            .get(page as usize)
            .and_then(Option::as_ref)
            .is_some_and(|m| slot_offset(slot) + u64::from(SLOT_LEN) <= m.len());
        if fits {
            refs.entry(page).or_default().push((slot, id));
        } else {
            w.corrupt_entries += 1;
        }
    }
    for (page, map) in w.maps.iter().enumerate() {
        let Some(map) = map else { continue };
        let page = page as u32;
        let size = map.len() as u32;
        let mine = refs.remove(&page).unwrap_or_default();
        let n = mine.iter().map(|&(s, _)| s + 1).max().unwrap_or(0);
        let dir_end = u64::from(PAGE_HEADER_LEN) + u64::from(SLOT_LEN) * u64::from(n);
        let mut states = vec![SlotState::Free; n as usize];
        // Verified owners claim their slots first; a pointer that does not verify (wrong
        // id, tombstone, bad checksum...) reserves its slot only if no owner claimed it.
        let mut bad = Vec::new();
        for (slot, id) in mine {
            // SAFETY: the store is being opened: no reader or writer exists yet.
            let ok = unsafe { map.read(slot_offset(slot), SLOT_LEN as usize) }
                .map(bytemuck::pod_read_unaligned::<SlotEntry>)
                .and_then(|e| e.decode(page, slot))
                .filter(|s| {
                    s.id == id
                        && s.flags & FLAG_TOMBSTONE == 0
                        && matches!(s.codec, CODEC_RAW | CODEC_LZ4 | CODEC_LZ4_DICT)
                        && s.capacity >= MIN_CONTAINER
                        && s.stored_len <= s.capacity
                        && u64::from(s.offset) >= dir_end
                        && u64::from(s.offset) + u64::from(s.capacity) <= u64::from(size)
                });
            match ok {
                Some(s) => {
                    states[slot as usize] = SlotState::Live(LiveSlot {
                        id,
                        offset: s.offset,
                        capacity: s.capacity,
                        stored_len: s.stored_len,
                        raw_len: s.raw_len,
                        fresh: false,
                    });
                }
                None => bad.push(slot),
            }
        }
        for slot in bad {
            w.corrupt_entries += 1;
            if states[slot as usize] == SlotState::Free {
                states[slot as usize] = SlotState::Reserved;
            }
        }
        // Overlapping containers: keep the first, reserve the others.
        let mut live: Vec<(u32, u32, u32)> = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                SlotState::Live(l) => Some((l.offset, l.capacity, i as u32)),
                _ => None,
            })
            .collect();
        live.sort_unstable();
        let mut end = 0u32;
        for (off, cap, i) in live {
            if off < end {
                states[i as usize] = SlotState::Reserved;
                w.corrupt_entries += 1;
            } else {
                end = off + cap;
            }
        }
        let alloc = PageAlloc::rebuild(size, states)
            .ok_or_else(|| corrupted(page, 0, "page layout does not rebuild"))?;
        let rebuilt = PageSummary {
            slot_count: alloc.slot_count(),
            live_slots: alloc.live,
            live_bytes: alloc.live_stored,
        };
        // SAFETY: as above.
        let head = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
            .map(bytemuck::pod_read_unaligned::<PageHeader>);
        if head.and_then(|h| h.summary()) != Some(rebuilt) {
            w.summaries_rebuilt += 1;
            w.summary_dirty.insert(page);
        }
        w.pages.insert(page, alloc);
    }
    Ok(())
}

impl Writer {
    /// The next live value to move out of a page being compacted (pages stay marked, and
    /// receive no new values, until a flush has emptied them).
    fn next_to_move(&mut self) -> Option<(u32, u32, LiveSlot)> {
        for &page in &self.compacting {
            let Some(p) = self.pages.get(page) else {
                continue;
            };
            let from = self.compact_cursor.get(&page).copied().unwrap_or(0);
            let found = p.slots().skip(from as usize).find_map(|(s, st)| match st {
                SlotState::Live(l) => Some((s, *l)),
                _ => None,
            });
            match found {
                Some((s, l)) => {
                    self.compact_cursor.insert(page, s);
                    return Some((page, s, l));
                }
                None => {
                    self.compact_cursor.insert(page, p.slot_count());
                }
            }
        }
        None
    }

    fn map(&self, page: u32) -> Result<Arc<Map>> {
        self.maps
            .get(page as usize)
            .and_then(Option::clone)
            .ok_or_else(|| corrupted(page, 0, "missing page"))
    }

    /// Notes that `offset..offset + len` of `page` was written (in whole 4 KiB blocks).
    fn mark_dirty(&mut self, page: u32, offset: u64, len: u64) {
        let start = offset / BLOCK * BLOCK;
        let end = (offset + len).div_ceil(BLOCK) * BLOCK;
        self.dirty.entry(page).or_default().insert(start, end);
    }

    /// Retires or frees the slot an id pointed to before it was repointed or deleted.
    fn drop_old(&mut self, page: u32, s: u32, opts: &Options) -> Result<()> {
        match self.pages.get(page).and_then(|p| p.slot(s)).copied() {
            Some(SlotState::Live(l)) if l.fresh => {
                // Written after the last flush: no durable pointer reaches it.
                self.free_slot(page, s, opts)?;
            }
            Some(SlotState::Live(l)) => {
                self.pages.with(page, |p| p.retire(s));
                self.pending.push((page, s));
                self.retired_bytes += u64::from(l.capacity);
                self.after_change(page, opts);
            }
            Some(SlotState::Reserved) => self.free_slot(page, s, opts)?,
            _ => {}
        }
        Ok(())
    }

    /// Marks slot `(page, s)` as a tombstone on disk and gives it back to the allocator.
    fn free_slot(&mut self, page: u32, s: u32, opts: &Options) -> Result<()> {
        let map = self.map(page)?;
        // SAFETY: only the writer (the caller) writes slot entries; the copy ends before the
        // write below.
        let entry = unsafe { map.read(slot_offset(s), SLOT_LEN as usize) }
            .map(bytemuck::pod_read_unaligned::<SlotEntry>);
        if let Some(mut slot) = entry.and_then(|e| e.decode(page, s)) {
            slot.flags |= FLAG_TOMBSTONE;
            // SAFETY: no published pointer reaches this slot any more (its id was
            // repointed or deleted, and a pending one's old pointer is no longer durable),
            // so no reader holds a slice of it.
            unsafe {
                map.write(
                    slot_offset(s),
                    bytemuck::bytes_of(&SlotEntry::encode(&slot, page, s)),
                )
            }?;
            self.mark_dirty(page, slot_offset(s), u64::from(SLOT_LEN));
        }
        let container = match self.pages.get(page).and_then(|p| p.slot(s)) {
            Some(SlotState::Live(l)) => Some((l.offset, l.capacity)),
            Some(SlotState::Pending { offset, capacity }) => Some((*offset, *capacity)),
            _ => None,
        };
        self.pages.with(page, |p| p.release(s));
        if let Some((c, cap)) = container {
            self.freed.push((page, c, cap));
        }
        self.after_change(page, opts);
        Ok(())
    }

    /// Gives the file blocks that touch a container freed since the last call and lie
    /// wholly in free space *now* back to the file system, so freed space stops costing
    /// disk. Runs of such blocks are merged per page and punched with one call each when
    /// at least `min` bytes long (see [`Options::punch_min_bytes`]); each block is punched
    /// at most once. Best effort: a file system without hole punching keeps the blocks.
    fn punch_freed(&mut self, min: u64) {
        let mut runs: Vec<(u32, u64, u64)> = Vec::new();
        for (page, c, cap) in std::mem::take(&mut self.freed) {
            // Free *now*: space freed and reused since then is not touched.
            let Some((o, len)) = self.pages.get(page).and_then(|p| p.free_extent_at(c)) else {
                continue;
            };
            let (c, cap, o, len) = (u64::from(c), u64::from(cap), u64::from(o), u64::from(len));
            let start = (c / PAGE_ALIGN * PAGE_ALIGN).max(o.div_ceil(PAGE_ALIGN) * PAGE_ALIGN);
            let end = ((c + cap).div_ceil(PAGE_ALIGN) * PAGE_ALIGN)
                .min((o + len) / PAGE_ALIGN * PAGE_ALIGN);
            if end > start {
                runs.push((page, start, end));
            }
        }
        runs.sort_unstable();
        let mut merged: Vec<(u32, u64, u64)> = Vec::with_capacity(runs.len());
        for (page, start, end) in runs {
            match merged.last_mut() {
                Some(last) if last.0 == page && start <= last.2 => last.2 = last.2.max(end),
                _ => merged.push((page, start, end)),
            }
        }
        for (page, start, end) in merged {
            if end - start < min {
                continue;
            }
            if let Ok(map) = self.map(page)
                && map.punch_hole(start, end - start).is_ok()
            {
                self.punched_bytes += end - start;
            }
        }
    }

    /// Notes a changed page: its summary is stale, and it may now need compacting.
    fn after_change(&mut self, page: u32, opts: &Options) {
        self.summary_dirty.insert(page);
        if let Some(p) = self.pages.get(page)
            && p.fragmented_bytes() as f64 > opts.compact_threshold * f64::from(p.size())
        {
            self.compacting.insert(page);
        }
    }

    fn write_summary(&mut self, page: u32) -> Result<()> {
        let Some(p) = self.pages.get(page) else {
            return Ok(());
        };
        let s = PageSummary {
            slot_count: p.slot_count(),
            live_slots: p.live,
            live_bytes: p.live_stored,
        };
        let map = self.map(page)?;
        // SAFETY: readers never read the page header; only the writer (the caller) writes
        // it, after this copy ends.
        let mut h: PageHeader = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
            .map(bytemuck::pod_read_unaligned)
            .ok_or_else(|| corrupted(page, 0, "page header unreadable"))?;
        h.set_summary(s);
        // SAFETY: as above: no reader reads the page header.
        unsafe { map.write(0, bytemuck::bytes_of(&h)) }?;
        self.mark_dirty(page, 0, u64::from(PAGE_HEADER_LEN));
        Ok(())
    }
}

/// Iterator over `(id, value)` pairs, from [`Store::iter`].
#[derive(Debug)]
pub struct Iter<'a> {
    store: &'a Store,
    next: u64,
}

impl Iterator for Iter<'_> {
    type Item = Result<(u64, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        let sh = match self.store.read_shared() {
            Ok(sh) => sh,
            Err(e) => return Some(Err(e)),
        };
        let (id, p) = sh.ptrs.next_from(self.next)?;
        // Ids stay below 2^39, so this never ends an iteration early; it cannot wrap to 0.
        self.next = id.checked_add(1)?;
        let Some((page, slot)) = decode_ptr(p) else {
            return Some(Err(Error::CorruptedEntry { id }));
        };
        Some(
            locate(&sh, id, page, slot)
                .and_then(|(s, stored)| decode(&sh, page, slot, &s, stored))
                .map(|v| (id, v)),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::mmap::FAIL_RESERVE;

    const ENOSPC: i32 = 28;

    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
    }

    fn opts() -> Options {
        Options::default()
            .min_page_size(1024 * 1024)
            .compression(Compression::None)
    }

    /// Runs `f` with every reservation that needs `fallocate` failing with `errno`.
    fn failing<R>(errno: i32, f: impl FnOnce() -> R) -> R {
        FAIL_RESERVE.with(|c| c.set(Some(errno)));
        let r = f();
        FAIL_RESERVE.with(|c| c.set(None));
        r
    }

    fn is_enospc(r: Result<impl fmt::Debug>) -> bool {
        matches!(r, Err(Error::Io(ref e)) if e.raw_os_error() == Some(ENOSPC))
    }

    /// The writer's allocation state of every page, as comparable values.
    fn layout(s: &Store) -> Vec<(u32, u32, u64, u32, u32)> {
        let w = s.writer.lock().unwrap();
        w.pages
            .iter()
            .map(|(i, p)| (i, p.slot_count(), p.free_bytes(), p.largest(), p.live))
            .collect()
    }

    #[test]
    fn a_failed_reservation_is_an_io_error_that_changes_nothing() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        for id in 0..10 {
            s.put(id, &[id as u8; 3000]).unwrap();
        }
        s.flush().unwrap();
        drop(s);
        // A reopened store knows no reservation: every write needs one.
        let s = Store::open(dir.path(), opts()).unwrap();
        // The tracker entry's block first (put and delete reserve it).
        assert!(failing(ENOSPC, || is_enospc(s.delete(4))));
        assert!(failing(ENOSPC, || is_enospc(s.put(20, &[1u8; 3000]))));
        assert_eq!(s.get(4).unwrap().unwrap(), vec![4u8; 3000]);
        // Reserves the tracker block of ids 0..256 and writes nothing to the page.
        assert_eq!(s.delete(9).unwrap(), Some(3000));
        // Then the page's blocks, after the container and slot were placed.
        let (before, stats) = (layout(&s), s.stats().unwrap());
        assert!(failing(ENOSPC, || is_enospc(s.put(20, &[1u8; 3000]))));
        assert!(failing(ENOSPC, || is_enospc(s.put(3, &[1u8; 3000]))));
        // A value too large for the page needs a new page; its reservation fails too.
        assert!(failing(ENOSPC, || is_enospc(s.put(21, &[2u8; 2_000_000]))));
        let after: Vec<_> = layout(&s).into_iter().filter(|p| p.0 == 0).collect();
        assert_eq!(after, before, "the placement was undone");
        assert_eq!(s.stats().unwrap().live_values, stats.live_values);
        assert_eq!(s.get(20).unwrap(), None);
        assert_eq!(s.get(3).unwrap().unwrap(), vec![3u8; 3000]);
        assert_eq!(s.get(4).unwrap().unwrap(), vec![4u8; 3000]);
        // Space again: the same writes succeed and everything reads back after a reopen.
        s.put(20, &[1u8; 3000]).unwrap();
        s.put(3, &[1u8; 3000]).unwrap();
        assert_eq!(s.delete(4).unwrap(), Some(3000));
        s.flush().unwrap();
        drop(s);
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(s.get(20).unwrap().unwrap(), vec![1u8; 3000]);
        assert_eq!(s.get(3).unwrap().unwrap(), vec![1u8; 3000]);
        assert_eq!(s.get(4).unwrap(), None);
        assert_eq!(s.stats().unwrap().live_values, 9);
    }

    #[test]
    fn reserved_ranges_need_no_new_reservation_until_punched() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts().punch_min_bytes(4096)).unwrap();
        for id in 0..3 {
            s.put(id, &[id as u8; 100_000]).unwrap();
        }
        // Fresh values are rewritten in place in blocks this store reserved: no fallocate.
        failing(ENOSPC, || s.put(1, &[9u8; 100_000])).unwrap();
        s.flush().unwrap();
        // A deleted value's blocks are punched by the flush; the hole is the best fit for
        // a value of the same size, and must be reserved again before it is written.
        assert_eq!(s.delete(0).unwrap(), Some(100_000));
        s.flush().unwrap();
        assert!(s.stats().unwrap().punched_bytes >= 90_000);
        assert!(failing(ENOSPC, || is_enospc(s.put(5, &[5u8; 100_000]))));
        s.put(5, &[5u8; 100_000]).unwrap();
        assert_eq!(s.get(5).unwrap().unwrap(), vec![5u8; 100_000]);
        assert_eq!(s.get(1).unwrap().unwrap(), vec![9u8; 100_000]);
    }

    /// One reservation covers a container and the free extent below it down to a 64 KiB
    /// boundary, where the next containers go; never more than that, nor past the extent.
    #[test]
    fn a_reservation_covers_the_free_space_just_below_the_container() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        let blocks = || {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(dir.path().join(page_file_name(0))).unwrap();
            m.blocks() * 512
        };
        s.put(0, &[1u8; 1000]).unwrap();
        let first = blocks();
        // The header block and the last 64 KiB of the page, where the value went.
        assert!(
            (64 * 1024..=64 * 1024 + 3 * 4096).contains(&first),
            "{first} bytes allocated"
        );
        // The next values come from that reserved space: no new reservation.
        failing(ENOSPC, || {
            for id in 1..50 {
                s.put(id, &[id as u8; 1000]).unwrap();
            }
        });
        assert!(failing(ENOSPC, || is_enospc(s.put(99, &[0u8; 100_000]))));
        // A value filling the rest of the extent: reservation stops at the extent's start
        // (just above the directory), it does not reach below it.
        let free = {
            let w = s.writer.lock().unwrap();
            let p = w.pages.get(0).unwrap();
            p.largest()
        };
        s.put(100, &vec![5u8; (free - 40 - 8) as usize]).unwrap();
        assert_eq!(s.get(100).unwrap().unwrap().len(), (free - 48) as usize);
        assert!(blocks() <= 1024 * 1024);
    }

    #[test]
    fn a_file_system_without_fallocate_writes_unreserved() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        failing(rustix::io::Errno::OPNOTSUPP.raw_os_error(), || {
            s.put(1, b"one").unwrap();
            s.put(1, b"uno").unwrap();
            s.delete(1).unwrap();
            s.put(2, b"two").unwrap();
        });
        assert_eq!(s.get(2).unwrap().as_deref(), Some(&b"two"[..]));
        // Other errors are errors (a range not reserved yet: a value of its own size).
        assert!(failing(5, || matches!(
            s.put(3, &[3u8; 500_000]),
            Err(Error::Io(e)) if e.raw_os_error() == Some(5)
        )));
    }
}
