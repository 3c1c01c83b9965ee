//! Group-commit write-ahead log with a lock-free append queue.
//!
//! Writers hand opaque records to a lock-free queue ([`Wal::append`],
//! [`Wal::append_batch`]; no lock is taken unless the queued bytes are at their cap) and
//! get a [`Ticket`]; one flusher thread sequences them (assigns gapless LSNs in file
//! order, in the order the appends returned), writes each group with one write, syncs once
//! per group and wakes the group. [`Ticket::wait`] returns the LSN once the record is durable under the
//! configured [`SyncMode`]; it yields the CPU for up to [`Options::wait_yield`] before it
//! parks the thread. Readers iterate durable records ([`Wal::iter_from`]) and tail
//! new ones ([`Wal::wait_for`]); a checkpointer drops applied segments
//! ([`Wal::truncate_before`]).
//!
//! ```
//! # fn main() -> varve_wal::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let wal = varve_wal::Wal::open(dir.path(), varve_wal::Options::default())?;
//! let lsn = wal.append(b"hello")?.wait()?;
//! let batch = wal.append_batch(&[b"a", b"b"])?.wait()?;
//! assert_eq!(batch, lsn + 1);
//! let got: Vec<_> = wal.iter_from(lsn)?.collect::<Result<_, _>>()?;
//! assert_eq!(got[0].payload, b"hello");
//! assert_eq!(got.len(), 3);
//! # Ok(()) }
//! ```
//!
//! # Durability contracts ([`SyncMode`])
//!
//! - [`SyncMode::Always`] (default): a ticket completes after its group was written and
//!   `fdatasync`ed. A crash of the process, the OS or the machine loses no acknowledged
//!   record. A record whose ticket did not complete may or may not survive.
//! - [`SyncMode::Interval(d)`](SyncMode::Interval): a ticket completes once its group was
//!   written to the OS; the flusher syncs at most `d` after a write. A process crash (kill
//!   -9) loses nothing acknowledged; an OS crash or power loss can lose records
//!   acknowledged within the last `d` (plus one sync's duration).
//! - [`SyncMode::Never`]: a ticket completes once written to the OS; the WAL syncs only
//!   when it seals a segment and on close. A process crash loses nothing acknowledged; an
//!   OS crash or power loss can lose everything since the last sealed segment.
//!
//! In every mode a batch is atomic (all its records survive or none), LSNs are gapless and
//! increase in file order, and recovery never returns bytes that fail their checksum.
//!
//! # Memory and I/O
//!
//! Queued-but-unwritten bytes are capped ([`Options::max_queued_bytes`]): past the cap
//! `append` blocks and `try_append` returns [`Error::Backpressure`]. Appenders frame their
//! records into pooled buffers that the flusher hands back after copying them into its one
//! reused group buffer. Segments are preallocated with `fallocate`; a small group that
//! enters never-written space also writes zeros ahead of itself (256 KiB, or 1 MiB for a
//! lone writer, whose stall delays nobody else), so the syncs of the groups that follow
//! are plain data syncs rather than extent conversions (which cost several times more on
//! ext4 and XFS). A log that is truncated behind a checkpoint
//! ([`Wal::truncate_before`]) keeps up to [`Options::recycle_segments`] truncated segments
//! as spares and starts new segments in their files: every block is already written, so
//! nothing is zeroed ahead and no sync pays an extent conversion, and the disk writes each
//! log byte once. Behind a full group ([`Options::group_bytes`]) with more queued, the
//! flusher encodes the next group while the full one syncs, and writes it after that sync
//! returned. A write or sync failure poisons the WAL for good:
//! the group's tickets, everything queued and every later append fail with
//! [`Error::Poisoned`]; nothing retries an `fsync` whose failure may have dropped pages.
//!
//! # Recovery rules (on every open)
//!
//! 1. Leftover `*.tmp` files (a segment whose creation did not finish) are removed.
//! 2. Every segment header is checked: unknown magic is [`Error::BadMagic`], an unknown
//!    format version [`Error::UnsupportedVersion`], a bad checksum or a name that disagrees
//!    with the header [`Error::Corrupted`]; consecutive segments must continue each
//!    other's LSNs.
//! 3. Every record is verified (structure, LSN = previous + 1, xxh3 checksum). The log ends
//!    at the first record that fails; a batch whose last record is missing is dropped whole.
//! 4. If only zeros follow the end, or the *close marker* a clean close ([`Wal::close`] or
//!    drop) writes after the last record, it is a clean end ([`RecoveryReport::closed_cleanly`]).
//!    Otherwise: in the last segment, when no valid record that *starts a sync epoch* (the
//!    first record written after a completed sync) and no close marker follows the bad
//!    spot, the bytes after the end are a **torn tail**
//!    from an interrupted write: they are zeroed (the file stays preallocated) and counted
//!    in the [`RecoveryReport`]. A valid epoch-starting record or close marker after the
//!    bad spot, or a sealed (non-last) segment whose records stop before the next
//!    segment's first LSN, means data that had been synced is damaged (after a clean
//!    close, the whole last group too):
//!    [`Error::Corrupted`] with the segment and offset, unless the caller opened with
//!    [`RecoveryMode::TolerateCorruptTail`], which keeps the clean prefix, zeroes the rest
//!    of that segment, deletes the later segments and reports where the corruption was.
//! 5. A *recycled* segment (one that reuses a truncated segment's file) holds stale records
//!    of that segment after its own, all with LSNs below its first LSN: they are neither a
//!    torn tail nor damage. Only bytes of its own records after the end (an incomplete
//!    batch, valid records with the next LSN or later) are cut and zeroed, and a valid
//!    epoch-starting one of those after a bad record is corruption, as in rule 4.
//! 6. Spares (`*.spare`) are never read as log. One is kept only while its records are
//!    older than every segment's (its name's LSN is below the first segment's first LSN),
//!    and only the newest [`Options::recycle_segments`] of those; the others are deleted.
//! 7. Appending resumes right after the last complete batch with the next LSN.
//!
//! The byte layouts are in the project's `docs/format.md` ("varve-wal").

mod error;
mod flusher;
mod format;
mod index;
mod lock;
mod options;
mod reader;
mod recovery;
mod shared;
mod storage;
mod sys;
mod ticket;

#[cfg(test)]
mod tests;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;

pub use error::{Error, Result};
pub use options::{Options, RecoveryMode, SyncMode};
pub use reader::{Iter, Record, RecordRef};
pub use ticket::{Placement, RecordLocation, Ticket};

use flusher::Flusher;
use recovery::SegmentMeta;
use shared::{Counters, Entry, Shared, lock};
use storage::{FsStorage, Storage};
use ticket::TicketState;

/// A log sequence number: the position of a record in the log, gapless from 1.
pub type Lsn = u64;

/// What recovery found and did when the WAL was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segments verified.
    pub segments: usize,
    /// Records kept.
    pub records: u64,
    /// The LSN the next record gets.
    pub next_lsn: Lsn,
    /// Bytes cut from the tail (zeroed in place).
    pub dropped_bytes: u64,
    /// Valid records among the dropped bytes (an incomplete batch, records after a torn
    /// spot).
    pub dropped_records: u64,
    /// With [`RecoveryMode::TolerateCorruptTail`]: where corruption was tolerated.
    pub corruption: Option<(PathBuf, u64)>,
    /// Segments deleted because they followed tolerated corruption.
    pub removed_segments: Vec<PathBuf>,
    /// Unfinished segment creations (`*.tmp`) removed.
    pub removed_temp_files: usize,
    /// Segments taken out of the log because it ended below [`Options::start_lsn`].
    pub retired_segments: usize,
    /// The log ended with the marker of a clean close ([`Wal::close`] or drop) and nothing
    /// after it.
    pub closed_cleanly: bool,
}

/// Counters and gauges of an open WAL ([`Wal::stats`]). The counters count since open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Framed bytes appended but not yet written (the quantity capped by
    /// [`Options::max_queued_bytes`]).
    pub queued_bytes: u64,
    /// Groups written (one write each).
    pub groups: u64,
    /// `fdatasync`s of segment files by the flusher (group syncs, interval syncs, syncs
    /// that seal a segment or close the log).
    pub syncs: u64,
    /// Framed record bytes written to segment files (headers and payloads).
    pub bytes_written: u64,
    /// Zeros written ahead of small groups (see the crate docs on memory and I/O); not in
    /// `bytes_written`.
    pub zeros_written: u64,
    /// Segments in the log now (the one being written included; spares not).
    pub segments: u64,
    /// Spare files kept for reuse ([`Options::recycle_segments`]).
    pub spares: u64,
    /// Appends that found the flusher parked and had to wake it (a futex wake-up on the
    /// append path; see [`Options::wait_yield`]).
    pub flusher_wakeups: u64,
    /// [`Wal::durable_lsn`].
    pub durable_lsn: Lsn,
    /// [`Wal::first_lsn`].
    pub first_lsn: Lsn,
}

/// Where the durable records end: [`Wal::durable_position`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurablePosition {
    /// The durable LSN ([`Wal::durable_lsn`]) this position was published with.
    pub lsn: Lsn,
    /// The segment holding the end: its first LSN, which is also its id and the number in
    /// its file name ([`SegmentInfo::first_lsn`]).
    pub segment: Lsn,
    /// Byte offset in that segment's file one past the last durable record (the segment
    /// header's length when none of its records is durable yet).
    pub end_offset: u64,
}

/// A segment of the log ([`Wal::segments`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The LSN of its first record: its id, in its file name and header.
    pub first_lsn: Lsn,
    /// Its file.
    pub path: PathBuf,
    /// Byte offset one past its last durable record when listed: for a sealed segment the
    /// end of its records, for the last one the [`DurablePosition::end_offset`] of the same
    /// moment (or the header's length if none of its records is durable yet).
    pub durable_end: u64,
    /// Size of the file (preallocated; the bytes after `durable_end` are not log).
    pub file_len: u64,
}

/// A record's payload as callers hand it in: one slice, or parts laid end to end.
trait Payload: Copy {
    /// Length of the payload.
    fn total_len(&self) -> usize;
    /// Appends the payload to `out`.
    fn write_to(&self, out: &mut Vec<u8>);
}

impl Payload for &[u8] {
    fn total_len(&self) -> usize {
        self.len()
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl Payload for &[&[u8]] {
    fn total_len(&self) -> usize {
        self.iter().map(|p| p.len()).sum()
    }
    fn write_to(&self, out: &mut Vec<u8>) {
        for p in *self {
            out.extend_from_slice(p);
        }
    }
}

/// Makes the log start at `opts.start_lsn`, above where the recovered log `rec` ends: its
/// segments (every record in them is below that LSN) leave the log as by
/// [`Wal::truncate_before`] (up to [`Options::recycle_segments`] become spares, the newest
/// kept), the directory is synced, and `rec` is left with no segment and the new next LSN.
/// A crash before the new segment exists leaves a directory of spares only, which
/// recovery reads as an empty log.
fn restart_at(
    dir: &Path,
    rec: &mut recovery::Recovered,
    opts: &Options,
    storage: &dyn Storage,
) -> Result<()> {
    for seg in rec.segments.drain(..) {
        let to = dir.join(format::spare_file_name(seg.first_lsn));
        std::fs::rename(&seg.path, &to)?;
        rec.spares.push(to);
        rec.report.retired_segments += 1;
    }
    let surplus = rec.spares.len().saturating_sub(opts.recycle_segments);
    for old in rec.spares.drain(..surplus) {
        std::fs::remove_file(old)?;
    }
    storage.sync_dir(dir)?;
    rec.next_lsn = opts.start_lsn;
    rec.report.next_lsn = opts.start_lsn;
    rec.last_recycled = false;
    Ok(())
}

/// A write-ahead log open on a directory. `Send + Sync`: share it by reference or `Arc`.
pub struct Wal {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
    report: RecoveryReport,
    _lock: File,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.shared.dir)
            .field("durable_lsn", &self.durable_lsn())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, runs recovery and starts the flusher.
    ///
    /// Fails with [`Error::Locked`] if another open WAL holds the directory, and with the
    /// errors of the recovery rules (crate docs) on a damaged log.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Wal> {
        Self::open_with(dir.as_ref(), opts, Arc::new(FsStorage))
    }

    /// CPU time the flusher thread has used so far (tests: an idle flusher must sleep).
    #[cfg(test)]
    pub(crate) fn flusher_cpu_time(&self) -> Duration {
        let Some(h) = self.flusher.as_ref() else {
            return Duration::ZERO;
        };
        sys::thread_cpu_time(h)
    }

    pub(crate) fn open_with(dir: &Path, opts: Options, storage: Arc<dyn Storage>) -> Result<Wal> {
        opts.validate()?;
        std::fs::create_dir_all(dir)?;
        let lock_file = lock::acquire(dir)?;
        let mut rec = recovery::recover(dir, opts.recovery_mode, opts.recycle_segments, &*storage)?;
        if opts.start_lsn > rec.next_lsn {
            restart_at(dir, &mut rec, &opts, &*storage)?;
        }
        let mut segments = std::mem::take(&mut rec.segments);
        let (seg, seg_len, write_off) = match segments.last() {
            Some(last) => {
                let mut seg = storage.open_segment(&last.path)?;
                // Records recovered from the page cache (a process crash under a lax
                // SyncMode) become durable before anything is appended after them.
                seg.sync_data()?;
                (seg, rec.last_len, rec.write_offset)
            }
            None => {
                let path = dir.join(format::segment_file_name(rec.next_lsn));
                let tmp = path.with_extension("tmp");
                let header = format::encode_segment_header(rec.next_lsn, false);
                let seg = storage.create_segment(&tmp, &path, opts.segment_size, &header)?;
                segments.push(SegmentMeta {
                    first_lsn: rec.next_lsn,
                    path,
                    end: format::SEGMENT_HEADER_LEN as u64,
                    file_len: opts.segment_size,
                    index: index::SparseIndex::default(),
                });
                (seg, opts.segment_size, format::SEGMENT_HEADER_LEN as u64)
            }
        };
        let last_first = segments.last().map_or(rec.next_lsn, |s| s.first_lsn);
        let index_due = segments
            .last()
            .map_or(format::SEGMENT_HEADER_LEN as u64, |s| s.index.next_due());
        let max_read_len = opts.max_record_size.max(rec.max_len);
        let position = DurablePosition {
            lsn: rec.next_lsn - 1,
            segment: last_first,
            end_offset: write_off,
        };
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            opts,
            storage: Arc::clone(&storage),
            queue: SegQueue::new(),
            queued_bytes: AtomicU64::new(0),
            flusher_sleeping: AtomicBool::new(false),
            flusher_thread: OnceLock::new(),
            shutdown: AtomicBool::new(false),
            poison: OnceLock::new(),
            durable_lsn: AtomicU64::new(position.lsn),
            position: Mutex::new(position),
            stats: Counters::default(),
            max_read_len,
            segments: Mutex::new(segments),
            spares: Mutex::new(std::mem::take(&mut rec.spares)),
            last_segment_first: AtomicU64::new(last_first),
            pool: SegQueue::new(),
            pool_len: AtomicUsize::new(0),
            space_lock: Mutex::new(()),
            space_cv: Condvar::new(),
            space_waiters: AtomicUsize::new(0),
            readers_lock: Mutex::new(()),
            readers_cv: Condvar::new(),
            reader_waiters: AtomicUsize::new(0),
        });
        let flusher = Flusher {
            shared: Arc::clone(&shared),
            storage,
            seg,
            seg_len,
            write_off,
            next_lsn: rec.next_lsn,
            seg_first: last_first,
            index_due,
            epoch_start: true,
            group: Vec::with_capacity(shared.opts.group_bytes),
            tickets: Vec::new(),
            carry: None,
            group_accounted: 0,
            dirty: false,
            last_sync: Instant::now(),
            last_publish: Instant::now(),
            last_sync_dur: Duration::ZERO,
            prev_group_entries: 0,
            prev_waiters: 0,
            // Set by every commit; read only once a group was committed (before that
            // `prev_waiters` is 0 and no group waits).
            published: 0,
            returners: 0,
            // A recycled file's blocks were written by its earlier segment.
            zeroed_upto: if rec.last_recycled {
                seg_len
            } else {
                write_off
            },
            ahead: flusher::Ahead::default(),
        };
        let handle = std::thread::Builder::new()
            .name("varve-wal-flusher".into())
            .spawn(move || flusher.run())?;
        let _ = shared.flusher_thread.set(handle.thread().clone());
        Ok(Wal {
            shared,
            flusher: Some(handle),
            report: rec.report,
            _lock: lock_file,
        })
    }

    /// What recovery found and did when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The directory of this WAL.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    fn submit<'a, P, I>(&self, records: I, block: bool) -> Result<Ticket>
    where
        P: Payload + 'a,
        I: Iterator<Item = (u8, P)> + Clone,
    {
        self.shared.poisoned()?;
        let max = self.shared.opts.max_record_size;
        let (mut count, mut size) = (0usize, 0usize);
        for (_, p) in records.clone() {
            let len = p.total_len();
            if len > max {
                return Err(Error::RecordTooLarge { size: len, max });
            }
            count += 1;
            size += format::RECORD_HEADER_LEN + len;
        }
        if count == 0 {
            return Err(Error::EmptyBatch);
        }
        let capacity = self.shared.opts.capacity() as usize;
        let records_u32 = u32::try_from(count).map_err(|_| Error::BatchTooLarge {
            size,
            max: capacity,
        })?;
        if size > capacity {
            return Err(Error::BatchTooLarge {
                size,
                max: capacity,
            });
        }
        self.shared.reserve(size as u64, block)?;
        let mut frames = self.shared.take_buffer(size);
        for (i, (kind, p)) in records.enumerate() {
            let flags = if i + 1 < count {
                format::FLAG_BATCH_CONT
            } else {
                0
            };
            // Lengths were checked against max_record_size <= u32::MAX above.
            format::put_unsequenced_header(&mut frames, p.total_len() as u32, kind, flags);
            p.write_to(&mut frames);
        }
        let state = TicketState::new(records_u32);
        self.shared.queue.push(Entry {
            frames,
            ticket: Arc::clone(&state),
            seen: self.shared.durable_lsn.load(Ordering::Relaxed),
        });
        self.shared.wake_flusher();
        Ok(Ticket::new(state, self.shared.opts.wait_yield))
    }

    /// Queues one record of kind 0.
    ///
    /// Below the queued-bytes cap ([`Options::max_queued_bytes`]) this takes no lock: it
    /// frames the record into a pooled buffer and pushes it on a lock-free queue. At the
    /// cap it blocks on a mutex and condition variable until the flusher has written
    /// enough (or the log is poisoned); [`try_append`](Self::try_append) returns
    /// [`Error::Backpressure`] instead.
    ///
    /// **Order.** LSNs follow the order in which the appends (of every form, blocking or
    /// not) returned: when one append returns before another begins, as for two appends
    /// on one thread or two made while holding the caller's own mutex, the first one's
    /// records get the lower LSNs, and a batch's records are consecutive. An engine that
    /// appends under its own lock thus gets LSNs in its commit order. Appends that overlap
    /// in time are ordered by the flusher in some order consistent with that.
    pub fn append(&self, payload: &[u8]) -> Result<Ticket> {
        self.append_kind(0, payload)
    }

    /// Queues one record with a caller-chosen `kind` byte (opaque to the WAL). Locking and
    /// order as for [`append`](Self::append).
    pub fn append_kind(&self, kind: u8, payload: &[u8]) -> Result<Ticket> {
        self.submit(std::iter::once((kind, payload)), true)
    }

    /// Queues records of kind 0 as one atomic batch with consecutive LSNs: after a crash
    /// either all of them are in the log or none. Locking and order as for
    /// [`append`](Self::append).
    pub fn append_batch(&self, payloads: &[&[u8]]) -> Result<Ticket> {
        self.submit(payloads.iter().map(|p| (0, *p)), true)
    }

    /// Like [`append_batch`](Self::append_batch) with a `kind` per record.
    pub fn append_batch_kinds(&self, records: &[(u8, &[u8])]) -> Result<Ticket> {
        self.submit(records.iter().copied(), true)
    }

    /// Queues one record whose payload is `parts` laid end to end, copied straight into
    /// the WAL's buffer: a caller whose record interleaves its own header bytes with
    /// borrowed data (an event's payload) need not assemble it first. The record reads back
    /// as one payload. Locking and order as for [`append`](Self::append).
    pub fn append_kind_parts(&self, kind: u8, parts: &[&[u8]]) -> Result<Ticket> {
        self.submit(std::iter::once((kind, parts)), true)
    }

    /// Like [`append_kind_parts`](Self::append_kind_parts) but returns
    /// [`Error::Backpressure`] instead of blocking.
    pub fn try_append_kind_parts(&self, kind: u8, parts: &[&[u8]]) -> Result<Ticket> {
        self.submit(std::iter::once((kind, parts)), false)
    }

    /// Like [`append`](Self::append) but returns [`Error::Backpressure`] instead of
    /// blocking when the queued bytes are at their cap.
    pub fn try_append(&self, payload: &[u8]) -> Result<Ticket> {
        self.submit(std::iter::once((0, payload)), false)
    }

    /// Like [`append_batch`](Self::append_batch) but returns [`Error::Backpressure`]
    /// instead of blocking.
    pub fn try_append_batch(&self, payloads: &[&[u8]]) -> Result<Ticket> {
        self.submit(payloads.iter().map(|p| (0, *p)), false)
    }

    /// Like [`append_kind`](Self::append_kind) but returns [`Error::Backpressure`]
    /// instead of blocking.
    pub fn try_append_kind(&self, kind: u8, payload: &[u8]) -> Result<Ticket> {
        self.submit(std::iter::once((kind, payload)), false)
    }

    /// Like [`append_batch_kinds`](Self::append_batch_kinds) but returns
    /// [`Error::Backpressure`] instead of blocking.
    pub fn try_append_batch_kinds(&self, records: &[(u8, &[u8])]) -> Result<Ticket> {
        self.submit(records.iter().copied(), false)
    }

    /// Counters since open and the log's current extent.
    pub fn stats(&self) -> WalStats {
        let s = &*self.shared;
        let (segments, first_lsn) = {
            let segs = lock(&s.segments);
            (segs.len() as u64, segs.first().map_or(1, |f| f.first_lsn))
        };
        WalStats {
            queued_bytes: s.queued_bytes.load(Ordering::SeqCst),
            groups: s.stats.groups.load(Ordering::Relaxed),
            syncs: s.stats.syncs.load(Ordering::Relaxed),
            bytes_written: s.stats.bytes_written.load(Ordering::Relaxed),
            zeros_written: s.stats.zeros_written.load(Ordering::Relaxed),
            segments,
            spares: lock(&s.spares).len() as u64,
            flusher_wakeups: s.stats.wakeups.load(Ordering::Relaxed),
            durable_lsn: self.durable_lsn(),
            first_lsn,
        }
    }

    /// The durable LSN with where its record ends on disk, published together: every
    /// record with an LSN at or below `lsn` is durable (under the [`SyncMode`]), and the
    /// durable bytes of segment `segment` end at `end_offset`.
    ///
    /// The read contract for a reader of segment files (rather than [`Wal::iter_from`]):
    ///
    /// - Take the extent from one call (or from [`Wal::segments`]): bytes of segment
    ///   `segment` in `[32, end_offset)`, and of the segments before it up to their
    ///   [`SegmentInfo::durable_end`], are whole, checksummed records with consecutive
    ///   LSNs, the last one `lsn`. Never read past them: what follows is a group still being
    ///   written, zeros of the preallocated space, a close marker, or (in a recycled
    ///   segment) stale records of an earlier segment.
    /// - The position only moves forward: into the same segment, or to a later one once a
    ///   record of that one is durable.
    /// - [`Wal::truncate_before`] may retire a segment and a later rollover reuse its file
    ///   for a new segment, so bytes read from a file (by path or through a handle opened
    ///   earlier) are that segment's only if the segment is still in the log after the
    ///   read: check `wal.first_lsn() <= segment` once the bytes are in memory, and discard
    ///   them otherwise. A segment leaves the log before its file can be reused.
    pub fn durable_position(&self) -> DurablePosition {
        *lock(&self.shared.position)
    }

    /// The segments of the log, oldest first, with their durable extents at one moment
    /// (see [`durable_position`](Self::durable_position) for how to read them safely).
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let segs = lock(&self.shared.segments);
        let pos = self.durable_position();
        let last = segs.len().saturating_sub(1);
        segs.iter()
            .enumerate()
            .map(|(i, m)| {
                let durable_end = match i == last {
                    false => m.end,
                    true if pos.segment == m.first_lsn => pos.end_offset,
                    true => format::SEGMENT_HEADER_LEN as u64,
                };
                SegmentInfo {
                    first_lsn: m.first_lsn,
                    path: m.path.clone(),
                    durable_end,
                    file_len: m.file_len,
                }
            })
            .collect()
    }

    /// The highest LSN acknowledged as durable under the `SyncMode` (0 if none yet).
    pub fn durable_lsn(&self) -> Lsn {
        self.shared.durable_lsn.load(Ordering::SeqCst)
    }

    /// The first LSN still kept in the log (records below it were truncated).
    pub fn first_lsn(&self) -> Lsn {
        lock(&self.shared.segments)
            .first()
            .map_or(1, |s| s.first_lsn)
    }

    /// Iterates durable records from `lsn` on, across segments. `next()` returns `None`
    /// when it has caught up with [`durable_lsn`](Self::durable_lsn); after
    /// [`wait_for`](Self::wait_for) it resumes. Fails with [`Error::Truncated`] if `lsn`
    /// was removed by [`truncate_before`](Self::truncate_before).
    ///
    /// The iterator starts at the closest record at or below `lsn` that its segment's
    /// sparse in-memory index names (about one every 64 KiB of the segment, noted as
    /// groups are written and rebuilt by recovery), so it verifies at most about 64 KiB of
    /// records before `lsn`, without copying them. [`Iter::next_ref`] borrows each payload
    /// from the iterator's read buffer instead of allocating a `Vec` per record.
    pub fn iter_from(&self, lsn: Lsn) -> Result<Iter> {
        let first = self.first_lsn();
        if lsn < first {
            return Err(Error::Truncated {
                requested: lsn,
                first,
            });
        }
        Ok(Iter::new(Arc::clone(&self.shared), lsn))
    }

    /// Waits until `lsn` is durable or `timeout` passes; `Ok(true)` if it is durable.
    pub fn wait_for(&self, lsn: Lsn, timeout: Duration) -> Result<bool> {
        let s = &*self.shared;
        if s.durable_lsn.load(Ordering::SeqCst) >= lsn {
            return Ok(true);
        }
        let deadline = Instant::now() + timeout;
        s.reader_waiters.fetch_add(1, Ordering::SeqCst);
        let mut g = lock(&s.readers_lock);
        let r = loop {
            if s.durable_lsn.load(Ordering::SeqCst) >= lsn {
                break Ok(true);
            }
            if let Err(e) = s.poisoned() {
                break Err(e);
            }
            let now = Instant::now();
            if now >= deadline {
                break Ok(false);
            }
            g = match s.readers_cv.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        drop(g);
        s.reader_waiters.fetch_sub(1, Ordering::SeqCst);
        r
    }

    /// Removes the segments whose records all lie below `lsn` (never the one being
    /// written) from the log, then syncs the directory. Returns how many were removed.
    /// Up to [`Options::recycle_segments`] of them are kept as spares for new segments to
    /// reuse; the others are deleted. An [`Iter`] still reading a removed segment ends
    /// with [`Error::Truncated`].
    pub fn truncate_before(&self, lsn: Lsn) -> Result<usize> {
        let mut segs = lock(&self.shared.segments);
        let mut n = 0;
        // `get(1)`: never the last (active) segment.
        while segs.get(1).is_some_and(|s| s.first_lsn <= lsn) {
            let old = segs.remove(0);
            self.shared.retire(old)?;
            n += 1;
        }
        if n > 0 {
            self.shared.storage.sync_dir(&self.shared.dir)?;
        }
        Ok(n)
    }

    /// Writes and syncs everything queued, stops the flusher and releases the directory.
    /// Returns [`Error::Poisoned`] if a write or sync had failed.
    pub fn close(mut self) -> Result<()> {
        self.stop();
        self.shared.poisoned()
    }

    fn stop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(h) = self.flusher.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.stop();
    }
}
