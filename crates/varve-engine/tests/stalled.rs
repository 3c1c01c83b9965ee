//! A subscriber that stops pulling while writers append far more than the engine's memory
//! budget: the engine's own (anonymous) memory stays within that budget (it keeps nothing
//! per subscriber), and the subscriber later receives every event, in order. `VARVE_STALL_MIB` sets how
//! much is appended (default 128 MiB; the figure is 1024).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use varve_engine::{EventData, ExpectedVersion, Filter, Options, SubscribeFrom, Varve};
use varve_testkit::mem::{Sampler, rss};

#[test]
fn a_stalled_subscriber_costs_the_engine_no_memory_and_later_gets_everything() {
    let mib: u64 = std::env::var("VARVE_STALL_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let max_tail = 8 << 20;
    let tail_cache = 4 << 20;
    let dir = tempdir();
    let db = Varve::open(
        dir.path(),
        Options::default()
            .checkpoint_bytes(4 << 20)
            .checkpoint_interval(Duration::from_millis(50))
            .max_tail_bytes(max_tail)
            .tail_cache_bytes(tail_cache)
            .wal_segment_size(16 << 20),
    )
    .unwrap();
    let payload = vec![0x42u8; 1000];
    let batch: Vec<EventData<'_>> = (0..64).map(|_| EventData::new("t", &payload)).collect();
    // Warm up every path (appends, checkpoints, a subscriber's read) before the baseline.
    for _ in 0..64 {
        db.append("warm", ExpectedVersion::Any, &batch).unwrap();
    }
    db.checkpoint().unwrap();
    let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
    for p in 0..10 {
        assert_eq!(sub.next().unwrap().unwrap().position, p);
    }
    let before = rss();
    let calls = (mib << 20) / (64 * 1000);
    let sampler = Sampler::start(Duration::from_millis(10), Vec::new());
    for _ in 0..calls {
        db.append("load", ExpectedVersion::Any, &batch).unwrap();
    }
    let peaks = sampler.finish();
    let grew = peaks.rss.anon.saturating_sub(before.anon);
    let mapped = peaks.rss.file.saturating_sub(before.file);
    // The engine's budget for its own memory: the not-yet-checkpointed tail index, the
    // tail cache, and as much again for LMDB's write transaction and allocator slack.
    // File-backed pages (LMDB's map of events.mdb: clean page cache the kernel reclaims)
    // are reported, not bounded here.
    let budget = 2 * (max_tail + tail_cache);
    eprintln!(
        "{mib} MiB appended with a stalled subscriber: anonymous RSS grew {:.1} MiB (budget \
         {} MiB); file-backed RSS grew {:.1} MiB",
        grew as f64 / f64::from(1 << 20),
        budget >> 20,
        mapped as f64 / f64::from(1 << 20),
    );
    assert!(
        grew <= budget,
        "anonymous RSS grew {grew} bytes while a subscriber stalled; budget {budget}"
    );
    let total = db.stats().unwrap().next_position;
    assert_eq!(total, 64 * 64 + calls * 64);
    let mut next = 10;
    while next < total {
        let batch = sub.next_batch(4096).unwrap();
        for e in batch {
            assert_eq!(e.position, next, "in order, no gap");
            next += 1;
        }
    }
    assert!(sub.try_next().unwrap().is_none());
}
