//! Behaviour the model test cannot see: where values go (in place, slot and space reuse,
//! container shrink), compaction reclaiming pages, dictionaries, stats, and readers never
//! seeing a torn value while one writer updates.
#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use varve_slotted::{Compression, Options, Store};

fn opts() -> Options {
    Options::default()
        .min_page_size(64 * 1024)
        .compression(Compression::None)
}

/// The raw tracker entry of `id` on disk (0 = none).
fn disk_ptr(dir: &Path, id: u64) -> u64 {
    let f = File::open(dir.join("tracker.vvt")).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 64 + 16 * id).unwrap_or_default();
    u64::from_le_bytes(b)
}

/// `(offset, capacity)` of the slot entry `(page, slot)` on disk.
fn disk_slot(dir: &Path, page: u32, slot: u32) -> (u32, u32, u8) {
    let f = File::open(dir.join(format!("page-{page:08}.vvp"))).unwrap();
    let mut b = [0u8; 40];
    f.read_exact_at(&mut b, 64 + 40 * u64::from(slot)).unwrap();
    (
        u32::from_le_bytes(b[8..12].try_into().unwrap()),
        u32::from_le_bytes(b[12..16].try_into().unwrap()),
        b[25],
    )
}

fn split(p: u64) -> (u32, u32) {
    (((p >> 32) - 1) as u32, p as u32)
}

#[test]
fn unflushed_values_update_in_place_and_flushed_ones_move() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    s.put(1, &[1u8; 1000]).unwrap();
    s.flush().unwrap();
    let first = split(disk_ptr(dir.path(), 1));
    // Durable value: the update must go elsewhere; the old one stays until the next flush.
    assert!(s.put(1, &[2u8; 500]).unwrap());
    assert_eq!(
        split(disk_ptr(dir.path(), 1)),
        first,
        "tracker untouched before flush"
    );
    let (off, cap, flags) = disk_slot(dir.path(), first.0, first.1);
    assert_eq!(
        (cap, flags),
        (1000, 0),
        "old version intact and not yet freed"
    );
    let mut b = vec![0u8; 1000];
    File::open(dir.path().join("page-00000000.vvp"))
        .unwrap()
        .read_exact_at(&mut b, u64::from(off))
        .unwrap();
    assert_eq!(b, vec![1u8; 1000]);
    s.flush().unwrap();
    let second = split(disk_ptr(dir.path(), 1));
    assert_ne!(second, first);
    assert_eq!(
        disk_slot(dir.path(), first.0, first.1).2,
        1,
        "old slot is a tombstone"
    );
    // Fresh value: further updates that fit stay in place, and shrink the container.
    s.put(1, &[3u8; 900]).unwrap();
    s.flush().unwrap();
    let third = split(disk_ptr(dir.path(), 1));
    s.put(2, &[9u8; 10]).unwrap();
    s.put(1, &[4u8; 2000]).unwrap(); // fresh after flush? no: moves
    let fourth_mem = s.get(1).unwrap().unwrap();
    assert_eq!(fourth_mem, vec![4u8; 2000]);
    s.put(1, &[5u8; 1500]).unwrap(); // fresh now: in place, container shrinks to 1504
    s.put(1, &[6u8; 100]).unwrap(); // in place, container shrinks to 128
    s.flush().unwrap();
    let fifth = split(disk_ptr(dir.path(), 1));
    assert_ne!(fifth, third);
    let (_, cap, _) = disk_slot(dir.path(), fifth.0, fifth.1);
    assert_eq!(
        cap, 128,
        "a shrunk value gives its container back down to the minimum"
    );
    assert_eq!(s.get(1).unwrap().unwrap(), vec![6u8; 100]);
}

#[test]
fn in_place_update_keeps_the_slot() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    s.put(1, &[1u8; 1000]).unwrap();
    s.put(1, &[2u8; 999]).unwrap();
    s.put(1, &[3u8; 300]).unwrap();
    s.flush().unwrap();
    let p = split(disk_ptr(dir.path(), 1));
    assert_eq!(
        p,
        (0, 0),
        "the first slot of the first page, reused in place"
    );
    assert_eq!(disk_slot(dir.path(), 0, 0).1, 304);
    // In place means the same slot even when a new one is free to take.
    s.put(5, &[1u8; 1000]).unwrap();
    s.put(6, &[1u8; 200]).unwrap();
    s.put(5, &[2u8; 900]).unwrap();
    s.flush().unwrap();
    assert_eq!(split(disk_ptr(dir.path(), 5)), (0, 1));
    s.delete(5).unwrap();
    s.delete(6).unwrap();
    s.flush().unwrap();
    // Deleting fresh values frees their slot at once: the next value reuses it.
    s.put(2, &[1u8; 200]).unwrap();
    s.delete(2).unwrap();
    s.put(3, &[1u8; 200]).unwrap();
    s.flush().unwrap();
    assert_eq!(split(disk_ptr(dir.path(), 3)), (0, 1));
    assert_eq!(disk_ptr(dir.path(), 2), 0);
}

#[test]
fn deleted_slots_and_space_are_reused_after_flush() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    for id in 0..40 {
        s.put(id, &[id as u8; 1000]).unwrap();
    }
    s.flush().unwrap();
    let pages = s.stats().unwrap().pages;
    for round in 0..20u8 {
        for id in 0..40 {
            s.put(id, &[round; 1000]).unwrap();
        }
        s.flush().unwrap();
    }
    let st = s.stats().unwrap();
    assert!(
        st.pages <= pages + 1,
        "space is reused: {} pages vs {pages}",
        st.pages
    );
    for id in 0..40 {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![19u8; 1000]);
    }
    // Delete everything: every slot is freed at the flush; the pages empty and are reclaimed.
    for id in 0..40 {
        assert_eq!(s.delete(id).unwrap(), Some(1000));
    }
    assert_eq!(s.delete(0).unwrap(), None);
    s.flush().unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.live_values, st.live_bytes, st.stored_bytes), (0, 0, 0));
    assert_eq!(st.pages, 1, "one empty page kept, the others deleted");
    assert_eq!(st.garbage_ratio, 0.0);
}

#[test]
fn compaction_drains_fragmented_pages_and_deletes_them() {
    // 0.25: writes start compacting the holed pages; 1.0: only `compact` does.
    for threshold in [0.25, 1.0] {
        compact_drains(threshold);
    }
}

fn compact_drains(threshold: f64) {
    let dir = scratch();
    let o = opts().compact_threshold(threshold).keep_empty_pages(0);
    let s = Store::create(dir.path(), o.clone()).unwrap();
    for id in 0..200 {
        s.put(id, &[id as u8; 900]).unwrap();
    }
    s.flush().unwrap();
    let full = s.stats().unwrap();
    assert!(full.pages >= 3);
    // Delete every other value: holes everywhere.
    for id in (0..200).step_by(2) {
        s.delete(id).unwrap();
    }
    s.flush().unwrap();
    let holed = s.stats().unwrap();
    assert!(holed.garbage_ratio > 0.3, "{holed:?}");
    let report = s.compact().unwrap();
    assert!(report.moved_values > 0);
    // 900 raw bytes take a 904-byte container (8-byte alignment).
    assert_eq!(report.moved_bytes, report.moved_values * 904);
    assert!(report.pages_removed > 0);
    let after = s.stats().unwrap();
    assert!(after.pages < full.pages, "{after:?} vs {full:?}");
    assert!(after.garbage_ratio < 0.05, "{after:?}");
    assert!(after.bytes_on_disk < full.bytes_on_disk);
    assert_eq!(after.pages_compacting, 0);
    let again = s.compact().unwrap();
    assert_eq!(again.moved_values, 0, "nothing fragmented is left to move");
    for id in 0..200 {
        let want = (id % 2 == 1).then(|| vec![id as u8; 900]);
        assert_eq!(s.get(id).unwrap(), want);
    }
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(s.stats().unwrap().live_values, 100);
}

#[test]
fn compaction_on_write_moves_values_in_bounded_steps() {
    let dir = scratch();
    let o = opts().compact_threshold(0.2).compact_step_bytes(1808);
    let s = Store::create(dir.path(), o).unwrap();
    for id in 0..120 {
        s.put(id, &[1u8; 900]).unwrap();
    }
    s.flush().unwrap();
    for id in (0..120).step_by(2) {
        s.delete(id).unwrap();
    }
    s.flush().unwrap(); // holes appear: pages are marked for compaction
    let marked = s.stats().unwrap().pages_compacting;
    assert!(marked > 0);
    // Each write moves values until it has moved 1808 bytes (two 904-byte containers).
    assert_eq!(s.stats().unwrap().moved_values, 0);
    s.put(1000, b"x").unwrap();
    assert_eq!(s.stats().unwrap().moved_values, 2);
    s.put(1001, b"y").unwrap();
    assert_eq!(s.stats().unwrap().moved_values, 4);
    for i in 0..200 {
        s.put(2000 + i, b"small").unwrap();
    }
    s.flush().unwrap();
    s.flush().unwrap();
    for id in (1..120).step_by(2) {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![1u8; 900]);
    }
    assert_eq!(s.stats().unwrap().pages_compacting, 0);
    assert_eq!(
        s.stats().unwrap().moved_values,
        60,
        "every surviving value moved once"
    );
}

#[test]
fn flush_writes_back_what_was_written_and_nothing_twice() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().synced_bytes, 0);
    s.put(1, &[5u8; 1000]).unwrap();
    s.flush().unwrap();
    let first = s.stats().unwrap().synced_bytes;
    // The block of the header and slot entry (at 64) and the block of the value (at the
    // page end), not the span between them.
    assert_eq!(first, 2 * 4096);
    s.flush().unwrap();
    let second = s.stats().unwrap().synced_bytes;
    assert_eq!(
        second - first,
        4096,
        "only the block of the rewritten page summary"
    );
    s.flush().unwrap();
    assert_eq!(
        s.stats().unwrap().synced_bytes,
        second,
        "nothing left to write"
    );
}

/// A flush writes back the blocks its writes dirtied, wherever they are in the page: a
/// small update in a large, full page syncs a few blocks, not the page.
#[test]
fn a_small_update_syncs_a_few_blocks_not_the_page() {
    let dir = scratch();
    let page = 1024 * 1024;
    let s = Store::create(
        dir.path(),
        opts().min_page_size(page).compression(Compression::None),
    )
    .unwrap();
    for id in 0..900 {
        s.put(id, &[id as u8; 1000]).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().pages, 1);
    let before = s.stats().unwrap().synced_bytes;
    s.put(450, &[7u8; 1000]).unwrap(); // moves: new container, new slot entry
    s.flush().unwrap();
    let synced = s.stats().unwrap().synced_bytes - before;
    // The new value's block(s), its slot entry's block and the header's block; the old
    // slot's tombstone is written by this flush and synced by the next.
    assert!(
        synced <= 4 * 4096,
        "synced {synced} bytes of a {page}-byte page"
    );
    assert!(synced >= 2 * 4096, "the value and its slot entry: {synced}");
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(450).unwrap().unwrap(), vec![7u8; 1000]);
}

#[test]
fn compaction_starts_only_past_the_threshold() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().compact_threshold(0.25)).unwrap();
    // Twelve 4 KiB containers from the top of a 64 KiB page; the gap below stays largest.
    for id in 0..12 {
        s.put(id, &[id as u8; 4096]).unwrap();
    }
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().pages, 1);
    for id in [1, 3, 5, 7] {
        s.delete(id).unwrap();
    }
    s.flush().unwrap();
    // Exactly 16 KiB = 0.25 of the page is fragmented: not past the threshold.
    assert_eq!(s.stats().unwrap().garbage_ratio, 0.25);
    assert_eq!(s.stats().unwrap().pages_compacting, 0);
    s.delete(9).unwrap();
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().pages_compacting, 1);
}

#[test]
fn freed_space_is_given_back_to_the_file_system() {
    use std::os::unix::fs::MetadataExt as _;
    let dir = scratch();
    let opts = || opts().punch_min_bytes(0);
    let s = Store::create(dir.path(), opts()).unwrap();
    for id in 0..12 {
        s.put(id, &[id as u8 + 1; 4096]).unwrap();
    }
    s.flush().unwrap();
    let blocks = || {
        std::fs::metadata(dir.path().join("page-00000000.vvp"))
            .unwrap()
            .blocks()
            * 512
    };
    let before = blocks();
    assert!(before >= 12 * 4096);
    for id in 2..10 {
        s.delete(id).unwrap();
    }
    assert_eq!(
        s.stats().unwrap().punched_bytes,
        0,
        "nothing freed before the flush"
    );
    s.flush().unwrap();
    // Eight adjacent 4 KiB containers freed: 32 KiB of whole blocks punched.
    assert_eq!(s.stats().unwrap().punched_bytes, 8 * 4096);
    assert!(blocks() <= before - 8 * 4096, "{} vs {before}", blocks());
    for id in [0, 1, 10, 11] {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 4096]);
    }
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    for id in [0, 1, 10, 11] {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 4096]);
    }
    // The punched space is reused.
    s.put(20, &[7u8; 4096]).unwrap();
    assert_eq!(s.get(20).unwrap().unwrap(), vec![7u8; 4096]);

    // Containers of 1.5 blocks: only blocks wholly free and touching the freed container
    // go, each once, whatever the order of the frees.
    for order in [[1u64, 2], [2, 1]] {
        let dir = scratch();
        let s = Store::create(dir.path(), opts()).unwrap();
        for id in 0..4 {
            s.put(id, &[id as u8 + 1; 6144]).unwrap(); // at 59392, 53248, 47104, 40960
        }
        s.flush().unwrap();
        s.delete(order[0]).unwrap();
        s.flush().unwrap();
        s.delete(order[1]).unwrap();
        s.flush().unwrap();
        // Free run 47104..59392: whole blocks 49152..57344.
        assert_eq!(s.stats().unwrap().punched_bytes, 8192, "{order:?}");
        for id in [0, 3] {
            assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 6144]);
        }
    }
}

/// Runs of free blocks shorter than `punch_min_bytes` stay allocated (punching is a
/// file-system transaction); a run that reaches it is punched with one call.
#[test]
fn only_free_runs_of_punch_min_bytes_are_punched() {
    for (freed, min, punched) in [
        (8u64, 32 * 1024, 32 * 1024),
        (8, 32 * 1024 + 1, 0),
        (7, 32 * 1024, 0),
        (16, 64 * 1024, 64 * 1024),
    ] {
        let dir = scratch();
        let o = opts().min_page_size(1 << 20).punch_min_bytes(min);
        let s = Store::create(dir.path(), o).unwrap();
        for id in 0..20 {
            s.put(id, &[id as u8 + 1; 4096]).unwrap();
        }
        s.flush().unwrap();
        for id in 2..2 + freed {
            s.delete(id).unwrap();
        }
        s.flush().unwrap();
        assert_eq!(
            s.stats().unwrap().punched_bytes,
            punched,
            "{freed} blocks freed, min {min}"
        );
        for id in (0..2).chain(2 + freed..20) {
            assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 4096]);
        }
    }
    assert!(
        format!("{:?}", Options::default()).contains("punch_min_bytes: 65536"),
        "the documented default"
    );
}

/// Two free runs of one page with a live value between them are punched apart: the live
/// value's blocks are never part of a punched range.
#[test]
fn separate_free_runs_are_punched_separately() {
    let dir = scratch();
    let o = opts().min_page_size(1 << 20).punch_min_bytes(0);
    let s = Store::create(dir.path(), o.clone()).unwrap();
    for id in 0..6u64 {
        s.put(id, &[id as u8 + 1; 8192]).unwrap();
    }
    s.flush().unwrap();
    s.delete(1).unwrap();
    s.delete(3).unwrap();
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().punched_bytes, 2 * 8192);
    for id in [0u64, 2, 4, 5] {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 8192]);
    }
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    assert_eq!(s.get(2).unwrap().unwrap(), vec![3u8; 8192]);

    // Two adjacent 8 KiB containers freed by one flush form one 16 KiB run: it reaches a
    // 16 KiB minimum that neither reaches alone.
    let dir = scratch();
    let o = opts().min_page_size(1 << 20).punch_min_bytes(16 * 1024);
    let s = Store::create(dir.path(), o).unwrap();
    for id in 0..6u64 {
        s.put(id, &[id as u8 + 1; 8192]).unwrap();
    }
    s.flush().unwrap();
    s.delete(1).unwrap();
    s.delete(2).unwrap();
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().punched_bytes, 16 * 1024);
    for id in [0u64, 3, 4, 5] {
        assert_eq!(s.get(id).unwrap().unwrap(), vec![id as u8 + 1; 8192]);
    }
}

/// Space freed between flushes and reused before the next one is not punched by it: the
/// punch looks at what is free when the flush ends, not when the space was freed.
#[test]
fn space_freed_and_reused_before_a_flush_keeps_its_bytes() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().punch_min_bytes(0)).unwrap();
    s.put(1, &[1u8; 16 * 1024]).unwrap();
    assert_eq!(s.delete(1).unwrap(), Some(16 * 1024)); // fresh: freed at once
    s.put(2, &[2u8; 16 * 1024]).unwrap(); // best fit: the same space
    s.flush().unwrap();
    assert_eq!(s.stats().unwrap().punched_bytes, 0);
    assert_eq!(s.get(2).unwrap().unwrap(), vec![2u8; 16 * 1024]);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(2).unwrap().unwrap(), vec![2u8; 16 * 1024]);
}

/// A fresh container freed before any flush reached it still has its whole free blocks
/// given back at the next flush.
#[test]
fn a_fresh_value_deleted_before_the_flush_has_its_blocks_punched() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().punch_min_bytes(0)).unwrap();
    s.put(1, &[1u8; 32 * 1024]).unwrap();
    assert_eq!(s.delete(1).unwrap(), Some(32 * 1024));
    s.flush().unwrap();
    assert!(s.stats().unwrap().punched_bytes >= 28 * 1024);
}

/// The pointer in the very last entry of the tracker file survives a reopen (ids 0 and
/// 1023 fill the first 1024-entry tracker's two ends, with zeros between).
#[test]
fn the_last_tracker_entry_survives_reopen() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    s.put(0, b"first").unwrap();
    s.put(1023, b"last").unwrap();
    drop(s);
    let len = std::fs::metadata(dir.path().join("tracker.vvt"))
        .unwrap()
        .len();
    assert_eq!(len, 64 + 16 * 1024, "one entry per id 0..=1023");
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(1023).unwrap().as_deref(), Some(&b"last"[..]));
    assert_eq!(s.get(0).unwrap().as_deref(), Some(&b"first"[..]));
}

fn doc(i: u64) -> Vec<u8> {
    format!(
        "{{\"order_id\":{i},\"customer\":{{\"name\":\"customer {}\",\"email\":\"c{}@example.com\"}},\
         \"status\":\"shipped\",\"items\":[{{\"sku\":\"SKU-{}\",\"quantity\":{}}}],\"total\":{}.{}}}",
        i % 97,
        i % 89,
        i % 13,
        i % 5 + 1,
        i * 7 % 1000,
        i % 100
    )
    .into_bytes()
}

#[test]
fn dictionary_compression_improves_the_ratio_and_survives_reopen() {
    let dir = scratch();
    let o = opts().compression(Compression::Lz4);
    let s = Store::create(dir.path(), o.clone()).unwrap();
    for i in 0..300 {
        s.put(i, &doc(i)).unwrap();
    }
    let plain = s.stats().unwrap();
    let id = s.train_dictionary(100, 4096).unwrap().unwrap();
    assert_eq!(id, 1);
    for i in 0..300 {
        s.put(i, &doc(i)).unwrap();
    }
    let with = s.stats().unwrap();
    assert_eq!(with.dictionaries, 1);
    assert!(
        with.compression_ratio > plain.compression_ratio * 1.3,
        "{} vs {}",
        with.compression_ratio,
        plain.compression_ratio
    );
    let second = s.train_dictionary(100, 4096).unwrap().unwrap();
    assert_eq!(second, 2);
    let files: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(s.stats().unwrap().bytes_on_disk, files);
    s.put(0, &doc(0)).unwrap();
    drop(s);
    let s = Store::open(dir.path(), o).unwrap();
    for i in 0..300 {
        assert_eq!(s.get(i).unwrap().unwrap(), doc(i));
    }
    assert_eq!(s.stats().unwrap().dictionaries, 2);
    let files: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(
        s.stats().unwrap().bytes_on_disk,
        files,
        "dictionaries counted after reopen"
    );
}

#[test]
fn compression_pays_or_the_value_is_stored_raw() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().compression(Compression::Lz4)).unwrap();
    s.put(1, &[0u8; 10_000]).unwrap();
    let st = s.stats().unwrap();
    assert!(st.stored_bytes < 200, "{st:?}");
    assert!(st.compression_ratio > 50.0);
    // Zero-copy only for raw values; both give the right bytes.
    assert_eq!(s.get_with(1, |b| b.len()).unwrap(), Some(10_000));
    let mut x = 0x9e37_79b9u32;
    let noise: Vec<u8> = (0..5000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    s.put(2, &noise).unwrap();
    let st2 = s.stats().unwrap();
    assert_eq!(
        st2.stored_bytes - st.stored_bytes,
        5000,
        "noise is stored raw"
    );
    assert_eq!(s.get_with(2, <[u8]>::to_vec).unwrap().unwrap(), noise);
    // A tiny value: compression cannot shrink a 128-byte container.
    s.put(3, b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        .unwrap();
    assert_eq!(s.stats().unwrap().stored_bytes - st2.stored_bytes, 54);
}

#[test]
fn default_pages_are_32_mib_and_big_values_get_bigger_pages() {
    let dir = scratch();
    let s = Store::create(dir.path(), Options::default()).unwrap();
    s.put(1, b"small").unwrap();
    let len = |d: &Path, p: &str| std::fs::metadata(d.join(p)).unwrap().len();
    assert_eq!(len(dir.path(), "page-00000000.vvp"), 32 * 1024 * 1024);
    assert_eq!(varve_slotted::DEFAULT_PAGE_SIZE, 32 * 1024 * 1024);
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    // Header (64) + one slot (40) + the container, rounded up to 4 KiB.
    let exact = vec![1u8; 102_400 - 104];
    s.put(2, &exact).unwrap();
    assert_eq!(len(dir.path(), "page-00000000.vvp"), 102_400);
    assert_eq!(s.get(2).unwrap().unwrap(), exact);
    let over = vec![2u8; 102_300]; // container 102 304: one block more
    s.put(3, &over).unwrap();
    assert_eq!(len(dir.path(), "page-00000001.vvp"), 106_496);
    assert_eq!(s.get(3).unwrap().unwrap(), over);
    // The smallest and largest page sizes reopen.
    for size in [16 * 1024, 1 << 30] {
        let dir = scratch();
        let o = opts().min_page_size(size);
        let s = Store::create(dir.path(), o.clone()).unwrap();
        s.put(1, b"edge").unwrap();
        drop(s);
        let s = Store::open(dir.path(), o).unwrap();
        assert_eq!(s.get(1).unwrap().as_deref(), Some(&b"edge"[..]));
    }
}

#[test]
fn the_tracker_grows_for_large_ids() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    let tracker_len = || {
        std::fs::metadata(dir.path().join("tracker.vvt"))
            .unwrap()
            .len()
    };
    assert_eq!(tracker_len(), 64 + 16 * 1024);
    s.put(1023, b"last of the first 1024").unwrap();
    s.flush().unwrap();
    assert_eq!(tracker_len(), 64 + 16 * 1024);
    s.put(1024, b"first past them").unwrap();
    s.flush().unwrap();
    assert_eq!(tracker_len(), 64 + 16 * 2048);
    s.put(4096, b"far").unwrap();
    s.flush().unwrap();
    assert_eq!(tracker_len(), 64 + 16 * 8192);
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(
        s.get(1023).unwrap().as_deref(),
        Some(&b"last of the first 1024"[..])
    );
    assert_eq!(
        s.get(1024).unwrap().as_deref(),
        Some(&b"first past them"[..])
    );
    assert_eq!(s.get(4096).unwrap().as_deref(), Some(&b"far"[..]));
    assert_eq!(s.iter().take(4).count(), 3);
}

/// Regression: put/delete of one id interleaved across deferred flushes ends right and
/// leaks no old version.
#[test]
fn interleaved_put_and_delete_across_flushes_end_right_without_leaks() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    s.put(1, &[1u8; 500]).unwrap();
    s.flush().unwrap();
    assert_eq!(s.delete(1).unwrap(), Some(500)); // durable: pending until the flush
    assert!(!s.put(1, &[2u8; 700]).unwrap()); // fresh
    assert_eq!(s.delete(1).unwrap(), Some(700)); // fresh: freed at once
    assert!(!s.put(1, &[3u8; 900]).unwrap());
    assert_eq!(s.stats().unwrap().live_values, 1);
    s.flush().unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.live_values, st.stored_bytes), (1, 900));
    // The first version's 504-byte container is free now (a hole, counted as garbage),
    // the second's was never leaked (it merged back at once); a same-size value reuses
    // the hole exactly.
    assert_eq!(st.garbage_ratio * 65536.0, 504.0);
    s.put(2, &[4u8; 500]).unwrap();
    assert_eq!(s.stats().unwrap().garbage_ratio, 0.0);
    s.delete(2).unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(1).unwrap().unwrap(), vec![3u8; 900]);
    s.delete(1).unwrap();
    s.flush().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.get(1).unwrap(), None);
    assert_eq!(s.stats().unwrap().live_values, 0);
}

#[test]
fn stats_count_values_bytes_and_pages() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(
        (st.live_values, st.pages, st.compression_ratio),
        (0, 0, 1.0)
    );
    s.put(1, &[1u8; 300]).unwrap();
    s.put(2, &[1u8; 100_000]).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.live_values, 2);
    assert_eq!(st.live_bytes, 100_300);
    assert_eq!(st.stored_bytes, 100_300);
    assert_eq!(st.pages, 2, "the big value has its own page");
    let files: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(st.bytes_on_disk, files);
    assert_eq!(s.path(), dir.path());
}

#[test]
fn readers_never_see_a_torn_value() {
    let dir = scratch();
    let o = opts().compact_threshold(0.1).compact_step_bytes(4096);
    let s = Arc::new(Store::create(dir.path(), o).unwrap());
    // Every value is one repeated byte; its length encodes the byte, so a mix of two
    // versions is detectable.
    let make = |g8: u8| vec![g8; 200 + usize::from(g8) * 7];
    for id in 0..64 {
        s.put(id, &make(0)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let s = Arc::clone(&s);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) || reads < 1000 {
                    let id = reads % 64;
                    let ok = if r == 0 {
                        s.get(id).unwrap().map(|v| {
                            let g = v[0];
                            v.len() == 200 + usize::from(g) * 7 && v.iter().all(|&b| b == g)
                        })
                    } else {
                        s.get_with(id, |v| {
                            let g = v[0];
                            v.len() == 200 + usize::from(g) * 7 && v.iter().all(|&b| b == g)
                        })
                        .unwrap()
                    };
                    assert_ne!(ok, Some(false), "torn value for id {id}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..3000u32 {
        let g8 = (round % 200) as u8;
        s.put(u64::from(round % 64), &make(g8)).unwrap();
        if round % 100 == 99 {
            s.flush().unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() >= 1000);
    }
}

/// A scratch directory on tmpfs when there is one (fsync is free there, so the suite stays
/// fast enough for mutation testing; mapping and page-cache behaviour are the same).
fn scratch() -> tempfile::TempDir {
    varve_testkit::dirs::in_memory()
}

/// The write that brings the retired (replaced, not yet flushed) container bytes to
/// `flush_after_retired_bytes` flushes by itself, and not one write earlier.
#[test]
fn a_write_reaching_the_retired_bytes_limit_flushes() {
    // 100-byte raw values take a 128-byte container (the minimum).
    for (limit, writes_before_flush) in [(128u64, 1usize), (129, 2), (256, 2), (257, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::create(dir.path(), opts().flush_after_retired_bytes(limit)).unwrap();
        for id in 0..8u64 {
            s.put(id, &[1u8; 100]).unwrap();
        }
        s.flush().unwrap();
        let synced = s.stats().unwrap().synced_bytes;
        for id in 0..writes_before_flush as u64 {
            assert_eq!(
                s.stats().unwrap().synced_bytes,
                synced,
                "limit {limit}: flushed before write {id}"
            );
            if id % 2 == 0 {
                s.put(id, &[2u8; 100]).unwrap();
            } else {
                s.delete(id).unwrap();
            }
        }
        assert!(
            s.stats().unwrap().synced_bytes > synced,
            "limit {limit}: no flush after {writes_before_flush} writes"
        );
        // The flush made the writes durable in the tracker on disk.
        assert_eq!(disk_ptr(dir.path(), 1) == 0, writes_before_flush > 1);
    }
}

/// Updating every durable value once without `flush` doubles the files when nothing
/// flushes by itself; with a small retired-bytes limit the freed space is reused as the
/// run goes, and every value reads back right, before and after reopening.
#[test]
fn updates_without_flush_reuse_space_once_retired_bytes_pass_the_limit() {
    let pages = |limit: u64| {
        let dir = tempfile::tempdir().unwrap();
        let o = opts().flush_after_retired_bytes(limit);
        let s = Store::create(dir.path(), o.clone()).unwrap();
        for id in 0..240u64 {
            s.put(id, &[id as u8; 1000]).unwrap();
        }
        s.flush().unwrap();
        for id in 0..240u64 {
            s.put(id, &[!(id as u8); 1000]).unwrap();
        }
        let pages = s.stats().unwrap().pages;
        drop(s);
        let s = Store::open(dir.path(), o).unwrap();
        for id in 0..240u64 {
            assert_eq!(s.get(id).unwrap().unwrap(), vec![!(id as u8); 1000]);
        }
        pages
    };
    let (off, on) = (pages(0), pages(16 * 1024));
    // 240 KB of live values fill four 64 KiB pages; their old versions four more.
    assert!(off >= 8, "without the limit: {off} pages");
    assert!(on <= 5, "with a 16 KiB limit: {on} pages");
}
