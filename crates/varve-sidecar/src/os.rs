//! Every `unsafe` of the crate: opening and resizing the LMDB map, locating a value's file
//! offset from its overflow-page header, and memory advice on LMDB's map.
//!
//! LMDB (the `mdb.master` branch that heed 0.23 builds) maps the data file `MAP_SHARED`,
//! read-only (no `MDB_WRITEMAP`), from file offset 0. A value larger than about half a page
//! lives on an "overflow run": consecutive pages whose first page starts with a 16-byte
//! header (`MDB_page`: `pgno_t mp_pgno` (8, host order), `mp_pad` (2), `mp_flags` (2, with
//! `P_OVERFLOW` = 0x04), `mp_pages` (4, the run's page count)), and the value starts right
//! after it. The page number in that header gives the value's file offset without knowing
//! where the map lies in memory (`EnvInfo::map_addr` is only set with `MDB_FIXEDMAP`).

use std::ffi::c_void;
use std::path::Path;
use std::sync::RwLockWriteGuard;

use heed::{EnvFlags, EnvOpenOptions, WithoutTls};

/// Size of LMDB's page header (`PAGEHDRSZ`).
pub(crate) const LMDB_PAGE_HEADER: usize = 16;
/// `P_OVERFLOW` in `mp_flags`.
const P_OVERFLOW: u16 = 0x04;

/// Opens (creating if needed) the LMDB environment in the single file `path`
/// (`MDB_NOSUBDIR`; the lock file is `path` + `-lock`), with `MDB_NORDAHEAD` (LMDB then
/// applies `MADV_RANDOM` to its map: a page fault reads one page, never a read-around
/// window of neighbouring blob pages) and read transactions not tied to threads.
pub(crate) fn open_env(
    path: &Path,
    map_size: usize,
    max_dbs: u32,
) -> heed::Result<heed::Env<WithoutTls>> {
    let mut opts = EnvOpenOptions::new().read_txn_without_tls();
    opts.map_size(map_size).max_dbs(max_dbs);
    // SAFETY: NO_SUB_DIR and NO_READ_AHEAD change where the files live and how LMDB
    // advises its map; neither is one of the flags heed calls unsafe (NO_SYNC,
    // NO_META_SYNC, NO_LOCK, WRITE_MAP), so every transaction stays durable and locked.
    unsafe { opts.flags(EnvFlags::NO_SUB_DIR | EnvFlags::NO_READ_AHEAD) };
    // SAFETY: heed requires that the mapped file is not modified except through LMDB
    // while it is mapped. This crate only writes through LMDB transactions; its own file
    // descriptors on the data file are opened read-only. Modification by other programs is
    // excluded by contract (documented on `Sidecar::open`), and LMDB's lock file
    // coordinates other processes that use LMDB.
    unsafe { opts.open(path) }
}

/// Sets the map size of `env` to `new_size` (0: adopt the size another process set).
///
/// `_no_txn_open` is the write guard of the crate's transaction gate: every transaction
/// this process opens on `env` is created and dropped while holding a read guard of that
/// gate, so holding the write guard proves that none is open.
pub(crate) fn resize_env(
    env: &heed::Env<WithoutTls>,
    _no_txn_open: &RwLockWriteGuard<'_, ()>,
    new_size: usize,
) -> heed::Result<()> {
    // SAFETY: LMDB allows `mdb_env_set_mapsize` on an open environment when this process
    // has no active transaction; the gate's write guard (above) guarantees exactly that.
    unsafe { env.resize(new_size) }
}

/// Where an LMDB overflow run holding a value lies in the data file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OverflowRun {
    /// File offset of the run's first page (its LMDB page header); the value starts
    /// `LMDB_PAGE_HEADER` bytes later.
    pub(crate) start: u64,
    /// Length of the run in bytes (page count times page size).
    pub(crate) len: u64,
    /// The 16-byte page header as it is in the map, to check reads of the file against.
    pub(crate) page_header: [u8; LMDB_PAGE_HEADER],
}

/// Finds the overflow run of `value`, a slice LMDB returned from its map inside a live
/// read transaction. `None` when the bytes in front of `value` are not the header of an
/// overflow run that holds all of it (then the caller must not use file offsets).
pub(crate) fn locate_overflow_value(value: &[u8], page_size: usize) -> Option<OverflowRun> {
    let addr = value.as_ptr() as usize;
    if value.is_empty() || !page_size.is_power_of_two() || addr % page_size != LMDB_PAGE_HEADER {
        return None;
    }
    let header_ptr = (addr - LMDB_PAGE_HEADER) as *const [u8; LMDB_PAGE_HEADER];
    // SAFETY: `value[0]` is readable memory of LMDB's map and lies LMDB_PAGE_HEADER bytes
    // after a page boundary (checked above), so the 16 bytes in front of it are in the same
    // page, which is mapped (mappings are page-granular) and backed by the file (the page
    // holds `value[0]`, inside the file). The read transaction that produced `value` keeps
    // LMDB from reusing or rewriting pages of its snapshot, and the map is read-only, so
    // nothing writes these bytes while we copy them. The pointer is aligned for a byte array.
    let page_header: [u8; LMDB_PAGE_HEADER] = unsafe { std::ptr::read(header_ptr) };
    let pgno = u64::from_ne_bytes(page_header[0..8].try_into().ok()?);
    let flags = u16::from_ne_bytes(page_header[10..12].try_into().ok()?);
    let pages = u32::from_ne_bytes(page_header[12..16].try_into().ok()?);
    if flags & P_OVERFLOW == 0 || pgno < 2 {
        return None;
    }
    let len = u64::from(pages).checked_mul(page_size as u64)?;
    if len < (LMDB_PAGE_HEADER + value.len()) as u64 {
        return None;
    }
    Some(OverflowRun {
        start: pgno.checked_mul(page_size as u64)?,
        len,
        page_header,
    })
}

/// Page-aligned bounds of the memory holding `bytes`.
fn page_bounds(bytes: &[u8], page_size: usize) -> (usize, usize) {
    let start = bytes.as_ptr() as usize & !(page_size - 1);
    let end = (bytes.as_ptr() as usize + bytes.len()).next_multiple_of(page_size);
    (start, end)
}

/// `MADV_DONTNEED` on the pages of LMDB's map that hold `bytes`: they leave this process's
/// RSS (the page cache keeps them until `POSIX_FADV_DONTNEED` or reclaim).
pub(crate) fn drop_mapped(bytes: &[u8], page_size: usize) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (start, end) = page_bounds(bytes, page_size);
    // SAFETY: the range is the whole pages holding `bytes`, all inside LMDB's map, which is
    // a MAP_SHARED, read-only file mapping. MADV_DONTNEED on such a mapping only discards
    // this process's page-table entries: the next access faults the same file bytes back
    // in, so every live reference into the map (heed's slices, other threads' reads) keeps
    // seeing identical bytes. No private or anonymous memory is discarded.
    unsafe {
        rustix::mm::madvise(
            start as *mut c_void,
            end - start,
            rustix::mm::Advice::LinuxDontNeed,
        )
    }?;
    Ok(())
}

/// `MADV_WILLNEED` on the pages of LMDB's map that hold `bytes` (asynchronous read-ahead).
pub(crate) fn will_need_mapped(bytes: &[u8], page_size: usize) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (start, end) = page_bounds(bytes, page_size);
    // SAFETY: MADV_WILLNEED is pure advice (it starts read-ahead of the file pages behind
    // the range) and never changes memory contents; the range lies inside LMDB's map.
    unsafe {
        rustix::mm::madvise(
            start as *mut c_void,
            end - start,
            rustix::mm::Advice::WillNeed,
        )
    }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_values_not_after_a_page_header() {
        let page = 4096;
        let buf = vec![0u8; 3 * page];
        let base = buf.as_ptr() as usize;
        let p = base.next_multiple_of(page) - base;
        // 16 bytes after a page boundary but the header is all zeroes: no P_OVERFLOW.
        let at = p + LMDB_PAGE_HEADER;
        assert!(locate_overflow_value(&buf[at..at + 10], page).is_none());
        // Not 16 bytes after a page boundary.
        assert!(locate_overflow_value(&buf[at + 1..at + 11], page).is_none());
        assert!(locate_overflow_value(&[], page).is_none());
    }

    #[test]
    fn reads_a_fabricated_overflow_header() {
        let page = 4096;
        let mut buf = vec![0u8; 4 * page];
        let base = buf.as_ptr() as usize;
        let p = base.next_multiple_of(page) - base;
        buf[p..p + 8].copy_from_slice(&7u64.to_ne_bytes());
        buf[p + 10..p + 12].copy_from_slice(&P_OVERFLOW.to_ne_bytes());
        buf[p + 12..p + 16].copy_from_slice(&2u32.to_ne_bytes());
        let v = &buf[p + 16..p + 16 + 5000];
        let run = locate_overflow_value(v, page).unwrap();
        assert_eq!(run.start, 7 * 4096);
        assert_eq!(run.len, 2 * 4096);
        assert_eq!(&run.page_header[..8], &7u64.to_ne_bytes());
        // A run too short for the value is refused.
        let v = &buf[p + 16..p + 16 + 8200];
        assert!(locate_overflow_value(v, page).is_none());
        // Meta pages (0 and 1) are never overflow runs.
        buf[p..p + 8].copy_from_slice(&1u64.to_ne_bytes());
        assert!(locate_overflow_value(&buf[p + 16..p + 100], page).is_none());
    }

    #[test]
    fn page_bounds_cover_the_slice() {
        let buf = vec![0u8; 3 * 4096];
        let (s, e) = page_bounds(&buf[10..5000], 4096);
        let a = buf.as_ptr() as usize + 10;
        assert!(s <= a && e >= a + 4990);
        assert_eq!(s % 4096, 0);
        assert_eq!(e % 4096, 0);
        assert!(e - s <= 3 * 4096);
    }
}
