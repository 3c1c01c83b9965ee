//! varve-engine against VarveDB 0.4.2 (a published embedded event store on LMDB, via heed
//! 0.22), with a plain heed database as the floor where one makes sense, all measured in the
//! same run on the same disk.
//!
//! VarveDB is used as it ships: every append is one LMDB write transaction, committed with
//! LMDB's default durability (`fdatasync` of the data, then of the meta page); nothing in
//! its configuration turns that off, and this bench does not either. Its events are typed:
//! a byte payload is a `Vec<u8>`, serialised with rkyv (`append_alloc` and
//! `append_batch_alloc`, the variants `Vec` needs; the archived bytes are the payload
//! followed by an 8-byte header). Its writers take `&mut self`, so threads share one stream
//! handle behind a `Mutex`, as a user would; its per-entity streams are the `StreamId`s of
//! one named stream. Its readers are per-thread clones (reads take no lock).
//!
//! Varve's appends are durable when they return (`SyncMode::Always`, the default). Reads
//! run after a `checkpoint()`, from `events.mdb`, on a warm page cache for both stores.
//! Contenders of one row run in turn, in six slices each, so they share the machine's
//! background load; a throughput is the median of a contender's slice rates.
//!
//! Workloads (targets of issue 17 in each row's name):
//! W1 one thread, 1 KiB durable appends; W2 16 and 64 threads, own streams and one shared
//! stream (positions checked gapless afterwards); W3 batches of 1000 events; W4 random
//! `get` / `with_event`; W5 sequential `read_all` / `scan_all`; W6 `read_stream` of one
//! stream among many; W7 sustained appends (checkpointer throughput, un-checkpointed bytes;
//! reference rows); W8 2 KiB, 64 KiB and 5 MiB payloads, append then read back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, EnvOpenOptions, PutFlags, WithoutTls};
use varve_benches::measure::Samples;
use varve_benches::report::{Better, Row, compare, record, record_rounds, reference};
use varve_benches::{machine, scaled, scratch_dir};
use varve_engine::{
    Direction, EventData, ExpectedVersion, Options, PayloadRef, StreamAppend, Varve,
};
use varvedb::{GlobalSequence, StreamId};

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const GROUP: &str = "engine";
const PEER: &str = "VarveDB 0.4.2";
const KIB: usize = 1024;
const MIB: f64 = (1 << 20) as f64;

/// VarveDB's serialisation buffer for events up to 1 KiB (the archived `Vec<u8>` is the
/// payload plus an 8-byte header).
const N_SMALL: usize = 2 * KIB;

/// One thread's operation: returns the number of events it handled.
type Op<'a> = Box<dyn FnMut() -> Res<u64> + 'a>;

/// What a run of one contender measured.
#[derive(Default)]
struct Run {
    events: u64,
    secs: f64,
    samples: Samples,
    /// Events per second of each slice (see [`interleaved`]).
    slice_rates: Vec<f64>,
    /// The latency samples of each slice.
    slice_samples: Vec<Samples>,
    /// Bytes the process sent to storage while this contender ran (`/proc/self/io`,
    /// background threads included), when the kernel reports it.
    written: Option<u64>,
    /// CPU time of the whole process (every thread) while this contender ran, seconds.
    cpu: f64,
}

impl Run {
    /// Events per second: the median over the slices when the run was sliced (robust to a
    /// burst of background load on a shared machine hitting one contender's slice), else
    /// over the whole run.
    fn rate(&self) -> f64 {
        if self.slice_rates.is_empty() {
            return self.events as f64 / self.secs;
        }
        let mut r = self.slice_rates.clone();
        r.sort_by(f64::total_cmp);
        let m = r.len() / 2;
        if r.len().is_multiple_of(2) {
            (r[m - 1] + r[m]) / 2.0
        } else {
            r[m]
        }
    }

    fn add(&mut self, r: Run) {
        self.slice_rates.push(r.events as f64 / r.secs);
        self.events += r.events;
        self.secs += r.secs;
        self.slice_samples.push(r.samples.clone());
        self.samples.extend(r.samples);
    }

    /// The `p`-th percentile latency of each slice, in µs.
    fn slice_percentiles(&mut self, p: f64) -> Vec<f64> {
        self.slice_samples
            .iter_mut()
            .map(|s| s.percentile_us(p))
            .collect()
    }
}

/// Records a headline row (the report's opening table, W1-W8): each figure is the median of
/// the per-round values (rounds alternate the contenders), with their min-max.
fn headline(
    workload: &str,
    target: Option<f64>,
    unit: &str,
    better: Better,
    varve: &[f64],
    peer_name: &str,
    peer: &[f64],
) {
    record_rounds(
        Row {
            group: GROUP.into(),
            workload: workload.into(),
            unit: unit.into(),
            better,
            baseline_name: peer_name.into(),
            target,
            headline: true,
            ..Row::default()
        },
        varve,
        peer,
    );
}

/// Runs on `threads` threads for `budget` the operation `make(thread)` builds for each.
fn run_threads<'a>(
    threads: usize,
    budget: Duration,
    make: &(dyn Fn(usize) -> Res<Op<'a>> + Sync + 'a),
) -> Res<Run> {
    let start = Instant::now();
    let deadline = start + budget;
    let results: Vec<Res<(u64, Samples)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Res<(u64, Samples)> {
                    let mut op = make(t)?;
                    let mut samples = Samples::with_capacity(4096);
                    let mut events = 0;
                    while Instant::now() < deadline {
                        let t0 = Instant::now();
                        events += op()?;
                        samples.push(t0.elapsed());
                    }
                    Ok((events, samples))
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
    let mut run = Run {
        secs: start.elapsed().as_secs_f64(),
        ..Run::default()
    };
    for r in results {
        let (n, s) = r?;
        run.events += n;
        run.samples.extend(s);
    }
    Ok(run)
}

/// Slices per contender of a durable-write row (each slice holds enough commits).
const WRITE_SLICES: u32 = 6;
/// Slices per contender of a read row: finer, so CPU-bound contenders see the same
/// background load.
const READ_SLICES: u32 = 12;

/// Runs the contenders in turn, `slices` slices each of `budget / slices`, so they share
/// the same background load; returns one accumulated run per contender.
fn interleaved<'a>(
    threads: usize,
    budget: Duration,
    slices: u32,
    contenders: &[&(dyn Fn(usize) -> Res<Op<'a>> + Sync + 'a)],
) -> Res<Vec<Run>> {
    let mut acc: Vec<Run> = contenders.iter().map(|_| Run::default()).collect();
    for _ in 0..slices {
        for (c, a) in contenders.iter().zip(acc.iter_mut()) {
            let before = write_bytes();
            let cpu = process_cpu_secs();
            a.add(run_threads(threads, budget / slices, *c)?);
            a.cpu += process_cpu_secs() - cpu;
            a.written = match (a.written, before, write_bytes()) {
                (w, Some(b), Some(e)) if a.slice_rates.len() == 1 || w.is_some() => {
                    Some(w.unwrap_or(0) + e.saturating_sub(b))
                }
                _ => None,
            };
        }
    }
    Ok(acc)
}

/// Bytes this process has caused to be sent to storage (`write_bytes` of `/proc/self/io`).
fn write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU time this process (all its threads) has used, in seconds.
fn process_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// A row of CPU time per event (all threads of the process), which a shared machine's
/// background load disturbs far less than a rate: time spent descheduled is not counted.
fn cpu_row(w: &str, varve: &Run, peer_name: &str, peer: &Run) {
    compare(
        GROUP,
        &format!("{w}, CPU time per event"),
        "µs",
        Better::Lower,
        varve.cpu / varve.events as f64 * 1e6,
        peer_name,
        peer.cpu / peer.events as f64 * 1e6,
    );
}

/// A small xorshift generator: random positions without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// A payload of `len` bytes whose first 8 bytes are `stamp` (so payloads differ: the
/// sidecar stores equal blobs once, VarveDB does not deduplicate).
fn payload(len: usize, stamp: u64) -> Vec<u8> {
    let mut p = vec![0x5Au8; len];
    let n = len.min(8);
    p[..n].copy_from_slice(&stamp.to_le_bytes()[..n]);
    p
}

fn open_varve(dir: &Path) -> Res<Varve> {
    Ok(Varve::open(dir, Options::default())?)
}

fn open_peer(dir: &Path) -> Res<varvedb::Varve> {
    let config = varvedb::VarveConfig {
        max_dbs: 64,
        map_size: 64 << 30,
    };
    Ok(varvedb::Varve::with_config(dir, config)?)
}

/// A plain heed environment for the floor: a database of big-endian position -> bytes,
/// the least work a read by position can do on LMDB.
fn open_floor_env(dir: &Path) -> Res<heed::Env<WithoutTls>> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(64 << 30).max_dbs(1);
    // SAFETY: a fresh directory used by this bench only; nothing else maps the file.
    Ok(unsafe { opts.open(dir) }?)
}

/// The floor's database in `env`.
fn floor_db(env: &heed::Env<WithoutTls>) -> Res<Database<'_, Bytes, Bytes>> {
    let wtxn = env.write_txn()?;
    let db = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            Ok(CommitOrAbort::<_, ()>::Commit(
                dbo.create_database::<Bytes, Bytes>(wtxn, Some("events"))?,
            ))
        })?
        .commit()
        .ok_or("database not created")?;
    Ok(db)
}

fn floor_fill(
    env: &heed::Env<WithoutTls>,
    db: &Database<'_, Bytes, Bytes>,
    n: u64,
    len: usize,
) -> Res {
    let mut first = 0;
    while first < n {
        let mut wtxn = env.write_txn()?;
        for k in first..(first + 10_000).min(n) {
            db.put_with_flags(
                &mut wtxn,
                PutFlags::APPEND,
                &k.to_be_bytes(),
                &payload(len, k),
            )?;
        }
        wtxn.commit()?;
        first += 10_000;
    }
    Ok(())
}

/// `Varve::stats` calls that failed (and were retried): `stats` lists the WAL directory and
/// then reads each segment's size, so a checkpoint that removes a segment in between makes
/// it fail with `Io(NotFound)`. Counted and reported, so the race stays visible.
static STATS_FAILURES: AtomicU64 = AtomicU64::new(0);

/// `v.stats()`, retried (up to 100 times) when it fails; each failure is counted.
fn stats(v: &Varve) -> Res<varve_engine::Stats> {
    let mut tries = 0;
    loop {
        match v.stats() {
            Ok(s) => return Ok(s),
            Err(e) => {
                if STATS_FAILURES.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("engine bench: Varve::stats failed ({e}); retrying");
                }
                tries += 1;
                if tries == 100 {
                    return Err(e.into());
                }
            }
        }
    }
}

/// Checks that the store holds exactly `expected` events at positions `0..expected`, each
/// stream's versions gapless from 0, reading with `read_all`.
fn verify_gapless(v: &Varve, expected: u64) -> Res {
    let mut next = 0u64;
    let mut versions: HashMap<String, u64> = HashMap::new();
    loop {
        let evs = v.read_all(next, Direction::Forward, 10_000)?;
        if evs.is_empty() {
            break;
        }
        for e in evs {
            if e.position != next {
                return Err(format!("position {} where {next} was expected", e.position).into());
            }
            let ver = versions.entry(e.stream.to_string()).or_default();
            if e.version != *ver {
                return Err(format!(
                    "stream {} version {} where {} was expected",
                    e.stream, e.version, *ver
                )
                .into());
            }
            *ver += 1;
            next += 1;
        }
    }
    let stats_next = stats(v)?.next_position;
    if next != expected || stats_next != expected {
        return Err(format!(
            "{next} events read, next_position {stats_next}, {expected} acknowledged"
        )
        .into());
    }
    Ok(())
}

/// Appends `n` events of `len` bytes to a Varve store in calls of 1000 (16 streams in turn).
fn varve_fill(v: &Varve, n: u64, len: usize) -> Res {
    let names: Vec<String> = (0..16).map(|s| format!("fill-{s}")).collect();
    let mut first = 0;
    let mut call = 0;
    while first < n {
        let end = (first + 1000).min(n);
        let payloads: Vec<Vec<u8>> = (first..end).map(|k| payload(len, k)).collect();
        let events: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("t", p)).collect();
        v.append(&names[call % names.len()], ExpectedVersion::Any, &events)?;
        first = end;
        call += 1;
    }
    v.checkpoint()?;
    Ok(())
}

/// The same events in VarveDB: batches of 1000 (16 stream ids in turn).
fn peer_fill(p: &mut varvedb::Varve, n: u64, len: usize) -> Res {
    let mut s = p.stream::<Vec<u8>, N_SMALL>("fill")?;
    let mut first = 0;
    let mut call = 0;
    while first < n {
        let end = (first + 1000).min(n);
        let payloads: Vec<Vec<u8>> = (first..end).map(|k| payload(len, k)).collect();
        s.append_batch_alloc(StreamId(call % 16), &payloads)?;
        first = end;
        call += 1;
    }
    Ok(())
}

/// W1: a lone writer, 1 KiB durable appends.
fn w1(budget: Duration) -> Res {
    let (d1, d2) = (scratch_dir()?, scratch_dir()?);
    let v = open_varve(d1.path())?;
    let mut p = open_peer(d2.path())?;
    let ps = Mutex::new(p.stream::<Vec<u8>, N_SMALL>("w1")?);
    let data = payload(KIB, 1);
    let varve = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            v.append("w1", ExpectedVersion::Any, &[EventData::new("t", &data)])?;
            Ok(1)
        }))
    };
    let peer = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let mut s = ps.lock().map_err(|_| "poisoned")?;
            s.append_alloc(StreamId(0), &data)?;
            Ok(1)
        }))
    };
    let mut r = interleaved(1, budget, WRITE_SLICES, &[&varve, &peer])?;
    let (mut pr, mut vr) = (r.pop().ok_or("missing")?, r.pop().ok_or("missing")?);
    let w = "W1 1 thread, 1 KiB durable appends";
    headline(
        w,
        Some(2.0),
        "appends/s",
        Better::Higher,
        &vr.slice_rates,
        PEER,
        &pr.slice_rates,
    );
    for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
        headline(
            &format!("{w}, {name}"),
            Some(1.0),
            "µs",
            Better::Lower,
            &vr.slice_percentiles(p),
            PEER,
            &pr.slice_percentiles(p),
        );
    }
    Ok(())
}

/// W2: many writers, each on its own stream or all on one, durable; Varve's positions and
/// versions are checked gapless afterwards.
fn w2(budget: Duration) -> Res {
    for threads in [16usize, 64] {
        for shared in [false, true] {
            let (d1, d2) = (scratch_dir()?, scratch_dir()?);
            let v = open_varve(d1.path())?;
            let mut p = open_peer(d2.path())?;
            let ps = Mutex::new(p.stream::<Vec<u8>, N_SMALL>("w2")?);
            let data = payload(KIB, 2);
            let names: Vec<String> = (0..threads)
                .map(|t| {
                    if shared {
                        "shared".into()
                    } else {
                        format!("own-{t}")
                    }
                })
                .collect();
            let acked = AtomicU64::new(0);
            let varve = |t: usize| -> Res<Op<'_>> {
                let (name, data, acked, v) = (&names[t], &data, &acked, &v);
                Ok(Box::new(move || {
                    v.append(name, ExpectedVersion::Any, &[EventData::new("t", data)])?;
                    acked.fetch_add(1, Ordering::Relaxed);
                    Ok(1)
                }))
            };
            let peer = |t: usize| -> Res<Op<'_>> {
                let id = StreamId(if shared { 0 } else { t as u64 });
                let (data, ps) = (&data, &ps);
                Ok(Box::new(move || {
                    let mut s = ps.lock().map_err(|_| "poisoned")?;
                    s.append_alloc(id, data)?;
                    Ok(1)
                }))
            };
            let mut r = interleaved(threads, budget, WRITE_SLICES, &[&varve, &peer])?;
            let (mut pr, mut vr) = (r.pop().ok_or("missing")?, r.pop().ok_or("missing")?);
            verify_gapless(&v, acked.load(Ordering::Relaxed))?;
            let w = format!(
                "W2 {threads} threads, {}, 1 KiB durable appends (gapless checked)",
                if shared {
                    "one shared stream"
                } else {
                    "own streams"
                }
            );
            headline(
                &w,
                Some(5.0),
                "appends/s",
                Better::Higher,
                &vr.slice_rates,
                &format!("{PEER} behind a Mutex"),
                &pr.slice_rates,
            );
            compare(
                GROUP,
                &format!("{w}, p99"),
                "µs",
                Better::Lower,
                vr.samples.percentile_us(99.0),
                &format!("{PEER} behind a Mutex"),
                pr.samples.percentile_us(99.0),
            );
        }
    }
    Ok(())
}

/// W3: one writer appending batches of 1000 events, durable per batch. Diagnostics: the
/// same Varve appends with the background checkpointer deferred (so the row shows what
/// checkpointing concurrently costs), and the disk's write+fdatasync bandwidth.
fn w3(budget: Duration) -> Res {
    let bw_dir = scratch_dir()?;
    let bw = machine::write_sync_bandwidth(bw_dir.path(), scaled(64 << 20, 256 << 20), 1 << 20)?;
    reference(
        GROUP,
        "W3 disk: sequential write, fdatasync per 1 MiB",
        "MB/s",
        Better::Higher,
        "raw file",
        bw,
    );
    for len in [24usize, KIB] {
        let (d1, d2, d3) = (scratch_dir()?, scratch_dir()?, scratch_dir()?);
        let v = open_varve(d1.path())?;
        let deferred = Varve::open(
            d3.path(),
            Options::default()
                .checkpoint_bytes(4 << 30)
                .max_tail_bytes(4 << 30)
                .checkpoint_interval(Duration::from_secs(3600)),
        )?;
        let mut p = open_peer(d2.path())?;
        let ps = Mutex::new(p.stream::<Vec<u8>, N_SMALL>("w3")?);
        let payloads: Vec<Vec<u8>> = (0..1000).map(|k| payload(len, k)).collect();
        let events: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("t", p)).collect();
        let varve = |_t: usize| -> Res<Op<'_>> {
            Ok(Box::new(|| {
                v.append("w3", ExpectedVersion::Any, &events)?;
                Ok(1000)
            }))
        };
        let varve_deferred = |_t: usize| -> Res<Op<'_>> {
            Ok(Box::new(|| {
                deferred.append("w3", ExpectedVersion::Any, &events)?;
                Ok(1000)
            }))
        };
        let peer = |_t: usize| -> Res<Op<'_>> {
            Ok(Box::new(|| {
                let mut s = ps.lock().map_err(|_| "poisoned")?;
                s.append_batch_alloc(StreamId(0), &payloads)?;
                Ok(1000)
            }))
        };
        let r = interleaved(1, budget, WRITE_SLICES, &[&varve, &peer, &varve_deferred])?;
        let rate: Vec<f64> = r.iter().map(Run::rate).collect();
        let w = format!("W3 batches of 1000 x {len} B, durable per batch");
        headline(
            &w,
            Some(2.0),
            "events/s",
            Better::Higher,
            &r[0].slice_rates,
            &format!("{PEER} append_batch"),
            &r[1].slice_rates,
        );
        cpu_row(&w, &r[0], &format!("{PEER} append_batch"), &r[1]);
        if let (Some(vw), Some(pw)) = (r[0].written, r[1].written) {
            compare(
                GROUP,
                &format!("{w}: bytes written to storage per event"),
                "B",
                Better::Lower,
                vw as f64 / r[0].events as f64,
                &format!("{PEER} append_batch"),
                pw as f64 / r[1].events as f64,
            );
        }
        compare(
            GROUP,
            &format!("{w}: cost of the background checkpointer"),
            "events/s",
            Better::Higher,
            rate[0],
            "varve, checkpointer deferred (log grows into fresh segments)",
            rate[2],
        );
        drop(deferred);
    }
    Ok(())
}

/// W4: random reads by position over `n` events of 1 KiB, after a checkpoint.
fn w4(budget: Duration, n: u64) -> Res {
    let (d1, d2, d3) = (scratch_dir()?, scratch_dir()?, scratch_dir()?);
    let v = open_varve(d1.path())?;
    varve_fill(&v, n, KIB)?;
    let mut p = open_peer(d2.path())?;
    peer_fill(&mut p, n, KIB)?;
    let reader = p.global_reader();
    let env = open_floor_env(d3.path())?;
    let db = floor_db(&env)?;
    floor_fill(&env, &db, n, KIB)?;

    const PER_OP: u64 = 256;
    let seed =
        |t: usize| Rng(0x9E37_79B9_7F4A_7C15 ^ (t as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let zero_copy = |t: usize| -> Res<Op<'_>> {
        let mut rng = seed(t);
        let v = &v;
        Ok(Box::new(move || {
            let mut sum = 0u64;
            for _ in 0..PER_OP {
                let pos = rng.next() % n;
                sum += v
                    .with_event(pos, |e| match e.payload {
                        PayloadRef::Inline(b) => u64::from(b[b.len() - 1]),
                        PayloadRef::Blob { len, .. } => len,
                    })?
                    .ok_or("event missing")?;
            }
            std::hint::black_box(sum);
            Ok(PER_OP)
        }))
    };
    let owned = |t: usize| -> Res<Op<'_>> {
        let mut rng = seed(t);
        let v = &v;
        Ok(Box::new(move || {
            let mut sum = 0u64;
            for _ in 0..PER_OP {
                let e = v.get(rng.next() % n)?.ok_or("event missing")?;
                sum += e.payload.len();
            }
            std::hint::black_box(sum);
            Ok(PER_OP)
        }))
    };
    let peer_bytes = |t: usize| -> Res<Op<'_>> {
        let mut rng = seed(t);
        let mut r = reader.clone();
        Ok(Box::new(move || {
            let mut sum = 0u64;
            for _ in 0..PER_OP {
                let b = r
                    .get_bytes(GlobalSequence(rng.next() % n))?
                    .ok_or("event missing")?;
                sum += u64::from(b[b.len() - 1]);
            }
            std::hint::black_box(sum);
            Ok(PER_OP)
        }))
    };
    let peer_owned = |t: usize| -> Res<Op<'_>> {
        let mut rng = seed(t);
        let mut r = reader.clone();
        Ok(Box::new(move || {
            let mut sum = 0u64;
            for _ in 0..PER_OP {
                let e = r
                    .get(GlobalSequence(rng.next() % n))?
                    .ok_or("event missing")?;
                sum += e.payload.len() as u64;
            }
            std::hint::black_box(sum);
            Ok(PER_OP)
        }))
    };
    let floor = |t: usize| -> Res<Op<'_>> {
        let mut rng = seed(t);
        let (env, db) = (&env, &db);
        Ok(Box::new(move || {
            let mut sum = 0u64;
            for _ in 0..PER_OP {
                let rtxn = env.read_txn()?;
                let b = db
                    .get(&rtxn, &(rng.next() % n).to_be_bytes())?
                    .ok_or("event missing")?;
                sum += u64::from(b[b.len() - 1]);
            }
            std::hint::black_box(sum);
            Ok(PER_OP)
        }))
    };
    for threads in [1usize, 2] {
        let r = interleaved(
            threads,
            budget,
            READ_SLICES,
            &[&zero_copy, &owned, &peer_bytes, &peer_owned, &floor],
        )?;
        let w = format!("W4 random get, {threads} thread(s), {n} x 1 KiB events, checkpointed");
        headline(
            &format!("{w}: with_event (zero-copy)"),
            Some(1.5),
            "gets/s",
            Better::Higher,
            &r[0].slice_rates,
            &format!("{PEER} GlobalReader::get_bytes"),
            &r[2].slice_rates,
        );
        headline(
            &format!("{w}: get (owned)"),
            Some(1.0),
            "gets/s",
            Better::Higher,
            &r[1].slice_rates,
            &format!("{PEER} GlobalReader::get"),
            &r[3].slice_rates,
        );
        headline(
            &format!("{w}: with_event (zero-copy) vs the floor"),
            None,
            "gets/s",
            Better::Higher,
            &r[0].slice_rates,
            "plain heed get (position -> bytes)",
            &r[4].slice_rates,
        );
        let get_bytes = format!("{PEER} GlobalReader::get_bytes");
        cpu_row(&format!("{w}: with_event"), &r[0], &get_bytes, &r[2]);
        cpu_row(
            &format!("{w}: get"),
            &r[1],
            &format!("{PEER} GlobalReader::get"),
            &r[3],
        );
        cpu_row(&format!("{w}: with_event"), &r[0], "plain heed get", &r[4]);
    }
    Ok(())
}

/// W5: sequential reads of the whole log of `n` events of 24 B, after a checkpoint.
fn w5(budget: Duration, n: u64) -> Res {
    let (d1, d2, d3) = (scratch_dir()?, scratch_dir()?, scratch_dir()?);
    let v = open_varve(d1.path())?;
    varve_fill(&v, n, 24)?;
    let mut p = open_peer(d2.path())?;
    peer_fill(&mut p, n, 24)?;
    let reader = p.global_reader();
    let env = open_floor_env(d3.path())?;
    let db = floor_db(&env)?;
    floor_fill(&env, &db, n, 24)?;
    let limit = usize::try_from(n)?;
    let check = |got: u64| -> Res<u64> {
        if got == n {
            Ok(n)
        } else {
            Err(format!("read {got} of {n} events").into())
        }
    };

    let read_all = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let evs = v.read_all(0, Direction::Forward, limit)?;
            check(std::hint::black_box(evs).len() as u64)
        }))
    };
    let scan_all = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let mut sum = 0u64;
            let got = v.scan_all(0, Direction::Forward, limit, |e| {
                if let PayloadRef::Inline(b) = e.payload {
                    sum += u64::from(b[b.len() - 1]);
                }
            })?;
            std::hint::black_box(sum);
            check(got as u64)
        }))
    };
    let peer_collect = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let evs = reader.iter_from(GlobalSequence(0))?.collect_all()?;
            check(std::hint::black_box(evs).len() as u64)
        }))
    };
    let peer_each = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let (mut got, mut sum) = (0u64, 0u64);
            reader.iter_from(GlobalSequence(0))?.for_each(|e| {
                got += 1;
                sum += u64::from(e.payload[e.payload.len() - 1]);
            })?;
            std::hint::black_box(sum);
            check(got)
        }))
    };
    let floor = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let rtxn = env.read_txn()?;
            let (mut got, mut sum) = (0u64, 0u64);
            for item in db.iter(&rtxn)? {
                let (_, b) = item?;
                got += 1;
                sum += u64::from(b[b.len() - 1]);
            }
            std::hint::black_box(sum);
            check(got)
        }))
    };
    let r = interleaved(
        1,
        budget,
        READ_SLICES,
        &[&read_all, &scan_all, &peer_collect, &peer_each, &floor],
    )?;
    let w = format!("W5 sequential read of {n} x 24 B events, checkpointed");
    headline(
        &format!("{w}: read_all (owned)"),
        Some(2.0),
        "events/s",
        Better::Higher,
        &r[0].slice_rates,
        &format!("{PEER} global iter_from.collect_all"),
        &r[2].slice_rates,
    );
    headline(
        &format!("{w}: scan_all (zero-copy)"),
        Some(2.0),
        "events/s",
        Better::Higher,
        &r[1].slice_rates,
        &format!("{PEER} global iter_from.for_each"),
        &r[3].slice_rates,
    );
    headline(
        &format!("{w}: scan_all (zero-copy) vs the floor"),
        None,
        "events/s",
        Better::Higher,
        &r[1].slice_rates,
        "plain heed cursor (position -> bytes)",
        &r[4].slice_rates,
    );
    cpu_row(
        &format!("{w}: read_all"),
        &r[0],
        &format!("{PEER} collect_all"),
        &r[2],
    );
    cpu_row(
        &format!("{w}: scan_all"),
        &r[1],
        &format!("{PEER} for_each"),
        &r[3],
    );
    Ok(())
}

/// W6: one stream's events among `streams` streams written in runs of `run` events
/// round-robin, each stream `per_stream` events of 24 B; reads that stream whole.
fn w6(budget: Duration, streams: usize, run: usize, per_stream: usize) -> Res {
    let (d1, d2) = (scratch_dir()?, scratch_dir()?);
    let v = open_varve(d1.path())?;
    let mut p = open_peer(d2.path())?;
    let mut ps = p.stream::<Vec<u8>, N_SMALL>("w6")?;
    let names: Vec<String> = (0..streams).map(|s| format!("stream-{s}")).collect();
    let payloads: Vec<Vec<u8>> = (0..run as u64).map(|k| payload(24, k)).collect();
    let events: Vec<EventData<'_>> = payloads.iter().map(|p| EventData::new("t", p)).collect();
    for _ in 0..per_stream / run {
        let calls: Vec<StreamAppend<'_>> = names
            .iter()
            .map(|s| (s.as_str(), ExpectedVersion::Any, events.as_slice()))
            .collect();
        v.append_multi(&calls)?;
        for s in 0..streams {
            ps.append_batch_alloc(StreamId(s as u64), &payloads)?;
        }
    }
    v.checkpoint()?;
    let target = streams / 2;
    let (name, id) = (names[target].as_str(), StreamId(target as u64));
    let reader = ps.reader();
    let k = (per_stream / run * run) as u64;
    let check = |got: u64| -> Res<u64> {
        if got == k {
            Ok(k)
        } else {
            Err(format!("read {got} of {k} events").into())
        }
    };
    let read_stream = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let evs = v.read_stream(name, Direction::Forward, 0, usize::MAX)?;
            check(std::hint::black_box(evs).len() as u64)
        }))
    };
    let scan_stream = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let mut sum = 0u64;
            let got = v.scan_stream(name, Direction::Forward, 0, usize::MAX, |e| {
                if let PayloadRef::Inline(b) = e.payload {
                    sum += u64::from(b[b.len() - 1]);
                }
            })?;
            std::hint::black_box(sum);
            check(got as u64)
        }))
    };
    let peer_collect = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let evs = reader.iter_stream(id, None)?.collect_bytes()?;
            check(std::hint::black_box(evs).len() as u64)
        }))
    };
    let peer_each = |_t: usize| -> Res<Op<'_>> {
        Ok(Box::new(|| {
            let (mut got, mut sum) = (0u64, 0u64);
            reader.iter_stream(id, None)?.for_each(|_, b| {
                got += 1;
                sum += u64::from(b[b.len() - 1]);
            })?;
            std::hint::black_box(sum);
            check(got)
        }))
    };
    let r = interleaved(
        1,
        budget,
        READ_SLICES,
        &[&read_stream, &scan_stream, &peer_collect, &peer_each],
    )?;
    let w = format!(
        "W6 read one stream of {k} x 24 B among {streams} (written in runs of {run}), checkpointed"
    );
    headline(
        &format!("{w}: read_stream (owned)"),
        Some(2.0),
        "events/s",
        Better::Higher,
        &r[0].slice_rates,
        &format!("{PEER} iter_stream.collect_bytes"),
        &r[2].slice_rates,
    );
    headline(
        &format!("{w}: scan_stream (zero-copy)"),
        Some(2.0),
        "events/s",
        Better::Higher,
        &r[1].slice_rates,
        &format!("{PEER} iter_stream.for_each"),
        &r[3].slice_rates,
    );
    cpu_row(
        &format!("{w}: read_stream"),
        &r[0],
        &format!("{PEER} collect_bytes"),
        &r[2],
    );
    cpu_row(
        &format!("{w}: scan_stream"),
        &r[1],
        &format!("{PEER} for_each"),
        &r[3],
    );
    Ok(())
}

/// W7: sustained durable appends for `secs`, the checkpointer running in the background
/// (default options); samples the un-checkpointed tail every 10 ms. Then the checkpointer's
/// own rate: one `checkpoint()` of a tail that the background did not touch.
fn w7(secs: Duration) -> Res {
    for (threads, batch, len) in [(16usize, 1usize, KIB), (4, 100, 256)] {
        let d = scratch_dir()?;
        let v = open_varve(d.path())?;
        let data: Vec<Vec<u8>> = (0..batch as u64).map(|k| payload(len, k)).collect();
        let events: Vec<EventData<'_>> = data.iter().map(|p| EventData::new("t", p)).collect();
        let names: Vec<String> = (0..threads).map(|t| format!("w7-{t}")).collect();
        let stop = AtomicBool::new(false);
        let s0 = stats(&v)?;
        let start = Instant::now();
        let (peak_tail, peak_lag) = std::thread::scope(|s| -> Res<(u64, u64)> {
            let sampler = s.spawn(|| -> Res<(u64, u64)> {
                let (mut tail, mut lag) = (0, 0);
                while !stop.load(Ordering::Relaxed) {
                    let st = stats(&v)?;
                    tail = tail.max(st.tail_bytes);
                    lag = lag.max(st.checkpoint_lag_events);
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok((tail, lag))
            });
            let writers: Vec<_> = names
                .iter()
                .map(|name| {
                    let (v, events, stop) = (&v, &events, &stop);
                    s.spawn(move || -> Res {
                        while !stop.load(Ordering::Relaxed) {
                            v.append(name, ExpectedVersion::Any, events)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            std::thread::sleep(secs);
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                w.join().map_err(|_| "writer panicked")??;
            }
            sampler.join().map_err(|_| "sampler panicked")?
        })?;
        let elapsed = start.elapsed().as_secs_f64();
        let s1 = stats(&v)?;
        let w = format!(
            "W7 sustained {}s, {threads} threads x calls of {batch} x {len} B",
            secs.as_secs()
        );
        let r = |what: &str, unit: &str, better, value| {
            reference(GROUP, &format!("{w}: {what}"), unit, better, "varve", value);
        };
        r(
            "appended",
            "events/s",
            Better::Higher,
            (s1.next_position - s0.next_position) as f64 / elapsed,
        );
        record(Row {
            group: GROUP.into(),
            workload: format!("{w}: checkpointed in the background"),
            unit: "events/s".into(),
            better: Better::Higher,
            baseline_name: "varve".into(),
            baseline: Some((s1.checkpointed_position - s0.checkpointed_position) as f64 / elapsed),
            headline: true,
            ..Row::default()
        });
        r(
            "peak un-checkpointed tail",
            "MiB",
            Better::Lower,
            peak_tail as f64 / MIB,
        );
        r(
            "peak checkpoint lag",
            "events",
            Better::Lower,
            peak_lag as f64,
        );
        r(
            "checkpoints",
            "count",
            Better::Higher,
            (s1.checkpoints - s0.checkpoints) as f64,
        );
    }

    // The checkpointer's own rate: a tail of 64 MiB of 1 KiB events applied in one call.
    let d = scratch_dir()?;
    let opts = Options::default()
        .checkpoint_bytes(1 << 30)
        .max_tail_bytes(2 << 30)
        .checkpoint_interval(Duration::from_secs(3600));
    let v = Varve::open(d.path(), opts)?;
    let n: u64 = scaled(32 << 10, 64 << 10);
    let data: Vec<Vec<u8>> = (0..100u64).map(|k| payload(KIB, k)).collect();
    let events: Vec<EventData<'_>> = data.iter().map(|p| EventData::new("t", p)).collect();
    for c in 0..n / 100 {
        v.append(&format!("ck-{}", c % 64), ExpectedVersion::Any, &events)?;
    }
    let lag = stats(&v)?.checkpoint_lag_events;
    let t = Instant::now();
    let applied = v.checkpoint()?;
    let secs = t.elapsed().as_secs_f64();
    if applied != lag {
        return Err(format!("checkpoint applied {applied} of {lag} events").into());
    }
    reference(
        GROUP,
        &format!("W7 one checkpoint() of a {lag} x 1 KiB tail"),
        "events/s",
        Better::Higher,
        "varve",
        applied as f64 / secs,
    );
    Ok(())
}

/// One contender of W8: per round trip, the append's and the read-back's latencies.
#[derive(Default)]
struct RoundTrips {
    append: Samples,
    read: Samples,
    secs: f64,
    /// Round trips per second of each round.
    round_rates: Vec<f64>,
}

impl RoundTrips {
    /// Runs `append` then `read` (handed what `append` returned) until `budget` is spent.
    fn run<T>(
        &mut self,
        budget: Duration,
        mut append: impl FnMut() -> Res<T>,
        mut read: impl FnMut(T) -> Res,
    ) -> Res {
        let start = Instant::now();
        let before = self.append.len();
        while start.elapsed() < budget {
            let t = Instant::now();
            let x = append()?;
            let t1 = Instant::now();
            read(x)?;
            self.append.push(t1 - t);
            self.read.push(t1.elapsed());
        }
        let secs = start.elapsed().as_secs_f64();
        self.secs += secs;
        self.round_rates
            .push((self.append.len() - before) as f64 / secs);
        Ok(())
    }
}

/// W8: large payloads, append (durable) then read back whole, one thread.
fn w8(budget: Duration) -> Res {
    /// VarveDB's part of one slice (its stream handle holds an `N`-byte buffer).
    fn peer_slice<const N: usize>(
        p: &mut varvedb::Varve,
        len: usize,
        budget: Duration,
        stamp: &mut u64,
        rt: &mut RoundTrips,
    ) -> Res {
        let mut s = p.stream::<Vec<u8>, N>("w8")?;
        let mut reader = p.global_reader();
        rt.run(
            budget,
            || {
                *stamp += 1;
                let data = payload(len, *stamp);
                Ok((s.append_alloc(StreamId(0), &data)?.1, data))
            },
            |(g, data)| {
                let e = reader.get(g)?.ok_or("event missing")?;
                // The archived `Vec<u8>` holds the payload's bytes, then its header.
                if e.payload.len() < len || e.payload[..len] != data[..] {
                    return Err("payload read back differs".into());
                }
                Ok(())
            },
        )
    }
    for len in [2 * KIB, 64 * KIB, 5 << 20] {
        let (d1, d2) = (scratch_dir()?, scratch_dir()?);
        let v = open_varve(d1.path())?;
        let mut p = open_peer(d2.path())?;
        let (mut vr, mut pr) = (RoundTrips::default(), RoundTrips::default());
        let mut stamp = 0u64;
        for _ in 0..4 {
            vr.run(
                budget / 4,
                || {
                    stamp += 1;
                    let data = payload(len, stamp);
                    let r = v.append("w8", ExpectedVersion::Any, &[EventData::new("t", &data)])?;
                    Ok((r, data))
                },
                |(r, data)| {
                    let e = v.get(r.first_position)?.ok_or("event missing")?;
                    if v.read_payload(&e)? != data {
                        return Err("payload read back differs".into());
                    }
                    Ok(())
                },
            )?;
            match len {
                l if l == 2 * KIB => {
                    peer_slice::<{ 4 * KIB }>(&mut p, len, budget / 4, &mut stamp, &mut pr)?;
                }
                l if l == 64 * KIB => {
                    peer_slice::<{ 66 * KIB }>(&mut p, len, budget / 4, &mut stamp, &mut pr)?;
                }
                _ => {
                    peer_slice::<{ (5 << 20) + 4 * KIB }>(
                        &mut p,
                        len,
                        budget / 4,
                        &mut stamp,
                        &mut pr,
                    )?;
                }
            }
        }
        let size = if len >= 1 << 20 {
            format!("{} MiB", len >> 20)
        } else {
            format!("{} KiB", len >> 10)
        };
        let w = format!("W8 {size} payload round trip (durable append, get, read back)");
        let mbs = |r: &RoundTrips| -> Vec<f64> {
            r.round_rates
                .iter()
                .map(|rate| rate * len as f64 / 1e6)
                .collect()
        };
        headline(&w, None, "MB/s", Better::Higher, &mbs(&vr), PEER, &mbs(&pr));
        for (part, vs, ps) in [
            ("append", &mut vr.append, &mut pr.append),
            ("read back", &mut vr.read, &mut pr.read),
        ] {
            for (q, name) in [(50.0, "p50"), (99.0, "p99")] {
                compare(
                    GROUP,
                    &format!("{w}: {part}, {name}"),
                    "µs",
                    Better::Lower,
                    vs.percentile_us(q),
                    PEER,
                    ps.percentile_us(q),
                );
            }
        }
    }
    Ok(())
}

/// Whether workload `w` runs: all of them unless `VARVE_ENGINE_BENCH` lists some
/// (`w4,w5`), for profiling one at a time.
fn selected(w: &str) -> bool {
    varve_benches::selected("VARVE_ENGINE_BENCH", w)
}

fn run() -> Res {
    let budget = Duration::from_millis(scaled(1_200, 6_000));
    if selected("w1") {
        w1(budget)?;
    }
    if selected("w2") {
        w2(budget)?;
    }
    if selected("w3") {
        w3(budget)?;
    }
    if selected("w4") {
        w4(budget, scaled(100_000, 1_000_000))?;
    }
    if selected("w5") {
        w5(budget, scaled(200_000, 2_000_000))?;
    }
    if selected("w6") {
        w6(budget, 100, scaled(100, 500), scaled(1_000, 10_000))?;
    }
    if selected("w7") {
        w7(Duration::from_secs(scaled(4, 60)))?;
    }
    if selected("w8") {
        w8(budget)?;
    }
    reference(
        GROUP,
        "Varve::stats calls that failed (Io NotFound: a checkpoint removed a WAL segment meanwhile)",
        "calls",
        Better::Lower,
        "varve",
        STATS_FAILURES.load(Ordering::Relaxed) as f64,
    );
    Ok(())
}

fn main() -> Res {
    // VarveDB's stream handle holds its serialisation buffer inline (5 MiB for W8), so the
    // bench runs on a thread with room for it on the stack.
    std::thread::Builder::new()
        .name("engine-bench".into())
        .stack_size(256 << 20)
        .spawn(run)?
        .join()
        .map_err(|_| "bench panicked")?
}
