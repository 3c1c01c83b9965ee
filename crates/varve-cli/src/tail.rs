//! `varve tail`: follows new events by polling.
//!
//! The engine has no subscriptions and no shared or read-only open: a store is open in one
//! process at a time. So tail opens the store for each poll, reads the events after the
//! last one it printed and closes it again (without a checkpoint), sleeping between polls.
//! A writer that keeps the store open keeps tail out; tail then waits and says so.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use varve_engine::{Direction, Error, RecordedEvent};

use crate::dump::{io_error, is_closed_pipe, write_event};
use crate::error::CliError;
use crate::store;

/// Events read per engine call.
const BATCH: usize = 1024;

/// What to follow and how.
#[derive(Debug, Clone, Default)]
pub struct TailArgs {
    /// Only this stream.
    pub stream: Option<String>,
    /// Only event types that start with this.
    pub type_prefix: Option<String>,
    /// First position to print (default: the end of the log when tail starts).
    pub from: Option<u64>,
    /// Stop after printing this many events.
    pub limit: Option<u64>,
    /// JSON lines instead of text lines.
    pub json: bool,
    /// Sleep between polls.
    pub interval: Duration,
}

/// Whether `e` passes the filters.
pub fn matches(args: &TailArgs, e: &RecordedEvent) -> bool {
    args.stream.as_deref().is_none_or(|s| *e.stream == *s)
        && args
            .type_prefix
            .as_deref()
            .is_none_or(|t| e.event_type.starts_with(t))
}

/// Runs `varve tail` until the limit is reached, standard output closes, or the process is
/// interrupted (Ctrl-C ends it; the store is closed between polls, and an interrupted poll
/// is a crash the next open recovers from without loss).
///
/// # Errors
/// No store; opening or reading it (other than its being locked).
pub fn run(dir: &Path, args: &TailArgs) -> Result<(), CliError> {
    store::preflight(dir)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match follow(dir, args, &mut out) {
        Err(e) if is_closed_pipe(&e) => Ok(()),
        other => other,
    }
}

fn follow(dir: &Path, args: &TailArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut next = args.from;
    let mut printed = 0u64;
    let mut said_locked = false;
    let mut buf = Vec::new();
    loop {
        match store::open_engine(dir, store::inspect_options(), Duration::ZERO) {
            Err(Error::Locked(_)) => {
                if !said_locked {
                    eprintln!(
                        "varve: {} is locked by another process; tail waits for it (the \
                         engine lets one process open a store at a time)",
                        dir.display()
                    );
                    said_locked = true;
                }
            }
            Err(e) => return Err(CliError::engine(&e, dir)),
            Ok(db) => {
                said_locked = false;
                let err = |e: Error| CliError::engine(&e, dir);
                let mut from = match next {
                    Some(p) => p,
                    None => db.stats().map_err(err)?.next_position,
                };
                loop {
                    let events = db.read_all(from, Direction::Forward, BATCH).map_err(err)?;
                    for e in &events {
                        from = e.position + 1;
                        if !matches(args, e) {
                            continue;
                        }
                        write_event(out, &db, dir, e, args.json, false, &mut buf)?;
                        printed += 1;
                        if args.limit.is_some_and(|l| printed >= l) {
                            return out.flush().map_err(io_error);
                        }
                    }
                    if events.len() < BATCH {
                        break;
                    }
                }
                next = Some(from);
                out.flush().map_err(io_error)?;
            }
        }
        std::thread::sleep(args.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use varve_engine::EventPayload;

    #[test]
    fn filters_by_stream_and_type_prefix() {
        let e = RecordedEvent {
            position: 0,
            stream: Arc::from("order-1"),
            version: 0,
            event_type: "order.paid".into(),
            metadata: Vec::new(),
            payload: EventPayload::Inline(Vec::new()),
            timestamp_us: 0,
            id: None,
        };
        let args = |stream: Option<&str>, t: Option<&str>| TailArgs {
            stream: stream.map(str::to_owned),
            type_prefix: t.map(str::to_owned),
            ..TailArgs::default()
        };
        assert!(matches(&args(None, None), &e));
        assert!(matches(&args(Some("order-1"), None), &e));
        assert!(!matches(&args(Some("order-12"), None), &e));
        assert!(!matches(&args(Some("order-"), None), &e));
        assert!(matches(&args(None, Some("order.")), &e));
        assert!(matches(&args(Some("order-1"), Some("order.paid")), &e));
        assert!(!matches(&args(None, Some("order.paid.x")), &e));
        assert!(!matches(&args(Some("order-1"), Some("cart")), &e));
    }
}
