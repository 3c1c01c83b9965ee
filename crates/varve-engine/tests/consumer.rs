//! Durable consumers: commit, reset, resume across reopens (from the WAL and from
//! `events.mdb`), refusals that write nothing, and checkpoints that interleave commits with
//! appends. The kill -9 case is in `crash.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use varve_engine::{Error, Filter, Options, Varve};

/// Options with no background checkpoint: what is not checkpointed explicitly stays in
/// the WAL, so a reopen replays it.
fn wal_only() -> Options {
    opts()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_bytes(8 << 20)
}

#[test]
fn a_commit_survives_a_reopen_from_the_wal_and_from_a_checkpoint() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), wal_only()).unwrap();
        for i in 0..10u8 {
            append_one(&db, "s", &[i]);
        }
        let c = db.consumer("proj").unwrap();
        assert_eq!(c.position(), 0);
        c.commit(4).unwrap();
        assert_eq!(c.position(), 4);
        // Dropped without close: no final checkpoint, the commit is only in the WAL.
    }
    {
        let db = Varve::open(dir.path(), wal_only()).unwrap();
        assert_eq!(
            db.recovery_report().checkpoint_lsn,
            0,
            "nothing checkpointed"
        );
        // The WAL's own report: 10 appends and the commit verified.
        assert_eq!(db.recovery_report().wal.records, 11);
        let c = db.consumer("proj").unwrap();
        assert_eq!(c.position(), 4, "replayed from the WAL");
        c.commit(7).unwrap();
        db.checkpoint().unwrap();
    }
    let db = Varve::open(dir.path(), wal_only()).unwrap();
    assert_eq!(db.recovery_report().replayed_records, 0, "all checkpointed");
    let c = db.consumer("proj").unwrap();
    assert_eq!(c.position(), 7, "read from events.mdb");
    let mut sub = c.subscribe(Filter::all());
    assert_eq!(sub.try_next().unwrap().unwrap().position, 7);
    assert_eq!(db.consumers(), vec![("proj".into(), 7)]);
    assert_eq!(db.stats().unwrap().consumers, 1);
}

#[test]
fn a_checkpoint_of_commits_alone_moves_the_checkpoint_and_drops_the_log() {
    let dir = tempdir();
    let lsn = {
        let db = Varve::open(dir.path(), wal_only()).unwrap();
        append_one(&db, "s", b"a");
        append_one(&db, "s", b"b");
        db.checkpoint().unwrap();
        let c = db.consumer("c").unwrap();
        c.commit(1).unwrap();
        c.commit(2).unwrap();
        // Only consumer records are pending: the checkpoint still writes them.
        db.checkpoint().unwrap();
        db.stats().unwrap().checkpoint_lsn
    };
    assert_eq!(lsn, 4, "two appends and two commits");
    let db = Varve::open(dir.path(), wal_only()).unwrap();
    assert_eq!(db.recovery_report().checkpoint_lsn, 4);
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert_eq!(db.consumer("c").unwrap().position(), 2);
    // Numbering of the log continues past the commits.
    append_one(&db, "s", b"c");
    db.checkpoint().unwrap();
    assert_eq!(db.stats().unwrap().checkpoint_lsn, 5);
}

#[test]
fn commits_between_appends_are_applied_in_log_order() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), wal_only()).unwrap();
        let c = db.consumer("c").unwrap();
        let d = db.consumer("d").unwrap();
        for i in 0..20u8 {
            append_one(&db, "s", &[i]);
            if i % 3 == 0 {
                c.commit(u64::from(i) + 1).unwrap();
            }
            if i == 10 {
                d.commit(5).unwrap();
                d.reset(2).unwrap();
            }
            if i % 7 == 6 {
                db.checkpoint().unwrap();
            }
        }
        assert_eq!((c.position(), d.position()), (19, 2));
    }
    let db = Varve::open(dir.path(), wal_only()).unwrap();
    assert!(
        db.recovery_report().replayed_records > 0,
        "a part is replayed"
    );
    assert_eq!(db.consumer("c").unwrap().position(), 19);
    assert_eq!(
        db.consumer("d").unwrap().position(),
        2,
        "the reset is the last"
    );
    assert_eq!(all(&db).len(), 20);
    db.checkpoint().unwrap();
    drop(db);
    let db = Varve::open(dir.path(), wal_only()).unwrap();
    assert_eq!(db.consumer("c").unwrap().position(), 19);
    assert_eq!(db.consumer("d").unwrap().position(), 2);
    assert_eq!(
        db.consumers(),
        vec![("c".into(), 19), ("d".into(), 2)],
        "sorted by name"
    );
}

#[test]
fn refused_moves_write_nothing() {
    let dir = tempdir();
    {
        let db = Varve::open(dir.path(), wal_only()).unwrap();
        for i in 0..5u8 {
            append_one(&db, "s", &[i]);
        }
        let c = db.consumer("c").unwrap();
        let past = c.commit(6).unwrap_err();
        assert!(
            matches!(past, Error::InvalidPosition { position: 6, .. }),
            "{past}"
        );
        c.commit(5).unwrap(); // the end itself is allowed
        c.commit(5).unwrap(); // and the same position again
        let back = c.commit(3).unwrap_err();
        assert!(matches!(back, Error::InvalidPosition { position: 3, .. }));
        assert!(c.reset(6).is_err());
        assert_eq!(c.position(), 5);
        c.reset(3).unwrap();
        assert_eq!(c.position(), 3);
        assert_eq!(db.stats().unwrap().next_position, 5);
    }
    let db = Varve::open(dir.path(), wal_only()).unwrap();
    assert_eq!(db.consumer("c").unwrap().position(), 3);
    // 5 appends and 3 accepted moves: the refused ones left no record.
    assert_eq!(db.recovery_report().replayed_records, 8);
}

#[test]
fn consumer_names_follow_the_stream_name_rules() {
    let dir = tempdir();
    let db = Varve::open(dir.path(), opts().max_stream_name(8)).unwrap();
    for (name, why) in [
        ("", "empty"),
        ("123456789", "longer than max_stream_name"),
        ("a\0b", "contains a NUL byte"),
    ] {
        match db.consumer(name) {
            Err(Error::InvalidConsumerName { why: w }) => assert_eq!(w, why),
            other => panic!("{name:?}: {other:?}"),
        }
    }
    let c = db.consumer("12345678").unwrap();
    assert_eq!(c.name(), "12345678");
    assert!(
        db.consumers().is_empty(),
        "a consumer exists once it commits"
    );
}

#[test]
fn a_consumer_resumes_where_it_committed_and_sees_the_rest_once() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..30u8 {
        append_one(&db, if i % 2 == 0 { "a" } else { "b" }, &[i]);
    }
    let c = db.consumer("proj").unwrap();
    let mut sub = c.subscribe(Filter::all().stream_prefix("a"));
    for _ in 0..5 {
        sub.try_next().unwrap().unwrap();
    }
    // Events 0, 2, 4, 6, 8 delivered, 9 filtered out: the next to deliver is 10.
    assert_eq!(sub.position(), 10);
    c.commit(sub.position()).unwrap();
    // The subscription and the consumer hold clones of the store: the files are released
    // when the last one goes.
    drop((sub, c));
    db.close().unwrap();

    let db = open(dir.path());
    let c = db.consumer("proj").unwrap();
    let mut sub = c.subscribe(Filter::all().stream_prefix("a"));
    let rest: Vec<u64> = std::iter::from_fn(|| sub.try_next().unwrap())
        .map(|e| e.position)
        .collect();
    assert_eq!(rest, (10..30).step_by(2).collect::<Vec<_>>());
}

#[test]
fn a_store_of_format_version_1_opens_and_is_upgraded() {
    let dir = tempdir();
    {
        let db = open(dir.path());
        append_one(&db, "s", b"x");
        db.close().unwrap();
    }
    set_format(dir.path(), 1);
    {
        let db = open(dir.path());
        assert_eq!(all(&db).len(), 1);
        db.consumer("c").unwrap().commit(1).unwrap();
        db.close().unwrap();
    }
    assert_eq!(format_of(dir.path()), 2);
    set_format(dir.path(), 3);
    match Varve::open(dir.path(), opts()) {
        Err(Error::UnsupportedVersion {
            found: 3,
            supported: 2,
        }) => {}
        other => panic!("{other:?}"),
    }
}

/// The `meta` database of the closed store in `dir`, in a write transaction.
fn with_meta<R>(dir: &std::path::Path, f: impl FnOnce(Meta<'_>, heed::RwTxn<'_>) -> R) -> R {
    let mut o = heed::EnvOpenOptions::new();
    o.max_dbs(8);
    // SAFETY: NO_SUB_DIR names the file; the store is closed, nothing else maps it.
    unsafe { o.flags(heed::EnvFlags::NO_SUB_DIR) };
    // SAFETY: no other process or handle has events.mdb open.
    let env = unsafe { o.open(dir.join("events.mdb")) }.unwrap();
    let wtxn = env.write_txn().unwrap();
    let meta = env
        .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
            let db =
                dbo.create_database::<heed::types::Bytes, heed::types::Bytes>(wtxn, Some("meta"))?;
            Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
        })
        .unwrap()
        .commit()
        .unwrap();
    f(meta, env.write_txn().unwrap())
}

type Meta<'e> = heed::Database<'e, heed::types::Bytes, heed::types::Bytes>;

fn set_format(dir: &std::path::Path, v: u32) {
    with_meta(dir, |meta, mut wtxn| {
        meta.put(&mut wtxn, b"format", &v.to_le_bytes()).unwrap();
        wtxn.commit().unwrap();
    });
}

fn format_of(dir: &std::path::Path) -> u32 {
    with_meta(dir, |meta, wtxn| {
        let v = meta.get(&wtxn, b"format").unwrap().unwrap();
        u32::from_le_bytes(v.try_into().unwrap())
    })
}
