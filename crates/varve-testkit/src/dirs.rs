//! Temporary directories for tests: on the real disk where durability is tested, in memory
//! where only speed matters.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use tempfile::TempDir;

/// `statfs` magic of tmpfs.
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether `path` lies on tmpfs (memory: a test of what survives a power loss proves
/// nothing there, though a process kill still does).
///
/// # Panics
/// If `statfs` fails (for example, `path` does not exist).
#[must_use]
pub fn is_tmpfs(path: &Path) -> bool {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a NUL-terminated path; `st` is plain data statfs fills in.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
    assert_eq!(rc, 0, "statfs {}", path.display());
    #[allow(clippy::unnecessary_cast)] // f_type's width differs between targets
    let kind = st.f_type as i64;
    kind == TMPFS_MAGIC
}

/// A fresh temporary directory under `base` (for example `env!("CARGO_TARGET_TMPDIR")`,
/// the target directory's scratch space on the disk the build uses), checked not to be
/// on tmpfs.
///
/// # Panics
/// If `base` is on tmpfs or cannot be made.
#[must_use]
pub fn on_disk(base: &Path) -> TempDir {
    std::fs::create_dir_all(base).unwrap();
    assert!(
        !is_tmpfs(base),
        "{} is on tmpfs: durability tests need the real disk",
        base.display()
    );
    tempfile::tempdir_in(base).unwrap()
}

/// A fresh temporary directory on tmpfs (`/dev/shm`) when the machine has one, else the
/// default temporary directory: for tests that check behaviour, not durability, and
/// should not wait for the disk's syncs.
#[must_use]
pub fn in_memory() -> TempDir {
    tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_told_from_the_disk() {
        if Path::new("/dev/shm").exists() {
            assert!(is_tmpfs(Path::new("/dev/shm")));
            assert!(is_tmpfs(in_memory().path()));
        }
        let here = std::env::current_dir().unwrap();
        if !is_tmpfs(&here) {
            let d = on_disk(&here.join("target-testkit-tmp"));
            assert!(!is_tmpfs(d.path()));
            drop(d);
            let _ = std::fs::remove_dir(here.join("target-testkit-tmp"));
        }
        if Path::new("/dev/shm").exists() {
            let refused = std::panic::catch_unwind(|| on_disk(Path::new("/dev/shm")));
            assert!(refused.is_err(), "tmpfs is refused");
        }
    }
}
