//! Recovery on open: verify every record, cut a torn tail, refuse corruption in the middle.
//!
//! The rules (also in the crate docs):
//! - A segment's records must carry consecutive LSNs starting at the LSN in its header and
//!   name; consecutive segments must continue each other's LSNs.
//! - The log ends at the first record that fails its checks. Records of a batch whose last
//!   record (flag `BATCH_CONT` clear) is missing are dropped with it.
//! - What lies after that end decides torn tail vs corruption. Zeros only: a clean end.
//!   Otherwise it is a *torn tail* (cut and zeroed) when it is in the last segment and no
//!   valid record flagged `EPOCH_START` follows the bad spot: every record since the last
//!   completed sync belongs to one epoch, and only that epoch can be partly on disk after a
//!   crash. A valid `EPOCH_START` record after the bad spot means data that had been synced
//!   is damaged; a sealed (non-last) segment, synced before the next one was created,
//!   whose records stop before the next segment's first LSN means the same. Both are
//!   `Error::Corrupted` unless the caller chose
//!   [`RecoveryMode::TolerateCorruptTail`](crate::RecoveryMode::TolerateCorruptTail), which
//!   keeps the clean prefix, zeroes the rest and deletes later segments.
//! - A *recycled* segment (header flag) reuses the file of an earlier segment, so bytes
//!   after its end are stale records of that segment, every one with an LSN below this
//!   segment's first LSN, or pieces of them. Those are neither damage nor a torn tail: only
//!   bytes of this segment's own records after the end (an incomplete batch, valid records
//!   with the next LSNs or later) are, and only those are zeroed. A bad record followed by
//!   such records flagged `EPOCH_START` is corruption, as in a fresh segment.
//! - Spares (`*.spare`, segments kept for reuse by `truncate_before`) are never read as
//!   log. A spare is kept only while every log segment starts after the spare's first LSN
//!   (so all its records are older than any record still to come); others are deleted.

use std::fs::{File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::{self, HeaderError};
use crate::index::SparseIndex;
use crate::storage::Storage;
use crate::{RecoveryMode, RecoveryReport};

/// A segment file of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentMeta {
    pub(crate) first_lsn: u64,
    pub(crate) path: PathBuf,
    /// End offset of its records once sealed (not kept up to date for the last segment,
    /// whose end is the durable position).
    pub(crate) end: u64,
    /// Size of the file.
    pub(crate) file_len: u64,
    /// Where some of its records start.
    pub(crate) index: SparseIndex,
}

/// What recovery found: the segments to keep and where appending resumes.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) segments: Vec<SegmentMeta>,
    pub(crate) next_lsn: u64,
    /// Write offset in the last segment.
    pub(crate) write_offset: u64,
    /// Size of the last segment file.
    pub(crate) last_len: u64,
    /// The last segment is a recycled file (its blocks are already written).
    pub(crate) last_recycled: bool,
    /// Spare files kept for reuse, oldest first.
    pub(crate) spares: Vec<PathBuf>,
    /// The longest payload of a record in the kept segments.
    pub(crate) max_len: usize,
    pub(crate) report: RecoveryReport,
}

/// The outcome of scanning one segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentScan {
    /// End offset of the last complete batch.
    pub(crate) end: usize,
    /// LSN the next record after `end` must carry.
    pub(crate) next_lsn: u64,
    /// Records kept (complete batches).
    pub(crate) records: u64,
    /// Offset of the first record that failed its checks (or of the end of the file).
    pub(crate) bad_offset: usize,
    /// One past the last byte after `end` that may belong to this segment's records: in a
    /// fresh segment the last non-zero byte, in a recycled one the end of the last of its
    /// own records after `end` (`end` if there are none).
    pub(crate) garbage_end: usize,
    /// Valid records seen after `end` (an incomplete batch, records after the bad spot).
    pub(crate) dropped_records: u64,
    /// A valid `EPOCH_START` record lies after the bad spot.
    pub(crate) epoch_after_bad: bool,
    /// The records end with a clean close's marker (at `end`).
    pub(crate) closed: bool,
    /// Where the bytes after the log's end start: `end`, or past the close marker.
    pub(crate) clean_end: usize,
    /// A valid close marker lies after the bad spot: the log was closed cleanly with
    /// records there that are now damaged or missing.
    pub(crate) close_after_bad: bool,
    /// The longest payload among the records before the bad spot.
    pub(crate) max_len: usize,
    /// The sparse index of the records kept.
    pub(crate) index: SparseIndex,
}

/// Scans the bytes of one segment whose header says `first_lsn` (and whether it was
/// recycled). With `tail` false the bytes after the bad spot are not searched for records
/// (`dropped_records` then counts only an incomplete batch, `epoch_after_bad` is false and
/// a recycled segment's `garbage_end` is the bad spot): enough for a sealed segment that
/// ends where its successor begins, and much cheaper for a recycled one, whose stale
/// bytes run to the end of the file.
pub(crate) fn scan_segment(buf: &[u8], first_lsn: u64, recycled: bool, tail: bool) -> SegmentScan {
    let mut off = format::SEGMENT_HEADER_LEN;
    let mut lsn = first_lsn;
    let (mut end, mut next_lsn, mut records, mut pending) = (off, first_lsn, 0u64, 0u64);
    let mut max_len = 0;
    let mut closed = false;
    let mut index = SparseIndex::default();
    while let Some(h) = buf
        .get(off..)
        .and_then(|rest| format::verify_record(rest, rest.len(), |l| l == lsn))
    {
        if h.flags & format::FLAG_CLOSE != 0 {
            // The end of a cleanly closed log: right after a complete batch, or nowhere.
            if format::is_close_marker(&h) && pending == 0 {
                closed = true;
                off += h.framed_len();
            }
            break;
        }
        max_len = max_len.max(h.len as usize);
        index.note(lsn, off as u64);
        off += h.framed_len();
        lsn += 1;
        pending += 1;
        if h.flags & format::FLAG_BATCH_CONT == 0 {
            end = off;
            next_lsn = lsn;
            records += pending;
            pending = 0;
        }
    }
    let bad_offset = off.min(buf.len());
    index.truncate_at(end as u64);
    let clean_end = if closed { bad_offset } else { end };
    let nonzero_end = buf
        .get(clean_end..)
        .and_then(|rest| rest.iter().rposition(|&b| b != 0))
        .map_or(clean_end, |p| clean_end + p + 1);
    // Only the bytes up to the last non-zero one can hold records.
    let live = buf.get(..nonzero_end).unwrap_or(buf);
    let after = if tail {
        scan_after(live, bad_offset, next_lsn, end)
    } else {
        After::default()
    };
    // Stale bytes of a recycled file's earlier segment are not this segment's: what can be
    // is the incomplete batch (up to `bad_offset`) and valid records with LSNs from
    // `next_lsn` on.
    let garbage_end = if recycled {
        bad_offset.max(after.last_end)
    } else {
        nonzero_end
    };
    SegmentScan {
        end,
        next_lsn,
        records,
        bad_offset,
        garbage_end,
        dropped_records: pending + after.count,
        epoch_after_bad: after.epoch,
        closed,
        clean_end,
        close_after_bad: after.close,
        max_len,
        index,
    }
}

/// Valid records found after a bad spot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct After {
    count: u64,
    /// One of them is flagged `EPOCH_START`.
    epoch: bool,
    /// A close marker is among them (not counted in `count`).
    close: bool,
    /// End offset of the last one (0 if none).
    last_end: usize,
}

/// Looks for valid records at any byte offset from `from` whose LSN could follow the clean
/// end at `base`, where the record with LSN `lo` belongs: the records `lo..l` before a
/// record `l` take at least a header each, so `l` lies within
/// `lo..=lo + (offset - base) / RECORD_HEADER_LEN`. The upper bound also keeps the scan
/// cheap: a look-alike header inside other bytes names a random LSN (almost never in the
/// window), so its payload is not checksummed.
fn scan_after(buf: &[u8], from: usize, lo: u64, base: usize) -> After {
    let (mut next, mut count, mut epoch, mut close) = (from, 0u64, false, false);
    // A `for` over the offsets, so the scan ends with the buffer whatever the bytes say;
    // a valid record's bytes are skipped (a payload that looks like a record is payload).
    for off in from..buf.len() {
        if off < next {
            continue;
        }
        let Some(rest) = buf.get(off..) else {
            break;
        };
        let hi = lo.saturating_add((off.saturating_sub(base) / format::RECORD_HEADER_LEN) as u64);
        if let Some(h) = format::verify_record(rest, rest.len(), |l| (lo..=hi).contains(&l)) {
            if format::is_close_marker(&h) {
                close = true;
            } else {
                count += 1;
                epoch |= h.flags & format::FLAG_EPOCH_START != 0;
            }
            next = off + h.framed_len();
        }
    }
    let last_end = if next == from { 0 } else { next };
    After {
        count,
        epoch,
        close,
        last_end,
    }
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    match e {
        HeaderError::Short => Error::Corrupted {
            segment: path.to_path_buf(),
            offset: 0,
            what: "segment shorter than its header",
        },
        HeaderError::BadMagic => Error::BadMagic {
            segment: path.to_path_buf(),
        },
        HeaderError::Corrupt => Error::Corrupted {
            segment: path.to_path_buf(),
            offset: 0,
            what: "segment header checksum mismatch",
        },
        HeaderError::Version(version) => Error::UnsupportedVersion {
            segment: path.to_path_buf(),
            version,
            supported: format::FORMAT_VERSION,
        },
    }
}

/// What a WAL directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Segments in LSN order.
    pub(crate) segments: Vec<SegmentMeta>,
    /// Spares (first LSN of the segment they were, path), oldest first.
    pub(crate) spares: Vec<(u64, PathBuf)>,
    /// Leftover `.tmp` files removed.
    pub(crate) removed_tmp: usize,
}

/// Lists the segments and spares of `dir` in LSN order, removing leftover `.tmp` files.
pub(crate) fn list_segments(dir: &Path) -> Result<Listing> {
    let mut segs = Vec::new();
    let mut spares = Vec::new();
    let mut removed_tmp = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(first_lsn) = format::parse_segment_file_name(name) {
            segs.push(SegmentMeta {
                first_lsn,
                path: entry.path(),
                end: 0,
                file_len: 0,
                index: SparseIndex::default(),
            });
        } else if let Some(old_first) = format::parse_spare_file_name(name) {
            spares.push((old_first, entry.path()));
        } else if name
            .strip_suffix(".tmp")
            .and_then(|n| format::parse_segment_file_name(&format!("{n}.wal")))
            .is_some()
        {
            // A segment whose creation did not finish: never renamed, never referenced.
            std::fs::remove_file(entry.path())?;
            removed_tmp += 1;
        }
    }
    segs.sort_by_key(|s| s.first_lsn);
    spares.sort();
    Ok(Listing {
        segments: segs,
        spares,
        removed_tmp,
    })
}

/// Overwrites `[from, to)` of `path` with zeros and syncs it (the file keeps its size).
fn zero_range(path: &Path, from: usize, to: usize) -> Result<()> {
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&vec![0u8; to.saturating_sub(from)], from as u64)?;
    f.sync_data()?;
    Ok(())
}

/// Runs recovery over `dir` (which must be locked by the caller).
///
/// Keeps at most `max_spares` spares (the newest); deletes the others.
pub(crate) fn recover(
    dir: &Path,
    mode: RecoveryMode,
    max_spares: usize,
    storage: &dyn Storage,
) -> Result<Recovered> {
    let Listing {
        segments: mut segs,
        spares,
        removed_tmp,
    } = list_segments(dir)?;
    let mut report = RecoveryReport {
        removed_temp_files: removed_tmp,
        ..RecoveryReport::default()
    };
    let mut buf = Vec::new();
    let mut expected: Option<u64> = None;
    let mut resume = (1u64, format::SEGMENT_HEADER_LEN as u64, 0u64);
    let mut last_recycled = false;
    let mut keep = segs.len();
    let mut max_len = 0;
    // (end of records, file size) of each segment scanned.
    let mut sizes = Vec::with_capacity(segs.len());
    for (i, seg) in segs.iter().enumerate() {
        buf.clear();
        File::open(&seg.path)?.read_to_end(&mut buf)?;
        let header = format::decode_segment_header(&buf).map_err(|e| header_error(&seg.path, e))?;
        let first = header.first_lsn;
        let corrupted = |offset: usize, what| Error::Corrupted {
            segment: seg.path.clone(),
            offset: offset as u64,
            what,
        };
        if first != seg.first_lsn {
            return Err(corrupted(
                0,
                "segment name and header disagree on the first LSN",
            ));
        }
        if first == 0 {
            // LSNs start at 1: no writer made this segment.
            return Err(corrupted(0, "segment first LSN is 0"));
        }
        if expected.is_some_and(|e| e != first) {
            return Err(corrupted(0, "LSN gap between consecutive segments"));
        }
        // Records are bounded by the segment, not by today's max_record_size. What follows
        // the end matters unless this is a sealed segment ending where the next begins.
        let continued =
            |s: &SegmentScan| segs.get(i + 1).is_some_and(|n| n.first_lsn == s.next_lsn);
        let mut scan = scan_segment(&buf, first, header.recycled, false);
        if !continued(&scan) {
            scan = scan_segment(&buf, first, header.recycled, true);
        }
        report.segments += 1;
        report.records += scan.records;
        let damaged = scan.garbage_end > scan.clean_end;
        // A sealed segment was synced before its successor was created: it must end
        // exactly where the next one begins. Stray bytes after that end (in never-written
        // space) hold no record and are left alone.
        let damage = match segs.get(i + 1) {
            Some(next) if scan.next_lsn != next.first_lsn && !damaged => {
                // Nothing damaged here: the records in between are missing.
                return Err(Error::Corrupted {
                    segment: next.path.clone(),
                    offset: 0,
                    what: "LSN gap between consecutive segments",
                });
            }
            Some(next) if scan.next_lsn != next.first_lsn => Some("bad record in a sealed segment"),
            None if damaged && scan.epoch_after_bad => {
                Some("bad record followed by valid synced records")
            }
            None if damaged && scan.close_after_bad => {
                Some("bad record before the marker of a clean close")
            }
            _ => None,
        };
        if let Some(what) = damage {
            if mode == RecoveryMode::Strict {
                return Err(corrupted(scan.bad_offset, what));
            }
            report.corruption = Some((seg.path.clone(), scan.bad_offset as u64));
            keep = i + 1;
        }
        // Bytes past the end are cut in the last segment (a torn tail) and in a sealed one
        // whose corruption was tolerated; keep is the segment count unless it was.
        // A close marker alone is not cut (the next write overwrites it).
        let torn = if damaged {
            scan.garbage_end - scan.end
        } else {
            0
        };
        if keep == i + 1 && torn != 0 {
            zero_range(&seg.path, scan.end, scan.garbage_end)?;
            report.dropped_bytes += torn as u64;
            report.dropped_records += scan.dropped_records;
        }
        expected = Some(scan.next_lsn);
        max_len = max_len.max(scan.max_len);
        sizes.push((scan.end as u64, buf.len() as u64, scan.index));
        resume = (scan.next_lsn, scan.end as u64, buf.len() as u64);
        report.closed_cleanly = scan.closed && !damaged;
        last_recycled = header.recycled;
        if keep == i + 1 {
            break;
        }
    }
    for (seg, (end, file_len, index)) in segs.iter_mut().zip(sizes) {
        (seg.end, seg.file_len, seg.index) = (end, file_len, index);
    }
    let mut removed_any = keep != segs.len();
    for seg in segs.drain(keep..) {
        std::fs::remove_file(&seg.path)?;
        report.removed_segments.push(seg.path);
    }
    // A spare may be reused only while all its records are older than any the log will
    // still write: it must predate every segment (with no segment the log restarts at its
    // first LSN). The newest `max_spares` of those are kept.
    let oldest_kept = segs.first().map(|s| s.first_lsn);
    let (mut kept, unusable): (Vec<_>, Vec<_>) = spares
        .into_iter()
        .partition(|(old_first, _)| oldest_kept.is_some_and(|f| *old_first < f));
    let surplus = kept.len().saturating_sub(max_spares);
    for (_, path) in unusable.into_iter().chain(kept.drain(..surplus)) {
        std::fs::remove_file(&path)?;
        removed_any = true;
    }
    let kept: Vec<PathBuf> = kept.into_iter().map(|(_, path)| path).collect();
    if removed_any {
        storage.sync_dir(dir)?;
    }
    report.next_lsn = resume.0;
    Ok(Recovered {
        segments: segs,
        next_lsn: resume.0,
        write_offset: resume.1,
        last_len: resume.2,
        last_recycled,
        spares: kept,
        max_len,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::RECORD_HEADER_LEN;

    fn record(lsn: u64, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        format::put_unsequenced_header(&mut v, payload.len() as u32, 0, 0);
        v.extend_from_slice(payload);
        format::seal_record(&mut v, lsn, flags).unwrap();
        v
    }

    /// A fresh segment starting at LSN 1 holding `records`, then zeros.
    fn segment(records: &[Vec<u8>]) -> Vec<u8> {
        let mut buf = format::encode_segment_header(1, false).to_vec();
        for r in records {
            buf.extend_from_slice(r);
        }
        buf.resize(buf.len() + 256, 0);
        buf
    }

    #[test]
    fn only_a_close_marker_right_after_a_complete_batch_ends_the_log_cleanly() {
        let r1 = record(1, 0, b"one");
        let end1 = format::SEGMENT_HEADER_LEN + r1.len();
        // The marker after a complete batch: a clean close.
        let scan = scan_segment(
            &segment(&[r1.clone(), format::close_marker(2).to_vec()]),
            1,
            false,
            true,
        );
        assert!(scan.closed);
        assert_eq!((scan.end, scan.clean_end), (end1, end1 + RECORD_HEADER_LEN));
        assert_eq!(scan.garbage_end, scan.clean_end, "nothing to cut");
        // A record flagged CLOSE with a payload is no marker: the log ends before it, not
        // closed, and it is what a torn tail would cut.
        let mut bogus = Vec::new();
        format::put_unsequenced_header(&mut bogus, 3, 0, format::FLAG_CLOSE);
        bogus.extend_from_slice(b"two");
        format::seal_record(&mut bogus, 2, 0).unwrap();
        let scan = scan_segment(&segment(&[r1.clone(), bogus.clone()]), 1, false, true);
        assert!(!scan.closed);
        assert_eq!((scan.end, scan.clean_end), (end1, end1));
        assert_eq!(scan.garbage_end, end1 + bogus.len());
        // A marker inside a batch (its last record missing) is no clean close either: the
        // batch is dropped and the marker lies after the bad spot.
        let cont = record(1, format::FLAG_BATCH_CONT, b"one");
        let marker = format::close_marker(2);
        let scan = scan_segment(&segment(&[cont.clone(), marker.to_vec()]), 1, false, true);
        assert!(!scan.closed);
        assert_eq!((scan.end, scan.records), (format::SEGMENT_HEADER_LEN, 0));
        assert_eq!(scan.bad_offset, format::SEGMENT_HEADER_LEN + cont.len());
        assert!(scan.close_after_bad);
    }

    #[test]
    fn scan_after_counts_records_not_look_alikes_inside_payloads() {
        // 120 bytes of garbage (room for records 5 and 6), then record 7 whose payload is
        // itself a valid epoch-starting record 8, then record 8 (not epoch-starting), a
        // stale record below `lo`, and one whose LSN is too far ahead to follow.
        let inner = record(8, format::FLAG_EPOCH_START, b"inner");
        let mut buf = vec![0xABu8; 120];
        buf.extend(record(7, 0, &inner));
        buf.extend(record(8, 0, b"after"));
        buf.extend(record(3, format::FLAG_EPOCH_START, b"stale"));
        let stale_end = buf.len();
        buf.extend(record(1000, format::FLAG_EPOCH_START, b"far"));
        let r8 = 120 + record(7, 0, &inner).len();
        let end8 = r8 + record(8, 0, b"after").len();
        let after = |count, epoch, last_end| After {
            count,
            epoch,
            close: false,
            last_end,
        };
        assert_eq!(scan_after(&buf, 0, 5, 0), after(2, false, end8));
        // From inside the first record, its embedded look-alike is found like any bytes.
        assert_eq!(scan_after(&buf, 121, 5, 0), after(2, true, end8));
        assert_eq!(scan_after(&buf, 0, 4, 0), after(2, false, end8));
        assert_eq!(scan_after(&buf, 0, 3, 0), after(3, true, stale_end));
        assert_eq!(scan_after(&buf, buf.len(), 0, 0), after(0, false, 0));
        assert_eq!(scan_after(&buf, end8, 4, 0), after(0, false, 0));
        // Record 7 at 120 cannot follow a clean end at 101 with LSN 5 (no room for 5 and
        // 6); record 8 at `r8` just can (three headers fit exactly), not one byte later.
        assert_eq!(r8 - 101, 3 * RECORD_HEADER_LEN);
        assert_eq!(scan_after(&buf, 0, 5, 101), after(1, false, end8));
        assert_eq!(scan_after(&buf, 0, 5, 102), after(0, false, 0));
    }
}
