//! Model test: random put/update/delete/get/iter/flush/compact/reopen sequences against a
//! `HashMap`, over 64 KiB, 1 MiB and 32 MiB pages, with and without compression.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use proptest::prelude::*;
use varve_slotted::{Compression, Options, Store};

#[derive(Clone, Debug)]
enum Op {
    Put { id: u64, len: usize, seed: u8 },
    Delete { id: u64 },
    Get { id: u64 },
    Iter,
    Flush,
    Compact,
    Reopen,
    Train,
}

/// A value of `len` bytes: JSON-like text for even seeds (compressible), noise for odd ones.
fn value(len: usize, seed: u8) -> Vec<u8> {
    if seed.is_multiple_of(2) {
        let mut v = Vec::with_capacity(len);
        let mut i = 0u32;
        while v.len() < len {
            v.extend_from_slice(
                format!("{{\"field_{}\":\"value {} of {seed}\"}},", i % 7, i).as_bytes(),
            );
            i += 1;
        }
        v.truncate(len);
        v
    } else {
        let mut x = u32::from(seed)
            .wrapping_mul(2_654_435_761)
            .wrapping_add(len as u32);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }
}

fn op() -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        8 => 0usize..300,
        4 => 300usize..4000,
        1 => 60_000usize..90_000,
    ];
    prop_oneof![
        30 => (0u64..48, len, any::<u8>()).prop_map(|(id, len, seed)| Op::Put { id, len, seed }),
        10 => (0u64..48).prop_map(|id| Op::Delete { id }),
        10 => (0u64..48).prop_map(|id| Op::Get { id }),
        2 => Just(Op::Iter),
        5 => Just(Op::Flush),
        2 => Just(Op::Compact),
        3 => Just(Op::Reopen),
        1 => Just(Op::Train),
    ]
}

fn check_all(store: &Store, model: &HashMap<u64, Vec<u8>>) {
    // Bounded: an iterator that repeats itself fails here instead of running forever.
    let mut got: Vec<(u64, Vec<u8>)> = store
        .iter()
        .take(model.len() + 1)
        .map(Result::unwrap)
        .collect();
    let mut want: Vec<(u64, Vec<u8>)> = model.iter().map(|(k, v)| (*k, v.clone())).collect();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert!(got == want, "iter differs from the model");
    let st = store.stats().unwrap();
    assert_eq!(st.live_values, model.len() as u64);
    assert_eq!(
        st.live_bytes,
        model.values().map(|v| v.len() as u64).sum::<u64>()
    );
    assert_eq!(st.corrupt_entries, 0);
}

fn run(page_size: u64, compression: Compression, ops: Vec<Op>, threshold: f64, retired: u64) {
    let dir = scratch();
    let opts = Options::default()
        .min_page_size(page_size)
        .compression(compression)
        .compact_threshold(threshold)
        .compact_step_bytes(4096)
        .flush_after_retired_bytes(retired)
        .max_value_size(100_000);
    let mut store = Store::create(dir.path(), opts.clone()).unwrap();
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for op in ops {
        match op {
            Op::Put { id, len, seed } => {
                let v = value(len, seed);
                let replaced = store.put(id, &v).unwrap();
                assert_eq!(replaced, model.insert(id, v).is_some());
            }
            Op::Delete { id } => {
                let got = store.delete(id).unwrap();
                assert_eq!(got, model.remove(&id).map(|v| v.len()));
            }
            Op::Get { id } => {
                assert_eq!(store.get(id).unwrap(), model.get(&id).cloned());
                let len = store.get_with(id, |b| b.len()).unwrap();
                assert_eq!(len, model.get(&id).map(Vec::len));
            }
            Op::Iter => check_all(&store, &model),
            Op::Flush => store.flush().unwrap(),
            Op::Compact => {
                store.compact().unwrap();
                let st = store.stats().unwrap();
                assert_eq!(st.pages_compacting, 0);
            }
            Op::Reopen => {
                drop(store);
                store = Store::open(dir.path(), opts.clone()).unwrap();
                assert_eq!(store.stats().unwrap().summaries_rebuilt, 0);
                check_all(&store, &model);
            }
            Op::Train => {
                store.train_dictionary(16, 2048).unwrap();
            }
        }
    }
    check_all(&store, &model);
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    check_all(&store, &model);
}

/// Cases per configuration: a handful by default (the suite runs once per mutant), more
/// with `VARVE_MODEL_CASES=N`.
fn cases(default: u32) -> u32 {
    std::env::var("VARVE_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(5), ..ProptestConfig::default() })]

    #[test]
    fn matches_a_hashmap_with_64k_pages_lz4(ops in proptest::collection::vec(op(), 1..120), t in 0.02f64..0.5, r in 0u64..32 * 1024) {
        run(64 * 1024, Compression::Lz4, ops, t, r);
    }

    #[test]
    fn matches_a_hashmap_with_64k_pages_raw(ops in proptest::collection::vec(op(), 1..120), t in 0.02f64..0.5, r in 0u64..32 * 1024) {
        run(64 * 1024, Compression::None, ops, t, r);
    }

    #[test]
    fn matches_a_hashmap_with_1m_pages_lz4(ops in proptest::collection::vec(op(), 1..120), t in 0.02f64..0.5, r in 0u64..32 * 1024) {
        run(1024 * 1024, Compression::Lz4, ops, t, r);
    }

    #[test]
    fn matches_a_hashmap_with_1m_pages_raw(ops in proptest::collection::vec(op(), 1..120), t in 0.02f64..0.5, r in 0u64..32 * 1024) {
        run(1024 * 1024, Compression::None, ops, t, r);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2), ..ProptestConfig::default() })]

    #[test]
    fn matches_a_hashmap_with_32m_pages_lz4(ops in proptest::collection::vec(op(), 1..120)) {
        run(32 * 1024 * 1024, Compression::Lz4, ops, 0.3, 8 << 20);
    }

    #[test]
    fn matches_a_hashmap_with_32m_pages_raw(ops in proptest::collection::vec(op(), 1..120)) {
        run(32 * 1024 * 1024, Compression::None, ops, 0.3, 8 << 20);
    }
}

/// A scratch directory on tmpfs when there is one (fsync is free there, so the suite stays
/// fast enough for mutation testing; mapping and page-cache behaviour are the same).
fn scratch() -> tempfile::TempDir {
    varve_testkit::dirs::in_memory()
}
