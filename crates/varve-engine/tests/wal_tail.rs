//! The read contract between the WAL and the arena: a `PageSource` over the live WAL's
//! segments, bounded by the durable position the WAL publishes, lets the arena's
//! `TailReader` follow the log while 16 writers append and a checkpointer truncates
//! behind the reader (so segments are recycled): every record is seen once, in LSN order,
//! with its bytes intact, and no byte past what is durable, no zero of the preallocated
//! space and no stale record of a recycled file is ever served.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use varve_arena::{Arena, ArenaConfig, CacheConfig, CacheManager, FileId, PageSource};
use varve_wal::{Options, Wal};

/// The WAL's segments as arena files: a segment's id is its first LSN, its length the end
/// of its durable records (never the preallocated zeros after them).
struct WalSource {
    wal: Arc<Wal>,
    files: Mutex<HashMap<FileId, Arc<File>>>,
}

impl WalSource {
    fn segment(&self, id: FileId) -> io::Result<(Arc<File>, u64)> {
        let info = self
            .wal
            .segments()
            .into_iter()
            .find(|s| s.first_lsn == id)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment truncated"))?;
        let mut files = self.files.lock().unwrap();
        let file = match files.get(&id) {
            Some(f) => Arc::clone(f),
            None => {
                let f = Arc::new(File::open(&info.path)?);
                files.insert(id, Arc::clone(&f));
                f
            }
        };
        files.retain(|k, _| *k >= self.wal.first_lsn());
        Ok((file, info.durable_end))
    }
}

impl PageSource for WalSource {
    fn read_at(&self, file: FileId, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let (f, end) = self.segment(file)?;
        let n = usize::try_from(end.saturating_sub(offset))
            .unwrap()
            .min(buf.len());
        let mut got = 0;
        while got < n {
            let k = f.read_at(&mut buf[got..n], offset + got as u64)?;
            if k == 0 {
                break;
            }
            got += k;
        }
        Ok(got)
    }

    fn len(&self, file: FileId) -> io::Result<u64> {
        Ok(self.segment(file)?.1)
    }
}

fn payload(writer: u32, seq: u32) -> Vec<u8> {
    let mut p = vec![(writer as u8) ^ (seq as u8); 40 + (seq as usize * 7 + writer as usize) % 400];
    p[..4].copy_from_slice(&writer.to_le_bytes());
    p[4..8].copy_from_slice(&seq.to_le_bytes());
    p
}

#[test]
fn a_tail_reader_over_the_live_wal_sees_every_record_once_in_order() {
    let per_writer: u32 = std::env::var("VARVE_WAL_TAIL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let writers = 16u32;
    let total = u64::from(writers * per_writer);
    let dir = common::tempdir();
    let wal = Arc::new(
        Wal::open(
            dir.path(),
            Options::default()
                .segment_size(256 << 10)
                .max_record_size(4 << 10)
                .recycle_segments(2),
        )
        .unwrap(),
    );
    let header_len = wal.durable_position().end_offset;
    let source = Arc::new(WalSource {
        wal: Arc::clone(&wal),
        files: Mutex::new(HashMap::new()),
    });
    let arena = Arena::new(ArenaConfig::with_limits(1 << 20, 4 << 20).unwrap());
    let cache = CacheManager::new(source, arena, CacheConfig::default()).unwrap();
    let read_upto = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let mut recycled_segments = 0;
    std::thread::scope(|s| {
        for w in 0..writers {
            let wal = &wal;
            s.spawn(move || {
                for i in 0..per_writer {
                    wal.append(&payload(w, i)).unwrap().wait().unwrap();
                }
            });
        }
        // The checkpointer: truncates behind the reader, as the engine's would.
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                let upto = read_upto.load(Ordering::SeqCst);
                if upto > 0 {
                    wal.truncate_before(upto).unwrap();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        // The reader.
        let mut next_seq: HashMap<u32, u32> = HashMap::new();
        let mut segment = wal.segments()[0].first_lsn;
        let mut reader = cache.reader(segment, header_len);
        reader.expect_sequence(1);
        let mut inodes = HashSet::new();
        let mut expected = 1u64;
        let mut progress = std::time::Instant::now();
        while expected <= total {
            assert!(
                progress.elapsed() < Duration::from_secs(30),
                "the reader is stuck before LSN {expected}"
            );
            match reader.next_record().unwrap() {
                Some(rec) => {
                    let lsn = u64::from_le_bytes(rec.header()[8..16].try_into().unwrap());
                    assert_eq!(lsn, expected, "records arrive once, in LSN order");
                    assert!(lsn <= wal.durable_lsn(), "only durable records are served");
                    let p = rec.payload();
                    let w = u32::from_le_bytes(p[..4].try_into().unwrap());
                    let i = u32::from_le_bytes(p[4..8].try_into().unwrap());
                    assert_eq!(p, payload(w, i), "record {lsn} intact");
                    let n = next_seq.entry(w).or_default();
                    assert_eq!(i, *n, "writer {w}'s records in its order");
                    *n += 1;
                    expected += 1;
                    progress = std::time::Instant::now();
                    read_upto.store(segment, Ordering::SeqCst);
                }
                None => {
                    // Caught up with this segment: move on once a later one starts at
                    // the next LSN, else wait for more to become durable.
                    let segs = wal.segments();
                    if let Some(next) = segs.iter().find(|s| s.first_lsn == expected)
                        && next.first_lsn != segment
                    {
                        // A file whose inode an earlier segment had is a recycled one: its
                        // stale records lie past its durable end and must never be read.
                        if let Ok(m) = std::fs::metadata(&next.path)
                            && !inodes.insert(m.ino())
                        {
                            recycled_segments += 1;
                        }
                        segment = next.first_lsn;
                        reader = cache.reader(segment, header_len);
                        reader.expect_sequence(expected);
                    } else {
                        wal.wait_for(expected, Duration::from_millis(20)).unwrap();
                    }
                }
            }
        }
        done.store(true, Ordering::SeqCst);
    });
    assert_eq!(wal.durable_lsn(), total);
    assert!(
        recycled_segments > 0,
        "the reader went through recycled segments"
    );
}
