//! `varve append`: one event from standard input, for scripts and tests.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use varve_engine::{AppendResult, EventData, ExpectedVersion, Options};

use crate::error::{CliError, Kind};
use crate::store;

/// Parses `any`, `no-stream`, `exists` or a version number.
///
/// # Errors
/// Anything else, with what is accepted.
pub fn parse_expected(s: &str) -> Result<ExpectedVersion, String> {
    match s {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n
            .parse()
            .map(ExpectedVersion::Exact)
            .map_err(|_| format!("{s:?}: expected any, no-stream, exists or a version number")),
    }
}

/// What to append.
#[derive(Debug, Clone)]
pub struct AppendArgs {
    /// The stream.
    pub stream: String,
    /// The event type.
    pub event_type: String,
    /// What the stream's version must be.
    pub expected: ExpectedVersion,
    /// Metadata, if any.
    pub metadata: Option<String>,
    /// Create the store if the directory holds none.
    pub create: bool,
    /// Print the result as JSON.
    pub json: bool,
}

/// The result as text.
pub fn result_text(stream: &str, r: &AppendResult) -> String {
    format!(
        "appended at position {} (stream {} version {})",
        r.first_position,
        crate::show::name(stream),
        r.first_version
    )
}

/// The result as JSON.
pub fn result_json(stream: &str, r: &AppendResult) -> serde_json::Value {
    json!({
        "stream": stream,
        "first_position": r.first_position,
        "last_position": r.last_position,
        "first_version": r.first_version,
        "last_version": r.last_version,
    })
}

/// Runs `varve append`: reads the payload from `input`, appends it durably (the default
/// `SyncMode::Always`), prints the result and closes the store (which checkpoints).
///
/// # Errors
/// No store (without `create`); opening; the append's refusal; reading `input`.
pub fn run(
    dir: &Path,
    args: &AppendArgs,
    input: &mut impl Read,
    wait_lock: Duration,
) -> Result<(), CliError> {
    if !args.create {
        store::preflight(dir)?;
    }
    let mut payload = Vec::new();
    input
        .read_to_end(&mut payload)
        .map_err(|e| CliError::new(Kind::Other, format!("reading the payload: {e}")))?;
    let db = store::open(dir, Options::default(), wait_lock)?;
    let mut event = EventData::new(&args.event_type, &payload);
    if let Some(m) = &args.metadata {
        event = event.with_metadata(m.as_bytes());
    }
    let r = db
        .append(&args.stream, args.expected, &[event])
        .map_err(|e| CliError::engine(&e, dir))?;
    if args.json {
        println!("{}", result_json(&args.stream, &r));
    } else {
        println!("{}", result_text(&args.stream, &r));
    }
    db.close().map_err(|e| {
        let mut err = CliError::engine(&e, dir);
        err.message = format!(
            "the event is durable, but closing the store failed: {}",
            err.message
        );
        err
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_versions_parse() {
        assert_eq!(parse_expected("any"), Ok(ExpectedVersion::Any));
        assert_eq!(parse_expected("no-stream"), Ok(ExpectedVersion::NoStream));
        assert_eq!(parse_expected("exists"), Ok(ExpectedVersion::StreamExists));
        assert_eq!(parse_expected("17"), Ok(ExpectedVersion::Exact(17)));
        assert!(parse_expected("-1").is_err());
        assert!(parse_expected("Any").is_err());
        assert!(parse_expected("").is_err());
    }
}
