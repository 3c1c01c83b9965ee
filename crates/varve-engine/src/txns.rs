//! Read transactions of `events.mdb` kept between point reads.
//!
//! The environment is opened without thread-local reader slots (a thread may hold several
//! read transactions, and they may move between threads), so LMDB begins each read
//! transaction under its reader-table mutex. A point read (`get`, `with_event`) would pay
//! that lock on every call, and two threads reading at once would queue on it. Instead
//! each thread keeps the transaction of its last point read in a slot and reads through
//! it again while it is fresh enough.
//!
//! Fresh enough: a kept transaction records the checkpointed end it was begun after
//! (`KeptTxn::end`). Every position below that end was committed before it began, and an
//! event in `events.mdb` never changes afterwards, except that a deletion removes it; a
//! reader hides deleted events by the deletion map, which is published before the
//! checkpointer removes them. So a kept transaction answers any position below its end as
//! a new one would; a position at or past it is read with a new transaction, which the
//! slot then keeps.
//!
//! Pinned pages: an open read transaction keeps LMDB from reusing the pages later commits
//! free. After each commit the checkpointer drops every kept transaction not in use at
//! that moment ([`ReadTxns::drop_idle`]), so a thread that stops reading pins pages for at
//! most one checkpoint, and a busy one begins a new transaction once per checkpoint.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use heed::{RoTxn, WithoutTls};

/// Slots of kept transactions; threads are spread over them in the order they first read.
/// Two threads on one slot stay correct: the one that finds it busy begins its own
/// transaction.
const SLOTS: usize = 64;

static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SLOT: usize = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
}

/// A read transaction kept for the next point read of its thread.
pub(crate) struct KeptTxn {
    /// The transaction.
    pub(crate) txn: RoTxn<'static, WithoutTls>,
    /// The checkpointed end loaded before it began: every position below it is in its
    /// snapshot.
    pub(crate) end: u64,
}

/// The kept transactions of one store.
pub(crate) struct ReadTxns {
    slots: Box<[Mutex<Option<KeptTxn>>]>,
}

impl ReadTxns {
    pub(crate) fn new() -> ReadTxns {
        ReadTxns {
            slots: (0..SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// This thread's slot, or `None` if it is in use: by a read on this thread that is
    /// still running (a read from inside a read's callback) or by another thread mapped to
    /// the same slot. The slot stays locked while the guard lives, so its transaction is
    /// not dropped under the reader.
    pub(crate) fn slot(&self) -> Option<MutexGuard<'_, Option<KeptTxn>>> {
        let i = SLOT.with(|s| *s);
        match self.slots[i].try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    /// Drops every kept transaction that no read is using, so none keeps the pages the
    /// commit just made freed. A slot in use keeps its transaction until the next call.
    pub(crate) fn drop_idle(&self) {
        for s in &*self.slots {
            let kept = match s.try_lock() {
                Ok(mut g) => g.take(),
                Err(TryLockError::Poisoned(p)) => p.into_inner().take(),
                Err(TryLockError::WouldBlock) => None,
            };
            drop(kept);
        }
    }

    /// Kept transactions (for tests).
    #[cfg(test)]
    pub(crate) fn kept(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.lock().map(|g| g.is_some()).unwrap_or(false))
            .count()
    }
}

impl std::fmt::Debug for ReadTxns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadTxns").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{EventData, ExpectedVersion, Options, Varve};

    fn store() -> (tempfile::TempDir, Varve) {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = Options::default()
            .checkpoint_interval(Duration::from_secs(3600))
            .checkpoint_bytes(1 << 30)
            .max_tail_bytes(1 << 30);
        let db = Varve::open(dir.path(), opts).expect("open");
        (dir, db)
    }

    fn append(db: &Varve, n: u8) {
        for i in 0..n {
            db.append("s", ExpectedVersion::Any, &[EventData::new("t", &[i])])
                .expect("append");
        }
    }

    #[test]
    fn a_point_read_keeps_its_transaction_until_the_next_checkpoint() {
        let (_dir, db) = store();
        let core = db.core();
        append(&db, 3);
        db.checkpoint().expect("checkpoint");
        assert_eq!(core.txns().kept(), 0);
        assert!(db.get(1).expect("get").is_some());
        assert_eq!(core.txns().kept(), 1, "kept for the next read");
        assert!(db.get(2).expect("get").is_some());
        assert_eq!(core.txns().kept(), 1, "the same slot");
        append(&db, 1);
        db.checkpoint().expect("checkpoint");
        assert_eq!(core.txns().kept(), 0, "dropped after the commit");
        assert!(db.get(3).expect("get").is_some());
        // Reads not from events.mdb (the WAL tail) keep nothing.
        append(&db, 1);
        core.txns().drop_idle();
        assert!(db.get(4).expect("get").is_some());
        assert_eq!(core.txns().kept(), 0);
    }

    #[test]
    fn a_kept_transaction_serves_only_positions_below_its_end() {
        let (_dir, db) = store();
        let core = db.core();
        append(&db, 2);
        db.checkpoint().expect("checkpoint");
        // A transaction from when positions 0 and 1 were checkpointed...
        let old = core.begin_kept();
        assert_eq!(old.end, 2);
        append(&db, 2);
        db.checkpoint().expect("checkpoint");
        // ...put back in this thread's slot after the checkpoint dropped the kept ones.
        *core.txns().slot().expect("free slot") = Some(old);
        assert_eq!(db.get(1).expect("get").expect("event").payload.len(), 1);
        // Positions 2 and 3 are not in its snapshot: a new transaction reads them.
        for p in [2, 3] {
            let e = db.get(p).expect("get").expect("event");
            assert_eq!(e.position, p);
        }
        let slot = core.txns().slot().expect("free slot");
        assert_eq!(slot.as_ref().map(|k| k.end), Some(4), "the new one is kept");
    }

    #[test]
    fn a_read_inside_a_reads_callback_begins_its_own_transaction() {
        let (_dir, db) = store();
        append(&db, 3);
        db.checkpoint().expect("checkpoint");
        let inner = db
            .with_event(0, |_| db.get(2).expect("nested get").map(|e| e.position))
            .expect("with_event")
            .expect("event 0");
        assert_eq!(inner, Some(2));
        assert_eq!(db.core().txns().kept(), 1);
    }

    /// Many threads reading at once, each inside a read's callback while every other one
    /// is too, after each thread kept a transaction: more read transactions open at once
    /// than LMDB's default of 126 reader slots. (A thread that fails still counts itself
    /// in, so the others never wait for it past the deadline.)
    #[test]
    fn many_threads_reading_at_once_do_not_run_out_of_reader_slots() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::{Duration, Instant};

        let (_dir, db) = store();
        append(&db, 4);
        db.checkpoint().expect("checkpoint");
        let threads = 160;
        let inside = AtomicUsize::new(0);
        let failed = AtomicUsize::new(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let all_inside = || {
            while inside.load(Ordering::SeqCst) < threads && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        std::thread::scope(|s| {
            for t in 0..threads {
                let (db, inside, failed) = (&db, &inside, &failed);
                s.spawn(move || {
                    let p = t as u64 % 4;
                    let ok = db.get(p).is_ok_and(|e| e.is_some()) // keeps one per slot
                        && db
                            .with_event((p + 1) % 4, |_| {
                                inside.fetch_add(1, Ordering::SeqCst);
                                all_inside(); // every thread's transaction is open now
                                db.get(p).is_ok_and(|e| e.is_some())
                            })
                            .is_ok_and(|r| r == Some(true));
                    if !ok {
                        failed.fetch_add(1, Ordering::SeqCst);
                        inside.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(failed.load(Ordering::SeqCst), 0, "reads failed");
    }
}
