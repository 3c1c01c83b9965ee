//! The read path: the pointer of an id, the slot it names read and verified, its value
//! decoded ([`Store::get`], [`Store::get_with`]).

use super::{Shared, Store, corrupted};
use crate::error::{Error, Result};
use crate::format::{
    CODEC_LZ4, CODEC_LZ4_DICT, CODEC_RAW, FLAG_TOMBSTONE, SLOT_LEN, Slot, SlotEntry, decode_ptr,
    slot_offset, value_sum,
};

/// The page and slot `id` points to, `None` when it has no value, or
/// [`Error::CorruptedEntry`] when its tracker entry was found corrupt on open.
fn pointer_of(sh: &Shared, id: u64) -> Result<Option<(u32, u32)>> {
    match sh.ptrs.get(id) {
        0 => Ok(None),
        p => decode_ptr(p).map(Some).ok_or(Error::CorruptedEntry { id }),
    }
}

/// Reads and verifies the slot `(page, slot)` that `id` points to; returns the slot and its
/// stored bytes.
pub(super) fn locate(sh: &Shared, id: u64, page: u32, slot: u32) -> Result<(Slot, &[u8])> {
    let map = sh
        .maps
        .get(page as usize)
        .and_then(Option::as_ref)
        .ok_or_else(|| corrupted(page, slot, "pointer to a missing page"))?;
    // SAFETY: the caller holds the read lock and `(page, slot)` is the published pointer
    // of `id`: the writer writes a published slot entry only under the write lock.
    let entry = unsafe { map.read(slot_offset(slot), SLOT_LEN as usize) }
        .ok_or_else(|| corrupted(page, slot, "pointer past the end of the page"))?;
    let entry: SlotEntry = bytemuck::pod_read_unaligned(entry);
    let s = entry
        .decode(page, slot)
        .ok_or_else(|| corrupted(page, slot, "slot entry checksum mismatch"))?;
    if s.id != id {
        return Err(corrupted(page, slot, "slot belongs to another id"));
    }
    if s.flags & FLAG_TOMBSTONE != 0 {
        return Err(corrupted(page, slot, "pointer to a tombstone"));
    }
    if s.stored_len > s.capacity {
        return Err(corrupted(page, slot, "stored length past its container"));
    }
    // SAFETY: the container is named by the verified entry of a published pointer; the
    // caller holds the read lock, and the writer overwrites a published container only
    // under the write lock.
    let stored = unsafe { map.read(u64::from(s.offset), s.stored_len as usize) }
        .ok_or_else(|| corrupted(page, slot, "value past the end of the page"))?;
    if value_sum(stored) != s.value_sum {
        return Err(corrupted(page, slot, "value checksum mismatch"));
    }
    Ok((s, stored))
}

/// Decodes stored bytes into the value.
pub(super) fn decode(
    sh: &Shared,
    page: u32,
    slot: u32,
    s: &Slot,
    stored: &[u8],
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; s.raw_len as usize];
    let n = match s.codec {
        CODEC_RAW if s.raw_len == s.stored_len => {
            out.copy_from_slice(stored);
            stored.len()
        }
        CODEC_LZ4 => lz4_flex::block::decompress_into(stored, &mut out)
            .map_err(|_| corrupted(page, slot, "lz4 data does not decode"))?,
        CODEC_LZ4_DICT => {
            let d = sh
                .dicts
                .get(&s.dict_id)
                .ok_or_else(|| corrupted(page, slot, "value needs a missing dictionary"))?;
            lz4_flex::block::decompress_into_with_dict(stored, &mut out, d)
                .map_err(|_| corrupted(page, slot, "lz4 data does not decode"))?
        }
        _ => return Err(corrupted(page, slot, "unknown codec or bad raw length")),
    };
    if n != out.len() {
        return Err(corrupted(
            page,
            slot,
            "decoded length differs from the slot's",
        ));
    }
    Ok(out)
}

impl Store {
    /// The value of `id`, or `None`. A value whose bytes fail their checks is
    /// [`Error::Corrupted`] with its page and slot; an id whose tracker entry was found
    /// corrupt on open is [`Error::CorruptedEntry`].
    pub fn get(&self, id: u64) -> Result<Option<Vec<u8>>> {
        self.check_id(id)?;
        let sh = self.read_shared()?;
        let Some((page, slot)) = pointer_of(&sh, id)? else {
            return Ok(None);
        };
        let (s, stored) = locate(&sh, id, page, slot)?;
        decode(&sh, page, slot, &s, stored).map(Some)
    }

    /// Calls `f` with the value of `id` and returns its result, or `None` when there is no
    /// value. A value stored uncompressed is passed straight from the mapped page (no copy);
    /// a compressed one is decompressed first. `f` runs under the store's read lock: it
    /// must not call back into the store.
    pub fn get_with<R>(&self, id: u64, f: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        self.check_id(id)?;
        let sh = self.read_shared()?;
        let Some((page, slot)) = pointer_of(&sh, id)? else {
            return Ok(None);
        };
        let (s, stored) = locate(&sh, id, page, slot)?;
        if s.codec == CODEC_RAW && s.raw_len == s.stored_len {
            return Ok(Some(f(stored)));
        }
        let v = decode(&sh, page, slot, &s, stored)?;
        Ok(Some(f(&v)))
    }
}
