//! `varve bench`: a short durable-append and read probe of the disk a store would live on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;
use varve_engine::{Direction, EventData, ExpectedVersion, Options, Varve};

use crate::error::{CliError, Kind};
use crate::progress;

/// Events per `read_all` call in the sequential read phase.
const READ_BATCH: usize = 1024;

/// What the probe measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Appends made (one event each, durable before the call returned).
    pub appends: u64,
    /// Appends per second.
    pub appends_per_sec: f64,
    /// Median append latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile append latency, microseconds.
    pub p99_us: f64,
    /// Slowest append, microseconds.
    pub max_us: f64,
    /// Events per second read in order (`read_all`).
    pub seq_reads_per_sec: f64,
    /// Events per second read one by one at random positions (`get`).
    pub random_reads_per_sec: f64,
}

/// The `q` quantile (0..=1) of sorted `v` (nearest rank); 0 for an empty slice.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A small xorshift generator for the random reads (no dependency for it).
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Runs the probe in a new store at `scratch` for about `2 * secs`.
///
/// # Errors
/// The engine's errors.
pub fn probe(scratch: &Path, secs: Duration, payload_size: usize) -> varve_engine::Result<Figures> {
    let db = Varve::open(scratch, Options::default())?;
    let payload = vec![0x5a_u8; payload_size];
    let mut lat = Vec::new();
    let spin = progress::spinner(format!("durable appends for {secs:?}"));
    let start = Instant::now();
    while start.elapsed() < secs || lat.is_empty() {
        let t = Instant::now();
        let n = lat.len();
        db.append(
            &format!("bench-{}", n % 16),
            ExpectedVersion::Any,
            &[EventData::new("bench", &payload)],
        )?;
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let append_time = start.elapsed();
    spin.finish_and_clear();
    db.checkpoint()?;
    let n = lat.len() as u64;
    lat.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;

    let spin = progress::spinner("reads".to_owned());
    let half = secs / 2;
    let start = Instant::now();
    let mut read = 0u64;
    while start.elapsed() < half || read == 0 {
        let mut from = 0;
        loop {
            let got = db.scan_all(from, Direction::Forward, READ_BATCH, |v| {
                from = v.position + 1;
            })?;
            read += got as u64;
            if got < READ_BATCH {
                break;
            }
        }
    }
    let seq = read as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut gets = 0u64;
    while start.elapsed() < half || gets == 0 {
        for _ in 0..256 {
            let p = next_random(&mut state) % n;
            if db.get(p)?.is_some() {
                gets += 1;
            }
        }
    }
    let random = gets as f64 / start.elapsed().as_secs_f64();
    spin.finish_and_clear();
    db.close()?;
    Ok(Figures {
        appends: n,
        appends_per_sec: n as f64 / append_time.as_secs_f64(),
        p50_us: us(quantile(&lat, 0.5)),
        p99_us: us(quantile(&lat, 0.99)),
        max_us: us(lat.last().copied().unwrap_or(0)),
        seq_reads_per_sec: seq,
        random_reads_per_sec: random,
    })
}

/// Runs `varve bench`: a new store in a fresh subdirectory of `dir`, removed afterwards.
///
/// # Errors
/// `dir` missing or not a directory; the probe's errors.
pub fn run(dir: &Path, secs: Duration, payload_size: usize, json: bool) -> Result<(), CliError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CliError::new(
                Kind::NoStore,
                format!("{} is not a directory", dir.display()),
            ));
        }
        Err(e) => {
            return Err(CliError::new(
                Kind::NoStore,
                format!("{}: no such directory ({e})", dir.display()),
            )
            .hint("bench needs an existing directory on the disk to probe"));
        }
    }
    let scratch: PathBuf = dir.join(format!("varve-bench-{}", std::process::id()));
    if scratch.exists() {
        return Err(CliError::new(
            Kind::Other,
            format!("{} already exists; remove it first", scratch.display()),
        ));
    }
    let result = probe(&scratch, secs, payload_size);
    let removed = std::fs::remove_dir_all(&scratch);
    let f = result.map_err(|e| CliError::engine(&e, &scratch))?;
    removed
        .map_err(|e| CliError::new(Kind::Other, format!("removing {}: {e}", scratch.display())))?;
    if json {
        println!(
            "{}",
            json!({
                "dir": dir.display().to_string(),
                "payload_bytes": payload_size,
                "appends": f.appends,
                "appends_per_sec": f.appends_per_sec,
                "append_p50_us": f.p50_us,
                "append_p99_us": f.p99_us,
                "append_max_us": f.max_us,
                "seq_reads_per_sec": f.seq_reads_per_sec,
                "random_reads_per_sec": f.random_reads_per_sec,
            })
        );
    } else {
        println!(
            "durable appends (one writer, {payload_size}-byte payloads, each fdatasynced \
             before it returns): {:.0} appends/s; latency p50 {:.0} us, p99 {:.0} us, max \
             {:.0} us ({} appends)",
            f.appends_per_sec, f.p50_us, f.p99_us, f.max_us, f.appends
        );
        println!(
            "reads after a checkpoint: {:.0} events/s in order (read_all), {:.0} events/s at \
             random positions (get)",
            f.seq_reads_per_sec, f.random_reads_per_sec
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
        assert_eq!(quantile(&[7], 0.99), 7);
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[1, 2, 3], 0.5), 2);
    }

    #[test]
    fn the_random_positions_are_xorshift64() {
        let mut s = 1;
        let got: Vec<u64> = (0..3).map(|_| next_random(&mut s)).collect();
        assert_eq!(
            got,
            [
                1_082_269_761,
                1_152_992_998_833_853_505,
                11_177_516_664_432_764_457
            ]
        );
    }

    #[test]
    fn the_random_positions_spread() {
        let mut s = 1;
        let hits: std::collections::HashSet<u64> =
            (0..1000).map(|_| next_random(&mut s) % 100).collect();
        assert!(hits.len() > 90, "{}", hits.len());
    }
}
