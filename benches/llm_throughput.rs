//! Labelled examples/s of an embedded LLM (the default one unless named) on SST-2 test
//! sentences, three ways on the same model, prompts and threads:
//!   1. verbalizer log-probability scoring with prompt-prefix (KV) reuse (the default);
//!   2. the same scoring, every prompt computed from scratch;
//!   3. free generation (greedy, up to 8 tokens) from scratch, then parsing: what a chat server
//!      without prompt caching does per request.
//!
//! Prompts carry 4 fixed demonstrations (the shared prefix a FreeAL/ICL batch has), plus
//! zero-shot for comparison.
//!
//!   cargo bench --bench llm_throughput          (FREEAL_BENCH_LLM_N=examples, default 40;
//!                                                FREEAL_BENCH_LLM_MODEL=a fetchable model name)

use std::time::Instant;

use freeal_bench::data::{Dataset, DatasetDef};
use freeal_bench::llm::annotator::{Annotator, AnswerMode, ClassifyRequest};
use freeal_bench::llm::embedded::{EmbeddedLlm, EmbeddedOptions};
use freeal_bench::llm::gguf_path;
use freeal_bench::llm::prompt::PromptTemplate;
use freeal_bench::slm::model::default_models_dir;

const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";

fn run(
    model: &str,
    mode: AnswerMode,
    prefix_reuse: bool,
    requests: &[ClassifyRequest],
) -> (f64, f64, u64) {
    let models = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(default_models_dir);
    let mut llm = EmbeddedLlm::new(EmbeddedOptions {
        path: gguf_path(model, &models),
        name: model.into(),
        mode,
        max_tokens: 8,
        n_ctx: 4096,
        threads: 0,
        prefix_reuse,
    })
    .unwrap_or_else(|e| panic!("{e}: run scripts/fetch-models.sh {model}"));
    // Warm-up: page the weights in.
    let _ = llm.classify(&requests[..1], &|_| {});
    let start = Instant::now();
    let answers = llm.classify(requests, &|_| {});
    let secs = start.elapsed().as_secs_f64();
    let parsed = answers
        .iter()
        .filter(|a| a.as_ref().is_ok_and(|a| a.label.is_some()))
        .count();
    (
        requests.len() as f64 / secs,
        parsed as f64 / requests.len() as f64,
        llm.computed_tokens(),
    )
}

fn main() {
    let n: usize = std::env::var("FREEAL_BENCH_LLM_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let model = std::env::var("FREEAL_BENCH_LLM_MODEL").unwrap_or_else(|_| DEFAULT_MODEL.into());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let def = DatasetDef::from_file(&root.join("datasets/sst2/dataset.toml")).unwrap();
    let data = Dataset::load(&def, 0).unwrap();
    let prompt = PromptTemplate::load(&root.join("configs/prompts/sst2.toml")).unwrap();
    let demos: Vec<(&str, usize)> = data.train[..4]
        .iter()
        .map(|e| (e.text.as_str(), e.class().unwrap()))
        .collect();
    println!("{n} SST-2 test sentences, {model}, all cores\n");
    println!("| prompt | method | examples/s | answers naming a label | prompt tokens computed |");
    println!("|---|---|---|---|---|");
    for (name, shots) in [("4 demos", &demos[..]), ("zero-shot", &[][..])] {
        let requests: Vec<ClassifyRequest> = data.test[..n]
            .iter()
            .map(|e| prompt.classify(&e.text, shots, &data.verbalizers))
            .collect();
        let mut rates = Vec::new();
        for (label, mode, reuse) in [
            ("logprobs + prefix reuse", AnswerMode::Logprobs, true),
            ("logprobs, no reuse", AnswerMode::Logprobs, false),
            ("free generation, no reuse", AnswerMode::Generate, false),
        ] {
            let (rate, parsed, computed) = run(&model, mode, reuse, &requests);
            rates.push(rate);
            println!(
                "| {name} | {label} | {rate:.2} | {:.0}% | {computed} |",
                parsed * 100.0
            );
        }
        println!(
            "| {name} | ratio (1) / (3) | {:.2}x | | |",
            rates[0] / rates[2]
        );
    }
}
