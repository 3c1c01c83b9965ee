//! All of the crate's `unsafe`: the two system calls the standard library and rustix do
//! not wrap. Every block states why it is sound.

use std::fs::File;
use std::io;

/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` (rustix has no binding for it).
#[cfg(target_os = "linux")]
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    // SAFETY: the descriptor is open for the borrow's duration; the call touches no memory
    // of ours.
    let rc = unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Elsewhere the sync does all the work.
#[cfg(not(target_os = "linux"))]
pub(crate) fn start_writeback(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

/// CPU time the thread of `h` has used so far (tests: an idle flusher must sleep).
#[cfg(test)]
pub(crate) fn thread_cpu_time<T>(h: &std::thread::JoinHandle<T>) -> std::time::Duration {
    use std::os::unix::thread::JoinHandleExt as _;
    let mut clock: libc::clockid_t = 0;
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the caller holds the handle, so the thread is not joined (its pthread_t is
    // valid, even if it has exited); both out-pointers point to live locals.
    let ok = unsafe {
        libc::pthread_getcpuclockid(h.as_pthread_t(), &mut clock) == 0
            && libc::clock_gettime(clock, &mut ts) == 0
    };
    assert!(ok, "cannot read the thread's CPU clock");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
