//! The embedded llama.cpp annotator on the small test model (SmolLM2-135M-Instruct): verbalizer
//! scoring is a proper distribution, prefix reuse changes the work but not the answer, multi-token
//! verbalizers are scored, generation is seeded, grammar-constrained extraction parses, written
//! demonstrations sample within their grammar.

mod common;

use freeal_bench::llm::annotator::{Annotator, AnswerMode, ClassifyRequest, GenerateRequest};
use freeal_bench::llm::embedded::{EmbeddedLlm, EmbeddedOptions};
use freeal_bench::llm::prompt::{DemoStyle, GenerationTemplate, PromptTemplate};

fn llm(prefix_reuse: bool, mode: AnswerMode) -> EmbeddedLlm {
    EmbeddedLlm::new(EmbeddedOptions {
        path: common::smollm_path(),
        name: "smollm2-135m-instruct".into(),
        mode,
        max_tokens: 6,
        n_ctx: 1024,
        threads: 0,
        prefix_reuse,
    })
    .unwrap()
}

fn template() -> PromptTemplate {
    PromptTemplate {
        instruction: "Classify the sentiment of a movie review as one of: {labels}. Reply with \
                      the label word only."
            .into(),
        query: "Review: {text}\nSentiment:".into(),
        answer: "{label}".into(),
        demo_style: DemoStyle::Turns,
        demo_separator: "\n\n".into(),
        generation: GenerationTemplate {
            prompt: "Examples:\n{examples}\nWrite a new {label} movie review.".into(),
            max_tokens: 16,
            temperature: 0.8,
        },
        paraphrase: GenerationTemplate {
            prompt: "Rewrite in other words: {text}".into(),
            max_tokens: 16,
            temperature: 0.7,
        },
    }
}

fn requests(verbalizers: &[Vec<String>]) -> Vec<ClassifyRequest> {
    let t = template();
    let demos = [
        ("a dull, lifeless mess", 0),
        ("a joyous, moving triumph", 1),
    ];
    [
        "the best film of the year, i loved every minute",
        "boring, ugly and far too long",
        "an utter waste of time",
    ]
    .iter()
    .map(|text| t.classify(text, &demos, verbalizers))
    .collect()
}

fn words(list: &[&[&str]]) -> Vec<Vec<String>> {
    list.iter()
        .map(|w| w.iter().map(|s| s.to_string()).collect())
        .collect()
}

#[test]
fn scoring_gives_distributions_and_prefix_reuse_only_saves_work() {
    let verbs = words(&[&["negative"], &["positive"]]);
    let reqs = requests(&verbs);
    let mut reuse = llm(true, AnswerMode::Logprobs);
    let mut fresh = llm(false, AnswerMode::Logprobs);
    let a: Vec<_> = reuse
        .classify(&reqs, &|_| {})
        .into_iter()
        .map(|x| x.unwrap())
        .collect();
    let b: Vec<_> = fresh
        .classify(&reqs, &|_| {})
        .into_iter()
        .map(|x| x.unwrap())
        .collect();
    // The first request has nothing to reuse: the same computation, the same numbers.
    assert_eq!(a[0].probs, b[0].probs);
    let mut clear_answers = 0;
    for (x, y) in a.iter().zip(&b) {
        let sum: f32 = x.probs.iter().sum();
        assert!((sum - 1.0).abs() < 1e-4, "{:?}", x.probs);
        // Moving each probability by under the 0.06 allowed below can flip only a margin under
        // 0.12 (an AVX-512 build of llama.cpp turned 0.4997 / 0.5003 into 0.510 / 0.490); a
        // clearer answer must not flip.
        if (y.probs[0] - y.probs[1]).abs() > 0.12 {
            assert_eq!(x.label, y.label, "{:?} vs {:?}", x.probs, y.probs);
            clear_answers += 1;
        }
        // Not bit-identical: with reuse only the suffix goes through the matrix kernels, whose
        // blocking (and so rounding) depends on how many rows a batch has; this 135M 4-bit model
        // amplifies that near a tie (seen here: up to 0.04).
        for (p, q) in x.probs.iter().zip(&y.probs) {
            assert!((p - q).abs() < 0.06, "{:?} vs {:?}", x.probs, y.probs);
        }
        assert!(x.usage.prompt_tokens > 20);
    }
    assert!(
        clear_answers >= 2,
        "the prompts should mostly give clear answers"
    );
    // The same prompt again recomputes only its last token, over the same cached entries: the
    // same numbers as when that prompt's suffix was computed.
    let again = reuse.classify(&reqs[2..], &|_| {}).remove(0).unwrap();
    assert_eq!(again.probs, a[2].probs);
    // The three prompts share the instruction and both demonstrations.
    assert!(
        reuse.computed_tokens() * 2 < fresh.computed_tokens(),
        "{} vs {}",
        reuse.computed_tokens(),
        fresh.computed_tokens()
    );
}

#[test]
fn multi_token_verbalizers_and_synonyms_are_scored() {
    // "thumbs down" / "thumbs up" are several tokens and share their first one, so only the
    // continuation can tell them apart.
    let verbs = words(&[&["thumbs down", "bad"], &["thumbs up", "good"]]);
    let reqs = requests(&verbs);
    let mut model = llm(true, AnswerMode::Logprobs);
    for answer in model.classify(&reqs, &|_| {}) {
        let answer = answer.unwrap();
        assert_eq!(answer.probs.len(), 2);
        assert!(answer.probs.iter().all(|p| p.is_finite() && *p > 0.0));
        assert!(
            answer.usage.completion_tokens > 1,
            "continuations were decoded"
        );
    }
}

#[test]
fn free_generation_is_parsed_or_masked_and_generation_is_seeded() {
    let verbs = words(&[&["negative"], &["positive"]]);
    let reqs = requests(&verbs);
    let mut model = llm(true, AnswerMode::Generate);
    for answer in model.classify(&reqs, &|_| {}) {
        let answer = answer.unwrap();
        assert!(answer.probs.is_empty());
        assert!(!answer.raw.is_empty());
        let lower = answer.raw.to_lowercase();
        let names_one = lower.contains("negative") || lower.contains("positive");
        assert_eq!(answer.label.is_some(), names_one, "{:?}", answer.raw);
    }
    let t = template();
    let make =
        |seed| -> GenerateRequest { t.generate(&["a fun ride", "too slow"], 1, &verbs, seed) };
    let first = model.generate(&[make(7), make(8)], &|_| {});
    let again = model.generate(&[make(7)], &|_| {});
    let first: Vec<String> = first.into_iter().map(|g| g.unwrap().text).collect();
    assert!(!first[0].is_empty());
    assert_eq!(first[0], again.into_iter().next().unwrap().unwrap().text);
}

#[test]
fn grammar_constrained_extraction_always_parses() {
    use freeal_bench::llm::spans::{AnswerGrammar, parse_answer};
    let types: Vec<String> = vec!["PER".into(), "LOC".into(), "ORG".into()];
    let prompt = PromptTemplate {
        instruction: "Find the named entities of these types: {labels}. Answer with a JSON list \
                      of {\"span\", \"type\"} objects."
            .into(),
        query: "Sentence: {text}".into(),
        ..template()
    };
    let sentences = [
        "John Smith flew from Paris to meet IBM executives .",
        "The weather was mild on Tuesday .",
    ];
    let mut model = llm(true, AnswerMode::Generate);
    for style in [AnswerGrammar::Compact, AnswerGrammar::Json] {
        let grammar = style.gbnf(&types).unwrap();
        let requests: Vec<GenerateRequest> = sentences
            .iter()
            .map(|s| {
                let types = "PER (person), LOC (location), ORG (organization)";
                // A cut answer keeps its complete objects; 48 tokens hold at least one.
                prompt.extract(s, &[], types, Some(&grammar), 48)
            })
            .collect();
        // The 135M test model left alone rarely writes this JSON; under the grammar it must.
        for (sentence, answer) in sentences.iter().zip(model.generate(&requests, &|_| {})) {
            let text = answer.unwrap().text;
            assert!(
                text.trim_start().starts_with(['[', '`']),
                "{style:?} {sentence}: {text}"
            );
            let parsed = parse_answer(&text, &types);
            assert!(!parsed.unparsable, "{style:?} {sentence}: {text}");
            assert_eq!(parsed.out_of_set, 0, "{text}");
        }
    }
}

#[test]
fn written_demonstrations_sample_within_their_grammar_and_their_seed() {
    use freeal_bench::llm::spans::{AnswerGrammar, parse_written};
    let types: Vec<String> = vec!["PER".into(), "LOC".into()];
    let grammar = AnswerGrammar::Compact.generation_gbnf(&types).unwrap();
    let prompt = PromptTemplate {
        generation: GenerationTemplate {
            prompt: "Sentences:\n{examples}\nWrite a new sentence with a {label}, then list its \
                     entities of types {labels} as JSON."
                .into(),
            max_tokens: 64,
            temperature: 0.8,
        },
        ..template()
    };
    let examples = ["John Smith flew to Paris .", "Anna met Bob in Rome ."];
    let request = |seed: u64| {
        prompt.write_tagged(
            &examples,
            "PER (person)",
            "PER (person), LOC (location)",
            Some(&grammar),
            seed,
        )
    };
    let mut model = llm(true, AnswerMode::Generate);
    let texts: Vec<String> = [1, 2, 1]
        .iter()
        .map(|&seed| {
            model
                .generate(&[request(seed)], &|_| {})
                .remove(0)
                .unwrap()
                .text
        })
        .collect();
    assert_eq!(texts[0], texts[2], "the same seed writes the same answer");
    for text in &texts {
        assert!(text.starts_with(r#"{"sentence": ""#), "{text}");
        // Within the grammar, an answer that closes its object parses; one cut off by the
        // token limit does not, and is counted rather than guessed.
        assert_eq!(
            parse_written(text, &types).is_some(),
            text.ends_with("]}"),
            "{text}"
        );
    }
}
