//! Stream snapshots: the latest wins across sizes, survives reopen, and bad requests write
//! nothing. The kill -9 case is in `crash.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use varve_engine::{Error, EventData, ExpectedVersion, Varve};

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn the_latest_snapshot_wins_across_sizes_and_survives_reopen() {
    let dir = tempdir();
    let sizes = [(0u64, 100usize), (1, 1 << 20), (2, 10)];
    {
        let db = open(dir.path());
        let evs: Vec<EventData<'_>> = (0..3).map(|_| ev(b"e")).collect();
        db.append("acct", ExpectedVersion::NoStream, &evs).unwrap();
        assert_eq!(db.latest_snapshot("acct").unwrap(), None);
        for (version, len) in sizes {
            assert!(
                db.put_snapshot("acct", version, &bytes(len, version as u8))
                    .unwrap()
            );
            assert_eq!(
                db.latest_snapshot("acct").unwrap(),
                Some((version, bytes(len, version as u8)))
            );
        }
        // Dropped without close: the snapshot was flushed when put_snapshot returned.
    }
    let db = open(dir.path());
    assert_eq!(db.latest_snapshot("acct").unwrap(), Some((2, bytes(10, 2))));
    assert_eq!(db.latest_snapshot("other").unwrap(), None);
    let st = db.stats().unwrap();
    assert_eq!(
        (st.snapshots, st.snapshot_bytes),
        (1, 9 + 10),
        "one per stream"
    );
}

#[test]
fn a_damaged_snapshot_header_is_corruption() {
    let dir = tempdir();
    {
        let db = open(dir.path());
        append_one(&db, "s", b"0"); // stream id 0
        db.put_snapshot("s", 0, b"state").unwrap();
        db.close().unwrap();
    }
    for bad in [&b"\x02\0\0\0\0\0\0\0\0state"[..], &b"\x01\0\0"[..]] {
        {
            let store = varve_slotted::Store::open(
                dir.path().join("snapshots"),
                varve_slotted::Options::default(),
            )
            .unwrap();
            store.put(0, bad).unwrap();
            store.flush().unwrap();
        }
        let db = open(dir.path());
        match db.latest_snapshot("s") {
            Err(Error::Corrupted { location, .. }) => {
                assert!(location.contains("snapshots"), "{location}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
        db.close().unwrap();
    }
}

#[test]
fn an_older_snapshot_does_not_replace_a_newer_one_and_the_same_version_does() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..10u8 {
        append_one(&db, "s", &[i]);
    }
    assert!(db.put_snapshot("s", 7, b"seven").unwrap());
    assert!(!db.put_snapshot("s", 6, b"six").unwrap());
    assert_eq!(
        db.latest_snapshot("s").unwrap(),
        Some((7, b"seven".to_vec()))
    );
    assert!(db.put_snapshot("s", 7, b"seven again").unwrap());
    assert_eq!(
        db.latest_snapshot("s").unwrap(),
        Some((7, b"seven again".to_vec()))
    );
    assert!(db.put_snapshot("s", 9, b"").unwrap());
    assert_eq!(db.latest_snapshot("s").unwrap(), Some((9, Vec::new())));
}

#[test]
fn bad_snapshots_are_refused_and_write_nothing() {
    let dir = tempdir();
    let db = Varve::open(dir.path(), opts().max_snapshot_bytes(1000)).unwrap();
    assert!(matches!(
        db.put_snapshot("none", 0, b"x"),
        Err(Error::StreamNotFound { .. })
    ));
    append_one(&db, "s", b"0");
    append_one(&db, "s", b"1");
    match db.put_snapshot("s", 2, b"x") {
        Err(Error::VersionNotFound {
            version: 2,
            last: 1,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    match db.put_snapshot("s", 1, &[0; 1001]) {
        Err(Error::SnapshotTooLarge {
            size: 1001,
            max: 1000,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(db.latest_snapshot("s").unwrap(), None);
    assert!(db.put_snapshot("s", 1, &[0; 1000]).unwrap(), "at the limit");
    assert_eq!(db.latest_snapshot("s").unwrap().unwrap().1.len(), 1000);
}
