//! The state the [`Wal`](crate::Wal) handle, the flusher and readers share: the append
//! queue and its byte cap, the durable position, the segment list, the spares and the
//! buffer pool, with the waits and wake-ups between them.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering, fence};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use crossbeam_queue::SegQueue;

use crate::error::{Error, Result};
use crate::options::Options;
use crate::recovery::SegmentMeta;
use crate::storage::Storage;
use crate::ticket::TicketState;
use crate::{DurablePosition, Lsn, format};

/// The flusher's counters behind [`WalStats`](crate::WalStats).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) groups: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) zeros_written: AtomicU64,
    pub(crate) wakeups: AtomicU64,
}

/// One queued append: framed records (LSN and checksum not yet filled) and their ticket.
pub(crate) struct Entry {
    pub(crate) frames: Vec<u8>,
    pub(crate) ticket: Arc<TicketState>,
    /// The durable LSN when the entry was queued: a writer whose ticket the last group
    /// completed queues its next entry with at least that group's last LSN.
    pub(crate) seen: Lsn,
}

/// Buffers kept for reuse by appenders.
pub(crate) const POOL_MAX: usize = 1024;
/// Largest buffer worth keeping in the pool.
const POOL_MAX_CAPACITY: usize = 64 << 10;

/// State shared by the handle, the flusher and readers.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) opts: Options,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) queue: SegQueue<Entry>,
    pub(crate) queued_bytes: AtomicU64,
    pub(crate) flusher_sleeping: AtomicBool,
    pub(crate) flusher_thread: OnceLock<std::thread::Thread>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) poison: OnceLock<Arc<io::Error>>,
    pub(crate) durable_lsn: AtomicU64,
    /// Where the durable records end, published with `durable_lsn` (under this lock).
    pub(crate) position: Mutex<DurablePosition>,
    /// The flusher's counters ([`Wal::stats`](crate::Wal::stats)).
    pub(crate) stats: Counters,
    /// Longest payload a reader accepts before it checks a record's checksum: the larger
    /// of `max_record_size` and the longest record recovery found in the log.
    pub(crate) max_read_len: usize,
    pub(crate) segments: Mutex<Vec<SegmentMeta>>,
    /// Spare files for new segments to reuse, oldest first (see [`Options::recycle_segments`]).
    pub(crate) spares: Mutex<Vec<PathBuf>>,
    /// First LSN of the newest segment (readers check it without the lock).
    pub(crate) last_segment_first: AtomicU64,
    pub(crate) pool: SegQueue<Vec<u8>>,
    pub(crate) pool_len: AtomicUsize,
    pub(crate) space_lock: Mutex<()>,
    pub(crate) space_cv: Condvar,
    pub(crate) space_waiters: AtomicUsize,
    pub(crate) readers_lock: Mutex<()>,
    pub(crate) readers_cv: Condvar,
    pub(crate) reader_waiters: AtomicUsize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks cannot leave their data half-updated.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn poisoned(&self) -> Result<()> {
        match self.poison.get() {
            Some(c) => Err(Error::Poisoned(Arc::clone(c))),
            None => Ok(()),
        }
    }

    /// Reserves `n` queued bytes, blocking (or failing with backpressure) at the cap.
    pub(crate) fn reserve(&self, n: u64, block: bool) -> Result<()> {
        let cap = self.opts.max_queued_bytes;
        let try_once = || {
            let mut cur = self.queued_bytes.load(Ordering::SeqCst);
            loop {
                // A single entry larger than the cap is admitted when the queue is empty.
                if cur != 0 && cur + n > cap {
                    return false;
                }
                match self.queued_bytes.compare_exchange_weak(
                    cur,
                    cur + n,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return true,
                    Err(c) => cur = c,
                }
            }
        };
        if try_once() {
            return Ok(());
        }
        if !block {
            return Err(Error::Backpressure);
        }
        self.space_waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = lock(&self.space_lock);
        let r = loop {
            if let Err(e) = self.poisoned() {
                break Err(e);
            }
            if try_once() {
                break Ok(());
            }
            // No lost wake-up: `release` subtracts, then reads `space_waiters`; this thread
            // counted itself in before reading the queued bytes (all `SeqCst`), so either it
            // sees the space or `release` sees it and notifies under the lock. Poisoning
            // notifies too (`wake_all_waiters`).
            g = match self.space_cv.wait(g) {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
        };
        drop(g);
        self.space_waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Returns `n` queued bytes (written or failed) and wakes blocked appenders.
    pub(crate) fn release(&self, n: u64) {
        if n == 0 {
            return;
        }
        self.queued_bytes.fetch_sub(n, Ordering::SeqCst);
        if self.space_waiters.load(Ordering::SeqCst) != 0 {
            let _g = lock(&self.space_lock);
            self.space_cv.notify_all();
        }
    }

    /// Makes `pos` the durable position (and its LSN the durable LSN) and wakes tailing
    /// readers.
    pub(crate) fn publish(&self, pos: DurablePosition) {
        {
            let mut p = lock(&self.position);
            *p = pos;
            self.durable_lsn.store(pos.lsn, Ordering::SeqCst);
        }
        if self.reader_waiters.load(Ordering::SeqCst) != 0 {
            let _g = lock(&self.readers_lock);
            self.readers_cv.notify_all();
        }
    }

    pub(crate) fn wake_all_waiters(&self) {
        {
            let _g = lock(&self.space_lock);
            self.space_cv.notify_all();
        }
        let _g = lock(&self.readers_lock);
        self.readers_cv.notify_all();
    }

    /// Adds the segment the flusher starts; the previous one was sealed at `sealed_end`.
    pub(crate) fn add_segment(&self, meta: SegmentMeta, sealed_end: u64) {
        let first = meta.first_lsn;
        let mut segs = lock(&self.segments);
        if segs.last().is_some_and(|s| s.first_lsn == first) {
            // An empty segment replaced by a larger one of the same first LSN.
            segs.pop();
        } else if let Some(prev) = segs.last_mut() {
            prev.end = sealed_end;
        }
        segs.push(meta);
        self.last_segment_first.store(first, Ordering::SeqCst);
    }

    /// Notes in the sparse index of the segment starting at `seg_first` (the last one)
    /// where the records `(lsn, offset)` start.
    pub(crate) fn note_index(&self, seg_first: Lsn, notes: &[(Lsn, u64)]) {
        if notes.is_empty() {
            return;
        }
        if let Some(last) = lock(&self.segments)
            .last_mut()
            .filter(|s| s.first_lsn == seg_first)
        {
            for &(lsn, offset) in notes {
                last.index.note(lsn, offset);
            }
        }
    }

    /// Takes the newest spare for the flusher to reuse.
    pub(crate) fn take_spare(&self) -> Option<PathBuf> {
        lock(&self.spares).pop()
    }

    /// Takes a truncated segment out of the log: kept as a spare while there is room,
    /// deleted otherwise. The caller syncs the directory.
    pub(crate) fn retire(&self, seg: SegmentMeta) -> io::Result<()> {
        let mut spares = lock(&self.spares);
        if spares.len() < self.opts.recycle_segments {
            let to = self.dir.join(format::spare_file_name(seg.first_lsn));
            std::fs::rename(&seg.path, &to)?;
            spares.push(to);
        } else {
            std::fs::remove_file(&seg.path)?;
        }
        Ok(())
    }

    pub(crate) fn take_buffer(&self, size: usize) -> Vec<u8> {
        match self.pool.pop() {
            Some(mut v) => {
                self.pool_len.fetch_sub(1, Ordering::Relaxed);
                v.clear();
                v.reserve(size);
                v
            }
            None => Vec::with_capacity(size),
        }
    }

    /// Gives an appender's buffer back for reuse.
    pub(crate) fn recycle(&self, v: Vec<u8>) {
        if v.capacity() <= POOL_MAX_CAPACITY && self.pool_len.load(Ordering::Relaxed) < POOL_MAX {
            self.pool_len.fetch_add(1, Ordering::Relaxed);
            self.pool.push(v);
        }
    }

    pub(crate) fn wake_flusher(&self) {
        fence(Ordering::SeqCst);
        if self.flusher_sleeping.swap(false, Ordering::SeqCst)
            && let Some(t) = self.flusher_thread.get()
        {
            self.stats.wakeups.fetch_add(1, Ordering::Relaxed);
            t.unpark();
        }
    }
}
