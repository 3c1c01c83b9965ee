//! The rows bench binaries record and `cargo xtask bench` turns into a table.
//!
//! A row compares one Varve figure with one baseline or peer figure measured in the same
//! run. Rows are appended, one per line, as tab-separated text to the file named by
//! `VARVE_BENCH_OUT` (set by `cargo xtask bench`); without it they are only printed.
//!
//! ```text
//! group \t workload \t unit \t better \t varve \t baseline_name \t baseline
//! ```
//!
//! `better` is `higher` (throughput) or `lower` (latency, bytes). A figure that does not
//! apply (a machine limit has no Varve figure) is written as `-`.

use std::fmt;
use std::io::Write as _;

/// Which direction of a figure is the good one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (operations per second, MB/s).
    Higher,
    /// Smaller is better (latency, bytes on disk, RSS).
    Lower,
}

/// One line of the benchmark table.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// The layer or topic (`wal`, `slotted`, `disk`...).
    pub group: String,
    /// What was measured, in words a reader understands at a glance.
    pub workload: String,
    /// Unit of both figures (`ops/s`, `µs`, `MB/s`, `MiB`).
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Varve's figure, if this row has one.
    pub varve: Option<f64>,
    /// Name of the baseline or peer (`fdatasync`, `rocksdb`, `Vec<u8>`).
    pub baseline_name: String,
    /// The baseline or peer figure, if this row has one.
    pub baseline: Option<f64>,
}

impl Row {
    /// Varve's figure relative to the baseline, oriented so that a value above 1 means
    /// Varve is better: `varve / baseline` when higher is better, `baseline / varve` when
    /// lower is better. `None` when either figure is missing or zero.
    pub fn ratio(&self) -> Option<f64> {
        let (v, b) = (self.varve?, self.baseline?);
        let r = match self.better {
            Better::Higher => v / b,
            Better::Lower => b / v,
        };
        r.is_finite().then_some(r)
    }

    /// Parses one line written by [`fmt::Display`]; `None` for a malformed line.
    pub fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.split('\t').collect();
        let [
            group,
            workload,
            unit,
            better,
            varve,
            baseline_name,
            baseline,
        ] = f.as_slice()
        else {
            return None;
        };
        let better = match *better {
            "higher" => Better::Higher,
            "lower" => Better::Lower,
            _ => return None,
        };
        let num = |s: &str| -> Option<Option<f64>> {
            if s == "-" {
                Some(None)
            } else {
                s.parse::<f64>().ok().map(Some)
            }
        };
        Some(Row {
            group: group.to_string(),
            workload: workload.to_string(),
            unit: unit.to_string(),
            better,
            varve: num(varve)?,
            baseline_name: baseline_name.to_string(),
            baseline: num(baseline)?,
        })
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clean = |s: &str| s.replace(['\t', '\n'], " ");
        let num = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v}"));
        let better = match self.better {
            Better::Higher => "higher",
            Better::Lower => "lower",
        };
        write!(
            f,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            clean(&self.group),
            clean(&self.workload),
            clean(&self.unit),
            better,
            num(self.varve),
            clean(&self.baseline_name),
            num(self.baseline)
        )
    }
}

/// Records a row: prints it and appends it to `VARVE_BENCH_OUT` when that is set.
///
/// # Panics
/// If the output file cannot be written: a bench run that silently loses its results
/// would report a table with holes.
#[allow(clippy::expect_used)] // bench support code: failing loudly is the right behaviour
pub fn record(row: Row) {
    let ratio = row
        .ratio()
        .map_or_else(|| "-".into(), |r| format!("{r:.2}x"));
    println!(
        "[{}] {}: varve {} / {} {} ({}) ratio {}",
        row.group,
        row.workload,
        row.varve.map_or_else(|| "-".into(), |v| format!("{v:.3}")),
        row.baseline_name,
        row.baseline
            .map_or_else(|| "-".into(), |v| format!("{v:.3}")),
        row.unit,
        ratio
    );
    if let Some(path) = std::env::var_os("VARVE_BENCH_OUT") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open VARVE_BENCH_OUT");
        writeln!(f, "{row}").expect("write VARVE_BENCH_OUT");
    }
}

/// Shorthand for a row comparing Varve with a baseline.
pub fn compare(
    group: &str,
    workload: &str,
    unit: &str,
    better: Better,
    varve: f64,
    baseline_name: &str,
    baseline: f64,
) {
    record(Row {
        group: group.into(),
        workload: workload.into(),
        unit: unit.into(),
        better,
        varve: Some(varve),
        baseline_name: baseline_name.into(),
        baseline: Some(baseline),
    });
}

/// Shorthand for a row with only a reference figure (a machine limit, a peer alone).
pub fn reference(group: &str, workload: &str, unit: &str, better: Better, name: &str, value: f64) {
    record(Row {
        group: group.into(),
        workload: workload.into(),
        unit: unit.into(),
        better,
        varve: None,
        baseline_name: name.into(),
        baseline: Some(value),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(better: Better, varve: Option<f64>, baseline: Option<f64>) -> Row {
        Row {
            group: "g".into(),
            workload: "w\twith tab".into(),
            unit: "ops/s".into(),
            better,
            varve,
            baseline_name: "base".into(),
            baseline,
        }
    }

    #[test]
    fn ratio_is_oriented_so_above_one_means_varve_is_better() {
        assert_eq!(
            row(Better::Higher, Some(300.0), Some(100.0)).ratio(),
            Some(3.0)
        );
        assert_eq!(
            row(Better::Lower, Some(50.0), Some(100.0)).ratio(),
            Some(2.0)
        );
        assert_eq!(row(Better::Lower, Some(0.0), Some(100.0)).ratio(), None);
        assert_eq!(row(Better::Higher, None, Some(100.0)).ratio(), None);
        assert_eq!(row(Better::Higher, Some(1.0), None).ratio(), None);
    }

    #[test]
    fn display_then_parse_round_trips() {
        for r in [
            row(Better::Higher, Some(1.5), Some(2.25)),
            row(Better::Lower, None, Some(7.0)),
            row(Better::Lower, Some(3.0), None),
        ] {
            let line = r.to_string();
            let back = Row::parse(&line).expect("parses");
            assert_eq!(back.workload, "w with tab");
            assert_eq!(
                (back.varve, back.baseline, back.better),
                (r.varve, r.baseline, r.better)
            );
        }
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert_eq!(Row::parse(""), None);
        assert_eq!(Row::parse("a\tb\tc\tsideways\t1\tx\t2"), None);
        assert_eq!(Row::parse("a\tb\tc\thigher\tnot-a-number\tx\t2"), None);
        assert_eq!(Row::parse("a\tb\tc\thigher\t1\tx"), None);
    }
}
