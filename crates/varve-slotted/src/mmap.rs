//! The crate's only unsafe code: shared access to memory-mapped files.
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
//! and only while holding the shared state's *read* lock.
//!
//! Other processes must not modify or truncate the files while they are mapped: the store
//! holds an exclusive `flock` on its directory for that reason, and documents that external
//! writers are outside its guarantees.

use std::fs::File;
use std::io;

use memmap2::{MmapOptions, MmapRaw};

/// A shared read-write mapping of a whole file.
#[derive(Debug)]
pub(crate) struct Map {
    raw: MmapRaw,
    file: File,
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "range outside the mapping")
}

impl Map {
    /// Maps the first `len` bytes of `file` (which must be at least that long).
    pub(crate) fn new(file: &File, len: u64) -> io::Result<Map> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let raw = MmapOptions::new().len(len).map_raw(file)?;
        Ok(Map {
            raw,
            file: file.try_clone()?,
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
    /// The caller holds a published pointer to the range under the store's read lock (or is
    /// the writer), so by the range invariant nothing writes it while the slice lives.
    pub(crate) fn read(&self, offset: u64, len: usize) -> Option<&[u8]> {
        let start = self.range(offset, len)?;
        // SAFETY: `start..start + len` lies inside the live mapping (checked by `range`),
        // the mapping outlives `&self`, and by the range invariant no thread writes these
        // bytes while a reader may hold this slice.
        Some(unsafe { std::slice::from_raw_parts(self.raw.as_ptr().add(start), len) })
    }

    /// Copies `bytes` to `offset`; an error when the range leaves the mapping.
    ///
    /// The caller is the single writer and, by the range invariant, no reader can reach the
    /// range (or the caller holds the shared write lock).
    pub(crate) fn write(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let start = self.range(offset, bytes.len()).ok_or_else(out_of_range)?;
        // SAFETY: the destination lies inside the live mapping (checked by `range`); `bytes`
        // cannot overlap it because the writer never builds a slice of a range it writes;
        // by the range invariant no reader holds a slice of the destination.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.raw.as_mut_ptr().add(start),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Gives the file blocks of `offset..offset + len` back to the file system (the range
    /// reads as zeros afterwards). Only for free space: no reader reaches it.
    pub(crate) fn punch_hole(&self, offset: u64, len: u64) -> io::Result<()> {
        let size = usize::try_from(len).map_err(|_| out_of_range())?;
        self.range(offset, size).ok_or_else(out_of_range)?;
        rustix::fs::fallocate(
            &self.file,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        )?;
        Ok(())
    }

    /// Writes the dirty bytes `offset..offset + len` back to the file and waits (msync).
    pub(crate) fn flush_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let start = self.range(offset, len).ok_or_else(out_of_range)?;
        self.raw.flush_range(start, len)
    }
}
