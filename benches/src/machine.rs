//! The disk's own limits, measured in the same run as the figures compared with them.
//!
//! The WAL cannot beat the device: a durable append costs at least one `fdatasync`, and a
//! stream of durable appends at most moves the device's sequential write+sync bandwidth.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::measure::{Samples, run_for};

/// Latency of appending `record` bytes to a file and `fdatasync`ing it, measured for
/// `budget`. The file is preallocated so that, as in a WAL, the sync does not also persist
/// a size change; samples are per append+sync.
pub fn fdatasync_append_latency(
    dir: &Path,
    record: usize,
    budget: Duration,
) -> std::io::Result<Samples> {
    let path = dir.join("fdatasync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let prealloc = 256 << 20;
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, prealloc)?;
    f.sync_all()?;
    let buf = vec![0xA5u8; record];
    let mut written = 0u64;
    let mut err = None;
    let (samples, _) = run_for(budget, 50, || {
        if err.is_some() {
            return;
        }
        if written + record as u64 > prealloc {
            // Wrap around: rewriting preallocated blocks keeps the same cost shape.
            use std::io::Seek as _;
            if let Err(e) = f.seek(std::io::SeekFrom::Start(0)) {
                err = Some(e);
            }
            written = 0;
        }
        if let Err(e) = f.write_all(&buf).and_then(|()| f.sync_data()) {
            err = Some(e);
        }
        written += record as u64;
    });
    drop(f);
    std::fs::remove_file(&path)?;
    match err {
        Some(e) => Err(e),
        None => Ok(samples),
    }
}

/// Sequential write bandwidth in MB/s (10^6 bytes) when writing `total` bytes in `chunk`
/// sized writes and `fdatasync`ing after each chunk.
pub fn write_sync_bandwidth(dir: &Path, total: u64, chunk: usize) -> std::io::Result<f64> {
    let path = dir.join("bandwidth-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)?;
    let buf = vec![0x5Au8; chunk];
    let start = Instant::now();
    let mut done = 0u64;
    while done < total {
        f.write_all(&buf)?;
        f.sync_data()?;
        done += chunk as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(done as f64 / secs / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_measure_something_and_clean_up() {
        let d = tempfile::tempdir().unwrap();
        let mut s = fdatasync_append_latency(d.path(), 4096, Duration::from_millis(20)).unwrap();
        assert!(s.len() >= 50);
        assert!(s.percentile_us(50.0) > 0.0);
        let bw = write_sync_bandwidth(d.path(), 4 << 20, 1 << 20).unwrap();
        assert!(bw > 0.0);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
