//! Reading durable records back, across segments, for recovery consumers and tailers.

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format;
use crate::{Lsn, Shared, lock};

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
        }
    }

    /// The LSN the next yielded record will carry.
    pub fn next_lsn(&self) -> Lsn {
        self.next_lsn.max(self.start)
    }

    /// Opens the segment holding `self.next_lsn` (positioned at its first record).
    fn open_segment(&mut self) -> Result<()> {
        let (meta, next_first, first_kept) = {
            let segs = lock(&self.shared.segments);
            let idx = segs.partition_point(|s| s.first_lsn <= self.next_lsn);
            let first_kept = segs.first().map_or(1, |s| s.first_lsn);
            let meta = idx.checked_sub(1).and_then(|i| segs.get(i)).cloned();
            (meta, segs.get(idx).map(|s| s.first_lsn), first_kept)
        };
        let truncated = Error::Truncated {
            requested: self.next_lsn,
            first: first_kept,
        };
        let Some(meta) = meta else {
            return Err(truncated);
        };
        let file = match File::open(&meta.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(truncated),
            Err(e) => return Err(e.into()),
        };
        let file_len = file.metadata()?.len();
        let mut seg = OpenSegment {
            file,
            path: meta.path,
            first_lsn: meta.first_lsn,
            next_first,
            file_len,
            buf: Vec::new(),
            buf_start: 0,
            pos: 0,
        };
        seg.fill(format::SEGMENT_HEADER_LEN, true)?;
        let first = format::decode_segment_header(seg.window()).map(|h| h.first_lsn);
        if first != Ok(meta.first_lsn) {
            return Err(self
                .truncated_since(meta.first_lsn)
                .unwrap_or(Error::Corrupted {
                    segment: seg.path,
                    offset: 0,
                    what: "segment header changed or damaged while reading",
                }));
        }
        seg.pos = format::SEGMENT_HEADER_LEN as u64;
        // Records before next_lsn in this segment are skipped by `next`.
        self.next_lsn = meta.first_lsn;
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

    fn read_one(&mut self) -> Result<Option<Record>> {
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
                let payload = seg
                    .window()
                    .get(format::RECORD_HEADER_LEN..h.framed_len())
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                seg.pos += h.framed_len() as u64;
                self.next_lsn += 1;
                return Ok(Some(Record {
                    lsn,
                    kind: h.kind,
                    payload,
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
        if self.failed {
            return None;
        }
        loop {
            match self.read_one() {
                Ok(Some(r)) if r.lsn < self.start => continue,
                Ok(r) => return r.map(Ok),
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
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
