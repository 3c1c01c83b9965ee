//! The cache manager against plain `pread`: readers from random record starts, a reader
//! tailing a growing file, corruption and truncation, prefetch accounting, pinning,
//! eviction under the watermarks, and failure paths (exhaustion, I/O errors, poisoning).
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use varve_arena::format::{self, HEADER_LEN};
use varve_arena::{
    Arena, ArenaConfig, CHUNK_BYTES, CacheConfig, CacheManager, Error, FileId, FileSource,
    PageSource, RecordHeader,
};

const FILE: FileId = 42;

/// Deterministic payload of record `seq` with `len` bytes.
fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize * 131 + i * 7) as u8)
        .collect()
}

/// Writes records of the given payload sizes; returns the path and each record's offset.
fn write_log(dir: &Path, sizes: &[usize]) -> (PathBuf, Vec<u64>) {
    let path = dir.join("log");
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for (seq, &len) in sizes.iter().enumerate() {
        offsets.push(bytes.len() as u64);
        format::encode_record(
            seq as u32,
            seq as u64,
            &payload(seq as u64, len),
            &mut bytes,
        )
        .unwrap();
    }
    std::fs::write(&path, &bytes).unwrap();
    (path, offsets)
}

/// Tests bound every wait: a bug that loses a wake-up fails the test in seconds instead of
/// hanging the suite (mutation testing runs it with a timeout).
const WAIT: Duration = Duration::from_secs(1);

/// Fails the test once `secs` have passed since `start`.
fn within(start: Instant, secs: u64) {
    assert!(
        start.elapsed() < Duration::from_secs(secs),
        "too slow: a wait is not woken"
    );
}

/// The tests' configuration: the default with a read waiting at most [`WAIT`] (a test that
/// waits longer fails fast).
fn base() -> CacheConfig {
    CacheConfig::default().wait_timeout(WAIT)
}

fn manager(path: &Path, min_chunks: u64, max_chunks: u64, config: CacheConfig) -> CacheManager {
    let source = FileSource::new();
    source.open(FILE, path).unwrap();
    let arena = Arena::new(
        ArenaConfig::with_limits(min_chunks * CHUNK_BYTES, max_chunks * CHUNK_BYTES).unwrap(),
    );
    CacheManager::new(Arc::new(source), arena, config).unwrap()
}

fn no_prefetch() -> CacheConfig {
    base().prefetch(false)
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![6 => 0usize..200, 3 => 200usize..3000, 1 => 3000usize..12_000];
    proptest::collection::vec(size, 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, max_shrink_iters: 16, max_shrink_time: 1000, ..ProptestConfig::default() })]

    /// Several readers from random record starts, interleaved at random, get exactly the
    /// bytes `pread` gives, in order, and memory stays within `max`.
    #[test]
    fn readers_match_pread(
        sizes in sizes(),
        starts in proptest::collection::vec(any::<usize>(), 1..4),
        schedule in proptest::collection::vec(any::<usize>(), 0..600),
        prefetch in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (path, offsets) = write_log(dir.path(), &sizes);
        let file = File::open(&path).unwrap();
        let end = file.metadata().unwrap().len();
        let config = base().prefetch(prefetch);
        let m = manager(&path, 1, 2, config);
        let mut readers: Vec<(usize, varve_arena::TailReader)> = starts
            .iter()
            .map(|s| {
                let i = s % sizes.len();
                (i, m.reader(FILE, offsets[i]))
            })
            .collect();
        let mut steps = schedule.into_iter().chain(std::iter::repeat_n(0, 0));
        let mut done = vec![false; readers.len()];
        let start = Instant::now();
        while !done.iter().all(|&d| d) {
            within(start, 3);
            // Random reader, or the first unfinished one when the schedule runs out.
            let r = match steps.next() {
                Some(x) => x % readers.len(),
                None => done.iter().position(|&d| !d).unwrap(),
            };
            let (next, reader) = &mut readers[r];
            match reader.next_record().unwrap() {
                Some(rec) => {
                    prop_assert!(*next < sizes.len(), "record past the end");
                    let off = offsets[*next];
                    let mut expect = vec![0u8; HEADER_LEN + sizes[*next]];
                    file.read_exact_at(&mut expect, off).unwrap();
                    prop_assert_eq!(rec.offset(), off);
                    let next_off = offsets.get(*next + 1).copied().unwrap_or(end);
                    prop_assert_eq!(rec.next_offset(), next_off);
                    prop_assert_eq!(rec.framed(), &expect[..]);
                    prop_assert_eq!(rec.payload(), &payload(*next as u64, sizes[*next])[..]);
                    let h = RecordHeader::decode(rec.header().try_into().unwrap());
                    prop_assert_eq!(h.sequence, *next as u64);
                    *next += 1;
                }
                None => {
                    prop_assert_eq!(*next, sizes.len(), "None before the end");
                    prop_assert_eq!(reader.offset(), end);
                    done[r] = true;
                }
            }
        }
        let st = m.stats();
        prop_assert!(st.peak_held_bytes <= 2 * CHUNK_BYTES);
        if !prefetch {
            prop_assert_eq!(st.prefetched, 0);
        }
    }
}

#[test]
fn tailing_reader_sees_every_record_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut w = File::create(&path).unwrap();
    let m = manager(&path, 1, 4, base());
    let n = 400u64;
    let writer = std::thread::spawn(move || {
        let mut x = 7u64;
        for seq in 0..n {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = if x >> 60 == 0 {
                (x >> 40) as usize % 9000
            } else {
                (x >> 40) as usize % 300
            };
            let mut rec = Vec::new();
            format::encode_record(0, seq, &payload(seq, len), &mut rec).unwrap();
            // Split the write so readers see torn records at the tail.
            let cut = (x >> 20) as usize % rec.len();
            w.write_all(&rec[..cut]).unwrap();
            if seq % 8 == 0 {
                std::thread::yield_now();
            }
            w.write_all(&rec[cut..]).unwrap();
        }
    });
    let mut reader = m.reader(FILE, 0);
    let mut seq = 0;
    let deadline = Instant::now() + Duration::from_secs(6);
    while seq < n {
        assert!(Instant::now() < deadline, "tailing stalled at {seq}");
        match reader.next_record().unwrap() {
            Some(rec) => {
                let h = RecordHeader::decode(rec.header().try_into().unwrap());
                assert_eq!(h.sequence, seq, "every record once, in order");
                assert_eq!(rec.payload(), &payload(seq, h.len as usize)[..]);
                seq += 1;
            }
            None => std::thread::sleep(Duration::from_micros(50)),
        }
    }
    writer.join().unwrap();
    assert!(
        reader.next_record().unwrap().is_none(),
        "nothing after the last record"
    );
    assert_eq!(reader.offset(), std::fs::metadata(&path).unwrap().len());
}

#[test]
fn grown_partial_page_is_invalidated_not_served_stale() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[100, 100, 100]);
    let m = manager(&path, 1, 4, no_prefetch());
    let mut r = m.reader(FILE, 0);
    for _ in 0..3 {
        r.next_record().unwrap().unwrap();
    }
    assert!(r.next_record().unwrap().is_none());
    assert_eq!(m.stats().invalidations, 0);
    let mut bytes = Vec::new();
    format::encode_record(0, 3, &payload(3, 100), &mut bytes).unwrap();
    format::encode_record(0, 4, &payload(4, 100), &mut bytes).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(&bytes).unwrap();
    for seq in 3..5 {
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.payload(), &payload(seq, 100)[..]);
    }
    assert_eq!(
        m.stats().invalidations,
        1,
        "the partial page was dropped once"
    );
    // Page lookups, not records: page 0 read, then read again after the growth.
    assert_eq!((m.stats().misses, m.stats().hits), (2, 0));
}

fn expect_corrupted(path: &Path, offsets: &[u64], bad: usize) {
    let m = manager(path, 1, 4, base());
    let mut r = m.reader(FILE, 0);
    for &off in &offsets[..bad] {
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(rec.offset(), off);
    }
    for _ in 0..2 {
        match r.next_record() {
            Err(Error::Corrupted { file, offset, .. }) => {
                assert_eq!((file, offset), (FILE, offsets[bad]));
            }
            other => panic!("expected Corrupted, got {other:?}"),
        }
    }
    assert_eq!(
        r.offset(),
        offsets[bad],
        "the reader stays on the bad record"
    );
}

#[test]
fn corrupted_records_are_reported_never_returned() {
    let sizes = [50, 4000, 10, 700, 30];
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = write_log(dir.path(), &sizes);
    let clean = std::fs::read(&path).unwrap();
    // A flipped bit in the length (shorter and longer), flags, sequence, checksum and
    // payload of record 3: the checksum catches each.
    for (at, mask) in [
        (0usize, 0x01u8),
        (1, 0x02),
        (4, 0x40),
        (9, 0x40),
        (20, 0x40),
        (324, 0x40),
    ] {
        let mut bytes = clean.clone();
        bytes[offsets[3] as usize + at] ^= mask;
        std::fs::write(&path, &bytes).unwrap();
        expect_corrupted(&path, &offsets, 3);
    }
    // A length that runs past the end of the file cannot be told from a record still being
    // written: it is "not yet available" (the engine's recovery decides about torn tails).
    let mut bytes = clean.clone();
    bytes[offsets[3] as usize + 1] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let m = manager(&path, 1, 4, base());
    let mut r = m.reader(FILE, offsets[3]);
    assert!(r.next_record().unwrap().is_none());
    // A length above the framing's maximum is corrupt, not "wait for more bytes".
    let mut bytes = clean.clone();
    bytes[offsets[2] as usize + 3] = 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    expect_corrupted(&path, &offsets, 2);
}

#[test]
fn truncated_tail_is_not_yet_available_not_corrupt() {
    let sizes = [50, 5000, 10, 90];
    let dir = tempfile::tempdir().unwrap();
    let (path, offsets) = write_log(dir.path(), &sizes);
    let clean = std::fs::read(&path).unwrap();
    let last = offsets[3] as usize;
    for cut in (last..clean.len())
        .step_by(11)
        .chain([offsets[1] as usize + 4100])
    {
        std::fs::write(&path, &clean[..cut]).unwrap();
        let m = manager(&path, 1, 4, base());
        let mut r = m.reader(FILE, 0);
        let mut n = 0;
        let start = Instant::now();
        while let Some(rec) = r.next_record().unwrap() {
            within(start, 3);
            assert_eq!(rec.payload(), &payload(n, sizes[n as usize])[..]);
            n += 1;
        }
        let ends = offsets
            .iter()
            .zip(sizes)
            .map(|(&o, s)| o as usize + HEADER_LEN + s);
        let whole = ends.filter(|&e| e <= cut).count() as u64;
        assert_eq!(n, whole, "cut at {cut}");
    }
}

/// A 256-page file of 100-byte records read straight through.
fn sequential_file(dir: &Path) -> (PathBuf, u64) {
    let sizes = vec![100usize; 256 * 4096 / 124 + 1];
    let (path, _) = write_log(dir, &sizes);
    let pages = std::fs::metadata(&path).unwrap().len().div_ceil(4096);
    (path, pages)
}

/// The documented window rule: starts at 4, doubles (up to the test's max of 64) each time a whole window
/// of prefetched pages was used. Pages 0..=2 are read before the reader is sequential.
fn expected_window(last_page: u64) -> usize {
    let (mut window, mut used) = (4usize, 0usize);
    for _ in 3..=last_page {
        used += 1;
        if used == window {
            window = (window * 2).min(64);
            used = 0;
        }
    }
    window
}

#[test]
fn sequential_reader_is_prefetched_and_the_window_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pages) = sequential_file(dir.path());
    let config = base().max_window(64);
    let m = manager(&path, 16, 32, config);
    let mut r = m.reader(FILE, 0);
    assert_eq!(
        (r.window(), r.requested_until(), m.stats().readers),
        (4, 0, 1)
    );
    let start = Instant::now();
    let mut requested = 0;
    while let Some(rec) = r.next_record().unwrap() {
        within(start, 3);
        let page = (rec.next_offset() - 1) / 4096;
        assert_eq!(r.window(), expected_window(page), "window at page {page}");
        if page >= 2 {
            // A request asks for exactly one window past the reader's page; between
            // requests, more than half a window stays requested ahead of it.
            let ahead = r.requested_until() - (page + 1);
            if r.requested_until() != requested {
                assert_eq!(ahead, r.window() as u64, "page {page}");
                requested = r.requested_until();
            }
            assert!(
                ahead > (r.window() / 2) as u64,
                "page {page}: {ahead} ahead"
            );
            assert!(ahead <= r.window() as u64);
        } else {
            assert_eq!(r.requested_until(), 0, "not sequential yet");
        }
    }
    assert!(m.wait_idle(Duration::from_secs(3)));
    let st = m.stats();
    // Pages 0..=2 are read before the reader counts as sequential; every later page was
    // prefetched (or was in flight) before the reader got there.
    assert_eq!(st.misses, 3, "{st:?}");
    assert_eq!(st.hits, pages - 3);
    assert_eq!(st.prefetched_used, pages - 3);
    assert_eq!((st.prefetched_wasted, st.invalidations), (0, 0));
    assert!(st.prefetched >= pages - 3);
    assert_eq!(st.hit_rate(), (pages - 3) as f64 / pages as f64);
    assert_eq!(r.window(), 64, "window grew to its maximum");
    assert!(st.late_hits <= st.hits);
    drop(r);
    assert_eq!(m.stats().readers, 0);
}

#[test]
fn seek_moves_to_another_record() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = [10usize, 5000, 20, 30, 9000, 40];
    let (path, offsets) = write_log(dir.path(), &sizes);
    let m = manager(&path, 1, 4, base());
    let mut r = m.reader(FILE, 0);
    r.next_record().unwrap().unwrap();
    r.seek(offsets[4]);
    assert_eq!(r.offset(), offsets[4]);
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(
        (rec.offset(), rec.payload()),
        (offsets[4], &payload(4, 9000)[..])
    );
    r.seek(offsets[1]);
    assert_eq!(
        r.next_record().unwrap().unwrap().payload(),
        &payload(1, 5000)[..]
    );
}

/// What a test source does around the reads of the [`FileSource`] it wraps; each hook
/// passes straight through by default.
trait Hook: Send + Sync + 'static {
    /// Before every plain read; an error fails the read.
    fn before_read(&self) -> io::Result<()> {
        Ok(())
    }
    /// A vectored (prefetch) read of `file` at `offset`, which `read` performs.
    fn vectored(
        &self,
        file: FileId,
        offset: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let _ = (file, offset);
        read()
    }
    /// The length reported for a file whose true length is `len`.
    fn len(&self, len: u64) -> io::Result<u64> {
        Ok(len)
    }
    /// What the source answers to `reads_in_flight`.
    fn reads_in_flight(&self) -> usize {
        1
    }
}

/// A [`FileSource`] with `FILE` (and any other ids given) open on one path, behind a hook.
struct Hooked<H> {
    inner: FileSource,
    hook: H,
}

fn hooked<H: Hook>(path: &Path, ids: &[FileId], hook: H) -> Arc<Hooked<H>> {
    let inner = FileSource::new();
    for &id in ids {
        inner.open(id, path).unwrap();
    }
    Arc::new(Hooked { inner, hook })
}

impl<H> std::ops::Deref for Hooked<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.hook
    }
}

impl<H: Hook> PageSource for Hooked<H> {
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.hook.before_read()?;
        self.inner.read_at(file, offset, buf)
    }
    fn read_vectored_at(
        &self,
        file: FileId,
        offset: u64,
        bufs: &mut [&mut [u8]],
    ) -> io::Result<usize> {
        self.hook.vectored(file, offset, &mut || {
            self.inner.read_vectored_at(file, offset, bufs)
        })
    }
    fn len(&self, file: FileId) -> io::Result<u64> {
        self.hook.len(self.inner.len(file)?)
    }
    fn reads_in_flight(&self, _: FileId) -> usize {
        self.hook.reads_in_flight()
    }
}

/// Blocks vectored (prefetch) reads until opened.
struct Gate {
    open: std::sync::Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Hook for Gate {
    fn vectored(
        &self,
        _: FileId,
        _: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let open = self.open.lock().unwrap();
        drop(self.cv.wait_while(open, |o| !*o).unwrap());
        read()
    }
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Opens the gate when dropped, so a failing test cannot leave the prefetcher stuck (the
/// manager's drop joins it).
struct OpenOnDrop(Arc<Hooked<Gate>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

/// A manager over a closed gate, with a reader that has just requested its first window.
/// The guard comes last: it is dropped first, opening the gate before the manager's drop
/// joins the prefetcher.
type Gated = (
    Arc<Hooked<Gate>>,
    Arena,
    CacheManager,
    varve_arena::TailReader,
    OpenOnDrop,
);

fn gated(dir: &Path, wait: Duration) -> Gated {
    let (path, _) = sequential_file(dir);
    let gate = hooked(
        &path,
        &[FILE],
        Gate {
            open: std::sync::Mutex::new(false),
            cv: std::sync::Condvar::new(),
        },
    );
    let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 8 * CHUNK_BYTES).unwrap());
    let source: Arc<dyn PageSource> = Arc::clone(&gate) as Arc<dyn PageSource>;
    let config = base().wait_timeout(wait);
    let m = CacheManager::new(source, arena.clone(), config).unwrap();
    let mut r = m.reader(FILE, 0);
    let guard = OpenOnDrop(Arc::clone(&gate));
    let start = Instant::now();
    while r.requested_until() == 0 {
        within(start, 3);
        r.next_record().unwrap().unwrap();
    }
    (gate, arena, m, r, guard)
}

/// Opens the gate after a short delay, from another thread.
fn open_later(gate: &Arc<Hooked<Gate>>) -> std::thread::JoinHandle<()> {
    let gate = Arc::clone(gate);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        gate.open();
    })
}

#[test]
fn wait_idle_waits_for_prefetch_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, _arena, m, _r, _guard) = gated(dir.path(), WAIT);
    assert!(
        !m.wait_idle(Duration::from_millis(30)),
        "a prefetch is held at the gate"
    );
    let opener = open_later(&gate);
    assert!(m.wait_idle(Duration::from_secs(3)));
    assert!(m.stats().prefetched > 0);
    opener.join().unwrap();
}

#[test]
fn caught_up_reader_waits_for_the_prefetch_instead_of_reading_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, _arena, m, mut r, _guard) = gated(dir.path(), Duration::from_secs(3));
    let opener = open_later(&gate);
    // Read into page 3, which is in flight behind the gate.
    let start = Instant::now();
    while r.offset() < 3 * 4096 + 4096 {
        within(start, 3);
        r.next_record().unwrap().unwrap();
    }
    opener.join().unwrap();
    let st = m.stats();
    assert_eq!((st.misses, st.late_hits), (3, 1), "{st:?}");
    assert_eq!(st.hits, 2, "pages 3 and 4");
}

#[test]
fn a_stuck_prefetcher_costs_one_timeout_not_one_per_page() {
    let dir = tempfile::tempdir().unwrap();
    let (_gate, _arena, m, mut r, _guard) = gated(dir.path(), Duration::from_millis(300));
    let start = Instant::now();
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        within(start, 3);
        n += 1;
    }
    assert!(n > 8000, "read on to the end: {n}");
    let st = m.stats();
    // The first in-flight page cost one timeout; every page after was read by the reader.
    assert_eq!(
        (st.late_hits, st.prefetched_used, st.hits, st.misses),
        (0, 0, 0, 257),
        "{st:?}"
    );
}

#[test]
fn dropping_the_manager_joins_the_prefetcher() {
    let dir = tempfile::tempdir().unwrap();
    let (gate, arena, m, r, _guard) = gated(dir.path(), WAIT);
    drop(r);
    let opener = open_later(&gate);
    drop(m); // waits for the read in flight behind the gate
    assert_eq!(
        arena.used_bytes(),
        0,
        "every page freed once the manager is gone"
    );
    opener.join().unwrap();
}

#[test]
fn without_prefetch_every_page_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pages) = sequential_file(dir.path());
    let m = manager(&path, 16, 32, no_prefetch());
    let mut r = m.reader(FILE, 0);
    let start = Instant::now();
    while r.next_record().unwrap().is_some() {
        within(start, 3);
    }
    let st = m.stats();
    assert_eq!((st.misses, st.hits, st.prefetched), (pages, 0, 0));
    assert_eq!(st.hit_rate(), 0.0);
    // A second reader over the same pages hits the cache.
    let mut r2 = m.reader(FILE, 0);
    while r2.next_record().unwrap().is_some() {
        within(start, 3);
    }
    assert_eq!(m.stats().hits, pages);
}

#[test]
fn wasted_prefetch_shrinks_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    let m = manager(&path, 16, 32, base());
    let mut r = m.reader(FILE, 0);
    let start = Instant::now();
    while r.window() < 16 {
        within(start, 3);
        r.next_record().unwrap().unwrap();
    }
    assert!(m.wait_idle(Duration::from_secs(3)));
    let before = r.window();
    m.clear(); // the unused prefetched pages ahead of the reader are wasted
    let wasted = m.stats().prefetched_wasted;
    assert!(wasted > 0);
    // Read into the next page.
    let page = r.offset() / 4096;
    while r.offset() / 4096 == page {
        r.next_record().unwrap().unwrap();
    }
    r.next_record().unwrap().unwrap();
    assert_eq!(r.window(), before / 2);
}

#[test]
fn pinned_page_survives_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[5000, 100, 100]);
    let m = manager(&path, 1, 4, no_prefetch());
    let mut r = m.reader(FILE, 0);
    r.next_record().unwrap().unwrap(); // spans pages 0 and 1; page 1 is held
    assert!(m.is_cached(FILE, 0) && m.is_cached(FILE, 4096));
    m.clear();
    assert!(!m.is_cached(FILE, 0), "unpinned page evicted");
    assert!(m.is_cached(FILE, 4096), "the reader's page is pinned");
    assert_eq!(m.stats().evictions, 1);
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!(rec.payload(), &payload(1, 100)[..]);
    drop(r);
    m.clear();
    assert!(!m.is_cached(FILE, 4096));
    assert_eq!(m.stats().evictions, 2);
}

#[test]
fn usage_above_min_is_evicted_and_held_stays_below_max() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    for prefetch in [true, false] {
        let m = manager(&path, 1, 2, base().prefetch(prefetch));
        let mut r = m.reader(FILE, 0);
        let mut n = 0;
        let start = Instant::now();
        while let Some(rec) = r.next_record().unwrap() {
            within(start, 3);
            assert_eq!(rec.payload(), &payload(n, 100)[..]);
            n += 1;
        }
        assert!(m.wait_idle(Duration::from_secs(3)));
        let st = m.stats();
        assert!(st.evictions > 0);
        assert!(st.peak_held_bytes <= 2 * CHUNK_BYTES);
        if prefetch {
            assert!(m.arena().used_bytes() <= CHUNK_BYTES, "trimmed to min");
        } else {
            // Trimmed to min less an eighth of it (room for pages freed in chunks not yet
            // empty, so the arena's held bytes stay at min).
            assert_eq!(
                m.arena().used_bytes(),
                CHUNK_BYTES - CHUNK_BYTES / 8,
                "trimmed to exactly the target"
            );
        }
        assert_eq!(st.cached_bytes, st.cached_pages * 4096);
        assert!(st.held_bytes >= st.cached_bytes);
    }
}

/// A reader streaming a file four times the arena's `min`: eviction takes the pages it has
/// consumed, never the prefetched pages ahead of it, and the arena reuses emptied chunks
/// instead of unmapping them and mapping fresh ones (its held bytes stay at `min`).
#[test]
fn streaming_past_min_evicts_consumed_pages_and_reuses_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let sizes = vec![1000usize; 4 * 8 * 64 * 4096 / 1024];
    let (path, _) = write_log(dir.path(), &sizes);
    let pages = std::fs::metadata(&path).unwrap().len().div_ceil(4096);
    for prefetch in [true, false] {
        let m = manager(&path, 8, 12, base().max_window(32).prefetch(prefetch));
        let mut r = m.reader(FILE, 0);
        let start = Instant::now();
        let mut n = 0;
        while let Some(rec) = r.next_record().unwrap() {
            within(start, 5);
            assert_eq!(rec.payload(), &payload(n, 1000)[..]);
            n += 1;
        }
        assert_eq!(n, sizes.len() as u64);
        assert!(m.wait_idle(Duration::from_secs(3)));
        let st = m.stats();
        assert!(st.evictions > pages / 2, "{st:?}");
        let arena = m.arena().stats();
        // Trimming at min itself (or evicting the pages ahead of the reader) unmaps and maps
        // a chunk about every 64 pages: 24 or more here. One thread reads the reader's
        // windows in order, so chunks empty in order (0 released in 20 runs, some under
        // load; the bound leaves one of slack).
        assert!(arena.chunks_released <= 1, "{arena:?}");
        assert!(st.peak_held_bytes <= 9 * CHUNK_BYTES, "{st:?}");
        if prefetch {
            assert_eq!((st.misses, st.prefetched_wasted), (3, 0), "{st:?}");
            assert_eq!(st.prefetched_used, pages - 3);
        } else {
            assert_eq!(st.misses, pages);
        }
    }
}

/// Records the arena's used bytes whenever the prefetcher reads (its blocks for the read
/// are allocated by then).
struct Watching {
    arena: Arena,
    most_used: std::sync::atomic::AtomicU64,
}

impl Hook for Watching {
    fn vectored(
        &self,
        _: FileId,
        _: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        let used = self.arena.used_bytes();
        self.most_used
            .fetch_max(used, std::sync::atomic::Ordering::SeqCst);
        read()
    }
}

/// The prefetcher evicts to make room for a whole window before it allocates it: with its
/// new blocks allocated, the arena's used bytes are still within the trim target (min less
/// an eighth), not a window above it. One prefetch thread: with two, the blocks of one
/// worker's read in flight are not in the cache yet, so the other cannot evict them to make
/// its own room, and the bound depends on timing (it failed about 1 run in 15 on a loaded
/// machine).
#[test]
fn prefetcher_makes_room_before_allocating_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pages) = sequential_file(dir.path());
    let arena = Arena::new(ArenaConfig::with_limits(2 * CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
    let source = hooked(
        &path,
        &[FILE],
        Watching {
            arena: arena.clone(),
            most_used: std::sync::atomic::AtomicU64::new(0),
        },
    );
    let config = base().max_window(32).prefetch_threads(1).wait_timeout(WAIT);
    let m = CacheManager::new(source.clone(), arena, config).unwrap();
    let mut r = m.reader(FILE, 0);
    let start = Instant::now();
    while r.next_record().unwrap().is_some() {
        within(start, 3);
    }
    assert!(m.wait_idle(Duration::from_secs(3)));
    let st = m.stats();
    assert_eq!((st.misses, st.prefetched_used), (3, pages - 3), "{st:?}");
    assert!(st.evictions > 0);
    let target = 2 * CHUNK_BYTES - 2 * CHUNK_BYTES / 8;
    let most = source.most_used.load(std::sync::atomic::Ordering::SeqCst);
    assert!(most <= target, "{most} used during a prefetch read");
    assert!(
        most > target - 32 * 4096,
        "{most}: the arena filled up to the target"
    );
}

#[test]
fn full_arena_with_nothing_evictable_is_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[10]);
    let config = base().wait_timeout(Duration::from_millis(20));
    let m = manager(&path, 0, 1, config);
    let hog = m
        .arena()
        .try_alloc(varve_arena::PageClass::Large, 64)
        .unwrap();
    let mut r = m.reader(FILE, 0);
    assert!(matches!(r.next_record(), Err(Error::Exhausted { .. })));
    drop(hog);
    assert_eq!(
        r.next_record().unwrap().unwrap().payload(),
        &payload(0, 10)[..]
    );
}

/// A source that fails or panics on demand.
struct Faulty {
    fail_reads: bool,
    fail_len: bool,
    panic_in_prefetcher: bool,
}

impl Hook for Faulty {
    fn before_read(&self) -> io::Result<()> {
        if self.fail_reads {
            return Err(io::Error::other("injected read failure"));
        }
        Ok(())
    }
    fn vectored(
        &self,
        _: FileId,
        _: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        if self.panic_in_prefetcher && std::thread::current().name() == Some("varve-arena-prefetch")
        {
            panic!("injected prefetcher panic");
        }
        read()
    }
    fn len(&self, len: u64) -> io::Result<u64> {
        if self.fail_len {
            return Err(io::Error::other("injected stat failure"));
        }
        Ok(len)
    }
}

fn faulty_manager(path: &Path, fail_reads: bool, fail_len: bool, panic: bool) -> CacheManager {
    let source = hooked(
        path,
        &[FILE],
        Faulty {
            fail_reads,
            fail_len,
            panic_in_prefetcher: panic,
        },
    );
    let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
    let config = base().wait_timeout(WAIT);
    CacheManager::new(source, arena, config).unwrap()
}

#[test]
fn io_errors_surface_as_io() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[10, 20]);
    for (reads, len) in [(true, false), (false, true)] {
        let m = faulty_manager(&path, reads, len, false);
        let mut r = m.reader(FILE, 0);
        assert!(matches!(r.next_record(), Err(Error::Io(_))));
    }
}

#[test]
fn a_dead_prefetcher_poisons_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    let m = faulty_manager(&path, false, false, true);
    let mut r = m.reader(FILE, 0);
    let deadline = Instant::now() + Duration::from_secs(4);
    let err = loop {
        assert!(Instant::now() < deadline);
        match r.next_record() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("reached the end without noticing the dead prefetcher"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Poisoned(_)), "{err:?}");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert_eq!(
        cause,
        "the prefetch thread panicked: injected prefetcher panic"
    );
    assert!(matches!(r.next_record(), Err(Error::Poisoned(_))), "sticky");
    assert!(matches!(
        m.reader(FILE, 0).next_record(),
        Err(Error::Poisoned(_))
    ));
}

#[test]
fn invalid_cache_config_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[1]);
    let source = FileSource::new();
    source.open(FILE, &path).unwrap();
    let source: Arc<dyn PageSource> = Arc::new(source);
    let arena = Arena::new(ArenaConfig::with_limits(0, CHUNK_BYTES).unwrap());
    for (initial_window, max_window, prefetch_threads, option) in [
        (0, 4, 1, "initial_window"),
        (8, 4, 1, "max_window"),
        (4, 4, 0, "prefetch_threads"),
    ] {
        let config = base()
            .initial_window(initial_window)
            .max_window(max_window)
            .prefetch_threads(prefetch_threads);
        match CacheManager::new(Arc::clone(&source), arena.clone(), config) {
            Err(Error::InvalidOptions { what, .. }) => assert_eq!(what, option),
            other => panic!("{option}: {:?}", other.err()),
        }
    }
    let config = base().initial_window(4).max_window(4).prefetch_threads(1);
    assert!(CacheManager::new(source, arena, config).is_ok());
}

#[test]
fn handles_cross_threads() {
    fn check<T: Send + Sync>() {}
    check::<CacheManager>();
    check::<varve_arena::TailReader>();
    check::<varve_arena::Record>();
}

#[test]
fn reader_at_max_waits_for_memory_then_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[10]);
    let m = manager(&path, 0, 1, no_prefetch());
    let hog = m
        .arena()
        .try_alloc(varve_arena::PageClass::Large, 64)
        .unwrap();
    let arena = m.arena().clone();
    let mut r = m.reader(FILE, 0);
    let t =
        std::thread::spawn(move || r.next_record().map(|rec| rec.map(|x| x.payload().to_vec())));
    let start = Instant::now();
    while arena.stats().waiting == 0 {
        within(start, 3);
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(hog);
    let got = t.join().unwrap().unwrap().unwrap();
    assert_eq!(got, payload(0, 10));
}

#[test]
fn prefetch_requests_skip_cached_pages_and_load_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    let m = manager(&path, 16, 32, base());
    // Reader B caches page 5 (record 166 lies wholly inside it).
    let mut b = m.reader(FILE, 166 * 124);
    b.next_record().unwrap().unwrap();
    assert!(m.is_cached(FILE, 5 * 4096) && !m.is_cached(FILE, 6 * 4096));
    // Reader A's first window [3, 7) has a hole at 5: pages 3, 4 and 6 are prefetched.
    let mut a = m.reader(FILE, 0);
    let start = Instant::now();
    while a.offset() < 13 * 4096 {
        within(start, 3);
        a.next_record().unwrap().unwrap();
    }
    let st = m.stats();
    assert_eq!(st.misses, 4, "A's pages 0..=2 and B's page 5 only: {st:?}");
    assert_eq!(
        st.prefetched_used, 10,
        "pages 3..=13 but 5 (the last record reaches 13)"
    );
}

/// A source whose reported length lags the bytes in the file, like a WAL segment whose
/// durable length trails what the writer has already written.
struct Lagging {
    limit: std::sync::atomic::AtomicU64,
}

impl Hook for Lagging {
    fn len(&self, len: u64) -> io::Result<u64> {
        Ok(len.min(self.limit.load(std::sync::atomic::Ordering::SeqCst)))
    }
}

#[test]
fn bytes_past_the_reported_length_are_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let sizes: Vec<usize> = (0..400).map(|i| (i * 37) % 500).collect();
    let (path, offsets) = write_log(dir.path(), &sizes);
    for config in [base(), no_prefetch()] {
        let lag = hooked(
            &path,
            &[FILE],
            Lagging {
                limit: std::sync::atomic::AtomicU64::new(offsets[300] + 10),
            },
        );
        let arena = Arena::new(ArenaConfig::with_limits(4 * CHUNK_BYTES, 8 * CHUNK_BYTES).unwrap());
        let m = CacheManager::new(Arc::clone(&lag) as Arc<dyn PageSource>, arena, config).unwrap();
        let mut r = m.reader(FILE, 0);
        let mut n = 0usize;
        let start = Instant::now();
        while let Some(rec) = r.next_record().unwrap() {
            within(start, 3);
            assert_eq!(rec.payload(), &payload(n as u64, sizes[n])[..]);
            n += 1;
        }
        assert_eq!(n, 300, "only records wholly below the reported length");
        lag.limit
            .store(u64::MAX, std::sync::atomic::Ordering::SeqCst);
        while let Some(rec) = r.next_record().unwrap() {
            within(start, 3);
            assert_eq!(rec.payload(), &payload(n as u64, sizes[n])[..]);
            n += 1;
        }
        assert_eq!(n, 400);
        assert!(
            m.stats().invalidations >= 1,
            "the partial page was read again"
        );
    }
}

#[test]
fn o_direct_files_read_into_arena_pages() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    let source = FileSource::new();
    if let Err(e) = source.open_direct(FILE, &path) {
        // Some filesystems (tmpfs) refuse O_DIRECT; nothing to test there.
        assert_eq!(e.raw_os_error(), Some(22), "{e}");
        return;
    }
    let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 8 * CHUNK_BYTES).unwrap());
    let m = CacheManager::new(Arc::new(source), arena, base()).unwrap();
    let mut r = m.reader(FILE, 0);
    let mut n = 0u64;
    let start = Instant::now();
    while let Some(rec) = r.next_record().unwrap() {
        within(start, 3);
        assert_eq!(rec.payload(), &payload(n, 100)[..]);
        n += 1;
    }
    assert_eq!(n, 256 * 4096 / 124 + 1);
}

#[test]
fn file_source_asks_for_two_reads_in_flight_only_for_o_direct_files() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = write_log(dir.path(), &[10]);
    let source = FileSource::new();
    source.open(1, &path).unwrap();
    source.insert(2, File::open(&path).unwrap());
    assert_eq!(source.reads_in_flight(1), 1);
    assert_eq!(source.reads_in_flight(2), 1);
    assert_eq!(source.reads_in_flight(3), 1, "an unknown file");
    match source.open_direct(4, &path) {
        Ok(()) => assert_eq!(source.reads_in_flight(4), 2),
        // Some filesystems (tmpfs) refuse O_DIRECT; nothing to test there.
        Err(e) => assert_eq!(e.raw_os_error(), Some(22), "{e}"),
    }
}

/// Slow vectored reads that record how many overlap and where each starts.
struct Overlapping {
    in_flight_wanted: usize,
    now: std::sync::atomic::AtomicUsize,
    most: std::sync::atomic::AtomicUsize,
    starts: std::sync::Mutex<Vec<(FileId, u64)>>,
}

impl Overlapping {
    fn new(in_flight_wanted: usize) -> Self {
        Overlapping {
            in_flight_wanted,
            now: Default::default(),
            most: Default::default(),
            starts: Default::default(),
        }
    }

    fn most(&self) -> usize {
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Hook for Overlapping {
    fn vectored(
        &self,
        file: FileId,
        offset: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        use std::sync::atomic::Ordering::SeqCst;
        self.starts.lock().unwrap().push((file, offset));
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.most.fetch_max(now, SeqCst);
        // Slow enough that a reader catches up and asks for its next window meanwhile.
        std::thread::sleep(Duration::from_millis(5));
        let n = read();
        self.now.fetch_sub(1, SeqCst);
        n
    }
    fn reads_in_flight(&self) -> usize {
        self.in_flight_wanted
    }
}

/// Two prefetch threads; files `ids` all hold the 256-page sequential file.
fn overlapping(
    dir: &Path,
    ids: &[FileId],
    in_flight: usize,
) -> (Arc<Hooked<Overlapping>>, CacheManager) {
    let (path, _) = sequential_file(dir);
    let source = hooked(&path, ids, Overlapping::new(in_flight));
    let arena = Arena::new(ArenaConfig::with_limits(8 * CHUNK_BYTES, 16 * CHUNK_BYTES).unwrap());
    let config = base().max_window(16).prefetch_threads(2).wait_timeout(WAIT);
    let m = CacheManager::new(source.clone(), arena, config).unwrap();
    (source, m)
}

fn read_all(r: &mut varve_arena::TailReader) -> u64 {
    let start = Instant::now();
    let mut n = 0;
    while let Some(rec) = r.next_record().unwrap() {
        within(start, 5);
        assert_eq!(rec.payload(), &payload(n, 100)[..]);
        n += 1;
    }
    n
}

/// With two prefetch threads, one reader of a file that wants one read in flight has its
/// windows read one at a time, in file order (by one thread).
#[test]
fn one_readers_windows_are_read_one_at_a_time_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (source, m) = overlapping(dir.path(), &[FILE], 1);
    let mut r = m.reader(FILE, 0);
    assert_eq!(read_all(&mut r), 256 * 4096 / 124 + 1);
    assert!(m.wait_idle(Duration::from_secs(3)));
    let starts = source.starts.lock().unwrap().clone();
    assert!(starts.len() > 10, "{starts:?}");
    assert!(starts.windows(2).all(|w| w[0].1 < w[1].1), "{starts:?}");
    assert_eq!(source.most(), 1);
    assert_eq!(m.stats().misses, 3);
}

/// A file that wants two reads in flight gets them (the reader's windows take turns
/// over both threads).
#[test]
fn a_file_that_wants_two_reads_in_flight_gets_them() {
    let dir = tempfile::tempdir().unwrap();
    let (source, m) = overlapping(dir.path(), &[FILE], 2);
    let mut r = m.reader(FILE, 0);
    assert_eq!(read_all(&mut r), 256 * 4096 / 124 + 1);
    assert_eq!(source.most(), 2);
    assert_eq!(m.stats().misses, 3);
}

/// Two readers, each wanting one read in flight, are prefetched by different threads.
#[test]
fn readers_are_spread_over_the_prefetch_threads() {
    let dir = tempfile::tempdir().unwrap();
    let (source, m) = overlapping(dir.path(), &[1, 2], 1);
    std::thread::scope(|s| {
        for file in [1, 2] {
            let mut r = m.reader(file, 0);
            s.spawn(move || assert_eq!(read_all(&mut r), 256 * 4096 / 124 + 1));
        }
    });
    assert_eq!(source.most(), 2);
}

/// Counts the prefetcher's vectored reads.
struct Counting {
    vectored: std::sync::atomic::AtomicU64,
}

impl Hook for Counting {
    fn vectored(
        &self,
        _: FileId,
        _: u64,
        read: &mut dyn FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.vectored
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        read()
    }
}

#[test]
fn prefetch_reads_a_whole_run_of_pages_per_call() {
    let dir = tempfile::tempdir().unwrap();
    let (path, pages) = sequential_file(dir.path());
    let src = hooked(
        &path,
        &[FILE],
        Counting {
            vectored: std::sync::atomic::AtomicU64::new(0),
        },
    );
    let arena = Arena::new(ArenaConfig::with_limits(16 * CHUNK_BYTES, 32 * CHUNK_BYTES).unwrap());
    let m = CacheManager::new(Arc::clone(&src) as Arc<dyn PageSource>, arena, base()).unwrap();
    let mut r = m.reader(FILE, 0);
    let start = Instant::now();
    while r.next_record().unwrap().is_some() {
        within(start, 3);
    }
    assert!(m.wait_idle(Duration::from_secs(3)));
    let calls = src.vectored.load(std::sync::atomic::Ordering::SeqCst);
    let loaded = m.stats().prefetched;
    assert!(loaded >= pages - 3);
    // Windows grow to 64 pages and are requested half a window at a time.
    assert!(calls * 8 <= loaded, "{calls} reads for {loaded} pages");
}

#[test]
fn seek_restarts_sequential_detection() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = sequential_file(dir.path());
    let m = manager(&path, 16, 32, base());
    let mut r = m.reader(FILE, 0);
    let start = Instant::now();
    while r.offset() < 10 * 4096 {
        within(start, 3);
        r.next_record().unwrap().unwrap();
    }
    assert!(m.wait_idle(Duration::from_secs(3)));
    let before = m.stats().misses;
    // Jump far ahead (record 5000 starts on page 151), past everything prefetched.
    r.seek(5000 * 124);
    while r.offset() < 160 * 4096 {
        within(start, 3);
        r.next_record().unwrap().unwrap();
    }
    // Three pages read before the reader is sequential again, then prefetched pages.
    assert_eq!(m.stats().misses - before, 3);
}

#[test]
fn a_reader_expecting_sequences_refuses_a_record_out_of_sequence_and_stays_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    // 5, 6, 7, then a stale 3 (as a recycled file holds after its own records).
    for seq in [5u64, 6, 7, 3] {
        offsets.push(bytes.len() as u64);
        format::encode_record(0, seq, &payload(seq, 50), &mut bytes).unwrap();
    }
    std::fs::write(&path, &bytes).unwrap();
    let m = manager(&path, 1, 4, no_prefetch());
    let mut r = m.reader(FILE, 0);
    assert_eq!(r.expected_sequence(), None);
    r.expect_sequence(5);
    for seq in 5..=7u64 {
        let rec = r.next_record().unwrap().unwrap();
        assert_eq!(
            RecordHeader::decode(rec.header().try_into().unwrap()).sequence,
            seq
        );
        assert_eq!(r.expected_sequence(), Some(seq + 1));
    }
    for _ in 0..2 {
        match r.next_record() {
            Err(Error::Corrupted { offset, what, .. }) => {
                assert_eq!(offset, offsets[3]);
                assert_eq!(what, "unexpected sequence number");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.offset(), offsets[3], "the reader stays on the bad record");
        assert_eq!(r.expected_sequence(), Some(8));
    }
    // Expecting the wrong start fails at once; without an expectation the stale record
    // reads as any other.
    let mut r = m.reader(FILE, 0);
    r.expect_sequence(6);
    assert!(matches!(r.next_record(), Err(Error::Corrupted { .. })));
    let mut r = m.reader(FILE, offsets[3]);
    assert_eq!(r.next_record().unwrap().unwrap().payload(), payload(3, 50));
}

/// A framing with the default header but no sequence numbers: every record fails a
/// sequence expectation.
struct NoSequence;

impl varve_arena::Framing for NoSequence {
    fn header_len(&self) -> usize {
        HEADER_LEN
    }
    fn payload_len(&self, header: &[u8]) -> Result<usize, &'static str> {
        varve_arena::DefaultFraming::default().payload_len(header)
    }
    fn verify(&self, header: &[u8], payload: &[u8]) -> bool {
        varve_arena::DefaultFraming::default().verify(header, payload)
    }
}

#[test]
fn a_framing_without_sequence_numbers_fails_every_expectation() {
    use varve_arena::Framing as _;
    assert_eq!(NoSequence.sequence(&[0u8; HEADER_LEN]), None);
    let mut h = Vec::new();
    format::encode_record(0, 77, b"x", &mut h).unwrap();
    assert_eq!(
        varve_arena::DefaultFraming::default().sequence(&h[..HEADER_LEN]),
        Some(77)
    );
    assert_eq!(
        varve_arena::DefaultFraming::default().sequence(&h[..5]),
        None
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, &h).unwrap();
    let source = FileSource::new();
    source.open(FILE, &path).unwrap();
    let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
    let m = CacheManager::with_framing(Arc::new(source), arena, no_prefetch(), NoSequence).unwrap();
    let mut r = m.reader(FILE, 0);
    assert_eq!(r.next_record().unwrap().unwrap().payload(), b"x");
    let mut r = m.reader(FILE, 0);
    r.expect_sequence(77);
    assert!(matches!(r.next_record(), Err(Error::Corrupted { .. })));
}
