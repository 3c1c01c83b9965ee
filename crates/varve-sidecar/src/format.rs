//! Byte layouts of the records this crate keeps in `blobs.mdb` (see `docs/format.md`).
//!
//! All integers little-endian at the named offsets below. Three LMDB databases:
//! - `meta`: key `b"format"` -> [`FormatRecord`] (magic, version, checksum);
//! - `blobs`: key = 32-byte SHA-256 -> blob record (fixed header, the digest table of
//!   version 2, then the content; see [`BlobHeader`]);
//! - `refs`: key = 32-byte SHA-256 -> [`RefRecord`] (reference count, content length,
//!   checksum). Counts live apart from the blob so a dedup hit rewrites 24 bytes, not the
//!   blob's overflow pages.

use sha2::{Digest as _, Sha256};
use xxhash_rust::xxh3::{Xxh3, xxh3_64};

use crate::payload::BlobHash;

/// Format version this build writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The older format version this build still reads (blob records without chunk digests);
/// opening such a store rewrites its format record to [`FORMAT_VERSION`].
pub(crate) const FORMAT_VERSION_V1: u32 = 1;

/// Key of the format record in the `meta` database.
pub(crate) const FORMAT_KEY: &[u8] = b"format";
/// Magic at the start of the format record.
pub(crate) const FORMAT_MAGIC: [u8; 8] = *b"VARVSIDE";
/// Format record: magic (8), version u32 (4), xxh3 of bytes 0..12, low 32 bits (4).
pub(crate) const FORMAT_RECORD_LEN: usize = 16;
const FMT_VERSION_AT: usize = 8;
const FMT_CHECK_AT: usize = 12;

/// Fixed part of a version-1 blob header: magic (4), version u16 (2), flags u16 (2),
/// content length u64 (8), xxh3_64 of (SHA-256 key ++ header bytes 0..16) (8). The content
/// follows. Written by format version 1; still read.
pub(crate) const BLOB_HEADER_V1_LEN: usize = 24;
/// Fixed part of a version-2 blob header: magic (4), version u16 (2), flags u16 (2),
/// content length u64 (8), digest chunk size u32 (4), reserved u32 = 0 (4), xxh3_64 of
/// (SHA-256 key ++ header bytes 0..24 ++ digest table) (8). The digest table follows (16
/// bytes per chunk), then the content.
pub(crate) const BLOB_HEADER_LEN: usize = 32;
/// Magic at the start of every blob record.
pub(crate) const BLOB_MAGIC: [u8; 4] = *b"VBLB";
const BH_VERSION_AT: usize = 4;
const BH_FLAGS_AT: usize = 6;
const BH_LEN_AT: usize = 8;
const BH_V1_CHECK_AT: usize = 16;
const BH_CHUNK_AT: usize = 16;
const BH_RESERVED_AT: usize = 20;
const BH_CHECK_AT: usize = 24;
/// Blob record version with per-chunk digests (written by this build).
pub(crate) const BLOB_VERSION: u16 = 2;
/// Blob record version without chunk digests (format version 1; read only).
pub(crate) const BLOB_VERSION_V1: u16 = 1;
/// Size of one chunk digest in the table (xxh3-128, little-endian).
pub(crate) const DIGEST_LEN: usize = 16;
/// Content chunk size this build writes digests for.
pub(crate) const DIGEST_CHUNK: u64 = 1 << 20;
/// Smallest and largest digest chunk size a record may declare (a power of two).
const MIN_DIGEST_CHUNK: u64 = 4 << 10;
const MAX_DIGEST_CHUNK: u64 = 64 << 20;

/// The digest of one content chunk.
pub(crate) fn chunk_digest(chunk: &[u8]) -> u128 {
    crate::digest::xxh3_128_of(chunk)
}

/// Where things lie in a blob record, from its (checked) fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlobHeader {
    /// Record version: [`BLOB_VERSION_V1`] (no digests) or [`BLOB_VERSION`].
    pub(crate) version: u16,
    /// Content length in bytes.
    pub(crate) len: u64,
    /// Digest chunk size (version 2); 0 for version 1.
    pub(crate) chunk: u64,
    /// Offset of the content in the record (header, then the digest table).
    pub(crate) content_at: u64,
}

impl BlobHeader {
    /// Number of content chunks (and digests).
    pub(crate) fn chunks(&self) -> u64 {
        if self.chunk == 0 {
            0
        } else {
            self.len.div_ceil(self.chunk)
        }
    }

    /// The address of `content` (its SHA-256) and the record bytes in front of it: the
    /// version-2 header and the digest table, one xxh3-128 per [`DIGEST_CHUNK`] of content.
    /// One pass over `content`, chunk by chunk (each chunk is hashed both ways while it is
    /// in the CPU cache).
    pub(crate) fn encode(content: &[u8]) -> (BlobHash, Vec<u8>) {
        BlobHeader::encode_chunked(content, DIGEST_CHUNK)
    }

    /// [`BlobHeader::encode`] with digests of `chunk`-byte chunks (a valid chunk size).
    pub(crate) fn encode_chunked(content: &[u8], chunk: u64) -> (BlobHash, Vec<u8>) {
        let chunks = content.len().div_ceil(chunk as usize);
        let mut b = Vec::with_capacity(BLOB_HEADER_LEN + chunks * DIGEST_LEN);
        b.extend_from_slice(&BLOB_MAGIC);
        b.extend_from_slice(&BLOB_VERSION.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(&(content.len() as u64).to_le_bytes());
        b.extend_from_slice(&(chunk as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 8]);
        let mut sha = Sha256::new();
        for c in content.chunks(chunk as usize) {
            sha.update(c);
            b.extend_from_slice(&chunk_digest(c).to_le_bytes());
        }
        let key = BlobHash(sha.finalize().into());
        let check = table_check(&key, &b[..BH_CHECK_AT], &b[BLOB_HEADER_LEN..]);
        b[BH_CHECK_AT..BLOB_HEADER_LEN].copy_from_slice(&check.to_le_bytes());
        (key, b)
    }

    /// A version-1 header (no digests), as format version 1 wrote it: for tests of the
    /// legacy read path.
    #[cfg(test)]
    pub(crate) fn encode_v1(key: &BlobHash, len: u64) -> [u8; BLOB_HEADER_V1_LEN] {
        let mut b = [0u8; BLOB_HEADER_V1_LEN];
        b[..4].copy_from_slice(&BLOB_MAGIC);
        b[BH_VERSION_AT..BH_VERSION_AT + 2].copy_from_slice(&BLOB_VERSION_V1.to_le_bytes());
        b[BH_LEN_AT..BH_LEN_AT + 8].copy_from_slice(&len.to_le_bytes());
        let check = keyed_check(key, &b[..BH_V1_CHECK_AT]);
        b[BH_V1_CHECK_AT..].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Checks a whole record (header, digest table and content as one slice) against
    /// `key`: the header and the table's check, not the content.
    pub(crate) fn decode(key: &BlobHash, record: &[u8]) -> Result<BlobHeader, &'static str> {
        let h = BlobHeader::decode_parts(key, record, record.len() as u64)?;
        if h.version == BLOB_VERSION {
            let table = record
                .get(BLOB_HEADER_LEN..h.content_at as usize)
                .ok_or("blob record shorter than its digest table")?;
            h.check_table(key, record, table)?;
        }
        Ok(h)
    }

    /// Checks the fixed header at the start of `h` (the first bytes of a record of
    /// `record_len` bytes, read apart from the rest) against `key` and that length. A
    /// version-1 header is fully checked here; a version-2 header's check covers its digest
    /// table too, so the caller must also call [`BlobHeader::check_table`] before it uses a
    /// digest.
    pub(crate) fn decode_parts(
        key: &BlobHash,
        h: &[u8],
        record_len: u64,
    ) -> Result<BlobHeader, &'static str> {
        if h.get(..4).ok_or("blob record shorter than its header")? != BLOB_MAGIC {
            return Err("blob header has the wrong magic");
        }
        let version = le_u16(h, BH_VERSION_AT).ok_or("blob record shorter than its header")?;
        match version {
            BLOB_VERSION_V1 => {
                let h = h
                    .get(..BLOB_HEADER_V1_LEN)
                    .ok_or("blob record shorter than its header")?;
                let check = le_u64(h, BH_V1_CHECK_AT).ok_or("blob header truncated")?;
                if check != keyed_check(key, &h[..BH_V1_CHECK_AT]) {
                    return Err("blob header checksum mismatch");
                }
                if le_u16(h, BH_FLAGS_AT) != Some(0) {
                    return Err("blob header has unknown flags");
                }
                let len = le_u64(h, BH_LEN_AT).ok_or("blob header truncated")?;
                if record_len.checked_sub(BLOB_HEADER_V1_LEN as u64) != Some(len) {
                    return Err("blob record length differs from its header");
                }
                Ok(BlobHeader {
                    version,
                    len,
                    chunk: 0,
                    content_at: BLOB_HEADER_V1_LEN as u64,
                })
            }
            BLOB_VERSION => {
                let h = h
                    .get(..BLOB_HEADER_LEN)
                    .ok_or("blob record shorter than its header")?;
                if le_u16(h, BH_FLAGS_AT) != Some(0) || le_u32(h, BH_RESERVED_AT) != Some(0) {
                    return Err("blob header has unknown flags");
                }
                let len = le_u64(h, BH_LEN_AT).ok_or("blob header truncated")?;
                let chunk = u64::from(le_u32(h, BH_CHUNK_AT).ok_or("blob header truncated")?);
                if !chunk.is_power_of_two()
                    || !(MIN_DIGEST_CHUNK..=MAX_DIGEST_CHUNK).contains(&chunk)
                {
                    return Err("blob header has an invalid digest chunk size");
                }
                let content_at = len.div_ceil(chunk) * DIGEST_LEN as u64 + BLOB_HEADER_LEN as u64;
                if content_at.checked_add(len) != Some(record_len) {
                    return Err("blob record length differs from its header");
                }
                Ok(BlobHeader {
                    version,
                    len,
                    chunk,
                    content_at,
                })
            }
            _ => Err("blob header has an unknown version"),
        }
    }

    /// Checks a version-2 header's check over its fixed part `h` and digest `table`.
    pub(crate) fn check_table(
        &self,
        key: &BlobHash,
        h: &[u8],
        table: &[u8],
    ) -> Result<(), &'static str> {
        let fixed = h.get(..BLOB_HEADER_LEN).ok_or("blob header truncated")?;
        if table.len() as u64 != self.chunks() * DIGEST_LEN as u64 {
            return Err("blob digest table has the wrong length");
        }
        let check = le_u64(fixed, BH_CHECK_AT).ok_or("blob header truncated")?;
        if check != table_check(key, &fixed[..BH_CHECK_AT], table) {
            return Err("blob header checksum mismatch");
        }
        Ok(())
    }
}

/// Digest `i` of a (checked) digest table.
pub(crate) fn table_digest(table: &[u8], i: u64) -> Option<u128> {
    let at = usize::try_from(i).ok()?.checked_mul(DIGEST_LEN)?;
    Some(u128::from_le_bytes(
        table.get(at..at + DIGEST_LEN)?.try_into().ok()?,
    ))
}

fn table_check(key: &BlobHash, fixed: &[u8], table: &[u8]) -> u64 {
    let mut x = Xxh3::new();
    x.update(&key.0);
    x.update(fixed);
    x.update(table);
    x.digest()
}

/// Refcount record: count u64 (8), content length u64 (8), xxh3_64 of (key ++ bytes 0..16).
pub(crate) const REF_RECORD_LEN: usize = 24;
const REF_LEN_AT: usize = 8;
const REF_CHECK_AT: usize = 16;

/// Size of LMDB's page header (`PAGEHDRSZ`) in front of a value on an overflow run:
/// `mp_pgno` u64 (0..8), `mp_pad` u16 (8..10), `mp_flags` u16 (10..12), `mp_pages` u32
/// (12..16), all in host byte order (LMDB files are not portable across endianness).
pub(crate) const LMDB_PAGE_HEADER: usize = 16;
/// `P_OVERFLOW` in `mp_flags`.
const P_OVERFLOW: u16 = 0x04;

/// Checks that `h`, read from the file at page `pgno`, is the header of an LMDB overflow run
/// that holds a value of `value_len` bytes.
pub(crate) fn check_overflow_header(
    h: &[u8],
    pgno: u64,
    page_size: u64,
    value_len: u64,
) -> Result<(), &'static str> {
    let ne64 = |at: usize| Some(u64::from_ne_bytes(h.get(at..at + 8)?.try_into().ok()?));
    let ne16 = |at: usize| Some(u16::from_ne_bytes(h.get(at..at + 2)?.try_into().ok()?));
    let ne32 = |at: usize| Some(u32::from_ne_bytes(h.get(at..at + 4)?.try_into().ok()?));
    if ne64(0) != Some(pgno) {
        return Err("LMDB page header at the value's file offset names another page");
    }
    if ne16(10).is_none_or(|f| f & P_OVERFLOW == 0) {
        return Err("LMDB page at the value's file offset is not an overflow page");
    }
    let pages = ne32(12).ok_or("LMDB page header truncated")?;
    if u64::from(pages) * page_size < LMDB_PAGE_HEADER as u64 + value_len {
        return Err("LMDB overflow run shorter than the value");
    }
    Ok(())
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}
fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn le_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn keyed_check(key: &BlobHash, fields: &[u8]) -> u64 {
    let mut buf = [0u8; 48]; // 32-byte key, then at most 16 bytes of fields
    buf[..32].copy_from_slice(&key.0);
    buf[32..32 + fields.len()].copy_from_slice(fields);
    xxh3_64(&buf[..32 + fields.len()])
}

/// The store-wide format record.
pub(crate) struct FormatRecord;

impl FormatRecord {
    /// The record this build writes.
    pub(crate) fn encode() -> [u8; FORMAT_RECORD_LEN] {
        let mut b = [0u8; FORMAT_RECORD_LEN];
        b[..8].copy_from_slice(&FORMAT_MAGIC);
        b[FMT_VERSION_AT..FMT_VERSION_AT + 4].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let check = xxh3_64(&b[..FMT_CHECK_AT]) as u32;
        b[FMT_CHECK_AT..].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Checks a stored record; returns its version.
    pub(crate) fn decode(b: &[u8]) -> Result<u32, &'static str> {
        if b.len() != FORMAT_RECORD_LEN {
            return Err("format record has the wrong length");
        }
        let check = le_u32(b, FMT_CHECK_AT).ok_or("format record truncated")?;
        if check != xxh3_64(&b[..FMT_CHECK_AT]) as u32 {
            return Err("format record checksum mismatch");
        }
        if b[..8] != FORMAT_MAGIC {
            return Err("format record has the wrong magic");
        }
        le_u32(b, FMT_VERSION_AT).ok_or("format record truncated")
    }
}

/// A blob's reference count and content length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RefRecord {
    /// Number of references (at least 1 while the record exists).
    pub(crate) count: u64,
    /// Content length in bytes.
    pub(crate) len: u64,
}

impl RefRecord {
    /// Encodes the record stored under `key`.
    pub(crate) fn encode(&self, key: &BlobHash) -> [u8; REF_RECORD_LEN] {
        let mut b = [0u8; REF_RECORD_LEN];
        b[..8].copy_from_slice(&self.count.to_le_bytes());
        b[REF_LEN_AT..REF_LEN_AT + 8].copy_from_slice(&self.len.to_le_bytes());
        let check = keyed_check(key, &b[..REF_CHECK_AT]);
        b[REF_CHECK_AT..].copy_from_slice(&check.to_le_bytes());
        b
    }

    /// Checks and decodes the record stored under `key`.
    pub(crate) fn decode(key: &BlobHash, b: &[u8]) -> Result<RefRecord, &'static str> {
        if b.len() != REF_RECORD_LEN {
            return Err("refcount record has the wrong length");
        }
        let check = le_u64(b, REF_CHECK_AT).ok_or("refcount record truncated")?;
        if check != keyed_check(key, &b[..REF_CHECK_AT]) {
            return Err("refcount record checksum mismatch");
        }
        let count = le_u64(b, 0).ok_or("refcount record truncated")?;
        let len = le_u64(b, REF_LEN_AT).ok_or("refcount record truncated")?;
        if count == 0 {
            return Err("refcount record with a zero count");
        }
        Ok(RefRecord { count, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_record_round_trip_and_damage() {
        let b = FormatRecord::encode();
        assert_eq!(&b[..8], b"VARVSIDE");
        assert_eq!(FormatRecord::decode(&b), Ok(FORMAT_VERSION));
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x01;
            assert!(FormatRecord::decode(&d).is_err(), "flip at {i}");
        }
        assert!(FormatRecord::decode(&b[..15]).is_err());
        // A future version with a valid checksum decodes to its version number.
        let mut f = b;
        f[8..12].copy_from_slice(&7u32.to_le_bytes());
        let c = xxh3_64(&f[..12]) as u32;
        f[12..].copy_from_slice(&c.to_le_bytes());
        assert_eq!(FormatRecord::decode(&f), Ok(7));
        // Wrong magic with a valid checksum.
        let mut m = b;
        m[0] = b'X';
        let c = xxh3_64(&m[..12]) as u32;
        m[12..].copy_from_slice(&c.to_le_bytes());
        assert_eq!(
            FormatRecord::decode(&m),
            Err("format record has the wrong magic")
        );
    }

    #[test]
    fn blob_header_v1_round_trip_and_damage() {
        let key = BlobHash([3; 32]);
        let mut rec = BlobHeader::encode_v1(&key, 5).to_vec();
        rec.extend_from_slice(b"hello");
        let want = BlobHeader {
            version: 1,
            len: 5,
            chunk: 0,
            content_at: 24,
        };
        assert_eq!(BlobHeader::decode(&key, &rec), Ok(want));
        assert_eq!(want.chunks(), 0);
        assert_eq!(&rec[..4], b"VBLB");
        assert_eq!(&rec[8..16], &5u64.to_le_bytes());
        for i in 0..BLOB_HEADER_V1_LEN {
            let mut d = rec.clone();
            d[i] ^= 0x80;
            assert!(BlobHeader::decode(&key, &d).is_err(), "flip at {i}");
        }
        assert!(BlobHeader::decode(&BlobHash([4; 32]), &rec).is_err());
        assert!(BlobHeader::decode(&key, &rec[..rec.len() - 1]).is_err());
        assert!(BlobHeader::decode(&key, &rec[..10]).is_err());
        let mut longer = rec.clone();
        longer.push(0);
        assert!(BlobHeader::decode(&key, &longer).is_err());
    }

    #[test]
    fn blob_header_v2_round_trip_and_damage() {
        let len = 2 * DIGEST_CHUNK as usize + 3;
        let content: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        let (key, mut rec) = BlobHeader::encode(&content);
        assert_eq!(key, BlobHash::of(&content));
        assert_eq!(rec.len(), BLOB_HEADER_LEN + 3 * DIGEST_LEN);
        rec.extend_from_slice(&content);
        let h = BlobHeader::decode(&key, &rec).unwrap();
        assert_eq!(
            h,
            BlobHeader {
                version: 2,
                len: len as u64,
                chunk: DIGEST_CHUNK,
                content_at: (BLOB_HEADER_LEN + 3 * DIGEST_LEN) as u64,
            }
        );
        assert_eq!(h.chunks(), 3);
        assert_eq!(&rec[..4], b"VBLB");
        assert_eq!(&rec[4..6], &2u16.to_le_bytes());
        assert_eq!(&rec[8..16], &(len as u64).to_le_bytes());
        assert_eq!(&rec[16..20], &(1u32 << 20).to_le_bytes());
        let table = &rec[BLOB_HEADER_LEN..h.content_at as usize];
        let body = &rec[h.content_at as usize..];
        for (i, c) in body.chunks(DIGEST_CHUNK as usize).enumerate() {
            assert_eq!(table_digest(table, i as u64), Some(chunk_digest(c)));
            assert_eq!(
                &table[i * 16..i * 16 + 16],
                &xxhash_rust::xxh3::xxh3_128(c).to_le_bytes()
            );
        }
        assert_eq!(table_digest(table, 3), None);
        // Every header and table byte is covered (content is covered by the digests).
        for i in 0..h.content_at as usize {
            let mut d = rec.clone();
            d[i] ^= 0x80;
            assert!(BlobHeader::decode(&key, &d).is_err(), "flip at {i}");
        }
        assert!(BlobHeader::decode(&BlobHash([4; 32]), &rec).is_err());
        assert!(BlobHeader::decode(&key, &rec[..rec.len() - 1]).is_err());
        assert!(BlobHeader::decode(&key, &rec[..31]).is_err());
        assert!(BlobHeader::decode(&key, &rec[..40]).is_err());
        let mut longer = rec.clone();
        longer.push(0);
        assert!(BlobHeader::decode(&key, &longer).is_err());
        // decode_parts alone checks the fixed part and the length, not the table.
        let mut bad_table = rec.clone();
        bad_table[BLOB_HEADER_LEN] ^= 1;
        assert_eq!(
            BlobHeader::decode_parts(&key, &bad_table, rec.len() as u64),
            Ok(h)
        );
        assert_eq!(
            h.check_table(&key, &bad_table, &bad_table[32..80]),
            Err("blob header checksum mismatch")
        );
        assert_eq!(
            h.check_table(&key, &rec, &rec[32..64]),
            Err("blob digest table has the wrong length")
        );
        // decode_parts checks flags and the reserved field itself (the check over them is
        // only verified with the table).
        for at in [6usize, 7, 20, 23] {
            let mut d = rec[..BLOB_HEADER_LEN].to_vec();
            d[at] = 1;
            assert_eq!(
                BlobHeader::decode_parts(&key, &d, rec.len() as u64),
                Err("blob header has unknown flags"),
                "byte {at}"
            );
        }
        // A chunk size out of range or not a power of two.
        for chunk in [0u32, 4095, 2048, 3 << 20, 128 << 20] {
            let mut d = rec[..BLOB_HEADER_LEN].to_vec();
            d[16..20].copy_from_slice(&chunk.to_le_bytes());
            assert_eq!(
                BlobHeader::decode_parts(&key, &d, 1 << 40),
                Err("blob header has an invalid digest chunk size"),
                "chunk {chunk}"
            );
        }
        // An unknown version.
        let mut v3 = rec.clone();
        v3[4] = 3;
        assert_eq!(
            BlobHeader::decode(&key, &v3),
            Err("blob header has an unknown version")
        );
        // An empty content has an empty table.
        let (ekey, empty) = BlobHeader::encode(&[]);
        let e = BlobHeader::decode(&ekey, &empty).unwrap();
        assert_eq!((e.len, e.chunks(), e.content_at), (0, 0, 32));
    }

    #[test]
    fn overflow_header_checks() {
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&9u64.to_ne_bytes());
        h[10..12].copy_from_slice(&P_OVERFLOW.to_ne_bytes());
        h[12..16].copy_from_slice(&2u32.to_ne_bytes());
        assert_eq!(check_overflow_header(&h, 9, 4096, 8176), Ok(()));
        assert!(check_overflow_header(&h, 9, 4096, 8177).is_err());
        assert!(check_overflow_header(&h, 8, 4096, 100).is_err());
        assert!(check_overflow_header(&h[..12], 9, 4096, 100).is_err());
        let mut leaf = h;
        leaf[10..12].copy_from_slice(&0x02u16.to_ne_bytes());
        assert!(check_overflow_header(&leaf, 9, 4096, 100).is_err());
    }

    #[test]
    fn ref_record_round_trip_and_damage() {
        let key = BlobHash([9; 32]);
        let r = RefRecord {
            count: 3,
            len: 4096,
        };
        let b = r.encode(&key);
        assert_eq!(RefRecord::decode(&key, &b), Ok(r));
        assert_eq!(&b[..8], &3u64.to_le_bytes());
        for i in 0..b.len() {
            let mut d = b;
            d[i] ^= 0x04;
            assert!(RefRecord::decode(&key, &d).is_err(), "flip at {i}");
        }
        assert!(RefRecord::decode(&BlobHash([8; 32]), &b).is_err());
        assert!(RefRecord::decode(&key, &b[..23]).is_err());
        let zero = RefRecord { count: 0, len: 1 }.encode(&key);
        assert!(RefRecord::decode(&key, &zero).is_err());
    }
}
