//! Behaviour a user relies on: expected versions, positions, reads, limits, reopen.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use varve_engine::{
    Direction, Error, EventData, EventPayload, ExpectedVersion, MAX_INLINE_SIZE, Varve,
};

#[test]
fn an_empty_store_opens_with_zero_stats_and_unknown_streams_are_not_found() {
    let dir = tempdir();
    let db = open(dir.path());
    let s = db.stats().unwrap();
    assert_eq!(s.next_position, 0);
    assert_eq!(s.streams, 0);
    assert_eq!(s.blobs, 0);
    assert_eq!(s.checkpoint_lag_events, 0);
    assert!(s.degraded.is_none());
    assert!(matches!(
        db.read_stream("nope", Direction::Forward, 0, 10),
        Err(Error::StreamNotFound { stream }) if stream == "nope"
    ));
    assert!(db.get(0).unwrap().is_none());
    assert!(all(&db).is_empty());
    assert_eq!(db.stream_version("nope").unwrap(), None);
}

#[test]
fn a_second_open_of_the_same_directory_is_locked() {
    let dir = tempdir();
    let db = open(dir.path());
    assert!(matches!(
        Varve::open(dir.path(), opts()),
        Err(Error::Locked(_))
    ));
    drop(db);
    let again = open(dir.path());
    drop(again);
}

#[test]
fn no_stream_twice_fails_with_the_actual_version_and_writes_nothing() {
    let dir = tempdir();
    let db = open(dir.path());
    let r = db
        .append("s", ExpectedVersion::NoStream, &[ev(b"a"), ev(b"b")])
        .unwrap();
    assert_eq!((r.first_position, r.last_position), (0, 1));
    assert_eq!((r.first_version, r.last_version), (0, 1));
    let e = db.append("s", ExpectedVersion::NoStream, &[ev(b"c")]);
    match e {
        Err(Error::WrongExpectedVersion {
            stream,
            expected,
            actual,
        }) => {
            assert_eq!(stream, "s");
            assert_eq!(expected, ExpectedVersion::NoStream);
            assert_eq!(actual, Some(1));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(db.stats().unwrap().next_position, 2);
    // The rejected append consumed no position.
    let r = db.append("t", ExpectedVersion::Any, &[ev(b"d")]).unwrap();
    assert_eq!(r.first_position, 2);
    assert_eq!(all(&db).len(), 3);
}

#[test]
fn stream_exists_needs_a_stream_and_any_appends_at_the_head() {
    let dir = tempdir();
    let db = open(dir.path());
    assert!(matches!(
        db.append("s", ExpectedVersion::StreamExists, &[ev(b"x")]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    assert!(matches!(
        db.append("s", ExpectedVersion::Exact(0), &[ev(b"x")]),
        Err(Error::WrongExpectedVersion { actual: None, .. })
    ));
    assert_eq!(db.stats().unwrap().next_position, 0);
    db.append("s", ExpectedVersion::Any, &[ev(b"0")]).unwrap();
    let r = db.append("s", ExpectedVersion::Any, &[ev(b"1")]).unwrap();
    assert_eq!(r.first_version, 1);
    let r = db
        .append("s", ExpectedVersion::StreamExists, &[ev(b"2")])
        .unwrap();
    assert_eq!(r.first_version, 2);
    let r = db
        .append("s", ExpectedVersion::Exact(2), &[ev(b"3")])
        .unwrap();
    assert_eq!((r.first_version, r.last_version), (3, 3));
    assert!(matches!(
        db.append("s", ExpectedVersion::Exact(2), &[ev(b"4")]),
        Err(Error::WrongExpectedVersion {
            actual: Some(3),
            ..
        })
    ));
    let got = db.read_stream("s", Direction::Forward, 0, 100).unwrap();
    let payloads: Vec<_> = got.iter().map(|e| e.payload.clone()).collect();
    assert_eq!(
        payloads,
        ["0", "1", "2", "3"]
            .iter()
            .map(|p| EventPayload::Inline(p.as_bytes().to_vec()))
            .collect::<Vec<_>>()
    );
    assert_eq!(db.stream_version("s").unwrap(), Some(3));
}

#[test]
fn each_limit_violation_has_its_own_error_and_writes_nothing() {
    let dir = tempdir();
    let db = Varve::open(
        dir.path(),
        opts()
            .max_payload_bytes(10_000)
            .max_call_bytes(50_000)
            .max_metadata_bytes(100),
    )
    .unwrap();
    let long = "x".repeat(257);
    let big = vec![1u8; 10_001];
    let meta = vec![2u8; 101];
    let blob = vec![3u8; 9_000];
    let many: Vec<EventData<'_>> = (0..6).map(|_| ev(&blob)).collect();
    let cases: Vec<(Result<varve_engine::AppendResult, Error>, &str)> = vec![
        (
            db.append("", ExpectedVersion::Any, &[ev(b"")]),
            "empty stream",
        ),
        (
            db.append(&long, ExpectedVersion::Any, &[ev(b"")]),
            "long stream",
        ),
        (
            db.append("a\0b", ExpectedVersion::Any, &[ev(b"")]),
            "nul stream",
        ),
        (db.append("s", ExpectedVersion::Any, &[]), "no events"),
        (
            db.append("s", ExpectedVersion::Any, &[EventData::new("", b"")]),
            "empty type",
        ),
        (
            db.append("s", ExpectedVersion::Any, &[EventData::new(&long, b"")]),
            "long type",
        ),
        (
            db.append("s", ExpectedVersion::Any, &[ev(b"").with_metadata(&meta)]),
            "metadata",
        ),
        (db.append("s", ExpectedVersion::Any, &[ev(&big)]), "payload"),
        (db.append("s", ExpectedVersion::Any, &many), "call"),
        (db.append_multi(&[]), "no streams"),
        (
            db.append_multi(&[
                ("a", ExpectedVersion::Any, &[ev(b"1")]),
                ("a", ExpectedVersion::Any, &[ev(b"2")]),
            ]),
            "duplicate",
        ),
    ];
    for (r, what) in cases {
        let ok = match (&r, what) {
            (
                Err(Error::InvalidStreamName { .. }),
                "empty stream" | "long stream" | "nul stream",
            ) => true,
            (Err(Error::EmptyAppend), "no events" | "no streams") => true,
            (Err(Error::InvalidEventType { .. }), "empty type" | "long type") => true,
            (
                Err(Error::MetadataTooLarge {
                    size: 101,
                    max: 100,
                }),
                "metadata",
            ) => true,
            (
                Err(Error::PayloadTooLarge {
                    size: 10_001,
                    max: 10_000,
                }),
                "payload",
            ) => true,
            (Err(Error::CallTooLarge { max: 50_000, .. }), "call") => true,
            (Err(Error::DuplicateStream { stream }), "duplicate") => stream == "a",
            _ => false,
        };
        assert!(ok, "{what}: {r:?}");
    }
    let s = db.stats().unwrap();
    assert_eq!(s.next_position, 0);
    assert_eq!(s.blobs, 0, "no blob was left behind");
    assert_eq!(s.streams, 0);
    drop(db);
    // Nothing reached the log either.
    let db = open(dir.path());
    assert_eq!(db.recovery_report().replayed_records, 0);
    assert!(all(&db).is_empty());
}

#[test]
fn a_rejected_append_releases_the_blobs_it_stored() {
    let dir = tempdir();
    let db = open(dir.path());
    let big = vec![9u8; 10_000];
    db.append("s", ExpectedVersion::NoStream, &[ev(b"x")])
        .unwrap();
    assert!(
        db.append("s", ExpectedVersion::NoStream, &[ev(&big)])
            .is_err()
    );
    assert_eq!(db.stats().unwrap().blobs, 0);
    db.append("s", ExpectedVersion::Any, &[ev(&big), ev(&big)])
        .unwrap();
    assert_eq!(db.stats().unwrap().blobs, 1, "deduplicated");
}

#[test]
fn payloads_round_trip_inline_and_through_the_sidecar_across_reopen() {
    let dir = tempdir();
    let sizes = [0usize, 1, 2047, 2048, 2049, 5 << 20];
    let payloads: Vec<Vec<u8>> = sizes
        .iter()
        .map(|&n| (0..n).map(|i| (i * 31 + n) as u8).collect())
        .collect();
    {
        let db = open(dir.path());
        for p in &payloads {
            db.append(
                "p",
                ExpectedVersion::Any,
                &[ev(p).with_metadata(b"meta").with_id([5; 16])],
            )
            .unwrap();
        }
        db.close().unwrap();
    }
    let db = open(dir.path());
    let got = db.read_stream("p", Direction::Forward, 0, 100).unwrap();
    assert_eq!(got.len(), sizes.len());
    for ((e, p), &n) in got.iter().zip(&payloads).zip(&sizes) {
        assert_eq!(e.payload.len(), n as u64);
        match &e.payload {
            EventPayload::Inline(_) => assert!(n < MAX_INLINE_SIZE, "{n} inline"),
            EventPayload::Blob { hash, .. } => {
                assert!(n >= MAX_INLINE_SIZE, "{n} in the sidecar");
                assert_eq!(*hash, varve_engine::BlobHash::of(p));
            }
        }
        assert_eq!(&db.read_payload(e).unwrap(), p, "{n} bytes");
        let mut w = Vec::new();
        assert_eq!(db.read_payload_to(e, &mut w).unwrap(), n as u64);
        assert_eq!(&w, p);
        assert_eq!(e.metadata, b"meta");
        assert_eq!(e.id, Some([5; 16]));
        assert_eq!(e.event_type, "test-event");
    }
    assert_eq!(db.stats().unwrap().blobs, 3);
}

#[test]
fn reads_walk_both_directions_across_the_checkpoint_and_the_tail() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..50u32 {
        let s = format!("s{}", i % 3);
        db.append(&s, ExpectedVersion::Any, &[ev(&i.to_le_bytes())])
            .unwrap();
        if i == 24 {
            db.checkpoint().unwrap();
        }
    }
    // Half checkpointed, half (likely) in the tail; either way the reads agree.
    let fwd = db.read_all(0, Direction::Forward, usize::MAX).unwrap();
    assert_eq!(fwd.len(), 50);
    for (i, e) in fwd.iter().enumerate() {
        assert_eq!(e.position, i as u64);
        assert_eq!(
            e.payload,
            EventPayload::Inline((i as u32).to_le_bytes().to_vec())
        );
        assert_eq!(&*e.stream, format!("s{}", i % 3));
        assert_eq!(e.version, (i / 3) as u64);
        assert_eq!(db.get(i as u64).unwrap().as_ref(), Some(e));
    }
    let back = db
        .read_all(u64::MAX, Direction::Backward, usize::MAX)
        .unwrap();
    let mut rev = fwd.clone();
    rev.reverse();
    assert_eq!(back, rev);
    assert_eq!(
        db.read_all(30, Direction::Backward, 5)
            .unwrap()
            .iter()
            .map(|e| e.position)
            .collect::<Vec<_>>(),
        vec![30, 29, 28, 27, 26]
    );
    assert_eq!(db.read_all(20, Direction::Forward, 7).unwrap().len(), 7);
    assert!(db.read_all(50, Direction::Forward, 7).unwrap().is_empty());
    let s1: Vec<_> = fwd.iter().filter(|e| &*e.stream == "s1").cloned().collect();
    assert_eq!(
        db.read_stream("s1", Direction::Forward, 0, 100).unwrap(),
        s1
    );
    let mut s1r = s1.clone();
    s1r.reverse();
    assert_eq!(
        db.read_stream("s1", Direction::Backward, u64::MAX, 100)
            .unwrap(),
        s1r
    );
    assert_eq!(
        db.read_stream("s1", Direction::Forward, 3, 4).unwrap(),
        s1[3..7].to_vec()
    );
    assert_eq!(
        db.read_stream("s1", Direction::Backward, 10, 3).unwrap(),
        vec![s1[10].clone(), s1[9].clone(), s1[8].clone()]
    );
    // Zero-copy views agree with owned reads.
    let mut seen = Vec::new();
    db.scan_all(0, Direction::Forward, usize::MAX, |v| {
        seen.push(v.to_owned())
    })
    .unwrap();
    assert_eq!(seen, fwd);
    let t = db.with_event(7, |v| v.event_type.to_owned()).unwrap();
    assert_eq!(t.as_deref(), Some("test-event"));
    db.checkpoint().unwrap();
    assert_eq!(db.read_all(0, Direction::Forward, usize::MAX).unwrap(), fwd);
    assert_eq!(
        db.read_stream("s1", Direction::Forward, 0, 100).unwrap(),
        s1
    );
}

#[test]
fn append_multi_is_all_or_nothing_and_contiguous() {
    let dir = tempdir();
    let db = open(dir.path());
    db.append("a", ExpectedVersion::Any, &[ev(b"a0")]).unwrap();
    let r = db.append_multi(&[
        ("b", ExpectedVersion::NoStream, &[ev(b"b0"), ev(b"b1")]),
        ("a", ExpectedVersion::Exact(5), &[ev(b"a1")]),
    ]);
    assert!(
        matches!(r, Err(Error::WrongExpectedVersion { ref stream, actual: Some(0), .. }) if stream == "a")
    );
    assert_eq!(db.stats().unwrap().next_position, 1);
    assert!(db.read_stream("b", Direction::Forward, 0, 10).is_err());
    let r = db
        .append_multi(&[
            ("b", ExpectedVersion::NoStream, &[ev(b"b0"), ev(b"b1")]),
            ("a", ExpectedVersion::Exact(0), &[ev(b"a1")]),
        ])
        .unwrap();
    assert_eq!((r.first_position, r.last_position), (1, 3));
    assert_eq!((r.first_version, r.last_version), (0, 1));
    let got = all(&db);
    let order: Vec<(String, u64)> = got
        .iter()
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    assert_eq!(
        order,
        vec![
            ("a".into(), 0),
            ("b".into(), 0),
            ("b".into(), 1),
            ("a".into(), 1)
        ]
    );
}

#[test]
fn a_clean_close_and_reopen_keep_everything_and_checkpoint_shrinks_the_wal() {
    let dir = tempdir();
    let payload = vec![7u8; 1000];
    {
        let db = Varve::open(
            dir.path(),
            opts()
                .checkpoint_interval(std::time::Duration::from_secs(3600))
                .checkpoint_bytes(1 << 30)
                .max_tail_bytes(1 << 30),
        )
        .unwrap();
        for i in 0..200 {
            db.append(
                &format!("s{}", i % 7),
                ExpectedVersion::Any,
                &[ev(&payload)],
            )
            .unwrap();
        }
        let before = db.stats().unwrap();
        assert_eq!(before.checkpoint_lag_events, 200);
        assert!(before.tail_bytes > 200_000);
        assert_eq!(db.checkpoint().unwrap(), 200);
        let after = db.stats().unwrap();
        assert_eq!(after.checkpoint_lag_events, 0);
        assert_eq!(after.tail_bytes, 0);
        assert!(after.wal_first_lsn > before.wal_first_lsn || after.wal_first_lsn == 1);
        for i in 0..10 {
            db.append("late", ExpectedVersion::Any, &[ev(&[i])])
                .unwrap();
        }
        db.close().unwrap();
    }
    let db = open(dir.path());
    let got = all(&db);
    assert_eq!(got.len(), 210);
    assert_eq!(db.stats().unwrap().streams, 8);
    let r = db
        .append("late", ExpectedVersion::Exact(9), &[ev(b"x")])
        .unwrap();
    assert_eq!(r.first_position, 210);
    assert_eq!(r.first_version, 10);
}

#[test]
fn the_unapplied_tail_stays_bounded_while_appends_outrun_checkpoints() {
    let dir = tempdir();
    let max_tail = 256 << 10;
    let db = Varve::open(
        dir.path(),
        opts()
            .checkpoint_interval(std::time::Duration::from_secs(3600))
            .checkpoint_bytes(64 << 10)
            .max_tail_bytes(max_tail)
            .sync_mode(varve_engine::SyncMode::Never),
    )
    .unwrap();
    let payload = vec![1u8; 1000];
    let mut peak = 0;
    for i in 0..3000 {
        db.append(
            &format!("s{}", i % 5),
            ExpectedVersion::Any,
            &[ev(&payload)],
        )
        .unwrap();
        if i % 10 == 0 {
            peak = peak.max(db.stats().unwrap().tail_bytes);
        }
    }
    // One append may land past the bound (it waited until the tail was below it).
    assert!(peak <= max_tail + 2048, "peak tail {peak} B");
    assert!(db.stats().unwrap().checkpoints > 0);
    assert_eq!(all(&db).len(), 3000);
}

#[test]
fn a_store_whose_wal_directory_was_removed_after_a_checkpoint_keeps_numbering() {
    let dir = tempdir();
    {
        let db = open(dir.path());
        for i in 0..20u8 {
            db.append("s", ExpectedVersion::Any, &[ev(&[i])]).unwrap();
        }
        db.close().unwrap(); // checkpoints everything
    }
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    let db = open(dir.path());
    assert_eq!(all(&db).len(), 20);
    let r = db
        .append("s", ExpectedVersion::Exact(19), &[ev(b"x")])
        .unwrap();
    assert_eq!((r.first_position, r.first_version), (20, 20));
    assert!(db.stats().unwrap().wal_durable_lsn > db.stats().unwrap().checkpoint_lsn);
    drop(db);
    // The new record is replayed after the old checkpoint, not skipped as already applied.
    let db = open(dir.path());
    assert_eq!(all(&db).len(), 21);
    assert_eq!(db.recovery_report().replayed_events, 1);
}

#[test]
fn two_stores_in_one_process_never_mix_stream_names_and_reads_nest() {
    let (d1, d2) = (tempdir(), tempdir());
    let (a, b) = (open(d1.path()), open(d2.path()));
    // Stream id 0 is "left" in one store and "right" in the other.
    a.append("left", ExpectedVersion::Any, &[ev(b"a")]).unwrap();
    b.append("right", ExpectedVersion::Any, &[ev(b"b")])
        .unwrap();
    for _ in 0..2 {
        a.checkpoint().unwrap();
        assert_eq!(&*a.get(0).unwrap().unwrap().stream, "left");
        assert_eq!(&*b.get(0).unwrap().unwrap().stream, "right");
        assert_eq!(
            a.with_event(0, |v| v.stream.to_owned()).unwrap().as_deref(),
            Some("left")
        );
        assert_eq!(
            b.with_event(0, |v| v.stream.to_owned()).unwrap().as_deref(),
            Some("right")
        );
    }
    // A read inside a scan's callback, on the same thread, sees the right names too.
    for i in 1..20u8 {
        a.append(&format!("s{i}"), ExpectedVersion::Any, &[ev(&[i])])
            .unwrap();
    }
    let mut seen = 0;
    a.scan_all(0, Direction::Forward, usize::MAX, |v| {
        let inner = a.get(v.position).unwrap().unwrap();
        assert_eq!(&*inner.stream, v.stream);
        let other = b.get(0).unwrap().unwrap();
        assert_eq!(&*other.stream, "right");
        seen += 1;
    })
    .unwrap();
    assert_eq!(seen, 20);
}

/// An event carries the wall-clock time of its append (microseconds since the Unix epoch),
/// the same from the WAL tail, from events.mdb and after a reopen.
#[test]
fn an_event_is_stamped_with_the_time_of_its_append() {
    let dir = tempdir();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as u64
    };
    let before = now();
    let db = open(dir.path());
    let p = append_one(&db, "clock", b"tick");
    let after = now();
    let stamp = db.get(p).unwrap().unwrap().timestamp_us;
    assert!(
        (before..=after).contains(&stamp),
        "{before} <= {stamp} <= {after}"
    );
    db.checkpoint().unwrap();
    assert_eq!(db.get(p).unwrap().unwrap().timestamp_us, stamp);
    db.close().unwrap();
    let db = open(dir.path());
    assert_eq!(db.get(p).unwrap().unwrap().timestamp_us, stamp);
}
