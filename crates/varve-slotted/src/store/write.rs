//! The write path: [`Store::put`] and [`Store::delete`]. A value is encoded, written out of
//! place into space no durable pointer reaches (or over a fresh value in place), and its
//! pointer published; the version it replaced is retired or freed.

use std::borrow::Cow;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::sync::Arc;

use super::{Compression, Options, PAGE_ALIGN, Store, Writer, page_file_name, set_map, sync_dir};
use crate::error::{Error, Result};
use crate::format::{
    CODEC_LZ4, CODEC_LZ4_DICT, CODEC_RAW, PAGE_HEADER_LEN, PageHeader, SLOT_LEN, Slot, SlotEntry,
    container_len, decode_ptr, encode_ptr, slot_offset, value_sum,
};
use crate::mmap::Map;
use crate::page::{LiveSlot, PageAlloc, SlotState};

/// Alignment down to which free space below a new container is reserved along with it
/// (see `Store::allocate`).
const RESERVE_AHEAD: u32 = 64 * 1024;

/// A value encoded for storage.
struct Encoded<'a> {
    bytes: Cow<'a, [u8]>,
    codec: u8,
    dict_id: u16,
}

fn encode<'a>(value: &'a [u8], c: Compression, dict: Option<&(u16, Arc<[u8]>)>) -> Encoded<'a> {
    let raw = Encoded {
        bytes: Cow::Borrowed(value),
        codec: CODEC_RAW,
        dict_id: 0,
    };
    if c == Compression::None {
        return raw;
    }
    let (bytes, codec, dict_id) = match dict {
        Some((id, d)) => (
            lz4_flex::block::compress_with_dict(value, d),
            CODEC_LZ4_DICT,
            *id,
        ),
        None => (lz4_flex::block::compress(value), CODEC_LZ4, 0),
    };
    // Compression pays only when it makes the container smaller.
    if container_len(bytes.len() as u32) < container_len(value.len() as u32) {
        Encoded {
            bytes: Cow::Owned(bytes),
            codec,
            dict_id,
        }
    } else {
        raw
    }
}

impl Store {
    /// The raw in-memory pointer of `id` (0: none; see [`crate::ptrs::CORRUPT`]).
    fn raw_ptr(&self, id: u64) -> Result<u64> {
        Ok(self.read_shared()?.ptrs.get(id))
    }

    /// Stores `value` under `id`; returns true when it replaced a value.
    ///
    /// The value is durable after the next [`Store::flush`]. Errors: [`Error::IdTooLarge`],
    /// [`Error::ValueTooLarge`] (nothing is changed), I/O errors, [`Error::Poisoned`].
    pub fn put(&self, id: u64, value: &[u8]) -> Result<bool> {
        self.check_id(id)?;
        if value.len() > self.opts.max_value_size as usize {
            return Err(Error::ValueTooLarge {
                size: value.len(),
                max: self.opts.max_value_size as usize,
            });
        }
        let mut w = self.lock_writer()?;
        // The tracker entry is written by the next flush: its block is reserved now, so a
        // full disk fails this put rather than the flush.
        w.tracker.reserve(id)?;
        let enc = encode(value, self.opts.compression, w.active_dict.as_ref());
        let stored_len = enc.bytes.len() as u32;
        let cap = container_len(stored_len);
        let slot = Slot {
            id,
            offset: 0,
            capacity: cap,
            stored_len,
            raw_len: value.len() as u32,
            codec: enc.codec,
            flags: 0,
            dict_id: enc.dict_id,
            value_sum: value_sum(&enc.bytes),
        };
        let old_raw = self.raw_ptr(id)?;
        let old = decode_ptr(old_raw);
        if let Some((op, os)) = old
            && let Some(SlotState::Live(l)) = w.pages.get(op).and_then(|p| p.slot(os)).copied()
            && l.fresh
            && cap <= l.capacity
        {
            // In place: no durable pointer reaches this slot (it was written after the last
            // flush), so overwriting it cannot lose a durable value. Readers may be reading it:
            // hold the shared write lock for the copy.
            let slot = Slot {
                offset: l.offset,
                ..slot
            };
            let map = w.map(op)?;
            {
                let _g = self.write_shared()?;
                // SAFETY: (both writes) the shared write lock is held, so no reader holds a
                // slice of this published container or slot entry.
                unsafe {
                    self.write_value(&map, l.offset, &enc.bytes)?;
                    map.write(
                        slot_offset(os),
                        bytemuck::bytes_of(&SlotEntry::encode(&slot, op, os)),
                    )?;
                }
            }
            w.pages
                .with(op, |p| p.update_in_place(os, stored_len, slot.raw_len, cap));
            w.mark_dirty(op, u64::from(l.offset), u64::from(stored_len));
            w.mark_dirty(op, slot_offset(os), u64::from(SLOT_LEN));
            w.after_change(op, &self.opts);
            self.compact_step(&mut w)?;
            return Ok(true);
        }
        let (page, s, offset) = self.allocate(&mut w, cap)?;
        let slot = Slot { offset, ..slot };
        let map = w.map(page)?;
        // SAFETY: (both writes) `allocate` just took this container and slot from free
        // space; no published pointer reaches them, so no reader holds a slice of them.
        unsafe {
            self.write_value(&map, offset, &enc.bytes)?;
            map.write(
                slot_offset(s),
                bytemuck::bytes_of(&SlotEntry::encode(&slot, page, s)),
            )?;
        }
        self.install(&mut w, page, s, &slot)?;
        if let Some((op, os)) = old {
            w.drop_old(op, os, &self.opts)?;
        }
        self.compact_step(&mut w)?;
        self.flush_if_retired(&mut w)?;
        Ok(old_raw != 0)
    }

    /// Copies stored bytes into a container: all but the last byte, a hook (so tests can
    /// stop a write in its middle), then the last byte.
    ///
    /// # Safety
    /// As for [`Map::write`]: no reader holds a slice of the container.
    unsafe fn write_value(&self, map: &Map, offset: u32, bytes: &[u8]) -> Result<()> {
        let Some((last, rest)) = bytes.split_last() else {
            return Ok(());
        };
        // SAFETY: the caller guarantees that no reader holds a slice of the container.
        unsafe { map.write(u64::from(offset), rest) }?;
        self.hook("value-half-written");
        // SAFETY: as above.
        unsafe { map.write(u64::from(offset) + rest.len() as u64, &[*last]) }?;
        Ok(())
    }

    /// Records a freshly written slot as live and publishes the pointer of `id` to it.
    pub(super) fn install(&self, w: &mut Writer, page: u32, s: u32, slot: &Slot) -> Result<()> {
        w.pages.with(page, |p| {
            p.set_live(
                s,
                LiveSlot {
                    id: slot.id,
                    offset: slot.offset,
                    capacity: slot.capacity,
                    stored_len: slot.stored_len,
                    raw_len: slot.raw_len,
                    fresh: true,
                },
            );
        });
        w.fresh.push((page, s));
        w.mark_dirty(page, u64::from(slot.offset), u64::from(slot.stored_len));
        w.mark_dirty(page, slot_offset(s), u64::from(SLOT_LEN));
        w.summary_dirty.insert(page);
        {
            self.write_shared()?.ptrs.set(slot.id, encode_ptr(page, s));
        }
        w.dirty_ids.push(slot.id);
        Ok(())
    }

    /// Finds room for a container of `cap` bytes (best fit, else a new page).
    pub(super) fn allocate(&self, w: &mut Writer, cap: u32) -> Result<(u32, u32, u32)> {
        let page = match w.pages.best_fit(cap, &w.compacting) {
            Some(p) => p,
            None => self.new_page(w, cap)?,
        };
        let (slot, offset) =
            w.pages
                .with(page, |p| p.place(cap))
                .flatten()
                .ok_or(Error::InvalidOptions {
                    what: "min_page_size",
                    why: "a page of this size cannot hold the value",
                })?;
        // Reserve the blocks before anything is written through the map (a full disk is an
        // error here, not a SIGBUS later); on failure the placement is undone. Containers
        // are cut from the high end of a free extent, so the next ones from this extent go
        // right below this one: the reservation reaches down to the RESERVE_AHEAD boundary
        // below the container (within the free extent), so one call serves many values.
        let map = w.map(page)?;
        let from = offset
            .checked_sub(1)
            .and_then(|below| w.pages.get(page)?.free_extent_at(below))
            .map_or(offset, |(o, _)| {
                o.max(offset / RESERVE_AHEAD * RESERVE_AHEAD)
            });
        let reserved = map
            .reserve(u64::from(from), u64::from(offset + cap - from))
            .and_then(|()| map.reserve(slot_offset(slot), u64::from(SLOT_LEN)));
        if let Err(e) = reserved {
            w.pages.with(page, |p| p.unplace(slot, offset, cap));
            return Err(e.into());
        }
        Ok((page, slot, offset))
    }

    /// Creates, syncs and maps a new page big enough for a container of `cap` bytes.
    fn new_page(&self, w: &mut Writer, cap: u32) -> Result<u32> {
        let need = u64::from(PAGE_HEADER_LEN + SLOT_LEN) + u64::from(cap);
        let size = self
            .opts
            .min_page_size
            .max(need.div_ceil(PAGE_ALIGN) * PAGE_ALIGN);
        let page = w.pages.next_free_number();
        let path = self.dir.join(page_file_name(page));
        let tmp = path.with_extension("tmp");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.set_len(size)?;
        f.write_all_at(bytemuck::bytes_of(&PageHeader::new(page, size)), 0)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        let map = Arc::new(Map::new(&f, size)?);
        set_map(&mut w.maps, page, Some(Arc::clone(&map)));
        set_map(&mut self.write_shared()?.maps, page, Some(map));
        w.pages.insert(page, PageAlloc::new(size as u32));
        Ok(page)
    }

    /// Removes the value of `id`; returns the length of the removed value (as it was given
    /// to `put`), `Some(0)` for an entry found unreadable on open, `None` when there was none.
    pub fn delete(&self, id: u64) -> Result<Option<usize>> {
        self.check_id(id)?;
        let mut w = self.lock_writer()?;
        let raw = self.raw_ptr(id)?;
        if raw == 0 {
            return Ok(None);
        }
        w.tracker.reserve(id)?;
        let old = decode_ptr(raw);
        let len = match old.and_then(|(op, os)| w.pages.get(op)?.slot(os)) {
            Some(SlotState::Live(l)) => l.raw_len as usize,
            _ => 0,
        };
        self.write_shared()?.ptrs.set(id, 0);
        w.dirty_ids.push(id);
        if let Some((op, os)) = old {
            w.drop_old(op, os, &self.opts)?;
        }
        self.compact_step(&mut w)?;
        self.flush_if_retired(&mut w)?;
        Ok(Some(len))
    }
}

impl Writer {
    /// Retires or frees the slot an id pointed to before it was repointed or deleted.
    pub(super) fn drop_old(&mut self, page: u32, s: u32, opts: &Options) -> Result<()> {
        match self.pages.get(page).and_then(|p| p.slot(s)).copied() {
            Some(SlotState::Live(l)) if l.fresh => {
                // Written after the last flush: no durable pointer reaches it.
                self.free_slot(page, s, opts)?;
            }
            Some(SlotState::Live(l)) => {
                self.pages.with(page, |p| p.retire(s));
                self.pending.push((page, s));
                self.retired_bytes += u64::from(l.capacity);
                self.after_change(page, opts);
            }
            Some(SlotState::Reserved) => self.free_slot(page, s, opts)?,
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fmt;

    use super::*;
    use crate::mmap::FAIL_RESERVE;

    const ENOSPC: i32 = 28;

    fn scratch() -> tempfile::TempDir {
        varve_testkit::dirs::in_memory()
    }

    fn opts() -> Options {
        Options::default()
            .min_page_size(1024 * 1024)
            .compression(Compression::None)
    }

    /// Runs `f` with every reservation that needs `fallocate` failing with `errno`.
    fn failing<R>(errno: i32, f: impl FnOnce() -> R) -> R {
        FAIL_RESERVE.with(|c| c.set(Some(errno)));
        let r = f();
        FAIL_RESERVE.with(|c| c.set(None));
        r
    }

    fn is_enospc(r: Result<impl fmt::Debug>) -> bool {
        matches!(r, Err(Error::Io(ref e)) if e.raw_os_error() == Some(ENOSPC))
    }

    /// The writer's allocation state of every page, as comparable values.
    fn layout(s: &Store) -> Vec<(u32, u32, u64, u32, u32)> {
        let w = s.writer.lock().unwrap();
        w.pages
            .iter()
            .map(|(i, p)| (i, p.slot_count(), p.free_bytes(), p.largest(), p.live))
            .collect()
    }

    #[test]
    fn a_failed_reservation_is_an_io_error_that_changes_nothing() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        for id in 0..10 {
            s.put(id, &[id as u8; 3000]).unwrap();
        }
        s.flush().unwrap();
        drop(s);
        // A reopened store knows no reservation: every write needs one.
        let s = Store::open(dir.path(), opts()).unwrap();
        // The tracker entry's block first (put and delete reserve it).
        assert!(failing(ENOSPC, || is_enospc(s.delete(4))));
        assert!(failing(ENOSPC, || is_enospc(s.put(20, &[1u8; 3000]))));
        assert_eq!(s.get(4).unwrap().unwrap(), vec![4u8; 3000]);
        // Reserves the tracker block of ids 0..256 and writes nothing to the page.
        assert_eq!(s.delete(9).unwrap(), Some(3000));
        // Then the page's blocks, after the container and slot were placed.
        let (before, stats) = (layout(&s), s.stats().unwrap());
        assert!(failing(ENOSPC, || is_enospc(s.put(20, &[1u8; 3000]))));
        assert!(failing(ENOSPC, || is_enospc(s.put(3, &[1u8; 3000]))));
        // A value too large for the page needs a new page; its reservation fails too.
        assert!(failing(ENOSPC, || is_enospc(s.put(21, &[2u8; 2_000_000]))));
        let after: Vec<_> = layout(&s).into_iter().filter(|p| p.0 == 0).collect();
        assert_eq!(after, before, "the placement was undone");
        assert_eq!(s.stats().unwrap().live_values, stats.live_values);
        assert_eq!(s.get(20).unwrap(), None);
        assert_eq!(s.get(3).unwrap().unwrap(), vec![3u8; 3000]);
        assert_eq!(s.get(4).unwrap().unwrap(), vec![4u8; 3000]);
        // Space again: the same writes succeed and everything reads back after a reopen.
        s.put(20, &[1u8; 3000]).unwrap();
        s.put(3, &[1u8; 3000]).unwrap();
        assert_eq!(s.delete(4).unwrap(), Some(3000));
        s.flush().unwrap();
        drop(s);
        let s = Store::open(dir.path(), opts()).unwrap();
        assert_eq!(s.get(20).unwrap().unwrap(), vec![1u8; 3000]);
        assert_eq!(s.get(3).unwrap().unwrap(), vec![1u8; 3000]);
        assert_eq!(s.get(4).unwrap(), None);
        assert_eq!(s.stats().unwrap().live_values, 9);
    }

    #[test]
    fn reserved_ranges_need_no_new_reservation_until_punched() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts().punch_min_bytes(4096)).unwrap();
        for id in 0..3 {
            s.put(id, &[id as u8; 100_000]).unwrap();
        }
        // Fresh values are rewritten in place in blocks this store reserved: no fallocate.
        failing(ENOSPC, || s.put(1, &[9u8; 100_000])).unwrap();
        s.flush().unwrap();
        // A deleted value's blocks are punched by the flush; the hole is the best fit for
        // a value of the same size, and must be reserved again before it is written.
        assert_eq!(s.delete(0).unwrap(), Some(100_000));
        s.flush().unwrap();
        assert!(s.stats().unwrap().punched_bytes >= 90_000);
        assert!(failing(ENOSPC, || is_enospc(s.put(5, &[5u8; 100_000]))));
        s.put(5, &[5u8; 100_000]).unwrap();
        assert_eq!(s.get(5).unwrap().unwrap(), vec![5u8; 100_000]);
        assert_eq!(s.get(1).unwrap().unwrap(), vec![9u8; 100_000]);
    }

    /// One reservation covers a container and the free extent below it down to a 64 KiB
    /// boundary, where the next containers go; never more than that, nor past the extent.
    #[test]
    fn a_reservation_covers_the_free_space_just_below_the_container() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        let blocks = || {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(dir.path().join(page_file_name(0))).unwrap();
            m.blocks() * 512
        };
        s.put(0, &[1u8; 1000]).unwrap();
        let first = blocks();
        // The header block and the last 64 KiB of the page, where the value went.
        assert!(
            (64 * 1024..=64 * 1024 + 3 * 4096).contains(&first),
            "{first} bytes allocated"
        );
        // The next values come from that reserved space: no new reservation.
        failing(ENOSPC, || {
            for id in 1..50 {
                s.put(id, &[id as u8; 1000]).unwrap();
            }
        });
        assert!(failing(ENOSPC, || is_enospc(s.put(99, &[0u8; 100_000]))));
        // A value filling the rest of the extent: reservation stops at the extent's start
        // (just above the directory), it does not reach below it.
        let free = {
            let w = s.writer.lock().unwrap();
            let p = w.pages.get(0).unwrap();
            p.largest()
        };
        s.put(100, &vec![5u8; (free - 40 - 8) as usize]).unwrap();
        assert_eq!(s.get(100).unwrap().unwrap().len(), (free - 48) as usize);
        assert!(blocks() <= 1024 * 1024);
    }

    #[test]
    fn a_file_system_without_fallocate_writes_unreserved() {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        failing(rustix::io::Errno::OPNOTSUPP.raw_os_error(), || {
            s.put(1, b"one").unwrap();
            s.put(1, b"uno").unwrap();
            s.delete(1).unwrap();
            s.put(2, b"two").unwrap();
        });
        assert_eq!(s.get(2).unwrap().as_deref(), Some(&b"two"[..]));
        // Other errors are errors (a range not reserved yet: a value of its own size).
        assert!(failing(5, || matches!(
            s.put(3, &[3u8; 500_000]),
            Err(Error::Io(e)) if e.raw_os_error() == Some(5)
        )));
    }
}
