//! An order service's event log: concurrent writers append to their own streams with
//! optimistic concurrency, one call spans two streams atomically, a large attachment goes
//! to the blob sidecar, and the store is reopened (crash-only recovery) and read back.
//!
//! `cargo run -p varve-engine --example orders [DIR]` (a temporary directory without DIR).

use std::path::PathBuf;

use varve_engine::{
    Direction, Error, EventData, ExpectedVersion, Options, PayloadRef, StreamAppend, Varve,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir: PathBuf = std::env::args_os()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), PathBuf::from);
    let db = Varve::open(&dir, Options::default())?;

    // Eight writers, 100 orders each; every append is durable when it returns, and
    // concurrent appends share the log's group commits.
    std::thread::scope(|s| -> Result<(), Box<dyn std::error::Error>> {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let db = &db;
                s.spawn(move || -> varve_engine::Result<()> {
                    for o in 0..100 {
                        let stream = format!("order-{w}-{o}");
                        let body = format!(r#"{{"writer":{w},"order":{o},"total":{}}}"#, o * 3);
                        db.append(
                            &stream,
                            ExpectedVersion::NoStream,
                            &[EventData::new("order.created", body.as_bytes())],
                        )?;
                    }
                    Ok(())
                })
            })
            .collect();
        for w in writers {
            w.join().map_err(|_| "writer panicked")??;
        }
        Ok(())
    })?;

    // Optimistic concurrency: a writer that expected the stream not to exist is refused.
    match db.append(
        "order-0-0",
        ExpectedVersion::NoStream,
        &[EventData::new("order.created", b"{}")],
    ) {
        Err(Error::WrongExpectedVersion { actual, .. }) => {
            println!("second create refused; the stream is at version {actual:?}");
        }
        other => return Err(format!("expected a refusal, got {other:?}").into()),
    }

    // One atomic call over two streams: both events are stored, or neither.
    let paid = [EventData::new("order.paid", b"{\"amount\":3}")];
    let credit = [EventData::new("ledger.credited", b"{\"amount\":3}")];
    let calls: [StreamAppend<'_>; 2] = [
        ("order-0-1", ExpectedVersion::Exact(0), &paid),
        ("ledger", ExpectedVersion::Any, &credit),
    ];
    let r = db.append_multi(&calls)?;
    println!(
        "paid at positions {}..={}",
        r.first_position, r.last_position
    );

    // A 4 MiB invoice scan: stored once in the sidecar, the event keeps a reference.
    let scan = vec![0x42u8; 4 << 20];
    db.append(
        "order-0-1",
        ExpectedVersion::Exact(1),
        &[EventData::new("order.invoice", &scan)],
    )?;
    db.close()?;

    // Reopen: the same recovery runs after a close and after a kill -9.
    let db = Varve::open(&dir, Options::default())?;
    let events = db.read_stream("order-0-1", Direction::Forward, 0, 10)?;
    for e in &events {
        println!(
            "{} v{} @{} {}",
            e.stream, e.version, e.position, e.event_type
        );
    }
    assert_eq!(db.read_payload(&events[2])?, scan);
    let mut blobs = 0;
    let n = db.scan_all(0, Direction::Forward, usize::MAX, |v| {
        if matches!(v.payload, PayloadRef::Blob { .. }) {
            blobs += 1;
        }
    })?;
    println!("{n} events in the log, {blobs} of them with a sidecar payload");
    println!("{:?}", db.stats()?);
    Ok(())
}
