//! NER end to end on a learnable toy corpus (person and city names among filler words, CoNLL
//! columns): zero-shot and k-NN ICL extraction, FreeAL, the gold-tag tagger, active learning and
//! LLMaAA, with
//! the simulated annotator answering span-extraction requests (each gold entity kept at 70%,
//! else dropped or retyped).

mod common;

use std::path::{Path, PathBuf};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 500 sentences in CoNLL columns (IOB2), 40% held out for test.
fn toy_ner(dir: &Path) -> PathBuf {
    let filler = [
        "the", "met", "in", "said", "on", "today", "visited", "with", "from", "and", "talks",
        "after", "a", "report",
    ];
    let people = [
        ["Alice", "Moreau"],
        ["Bob", "Tanaka"],
        ["Carla", "Diaz"],
        ["Deng", "Wei"],
        ["Erik", "Olsen"],
    ];
    let cities = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Quito"];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut rows = String::new();
    for _ in 0..500 {
        let mut tokens: Vec<(String, &str)> = (0..5)
            .map(|_| (filler.choose(&mut rng).unwrap().to_string(), "O"))
            .collect();
        if rng.random_bool(0.8) {
            let [first, last] = *people.choose(&mut rng).unwrap();
            let at = rng.random_range(0..=tokens.len());
            tokens.insert(at, (last.to_string(), "I-PER"));
            tokens.insert(at, (first.to_string(), "B-PER"));
        }
        if rng.random_bool(0.7) {
            let at = rng.random_range(0..=tokens.len());
            let city = cities.choose(&mut rng).unwrap().to_string();
            // Never inside a person's name.
            let at = if at > 0 && tokens[at - 1].1 == "B-PER" {
                at + 1
            } else {
                at
            };
            tokens.insert(at, (city, "B-LOC"));
        }
        for (token, tag) in tokens {
            rows.push_str(&format!("{token}\t{tag}\n"));
        }
        rows.push('\n');
    }
    common::write(dir, "toyner/all.tsv", &rows);
    common::write(
        dir,
        "toyner/dataset.toml",
        "name = \"toyner\"\ntask = \"ner\"\n[format]\nkind = \"conll\"\ntoken_column = 0\n\
         tag_column = -1\nscheme = \"bio\"\n[files]\ntrain = \"all.tsv\"\n[split]\n\
         test_fraction = 0.4\n[labels]\nnames = [\"PER\", \"LOC\"]\n\
         [labels.descriptions]\nPER = \"person\"\nLOC = \"city\"\n",
    )
}

fn spec(dir: &Path, dataset: &Path, methods: &str, initial: &str) -> PathBuf {
    spec_with(dir, dataset, methods, initial, false)
}

fn spec_with(dir: &Path, dataset: &Path, methods: &str, initial: &str, reweight: bool) -> PathBuf {
    common::write(
        dir,
        "ner.toml",
        &format!(
            r#"
dataset = "{dataset}"
[experiment]
name = "ner_toy"
metric = "test_f1"

[methods.freeal_ner]
kind = "freeal"
initial = "{initial}"
rounds = 1
warmup_epochs = 3
rampup_epochs = 2.0
medoids_per_class = 10
demos_per_class = 2

[methods.knn_ner]
kind = "icl"
demos = "knn"
k = 2
demo_pool = 20
label_pool = true

[methods.al_ner]
kind = "active_learning"
acquisition = "entropy"
token_reduction = "max"
budget = 60.0
initial = 20.0
rounds = 2

[methods.llmaaa_ner]
kind = "active_learning"
oracle = "llm"
acquisition = "entropy"
budget = 60.0
initial = 20.0
rounds = 2
k = 2
demo_pool = 20
reweight = {reweight}
meta_set = 40

[llm]
backend = "simulated"
prompts = "{prompts}"
[llm.simulated]
accuracy = 0.7

{slm}
[run]
results_dir = "{results}"

[sweep]
method = [{methods}]
seed = [2]
"#,
            dataset = dataset.display(),
            prompts = common::root()
                .join("configs/prompts/conll03.toml")
                .display(),
            slm = common::tiny_slm_toml(),
            results = dir.join("results").display(),
        ),
    )
}

fn cell_dir(dir: &Path, cell: &str) -> PathBuf {
    let cells = dir.join("results/ner_toy/cells");
    std::fs::read_dir(&cells)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().contains(cell))
        .unwrap_or_else(|| panic!("no cell {cell} under {}", cells.display()))
}

fn records(dir: &Path, cell: &str) -> Vec<serde_json::Value> {
    common::cell_records(&cell_dir(dir, cell))
        .as_array()
        .unwrap()
        .clone()
}

/// Rewrites the spec at `path` to sweep `slm.head` over both heads, after `edit`.
fn sweep_both_heads(path: &Path, edit: impl FnOnce(String) -> String) {
    common::edit(path, |text| {
        edit(text).replace(
            "[sweep]\n",
            "[sweep]\n\"slm.head\" = [\"linear\", \"dense_tanh\"]\n",
        )
    });
}

fn metric(round: &serde_json::Value, key: &str) -> f64 {
    round["metrics"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing from {round}"))
}

#[test]
fn zero_shot_freeal_and_supervised_tag_entities() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(
        dir.path(),
        &dataset,
        r#""zero_shot", "freeal_ner", "supervised""#,
        "zero_shot",
    );
    common::run_spec(&spec);

    // Zero-shot: 70% of entities kept, 15% dropped, 15% retyped -> P = 0.7 / 0.85, R = 0.7.
    let zs = &records(dir.path(), "zero_shot")[0];
    let f1 = metric(zs, "test_f1");
    assert!((0.68..0.84).contains(&f1), "simulated zero-shot F1 {f1}");
    assert_eq!(metric(zs, "test_unparsable_rate"), 0.0);
    assert_eq!(metric(zs, "test_span_unmatched_rate"), 0.0);

    let rounds = records(dir.path(), "freeal_ner");
    assert_eq!(rounds.len(), 2, "round 0 and one refinery round");
    let labels_f1 = metric(&rounds[0], "pool_label_f1");
    assert!((0.68..0.84).contains(&labels_f1), "{labels_f1}");
    // The tagger's entities are more precise than the labels it learned from (it does not
    // learn the retyped ones) ...
    assert!(
        metric(&rounds[0], "test_precision") > metric(&rounds[0], "pool_label_precision") + 0.05,
        "{}",
        rounds[0]
    );
    // ... and the GMM's clean sentences are exactly right far more often than the rest.
    assert!(
        metric(&rounds[0], "clean_precision")
            > metric(&rounds[0], "pool_label_sentence_accuracy") + 0.1,
        "{}",
        rounds[0]
    );
    // Only the noisy sentences went back to the LLM, with pool demonstrations.
    let pool = 300.0;
    let noisy = pool - metric(&rounds[0], "clean_count");
    assert_eq!(metric(&rounds[1], "relabeled"), noisy);
    assert_eq!(rounds[1]["llm"]["calls"].as_f64().unwrap(), noisy);
    assert!(metric(&rounds[1], "demo_pool_size") > 0.0);
    // The simulated annotator ignores demonstrations, so the labels did not change and the
    // round-0 tagger was kept rather than trained again from the same seed.
    assert_eq!(
        metric(&rounds[1], "pool_label_f1"),
        metric(&rounds[0], "pool_label_f1")
    );
    assert_eq!(rounds[1]["slm_steps"].as_u64(), Some(0));
    assert_eq!(metric(&rounds[1], "test_f1"), metric(&rounds[0], "test_f1"));
    assert_eq!(metric(&rounds[0], "gold_labels_used"), 0.0);
    // The tagged pool handed back as CoNLL: the final round's tags, one sentence per labelled
    // pool sentence, masked ones left out.
    let cell = cell_dir(dir.path(), "freeal_ner");
    let conll = std::fs::read_to_string(cell.join("pool_labels.conll")).unwrap();
    let sentences: Vec<String> = conll
        .split("\n\n")
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.lines()
                .map(|l| l.split_once('\t').unwrap().1)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let csv = std::fs::read_to_string(cell.join("labels_round1.csv")).unwrap();
    let tagged: Vec<String> = csv
        .lines()
        .skip(1) // index,exact,clean,tags,gold
        .map(|l| l.split(',').nth(3).unwrap().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    assert!(!tagged.is_empty());
    assert_eq!(sentences, tagged);

    let sup = &records(dir.path(), "supervised")[0];
    assert!(metric(sup, "test_f1") > 0.9, "{sup}");
    assert!(metric(sup, "test_f1[PER]") > 0.9, "{sup}");
    assert_eq!(metric(sup, "gold_labels_used"), pool);

    let summary = std::fs::read_to_string(dir.path().join("results/ner_toy/summary.md")).unwrap();
    assert!(summary.contains("test_f1"), "{summary}");
}

#[test]
fn the_p_percent_variant_extracts_a_new_share_each_round_and_trains_on_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "zero_shot");
    common::edit(&spec, |text| {
        text.replacen("rounds = 1\n", "rounds = 2\nlabel_fraction = 0.4\n", 1)
    });
    common::run_spec(&spec);

    let rounds = records(dir.path(), "freeal_ner");
    assert_eq!(rounds.len(), 3);
    // 300 pool sentences, 40% of them new each round until none is left: 120, 120, 60.
    let coverage: Vec<f64> = rounds
        .iter()
        .map(|r| metric(r, "pool_label_coverage"))
        .collect();
    assert_eq!(coverage, vec![0.4, 0.8, 1.0]);
    assert_eq!(rounds[0]["llm"]["calls"].as_f64(), Some(120.0));
    let newly: Vec<f64> = rounds.iter().map(|r| metric(r, "newly_labeled")).collect();
    assert_eq!(newly, vec![120.0, 120.0, 60.0]);
    // A refinery round asks the new share for the first time, and the previous round's noisy
    // labelled sentences again when it has pool demonstrations to show them.
    assert!(metric(&rounds[2], "demo_pool_size") > 0.0);
    for (round, (asked_before, fresh)) in [(1, (120.0, 120.0)), (2, (240.0, 60.0))] {
        let noisy = match metric(&rounds[round], "demo_pool_size") > 0.0 {
            true => asked_before - metric(&rounds[round - 1], "clean_count"),
            false => 0.0,
        };
        assert_eq!(metric(&rounds[round], "relabeled"), noisy + fresh);
        assert_eq!(rounds[round]["llm"]["calls"].as_f64(), Some(noisy + fresh));
    }
    // Each round's tagger learns from more labels than the last.
    let f1: Vec<f64> = rounds.iter().map(|r| metric(r, "test_f1")).collect();
    assert!(f1[0] < f1[1] && f1[1] < f1[2] && f1[2] > 0.7, "{f1:?}");
    // The unlabelled 180 sentences stay in round 0's batches (the consistency term): 8 epochs
    // of ceil(300 / 16) steps, not of ceil(120 / 16).
    assert_eq!(rounds[0]["slm_steps"].as_u64(), Some(8 * 19));
    let cell = cell_dir(dir.path(), "freeal_ner");
    let indices: Vec<u64> = common::read_jsonl(&cell.join("answers_round0.jsonl"))
        .iter()
        .map(|answer| answer["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices.len(), 120);
    assert!(indices.windows(2).all(|w| w[0] < w[1]) && indices[119] < 300);
    assert!(
        indices[119] > 200,
        "a random share of the pool, not its head"
    );
}

#[test]
fn with_an_empty_demonstration_pool_the_new_share_is_still_extracted() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "zero_shot");
    // Two epochs (one of warm-up) leave the tiny tagger tagging every word O: it agrees with
    // no entity label, so round 1 has no demonstration pool.
    common::edit(&spec, |text| {
        text.replacen("rounds = 1\n", "rounds = 1\nlabel_fraction = 0.4\n", 1)
            .replacen("warmup_epochs = 3\n", "warmup_epochs = 1\n", 1)
            .replace("epochs = 8\n", "epochs = 2\n")
    });
    let said = common::run_spec(&spec);
    // The progress line names what the round asks: no noisy sentence, only the new share.
    assert!(said.contains("LLM extracts the new share: 0/120"), "{said}");
    assert!(!said.contains("re-extracts"), "{said}");

    let rounds = records(dir.path(), "freeal_ner");
    assert_eq!(metric(&rounds[1], "demo_pool_size"), 0.0, "{}", rounds[1]);
    // No noisy sentence is asked again (it would get round 0's prompt again), but the 120 new
    // ones are asked, with no demonstration.
    assert_eq!(metric(&rounds[1], "relabeled"), 120.0);
    assert_eq!(rounds[1]["llm"]["calls"].as_f64(), Some(120.0));
    assert_eq!(metric(&rounds[1], "pool_label_coverage"), 0.8);
}

#[test]
fn the_dense_tanh_head_tags_every_token_and_learns_the_entities() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let path = spec(
        dir.path(),
        &dataset,
        r#""freeal_ner", "supervised""#,
        "zero_shot",
    );
    sweep_both_heads(&path, |text| text);
    common::run_spec(&path);

    let sup = &records(dir.path(), "supervised-s2-head=dense_tanh")[0];
    assert!(metric(sup, "test_f1") > 0.9, "{sup}");
    let linear = &records(dir.path(), "supervised-s2-head=linear")[0];
    assert_ne!(
        metric(sup, "train_loss"),
        metric(linear, "train_loss"),
        "the head changed nothing: {sup}"
    );
    // FreeAL's tagger with the head, as with the linear one: more precise than the labels it
    // learned from (by less: 0.84 against 0.81, where the linear head's reaches 0.91; the
    // extra layer fits more of the retyped entities on this tiny encoder), and its clean
    // sentences exactly right more often than the rest.
    let rounds = records(dir.path(), "freeal_ner-s2-head=dense_tanh");
    assert_eq!(rounds.len(), 2);
    assert!(
        metric(&rounds[0], "test_precision") > metric(&rounds[0], "pool_label_precision"),
        "{}",
        rounds[0]
    );
    assert!(
        metric(&rounds[0], "clean_precision")
            > metric(&rounds[0], "pool_label_sentence_accuracy") + 0.1,
        "{}",
        rounds[0]
    );
}

#[test]
fn a_cell_stopped_after_round_0_resumes_from_its_checkpoint_with_the_same_records() {
    let reference = tempfile::tempdir().unwrap();
    let dataset = toy_ner(reference.path());
    common::run_spec(&spec(
        reference.path(),
        &dataset,
        r#""freeal_ner""#,
        "zero_shot",
    ));
    let want = records(reference.path(), "freeal_ner");

    // Stop the cell right after its round-0 checkpoint: round 1 cannot write its labels file
    // where a directory of that name stands.
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "zero_shot");
    let planned =
        freeal_bench::plan::plan(&freeal_bench::config::layer(&spec, &[]).unwrap()).unwrap();
    let cell = dir
        .path()
        .join("results/ner_toy/cells")
        .join(planned.cells[0].dir_name());
    let blocker = cell.join("labels_round1.csv");
    std::fs::create_dir_all(blocker.join("blocked")).unwrap();
    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(cell.join("checkpoint.json").is_file() && !cell.join("records.json").exists());

    std::fs::remove_dir_all(&blocker).unwrap();
    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("resuming after round 0"), "{stderr}");
    let got = records(dir.path(), "freeal_ner");
    assert_eq!(got.len(), 2);
    for (round, (g, w)) in got.iter().zip(&want).enumerate() {
        for key in ["metrics", "llm", "slm_steps"] {
            assert_eq!(g[key], w[key], "round {round}: {key}");
        }
    }
    // Round 1 kept round 0's tagger (its labels did not change), which the checkpoint does
    // not hold: its test scores came from the saved test tags.
    assert_eq!(got[1]["slm_steps"].as_u64(), Some(0));
    assert!(
        !cell.join("checkpoint.json").exists(),
        "a complete cell keeps no checkpoint"
    );
}

#[test]
fn ner_settings_the_method_cannot_honour_are_refused_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "replay");
    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("initial") && stderr.contains("zero_shot"),
        "{stderr}"
    );
    assert!(!dir.path().join("results/ner_toy").exists());

    // Written demonstrations with a prompt file that has no [generation] of its own.
    let shipped = common::root().join("configs/prompts/conll03.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let bare = common::write(
        dir.path(),
        "bare.toml",
        text.split("\n# FreeAL's round 0").next().unwrap(),
    );
    let generated = crate::spec(dir.path(), &dataset, r#""freeal_ner""#, "generated");
    common::edit(&generated, |text| {
        text.replace(&shipped.display().to_string(), &bare.display().to_string())
    });
    let out = common::bench(&["run", generated.to_str().unwrap(), "--backend", "cpu"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[generation]"), "{stderr}");
    assert!(!dir.path().join("results/ner_toy").exists());
}

#[test]
fn active_learning_and_llmaaa_tag_entities_with_token_entropy() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(
        dir.path(),
        &dataset,
        r#""al_ner", "llmaaa_ner""#,
        "zero_shot",
    );
    // 20-60 sentences at the shared 8 epochs are a handful of optimiser steps: the tagger
    // would still say O everywhere.
    common::edit(&spec, |text| text.replace("epochs = 8\n", "epochs = 40\n"));
    common::run_spec(&spec);

    // Gold oracle: 20 random sentences, then two rounds of 20 by the max word entropy.
    let al = records(dir.path(), "al_ner");
    let acquired: Vec<f64> = al.iter().map(|r| metric(r, "labels_acquired")).collect();
    assert_eq!(acquired, vec![20.0, 40.0, 60.0]);
    assert_eq!(metric(&al[2], "gold_labels_used"), 60.0);
    let (first, last) = (metric(&al[0], "test_f1"), metric(&al[2], "test_f1"));
    assert!(
        last > first,
        "more gold sentences, better tagger: {first} -> {last}"
    );
    assert!(last > 0.8, "{}", al[2]);

    // LLM oracle: 20 gold demo sentences held out; every acquired sentence goes to the LLM
    // once, with its 2 nearest demonstrations, and comes back with simulated 70% entities.
    let llmaaa = records(dir.path(), "llmaaa_ner");
    let calls: f64 = llmaaa
        .iter()
        .map(|r| r["llm"]["calls"].as_f64().unwrap())
        .sum();
    assert_eq!(calls, 60.0);
    for round in &llmaaa {
        assert_eq!(metric(round, "gold_labels_used"), 20.0);
        assert_eq!(metric(round, "oracle_unparsable_rate"), 0.0);
        let f1 = metric(round, "acquired_label_f1");
        assert!(
            (0.6..0.9).contains(&f1),
            "simulated oracle F1 {f1}: {round}"
        );
    }
    assert!(metric(&llmaaa[2], "test_f1") > 0.5, "{}", llmaaa[2]);
}

#[test]
fn reweighted_llmaaa_puts_less_weight_on_wrong_labels() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec_with(dir.path(), &dataset, r#""llmaaa_ner""#, "zero_shot", true);
    // Under either head: the closed form covers the output layer, whose input the dense head
    // makes its dense layer's tanh rather than the token's state.
    sweep_both_heads(&spec, |text| text.replace("epochs = 8\n", "epochs = 40\n"));
    common::run_spec(&spec);
    for head in ["linear", "dense_tanh"] {
        let rounds = records(dir.path(), &format!("llmaaa_ner-s2-head={head}"));
        check_reweighting(head, &rounds);
    }
}

fn check_reweighting(head: &str, rounds: &[serde_json::Value]) {
    for (r, round) in rounds.iter().enumerate() {
        // The demo pool and the meta set are the gold it used.
        assert_eq!(metric(round, "gold_labels_used"), 60.0);
        let on_wrong = metric(round, "reweight_weight_on_wrong");
        let wrong = metric(round, "reweight_wrong_label_fraction");
        assert!(wrong > 0.2, "{round}");
        // Round 0 trains on 20 sentences from a fresh head: its meta-gradients are noise (the
        // weight on wrong labels came out at their share or above). From round 1 the tagger
        // knows enough for the meta set to tell wrong sentences apart.
        if r > 0 {
            assert!(
                on_wrong < wrong - 0.05,
                "{head}, round {r}: weight on wrong labels {on_wrong} vs their share {wrong}"
            );
        }
    }
    assert!(metric(&rounds[2], "test_f1") > 0.6, "{head}: {}", rounds[2]);
}

#[test]
fn knn_icl_shows_gold_demonstrations_and_labels_test_and_pool() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""knn_ner""#, "zero_shot");
    let out = common::bench(&["plan", spec.to_str().unwrap(), "--show-prompt"]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two demonstrations, each answered in the JSON the grammar asks for (every toy sentence
    // holds a person, a city or nothing).
    let answers = shown.matches("[{\"span\":").count() + shown.matches("\n[]").count();
    assert!(answers >= 2, "{shown}");

    common::run_spec(&spec);
    let round = &records(dir.path(), "knn_ner")[0];
    assert_eq!(metric(round, "gold_labels_used"), 20.0);
    // 200 test sentences, then the 300 pool sentences (the 20 demos included, never their own
    // demonstration).
    assert_eq!(round["llm"]["calls"].as_f64(), Some(500.0));
    for prefix in ["test", "pool_label"] {
        let f1 = metric(round, &format!("{prefix}_f1"));
        assert!((0.68..0.84).contains(&f1), "simulated {prefix} F1 {f1}");
    }
}

/// The toy corpus's people and cities as the scripted LLMs below spell them.
const PEOPLE: [&str; 5] = [
    "Alice Moreau",
    "Bob Tanaka",
    "Carla Diaz",
    "Deng Wei",
    "Erik Olsen",
];
const CITIES: [&str; 6] = ["Paris", "Lagos", "Osaka", "Lima", "Oslo", "Quito"];

/// A scripted answer listing every toy name in `query` whose type (`PER`, `LOC`) `keep` takes.
fn names_in(query: &str, keep: impl Fn(&str) -> bool) -> String {
    let found: Vec<String> = PEOPLE
        .iter()
        .map(|p| (p, "PER"))
        .chain(CITIES.iter().map(|c| (c, "LOC")))
        .filter(|(name, kind)| keep(kind) && query.contains(**name))
        .map(|(name, kind)| format!(r#"{{"span": "{name}", "type": "{kind}"}}"#))
        .collect();
    format!("[{}]", found.join(", "))
}

/// A scripted LLM for the toy corpus that, like the embedded 0.5B model, finds entities only
/// when shown demonstrations: `[]` zero-shot, every toy name with any demonstration. Asked to
/// write a demonstration, it writes a sentence with a person and a city and lists both, except
/// when the request's seed is 3 mod 4: then it lists only a city its sentence does not hold.
fn demo_hungry_llm(body: &serde_json::Value) -> serde_json::Value {
    use common::llm_server::{chat_answer, query_of};
    let writing = body["grammar"]
        .as_str()
        .is_some_and(|g| g.contains("sentence"));
    let content = if writing {
        let seed = body["seed"].as_u64().unwrap() as usize;
        let (person, city) = (PEOPLE[seed % 5], CITIES[seed / 5 % 6]);
        let listed = if seed % 4 == 3 {
            r#"{"span": "Rome", "type": "LOC"}"#.to_string()
        } else {
            format!(r#"{{"span": "{person}", "type": "PER"}}, {{"span": "{city}", "type": "LOC"}}"#)
        };
        format!(
            r#"{{"sentence": "{person} met the envoy in {city} today.", "entities": [{listed}]}}"#
        )
    } else {
        let shown = common::llm_server::demonstrations_shown(body);
        names_in(&query_of(body), |_| shown > 0)
    };
    chat_answer(&content, &[("[", 1.0)])
}

#[test]
fn written_demonstrations_reach_every_round_0_prompt() {
    use std::sync::Arc;
    let server = common::llm_server::serve(Arc::new(|body: &serde_json::Value, _| {
        common::llm_server::Reply::Json(200, demo_hungry_llm(body))
    }));
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "generated");
    common::edit(&spec, |text| {
        let text = text.replace(
            "rounds = 1\n",
            "rounds = 0\ngenerated_per_class = 4\nimitate = 3\nknn = 3\n",
        );
        common::llm_server::serve_spec(text, &server.url, &dir.path().join("cache.sqlite"))
    });
    common::run_spec(&spec);

    let seen: Vec<serde_json::Value> = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.body.clone())
        .collect();
    let (writing, extracting): (Vec<_>, Vec<_>) = seen.iter().partition(|b| {
        b["grammar"]
            .as_str()
            .is_some_and(|g| g.contains("sentence"))
    });
    // 4 per entity type, each imitating 3 pool sentences, asking for one type by name.
    assert_eq!(writing.len(), 8);
    for body in &writing {
        let prompt = common::llm_server::query_of(body);
        assert_eq!(prompt.matches("\n- ").count(), 3, "{prompt}");
        assert!(prompt.contains("PER (person)") || prompt.contains("LOC (city)"));
    }
    let unusable = writing
        .iter()
        .filter(|b| b["seed"].as_u64().unwrap() % 4 == 3)
        .count();
    let round = &records(dir.path(), "freeal_ner")[0];
    let kept = 8.0 - unusable as f64;
    assert_eq!(metric(round, "generated_demos"), kept, "{round}");
    assert!(unusable > 0, "the seeds give no unusable answer to test");
    assert_eq!(metric(round, "generated_without_entity"), unusable as f64);
    assert_eq!(metric(round, "generated_spans_unmatched"), unusable as f64);
    assert_eq!(metric(round, "generated_unparsable"), 0.0);
    let cell = cell_dir(dir.path(), "freeal_ner");
    let demos = common::read_jsonl(&cell.join("generated_demos.jsonl"));
    assert_eq!(demos.len() as f64, kept);
    let sentences: Vec<String> = demos
        .iter()
        .map(|d| format!("Sentence: {}", d["sentence"].as_str().unwrap()))
        .collect();
    // Written in corpus tokens, the final full stop a token of its own.
    assert!(sentences[0].ends_with(" today ."), "{}", sentences[0]);
    // Every pool sentence was asked once, with its 3 nearest written sentences as turns.
    assert_eq!(extracting.len(), 300);
    for body in &extracting {
        let messages = body["messages"].as_array().unwrap();
        let shown: Vec<&str> = messages[1..messages.len() - 1]
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| m["content"].as_str().unwrap())
            .collect();
        assert_eq!(shown.len(), 3, "{body}");
        assert!(shown.iter().all(|s| sentences.iter().any(|w| w == s)));
    }
    assert_eq!(round["llm"]["calls"].as_u64(), Some(8 + 300), "{round}");
    // Shown demonstrations, this LLM finds every name: labels far above its zero-shot `[]`.
    assert!(metric(round, "pool_label_f1") > 0.95, "{round}");
}

/// A scripted LLM for the toy corpus whose zero-shot answers list every toy name in the
/// sentence except a city in sentences holding "report" (wrong labels for the split to flag),
/// and whose answers to any request with demonstrations cannot be parsed.
fn mute_refinery_llm(body: &serde_json::Value) -> serde_json::Value {
    use common::llm_server::{chat_answer, query_of};
    if common::llm_server::demonstrations_shown(body) > 0 {
        return chat_answer("no entities here", &[("no", 1.0)]);
    }
    let query = query_of(body);
    let answer = names_in(&query, |kind| kind == "PER" || !query.contains(" report"));
    chat_answer(&answer, &[("[", 1.0)])
}

#[test]
fn an_unparsable_refinery_answer_keeps_the_old_tags_and_counts_as_no_change() {
    use std::sync::Arc;
    let server = common::llm_server::serve(Arc::new(|body: &serde_json::Value, _| {
        common::llm_server::Reply::Json(200, mute_refinery_llm(body))
    }));
    let dir = tempfile::tempdir().unwrap();
    let dataset = toy_ner(dir.path());
    let spec = spec(dir.path(), &dataset, r#""freeal_ner""#, "zero_shot");
    common::edit(&spec, |text| {
        common::llm_server::serve_spec(text, &server.url, &dir.path().join("cache.sqlite"))
    });
    common::run_spec(&spec);

    let rounds = records(dir.path(), "freeal_ner");
    let asked = metric(&rounds[1], "relabeled");
    assert!(asked > 0.0, "{}", rounds[1]);
    assert_eq!(metric(&rounds[1], "relabel_unparsable_rate"), 1.0);
    // Nothing was answered, so nothing was fixed or broken, and every sentence keeps its tags.
    assert_eq!(metric(&rounds[1], "relabel_fixed"), 0.0);
    assert_eq!(metric(&rounds[1], "relabel_broken"), 0.0);
    assert_eq!(
        metric(&rounds[1], "pool_label_f1"),
        metric(&rounds[0], "pool_label_f1")
    );
    let cell = cell_dir(dir.path(), "freeal_ner");
    let rows = |round: usize| -> Vec<Vec<String>> {
        std::fs::read_to_string(cell.join(format!("labels_round{round}.csv")))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_string).collect())
            .collect()
    };
    let (before, after) = (rows(0), rows(1));
    assert_eq!(before.len(), 300);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!((&b[1], &b[3]), (&a[1], &a[3]), "index {}", b[0]);
    }
    // Among the sentences asked again, some had exactly the right tags: the case where an
    // answer that keeps nothing would otherwise count as breaking a right label.
    let right_and_asked = before.iter().filter(|r| r[2] == "0" && r[1] == "1").count();
    assert!(right_and_asked > 0, "every re-asked sentence was wrong");
}
