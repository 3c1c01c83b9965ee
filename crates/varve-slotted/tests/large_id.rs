//! One large id costs about one leaf of memory and one block of the tracker file, not an
//! entry for every id below it (a test binary of its own, so the RSS it reads is its own).
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::MetadataExt as _;

use varve_slotted::{Error, Options, Store};

/// Resident set size of this process in bytes.
fn rss() -> u64 {
    varve_testkit::mem::rss().total
}

#[test]
fn a_large_id_is_cheap_in_memory_and_on_disk() {
    let dir = varve_testkit::dirs::in_memory();
    let opts = Options::default().min_page_size(64 * 1024);
    assert!(
        format!("{opts:?}").contains(&format!("max_id: {}", u32::MAX)),
        "the documented default"
    );
    let big = 4_000_000_000u64;
    let before = rss();
    let s = Store::create(dir.path(), opts.clone()).unwrap();
    s.put(7, b"small id").unwrap();
    assert!(!s.put(big, b"large id").unwrap());
    s.flush().unwrap();
    let tracker = std::fs::metadata(dir.path().join("tracker.vvt")).unwrap();
    assert!(
        tracker.len() > 16 * big,
        "the tracker is sparse: its size spans the id"
    );
    assert!(
        tracker.blocks() * 512 <= 64 * 1024,
        "{} bytes allocated to the tracker",
        tracker.blocks() * 512
    );
    let grown = rss().saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes");
    drop(s);
    // Opening reads only the tracker's data regions.
    let s = Store::open(dir.path(), opts.clone()).unwrap();
    assert_eq!(s.get(big).unwrap().as_deref(), Some(&b"large id"[..]));
    assert_eq!(s.get(big - 1).unwrap(), None);
    let all: Vec<u64> = s.iter().map(|r| r.unwrap().0).collect();
    assert_eq!(all, vec![7, big]);
    let grown = rss().saturating_sub(before);
    assert!(grown < 32 << 20, "RSS grew by {grown} bytes after reopen");
    assert_eq!(s.delete(big).unwrap(), Some(8));
    s.flush().unwrap();
    drop(s);
    let s = Store::open(dir.path(), opts).unwrap();
    assert_eq!(s.get(big).unwrap(), None);
    assert_eq!(s.stats().unwrap().live_values, 1);
    // Past the maximum: a typed error, nothing changes.
    assert!(matches!(
        s.put(u64::from(u32::MAX) + 1, b"x"),
        Err(Error::IdTooLarge { .. })
    ));
}

#[test]
fn max_id_is_capped_so_the_tracker_stays_addressable() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Store::create(dir.path(), Options::default().max_id(1 << 39)),
        Err(Error::InvalidOptions { .. })
    ));
    let s = Store::create(dir.path(), Options::default().max_id((1 << 39) - 1)).unwrap();
    s.put((1 << 39) - 1, b"last").unwrap();
    assert_eq!(s.get((1 << 39) - 1).unwrap().as_deref(), Some(&b"last"[..]));
}
