//! The store: options, the write path, the read path, flush, compaction and open/recovery.
//!
//! Locking: `writer` (a mutex) serializes every mutation; `shared` (a read-write lock)
//! guards what readers see: the id -> pointer table, the page mappings and the
//! dictionaries. Lock order is always `writer` then `shared`. The writer writes value
//! bytes into space no published pointer reaches without holding `shared` at all, and takes
//! the `shared` write lock only to publish a pointer, to overwrite a value in place, or to
//! add/remove a page mapping. See the crate docs for the durability protocol.
//!
//! One file per concern: [`options`] (how a store is opened), [`stats`] (what it reports),
//! [`rebuild`] (what open does: leftovers, mappings, derived state), [`read`] (the read
//! path), [`iter`] (iteration in id order), [`write`](mod@write) (the write path: `put`,
//! `delete`), [`flush`] (the flush protocol), [`compact`] (compaction) and [`dictionary`]
//! (training lz4 dictionaries). This file holds the `Store` and writer types, open/create
//! and the helpers they share.

mod compact;
mod dictionary;
mod flush;
mod iter;
mod options;
mod read;
mod rebuild;
mod stats;
mod write;

pub use compact::CompactReport;
pub use iter::Iter;
#[cfg(feature = "test-hooks")]
pub use options::CrashHook;
pub use options::{Compression, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, MIN_PAGE_SIZE, Options};
pub use stats::Stats;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Error, Result};
use crate::mmap::{BLOCK, Map};
use crate::page::Pages;
use crate::ptrs::PtrTable;
use crate::ranges::RangeSet;
use crate::tracker::Tracker;

/// File system block granularity pages are sized in.
const PAGE_ALIGN: u64 = 4096;
/// Name of the tracker file.
pub(crate) const TRACKER_FILE: &str = "tracker.vvt";
/// Name of the lock file.
const LOCK_FILE: &str = "LOCK";

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
    /// The failure that poisoned the store, if one did.
    poisoned: Option<Arc<std::io::Error>>,
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

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn corrupted(page: u32, slot: u32, what: &'static str) -> Error {
    Error::Corrupted { page, slot, what }
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

    fn read_shared(&self) -> Result<RwLockReadGuard<'_, Shared>> {
        self.shared.read().map_err(|_| Error::panicked())
    }

    fn write_shared(&self) -> Result<RwLockWriteGuard<'_, Shared>> {
        self.shared.write().map_err(|_| Error::panicked())
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        let w = self.writer.lock().map_err(|_| Error::panicked())?;
        if let Some(cause) = &w.poisoned {
            return Err(Error::Poisoned(Arc::clone(cause)));
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

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.lock()
            && w.poisoned.is_none()
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

impl Writer {
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

    /// Notes a changed page: its summary is stale, and it may now need compacting.
    fn after_change(&mut self, page: u32, opts: &Options) {
        self.summary_dirty.insert(page);
        if let Some(p) = self.pages.get(page)
            && p.fragmented_bytes() as f64 > opts.compact_threshold * f64::from(p.size())
        {
            self.compacting.insert(page);
        }
    }
}
