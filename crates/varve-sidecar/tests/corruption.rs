//! Damage in `blobs.mdb` is reported, never returned as data: a flipped content byte is
//! `Corrupted` under every cache policy and read path (and nothing reaches the caller's
//! writer), a flipped blob header or refcount record is `Corrupted`, a damaged format
//! record or an unknown format version refuses to open.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use varve_sidecar::{BlobHash, CachePolicy, Error, Payload, Sidecar, SidecarOptions};

fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = vec![0u8; len.next_multiple_of(8)];
    for w in out.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    let hits: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "needle must be unique in the file");
    hits[0]
}

/// XORs `mask` into the byte at `at` of `path` (the store must be closed).
fn flip(path: &Path, at: usize, mask: u8) {
    let mut f = std::fs::read(path).unwrap();
    f[at] ^= mask;
    std::fs::write(path, f).unwrap();
}

fn all_policies() -> Vec<SidecarOptions> {
    let d = SidecarOptions::default;
    vec![
        d(),
        SidecarOptions {
            verify_buffer: 4096,
            read_chunk: 8192,
            ..d()
        },
        SidecarOptions {
            cache_policy: CachePolicy::Direct,
            ..d()
        },
        SidecarOptions {
            cache_policy: CachePolicy::Keep,
            ..d()
        },
    ]
}

#[test]
fn flipped_content_byte_is_corrupted_under_every_policy() {
    for (len, at) in [(2048usize, 2047usize), (300_000, 150_000), (300_000, 0)] {
        let dir = tempfile::tempdir().unwrap();
        let data = bytes(len, len as u64 + at as u64);
        let other = bytes(5000, 99);
        let hash = BlobHash::of(&data);
        {
            let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
            sc.store_many(&[&data, &other]).unwrap();
        }
        let file = dir.path().join("blobs.mdb");
        let start = find(&std::fs::read(&file).unwrap(), &data[..64.min(len)]);
        flip(&file, start + at, 0x20);
        for opts in all_policies() {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut out = Vec::new();
            match sc.read_to(&Payload::BlobRef(hash), &mut out) {
                Err(Error::Corrupted { hash: h, .. }) => assert_eq!(h, hash),
                other => panic!("{opts:?}: {other:?}"),
            }
            assert!(out.is_empty(), "{opts:?}: bytes reached the writer");
            assert!(matches!(
                sc.read(&Payload::BlobRef(hash)),
                Err(Error::Corrupted { .. })
            ));
            // The undamaged neighbour still reads.
            assert_eq!(
                sc.read(&Payload::BlobRef(BlobHash::of(&other))).unwrap(),
                other
            );
        }
        // With verification off the damage goes through: it is the check that catches it.
        let sc = Sidecar::open(
            dir.path(),
            SidecarOptions {
                verify_on_read: false,
                ..SidecarOptions::default()
            },
        )
        .unwrap();
        let got = sc.read(&Payload::BlobRef(hash)).unwrap();
        assert_eq!(got.len(), data.len());
        assert_ne!(got, data);
        assert_eq!(got[at], data[at] ^ 0x20);
    }
}

#[test]
fn flipped_blob_header_is_corrupted_even_without_verification() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(10_000, 5);
    let hash = BlobHash::of(&data);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store(&data).unwrap();
    }
    let file = dir.path().join("blobs.mdb");
    let start = find(&std::fs::read(&file).unwrap(), &data[..64]);
    // The 24-byte blob header sits right in front of the content; flip its length field.
    flip(&file, start - 24 + 8, 0x01);
    for verify_on_read in [true, false] {
        let sc = Sidecar::open(
            dir.path(),
            SidecarOptions {
                verify_on_read,
                ..SidecarOptions::default()
            },
        )
        .unwrap();
        let mut out = Vec::new();
        assert!(matches!(
            sc.read_to(&Payload::BlobRef(hash), &mut out),
            Err(Error::Corrupted { hash: h, .. }) if h == hash
        ));
        assert!(out.is_empty());
    }
}

#[test]
fn flipped_refcount_record_is_corrupted() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(100_003, 6);
    let hash = BlobHash::of(&data);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store(&data).unwrap();
        sc.store(&data).unwrap();
    }
    let file = dir.path().join("blobs.mdb");
    let mut needle = 2u64.to_le_bytes().to_vec();
    needle.extend_from_slice(&100_003u64.to_le_bytes());
    let at = find(&std::fs::read(&file).unwrap(), &needle);
    flip(&file, at, 0x04); // count 2 -> 6
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    assert!(matches!(sc.refcount(&hash), Err(Error::Corrupted { .. })));
    assert!(matches!(sc.release(&hash), Err(Error::Corrupted { .. })));
    assert!(matches!(sc.store(&data), Err(Error::Corrupted { .. })));
    assert!(matches!(sc.stats(), Err(Error::Corrupted { .. })));
}

#[test]
fn damaged_format_record_or_unknown_version_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(Sidecar::open(dir.path(), SidecarOptions::default()).unwrap());
    let file = dir.path().join("blobs.mdb");
    let image = std::fs::read(&file).unwrap();
    let at = find(&image, b"VARVSIDE");

    // A future version with a valid checksum: UnknownVersion.
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(b"VARVSIDE");
    rec[8..12].copy_from_slice(&2u32.to_le_bytes());
    let check = xxhash_rust::xxh3::xxh3_64(&rec[..12]) as u32;
    rec[12..].copy_from_slice(&check.to_le_bytes());
    let mut future = image.clone();
    future[at..at + 16].copy_from_slice(&rec);
    std::fs::write(&file, &future).unwrap();
    assert!(matches!(
        Sidecar::open(dir.path(), SidecarOptions::default()),
        Err(Error::UnknownVersion {
            found: 2,
            supported: 1
        })
    ));

    // A flipped byte: CorruptedMeta.
    let mut damaged = image;
    damaged[at + 9] ^= 0x10;
    std::fs::write(&file, &damaged).unwrap();
    assert!(matches!(
        Sidecar::open(dir.path(), SidecarOptions::default()),
        Err(Error::CorruptedMeta { .. })
    ));
}
