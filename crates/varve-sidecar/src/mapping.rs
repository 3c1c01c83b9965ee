//! Where a value that LMDB returned lies in the data file, without touching its bytes.
//!
//! LMDB hands out values as pointers into its `MAP_SHARED` map of `blobs.mdb`, and does not
//! read an overflow value's pages to do so (`mdb_node_read` only computes the address). The
//! file offset of such a pointer is `mapping offset + (pointer - mapping start)` for the
//! mapping in `/proc/self/maps` that contains it and maps our file (same device and inode).
//! The mapping is cached and forgotten whenever the map is resized (LMDB remaps then). The
//! read path checks every derived offset against the LMDB page header found there.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

/// One mapping of our file: `[start, end)` in memory, starting at file offset `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    offset: u64,
}

/// Finds file offsets of pointers into LMDB's map of one file.
pub(crate) struct MapLocator {
    dev: u64,
    ino: u64,
    cached: Mutex<Option<Span>>,
}

impl MapLocator {
    /// A locator for mappings of the file at `path`.
    pub(crate) fn new(path: &Path) -> std::io::Result<MapLocator> {
        let meta = std::fs::metadata(path)?;
        Ok(MapLocator {
            dev: meta.dev(),
            ino: meta.ino(),
            cached: Mutex::new(None),
        })
    }

    /// Forgets the cached mapping (call when LMDB remaps: after a resize).
    pub(crate) fn invalidate(&self) {
        *self.cached.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// File offset of the byte at `addr`, which must lie in a mapping of our file; `None`
    /// if no such mapping is found.
    pub(crate) fn file_offset(&self, addr: usize) -> std::io::Result<Option<u64>> {
        let mut cached = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = *cached
            && (s.start..s.end).contains(&addr)
        {
            return Ok(Some(s.offset + (addr - s.start) as u64));
        }
        let maps = std::fs::read_to_string("/proc/self/maps")?;
        let found = maps
            .lines()
            .filter_map(parse_line)
            .find(|(s, dev, ino)| {
                *dev == self.dev && *ino == self.ino && (s.start..s.end).contains(&addr)
            })
            .map(|(s, _, _)| s);
        *cached = found;
        Ok(found.map(|s| s.offset + (addr - s.start) as u64))
    }
}

/// Parses `start-end perms offset major:minor inode [path]`.
fn parse_line(line: &str) -> Option<(Span, u64, u64)> {
    let mut f = line.split_ascii_whitespace();
    let (start, end) = f.next()?.split_once('-')?;
    let _perms = f.next()?;
    let offset = u64::from_str_radix(f.next()?, 16).ok()?;
    let (major, minor) = f.next()?.split_once(':')?;
    let ino: u64 = f.next()?.parse().ok()?;
    let dev = rustix::fs::makedev(
        u32::from_str_radix(major, 16).ok()?,
        u32::from_str_radix(minor, 16).ok()?,
    );
    let span = Span {
        start: usize::from_str_radix(start, 16).ok()?,
        end: usize::from_str_radix(end, 16).ok()?,
        offset,
    };
    Some((span, dev, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_maps_lines() {
        let (s, dev, ino) =
            parse_line("7f00a000-7f10a000 r--s 00002000 fd:01 1234567   /tmp/x/blobs.mdb").unwrap();
        assert_eq!(
            s,
            Span {
                start: 0x7f00_a000,
                end: 0x7f10_a000,
                offset: 0x2000
            }
        );
        assert_eq!(dev, rustix::fs::makedev(0xfd, 1));
        assert_eq!(ino, 1_234_567);
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("7f00a000-7f10a000 r--s zz fd:01 1").is_none());
    }

    #[test]
    fn finds_the_mapping_that_holds_an_address() {
        // Our file is not mapped: no offset.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 3 * 4096]).unwrap();
        let here = finds_the_mapping_that_holds_an_address as *const () as usize;
        assert_eq!(
            MapLocator::new(&path).unwrap().file_offset(here).unwrap(),
            None
        );
        // The test executable is mapped, and its code lies at some offset in the file.
        let exe = std::env::current_exe().unwrap();
        let loc = MapLocator::new(&exe).unwrap();
        let off = loc.file_offset(here).unwrap().unwrap();
        assert!(off < std::fs::metadata(&exe).unwrap().len());
        assert_eq!(loc.file_offset(here + 1).unwrap(), Some(off + 1));
        assert!(loc.cached.lock().unwrap().is_some());
        loc.invalidate();
        assert!(loc.cached.lock().unwrap().is_none());
        assert_eq!(loc.file_offset(here).unwrap(), Some(off));
        // Read-only data of the executable lies in another mapping of the same file (other
        // file offset): the cached span of the code must not answer for it.
        static DATA: [u8; 4] = *b"data";
        let data = DATA.as_ptr() as usize;
        let fresh = MapLocator::new(&exe).unwrap().file_offset(data).unwrap();
        assert!(fresh.is_some());
        assert_eq!(loc.file_offset(data).unwrap(), fresh);
        let image = std::fs::read(&exe).unwrap();
        let at = fresh.unwrap() as usize;
        assert_eq!(&image[at..at + 4], b"data");
    }
}
