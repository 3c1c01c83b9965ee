//! Where the cache manager's bytes come from: the [`PageSource`] trait and a file-backed
//! implementation.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Identifies one file of a [`PageSource`] (for the engine: a WAL segment number).
pub type FileId = u64;

/// Append-only files the cache manager reads pages from.
///
/// Contract: files only grow; a byte below the length [`PageSource::len`] reported once is
/// complete and never changes afterwards. (Bytes beyond the reported length may be in the
/// middle of being written and are never read as data.)
pub trait PageSource: Send + Sync + 'static {
    /// Reads up to `buf.len()` bytes at `offset` of `file` into `buf`; returns how many,
    /// fewer only at the end of the file.
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Reads consecutive bytes at `offset` into each buffer in turn; returns the total,
    /// fewer than the buffers hold only at the end of the file. The default calls
    /// [`PageSource::read_at`] per buffer; a file can do it in one `preadv`.
    fn read_vectored_at(
        &self,
        file: FileId,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> io::Result<usize> {
        let mut total = 0usize;
        for buf in bufs.iter_mut() {
            let n = self.read_at(file, offset + total as u64, buf)?;
            total += n;
            if n < buf.len() {
                break;
            }
        }
        Ok(total)
    }

    /// The current length of `file` in bytes.
    fn len(&self, file: FileId) -> io::Result<u64>;

    /// How many prefetch reads of `file` one reader should have in flight at once (the
    /// cache manager uses at most its number of prefetch threads).
    ///
    /// The default, 1, suits reads through the kernel's page cache: its own readahead
    /// keeps the disk busy behind one sequential stream, and one prefetch thread reading a
    /// reader's windows in order is what it handles best (measurements in
    /// `docs/arena-tuning.md`). Reads that bypass
    /// the page cache have no readahead under them and gain from a second read in flight:
    /// [`FileSource`] answers 2 for files opened with [`FileSource::open_direct`].
    fn reads_in_flight(&self, file: FileId) -> usize {
        let _ = file;
        1
    }
}

/// A [`PageSource`] over open files, registered by id.
#[derive(Debug, Default)]
pub struct FileSource {
    files: RwLock<HashMap<FileId, Opened>>,
}

/// A registered file and whether it was opened with `O_DIRECT`.
#[derive(Debug, Clone)]
struct Opened {
    file: Arc<File>,
    direct: bool,
}

/// Prefetch reads in flight per reader of a file opened with `O_DIRECT`.
const DIRECT_READS_IN_FLIGHT: usize = 2;

impl FileSource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an open file under `id` (replacing any previous one). Whether it was
    /// opened with `O_DIRECT` is read from its status flags.
    pub fn insert(&self, id: FileId, file: File) {
        let direct = rustix::fs::fcntl_getfl(&file)
            .is_ok_and(|flags| flags.contains(rustix::fs::OFlags::DIRECT));
        self.files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(
                id,
                Opened {
                    file: Arc::new(file),
                    direct,
                },
            );
    }

    /// Opens `path` read-only and registers it under `id`.
    pub fn open(&self, id: FileId, path: &Path) -> io::Result<()> {
        self.insert(id, File::open(path)?);
        Ok(())
    }

    /// Opens `path` read-only with `O_DIRECT` and registers it under `id`: reads bypass the
    /// kernel's page cache (and its readahead), so only the cache manager caches and
    /// prefetches. Reads then need page-aligned buffers, offsets and lengths, which the
    /// cache manager's 4 KiB pages provide. Fails where the filesystem refuses `O_DIRECT`
    /// (tmpfs, for one).
    pub fn open_direct(&self, id: FileId, path: &Path) -> io::Result<()> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)?;
        self.insert(id, file);
        Ok(())
    }

    fn opened(&self, id: FileId) -> io::Result<Opened> {
        self.files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {id}")))
    }

    fn file(&self, id: FileId) -> io::Result<Arc<File>> {
        Ok(self.opened(id)?.file)
    }
}

impl PageSource for FileSource {
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // One pread: a regular file returns fewer bytes than asked only at end of file.
        // (EINTR does not happen on local regular files; if it did, it surfaces as `Io`.)
        self.file(file)?.read_at(buf, offset)
    }

    fn read_vectored_at(
        &self,
        file: FileId,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> io::Result<usize> {
        let f = self.file(file)?;
        let mut slices: Vec<io::IoSliceMut<'_>> =
            bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
        Ok(rustix::io::preadv(&*f, &mut slices, offset)?)
    }

    fn len(&self, file: FileId) -> io::Result<u64> {
        Ok(self.file(file)?.metadata()?.len())
    }

    fn reads_in_flight(&self, file: FileId) -> usize {
        match self.opened(file) {
            Ok(Opened { direct: true, .. }) => DIRECT_READS_IN_FLIGHT,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source whose file grows by a page right after every short read.
    struct Growing {
        limit: std::sync::atomic::AtomicU64,
    }

    impl PageSource for Growing {
        fn read_at(&self, _: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let limit = self.limit.load(std::sync::atomic::Ordering::SeqCst);
            let n = (limit.saturating_sub(offset) as usize).min(buf.len());
            buf[..n].fill(1);
            if n < buf.len() {
                self.limit
                    .store(limit + 4096, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(n)
        }
        fn len(&self, _: FileId) -> io::Result<u64> {
            Ok(self.limit.load(std::sync::atomic::Ordering::SeqCst))
        }
    }

    #[test]
    fn default_vectored_read_stops_at_a_short_read() {
        // A short read is the end of the file as of that read; bytes that appear later must
        // not be read into the next buffer (that would leave a gap in the "contiguous" result).
        let g = Growing {
            limit: std::sync::atomic::AtomicU64::new(4096 + 100),
        };
        let (mut a, mut b, mut c) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        let n = g
            .read_vectored_at(0, 0, &mut [&mut a[..], &mut b[..], &mut c[..]])
            .unwrap();
        assert_eq!(n, 4096 + 100);
        assert!(c.iter().all(|&x| x == 0));
    }

    #[test]
    fn reads_plain_and_vectored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let s = FileSource::new();
        s.open(3, &path).unwrap();
        assert_eq!(s.len(3).unwrap(), 10_000);
        assert!(s.len(4).is_err());
        let mut buf = vec![0u8; 300];
        assert_eq!(s.read_at(3, 9_800, &mut buf).unwrap(), 200);
        assert_eq!(&buf[..200], &data[9_800..]);
        assert_eq!(s.read_at(3, 100, &mut buf).unwrap(), 300);
        assert_eq!(&buf[..], &data[100..400]);
        let (mut a, mut b, mut c) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        let n = s
            .read_vectored_at(3, 4096, &mut [&mut a[..], &mut b[..], &mut c[..]])
            .unwrap();
        assert_eq!(n, 10_000 - 4096);
        assert_eq!(&a[..], &data[4096..8192]);
        assert_eq!(&b[..10_000 - 8192], &data[8192..]);
        // The trait's default vectored read gives the same answer.
        struct Plain(FileSource);
        impl PageSource for Plain {
            fn read_at(&self, f: FileId, o: u64, b: &mut [u8]) -> io::Result<usize> {
                self.0.read_at(f, o, b)
            }
            fn len(&self, f: FileId) -> io::Result<u64> {
                self.0.len(f)
            }
        }
        let p = Plain(s);
        let (mut x, mut y, mut z) = (vec![0u8; 4096], vec![0u8; 4096], vec![9u8; 4096]);
        let n = p
            .read_vectored_at(3, 4096, &mut [&mut x[..], &mut y[..], &mut z[..]])
            .unwrap();
        assert_eq!((n, &x, &y[..1808]), (10_000 - 4096, &a, &b[..1808]));
        assert!(z.iter().all(|&v| v == 9), "no read past a short buffer");
        assert_eq!(p.reads_in_flight(3), 1, "the default: one read in flight");
    }
}
