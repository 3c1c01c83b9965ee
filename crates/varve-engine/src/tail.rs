//! The not-yet-checkpointed tail: an index of the acknowledged append records the
//! checkpointer has not yet applied to `events.mdb`, in LSN (= position) order. It holds
//! where each record lies in the WAL and which streams it extends, never the events'
//! bytes: those are read back from the WAL segments through `varve-arena`
//! ([`Loaded`]). The WAL bytes it covers are bounded by `Options::max_tail_bytes`
//! (appends wait past it).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use varve_arena::Record;

use crate::codec::{Body, Group, ParsedAppend, body_at};

/// One append record (one `append`/`append_multi` call).
#[derive(Debug)]
pub(crate) struct TailEntry {
    pub(crate) lsn: u64,
    pub(crate) first_position: u64,
    /// Events in the record.
    pub(crate) events: u32,
    /// The record's payload length (its bytes in the WAL, header not counted).
    pub(crate) record_len: u64,
    pub(crate) groups: Vec<Group>,
    /// Where the WAL wrote it: (segment's first LSN, offset of the record's header). Set
    /// once the record is durable, by its appender or by whichever publish finds it durable
    /// first (from `placement`); an entry becomes visible only after.
    pub(crate) location: OnceLock<(u64, u64)>,
    /// The WAL's view of where it is placed, for publishers other than its appender; `None`
    /// for entries rebuilt on open (their location is set).
    pub(crate) placement: Option<varve_wal::Placement>,
}

impl TailEntry {
    /// One past the last position of the entry.
    pub(crate) fn end(&self) -> u64 {
        self.first_position + u64::from(self.events)
    }

    /// The stream id and version of event `i` of this entry.
    pub(crate) fn locate(&self, i: usize) -> (u64, u64) {
        let g = self
            .groups
            .partition_point(|g| g.first_event as usize <= i)
            .saturating_sub(1);
        match self.groups.get(g) {
            Some(group) => (
                group.stream_id,
                group.first_version + (i - group.first_event as usize) as u64,
            ),
            None => (0, 0), // unreachable: entries have at least one group
        }
    }

    /// What the tail counts for the entry: its WAL bytes and the index's own memory (the
    /// entry, its groups and the WAL ticket state its placement keeps alive).
    pub(crate) fn cost(&self) -> u64 {
        self.record_len + (self.groups.len() * 48 + 256) as u64
    }

    /// The entry's place in the WAL, recorded from its placement if its appender has not
    /// recorded it yet; `None` if the WAL has not placed it or placed another LSN there
    /// (the appender then reports the mismatch).
    pub(crate) fn placed(&self) -> Option<(u64, u64)> {
        if let Some(&at) = self.location.get() {
            return Some(at);
        }
        let loc = self.placement.as_ref()?.location()?;
        if loc.lsn != self.lsn {
            return None;
        }
        Some(*self.location.get_or_init(|| (loc.segment, loc.offset)))
    }
}

/// An entry's record as read back from the WAL, parsed and checked.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) record: Record,
    pub(crate) parsed: ParsedAppend,
}

impl Loaded {
    /// The record's payload (the append record's bytes).
    pub(crate) fn bytes(&self) -> &[u8] {
        self.record.payload()
    }

    /// The decoded body of event `i` (the record was parsed in full when loaded).
    pub(crate) fn body(&self, i: usize) -> Option<Body<'_>> {
        let &(off, len) = self.parsed.events.get(i)?;
        let bytes = self.bytes().get(off as usize..(off + len) as usize)?;
        body_at(bytes).ok()
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
    pub(crate) fn truncate_invisible(&mut self) -> u64 {
        let mut freed = 0;
        while self.entries.len() > self.visible {
            let Some(e) = self.entries.pop_back() else {
                break;
            };
            freed += e.cost();
            for g in &e.groups {
                if let Some(q) = self.runs.get_mut(&g.stream_id) {
                    q.pop_back();
                    if q.is_empty() {
                        self.runs.remove(&g.stream_id);
                    }
                }
            }
        }
        self.bytes -= freed;
        freed
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

/// Builds the index entry of a parsed record read back from the WAL at `location`.
pub(crate) fn entry_from_parsed(
    lsn: u64,
    record_len: usize,
    location: (u64, u64),
    p: &ParsedAppend,
) -> TailEntry {
    let entry = TailEntry {
        lsn,
        first_position: p.first_position,
        events: p.events.len() as u32,
        record_len: record_len as u64,
        groups: p.groups.clone(),
        location: OnceLock::new(),
        placement: None,
    };
    let _ = entry.location.set(location);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(lsn: u64, placement: Option<varve_wal::Placement>) -> TailEntry {
        TailEntry {
            lsn,
            first_position: 0,
            events: 1,
            record_len: 8,
            groups: Vec::new(),
            location: OnceLock::new(),
            placement,
        }
    }

    #[test]
    fn an_entry_is_placed_from_its_tickets_placement_only_for_its_own_lsn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = varve_wal::Wal::open(dir.path(), varve_wal::Options::default()).expect("wal");
        let ticket = wal.append(b"record").expect("append");
        let placement = ticket.placement();
        let loc = ticket.wait_location().expect("durable");
        let mine = entry(loc.lsn, Some(placement.clone()));
        assert_eq!(mine.placed(), Some((loc.segment, loc.offset)));
        assert_eq!(
            mine.location.get(),
            Some(&(loc.segment, loc.offset)),
            "recorded"
        );
        // The log placed another LSN there: not this entry's place.
        let other = entry(loc.lsn + 1, Some(placement));
        assert_eq!(other.placed(), None);
        assert_eq!(other.location.get(), None);
        // No placement and no location (an appender that has not come back).
        assert_eq!(entry(loc.lsn, None).placed(), None);
        // A recorded location wins.
        let set = entry(5, None);
        let _ = set.location.set((1, 64));
        assert_eq!(set.placed(), Some((1, 64)));
        assert_eq!(set.cost(), 8 + 256);
    }
}
