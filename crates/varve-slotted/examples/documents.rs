//! Stores JSON-like documents under dense ids, updates and deletes some, flushes (the
//! durability point), reopens the store and checks what survived; prints the store's
//! figures (compression, bytes on disk).
//!
//! `cargo run -p varve-slotted --example documents [DIR]` (a temporary directory without DIR).

use std::path::PathBuf;

use varve_slotted::{Options, Store};

/// A customer document of about 1 KiB, repetitive the way JSON is.
fn doc(id: u64, rev: u32) -> Vec<u8> {
    let orders: Vec<String> = (0..8)
        .map(|o| {
            format!(
                r#"{{"order":{},"status":"shipped","total":{}.50}}"#,
                id * 8 + o,
                o * 7
            )
        })
        .collect();
    format!(
        r#"{{"id":{id},"rev":{rev},"name":"customer {id}","tags":["retail","eu","newsletter"],"orders":[{}]}}"#,
        orders.join(",")
    )
    .into_bytes()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    // Small pages so a small example does not sit in one mostly empty 32 MiB file.
    let opts = Options::default().min_page_size(1 << 20);

    let store = Store::open_or_create(&dir, opts.clone())?;
    for id in 0..10_000 {
        store.put(id, &doc(id, 0))?;
    }
    for id in (0..10_000).step_by(2) {
        store.put(id, &doc(id, 1))?; // replaces the value; the old one is freed after a flush
    }
    for id in 9_000..10_000 {
        store.delete(id)?;
    }
    store.flush()?; // everything above is durable from here on
    let len = store.get_with(4, |bytes| bytes.len())?; // zero-copy read
    println!("id 4 holds {len:?} bytes; {:?}", store.stats()?);
    drop(store);

    let store = Store::open(&dir, opts)?;
    assert_eq!(store.get(4)?, Some(doc(4, 1)));
    assert_eq!(store.get(5)?, Some(doc(5, 0)));
    assert_eq!(store.get(9_500)?, None);
    let s = store.stats()?;
    println!(
        "reopened: {} live values, {} bytes given, {} stored (lz4 {:.2}x), {} bytes on disk",
        s.live_values, s.live_bytes, s.stored_bytes, s.compression_ratio, s.bytes_on_disk
    );
    Ok(())
}
