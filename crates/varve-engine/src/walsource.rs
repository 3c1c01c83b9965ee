//! The WAL's segments as `varve-arena` files: how the engine reads events that are durable
//! but not yet checkpointed, through the arena's cache manager (bounded memory, shared
//! pages, prefetch for sequential readers) instead of a copy of its own.
//!
//! A segment's arena id is its first LSN (never reused: LSNs only grow, so a recycled file
//! is a new id), and its length is the end of its durable records as the WAL lists them,
//! never the preallocated zeros or the stale records of a recycled file beyond it. A
//! segment the WAL truncated away reads as `NotFound`; the engine then finds the event in
//! `events.mdb`, where the checkpoint that allowed the truncation put it.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::sync::{Arc, Mutex, PoisonError};

use varve_arena::{FileId, PageSource};
use varve_wal::Wal;

/// A [`PageSource`] over the live segments of one WAL.
pub(crate) struct WalPages {
    wal: Arc<Wal>,
    /// Open segment files by id; entries of truncated segments are dropped as found.
    files: Mutex<HashMap<FileId, Arc<File>>>,
}

impl WalPages {
    pub(crate) fn new(wal: Arc<Wal>) -> Self {
        WalPages {
            wal,
            files: Mutex::new(HashMap::new()),
        }
    }

    /// The open file of segment `id` and the end of its durable records.
    fn segment(&self, id: FileId) -> io::Result<(Arc<File>, u64)> {
        let segments = self.wal.segments();
        let Some(info) = segments.iter().find(|s| s.first_lsn == id) else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("WAL segment {id} was truncated"),
            ));
        };
        let mut files = self.files.lock().unwrap_or_else(PoisonError::into_inner);
        let first_kept = segments.first().map_or(0, |s| s.first_lsn);
        files.retain(|k, _| *k >= first_kept);
        let file = match files.get(&id) {
            Some(f) => Arc::clone(f),
            None => {
                let f = Arc::new(File::open(&info.path)?);
                files.insert(id, Arc::clone(&f));
                f
            }
        };
        Ok((file, info.durable_end))
    }
}

impl PageSource for WalPages {
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (f, end) = self.segment(file)?;
        let n = usize::try_from(end.saturating_sub(offset))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut got = 0;
        while got < n {
            match f.read_at(&mut buf[got..n], offset + got as u64) {
                Ok(0) => break,
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }

    fn len(&self, file: FileId) -> io::Result<u64> {
        Ok(self.segment(file)?.1)
    }
}
