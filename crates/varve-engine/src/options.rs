//! How a store is opened: limits, checkpoint triggers, durability.

use std::time::Duration;

pub use varve_wal::SyncMode;

use crate::error::{Error, Result};

/// Options for [`Varve::open`](crate::Varve::open). Build from `Options::default()` with the
/// setters; every value is checked at open ([`Error::InvalidOptions`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    pub(crate) sync_mode: SyncMode,
    pub(crate) checkpoint_bytes: u64,
    pub(crate) checkpoint_interval: Duration,
    pub(crate) max_tail_bytes: u64,
    pub(crate) tail_cache_bytes: u64,
    pub(crate) map_size: u64,
    pub(crate) max_stream_name: usize,
    pub(crate) max_event_type: usize,
    pub(crate) max_metadata_bytes: usize,
    pub(crate) max_payload_bytes: usize,
    pub(crate) max_call_bytes: usize,
    pub(crate) max_snapshot_bytes: usize,
    pub(crate) wal_segment_size: u64,
    pub(crate) wal_queue_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync_mode: SyncMode::Always,
            checkpoint_bytes: 16 << 20,
            checkpoint_interval: Duration::from_secs(1),
            max_tail_bytes: 256 << 20,
            tail_cache_bytes: 64 << 20,
            map_size: 1 << 40,
            max_stream_name: 256,
            max_event_type: 256,
            max_metadata_bytes: 64 << 10,
            max_payload_bytes: 64 << 20,
            max_call_bytes: 128 << 20,
            max_snapshot_bytes: 64 << 20,
            wal_segment_size: 64 << 20,
            wal_queue_bytes: 64 << 20,
        }
    }
}

impl Options {
    /// When an append is acknowledged (default [`SyncMode::Always`]: after `fdatasync`).
    #[must_use]
    pub fn sync_mode(mut self, mode: SyncMode) -> Self {
        self.sync_mode = mode;
        self
    }
    /// The checkpointer runs once this many bytes of log records wait (default 16 MiB).
    #[must_use]
    pub fn checkpoint_bytes(mut self, bytes: u64) -> Self {
        self.checkpoint_bytes = bytes;
        self
    }
    /// The checkpointer runs at least this often while records wait (default 1 s).
    #[must_use]
    pub fn checkpoint_interval(mut self, every: Duration) -> Self {
        self.checkpoint_interval = every;
        self
    }
    /// Appends wait for the checkpointer while more than this many bytes of acknowledged
    /// records are not yet checkpointed (default 256 MiB): what the WAL holds beyond the
    /// checkpoint, and so what a reopen replays.
    #[must_use]
    pub fn max_tail_bytes(mut self, bytes: u64) -> Self {
        self.max_tail_bytes = bytes;
        self
    }
    /// Memory for reading not-yet-checkpointed events back from the WAL (default 64 MiB;
    /// at least 256 KiB, rounded down to 256 KiB): the most `varve-arena`'s cache over the
    /// WAL segments holds at once, however far the tail grows. Up to a quarter of it stays
    /// mapped while unused, so that reads do not map and unmap memory over and over.
    #[must_use]
    pub fn tail_cache_bytes(mut self, bytes: u64) -> Self {
        self.tail_cache_bytes = bytes;
        self
    }
    /// The largest size `events.mdb` may grow to (LMDB map size; default 1 TiB of address
    /// space, not of disk).
    #[must_use]
    pub fn map_size(mut self, bytes: u64) -> Self {
        self.map_size = bytes;
        self
    }
    /// Longest stream name in bytes (default 256; at most 65,535).
    #[must_use]
    pub fn max_stream_name(mut self, bytes: usize) -> Self {
        self.max_stream_name = bytes;
        self
    }
    /// Longest event type in bytes (default 256; at most 65,535).
    #[must_use]
    pub fn max_event_type(mut self, bytes: usize) -> Self {
        self.max_event_type = bytes;
        self
    }
    /// Largest metadata of one event (default 64 KiB).
    #[must_use]
    pub fn max_metadata_bytes(mut self, bytes: usize) -> Self {
        self.max_metadata_bytes = bytes;
        self
    }
    /// Largest payload of one event (default 64 MiB).
    #[must_use]
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }
    /// Largest call, counted as the bytes of all its events (payloads, metadata, types and
    /// framing) as if every payload were inline (default 128 MiB). Large payloads go to the
    /// sidecar, so a call's log record is smaller; it must also fit in half a WAL segment
    /// ([`wal_segment_size`](Self::wal_segment_size)).
    #[must_use]
    pub fn max_call_bytes(mut self, bytes: usize) -> Self {
        self.max_call_bytes = bytes;
        self
    }

    /// Largest snapshot ([`Varve::put_snapshot`](crate::Varve::put_snapshot); default 64
    /// MiB, at most 512 MiB).
    #[must_use]
    pub fn max_snapshot_bytes(mut self, bytes: usize) -> Self {
        self.max_snapshot_bytes = bytes;
        self
    }

    /// Size of each WAL segment file (default 64 MiB, 1 MiB..=4 GiB). One call's log
    /// record (the call without its large payloads, which go to the sidecar) must fit in
    /// half a segment.
    #[must_use]
    pub fn wal_segment_size(mut self, bytes: u64) -> Self {
        self.wal_segment_size = bytes;
        self
    }

    /// Log bytes appends may queue before the WAL has written them (default 64 MiB; at
    /// least 1). Past it an append waits, outside the sequencer's lock, for the log to
    /// catch up ([`Stats::append_retries`](crate::Stats::append_retries) counts those
    /// waits); one record larger than it still goes through when the queue is empty.
    #[must_use]
    pub fn wal_queue_bytes(mut self, bytes: u64) -> Self {
        self.wal_queue_bytes = bytes;
        self
    }

    /// The largest log record one call may produce.
    pub(crate) fn max_record_bytes(&self) -> usize {
        usize::try_from(self.wal_segment_size / 2).unwrap_or(usize::MAX)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what, why| Err(Error::InvalidOptions { what, why });
        if self.max_stream_name == 0 || self.max_stream_name > u16::MAX as usize {
            return bad("max_stream_name", "must be 1..=65535");
        }
        if self.max_event_type == 0 || self.max_event_type > u16::MAX as usize {
            return bad("max_event_type", "must be 1..=65535");
        }
        if self.max_metadata_bytes > u32::MAX as usize / 2 {
            return bad("max_metadata_bytes", "must be below 2 GiB");
        }
        if self.max_payload_bytes > u32::MAX as usize / 2 {
            return bad("max_payload_bytes", "must be below 2 GiB");
        }
        if self.max_call_bytes == 0 || self.max_call_bytes > 1 << 30 {
            return bad("max_call_bytes", "must be 1 B..=1 GiB");
        }
        if self.max_snapshot_bytes > 512 << 20 {
            return bad("max_snapshot_bytes", "must be at most 512 MiB");
        }
        if self.checkpoint_bytes == 0 {
            return bad("checkpoint_bytes", "must be positive");
        }
        if self.checkpoint_interval.is_zero() {
            return bad("checkpoint_interval", "must be positive");
        }
        if self.max_tail_bytes < self.checkpoint_bytes {
            return bad("max_tail_bytes", "must be at least checkpoint_bytes");
        }
        if self.tail_cache_bytes < varve_arena::CHUNK_BYTES {
            return bad("tail_cache_bytes", "must be at least 256 KiB");
        }
        if self.wal_segment_size < 1 << 20 || self.wal_segment_size > 1 << 32 {
            return bad("wal_segment_size", "must be 1 MiB..=4 GiB");
        }
        if self.wal_queue_bytes == 0 {
            return bad("wal_queue_bytes", "must be positive");
        }
        if self.map_size < 1 << 20 {
            return bad("map_size", "must be at least 1 MiB");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_each_bad_value_names_itself() {
        assert!(Options::default().validate().is_ok());
        let cases: Vec<(Options, &str)> = vec![
            (Options::default().max_stream_name(0), "max_stream_name"),
            (
                Options::default().tail_cache_bytes(255 << 10),
                "tail_cache_bytes",
            ),
            (Options::default().max_stream_name(65536), "max_stream_name"),
            (Options::default().max_event_type(0), "max_event_type"),
            (Options::default().max_event_type(65536), "max_event_type"),
            (
                Options::default().max_metadata_bytes(1 << 31),
                "max_metadata_bytes",
            ),
            (
                Options::default().max_payload_bytes(1 << 31),
                "max_payload_bytes",
            ),
            (Options::default().max_call_bytes(0), "max_call_bytes"),
            (
                Options::default().max_call_bytes((1 << 30) + 1),
                "max_call_bytes",
            ),
            (Options::default().checkpoint_bytes(0), "checkpoint_bytes"),
            (
                Options::default().checkpoint_interval(Duration::ZERO),
                "checkpoint_interval",
            ),
            (
                Options::default().checkpoint_bytes(10).max_tail_bytes(9),
                "max_tail_bytes",
            ),
            (Options::default().map_size(1000), "map_size"),
            (Options::default().wal_queue_bytes(0), "wal_queue_bytes"),
            (
                Options::default().max_snapshot_bytes((512 << 20) + 1),
                "max_snapshot_bytes",
            ),
            (
                Options::default().wal_segment_size(1000),
                "wal_segment_size",
            ),
            (
                Options::default().wal_segment_size((1 << 32) + 1),
                "wal_segment_size",
            ),
        ];
        for (o, name) in cases {
            match o.validate() {
                Err(Error::InvalidOptions { what, .. }) => assert_eq!(what, name),
                other => panic!("{name}: {other:?}"),
            }
        }
        // Edges that are allowed.
        let ok = Options::default()
            .max_stream_name(65535)
            .max_event_type(1)
            .max_call_bytes(1 << 30)
            .checkpoint_bytes(10)
            .max_tail_bytes(10)
            .map_size(1 << 20)
            .wal_segment_size(1 << 20);
        assert!(ok.validate().is_ok());
    }
}
