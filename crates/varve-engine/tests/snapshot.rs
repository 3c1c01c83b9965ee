//! Stream snapshots: the latest wins across sizes, survives reopen, and bad requests write
//! nothing. The kill -9 case is in `crash.rs`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use varve_engine::{Error, EventData, ExpectedVersion, Varve};
use varve_testkit::bytes::{noise, pattern as bytes};

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

#[test]
fn snapshots_lists_every_visible_snapshot_and_names_a_damaged_one_by_file_and_offset() {
    let dir = tempdir();
    let (a, c) = (noise(3000, 1), noise(5000, 3));
    {
        let db = open(dir.path());
        for s in ["a", "b", "c", "gone"] {
            for i in 0..3u8 {
                append_one(&db, s, &[i]);
            }
        }
        db.put_snapshot("a", 1, &a).unwrap();
        db.put_snapshot("c", 2, &c).unwrap();
        db.put_snapshot("gone", 2, b"gone state").unwrap();
        db.delete_stream("gone", ExpectedVersion::Any, varve_engine::DeleteMode::Soft)
            .unwrap();
        let listed: Vec<_> = db
            .snapshots()
            .map(|r| r.map(|i| (i.stream.to_string(), i.version, i.len)))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            listed,
            [("a".to_owned(), 1, 3000), ("c".to_owned(), 2, 5000)],
            "in stream order, without the deleted stream's"
        );
        db.close().unwrap();
    }
    // Flip one byte inside a's stored value.
    let page = dir.path().join("snapshots").join("page-00000000.vvp");
    let mut file = std::fs::read(&page).unwrap();
    let at = file
        .windows(64)
        .position(|w| w == &a[1000..1064])
        .expect("a's bytes are in the page as given");
    file[at + 10] ^= 0x40;
    std::fs::write(&page, &file).unwrap();

    let db = open(dir.path());
    let items: Vec<_> = db.snapshots().collect();
    assert_eq!(items.len(), 2, "the listing goes on past the damage");
    match &items[0] {
        Err(Error::Corrupted { location, what }) => {
            assert!(
                location.contains("snapshots/page-00000000.vvp at byte "),
                "{location}"
            );
            let offset: u64 = location.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(
                offset >= 64 && (offset - 64).is_multiple_of(40),
                "a slot entry: {offset}"
            );
            assert!(what.contains("checksum"), "{what}");
        }
        other => panic!("{other:?}"),
    }
    let c_info = items[1].as_ref().unwrap();
    assert_eq!(
        (&*c_info.stream, c_info.version, c_info.len),
        ("c", 2, 5000)
    );
    assert!(matches!(
        db.latest_snapshot("a"),
        Err(Error::Corrupted { .. })
    ));
    assert_eq!(db.latest_snapshot("c").unwrap(), Some((2, c)));
}
