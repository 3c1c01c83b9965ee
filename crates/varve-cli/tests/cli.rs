//! Runs the built `varve` binary against stores the tests build (through the engine) and
//! damage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use varve_engine::{EventData, ExpectedVersion, Options, Varve};

/// A temporary directory on the real disk (under the target dir), checked not to be tmpfs.
fn tempdir() -> tempfile::TempDir {
    varve_testkit::dirs::on_disk(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// Options that never checkpoint on their own (tests decide with `close`/`drop`).
fn no_checkpoints() -> Options {
    Options::default()
        .checkpoint_interval(Duration::from_secs(3600))
        .checkpoint_bytes(1 << 30)
        .max_tail_bytes(1 << 30)
        .wal_segment_size(8 << 20)
}

/// The commands that take only a store directory (the others are run on their own).
const COMMANDS: &[&str] = &["stat", "dump", "check"];

/// Opens `dir` in the test process. Another test's child process may hold the store's
/// lock for a moment (a fork inherits the lock file's descriptor until its exec), so a
/// `Locked` is retried for a few seconds.
fn open_store(dir: &Path) -> Varve {
    for _ in 0..500 {
        match Varve::open(dir, no_checkpoints()) {
            Err(varve_engine::Error::Locked(_)) => std::thread::sleep(Duration::from_millis(10)),
            other => return other.unwrap(),
        }
    }
    panic!("{} stayed locked", dir.display());
}

fn varve(args: &[&str]) -> Output {
    varve_in(args, None)
}

fn varve_in(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varve"));
    // As in `open_store`: a fork in another test may hold a store's lock for a moment.
    if !args.contains(&"--wait-lock") {
        cmd.args(["--wait-lock", "5"]);
    }
    cmd.args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // A command that hangs (e.g. retrying a lock for ever) is killed after a bound, and
    // `code` then fails the test: no test waits unboundedly on the tool.
    let pid = child.id().to_string();
    let (done, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if watch.recv_timeout(COMMAND_BOUND).is_err() {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    if let Some(input) = stdin {
        use std::io::Write;
        // A command that fails before reading its input closes the pipe.
        if let Err(e) = child.stdin.take().unwrap().write_all(input) {
            assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
        }
    }
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    watchdog.join().unwrap();
    out
}

/// The longest any one run of the tool may take in these tests (each takes well under a
/// second here). Short, so that a mutant that makes every `check` hang fails the whole
/// binary within cargo-mutants' timeout (a few tests, two at a time, each waiting this long).
const COMMAND_BOUND: Duration = Duration::from_secs(10);

fn p(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited, not killed")
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\nstderr: {}", stdout(o), stderr(o)))
}

/// A store with 3 streams, 10 small events, one 100 KiB blob referenced twice (dedup),
/// one 3000-byte blob and a 2000-byte snapshot of stream `s0` at version 2; `checkpointed` closes it (everything in events.mdb), else it is
/// dropped with all events in the WAL only.
fn build_store(dir: &Path, checkpointed: bool) -> Vec<u8> {
    let db = open_store(dir);
    for i in 0..10u32 {
        let payload = format!("{{\"n\": {i}}}");
        db.append(
            &format!("s{}", i % 3),
            ExpectedVersion::Any,
            &[EventData::new("small", payload.as_bytes())],
        )
        .unwrap();
    }
    let big = big_payload();
    db.append(
        "blobs",
        ExpectedVersion::NoStream,
        &[EventData::new("big", &big)],
    )
    .unwrap();
    db.append(
        "blobs",
        ExpectedVersion::Exact(0),
        &[EventData::new("big", &big)],
    )
    .unwrap();
    db.append(
        "blobs",
        ExpectedVersion::Exact(1),
        &[EventData::new("mid", &[0xffu8; 3000]).with_metadata(b"m1")],
    )
    .unwrap();
    assert!(db.put_snapshot("s0", 2, &snapshot_bytes()).unwrap());
    if checkpointed {
        db.close().unwrap();
    } else {
        drop(db);
    }
    big
}

/// 2000 bytes lz4 cannot shrink (so the slotted store keeps them as given).
fn snapshot_bytes() -> Vec<u8> {
    varve_testkit::bytes::noise(2000, 17)
}

fn big_payload() -> Vec<u8> {
    (0..100 * 1024u32)
        .map(|i| b"blob-content-marker-"[(i % 20) as usize])
        .collect()
}

#[test]
fn stat_reports_counts_as_text_and_json() {
    let d = tempdir();
    build_store(d.path(), true);
    let o = varve(&["stat", p(d.path()), "--json", "--scan"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(j["events"], 13);
    assert_eq!(j["positions"], serde_json::json!([0, 12]));
    assert_eq!(j["streams"], 4);
    assert_eq!(j["checkpoint"]["checkpointed_events"], 13);
    assert_eq!(j["checkpoint"]["lag_events"], 0);
    assert_eq!(j["blobs"]["count"], 2);
    assert_eq!(j["blobs"]["bytes"], 100 * 1024 + 3000);
    assert_eq!(j["blobs"]["references"], 3);
    assert_eq!(j["blobs"]["distinct_referenced"], 2);
    assert_eq!(j["blobs"]["referenced_bytes"], 2 * 100 * 1024 + 3000);
    let ratio = j["blobs"]["dedup_ratio"].as_f64().unwrap();
    assert!(
        (ratio - (2.0 * 102_400.0 + 3000.0) / 105_400.0).abs() < 1e-9,
        "{ratio}"
    );
    let files: Vec<&str> = j["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"events.mdb"), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("wal/")), "{files:?}");
    assert!(files.iter().any(|f| f.starts_with("blobs/")), "{files:?}");
    assert!(
        files.iter().any(|f| f.starts_with("snapshots/page-")),
        "{files:?}"
    );
    assert_eq!(j["snapshots"]["count"], 1);
    assert_eq!(j["snapshots"]["bytes"], 9 + 2000, "with the 9-byte header");
    assert!(j["snapshots"]["stored_bytes"].as_u64().unwrap() >= 2009);
    assert_eq!(j["snapshots"]["pages"], 1);
    assert_eq!(j["consumers"], 0);
    assert_eq!(j["deleted_streams"], 0);

    // The same store with the events still in the WAL: the lag shows.
    let d2 = tempdir();
    build_store(d2.path(), false);
    let j = json(&varve(&["stat", p(d2.path()), "--json"]));
    assert_eq!(j["events"], 13);
    assert_eq!(j["checkpoint"]["lag_events"], 13);
    assert_eq!(j["checkpoint"]["checkpointed_events"], 0);
    assert_eq!(j["recovery"]["replayed_events"], 13);
    assert!(j["wal"]["segments"].as_u64().unwrap() >= 1);
    assert!(j["blobs"]["dedup_ratio"].is_null(), "no --scan: no ratio");

    let o = varve(&["stat", p(d.path())]);
    assert_eq!(code(&o), 0);
    let text = stdout(&o);
    assert!(
        text.contains("events       13 (positions 0..=12)"),
        "{text}"
    );
    assert!(text.contains("streams      4"), "{text}");
    assert!(
        text.contains("snapshots    1 snapshots, ") && text.contains(" in 1 slotted pages"),
        "{text}"
    );
    assert!(text.contains("events.mdb"), "{text}");
}

#[test]
fn a_missing_directory_or_one_without_a_store_is_exit_3_and_creates_nothing() {
    let d = tempdir();
    let missing = d.path().join("nope");
    for cmd in COMMANDS {
        let o = varve(&[cmd, p(&missing)]);
        assert_eq!(code(&o), 3, "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("no such directory"), "{}", stderr(&o));
        assert!(!missing.exists(), "{cmd} created the directory");
    }
    let empty = d.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for cmd in COMMANDS {
        let o = varve(&[cmd, p(&empty)]);
        assert_eq!(code(&o), 3, "{cmd}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("holds no Varve store"),
            "{}",
            stderr(&o)
        );
        assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{cmd} wrote");
    }
}

#[test]
fn a_store_open_elsewhere_is_exit_4_with_the_locked_message() {
    let d = tempdir();
    build_store(d.path(), true);
    let held = open_store(d.path());
    for cmd in COMMANDS {
        let o = varve(&["--wait-lock", "0", cmd, p(d.path())]);
        assert_eq!(code(&o), 4, "{cmd}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("is locked by another open store"), "{err}");
        assert!(err.contains("stop the other process"), "{err}");
        assert!(err.contains("--wait-lock"), "{err}");
    }
    // --wait-lock waits: released after 300 ms, the command then runs.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let o = varve(&["--wait-lock", "20", "stat", p(d.path()), "--json"]);
    releaser.join().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(json(&o)["events"], 13);
}

fn dump_json(dir: &Path, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["dump", p(dir), "--json"];
    args.extend_from_slice(extra);
    let o = varve(&args);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn dump_prints_events_in_order_with_filters_and_blob_references() {
    let d = tempdir();
    let big = build_store(d.path(), false);
    let all = dump_json(d.path(), &[]);
    assert_eq!(all.len(), 13);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["position"], i as u64);
    }
    assert_eq!(all[4]["stream"], "s1");
    assert_eq!(all[4]["version"], 1);
    assert_eq!(all[4]["type"], "small");
    assert_eq!(all[4]["payload"]["utf8"], "{\"n\": 4}");
    // Large payloads by reference (size + hash) unless --payloads.
    assert_eq!(all[10]["payload"]["blob"]["len"], big.len() as u64);
    let hash = all[10]["payload"]["blob"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(hash.len(), 64);
    assert_eq!(all[11]["payload"]["blob"]["sha256"], hash.as_str(), "dedup");
    assert_eq!(all[12]["payload"]["blob"]["len"], 3000);
    assert_eq!(all[12]["metadata"]["utf8"], "m1");

    let with = dump_json(d.path(), &["--payloads", "--from", "10", "--limit", "3"]);
    assert_eq!(with.len(), 3);
    assert_eq!(with[0]["position"], 10);
    assert_eq!(
        with[0]["payload"]["utf8"].as_str().unwrap().as_bytes(),
        &big[..]
    );
    // Not UTF-8: hex.
    assert_eq!(with[2]["payload"]["hex"], "ff".repeat(3000));

    let s2 = dump_json(d.path(), &["--stream", "s2", "--from", "1"]);
    let got: Vec<(u64, u64)> = s2
        .iter()
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, vec![(5, 1), (8, 2)]);

    // More events than one read batch, limit across batches.
    let big_store = tempdir();
    {
        let db = open_store(big_store.path());
        let evs: Vec<Vec<u8>> = (0..2500u32).map(|i| i.to_string().into_bytes()).collect();
        let data: Vec<EventData<'_>> = evs.iter().map(|b| EventData::new("n", b)).collect();
        db.append("many", ExpectedVersion::Any, &data).unwrap();
    }
    let many = dump_json(big_store.path(), &["--from", "3", "--limit", "2100"]);
    assert_eq!(many.len(), 2100);
    assert_eq!(many[0]["payload"]["utf8"], "3");
    assert_eq!(many[2099]["position"], 2102);
    assert_eq!(
        dump_json(big_store.path(), &["--stream", "many"]).len(),
        2500
    );

    // Text lines.
    let o = varve(&["dump", p(d.path()), "--limit", "1"]);
    assert_eq!(code(&o), 0);
    let line = stdout(&o);
    assert!(line.starts_with("0 s0@0 small "), "{line}");
    assert!(line.trim_end().ends_with(r#""{\"n\": 0}""#), "{line}");
    let o = varve(&["dump", p(d.path()), "--from", "10", "--limit", "1"]);
    assert!(stdout(&o).contains(&format!("blob:sha256:{hash}:{}", big.len())));

    // A stream that does not exist.
    let o = varve(&["dump", p(d.path()), "--stream", "nope"]);
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stream \"nope\" not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn append_writes_durably_checks_the_expected_version_and_prints_the_result() {
    let d = tempdir();
    let store = d.path().join("new");
    // No store and no --create: refused, nothing created.
    let o = varve_in(&["append", p(&store), "s", "t"], Some(b"x"));
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(!store.exists());

    let o = varve_in(
        &[
            "append",
            p(&store),
            "s",
            "created",
            "--create",
            "--expected",
            "no-stream",
            "--json",
        ],
        Some(b"{\"a\": 1}"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = json(&o);
    assert_eq!(
        (j["first_position"].as_u64(), j["first_version"].as_u64()),
        (Some(0), Some(0))
    );
    // --create made a store with the engine's defaults (64 MiB WAL segments, whose
    // recovery a debug build reads slowly, about 1 s); the rest of the test appends to a
    // store made with small segments.
    let created = open_store(&store);
    assert_eq!(created.stream_version("s").unwrap(), Some(0));
    drop(created);
    let store = d.path().join("small");
    open_store(&store).close().unwrap();
    let o = varve_in(
        &[
            "append",
            p(&store),
            "s",
            "created",
            "--expected",
            "no-stream",
        ],
        Some(b"{\"a\": 1}"),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "appended at position 0 (stream s version 0)"
    );
    let o = varve_in(
        &[
            "append",
            p(&store),
            "s",
            "paid",
            "--expected",
            "0",
            "--metadata",
            "m",
        ],
        Some(&[0xff, 0x00]),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "appended at position 1 (stream s version 1)"
    );
    // A wrong expectation: exit 7, the actual version named, nothing written.
    for exp in ["no-stream", "0", "5"] {
        let o = varve_in(
            &["append", p(&store), "s", "late", "--expected", exp],
            Some(b"z"),
        );
        assert_eq!(code(&o), 7, "{exp}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("wrong expected version"),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("actual Some(1)"), "{}", stderr(&o));
    }
    let o = varve_in(
        &["append", p(&store), "other", "t", "--expected", "exists"],
        Some(b""),
    );
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    // A bad --expected is a usage error.
    let o = varve_in(
        &["append", p(&store), "s", "t", "--expected", "soon"],
        Some(b""),
    );
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    // An invalid stream name is refused by the engine.
    let o = varve_in(&["append", p(&store), "", "t"], Some(b""));
    assert_eq!(code(&o), 7, "{}", stderr(&o));
    assert!(stderr(&o).contains("invalid stream name"), "{}", stderr(&o));

    // A large payload goes to the sidecar.
    let big = big_payload();
    let o = varve_in(
        &["append", p(&store), "s", "big", "--expected", "1"],
        Some(&big),
    );
    assert_eq!(code(&o), 0, "{}", stderr(&o));

    let db = open_store(&store);
    let got = db
        .read_all(0, varve_engine::Direction::Forward, 100)
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].event_type, "created");
    assert_eq!(db.read_payload(&got[0]).unwrap(), b"{\"a\": 1}");
    assert_eq!(got[1].event_type, "paid");
    assert_eq!(got[1].metadata, b"m");
    assert_eq!(db.read_payload(&got[1]).unwrap(), [0xff, 0x00]);
    assert!(matches!(
        got[2].payload,
        varve_engine::EventPayload::Blob { len, .. } if len == big.len() as u64
    ));
    assert_eq!(db.read_payload(&got[2]).unwrap(), big);
    // close() checkpointed: nothing waits in the WAL.
    assert_eq!(db.stats().unwrap().checkpoint_lag_events, 0);
}

/// Flips one bit in the middle of the first occurrence of `needle` in `path`; returns the
/// offset of the flipped byte.
fn flip_first(path: &Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("marker on disk")
        + needle.len() / 2;
    bytes[at] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
    at
}

fn wal_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

fn check_json(dir: &Path) -> (i32, Value) {
    let o = varve(&["check", p(dir), "--json"]);
    (code(&o), json(&o))
}

#[test]
fn check_passes_a_clean_store_in_the_wal_and_in_events_mdb() {
    for checkpointed in [false, true] {
        let d = tempdir();
        build_store(d.path(), checkpointed);
        let (c, j) = check_json(d.path());
        assert_eq!(c, 0, "{j}");
        assert_eq!(j["ok"], true);
        assert_eq!(j["events"], 13);
        assert_eq!(j["streams"], 4);
        assert_eq!(j["blobs"], 2);
        assert_eq!(j["blob_bytes"], 100 * 1024 + 3000);
        assert_eq!(
            (&j["snapshots"], &j["snapshot_bytes"]),
            (&json!(1), &json!(2000))
        );
        assert_eq!(j["problems"].as_array().unwrap().len(), 0);
        let o = varve(&["check", p(d.path())]);
        assert_eq!(code(&o), 0);
        let text = stdout(&o);
        assert!(text.contains("13 events in 4 streams; 2 blobs"), "{text}");
        assert!(text.contains("OK: no problem found"), "{text}");
        assert!(text.contains("not read-only"), "{text}");
    }
}

#[test]
fn check_passes_a_store_with_deleted_and_truncated_streams() {
    for checkpointed in [false, true] {
        let d = tempdir();
        build_store(d.path(), false);
        {
            let db = open_store(d.path());
            // s0 has versions 0..=3, s1 0..=2; "blobs" holds both blobs.
            db.truncate_before("s0", 2).unwrap();
            db.delete_stream("s1", ExpectedVersion::Any, varve_engine::DeleteMode::Soft)
                .unwrap();
            db.delete_stream(
                "blobs",
                ExpectedVersion::Any,
                varve_engine::DeleteMode::Tombstone,
            )
            .unwrap();
            if checkpointed {
                db.checkpoint().unwrap();
            }
        }
        let (c, j) = check_json(d.path());
        assert_eq!(c, 0, "{j}");
        assert_eq!(j["events"], 10 - 2 - 3);
        assert_eq!(j["blobs"], 0, "the removed events' blobs are released");
        assert_eq!(j["problems"].as_array().unwrap().len(), 0, "{j}");
    }
}

#[test]
fn check_names_the_wal_segment_and_offset_of_a_flipped_byte_and_leaves_it() {
    let d = tempdir();
    build_store(d.path(), false);
    let seg = wal_segment(d.path());
    let at = flip_first(&seg, b"{\"n\": 3}");
    let damaged = std::fs::read(&seg).unwrap();
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    assert_eq!(j["ok"], false);
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    assert!(place.contains(seg.to_str().unwrap()), "{place}");
    // The offset named is that of the damaged record: at or before the flipped byte.
    let offset: usize = place
        .rsplit("at offset ")
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{place}"));
    assert!(offset <= at && at - offset < 256, "{offset} vs {at}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        damaged,
        "check changed the segment"
    );
    // The other commands stop with the corrupted exit code and point to `varve check`.
    let o = varve(&["dump", p(d.path())]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("varve check {}", p(d.path()))),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains(seg.to_str().unwrap()), "{}", stderr(&o));
}

#[test]
fn check_names_the_position_of_a_damaged_event_in_events_mdb_and_checks_the_rest() {
    let d = tempdir();
    build_store(d.path(), true);
    flip_first(&d.path().join("events.mdb"), b"{\"n\": 3}");
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    assert!(place.starts_with("position 3,"), "{place}");
    assert!(place.contains("events.mdb"), "{place}");
    // Every other event and both blobs were still checked.
    assert_eq!(j["events"], 12);
    assert_eq!(j["blobs"], 2);
    // dump prints up to the damage, then stops with exit 6.
    let o = varve(&["dump", p(d.path())]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().count(),
        0,
        "the first batch holds the damage"
    );
    let o = varve(&["dump", p(d.path()), "--limit", "3", "--json"]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = varve(&["stat", p(d.path()), "--scan"]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert!(stderr(&o).contains("varve check"), "{}", stderr(&o));
}

#[test]
fn check_names_a_damaged_blob_its_position_and_file() {
    let d = tempdir();
    let big = build_store(d.path(), true);
    let blobs = d.path().join("blobs").join("blobs.mdb");
    flip_first(&blobs, &big[50_000..50_040]);
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    assert!(place.contains("blob of position 10"), "{place}");
    assert!(place.contains(blobs.to_str().unwrap()), "{place}");
    let hash = varve_engine::BlobHash::of(&big).to_string();
    assert!(place.contains(&hash), "{place}");
    assert_eq!(j["events"], 13, "every event was still read");
    assert_eq!(j["blobs"], 1, "the other blob verified");
    // dump without --payloads does not read blobs; with it, it stops at the damage.
    assert_eq!(code(&varve(&["dump", p(d.path())])), 0);
    let o = varve(&["dump", p(d.path()), "--payloads"]);
    assert_eq!(code(&o), 6, "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 10, "the events before the blob");
}

#[test]
fn check_names_the_page_file_and_slot_offset_of_a_damaged_snapshot() {
    let d = tempdir();
    build_store(d.path(), true);
    let page = d.path().join("snapshots").join("page-00000000.vvp");
    let before = std::fs::metadata(&page).unwrap().len();
    flip_first(&page, &snapshot_bytes()[500..540]);
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    let file = format!("{} at byte ", page.display());
    assert!(
        place.starts_with("snapshot, ") && place.contains(&file),
        "{place}"
    );
    let offset: u64 = place.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(
        offset >= 64 && (offset - 64).is_multiple_of(40),
        "a slot entry: {offset}"
    );
    assert!(
        problems[0]["what"].as_str().unwrap().contains("checksum"),
        "{j}"
    );
    assert_eq!((&j["events"], &j["snapshots"]), (&json!(13), &json!(0)));
    // check changed nothing in the snapshots' page file (the damage is still there).
    assert_eq!(std::fs::metadata(&page).unwrap().len(), before);
    assert_eq!(check_json(d.path()).0, 1);

    // A snapshot of a version the stream no longer has (its stream truncated after it by
    // a store written outside the engine's checks) is a problem too: the version check.
    let d = tempdir();
    build_store(d.path(), true);
    {
        let store = varve_slotted::Store::open(
            d.path().join("snapshots"),
            varve_slotted::Options::default(),
        )
        .unwrap();
        let mut v = store.get(0).unwrap().unwrap();
        v[1..9].copy_from_slice(&99u64.to_le_bytes());
        store.put(0, &v).unwrap();
        store.flush().unwrap();
    }
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    assert_eq!(
        j["problems"][0]["what"],
        "snapshot at version 99 but the stream's last version is 3"
    );
    assert_eq!(j["problems"][0]["where"], "snapshot of stream \"s0\"");
}

#[test]
fn check_names_the_tracker_entry_of_a_damaged_snapshot_pointer() {
    let d = tempdir();
    build_store(d.path(), true);
    // Stream s0 is the store's first stream (id 0): its snapshot's tracker entry is the
    // first after the 64-byte header; byte 9 is inside its checksum.
    let tracker = d.path().join("snapshots").join("tracker.vvt");
    let mut bytes = std::fs::read(&tracker).unwrap();
    bytes[64 + 9] ^= 0x01;
    std::fs::write(&tracker, &bytes).unwrap();
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    assert!(
        place.contains(&format!("{} at byte 64", tracker.display())),
        "{place}"
    );
    assert_eq!(j["events"], 13, "every event was still read");
}

#[test]
fn check_names_a_wal_segment_that_is_not_a_segment() {
    let d = tempdir();
    build_store(d.path(), false);
    let seg = wal_segment(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[..4].copy_from_slice(b"JUNK");
    std::fs::write(&seg, &bytes).unwrap();
    let (c, j) = check_json(d.path());
    assert_eq!(c, 1, "{j}");
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{j}");
    let place = problems[0]["where"].as_str().unwrap();
    assert!(place.contains(seg.to_str().unwrap()), "{place}");
    let what = problems[0]["what"].as_str().unwrap();
    assert!(what.contains("magic"), "{what}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "check changed the segment"
    );
}

#[test]
fn a_newer_format_version_is_exit_5_for_every_command() {
    let d = tempdir();
    build_store(d.path(), true);
    {
        let mut opts = heed::EnvOpenOptions::new();
        opts.max_dbs(8);
        // SAFETY: NO_SUB_DIR names the file; the store is closed, nothing else maps it.
        unsafe { opts.flags(heed::EnvFlags::NO_SUB_DIR) };
        // SAFETY: no other process or handle has events.mdb open.
        let env = unsafe { opts.open(d.path().join("events.mdb")) }.unwrap();
        let wtxn = env.write_txn().unwrap();
        let meta = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> heed::Result<_> {
                let db = dbo.create_database::<heed::types::Bytes, heed::types::Bytes>(
                    wtxn,
                    Some("meta"),
                )?;
                Ok(heed::CommitOrAbort::<_, ()>::Commit(db))
            })
            .unwrap()
            .commit()
            .unwrap();
        let mut wtxn = env.write_txn().unwrap();
        meta.put(&mut wtxn, b"format", &3u32.to_le_bytes()).unwrap();
        wtxn.commit().unwrap();
    }
    for cmd in COMMANDS {
        let o = varve(&[cmd, p(d.path())]);
        assert_eq!(code(&o), 5, "{cmd}: {}", stderr(&o));
        assert!(stderr(&o).contains("format version 3"), "{}", stderr(&o));
        assert!(stderr(&o).contains("newer Varve"), "{}", stderr(&o));
    }
}

/// Waits up to 30 s for `child` to exit; kills it and fails the test otherwise.
fn wait_exit(mut child: std::process::Child) -> Output {
    for _ in 0..3000 {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    panic!("tail did not exit: {:?}", child.wait_with_output().unwrap());
}

#[test]
fn tail_follows_new_events_with_filters_and_waits_out_a_lock() {
    let d = tempdir();
    {
        let db = open_store(d.path());
        db.append("a", ExpectedVersion::Any, &[EventData::new("x.0", b"old")])
            .unwrap();
        db.close().unwrap();
    }
    let held = open_store(d.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_varve"))
        .args([
            "tail",
            p(d.path()),
            "--from",
            "1",
            "--stream",
            "a",
            "--type-prefix",
            "x.",
            "--limit",
            "2",
            "--json",
            "--interval-ms",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // While the test holds the store, tail says it waits.
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut err, &mut line).unwrap();
    assert!(
        line.contains("is locked by another process; tail waits"),
        "{line}"
    );
    drop(held);
    for (stream, ty, payload) in [
        ("b", "x.1", "not this stream"),
        ("a", "y.1", "not this type"),
        ("a", "x.2", "first"),
        ("a", "x.3", "second"),
        ("a", "x.4", "after the limit"),
    ] {
        let o = varve_in(
            &["--wait-lock", "20", "append", p(d.path()), stream, ty],
            Some(payload.as_bytes()),
        );
        assert_eq!(code(&o), 0, "{}", stderr(&o));
    }
    let o = wait_exit(child);
    assert!(o.status.success(), "{o:?}");
    let got: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let payloads: Vec<&str> = got
        .iter()
        .map(|e| e["payload"]["utf8"].as_str().unwrap())
        .collect();
    assert_eq!(payloads, ["first", "second"]);
    assert_eq!(got[0]["position"], 3);
    // Polling opened and closed the store many times: still one WAL segment.
    let segments = std::fs::read_dir(d.path().join("wal"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "wal")
        })
        .count();
    assert_eq!(segments, 1);
}

#[test]
fn bench_probes_the_disk_in_a_scratch_store_and_removes_it() {
    let d = tempdir();
    std::fs::write(d.path().join("keep.txt"), b"mine").unwrap();
    let o = varve(&[
        "bench",
        p(d.path()),
        "--seconds",
        "0.3",
        "--payload-size",
        "100",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let j = json(&o);
    assert!(j["appends"].as_u64().unwrap() >= 1, "{j}");
    assert_eq!(j["payload_bytes"], 100);
    let p50 = j["append_p50_us"].as_f64().unwrap();
    let p99 = j["append_p99_us"].as_f64().unwrap();
    let max = j["append_max_us"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{j}");
    assert!(j["appends_per_sec"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["seq_reads_per_sec"].as_f64().unwrap() > 0.0, "{j}");
    assert!(j["random_reads_per_sec"].as_f64().unwrap() > 0.0, "{j}");
    // Only the user's own file is left.
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("keep.txt")]);
    assert_eq!(std::fs::read(d.path().join("keep.txt")).unwrap(), b"mine");

    let o = varve(&["bench", p(&d.path().join("missing"))]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
}

#[test]
fn check_notes_what_recovery_did_and_nothing_after_a_clean_close() {
    for checkpointed in [false, true] {
        let d = tempdir();
        build_store(d.path(), checkpointed);
        let (c, j) = check_json(d.path());
        assert_eq!(c, 0, "{j}");
        assert_eq!(j["notes"], serde_json::json!([]), "closed cleanly: {j}");
    }
    // A crash in the middle of the last append: its WAL record is cut short (zeros from
    // its metadata on, so no close marker either), after its blob was stored.
    let d = tempdir();
    build_store(d.path(), false);
    let seg = wal_segment(d.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(2)
        .rposition(|w| w == b"m1")
        .expect("last event's metadata in the WAL");
    bytes[at..].fill(0);
    std::fs::write(&seg, bytes).unwrap();
    let (c, j) = check_json(d.path());
    assert_eq!(c, 0, "recovery's cut is not a problem: {j}");
    assert_eq!(j["events"], 12, "the cut event is gone: {j}");
    let notes: Vec<&str> = j["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(notes[0].starts_with("recovery cut "), "{notes:?}");
    assert!(notes[1].contains("not closed cleanly"), "{notes:?}");
    assert!(
        notes[2].starts_with("recovery released 1 orphan blob references"),
        "{notes:?}"
    );
}

/// More events than `check` reads in one batch (4096), in one stream: every event and the
/// whole stream index are read, with no problem found.
#[test]
fn check_reads_every_batch_of_a_large_store_and_stream_index() {
    let d = tempdir();
    let db = open_store(d.path());
    let payloads: Vec<String> = (0..5000).map(|i| format!("{{\"n\": {i}}}")).collect();
    for chunk in payloads.chunks(1000) {
        let events: Vec<EventData<'_>> = chunk
            .iter()
            .map(|p| EventData::new("e", p.as_bytes()))
            .collect();
        db.append("one", ExpectedVersion::Any, &events).unwrap();
    }
    db.close().unwrap();
    let (c, j) = check_json(d.path());
    assert_eq!(c, 0, "{j}");
    assert_eq!(j["events"], 5000, "{j}");
    assert_eq!(j["streams"], 1, "{j}");
    assert_eq!(j["problems"].as_array().unwrap().len(), 0, "{j}");
}
