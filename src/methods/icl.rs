//! `icl`: the LLM labels by in-context learning, with no demonstrations (zero-shot), random
//! ones, or the k nearest (by sentence-embedding cosine) from a small gold-labelled pool. Its
//! labels are scored against gold on the test split and, optionally, on the training pool.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::{
    CellContext, Estimate, Method, embed, gold_classes, pool_gold, prompt_chars,
    refuse_unlabeled_pool, require_classification, write_pool_labels,
};
use crate::data::{Dataset, Example, Task};
use crate::error::Result;
use crate::llm::annotator::{Annotation, ChatMessage, ClassifyRequest};
use crate::llm::demos::{DemoChoice, DemoSet, knn, random_demos};
use crate::llm::prompt::PromptTemplate;
use crate::metrics::{accuracy, macro_f1};
use crate::plan::Cell;
use crate::run::records::RoundOutcome;
use crate::slm::Slm;

/// In-context labelling by the LLM.
pub struct Icl {
    /// Demonstration choice.
    pub demos: DemoChoice,
    /// Demonstrations per query.
    pub k: usize,
    /// Gold-labelled pool size (0 = the whole training pool).
    pub demo_pool: usize,
    /// Class-balanced k-NN.
    pub balanced: bool,
    /// Also label the training pool.
    pub label_pool: bool,
}

/// The gold-labelled demonstration pool: training indices and their labels.
pub struct DemoPool {
    /// The gold-labelled demonstrations (embedded for k-NN only; NER sentences have no class
    /// and carry label 0).
    pub set: DemoSet,
    /// The encoder that embedded the pool, kept to embed queries the same way (k-NN only).
    embedder: Option<Slm>,
}

impl Icl {
    /// The pretrained encoder whose embeddings pick k-NN demonstrations, loaded once per cell;
    /// `None` when demonstrations are not chosen by similarity.
    fn embedder(&self, ctx: &CellContext) -> Result<Option<Slm>> {
        if self.demos != DemoChoice::Knn {
            return Ok(None);
        }
        ctx.load_slm().map(Some)
    }

    fn pool_indices(&self, train_len: usize, seed: u64) -> Vec<usize> {
        if self.demos == DemoChoice::None {
            return Vec::new();
        }
        if self.demo_pool == 0 || self.demo_pool >= train_len {
            return (0..train_len).collect();
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xde70_9001);
        let mut picked = sample(&mut rng, train_len, self.demo_pool).into_vec();
        picked.sort_unstable();
        picked
    }

    /// The cell's gold demonstration pool (empty without demonstrations).
    pub fn demo_pool(&self, ctx: &CellContext) -> Result<DemoPool> {
        let dataset = ctx.dataset;
        let indices = self.pool_indices(dataset.train.len(), ctx.cell.config.seed);
        let labels = match dataset.task {
            // Zero-shot has no pool to read, so an unlabeled pool is no obstacle.
            _ if indices.is_empty() => Vec::new(),
            Task::Ner => vec![0; indices.len()],
            Task::Classification => {
                let all = gold_classes(&dataset.train, &ctx.cell.name)?;
                indices.iter().map(|&i| all[i]).collect()
            }
        };
        let embedder = self.embedder(ctx)?;
        let embeddings = match &embedder {
            Some(slm) => {
                let texts: Vec<&str> = indices
                    .iter()
                    .map(|&i| dataset.train[i].text.as_str())
                    .collect();
                embed(slm, ctx.progress, &texts)?
            }
            None => Vec::new(),
        };
        Ok(DemoPool {
            set: DemoSet {
                members: indices,
                labels,
                embeddings,
            },
            embedder,
        })
    }

    /// The demonstrations of each of `queries`, as positions in `pool.set.members`;
    /// `train_index[q]` is the query's training-pool index when it is one (so it is never its
    /// own demonstration).
    pub fn choose(
        &self,
        ctx: &CellContext,
        pool: &DemoPool,
        queries: &[&Example],
        train_index: &[Option<usize>],
        salt: u64,
    ) -> Result<Vec<Vec<usize>>> {
        let query_embeddings = match &pool.embedder {
            Some(slm) => {
                let texts: Vec<&str> = queries.iter().map(|e| e.text.as_str()).collect();
                embed(slm, ctx.progress, &texts)?
            }
            None => Vec::new(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.cell.config.seed ^ salt);
        Ok((0..queries.len())
            .map(|q| {
                let exclude = train_index[q].and_then(|t| pool.set.members.binary_search(&t).ok());
                match self.demos {
                    DemoChoice::None => Vec::new(),
                    DemoChoice::Random => {
                        random_demos(&mut rng, pool.set.members.len(), self.k, exclude)
                    }
                    DemoChoice::Knn => knn(
                        &query_embeddings[q],
                        &pool.set.embeddings,
                        &pool.set.labels,
                        self.k,
                        self.balanced,
                        exclude,
                    ),
                }
            })
            .collect())
    }

    /// The classification requests labelling `queries` (see [`Icl::choose`]).
    fn requests(
        &self,
        ctx: &CellContext,
        prompt: &PromptTemplate,
        pool: &DemoPool,
        queries: &[&Example],
        train_index: &[Option<usize>],
        salt: u64,
    ) -> Result<Vec<ClassifyRequest>> {
        let dataset = ctx.dataset;
        let chosen = self.choose(ctx, pool, queries, train_index, salt)?;
        Ok(queries
            .iter()
            .zip(chosen)
            .map(|(example, chosen)| {
                let demos = pool.set.shown(&dataset.train, &chosen);
                prompt.classify(&example.text, &demos, &dataset.verbalizers)
            })
            .collect())
    }
}

/// Writes one row per example: index, gold (empty for an unlabeled pool), LLM label (empty =
/// unparsable) and its probability.
fn write_labels(
    path: &std::path::Path,
    answers: &[Annotation],
    gold: Option<&[usize]>,
) -> Result<()> {
    let mut out = String::from("index,gold,label,confidence\n");
    for (i, a) in answers.iter().enumerate() {
        let g = gold.map_or_else(String::new, |g| g[i].to_string());
        let label = a.label.map_or_else(String::new, |l| l.to_string());
        out.push_str(&format!("{i},{g},{label},{}\n", confidence(a)));
    }
    crate::run::records::write_atomic(path, out.as_bytes())
}

/// The probability of the answer's label; empty for an unparsable answer.
fn confidence(answer: &Annotation) -> String {
    answer
        .label
        .and_then(|l| answer.probs.get(l))
        .map_or_else(String::new, |p| format!("{p:.6}"))
}

/// The answers' unparsable rate and, against gold where there is gold, accuracy and macro-F1.
fn score(
    metrics: &mut BTreeMap<String, f64>,
    prefix: &str,
    answers: &[Annotation],
    gold: Option<&[usize]>,
    num_labels: usize,
) {
    let predicted: Vec<Option<usize>> = answers.iter().map(|a| a.label).collect();
    let unparsable = predicted.iter().filter(|p| p.is_none()).count();
    if let Some(gold) = gold {
        metrics.insert(format!("{prefix}_accuracy"), accuracy(&predicted, gold));
        metrics.insert(
            format!("{prefix}_macro_f1"),
            macro_f1(&predicted, gold, num_labels),
        );
    }
    metrics.insert(
        format!("{prefix}_unparsable_rate"),
        unparsable as f64 / predicted.len().max(1) as f64,
    );
}

impl Method for Icl {
    fn run(&self, ctx: &CellContext) -> Result<Vec<RoundOutcome>> {
        let start = Instant::now();
        let dataset = ctx.dataset;
        if dataset.task == Task::Ner {
            return super::ner::icl(ctx, self);
        }
        require_classification(ctx, "icl")?;
        let llm = ctx.llm("icl")?;
        let mut client = crate::llm::build_client(ctx.cell, dataset, ctx.llm_run, ctx.models_dir)?;
        let pool = self.demo_pool(ctx)?;
        let num_labels = dataset.num_labels();
        let mut metrics = BTreeMap::new();

        let test: Vec<&Example> = dataset.test.iter().collect();
        let requests = self.requests(ctx, &llm.prompt, &pool, &test, &vec![None; test.len()], 1)?;
        ctx.progress.phase("LLM labels test", requests.len() as u64);
        let answers = client.classify(&requests, &|n| ctx.progress.inc(n))?;
        let test_gold = gold_classes(&dataset.test, &ctx.cell.name)?;
        write_labels(
            &ctx.out_dir.join("labels_test.csv"),
            &answers,
            Some(&test_gold),
        )?;
        score(&mut metrics, "test", &answers, Some(&test_gold), num_labels);

        if self.label_pool {
            let train: Vec<&Example> = dataset.train.iter().collect();
            let index: Vec<Option<usize>> = (0..train.len()).map(Some).collect();
            let requests = self.requests(ctx, &llm.prompt, &pool, &train, &index, 2)?;
            ctx.progress.phase("LLM labels pool", requests.len() as u64);
            let answers = client.classify(&requests, &|n| ctx.progress.inc(n))?;
            let pool_gold = pool_gold(dataset, &ctx.cell.name)?;
            write_labels(
                &ctx.out_dir.join("labels_pool.csv"),
                &answers,
                pool_gold.as_deref(),
            )?;
            score(
                &mut metrics,
                "pool_label",
                &answers,
                pool_gold.as_deref(),
                num_labels,
            );
            let labels: Vec<Option<usize>> = answers.iter().map(|a| a.label).collect();
            let confidences = answers.iter().map(confidence).collect();
            write_pool_labels(ctx, &labels, vec![("confidence", confidences)])?;
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

    fn check(&self, _cell: &Cell, dataset: &Dataset) -> std::result::Result<(), (String, String)> {
        if self.demos != DemoChoice::None {
            refuse_unlabeled_pool(dataset, "demos", "icl's demonstrations (demos != \"none\")")?;
        }
        if dataset.task == Task::Ner && self.balanced && self.demos == DemoChoice::Knn {
            return Err((
                "balanced".into(),
                format!(
                    "{} is an NER dataset: a sentence has no single class to balance k-NN \
                     demonstrations over; set balanced = false",
                    dataset.name
                ),
            ));
        }
        Ok(())
    }

    fn first_prompt(&self, ctx: &CellContext) -> Result<Option<Vec<ChatMessage>>> {
        let Some(llm) = &ctx.cell.config.llm else {
            return Ok(None);
        };
        let Some(first) = ctx.dataset.test.first() else {
            return Ok(None);
        };
        let pool = self.demo_pool(ctx)?;
        if ctx.dataset.task == Task::Ner {
            return super::ner::icl_requests(ctx, self, &pool, &[first], &[None], 1)
                .map(|r| r.into_iter().next().map(|r| r.messages));
        }
        let requests = self.requests(ctx, &llm.prompt, &pool, &[first], &[None], 1)?;
        Ok(requests.into_iter().next().map(|r| r.messages))
    }

    fn estimate(&self, cell: &Cell, dataset: &Dataset) -> Estimate {
        let queries = dataset.test.len()
            + if self.label_pool {
                dataset.train.len()
            } else {
                0
            };
        let k = if self.demos == DemoChoice::None {
            0
        } else {
            self.k
        };
        if dataset.task == Task::Ner {
            return super::ner::estimate_extraction(cell, dataset, queries, k);
        }
        let Some(llm) = &cell.config.llm else {
            return Estimate::default();
        };
        // Prompt size from the first test item with the first k pool items as stand-in demos.
        let pool = self.pool_indices(dataset.train.len(), cell.config.seed);
        let demos: Vec<&Example> = pool.iter().take(k).map(|&i| &dataset.train[i]).collect();
        let chars = prompt_chars(&llm.prompt, dataset, dataset.test.first(), &demos);
        Estimate {
            llm_calls: queries as u64,
            llm_prompt_tokens: (queries * chars / 4) as u64,
            slm_steps: 0,
        }
    }
}
