//! Fault injection against a loopback server that misbehaves on purpose: each fault is retried a
//! bounded number of times (or not at all, when retrying cannot help), then reported with what
//! went wrong; the concurrency and rate limits hold under load; and, through the binary, a
//! failing item is named with its cell, the answers already received stay cached and a rerun
//! asks only for the rest.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::llm_server::{
    Reply, chat_answer, http_options as options, query_of, review_request as request, serve,
    toy_sentiment, zero_shot_spec,
};
use freeal_bench::llm::annotator::{Annotation, Annotator, ClassifyRequest};
use freeal_bench::llm::openai::{HttpLlm, HttpOptions};
use serde_json::{Value, json};

fn ok() -> Value {
    chat_answer("positive", &[("positive", 0.9), ("negative", 0.1)])
}

/// One request through a fresh client; the answer or the error's text.
fn ask(opts: HttpOptions) -> Result<Annotation, String> {
    let mut llm = HttpLlm::new(opts).unwrap();
    llm.classify(&[request("x")], &|_| {})
        .remove(0)
        .map_err(|e| e.to_string())
}

#[test]
fn retry_after_on_429_is_honoured() {
    let server = serve(Arc::new(|_, n| match n {
        0 => Reply::Headers(
            429,
            vec![("Retry-After".into(), "1".into())],
            r#"{"error":"slow down"}"#.into(),
        ),
        _ => Reply::Json(200, ok()),
    }));
    let start = Instant::now();
    let answer = ask(options(&server.url)).unwrap();
    assert_eq!(answer.label, Some(1));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "waited {:?}, not the server's 1 s",
        start.elapsed()
    );
    assert_eq!(server.count(), 2);
}

#[test]
fn persistent_429_without_retry_after_gives_up_after_the_retries() {
    let server = serve(Arc::new(|_, _| Reply::Raw(429, "busy".into())));
    let err = ask(options(&server.url)).unwrap_err();
    assert!(
        err.contains("429") && err.contains("after 5 attempt(s)"),
        "{err}"
    );
    assert_eq!(server.count(), 5, "1 try + max_retries = 4");
}

#[test]
fn server_errors_are_retried_then_reported_with_their_status() {
    for status in [500u16, 502, 503] {
        // Fails twice, then answers: retried through.
        let server = serve(Arc::new(move |_, n| {
            if n < 2 {
                Reply::Raw(status, "down".into())
            } else {
                Reply::Json(200, ok())
            }
        }));
        assert_eq!(ask(options(&server.url)).unwrap().label, Some(1));
        assert_eq!(server.count(), 3);
        // Never answers: bounded.
        let server = serve(Arc::new(move |_, _| Reply::Raw(status, "down".into())));
        let mut opts = options(&server.url);
        opts.max_retries = 2;
        let err = ask(opts).unwrap_err();
        assert!(
            err.contains(&format!("HTTP {status}")) && err.contains("after 3 attempt(s)"),
            "{err}"
        );
        assert_eq!(server.count(), 3);
    }
}

#[test]
fn connection_resets_are_retried_then_reported() {
    let server = serve(Arc::new(|_, n| {
        if n == 0 {
            Reply::Reset
        } else {
            Reply::Json(200, ok())
        }
    }));
    assert_eq!(ask(options(&server.url)).unwrap().label, Some(1));
    assert_eq!(server.count(), 2);

    let server = serve(Arc::new(|_, _| Reply::Reset));
    let mut opts = options(&server.url);
    opts.max_retries = 2;
    let err = ask(opts).unwrap_err();
    assert!(
        err.contains("failed") && err.contains("after 3 attempt(s)"),
        "{err}"
    );
    assert_eq!(server.count(), 3);
}

#[test]
fn a_server_that_cannot_be_reached_fails_after_one_requests_retries() {
    // A port nothing listens on: bound, then let go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut opts = options(&format!("http://127.0.0.1:{port}/v1"));
    opts.max_retries = 2;
    opts.concurrency = 1;
    let mut llm = HttpLlm::new(opts).unwrap();
    let requests: Vec<ClassifyRequest> = (0..8).map(|i| request(&format!("r{i}"))).collect();
    let answers = llm.classify(&requests, &|_| {});
    let errors: Vec<String> = answers
        .into_iter()
        .map(|a| a.unwrap_err().to_string())
        .collect();
    assert!(
        errors[0].contains("127.0.0.1")
            && errors[0].contains("after 3 attempt(s)")
            && errors[0].contains("llm.base_url"),
        "{}",
        errors[0]
    );
    for error in &errors[1..] {
        assert!(
            error.contains("given up")
                && error.contains(&errors[0][errors[0].find("request to").unwrap()..]),
            "{error}"
        );
    }
    assert_eq!(
        llm.requests_sent(),
        3,
        "only the first request's attempts went out"
    );
}

#[test]
fn responses_past_the_timeout_are_retried_then_reported() {
    let server = serve(Arc::new(|_, n| {
        if n == 0 {
            Reply::Slow(Duration::from_millis(1500), ok())
        } else {
            Reply::Json(200, ok())
        }
    }));
    let mut opts = options(&server.url);
    opts.timeout = Duration::from_millis(300);
    assert_eq!(ask(opts.clone()).unwrap().label, Some(1));

    let server = serve(Arc::new(|_, _| {
        Reply::Slow(Duration::from_millis(1500), ok())
    }));
    opts.base_url = server.url.clone();
    opts.max_retries = 1;
    let start = Instant::now();
    let err = ask(opts).unwrap_err();
    assert!(
        err.contains("timed out") && err.contains("after 2 attempt(s)"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "each try is cut at the timeout"
    );
}

#[test]
fn truncated_and_malformed_bodies_are_retried_then_reported() {
    let server = serve(Arc::new(|_, n| match n {
        0 => Reply::Truncated(ok()),
        1 => Reply::Raw(200, "{\"choices\": [".into()),
        _ => Reply::Json(200, ok()),
    }));
    assert_eq!(ask(options(&server.url)).unwrap().label, Some(1));
    assert_eq!(server.count(), 3);

    for reply in [0, 1] {
        let server = serve(Arc::new(move |_, _| {
            if reply == 0 {
                Reply::Truncated(ok())
            } else {
                Reply::Raw(200, "<html>502 Bad Gateway</html>".into())
            }
        }));
        let mut opts = options(&server.url);
        opts.max_retries = 1;
        let err = ask(opts).unwrap_err();
        let expected = if reply == 0 {
            "cut short"
        } else {
            "malformed JSON"
        };
        assert!(
            err.contains(expected) && err.contains("after 2 attempt(s)"),
            "{err}"
        );
    }
}

#[test]
fn a_wrong_model_name_is_reported_at_once() {
    let server = serve(Arc::new(|body: &Value, _| {
        let model = body["model"].as_str().unwrap_or("").to_string();
        Reply::Json(
            404,
            json!({"error": {"message": format!("The model `{model}` does not exist"),
                             "code": "model_not_found"}}),
        )
    }));
    let err = ask(options(&server.url)).unwrap_err();
    assert!(
        err.contains("404") && err.contains("The model `test-model` does not exist"),
        "{err}"
    );
    assert_eq!(server.count(), 1, "retrying cannot fix a model name");
}

#[test]
fn empty_choices_are_a_clear_error_and_not_retried() {
    let server = serve(Arc::new(|_, _| Reply::Json(200, json!({"choices": []}))));
    let err = ask(options(&server.url)).unwrap_err();
    assert!(err.contains("no answer text"), "{err}");
    assert_eq!(server.count(), 1);
}

#[test]
fn concurrency_limit_holds_under_load() {
    let server = serve(Arc::new(|_, _| {
        Reply::Slow(Duration::from_millis(100), ok())
    }));
    let mut opts = options(&server.url);
    opts.concurrency = 3;
    let mut llm = HttpLlm::new(opts).unwrap();
    let requests: Vec<ClassifyRequest> = (0..24).map(|i| request(&format!("r{i}"))).collect();
    let start = Instant::now();
    let got = llm.classify(&requests, &|_| {});
    assert!(got.iter().all(|a| a.is_ok()));
    let peak = server.max_in_flight.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&peak),
        "at most 3 in flight (and more than 1: requests do overlap), saw {peak}"
    );
    // 24 requests of 100 ms, 3 at a time: at least 8 waves.
    assert!(start.elapsed() >= Duration::from_millis(800));
}

#[test]
fn request_rate_limit_holds_under_load() {
    let server = serve(Arc::new(|_, _| Reply::Json(200, ok())));
    let mut opts = options(&server.url);
    opts.concurrency = 8;
    opts.requests_per_minute = 5;
    opts.rate_window = Duration::from_millis(500);
    let mut llm = HttpLlm::new(opts).unwrap();
    let requests: Vec<ClassifyRequest> = (0..15).map(|i| request(&format!("r{i}"))).collect();
    let start = Instant::now();
    let got = llm.classify(&requests, &|_| {});
    let elapsed = start.elapsed();
    assert!(got.iter().all(|a| a.is_ok()));
    // Three windows of 5: the last five cannot leave before two whole windows have passed.
    // Measured on the client, so a busy machine can only lengthen it.
    assert!(
        elapsed >= Duration::from_millis(1000),
        "15 requests in {elapsed:?}"
    );
    let mut times: Vec<Instant> = server.seen.lock().unwrap().iter().map(|s| s.at).collect();
    times.sort();
    assert_eq!(times.len(), 15);
    // No burst of more than 5: requests 5 apart never arrive together. The server stamps an
    // arrival when its thread gets to it, late by up to a few hundred ms on a loaded machine (a
    // run beside a training job saw two requests 5 apart arrive 417 ms apart), so the bound
    // leaves that much slack; with no limiter all 15 arrive within milliseconds.
    for pair in 0..times.len() - 5 {
        let gap = times[pair + 5].duration_since(times[pair]);
        assert!(
            gap >= Duration::from_millis(250),
            "requests {pair} and {} only {gap:?} apart",
            pair + 5
        );
    }
}

#[test]
fn a_failing_item_names_its_cell_and_the_rerun_asks_only_for_the_rest() {
    // The third distinct item the server sees fails until it is "repaired".
    let broken = Arc::new(AtomicBool::new(true));
    let victim = Arc::new(Mutex::new(None::<String>));
    let distinct = Arc::new(Mutex::new(Vec::<String>::new()));
    let (flag, chosen) = (broken.clone(), victim.clone());
    let server = serve(Arc::new(move |body: &Value, _| {
        let query = query_of(body);
        let mut seen = distinct.lock().unwrap();
        if !seen.contains(&query) {
            seen.push(query.clone());
            if seen.len() == 3 {
                *chosen.lock().unwrap() = Some(query.clone());
            }
        }
        let is_victim = chosen.lock().unwrap().as_deref() == Some(query.as_str());
        if is_victim && flag.load(Ordering::SeqCst) {
            Reply::Raw(503, "overloaded".into())
        } else {
            Reply::Json(200, toy_sentiment(body))
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results");
    let cache = dir.path().join("cache.sqlite");
    let spec = zero_shot_spec(
        dir.path(),
        "faults",
        &server.url,
        "max_retries = 2\nbackoff_s = 0.01",
    );
    let spec = spec.to_str().unwrap();
    let out = common::bench(&["run", spec, "--backend", "cpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let item = victim.lock().unwrap().clone().unwrap();
    let named = stderr
        .split(" of 20 (\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no item named: {stderr}"));
    assert!(
        stderr.contains("FAILED") && stderr.contains("zero_shot-s0") && item.contains(named),
        "the cell and the failing item ({item:?}) are named: {stderr}"
    );
    assert!(
        stderr.contains("HTTP 503") && stderr.contains("after 3 attempt(s)"),
        "{stderr}"
    );
    let failed = stderr.lines().find(|l| l.contains("FAILED")).unwrap();
    assert_eq!(failed.matches("zero_shot-s0").count(), 1, "{failed}");
    let cell = common::only_cell(&results.join("faults"));
    assert!(
        !cell.join("records.json").exists(),
        "a failed cell has no records"
    );
    let error = std::fs::read_to_string(cell.join("error.txt")).unwrap();
    assert!(error.contains(named), "{error}");
    let cached = freeal_bench::llm::cache::LlmCache::open(&cache)
        .unwrap()
        .len()
        .unwrap();
    // The failing item's batch of 16 ends the cell (a server that keeps failing should not be
    // hammered for every later batch); its 15 answers that did arrive are kept.
    assert_eq!(cached, 15, "every answer that arrived is cached");

    broken.store(false, Ordering::SeqCst);
    let before = server.count();
    let out = common::bench(&["run", spec, "--backend", "cpu"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.count(),
        before + 5,
        "only the failed item and the 4 never sent are asked"
    );
    assert!(cell.join("records.json").is_file() && !cell.join("error.txt").exists());
}
