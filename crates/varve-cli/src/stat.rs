//! `varve stat`: what a store holds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use varve_engine::{Direction, PayloadRef, RecoveryReport, Stats, Varve};

use crate::error::CliError;
use crate::show::bytes;
use crate::{progress, store};

/// Events read per engine call when scanning.
const BATCH: usize = 4096;

/// One file of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSize {
    /// Path relative to the store directory.
    pub path: PathBuf,
    /// Length in bytes.
    pub len: u64,
    /// Bytes the file system allocated for it (preallocated WAL segments, sparse files).
    pub allocated: u64,
}

/// What a scan of every event found (only with `--scan`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// Events read.
    pub events: u64,
    /// Bytes of payloads kept inline in the events.
    pub inline_bytes: u64,
    /// Events whose payload is a sidecar blob.
    pub blob_refs: u64,
    /// Sum of the lengths of those payloads (each reference counted).
    pub referenced_bytes: u64,
    /// Distinct blobs referenced.
    pub distinct_blobs: u64,
}

impl Scan {
    /// Logical blob bytes (every reference) per stored blob byte, if any blob is stored.
    pub fn dedup_ratio(&self, stored: u64) -> Option<f64> {
        (stored > 0).then(|| self.referenced_bytes as f64 / stored as f64)
    }
}

/// Every file under `dir` with its size, sorted by path.
///
/// # Errors
/// I/O errors listing the directory.
pub fn files(dir: &Path) -> std::io::Result<Vec<FileSize>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let Ok(meta) = entry.metadata() else {
                // Removed while we listed (a WAL segment dropped by a checkpoint).
                continue;
            };
            if meta.is_dir() {
                todo.push(entry.path());
            } else {
                let path = entry.path();
                out.push(FileSize {
                    path: path.strip_prefix(dir).unwrap_or(&path).to_path_buf(),
                    len: meta.len(),
                    allocated: meta.blocks() * 512,
                });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Reads every event (borrowed, no payload copies) and counts payloads.
///
/// # Errors
/// The engine's read errors.
pub fn scan(db: &Varve, total: u64) -> varve_engine::Result<Scan> {
    let bar = progress::bar(total, "scanning events");
    let mut s = Scan::default();
    let mut seen = HashSet::new();
    let mut from = 0;
    loop {
        let n = db.scan_all(from, Direction::Forward, BATCH, |v| {
            s.events += 1;
            from = v.position + 1;
            match v.payload {
                PayloadRef::Inline(b) => s.inline_bytes += b.len() as u64,
                PayloadRef::Blob { hash, len } => {
                    s.blob_refs += 1;
                    s.referenced_bytes += len;
                    seen.insert(hash.0);
                }
            }
        })?;
        bar.inc(n as u64);
        if n < BATCH {
            break;
        }
    }
    bar.finish_and_clear();
    s.distinct_blobs = seen.len() as u64;
    Ok(s)
}

/// Runs `varve stat`.
///
/// # Errors
/// Opening the store; reading it.
pub fn run(dir: &Path, json: bool, deep: bool, wait_lock: Duration) -> Result<(), CliError> {
    let db = store::open_existing(dir, wait_lock)?;
    let err = |e: varve_engine::Error| CliError::engine(&e, dir);
    let stats = db.stats().map_err(err)?;
    let scanned = if deep {
        Some(scan(&db, stats.next_position).map_err(err)?)
    } else {
        None
    };
    let report = db.recovery_report().clone();
    drop(db);
    let files = files(dir).map_err(|e| {
        CliError::new(
            crate::error::Kind::Other,
            format!("listing {}: {e}", dir.display()),
        )
    })?;
    if json {
        println!(
            "{}",
            to_json(dir, &stats, &report, scanned.as_ref(), &files)
        );
    } else {
        print!(
            "{}",
            to_text(dir, &stats, &report, scanned.as_ref(), &files)
        );
    }
    Ok(())
}

/// The report as JSON.
pub fn to_json(
    dir: &Path,
    s: &Stats,
    r: &RecoveryReport,
    scan: Option<&Scan>,
    files: &[FileSize],
) -> Value {
    json!({
        "dir": dir.display().to_string(),
        "events": s.next_position,
        "positions": if s.next_position == 0 { Value::Null } else { json!([0, s.next_position - 1]) },
        "streams": s.streams,
        "checkpoint": {
            "lsn": s.checkpoint_lsn,
            "checkpointed_events": s.checkpointed_position,
            "lag_events": s.checkpoint_lag_events,
            "lag_bytes": s.tail_bytes,
        },
        "wal": {
            "segments": s.wal_segments,
            "bytes": s.wal_bytes,
            "first_lsn": s.wal_first_lsn,
            "durable_lsn": s.wal_durable_lsn,
        },
        "blobs": {
            "count": s.blobs,
            "bytes": s.blob_bytes,
            "references": scan.map(|x| x.blob_refs),
            "referenced_bytes": scan.map(|x| x.referenced_bytes),
            "distinct_referenced": scan.map(|x| x.distinct_blobs),
            "dedup_ratio": scan.and_then(|x| x.dedup_ratio(s.blob_bytes)),
        },
        "snapshots": {
            "count": s.snapshots,
            "bytes": s.snapshot_bytes,
            "stored_bytes": s.snapshot_stored_bytes,
            "pages": s.snapshot_pages,
        },
        "consumers": s.consumers,
        "deleted_streams": s.deleted_streams,
        "inline_payload_bytes": scan.map(|x| x.inline_bytes),
        "recovery": {
            "closed_cleanly": r.wal.closed_cleanly,
            "replayed_records": r.replayed_records,
            "replayed_events": r.replayed_events,
            "wal_dropped_bytes": r.wal.dropped_bytes,
            "wal_dropped_records": r.wal.dropped_records,
            "orphan_blob_refs_released": r.orphan_blob_refs_released,
        },
        "degraded": s.degraded,
        "files": files.iter().map(|f| json!({
            "path": f.path.display().to_string(),
            "bytes": f.len,
            "allocated": f.allocated,
        })).collect::<Vec<_>>(),
        "total_bytes": files.iter().map(|f| f.len).sum::<u64>(),
        "total_allocated": files.iter().map(|f| f.allocated).sum::<u64>(),
    })
}

/// The report as text.
pub fn to_text(
    dir: &Path,
    s: &Stats,
    r: &RecoveryReport,
    scan: Option<&Scan>,
    files: &[FileSize],
) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "store        {}", dir.display());
    let positions = if s.next_position == 0 {
        "none".to_owned()
    } else {
        format!("0..={}", s.next_position - 1)
    };
    let _ = writeln!(
        o,
        "events       {} (positions {positions})",
        s.next_position
    );
    let _ = writeln!(o, "streams      {}", s.streams);
    let _ = writeln!(
        o,
        "checkpoint   LSN {}, {} events in events.mdb; lag {} events ({} in the WAL only)",
        s.checkpoint_lsn,
        s.checkpointed_position,
        s.checkpoint_lag_events,
        bytes(s.tail_bytes)
    );
    let _ = writeln!(
        o,
        "wal          {} segments, {}, LSNs {}..={}",
        s.wal_segments,
        bytes(s.wal_bytes),
        s.wal_first_lsn,
        s.wal_durable_lsn
    );
    let mut blobs = format!("{} blobs, {}", s.blobs, bytes(s.blob_bytes));
    match scan {
        Some(x) => {
            let _ = write!(
                blobs,
                "; {} references to {} distinct blobs, {} referenced",
                x.blob_refs,
                x.distinct_blobs,
                bytes(x.referenced_bytes)
            );
            match x.dedup_ratio(s.blob_bytes) {
                Some(d) => {
                    let _ = write!(blobs, ", dedup ratio {d:.2}");
                }
                None => blobs.push_str(", dedup ratio n/a"),
            }
        }
        None => blobs.push_str(" (dedup ratio: run with --scan)"),
    }
    let _ = writeln!(o, "blobs        {blobs}");
    let _ = writeln!(
        o,
        "snapshots    {} snapshots, {} ({} stored) in {} slotted pages",
        s.snapshots,
        bytes(s.snapshot_bytes),
        bytes(s.snapshot_stored_bytes),
        s.snapshot_pages
    );
    let _ = writeln!(
        o,
        "consumers    {}; {} streams deleted or truncated",
        s.consumers, s.deleted_streams
    );
    if let Some(x) = scan {
        let _ = writeln!(
            o,
            "inline       {} of inline payloads",
            bytes(x.inline_bytes)
        );
    }
    let _ = writeln!(
        o,
        "recovery     {}; replayed {} WAL records ({} events); cut {} ({} records) from the WAL \
         tail; released {} orphan blob references",
        if r.wal.closed_cleanly {
            "closed cleanly"
        } else {
            "not closed cleanly (crash, or a tool killed)"
        },
        r.replayed_records,
        r.replayed_events,
        bytes(r.wal.dropped_bytes),
        r.wal.dropped_records,
        r.orphan_blob_refs_released
    );
    if let Some(d) = &s.degraded {
        let _ = writeln!(o, "degraded     {d}");
    }
    let _ = writeln!(o, "files");
    for f in files {
        let _ = writeln!(
            o,
            "  {:>12} {:>12} allocated  {}",
            bytes(f.len),
            bytes(f.allocated),
            f.path.display()
        );
    }
    let total: u64 = files.iter().map(|f| f.len).sum();
    let alloc: u64 = files.iter().map(|f| f.allocated).sum();
    let _ = writeln!(
        o,
        "  {:>12} {:>12} allocated  total",
        bytes(total),
        bytes(alloc)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ratio_is_logical_over_stored_bytes() {
        let s = Scan {
            referenced_bytes: 300,
            ..Scan::default()
        };
        assert_eq!(s.dedup_ratio(100), Some(3.0));
        assert_eq!(s.dedup_ratio(0), None);
    }
}
