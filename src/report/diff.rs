//! `report A B`: what changed between two experiment directories: configuration keys of the
//! cells they share, and which summary entries moved by more than the seeds' noise.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::tables::{Entry, Summary, percent, summarize};
use super::{Loaded, cell_params};
use crate::error::Result;

/// A configuration key whose value differs between the two runs of same-named cells.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigChange {
    /// Dotted key of the cell configuration.
    pub key: String,
    /// Value in A (`None`: absent).
    pub a: Option<String>,
    /// Value in B.
    pub b: Option<String>,
    /// Shared cells with this exact change.
    pub cells: usize,
}

/// Whether a summary entry moved beyond the noise of its seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// |B - A| exceeds twice the standard error of the difference of the means.
    Moved,
    /// Within twice that standard error.
    WithinNoise,
    /// One side has a single seed: no noise estimate.
    NoEstimate,
}

/// One summary entry in both directories.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricMove {
    /// Row label (method and swept parameters).
    pub row: String,
    /// Dataset.
    pub dataset: String,
    /// Entry in A.
    pub a: Entry,
    /// Entry in B.
    pub b: Entry,
    /// Judgement against the seed noise.
    pub verdict: Verdict,
}

/// The comparison of two experiment directories.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff {
    /// Metric compared.
    pub metric: String,
    /// Cell names planned only in A.
    pub only_a: Vec<String>,
    /// Cell names planned only in B.
    pub only_b: Vec<String>,
    /// Configuration differences over the cells both planned (and ran).
    pub config: Vec<ConfigChange>,
    /// Summary entries present in both.
    pub metrics: Vec<MetricMove>,
}

/// Judges B - A against 2 standard errors of the difference of two means.
pub fn verdict(a: &Entry, b: &Entry) -> Verdict {
    if a.n < 2 || b.n < 2 {
        return Verdict::NoEstimate;
    }
    let se = (a.std.powi(2) / a.n as f64 + b.std.powi(2) / b.n as f64).sqrt();
    if (b.mean - a.mean).abs() > 2.0 * se {
        Verdict::Moved
    } else {
        Verdict::WithinNoise
    }
}

fn config_changes(a: &Loaded, b: &Loaded) -> Result<Vec<ConfigChange>> {
    let mut counts: BTreeMap<(String, Option<String>, Option<String>), usize> = BTreeMap::new();
    for ca in &a.plan {
        let Some(cb) = b.plan.iter().find(|c| c.name == ca.name) else {
            continue;
        };
        let (dir_a, dir_b) = (
            a.dir.join("cells").join(&ca.dir),
            b.dir.join("cells").join(&cb.dir),
        );
        // Cells never started have no config.json: nothing to compare.
        if !dir_a.join("config.json").exists() || !dir_b.join("config.json").exists() {
            continue;
        }
        let (pa, pb) = (cell_params(&dir_a)?, cell_params(&dir_b)?);
        let mut keys: Vec<&String> = pa.keys().chain(pb.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (va, vb) = (pa.get(key).cloned(), pb.get(key).cloned());
            if va != vb {
                *counts.entry((key.clone(), va, vb)).or_default() += 1;
            }
        }
    }
    Ok(counts
        .into_iter()
        .map(|((key, a, b), cells)| ConfigChange { key, a, b, cells })
        .collect())
}

/// Compares two loaded experiment directories on `metric` (default: A's metric).
pub fn diff(a: &Loaded, b: &Loaded, metric: Option<&str>) -> Result<Diff> {
    let metric = metric.unwrap_or(&a.experiment.metric).to_string();
    let names = |l: &Loaded| -> Vec<String> { l.plan.iter().map(|c| c.name.clone()).collect() };
    let (na, nb) = (names(a), names(b));
    let summary = |l: &Loaded| -> Result<Option<Summary>> {
        if l.records.is_empty() {
            return Ok(None);
        }
        summarize(&l.records, &metric, &BTreeMap::new(), None).map(Some)
    };
    let mut metrics = Vec::new();
    if let (Some(sa), Some(sb)) = (summary(a)?, summary(b)?) {
        for row in &sa.rows {
            for dataset in &sa.datasets {
                let key = (row.clone(), dataset.clone());
                if let (Some(ea), Some(eb)) = (sa.entries.get(&key), sb.entries.get(&key)) {
                    metrics.push(MetricMove {
                        row: row.clone(),
                        dataset: dataset.clone(),
                        a: ea.clone(),
                        b: eb.clone(),
                        verdict: verdict(ea, eb),
                    });
                }
            }
        }
    }
    Ok(Diff {
        only_a: na.iter().filter(|n| !nb.contains(n)).cloned().collect(),
        only_b: nb.iter().filter(|n| !na.contains(n)).cloned().collect(),
        config: config_changes(a, b)?,
        metrics,
        metric,
    })
}

impl Diff {
    /// The comparison as Markdown.
    pub fn markdown(&self) -> String {
        let scale = percent(&self.metric);
        let mut out = String::from("## Configuration\n\n");
        if self.config.is_empty() {
            out.push_str("Same configuration in every cell both directories ran.\n");
        } else {
            out.push_str("| key | A | B | cells |\n|---|---|---|---|\n");
            for c in &self.config {
                let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".into());
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    c.key,
                    show(&c.a),
                    show(&c.b),
                    c.cells
                );
            }
        }
        for (side, names) in [("A", &self.only_a), ("B", &self.only_b)] {
            if !names.is_empty() {
                let _ = writeln!(out, "\nCells only in {side}: {}", names.join(", "));
            }
        }
        let _ = writeln!(
            out,
            "\n## {} (final round, mean over seeds)\n\nmoved: |B - A| > 2 standard errors of \
             the difference of the means; n = 1 on either side gives no estimate.\n\n\
             | row | dataset | A | B | B - A | verdict |\n|---|---|---|---|---|---|",
            self.metric
        );
        for m in &self.metrics {
            let show =
                |e: &Entry| format!("{:.2} ± {:.2} (n={})", e.mean * scale, e.std * scale, e.n);
            let verdict = match m.verdict {
                Verdict::Moved => "**moved**",
                Verdict::WithinNoise => "within noise",
                Verdict::NoEstimate => "no estimate (n=1)",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:+.2} | {} |",
                m.row,
                m.dataset,
                show(&m.a),
                show(&m.b),
                (m.b.mean - m.a.mean) * scale,
                verdict
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(mean: f64, std: f64, n: usize) -> Entry {
        Entry { mean, std, n }
    }

    #[test]
    fn verdict_uses_two_standard_errors_of_the_difference() {
        // se = sqrt(0.01^2/4 + 0.01^2/4) = 0.00707; 2 se = 0.01414.
        let a = entry(0.80, 0.01, 4);
        assert_eq!(verdict(&a, &entry(0.815, 0.01, 4)), Verdict::Moved);
        assert_eq!(verdict(&a, &entry(0.813, 0.01, 4)), Verdict::WithinNoise);
        assert_eq!(verdict(&a, &entry(0.9, 0.0, 1)), Verdict::NoEstimate);
    }
}
