//! Many threads at once: expected-version races, gapless positions, per-writer order.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use common::*;
use varve_engine::{Direction, Error, EventData, EventPayload, ExpectedVersion};

#[test]
fn sixteen_threads_racing_exact_versions_have_exactly_one_winner_per_round() {
    let dir = tempdir();
    let db = open(dir.path());
    db.append("race", ExpectedVersion::NoStream, &[ev(b"start")])
        .unwrap();
    let rounds = 30;
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(16));
        let winners: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16u8)
                .map(|t| {
                    let db = db.clone();
                    let barrier = Arc::clone(&barrier);
                    s.spawn(move || {
                        barrier.wait();
                        match db.append("race", ExpectedVersion::Exact(round), &[ev(&[t])]) {
                            Ok(r) => {
                                assert_eq!(r.first_version, round + 1);
                                true
                            }
                            Err(Error::WrongExpectedVersion { actual, .. }) => {
                                assert_eq!(actual, Some(round + 1));
                                false
                            }
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(winners.iter().filter(|w| **w).count(), 1, "round {round}");
    }
    assert_eq!(db.stream_version("race").unwrap(), Some(rounds));
    assert_eq!(db.stats().unwrap().next_position, rounds + 1);
}

fn payload(writer: u32, i: u32) -> Vec<u8> {
    let mut p = writer.to_le_bytes().to_vec();
    p.extend_from_slice(&i.to_le_bytes());
    p
}

#[test]
fn sixteen_writers_produce_a_gapless_log_in_each_writers_order() {
    let dir = tempdir();
    let db = open(dir.path());
    let writers = 16u32;
    let per_writer: u32 = std::env::var("VARVE_ENGINE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let results: Vec<Vec<(u32, u32, varve_engine::AppendResult, bool)>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let db = db.clone();
                s.spawn(move || {
                    let mut out = Vec::new();
                    let mut i = 0u32;
                    let mut n = 0u64;
                    while i < per_writer {
                        // Batches of 1..=50, alternating own stream and the shared one.
                        let size = 1 + (i.wrapping_mul(2_654_435_761) >> 26) % 50;
                        let size = size.min(per_writer - i);
                        let bodies: Vec<Vec<u8>> = (i..i + size).map(|j| payload(w, j)).collect();
                        let evs: Vec<EventData<'_>> = bodies.iter().map(|b| ev(b)).collect();
                        let shared = n % 3 == 2;
                        let r = if shared {
                            db.append("shared", ExpectedVersion::Any, &evs).unwrap()
                        } else {
                            db.append(&format!("w{w}"), ExpectedVersion::Any, &evs)
                                .unwrap()
                        };
                        out.push((i, size, r, shared));
                        i += size;
                        n += 1;
                        if w == 0 && n.is_multiple_of(40) {
                            db.checkpoint().unwrap();
                        }
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = u64::from(writers * per_writer);
    let got = db.read_all(0, Direction::Forward, usize::MAX).unwrap();
    assert_eq!(got.len() as u64, total);
    let mut versions: HashMap<String, u64> = HashMap::new();
    for (p, e) in got.iter().enumerate() {
        assert_eq!(e.position, p as u64, "gapless");
        let v = versions.entry(e.stream.to_string()).or_default();
        assert_eq!(e.version, *v, "contiguous versions in {}", e.stream);
        *v += 1;
    }
    for (w, calls) in results.iter().enumerate() {
        let mut last = None;
        for &(i, size, r, shared) in calls {
            assert_eq!(r.last_position - r.first_position + 1, u64::from(size));
            assert_eq!(r.last_version - r.first_version + 1, u64::from(size));
            assert!(last.is_none_or(|l| r.first_position > l), "writer order");
            last = Some(r.last_position);
            for k in 0..size {
                let e = &got[(r.first_position + u64::from(k)) as usize];
                assert_eq!(e.payload, EventPayload::Inline(payload(w as u32, i + k)));
                assert_eq!(e.version, r.first_version + u64::from(k));
                let stream = if shared {
                    "shared".to_owned()
                } else {
                    format!("w{w}")
                };
                assert_eq!(&*e.stream, stream);
            }
        }
    }
    db.checkpoint().unwrap();
    assert_eq!(db.read_all(0, Direction::Forward, usize::MAX).unwrap(), got);
}

#[test]
fn readers_never_see_a_later_position_before_an_earlier_one() {
    let dir = tempdir();
    let db = open(dir.path());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    std::thread::scope(|s| {
        for w in 0..4u32 {
            let db = db.clone();
            s.spawn(move || {
                for i in 0..500u32 {
                    let p = payload(w, i);
                    db.append_multi(&[
                        (&format!("a{w}"), ExpectedVersion::Any, &[ev(&p), ev(&p)]),
                        (&format!("b{w}"), ExpectedVersion::Any, &[ev(&p)]),
                    ])
                    .unwrap();
                }
            });
        }
        let db = db.clone();
        let stop2 = Arc::clone(&stop);
        s.spawn(move || {
            while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
                let seen = db.read_all(0, Direction::Forward, usize::MAX).unwrap();
                // A prefix, and multi-appends are whole: every call wrote 3 events.
                assert_eq!(seen.len() % 3, 0, "half a multi-append seen");
                for (p, e) in seen.iter().enumerate() {
                    assert_eq!(e.position, p as u64);
                }
                if seen.len() == 6000 {
                    break;
                }
            }
        });
        std::thread::sleep(std::time::Duration::from_millis(10));
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(all(&db).len(), 6000);
}

#[test]
fn stats_never_fail_while_checkpoints_truncate_the_log() {
    let dir = tempdir();
    let db = varve_engine::Varve::open(
        dir.path(),
        opts()
            .wal_segment_size(1 << 20)
            .checkpoint_interval(std::time::Duration::from_millis(1))
            .sync_mode(varve_engine::SyncMode::Never),
    )
    .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let p = vec![3u8; 2000];
            for _ in 0..8000 {
                db.append("s", ExpectedVersion::Any, &[ev(&p[..2000 - 1])])
                    .unwrap();
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let s = db.stats().unwrap();
            assert!(s.wal_segments >= 1);
        }
    });
    assert!(db.stats().unwrap().checkpoints > 0);
}

#[test]
fn appends_that_find_the_wal_queue_full_wait_outside_the_lock_and_all_land() {
    let dir = tempdir();
    // A queue of 64 KiB against 8 writers of 32 KiB records: most appends find it full.
    let db = varve_engine::Varve::open(dir.path(), opts().wal_queue_bytes(64 << 10)).unwrap();
    let writers = 8u32;
    let calls = 40u32;
    std::thread::scope(|s| {
        for w in 0..writers {
            let db = db.clone();
            s.spawn(move || {
                let stream = format!("q{w}");
                for i in 0..calls {
                    let bodies: Vec<Vec<u8>> =
                        (0..16).map(|k| vec![(w * 7 + i + k) as u8; 2000]).collect();
                    let evs: Vec<EventData<'_>> = bodies.iter().map(|b| ev(b)).collect();
                    let r = db.append(&stream, ExpectedVersion::Any, &evs).unwrap();
                    assert_eq!(r.first_version, u64::from(i) * 16);
                }
            });
        }
    });
    let st = db.stats().unwrap();
    assert!(st.append_retries > 0, "no append found the queue full");
    assert_eq!(st.next_position, u64::from(writers * calls * 16));
    let events = all(&db);
    for (p, e) in events.iter().enumerate() {
        assert_eq!(e.position, p as u64);
        let w: u32 = e.stream[1..].parse().unwrap();
        let (i, k) = ((e.version / 16) as u32, (e.version % 16) as u32);
        assert_eq!(
            e.payload,
            EventPayload::Inline(vec![(w * 7 + i + k) as u8; 2000])
        );
    }
    eprintln!("{} appends waited for the WAL queue", st.append_retries);
}
