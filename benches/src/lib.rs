//! Shared support for Varve's benchmarks.
//!
//! Every bench target is a plain binary (`harness = false`). It measures a Varve figure and
//! a baseline or peer figure *in the same run* and records both with [`report::record`];
//! `cargo xtask bench` collects the rows into one table (Markdown and an SVG chart under
//! `target/varve-bench/`). Figures are compared as ratios, never against yesterday's
//! numbers: the machines are shared and noisy.
//!
//! - [`report`]: the row format bench binaries append to, and its parser.
//! - [`measure`]: timing helpers (throughput over a time budget, latency percentiles).
//! - [`machine`]: the disk's own limits (fdatasync latency, write+sync bandwidth).

pub mod machine;
pub mod measure;
pub mod report;

/// True when the run was asked to be quick (`cargo xtask bench --quick` sets
/// `VARVE_BENCH_QUICK=1`): benches then shrink their data sets and time budgets so the
/// whole suite finishes in a few minutes on a 2-core machine.
pub fn quick() -> bool {
    std::env::var_os("VARVE_BENCH_QUICK").is_some_and(|v| v != "0")
}

/// Picks `quick` in a quick run and `full` otherwise.
pub fn scaled<T>(quick_value: T, full_value: T) -> T {
    if quick() { quick_value } else { full_value }
}

/// A fresh scratch directory for one benchmark, removed when dropped.
///
/// It lives under `VARVE_BENCH_DIR` when that is set (`cargo xtask bench` points it at
/// `target/varve-bench/scratch`, on the project's disk), else in the system temp dir.
/// Durable-write figures describe whichever filesystem this is.
pub fn scratch_dir() -> std::io::Result<tempfile::TempDir> {
    match std::env::var_os("VARVE_BENCH_DIR") {
        Some(dir) => {
            std::fs::create_dir_all(&dir)?;
            tempfile::tempdir_in(dir)
        }
        None => tempfile::tempdir(),
    }
}

/// Whether part `name` of a bench runs: all of them unless the environment variable `var`
/// lists some (`w4,w5`, case-insensitive), for profiling one at a time.
pub fn selected(var: &str, name: &str) -> bool {
    std::env::var(var).map_or(true, |only| {
        only.split(',').any(|x| x.trim().eq_ignore_ascii_case(name))
    })
}
