//! The flush protocol ([`Store::flush`]): the data blocks written since the last flush,
//! then the tracker entries, then the frees; then page summaries, reclaiming empty pages
//! and punching freed blocks.

use super::{Options, PAGE_ALIGN, Store, Writer, corrupted, page_file_name, set_map, sync_dir};
use crate::error::Result;
use crate::format::{
    FLAG_TOMBSTONE, PAGE_HEADER_LEN, PageHeader, PageSummary, SLOT_LEN, SlotEntry, slot_offset,
};
use crate::page::{PageAlloc, SlotState};

impl Store {
    /// Makes every write made before this call durable, then frees the space of the values
    /// they replaced. Order: the data blocks written since the last flush, then the
    /// tracker, then frees. A failure poisons the store (see [`Error::Poisoned`]).
    ///
    /// [`Error::Poisoned`]: crate::Error::Poisoned
    pub fn flush(&self) -> Result<()> {
        let mut w = self.lock_writer()?;
        self.flush_or_poison(&mut w).map(|_| ())
    }

    /// `flush_locked`, poisoning the store if it fails. Returns the pages removed.
    pub(super) fn flush_or_poison(&self, w: &mut Writer) -> Result<u32> {
        let r = self.flush_locked(w);
        if let Err(e) = &r {
            w.poisoned = Some(e.as_cause());
        }
        r
    }

    /// Flushes once the retired bytes reach [`Options::flush_after_retired_bytes`]; a
    /// failure poisons the store, as a failed [`Store::flush`] does.
    pub(super) fn flush_if_retired(&self, w: &mut Writer) -> Result<()> {
        let limit = self.opts.flush_after_retired_bytes;
        if limit == 0 || w.retired_bytes < limit {
            return Ok(());
        }
        self.flush_or_poison(w).map(|_| ())
    }

    fn flush_locked(&self, w: &mut Writer) -> Result<u32> {
        // 1. Data: every value and slot entry written since the last flush. Writeback of
        // each dirtied range starts first (all pages at once), then each page waits for its
        // own and its metadata (fdatasync).
        let dirty = std::mem::take(&mut w.dirty);
        for (&page, ranges) in &dirty {
            if let Some(Some(map)) = w.maps.get(page as usize) {
                for (lo, hi) in ranges.iter() {
                    map.start_writeback(lo, hi - lo)?;
                    w.synced_bytes += hi - lo;
                }
            }
        }
        for &page in dirty.keys() {
            if let Some(Some(map)) = w.maps.get(page as usize) {
                map.sync_data()?;
            }
        }
        self.hook("data-flushed");
        // 2. Pointers: the tracker entries of every id changed since the last flush.
        let mut ids = std::mem::take(&mut w.dirty_ids);
        ids.sort_unstable();
        ids.dedup();
        {
            let sh = self.read_shared()?;
            for &id in &ids {
                w.tracker.set(id, sh.ptrs.get(id))?;
            }
        }
        w.tracker.sync()?;
        self.hook("tracker-flushed");
        // 3. The new values are durable now: they may no longer be overwritten in place.
        for (page, s) in std::mem::take(&mut w.fresh) {
            w.pages.with(page, |p| p.settle(s));
        }
        // 4. Frees: no durable pointer reaches the replaced values any more.
        for (page, s) in std::mem::take(&mut w.pending) {
            w.free_slot(page, s, &self.opts)?;
        }
        w.retired_bytes = 0;
        // 5. Derived page summaries (checked and rebuilt on open; written for the next flush).
        for page in std::mem::take(&mut w.summary_dirty) {
            w.write_summary(page)?;
        }
        // 6. Reclaim pages left empty, then give freed blocks back to the file system.
        let removed = self.reclaim(w)?;
        w.punch_freed(self.opts.punch_min_bytes);
        Ok(removed)
    }

    /// Ends the compaction of drained pages and deletes empty pages beyond
    /// `keep_empty_pages` (highest numbers first).
    fn reclaim(&self, w: &mut Writer) -> Result<u32> {
        let drained: Vec<u32> = w
            .compacting
            .iter()
            .copied()
            .filter(|&p| w.pages.get(p).is_none_or(PageAlloc::is_empty))
            .collect();
        for page in drained {
            w.compacting.remove(&page);
            w.compact_cursor.remove(&page);
        }
        let empty: Vec<u32> = w
            .pages
            .iter()
            .filter(|(_, p)| p.is_empty())
            .map(|(i, _)| i)
            .collect();
        let mut removed = 0;
        for &page in empty.iter().skip(self.opts.keep_empty_pages as usize).rev() {
            w.pages.remove(page);
            w.compacting.remove(&page);
            w.compact_cursor.remove(&page);
            w.dirty.remove(&page);
            w.summary_dirty.remove(&page);
            set_map(&mut w.maps, page, None);
            set_map(&mut self.write_shared()?.maps, page, None);
            std::fs::remove_file(self.dir.join(page_file_name(page)))?;
            sync_dir(&self.dir)?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl Writer {
    /// Marks slot `(page, s)` as a tombstone on disk and gives it back to the allocator.
    pub(super) fn free_slot(&mut self, page: u32, s: u32, opts: &Options) -> Result<()> {
        let map = self.map(page)?;
        // SAFETY: only the writer (the caller) writes slot entries; the copy ends before the
        // write below.
        let entry = unsafe { map.read(slot_offset(s), SLOT_LEN as usize) }
            .map(bytemuck::pod_read_unaligned::<SlotEntry>);
        if let Some(mut slot) = entry.and_then(|e| e.decode(page, s)) {
            slot.flags |= FLAG_TOMBSTONE;
            // SAFETY: no published pointer reaches this slot any more (its id was
            // repointed or deleted, and a pending one's old pointer is no longer durable),
            // so no reader holds a slice of it.
            unsafe {
                map.write(
                    slot_offset(s),
                    bytemuck::bytes_of(&SlotEntry::encode(&slot, page, s)),
                )
            }?;
            self.mark_dirty(page, slot_offset(s), u64::from(SLOT_LEN));
        }
        let container = match self.pages.get(page).and_then(|p| p.slot(s)) {
            Some(SlotState::Live(l)) => Some((l.offset, l.capacity)),
            Some(SlotState::Pending { offset, capacity }) => Some((*offset, *capacity)),
            _ => None,
        };
        self.pages.with(page, |p| p.release(s));
        if let Some((c, cap)) = container {
            self.freed.push((page, c, cap));
        }
        self.after_change(page, opts);
        Ok(())
    }

    /// Gives the file blocks that touch a container freed since the last call and lie
    /// wholly in free space *now* back to the file system, so freed space stops costing
    /// disk. Runs of such blocks are merged per page and punched with one call each when
    /// at least `min` bytes long (see [`Options::punch_min_bytes`]); each block is punched
    /// at most once. Best effort: a file system without hole punching keeps the blocks.
    fn punch_freed(&mut self, min: u64) {
        let mut runs: Vec<(u32, u64, u64)> = Vec::new();
        for (page, c, cap) in std::mem::take(&mut self.freed) {
            // Free *now*: space freed and reused since then is not touched.
            let Some((o, len)) = self.pages.get(page).and_then(|p| p.free_extent_at(c)) else {
                continue;
            };
            let (c, cap, o, len) = (u64::from(c), u64::from(cap), u64::from(o), u64::from(len));
            let start = (c / PAGE_ALIGN * PAGE_ALIGN).max(o.div_ceil(PAGE_ALIGN) * PAGE_ALIGN);
            let end = ((c + cap).div_ceil(PAGE_ALIGN) * PAGE_ALIGN)
                .min((o + len) / PAGE_ALIGN * PAGE_ALIGN);
            if end > start {
                runs.push((page, start, end));
            }
        }
        runs.sort_unstable();
        let mut merged: Vec<(u32, u64, u64)> = Vec::with_capacity(runs.len());
        for (page, start, end) in runs {
            match merged.last_mut() {
                Some(last) if last.0 == page && start <= last.2 => last.2 = last.2.max(end),
                _ => merged.push((page, start, end)),
            }
        }
        for (page, start, end) in merged {
            if end - start < min {
                continue;
            }
            if let Ok(map) = self.map(page)
                && map.punch_hole(start, end - start).is_ok()
            {
                self.punched_bytes += end - start;
            }
        }
    }

    fn write_summary(&mut self, page: u32) -> Result<()> {
        let Some(p) = self.pages.get(page) else {
            return Ok(());
        };
        let s = PageSummary {
            slot_count: p.slot_count(),
            live_slots: p.live,
            live_bytes: p.live_stored,
        };
        let map = self.map(page)?;
        // SAFETY: readers never read the page header; only the writer (the caller) writes
        // it, after this copy ends.
        let mut h: PageHeader = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
            .map(bytemuck::pod_read_unaligned)
            .ok_or_else(|| corrupted(page, 0, "page header unreadable"))?;
        h.set_summary(s);
        // SAFETY: as above: no reader reads the page header.
        unsafe { map.write(0, bytemuck::bytes_of(&h)) }?;
        self.mark_dirty(page, 0, u64::from(PAGE_HEADER_LEN));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::{Error, Options, Store};

    #[test]
    fn a_store_poisoned_by_a_failed_flush_refuses_writes_with_that_failure() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), Options::default().min_page_size(1 << 20)).unwrap();
        s.put(1, b"one").unwrap();
        s.writer.lock().unwrap().poisoned =
            Some(Arc::new(std::io::Error::other("fdatasync failed")));
        for r in [
            s.put(2, b"two").map(|_| ()),
            s.flush(),
            s.delete(1).map(|_| ()),
        ] {
            match r {
                Err(e @ Error::Poisoned(_)) => assert_eq!(
                    std::error::Error::source(&e).unwrap().to_string(),
                    "fdatasync failed"
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            s.get(1).unwrap().as_deref(),
            Some(&b"one"[..]),
            "reads go on"
        );
    }
}
