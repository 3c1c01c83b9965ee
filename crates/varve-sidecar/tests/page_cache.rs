//! The seed's acceptance test: streaming 256 MiB of 4 MiB blobs through `read_to` keeps
//! the process's RSS within a few blob sizes and the page-cache residency of `blobs.mdb`
//! within two read chunks plus the read-ahead window, and with the advice switched off
//! (`CachePolicy::Keep`) the same reads break that bound (so the measurement can fail).
//! Residency and RSS are sampled every 10 ms by a thread of their own while the reads run
//! (sampling inside the sink, between its buffers, would miss the peak).
//! `VARVE_SIDECAR_ACCEPT_BLOBS=N` changes the number of 4 MiB blobs (default 64 = 256 MiB;
//! mutation runs use fewer to save time).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use varve_sidecar::{CachePolicy, Payload, Sidecar, SidecarOptions};
use varve_testkit::mem::{Sampler, drop_page_cache as drop_cache, page_cache_bytes as cached, rss};

const BLOB: usize = 4 << 20;

/// The tests of this file measure the whole process: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
/// Number of blobs: 64 (256 MiB) unless `VARVE_SIDECAR_ACCEPT_BLOBS` says otherwise.
fn blobs() -> usize {
    std::env::var("VARVE_SIDECAR_ACCEPT_BLOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n: &usize| n >= 16 && n % 8 == 0)
        .unwrap_or(64)
}
/// "A few blob sizes" (RSS, and what the advice-off run must exceed).
const BOUND: u64 = 4 * BLOB as u64;
/// The read path's piece (`SidecarOptions::read_chunk`) and its read-ahead window.
const CHUNK: u64 = 256 << 10;
const AHEAD: u64 = 2 << 20;
/// Page-cache residency allowed above what was cached before the reads: two read pieces
/// (the one being read and the previous one, which is dropped right after) plus the
/// read-ahead window.
const RESIDENT_BOUND: u64 = 2 * CHUNK + AHEAD;

/// Blob number `n` (from 1): the base pattern with `n` stamped on every page, so that all
/// blobs differ. Built with `memcpy`s only, fast even in a debug build.
fn blob(base: &[u8], n: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    for page in b.chunks_exact_mut(4096) {
        page[..8].copy_from_slice(&n.to_le_bytes());
    }
    b
}

/// A sink that touches every byte (it compares each buffer with the expected blob bytes,
/// by `memcmp`).
struct Sink<'a> {
    base: &'a [u8],
    expected: Vec<u8>,
    expected_n: u64,
    bytes: u64,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            let n = self.bytes / BLOB as u64 + 1;
            if n != self.expected_n {
                // Rebuilt in place: the sink's own memory must not grow during the run.
                self.expected.copy_from_slice(self.base);
                for page in self.expected.chunks_exact_mut(4096) {
                    page[..8].copy_from_slice(&n.to_le_bytes());
                }
                self.expected_n = n;
            }
            let at = (self.bytes % BLOB as u64) as usize;
            let take = rest.len().min(BLOB - at);
            assert!(
                rest[..take] == self.expected[at..at + take],
                "wrong bytes in blob {n}"
            );
            self.bytes += take as u64;
            rest = &rest[take..];
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Run {
    rss_growth: u64,
    peak_cached: u64,
    cached_before: u64,
    cached_after: u64,
}

fn stream_all(
    dir: &Path,
    payloads: &[Payload],
    opts: SidecarOptions,
    base: &[u8],
    warm: bool,
) -> Run {
    let sc = Sidecar::open(dir, opts).unwrap();
    let path = sc.path().to_path_buf();
    drop_cache(&path);
    if warm {
        // Buffered reads fill the page cache (with large folios, on recent kernels).
        let mut f = File::open(&path).unwrap();
        std::io::copy(&mut f, &mut std::io::sink()).unwrap();
    }
    let cached_before = cached(&path);
    let expected = vec![1u8; BLOB];
    // Give freed heap back to the OS first, so a read buffer shows up as RSS growth
    // instead of reusing pages the write phase left resident.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    let rss_before = rss().total;
    let mut sink = Sink {
        base,
        expected,
        expected_n: 0,
        bytes: 0,
    };
    let sampler = Sampler::start(Duration::from_millis(10), vec![path.clone()]);
    for p in payloads {
        sc.read_to(p, &mut sink).unwrap();
    }
    let peaks = sampler.finish();
    assert!(peaks.samples >= 2);
    let (peak_cached, peak_rss) = (peaks.cached, peaks.rss.total);
    assert_eq!(sink.bytes, (BLOB * payloads.len()) as u64);
    Run {
        rss_growth: peak_rss.saturating_sub(rss_before),
        peak_cached: peak_cached.max(cached_before),
        cached_before,
        cached_after: cached(&path),
    }
}

#[test]
fn streaming_reads_keep_rss_and_page_cache_small() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // Fast generator: one random 4 MiB pattern, stamped per blob.
    let mut base = vec![0u8; BLOB];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for w in base.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    let payloads: Vec<Payload> = {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        let mut out = Vec::new();
        for batch in 0..blobs() as u64 / 8 {
            let blobs: Vec<Vec<u8>> = (1..=8).map(|i| blob(&base, batch * 8 + i)).collect();
            let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
            out.extend(sc.store_many(&refs).unwrap());
        }
        assert_eq!(sc.stats().unwrap().blobs, blobs() as u64);
        out
    };

    let advised = stream_all(
        dir.path(),
        &payloads,
        SidecarOptions::default(),
        &base,
        false,
    );
    // From a warm cache; verification off here only to save a third hashing pass (the
    // drops do not depend on it, and the sink still checks every byte).
    let advised_warm = stream_all(
        dir.path(),
        &payloads,
        SidecarOptions::default().verify_on_read(false),
        &base,
        true,
    );
    let off = stream_all(
        dir.path(),
        &payloads,
        SidecarOptions::default()
            .cache_policy(CachePolicy::Keep)
            .verify_on_read(false),
        &base,
        false,
    );
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    println!(
        "drop-behind: RSS +{:.1} MiB, page cache peak {:.1} MiB (before {:.1}); \
         advice off: RSS +{:.1} MiB, page cache peak {:.1} MiB (before {:.1})",
        mib(advised.rss_growth),
        mib(advised.peak_cached),
        mib(advised.cached_before),
        mib(off.rss_growth),
        mib(off.peak_cached),
        mib(off.cached_before),
    );
    println!(
        "drop-behind from a warm cache: RSS +{:.1} MiB, page cache {:.1} MiB before, {:.1} MiB after",
        mib(advised_warm.rss_growth),
        mib(advised_warm.cached_before),
        mib(advised_warm.cached_after),
    );
    // The measurement starts cold, else it would prove nothing.
    assert!(advised.cached_before < BOUND && off.cached_before < BOUND);
    // From a warm cache, the blobs read are dropped from it too.
    let half = (blobs() * BLOB / 2) as u64;
    assert!(advised_warm.cached_before > half);
    assert!(
        advised_warm.cached_after < BOUND,
        "cached {}",
        advised_warm.cached_after
    );
    assert!(
        advised_warm.rss_growth < BOUND,
        "RSS grew {}",
        advised_warm.rss_growth
    );
    assert!(
        advised.rss_growth < BOUND,
        "RSS grew {}",
        advised.rss_growth
    );
    assert!(
        advised.peak_cached - advised.cached_before <= RESIDENT_BOUND,
        "cached {} (before {})",
        advised.peak_cached,
        advised.cached_before
    );
    // Without advice the same reads leave (nearly) everything in RAM.
    assert!(off.peak_cached > half, "cached {}", off.peak_cached);
    assert!(off.rss_growth > half, "RSS grew {}", off.rss_growth);
}

#[test]
fn writes_leave_no_blob_pages_in_the_page_cache() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut base = vec![0u8; BLOB];
    for (i, w) in base.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    }
    let blobs: Vec<Vec<u8>> = (1..=4).map(|n| blob(&base, n)).collect();
    let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
    for (policy, expect_small) in [(CachePolicy::DropBehind, true), (CachePolicy::Keep, false)] {
        let sub = dir.path().join(format!("{policy:?}"));
        let sc = Sidecar::open(&sub, SidecarOptions::default().cache_policy(policy)).unwrap();
        sc.store_many(&refs).unwrap();
        let c = cached(sc.path());
        println!("{policy:?}: {c} bytes of blobs.mdb cached after writing 16 MiB");
        assert_eq!(
            c < BLOB as u64,
            expect_small,
            "{policy:?}: {c} bytes cached"
        );
    }
}

/// A sink that counts bytes and checks nothing.
#[derive(Default)]
struct Count {
    bytes: u64,
}

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn streaming_a_large_blob_keeps_only_a_few_chunks_cached() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut base = vec![0u8; BLOB];
    for (i, w) in base.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64 ^ 0x5555).to_le_bytes());
    }
    let big: Vec<u8> = (1..=8).flat_map(|n| blob(&base, n)).collect(); // 32 MiB
    let p = Sidecar::open(dir.path(), SidecarOptions::default())
        .unwrap()
        .store(&big)
        .unwrap();
    drop(big);
    // Verified and unverified streaming: 256 KiB pieces, 2 MiB read ahead, dropped behind.
    for verify_on_read in [true, false] {
        let sc = Sidecar::open(
            dir.path(),
            SidecarOptions::default().verify_on_read(verify_on_read),
        )
        .unwrap();
        drop_cache(sc.path());
        let before = cached(sc.path());
        let mut sink = Count::default();
        let sampler = Sampler::start(Duration::from_millis(10), vec![sc.path().to_path_buf()]);
        assert_eq!(sc.read_to(&p, &mut sink).unwrap(), 32 << 20);
        let peak = sampler.finish().cached;
        assert_eq!(sink.bytes, 32 << 20);
        println!("verify {verify_on_read}: peak {peak} bytes cached (before {before})");
        assert!(
            peak.saturating_sub(before) <= RESIDENT_BOUND,
            "verify {verify_on_read}: {peak} bytes cached mid-read (before {before})"
        );
    }
}

/// With a hot set, the page cache holds the kept blobs (at most the budget) plus the
/// window of the read in progress, sampled every 10 ms from another thread while a skewed
/// mix of blobs (a few read again and again, the rest once) is read; the blobs read again
/// stay cached, so their reads find them there.
#[test]
fn hot_set_residency_stays_within_its_budget() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    const SMALL: usize = 1 << 20;
    let mut base = vec![0u8; SMALL];
    for (i, w) in base.chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&(i as u64 ^ 0xABCD).wrapping_mul(31).to_le_bytes());
    }
    let blobs: Vec<Vec<u8>> = (1..=24).map(|n| blob(&base, n)).collect();
    let payloads: Vec<Payload> = {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        sc.store_many(&refs).unwrap()
    };
    let budget: u64 = 4 << 20; // room for three of the 1 MiB blobs (runs are a bit larger)
    let sc = Sidecar::open(dir.path(), SidecarOptions::default().hot_budget(budget)).unwrap();
    drop_cache(sc.path());
    let before = cached(sc.path());
    let sampler = Sampler::start(Duration::from_millis(10), vec![sc.path().to_path_buf()]);
    let mut sink = Count::default();
    for round in 0..3 {
        for (i, p) in payloads.iter().enumerate() {
            // Blobs 0..3 between every other read.
            sc.read_to(&payloads[i % 3], &mut sink).unwrap();
            if round == 0 {
                sc.read_to(p, &mut sink).unwrap();
            }
        }
    }
    let peaks = sampler.finish();
    let (peak, samples) = (peaks.cached, peaks.samples);
    let after = cached(sc.path());
    let hot = sc.hot_bytes();
    println!(
        "hot set: {samples} samples, peak {peak} bytes cached (before {before}), \
         after {after}, hot {hot}, budget {budget}"
    );
    assert!(samples >= 2);
    assert!(hot <= budget && hot >= 3 * SMALL as u64, "hot {hot}");
    assert!(
        peak.saturating_sub(before) <= budget + RESIDENT_BOUND,
        "{peak} bytes cached mid-read (before {before})"
    );
    assert!(
        after.saturating_sub(before) <= hot,
        "{after} cached after (before {before})"
    );
    // The three blobs read again and again stay cached (`before` counts LMDB's mapped
    // pages, and cold B-tree pages that the reads may have dropped).
    assert!(after >= 3 * SMALL as u64, "{after}");
    // The same reads with a zero budget keep nothing.
    drop(sc);
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    drop_cache(sc.path());
    let before = cached(sc.path());
    for p in payloads.iter().take(6) {
        sc.read_to(p, &mut sink).unwrap();
        sc.read_to(&payloads[0], &mut sink).unwrap();
    }
    assert!(cached(sc.path()).saturating_sub(before) < SMALL as u64);
}
