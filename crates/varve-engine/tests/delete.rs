//! Stream deletion and truncation: what readers see before and after the checkpoint and a
//! reopen, what appends may do next, and the space (blobs) that comes back.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use varve_engine::{
    DeleteMode, Direction, Error, EventData, ExpectedVersion, Filter, Options, SubscribeFrom, Varve,
};

/// No background checkpoints: the test decides when events reach `events.mdb`.
fn manual() -> Options {
    opts()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_bytes(8 << 20)
}

fn positions(db: &Varve) -> Vec<u64> {
    all(db).iter().map(|e| e.position).collect()
}

/// "a" gets events 0, 2, 4 and "b" 1, 3, 5.
fn two_streams(db: &Varve) {
    for i in 0..3u8 {
        append_one(db, "a", &[i]);
        append_one(db, "b", &[i]);
    }
}

fn check_soft_deleted(db: &Varve) {
    assert!(matches!(
        db.read_stream("a", Direction::Forward, 0, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(db.stream_version("a").unwrap(), None);
    assert_eq!(positions(db), [1, 3, 5]);
    let back: Vec<u64> = db
        .read_all(u64::MAX, Direction::Backward, 10)
        .unwrap()
        .iter()
        .map(|e| e.position)
        .collect();
    assert_eq!(back, [5, 3, 1]);
    assert_eq!(db.get(2).unwrap(), None);
    assert!(db.get(3).unwrap().is_some());
    let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
    let got: Vec<u64> = std::iter::from_fn(|| sub.try_next().unwrap())
        .map(|e| e.position)
        .collect();
    assert_eq!(got, [1, 3, 5]);
    assert_eq!(sub.position(), 6, "past the hidden events");
}

#[test]
fn a_soft_delete_hides_the_stream_before_and_after_checkpoint_and_reopen() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), manual()).unwrap();
        two_streams(&db);
        assert_eq!(db.stats().unwrap().deleted_streams, 0);
        db.delete_stream("a", ExpectedVersion::Exact(2), DeleteMode::Soft)
            .unwrap();
        assert_eq!(db.stats().unwrap().deleted_streams, 1);
        check_soft_deleted(&db); // from the tail
        db.checkpoint().unwrap();
        check_soft_deleted(&db); // from events.mdb, with holes
    }
    let db = Varve::open(dir.path(), manual()).unwrap();
    check_soft_deleted(&db);
    // A second soft delete finds nothing to delete.
    assert!(matches!(
        db.delete_stream("a", ExpectedVersion::Any, DeleteMode::Soft),
        Err(Error::StreamNotFound { .. })
    ));
    // The stream starts again at the old last version + 1; the old events stay gone.
    let r = db
        .append("a", ExpectedVersion::NoStream, &[ev(b"again")])
        .unwrap();
    assert_eq!((r.first_version, r.first_position), (3, 6));
    let evs = db.read_stream("a", Direction::Forward, 0, 10).unwrap();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].version, 3);
    let back = db
        .read_stream("a", Direction::Backward, u64::MAX, 10)
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(db.stream_version("a").unwrap(), Some(3));
    assert_eq!(positions(&db), [1, 3, 5, 6]);
}

#[test]
fn a_soft_delete_checks_the_expected_version_and_writes_nothing_when_it_fails() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), manual()).unwrap();
        two_streams(&db);
        match db.delete_stream("a", ExpectedVersion::Exact(1), DeleteMode::Soft) {
            Err(Error::WrongExpectedVersion { actual, .. }) => assert_eq!(actual, Some(2)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            db.delete_stream("nope", ExpectedVersion::Any, DeleteMode::Soft),
            Err(Error::StreamNotFound { .. })
        ));
        assert_eq!(positions(&db), [0, 1, 2, 3, 4, 5]);
    }
    let db = Varve::open(dir.path(), manual()).unwrap();
    assert_eq!(
        db.recovery_report().replayed_records,
        6,
        "no deletion record"
    );
    assert_eq!(db.stream_version("a").unwrap(), Some(2));
}

#[test]
fn a_tombstone_refuses_every_later_operation_on_the_name() {
    let dir = tempdir();
    let check = |db: &Varve| {
        let gone = |r: Result<(), Error>| assert!(matches!(r, Err(Error::StreamDeleted { .. })));
        gone(
            db.append("a", ExpectedVersion::Any, &[ev(b"x")])
                .map(|_| ()),
        );
        gone(
            db.append("a", ExpectedVersion::NoStream, &[ev(b"x")])
                .map(|_| ()),
        );
        gone(db.read_stream("a", Direction::Forward, 0, 1).map(|_| ()));
        gone(db.stream_version("a").map(|_| ()));
        gone(db.delete_stream("a", ExpectedVersion::Any, DeleteMode::Soft));
        gone(db.delete_stream("a", ExpectedVersion::Any, DeleteMode::Tombstone));
        gone(db.truncate_before("a", 1));
        gone(db.put_snapshot("a", 0, b"s").map(|_| ()));
        gone(db.latest_snapshot("a").map(|_| ()));
        assert_eq!(positions(db), [1, 3, 5]);
        // Other streams carry on.
        assert_eq!(db.stream_version("b").unwrap(), Some(2));
    };
    {
        let db = Varve::open(dir.path(), manual()).unwrap();
        two_streams(&db);
        db.put_snapshot("a", 2, b"state").unwrap();
        db.delete_stream("a", ExpectedVersion::StreamExists, DeleteMode::Tombstone)
            .unwrap();
        check(&db);
        db.checkpoint().unwrap();
        check(&db);
    }
    let db = Varve::open(dir.path(), manual()).unwrap();
    check(&db);
    // A stream soft-deleted first can still be tombstoned.
    db.delete_stream("b", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    db.delete_stream("b", ExpectedVersion::NoStream, DeleteMode::Tombstone)
        .unwrap();
    assert!(positions(&db).is_empty());
}

#[test]
fn truncate_before_moves_the_first_version_and_keeps_the_head() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), manual()).unwrap();
        for i in 0..10u8 {
            append_one(&db, "s", &[i]);
        }
        db.checkpoint().unwrap();
        for i in 10..15u8 {
            append_one(&db, "s", &[i]); // in the tail
        }
        db.truncate_before("s", 12).unwrap();
        db.truncate_before("s", 4).unwrap(); // lower: changes nothing
        match db.truncate_before("s", 16) {
            Err(Error::VersionNotFound {
                version: 16,
                last: 14,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        let fwd = db.read_stream("s", Direction::Forward, 0, 100).unwrap();
        assert_eq!(
            fwd.iter().map(|e| e.version).collect::<Vec<_>>(),
            [12, 13, 14]
        );
        let back = db.read_stream("s", Direction::Backward, 13, 100).unwrap();
        assert_eq!(back.iter().map(|e| e.version).collect::<Vec<_>>(), [13, 12]);
        assert_eq!(db.stream_version("s").unwrap(), Some(14));
        db.append("s", ExpectedVersion::Exact(14), &[ev(b"15")])
            .unwrap();
        db.checkpoint().unwrap();
    }
    let db = Varve::open(dir.path(), manual()).unwrap();
    assert_eq!(positions(&db), [12, 13, 14, 15]);
    let mut sub = db.subscribe_stream("s", 0);
    assert_eq!(sub.try_next().unwrap().unwrap().version, 12);
    // A snapshot of a removed version is refused; one at or after the first is taken.
    assert!(matches!(
        db.put_snapshot("s", 11, b"old"),
        Err(Error::VersionNotFound { .. })
    ));
    assert!(db.put_snapshot("s", 12, b"ok").unwrap());
    // Truncating at the next version removes every event: the stream reads as deleted and
    // starts again where it was.
    db.truncate_before("s", 16).unwrap();
    assert!(matches!(
        db.read_stream("s", Direction::Forward, 0, 10),
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(db.stream_version("s").unwrap(), None);
    let r = db
        .append("s", ExpectedVersion::NoStream, &[ev(b"16")])
        .unwrap();
    assert_eq!(r.first_version, 16);
}

#[test]
fn deletion_releases_blobs_no_other_event_refers_to() {
    let dir = tempdir();
    let shared = vec![1u8; 5000];
    let own = vec![2u8; 6000];
    {
        let db = Varve::open(dir.path(), manual()).unwrap();
        db.append(
            "a",
            ExpectedVersion::Any,
            &[EventData::new("t", &shared), EventData::new("t", &own)],
        )
        .unwrap();
        db.checkpoint().unwrap(); // half of the references in events.mdb, half in the tail
        db.append("b", ExpectedVersion::Any, &[EventData::new("t", &shared)])
            .unwrap();
        assert_eq!(db.stats().unwrap().blobs, 2);
        db.delete_stream("a", ExpectedVersion::Any, DeleteMode::Tombstone)
            .unwrap();
        db.checkpoint().unwrap();
        assert_eq!(db.stats().unwrap().blobs, 1, "the shared blob stays");
        let b = db.read_stream("b", Direction::Forward, 0, 1).unwrap();
        assert_eq!(db.read_payload(&b[0]).unwrap(), shared);
    }
    let db = Varve::open(dir.path(), manual()).unwrap();
    assert_eq!(db.recovery_report().orphan_blob_refs_released, 0);
    assert_eq!(db.stats().unwrap().blobs, 1);
    db.delete_stream("b", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    db.checkpoint().unwrap();
    assert_eq!(db.stats().unwrap().blobs, 0);
    drop(db);
    let db = Varve::open(dir.path(), manual()).unwrap();
    assert_eq!(db.stats().unwrap().blobs, 0);
    assert!(positions(&db).is_empty());
}

#[test]
fn a_snapshot_goes_away_with_its_stream() {
    let dir = tempdir();
    let db = Varve::open(dir.path(), manual()).unwrap();
    two_streams(&db);
    db.put_snapshot("a", 2, b"a at 2").unwrap();
    db.put_snapshot("b", 1, b"b at 1").unwrap();
    assert_eq!(db.stats().unwrap().snapshots, 2);
    db.delete_stream("a", ExpectedVersion::Any, DeleteMode::Soft)
        .unwrap();
    assert_eq!(db.latest_snapshot("a").unwrap(), None);
    assert_eq!(db.stats().unwrap().snapshots, 1, "removed, not only hidden");
    assert_eq!(
        db.latest_snapshot("b").unwrap(),
        Some((1, b"b at 1".to_vec()))
    );
    db.truncate_before("b", 2).unwrap();
    assert_eq!(
        db.latest_snapshot("b").unwrap(),
        None,
        "older than the first version"
    );
    // The recreated stream takes new snapshots.
    db.append("a", ExpectedVersion::NoStream, &[ev(b"n")])
        .unwrap();
    assert!(db.put_snapshot("a", 3, b"a at 3").unwrap());
    db.close().unwrap();
    let db = Varve::open(dir.path(), manual()).unwrap();
    assert_eq!(
        db.latest_snapshot("a").unwrap(),
        Some((3, b"a at 3".to_vec()))
    );
    assert_eq!(db.latest_snapshot("b").unwrap(), None);
}
