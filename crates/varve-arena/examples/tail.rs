//! A tailing reader over an append-only file: a writer appends framed records while a
//! reader follows them through the cache manager, whose memory stays within a 2 MiB arena
//! although the file grows to about 16 MiB. Prints the cache's and the arena's figures.
//!
//! `cargo run -p varve-arena --example tail`

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use varve_arena::{Arena, ArenaConfig, CacheConfig, CacheManager, FileSource, format};

const RECORDS: u64 = 4_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("log");
    let mut file = std::fs::File::create(&path)?;

    let source = Arc::new(FileSource::new());
    source.open(1, &path)?;
    let arena = Arena::new(ArenaConfig::with_limits(256 << 10, 2 << 20)?);
    let cache = CacheManager::new(source, arena, CacheConfig::default())?;
    let mut reader = cache.reader(1, 0);
    reader.expect_sequence(1); // records must come in order: 1, 2, 3...

    let mut written = 0;
    let mut read = 0;
    let mut bytes = 0u64;
    let mut buf = Vec::new();
    while read < RECORDS {
        // The writer: a burst of records of about 4 KiB each.
        for _ in 0..50.min(RECORDS - written) {
            written += 1;
            buf.clear();
            let body = vec![(written % 251) as u8; 4000 + (written % 200) as usize];
            format::encode_record(0, written, &body, &mut buf).ok_or("record too large")?;
            file.write_all(&buf)?;
        }
        // The reader: everything complete so far; a torn or missing tail reads as "not yet".
        while let Some(rec) = reader.next_record()? {
            read += 1;
            bytes += rec.payload().len() as u64;
        }
        if read < written {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let stats = cache.stats();
    println!(
        "read {read} records ({:.1} MiB) in order; hit rate {:.2}, {} pages prefetched, peak arena {} KiB",
        bytes as f64 / (1 << 20) as f64,
        stats.hit_rate(),
        stats.prefetched,
        stats.peak_held_bytes >> 10
    );
    assert!(stats.peak_held_bytes <= 2 << 20, "the arena's max holds");
    println!("{stats:?}");
    Ok(())
}
