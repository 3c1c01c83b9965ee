use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use varve_engine::*;
fn main() {
    let subscribers: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let dir = tempfile::tempdir_in("/work").unwrap();
    let db = Varve::open(dir.path(), Options::default()).unwrap();
    let done = AtomicBool::new(false);
    let budget = Duration::from_secs(4);
    let total = std::thread::scope(|s| {
        let subs: Vec<_> = (0..subscribers).map(|_| { let (db, done) = (&db, &done); s.spawn(move || {
            let mut sub = db.subscribe_all(SubscribeFrom::Start, Filter::all());
            let mut got = 0u64;
            while !done.load(Ordering::SeqCst) { if sub.next_timeout(Duration::from_millis(20)).unwrap().is_some() { got += 1; } }
            got })}).collect();
        let t0 = Instant::now();
        let ws: Vec<_> = (0..16).map(|w| { let db = &db; s.spawn(move || {
            let stream = format!("w-{w}"); let p = [w as u8; 256]; let mut n = 0u64;
            while t0.elapsed() < budget { db.append(&stream, ExpectedVersion::Any, &[EventData::new("t", &p)]).unwrap(); n += 1; }
            n })}).collect();
        let t: u64 = ws.into_iter().map(|h| h.join().unwrap()).sum();
        done.store(true, Ordering::SeqCst);
        let g: Vec<u64> = subs.into_iter().map(|h| h.join().unwrap()).collect();
        println!("subs got {g:?}");
        t
    });
    let st = db.stats().unwrap();
    println!("{} appends/s; syncs {} ", total as f64 / budget.as_secs_f64(), st.wal_syncs);
}
