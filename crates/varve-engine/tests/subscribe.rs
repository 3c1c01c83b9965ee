//! Subscriptions: catch-up then live, order, filters, start points, wake-ups, close.
//! `VARVE_SUBSCRIBE_EVENTS` scales the catch-up test (default 100k events written before,
//! 100k during).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use varve_engine::{Error, EventData, ExpectedVersion, Filter, SubscribeFrom};

/// Long enough that only a lost wake-up (a subscriber asleep while an event it waits for
/// is visible) reaches it, even on a loaded machine.
const LIVENESS: Duration = Duration::from_secs(10);

#[test]
fn catch_up_then_live_delivers_every_position_once_in_order() {
    bounded(catch_up_then_live_delivers_every_position_once_in_order_body);
}

fn catch_up_then_live_delivers_every_position_once_in_order_body() {
    let dir = tempdir();
    let db = open(dir.path());
    // `VARVE_SUBSCRIBE_EVENTS` scales it (default 100k before and 100k during).
    let half: u64 = std::env::var("VARVE_SUBSCRIBE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let before = half / 100 * 100;
    let writers = 8u64;
    let per_writer = half / writers;
    let total = before + writers * per_writer;
    let batch: Vec<EventData<'_>> = (0..100).map(|_| ev(b"old")).collect();
    for _ in 0..before / 100 {
        db.append("old", ExpectedVersion::Any, &batch).unwrap();
    }

    let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
    let last_ack = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let (received_at, lag_us) = std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut next = 0u64;
            while next < total {
                let got = sub
                    .next_timeout(LIVENESS)
                    .unwrap()
                    .unwrap_or_else(|| panic!("no event for {LIVENESS:?} at position {next}"));
                assert_eq!(got.position, next, "out of order or a gap");
                next += 1;
            }
            let at = t0.elapsed().as_micros() as u64;
            assert!(sub.try_next().unwrap().is_none(), "an event past the end");
            (at, sub.position())
        });
        for w in 0..writers {
            let db = db.clone();
            let last_ack = Arc::clone(&last_ack);
            s.spawn(move || {
                let payload = w.to_le_bytes();
                let stream = format!("w-{w}");
                let mut done = 0u64;
                let mut k = 0u64;
                while done < per_writer {
                    let n = (1 + k % 8).min(per_writer - done);
                    let events: Vec<_> = (0..n).map(|_| ev(&payload)).collect();
                    db.append(&stream, ExpectedVersion::Any, &events).unwrap();
                    last_ack.fetch_max(t0.elapsed().as_micros() as u64, Ordering::SeqCst);
                    done += n;
                    k += 1;
                }
            });
        }
        let (at, position) = reader.join().unwrap();
        assert_eq!(position, total);
        (at, at.saturating_sub(last_ack.load(Ordering::SeqCst)))
    });
    assert!(
        lag_us < 1_000_000,
        "the last event arrived {lag_us} us after its ack"
    );
    eprintln!(
        "subscriber: {total} events in {:.2} s; the last arrived {lag_us} us after the last \
         append was acknowledged",
        received_at as f64 / 1e6
    );
}

#[test]
fn a_stream_subscription_delivers_only_its_stream_in_version_order() {
    bounded(a_stream_subscription_delivers_only_its_stream_in_version_order_body);
}

fn a_stream_subscription_delivers_only_its_stream_in_version_order_body() {
    let dir = tempdir();
    let db = open(dir.path());
    // Subscribed before the stream exists: it waits for it.
    let mut sub = db.subscribe_stream("a", 0);
    assert!(sub.try_next().unwrap().is_none());
    for i in 0..10u8 {
        append_one(&db, "a", &[i]);
        append_one(&db, "b", &[100 + i]);
    }
    // A multi-stream append: only its part for "a" comes.
    db.append_multi(&[
        ("b", ExpectedVersion::Any, &[ev(b"mb")]),
        ("a", ExpectedVersion::Exact(9), &[ev(b"m1"), ev(b"m2")]),
    ])
    .unwrap();
    let mut got = Vec::new();
    while let Some(e) = sub.try_next().unwrap() {
        assert_eq!(&*e.stream, "a");
        got.push((e.version, e.payload.clone()));
    }
    assert_eq!(got.len(), 12);
    for (i, (v, _)) in got.iter().enumerate() {
        assert_eq!(*v, i as u64);
    }
    assert_eq!(sub.position(), 12);

    // From a later version.
    let mut later = db.subscribe_stream("a", 7);
    let first = later.next_timeout(LIVENESS).unwrap().unwrap();
    assert_eq!(first.version, 7);
    assert_eq!(later.next_batch(100).unwrap().len(), 4);
    assert!(later.try_next().unwrap().is_none());

    // Live: a new event of "b" does not wake "a" into a delivery; one of "a" does.
    append_one(&db, "b", b"x");
    assert!(sub.try_next().unwrap().is_none());
    append_one(&db, "a", b"live");
    let e = sub.next_timeout(LIVENESS).unwrap().unwrap();
    assert_eq!((e.version, &*e.stream), (12, "a"));
}

#[test]
fn filters_pass_only_matching_events_and_position_moves_past_the_others() {
    bounded(filters_pass_only_matching_events_and_position_moves_past_the_others_body);
}

fn filters_pass_only_matching_events_and_position_moves_past_the_others_body() {
    let dir = tempdir();
    let db = open(dir.path());
    let order = EventData::new("order.created", b"o");
    let user = EventData::new("user.renamed", b"u");
    for i in 0..20u32 {
        let stream = if i % 2 == 0 { "order-1" } else { "user-1" };
        let event = if i % 3 == 0 { order } else { user };
        db.append(stream, ExpectedVersion::Any, &[event]).unwrap();
    }
    // A filter that passes nothing among the last events still moves the position.
    let mut by_type = db
        .subscribe_all(
            SubscribeFrom::Start,
            Filter::all().event_type_prefix("order."),
        )
        .with_batch(4);
    let mut seen = Vec::new();
    while let Some(e) = by_type.try_next().unwrap() {
        assert_eq!(e.event_type, "order.created");
        seen.push(e.position);
    }
    assert_eq!(seen, vec![0, 3, 6, 9, 12, 15, 18]);
    assert_eq!(
        by_type.position(),
        20,
        "past the filtered-out events at the end"
    );

    let mut by_stream =
        db.subscribe_all(SubscribeFrom::Start, Filter::all().stream_prefix("user-"));
    let mut n = 0;
    while let Some(e) = by_stream.try_next().unwrap() {
        assert_eq!(&*e.stream, "user-1");
        assert_eq!(e.position % 2, 1);
        n += 1;
    }
    assert_eq!(n, 10);

    // Both prefixes and a predicate must all hold.
    let mut both = db.subscribe_all(
        SubscribeFrom::Start,
        Filter::all()
            .stream_prefix("order-")
            .event_type_prefix("order.")
            .predicate(|e| e.position > 5),
    );
    let mut got = Vec::new();
    while let Some(e) = both.try_next().unwrap() {
        got.push(e.position);
    }
    assert_eq!(got, vec![6, 12, 18]);
    assert!(Filter::all().matches(&db.get(0).unwrap().unwrap().as_view()));
}

#[test]
fn end_and_after_start_where_they_say() {
    bounded(end_and_after_start_where_they_say_body);
}

fn end_and_after_start_where_they_say_body() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..5u8 {
        append_one(&db, "s", &[i]);
    }
    let mut end = db.subscribe_all(SubscribeFrom::End, Filter::all());
    assert_eq!(end.position(), 5);
    assert!(end.try_next().unwrap().is_none());
    let mut after = db.subscribe_all(SubscribeFrom::After(2), Filter::all());
    assert_eq!(after.next_timeout(LIVENESS).unwrap().unwrap().position, 3);
    assert_eq!(after.next_timeout(LIVENESS).unwrap().unwrap().position, 4);
    let p = append_one(&db, "s", b"new");
    assert_eq!(end.next_timeout(LIVENESS).unwrap().unwrap().position, p);
    assert_eq!(after.next_timeout(LIVENESS).unwrap().unwrap().position, p);
    let mut past = db.subscribe_all(SubscribeFrom::After(u64::MAX), Filter::all());
    assert!(past.try_next().unwrap().is_none());
}

#[test]
fn a_blocked_subscriber_wakes_for_each_append() {
    bounded(a_blocked_subscriber_wakes_for_each_append_body);
}

fn a_blocked_subscriber_wakes_for_each_append_body() {
    let dir = tempdir();
    let db = open(dir.path());
    let sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
    // The subscriber blocks in `next()` (no deadline of its own); a lost wake-up leaves it
    // asleep for good, which the channel's timeout turns into a failure.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for e in sub {
            if tx.send(e.unwrap().position).is_err() {
                return;
            }
        }
    });
    for i in 0..50u8 {
        let p = append_one(&db, "s", &[i]);
        let got = rx
            .recv_timeout(LIVENESS)
            .unwrap_or_else(|_| panic!("the subscriber was not woken for position {p}"));
        assert_eq!(got, p);
    }
}

#[test]
fn next_batch_returns_up_to_max_of_what_is_visible() {
    bounded(next_batch_returns_up_to_max_of_what_is_visible_body);
}

fn next_batch_returns_up_to_max_of_what_is_visible_body() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..10u8 {
        append_one(&db, "s", &[i]);
    }
    let mut sub = db
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .with_batch(3);
    let b = sub.next_batch(4).unwrap();
    assert_eq!(
        b.iter().map(|e| e.position).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    assert_eq!(sub.position(), 4);
    let b = sub.next_batch(100).unwrap();
    assert_eq!(b.len(), 6, "stops at what is visible, across pulls");
    assert_eq!(b[5].position, 9);
    assert!(
        sub.next_timeout(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
}

#[test]
fn close_ends_a_subscription_after_the_events_it_had_not_read() {
    bounded(close_ends_a_subscription_after_the_events_it_had_not_read_body);
}

fn close_ends_a_subscription_after_the_events_it_had_not_read_body() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..3u8 {
        append_one(&db, "s", &[i]);
    }
    let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
    let mut waiting = db.subscribe_all(SubscribeFrom::End, Filter::all());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiting.next().map(|r| r.map(|e| e.position)));
    });
    std::thread::sleep(Duration::from_millis(20));
    db.clone().close().unwrap();
    let ended = rx
        .recv_timeout(LIVENESS)
        .expect("close did not wake the blocked subscriber");
    assert!(ended.is_none(), "iteration ends at close");
    for p in 0..3 {
        assert_eq!(sub.next().unwrap().unwrap().position, p);
    }
    assert!(sub.next().is_none());
    assert!(matches!(sub.try_next(), Err(Error::Closed)));
    assert!(matches!(sub.next_batch(1), Err(Error::Closed)));
}

#[test]
fn a_subscription_reads_across_a_reopen_from_a_saved_position() {
    bounded(a_subscription_reads_across_a_reopen_from_a_saved_position_body);
}

fn a_subscription_reads_across_a_reopen_from_a_saved_position_body() {
    let dir = tempdir();
    let saved = {
        let db = open(dir.path());
        for i in 0..30u8 {
            append_one(&db, if i % 2 == 0 { "x" } else { "y" }, &[i]);
        }
        let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
        for _ in 0..12 {
            sub.next().unwrap().unwrap();
        }
        let at = sub.position();
        drop(sub);
        db.close().unwrap();
        at
    };
    assert_eq!(saved, 12);
    let db = open(dir.path());
    let mut sub = db.subscribe_all(SubscribeFrom::After(saved - 1), Filter::all());
    let e = sub.next().unwrap().unwrap();
    assert_eq!((e.position, e.payload.len()), (12, 1));
    let view = e.as_view();
    assert_eq!((view.payload.len(), view.payload.is_empty()), (1, false));
    assert_eq!((view.position, view.stream, view.version), (12, "x", 6));
    assert_eq!(all(&db)[12], e);
}

#[test]
fn next_batch_with_visits_borrowed_views_in_order_buffered_first_and_waits_for_one() {
    bounded(next_batch_with_visits_borrowed_views_in_order_buffered_first_and_waits_for_one_body);
}

fn next_batch_with_visits_borrowed_views_in_order_buffered_first_and_waits_for_one_body() {
    let dir = tempdir();
    let db = open(dir.path());
    for i in 0..10u8 {
        append_one(&db, if i % 2 == 0 { "even" } else { "odd" }, &[i]);
    }
    db.checkpoint().unwrap(); // the first events from events.mdb, later ones from the tail
    for i in 10..20u8 {
        append_one(&db, if i % 2 == 0 { "even" } else { "odd" }, &[i]);
    }
    let mut sub = db
        .subscribe_all(SubscribeFrom::Start, Filter::all())
        .with_batch(4);
    // One owned read buffers a batch of 4; the borrowed reader visits those first.
    assert_eq!(sub.next().unwrap().unwrap().position, 0);
    let mut seen = Vec::new();
    let n = sub
        .next_batch_with(5, |v| {
            let varve_engine::PayloadRef::Inline(p) = v.payload else {
                panic!("inline payload expected");
            };
            seen.push((v.position, v.version, v.stream.to_owned(), p[0]));
        })
        .unwrap();
    assert_eq!(n, 5);
    let positions: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(positions, [1, 2, 3, 4, 5]);
    assert_eq!(seen[0], (1, 0, "odd".to_owned(), 1));
    assert_eq!(seen[3], (4, 2, "even".to_owned(), 4));
    assert_eq!(sub.position(), 6);
    // The rest, across the checkpointed / tail boundary, stops at what is visible.
    let mut rest = Vec::new();
    let n = sub.next_batch_with(100, |v| rest.push(v.position)).unwrap();
    assert_eq!(n, 14);
    assert_eq!(rest, (6..20).collect::<Vec<_>>());
    // With nothing visible it waits for the next append, then returns it alone.
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            append_one(&db, "odd", &[20]);
        })
    };
    let started = Instant::now();
    let mut late = Vec::new();
    assert_eq!(
        sub.next_batch_with(0, |v| late.push(v.position)).unwrap(),
        1
    );
    assert!(started.elapsed() >= Duration::from_millis(20), "it waited");
    assert_eq!(late, [20]);
    writer.join().unwrap();

    // A stream subscription and a filter: only what they pass, in their order.
    let mut odd = db.subscribe_stream("odd", 3);
    let mut versions = Vec::new();
    assert_eq!(
        odd.next_batch_with(100, |v| versions.push(v.version))
            .unwrap(),
        8
    );
    assert_eq!(versions, (3..11).collect::<Vec<_>>());
    let mut filtered = db.subscribe_all(SubscribeFrom::Start, Filter::all().stream_prefix("even"));
    let mut evens = Vec::new();
    while evens.len() < 10 {
        filtered
            .next_batch_with(3, |v| evens.push(v.position))
            .unwrap();
    }
    assert_eq!(evens, (0..20).step_by(2).collect::<Vec<_>>());

    // After a close: what was not read yet, then Closed.
    let mut tail = db.subscribe_all(SubscribeFrom::After(18), Filter::all());
    db.clone().close().unwrap();
    let mut last = Vec::new();
    assert_eq!(
        tail.next_batch_with(10, |v| last.push(v.position)).unwrap(),
        2
    );
    assert_eq!(last, [19, 20]);
    assert!(matches!(
        tail.next_batch_with(10, |_| {}),
        Err(Error::Closed)
    ));
}
