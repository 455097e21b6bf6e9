//! A loopback HTTP server that speaks (and, on purpose, misspeaks) the OpenAI chat API, for the
//! backend and fault-injection tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freeal_bench::llm::annotator::{AnswerMode, ChatMessage, ClassifyRequest, Role};
use freeal_bench::llm::openai::{Endpoint, HttpOptions};
use serde_json::{Value, json};

/// What the server answers.
pub enum Reply {
    /// A JSON body with a status.
    Json(u16, Value),
    /// A raw body with a status.
    Raw(u16, String),
    /// A raw body with a status and extra headers (e.g. Retry-After).
    Headers(u16, Vec<(String, String)>, String),
    /// Sleep, then answer 200 (past the client's timeout when long enough).
    Slow(Duration, Value),
    /// Close the connection without a word.
    Reset,
    /// Announce the whole body, send half of it, close.
    Truncated(Value),
}

/// A request the server saw.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Request path.
    pub path: String,
    /// The Authorization header.
    pub auth: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// Decides the reply from the request body and how many times this query was seen before.
pub type Script = dyn Fn(&Value, usize) -> Reply + Send + Sync;

/// A running server: its base URL and what it saw.
pub struct Server {
    /// `http://127.0.0.1:PORT/v1`
    pub url: String,
    /// Every request, in arrival order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// The most requests ever in flight at once.
    pub max_in_flight: Arc<AtomicUsize>,
}

impl Server {
    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// How many demonstrations a chat body shows (its assistant turns): 0 for a zero-shot request.
pub fn demonstrations_shown(body: &Value) -> usize {
    body["messages"].as_array().map_or(0, |messages| {
        messages.iter().filter(|m| m["role"] == "assistant").count()
    })
}

/// A spec's text with its simulated `[llm]` backend swapped for this server at `url`, and the
/// LLM cache at `cache` (away from the user's).
pub fn serve_spec(text: String, url: &str, cache: &std::path::Path) -> String {
    text.replace(
        "backend = \"simulated\"\n",
        &format!("backend = \"http\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\n"),
    )
    .replace(
        "[run]\n",
        &format!("[run.llm]\ncache = \"{}\"\n[run]\n", cache.display()),
    )
}

/// The user turn of a chat body (or a completion prompt): the item being labelled.
pub fn query_of(body: &Value) -> String {
    if let Some(messages) = body["messages"].as_array() {
        messages
            .last()
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_string()
    } else {
        body["prompt"].as_str().unwrap_or("").to_string()
    }
}

fn read_request(stream: &TcpStream) -> Option<(String, Option<String>, Value)> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let (mut length, mut auth) = (0usize, None);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = value.trim().parse().ok()?,
            "authorization" => auth = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some((path, auth, serde_json::from_slice(&body).ok()?))
}

fn respond(mut stream: TcpStream, status: u16, headers: &[(String, String)], text: &str) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
        text.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let _ = write!(stream, "{head}\r\n{text}");
}

/// Starts a server answering by `script`, one thread per connection.
pub fn serve(script: Arc<Script>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    let (log, peak) = (seen.clone(), max_in_flight.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (script, log, counts) = (script.clone(), log.clone(), counts.clone());
            let (in_flight, peak) = (in_flight.clone(), peak.clone());
            std::thread::spawn(move || {
                let Some((path, auth, body)) = read_request(&stream) else {
                    return;
                };
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let n = {
                    let mut c = counts.lock().unwrap();
                    let e = c.entry(query_of(&body)).or_insert(0);
                    *e += 1;
                    *e - 1
                };
                log.lock().unwrap().push(Seen {
                    path,
                    auth,
                    body: body.clone(),
                    at: Instant::now(),
                });
                let reply = match script(&body, n) {
                    Reply::Slow(d, v) => {
                        std::thread::sleep(d);
                        Reply::Json(200, v)
                    }
                    other => other,
                };
                // Counted out before answering: once the client has the answer it may send the
                // next request, which must not find this one still counted.
                in_flight.fetch_sub(1, Ordering::SeqCst);
                match reply {
                    Reply::Json(s, v) => respond(stream, s, &[], &v.to_string()),
                    Reply::Raw(s, t) => respond(stream, s, &[], &t),
                    Reply::Headers(s, h, t) => respond(stream, s, &h, &t),
                    Reply::Slow(..) => unreachable!("answered above"),
                    Reply::Reset => {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    Reply::Truncated(v) => {
                        let text = v.to_string();
                        let mut stream = stream;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                            text.len(),
                            &text[..text.len() / 2]
                        );
                        let _ = stream.flush();
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            });
        }
    });
    Server {
        url,
        seen,
        max_in_flight,
    }
}

/// A chat answer whose first position has `alternatives` (token, probability).
pub fn chat_answer(content: &str, alternatives: &[(&str, f64)]) -> Value {
    let top: Vec<Value> = alternatives
        .iter()
        .map(|(t, p)| json!({"token": t, "logprob": p.ln(), "bytes": []}))
        .collect();
    json!({
        "id": "x", "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": content},
            "logprobs": {"content": [{"token": alternatives[0].0, "logprob": alternatives[0].1.ln(), "top_logprobs": top}]}}],
        "usage": {"prompt_tokens": 42, "completion_tokens": 1, "total_tokens": 43}
    })
}

/// A sentiment "model" for end-to-end runs: positive when the item has a positive cue word of
/// the toy set, with confident logprobs; deterministic, so reruns give the same tables.
pub fn toy_sentiment(body: &Value) -> Value {
    let query = query_of(body);
    let positive = ["great", "wonderful", "superb"]
        .iter()
        .any(|w| query.contains(w));
    if positive {
        chat_answer("positive", &[("positive", 0.9), ("negative", 0.1)])
    } else {
        chat_answer("negative", &[("negative", 0.8), ("positive", 0.2)])
    }
}

/// Client settings for `url`: chat endpoint, logprobs, 4 in flight, 4 retries 5 ms apart, key
/// `sk-test`, no rate limit.
pub fn http_options(url: &str) -> HttpOptions {
    HttpOptions {
        base_url: url.to_string(),
        api_key: Some("sk-test".into()),
        model: "test-model".into(),
        endpoint: Endpoint::Chat,
        mode: AnswerMode::Logprobs,
        max_tokens: 8,
        top_logprobs: 20,
        concurrency: 4,
        requests_per_minute: 0,
        tokens_per_minute: 0,
        max_retries: 4,
        timeout: Duration::from_secs(5),
        backoff: Duration::from_millis(5),
        max_requests: 0,
        rate_window: Duration::from_secs(60),
    }
}

/// A two-label sentiment request for `text` (the user turn is `Review: <text>`).
pub fn review_request(text: &str) -> ClassifyRequest {
    ClassifyRequest {
        query: text.into(),
        messages: vec![
            ChatMessage::new(Role::System, "Classify as negative or positive."),
            ChatMessage::new(Role::User, format!("Review: {text}")),
        ],
        verbalizers: vec![vec!["negative".into()], vec!["positive".into()]],
    }
}

/// A zero-shot ICL experiment `name` on 20 test sentences of the toy set against the server at
/// `url`, written under `dir` with results in `dir/results` and the cache at
/// `dir/cache.sqlite`; `run_llm` is appended to its `[run.llm]` table. Returns the spec.
pub fn zero_shot_spec(
    dir: &std::path::Path,
    name: &str,
    url: &str,
    run_llm: &str,
) -> std::path::PathBuf {
    let dataset = super::toy_dataset(dir);
    super::write(
        dir,
        "spec.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"{name}\"\n[data]\ntest_limit = 20\n\
             [llm]\nbackend = \"http\"\nmodel = \"test-model\"\nbase_url = \"{url}\"\n\
             prompts = \"{}\"\n[run]\nresults_dir = \"{}\"\n[run.llm]\ncache = \"{}\"\n\
             {run_llm}\n[sweep]\nmethod = [\"zero_shot\"]\n",
            dataset.display(),
            super::root().join("configs/prompts/sst2.toml").display(),
            dir.join("results").display(),
            dir.join("cache.sqlite").display(),
        ),
    )
}
