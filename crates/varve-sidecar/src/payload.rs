//! `Payload` and `BlobHash`: what the engine stores inside its events, and their encoding.
//!
//! Encoding (version 1, see `docs/format.md`): one tag byte, then
//! - `0x11` Inline: a LEB128 length (at most 5 bytes, at most `u32::MAX`), then the bytes;
//! - `0x12` BlobRef: the 32-byte SHA-256 of the blob.
//!
//! The high nibble of the tag is the encoding version, the low nibble the variant. Every
//! other tag, a truncated or overlong length, and trailing bytes are rejected.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Payloads shorter than this many bytes stay inline in the event; payloads of this size or
/// more go to the sidecar (the seed's "< 2KB inline, >= 2KB sidecar").
pub const MAX_INLINE_SIZE: usize = 2048;

/// True when a payload of `len` bytes is stored in the sidecar rather than inline.
#[must_use]
pub const fn routes_to_sidecar(len: usize) -> bool {
    len >= MAX_INLINE_SIZE
}

/// Tag of an inline payload, encoding version 1.
pub(crate) const TAG_INLINE_V1: u8 = 0x11;
/// Tag of a blob reference, encoding version 1.
pub(crate) const TAG_BLOBREF_V1: u8 = 0x12;
/// Length of an encoded `BlobRef`.
pub const ENCODED_BLOBREF_LEN: usize = 1 + BlobHash::LEN;

/// SHA-256 of a blob's content: its address in the sidecar.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    /// Length of a hash in bytes.
    pub const LEN: usize = 32;

    /// The SHA-256 of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> BlobHash {
        BlobHash(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({self})")
    }
}

/// An event's payload: the bytes themselves, or a reference to a blob in the sidecar.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Payload {
    /// A small payload kept in the event (shorter than [`MAX_INLINE_SIZE`] when produced by
    /// `Sidecar::store`).
    Inline(Vec<u8>),
    /// A large payload stored in the sidecar under its SHA-256.
    BlobRef(BlobHash),
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Inline(b) => write!(f, "Inline({} bytes)", b.len()),
            Payload::BlobRef(h) => write!(f, "BlobRef({h})"),
        }
    }
}

impl Payload {
    /// Length of [`Payload::encode`]'s output.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Inline(b) => 1 + leb128_len(b.len() as u64) + b.len(),
            Payload::BlobRef(_) => ENCODED_BLOBREF_LEN,
        }
    }

    /// Appends the encoding to `out`.
    ///
    /// # Errors
    /// [`Error::InvalidPayload`] for an inline payload longer than `u32::MAX` bytes, which
    /// the format cannot express (nothing is appended then).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Payload::Inline(b) => {
                let len = u32::try_from(b.len()).map_err(|_| Error::InvalidPayload {
                    reason: "inline payload longer than u32::MAX bytes",
                })?;
                out.reserve(self.encoded_len());
                out.push(TAG_INLINE_V1);
                // LEB128: 7 bits a byte, low first, high bit set on all but the last; a
                // u32 needs at most 5 bytes (a bounded loop, so no input can spin it).
                let mut v = len;
                for _ in 0..5 {
                    let byte = (v & 0x7f) as u8;
                    v >>= 7;
                    if v == 0 {
                        out.push(byte);
                        break;
                    }
                    out.push(0x80 + byte); // byte < 0x80: sets the continuation bit
                }
                out.extend_from_slice(b);
            }
            Payload::BlobRef(h) => {
                out.push(TAG_BLOBREF_V1);
                out.extend_from_slice(&h.0);
            }
        }
        Ok(())
    }

    /// The encoding as a new vector.
    ///
    /// # Errors
    /// As [`Payload::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes a payload that fills `bytes` exactly.
    ///
    /// # Errors
    /// [`Error::InvalidPayload`] for an unknown tag, a truncated or overlong length or
    /// hash, or trailing bytes. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Payload> {
        let (p, used) = Payload::decode_prefix(bytes)?;
        if used != bytes.len() {
            return Err(Error::InvalidPayload {
                reason: "trailing bytes after the payload",
            });
        }
        Ok(p)
    }

    /// Decodes the payload at the start of `bytes`; returns it and the bytes it used.
    ///
    /// # Errors
    /// As [`Payload::decode`], except that trailing bytes are allowed.
    pub fn decode_prefix(bytes: &[u8]) -> Result<(Payload, usize)> {
        let (&tag, rest) = bytes.split_first().ok_or(Error::InvalidPayload {
            reason: "empty input",
        })?;
        match tag {
            TAG_INLINE_V1 => {
                let (len, n) = read_leb128_u32(rest)?;
                let len = len as usize;
                let body =
                    rest.get(n..)
                        .and_then(|r| r.get(..len))
                        .ok_or(Error::InvalidPayload {
                            reason: "inline payload shorter than its length",
                        })?;
                Ok((Payload::Inline(body.to_vec()), 1 + n + len))
            }
            TAG_BLOBREF_V1 => {
                let hash: [u8; 32] = rest
                    .get(..BlobHash::LEN)
                    .and_then(|h| h.try_into().ok())
                    .ok_or(Error::InvalidPayload {
                        reason: "blob reference shorter than 32 bytes",
                    })?;
                Ok((Payload::BlobRef(BlobHash(hash)), ENCODED_BLOBREF_LEN))
            }
            _ => Err(Error::InvalidPayload {
                reason: "unknown tag byte (not a version-1 Inline or BlobRef)",
            }),
        }
    }

    /// The blob this payload refers to, if it is a `BlobRef`.
    #[must_use]
    pub fn blob_hash(&self) -> Option<&BlobHash> {
        match self {
            Payload::BlobRef(h) => Some(h),
            Payload::Inline(_) => None,
        }
    }
}

/// Bytes of the LEB128 encoding of `v`: one per started group of 7 significant bits.
fn leb128_len(v: u64) -> usize {
    let bits = 64 - v.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads a canonical (shortest-form) LEB128 `u32`; returns it and the bytes used.
fn read_leb128_u32(bytes: &[u8]) -> Result<(u32, usize)> {
    let mut value: u64 = 0;
    for (i, &b) in bytes.iter().enumerate().take(5) {
        value += u64::from(b & 0x7f) << (7 * i); // disjoint 7-bit groups
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(Error::InvalidPayload {
                    reason: "inline length is not in shortest form",
                });
            }
            let v = u32::try_from(value).map_err(|_| Error::InvalidPayload {
                reason: "inline length exceeds u32::MAX",
            })?;
            return Ok((v, i + 1));
        }
    }
    Err(Error::InvalidPayload {
        reason: "inline length truncated or longer than 5 bytes",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_boundary() {
        assert!(!routes_to_sidecar(0));
        assert!(!routes_to_sidecar(2047));
        assert!(routes_to_sidecar(2048));
        assert!(routes_to_sidecar(2049));
    }

    #[test]
    fn encodings_are_compact_and_exact() {
        let h = BlobHash([7; 32]);
        let e = Payload::BlobRef(h).encode().unwrap();
        assert_eq!(e.len(), 33);
        assert_eq!(e[0], 0x12);
        assert_eq!(&e[1..], &[7; 32]);
        let e = Payload::Inline(vec![1, 2, 3]).encode().unwrap();
        assert_eq!(e, vec![0x11, 3, 1, 2, 3]);
        let big = Payload::Inline(vec![9; 300]);
        let e = big.encode().unwrap();
        assert_eq!(&e[..3], &[0x11, 0xac, 0x02]);
        assert_eq!(e.len(), big.encoded_len());
        assert_eq!(Payload::decode(&e).unwrap(), big);
        assert_eq!(Payload::Inline(vec![]).encode().unwrap(), vec![0x11, 0]);
    }

    #[test]
    fn leb128_edges() {
        assert_eq!(read_leb128_u32(&[0x7f]).unwrap(), (127, 1));
        assert_eq!(read_leb128_u32(&[0x80, 0x01]).unwrap(), (128, 2));
        assert_eq!(
            read_leb128_u32(&[0xff, 0xff, 0xff, 0xff, 0x0f]).unwrap(),
            (u32::MAX, 5)
        );
        assert!(read_leb128_u32(&[0xff, 0xff, 0xff, 0xff, 0x1f]).is_err());
        assert!(read_leb128_u32(&[0x80, 0x00]).is_err());
        assert!(read_leb128_u32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x01]).is_err());
        assert!(read_leb128_u32(&[]).is_err());
        assert_eq!(read_leb128_u32(&[0x00]).unwrap(), (0, 1));
        assert_eq!(leb128_len(0), 1);
        assert_eq!(leb128_len(1), 1);
        assert_eq!(leb128_len(127), 1);
        assert_eq!(leb128_len(128), 2);
        assert_eq!(leb128_len(16383), 2);
        assert_eq!(leb128_len(16384), 3);
        assert_eq!(leb128_len(u64::from(u32::MAX)), 5);
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(Payload::decode(&[]).is_err());
        assert!(Payload::decode(&[0x00]).is_err());
        assert!(Payload::decode(&[0x21, 0]).is_err());
        assert!(Payload::decode(&[0x12; 32]).is_err());
        assert!(Payload::decode(&[0x11, 5, 1]).is_err());
        let mut e = Payload::BlobRef(BlobHash([1; 32])).encode().unwrap();
        e.push(0);
        assert!(Payload::decode(&e).is_err());
        let (p, used) = Payload::decode_prefix(&e).unwrap();
        assert_eq!((p, used), (Payload::BlobRef(BlobHash([1; 32])), 33));
    }

    #[test]
    fn accessors() {
        let h = BlobHash([5; 32]);
        assert_eq!(h.as_bytes(), &[5; 32]);
        assert_eq!(Payload::BlobRef(h).blob_hash(), Some(&h));
        assert_eq!(Payload::Inline(vec![1]).blob_hash(), None);
    }

    #[test]
    fn hash_display_is_hex() {
        let h = BlobHash::of(b"abc");
        assert_eq!(
            h.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(format!("{h:?}"), format!("BlobHash({h})"));
        assert_eq!(
            format!("{:?}", Payload::Inline(vec![1, 2])),
            "Inline(2 bytes)"
        );
    }
}
