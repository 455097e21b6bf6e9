//! Any OpenAI-compatible server (OpenAI, vLLM, llama.cpp's server, Ollama): chat or completion
//! endpoint, log-probabilities when the server gives them (else the answer is parsed and
//! unparsable ones are masked), bounded concurrency, request and token rate limits, retries with
//! exponential backoff and jitter on 429/5xx/timeouts, and a hard cap on requests. Once one
//! request has spent its retries failing to connect, the annotator sends nothing more: a wrong
//! `base_url` or a server that is down fails the cell after one request's retries, not after
//! every request's.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

use crate::error::{Error, Result};
use crate::llm::annotator::{
    Annotation, Annotator, AnswerMode, ChatMessage, ClassifyRequest, GenerateRequest, Generation,
    Role, Tick, Usage, log_sum_exp, parse_answer, softmax,
};

/// Which endpoint requests go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST {base_url}/chat/completions` with messages.
    Chat,
    /// `POST {base_url}/completions` with the chat flattened to plain text.
    Completions,
}

/// Settings of the HTTP backend.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpOptions {
    /// E.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    /// Bearer token (none for local servers).
    pub api_key: Option<String>,
    /// Model id sent with each request.
    pub model: String,
    /// Endpoint.
    pub endpoint: Endpoint,
    /// Scoring by logprobs, or free generation and parsing.
    pub mode: AnswerMode,
    /// Generated-token cap for free generation.
    pub max_tokens: u32,
    /// How many alternatives per position to ask for.
    pub top_logprobs: u32,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per minute (0 = unlimited).
    pub requests_per_minute: u32,
    /// Prompt + completion tokens per minute (0 = unlimited; estimated as characters / 4).
    pub tokens_per_minute: u64,
    /// Retries of one request on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// First backoff; doubles each retry, with jitter, capped at 60 s.
    pub backoff: Duration,
    /// Hard cap on HTTP requests sent by this annotator, retries included (0 = none).
    pub max_requests: u64,
    /// The window the two per-minute limits count over: a minute, shorter only where a test
    /// measures the limiter without waiting minutes.
    pub rate_window: Duration,
}

/// Requests and estimated tokens sent in the last minute.
struct Window {
    sent: VecDeque<(Instant, u64)>,
}

/// The HTTP annotator.
pub struct HttpLlm {
    options: Arc<HttpOptions>,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    window: Arc<Mutex<Window>>,
    requests_sent: Arc<AtomicU64>,
    /// Set, to the failure, when a request spent its retries failing to connect.
    unreachable: Arc<OnceLock<String>>,
}

impl HttpLlm {
    /// A client for `options` (no request is made yet).
    pub fn new(options: HttpOptions) -> Result<Self> {
        let id = format!("http:{}", options.model);
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            .build()
            .map_err(|e| Error::llm(&id, format!("cannot build the HTTP client: {e}")))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::llm(&id, format!("cannot start the async runtime: {e}")))?;
        Ok(HttpLlm {
            options: Arc::new(options),
            client,
            runtime,
            window: Arc::new(Mutex::new(Window {
                sent: VecDeque::new(),
            })),
            requests_sent: Arc::new(AtomicU64::new(0)),
            unreachable: Arc::new(OnceLock::new()),
        })
    }

    /// HTTP requests sent so far (retries included).
    pub fn requests_sent(&self) -> u64 {
        self.requests_sent.load(Ordering::SeqCst)
    }

    fn body(
        &self,
        messages: &[ChatMessage],
        max_tokens: u32,
        temperature: f32,
        logprobs: bool,
        seed: Option<u64>,
    ) -> Value {
        let o = &self.options;
        let mut body = match o.endpoint {
            Endpoint::Chat => json!({
                "model": o.model,
                "messages": messages.iter().map(|m| json!({
                    "role": m.role.as_str(),
                    "content": m.content,
                })).collect::<Vec<_>>(),
                "max_tokens": max_tokens,
                "temperature": temperature,
            }),
            Endpoint::Completions => json!({
                "model": o.model,
                "prompt": flatten(messages),
                "max_tokens": max_tokens,
                "temperature": temperature,
            }),
        };
        if logprobs {
            match o.endpoint {
                Endpoint::Chat => {
                    body["logprobs"] = json!(true);
                    body["top_logprobs"] = json!(o.top_logprobs);
                }
                Endpoint::Completions => body["logprobs"] = json!(o.top_logprobs),
            }
        }
        if let Some(seed) = seed {
            body["seed"] = json!(seed);
        }
        body
    }

    /// The answer text of a response, or an error quoting the response.
    fn answer_text(&self, response: &Value) -> Result<String> {
        answer_text(response, self.options.endpoint).ok_or_else(|| {
            Error::llm(
                self.id(),
                format!("response has no answer text: {response}"),
            )
        })
    }

    /// Sends all bodies, `concurrency` at a time; answers in order.
    fn send_all(&self, bodies: Vec<Value>, tick: Tick) -> Vec<Result<Value>> {
        let path = match self.options.endpoint {
            Endpoint::Chat => "chat/completions",
            Endpoint::Completions => "completions",
        };
        let url = format!("{}/{path}", self.options.base_url.trim_end_matches('/'));
        let id = self.id();
        self.runtime.block_on(async {
            let gate = Arc::new(Semaphore::new(self.options.concurrency.max(1)));
            let mut tasks = tokio::task::JoinSet::new();
            for (i, body) in bodies.into_iter().enumerate() {
                let gate = gate.clone();
                let sender = Sender {
                    client: self.client.clone(),
                    options: self.options.clone(),
                    window: self.window.clone(),
                    requests_sent: self.requests_sent.clone(),
                    unreachable: self.unreachable.clone(),
                    url: url.clone(),
                    id: id.clone(),
                };
                tasks.spawn(async move {
                    let _permit = gate.acquire_owned().await;
                    (i, sender.send(body, i as u64).await)
                });
            }
            let mut out: Vec<Option<Result<Value>>> = Vec::new();
            out.resize_with(tasks.len(), || None);
            while let Some(joined) = tasks.join_next().await {
                match joined {
                    Ok((i, answer)) => {
                        out[i] = Some(answer);
                        tick(1);
                    }
                    Err(e) => {
                        // A panicked task: its slot is reported below as lost.
                        let _ = e;
                    }
                }
            }
            out.into_iter()
                .map(|a| a.unwrap_or_else(|| Err(Error::llm(&id, "a request task was lost"))))
                .collect()
        })
    }
}

/// How long a request of `tokens` must wait under the limits, given what was sent in the last
/// minute (entries older than a minute are dropped); `None` = send now. A request bigger than
/// the whole token budget still goes out, alone.
fn rate_wait(
    sent: &mut VecDeque<(Instant, u64)>,
    now: Instant,
    tokens: u64,
    requests_per_minute: u32,
    tokens_per_minute: u64,
    minute: Duration,
) -> Option<Duration> {
    while sent
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= minute)
    {
        sent.pop_front();
    }
    let used: u64 = sent.iter().map(|(_, n)| n).sum();
    let requests_ok = requests_per_minute == 0 || sent.len() < requests_per_minute as usize;
    let tokens_ok = tokens_per_minute == 0 || used + tokens <= tokens_per_minute || sent.is_empty();
    if requests_ok && tokens_ok {
        return None;
    }
    let oldest = sent.front().map_or(now, |(t, _)| *t);
    Some(
        minute
            .saturating_sub(now.duration_since(oldest))
            .max(Duration::from_millis(1)),
    )
}

/// One request with its retries.
struct Sender {
    client: reqwest::Client,
    options: Arc<HttpOptions>,
    window: Arc<Mutex<Window>>,
    requests_sent: Arc<AtomicU64>,
    unreachable: Arc<OnceLock<String>>,
    url: String,
    id: String,
}

impl Sender {
    async fn wait_for_rate(&self, tokens: u64) {
        let o = &self.options;
        if o.requests_per_minute == 0 && o.tokens_per_minute == 0 {
            return;
        }
        loop {
            let mut window = self.window.lock().await;
            let now = Instant::now();
            match rate_wait(
                &mut window.sent,
                now,
                tokens,
                o.requests_per_minute,
                o.tokens_per_minute,
                o.rate_window,
            ) {
                None => {
                    window.sent.push_back((now, tokens));
                    return;
                }
                Some(wait) => {
                    drop(window);
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn send(&self, body: Value, salt: u64) -> Result<Value> {
        let o = &self.options;
        let estimate = body.to_string().len() as u64 / 4 + body["max_tokens"].as_u64().unwrap_or(0);
        // Jitter only spreads retries in time; it never changes an answer.
        let mut rng = ChaCha8Rng::seed_from_u64(salt);
        let mut attempt = 0u32;
        loop {
            if let Some(failure) = self.unreachable.get() {
                return Err(Error::llm(
                    &self.id,
                    format!("given up: another request could not connect: {failure}"),
                ));
            }
            let sent = self.requests_sent.fetch_add(1, Ordering::SeqCst);
            if o.max_requests > 0 && sent >= o.max_requests {
                return Err(Error::llm(
                    &self.id,
                    format!(
                        "hard cap of {} requests reached (llm.http.max_requests); raise it to go on",
                        o.max_requests
                    ),
                ));
            }
            self.wait_for_rate(estimate).await;
            let mut request = self.client.post(&self.url).json(&body);
            if let Some(key) = &o.api_key {
                request = request.bearer_auth(key);
            }
            let mut connect_failed = false;
            let (retryable, message, retry_after) = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(Duration::from_secs_f64);
                    match response.text().await {
                        // A body cut short is a transport failure: the next try may get it whole.
                        Err(e) => (
                            true,
                            format!("response from {} cut short: {e}", self.url),
                            None,
                        ),
                        Ok(text) if status.is_success() => {
                            match serde_json::from_str(&text) {
                                Ok(value) => return Ok(value),
                                // Proxies and overloaded servers sometimes send half a body
                                // with a 200; retried like any other transient failure.
                                Err(e) => (
                                    true,
                                    format!(
                                        "malformed JSON from {}: {e}; body starts {:?}",
                                        self.url,
                                        text.chars().take(200).collect::<String>()
                                    ),
                                    None,
                                ),
                            }
                        }
                        Ok(text) => (
                            status.as_u16() == 429 || status.is_server_error(),
                            format!(
                                "HTTP {status} from {}: {}",
                                self.url,
                                text.chars().take(300).collect::<String>()
                            ),
                            retry_after,
                        ),
                    }
                }
                Err(e) => {
                    connect_failed = e.is_connect();
                    let retryable = e.is_timeout() || e.is_connect() || e.is_request();
                    let message = if e.is_timeout() {
                        format!(
                            "no answer from {} within {:?} (run.llm.timeout_s): timed out",
                            self.url, o.timeout
                        )
                    } else {
                        format!("request to {} failed: {}", self.url, causes(&e))
                    };
                    (retryable, message, None)
                }
            };
            if !retryable || attempt >= o.max_retries {
                let mut message = format!("{message} (after {} attempt(s))", attempt + 1);
                if connect_failed {
                    message.push_str("; is the server up at llm.base_url?");
                    let _ = self.unreachable.set(message.clone());
                }
                return Err(Error::llm(&self.id, message));
            }
            let exp = o.backoff.saturating_mul(1u32 << attempt.min(16));
            let jittered = exp.mul_f64(0.5 + rng.random::<f64>());
            let wait = retry_after.unwrap_or(jittered).min(Duration::from_secs(60));
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

/// An error and its causes, outermost first (reqwest's own text hides the cause: "connection
/// reset", "connection refused").
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The chat as one text for completion endpoints: the instruction, then each turn, an
/// assistant answer on the same line as the input it answers.
pub fn flatten(messages: &[ChatMessage]) -> String {
    let mut out = String::new();
    for m in messages {
        match m.role {
            Role::System => {
                out.push_str(&m.content);
                out.push_str("\n\n");
            }
            Role::User => out.push_str(&m.content),
            Role::Assistant => {
                out.push(' ');
                out.push_str(&m.content);
                out.push_str("\n\n");
            }
        }
    }
    out
}

/// The first-position alternatives `(token, logprob)` of a response, if it has any.
fn top_logprobs(response: &Value, endpoint: Endpoint) -> Option<Vec<(String, f64)>> {
    let choice = response.get("choices")?.get(0)?;
    match endpoint {
        Endpoint::Chat => {
            let first = choice.get("logprobs")?.get("content")?.get(0)?;
            let mut out: Vec<(String, f64)> = first
                .get("top_logprobs")?
                .as_array()?
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("token")?.as_str()?.to_string(),
                        t.get("logprob")?.as_f64()?,
                    ))
                })
                .collect();
            if let (Some(tok), Some(lp)) = (
                first.get("token").and_then(Value::as_str),
                first.get("logprob").and_then(Value::as_f64),
            ) && !out.iter().any(|(t, _)| t == tok)
            {
                out.push((tok.to_string(), lp));
            }
            Some(out)
        }
        Endpoint::Completions => {
            let first = choice
                .get("logprobs")?
                .get("top_logprobs")?
                .get(0)?
                .as_object()?;
            Some(
                first
                    .iter()
                    .filter_map(|(t, lp)| Some((t.clone(), lp.as_f64()?)))
                    .collect(),
            )
        }
    }
}

fn answer_text(response: &Value, endpoint: Endpoint) -> Option<String> {
    let choice = response.get("choices")?.get(0)?;
    let text = match endpoint {
        Endpoint::Chat => choice.get("message")?.get("content")?.as_str()?,
        Endpoint::Completions => choice.get("text")?.as_str()?,
    };
    Some(text.to_string())
}

fn usage_of(response: &Value) -> Usage {
    let u = &response["usage"];
    Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
    }
}

/// Label probabilities from first-position alternatives: a token counts for a label when,
/// trimmed and lower-cased, it is a non-empty prefix of one of the label's words. Labels with no
/// such token among the alternatives get probability 0; `None` when no label has one.
pub fn label_probs(top: &[(String, f64)], verbalizers: &[Vec<String>]) -> Option<Vec<f32>> {
    let scores: Vec<f64> = verbalizers
        .iter()
        .map(|words| {
            let matching: Vec<f64> = top
                .iter()
                .filter(|(tok, _)| {
                    let t = tok.trim().to_lowercase();
                    !t.is_empty() && words.iter().any(|w| w.to_lowercase().starts_with(&t))
                })
                .map(|(_, lp)| *lp)
                .collect();
            log_sum_exp(&matching)
        })
        .collect();
    scores
        .iter()
        .any(|s| s.is_finite())
        .then(|| softmax(&scores))
}

impl Annotator for HttpLlm {
    fn id(&self) -> String {
        format!("http:{}", self.options.model)
    }

    fn decoding(&self) -> Value {
        // The base URL is part of what answers: the same model id on two servers may differ.
        json!({
            "base_url": self.options.base_url,
            "endpoint": self.options.endpoint,
            "mode": self.options.mode,
            "max_tokens": self.options.max_tokens,
            "top_logprobs": self.options.top_logprobs,
            "temperature": 0.0,
        })
    }

    fn classify(&mut self, requests: &[ClassifyRequest], tick: Tick) -> Vec<Result<Annotation>> {
        let logprobs = self.options.mode == AnswerMode::Logprobs;
        // Scoring needs one token; a few more let the parser fall back when the server has no
        // logprobs.
        let max_tokens = if logprobs { 3 } else { self.options.max_tokens };
        let bodies = requests
            .iter()
            .map(|r| self.body(&r.messages, max_tokens, 0.0, logprobs, None))
            .collect();
        let endpoint = self.options.endpoint;
        self.send_all(bodies, tick)
            .into_iter()
            .zip(requests)
            .map(|(response, request)| {
                let response = response?;
                let text = self.answer_text(&response)?;
                let probs = if logprobs {
                    top_logprobs(&response, endpoint)
                        .and_then(|top| label_probs(&top, &request.verbalizers))
                } else {
                    None
                };
                let label = match &probs {
                    Some(p) => Some(crate::metrics::argmax(p)),
                    None => parse_answer(&text, &request.verbalizers),
                };
                Ok(Annotation {
                    label,
                    probs: probs.unwrap_or_default(),
                    raw: text,
                    usage: usage_of(&response),
                })
            })
            .collect()
    }

    fn generate(&mut self, requests: &[GenerateRequest], tick: Tick) -> Vec<Result<Generation>> {
        let bodies = requests
            .iter()
            .map(|r| {
                let mut body = self.body(
                    &r.messages,
                    r.max_tokens,
                    r.temperature,
                    false,
                    Some(r.seed),
                );
                // llama.cpp's server (and vLLM's `guided_grammar` proxies) read a GBNF grammar
                // here; servers without constrained decoding ignore it, and answers that do
                // not parse are then counted, not guessed.
                if let Some(grammar) = &r.grammar {
                    body["grammar"] = json!(grammar);
                }
                body
            })
            .collect();
        self.send_all(bodies, tick)
            .into_iter()
            .map(|response| {
                let response = response?;
                let text = self.answer_text(&response)?;
                Ok(Generation {
                    text: text.trim().to_string(),
                    usage: usage_of(&response),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verbs() -> Vec<Vec<String>> {
        vec![vec!["negative".into()], vec!["positive".into()]]
    }

    #[test]
    fn probabilities_from_alternatives() {
        let top = vec![
            ("pos".to_string(), (0.6f64).ln()),
            (" Negative".to_string(), (0.2f64).ln()),
            ("The".to_string(), (0.1f64).ln()),
            ("positive".to_string(), (0.1f64).ln()),
        ];
        let p = label_probs(&top, &verbs()).unwrap();
        assert!((p[0] - 0.2 / 0.9).abs() < 1e-6 && (p[1] - 0.7 / 0.9).abs() < 1e-6);
        assert_eq!(label_probs(&[("The".into(), -0.1)], &verbs()), None);
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn rate_window_admits_until_a_limit_then_waits_for_the_oldest() {
        let t0 = Instant::now();
        let mut sent = VecDeque::new();
        // 2 requests per minute.
        assert_eq!(rate_wait(&mut sent, t0, 10, 2, 0, MINUTE), None);
        sent.push_back((t0, 10));
        let t1 = t0 + Duration::from_secs(20);
        assert_eq!(rate_wait(&mut sent, t1, 10, 2, 0, MINUTE), None);
        sent.push_back((t1, 10));
        let t2 = t0 + Duration::from_secs(30);
        assert_eq!(
            rate_wait(&mut sent, t2, 10, 2, 0, MINUTE),
            Some(Duration::from_secs(30))
        );
        // A minute after the first, it has left the window.
        let t3 = t0 + Duration::from_secs(60);
        assert_eq!(rate_wait(&mut sent, t3, 10, 2, 0, MINUTE), None);
        assert_eq!(sent.len(), 1);
        // 25 tokens per minute: 10 are in the window, 20 more must wait until t1 + 60 s.
        assert_eq!(
            rate_wait(&mut sent, t3, 20, 0, 25, MINUTE),
            Some(Duration::from_secs(20))
        );
        assert_eq!(rate_wait(&mut sent, t3, 15, 0, 25, MINUTE), None);
        // Bigger than the whole budget: goes out alone once the window is empty.
        sent.clear();
        assert_eq!(rate_wait(&mut sent, t3, 100, 0, 25, MINUTE), None);
    }

    #[test]
    fn flatten_keeps_answers_on_their_lines() {
        let m = vec![
            ChatMessage::new(Role::System, "Classify."),
            ChatMessage::new(Role::User, "Review: a\nSentiment:"),
            ChatMessage::new(Role::Assistant, "positive"),
            ChatMessage::new(Role::User, "Review: b\nSentiment:"),
        ];
        assert_eq!(
            flatten(&m),
            "Classify.\n\nReview: a\nSentiment: positive\n\nReview: b\nSentiment:"
        );
    }
}
