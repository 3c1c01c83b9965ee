//! Deterministic byte patterns.

/// `len` bytes that compress well: byte `i` is `(i * 31) ^ seed` (wrapping).
#[must_use]
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// `len` bytes that lz4 cannot shrink (xorshift64 output, eight bytes per step), the same
/// for the same `seed` and different for different seeds, so a test can find them again
/// in a file it damages.
#[must_use]
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for w in out.chunks_exact_mut(8) {
        x = xorshift(x);
        w.copy_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One xorshift64 step (13, 7, 17): a cheap, reproducible source of test randomness.
#[must_use]
pub fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_reproducible_and_noise_does_not_repeat() {
        assert_eq!(pattern(4, 1), [1, 30, 63, 92]);
        assert_eq!(noise(64, 9), noise(64, 9));
        assert_ne!(noise(64, 9), noise(64, 10));
        assert_ne!(noise(64, 0), noise(64, 1));
        assert_eq!(noise(13, 5).len(), 13);
        assert_eq!(noise(13, 5), noise(16, 5)[..13]);
        let n = noise(4096, 3);
        let distinct = n.iter().collect::<std::collections::HashSet<_>>().len();
        assert!(distinct > 200, "{distinct} distinct byte values");
        assert_eq!(xorshift(1), 1_082_269_761);
    }
}
