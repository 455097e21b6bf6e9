//! The methods on token-classification (NER) datasets: the LLM extracts entity spans as JSON
//! under a grammar, the SLM tags tokens. `icl`, `supervised`, `freeal` and
//! `active_learning` hand NER cells to this module; everything else (records, tables) is shared
//! with classification.

pub mod active_learning;
pub mod checkpoint;
pub mod freeal;
pub mod written;

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::icl::{DemoPool, Icl};
use super::{CellContext, Estimate};
use crate::data::{Dataset, Example, Target};
use crate::error::{Error, Result};
use crate::llm::annotator::GenerateRequest;
use crate::llm::client::LlmClient;
use crate::llm::prompt::PromptTemplate;
use crate::llm::spans::{MatchStats, describe_types, parse_answer, tag_tokens};
use crate::metrics::spans::span_scores;
use crate::plan::{Cell, LlmCell};
use crate::run::records::{RoundOutcome, write_atomic};
use crate::slm::Slm;
use crate::slm::tagging::{fit_tags, infer_tags};

/// Generated-token cap of one extraction: room for about one entity per word of a short
/// sentence; a longer answer is cut and its complete entities kept.
pub fn max_answer_tokens(words: usize) -> u32 {
    (24 + 8 * words).min(256) as u32
}

/// The gold tags of NER examples; an error naming `who` for classification examples.
pub fn gold_tags(examples: &[Example], who: &str) -> Result<Vec<Vec<usize>>> {
    examples
        .iter()
        .map(|e| match &e.target {
            Target::Tags(t) => Ok(t.clone()),
            Target::Class(_) | Target::Unlabeled => Err(Error::Cell {
                cell: who.to_string(),
                message: "this NER method needs a token-tagged dataset".into(),
            }),
        })
        .collect()
}

/// The pool's gold tags, or `None` for an unlabeled pool (`files.train_unlabeled`), whose
/// label-quality metrics are then not computed.
pub fn pool_gold_tags(dataset: &Dataset, who: &str) -> Result<Option<Vec<Vec<usize>>>> {
    match dataset.pool_labeled() {
        true => gold_tags(&dataset.train, who).map(Some),
        false => Ok(None),
    }
}

/// What the LLM's answers to a batch of extraction requests came to.
#[derive(Debug, Clone, Default)]
pub struct Extracted {
    /// Per sentence, the tags (`None`: the answer did not parse and the sentence is masked).
    pub tags: Vec<Option<Vec<usize>>>,
    /// Raw answers, for the records.
    pub raw: Vec<String>,
    /// How entities landed on tokens.
    pub matched: MatchStats,
    /// Entities of types outside the tag set (dropped).
    pub out_of_set: usize,
    /// Answers with no readable entity list.
    pub unparsable: usize,
}

impl Extracted {
    /// Writes the raw answers, one JSON line per sentence (`{"index", "answer"}`, where the
    /// k-th answer's index is `indices[k]`, its sentence's place in its split), so a user can
    /// see what the LLM said before it was mapped onto tokens.
    pub fn write_answers(&self, path: &std::path::Path, indices: &[usize]) -> Result<()> {
        let mut out = String::new();
        for (&i, answer) in indices.iter().zip(&self.raw) {
            out.push_str(&serde_json::json!({"index": i, "answer": answer}).to_string());
            out.push('\n');
        }
        write_atomic(path, out.as_bytes())
    }

    /// `{prefix}_unparsable_rate`, `{prefix}_span_unmatched_rate`, `{prefix}_span_fuzzy_rate`
    /// and `{prefix}_out_of_set` into `metrics`.
    pub fn record(&self, metrics: &mut BTreeMap<String, f64>, prefix: &str) {
        let answered = (self.matched.exact + self.matched.fuzzy + self.matched.unmatched).max(1);
        metrics.insert(
            format!("{prefix}_unparsable_rate"),
            self.unparsable as f64 / self.tags.len().max(1) as f64,
        );
        metrics.insert(
            format!("{prefix}_span_unmatched_rate"),
            self.matched.unmatched as f64 / answered as f64,
        );
        metrics.insert(
            format!("{prefix}_span_fuzzy_rate"),
            self.matched.fuzzy as f64 / answered as f64,
        );
        metrics.insert(format!("{prefix}_out_of_set"), self.out_of_set as f64);
    }
}

/// Builds extraction requests for a dataset's sentences.
pub struct Extractor<'a> {
    prompt: &'a PromptTemplate,
    dataset: &'a Dataset,
    types: String,
    /// The answer grammar; `None` for free text (`llm.grammar = "none"`).
    grammar: Option<String>,
    /// The grammar of a written demonstration (FreeAL's round 0); `None` for free text.
    writing_grammar: Option<String>,
}

impl<'a> Extractor<'a> {
    /// The extractor of `dataset` under the cell's prompt and grammar setting.
    pub fn new(llm: &'a LlmCell, dataset: &'a Dataset) -> Self {
        Extractor {
            prompt: &llm.prompt,
            dataset,
            types: describe_types(&dataset.label_names, &dataset.descriptions),
            grammar: llm.spec.grammar.gbnf(&dataset.label_names),
            writing_grammar: llm.spec.grammar.generation_gbnf(&dataset.label_names),
        }
    }

    /// The request that writes a new sentence imitating `examples`, holding an entity of type
    /// `kind`, with its entities (sampled with `seed`).
    pub fn writing_request(&self, examples: &[&str], kind: usize, seed: u64) -> GenerateRequest {
        let names = &self.dataset.label_names;
        let described = describe_types(
            std::slice::from_ref(&names[kind]),
            self.dataset
                .descriptions
                .get(kind..=kind)
                .unwrap_or_default(),
        );
        self.prompt.write_tagged(
            examples,
            &described,
            &self.types,
            self.writing_grammar.as_deref(),
            seed,
        )
    }

    /// The request for `example` with demonstrations `(sentence, tags)` (most similar last).
    pub fn request(&self, example: &Example, demos: &[(&Example, &[usize])]) -> GenerateRequest {
        let shown: Vec<(&str, String)> = demos
            .iter()
            .map(|(e, tags)| {
                let names = self.dataset.tag_names(tags);
                (
                    e.text.as_str(),
                    crate::llm::spans::render_answer(&e.tokens, &names),
                )
            })
            .collect();
        self.prompt.extract(
            &example.text,
            &shown,
            &self.types,
            self.grammar.as_deref(),
            max_answer_tokens(example.tokens.len()),
        )
    }

    /// Sends `requests` (one per sentence of `sentences`) and maps the answers onto tokens.
    pub fn run(
        &self,
        ctx: &CellContext,
        client: &mut LlmClient,
        sentences: &[&Example],
        requests: &[GenerateRequest],
        phase: &str,
    ) -> Result<Extracted> {
        ctx.progress.phase(phase, requests.len() as u64);
        let answers = client.generate(requests, &|n| ctx.progress.inc(n))?;
        let mut out = Extracted::default();
        for (example, answer) in sentences.iter().zip(answers) {
            let parsed = parse_answer(&answer.text, &self.dataset.label_names);
            out.out_of_set += parsed.out_of_set;
            if parsed.unparsable {
                out.unparsable += 1;
                out.tags.push(None);
            } else {
                let (tags, stats) = tag_tokens(&example.tokens, &parsed.entities);
                out.matched.add(stats);
                out.tags.push(Some(tags));
            }
            out.raw.push(answer.text);
        }
        Ok(out)
    }
}

/// Entity-level P/R/F1 of `predicted` against `gold` into `metrics` as `{prefix}_f1`,
/// `{prefix}_precision`, `{prefix}_recall` and `{prefix}_f1[TYPE]`; a masked sentence
/// (`None`) predicts no entity.
pub fn score_spans(
    metrics: &mut BTreeMap<String, f64>,
    prefix: &str,
    dataset: &Dataset,
    predicted: &[Option<Vec<usize>>],
    gold: &[Vec<usize>],
) {
    let gold_names: Vec<Vec<&str>> = gold.iter().map(|g| dataset.tag_names(g)).collect();
    let predicted_names: Vec<Vec<&str>> = predicted
        .iter()
        .zip(gold)
        .map(|(p, g)| match p {
            Some(p) => dataset.tag_names(p),
            None => vec!["O"; g.len()],
        })
        .collect();
    let scores = span_scores(&gold_names, &predicted_names);
    metrics.insert(format!("{prefix}_f1"), scores.micro.f1());
    metrics.insert(format!("{prefix}_precision"), scores.micro.precision());
    metrics.insert(format!("{prefix}_recall"), scores.micro.recall());
    for (kind, prf) in &scores.per_type {
        metrics.insert(format!("{prefix}_f1[{kind}]"), prf.f1());
    }
}

/// The words of each of `examples`, as the tagger tokenises them.
pub fn sentence_words(examples: &[Example]) -> Vec<&[String]> {
    examples.iter().map(|e| e.tokens.as_slice()).collect()
}

/// Unit-length sentence embeddings of the tagger's encoder (the k-NN and k-medoids space).
pub fn unit_embeddings(pooled: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let mut rows = pooled;
    crate::llm::demos::normalize_rows(&mut rows);
    rows
}

/// Test-split span scores of a trained tagger (`test_f1`, ...).
pub fn evaluate_tagger(
    slm: &Slm,
    dataset: &Dataset,
    ctx: &CellContext,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let tags = test_tags(slm, dataset, ctx)?;
    score_test(&tags, dataset, ctx, metrics)
}

/// A tagger's tags on the test split.
pub fn test_tags(slm: &Slm, dataset: &Dataset, ctx: &CellContext) -> Result<Vec<Vec<usize>>> {
    let words = slm.tokenize_words(&sentence_words(&dataset.test))?;
    Ok(infer_tags(slm, &words, ctx.progress)?.tags())
}

/// Test-split span scores of tags a tagger gave (`test_f1`, ...).
pub fn score_test(
    tags: &[Vec<usize>],
    dataset: &Dataset,
    ctx: &CellContext,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<()> {
    let predicted: Vec<Option<Vec<usize>>> = tags.iter().cloned().map(Some).collect();
    let gold = gold_tags(&dataset.test, &ctx.cell.name)?;
    score_spans(metrics, "test", dataset, &predicted, &gold);
    Ok(())
}

/// `supervised` on NER: the tagger on the gold tags of a seeded `fraction` of the pool.
pub fn supervised(ctx: &CellContext, fraction: f64) -> Result<Vec<RoundOutcome>> {
    let start = Instant::now();
    let dataset = ctx.dataset;
    let gold = gold_tags(&dataset.train, &ctx.cell.name)?;
    let n = ((gold.len() as f64) * fraction).round().max(1.0) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.cell.config.seed);
    let mut chosen = sample(&mut rng, gold.len(), n.min(gold.len())).into_vec();
    chosen.sort_unstable();
    let labels: Vec<Option<Vec<usize>>> = (0..gold.len())
        .map(|i| chosen.binary_search(&i).is_ok().then(|| gold[i].clone()))
        .collect();
    let mut slm = ctx.load_slm()?;
    let words = slm.tokenize_words(&sentence_words(&dataset.train))?;
    let report = fit_tags(&mut slm, &words, &labels, ctx.progress)?;
    let mut metrics = BTreeMap::new();
    evaluate_tagger(&slm, dataset, ctx, &mut metrics)?;
    metrics.insert("gold_labels_used".into(), chosen.len() as f64);
    metrics.insert("train_loss".into(), report.last_epoch_loss);
    Ok(vec![RoundOutcome {
        round: 0,
        metrics,
        slm_steps: report.steps,
        wall_s: start.elapsed().as_secs_f64(),
        ..Default::default()
    }])
}

/// The extraction requests of `queries` under `icl`'s demonstration choice: none, or `k`
/// random / nearest sentences of its gold demo pool with their gold entities.
pub fn icl_requests(
    ctx: &CellContext,
    icl: &Icl,
    pool: &DemoPool,
    queries: &[&Example],
    train_index: &[Option<usize>],
    salt: u64,
) -> Result<Vec<GenerateRequest>> {
    let dataset = ctx.dataset;
    let llm = ctx.llm("icl")?;
    let extractor = Extractor::new(llm, dataset);
    let chosen = icl.choose(ctx, pool, queries, train_index, salt)?;
    queries
        .iter()
        .zip(chosen)
        .map(|(query, chosen)| {
            let demos = chosen
                .iter()
                .map(|&j| {
                    let demo = &dataset.train[pool.set.members[j]];
                    match &demo.target {
                        Target::Tags(tags) => Ok((demo, tags.as_slice())),
                        Target::Class(_) | Target::Unlabeled => Err(Error::Cell {
                            cell: ctx.cell.name.clone(),
                            message: "icl's demonstrations need gold tags on the pool".into(),
                        }),
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(extractor.request(query, &demos))
        })
        .collect()
}

/// `icl` on NER: the LLM extracts the entities of every test sentence (and, with
/// `label_pool`, of every pool sentence), zero-shot or with gold demonstrations.
pub fn icl(ctx: &CellContext, icl: &Icl) -> Result<Vec<RoundOutcome>> {
    let start = Instant::now();
    let dataset = ctx.dataset;
    let llm = ctx.llm("icl")?;
    let mut client = crate::llm::build_client(ctx.cell, dataset, ctx.llm_run, ctx.models_dir)?;
    let extractor = Extractor::new(llm, dataset);
    let pool = icl.demo_pool(ctx)?;
    let mut metrics = BTreeMap::new();
    let train: Vec<&Example> = dataset.train.iter().collect();
    let test: Vec<&Example> = dataset.test.iter().collect();
    let test_index = vec![None; test.len()];
    let train_index: Vec<Option<usize>> = (0..train.len()).map(Some).collect();
    // (split name in files and progress, metric prefix, gold tags (`None`: an unlabeled pool),
    // sentences, pool indices, demo salt)
    let test_gold = Some(gold_tags(&dataset.test, &ctx.cell.name)?);
    let mut splits = vec![("test", "test", test_gold, test, test_index, 1)];
    if icl.label_pool {
        let pool_gold = pool_gold_tags(dataset, &ctx.cell.name)?;
        splits.push(("pool", "pool_label", pool_gold, train, train_index, 2));
    }
    for (file, prefix, gold, queries, index, salt) in splits {
        let requests = icl_requests(ctx, icl, &pool, &queries, &index, salt)?;
        let phase = format!("LLM extracts {file}");
        let got = extractor.run(ctx, &mut client, &queries, &requests, &phase)?;
        write_tags(
            &ctx.out_dir.join(format!("labels_{file}.csv")),
            dataset,
            &got.tags,
            gold.as_deref(),
            None,
        )?;
        let positions: Vec<usize> = (0..queries.len()).collect();
        got.write_answers(
            &ctx.out_dir.join(format!("answers_{file}.jsonl")),
            &positions,
        )?;
        if file == "pool" {
            write_pool_conll(ctx.out_dir, dataset, &got.tags)?;
        }
        if let Some(gold) = &gold {
            score_spans(&mut metrics, prefix, dataset, &got.tags, gold);
        }
        got.record(&mut metrics, prefix);
    }
    metrics.insert("gold_labels_used".into(), pool.set.members.len() as f64);
    Ok(vec![RoundOutcome {
        round: 0,
        metrics,
        llm: client.take_usage(),
        slm_steps: 0,
        wall_s: start.elapsed().as_secs_f64(),
    }])
}

/// Writes per-sentence tags: index, whether they equal gold exactly, the clean flag when
/// known, the tags themselves (space-separated, empty for a masked sentence) and gold; the
/// exact and gold columns are empty for an unlabeled pool (`gold` = `None`).
pub fn write_tags(
    path: &std::path::Path,
    dataset: &Dataset,
    tags: &[Option<Vec<usize>>],
    gold: Option<&[Vec<usize>]>,
    clean: Option<&[bool]>,
) -> Result<()> {
    let mut out = String::from("index,exact,clean,tags,gold\n");
    for (i, t) in tags.iter().enumerate() {
        let (exact, gold) = match gold {
            Some(gold) => (
                u8::from(t.as_ref() == Some(&gold[i])).to_string(),
                dataset.tag_names(&gold[i]).join(" "),
            ),
            None => (String::new(), String::new()),
        };
        let clean = clean.map_or_else(String::new, |c| u8::from(c[i]).to_string());
        let shown = t
            .as_ref()
            .map_or_else(String::new, |t| dataset.tag_names(t).join(" "));
        out.push_str(&format!("{i},{exact},{clean},{shown},{gold}\n"));
    }
    write_atomic(path, out.as_bytes())
}

/// The tagged pool a NER run hands back: `pool_labels.conll` in the cell directory, one
/// `token<TAB>tag` line per token (BIO) and a blank line after each sentence, in pool order.
/// Sentences the LLM gave no answer for are left out: writing them all-`O` would be a guess.
pub fn write_pool_conll(
    dir: &std::path::Path,
    dataset: &Dataset,
    tags: &[Option<Vec<usize>>],
) -> Result<()> {
    let mut out = String::new();
    for (example, tags) in dataset.train.iter().zip(tags) {
        let Some(tags) = tags else { continue };
        for (token, tag) in example.tokens.iter().zip(dataset.tag_names(tags)) {
            out.push_str(&format!("{token}\t{tag}\n"));
        }
        out.push('\n');
    }
    write_atomic(&dir.join("pool_labels.conll"), out.as_bytes())
}

/// Cost of labelling `n` sentences of `dataset` with `demos` demonstrations each, for `plan`.
pub fn estimate_extraction(cell: &Cell, dataset: &Dataset, n: usize, demos: usize) -> Estimate {
    let (Some(llm), Some(first)) = (&cell.config.llm, dataset.train.first()) else {
        return Estimate::default();
    };
    let extractor = Extractor::new(llm, dataset);
    // Only the length counts: an unlabeled stand-in is shown with no entity.
    let untagged: Vec<Vec<usize>> = dataset
        .train
        .iter()
        .take(demos)
        .map(|e| vec![0; e.tokens.len()])
        .collect();
    let shown: Vec<(&Example, &[usize])> = dataset
        .train
        .iter()
        .zip(&untagged)
        .filter_map(|(e, none)| match &e.target {
            Target::Tags(t) => Some((e, t.as_slice())),
            Target::Unlabeled => Some((e, none.as_slice())),
            Target::Class(_) => None,
        })
        .collect();
    let chars: usize = extractor
        .request(first, &shown)
        .messages
        .iter()
        .map(|m| m.content.len() + 8)
        .sum();
    Estimate {
        llm_calls: n as u64,
        llm_prompt_tokens: (n * chars / 4) as u64,
        slm_steps: 0,
    }
}
