//! `cargo xtask mutants`: cargo-mutants per crate, with a verdict and one summary table.
//!
//! - `cargo xtask mutants -p CRATE [-p CRATE ...] [--report-only] [-- ARGS]`
//! - `cargo xtask mutants --all [--report-only] [-- ARGS]`: every crate of the workspace,
//!   in sequence ([`ALL_CRATES`]).
//! - `cargo xtask mutants --table`: the table of the last run of each crate, without
//!   running anything.
//!
//! Settings live in `.cargo/mutants.toml`. Each crate's results go to
//! `target/mutants/CRATE/mutants.out/`; the counts come from its `outcomes.json`. The task
//! prints one table (crate, mutants tested, caught, missed, timeout, unviable, time) and
//! fails if any mutant was missed or timed out, or if cargo-mutants itself could not run
//! (for example, the crate's tests fail without mutations). With `--report-only`, missed
//! mutants and timeouts are listed but do not fail the task (for crates whose survivors
//! are still being killed); a run that could not happen still fails.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::util::{cargo, step, workspace_root};

/// Every crate of the workspace that is mutation-tested, in the order `--all` runs them.
pub const ALL_CRATES: [&str; 6] = [
    "varve-wal",
    "varve-slotted",
    "varve-sidecar",
    "varve-arena",
    "varve-engine",
    "varve-cli",
];

/// Workspace crates under `crates/` that are not mutation-tested: `varve-testkit` holds
/// test helpers (a dev-dependency only); a mutant there changes what the other crates'
/// tests check, not what Varve does, and its own tests cover its logic.
pub const NOT_MUTATED: [&str; 1] = ["varve-testkit"];

/// Counts read from one crate's `mutants.out/outcomes.json`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    /// Mutants a test failed on (good).
    pub caught: usize,
    /// Mutants every test passed on (a gap in the tests).
    pub missed: usize,
    /// Mutants whose tests did not finish in time.
    pub timeout: usize,
    /// Mutants that did not build.
    pub unviable: usize,
    /// False if cargo-mutants stopped before it had tested every mutant it found.
    pub finished: bool,
}

impl Counts {
    /// True if no mutant was missed and none timed out.
    pub fn clean(&self) -> bool {
        self.missed == 0 && self.timeout == 0
    }

    /// Mutants with an outcome.
    pub fn tested(&self) -> usize {
        self.caught + self.missed + self.timeout + self.unviable
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    crates: Vec<String>,
    report_only: bool,
    table_only: bool,
    extra: Vec<String>,
}

/// One row of the summary table.
struct Row {
    krate: String,
    result: Result<Counts, String>,
    secs: Option<f64>,
}

/// Parses the arguments and runs cargo-mutants once per named crate.
pub fn run(args: &[String]) -> Result<(), String> {
    let args = parse_args(args)?;
    let root = workspace_root();
    if args.table_only {
        let rows: Vec<Row> = args
            .crates
            .iter()
            .map(|krate| Row {
                krate: krate.clone(),
                result: read_counts(&out_dir(&root, krate).join("mutants.out")),
                secs: None,
            })
            .collect();
        print!("{}", table(&rows));
        return Ok(());
    }
    ensure_installed()?;
    let mut rows = Vec::new();
    for krate in &args.crates {
        let out = out_dir(&root, krate);
        let _ = std::fs::remove_dir_all(out.join("mutants.out"));
        std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let start = Instant::now();
        let mut exit = 0;
        let result = step(&format!("mutants {krate}"), || {
            let mut cmd = cargo();
            cmd.args(["mutants", "--package", krate, "--output"])
                .arg(&out)
                .args(&args.extra);
            for (var, value) in test_scale(krate) {
                if std::env::var_os(var).is_none() {
                    cmd.env(var, value);
                }
            }
            let status = cmd
                .status()
                .map_err(|e| format!("cannot start cargo mutants: {e}"))?;
            // cargo-mutants: 0 all caught, 2 some missed, 3 some timed out; anything else
            // means it could not judge (usage error, baseline tests failing).
            match status.code() {
                Some(code @ (0 | 2 | 3)) => {
                    exit = code;
                    Ok(())
                }
                _ => Err(format!("cargo mutants could not run ({status})")),
            }
        });
        let outcomes = out.join("mutants.out");
        let result = result.and_then(|()| counts_after(exit, &outcomes));
        if let Ok(c) = &result
            && !c.clean()
        {
            let loud = if args.report_only {
                "REPORT ONLY, not failing"
            } else {
                "FAILING"
            };
            println!(
                "!!! {krate}: {} missed, {} timeout ({loud}):",
                c.missed, c.timeout
            );
            print_list(&out.join("mutants.out/missed.txt"), "missed");
            print_list(&out.join("mutants.out/timeout.txt"), "timeout");
        }
        rows.push(Row {
            krate: krate.clone(),
            result,
            secs: Some(start.elapsed().as_secs_f64()),
        });
    }
    println!("mutation testing summary:");
    print!("{}", table(&rows));
    let failures = failures(&rows, args.report_only);
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("mutation testing failed: {}", failures.join("; ")))
    }
}

/// Smaller sizes for a crate's long tests while its mutants run (each test still runs, on
/// less data; a variable already set in the environment wins). The engine's tests take
/// about a minute at full size, and every mutant runs them all: at these sizes they take
/// about a third of that. Other crates run at full size.
fn test_scale(krate: &str) -> &'static [(&'static str, &'static str)] {
    match krate {
        "varve-engine" => &[
            ("VARVE_CRASH_ROUNDS", "10"),
            ("VARVE_PROPTEST_CASES", "8"),
            ("VARVE_STALL_MIB", "32"),
            ("VARVE_SUBSCRIBE_EVENTS", "10000"),
            ("VARVE_ENGINE_LARGE_MIB", "64"),
        ],
        _ => &[],
    }
}

fn out_dir(root: &Path, krate: &str) -> PathBuf {
    root.join("target").join("mutants").join(krate)
}

/// Why the rows fail the task: a run that could not happen or did not finish always; a
/// missed mutant or a timeout unless `report_only`.
fn failures(rows: &[Row], report_only: bool) -> Vec<String> {
    let mut out = Vec::new();
    for row in rows {
        match &row.result {
            Err(e) => out.push(format!("{}: {e}", row.krate)),
            Ok(c) if !c.finished => {
                out.push(format!("{}: cargo mutants did not finish", row.krate))
            }
            Ok(c) if !c.clean() && !report_only => out.push(format!(
                "{}: {} missed, {} timeout",
                row.krate, c.missed, c.timeout
            )),
            Ok(_) => {}
        }
    }
    out
}

/// The summary table, one line per crate and a total line when there is more than one.
fn table(rows: &[Row]) -> String {
    let header = [
        "crate", "tested", "caught", "missed", "timeout", "unviable", "time", "s/mutant",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    let mut total = Counts::default();
    let mut total_secs = 0.0;
    for row in rows {
        let secs = row.secs.map_or("-".to_string(), |s| format!("{s:.0}s"));
        match &row.result {
            Ok(c) => {
                total.caught += c.caught;
                total.missed += c.missed;
                total.timeout += c.timeout;
                total.unviable += c.unviable;
                total_secs += row.secs.unwrap_or(0.0);
                let per = match row.secs {
                    Some(s) if c.tested() > 0 => format!("{:.1}", s / c.tested() as f64),
                    _ => "-".to_string(),
                };
                let name = if c.finished {
                    row.krate.clone()
                } else {
                    format!("{} (unfinished)", row.krate)
                };
                lines.push(vec![
                    name,
                    c.tested().to_string(),
                    c.caught.to_string(),
                    c.missed.to_string(),
                    c.timeout.to_string(),
                    c.unviable.to_string(),
                    secs,
                    per,
                ]);
            }
            Err(e) => lines.push(vec![row.krate.clone(), format!("error: {e}")]),
        }
    }
    if rows.len() > 1 {
        let secs = if rows.iter().all(|r| r.secs.is_none()) {
            "-".to_string()
        } else {
            format!("{total_secs:.0}s")
        };
        lines.push(vec![
            "total".to_string(),
            total.tested().to_string(),
            total.caught.to_string(),
            total.missed.to_string(),
            total.timeout.to_string(),
            total.unviable.to_string(),
            secs,
            String::new(),
        ]);
    }
    let mut widths = vec![0; header.len()];
    for line in &lines {
        // An error line is free text: it does not widen the columns.
        if line.len() == header.len() {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.len());
            }
        }
    }
    let mut out = String::new();
    for line in &lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(i, cell)| match (i, widths.get(i)) {
                (0, Some(w)) => format!("{cell:<w$}"),
                (_, Some(w)) if line.len() == header.len() => format!("{cell:>w$}"),
                _ => cell.clone(),
            })
            .collect();
        out.push_str("  ");
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Splits `-p A -p B [--all] [--report-only] [--table] -- rest` into the request.
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut crates = Vec::new();
    let (mut all, mut report_only, mut table_only) = (false, false, false);
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "-p" | "--package" => match iter.next() {
                Some(name) if NOT_MUTATED.contains(&name.as_str()) => {
                    return Err(format!(
                        "{name} is not mutation-tested (test helpers; see NOT_MUTATED)"
                    ));
                }
                Some(name) => crates.push(name.clone()),
                None => return Err(format!("{arg} needs a crate name")),
            },
            "--all" => all = true,
            "--report-only" => report_only = true,
            "--table" => table_only = true,
            "--" => break,
            other => {
                return Err(format!(
                    "unknown argument {other} (pass cargo-mutants flags after --)"
                ));
            }
        }
    }
    let extra: Vec<String> = iter.cloned().collect();
    if all && !crates.is_empty() {
        return Err("--all runs every crate: name no crate with it".into());
    }
    if all || (table_only && crates.is_empty()) {
        crates = ALL_CRATES.iter().map(|s| s.to_string()).collect();
    }
    if crates.is_empty() {
        return Err("name a crate (-p CRATE) or pass --all".into());
    }
    if table_only && !extra.is_empty() {
        return Err("--table runs nothing: it takes no cargo-mutants flags".into());
    }
    Ok(Args {
        crates,
        report_only,
        table_only,
        extra,
    })
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

/// Reads the counts of `DIR/outcomes.json`, which cargo-mutants rewrites after every
/// mutant (so a run that was stopped leaves counts too, marked unfinished).
/// The counts of a run that exited with `code`: a clean exit that wrote no
/// `outcomes.json` found no mutant to test (an empty shard, or filters that match nothing),
/// which is a finished run of zero mutants.
fn counts_after(code: i32, dir: &Path) -> Result<Counts, String> {
    if code == 0 && !dir.join("outcomes.json").exists() {
        return Ok(Counts {
            finished: true,
            ..Counts::default()
        });
    }
    read_counts(dir)
}

fn read_counts(dir: &Path) -> Result<Counts, String> {
    let path = dir.join("outcomes.json");
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            format!("{} not found: cargo mutants did not run", path.display())
        }
        _ => format!("reading {}: {e}", path.display()),
    })?;
    parse_outcomes(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The counts in the top-level object of an `outcomes.json`.
fn parse_outcomes(text: &str) -> Result<Counts, String> {
    let fields = top_level_fields(text)?;
    let get = |key: &str| -> Result<usize, String> {
        let value = fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| format!("no {key:?} count"))?;
        value
            .parse()
            .map_err(|_| format!("{key:?} is not a count: {value}"))
    };
    let mut counts = Counts {
        caught: get("caught")?,
        missed: get("missed")?,
        timeout: get("timeout")?,
        unviable: get("unviable")?,
        finished: false,
    };
    // `total_mutants` counts the outcomes so far, not the mutants found: only the end
    // time tells a finished run from a stopped one.
    counts.finished = fields.iter().any(|(k, v)| k == "end_time" && v != "null");
    Ok(counts)
}

/// The keys of a JSON object's top level with the raw text of their scalar values
/// (strings keep their quotes; nested objects and arrays are skipped). Enough JSON for
/// the file cargo-mutants writes, without a JSON dependency.
fn top_level_fields(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut fields = Vec::new();
    let mut depth = 0usize;
    let mut chars = text.char_indices().peekable();
    // The key whose value comes next at depth 1, if any.
    let mut key: Option<String> = None;
    let mut expect_key = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let mut s = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, e)) = chars.next() {
                                s.push(e);
                            }
                        }
                        '"' => {
                            closed = true;
                            break;
                        }
                        _ => s.push(c),
                    }
                }
                if !closed {
                    return Err(format!("unterminated string at byte {i}"));
                }
                if depth == 1 {
                    if expect_key {
                        key = Some(s);
                        expect_key = false;
                    } else if let Some(k) = key.take() {
                        fields.push((k, format!("\"{s}\"")));
                    }
                }
            }
            '{' | '[' => {
                depth += 1;
                if depth == 1 {
                    if c != '{' {
                        return Err("the top level is not an object".into());
                    }
                    expect_key = true;
                } else if depth == 2 {
                    key = None;
                }
            }
            '}' | ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced {c} at byte {i}"))?;
            }
            ',' if depth == 1 => expect_key = true,
            c if depth == 1 && !c.is_whitespace() && c != ':' => {
                // A bare scalar: a number, true, false or null.
                let mut s = String::from(c);
                while let Some(&(_, n)) = chars.peek() {
                    if n == ',' || n == '}' || n.is_whitespace() {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                if let Some(k) = key.take() {
                    fields.push((k, s));
                }
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("the JSON ends inside an object or array".into());
    }
    Ok(fields)
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
    fn args_split_into_crates_flags_and_passthrough() {
        let a = parse_args(&strings(&[
            "-p",
            "a",
            "--package",
            "b",
            "--report-only",
            "--",
            "--shard",
            "1/4",
        ]))
        .unwrap();
        assert_eq!(a.crates, ["a", "b"]);
        assert_eq!(a.extra, ["--shard", "1/4"]);
        assert!(a.report_only && !a.table_only);
        assert!(!parse_args(&strings(&["-p", "a"])).unwrap().report_only);
        assert!(parse_args(&strings(&[])).is_err());
        assert!(parse_args(&strings(&["-p"])).is_err());
        assert!(parse_args(&strings(&["--shard", "1/4"])).is_err());
    }

    #[test]
    fn all_names_every_crate_and_excludes_p() {
        let a = parse_args(&strings(&["--all", "--", "--in-place"])).unwrap();
        assert_eq!(a.crates, ALL_CRATES);
        assert_eq!(a.extra, ["--in-place"]);
        assert!(parse_args(&strings(&["--all", "-p", "a"])).is_err());
        let t = parse_args(&strings(&["--table"])).unwrap();
        assert!(t.table_only);
        assert_eq!(t.crates, ALL_CRATES);
        assert_eq!(
            parse_args(&strings(&["--table", "-p", "x"]))
                .unwrap()
                .crates,
            ["x"]
        );
        assert!(parse_args(&strings(&["--table", "--", "--shard", "1/2"])).is_err());
        assert!(parse_args(&strings(&["-p", "varve-testkit"])).is_err());
    }

    #[test]
    fn all_crates_are_the_workspace_crates() {
        let mut dirs: Vec<String> = std::fs::read_dir(workspace_root().join("crates"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        let mut all: Vec<&str> = ALL_CRATES.iter().chain(&NOT_MUTATED).copied().collect();
        all.sort();
        assert_eq!(dirs, all, "a crate was added or removed: update ALL_CRATES");
    }

    /// The shape cargo-mutants 27 writes (trimmed): counts at the top level, and
    /// per-mutant outcomes whose names may contain anything.
    const OUTCOMES: &str = r#"{
  "outcomes": [
    {"scenario": "Baseline", "summary": "Success", "phase_results": []},
    {"scenario": {"Mutant": {"name": "replace \"missed\": 9 } in f", "caught": 7}},
     "summary": "CaughtMutant", "phase_results": [{"duration": 1.5}]}
  ],
  "total_mutants": 12,
  "missed": 2,
  "caught": 7,
  "timeout": 1,
  "unviable": 2,
  "success": 0,
  "start_time": "2026-12-05T15:06:28.964185452Z",
  "end_time": "2026-12-05T15:08:18.825490652Z",
  "cargo_mutants_version": "27.1.0"
}"#;

    #[test]
    fn counts_come_from_the_top_level_of_outcomes_json() {
        let c = parse_outcomes(OUTCOMES).unwrap();
        assert_eq!(
            c,
            Counts {
                caught: 7,
                missed: 2,
                timeout: 1,
                unviable: 2,
                finished: true,
            }
        );
        assert_eq!(c.tested(), 12);
        assert!(!c.clean());
        // Stopped early: no end time yet.
        let stopped = OUTCOMES.replace("\"2026-12-05T15:08:18.825490652Z\"", "null");
        assert!(!parse_outcomes(&stopped).unwrap().finished);
        assert!(parse_outcomes("{\"caught\": 1}").is_err(), "counts missing");
        assert!(parse_outcomes("{\"caught\": 1, ").is_err(), "truncated");
        assert!(parse_outcomes("[1]").is_err());
    }

    #[test]
    fn a_clean_exit_without_outcomes_is_a_finished_run_of_nothing() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-none-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let none = counts_after(0, &dir).unwrap();
        assert!(none.finished && none.clean() && none.tested() == 0);
        assert!(
            counts_after(2, &dir).is_err(),
            "missed mutants but no outcomes: broken"
        );
        std::fs::write(dir.join("outcomes.json"), OUTCOMES).unwrap();
        let c = counts_after(0, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().caught, 7);
    }

    #[test]
    fn read_counts_needs_outcomes_json() {
        let dir = std::env::temp_dir().join(format!("xtask-mutants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(
            read_counts(&dir).is_err(),
            "no outcomes.json: the run did not happen"
        );
        std::fs::write(dir.join("outcomes.json"), OUTCOMES).unwrap();
        let c = read_counts(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(c.unwrap().caught, 7);
    }

    fn counts(caught: usize, missed: usize, timeout: usize, unviable: usize) -> Counts {
        Counts {
            caught,
            missed,
            timeout,
            unviable,
            finished: true,
        }
    }

    #[test]
    fn clean_means_nothing_missed_and_nothing_timed_out() {
        assert!(counts(1, 0, 0, 4).clean());
        assert!(!counts(1, 1, 0, 0).clean());
        assert!(!counts(1, 0, 1, 0).clean());
    }

    fn row(krate: &str, result: Result<Counts, String>, secs: Option<f64>) -> Row {
        Row {
            krate: krate.into(),
            result,
            secs,
        }
    }

    #[test]
    fn the_table_has_a_line_per_crate_and_a_total() {
        let rows = [
            row("varve-wal", Ok(counts(30, 2, 1, 7)), Some(400.0)),
            row("varve-cli", Ok(counts(10, 0, 0, 0)), Some(50.0)),
            row("varve-x", Err("cargo mutants could not run".into()), None),
        ];
        let t = table(&rows);
        let lines: Vec<Vec<&str>> = t.lines().map(|l| l.split_whitespace().collect()).collect();
        assert_eq!(
            lines[0],
            [
                "crate", "tested", "caught", "missed", "timeout", "unviable", "time", "s/mutant"
            ]
        );
        assert_eq!(
            lines[1],
            ["varve-wal", "40", "30", "2", "1", "7", "400s", "10.0"]
        );
        assert_eq!(
            lines[2],
            ["varve-cli", "10", "10", "0", "0", "0", "50s", "5.0"]
        );
        assert_eq!(lines[3][0], "varve-x");
        assert!(t.contains("error: cargo mutants could not run"));
        assert_eq!(lines[4], ["total", "50", "40", "2", "1", "7", "450s"]);
        // Columns line up: every number ends where its header does.
        let raw: Vec<&str> = t.lines().collect();
        let end = raw[0].find("caught").unwrap() + "caught".len();
        assert_eq!(&raw[1][end - 2..end], "30");
        assert_eq!(&raw[2][end - 2..end], "10");
        // One crate: no total line.
        assert_eq!(table(&rows[1..2]).lines().count(), 2);
        let mut unfinished = counts(1, 0, 0, 0);
        unfinished.finished = false;
        assert!(table(&[row("a", Ok(unfinished), None)]).contains("a (unfinished)"));
    }

    #[test]
    fn misses_fail_unless_report_only_but_errors_always_fail() {
        let mut unfinished = counts(1, 0, 0, 0);
        unfinished.finished = false;
        let rows = [
            row("clean", Ok(counts(5, 0, 0, 1)), None),
            row("leaky", Ok(counts(5, 1, 0, 0)), None),
            row("slow", Ok(counts(5, 0, 2, 0)), None),
            row("broken", Err("baseline failed".into()), None),
            row("stopped", Ok(unfinished), None),
        ];
        let names = |f: Vec<String>| -> Vec<String> {
            f.iter()
                .map(|s| s.split(':').next().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(failures(&rows, false)),
            ["leaky", "slow", "broken", "stopped"]
        );
        assert_eq!(names(failures(&rows, true)), ["broken", "stopped"]);
        assert!(failures(&rows[..1], false).is_empty());
    }

    #[test]
    fn only_the_engine_runs_its_tests_smaller_under_mutation() {
        let engine = test_scale("varve-engine");
        assert!(engine.iter().any(|(v, _)| *v == "VARVE_CRASH_ROUNDS"));
        assert!(
            engine
                .iter()
                .all(|(_, n)| n.parse::<u32>().is_ok_and(|n| n > 0))
        );
        for krate in [
            "varve-wal",
            "varve-slotted",
            "varve-sidecar",
            "varve-arena",
            "varve-cli",
        ] {
            assert!(test_scale(krate).is_empty(), "{krate}");
        }
    }
}
