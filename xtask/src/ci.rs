//! `cargo xtask ci`: every check a change must pass, in order, stopping at the first failure.

use crate::util::{cargo, run_cmd, step, workspace_root};

/// Runs fmt, tidy, clippy, doc and tests; one timed line per step.
pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(extra) = args.first() {
        return Err(format!("`ci` takes no arguments (got {extra})"));
    }
    step("fmt", || {
        run_cmd("cargo fmt", cargo().args(["fmt", "--all", "--", "--check"]))
    })?;
    step("tidy", || crate::tidy::run(&workspace_root()))?;
    step("clippy", || {
        run_cmd(
            "cargo clippy",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    step("doc", || {
        run_cmd(
            "cargo doc",
            cargo()
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )
    })?;
    step("test", || {
        run_cmd("cargo test", cargo().args(["test", "--workspace"]))
    })?;
    Ok(())
}
