//! Model-based test: random stores, batched stores, releases and reopens against a
//! `BTreeMap` of reference counts; every blob the model holds reads back intact and every
//! blob it does not hold is `MissingBlob`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use varve_sidecar::{BlobHash, Error, Payload, Sidecar, SidecarOptions};

/// Contents the operations pick from: two inline sizes and blobs around the boundaries.
fn pool() -> Vec<Vec<u8>> {
    [0usize, 2047, 2048, 4000, 4056, 70_000, 300_000]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (j * 31 + i * 7) as u8).collect())
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Store(usize),
    StoreMany(Vec<usize>),
    Release(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..7usize).prop_map(Op::Store),
        2 => proptest::collection::vec(0..7usize, 1..4).prop_map(Op::StoreMany),
        3 => (0..7usize).prop_map(Op::Release),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn sidecar_matches_a_refcount_model(ops in proptest::collection::vec(op(), 1..25)) {
        let pool = pool();
        let dir = tempfile::tempdir().unwrap();
        let opts = SidecarOptions::default().initial_map_size(1 << 20);
        let mut sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
        let mut model: BTreeMap<BlobHash, u64> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Store(i) => {
                    let p = sc.store(&pool[i]).unwrap();
                    if pool[i].len() >= 2048 {
                        *model.entry(BlobHash::of(&pool[i])).or_default() += 1;
                        prop_assert_eq!(p, Payload::BlobRef(BlobHash::of(&pool[i])));
                    } else {
                        prop_assert_eq!(p, Payload::Inline(pool[i].clone()));
                    }
                }
                Op::StoreMany(is) => {
                    let refs: Vec<&[u8]> = is.iter().map(|&i| pool[i].as_slice()).collect();
                    let ps = sc.store_many(&refs).unwrap();
                    prop_assert_eq!(ps.len(), is.len());
                    for (&i, p) in is.iter().zip(&ps) {
                        prop_assert_eq!(&sc.read(p).unwrap(), &pool[i]);
                        if pool[i].len() >= 2048 {
                            *model.entry(BlobHash::of(&pool[i])).or_default() += 1;
                        }
                    }
                }
                Op::Release(i) => {
                    let h = BlobHash::of(&pool[i]);
                    match model.get_mut(&h) {
                        Some(c) => {
                            *c -= 1;
                            prop_assert_eq!(sc.release(&h).unwrap(), *c);
                            if *c == 0 {
                                model.remove(&h);
                            }
                        }
                        None => {
                            let missing = matches!(sc.release(&h), Err(Error::MissingBlob(x)) if x == h);
                            prop_assert!(missing);
                        }
                    }
                }
                Op::Reopen => {
                    drop(sc);
                    sc = Sidecar::open(dir.path(), opts.clone()).unwrap();
                }
            }
            for b in &pool {
                let h = BlobHash::of(b);
                prop_assert_eq!(sc.refcount(&h).unwrap(), model.get(&h).copied());
            }
        }
        let stats = sc.stats().unwrap();
        prop_assert_eq!(stats.blobs, model.len() as u64);
        for b in &pool {
            let h = BlobHash::of(b);
            let got = sc.read(&Payload::BlobRef(h));
            if model.contains_key(&h) {
                prop_assert_eq!(&got.unwrap(), b);
            } else {
                let missing = matches!(got, Err(Error::MissingBlob(x)) if x == h);
                prop_assert!(missing);
            }
        }
    }
}
