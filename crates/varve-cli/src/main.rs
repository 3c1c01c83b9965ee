//! `varve`: look into, check, follow, append to and benchmark a Varve event store.
//!
//! Every command works through `varve_engine`'s public API. The engine has no read-only
//! open yet: opening a store takes its exclusive lock and runs crash recovery, so no
//! command may run while another process has the store open (see `store`).

mod append;
mod bench;
mod check;
mod dump;
mod error;
mod progress;
mod show;
mod stat;
mod store;
mod tail;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::CliError;

const ABOUT: &str = "Look into, check, follow, append to and benchmark a Varve event store";

const LONG_ABOUT: &str = "\
Look into, check, follow, append to and benchmark a Varve event store.

Every command opens the store through the engine, which allows one open store at a time
and runs crash recovery on open (it may zero a torn WAL tail and release orphan blob
references). No command is read-only: stop the application that uses the store first,
or pass --wait-lock SECS. The inspecting commands (stat, dump, check, tail) never
checkpoint.

Exit codes: 0 success; 1 `check` found problems; 2 usage error; 3 no such directory or
no store in it; 4 store locked by another process; 5 format version this build does not
read; 6 corrupted data (run `varve check`); 7 the store refused the request (wrong
expected version, a limit); 8 other errors (I/O).";

const CHECK_ABOUT: &str = "\
Verifies every checksum the engine lets it reach and cross-references the store.

What it verifies:
- opening the store runs the engine's recovery, which verifies every WAL record still kept
  (structure, LSN sequence, xxh3 checksum) and that the log continues the checkpoint;
- every event is read, which verifies its stored checksum (events.mdb and the WAL tail);
- positions run gapless from 0 to the end; versions run 0, 1, 2, ... in every stream;
- every stream is read again through its stream index and must list the same positions;
  its head (stream_version) must be the version of its last event;
- every distinct blob is read through the sidecar's cache-safe path, its SHA-256 verified,
  its length compared with the events';
- the sidecar's blob count and bytes must be those the events reference (no orphan blob);
- every stream snapshot (snapshots/, a slotted store) is read whole: slot entry and value
  checksums, decompression, header; a damaged one is named by its page file and the byte
  offset of its slot entry; its version must be one its stream has.

What it does NOT verify or do:
- it is NOT read-only: the engine has no read-only open, so check takes the store's lock
  (stop other processes first, or --wait-lock) and runs crash recovery, which zeroes a torn
  WAL tail and releases orphan blob references; it checkpoints only a store with deleted
  or truncated streams (to apply the deletions and release their blobs);
- a torn WAL tail is cut by recovery and shown as a note, not a problem;
- WAL segments already deleted by checkpoints are gone (their events are in events.mdb);
- LMDB's own pages carry no checksums: only the values the engine stores are verified;
- blob reference counts are not compared with the references (the engine exposes neither).

Exit 0: clean; 1: problems found, each with where (file and offset, position, stream or
blob) and what; 3, 4, 5: no store, locked, unsupported version (nothing was checked).";

#[derive(Debug, Parser)]
#[command(name = "varve", version, about = ABOUT, long_about = LONG_ABOUT)]
struct Cli {
    /// Wait up to SECS seconds for a store another process holds, instead of failing at
    /// once.
    #[arg(long, global = true, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    wait_lock: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// What a store holds: events, streams, checkpoint lag, WAL, blobs, file sizes
    Stat {
        /// The store's directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Also read every event: blob references, referenced bytes and the dedup ratio
        /// (takes as long as reading the store's events).
        #[arg(long)]
        scan: bool,
    },

    /// Events in order, one per line (or JSON Lines)
    ///
    /// Each line: position, stream@version, type, time, payload (quoted UTF-8 when valid,
    /// hex:... otherwise; payloads of 2048 bytes and more, which live in the blob sidecar,
    /// as blob:sha256:HASH:LEN unless --payloads), then meta= and id= when present.
    Dump {
        /// The store's directory.
        dir: PathBuf,
        /// Only the events of this stream; --from is then a stream version.
        #[arg(long)]
        stream: Option<String>,
        /// First global position (or stream version with --stream) to print.
        #[arg(long, value_name = "P")]
        from: Option<u64>,
        /// Print at most N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// One JSON object per line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Read sidecar payloads (their SHA-256 is verified) and print their bytes.
        #[arg(long)]
        payloads: bool,
    },

    /// Verifies checksums and cross-references; exit 1 lists each problem and where
    #[command(long_about = CHECK_ABOUT)]
    Check {
        /// The store's directory.
        dir: PathBuf,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Follows new events as they arrive, printed as by dump, until Ctrl-C
    ///
    /// There are no subscriptions yet and a store is open in one process at a time: tail
    /// opens the store for each poll (recovery reads its WAL), reads what is new and
    /// closes it again, then sleeps --interval-ms. While another process keeps the store
    /// open, tail waits and says so; other varve commands run during a poll may need
    /// --wait-lock.
    Tail {
        /// The store's directory.
        dir: PathBuf,
        /// Only the events of this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Only events whose type starts with T.
        #[arg(long, value_name = "T")]
        type_prefix: Option<String>,
        /// Start at global position P (default: only events appended after tail started).
        #[arg(long, value_name = "P")]
        from: Option<u64>,
        /// Exit after printing N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// One JSON object per line (JSON Lines).
        #[arg(long)]
        json: bool,
        /// Milliseconds to sleep between polls.
        #[arg(long, value_name = "MS", default_value_t = 250)]
        interval_ms: u64,
    },

    /// A few seconds of durable appends and reads on the disk DIR is on
    ///
    /// One writer appends one event per call, each fdatasynced before it returns, then
    /// the events are read in order and at random positions. Runs in a new store in
    /// DIR/varve-bench-PID, removed afterwards.
    Bench {
        /// An existing directory on the disk to probe.
        dir: PathBuf,
        /// Seconds of appends (the reads take as long again).
        #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
        seconds: Duration,
        /// Payload bytes per event.
        #[arg(long, value_name = "BYTES", default_value_t = 256)]
        payload_size: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },

    /// Appends one event read from standard input, durably, and prints where it went
    ///
    /// The append returns after fdatasync; the store is then closed (which checkpoints).
    Append {
        /// The store's directory.
        dir: PathBuf,
        /// The stream to append to.
        stream: String,
        /// The event type.
        #[arg(value_name = "TYPE")]
        event_type: String,
        /// What the stream's version must be: any, no-stream, exists, or the version N of
        /// its last event. Otherwise nothing is written (exit 7).
        #[arg(long, default_value = "any", value_parser = append::parse_expected)]
        expected: varve_engine::ExpectedVersion,
        /// The event's metadata.
        #[arg(long)]
        metadata: Option<String>,
        /// Create the store (and the directory) if there is none.
        #[arg(long)]
        create: bool,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Parses a number of seconds (fractions allowed) into a duration.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} is not a duration in seconds"))
}

fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Stat { dir, json, scan } => {
            stat::run(&dir, json, scan, cli.wait_lock)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump {
            dir,
            stream,
            from,
            limit,
            json,
            payloads,
        } => {
            let args = dump::DumpArgs {
                stream,
                from,
                limit,
                json,
                payloads,
            };
            dump::run(&dir, &args, cli.wait_lock)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { dir, json } => Ok(if check::run(&dir, json, cli.wait_lock)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::Tail {
            dir,
            stream,
            type_prefix,
            from,
            limit,
            json,
            interval_ms,
        } => {
            let args = tail::TailArgs {
                stream,
                type_prefix,
                from,
                limit,
                json,
                interval: Duration::from_millis(interval_ms),
            };
            tail::run(&dir, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            dir,
            seconds,
            payload_size,
            json,
        } => {
            bench::run(&dir, seconds, payload_size, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Append {
            dir,
            stream,
            event_type,
            expected,
            metadata,
            create,
            json,
        } => {
            let args = append::AppendArgs {
                stream,
                event_type,
                expected,
                metadata,
                create,
                json,
            };
            append::run(&dir, &args, &mut std::io::stdin().lock(), cli.wait_lock)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("varve: error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_parse_and_bad_ones_are_refused() {
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_secs("0"), Ok(Duration::ZERO));
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("soon").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
