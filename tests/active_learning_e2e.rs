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

/// LLMaAA against its own loop without reweighting, under a simulated 70%-accurate oracle:
/// 200 acquired labels and 20 epochs, long enough for the tiny encoder to fit the wrong labels
/// (the regime Ren et al.'s reweighting is for; BENCHMARKS' SST-2 run at 4 epochs is not in it).
#[test]
fn llm_oracle_with_reweighting_holds_out_its_gold_sets_and_beats_noise() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = common::write(
        dir.path(),
        "llmaaa.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"al_toy\"\nmetric = \"test_accuracy\"\n\
             [methods.llmaaa]\nbudget = 200.0\ninitial = 20.0\nrounds = 1\ndemo_pool = 20\n\
             meta_set = 30\n{}\n[llm]\nbackend = \"simulated\"\nprompts = \"{}\"\n\
             [llm.simulated]\naccuracy = 0.7\n[run]\nresults_dir = \"{}\"\n\
             [sweep]\nmethod = [\"llmaaa\"]\nseed = [1, 2, 3]\n\"slm.head\" = [\"linear\", \"dense_tanh\"]\n\
             \"methods.llmaaa.reweight\" = [true, false]\n",
            dataset.display(),
            common::tiny_slm_toml().replace("epochs = 8", "epochs = 20"),
            common::root().join("configs/prompts/sst2.toml").display(),
            dir.path().join("results").display()
        ),
    );
    common::run_spec(&spec);
    let mut cells = Vec::new();
    for cell in std::fs::read_dir(dir.path().join("results/al_toy/cells")).unwrap() {
        let records = common::cell_records(&cell.unwrap().path());
        let params = records[0]["params"].as_str().unwrap().to_string();
        let reweight = params.contains("reweight=true");
        check_llmaaa_rounds(records.as_array().unwrap(), reweight);
        let last = &records[1]["metrics"];
        cells.push((params, records[0]["seed"].as_u64().unwrap(), last.clone()));
    }
    assert_eq!(cells.len(), 12);
    // The outcome is asserted under the default head (see below).
    let linear = |reweight: bool| format!("methods.llmaaa.reweight={reweight},slm.head=linear");
    let accuracy = |reweight: bool| -> f64 {
        let wanted = linear(reweight);
        let accs: Vec<f64> = cells
            .iter()
            .filter(|(p, _, _)| *p == wanted)
            .map(|(_, _, m)| m["test_accuracy"].as_f64().unwrap())
            .collect();
        assert_eq!(accs.len(), 3, "{wanted}");
        accs.iter().sum::<f64>() / 3.0
    };
    // Under the default head, on every seed the weights favour right labels, and the mean
    // over seeds beats the unweighted loop (0.945 / 0.825 / 0.97 against 0.9 / 0.775 / 0.92
    // at the time of writing). The dense-tanh head is checked for its invariants only: on seed 2
    // its reweighted loop stalls at one class (51.5%), its weights putting 42% on the 34% of
    // labels that are wrong. The stall is the reweighting's, not the head's: at lr 1e-3 the
    // linear head's reweighted loop stalls on seed 2 too, where the unweighted one learns.
    for (params, seed, m) in &cells {
        if *params == linear(true) {
            let on_wrong = m["reweight_weight_on_wrong"].as_f64().unwrap();
            let share = m["reweight_wrong_label_fraction"].as_f64().unwrap();
            assert!(
                on_wrong < share,
                "seed {seed}: {on_wrong} of the weight on a {share} share"
            );
        }
    }
    let (weighted, plain) = (accuracy(true), accuracy(false));
    assert!(weighted > plain + 0.03, "{weighted} vs {plain}");
}

fn check_llmaaa_rounds(rounds: &[serde_json::Value], reweight: bool) {
    assert_eq!(rounds.len(), 2);
    let m = |r: usize, k: &str| rounds[r]["metrics"][k].as_f64().unwrap();
    // Gold labels: the demo pool, and the meta set when reweighting; the LLM labels what AL
    // acquires.
    let meta = if reweight { 30.0 } else { 0.0 };
    assert_eq!(m(1, "gold_labels_used"), 20.0 + meta);
    assert_eq!(
        (m(0, "labels_acquired"), m(1, "labels_acquired")),
        (20.0, 200.0)
    );
    assert_eq!(rounds[0]["llm"]["calls"].as_f64().unwrap(), 20.0);
    assert_eq!(rounds[1]["llm"]["calls"].as_f64().unwrap(), 180.0);
    let noisy = m(1, "acquired_label_accuracy");
    assert!(
        (0.55..0.85).contains(&noisy),
        "simulated 70% labels: {noisy}"
    );
    if !reweight {
        assert!(
            rounds[1]["metrics"]
                .get("reweight_weight_on_wrong")
                .is_none()
        );
        return;
    }
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
