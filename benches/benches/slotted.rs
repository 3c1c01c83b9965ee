//! Slotted-store benchmarks, two parts.
//!
//! 1. Against heed (LMDB) at equal flush cadence (issue 16 item 18; see `peer_mixes`): one
//!    seeded operation list per mix (prefill 100k, pure gets, 95% reads, 50% updates,
//!    80% inserts, update half), ~1 KiB JSON-like values, every get checked, both stores
//!    syncing every 10k writes; rows `vs heed, ...` give ops/s and allocated disk, for
//!    Varve's default (lz4) and for `Compression::None`. qdrant's gridstore, the peer the
//!    issue measured from outside, is not published on crates.io. Set
//!    `VARVE_BENCH_SLOTTED_PEER_ONLY=1` to run only this part.
//! 2. Varve's `varve-slotted` against RocksDB (feature `rocksdb`) or, without it, heed
//!    (LMDB; a write transaction per write, committed without a sync, `force_sync` at each
//!    flush), in the same run, described below.
//!
//! Data: seeded JSON-like documents of 100 B to 10 KiB (log-uniform sizes), keyed by dense
//! ids. Phases, single-threaded unless said: load (put), get, update half, delete; get with
//! 2 reader threads while a writer updates; bytes on disk (allocated blocks) after the load
//! and after updating half; CPU time and RSS growth of the load; Bustle-like mixes (95%
//! reads, 80% inserts, 50% updates) as time per op; the compression ratio a trained
//! dictionary gains. Neither engine syncs per write; each phase ends with a flush (Varve:
//! writeback of the 4 KiB blocks dirtied since the last flush and an fdatasync per page
//! file, then the tracker; RocksDB: memtable flush), included in its time.
//!
//! The peer is rust-rocksdb 0.19 (lz4 only). Building its bundled RocksDB from source takes
//! hours on a loaded 2-core machine; with Debian's `librocksdb-dev` installed, run with
//! `ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu ROCKSDB_INCLUDE_DIR=/usr/include` to link the
//! system library (RocksDB 7.8) instead: `cargo xtask bench --quick --peers --filter slotted`.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use varve_benches::report::{Better, Row, compare, record};
use varve_benches::{quick, scaled, scratch_dir};

const GROUP: &str = "slotted";
/// Page size used by the Varve store in this bench (smaller than the 32 MiB default so a
/// quick run's data set does not sit in one mostly empty page).
const PAGE: u64 = 4 * 1024 * 1024;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const WORDS: &[&str] = &[
    "alpha",
    "shipment",
    "pending",
    "delivered",
    "customer",
    "invoice",
    "warehouse",
    "berlin",
    "paris",
    "priority",
    "standard",
    "express",
    "return",
    "refund",
    "note",
    "gift",
    "blue",
    "large",
    "small",
    "discount",
    "coupon",
    "member",
    "gold",
    "silver",
    "review",
    "rating",
];

/// A JSON-like document of about `len` bytes (100 B..10 KiB), seeded.
fn doc(rng: &mut Rng, id: u64, len: usize) -> Vec<u8> {
    let mut s = format!(
        "{{\"id\":{id},\"type\":\"order\",\"version\":{},\"customer\":{{\"name\":\"{} {}\",\
         \"email\":\"user{}@example.com\",\"tier\":\"{}\"}},\"items\":[",
        rng.below(50),
        WORDS[rng.below(WORDS.len() as u64) as usize],
        WORDS[rng.below(WORDS.len() as u64) as usize],
        rng.below(100_000),
        WORDS[rng.below(WORDS.len() as u64) as usize],
    );
    let mut first = true;
    while s.len() + 40 < len {
        if !first {
            s.push(',');
        }
        first = false;
        s.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"qty\":{},\"price\":{}.{:02},\"tags\":[\"{}\",\"{}\"],\"note\":\"{} {} {}\"}}",
            rng.below(1_000_000),
            rng.below(20) + 1,
            rng.below(500),
            rng.below(100),
            WORDS[rng.below(WORDS.len() as u64) as usize],
            WORDS[rng.below(WORDS.len() as u64) as usize],
            WORDS[rng.below(WORDS.len() as u64) as usize],
            WORDS[rng.below(WORDS.len() as u64) as usize],
            rng.below(1_000_000_000),
        ));
    }
    s.push_str("]}");
    let mut b = s.into_bytes();
    b.truncate(len.max(100));
    b
}

/// Log-uniform length in 100..=10240.
fn doc_len(rng: &mut Rng) -> usize {
    let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
    (100.0 * (102.4f64).powf(u)) as usize
}

fn docs(seed: u64, ids: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed | 1);
    ids.map(|id| {
        let len = doc_len(&mut rng);
        doc(&mut rng, id, len)
    })
    .collect()
}

/// Allocated bytes (blocks) of the files under `dir`: what the data costs on disk, sparse
/// holes excluded.
fn allocated(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if let Ok(m) = e.metadata() {
                total += if m.is_dir() {
                    allocated(&e.path())
                } else {
                    m.blocks() * 512
                };
            }
        }
    }
    total
}

/// CPU time (user + system) of this process so far, from /proc/self/stat (10 ms ticks).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

trait Engine: Send + Sync {
    fn put(&self, id: u64, v: &[u8]);
    fn get(&self, id: u64) -> Option<Vec<u8>>;
    fn delete(&self, id: u64);
    fn flush(&self);
}

struct Varve(varve_slotted::Store);

impl Engine for Varve {
    fn put(&self, id: u64, v: &[u8]) {
        self.0.put(id, v).expect("varve put");
    }
    fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.0.get(id).expect("varve get")
    }
    fn delete(&self, id: u64) {
        self.0.delete(id).expect("varve delete");
    }
    fn flush(&self) {
        self.0.flush().expect("varve flush");
    }
}

fn open_varve(dir: &Path) -> Varve {
    let o = varve_slotted::Options::default().min_page_size(PAGE);
    Varve(varve_slotted::Store::create(dir, o).expect("create varve store"))
}

#[cfg(feature = "rocksdb")]
struct Rocks(rocksdb::DB);

#[cfg(feature = "rocksdb")]
impl Engine for Rocks {
    fn put(&self, id: u64, v: &[u8]) {
        self.0.put(id.to_be_bytes(), v).expect("rocksdb put");
    }
    fn get(&self, id: u64) -> Option<Vec<u8>> {
        self.0.get(id.to_be_bytes()).expect("rocksdb get")
    }
    fn delete(&self, id: u64) {
        self.0.delete(id.to_be_bytes()).expect("rocksdb delete");
    }
    fn flush(&self) {
        self.0.flush().expect("rocksdb flush");
    }
}

#[cfg(feature = "rocksdb")]
fn open_baseline(dir: &Path) -> (Box<dyn Engine>, &'static str) {
    let mut o = rocksdb::Options::default();
    o.create_if_missing(true);
    o.set_compression_type(rocksdb::DBCompressionType::Lz4);
    let db = rocksdb::DB::open(&o, dir).expect("open rocksdb");
    (Box::new(Rocks(db)), "rocksdb (lz4)")
}

/// Without the `rocksdb` feature: heed (LMDB), a persistent store that builds in seconds.
/// Each write is its own write transaction, committed without a sync (`NO_SYNC`), and a
/// flush is `force_sync`, the same cadence as Varve's (no sync per write, one per phase).
#[cfg(not(feature = "rocksdb"))]
struct Heed {
    env: &'static heed::Env<heed::WithoutTls>,
    db: heed::Database<'static, heed::types::Bytes, heed::types::Bytes>,
}

#[cfg(not(feature = "rocksdb"))]
impl Engine for Heed {
    fn put(&self, id: u64, v: &[u8]) {
        let mut w = self.env.write_txn().expect("heed write txn");
        self.db.put(&mut w, &id.to_be_bytes(), v).expect("heed put");
        w.commit().expect("heed commit");
    }
    fn get(&self, id: u64) -> Option<Vec<u8>> {
        let r = self.env.read_txn().expect("heed read txn");
        self.db
            .get(&r, &id.to_be_bytes())
            .expect("heed get")
            .map(<[u8]>::to_vec)
    }
    fn delete(&self, id: u64) {
        let mut w = self.env.write_txn().expect("heed write txn");
        self.db
            .delete(&mut w, &id.to_be_bytes())
            .expect("heed delete");
        w.commit().expect("heed commit");
    }
    fn flush(&self) {
        self.env.force_sync().expect("heed force_sync");
    }
}

#[cfg(not(feature = "rocksdb"))]
fn open_baseline(dir: &Path) -> (Box<dyn Engine>, &'static str) {
    let mut eo = heed::EnvOpenOptions::new().read_txn_without_tls();
    eo.map_size(16 << 30);
    // SAFETY: NO_SYNC only drops the sync at commit (a crash may lose recent commits);
    // this bench syncs with `force_sync` at the end of each phase instead.
    unsafe { eo.flags(heed::EnvFlags::NO_SYNC) };
    // SAFETY: a fresh directory used by this bench only; nothing else maps the file.
    let env = unsafe { eo.open(dir) }.expect("open heed env");
    // The database borrows the environment; the bench opens one, kept for the process.
    let env: &'static heed::Env<heed::WithoutTls> = Box::leak(Box::new(env));
    let db = env
        .create_databases_and_commit(
            env.write_txn().expect("heed write txn"),
            |dbo, wtxn| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(wtxn, None)?,
                ))
            },
        )
        .expect("heed db")
        .commit()
        .expect("heed db created");
    (
        Box::new(Heed { env, db }),
        "heed 0.23 (LMDB), a txn per write, NO_SYNC, force_sync per flush",
    )
}

#[derive(Default, Debug)]
struct Figures {
    put: f64,
    get: f64,
    update: f64,
    delete: f64,
    get_during_writes: f64,
    disk_loaded: f64,
    disk_updated: f64,
    load_cpu_ms: f64,
    load_rss_mib: f64,
}

fn per_sec(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

fn run(
    engine: &dyn Engine,
    dir: &Path,
    n: u64,
    reads: usize,
    data: &[Vec<u8>],
    upd: &[Vec<u8>],
) -> Figures {
    let mut f = Figures::default();
    let rss0 = varve_benches::measure::rss_bytes().unwrap_or(0);
    let cpu0 = cpu_time();
    let t = Instant::now();
    for (id, v) in data.iter().enumerate() {
        engine.put(id as u64, v);
    }
    engine.flush();
    f.put = per_sec(data.len(), t.elapsed());
    f.load_cpu_ms = (cpu_time() - cpu0).as_secs_f64() * 1000.0;
    f.load_rss_mib = varve_benches::measure::rss_bytes()
        .unwrap_or(0)
        .saturating_sub(rss0) as f64
        / 1048576.0;
    f.disk_loaded = allocated(dir) as f64 / 1048576.0;

    let mut rng = Rng(42);
    let t = Instant::now();
    let mut hits = 0usize;
    for _ in 0..reads {
        hits += usize::from(engine.get(rng.below(n)).is_some());
    }
    f.get = per_sec(reads, t.elapsed());
    assert_eq!(hits, reads, "every loaded id reads back");

    // Update half of the ids (every other one) with new documents of new sizes.
    let t = Instant::now();
    for (i, v) in upd.iter().enumerate() {
        engine.put(2 * i as u64, v);
    }
    engine.flush();
    f.update = per_sec(upd.len(), t.elapsed());
    f.disk_updated = allocated(dir) as f64 / 1048576.0;

    // Get with 2 reader threads while this thread updates.
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let budget = Duration::from_millis(scaled(700, 3000));
    let t = Instant::now();
    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (stop, total) = (&stop, &total);
            s.spawn(move || {
                let mut rng = Rng(7 + r);
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(engine.get(rng.below(n)));
                    k += 1;
                }
                total.fetch_add(k, Ordering::Relaxed);
            });
        }
        let mut i = 0usize;
        while t.elapsed() < budget {
            engine.put(2 * (i % upd.len()) as u64 + 1, &upd[i % upd.len()]);
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    f.get_during_writes = total.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64();
    engine.flush();

    // Delete a tenth.
    let dels = (n / 10) as usize;
    let t = Instant::now();
    for i in 0..dels {
        engine.delete((i * 10 + 3) as u64);
    }
    engine.flush();
    f.delete = per_sec(dels, t.elapsed());
    f
}

/// Bustle-like mixes, single-threaded, on the loaded engine: time per op in µs.
/// 0: 95% get, 3% update, 1% insert, 1% delete; 1: 80% insert, 15% get, 5% update;
/// 2: 50% update, 50% get.
fn mixes(engine: &dyn Engine, n: u64, ops: usize, pool: &[Vec<u8>]) -> [f64; 3] {
    let mut out = [0.0; 3];
    let mut next_id = 10 * n;
    for (m, slot) in out.iter_mut().enumerate() {
        let mut rng = Rng(1000 + m as u64);
        let t = Instant::now();
        for i in 0..ops {
            let p = rng.below(100);
            let v = &pool[i % pool.len()];
            let (get, update, insert) = match m {
                0 => (p < 95, p < 98, p < 99),
                1 => (p < 15, p < 20, true),
                _ => (p < 50, true, false),
            };
            if get {
                std::hint::black_box(engine.get(rng.below(n)));
            } else if update {
                engine.put(rng.below(n), v);
            } else if insert {
                engine.put(next_id, v);
                next_id += 1;
            } else {
                engine.delete(rng.below(n));
            }
        }
        engine.flush();
        *slot = t.elapsed().as_secs_f64() * 1e6 / ops as f64;
    }
    out
}

fn main() {
    peer_mixes();
    if std::env::var_os("VARVE_BENCH_SLOTTED_PEER_ONLY").is_some() {
        return;
    }
    let n: u64 = scaled(4_000, 40_000);
    let reads = scaled(20_000, 200_000);
    let mix_ops = scaled(20_000, 200_000);
    eprintln!("slotted bench: {n} documents, quick={}", quick());
    let data = docs(1, 0..n);
    let upd = docs(2, 0..n / 2);
    let raw: usize = data.iter().map(Vec::len).sum();
    eprintln!(
        "  {:.1} MiB of documents, mean {} B",
        raw as f64 / 1048576.0,
        raw / n as usize
    );

    let vdir = scratch_dir().expect("scratch dir");
    let v = open_varve(vdir.path());
    let vf = run(&v, vdir.path(), n, reads, &data, &upd);
    let vm = mixes(&v, n, mix_ops, &upd);
    eprintln!("  varve: {vf:?} mixes {vm:?} stats {:?}", v.0.stats());
    drop(v);

    // Varve again, with an lz4 dictionary trained on the first 500 documents (the store's
    // answer to the cross-document redundancy RocksDB's 4 KiB blocks compress away).
    let ddir = scratch_dir().expect("scratch dir");
    let d = open_varve(ddir.path());
    for (id, doc) in data.iter().enumerate().take(500) {
        d.put(id as u64, doc);
    }
    d.0.train_dictionary(500, 16 * 1024).expect("train");
    let df = run(&d, ddir.path(), n, reads / 10, &data, &upd);
    eprintln!("  varve + dictionary: {df:?} stats {:?}", d.0.stats());
    drop(d);

    let bdir = scratch_dir().expect("scratch dir");
    let (b, name) = open_baseline(bdir.path());
    let bf = run(b.as_ref(), bdir.path(), n, reads, &data, &upd);
    let bm = mixes(b.as_ref(), n, mix_ops, &upd);
    eprintln!("  {name}: {bf:?} mixes {bm:?}");
    drop(b);

    let rows: [(&str, &str, Better, f64, f64); 9] = [
        (
            "put (load), 1 thread",
            "ops/s",
            Better::Higher,
            vf.put,
            bf.put,
        ),
        ("get, 1 thread", "ops/s", Better::Higher, vf.get, bf.get),
        (
            "update half, 1 thread",
            "ops/s",
            Better::Higher,
            vf.update,
            bf.update,
        ),
        (
            "delete, 1 thread",
            "ops/s",
            Better::Higher,
            vf.delete,
            bf.delete,
        ),
        (
            "get, 2 readers during writes",
            "ops/s",
            Better::Higher,
            vf.get_during_writes,
            bf.get_during_writes,
        ),
        (
            "CPU time of the load",
            "ms",
            Better::Lower,
            vf.load_cpu_ms,
            bf.load_cpu_ms,
        ),
        (
            "RSS growth during the load",
            "MiB",
            Better::Lower,
            vf.load_rss_mib.max(0.01),
            bf.load_rss_mib.max(0.01),
        ),
        (
            "disk after load (allocated)",
            "MiB",
            Better::Lower,
            vf.disk_loaded,
            bf.disk_loaded,
        ),
        (
            "disk after updating half (allocated)",
            "MiB",
            Better::Lower,
            vf.disk_updated,
            bf.disk_updated,
        ),
    ];
    for (w, unit, better, x, y) in rows {
        if y > 0.0 {
            compare(GROUP, w, unit, better, x, name, y);
        } else {
            // No peer figure (the peer reported nothing for it): a Varve-only row.
            record(Row {
                group: GROUP.into(),
                workload: w.into(),
                unit: unit.into(),
                better,
                varve: Some(x),
                baseline_name: name.into(),
                baseline: None,
                ..Row::default()
            });
        }
    }
    for (w, x, y) in [
        (
            "disk after load (allocated), Varve + trained dictionary",
            df.disk_loaded,
            bf.disk_loaded,
        ),
        (
            "disk after updating half (allocated), Varve + trained dictionary",
            df.disk_updated,
            bf.disk_updated,
        ),
        (
            "update half, 1 thread, Varve + trained dictionary",
            df.update,
            bf.update,
        ),
    ] {
        let (unit, better) = if w.starts_with("disk") {
            ("MiB", Better::Lower)
        } else {
            ("ops/s", Better::Higher)
        };
        if y > 0.0 {
            compare(GROUP, w, unit, better, x, name, y);
        }
    }
    let names = ["mix 95% reads", "mix 80% inserts", "mix 50% updates"];
    for i in 0..3 {
        compare(
            GROUP,
            &format!("{}: time per op", names[i]),
            "µs",
            Better::Lower,
            vm[i],
            name,
            bm[i],
        );
    }
    dictionary_gain(&data);
}

/// Compression ratio of the same documents with and without a trained dictionary.
fn dictionary_gain(data: &[Vec<u8>]) {
    let ratio = |train: bool| {
        let dir = scratch_dir().expect("scratch dir");
        let s = varve_slotted::Store::create(
            dir.path(),
            varve_slotted::Options::default().min_page_size(PAGE),
        )
        .expect("create");
        if train {
            for (id, v) in data.iter().enumerate().take(500) {
                s.put(id as u64, v).expect("put");
            }
            s.train_dictionary(500, 16 * 1024).expect("train");
        }
        for (id, v) in data.iter().enumerate() {
            s.put(id as u64, v).expect("put");
        }
        s.stats().expect("stats").compression_ratio
    };
    let (plain, dict) = (ratio(false), ratio(true));
    compare(
        GROUP,
        "compression ratio, lz4 + trained 16 KiB dictionary",
        "x",
        Better::Higher,
        dict,
        "lz4 without dictionary",
        plain,
    );
}

// ---------------------------------------------------------------------------------------
// Mixes against heed (LMDB) at equal flush cadence (issue 16, item 18).
//
// qdrant's gridstore, the peer the issue measured from outside, is not published on
// crates.io; the issue allows an equivalent mix against heed (LMDB 0.9 through heed 0.23),
// which is used as it ships (default flags: each commit writes its dirty pages and
// `fdatasync`s data and meta page).
//
// One seeded operation list per mix, applied to both stores; one thread; JSON-like
// values of 900..1150 bytes; 100 000 ids prefilled (ids 0..100 000 in order). Every get
// is checked against the model (the value's bytes compared in full; each store through
// its cheapest checked read: Varve's `get_with`, heed's borrowed `get`). Both flush every
// 10 000 writes and at the end of each mix, inside the timed region: Varve `flush()`,
// heed a commit of the write transaction holding those writes (its reads of a mix with
// writes go through that transaction, so they see its own writes, as Varve's do; reads of
// the pure-get mix go through a read transaction renewed every 10 000 gets). Each mix is
// cut into slices run alternately on the two stores (so both share the machine's
// background load); a mix's time is the sum of its slices.
// ---------------------------------------------------------------------------------------

/// Ids prefilled before the mixes.
const PEER_IDS: u64 = 100_000;
/// Writes between two flushes (Varve `flush`, heed commit), for both stores.
const FLUSH_EVERY: u64 = 10_000;
/// Slices each mix is cut into, run alternately on the two stores.
const SLICES: usize = 8;
const HEED: &str = "heed 0.23 (LMDB), commit every 10k writes";

#[derive(Clone, Copy)]
enum Op {
    /// Read `id`, expecting value number `want` (`u32::MAX`: no value).
    Get(u64, u32),
    /// Store value number `v` under `id`.
    Put(u64, u32),
}

/// A mix: its name and its operation list.
struct Mix {
    name: &'static str,
    ops: Vec<Op>,
}

/// The values ops refer to by number, and the model of which id holds which.
struct Model {
    values: Vec<Vec<u8>>,
    holds: Vec<u32>,
}

impl Model {
    fn new(rng: &mut Rng) -> Model {
        let mut values = Vec::new();
        for id in 0..PEER_IDS + 20_000 {
            let len = 900 + rng.below(251) as usize;
            values.push(doc(rng, id, len));
        }
        Model {
            values,
            holds: Vec::new(),
        }
    }

    fn pick(&self, rng: &mut Rng) -> u32 {
        rng.below(self.values.len() as u64) as u32
    }

    /// Appends to `ops` a put of a random value under `id`, updating the model.
    fn put(&mut self, rng: &mut Rng, ops: &mut Vec<Op>, id: u64) {
        let v = self.pick(rng);
        if id as usize == self.holds.len() {
            self.holds.push(v);
        } else {
            self.holds[id as usize] = v;
        }
        ops.push(Op::Put(id, v));
    }

    fn get(&self, rng: &mut Rng, ops: &mut Vec<Op>) {
        let id = rng.below(self.holds.len() as u64);
        ops.push(Op::Get(id, self.holds[id as usize]));
    }
}

/// The seeded mixes, in the order they run (each starts from the state the previous left).
fn build_mixes(model: &mut Model, ops: usize) -> Vec<Mix> {
    let mut rng = Rng(0x0510_77ED);
    let mut mixes = Vec::new();
    let mut prefill = Vec::new();
    for id in 0..PEER_IDS {
        let v = id as u32;
        model.holds.push(v);
        prefill.push(Op::Put(id, v));
    }
    mixes.push(Mix {
        name: "prefill 100k",
        ops: prefill,
    });
    let mut gets = Vec::new();
    for _ in 0..ops {
        model.get(&mut rng, &mut gets);
    }
    mixes.push(Mix {
        name: "pure gets",
        ops: gets,
    });
    for (name, get_pct, insert_pct) in [
        ("95% reads, 5% updates", 95, 0),
        ("50% reads, 50% updates", 50, 0),
        ("80% inserts, 20% reads", 20, 80),
    ] {
        let mut list = Vec::with_capacity(ops);
        for _ in 0..ops {
            let p = rng.below(100);
            if p < get_pct {
                model.get(&mut rng, &mut list);
            } else if p < get_pct + insert_pct {
                let id = model.holds.len() as u64;
                model.put(&mut rng, &mut list, id);
            } else {
                let id = rng.below(model.holds.len() as u64);
                model.put(&mut rng, &mut list, id);
            }
        }
        mixes.push(Mix { name, ops: list });
    }
    // Update half: every other prefilled id once, in a seeded order.
    let mut ids: Vec<u64> = (0..PEER_IDS).step_by(2).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut upd = Vec::with_capacity(ids.len());
    for id in ids {
        model.put(&mut rng, &mut upd, id);
    }
    mixes.push(Mix {
        name: "update half",
        ops: upd,
    });
    mixes
}

/// Varve's side: runs `ops`, flushing every `FLUSH_EVERY` writes (counted across slices).
fn varve_slice(s: &varve_slotted::Store, model: &Model, ops: &[Op], writes: &mut u64) {
    for op in ops {
        match *op {
            Op::Get(id, want) => {
                let ok = s
                    .get_with(id, |v| v == model.values[want as usize].as_slice())
                    .expect("varve get");
                assert_eq!(ok, Some(true), "varve: id {id} reads back its value");
            }
            Op::Put(id, v) => {
                s.put(id, &model.values[v as usize]).expect("varve put");
                *writes += 1;
                if (*writes).is_multiple_of(FLUSH_EVERY) {
                    let t = Instant::now();
                    s.flush().expect("varve flush");
                    note_flush(t);
                }
            }
        }
    }
}

thread_local! {
    /// Time spent in flushes (Varve `flush`, heed commit) since it was last taken.
    static FLUSH_TIME: std::cell::Cell<Duration> = const { std::cell::Cell::new(Duration::ZERO) };
}

fn note_flush(since: Instant) {
    FLUSH_TIME.set(FLUSH_TIME.get() + since.elapsed());
}

type HeedDb<'e> = heed::Database<'e, heed::types::Bytes, heed::types::Bytes>;

/// heed's side: the same, with writes (and the reads between them) in a write transaction
/// committed every `FLUSH_EVERY` writes; a mix without writes reads in a read transaction
/// renewed every `FLUSH_EVERY` gets.
fn heed_slice<'e>(
    env: &'e heed::Env<heed::WithoutTls>,
    db: &HeedDb<'e>,
    model: &Model,
    ops: &[Op],
    writes: &mut u64,
    wtxn: &mut Option<heed::RwTxn<'e>>,
    reads_only: bool,
) {
    let check = |got: Option<&[u8]>, id: u64, want: u32| {
        assert!(
            got == Some(model.values[want as usize].as_slice()),
            "heed: id {id} reads back its value"
        );
    };
    if reads_only {
        for chunk in ops.chunks(FLUSH_EVERY as usize) {
            let rtxn = env.read_txn().expect("heed read txn");
            for op in chunk {
                if let Op::Get(id, want) = *op {
                    check(
                        db.get(&rtxn, &id.to_be_bytes()).expect("heed get"),
                        id,
                        want,
                    );
                }
            }
        }
        return;
    }
    for op in ops {
        let txn = match wtxn {
            Some(t) => t,
            None => wtxn.insert(env.write_txn().expect("heed write txn")),
        };
        match *op {
            Op::Get(id, want) => check(db.get(txn, &id.to_be_bytes()).expect("heed get"), id, want),
            Op::Put(id, v) => {
                db.put(txn, &id.to_be_bytes(), &model.values[v as usize])
                    .expect("heed put");
                *writes += 1;
                if (*writes).is_multiple_of(FLUSH_EVERY)
                    && let Some(txn) = wtxn.take()
                {
                    let t = Instant::now();
                    txn.commit().expect("heed commit");
                    note_flush(t);
                }
            }
        }
    }
}

/// The Varve configurations measured against heed: the default (lz4), and values stored
/// as given.
const VARVE_CONFIGS: [(&str, varve_slotted::Compression); 2] = [
    ("", varve_slotted::Compression::Lz4),
    (
        ", Varve Compression::None",
        varve_slotted::Compression::None,
    ),
];

/// Runs every mix on both stores; records ops/s rows and the disk rows.
fn peer_mixes() {
    let ops = scaled(50_000, 200_000);
    let mut model = Model::new(&mut Rng(0x0000_DA7A_5EED));
    let mixes = build_mixes(&mut model, ops);
    eprintln!(
        "slotted vs heed: {PEER_IDS} ids of ~1 KiB, {ops} ops per mix, flush every {FLUSH_EVERY} writes"
    );

    let mut varve = Vec::new();
    for (_, c) in VARVE_CONFIGS {
        let dir = scratch_dir().expect("scratch dir");
        // The bench flushes every 10k writes, as heed commits: the store's own flush on
        // retired bytes (a bound for callers that never flush) is off, so both stores sync
        // at the same cadence.
        let o = varve_slotted::Options::default()
            .compression(c)
            .flush_after_retired_bytes(0);
        let store = varve_slotted::Store::create(dir.path(), o).expect("create varve store");
        varve.push((dir, store));
    }
    let hdir = scratch_dir().expect("scratch dir");
    let mut eo = heed::EnvOpenOptions::new().read_txn_without_tls();
    eo.map_size(16 << 30);
    // SAFETY: a fresh directory used by this bench only; nothing else maps the file.
    let env = unsafe { eo.open(hdir.path()) }.expect("open heed env");
    let db: HeedDb<'_> = env
        .create_databases_and_commit(
            env.write_txn().expect("heed write txn"),
            |dbo, wtxn| -> heed::Result<_> {
                Ok(heed::CommitOrAbort::<_, ()>::Commit(
                    dbo.create_database(wtxn, None)?,
                ))
            },
        )
        .expect("heed db")
        .commit()
        .expect("heed db created");

    let contenders = VARVE_CONFIGS.len() + 1;
    let mut writes = vec![0u64; contenders];
    let mut wtxn: Option<heed::RwTxn<'_>> = None;
    for (i, mix) in mixes.iter().enumerate() {
        let reads_only = mix.ops.iter().all(|o| matches!(o, Op::Get(..)));
        let slice = mix.ops.len().div_ceil(SLICES);
        let mut times = vec![Duration::ZERO; contenders];
        let mut flush_times = vec![Duration::ZERO; contenders];
        for (k, part) in mix.ops.chunks(slice).enumerate() {
            let last = (k + 1) * slice >= mix.ops.len();
            // Rotate which store goes first, so none always follows the same one.
            for j in 0..contenders {
                let who = (i + k + j) % contenders;
                let t = Instant::now();
                if let Some((_, store)) = varve.get(who) {
                    varve_slice(store, &model, part, &mut writes[who]);
                    if last {
                        let t = Instant::now();
                        store.flush().expect("varve flush");
                        note_flush(t);
                    }
                } else {
                    heed_slice(
                        &env,
                        &db,
                        &model,
                        part,
                        &mut writes[who],
                        &mut wtxn,
                        reads_only,
                    );
                    if last && let Some(txn) = wtxn.take() {
                        let t = Instant::now();
                        txn.commit().expect("heed commit");
                        note_flush(t);
                    }
                }
                times[who] += t.elapsed();
                flush_times[who] += FLUSH_TIME.take();
            }
        }
        let n = mix.ops.len();
        eprintln!(
            "  {}: time (of which flushing) per store, ms: {}",
            mix.name,
            times
                .iter()
                .zip(&flush_times)
                .map(|(t, f)| format!(
                    "{:.0} ({:.0})",
                    t.as_secs_f64() * 1e3,
                    f.as_secs_f64() * 1e3
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let heed_rate = per_sec(n, times[contenders - 1]);
        for (c, (label, _)) in VARVE_CONFIGS.iter().enumerate() {
            compare(
                GROUP,
                &format!(
                    "vs heed, {}, 1 thread, flush every 10k writes{label}",
                    mix.name
                ),
                "ops/s",
                Better::Higher,
                per_sec(n, times[c]),
                HEED,
                heed_rate,
            );
        }
        if i == 0 {
            disk_rows("after prefill", &varve, hdir.path());
        }
    }
    disk_rows("after every mix", &varve, hdir.path());
    for (c, (_, store)) in varve.iter().enumerate() {
        eprintln!(
            "  varve {:?} stats {:?}",
            VARVE_CONFIGS[c].1,
            store.stats().expect("stats")
        );
    }
}

fn disk_rows(when: &str, varve: &[(tempfile::TempDir, varve_slotted::Store)], heed: &Path) {
    for (c, (label, _)) in VARVE_CONFIGS.iter().enumerate() {
        compare(
            GROUP,
            &format!("vs heed, disk {when} (allocated){label}"),
            "MiB",
            Better::Lower,
            allocated(varve[c].0.path()) as f64 / 1048576.0,
            HEED,
            allocated(heed) as f64 / 1048576.0,
        );
    }
}
