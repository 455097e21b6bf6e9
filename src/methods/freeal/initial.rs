//! Round 0, active labeling: the LLM writes labeled demonstrations imitating random unlabeled
//! examples, then labels each example with its nearest generated demonstrations.

use rand::seq::index::sample;
use rand_chacha::ChaCha8Rng;

use super::config::FreealSpec;
use crate::data::Dataset;
use crate::llm::annotator::{ClassifyRequest, GenerateRequest};
use crate::llm::demos::knn;
use crate::llm::prompt::PromptTemplate;

/// The generation requests: `generated_per_class` per class, each showing `imitate` random
/// pool texts.
pub fn generation_requests(
    spec: &FreealSpec,
    prompt: &PromptTemplate,
    dataset: &Dataset,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, GenerateRequest)> {
    imitation_draws(spec, dataset, seed, rng)
        .into_iter()
        .map(|(label, shown, seed)| {
            (
                label,
                prompt.generate(&shown, label, &dataset.verbalizers, seed),
            )
        })
        .collect()
}

/// What each generation request shows: per label (class or entity type), `generated_per_class`
/// draws of `imitate` random pool texts, each with its sampling seed, derived from the cell
/// seed so cached samples are reused exactly.
pub fn imitation_draws<'a>(
    spec: &FreealSpec,
    dataset: &'a Dataset,
    seed: u64,
    rng: &mut ChaCha8Rng,
) -> Vec<(usize, Vec<&'a str>, u64)> {
    let pool = dataset.train.len();
    let mut out = Vec::new();
    for label in 0..dataset.num_labels() {
        for j in 0..spec.generated_per_class {
            let shown: Vec<&str> = sample(rng, pool, spec.imitate.min(pool))
                .into_iter()
                .map(|i| dataset.train[i].text.as_str())
                .collect();
            let request_seed = seed
                .wrapping_mul(1_000_003)
                .wrapping_add((label * 100_000 + j) as u64);
            out.push((label, shown, request_seed));
        }
    }
    out
}

/// The usable sentence in a generated answer: its first non-empty line without list markers or
/// quotes; `None` when nothing is left.
pub fn clean_generation(text: &str) -> Option<String> {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line.trim_start_matches(['-', '*', ' ']);
    let line = line.trim_matches(|c: char| c == '"' || c == '\'' || c.is_whitespace());
    (!line.is_empty()).then(|| line.to_string())
}

/// Requests labelling each `targets` pool example with its `spec.knn` most similar generated
/// demonstrations (`demo_embeddings`: unit rows, `pool_embeddings`: unit rows of the pool).
pub fn knn_requests(
    spec: &FreealSpec,
    prompt: &PromptTemplate,
    dataset: &Dataset,
    targets: &[usize],
    pool_embeddings: &[Vec<f32>],
    demos: &[(String, usize)],
    demo_embeddings: &[Vec<f32>],
) -> Vec<ClassifyRequest> {
    let demo_labels: Vec<usize> = demos.iter().map(|d| d.1).collect();
    targets
        .iter()
        .map(|&i| {
            let chosen = knn(
                &pool_embeddings[i],
                demo_embeddings,
                &demo_labels,
                spec.knn,
                false,
                None,
            );
            let shown: Vec<(&str, usize)> = chosen
                .iter()
                .map(|&d| (demos[d].0.as_str(), demos[d].1))
                .collect();
            prompt.classify(&dataset.train[i].text, &shown, &dataset.verbalizers)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::clean_generation;

    #[test]
    fn generations_are_cut_to_their_first_sentence_line() {
        assert_eq!(
            clean_generation("\n  \"A warm, funny film.\"\nSentiment: positive").as_deref(),
            Some("A warm, funny film.")
        );
        assert_eq!(
            clean_generation("- a dull mess").as_deref(),
            Some("a dull mess")
        );
        assert_eq!(clean_generation("  \n \"\" "), None);
    }
}
