//! FreeAL's round 0 on NER (`initial = "generated"`): the LLM writes sentences imitating random
//! pool sentences, each asked to hold an entity of one type and to list its entities; each pool
//! sentence is then extracted with its `knn` nearest written sentences as demonstrations.

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::ChaCha8Rng;

use super::{Extractor, unit_embeddings};
use crate::data::{Dataset, Example, Target};
use crate::error::Result;
use crate::llm::annotator::{GenerateRequest, Generation};
use crate::llm::client::LlmClient;
use crate::llm::demos::knn;
use crate::llm::spans::{parse_written, render_answer, tag_tokens, word_tokens};
use crate::methods::CellContext;
use crate::methods::freeal::config::FreealSpec;
use crate::methods::freeal::initial::imitation_draws;
use crate::run::records::write_atomic;
use crate::slm::Slm;
use crate::slm::tagging::infer_tags;
use crate::slm::tokenize::WordEncoded;

/// A sentence the LLM wrote, kept as a demonstration.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenDemo {
    /// Its corpus tokens, and the tokens joined by spaces as its text (no gold target).
    pub sentence: Example,
    /// Its BIO tags from the entity list the LLM wrote with it.
    pub tags: Vec<usize>,
    /// The entity type it was asked to hold.
    pub asked: usize,
}

/// The sentences the LLM wrote that can serve as demonstrations, and what was thrown away.
#[derive(Debug, Default)]
pub struct Written {
    /// Kept sentences.
    pub demos: Vec<WrittenDemo>,
    /// Answers that are not a complete `{"sentence", "entities"}` object.
    pub unparsable: usize,
    /// Sentences none of whose listed entities is in the sentence.
    pub without_entity: usize,
    /// Listed entities found nowhere in their own sentence (dropped).
    pub unmatched: usize,
}

/// Reads the written answers (`asked[i]` the type answer `i` was asked for) into
/// demonstrations. A sentence whose entities are all missing from it is dropped: it would show
/// `[]`, the answer a weak LLM already gives too often, and it did not do what was asked.
pub fn read_written(asked: &[usize], answers: &[Generation], types: &[String]) -> Written {
    let mut out = Written::default();
    for (&kind, answer) in asked.iter().zip(answers) {
        let Some((sentence, parsed)) = parse_written(&answer.text, types) else {
            out.unparsable += 1;
            continue;
        };
        let tokens = word_tokens(&sentence);
        let (tags, stats) = tag_tokens(&tokens, &parsed.entities);
        out.unmatched += stats.unmatched;
        if tags.iter().all(|&t| t == 0) {
            out.without_entity += 1;
            continue;
        }
        out.demos.push(WrittenDemo {
            sentence: Example {
                text: tokens.join(" "),
                tokens,
                target: Target::Unlabeled,
            },
            tags,
            asked: kind,
        });
    }
    out
}

impl Written {
    /// `generated_demos`, `generated_unparsable`, `generated_without_entity` and
    /// `generated_spans_unmatched` into `metrics`.
    pub fn record(&self, metrics: &mut BTreeMap<String, f64>) {
        for (key, value) in [
            ("generated_demos", self.demos.len()),
            ("generated_unparsable", self.unparsable),
            ("generated_without_entity", self.without_entity),
            ("generated_spans_unmatched", self.unmatched),
        ] {
            metrics.insert(key.into(), value as f64);
        }
    }

    /// One JSON line per kept sentence: the type it was asked for, the sentence, and the
    /// answer a demonstration shows for it.
    pub fn write(&self, path: &Path, dataset: &Dataset) -> Result<()> {
        let mut out = String::new();
        for demo in &self.demos {
            let line = serde_json::json!({
                "asked": dataset.label_names[demo.asked],
                "sentence": demo.sentence.text,
                "answer": render_answer(&demo.sentence.tokens, &dataset.tag_names(&demo.tags)),
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        write_atomic(path, out.as_bytes())
    }
}

/// Round 0's extraction requests: the LLM writes `generated_per_class` demonstrations per
/// entity type, each imitating `imitate` random pool sentences drawn as classification's
/// generation requests draw theirs (recorded in `metrics` and `generated_demos.jsonl`), then
/// each pool sentence of `rows` is shown its `spec.knn` nearest in the pretrained encoder's
/// space (most similar last). An error when no written sentence is usable.
#[allow(clippy::too_many_arguments)]
pub fn generated_requests(
    ctx: &CellContext,
    client: &mut LlmClient,
    extractor: &Extractor,
    base: &Slm,
    words: &[WordEncoded],
    rows: &[usize],
    spec: &FreealSpec,
    rng: &mut ChaCha8Rng,
    metrics: &mut BTreeMap<String, f64>,
) -> Result<Vec<GenerateRequest>> {
    let dataset = ctx.dataset;
    let requests: Vec<(usize, GenerateRequest)> =
        imitation_draws(spec, dataset, ctx.cell.config.seed, rng)
            .into_iter()
            .map(|(kind, shown, seed)| (kind, extractor.writing_request(&shown, kind, seed)))
            .collect();
    ctx.progress
        .phase("LLM writes demonstrations", requests.len() as u64);
    let bodies: Vec<GenerateRequest> = requests.iter().map(|r| r.1.clone()).collect();
    let answers = client.generate(&bodies, &|n| ctx.progress.inc(n))?;
    let asked: Vec<usize> = requests.iter().map(|r| r.0).collect();
    let written = read_written(&asked, &answers, &dataset.label_names);
    written.record(metrics);
    written.write(&ctx.out_dir.join("generated_demos.jsonl"), dataset)?;
    if written.demos.is_empty() {
        return Err(crate::error::Error::Cell {
            cell: ctx.cell.name.clone(),
            message: format!(
                "the LLM wrote no usable demonstration ({} answers unparsable, {} without an \
                 entity found in its own sentence); check the prompt file's [generation]",
                written.unparsable, written.without_entity
            ),
        });
    }
    let unit = |words: &[WordEncoded]| -> Result<Vec<Vec<f32>>> {
        Ok(unit_embeddings(
            infer_tags(base, words, ctx.progress)?.pooled,
        ))
    };
    let pool_rows = unit(words)?;
    let demo_words: Vec<&[String]> = written
        .demos
        .iter()
        .map(|d| d.sentence.tokens.as_slice())
        .collect();
    let demo_rows = unit(&base.tokenize_words(&demo_words)?)?;
    let zeros = vec![0usize; written.demos.len()];
    Ok(rows
        .iter()
        .map(|&i| {
            let chosen = knn(&pool_rows[i], &demo_rows, &zeros, spec.knn, false, None);
            let demos: Vec<(&Example, &[usize])> = chosen
                .iter()
                .map(|&d| (&written.demos[d].sentence, written.demos[d].tags.as_slice()))
                .collect();
            extractor.request(&dataset.train[i], &demos)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Generation {
        Generation {
            text: text.into(),
            usage: Default::default(),
        }
    }

    #[test]
    fn written_answers_become_tagged_demonstrations_or_are_counted_out() {
        let types = vec!["PER".to_string(), "LOC".to_string()];
        let answers = [
            answer(
                r#"{"sentence": "Ann Lee flew to Oslo, then home.", "entities": [{"span": "Ann Lee", "type": "PER"}, {"span": "Oslo", "type": "LOC"}, {"span": "Rome", "type": "LOC"}]}"#,
            ),
            // Cut off by the token limit: no complete object.
            answer(r#"{"sentence": "Bo met", "entities": [{"span": "Bo""#),
            // Every listed entity missing from the sentence.
            answer(
                r#"{"sentence": "Nothing happened.", "entities": [{"span": "Paris", "type": "LOC"}]}"#,
            ),
            // Only an entity of a type outside the set.
            answer(r#"{"sentence": "EU talks.", "entities": [{"span": "EU", "type": "ORG"}]}"#),
        ];
        let written = read_written(&[0, 1, 1, 0], &answers, &types);
        assert_eq!(written.demos.len(), 1);
        let demo = &written.demos[0];
        assert_eq!(demo.asked, 0);
        assert_eq!(demo.sentence.text, "Ann Lee flew to Oslo , then home .");
        // O = 0, B-PER = 1, I-PER = 2, B-LOC = 3.
        assert_eq!(demo.tags, vec![1, 2, 0, 0, 3, 0, 0, 0, 0]);
        assert_eq!(
            (
                written.unparsable,
                written.without_entity,
                written.unmatched
            ),
            (1, 2, 2)
        );
    }
}
