//! Stores a few payloads (small ones stay inline, large ones become blobs), shows that
//! equal content is stored once, streams a 32 MiB blob back into a hasher-like sink with
//! drop-behind reads, and releases the references.
//!
//! `cargo run -p varve-sidecar --example blobs [DIR]` (a temporary directory without DIR).

use std::io::Write;
use std::path::PathBuf;

use varve_sidecar::{Payload, Sidecar, SidecarOptions};

/// A `Write` that only counts bytes and folds them into a checksum: reading a blob does not
/// need the whole of it in memory.
#[derive(Default)]
struct Sink {
    bytes: u64,
    sum: u64,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.sum = buf
            .iter()
            .fold(self.sum, |s, &b| s.rotate_left(5) ^ u64::from(b));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let sidecar = Sidecar::open(&dir, SidecarOptions::default())?;

    let small = sidecar.store(b"{\"kind\":\"thumbnail-missing\"}")?;
    assert!(
        matches!(small, Payload::Inline(_)),
        "below 2048 bytes: stays in the event"
    );

    let scan: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
    let refs = sidecar.store_many(&[&scan, &scan])?; // one blob, reference count 2
    let hash = *refs[0].blob_hash().ok_or("a 32 MiB payload is a blob")?;
    println!(
        "32 MiB blob {:02x?}..: {} references, event keeps {} bytes",
        &hash.as_bytes()[..4],
        sidecar.refcount(&hash)?.unwrap_or(0),
        refs[0].encoded_len()
    );

    // Read back without the blob landing in the page cache or in this process's memory.
    let mut sink = Sink::default();
    let n = sidecar.read_to(&refs[0], &mut sink)?;
    println!(
        "read back {n} bytes (checksum {:016x}); {:?}",
        sink.sum,
        sidecar.stats()?
    );

    for r in &refs {
        if let Some(h) = r.blob_hash() {
            sidecar.release(h)?;
        }
    }
    println!(
        "after releasing both references: {} blobs",
        sidecar.blobs()?.len()
    );
    Ok(())
}
