//! Segment recycling: `truncate_before` keeps spares, new segments reuse their files, and
//! recovery tells a recycled file's stale bytes from a torn tail or corruption.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::fault::FaultyStorage;
use super::{bounded, read_all, small};
use crate::format::{self, RECORD_HEADER_LEN, SegmentHeader};
use crate::recovery::{Listing, list_segments, scan_segment};
use crate::{Error, Options, RecoveryMode, Wal};

/// The payload of the record with LSN `lsn` in these tests (3000 bytes, LSN first).
fn rec(lsn: u64) -> Vec<u8> {
    let mut p = vec![(lsn % 251) as u8; 3000];
    p[..8].copy_from_slice(&lsn.to_le_bytes());
    p
}

fn listing(dir: &Path) -> Listing {
    list_segments(dir).unwrap()
}

fn header(path: &Path) -> SegmentHeader {
    format::decode_segment_header(&std::fs::read(path).unwrap()).unwrap()
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// Appends `rec(lsn)` records (the LSNs after `*n`) until the log has `segments` segments.
fn fill_to(wal: &Wal, n: &mut u64, segments: usize) {
    while listing(wal.dir()).segments.len() < segments {
        *n += 1;
        assert_eq!(wal.append(&rec(*n)).unwrap().wait().unwrap(), *n);
    }
}

/// Fills the log to three segments and truncates the first two, which become spares.
fn two_spares(wal: &Wal, n: &mut u64) {
    fill_to(wal, n, 3);
    wal.truncate_before(listing(wal.dir()).segments[2].first_lsn)
        .unwrap();
}

fn check_records(wal: &Wal, last: u64) {
    let all = read_all(wal);
    assert_eq!(all.len() as u64, last + 1 - wal.first_lsn());
    for (i, (lsn, _, p)) in all.iter().enumerate() {
        assert_eq!(*lsn, wal.first_lsn() + i as u64);
        assert_eq!(p, &rec(*lsn), "record {lsn}");
    }
}

#[test]
fn truncated_segments_become_spares_that_new_segments_reuse() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let mut n = 0;
    fill_to(&wal, &mut n, 5);
    let segs = listing(d.path()).segments;
    let inodes: Vec<u64> = segs.iter().map(|s| ino(&s.path)).collect();
    // Three segments wholly below the fourth leave the log: two stay as spares (the
    // default room), the third is deleted.
    assert_eq!(wal.truncate_before(segs[3].first_lsn).unwrap(), 3);
    let l = listing(d.path());
    assert_eq!(l.segments, segs[3..].to_vec());
    let spares: Vec<u64> = l.spares.iter().map(|(f, _)| *f).collect();
    assert_eq!(spares, [segs[0].first_lsn, segs[1].first_lsn]);
    for ((_, p), want) in l.spares.iter().zip(&inodes) {
        assert_eq!(ino(p), *want, "a spare is the truncated segment's file");
    }
    assert!(!segs[2].path.exists());
    // The next new segment reuses the newest spare, flagged as recycled.
    fill_to(&wal, &mut n, 3);
    let l = listing(d.path());
    let new = l.segments[2].clone();
    assert_eq!(ino(&new.path), inodes[1]);
    assert_eq!(
        header(&new.path),
        SegmentHeader {
            first_lsn: new.first_lsn,
            recycled: true
        }
    );
    assert_eq!(l.spares.len(), 1);
    // Reopened while a recycled segment is the last one: its stale bytes are no torn
    // tail, nothing is dropped and the log continues where it was.
    check_records(&wal, n);
    drop(wal);
    let stale = std::fs::read(&new.path).unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report();
    assert_eq!((rep.dropped_bytes, rep.dropped_records), (0, 0));
    assert_eq!(rep.next_lsn, n + 1);
    assert_eq!(std::fs::read(&new.path).unwrap(), stale, "nothing zeroed");
    check_records(&wal, n);
    // The other spare serves the segment after; then none is left: a fresh file.
    fill_to(&wal, &mut n, 4);
    let l = listing(d.path());
    assert_eq!(ino(&l.segments[3].path), inodes[0]);
    assert!(header(&l.segments[3].path).recycled);
    assert!(l.spares.is_empty());
    fill_to(&wal, &mut n, 5);
    assert!(!header(&listing(d.path()).segments[4].path).recycled);
    check_records(&wal, n);
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    check_records(&wal, n);
}

#[test]
fn a_recycled_segment_is_written_without_zeros_ahead() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    let mut n = 0;
    two_spares(&wal, &mut n);
    let framed = RECORD_HEADER_LEN + 3000;
    // The rollover into the spare, then small groups: exactly their own bytes each.
    fill_to(&wal, &mut n, 2);
    assert_eq!(plan.recycles.load(Ordering::SeqCst), 1);
    let w0 = plan.write_log().len();
    for _ in 0..5 {
        n += 1;
        wal.append(&rec(n)).unwrap().wait().unwrap();
    }
    let log = plan.write_log();
    assert!(
        log[w0 - 1..].iter().all(|&(_, len)| len == framed),
        "{log:?}"
    );
    // Likewise after a reopen with the recycled segment last.
    drop(wal);
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    n += 1;
    wal.append(&rec(n)).unwrap().wait().unwrap();
    assert_eq!(plan.write_log().len(), 1);
    assert_eq!(plan.write_log()[0].1, framed);
    check_records(&wal, n);
}

#[test]
fn spares_are_kept_only_while_older_than_the_log_and_within_the_allowed_number() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let mut n = 0;
    fill_to(&wal, &mut n, 4);
    let segs = listing(d.path()).segments;
    wal.truncate_before(segs[2].first_lsn).unwrap();
    drop(wal);
    let spares = listing(d.path()).spares;
    assert_eq!(spares.len(), 2);
    // A file named as a spare of an LSN the log still holds would bring back records the
    // log may write again: deleted at open, like the spares beyond the allowed number
    // (the oldest go first).
    let forged = d.path().join(format::spare_file_name(segs[2].first_lsn));
    std::fs::copy(&spares[0].1, &forged).unwrap();
    let wal = Wal::open(d.path(), small().recycle_segments(1)).unwrap();
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    let l = listing(d.path());
    assert_eq!(l.spares, spares[1..].to_vec());
    check_records(&wal, n);
    drop(wal);
    // None allowed: none kept, and truncation deletes.
    let wal = Wal::open(d.path(), small().recycle_segments(0)).unwrap();
    assert!(listing(d.path()).spares.is_empty());
    fill_to(&wal, &mut n, 4);
    let segs = listing(d.path()).segments;
    assert_eq!(wal.truncate_before(segs[3].first_lsn).unwrap(), 3);
    let l = listing(d.path());
    assert!(l.spares.is_empty());
    assert_eq!(l.segments, segs[3..].to_vec());
    assert!(segs[..3].iter().all(|s| !s.path.exists()));
    check_records(&wal, n);
    wal.truncate_before(u64::MAX).unwrap();
    drop(wal);
    // With every segment gone the log restarts at LSN 1, below any spare's records: no
    // spare survives the open.
    let wal = Wal::open(d.path(), small()).unwrap();
    two_spares(&wal, &mut n);
    drop(wal);
    assert_eq!(listing(d.path()).spares.len(), 2);
    for s in listing(d.path()).segments {
        std::fs::remove_file(s.path).unwrap();
    }
    let wal = Wal::open(d.path(), small()).unwrap();
    assert!(listing(d.path()).spares.is_empty());
    assert_eq!(wal.append(b"first").unwrap().wait().unwrap(), 1);
}

#[test]
fn a_spare_of_another_size_is_deleted_instead_of_reused() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let mut n = 0;
    two_spares(&wal, &mut n);
    drop(wal);
    assert_eq!(listing(d.path()).spares.len(), 2);
    // Segments are larger now: neither 64 KiB spare can serve one.
    let opts = small().segment_size(128 << 10);
    let wal = Wal::open(d.path(), opts).unwrap();
    fill_to(&wal, &mut n, 2);
    let l = listing(d.path());
    assert!(l.spares.is_empty(), "{:?}", l.spares);
    let new = &l.segments[1];
    assert!(!header(&new.path).recycled);
    assert_eq!(std::fs::metadata(&new.path).unwrap().len(), 128 << 10);
    check_records(&wal, n);
}

/// A log whose last segment is recycled and ends with `batch` (records of 1000 bytes,
/// one append each unless `one_batch`); returns the segment's path, its first LSN, the
/// offset where the batch starts and the LSN of the batch's first record.
fn recycled_tail(d: &Path, batch: usize, one_batch: bool) -> (std::path::PathBuf, u64, u64, u64) {
    let wal = Wal::open(d, small()).unwrap();
    let mut n = 0;
    two_spares(&wal, &mut n);
    fill_to(&wal, &mut n, 2);
    for _ in 0..3 {
        n += 1;
        wal.append(&rec(n)).unwrap().wait().unwrap();
    }
    let last = listing(d).segments.last().unwrap().clone();
    assert!(header(&last.path).recycled);
    let before = std::fs::read(&last.path).unwrap();
    let start = scan_segment(&before, last.first_lsn, true, false).end as u64;
    let ps: Vec<Vec<u8>> = (0..batch).map(|i| vec![i as u8 + 1; 1000]).collect();
    if one_batch {
        let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
        wal.append_batch(&refs).unwrap().wait().unwrap();
    } else {
        for p in &ps {
            wal.append(p).unwrap().wait().unwrap();
        }
    }
    wal.close().unwrap();
    (last.path, last.first_lsn, start, n + 1)
}

#[test]
fn a_torn_batch_in_a_recycled_segment_is_cut_and_the_stale_bytes_are_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let (path, _, start, batch_lsn) = recycled_tail(d.path(), 3, true);
    let framed = (RECORD_HEADER_LEN + 1000) as u64;
    // A crash, not a clean close: no close marker after the batch.
    super::as_if_crashed(d.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // The batch's last record is torn (its last byte never landed).
    let torn_at = (start + 3 * framed - 1) as usize;
    bytes[torn_at] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    // Exactly the batch's two whole records are cut, not the stale rest of the file.
    assert_eq!((rep.dropped_bytes, rep.dropped_records), (2 * framed, 2));
    assert_eq!(rep.next_lsn, batch_lsn);
    let after = std::fs::read(&path).unwrap();
    let (s, e) = (start as usize, (start + 2 * framed) as usize);
    assert_eq!(after[..s], bytes[..s]);
    assert!(after[s..e].iter().all(|&b| b == 0), "cut records zeroed");
    assert_eq!(after[e..], bytes[e..], "stale bytes untouched");
    check_records(&wal, batch_lsn - 1);
    assert_eq!(wal.append(b"again").unwrap().wait().unwrap(), batch_lsn);
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    assert_eq!(read_all(&wal).last().unwrap().2, b"again");
}

#[test]
fn damage_in_a_recycled_segment_before_synced_records_is_corruption() {
    let d = tempfile::tempdir().unwrap();
    let (path, first, start, batch_lsn) = recycled_tail(d.path(), 3, false);
    let framed = (RECORD_HEADER_LEN + 1000) as u64;
    let mut bytes = std::fs::read(&path).unwrap();
    // The first of three synced appends is damaged; the two after it started epochs.
    bytes[(start + 100) as usize] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        Wal::open(d.path(), small()),
        Err(Error::Corrupted { segment, offset, .. }) if segment == path && offset == start
    ));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "refusal changes nothing"
    );
    // Tolerated: the prefix before the damage stays, the segment's own records after it
    // are zeroed, the stale bytes after them are left.
    let opts = small().recovery_mode(RecoveryMode::TolerateCorruptTail);
    let wal = Wal::open(d.path(), opts).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(rep.corruption, Some((path.clone(), start)));
    assert_eq!(rep.next_lsn, batch_lsn);
    assert!(rep.next_lsn > first);
    // The records after the damage and the close marker after them.
    assert_eq!(rep.dropped_bytes, 3 * framed + RECORD_HEADER_LEN as u64);
    let after = std::fs::read(&path).unwrap();
    let e = (start + 3 * framed) as usize + RECORD_HEADER_LEN;
    assert_eq!(after[e..], bytes[e..]);
    check_records(&wal, batch_lsn - 1);
}

#[test]
fn a_reader_of_a_segment_recycled_underneath_it_ends_with_truncated() {
    bounded(|| {
        let d = tempfile::tempdir().unwrap();
        // Segments larger than the reader's 256 KiB read-ahead, so it reads the file again.
        let opts = Options::default()
            .segment_size(1 << 20)
            .max_record_size(8 << 10);
        let wal = Wal::open(d.path(), opts).unwrap();
        let mut n = 0u64;
        let more = |wal: &Wal, segments: usize, n: &mut u64| {
            let mut last = None;
            while listing(wal.dir()).segments.len() < segments {
                for _ in 0..64 {
                    *n += 1;
                    last = Some(wal.append(&rec(*n)).unwrap());
                }
                last.take().unwrap().wait().unwrap();
            }
        };
        more(&wal, 4, &mut n);
        let mut it = wal.iter_from(1).unwrap();
        for lsn in 1..=10 {
            assert_eq!(it.next().unwrap().unwrap().payload, rec(lsn));
        }
        let segs = listing(d.path()).segments;
        wal.truncate_before(segs[2].first_lsn).unwrap();
        // Both spares reused (the newest first): the first segment's file, now the last
        // segment, is overwritten with newer records well past the reader's read-ahead.
        more(&wal, 4, &mut n);
        assert!(listing(d.path()).spares.is_empty());
        for _ in 0..150 {
            n += 1;
            wal.append(&rec(n)).unwrap().wait().unwrap();
        }
        assert_eq!(listing(d.path()).segments.len(), 4);
        let mut lsn = 11;
        let end = loop {
            match it.next().unwrap() {
                Ok(r) => {
                    assert_eq!((r.lsn, r.payload), (lsn, rec(lsn)));
                    lsn += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(
            matches!(end, Error::Truncated { requested, first } if requested == lsn && first == segs[2].first_lsn),
            "{end:?}"
        );
        assert!(lsn < segs[1].first_lsn, "stopped inside the recycled file");
        assert!(it.next().is_none());
    });
}

#[test]
fn a_vanished_spare_is_skipped_but_a_failed_reuse_poisons() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    let mut n = 0;
    two_spares(&wal, &mut n);
    // Both spares deleted behind the WAL's back: the rollover finds them gone (not an
    // error) and creates a fresh segment.
    for (_, p) in listing(d.path()).spares {
        std::fs::remove_file(p).unwrap();
    }
    fill_to(&wal, &mut n, 2);
    assert_eq!(plan.recycles.load(Ordering::SeqCst), 2);
    assert!(!header(&listing(d.path()).segments[1].path).recycled);
    check_records(&wal, n);
    // A spare that is there but cannot be reused (an I/O error) fails the log for good,
    // like a failed segment creation.
    wal.truncate_before(listing(d.path()).segments[1].first_lsn)
        .unwrap();
    plan.fail_recycle.store(true, Ordering::SeqCst);
    let err = loop {
        n += 1;
        match wal.append(&rec(n)).unwrap().wait() {
            Ok(_) => {}
            Err(e) => break e,
        }
    };
    match err {
        Error::Poisoned(cause) => assert_eq!(cause.raw_os_error(), Some(libc::EIO)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_damaged_record_in_a_segment_still_in_the_log_reads_as_corrupted() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let mut n = 0;
    fill_to(&wal, &mut n, 2);
    let first = listing(d.path()).segments[0].path.clone();
    // Damage the third record of the first segment under the open WAL.
    let at = 32 + 2 * (RECORD_HEADER_LEN + 3000) + 100;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0xEE], at as u64).unwrap();
    let mut it = wal.iter_from(1).unwrap();
    assert_eq!(it.next().unwrap().unwrap().payload, rec(1));
    assert_eq!(it.next().unwrap().unwrap().payload, rec(2));
    match it.next() {
        Some(Err(Error::Corrupted { segment, .. })) => assert_eq!(segment, first),
        other => panic!("{other:?}"),
    }
}

#[test]
fn recovery_syncs_the_directory_only_when_it_deleted_a_file() {
    let open = |d: &Path, opts: Options| {
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d, opts, storage).unwrap();
        (wal, plan.dir_syncs.load(Ordering::SeqCst))
    };
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), small()).unwrap();
    let mut n = 0;
    fill_to(&wal, &mut n, 4);
    drop(wal);
    // Nothing to delete: no directory sync.
    let (wal, syncs) = open(d.path(), small());
    assert_eq!(syncs, 0);
    wal.truncate_before(listing(d.path()).segments[1].first_lsn)
        .unwrap();
    drop(wal);
    // A spare beyond the allowed number is deleted: one sync.
    let (wal, syncs) = open(d.path(), small().recycle_segments(0));
    assert_eq!(syncs, 1);
    assert!(listing(d.path()).spares.is_empty());
    drop(wal);
    // Segments after tolerated corruption in a sealed one are deleted: one sync.
    let segs = listing(d.path()).segments;
    let mut b = std::fs::read(&segs[0].path).unwrap();
    b[32 + 100] ^= 1;
    std::fs::write(&segs[0].path, &b).unwrap();
    let (wal, syncs) = open(
        d.path(),
        small().recovery_mode(RecoveryMode::TolerateCorruptTail),
    );
    assert_eq!(wal.recovery_report().removed_segments.len(), segs.len() - 1);
    assert_eq!(syncs, 1);
}
