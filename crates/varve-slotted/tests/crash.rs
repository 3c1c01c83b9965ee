//! Crash consistency: a panic in the middle of a write or flush, and a child process
//! SIGKILLed under write load. After either, the store opens without repair and every id
//! reads its last flushed value or a newer one, never garbage.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use varve_slotted::{Error, Options, Store};

const CHILD_ENV: &str = "VARVE_SLOTTED_CRASH_CHILD";
const ROUND_ENV: &str = "VARVE_SLOTTED_CRASH_ROUND";
const IDS: u64 = 160;
const FLUSH_EVERY: u64 = 16;
/// A child stops writing (and waits to be killed) after this many ops.
const MAX_CHILD_OPS: u64 = 100_000;

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Put(u64, Vec<u8>),
    Delete(u64),
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// The value op `i` of round `round` writes: a self-describing header, then a body that is
/// JSON-like text or noise, 40..3000 bytes in all.
fn value(round: u64, i: u64, id: u64) -> Vec<u8> {
    let h = mix(round << 40 ^ i);
    let len = 40 + (h % 2960) as usize;
    let mut v = Vec::with_capacity(len);
    v.extend_from_slice(b"V1");
    v.extend_from_slice(&round.to_le_bytes());
    v.extend_from_slice(&i.to_le_bytes());
    v.extend_from_slice(&id.to_le_bytes());
    let mut x = h | 1;
    let mut n = 0u64;
    while v.len() < len {
        if h.is_multiple_of(3) {
            x = mix(x);
            v.push(x as u8);
        } else {
            v.extend_from_slice(format!("{{\"k{}\":\"v{}\"}}", n % 5, n ^ h).as_bytes());
            n += 1;
        }
    }
    v.truncate(len);
    v
}

/// The id op `i` of round `round` touches, and whether it deletes it.
fn target(round: u64, i: u64) -> (u64, bool) {
    let h = mix(round << 32 ^ i ^ 0xabcdef);
    ((h >> 8) % IDS, h.is_multiple_of(8))
}

fn op(round: u64, i: u64) -> Op {
    match target(round, i) {
        (id, true) => Op::Delete(id),
        (id, false) => Op::Put(id, value(round, i, id)),
    }
}

fn opts() -> Options {
    Options::default()
        .min_page_size(64 * 1024)
        .compact_threshold(0.1)
        .compact_step_bytes(8 * 1024)
}

fn apply(model: &mut HashMap<u64, Vec<u8>>, op: &Op) {
    match op {
        Op::Put(id, v) => {
            model.insert(*id, v.clone());
        }
        Op::Delete(id) => {
            model.remove(id);
        }
    }
}

fn run_op(store: &Store, op: &Op) {
    match op {
        Op::Put(id, v) => {
            store.put(*id, v).unwrap();
        }
        Op::Delete(id) => {
            store.delete(*id).unwrap();
        }
    }
}

/// Checks every id: its value is the one `flushed` holds, or one written to it by an op
/// after the flush (`later(id)` lists those). Returns the state read.
fn check(
    store: &Store,
    flushed: &HashMap<u64, Vec<u8>>,
    later: impl Fn(u64) -> Vec<Op>,
) -> HashMap<u64, Vec<u8>> {
    assert_eq!(store.stats().unwrap().corrupt_entries, 0);
    let mut seen = HashMap::new();
    for id in 0..IDS {
        let got = store.get(id).unwrap();
        let ok = got.as_ref() == flushed.get(&id)
            || later(id).iter().any(|op| match op {
                Op::Put(_, v) => got.as_ref() == Some(v),
                Op::Delete(_) => got.is_none(),
            });
        assert!(
            ok,
            "id {id}: value is neither the flushed one nor a later one"
        );
        if let Some(v) = got {
            seen.insert(id, v);
        }
    }
    let listed: HashMap<u64, Vec<u8>> = store
        .iter()
        .take(IDS as usize + 1)
        .map(Result::unwrap)
        .collect();
    assert_eq!(listed, seen);
    seen
}

fn crash_rounds() -> u64 {
    u64::from(varve_testkit::crash::rounds(3))
}

fn child(dir: &Path, round: u64) -> ! {
    let store = Store::open_or_create(dir.join("store"), opts()).unwrap();
    let progress = dir.join("progress");
    for i in 0.. {
        run_op(&store, &op(round, i));
        if (i + 1) % FLUSH_EVERY == 0 {
            store.flush().unwrap();
            let tmp = dir.join("progress.tmp");
            std::fs::write(&tmp, (i + 1).to_string()).unwrap();
            std::fs::rename(&tmp, &progress).unwrap();
        }
        if i >= MAX_CHILD_OPS {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    unreachable!()
}

#[test]
fn sigkilled_writer_leaves_flushed_values_or_newer() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let round = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
        child(Path::new(&dir), round);
    }
    let dir = scratch();
    let mut state: HashMap<u64, Vec<u8>> = HashMap::new();
    let mut total_flushed = 0;
    for round in 0..crash_rounds() {
        let _ = std::fs::remove_file(dir.path().join("progress"));
        let mut c = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkilled_writer_leaves_flushed_values_or_newer",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .env(ROUND_ENV, round.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a varying moment: sometimes before the first flush, mostly after a few.
        let wait = 40 + mix(round) % 260;
        std::thread::sleep(Duration::from_millis(wait));
        c.kill().unwrap();
        c.wait().unwrap();
        let flushed_ops: u64 = std::fs::read_to_string(dir.path().join("progress"))
            .map(|s| s.parse().unwrap())
            .unwrap_or(0);
        total_flushed += flushed_ops;
        let mut flushed = state.clone();
        for i in 0..flushed_ops {
            apply(&mut flushed, &op(round, i));
        }
        // Any op after the last flush the child reported may have happened.
        let later = |id| {
            (flushed_ops..=MAX_CHILD_OPS)
                .filter(|&i| target(round, i).0 == id)
                .map(|i| op(round, i))
                .collect()
        };
        let store = match Store::open(dir.path().join("store"), opts()) {
            // Killed before it created the store (a slow start on a loaded machine):
            // nothing was written, so there is nothing to check.
            Err(Error::NotFound(_)) if round == 0 => continue,
            r => r.unwrap(),
        };
        state = check(&store, &flushed, later);
        drop(store);
    }
    assert!(total_flushed > 0, "the children never got to flush");
}

/// Runs `ops` against a fresh store whose hook panics at the `nth` call of `point`, then
/// reopens and checks the flushed-or-newer rule.
fn panic_at(point: &'static str, nth: u64) {
    let dir = scratch();
    let calls = Arc::new(AtomicU64::new(0));
    let hook_calls = Arc::clone(&calls);
    let o = opts().crash_hook(Arc::new(move |p| {
        if p == point && hook_calls.fetch_add(1, Ordering::SeqCst) + 1 == nth {
            panic!("injected panic at {p}");
        }
    }));
    let store = Store::create(dir.path(), o).unwrap();
    let mut flushed = HashMap::new();
    let mut model = HashMap::new();
    let mut since_flush = Vec::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        for i in 0..400 {
            let op = op(7, i);
            since_flush.push(op.clone());
            run_op(&store, &op);
            apply(&mut model, &op);
            if (i + 1) % FLUSH_EVERY == 0 {
                store.flush().unwrap();
                flushed = model.clone();
                since_flush.clear();
            }
        }
    }));
    assert!(result.is_err(), "the hook at {point} #{nth} never fired");
    assert!(
        store.put(1, b"after").is_err(),
        "a panicked writer must refuse writes"
    );
    drop(store);
    let store = reopen(dir.path());
    check(&store, &flushed, |id| {
        since_flush
            .iter()
            .filter(|op| matches!(op, Op::Put(i, _) | Op::Delete(i) if *i == id))
            .cloned()
            .collect()
    });
    // The reopened store works normally.
    store.put(1, b"again").unwrap();
    store.flush().unwrap();
    assert_eq!(store.get(1).unwrap().as_deref(), Some(&b"again"[..]));
}

#[test]
fn panic_in_the_middle_of_a_value_write() {
    for nth in [1, 5, 37, 150, 333] {
        panic_at("value-half-written", nth);
    }
}

#[test]
fn panic_between_data_and_pointer_flush() {
    for nth in [1, 3, 11] {
        panic_at("data-flushed", nth);
    }
}

#[test]
fn panic_between_pointer_flush_and_frees() {
    for nth in [1, 4, 13] {
        panic_at("tracker-flushed", nth);
    }
}

/// A scratch directory on tmpfs when there is one (fsync is free there, so the suite stays
/// fast enough for mutation testing; mapping and page-cache behaviour are the same).
/// Reopens a store this process has just closed. The test that SIGKILLs children runs in
/// this same binary: a child forked while our lock file was open holds a copy of its
/// descriptor (and so the lock) until it execs, which closes it (`O_CLOEXEC`). On a loaded
/// machine that window can straddle our close and reopen, so `Locked` is retried briefly;
/// any other error, or a lock that stays held, still fails the test.
fn reopen(dir: &Path) -> Store {
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match Store::open(dir, opts()) {
            Err(varve_slotted::Error::Locked(_)) if std::time::Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
}

fn scratch() -> tempfile::TempDir {
    varve_testkit::dirs::in_memory()
}

/// A thread that panics while it holds the store's lock (here inside a flush) poisons the
/// store: every later write is `Poisoned`, and the error keeps the cause as its source.
#[test]
fn a_panic_inside_a_flush_poisons_the_store_with_its_cause() {
    let dir = scratch();
    let store = Store::create(
        dir.path(),
        opts().crash_hook(Arc::new(|p| {
            if p == "tracker-flushed" {
                panic!("injected panic at {p}");
            }
        })),
    )
    .unwrap();
    store.put(1, b"one").unwrap();
    assert!(catch_unwind(AssertUnwindSafe(|| store.flush())).is_err());
    for r in [store.put(2, b"two").map(|_| ()), store.flush()] {
        match r {
            Err(e @ Error::Poisoned(_)) => {
                let cause = std::error::Error::source(&e).unwrap().to_string();
                assert!(cause.contains("panicked"), "{cause}");
            }
            other => panic!("{other:?}"),
        }
    }
}
