//! Active learning with the gold oracle on the toy set: the learning curve follows the budget
//! schedule and the last round, with the full budget, beats the seed set.

mod common;

#[test]
fn learning_curve_follows_the_schedule_and_improves() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = common::write(
        dir.path(),
        "al.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"al_toy\"\nmetric = \"test_accuracy\"\n\
             [methods.al]\nkind = \"active_learning\"\nacquisition = \"entropy\"\nbudget = 0.25\n\
             initial = 8.0\nrounds = 2\n{}\n[run]\nresults_dir = \"{}\"\n\
             [sweep]\nmethod = [\"al\"]\nseed = [2]\n",
            dataset.display(),
            common::tiny_slm_toml(),
            dir.path().join("results").display()
        ),
    );
    common::run_spec(&spec);
    let records = common::only_cell_records(&dir.path().join("results/al_toy"));
    let rounds = records.as_array().unwrap();
    let used: Vec<f64> = rounds
        .iter()
        .map(|r| r["metrics"]["gold_labels_used"].as_f64().unwrap())
        .collect();
    // 400 pool examples: 8 seeds, then (100 - 8) split over 2 rounds.
    assert_eq!(used, vec![8.0, 54.0, 100.0]);
    let acc = |r: usize| rounds[r]["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(acc(2) > acc(0), "{} vs {}", acc(2), acc(0));
    assert!(
        acc(2) > 0.9,
        "100 gold labels learn the toy rule: {}",
        acc(2)
    );
}

#[test]
fn llm_oracle_with_reweighting_holds_out_its_gold_sets() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = common::write(
        dir.path(),
        "llmaaa.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"al_toy\"\nmetric = \"test_accuracy\"\n\
             [methods.llmaaa]\nbudget = 60.0\ninitial = 20.0\nrounds = 1\ndemo_pool = 20\n\
             meta_set = 30\n{}\n[llm]\nbackend = \"simulated\"\nprompts = \"{}\"\n\
             [llm.simulated]\naccuracy = 0.7\n[run]\nresults_dir = \"{}\"\n\
             [sweep]\nmethod = [\"llmaaa\"]\nseed = [4]\n\"slm.head\" = [\"linear\", \"dense_tanh\"]\n",
            dataset.display(),
            common::tiny_slm_toml(),
            common::root().join("configs/prompts/sst2.toml").display(),
            dir.path().join("results").display()
        ),
    );
    common::run_spec(&spec);
    // Under either head: the closed form covers the output layer, which reads the dense
    // layer's tanh under dense_tanh.
    let cells = dir.path().join("results/al_toy/cells");
    let mut heads = Vec::new();
    for cell in std::fs::read_dir(&cells).unwrap() {
        let records = common::cell_records(&cell.unwrap().path());
        heads.push(records[0]["params"].as_str().unwrap().to_string());
        check_llmaaa_rounds(records.as_array().unwrap());
    }
    heads.sort();
    assert_eq!(heads, ["slm.head=dense_tanh", "slm.head=linear"]);
}

fn check_llmaaa_rounds(rounds: &[serde_json::Value]) {
    assert_eq!(rounds.len(), 2);
    let m = |r: usize, k: &str| rounds[r]["metrics"][k].as_f64().unwrap();
    // Gold labels: the demo pool and the meta set only; the LLM labels what AL acquires.
    assert_eq!(m(1, "gold_labels_used"), 50.0);
    assert_eq!(
        (m(0, "labels_acquired"), m(1, "labels_acquired")),
        (20.0, 60.0)
    );
    assert_eq!(rounds[0]["llm"]["calls"].as_f64().unwrap(), 20.0);
    assert_eq!(rounds[1]["llm"]["calls"].as_f64().unwrap(), 40.0);
    let noisy = m(1, "acquired_label_accuracy");
    assert!((0.5..0.9).contains(&noisy), "simulated 70% labels: {noisy}");
    // The weights' own record: shares in [0, 1], and the wrong-label share the trained examples
    // had is the acquired labels' error rate seen over the epochs.
    for key in [
        "reweight_zeroed_fraction",
        "reweight_dead_batch_fraction",
        "reweight_weight_on_wrong",
        "reweight_wrong_label_fraction",
    ] {
        assert!((0.0..=1.0).contains(&m(1, key)), "{key} = {}", m(1, key));
    }
    let wrong = m(1, "reweight_wrong_label_fraction");
    assert!((wrong - (1.0 - noisy)).abs() < 1e-9, "{wrong} vs {noisy}");
}
