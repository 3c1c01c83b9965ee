//! Record framing: the [`Framing`] trait and the default 24-byte header layout.
//!
//! The default layout is the WAL's record header, byte for byte, so the engine can tail WAL
//! segments through the cache manager unchanged. All integers little-endian:
//!
//! ```text
//! [0..4)   u32 payload length in bytes
//! [4..8)   u32 flags (opaque to the arena)
//! [8..16)  u64 sequence
//! [16..24) u64 checksum: xxh3-64, seed 0, over header bytes [0..16) then the payload
//! [24..)   payload
//! ```

use xxhash_rust::xxh3::{Xxh3, xxh3_64};

/// Bytes in the default record header.
pub const HEADER_LEN: usize = 24;
/// Offset of the u32 payload length.
pub const LEN_OFFSET: usize = 0;
/// Offset of the u32 flags.
pub const FLAGS_OFFSET: usize = 4;
/// Offset of the u64 sequence number.
pub const SEQUENCE_OFFSET: usize = 8;
/// Offset of the u64 checksum; the checksum covers every header byte before it.
pub const CHECKSUM_OFFSET: usize = 16;
/// Largest payload the default framing accepts unless configured otherwise (64 MiB); a
/// header announcing more is treated as corrupt rather than waited for.
pub const DEFAULT_MAX_PAYLOAD: u32 = 64 << 20;

/// How records are laid out in a file: a fixed-size header announcing the payload length,
/// then the payload, with an integrity check over both.
pub trait Framing: Send + Sync + 'static {
    /// Bytes in the fixed-size header.
    fn header_len(&self) -> usize;
    /// The payload length the header announces, or what is wrong with the header.
    fn payload_len(&self, header: &[u8]) -> Result<usize, &'static str>;
    /// True if the header and payload are intact (checksum matches).
    fn verify(&self, header: &[u8], payload: &[u8]) -> bool;
    /// The sequence number the header carries, if the framing has one. A reader told which
    /// sequence to expect ([`TailReader::expect_sequence`](crate::TailReader::expect_sequence))
    /// compares it; the default (no sequence numbers) makes every such record fail.
    fn sequence(&self, header: &[u8]) -> Option<u64> {
        let _ = header;
        None
    }
    /// [`Framing::verify`] on a whole record held in one buffer: `header_len` header bytes,
    /// then the payload. A framing may use the buffer as scratch space to check it faster,
    /// but leaves it as it found it. The default splits it and calls `verify`.
    fn verify_framed(&self, framed: &mut [u8], header_len: usize) -> bool {
        match framed.split_at_checked(header_len) {
            Some((header, payload)) => self.verify(header, payload),
            None => false,
        }
    }
}

/// The default framing (the WAL's 24-byte header), with a cap on payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultFraming {
    max_payload: u32,
}

impl DefaultFraming {
    /// The default framing refusing payloads longer than `max_payload` bytes.
    pub fn with_max_payload(max_payload: u32) -> Self {
        DefaultFraming { max_payload }
    }
}

impl Default for DefaultFraming {
    fn default() -> Self {
        DefaultFraming::with_max_payload(DEFAULT_MAX_PAYLOAD)
    }
}

/// The decoded fields of a default-framing header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Payload length in bytes.
    pub len: u32,
    /// Flags, opaque to the arena.
    pub flags: u32,
    /// Sequence number.
    pub sequence: u64,
    /// Stored checksum.
    pub checksum: u64,
}

impl RecordHeader {
    /// Decodes a header from its 24 bytes (no validation; see [`DefaultFraming::verify`]).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[o..o + 8]);
            u64::from_le_bytes(x)
        };
        RecordHeader {
            len: u32_at(LEN_OFFSET),
            flags: u32_at(FLAGS_OFFSET),
            sequence: u64_at(SEQUENCE_OFFSET),
            checksum: u64_at(CHECKSUM_OFFSET),
        }
    }
}

/// The checksum of a record: xxh3-64 (seed 0) over header bytes `[0..16)` then the payload.
pub fn checksum(header_prefix: &[u8], payload: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(header_prefix);
    h.update(payload);
    h.digest()
}

/// Appends one default-framed record to `out`; `None` if the payload exceeds `u32::MAX`.
pub fn encode_record(flags: u32, sequence: u64, payload: &[u8], out: &mut Vec<u8>) -> Option<()> {
    let len = u32::try_from(payload.len()).ok()?;
    let mut header = [0u8; HEADER_LEN];
    header[LEN_OFFSET..FLAGS_OFFSET].copy_from_slice(&len.to_le_bytes());
    header[FLAGS_OFFSET..SEQUENCE_OFFSET].copy_from_slice(&flags.to_le_bytes());
    header[SEQUENCE_OFFSET..CHECKSUM_OFFSET].copy_from_slice(&sequence.to_le_bytes());
    let sum = checksum(&header[..CHECKSUM_OFFSET], payload);
    header[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    Some(())
}

impl Framing for DefaultFraming {
    fn header_len(&self) -> usize {
        HEADER_LEN
    }

    fn payload_len(&self, header: &[u8]) -> Result<usize, &'static str> {
        let h: &[u8; HEADER_LEN] = header.try_into().map_err(|_| "short header")?;
        let len = RecordHeader::decode(h).len;
        if len > self.max_payload {
            return Err("payload length above the framing's maximum");
        }
        Ok(len as usize)
    }

    fn verify(&self, header: &[u8], payload: &[u8]) -> bool {
        let Ok(h) = <&[u8; HEADER_LEN]>::try_from(header) else {
            return false;
        };
        RecordHeader::decode(h).checksum == checksum(&header[..CHECKSUM_OFFSET], payload)
    }

    fn sequence(&self, header: &[u8]) -> Option<u64> {
        let h: &[u8; HEADER_LEN] = header.try_into().ok()?;
        Some(RecordHeader::decode(h).sequence)
    }

    /// One-shot xxh3 instead of streaming (see `docs/arena-tuning.md`): the checksummed bytes
    /// `[0..16)` are copied over `[8..24)`, next to the payload, hashed as one slice, and
    /// `[8..24)` put back.
    fn verify_framed(&self, framed: &mut [u8], header_len: usize) -> bool {
        const SHIFT: usize = HEADER_LEN - CHECKSUM_OFFSET;
        if header_len != HEADER_LEN || framed.len() < HEADER_LEN {
            return false;
        }
        let mut saved = [0u8; CHECKSUM_OFFSET];
        saved.copy_from_slice(&framed[SHIFT..HEADER_LEN]);
        let stored = u64::from_le_bytes([
            saved[8], saved[9], saved[10], saved[11], saved[12], saved[13], saved[14], saved[15],
        ]);
        framed.copy_within(..CHECKSUM_OFFSET, SHIFT);
        let sum = xxh3_64(&framed[SHIFT..]);
        framed[SHIFT..HEADER_LEN].copy_from_slice(&saved);
        sum == stored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_the_wal_header() {
        let mut out = Vec::new();
        encode_record(0x0102_0304, 0x1122_3344_5566_7788, b"hello", &mut out).unwrap();
        assert_eq!(out.len(), HEADER_LEN + 5);
        assert_eq!(&out[0..4], &5u32.to_le_bytes());
        assert_eq!(&out[4..8], &0x0102_0304u32.to_le_bytes());
        assert_eq!(&out[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        // Streaming xxh3 over header[..16] + payload equals one-shot xxh3 of the concatenation.
        let mut cat = out[..16].to_vec();
        cat.extend_from_slice(b"hello");
        let sum = xxhash_rust::xxh3::xxh3_64(&cat);
        assert_eq!(&out[16..24], &sum.to_le_bytes());
        let h = RecordHeader::decode(out[..24].try_into().unwrap());
        assert_eq!(
            h,
            RecordHeader {
                len: 5,
                flags: 0x0102_0304,
                sequence: 0x1122_3344_5566_7788,
                checksum: sum
            }
        );
        let f = DefaultFraming::default();
        assert_eq!(f.header_len(), 24);
        assert_eq!(f.payload_len(&out[..24]), Ok(5));
        assert!(f.verify(&out[..24], &out[24..]));
    }

    #[test]
    fn every_flipped_bit_fails_verification() {
        let mut out = Vec::new();
        encode_record(7, 9, &[0xAB; 40], &mut out).unwrap();
        let f = DefaultFraming::default();
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(!f.verify(&bad[..24], &bad[24..]), "flip {byte}:{bit}");
            }
        }
        assert!(!f.verify(&out[..23], &out[24..]));
    }

    #[test]
    fn verify_framed_agrees_with_verify_and_leaves_the_buffer_as_it_was() {
        let f = DefaultFraming::default();
        for len in [0usize, 1, 100, 1024, 5000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode_record(3, 0x0102_0304_0506_0708, &payload, &mut out).unwrap();
            let orig = out.clone();
            assert!(f.verify_framed(&mut out, HEADER_LEN), "len {len}");
            assert_eq!(out, orig, "buffer restored (len {len})");
            for byte in [0, 4, 8, 15, 16, 23, 24, out.len() - 1] {
                if byte >= out.len() {
                    continue;
                }
                let mut bad = orig.clone();
                bad[byte] ^= 0x10;
                let expected = f.verify(&bad[..HEADER_LEN], &bad[HEADER_LEN..]);
                let copy = bad.clone();
                assert_eq!(f.verify_framed(&mut bad, HEADER_LEN), expected);
                assert!(!expected, "flip at {byte} (len {len})");
                assert_eq!(bad, copy, "restored after a failed check");
            }
        }
        let mut out = Vec::new();
        encode_record(0, 0, b"abc", &mut out).unwrap();
        assert!(!f.verify_framed(&mut out, HEADER_LEN - 1));
        assert!(!f.verify_framed(&mut out[..HEADER_LEN - 1], HEADER_LEN));
        assert!(f.verify_framed(&mut out[..HEADER_LEN + 3], HEADER_LEN));
    }

    #[test]
    fn the_default_verify_framed_splits_at_the_header() {
        /// A framing whose check is "the header's first byte equals the payload's length".
        struct LenByte;
        impl Framing for LenByte {
            fn header_len(&self) -> usize {
                1
            }
            fn payload_len(&self, header: &[u8]) -> Result<usize, &'static str> {
                Ok(usize::from(header[0]))
            }
            fn verify(&self, header: &[u8], payload: &[u8]) -> bool {
                usize::from(header[0]) == payload.len()
            }
        }
        assert!(LenByte.verify_framed(&mut [2, 9, 9], 1));
        assert!(!LenByte.verify_framed(&mut [2, 9, 9], 2));
        assert!(!LenByte.verify_framed(&mut [2, 9], 1));
        assert!(!LenByte.verify_framed(&mut [0], 2));
    }

    #[test]
    fn payload_cap_and_short_header() {
        let mut out = Vec::new();
        encode_record(0, 0, &[1; 100], &mut out).unwrap();
        assert_eq!(
            DefaultFraming::with_max_payload(100).payload_len(&out[..24]),
            Ok(100)
        );
        assert!(
            DefaultFraming::with_max_payload(99)
                .payload_len(&out[..24])
                .is_err()
        );
        assert!(DefaultFraming::default().payload_len(&out[..23]).is_err());
        assert_eq!(
            DefaultFraming::default(),
            DefaultFraming::with_max_payload(64 << 20)
        );
    }
}
