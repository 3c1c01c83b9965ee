//! Bad input and damaged files: typed errors, nothing changed on disk, no panic; a damaged
//! value reads as `Corrupted { page, slot }` while the rest of the store keeps working.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use varve_slotted::{Compression, Error, Options, Store};

const TRACKER: &str = "tracker.vvt";
const PAGE0: &str = "page-00000000.vvp";

fn opts() -> Options {
    Options::default()
        .min_page_size(64 * 1024)
        .max_id(1000)
        .max_value_size(200_000)
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "LOCK")
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn filled(dir: &Path) -> Store {
    let s = Store::create(dir, opts()).unwrap();
    for id in 0..20u64 {
        s.put(
            id,
            format!("value number {id} {}", "x".repeat(id as usize * 10)).as_bytes(),
        )
        .unwrap();
    }
    s.flush().unwrap();
    s
}

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, at).unwrap();
}

fn read_u64(path: &Path, at: u64) -> u64 {
    let f = std::fs::File::open(path).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, at).unwrap();
    u64::from_le_bytes(b)
}

fn write_u64(path: &Path, at: u64, v: u64) {
    let f = OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&v.to_le_bytes(), at).unwrap();
}

/// Offset of the 16-byte tracker entry of `id` (documented layout).
fn entry_at(id: u64) -> u64 {
    64 + 16 * id
}

/// The pointer in the tracker entry of `id`.
fn read_ptr(path: &Path, id: u64) -> u64 {
    read_u64(path, entry_at(id))
}

/// Writes a tracker entry for `id` with a valid checksum (documented layout), so the
/// pointer itself is what gets checked.
fn write_ptr(path: &Path, id: u64, ptr: u64) {
    write_u64(path, entry_at(id), ptr);
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&ptr.to_le_bytes(), id);
    write_u64(path, entry_at(id) + 8, sum);
}

/// `(page, slot)` of `id` read from the tracker file (documented layout).
fn ptr_of(dir: &Path, id: u64) -> (u32, u32) {
    let p = read_ptr(&dir.join(TRACKER), id);
    (((p >> 32) - 1) as u32, p as u32)
}

#[test]
fn oversized_ids_and_values_are_refused_and_change_nothing() {
    let dir = scratch();
    let s = filled(dir.path());
    let before = snapshot(dir.path());
    let stats = s.stats().unwrap();
    assert!(matches!(
        s.put(1001, b"x"),
        Err(Error::IdTooLarge {
            id: 1001,
            max: 1000
        })
    ));
    assert!(matches!(s.get(1001), Err(Error::IdTooLarge { .. })));
    assert!(matches!(s.delete(5000), Err(Error::IdTooLarge { .. })));
    assert!(matches!(
        s.get_with(u64::MAX, |_| ()),
        Err(Error::IdTooLarge { .. })
    ));
    let big = vec![7u8; 200_001];
    assert!(matches!(
        s.put(3, &big),
        Err(Error::ValueTooLarge {
            size: 200_001,
            max: 200_000
        })
    ));
    s.put(1000, b"the last id is fine").unwrap();
    s.delete(1000).unwrap();
    s.flush().unwrap();
    let after = s.stats().unwrap();
    assert_eq!(
        (
            after.live_values,
            after.live_bytes,
            after.stored_bytes,
            after.bytes_on_disk,
            after.pages
        ),
        (
            stats.live_values,
            stats.live_bytes,
            stats.stored_bytes,
            stats.bytes_on_disk,
            stats.pages
        )
    );
    assert_eq!(
        s.get(3).unwrap().unwrap(),
        format!("value number 3 {}", "x".repeat(30)).as_bytes()
    );
    drop(s);
    let after = snapshot(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        before[&dir.path().join(TRACKER)],
        after[&dir.path().join(TRACKER)]
    );
}

#[test]
fn a_value_exactly_at_the_maximum_is_accepted() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().compression(Compression::None)).unwrap();
    let v = vec![9u8; 200_000];
    s.put(1, &v).unwrap();
    assert_eq!(s.get(1).unwrap().unwrap(), v);
    // A value bigger than the minimum page gets a page of its own, rounded to 4 KiB.
    assert_eq!(s.stats().unwrap().pages, 1);
    assert!(s.stats().unwrap().bytes_on_disk >= 200_000);
}

#[test]
fn invalid_options_are_refused() {
    let dir = scratch();
    for (o, option) in [
        (Options::default().min_page_size(8192), "min_page_size"),
        (Options::default().min_page_size(65537), "min_page_size"),
        (Options::default().min_page_size(2 << 30), "min_page_size"),
        (
            Options::default().max_value_size(u32::MAX),
            "max_value_size",
        ),
        // A value must fit a 1 GiB page with its header (64), one slot (40) and the 4096
        // alignment: one byte more than that is refused.
        (
            Options::default().max_value_size((1 << 30) - 4200 + 1),
            "max_value_size",
        ),
        (
            Options::default().compact_threshold(0.0),
            "compact_threshold",
        ),
        (
            Options::default().compact_threshold(1.5),
            "compact_threshold",
        ),
        (
            Options::default().compact_step_bytes(100),
            "compact_step_bytes",
        ),
        (Options::default().max_id(1 << 39), "max_id"),
    ] {
        match Store::create(dir.path(), o) {
            Err(Error::InvalidOptions { what, .. }) => assert_eq!(what, option),
            other => panic!("{option}: {other:?}"),
        }
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing created"
    );
    Store::create(
        dir.path(),
        Options::default()
            .min_page_size(16384)
            .compact_threshold(1.0)
            .compact_step_bytes(128)
            .max_value_size((1 << 30) - 4200),
    )
    .unwrap();
}

#[test]
fn open_create_and_lock_errors() {
    let dir = scratch();
    assert!(matches!(
        Store::open(dir.path(), opts()),
        Err(Error::NotFound(_))
    ));
    let s = Store::create(dir.path(), opts()).unwrap();
    assert!(matches!(
        Store::open(dir.path(), opts()),
        Err(Error::Locked(_))
    ));
    drop(s);
    assert!(matches!(
        Store::create(dir.path(), opts()),
        Err(Error::AlreadyExists(_))
    ));
    Store::open(dir.path(), opts()).unwrap();
}

fn assert_open_fails_unchanged(dir: &Path) {
    let before = snapshot(dir);
    let r = Store::open(dir, opts());
    assert!(matches!(r, Err(Error::BadFile { .. })), "{r:?}");
    assert_eq!(snapshot(dir), before);
}

#[test]
fn page_file_with_wrong_magic_size_or_name_is_refused() {
    let dir = scratch();
    drop(filled(dir.path()));
    let page = dir.path().join(PAGE0);
    flip(&page, 0);
    assert_open_fails_unchanged(dir.path());
    flip(&page, 0);
    Store::open(dir.path(), opts()).unwrap();

    let f = OpenOptions::new().write(true).open(&page).unwrap();
    f.set_len(64 * 1024 + 100).unwrap();
    assert_open_fails_unchanged(dir.path());
    // Refused for its size alone, before its header is read.
    match Store::open(dir.path(), opts()) {
        Err(Error::BadFile { what, .. }) => assert!(what.contains("4 KiB blocks"), "{what}"),
        other => panic!("expected BadFile, got {other:?}"),
    }
    f.set_len(128 * 1024).unwrap();
    assert_open_fails_unchanged(dir.path());
    f.set_len(4096).unwrap();
    assert_open_fails_unchanged(dir.path());
    f.set_len(64 * 1024).unwrap();
    Store::open(dir.path(), opts()).unwrap();

    std::fs::rename(&page, dir.path().join("page-00000003.vvp")).unwrap();
    assert_open_fails_unchanged(dir.path());
}

#[test]
fn damaged_tracker_header_is_refused() {
    let dir = scratch();
    drop(filled(dir.path()));
    let tracker = dir.path().join(TRACKER);
    flip(&tracker, 20);
    assert_open_fails_unchanged(dir.path());
    flip(&tracker, 20);
    let f = OpenOptions::new().write(true).open(&tracker).unwrap();
    // A tracker is created with room for 1024 ids and never shrinks: shorter is truncated.
    f.set_len(64 + 16 * 1024 - 16).unwrap();
    assert_open_fails_unchanged(dir.path());
    f.set_len(64 + 16 * 1024).unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().live_values, 20);
    drop(s);
    f.set_len(10).unwrap();
    assert_open_fails_unchanged(dir.path());
}

#[test]
fn tracker_pointing_past_a_page_reads_as_corrupted() {
    let dir = scratch();
    drop(filled(dir.path()));
    let tracker = dir.path().join(TRACKER);
    // id 4 -> page 9 (missing); id 5 -> page 0, slot far past the page end.
    write_ptr(&tracker, 4, (10u64 << 32) | 1);
    write_ptr(&tracker, 5, (1u64 << 32) | 1_000_000);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().corrupt_entries, 2);
    assert!(matches!(
        s.get(4),
        Err(Error::Corrupted {
            page: 9,
            slot: 1,
            ..
        })
    ));
    assert!(matches!(
        s.get(5),
        Err(Error::Corrupted {
            page: 0,
            slot: 1_000_000,
            ..
        })
    ));
    assert!(matches!(
        s.get_with(5, |_| ()),
        Err(Error::Corrupted { .. })
    ));
    // The location names the page file and the slot's entry in it.
    assert_eq!(
        s.get(4).unwrap_err().location(),
        Some(("page-00000009.vvp".to_owned(), 64 + 40))
    );
    assert_eq!(
        s.get(5).unwrap_err().location(),
        Some(("page-00000000.vvp".to_owned(), 64 + 40 * 1_000_000))
    );
    let errors = s.iter().take(21).filter(Result::is_err).count();
    assert_eq!(errors, 2);
    assert_eq!(
        s.get(6).unwrap().unwrap(),
        format!("value number 6 {}", "x".repeat(60)).as_bytes()
    );
    // Deleting or overwriting clears the damage.
    assert_eq!(s.delete(4).unwrap(), Some(0));
    assert!(!s.put(5, b"fresh").unwrap_or(false) || s.get(5).unwrap().is_some());
    assert_eq!(s.get(5).unwrap().as_deref(), Some(&b"fresh"[..]));
    s.flush().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().corrupt_entries, 0);
    assert_eq!(s.get(4).unwrap(), None);
}

/// A pointer to the last slot whose entry would start inside the page but end past it:
/// the entry cannot be read, so the id is corrupt and the rest of the page is untouched.
#[test]
fn tracker_pointing_at_a_slot_straddling_the_page_end_reads_as_corrupted() {
    let dir = scratch();
    drop(filled(dir.path()));
    let page_len = std::fs::metadata(dir.path().join(PAGE0)).unwrap().len();
    let straddling = (page_len - 64) / 40; // entry starts before the end, ends past it
    assert!(64 + 40 * straddling < page_len && 64 + 40 * (straddling + 1) > page_len);
    write_ptr(&dir.path().join(TRACKER), 5, (1u64 << 32) | straddling);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().corrupt_entries, 1);
    assert_eq!(s.stats().unwrap().live_values, 19);
    assert!(matches!(s.get(5), Err(Error::Corrupted { page: 0, .. })));
    assert_eq!(
        s.get(6).unwrap().unwrap(),
        format!("value number 6 {}", "x".repeat(60)).as_bytes()
    );
}

#[test]
fn tracker_pointing_at_another_ids_slot_or_a_tombstone_reads_as_corrupted() {
    let dir = scratch();
    let s = filled(dir.path());
    let tracker = dir.path().join(TRACKER);
    let p7 = read_ptr(&tracker, 7);
    s.delete(7).unwrap();
    s.flush().unwrap(); // id 7's slot is a tombstone now
    drop(s);
    write_ptr(&tracker, 7, p7);
    let p6 = read_ptr(&tracker, 6);
    write_ptr(&tracker, 4, p6); // id 4 -> id 6's slot
    let (page, slot) = ptr_of(dir.path(), 6);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().corrupt_entries, 2);
    assert!(matches!(s.get(7), Err(Error::Corrupted { .. })));
    match s.get(4) {
        Err(Error::Corrupted {
            page: p, slot: sl, ..
        }) => assert_eq!((p, sl), (page, slot)),
        other => panic!("expected Corrupted, got {other:?}"),
    }
    // The rightful owner keeps its slot and its space: new values do not overwrite it.
    let six = s.get(6).unwrap().unwrap();
    for id in 100..160 {
        s.put(id, &[9u8; 700]).unwrap();
    }
    assert_eq!(s.get(6).unwrap().unwrap(), six);
    assert_eq!(
        s.stats().unwrap().live_values,
        18 + 60,
        "ids 4 and 7 are unreadable"
    );
    drop(s);

    // Deleting an id whose pointer reached a reserved (unreadable) slot frees that slot:
    // the next value takes it (the lowest free slot) instead of growing the directory.
    let s = Store::open(dir.path(), opts()).unwrap();
    let (page7, slot7) = ptr_of(dir.path(), 7);
    assert!(matches!(s.get(7), Err(Error::Corrupted { .. })));
    assert_eq!(s.delete(7).unwrap(), Some(0));
    s.put(500, b"takes the freed slot").unwrap();
    s.flush().unwrap();
    assert_eq!(ptr_of(dir.path(), 500), (page7, slot7));
    assert_eq!(s.get(500).unwrap().unwrap(), b"takes the freed slot");
}

/// Rewrites the slot entry `(page, slot)` with `edit` applied to its bytes 0..32 and a
/// valid checksum (layout from docs/format.md), as a bug or a forger would.
fn forge_entry(dir: &Path, page: u32, slot: u32, edit: impl Fn(&mut [u8; 40])) {
    let path = dir.join(format!("page-{page:08}.vvp"));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let at = 64 + 40 * u64::from(slot);
    let mut e = [0u8; 40];
    f.read_exact_at(&mut e, at).unwrap();
    edit(&mut e);
    let seed = (u64::from(page) << 32) | u64::from(slot);
    let sum = xxhash_rust::xxh3::xxh3_64_with_seed(&e[..32], seed);
    e[32..].copy_from_slice(&sum.to_le_bytes());
    f.write_all_at(&e, at).unwrap();
}

type Edit = Box<dyn Fn(&mut [u8; 40])>;

#[test]
fn slot_entries_with_valid_checksums_but_impossible_fields_are_corrupted() {
    let set32 =
        |e: &mut [u8; 40], at: usize, v: u32| e[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let edits: Vec<(&str, Edit)> = vec![
        ("unchanged", Box::new(|_| {})),
        ("unknown codec", Box::new(|e| e[24] = 9)),
        ("codec zero", Box::new(|e| e[24] = 0)),
        ("tombstone", Box::new(|e| e[25] = 1)),
        ("container under 128", Box::new(move |e| set32(e, 12, 120))),
        (
            "stored past container",
            Box::new(move |e| set32(e, 16, 20_000)),
        ),
        (
            "container in the directory",
            Box::new(move |e| set32(e, 8, 64)),
        ),
        (
            // Past the two-slot directory's first entry but inside the directory.
            "container over the slot directory",
            Box::new(move |e| set32(e, 8, 64 + 40 + 16)),
        ),
        (
            "container past the page",
            Box::new(move |e| set32(e, 8, 65_536 - 64)),
        ),
        ("other id", Box::new(|e| e[0] ^= 1)),
        (
            "raw length differs from stored",
            Box::new(move |e| set32(e, 20, 250)),
        ),
    ];
    for (what, edit) in edits {
        let dir = scratch();
        let s = Store::create(dir.path(), opts().compression(Compression::None)).unwrap();
        s.put(1, &[1u8; 200]).unwrap();
        s.put(2, &[2u8; 300]).unwrap();
        drop(s);
        let (page, slot) = ptr_of(dir.path(), 2);
        forge_entry(dir.path(), page, slot, edit);
        let s = Store::open(dir.path(), opts()).unwrap();
        let st = s.stats().unwrap();
        assert_eq!(s.get(1).unwrap().unwrap(), vec![1u8; 200], "{what}");
        if what == "unchanged" {
            assert_eq!(st.corrupt_entries, 0);
            assert_eq!(s.get(2).unwrap().unwrap(), vec![2u8; 300]);
            continue;
        }
        assert!(s.get(2).is_err(), "{what}");
        assert!(
            s.get_with(2, |b| b.to_vec()).is_err(),
            "{what}: zero-copy read"
        );
        if what == "raw length differs from stored" {
            continue; // caught when read, not on open
        }
        assert_eq!(st.corrupt_entries, 1, "{what}");
        assert_eq!(st.live_values, 1, "{what}");
    }
}

/// A compressed value whose entry claims a raw length equal to its stored length is
/// still decompressed (and found damaged), never handed out as stored bytes.
#[test]
fn compressed_value_claiming_its_stored_length_is_not_served_raw() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().compression(Compression::Lz4)).unwrap();
    let doc = "{\"k\":\"v\"}".repeat(50);
    s.put(1, doc.as_bytes()).unwrap();
    drop(s);
    let (page, slot) = ptr_of(dir.path(), 1);
    forge_entry(dir.path(), page, slot, |e| {
        let stored: [u8; 4] = e[16..20].try_into().unwrap();
        assert!(u32::from_le_bytes(stored) < 500, "the value is compressed");
        e[20..24].copy_from_slice(&stored);
    });
    let s = Store::open(dir.path(), opts().compression(Compression::Lz4)).unwrap();
    assert!(matches!(
        s.get_with(1, |b| b.to_vec()),
        Err(Error::Corrupted { .. })
    ));
    assert!(matches!(s.get(1), Err(Error::Corrupted { .. })));
}

/// Two slot entries whose containers overlap (valid checksums, as a bug or a forger
/// would leave them): on open the first keeps its value and the other is counted as
/// corrupt, never serving one value's bytes as the other's.
#[test]
fn overlapping_containers_keep_the_first_and_count_the_other_as_corrupt() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts().compression(Compression::None)).unwrap();
    s.put(1, &[1u8; 200]).unwrap();
    s.put(2, &[2u8; 300]).unwrap();
    drop(s);
    let (page1, slot1) = ptr_of(dir.path(), 1);
    let (page2, slot2) = ptr_of(dir.path(), 2);
    assert_eq!(page1, page2, "both values live in the first page");
    let page_file = dir.path().join(format!("page-{page1:08}.vvp"));
    let container = |slot: u32| {
        let word = read_u64(&page_file, 64 + 40 * u64::from(slot) + 8);
        (word as u32, (word >> 32) as u32) // (offset, capacity)
    };
    let ((off1, cap1), (off2, cap2)) = (container(slot1), container(slot2));
    // Grow the lower container so it reaches 64 bytes into the higher one; every field
    // stays plausible on its own (inside the page, past the directory, stored <= capacity).
    let ((low_slot, low_off), (high_slot, high_off, high_cap)) = if off1 < off2 {
        ((slot1, off1), (slot2, off2, cap2))
    } else {
        ((slot2, off2), (slot1, off1, cap1))
    };
    assert!(high_off + high_cap <= 64 * 1024);
    let grown = high_off - low_off + 64;
    forge_entry(dir.path(), page1, low_slot, |e| {
        e[12..16].copy_from_slice(&grown.to_le_bytes());
    });
    let s = Store::open(dir.path(), opts()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!(st.corrupt_entries, 1);
    assert_eq!(st.live_values, 1);
    // The container that starts first keeps its value and its (forged) capacity; the one
    // it overlaps is reserved, never reused, and never read as anything but its own bytes
    // or `Corrupted`, even after the first grows into the shared bytes.
    let low_id = if low_slot == slot1 { 1 } else { 2 };
    let high_id = 3 - low_id;
    let own = |id: u64| {
        if id == 1 {
            vec![1u8; 200]
        } else {
            vec![2u8; 300]
        }
    };
    assert_eq!(s.get(low_id).unwrap().unwrap(), own(low_id));
    assert_eq!(s.get(high_id).unwrap().unwrap(), own(high_id));
    s.put(low_id, &vec![7u8; grown as usize]).unwrap();
    s.put(9, &[9u8; 500]).unwrap();
    assert_eq!(s.get(low_id).unwrap().unwrap(), vec![7u8; grown as usize]);
    assert_eq!(s.get(9).unwrap().unwrap(), vec![9u8; 500]);
    match s.get(high_id) {
        Err(Error::Corrupted { page, slot, .. }) => assert_eq!((page, slot), (page1, high_slot)),
        Ok(Some(v)) => assert_eq!(v, own(high_id), "the overlapped entry served wrong bytes"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn flipped_value_byte_is_corrupted_at_its_page_and_slot() {
    for compression in [Compression::None, Compression::Lz4] {
        let dir = scratch();
        let s = Store::create(dir.path(), opts().compression(compression)).unwrap();
        let doc = "{\"a\":1,\"b\":2,\"c\":3}".repeat(30);
        for id in 0..10u64 {
            s.put(id, doc.as_bytes()).unwrap();
        }
        drop(s);
        let (page, slot) = ptr_of(dir.path(), 3);
        let path = dir.path().join(format!("page-{page:08}.vvp"));
        let entry = 64 + 40 * u64::from(slot);
        let offset = u64::from(u32::from_le_bytes(
            read_u64(&path, entry + 8).to_le_bytes()[..4]
                .try_into()
                .unwrap(),
        ));
        flip(&path, offset + 5);
        let s = Store::open(dir.path(), opts().compression(compression)).unwrap();
        match s.get(3) {
            Err(Error::Corrupted {
                page: p, slot: sl, ..
            }) => assert_eq!((p, sl), (page, slot)),
            other => panic!("expected Corrupted, got {other:?}"),
        }
        assert!(matches!(
            s.get_with(3, |b| b.to_vec()),
            Err(Error::Corrupted { .. })
        ));
        for id in (0..10).filter(|&i| i != 3) {
            assert_eq!(s.get(id).unwrap().unwrap(), doc.as_bytes());
        }
        drop(s);
        // A flipped slot entry: open succeeds, the id reads as corrupted.
        let (page, slot) = ptr_of(dir.path(), 4);
        let path = dir.path().join(format!("page-{page:08}.vvp"));
        flip(&path, 64 + 40 * u64::from(slot) + 2);
        let s = Store::open(dir.path(), opts().compression(compression)).unwrap();
        assert!(matches!(s.get(4), Err(Error::Corrupted { .. })));
        assert_eq!(s.stats().unwrap().corrupt_entries, 1);
    }
}

#[test]
fn stale_page_summary_is_rebuilt_on_open() {
    let dir = scratch();
    drop(filled(dir.path()));
    flip(&dir.path().join(PAGE0), 36);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().summaries_rebuilt, 1);
    assert_eq!(s.stats().unwrap().live_values, 20);
    for id in 0..20 {
        assert!(s.get(id).unwrap().is_some());
    }
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(
        s.stats().unwrap().summaries_rebuilt,
        0,
        "rewritten at the flush on close"
    );
}

#[test]
fn damaged_dictionary_file_is_refused() {
    let dir = scratch();
    let s = Store::create(dir.path(), opts()).unwrap();
    for id in 0..50u64 {
        s.put(
            id,
            format!("{{\"customer\":{id},\"status\":\"active\",\"tier\":\"gold\"}}").as_bytes(),
        )
        .unwrap();
    }
    let d = s.train_dictionary(50, 4096).unwrap().unwrap();
    drop(s);
    let path = dir.path().join(format!("dict-{d:05}.vvd"));
    flip(&path, 40);
    assert_open_fails_unchanged(dir.path());
}

#[test]
fn leftover_temporary_files_are_removed_on_open() {
    let dir = scratch();
    drop(filled(dir.path()));
    std::fs::write(dir.path().join("page-00000001.tmp"), b"half-made page").unwrap();
    let s = Store::open(dir.path(), opts()).unwrap();
    assert!(!dir.path().join("page-00000001.tmp").exists());
    assert_eq!(s.stats().unwrap().pages, 1);
}

/// A scratch directory on tmpfs when there is one (fsync is free there, so the suite stays
/// fast enough for mutation testing; mapping and page-cache behaviour are the same).
fn scratch() -> tempfile::TempDir {
    varve_testkit::dirs::in_memory()
}

/// A tracker entry that fails its checksum is counted, its id reads as
/// `CorruptedEntry { id }`, and iteration reports it and goes on past it.
#[test]
fn a_tracker_entry_failing_its_checksum_is_counted_reported_and_skipped() {
    let dir = scratch();
    drop(filled(dir.path()));
    let tracker = dir.path().join(TRACKER);
    flip(&tracker, entry_at(4) + 9); // its checksum
    flip(&tracker, entry_at(11) + 2); // its pointer
    let s = Store::open(dir.path(), opts()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.corrupt_entries, st.live_values), (2, 18));
    assert!(matches!(s.get(4), Err(Error::CorruptedEntry { id: 4 })));
    assert_eq!(
        s.get(11).unwrap_err().location(),
        Some((TRACKER.to_owned(), entry_at(11)))
    );
    assert_eq!(Error::IdTooLarge { id: 1, max: 0 }.location(), None);
    assert!(matches!(
        s.get_with(11, |_| ()),
        Err(Error::CorruptedEntry { id: 11 })
    ));
    let items: Vec<_> = s.iter().collect();
    assert_eq!(items.len(), 20, "iteration goes on past the bad entries");
    let bad: Vec<u64> = items
        .iter()
        .filter_map(|r| match r {
            Err(Error::CorruptedEntry { id }) => Some(*id),
            _ => None,
        })
        .collect();
    assert_eq!(bad, vec![4, 11]);
    let good: Vec<u64> = items
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|v| v.0)
        .collect();
    assert_eq!(
        good,
        (0..20).filter(|&i| i != 4 && i != 11).collect::<Vec<_>>()
    );
    // Overwriting or deleting the id clears the damage.
    assert!(
        s.put(11, b"eleven").unwrap(),
        "a corrupt entry counts as a value replaced"
    );
    assert_eq!(s.delete(4).unwrap(), Some(0));
    assert_eq!(s.delete(4).unwrap(), None);
    s.flush().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.corrupt_entries, st.live_values), (0, 19));
    assert_eq!(s.get(4).unwrap(), None);
    assert_eq!(s.get(11).unwrap().as_deref(), Some(&b"eleven"[..]));
}

/// A word with a valid checksum that names no page, or an empty pointer with a checksum,
/// is corrupt too (it used to end iteration silently).
#[test]
fn a_tracker_word_that_does_not_decode_is_corruption() {
    let dir = scratch();
    drop(filled(dir.path()));
    let tracker = dir.path().join(TRACKER);
    write_ptr(&tracker, 6, 5); // page field 0: no page
    write_u64(&tracker, entry_at(8) + 8, 1); // pointer 0, checksum 1
    let s = Store::open(dir.path(), opts()).unwrap();
    assert_eq!(s.stats().unwrap().corrupt_entries, 2);
    assert!(matches!(s.get(6), Err(Error::CorruptedEntry { id: 6 })));
    assert!(matches!(s.get(8), Err(Error::CorruptedEntry { id: 8 })));
    let ok = s.iter().filter(Result::is_ok).count();
    let errors = s.iter().filter(Result::is_err).count();
    assert_eq!((ok, errors), (18, 2));
    assert_eq!(s.iter().last().unwrap().unwrap().0, 19);
}

/// A version 1 tracker (8-byte entries without checksums) is refused by name, unchanged.
#[test]
fn a_version_1_tracker_is_refused_with_a_clear_error() {
    let dir = scratch();
    drop(filled(dir.path()));
    let mut h = [0u8; 64];
    h[..8].copy_from_slice(b"VARVTRAK");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&8u32.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&h[..56]);
    h[56..].copy_from_slice(&sum.to_le_bytes());
    let f = OpenOptions::new()
        .write(true)
        .open(dir.path().join(TRACKER))
        .unwrap();
    f.write_all_at(&h, 0).unwrap();
    match Store::open(dir.path(), opts()) {
        Err(Error::BadFile { what, .. }) => assert!(what.contains("version 1"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_open_fails_unchanged(dir.path());
}
