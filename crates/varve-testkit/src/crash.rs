//! The kill -9 harness. A crash test is two tests in one binary: a child test that does
//! work and appends one line per acknowledged operation to an acknowledgements file
//! (flushed before it goes on), and a parent test that runs the child as a process
//! ([`kill_child`]), SIGKILLs it at a random moment, reopens the store and checks that
//! every acknowledged operation survived.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a child may take to write its first acknowledgement.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// Rounds a crash test runs: `VARVE_CRASH_ROUNDS` when set (CI and soak runs), else
/// `default` (kept small so that a crate's tests stay fast under mutation testing).
#[must_use]
pub fn rounds(default: u32) -> u32 {
    std::env::var("VARVE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs the test `child_test` of this test binary as a child process with `envs`, waits
/// until it has written something to `acks` (its first acknowledgement, or a ready line),
/// lets it run for `delay` more, kills it with SIGKILL and returns the complete lines of
/// `acks` (a line the kill cut short was not acknowledged). `acks` is removed first.
///
/// # Panics
/// If the child exits on its own (before it is ready or before the kill), or is not ready
/// within 60 s.
pub fn kill_child(
    child_test: &str,
    envs: &[(&str, &OsStr)],
    acks: &Path,
    delay: Duration,
) -> Vec<String> {
    let _ = std::fs::remove_file(acks);
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", child_test, "--nocapture", "--test-threads=1"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let started = Instant::now();
    while std::fs::metadata(acks).map_or(true, |m| m.len() == 0) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("child exited early: {status}");
        }
        assert!(started.elapsed() < READY_WITHIN, "child never got ready");
        std::thread::sleep(Duration::from_micros(500));
    }
    std::thread::sleep(delay);
    if let Ok(Some(status)) = child.try_wait() {
        panic!("child exited early: {status}");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(acks).unwrap_or_default();
    complete_lines(&text)
}

/// The lines of `text` that end with a newline (the last one may have been cut).
#[must_use]
pub fn complete_lines(text: &str) -> Vec<String> {
    let complete = text.rfind('\n').map_or("", |i| &text[..=i]);
    complete.lines().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_lines_ended_by_a_newline_count() {
        assert_eq!(complete_lines("a\nb\nc"), ["a", "b"]);
        assert_eq!(complete_lines("a\n"), ["a"]);
        assert!(complete_lines("partial").is_empty());
        assert!(complete_lines("").is_empty());
    }

    #[test]
    fn rounds_default_without_the_variable() {
        if std::env::var_os("VARVE_CRASH_ROUNDS").is_none() {
            assert_eq!(rounds(7), 7);
        }
    }

    const CHILD_ACKS: &str = "VARVE_TESTKIT_CHILD_ACKS";

    /// The child of `a_killed_child_leaves_its_complete_acknowledgements`: acknowledges
    /// numbered lines until it is killed.
    #[test]
    fn testkit_child() {
        use std::io::Write as _;
        let Some(acks) = std::env::var_os(CHILD_ACKS) else {
            return;
        };
        let mut f = std::fs::File::create(acks).unwrap();
        for i in 0u64.. {
            writeln!(f, "{i}").unwrap();
            f.flush().unwrap();
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    #[test]
    fn a_killed_child_leaves_its_complete_acknowledgements() {
        if std::env::var_os(CHILD_ACKS).is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let acks = dir.path().join("acks");
        let lines = kill_child(
            "crash::tests::testkit_child",
            &[(CHILD_ACKS, acks.as_os_str())],
            &acks,
            Duration::from_millis(20),
        );
        assert!(lines.len() >= 2, "{lines:?}");
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l, &i.to_string());
        }
    }
}
