//! The large-payload tier: content-addressed blobs in their own LMDB environment.
//!
//! An event's payload shorter than [`MAX_INLINE_SIZE`] (2048 bytes) stays inline in the
//! event; a payload of 2048 bytes or more is stored here, under its SHA-256, and the event
//! keeps a 33-byte [`Payload::BlobRef`]. Blobs live in their own LMDB environment,
//! `blobs.mdb`, so their pages never share a file or a memory map with the event B-tree,
//! and large ones are read back without filling the page cache or the process's RSS.
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
//! [`Sidecar::store`] / [`Sidecar::store_many`] hash each payload (its SHA-256 address and
//! an xxh3-128 digest of every 1 MiB chunk, in one pass, in the caller's thread), then in
//! one LMDB write transaction either raise the blob's reference count (the same bytes are
//! stored once) or write the blob with `MDB_RESERVE` (heed's `put_reserved`: LMDB allocates
//! the overflow pages and the bytes are copied into them once). Concurrent calls share
//! commits ([`SidecarOptions::group_commit`]): calls that arrive while a commit runs are
//! written together in the next transaction, each as a nested transaction (a failing call
//! is undone alone), and each returns once the commit holding its blobs is durable.
//! [`Sidecar::release`] lowers the count and deletes the blob at zero; [`Sidecar::blobs`]
//! lists every blob with its count (to collect orphans after a crash). Payloads over
//! [`SidecarOptions::max_blob_size`] (1 GiB) are refused before anything is written. The map
//! grows (doubling) when a write needs more room instead of failing with `MDB_MAP_FULL`:
//! every transaction of this process runs under a shared guard of one `RwLock`, and a
//! resize takes it exclusively, as `mdb_env_set_mapsize` requires. Any number of threads
//! may read at once (read transactions are not tied to threads). Counts live in their own
//! database, so a dedup hit rewrites 24 bytes, not the blob. Byte layouts:
//! `docs/format.md`.
//!
//! # Read path and cache policy
//!
//! Reading a large blob through LMDB's map would bring it into the page cache and the
//! reader's RSS, evicting the hot event history; `MADV_DONTNEED` frees the RSS but not the
//! page cache, and `POSIX_FADV_DONTNEED` skips pages that are mapped or under read-ahead
//! I/O. So the default, [`CachePolicy::DropBehind`], reads blob bytes with `pread` instead:
//!
//! 1. In a read transaction, LMDB returns the value as a pointer into its map; it does not
//!    read the value's pages to do so. The pointer's file offset comes from the mapping in
//!    `/proc/self/maps` that holds it and maps `blobs.mdb` (same device and inode), cached
//!    until the next map resize. The value is not touched through the map.
//! 2. The overflow run (LMDB page header, blob header, digest table, content) is read with
//!    `pread` on a separate read-only descriptor that carries `POSIX_FADV_RANDOM`, so the
//!    kernel reads exactly the ranges asked for, in pieces of
//!    [`SidecarOptions::read_chunk`] (256 KiB). `POSIX_FADV_WILLNEED` asks for the first
//!    piece on its own (a small request, so the read starts while the rest is on its way),
//!    then keeps a read-ahead window of 2 MiB ahead of the piece being read (topped up in
//!    steps of at least 1 MiB, so the device gets large requests); each piece is dropped
//!    with `POSIX_FADV_DONTNEED` as soon as it is in the buffer, together with the 2 MiB
//!    of the run before it, and the run's 2 MiB-aligned neighbourhood is dropped at the end
//!    (a large folio left by an earlier buffered read or write can straddle a boundary, and
//!    `POSIX_FADV_DONTNEED` skips folios that stick out of its range). Pages this process
//!    has mapped (the B-tree pages LMDB reads through its map) are never dropped.
//!    Page-cache residency of the file stays within about two pieces plus the read-ahead
//!    window (2.5 MiB), RSS within one digest chunk.
//! 3. The first page's LMDB page header must name the page the offset was derived for, and
//!    the blob header must match the hash and length: a wrong offset is an error, never
//!    wrong data.
//!
//! **Fallback through the map.** When no file offset can be derived (no `/proc/self/maps`,
//! no mapping of the file found, or a value that is not page-aligned as an overflow value
//! is), `DropBehind` and `Direct` read the blob through LMDB's map instead, with
//! `MADV_WILLNEED` ahead and `MADV_DONTNEED` after: RSS is given back, but the blob's pages
//! stay in the page cache until the kernel reclaims them.
//!
//! **Integrity.** With [`SidecarOptions::verify_on_read`] (default on) the blob is read once,
//! one digest chunk (1 MiB) at a time into a private buffer (each chunk hashed piece by
//! piece as its pieces land), and each chunk is handed to the
//! caller only after its xxh3-128 matched the digest stored with the blob: at any blob size,
//! with about one chunk of memory, and bytes that change on disk while the blob is read
//! never reach the caller. A bad chunk is [`Error::CorruptedChunk`] naming its range; the
//! chunks before it have been written to the caller's writer, nothing of it or after it.
//! The header and digest table are checked (even with verification off) before any content
//! goes out. Blobs written by format version 1 carry no digests: up to
//! [`SidecarOptions::verify_buffer`] they are read whole into a buffer and their SHA-256
//! checked; larger ones are read twice (the first pass checks the SHA-256 and notes a digest
//! per read chunk, the second hands out only chunks that still match).
//!
//! [`CachePolicy::Direct`] reads with `O_DIRECT` instead (no page cache at all; a helper
//! thread reads the next digest chunk while the current one is checked; falls back to
//! drop-behind where the filesystem refuses it).
//! [`CachePolicy::Keep`] hands out slices of LMDB's map (zero-copy, with `MADV_WILLNEED`
//! ahead because LMDB's map is opened with `MDB_NORDAHEAD`, i.e. `MADV_RANDOM`), each
//! verified chunk straight from the map.
//!
//! **Small blobs.** A blob of at most [`SidecarOptions::small_blob_max`] bytes (64 KiB)
//! is read and written like any LMDB value under every policy: read through the map
//! (verified), with no cache advice after a read or a write, so its pages stay cached, as
//! the B-tree's do, until the kernel reclaims them. For such a blob the advice costs more
//! than the I/O it saves: a `POSIX_FADV_DONTNEED` that meets a page it cannot drop (one
//! that LMDB, or the kernel's fault-around next to a B-tree page, mapped, or one in a large
//! folio with such a page) drains the page lists of every CPU, and a dropped blob is a
//! device read the next time.
//!
//! **Hot blobs.** With [`SidecarOptions::hot_budget`] (default 0: off) blobs that fit the
//! budget stay in the page cache after they are read: the set is chosen by SIEVE (a blob
//! read again is marked and survives the next sweep of the eviction hand), room is made
//! before a new blob is read, and a blob leaving the set is dropped from this process's
//! mappings (`MADV_DONTNEED`) and from the page cache (`POSIX_FADV_DONTNEED` on exactly its
//! run). A kept blob is read through LMDB's map (its pages mapped with
//! `MADV_POPULATE_READ` when it was admitted), still verified chunk by chunk; a chunk that
//! fails takes the blob out of the set. [`Sidecar::hot_bytes`] says how much is kept.
//!
//! Chunk digests are XXH3-128; on x86-64 CPUs with AVX2 (checked at run time) their
//! long-input loop runs in AVX2, elsewhere `xxhash-rust` computes them.
//!
//! Measurements of these choices (the read-advice matrix, throughput against plain `pread`
//! and heed, residency) live with the bench, `benches/benches/sidecar.rs`.
//!
//! Kernel requirements: Linux with `/proc/self/maps` (for file offsets; see the fallback
//! above), `posix_fadvise` (`RANDOM`, `WILLNEED`, `DONTNEED`: any 2.6+ kernel), `O_DIRECT`
//! only for [`CachePolicy::Direct`]. The folio widening assumes folios of at most 2 MiB
//! (x86-64 and arm64 with 4 KiB pages).
//!
//! All `unsafe` is in the private `os` module (opening and resizing the environment,
//! memory advice on the map) and in the AVX2 loop of the private `digest` module.

mod digest;
mod error;
mod format;
mod hot;
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
