//! `varve dump`: events in order, as text lines or JSON lines.

use std::io::{BufWriter, ErrorKind, Write};
use std::path::Path;
use std::time::Duration;

use varve_engine::{Direction, EventPayload, Varve};

use crate::error::{CliError, Kind};
use crate::{show, store};

/// Events read per engine call.
const BATCH: u64 = 1024;

/// What to dump and how.
#[derive(Debug, Clone, Default)]
pub struct DumpArgs {
    /// Only this stream (then `from` is a stream version).
    pub stream: Option<String>,
    /// First global position (or stream version with `stream`).
    pub from: Option<u64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// JSON lines instead of text lines.
    pub json: bool,
    /// Read sidecar payloads and print their bytes instead of their reference.
    pub payloads: bool,
}

/// Writes one event line; a closed pipe (`varve dump | head`) is not an error.
pub fn write_event(
    out: &mut impl Write,
    db: &Varve,
    dir: &Path,
    e: &varve_engine::RecordedEvent,
    json: bool,
    payloads: bool,
    buf: &mut Vec<u8>,
) -> Result<(), CliError> {
    let body = if payloads && matches!(e.payload, EventPayload::Blob { .. }) {
        buf.clear();
        db.read_payload_to(e, buf)
            .map_err(|err| CliError::engine(&err, dir))?;
        Some(&buf[..])
    } else {
        None
    };
    let line = if json {
        show::event_json(e, body).to_string()
    } else {
        show::event_text(e, body)
    };
    writeln!(out, "{line}").map_err(io_error)
}

/// An error writing standard output (a closed pipe is [`Kind::Other`] too, but callers
/// check [`is_closed_pipe`] first).
pub fn io_error(e: std::io::Error) -> CliError {
    if e.kind() == ErrorKind::BrokenPipe {
        CliError::new(Kind::Other, "standard output closed")
    } else {
        CliError::new(Kind::Other, format!("writing standard output: {e}"))
    }
}

/// Whether `e` is a write to a closed pipe (the reader stopped: not a failure of ours).
pub fn is_closed_pipe(e: &CliError) -> bool {
    e.kind == Kind::Other && e.message == "standard output closed"
}

/// Runs `varve dump`.
///
/// # Errors
/// Opening the store; reading it (a corrupted event stops the dump there).
pub fn run(dir: &Path, args: &DumpArgs, wait_lock: Duration) -> Result<(), CliError> {
    let db = store::open_existing(dir, wait_lock)?;
    let mut out = BufWriter::new(std::io::stdout().lock());
    match dump(&db, dir, args, &mut out).and_then(|()| out.flush().map_err(io_error)) {
        Err(e) if is_closed_pipe(&e) => Ok(()),
        other => other,
    }
}

fn dump(db: &Varve, dir: &Path, args: &DumpArgs, out: &mut impl Write) -> Result<(), CliError> {
    let err = |e: varve_engine::Error| CliError::engine(&e, dir);
    let mut remaining = args.limit.unwrap_or(u64::MAX);
    let mut from = args.from.unwrap_or(0);
    let mut buf = Vec::new();
    while remaining > 0 {
        let n = remaining.min(BATCH) as usize;
        let events = match &args.stream {
            Some(s) => db.read_stream(s, Direction::Forward, from, n),
            None => db.read_all(from, Direction::Forward, n),
        }
        .map_err(err)?;
        for e in &events {
            write_event(out, db, dir, e, args.json, args.payloads, &mut buf)?;
        }
        let Some(last) = events.last() else { break };
        from = if args.stream.is_some() {
            last.version + 1
        } else {
            last.position + 1
        };
        remaining -= events.len() as u64;
        if events.len() < n {
            break;
        }
    }
    Ok(())
}
