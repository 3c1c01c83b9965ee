//! Chunks really go back to the OS: the process-wide mapped byte count follows the arena.
//! (Its own test binary with one test, so no other test maps chunks meanwhile.)
#![allow(clippy::unwrap_used)]

use varve_arena::{Arena, ArenaConfig, CHUNK_BYTES, PageClass, mapped_bytes};

#[test]
fn released_chunks_are_unmapped() {
    assert_eq!(mapped_bytes(), 0);
    let a = Arena::new(ArenaConfig::with_limits(CHUNK_BYTES, 4 * CHUNK_BYTES).unwrap());
    let blocks: Vec<_> = (0..3)
        .map(|_| a.try_alloc(PageClass::Large, 64).unwrap())
        .collect();
    assert_eq!(mapped_bytes(), 3 * CHUNK_BYTES);
    drop(blocks);
    assert_eq!(mapped_bytes(), CHUNK_BYTES, "down to min");
    assert_eq!(a.stats().held_bytes, mapped_bytes());
    drop(a);
    assert_eq!(mapped_bytes(), 0, "dropping the arena unmaps the rest");
}
