//! The seam between methods and LLMs: what is asked (rendered chat + label verbalizers) and what
//! comes back (label, distribution over labels, token usage).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How an LLM answers a classification request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum AnswerMode {
    /// Compare the log-probabilities of the verbalizers after the prompt.
    Logprobs,
    /// Generate greedily and parse the answer (unparsable answers are masked).
    Generate,
}

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Task instruction.
    System,
    /// Demonstration inputs and the query.
    User,
    /// Demonstration answers.
    Assistant,
}

impl Role {
    /// The role as chat APIs and templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A probability row with all mass on `label` (empty when there is none).
pub fn one_hot(label: Option<usize>, num_labels: usize) -> Vec<f32> {
    label.map_or_else(Vec::new, |l| {
        (0..num_labels)
            .map(|k| if k == l { 1.0 } else { 0.0 })
            .collect()
    })
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        ChatMessage {
            role,
            content: content.into(),
        }
    }
}

/// One item to label.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifyRequest {
    /// The raw text being labelled (replay and simulated annotators look it up; LLMs see only
    /// `messages`).
    pub query: String,
    /// The rendered prompt; the assistant's answer is the label.
    pub messages: Vec<ChatMessage>,
    /// Per label, the words that name it (the first one is what demonstrations show).
    pub verbalizers: Vec<Vec<String>>,
}

/// One free-text generation (demonstration generation, paraphrases).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerateRequest {
    /// The rendered prompt.
    pub messages: Vec<ChatMessage>,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    pub temperature: f32,
    /// Sampling seed (part of the request, so cached samples stay reproducible).
    pub seed: u64,
    /// The sentence being annotated, for span extraction (the simulated annotator looks it up;
    /// LLMs see only `messages`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// A GBNF grammar the answer must follow (llama.cpp's format): constrained decoding where
    /// the backend supports it, so structured answers always parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
}

/// Tokens one request consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens processed (including any reused from a cached prefix).
    pub prompt_tokens: u64,
    /// Tokens generated or scored after the prompt.
    pub completion_tokens: u64,
}

/// The answer to a [`ClassifyRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Annotation {
    /// Chosen label; `None` when the answer named no label (masked downstream, never guessed).
    pub label: Option<usize>,
    /// Probability per label (sums to 1 when known; empty when the backend gives none).
    pub probs: Vec<f32>,
    /// The raw answer text, for free generation; empty for log-probability scoring.
    pub raw: String,
    /// Tokens used.
    pub usage: Usage,
}

impl Annotation {
    /// A label known outright (read or simulated, not inferred): all probability on it, no
    /// tokens spent.
    pub fn certain(label: Option<usize>, num_labels: usize) -> Self {
        Annotation {
            label,
            probs: one_hot(label, num_labels),
            raw: String::new(),
            usage: Usage::default(),
        }
    }
}

/// The same error for every request of a batch (an annotator that cannot serve the call).
pub fn refuse_all<T>(id: String, count: usize, message: &str) -> Vec<Result<T>> {
    (0..count)
        .map(|_| Err(Error::llm(id.clone(), message)))
        .collect()
}

/// The answer to a [`GenerateRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated text.
    pub text: String,
    /// Tokens used.
    pub usage: Usage,
}

/// Progress callback: called with the number of requests just finished.
pub type Tick<'a> = &'a (dyn Fn(u64) + Sync);

/// A labeller: an LLM behind some runtime, or a named stand-in (replay, simulated).
pub trait Annotator: Send {
    /// Backend and model, e.g. `embedded:qwen2.5-coder-0.5b-instruct`; part of cache keys and
    /// of the records.
    fn id(&self) -> String;

    /// Decoding settings that change answers (mode, temperature, ...); part of cache keys.
    fn decoding(&self) -> serde_json::Value;

    /// Labels a batch; one answer per request, in order. A failed request does not discard the
    /// answers of the others (they are paid for and get cached).
    fn classify(&mut self, requests: &[ClassifyRequest], tick: Tick) -> Vec<Result<Annotation>>;

    /// Generates text for a batch; one answer per request, in order.
    fn generate(&mut self, requests: &[GenerateRequest], tick: Tick) -> Vec<Result<Generation>>;

    /// Whether answers cost real LLM calls worth caching (replay and simulated ones do not).
    fn cacheable(&self) -> bool {
        true
    }
}

/// Finds which label a free-text answer names: the label whose verbalizer occurs earliest in
/// the lower-cased answer (ties: the longer word), `None` when none occurs.
pub fn parse_answer(answer: &str, verbalizers: &[Vec<String>]) -> Option<usize> {
    let answer = answer.to_lowercase();
    let mut best: Option<(usize, std::cmp::Reverse<usize>, usize)> = None;
    for (label, words) in verbalizers.iter().enumerate() {
        for word in words {
            let word = word.to_lowercase();
            if word.is_empty() {
                continue;
            }
            if let Some(pos) = find_word(&answer, &word) {
                let key = (pos, std::cmp::Reverse(word.len()), label);
                if best.is_none_or(|b| key < b) {
                    best = Some(key);
                }
            }
        }
    }
    best.map(|(_, _, label)| label)
}

/// First occurrence of `word` in `text` not inside a longer alphanumeric word.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(off) = text[start..].find(word) {
        let pos = start + off;
        let end = pos + word.len();
        let before_ok = pos == 0 || !bytes[pos - 1].is_ascii_alphanumeric();
        let after_ok = end >= bytes.len() || !bytes[end].is_ascii_alphanumeric();
        if before_ok && after_ok {
            return Some(pos);
        }
        start = pos + word.chars().next().map_or(1, char::len_utf8);
    }
    None
}

/// Softmax of log-scores (stable); empty in, empty out.
pub fn softmax(scores: &[f64]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return vec![1.0 / scores.len().max(1) as f32; scores.len()];
    }
    let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| (e / total) as f32).collect()
}

/// `log(sum(exp(xs)))`, stable.
pub fn log_sum_exp(xs: &[f64]) -> f64 {
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + xs.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs() -> Vec<Vec<String>> {
        vec![
            vec!["negative".into(), "bad".into()],
            vec!["positive".into(), "good".into()],
        ]
    }

    #[test]
    fn parse_takes_the_earliest_whole_word() {
        assert_eq!(parse_answer("Positive.", &verbs()), Some(1));
        assert_eq!(
            parse_answer("It is negative, not positive", &verbs()),
            Some(0)
        );
        assert_eq!(parse_answer("a good film", &verbs()), Some(1));
        // "badly" is not "bad"; "goodness" is not "good".
        assert_eq!(parse_answer("badly made goodness", &verbs()), None);
        assert_eq!(parse_answer("I cannot tell", &verbs()), None);
    }

    #[test]
    fn softmax_and_logsumexp_known_values() {
        let p = softmax(&[0.0, (3.0f64).ln()]);
        assert!((p[0] - 0.25).abs() < 1e-6 && (p[1] - 0.75).abs() < 1e-6);
        assert!((log_sum_exp(&[(1.0f64).ln(), (2.0f64).ln()]) - (3.0f64).ln()).abs() < 1e-12);
        assert_eq!(
            softmax(&[f64::NEG_INFINITY, f64::NEG_INFINITY]),
            vec![0.5, 0.5]
        );
    }
}
