//! Behaviour of the public API: routing, round trips under every cache policy, dedup and
//! reference counts, reopen, size limits, map growth, concurrent readers.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use varve_sidecar::{
    BlobHash, CachePolicy, Error, MAX_INLINE_SIZE, Payload, Sidecar, SidecarOptions,
};
use varve_testkit::bytes::noise as bytes;

fn policies() -> [SidecarOptions; 5] {
    let base = SidecarOptions::default;
    [
        base(),
        base().cache_policy(CachePolicy::Direct),
        base().cache_policy(CachePolicy::Keep),
        // Blobs over the verify buffer take the two-pass path; small chunks exercise the
        // chunk loop.
        base().verify_buffer(4096).read_chunk(4096),
        base().verify_on_read(false).read_chunk(8192),
    ]
}

#[test]
fn routing_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    assert_eq!(MAX_INLINE_SIZE, 2048);
    for len in [0, 1, 2047] {
        let b = bytes(len, 1);
        assert_eq!(
            sc.store(&b).unwrap(),
            Payload::Inline(b.clone()),
            "len {len}"
        );
    }
    for len in [2048, 2049, 5 << 20] {
        let b = bytes(len, 2);
        let p = sc.store(&b).unwrap();
        assert_eq!(p, Payload::BlobRef(BlobHash::of(&b)), "len {len}");
        assert_eq!(sc.refcount(&BlobHash::of(&b)).unwrap(), Some(1));
        assert_eq!(sc.blob_len(&BlobHash::of(&b)).unwrap(), Some(len as u64));
    }
    let st = sc.stats().unwrap();
    assert_eq!(st.blobs, 3);
    assert_eq!(st.blob_bytes, 2048 + 2049 + (5 << 20));
}

#[test]
fn round_trip_under_every_policy() {
    let sizes = [
        0usize,
        100,
        2048,
        2049,
        4096 - 40,
        4096,
        9000,
        65536,
        1 << 20,
        (3 << 20) + 17,
    ];
    for opts in policies() {
        let dir = tempfile::tempdir().unwrap();
        let sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
        let data: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| bytes(n, i as u64 + 10))
            .collect();
        let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        let payloads = sc.store_many(&refs).unwrap();
        for (p, d) in payloads.iter().zip(&data) {
            assert_eq!(&sc.read(p).unwrap(), d, "{opts:?} len {}", d.len());
            let mut out = Vec::new();
            assert_eq!(sc.read_to(p, &mut out).unwrap(), d.len() as u64);
            assert_eq!(&out, d, "{opts:?} len {}", d.len());
        }
    }
}

#[test]
fn dedup_and_release() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    let b = bytes(10_000, 3);
    let h = BlobHash::of(&b);
    let size_after_one = {
        sc.store(&b).unwrap();
        sc.stats().unwrap()
    };
    assert_eq!(sc.store(&b).unwrap(), Payload::BlobRef(h));
    assert_eq!(sc.refcount(&h).unwrap(), Some(2));
    let st = sc.stats().unwrap();
    assert_eq!(st.blobs, 1);
    assert_eq!(st.blob_bytes, size_after_one.blob_bytes);
    assert_eq!(sc.release(&h).unwrap(), 1);
    assert_eq!(sc.read(&Payload::BlobRef(h)).unwrap(), b);
    assert_eq!(sc.release(&h).unwrap(), 0);
    assert_eq!(sc.refcount(&h).unwrap(), None);
    assert!(matches!(sc.read(&Payload::BlobRef(h)), Err(Error::MissingBlob(x)) if x == h));
    assert!(matches!(sc.release(&h), Err(Error::MissingBlob(x)) if x == h));
    assert_eq!(sc.stats().unwrap().blobs, 0);
    // The same bytes twice in one batch: one blob, two references.
    let ps = sc.store_many(&[&b, &b[..5000], &b]).unwrap();
    assert_eq!(ps[0], ps[2]);
    assert_eq!(sc.refcount(&h).unwrap(), Some(2));
    assert_eq!(sc.refcount(&BlobHash::of(&b[..5000])).unwrap(), Some(1));
}

#[test]
fn missing_blob_is_an_error_and_writes_nothing_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    let h = BlobHash([0xab; 32]);
    let mut out = Vec::new();
    assert!(matches!(
        sc.read_to(&Payload::BlobRef(h), &mut out),
        Err(Error::MissingBlob(x)) if x == h
    ));
    assert!(out.is_empty());
    let mut out = Vec::new();
    assert_eq!(
        sc.read_to(&Payload::Inline(vec![1, 2]), &mut out).unwrap(),
        2
    );
    assert_eq!(out, vec![1, 2]);
}

#[test]
fn reopen_keeps_blobs_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let a = bytes(3000, 4);
    let b = bytes(700_000, 5);
    {
        let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
        sc.store_many(&[&a, &b, &b]).unwrap();
        // A second open in the same process is refused.
        assert!(matches!(
            Sidecar::open(dir.path(), SidecarOptions::default()),
            Err(Error::Lmdb(heed::Error::EnvAlreadyOpened))
        ));
    }
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    assert_eq!(sc.read(&Payload::BlobRef(BlobHash::of(&a))).unwrap(), a);
    assert_eq!(sc.read(&Payload::BlobRef(BlobHash::of(&b))).unwrap(), b);
    assert_eq!(sc.refcount(&BlobHash::of(&b)).unwrap(), Some(2));
    assert!(dir.path().join("blobs.mdb").is_file());
    assert_eq!(sc.path(), dir.path().join("blobs.mdb"));
}

#[test]
fn oversized_blob_is_rejected_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SidecarOptions::default().max_blob_size(10_000);
    let sc = Sidecar::open(dir.path(), opts).unwrap();
    assert!(
        format!("{:?}", SidecarOptions::default())
            .contains(&format!("max_blob_size: {}", 1u64 << 30)),
        "the documented default"
    );
    let ok = bytes(10_000, 6);
    let big = bytes(10_001, 7);
    match sc.store_many(&[&ok, &big]) {
        Err(Error::BlobTooLarge { size, max }) => assert_eq!((size, max), (10_001, 10_000)),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sc.stats().unwrap().blobs,
        0,
        "the good one was not written either"
    );
    assert!(sc.store(&ok).is_ok());
}

#[test]
fn map_grows_instead_of_failing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SidecarOptions::default().initial_map_size(1 << 20);
    let sc = Sidecar::open(dir.path(), opts).unwrap();
    let first = sc.stats().unwrap().map_size;
    let blobs: Vec<Vec<u8>> = (0..12).map(|i| bytes(600_000, 100 + i)).collect();
    for b in &blobs {
        sc.store(b).unwrap();
    }
    let big: Vec<&[u8]> = blobs.iter().map(|b| &b[..300_000]).collect();
    sc.store_many(&big).unwrap();
    let st = sc.stats().unwrap();
    assert!(st.map_size > first, "{} > {}", st.map_size, first);
    assert_eq!(st.blobs, 24);
    for b in &blobs {
        assert_eq!(&sc.read(&Payload::BlobRef(BlobHash::of(b))).unwrap(), b);
    }
}

#[test]
fn map_ceiling_is_store_full() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SidecarOptions::default()
        .initial_map_size(1 << 20)
        .max_map_size(2 << 20);
    let sc = Sidecar::open(dir.path(), opts).unwrap();
    let b = bytes(3 << 20, 8);
    assert!(matches!(sc.store(&b), Err(Error::StoreFull { .. })));
    assert_eq!(sc.stats().unwrap().blobs, 0);
    sc.store(&b[..200_000]).unwrap();
}

#[test]
fn concurrent_readers_and_a_growing_writer() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SidecarOptions::default().initial_map_size(1 << 20);
    let sc = Arc::new(Sidecar::open(dir.path(), opts).unwrap());
    let seed: Vec<Vec<u8>> = (0..4)
        .map(|i| bytes(100_000 + i * 1000, 200 + i as u64))
        .collect();
    let payloads: Vec<Payload> = seed.iter().map(|b| sc.store(b).unwrap()).collect();
    let seed = Arc::new(seed);
    let readers: Vec<_> = (0..4)
        .map(|t| {
            let sc = Arc::clone(&sc);
            let seed = Arc::clone(&seed);
            let payloads = payloads.clone();
            std::thread::spawn(move || {
                for i in 0..60 {
                    let k = (i + t) % payloads.len();
                    assert_eq!(sc.read(&payloads[k]).unwrap(), seed[k]);
                }
            })
        })
        .collect();
    // Meanwhile a writer forces several map resizes.
    for i in 0..10 {
        sc.store(&bytes(500_000, 300 + i)).unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(sc.stats().unwrap().blobs, 14);
}

#[test]
fn direct_policy_uses_o_direct_where_the_filesystem_allows() {
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::open(
        dir.path(),
        SidecarOptions::default().cache_policy(CachePolicy::Direct),
    )
    .unwrap();
    // tmpfs refuses O_DIRECT on old kernels; ext4/xfs allow it.
    let on_tmpfs = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.contains(" /tmp tmpfs "));
    if !on_tmpfs {
        assert!(sc.direct_io());
    }
    let b = bytes(300_000, 77);
    let p = sc.store(&b).unwrap();
    assert_eq!(sc.read(&p).unwrap(), b);
    assert!(
        format!("{:?}", sc.options()).contains("cache_policy: Direct"),
        "{:?}",
        sc.options()
    );
}
