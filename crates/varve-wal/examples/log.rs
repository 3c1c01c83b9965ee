//! Appends records from several threads (durable when `wait` returns), closes the log,
//! reopens it and reads every record back in LSN order.
//!
//! `cargo run -p varve-wal --example log [DIR]` (a temporary directory without DIR).

use std::path::PathBuf;

use varve_wal::{Options, Wal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);

    let wal = Wal::open(&dir, Options::default())?;
    // Four writers; their appends share group commits (one write and one fdatasync each).
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || -> varve_wal::Result<()> {
                    for i in 0..250u32 {
                        let rec = format!("writer {t} record {i}");
                        wal.append(rec.as_bytes())?.wait()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in writers {
            w.join().map_err(|_| "writer panicked")??;
        }
        Ok(())
    })?;
    // A batch is atomic: after a crash all of it is there or none.
    let batch = wal
        .append_batch(&[b"batch: first", b"batch: second"])?
        .wait()?;
    let stats = wal.stats();
    println!("the batch starts at LSN {batch}; {stats:?}");
    wal.close()?;

    let wal = Wal::open(&dir, Options::default())?;
    println!("reopened: {:?}", wal.recovery_report());
    let mut n = 0u64;
    let mut prev = None;
    for rec in wal.iter_from(wal.first_lsn())? {
        let rec = rec?;
        assert!(prev.is_none_or(|p| rec.lsn == p + 1), "LSNs are gapless");
        prev = Some(rec.lsn);
        n += 1;
    }
    println!("read back {n} records, LSNs gapless up to {prev:?}");
    Ok(())
}
