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
