//! The arena allocator against a model: disjoint aligned blocks, exact accounting, the
//! `max` bound, compaction above `min`, and blocking at `max`.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use varve_arena::{Arena, ArenaConfig, Block, CHUNK_BYTES, Error, PageClass};

const PAGES_LARGE: usize = 64;

fn arena(min_chunks: u64, max_chunks: u64) -> Arena {
    Arena::new(
        ArenaConfig::with_limits(min_chunks * CHUNK_BYTES, max_chunks * CHUNK_BYTES).unwrap(),
    )
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(PageClass, usize),
    Free(usize),
    Compact,
}

fn op() -> impl Strategy<Value = Op> {
    let class = prop_oneof![Just(PageClass::Small), Just(PageClass::Large)];
    let pages = prop_oneof![8 => 1usize..=8, 1 => 9usize..=64, 1 => Just(512usize)];
    prop_oneof![
        6 => (class, pages).prop_map(|(c, p)| Op::Alloc(c, p.min(c.pages_per_chunk()))),
        5 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Compact),
    ]
}

/// Checks every live block against the others and the arena's stats against the model.
fn check(a: &Arena, live: &BTreeMap<u64, (Block, u8)>) {
    let cfg = a.config();
    let mut prev_end = 0usize;
    let mut ranges: Vec<(usize, usize)> = live
        .values()
        .map(|(b, _)| (b.as_ptr() as usize, b.len()))
        .collect();
    ranges.sort_unstable();
    for (start, len) in ranges {
        assert!(start >= prev_end, "blocks overlap");
        prev_end = start + len;
    }
    let st = a.stats();
    for class in PageClass::ALL {
        let blocks: Vec<&Block> = live
            .values()
            .map(|(b, _)| b)
            .filter(|b| b.class() == class)
            .collect();
        let used: u64 = blocks.iter().map(|b| b.len() as u64).sum();
        let c = st.class(class);
        assert_eq!(c.used_bytes, used, "{class:?} used");
        assert_eq!(c.blocks, blocks.len() as u64);
        assert_eq!(c.held_bytes, c.chunks * CHUNK_BYTES);
        assert_eq!(c.held_bytes, c.used_bytes + c.wasted_bytes + c.free_bytes);
        for b in blocks {
            assert_eq!(b.as_ptr() as usize % class.page_size(), 0, "alignment");
            assert_eq!(b.len(), b.pages() * class.page_size());
        }
    }
    assert_eq!(st.held_bytes, st.small.held_bytes + st.large.held_bytes);
    assert!(st.held_bytes <= cfg.max_bytes(), "above max");
    assert!(st.peak_held_bytes <= cfg.max_bytes(), "peak above max");
    assert!(st.peak_held_bytes >= st.held_bytes);
    assert_eq!(a.used_bytes(), st.small.used_bytes + st.large.used_bytes);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 64, max_shrink_time: 1000, ..ProptestConfig::default() })]

    #[test]
    fn model(ops in proptest::collection::vec(op(), 1..200), min_chunks in 0u64..3) {
        let max_chunks = 6;
        let a = arena(min_chunks, max_chunks);
        let mut live: BTreeMap<u64, (Block, u8)> = BTreeMap::new();
        let mut next = 0u64;
        for op in ops {
            match op {
                Op::Alloc(class, pages) => match a.try_alloc(class, pages) {
                    Ok(mut b) => {
                        let tag = (next % 251) as u8;
                        b.fill(tag);
                        live.insert(next, (b, tag));
                        next += 1;
                    }
                    Err(Error::Exhausted { .. }) => {
                        // Only when no chunk can be mapped and none has room.
                        let st = a.stats();
                        prop_assert_eq!(st.held_bytes, max_chunks * CHUNK_BYTES);
                        prop_assert!(st.class(class).free_bytes < (pages * class.page_size()) as u64);
                    }
                    Err(e) => panic!("{e}"),
                },
                Op::Free(i) => {
                    if !live.is_empty() {
                        let k = *live.keys().nth(i % live.len()).unwrap();
                        let (b, tag) = live.remove(&k).unwrap();
                        prop_assert!(b.iter().all(|&x| x == tag), "block bytes changed under us");
                        drop(b);
                    }
                }
                Op::Compact => {
                    let before = a.stats();
                    let n = a.compact();
                    let after = a.stats();
                    prop_assert_eq!(after.held_bytes + n * CHUNK_BYTES, before.held_bytes);
                    prop_assert_eq!(after.chunks_released, before.chunks_released + n);
                }
            }
            check(&a, &live);
        }
        for (_, (b, tag)) in std::mem::take(&mut live) {
            prop_assert!(b.iter().all(|&x| x == tag));
        }
        a.compact();
        let st = a.stats();
        prop_assert_eq!(st.small.used_bytes + st.large.used_bytes, 0);
        prop_assert_eq!(st.small.wasted_bytes + st.large.wasted_bytes, 0);
        prop_assert!(st.held_bytes <= min_chunks * CHUNK_BYTES, "held {} above min", st.held_bytes);
    }
}

#[test]
fn accounts_waste_behind_the_bump_pointer_and_retired_tails() {
    let a = arena(4, 4);
    let blocks: Vec<Block> = (0..4)
        .map(|_| a.try_alloc(PageClass::Large, 1).unwrap())
        .collect();
    let mut it = blocks.into_iter();
    let (b0, b1, b2, b3) = (
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
        it.next().unwrap(),
    );
    assert_eq!(
        b1.as_ptr() as usize - b0.as_ptr() as usize,
        4096,
        "bump allocation is contiguous"
    );
    drop((b0, b1));
    let st = a.stats().large;
    assert_eq!(
        (st.chunks, st.used_bytes, st.wasted_bytes, st.free_bytes),
        (1, 2 * 4096, 2 * 4096, 60 * 4096)
    );
    // 60 pages left; a 61-page request retires the chunk: its 60-page tail is wasted.
    let big = a.try_alloc(PageClass::Large, 61).unwrap();
    let st = a.stats().large;
    assert_eq!(st.chunks, 2);
    assert_eq!(st.wasted_bytes, (2 + 60) * 4096);
    assert_eq!(st.free_bytes, 3 * 4096);
    // Freeing the rest of the first chunk makes it idle and reusable: no waste left there.
    drop((b2, b3));
    let st = a.stats().large;
    assert_eq!(
        (st.wasted_bytes, st.free_bytes),
        (0, CHUNK_BYTES + 3 * 4096)
    );
    drop(big);
    let st = a.stats();
    assert_eq!(
        (st.large.chunks, st.large.free_bytes, st.chunks_released),
        (2, 2 * CHUNK_BYTES, 0)
    );
    // The small class is separate: its pages never come from a large chunk.
    let s = a.try_alloc(PageClass::Small, 3).unwrap();
    assert_eq!((s.len(), s.as_ptr() as usize % 512), (1536, 0));
    assert_eq!(a.stats().small.chunks, 1);
    assert_eq!(a.stats().small.wasted_bytes, 0);
}

#[test]
fn emptied_chunks_go_back_to_the_os_above_min_one_at_a_time() {
    let a = arena(1, 8);
    let full: Vec<Block> = (0..4)
        .map(|_| a.try_alloc(PageClass::Large, PAGES_LARGE).unwrap())
        .collect();
    assert_eq!(a.stats().held_bytes, 4 * CHUNK_BYTES);
    let mut held = 4;
    for b in full {
        drop(b);
        held = (held - 1).max(1);
        assert_eq!(
            a.stats().held_bytes,
            held * CHUNK_BYTES,
            "one chunk per free, down to min"
        );
    }
    assert_eq!(a.stats().chunks_released, 3);
    // Below min the empty chunk is kept and reused without mapping.
    let b = a.try_alloc(PageClass::Large, 2).unwrap();
    assert_eq!(
        (a.stats().held_bytes, a.stats().peak_held_bytes),
        (CHUNK_BYTES, 4 * CHUNK_BYTES)
    );
    drop(b);
}

#[test]
fn idle_chunks_above_min_are_compacted_or_given_to_the_other_class() {
    let a = arena(2, 4);
    let s: Vec<Block> = (0..2)
        .map(|_| a.try_alloc(PageClass::Small, 512).unwrap())
        .collect();
    drop(s); // held 2 = min: both kept, one current and one idle
    assert_eq!(
        (a.stats().small.chunks, a.stats().small.free_bytes),
        (2, 2 * CHUNK_BYTES)
    );
    assert_eq!(a.compact(), 0, "at min, idle chunks stay");
    let l: Vec<Block> = (0..2)
        .map(|_| a.try_alloc(PageClass::Large, 64).unwrap())
        .collect();
    assert_eq!(a.stats().held_bytes, 4 * CHUNK_BYTES);
    // At max, the small class's idle chunk is unmapped to make room for a large one.
    let extra = a.try_alloc(PageClass::Large, 64).unwrap();
    assert_eq!((a.stats().small.chunks, a.stats().large.chunks), (1, 3));
    assert_eq!(a.stats().chunks_released, 1);
    // Nothing idle now (the small class keeps its emptied current chunk).
    assert_eq!(a.compact(), 0);
    drop(extra); // above min: this emptied chunk goes back at once
    assert_eq!(a.stats().held_bytes, 3 * CHUNK_BYTES);
    drop(l); // one chunk per free, down to min
    assert_eq!(a.stats().held_bytes, 2 * CHUNK_BYTES);
    assert_eq!(a.compact(), 0, "nothing above min left to return");
}

#[test]
fn an_empty_current_chunk_of_one_class_gives_way_to_the_other_at_max() {
    // min = max = one chunk: the emptied small chunk stays mapped as its class's current
    // chunk, and must still give way to a large allocation.
    let a = arena(1, 1);
    drop(a.try_alloc(PageClass::Small, 8).unwrap());
    assert_eq!(
        (a.stats().small.chunks, a.stats().held_bytes),
        (1, CHUNK_BYTES)
    );
    let l = a.try_alloc(PageClass::Large, 4).unwrap();
    assert_eq!((a.stats().small.chunks, a.stats().large.chunks), (0, 1));
    assert_eq!(a.stats().chunks_released, 1);
    // A current chunk that still holds a block is not taken: the small class waits.
    match a.try_alloc(PageClass::Small, 1) {
        Err(Error::Exhausted {
            class: PageClass::Small,
            pages: 1,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(a.stats().large.chunks, 1);
    drop(l);
    // Now empty, the large chunk gives way in turn.
    let s = a.try_alloc(PageClass::Small, 1).unwrap();
    assert_eq!((a.stats().small.chunks, a.stats().large.chunks), (1, 0));
    drop(s);
}

#[test]
fn compact_returns_idle_chunks_above_min() {
    let a = arena(2, 8);
    let s: Vec<Block> = (0..3)
        .map(|_| a.try_alloc(PageClass::Small, 512).unwrap())
        .collect();
    let l: Vec<Block> = (0..3)
        .map(|_| a.try_alloc(PageClass::Large, 64).unwrap())
        .collect();
    drop(l); // large chunks emptied above min: each released on its free
    let held = a.stats().held_bytes;
    assert_eq!(
        held,
        3 * CHUNK_BYTES,
        "3 small held, the large ones returned"
    );
    drop(s);
    // Small chunks: one released on its free (3 > min), then held = min keeps the rest.
    assert_eq!(a.stats().held_bytes, 2 * CHUNK_BYTES);
    // Grow the large class without any free: the small idle chunk is above min now.
    let l: Vec<Block> = (0..2)
        .map(|_| a.try_alloc(PageClass::Large, 64).unwrap())
        .collect();
    let st = a.stats();
    assert_eq!(st.held_bytes, 4 * CHUNK_BYTES);
    assert_eq!(
        st.small.free_bytes,
        2 * CHUNK_BYTES,
        "one idle + one empty current"
    );
    let n = a.compact();
    assert_eq!(n, 1, "only the idle chunk; the current one is not idle");
    assert_eq!(a.stats().held_bytes, (4 - n) * CHUNK_BYTES);
    drop(l);
}

#[test]
fn try_alloc_fails_at_once_and_alloc_times_out_at_max() {
    let a = arena(0, 1);
    let full = a.try_alloc(PageClass::Large, PAGES_LARGE).unwrap();
    assert!(matches!(
        a.try_alloc(PageClass::Large, 1),
        Err(Error::Exhausted { pages: 1, .. })
    ));
    assert!(matches!(
        a.try_alloc(PageClass::Small, 1),
        Err(Error::Exhausted { .. })
    ));
    assert_eq!(a.stats().waits, 0);
    let r = a.alloc(PageClass::Small, 2, Duration::from_millis(30));
    assert!(matches!(
        r,
        Err(Error::Exhausted {
            class: PageClass::Small,
            pages: 2
        })
    ));
    assert_eq!((a.stats().waits, a.stats().waiting), (1, 0));
    assert!(a.stats().held_bytes <= CHUNK_BYTES);
    drop(full);
    assert_eq!(a.stats().wakeups, 0, "nobody waits: the free wakes nobody");
    let b = a
        .alloc(PageClass::Small, 2, Duration::from_millis(30))
        .unwrap();
    assert_eq!(b.len(), 1024);
    assert_eq!(a.stats().waits, 1, "no wait when there is room");
}

#[test]
fn blocked_alloc_wakes_when_another_thread_frees() {
    let a = arena(0, 1);
    let full = a.try_alloc(PageClass::Large, PAGES_LARGE).unwrap();
    let (tx, rx) = mpsc::channel();
    let a2 = a.clone();
    let t = std::thread::spawn(move || {
        let r = a2
            .alloc(PageClass::Large, 8, Duration::from_secs(4))
            .map(|b| b.len());
        tx.send(r).unwrap();
    });
    // Wait (bounded) until the thread is really blocked at max.
    let deadline = Instant::now() + Duration::from_secs(4);
    while a.stats().waiting == 0 {
        assert!(Instant::now() < deadline, "allocation never blocked");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        rx.try_recv().is_err(),
        "must not return while the arena is full"
    );
    drop(full);
    let got = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("blocked alloc never woke");
    assert_eq!(got.unwrap(), 8 * 4096);
    t.join().unwrap();
    let st = a.stats();
    assert_eq!((st.waits, st.waiting, st.wakeups), (1, 0, 1));
    assert!(a.stats().peak_held_bytes <= CHUNK_BYTES);
}

#[test]
fn concurrent_threads_never_share_bytes() {
    let a = arena(1, 16);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut held: Vec<(Block, u8)> = Vec::new();
                for i in 0..400u32 {
                    let class = if i % 3 == 0 {
                        PageClass::Small
                    } else {
                        PageClass::Large
                    };
                    let pages = 1 + (i as usize * 7 + t as usize) % 9;
                    let tag = (i as u8).wrapping_mul(31) ^ t;
                    let mut b = a.alloc(class, pages, Duration::from_secs(4)).unwrap();
                    b.fill(tag);
                    held.push((b, tag));
                    if held.len() > 6 {
                        let (b, tag) = held.remove((i as usize) % held.len());
                        assert!(b.iter().all(|&x| x == tag));
                    }
                }
                for (b, tag) in held {
                    assert!(b.iter().all(|&x| x == tag));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let st = a.stats();
    assert_eq!(st.small.used_bytes + st.large.used_bytes, 0);
    assert!(st.peak_held_bytes <= 16 * CHUNK_BYTES);
    assert!(st.held_bytes <= CHUNK_BYTES);
}

#[test]
fn blocks_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Block>();
    check::<Arena>();
}
