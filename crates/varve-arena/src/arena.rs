//! The arena: 256 KiB bump chunks in two page classes under min/max watermarks.
//!
//! Each class (512 B and 4 KiB pages) has its own pool of chunks. A pool bumps blocks off
//! its *current* chunk; when a request does not fit, the current chunk is retired (its
//! unused tail waits until the chunk empties) and an empty chunk, or a freshly mapped one,
//! becomes current. A bump allocator cannot reuse a freed page while its neighbours live:
//! a chunk comes back only when *all* of its blocks are freed. The bytes stuck that way
//! are reported as `wasted` in [`ClassStats`], so the footprint is explained exactly:
//! `held = used + wasted + free`.
//!
//! Watermarks: the arena never holds more than `max` bytes from the OS. Above `min`, a
//! chunk that becomes entirely free is unmapped at once (one chunk per free; [`Arena::compact`]
//! unmaps every idle chunk above `min`); at or below `min`, empty chunks are kept for reuse.
//! At `max`, [`Arena::alloc`] waits for a free (up to a timeout) and [`Arena::try_alloc`]
//! fails at once with [`Error::Exhausted`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::hash::KeyBuild;
use crate::raw::{CHUNK_SIZE, RawBlock, RawChunk};

/// Bytes in one chunk, the unit the arena maps from and returns to the OS.
pub const CHUNK_BYTES: u64 = CHUNK_SIZE as u64;

/// The two page sizes the arena serves, matching the sector and page sizes of reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PageClass {
    /// 512-byte pages (one sector).
    Small,
    /// 4096-byte pages (one memory page; the unit of O_DIRECT reads on most filesystems).
    Large,
}

impl PageClass {
    /// Both classes, in index order.
    pub const ALL: [PageClass; 2] = [PageClass::Small, PageClass::Large];

    /// Bytes per page of this class; blocks of the class are aligned to it.
    pub const fn page_size(self) -> usize {
        match self {
            PageClass::Small => 512,
            PageClass::Large => 4096,
        }
    }

    /// Pages of this class in one chunk: the largest block the class can serve.
    pub const fn pages_per_chunk(self) -> usize {
        CHUNK_SIZE / self.page_size()
    }

    fn index(self) -> usize {
        match self {
            PageClass::Small => 0,
            PageClass::Large => 1,
        }
    }
}

/// The arena's memory budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArenaConfig {
    min_bytes: u64,
    max_bytes: u64,
}

impl ArenaConfig {
    /// A budget of absolute byte counts. `max` is rounded down to whole chunks and must
    /// hold at least one; `min` must not exceed `max`.
    pub fn with_limits(min_bytes: u64, max_bytes: u64) -> Result<Self> {
        let max_bytes = max_bytes - max_bytes % CHUNK_BYTES;
        if max_bytes == 0 {
            return Err(Error::InvalidOptions {
                what: "max_bytes",
                why: "must hold at least one chunk (CHUNK_BYTES)",
            });
        }
        if min_bytes > max_bytes {
            return Err(Error::InvalidOptions {
                what: "min_bytes",
                why: "must not exceed max_bytes (rounded down to whole chunks)",
            });
        }
        Ok(ArenaConfig {
            min_bytes,
            max_bytes,
        })
    }

    /// The default budget: `min` 30% and `max` 50% of physical memory (`/proc/meminfo`).
    pub fn from_physical_memory() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/meminfo")?;
        let total = parse_mem_total(&text).ok_or(Error::InvalidOptions {
            what: "from_physical_memory",
            why: "no MemTotal line in /proc/meminfo",
        })?;
        Self::with_limits(total / 10 * 3, total / 2)
    }

    /// The low watermark in bytes.
    pub fn min_bytes(&self) -> u64 {
        self.min_bytes
    }

    /// The high watermark in bytes (a whole number of chunks).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

/// Physical memory in bytes from the text of `/proc/meminfo` (`MemTotal: N kB`).
fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Accounting of one page class at one moment. Always `held = used + wasted + free`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Chunks mapped for this class.
    pub chunks: u64,
    /// Live blocks.
    pub blocks: u64,
    /// Bytes mapped from the OS for this class (`chunks * 256 KiB`).
    pub held_bytes: u64,
    /// Bytes in live blocks.
    pub used_bytes: u64,
    /// Bytes that cannot be handed out until their chunk empties: freed pages behind a
    /// bump pointer, and the unused tail of chunks retired from bumping.
    pub wasted_bytes: u64,
    /// Bytes that can be handed out now: the current chunk's tail and idle empty chunks.
    pub free_bytes: u64,
}

/// Accounting of the whole arena at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArenaStats {
    /// The 512-byte class.
    pub small: ClassStats,
    /// The 4096-byte class.
    pub large: ClassStats,
    /// Bytes mapped from the OS, both classes; never above `max_bytes`.
    pub held_bytes: u64,
    /// The most bytes ever held at once.
    pub peak_held_bytes: u64,
    /// Chunks returned to the OS so far.
    pub chunks_released: u64,
    /// Allocations that had to wait at `max` (blocking `alloc` only).
    pub waits: u64,
    /// Threads waiting in `alloc` right now.
    pub waiting: u64,
    /// Frees that woke waiting allocations (a free with nobody waiting wakes nobody).
    pub wakeups: u64,
    /// The low watermark.
    pub min_bytes: u64,
    /// The high watermark.
    pub max_bytes: u64,
}

impl ArenaStats {
    /// Stats of one class.
    pub fn class(&self, class: PageClass) -> &ClassStats {
        match class {
            PageClass::Small => &self.small,
            PageClass::Large => &self.large,
        }
    }
}

/// A chunk and the number of its pages in live blocks.
struct Slot {
    raw: Arc<RawChunk>,
    live_pages: usize,
}

/// The chunks of one page class.
#[derive(Default)]
struct Pool {
    /// Every mapped chunk of the class, by address.
    chunks: HashMap<usize, Slot, KeyBuild>,
    /// The chunk new blocks are bumped from.
    current: Option<usize>,
    /// Empty chunks (bump pointer reset) kept for reuse at or below `min`.
    idle: Vec<usize>,
    live_pages: u64,
    live_blocks: u64,
}

struct State {
    pools: [Pool; 2],
    held_chunks: u64,
    peak_chunks: u64,
    released: u64,
    waits: u64,
    waiting: u64,
    wakeups: u64,
}

struct Inner {
    state: Mutex<State>,
    freed: Condvar,
    min_chunks: u64,
    max_chunks: u64,
    config: ArenaConfig,
}

/// A thread-safe arena of page-aligned blocks. Cloning shares the same arena.
#[derive(Clone)]
pub struct Arena {
    inner: Arc<Inner>,
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Arena")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Arena {
    /// An empty arena with the given budget; maps nothing until the first allocation.
    pub fn new(config: ArenaConfig) -> Self {
        Arena {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    pools: [Pool::default(), Pool::default()],
                    held_chunks: 0,
                    peak_chunks: 0,
                    released: 0,
                    waits: 0,
                    waiting: 0,
                    wakeups: 0,
                }),
                freed: Condvar::new(),
                min_chunks: config.min_bytes.div_ceil(CHUNK_BYTES),
                max_chunks: config.max_bytes / CHUNK_BYTES,
                config,
            }),
        }
    }

    /// The budget this arena was made with.
    pub fn config(&self) -> ArenaConfig {
        self.inner.config
    }

    /// A block of `pages` pages of `class`, failing at once with [`Error::Exhausted`] if
    /// that would take the arena above `max`.
    pub fn try_alloc(&self, class: PageClass, pages: usize) -> Result<Block> {
        check_request(class, pages)?;
        let mut st = self.inner.lock();
        self.inner
            .alloc_locked(&mut st, class, pages)?
            .ok_or(Error::Exhausted { class, pages })
    }

    /// A block of `pages` pages of `class`; at `max`, waits up to `timeout` for other
    /// blocks to be freed, then fails with [`Error::Exhausted`].
    pub fn alloc(&self, class: PageClass, pages: usize, timeout: Duration) -> Result<Block> {
        check_request(class, pages)?;
        let mut st = self.inner.lock();
        if let Some(block) = self.inner.alloc_locked(&mut st, class, pages)? {
            return Ok(block);
        }
        st.waits += 1;
        st.waiting += 1;
        let mut got: Result<Option<Block>> = Ok(None);
        let (mut st, _) = self
            .inner
            .freed
            .wait_timeout_while(st, timeout, |st| {
                got = self.inner.alloc_locked(st, class, pages);
                matches!(got, Ok(None))
            })
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.waiting -= 1;
        got?.ok_or(Error::Exhausted { class, pages })
    }

    /// Returns every idle empty chunk to the OS while the arena holds more than `min`;
    /// returns how many chunks were released.
    pub fn compact(&self) -> u64 {
        let mut st = self.inner.lock();
        let mut n = 0;
        while st.held_chunks > self.inner.min_chunks {
            let Some((pool, addr)) = st
                .pools
                .iter()
                .enumerate()
                .find_map(|(i, p)| p.idle.last().map(|&a| (i, a)))
            else {
                break;
            };
            st.pools[pool].idle.pop();
            release(&mut st, pool, addr);
            n += 1;
        }
        n
    }

    /// Bytes in live blocks of both classes (cheap: no walk over chunks).
    pub fn used_bytes(&self) -> u64 {
        let st = self.inner.lock();
        st.pools
            .iter()
            .zip(PageClass::ALL)
            .map(|(p, c)| p.live_pages * c.page_size() as u64)
            .sum()
    }

    /// A consistent snapshot of the arena's accounting.
    pub fn stats(&self) -> ArenaStats {
        let st = self.inner.lock();
        let class_stats = |class: PageClass| {
            let pool = &st.pools[class.index()];
            let ps = class.page_size() as u64;
            let chunks = pool.chunks.len() as u64;
            let held = chunks * CHUNK_BYTES;
            let used = pool.live_pages * ps;
            let current_tail = pool
                .current
                .and_then(|a| pool.chunks.get(&a))
                .map_or(0, |s| (CHUNK_SIZE - s.raw.bumped()) as u64);
            let free = pool.idle.len() as u64 * CHUNK_BYTES + current_tail;
            ClassStats {
                chunks,
                blocks: pool.live_blocks,
                held_bytes: held,
                used_bytes: used,
                wasted_bytes: held - used - free,
                free_bytes: free,
            }
        };
        ArenaStats {
            small: class_stats(PageClass::Small),
            large: class_stats(PageClass::Large),
            held_bytes: st.held_chunks * CHUNK_BYTES,
            peak_held_bytes: st.peak_chunks * CHUNK_BYTES,
            chunks_released: st.released,
            waits: st.waits,
            waiting: st.waiting,
            wakeups: st.wakeups,
            min_bytes: self.inner.config.min_bytes,
            max_bytes: self.inner.config.max_bytes,
        }
    }
}

fn check_request(class: PageClass, pages: usize) -> Result<()> {
    if pages == 0 || pages > class.pages_per_chunk() {
        return Err(Error::InvalidBlockSize { class, pages });
    }
    Ok(())
}

/// The pool's current chunk, if it holds no live block.
fn empty_current(pool: &Pool) -> Option<usize> {
    pool.current
        .filter(|a| pool.chunks.get(a).is_some_and(|slot| slot.live_pages == 0))
}

/// Unmaps chunk `addr` of pool `pool` (already removed from `current`/`idle` lists).
fn release(st: &mut State, pool: usize, addr: usize) {
    if st.pools[pool].chunks.remove(&addr).is_some() {
        st.held_chunks -= 1;
        st.released += 1;
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the accounting half-updated in a way
        // that matters more than refusing service would; keep serving.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One allocation attempt under the lock; `Ok(None)` means "at max, try later".
    fn alloc_locked(
        self: &Arc<Self>,
        st: &mut State,
        class: PageClass,
        pages: usize,
    ) -> Result<Option<Block>> {
        let ci = class.index();
        let len = pages * class.page_size();
        loop {
            let pool = &mut st.pools[ci];
            if let Some(slot) = pool.current.and_then(|a| pool.chunks.get_mut(&a))
                && let Some(raw) = slot.raw.carve(len)
            {
                slot.live_pages += pages;
                pool.live_pages += pages as u64;
                pool.live_blocks += 1;
                return Ok(Some(Block {
                    raw: Some(raw),
                    class,
                    arena: Arc::clone(self),
                }));
            }
            // The current chunk (if any) is full for this request: retire it. Its tail is
            // wasted until all of its blocks are freed.
            if let Some(addr) = pool.idle.pop() {
                pool.current = Some(addr);
                continue;
            }
            if st.held_chunks >= self.max_chunks {
                // Make room by unmapping an idle chunk of the other class, if it has one, or
                // its current chunk if that holds no block (an emptied current chunk stays
                // mapped at or below `min`, and would otherwise keep this class out).
                let other = 1 - ci;
                if let Some(addr) = st.pools[other].idle.pop() {
                    release(st, other, addr);
                } else if let Some(addr) = empty_current(&st.pools[other]) {
                    st.pools[other].current = None;
                    release(st, other, addr);
                } else {
                    return Ok(None);
                }
            }
            let raw = RawChunk::map()?;
            let addr = raw.addr();
            let pool = &mut st.pools[ci];
            pool.chunks.insert(addr, Slot { raw, live_pages: 0 });
            pool.current = Some(addr);
            st.held_chunks += 1;
            st.peak_chunks = st.peak_chunks.max(st.held_chunks);
        }
    }

    /// Returns the pages of a dropped block (its `RawBlock` is already gone).
    fn free(&self, class: PageClass, addr: usize, pages: usize) {
        let ci = class.index();
        let mut st = self.lock();
        let pool = &mut st.pools[ci];
        pool.live_pages -= pages as u64;
        pool.live_blocks -= 1;
        let Some(slot) = pool.chunks.get_mut(&addr) else {
            return;
        };
        slot.live_pages -= pages;
        let emptied = slot.live_pages == 0 && RawChunk::reset(&mut slot.raw);
        if emptied && pool.current != Some(addr) {
            pool.idle.push(addr);
        }
        // Above min, return one entirely free chunk to the OS: this one if it emptied,
        // else an idle one of either class.
        if st.held_chunks > self.min_chunks {
            if emptied && st.pools[ci].current == Some(addr) {
                st.pools[ci].current = None;
                release(&mut st, ci, addr);
            } else if let Some((p, a)) = [ci, 1 - ci]
                .into_iter()
                .find_map(|p| st.pools[p].idle.pop().map(|a| (p, a)))
            {
                release(&mut st, p, a);
            }
        }
        if st.waiting > 0 {
            st.wakeups += 1;
            self.freed.notify_all();
        }
    }
}

/// Page-aligned bytes from the arena; dropping it returns its pages.
///
/// A `Block` is `Send` and `Sync` and derefs to its bytes (`pages * page_size` of them).
/// A new block's bytes are initialised but not necessarily zero (a reused page keeps
/// whatever it held before).
pub struct Block {
    /// `Some` until `drop` hands the range back.
    raw: Option<RawBlock>,
    class: PageClass,
    arena: Arc<Inner>,
}

impl Block {
    /// The page class the block was allocated from.
    pub fn class(&self) -> PageClass {
        self.class
    }

    /// Number of pages in the block.
    pub fn pages(&self) -> usize {
        self.len() / self.class.page_size()
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block")
            .field("class", &self.class)
            .field("len", &self.len())
            .finish()
    }
}

impl std::ops::Deref for Block {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.raw.as_ref().map_or(&[], RawBlock::bytes)
    }
}

impl std::ops::DerefMut for Block {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.raw.as_mut().map_or(&mut [], RawBlock::bytes_mut)
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        if let Some(raw) = self.raw.take() {
            let addr = raw.chunk().addr();
            let pages = raw.len() / self.class.page_size();
            // Drop the range (and its hold on the chunk) before the accounting, so an
            // emptied chunk can be reset or unmapped under the lock.
            drop(raw);
            self.arena.free(self.class, addr, pages);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_classes() {
        assert_eq!(PageClass::Small.page_size(), 512);
        assert_eq!(PageClass::Large.page_size(), 4096);
        assert_eq!(PageClass::Small.pages_per_chunk(), 512);
        assert_eq!(PageClass::Large.pages_per_chunk(), 64);
        assert_eq!(PageClass::ALL.map(PageClass::index), [0, 1]);
    }

    #[test]
    fn parses_mem_total() {
        let text = "MemFree: 5 kB\nMemTotal:       16318064 kB\nOther: 1 kB\n";
        assert_eq!(parse_mem_total(text), Some(16318064 * 1024));
        assert_eq!(parse_mem_total("MemTotal: 77\n"), Some(77));
        assert_eq!(parse_mem_total("MemTotal: 77 MB\n"), None);
        assert_eq!(parse_mem_total("MemTotal: x kB\n"), None);
        assert_eq!(parse_mem_total("MemFree: 3 kB\n"), None);
        assert_eq!(parse_mem_total(&format!("MemTotal: {} kB", u64::MAX)), None);
    }

    #[test]
    fn physical_memory_defaults_are_30_and_50_percent() {
        let c = ArenaConfig::from_physical_memory().unwrap();
        let text = std::fs::read_to_string("/proc/meminfo").unwrap();
        let total = parse_mem_total(&text).unwrap();
        assert_eq!(c.min_bytes(), total / 10 * 3);
        assert_eq!(c.max_bytes(), total / 2 - total / 2 % CHUNK_BYTES);
    }

    #[test]
    fn config_validation() {
        let what = |r: Result<ArenaConfig>| match r {
            Err(Error::InvalidOptions { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            what(ArenaConfig::with_limits(0, CHUNK_BYTES - 1)),
            "max_bytes"
        );
        assert_eq!(
            what(ArenaConfig::with_limits(CHUNK_BYTES + 1, CHUNK_BYTES)),
            "min_bytes"
        );
        // max is rounded down to whole chunks before min is compared with it.
        assert_eq!(
            what(ArenaConfig::with_limits(CHUNK_BYTES + 1, CHUNK_BYTES + 2)),
            "min_bytes"
        );
        let c = ArenaConfig::with_limits(CHUNK_BYTES, 2 * CHUNK_BYTES + 5).unwrap();
        assert_eq!(
            (c.min_bytes(), c.max_bytes()),
            (CHUNK_BYTES, 2 * CHUNK_BYTES)
        );
        let c = ArenaConfig::with_limits(CHUNK_BYTES, CHUNK_BYTES).unwrap();
        assert_eq!(c.max_bytes(), CHUNK_BYTES);
    }

    #[test]
    fn rejects_bad_sizes() {
        let a = Arena::new(ArenaConfig::with_limits(0, CHUNK_BYTES).unwrap());
        for class in PageClass::ALL {
            assert!(matches!(
                a.try_alloc(class, 0),
                Err(Error::InvalidBlockSize { .. })
            ));
            let max = class.pages_per_chunk();
            assert!(matches!(
                a.try_alloc(class, max + 1),
                Err(Error::InvalidBlockSize { .. })
            ));
            let b = a.try_alloc(class, max).unwrap();
            assert_eq!((b.len(), b.pages(), b.class()), (CHUNK_SIZE, max, class));
        }
    }
}
