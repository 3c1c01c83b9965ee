//! Unit tests of the WAL as a whole, including fault injection through the `Storage` trait.

mod ahead;
mod engine;
mod fault;
mod recycle;

use std::time::Duration;

use crate::{Error, Options, RecoveryMode, SyncMode, Wal};

/// Ends the unit-test process with a failure if it is still running 30 s after the first
/// test that uses this module's helpers started (the whole suite takes about a second). A
/// liveness bound, not a timing assertion: a hang anywhere (an append blocked on space that
/// is never released, a loop without progress) fails the suite instead of stalling it.
fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(30));
            eprintln!("varve-wal unit tests still running after 30 s: hung");
            std::process::exit(101);
        });
    });
}

pub(crate) fn small() -> Options {
    watchdog();
    Options::default()
        .segment_size(64 << 10)
        .max_record_size(8 << 10)
}

/// Runs `f` on its own thread; if it has not finished after 10 s, ends the whole test
/// process with a failure. A liveness bound: code that stops making progress (a read loop,
/// an append that blocks forever) then fails the suite instead of hanging it, which a
/// failing test alone would not do (its stuck threads, and other tests, keep running).
pub(crate) fn bounded(f: impl FnOnce() + Send + 'static) {
    watchdog();
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
        rx.recv_timeout(Duration::from_secs(10))
    {
        eprintln!("a bounded test did not finish within 10 s");
        std::process::exit(101);
    }
    h.join().unwrap();
}

/// Zeroes the close marker a clean close left at the end of the log in `dir`, so the
/// directory looks like one a crash (kill -9) left: tests that simulate a torn write start
/// from there. Returns the marker's offset in the last segment.
pub(crate) fn as_if_crashed(dir: &std::path::Path) -> u64 {
    let last = crate::recovery::list_segments(dir)
        .unwrap()
        .segments
        .pop()
        .unwrap();
    let mut bytes = std::fs::read(&last.path).unwrap();
    let h = crate::format::decode_segment_header(&bytes).unwrap();
    let scan = crate::recovery::scan_segment(&bytes, h.first_lsn, h.recycled, false);
    assert!(scan.closed, "no close marker at the end of {:?}", last.path);
    bytes[scan.end..scan.clean_end].fill(0);
    std::fs::write(&last.path, &bytes).unwrap();
    scan.end as u64
}

pub(crate) fn read_all(wal: &Wal) -> Vec<(u64, u8, Vec<u8>)> {
    wal.iter_from(wal.first_lsn())
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.lsn, r.kind, r.payload)
        })
        .collect()
}

#[test]
fn append_wait_read_back_and_reopen() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), small()).unwrap();
        assert_eq!(wal.durable_lsn(), 0);
        let t = wal.append(b"one").unwrap();
        assert_eq!(t.records(), 1);
        assert_eq!(t.wait().unwrap(), 1);
        let t = wal
            .append_batch_kinds(&[(3, b"two"), (4, b""), (5, b"four")])
            .unwrap();
        assert_eq!(t.records(), 3);
        assert_eq!(t.wait().unwrap(), 2);
        assert_eq!(wal.append_kind(9, b"five").unwrap().wait().unwrap(), 5);
        assert_eq!(wal.durable_lsn(), 5);
        let want = vec![
            (1, 0, b"one".to_vec()),
            (2, 3, b"two".to_vec()),
            (3, 4, b"".to_vec()),
            (4, 5, b"four".to_vec()),
            (5, 9, b"five".to_vec()),
        ];
        assert_eq!(read_all(&wal), want);
        let from3: Vec<u64> = wal.iter_from(3).unwrap().map(|r| r.unwrap().lsn).collect();
        assert_eq!(from3, vec![3, 4, 5]);
        wal.close().unwrap();
        let wal = Wal::open(d.path(), small()).unwrap();
        let rep = wal.recovery_report().clone();
        assert_eq!((rep.records, rep.next_lsn, rep.dropped_bytes), (5, 6, 0));
        assert_eq!(read_all(&wal), want);
        assert_eq!(wal.append(b"six").unwrap().wait().unwrap(), 6);
    });
}

#[test]
fn ticket_lsn_is_known_after_sequencing() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let t = wal.append_batch(&[b"a", b"b"]).unwrap();
    while !t.is_done() {
        std::thread::yield_now();
    }
    assert_eq!(t.lsn(), Some(1));
    assert_eq!(t.wait().unwrap(), 1);
}

#[test]
fn second_open_of_a_directory_is_locked() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    match Wal::open(d.path(), small()) {
        Err(Error::Locked(p)) => assert_eq!(p, d.path()),
        other => panic!("{other:?}"),
    }
    drop(wal);
    Wal::open(d.path(), small()).unwrap();
}

#[test]
fn bad_input_is_refused_and_writes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let big = vec![1u8; (8 << 10) + 1];
    assert!(matches!(
        wal.append(&big),
        Err(Error::RecordTooLarge { size, max }) if size == big.len() && max == 8 << 10
    ));
    assert!(matches!(
        wal.append_batch(&[b"ok", &big]),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(wal.append_batch(&[]), Err(Error::EmptyBatch)));
    let rec = vec![0u8; 8 << 10];
    let many: Vec<&[u8]> = (0..8).map(|_| &rec[..]).collect();
    assert!(matches!(
        wal.append_batch(&many),
        Err(Error::BatchTooLarge { .. })
    ));
    assert_eq!(wal.append(&rec).unwrap().wait().unwrap(), 1);
    assert_eq!(read_all(&wal).len(), 1);
    for (opts, option) in [
        (Options::default().segment_size(100), "segment_size"),
        (Options::default().group_bytes(0), "group_bytes"),
        (Options::default().max_queued_bytes(0), "max_queued_bytes"),
    ] {
        match Wal::open(d.path().join(option), opts) {
            Err(Error::InvalidOptions { what, .. }) => assert_eq!(what, option),
            other => panic!("{option}: {:?}", other.err()),
        }
        assert!(!d.path().join(option).exists(), "nothing created");
    }
}

#[test]
fn segments_roll_over_keep_lsns_gapless_and_truncate() {
    let d = tempfile::tempdir().unwrap();
    let opts = small();
    let wal = Wal::open(d.path(), opts.clone()).unwrap();
    let payload = vec![7u8; 3000];
    let mut tickets = Vec::new();
    for i in 0..100u32 {
        let mut p = payload.clone();
        p[..4].copy_from_slice(&i.to_le_bytes());
        tickets.push(wal.append(&p).unwrap());
    }
    for (i, t) in tickets.into_iter().enumerate() {
        assert_eq!(t.wait().unwrap(), i as u64 + 1);
    }
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert!(segs.len() >= 4, "{}", segs.len());
    let all = read_all(&wal);
    assert_eq!(all.len(), 100);
    for (i, (lsn, _, p)) in all.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(&p[..4], &(i as u32).to_le_bytes());
    }
    // Truncate below the third segment's first LSN: exactly the first two go.
    let third = segs[2].first_lsn;
    assert_eq!(wal.truncate_before(third).unwrap(), 2);
    assert_eq!(wal.first_lsn(), third);
    assert!(!segs[0].path.exists() && !segs[1].path.exists() && segs[2].path.exists());
    assert!(matches!(
        wal.iter_from(third - 1),
        Err(Error::Truncated { requested, first }) if requested == third - 1 && first == third
    ));
    assert_eq!(
        wal.iter_from(third).unwrap().next().unwrap().unwrap().lsn,
        third
    );
    // Never the active segment.
    assert_eq!(wal.truncate_before(u64::MAX).unwrap(), segs.len() - 3);
    let kept = crate::recovery::list_segments(d.path())
        .unwrap()
        .segments
        .len();
    drop(wal);
    let wal = Wal::open(d.path(), opts).unwrap();
    let rep = wal.recovery_report();
    assert_eq!((rep.segments, rep.next_lsn), (kept, 101));
    assert_eq!(rep.records, 101 - wal.first_lsn());
    assert_eq!(wal.append(b"x").unwrap().wait().unwrap(), 101);
}

#[test]
fn tailing_reader_waits_for_new_records() {
    let d = tempfile::tempdir().unwrap();
    let wal = std::sync::Arc::new(Wal::open(d.path(), small()).unwrap());
    let mut it = wal.iter_from(1).unwrap();
    assert!(it.next().is_none());
    assert!(!wal.wait_for(1, Duration::from_millis(5)).unwrap());
    let w = std::sync::Arc::clone(&wal);
    let h = std::thread::spawn(move || {
        for i in 0..50u8 {
            w.append(&[i; 100]).unwrap().wait().unwrap();
        }
    });
    let mut seen = 0u64;
    while seen < 50 {
        assert!(wal.wait_for(seen + 1, Duration::from_secs(10)).unwrap());
        let before = seen;
        for r in it.by_ref() {
            let r = r.unwrap();
            assert_eq!(r.lsn, seen + 1);
            assert_eq!(r.payload, vec![seen as u8; 100]);
            seen += 1;
        }
        // A durable record was announced, so the iterator must have yielded it (and the
        // loop cannot spin without progress).
        assert!(
            seen > before,
            "record {} durable but not yielded",
            before + 1
        );
        assert!(seen <= wal.durable_lsn());
    }
    h.join().unwrap();
    assert_eq!(it.next_lsn(), 51);
}

#[test]
fn try_append_reports_backpressure_and_append_blocks_until_space() {
    // Bounded: appenders blocked on space that is never released fail the suite.
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = fault::FaultyStorage::create();
        plan.hold_writes(true);
        let wal = Wal::open_with(d.path(), small().max_queued_bytes(2 * 624), storage).unwrap();
        // The cap is exactly two framed 600-byte records. The first entry is taken by the
        // flusher, which then blocks in its write (its bytes count until written).
        let first = wal.append(&[1u8; 600]).unwrap();
        plan.wait_for_held_write();
        let second = wal.try_append(&[2u8; 600]).unwrap();
        assert!(matches!(
            wal.try_append(&[3u8; 600]),
            Err(Error::Backpressure)
        ));
        assert!(matches!(
            wal.try_append_batch(&[&[3u8; 300], &[4u8; 300]]),
            Err(Error::Backpressure)
        ));
        std::thread::scope(|s| {
            let h = s.spawn(|| wal.append(&[3u8; 600]).unwrap().wait().unwrap());
            std::thread::sleep(Duration::from_millis(20));
            plan.hold_writes(false);
            assert_eq!(first.wait().unwrap(), 1);
            assert_eq!(second.wait().unwrap(), 2);
            assert_eq!(h.join().unwrap(), 3);
        });
    });
}

#[test]
fn lax_sync_modes_acknowledge_and_survive_reopen() {
    for mode in [
        SyncMode::Never,
        SyncMode::Interval(Duration::from_millis(2)),
    ] {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = fault::FaultyStorage::create();
        let wal = Wal::open_with(d.path(), small().sync_mode(mode), storage).unwrap();
        for i in 0..30u8 {
            assert_eq!(
                wal.append(&[i; 40]).unwrap().wait().unwrap(),
                u64::from(i) + 1
            );
        }
        std::thread::sleep(Duration::from_millis(20));
        let syncs = plan.syncs();
        match mode {
            SyncMode::Never => assert_eq!(syncs, 0, "never syncs before close"),
            _ => assert!((1..30).contains(&syncs), "{syncs}"),
        }
        wal.close().unwrap();
        if mode == SyncMode::Never {
            assert!(plan.syncs() > syncs, "close syncs");
        }
        let wal = Wal::open(d.path(), small()).unwrap();
        assert_eq!(read_all(&wal).len(), 30);
    }
}

#[test]
fn always_mode_syncs_before_acknowledging() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = fault::FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    for i in 1..=5u64 {
        let before = plan.syncs();
        assert_eq!(wal.append(b"x").unwrap().wait().unwrap(), i);
        assert!(plan.syncs() > before);
    }
}

#[test]
fn tolerant_mode_keeps_the_prefix_before_mid_log_corruption() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for i in 0..10u8 {
        wal.append(&[i; 50]).unwrap().wait().unwrap();
    }
    drop(wal);
    let seg = crate::recovery::list_segments(d.path()).unwrap().segments[0]
        .path
        .clone();
    let mut bytes = std::fs::read(&seg).unwrap();
    let rec = 24 + 50;
    let bad = 32 + 3 * rec + 30; // inside record 4's payload
    bytes[bad] ^= 0xFF;
    std::fs::write(&seg, &bytes).unwrap();
    match Wal::open(d.path(), small()) {
        Err(Error::Corrupted {
            segment, offset, ..
        }) => {
            assert_eq!((segment, offset), (seg.clone(), (32 + 3 * rec) as u64));
        }
        other => panic!("{other:?}"),
    }
    let wal = Wal::open(
        d.path(),
        small().recovery_mode(RecoveryMode::TolerateCorruptTail),
    )
    .unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.corruption, Some((seg, (32 + 3 * rec) as u64)));
    assert_eq!((rep.records, rep.next_lsn), (3, 4));
    assert_eq!(rep.dropped_records, 6);
    assert_eq!(read_all(&wal).len(), 3);
    assert_eq!(wal.append(b"new").unwrap().wait().unwrap(), 4);
    drop(wal);
    // Strict open is clean again: the damaged rest was zeroed.
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(read_all(&wal).len(), 4);
}

#[test]
fn tolerant_mode_drops_segments_after_corruption_in_a_sealed_one() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let rec = [3u8; 4000];
    for _ in 0..100 {
        if crate::recovery::list_segments(d.path())
            .unwrap()
            .segments
            .len()
            >= 3
        {
            break;
        }
        wal.append(&rec).unwrap().wait().unwrap();
    }
    drop(wal);
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    let mut b = std::fs::read(&segs[0].path).unwrap();
    let bad = 32 + 2 * 4024; // third record of the first segment
    b[bad + 100] ^= 1;
    std::fs::write(&segs[0].path, &b).unwrap();
    assert!(matches!(
        Wal::open(d.path(), small()),
        Err(Error::Corrupted { offset, .. }) if offset == bad as u64
    ));
    let wal = Wal::open(
        d.path(),
        small().recovery_mode(RecoveryMode::TolerateCorruptTail),
    )
    .unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.corruption, Some((segs[0].path.clone(), bad as u64)));
    let removed: Vec<_> = segs[1..].iter().map(|s| s.path.clone()).collect();
    assert_eq!(rep.removed_segments, removed);
    assert_eq!((rep.segments, rep.records, rep.next_lsn), (1, 2, 3));
    // The valid records after the damaged third one are counted and cut with it.
    let per_segment = segs[1].first_lsn - 1;
    assert_eq!(rep.dropped_records, per_segment - 3);
    assert_eq!(rep.dropped_bytes, (per_segment - 2) * 4024);
    assert!(removed.iter().all(|p| !p.exists()));
    assert_eq!(read_all(&wal).len(), 2);
    assert_eq!(wal.append(b"x").unwrap().wait().unwrap(), 3);
    drop(wal);
    // The damaged rest was zeroed, so a strict open is clean again.
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    assert_eq!(read_all(&wal).len(), 3);
}

#[test]
fn recovery_report_counts_a_torn_batch() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    wal.append(&[1u8; 10]).unwrap().wait().unwrap();
    wal.append_batch(&[&[2u8; 10], &[3u8; 10], &[4u8; 10]])
        .unwrap()
        .wait()
        .unwrap();
    drop(wal);
    as_if_crashed(d.path());
    let seg = crate::recovery::list_segments(d.path()).unwrap().segments[0]
        .path
        .clone();
    let mut b = std::fs::read(&seg).unwrap();
    let last = 32 + 3 * 34; // the batch's third record
    b[last + 30] ^= 0xFF;
    std::fs::write(&seg, &b).unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!((rep.records, rep.dropped_records, rep.next_lsn), (1, 2, 2));
    assert_eq!(rep.dropped_bytes, 3 * 34);
    assert_eq!(rep.segments, 1);
    assert!(rep.corruption.is_none() && rep.removed_segments.is_empty());
    let on_disk = std::fs::read(&seg).unwrap();
    assert!(
        on_disk[32 + 34..].iter().all(|&x| x == 0),
        "torn bytes zeroed"
    );
}

#[test]
fn appends_queued_during_a_write_share_one_write_and_one_sync() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = fault::FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    plan.hold_writes(true);
    let first = wal.append(b"first").unwrap();
    plan.wait_for_held_write();
    // Far below the queued-bytes cap: queuing behind a write in flight never pushes back.
    let rest: Vec<_> = (0..15u8)
        .map(|i| wal.try_append(&[i; 30]).unwrap())
        .collect();
    let (syncs, writes) = (plan.syncs(), plan.writes());
    plan.hold_writes(false);
    assert_eq!(first.wait().unwrap(), 1);
    for (i, t) in rest.into_iter().enumerate() {
        assert_eq!(t.wait().unwrap(), i as u64 + 2);
    }
    // The held group, then one group for the 15 queued meanwhile.
    assert_eq!(plan.syncs() - syncs, 2);
    assert_eq!(plan.writes() - writes, 2);
    assert_eq!(read_all(&wal).len(), 16);
}

#[test]
fn a_lone_writer_never_waits_out_the_group_interval() {
    // With an hour-long interval, any wait for the group to grow would hang this test.
    let d = tempfile::tempdir().unwrap();
    let opts = small().group_interval(Duration::from_secs(3600));
    let wal = Wal::open(d.path(), opts).unwrap();
    for i in 1..=20u64 {
        assert_eq!(wal.append(b"alone").unwrap().wait().unwrap(), i);
    }
    // Two writers taking turns also complete (a smaller group waits only while peers
    // keep arriving).
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..20 {
                    wal.append(b"pair").unwrap().wait().unwrap();
                }
            });
        }
    });
    assert_eq!(wal.durable_lsn(), 60);
}

#[test]
fn a_tailing_iterator_follows_the_log_into_new_segments() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), small()).unwrap();
        let mut it = wal.iter_from(1).unwrap();
        let mut seen = 0u64;
        // ~39 KiB per round into 64 KiB segments: the iterator sits at the end of a segment
        // when the next one starts.
        for round in 0..6u32 {
            for i in 0..13u32 {
                let mut p = vec![round as u8; 3000];
                p[..4].copy_from_slice(&(round * 13 + i).to_le_bytes());
                wal.append(&p).unwrap().wait().unwrap();
            }
            for r in it.by_ref() {
                let r = r.unwrap();
                assert_eq!(r.lsn, seen + 1);
                assert_eq!(&r.payload[..4], &(seen as u32).to_le_bytes());
                seen += 1;
            }
            assert_eq!(seen, wal.durable_lsn());
        }
        assert!(
            crate::recovery::list_segments(d.path())
                .unwrap()
                .segments
                .len()
                >= 3
        );
    });
}

#[test]
fn a_segment_file_gone_underneath_reads_as_truncated_other_open_errors_as_io() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for _ in 0..30 {
        wal.append(&[5u8; 3000]).unwrap().wait().unwrap();
    }
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert!(segs.len() >= 2);
    std::fs::remove_file(&segs[0].path).unwrap();
    assert!(matches!(
        wal.iter_from(1).unwrap().next(),
        Some(Err(Error::Truncated {
            requested: 1,
            first: 1
        }))
    ));
    // A symlink to itself: opening fails with ELOOP, which is an I/O error, not truncation.
    std::os::unix::fs::symlink(&segs[0].path, &segs[0].path).unwrap();
    match wal.iter_from(1).unwrap().next() {
        Some(Err(Error::Io(e))) => assert_eq!(e.raw_os_error(), Some(libc::ELOOP)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn options_setters_take_effect_and_validate_checks_exact_bounds() {
    // By default a group may wait to grow for at most 10 ms (and a third of the last sync).
    assert_eq!(Options::default().group_interval, Duration::from_millis(10));
    let o = Options::default().group_interval(Duration::from_millis(3));
    assert_eq!(o.group_interval, Duration::from_millis(3));
    let fit = |max: usize, seg: u64| {
        Options::default()
            .max_record_size(max)
            .segment_size(seg)
            .validate()
    };
    let hdrs = (crate::format::SEGMENT_HEADER_LEN + crate::format::RECORD_HEADER_LEN) as u64;
    // Exactly one header and one largest record fit; one byte less does not.
    assert!(fit(1000, hdrs + 1000).is_ok());
    assert!(matches!(
        fit(1000, hdrs + 999),
        Err(Error::InvalidOptions {
            what: "segment_size",
            ..
        })
    ));
    // The largest record size is u32::MAX; one more does not fit the length field.
    let max = u32::MAX as usize;
    assert!(fit(max, hdrs + max as u64).is_ok());
    assert!(matches!(
        fit(max + 1, hdrs + max as u64 + 1),
        Err(Error::InvalidOptions {
            what: "max_record_size",
            why
        }) if why.contains("32 bits")
    ));
}

#[test]
fn append_buffers_are_reused_and_large_ones_dropped() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let pooled = || {
        wal.shared
            .pool_len
            .load(std::sync::atomic::Ordering::SeqCst)
    };
    assert_eq!(pooled(), 0);
    for _ in 0..20 {
        wal.append(&[1u8; 1000]).unwrap().wait().unwrap();
        // The one buffer goes back to the pool and is taken again by the next append.
        assert_eq!(pooled(), 1);
    }
    let big = Options::default().max_record_size(100 << 10);
    drop(wal);
    let wal = Wal::open(d.path(), big).unwrap();
    wal.append(&[1u8; 1000]).unwrap().wait().unwrap();
    assert_eq!(
        wal.shared
            .pool_len
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    // Takes the pooled buffer, grows it past the pooling limit: not kept.
    wal.append(&[2u8; 100 << 10]).unwrap().wait().unwrap();
    assert_eq!(
        wal.shared
            .pool_len
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

/// Waits (bounded by the watchdog) until `n` readers are registered in `wait_for`, then a
/// little longer so they are likely asleep on the condition variable.
fn until_readers_wait(wal: &Wal, n: usize) {
    while wal
        .shared
        .reader_waiters
        .load(std::sync::atomic::Ordering::SeqCst)
        != n
    {
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_millis(50));
}

#[test]
fn a_reader_asleep_in_wait_for_is_woken_by_the_next_durable_record() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    std::thread::scope(|s| {
        // An hour: only a wake-up (not the timeout) lets this return within the watchdog.
        let h = s.spawn(|| wal.wait_for(1, Duration::from_secs(3600)));
        until_readers_wait(&wal, 1);
        wal.append(b"x").unwrap().wait().unwrap();
        assert!(h.join().unwrap().unwrap());
    });
}

#[test]
fn new_segments_are_preallocated_to_the_segment_size() {
    use std::os::unix::fs::MetadataExt as _;
    let check = |path: &std::path::Path, size: u64| {
        let m = std::fs::metadata(path).unwrap();
        assert_eq!(m.len(), size);
        // Blocks really reserved (fallocate), not a sparse file.
        assert!(m.blocks() * 512 >= size, "{} blocks", m.blocks());
    };
    // Larger than the zeros the flusher writes ahead, so only preallocation explains it.
    let size = 4 << 20;
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small().segment_size(size)).unwrap();
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert_eq!(segs.len(), 1);
    check(&segs[0].path, size);
    // The next segment, created on rollover.
    let big = vec![5u8; 8 << 10];
    for _ in 0..(size / (8 << 10)) {
        wal.append(&big).unwrap().wait().unwrap();
    }
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert_eq!(segs.len(), 2);
    check(&segs[1].path, size);
}

#[test]
fn the_buffer_pool_keeps_at_most_its_cap() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = fault::FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    plan.hold_writes(true);
    let first = wal.append(b"first").unwrap();
    plan.wait_for_held_write();
    // Each queued append frames into a fresh buffer (the pool is empty); the flusher
    // hands them all back when it takes them into the next group.
    let n = crate::shared::POOL_MAX + 50;
    let rest: Vec<_> = (0..n).map(|_| wal.try_append(b"r").unwrap()).collect();
    plan.hold_writes(false);
    first.wait().unwrap();
    for t in rest {
        t.wait().unwrap();
    }
    let pooled = wal
        .shared
        .pool_len
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(pooled, crate::shared::POOL_MAX);
    assert_eq!(wal.shared.pool.len(), crate::shared::POOL_MAX);
}

#[test]
fn a_batch_that_exactly_fills_a_segment_is_accepted_one_byte_more_is_not() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), small()).unwrap();
        let capacity = (64 << 10) - crate::format::SEGMENT_HEADER_LEN;
        let rec = vec![3u8; 8000];
        let framed = crate::format::RECORD_HEADER_LEN + rec.len();
        let full = capacity / framed;
        let tail = vec![4u8; capacity - full * framed - crate::format::RECORD_HEADER_LEN];
        let mut batch: Vec<&[u8]> = (0..full).map(|_| &rec[..]).collect();
        batch.push(&tail);
        let mut over = tail.clone();
        over.push(0);
        let mut too_big = batch.clone();
        *too_big.last_mut().unwrap() = &over;
        assert!(matches!(
            wal.append_batch(&too_big),
            Err(Error::BatchTooLarge { size, max }) if size == capacity + 1 && max == capacity
        ));
        wal.append(b"first").unwrap().wait().unwrap();
        assert_eq!(wal.append_batch(&batch).unwrap().wait().unwrap(), 2);
        let all = read_all(&wal);
        assert_eq!(all.len(), 1 + batch.len());
        assert_eq!(all.last().unwrap().2, tail);
        // It took a segment of its own.
        assert_eq!(
            crate::recovery::list_segments(d.path())
                .unwrap()
                .segments
                .len(),
            2
        );
    });
}

#[test]
fn tickets_carry_the_configured_wait_yield() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), small().wait_yield(Duration::from_millis(3))).unwrap();
    let t = wal.append(b"x").unwrap();
    assert_eq!(t.wait_yield, Duration::from_millis(3));
    t.wait().unwrap();
    drop(wal);
    let wal = Wal::open(dir.path(), small()).unwrap();
    let t = wal.append_batch(&[b"y", b"z"]).unwrap();
    assert_eq!(t.wait_yield, Duration::from_micros(500));
    assert_eq!(t.wait().unwrap(), 2);
}

#[test]
fn a_segment_whose_first_lsn_is_zero_is_corrupted_not_a_panic() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join(crate::format::segment_file_name(0));
    let mut bytes = crate::format::encode_segment_header(0, false).to_vec();
    bytes.resize(64 << 10, 0);
    std::fs::write(&path, &bytes).unwrap();
    match Wal::open(d.path(), small()) {
        Err(Error::Corrupted {
            segment,
            offset: 0,
            what,
        }) => {
            assert_eq!(segment, path);
            assert!(what.contains("LSN is 0"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    // Nothing changed on disk.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn a_clean_close_leaves_a_marker_that_reopening_keeps_and_the_next_write_overwrites() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    assert!(!wal.recovery_report().closed_cleanly, "a new log");
    for i in 0..3u8 {
        wal.append(&[i; 10]).unwrap().wait().unwrap();
    }
    wal.close().unwrap();
    let seg = crate::recovery::list_segments(d.path()).unwrap().segments[0]
        .path
        .clone();
    let marker_at = 32 + 3 * 34;
    let bytes = std::fs::read(&seg).unwrap();
    assert_eq!(
        bytes[marker_at..marker_at + 24],
        crate::format::close_marker(4)
    );
    assert!(bytes[marker_at + 24..].iter().all(|&b| b == 0));
    // Reopened and closed again without a write: the marker stays where it was.
    for _ in 0..2 {
        let wal = Wal::open(d.path(), small()).unwrap();
        let rep = wal.recovery_report().clone();
        assert!(rep.closed_cleanly);
        assert_eq!((rep.records, rep.next_lsn, rep.dropped_bytes), (3, 4, 0));
        assert_eq!(read_all(&wal).len(), 3);
        drop(wal);
        assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    }
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(wal.append(b"four").unwrap().wait().unwrap(), 4);
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert!(wal.recovery_report().closed_cleanly);
    assert_eq!(read_all(&wal).last().unwrap().2, b"four");
    drop(wal);
    // A crash leaves no marker: nothing to report.
    as_if_crashed(d.path());
    let wal = Wal::open(d.path(), small()).unwrap();
    assert!(!wal.recovery_report().closed_cleanly);
    assert_eq!(read_all(&wal).len(), 4);
}

#[test]
fn a_damaged_last_group_before_a_clean_close_is_corruption_not_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for i in 0..5u8 {
        wal.append(&[i; 10]).unwrap().wait().unwrap();
    }
    drop(wal);
    let seg = crate::recovery::list_segments(d.path()).unwrap().segments[0]
        .path
        .clone();
    let mut b = std::fs::read(&seg).unwrap();
    let last = 32 + 4 * 34; // record 5, the last group
    b[last + 30] ^= 0x40;
    std::fs::write(&seg, &b).unwrap();
    match Wal::open(d.path(), small()) {
        Err(Error::Corrupted { offset, what, .. }) => {
            assert_eq!(offset, last as u64);
            assert!(what.contains("clean close"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&seg).unwrap(), b, "refusal changes nothing");
    // Tolerated: the prefix stays and where it was is reported.
    let tolerant = small().recovery_mode(RecoveryMode::TolerateCorruptTail);
    let wal = Wal::open(d.path(), tolerant).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.corruption, Some((seg.clone(), last as u64)));
    assert_eq!((rep.records, rep.next_lsn), (4, 5));
    assert!(!rep.closed_cleanly);
    drop(wal);
    // The same damage after a crash (no marker) is a torn tail.
    std::fs::write(&seg, &b).unwrap();
    as_if_crashed_at(&seg, last + 34);
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!((rep.records, rep.next_lsn, rep.dropped_records), (4, 5, 0));
    assert!(rep.corruption.is_none());
}

/// Zeroes the close marker at `at` in `seg` (checking that it is one).
fn as_if_crashed_at(seg: &std::path::Path, at: usize) {
    let mut b = std::fs::read(seg).unwrap();
    let h = crate::format::decode_record_header(&b[at..]).unwrap();
    assert!(crate::format::is_close_marker(&h));
    b[at..at + 24].fill(0);
    std::fs::write(seg, &b).unwrap();
}

#[test]
fn a_close_with_no_room_left_in_the_segment_puts_the_marker_in_a_new_one() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    // One batch filling the first segment to its last byte.
    let capacity = (64 << 10) - 32;
    let rec = vec![3u8; 8000];
    let full = capacity / (24 + rec.len());
    let tail = vec![4u8; capacity - full * (24 + rec.len()) - 24];
    let mut batch: Vec<&[u8]> = (0..full).map(|_| &rec[..]).collect();
    batch.push(&tail);
    wal.append_batch(&batch).unwrap().wait().unwrap();
    let n = batch.len() as u64;
    wal.close().unwrap();
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert_eq!(segs.len(), 2);
    assert_eq!(segs[1].first_lsn, n + 1);
    let b = std::fs::read(&segs[1].path).unwrap();
    assert_eq!(b[32..56], crate::format::close_marker(n + 1));
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    assert!(rep.closed_cleanly);
    assert_eq!((rep.segments, rep.next_lsn), (2, n + 1));
    assert_eq!(wal.append(b"next").unwrap().wait().unwrap(), n + 1);
    assert_eq!(read_all(&wal).len() as u64, n + 1);
}

#[test]
fn bytes_after_a_close_marker_are_a_torn_tail_cut_with_the_marker() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    for i in 0..3u8 {
        wal.append(&[i; 10]).unwrap().wait().unwrap();
    }
    drop(wal);
    let seg = crate::recovery::list_segments(d.path()).unwrap().segments[0]
        .path
        .clone();
    // A write after a reopen torn so that its first bytes never landed: the marker is
    // intact, some later bytes of the write are not zeros.
    let marker_at = 32 + 3 * 34;
    let mut b = std::fs::read(&seg).unwrap();
    b[marker_at + 24 + 40..marker_at + 24 + 90].fill(0xAB);
    std::fs::write(&seg, &b).unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    assert!(!rep.closed_cleanly);
    assert!(rep.corruption.is_none());
    assert_eq!((rep.records, rep.next_lsn), (3, 4));
    assert_eq!(rep.dropped_bytes, (24 + 90) as u64);
    assert!(
        std::fs::read(&seg).unwrap()[marker_at..]
            .iter()
            .all(|&x| x == 0),
        "marker and torn bytes zeroed"
    );
    assert_eq!(read_all(&wal).len(), 3);
}

#[test]
fn a_close_with_exactly_a_marker_s_room_left_writes_it_in_the_same_segment() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let capacity = (64 << 10) - 32;
    let rec = vec![3u8; 8000];
    let full = capacity / (24 + rec.len());
    // Leave exactly 24 bytes.
    let tail = vec![4u8; capacity - full * (24 + rec.len()) - 2 * 24];
    let mut batch: Vec<&[u8]> = (0..full).map(|_| &rec[..]).collect();
    batch.push(&tail);
    wal.append_batch(&batch).unwrap().wait().unwrap();
    let n = batch.len() as u64;
    wal.close().unwrap();
    let segs = crate::recovery::list_segments(d.path()).unwrap().segments;
    assert_eq!(segs.len(), 1);
    let b = std::fs::read(&segs[0].path).unwrap();
    assert_eq!(b[(64 << 10) - 24..], crate::format::close_marker(n + 1));
    let wal = Wal::open(d.path(), small()).unwrap();
    assert!(wal.recovery_report().closed_cleanly);
    assert_eq!(wal.append(b"next").unwrap().wait().unwrap(), n + 1);
}
