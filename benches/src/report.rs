//! The rows bench binaries record and `cargo xtask bench` turns into a table.
//!
//! A row compares one Varve figure with one baseline or peer figure measured in the same
//! run. Rows are appended, one per line, as tab-separated text to the file named by
//! `VARVE_BENCH_OUT` (set by `cargo xtask bench`); without it they are only printed.
//!
//! ```text
//! group \t workload \t unit \t better \t varve \t baseline_name \t baseline
//!   \t target \t headline \t varve_min \t varve_max \t baseline_min \t baseline_max \t rounds
//! ```
//!
//! `better` is `higher` (throughput) or `lower` (latency, bytes). A figure that does not
//! apply (a machine limit has no Varve figure) is written as `-`. `target` is the ratio the
//! row is held to (`2` for "Varve at least 2x the peer"), `headline` is `headline` for the
//! rows of the report's opening table, and the min/max columns are the range over `rounds`
//! alternating rounds whose median the figures are. Lines of the first seven columns only
//! (older runs) still parse.

use std::fmt;
use std::io::Write as _;

/// Which direction of a figure is the good one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Better {
    /// Larger is better (operations per second, MB/s).
    #[default]
    Higher,
    /// Smaller is better (latency, bytes on disk, RSS).
    Lower,
}

/// One line of the benchmark table.
#[derive(Clone, Debug, Default, PartialEq)]
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
    /// The ratio ([`Row::ratio`]) this row is held to, if it has a target.
    pub target: Option<f64>,
    /// Whether the row belongs to the report's headline table.
    pub headline: bool,
    /// Lowest and highest Varve figure over the rounds, when the figure is a median.
    pub varve_range: Option<(f64, f64)>,
    /// Lowest and highest baseline figure over the rounds, when the figure is a median.
    pub baseline_range: Option<(f64, f64)>,
    /// Alternating rounds behind the figures (0 when not said).
    pub rounds: u32,
}

/// The median of `values` and their (min, max); `None` for no values.
pub fn median_range(values: &[f64]) -> Option<(f64, (f64, f64))> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[m - 1] + v[m]) / 2.0
    } else {
        v[m]
    };
    Some((median, (v[0], v[v.len() - 1])))
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

    /// Whether the row met its target: `None` without a target or a ratio.
    pub fn met(&self) -> Option<bool> {
        Some(self.ratio()? >= self.target?)
    }

    /// The widest relative spread of this row's ranges: `max / min - 1` of the Varve or the
    /// baseline range, whichever is wider; `None` without a range.
    pub fn spread(&self) -> Option<f64> {
        let rel = |r: Option<(f64, f64)>| {
            r.and_then(|(lo, hi)| (lo > 0.0 && hi >= lo).then(|| hi / lo - 1.0))
        };
        match (rel(self.varve_range), rel(self.baseline_range)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Parses one line written by [`fmt::Display`]; `None` for a malformed line.
    pub fn parse(line: &str) -> Option<Row> {
        let f: Vec<&str> = line.split('\t').collect();
        let (base, extra) = match f.len() {
            7 => (&f[..], None),
            14 => (&f[..7], Some(&f[7..])),
            _ => return None,
        };
        let [
            group,
            workload,
            unit,
            better,
            varve,
            baseline_name,
            baseline,
        ] = base
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
        let mut row = Row {
            group: group.to_string(),
            workload: workload.to_string(),
            unit: unit.to_string(),
            better,
            varve: num(varve)?,
            baseline_name: baseline_name.to_string(),
            baseline: num(baseline)?,
            ..Row::default()
        };
        if let Some([target, headline, vmin, vmax, bmin, bmax, rounds]) = extra {
            let range =
                |lo: &str, hi: &str| -> Option<Option<(f64, f64)>> { Some(num(lo)?.zip(num(hi)?)) };
            row.target = num(target)?;
            row.headline = match *headline {
                "headline" => true,
                "-" => false,
                _ => return None,
            };
            row.varve_range = range(vmin, vmax)?;
            row.baseline_range = range(bmin, bmax)?;
            row.rounds = rounds.parse().ok()?;
        }
        Some(row)
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
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            clean(&self.group),
            clean(&self.workload),
            clean(&self.unit),
            better,
            num(self.varve),
            clean(&self.baseline_name),
            num(self.baseline),
            num(self.target),
            if self.headline { "headline" } else { "-" },
            num(self.varve_range.map(|r| r.0)),
            num(self.varve_range.map(|r| r.1)),
            num(self.baseline_range.map(|r| r.0)),
            num(self.baseline_range.map(|r| r.1)),
            self.rounds
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

/// Records `row` with figures that are the medians of per-round values (rounds alternate
/// Varve and the baseline), with their min-max and the number of rounds; `row` gives the
/// rest (group, workload, unit, direction, baseline name, target, headline). Nothing is
/// recorded when either side has no value.
pub fn record_rounds(row: Row, varve: &[f64], baseline: &[f64]) {
    let (Some((v, vr)), Some((b, br))) = (median_range(varve), median_range(baseline)) else {
        return;
    };
    record(Row {
        varve: Some(v),
        baseline: Some(b),
        varve_range: Some(vr),
        baseline_range: Some(br),
        rounds: u32::try_from(varve.len().min(baseline.len())).unwrap_or(u32::MAX),
        ..row
    });
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
        ..Row::default()
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
        ..Row::default()
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
            ..Row::default()
        }
    }

    #[test]
    fn target_met_or_missed_by_the_oriented_ratio() {
        let mut r = row(Better::Lower, Some(50.0), Some(100.0)); // 2x
        assert_eq!(r.met(), None);
        r.target = Some(2.0);
        assert_eq!(r.met(), Some(true));
        r.target = Some(2.5);
        assert_eq!(r.met(), Some(false));
        r.varve = None;
        assert_eq!(r.met(), None);
    }

    #[test]
    fn median_range_and_spread() {
        assert_eq!(median_range(&[]), None);
        assert_eq!(median_range(&[3.0, 1.0, 2.0]), Some((2.0, (1.0, 3.0))));
        assert_eq!(median_range(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, (1.0, 4.0))));
        let mut r = row(Better::Higher, Some(1.0), Some(1.0));
        assert_eq!(r.spread(), None);
        r.varve_range = Some((100.0, 110.0));
        assert!((r.spread().unwrap() - 0.1).abs() < 1e-12);
        r.baseline_range = Some((100.0, 150.0));
        assert!((r.spread().unwrap() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn extended_columns_round_trip() {
        let r = Row {
            target: Some(1.5),
            headline: true,
            varve_range: Some((1.0, 2.0)),
            baseline_range: Some((3.0, 4.5)),
            rounds: 6,
            ..row(Better::Higher, Some(1.5), Some(4.0))
        };
        let back = Row::parse(&r.to_string()).expect("parses");
        assert_eq!(
            back,
            Row {
                workload: "w with tab".into(),
                ..r
            }
        );
        let old = "a\tb\tc\thigher\t1\tx\t2";
        let o = Row::parse(old).expect("seven columns still parse");
        assert_eq!((o.target, o.headline, o.rounds), (None, false, 0));
        assert_eq!(
            Row::parse("a\tb\tc\thigher\t1\tx\t2\t-\tmaybe\t-\t-\t-\t-\t0"),
            None
        );
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
