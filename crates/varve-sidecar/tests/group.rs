//! Concurrent `store`/`store_many` calls from many threads (group commit): every blob reads
//! back, every reference is counted once per store, `blobs()` lists exactly what is stored.
//! `VARVE_SIDECAR_GROUP_ROUNDS=N` sets the rounds per thread (default 12).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use varve_sidecar::{BlobHash, Payload, Sidecar, SidecarOptions};
use varve_testkit::bytes::noise as bytes;

fn rounds() -> u64 {
    std::env::var("VARVE_SIDECAR_GROUP_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

#[test]
fn concurrent_stores_read_back_with_right_refcounts() {
    const THREADS: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let sc = Sidecar::open(dir.path(), SidecarOptions::default()).unwrap();
    // Blobs every thread stores (their counts add up across threads), next to each
    // thread's own.
    let shared: Vec<Vec<u8>> = (0..3)
        .map(|i| bytes(2048 + 4096 * i, 1000 + i as u64))
        .collect();
    let rounds = rounds();
    let stored: Vec<Vec<(Vec<u8>, Payload)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (sc, shared) = (&sc, &shared);
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    for r in 0..rounds {
                        let own = bytes(
                            2048 + ((t * 7919 + r * 104_729) % 200_000) as usize,
                            t << 32 | r,
                        );
                        let small = bytes(100, r); // stays inline
                        let sh = &shared[(r % 3) as usize];
                        let payloads = if r % 2 == 0 {
                            sc.store_many(&[&own, &small, sh]).unwrap()
                        } else {
                            vec![
                                sc.store(&own).unwrap(),
                                sc.store(&small).unwrap(),
                                sc.store(sh).unwrap(),
                            ]
                        };
                        assert_eq!(payloads[1], Payload::Inline(small.clone()));
                        mine.push((own, payloads[0].clone()));
                        mine.push((sh.clone(), payloads[2].clone()));
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut want: BTreeMap<BlobHash, (u64, u64)> = BTreeMap::new();
    for (b, p) in stored.iter().flatten() {
        let h = BlobHash::of(b);
        assert_eq!(*p, Payload::BlobRef(h));
        assert!(sc.read(p).unwrap() == *b);
        let e = want.entry(h).or_insert((0, b.len() as u64));
        e.0 += 1;
    }
    let listed: BTreeMap<BlobHash, (u64, u64)> = sc
        .blobs()
        .unwrap()
        .into_iter()
        .map(|i| (i.hash, (i.refcount, i.len)))
        .collect();
    assert_eq!(listed, want);
    for s in &shared {
        let n = sc.refcount(&BlobHash::of(s)).unwrap().unwrap();
        assert!(n >= THREADS * (rounds / 3), "shared blob stored {n} times");
    }
    // Release every reference: the store ends empty.
    for (hash, (count, _)) in &want {
        for left in (0..*count).rev() {
            assert_eq!(sc.release(hash).unwrap(), left);
        }
    }
    assert!(sc.blobs().unwrap().is_empty());
    assert_eq!(sc.stats().unwrap().blobs, 0);
}
