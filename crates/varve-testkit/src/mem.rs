//! Memory as the kernel reports it: this process's resident set, a file's pages in the
//! page cache, and a sampler that watches both while a test runs.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// This process's resident memory, in bytes (from `/proc/self/status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rss {
    /// All resident pages (`VmRSS`).
    pub total: u64,
    /// Anonymous pages (`RssAnon`): the heap, stacks, private mappings.
    pub anon: u64,
    /// File-backed pages mapped by this process (`RssFile`), e.g. an LMDB map.
    pub file: u64,
}

impl Rss {
    /// The larger of each field of `self` and `other`.
    #[must_use]
    pub fn max(self, other: Rss) -> Rss {
        Rss {
            total: self.total.max(other.total),
            anon: self.anon.max(other.anon),
            file: self.file.max(other.file),
        }
    }
}

/// This process's resident memory now.
#[must_use]
pub fn rss() -> Rss {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} line in /proc/self/status"))
            * 1024
    };
    Rss {
        total: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The system's page size.
#[must_use]
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(ps).unwrap_or(4096)
}

/// Bytes of `path` resident in the page cache: `mincore` on a fresh shared mapping (0 for
/// an empty or missing file).
#[must_use]
pub fn page_cache_bytes(path: &Path) -> u64 {
    let Ok(f) = File::open(path) else {
        return 0;
    };
    let len = usize::try_from(f.metadata().unwrap().len()).unwrap();
    if len == 0 {
        return 0;
    }
    let ps = usize::try_from(page_size()).unwrap();
    // SAFETY: a fresh read-only shared mapping of an open file, length > 0; unmapped below
    // and never dereferenced (mincore only inspects page-cache state).
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(addr, libc::MAP_FAILED);
    let mut vec = vec![0u8; len.div_ceil(ps)];
    // SAFETY: `addr..addr+len` is the mapping made above; `vec` has one byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * ps as u64
}

/// Drops the whole of `path` from the page cache (after a sync, so no page is dirty).
pub fn drop_page_cache(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

/// The peaks a [`Sampler`] saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Peaks {
    /// The largest RSS figures (each field on its own).
    pub rss: Rss,
    /// The largest page-cache residency of the watched files (summed per sample).
    pub cached: u64,
    /// Samples taken.
    pub samples: u64,
}

/// Samples this process's RSS and the page-cache residency of some files from its own
/// thread, every `interval`, until [`Sampler::finish`]: a peak between two operations of
/// the test is seen, not only the state after each.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Peaks>>,
}

impl Sampler {
    /// Starts sampling every `interval`; `files` are summed for [`Peaks::cached`] (a file
    /// that does not exist yet counts 0). One sample is taken before this returns.
    #[must_use]
    pub fn start(interval: Duration, files: Vec<PathBuf>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let sample = move |p: &mut Peaks| {
            p.rss = p.rss.max(rss());
            p.cached = p
                .cached
                .max(files.iter().map(|f| page_cache_bytes(f)).sum());
            p.samples += 1;
        };
        let mut first = Peaks::default();
        sample(&mut first);
        let flag = Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("varve-testkit-sampler".into())
            .spawn(move || {
                let mut p = first;
                while !flag.load(Ordering::SeqCst) {
                    std::thread::sleep(interval);
                    sample(&mut p);
                }
                p
            })
            .unwrap();
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops sampling (after one last sample) and returns the peaks.
    #[must_use]
    pub fn finish(mut self) -> Peaks {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_and_residency_move_with_what_the_test_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 1 << 20]).unwrap();
        assert!(page_cache_bytes(&path) > 0, "just written: cached");
        drop_page_cache(&path);
        assert!(page_cache_bytes(&path) < 1 << 20);
        assert_eq!(page_cache_bytes(&dir.path().join("missing")), 0);

        let sampler = Sampler::start(Duration::from_millis(1), vec![path.clone()]);
        let before = rss();
        let mut big = vec![0u8; 64 << 20];
        for page in big.chunks_mut(4096) {
            page[0] = 1;
        }
        std::thread::sleep(Duration::from_millis(20));
        let during = rss();
        drop(big);
        let _ = std::fs::read(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let peaks = sampler.finish();
        assert!(
            during.anon >= before.anon + (48 << 20),
            "{before:?} {during:?}"
        );
        assert!(
            peaks.rss.anon >= during.anon - (8 << 20),
            "{peaks:?} {during:?}"
        );
        assert!(peaks.cached >= 1 << 19, "{peaks:?}");
        assert!(peaks.samples >= 3, "{peaks:?}");
    }
}
