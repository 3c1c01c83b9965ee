//! The on-disk layout of segments and records: named offsets, little-endian, checksums.
//!
//! Segment file (named `{first_lsn:020}.wal`; a spare kept for reuse is named
//! `{old_first_lsn:020}.spare`):
//!
//! ```text
//! [0..8)   magic  b"VARVEWAL"
//! [8..12)  u32    format version (2; version 1 is read too, its flags must be zero)
//! [12..16) u32    flags: 0x1 RECYCLED (the file held an earlier segment: bytes after the
//!                 last record may be that segment's records, all with LSNs below this
//!                 segment's first LSN); other bits zero
//! [16..24) u64    first LSN of the segment
//! [24..32) u64    xxh3-64 (seed 0) of bytes [0..24)
//! [32..)          records, back to back; after the last one zeros (a fresh segment) or
//!                 stale bytes of the earlier segment (a recycled one)
//! ```
//!
//! Record (24-byte header + payload):
//!
//! ```text
//! [0..4)   u32 payload length
//! [4]      u8  kind (opaque to the WAL)
//! [5]      u8  flags: 0x01 BATCH_CONT (more records of this batch follow),
//!              0x02 EPOCH_START (first record written after a completed sync),
//!              0x04 CLOSE (a close marker: empty, written after the last record by a
//!              clean close, LSN = last LSN + 1; never a record)
//! [6..8)   u16 reserved, zero
//! [8..16)  u64 LSN
//! [16..24) u64 xxh3-64 (seed 0) of header[0..16) followed by the payload
//! ```

use xxhash_rust::xxh3::Xxh3;

/// Magic bytes at the start of every segment.
pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"VARVEWAL";
/// Segment format version this build writes.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Oldest segment format version this build reads (version 1 has no flags).
pub(crate) const OLDEST_READ_VERSION: u32 = 1;
/// Length of the segment header; records start here.
pub(crate) const SEGMENT_HEADER_LEN: usize = 32;

pub(crate) const SEG_MAGIC: std::ops::Range<usize> = 0..8;
pub(crate) const SEG_VERSION: std::ops::Range<usize> = 8..12;
pub(crate) const SEG_FLAGS: std::ops::Range<usize> = 12..16;
/// Segment flag: the file was recycled from an earlier segment.
pub(crate) const SEG_FLAG_RECYCLED: u32 = 0x1;
pub(crate) const SEG_FIRST_LSN: std::ops::Range<usize> = 16..24;
pub(crate) const SEG_CHECKSUM: std::ops::Range<usize> = 24..32;

/// Length of a record header.
pub(crate) const RECORD_HEADER_LEN: usize = 24;

pub(crate) const REC_LEN: std::ops::Range<usize> = 0..4;
pub(crate) const REC_KIND: usize = 4;
pub(crate) const REC_FLAGS: usize = 5;
pub(crate) const REC_RESERVED: std::ops::Range<usize> = 6..8;
pub(crate) const REC_LSN: std::ops::Range<usize> = 8..16;
pub(crate) const REC_CHECKSUM: std::ops::Range<usize> = 16..24;
/// Bytes of the header covered by the checksum (followed by the payload).
pub(crate) const REC_CHECKSUMMED: std::ops::Range<usize> = 0..16;

/// Flag: more records of the same atomic batch follow this one.
pub(crate) const FLAG_BATCH_CONT: u8 = 0x01;
/// Flag: first record written after a completed sync (see recovery rules).
pub(crate) const FLAG_EPOCH_START: u8 = 0x02;
/// Flag: a close marker, not a record: written after the last record by a clean close
/// (payload empty, LSN the one the next record will carry).
pub(crate) const FLAG_CLOSE: u8 = 0x04;
/// Every flag bit this version knows; any other bit makes a record invalid.
pub(crate) const KNOWN_FLAGS: u8 = 0x07;

fn u32_at(buf: &[u8], r: std::ops::Range<usize>) -> Option<u32> {
    buf.get(r)?.try_into().ok().map(u32::from_le_bytes)
}

fn u64_at(buf: &[u8], r: std::ops::Range<usize>) -> Option<u64> {
    buf.get(r)?.try_into().ok().map(u64::from_le_bytes)
}

/// File name of the segment whose first record has `first_lsn`.
pub(crate) fn segment_file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

/// The first LSN encoded in a segment file name, if `name` is one.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    parse_lsn_name(name, ".wal")
}

/// File name of a spare: the segment that started at `old_first_lsn`, kept for reuse.
pub(crate) fn spare_file_name(old_first_lsn: u64) -> String {
    format!("{old_first_lsn:020}.spare")
}

/// The LSN in a spare's file name, if `name` is one.
pub(crate) fn parse_spare_file_name(name: &str) -> Option<u64> {
    parse_lsn_name(name, ".spare")
}

fn parse_lsn_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub(crate) first_lsn: u64,
    /// The file held an earlier segment (flag [`SEG_FLAG_RECYCLED`]).
    pub(crate) recycled: bool,
}

/// Encodes a segment header.
pub(crate) fn encode_segment_header(first_lsn: u64, recycled: bool) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[SEG_MAGIC].copy_from_slice(&SEGMENT_MAGIC);
    h[SEG_VERSION].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let flags = if recycled { SEG_FLAG_RECYCLED } else { 0 };
    h[SEG_FLAGS].copy_from_slice(&flags.to_le_bytes());
    h[SEG_FIRST_LSN].copy_from_slice(&first_lsn.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..SEG_CHECKSUM.start]);
    h[SEG_CHECKSUM].copy_from_slice(&sum.to_le_bytes());
    h
}

/// Why a segment header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Shorter than a header.
    Short,
    /// Not a Varve WAL segment.
    BadMagic,
    /// Checksum mismatch or a flag this version does not define.
    Corrupt,
    /// A valid header of a format version this build does not read.
    Version(u32),
}

/// Decodes a segment header.
pub(crate) fn decode_segment_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let h = buf.get(..SEGMENT_HEADER_LEN).ok_or(HeaderError::Short)?;
    if h.get(SEG_MAGIC) != Some(&SEGMENT_MAGIC[..]) {
        return Err(HeaderError::BadMagic);
    }
    let stored = u64_at(h, SEG_CHECKSUM).ok_or(HeaderError::Short)?;
    if xxhash_rust::xxh3::xxh3_64(&h[..SEG_CHECKSUM.start]) != stored {
        return Err(HeaderError::Corrupt);
    }
    let version = u32_at(h, SEG_VERSION).ok_or(HeaderError::Short)?;
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    let flags = u32_at(h, SEG_FLAGS).ok_or(HeaderError::Short)?;
    // Version 1 reserved these bits as zero.
    let known = if version == 1 { 0 } else { SEG_FLAG_RECYCLED };
    if flags & !known != 0 {
        return Err(HeaderError::Corrupt);
    }
    Ok(SegmentHeader {
        first_lsn: u64_at(h, SEG_FIRST_LSN).ok_or(HeaderError::Short)?,
        recycled: flags & SEG_FLAG_RECYCLED != 0,
    })
}

/// Writes a record header with LSN and checksum left zero (the sequencer fills them).
pub(crate) fn put_unsequenced_header(out: &mut Vec<u8>, len: u32, kind: u8, flags: u8) {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[REC_LEN].copy_from_slice(&len.to_le_bytes());
    h[REC_KIND] = kind;
    h[REC_FLAGS] = flags;
    out.extend_from_slice(&h);
}

/// Checksum of a record: header bytes [0..16) then the payload.
pub(crate) fn record_checksum(header16: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(header16);
    h.update(payload);
    h.digest()
}

/// Sequences the framed record starting at `frame[0]`: stores `lsn`, ORs `extra_flags` into
/// the flags and computes the checksum. Returns the framed length (header + payload), or
/// `None` if `frame` does not hold a whole record (never the case for frames this crate built).
pub(crate) fn seal_record(frame: &mut [u8], lsn: u64, extra_flags: u8) -> Option<usize> {
    let len = u32_at(frame, REC_LEN)? as usize;
    let total = RECORD_HEADER_LEN.checked_add(len)?;
    if frame.len() < total {
        return None;
    }
    frame[REC_FLAGS] |= extra_flags;
    frame[REC_LSN].copy_from_slice(&lsn.to_le_bytes());
    let (header, payload) = frame.split_at_mut(RECORD_HEADER_LEN);
    let sum = record_checksum(&header[REC_CHECKSUMMED], &payload[..len]);
    header[REC_CHECKSUM].copy_from_slice(&sum.to_le_bytes());
    Some(total)
}

/// The close marker a clean close writes after the last record: a record header with
/// flag [`FLAG_CLOSE`], an empty payload and `next_lsn` (the last LSN + 1).
pub(crate) fn close_marker(next_lsn: u64) -> [u8; RECORD_HEADER_LEN] {
    let mut m = [0u8; RECORD_HEADER_LEN];
    m[REC_FLAGS] = FLAG_CLOSE;
    // Always `Some`: `m` is one whole record with an empty payload.
    let _ = seal_record(&mut m, next_lsn, 0);
    m
}

/// Whether `h` (a verified record header) is a close marker: flag [`FLAG_CLOSE`] with an
/// empty payload and no other flag. Anything else carrying `FLAG_CLOSE` is invalid.
pub(crate) fn is_close_marker(h: &RecordHeader) -> bool {
    h.flags == FLAG_CLOSE && h.len == 0
}

/// A decoded record header that passed its structural checks (not yet the checksum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) flags: u8,
    pub(crate) lsn: u64,
    pub(crate) checksum: u64,
}

impl RecordHeader {
    /// Framed length (header + payload).
    pub(crate) fn framed_len(&self) -> usize {
        RECORD_HEADER_LEN + self.len as usize
    }
}

/// Decodes a record header; `None` if it is short, has unknown flags or a non-zero
/// reserved field. The checksum is checked by [`verify_record`].
pub(crate) fn decode_record_header(buf: &[u8]) -> Option<RecordHeader> {
    let h = buf.get(..RECORD_HEADER_LEN)?;
    let flags = *h.get(REC_FLAGS)?;
    if flags & !KNOWN_FLAGS != 0 || h.get(REC_RESERVED)? != [0, 0] {
        return None;
    }
    Some(RecordHeader {
        len: u32_at(h, REC_LEN)?,
        kind: *h.get(REC_KIND)?,
        flags,
        lsn: u64_at(h, REC_LSN)?,
        checksum: u64_at(h, REC_CHECKSUM)?,
    })
}

/// Parses and verifies the record at the start of `buf`: structure, LSN range and
/// checksum. Returns the header if the whole record is in `buf` and valid.
pub(crate) fn verify_record(
    buf: &[u8],
    max_len: usize,
    lsn_ok: impl FnOnce(u64) -> bool,
) -> Option<RecordHeader> {
    let h = decode_record_header(buf)?;
    if h.len as usize > max_len || !lsn_ok(h.lsn) {
        return None;
    }
    let payload = buf.get(RECORD_HEADER_LEN..h.framed_len())?;
    let sum = record_checksum(buf.get(REC_CHECKSUMMED)?, payload);
    (sum == h.checksum).then_some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8], kind: u8, flags: u8, lsn: u64) -> Vec<u8> {
        let mut v = Vec::new();
        put_unsequenced_header(&mut v, payload.len() as u32, kind, flags);
        v.extend_from_slice(payload);
        assert_eq!(seal_record(&mut v, lsn, 0), Some(v.len()));
        v
    }

    #[test]
    fn record_layout_is_the_fixed_one() {
        let v = framed(b"hello", 7, FLAG_BATCH_CONT, 0x0102_0304_0506_0708);
        assert_eq!(v.len(), 24 + 5);
        assert_eq!(&v[0..4], &5u32.to_le_bytes());
        assert_eq!(v[4], 7);
        assert_eq!(v[5], FLAG_BATCH_CONT);
        assert_eq!(&v[6..8], &[0, 0]);
        assert_eq!(&v[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        let mut h = Xxh3::new();
        h.update(&v[0..16]);
        h.update(b"hello");
        assert_eq!(&v[16..24], &h.digest().to_le_bytes());
        let got = verify_record(&v, 100, |l| l == 0x0102_0304_0506_0708).unwrap();
        assert_eq!((got.len, got.kind, got.flags), (5, 7, FLAG_BATCH_CONT));
    }

    #[test]
    fn known_flags_are_exactly_the_defined_ones() {
        assert_eq!(KNOWN_FLAGS, FLAG_BATCH_CONT | FLAG_EPOCH_START | FLAG_CLOSE);
        let mut v = Vec::new();
        put_unsequenced_header(&mut v, 0, 0, 0x08);
        seal_record(&mut v, 1, 0).unwrap();
        assert!(
            verify_record(&v, 10, |_| true).is_none(),
            "unknown flag refused"
        );
        let mut v = Vec::new();
        put_unsequenced_header(&mut v, 0, 0, FLAG_BATCH_CONT);
        seal_record(&mut v, 1, FLAG_EPOCH_START).unwrap();
        let h = verify_record(&v, 10, |_| true).unwrap();
        assert_eq!(h.flags, FLAG_BATCH_CONT | FLAG_EPOCH_START);
        v[REC_RESERVED.start] = 1;
        assert!(decode_record_header(&v).is_none(), "reserved must be zero");
    }

    #[test]
    fn a_close_marker_is_an_empty_sealed_header_flagged_close() {
        let m = close_marker(0x0102_0304_0506_0708);
        let h = verify_record(&m, 0, |l| l == 0x0102_0304_0506_0708).unwrap();
        assert_eq!((h.len, h.kind, h.flags), (0, 0, FLAG_CLOSE));
        assert!(is_close_marker(&h));
        assert_eq!(&m[0..8], &[0, 0, 0, 0, 0, FLAG_CLOSE, 0, 0]);
        // A record flagged CLOSE with a payload or another flag is no marker.
        let mut v = Vec::new();
        put_unsequenced_header(&mut v, 1, 0, FLAG_CLOSE);
        v.push(9);
        seal_record(&mut v, 5, 0).unwrap();
        assert!(!is_close_marker(&verify_record(&v, 10, |_| true).unwrap()));
        let mut v = Vec::new();
        put_unsequenced_header(&mut v, 0, 0, FLAG_CLOSE);
        seal_record(&mut v, 5, FLAG_EPOCH_START).unwrap();
        assert!(!is_close_marker(&verify_record(&v, 10, |_| true).unwrap()));
    }

    #[test]
    fn zeros_never_validate() {
        assert_ne!(record_checksum(&[0u8; 16], &[]), 0);
        assert!(verify_record(&[0u8; 64], 100, |_| true).is_none());
    }

    #[test]
    fn any_flipped_byte_invalidates_a_record() {
        let v = framed(b"payload bytes", 1, 0, 42);
        for i in 0..v.len() {
            let mut w = v.clone();
            w[i] ^= 0x10;
            assert!(verify_record(&w, 100, |l| l == 42).is_none(), "byte {i}");
        }
        assert!(
            verify_record(&v, 12, |_| true).is_none(),
            "max_len enforced"
        );
        assert!(
            verify_record(&v, 13, |_| true).is_some(),
            "max_len is inclusive"
        );
        assert!(
            verify_record(&v, 100, |l| l == 41).is_none(),
            "lsn check used"
        );
        assert!(verify_record(&v[..v.len() - 1], 100, |_| true).is_none());
    }

    /// `h` with `version` and `flags` stored and the checksum recomputed.
    fn with(h: [u8; SEGMENT_HEADER_LEN], version: u32, flags: u32) -> [u8; SEGMENT_HEADER_LEN] {
        let mut h = h;
        h[SEG_VERSION].copy_from_slice(&version.to_le_bytes());
        h[SEG_FLAGS].copy_from_slice(&flags.to_le_bytes());
        let sum = xxhash_rust::xxh3::xxh3_64(&h[..24]);
        h[SEG_CHECKSUM].copy_from_slice(&sum.to_le_bytes());
        h
    }

    #[test]
    fn segment_header_round_trips_and_rejects() {
        let h = encode_segment_header(77, false);
        assert_eq!(&h[0..8], b"VARVEWAL");
        assert_eq!(&h[8..12], &2u32.to_le_bytes());
        assert_eq!(&h[12..16], &[0; 4]);
        let fresh = SegmentHeader {
            first_lsn: 77,
            recycled: false,
        };
        assert_eq!(decode_segment_header(&h), Ok(fresh));
        let r = encode_segment_header(77, true);
        assert_eq!(&r[12..16], &1u32.to_le_bytes());
        assert_eq!(
            decode_segment_header(&r),
            Ok(SegmentHeader {
                recycled: true,
                ..fresh
            })
        );
        let mut bad = h;
        bad[0] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::BadMagic));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(decode_segment_header(&bad), Err(HeaderError::Corrupt));
        // Version 1 (no flags) is read; its flag bits must be zero.
        assert_eq!(decode_segment_header(&with(h, 1, 0)), Ok(fresh));
        assert_eq!(
            decode_segment_header(&with(h, 1, 1)),
            Err(HeaderError::Corrupt)
        );
        // Unknown flags and versions are refused.
        assert_eq!(
            decode_segment_header(&with(h, 2, 2)),
            Err(HeaderError::Corrupt)
        );
        assert_eq!(
            decode_segment_header(&with(h, 2, 3)),
            Err(HeaderError::Corrupt)
        );
        assert_eq!(
            decode_segment_header(&with(h, 3, 0)),
            Err(HeaderError::Version(3))
        );
        assert_eq!(
            decode_segment_header(&with(h, 0, 0)),
            Err(HeaderError::Version(0))
        );
        assert_eq!(decode_segment_header(&h[..31]), Err(HeaderError::Short));
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(1), "00000000000000000001.wal");
        assert_eq!(parse_segment_file_name(&segment_file_name(123)), Some(123));
        assert_eq!(parse_segment_file_name("123.wal"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000a.wal"), None);
        assert_eq!(parse_segment_file_name("00000000000000000001.tmp"), None);
        assert_eq!(spare_file_name(9), "00000000000000000009.spare");
        assert_eq!(parse_spare_file_name(&spare_file_name(9)), Some(9));
        assert_eq!(parse_spare_file_name(&segment_file_name(9)), None);
        assert_eq!(parse_segment_file_name(&spare_file_name(9)), None);
        assert_eq!(parse_spare_file_name("9.spare"), None);
    }
}
