//! The embedded default LLM: a GGUF model run in-process by llama.cpp (`llama-cpp-2`).
//!
//! Labels come from the log-probabilities of each label's verbalizer tokens right after the
//! prompt (one forward pass, no invalid answers); free generation with answer parsing is the
//! alternative mode. The KV cache of the previous prompt is kept and only the tokens after the
//! longest common prefix are computed, so a shared instruction (and, zero-shot, the shared demo
//! block) is processed once per batch rather than once per item.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use crate::error::{Error, Result};
use crate::llm::annotator::{
    Annotation, Annotator, AnswerMode, ChatMessage, ClassifyRequest, GenerateRequest, Generation,
    Tick, Usage, log_sum_exp, parse_answer, softmax,
};

/// Settings of the embedded backend.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedOptions {
    /// The `.gguf` file.
    pub path: PathBuf,
    /// Name used in ids and records.
    pub name: String,
    /// Answer mode.
    pub mode: AnswerMode,
    /// Generated-token cap in `Generate` mode.
    pub max_tokens: u32,
    /// Context window in tokens.
    pub n_ctx: u32,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    /// Keep the previous prompt's KV cache and compute only what differs.
    pub prefix_reuse: bool,
}

fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<std::result::Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            let mut backend = LlamaBackend::init().map_err(|e| e.to_string())?;
            // llama.cpp logs every tensor it loads to stderr; that would bury the progress bars.
            backend.void_logs();
            Ok(backend)
        })
        .as_ref()
        .map_err(|e| Error::llm("embedded", format!("cannot start llama.cpp: {e}")))
}

/// Models stay loaded for the life of the process: a sweep's cells share one copy, and the
/// contexts borrowing them can then live in `'static` annotators.
fn load_model(path: &Path) -> Result<&'static LlamaModel> {
    static MODELS: OnceLock<Mutex<HashMap<PathBuf, &'static LlamaModel>>> = OnceLock::new();
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(model) = models.get(path) {
        return Ok(model);
    }
    if !path.is_file() {
        return Err(Error::model(
            path.display().to_string(),
            "GGUF file not found; run `scripts/fetch-models.sh qwen2.5-coder-0.5b-instruct` \
             (or set llm.model to a .gguf path)",
        ));
    }
    let model = LlamaModel::load_from_file(backend()?, path, &LlamaModelParams::default())
        .map_err(|e| Error::model(path.display().to_string(), e.to_string()))?;
    let model: &'static LlamaModel = Box::leak(Box::new(model));
    models.insert(path.to_path_buf(), model);
    Ok(model)
}

/// Most sequences decoded side by side (the prompt plus one per multi-token verbalizer).
const MAX_SEQS: u32 = 16;

/// The embedded llama.cpp annotator.
pub struct EmbeddedLlm {
    options: EmbeddedOptions,
    model: &'static LlamaModel,
    ctx: LlamaContext<'static>,
    /// Tokens whose KV entries sit in sequence 0.
    cached: Vec<LlamaToken>,
    n_batch: u32,
    /// Prompt tokens actually computed (after prefix reuse), for benchmarks.
    computed_tokens: u64,
}

impl EmbeddedLlm {
    /// Loads the model (once per process) and opens a context.
    pub fn new(options: EmbeddedOptions) -> Result<Self> {
        let model = load_model(&options.path)?;
        let threads = if options.threads == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            options.threads
        } as i32;
        let n_batch = 512.min(options.n_ctx);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(options.n_ctx))
            .with_n_batch(n_batch)
            .with_n_ubatch(n_batch)
            .with_n_seq_max(MAX_SEQS)
            .with_kv_unified(true)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = model.new_context(backend()?, params).map_err(|e| {
            Error::llm(
                options.name.clone(),
                format!("cannot create a context: {e}"),
            )
        })?;
        Ok(EmbeddedLlm {
            options,
            model,
            ctx,
            cached: Vec::new(),
            n_batch,
            computed_tokens: 0,
        })
    }

    /// Prompt tokens computed so far (the rest came from the reused prefix).
    pub fn computed_tokens(&self) -> u64 {
        self.computed_tokens
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::llm(self.id(), message)
    }

    /// The chat rendered by the model's own template, ending with the assistant's opening.
    fn render(&self, messages: &[ChatMessage]) -> Result<String> {
        let template = self
            .model
            .chat_template(None)
            .map_err(|e| self.err(format!("the GGUF has no usable chat template: {e}")))?;
        let chat = messages
            .iter()
            .map(|m| {
                let role = m.role.as_str();
                LlamaChatMessage::new(role.into(), m.content.clone())
                    .map_err(|e| self.err(format!("message not representable: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.model
            .apply_chat_template(&template, &chat, true)
            .map_err(|e| self.err(format!("chat template failed: {e}")))
    }

    fn tokenize(&self, text: &str, special: bool) -> Vec<LlamaToken> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), special, special)
    }

    /// Makes sequence 0 hold exactly `tokens` and returns the logits after the last one.
    fn feed_prompt(&mut self, tokens: &[LlamaToken]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(self.err("empty prompt"));
        }
        if tokens.len() + 8 > self.options.n_ctx as usize {
            return Err(Error::Config {
                location: "spec".into(),
                key: "llm.n_ctx".into(),
                message: format!(
                    "a prompt has {} tokens but the context holds {}; raise llm.n_ctx or use \
                     fewer demonstrations",
                    tokens.len(),
                    self.options.n_ctx
                ),
            });
        }
        let mut keep = if self.options.prefix_reuse {
            self.cached
                .iter()
                .zip(tokens)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            0
        };
        // The last prompt token must be decoded again to get its logits.
        keep = keep.min(tokens.len() - 1);
        self.ctx
            .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
            .map_err(|e| self.err(format!("KV cache: {e}")))?;
        for s in 1..MAX_SEQS as i32 {
            self.ctx
                .clear_kv_cache_seq(Some(s as u32), None, None)
                .map_err(|e| self.err(format!("KV cache: {e}")))?;
        }
        self.cached.truncate(keep);
        let mut batch = LlamaBatch::new(self.n_batch as usize, 1);
        let rest = &tokens[keep..];
        for (c, chunk) in rest.chunks(self.n_batch as usize).enumerate() {
            batch.clear();
            let base = keep + c * self.n_batch as usize;
            for (i, &tok) in chunk.iter().enumerate() {
                let pos = base + i;
                batch
                    .add(tok, pos as i32, &[0], pos == tokens.len() - 1)
                    .map_err(|e| self.err(e.to_string()))?;
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| self.err(format!("decode failed: {e}")))?;
        }
        self.computed_tokens += rest.len() as u64;
        self.cached = tokens.to_vec();
        Ok(self.ctx.get_logits_ith(batch.n_tokens() - 1).to_vec())
    }

    /// Log-probability of each verbalizer token sequence after the prompt in sequence 0.
    fn score_sequences(
        &mut self,
        first_logits: &[f32],
        seqs: &[Vec<LlamaToken>],
    ) -> Result<(Vec<f64>, u64)> {
        let first = log_softmax(first_logits);
        let mut scores: Vec<f64> = seqs
            .iter()
            .map(|s| s.first().map_or(f64::NEG_INFINITY, |t| first[t.0 as usize]))
            .collect();
        let multi: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].len() > 1).collect();
        let mut extra = 0u64;
        // Each multi-token verbalizer continues in its own sequence, sharing the prompt's KV
        // entries, and all continuations go through one decode.
        for group in multi.chunks((MAX_SEQS - 1) as usize) {
            let n_prompt = self.cached.len();
            let total: usize = group.iter().map(|&i| seqs[i].len() - 1).sum();
            let mut batch = LlamaBatch::new(total.max(1), 1);
            let mut slots = Vec::new();
            for (j, &i) in group.iter().enumerate() {
                let seq_id = j as i32 + 1;
                self.ctx
                    .copy_kv_cache_seq(0, seq_id, None, None)
                    .map_err(|e| self.err(format!("KV cache: {e}")))?;
                let tokens = &seqs[i];
                for (k, &tok) in tokens[..tokens.len() - 1].iter().enumerate() {
                    batch
                        .add(tok, (n_prompt + k) as i32, &[seq_id], true)
                        .map_err(|e| self.err(e.to_string()))?;
                    slots.push((i, k + 1, batch.n_tokens() - 1));
                }
            }
            self.ctx
                .decode(&mut batch)
                .map_err(|e| self.err(format!("decode failed: {e}")))?;
            extra += total as u64;
            for (i, k, idx) in slots {
                let lp = log_softmax(self.ctx.get_logits_ith(idx));
                scores[i] += lp[seqs[i][k].0 as usize];
            }
            for j in 0..group.len() {
                self.ctx
                    .clear_kv_cache_seq(Some(j as u32 + 1), None, None)
                    .map_err(|e| self.err(format!("KV cache: {e}")))?;
            }
        }
        Ok((scores, extra))
    }

    fn classify_one(&mut self, request: &ClassifyRequest) -> Result<Annotation> {
        let prompt = self.render(&request.messages)?;
        let tokens = self.tokenize(&prompt, true);
        let logits = self.feed_prompt(&tokens)?;
        match self.options.mode {
            AnswerMode::Logprobs => {
                let mut seqs = Vec::new();
                let mut owner = Vec::new();
                for (label, words) in request.verbalizers.iter().enumerate() {
                    for word in words {
                        seqs.push(self.tokenize(word, false));
                        owner.push(label);
                    }
                }
                let (scores, extra) = self.score_sequences(&logits, &seqs)?;
                let per_label: Vec<f64> = (0..request.verbalizers.len())
                    .map(|l| {
                        let mine: Vec<f64> = scores
                            .iter()
                            .zip(&owner)
                            .filter(|(_, o)| **o == l)
                            .map(|(s, _)| *s)
                            .collect();
                        log_sum_exp(&mine)
                    })
                    .collect();
                let probs = softmax(&per_label);
                let label = crate::metrics::argmax(&probs);
                Ok(Annotation {
                    label: Some(label),
                    probs,
                    raw: String::new(),
                    usage: Usage {
                        prompt_tokens: tokens.len() as u64,
                        completion_tokens: 1 + extra,
                    },
                })
            }
            AnswerMode::Generate => {
                let mut sampler = LlamaSampler::greedy();
                let (text, n) =
                    self.continue_from(&tokens, self.options.max_tokens, &mut sampler)?;
                Ok(Annotation {
                    label: parse_answer(&text, &request.verbalizers),
                    probs: Vec::new(),
                    raw: text,
                    usage: Usage {
                        prompt_tokens: tokens.len() as u64,
                        completion_tokens: n,
                    },
                })
            }
        }
    }

    fn generate_one(&mut self, request: &GenerateRequest) -> Result<Generation> {
        let prompt = self.render(&request.messages)?;
        let tokens = self.tokenize(&prompt, true);
        self.feed_prompt(&tokens)?;
        let constrained = match &request.grammar {
            Some(grammar) => Some(
                LlamaSampler::grammar(self.model, grammar, "root")
                    .map_err(|e| self.err(format!("the answer grammar does not compile: {e}")))?,
            ),
            None => None,
        };
        // Annotations (temperature 0) are greedy, within the grammar when there is one; written
        // demonstrations sample, within theirs.
        let mut sampler = match (constrained, request.temperature <= 0.0) {
            (Some(constrained), true) => {
                LlamaSampler::chain_simple([constrained, LlamaSampler::greedy()])
            }
            (None, true) => LlamaSampler::greedy(),
            (constrained, false) => LlamaSampler::chain_simple(constrained.into_iter().chain([
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::temp(request.temperature),
                // llama.cpp takes a 32-bit seed; fold the 64-bit one.
                LlamaSampler::dist((request.seed ^ (request.seed >> 32)) as u32),
            ])),
        };
        let (text, n) = self.continue_from(&tokens, request.max_tokens, &mut sampler)?;
        Ok(Generation {
            text: text.trim().to_string(),
            usage: Usage {
                prompt_tokens: tokens.len() as u64,
                completion_tokens: n,
            },
        })
    }

    /// Generates after the prompt in sequence 0 (whose last logits are `logits`) until an
    /// end-of-generation token or `max_tokens`.
    fn continue_from(
        &mut self,
        prompt: &[LlamaToken],
        max_tokens: u32,
        sampler: &mut LlamaSampler,
    ) -> Result<(String, u64)> {
        let mut out = Vec::new();
        let mut batch = LlamaBatch::new(1, 1);
        // The sampler reads the logits the context holds: those of the last prompt token.
        let mut idx = -1;
        for pos in (prompt.len()..).take(max_tokens as usize) {
            let tok = sampler.sample(&self.ctx, idx);
            if self.model.vocab().is_eog(tok) {
                break;
            }
            out.push(tok);
            if pos + 1 >= self.options.n_ctx as usize {
                break;
            }
            batch.clear();
            batch
                .add(tok, pos as i32, &[0], true)
                .map_err(|e| self.err(e.to_string()))?;
            self.ctx
                .decode(&mut batch)
                .map_err(|e| self.err(format!("decode failed: {e}")))?;
            self.cached.push(tok);
            idx = 0;
        }
        let mut bytes = Vec::new();
        for &tok in &out {
            bytes.extend(self.model.vocab().token_to_piece(tok, false, None));
        }
        Ok((
            String::from_utf8_lossy(&bytes).into_owned(),
            out.len() as u64,
        ))
    }
}

fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&l| l as f64 - log_z).collect()
}

impl Annotator for EmbeddedLlm {
    fn id(&self) -> String {
        format!("embedded:{}", self.options.name)
    }

    fn decoding(&self) -> serde_json::Value {
        match self.options.mode {
            AnswerMode::Logprobs => serde_json::json!({"mode": "logprobs"}),
            AnswerMode::Generate => serde_json::json!({
                "mode": "generate", "max_tokens": self.options.max_tokens, "temperature": 0.0
            }),
        }
    }

    fn classify(&mut self, requests: &[ClassifyRequest], tick: Tick) -> Vec<Result<Annotation>> {
        requests
            .iter()
            .map(|request| {
                let answer = self.classify_one(request);
                tick(1);
                answer
            })
            .collect()
    }

    fn generate(&mut self, requests: &[GenerateRequest], tick: Tick) -> Vec<Result<Generation>> {
        requests
            .iter()
            .map(|request| {
                let answer = self.generate_one(request);
                tick(1);
                answer
            })
            .collect()
    }
}
