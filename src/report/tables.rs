//! Summary tables: rows = method (and swept parameters), columns = datasets, cells = mean ± std
//! over seeds of the experiment's metric at each cell's final round.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;

use crate::error::{Error, Result};
use crate::run::records::{
    IDENTITY_COLUMNS, RoundRecord, records_frame, write_atomic, write_csv, write_parquet,
};

/// One aggregated entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation (0 for a single seed).
    pub std: f64,
    /// Seeds aggregated.
    pub n: usize,
}

/// The summary: row labels, dataset columns and entries.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The round summarised (`None`: each cell's final round).
    pub round: Option<u32>,
    /// Metric summarised.
    pub metric: String,
    /// Row labels in order (method, or `method [params]`).
    pub rows: Vec<String>,
    /// Datasets in order.
    pub datasets: Vec<String>,
    /// (row, dataset) -> entry.
    pub entries: BTreeMap<(String, String), Entry>,
    /// (method, dataset) -> published number, from `experiment.paper_reference`.
    pub reference: BTreeMap<(String, String), f64>,
}

/// Keeps each cell's last round, in the order cells first appear.
pub fn final_rounds(records: &[RoundRecord]) -> Vec<RoundRecord> {
    let mut order: Vec<&str> = Vec::new();
    let mut last: BTreeMap<&str, &RoundRecord> = BTreeMap::new();
    for r in records {
        match last.get(r.cell_id.as_str()) {
            None => {
                order.push(&r.cell_id);
                last.insert(&r.cell_id, r);
            }
            Some(prev) if prev.outcome.round < r.outcome.round => {
                last.insert(&r.cell_id, r);
            }
            Some(_) => {}
        }
    }
    order.into_iter().map(|id| last[id].clone()).collect()
}

fn row_label(method: &str, params: &str) -> String {
    if params.is_empty() {
        method.to_string()
    } else {
        format!("{method} [{params}]")
    }
}

/// Aggregates each cell's final-round records (or, with `round`, that round's) with Polars
/// (group by method, params, dataset).
pub fn summarize(
    records: &[RoundRecord],
    metric: &str,
    paper_reference: &BTreeMap<String, BTreeMap<String, f64>>,
    round: Option<u32>,
) -> Result<Summary> {
    let finals = match round {
        None => final_rounds(records),
        Some(n) => records
            .iter()
            .filter(|r| r.outcome.round == n)
            .cloned()
            .collect(),
    };
    if finals.is_empty() {
        let rounds: std::collections::BTreeSet<u32> =
            records.iter().map(|r| r.outcome.round).collect();
        let rounds: Vec<String> = rounds.iter().map(u32::to_string).collect();
        return Err(Error::results(
            "summary",
            format!(
                "no record has round {}; rounds recorded: {}",
                round.unwrap_or(0),
                rounds.join(", ")
            ),
        ));
    }
    let df = records_frame(&finals)?;
    if df.column(metric).is_err() {
        let recorded: Vec<String> = df
            .get_column_names()
            .into_iter()
            .map(|name| name.to_string())
            .filter(|name| !IDENTITY_COLUMNS.contains(&name.as_str()))
            .collect();
        return Err(Error::results(
            "summary",
            format!(
                "metric `{metric}` (experiment.metric, or report --metric) is in no record; \
                 recorded: {}",
                recorded.join(", ")
            ),
        ));
    }
    let grouped = df
        .lazy()
        .filter(col(metric).is_not_null())
        .group_by([col("method"), col("params"), col("dataset")])
        .agg([
            col(metric).mean().alias("mean"),
            col(metric).std(1).alias("std"),
            col(metric).count().alias("n"),
        ])
        .sort(
            ["method", "params", "dataset"],
            SortMultipleOptions::default(),
        )
        .collect()
        .map_err(|e| Error::results("summary", e.to_string()))?;
    let get_str = |name: &str| -> Result<Vec<String>> {
        let values = grouped
            .column(name)
            .and_then(|c| c.str().cloned())
            .map_err(|e| Error::results("summary", e.to_string()))?;
        Ok(values
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    let (methods, params, datasets) = (get_str("method")?, get_str("params")?, get_str("dataset")?);
    let means = grouped.column("mean").and_then(|c| c.f64().cloned());
    let stds = grouped.column("std").and_then(|c| c.f64().cloned());
    let counts = grouped
        .column("n")
        .and_then(|c| c.cast(&DataType::UInt64))
        .and_then(|c| c.u64().cloned());
    let (means, stds, counts) = match (means, stds, counts) {
        (Ok(m), Ok(s), Ok(n)) => (m, s, n),
        _ => {
            return Err(Error::results(
                "summary",
                "aggregation produced unexpected types",
            ));
        }
    };
    // Rows keep the order methods first appear in the records (the spec's sweep order).
    let mut rows = Vec::new();
    let mut dataset_order = Vec::new();
    for r in &finals {
        let label = row_label(&r.method, &r.params);
        if !rows.contains(&label) {
            rows.push(label);
        }
        if !dataset_order.contains(&r.dataset) {
            dataset_order.push(r.dataset.clone());
        }
    }
    let mut entries = BTreeMap::new();
    for i in 0..grouped.height() {
        let n = counts.get(i).unwrap_or(0) as usize;
        entries.insert(
            (row_label(&methods[i], &params[i]), datasets[i].clone()),
            Entry {
                mean: means.get(i).unwrap_or(f64::NAN),
                std: if n > 1 {
                    stds.get(i).unwrap_or(0.0)
                } else {
                    0.0
                },
                n,
            },
        );
    }
    let mut reference = BTreeMap::new();
    for (method, per_dataset) in paper_reference {
        for (dataset, value) in per_dataset {
            reference.insert((method.clone(), dataset.clone()), *value);
        }
    }
    Ok(Summary {
        round,
        metric: metric.to_string(),
        rows,
        datasets: dataset_order,
        entries,
        reference,
    })
}

/// Scales fractions to percent for display (metrics in [0, 1] are shown x100).
pub(crate) fn percent(metric: &str) -> f64 {
    if metric.contains("accuracy") || metric.contains("f1") {
        100.0
    } else {
        1.0
    }
}

impl Summary {
    fn method_of(row: &str) -> &str {
        row.split(" [").next().unwrap_or(row)
    }

    fn has_reference(&self, dataset: &str) -> bool {
        self.reference.keys().any(|(_, d)| d == dataset)
    }

    /// The summary as a wide Polars frame: `method`, then per dataset `<d>_mean`, `<d>_std`,
    /// `<d>_n` (and `<d>_paper` where a reference exists).
    pub fn frame(&self) -> Result<DataFrame> {
        let mut columns = vec![Column::new("method".into(), self.rows.clone())];
        for d in &self.datasets {
            let get = |f: &dyn Fn(&Entry) -> f64| -> Vec<Option<f64>> {
                self.rows
                    .iter()
                    .map(|r| self.entries.get(&(r.clone(), d.clone())).map(f))
                    .collect()
            };
            columns.push(Column::new(format!("{d}_mean").into(), get(&|e| e.mean)));
            columns.push(Column::new(format!("{d}_std").into(), get(&|e| e.std)));
            columns.push(Column::new(format!("{d}_n").into(), get(&|e| e.n as f64)));
            if self.has_reference(d) {
                let paper: Vec<Option<f64>> = self
                    .rows
                    .iter()
                    .map(|r| {
                        self.reference
                            .get(&(Self::method_of(r).to_string(), d.clone()))
                            .copied()
                    })
                    .collect();
                columns.push(Column::new(format!("{d}_paper").into(), paper));
            }
        }
        DataFrame::new(self.rows.len(), columns)
            .map_err(|e| Error::results("summary", e.to_string()))
    }

    /// Markdown table; the best mean per column is in bold, and where entries aggregate different
    /// numbers of seeds (a sweep still running, or rows run with fewer seeds) each entry below
    /// the most says how many it has, `(n=2)`, so a partial mean is not read as a full one.
    pub fn markdown(&self) -> String {
        let scale = percent(&self.metric);
        let mut header = vec!["method".to_string()];
        for d in &self.datasets {
            header.push(d.clone());
            if self.has_reference(d) {
                header.push(format!("{d} (paper)"));
            }
        }
        let mut out = format!(
            "{} ({}mean ± std over seeds, {})\n\n| {} |\n|{}|\n",
            self.metric,
            if scale == 100.0 { "%, " } else { "" },
            self.round
                .map_or_else(|| "final round".to_string(), |n| format!("round {n}")),
            header.join(" | "),
            header.iter().map(|_| "---").collect::<Vec<_>>().join("|")
        );
        let best: BTreeMap<&String, f64> = self
            .datasets
            .iter()
            .map(|d| {
                let max = self
                    .entries
                    .iter()
                    .filter(|((_, ed), _)| ed == d)
                    .map(|(_, e)| e.mean)
                    .fold(f64::NEG_INFINITY, f64::max);
                (d, max)
            })
            .collect();
        let most_seeds = self.entries.values().map(|e| e.n).max().unwrap_or(0);
        for row in &self.rows {
            let mut cells = vec![row.clone()];
            for d in &self.datasets {
                let cell = match self.entries.get(&(row.clone(), d.clone())) {
                    None => "–".to_string(),
                    Some(e) => {
                        let mut text = if e.n > 1 {
                            format!("{:.2} ± {:.2}", e.mean * scale, e.std * scale)
                        } else {
                            format!("{:.2}", e.mean * scale)
                        };
                        if e.n < most_seeds {
                            text.push_str(&format!(" (n={})", e.n));
                        }
                        if e.mean == best[d] && self.rows.len() > 1 {
                            format!("**{text}**")
                        } else {
                            text
                        }
                    }
                };
                cells.push(cell);
                if self.has_reference(d) {
                    cells.push(
                        self.reference
                            .get(&(Self::method_of(row).to_string(), d.clone()))
                            .map(|v| format!("{v:.2}"))
                            .unwrap_or_else(|| "–".into()),
                    );
                }
            }
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// Writes records (all rounds) as CSV, Parquet and JSON Lines (one object per cell-round, the
/// shape experiment trackers import), and the summary as CSV, Parquet and Markdown under `dir`.
pub fn write_tables(dir: &Path, records: &[RoundRecord], summary: &Summary) -> Result<()> {
    let mut lines = String::new();
    for record in records {
        let line = serde_json::to_string(record)
            .map_err(|e| Error::results("records.jsonl", e.to_string()))?;
        lines.push_str(&line);
        lines.push('\n');
    }
    write_atomic(&dir.join("records.jsonl"), lines.as_bytes())?;
    let mut all = records_frame(records)?;
    write_csv(&mut all, &dir.join("records.csv"))?;
    write_parquet(&mut all, &dir.join("records.parquet"))?;
    let mut wide = summary.frame()?;
    write_csv(&mut wide, &dir.join("summary.csv"))?;
    write_parquet(&mut wide, &dir.join("summary.parquet"))?;
    write_atomic(&dir.join("summary.md"), summary.markdown().as_bytes())
}
