//! Loaders against the verified counts in each dataset's SOURCE.md, and datasets added by TOML
//! alone.

mod common;

use std::path::Path;

use common::{root, write};
use freeal_bench::data::{Dataset, DatasetDef, Target};

fn load(name: &str) -> Dataset {
    let def = DatasetDef::from_file(&root().join("datasets").join(name).join("dataset.toml"))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    Dataset::load(&def, 0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn counts(examples: &[freeal_bench::data::Example], n: usize) -> Vec<usize> {
    Dataset::label_counts(examples, n)
}

#[test]
fn sst2_sentence_split_counts() {
    let d = load("sst2");
    assert_eq!(
        (d.train.len(), d.dev.len(), d.test.len()),
        (6920, 872, 1821)
    );
    assert_eq!(counts(&d.train, 2), vec![3310, 3610]);
    assert_eq!(counts(&d.dev, 2), vec![428, 444]);
    assert_eq!(counts(&d.test, 2), vec![912, 909]);
}

#[test]
fn sst2_glue_counts() {
    let d = load("sst2_glue");
    assert_eq!(
        (d.train.len(), d.dev.len(), d.test.len()),
        (60614, 6735, 872)
    );
    assert_eq!(counts(&d.train, 2), vec![26786, 33828]);
    assert_eq!(counts(&d.dev, 2), vec![2994, 3741]);
    assert_eq!(counts(&d.test, 2), vec![428, 444]);
}

#[test]
fn mr_counts_both_versions() {
    let d = load("mr");
    assert_eq!((d.train.len(), d.dev.len(), d.test.len()), (8662, 0, 2000));
    assert_eq!(counts(&d.train, 2), vec![4331, 4331]);
    assert_eq!(counts(&d.test, 2), vec![1000, 1000]);
    let p = load("mr_pang_lee");
    assert_eq!(p.train.len() + p.test.len(), 10662);
    assert_eq!(p.test.len(), 2132);
    let all: Vec<_> = p.train.iter().chain(&p.test).cloned().collect();
    assert_eq!(counts(&all, 2), vec![5331, 5331]);
    // Windows-1252 byte 0x85 is an ellipsis inside a sentence, never a line break.
    assert!(all.iter().any(|e| e.text.contains('\u{2026}')));
}

#[test]
fn mr_train_texts_match_between_versions() {
    let freeal = load("mr");
    let pang_lee = load("mr_pang_lee");
    let mut a: Vec<(String, usize)> = freeal
        .train
        .iter()
        .chain(&freeal.test)
        .map(|e| (e.text.clone(), e.class().unwrap()))
        .collect();
    let mut b: Vec<(String, usize)> = pang_lee
        .train
        .iter()
        .chain(&pang_lee.test)
        .map(|e| (e.text.clone(), e.class().unwrap()))
        .collect();
    a.sort();
    b.sort();
    assert_eq!(
        a, b,
        "SOURCE.md: train + test = exactly the 10,662 Pang & Lee sentences"
    );
}

#[test]
fn subj_counts_and_split_is_seeded() {
    let d = load("subj");
    assert_eq!(d.train.len() + d.test.len(), 10000);
    assert_eq!(d.test.len(), 2000);
    let all: Vec<_> = d.train.iter().chain(&d.test).cloned().collect();
    assert_eq!(counts(&all, 2), vec![5000, 5000]);
    assert_eq!(load("subj").test, d.test, "same seed, same split");
    let def = DatasetDef::from_file(&root().join("datasets/subj/dataset.toml")).unwrap();
    assert_ne!(
        Dataset::load(&def, 1).unwrap().test,
        d.test,
        "another seed, another split"
    );
    assert!(
        d.split.notes.iter().any(|n| n.contains("seed 0")),
        "{:?}",
        d.split.notes
    );
}

#[test]
fn trec_coarse_counts() {
    let d = load("trec");
    assert_eq!((d.train.len(), d.test.len()), (5452, 500));
    // label order: description, entity, abbreviation, human, location, number
    assert_eq!(counts(&d.train, 6), vec![1162, 1250, 86, 1223, 835, 896]);
    assert_eq!(counts(&d.test, 6), vec![138, 94, 9, 65, 81, 113]);
}

#[test]
fn ma_counts() {
    let d = load("ma");
    assert_eq!(d.train.len() + d.test.len(), 2888);
    let all: Vec<_> = d.train.iter().chain(&d.test).cloned().collect();
    assert_eq!(counts(&all, 5), vec![633, 299, 385, 610, 961]);
}

fn entities(examples: &[freeal_bench::data::Example], tags: &[String], kind: &str) -> usize {
    let begin = tags.iter().position(|t| *t == format!("B-{kind}")).unwrap();
    examples
        .iter()
        .map(|e| match &e.target {
            Target::Tags(t) => t.iter().filter(|&&x| x == begin).count(),
            Target::Class(_) | Target::Unlabeled => 0,
        })
        .sum()
}

fn tokens(examples: &[freeal_bench::data::Example]) -> usize {
    examples.iter().map(|e| e.tokens.len()).sum()
}

#[test]
fn conll03_counts_after_iob1_to_bio() {
    let d = load("conll03");
    assert_eq!(
        (d.train.len(), d.dev.len(), d.test.len()),
        (14041, 3250, 3453)
    );
    assert_eq!(
        (tokens(&d.train), tokens(&d.dev), tokens(&d.test)),
        (203621, 51362, 46435)
    );
    let per_type = |ex: &[_]| -> Vec<usize> {
        ["PER", "LOC", "ORG", "MISC"]
            .iter()
            .map(|k| entities(ex, &d.tags, k))
            .collect()
    };
    assert_eq!(per_type(&d.train), vec![6600, 7140, 6321, 3438]);
    assert_eq!(per_type(&d.dev), vec![1842, 1837, 1341, 922]);
    assert_eq!(per_type(&d.test), vec![1617, 1668, 1661, 702]);
}

#[test]
fn bc5cdr_counts() {
    let d = load("bc5cdr");
    assert_eq!(
        (d.train.len(), d.dev.len(), d.test.len()),
        (4560, 4581, 4797)
    );
    assert_eq!(
        (tokens(&d.train), tokens(&d.dev), tokens(&d.test)),
        (118170, 117453, 124750)
    );
    let per_type = |ex: &[_]| -> Vec<usize> {
        ["Chemical", "Disease"]
            .iter()
            .map(|k| entities(ex, &d.tags, k))
            .collect()
    };
    assert_eq!(per_type(&d.train), vec![5203, 4182]);
    assert_eq!(per_type(&d.dev), vec![5347, 4246]);
    assert_eq!(per_type(&d.test), vec![5385, 4424]);
}

fn custom(dir: &Path, def: &str, files: &[(&str, &str)]) -> Result<Dataset, String> {
    for (name, text) in files {
        write(dir, name, text);
    }
    let path = write(dir, "dataset.toml", def);
    DatasetDef::from_file(&path)
        .and_then(|d| Dataset::load(&d, 0))
        .map_err(|e| e.to_string())
}

#[test]
fn a_jsonl_dataset_is_added_by_toml_alone() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = (0..20)
        .map(|i| {
            format!(
                "{{\"review\": \"text {i}\", \"stars\": \"{}\"}}\n",
                if i % 2 == 0 { "good" } else { "bad" }
            )
        })
        .collect();
    let d = custom(
        dir.path(),
        "name = \"reviews\"\ntask = \"classification\"\n[format]\nkind = \"jsonl\"\ntext = \"review\"\nlabel = \"stars\"\n[files]\ntrain = \"all.jsonl\"\n[split]\ntest_fraction = 0.25\n[labels]\nnames = [\"negative\", \"positive\"]\nraw = [\"bad\", \"good\"]\n[labels.verbalizers]\npositive = [\"great\", \"good\"]\n",
        &[("all.jsonl", &rows)],
    )
    .unwrap();
    assert_eq!((d.train.len(), d.test.len()), (15, 5));
    assert_eq!(
        d.verbalizers,
        vec![
            vec!["negative".to_string()],
            vec!["great".into(), "good".into()]
        ]
    );
    assert_eq!(
        counts(&[d.train.clone(), d.test.clone()].concat(), 2),
        vec![10, 10]
    );
}

#[test]
fn a_csv_dataset_with_header_runs_end_to_end_through_plan() {
    let dir = tempfile::tempdir().unwrap();
    let rows: String = std::iter::once("id,body,topic\n".to_string())
        .chain((0..30).map(|i| format!("{i},\"item, number {i}\",{}\n", ["x", "y", "z"][i % 3])))
        .collect();
    let def = "name = \"topics\"\ntask = \"classification\"\n[format]\nkind = \"csv\"\nheader = true\ntext = \"body\"\nlabel = \"topic\"\n[files]\ntrain = \"t.csv\"\n[split]\ntest_fraction = 0.2\n[labels]\nnames = [\"ex\", \"why\", \"zed\"]\nraw = [\"x\", \"y\", \"z\"]\n";
    let d = custom(dir.path(), def, &[("t.csv", &rows)]).unwrap();
    assert_eq!(d.train.len() + d.test.len(), 30);
    assert!(
        d.train
            .iter()
            .chain(&d.test)
            .any(|e| e.text == "item, number 4")
    );
    // The same definition is usable from a spec by path, with no code change.
    let spec = write(
        dir.path(),
        "spec.toml",
        "dataset = \"dataset.toml\"\n[experiment]\nname = \"topics\"\n",
    );
    let out = common::bench(&["plan", spec.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Its cells are named by the definition's name, as the tables name the dataset.
    assert!(String::from_utf8_lossy(&out.stdout).contains(" topics-supervised-s0"));

    // A second definition under the same name would share those table rows: refused.
    write(
        dir.path(),
        "copy/dataset.toml",
        &def.replace("\"t.csv\"", "\"../t.csv\""),
    );
    let spec = write(
        dir.path(),
        "spec.toml",
        "[experiment]\nname = \"topics\"\n[sweep]\ndataset = [\"dataset.toml\", \"copy/dataset.toml\"]\n",
    );
    let out = common::bench(&["plan", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sweep.dataset")
            && stderr.contains("both define a dataset named `topics`")
            && stderr.contains("give each its own `name`"),
        "{stderr}"
    );
}

#[test]
fn bad_rows_are_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let def = "name = \"d\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n[files]\ntrain = \"a.txt\"\ntest = \"a.txt\"\n[labels]\nnames = [\"n\", \"p\"]\n";
    let err = custom(
        dir.path(),
        def,
        &[("a.txt", "0 fine\n1 also fine\n7 unknown label\n")],
    )
    .unwrap_err();
    assert!(err.contains("a.txt:3") && err.contains("`7`"), "{err}");
    let err = custom(dir.path(), def, &[("a.txt", "0 caf\u{e9}\n1 ok\n")]);
    assert!(err.is_ok(), "valid UTF-8 loads");
    std::fs::write(dir.path().join("a.txt"), b"0 fine\n1 caf\xe9\n").unwrap();
    let err = DatasetDef::from_file(&dir.path().join("dataset.toml"))
        .and_then(|d| Dataset::load(&d, 0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("a.txt:2") && err.contains("windows-1252"),
        "{err}"
    );
    let bad_def = custom(
        dir.path(),
        "name = \"d\"\ntask = \"classification\"\nlabelz = 1\n",
        &[],
    )
    .unwrap_err();
    assert!(
        bad_def.contains("dataset.toml:3") && bad_def.contains("labelz"),
        "{bad_def}"
    );
    // Label tables keyed by a name that is not a label, or with an empty word.
    let label_tables = [
        (
            "[labels.descriptions]\nn = \"bad\"\npp = \"good\"\n",
            [
                "dataset.toml:12",
                "labels.descriptions.pp",
                "not in labels.names",
            ],
        ),
        (
            "[labels.verbalizers]\nn = [\"bad\"]\npp = [\"good\"]\n",
            [
                "dataset.toml:12",
                "labels.verbalizers.pp",
                "not in labels.names",
            ],
        ),
        (
            "[labels.verbalizers]\nn = [\"bad\", \" \"]\n",
            ["dataset.toml:11", "labels.verbalizers.n", "non-empty word"],
        ),
    ];
    for (table, expected) in label_tables {
        let err = custom(
            dir.path(),
            &format!("{def}{table}"),
            &[("a.txt", "0 fine\n1 ok\n")],
        )
        .unwrap_err();
        assert!(expected.iter().all(|e| err.contains(e)), "{table}: {err}");
    }
    // Two labels written the same way in the files, or named the same.
    for (labels, expected) in [
        (
            "names = [\"n\", \"p\"]\nraw = [\"0\", \"0\"]\n",
            ["dataset.toml:10", "labels.raw", "distinct"],
        ),
        (
            "names = [\"n\", \"n\"]\n",
            ["dataset.toml:9", "labels.names", "distinct"],
        ),
    ] {
        let text = def.replace("names = [\"n\", \"p\"]\n", labels);
        let err = custom(dir.path(), &text, &[("a.txt", "0 fine\n1 ok\n")]).unwrap_err();
        assert!(expected.iter().all(|e| err.contains(e)), "{labels}: {err}");
    }
}

#[test]
fn an_unlabeled_pool_reads_texts_only_and_keeps_its_test_labels() {
    let dir = tempfile::tempdir().unwrap();
    // The pool file has no label column at all; the test file (same format) has one.
    let pool = "body\n\"first, text\"\nsecond text\n";
    let test = "body,topic\none,x\ntwo,y\n";
    let def = "name = \"u\"\ntask = \"classification\"\n[format]\nkind = \"csv\"\nheader = true\n\
               text = \"body\"\nlabel = \"topic\"\n[files]\ntrain = \"pool.csv\"\n\
               train_unlabeled = true\ntest = \"test.csv\"\n[labels]\nnames = [\"ex\", \"why\"]\n\
               raw = [\"x\", \"y\"]\n";
    let d = custom(dir.path(), def, &[("pool.csv", pool), ("test.csv", test)]).unwrap();
    assert_eq!(
        d.train.iter().map(|e| e.text.as_str()).collect::<Vec<_>>(),
        ["first, text", "second text"]
    );
    assert!(d.train.iter().all(|e| e.target == Target::Unlabeled));
    assert!(!d.pool_labeled());
    assert_eq!(counts(&d.test, 2), vec![1, 1]);
    // Headerless: `text = -1` reads the last column of `label,text` and of `text` rows alike.
    let def = "name = \"u\"\ntask = \"classification\"\n[format]\nkind = \"csv\"\n\
               label = 0\ntext = -1\n[files]\ntrain = \"pool.csv\"\ntrain_unlabeled = true\n\
               test = \"test.csv\"\n[labels]\nnames = [\"ex\", \"why\"]\n";
    let d = custom(
        dir.path(),
        def,
        &[
            ("pool.csv", "\"first, text\"\nsecond\n"),
            ("test.csv", "0,one\n1,\"two, too\"\n"),
        ],
    )
    .unwrap();
    assert_eq!(d.train[0].text, "first, text");
    assert_eq!(d.test[1].text, "two, too");
    assert_eq!(d.test[1].target, Target::Class(1));
    // label_text: the whole line is the text, a leading word included.
    let def = "name = \"u\"\ntask = \"classification\"\n[format]\nkind = \"label_text\"\n\
               [files]\ntrain = \"pool.txt\"\ntrain_unlabeled = true\ntest = \"test.txt\"\n\
               [labels]\nnames = [\"n\", \"p\"]\n";
    let d = custom(
        dir.path(),
        def,
        &[
            ("pool.txt", "1 great film\nawful\n"),
            ("test.txt", "0 bad\n1 good\n"),
        ],
    )
    .unwrap();
    assert_eq!(d.train[0].text, "1 great film");
    assert_eq!(d.train[1].target, Target::Unlabeled);
    // A labelled pool is unchanged by the key's existence.
    let labeled = def.replace("train_unlabeled = true\n", "");
    let d = custom(
        dir.path(),
        &labeled,
        &[("pool.txt", "1 great film\n0 awful\n")],
    )
    .unwrap();
    assert!(d.pool_labeled());
    assert_eq!(d.train[0].text, "great film");

    // Without a labelled test file there is nothing to measure the labels on.
    let no_test = def
        .replace("test = \"test.txt\"\n", "")
        .replace("[labels]", "[split]\ntest_fraction = 0.5\n[labels]");
    let err = custom(dir.path(), &no_test, &[]).unwrap_err();
    assert!(
        err.contains("files.test") && err.contains("labelled test file"),
        "{err}"
    );
    let dev_cut = def.replace("[labels]", "[split]\ndev_fraction = 0.2\n[labels]");
    let err = custom(dir.path(), &dev_cut, &[]).unwrap_err();
    assert!(err.contains("split.dev_fraction"), "{err}");
    // NER: the pool's token column alone; the test file keeps its tags.
    let ner = "name = \"u\"\ntask = \"ner\"\n[format]\nkind = \"conll\"\n[files]\n\
               train = \"pool.txt\"\ntrain_unlabeled = true\ntest = \"test.txt\"\n\
               [labels]\nnames = [\"PER\"]\n";
    let d = custom(
        dir.path(),
        ner,
        &[
            ("pool.txt", "Ann\nsat\n\nBob\n"),
            ("test.txt", "Eve B-PER\nran O\n"),
        ],
    )
    .unwrap();
    assert!(!d.pool_labeled());
    assert_eq!(d.train.len(), 2);
    assert_eq!(d.train[0].tokens, ["Ann", "sat"]);
    assert_eq!(d.train[1].target, Target::Unlabeled);
    assert!(matches!(&d.test[0].target, Target::Tags(t) if t.len() == 2));
}
