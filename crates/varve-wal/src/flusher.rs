//! The single flusher thread: sequencer, group committer and segment roller.
//!
//! Loop: drain the queue into one group buffer (assigning LSNs and sealing checksums),
//! write it with one `pwrite`, sync once (per [`SyncMode`]), publish `durable_lsn`, wake the
//! group's tickets. While a sync runs, new appends queue up and form the next group, so a
//! busy log batches by itself and an idle one adds no delay. Under `SyncMode::Always` a
//! group also waits a little for the previous group's writers to append again (see
//! [`Flusher::grow`]), never longer than a third of the last sync nor
//! [`Options::group_interval`](crate::Options::group_interval); a lone writer's next
//! record is its whole group, so it never waits.
//!
//! A full group with more queued behind it (a pipelined producer, a burst) does not leave
//! the CPU idle during its sync: the flusher starts the group's writeback, encodes the next
//! group meanwhile ([`Flusher::encode_ahead`]) and writes it as soon as the sync returns.
//! Nothing of the next group reaches the file before that sync completed, so what a crash
//! can leave behind is the same as without it.

use std::io;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crate::SyncMode;
use crate::format;
use crate::recovery::SegmentMeta;
use crate::shared::{Entry, Shared};
use crate::storage::{SegmentFile, Storage};
use crate::ticket::TicketState;

/// The flusher's state; owned by its thread.
pub(crate) struct Flusher {
    pub(crate) shared: Arc<Shared>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) seg: Box<dyn SegmentFile>,
    /// Size (capacity) of the current segment file.
    pub(crate) seg_len: u64,
    pub(crate) write_off: u64,
    pub(crate) next_lsn: u64,
    /// First LSN of the current segment (its id in [`crate::DurablePosition`]).
    pub(crate) seg_first: u64,
    /// The offset from which the next group is noted in the segment's sparse index.
    pub(crate) index_due: u64,
    /// The next record written starts a sync epoch (see recovery rules).
    pub(crate) epoch_start: bool,
    pub(crate) group: Vec<u8>,
    pub(crate) tickets: Vec<Arc<TicketState>>,
    pub(crate) carry: Option<Entry>,
    /// Queued bytes of the entries in `group`, released once written.
    pub(crate) group_accounted: u64,
    pub(crate) dirty: bool,
    pub(crate) last_sync: Instant,
    /// When the last group was published (see [`Flusher::idle`]).
    pub(crate) last_publish: Instant,
    pub(crate) last_sync_dur: Duration,
    pub(crate) prev_group_entries: usize,
    /// Tickets of the previous group whose owners were in `Ticket::wait` when it
    /// completed: the writers expected back.
    pub(crate) prev_waiters: usize,
    /// The last LSN published durable (the previous group's last record).
    pub(crate) published: u64,
    /// Entries in `group` queued after the previous group was published: mostly its
    /// writers coming back (see [`Flusher::grow`]).
    pub(crate) returners: usize,
    /// Bytes of the current segment known to be written (not just preallocated).
    pub(crate) zeroed_upto: u64,
    /// The next group, encoded while the current one syncs (see [`Flusher::encode_ahead`]);
    /// empty otherwise.
    pub(crate) ahead: Ahead,
}

/// A group encoded ahead: its bytes, tickets and queued bytes, as in [`Flusher`].
#[derive(Default)]
pub(crate) struct Ahead {
    pub(crate) group: Vec<u8>,
    pub(crate) tickets: Vec<Arc<TicketState>>,
    pub(crate) accounted: u64,
    pub(crate) returners: usize,
}

/// How far ahead of a small group the flusher writes zeros. On ext4 and XFS a sync after
/// writing into preallocated-but-unwritten blocks must also commit the extent conversion
/// (a metadata write); writing zeros ahead once per this many bytes makes the syncs of the
/// small groups that follow plain data syncs. The group that writes the zeros pays for
/// them in its sync, so this is also the size of that stall. The measurements that chose
/// it are in the project's `docs/wal-tuning.md`.
pub(crate) const ZERO_AHEAD: u64 = 256 << 10;

/// Groups smaller than this write zeros ahead when they enter unwritten space; larger ones
/// pay the extent conversion in their own sync (`docs/wal-tuning.md`).
pub(crate) const ZERO_AHEAD_BELOW: usize = 128 << 10;

/// How far ahead a lone writer's group writes zeros (a group of one ticket after a group
/// of at most one). Its stall delays only that writer, so fewer, longer stalls are chosen
/// for it (`docs/wal-tuning.md`).
pub(crate) const ZERO_AHEAD_ALONE: u64 = 1 << 20;

/// A group waits for returning writers at most the last sync's duration divided by this.
///
/// Without waiting, writers on a busy log split into two cohorts that alternate: one
/// cohort's group syncs while the other's writers come back, so each group holds about
/// half of them. Waiting for the returning cohort merges the two, which pays when the
/// writers come back faster than a sync takes; waiting too long costs throughput when
/// they come back slower. The measurements that chose a third are in the project's
/// `docs/wal-tuning.md`.
pub(crate) const GROW_SHARE_OF_SYNC: u32 = 3;

/// What the group buffer shrinks to after a group that made it grow past four times the
/// larger of `group_bytes` and 1 MiB (a huge batch): `group_bytes`; `None` keeps it.
fn shrunk_capacity(capacity: usize, group_bytes: usize) -> Option<usize> {
    (capacity > 4 * group_bytes.max(1 << 20)).then_some(group_bytes)
}

/// Whether a group may wait for peers before it is written ([`Flusher::grow`]). Only under
/// `SyncMode::Always`, where every group pays a sync of its own; in the other modes a group
/// is just a write, and a write is cheap to repeat.
fn groups_wait(mode: SyncMode) -> bool {
    mode == SyncMode::Always
}

/// The message of a panic payload (a `&str` or a `String`; anything else is unnamed).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

fn write_all(seg: &mut dyn SegmentFile, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match seg.write_at(buf, off) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "short write")),
            Ok(n) => {
                buf = buf.get(n..).unwrap_or_default();
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl Flusher {
    pub(crate) fn run(mut self) {
        // A panic (a bug, or a storage that panics) must not leave tickets waiting for a
        // flusher that is gone: it poisons the log like an I/O failure.
        let e = match std::panic::catch_unwind(AssertUnwindSafe(|| self.main_loop())) {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(panic) => io::Error::other(format!(
                "the WAL flusher panicked: {}",
                panic_message(&*panic)
            )),
        };
        self.poison(e);
    }

    fn main_loop(&mut self) -> io::Result<()> {
        loop {
            self.fill();
            if self.tickets.is_empty() {
                if self.carry.is_some() {
                    // The next entry does not fit the rest of this segment.
                    self.rollover()?;
                    continue;
                }
                if self.shared.shutdown.load(Ordering::SeqCst) && self.shared.queue.is_empty() {
                    return self.close();
                }
                self.idle()?;
                continue;
            }
            if groups_wait(self.shared.opts.sync_mode) {
                self.grow();
            }
            self.commit_group()?;
            // A group encoded ahead goes into this segment first.
            if self.carry.is_some() && self.tickets.is_empty() {
                self.rollover()?;
            }
        }
    }

    /// Drains the queue into the group until it is empty, the byte threshold is reached,
    /// or the next entry does not fit the current segment (kept in `carry`).
    fn fill(&mut self) {
        let threshold = self.shared.opts.group_bytes;
        while self.group.len() < threshold {
            let Some(entry) = self.carry.take().or_else(|| self.shared.queue.pop()) else {
                break;
            };
            let end = self.write_off + (self.group.len() + entry.frames.len()) as u64;
            if end > self.seg_len {
                self.carry = Some(entry);
                break;
            }
            self.encode(entry);
        }
    }

    fn encode(&mut self, entry: Entry) {
        let Entry {
            frames,
            ticket,
            seen,
        } = entry;
        if seen >= self.published {
            self.returners += 1;
        }
        let base = self.group.len();
        self.group.extend_from_slice(&frames);
        // The group is written at `write_off` of the current segment (a group encoded ahead
        // right after the one being synced, which already advanced `write_off`).
        ticket.set_lsn(self.next_lsn, self.seg_first, self.write_off + base as u64);
        let mut pos = base;
        for _ in 0..ticket.records() {
            let extra = if self.epoch_start {
                self.epoch_start = false;
                format::FLAG_EPOCH_START
            } else {
                0
            };
            let Some(n) = self
                .group
                .get_mut(pos..)
                .and_then(|rest| format::seal_record(rest, self.next_lsn, extra))
            else {
                break; // unreachable: frames are built by `Wal::submit`
            };
            pos += n;
            self.next_lsn += 1;
        }
        self.group_accounted += frames.len() as u64;
        self.tickets.push(ticket);
        self.shared.recycle(frames);
    }

    /// Lets the group wait for the previous group's writers to come back: until as many of
    /// its entries were queued after that group was published as that group had tickets
    /// being waited on (a pipelined producer that waits only on its last ticket is not
    /// waited for: its records keep coming anyway),
    /// while they keep arriving (a quiet `grow_step`, 200 µs, ends the wait), never longer
    /// than [`GROW_SHARE_OF_SYNC`] of the last sync nor the configured interval. Yields the
    /// CPU between looks at the queue, so the writers it waits for can run.
    fn grow(&mut self) {
        let bound = self
            .shared
            .opts
            .group_interval
            .min(self.last_sync_dur / GROW_SHARE_OF_SYNC);
        let start = Instant::now();
        let deadline = start + bound;
        let mut last_arrival = start;
        while self.returners < self.prev_waiters && self.room_to_grow() {
            let now = Instant::now();
            if now >= deadline || now - last_arrival >= self.shared.opts.grow_step {
                break;
            }
            let before = self.tickets.len();
            if self.shared.queue.is_empty() {
                std::thread::yield_now();
            }
            self.fill();
            if self.tickets.len() != before {
                last_arrival = Instant::now();
            }
        }
    }

    /// Whether `fill` could still add to the group: it is below the byte threshold and no
    /// entry waits for the next segment. (When not, `fill` adds nothing and the growth loop
    /// ends on its next pass anyway; checking first saves that pass's wait.)
    fn room_to_grow(&self) -> bool {
        self.group.len() < self.shared.opts.group_bytes && self.carry.is_none()
    }

    fn commit_group(&mut self) -> io::Result<()> {
        let len = self.group.len();
        let end = self.write_off + len as u64;
        // A small group entering unwritten space also writes zeros ahead of itself; a
        // large one pays the extent conversion once for many records.
        let ahead = if self.tickets.len() == 1 && self.prev_group_entries <= 1 {
            ZERO_AHEAD_ALONE
        } else {
            ZERO_AHEAD
        };
        let pad_to = if end > self.zeroed_upto && len < ZERO_AHEAD_BELOW {
            (end + ahead).min(self.seg_len)
        } else {
            end
        };
        self.group.resize(len + (pad_to - end) as usize, 0);
        let written = write_all(&mut *self.seg, &self.group, self.write_off);
        self.group.truncate(len);
        written?;
        self.shared
            .stats
            .bytes_written
            .fetch_add(len as u64, Ordering::Relaxed);
        self.shared
            .stats
            .zeros_written
            .fetch_add(pad_to - end, Ordering::Relaxed);
        self.zeroed_upto = self.zeroed_upto.max(pad_to);
        let start = self.write_off;
        self.write_off = end;
        self.dirty = true;
        // The last record of this group: a group encoded ahead below takes the LSNs after
        // it, but is not in the file until after this group's sync.
        let last = self.next_lsn - 1;
        if self.index_falls_due(end) {
            self.index_group(start, len);
        }
        match self.shared.opts.sync_mode {
            SyncMode::Always => {
                if len >= self.shared.opts.group_bytes && !self.shared.queue.is_empty() {
                    self.encode_ahead(start, len)?;
                }
                self.sync()?;
            }
            SyncMode::Interval(d) if self.last_sync.elapsed() >= d => self.sync()?,
            SyncMode::Interval(_) | SyncMode::Never => {}
        }
        self.prev_group_entries = self.tickets.len();
        self.group.clear();
        if let Some(cap) = shrunk_capacity(self.group.capacity(), self.shared.opts.group_bytes) {
            self.group.shrink_to(cap);
        }
        self.published = last;
        self.returners = 0;
        self.shared.stats.groups.fetch_add(1, Ordering::Relaxed);
        self.last_publish = Instant::now();
        self.shared.publish(crate::DurablePosition {
            lsn: last,
            segment: self.seg_first,
            end_offset: end,
        });
        let mut waiters = 0;
        for t in self.tickets.drain(..) {
            waiters += usize::from(t.waited());
            t.complete();
        }
        self.prev_waiters = waiters;
        self.shared
            .release(std::mem::take(&mut self.group_accounted));
        self.swap_ahead();
        Ok(())
    }

    /// Whether a group ending at `end` reaches the offset where the next index entry is
    /// due. A shortcut only: for a group that does not, [`Flusher::index_group`] would walk
    /// its records and note none.
    fn index_falls_due(&self, end: u64) -> bool {
        end > self.index_due
    }

    /// Notes the records of the group just written at `start` (`len` bytes) that fall due
    /// in the segment's sparse index.
    fn index_group(&mut self, start: u64, len: usize) {
        let Some(mut lsn) = self.tickets.first().map(|t| t.lsn()) else {
            return;
        };
        let mut notes = Vec::new();
        let mut pos = 0;
        // The group holds whole records this flusher framed and sealed.
        while let Some(h) = self
            .group
            .get(pos..len)
            .and_then(format::decode_record_header)
        {
            let off = start + pos as u64;
            if off >= self.index_due {
                notes.push((lsn, off));
                // Only keeps the list short: `SparseIndex::note` applies the same rule.
                self.index_due = off.saturating_add(crate::index::INDEX_EVERY);
            }
            pos += h.framed_len();
            lsn += 1;
        }
        self.shared.note_index(self.seg_first, &notes);
    }

    /// Swaps the current group with the one encoded ahead.
    fn swap_ahead(&mut self) {
        std::mem::swap(&mut self.group, &mut self.ahead.group);
        std::mem::swap(&mut self.tickets, &mut self.ahead.tickets);
        std::mem::swap(&mut self.group_accounted, &mut self.ahead.accounted);
        std::mem::swap(&mut self.returners, &mut self.ahead.returners);
    }

    /// While a full group's sync is pending and more is queued, encodes the next group so
    /// the CPU work overlaps the disk's: starts the written range's writeback first (the
    /// sync that follows then waits for less), then fills [`Ahead`] from the queue. The
    /// next group's first record starts a sync epoch: it is written only after this sync
    /// completed (a failed sync poisons the log first).
    fn encode_ahead(&mut self, start: u64, len: usize) -> io::Result<()> {
        self.seg.start_writeback(start, len as u64)?;
        self.swap_ahead();
        self.epoch_start = true;
        self.fill();
        self.swap_ahead();
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        let t = Instant::now();
        self.seg.sync_data()?;
        self.last_sync = Instant::now();
        self.last_sync_dur = self.last_sync - t;
        self.dirty = false;
        self.shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
        // The next write starts an epoch, and only its first record may say so: a group
        // encoded ahead during this sync already flagged its first record, so the records
        // `fill` adds to it after the sync belong to the same write and do not.
        self.epoch_start = self.ahead.tickets.is_empty();
        Ok(())
    }

    /// A clean close: syncs what was written, then writes and syncs the close marker after
    /// the last record (in a new segment if this one has no room for it). Recovery then
    /// knows where the log ended: a damaged record before the marker is corruption, not a
    /// torn tail. The records are synced first, so a crash during the close never leaves
    /// a marker after records that are not on disk.
    fn close(&mut self) -> io::Result<()> {
        if self.dirty {
            self.sync()?;
        }
        let marker = format::close_marker(self.next_lsn);
        if self.write_off + marker.len() as u64 > self.seg_len {
            self.rollover()?;
        }
        write_all(&mut *self.seg, &marker, self.write_off)?;
        self.sync()
    }

    /// Seals the current segment (synced in every mode) and starts a new one, in a spare's
    /// file when there is one.
    fn rollover(&mut self) -> io::Result<()> {
        if self.dirty {
            self.sync()?;
        }
        let first = self.next_lsn;
        let dir = &self.shared.dir;
        let path = dir.join(format::segment_file_name(first));
        let size = self.shared.opts.segment_size;
        let sealed_end = self.write_off;
        self.write_off = format::SEGMENT_HEADER_LEN as u64;
        self.index_due = self.write_off + crate::index::INDEX_EVERY;
        self.seg = match self.reuse_spare(&path, first)? {
            Some(seg) => {
                // Written blocks throughout: no zeros ahead, no extent conversions.
                self.zeroed_upto = size;
                seg
            }
            None => {
                let tmp = path.with_extension("tmp");
                let header = format::encode_segment_header(first, false);
                self.zeroed_upto = self.write_off;
                self.storage.create_segment(&tmp, &path, size, &header)?
            }
        };
        self.seg_len = size;
        self.seg_first = first;
        self.epoch_start = true;
        self.shared.add_segment(
            SegmentMeta {
                first_lsn: first,
                path,
                end: self.write_off,
                file_len: size,
                index: crate::index::SparseIndex::default(),
            },
            sealed_end,
        );
        Ok(())
    }

    /// Makes a spare the segment at `path` starting at `first`. A spare of another size
    /// (the segment size changed) or one gone missing is deleted and the next one tried;
    /// `None` when none is left.
    fn reuse_spare(
        &self,
        path: &std::path::Path,
        first: u64,
    ) -> io::Result<Option<Box<dyn SegmentFile>>> {
        let size = self.shared.opts.segment_size;
        let header = format::encode_segment_header(first, true);
        while let Some(spare) = self.shared.take_spare() {
            match self.storage.recycle_segment(&spare, path, size, &header) {
                Ok(Some(seg)) => return Ok(Some(seg)),
                Ok(None) => std::fs::remove_file(&spare)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    fn idle(&mut self) -> io::Result<()> {
        let timeout = match self.shared.opts.sync_mode {
            SyncMode::Interval(d) if self.dirty => {
                let since = self.last_sync.elapsed();
                if since >= d {
                    return self.sync();
                }
                Some(d - since)
            }
            _ => None,
        };
        // The writers of the group just published usually append again within
        // microseconds (a lone writer always does): yield for up to `wait_yield` after a
        // group before parking, so their next append finds this thread awake and pays no
        // futex wake-up (nor this thread its two context switches) on its path.
        let until = self.last_publish + self.shared.opts.wait_yield;
        while self.shared.queue.is_empty()
            && !self.shared.shutdown.load(Ordering::SeqCst)
            && Instant::now() < until
        {
            std::thread::yield_now();
        }
        if !self.shared.queue.is_empty() {
            return Ok(());
        }
        self.shared.flusher_sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.shared.queue.is_empty() && !self.shared.shutdown.load(Ordering::SeqCst) {
            match timeout {
                Some(t) => std::thread::park_timeout(t),
                None => std::thread::park(),
            }
        }
        self.shared.flusher_sleeping.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Sticky failure: fails the group and everything queued now or later, until shutdown.
    fn poison(mut self, e: io::Error) {
        let cause = Arc::new(e);
        let _ = self.shared.poison.set(Arc::clone(&cause));
        for t in self.tickets.drain(..).chain(self.ahead.tickets.drain(..)) {
            t.fail(Arc::clone(&cause));
        }
        self.shared.release(
            std::mem::take(&mut self.group_accounted) + std::mem::take(&mut self.ahead.accounted),
        );
        if let Some(e) = self.carry.take() {
            self.shared.release(e.frames.len() as u64);
            e.ticket.fail(Arc::clone(&cause));
        }
        self.shared.wake_all_waiters();
        loop {
            while let Some(e) = self.shared.queue.pop() {
                self.shared.release(e.frames.len() as u64);
                e.ticket.fail(Arc::clone(&cause));
            }
            if self.shared.shutdown.load(Ordering::SeqCst) && self.shared.queue.is_empty() {
                return;
            }
            self.shared.flusher_sleeping.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            if self.shared.queue.is_empty() && !self.shared.shutdown.load(Ordering::SeqCst) {
                std::thread::park();
            }
            self.shared.flusher_sleeping.store(false, Ordering::SeqCst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{groups_wait, panic_message, shrunk_capacity};
    use crate::SyncMode;
    use std::time::Duration;

    #[test]
    fn a_panic_s_message_is_its_str_or_string_payload() {
        let payload = |f: fn()| std::panic::catch_unwind(f).unwrap_err();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let literal = payload(|| panic!("a literal"));
        let formatted = payload(|| panic!("formatted {}", 7));
        let other = payload(|| std::panic::panic_any(7u32));
        std::panic::set_hook(prev);
        assert_eq!(panic_message(&*literal), "a literal");
        assert_eq!(panic_message(&*formatted), "formatted 7");
        assert_eq!(panic_message(&*other), "(no message)");
    }

    #[test]
    fn only_groups_synced_on_their_own_wait_for_peers() {
        assert!(groups_wait(SyncMode::Always));
        assert!(!groups_wait(SyncMode::Interval(Duration::from_millis(5))));
        assert!(!groups_wait(SyncMode::Never));
    }

    #[test]
    fn the_group_buffer_shrinks_only_past_four_times_the_larger_of_group_bytes_and_1_mib() {
        const MIB: usize = 1 << 20;
        assert_eq!(shrunk_capacity(4 * MIB, MIB), None);
        assert_eq!(shrunk_capacity(4 * MIB + 1, MIB), Some(MIB));
        assert_eq!(shrunk_capacity(8 * MIB, 2 * MIB), None);
        assert_eq!(shrunk_capacity(8 * MIB + 1, 2 * MIB), Some(2 * MIB));
        // Small group_bytes: the bound is still four times 1 MiB.
        assert_eq!(shrunk_capacity(4 * MIB, 64 << 10), None);
        assert_eq!(shrunk_capacity(4 * MIB + 1, 64 << 10), Some(64 << 10));
    }
}
