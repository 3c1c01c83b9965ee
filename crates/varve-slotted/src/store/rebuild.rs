//! What open does: delete leftovers, load the tracker, the dictionaries and the pages, and
//! rebuild the derived state (free space, counters, page summaries) from the tracker and
//! the slot entries it names.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use super::{
    MAX_PAGE_SIZE, MIN_PAGE_SIZE, Options, PAGE_ALIGN, Shared, Store, TRACKER_FILE, Writer,
    corrupted,
};
use crate::dict;
use crate::error::{Error, Result};
use crate::format::{
    CODEC_LZ4, CODEC_LZ4_DICT, CODEC_RAW, FLAG_TOMBSTONE, MIN_CONTAINER, PAGE_HEADER_LEN,
    PageHeader, PageSummary, SLOT_LEN, SlotEntry, decode_ptr, slot_offset,
};
use crate::mmap::Map;
use crate::page::{LiveSlot, PageAlloc, Pages, SlotState};
use crate::ptrs::PtrTable;
use crate::tracker::Tracker;

fn parse_page_name(name: &str) -> Option<u32> {
    name.strip_prefix("page-")?
        .strip_suffix(".vvp")?
        .parse()
        .ok()
}

impl Store {
    pub(super) fn open_locked(dir: &Path, opts: Options, lock: File) -> Result<Store> {
        // Leftovers of a page, tracker or dictionary creation cut short by a crash.
        let mut page_files = Vec::new();
        let mut dict_files = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                std::fs::remove_file(entry.path())?;
            } else if let Some(page) = parse_page_name(name) {
                page_files.push((page, entry.path()));
            } else if let Some(id) = dict::parse_name(name) {
                dict_files.push((id, entry.path()));
            }
        }
        let (tracker, ptrs) = Tracker::open(&dir.join(TRACKER_FILE))?;

        let mut dicts = BTreeMap::new();
        let mut dict_bytes = 0;
        for (id, path) in dict_files {
            let d = dict::read(&path, id)?;
            dict_bytes += (d.len() + crate::format::DICT_HEADER_LEN) as u64;
            dicts.insert(id, Arc::<[u8]>::from(d));
        }
        let active_dict = dicts.iter().next_back().map(|(&id, d)| (id, Arc::clone(d)));

        let mut maps: Vec<Option<Arc<Map>>> = Vec::new();
        for (page, path) in page_files {
            let map = open_page(&path, page)?;
            let i = page as usize;
            if maps.len() <= i {
                maps.resize_with(i + 1, || None);
            }
            maps[i] = Some(Arc::new(map));
        }

        let mut w = Writer {
            tracker,
            pages: Pages::default(),
            maps: maps.clone(),
            dirty_ids: Vec::new(),
            fresh: Vec::new(),
            pending: Vec::new(),
            retired_bytes: 0,
            freed: Vec::new(),
            dirty: BTreeMap::new(),
            summary_dirty: BTreeSet::new(),
            compacting: BTreeSet::new(),
            compact_cursor: BTreeMap::new(),
            active_dict,
            poisoned: None,
            corrupt_entries: 0,
            summaries_rebuilt: 0,
            dict_bytes,
            moved_values: 0,
            synced_bytes: 0,
            punched_bytes: 0,
        };
        rebuild(&mut w, &ptrs)?;
        let store = Store {
            dir: dir.to_path_buf(),
            opts,
            shared: RwLock::new(Shared { ptrs, maps, dicts }),
            writer: Mutex::new(w),
            _lock: lock,
        };
        Ok(store)
    }
}

/// Opens and checks page file `path` named as page `page`.
fn open_page(path: &Path, page: u32) -> Result<Map> {
    let bad = |what| Error::BadFile {
        path: path.to_path_buf(),
        what,
    };
    let f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    if len < MIN_PAGE_SIZE || !len.is_multiple_of(PAGE_ALIGN) || len > MAX_PAGE_SIZE {
        return Err(bad(
            "page file size is not a whole number of 4 KiB blocks within 1 GiB",
        ));
    }
    let map = Map::new(&f, len)?;
    // SAFETY: the map was just created; nothing else has it.
    let head = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
        .ok_or_else(|| bad("page header unreadable"))?;
    let h: PageHeader = bytemuck::pod_read_unaligned(head);
    if !h.ident_ok() {
        return Err(bad("page header: wrong magic, version or checksum"));
    }
    if h.page_id() != page {
        return Err(bad("page number differs from its file name"));
    }
    if h.page_size() != len {
        return Err(bad("page file size differs from its header"));
    }
    Ok(map)
}

/// Rebuilds the writer's page state from the tracker pointers and the slot entries they
/// reach; unreadable entries are counted and reserved (their ids read as `Corrupted`).
fn rebuild(w: &mut Writer, ptrs: &PtrTable) -> Result<()> {
    let mut refs: BTreeMap<u32, Vec<(u32, u64)>> = BTreeMap::new();
    for (id, p) in ptrs.iter() {
        let Some((page, slot)) = decode_ptr(p) else {
            // A tracker entry that failed its checksum or names no page.
            w.corrupt_entries += 1;
            continue;
        };
        let fits = w
            .maps
            .get(page as usize)
            .and_then(Option::as_ref)
            .is_some_and(|m| slot_offset(slot) + u64::from(SLOT_LEN) <= m.len());
        if fits {
            refs.entry(page).or_default().push((slot, id));
        } else {
            w.corrupt_entries += 1;
        }
    }
    for (page, map) in w.maps.iter().enumerate() {
        let Some(map) = map else { continue };
        let page = page as u32;
        let size = map.len() as u32;
        let mine = refs.remove(&page).unwrap_or_default();
        let n = mine.iter().map(|&(s, _)| s + 1).max().unwrap_or(0);
        let dir_end = u64::from(PAGE_HEADER_LEN) + u64::from(SLOT_LEN) * u64::from(n);
        let mut states = vec![SlotState::Free; n as usize];
        // Verified owners claim their slots first; a pointer that does not verify (wrong
        // id, tombstone, bad checksum...) reserves its slot only if no owner claimed it.
        let mut bad = Vec::new();
        for (slot, id) in mine {
            // SAFETY: the store is being opened: no reader or writer exists yet.
            let ok = unsafe { map.read(slot_offset(slot), SLOT_LEN as usize) }
                .map(bytemuck::pod_read_unaligned::<SlotEntry>)
                .and_then(|e| e.decode(page, slot))
                .filter(|s| {
                    s.id == id
                        && s.flags & FLAG_TOMBSTONE == 0
                        && matches!(s.codec, CODEC_RAW | CODEC_LZ4 | CODEC_LZ4_DICT)
                        && s.capacity >= MIN_CONTAINER
                        && s.stored_len <= s.capacity
                        && u64::from(s.offset) >= dir_end
                        && u64::from(s.offset) + u64::from(s.capacity) <= u64::from(size)
                });
            match ok {
                Some(s) => {
                    states[slot as usize] = SlotState::Live(LiveSlot {
                        id,
                        offset: s.offset,
                        capacity: s.capacity,
                        stored_len: s.stored_len,
                        raw_len: s.raw_len,
                        fresh: false,
                    });
                }
                None => bad.push(slot),
            }
        }
        for slot in bad {
            w.corrupt_entries += 1;
            if states[slot as usize] == SlotState::Free {
                states[slot as usize] = SlotState::Reserved;
            }
        }
        // Overlapping containers: keep the first, reserve the others.
        let mut live: Vec<(u32, u32, u32)> = states
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                SlotState::Live(l) => Some((l.offset, l.capacity, i as u32)),
                _ => None,
            })
            .collect();
        live.sort_unstable();
        let mut end = 0u32;
        for (off, cap, i) in live {
            if off < end {
                states[i as usize] = SlotState::Reserved;
                w.corrupt_entries += 1;
            } else {
                end = off + cap;
            }
        }
        let alloc = PageAlloc::rebuild(size, states)
            .ok_or_else(|| corrupted(page, 0, "page layout does not rebuild"))?;
        let rebuilt = PageSummary {
            slot_count: alloc.slot_count(),
            live_slots: alloc.live,
            live_bytes: alloc.live_stored,
        };
        // SAFETY: as above.
        let head = unsafe { map.read(0, PAGE_HEADER_LEN as usize) }
            .map(bytemuck::pod_read_unaligned::<PageHeader>);
        if head.and_then(|h| h.summary()) != Some(rebuilt) {
            w.summaries_rebuilt += 1;
            w.summary_dirty.insert(page);
        }
        w.pages.insert(page, alloc);
    }
    Ok(())
}
