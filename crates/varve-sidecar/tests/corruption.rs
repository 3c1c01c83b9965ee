//! Damage in `blobs.mdb` is reported, never returned as data: a flipped content byte is
//! `CorruptedChunk` under every cache policy and read path (and nothing reaches the caller's
//! writer), a flipped blob header or refcount record is `Corrupted`, a damaged format
//! record or an unknown format version refuses to open.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use varve_sidecar::{BlobHash, CachePolicy, Error, Payload, Sidecar, SidecarOptions};
use varve_testkit::bytes::noise as bytes;

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
        d().verify_buffer(4096).read_chunk(8192),
        d().cache_policy(CachePolicy::Direct),
        d().cache_policy(CachePolicy::Keep),
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
            // The blob is one digest chunk (< 1 MiB): the error names it, and nothing of
            // it reached the writer.
            match sc.read_to(&Payload::BlobRef(hash), &mut out) {
                Err(Error::CorruptedChunk {
                    hash: h,
                    offset: 0,
                    len: l,
                }) => assert_eq!((h, l), (hash, len as u64)),
                other => panic!("{opts:?}: {other:?}"),
            }
            assert!(out.is_empty(), "{opts:?}: bytes reached the writer");
            assert!(matches!(
                sc.read(&Payload::BlobRef(hash)),
                Err(Error::CorruptedChunk { .. })
            ));
            // The undamaged neighbour still reads.
            assert_eq!(
                sc.read(&Payload::BlobRef(BlobHash::of(&other))).unwrap(),
                other
            );
        }
        // With verification off the damage goes through: it is the check that catches it.
        let sc =
            Sidecar::open(dir.path(), SidecarOptions::default().verify_on_read(false)).unwrap();
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
    // The 32-byte blob header and the blob's one 16-byte chunk digest sit right in front of
    // the content; flip the header's length field.
    flip(&file, start - 48 + 8, 0x01);
    for verify_on_read in [true, false] {
        let sc = Sidecar::open(
            dir.path(),
            SidecarOptions::default().verify_on_read(verify_on_read),
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

    // A future version with a valid checksum: UnsupportedVersion.
    let mut rec = [0u8; 16];
    rec[..8].copy_from_slice(b"VARVSIDE");
    rec[8..12].copy_from_slice(&3u32.to_le_bytes());
    let check = xxhash_rust::xxh3::xxh3_64(&rec[..12]) as u32;
    rec[12..].copy_from_slice(&check.to_le_bytes());
    let mut future = image.clone();
    future[at..at + 16].copy_from_slice(&rec);
    std::fs::write(&file, &future).unwrap();
    assert!(matches!(
        Sidecar::open(dir.path(), SidecarOptions::default()),
        Err(Error::UnsupportedVersion {
            found: 3,
            supported: 2
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

/// A sink that compares every byte it receives with the blob's true bytes, and calls
/// `on_first` before it looks at its first buffer.
struct Checking<'a, F: FnMut()> {
    want: &'a [u8],
    got: usize,
    wrong: usize,
    on_first: Option<F>,
}

impl<F: FnMut()> std::io::Write for Checking<'_, F> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(mut f) = self.on_first.take() {
            f();
        }
        let want = self
            .want
            .get(self.got..self.got + buf.len())
            .unwrap_or_default();
        self.wrong += buf.iter().zip(want).filter(|(a, b)| a != b).count();
        self.wrong += buf.len() - want.len();
        self.got += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// XORs `mask` into the byte at `at` of the live file `path` (through the page cache, as
/// another writer would).
fn flip_live(path: &Path, at: u64, mask: u8) {
    use std::os::unix::fs::FileExt as _;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ mask], at).unwrap();
}

const MIB: usize = 1 << 20;

/// Item 10 of issue 16: a blob larger than the verify buffer whose bytes change while it
/// is being read. The old two-pass read hashed the blob, then streamed a second read that
/// nothing checked, so the changed bytes reached the writer. Now each 1 MiB chunk is
/// checked against the digest stored with the blob before any byte of it is written: the
/// writer gets the chunks before the changed one, intact, and the error names the chunk.
#[test]
fn bytes_changed_during_a_read_never_reach_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(5 * MIB + 100, 77);
    let hash = BlobHash::of(&data);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store(&data).unwrap();
    }
    let file = dir.path().join("blobs.mdb");
    let content = find(&std::fs::read(&file).unwrap(), &data[..64]) as u64;
    let target = content + 3 * MIB as u64 + 5;
    let small_buffer = SidecarOptions::default().verify_buffer(64 << 10);
    let mut cases = vec![
        small_buffer.clone(),
        small_buffer.clone().read_chunk(8192),
        small_buffer.clone().cache_policy(CachePolicy::Direct),
        small_buffer.cache_policy(CachePolicy::Keep),
    ];
    cases.extend(all_policies());
    for opts in cases {
        let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
        let mut sink = Checking {
            want: &data,
            got: 0,
            wrong: 0,
            on_first: Some(|| flip_live(&file, target, 0x40)),
        };
        let r = sc.read_to(&Payload::BlobRef(hash), &mut sink);
        assert_eq!(sink.wrong, 0, "{opts:?}: changed bytes reached the writer");
        match r {
            Err(Error::CorruptedChunk {
                hash: h,
                offset,
                len,
            }) => assert_eq!(
                (h, offset, len),
                (hash, 3 * MIB as u64, MIB as u64),
                "{opts:?}"
            ),
            other => panic!("{opts:?}: {other:?}"),
        }
        // No byte of the bad chunk (or any later one) was written.
        assert_eq!(sink.got, 3 * MIB, "{opts:?}");
        drop(sc);
        flip_live(&file, target, 0x40); // undo for the next case
    }
}

/// A damaged chunk in the middle of a large blob: the chunks before it reach the writer
/// intact, the error names the damaged chunk, nothing after it is written; `read` returns
/// no bytes at all.
#[test]
fn a_damaged_chunk_is_named_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(4 * MIB + 3, 78);
    let hash = BlobHash::of(&data);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store(&data).unwrap();
    }
    let file = dir.path().join("blobs.mdb");
    let content = find(&std::fs::read(&file).unwrap(), &data[..64]);
    for (chunk, at) in [(0usize, 17usize), (2, 2 * MIB), (4, 4 * MIB + 2)] {
        flip(&file, content + at, 0x02);
        for opts in all_policies() {
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut sink = Checking::<fn()> {
                want: &data,
                got: 0,
                wrong: 0,
                on_first: None,
            };
            match sc.read_to(&Payload::BlobRef(hash), &mut sink) {
                Err(Error::CorruptedChunk {
                    hash: h,
                    offset,
                    len,
                }) => {
                    let want_len = MIB.min(data.len() - chunk * MIB) as u64;
                    assert_eq!((h, offset, len), (hash, (chunk * MIB) as u64, want_len));
                }
                other => panic!("{opts:?}: {other:?}"),
            }
            assert_eq!((sink.got, sink.wrong), (chunk * MIB, 0), "{opts:?}");
            assert!(matches!(
                sc.read(&Payload::BlobRef(hash)),
                Err(Error::CorruptedChunk { .. })
            ));
        }
        flip(&file, content + at, 0x02);
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        assert!(sc.read(&Payload::BlobRef(hash)).unwrap() == data);
    }
}

/// A damaged chunk digest (in the record's table) is caught by the header's check before
/// any content goes out, with or without `verify_on_read`.
#[test]
fn a_damaged_digest_table_is_corrupted_before_any_content() {
    let dir = tempfile::tempdir().unwrap();
    let data = bytes(3 * MIB, 79);
    let hash = BlobHash::of(&data);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store(&data).unwrap();
    }
    let file = dir.path().join("blobs.mdb");
    let content = find(&std::fs::read(&file).unwrap(), &data[..64]);
    flip(&file, content - 16 * 2 + 3, 0x10); // chunk 1's digest
    for verify_on_read in [true, false] {
        for opts in all_policies() {
            let opts = opts.verify_on_read(verify_on_read);
            let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
            let mut out = Vec::new();
            assert!(
                matches!(
                    sc.read_to(&Payload::BlobRef(hash), &mut out),
                    Err(Error::Corrupted { hash: h, what: "blob header checksum mismatch" }) if h == hash
                ),
                "{opts:?}"
            );
            assert!(out.is_empty());
        }
    }
}
