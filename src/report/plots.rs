//! Figures built from records alone (what each plot shows is decided here, as data), then drawn
//! as SVG and PNG with plotters.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::tables::percent;
use crate::error::{Error, Result};
use crate::plan::safe_name;
use crate::run::records::RoundRecord;

/// One line (or one bar group) of a figure: x -> mean over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// (x, mean y) in x order.
    pub points: Vec<(f64, f64)>,
}

/// How a figure is drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Style {
    /// Lines with markers over a numeric x axis.
    Lines,
    /// Grouped bars over named categories (x = category index).
    Bars(Vec<String>),
}

/// A figure as data: what `render` draws and what tests check.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// File stem under `plots/` (`<stem>.svg`, `<stem>.png`).
    pub stem: String,
    /// Caption.
    pub title: String,
    /// X-axis label.
    pub x_label: String,
    /// Y-axis label.
    pub y_label: String,
    /// Lines or bars.
    pub style: Style,
    /// Drawn in order.
    pub series: Vec<Series>,
}

fn row_label(r: &RoundRecord) -> String {
    if r.params.is_empty() {
        r.method.clone()
    } else {
        format!("{} [{}]", r.method, r.params)
    }
}

/// Mean over seeds of `y` against `x`, per series key; records lacking either are skipped.
fn mean_curves<'a>(
    records: impl Iterator<Item = &'a RoundRecord>,
    series_key: impl Fn(&RoundRecord) -> String,
    x: impl Fn(&RoundRecord) -> Option<f64>,
    y: impl Fn(&RoundRecord) -> Option<f64>,
) -> Vec<Series> {
    let mut order: Vec<String> = Vec::new();
    // Series -> x (as bits, for exact grouping) -> values.
    let mut sums: BTreeMap<String, BTreeMap<u64, Vec<f64>>> = BTreeMap::new();
    for r in records {
        let (Some(xv), Some(yv)) = (x(r), y(r)) else {
            continue;
        };
        let key = series_key(r);
        if !order.contains(&key) {
            order.push(key.clone());
        }
        sums.entry(key)
            .or_default()
            .entry(xv.to_bits())
            .or_default()
            .push(yv);
    }
    order
        .into_iter()
        .map(|label| {
            let mut points: Vec<(f64, f64)> = sums[&label]
                .iter()
                .map(|(bits, ys)| {
                    (
                        f64::from_bits(*bits),
                        ys.iter().sum::<f64>() / ys.len() as f64,
                    )
                })
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series { label, points }
        })
        .collect()
}

fn datasets(records: &[RoundRecord]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in records {
        if !out.contains(&r.dataset) {
            out.push(r.dataset.clone());
        }
    }
    out
}

/// Rows (method + params) whose records span more than one round on `dataset`.
fn multi_round_rows(records: &[RoundRecord], dataset: &str) -> BTreeSet<String> {
    let mut rounds: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.dataset == dataset) {
        rounds
            .entry(row_label(r))
            .or_default()
            .insert(r.outcome.round);
    }
    rounds
        .into_iter()
        .filter(|(_, set)| set.len() > 1)
        .map(|(row, _)| row)
        .collect()
}

/// Every figure the records support: accuracy per round (FreeAL and any multi-round method),
/// learning curves (labels acquired vs metric) for active learning, one curve per swept numeric
/// parameter, and per-class label noise before and after the refinery.
pub fn figures(records: &[RoundRecord], metric: &str) -> Vec<Figure> {
    let scale = percent(metric);
    let unit = if scale == 100.0 { " (%)" } else { "" };
    let mut out = Vec::new();
    for dataset in datasets(records) {
        let rows = multi_round_rows(records, &dataset);
        let of_rows = || {
            records
                .iter()
                .filter(|r| r.dataset == dataset && rows.contains(&row_label(r)))
        };
        let acquiring: Vec<&RoundRecord> = of_rows()
            .filter(|r| r.outcome.metrics.contains_key("labels_acquired"))
            .collect();
        let by_round: Vec<&RoundRecord> = of_rows()
            .filter(|r| !r.outcome.metrics.contains_key("labels_acquired"))
            .collect();
        if !by_round.is_empty() {
            let mut series = mean_curves(
                by_round.iter().copied(),
                |r| format!("{} {metric}", row_label(r)),
                |r| Some(f64::from(r.outcome.round)),
                |r| r.outcome.metrics.get(metric).map(|v| v * scale),
            );
            let pool = mean_curves(
                by_round.iter().copied(),
                |r| format!("{} pool labels", row_label(r)),
                |r| Some(f64::from(r.outcome.round)),
                |r| {
                    r.outcome
                        .metrics
                        .get("pool_label_accuracy")
                        .map(|v| v * scale)
                },
            );
            // An unlabeled pool has no label accuracy to draw.
            let (title, y_label) = match pool.is_empty() {
                true => (
                    format!("{dataset}: {metric} per round"),
                    format!("{metric}{unit}"),
                ),
                false => (
                    format!("{dataset}: {metric} and pool-label accuracy per round"),
                    format!("{metric}, pool_label_accuracy{unit}"),
                ),
            };
            series.extend(pool);
            out.push(Figure {
                stem: format!("rounds_{dataset}"),
                title,
                x_label: "round".into(),
                y_label,
                style: Style::Lines,
                series,
            });
        }
        if !acquiring.is_empty() {
            out.push(Figure {
                stem: format!("learning_curve_{dataset}"),
                title: format!("{dataset}: learning curves"),
                x_label: "labels acquired".into(),
                y_label: format!("{metric}{unit}"),
                style: Style::Lines,
                series: mean_curves(
                    acquiring.into_iter(),
                    row_label,
                    |r| r.outcome.metrics.get("labels_acquired").copied(),
                    |r| r.outcome.metrics.get(metric).map(|v| v * scale),
                ),
            });
        }
        out.extend(noise_figure(records, &dataset, &rows, scale));
    }
    out.extend(sweep_figures(records, metric, scale, unit));
    out
}

/// Per class, the share of wrong pool labels at round 0 and at the final round, for each
/// multi-round row that records per-class label accuracy (`pool_label_accuracy[<class>]`).
fn noise_figure(
    records: &[RoundRecord],
    dataset: &str,
    rows: &BTreeSet<String>,
    scale: f64,
) -> Vec<Figure> {
    let prefix = "pool_label_accuracy[";
    let mut figures = Vec::new();
    for row in rows {
        let mine: Vec<&RoundRecord> = records
            .iter()
            .filter(|r| r.dataset == dataset && row_label(r) == *row)
            .collect();
        let mut classes: Vec<String> = Vec::new();
        for r in &mine {
            for key in r.outcome.metrics.keys() {
                if let Some(name) = key.strip_prefix(prefix).and_then(|k| k.strip_suffix(']'))
                    && !classes.iter().any(|c| c == name)
                {
                    classes.push(name.to_string());
                }
            }
        }
        let Some(last) = mine.iter().map(|r| r.outcome.round).max() else {
            continue;
        };
        if classes.is_empty() {
            continue;
        }
        let series = [0, last]
            .into_iter()
            .map(|round| {
                let at: Vec<&&RoundRecord> =
                    mine.iter().filter(|r| r.outcome.round == round).collect();
                let points = classes
                    .iter()
                    .enumerate()
                    .filter_map(|(i, class)| {
                        let key = format!("{prefix}{class}]");
                        let values: Vec<f64> = at
                            .iter()
                            .filter_map(|r| r.outcome.metrics.get(&key))
                            .map(|acc| (1.0 - acc) * scale)
                            .collect();
                        (!values.is_empty())
                            .then(|| (i as f64, values.iter().sum::<f64>() / values.len() as f64))
                    })
                    .collect();
                Series {
                    label: format!("round {round}"),
                    points,
                }
            })
            .collect();
        let slug = safe_name(row, "", '_');
        figures.push(Figure {
            stem: format!("label_noise_{dataset}_{slug}"),
            title: format!("{dataset}, {row}: wrong pool labels per class"),
            x_label: "gold class".into(),
            y_label: if scale == 100.0 {
                "wrong labels (%)".into()
            } else {
                "wrong labels".into()
            },
            style: Style::Bars(classes),
            series,
        });
    }
    figures
}

/// One figure per swept parameter with numeric values: final-round metric against the value,
/// a line per method, dataset and the other parameters.
fn sweep_figures(records: &[RoundRecord], metric: &str, scale: f64, unit: &str) -> Vec<Figure> {
    let finals = super::tables::final_rounds(records);
    let parse = |params: &str| -> Vec<(String, String)> {
        params
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let mut names: Vec<String> = Vec::new();
    for r in &finals {
        for (k, _) in parse(&r.params) {
            if !names.contains(&k) {
                names.push(k);
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        let value_of = |r: &RoundRecord| -> Option<f64> {
            parse(&r.params)
                .into_iter()
                .find(|(k, _)| *k == name)
                .and_then(|(_, v)| v.trim_matches('"').parse::<f64>().ok())
        };
        let distinct: BTreeSet<u64> = finals
            .iter()
            .filter_map(&value_of)
            .map(f64::to_bits)
            .collect();
        if distinct.len() < 2 {
            continue;
        }
        let series = mean_curves(
            finals.iter(),
            |r| {
                let rest: Vec<String> = parse(&r.params)
                    .into_iter()
                    .filter(|(k, _)| *k != name)
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if rest.is_empty() {
                    format!("{} {}", r.method, r.dataset)
                } else {
                    format!("{} {} [{}]", r.method, r.dataset, rest.join(","))
                }
            },
            value_of,
            |r| r.outcome.metrics.get(metric).map(|v| v * scale),
        );
        let slug = safe_name(&name, "", '_');
        out.push(Figure {
            stem: format!("sweep_{slug}"),
            title: format!("final-round {metric} against {name}"),
            x_label: name.clone(),
            y_label: format!("{metric}{unit}"),
            style: Style::Lines,
            series,
        });
    }
    out
}

const FONT: &str = "sans-serif";
static FONT_ONCE: Once = Once::new();

/// Registers the embedded DejaVu Sans for plotters' text (no system font is looked up).
fn register_font() {
    FONT_ONCE.call_once(|| {
        // The bytes are a valid TrueType font shipped with the crate; a failure here is a
        // build defect caught by the plot tests, and text would only be missing.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            include_bytes!("../../assets/fonts/DejaVuSans.ttf"),
        );
    });
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(0.5);
    (lo - pad, hi + pad)
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let err = |e: &dyn std::fmt::Display| Error::results(&fig.stem, format!("drawing: {e}"));
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let (x_lo, x_hi) = match &fig.style {
        Style::Lines => padded_range(fig.series.iter().flat_map(|s| s.points.iter().map(|p| p.0))),
        Style::Bars(classes) => (-0.5, classes.len() as f64 - 0.5),
    };
    let (mut y_lo, y_hi) =
        padded_range(fig.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)));
    if matches!(fig.style, Style::Bars(_)) {
        y_lo = 0.0;
    }
    let mut chart = ChartBuilder::on(&root)
        .caption(&fig.title, (FONT, 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
        .map_err(|e| err(&e))?;
    let categories = match &fig.style {
        Style::Bars(c) => c.clone(),
        Style::Lines => Vec::new(),
    };
    // Rounds, label counts and most swept values are whole numbers: label only whole ticks.
    let whole_x = fig
        .series
        .iter()
        .all(|s| s.points.iter().all(|p| p.0.fract() == 0.0));
    let x_format = |x: &f64| -> String {
        if categories.is_empty() {
            let nearest = x.round();
            if !whole_x {
                format!("{x:.2}")
            } else if (x - nearest).abs() < 1e-9 {
                // `+ 0.0` turns -0 into 0.
                format!("{:.0}", nearest + 0.0)
            } else {
                String::new()
            }
        } else {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                categories.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(fig.x_label.as_str())
        .y_desc(fig.y_label.as_str())
        .label_style((FONT, 13))
        .x_label_formatter(&x_format);
    if !categories.is_empty() {
        mesh.x_labels(categories.len() * 2 + 1).disable_x_mesh();
    }
    mesh.draw().map_err(|e| err(&e))?;
    let groups = fig.series.len().max(1) as f64;
    for (i, s) in fig.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        match &fig.style {
            Style::Lines => {
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| err(&e))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| err(&e))?;
            }
            Style::Bars(_) => {
                let width = 0.8 / groups;
                chart
                    .draw_series(s.points.iter().map(|&(x, y)| {
                        let left = x - 0.4 + width * i as f64;
                        Rectangle::new([(left, 0.0), (left + width, y)], color.filled())
                    }))
                    .map_err(|e| err(&e))?
                    .label(s.label.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
            }
        }
    }
    chart
        .configure_series_labels()
        .label_font((FONT, 12))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Draws `fig` as `<dir>/<stem>.svg` and `<dir>/<stem>.png`; returns both paths.
pub fn render(fig: &Figure, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let size = (800, 480);
    let svg_path = dir.join(format!("{}.svg", fig.stem));
    let mut svg = String::new();
    draw(
        SVGBackend::with_string(&mut svg, size).into_drawing_area(),
        fig,
    )?;
    crate::run::records::write_atomic(&svg_path, svg.as_bytes())?;
    let png_path = dir.join(format!("{}.png", fig.stem));
    // Drawn under a temporary name and renamed, like every other result file, so a reader
    // never sees half a PNG.
    let tmp = dir.join(format!(".{}.tmp{}.png", fig.stem, std::process::id()));
    draw(BitMapBackend::new(&tmp, size).into_drawing_area(), fig)?;
    std::fs::rename(&tmp, &png_path).map_err(|e| Error::io(&png_path, e))?;
    Ok((svg_path, png_path))
}
