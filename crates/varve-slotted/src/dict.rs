//! Dictionary training for lz4 and the dictionary files that keep them.
//!
//! lz4's block format can start with an external dictionary: bytes that matches may refer to
//! as if they preceded the value. For documents that repeat their keys (JSON), a dictionary
//! of the byte runs most values share lets even small values compress.
//!
//! Training (a small cousin of zstd's "cover" algorithm): every 8-byte substring of the
//! samples is counted once per sample in which it appears; every 32-byte
//! segment of every sample is scored by the summed counts of its substrings seen in at
//! least two samples; segments are taken best first, skipping those that add mostly
//! substrings already taken, until the dictionary is full. The best segments go last,
//! nearest to the value, where lz4 offsets are cheapest to reach.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::DictHeader;

/// Length of the substrings that are counted.
const GRAM: usize = 8;
/// Length of the segments the dictionary is built from.
const SEGMENT: usize = 32;
/// lz4 only reaches back 64 KiB: a larger dictionary is wasted.
pub(crate) const MAX_DICT: usize = 64 * 1024;

/// Every 8-byte substring, as the u64 it spells (exact: no hashing needed).
fn grams(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes
        .windows(GRAM)
        .map(|w| w.try_into().map_or(0, u64::from_le_bytes))
}

/// Builds a dictionary of at most `max_len` bytes from `samples`.
pub(crate) fn train(samples: &[Vec<u8>], max_len: usize) -> Vec<u8> {
    let max_len = max_len.min(MAX_DICT);
    let mut freq: HashMap<u64, u32> = HashMap::new();
    for s in samples {
        let distinct: HashSet<u64> = grams(s).collect();
        for g in distinct {
            *freq.entry(g).or_insert(0) += 1;
        }
    }
    let mut segments: Vec<(u64, &[u8])> = Vec::new();
    for s in samples {
        for seg in s.chunks(SEGMENT).filter(|c| c.len() >= GRAM) {
            let score: u64 = grams(seg)
                .map(|g| freq.get(&g).copied().unwrap_or(0))
                .filter(|&n| n >= 2)
                .map(u64::from)
                .sum();
            if score > 0 {
                segments.push((score, seg));
            }
        }
    }
    segments.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let mut taken: HashSet<u64> = HashSet::new();
    let mut picked: Vec<&[u8]> = Vec::new();
    let mut len = 0;
    for (_, seg) in segments {
        if len + seg.len() > max_len {
            continue;
        }
        let gs: Vec<u64> = grams(seg).collect();
        let new = gs.iter().filter(|g| !taken.contains(*g)).count();
        if new * 2 < gs.len() {
            continue;
        }
        taken.extend(gs);
        picked.push(seg);
        len += seg.len();
    }
    let mut dict = Vec::with_capacity(len);
    for seg in picked.iter().rev() {
        dict.extend_from_slice(seg);
    }
    dict
}

/// File name of dictionary `id`.
pub(crate) fn file_name(id: u16) -> String {
    format!("dict-{id:05}.vvd")
}

/// Parses a dictionary id from a file name made by [`file_name`].
pub(crate) fn parse_name(name: &str) -> Option<u16> {
    name.strip_prefix("dict-")?
        .strip_suffix(".vvd")?
        .parse()
        .ok()
}

/// Writes dictionary `id` durably (temporary file, fsync, rename; the caller syncs the
/// directory).
pub(crate) fn write(dir: &Path, id: u16, data: &[u8]) -> Result<()> {
    let path = dir.join(file_name(id));
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(bytemuck::bytes_of(&DictHeader::new(id, data)))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// Reads and verifies dictionary file `path` whose name says it is dictionary `id`.
pub(crate) fn read(path: &Path, id: u16) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let bad = |what| Error::BadFile {
        path: PathBuf::from(path),
        what,
    };
    match DictHeader::parse(&bytes) {
        Some((got, data)) if got == id => Ok(data.to_vec()),
        Some(_) => Err(bad("dictionary id differs from its file name")),
        None => Err(bad("dictionary: wrong magic, version or checksum")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: u32) -> Vec<u8> {
        format!(
            "{{\"customer_id\":{i},\"display_name\":\"user number {i}\",\"status\":\"active\",\
             \"preferences\":{{\"newsletter\":true,\"language\":\"en-GB\"}},\"score\":{}}}",
            i * 7 % 101
        )
        .into_bytes()
    }

    #[test]
    fn training_finds_the_shared_keys_and_respects_the_size() {
        let samples: Vec<Vec<u8>> = (0..50).map(doc).collect();
        let d = train(&samples, 512);
        assert!(!d.is_empty());
        assert!(d.len() <= 512);
        let text = String::from_utf8_lossy(&d);
        assert!(text.contains("preferences"), "{text}");
        let plain: usize = (100..120)
            .map(|i| lz4_flex::block::compress(&doc(i)).len())
            .sum();
        let with: usize = (100..120)
            .map(|i| lz4_flex::block::compress_with_dict(&doc(i), &d).len())
            .sum();
        assert!(with * 2 < plain, "dict {with} vs plain {plain}");
    }

    #[test]
    fn training_on_unrelated_samples_takes_nothing() {
        let samples = vec![
            b"aaaaaaaaaaaaaaaa".to_vec(),
            b"bbbbbbbbbbbbbbbbbbbb".to_vec(),
        ];
        assert!(train(&samples, 1024).is_empty());
        assert!(train(&[], 1024).is_empty());
    }

    #[test]
    fn max_len_is_capped_at_64_kib() {
        let mut x = 1u32;
        let shared: Vec<u8> = (0..70_000)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let samples = vec![shared.clone(), shared];
        let d = train(&samples, 1 << 20);
        assert_eq!(d.len(), 65536, "filled exactly to lz4's 64 KiB reach");
        let small = vec![samples[0][..8000].to_vec(), samples[0][..8000].to_vec()];
        assert_eq!(train(&small, 4096).len(), 4096);
        assert_eq!(
            train(&small, 4095).len(),
            4064,
            "whole 32-byte segments only"
        );
    }

    #[test]
    fn a_segment_is_taken_when_at_least_half_its_substrings_are_new() {
        let mut x = 11u32;
        let r: Vec<u8> = (0..200)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        // 32-byte segments overlapping in 10 of their 25 substrings: 15 new, taken.
        let (a, b) = (r[0..32].to_vec(), r[15..47].to_vec());
        let d = train(&[a.clone(), a, b.clone(), b], 1024);
        assert_eq!(d.len(), 64);
        // 9-byte segments (2 substrings) sharing one: exactly half new, taken.
        let (c, e) = (r[100..109].to_vec(), r[101..110].to_vec());
        let d = train(&[c.clone(), c, e.clone(), e], 1024);
        assert_eq!(d.len(), 18);
        // Overlapping in 15 of 25: only 10 new, skipped.
        let (f, g) = (r[0..32].to_vec(), r[10..42].to_vec());
        let d = train(&[f.clone(), f, g.clone(), g], 1024);
        assert_eq!(d.len(), 32);
    }

    #[test]
    fn substrings_shared_by_two_samples_count_and_duplicates_are_taken_once() {
        let mut x = 7u32;
        let a: Vec<u8> = (0..64)
            .map(|_| {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (x >> 24) as u8
            })
            .collect();
        let d = train(&[a.clone(), a.clone()], 1024);
        assert_eq!(d.len(), 64, "both segments once, not twice");
        assert!(d.windows(32).any(|w| w == &a[..32]));
        assert!(d.windows(32).any(|w| w == &a[32..]));
        // The best-scoring segment goes last.
        let mut b = a.clone();
        b.truncate(32);
        let d = train(&[a.clone(), a.clone(), b], 1024);
        assert_eq!(&d[32..], &a[..32]);
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(3), "dict-00003.vvd");
        assert_eq!(parse_name(&file_name(3)), Some(3));
        assert_eq!(parse_name("dict-x.vvd"), None);
        assert_eq!(parse_name("page-00000001.vvp"), None);
    }

    #[test]
    fn files_round_trip_and_detect_damage() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 4, b"dictionary bytes").unwrap();
        let path = dir.path().join(file_name(4));
        assert_eq!(read(&path, 4).unwrap(), b"dictionary bytes");
        assert!(matches!(read(&path, 5), Err(Error::BadFile { .. })));
        let mut bytes = std::fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path, 4), Err(Error::BadFile { .. })));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(read(&path, 4), Err(Error::BadFile { .. })));
    }
}
