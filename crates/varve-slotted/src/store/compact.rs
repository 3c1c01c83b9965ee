//! Compaction: live values moved out of pages with fragmented free space in bounded steps,
//! on every write and by [`Store::compact`].

use super::{Store, Writer, corrupted};
use crate::error::Result;
use crate::format::{SLOT_LEN, Slot, SlotEntry, slot_offset};
use crate::page::{LiveSlot, SlotState};

/// What an explicit [`Store::compact`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactReport {
    /// Values moved to other pages.
    pub moved_values: u64,
    /// Container bytes moved.
    pub moved_bytes: u64,
    /// Page files deleted.
    pub pages_removed: u32,
}

impl Store {
    /// Moves up to `compact_step_bytes` of live values out of pages being compacted.
    pub(super) fn compact_step(&self, w: &mut Writer) -> Result<(u64, u64)> {
        let (mut values, mut bytes) = (0u64, 0u64);
        while bytes < u64::from(self.opts.compact_step_bytes) {
            let Some((page, s, l)) = w.next_to_move() else {
                break;
            };
            self.move_value(w, page, s, &l)?;
            w.moved_values += 1;
            values += 1;
            bytes += u64::from(l.capacity);
        }
        Ok((values, bytes))
    }

    /// Copies the live value in `(page, s)` to another page and repoints its id.
    fn move_value(&self, w: &mut Writer, page: u32, s: u32, l: &LiveSlot) -> Result<()> {
        let src = w.map(page)?;
        // SAFETY: only the writer (this thread, holding the writer lock) writes slot entries
        // and containers; readers only read, so nothing writes this range meanwhile.
        let entry = unsafe { src.read(slot_offset(s), SLOT_LEN as usize) }
            .ok_or_else(|| corrupted(page, s, "pointer past the end of the page"))?;
        let entry: SlotEntry = bytemuck::pod_read_unaligned(entry);
        let Some(old) = entry.decode(page, s).filter(|e| e.id == l.id) else {
            return Err(corrupted(page, s, "slot entry checksum mismatch"));
        };
        // SAFETY: as above; the writes below go to a container `allocate` took from free
        // space, never to this live one.
        let bytes = unsafe { src.read(u64::from(l.offset), l.stored_len as usize) }
            .ok_or_else(|| corrupted(page, s, "value past the end of the page"))?;
        let (np, ns, noff) = self.allocate(w, l.capacity)?;
        let slot = Slot {
            offset: noff,
            ..old
        };
        let dst = w.map(np)?;
        // SAFETY: (both writes) `allocate` took this container and slot from free space on
        // another page (pages being compacted receive nothing); no published pointer
        // reaches them.
        unsafe {
            dst.write(u64::from(noff), bytes)?;
            dst.write(
                slot_offset(ns),
                bytemuck::bytes_of(&SlotEntry::encode(&slot, np, ns)),
            )?;
        }
        self.install(w, np, ns, &slot)?;
        w.drop_old(page, s, &self.opts)
    }

    /// Compacts every page holding garbage: flushes (so replaced values become free space),
    /// moves the live values of those pages to other pages in bounded steps (releasing the
    /// writer lock between steps, so other writes interleave; readers are held up only for
    /// each pointer swap), then flushes again and deletes the emptied pages.
    pub fn compact(&self) -> Result<CompactReport> {
        let mut report = CompactReport::default();
        self.flush()?;
        let live = {
            let mut w = self.lock_writer()?;
            let targets: Vec<u32> = w
                .pages
                .iter()
                .filter(|(_, p)| p.fragmented_bytes() > 0)
                .map(|(i, _)| i)
                .collect();
            w.compacting.extend(targets);
            w.pages.iter().map(|(_, p)| u64::from(p.live)).sum::<u64>()
        };
        // Each step moves at least one value out of a page being compacted into one that
        // is not, so there are never more steps than live values.
        for _ in 0..=live {
            let mut w = self.lock_writer()?;
            let (v, b) = self.compact_step(&mut w)?;
            if v == 0 {
                break;
            }
            report.moved_values += v;
            report.moved_bytes += b;
        }
        let mut w = self.lock_writer()?;
        report.pages_removed = self.flush_or_poison(&mut w)?;
        Ok(report)
    }
}

impl Writer {
    /// The next live value to move out of a page being compacted (pages stay marked, and
    /// receive no new values, until a flush has emptied them).
    fn next_to_move(&mut self) -> Option<(u32, u32, LiveSlot)> {
        for &page in &self.compacting {
            let Some(p) = self.pages.get(page) else {
                continue;
            };
            let from = self.compact_cursor.get(&page).copied().unwrap_or(0);
            let found = p.slots().skip(from as usize).find_map(|(s, st)| match st {
                SlotState::Live(l) => Some((s, *l)),
                _ => None,
            });
            match found {
                Some((s, l)) => {
                    self.compact_cursor.insert(page, s);
                    return Some((page, s, l));
                }
                None => {
                    self.compact_cursor.insert(page, p.slot_count());
                }
            }
        }
        None
    }
}
