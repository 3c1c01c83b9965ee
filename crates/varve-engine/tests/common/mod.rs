//! Helpers shared by the engine's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use varve_engine::{Direction, EventData, ExpectedVersion, Options, RecordedEvent, Varve};

/// Options that keep tests quick: frequent checkpoints.
pub fn opts() -> Options {
    Options::default()
        .checkpoint_interval(Duration::from_millis(20))
        .checkpoint_bytes(64 << 10)
        .max_tail_bytes(8 << 20)
        .wal_segment_size(8 << 20)
}

/// Opens `dir` with [`opts`].
pub fn open(dir: &Path) -> Varve {
    Varve::open(dir, opts()).unwrap()
}

/// A temporary directory on the real disk (under the target dir), checked not to be tmpfs.
pub fn tempdir() -> tempfile::TempDir {
    varve_testkit::dirs::on_disk(Path::new(env!("CARGO_TARGET_TMPDIR")))
}

/// An event of type `test-event`.
pub fn ev(payload: &[u8]) -> EventData<'_> {
    EventData::new("test-event", payload)
}

/// Every visible event, in order.
pub fn all(db: &Varve) -> Vec<RecordedEvent> {
    db.read_all(0, Direction::Forward, usize::MAX).unwrap()
}

/// Appends one event with `Any`; returns its position.
pub fn append_one(db: &Varve, stream: &str, payload: &[u8]) -> u64 {
    db.append(stream, ExpectedVersion::Any, &[ev(payload)])
        .unwrap()
        .first_position
}

/// Runs a test body on its own thread and fails if it takes longer than 60 s: a bug that
/// makes a subscription spin or sleep for good then fails the test instead of hanging
/// the test binary (the stuck thread is left behind; the process ends with the binary).
pub fn bounded(body: fn()) {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(()) => h.join().unwrap(),
        // The body panicked: join re-raises its panic here.
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("the test ran over 60 s"),
    }
}
