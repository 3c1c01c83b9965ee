//! Crash test: a child process (this test binary, re-executed) appends single records and
//! batches from several threads and reports every acknowledged LSN; the parent SIGKILLs
//! it at random moments, reopens, and checks that every acknowledged record is present and
//! byte-identical, that no batch is half-present and that LSNs stay gapless across
//! restarts. In odd rounds the child also truncates the log behind itself, as a
//! checkpointer would, so new segments reuse the files of truncated ones (recycled
//! segments, whose stale bytes recovery must tell from a torn tail). `VARVE_CRASH_ROUNDS=N`
//! runs N rounds (default 100).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use varve_wal::{Options, SyncMode, Wal};

const CHILD_DIR: &str = "VARVE_WAL_CRASH_CHILD_DIR";
const CHILD_ACKS: &str = "VARVE_WAL_CRASH_CHILD_ACKS";
const CHILD_ROUND: &str = "VARVE_WAL_CRASH_CHILD_ROUND";
const THREADS: u32 = 4;

fn opts(round: u32) -> Options {
    let mode = match round % 3 {
        0 => SyncMode::Always,
        1 => SyncMode::Interval(Duration::from_millis(1)),
        _ => SyncMode::Never,
    };
    let opts = Options::default()
        .segment_size(128 << 10)
        .max_record_size(4 << 10)
        .sync_mode(mode);
    // Every other `Always` round closes groups at 1 KiB: full groups with more queued
    // behind them, whose flusher encodes the next group while they sync.
    if round % 6 == 3 {
        opts.group_bytes(1 << 10)
    } else {
        opts
    }
}

/// Identity of one record, carried in its first 16 bytes; the rest is derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id {
    round: u32,
    thread: u32,
    seq: u32,
    idx: u8,
    n: u8,
    len: u16,
}

fn xorshift(s: &mut u64) -> u64 {
    *s = varve_testkit::bytes::xorshift(*s);
    *s
}

fn make(id: Id) -> Vec<u8> {
    let mut v = Vec::with_capacity(usize::from(id.len));
    v.extend_from_slice(&id.round.to_le_bytes());
    v.extend_from_slice(&id.thread.to_le_bytes());
    v.extend_from_slice(&id.seq.to_le_bytes());
    v.extend_from_slice(&[id.idx, id.n]);
    v.extend_from_slice(&id.len.to_le_bytes());
    let mut s = u64::from(id.round) << 40
        ^ u64::from(id.thread) << 32
        ^ u64::from(id.seq) << 8
        ^ u64::from(id.idx)
        | 1;
    while v.len() < usize::from(id.len) {
        v.push(xorshift(&mut s) as u8);
    }
    v
}

fn parse(p: &[u8]) -> Id {
    assert!(p.len() >= 16, "record too short: {}", p.len());
    let u32_at = |o: usize| u32::from_le_bytes(p[o..o + 4].try_into().unwrap());
    let id = Id {
        round: u32_at(0),
        thread: u32_at(4),
        seq: u32_at(8),
        idx: p[12],
        n: p[13],
        len: u16::from_le_bytes([p[14], p[15]]),
    };
    assert_eq!(
        make(id),
        p,
        "record bytes differ from what was appended: {id:?}"
    );
    id
}

/// The child: appends until killed, printing `first_lsn round thread seq n` per ack.
#[test]
fn crash_child() {
    let (Some(dir), Some(acks), Some(round)) = (
        std::env::var_os(CHILD_DIR),
        std::env::var_os(CHILD_ACKS),
        std::env::var(CHILD_ROUND).ok(),
    ) else {
        return; // Not a child: nothing to do.
    };
    let round: u32 = round.parse().unwrap();
    let wal = Wal::open(&dir, opts(round)).unwrap();
    let out = Mutex::new(
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(acks)
            .unwrap(),
    );
    out.lock().unwrap().write_all(b"ready\n").unwrap();
    std::thread::scope(|s| {
        if round % 2 == 1 {
            // A checkpointer: keeps about two segments of history behind the durable end.
            s.spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(2));
                    wal.truncate_before(wal.durable_lsn().saturating_sub(300))
                        .unwrap();
                }
            });
        }
        for thread in 0..THREADS {
            let (wal, out) = (&wal, &out);
            s.spawn(move || {
                let mut rng = u64::from(round) * 7919 + u64::from(thread) * 104_729 + 1;
                for seq in 0.. {
                    let n = if xorshift(&mut rng).is_multiple_of(3) {
                        1 + (xorshift(&mut rng) % 4) as u8
                    } else {
                        1
                    };
                    let recs: Vec<Vec<u8>> = (0..n)
                        .map(|idx| {
                            let len = 16 + (xorshift(&mut rng) % 1500) as u16;
                            make(Id {
                                round,
                                thread,
                                seq,
                                idx,
                                n,
                                len,
                            })
                        })
                        .collect();
                    let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
                    let t = if n == 1 {
                        wal.append(refs[0]).unwrap()
                    } else {
                        wal.append_batch(&refs).unwrap()
                    };
                    let lsn = t.wait().unwrap();
                    let line = format!("{lsn} {round} {thread} {seq} {n}\n");
                    out.lock().unwrap().write_all(line.as_bytes()).unwrap();
                }
            });
        }
    });
}

/// Records verified in earlier rounds: LSN -> (payload hash, identity). A record seen
/// again must hash the same; only new records are re-derived byte by byte.
type Seen = HashMap<u64, (u64, Id)>;

fn check(
    dir: &Path,
    acked: &HashMap<u64, (u32, u32, u32, u8)>,
    round: u32,
    seen: &mut Seen,
) -> u64 {
    let wal = Wal::open(dir, opts(round)).unwrap();
    let next = wal.recovery_report().next_lsn;
    // Records below the first kept LSN were truncated by a child.
    let first = wal.first_lsn();
    seen.retain(|&lsn, _| lsn >= first);
    let mut expect_lsn = first;
    let mut batch: Option<(Id, u64)> = None;
    let mut by_lsn: HashMap<u64, Id> = HashMap::new();
    for r in wal.iter_from(first).unwrap() {
        let r = r.unwrap();
        assert_eq!(r.lsn, expect_lsn, "LSNs must be gapless");
        expect_lsn += 1;
        let hash = xxhash_rust::xxh3::xxh3_64(&r.payload);
        let id = match seen.get(&r.lsn) {
            Some(&(h, id)) => {
                assert_eq!(h, hash, "record {} changed since an earlier round", r.lsn);
                id
            }
            None => {
                let id = parse(&r.payload);
                seen.insert(r.lsn, (hash, id));
                id
            }
        };
        // Batches are whole and contiguous.
        match batch {
            Some((b, first)) => {
                assert_eq!(
                    (id.round, id.thread, id.seq, id.n),
                    (b.round, b.thread, b.seq, b.n),
                    "batch interleaved at {}",
                    r.lsn
                );
                assert_eq!(u64::from(id.idx), r.lsn - first);
            }
            None => assert_eq!(id.idx, 0, "batch starts mid-way at {}", r.lsn),
        }
        batch = if id.idx + 1 < id.n {
            Some(batch.unwrap_or((id, r.lsn)))
        } else {
            None
        };
        by_lsn.insert(r.lsn, id);
    }
    assert!(batch.is_none(), "log ends inside a batch");
    assert_eq!(next, expect_lsn, "next LSN continues the log");
    assert!(
        seen.keys().all(|&l| l < expect_lsn),
        "records verified earlier are gone"
    );
    for (&lsn, &(round, thread, seq, n)) in acked.iter().filter(|(l, _)| **l >= first) {
        let id = by_lsn
            .get(&lsn)
            .unwrap_or_else(|| panic!("acknowledged LSN {lsn} lost"));
        assert_eq!(
            (id.round, id.thread, id.seq, id.n, id.idx),
            (round, thread, seq, n, 0),
            "acknowledged LSN {lsn} holds another record"
        );
    }
    wal.close().unwrap();
    next
}

/// How many segments of `dir` reuse a truncated segment's file (header flag RECYCLED).
fn recycled_segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .filter(|p| std::fs::read(p).unwrap()[12] & 1 != 0)
        .count()
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_record() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let rounds = varve_testkit::crash::rounds(100);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("wal");
    let acks = d.path().join("acks");
    let mut rng = Instant::now().elapsed().as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut acked: HashMap<u64, (u32, u32, u32, u8)> = HashMap::new();
    let mut last_next = 1;
    let mut seen = Seen::new();
    let mut recycled = 0;
    for round in 0..rounds {
        // Kill at a random moment after the child has opened the log.
        let round_s = round.to_string();
        let lines = varve_testkit::crash::kill_child(
            "crash_child",
            &[
                (CHILD_DIR, dir.as_os_str()),
                (CHILD_ACKS, acks.as_os_str()),
                (CHILD_ROUND, round_s.as_ref()),
            ],
            &acks,
            Duration::from_micros(500 + xorshift(&mut rng) % 8_000),
        );
        // Only complete lines were acknowledged (the kill may cut the last one).
        for line in lines.iter().filter(|l| *l != "ready") {
            let f: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let prev = acked.insert(f[0], (f[1] as u32, f[2] as u32, f[3] as u32, f[4] as u8));
            assert!(prev.is_none(), "LSN {} acknowledged twice", f[0]);
        }
        // Every round is a kill and a recovery (the next child's open); the parent
        // verifies the accumulated log every few rounds and after the last one.
        if round % 4 == 3 || round + 1 == rounds {
            recycled += recycled_segments(&dir);
            let next = check(&dir, &acked, round, &mut seen);
            assert!(
                next >= last_next,
                "the log went backwards: {next} < {last_next}"
            );
            last_next = next;
        }
    }
    assert!(!acked.is_empty(), "children acknowledged nothing");
    if rounds >= 8 {
        assert!(recycled > 0, "no round recovered a recycled segment");
    }
    eprintln!(
        "{rounds} crash rounds, {} acknowledged appends, log end LSN {last_next}, \
         {recycled} recycled segments recovered at checks",
        acked.len()
    );
}
