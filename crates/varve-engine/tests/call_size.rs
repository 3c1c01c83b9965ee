//! `Options::max_call_bytes` counts a call's bytes as documented: payloads, metadata,
//! types and framing, each byte once, the optional 16-byte event id included; a call one
//! byte over the limit is refused with `CallTooLarge` and writes nothing.
#![allow(clippy::unwrap_used)]

use varve_engine::{Error, EventData, ExpectedVersion, Options, Varve};

const LIMIT: usize = 4096;

fn open(dir: &std::path::Path) -> Varve {
    Varve::open(dir, Options::default().max_call_bytes(LIMIT)).unwrap()
}

/// Whether a one-event call with these parts is accepted (and then appended).
fn fits(db: &Varve, event_type: &str, metadata: &[u8], payload: &[u8], id: bool) -> bool {
    let mut ev = EventData::new(event_type, payload).with_metadata(metadata);
    if id {
        ev = ev.with_id([7; 16]);
    }
    match db.append("s", ExpectedVersion::Any, &[ev]) {
        Ok(_) => true,
        Err(Error::CallTooLarge { size, max }) => {
            assert_eq!(max, LIMIT);
            assert!(size > LIMIT, "refused at {size} bytes");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// The largest payload that fits with these other parts (the limit's boundary).
fn largest_payload(db: &Varve, event_type: &str, metadata: &[u8], id: bool) -> usize {
    let payload = vec![1u8; LIMIT];
    let (mut lo, mut hi) = (0, LIMIT); // fits(lo), !fits(hi)
    assert!(fits(db, event_type, metadata, &payload[..lo], id));
    assert!(!fits(db, event_type, metadata, &payload[..hi], id));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(db, event_type, metadata, &payload[..mid], id) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[test]
fn metadata_type_and_id_count_byte_for_byte_against_max_call_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path());
    let base = largest_payload(&db, "t", b"", false);
    assert!(base > LIMIT - 200, "framing is small: {base}");
    // Each byte of metadata or type takes the place of a byte of payload.
    assert_eq!(largest_payload(&db, "t", &[2u8; 100], false), base - 100);
    assert_eq!(largest_payload(&db, &"t".repeat(51), b"", false), base - 50);
    // The event id is 16 bytes.
    assert_eq!(largest_payload(&db, "t", b"", true), base - 16);
    let before = db.stats().unwrap().next_position;
    // Metadata alone over the limit: refused, nothing written.
    assert!(!fits(&db, "t", &[3u8; LIMIT + 1], b"", false));
    assert_eq!(db.stats().unwrap().next_position, before);
}
