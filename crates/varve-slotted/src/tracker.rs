//! The id -> (page, slot) tracker file: a header and one 16-byte entry (pointer and its
//! checksum) per id, mmapped.
//!
//! The file is sparse: it grows by doubling with `set_len`, an entry's block is reserved
//! (`fallocate`) when its id is first written, and open reads only the file's data regions
//! (`SEEK_DATA`/`SEEK_HOLE`), so one large id costs a block of disk and a leaf of memory,
//! not an entry for every id below it.
//!
//! The file is written only by `flush`, after the data it points to is durable, so the
//! on-disk tracker always names values that are whole on disk. The live pointers are kept
//! in memory (`Shared::ptrs`); this mapping is the writer's alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{
    TRACKER_ENTRY_LEN, TRACKER_HEADER_LEN, TrackerHeader, decode_entry, encode_entry,
};
use crate::mmap::Map;
use crate::ptrs::{CORRUPT, PtrTable};

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

pub(crate) fn entry_offset(id: u64) -> u64 {
    TRACKER_HEADER_LEN + id * TRACKER_ENTRY_LEN
}

/// The data regions (`SEEK_DATA`/`SEEK_HOLE`) of `file` within `from..end`, as byte ranges.
/// A file system without hole reporting reports the whole file as data.
fn data_regions(file: &File, from: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = from;
    // Ends when no data is left at or after `pos` (NXIO) or the next data lies past `end`
    // (at `pos == end` one of the two holds).
    loop {
        let data = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        if data >= end {
            break;
        }
        let hole = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(data))?.min(end);
        out.push((data, hole));
        pos = hole;
    }
    Ok(out)
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

    /// Opens the tracker at `path` and returns it with every pointer it holds. An entry
    /// that does not verify is returned as [`CORRUPT`] (its id reads as corrupted).
    pub(crate) fn open(path: &Path) -> Result<(Tracker, PtrTable)> {
        let bad = |what| Error::BadFile {
            path: PathBuf::from(path),
            what,
        };
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let mut head = [0u8; TRACKER_HEADER_LEN as usize];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| bad("tracker header unreadable"))?;
        let header: TrackerHeader = bytemuck::pod_read_unaligned(&head);
        if header.is_version_1() {
            return Err(bad(
                "tracker format version 1 (entries without checksums) is not supported: \
                 open it with a release that writes version 1",
            ));
        }
        if !header.ok() {
            return Err(bad("tracker header: wrong magic, version or checksum"));
        }
        // Every tracker is created with room for INITIAL_ENTRIES and only grows: a shorter
        // one was truncated, and its lost pointers must not read as deleted values.
        if len < file_len(INITIAL_ENTRIES) {
            return Err(bad("tracker shorter than its initial size (truncated)"));
        }
        let entries = entries_for(len);
        let body_end = file_len(entries);
        let map = Map::new(&file, body_end)?;
        let mut ptrs = PtrTable::default();
        for (start, end) in data_regions(&file, TRACKER_HEADER_LEN, body_end)? {
            // Regions start at the header's end or at a block boundary, which is also an
            // entry boundary (64 + 16 * n), so no entry straddles a region's start.
            let first = start
                .saturating_sub(TRACKER_HEADER_LEN)
                .div_ceil(TRACKER_ENTRY_LEN);
            let last = end
                .saturating_sub(TRACKER_HEADER_LEN)
                .div_ceil(TRACKER_ENTRY_LEN);
            for id in first..last {
                // SAFETY: the tracker mapping is written only by the writer, which does
                // not exist yet (the store is being opened).
                let raw = unsafe { map.read(entry_offset(id), TRACKER_ENTRY_LEN as usize) }
                    .ok_or_else(|| bad("tracker entries unreadable"))?;
                let mut entry = [0u8; TRACKER_ENTRY_LEN as usize];
                entry.copy_from_slice(raw);
                ptrs.set(id, decode_entry(id, entry).unwrap_or(CORRUPT));
            }
        }
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

    /// Makes room for ids up to `id` (growing the sparse file by doubling).
    fn ensure(&mut self, id: u64) -> io::Result<()> {
        if id < self.entries {
            return Ok(());
        }
        // The next power of two that holds `id` (at least double: `id >= entries`).
        let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "tracker too large");
        let entries = id
            .checked_add(1)
            .and_then(u64::checked_next_power_of_two)
            .ok_or_else(too_large)?;
        let len = entries
            .checked_mul(TRACKER_ENTRY_LEN)
            .and_then(|b| b.checked_add(TRACKER_HEADER_LEN))
            .ok_or_else(too_large)?;
        self.file.set_len(len)?;
        self.map = Map::new(&self.file, len)?;
        self.entries = entries;
        self.grown = true;
        Ok(())
    }

    /// Makes room for the entry of `id` and reserves its file block, so that a later
    /// [`Tracker::set`] of it needs no disk space.
    pub(crate) fn reserve(&mut self, id: u64) -> io::Result<()> {
        self.ensure(id)?;
        self.map.reserve(entry_offset(id), TRACKER_ENTRY_LEN)
    }

    /// Writes the pointer of `id` into the mapping (made durable by [`Tracker::sync`]).
    pub(crate) fn set(&mut self, id: u64, ptr: u64) -> io::Result<()> {
        self.ensure(id)?;
        // SAFETY: the tracker mapping is the writer's alone (`&mut self`); no slice of it
        // is alive.
        unsafe { self.map.write(entry_offset(id), &encode_entry(id, ptr)) }?;
        self.dirty = true;
        Ok(())
    }

    /// Makes every pointer written since the last call durable.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        // fdatasync writes only the dirty pages of the mapping.
        if self.dirty {
            self.map.sync_data()?;
        }
        if self.grown {
            self.file.sync_all()?;
        }
        self.dirty = false;
        self.grown = false;
        Ok(())
    }

    /// Length of the tracker file in bytes (its apparent size; the file is sparse).
    pub(crate) fn file_len(&self) -> u64 {
        self.map.len()
    }
}
