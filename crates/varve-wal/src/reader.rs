//! Reading durable records back, across segments, for recovery consumers and tailers.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::Lsn;
use crate::error::{Error, Result};
use crate::format;
use crate::shared::{Shared, lock};

/// One record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its LSN.
    pub lsn: Lsn,
    /// The caller-supplied kind byte.
    pub kind: u8,
    /// The payload bytes (checksum verified).
    pub payload: Vec<u8>,
}

/// One record read back from the log, borrowed from the iterator's buffer
/// ([`Iter::next_ref`]): valid until the iterator is used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Its LSN.
    pub lsn: Lsn,
    /// The caller-supplied kind byte.
    pub kind: u8,
    /// The payload bytes (checksum verified).
    pub payload: &'a [u8],
    /// The first LSN of the segment the record was read from.
    pub segment: Lsn,
    /// Byte offset of the record's header in that segment's file.
    pub offset: u64,
}

impl RecordRef<'_> {
    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            lsn: self.lsn,
            kind: self.kind,
            payload: self.payload.to_vec(),
        }
    }
}

/// A record found by [`Iter::advance`]: its payload is `seg.buf[payload]`.
struct Found {
    lsn: Lsn,
    kind: u8,
    segment: Lsn,
    offset: u64,
    payload: std::ops::Range<usize>,
}

/// Read-ahead size of the iterator.
const READ_CHUNK: usize = 256 << 10;

struct OpenSegment {
    file: File,
    path: PathBuf,
    first_lsn: Lsn,
    /// First LSN of the following segment, once known.
    next_first: Option<Lsn>,
    /// Size of the file: no record read from it can be longer than what is left of it.
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
    pos: u64,
}

impl OpenSegment {
    /// Makes `buf` hold `[pos, pos + need)` if the file has it; `fresh` discards what is
    /// buffered (it may predate a write).
    fn fill(&mut self, need: usize, fresh: bool) -> std::io::Result<()> {
        let end = self.buf_start + self.buf.len() as u64;
        if !fresh && self.pos >= self.buf_start && self.pos + need as u64 <= end {
            return Ok(());
        }
        let want = need.max(READ_CHUNK);
        self.buf.clear();
        self.buf.resize(want, 0);
        self.buf_start = self.pos;
        let mut got = 0;
        while got < need {
            let n = self
                .file
                .read_at(&mut self.buf[got..], self.pos + got as u64)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        self.buf.truncate(got);
        Ok(())
    }

    fn window(&self) -> &[u8] {
        let skip = (self.pos - self.buf_start) as usize;
        self.buf.get(skip..).unwrap_or_default()
    }
}

/// Iterator over durable records from an LSN on; see [`Wal::iter_from`](crate::Wal::iter_from).
///
/// Yields `Err` once (then ends) on a record that fails its checks or a segment that was
/// truncated away underneath it. Returns `None` when caught up; call again later to tail.
pub struct Iter {
    shared: Arc<Shared>,
    next_lsn: Lsn,
    start: Lsn,
    seg: Option<OpenSegment>,
    failed: bool,
    /// Records decoded so far, those skipped below `start` included (tests: a seek
    /// through the sparse index decodes few).
    decoded: u64,
}

impl std::fmt::Debug for Iter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Iter")
            .field("next_lsn", &self.next_lsn.max(self.start))
            .finish_non_exhaustive()
    }
}

impl Iter {
    pub(crate) fn new(shared: Arc<Shared>, start: Lsn) -> Self {
        Iter {
            shared,
            next_lsn: start,
            start,
            seg: None,
            failed: false,
            decoded: 0,
        }
    }

    /// The LSN the next yielded record will carry.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn.max(self.start)
    }

    /// Opens the segment holding `self.next_lsn`, positioned at the record its sparse index
    /// names as the closest at or below `self.next_lsn` (its first record if none).
    fn open_segment(&mut self) -> Result<()> {
        let (meta, next_first, first_kept, seek) = {
            let segs = lock(&self.shared.segments);
            let idx = segs.partition_point(|s| s.first_lsn <= self.next_lsn);
            let first_kept = segs.first().map_or(1, |s| s.first_lsn);
            let meta = idx.checked_sub(1).and_then(|i| segs.get(i));
            let seek = meta.and_then(|m| m.index.seek(self.next_lsn));
            let meta = meta.map(|m| (m.first_lsn, m.path.clone()));
            (meta, segs.get(idx).map(|s| s.first_lsn), first_kept, seek)
        };
        let truncated = Error::Truncated {
            requested: self.next_lsn,
            first: first_kept,
        };
        let Some((meta_first, meta_path)) = meta else {
            return Err(truncated);
        };
        let file = match File::open(&meta_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(truncated),
            Err(e) => return Err(e.into()),
        };
        let file_len = file.metadata()?.len();
        let mut seg = OpenSegment {
            file,
            path: meta_path,
            first_lsn: meta_first,
            next_first,
            file_len,
            buf: Vec::new(),
            buf_start: 0,
            pos: 0,
        };
        seg.fill(format::SEGMENT_HEADER_LEN, true)?;
        let first = format::decode_segment_header(seg.window()).map(|h| h.first_lsn);
        if first != Ok(meta_first) {
            return Err(self
                .truncated_since(meta_first)
                .unwrap_or(Error::Corrupted {
                    segment: seg.path,
                    offset: 0,
                    what: "segment header changed or damaged while reading",
                }));
        }
        // Records before next_lsn from there on are skipped by `next`.
        let (lsn, pos) = seek.unwrap_or((meta_first, format::SEGMENT_HEADER_LEN as u64));
        seg.pos = pos;
        self.next_lsn = lsn;
        self.seg = Some(seg);
        Ok(())
    }

    /// `Error::Truncated` if the segment starting at `seg_first` is no longer in the log:
    /// `truncate_before` removed it (and may have handed its file to a new segment), so
    /// bytes read from it since are not its records.
    fn truncated_since(&self, seg_first: Lsn) -> Option<Error> {
        let first = lock(&self.shared.segments)
            .first()
            .map_or(1, |s| s.first_lsn);
        (seg_first < first).then_some(Error::Truncated {
            requested: self.next_lsn.max(self.start),
            first,
        })
    }

    /// Like [`Iterator::next`], but the payload is borrowed from the iterator's read buffer
    /// instead of copied into a new `Vec`: no allocation per record. The borrow ends at
    /// the next call.
    #[allow(clippy::should_implement_trait)]
    pub fn next_ref(&mut self) -> Option<Result<RecordRef<'_>>> {
        let found = self.next_found()?;
        Some(found.map(|f| {
            RecordRef {
                lsn: f.lsn,
                kind: f.kind,
                segment: f.segment,
                offset: f.offset,
                payload: self
                    .seg
                    .as_ref()
                    .and_then(|s| s.buf.get(f.payload))
                    .unwrap_or_default(),
            }
        }))
    }

    /// The next record at or above `start` (records below it are verified and skipped
    /// without copying); `None` when caught up or after an error.
    fn next_found(&mut self) -> Option<Result<Found>> {
        if self.failed {
            return None;
        }
        loop {
            match self.advance() {
                Ok(Some(f)) if f.lsn < self.start => continue,
                Ok(f) => return f.map(Ok),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }

    fn advance(&mut self) -> Result<Option<Found>> {
        let durable = self.shared.durable_lsn.load(Ordering::SeqCst);
        let target = self.next_lsn.max(self.start);
        if target > durable {
            return Ok(None);
        }
        let need_switch = match &mut self.seg {
            None => true,
            Some(seg) => {
                // Learn where this segment ends once a newer one exists (the newest
                // segment's first LSN only grows; it is this one's until then).
                if seg.next_first.is_none() {
                    let newest = self.shared.last_segment_first.load(Ordering::SeqCst);
                    if newest != seg.first_lsn {
                        let segs = lock(&self.shared.segments);
                        let idx = segs.partition_point(|s| s.first_lsn <= seg.first_lsn);
                        seg.next_first = segs.get(idx).map(|s| s.first_lsn);
                    }
                }
                seg.next_first.is_some_and(|f| self.next_lsn >= f)
            }
        };
        if need_switch {
            self.next_lsn = target;
            self.open_segment()?;
        }
        // A length read from disk is not trusted before the checksum: it is capped by
        // today's max_record_size or the longest record recovery found (the log may have
        // been written with a larger limit), and by what is left of the file, before a
        // buffer is sized for it.
        let max = self.shared.max_read_len;
        let lsn = self.next_lsn;
        let Some(seg) = self.seg.as_mut() else {
            return Ok(None);
        };
        for fresh in [false, true] {
            seg.fill(format::RECORD_HEADER_LEN, fresh)?;
            let Some(h) = format::decode_record_header(seg.window()) else {
                continue;
            };
            let left = seg.file_len.saturating_sub(seg.pos);
            if h.len as usize > max || h.framed_len() as u64 > left {
                continue;
            }
            seg.fill(h.framed_len(), false)?;
            if let Some(h) = format::verify_record(seg.window(), max, |l| l == lsn) {
                let at = (seg.pos - seg.buf_start) as usize + format::RECORD_HEADER_LEN;
                seg.pos += h.framed_len() as u64;
                self.next_lsn += 1;
                self.decoded += 1;
                return Ok(Some(Found {
                    lsn,
                    kind: h.kind,
                    segment: seg.first_lsn,
                    offset: seg.pos - h.framed_len() as u64,
                    payload: at..at + h.len as usize,
                }));
            }
        }
        let corrupted = Error::Corrupted {
            segment: seg.path.clone(),
            offset: seg.pos,
            what: "record failed verification while reading",
        };
        let seg_first = seg.first_lsn;
        Err(self.truncated_since(seg_first).unwrap_or(corrupted))
    }
}

impl Iterator for Iter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_ref().map(|r| r.map(|r| r.to_record()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;
    use crate::tests::bounded;

    /// A segment view over a 1 MiB file whose byte `i` is `i % 251`.
    fn open(d: &tempfile::TempDir) -> (OpenSegment, File) {
        let path = d.path().join("seg");
        let data: Vec<u8> = (0..1usize << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let seg = OpenSegment {
            file: File::open(&path).unwrap(),
            path: path.clone(),
            first_lsn: 1,
            next_first: None,
            file_len: 1 << 20,
            buf: Vec::new(),
            buf_start: 0,
            pos: 0,
        };
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        (seg, w)
    }

    fn expected(from: usize, len: usize) -> Vec<u8> {
        (from..from + len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn fill_reads_ahead_one_chunk() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            let (mut seg, _) = open(&d);
            seg.fill(24, false).unwrap();
            assert_eq!(seg.window(), &expected(0, READ_CHUNK)[..]);
            // A record larger than the chunk is read whole.
            seg.pos = 7;
            seg.fill(READ_CHUNK + 100, false).unwrap();
            assert_eq!(seg.window(), &expected(7, READ_CHUNK + 100)[..]);
        });
    }

    #[test]
    fn fill_serves_buffered_bytes_until_asked_for_fresh_ones() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            let (mut seg, w) = open(&d);
            seg.fill(24, false).unwrap();
            w.write_all_at(&[0xEE; 64], 100).unwrap();
            // Inside the buffer: no read, so the bytes from before the write.
            seg.pos = 90;
            seg.fill(30, false).unwrap();
            assert_eq!(seg.window().get(..30).unwrap(), &expected(90, 30)[..]);
            // Fresh: the write is seen.
            seg.fill(30, true).unwrap();
            let mut want = expected(90, 30);
            want[10..].fill(0xEE);
            assert_eq!(seg.window().get(..30).unwrap(), &want[..]);
            assert_eq!(seg.buf_start, 90);
        });
    }

    #[test]
    fn fill_rereads_when_the_buffer_ends_too_early() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            let (mut seg, _) = open(&d);
            seg.fill(24, false).unwrap();
            // One byte past the buffered range: must read again, from `pos`.
            seg.pos = 1;
            seg.fill(READ_CHUNK, false).unwrap();
            assert_eq!(seg.buf_start, 1);
            assert_eq!(seg.window(), &expected(1, READ_CHUNK)[..]);
            // Behind the buffer start: read again too.
            seg.pos = 0;
            seg.fill(10, false).unwrap();
            assert_eq!(seg.buf_start, 0);
            assert_eq!(seg.window().get(..10).unwrap(), &expected(0, 10)[..]);
        });
    }

    #[test]
    fn fill_stops_at_the_end_of_the_file() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            let (mut seg, _) = open(&d);
            seg.pos = (1 << 20) - 5;
            seg.fill(24, false).unwrap();
            assert_eq!(seg.window(), &expected((1 << 20) - 5, 5)[..]);
        });
    }
}

#[cfg(test)]
mod untrusted {
    use crate::tests::{bounded, small};
    use crate::{Error, Wal};

    #[test]
    fn a_length_read_from_disk_is_capped_before_a_buffer_is_sized_for_it() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            let wal = Wal::open(d.path(), small()).unwrap();
            for i in 0..3u8 {
                wal.append(&[i; 100]).unwrap().wait().unwrap();
            }
            let path = wal.segments()[0].path.clone();
            // Record 2's length field says 100 MiB: more than the segment (64 KiB) and
            // max_record_size (8 KiB); then 9 KiB: within the file, beyond max_record_size
            // (and the longest record recovery found).
            let rec2 = (crate::format::SEGMENT_HEADER_LEN + 124) as u64;
            for len in [100u32 << 20, 9 << 10] {
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &len.to_le_bytes(), rec2).unwrap();
                let mut it = wal.iter_from(1).unwrap();
                assert_eq!(it.next().unwrap().unwrap().payload, [0u8; 100]);
                match it.next() {
                    Some(Err(Error::Corrupted { offset, .. })) => assert_eq!(offset, rec2),
                    other => panic!("{other:?}"),
                }
                // Nothing was sized by the bad length: one read chunk at most.
                let cap = it.seg.as_ref().unwrap().buf.capacity();
                assert!(cap <= super::READ_CHUNK, "{len}: buffer of {cap} bytes");
            }
        });
    }

    #[test]
    fn a_length_within_the_limit_but_past_the_end_of_the_file_is_not_trusted() {
        bounded(|| {
            let d = tempfile::tempdir().unwrap();
            // 1 MiB segments that take records of up to 512 KiB.
            let opts = small().segment_size(1 << 20).max_record_size(512 << 10);
            let wal = Wal::open(d.path(), opts).unwrap();
            // Four records of 200 KiB (each below one read chunk), then a small one.
            const BIG: usize = 200 << 10;
            for i in 0..4u8 {
                wal.append(&vec![i; BIG]).unwrap().wait().unwrap();
            }
            wal.append(b"fifth").unwrap().wait().unwrap();
            let seg = wal.segments()[0].clone();
            let rec5 = (crate::format::SEGMENT_HEADER_LEN
                + 4 * (crate::format::RECORD_HEADER_LEN + BIG)) as u64;
            // Record 5's length field says 300 KiB: within max_record_size and more than a
            // read chunk, but past the end of the (preallocated) file.
            let len = 300u32 << 10;
            assert!(u64::from(len) > seg.file_len - rec5);
            assert!(len as usize > super::READ_CHUNK);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .unwrap();
            std::os::unix::fs::FileExt::write_all_at(&f, &len.to_le_bytes(), rec5).unwrap();
            let mut it = wal.iter_from(1).unwrap();
            for i in 0..4u8 {
                assert_eq!(it.next().unwrap().unwrap().payload, vec![i; BIG]);
            }
            match it.next() {
                Some(Err(Error::Corrupted { offset, .. })) => assert_eq!(offset, rec5),
                other => panic!("{other:?}"),
            }
            // No buffer was sized for the bad length: one read chunk at most.
            let cap = it.seg.as_ref().unwrap().buf.capacity();
            assert!(cap <= super::READ_CHUNK, "buffer of {cap} bytes");
        });
    }

    #[test]
    fn a_record_longer_than_today_s_limit_written_under_a_larger_one_still_reads() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), small().max_record_size(16 << 10)).unwrap();
        wal.append(&[7u8; 12 << 10]).unwrap().wait().unwrap();
        drop(wal);
        let wal = Wal::open(d.path(), small()).unwrap();
        let r = wal.iter_from(1).unwrap().next().unwrap().unwrap();
        assert_eq!(r.payload, vec![7u8; 12 << 10]);
    }
}

#[cfg(test)]
mod seek {
    use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    use crate::index::INDEX_EVERY;
    use crate::tests::small;
    use crate::{Options, Wal};

    const PAYLOAD: usize = 1024 - RECORD_HEADER_LEN;
    /// Records between two index entries, at most (entries fall on record starts).
    const PER_ENTRY: u64 = INDEX_EVERY / 1024 + 1;

    fn payload(lsn: u64) -> Vec<u8> {
        let mut p = vec![(lsn % 251) as u8; PAYLOAD];
        p[..8].copy_from_slice(&lsn.to_le_bytes());
        p
    }

    fn opts() -> Options {
        small().segment_size(8 << 20)
    }

    /// Opens an iterator at `lsn`, checks the records it yields from there and returns
    /// how many records it decoded to reach `lsn`.
    fn decoded_to_reach(wal: &Wal, lsn: u64, last: u64) -> u64 {
        let mut it = wal.iter_from(lsn).unwrap();
        let first = it.next().unwrap().unwrap();
        assert_eq!((first.lsn, first.payload), (lsn, payload(lsn)));
        let decoded = it.decoded;
        // Exactly the records from the index entry at or below `lsn` (or the segment's
        // first record) up to `lsn`.
        let from = {
            let segs = wal.shared.segments.lock().unwrap();
            let i = segs.partition_point(|s| s.first_lsn <= lsn) - 1;
            segs[i].index.seek(lsn).map_or(segs[i].first_lsn, |e| e.0)
        };
        assert_eq!(decoded, lsn - from + 1, "seek to {lsn} from {from}");
        let r = it.next_ref().map(|r| r.unwrap().lsn);
        assert_eq!(r, (lsn < last).then_some(lsn + 1));
        decoded
    }

    #[test]
    fn iter_from_seeks_through_the_sparse_index_written_and_recovered() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), opts()).unwrap();
        // Groups of 100 records (100 KiB), then one group of 2000 (2 MiB): entries come
        // from group starts and from inside a group.
        let mut lsn = 1;
        for _ in 0..10 {
            let ps: Vec<Vec<u8>> = (lsn..lsn + 100).map(payload).collect();
            let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
            wal.append_batch(&refs).unwrap().wait().unwrap();
            lsn += 100;
        }
        let ps: Vec<Vec<u8>> = (lsn..lsn + 2000).map(payload).collect();
        let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
        wal.append_batch(&refs).unwrap().wait().unwrap();
        let last = lsn + 1999;
        let check = |wal: &Wal| {
            for target in [1, 2, 150, 999, 1000, 1001, 1500, 2500, last - 1, last] {
                let decoded = decoded_to_reach(wal, target, last);
                assert!(
                    decoded <= PER_ENTRY + 1,
                    "{decoded} records decoded to reach {target}"
                );
            }
        };
        check(&wal);
        drop(wal);
        // Rebuilt by recovery.
        let wal = Wal::open(d.path(), opts()).unwrap();
        check(&wal);
        let segs = wal.shared.segments.lock().unwrap();
        let entries = segs[0].index.entries();
        // About one entry per INDEX_EVERY bytes of the 3 MiB written.
        let bytes = last * 1024;
        assert!(
            entries.len() as u64 >= bytes / INDEX_EVERY - 2,
            "{}",
            entries.len()
        );
        for &(lsn, off) in entries {
            assert_eq!(off, SEGMENT_HEADER_LEN as u64 + (lsn - 1) * 1024);
        }
    }

    #[test]
    fn next_ref_borrows_the_payload_from_the_read_buffer() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::open(d.path(), opts()).unwrap();
        for lsn in 1..=20 {
            wal.append_kind(lsn as u8, &payload(lsn))
                .unwrap()
                .wait()
                .unwrap();
        }
        let owned: Vec<_> = wal.iter_from(3).unwrap().map(Result::unwrap).collect();
        let mut it = wal.iter_from(3).unwrap();
        let mut n = 0;
        while let Some(r) = it.next_ref() {
            let r = r.unwrap();
            assert_eq!(r.to_record(), owned[n]);
            assert_eq!(r.kind, r.lsn as u8);
            let p = r.payload.as_ptr_range();
            let buf = it.seg.as_ref().unwrap().buf.as_ptr_range();
            assert!(buf.start <= p.start && p.end <= buf.end, "not borrowed");
            n += 1;
        }
        assert_eq!(n, 18);
        // Caught up: resumes after more records are durable.
        wal.append(b"21").unwrap().wait().unwrap();
        let r = it.next_ref().unwrap().unwrap();
        assert_eq!((r.lsn, r.payload), (21, &b"21"[..]));
    }
}

#[cfg(test)]
mod seek_after_rollover {
    use crate::Wal;
    use crate::index::INDEX_EVERY;
    use crate::tests::small;

    #[test]
    fn every_new_segment_is_indexed_from_its_first_bytes_on() {
        let d = tempfile::tempdir().unwrap();
        // 512 KiB segments of 1 KiB records, 50 per group: 4+ segments.
        let wal = Wal::open(d.path(), small().segment_size(512 << 10)).unwrap();
        let rec = vec![9u8; 1000];
        let batch: Vec<&[u8]> = (0..50).map(|_| &rec[..]).collect();
        for _ in 0..40 {
            wal.append_batch(&batch).unwrap().wait().unwrap();
        }
        let segs = wal.segments();
        assert!(segs.len() >= 4, "{}", segs.len());
        for s in &segs[1..] {
            let target = s.first_lsn + 200;
            let mut it = wal.iter_from(target).unwrap();
            assert_eq!(it.next().unwrap().unwrap().lsn, target);
            let most = INDEX_EVERY / 1024 + 1;
            assert!(it.decoded <= most, "{} decoded in {s:?}", it.decoded);
        }
    }
}
