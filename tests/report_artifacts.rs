//! Tables, plots, README, MLflow export and `report A B` rebuilt from records alone, checked
//! against values computed here from the same records.

mod common;

use std::path::Path;

use freeal_bench::report::plots::{Figure, Style, figures};
use freeal_bench::report::{self, diff};
use serde_json::json;

/// Test accuracy of the `freeal` row: seed -> per-round values.
const FREEAL: [(u64, [f64; 3]); 2] = [(1, [0.70, 0.74, 0.77]), (2, [0.68, 0.75, 0.79])];
/// Pool-label accuracy per round (the same for both seeds) and per class at round 0 / 2.
const POOL: [f64; 3] = [0.80, 0.84, 0.86];
const CLASS_ACC: [(&str, f64, f64); 2] = [("negative", 0.9, 0.92), ("positive", 0.7, 0.8)];
/// The `al` row's learning curve for seed 1: (labels acquired, test accuracy).
const AL: [(f64, f64); 3] = [(10.0, 0.6), (20.0, 0.66), (30.0, 0.71)];

fn record(
    cell: &str,
    method: &str,
    seed: u64,
    round: u32,
    metrics: serde_json::Value,
) -> serde_json::Value {
    json!({
        "cell_id": format!("id-{cell}"), "cell": cell, "method": method, "dataset": "toy",
        "seed": seed, "params": "", "round": round, "metrics": metrics,
        "llm": {"calls": 3, "cache_hits": 0, "prompt_tokens": 30, "completion_tokens": 3},
        "slm_steps": 10, "wall_s": 2.0
    })
}

fn write_cell(dir: &Path, name: &str, records: Vec<serde_json::Value>, epochs: u64) {
    let cell = dir.join("cells").join(name);
    std::fs::create_dir_all(&cell).unwrap();
    std::fs::write(
        cell.join("records.json"),
        serde_json::to_vec(&records).unwrap(),
    )
    .unwrap();
    let config = json!({"method_name": name, "slm": {"epochs": epochs, "lr": 3e-5}, "seed": 1});
    std::fs::write(cell.join("config.json"), config.to_string()).unwrap();
}

/// An experiment directory as `run` leaves it, with `epochs` in every cell's config and
/// `shift` added to every freeal test accuracy.
fn experiment(dir: &Path, epochs: u64, shift: f64) {
    let mut plan = Vec::new();
    for (seed, accs) in FREEAL {
        let name = format!("toy-freeal-s{seed}");
        let rounds = (0..3)
            .map(|r| {
                let mut m = json!({
                    "test_accuracy": accs[r] + shift,
                    "pool_label_accuracy": POOL[r],
                });
                if r != 1 {
                    for (class, at0, at2) in CLASS_ACC {
                        m[format!("pool_label_accuracy[{class}]")] =
                            json!(if r == 0 { at0 } else { at2 });
                    }
                }
                record(&name, "freeal", seed, r as u32, m)
            })
            .collect();
        write_cell(dir, &name, rounds, epochs);
        plan.push(json!({"id": format!("id-{name}"), "name": name, "dir": name}));
    }
    let al_rounds = AL
        .iter()
        .enumerate()
        .map(|(r, (n, acc))| {
            record(
                "toy-al-s1",
                "al",
                1,
                r as u32,
                json!({"test_accuracy": acc, "labels_acquired": n}),
            )
        })
        .collect();
    write_cell(dir, "toy-al-s1", al_rounds, epochs);
    plan.push(json!({"id": "id-toy-al-s1", "name": "toy-al-s1", "dir": "toy-al-s1"}));
    // Planned but never run: the README must say so.
    plan.push(json!({"id": "id-toy-zs-s1", "name": "toy-zs-s1", "dir": "toy-zs-s1"}));
    std::fs::write(dir.join("plan.json"), serde_json::to_vec(&plan).unwrap()).unwrap();
    let meta = json!({"name": "toy", "description": "a toy experiment", "metric": "test_accuracy",
                      "paper_reference": {"freeal": {"toy": 81.5}}});
    std::fs::write(dir.join("experiment.json"), meta.to_string()).unwrap();
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// `<polyline ... points="x,y x,y ..."/>` point lists from an SVG.
fn polylines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline")
        .skip(1)
        .filter_map(|tag| {
            let points = tag.split("points=\"").nth(1)?.split('"').next()?;
            Some(
                points
                    .split_whitespace()
                    .filter_map(|p| {
                        let (x, y) = p.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect(),
            )
        })
        .collect()
}

/// Every drawn line must be the figure's data under one affine map per axis: pixel = a + b * v.
fn assert_lines_drawn(svg: &str, figure: &Figure) {
    let lines: Vec<Vec<(f64, f64)>> = polylines(svg)
        .into_iter()
        .filter(|l| l.len() >= 3)
        .collect();
    let series: Vec<_> = figure
        .series
        .iter()
        .filter(|s| s.points.len() >= 3)
        .collect();
    assert_eq!(
        lines.len(),
        series.len(),
        "one polyline per series in {}",
        figure.stem
    );
    let fit = |p0: f64, p1: f64, v0: f64, v1: f64| {
        let b = (p1 - p0) / (v1 - v0);
        (p0 - b * v0, b)
    };
    let (first, data) = (&lines[0], &series[0].points);
    let last = data.len() - 1;
    let (ax, bx) = fit(first[0].0, first[last].0, data[0].0, data[last].0);
    let (ay, by) = fit(first[0].1, first[last].1, data[0].1, data[last].1);
    assert!(by < 0.0, "larger values are drawn higher");
    for (line, s) in lines.iter().zip(&series) {
        for ((px, py), (x, y)) in line.iter().zip(&s.points) {
            assert!(
                (px - (ax + bx * x)).abs() <= 1.0,
                "{}: x {x} drawn at {px}",
                s.label
            );
            assert!(
                (py - (ay + by * y)).abs() <= 1.0,
                "{}: y {y} drawn at {py}",
                s.label
            );
        }
    }
}

#[test]
fn tables_and_plots_match_the_records_and_regenerate_identically() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), 3, 0.0);
    // A cell that warned about its own results (as FreeAL does when its split starves a label).
    std::fs::write(
        dir.path().join("cells/toy-al-s1/warnings.txt"),
        "warning: one\nwarning: two\n",
    )
    .unwrap();
    let out = common::bench(&["report", dir.path().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The Markdown table: freeal's final round, mean ± std over its two seeds, in percent; the
    // paper's number beside it; the best row in bold; the one-seed AL row says it has one.
    let md = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    let (mean, std) = mean_std(&[FREEAL[0].1[2], FREEAL[1].1[2]]);
    let freeal_row = md.lines().find(|l| l.starts_with("| freeal |")).unwrap();
    assert_eq!(
        freeal_row,
        format!(
            "| freeal | **{:.2} ± {:.2}** | 81.50 |",
            mean * 100.0,
            std * 100.0
        )
    );
    let al_row = md.lines().find(|l| l.starts_with("| al |")).unwrap();
    assert_eq!(al_row, format!("| al | {:.2} (n=1) | – |", AL[2].1 * 100.0));

    // Figures as data: per-round means, the learning curve, per-class noise.
    let loaded = report::load(dir.path()).unwrap();
    let figs = figures(&loaded.records, "test_accuracy");
    let rounds = figs.iter().find(|f| f.stem == "rounds_toy").unwrap();
    let test_curve: Vec<(f64, f64)> = (0..3)
        .map(|r| (r as f64, (FREEAL[0].1[r] + FREEAL[1].1[r]) / 2.0 * 100.0))
        .collect();
    assert_eq!(rounds.series[0].label, "freeal test_accuracy");
    for ((x, y), (ex, ey)) in rounds.series[0].points.iter().zip(&test_curve) {
        assert_eq!(x, ex);
        assert!((y - ey).abs() < 1e-9);
    }
    let pool: Vec<f64> = rounds.series[1].points.iter().map(|p| p.1).collect();
    for (got, want) in pool.iter().zip(POOL) {
        assert!((got - want * 100.0).abs() < 1e-9);
    }
    let curve = figs
        .iter()
        .find(|f| f.stem == "learning_curve_toy")
        .unwrap();
    assert_eq!(curve.series.len(), 1);
    for ((x, y), (n, acc)) in curve.series[0].points.iter().zip(AL) {
        assert_eq!(*x, n);
        assert!((y - acc * 100.0).abs() < 1e-9);
    }
    let noise = figs
        .iter()
        .find(|f| f.stem == "label_noise_toy_freeal")
        .unwrap();
    assert_eq!(
        noise.style,
        Style::Bars(vec!["negative".into(), "positive".into()])
    );
    for (series, at) in noise.series.iter().zip([1, 2]) {
        for ((_, y), class) in series.points.iter().zip(CLASS_ACC) {
            let acc = if at == 1 { class.1 } else { class.2 };
            assert!((y - (1.0 - acc) * 100.0).abs() < 1e-9, "{}", series.label);
        }
    }

    // The drawn SVGs carry exactly those values; PNGs exist and are PNGs.
    for fig in [rounds, curve] {
        let svg =
            std::fs::read_to_string(dir.path().join("plots").join(format!("{}.svg", fig.stem)))
                .unwrap();
        assert_lines_drawn(&svg, fig);
        assert!(svg.contains(&fig.title), "caption drawn as text");
        let png =
            std::fs::read(dir.path().join("plots").join(format!("{}.png", fig.stem))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    // README: the table, links to every plot, and the planned cell that never ran.
    let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(readme.contains(freeal_row));
    for fig in &figs {
        assert!(readme.contains(&format!("(plots/{}.svg)", fig.stem)));
    }
    assert!(readme.contains("| toy-zs-s1 | id-toy-zs-s1 | 0 | not run |"));
    assert!(readme.contains("| complete; 2 warning(s) in `cells/toy-al-s1/warnings.txt` |"));
    assert!(readme.contains("| toy-freeal-s1 | id-toy-freeal-s1 | 3 | complete |"));

    // Regenerating from the records alone gives byte-identical tables.
    let names = [
        "summary.md",
        "summary.csv",
        "records.csv",
        "records.jsonl",
        "README.md",
    ];
    let before: Vec<Vec<u8>> = names
        .iter()
        .map(|n| std::fs::read(dir.path().join(n)).unwrap())
        .collect();
    for n in names {
        std::fs::remove_file(dir.path().join(n)).unwrap();
    }
    std::fs::remove_dir_all(dir.path().join("plots")).unwrap();
    let again = common::bench(&["report", dir.path().to_str().unwrap()]);
    assert!(again.status.success());
    for (n, bytes) in names.iter().zip(before) {
        assert_eq!(
            std::fs::read(dir.path().join(n)).unwrap(),
            bytes,
            "{n} differs"
        );
    }

    // A cell interrupted after a finished round says that a rerun resumes it.
    let zs = dir.path().join("cells/toy-zs-s1");
    std::fs::create_dir_all(&zs).unwrap();
    std::fs::write(zs.join("checkpoint.json"), "{}").unwrap();
    assert!(
        common::bench(&["report", dir.path().to_str().unwrap()])
            .status
            .success()
    );
    let readme = std::fs::read_to_string(dir.path().join("README.md")).unwrap();
    assert!(
        readme.contains(
            "| toy-zs-s1 | id-toy-zs-s1 | 0 | interrupted; resumes after its last finished round \
             (checkpoint.json) |"
        ),
        "{readme}"
    );
}

#[test]
fn mlflow_export_has_one_run_per_cell_with_rounds_as_steps() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), 3, 0.0);
    let out = common::bench(&["report", dir.path().to_str().unwrap(), "--mlflow"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let root = dir.path().join("mlruns");
    let exp = std::fs::read_dir(&root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        std::fs::read_to_string(exp.join("meta.yaml"))
            .unwrap()
            .contains("name: toy")
    );
    let runs: Vec<_> = std::fs::read_dir(&exp)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .collect();
    assert_eq!(
        runs.len(),
        3,
        "three complete cells, the unrun one left out"
    );
    let freeal_run = runs
        .iter()
        .find(|r| {
            std::fs::read_to_string(r.path().join("tags/mlflow.runName")).unwrap()
                == "toy-freeal-s2"
        })
        .unwrap()
        .path();
    let history = std::fs::read_to_string(freeal_run.join("metrics/test_accuracy")).unwrap();
    let steps: Vec<(f64, u32)> = history
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(steps, vec![(0.68, 0), (0.75, 1), (0.79, 2)]);
    assert!(
        freeal_run
            .join("metrics/pool_label_accuracy.positive")
            .is_file()
    );
    assert_eq!(
        std::fs::read_to_string(freeal_run.join("params/slm.epochs")).unwrap(),
        "3"
    );
}

#[test]
fn report_a_b_names_changed_keys_and_moved_metrics() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    experiment(a.path(), 3, 0.0);
    experiment(b.path(), 6, 0.05);
    let (la, lb) = (
        report::load(a.path()).unwrap(),
        report::load(b.path()).unwrap(),
    );
    let d = diff::diff(&la, &lb, None).unwrap();
    assert_eq!(d.config.len(), 1);
    assert_eq!(d.config[0].key, "slm.epochs");
    assert_eq!(
        (d.config[0].a.as_deref(), d.config[0].b.as_deref()),
        (Some("3"), Some("6"))
    );
    assert_eq!(d.config[0].cells, 3);
    let freeal = d.metrics.iter().find(|m| m.row == "freeal").unwrap();
    // +5 points against seeds 0.02 apart: moved. The single-seed AL row cannot be judged.
    assert_eq!(freeal.verdict, diff::Verdict::Moved);
    let al = d.metrics.iter().find(|m| m.row == "al").unwrap();
    assert_eq!(al.verdict, diff::Verdict::NoEstimate);
    let out = common::bench(&[
        "report",
        a.path().to_str().unwrap(),
        b.path().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("| slm.epochs | 3 | 6 | 3 |"), "{text}");
    assert!(text.contains("**moved**"), "{text}");
}

#[test]
fn a_metric_or_round_no_record_has_is_refused_with_what_there_is() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), 3, 0.0);
    let path = dir.path().to_str().unwrap();
    let out = common::bench(&["report", path, "--metric", "test_acc"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`test_acc`")
            && stderr.contains("test_accuracy")
            && stderr.contains("pool_label_accuracy"),
        "{stderr}"
    );
    let out = common::bench(&["report", path, "--round", "7"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("round 7") && stderr.contains("rounds recorded: 0, 1, 2"),
        "{stderr}"
    );
}
