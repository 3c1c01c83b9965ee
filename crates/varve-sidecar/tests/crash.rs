//! Crash safety: a child process stores and releases blobs and is killed with SIGKILL at a
//! random moment; after reopening, every acknowledged store is present and intact, every
//! acknowledged release is gone, and only the one operation in flight may go either way.
//! Rounds: 3 by default, `VARVE_CRASH_ROUNDS=N` for more.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use varve_sidecar::{BlobHash, Error, Payload, Sidecar, SidecarOptions};

const CHILD_ENV: &str = "VARVE_SIDECAR_CRASH_CHILD";

/// Blob number `n`: unique content, 2 KiB to ~600 KiB.
fn blob(n: u64) -> Vec<u8> {
    varve_testkit::bytes::noise(2048 + (n as usize * 7919) % 600_000, n)
}

/// The child: store blobs forever, release every third one after storing it, and log each
/// acknowledged operation ("S n" / "R n") once it has returned.
fn child(dir: &Path) {
    let sc = Sidecar::open(dir.join("store"), SidecarOptions::default()).unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("acked"))
        .unwrap();
    let start: u64 = std::fs::read_to_string(dir.join("next"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(0);
    for n in start.. {
        sc.store(&blob(n)).unwrap();
        // One write(2) per line, so a kill cannot leave half a number behind.
        log.write_all(format!("S {n}\n").as_bytes()).unwrap();
        if n % 3 == 0 && n > 0 {
            match sc.release(&BlobHash::of(&blob(n - 1))) {
                Ok(_) => log.write_all(format!("R {}\n", n - 1).as_bytes()).unwrap(),
                // Blob n - 1 was the store in flight at the previous kill and never landed.
                Err(Error::MissingBlob(_)) => {}
                Err(e) => panic!("{e}"),
            }
        }
    }
}

#[test]
fn crash_child() {
    // Acts only when re-executed by `kill_during_writes_loses_nothing_acknowledged`.
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

/// Blobs acknowledged as stored and as released, from the whole log, and the last
/// operation of the latest round.
fn parse_log(log: &str) -> (BTreeSet<u64>, BTreeSet<u64>, Option<(char, u64)>) {
    let (mut stored, mut released, mut last_op) = (BTreeSet::new(), BTreeSet::new(), None);
    for line in log.lines() {
        if line.starts_with('#') {
            last_op = None;
            continue;
        }
        let Some((op, n)) = line.split_once(' ') else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match op {
            "S" => {
                stored.insert(n);
                last_op = Some(('S', n));
            }
            "R" => {
                released.insert(n);
                last_op = Some(('R', n));
            }
            _ => {}
        }
    }
    (stored, released, last_op)
}

fn append(dir: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(dir.join("acked"))
        .unwrap();
    f.write_all(format!("{line}\n").as_bytes()).unwrap();
}

#[test]
fn kill_during_writes_loses_nothing_acknowledged() {
    let rounds = u64::from(varve_testkit::crash::rounds(3));
    let dir = tempfile::tempdir().unwrap();
    let mut seed = 0x1234_5678u64;
    for round in 0..rounds {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut kid = cmd.spawn().unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 400));
        kid.kill().unwrap(); // SIGKILL
        kid.wait().unwrap();

        let log = std::fs::read_to_string(dir.path().join("acked")).unwrap_or_default();
        let (stored, released, last_op) = parse_log(&log);
        let next_new = stored.last().map_or(0, |n| n + 1);
        // At most one operation was in flight: the store after the last acknowledged one,
        // or the release that follows a store of a multiple of three.
        let mut in_flight = vec![next_new];
        if let Some(('S', n)) = last_op
            && n % 3 == 0
            && n > 0
        {
            in_flight.push(n - 1);
        }
        let sc = Sidecar::open(dir.path().join("store"), SidecarOptions::default()).unwrap();
        for &n in &in_flight {
            // Either outcome is allowed; record the one that happened for later rounds.
            match sc.read(&Payload::BlobRef(BlobHash::of(&blob(n)))) {
                Ok(b) => {
                    assert_eq!(b, blob(n), "round {round}: in-flight blob {n} is damaged");
                    if !stored.contains(&n) {
                        append(dir.path(), &format!("S {n}"));
                    }
                }
                Err(Error::MissingBlob(_)) => {
                    if stored.contains(&n) && !released.contains(&n) {
                        append(dir.path(), &format!("R {n}"));
                    }
                }
                Err(e) => panic!("round {round}: blob {n}: {e}"),
            }
        }
        for &n in stored.iter().filter(|n| !in_flight.contains(n)) {
            let h = BlobHash::of(&blob(n));
            let got = sc.read(&Payload::BlobRef(h));
            if released.contains(&n) {
                assert!(
                    matches!(got, Err(Error::MissingBlob(_))),
                    "round {round}: released blob {n} is back"
                );
            } else {
                assert_eq!(got.unwrap(), blob(n), "round {round}: blob {n}");
                assert_eq!(sc.refcount(&h).unwrap(), Some(1));
            }
        }
        println!(
            "round {round}: {} stores, {} releases acknowledged so far",
            stored.len(),
            released.len()
        );
        drop(sc);
        // The next child starts past everything that may have been written.
        std::fs::write(dir.path().join("next"), format!("{}", next_new + 1)).unwrap();
        append(dir.path(), &format!("# round {round} done"));
    }
}
