//! The id -> (page, slot) tracker file: a header and one 8-byte pointer per id, mmapped.
//!
//! The file is written only by `flush`, after the data it points to is durable, so the
//! on-disk tracker always names values that are whole on disk. The live pointers are kept
//! in memory (`Shared::ptrs`); this mapping is the writer's alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{TRACKER_ENTRY_LEN, TRACKER_HEADER_LEN, TrackerHeader};
use crate::mmap::Map;

/// Entries a new tracker file has room for.
const INITIAL_ENTRIES: u64 = 1024;

/// The tracker file and its mapping.
#[derive(Debug)]
pub(crate) struct Tracker {
    file: File,
    map: Map,
    entries: u64,
    grown: bool,
    dirty: bool,
}

fn entries_for(len: u64) -> u64 {
    len.saturating_sub(TRACKER_HEADER_LEN) / TRACKER_ENTRY_LEN
}

fn file_len(entries: u64) -> u64 {
    TRACKER_HEADER_LEN + entries * TRACKER_ENTRY_LEN
}

impl Tracker {
    /// Creates a new, empty tracker file at `path` (atomically, through a temporary file).
    pub(crate) fn create(path: &Path) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_len(file_len(INITIAL_ENTRIES))?;
        f.write_all_at(bytemuck::bytes_of(&TrackerHeader::new()), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// Opens the tracker at `path` and returns it with every pointer it holds (index = id;
    /// trailing empty entries are not returned).
    pub(crate) fn open(path: &Path) -> Result<(Tracker, Vec<u64>)> {
        let bad = |what| Error::BadFile {
            path: PathBuf::from(path),
            what,
        };
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        // Every tracker is created with room for INITIAL_ENTRIES and only grows: a shorter
        // one was truncated, and its lost pointers must not read as deleted values.
        if len < file_len(INITIAL_ENTRIES) {
            return Err(bad("tracker shorter than its initial size (truncated)"));
        }
        let entries = entries_for(len);
        let map = Map::new(&file, file_len(entries))?;
        let head = map
            .read(0, TRACKER_HEADER_LEN as usize)
            .ok_or_else(|| bad("tracker header unreadable"))?;
        let header: TrackerHeader = bytemuck::pod_read_unaligned(head);
        if !header.ok() {
            return Err(bad("tracker header: wrong magic, version or checksum"));
        }
        let body = map
            .read(TRACKER_HEADER_LEN, (entries * TRACKER_ENTRY_LEN) as usize)
            .ok_or_else(|| bad("tracker entries unreadable"))?;
        let mut ptrs: Vec<u64> = body
            .chunks_exact(TRACKER_ENTRY_LEN as usize)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        let used = ptrs.iter().rposition(|&p| p != 0).map_or(0, |i| i + 1);
        ptrs.truncate(used);
        Ok((
            Tracker {
                file,
                map,
                entries,
                grown: false,
                dirty: false,
            },
            ptrs,
        ))
    }

    /// Makes room for ids up to `id` (growing the file by doubling).
    fn ensure(&mut self, id: u64) -> io::Result<()> {
        if id < self.entries {
            return Ok(());
        }
        // The next power of two that holds `id` (at least double: `id >= entries`).
        let entries = (id + 1).next_power_of_two();
        self.file.set_len(file_len(entries))?;
        self.map = Map::new(&self.file, file_len(entries))?;
        self.entries = entries;
        self.grown = true;
        Ok(())
    }

    /// Writes the pointer of `id` into the mapping (made durable by [`Tracker::sync`]).
    pub(crate) fn set(&mut self, id: u64, ptr: u64) -> io::Result<()> {
        self.ensure(id)?;
        let at = TRACKER_HEADER_LEN + id * TRACKER_ENTRY_LEN;
        self.map.write(at, &ptr.to_le_bytes())?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every pointer written since the last call durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        // msync of the whole mapping writes only its dirty pages.
        if self.dirty {
            self.map.flush_range(0, self.map.len())?;
        }
        if self.grown {
            self.file.sync_all()?;
        }
        self.dirty = false;
        self.grown = false;
        Ok(())
    }

    /// Length of the tracker file in bytes.
    pub(crate) fn file_len(&self) -> u64 {
        self.map.len()
    }
}
