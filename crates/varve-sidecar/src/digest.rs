//! The chunk digest, XXH3-128 (seed 0, default secret), with its long-input loop in AVX2
//! where the CPU has it, and computed incrementally over a chunk that arrives piece by
//! piece in one contiguous buffer.
//!
//! `xxhash-rust` picks its SIMD width when it is compiled (SSE2 for a default x86-64
//! build), and SSE2 hashing took about as long as reading the bytes: the loop over the
//! 64-byte stripes of inputs longer than 240 bytes is done here with AVX2 after a runtime
//! check, following the XXH3 specification (accumulate every stripe, scramble after
//! every 16, the last stripe again at the end, then merge); every other input, and every
//! CPU without AVX2, goes to `xxhash_rust::xxh3::xxh3_128`. Tests check both against each
//! other on many lengths.

use xxhash_rust::xxh3::xxh3_128;

/// Stripe: the unit of the long-input loop.
const STRIPE: usize = 64;
/// Stripes per block (between two scrambles) with the default secret: (192 - 64) / 8.
const STRIPES_PER_BLOCK: usize = 16;
/// Inputs up to this length take XXH3's short-input paths.
const MID_SIZE_MAX: usize = 240;

const PRIME32_1: u64 = 0x9E37_79B1;
const PRIME32_2: u64 = 0x85EB_CA77;
const PRIME32_3: u64 = 0xC2B2_AE3D;
const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

/// XXH3's default secret (`kSecret` of the specification).
const SECRET: [u8; 192] = [
    0xb8, 0xfe, 0x6c, 0x39, 0x23, 0xa4, 0x4b, 0xbe, 0x7c, 0x01, 0x81, 0x2c, 0xf7, 0x21, 0xad, 0x1c,
    0xde, 0xd4, 0x6d, 0xe9, 0x83, 0x90, 0x97, 0xdb, 0x72, 0x40, 0xa4, 0xa4, 0xb7, 0xb3, 0x67, 0x1f,
    0xcb, 0x79, 0xe6, 0x4e, 0xcc, 0xc0, 0xe5, 0x78, 0x82, 0x5a, 0xd0, 0x7d, 0xcc, 0xff, 0x72, 0x21,
    0xb8, 0x08, 0x46, 0x74, 0xf7, 0x43, 0x24, 0x8e, 0xe0, 0x35, 0x90, 0xe6, 0x81, 0x3a, 0x26, 0x4c,
    0x3c, 0x28, 0x52, 0xbb, 0x91, 0xc3, 0x00, 0xcb, 0x88, 0xd0, 0x65, 0x8b, 0x1b, 0x53, 0x2e, 0xa3,
    0x71, 0x64, 0x48, 0x97, 0xa2, 0x0d, 0xf9, 0x4e, 0x38, 0x19, 0xef, 0x46, 0xa9, 0xde, 0xac, 0xd8,
    0xa8, 0xfa, 0x76, 0x3f, 0xe3, 0x9c, 0x34, 0x3f, 0xf9, 0xdc, 0xbb, 0xc7, 0xc7, 0x0b, 0x4f, 0x1d,
    0x8a, 0x51, 0xe0, 0x4b, 0xcd, 0xb4, 0x59, 0x31, 0xc8, 0x9f, 0x7e, 0xc9, 0xd9, 0x78, 0x73, 0x64,
    0xea, 0xc5, 0xac, 0x83, 0x34, 0xd3, 0xeb, 0xc3, 0xc5, 0x81, 0xa0, 0xff, 0xfa, 0x13, 0x63, 0xeb,
    0x17, 0x0d, 0xdd, 0x51, 0xb7, 0xf0, 0xda, 0x49, 0xd3, 0x16, 0x55, 0x26, 0x29, 0xd4, 0x68, 0x9e,
    0x2b, 0x16, 0xbe, 0x58, 0x7d, 0x47, 0xa1, 0xfc, 0x8f, 0xf8, 0xb8, 0xd1, 0x7a, 0xd0, 0x31, 0xce,
    0x45, 0xcb, 0x3a, 0x8f, 0x95, 0x16, 0x04, 0x28, 0xaf, 0xd7, 0xfb, 0xca, 0xbb, 0x4b, 0x40, 0x7e,
];

/// XXH3-128 of `data`.
pub(crate) fn xxh3_128_of(data: &[u8]) -> u128 {
    let mut h = Incremental::new();
    h.finish(data)
}

/// XXH3-128 of one input that arrives as a growing prefix of one buffer: `advance` takes
/// every prefix seen so far (each extending the last) and folds in the stripes that are
/// final; `finish` takes the whole input.
#[derive(Clone, Debug)]
pub(crate) struct Incremental {
    acc: [u64; 8],
    /// Stripes folded in so far (from the start of the input).
    stripes: usize,
    simd: bool,
}

impl Incremental {
    pub(crate) fn new() -> Incremental {
        Incremental {
            acc: [
                PRIME32_3, PRIME64_1, PRIME64_2, PRIME64_3, PRIME64_4, PRIME32_2, PRIME64_5,
                PRIME32_1,
            ],
            stripes: 0,
            simd: avx2(),
        }
    }

    /// Folds in the stripes of `prefix` (the input so far) that are followed by at least
    /// one more byte: those the long-input loop takes whatever comes after.
    pub(crate) fn advance(&mut self, prefix: &[u8]) {
        if !self.simd {
            return; // the whole input is hashed by `finish`
        }
        // Stripes ending before the last byte (prefixes only grow: never fewer than before).
        let upto = (prefix.len().saturating_sub(1) / STRIPE).max(self.stripes);
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `simd` is only set when the CPU has AVX2 (`avx2()`); the stripes
        // `self.stripes..upto` lie inside `prefix` (`upto * 64 <= prefix.len() - 1`; an
        // empty range reads nothing).
        unsafe {
            avx2::accumulate(&mut self.acc, prefix, self.stripes, upto)
        };
        self.stripes = upto;
    }

    /// The digest of `input` (the whole input, of which earlier `advance` calls saw
    /// prefixes).
    pub(crate) fn finish(&mut self, input: &[u8]) -> u128 {
        if !self.simd || input.len() <= MID_SIZE_MAX {
            return xxh3_128(input);
        }
        self.advance(input);
        let mut acc = self.acc;
        let last = input.len() - STRIPE;
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as in `advance` (AVX2 checked); `last..last + 64` lies in `input`.
        unsafe {
            avx2::last_stripe(&mut acc, input, last)
        };
        let len = input.len() as u64;
        let low = merge(&acc, 11, len.wrapping_mul(PRIME64_1));
        let high = merge(&acc, SECRET.len() - 64 - 11, !len.wrapping_mul(PRIME64_2));
        (u128::from(high) << 64) + u128::from(low)
    }
}

/// True when the long-input loop can use AVX2.
fn avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn read64(bytes: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(w)
}

/// XXH3's merge of the accumulators with the secret at `at`.
fn merge(acc: &[u64; 8], at: usize, start: u64) -> u64 {
    let mut h = start;
    for i in 0..4 {
        let a = acc[2 * i] ^ read64(&SECRET, at + 16 * i);
        let b = acc[2 * i + 1] ^ read64(&SECRET, at + 16 * i + 8);
        let p = u128::from(a) * u128::from(b);
        h = h.wrapping_add((p as u64) ^ ((p >> 64) as u64));
    }
    h ^= h >> 37;
    h = h.wrapping_mul(0x1656_6791_9E37_79F9);
    h ^ (h >> 32)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _MM_HINT_T0, _mm_prefetch, _mm256_add_epi64, _mm256_loadu_si256, _mm256_mul_epu32,
        _mm256_set1_epi32, _mm256_shuffle_epi32, _mm256_slli_epi64, _mm256_srli_epi64,
        _mm256_storeu_si256, _mm256_xor_si256,
    };

    use super::{PRIME32_1, SECRET, STRIPE, STRIPES_PER_BLOCK};

    /// How far ahead of the stripe being hashed its input is prefetched: page-cache pages
    /// are scattered in memory, and the hardware prefetcher stops at each 4 KiB page.
    const PREFETCH_STRIPES: usize = 64;

    /// Folds stripes `from..to` of `input` into `acc`, scrambling after every block.
    ///
    /// # Safety
    /// The CPU must have AVX2, and `to * 64 <= input.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn accumulate(acc: &mut [u64; 8], input: &[u8], from: usize, to: usize) {
        debug_assert!(to * STRIPE <= input.len());
        // SAFETY: every load reads 32 bytes inside `input` (stripe `s < to`, so
        // `s * 64 + 64 <= input.len()`) or inside `SECRET` (offsets up to 8 * 15 + 32
        // and 128 + 32 within 192 bytes); `acc` is 64 bytes. AVX2 is guaranteed by the
        // caller.
        unsafe {
            let p = acc.as_mut_ptr().cast::<__m256i>();
            let mut a0 = _mm256_loadu_si256(p);
            let mut a1 = _mm256_loadu_si256(p.add(1));
            let base = input.as_ptr();
            for s in from..to {
                let key = SECRET.as_ptr().add((s % STRIPES_PER_BLOCK) * 8);
                let d = base.add(s * STRIPE);
                if s + PREFETCH_STRIPES < to {
                    _mm_prefetch::<_MM_HINT_T0>(d.add(PREFETCH_STRIPES * STRIPE).cast());
                }
                a0 = round(a0, d, key);
                a1 = round(a1, d.add(32), key.add(32));
                if (s + 1) % STRIPES_PER_BLOCK == 0 {
                    let k = SECRET.as_ptr().add(SECRET.len() - STRIPE);
                    a0 = scramble(a0, k);
                    a1 = scramble(a1, k.add(32));
                }
            }
            _mm256_storeu_si256(p, a0);
            _mm256_storeu_si256(p.add(1), a1);
        }
    }

    /// Folds in the input's last stripe (`input[last..last + 64]`) with the secret XXH3
    /// uses for it.
    ///
    /// # Safety
    /// The CPU must have AVX2, and `last + 64 <= input.len()`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn last_stripe(acc: &mut [u64; 8], input: &[u8], last: usize) {
        debug_assert!(last + STRIPE <= input.len());
        // SAFETY: 64 bytes at `last` lie in `input`; the key (64 bytes at 192 - 64 - 7)
        // lies in `SECRET`; AVX2 is guaranteed by the caller.
        unsafe {
            let p = acc.as_mut_ptr().cast::<__m256i>();
            let key = SECRET.as_ptr().add(SECRET.len() - STRIPE - 7);
            let d = input.as_ptr().add(last);
            let a0 = round(_mm256_loadu_si256(p), d, key);
            let a1 = round(_mm256_loadu_si256(p.add(1)), d.add(32), key.add(32));
            _mm256_storeu_si256(p, a0);
            _mm256_storeu_si256(p.add(1), a1);
        }
    }

    /// One half stripe: `acc[i ^ 1] += d[i]; acc[i] += lo32(d[i] ^ k[i]) * hi32(...)`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn round(acc: __m256i, d: *const u8, k: *const u8) -> __m256i {
        // SAFETY: the caller passes 32 readable bytes at `d` and at `k`.
        unsafe {
            let data = _mm256_loadu_si256(d.cast());
            let key = _mm256_loadu_si256(k.cast());
            let dk = _mm256_xor_si256(data, key);
            let product = _mm256_mul_epu32(dk, _mm256_srli_epi64::<32>(dk));
            let swapped = _mm256_shuffle_epi32::<0b0100_1110>(data);
            _mm256_add_epi64(product, _mm256_add_epi64(acc, swapped))
        }
    }

    /// `acc = (acc ^ (acc >> 47) ^ k) * PRIME32_1`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scramble(acc: __m256i, k: *const u8) -> __m256i {
        // SAFETY: the caller passes 32 readable bytes at `k`.
        unsafe {
            let key = _mm256_loadu_si256(k.cast());
            let a = _mm256_xor_si256(_mm256_xor_si256(acc, _mm256_srli_epi64::<47>(acc)), key);
            let prime = _mm256_set1_epi32(PRIME32_1 as i32);
            let lo = _mm256_mul_epu32(a, prime);
            let hi = _mm256_mul_epu32(_mm256_srli_epi64::<32>(a), prime);
            _mm256_add_epi64(lo, _mm256_slli_epi64::<32>(hi))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn matches_xxhash_rust_on_every_length_class() {
        let mut lens: Vec<usize> = (0..2200).collect();
        lens.extend([4095, 4096, 4097, 16_383, 16_384, 16_385, 100_000]);
        lens.extend([(1 << 20) - 1, 1 << 20, (1 << 20) + 1, (1 << 20) + 63]);
        for (i, &len) in lens.iter().enumerate() {
            let d = data(len, i as u64);
            assert_eq!(xxh3_128_of(&d), xxh3_128(&d), "length {len}");
        }
    }

    #[test]
    fn incremental_prefixes_give_the_one_shot_digest() {
        for (len, step) in [
            (241usize, 1usize),
            (1024, 63),
            (1025, 64),
            (5000, 1000),
            (70_000, 4096),
            (1 << 20, 65_536),
            ((1 << 20) + 17, 262_144),
        ] {
            let d = data(len, len as u64);
            let mut h = Incremental::new();
            let mut at = 0;
            while at < len {
                at = (at + step).min(len);
                h.advance(&d[..at]);
            }
            // A repeated prefix changes nothing.
            h.advance(&d[..at]);
            assert_eq!(h.finish(&d), xxh3_128(&d), "length {len}, step {step}");
        }
    }

    /// Without AVX2 (or where it is off) the digest comes from `xxhash-rust` entirely.
    #[test]
    fn the_fallback_is_xxhash_rust() {
        let d = data(300_000, 7);
        let mut h = Incremental::new();
        h.simd = false;
        h.advance(&d[..100_000]);
        assert_eq!(h.stripes, 0);
        assert_eq!(h.finish(&d), xxh3_128(&d));
    }
}
