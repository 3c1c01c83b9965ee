//! Concurrency: 64 threads appending singles and batches at once; every LSN is unique and
//! gapless, batches are contiguous, and LSNs increase in file order.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use varve_wal::{Options, Wal};

/// Reads the raw segment files and returns the LSNs in file order (byte layout per
/// docs/format.md: 32-byte segment header, then 24-byte record headers + payloads).
fn lsns_in_file_order(dir: &Path) -> Vec<u64> {
    let mut segs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for seg in segs {
        let b = std::fs::read(seg).unwrap();
        let mut off = 32;
        while off + 24 <= b.len() {
            let len = u32::from_le_bytes(b[off..off + 4].try_into().unwrap()) as usize;
            let lsn = u64::from_le_bytes(b[off + 8..off + 16].try_into().unwrap());
            // Zeros, or the close marker (flag 0x04) a clean close left: the end.
            if lsn == 0 || b[off + 5] & 0x04 != 0 {
                break;
            }
            out.push(lsn);
            off += 24 + len;
        }
    }
    out
}

#[test]
fn sixty_four_threads_get_unique_gapless_lsns_in_file_order() {
    const THREADS: u32 = 64;
    const PER_THREAD: u32 = 40;
    let d = tempfile::tempdir().unwrap();
    let wal = Wal::open(
        d.path(),
        Options::default()
            .segment_size(256 << 10)
            .max_record_size(8 << 10),
    )
    .unwrap();
    // (lsn, thread, seq, records)
    let mut acked: Vec<(u64, u32, u32, u32)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..THREADS)
            .map(|t| {
                let wal = &wal;
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for seq in 0..PER_THREAD {
                        let mut p = [0u8; 100];
                        p[..4].copy_from_slice(&t.to_le_bytes());
                        p[4..8].copy_from_slice(&seq.to_le_bytes());
                        let n = 1 + (t + seq) % 3;
                        let recs: Vec<&[u8]> = (0..n).map(|_| &p[..]).collect();
                        let lsn = wal.append_batch(&recs).unwrap().wait().unwrap();
                        mine.push((lsn, t, seq, n));
                    }
                    mine
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    acked.sort_unstable();
    let total: u64 = acked.iter().map(|a| u64::from(a.3)).sum();
    // Unique and gapless: each batch starts right after the previous one ends.
    let mut next = 1;
    for &(lsn, ..) in &acked {
        assert_eq!(lsn, next, "LSN ranges overlap or leave a gap");
        next = lsn + u64::from(acked.iter().find(|a| a.0 == lsn).unwrap().3);
    }
    assert_eq!(next, total + 1);
    // Per thread, later appends got later LSNs.
    for t in 0..THREADS {
        let mine: Vec<_> = acked.iter().filter(|a| a.1 == t).collect();
        assert!(mine.windows(2).all(|w| w[0].2 < w[1].2));
    }
    // The log holds each batch's records at its LSNs.
    let recs: Vec<_> = wal.iter_from(1).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(recs.len() as u64, total);
    for &(lsn, t, seq, n) in &acked {
        for k in 0..u64::from(n) {
            let p = &recs[(lsn + k - 1) as usize].payload;
            assert_eq!(p[..4], t.to_le_bytes());
            assert_eq!(p[4..8], seq.to_le_bytes());
        }
    }
    drop(wal);
    let in_file = lsns_in_file_order(d.path());
    assert_eq!(in_file, (1..=total).collect::<Vec<_>>());
}
