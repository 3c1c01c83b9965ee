//! The machine's own limits: what a durable append costs on this disk.
//!
//! Later layers compare against these rows (the WAL's lone-writer latency against raw
//! fdatasync, its pipelined throughput against write+sync bandwidth), so they are measured
//! first and on the same filesystem (`VARVE_BENCH_DIR`).

use std::time::Duration;

use varve_benches::report::{Better, reference};
use varve_benches::{machine, scaled, scratch_dir};

fn main() -> std::io::Result<()> {
    let dir = scratch_dir()?;
    let budget = Duration::from_millis(scaled(1_000, 5_000));

    let mut lat4k = machine::fdatasync_append_latency(dir.path(), 4096, budget)?;
    let p50 = lat4k.percentile_us(50.0);
    reference(
        "disk",
        "append 4 KiB + fdatasync, p50",
        "µs",
        Better::Lower,
        "raw file",
        p50,
    );
    reference(
        "disk",
        "append 4 KiB + fdatasync, p99",
        "µs",
        Better::Lower,
        "raw file",
        lat4k.percentile_us(99.0),
    );

    let total = scaled(64u64 << 20, 512 << 20);
    let synced = machine::write_sync_bandwidth(dir.path(), total, 1 << 20)?;
    reference(
        "disk",
        "sequential write, fdatasync per 1 MiB",
        "MB/s",
        Better::Higher,
        "raw file",
        synced,
    );

    Ok(())
}
