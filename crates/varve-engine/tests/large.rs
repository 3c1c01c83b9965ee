//! Large payloads: a 256 MiB run of 4 MiB payloads streamed back with `read_payload_to`
//! keeps the process's RSS growth and `blobs.mdb`'s page-cache residency under 16 MiB,
//! both sampled every 10 ms from a thread of their own. `VARVE_ENGINE_LARGE_MIB` sets the
//! run's size (default 256).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use varve_engine::{Direction, EventPayload, ExpectedVersion};

const PAYLOAD: usize = 4 << 20;
const BOUND: u64 = 16 << 20;

fn page_size() -> u64 {
    rustix::param::page_size() as u64
}

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * page_size()
}

/// Bytes of `path` resident in the page cache: `mincore` on a fresh shared mapping.
fn cached(path: &Path) -> u64 {
    let f = File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let ps = page_size() as usize;
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

fn drop_cache(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: plain syscall on an open descriptor.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0);
}

fn payload(n: u64) -> Vec<u8> {
    let mut b = vec![0u8; PAYLOAD];
    for (i, page) in b.chunks_exact_mut(4096).enumerate() {
        page[..8].copy_from_slice(&n.to_le_bytes());
        page[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    }
    b
}

/// Compares the streamed bytes with the expected payload without holding a copy.
struct Check {
    n: u64,
    at: usize,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for (k, b) in buf.iter().enumerate() {
            let off = self.at + k;
            let (page, within) = (off / 4096, off % 4096);
            let want = match within {
                0..8 => self.n.to_le_bytes()[within],
                8..16 => (page as u64).to_le_bytes()[within - 8],
                _ => 0,
            };
            assert_eq!(*b, want, "payload {} byte {off}", self.n);
        }
        self.at += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn streaming_a_run_of_large_payloads_keeps_rss_and_page_cache_bounded() {
    let mib: u64 = std::env::var("VARVE_ENGINE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let count = mib / 4;
    let dir = tempdir();
    let db = open(dir.path());
    for n in 0..count {
        db.append("big", ExpectedVersion::Any, &[ev(&payload(n))])
            .unwrap();
    }
    db.checkpoint().unwrap();
    let events = db
        .read_stream("big", Direction::Forward, 0, usize::MAX)
        .unwrap();
    assert_eq!(events.len() as u64, count);
    let blobs = dir.path().join("blobs").join("blobs.mdb");
    drop_cache(&blobs);
    let base_rss = rss();
    let stop = AtomicBool::new(false);
    let peak_cached = AtomicU64::new(0);
    let peak_rss = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                peak_cached.fetch_max(cached(&blobs), Ordering::SeqCst);
                peak_rss.fetch_max(rss(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        for (n, e) in events.iter().enumerate() {
            assert!(matches!(e.payload, EventPayload::Blob { len, .. } if len == PAYLOAD as u64));
            let mut sink = Check { n: n as u64, at: 0 };
            assert_eq!(db.read_payload_to(e, &mut sink).unwrap(), PAYLOAD as u64);
            assert_eq!(sink.at, PAYLOAD);
        }
        stop.store(true, Ordering::SeqCst);
    });
    let (pc, pr) = (peak_cached.into_inner(), peak_rss.into_inner());
    eprintln!(
        "{mib} MiB read back: peak blobs.mdb residency {} KiB, RSS growth {} KiB",
        pc >> 10,
        pr.saturating_sub(base_rss) >> 10
    );
    assert!(pc < BOUND, "page-cache residency {pc} B");
    assert!(
        pr.saturating_sub(base_rss) < BOUND,
        "RSS growth {} B",
        pr - base_rss
    );
}
