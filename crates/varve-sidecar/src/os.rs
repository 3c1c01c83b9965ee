//! Every `unsafe` of the crate: opening and resizing the LMDB environment, and memory
//! advice on LMDB's map.
//!
//! LMDB (the `mdb.master` branch that heed 0.23 builds) maps the data file `MAP_SHARED`,
//! read-only (no `MDB_WRITEMAP`).

use std::ffi::c_void;
use std::path::Path;
use std::sync::RwLockWriteGuard;

use heed::{EnvFlags, EnvOpenOptions, WithoutTls};

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
    unsafe { opts.flags(EnvFlags::NO_SUB_DIR.union(EnvFlags::NO_READ_AHEAD)) };
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

/// `MADV_POPULATE_READ` on the pages of LMDB's map that hold `bytes`: maps them into this
/// process (reading what is not in the page cache), so later reads take no page faults.
pub(crate) fn populate_mapped(bytes: &[u8], page_size: usize) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let (start, end) = page_bounds(bytes, page_size);
    // SAFETY: MADV_POPULATE_READ only faults the file pages behind the range into this
    // process's page tables, read-only, as reading them would; it never changes memory
    // contents. The range is the whole pages holding `bytes`, inside LMDB's map.
    unsafe {
        rustix::mm::madvise(
            start as *mut c_void,
            end - start,
            rustix::mm::Advice::LinuxPopulateRead,
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
    use std::os::fd::AsRawFd as _;

    use super::*;

    /// Which pages of the mapping `base..base + len` are in the page cache.
    fn resident(base: *mut c_void, len: usize, page: usize) -> Vec<bool> {
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `base..base + len` is a live mapping made by the caller; `vec` has one
        // byte per page. mincore only reports page-cache state.
        let rc = unsafe { libc::mincore(base, len, vec.as_mut_ptr()) };
        assert_eq!(rc, 0);
        vec.iter().map(|b| b & 1 == 1).collect()
    }

    /// Advises `advise` on a slice of a cold, read-only, MADV_RANDOM file mapping (pages
    /// 8..40 of 64: from the middle of page 8 to the middle of page 39) and returns which
    /// pages of the mapping are resident after it, once pages 8..40 are or after a bounded
    /// wait (read-ahead advice is asynchronous; this is not a speed check).
    fn residency_after(advise: fn(&[u8], usize) -> std::io::Result<()>) -> Vec<bool> {
        let page = rustix::param::page_size();
        let len = 64 * page;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![5u8; len]).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: a fresh read-only shared mapping of the whole file, unmapped below; read
        // only through the slice made from it while it lives.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: as above; MADV_RANDOM is advice only.
        unsafe { libc::madvise(base, len, libc::MADV_RANDOM) };
        // SAFETY: plain syscall on an open descriptor (the file is synced, so clean).
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert!(resident(base, len, page).iter().all(|r| !r), "not cold");
        // SAFETY: the mapping is `len` readable bytes and nothing writes the file.
        let all = unsafe { std::slice::from_raw_parts(base.cast::<u8>(), len) };
        let slice = &all[8 * page + 100..39 * page + 7];
        advise(slice, page).unwrap();
        let mut got = resident(base, len, page);
        for _ in 0..1000 {
            if got[8..40].iter().all(|&r| r) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            got = resident(base, len, page);
        }
        // SAFETY: unmapping exactly the mapping made above; `all` and `slice` are not used
        // after this.
        unsafe { libc::munmap(base, len) };
        // An empty slice asks for nothing (and is not an error).
        advise(&[], page).unwrap();
        got
    }

    /// `will_need_mapped` starts reading the pages that hold the slice: all of them become
    /// resident without being touched (the map is MADV_RANDOM, so nothing else would read
    /// them).
    #[test]
    fn will_need_mapped_reads_the_pages_of_the_slice() {
        let got = residency_after(will_need_mapped);
        assert_eq!(got[8..40], [true; 32], "pages of the slice not read");
    }

    /// `populate_mapped` (used before copying a record out of the map, so the copy takes
    /// no page faults) reads every page that holds the slice, and only those: the
    /// mapping is MADV_RANDOM, so no read-around brings in the neighbours.
    #[test]
    fn populate_mapped_reads_exactly_the_pages_of_the_slice() {
        let got = residency_after(populate_mapped);
        assert_eq!(got[8..40], [true; 32], "pages of the slice not read");
        assert!(
            got[..8].iter().chain(&got[40..]).all(|&r| !r),
            "pages outside the slice read: {got:?}"
        );
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
