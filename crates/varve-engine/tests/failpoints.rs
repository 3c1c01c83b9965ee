//! Crashes at exact points: between an append's blob store and its log write, inside a
//! checkpoint's transaction, and between a checkpoint's commit and the WAL truncation. A
//! child process (this binary, re-executed) appends, reports what was acknowledged, then
//! aborts at the point; the parent reopens and checks every acknowledged event, the blob
//! count, and that nothing is applied twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use common::*;
use varve_engine::{Direction, ExpectedVersion, Options, Varve};

const CHILD: &str = "VARVE_ENGINE_FP_CHILD_DIR";

fn fp_opts() -> Options {
    opts()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_bytes(1 << 30)
        .max_tail_bytes(1 << 30)
}

fn big(i: u32) -> Vec<u8> {
    let mut v = vec![i as u8; 3000];
    v[..4].copy_from_slice(&i.to_le_bytes());
    v
}

/// The child: 20 acknowledged appends (every 4th with a blob), a checkpoint of the first
/// 10, then the step that reaches the fail point.
#[test]
fn failpoint_child() {
    let Some(dir) = std::env::var_os(CHILD) else {
        return; // Not a child.
    };
    let point = std::env::var("VARVE_ENGINE_FAILPOINT").unwrap();
    let point = point.split(':').next().unwrap().to_owned();
    let db = Varve::open(&dir, fp_opts()).unwrap();
    let mut acks = std::fs::File::create(std::path::Path::new(&dir).join("acks")).unwrap();
    for i in 0..20u32 {
        let p = if i % 4 == 0 {
            big(i)
        } else {
            i.to_le_bytes().to_vec()
        };
        let r = db.append(&format!("s{}", i % 3), ExpectedVersion::Any, &[ev(&p)]);
        let r = r.unwrap();
        writeln!(acks, "{} {i}", r.first_position).unwrap();
        acks.flush().unwrap();
        if i == 9 && point != "before_checkpoint_commit" && point != "after_checkpoint_commit" {
            db.checkpoint().unwrap();
        }
    }
    match point.as_str() {
        "after_blob_store" => {
            let _ = db.append("s0", ExpectedVersion::Any, &[ev(&big(99))]);
        }
        _ => {
            let _ = db.checkpoint();
        }
    }
    panic!("the fail point {point} was not reached");
}

fn run_point(point: &str) {
    let d = tempdir();
    let dir = d.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "failpoint_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, &dir)
        // The first five blob stores are the acknowledged appends'; the sixth is the one
        // that crashes (checkpoints: the first one the child asks for).
        .env(
            "VARVE_ENGINE_FAILPOINT",
            if point == "after_blob_store" {
                format!("{point}:6")
            } else {
                point.to_owned()
            },
        )
        .status()
        .unwrap();
    assert!(!status.success(), "{point}: the child must abort");
    let acks = std::fs::read_to_string(dir.join("acks")).unwrap();
    let acked: Vec<(u64, u32)> = acks
        .lines()
        .map(|l| {
            let (p, i) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), i.parse().unwrap())
        })
        .collect();
    assert_eq!(acked.len(), 20, "{point}");
    let db = Varve::open(&dir, fp_opts()).unwrap();
    let got = all(&db);
    assert_eq!(
        got.len(),
        20,
        "{point}: nothing lost, nothing applied twice"
    );
    for (p, i) in acked {
        let e = &got[p as usize];
        assert_eq!(e.position, p);
        assert_eq!(e.version, u64::from(i / 3));
        let want = if i % 4 == 0 {
            big(i)
        } else {
            i.to_le_bytes().to_vec()
        };
        assert_eq!(db.read_payload(e).unwrap(), want, "{point}: event {i}");
    }
    let report = db.recovery_report().clone();
    let stats = db.stats().unwrap();
    assert_eq!(stats.blobs, 5, "{point}: blob count = referenced blobs");
    match point {
        "after_blob_store" => assert_eq!(report.orphan_blob_refs_released, 1),
        // The transaction never committed: everything after the first checkpoint (none
        // here) comes back from the log.
        "before_checkpoint_commit" => assert_eq!(report.replayed_events, 20),
        // The commit made it, the truncation did not: the log is replayed from the
        // checkpoint on, so nothing is replayed.
        "after_checkpoint_commit" => assert_eq!(report.replayed_events, 0),
        _ => unreachable!(),
    }
    // Numbering continues, and a checkpoint after reopen works.
    let r = db
        .append("s0", ExpectedVersion::Exact(6), &[ev(b"next")])
        .unwrap();
    assert_eq!(r.first_position, 20);
    db.checkpoint().unwrap();
    assert_eq!(
        db.read_all(0, Direction::Forward, usize::MAX)
            .unwrap()
            .len(),
        21
    );
}

#[test]
fn a_crash_between_blob_store_and_log_write_leaves_no_orphan() {
    if std::env::var_os(CHILD).is_none() {
        run_point("after_blob_store");
    }
}

#[test]
fn a_crash_inside_a_checkpoint_transaction_loses_nothing() {
    if std::env::var_os(CHILD).is_none() {
        run_point("before_checkpoint_commit");
    }
}

#[test]
fn a_crash_between_checkpoint_commit_and_wal_truncation_applies_nothing_twice() {
    if std::env::var_os(CHILD).is_none() {
        run_point("after_checkpoint_commit");
    }
}

const KILL_CHILD: &str = "VARVE_ENGINE_KILL_CHILD_DIR";

/// The same deterministic appends, for the clean-close and the kill -9 store.
fn deterministic_appends(db: &Varve) {
    for i in 0..300u32 {
        let p = if i % 50 == 0 {
            big(i)
        } else {
            i.to_le_bytes().to_vec()
        };
        db.append(&format!("s{}", i % 7), ExpectedVersion::Any, &[ev(&p)])
            .unwrap();
        if i == 150 {
            db.checkpoint().unwrap();
        }
    }
}

/// The child of the kill test: appends, says so, and waits to be killed.
#[test]
fn kill_child() {
    let Some(dir) = std::env::var_os(KILL_CHILD) else {
        return; // Not a child.
    };
    let db = Varve::open(&dir, fp_opts()).unwrap();
    deterministic_appends(&db);
    std::fs::write(std::path::Path::new(&dir).join("done"), b"done").unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

fn logical(db: &Varve) -> Vec<(u64, String, u64, String, Vec<u8>)> {
    all(db)
        .into_iter()
        .map(|e| {
            let p = db.read_payload(&e).unwrap();
            (e.position, e.stream.to_string(), e.version, e.event_type, p)
        })
        .collect()
}

#[test]
fn a_clean_close_and_a_kill_9_reopen_to_the_same_state() {
    if std::env::var_os(KILL_CHILD).is_some() || std::env::var_os(CHILD).is_some() {
        return;
    }
    let d = tempdir();
    let killed = d.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "kill_child", "--nocapture", "--test-threads=1"])
        .env(KILL_CHILD, &killed)
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !killed.join("done").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let closed = d.path().join("closed");
    {
        let db = Varve::open(&closed, fp_opts()).unwrap();
        deterministic_appends(&db);
        db.close().unwrap();
    }
    let a = Varve::open(&killed, fp_opts()).unwrap();
    let b = Varve::open(&closed, fp_opts()).unwrap();
    assert!(
        a.recovery_report().replayed_events > 0,
        "the kill left a tail to replay"
    );
    assert_eq!(
        b.recovery_report().replayed_events,
        0,
        "close checkpointed everything"
    );
    assert_eq!(logical(&a), logical(&b));
    let (sa, sb) = (a.stats().unwrap(), b.stats().unwrap());
    assert_eq!(
        (sa.next_position, sa.streams, sa.blobs, sa.blob_bytes),
        (sb.next_position, sb.streams, sb.blobs, sb.blob_bytes)
    );
    for s in 0..7 {
        let name = format!("s{s}");
        assert_eq!(
            a.stream_version(&name).unwrap(),
            b.stream_version(&name).unwrap()
        );
    }
}
