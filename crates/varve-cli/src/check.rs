//! `varve check`: verifies what the engine's public API can reach and cross-references it.
//!
//! - Opening the store runs the engine's recovery, which verifies every WAL record still
//!   kept (structure, LSN sequence, xxh3 checksum) and that the log continues the
//!   checkpoint; damage there fails the open with the segment and offset.
//! - Every event is read (`scan_all`), which verifies each stored event's checksum;
//!   an unreadable event is located with `get` and the check goes on after it.
//! - Positions must be gapless from 0 to the end the store reports; versions contiguous
//!   per stream from 0. In a store where streams were deleted or truncated
//!   (`Stats::deleted_streams`), the removed events leave gaps and a stream's versions
//!   start at its first kept version; the check then runs a checkpoint first (so removed
//!   events' blobs are released) and does not count gaps as problems.
//! - Every stream is read again through its stream index (`scan_stream`) and must list the
//!   same positions in the same order; its head (`stream_version`) must be the version of
//!   its last event.
//! - Every distinct blob is read through the sidecar's cache-safe path into a sink, which
//!   verifies its SHA-256 (chunk digests); its length must be the one the events give.
//! - The sidecar's blob count and bytes must be those of the distinct blobs the events
//!   reference (no orphan blob, none missing).
//! - Every stream snapshot in the slotted store (`snapshots/`) is read whole
//!   ([`Varve::snapshots`]: slot entry and value checksums, decompression, header); a
//!   damaged one is named by its page file and the byte offset of its slot entry. Each
//!   must belong to a stream that exists and be of a version the stream has.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use varve_engine::{Direction, EventPayload, PayloadRef, RecordedEvent, Stats, Varve};

use crate::error::{CliError, Kind, describe};
use crate::show::bytes;
use crate::{progress, store};

/// Events read per engine call.
const BATCH: usize = 4096;

/// What `check` does not verify, printed by `--help` and with every report.
pub const NOT_VERIFIED: &[&str] = &[
    "check is not read-only: the engine has no read-only open, so check takes the store's \
     lock (stop other processes first) and runs crash recovery, which zeroes a torn WAL \
     tail and releases orphan blob references; it checkpoints only a store with deleted \
     or truncated streams (to apply the deletions and release their blobs)",
    "a torn WAL tail (an interrupted last write) is cut by recovery and shown as a note, \
     not a problem: it cannot be told apart from damage to the last synced group",
    "WAL segments the checkpointer already deleted are gone; their events are checked in \
     events.mdb",
    "LMDB's own pages (B-tree branches, free pages) carry no checksums; only the values \
     the engine stores (events, with their checksum) are verified",
    "blob reference counts (events.mdb blob_refs, the sidecar's refcounts) are not \
     compared with the references: the engine exposes neither",
];

/// A problem found: what is wrong and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub what: String,
    /// Where: a file and offset, a position, a stream or a blob.
    pub location: String,
}

impl Problem {
    fn new(what: impl Into<String>, location: impl Into<String>) -> Problem {
        Problem {
            what: what.into(),
            location: location.into(),
        }
    }
}

/// An event as the audit needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Global position.
    pub position: u64,
    /// Stream name.
    pub stream: Arc<str>,
    /// Version in the stream.
    pub version: u64,
    /// The blob (SHA-256, length) the payload lives in, if it is not inline.
    pub blob: Option<([u8; 32], u64)>,
}

/// What the audit knows of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamSeen {
    /// Events seen.
    pub count: u64,
    /// Version of the last event seen.
    pub last_version: u64,
    /// Order-sensitive digest of the positions seen, in version order.
    pub digest: u64,
}

/// A blob as the events reference it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobSeen {
    /// Length the first reference gives.
    pub len: u64,
    /// Position of the first event that references it.
    pub first_position: u64,
    /// Stream of that event.
    pub stream: Arc<str>,
}

/// Folds a position into a stream's position digest (FNV-1a style, order-sensitive).
pub fn digest_step(acc: u64, position: u64) -> u64 {
    (acc ^ position).wrapping_mul(0x0100_0000_01b3)
}

/// The cross-references over the events, in position order. Pure: fed events, it
/// collects problems; the store is asked only in [`Audit::finish`].
#[derive(Debug, Default)]
pub struct Audit {
    /// The next position expected.
    pub next_position: u64,
    /// Events seen.
    pub events: u64,
    /// Events that could not be read (their problems are already listed).
    pub unreadable: u64,
    /// Streams seen.
    pub streams: HashMap<Arc<str>, StreamSeen>,
    /// Blobs referenced.
    pub blobs: HashMap<[u8; 32], BlobSeen>,
    /// Problems found.
    pub problems: Vec<Problem>,
    /// The store has deleted or truncated streams: gaps in positions, and versions that
    /// start above 0, are expected.
    pub deletions: bool,
}

impl Audit {
    /// Takes in the next event read.
    pub fn observe(&mut self, e: &Seen) {
        if e.position != self.next_position && !(self.deletions && e.position > self.next_position)
        {
            self.problems.push(Problem::new(
                format!(
                    "positions {}..={} are missing: the read went from {} to {}",
                    self.next_position,
                    e.position.saturating_sub(1),
                    self.next_position,
                    e.position
                ),
                format!("position {}", self.next_position),
            ));
        }
        self.next_position = e.position + 1;
        self.events += 1;
        let unreadable = self.unreadable;
        let deletions = self.deletions;
        let s = self.streams.entry(Arc::clone(&e.stream)).or_default();
        if deletions && s.count == 0 {
            // The first event kept of a truncated or re-created stream.
            s.count = e.version;
        }
        match e.version.checked_sub(s.count) {
            // The next version (a jump of 0), or a jump no larger than the events that
            // could not be read, which explain it.
            Some(jump) if jump <= unreadable => {}
            _ => self.problems.push(Problem::new(
                format!(
                    "version {} follows {} events of the stream (versions must run 0, 1, 2, ...)",
                    e.version, s.count
                ),
                format!("position {} (stream {:?})", e.position, &*e.stream),
            )),
        }
        s.count = e.version + 1;
        s.last_version = e.version;
        s.digest = digest_step(s.digest, e.position);
        if let Some((hash, len)) = e.blob {
            let b = self.blobs.entry(hash).or_insert_with(|| BlobSeen {
                len,
                first_position: e.position,
                stream: Arc::clone(&e.stream),
            });
            if b.len != len {
                self.problems.push(Problem::new(
                    format!(
                        "blob {} has length {len} here but {} at position {}",
                        crate::show::hex(&hash),
                        b.len,
                        b.first_position
                    ),
                    format!("position {}", e.position),
                ));
            }
        }
    }

    /// Notes an event that could not be read (its problem goes in with it).
    pub fn unreadable(&mut self, position: u64, problem: Problem) {
        self.problems.push(problem);
        self.unreadable += 1;
        self.next_position = position + 1;
    }

    /// Compares what was read with what the store says: the end of the positions, the
    /// stream count, each stream's head (`head`) and its index (`index_digest`: the
    /// digest of the positions its stream index lists), the sidecar's blob count and
    /// bytes.
    pub fn finish(
        &mut self,
        stats: &Stats,
        mut head: impl FnMut(&str) -> Result<Option<u64>, Problem>,
        mut index_digest: impl FnMut(&str) -> Result<(u64, u64), Problem>,
    ) {
        // Removed events at the end leave the read short of the store's end.
        let short = self.deletions && self.next_position < stats.next_position;
        if self.next_position != stats.next_position && !short {
            self.problems.push(Problem::new(
                format!(
                    "the store reports {} events but reading stopped at position {}",
                    stats.next_position, self.next_position
                ),
                format!("position {}", self.next_position),
            ));
        }
        let streams = self.streams.len() as u64;
        let counted = if self.deletions {
            streams <= stats.streams
        } else {
            streams == stats.streams
        };
        if self.unreadable == 0 && !counted {
            self.problems.push(Problem::new(
                format!(
                    "the store reports {} streams but the events name {}",
                    stats.streams,
                    self.streams.len()
                ),
                "stream catalog (events.mdb streams)".to_owned(),
            ));
        }
        let mut names: Vec<&Arc<str>> = self.streams.keys().collect();
        names.sort();
        for name in names {
            let s = &self.streams[name];
            let at = format!("stream {:?}", &**name);
            let head = head(name);
            // A head past the last event read by no more than the unreadable events is
            // explained by them (the stream's last events could not be read).
            let explained = matches!(
                head,
                Ok(Some(h)) if h.checked_sub(s.last_version).is_some_and(|d| d <= self.unreadable)
            );
            match head {
                Err(p) => self.problems.push(p),
                _ if explained => {}
                Ok(h) => self.problems.push(Problem::new(
                    format!(
                        "head is version {} but its last event read has version {}",
                        h.map_or_else(|| "none".to_owned(), |v| v.to_string()),
                        s.last_version
                    ),
                    at.clone(),
                )),
            }
            if self.unreadable == 0 {
                match index_digest(name) {
                    Err(p) => self.problems.push(p),
                    Ok((n, d)) if (n, d) == (s.count, s.digest) => {}
                    Ok((n, _)) => self.problems.push(Problem::new(
                        format!(
                            "the stream index lists events up to version {n} (exclusive) that \
                             differ from those up to {} the log holds for the stream",
                            s.count
                        ),
                        at,
                    )),
                }
            }
        }
        let referenced_bytes: u64 = self.blobs.values().map(|b| b.len).sum();
        let referenced = self.blobs.len() as u64;
        if self.unreadable == 0
            && (stats.blobs != referenced || stats.blob_bytes != referenced_bytes)
        {
            let what = if stats.blobs > referenced {
                format!(
                    "{} blob(s) that no event references (orphans): the sidecar holds {} \
                     blobs of {} bytes, the events reference {referenced} of \
                     {referenced_bytes} bytes",
                    stats.blobs - referenced,
                    stats.blobs,
                    stats.blob_bytes
                )
            } else {
                format!(
                    "the sidecar holds {} blobs of {} bytes, the events reference \
                     {referenced} of {referenced_bytes} bytes",
                    stats.blobs, stats.blob_bytes
                )
            };
            self.problems.push(Problem::new(what, "blobs/blobs.mdb"));
        }
    }
}

/// A writer that counts and drops bytes.
struct Sink<'a> {
    written: u64,
    bar: &'a indicatif::ProgressBar,
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.written += buf.len() as u64;
        self.bar.inc(buf.len() as u64);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Streams seen.
    pub streams: u64,
    /// Distinct blobs read.
    pub blobs: u64,
    /// Their bytes.
    pub blob_bytes: u64,
    /// Stream snapshots read and verified.
    pub snapshots: u64,
    /// Their bytes (as given to `put_snapshot`).
    pub snapshot_bytes: u64,
    /// What the open's recovery did, worth knowing but not a problem.
    pub notes: Vec<String>,
    /// Problems.
    pub problems: Vec<Problem>,
}

fn problem_of(e: &varve_engine::Error, dir: &Path, context: Option<String>) -> Problem {
    let d = describe(e, dir);
    let location = match context {
        Some(c) if !d.location.is_empty() => format!("{c}, {}", d.location),
        Some(c) => c,
        None => d.location,
    };
    Problem::new(crate::error::chain(e), location)
}

fn seen(v: &varve_engine::EventView<'_>, names: &mut HashMap<String, Arc<str>>) -> Seen {
    let stream = match names.get(v.stream) {
        Some(s) => Arc::clone(s),
        None => {
            let s: Arc<str> = Arc::from(v.stream);
            names.insert(v.stream.to_owned(), Arc::clone(&s));
            s
        }
    };
    Seen {
        position: v.position,
        stream,
        version: v.version,
        blob: match v.payload {
            PayloadRef::Inline(_) => None,
            PayloadRef::Blob { hash, len } => Some((hash.0, len)),
        },
    }
}

/// Checks the open store `db` in `dir`.
pub fn check_open(db: &Varve, dir: &Path) -> Report {
    let mut report = Report::default();
    let r = db.recovery_report();
    if r.wal.dropped_bytes > 0 {
        report.notes.push(format!(
            "recovery cut {} bytes ({} complete records of an unfinished batch) from the WAL \
             tail: an interrupted last write, or damage to the last synced group",
            r.wal.dropped_bytes, r.wal.dropped_records
        ));
    }
    if !r.wal.closed_cleanly {
        report
            .notes
            .push("the store was not closed cleanly (a crash or a kill): recovery ran".into());
    }
    if r.orphan_blob_refs_released > 0 {
        report.notes.push(format!(
            "recovery released {} orphan blob references (blobs stored by appends that never \
             reached the log)",
            r.orphan_blob_refs_released
        ));
    }
    let mut stats = match db.stats() {
        Ok(s) => s,
        Err(e) => {
            report.problems.push(problem_of(&e, dir, None));
            return report;
        }
    };
    if stats.deleted_streams > 0 {
        // Apply the deletions, so the blobs only removed events referred to are released.
        let applied = db.checkpoint().and_then(|_| db.stats());
        match applied {
            Ok(s) => stats = s,
            Err(e) => {
                report.problems.push(problem_of(&e, dir, None));
                return report;
            }
        }
        report.notes.push(format!(
            "{} stream(s) were deleted or truncated: their removed events leave gaps in the \
             positions",
            stats.deleted_streams
        ));
    }
    let mut audit = Audit {
        deletions: stats.deleted_streams > 0,
        ..Audit::default()
    };
    let mut names = HashMap::new();
    let bar = progress::bar(stats.next_position, "checking events");
    let mut from = 0;
    while from < stats.next_position {
        let mut batch = Vec::with_capacity(BATCH);
        match db.scan_all(from, Direction::Forward, BATCH, |v| {
            batch.push(seen(v, &mut names));
        }) {
            Ok(n) => {
                for s in &batch {
                    audit.observe(s);
                }
                bar.inc(n as u64);
                if n < BATCH {
                    break;
                }
                from = audit.next_position;
            }
            Err(_) => {
                // Find the event(s) at fault one by one and go on after them.
                let end = (from + BATCH as u64).min(stats.next_position);
                for p in from..end {
                    match db.get(p) {
                        Ok(Some(e)) => audit.observe(&Seen {
                            position: e.position,
                            stream: e.stream,
                            version: e.version,
                            blob: match e.payload {
                                EventPayload::Inline(_) => None,
                                EventPayload::Blob { hash, len } => Some((hash.0, len)),
                            },
                        }),
                        Ok(None) => break,
                        Err(e) => {
                            audit.unreadable(p, problem_of(&e, dir, Some(format!("position {p}"))))
                        }
                    }
                    bar.inc(1);
                }
                from = end;
            }
        }
    }
    bar.finish_and_clear();

    // Blobs, in the order of their first reference.
    let mut blobs: Vec<(&[u8; 32], &BlobSeen)> = audit.blobs.iter().collect();
    blobs.sort_by_key(|(_, b)| b.first_position);
    let total: u64 = blobs.iter().map(|(_, b)| b.len).sum();
    let bar = progress::byte_bar(total, "verifying blobs");
    let mut blob_problems = Vec::new();
    for (hash, b) in &blobs {
        let event = RecordedEvent {
            position: b.first_position,
            stream: Arc::clone(&b.stream),
            version: 0,
            event_type: String::new(),
            metadata: Vec::new(),
            payload: EventPayload::Blob {
                hash: varve_engine::BlobHash(**hash),
                len: b.len,
            },
            timestamp_us: 0,
            id: None,
        };
        let mut sink = Sink {
            written: 0,
            bar: &bar,
        };
        let context = format!(
            "blob of position {} (stream {:?})",
            b.first_position, &*b.stream
        );
        match db.read_payload_to(&event, &mut sink) {
            Ok(n) if n == b.len && sink.written == b.len => {
                report.blobs += 1;
                report.blob_bytes += n;
            }
            Ok(n) => blob_problems.push(Problem::new(
                format!(
                    "blob {} holds {n} bytes, the events say {}",
                    crate::show::hex(*hash),
                    b.len
                ),
                context,
            )),
            Err(e) => blob_problems.push(problem_of(&e, dir, Some(context))),
        }
    }
    bar.finish_and_clear();
    audit.problems.extend(blob_problems);

    audit.finish(
        &stats,
        |s| {
            db.stream_version(s)
                .map_err(|e| problem_of(&e, dir, Some(format!("stream {s:?}"))))
        },
        |s| index_digest(db, dir, s),
    );
    let (snapshots, snapshot_bytes, snapshot_problems) = audit_snapshots(
        db.snapshots().map(|r| {
            r.map(|i| (i.stream, i.version, i.len))
                .map_err(|e| problem_of(&e, dir, Some("snapshot".to_owned())))
        }),
        |s| {
            db.stream_version(s)
                .map_err(|e| problem_of(&e, dir, Some(format!("snapshot of stream {s:?}"))))
        },
    );
    audit.problems.extend(snapshot_problems);
    report.snapshots = snapshots;
    report.snapshot_bytes = snapshot_bytes;
    report.events = audit.events;
    report.streams = audit.streams.len() as u64;
    report.problems = audit.problems;
    report
}

/// Checks the snapshots `items` lists (stream, version, length; or the problem reading
/// one): each version must be one its stream has (`head` gives the stream's last version).
/// Returns the snapshots and bytes that passed, and the problems.
pub fn audit_snapshots(
    items: impl IntoIterator<Item = Result<(Arc<str>, u64, u64), Problem>>,
    mut head: impl FnMut(&str) -> Result<Option<u64>, Problem>,
) -> (u64, u64, Vec<Problem>) {
    let (mut count, mut total, mut problems) = (0, 0, Vec::new());
    for item in items {
        let (stream, version, len) = match item {
            Ok(info) => info,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        match head(&stream) {
            Err(p) => problems.push(p),
            Ok(Some(h)) if version <= h => {
                count += 1;
                total += len;
            }
            Ok(h) => problems.push(Problem::new(
                format!(
                    "snapshot at version {version} but the stream's last version is {}",
                    h.map_or_else(|| "none".to_owned(), |v| v.to_string())
                ),
                format!("snapshot of stream {:?}", &*stream),
            )),
        }
    }
    (count, total, problems)
}

/// (version after the last listed, position digest) of `stream` as its stream index lists
/// it (from its first kept version: a truncated stream starts above 0).
fn index_digest(db: &Varve, dir: &Path, stream: &str) -> Result<(u64, u64), Problem> {
    let mut digest = 0u64;
    let mut from = 0;
    loop {
        let got = db
            .scan_stream(stream, Direction::Forward, from, BATCH, |v| {
                digest = digest_step(digest, v.position);
                from = v.version + 1;
            })
            .map_err(|e| problem_of(&e, dir, Some(format!("stream {stream:?}"))))?;
        if got < BATCH {
            return Ok((from, digest));
        }
    }
}

/// Runs `varve check`; returns whether the store is clean.
///
/// # Errors
/// No store; locked; a version this build does not read (the store cannot be checked).
pub fn run(dir: &Path, json: bool, wait_lock: Duration) -> Result<bool, CliError> {
    store::preflight(dir)?;
    let report = match store::open_engine(dir, store::inspect_options(), wait_lock) {
        Ok(db) => check_open(&db, dir),
        Err(e) if describe(&e, dir).kind == Kind::Corrupted => {
            // Recovery refused the store: that is the finding.
            Report {
                problems: vec![problem_of(&e, dir, None)],
                ..Report::default()
            }
        }
        Err(e) => return Err(CliError::engine(&e, dir)),
    };
    if json {
        println!("{}", to_json(&report));
    } else {
        print!("{}", to_text(dir, &report));
    }
    Ok(report.problems.is_empty())
}

/// The report as JSON.
pub fn to_json(r: &Report) -> serde_json::Value {
    json!({
        "ok": r.problems.is_empty(),
        "events": r.events,
        "streams": r.streams,
        "blobs": r.blobs,
        "blob_bytes": r.blob_bytes,
        "snapshots": r.snapshots,
        "snapshot_bytes": r.snapshot_bytes,
        "notes": r.notes,
        "problems": r.problems.iter().map(|p| json!({"what": p.what, "where": p.location})).collect::<Vec<_>>(),
        "not_verified": NOT_VERIFIED,
    })
}

/// The report as text.
pub fn to_text(dir: &Path, r: &Report) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "checked {}: {} events in {} streams; {} blobs ({}) read with their SHA-256 verified; \
         {} snapshots ({}) read",
        dir.display(),
        r.events,
        r.streams,
        r.blobs,
        bytes(r.blob_bytes),
        r.snapshots,
        bytes(r.snapshot_bytes)
    );
    for n in &r.notes {
        let _ = writeln!(o, "note: {n}");
    }
    let _ = writeln!(o, "not verified:");
    for n in NOT_VERIFIED {
        let _ = writeln!(o, "  - {n}");
    }
    if r.problems.is_empty() {
        let _ = writeln!(o, "OK: no problem found");
    } else {
        let _ = writeln!(o, "{} problem(s):", r.problems.len());
        for p in &r.problems {
            let _ = writeln!(o, "  {}: {}", p.location, p.what);
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(position: u64, stream: &str, version: u64) -> Seen {
        Seen {
            position,
            stream: Arc::from(stream),
            version,
            blob: None,
        }
    }

    fn stats(next_position: u64, streams: u64, blobs: u64, blob_bytes: u64) -> Stats {
        let mut s = Stats::default();
        s.next_position = next_position;
        s.streams = streams;
        s.blobs = blobs;
        s.blob_bytes = blob_bytes;
        s
    }

    /// Feeds `events`, then finishes with heads and stream indexes that agree with them
    /// unless `heads`/`index` say otherwise.
    fn audit(events: &[Seen], st: &Stats, heads: &[(&str, Option<u64>)]) -> Vec<Problem> {
        let mut a = Audit::default();
        for e in events {
            a.observe(e);
        }
        let truth: HashMap<Arc<str>, StreamSeen> = a.streams.clone();
        a.finish(
            st,
            |s| {
                Ok(heads
                    .iter()
                    .find(|(n, _)| *n == s)
                    .map_or(Some(truth[s].last_version), |(_, h)| *h))
            },
            |s| Ok((truth[s].count, truth[s].digest)),
        );
        a.problems
    }

    #[test]
    fn a_problem_names_its_context_then_the_errors_location() {
        let dir = Path::new("/s");
        let err = |location: &str| varve_engine::Error::Corrupted {
            location: location.into(),
            what: "checksum mismatch",
        };
        let p = problem_of(&err("events.mdb key 7"), dir, Some("position 7".into()));
        assert_eq!(p.location, "position 7, events.mdb key 7");
        // An error that says no place: the context alone, with no dangling comma.
        let p = problem_of(&err(""), dir, Some("position 7".into()));
        assert_eq!(p.location, "position 7");
        let p = problem_of(&err("events.mdb key 7"), dir, None);
        assert_eq!(p.location, "events.mdb key 7");
    }

    #[test]
    fn a_consistent_log_has_no_problem() {
        let evs = [ev(0, "a", 0), ev(1, "b", 0), ev(2, "a", 1)];
        assert_eq!(audit(&evs, &stats(3, 2, 0, 0), &[]), vec![]);
    }

    #[test]
    fn with_deletions_gaps_and_late_first_versions_pass_but_version_gaps_do_not() {
        let run = |events: &[Seen], st: &Stats| {
            let mut a = Audit {
                deletions: true,
                ..Audit::default()
            };
            for e in events {
                a.observe(e);
            }
            let truth: HashMap<Arc<str>, StreamSeen> = a.streams.clone();
            a.finish(
                st,
                |s| Ok(Some(truth[s].last_version)),
                |s| Ok((truth[s].count, truth[s].digest)),
            );
            a.problems
        };
        // Positions 0, 2 and 5.. removed; "a" truncated before version 3; one more stream
        // ("gone") deleted whole; the last events removed too.
        let evs = [ev(1, "a", 3), ev(3, "b", 0), ev(4, "a", 4)];
        assert_eq!(run(&evs, &stats(7, 3, 0, 0)), vec![]);
        // A gap inside a stream's versions is still a problem.
        let gap = [ev(1, "a", 3), ev(4, "a", 5)];
        let p = run(&gap, &stats(5, 1, 0, 0));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("version 5 follows"), "{p:?}");
        // More streams read than the store has is a problem either way.
        assert_eq!(run(&evs, &stats(7, 1, 0, 0)).len(), 1);
        // A read that went past the store's end is a problem either way.
        assert_eq!(run(&evs, &stats(4, 3, 0, 0)).len(), 1);
    }

    #[test]
    fn a_gap_in_positions_is_named() {
        let evs = [ev(0, "a", 0), ev(3, "a", 1)];
        let p = audit(&evs, &stats(4, 1, 0, 0), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("positions 1..=2 are missing"), "{p:?}");
        assert_eq!(p[0].location, "position 1");
    }

    #[test]
    fn a_version_jump_or_repeat_is_named_with_its_position() {
        for third in [3, 1] {
            let evs = [ev(0, "a", 0), ev(1, "a", 1), ev(2, "a", third)];
            let p = audit(&evs, &stats(3, 1, 0, 0), &[("a", Some(third))]);
            assert_eq!(p.len(), 1, "{third}: {p:?}");
            assert!(p[0].location.starts_with("position 2"), "{p:?}");
            assert!(
                p[0].what
                    .contains(&format!("version {third} follows 2 events")),
                "{p:?}"
            );
        }
    }

    #[test]
    fn an_unreadable_event_explains_the_version_jump_after_it() {
        let mut a = Audit::default();
        a.observe(&ev(0, "a", 0));
        a.unreadable(1, Problem::new("bad", "position 1"));
        a.observe(&ev(2, "a", 2));
        assert_eq!(a.problems.len(), 1, "{:?}", a.problems);
        assert_eq!(a.next_position, 3);
        assert_eq!((a.events, a.unreadable), (2, 1));
        // Two versions skipped cannot be explained by one unreadable event.
        a.observe(&ev(3, "a", 5));
        assert_eq!(a.problems.len(), 2, "{:?}", a.problems);
    }

    #[test]
    fn a_head_that_is_not_the_last_event_is_named() {
        let evs = [ev(0, "a", 0), ev(1, "a", 1)];
        for head in [Some(0), Some(2), None] {
            let p = audit(&evs, &stats(2, 1, 0, 0), &[("a", head)]);
            assert_eq!(p.len(), 1, "{head:?}: {p:?}");
            assert_eq!(p[0].location, "stream \"a\"");
            assert!(p[0].what.contains("last event read has version 1"), "{p:?}");
        }
    }

    #[test]
    fn an_unreadable_last_event_explains_a_head_one_past_the_last_read() {
        for (head, problems) in [(Some(2), 1), (Some(3), 2), (Some(1), 1)] {
            let mut a = Audit::default();
            a.observe(&ev(0, "a", 0));
            a.observe(&ev(1, "a", 1));
            a.unreadable(2, Problem::new("bad", "position 2"));
            a.finish(&stats(3, 1, 0, 0), |_| Ok(head), |_| Ok((0, 0)));
            assert_eq!(a.problems.len(), problems, "{head:?}: {:?}", a.problems);
        }
    }

    #[test]
    fn a_stream_index_that_lists_other_positions_is_named() {
        let evs = [ev(0, "a", 0), ev(1, "a", 1)];
        let st = stats(2, 1, 0, 0);
        for index in [
            (2, digest_step(digest_step(0, 1), 0)),
            (1, digest_step(0, 0)),
        ] {
            let mut a = Audit::default();
            for e in &evs {
                a.observe(e);
            }
            a.finish(&st, |_| Ok(Some(1)), |_| Ok(index));
            assert_eq!(a.problems.len(), 1, "{index:?}: {:?}", a.problems);
            assert!(
                a.problems[0].what.contains("stream index lists"),
                "{:?}",
                a.problems
            );
        }
        // Pinned values: FNV-1a style, xor then multiply.
        assert_eq!(digest_step(3, 1), 2 * 0x0100_0000_01b3);
        assert_eq!(digest_step(0, 5), 5 * 0x0100_0000_01b3);
        // The digest depends on the order of the positions.
        assert_ne!(
            digest_step(digest_step(0, 0), 1),
            digest_step(digest_step(0, 1), 0)
        );
    }

    #[test]
    fn end_and_stream_count_are_compared_with_the_store() {
        let evs = [ev(0, "a", 0)];
        let p = audit(&evs, &stats(2, 1, 0, 0), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("reports 2 events"), "{p:?}");
        let p = audit(&evs, &stats(1, 2, 0, 0), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("reports 2 streams"), "{p:?}");
    }

    #[test]
    fn orphan_and_missing_blobs_and_length_disagreements_are_named() {
        let blob = |position, hash: u8, len| Seen {
            blob: Some(([hash; 32], len)),
            ..ev(position, "a", position)
        };
        let evs = [blob(0, 1, 100), blob(1, 1, 100), blob(2, 2, 50)];
        assert_eq!(audit(&evs, &stats(3, 1, 2, 150), &[]), vec![]);
        let p = audit(&evs, &stats(3, 1, 3, 170), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].what.contains("1 blob(s) that no event references"),
            "{p:?}"
        );
        assert_eq!(p[0].location, "blobs/blobs.mdb");
        let p = audit(&evs, &stats(3, 1, 1, 100), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].what.contains("holds 1 blobs of 100 bytes"), "{p:?}");
        let p = audit(&evs, &stats(3, 1, 2, 151), &[]);
        assert_eq!(p.len(), 1, "same count, other bytes: {p:?}");
        assert!(
            p[0].what
                .starts_with("the sidecar holds 2 blobs of 151 bytes"),
            "{p:?}"
        );
        let evs = [blob(0, 1, 100), blob(1, 1, 99)];
        let p = audit(&evs, &stats(2, 1, 1, 100), &[]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].what.contains("length 99 here but 100 at position 0"),
            "{p:?}"
        );
    }

    #[test]
    fn snapshots_past_their_streams_head_or_unreadable_are_named() {
        let heads = [("a", Some(4)), ("b", None)];
        let head = |s: &str| {
            heads
                .iter()
                .find(|(n, _)| *n == s)
                .map(|(_, h)| *h)
                .ok_or_else(|| Problem::new("no such stream", s.to_owned()))
        };
        let item = |s: &str, v, len| Ok((Arc::from(s), v, len));
        let (n, bytes, p) = audit_snapshots(
            [
                item("a", 4, 10),
                item("a", 3, 5),
                item("a", 5, 7),
                item("b", 0, 1),
                Err(Problem::new(
                    "checksum",
                    "snapshots/page-00000000.vvp at byte 104",
                )),
                item("c", 0, 1),
            ],
            head,
        );
        assert_eq!((n, bytes), (2, 15), "{p:?}");
        let p: Vec<(&str, &str)> = p
            .iter()
            .map(|p| (p.what.as_str(), p.location.as_str()))
            .collect();
        assert_eq!(
            p,
            [
                (
                    "snapshot at version 5 but the stream's last version is 4",
                    "snapshot of stream \"a\""
                ),
                (
                    "snapshot at version 0 but the stream's last version is none",
                    "snapshot of stream \"b\""
                ),
                ("checksum", "snapshots/page-00000000.vvp at byte 104"),
                ("no such stream", "c"),
            ]
        );
    }
}
