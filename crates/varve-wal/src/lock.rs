//! The directory's `LOCK` file, held with an advisory `flock` for the WAL's lifetime.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, Result};

/// Name of the lock file inside the WAL directory.
pub(crate) const LOCK_FILE: &str = "LOCK";

/// Takes the exclusive lock on `dir/LOCK`, or fails with [`Error::Locked`] if another open
/// file description (another process, or another `Wal` in this one) holds it.
pub(crate) fn acquire(dir: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked(dir.to_path_buf())),
        Err(e) => Err(Error::Io(e.into())),
    }
}
