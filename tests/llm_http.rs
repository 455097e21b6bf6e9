//! The OpenAI-compatible backend against a loopback HTTP server that speaks the API: request
//! shape, logprob parsing, retries on 429/500/timeouts, malformed JSON, the hard cap, and that
//! answers received before a failure are kept in the cache; and, through the binary, that the
//! API key reaches the server and nothing else.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::llm_server::{
    Reply, chat_answer, http_options as options, query_of, review_request as request, serve,
    zero_shot_spec,
};

use freeal_bench::llm::annotator::Annotator;
use freeal_bench::llm::cache::LlmCache;
use freeal_bench::llm::client::{LlmClient, Price};
use freeal_bench::llm::openai::{Endpoint, HttpLlm};
use serde_json::{Value, json};

#[test]
fn chat_request_is_well_formed_and_logprobs_give_the_label() {
    let server = serve(Arc::new(|_, _| {
        Reply::Json(
            200,
            chat_answer(
                "positive",
                &[("positive", 0.7), ("negative", 0.2), ("The", 0.1)],
            ),
        )
    }));
    let mut llm = HttpLlm::new(options(&server.url)).unwrap();
    let got = llm.classify(&[request("a fine film")], &|_| {});
    let answer = got.into_iter().next().unwrap().unwrap();
    assert_eq!(answer.label, Some(1));
    assert!(
        (answer.probs[1] - 0.7 / 0.9).abs() < 1e-5,
        "{:?}",
        answer.probs
    );
    assert_eq!(
        (answer.usage.prompt_tokens, answer.usage.completion_tokens),
        (42, 1)
    );
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/chat/completions");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer sk-test"));
    let body = &seen[0].body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["logprobs"], true);
    assert_eq!(body["top_logprobs"], 20);
    assert_eq!(body["temperature"], 0.0);
    assert_eq!(body["messages"][0]["role"], "system");
    assert_eq!(body["messages"][1]["content"], "Review: a fine film");
}

#[test]
fn without_logprobs_the_answer_is_parsed_and_unparsable_is_masked() {
    let server = serve(Arc::new(|body: &Value, _| {
        let content = if query_of(body).contains("odd") {
            "I am not sure."
        } else {
            "Negative."
        };
        Reply::Json(
            200,
            json!({
                "choices": [{"message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 3}
            }),
        )
    }));
    let mut llm = HttpLlm::new(options(&server.url)).unwrap();
    let got: Vec<_> = llm
        .classify(&[request("dull"), request("odd")], &|_| {})
        .into_iter()
        .map(|a| a.unwrap())
        .collect();
    assert_eq!(got[0].label, Some(0));
    assert!(got[0].probs.is_empty());
    assert_eq!(got[1].label, None);
    assert_eq!(got[1].raw, "I am not sure.");
}

#[test]
fn completions_endpoint_sends_plain_text_and_reads_its_logprobs() {
    let server = serve(Arc::new(|_, _| {
        Reply::Json(
            200,
            json!({
                "choices": [{"text": " negative", "logprobs": {"top_logprobs": [{" negative": (0.6f64).ln(), " positive": (0.3f64).ln()}]}}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 1}
            }),
        )
    }));
    let mut opts = options(&server.url);
    opts.endpoint = Endpoint::Completions;
    let mut llm = HttpLlm::new(opts).unwrap();
    let answer = llm.classify(&[request("bad")], &|_| {}).remove(0).unwrap();
    assert_eq!(answer.label, Some(0));
    assert!((answer.probs[0] - 2.0 / 3.0).abs() < 1e-5);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen[0].path, "/v1/completions");
    assert_eq!(
        seen[0].body["prompt"],
        "Classify as negative or positive.\n\nReview: bad"
    );
    assert_eq!(seen[0].body["logprobs"], 20);
}

#[test]
fn retries_429_500_and_timeouts_then_succeeds() {
    let server = serve(Arc::new(|body: &Value, n| {
        let ok = chat_answer("negative", &[("negative", 0.9), ("positive", 0.1)]);
        match (query_of(body).as_str(), n) {
            ("Review: limited", 0) => Reply::Raw(429, r#"{"error":"rate limited"}"#.into()),
            ("Review: flaky", 0) => Reply::Raw(500, "oops".into()),
            ("Review: flaky", 1) => Reply::Raw(503, "still down".into()),
            ("Review: slow", 0) => Reply::Slow(Duration::from_millis(1500), ok),
            _ => Reply::Json(200, ok),
        }
    }));
    let mut opts = options(&server.url);
    opts.timeout = Duration::from_millis(500);
    let mut llm = HttpLlm::new(opts).unwrap();
    let got = llm.classify(
        &[request("limited"), request("flaky"), request("slow")],
        &|_| {},
    );
    for answer in &got {
        assert_eq!(answer.as_ref().unwrap().label, Some(0));
    }
    // 2 + 3 + 2 attempts.
    assert_eq!(server.seen.lock().unwrap().len(), 7);
    assert_eq!(llm.requests_sent(), 7);
}

#[test]
fn a_client_error_is_not_retried_and_names_the_status() {
    let server = serve(Arc::new(|_, _| {
        Reply::Raw(401, r#"{"error":"bad key"}"#.into())
    }));
    let mut llm = HttpLlm::new(options(&server.url)).unwrap();
    let err = llm
        .classify(&[request("x")], &|_| {})
        .remove(0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("401") && err.contains("bad key"), "{err}");
    assert_eq!(server.seen.lock().unwrap().len(), 1);
}

#[test]
fn malformed_json_is_a_clear_error_and_the_other_answers_are_kept() {
    let broken = Arc::new(Mutex::new(true));
    let flag = broken.clone();
    let server = serve(Arc::new(move |body: &Value, _| {
        if query_of(body).contains("bad") && *flag.lock().unwrap() {
            Reply::Raw(200, "{\"choices\": [".into())
        } else {
            Reply::Json(
                200,
                chat_answer("positive", &[("positive", 0.8), ("negative", 0.2)]),
            )
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let cache_path = dir.path().join("cache.sqlite");
    let requests = vec![request("one"), request("bad"), request("three")];
    let mut client = LlmClient::new(
        Box::new(HttpLlm::new(options(&server.url)).unwrap()),
        Some(LlmCache::open(&cache_path).unwrap()),
        Price::default(),
    );
    let err = client.classify(&requests, &|_| {}).unwrap_err().to_string();
    assert!(err.contains("malformed JSON"), "{err}");
    assert_eq!(LlmCache::open(&cache_path).unwrap().len().unwrap(), 2);

    // The server is fixed: rerunning sends only the failed request.
    *broken.lock().unwrap() = false;
    let before = server.seen.lock().unwrap().len();
    let answers = client.classify(&requests, &|_| {}).unwrap();
    assert_eq!(answers.len(), 3);
    assert_eq!(server.seen.lock().unwrap().len(), before + 1);
    let usage = client.take_usage();
    assert_eq!(usage.cache_hits, 2);
}

#[test]
fn the_hard_cap_stops_sending() {
    let server = serve(Arc::new(|_, _| Reply::Raw(500, "down".into())));
    let mut opts = options(&server.url);
    opts.max_requests = 3;
    opts.concurrency = 1;
    let mut llm = HttpLlm::new(opts).unwrap();
    let got = llm.classify(&[request("a"), request("b")], &|_| {});
    let errors: Vec<String> = got
        .into_iter()
        .map(|a| a.unwrap_err().to_string())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("hard cap of 3 requests")),
        "{errors:?}"
    );
    assert_eq!(server.seen.lock().unwrap().len(), 3);
}

#[test]
fn the_api_key_reaches_the_server_and_no_file() {
    let server = serve(Arc::new(|_: &Value, _| {
        Reply::Json(
            200,
            chat_answer("positive", &[("positive", 0.9), ("negative", 0.1)]),
        )
    }));
    let dir = tempfile::tempdir().unwrap();
    let secret = "sk-never-write-me-7f3a";
    let key_file = common::write(dir.path(), "key.txt", &format!("{secret}\n"));
    let results = dir.path().join("results");
    let cache = dir.path().join("cache.sqlite");
    let spec = zero_shot_spec(
        dir.path(),
        "secret",
        &server.url,
        &format!(
            "api_key_env = \"FREEAL_TEST_UNSET_KEY\"\napi_key_file = \"{}\"",
            key_file.display()
        ),
    );
    let said = common::run_spec(&spec);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 20, "one request per test sentence");
    assert!(
        seen.iter()
            .all(|s| s.auth.as_deref() == Some(&format!("Bearer {secret}")[..])),
        "the key from the file is sent"
    );
    // Results, logs, the cache: the key appears nowhere, not even in the spec's resolved copy.
    let mut files: Vec<(std::path::PathBuf, Vec<u8>)> = common::files_under(&results)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    files.push((cache.clone(), std::fs::read(&cache).unwrap()));
    assert!(files.len() > 5);
    for (path, bytes) in &files {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the API key",
            path.display()
        );
    }
    // Neither output stream names it either.
    assert!(!said.contains(secret));
}

#[test]
fn an_unreadable_key_file_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let run: freeal_bench::config::spec::LlmRunSpec = {
        let layered = freeal_bench::config::layer(
            &common::write(
                dir.path(),
                "s.toml",
                "[experiment]\nname = \"k\"\n[run.llm]\napi_key_env = \"FREEAL_TEST_UNSET_KEY\"\n\
                 api_key_file = \"/nonexistent/key.txt\"\n",
            ),
            &[],
        )
        .unwrap();
        freeal_bench::plan::plan(&layered).unwrap().run.llm
    };
    let message = freeal_bench::llm::api_key(&run).unwrap_err().to_string();
    assert!(
        message.contains("run.llm.api_key_file") && message.contains("/nonexistent/key.txt"),
        "{message}"
    );
}
