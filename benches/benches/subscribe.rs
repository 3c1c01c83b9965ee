//! Subscriptions (issue 18), each row against a baseline measured in the same run:
//!
//! - S1 live delivery: a subscriber follows durable 1 KiB appends; each event carries the
//!   instant its append started, so the subscriber's delivery latency (append start to
//!   delivery) is compared with the appends' own durable latency (append start to return),
//!   at a paced 10k events/s from one writer and at the most four writers reach.
//! - S2 catch-up: a new subscriber reads N stored events (24 B, checkpointed) from the
//!   start, against VarveDB 0.4.2's global `iter_from(0).collect_all()` and against
//!   Varve's own `read_all` (the same events, owned, no subscription).
//! - S3 cost of subscribers: 16 writers' durable appends/s with 8 subscribers tailing them,
//!   against the same writers with none, alternating; and the tail cache's hit rate.
//!
//! Contenders alternate within a row (three rounds each); a row reports the median.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use varve_benches::measure::Samples;
use varve_benches::report::{Better, Row, compare, median_range, record_rounds, reference};
use varve_benches::{scaled, scratch_dir};
use varve_engine::{Direction, EventData, ExpectedVersion, Filter, Options, SubscribeFrom, Varve};
use varvedb::GlobalSequence;

type Res<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const GROUP: &str = "engine: subscriptions";
const PEER: &str = "VarveDB 0.4.2";
const ROUNDS: usize = 3;

/// Records a row held to `target` (a ratio; see `Row::ratio`): each figure is the median
/// of the per-round values (rounds alternate the contenders), with their min-max.
fn targeted(
    workload: &str,
    target: f64,
    unit: &str,
    better: Better,
    varve: &[f64],
    baseline_name: &str,
    baseline: &[f64],
) {
    record_rounds(
        Row {
            group: GROUP.into(),
            workload: workload.into(),
            unit: unit.into(),
            better,
            baseline_name: baseline_name.into(),
            target: Some(target),
            ..Row::default()
        },
        varve,
        baseline,
    );
}

/// Nanoseconds since `epoch`, as the first 8 bytes of a 1 KiB payload.
fn stamped(epoch: Instant) -> Vec<u8> {
    let mut p = vec![0x5a; 1024];
    p[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
    p
}

/// S1: `writers` threads append single 1 KiB events for `budget`, each pacing itself to
/// `per_writer_rate` events/s (`None`: as fast as durability allows), while one subscriber
/// follows. Returns (append latencies, delivery latencies, events/s).
fn live(
    writers: usize,
    per_writer_rate: Option<f64>,
    budget: Duration,
) -> Res<(Samples, Samples, f64)> {
    let dir = scratch_dir()?;
    let db = Varve::open(dir.path(), Options::default())?;
    let epoch = Instant::now();
    let mut sub = db.subscribe_all(SubscribeFrom::End, Filter::all());
    let done = AtomicBool::new(false);
    let appended = AtomicU64::new(0);
    let append_lat = Mutex::new(Samples::with_capacity(1 << 16));
    let (delivery, secs) = std::thread::scope(|s| -> Res<(Samples, f64)> {
        let reader = s.spawn(|| -> Res<Samples> {
            let mut lat = Samples::with_capacity(1 << 16);
            let mut got = 0u64;
            loop {
                match sub.next_timeout(Duration::from_millis(50))? {
                    Some(e) => {
                        let now = epoch.elapsed().as_nanos() as u64;
                        let varve_engine::EventPayload::Inline(p) = &e.payload else {
                            return Err("unexpected blob".into());
                        };
                        let start = u64::from_le_bytes(p[..8].try_into()?);
                        lat.push(Duration::from_nanos(now.saturating_sub(start)));
                        got += 1;
                    }
                    None if done.load(Ordering::SeqCst)
                        && got == appended.load(Ordering::SeqCst) =>
                    {
                        return Ok(lat);
                    }
                    None => {}
                }
            }
        });
        let t0 = Instant::now();
        let hs: Vec<_> = (0..writers)
            .map(|w| {
                let (db, append_lat, appended) = (&db, &append_lat, &appended);
                s.spawn(move || -> Res {
                    let stream = format!("live-{w}");
                    let mut lat = Samples::with_capacity(1 << 14);
                    let mut n = 0u64;
                    while t0.elapsed() < budget {
                        if let Some(rate) = per_writer_rate {
                            let due = Duration::from_secs_f64(n as f64 / rate);
                            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                        let p = stamped(epoch);
                        let a = Instant::now();
                        db.append(&stream, ExpectedVersion::Any, &[EventData::new("t", &p)])?;
                        lat.push(a.elapsed());
                        n += 1;
                        appended.fetch_add(1, Ordering::SeqCst);
                    }
                    append_lat.lock().map_err(|_| "poisoned")?.extend(lat);
                    Ok(())
                })
            })
            .collect();
        for h in hs {
            h.join().map_err(|_| "writer panicked")??;
        }
        let secs = t0.elapsed().as_secs_f64();
        done.store(true, Ordering::SeqCst);
        let lat = reader.join().map_err(|_| "reader panicked")??;
        Ok((lat, secs))
    })?;
    let append = append_lat.into_inner().map_err(|_| "poisoned")?;
    if delivery.len() != append.len() {
        return Err(format!("{} delivered of {} appended", delivery.len(), append.len()).into());
    }
    let rate = append.len() as f64 / secs;
    Ok((append, delivery, rate))
}

fn s1(budget: Duration) -> Res {
    for (label, writers, rate) in [
        ("10k events/s (1 writer, paced)", 1, Some(10_000.0)),
        ("max durable rate (4 writers)", 4, None),
    ] {
        let (mut append, mut delivery, achieved) = live(writers, rate, budget)?;
        let w = format!("S1 live delivery of 1 KiB durable appends at {label}");
        for (p, name) in [(50.0, "p50"), (99.9, "p99.9")] {
            compare(
                GROUP,
                &format!("{w}: append start to delivery, {name}"),
                "us",
                Better::Lower,
                delivery.percentile_us(p),
                &format!("the append's own durable latency, {name}"),
                append.percentile_us(p),
            );
        }
        // Target: delivery p99 within 1.2x the append's (ratio append / delivery >= 1/1.2).
        targeted(
            &format!("{w}: append start to delivery, p99"),
            1.0 / 1.2,
            "us",
            Better::Lower,
            &[delivery.percentile_us(99.0)],
            "the append's own durable latency, p99",
            &[append.percentile_us(99.0)],
        );
        reference(
            GROUP,
            &format!("{w}: events/s achieved"),
            "events/s",
            Better::Higher,
            "varve",
            achieved,
        );
    }
    Ok(())
}

fn s2(n: u64) -> Res {
    let (d1, d2) = (scratch_dir()?, scratch_dir()?);
    let db = Varve::open(d1.path(), Options::default())?;
    let names: Vec<String> = (0..16).map(|s| format!("fill-{s}")).collect();
    let payload = [7u8; 24];
    let batch: Vec<EventData<'_>> = (0..1000).map(|_| EventData::new("t", &payload)).collect();
    let mut first = 0;
    while first < n {
        db.append(
            &names[(first / 1000) as usize % 16],
            ExpectedVersion::Any,
            &batch,
        )?;
        first += 1000;
    }
    db.checkpoint()?;
    let n = first;
    let mut peer = varvedb::Varve::with_config(
        d2.path(),
        varvedb::VarveConfig {
            max_dbs: 64,
            map_size: 64 << 30,
        },
    )?;
    {
        let mut s = peer.stream::<Vec<u8>, 2048>("fill")?;
        let payloads: Vec<Vec<u8>> = (0..1000).map(|_| payload.to_vec()).collect();
        for k in 0..n / 1000 {
            s.append_batch_alloc(varvedb::StreamId(k % 16), &payloads)?;
        }
    }
    let reader = peer.global_reader();
    let limit = usize::try_from(n)?;
    let check = |got: u64| -> Res {
        if got == n {
            Ok(())
        } else {
            Err(format!("read {got} of {n}").into())
        }
    };
    let (mut sub_rates, mut peer_rates, mut read_all_rates) = (vec![], vec![], vec![]);
    let mut borrowed_rates = vec![];
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut sub = db
            .subscribe_all(SubscribeFrom::Start, Filter::all())
            .with_batch(1024);
        let mut got = 0u64;
        while got < n {
            got += std::hint::black_box(sub.next_batch(1024)?).len() as u64;
        }
        check(got)?;
        sub_rates.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut sub = db
            .subscribe_all(SubscribeFrom::Start, Filter::all())
            .with_batch(1024);
        let (mut got, mut sum) = (0u64, 0u64);
        while got < n {
            got += sub.next_batch_with(4096, |v| sum += v.payload.len())? as u64;
        }
        std::hint::black_box(sum);
        check(got)?;
        borrowed_rates.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let evs = reader.iter_from(GlobalSequence(0))?.collect_all()?;
        check(std::hint::black_box(evs).len() as u64)?;
        peer_rates.push(n as f64 / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let evs = db.read_all(0, Direction::Forward, limit)?;
        check(std::hint::black_box(evs).len() as u64)?;
        read_all_rates.push(n as f64 / t.elapsed().as_secs_f64());
    }
    let w = format!("S2 catch-up of {n} stored 24 B events by a new subscriber");
    targeted(
        &w,
        2.0,
        "events/s",
        Better::Higher,
        &sub_rates,
        &format!("{PEER} global iter_from(0).collect_all"),
        &peer_rates,
    );
    targeted(
        &format!("{w}, borrowed views (next_batch_with)"),
        2.0,
        "events/s",
        Better::Higher,
        &borrowed_rates,
        &format!("{PEER} global iter_from(0).collect_all"),
        &peer_rates,
    );
    let (Some((sub, _)), Some((plain, _))) =
        (median_range(&sub_rates), median_range(&read_all_rates))
    else {
        return Ok(());
    };
    compare(
        GROUP,
        &format!("{w}: subscription vs a plain read"),
        "events/s",
        Better::Higher,
        sub,
        "Varve read_all (owned, one call)",
        plain,
    );
    Ok(())
}

/// 16 writers' durable appends for `budget`, with `subscribers` tailing; returns appends/s
/// and, with subscribers, the tail cache's hit rate.
fn tailed(subscribers: usize, budget: Duration) -> Res<(f64, Option<f64>)> {
    let dir = scratch_dir()?;
    let db = Varve::open(dir.path(), Options::default())?;
    let done = AtomicBool::new(false);
    let before = db.stats()?;
    let appended = std::thread::scope(|s| -> Res<u64> {
        let subs: Vec<_> = (0..subscribers)
            .map(|_| {
                let (db, done) = (&db, &done);
                s.spawn(move || -> Res<u64> {
                    let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
                    let mut got = 0;
                    while !done.load(Ordering::SeqCst) {
                        if sub.next_timeout(Duration::from_millis(20))?.is_some() {
                            got += 1;
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        let t0 = Instant::now();
        let writers: Vec<_> = (0..16)
            .map(|w| {
                let db = &db;
                s.spawn(move || -> Res<u64> {
                    let stream = format!("w-{w}");
                    let p = [w as u8; 256];
                    let mut n = 0;
                    while t0.elapsed() < budget {
                        db.append(&stream, ExpectedVersion::Any, &[EventData::new("t", &p)])?;
                        n += 1;
                    }
                    Ok(n)
                })
            })
            .collect();
        let mut total = 0;
        for h in writers {
            total += h.join().map_err(|_| "writer panicked")??;
        }
        done.store(true, Ordering::SeqCst);
        for h in subs {
            h.join().map_err(|_| "subscriber panicked")??;
        }
        Ok(total)
    })?;
    let after = db.stats()?;
    let lookups = after.tail_cache_lookups - before.tail_cache_lookups;
    let hits = after.tail_cache_hits - before.tail_cache_hits;
    let hit_rate = (subscribers > 0 && lookups > 0).then(|| hits as f64 / lookups as f64);
    Ok((appended as f64 / budget.as_secs_f64(), hit_rate))
}

fn s3(budget: Duration) -> Res {
    let (mut with, mut without, mut hit) = (vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (r, h) = tailed(8, budget)?;
        with.push(r);
        hit.extend(h);
        without.push(tailed(0, budget)?.0);
    }
    targeted(
        "S3 16 writers (256 B durable appends) with 8 subscribers tailing",
        0.9,
        "events/s",
        Better::Higher,
        &with,
        "the same writers with no subscriber",
        &without,
    );
    if let Some((h, _)) = median_range(&hit) {
        reference(
            GROUP,
            "S3 tail cache hit rate of the 8 subscribers (page lookups served from the arena)",
            "%",
            Better::Higher,
            "varve",
            100.0 * h,
        );
    }
    Ok(())
}

/// Whether row group `w` runs: all unless `VARVE_SUBSCRIBE_BENCH` lists some (`s1,s3`).
fn selected(w: &str) -> bool {
    varve_benches::selected("VARVE_SUBSCRIBE_BENCH", w)
}

fn main() -> Res {
    let budget = Duration::from_millis(scaled(1_500, 6_000));
    if selected("s1") {
        s1(budget)?;
    }
    if selected("s2") {
        s2(scaled(100_000, 1_000_000))?;
    }
    if selected("s3") {
        s3(budget)?;
    }
    Ok(())
}
