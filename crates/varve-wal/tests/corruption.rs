//! Corruption: torn tails at every byte offset of the last batch, and single-byte flips
//! anywhere in a segment, give a clean prefix or a `Corrupted`-family error, never other
//! bytes.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use varve_wal::{Error, Options, Wal};

fn opts() -> Options {
    Options::default()
        .segment_size(16 << 10)
        .max_record_size(4 << 10)
}

type Rec = (u64, u8, Vec<u8>);

fn read_all(wal: &Wal) -> Vec<Rec> {
    wal.iter_from(wal.first_lsn())
        .unwrap()
        .map(|r| r.map(|r| (r.lsn, r.kind, r.payload)).unwrap())
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

fn payload(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8 | 1).collect()
}

/// Writes single-record groups, then (as its own last group) a batch of three; returns all
/// records and the byte range of the last batch in the (only) segment.
fn build(dir: &Path) -> (Vec<Rec>, std::ops::Range<usize>) {
    let wal = Wal::open(dir, opts()).unwrap();
    let mut recs = Vec::new();
    for i in 0..4 {
        let p = payload(i, 8 + i * 5);
        let lsn = wal.append_kind(i as u8, &p).unwrap().wait().unwrap();
        recs.push((lsn, i as u8, p));
    }
    let batch: Vec<Vec<u8>> = (4..7).map(|i| payload(i, i)).collect();
    let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
    let first = wal.append_batch(&refs).unwrap().wait().unwrap();
    for (k, p) in batch.into_iter().enumerate() {
        recs.push((first + k as u64, 0, p));
    }
    drop(wal);
    let framed = |r: &Rec| 24 + r.2.len();
    let start = 32 + recs[..4].iter().map(framed).sum::<usize>();
    let end = start + recs[4..].iter().map(framed).sum::<usize>();
    (recs, start..end)
}

/// The segment's bytes with the close marker at `end` (left by the clean close of
/// `build`) zeroed: what a crash right after the last group's sync leaves.
fn without_close_marker(mut bytes: Vec<u8>, end: usize) -> Vec<u8> {
    // The marker: an empty record flagged CLOSE (0x04) with LSN 8 (docs/format.md).
    assert_eq!(bytes[end + 5], 0x04);
    assert_eq!(bytes[end + 8..end + 16], 8u64.to_le_bytes());
    bytes[end..end + 24].fill(0);
    bytes
}

#[test]
fn torn_tail_at_every_offset_of_the_last_batch_drops_exactly_that_batch() {
    let d = tempfile::tempdir().unwrap();
    let (recs, batch) = build(d.path());
    let seg = segments(d.path()).remove(0);
    // A torn write is what a crash leaves: no close marker.
    let original = without_close_marker(std::fs::read(&seg).unwrap(), batch.end);
    assert!(original[batch.end..].iter().all(|&b| b == 0));
    for cut in batch.start..batch.end {
        for zero_instead_of_truncate in [false, true] {
            for other in segments(d.path()).into_iter().filter(|p| *p != seg) {
                std::fs::remove_file(other).unwrap();
            }
            if zero_instead_of_truncate {
                // The preallocated file keeps its size; the unwritten rest is zeros.
                let mut b = original.clone();
                b[cut..].fill(0);
                std::fs::write(&seg, &b).unwrap();
            } else {
                std::fs::write(&seg, &original[..cut]).unwrap();
            }
            let len_before = std::fs::metadata(&seg).unwrap().len();
            let wal = Wal::open(d.path(), opts()).unwrap();
            let rep = wal.recovery_report().clone();
            assert_eq!(read_all(&wal), recs[..4], "cut at {cut}");
            assert_eq!(std::fs::metadata(&seg).unwrap().len(), len_before);
            assert_eq!(rep.next_lsn, 5);
            assert!(rep.dropped_bytes <= (cut - batch.start) as u64);
            // Appending after the cut continues the LSNs and is read back intact.
            assert_eq!(wal.append(b"after").unwrap().wait().unwrap(), 5);
            drop(wal);
            let wal = Wal::open(d.path(), opts()).unwrap();
            assert_eq!(wal.recovery_report().dropped_bytes, 0);
            let all = read_all(&wal);
            assert_eq!(all[..4], recs[..4]);
            assert_eq!(all[4], (5, 0, b"after".to_vec()));
        }
    }
    // The uncut file recovers everything.
    std::fs::write(&seg, &original).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(read_all(&wal), recs);
}

#[test]
fn every_single_byte_flip_gives_a_clean_prefix_or_corrupted() {
    let d = tempfile::tempdir().unwrap();
    let (recs, batch) = build(d.path());
    let seg = segments(d.path()).remove(0);
    let closed = std::fs::read(&seg).unwrap();
    // After a clean close (a close marker after the last group) and after a crash.
    for crashed in [false, true] {
        let original = if crashed {
            without_close_marker(closed.clone(), batch.end)
        } else {
            closed.clone()
        };
        flips(&d, &recs, &batch, &seg, &original, crashed);
    }
}

/// Flips every byte of the records and some after them, one at a time, in `original`;
/// opens the log after each flip.
fn flips(
    d: &tempfile::TempDir,
    recs: &[Rec],
    batch: &std::ops::Range<usize>,
    seg: &Path,
    original: &[u8],
    crashed: bool,
) {
    let framed = |r: &Rec| 24 + r.2.len();
    let mut starts = vec![32usize];
    for r in recs {
        starts.push(starts.last().unwrap() + framed(r));
    }
    let (mut corrupted, mut prefixes) = (0, 0);
    for off in (0..batch.end + 64).chain([original.len() - 1]) {
        let mut b = original.to_vec();
        b[off] ^= 0x5A;
        std::fs::write(seg, &b).unwrap();
        match Wal::open(d.path(), opts()) {
            Ok(wal) => {
                let got = read_all(&wal);
                assert_eq!(got[..], recs[..got.len()], "flip at {off}: not a prefix");
                if off < batch.start || (off < batch.end && !crashed) {
                    panic!("flip at {off} in a synced group was not reported");
                } else if off < batch.end {
                    // In the last group with no close marker after it: indistinguishable
                    // from a torn write.
                    assert_eq!(got.len(), 4, "flip at {off}");
                } else {
                    assert_eq!(got.len(), recs.len(), "flip at {off} after the end");
                }
                prefixes += 1;
            }
            Err(Error::Corrupted {
                segment, offset, ..
            }) => {
                assert_eq!(segment, seg);
                if off >= 32 {
                    // Reported at the start of the damaged record.
                    let rec_start = *starts.iter().rev().find(|&&s| s <= off).unwrap();
                    assert_eq!(offset as usize, rec_start, "flip at {off}");
                }
                // Before the last group, or in it when a clean close marked the end after
                // it.
                let synced = if crashed { batch.start } else { batch.end };
                assert!(off < synced, "flip at {off} reported as corruption");
                corrupted += 1;
            }
            Err(Error::BadMagic { .. }) => assert!(off < 8),
            Err(e) => panic!("flip at {off}: unexpected {e:?}"),
        }
        std::fs::write(seg, original).unwrap();
    }
    // After a clean close only the flips past the last record (in the marker or the zeros
    // after it) leave a clean log; after a crash those in the last group too.
    let least = if crashed { 80 } else { 60 };
    assert!(corrupted > 80 && prefixes > least, "{corrupted} {prefixes}");
}

#[test]
fn damage_in_a_sealed_segment_is_corruption_and_other_files_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    let mut n = 0u64;
    while segments(d.path()).len() < 3 {
        n = wal
            .append(&payload(n as usize, 1000))
            .unwrap()
            .wait()
            .unwrap();
        assert!(n < 1000, "segments never rolled over");
    }
    drop(wal);
    let segs = segments(d.path());
    let first_bytes = std::fs::read(&segs[0]).unwrap();
    // The last record of the sealed first segment loses its tail: looks torn, but the
    // next segment starts after it, so it is corruption.
    let end = 32 + 15 * (24 + 1000);
    assert!(first_bytes[end - 1] != 0 && first_bytes[end..].iter().all(|&b| b == 0));
    let mut b = first_bytes.clone();
    b[end - 10..end].fill(0);
    std::fs::write(&segs[0], &b).unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::Corrupted { segment, offset, .. }) if segment == segs[0] && offset == (end - 1024) as u64
    ));
    // A stray byte in never-written space of a sealed segment holds no record: harmless.
    let mut b = first_bytes.clone();
    *b.last_mut().unwrap() = 1;
    std::fs::write(&segs[0], &b).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(read_all(&wal).len() as u64, n);
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    drop(wal);
    assert_eq!(std::fs::read(&segs[0]).unwrap(), b, "left alone");
    std::fs::write(&segs[0], &first_bytes).unwrap();
    // A missing middle segment is an LSN gap.
    let middle = std::fs::read(&segs[1]).unwrap();
    std::fs::remove_file(&segs[1]).unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::Corrupted { segment, offset: 0, .. }) if segment == segs[2]
    ));
    std::fs::write(&segs[1], &middle).unwrap();
    // Unknown version and unknown magic are refused by name.
    let mut v = middle.clone();
    v[8] = 9;
    let sum = xxh3(&v[..24]);
    v[24..32].copy_from_slice(&sum.to_le_bytes());
    std::fs::write(&segs[1], &v).unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::UnsupportedVersion {
            version: 9,
            supported: 2,
            ..
        })
    ));
    std::fs::write(&segs[1], b"not a wal segment at all, just text").unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::BadMagic { segment }) if segment == segs[1]
    ));
    std::fs::write(&segs[1], &middle).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(read_all(&wal).len() as u64, n);
}

#[test]
fn leftover_temp_segment_is_removed() {
    let d = tempfile::tempdir().unwrap();
    drop(Wal::open(d.path(), opts()).unwrap());
    let tmp = d.path().join("00000000000000000009.tmp");
    std::fs::write(&tmp, [0u8; 100]).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(wal.recovery_report().removed_temp_files, 1);
    assert!(!tmp.exists());
}

fn xxh3(b: &[u8]) -> u64 {
    // Same function the format uses (seed 0), via the dev-only path of the test.
    xxhash_rust::xxh3::xxh3_64(b)
}

#[test]
fn short_or_misnamed_segments_are_corrupted() {
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    wal.append(b"one").unwrap().wait().unwrap();
    drop(wal);
    let seg = segments(d.path()).remove(0);
    let bytes = std::fs::read(&seg).unwrap();
    // Shorter than a segment header.
    std::fs::write(&seg, &bytes[..20]).unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::Corrupted { segment, offset: 0, .. }) if segment == seg
    ));
    // A header whose first LSN disagrees with the file name.
    std::fs::write(&seg, &bytes).unwrap();
    let renamed = d.path().join("00000000000000000007.wal");
    std::fs::rename(&seg, &renamed).unwrap();
    assert!(matches!(
        Wal::open(d.path(), opts()),
        Err(Error::Corrupted { segment, offset: 0, .. }) if segment == renamed
    ));
    std::fs::rename(&renamed, &seg).unwrap();
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(read_all(&wal), vec![(1, 0, b"one".to_vec())]);
}
