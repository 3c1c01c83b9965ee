//! `varve`: look into, check, follow, append to and benchmark a Varve event store.
//!
//! Every command works through `varve_engine`'s public API. The engine has no read-only
//! open yet: opening a store takes its exclusive lock and runs crash recovery, so no
//! command may run while another process has the store open (see `store`).

mod dump;
mod error;
mod progress;
mod show;
mod stat;
mod store;

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
    /// What a store holds: events, streams, checkpoint and its lag, WAL segments, blobs,
    /// file sizes.
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

    /// Events in order, one per line: position, stream@version, type, time, payload
    /// (quoted UTF-8 when valid, hex:... otherwise; payloads of 2048 bytes and more, which
    /// live in the blob sidecar, as blob:sha256:HASH:LEN unless --payloads).
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
