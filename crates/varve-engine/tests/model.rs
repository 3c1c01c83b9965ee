//! A model test: random appends (every expected-version kind), multi-appends, reads, soft
//! deletes, tombstones, truncations, snapshots, consumer commits, checkpoints and reopens
//! against an in-memory model of the log.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use varve_engine::{DeleteMode, Direction, Error, EventData, ExpectedVersion, Varve};

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
    Delete {
        stream: u8,
        expect: Expect,
        tombstone: bool,
    },
    Truncate {
        stream: u8,
        version: u64,
    },
    Snapshot {
        stream: u8,
        version: u64,
    },
    Commit {
        consumer: u8,
        position: u64,
        reset: bool,
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
        1 => (0u8..4, expect(), prop_oneof![4 => Just(false), 1 => Just(true)]).prop_map(|(stream, expect, tombstone)| Op::Delete { stream, expect, tombstone }),
        1 => (0u8..4, 0u64..8).prop_map(|(stream, version)| Op::Truncate { stream, version }),
        1 => (0u8..4, 0u64..8).prop_map(|(stream, version)| Op::Snapshot { stream, version }),
        1 => (0u8..2, 0u64..40, any::<bool>()).prop_map(|(consumer, position, reset)| Op::Commit { consumer, position, reset }),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    /// (stream, version, payload) by position.
    log: Vec<(String, u64, Vec<u8>)>,
    heads: HashMap<String, u64>,
    /// Deletion state: (versions below this are gone, tombstoned).
    metas: HashMap<String, (u64, bool)>,
    snapshots: HashMap<String, (u64, Vec<u8>)>,
    consumers: HashMap<String, u64>,
}

impl Model {
    fn meta(&self, s: &str) -> (u64, bool) {
        self.metas.get(s).copied().unwrap_or((0, false))
    }
    fn tombstoned(&self, s: &str) -> bool {
        self.meta(s).1
    }
    fn hides(&self, s: &str, v: u64) -> bool {
        let (hb, t) = self.meta(s);
        t || v < hb
    }
    /// The stream's last visible version (what expectations see).
    fn actual(&self, s: &str) -> Option<u64> {
        let hb = self.meta(s).0;
        self.heads.get(s).filter(|&&n| n > hb).map(|n| n - 1)
    }
    fn visible(&self) -> Vec<u64> {
        (0..self.log.len() as u64)
            .filter(|&p| {
                let (s, v, _) = &self.log[p as usize];
                !self.hides(s, *v)
            })
            .collect()
    }
    fn snapshot(&self, s: &str) -> Option<(u64, Vec<u8>)> {
        self.snapshots
            .get(s)
            .filter(|(v, _)| !self.hides(s, *v))
            .cloned()
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
                if m.tombstoned(&s) {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if ex.admits(actual) {
                    let r = r.unwrap();
                    assert_eq!(r.first_position, m.log.len() as u64);
                    assert_eq!(r.first_version, m.heads.get(&s).copied().unwrap_or(0));
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
                let first_bad = [(&sa, xa), (&sb, xb)].into_iter().find_map(|(s, x)| {
                    if m.tombstoned(s) {
                        Some(true)
                    } else if !x.admits(m.actual(s)) {
                        Some(false)
                    } else {
                        None
                    }
                });
                if a == b {
                    assert!(matches!(r, Err(Error::DuplicateStream { .. })), "{r:?}");
                } else if first_bad == Some(true) {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if first_bad.is_none() {
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
                let visible = m.visible();
                let want: Vec<u64> = if back {
                    visible
                        .iter()
                        .rev()
                        .filter(|&&p| p <= from)
                        .take(limit)
                        .copied()
                        .collect()
                } else {
                    visible
                        .iter()
                        .filter(|&&p| p >= from)
                        .take(limit)
                        .copied()
                        .collect()
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
                let hb = m.meta(&s).0;
                match m.heads.get(&s) {
                    _ if m.tombstoned(&s) => {
                        assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    }
                    None => assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}"),
                    Some(_) if m.actual(&s).is_none() => {
                        assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
                    }
                    Some(&count) => {
                        let got = r.unwrap();
                        let want: Vec<u64> = if back {
                            (hb..=from.min(count - 1)).rev().take(limit).collect()
                        } else {
                            (from.max(hb)..count).take(limit).collect()
                        };
                        assert_eq!(got.iter().map(|e| e.version).collect::<Vec<_>>(), want);
                        for e in &got {
                            assert_eq!(&*e.stream, s);
                            check_event(&db, &m, e);
                        }
                    }
                }
            }
            Op::Delete {
                stream,
                expect,
                tombstone,
            } => {
                let s = format!("s{stream}");
                let ex = m.resolve(&s, &expect);
                let mode = if tombstone {
                    DeleteMode::Tombstone
                } else {
                    DeleteMode::Soft
                };
                let r = db.delete_stream(&s, ex, mode);
                let actual = m.actual(&s);
                if !m.heads.contains_key(&s) {
                    assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
                } else if m.tombstoned(&s) {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if !ex.admits(actual) {
                    assert!(
                        matches!(r, Err(Error::WrongExpectedVersion { .. })),
                        "{r:?}"
                    );
                } else if actual.is_none() && !tombstone {
                    assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    m.metas.insert(s.clone(), (m.heads[&s], tombstone));
                }
            }
            Op::Truncate { stream, version } => {
                let s = format!("s{stream}");
                let r = db.truncate_before(&s, version);
                match m.heads.get(&s).copied() {
                    None => assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}"),
                    Some(_) if m.tombstoned(&s) => {
                        assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                    }
                    Some(count) if version > count => {
                        assert!(matches!(r, Err(Error::VersionNotFound { .. })), "{r:?}");
                    }
                    Some(_) => {
                        r.unwrap();
                        let e = m.metas.entry(s).or_insert((0, false));
                        e.0 = e.0.max(version);
                    }
                }
            }
            Op::Snapshot { stream, version } => {
                let s = format!("s{stream}");
                let bytes = payloads(step, &[(step * 37) % 3000])
                    .pop()
                    .unwrap_or_default();
                let r = db.put_snapshot(&s, version, &bytes);
                let (hb, _) = m.meta(&s);
                if m.tombstoned(&s) {
                    assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
                } else if m.actual(&s).is_none() {
                    assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
                } else if m.actual(&s).is_some_and(|a| version > a) || version < hb {
                    assert!(matches!(r, Err(Error::VersionNotFound { .. })), "{r:?}");
                } else {
                    let newer = m.snapshot(&s).is_some_and(|(v, _)| v > version);
                    assert_eq!(r.unwrap(), !newer);
                    if !newer {
                        m.snapshots.insert(s.clone(), (version, bytes));
                    }
                }
                let got = db.latest_snapshot(&s);
                if m.tombstoned(&s) {
                    assert!(matches!(got, Err(Error::StreamDeleted { .. })), "{got:?}");
                } else {
                    assert_eq!(got.unwrap(), m.snapshot(&s));
                }
            }
            Op::Commit {
                consumer,
                position,
                reset,
            } => {
                let name = format!("c{consumer}");
                let c = db.consumer(&name).unwrap();
                let cur = m.consumers.get(&name).copied().unwrap_or(0);
                assert_eq!(c.position(), cur);
                let r = if reset {
                    c.reset(position)
                } else {
                    c.commit(position)
                };
                if position > m.log.len() as u64 || (!reset && position < cur) {
                    assert!(matches!(r, Err(Error::InvalidPosition { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    m.consumers.insert(name, position);
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
    assert_eq!(
        got.iter().map(|e| e.position).collect::<Vec<_>>(),
        m.visible()
    );
    for e in &got {
        check_event(&db, &m, e);
    }
    for (name, &p) in &m.consumers {
        assert_eq!(db.consumer(name).unwrap().position(), p);
    }
    for s in m.snapshots.keys() {
        if !m.tombstoned(s) {
            assert_eq!(db.latest_snapshot(s).unwrap(), m.snapshot(s));
        }
    }
    // Blobs of deleted events are released once the deletion is checkpointed.
    db.checkpoint().unwrap();
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
