//! Record locations and gathered appends: the place a ticket reports for its record (and
//! the place `Iter::next_ref` reports) is where that record's header lies in that segment's
//! file, on the encode-ahead path and across segment rollovers; a record appended in parts
//! reads back as their concatenation.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::os::unix::fs::FileExt as _;

use varve_wal::{Error, Options, RecordLocation, SyncMode, Wal};

fn payload(writer: usize, i: usize) -> Vec<u8> {
    let mut p = vec![(writer * 31 + i) as u8; 24 + (i * 13 + writer) % 700];
    p[..8].copy_from_slice(&((writer as u64) << 32 | i as u64).to_le_bytes());
    p
}

/// Reads the record at `loc` straight from its segment file: (LSN, payload).
fn read_at(wal: &Wal, loc: RecordLocation) -> (u64, Vec<u8>) {
    let seg = wal
        .segments()
        .into_iter()
        .find(|s| s.first_lsn == loc.segment)
        .expect("the record's segment is in the log");
    let f = std::fs::File::open(&seg.path).unwrap();
    let mut h = [0u8; 24];
    f.read_exact_at(&mut h, loc.offset).unwrap();
    let len = u32::from_le_bytes(h[..4].try_into().unwrap()) as usize;
    let lsn = u64::from_le_bytes(h[8..16].try_into().unwrap());
    let mut p = vec![0u8; len];
    f.read_exact_at(&mut p, loc.offset + 24).unwrap();
    (lsn, p)
}

#[test]
fn a_ticket_s_location_is_where_its_record_was_written() {
    let dir = tempfile::tempdir().unwrap();
    // Small segments (several rollovers) and small groups with writers that pipeline
    // (the encode-ahead path of `SyncMode::Always`).
    let wal = Wal::open(
        dir.path(),
        Options::default()
            .segment_size(64 << 10)
            .group_bytes(4 << 10)
            .max_record_size(4 << 10)
            .sync_mode(SyncMode::Always),
    )
    .unwrap();
    let writers = 4;
    let per = 300;
    let locs: Vec<(Vec<u8>, RecordLocation)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let wal = &wal;
                s.spawn(move || {
                    let mut pending = Vec::new();
                    let mut out = Vec::new();
                    // Another thread's view of each ticket (`Placement`) reports the same
                    // place, and has it whenever the log says the record is durable.
                    let done = |p: Vec<u8>, t: varve_wal::Ticket, out: &mut Vec<_>| {
                        let placement = t.placement();
                        if let Some(lsn) = t.lsn()
                            && wal.durable_lsn() >= lsn
                        {
                            assert!(placement.location().is_some());
                        }
                        let loc = t.wait_location().unwrap();
                        assert_eq!(placement.location(), Some(loc));
                        out.push((p, loc));
                    };
                    for i in 0..per {
                        let p = payload(w, i);
                        pending.push((p.clone(), wal.append(&p).unwrap()));
                        if pending.len() == 8 {
                            for (p, t) in pending.drain(..) {
                                done(p, t, &mut out);
                            }
                        }
                    }
                    for (p, t) in pending {
                        done(p, t, &mut out);
                    }
                    out
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let segments: std::collections::HashSet<u64> = locs.iter().map(|(_, l)| l.segment).collect();
    assert!(segments.len() > 2, "the records span several segments");
    let mut by_lsn = HashMap::new();
    for (p, loc) in &locs {
        assert!(
            loc.segment <= loc.lsn,
            "a segment starts at or below its records"
        );
        let (lsn, got) = read_at(&wal, *loc);
        assert_eq!(
            lsn, loc.lsn,
            "the header at the location carries the record's LSN"
        );
        assert_eq!(&got, p, "record {} reads back at its location", loc.lsn);
        by_lsn.insert(loc.lsn, *loc);
    }
    // The iterator reports the same places.
    let mut it = wal.iter_from(1).unwrap();
    let mut seen = 0;
    while let Some(r) = it.next_ref() {
        let r = r.unwrap();
        let loc = by_lsn[&r.lsn];
        assert_eq!((r.segment, r.offset), (loc.segment, loc.offset));
        seen += 1;
    }
    assert_eq!(seen, writers * per);
}

#[test]
fn a_record_appended_in_parts_reads_back_as_their_concatenation() {
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path(), Options::default().max_record_size(1024)).unwrap();
    let t = wal
        .append_kind_parts(7, &[b"head", b"", b"-middle-", b"tail"])
        .unwrap();
    let loc = t.wait_location().unwrap();
    let t2 = wal.try_append_kind_parts(9, &[b"x"]).unwrap();
    assert_eq!(t2.wait().unwrap(), loc.lsn + 1);
    let (lsn, bytes) = read_at(&wal, loc);
    assert_eq!((lsn, bytes.as_slice()), (loc.lsn, &b"head-middle-tail"[..]));

    // Too large as a whole (each part alone fits): refused, nothing queued.
    let big = vec![1u8; 600];
    assert!(matches!(
        wal.append_kind_parts(7, &[&big, &big]),
        Err(Error::RecordTooLarge {
            size: 1200,
            max: 1024
        })
    ));
    assert!(matches!(
        wal.try_append_kind_parts(7, &[&big, &big]),
        Err(Error::RecordTooLarge {
            size: 1200,
            max: 1024
        })
    ));
    let after = wal.append(b"after").unwrap().wait().unwrap();
    assert_eq!(after, loc.lsn + 2, "the refused records took no LSN");

    let got: Vec<_> = wal.iter_from(1).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), 3);
    assert_eq!(
        (got[0].kind, got[0].payload.as_slice()),
        (7, &b"head-middle-tail"[..])
    );
    assert_eq!((got[1].kind, got[1].payload.as_slice()), (9, &b"x"[..]));
}
