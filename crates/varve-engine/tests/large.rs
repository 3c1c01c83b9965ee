//! Large payloads: a 256 MiB run of 4 MiB payloads streamed back with `read_payload_to`
//! keeps the process's RSS growth and `blobs.mdb`'s page-cache residency under 16 MiB,
//! both sampled every 10 ms from a thread of their own. `VARVE_ENGINE_LARGE_MIB` sets the
//! run's size (default 256).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use varve_engine::{Direction, EventPayload, ExpectedVersion};
use varve_testkit::mem::{Sampler, drop_page_cache, rss};

const PAYLOAD: usize = 4 << 20;
const BOUND: u64 = 16 << 20;

fn payload(n: u64) -> Vec<u8> {
    let mut b = vec![0u8; PAYLOAD];
    for (i, page) in b.chunks_exact_mut(4096).enumerate() {
        page[..8].copy_from_slice(&n.to_le_bytes());
        page[8..16].copy_from_slice(&(i as u64).to_le_bytes());
    }
    b
}

/// Compares the streamed bytes with the expected payload without holding a copy.
struct Check {
    n: u64,
    at: usize,
}

impl Write for Check {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for (k, b) in buf.iter().enumerate() {
            let off = self.at + k;
            let (page, within) = (off / 4096, off % 4096);
            let want = match within {
                0..8 => self.n.to_le_bytes()[within],
                8..16 => (page as u64).to_le_bytes()[within - 8],
                _ => 0,
            };
            assert_eq!(*b, want, "payload {} byte {off}", self.n);
        }
        self.at += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn streaming_a_run_of_large_payloads_keeps_rss_and_page_cache_bounded() {
    let mib: u64 = std::env::var("VARVE_ENGINE_LARGE_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let count = mib / 4;
    let dir = tempdir();
    let db = open(dir.path());
    for n in 0..count {
        db.append("big", ExpectedVersion::Any, &[ev(&payload(n))])
            .unwrap();
    }
    db.checkpoint().unwrap();
    let events = db
        .read_stream("big", Direction::Forward, 0, usize::MAX)
        .unwrap();
    assert_eq!(events.len() as u64, count);
    let blobs = dir.path().join("blobs").join("blobs.mdb");
    drop_page_cache(&blobs);
    let base_rss = rss().total;
    let sampler = Sampler::start(Duration::from_millis(10), vec![blobs.clone()]);
    for (n, e) in events.iter().enumerate() {
        assert!(matches!(e.payload, EventPayload::Blob { len, .. } if len == PAYLOAD as u64));
        let mut sink = Check { n: n as u64, at: 0 };
        assert_eq!(db.read_payload_to(e, &mut sink).unwrap(), PAYLOAD as u64);
        assert_eq!(sink.at, PAYLOAD);
    }
    let peaks = sampler.finish();
    let (pc, pr) = (peaks.cached, peaks.rss.total);
    eprintln!(
        "{mib} MiB read back: peak blobs.mdb residency {} KiB, RSS growth {} KiB",
        pc >> 10,
        pr.saturating_sub(base_rss) >> 10
    );
    assert!(pc < BOUND, "page-cache residency {pc} B");
    assert!(
        pr.saturating_sub(base_rss) < BOUND,
        "RSS growth {} B",
        pr - base_rss
    );
}
