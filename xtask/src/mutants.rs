//! `cargo xtask mutants -p CRATE [...]`: cargo-mutants per crate, with a verdict.
//!
//! Settings live in `.cargo/mutants.toml`. Each crate's results go to
//! `target/mutants/CRATE/mutants.out/`; the task prints caught/missed/timeout/unviable
//! counts per crate and fails if any mutant was missed or timed out, or if cargo-mutants
//! itself could not run (for example, the crate's tests fail without mutations).

use std::path::Path;

use crate::util::{cargo, step, workspace_root};

/// Counts read from one crate's `mutants.out`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Mutants a test failed on (good).
    pub caught: usize,
    /// Mutants every test passed on (a gap in the tests).
    pub missed: usize,
    /// Mutants whose tests did not finish in time.
    pub timeout: usize,
    /// Mutants that did not build.
    pub unviable: usize,
}

impl Counts {
    /// True if no mutant was missed and none timed out.
    pub fn clean(&self) -> bool {
        self.missed == 0 && self.timeout == 0
    }
}

/// Parses the arguments and runs cargo-mutants once per named crate.
pub fn run(args: &[String]) -> Result<(), String> {
    let (crates, extra) = parse_args(args)?;
    ensure_installed()?;
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for krate in &crates {
        let out = workspace_root().join("target").join("mutants").join(krate);
        let _ = std::fs::remove_dir_all(out.join("mutants.out"));
        std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let result = step(&format!("mutants {krate}"), || {
            let status = cargo()
                .args(["mutants", "--package", krate, "--output"])
                .arg(&out)
                .args(&extra)
                .status()
                .map_err(|e| format!("cannot start cargo mutants: {e}"))?;
            // cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; anything else
            // means it could not judge (usage error, baseline tests failing).
            match status.code() {
                Some(0 | 2 | 3) => Ok(()),
                _ => Err(format!("cargo mutants could not run ({status})")),
            }
        });
        match result.and_then(|()| read_counts(&out.join("mutants.out"))) {
            Ok(c) => {
                let line = format!(
                    "{krate}: caught {} missed {} timeout {} unviable {}",
                    c.caught, c.missed, c.timeout, c.unviable
                );
                if !c.clean() {
                    failures.push(line.clone());
                    print_list(&out.join("mutants.out/missed.txt"), "missed");
                    print_list(&out.join("mutants.out/timeout.txt"), "timeout");
                }
                summary.push(line);
            }
            Err(e) => {
                failures.push(format!("{krate}: {e}"));
                summary.push(format!("{krate}: {e}"));
            }
        }
    }
    println!("mutation testing summary:");
    for line in &summary {
        println!("  {line}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("mutation testing failed: {}", failures.join("; ")))
    }
}

/// Splits `-p A -p B -- rest` into crate names and the arguments passed through.
fn parse_args(args: &[String]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut crates = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-p" | "--package" => match iter.next() {
                Some(name) => crates.push(name.clone()),
                None => return Err(format!("{arg} needs a crate name")),
            },
            "--" => break,
            other => {
                return Err(format!(
                    "unknown argument {other} (pass cargo-mutants flags after --)"
                ));
            }
        }
    }
    let extra: Vec<String> = iter.cloned().collect();
    if crates.is_empty() {
        return Err("name at least one crate: cargo xtask mutants -p CRATE".into());
    }
    Ok((crates, extra))
}

/// Installs cargo-mutants with `cargo install --locked` when `cargo mutants` is missing.
fn ensure_installed() -> Result<(), String> {
    let present = cargo()
        .args(["mutants", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return Ok(());
    }
    step("install cargo-mutants", || {
        crate::util::run_cmd(
            "cargo install",
            cargo().args(["install", "--locked", "cargo-mutants"]),
        )
    })
}

/// Reads the outcome lists cargo-mutants writes, one mutant per line.
fn read_counts(dir: &Path) -> Result<Counts, String> {
    let count = |name: &str| -> Result<usize, String> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(count_lines(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    };
    if !dir.join("outcomes.json").exists() {
        return Err(format!(
            "{} has no outcomes.json: cargo mutants did not finish",
            dir.display()
        ));
    }
    Ok(Counts {
        caught: count("caught.txt")?,
        missed: count("missed.txt")?,
        timeout: count("timeout.txt")?,
        unviable: count("unviable.txt")?,
    })
}

fn count_lines(text: &str) -> usize {
    text.lines().filter(|l| !l.trim().is_empty()).count()
}

fn print_list(path: &Path, label: &str) {
    if let Ok(text) = std::fs::read_to_string(path) {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            println!("  {label}: {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn args_split_into_crates_and_passthrough() {
        let (c, e) = parse_args(&strings(&[
            "-p",
            "a",
            "--package",
            "b",
            "--",
            "--shard",
            "1/4",
        ]))
        .unwrap();
        assert_eq!(c, ["a", "b"]);
        assert_eq!(e, ["--shard", "1/4"]);
        assert!(parse_args(&strings(&[])).is_err());
        assert!(parse_args(&strings(&["-p"])).is_err());
        assert!(parse_args(&strings(&["--shard", "1/4"])).is_err());
    }

    #[test]
    fn counts_come_from_the_outcome_lists() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            read_counts(&dir).is_err(),
            "no outcomes.json: the run did not finish"
        );
        std::fs::write(dir.join("outcomes.json"), "{}").unwrap();
        std::fs::write(dir.join("caught.txt"), "a\nb\n\nc\n").unwrap();
        std::fs::write(dir.join("missed.txt"), "m\n").unwrap();
        let c = read_counts(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            c,
            Counts {
                caught: 3,
                missed: 1,
                timeout: 0,
                unviable: 0
            }
        );
        assert!(!c.clean());
        assert!(
            Counts {
                caught: 1,
                unviable: 4,
                ..Counts::default()
            }
            .clean()
        );
        assert!(
            !Counts {
                timeout: 1,
                ..Counts::default()
            }
            .clean()
        );
    }
}
