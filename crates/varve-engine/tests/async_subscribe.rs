//! Subscriptions as an async stream (feature `async`), driven by a minimal executor.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use common::*;
use futures_core::Stream;
use varve_engine::{Filter, RecordedEvent, SubscribeFrom, SubscriptionStream};

/// Long enough that only a lost wake-up reaches it.
const LIVENESS: Duration = Duration::from_secs(10);

fn next(s: &mut SubscriptionStream) -> Option<varve_engine::Result<RecordedEvent>> {
    pollster::block_on(poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)))
}

#[test]
fn a_pending_stream_is_woken_for_each_append_and_ends_at_close() {
    bounded(a_pending_stream_is_woken_for_each_append_and_ends_at_close_body);
}

fn a_pending_stream_is_woken_for_each_append_and_ends_at_close_body() {
    let dir = tempdir();
    let db = open(dir.path());
    append_one(&db, "s", b"before");
    let mut stream = db
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .into_stream();
    // The consumer runs on its own thread; a lost wake-up leaves it pending for good, which
    // the channel's timeout turns into a failure.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        while let Some(e) = next(&mut stream) {
            if tx.send(Some(e.unwrap().position)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    assert_eq!(rx.recv_timeout(LIVENESS).unwrap(), Some(0));
    for i in 0..30u8 {
        let p = append_one(&db, "s", &[i]);
        let got = rx
            .recv_timeout(LIVENESS)
            .unwrap_or_else(|_| panic!("the stream was not woken for position {p}"));
        assert_eq!(got, Some(p));
        std::thread::sleep(Duration::from_millis(1));
    }
    db.close().unwrap();
    assert_eq!(
        rx.recv_timeout(LIVENESS)
            .expect("close did not wake the stream"),
        None,
        "the stream ends at close"
    );
}

#[test]
fn a_stream_filters_and_reports_its_position() {
    bounded(a_stream_filters_and_reports_its_position_body);
}

fn a_stream_filters_and_reports_its_position_body() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..6u8 {
        append_one(&db, if i % 2 == 0 { "keep" } else { "skip" }, &[i]);
    }
    let mut stream = db
        .subscribe_all(SubscribeFrom::Start, Filter::all().stream_prefix("keep"))
        .into_stream();
    for want in [0, 2, 4] {
        assert_eq!(next(&mut stream).unwrap().unwrap().position, want);
    }
    assert_eq!(
        stream.position(),
        6,
        "past the filtered-out event at the end"
    );
}
