//! The narrow I/O surface the flusher writes through, so tests can inject failures.
//!
//! Only the write side goes through these traits (creating a segment, writing at an
//! offset, syncing); recovery and readers use plain files. The real implementation is
//! [`FsStorage`]; tests wrap it with one that fails on demand.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// A segment file open for writing.
pub(crate) trait SegmentFile: Send {
    /// Writes `buf` at `offset`; may write fewer bytes than asked (returns how many).
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize>;
    /// `fdatasync`: makes the written bytes durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Starts writing back `len` bytes at `offset` without waiting for them (a hint: only
    /// `sync_data` makes them durable).
    fn start_writeback(&mut self, offset: u64, len: u64) -> io::Result<()>;
}

/// Creates and opens segment files.
pub(crate) trait Storage: Send + Sync {
    /// Creates a segment at `path` of `size` bytes (preallocated) starting with `header`,
    /// durably: written under `tmp`, synced, renamed to `path`, directory synced.
    fn create_segment(
        &self,
        tmp: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Box<dyn SegmentFile>>;
    /// Reuses the spare file at `spare` as the segment at `path`, durably: `header` is
    /// written over the old one and synced, then the file is renamed to `path` and the
    /// directory synced. `Ok(None)` (nothing changed) if the spare is not `size` bytes.
    fn recycle_segment(
        &self,
        spare: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Option<Box<dyn SegmentFile>>>;
    /// Opens an existing segment for writing.
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>>;
    /// `fsync`s a directory (after creating, renaming or deleting files in it).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FsStorage;

struct FsSegment(File);

impl SegmentFile for FsSegment {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn start_writeback(&mut self, offset: u64, len: u64) -> io::Result<()> {
        crate::sys::start_writeback(&self.0, offset, len)
    }
}

/// Preallocates `size` bytes; falls back to `set_len` where `fallocate` is not supported.
pub(crate) fn preallocate(file: &File, size: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => file.set_len(size),
        Err(e) => Err(e.into()),
    }
}

impl Storage for FsStorage {
    fn create_segment(
        &self,
        tmp: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(tmp)?;
        preallocate(&file, size)?;
        file.write_all_at(header, 0)?;
        file.sync_all()?;
        std::fs::rename(tmp, path)?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(Box::new(FsSegment(file)))
    }

    fn recycle_segment(
        &self,
        spare: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Option<Box<dyn SegmentFile>>> {
        let file = OpenOptions::new().read(true).write(true).open(spare)?;
        if file.metadata()?.len() != size {
            return Ok(None);
        }
        // Still named as a spare until the header is durable: a crash in between leaves a
        // spare, never a segment whose header names the old first LSN.
        file.write_all_at(header, 0)?;
        file.sync_data()?;
        std::fs::rename(spare, path)?;
        if let Some(dir) = path.parent() {
            self.sync_dir(dir)?;
        }
        Ok(Some(Box::new(FsSegment(file))))
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(FsSegment(file)))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn start_writeback_starts_it_on_a_file_and_reports_what_the_kernel_refuses() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("f");
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all_at(&[7u8; 8192], 0).unwrap();
        let mut seg = FsSegment(file);
        seg.start_writeback(0, 8192).unwrap();
        // Past the end is fine too: the kernel writes back what is dirty in the range.
        seg.start_writeback(4096, 1 << 20).unwrap();
        // A pipe has no pages to write back.
        let (_reader, writer) = std::io::pipe().unwrap();
        let mut pipe = FsSegment(File::from(std::os::fd::OwnedFd::from(writer)));
        let err = pipe.start_writeback(0, 4096).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESPIPE));
    }
}
