//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `cargo xtask ci`: fmt, tidy, clippy, doc and the whole test suite, one timed line each.
//! - `cargo xtask bench [--quick] [--filter NAME] [--peers]`: benchmarks into a table.
//! - `cargo xtask mutants (-p CRATE ... | --all) [--report-only] [-- ARGS]`: mutation
//!   testing per crate, one summary table; `cargo xtask mutants --table` reprints it.

mod bench;
mod ci;
mod mutants;
mod tidy;
mod util;

use std::process::ExitCode;

const USAGE: &str = "usage:
  cargo xtask ci
  cargo xtask bench [--quick] [--filter NAME] [--peers]
  cargo xtask mutants (-p CRATE [-p CRATE ...] | --all) [--report-only] [-- CARGO_MUTANTS_ARGS]
  cargo xtask mutants --table [-p CRATE ...]
  cargo xtask tidy";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("mutants") => mutants::run(&args[1..]),
        Some("tidy") => tidy::run(&util::workspace_root()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing task\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            ExitCode::FAILURE
        }
    }
}
