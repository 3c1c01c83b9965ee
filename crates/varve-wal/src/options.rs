//! [`Options`], the settings of a [`Wal`](crate::Wal), with the [`SyncMode`] and
//! [`RecoveryMode`] they choose between.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::{Lsn, format};

/// When a group is synced, and so what a crash can lose (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` every group before acknowledging it. A crash of the process, the OS or
    /// the machine loses no acknowledged record.
    #[default]
    Always,
    /// Acknowledge once written to the OS; sync at most this long after a write. A process
    /// crash loses nothing acknowledged; an OS crash or power loss can lose what was
    /// acknowledged within the interval (plus one sync's duration).
    Interval(Duration),
    /// Acknowledge once written to the OS; sync only when sealing a segment and on close.
    /// A process crash loses nothing acknowledged; an OS crash or power loss can lose
    /// everything written since the last sealed segment.
    Never,
}

/// What open does with corruption in the middle of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// Refuse to open: [`Error::Corrupted`] with the location.
    #[default]
    Strict,
    /// Keep the clean prefix before the corruption and drop everything after it.
    TolerateCorruptTail,
}

/// Settings of a [`Wal`](crate::Wal); build with [`Options::default`] and the setters.
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) segment_size: u64,
    pub(crate) sync_mode: SyncMode,
    pub(crate) group_interval: Duration,
    pub(crate) group_bytes: usize,
    pub(crate) max_queued_bytes: u64,
    pub(crate) max_record_size: usize,
    pub(crate) recovery_mode: RecoveryMode,
    pub(crate) wait_yield: Duration,
    pub(crate) recycle_segments: usize,
    pub(crate) start_lsn: Lsn,
    /// A growing group stops waiting after this long without a new arrival (200 µs; tests
    /// lengthen it so arrivals they space out by milliseconds still count as peers).
    pub(crate) grow_step: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 64 << 20,
            sync_mode: SyncMode::Always,
            group_interval: Duration::from_millis(10),
            group_bytes: 1 << 20,
            max_queued_bytes: 64 << 20,
            max_record_size: 16 << 20,
            recovery_mode: RecoveryMode::Strict,
            wait_yield: Duration::from_micros(500),
            recycle_segments: 2,
            start_lsn: 1,
            grow_step: Duration::from_micros(200),
        }
    }
}

impl Options {
    /// Size each new segment file is preallocated to (default 64 MiB).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
    /// The durability contract (default [`SyncMode::Always`]).
    pub fn sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync_mode = mode;
        self
    }
    /// The longest a group may wait for more records before it is written (default 10 ms).
    ///
    /// Under [`SyncMode::Always`] a group waits for the writers of the previous group to
    /// append again: until as many records were queued since that group became durable as
    /// it had tickets being waited on ([`Ticket::wait`](crate::Ticket::wait)), while they
    /// keep arriving (a 200 µs pause ends the wait), and never longer than a third of the last
    /// `fdatasync` nor this interval. A lone writer's next record completes its group at once,
    /// so it adds no latency on an idle disk. The other modes never wait: their groups are only
    /// writes. Why groups wait, and the measurements behind the third, are in the project's
    /// `docs/wal-tuning.md`.
    ///
    /// The interval only matters on disks whose syncs take longer than 30 ms;
    /// `Duration::ZERO` turns the wait off.
    pub fn group_interval(mut self, d: Duration) -> Self {
        self.group_interval = d;
        self
    }
    /// A group is closed early once it holds this many bytes (default 1 MiB). Under
    /// `SyncMode::Always`, a full group with more queued behind it has the next group
    /// encoded while it syncs (see the crate docs on memory and I/O).
    pub fn group_bytes(mut self, bytes: usize) -> Self {
        self.group_bytes = bytes;
        self
    }
    /// Cap on queued-but-unwritten bytes (default 64 MiB); past it `append` blocks and
    /// `try_append` returns [`Error::Backpressure`].
    pub fn max_queued_bytes(mut self, bytes: u64) -> Self {
        self.max_queued_bytes = bytes;
        self
    }
    /// Largest payload accepted (default 16 MiB); larger is [`Error::RecordTooLarge`].
    pub fn max_record_size(mut self, bytes: usize) -> Self {
        self.max_record_size = bytes;
        self
    }
    /// What open does with corruption in the middle (default [`RecoveryMode::Strict`]).
    pub fn recovery_mode(mut self, mode: RecoveryMode) -> Self {
        self.recovery_mode = mode;
        self
    }
    /// How long [`Ticket::wait`](crate::Ticket::wait) keeps yielding the CPU (`sched_yield`)
    /// while its records are not durable yet, before it parks the thread (default 500 µs,
    /// about two `fdatasync`s of a quiet virtual disk).
    ///
    /// A parked waiter costs the flusher a futex wake-up and itself two context switches,
    /// all of it on the path of the next group; a waiter still yielding sees its
    /// completion without either. The price is CPU: a waiting thread runs (giving way to
    /// any other runnable thread) for up to this long per wait, so a lone writer keeps
    /// about one core busy while its syncs run. The measurements behind the default are in
    /// the project's `docs/wal-tuning.md`.
    ///
    /// The flusher does the same after each group: it yields for up to this long for the
    /// next append before it parks, so a writer that appends again right after its ticket
    /// completed (a lone writer always does) finds it awake and wakes nobody.
    /// `Duration::ZERO` parks at once on both sides: the least CPU, for hosts where cores
    /// are scarce or metered.
    pub fn wait_yield(mut self, d: Duration) -> Self {
        self.wait_yield = d;
        self
    }
    /// How many segments [`Wal::truncate_before`](crate::Wal::truncate_before) keeps as
    /// spares instead of deleting them (default 2; 0 deletes every one). A new segment
    /// reuses a spare's file: its blocks
    /// are already written, so its syncs are plain data syncs from the first record on and
    /// no zeros are written ahead. A spare takes a segment's disk space until it is reused
    /// or the WAL is opened with fewer spares allowed.
    pub fn recycle_segments(mut self, n: usize) -> Self {
        self.recycle_segments = n;
        self
    }

    /// The next record's LSN is at least `lsn` (default 1): for a caller that knows what it
    /// already applied elsewhere (a checkpoint) and must never see an LSN at or below it
    /// again.
    ///
    /// When the log on disk already ends at or above `lsn - 1`, numbering continues from
    /// the log and this changes nothing. When the log is empty or ends below, the next
    /// record gets `lsn`: the log cannot hold a gap, so its segments (every record in them
    /// below `lsn`) leave it on open as by
    /// [`Wal::truncate_before`](crate::Wal::truncate_before) (kept as spares up to
    /// [`Options::recycle_segments`], the others deleted; counted in
    /// [`RecoveryReport::retired_segments`](crate::RecoveryReport::retired_segments)) and a
    /// new segment starts at `lsn`. After that, [`Wal::first_lsn`](crate::Wal::first_lsn) is
    /// `lsn` and [`Wal::durable_lsn`](crate::Wal::durable_lsn) is `lsn - 1`. `0` acts as
    /// `1`; at or above 2^62 is [`Error::InvalidOptions`].
    pub fn start_lsn(mut self, lsn: Lsn) -> Self {
        self.start_lsn = lsn.max(1);
        self
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.segment_size
            .saturating_sub(format::SEGMENT_HEADER_LEN as u64)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what, why| Err(Error::InvalidOptions { what, why });
        if self.max_record_size > u32::MAX as usize {
            return bad("max_record_size", "must fit in 32 bits");
        }
        let need = (format::RECORD_HEADER_LEN + self.max_record_size) as u64;
        if self.capacity() < need {
            return bad(
                "segment_size",
                "must hold a header and one record of max_record_size",
            );
        }
        if self.start_lsn >= 1 << 62 {
            return bad("start_lsn", "must be below 2^62");
        }
        if self.group_bytes == 0 {
            return bad("group_bytes", "must be positive");
        }
        if self.max_queued_bytes == 0 {
            return bad("max_queued_bytes", "must be positive");
        }
        Ok(())
    }
}
