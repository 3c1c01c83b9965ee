//! What the engine relies on: start_lsn, the non-blocking kinds, stats, the append order
//! contract, and the read contract over segment files (segments, durable_position).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use super::fault::FaultyStorage;
use super::{bounded, read_all, small};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::recovery::list_segments;
use crate::{Error, Options, Wal};

fn wal_files(dir: &std::path::Path, ext: &str) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == ext)
        })
        .count()
}

#[test]
fn start_lsn_continues_a_log_that_reaches_it_and_starts_an_empty_one_there() {
    let d = tempfile::tempdir().unwrap();
    // An empty log starts at the LSN asked for.
    let wal = Wal::open(d.path(), small().start_lsn(1000)).unwrap();
    assert_eq!((wal.first_lsn(), wal.durable_lsn()), (1000, 999));
    assert_eq!(wal.recovery_report().next_lsn, 1000);
    assert_eq!(wal.append(b"a").unwrap().wait().unwrap(), 1000);
    assert_eq!(wal.append(b"b").unwrap().wait().unwrap(), 1001);
    drop(wal);
    assert_eq!(list_segments(d.path()).unwrap().segments[0].first_lsn, 1000);
    // A log that ends above (or right below) the LSN asked for continues.
    for start in [1, 500, 1002] {
        let wal = Wal::open(d.path(), small().start_lsn(start)).unwrap();
        assert_eq!(wal.recovery_report().retired_segments, 0);
        assert_eq!(wal.first_lsn(), 1000);
        let next = wal.durable_lsn() + 1;
        assert_eq!(wal.append(b"c").unwrap().wait().unwrap(), next);
    }
    // 1002..=1004 were appended: the log ends at 1004.
    let wal = Wal::open(d.path(), small().start_lsn(0)).unwrap();
    assert_eq!(wal.durable_lsn(), 1004);
    assert_eq!(read_all(&wal).len(), 5);
    drop(wal);
    // Bounds.
    assert!(matches!(
        Wal::open(d.path(), small().start_lsn(1 << 62)),
        Err(Error::InvalidOptions {
            what: "start_lsn",
            ..
        })
    ));
    assert!(
        Options::default()
            .start_lsn((1 << 62) - 1)
            .validate()
            .is_ok()
    );
}

#[test]
fn start_lsn_above_the_end_of_the_log_retires_its_segments_and_starts_there() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for _ in 0..40 {
        wal.append(&[5u8; 3000]).unwrap().wait().unwrap();
    }
    let before = wal.segments().len();
    assert!(before >= 2);
    drop(wal);
    let wal = Wal::open(d.path(), small().start_lsn(41 + 100)).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.retired_segments, before);
    assert_eq!(rep.next_lsn, 141);
    assert_eq!((wal.first_lsn(), wal.durable_lsn()), (141, 140));
    assert!(matches!(
        wal.iter_from(40),
        Err(Error::Truncated {
            requested: 40,
            first: 141
        })
    ));
    assert!(wal.iter_from(141).unwrap().next().is_none());
    assert_eq!(wal.append(b"x").unwrap().wait().unwrap(), 141);
    // Kept as spares (the default allows two), the rest deleted; one segment in the log.
    assert_eq!(wal.stats().spares, 2.min(before) as u64);
    assert_eq!(wal_files(d.path(), "wal"), 1);
    assert_eq!(wal_files(d.path(), "spare"), 2.min(before));
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(read_all(&wal), vec![(141, 0, b"x".to_vec())]);
    assert_eq!(wal.append(b"y").unwrap().wait().unwrap(), 142);
}

#[test]
fn start_lsn_after_every_segment_was_truncated_away() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for _ in 0..60 {
        wal.append(&[6u8; 3000]).unwrap().wait().unwrap();
    }
    // The checkpoint covers everything: every segment but the active one goes.
    let n = wal.segments().len();
    assert_eq!(wal.truncate_before(u64::MAX).unwrap(), n - 1);
    wal.close().unwrap();
    // The engine restarts numbering after its checkpoint (60), above the log's end.
    let wal = Wal::open(d.path(), small().start_lsn(61)).unwrap();
    assert_eq!(
        wal.recovery_report().retired_segments,
        0,
        "the log reaches 60"
    );
    assert_eq!(wal.append(b"61").unwrap().wait().unwrap(), 61);
    drop(wal);
    let wal = Wal::open(d.path(), small().start_lsn(200)).unwrap();
    assert_eq!(wal.recovery_report().retired_segments, 1);
    assert_eq!(wal.segments().len(), 1);
    assert_eq!(wal.append(b"200").unwrap().wait().unwrap(), 200);
    // New segments reuse the spares: their stale records (LSNs below 200) never show.
    for _ in 0..40 {
        wal.append(&[7u8; 3000]).unwrap().wait().unwrap();
    }
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    let all = read_all(&wal);
    assert_eq!(all.len(), 41);
    assert_eq!((all[0].0, all[40].0), (200, 240));
    // A directory of spares only (a crash after the retirement, before the new segment):
    // an empty log, which the same start_lsn starts where it should.
    drop(wal);
    for s in list_segments(d.path()).unwrap().segments {
        let to = s.path.with_extension("spare");
        std::fs::rename(&s.path, to).unwrap();
    }
    let wal = Wal::open(d.path(), small().start_lsn(241)).unwrap();
    assert_eq!(wal.append(b"241").unwrap().wait().unwrap(), 241);
}

#[test]
fn try_append_kind_and_try_append_batch_kinds_keep_kinds_or_push_back() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d.path(), small().max_queued_bytes(2 * 624), storage).unwrap();
        assert_eq!(wal.try_append_kind(7, b"seven").unwrap().wait().unwrap(), 1);
        let t = wal
            .try_append_batch_kinds(&[(8, b"eight"), (9, b"nine")])
            .unwrap();
        assert_eq!((t.records(), t.wait().unwrap()), (2, 2));
        assert_eq!(
            read_all(&wal),
            vec![
                (1, 7, b"seven".to_vec()),
                (2, 8, b"eight".to_vec()),
                (3, 9, b"nine".to_vec())
            ]
        );
        // At the cap they return Backpressure instead of blocking.
        plan.hold_writes(true);
        let held = wal.append(&[1u8; 600]).unwrap();
        plan.wait_for_held_write();
        let queued = wal.try_append_kind(1, &[2u8; 600]).unwrap();
        assert!(matches!(
            wal.try_append_kind(1, &[3u8; 600]),
            Err(Error::Backpressure)
        ));
        assert!(matches!(
            wal.try_append_batch_kinds(&[(1, &[3u8; 300]), (2, &[4u8; 300])]),
            Err(Error::Backpressure)
        ));
        // Bad input is refused like the blocking forms.
        assert!(matches!(
            wal.try_append_batch_kinds(&[]),
            Err(Error::EmptyBatch)
        ));
        assert!(matches!(
            wal.try_append_kind(1, &vec![0u8; (8 << 10) + 1]),
            Err(Error::RecordTooLarge { .. })
        ));
        plan.hold_writes(false);
        assert_eq!(held.wait().unwrap(), 4);
        assert_eq!(queued.wait().unwrap(), 5);
        assert_eq!(read_all(&wal).len(), 5);
    });
}

#[test]
fn stats_count_groups_syncs_bytes_and_segments() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d.path(), small(), storage).unwrap();
        let s = wal.stats();
        assert_eq!(
            (
                s.queued_bytes,
                s.groups,
                s.syncs,
                s.bytes_written,
                s.zeros_written
            ),
            (0, 0, 0, 0, 0)
        );
        assert_eq!(
            (s.segments, s.spares, s.durable_lsn, s.first_lsn),
            (1, 0, 0, 1)
        );
        for _ in 0..3 {
            wal.append(&[1u8; 100]).unwrap().wait().unwrap();
        }
        let s = wal.stats();
        assert_eq!((s.groups, s.syncs, s.durable_lsn), (3, 3, 3));
        assert_eq!(s.syncs as usize, plan.syncs());
        assert_eq!(s.bytes_written, 3 * 124);
        // The first group entered unwritten space and wrote zeros ahead of itself.
        let written: usize = plan.write_log().iter().map(|w| w.1).sum();
        assert_eq!(s.bytes_written + s.zeros_written, written as u64);
        assert!(s.zeros_written > 0);
        // Queued but not written: counted until the write.
        plan.hold_writes(true);
        let t = wal.append(&[2u8; 100]).unwrap();
        plan.wait_for_held_write();
        assert_eq!(wal.stats().queued_bytes, 124);
        plan.hold_writes(false);
        t.wait().unwrap();
        assert_eq!(wal.stats().queued_bytes, 0);
        // Segments and spares.
        for _ in 0..40 {
            wal.append(&[3u8; 3000]).unwrap().wait().unwrap();
        }
        let n = wal.stats().segments;
        assert_eq!(n as usize, list_segments(d.path()).unwrap().segments.len());
        assert!(n >= 2);
        let second = wal.segments()[1].first_lsn;
        wal.truncate_before(second).unwrap();
        let s = wal.stats();
        assert_eq!((s.segments, s.spares, s.first_lsn), (n - 1, 1, second));
        assert_eq!(s.durable_lsn, 44);
    });
}

#[test]
fn appends_made_under_the_caller_s_lock_get_lsns_in_that_order() {
    let threads: usize = std::env::var("VARVE_WAL_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let per_thread: usize = 50;
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    // The caller's lock guards its own order (e.g. an in-memory commit sequence).
    let order: Mutex<Vec<(usize, usize)>> = Mutex::new(Vec::new());
    let tickets = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (wal, order, tickets) = (&wal, &order, &tickets);
            s.spawn(move || {
                for i in 0..per_thread {
                    let id = (t, i);
                    let mut g = order.lock().unwrap();
                    let payload = [t.to_le_bytes(), i.to_le_bytes()].concat();
                    // Single records and batches alike.
                    let ticket = if i % 3 == 0 {
                        wal.append_batch(&[&payload, &payload]).unwrap()
                    } else {
                        wal.append(&payload).unwrap()
                    };
                    g.push(id);
                    drop(g);
                    // Waiting outside the lock: the order is fixed at append.
                    let lsn = ticket.wait().unwrap();
                    tickets.lock().unwrap().push((lsn, id));
                }
            });
        }
    });
    let order = order.into_inner().unwrap();
    let mut by_lsn = tickets.into_inner().unwrap();
    by_lsn.sort_unstable();
    let lsn_order: Vec<(usize, usize)> = by_lsn.iter().map(|&(_, id)| id).collect();
    assert_eq!(lsn_order, order);
    // And the file agrees: records in LSN order carry the same ids.
    let ids: Vec<(usize, usize)> = read_all(&wal)
        .iter()
        .map(|(_, _, p)| {
            let t = usize::from_le_bytes(p[..8].try_into().unwrap());
            let i = usize::from_le_bytes(p[8..16].try_into().unwrap());
            (t, i)
        })
        .collect();
    let mut expected = Vec::new();
    for &(t, i) in &order {
        expected.push((t, i));
        if i % 3 == 0 {
            expected.push((t, i));
        }
    }
    assert_eq!(ids, expected);
}

/// Parses `[SEGMENT_HEADER_LEN, end)` of a segment file as records from `first` on;
/// `None` unless those bytes are exactly whole records with consecutive LSNs.
fn records_in(bytes: &[u8], first: u64, end: usize) -> Option<Vec<u64>> {
    let mut off = SEGMENT_HEADER_LEN;
    let mut lsns = Vec::new();
    while off < end {
        let lsn = first + lsns.len() as u64;
        let h = format::verify_record(bytes.get(off..end)?, usize::MAX, |l| l == lsn)?;
        if format::is_close_marker(&h) {
            return None;
        }
        off += h.framed_len();
        lsns.push(lsn);
    }
    (off == end).then_some(lsns)
}

#[test]
fn segment_files_read_up_to_the_published_extents_hold_exactly_the_durable_records() {
    bounded(|| {
        let n: u64 = std::env::var("VARVE_WAL_TEST_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300);
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let opts = small().group_bytes(4096).recycle_segments(2);
        let wal = Arc::new(Wal::open_with(d.path(), opts, storage).unwrap());
        // Slow writes keep groups in flight while the reader looks.
        plan.write_delay_ms.store(1, Ordering::SeqCst);
        let writer = {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut last = None;
                for i in 0..n {
                    last = Some(wal.append(&[i as u8; 1000]).unwrap());
                    if i % 50 == 49 {
                        // A checkpoint: segments below go (and their files are reused).
                        let lsn = last.take().unwrap().wait().unwrap();
                        wal.truncate_before(lsn.saturating_sub(20)).unwrap();
                    }
                }
                if let Some(t) = last {
                    t.wait().unwrap();
                }
            })
        };
        let mut rounds = 0;
        loop {
            let done = writer.is_finished();
            let before = wal.durable_position();
            let segs = wal.segments();
            let mut next: Option<u64> = None;
            let mut valid = true;
            for s in &segs {
                let bytes = match std::fs::read(&s.path) {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        valid = false;
                        break;
                    }
                    Err(e) => panic!("{e}"),
                };
                // The bytes are this segment's only if it is still in the log now.
                if wal.first_lsn() > s.first_lsn {
                    valid = false;
                    break;
                }
                assert_eq!(s.file_len, bytes.len() as u64);
                let lsns = records_in(&bytes, s.first_lsn, s.durable_end as usize)
                    .unwrap_or_else(|| panic!("{s:?}: not whole records up to durable_end"));
                if let Some(nx) = next {
                    assert_eq!(s.first_lsn, nx, "segments continue each other");
                }
                next = Some(s.first_lsn + lsns.len() as u64);
            }
            if valid {
                let last = next.unwrap() - 1;
                assert!(last >= before.lsn, "{last} < {before:?}");
                let after = wal.durable_position();
                assert!(last <= after.lsn, "{last} > {after:?}");
            }
            rounds += 1;
            if done {
                break;
            }
        }
        writer.join().unwrap();
        assert!(rounds > 1);
        let pos = wal.durable_position();
        let last = wal.segments().pop().unwrap();
        assert_eq!((pos.lsn, pos.segment), (n, last.first_lsn));
        assert_eq!(pos.end_offset, last.durable_end);
        let per = (RECORD_HEADER_LEN + 1000) as u64;
        assert_eq!((pos.end_offset - SEGMENT_HEADER_LEN as u64) % per, 0);
    });
}

#[test]
fn a_lone_writer_finds_the_flusher_awake_and_wakes_it_at_most_once() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        // A yield budget far longer than the test: the flusher never parks between the
        // groups of a writer that appends again at once.
        let opts = small().wait_yield(std::time::Duration::from_secs(60));
        let wal = Wal::open(d.path(), opts).unwrap();
        for i in 1..=30 {
            assert_eq!(wal.append(b"again").unwrap().wait().unwrap(), i);
        }
        let s = wal.stats();
        // The first append may find the flusher parked since open; none after it.
        assert!(s.flusher_wakeups <= 1, "{s:?}");
        assert_eq!(s.groups, 30);
    });
}

#[test]
fn without_a_yield_budget_the_flusher_parks_and_appends_wake_it() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), small().wait_yield(std::time::Duration::ZERO)).unwrap();
        for _ in 0..10 {
            wal.append(b"x").unwrap().wait().unwrap();
            // Long enough for the flusher to have parked.
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(wal.stats().flusher_wakeups >= 5, "{:?}", wal.stats());
    });
}
