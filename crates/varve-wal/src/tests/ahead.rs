//! A full group with more queued behind it encodes the next group while it syncs.

use std::sync::atomic::Ordering;

use super::fault::{Event, FaultyStorage, Plan, assert_poisoned};
use super::{read_all, small};
use crate::format::{self, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::recovery::list_segments;
use crate::{Options, Wal};

/// 1 KiB framed records; groups close at four of them.
const PAYLOAD: usize = 1024 - RECORD_HEADER_LEN;
const GROUP: usize = 4096;

fn opts() -> Options {
    // 16 KiB segments hold 15 records: the run below rolls over twice.
    small().segment_size(16 << 10).group_bytes(GROUP)
}

fn payload(i: usize) -> Vec<u8> {
    vec![i as u8; PAYLOAD]
}

/// The writes of `events` as (segment index, offset, length); a write at the first record
/// offset starts the next segment (segment headers are not written through the plan).
fn writes(events: &[Event]) -> Vec<(usize, u64, usize)> {
    let mut seg = 0;
    let mut out = Vec::new();
    for e in events {
        if let Event::Write(off, len) = *e {
            if off == SEGMENT_HEADER_LEN as u64 && !out.is_empty() {
                seg += 1;
            }
            out.push((seg, off, len));
        }
    }
    out
}

#[test]
fn a_full_group_with_more_queued_encodes_the_next_one_while_it_syncs() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), opts(), storage).unwrap();
    // Slow syncs let the queue run ahead of the flusher, as behind a pipelined producer.
    plan.sync_delay_ms.store(5, Ordering::SeqCst);
    let n = 40;
    let tickets: Vec<_> = (0..n).map(|i| wal.append(&payload(i)).unwrap()).collect();
    let lsns: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(lsns, (1..=n as u64).collect::<Vec<_>>());
    let events = plan.events();
    // Every hint follows the write of a full group, covers exactly its records, and comes
    // before that group's sync; the group encoded meanwhile is written right after the sync,
    // behind the hinted one.
    let mut hints = 0;
    for (i, e) in events.iter().enumerate() {
        let Event::Hint(off, len) = *e else { continue };
        hints += 1;
        assert_eq!(len, GROUP as u64, "{events:?}");
        let Some(Event::Write(w_off, w_len)) = i.checked_sub(1).map(|j| events[j]) else {
            panic!("a hint not right after a write: {events:?}");
        };
        assert_eq!(w_off, off);
        assert!(w_len >= GROUP, "{events:?}");
        assert_eq!(events.get(i + 1), Some(&Event::Sync), "{events:?}");
        if let Some(&Event::Write(next, _)) = events.get(i + 2) {
            // Unless the group after it starts the next segment.
            assert!(
                next == off + len || next == SEGMENT_HEADER_LEN as u64,
                "{events:?}"
            );
        }
    }
    // All but the first group (one record) and the last are full with more queued.
    assert!(hints >= 5, "{hints} hints: {events:?}");
    // Every group's first record starts a sync epoch, those encoded ahead included: they
    // are written only after the sync before them completed.
    drop(wal);
    let segs = list_segments(d.path()).unwrap().segments;
    assert_eq!(segs.len(), n.div_ceil(15), "segments fill up in order");
    let files: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| std::fs::read(&s.path).unwrap())
        .collect();
    for (seg, off, _) in writes(&events) {
        let h = format::decode_record_header(&files[seg][off as usize..]).unwrap();
        assert_ne!(
            h.flags & format::FLAG_EPOCH_START,
            0,
            "segment {seg} offset {off}"
        );
    }
    // And everything reads back in order after a reopen.
    let wal = Wal::open(d.path(), opts()).unwrap();
    let back = read_all(&wal);
    assert_eq!(back.len(), n);
    for (i, (lsn, _, bytes)) in back.into_iter().enumerate() {
        assert_eq!(lsn, i as u64 + 1);
        assert_eq!(bytes, payload(i));
    }
}

#[test]
fn groups_that_are_not_full_or_have_nothing_behind_them_encode_nothing_ahead() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), opts(), storage).unwrap();
    plan.sync_delay_ms.store(2, Ordering::SeqCst);
    // A lone writer: groups of one record.
    for i in 0..5 {
        wal.append(&payload(i)).unwrap().wait().unwrap();
    }
    // Full groups, one at a time, nothing queued behind them.
    for _ in 0..3 {
        append_full_batch(&wal).wait().unwrap();
    }
    let events = plan.events();
    assert!(
        !events.iter().any(|e| matches!(e, Event::Hint(..))),
        "{events:?}"
    );
    assert_eq!(plan.syncs(), 8);
}

/// Appends one batch of four records: a full group on its own.
fn append_full_batch(wal: &Wal) -> crate::Ticket {
    let batch: Vec<Vec<u8>> = (0..4).map(payload).collect();
    let refs: Vec<&[u8]> = batch.iter().map(|b| &b[..]).collect();
    wal.append_batch(&refs).unwrap()
}

/// A full group (one batch) held in its write while `behind` more records queue.
fn held_full_group(wal: &Wal, plan: &Plan, behind: usize) -> Vec<crate::Ticket> {
    plan.hold_writes(true);
    let mut tickets = vec![append_full_batch(wal)];
    plan.wait_for_held_write();
    tickets.extend((0..behind).map(|i| wal.append(&payload(i)).unwrap()));
    tickets
}

#[test]
fn a_failed_sync_fails_the_group_encoded_ahead_and_writes_nothing_more() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), opts(), storage).unwrap();
    assert_eq!(wal.append(b"acked").unwrap().wait().unwrap(), 1);
    let tickets = held_full_group(&wal, &plan, 10);
    plan.fail_sync.store(true, Ordering::SeqCst);
    let before = plan.events().len();
    plan.hold_writes(false);
    let mut tickets = tickets.into_iter();
    assert_poisoned(tickets.next().unwrap().wait(), libc::EIO);
    // The next group (four records) had been sequenced while the sync ran; the records
    // behind it never were.
    let rest: Vec<_> = tickets.collect();
    let lsns: Vec<Option<u64>> = rest.iter().map(crate::Ticket::lsn).collect();
    assert_eq!(lsns[..4], [Some(6), Some(7), Some(8), Some(9)]);
    assert!(lsns[4..].iter().all(Option::is_none), "{lsns:?}");
    for t in rest {
        assert_poisoned(t.wait(), libc::EIO);
    }
    let events = plan.events();
    // The held group's write and its hint; the group encoded ahead is never written.
    assert!(
        matches!(events[before..], [Event::Write(..), Event::Hint(..)]),
        "{:?}",
        &events[before..]
    );
    // Every queued byte, the group encoded ahead's included, is released.
    assert_eq!(wal.shared.queued_bytes.load(Ordering::SeqCst), 0);
    drop(wal);
    let wal = Wal::open(d.path(), opts()).unwrap();
    // The held group's write reached the page cache (its sync failed, not its write), so
    // it may come back; the group encoded ahead never does.
    let back = read_all(&wal);
    assert_eq!(back.len(), 5, "{back:?}");
}

#[test]
fn a_failed_writeback_hint_poisons_like_a_failed_sync() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), opts(), storage).unwrap();
    let tickets = held_full_group(&wal, &plan, 6);
    plan.fail_writeback.store(true, Ordering::SeqCst);
    plan.hold_writes(false);
    for t in tickets {
        assert_poisoned(t.wait(), libc::EBADF);
    }
    assert_eq!(plan.syncs(), 0);
    assert_eq!(wal.shared.queued_bytes.load(Ordering::SeqCst), 0);
}

/// The first group (one full batch, LSNs 1-4) has been written and its sync is held; the
/// `behind` records queued behind it were encoded ahead meanwhile. Returns every ticket.
fn ahead_encoded_sync_held(wal: &Wal, plan: &Plan, behind: usize) -> Vec<crate::Ticket> {
    let tickets = held_full_group(wal, plan, behind);
    plan.hold_syncs(true);
    plan.hold_writes(false);
    plan.wait_for_held_sync();
    tickets
}

#[test]
fn the_durable_lsn_never_covers_a_group_encoded_ahead_before_it_is_written() {
    super::bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d.path(), opts(), storage).unwrap();
        let tickets = ahead_encoded_sync_held(&wal, &plan, 4);
        let lsns: Vec<_> = tickets[1..].iter().map(crate::Ticket::lsn).collect();
        assert_eq!(lsns, [Some(5), Some(6), Some(7), Some(8)]);
        // The sync returns; the group encoded ahead is then held in its write.
        plan.hold_writes(true);
        plan.hold_syncs(false);
        plan.wait_for_held_write();
        assert_eq!(wal.durable_lsn(), 4, "published past the synced group");
        let pos = wal.durable_position();
        assert_eq!(
            (pos.lsn, pos.segment, pos.end_offset),
            (4, 1, (SEGMENT_HEADER_LEN + GROUP) as u64)
        );
        // What it promises reads back.
        let back: Vec<u64> = wal.iter_from(1).unwrap().map(|r| r.unwrap().lsn).collect();
        assert_eq!(back, [1, 2, 3, 4]);
        plan.hold_writes(false);
        for t in tickets {
            t.wait().unwrap();
        }
        assert_eq!(wal.durable_lsn(), 8);
        let pos = wal.durable_position();
        assert_eq!(
            (pos.lsn, pos.end_offset),
            (8, (SEGMENT_HEADER_LEN + 2 * GROUP) as u64)
        );
    });
}

#[test]
fn a_tailing_reader_reads_back_every_record_at_or_below_every_watermark_it_sees() {
    super::bounded(|| {
        let n: usize = std::env::var("VARVE_WAL_TEST_RECORDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(160);
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d.path(), small().group_bytes(GROUP), storage).unwrap();
        // Slow writes widen the time between a group's publication and the write of the
        // group encoded behind it; slow syncs let the queue run ahead (a pipelined producer).
        plan.write_delay_ms.store(2, Ordering::SeqCst);
        plan.sync_delay_ms.store(1, Ordering::SeqCst);
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut last = None;
                for i in 0..n {
                    last = Some(wal.append(&payload(i)).unwrap());
                }
                last.unwrap().wait().unwrap();
            });
            let mut it = wal.iter_from(1).unwrap();
            let mut seen = 0u64;
            let mut watermarks = 0;
            while seen < n as u64 {
                let w = wal.durable_lsn();
                watermarks += usize::from(w > seen);
                for r in it.by_ref() {
                    let r = r.unwrap_or_else(|e| panic!("watermark {w}, after {seen}: {e}"));
                    assert_eq!(r.lsn, seen + 1);
                    assert_eq!(r.payload, payload(seen as usize));
                    seen += 1;
                }
                assert!(
                    seen >= w,
                    "watermark {w} promised records not read back ({seen})"
                );
                std::thread::yield_now();
            }
            assert!(watermarks > 1);
        });
    });
}

/// The records of one write at `off` in `file` (up to the first bytes that are no record).
fn records_of_write(file: &[u8], off: usize, len: usize) -> Vec<format::RecordHeader> {
    let mut out = Vec::new();
    let mut pos = off;
    while pos < off + len {
        let Some(h) = format::verify_record(&file[pos..], usize::MAX, |_| true) else {
            break;
        };
        pos += h.framed_len();
        out.push(h);
    }
    out
}

/// Records appended while the sync before a group encoded ahead runs join that group.
fn ahead_group_grown_during_its_sync(d: &std::path::Path) -> Vec<Event> {
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d, opts(), storage).unwrap();
    // Records 5 and 6 are encoded ahead while the sync of 1-4 runs; 7 and 8 arrive during
    // that sync and join the same write.
    let mut tickets = ahead_encoded_sync_held(&wal, &plan, 2);
    tickets.extend((6..8).map(|i| wal.append(&payload(i)).unwrap()));
    plan.hold_syncs(false);
    let lsns: Vec<u64> = tickets.into_iter().map(|t| t.wait().unwrap()).collect();
    assert_eq!(lsns, [1, 5, 6, 7, 8]);
    drop(wal);
    plan.events()
}

#[test]
fn only_the_first_record_of_each_write_starts_a_sync_epoch() {
    let d = tempfile::tempdir().unwrap();
    let events = ahead_group_grown_during_its_sync(d.path());
    let file = std::fs::read(&list_segments(d.path()).unwrap().segments[0].path).unwrap();
    let mut lsns = Vec::new();
    let mut w = writes(&events);
    // The last write is the close marker (no record).
    let (_, marker, _) = w.pop().unwrap();
    let h = format::decode_record_header(&file[marker as usize..]).unwrap();
    assert!(format::is_close_marker(&h), "{events:?}");
    for (i, &(_, off, len)) in w.iter().enumerate() {
        // A small group's write also carries zeros ahead: its records end where the next
        // write starts.
        let len = w.get(i + 1).map_or(len, |n| len.min((n.1 - off) as usize));
        let recs = records_of_write(&file, off as usize, len);
        assert!(!recs.is_empty(), "{events:?}");
        for (i, h) in recs.iter().enumerate() {
            let epoch = h.flags & format::FLAG_EPOCH_START != 0;
            assert_eq!(epoch, i == 0, "record {} at index {i} of its write", h.lsn);
            lsns.push(h.lsn);
        }
    }
    // Two writes: 1-4 and 5-8.
    assert_eq!(lsns, (1..=8).collect::<Vec<_>>());
    assert_eq!(w.len(), 2, "{events:?}");
}

#[test]
fn a_write_torn_on_the_encode_ahead_path_recovers_as_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    ahead_group_grown_during_its_sync(d.path());
    let path = list_segments(d.path()).unwrap().segments[0].path.clone();
    let mut file = std::fs::read(&path).unwrap();
    // A crash during the write of 5-8: record 6's first bytes never reached the disk, 7
    // and 8 did; nothing after them was written (no close marker either).
    let rec6 = SEGMENT_HEADER_LEN + 5 * 1024;
    file[rec6..rec6 + 100].fill(0);
    let end8 = SEGMENT_HEADER_LEN + 8 * 1024;
    file[end8..].fill(0);
    std::fs::write(&path, &file).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!((rep.records, rep.next_lsn), (5, 6));
    assert_eq!(rep.dropped_records, 2);
    assert!(rep.corruption.is_none());
    let back = read_all(&wal);
    assert_eq!(back.len(), 5);
    assert_eq!(wal.append(b"next").unwrap().wait().unwrap(), 6);
}
