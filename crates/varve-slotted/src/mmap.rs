//! Shared access to memory-mapped files (the crate's unsafe code, with one `libc` call
//! for `sync_file_range`, which rustix does not offer).
//!
//! A [`Map`] is a read-write shared mapping of a whole file. Readers and the single
//! writer access it concurrently through raw pointers, never through a `&mut [u8]`
//! covering the mapping. Soundness rests on one crate invariant, enforced by the store's
//! locking (see the protocol in the crate docs):
//!
//! **Range invariant:** a byte range is written only while no reader can be reading it.
//! The writer (one at a time, serialized by the store's writer mutex) writes either
//! ranges that no published tracker pointer reaches (free space, unreferenced slots),
//! or a referenced range while it holds the shared state's *write* lock, which excludes
//! every reader. Readers only build slices of ranges reached through a published pointer,
//! and only while holding the shared state's *read* lock. [`Map::read`] and [`Map::write`]
//! are `unsafe fn`s so that every call site states how it keeps this invariant.
//!
//! **Space:** the files are sparse (`set_len`) and freed ranges are punched, so a store
//! of the mapping into a hole needs a block from the file system; on a full disk that
//! store would fault with SIGBUS. [`Map::write`] therefore first reserves the file blocks
//! of its range with `fallocate` (unless this map already reserved them and has not
//! punched them since), so a full disk is an `ENOSPC` error before any byte is stored.
//! On a file system without `fallocate` (`EOPNOTSUPP`) writes go ahead unreserved, as
//! they would without this check.
//!
//! Other processes must not modify or truncate the files while they are mapped: the store
//! holds an exclusive `flock` on its directory for that reason, and documents that external
//! writers are outside its guarantees.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd as _;
use std::sync::Mutex;

use memmap2::{MmapOptions, MmapRaw};

use crate::ranges::RangeSet;

/// Granularity of reservations and dirty ranges: one file-system block.
pub(crate) const BLOCK: u64 = 4096;

/// A shared read-write mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Map {
    raw: MmapRaw,
    file: File,
    /// Block-aligned byte ranges this map has reserved with `fallocate` (and not punched
    /// since). Ranges outside it may be holes; they are reserved before a write.
    reserved: Mutex<RangeSet>,
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "range outside the mapping")
}

#[cfg(test)]
thread_local! {
    /// Test hook: when set, every reservation that needs a `fallocate` on this thread fails
    /// with this OS error instead of calling it.
    pub(crate) static FAIL_RESERVE: std::cell::Cell<Option<i32>> =
        const { std::cell::Cell::new(None) };
}

fn fallocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some(errno) = FAIL_RESERVE.with(std::cell::Cell::get) {
        return Err(io::Error::from_raw_os_error(errno));
    }
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::KEEP_SIZE, offset, len)?;
    Ok(())
}

impl Map {
    /// Maps the first `len` bytes of `file` (which must be at least that long).
    pub(crate) fn new(file: &File, len: u64) -> io::Result<Map> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Map {
            raw,
            file: file.try_clone()?,
            reserved: Mutex::new(RangeSet::default()),
        })
    }

    /// Length of the mapping in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.raw.len() as u64
    }

    fn range(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.raw.len()).then_some(start)
    }

    /// The bytes `offset..offset + len`, or `None` when the range leaves the mapping.
    ///
    /// # Safety
    /// No thread may write any byte of the range while the returned slice lives: the
    /// caller holds the store's read lock and reached the range through a published
    /// pointer, or it is the writer reading a range only it writes.
    pub(crate) unsafe fn read(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = self.range(offset, len)?;
        // SAFETY: `start..start + len` lies inside the live mapping (checked by `range`),
        // the mapping outlives `&self`, and the caller guarantees that nothing writes these
        // bytes while the slice lives.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), len) })
    }

    /// Reserves the file blocks of `offset..offset + len` (see the module docs), then
    /// copies `bytes` there; an error when the range leaves the mapping or the file system
    /// has no room (then nothing was written).
    ///
    /// # Safety
    /// No thread may hold a slice (from [`Map::read`]) overlapping the range: the caller is
    /// the single writer and either no published pointer reaches the range or it holds the
    /// shared write lock.
    pub(crate) unsafe fn write(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let start = self.range(offset, bytes.len()).ok_or_else(out_of_range)?;
        self.reserve(offset, bytes.len() as u64)?;
        // SAFETY: the destination lies inside the live mapping (checked by `range`) and its
        // blocks are allocated (reserved above), so the store cannot fault; `bytes` cannot
        // overlap it because the writer never builds a slice of a range it writes; the
        // caller guarantees that no reader holds a slice of the destination.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.raw.as_mut_ptr().add(start),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Makes sure the file blocks of `offset..offset + len` are allocated (`fallocate`), so
    /// that storing into them through the mapping cannot fault on a full disk. A range this
    /// map reserved before (and did not punch since) costs no system call.
    pub(crate) fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.checked_add(len).ok_or_else(out_of_range)?;
        let start = offset / BLOCK * BLOCK;
        let end = end.div_ceil(BLOCK) * BLOCK;
        let mut reserved = self.reserved.lock().map_err(|_| poisoned())?;
        if reserved.covers(start, end) {
            return Ok(());
        }
        match fallocate(&self.file, start, end - start) {
            Ok(()) => {}
            // A file system without `fallocate` cannot reserve: write as before (and do
            // not ask again for this range).
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => {}
            Err(e) => return Err(e),
        }
        reserved.insert(start, end);
        Ok(())
    }

    /// Gives the file blocks of `offset..offset + len` back to the file system (the range
    /// reads as zeros afterwards and must be reserved again before it is written). Only for
    /// free space: no reader reaches it.
    pub(crate) fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = usize::try_from(len).map_err(|_| out_of_range())?;
        self.range(offset, size).ok_or_else(out_of_range)?;
        let mut reserved = self.reserved.lock().map_err(|_| poisoned())?;
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )?;
        reserved.remove(offset, offset + len);
        Ok(())
    }

    /// Starts writing the dirty bytes of `offset..offset + len` back to the file without
    /// waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`); [`Map::sync_data`] waits.
    pub(crate) fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = usize::try_from(len).map_err(|_| out_of_range())?;
        self.range(offset, size).ok_or_else(out_of_range)?;
        let (off, n) = (
            i64::try_from(offset).map_err(|_| out_of_range())?,
            i64::try_from(len).map_err(|_| out_of_range())?,
        );
        // SAFETY: a plain system call on a file descriptor this map owns; it reads no
        // memory of this process.
        let r = unsafe {
            libc::sync_file_range(self.file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE)
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until every dirty byte of the file is durable, with the metadata needed to
    /// read it back (`fdatasync`): the ranges started by [`Map::start_writeback`] and any
    /// other written page.
    pub(crate) fn sync_data(&self) -> io::Result<()> {
        rustix::fs::fdatasync(&self.file)?;
        Ok(())
    }
}

fn poisoned() -> io::Error {
    io::Error::other("reservation lock poisoned")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ENOSPC: i32 = 28;

    fn map(len: u64) -> (tempfile::TempDir, Map) {
        let dir = varve_testkit::dirs::in_memory();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        f.set_len(len).unwrap();
        let m = Map::new(&f, len).unwrap();
        (dir, m)
    }

    /// Whether reserving the range needs a `fallocate` (it fails while the hook is set).
    fn needs_fallocate(m: &Map, offset: u64, len: u64) -> bool {
        FAIL_RESERVE.with(|c| c.set(Some(ENOSPC)));
        let r = m.reserve(offset, len);
        FAIL_RESERVE.with(|c| c.set(None));
        r.is_err()
    }

    #[test]
    fn reservations_are_whole_blocks_and_remembered() {
        let (_d, m) = map(64 * 1024);
        assert!(needs_fallocate(&m, 5000, 10));
        m.reserve(5000, 10).unwrap();
        assert!(
            !needs_fallocate(&m, 4096, 4096),
            "the whole block is reserved"
        );
        assert!(needs_fallocate(&m, 8192, 1));
        assert!(needs_fallocate(&m, 4095, 2));
        assert!(!needs_fallocate(&m, 6000, 0));
        // The blocks really are allocated.
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(m.file.metadata().unwrap().blocks() * 512, 4096);
        // A write reserves before it stores.
        assert!(needs_fallocate(&m, 20_000, 8));
        // SAFETY: this test is the map's only user.
        unsafe { m.write(20_000, &[1; 8]) }.unwrap();
        assert!(!needs_fallocate(&m, 20_000, 8));
        // SAFETY: as above.
        assert_eq!(unsafe { m.read(20_000, 8) }.unwrap(), &[1; 8]);
        // SAFETY: as above.
        let past = unsafe { m.write(64 * 1024 - 4, &[1; 8]) }.unwrap_err();
        assert_eq!(past.kind(), io::ErrorKind::InvalidInput);
        assert!(m.reserve(u64::MAX, 2).is_err());
    }

    #[test]
    fn a_punched_range_must_be_reserved_again_and_only_it() {
        let (_d, m) = map(64 * 1024);
        m.reserve(0, 64 * 1024).unwrap();
        m.punch_hole(16 * 1024, 16 * 1024).unwrap();
        assert!(!needs_fallocate(&m, 0, 16 * 1024));
        assert!(!needs_fallocate(&m, 32 * 1024, 32 * 1024));
        assert!(needs_fallocate(&m, 16 * 1024, 1));
        assert!(needs_fallocate(&m, 32 * 1024 - 1, 1));
        assert!(m.punch_hole(60 * 1024, 8 * 1024).is_err(), "past the end");
        assert!(
            !needs_fallocate(&m, 60 * 1024, 4096),
            "a failed punch changes nothing"
        );
    }

    #[test]
    fn writeback_checks_its_range() {
        let (_d, m) = map(16 * 1024);
        // SAFETY: this test is the map's only user.
        unsafe { m.write(100, &[7; 100]) }.unwrap();
        m.start_writeback(0, 4096).unwrap();
        m.sync_data().unwrap();
        assert!(m.start_writeback(12 * 1024, 8 * 1024).is_err());
        assert!(m.start_writeback(u64::MAX, 1).is_err());
    }
}
