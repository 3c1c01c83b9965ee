//! Model test: random appends, batches, reopens and truncations (with 0-2 spares kept for
//! recycling) against a `Vec` reference.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use varve_wal::{Error, Options, SyncMode, Wal};

#[derive(Debug, Clone)]
enum Op {
    Append { kind: u8, len: usize, fill: u8 },
    Batch { lens: Vec<usize>, fill: u8 },
    Reopen,
    TruncateBefore { frac: f64 },
    ReadFrom { frac: f64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u8>(), 0usize..1200, any::<u8>()).prop_map(|(kind, len, fill)| Op::Append { kind, len, fill }),
        3 => (prop::collection::vec(0usize..700, 0..5), any::<u8>()).prop_map(|(lens, fill)| Op::Batch { lens, fill }),
        1 => Just(Op::Reopen),
        1 => (0.0f64..1.2).prop_map(|frac| Op::TruncateBefore { frac }),
        1 => (0.0f64..1.2).prop_map(|frac| Op::ReadFrom { frac }),
    ]
}

fn payload(len: usize, fill: u8, salt: usize) -> Vec<u8> {
    (0..len).map(|i| fill ^ (i + salt) as u8).collect()
}

const MAX: usize = 1024;

fn opts(mode: SyncMode, spares: usize) -> Options {
    Options::default()
        .segment_size(16 << 10)
        .max_record_size(MAX)
        .sync_mode(mode)
        .recycle_segments(spares)
}

fn check(wal: &Wal, model: &[(u8, Vec<u8>)], from: u64) {
    let got: Vec<_> = wal.iter_from(from).unwrap().map(|r| r.unwrap()).collect();
    let want = &model[(from - 1).min(model.len() as u64) as usize..];
    assert_eq!(got.len(), want.len());
    for (i, (r, (kind, p))) in got.iter().zip(want).enumerate() {
        assert_eq!(r.lsn, from + i as u64);
        assert_eq!((r.kind, &r.payload), (*kind, p));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_a_vec(
        ops in prop::collection::vec(op(), 1..40),
        lax in any::<bool>(),
        spares in 0usize..3,
    ) {
        let mode = if lax { SyncMode::Never } else { SyncMode::Always };
        let d = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(d.path(), opts(mode, spares)).unwrap();
        // model[i] is the record with LSN i + 1.
        let mut model: Vec<(u8, Vec<u8>)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Append { kind, len, fill } => {
                    let p = payload(len, fill, step);
                    match wal.append_kind(kind, &p) {
                        Ok(t) => {
                            prop_assert!(len <= MAX);
                            prop_assert_eq!(t.wait().unwrap(), model.len() as u64 + 1);
                            model.push((kind, p));
                        }
                        Err(Error::RecordTooLarge { size, max }) => {
                            prop_assert!(len > MAX);
                            prop_assert_eq!((size, max), (len, MAX));
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
                Op::Batch { lens, fill } => {
                    let ps: Vec<Vec<u8>> =
                        lens.iter().enumerate().map(|(i, &l)| payload(l, fill, step + i)).collect();
                    let refs: Vec<&[u8]> = ps.iter().map(Vec::as_slice).collect();
                    match wal.append_batch(&refs) {
                        Ok(t) => {
                            prop_assert_eq!(t.records() as usize, ps.len());
                            prop_assert_eq!(t.wait().unwrap(), model.len() as u64 + 1);
                            model.extend(ps.into_iter().map(|p| (0, p)));
                        }
                        Err(Error::EmptyBatch) => prop_assert!(lens.is_empty()),
                        Err(Error::BatchTooLarge { size, .. }) => {
                            prop_assert!(size > (16 << 10) - 32);
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
                Op::Reopen => {
                    drop(wal);
                    wal = Wal::open(d.path(), opts(mode, spares)).unwrap();
                    let rep = wal.recovery_report();
                    prop_assert_eq!(rep.next_lsn, model.len() as u64 + 1);
                    prop_assert_eq!(rep.dropped_bytes, 0);
                }
                Op::TruncateBefore { frac } => {
                    let lsn = (frac * (model.len() + 1) as f64) as u64;
                    let before = wal.first_lsn();
                    wal.truncate_before(lsn).unwrap();
                    let first = wal.first_lsn();
                    prop_assert!(first >= before);
                    prop_assert!(first <= lsn.max(before), "kept records at or above {}", lsn);
                }
                Op::ReadFrom { frac } => {
                    let first = wal.first_lsn();
                    let lsn = first + (frac * (model.len() as u64 + 1 - first) as f64) as u64;
                    check(&wal, &model, lsn);
                }
            }
            prop_assert_eq!(wal.durable_lsn(), model.len() as u64);
            check(&wal, &model, wal.first_lsn());
        }
    }
}
