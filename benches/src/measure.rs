//! Timing helpers shared by the bench binaries.

use std::time::{Duration, Instant};

/// Latency samples of one workload, in nanoseconds.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    ns: Vec<u64>,
}

impl Samples {
    /// An empty set with room for `n` samples.
    pub fn with_capacity(n: usize) -> Self {
        Samples {
            ns: Vec::with_capacity(n),
        }
    }

    /// Adds one sample.
    pub fn push(&mut self, d: Duration) {
        self.ns
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Adds every sample of `other`.
    pub fn extend(&mut self, other: Samples) {
        self.ns.extend(other.ns);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ns.len()
    }

    /// True if there are no samples.
    pub fn is_empty(&self) -> bool {
        self.ns.is_empty()
    }

    /// The `p`-th percentile (0.0..=100.0) in microseconds, by nearest rank;
    /// 0.0 for an empty set.
    pub fn percentile_us(&mut self, p: f64) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        self.ns.sort_unstable();
        let rank = ((p / 100.0) * self.ns.len() as f64).ceil() as usize;
        let idx = rank.clamp(1, self.ns.len()) - 1;
        self.ns[idx] as f64 / 1_000.0
    }

    /// Mean in microseconds; 0.0 for an empty set.
    pub fn mean_us(&self) -> f64 {
        if self.ns.is_empty() {
            return 0.0;
        }
        self.ns.iter().map(|&n| n as f64).sum::<f64>() / self.ns.len() as f64 / 1_000.0
    }
}

/// Runs `op` repeatedly for at least `budget` (and at least `min_iters` times), timing each
/// call; returns the per-call samples and the achieved calls per second.
pub fn run_for(budget: Duration, min_iters: usize, mut op: impl FnMut()) -> (Samples, f64) {
    let mut samples = Samples::with_capacity(min_iters.max(1024));
    let start = Instant::now();
    while samples.len() < min_iters || start.elapsed() < budget {
        let t = Instant::now();
        op();
        samples.push(t.elapsed());
    }
    let per_sec = samples.len() as f64 / start.elapsed().as_secs_f64();
    (samples, per_sec)
}

/// Resident set size of this process in bytes, from `/proc/self/statm`.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(resident * rustix::param::page_size() as u64)
}

/// Total size in bytes of the regular files below `dir` (bytes on disk as `ls` sees them).
pub fn dir_size(dir: &std::path::Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let mut s = Samples::default();
        for us in 1..=100u64 {
            s.push(Duration::from_micros(us));
        }
        assert_eq!(s.percentile_us(50.0), 50.0);
        assert_eq!(s.percentile_us(99.0), 99.0);
        assert_eq!(s.percentile_us(100.0), 100.0);
        assert_eq!(s.percentile_us(0.0), 1.0);
        assert!((s.mean_us() - 50.5).abs() < 1e-9);
        assert_eq!(Samples::default().percentile_us(50.0), 0.0);
    }

    #[test]
    fn run_for_honours_min_iters() {
        let mut n = 0;
        let (s, rate) = run_for(Duration::ZERO, 17, || n += 1);
        assert_eq!((s.len(), n), (17, 17));
        assert!(rate > 0.0);
    }

    #[test]
    fn dir_size_counts_nested_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/b"), [0u8; 5]).unwrap();
        assert_eq!(dir_size(d.path()).unwrap(), 15);
    }
}
