//! A fast hasher for the crate's internal integer keys (chunk addresses, file ids, page
//! indexes).
//!
//! The page cache and the allocator look keys up on every page a reader touches and every
//! block freed; SipHash (the std default, built to resist chosen keys) took about a twentieth
//! of a tailing reader's time. These keys are produced by the crate itself, never taken from
//! untrusted input, so a multiply-rotate mix (the one rustc's `FxHasher` uses) is enough.

use std::hash::{BuildHasherDefault, Hasher};

/// An odd constant with well-spread bits (from rustc's `FxHasher`).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Multiply-rotate hasher for integer keys.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word.get_mut(..chunk.len())
                .unwrap_or_default()
                .copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// `BuildHasher` for maps and sets keyed by the crate's integers.
pub(crate) type KeyBuild = BuildHasherDefault<KeyHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    fn hash<T: std::hash::Hash>(v: T) -> u64 {
        KeyBuild::default().hash_one(v)
    }

    #[test]
    fn equal_keys_hash_equal_and_neighbours_differ() {
        assert_eq!(hash((3u64, 9u64)), hash((3u64, 9u64)));
        // Consecutive page indexes of one file, and the same page of consecutive files:
        // all distinct, and spread over the top 7 bits hashbrown keys its groups on.
        let mut full = HashSet::new();
        let mut top = HashSet::new();
        for file in 0..4u64 {
            for page in 0..256u64 {
                let h = hash((file, page));
                full.insert(h);
                top.insert(h >> 57);
            }
        }
        assert_eq!(full.len(), 1024);
        assert!(top.len() > 100, "top bits poorly spread: {}", top.len());
        // Order matters: (a, b) and (b, a) differ.
        assert_ne!(hash((1u64, 2u64)), hash((2u64, 1u64)));
    }

    #[test]
    fn known_answers() {
        let mut h = KeyHasher::default();
        h.write_u64(1);
        assert_eq!(h.finish(), SEED);
        h.write_u64(2);
        assert_eq!(h.finish(), (SEED.rotate_left(5) ^ 2).wrapping_mul(SEED));
    }

    #[test]
    fn byte_writes_match_word_writes_and_cover_a_partial_tail() {
        let mut a = KeyHasher::default();
        a.write(&7u64.to_le_bytes());
        let mut b = KeyHasher::default();
        b.write_u64(7);
        assert_eq!(a.finish(), b.finish());
        let mut c = KeyHasher::default();
        c.write_usize(7);
        assert_eq!(c.finish(), b.finish());
        // A 9-byte write is two words; its last byte changes the hash.
        let mut d = KeyHasher::default();
        d.write(&[1, 0, 0, 0, 0, 0, 0, 0, 1]);
        let mut e = KeyHasher::default();
        e.write(&[1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert_ne!(d.finish(), e.finish());
        assert_ne!(d.finish(), KeyHasher::default().finish());
    }
}
