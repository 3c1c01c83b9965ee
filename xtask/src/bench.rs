//! `cargo xtask bench [--quick] [--filter NAME] [--peers]`: run the benchmarks, make a table.
//!
//! Each bench target of `benches/` records rows (see `varve_benches::report`) into
//! `target/varve-bench/raw.tsv`. This task runs the selected targets in one `cargo bench`,
//! then prints the table and writes `target/varve-bench/report.md` and
//! `target/varve-bench/report.svg` (a bar per comparison, log scale, 1x in the middle).
//!
//! - `--quick` shrinks every bench (`VARVE_BENCH_QUICK=1`), for a run of a few minutes.
//! - `--filter NAME` runs only the bench targets whose name contains `NAME`.
//! - `--peers` turns on the comparison peers that are slow to build (the `rocksdb`
//!   feature of the benches crate).

use std::fmt::Write as _;
use std::path::Path;

use varve_benches::report::Row;

use crate::util::{cargo, run_cmd, step, workspace_root};

struct Options {
    quick: bool,
    filter: Option<String>,
    peers: bool,
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        filter: None,
        peers: false,
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--quick" => o.quick = true,
            "--peers" => o.peers = true,
            "--filter" => {
                o.filter = Some(iter.next().ok_or("--filter needs a name")?.clone());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// Runs the benchmarks and writes the report.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = parse_args(args)?;
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("benches/Cargo.toml"))
        .map_err(|e| format!("reading benches/Cargo.toml: {e}"))?;
    let targets: Vec<String> = bench_targets(&manifest)
        .into_iter()
        .filter(|t| opts.filter.as_ref().is_none_or(|f| t.contains(f.as_str())))
        .collect();
    if targets.is_empty() {
        return Err("no bench target matches the filter".into());
    }
    let out_dir = root.join("target/varve-bench");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let raw = out_dir.join("raw.tsv");
    let _ = std::fs::remove_file(&raw);

    step(&format!("bench {}", targets.join(", ")), || {
        let mut cmd = cargo();
        cmd.args(["bench", "--package", "varve-benches"]);
        for t in &targets {
            cmd.args(["--bench", t]);
        }
        if opts.peers {
            cmd.args(["--features", "rocksdb"]);
            link_system_rocksdb(&mut cmd);
        }
        cmd.env("VARVE_BENCH_OUT", &raw)
            .env("VARVE_BENCH_DIR", out_dir.join("scratch"));
        if opts.quick {
            cmd.env("VARVE_BENCH_QUICK", "1");
        }
        run_cmd("cargo bench", &mut cmd)
    })?;

    let text = std::fs::read_to_string(&raw).unwrap_or_default();
    let rows: Vec<Row> = text.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err("the benches recorded no rows".into());
    }
    let table = markdown_table(&rows);
    let title = if opts.quick {
        "Varve benchmarks (quick run)"
    } else {
        "Varve benchmarks"
    };
    let md = format!(
        "# {title}\n\nEvery ratio compares figures measured in the same run; above 1x means \
         Varve is better.\n\n{table}"
    );
    write(&out_dir.join("report.md"), &md)?;
    write(&out_dir.join("report.svg"), &svg_chart(&rows, title))?;
    println!("\n{table}");
    println!("written: {0}/report.md, {0}/report.svg", out_dir.display());
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

/// The rows as a Markdown table, in the order they were recorded.
fn markdown_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| group | workload | unit | Varve | baseline / peer | figure | ratio |\n|---|---|---|---:|---|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.group,
            r.workload,
            r.unit,
            fmt_num(r.varve),
            r.baseline_name,
            fmt_num(r.baseline),
            fmt_ratio(r)
        );
    }
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of the ratios on a log scale centred on 1x; rows without a
/// ratio (machine limits, a peer alone) are listed as text under the bars.
fn svg_chart(rows: &[Row], title: &str) -> String {
    const LABEL_W: f64 = 520.0;
    const HALF: f64 = 260.0;
    const BAR_H: f64 = 20.0;
    let bars: Vec<(&Row, f64)> = rows
        .iter()
        .filter_map(|r| r.ratio().map(|x| (r, x)))
        .collect();
    let notes: Vec<&Row> = rows.iter().filter(|r| r.ratio().is_none()).collect();
    // Scale so the largest |log10 ratio| fills half the plot, but never finer than 10x.
    let max_log = bars
        .iter()
        .map(|(_, x)| x.log10().abs())
        .fold(1.0_f64, f64::max);
    let centre = LABEL_W + HALF;
    let height = 60.0 + (bars.len() + notes.len() + 2) as f64 * (BAR_H + 6.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = LABEL_W + 2.0 * HALF + 80.0
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16">{} (ratio, log scale; right of 1x = Varve better)</text>"#,
        xml_escape(title)
    );
    let mut y = 40.0;
    for (row, ratio) in &bars {
        let len = ratio.log10() / max_log * HALF;
        let (x, w, colour) = if len >= 0.0 {
            (centre, len, "#2e7d32")
        } else {
            (centre + len, -len, "#c62828")
        };
        let label = format!("[{}] {}", row.group, row.workload);
        let _ = writeln!(
            s,
            r#"<text x="{lx}" y="{ty}" text-anchor="end">{}</text><rect x="{x:.1}" y="{y}" width="{w:.1}" height="{BAR_H}" fill="{colour}"/><text x="{vx:.1}" y="{ty}">{:.2}x</text>"#,
            xml_escape(&label),
            ratio,
            lx = LABEL_W - 8.0,
            ty = y + 15.0,
            vx = centre + len.max(0.0) + 4.0,
        );
        y += BAR_H + 6.0;
    }
    let _ = writeln!(
        s,
        r##"<line x1="{centre}" y1="36" x2="{centre}" y2="{y}" stroke="#333"/><text x="{centre}" y="{ly}" text-anchor="middle">1x</text>"##,
        ly = y + 14.0
    );
    y += 30.0;
    for row in notes {
        let value = fmt_num(row.varve.or(row.baseline));
        let who = if row.varve.is_some() {
            "Varve"
        } else {
            row.baseline_name.as_str()
        };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y}">{}</text>"#,
            xml_escape(&format!(
                "[{}] {}: {value} {} ({who})",
                row.group, row.workload, row.unit
            ))
        );
        y += BAR_H;
    }
    s.push_str("</svg>\n");
    s
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
        }
    }

    #[test]
    fn bench_targets_are_read_from_bench_sections_only() {
        let manifest = "[package]\nname = \"varve-benches\"\n\n[[bench]]\nname = \"disk\"\nharness = false\n\n[[bench]]\nharness = false\nname = \"wal\"\n\n[lints]\n";
        assert_eq!(bench_targets(manifest), ["disk", "wal"]);
    }

    #[test]
    fn table_shows_figures_and_ratio() {
        let t = markdown_table(&[
            row("put", Some(2000.0), Some(1000.0)),
            row("limit", None, Some(5.5)),
        ]);
        assert!(
            t.contains("| g | put | ops/s | 2000 | peer | 1000 | 2.00x |"),
            "{t}"
        );
        assert!(
            t.contains("| g | limit | ops/s | - | peer | 5.500 | - |"),
            "{t}"
        );
    }

    #[test]
    fn chart_draws_one_bar_per_ratio_and_lists_the_rest() {
        let svg = svg_chart(
            &[
                row("fast <put>", Some(300.0), Some(100.0)),
                row("slow", Some(1.0), Some(4.0)),
                row("limit", None, Some(1.0)),
            ],
            "t",
        );
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("#2e7d32") && svg.contains("#c62828"));
        assert!(svg.contains("fast &lt;put&gt;"));
        assert!(svg.contains("[g] limit: 1.000 ops/s (peer)"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn args_parse() {
        let o = parse_args(&["--quick".into(), "--filter".into(), "wal".into()]).unwrap();
        assert!(o.quick && !o.peers);
        assert_eq!(o.filter.as_deref(), Some("wal"));
        assert!(parse_args(&["--filter".into()]).is_err());
        assert!(parse_args(&["--nope".into()]).is_err());
    }
}
