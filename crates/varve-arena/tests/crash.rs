//! A writer killed with SIGKILL mid-append: a reader tailing the file through the cache
//! manager gets every whole record, in order, then "not yet available" for the torn tail,
//! and never a corrupt or partial record. Rounds: 2, or `VARVE_CRASH_ROUNDS`.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use varve_arena::format::{self, HEADER_LEN};
use varve_arena::{
    Arena, ArenaConfig, CHUNK_BYTES, CacheConfig, CacheManager, FileSource, RecordHeader,
};

const CHILD_ENV: &str = "VARVE_ARENA_CRASH_CHILD";

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as usize * 31 + i) as u8).collect()
}

/// In the child: append records, each in two writes, until killed (bounded, so a parent
/// that failed to kill it cannot fill the disk).
#[test]
fn crash_child() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return; // not the child: nothing to do
    };
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    let mut x = std::process::id() as u64 | 1;
    for seq in 0..20_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 3000) as usize;
        let mut rec = Vec::new();
        format::encode_record(0, seq, &payload(seq, len), &mut rec).unwrap();
        let cut = (x >> 32) as usize % rec.len();
        f.write_all(&rec[..cut]).unwrap();
        f.write_all(&rec[cut..]).unwrap();
    }
}

/// Kills the child if the parent's test fails before it does.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whole records in the file, by a plain scan.
fn whole_records(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let (mut off, mut n) = (0usize, 0u64);
    while off + HEADER_LEN <= bytes.len() {
        let h = RecordHeader::decode(bytes[off..off + HEADER_LEN].try_into().unwrap());
        let end = off + HEADER_LEN + h.len as usize;
        if end > bytes.len() {
            break;
        }
        off = end;
        n += 1;
    }
    n
}

#[test]
fn reader_survives_a_killed_writer() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let rounds = u64::from(varve_testkit::crash::rounds(2));
    for round in 0..rounds {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, b"").unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut child = KillOnDrop(child);
        let source = FileSource::new();
        source.open(1, &path).unwrap();
        let arena = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
        let m = CacheManager::new(Arc::new(source), arena, CacheConfig::default()).unwrap();
        let mut r = m.reader(1, 0);
        let mut seq = 0u64;
        // Tail while the child writes; kill it at a point that varies by round.
        let kill_after = 200 + round * 137 % 5_000;
        let start = Instant::now();
        while seq < kill_after {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "child wrote too little"
            );
            match r.next_record().unwrap() {
                Some(rec) => {
                    let h = RecordHeader::decode(rec.header().try_into().unwrap());
                    assert_eq!(h.sequence, seq);
                    assert_eq!(rec.payload(), &payload(seq, h.len as usize)[..]);
                    seq += 1;
                }
                None => std::thread::sleep(Duration::from_micros(50)),
            }
        }
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        // Drain: every whole record, then None for the torn tail, never an error.
        while let Some(rec) = r.next_record().unwrap() {
            let h = RecordHeader::decode(rec.header().try_into().unwrap());
            assert_eq!(h.sequence, seq);
            assert_eq!(rec.payload(), &payload(seq, h.len as usize)[..]);
            seq += 1;
        }
        assert_eq!(seq, whole_records(&path), "round {round}");
        assert!(r.next_record().unwrap().is_none());
    }
}
