//! The not-yet-checkpointed tail: acknowledged append records kept in memory, in LSN
//! (= position) order, until the checkpointer has applied them to `events.mdb`. Its size is
//! bounded by `Options::max_tail_bytes` (appends wait past it).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::codec::{Body, Group, ParsedAppend, body_at};

/// One append record (one `append`/`append_multi` call).
#[derive(Debug)]
pub(crate) struct TailEntry {
    pub(crate) lsn: u64,
    pub(crate) first_position: u64,
    pub(crate) timestamp_us: u64,
    pub(crate) bytes: Vec<u8>,
    pub(crate) groups: Vec<Group>,
    /// Byte range of each event's body in `bytes`.
    pub(crate) events: Vec<(u32, u32)>,
}

/// An event located in a tail entry.
pub(crate) struct Located<'a> {
    pub(crate) stream_id: u64,
    pub(crate) version: u64,
    pub(crate) body: &'a [u8],
}

impl TailEntry {
    pub(crate) fn from_parsed(lsn: u64, bytes: Vec<u8>, p: ParsedAppend) -> Self {
        TailEntry {
            lsn,
            first_position: p.first_position,
            timestamp_us: p.timestamp_us,
            bytes,
            groups: p.groups,
            events: p.events,
        }
    }

    /// One past the last position of the entry.
    pub(crate) fn end(&self) -> u64 {
        self.first_position + self.events.len() as u64
    }

    /// The event with index `i` in this entry.
    pub(crate) fn locate(&self, i: usize) -> Located<'_> {
        let g = self.groups.partition_point(|g| g.first_event as usize <= i) - 1;
        let group = &self.groups[g];
        let (off, len) = self.events[i];
        Located {
            stream_id: group.stream_id,
            version: group.first_version + (i - group.first_event as usize) as u64,
            body: &self.bytes[off as usize..(off + len) as usize],
        }
    }

    /// The decoded body of event `i` (checked when the entry was built).
    pub(crate) fn body(&self, i: usize) -> Body<'_> {
        let loc = self.locate(i);
        match body_at(loc.body) {
            Ok(b) => b,
            // The record was parsed in full before it entered the tail.
            Err(_) => unreachable!("tail entries hold parsed records"),
        }
    }

    /// Memory the entry holds, as the tail counts it.
    pub(crate) fn cost(&self) -> u64 {
        (self.bytes.len() + self.events.len() * 8 + self.groups.len() * 48 + 96) as u64
    }
}

/// A stream's run of events inside one tail entry.
#[derive(Debug, Clone)]
pub(crate) struct Run {
    pub(crate) entry: Arc<TailEntry>,
    pub(crate) group: usize,
}

impl Run {
    pub(crate) fn first_version(&self) -> u64 {
        self.entry.groups[self.group].first_version
    }
    pub(crate) fn count(&self) -> u64 {
        u64::from(self.entry.groups[self.group].count)
    }
    /// Index in the entry of the event with `version` (which the run holds).
    pub(crate) fn index_of(&self, version: u64) -> usize {
        let g = &self.entry.groups[self.group];
        g.first_event as usize + (version - g.first_version) as usize
    }
}

/// The tail itself; guarded by the engine's `RwLock`.
#[derive(Debug, Default)]
pub(crate) struct Tail {
    pub(crate) entries: VecDeque<Arc<TailEntry>>,
    /// `entries[..visible]` are durable and may be read.
    pub(crate) visible: usize,
    pub(crate) bytes: u64,
    runs: HashMap<u64, VecDeque<Run>>,
}

impl Tail {
    /// Adds an entry (not yet visible).
    pub(crate) fn push(&mut self, e: Arc<TailEntry>) {
        self.bytes += e.cost();
        for g in 0..e.groups.len() {
            self.runs
                .entry(e.groups[g].stream_id)
                .or_default()
                .push_back(Run {
                    entry: Arc::clone(&e),
                    group: g,
                });
        }
        self.entries.push_back(e);
    }

    /// Removes the `n` oldest entries (checkpointed). Returns the bytes they held.
    pub(crate) fn pop(&mut self, n: usize) -> u64 {
        let mut freed = 0;
        for _ in 0..n {
            let Some(e) = self.entries.pop_front() else {
                break;
            };
            freed += e.cost();
            for g in &e.groups {
                if let Some(q) = self.runs.get_mut(&g.stream_id) {
                    q.pop_front();
                    if q.is_empty() {
                        self.runs.remove(&g.stream_id);
                    }
                }
            }
        }
        self.visible = self.visible.saturating_sub(n);
        self.bytes -= freed;
        freed
    }

    /// Drops the entries that never became visible (their log write failed).
    pub(crate) fn truncate_invisible(&mut self) {
        while self.entries.len() > self.visible {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            self.bytes -= e.cost();
            for g in &e.groups {
                if let Some(q) = self.runs.get_mut(&g.stream_id) {
                    q.pop_back();
                    if q.is_empty() {
                        self.runs.remove(&g.stream_id);
                    }
                }
            }
        }
    }

    /// Index of the visible entry holding `position`, if the tail has it.
    pub(crate) fn find(&self, position: u64) -> Option<usize> {
        let i = self.entries.partition_point(|e| e.end() <= position);
        (i < self.visible && self.entries[i].first_position <= position).then_some(i)
    }

    /// The visible runs of a stream, oldest first.
    pub(crate) fn visible_runs(&self, stream_id: u64, visible_end: u64) -> Vec<Run> {
        self.runs.get(&stream_id).map_or_else(Vec::new, |q| {
            q.iter()
                .take_while(|r| r.entry.first_position < visible_end)
                .cloned()
                .collect()
        })
    }
}
