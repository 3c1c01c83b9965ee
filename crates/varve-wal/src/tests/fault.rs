//! Fault injection: a `Storage` whose writes and syncs fail on demand.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use super::{read_all, small};
use crate::storage::{FsStorage, SegmentFile, Storage};
use crate::{Error, Wal};

#[derive(Default)]
pub(crate) struct Plan {
    pub(crate) fail_sync: AtomicBool,
    fail_write: AtomicBool,
    short_write: AtomicBool,
    fail_create: AtomicBool,
    syncs: AtomicUsize,
    writes: AtomicUsize,
    pub(crate) dir_syncs: AtomicUsize,
    /// Spares handed to `recycle_segment`.
    pub(crate) recycles: AtomicUsize,
    /// `recycle_segment` fails with EIO (creating a segment still works).
    pub(crate) fail_recycle: AtomicBool,
    /// Each write lands at most half its bytes (a short write that is not an error).
    chop_writes: AtomicBool,
    /// The next this many writes fail with EINTR.
    interrupts: AtomicUsize,
    sync_attempts_after_failure: AtomicUsize,
    /// Every successful sync first sleeps this many milliseconds (a slow disk).
    pub(crate) sync_delay_ms: AtomicU64,
    /// (offset, length) of every write attempted.
    log: Mutex<Vec<(u64, usize)>>,
    /// Writes, hints and syncs that reached the file, in order.
    events: Mutex<Vec<Event>>,
    /// `start_writeback` fails with `EBADF`.
    pub(crate) fail_writeback: AtomicBool,
    held: Mutex<(bool, bool)>, // (hold writes, a write is waiting)
    cv: Condvar,
    /// Every write first sleeps this many milliseconds (a slow disk).
    pub(crate) write_delay_ms: AtomicU64,
    /// Syncs wait while this is set: (hold syncs, a sync is waiting).
    held_sync: Mutex<(bool, bool)>,
    sync_cv: Condvar,
    /// The next write panics.
    pub(crate) panic_write: AtomicBool,
}

/// What reached a segment file, in [`Plan::events`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A write attempt: offset, length.
    Write(u64, usize),
    /// A `start_writeback` hint: offset, length.
    Hint(u64, u64),
    /// A successful sync.
    Sync,
}

impl Plan {
    fn event(&self, e: Event) {
        self.events.lock().unwrap().push(e);
    }
    pub(crate) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
    pub(crate) fn syncs(&self) -> usize {
        self.syncs.load(Ordering::SeqCst)
    }
    pub(crate) fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
    pub(crate) fn write_log(&self) -> Vec<(u64, usize)> {
        self.log.lock().unwrap().clone()
    }
    pub(crate) fn hold_writes(&self, on: bool) {
        self.held.lock().unwrap().0 = on;
        self.cv.notify_all();
    }
    pub(crate) fn hold_syncs(&self, on: bool) {
        self.held_sync.lock().unwrap().0 = on;
        self.sync_cv.notify_all();
    }
    /// Waits (at most 10 s) until a sync is held by [`Plan::hold_syncs`].
    pub(crate) fn wait_for_held_sync(&self) {
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.held_sync.lock().unwrap().1 {
            assert!(std::time::Instant::now() < give_up, "no sync arrived");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    pub(crate) fn wait_for_held_write(&self) {
        let mut g = self.held.lock().unwrap();
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !g.1 {
            assert!(std::time::Instant::now() < give_up, "no write arrived");
            g = self
                .cv
                .wait_timeout(g, std::time::Duration::from_millis(50))
                .unwrap()
                .0;
        }
    }
}

pub(crate) struct FaultyStorage {
    plan: Arc<Plan>,
}

impl FaultyStorage {
    pub(crate) fn create() -> (Arc<dyn Storage>, Arc<Plan>) {
        let plan = Arc::new(Plan::default());
        (
            Arc::new(FaultyStorage {
                plan: Arc::clone(&plan),
            }),
            plan,
        )
    }
}

struct FaultySegment {
    inner: Box<dyn SegmentFile>,
    plan: Arc<Plan>,
}

impl SegmentFile for FaultySegment {
    fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<usize> {
        {
            let mut g = self.plan.held.lock().unwrap();
            // Bounded, so a failing test's unwinding (which joins the flusher) cannot hang.
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while g.0 && std::time::Instant::now() < give_up {
                g.1 = true;
                self.plan.cv.notify_all();
                g = self
                    .plan
                    .cv
                    .wait_timeout(g, std::time::Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            g.1 = false;
        }
        if self.plan.panic_write.swap(false, Ordering::SeqCst) {
            panic!("injected panic in a segment write");
        }
        let delay = self.plan.write_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        if self
            .plan
            .interrupts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::from(io::ErrorKind::Interrupted));
        }
        let buf = if self.plan.chop_writes.load(Ordering::SeqCst) {
            &buf[..buf.len().div_ceil(2)]
        } else {
            buf
        };
        self.plan.writes.fetch_add(1, Ordering::SeqCst);
        self.plan.log.lock().unwrap().push((offset, buf.len()));
        self.plan.event(Event::Write(offset, buf.len()));
        if self.plan.fail_write.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.plan.short_write.load(Ordering::SeqCst) && buf.len() > 1 {
            // Part lands (here 600 bytes at most), then the disk is full.
            self.plan.fail_write.store(true, Ordering::SeqCst);
            return self
                .inner
                .write_at(&buf[..(buf.len() / 2).min(600)], offset);
        }
        self.inner.write_at(buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        {
            let mut g = self.plan.held_sync.lock().unwrap();
            // Bounded like held writes.
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while g.0 && std::time::Instant::now() < give_up {
                g.1 = true;
                g = self
                    .plan
                    .sync_cv
                    .wait_timeout(g, std::time::Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
            g.1 = false;
        }
        if self.plan.fail_sync.load(Ordering::SeqCst) {
            self.plan
                .sync_attempts_after_failure
                .fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let delay = self.plan.sync_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        self.plan.syncs.fetch_add(1, Ordering::SeqCst);
        self.plan.event(Event::Sync);
        self.inner.sync_data()
    }

    fn start_writeback(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.plan.fail_writeback.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        self.plan.event(Event::Hint(offset, len));
        self.inner.start_writeback(offset, len)
    }
}

impl Storage for FaultyStorage {
    fn create_segment(
        &self,
        tmp: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Box<dyn SegmentFile>> {
        if self.plan.fail_create.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        let inner = FsStorage.create_segment(tmp, path, size, header)?;
        Ok(Box::new(FaultySegment {
            inner,
            plan: Arc::clone(&self.plan),
        }))
    }

    fn recycle_segment(
        &self,
        spare: &Path,
        path: &Path,
        size: u64,
        header: &[u8],
    ) -> io::Result<Option<Box<dyn SegmentFile>>> {
        if self.plan.fail_create.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.plan.fail_recycle.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.plan.recycles.fetch_add(1, Ordering::SeqCst);
        let Some(inner) = FsStorage.recycle_segment(spare, path, size, header)? else {
            return Ok(None);
        };
        Ok(Some(Box::new(FaultySegment {
            inner,
            plan: Arc::clone(&self.plan),
        })))
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentFile>> {
        let inner = FsStorage.open_segment(path)?;
        Ok(Box::new(FaultySegment {
            inner,
            plan: Arc::clone(&self.plan),
        }))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.plan.dir_syncs.fetch_add(1, Ordering::SeqCst);
        FsStorage.sync_dir(dir)
    }
}

pub(crate) fn assert_poisoned<T: std::fmt::Debug>(r: crate::Result<T>, errno: i32) {
    match r {
        Err(Error::Poisoned(cause)) => assert_eq!(cause.raw_os_error(), Some(errno)),
        other => panic!("expected Poisoned, got {other:?}"),
    }
}

#[test]
fn fsync_failure_poisons_for_good_and_is_never_retried() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    assert_eq!(wal.append(b"acked").unwrap().wait().unwrap(), 1);
    plan.fail_sync.store(true, Ordering::SeqCst);
    assert_poisoned(wal.append(b"lost").unwrap().wait(), libc::EIO);
    // Sticky: later appends fail at once, blocked readers learn it too.
    assert_poisoned(wal.append(b"later"), libc::EIO);
    assert_poisoned(wal.try_append(b"later"), libc::EIO);
    assert_poisoned(
        wal.wait_for(2, std::time::Duration::from_secs(5)),
        libc::EIO,
    );
    assert_eq!(wal.durable_lsn(), 1);
    assert_poisoned(wal.close(), libc::EIO);
    assert_eq!(plan.sync_attempts_after_failure.load(Ordering::SeqCst), 1);
    let wal = Wal::open(d.path(), small()).unwrap();
    let all = read_all(&wal);
    assert_eq!(all[0], (1, 0, b"acked".to_vec()));
    // "lost" was written before the failed sync; whether it survives is unknown.
    assert!(all.len() <= 2);
    assert_eq!(
        wal.append(b"next").unwrap().wait().unwrap(),
        all.len() as u64 + 1
    );
}

#[test]
fn short_write_then_enospc_fails_the_group_and_keeps_acked_records() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    wal.append(b"first").unwrap().wait().unwrap();
    wal.append_batch(&[b"second", b"third"])
        .unwrap()
        .wait()
        .unwrap();
    plan.short_write.store(true, Ordering::SeqCst);
    let big = [9u8; 500];
    let t = wal.append_batch(&[&big, &big, &big, &big]).unwrap();
    assert_poisoned(t.wait(), libc::ENOSPC);
    assert_poisoned(wal.append(b"after"), libc::ENOSPC);
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    let rep = wal.recovery_report().clone();
    assert_eq!(
        read_all(&wal),
        vec![
            (1, 0, b"first".to_vec()),
            (2, 0, b"second".to_vec()),
            (3, 0, b"third".to_vec())
        ]
    );
    // The part-written batch was cut as a torn tail (its first record was whole).
    assert_eq!(rep.dropped_records, 1);
    assert_eq!(rep.dropped_bytes, 600);
    assert_eq!(wal.append(b"next").unwrap().wait().unwrap(), 4);
}

#[test]
fn failed_write_fails_every_ticket_of_the_group_and_the_queue() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    wal.append(b"ok").unwrap().wait().unwrap();
    plan.hold_writes(true);
    let a = wal.append(b"a").unwrap();
    plan.wait_for_held_write();
    // Far below the queued-bytes cap: queuing behind a write in flight never pushes back.
    let rest: Vec<_> = (0..10).map(|_| wal.try_append(b"b").unwrap()).collect();
    plan.fail_write.store(true, Ordering::SeqCst);
    plan.hold_writes(false);
    assert_poisoned(a.wait(), libc::ENOSPC);
    for t in rest {
        assert_poisoned(t.wait(), libc::ENOSPC);
    }
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(read_all(&wal), vec![(1, 0, b"ok".to_vec())]);
}

#[test]
fn failed_segment_creation_poisons() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    let rec = [5u8; 4000];
    let mut n = 0;
    while crate::recovery::list_segments(d.path())
        .unwrap()
        .segments
        .len()
        < 2
    {
        wal.append(&rec).unwrap().wait().unwrap();
        n += 1;
        assert!(n < 100, "segments never rolled over");
    }
    plan.fail_create.store(true, Ordering::SeqCst);
    let mut failed = false;
    for _ in 0..40 {
        match wal.append(&rec).and_then(crate::Ticket::wait) {
            Ok(_) => n += 1,
            Err(e) => {
                assert_poisoned::<()>(Err(e), libc::ENOSPC);
                failed = true;
                break;
            }
        }
    }
    assert!(failed);
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(read_all(&wal).len(), n);
}

#[test]
fn poisoning_wakes_a_reader_asleep_in_wait_for() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    std::thread::scope(|s| {
        // An hour: only a wake-up (not the timeout) lets this return within the watchdog.
        let h = s.spawn(|| wal.wait_for(1, std::time::Duration::from_secs(3600)));
        super::until_readers_wait(&wal, 1);
        plan.fail_sync.store(true, Ordering::SeqCst);
        assert_poisoned(wal.append(b"x").unwrap().wait(), libc::EIO);
        assert_poisoned(h.join().unwrap(), libc::EIO);
    });
}

#[test]
fn small_groups_write_zeros_ahead_once_large_ones_never_and_never_past_the_segment() {
    use crate::flusher::{ZERO_AHEAD_ALONE, ZERO_AHEAD_BELOW};
    use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let seg = 3 * ZERO_AHEAD_ALONE;
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let opts = small().segment_size(seg);
    let wal = Wal::open_with(d.path(), opts, storage).unwrap();
    let h = SEGMENT_HEADER_LEN as u64;
    let rec = |n: usize| (RECORD_HEADER_LEN + n) as u64;
    // A lone writer's small group entering unwritten space writes ZERO_AHEAD_ALONE zeros
    // past itself.
    wal.append(b"x").unwrap().wait().unwrap();
    // The next small ones land in zeroed space: no padding.
    wal.append(b"yy").unwrap().wait().unwrap();
    let mut off = h + rec(1) + rec(2);
    assert_eq!(
        plan.write_log(),
        vec![
            (h, (rec(1) + ZERO_AHEAD_ALONE) as usize),
            (h + rec(1), rec(2) as usize)
        ]
    );
    // Fill to exactly the zeroed end with small records: still no padding.
    let zeroed = h + rec(1) + ZERO_AHEAD_ALONE;
    let payload = vec![1u8; 8000];
    while off + rec(8000) <= zeroed {
        wal.append(&payload).unwrap().wait().unwrap();
        off += rec(8000);
    }
    let gap = (zeroed - off) as usize;
    if gap > RECORD_HEADER_LEN {
        wal.append(&vec![2u8; gap - RECORD_HEADER_LEN])
            .unwrap()
            .wait()
            .unwrap();
        off = zeroed;
    }
    assert!(plan.write_log().iter().skip(1).all(|&(_, n)| n <= 8024));
    assert_eq!(off, zeroed);
    // A group of at least ZERO_AHEAD_BELOW (128 KiB) crossing into unwritten space: no
    // padding. Exactly 128 KiB: sixteen records of 8 KiB framed.
    let eight_k = vec![3u8; 8192 - RECORD_HEADER_LEN];
    let batch = |n: usize| -> Vec<&[u8]> { std::iter::repeat_n(&eight_k[..], n).collect() };
    let n0 = plan.write_log().len();
    let at_bound = 16;
    wal.append_batch(&batch(at_bound)).unwrap().wait().unwrap();
    assert_eq!(plan.write_log()[n0..], [(off, ZERO_AHEAD_BELOW)]);
    off += ZERO_AHEAD_BELOW as u64;
    // 120 KiB pads again (a lone writer's batch, so ZERO_AHEAD_ALONE): sixteen writers'
    // 4 KiB records make groups of about 64 KiB, and those write zeros ahead.
    let n0 = plan.write_log().len();
    wal.append_batch(&batch(at_bound - 1))
        .unwrap()
        .wait()
        .unwrap();
    let under = ZERO_AHEAD_BELOW - 8192;
    assert_eq!(
        plan.write_log()[n0..],
        [(off, under + ZERO_AHEAD_ALONE as usize)]
    );
    off += under as u64;
    let n0 = plan.write_log().len();
    while off + ZERO_AHEAD_ALONE / 2 < seg {
        wal.append(&payload).unwrap().wait().unwrap();
        off += rec(8000);
    }
    let log = plan.write_log();
    let padded: Vec<_> = log[n0..].iter().filter(|&&(_, n)| n > 8024).collect();
    assert_eq!(padded.len(), 1, "{padded:?}");
    assert_eq!(padded[0].0 + padded[0].1 as u64, seg);
    assert!(log.iter().all(|&(o, n)| o + n as u64 <= seg));
}

#[test]
fn groups_of_several_writers_and_the_one_after_them_write_the_short_zeros_ahead() {
    use crate::flusher::{ZERO_AHEAD, ZERO_AHEAD_ALONE};
    use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let opts = small().segment_size(4 * ZERO_AHEAD_ALONE);
    let wal = Wal::open_with(d.path(), opts, storage).unwrap();
    let rec = |n: usize| (RECORD_HEADER_LEN + n) as u64;
    wal.append(b"x").unwrap().wait().unwrap();
    let mut off = SEGMENT_HEADER_LEN as u64 + rec(1);
    let mut zeroed = off + ZERO_AHEAD_ALONE;
    // Lone appends until at most one largest record is left before the zeroed end.
    let fill_until_one_left = |off: &mut u64, zeroed: u64| {
        while zeroed - *off > rec(8192) {
            wal.append(&[4u8; 8000]).unwrap().wait().unwrap();
            *off += rec(8000);
        }
    };
    fill_until_one_left(&mut off, zeroed);
    // Held: the record ending exactly at the zeroed end is being written while two more
    // writers queue; those two form the next group, which enters unwritten space.
    plan.hold_writes(true);
    let last = wal
        .append(&vec![5u8; (zeroed - off - rec(0)) as usize])
        .unwrap();
    plan.wait_for_held_write();
    let two = [wal.append(b"y").unwrap(), wal.append(b"z").unwrap()];
    plan.hold_writes(false);
    last.wait().unwrap();
    for t in two {
        t.wait().unwrap();
    }
    let log = plan.write_log();
    assert_eq!(
        log[log.len() - 2..],
        [
            (off, (zeroed - off) as usize),
            (zeroed, (2 * rec(1) + ZERO_AHEAD) as usize)
        ]
    );
    off = zeroed + 2 * rec(1);
    zeroed = off + ZERO_AHEAD;
    // A lone writer's group right after a group of two is not yet "alone": short zeros.
    fill_until_one_left(&mut off, zeroed);
    plan.hold_writes(true);
    let first = wal.append(b"a").unwrap();
    plan.wait_for_held_write();
    let rest = zeroed - off - rec(1);
    let pair = [
        wal.append(&[6u8; 100]).unwrap(),
        wal.append(&vec![7u8; (rest - rec(100) - rec(0)) as usize])
            .unwrap(),
    ];
    plan.hold_writes(false);
    first.wait().unwrap();
    for t in pair {
        t.wait().unwrap();
    }
    wal.append(b"b").unwrap().wait().unwrap();
    let log = plan.write_log();
    assert_eq!(
        log[log.len() - 3..],
        [
            (off, rec(1) as usize),
            (off + rec(1), rest as usize),
            (zeroed, (rec(1) + ZERO_AHEAD) as usize)
        ]
    );
}

#[test]
fn truncate_before_syncs_the_directory_only_when_it_deleted_something() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    for _ in 0..30 {
        wal.append(&[5u8; 3000]).unwrap().wait().unwrap();
    }
    let dir_syncs = || plan.dir_syncs.load(Ordering::SeqCst);
    let before = dir_syncs();
    assert_eq!(wal.truncate_before(1).unwrap(), 0);
    assert_eq!(dir_syncs(), before);
    assert_eq!(wal.truncate_before(u64::MAX).unwrap(), 1);
    assert_eq!(dir_syncs(), before + 1);
    assert_eq!(wal.truncate_before(u64::MAX).unwrap(), 0);
    assert_eq!(dir_syncs(), before + 1);
}

#[test]
fn dropping_the_wal_writes_everything_queued_first() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    plan.hold_writes(true);
    let tickets: Vec<_> = (0..20u8)
        .map(|i| wal.try_append(&[i; 50]).unwrap())
        .collect();
    plan.wait_for_held_write();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(100));
            plan.hold_writes(false);
        });
        drop(wal);
    });
    for t in tickets {
        assert!(t.is_done());
    }
    let wal = Wal::open(d.path(), small()).unwrap();
    let got = read_all(&wal);
    assert_eq!(got.len(), 20);
    assert!(
        got.iter()
            .enumerate()
            .all(|(i, r)| r.2 == vec![i as u8; 50])
    );
}

#[test]
fn short_and_interrupted_writes_are_resumed_where_they_stopped() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    plan.chop_writes.store(true, Ordering::SeqCst);
    let mut want = Vec::new();
    for i in 0..20u8 {
        plan.interrupts.store(usize::from(i % 3), Ordering::SeqCst);
        let a = vec![i; 100 + usize::from(i) * 37];
        let b = vec![i ^ 0xFF; 7];
        wal.append_batch(&[&a, &b]).unwrap().wait().unwrap();
        want.push(a);
        want.push(b);
    }
    // Writes were cut short and resumed: never a gap after the bytes that landed (a new
    // group may start before the zeros its predecessor wrote ahead).
    let log = plan.write_log();
    assert!(log.len() > 40);
    for w in log.windows(2) {
        let ((o1, n1), (o2, _)) = (w[0], w[1]);
        assert!(o2 <= o1 + n1 as u64, "{w:?}");
    }
    drop(wal);
    let wal = Wal::open(d.path(), small()).unwrap();
    assert_eq!(wal.recovery_report().dropped_bytes, 0);
    let got: Vec<_> = read_all(&wal).into_iter().map(|r| r.2).collect();
    assert_eq!(got, want);
}

#[test]
fn a_group_closes_once_it_holds_group_bytes() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let framed = crate::format::RECORD_HEADER_LEN + 100;
    let opts = small().group_bytes(3 * framed);
    let wal = Wal::open_with(d.path(), opts, storage).unwrap();
    plan.hold_writes(true);
    let first = wal.append(&[0u8; 100]).unwrap();
    plan.wait_for_held_write();
    let rest: Vec<_> = (1..=7u8)
        .map(|i| wal.try_append(&[i; 100]).unwrap())
        .collect();
    let n0 = plan.write_log().len();
    plan.hold_writes(false);
    first.wait().unwrap();
    for t in rest {
        t.wait().unwrap();
    }
    // The held write (with the zeros written ahead), then groups of exactly three records
    // until the queue is empty.
    let lens: Vec<usize> = plan.write_log()[n0..].iter().map(|w| w.1).collect();
    assert_eq!(lens[1..], [3 * framed, 3 * framed, framed]);
    assert_eq!(read_all(&wal).len(), 8);
}

/// `SyncMode::Interval(0)`: every group is synced as it is written, even when the next
/// group is already queued (the flusher never goes idle in between), so a continuous load
/// cannot defer syncs past the interval.
#[test]
fn interval_mode_syncs_each_group_once_the_interval_has_passed() {
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let framed = crate::format::RECORD_HEADER_LEN + 100;
    let opts = small()
        .group_bytes(3 * framed)
        .sync_mode(crate::SyncMode::Interval(std::time::Duration::ZERO));
    let wal = Wal::open_with(d.path(), opts, storage).unwrap();
    plan.hold_writes(true);
    let first = wal.append(&[0u8; 100]).unwrap();
    plan.wait_for_held_write();
    let syncs_before = plan.syncs();
    let rest: Vec<_> = (1..=7u8)
        .map(|i| wal.try_append(&[i; 100]).unwrap())
        .collect();
    plan.hold_writes(false);
    first.wait().unwrap();
    for t in rest {
        t.wait().unwrap();
    }
    // Groups: the held one, then 3 + 3 + 1 records queued behind it: one sync each.
    assert_eq!(plan.syncs() - syncs_before, 4);
    assert_eq!(read_all(&wal).len(), 8);
}

/// Record frame of the 100-byte payloads the growth tests append.
const FRAME100: u64 = (crate::format::RECORD_HEADER_LEN + 100) as u64;

/// Opens a WAL whose syncs take 300 ms (so a group waits at most 100 ms, a third of
/// one) and commits two groups: `first` alone, then the `queued` records appended while
/// `first`'s write was held. Returns the WAL, its plan and the index in the write log of
/// the second group's write, which is still growing when this returns (it waits for
/// `first`'s writer, who has not come back).
fn growth_setup(
    d: &Path,
    interval_ms: u64,
    grow_step_ms: u64,
    queued: usize,
) -> (Wal, Arc<Plan>, usize, Vec<crate::Ticket>) {
    let (wal, plan, at, tickets, first) = held_first(d, interval_ms, grow_step_ms, queued);
    first.wait().unwrap();
    (wal, plan, at, tickets)
}

/// [`growth_setup`] up to releasing `first`'s write, with nobody waiting on `first`:
/// also returns its ticket.
fn held_first(
    d: &Path,
    interval_ms: u64,
    grow_step_ms: u64,
    queued: usize,
) -> (Wal, Arc<Plan>, usize, Vec<crate::Ticket>, crate::Ticket) {
    use std::time::Duration;
    let (storage, plan) = FaultyStorage::create();
    let mut opts = small().group_interval(Duration::from_millis(interval_ms));
    opts.grow_step = Duration::from_millis(grow_step_ms);
    let wal = Wal::open_with(d, opts, storage).unwrap();
    plan.hold_writes(true);
    let first = wal.append(b"first").unwrap();
    plan.wait_for_held_write();
    let tickets: Vec<_> = (0..queued)
        .map(|_| wal.try_append(&[1u8; 100]).unwrap())
        .collect();
    plan.sync_delay_ms.store(300, Ordering::SeqCst);
    let base = plan.write_log().len();
    plan.hold_writes(false);
    (wal, plan, base + 1, tickets, first)
}

/// The write lengths from index `from` of the write log, in records of `FRAME100` bytes
/// (each write here holds whole records: the zeros ahead went with the first write).
fn group_sizes(plan: &Plan, from: usize) -> Vec<u64> {
    let log = plan.write_log();
    log[from..]
        .iter()
        .map(|&(_, len)| {
            assert_eq!(len as u64 % FRAME100, 0, "write log {log:?}");
            len as u64 / FRAME100
        })
        .collect()
}

/// A group waits for the previous group's writer to come back, not for records queued
/// before that group was durable, and stops waiting once that writer is back.
#[test]
fn a_group_waits_for_the_previous_groups_writers_to_come_back() {
    let d = tempfile::tempdir().unwrap();
    let (wal, plan, at, queued) = growth_setup(d.path(), 10_000, 150, 4);
    // The four queued behind `first` are in the next group (sequenced) before `first`'s
    // writer comes back, so only the returning-writer count can keep that group open.
    while queued.iter().any(|t| t.lsn().is_none()) {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    // `first`'s writer appends again: its record joins the four queued behind `first`
    // (the group of `first` had one ticket, and none of the four count as its returns).
    let back = wal.try_append(&[2u8; 100]).unwrap();
    // Another 30 ms later finds that group closed: it waited for one writer only.
    std::thread::sleep(std::time::Duration::from_millis(30));
    let late = wal.try_append(&[3u8; 100]).unwrap();
    for t in queued {
        t.wait().unwrap();
    }
    assert_eq!(back.wait().unwrap(), 6);
    assert_eq!(late.wait().unwrap(), 7);
    assert_eq!(group_sizes(&plan, at), [5, 1]);
}

/// A group waits at most a third of the last sync (300 ms here), and at most the group
/// interval: a returning writer 150 ms late, or 60 ms late with a 20 ms interval, gets a
/// group of its own.
#[test]
fn a_group_waits_at_most_a_third_of_the_last_sync_and_the_interval() {
    for (interval_ms, late_ms) in [(10_000, 150), (20, 60)] {
        let d = tempfile::tempdir().unwrap();
        let (wal, plan, at, queued) = growth_setup(d.path(), interval_ms, 10_000, 4);
        std::thread::sleep(std::time::Duration::from_millis(late_ms));
        let back = wal.try_append(&[2u8; 100]).unwrap();
        for t in queued {
            t.wait().unwrap();
        }
        assert_eq!(back.wait().unwrap(), 6);
        assert_eq!(group_sizes(&plan, at), [4, 1], "interval {interval_ms} ms");
    }
}

/// Waits on every ticket at once, each from its own thread (so all are being waited on
/// when their group completes); returns their LSNs.
fn wait_all(tickets: Vec<crate::Ticket>) -> Vec<u64> {
    std::thread::scope(|s| {
        let hs: Vec<_> = tickets
            .into_iter()
            .map(|t| s.spawn(move || t.wait().unwrap()))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Returning writers join while they keep arriving: three 25 ms apart (a quiet gap of
/// 40 ms ends the wait) form one group; after a group of three, one writer back and the
/// next 70 ms later get a group each.
#[test]
fn a_group_waits_while_returning_writers_keep_arriving() {
    use std::thread::sleep;
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    // The group of the three queued records waits 40 ms for `first`'s writer, in vain.
    let (wal, plan, at, queued) = growth_setup(d.path(), 10_000, 40, 3);
    std::thread::scope(|s| {
        let waiting = s.spawn(|| wait_all(queued));
        // The three writers come back once their group is durable.
        while wal.durable_lsn() < 4 {
            sleep(Duration::from_millis(5));
        }
        let mut three = Vec::new();
        for i in 0..3u8 {
            if i > 0 {
                sleep(Duration::from_millis(25));
            }
            three.push(wal.try_append(&[i; 100]).unwrap());
        }
        assert_eq!(waiting.join().unwrap(), [2, 3, 4]);
        assert_eq!(wait_all(three), [5, 6, 7]);
    });
    let one = wal.try_append(b"one").unwrap();
    sleep(Duration::from_millis(70));
    let next = wal.try_append(&[9u8; 100]).unwrap();
    assert_eq!(one.wait().unwrap(), 8);
    assert_eq!(next.wait().unwrap(), 9);
    let log = plan.write_log();
    let sizes: Vec<usize> = log[at..].iter().map(|w| w.1).collect();
    let f = FRAME100 as usize;
    let one_frame = crate::format::RECORD_HEADER_LEN + 3;
    assert_eq!(sizes, [3 * f, 3 * f, one_frame, f], "write log {log:?}");
}

/// Only writers blocked in `Ticket::wait` are waited for: when nobody waited on the
/// previous group's ticket (a pipelined producer), the next group is written at once.
#[test]
fn a_group_does_not_wait_for_writers_that_were_not_waiting() {
    use std::thread::sleep;
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let (wal, plan, at, queued, first) = held_first(d.path(), 10_000, 10_000, 4);
    // Nobody waits on `first`: the four behind it are written as soon as it is durable,
    // so a record 10 ms later finds their group closed (a wait would last 100 ms).
    while !first.is_done() {
        sleep(Duration::from_millis(2));
    }
    sleep(Duration::from_millis(10));
    let late = wal.try_append(&[2u8; 100]).unwrap();
    assert_eq!(first.wait().unwrap(), 1);
    for t in queued {
        t.wait().unwrap();
    }
    assert_eq!(late.wait().unwrap(), 6);
    assert_eq!(group_sizes(&plan, at), [4, 1]);
}

/// An idle flusher sleeps, and so does a poisoned one: neither spins on the CPU.
#[test]
fn idle_and_poisoned_flushers_sleep() {
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let wal = Wal::open_with(d.path(), small(), storage).unwrap();
    wal.append(b"x").unwrap().wait().unwrap();
    for state in ["idle", "poisoned"] {
        if state == "poisoned" {
            plan.fail_sync.store(true, Ordering::SeqCst);
            assert_poisoned(wal.append(b"y").unwrap().wait(), libc::EIO);
        }
        let before = wal.flusher_cpu_time();
        std::thread::sleep(Duration::from_millis(200));
        let used = wal.flusher_cpu_time() - before;
        assert!(
            used < Duration::from_millis(20),
            "{state} flusher used {used:?}"
        );
    }
}

/// `SyncMode::Interval(d)`: a write made `s` after the last sync is synced `d - s` later,
/// not `d` after the write.
#[test]
fn interval_mode_syncs_one_interval_after_the_last_sync() {
    use std::time::Duration;
    let d = tempfile::tempdir().unwrap();
    let (storage, plan) = FaultyStorage::create();
    let opts = small().sync_mode(crate::SyncMode::Interval(Duration::from_millis(600)));
    let wal = Wal::open_with(d.path(), opts, storage).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = plan.syncs();
    // Acknowledged when written: the last sync (at open) was 300 ms ago.
    wal.append(b"x").unwrap().wait().unwrap();
    assert_eq!(plan.syncs(), before);
    // Due 300 ms from now; 600 ms from now would be one interval after the write.
    std::thread::sleep(Duration::from_millis(450));
    assert_eq!(plan.syncs(), before + 1);
}

#[test]
fn a_flusher_panic_poisons_the_log_and_fails_every_waiting_ticket() {
    // Bounded: a ticket or appender left waiting for a dead flusher fails the suite.
    super::bounded(|| {
        let d = tempfile::tempdir().unwrap();
        let (storage, plan) = FaultyStorage::create();
        let wal = Wal::open_with(d.path(), small().max_queued_bytes(2 * 624), storage).unwrap();
        assert_eq!(wal.append(b"ok").unwrap().wait().unwrap(), 1);
        plan.hold_writes(true);
        let first = wal.append(&[1u8; 600]).unwrap();
        plan.wait_for_held_write();
        let second = wal.try_append(&[2u8; 600]).unwrap();
        let panicked = |r: crate::Result<u64>| match r {
            Err(Error::Poisoned(c)) => assert!(
                c.to_string()
                    .contains("panicked: injected panic in a segment write"),
                "{c}"
            ),
            other => panic!("expected Poisoned, got {other:?}"),
        };
        std::thread::scope(|s| {
            // Blocked at the queue cap until the flusher is gone.
            let blocked = s.spawn(|| wal.append(&[3u8; 600]).and_then(crate::Ticket::wait));
            // A reader waiting for records that will never come.
            let reader = s.spawn(|| wal.wait_for(3, std::time::Duration::from_secs(3600)));
            super::until_readers_wait(&wal, 1);
            plan.panic_write.store(true, Ordering::SeqCst);
            plan.hold_writes(false);
            panicked(first.wait());
            panicked(second.wait());
            panicked(blocked.join().unwrap());
            match reader.join().unwrap() {
                Err(Error::Poisoned(_)) => {}
                other => panic!("{other:?}"),
            }
        });
        panicked(wal.append(b"later").and_then(crate::Ticket::wait));
        assert_eq!(wal.durable_lsn(), 1);
        assert_eq!(wal.shared.queued_bytes.load(Ordering::SeqCst), 0);
        assert!(matches!(wal.close(), Err(Error::Poisoned(_))));
        let wal = Wal::open(d.path(), small()).unwrap();
        assert_eq!(read_all(&wal), vec![(1, 0, b"ok".to_vec())]);
    });
}
