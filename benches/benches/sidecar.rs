//! varve-sidecar: large-blob reads (cold and warm, under each cache policy) against two
//! baselines that do not hash: a plain `pread` of the same bytes from a plain file, and a
//! plain heed `get` + copy; page-cache residency sampled every 10 ms from its own thread;
//! blob writes against the same payloads stored inline in a plain heed database; 16
//! threads storing 4 KiB-1 MiB blobs with and without group commit; and a matrix of
//! read-advice variants on a raw file (printed).
//!
//! `VARVE_SIDECAR_BENCH=read,write,group,hot,matrix` picks sections (all by default).
//!
//! # Why the read path uses `pread` with drop-behind (the advice matrix)
//!
//! The seed's concern: reading a 5 MB blob through LMDB's map brings it into the page cache
//! (and the reader's RSS), evicting the hot event history. The issue measured that
//! `MADV_DONTNEED` alone frees RSS but none of the page cache, that adding
//! `POSIX_FADV_DONTNEED` still leaves much of it (read-ahead pages are under I/O, hence
//! locked, when the drop passes them, and mapped pages are never dropped), and that
//! `MADV_PAGEOUT` leaves some. The `matrix` section repeats that investigation on a raw
//! 128 MiB file read cold in 1 MiB chunks. Four runs (Linux 6.18, ext4 on a virtio disk,
//! `read_ahead_kb` 8192, a 2-core VM shared with three other builds) gave identical
//! page-cache and RSS figures; the MB/s ranges show how noisy the machine was:
//!
//! | variant | MB/s (4 runs) | page cache left | RSS growth |
//! |---|---:|---:|---:|
//! | mmap, no advice | 637–1171 | 128 MiB (all) | 128 MiB |
//! | mmap + `MADV_DONTNEED` behind | 165–1037 | 128 MiB | 0 |
//! | mmap + `MADV_DONTNEED` + `POSIX_FADV_DONTNEED` behind | 302–1221 | 88 MiB | 0 |
//! | mmap + `MADV_PAGEOUT` behind | 138–953 | 44 MiB | 0 |
//! | mmap (`MADV_RANDOM`) + `MADV_WILLNEED` ahead + both drops behind | 209–271 | 0 | 0 |
//! | `pread` + `POSIX_FADV_DONTNEED` behind (default read-ahead) | 93–1048 | 98 MiB | 1 MiB (buffer) |
//! | `pread` + `FADV_RANDOM` + `FADV_WILLNEED` 1 chunk ahead + drop behind | 257–636 | 0 (≤ 1 MiB during) | 1 MiB |
//! | **`pread` + `FADV_RANDOM` + `FADV_WILLNEED` 2 chunks ahead + drop behind** | 199–711 | 0 (≤ 2 MiB during) | 1 MiB |
//! | `pread` + `FADV_RANDOM` + `FADV_WILLNEED` 4 chunks ahead + drop behind | 122–571 | 0 (≤ 4 MiB during) | 1 MiB |
//! | the same with 4 MiB chunks, 2 ahead (1 run) | 224 | 0 (≤ 8 MiB during) | 4 MiB |
//! | `pread` with `O_DIRECT` | 296–754 | 0 | 1 MiB |
//!
//! Every mmap variant with the kernel's own read-ahead leaves pages behind: read-ahead runs
//! ahead of the drop, and pages that are locked for I/O or still mapped are skipped by
//! `POSIX_FADV_DONTNEED`. Reading through the map with read-ahead turned off works but is
//! slow (one fault per page after the advised window). Hence the default read path:
//! `pread` with `FADV_RANDOM`, `FADV_WILLNEED` two chunks ahead, `FADV_DONTNEED` behind.
//!
//! # Cold reads against plain `pread` (issue 16 item 11)
//!
//! Measured from outside at 0.61-0.80x of plain `pread` for 4 MiB blobs. `perf` (call
//! graphs and context-switch samples of a loop of cold 4 MiB reads) showed: every blob
//! started with a wait for a 2 MiB read-ahead request (the first page's `pread` waited for
//! the whole first `POSIX_FADV_WILLNEED` bio: 118 waits in 128 blob reads); the reader's
//! CPU was 330-370 µs per MiB against plain `pread`'s 125-140, about half of it in
//! xxhash-rust's SSE2 XXH3 (about 5.5 GB/s here) and most of the rest page-cache work on
//! 4 KiB folios (`POSIX_FADV_WILLNEED` allocates one folio per page where the kernel's own
//! read-ahead of plain `pread` uses large folios, and `POSIX_FADV_DONTNEED` frees them
//! again). Changes: the first piece of a run is requested on its own (the first wait is
//! for a small request: 14 waits in 128 reads), pieces of 256 KiB with a 2 MiB window
//! topped up in steps of at least 1 MiB, each digest chunk hashed as its pieces land, and
//! the XXH3 long-input loop in AVX2 with a prefetch one page ahead (the loop stalled on
//! loads at page boundaries). What is left is the page-cache work on 4 KiB folios and the
//! wait for each blob's first piece (plain `pread` over back-to-back blobs reads ahead
//! across blob boundaries; a blob read cannot).
//!
//! Earlier figures of the acceptance test (`tests/page_cache.rs`, format version 1, before
//! the 10 ms sampler): drop-behind grew RSS by 4.1 MiB (the then one-blob verify buffer)
//! and kept at most 0.1 MiB of `blobs.mdb` cached from cold; from a fully cached file it
//! dropped 256 MiB to about 2 MiB; `Keep` left 256 MiB cached and in RSS. Current figures
//! come from running this bench (`cargo xtask bench --quick --filter sidecar`).

use std::error::Error;
use std::fs::File;
use std::io::{Read as _, Write};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{CommitOrAbort, EnvOpenOptions};
use varve_benches::measure::rss_bytes;
use varve_benches::report::{Better, compare};
use varve_benches::{scaled, scratch_dir};
use varve_sidecar::{CachePolicy, Payload, Sidecar, SidecarOptions};

type Res<T = ()> = Result<T, Box<dyn Error>>;

const MIB: f64 = (1 << 20) as f64;
const CHUNK: usize = 1 << 20;

fn page() -> usize {
    rustix::param::page_size()
}

/// Bytes of `path` resident in the page cache.
fn cached(path: &Path) -> Res<u64> {
    Ok(varve_testkit::mem::page_cache_bytes(path))
}

/// Syncs `path` and drops it from the page cache.
fn drop_cache(path: &Path) -> Res {
    let f = File::open(path)?;
    f.sync_all()?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

/// Reads `path` through the page cache, leaving it there.
fn warm(path: &Path) -> Res {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; CHUNK];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

fn trim_heap() {
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
}

fn rss() -> u64 {
    rss_bytes().unwrap_or(0)
}

/// A writer that touches every byte (xor of 8-byte words), like a consumer would.
#[derive(Default)]
struct Touch {
    xor: u64,
    bytes: u64,
}

impl Write for Touch {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut words = buf.chunks_exact(8);
        for w in &mut words {
            self.xor ^= u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        for &b in words.remainder() {
            self.xor ^= u64::from(b);
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `len` pseudo-random bytes; `stamp` makes payloads of the same base differ.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for w in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn stamp(base: &[u8], n: u64) -> Vec<u8> {
    let mut b = base.to_vec();
    for page in b.chunks_mut(4096) {
        let k = page.len().min(8);
        page[..k].copy_from_slice(&n.to_le_bytes()[..k]);
    }
    b
}

/// Samples the page-cache residency of some files every 10 ms on its own thread (the
/// peak is missed by samples taken between blobs or between a sink's buffers).
struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<u64>>,
}

impl Sampler {
    fn start(paths: &[&Path]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                let done = flag.load(Ordering::Acquire);
                let now: u64 = paths.iter().map(|p| cached(p).unwrap_or(0)).sum();
                peak = peak.max(now);
                if done {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// The peak residency seen (after one last sample).
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.handle.take().map_or(0, |h| h.join().unwrap_or(0))
    }
}

/// One pass over all blobs: MB/s, RSS growth since `rss_base`, page-cache residency
/// (peak above what was cached before, sampled every 10 ms, and what is left after).
struct Pass {
    mbps: f64,
    /// CPU time (user + system) of the reading thread per MiB read, in µs.
    cpu_us_per_mib: f64,
    rss_growth_mib: f64,
    peak_mib: f64,
    /// The peak itself (not above what was cached before), in MiB.
    peak_abs_mib: f64,
    cached_mib: f64,
}

/// Times `read_all` (which streams every blob into the sink) with residency sampling of
/// `file`.
fn timed_pass(file: &Path, rss_base: u64, read_all: impl FnOnce(&mut Touch) -> Res) -> Res<Pass> {
    let before = cached(file)?;
    let sampler = Sampler::start(&[file]);
    let mut sink = Touch::default();
    let cpu0 = thread_cpu_us();
    let t = Instant::now();
    read_all(&mut sink)?;
    let secs = t.elapsed().as_secs_f64();
    let cpu = thread_cpu_us() - cpu0;
    let peak = sampler.finish();
    std::hint::black_box(sink.xor);
    Ok(Pass {
        mbps: sink.bytes as f64 / secs / 1e6,
        cpu_us_per_mib: cpu / (sink.bytes as f64 / MIB),
        rss_growth_mib: rss().saturating_sub(rss_base) as f64 / MIB,
        peak_mib: peak.saturating_sub(before) as f64 / MIB,
        peak_abs_mib: peak as f64 / MIB,
        cached_mib: cached(file)? as f64 / MIB,
    })
}

/// User + system CPU time of the calling thread, in µs.
fn thread_cpu_us() -> f64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is valid on Linux.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

/// Cold and warm passes of `read_all` over `file`: cold after dropping it from the page
/// cache, warm after reading it all through the page cache (while `COLD_ONLY` is set, the
/// cold pass twice instead).
fn cold_and_warm(file: &Path, mut read_all: impl FnMut(&mut Touch) -> Res) -> Res<(Pass, Pass)> {
    drop_cache(file)?;
    trim_heap();
    let base = rss();
    let cold = timed_pass(file, base, &mut read_all)?;
    if COLD_ONLY.load(Ordering::Relaxed) {
        drop_cache(file)?;
    } else {
        warm(file)?;
    }
    let warm = timed_pass(file, base, &mut read_all)?;
    Ok((cold, warm))
}

/// Set while the alternating cold rounds run (see `read_benches`).
static COLD_ONLY: AtomicBool = AtomicBool::new(false);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Cold and warm `read_to` passes under `opts`.
fn read_policy(dir: &Path, payloads: &[Payload], opts: SidecarOptions) -> Res<(Pass, Pass)> {
    let sc = Sidecar::open(dir, opts)?;
    let path = sc.path().to_path_buf();
    cold_and_warm(&path, |sink| {
        for p in payloads {
            sc.read_to(p, sink)?;
        }
        Ok(())
    })
}

/// Baseline: the same blobs back to back in a plain file, each read with plain `pread`s of
/// its bytes (1 MiB at a time into one buffer, the kernel's default read-ahead, no hashing,
/// no advice) into the same sink.
fn pread_baseline(path: &Path, ranges: &[(u64, usize)]) -> Res<(Pass, Pass)> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; CHUNK];
    cold_and_warm(path, |sink| {
        let f = File::open(path)?;
        for &(at, len) in ranges {
            let mut done = 0;
            while done < len {
                let n = CHUNK.min(len - done);
                f.read_exact_at(&mut buf[..n], at + done as u64)?;
                sink.write_all(&buf[..n])?;
                done += n;
            }
        }
        Ok(())
    })
}

/// Baseline: the same blobs as values of a plain heed database (default flags, so LMDB's
/// map has the kernel's read-around), each read with `get` and copied out (no hashing).
fn heed_baseline(dir: &Path, blobs: &[Vec<u8>]) -> Res<(Pass, Pass)> {
    std::fs::create_dir_all(dir)?;
    let total: usize = blobs.iter().map(Vec::len).sum();
    let mut opts = EnvOpenOptions::new();
    opts.map_size((total * 2).max(1 << 30)).max_dbs(1);
    // SAFETY: a fresh directory used by this bench only; nothing else maps the file.
    let env = unsafe { opts.open(dir) }?;
    let wtxn = env.write_txn()?;
    let db = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit(
                dbo.create_database::<Bytes, Bytes>(wtxn, Some("blobs"))?,
            ))
        })?
        .commit()
        .ok_or("database not created")?;
    for (k, b) in blobs.iter().enumerate() {
        let mut wtxn = env.write_txn()?;
        db.put(&mut wtxn, &(k as u64).to_be_bytes(), b)?;
        wtxn.commit()?;
    }
    let path = dir.join("data.mdb");
    let mut copy: Vec<u8> = Vec::new();
    let result = cold_and_warm(&path, |sink| {
        let rtxn = env.read_txn()?;
        for k in 0..blobs.len() as u64 {
            let v = db.get(&rtxn, &k.to_be_bytes())?.ok_or("blob missing")?;
            copy.clear();
            copy.extend_from_slice(v);
            sink.write_all(&copy)?;
        }
        Ok(())
    });
    drop(env);
    result
}

fn read_benches() -> Res {
    let dir = scratch_dir()?;
    for (blob, count) in [
        (64usize << 20, scaled(2usize, 16)),
        (4 << 20, scaled(32, 256)),
    ] {
        let store = dir.path().join(format!("read-{}", blob >> 20));
        let base = pattern(blob, 7);
        let blobs: Vec<Vec<u8>> = (0..count as u64).map(|n| stamp(&base, n)).collect();
        let payloads = {
            let sc = Sidecar::open(&store, SidecarOptions::default())?;
            let mut out = Vec::new();
            for b in &blobs {
                out.push(sc.store(b)?);
            }
            out
        };
        let plain = dir.path().join(format!("plain-{}", blob >> 20));
        let mut ranges = Vec::new();
        {
            let mut f = File::create(&plain)?;
            let mut at = 0u64;
            for b in &blobs {
                f.write_all(b)?;
                ranges.push((at, b.len()));
                at += b.len() as u64;
            }
            f.sync_all()?;
        }
        let (p_cold, p_warm) = pread_baseline(&plain, &ranges)?;
        let (h_cold, h_warm) =
            heed_baseline(&dir.path().join(format!("heed-{}", blob >> 20)), &blobs)?;
        drop(blobs);

        let total = (blob * count) >> 20;
        let what = format!("{count} x {} MiB blobs ({total} MiB)", blob >> 20);

        // The shared machine's disk speed drifts by up to 10x between runs: the headline
        // ratio comes from alternating cold passes of plain pread and of the default read
        // path (two of each per round), as the median of the per-round ratios.
        COLD_ONLY.store(true, Ordering::Relaxed);
        let (mut ratios, mut theirs, mut cpu) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..scaled(5, 9) {
            let (p1, p2) = pread_baseline(&plain, &ranges)?;
            let (d1, d2) = read_policy(&store, &payloads, SidecarOptions::default())?;
            let p = (p1.mbps + p2.mbps) / 2.0;
            ratios.push((d1.mbps + d2.mbps) / 2.0 / p);
            theirs.push(p);
            cpu.push((
                (d1.cpu_us_per_mib + d2.cpu_us_per_mib) / 2.0,
                (p1.cpu_us_per_mib + p2.cpu_us_per_mib) / 2.0,
            ));
        }
        println!(
            "sidecar read {what}, cold: reader CPU µs per MiB (drop-behind verified / plain pread) per round: {}",
            cpu.iter()
                .map(|(d, p)| format!("{d:.0}/{p:.0}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        COLD_ONLY.store(false, Ordering::Relaxed);
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        println!(
            "sidecar read {what}, cold, drop-behind verified / plain pread per round: {}",
            sorted
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        let p_med = median(theirs);
        compare(
            "sidecar",
            &format!("read_to {what}, cold, drop-behind, verified (median of alternating rounds)"),
            "MB/s",
            Better::Higher,
            p_med * median(ratios),
            "plain pread",
            p_med,
        );
        let (d_cold, d_warm) = read_policy(&store, &payloads, SidecarOptions::default())?;
        let noverify = SidecarOptions::default().verify_on_read(false);
        let (n_cold, n_warm) = read_policy(&store, &payloads, noverify)?;
        let direct = SidecarOptions::default().cache_policy(CachePolicy::Direct);
        let (x_cold, x_warm) = read_policy(&store, &payloads, direct)?;
        let keep = SidecarOptions::default().cache_policy(CachePolicy::Keep);
        let (k_cold, k_warm) = read_policy(&store, &payloads, keep)?;

        for (temp, p, h, d, n, x, k) in [
            ("cold", &p_cold, &h_cold, &d_cold, &n_cold, &x_cold, &k_cold),
            ("warm", &p_warm, &h_warm, &d_warm, &n_warm, &x_warm, &k_warm),
        ] {
            for (variant, v) in [
                ("drop-behind, verified", d),
                ("drop-behind, verify off", n),
                ("O_DIRECT, verified", x),
                ("Keep (mmap), verified", k),
            ] {
                compare(
                    "sidecar",
                    &format!("read_to {what}, {temp}, {variant}"),
                    "MB/s",
                    Better::Higher,
                    v.mbps,
                    "plain pread",
                    p.mbps,
                );
            }
            compare(
                "sidecar",
                &format!("read_to {what}, {temp}, drop-behind, verified"),
                "MB/s",
                Better::Higher,
                d.mbps,
                "heed get + copy",
                h.mbps,
            );
            if temp == "cold" {
                compare(
                    "sidecar",
                    &format!("page cache peak during {temp} read (10 ms samples), drop-behind"),
                    "MiB",
                    Better::Lower,
                    d.peak_mib.max(0.01),
                    "plain pread",
                    p.peak_mib.max(0.01),
                );
            }
            compare(
                "sidecar",
                &format!("page cache left after {temp} read, drop-behind"),
                "MiB",
                Better::Lower,
                d.cached_mib.max(0.01),
                "plain pread",
                p.cached_mib.max(0.01),
            );
            compare(
                "sidecar",
                &format!("RSS growth after {temp} read, drop-behind"),
                "MiB",
                Better::Lower,
                d.rss_growth_mib.max(0.01),
                "heed get + copy",
                h.rss_growth_mib.max(0.01),
            );
        }
        println!(
            "sidecar read {what}: cold page-cache peak above before: drop-behind {:.1} MiB \
             (bound: 2 pieces of 256 KiB + 2 MiB read-ahead = 2.5 MiB), verify off {:.1} MiB, \
             O_DIRECT {:.1} MiB, plain pread {:.1} MiB, heed {:.1} MiB",
            d_cold.peak_mib, n_cold.peak_mib, x_cold.peak_mib, p_cold.peak_mib, h_cold.peak_mib
        );
    }
    Ok(())
}

/// Hot blobs (`SidecarOptions::hot_budget`): the second read of blobs kept in the page
/// cache against a plain `pread` of the same bytes from a warm plain file, in alternating
/// rounds; residency sampled every 10 ms, against the budget, also while a working set
/// twice the budget churns through it.
fn hot_benches() -> Res {
    let dir = scratch_dir()?;
    let blob = 4usize << 20;
    let count = scaled(8usize, 32);
    let base = pattern(blob, 13);
    let blobs: Vec<Vec<u8>> = (0..count as u64).map(|n| stamp(&base, n)).collect();
    let store = dir.path().join("hot");
    let payloads = {
        let sc = Sidecar::open(&store, SidecarOptions::default())?;
        let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
        sc.store_many(&refs)?
    };
    let plain = dir.path().join("plain-hot");
    let mut ranges = Vec::new();
    {
        let mut f = File::create(&plain)?;
        let mut at = 0u64;
        for b in &blobs {
            f.write_all(b)?;
            ranges.push((at, b.len()));
            at += b.len() as u64;
        }
        f.sync_all()?;
    }
    drop(blobs);
    let total_mib = (blob * count) >> 20;
    // Every blob fits: runs are 4 MiB + 3 pages.
    let budget = (blob as u64 + (64 << 10)) * count as u64;
    let what = format!("{count} x 4 MiB hot blobs ({total_mib} MiB), second read");
    let (mut ratios, mut theirs, mut peaks) = (Vec::new(), Vec::new(), Vec::new());
    let mut buf = vec![0u8; CHUNK];
    for _ in 0..scaled(5, 9) {
        // Plain warm pread.
        warm(&plain)?;
        let p = timed_pass(&plain, 0, |sink| {
            use std::os::unix::fs::FileExt as _;
            let f = File::open(&plain)?;
            for &(at, len) in &ranges {
                let mut done = 0;
                while done < len {
                    let n = CHUNK.min(len - done);
                    f.read_exact_at(&mut buf[..n], at + done as u64)?;
                    sink.write_all(&buf[..n])?;
                    done += n;
                }
            }
            Ok(())
        })?;
        drop_cache(&plain)?;
        // The sidecar with a hot set: a first (cold) read admits every blob, the second
        // is timed.
        let sc = Sidecar::open(&store, SidecarOptions::default().hot_budget(budget))?;
        drop_cache(sc.path())?;
        let mut first = Touch::default();
        for p in &payloads {
            sc.read_to(p, &mut first)?;
        }
        let h = timed_pass(sc.path(), 0, |sink| {
            for p in &payloads {
                sc.read_to(p, sink)?;
            }
            Ok(())
        })?;
        if sc.hot_bytes() > budget {
            return Err("hot set over its budget".into());
        }
        peaks.push(h.peak_abs_mib);
        ratios.push(h.mbps / p.mbps);
        theirs.push(p.mbps);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "sidecar {what}, hot (verified, through the map) / plain warm pread per round: {}",
        sorted
            .iter()
            .map(|r| format!("{r:.2}x"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let p_med = median(theirs);
    compare(
        "sidecar",
        &format!("read_to {what}, hot set, verified (median of alternating rounds)"),
        "MB/s",
        Better::Higher,
        p_med * median(ratios),
        "plain warm pread",
        p_med,
    );
    compare(
        "sidecar",
        &format!(
            "page cache peak of blobs.mdb during the hot second read (10 ms samples), \
             {total_mib} MiB of blobs kept"
        ),
        "MiB",
        Better::Lower,
        peaks.iter().copied().fold(0.0, f64::max).max(0.01),
        "hot budget",
        budget as f64 / MIB,
    );

    // A working set twice the budget, read in a skewed order (half of the reads go to an
    // eighth of the blobs): residency against the budget while blobs are evicted.
    let half = budget / 2;
    let sc = Sidecar::open(&store, SidecarOptions::default().hot_budget(half))?;
    drop_cache(sc.path())?;
    let hot_few = (count / 8).max(1);
    let churn = timed_pass(sc.path(), 0, |sink| {
        for round in 0..3 {
            for (i, p) in payloads.iter().enumerate() {
                sc.read_to(&payloads[(i + round) % hot_few], sink)?;
                sc.read_to(p, sink)?;
            }
        }
        Ok(())
    })?;
    compare(
        "sidecar",
        &format!(
            "page cache peak, working set 2x the hot budget ({} MiB budget, 10 ms samples)",
            half >> 20
        ),
        "MiB",
        Better::Lower,
        churn.peak_abs_mib.max(0.01),
        "hot budget + 2.5 MiB read window",
        half as f64 / MIB + 2.5,
    );
    println!(
        "sidecar hot set, working set 2x the budget: peak {:.1} MiB cached, {:.1} MiB left, \
         budget {:.1} MiB, {:.0} MB/s",
        churn.peak_abs_mib,
        churn.cached_mib,
        half as f64 / MIB,
        churn.mbps
    );
    Ok(())
}

/// 16 threads storing blobs of 4 KiB to 1 MiB (log-uniform sizes), each with `store`, with
/// and without group commit.
fn group_benches() -> Res {
    const THREADS: u64 = 16;
    let dir = scratch_dir()?;
    let per_thread = scaled(24u64, 160);
    let base = pattern(1 << 20, 11);
    let size = |t: u64, i: u64| {
        // 4 KiB << (0..=8): log-uniform from 4 KiB to 1 MiB.
        let mut x = (t << 32 | i).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 29;
        4096usize << (x % 9)
    };
    let run = |group_commit: bool| -> Res<(f64, f64)> {
        let sc = Sidecar::open(
            dir.path().join(format!("group-{group_commit}")),
            SidecarOptions::default().group_commit(group_commit),
        )?;
        let bytes = std::sync::atomic::AtomicU64::new(0);
        let t = Instant::now();
        std::thread::scope(|scope| -> Res {
            let handles: Vec<_> = (0..THREADS)
                .map(|th| {
                    let (sc, base, bytes) = (&sc, &base, &bytes);
                    scope.spawn(move || -> Result<(), String> {
                        for i in 0..per_thread {
                            let mut b = base[..size(th, i)].to_vec();
                            b[..16].copy_from_slice(&[th.to_le_bytes(), i.to_le_bytes()].concat());
                            sc.store(&b).map_err(|e| e.to_string())?;
                            bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join().map_err(|_| "store thread panicked")??;
            }
            Ok(())
        })?;
        let secs = t.elapsed().as_secs_f64();
        let stores = (THREADS * per_thread) as f64;
        Ok((
            stores / secs,
            bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
        ))
    };
    let (g_ops, g_mbps) = run(true)?;
    let (s_ops, s_mbps) = run(false)?;
    let what = "16 threads store 4 KiB-1 MiB blobs";
    compare(
        "sidecar",
        &format!("{what}, group commit"),
        "stores/s",
        Better::Higher,
        g_ops,
        "one commit per store",
        s_ops,
    );
    compare(
        "sidecar",
        &format!("{what}, group commit"),
        "MB/s",
        Better::Higher,
        g_mbps,
        "one commit per store",
        s_mbps,
    );
    Ok(())
}

fn write_benches() -> Res {
    let dir = scratch_dir()?;
    for size in [4usize << 10, 64 << 10, 5 << 20] {
        // Small payloads are bound by one fsync per 16; keep their run short.
        let total = if size < 1 << 20 {
            scaled(16usize << 20, 64 << 20)
        } else {
            scaled(64 << 20, 512 << 20)
        };
        let n = (total / size).max(4);
        let batch = 16.min(n);
        let base = pattern(size, size as u64);
        let label = if size >= 1 << 20 {
            format!("{} MiB", size >> 20)
        } else {
            format!("{} KiB", size >> 10)
        };

        let store_all = |policy: CachePolicy| -> Res<(f64, u64)> {
            let sc_dir = dir.path().join(format!("sc-{size}-{policy:?}"));
            let opts = SidecarOptions::default().cache_policy(policy);
            let sc = Sidecar::open(&sc_dir, opts)?;
            let t = Instant::now();
            for first in (0..n).step_by(batch) {
                let blobs: Vec<Vec<u8>> = (first..(first + batch).min(n))
                    .map(|i| stamp(&base, i as u64))
                    .collect();
                let refs: Vec<&[u8]> = blobs.iter().map(Vec::as_slice).collect();
                sc.store_many(&refs)?;
            }
            let secs = t.elapsed().as_secs_f64();
            Ok((secs, std::fs::metadata(sc.path())?.len()))
        };
        let (sc_secs, sc_size) = store_all(CachePolicy::DropBehind)?;
        // The same writes without dropping them from the page cache afterwards.
        let (keep_secs, _) = store_all(CachePolicy::Keep)?;

        let heed_dir = dir.path().join(format!("heed-{size}"));
        std::fs::create_dir_all(&heed_dir)?;
        let mut opts = EnvOpenOptions::new();
        opts.map_size((total * 4).max(1 << 30)).max_dbs(1);
        // SAFETY: a fresh directory used by this bench only; nothing else maps the file.
        let env = unsafe { opts.open(&heed_dir) }?;
        let wtxn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                Ok(CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database::<Bytes, Bytes>(wtxn, Some("events"))?,
                ))
            })?
            .commit()
            .ok_or("database not created")?;
        let t = Instant::now();
        for first in (0..n).step_by(batch) {
            let blobs: Vec<Vec<u8>> = (first..(first + batch).min(n))
                .map(|i| stamp(&base, i as u64))
                .collect();
            let mut wtxn = env.write_txn()?;
            for (k, b) in (first..).zip(&blobs) {
                db.put(&mut wtxn, &(k as u64).to_be_bytes(), b)?;
            }
            wtxn.commit()?;
        }
        let heed_secs = t.elapsed().as_secs_f64();
        let heed_size = std::fs::metadata(heed_dir.join("data.mdb"))?.len();
        drop(env);

        let bytes = (n * size) as f64;
        compare(
            "sidecar",
            &format!("store_many {label} payloads, 16 per txn"),
            "MB/s",
            Better::Higher,
            bytes / sc_secs / 1e6,
            "inline in plain heed db",
            bytes / heed_secs / 1e6,
        );
        compare(
            "sidecar",
            &format!("store_many {label} payloads, 16 per txn, no page-cache drop (Keep)"),
            "MB/s",
            Better::Higher,
            bytes / keep_secs / 1e6,
            "inline in plain heed db",
            bytes / heed_secs / 1e6,
        );
        compare(
            "sidecar",
            &format!(
                "file size after {} MiB of {label} payloads",
                (n * size) >> 20
            ),
            "MiB",
            Better::Lower,
            sc_size as f64 / MIB,
            "inline in plain heed db",
            heed_size as f64 / MIB,
        );
    }
    Ok(())
}

/// A raw-file experiment: read a cold file in 1 MiB chunks with one advice variant.
#[derive(Clone, Copy, Debug)]
enum Variant {
    MmapPlain,
    MmapDontneed,
    MmapDontneedFadvise,
    MmapPageout,
    MmapWillneedDontneedFadvise,
    PreadFadvise,
    /// FADV_RANDOM, FADV_WILLNEED on the next `n` chunks, FADV_DONTNEED behind.
    PreadRandomAhead(usize),
    /// The same with 4 MiB chunks, two ahead.
    PreadRandomBigChunks,
    Direct,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::MmapPlain => "mmap, no advice",
            Variant::MmapDontneed => "mmap + MADV_DONTNEED behind",
            Variant::MmapDontneedFadvise => "mmap + MADV_DONTNEED + FADV_DONTNEED behind",
            Variant::MmapPageout => "mmap + MADV_PAGEOUT behind",
            Variant::MmapWillneedDontneedFadvise => {
                "mmap(RANDOM) + MADV_WILLNEED ahead + MADV_DONTNEED + FADV_DONTNEED behind"
            }
            Variant::PreadFadvise => "pread + FADV_DONTNEED behind",
            Variant::PreadRandomAhead(1) => {
                "pread(FADV_RANDOM) + FADV_WILLNEED 1 chunk ahead + FADV_DONTNEED behind"
            }
            Variant::PreadRandomAhead(2) => {
                "pread(FADV_RANDOM) + FADV_WILLNEED 2 chunks ahead + FADV_DONTNEED behind (chosen)"
            }
            Variant::PreadRandomAhead(_) => {
                "pread(FADV_RANDOM) + FADV_WILLNEED 4 chunks ahead + FADV_DONTNEED behind"
            }
            Variant::PreadRandomBigChunks => {
                "pread(FADV_RANDOM), 4 MiB chunks, FADV_WILLNEED 2 ahead + FADV_DONTNEED behind"
            }
            Variant::Direct => "pread O_DIRECT",
        }
    }
}

fn madvise(addr: *mut libc::c_void, len: usize, advice: libc::c_int) {
    // SAFETY: callers pass a range inside the read-only shared file mapping of
    // `run_variant`; on such a mapping DONTNEED/PAGEOUT/WILLNEED/RANDOM never change what
    // a later read sees (pages refault from the file).
    unsafe { libc::madvise(addr, len, advice) };
}

fn fadvise(f: &File, off: usize, len: usize, advice: libc::c_int) {
    // SAFETY: plain syscall on an open descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), off as i64, len as i64, advice) };
}

/// Returns (MB/s, peak page cache MiB, page cache after MiB, RSS growth MiB).
fn run_variant(path: &Path, v: Variant) -> Res<(f64, f64, f64, f64)> {
    let len = std::fs::metadata(path)?.len() as usize;
    drop_cache(path)?;
    trim_heap();
    let rss0 = rss();
    let mut sink = Touch::default();
    let mut peak = 0u64;
    let t;
    match v {
        Variant::PreadFadvise
        | Variant::PreadRandomAhead(_)
        | Variant::PreadRandomBigChunks
        | Variant::Direct => {
            let chunk = if matches!(v, Variant::PreadRandomBigChunks) {
                4 * CHUNK
            } else {
                CHUNK
            };
            use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
            let f = if matches!(v, Variant::Direct) {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(path)?
            } else {
                File::open(path)?
            };
            let (random, ahead_chunks) = match v {
                Variant::PreadRandomAhead(k) => (true, k),
                Variant::PreadRandomBigChunks => (true, 2),
                _ => (false, 0),
            };
            if random {
                fadvise(&f, 0, 0, libc::POSIX_FADV_RANDOM);
            }
            let mut raw = vec![0u8; chunk + page()];
            let off = raw.as_ptr().align_offset(page());
            t = Instant::now();
            let mut pos = 0;
            while pos < len {
                let n = chunk.min(len - pos);
                if ahead_chunks > 0 && pos + n < len {
                    let ahead = (ahead_chunks * chunk).min(len - pos - n);
                    fadvise(&f, pos + n, ahead, libc::POSIX_FADV_WILLNEED);
                }
                let buf = &mut raw[off..off + n];
                f.read_exact_at(buf, pos as u64)?;
                if !matches!(v, Variant::Direct) {
                    fadvise(&f, pos, n, libc::POSIX_FADV_DONTNEED);
                }
                sink.write_all(buf)?;
                pos += n;
                if pos % (32 << 20) == 0 {
                    peak = peak.max(cached(path)?);
                }
            }
        }
        _ => {
            let f = File::open(path)?;
            // SAFETY: a fresh read-only shared mapping of the whole file (len > 0), only
            // read through slices below while the mapping lives, unmapped at the end.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            if base == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error().into());
            }
            if matches!(v, Variant::MmapWillneedDontneedFadvise) {
                madvise(base, len, libc::MADV_RANDOM);
            }
            t = Instant::now();
            let mut pos = 0;
            while pos < len {
                let n = CHUNK.min(len - pos);
                // SAFETY: `pos..pos + n` lies inside the mapping of `len` bytes made above.
                let at = unsafe { base.cast::<u8>().add(pos) };
                if matches!(v, Variant::MmapWillneedDontneedFadvise) && pos + n < len {
                    // SAFETY: the next chunk lies inside the mapping as well.
                    let next = unsafe { at.add(n) };
                    madvise(next.cast(), CHUNK.min(len - pos - n), libc::MADV_WILLNEED);
                }
                // SAFETY: the mapping is readable for `n` bytes from `at` and nothing
                // writes the file during the experiment.
                let chunk = unsafe { std::slice::from_raw_parts(at, n) };
                sink.write_all(chunk)?;
                match v {
                    Variant::MmapDontneed => madvise(at.cast(), n, libc::MADV_DONTNEED),
                    Variant::MmapDontneedFadvise | Variant::MmapWillneedDontneedFadvise => {
                        madvise(at.cast(), n, libc::MADV_DONTNEED);
                        fadvise(&f, pos, n, libc::POSIX_FADV_DONTNEED);
                    }
                    Variant::MmapPageout => madvise(at.cast(), n, libc::MADV_PAGEOUT),
                    _ => {}
                }
                pos += n;
                if pos % (32 << 20) == 0 {
                    peak = peak.max(cached(path)?);
                }
            }
            std::hint::black_box(sink.xor);
            let rss_mapped = rss();
            // SAFETY: unmapping exactly the mapping made above; no slice of it outlives
            // this point.
            unsafe { libc::munmap(base, len) };
            let secs = t.elapsed().as_secs_f64();
            let after = cached(path)?;
            return Ok((
                len as f64 / secs / 1e6,
                peak.max(after) as f64 / MIB,
                after as f64 / MIB,
                rss_mapped.saturating_sub(rss0) as f64 / MIB,
            ));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sink.xor);
    let after = cached(path)?;
    Ok((
        len as f64 / secs / 1e6,
        peak.max(after) as f64 / MIB,
        after as f64 / MIB,
        rss().saturating_sub(rss0) as f64 / MIB,
    ))
}

fn advice_matrix() -> Res {
    let dir = scratch_dir()?;
    let path = dir.path().join("raw");
    let len = scaled(64usize << 20, 1 << 30);
    {
        let mut f = File::create(&path)?;
        let base = pattern(4 << 20, 3);
        for n in 0..(len / base.len()) as u64 {
            f.write_all(&stamp(&base, n))?;
        }
        f.sync_all()?;
    }
    println!(
        "advice matrix, cold read of a {} MiB file in 1 MiB chunks:",
        len >> 20
    );
    println!("| variant | MB/s | page cache peak MiB | page cache after MiB | RSS growth MiB |");
    println!("|---|---|---|---|---|");
    for v in [
        Variant::MmapPlain,
        Variant::MmapDontneed,
        Variant::MmapDontneedFadvise,
        Variant::MmapPageout,
        Variant::MmapWillneedDontneedFadvise,
        Variant::PreadFadvise,
        Variant::PreadRandomAhead(1),
        Variant::PreadRandomAhead(2),
        Variant::PreadRandomAhead(4),
        Variant::PreadRandomBigChunks,
        Variant::Direct,
    ] {
        let (mbps, peak, after, rss) = run_variant(&path, v)?;
        println!(
            "| {} | {mbps:.0} | {peak:.1} | {after:.1} | {rss:.1} |",
            v.name()
        );
    }
    Ok(())
}

fn main() -> Res {
    // VARVE_SIDECAR_BENCH=read,write,group,hot,matrix picks sections (all by default).
    let only = std::env::var("VARVE_SIDECAR_BENCH").unwrap_or_default();
    let on = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    if on("read") {
        read_benches()?;
    }
    if on("write") {
        write_benches()?;
    }
    if on("group") {
        group_benches()?;
    }
    if on("hot") {
        hot_benches()?;
    }
    if on("matrix") {
        advice_matrix()?;
    }
    Ok(())
}
