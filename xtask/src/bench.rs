//! `cargo xtask bench [--quick] [--filter NAME] [--peers] [--json] [--compare OLD.json]`:
//! run the benchmarks, make the report.
//!
//! Each bench target of `benches/` records rows (see `varve_benches::report`) into
//! `target/varve-bench/raw.tsv`. This task runs the selected targets in one `cargo bench`,
//! then prints the report and writes `target/varve-bench/report.md` and
//! `target/varve-bench/report.svg`. The report opens with the headline table (the engine
//! against VarveDB and heed, W1-W8, each row the median of alternating rounds with its
//! min-max), then one table per layer; every row names the target it is held to, if any,
//! and whether this run met it.
//!
//! - `--quick` shrinks every bench (`VARVE_BENCH_QUICK=1`), for a run of a few minutes.
//! - `--filter NAME` runs only the bench targets whose name contains `NAME`.
//! - `--peers` turns on the comparison peers that are slow to build (the `rocksdb`
//!   feature of the benches crate).
//! - `--json` also writes every row, with its unit, to `target/varve-bench/report.json`.
//! - `--compare OLD.json` compares this run with an earlier `--json` file: the ratio of
//!   each row's figures in the two runs, flagged where the move is larger than the noise
//!   the runs measured (see [`compare_runs`]); written to `target/varve-bench/compare.md`.
//!   With `--against NEW.json` nothing runs: the two files are compared.
//! - `--no-run` runs nothing and makes the report from the last run's `raw.tsv`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use serde_json::{Value, json};
use varve_benches::report::{Better, Row};

use crate::util::{cargo, run_cmd, step, workspace_root};

#[derive(Default)]
struct Options {
    quick: bool,
    filter: Option<String>,
    peers: bool,
    json: bool,
    compare: Option<PathBuf>,
    against: Option<PathBuf>,
    no_run: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--peers" => o.peers = true,
            "--json" => o.json = true,
            "--no-run" => o.no_run = true,
            "--filter" => {
                o.filter = Some(iter.next().ok_or("--filter needs a name")?.clone());
            }
            "--compare" => {
                o.compare = Some(iter.next().ok_or("--compare needs a file")?.into());
            }
            "--against" => {
                o.against = Some(iter.next().ok_or("--against needs a file")?.into());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if o.against.is_some() && o.compare.is_none() {
        return Err("--against needs --compare OLD.json".into());
    }
    Ok(o)
}

fn read_json(path: &Path) -> Result<Vec<Row>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    rows_from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Runs the benchmarks and writes the report.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let root = workspace_root();
    let out_dir = root.join("target/varve-bench");
    if let (Some(old), Some(new)) = (&opts.compare, &opts.against) {
        let table = compare_runs(&read_json(old)?, &read_json(new)?);
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
        write(&out_dir.join("compare.md"), &table)?;
        println!("{table}");
        return Ok(());
    }
    let manifest = std::fs::read_to_string(root.join("benches/Cargo.toml"))
        .map_err(|e| format!("reading benches/Cargo.toml: {e}"))?;
    let targets: Vec<String> = bench_targets(&manifest)
        .into_iter()
        .filter(|t| opts.filter.as_ref().is_none_or(|f| t.contains(f.as_str())))
        .collect();
    if targets.is_empty() {
        return Err("no bench target matches the filter".into());
    }
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let raw = out_dir.join("raw.tsv");
    if !opts.no_run {
        run_benches(&opts, &targets, &raw, &out_dir)?;
    }
    report(&opts, &raw, &out_dir)
}

fn run_benches(
    opts: &Options,
    targets: &[String],
    raw: &Path,
    out_dir: &Path,
) -> Result<(), String> {
    let _ = std::fs::remove_file(raw);
    step(&format!("bench {}", targets.join(", ")), || {
        let mut cmd = cargo();
        cmd.args(["bench", "--package", "varve-benches"]);
        for t in targets {
            cmd.args(["--bench", t]);
        }
        if opts.peers {
            cmd.args(["--features", "rocksdb"]);
            link_system_rocksdb(&mut cmd);
        }
        cmd.env("VARVE_BENCH_OUT", raw)
            .env("VARVE_BENCH_DIR", out_dir.join("scratch"));
        if opts.quick {
            cmd.env("VARVE_BENCH_QUICK", "1");
        }
        run_cmd("cargo bench", &mut cmd)
    })
}

fn report(opts: &Options, raw: &Path, out_dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(raw).unwrap_or_default();
    let rows: Vec<Row> = text.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err("the benches recorded no rows".into());
    }
    let title = if opts.quick {
        "Varve benchmarks (quick run)"
    } else {
        "Varve benchmarks"
    };
    let md = report_markdown(&rows, title);
    write(&out_dir.join("report.md"), &md)?;
    write(&out_dir.join("report.svg"), &svg_chart(&rows, title)?)?;
    println!("\n{md}");
    println!("written: {0}/report.md, {0}/report.svg", out_dir.display());
    if opts.json {
        write(&out_dir.join("report.json"), &rows_to_json(&rows, title))?;
        println!("written: {}/report.json", out_dir.display());
    }
    if let Some(old) = &opts.compare {
        let table = compare_runs(&read_json(old)?, &rows);
        write(&out_dir.join("compare.md"), &table)?;
        println!("\n{table}\nwritten: {}/compare.md", out_dir.display());
    }
    Ok(())
}

/// Points the `rocksdb` peer at a system RocksDB (Debian's `librocksdb-dev`) when one is
/// installed and the caller has not chosen otherwise: building the bundled C++ sources
/// takes hours on a 2-core machine. Without one, `librocksdb-sys` builds from source.
fn link_system_rocksdb(cmd: &mut std::process::Command) {
    if std::env::var_os("ROCKSDB_LIB_DIR").is_some() {
        return;
    }
    let candidates = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ];
    if let Some(dir) = candidates
        .iter()
        .find(|d| Path::new(d).join("librocksdb.so").exists())
    {
        println!("linking the system RocksDB in {dir}");
        cmd.env("ROCKSDB_LIB_DIR", dir)
            .env("ROCKSDB_INCLUDE_DIR", "/usr/include");
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The `name = "..."` of every `[[bench]]` section of the benches manifest.
fn bench_targets(manifest: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut in_bench = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bench = line == "[[bench]]";
            continue;
        }
        if in_bench
            && let Some(value) = line.strip_prefix("name").map(str::trim)
            && let Some(v) = value.strip_prefix('=')
        {
            targets.push(v.trim().trim_matches('"').to_string());
        }
    }
    targets
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn fmt_ratio(row: &Row) -> String {
    row.ratio()
        .map_or_else(|| "-".into(), |r| format!("{r:.2}x"))
}

fn fmt_range(v: Option<f64>, r: Option<(f64, f64)>) -> String {
    match r {
        Some((lo, hi)) => format!(
            "{} ({}-{})",
            fmt_num(v),
            fmt_num(Some(lo)),
            fmt_num(Some(hi))
        ),
        None => fmt_num(v),
    }
}

fn fmt_target(row: &Row) -> String {
    match (row.target, row.met()) {
        (None, _) => "-".into(),
        (Some(t), Some(true)) => format!(">= {t}x: met"),
        (Some(t), Some(false)) => format!(">= {t}x: **missed**"),
        (Some(t), None) => format!(">= {t}x: no figure"),
    }
}

/// The rows as one Markdown table, in the order they were recorded; `with_group` adds the
/// group column.
fn markdown_table(rows: &[&Row]) -> String {
    let mut s = String::from(
        "| workload | unit | Varve | baseline / peer | figure | ratio | target |\n|---|---|---:|---|---:|---:|---|\n",
    );
    for r in rows {
        let rounds = if r.rounds > 0 {
            format!(" ({} rounds)", r.rounds)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {}{rounds} | {} | {} | {} | {} | {} | {} |",
            r.workload,
            r.unit,
            fmt_range(r.varve, r.varve_range),
            r.baseline_name,
            fmt_range(r.baseline, r.baseline_range),
            fmt_ratio(r),
            fmt_target(r)
        );
    }
    s
}

/// The groups in the order their first row was recorded.
fn groups(rows: &[Row]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in rows {
        if !out.contains(&r.group.as_str()) {
            out.push(&r.group);
        }
    }
    out
}

/// The whole report: the headline table (rows marked `headline`), then one table per
/// group with the group's other rows; figures with a range are medians (min-max).
fn report_markdown(rows: &[Row], title: &str) -> String {
    let mut s = format!(
        "# {title}\n\nEvery ratio compares figures measured in the same run; above 1x means \
         Varve is better. A figure with a range is the median of alternating rounds \
         (min-max). `target` is the ratio a row is held to and whether this run met it.\n"
    );
    let head: Vec<&Row> = rows.iter().filter(|r| r.headline).collect();
    if !head.is_empty() {
        let met = head.iter().filter(|r| r.met() == Some(true)).count();
        let targeted = head.iter().filter(|r| r.target.is_some()).count();
        let _ = write!(
            s,
            "\n## Headline: the engine against VarveDB and heed (W1-W8)\n\n{met} of {targeted} targets met.\n\n{}",
            markdown_table(&head)
        );
    }
    for g in groups(rows) {
        let rest: Vec<&Row> = rows
            .iter()
            .filter(|r| r.group == g && !r.headline)
            .collect();
        if !rest.is_empty() {
            let _ = write!(s, "\n## {g}\n\n{}", markdown_table(&rest));
        }
    }
    s
}

/// Every row as JSON, with its unit, its ratio and whether it met its target.
fn rows_to_json(rows: &[Row], title: &str) -> String {
    let range = |r: Option<(f64, f64)>| r.map(|(lo, hi)| json!([lo, hi]));
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "group": r.group,
                "workload": r.workload,
                "unit": r.unit,
                "better": match r.better { Better::Higher => "higher", Better::Lower => "lower" },
                "varve": r.varve,
                "varve_range": range(r.varve_range),
                "baseline_name": r.baseline_name,
                "baseline": r.baseline,
                "baseline_range": range(r.baseline_range),
                "rounds": r.rounds,
                "target": r.target,
                "headline": r.headline,
                "ratio": r.ratio(),
                "met": r.met(),
            })
        })
        .collect();
    let doc = json!({ "title": title, "rows": list });
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}

/// Reads the rows of a file written by [`rows_to_json`] (the derived `ratio` and `met`
/// fields are ignored: they are recomputed).
fn rows_from_json(text: &str) -> Result<Vec<Row>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let list = doc["rows"].as_array().ok_or("no \"rows\" array")?;
    let mut rows = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let text = |k: &str| -> Result<String, String> {
            v[k].as_str()
                .map(str::to_string)
                .ok_or(format!("row {i}: \"{k}\" is not a string"))
        };
        let num = |k: &str| -> Result<Option<f64>, String> {
            match &v[k] {
                Value::Null => Ok(None),
                x => x
                    .as_f64()
                    .map(Some)
                    .ok_or(format!("row {i}: \"{k}\" is not a number")),
            }
        };
        let range = |k: &str| -> Result<Option<(f64, f64)>, String> {
            match &v[k] {
                Value::Null => Ok(None),
                Value::Array(a) if a.len() == 2 => match (a[0].as_f64(), a[1].as_f64()) {
                    (Some(lo), Some(hi)) => Ok(Some((lo, hi))),
                    _ => Err(format!("row {i}: \"{k}\" is not two numbers")),
                },
                _ => Err(format!("row {i}: \"{k}\" is not a [min, max] pair")),
            }
        };
        rows.push(Row {
            group: text("group")?,
            workload: text("workload")?,
            unit: text("unit")?,
            better: match text("better")?.as_str() {
                "higher" => Better::Higher,
                "lower" => Better::Lower,
                other => return Err(format!("row {i}: better is {other:?}")),
            },
            varve: num("varve")?,
            varve_range: range("varve_range")?,
            baseline_name: text("baseline_name")?,
            baseline: num("baseline")?,
            baseline_range: range("baseline_range")?,
            rounds: u32::try_from(v["rounds"].as_u64().unwrap_or(0)).unwrap_or(u32::MAX),
            target: num("target")?,
            headline: v["headline"].as_bool().unwrap_or(false),
        });
    }
    Ok(rows)
}

/// How one row moved between two runs.
#[derive(Debug, PartialEq)]
struct Move {
    /// New over old, oriented so above 1 means better: of the ratio against the peer when
    /// both runs have one, else of the one figure the row has.
    change: f64,
    /// The relative noise the move is judged against (0.1 = 10%).
    noise: Option<f64>,
    /// True when the move is beyond the noise.
    flagged: bool,
}

/// The figure of a row compared across runs: its ratio, else its only figure oriented so
/// that higher is better.
fn comparable(r: &Row) -> Option<f64> {
    if let Some(x) = r.ratio() {
        return Some(x);
    }
    let v = r.varve.or(r.baseline)?;
    match r.better {
        Better::Higher => Some(v),
        Better::Lower => (v != 0.0).then(|| 1.0 / v),
    }
    .filter(|x| x.is_finite() && *x > 0.0)
}

/// The move of one row; `fallback_noise` applies when neither run measured the row's own
/// spread.
fn row_move(old: &Row, new: &Row, fallback_noise: Option<f64>) -> Option<Move> {
    let change = comparable(new)? / comparable(old)?;
    let noise = match (old.spread(), new.spread()) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b).or(fallback_noise),
    };
    let flagged = noise.is_some_and(|n| change.ln().abs() > (1.0 + n).ln());
    Some(Move {
        change,
        noise,
        flagged,
    })
}

/// The median spread of the rows of both runs that measured one: the run-to-run noise a
/// row without rounds of its own is judged against.
fn run_noise(old: &[Row], new: &[Row]) -> Option<f64> {
    let spreads: Vec<f64> = old.iter().chain(new).filter_map(Row::spread).collect();
    varve_benches::report::median_range(&spreads).map(|(m, _)| m)
}

/// What the comparison shows of a row: its ratio, else its one figure.
fn shown(r: &Row) -> String {
    r.ratio()
        .map_or_else(|| fmt_num(r.varve.or(r.baseline)), |x| format!("{x:.2}x"))
}

fn key(r: &Row) -> (&str, &str, &str, &str) {
    (&r.group, &r.workload, &r.baseline_name, &r.unit)
}

/// A Markdown table of every row present in both runs: the compared figure in each run,
/// their ratio (new / old, above 1 = better now), the noise it is judged against and a
/// flag when the move exceeds it. A row's noise is the widest min-max spread of its
/// rounds in either run; a row without rounds is judged against the median spread of all
/// rows that have them. Rows found in only one run are counted.
fn compare_runs(old: &[Row], new: &[Row]) -> String {
    let fallback = run_noise(old, new);
    let mut s = format!(
        "# Comparison of two bench runs\n\nchange = new / old of each row's ratio against its \
         peer (of its own figure where it has no peer), above 1x = better now. Noise: the \
         row's min-max spread over its rounds, else the median spread of the runs ({}).\n\n\
         | group | workload | unit | old | new | change | noise | |\n|---|---|---|---:|---:|---:|---:|---|\n",
        fallback.map_or_else(|| "none measured".into(), |n| format!("{:.0}%", n * 100.0))
    );
    let (mut flagged, mut both) = (0, 0);
    for n in new {
        let Some(o) = old.iter().find(|o| key(o) == key(n)) else {
            continue;
        };
        both += 1;
        let Some(m) = row_move(o, n, fallback) else {
            continue;
        };
        if m.flagged {
            flagged += 1;
        }
        let mark = match (m.flagged, m.change >= 1.0) {
            (true, true) => "**better**",
            (true, false) => "**worse**",
            _ => "",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {:.2}x | {} | {mark} |",
            n.group,
            n.workload,
            if n.ratio().is_some() {
                "ratio"
            } else {
                n.unit.as_str()
            },
            shown(o),
            shown(n),
            m.change,
            m.noise
                .map_or_else(|| "-".into(), |x| format!("±{:.0}%", x * 100.0)),
        );
    }
    let _ = writeln!(
        s,
        "\n{both} rows in both runs, {flagged} moved beyond the noise; {} only in the old run, {} only in the new.",
        old.len()
            - old
                .iter()
                .filter(|o| new.iter().any(|n| key(n) == key(o)))
                .count(),
        new.len() - both
    );
    s
}

/// Most bars in one chart panel.
const MAX_BARS: usize = 25;

/// The chart's panels, in order: the headline rows first, then each group's other rows,
/// every panel at most [`MAX_BARS`] bars (a longer group is split into numbered panels).
/// Only rows with a ratio get a bar.
fn chart_panels(rows: &[Row]) -> Vec<(String, Vec<&Row>)> {
    let mut sets: Vec<(String, Vec<&Row>)> = vec![(
        "Headline: engine W1-W8".into(),
        rows.iter().filter(|r| r.headline).collect(),
    )];
    for g in groups(rows) {
        sets.push((
            g.to_string(),
            rows.iter()
                .filter(|r| r.group == g && !r.headline)
                .collect(),
        ));
    }
    let mut panels = Vec::new();
    for (title, set) in sets {
        let bars: Vec<&Row> = set.into_iter().filter(|r| r.ratio().is_some()).collect();
        let n = bars.len().div_ceil(MAX_BARS);
        for (i, chunk) in bars.chunks(MAX_BARS).enumerate() {
            let t = if n > 1 {
                format!("{title} ({}/{n})", i + 1)
            } else {
                title.clone()
            };
            panels.push((t, chunk.to_vec()));
        }
    }
    panels
}

/// Shortens a label to `max` characters.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(max - 1).collect();
        c.push('…');
        c
    }
}

fn chart_err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

/// Bar charts of the ratios, drawn with plotters' SVG backend: one panel per group
/// (headline first, at most 25 bars each, two panels a line), each on a log scale around
/// 1x with its own span; a bar is green where Varve is better, red where it is worse, and
/// a black tick marks a row's target. Rows without a ratio (machine limits, a peer alone)
/// are listed as text at the end.
fn svg_chart(rows: &[Row], title: &str) -> Result<String, String> {
    const W: u32 = 1800;
    const BAR: u32 = 18;
    const NOTE: u32 = 15;
    let panels = chart_panels(rows);
    let notes: Vec<&Row> = rows.iter().filter(|r| r.ratio().is_none()).collect();
    let panel_h = |bars: usize| 70 + BAR * u32::try_from(bars).unwrap_or(u32::MAX / 64);
    let lines: Vec<&[(String, Vec<&Row>)]> = panels.chunks(2).collect();
    let line_h: Vec<u32> = lines
        .iter()
        .map(|l| l.iter().map(|(_, b)| panel_h(b.len())).max().unwrap_or(0))
        .collect();
    let notes_h = NOTE * u32::try_from(notes.len()).unwrap_or(u32::MAX / 64);
    let height = 40 + line_h.iter().sum::<u32>() + notes_h + 20;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (W, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let mut rest = root
            .titled(
                &format!(
                    "{title}: ratio against the baseline measured in the same run (log scale, right of 1x = Varve better, | = target)"
                ),
                ("sans-serif", 16),
            )
            .map_err(chart_err)?;
        for (line, h) in lines.iter().zip(&line_h) {
            let (area, below) = rest.split_vertically(*h);
            rest = below;
            let (left, right) = area.split_horizontally(W / 2);
            for ((name, bars), cell) in line.iter().zip([left, right]) {
                draw_panel(&cell, name, bars)?;
            }
        }
        for (i, r) in notes.iter().enumerate() {
            let who = if r.varve.is_some() {
                "Varve"
            } else {
                r.baseline_name.as_str()
            };
            let text = format!(
                "[{}] {}: {} {} ({who})",
                r.group,
                r.workload,
                fmt_num(r.varve.or(r.baseline)),
                r.unit
            );
            let y = 20 + i32::try_from(i).unwrap_or(i32::MAX / 32) * NOTE as i32;
            rest.draw(&Text::new(text, (10, y), ("sans-serif", 11)))
                .map_err(chart_err)?;
        }
        rest.present().map_err(chart_err)?;
    }
    Ok(svg)
}

/// One panel: a horizontal bar per row, the first row at the top.
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    name: &str,
    bars: &[&Row],
) -> Result<(), String> {
    let n = i32::try_from(bars.len()).map_err(chart_err)?;
    // The panel's span: its largest |log10| of a ratio or target, never finer than 10x.
    let max_log = bars
        .iter()
        .flat_map(|r| [r.ratio(), r.target])
        .flatten()
        .map(|x| x.log10().abs())
        .fold(1.0_f64, f64::max)
        * 1.15;
    let (lo, hi) = (10f64.powf(-max_log), 10f64.powf(max_log));
    // The panel's title names the group, so a label is the workload alone.
    let labels: Vec<String> = bars.iter().map(|r| clip(&r.workload, 90)).collect();
    // Row i is drawn in band n - 1 - i, so the first row is at the top.
    let band = |i: usize| n - 1 - i32::try_from(i).unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .caption(name, ("sans-serif", 14))
        .margin(6)
        .x_label_area_size(22)
        .y_label_area_size(440)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())
        .map_err(chart_err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(b) => usize::try_from(n - 1 - *b)
                .ok()
                .and_then(|i| labels.get(i))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format!("{x:.2}x"))
        .label_style(("sans-serif", 11))
        .draw()
        .map_err(chart_err)?;
    let green = RGBColor(46, 125, 50);
    let red = RGBColor(198, 40, 40);
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, r)| {
            let ratio = r.ratio()?;
            let colour = if ratio >= 1.0 { green } else { red };
            Some(Rectangle::new(
                [
                    (1.0, SegmentValue::Exact(band(i))),
                    (ratio, SegmentValue::Exact(band(i) + 1)),
                ],
                colour.filled(),
            ))
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, r)| {
            let ratio = r.ratio()?;
            Some(Text::new(
                format!("{ratio:.2}x"),
                (ratio.max(1.0) * 1.02, SegmentValue::CenterOf(band(i))),
                ("sans-serif", 11),
            ))
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(bars.iter().enumerate().filter_map(|(i, r)| {
            let t = r.target?;
            Some(PathElement::new(
                vec![
                    (t, SegmentValue::Exact(band(i))),
                    (t, SegmentValue::Exact(band(i) + 1)),
                ],
                BLACK.stroke_width(2),
            ))
        }))
        .map_err(chart_err)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            BLACK.stroke_width(1),
        )))
        .map_err(chart_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use varve_benches::report::Better;

    fn row(workload: &str, varve: Option<f64>, baseline: Option<f64>) -> Row {
        Row {
            group: "g".into(),
            workload: workload.into(),
            unit: "ops/s".into(),
            better: Better::Higher,
            varve,
            baseline_name: "peer".into(),
            baseline,
            ..Row::default()
        }
    }

    fn ranged(workload: &str, varve: f64, baseline: f64, spread: f64) -> Row {
        Row {
            varve_range: Some((varve, varve * (1.0 + spread))),
            baseline_range: Some((baseline, baseline)),
            rounds: 3,
            ..row(workload, Some(varve), Some(baseline))
        }
    }

    #[test]
    fn bench_targets_are_read_from_bench_sections_only() {
        let manifest = "[package]\nname = \"varve-benches\"\n\n[[bench]]\nname = \"disk\"\nharness = false\n\n[[bench]]\nharness = false\nname = \"wal\"\n\n[lints]\n";
        assert_eq!(bench_targets(manifest), ["disk", "wal"]);
    }

    #[test]
    fn rows_parse_from_the_raw_file_and_skip_junk() {
        let good = Row {
            target: Some(2.0),
            headline: true,
            ..ranged("put", 2000.0, 1000.0, 0.1)
        };
        let text = format!("{good}\nnot a row\n{}\n", row("x", None, Some(1.0)));
        let rows: Vec<Row> = text.lines().filter_map(Row::parse).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], good);
    }

    #[test]
    fn table_shows_figures_ranges_ratio_and_target() {
        let met = Row {
            target: Some(2.0),
            ..ranged("put", 2000.0, 1000.0, 0.5)
        };
        let missed = Row {
            target: Some(2.5),
            ..row("get", Some(2000.0), Some(1000.0))
        };
        let t = markdown_table(&[&met, &missed, &row("limit", None, Some(5.5))]);
        assert!(
            t.contains("| put (3 rounds) | ops/s | 2000 (2000-3000) | peer | 1000 (1000-1000) | 2.00x | >= 2x: met |"),
            "{t}"
        );
        assert!(
            t.contains("| get | ops/s | 2000 | peer | 1000 | 2.00x | >= 2.5x: **missed** |"),
            "{t}"
        );
        assert!(
            t.contains("| limit | ops/s | - | peer | 5.500 | - | - |"),
            "{t}"
        );
    }

    #[test]
    fn report_opens_with_the_headline_then_one_table_per_group() {
        let mut a = row("wal row", Some(1.0), Some(1.0));
        a.group = "wal".into();
        let head = Row {
            group: "engine".into(),
            headline: true,
            target: Some(2.0),
            ..row("W1", Some(3.0), Some(1.0))
        };
        let mut e = row("engine detail", Some(1.0), Some(2.0));
        e.group = "engine".into();
        let md = report_markdown(&[a, head, e], "t");
        let h = md.find("## Headline").expect("headline");
        let w = md.find("## wal").expect("wal table");
        let g = md.find("## engine").expect("engine table");
        assert!(h < w && w < g, "{md}");
        assert!(md.contains("1 of 1 targets met"), "{md}");
        assert_eq!(
            md.matches("| W1 |").count(),
            1,
            "headline rows are not repeated"
        );
        assert!(md[g..].contains("engine detail"));
    }

    #[test]
    fn json_round_trips_every_field() {
        let rows = vec![
            Row {
                target: Some(2.0),
                headline: true,
                ..ranged("a \"quoted\" row", 3.0, 2.0, 0.2)
            },
            Row {
                better: Better::Lower,
                unit: "µs".into(),
                ..row("latency", Some(5.0), None)
            },
            row("reference", None, Some(7.25)),
        ];
        let text = rows_to_json(&rows, "t");
        assert!(text.contains("\"unit\": \"µs\""), "{text}");
        assert!(text.contains("\"met\": false"), "{text}");
        assert_eq!(rows_from_json(&text).expect("parses"), rows);
        assert!(rows_from_json("{}").is_err());
        assert!(rows_from_json(r#"{"rows":[{"group":1}]}"#).is_err());
        let bad_range = text.replacen("\"varve_range\": [", "\"varve_range\": [1, ", 1);
        assert!(rows_from_json(&bad_range).is_err());
    }

    #[test]
    fn compare_gives_ratios_and_flags_moves_beyond_the_noise() {
        // Ratio 2x -> 3x is a 1.5x move; the row's own spread (10%) does not cover it.
        let old = ranged("w", 200.0, 100.0, 0.1);
        let new = ranged("w", 300.0, 100.0, 0.1);
        let m = row_move(&old, &new, None).expect("move");
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!((m.change - 1.5).abs() < 1e-9);
        assert!(close(m.noise, 0.1), "{m:?}");
        assert!(m.flagged);
        // A 5% move inside a 10% spread is not flagged.
        let small = ranged("w", 210.0, 100.0, 0.1);
        assert!(!row_move(&old, &small, None).expect("move").flagged);
        // A wider spread in either run widens the noise.
        let noisy = ranged("w", 300.0, 100.0, 0.6);
        let m = row_move(&old, &noisy, None).expect("move");
        assert!(close(m.noise, 0.6) && !m.flagged, "{m:?}");
        // Lower-is-better figure without a peer: 10 µs -> 5 µs is 2x better.
        let lat = |v| Row {
            better: Better::Lower,
            ..row("lat", Some(v), None)
        };
        let m = row_move(&lat(10.0), &lat(5.0), Some(0.2)).expect("move");
        assert!((m.change - 2.0).abs() < 1e-9);
        assert!(m.flagged, "judged against the run's noise");
        assert!(!row_move(&lat(10.0), &lat(5.0), None).expect("move").flagged);
        assert_eq!(row_move(&row("x", None, None), &lat(1.0), None), None);
    }

    #[test]
    fn compare_table_lists_common_rows_and_counts_the_rest() {
        let old = vec![
            ranged("w", 200.0, 100.0, 0.1),
            row("gone", Some(1.0), Some(1.0)),
        ];
        let new = vec![
            ranged("w", 100.0, 100.0, 0.1),
            row("fresh", Some(1.0), Some(1.0)),
        ];
        let t = compare_runs(&old, &new);
        assert!(
            t.contains("| g | w | ratio | 2.00x | 1.00x | 0.50x | ±10% | **worse** |"),
            "{t}"
        );
        assert!(t.contains("1 rows in both runs, 1 moved beyond the noise; 1 only in the old run, 1 only in the new."), "{t}");
        assert_eq!(
            run_noise(&old, &new).map(|n| (n * 100.0).round()),
            Some(10.0)
        );
    }

    #[test]
    fn chart_has_one_panel_per_group_headline_first_and_at_most_25_bars_each() {
        let mut rows: Vec<Row> = (0..30)
            .map(|i| {
                let mut r = row(&format!("w{i}"), Some(1.0 + f64::from(i)), Some(2.0));
                r.group = "wal".into();
                r
            })
            .collect();
        rows.push(Row {
            group: "engine".into(),
            headline: true,
            ..row("fast <put>", Some(300.0), Some(100.0))
        });
        rows.push(row("limit", None, Some(1.0)));
        let panels = chart_panels(&rows);
        assert_eq!(panels[0].0, "Headline: engine W1-W8");
        assert!(
            panels
                .iter()
                .all(|(_, bars)| bars.len() <= 25 && !bars.is_empty())
        );
        let wal_bars: usize = panels
            .iter()
            .filter(|(t, _)| t.starts_with("wal"))
            .map(|(_, b)| b.len())
            .sum();
        assert_eq!(wal_bars, 30);
        let svg = svg_chart(&rows, "t").expect("chart");
        assert!(svg.contains("fast &lt;put&gt;"), "labels are escaped");
        assert!(svg.contains("[g] limit: 1.000 ops/s (peer)"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn args_parse() {
        let o = parse_args(&[
            "--quick".into(),
            "--filter".into(),
            "wal".into(),
            "--json".into(),
        ])
        .unwrap();
        assert!(o.quick && !o.peers && o.json);
        assert_eq!(o.filter.as_deref(), Some("wal"));
        let o = parse_args(&[
            "--compare".into(),
            "a.json".into(),
            "--against".into(),
            "b.json".into(),
        ])
        .unwrap();
        assert_eq!(o.compare.as_deref(), Some(Path::new("a.json")));
        assert_eq!(o.against.as_deref(), Some(Path::new("b.json")));
        assert!(parse_args(&["--against".into(), "b.json".into()]).is_err());
        assert!(parse_args(&["--filter".into()]).is_err());
        assert!(parse_args(&["--nope".into()]).is_err());
    }
}
