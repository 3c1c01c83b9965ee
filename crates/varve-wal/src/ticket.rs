//! Durability tickets: how an appender learns its LSN and waits for durability.
//!
//! The flusher completes a ticket with one store and, only if the owner is parked, one
//! unpark. The owner yields the CPU for up to
//! [`Options::wait_yield`](crate::Options::wait_yield), then registers its thread and
//! parks. It never busy-spins: a durable completion is at least one sync away, and
//! spinning took the CPU from the threads it waits for (`docs/wal-tuning.md`). Both sides
//! put a `SeqCst` fence between their store and their load, so either the owner sees the
//! completion or the flusher sees the registered thread (no lost wake-up).

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering, fence};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::Lsn;
use crate::error::{Error, Result};

const PENDING: u8 = 0;
const DONE: u8 = 1;
const FAILED: u8 = 2;

/// State shared by a [`Ticket`] and the flusher.
#[derive(Debug)]
pub(crate) struct TicketState {
    /// First LSN of the record(s); 0 until sequenced.
    first_lsn: AtomicU64,
    /// The segment (its first LSN) and byte offset of the first record's header, stored by
    /// the sequencer before `first_lsn` (whose release store publishes them).
    segment: AtomicU64,
    offset: AtomicU64,
    /// Number of records.
    records: u32,
    status: AtomicU8,
    /// Set when the owner calls [`Ticket::wait`]: the flusher counts the tickets of a
    /// group whose owners were waiting, to know how many writers will come back.
    waited: AtomicBool,
    waiter: OnceLock<Thread>,
    cause: OnceLock<Arc<io::Error>>,
}

impl TicketState {
    pub(crate) fn new(records: u32) -> Arc<Self> {
        Arc::new(TicketState {
            first_lsn: AtomicU64::new(0),
            segment: AtomicU64::new(0),
            offset: AtomicU64::new(0),
            records,
            status: AtomicU8::new(PENDING),
            waited: AtomicBool::new(false),
            waiter: OnceLock::new(),
            cause: OnceLock::new(),
        })
    }

    pub(crate) fn records(&self) -> u32 {
        self.records
    }

    /// The first LSN of the record(s) (0 until sequenced).
    pub(crate) fn lsn(&self) -> Lsn {
        self.first_lsn.load(Ordering::Acquire)
    }

    /// Whether the owner has called [`Ticket::wait`].
    pub(crate) fn waited(&self) -> bool {
        self.waited.load(Ordering::Relaxed)
    }

    /// Called by the sequencer when the first record gets its LSN and its place: the
    /// segment starting at LSN `segment`, at byte `offset` of that file.
    pub(crate) fn set_lsn(&self, lsn: Lsn, segment: Lsn, offset: u64) {
        self.segment.store(segment, Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
        self.first_lsn.store(lsn, Ordering::Release);
    }

    fn finish(&self, status: u8) {
        self.status.store(status, Ordering::Release);
        fence(Ordering::SeqCst);
        if let Some(t) = self.waiter.get() {
            t.unpark();
        }
    }

    /// Marks the records durable and wakes the owner.
    pub(crate) fn complete(&self) {
        self.finish(DONE);
    }

    /// Marks the records failed with `cause` and wakes the owner.
    pub(crate) fn fail(&self, cause: Arc<io::Error>) {
        let _ = self.cause.set(cause);
        self.finish(FAILED);
    }

    fn check(&self) -> Option<Result<Lsn>> {
        match self.status.load(Ordering::Acquire) {
            DONE => Some(Ok(self.first_lsn.load(Ordering::Acquire))),
            FAILED => Some(Err(Error::Poisoned(self.cause.get().map_or_else(
                || Arc::new(io::Error::other("WAL write failed")),
                Arc::clone,
            )))),
            _ => None,
        }
    }
}

/// Where a record lies in the log: its LSN, the segment holding it (named by the segment's
/// first LSN, as [`SegmentInfo::first_lsn`](crate::SegmentInfo::first_lsn)) and the byte
/// offset of its header in that segment's file. Valid until
/// [`Wal::truncate_before`](crate::Wal::truncate_before) removes the segment (a recycled
/// file then holds other records: check the LSN of what is read there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RecordLocation {
    /// The record's LSN.
    pub lsn: Lsn,
    /// The first LSN of the segment that holds it.
    pub segment: Lsn,
    /// Byte offset of the record's header in the segment file.
    pub offset: u64,
}

/// A claim on records handed to the WAL: their LSN, and a way to wait until they are
/// durable under the WAL's [`SyncMode`](crate::SyncMode).
#[derive(Debug)]
#[must_use = "a record is only known durable once its ticket's wait() returns Ok"]
pub struct Ticket {
    state: Arc<TicketState>,
    pub(crate) wait_yield: Duration,
}

/// Where a ticket's record was placed, readable by threads other than the ticket's owner
/// (from [`Ticket::placement`]): a thread that learns from
/// [`Wal::durable_lsn`](crate::Wal::durable_lsn) that the record is durable can then find
/// it without waiting for the owner to return from [`Ticket::wait_location`].
#[derive(Debug, Clone)]
pub struct Placement(Arc<TicketState>);

impl Placement {
    /// Where the (first) record is written: known once the log has given it its LSN and
    /// place in a segment, which happens before it is written (so always once the record
    /// is durable); `None` before that. The location says nothing about durability.
    pub fn location(&self) -> Option<RecordLocation> {
        match self.0.first_lsn.load(Ordering::Acquire) {
            0 => None,
            lsn => Some(RecordLocation {
                lsn,
                segment: self.0.segment.load(Ordering::Relaxed),
                offset: self.0.offset.load(Ordering::Relaxed),
            }),
        }
    }
}

impl Ticket {
    pub(crate) fn new(state: Arc<TicketState>, wait_yield: Duration) -> Self {
        Ticket { state, wait_yield }
    }

    /// A handle other threads can keep to learn where the record was placed (see
    /// [`Placement`]). It keeps the ticket's small shared state alive while it lives.
    pub fn placement(&self) -> Placement {
        Placement(Arc::clone(&self.state))
    }

    /// The LSN of the (first) record, once the flusher has sequenced it; `None` before.
    /// The records of a batch carry `lsn()..lsn() + records()`.
    pub fn lsn(&self) -> Option<Lsn> {
        match self.state.first_lsn.load(Ordering::Acquire) {
            0 => None,
            l => Some(l),
        }
    }

    /// How many records this ticket covers (1, or the batch length).
    pub fn records(&self) -> u32 {
        self.state.records
    }

    /// True once [`wait`](Self::wait) would return without blocking.
    pub fn is_done(&self) -> bool {
        self.state.status.load(Ordering::Acquire) != PENDING
    }

    /// Like [`wait`](Self::wait), but returns where the (first) record was written as well
    /// as its LSN: a reader of the segment files (through `Wal::segments`) can then fetch it
    /// by offset instead of scanning for it. The records of a batch follow it back to back.
    pub fn wait_location(self) -> Result<RecordLocation> {
        let state = Arc::clone(&self.state);
        let lsn = self.wait()?;
        Ok(RecordLocation {
            lsn,
            segment: state.segment.load(Ordering::Relaxed),
            offset: state.offset.load(Ordering::Relaxed),
        })
    }

    /// Blocks until the records are durable (per the `SyncMode`) and returns the LSN of the
    /// first one; `Error::Poisoned` if the write or sync of their group failed. Yields the
    /// CPU for up to [`Options::wait_yield`](crate::Options::wait_yield) before it parks.
    pub fn wait(self) -> Result<Lsn> {
        let s = &*self.state;
        s.waited.store(true, Ordering::Relaxed);
        if let Some(r) = s.check() {
            return r;
        }
        if !self.wait_yield.is_zero() {
            let start = Instant::now();
            while start.elapsed() < self.wait_yield {
                std::thread::yield_now();
                if let Some(r) = s.check() {
                    return r;
                }
            }
        }
        let _ = s.waiter.set(std::thread::current());
        fence(Ordering::SeqCst);
        loop {
            if let Some(r) = s.check() {
                return r;
            }
            std::thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_placement_reads_the_location_once_it_is_set_and_only_then() {
        let st = TicketState::new(1);
        let t = Ticket::new(Arc::clone(&st), Duration::ZERO);
        let p = t.placement();
        assert_eq!(p.location(), None);
        st.set_lsn(12, 7, 4096);
        let want = RecordLocation {
            lsn: 12,
            segment: 7,
            offset: 4096,
        };
        assert_eq!(p.location(), Some(want));
        assert_eq!(p.clone().location(), Some(want));
        st.complete();
        assert_eq!(t.wait_location().unwrap(), want);
        assert_eq!(p.location(), Some(want), "outlives the ticket");
    }

    #[test]
    fn wait_returns_after_completion_from_another_thread() {
        let st = TicketState::new(3);
        let t = Ticket::new(Arc::clone(&st), Duration::ZERO);
        assert_eq!((t.lsn(), t.records(), t.is_done()), (None, 3, false));
        let h = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            st.set_lsn(9, 1, 64);
            st.complete();
        });
        assert_eq!(t.wait().unwrap(), 9);
        h.join().unwrap();
    }

    /// Completes `st` after 30 ms from another thread, waits on it with `wait_yield`, and
    /// returns whether the waiter parked (registered its thread).
    fn parked_while_waiting(wait_yield: Duration) -> bool {
        let st = TicketState::new(1);
        let t = Ticket::new(Arc::clone(&st), wait_yield);
        let done = Arc::clone(&st);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            done.set_lsn(4, 1, 64);
            done.complete();
        });
        assert_eq!(t.wait().unwrap(), 4);
        h.join().unwrap();
        st.waiter.get().is_some()
    }

    #[test]
    fn a_waiter_yields_for_its_budget_before_it_parks() {
        // Completion comes well inside a 60 s budget: the waiter never parks.
        assert!(!parked_while_waiting(Duration::from_secs(60)));
        // A budget far shorter than the wait, or none: it parks and is woken.
        assert!(parked_while_waiting(Duration::from_micros(100)));
        assert!(parked_while_waiting(Duration::ZERO));
    }

    #[test]
    fn a_yielding_waiter_sees_failure() {
        let st = TicketState::new(1);
        let t = Ticket::new(Arc::clone(&st), Duration::from_secs(60));
        let done = Arc::clone(&st);
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            done.fail(Arc::new(io::Error::other("gone")));
        });
        assert!(matches!(t.wait(), Err(Error::Poisoned(_))));
        h.join().unwrap();
        assert!(st.waiter.get().is_none());
    }

    #[test]
    fn failure_is_reported_as_poisoned() {
        let st = TicketState::new(1);
        let t = Ticket::new(Arc::clone(&st), Duration::ZERO);
        st.fail(Arc::new(io::Error::other("disk on fire")));
        assert!(t.is_done());
        match t.wait() {
            Err(Error::Poisoned(c)) => assert!(c.to_string().contains("disk on fire")),
            other => panic!("{other:?}"),
        }
    }
}
