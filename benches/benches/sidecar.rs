//! varve-sidecar: large-blob reads with the cache advice against plain mmap reads (cold and
//! warm, with the RSS and page-cache residency they leave), blob writes against the same
//! payloads stored inline in a plain heed database, and a matrix of read-advice variants on
//! a raw file (printed, for the crate docs).

use std::error::Error;
use std::fs::File;
use std::io::{Read as _, Write};
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::time::Instant;

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

/// Bytes of `path` resident in the page cache (`mincore` on a fresh mapping).
fn cached(path: &Path) -> Res<u64> {
    let f = File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len == 0 {
        return Ok(0);
    }
    // SAFETY: a fresh read-only shared mapping of an open file of `len` > 0 bytes; it is
    // never dereferenced (mincore only inspects page-cache state) and unmapped below.
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
    if addr == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut vec = vec![0u8; len.div_ceil(page())];
    // SAFETY: `addr..addr+len` is the mapping made above; `vec` has a byte per page.
    let rc = unsafe { libc::mincore(addr, len, vec.as_mut_ptr()) };
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(addr, len) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page() as u64)
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

/// One pass over all blobs: MB/s, RSS growth since `rss_base`, page cache afterwards.
struct Pass {
    mbps: f64,
    rss_growth_mib: f64,
    cached_mib: f64,
}

fn read_pass(sc: &Sidecar, payloads: &[Payload], rss_base: u64) -> Res<Pass> {
    let mut sink = Touch::default();
    let t = Instant::now();
    for p in payloads {
        sc.read_to(p, &mut sink)?;
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sink.xor);
    Ok(Pass {
        mbps: sink.bytes as f64 / secs / 1e6,
        rss_growth_mib: rss().saturating_sub(rss_base) as f64 / MIB,
        cached_mib: cached(sc.path())? as f64 / MIB,
    })
}

/// Cold and warm passes under `opts`.
fn read_policy(dir: &Path, payloads: &[Payload], opts: SidecarOptions) -> Res<(Pass, Pass)> {
    let sc = Sidecar::open(dir, opts)?;
    drop_cache(sc.path())?;
    trim_heap();
    let base = rss();
    let cold = read_pass(&sc, payloads, base)?;
    warm(sc.path())?;
    let warm = read_pass(&sc, payloads, base)?;
    Ok((cold, warm))
}

fn read_benches() -> Res {
    let dir = scratch_dir()?;
    for (blob, count) in [
        (64usize << 20, scaled(2usize, 16)),
        (4 << 20, scaled(32, 256)),
    ] {
        let store = dir.path().join(format!("read-{}", blob >> 20));
        let payloads = {
            let sc = Sidecar::open(&store, SidecarOptions::default())?;
            let base = pattern(blob, 7);
            let mut out = Vec::new();
            for n in 0..count as u64 {
                out.push(sc.store(&stamp(&base, n))?);
            }
            out
        };
        let total = (blob * count) >> 20;
        let what = format!("{count} x {} MiB blobs ({total} MiB)", blob >> 20);
        let (d_cold, d_warm) = read_policy(&store, &payloads, SidecarOptions::default())?;
        let keep = SidecarOptions {
            cache_policy: CachePolicy::Keep,
            ..SidecarOptions::default()
        };
        let (k_cold, k_warm) = read_policy(&store, &payloads, keep)?;
        let direct = SidecarOptions {
            cache_policy: CachePolicy::Direct,
            ..SidecarOptions::default()
        };
        let (x_cold, x_warm) = read_policy(&store, &payloads, direct)?;
        let noverify = SidecarOptions {
            verify_on_read: false,
            ..SidecarOptions::default()
        };
        let (n_cold, _) = read_policy(&store, &payloads, noverify)?;
        let keep_noverify = SidecarOptions {
            cache_policy: CachePolicy::Keep,
            verify_on_read: false,
            ..SidecarOptions::default()
        };
        let (kn_cold, _) = read_policy(&store, &payloads, keep_noverify)?;

        let base = "mmap, no advice";
        for (temp, d, k, x) in [
            ("cold", &d_cold, &k_cold, &x_cold),
            ("warm", &d_warm, &k_warm, &x_warm),
        ] {
            compare(
                "sidecar",
                &format!("read_to {what}, {temp}, drop-behind"),
                "MB/s",
                Better::Higher,
                d.mbps,
                base,
                k.mbps,
            );
            compare(
                "sidecar",
                &format!("read_to {what}, {temp}, O_DIRECT"),
                "MB/s",
                Better::Higher,
                x.mbps,
                base,
                k.mbps,
            );
            compare(
                "sidecar",
                &format!("page cache of blobs.mdb after {temp} read, drop-behind"),
                "MiB",
                Better::Lower,
                d.cached_mib.max(0.01),
                base,
                k.cached_mib,
            );
            compare(
                "sidecar",
                &format!("RSS growth after {temp} read, drop-behind"),
                "MiB",
                Better::Lower,
                d.rss_growth_mib.max(0.01),
                base,
                k.rss_growth_mib,
            );
        }
        compare(
            "sidecar",
            &format!("read_to {what}, cold, verify off, drop-behind"),
            "MB/s",
            Better::Higher,
            n_cold.mbps,
            "mmap, no advice, verify off",
            kn_cold.mbps,
        );
        println!(
            "sidecar read {what}: O_DIRECT leaves {:.1} MiB cached / RSS +{:.1} MiB (cold)",
            x_cold.cached_mib, x_cold.rss_growth_mib
        );
    }
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
            let opts = SidecarOptions {
                cache_policy: policy,
                ..SidecarOptions::default()
            };
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
    // VARVE_SIDECAR_BENCH=read,write,matrix picks sections (all by default).
    let only = std::env::var("VARVE_SIDECAR_BENCH").unwrap_or_default();
    let on = |s: &str| only.is_empty() || only.split(',').any(|o| o == s);
    if on("read") {
        read_benches()?;
    }
    if on("write") {
        write_benches()?;
    }
    if on("matrix") {
        advice_matrix()?;
    }
    Ok(())
}
