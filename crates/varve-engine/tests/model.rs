//! A model test: random appends (every expected-version kind), multi-appends, reads,
//! checkpoints and reopens against an in-memory model of the log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use varve_engine::{Direction, Error, EventData, ExpectedVersion, Varve};

#[derive(Debug, Clone)]
enum Expect {
    Any,
    NoStream,
    StreamExists,
    Exact(u64),
    /// Exact with the stream's true current version (so some succeed).
    Current,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: u8,
        expect: Expect,
        sizes: Vec<usize>,
    },
    Multi {
        a: u8,
        b: u8,
        ea: Expect,
        eb: Expect,
        sizes: Vec<usize>,
    },
    ReadAll {
        from: u64,
        back: bool,
        limit: usize,
    },
    ReadStream {
        stream: u8,
        from: u64,
        back: bool,
        limit: usize,
    },
    Checkpoint,
    Reopen,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![
        Just(Expect::Any),
        Just(Expect::NoStream),
        Just(Expect::StreamExists),
        (0u64..6).prop_map(Expect::Exact),
        Just(Expect::Current),
    ]
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![8 => 0usize..64, 1 => 2040usize..2100], 1..4)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4, expect(), sizes()).prop_map(|(stream, expect, sizes)| Op::Append { stream, expect, sizes }),
        2 => (0u8..4, 0u8..4, expect(), expect(), sizes()).prop_map(|(a, b, ea, eb, sizes)| Op::Multi { a, b, ea, eb, sizes }),
        2 => (0u64..40, any::<bool>(), 1usize..50).prop_map(|(from, back, limit)| Op::ReadAll { from, back, limit }),
        2 => (0u8..4, 0u64..10, any::<bool>(), 1usize..20).prop_map(|(stream, from, back, limit)| Op::ReadStream { stream, from, back, limit }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// (stream, version, payload) by position.
    log: Vec<(String, u64, Vec<u8>)>,
    heads: HashMap<String, u64>,
}

impl Model {
    fn actual(&self, s: &str) -> Option<u64> {
        self.heads.get(s).map(|n| n - 1)
    }
    fn resolve(&self, s: &str, e: &Expect) -> ExpectedVersion {
        match e {
            Expect::Any => ExpectedVersion::Any,
            Expect::NoStream => ExpectedVersion::NoStream,
            Expect::StreamExists => ExpectedVersion::StreamExists,
            Expect::Exact(v) => ExpectedVersion::Exact(*v),
            Expect::Current => self
                .actual(s)
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact),
        }
    }
    fn push(&mut self, s: &str, payloads: &[Vec<u8>]) {
        for p in payloads {
            let h = self.heads.entry(s.to_owned()).or_default();
            self.log.push((s.to_owned(), *h, p.clone()));
            *h += 1;
        }
    }
}

fn payloads(seed: usize, sizes: &[usize]) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (seed * 7 + i * 13 + j) as u8).collect())
        .collect()
}

fn check_event(db: &Varve, m: &Model, e: &varve_engine::RecordedEvent) {
    let (s, v, p) = &m.log[e.position as usize];
    assert_eq!(&*e.stream, s);
    assert_eq!(e.version, *v);
    assert_eq!(&db.read_payload(e).unwrap(), p);
}

fn run(ops: Vec<Op>) {
    let dir = tempdir();
    let mut db = open(dir.path());
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                stream,
                expect,
                sizes,
            } => {
                let s = format!("s{stream}");
                let ex = m.resolve(&s, &expect);
                let ps = payloads(step, &sizes);
                let evs: Vec<EventData<'_>> = ps.iter().map(|p| ev(p)).collect();
                let r = db.append(&s, ex, &evs);
                let actual = m.actual(&s);
                if ex.admits(actual) {
                    let r = r.unwrap();
                    assert_eq!(r.first_position, m.log.len() as u64);
                    assert_eq!(r.first_version, actual.map_or(0, |a| a + 1));
                    m.push(&s, &ps);
                    assert_eq!(r.last_position, m.log.len() as u64 - 1);
                } else {
                    match r {
                        Err(Error::WrongExpectedVersion { actual: a, .. }) => assert_eq!(a, actual),
                        other => panic!("{other:?}"),
                    }
                }
            }
            Op::Multi {
                a,
                b,
                ea,
                eb,
                sizes,
            } => {
                let (sa, sb) = (format!("s{a}"), format!("s{b}"));
                let (xa, xb) = (m.resolve(&sa, &ea), m.resolve(&sb, &eb));
                let ps = payloads(step, &sizes);
                let evs: Vec<EventData<'_>> = ps.iter().map(|p| ev(p)).collect();
                let r = db.append_multi(&[(&sa, xa, &evs), (&sb, xb, &evs[..1])]);
                if a == b {
                    assert!(matches!(r, Err(Error::DuplicateStream { .. })), "{r:?}");
                } else if xa.admits(m.actual(&sa)) && xb.admits(m.actual(&sb)) {
                    let r = r.unwrap();
                    assert_eq!(r.first_position, m.log.len() as u64);
                    m.push(&sa, &ps);
                    m.push(&sb, &ps[..1]);
                    assert_eq!(r.last_position, m.log.len() as u64 - 1);
                } else {
                    assert!(
                        matches!(r, Err(Error::WrongExpectedVersion { .. })),
                        "{r:?}"
                    );
                }
            }
            Op::ReadAll { from, back, limit } => {
                let dir = if back {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let got = db.read_all(from, dir, limit).unwrap();
                let n = m.log.len() as u64;
                let want: Vec<u64> = if back {
                    if n == 0 {
                        vec![]
                    } else {
                        (0..=from.min(n - 1)).rev().take(limit).collect()
                    }
                } else {
                    (from..n).take(limit).collect()
                };
                assert_eq!(got.iter().map(|e| e.position).collect::<Vec<_>>(), want);
                for e in &got {
                    check_event(&db, &m, e);
                }
            }
            Op::ReadStream {
                stream,
                from,
                back,
                limit,
            } => {
                let s = format!("s{stream}");
                let dir = if back {
                    Direction::Backward
                } else {
                    Direction::Forward
                };
                let r = db.read_stream(&s, dir, from, limit);
                match m.heads.get(&s) {
                    None => assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}"),
                    Some(&count) => {
                        let got = r.unwrap();
                        let want: Vec<u64> = if back {
                            (0..=from.min(count - 1)).rev().take(limit).collect()
                        } else {
                            (from..count).take(limit).collect()
                        };
                        assert_eq!(got.iter().map(|e| e.version).collect::<Vec<_>>(), want);
                        for e in &got {
                            assert_eq!(&*e.stream, s);
                            check_event(&db, &m, e);
                        }
                    }
                }
            }
            Op::Checkpoint => {
                db.checkpoint().unwrap();
                assert_eq!(db.stats().unwrap().checkpoint_lag_events, 0);
            }
            Op::Reopen => {
                if step % 2 == 0 {
                    db.close().unwrap();
                } else {
                    drop(db);
                }
                db = open(dir.path());
            }
        }
    }
    let got = all(&db);
    assert_eq!(got.len(), m.log.len());
    for e in &got {
        check_event(&db, &m, e);
    }
    let blobs: std::collections::HashSet<_> = got
        .iter()
        .filter_map(|e| match e.payload {
            varve_engine::EventPayload::Blob { hash, .. } => Some(hash),
            _ => None,
        })
        .collect();
    assert_eq!(db.stats().unwrap().blobs, blobs.len() as u64);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("VARVE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        .. ProptestConfig::default()
    })]
    #[test]
    fn the_store_behaves_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        run(ops);
    }
}
