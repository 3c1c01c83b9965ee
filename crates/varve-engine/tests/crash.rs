//! Crash test: a child process (this test binary, re-executed) appends from 16 threads:
//! single events, batches, multi-stream appends, and large payloads that go through the
//! sidecar, with checkpoints running every few milliseconds. It records every acknowledged
//! append in a file; the parent SIGKILLs it at a random moment (so also in the middle of a
//! checkpoint and between a blob's store and its log write), reopens, and checks:
//! every acknowledged event is present and byte-identical, positions are gapless, every
//! multi-append is whole, the blob count equals the blobs still referenced, and numbering
//! continues. A consumer thread in the child follows the log and commits its cursor; after
//! each reopen the cursor is at or past the last commit acknowledged and within the log.
//! A snapshot thread snapshots stream `t0`; the latest snapshot after a reopen is at or
//! past the last one acknowledged, byte for byte. A deleter thread appends blob events to
//! stream `d` and soft-deletes it now and then; after a reopen no event it deleted (by an
//! acknowledged delete) is visible, and after a checkpoint the sidecar holds exactly the
//! blobs visible events refer to.
//! `VARVE_CRASH_ROUNDS=N` runs N rounds (default 50).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write as _;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use varve_engine::{Direction, EventData, EventPayload, ExpectedVersion, Filter, Options, Varve};
use varve_testkit::bytes::xorshift;

const CHILD_DIR: &str = "VARVE_ENGINE_CRASH_CHILD_DIR";
const CHILD_ACKS: &str = "VARVE_ENGINE_CRASH_CHILD_ACKS";
const CHILD_ROUND: &str = "VARVE_ENGINE_CRASH_CHILD_ROUND";
const THREADS: u32 = 16;
const CONSUMER: &str = "crash-consumer";

fn opts() -> Options {
    Options::default()
        .checkpoint_interval(Duration::from_millis(3))
        .checkpoint_bytes(16 << 10)
        .max_tail_bytes(4 << 20)
        .wal_segment_size(2 << 20)
}

/// The snapshot bytes of version `v` of `t0` (sizes from 10 B to about 200 KiB).
fn snapshot(v: u64) -> Vec<u8> {
    let len = 10 + (v.wrapping_mul(7919) % 200_000) as usize;
    (0..len).map(|i| (i as u64 ^ v) as u8).collect()
}

/// Payload of the deleter's events: a stamp, then bytes derived from it (a blob: >= 2 KiB).
fn d_payload(stamp: u64) -> Vec<u8> {
    let len = 2048 + (stamp % 2000) as usize;
    let mut v = stamp.to_le_bytes().to_vec();
    v.extend((8..len).map(|i| (stamp.wrapping_mul(31) as usize + i) as u8));
    v
}

/// Identity of one event, carried in its first 16 bytes; the rest derives from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Id {
    round: u32,
    thread: u32,
    seq: u32,
    k: u8,
    n: u8,
}

fn mix(id: Id) -> u64 {
    let mut s = (u64::from(id.round) << 40)
        ^ (u64::from(id.thread) << 32)
        ^ (u64::from(id.seq) << 8)
        ^ u64::from(id.k)
        | 1;
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    s
}

fn len_of(id: Id) -> usize {
    let h = mix(id);
    if (h >> 20).is_multiple_of(16) {
        2048 + (h >> 8) as usize % 6000
    } else {
        16 + (h >> 8) as usize % 300
    }
}

fn make(id: Id) -> Vec<u8> {
    let len = len_of(id);
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(&id.round.to_le_bytes());
    v.extend_from_slice(&id.thread.to_le_bytes());
    v.extend_from_slice(&id.seq.to_le_bytes());
    v.extend_from_slice(&[id.k, id.n, 0, 0]);
    let mut s = mix(id);
    while v.len() < len {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.push(s as u8);
    }
    v
}

fn parse(p: &[u8]) -> Id {
    let w = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().unwrap());
    Id {
        round: w(0),
        thread: w(4),
        seq: w(8),
        k: p[12],
        n: p[13],
    }
}

/// The child: appends until killed, writing `round thread seq n first_position` per ack.
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
    let db = Varve::open(&dir, opts()).unwrap();
    let out = Mutex::new(std::fs::File::create(&acks).unwrap());
    writeln!(out.lock().unwrap(), "ready").unwrap();
    std::thread::scope(|s| {
        {
            let db = db.clone();
            let out = &out;
            s.spawn(move || {
                let consumer = db.consumer(CONSUMER).unwrap();
                let mut sub = consumer.subscribe(Filter::all());
                for n in 1u64.. {
                    if sub
                        .next_timeout(Duration::from_millis(20))
                        .unwrap()
                        .is_some()
                        && n % 7 == 0
                    {
                        let p = sub.position();
                        consumer.commit(p).unwrap();
                        writeln!(out.lock().unwrap(), "c {p}").unwrap();
                    }
                }
            });
        }
        {
            let db = db.clone();
            let out = &out;
            s.spawn(move || {
                loop {
                    if let Some(v) = db.stream_version("t0").unwrap()
                        && db.put_snapshot("t0", v, &snapshot(v)).unwrap()
                    {
                        writeln!(out.lock().unwrap(), "s {v}").unwrap();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        {
            let db = db.clone();
            let out = &out;
            s.spawn(move || {
                for k in 0u64.. {
                    let stamp = (u64::from(round) << 32) | k;
                    let r = db
                        .append(
                            "d",
                            ExpectedVersion::Any,
                            &[EventData::new("del", &d_payload(stamp))],
                        )
                        .unwrap();
                    if k % 2 == 1 {
                        let v = r.last_version;
                        db.delete_stream(
                            "d",
                            ExpectedVersion::Exact(v),
                            varve_engine::DeleteMode::Soft,
                        )
                        .unwrap();
                        writeln!(out.lock().unwrap(), "d {v}").unwrap();
                    }
                }
            });
        }
        for thread in 0..THREADS {
            let db = db.clone();
            let out = &out;
            s.spawn(move || {
                for seq in 0.. {
                    let kind = mix(Id {
                        round,
                        thread,
                        seq,
                        k: 99,
                        n: 0,
                    }) % 5;
                    let n: u8 = match kind {
                        0 => 3, // multi-append: 2 events in t{thread}, 1 in m{thread}
                        1 => 4,
                        _ => 1,
                    };
                    let bodies: Vec<Vec<u8>> = (0..n)
                        .map(|k| {
                            make(Id {
                                round,
                                thread,
                                seq,
                                k,
                                n,
                            })
                        })
                        .collect();
                    let evs: Vec<EventData<'_>> =
                        bodies.iter().map(|b| EventData::new("crash", b)).collect();
                    let own = format!("t{thread}");
                    let r = if kind == 0 {
                        let other = format!("m{thread}");
                        db.append_multi(&[
                            (&own, ExpectedVersion::Any, &evs[..2]),
                            (&other, ExpectedVersion::Any, &evs[2..]),
                        ])
                    } else {
                        db.append(&own, ExpectedVersion::Any, &evs)
                    }
                    .unwrap();
                    writeln!(
                        out.lock().unwrap(),
                        "{round} {thread} {seq} {n} {}",
                        r.first_position
                    )
                    .unwrap();
                }
            });
        }
    });
}

fn stream_of(id: Id) -> String {
    if id.n == 3 && id.k == 2 {
        format!("m{}", id.thread)
    } else {
        format!("t{}", id.thread)
    }
}

/// Checks the whole store against the acknowledgements; returns the next position.
fn check(db: &Varve, acked: &HashMap<u64, Id>, d_floor: Option<u64>) -> u64 {
    // Deletions are applied (and their blobs released) by a checkpoint.
    db.checkpoint().unwrap();
    let events = db.read_all(0, Direction::Forward, usize::MAX).unwrap();
    let mut calls: HashMap<(u32, u32, u32), Vec<u8>> = HashMap::new();
    let mut blobs = HashSet::new();
    let mut by_pos = HashMap::new();
    let mut prev = None;
    for e in &events {
        // Only the deleter's stream leaves gaps; every acknowledged event is checked below.
        assert!(prev.is_none_or(|p| e.position > p), "positions increase");
        prev = Some(e.position);
        by_pos.insert(e.position, e);
        let p = e.position;
        if e.event_type == "parent" {
            continue;
        }
        if e.event_type == "del" {
            assert_eq!(&*e.stream, "d");
            assert!(
                d_floor.is_none_or(|f| e.version > f),
                "d version {} visible after the delete acknowledged at {d_floor:?}",
                e.version
            );
            let bytes = db.read_payload(e).unwrap();
            let stamp = u64::from_le_bytes(bytes[..8].try_into().unwrap());
            assert_eq!(bytes, d_payload(stamp), "d event at {p}");
            if let EventPayload::Blob { hash, .. } = e.payload {
                blobs.insert(hash);
            }
            continue;
        }
        let bytes = db.read_payload(e).unwrap();
        let id = parse(&bytes);
        assert_eq!(bytes, make(id), "event at {p} is byte-identical");
        assert_eq!(&*e.stream, stream_of(id));
        if let EventPayload::Blob { hash, .. } = e.payload {
            blobs.insert(hash);
        }
        calls
            .entry((id.round, id.thread, id.seq))
            .or_default()
            .push(id.k);
        if let Some(first) = acked.get(&p) {
            assert_eq!(*first, id, "acknowledged call at {p}");
        }
    }
    for ((round, thread, seq), ks) in &calls {
        let n = make(Id {
            round: *round,
            thread: *thread,
            seq: *seq,
            k: 0,
            n: 0,
        })
        .len();
        let _ = n;
        let want: Vec<u8> = (0..ks.len() as u8).collect();
        assert_eq!(
            ks, &want,
            "call {round}/{thread}/{seq} is whole and in order"
        );
    }
    for (pos, id) in acked {
        let e = by_pos
            .get(pos)
            .unwrap_or_else(|| panic!("acknowledged event at {pos} is missing"));
        let bytes = db.read_payload(e).unwrap();
        assert_eq!(parse(&bytes), *id, "acknowledged event at {pos} survived");
        let calls_len = calls[&(id.round, id.thread, id.seq)].len();
        assert_eq!(calls_len, usize::from(id.n), "acknowledged call is whole");
    }
    let stats = db.stats().unwrap();
    assert!(
        prev.is_none_or(|p| p < stats.next_position),
        "an event past next_position"
    );
    assert_eq!(
        stats.blobs,
        blobs.len() as u64,
        "blob count = referenced blobs"
    );
    stats.next_position
}

#[test]
fn sigkill_at_random_moments_loses_no_acknowledged_event() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let rounds = varve_testkit::crash::rounds(50);
    let d = common::tempdir();
    let dir = d.path().join("store");
    let acks = d.path().join("acks");
    let mut rng = Instant::now().elapsed().as_nanos() as u64 ^ 0x9E37_79B9_7F4A_7C15;
    let mut acked: HashMap<u64, Id> = HashMap::new();
    let mut committed = 0u64;
    let mut commits = 0u64;
    let mut snapshotted: Option<u64> = None;
    let mut snapshots = 0u64;
    let mut d_floor: Option<u64> = None;
    let mut deletes = 0u64;
    for round in 0..rounds {
        rng = xorshift(rng);
        let round_s = round.to_string();
        let lines = varve_testkit::crash::kill_child(
            "crash_child",
            &[
                (CHILD_DIR, dir.as_os_str()),
                (CHILD_ACKS, acks.as_os_str()),
                (CHILD_ROUND, round_s.as_ref()),
            ],
            &acks,
            Duration::from_micros(1_000 + rng % 40_000),
        );
        for line in lines.iter().filter(|l| *l != "ready") {
            if let Some(v) = line.strip_prefix("d ") {
                let v: u64 = v.parse().unwrap();
                assert!(d_floor.is_none_or(|f| v > f), "d deletes move forward");
                d_floor = Some(v);
                deletes += 1;
                continue;
            }
            if let Some(v) = line.strip_prefix("s ") {
                let v: u64 = v.parse().unwrap();
                assert!(snapshotted.is_none_or(|s| v >= s), "snapshots move forward");
                snapshotted = Some(v);
                snapshots += 1;
                continue;
            }
            if let Some(p) = line.strip_prefix("c ") {
                let p: u64 = p.parse().unwrap();
                assert!(p >= committed, "consumer commits move forward");
                committed = p;
                commits += 1;
                continue;
            }
            let f: Vec<u64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
            let (round, thread, seq, n, first) =
                (f[0] as u32, f[1] as u32, f[2] as u32, f[3] as u8, f[4]);
            for k in 0..n {
                let prev = acked.insert(
                    first + u64::from(k),
                    Id {
                        round,
                        thread,
                        seq,
                        k,
                        n,
                    },
                );
                assert!(
                    prev.is_none(),
                    "position {} acknowledged twice",
                    first + u64::from(k)
                );
            }
        }
        let db = Varve::open(&dir, opts()).unwrap();
        let next = if round % 5 == 4 || round + 1 == rounds {
            check(&db, &acked, d_floor)
        } else {
            db.stats().unwrap().next_position
        };
        if let Some(floor) = d_floor {
            match db.read_stream("d", Direction::Forward, 0, 1) {
                Ok(evs) => assert!(evs[0].version > floor, "a deleted d event is visible"),
                Err(varve_engine::Error::StreamNotFound { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let cursor = db.consumer(CONSUMER).unwrap().position();
        assert!(
            cursor >= committed,
            "consumer cursor {cursor} lost the acknowledged commit {committed}"
        );
        assert!(
            cursor <= next,
            "consumer cursor {cursor} past the log's end {next}"
        );
        if let Some(acked) = snapshotted {
            let (v, bytes) = db.latest_snapshot("t0").unwrap().expect("a snapshot");
            assert!(
                v >= acked,
                "snapshot {v} older than the acknowledged {acked}"
            );
            assert_eq!(bytes, snapshot(v), "snapshot of version {v}");
        }
        // Numbering continues after the crash.
        let r = db
            .append(
                "parent",
                ExpectedVersion::Any,
                &[EventData::new("parent", b"p")],
            )
            .unwrap();
        assert_eq!(r.first_position, next);
        db.close().unwrap();
    }
    assert!(!acked.is_empty());
    eprintln!(
        "{rounds} rounds, {} acknowledged events, {commits} consumer commits, {snapshots} \
         snapshots and {deletes} deletes checked",
        acked.len()
    );
}
