//! FreeAL end to end on a learnable toy task whose LLM labels come from the simulated annotator
//! (gold labels through 30% symmetric noise): the robust self-training must recover more than
//! its noisy labels hold, and its clean split must be cleaner than the labels as a whole.

mod common;

use freeal_bench::methods::freeal::self_train::split_losses;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn spec(dir: &Path, dataset: &Path, extra: &str) -> PathBuf {
    common::write(
        dir,
        "freeal.toml",
        &format!(
            r#"
dataset = "{dataset}"
[experiment]
name = "freeal_toy"
metric = "test_accuracy"

[methods.freeal_toy]
kind = "freeal"
initial = "zero_shot"     # the simulated annotator cannot write demonstrations
rounds = 1
warmup_epochs = 2
rampup_epochs = 2.0
medoids_per_class = 10
{extra}

[llm]
backend = "simulated"
prompts = "{prompts}"
[llm.simulated]
accuracy = 0.7

{slm}
[run]
results_dir = "{results}"

[sweep]
method = ["freeal_toy"]
seed = [5]
"#,
            dataset = dataset.display(),
            prompts = common::root().join("configs/prompts/sst2.toml").display(),
            slm = common::tiny_slm_toml(),
            results = dir.join("results").display(),
            extra = extra,
        ),
    )
}

/// Round `r`'s metric `key`, which must be there.
fn metric(rounds: &[serde_json::Value], r: usize, key: &str) -> f64 {
    rounds[r]["metrics"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing from round {r}"))
}

#[test]
fn freeal_learns_past_its_noisy_labels() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = spec(dir.path(), &dataset, "");
    common::run_spec(&spec);
    let records = common::only_cell_records(&dir.path().join("results/freeal_toy"));
    let rounds = records.as_array().unwrap();
    assert_eq!(rounds.len(), 2, "round 0 and one refinery round");
    let m = |r: usize, k: &str| metric(rounds, r, k);
    let labels = m(0, "pool_label_accuracy");
    assert!(
        (0.62..0.78).contains(&labels),
        "simulated 70% labels: {labels}"
    );
    // The SLM generalises past the accuracy of the labels it was trained on ...
    assert!(m(0, "test_accuracy") > labels + 0.15, "{}", rounds[0]);
    // ... and the GMM's clean set is far cleaner than the labels overall.
    assert!(m(0, "clean_precision") > labels + 0.15, "{}", rounds[0]);
    // The refinery asked the LLM again only about the examples outside the clean set.
    let clean = m(0, "clean_count");
    assert_eq!(m(1, "relabeled"), 400.0 - clean);
    assert_eq!(rounds[1]["llm"]["calls"].as_f64().unwrap(), 400.0 - clean);
    // Only the P% variant (label_fraction < 1) labels a share for the first time.
    assert!(rounds[1]["metrics"].get("newly_labeled").is_none());
    assert!(m(1, "demo_pool_size") > 0.0);
    assert_eq!(m(0, "gold_labels_used"), 0.0);
    assert_eq!(
        m(0, "clean_count[negative]") + m(0, "clean_count[positive]"),
        clean
    );
    // Each round's labels file carries the losses its split saw: the split recomputed from that
    // column (FreeAL's global split, threshold 0.7) gives the file's clean flags and posteriors.
    let cell = common::only_cell(&dir.path().join("results/freeal_toy"));
    for round in 0..2 {
        let file = std::fs::read_to_string(cell.join(format!("labels_round{round}.csv"))).unwrap();
        let mut lines = file.lines();
        assert_eq!(
            lines.next(),
            Some("index,gold,label,clean,clean_posterior,slm_pred,loss")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 400);
        let losses: Vec<Option<f64>> = rows
            .iter()
            .map(|r| (!r[6].is_empty()).then(|| r[6].parse().unwrap()))
            .collect();
        assert!(rows.iter().all(|r| r[2].is_empty() == r[6].is_empty()));
        let split = split_losses(&losses, 0.7);
        for (row, (clean, posterior)) in rows.iter().zip(split.clean.iter().zip(&split.posterior)) {
            assert_eq!(
                row[3],
                if *clean { "1" } else { "0" },
                "round {round}: {row:?}"
            );
            assert_eq!(row[4], format!("{posterior:.4}"), "round {round}: {row:?}");
        }
        assert!(split.clean.iter().any(|c| *c) && split.clean.iter().any(|c| !c));
    }
    // The split trace has one row per epoch after the 2 warm-up epochs (8 epochs in all), each
    // clean set as large as its per-label counts say, and each split's loss AUROC (the
    // toy's labels have wrong ones) a probability.
    let trace = std::fs::read_to_string(cell.join("split_trace_round0.csv")).unwrap();
    let mut lines = trace.lines();
    assert_eq!(
        lines.next(),
        Some(
            "epoch,clean,clean[negative],clean[positive],clean_precision,loss_auroc,\
             loss_auroc[negative],loss_auroc[positive]"
        )
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').take(6).map(|v| v.parse().unwrap()).collect())
        .collect();
    let epochs: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(epochs, vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    assert!(
        rows.iter()
            .all(|r| r[1] == r[2] + r[3] && r[1] > 0.0 && (0.0..=1.0).contains(&r[5])),
        "{trace}"
    );
    // `report --round` summarises any round from the records.
    let results = dir.path().join("results/freeal_toy");
    let lines = common::read_jsonl(&results.join("records.jsonl"));
    assert_eq!(lines.len(), 2, "one JSON line per cell-round");
    assert_eq!(lines[1]["metrics"], rounds[1]["metrics"]);
    let out = common::bench(&[
        "report",
        results.to_str().unwrap(),
        "--round",
        "0",
        "--metric",
        "test_accuracy",
    ]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("round 0"), "{table}");
    let shown = format!("| freeal_toy | {:.2} |", m(0, "test_accuracy") * 100.0);
    assert!(table.contains(&shown), "{table} lacks {shown}");
}

#[test]
fn split_schedule_after_warmup_trains_every_epoch_on_the_first_split() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = spec(dir.path(), &dataset, "split_schedule = \"after_warmup\"");
    common::run_spec(&spec);
    let cell = common::only_cell(&dir.path().join("results/freeal_toy"));
    let trace = std::fs::read_to_string(cell.join("split_trace_round0.csv")).unwrap();
    let rows: Vec<&str> = trace.lines().skip(1).collect();
    assert_eq!(
        rows.len(),
        6,
        "one row per epoch after the warm-up: {trace}"
    );
    // Everything but the epoch number is the same split, and it kept a clean set; only the
    // first epoch fitted it, so only that row has losses to score.
    let columns = |r: &str| r.split(',').map(str::to_string).collect::<Vec<_>>();
    assert!(
        rows.iter()
            .all(|r| columns(r)[1..5] == columns(rows[0])[1..5]),
        "{trace}"
    );
    assert!(columns(rows[0])[5].parse::<f64>().is_ok(), "{trace}");
    assert!(rows[1..].iter().all(|r| r.ends_with(",-,-,-")), "{trace}");
    let clean: f64 = rows[0].split(',').nth(1).unwrap().parse().unwrap();
    assert!(clean > 0.0, "{trace}");
    let records = common::only_cell_records(&dir.path().join("results/freeal_toy"));
    let round0 = &records.as_array().unwrap()[0]["metrics"];
    let labels = round0["pool_label_accuracy"].as_f64().unwrap();
    assert!(
        round0["test_accuracy"].as_f64().unwrap() > labels + 0.15,
        "{round0}"
    );
}

#[test]
fn label_fraction_labels_a_share_per_round_and_token_edits_cover_every_text() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = spec(
        dir.path(),
        &dataset,
        "label_fraction = 0.5\naugmentation = \"token_edits\"\nllm_test = true",
    );
    common::run_spec(&spec);
    let records = common::only_cell_records(&dir.path().join("results/freeal_toy"));
    let rounds = records.as_array().unwrap();
    let m = |r: usize, k: &str| metric(rounds, r, k);
    assert_eq!(m(0, "pool_label_coverage"), 0.5);
    assert_eq!(rounds[0]["llm"]["calls"].as_f64().unwrap(), 200.0);
    // Round 1 labels the other half and relabels the noisy part of the first.
    assert_eq!(m(1, "pool_label_coverage"), 1.0);
    assert_eq!(
        (m(0, "newly_labeled"), m(1, "newly_labeled")),
        (200.0, 200.0)
    );
    assert!(m(1, "relabeled") >= 200.0);
    assert_eq!(m(0, "augmentation_coverage"), 1.0);
    // llm_test: after the last round only, the LLM labels every test example once (the
    // simulated annotator answers 70% right whatever the demonstrations).
    assert!(rounds[0]["metrics"].get("llm_test_accuracy").is_none());
    let llm_test = m(1, "llm_test_accuracy");
    assert!((0.55..0.85).contains(&llm_test), "{llm_test}");
    let test_size = common::only_cell(&dir.path().join("results/freeal_toy")).join("split.json");
    let split: serde_json::Value =
        serde_json::from_slice(&std::fs::read(test_size).unwrap()).unwrap();
    let tests = split["test"].as_f64().unwrap();
    assert!(rounds[1]["llm"]["calls"].as_f64().unwrap() >= m(1, "relabeled") + tests);
    assert!(m(1, "llm_test_demo_pool_size") > 0.0);
}

#[test]
fn killed_cell_resumes_from_its_round_checkpoint_with_the_same_records() {
    // label_fraction < 1 draws each round's new examples among those not asked yet, so a
    // resume that lost who was asked would label other examples.
    let two_rounds = |dir: &Path, dataset: &Path| {
        let path = spec(dir, dataset, "label_fraction = 0.3");
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("rounds = 1", "rounds = 2")).unwrap();
        path
    };
    let reference = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(reference.path());
    common::run_spec(&two_rounds(reference.path(), &dataset));
    let want = common::only_cell_records(&reference.path().join("results/freeal_toy"));

    let interrupted = tempfile::tempdir().unwrap();
    let spec = two_rounds(interrupted.path(), &dataset);
    let experiment = interrupted.path().join("results/freeal_toy");
    let checkpoint = kill_when(&spec, "checkpoint", || {
        std::fs::read_dir(experiment.join("cells"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("checkpoint.json"))
            .find(|p| p.is_file())
    });
    let cell = checkpoint.parent().unwrap().to_path_buf();
    assert!(!cell.join("records.json").exists(), "killed mid-cell");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let done = saved["outcomes"].as_array().unwrap().len();
    let plan = common::bench(&["plan", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(said.contains("resumable"), "{said}");

    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("resuming after round {}", done - 1)),
        "{stderr}"
    );
    let got = common::only_cell_records(&experiment);
    let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(got.len(), 3);
    for (round, (g, w)) in got.iter().zip(want).enumerate() {
        for key in ["metrics", "llm", "slm_steps"] {
            assert_eq!(g[key], w[key], "round {round}: {key}");
        }
        if round < done {
            // Restored, not trained again.
            assert_eq!(
                g["wall_s"], saved["outcomes"][round]["wall_s"],
                "round {round}"
            );
        }
    }
    assert!(!checkpoint.exists(), "a complete cell keeps no checkpoint");
}

#[test]
fn killed_self_training_resumes_from_its_epoch_checkpoint_with_the_same_outputs() {
    // One round, checkpointed after every epoch; killed after the split has begun (warm-up 2 of
    // 8 epochs), so the resumed run needs the weights, the optimiser's moments, both random
    // streams, the dropout draws and the split so far to end where an unbroken run does.
    let one_round = |dir: &Path, dataset: &Path| {
        let path = spec(dir, dataset, "");
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replace("rounds = 1", "rounds = 0")
            .replace("[run]\n", "[run]\nepoch_checkpoint_minutes = 0.0\n");
        std::fs::write(&path, text).unwrap();
        path
    };
    let reference = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(reference.path());
    common::run_spec(&one_round(reference.path(), &dataset));
    let want_cell = common::only_cell(&reference.path().join("results/freeal_toy"));

    let interrupted = tempfile::tempdir().unwrap();
    let spec = one_round(interrupted.path(), &dataset);
    let experiment = interrupted.path().join("results/freeal_toy");
    let done = kill_when(&spec, "checkpoint after epoch 3", || {
        std::fs::read_dir(experiment.join("cells"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read(e.path().join("epoch_checkpoint.json")).ok())
            .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter_map(|v| v["position"]["epochs_done"].as_u64())
            .find(|&done| done >= 3)
    });
    let cell = common::only_cell(&experiment);
    assert!(!cell.join("records.json").exists(), "killed mid-cell");
    // The split trace is written as the round trains: what the killed run left is the start of
    // the finished trace, from the first split (epoch 3) on.
    let live = std::fs::read_to_string(cell.join("split_trace_round0.csv")).unwrap();
    let finished = std::fs::read_to_string(want_cell.join("split_trace_round0.csv")).unwrap();
    assert!(live.lines().nth(1).unwrap().starts_with("3,"), "{live}");
    assert!(finished.starts_with(&live), "{live}\nvs\n{finished}");
    let plan = common::bench(&["plan", spec.to_str().unwrap()]);
    let said = String::from_utf8_lossy(&plan.stdout);
    assert!(said.contains("resumable"), "{said}");

    // Weights that cannot be read back (a torn copy, another version's model) stop the cell
    // with a way out, and leave the checkpoint for the next try.
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cell.join("epoch_checkpoint.json")).unwrap())
            .unwrap();
    let weights = cell.join(saved["model_file"].as_str().unwrap());
    let intact = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &intact[..intact.len() / 2]).unwrap();
    let torn = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let said = String::from_utf8_lossy(&torn.stderr);
    assert!(!torn.status.success(), "{said}");
    assert!(
        said.contains("restoring the training state") && said.contains("epoch_*.bpk"),
        "{said}"
    );
    assert!(!cell.join("records.json").exists());
    std::fs::write(&weights, &intact).unwrap();

    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The file may have moved on past `done` between the read and the kill.
    let resumed_after = stderr
        .split("self-training after epoch ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no resume said: {stderr}"));
    assert!(
        (done..8).contains(&resumed_after),
        "{resumed_after} vs {done}"
    );
    let (got, want) = (
        common::only_cell_records(&experiment),
        common::only_cell_records(&reference.path().join("results/freeal_toy")),
    );
    for key in ["metrics", "slm_steps"] {
        assert_eq!(got[0][key], want[0][key], "{key}");
    }
    for file in ["labels_round0.csv", "split_trace_round0.csv"] {
        assert_eq!(
            std::fs::read(cell.join(file)).unwrap(),
            std::fs::read(want_cell.join(file)).unwrap(),
            "{file}"
        );
    }
    let left: Vec<_> = std::fs::read_dir(&cell)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("epoch_"))
        .collect();
    assert!(
        left.is_empty(),
        "a complete cell keeps no epoch checkpoint: {left:?}"
    );
}

/// Runs `spec` in a child process and kills it (SIGKILL: no chance to clean up) as soon as
/// `found` sees what it waits for (`what`, for the failure message); returns what it saw.
fn kill_when<T>(spec: &Path, what: &str, mut found: impl FnMut() -> Option<T>) -> T {
    let mut child = Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["run", spec.to_str().unwrap(), "--backend", "cpu"])
        .current_dir(common::root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let seen = loop {
        if let Some(seen) = found() {
            break seen;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "no {what}");
        assert!(child.try_wait().unwrap().is_none(), "ended before a {what}");
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    seen
}

#[test]
fn an_unusable_refinery_answer_masks_the_label_until_the_next_round_asks_again() {
    use std::sync::Arc;
    // Zero-shot answers follow the toy set's cue words (every label right); shown
    // demonstrations, the LLM answers nothing a label can be read from.
    let server = common::llm_server::serve(Arc::new(|body: &serde_json::Value, _| {
        let answer = match common::llm_server::demonstrations_shown(body) {
            0 => common::llm_server::toy_sentiment(body),
            _ => common::llm_server::chat_answer("no idea", &[("no", 1.0)]),
        };
        common::llm_server::Reply::Json(200, answer)
    }));
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = spec(dir.path(), &dataset, "");
    common::edit(&spec, |text| {
        let text = text.replace("rounds = 1\n", "rounds = 2\n");
        common::llm_server::serve_spec(text, &server.url, &dir.path().join("cache.sqlite"))
    });
    common::run_spec(&spec);
    let records = common::only_cell_records(&dir.path().join("results/freeal_toy"));
    let rounds = records.as_array().unwrap();
    let m = |r: usize, k: &str| metric(rounds, r, k);
    let pool = 400.0;
    assert_eq!(m(0, "pool_label_accuracy"), 1.0);
    for r in [1, 2] {
        // Every example outside the previous round's clean set is asked, and loses its label
        // to the unusable answer: masked, never guessed.
        let asked = pool - m(r - 1, "clean_count");
        assert!(asked > 0.0, "round {r} asked nothing");
        assert_eq!(m(r, "relabeled"), asked, "round {r}");
        assert_eq!(rounds[r]["llm"]["unparsable"].as_f64(), Some(asked));
        assert_eq!(m(r, "pool_label_coverage"), 1.0 - asked / pool, "round {r}");
        assert_eq!(m(r, "relabel_fixed"), 0.0);
    }
    // Round 1's masked examples are never clean, so round 2 asks each of them again.
    assert!(m(2, "relabeled") >= m(1, "relabeled"));
    assert_eq!(m(1, "relabel_changed"), m(1, "relabeled"));
    assert_eq!(m(1, "relabel_broken"), m(1, "relabeled"));
}
