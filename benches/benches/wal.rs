//! The WAL against the disk's own limits, a `Mutex<File>` that syncs per append, and
//! `okaywal` (a published group-commit WAL), all measured in the same run on the same disk.
//!
//! Two regimes of blocking writers. A *fresh* log (new directory, nothing truncated):
//! every block of Varve's preallocated segments is written for the first time, so groups
//! write zeros ahead of themselves. A *checkpointed* log: a checkpointer truncates behind
//! the durable end every 5 ms, as the engine will, and the log has already run through
//! several segments, so new segments reuse truncated ones (`recycle_segments`) and each
//! block is written once. okaywal, given a log manager that checkpoints at once, reuses
//! its own 1 MiB segment files in both regimes; in the checkpointed one it gets the same
//! warm-up (a few of its segments written and recycled before measuring). So the fresh
//! rows compare a growing Varve log with a recycling okaywal one; the "growing logs" rows
//! compare it with an okaywal that never checkpoints (`checkpoint_after_bytes` = max),
//! whose one file grows by appending, so both logs write every block for the first time.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use varve_benches::measure::Samples;
use varve_benches::report::{Better, compare, reference};
use varve_benches::{machine, scaled, scratch_dir};
use varve_wal::{Options, Wal};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Runs `op` on `threads` threads for `budget`; returns (ops, seconds, per-op latencies).
fn run_threads(
    threads: usize,
    budget: Duration,
    op: &(dyn Fn() -> Res<()> + Sync),
) -> Res<(usize, f64, Samples)> {
    let start = Instant::now();
    let deadline = start + budget;
    let results: Vec<Res<Samples>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Res<Samples> {
                    let mut samples = Samples::with_capacity(4096);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        op()?;
                        samples.push(t.elapsed());
                    }
                    Ok(samples)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("bench thread panicked".into()))
            })
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut all = Samples::default();
    for r in results {
        all.extend(r?);
    }
    Ok((all.len(), secs, all))
}

/// Runs the contenders in turn, `SLICES` times each for `budget / SLICES`, so they share
/// the same background load on a noisy shared machine; returns ops/s and latencies each.
fn interleaved(
    threads: usize,
    budget: Duration,
    contenders: &[&(dyn Fn() -> Res<()> + Sync)],
) -> Res<Vec<(f64, Samples)>> {
    const SLICES: u32 = 4;
    let mut acc: Vec<(usize, f64, Samples)> = contenders
        .iter()
        .map(|_| (0, 0.0, Samples::default()))
        .collect();
    for _ in 0..SLICES {
        for (c, a) in contenders.iter().zip(acc.iter_mut()) {
            let (n, secs, s) = run_threads(threads, budget / SLICES, *c)?;
            a.0 += n;
            a.1 += secs;
            a.2.extend(s);
        }
    }
    Ok(acc
        .into_iter()
        .map(|(n, secs, s)| (n as f64 / secs, s))
        .collect())
}

/// The simplest durable log: one file behind a mutex, write + fdatasync per append.
struct MutexFile {
    inner: Mutex<(File, u64)>,
}

impl MutexFile {
    fn open(dir: &Path) -> Res<Self> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("mutex-file.log"))?;
        rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, 256 << 20)?;
        f.sync_all()?;
        Ok(MutexFile {
            inner: Mutex::new((f, 0)),
        })
    }

    fn append(&self, rec: &[u8]) -> Res<()> {
        let mut g = self.inner.lock().map_err(|_| "poisoned")?;
        let off = if g.1 + rec.len() as u64 > 256 << 20 {
            0
        } else {
            g.1
        };
        g.0.write_all_at(rec, off)?;
        g.0.sync_data()?;
        g.1 = off + rec.len() as u64;
        Ok(())
    }
}

/// Like `machine::fdatasync_append_latency`, but into a file whose blocks were written
/// (zeroed) beforehand, so each sync is a plain data sync without an extent conversion:
/// the stricter physical limit for a WAL that writes zeros ahead.
struct ZeroedFile {
    file: File,
    off: AtomicU64,
    buf: Vec<u8>,
}

impl ZeroedFile {
    const SIZE: u64 = 64 << 20;

    fn open(dir: &Path, record: usize) -> Res<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(dir.join("zeroed-probe"))?;
        let zeros = vec![0u8; 1 << 20];
        for i in 0..Self::SIZE >> 20 {
            file.write_all_at(&zeros, i << 20)?;
        }
        file.sync_all()?;
        Ok(ZeroedFile {
            file,
            off: AtomicU64::new(0),
            buf: vec![0xA5u8; record],
        })
    }

    fn append(&self) -> Res<()> {
        let len = self.buf.len() as u64;
        let mut off = self.off.fetch_add(len, Ordering::Relaxed);
        if off + len > Self::SIZE {
            self.off.store(len, Ordering::Relaxed);
            off = 0;
        }
        self.file.write_all_at(&self.buf, off)?;
        self.file.sync_data()?;
        Ok(())
    }
}

#[derive(Debug)]
struct NoCheckpoint;

impl okaywal::LogManager for NoCheckpoint {
    fn recover(&mut self, _entry: &mut okaywal::Entry<'_>) -> std::io::Result<()> {
        Ok(())
    }
    fn checkpoint_to(
        &mut self,
        _last: okaywal::EntryId,
        _entries: &mut okaywal::SegmentReader,
        _wal: &okaywal::WriteAheadLog,
    ) -> std::io::Result<()> {
        Ok(())
    }
}

fn okaywal_append(log: &okaywal::WriteAheadLog, rec: &[u8]) -> Res<()> {
    let mut w = log.begin_entry()?;
    w.write_chunk(rec)?;
    w.commit()?;
    Ok(())
}

/// Brings a Varve log (default 64 MiB segments) to the steady state of a checkpointed
/// one: four rounds of appending (pipelined) at least a segment's worth, each followed by
/// truncating behind the durable end. From the second rollover on, every new segment
/// reuses a truncated one's file, so the segment being written at the end is such a reuse.
fn warm_checkpointed(wal: &Wal, rec: &[u8]) -> Res<()> {
    let per_segment = (64u64 << 20) / rec.len() as u64;
    for _ in 0..4 {
        let mut last = None;
        for _ in 0..per_segment {
            last = Some(wal.append(rec)?);
        }
        if let Some(t) = last {
            t.wait()?;
        }
        wal.truncate_before(wal.durable_lsn())?;
    }
    Ok(())
}

/// Opening (recovering) a checkpointed log, whose segments reuse earlier ones' files and
/// hold stale records after their own, against reading the same segment files whole.
fn reopen_row(dir: &Path) -> Res<()> {
    let t = Instant::now();
    let wal = Wal::open(dir, Options::default())?;
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(wal);
    let t = Instant::now();
    let mut bytes = 0;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "wal") {
            bytes += std::hint::black_box(std::fs::read(&p)?).len();
        }
    }
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    compare(
        "wal",
        &format!("open a checkpointed log ({} MiB of segments)", bytes >> 20),
        "ms",
        Better::Lower,
        open_ms,
        "reading its segment files",
        read_ms,
    );
    Ok(())
}

/// Records the comparison rows of one blocking-writers workload against okaywal.
fn okaywal_rows(w: &str, v: (f64, &mut Samples), o: (f64, &mut Samples)) {
    peer_rows(w, "okaywal", v, o);
}

/// The ops/s, p50, p99 and p99.9 rows of one workload against `peer`.
fn peer_rows(w: &str, peer: &str, v: (f64, &mut Samples), o: (f64, &mut Samples)) {
    compare("wal", w, "ops/s", Better::Higher, v.0, peer, o.0);
    for (p, name) in [(50.0, "p50"), (99.0, "p99"), (99.9, "p99.9")] {
        compare(
            "wal",
            &format!("{w}, {name}"),
            "µs",
            Better::Lower,
            v.1.percentile_us(p),
            peer,
            o.1.percentile_us(p),
        );
    }
}

/// `VARVE_WAL_PEER_ONLY=1`: run only the fresh-log rows of 1 KiB durable appends against
/// okaywal (1, 16 and 64 threads), for before/after probes of the append path.
fn peer_only() -> bool {
    std::env::var_os("VARVE_WAL_PEER_ONLY").is_some_and(|v| v != "0")
}

/// Only the 1 KiB fresh-log rows against okaywal (see [`peer_only`]).
fn peer_only_rows(budget: Duration) -> Res<()> {
    for threads in [1usize, 16, 64] {
        let rec = vec![0x3Cu8; 1024];
        let (d1, d2) = (scratch_dir()?, scratch_dir()?);
        let wal = Wal::open(d1.path(), Options::default())?;
        let log = okaywal::WriteAheadLog::recover(d2.path(), NoCheckpoint)?;
        let varve = || -> Res<()> {
            wal.append(&rec)?.wait()?;
            Ok(())
        };
        let okay = || okaywal_append(&log, &rec);
        let mut r = interleaved(threads, budget, &[&varve, &okay])?;
        let (o_ops, mut o) = r.pop().ok_or("missing")?;
        let (v_ops, mut v) = r.pop().ok_or("missing")?;
        log.shutdown()?;
        drop(wal);
        let w = format!("{threads} threads, 1024 B durable appends");
        okaywal_rows(&w, (v_ops, &mut v), (o_ops, &mut o));
    }
    Ok(())
}

fn main() -> Res<()> {
    let budget = Duration::from_millis(scaled(600, 3_000));
    if peer_only() {
        return peer_only_rows(budget);
    }

    // The disk's own limits.
    let dir = scratch_dir()?;
    let mut raw = machine::fdatasync_append_latency(dir.path(), 4096, budget * 2)?;
    let raw_p50 = raw.percentile_us(50.0);
    reference(
        "wal",
        "raw append 4 KiB + fdatasync, p50",
        "µs",
        Better::Lower,
        "raw file",
        raw_p50,
    );
    reference(
        "wal",
        "raw append 4 KiB + fdatasync, p99",
        "µs",
        Better::Lower,
        "raw file",
        raw.percentile_us(99.0),
    );
    let bw = machine::write_sync_bandwidth(dir.path(), scaled(64 << 20, 256 << 20), 1 << 20)?;
    reference(
        "wal",
        "sequential write, fdatasync per 1 MiB",
        "MB/s",
        Better::Higher,
        "raw file",
        bw,
    );

    // A lone writer's durable append latency, 4 KiB like the raw probes, interleaved with
    // the pre-zeroed raw probe.
    {
        let d = scratch_dir()?;
        let wal = Wal::open(d.path(), Options::default())?;
        let zf = ZeroedFile::open(d.path(), 4096)?;
        let rec = vec![0xA5u8; 4096];
        let varve = || -> Res<()> {
            wal.append(&rec)?.wait()?;
            Ok(())
        };
        let zeroed = || zf.append();
        let mut r = interleaved(1, budget * 2, &[&varve, &zeroed])?;
        let (mut z, mut v) = (r.pop().ok_or("missing")?.1, r.pop().ok_or("missing")?.1);
        reference(
            "wal",
            "raw append 4 KiB + fdatasync into written blocks, p50",
            "µs",
            Better::Lower,
            "raw file (pre-zeroed)",
            z.percentile_us(50.0),
        );
        compare(
            "wal",
            "lone writer durable append 4 KiB, p50",
            "µs",
            Better::Lower,
            v.percentile_us(50.0),
            "raw append+fdatasync (fallocated file)",
            raw_p50,
        );
        compare(
            "wal",
            "lone writer durable append 4 KiB, p50",
            "µs",
            Better::Lower,
            v.percentile_us(50.0),
            "raw append+fdatasync, pre-zeroed file",
            z.percentile_us(50.0),
        );
        compare(
            "wal",
            "lone writer durable append 4 KiB, p99",
            "µs",
            Better::Lower,
            v.percentile_us(99.0),
            "raw append+fdatasync, pre-zeroed file",
            z.percentile_us(99.0),
        );
    }

    // Blocking writers: Varve vs Mutex<File> vs okaywal. At 16 and 64 threads also vs an
    // okaywal that never checkpoints, whose log grows like Varve's fresh one (see the module
    // docs): the default okaywal reuses its 1 MiB files from its second segment on.
    for threads in [1usize, 16, 64] {
        for size in [128usize, 1024, 4096] {
            let rec = vec![0x3Cu8; size];
            let (d1, d2, d3, d4) = (
                scratch_dir()?,
                scratch_dir()?,
                scratch_dir()?,
                scratch_dir()?,
            );
            let wal = Wal::open(d1.path(), Options::default())?;
            let mf = MutexFile::open(d2.path())?;
            let log = okaywal::WriteAheadLog::recover(d3.path(), NoCheckpoint)?;
            let grow = okaywal::Configuration::default_for(d4.path())
                .checkpoint_after_bytes(u64::MAX)
                .open(NoCheckpoint)?;
            let varve = || -> Res<()> {
                wal.append(&rec)?.wait()?;
                Ok(())
            };
            let mutex = || mf.append(&rec);
            let okay = || okaywal_append(&log, &rec);
            let okay_grow = || okaywal_append(&grow, &rec);
            let mut contenders: Vec<&(dyn Fn() -> Res<()> + Sync)> = vec![&varve, &mutex, &okay];
            if threads > 1 {
                contenders.push(&okay_grow);
            }
            let mut r = interleaved(threads, budget, &contenders)?;
            let grown = if threads > 1 { r.pop() } else { None };
            let (o_ops, mut o) = r.pop().ok_or("missing")?;
            let (m_ops, _) = r.pop().ok_or("missing")?;
            let (v_ops, mut v) = r.pop().ok_or("missing")?;
            log.shutdown()?;
            grow.shutdown()?;
            drop(wal);
            let w = format!("{threads} threads, {size} B durable appends");
            okaywal_rows(&w, (v_ops, &mut v), (o_ops, &mut o));
            if let Some((g_ops, mut g)) = grown {
                peer_rows(
                    &format!("{w}, growing logs"),
                    "okaywal, never checkpointed",
                    (v_ops, &mut v),
                    (g_ops, &mut g),
                );
            }
            compare(
                "wal",
                &w,
                "ops/s",
                Better::Higher,
                v_ops,
                "Mutex<File>+fdatasync",
                m_ops,
            );
        }
    }

    // Blocking writers on checkpointed logs (see the module docs): Varve vs okaywal.
    for threads in [16usize, 64] {
        for size in [128usize, 1024, 4096] {
            let rec = vec![0x5Au8; size];
            let (d1, d2) = (scratch_dir()?, scratch_dir()?);
            let wal = Wal::open(d1.path(), Options::default())?;
            warm_checkpointed(&wal, &rec)?;
            let log = okaywal::WriteAheadLog::recover(d2.path(), NoCheckpoint)?;
            for _ in 0..(8usize << 20) / size {
                okaywal_append(&log, &rec)?;
            }
            let stop = std::sync::atomic::AtomicBool::new(false);
            let mut r = std::thread::scope(|s| {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5));
                        // A failed truncation shows as a missing row, not a wrong one.
                        if wal.truncate_before(wal.durable_lsn()).is_err() {
                            return;
                        }
                    }
                });
                let varve = || -> Res<()> {
                    wal.append(&rec)?.wait()?;
                    Ok(())
                };
                let okay = || okaywal_append(&log, &rec);
                let r = interleaved(threads, budget, &[&varve, &okay]);
                stop.store(true, Ordering::Relaxed);
                r
            })?;
            let (o_ops, mut o) = r.pop().ok_or("missing")?;
            let (v_ops, mut v) = r.pop().ok_or("missing")?;
            log.shutdown()?;
            drop(wal);
            let w = format!("{threads} threads, {size} B durable appends, checkpointed log");
            okaywal_rows(&w, (v_ops, &mut v), (o_ops, &mut o));
            if threads == 16 && size == 1024 {
                reopen_row(d1.path())?;
            }
        }
    }

    // One pipelined producer: append many 1 KiB records, wait on the last ticket.
    {
        let d = scratch_dir()?;
        let wal = Wal::open(d.path(), Options::default())?;
        let rec = vec![0x77u8; 1024];
        let total: u64 = scaled(64 << 20, 512 << 20);
        let n = total / 1024;
        let written = AtomicU64::new(0);
        let start = Instant::now();
        let mut last = None;
        for _ in 0..n {
            last = Some(wal.append(&rec)?);
            written.fetch_add(1024, Ordering::Relaxed);
        }
        if let Some(t) = last {
            t.wait()?;
        }
        let mbs = written.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64() / 1e6;
        compare(
            "wal",
            "pipelined producer, 1 KiB records",
            "MB/s",
            Better::Higher,
            mbs,
            "raw write+fdatasync per 1 MiB",
            bw,
        );
    }
    Ok(())
}
