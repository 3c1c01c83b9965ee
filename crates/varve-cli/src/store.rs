//! Finding and opening a store. The engine has one way in, [`Varve::open`]: it takes the
//! store's exclusive lock and runs crash recovery (which may zero a torn WAL tail and
//! release orphan blob references), and dropping the handle writes the WAL's close marker.
//! No command of this tool is therefore read-only; the inspecting ones at least never
//! checkpoint (see [`inspect_options`]).

use std::path::Path;
use std::time::{Duration, Instant};

use varve_engine::{Error, Options, Varve};

use crate::error::{CliError, Kind};

/// How long to sleep between two attempts on a locked store.
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Checks that `dir` exists and holds a store (`events.mdb` or `wal/`), so that no command
/// creates a store by accident: the engine's open creates whatever is missing.
pub fn preflight(dir: &Path) -> Result<(), CliError> {
    let shown = dir.display();
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                CliError::new(Kind::NoStore, format!("{shown}: no such directory")).hint(
                    "check the path; `varve append --create DIR STREAM TYPE` creates a new store",
                ),
            );
        }
        Err(e) => {
            return Err(CliError::new(Kind::Other, format!("{shown}: {e}")));
        }
        Ok(m) if !m.is_dir() => {
            return Err(CliError::new(
                Kind::NoStore,
                format!("{shown} is not a directory; a Varve store is a directory"),
            ));
        }
        Ok(_) => {}
    }
    if dir.join("events.mdb").is_file() || dir.join("wal").is_dir() {
        Ok(())
    } else {
        Err(CliError::new(
            Kind::NoStore,
            format!("{shown} holds no Varve store (no events.mdb, no wal/)"),
        )
        .hint("check the path; `varve append --create DIR STREAM TYPE` creates a new store"))
    }
}

/// Options for commands that only look: no checkpoint runs while the tool has the store
/// open (the checkpoint lag it reports is the one it found), and the replayed tail may be
/// as large as the writer left it.
pub fn inspect_options() -> Options {
    Options::default()
        .checkpoint_interval(Duration::from_secs(24 * 3600))
        .checkpoint_bytes(1 << 50)
        .max_tail_bytes(1 << 50)
}

/// Opens the store in `dir` with `opts`, retrying for up to `wait_lock` while another
/// process holds it.
///
/// # Errors
/// The engine's error for the last attempt.
pub fn open_engine(dir: &Path, opts: Options, wait_lock: Duration) -> Result<Varve, Error> {
    let deadline = Instant::now() + wait_lock;
    loop {
        match Varve::open(dir, opts.clone()) {
            Err(Error::Locked(_)) if Instant::now() < deadline => {
                std::thread::sleep(LOCK_RETRY);
            }
            other => return other,
        }
    }
}

/// [`open_engine`], its error made the user's.
pub fn open(dir: &Path, opts: Options, wait_lock: Duration) -> Result<Varve, CliError> {
    open_engine(dir, opts, wait_lock).map_err(|e| CliError::engine(&e, dir))
}

/// [`preflight`], then [`open`] with [`inspect_options`].
pub fn open_existing(dir: &Path, wait_lock: Duration) -> Result<Varve, CliError> {
    preflight(dir)?;
    open(dir, inspect_options(), wait_lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preflight_accepts_a_directory_with_a_wal_or_an_events_mdb_only() {
        let d = tempfile::tempdir().unwrap();
        let err = preflight(d.path()).unwrap_err();
        assert_eq!(err.kind, Kind::NoStore, "an empty directory");
        std::fs::create_dir(d.path().join("wal")).unwrap();
        preflight(d.path()).unwrap();
        let e = tempfile::tempdir().unwrap();
        std::fs::write(e.path().join("events.mdb"), b"").unwrap();
        preflight(e.path()).unwrap();
    }

    #[test]
    fn preflight_refuses_a_file_and_tells_a_missing_path_from_an_unreadable_one() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("events.mdb");
        std::fs::write(&file, b"").unwrap();
        let err = preflight(&file).unwrap_err();
        assert_eq!(err.kind, Kind::NoStore);
        assert!(err.message.contains("is not a directory"), "{err}");
        let err = preflight(&d.path().join("nope")).unwrap_err();
        assert_eq!(err.kind, Kind::NoStore);
        assert!(err.message.contains("no such directory"), "{err}");
        // A path through a file is not "missing": the error says what the OS said.
        let err = preflight(&file.join("x")).unwrap_err();
        assert_eq!(err.kind, Kind::Other, "{err}");
        assert!(!err.message.contains("no such directory"), "{err}");
    }

    /// Parses `name: N` (a number, or a Duration's `Ns`) out of a Debug string.
    fn field(debug: &str, name: &str) -> u64 {
        let rest = &debug[debug.find(&format!("{name}: ")).expect(name) + name.len() + 2..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap()
    }

    /// The inspecting commands never checkpoint while they hold the store (`tail` may
    /// follow it for hours): no interval shorter than a day, no byte or tail threshold a
    /// store could reach.
    #[test]
    fn inspect_options_never_checkpoint_in_a_session() {
        let debug = format!("{:?}", inspect_options());
        assert!(field(&debug, "checkpoint_interval") >= 24 * 3600, "{debug}");
        assert!(field(&debug, "checkpoint_bytes") >= 1 << 50, "{debug}");
        assert!(field(&debug, "max_tail_bytes") >= 1 << 50, "{debug}");
    }
}
