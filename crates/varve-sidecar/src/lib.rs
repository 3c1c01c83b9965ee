//! The large-payload tier: content-addressed blobs in their own LMDB environment.
//!
//! An event's payload shorter than [`MAX_INLINE_SIZE`] (2048 bytes) stays inline in the
//! event; a payload of 2048 bytes or more is stored here, under its SHA-256, and the event
//! keeps a 33-byte [`Payload::BlobRef`]. Blobs live in their own LMDB environment,
//! `blobs.mdb`, so their pages never share a file or a memory map with the event B-tree,
//! and they are read back without filling the page cache or the process's RSS.
//!
//! ```
//! use varve_sidecar::{Payload, Sidecar, SidecarOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let sidecar = Sidecar::open(dir.path(), SidecarOptions::default())?;
//! let small = sidecar.store(b"tiny")?; // Payload::Inline, nothing written
//! let big = sidecar.store(&vec![7u8; 5 << 20])?; // Payload::BlobRef, durable on return
//! assert!(matches!(small, Payload::Inline(_)));
//! let encoded = big.encode()?; // what the engine keeps in its event (33 bytes)
//! let mut out = Vec::new();
//! sidecar.read_to(&Payload::decode(&encoded)?, &mut out)?;
//! assert_eq!(out.len(), 5 << 20);
//! # Ok(()) }
//! ```
//!
//! # Store
//!
//! [`Sidecar::store`] / [`Sidecar::store_many`] hash each payload with SHA-256, then in one
//! LMDB write transaction either raise the blob's reference count (the same bytes are
//! stored once) or write the blob with `MDB_RESERVE` (heed's `put_reserved`: LMDB allocates
//! the overflow pages and the bytes are copied into them once). [`Sidecar::release`]
//! lowers the count and deletes the blob at zero. Payloads over
//! [`SidecarOptions::max_blob_size`] (1 GiB) are refused before anything is written. The map
//! grows (doubling) when a write needs more room instead of failing with `MDB_MAP_FULL`:
//! every transaction of this process runs under a shared guard of one `RwLock`, and a
//! resize takes it exclusively, as `mdb_env_set_mapsize` requires. Any number of threads
//! may read at once (read transactions are not tied to threads); writers serialize on LMDB.
//! Counts live in their own database, so a dedup hit rewrites 24 bytes, not the blob.
//! Byte layouts: `docs/format.md`.
//!
//! # Read path and cache policy
//!
//! The seed's concern: reading a 5 MB blob through LMDB's map brings it into the page cache
//! (and the reader's RSS), evicting the hot event history. The issue measured that
//! `MADV_DONTNEED` alone frees RSS but none of the page cache, that adding
//! `POSIX_FADV_DONTNEED` still leaves much of it (read-ahead pages are under I/O, hence
//! locked, when the drop passes them, and mapped pages are never dropped), and that
//! `MADV_PAGEOUT` leaves some. The bench `benches/benches/sidecar.rs` repeats that
//! investigation on a raw 128 MiB file read cold in 1 MiB chunks (Linux 6.18, ext4 on a
//! virtio disk, `read_ahead_kb` 8192, a 2-core VM shared with three other builds). The
//! page-cache and RSS figures were identical in all four runs; the MB/s ranges over the
//! runs show how noisy the machine was, larger than the differences between the `pread`
//! variants:
//!
//! | variant | MB/s (4 runs) | page cache left | RSS growth |
//! |---|---:|---:|---:|
//! | mmap, no advice | 637–1171 | 128 MiB (all) | 128 MiB |
//! | mmap + `MADV_DONTNEED` behind | 165–1037 | 128 MiB | 0 |
//! | mmap + `MADV_DONTNEED` + `POSIX_FADV_DONTNEED` behind | 302–1221 | 88 MiB | 0 |
//! | mmap + `MADV_PAGEOUT` behind | 138–953 | 44 MiB | 0 |
//! | mmap (`MADV_RANDOM`) + `MADV_WILLNEED` ahead + both drops behind | 209–271 | 0 | 0 |
//! | `pread` + `POSIX_FADV_DONTNEED` behind (default read-ahead) | 93–1048 | 98 MiB | 1 MiB (buffer) |
//! | `pread` + `FADV_RANDOM` + `FADV_WILLNEED` 1 chunk ahead + drop behind | 257–636 | 0 (≤ 1 MiB during) | 1 MiB |
//! | **`pread` + `FADV_RANDOM` + `FADV_WILLNEED` 2 chunks ahead + drop behind** | 199–711 | 0 (≤ 2 MiB during) | 1 MiB |
//! | `pread` + `FADV_RANDOM` + `FADV_WILLNEED` 4 chunks ahead + drop behind | 122–571 | 0 (≤ 4 MiB during) | 1 MiB |
//! | the same with 4 MiB chunks, 2 ahead (1 run) | 224 | 0 (≤ 8 MiB during) | 4 MiB |
//! | `pread` with `O_DIRECT` | 296–754 | 0 | 1 MiB |
//!
//! Every mmap variant with the kernel's own read-ahead leaves pages behind: read-ahead runs
//! ahead of the drop, and pages that are locked for I/O or still mapped are skipped by
//! `POSIX_FADV_DONTNEED`. Reading through the map with read-ahead turned off works but is
//! slow (one fault per page after the advised window). So the default,
//! [`CachePolicy::DropBehind`], does not read blob bytes through the map at all:
//!
//! 1. In a read transaction, LMDB returns the value as a pointer into its map; it does not
//!    read the value's pages to do so. The pointer's file offset comes from the mapping in
//!    `/proc/self/maps` that holds it and maps `blobs.mdb` (same device and inode), cached
//!    until the next map resize. The value is not touched through the map.
//! 2. The overflow run (LMDB page header, blob header, content) is read with `pread` on a
//!    separate read-only descriptor that carries `POSIX_FADV_RANDOM`, so the kernel reads
//!    exactly the ranges asked for; `POSIX_FADV_WILLNEED` starts the next two chunks
//!    (1 MiB each) while the current one is consumed; each chunk is dropped with
//!    `POSIX_FADV_DONTNEED` as soon as it is in the buffer, together with the 2 MiB before
//!    it, and the run's 2 MiB-aligned neighbourhood is dropped at the end. The widening
//!    matters on kernels with large page-cache folios (ext4 and xfs on 6.x): a folio left
//!    by an earlier buffered read or write can straddle a chunk or run boundary, and
//!    `POSIX_FADV_DONTNEED` skips folios that stick out of its range. Pages this process
//!    has mapped (the B-tree pages LMDB reads through its map) are never dropped.
//! 3. The first chunk's LMDB page header must name the page the offset was derived for,
//!    and the blob header must match the hash and length: a wrong offset is an error, never
//!    wrong data.
//!
//! Integrity and memory: with [`SidecarOptions::verify_on_read`] (default on) no byte of a
//! blob reaches the caller before its SHA-256 has matched. Blobs up to
//! [`SidecarOptions::verify_buffer`] (16 MiB) are read once into a private buffer (hashed
//! chunk by chunk as they land), checked, then written: RSS grows by the blob size for the
//! duration of the call, the page cache by at most ~3 chunks. Larger blobs are hashed in a
//! first chunked pass and streamed in a second, reading the file twice but keeping RSS and
//! page cache at a few chunks; keeping a 1 GiB blob in memory, or in the page cache, to
//! avoid the second read would defeat the purpose. Within one read transaction LMDB never
//! reuses the blob's pages, so both passes read the same bytes. With verification off,
//! bytes stream to the writer in one pass.
//!
//! Measured by the acceptance test (`tests/page_cache.rs`, 256 MiB of 4 MiB blobs streamed
//! through `read_to` into a sink that compares every byte): drop-behind grows RSS by
//! 4.1 MiB (the one-blob verify buffer) and page-cache residency of `blobs.mdb` peaks at
//! 0.1 MiB, from cold; from a fully cached file it drops 256 MiB to about 2 MiB. With the
//! advice off ([`CachePolicy::Keep`]) the same reads leave 256 MiB in the page cache and
//! 256 MiB in RSS. Writes drop the freshly written blobs from the page cache too (16 MiB of
//! blobs leave 0.1 MiB cached, against 16 MiB with `Keep`). Streaming a 32 MiB blob keeps
//! at most 6 MiB cached at any sample (tested; about 2–3 MiB measured).
//!
//! Throughput (`cargo xtask bench --quick --filter sidecar`, ratios against plain mmap
//! reads of the same blobs in the same run, over four runs on the shared machine): cold
//! reads of 4 MiB blobs 0.57–1.76x, of 64 MiB blobs 0.37–0.63x (they exceed the verify
//! buffer and are read twice; 0.48–1.09x with verification off); warm reads 0.39–1.01x for
//! 4 MiB blobs and 0.28–0.46x for 64 MiB blobs, by design: nothing stays cached, so every
//! read goes to the device. `O_DIRECT` reads measured 0.43–2.08x cold.
//!
//! [`CachePolicy::Direct`] reads with `O_DIRECT` instead (no page cache at all, no
//! read-ahead overlap; falls back to drop-behind where the filesystem refuses it).
//! [`CachePolicy::Keep`] hands out slices of LMDB's map (zero-copy, with `MADV_WILLNEED`
//! ahead because LMDB's map is opened with `MDB_NORDAHEAD`, i.e. `MADV_RANDOM`).
//!
//! Kernel requirements: Linux with `/proc/self/maps` (for file offsets; without it, or if
//! no mapping is found, reads fall back to the map plus `MADV_DONTNEED`, which frees RSS
//! but not the page cache), `posix_fadvise` (`RANDOM`, `WILLNEED`, `DONTNEED`: any 2.6+
//! kernel), `O_DIRECT` only for [`CachePolicy::Direct`]. The folio widening assumes
//! folios of at most 2 MiB (x86-64 and arm64 with 4 KiB pages).
//!
//! All `unsafe` is in the private `os` module (opening and resizing the environment,
//! memory advice on the map).

mod error;
mod format;
mod mapping;
mod options;
mod os;
mod payload;
mod read;
mod sidecar;

pub use error::{Error, Result};
pub use options::{CachePolicy, SidecarOptions};
pub use payload::{BlobHash, ENCODED_BLOBREF_LEN, MAX_INLINE_SIZE, Payload, routes_to_sidecar};
pub use sidecar::{BLOBS_FILE, BlobInfo, Sidecar, SidecarStats};
