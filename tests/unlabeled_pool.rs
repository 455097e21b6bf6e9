//! A pool with no gold labels (`files.train_unlabeled = true`): FreeAL labels it exactly as it
//! labels the same texts with gold beside them (gold only scores, never decides), hands the
//! labels back in `pool_labels.csv` (NER: `pool_labels.conll`), and the methods that read pool
//! gold are refused up front.

mod common;

use std::path::{Path, PathBuf};

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The toy sentiment task as three files (labelled pool, the same pool's texts alone, labelled
/// test), a replay file of its pool labels with 25% flipped and 5% `-1`, and two definitions
/// over them: `labeled.toml` and `unlabeled.toml`.
fn toy_files(dir: &Path) {
    let filler = [
        "the", "movie", "plot", "actor", "scene", "music", "story", "film", "ending", "cast",
    ];
    let cues = [
        ["awful", "dull", "boring"],
        ["great", "wonderful", "superb"],
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let sentence = |rng: &mut ChaCha8Rng, n: usize| {
        let label = rng.random_range(0..2usize);
        let mut words: Vec<&str> = (0..4).map(|_| *filler.choose(rng).unwrap()).collect();
        for _ in 0..2 {
            let at = rng.random_range(0..=words.len());
            words.insert(at, cues[label].choose(rng).unwrap());
        }
        // A counter keeps every text distinct: replay matches labels by text.
        (label, format!("{} {n}", words.join(" ")))
    };
    let (mut labeled, mut texts, mut replay, mut test) = (vec![], vec![], vec![], vec![]);
    for n in 0..400 {
        let (label, text) = sentence(&mut rng, n);
        labeled.push(format!("{label} {text}"));
        texts.push(text.clone());
        let given = match rng.random_range(0..100) {
            0..5 => "-1".to_string(),
            5..30 => (1 - label).to_string(),
            _ => label.to_string(),
        };
        replay.push(format!("{given},{text}"));
    }
    for n in 400..600 {
        let (label, text) = sentence(&mut rng, n);
        test.push(format!("{label} {text}"));
    }
    common::write(dir, "pool_labeled.txt", &(labeled.join("\n") + "\n"));
    common::write(dir, "pool.txt", &(texts.join("\n") + "\n"));
    common::write(dir, "replay.csv", &(replay.join("\n") + "\n"));
    common::write(dir, "test.txt", &(test.join("\n") + "\n"));
    let def = |name: &str, train: &str, unlabeled: &str| {
        format!(
            "name = \"{name}\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n\
             [files]\ntrain = \"{train}\"\n{unlabeled}test = \"test.txt\"\n\
             [labels]\nnames = [\"negative\", \"positive\"]\n"
        )
    };
    common::write(dir, "labeled.toml", &def("labeled", "pool_labeled.txt", ""));
    common::write(
        dir,
        "unlabeled.toml",
        &def("unlabeled", "pool.txt", "train_unlabeled = true\n"),
    );
}

fn spec(dir: &Path, methods: &str, sweep: &str, backend: &str) -> PathBuf {
    common::write(
        dir,
        "spec.toml",
        &format!(
            r#"
[experiment]
name = "pool"
metric = "test_accuracy"

[methods.freeal_pool]
kind = "freeal"
initial = "replay"
rounds = 1
warmup_epochs = 2
rampup_epochs = 2.0
medoids_per_class = 10
{methods}

[llm]
backend = "{backend}"
prompts = "{prompts}"
[llm.replay]
file = "replay.csv"
label = 0
text = 1

{slm}
[run]
results_dir = "{results}"

[sweep]
{sweep}
seed = [5]
"#,
            prompts = common::root().join("configs/prompts/sst2.toml").display(),
            slm = common::tiny_slm_toml(),
            results = dir.join("results").display(),
        ),
    )
}

/// The cell of dataset `dataset` (its definition's `name`) whose name continues with `method`.
fn cell_dir(experiment: &Path, dataset: &str, method: &str) -> PathBuf {
    let prefix = format!("{dataset}-{method}");
    std::fs::read_dir(experiment.join("cells"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&prefix)
        })
        .unwrap_or_else(|| panic!("no {prefix} cell under {}", experiment.display()))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The CSV's rows with column `drop` left out.
fn without_column(csv: &str, drop: usize) -> Vec<Vec<String>> {
    csv.lines()
        .map(|l| {
            l.split(',')
                .enumerate()
                .filter(|(i, _)| *i != drop)
                .map(|(_, f)| f.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn freeal_labels_an_unlabeled_pool_as_it_labels_the_same_pool_with_gold() {
    let dir = tempfile::tempdir().unwrap();
    toy_files(dir.path());
    let spec = spec(
        dir.path(),
        "",
        "dataset = [\"labeled.toml\", \"unlabeled.toml\"]\nmethod = [\"freeal_pool\"]",
        "replay",
    );
    common::run_spec(&spec);
    let experiment = dir.path().join("results/pool");
    let (with_gold, without) = (
        cell_dir(&experiment, "labeled", ""),
        cell_dir(&experiment, "unlabeled", ""),
    );
    let records = |cell: &Path| -> serde_json::Value {
        serde_json::from_str(&read(&cell.join("records.json"))).unwrap()
    };
    let (a, b) = (records(&with_gold), records(&without));
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    assert_eq!(a.len(), 2, "round 0 and one refinery round");
    assert_eq!(b.len(), 2);
    for (round, (a, b)) in a.iter().zip(b).enumerate() {
        let (ma, mb) = (&a["metrics"], &b["metrics"]);
        for key in ["test_accuracy", "clean_count", "pool_label_coverage"] {
            assert_eq!(ma[key], mb[key], "round {round}: {key}");
            assert!(mb[key].is_number(), "round {round}: {key} missing");
        }
        // What needs pool gold is measured only where there is gold.
        for key in [
            "pool_label_accuracy",
            "clean_precision",
            "slm_pool_accuracy",
        ] {
            assert!(ma[key].is_number(), "round {round}: {key}");
            assert!(mb.get(key).is_none(), "round {round}: {key} = {}", mb[key]);
        }
    }
    assert_eq!(a[1]["metrics"]["relabeled"], b[1]["metrics"]["relabeled"]);
    assert!(b[1]["metrics"].get("relabel_fixed").is_none());
    // The learnable toy task: the SLM generalises past its 70%-correct labels without gold.
    let accuracy = b[1]["metrics"]["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.85, "{accuracy}");

    for round in 0..2 {
        let name = format!("labels_round{round}.csv");
        let (la, lb) = (read(&with_gold.join(&name)), read(&without.join(&name)));
        assert_eq!(without_column(&la, 1), without_column(&lb, 1), "{name}");
        assert!(lb.lines().skip(1).all(|l| l.split(',').nth(1) == Some("")));
    }
    // The labelled pool a user takes away, the same for both cells: text, label by name, the
    // clean flag, the SLM's label.
    let pool_labels = read(&without.join("pool_labels.csv"));
    assert_eq!(pool_labels, read(&with_gold.join("pool_labels.csv")));
    let mut reader = csv::Reader::from_reader(pool_labels.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["text", "label", "clean", "slm_label"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let texts = read(&dir.path().join("pool.txt"));
    assert_eq!(
        rows.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(),
        texts.lines().collect::<Vec<_>>()
    );
    let final_labels: Vec<&str> = read(&without.join("labels_round1.csv"))
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap())
        .map(|l| match l {
            "0" => "negative",
            "1" => "positive",
            _ => "",
        })
        .collect();
    assert_eq!(rows.iter().map(|r| &r[1]).collect::<Vec<_>>(), final_labels);
    assert!(
        rows.iter()
            .all(|r| ["negative", "positive"].contains(&&r[3]))
    );

    // The report builds its tables from records that lack the pool metrics, and its per-round
    // plot draws label accuracy only where there is some.
    let out = common::bench(&["report", experiment.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let readme = read(&experiment.join("README.md"));
    assert!(
        readme.contains("labeled: test_accuracy and pool-label accuracy per round")
            && readme.contains("unlabeled: test_accuracy per round"),
        "{readme}"
    );
}

#[test]
fn methods_that_read_pool_gold_are_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    toy_files(dir.path());
    // The place named is where the method or key is defined: `supervised` comes from the
    // project's defaults, the others from the spec.
    let cases = [
        (
            "supervised",
            "replay",
            "methods.supervised.kind",
            "defaults.toml:",
        ),
        ("freeal_pool", "simulated", "llm.backend", "spec.toml:"),
        ("knn_icl", "replay", "methods.knn_icl.demos", "spec.toml:"),
    ];
    for (method, backend, key, place) in cases {
        let spec = spec(
            dir.path(),
            "[methods.knn_icl]\nkind = \"icl\"\ndemos = \"knn\"\nk = 4",
            &format!("dataset = [\"unlabeled.toml\"]\nmethod = [\"{method}\"]"),
            backend,
        );
        let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{method}: {stderr}");
        assert!(stderr.contains(key), "{method}: {stderr}");
        assert!(stderr.contains(place), "{method}: {stderr}");
        assert!(stderr.contains("train_unlabeled"), "{method}: {stderr}");
        assert!(!dir.path().join("results/pool/cells").exists(), "{stderr}");
    }
}

#[test]
fn zero_shot_icl_labels_an_unlabeled_pool_and_hands_the_labels_back() {
    let dir = tempfile::tempdir().unwrap();
    toy_files(dir.path());
    let spec = spec(
        dir.path(),
        "[methods.label_pool]\nkind = \"icl\"\ndemos = \"none\"\nlabel_pool = true",
        "dataset = [\"unlabeled.toml\"]\nmethod = [\"label_pool\"]",
        "replay",
    );
    common::run_spec(&spec);
    let experiment = dir.path().join("results/pool");
    let cell = common::only_cell(&experiment);
    let records = common::only_cell_records(&experiment);
    let metrics = &records[0]["metrics"];
    assert!(metrics.get("pool_label_accuracy").is_none(), "{metrics}");
    assert!(metrics["test_accuracy"].is_number(), "{metrics}");
    // The replay file leaves about 5% of the pool at -1: those are unparsable, not guessed.
    let unparsable = metrics["pool_label_unparsable_rate"].as_f64().unwrap();
    assert!((0.02..0.09).contains(&unparsable), "{unparsable}");
    let replay = read(&dir.path().join("replay.csv"));
    let pool_labels = read(&cell.join("pool_labels.csv"));
    let mut reader = csv::Reader::from_reader(pool_labels.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["text", "label", "confidence"]
    );
    for (row, line) in reader.records().map(Result::unwrap).zip(replay.lines()) {
        let (given, text) = line.split_once(',').unwrap();
        assert_eq!(&row[0], text);
        let expected = match given {
            "0" => "negative",
            "1" => "positive",
            _ => "",
        };
        assert_eq!(&row[1], expected, "{line}");
        assert_eq!(row[2].is_empty(), expected.is_empty(), "{line}");
    }
}

/// A toy NER task in CoNLL columns (person names and cities among filler words): the labelled
/// pool, the same pool's tokens alone, a labelled test file, and two definitions over them,
/// `ner_labeled.toml` and `ner_unlabeled.toml`.
fn toy_ner_files(dir: &Path) {
    let filler = [
        "the", "met", "in", "said", "on", "today", "visited", "with", "after",
    ];
    let people = [["Alice", "Moreau"], ["Bob", "Tanaka"], ["Erik", "Olsen"]];
    let cities = ["Paris", "Lagos", "Osaka", "Lima"];
    let mut rng = ChaCha8Rng::seed_from_u64(29);
    let mut sentence = || {
        let mut tokens: Vec<(&str, &str)> = (0..4)
            .map(|_| (*filler.choose(&mut rng).unwrap(), "O"))
            .collect();
        if rng.random_bool(0.7) {
            let [first, last] = *people.choose(&mut rng).unwrap();
            let at = rng.random_range(0..=tokens.len());
            tokens.splice(at..at, [(first, "B-PER"), (last, "I-PER")]);
        }
        if rng.random_bool(0.6) {
            // At the end, never inside a name.
            tokens.push((cities.choose(&mut rng).unwrap(), "B-LOC"));
        }
        tokens
    };
    let (mut labeled, mut tokens_only, mut test) = (String::new(), String::new(), String::new());
    for n in 0..360 {
        for (token, tag) in sentence() {
            let line = format!("{token}\t{tag}\n");
            if n < 240 {
                labeled.push_str(&line);
                tokens_only.push_str(&format!("{token}\n"));
            } else {
                test.push_str(&line);
            }
        }
        for file in [&mut labeled, &mut tokens_only, &mut test] {
            if !file.is_empty() && !file.ends_with("\n\n") {
                file.push('\n');
            }
        }
    }
    common::write(dir, "ner_pool_labeled.tsv", &labeled);
    common::write(dir, "ner_pool.tsv", &tokens_only);
    common::write(dir, "ner_test.tsv", &test);
    let def = |name: &str, train: &str, unlabeled: &str| {
        format!(
            "name = \"{name}\"\ntask = \"ner\"\n[format]\nkind = \"conll\"\ntoken_column = 0\n\
             tag_column = -1\nscheme = \"bio\"\n[files]\ntrain = \"{train}\"\n{unlabeled}\
             test = \"ner_test.tsv\"\n[labels]\nnames = [\"PER\", \"LOC\"]\n\
             [labels.descriptions]\nPER = \"person\"\nLOC = \"city\"\n"
        )
    };
    common::write(
        dir,
        "ner_labeled.toml",
        &def("ner_labeled", "ner_pool_labeled.tsv", ""),
    );
    common::write(
        dir,
        "ner_unlabeled.toml",
        &def("ner_unlabeled", "ner_pool.tsv", "train_unlabeled = true\n"),
    );
}

/// An extraction "model" for the toy NER task, deterministic per prompt: with demonstrations it
/// finds every entity; zero-shot it calls Erik Olsen a city and misses the city of every third
/// sentence (by a checksum of its text), so round 0's labels have errors for the refinery.
fn toy_extractor(body: &serde_json::Value) -> serde_json::Value {
    let query = common::llm_server::query_of(body);
    let sentence = query.strip_prefix("Sentence: ").unwrap_or(&query);
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let with_demos = body["messages"].as_array().is_some_and(|m| m.len() > 2);
    let checksum: u32 = sentence.bytes().map(u32::from).sum();
    let mut entities = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let next = words.get(i + 1).copied().unwrap_or("");
        let name = match *word {
            "Alice" | "Bob" | "Erik" => format!("{word} {next}"),
            _ => String::new(),
        };
        if !name.is_empty() {
            let kind = if *word == "Erik" && !with_demos {
                "LOC"
            } else {
                "PER"
            };
            entities.push(serde_json::json!({"span": name, "type": kind}));
        }
        if ["Paris", "Lagos", "Osaka", "Lima"].contains(word)
            && (with_demos || !checksum.is_multiple_of(3))
        {
            entities.push(serde_json::json!({"span": word, "type": "LOC"}));
        }
    }
    let text = serde_json::Value::Array(entities).to_string();
    common::llm_server::chat_answer(&text, &[("[", 1.0)])
}

#[test]
fn ner_freeal_tags_an_unlabeled_pool_as_it_tags_the_same_pool_with_gold() {
    let dir = tempfile::tempdir().unwrap();
    toy_ner_files(dir.path());
    let server = common::llm_server::serve(std::sync::Arc::new(|body, _| {
        common::llm_server::Reply::Json(200, toy_extractor(body))
    }));
    let spec = common::write(
        dir.path(),
        "ner_spec.toml",
        &format!(
            r#"
[experiment]
name = "ner_pool"
metric = "test_f1"

[methods.freeal_ner]
kind = "freeal"
initial = "zero_shot"
rounds = 1
warmup_epochs = 3
rampup_epochs = 2.0
medoids_per_class = 10
demos_per_class = 2

[methods.label_pool]
kind = "icl"
demos = "none"
label_pool = true

[llm]
backend = "http"
model = "test-model"
base_url = "{url}"
prompts = "{prompts}"

{slm}
[run]
results_dir = "{results}"
[run.llm]
cache = "{cache}"

[sweep]
dataset = ["ner_labeled.toml", "ner_unlabeled.toml"]
method = ["freeal_ner", "label_pool"]
seed = [4]
"#,
            url = server.url,
            prompts = common::root()
                .join("configs/prompts/conll03.toml")
                .display(),
            slm = common::tiny_slm_toml(),
            results = dir.path().join("results").display(),
            cache = dir.path().join("cache.sqlite").display(),
        ),
    );
    common::run_spec(&spec);
    let experiment = dir.path().join("results/ner_pool");
    let cell = |dataset: &str, method: &str| cell_dir(&experiment, dataset, &format!("{method}-"));
    let records = |cell: &Path| -> Vec<serde_json::Value> {
        serde_json::from_str(&read(&cell.join("records.json"))).unwrap()
    };

    let (with_gold, without) = (
        cell("ner_labeled", "freeal_ner"),
        cell("ner_unlabeled", "freeal_ner"),
    );
    let (a, b) = (records(&with_gold), records(&without));
    assert_eq!((a.len(), b.len()), (2, 2), "round 0 and one refinery round");
    for (round, (a, b)) in a.iter().zip(&b).enumerate() {
        let (ma, mb) = (&a["metrics"], &b["metrics"]);
        for key in ["test_f1", "clean_count", "pool_label_coverage"] {
            assert!(mb[key].is_number(), "round {round}: {key} missing");
            assert_eq!(ma[key], mb[key], "round {round}: {key}");
        }
        for key in [
            "pool_label_f1",
            "clean_precision",
            "pool_label_sentence_accuracy",
            "slm_pool_f1",
        ] {
            assert!(ma[key].is_number(), "round {round}: {key}");
            assert!(mb.get(key).is_none(), "round {round}: {key} = {}", mb[key]);
        }
    }
    let (ra, rb) = (&a[1]["metrics"], &b[1]["metrics"]);
    assert_eq!(ra["relabeled"], rb["relabeled"]);
    assert!(rb["relabeled"].as_f64().unwrap() > 0.0, "{rb}");
    assert!(ra["relabel_fixed"].as_f64().unwrap() > 0.0, "{ra}");
    assert!(rb.get("relabel_fixed").is_none() && rb.get("demo_pool_precision").is_none());
    // The refinery's demonstrations fixed labels in the labelled twin, so round 1's pool F1
    // beats round 0's there; the unlabeled cell made exactly the same labels.
    assert!(
        ra["pool_label_f1"].as_f64() > a[0]["metrics"]["pool_label_f1"].as_f64(),
        "{ra}"
    );
    for round in 0..2 {
        let name = format!("labels_round{round}.csv");
        let (la, lb) = (read(&with_gold.join(&name)), read(&without.join(&name)));
        // index, exact, clean, tags, gold: all but exact and gold agree; those are empty.
        let keep = |csv: &str| -> Vec<Vec<String>> {
            csv.lines()
                .map(|l| {
                    let f: Vec<&str> = l.split(',').collect();
                    vec![f[0].to_string(), f[2].to_string(), f[3].to_string()]
                })
                .collect()
        };
        assert_eq!(keep(&la), keep(&lb), "{name}");
        assert!(
            lb.lines()
                .skip(1)
                .all(|l| l.split(',').nth(1) == Some("") && l.ends_with(',')),
            "{name}"
        );
    }
    // The tagged pool a user takes away: the same for both cells, the pool's own tokens.
    let conll = read(&without.join("pool_labels.conll"));
    assert_eq!(conll, read(&with_gold.join("pool_labels.conll")));
    let tokens: Vec<&str> = conll
        .lines()
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let pool: Vec<String> = read(&dir.path().join("ner_pool.tsv"))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(tokens, pool, "every sentence answered, in pool order");

    // Zero-shot extraction of the pool needs no gold either, and scores the test split.
    let icl = records(&cell("ner_unlabeled", "label_pool"));
    let metrics = &icl[0]["metrics"];
    assert!(metrics["test_f1"].as_f64().unwrap() > 0.5, "{metrics}");
    assert!(metrics.get("pool_label_f1").is_none(), "{metrics}");
    assert_eq!(
        read(&cell("ner_unlabeled", "label_pool").join("pool_labels.conll")),
        read(&cell("ner_labeled", "label_pool").join("pool_labels.conll"))
    );
}

/// `unlabeled_consistency = false` (the official code's treatment of its `-1` labels): sentences
/// without a usable label add no loss term, so rewording them changes nothing else the cell
/// computes; with the default they train through the consistency term and it does.
#[test]
fn unlabeled_consistency_false_keeps_unlabeled_sentences_out_of_the_loss() {
    let dir = tempfile::tempdir().unwrap();
    toy_files(dir.path());
    // A second copy of the labelled pool whose `-1` sentences are reworded with the same number
    // of words (each filler word is one MiniLM token: the batches keep their shapes), and a
    // replay file that answers for both copies.
    let filler = [
        "the", "movie", "plot", "actor", "scene", "music", "story", "film", "ending", "cast",
    ];
    let replay = read(&dir.path().join("replay.csv"));
    let pool = read(&dir.path().join("pool_labeled.txt"));
    let (mut pool2, mut extra) = (String::new(), String::new());
    let mut reworded = Vec::new();
    for (i, (line, answer)) in pool.lines().zip(replay.lines()).enumerate() {
        let (given, text) = answer.split_once(',').unwrap();
        let (gold, _) = line.split_once(' ').unwrap();
        if given == "-1" {
            let new: Vec<&str> = text
                .split(' ')
                .map(|w| match filler.iter().position(|f| *f == w) {
                    Some(k) => filler[(k + 3) % filler.len()],
                    None => w,
                })
                .collect();
            let new = new.join(" ");
            assert_ne!(new, text);
            pool2.push_str(&format!("{gold} {new}\n"));
            extra.push_str(&format!("-1,{new}\n"));
            reworded.push(i);
        } else {
            pool2.push_str(&format!("{line}\n"));
        }
    }
    assert!(reworded.len() > 5, "{reworded:?}");
    common::write(dir.path(), "pool_labeled2.txt", &pool2);
    common::write(dir.path(), "replay.csv", &(replay + &extra));
    let def = read(&dir.path().join("labeled.toml"))
        .replace("\"labeled\"", "\"labeled2\"")
        .replace("pool_labeled.txt", "pool_labeled2.txt");
    common::write(dir.path(), "labeled2.toml", &def);

    // Whether the two copies' cells agree: labels_round0.csv (index,gold,label,clean,
    // clean_posterior,slm_pred,loss) less the SLM's predictions and losses on the reworded
    // sentences, which read other words, and the test metrics.
    let same = |setting: &str| -> bool {
        let spec = spec(
            dir.path(),
            "",
            &format!(
                "dataset = [\"labeled.toml\", \"labeled2.toml\"]\nmethod = \
                 [\"freeal_pool\"]\n\"methods.freeal_pool.rounds\" = [0]\n\
                 \"methods.freeal_pool.unlabeled_consistency\" = [{setting}]"
            ),
            "replay",
        );
        common::run_spec(&spec);
        let experiment = dir.path().join("results/pool");
        let outputs: Vec<(Vec<String>, String)> = ["labeled", "labeled2"]
            .iter()
            .map(|d| {
                let cell = cell_dir(&experiment, d, "");
                let rows = read(&cell.join("labels_round0.csv"))
                    .lines()
                    .enumerate()
                    .map(|(n, l)| match n > 0 && reworded.contains(&(n - 1)) {
                        true => l.rsplitn(3, ',').nth(2).unwrap().to_string(),
                        false => l.to_string(),
                    })
                    .collect();
                let records: serde_json::Value =
                    serde_json::from_str(&read(&cell.join("records.json"))).unwrap();
                let m = &records[0]["metrics"];
                (
                    rows,
                    format!("{} {}", m["test_accuracy"], m["test_macro_f1"]),
                )
            })
            .collect();
        std::fs::remove_dir_all(&experiment).unwrap();
        outputs[0] == outputs[1]
    };
    assert!(
        same("false"),
        "false: rewording the unlabeled sentences changed the cell"
    );
    assert!(
        !same("true"),
        "true: the reworded sentences train through the consistency term and must move the cell"
    );
}

#[test]
fn unlabeled_consistency_false_is_refused_with_a_label_fraction() {
    let dir = tempfile::tempdir().unwrap();
    toy_files(dir.path());
    let spec = spec(
        dir.path(),
        "",
        "dataset = [\"labeled.toml\"]\nmethod = [\"freeal_pool\"]\n\
         \"methods.freeal_pool.label_fraction\" = [0.5]\n\
         \"methods.freeal_pool.unlabeled_consistency\" = [false]",
        "replay",
    );
    let out = common::bench(&["run", spec.to_str().unwrap(), "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("unlabeled_consistency") && stderr.contains("label_fraction = 1.0"),
        "{stderr}"
    );
    assert!(!dir.path().join("results/pool/cells").exists(), "{stderr}");
}
