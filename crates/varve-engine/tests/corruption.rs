//! Damage on disk and I/O failures: a flipped byte gives a reported cut or `Corrupted`,
//! never different bytes; a failing disk degrades the store, reads keep working and a
//! reopen recovers every acknowledged event.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use varve_engine::{Direction, Error, ExpectedVersion, Options, RecordedEvent, Varve};

fn no_checkpoints() -> Options {
    opts()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_bytes(1 << 30)
        .max_tail_bytes(1 << 30)
}

fn marker(i: u32) -> Vec<u8> {
    format!("<<event-{i:05}-payload-marker>>").into_bytes()
}

fn write_events(dir: &Path, o: Options, n: u32) -> Vec<RecordedEvent> {
    let db = Varve::open(dir, o).unwrap();
    for i in 0..n {
        db.append(
            &format!("s{}", i % 4),
            ExpectedVersion::Any,
            &[ev(&marker(i))],
        )
        .unwrap();
    }
    let got = all(&db);
    drop(db); // no close: nothing is checkpointed on the way out
    got
}

fn flip_first(path: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("marker on disk");
    bytes[at + needle.len() / 2] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

fn wal_segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_flipped_byte_in_the_wal_is_reported_and_never_read_as_data() {
    for victim in [3u32, 150, 299] {
        let d = tempdir();
        let before = write_events(d.path(), no_checkpoints(), 300);
        let seg = wal_segments(d.path()).pop().unwrap();
        flip_first(&seg, &marker(victim));
        match Varve::open(d.path(), no_checkpoints()) {
            Ok(db) => {
                // Recovery cut the log at the damage: what is left is a prefix of what was
                // written, byte for byte, and the cut is reported.
                let after = all(&db);
                assert!(
                    after.len() < before.len(),
                    "victim {victim}: the damaged event is gone"
                );
                assert_eq!(after[..], before[..after.len()], "victim {victim}");
                assert!(
                    db.recovery_report().wal.dropped_bytes > 0,
                    "victim {victim}: the cut is reported: {:?}",
                    db.recovery_report()
                );
            }
            Err(Error::Wal(varve_wal::Error::Corrupted { segment, .. })) => {
                assert_eq!(segment, seg, "victim {victim}");
            }
            Err(e) => panic!("victim {victim}: {e:?}"),
        }
    }
}

#[test]
fn a_flipped_byte_in_events_mdb_is_corrupted_at_its_position_and_other_events_read() {
    let d = tempdir();
    let before = {
        let db = Varve::open(d.path(), no_checkpoints()).unwrap();
        for i in 0..200 {
            db.append(
                &format!("s{}", i % 4),
                ExpectedVersion::Any,
                &[ev(&marker(i))],
            )
            .unwrap();
        }
        db.close().unwrap();
        let db = Varve::open(d.path(), no_checkpoints()).unwrap();
        all(&db)
    };
    flip_first(&d.path().join("events.mdb"), &marker(77));
    let db = Varve::open(d.path(), no_checkpoints()).unwrap();
    match db.get(77) {
        Err(Error::Corrupted { location, .. }) => {
            assert!(
                location.contains("events.mdb") && location.contains("77"),
                "{location}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.read_all(0, Direction::Forward, usize::MAX),
        Err(Error::Corrupted { .. })
    ));
    assert!(matches!(
        db.read_stream("s1", Direction::Forward, 0, 1000),
        Err(Error::Corrupted { .. })
    ));
    for p in [0u64, 76, 78, 199] {
        assert_eq!(db.get(p).unwrap().as_ref(), Some(&before[p as usize]));
    }
    assert_eq!(
        db.read_all(78, Direction::Forward, 1000).unwrap(),
        before[78..].to_vec()
    );
}

#[test]
fn a_garbage_wal_record_of_the_engine_kind_is_corrupted_not_a_panic() {
    let d = tempdir();
    write_events(d.path(), no_checkpoints(), 5);
    {
        let wal = varve_wal::Wal::open(
            d.path().join("wal"),
            varve_wal::Options::default()
                .segment_size(8 << 20)
                .max_record_size(4 << 20),
        )
        .unwrap();
        wal.append_kind(1, b"definitely not an append record")
            .unwrap()
            .wait()
            .unwrap();
        wal.close().unwrap();
    }
    match Varve::open(d.path(), no_checkpoints()) {
        Err(Error::Corrupted { location, .. }) => assert!(location.contains("LSN 6"), "{location}"),
        other => panic!("{other:?}"),
    }
    // Nothing was changed by the failed open: it fails the same way again.
    assert!(matches!(
        Varve::open(d.path(), no_checkpoints()),
        Err(Error::Corrupted { .. })
    ));
}

/// Mounts a small tmpfs (root only); `None` with a printed reason where that is not
/// possible, and the test then checks nothing.
fn small_fs(size: &str) -> Option<(tempfile::TempDir, Unmount)> {
    let d = tempdir();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(d.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return None;
    }
    let u = Unmount(d.path().to_path_buf());
    Some((d, u))
}

struct Unmount(std::path::PathBuf);
impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_degrades_the_store_reads_keep_working_and_a_reopen_recovers() {
    let Some((d, _mount)) = small_fs("12m") else {
        return;
    };
    let store = d.path().join("store");
    let o = no_checkpoints().wal_segment_size(1 << 20);
    let db = Varve::open(&store, o.clone()).unwrap();
    // Leave room for about three more WAL segments.
    let free = rustix::fs::statvfs(d.path()).unwrap();
    let avail = free.f_bavail * free.f_frsize;
    let filler = d.path().join("filler");
    std::fs::write(&filler, vec![0u8; (avail.saturating_sub(3 << 20)) as usize]).unwrap();
    let payload = vec![5u8; 1000];
    let mut acked = Vec::new();
    let err = loop {
        match db.append("s", ExpectedVersion::Any, &[ev(&payload)]) {
            Ok(r) => acked.push(r.first_position),
            Err(e) => break e,
        }
        assert!(acked.len() < 100_000, "the disk never filled");
    };
    assert!(matches!(err, Error::Degraded { .. }), "{err:?}");
    assert!(matches!(
        db.append("s", ExpectedVersion::Any, &[ev(b"x")]),
        Err(Error::Degraded { .. })
    ));
    let stats = db.stats().unwrap();
    assert!(stats.degraded.is_some());
    // Every acknowledged event still reads.
    let got = all(&db);
    assert!(got.len() >= acked.len());
    for p in &acked {
        assert_eq!(got[*p as usize].payload.len(), 1000);
    }
    drop(db);
    std::fs::remove_file(&filler).unwrap();
    let db = Varve::open(&store, o).unwrap();
    let again = all(&db);
    assert!(again.len() >= acked.len());
    assert_eq!(again[..acked.len()], got[..acked.len()]);
    let r = db
        .append("s", ExpectedVersion::Any, &[ev(b"after")])
        .unwrap();
    assert_eq!(r.first_position, again.len() as u64);
}

/// An event missing from `events.mdb` in a store that never deleted anything is damage:
/// `get` and the scans report it at its position (they do not skip it as a deleted one),
/// and the events around it still read.
#[test]
fn a_checkpointed_event_missing_from_events_mdb_is_corrupted_when_nothing_was_deleted() {
    let dir = tempdir();
    let written = write_events(dir.path(), no_checkpoints(), 10);
    Varve::open(dir.path(), no_checkpoints())
        .unwrap()
        .close()
        .unwrap(); // everything checkpointed
    {
        let mut o = heed::EnvOpenOptions::new();
        o.max_dbs(8);
        // SAFETY: NO_SUB_DIR names the file; the store is closed, nothing else maps it.
        unsafe { o.flags(heed::EnvFlags::NO_SUB_DIR) };
        // SAFETY: no other process or handle has events.mdb open.
        let env = unsafe { o.open(dir.path().join("events.mdb")) }.unwrap();
        let rtxn = env.read_txn().unwrap();
        let events = env
            .open_databases_and_commit(rtxn, |dbo, rtxn| -> heed::Result<_> {
                let db = dbo.open_database::<heed::types::Bytes, heed::types::Bytes>(
                    rtxn,
                    Some("events"),
                )?;
                Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
            })
            .unwrap()
            .unwrap_commit()
            .expect("the events database");
        let mut w = env.write_txn().unwrap();
        assert!(events.delete(&mut w, &4u64.to_be_bytes()).unwrap());
        w.commit().unwrap();
    }
    let db = Varve::open(dir.path(), no_checkpoints()).unwrap();
    assert_eq!(db.stats().unwrap().deleted_streams, 0);
    match db.get(4) {
        Err(Error::Corrupted { location, what }) => {
            assert!(location.contains("position 4"), "{location}");
            assert_eq!(what, "a checkpointed event is missing");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.with_event(4, |_| ()),
        Err(Error::Corrupted { .. })
    ));
    assert_eq!(db.get(5).unwrap().unwrap(), written[5]);
    assert_eq!(db.get(3).unwrap().unwrap(), written[3]);
    assert!(matches!(
        db.read_all(0, Direction::Forward, 100),
        Err(Error::Corrupted { .. })
    ));
}
