//! Spec layering and validation: errors name the file, the line and the key.

mod common;

use common::{bench, write};
use freeal_bench::config::layer;
use freeal_bench::plan::{Cell, plan};

fn plan_error(spec_text: &str, sets: &[&str]) -> (String, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "spec.toml", spec_text);
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let result = layer(&spec, &sets).and_then(|l| plan(&l));
    let message = result.expect_err("the spec must be rejected").to_string();
    // Only the path's text is compared afterwards, so the directory can go with `dir`.
    (message, spec)
}

#[test]
fn typo_in_a_key_names_key_file_and_line() {
    let (message, spec) = plan_error("[experiment]\nname = \"x\"\n\n[slm]\nmax_lne = 64\n", &[]);
    assert!(
        message.contains(&format!("{}:5", spec.display())),
        "{message}"
    );
    assert!(message.contains("max_lne"), "{message}");
    assert!(
        message.contains("max_len"),
        "the expected keys are listed: {message}"
    );
}

#[test]
fn out_of_range_values_name_their_line() {
    let (message, spec) = plan_error("[experiment]\nname = \"x\"\n[slm]\nmax_len = 0\n", &[]);
    assert!(
        message.contains(&format!("{}:4", spec.display())),
        "{message}"
    );
    assert!(
        message.contains("slm.max_len") && message.contains("1..=512"),
        "{message}"
    );
    let (message, _) = plan_error(
        "[experiment]\nname = \"x\"\n[methods.supervised]\nkind = \"supervised\"\nfraction = 1.5\n",
        &[],
    );
    assert!(
        message.contains("methods.supervised.fraction") && message.contains("(0, 1]"),
        "{message}"
    );
}

#[test]
fn wrong_type_names_the_key() {
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[slm]\nepochs = \"three\"\n",
        &[],
    );
    assert!(message.contains("slm.epochs"), "{message}");
    assert!(
        message.contains(&format!("{}:4", spec.display())),
        "{message}"
    );
}

#[test]
fn set_overrides_and_is_blamed() {
    let (message, _) = plan_error("[experiment]\nname = \"x\"\n", &["slm.batch_size=0"]);
    assert!(message.contains("--set slm.batch_size"), "{message}");
}

#[test]
fn a_set_of_a_swept_key_is_refused_not_silently_replaced() {
    let spec = "[experiment]\nname = \"x\"\n[sweep]\nseed = [1]\n\"slm.lr\" = [1e-5, 3e-5]\n";
    for (set, swept) in [("seed=5", "seed"), ("slm.lr=1e-4", "slm.lr")] {
        let (message, _) = plan_error(spec, &[set]);
        assert!(
            message.contains(&format!("--set {}", set.split('=').next().unwrap()))
                && message.contains(&format!("--set 'sweep.{swept}=[...]'")),
            "{message}"
        );
    }
    // The sweep itself may be overridden, and keys beside a swept one may be set.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "spec.toml", spec);
    let sets = [
        "sweep.seed=[2, 3]".to_string(),
        "slm.warmup_ratio=0.2".to_string(),
    ];
    let cells = plan(&layer(&path, &sets).unwrap()).unwrap().cells;
    let mut seeds: Vec<u64> = cells.iter().map(|c| c.config.seed).collect();
    seeds.sort();
    assert_eq!(seeds, [2, 2, 3, 3]);
    assert!(cells.iter().all(|c| c.config.slm.warmup_ratio == 0.2));
    // The environment layer is shadowed the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["plan", "experiments/sst2.toml"])
        .env("FREEAL_BENCH_SEED", "5")
        .current_dir(common::root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("environment variable FREEAL_BENCH_SEED"),
        "{stderr}"
    );
}

#[test]
fn a_set_of_a_method_no_cell_runs_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"x\"\n[sweep]\nmethod = [\"supervised\"]\n",
    );
    let sets = [
        "methods.freeal.knn=3".to_string(),
        "methods.supervised.fraction=0.5".to_string(),
    ];
    let planned = plan(&layer(&path, &sets).unwrap()).unwrap();
    assert_eq!(planned.warnings.len(), 1, "{:?}", planned.warnings);
    assert!(
        planned.warnings[0].contains("--set methods.freeal.knn")
            && planned.warnings[0].contains("no cell runs method `freeal`")
            && planned.warnings[0].contains("supervised"),
        "{:?}",
        planned.warnings
    );
}

#[test]
fn a_negative_epoch_checkpoint_interval_is_rejected_with_its_line() {
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[run]\nepoch_checkpoint_minutes = -1.0\n",
        &[],
    );
    assert!(
        message.contains(&format!("{}:4", spec.display())),
        "{message}"
    );
    assert!(
        message.contains("run.epoch_checkpoint_minutes") && message.contains("0 or more"),
        "{message}"
    );
}

#[test]
fn bad_sweep_value_points_at_the_sweep() {
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[sweep]\nseed = [1]\n\"slm.max_len\" = [64, 9999]\n",
        &[],
    );
    assert!(
        message.contains(&format!("{}:5 (sweep value)", spec.display())),
        "{message}"
    );
    // A malformed axis of a dotted (quoted) key is found at its [sweep] table.
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[sweep]\n\"slm.lr\" = []\n",
        &[],
    );
    assert!(
        message.contains(&format!("{}:3", spec.display()))
            && message.contains("sweep.slm.lr")
            && message.contains("at least one value"),
        "{message}"
    );
}

#[test]
fn unknown_method_and_dataset_are_explained() {
    let (message, _) = plan_error("method = \"nope\"\n[experiment]\nname = \"x\"\n", &[]);
    assert!(message.contains("`nope` is not defined"), "{message}");
    let (message, _) = plan_error("dataset = \"nope\"\n[experiment]\nname = \"x\"\n", &[]);
    assert!(
        message.contains("unknown dataset `nope`") && message.contains("sst2"),
        "{message}"
    );
}

#[test]
fn sweep_of_two_values_and_three_seeds_is_six_cells_with_stable_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"x\"\n[sweep]\nseed = [1, 2, 3]\n\"slm.lr\" = [1e-5, 3e-5]\n",
    );
    let first = plan(&layer(&spec, &[]).unwrap()).unwrap();
    assert_eq!(first.cells.len(), 6);
    let again = plan(&layer(&spec, &[]).unwrap()).unwrap();
    let ids: Vec<_> = first.cells.iter().map(|c| c.id.clone()).collect();
    assert_eq!(
        ids,
        again.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 6);
    assert!(first.cells.iter().all(|c| c.params.contains_key("slm.lr")));
    // A change that does not alter a cell's numbers (execution settings) keeps the ids.
    let jobs = plan(&layer(&spec, &["run.jobs=2".into()]).unwrap()).unwrap();
    assert_eq!(
        ids,
        jobs.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>()
    );
}

#[test]
fn llm_settings_change_only_the_ids_of_cells_that_call_the_llm() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"x\"\n[sweep]\nmethod = [\"supervised\", \"zero_shot\"]\n",
    );
    let ids = |sets: &[&str]| -> Vec<String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        plan(&layer(&spec, &sets).unwrap())
            .unwrap()
            .cells
            .iter()
            .map(|c| c.id.clone())
            .collect()
    };
    let base = ids(&[]);
    let other_model = ids(&["llm.model=\"other.gguf\""]);
    assert_eq!(base[0], other_model[0], "supervised cell unchanged");
    assert_ne!(base[1], other_model[1], "zero-shot cell changed");
    // Cache location and HTTP limits never change an answer.
    assert_eq!(
        base,
        ids(&["run.llm.cache=\"off\"", "run.llm.concurrency=9"])
    );
    // A bad LLM setting names its key.
    let err = layer(&spec, &["llm.simulated.accuracy=1.5".into()])
        .and_then(|l| plan(&l))
        .unwrap_err()
        .to_string();
    assert!(err.contains("llm.simulated.accuracy"), "{err}");
}

#[test]
fn label_descriptions_reach_the_prompt_and_rekey_only_the_cells_that_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"x\"\n[sweep]\nmethod = [\"supervised\", \"zero_shot\"]\n",
    );
    let cells = |sets: &[&str]| planned(&spec, sets);
    let plain = cells(&[]);
    let described = cells(&["llm.label_descriptions=true"]);
    assert_eq!(plain[0].id, described[0].id, "supervised cell unchanged");
    assert_ne!(plain[1].id, described[1].id, "zero-shot cell re-keyed");
    // Without the switch a classification cell's config holds no description, so describing a
    // dataset's labels leaves its existing cells' ids alone.
    assert!(plain[1].config.dataset.labels.descriptions.is_empty());
    let instruction =
        |c: &freeal_bench::plan::Cell| c.config.llm.as_ref().unwrap().prompt.instruction.clone();
    assert!(
        instruction(&described[1]).contains("negative (the text finds fault with the movie"),
        "{}",
        instruction(&described[1])
    );
    assert!(!instruction(&plain[1]).contains("finds fault"));

    let ner = write(
        dir.path(),
        "ner.toml",
        "[experiment]\nname = \"x\"\n[llm]\nlabel_descriptions = true\n[sweep]\ndataset = [\"conll03\"]\nmethod = [\"zero_shot\"]\n",
    );
    let err = layer(&ner, &[])
        .and_then(|l| plan(&l))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("{}:4", ner.display())) && err.contains("llm.label_descriptions"),
        "{err}"
    );
}

#[test]
fn include_files_layer_below_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "spec.toml",
        "include = [\"test_fixtures/epochs7.toml\"]\n[experiment]\nname = \"x\"\n",
    );
    let include = common::root().join("configs/test_fixtures/epochs7.toml");
    assert!(include.is_file(), "fixture include exists");
    let plan = plan(&layer(&spec, &[]).unwrap()).unwrap();
    assert_eq!(plan.cells[0].config.slm.epochs, 7);
    let overridden = planned(&spec, &["slm.epochs=2"]);
    assert_eq!(overridden[0].config.slm.epochs, 2);
}

/// The cells `spec` plans to with `sets` as `--set` overrides.
fn planned(spec: &std::path::Path, sets: &[&str]) -> Vec<Cell> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    plan(&layer(spec, &sets).unwrap()).unwrap().cells
}

#[test]
fn an_only_pattern_that_matches_no_cell_is_refused() {
    let out = bench(&["plan", "experiments/sst2.toml", "--only", "sst2-freeal-s1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(1 of 3 cells)"), "{stdout}");
    let out = bench(&[
        "plan",
        "experiments/sst2.toml",
        "--only",
        "sst2-freeal-s1",
        "--only",
        "sst2-freal-*",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--only") && stderr.contains("sst2-freal-*") && stderr.contains("3 cells"),
        "{stderr}"
    );
}

#[test]
fn plan_says_when_a_server_models_cost_is_unknown() {
    let http = ["--set", "llm.backend=\"http\""];
    let out = bench(
        &[
            &["plan", "experiments/sst2.toml"][..],
            &http,
            &["--set", "llm.model=\"my-model\""],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("no price for my-model") && stdout.contains("[prices.\"my-model\"]"),
        "{stdout}"
    );
    let out = bench(
        &[
            &["plan", "experiments/sst2.toml"][..],
            &http,
            &["--set", "llm.model=\"gpt-3.5-turbo\""],
        ]
        .concat(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dollars: f64 = stdout
        .split("~$")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no cost in: {stdout}"));
    assert!(dollars > 0.0 && !stdout.contains("no price"), "{stdout}");
}

#[test]
fn cli_plan_lists_cells_and_exits_2_on_bad_input() {
    let out = bench(&["plan", "experiments/sst2.toml"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("sst2-supervised-s1"), "{stdout}");
    assert!(stdout.contains("slm_steps"), "{stdout}");
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.toml",
        "[experiment]\nname = \"x\"\nbogus = 1\n",
    );
    let out = bench(&["plan", "experiments/sst2.toml", "--jobs", "0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--jobs") && !stderr.contains("--set"),
        "{stderr}"
    );
    let out = bench(&["plan", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:3") && stderr.contains("bogus"),
        "{stderr}"
    );
}

#[test]
fn freeal_settings_are_checked_by_name() {
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[methods.freeal]\nr_percent = 0.0\n",
        &[],
    );
    assert!(
        message.contains("methods.freeal.r_percent") && message.contains("(0, 100]"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}:4", spec.display())),
        "{message}"
    );
    let (message, _) = plan_error(
        "[experiment]\nname = \"x\"\n[methods.mine]\nkind = \"freeal\"\nagumentation = \"replay\"\n",
        &[],
    );
    assert!(
        message.contains("agumentation") && message.contains("augmentation"),
        "a typo lists the expected keys: {message}"
    );
    let (message, _) = plan_error(
        "[experiment]\nname = \"x\"\n[methods.mine]\nkind = \"freeal\"\naugmentation = \"backtranslate\"\n",
        &[],
    );
    assert!(
        message.contains("backtranslate") && message.contains("token_edits"),
        "{message}"
    );
    // A bad value inside a `kind`-tagged table names its own key and line, not the table's.
    let (message, spec) = plan_error(
        "[experiment]\nname = \"x\"\n[methods.mine]\nkind = \"freeal\"\nrounds = 1\n\
         clean_split = \"xyz\"\n",
        &[],
    );
    assert!(
        message.contains(&format!("{}:6", spec.display()))
            && message.contains("methods.mine.clean_split")
            && message.contains("per_class"),
        "{message}"
    );
    let (message, _) = plan_error(
        "[experiment]\nname = \"x\"\n",
        &["methods.freeal.rounds=-1"],
    );
    assert!(
        message.contains("--set methods.freeal.rounds") && message.contains("-1"),
        "{message}"
    );
}

#[test]
fn a_warm_up_that_fills_the_schedule_is_rejected() {
    let (message, spec) = plan_error(
        "method = \"freeal\"\n[experiment]\nname = \"x\"\n[slm]\nepochs = 3\n[methods.freeal]\nwarmup_epochs = 3\n",
        &[],
    );
    assert!(
        message.contains("methods.freeal.warmup_epochs") && message.contains("slm.epochs (3)"),
        "{message}"
    );
    assert!(
        message.contains(&format!("{}:7", spec.display())),
        "{message}"
    );
}

#[test]
fn attention_dropout_follows_dropout_unless_set_and_is_range_checked() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"x\"\n[slm]\ndropout = 0.3\n",
    );
    let dropouts = |sets: &[&str]| planned(&spec, sets)[0].config.slm.dropouts();
    let same = dropouts(&[]);
    assert_eq!((same.hidden, same.attention), (0.3, 0.3));
    let split = dropouts(&["slm.attention_dropout=0.1"]);
    assert_eq!((split.hidden, split.attention), (0.3, 0.1));
    let (message, _) = plan_error(
        "[experiment]\nname = \"x\"\n[slm]\nattention_dropout = 1.5\n",
        &[],
    );
    assert!(
        message.contains("slm.attention_dropout") && message.contains("[0, 1)"),
        "{message}"
    );
}

#[test]
fn the_dense_tanh_head_rekeys_cells_and_the_default_keeps_their_ids() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write(dir.path(), "spec.toml", "[experiment]\nname = \"x\"\n");
    let ids =
        |sets: &[&str]| -> Vec<String> { planned(&spec, sets).into_iter().map(|c| c.id).collect() };
    let base = ids(&[]);
    // Cells recorded before the key existed plan as complete: the default is left out of ids.
    assert_eq!(base, ids(&["slm.head=\"linear\""]));
    let dense = ids(&["slm.head=\"dense_tanh\""]);
    assert!(base.iter().zip(&dense).all(|(a, b)| a != b));
    let (message, _) = plan_error("[experiment]\nname = \"x\"\n[slm]\nhead = \"mlp\"\n", &[]);
    assert!(
        message.contains("slm.head") && message.contains("dense_tanh"),
        "{message}"
    );
}

#[test]
fn a_dataset_without_a_prompt_file_says_how_to_give_one() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "all.txt", "0 bad\n1 good\n0 dull\n1 fine\n");
    write(
        dir.path(),
        "mine.toml",
        "name = \"mine\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n\
         [files]\ntrain = \"all.txt\"\ntest = \"all.txt\"\n[labels]\nnames = [\"n\", \"p\"]\n",
    );
    let body =
        "dataset = \"mine.toml\"\n[experiment]\nname = \"x\"\n[sweep]\nmethod = [\"zero_shot\"]\n";
    let spec = write(dir.path(), "spec.toml", body);
    let message = layer(&spec, &[])
        .and_then(|l| plan(&l))
        .expect_err("no prompt for `mine`")
        .to_string();
    assert!(
        message.contains("llm.prompts")
            && message.contains("`mine` has no prompt file")
            && message.contains("configs/prompts/sst2.toml"),
        "{message}"
    );
    // Naming a shipped prompt file is the fix.
    let spec = write(
        dir.path(),
        "spec.toml",
        &format!("{body}[llm]\nprompts = \"prompts/sst2.toml\"\n"),
    );
    assert!(layer(&spec, &[]).and_then(|l| plan(&l)).is_ok());
}
