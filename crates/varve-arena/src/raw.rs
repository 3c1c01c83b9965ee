//! All of the crate's unsafe code: 256 KiB chunks mapped from the OS and the disjoint byte
//! ranges carved out of them.
//!
//! Soundness rests on two local facts, both enforced in this module alone:
//! - a chunk hands out ranges only by advancing its atomic bump pointer, so two live
//!   [`RawBlock`]s of one chunk never overlap;
//! - the bump pointer only moves back ([`RawChunk::reset`]) through `Arc::get_mut`, which
//!   succeeds only when no [`RawBlock`] (each holds an `Arc` of its chunk) is alive, and the
//!   mapping is only unmapped when the last `Arc` goes away.

use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

/// Bytes in one chunk: the unit the arena takes from and returns to the OS.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// Chunks mapped right now by every arena of the process.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// Bytes mapped from the OS right now by every arena of this process.
pub fn mapped_bytes() -> u64 {
    (MAPPED.load(Ordering::Relaxed) * CHUNK_SIZE) as u64
}

/// One 256 KiB anonymous mapping serving pages of a single size by bumping a pointer.
#[derive(Debug)]
pub(crate) struct RawChunk {
    /// Start of the mapping (page aligned, `CHUNK_SIZE` bytes, zero filled when mapped).
    ptr: NonNull<u8>,
    /// Bytes handed out so far; ranges below it belong to blocks (live or freed).
    bump: AtomicUsize,
}

// SAFETY: the chunk owns its mapping outright; the only shared mutable state is the atomic
// bump pointer, and the bytes are reached only through `RawBlock`s of disjoint ranges.
unsafe impl Send for RawChunk {}
// SAFETY: `&RawChunk` allows only `carve` (atomic) and reading the bump pointer; no byte of
// the mapping is reachable through a shared reference to the chunk itself.
unsafe impl Sync for RawChunk {}

impl RawChunk {
    /// Maps a fresh zero-filled chunk from the OS.
    pub(crate) fn map() -> std::io::Result<Arc<RawChunk>> {
        // SAFETY: an anonymous private mapping with a null hint aliases no existing memory;
        // on success it is `CHUNK_SIZE` readable, writable, zero-filled bytes, page aligned.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                CHUNK_SIZE,
                ProtFlags::READ.union(ProtFlags::WRITE),
                MapFlags::PRIVATE,
            )
        }?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, "mmap returned null")
        })?;
        MAPPED.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(RawChunk {
            ptr,
            bump: AtomicUsize::new(0),
        }))
    }

    /// Bytes handed out since the chunk was mapped or last reset.
    pub(crate) fn bumped(&self) -> usize {
        self.bump.load(Ordering::Acquire)
    }

    /// Carves `len` bytes (a multiple of `align`, itself a power of two dividing the page
    /// size) off the bump pointer, or `None` if the chunk has no room left.
    pub(crate) fn carve(self: &Arc<Self>, len: usize) -> Option<RawBlock> {
        let start = self
            .bump
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(len).filter(|&end| end <= CHUNK_SIZE)
            })
            .ok()?;
        Some(RawBlock {
            chunk: Arc::clone(self),
            start,
            len,
        })
    }

    /// Moves the bump pointer back to the start, if no block of this chunk is alive
    /// (`false` otherwise). Old bytes stay: a reused page is initialised but not zeroed.
    pub(crate) fn reset(this: &mut Arc<Self>) -> bool {
        match Arc::get_mut(this) {
            Some(chunk) => {
                *chunk.bump.get_mut() = 0;
                true
            }
            None => false,
        }
    }

    /// Address of the chunk's first byte (for identity and alignment checks).
    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Drop for RawChunk {
    fn drop(&mut self) {
        // SAFETY: `ptr` is the start of a live `CHUNK_SIZE` mapping made in `map`; `drop`
        // runs once, after the last `Arc` (so after every `RawBlock`) is gone.
        let res = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), CHUNK_SIZE) };
        MAPPED.fetch_sub(1, Ordering::Relaxed);
        // munmap of a mapping we own cannot fail short of a kernel bug; nothing to recover.
        debug_assert!(res.is_ok(), "munmap failed: {res:?}");
    }
}

/// An exclusively owned byte range of a chunk; keeps the chunk mapped while alive.
#[derive(Debug)]
pub(crate) struct RawBlock {
    chunk: Arc<RawChunk>,
    start: usize,
    len: usize,
}

impl RawBlock {
    /// The chunk this range was carved from.
    pub(crate) fn chunk(&self) -> &Arc<RawChunk> {
        &self.chunk
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes of the range.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `start + len <= CHUNK_SIZE` (checked in `carve`), the mapping is alive
        // while `self.chunk` is, every byte is initialised (zero-filled mapping), and no
        // other live `RawBlock` covers this range (module invariant), so no `&mut` aliases it.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.start), self.len) }
    }

    /// The bytes of the range, mutably.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference into the range.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.start), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carve_is_disjoint_and_reset_needs_no_live_block() {
        let mut c = RawChunk::map().unwrap();
        assert_eq!(c.addr() % 4096, 0);
        let mut a = c.carve(4096).unwrap();
        let b = c.carve(CHUNK_SIZE - 4096).unwrap();
        assert!(c.carve(1).is_none());
        assert_eq!(c.bumped(), CHUNK_SIZE);
        a.bytes_mut().fill(7);
        assert!(b.bytes().iter().all(|&x| x == 0));
        assert_eq!((a.len(), b.len()), (4096, CHUNK_SIZE - 4096));
        assert!(!RawChunk::reset(&mut c));
        drop((a, b));
        assert!(RawChunk::reset(&mut c));
        assert_eq!(c.bumped(), 0);
        let a = c.carve(512).unwrap();
        assert_eq!(a.bytes()[0], 7, "reuse keeps old bytes, initialised");
    }
}
