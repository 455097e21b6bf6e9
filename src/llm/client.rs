//! What methods talk to: an annotator behind the persistent cache, with per-round accounting of
//! calls, cache hits, tokens, unparsable answers and estimated money.

use crate::error::{Error, Result};
use crate::llm::annotator::{
    Annotation, Annotator, ClassifyRequest, GenerateRequest, Generation, Tick, Usage,
};
use crate::llm::cache::{LlmCache, request_key};
use crate::run::records::LlmUsage;

/// Price of a model in US dollars per million tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens.
    pub input_per_mtok: f64,
    /// Per million completion tokens.
    pub output_per_mtok: f64,
}

/// Misses are sent and stored in chunks this big, so a crash loses at most one chunk of work.
const CHUNK: usize = 16;

/// An annotator with a cache and a usage meter.
pub struct LlmClient {
    annotator: Box<dyn Annotator>,
    cache: Option<LlmCache>,
    price: Price,
    usage: LlmUsage,
}

impl LlmClient {
    /// Wraps `annotator`; `cache` is `None` to disable caching.
    pub fn new(annotator: Box<dyn Annotator>, cache: Option<LlmCache>, price: Price) -> Self {
        let cache = cache.filter(|_| annotator.cacheable());
        LlmClient {
            annotator,
            cache,
            price,
            usage: LlmUsage::default(),
        }
    }

    /// The annotator's id (backend and model).
    pub fn id(&self) -> String {
        self.annotator.id()
    }

    /// Usage since the last call (one round's worth), and resets the meter.
    pub fn take_usage(&mut self) -> LlmUsage {
        std::mem::take(&mut self.usage)
    }

    fn charge(&mut self, usage: Usage) {
        self.usage.calls += 1;
        self.usage.prompt_tokens += usage.prompt_tokens;
        self.usage.completion_tokens += usage.completion_tokens;
        self.usage.cost_usd += (usage.prompt_tokens as f64 * self.price.input_per_mtok
            + usage.completion_tokens as f64 * self.price.output_per_mtok)
            / 1e6;
    }

    /// Labels `requests`, answering from the cache where it can.
    pub fn classify(
        &mut self,
        requests: &[ClassifyRequest],
        tick: Tick,
    ) -> Result<Vec<Annotation>> {
        let answers = self.cached_call(
            requests,
            tick,
            |a, reqs, t| a.classify(reqs, t),
            |a: &Annotation| a.usage,
            |r: &ClassifyRequest| r.query.clone(),
        )?;
        self.usage.unparsable += answers.iter().filter(|a| a.label.is_none()).count() as u64;
        Ok(answers)
    }

    /// Generates text for `requests`, answering from the cache where it can.
    pub fn generate(
        &mut self,
        requests: &[GenerateRequest],
        tick: Tick,
    ) -> Result<Vec<Generation>> {
        self.cached_call(
            requests,
            tick,
            |a, reqs, t| a.generate(reqs, t),
            |g: &Generation| g.usage,
            |r: &GenerateRequest| {
                r.messages
                    .last()
                    .map_or_else(String::new, |m| m.content.clone())
            },
        )
    }

    fn cached_call<Q, A>(
        &mut self,
        requests: &[Q],
        tick: Tick,
        call: impl Fn(&mut dyn Annotator, &[Q], Tick) -> Vec<Result<A>>,
        usage_of: impl Fn(&A) -> Usage,
        describe: impl Fn(&Q) -> String,
    ) -> Result<Vec<A>>
    where
        Q: serde::Serialize + Clone,
        A: serde::Serialize + serde::de::DeserializeOwned,
    {
        let id = self.annotator.id();
        let decoding = self.annotator.decoding();
        let mut answers: Vec<Option<A>> = Vec::with_capacity(requests.len());
        let mut keys = Vec::with_capacity(requests.len());
        let mut missing = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            let key = request_key(&id, &decoding, request);
            let hit = match &self.cache {
                Some(cache) => cache.get(&key)?,
                None => None,
            };
            match hit.map(|json| serde_json::from_str::<A>(&json)) {
                Some(Ok(answer)) => {
                    self.usage.cache_hits += 1;
                    tick(1);
                    answers.push(Some(answer));
                }
                // An entry that no longer parses (an older format) is asked again.
                Some(Err(_)) | None => {
                    answers.push(None);
                    missing.push(i);
                }
            }
            keys.push(key);
        }
        for chunk in missing.chunks(CHUNK) {
            let batch: Vec<Q> = chunk.iter().map(|&i| requests[i].clone()).collect();
            let got = call(self.annotator.as_mut(), &batch, tick);
            if got.len() != batch.len() {
                return Err(Error::llm(
                    &id,
                    format!("asked {} requests, got {} answers", batch.len(), got.len()),
                ));
            }
            let mut entries = Vec::with_capacity(chunk.len());
            let (mut failure, mut failed) = (None, 0usize);
            for (&i, answer) in chunk.iter().zip(got) {
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(e) => {
                        failed += 1;
                        failure.get_or_insert((i, e));
                        continue;
                    }
                };
                self.charge(usage_of(&answer));
                if self.cache.is_some() {
                    let json = serde_json::to_string(&answer)
                        .map_err(|e| Error::llm(&id, format!("cannot store an answer: {e}")))?;
                    entries.push((keys[i].clone(), json));
                }
                answers[i] = Some(answer);
            }
            // Answers that did arrive are kept even when others in the chunk failed.
            if let Some(cache) = &mut self.cache {
                cache.put_many(&id, &entries)?;
            }
            if let Some((i, e)) = failure {
                let text = describe(&requests[i]);
                let short: String = text.chars().take(80).collect();
                let ellipsis = if short.len() < text.len() { "..." } else { "" };
                let reason = match e {
                    Error::Llm { message, .. } => message,
                    other => other.to_string(),
                };
                return Err(Error::llm(
                    &id,
                    format!(
                        "item {} of {} ({short:?}{ellipsis}) failed: {reason}; {failed} of {} requests \
                         in its batch failed; the {} answers received so far are cached and a \
                         rerun asks only for the rest",
                        i + 1,
                        requests.len(),
                        chunk.len(),
                        answers.iter().filter(|a| a.is_some()).count(),
                    ),
                ));
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::annotator::{ChatMessage, Role};

    /// Labels by text length parity and counts how often it is asked.
    struct Counting {
        asked: std::sync::Arc<std::sync::atomic::AtomicU64>,
    }

    impl Annotator for Counting {
        fn id(&self) -> String {
            "test:counting".into()
        }
        fn decoding(&self) -> serde_json::Value {
            serde_json::json!({})
        }
        fn classify(
            &mut self,
            requests: &[ClassifyRequest],
            tick: Tick,
        ) -> Vec<Result<Annotation>> {
            self.asked
                .fetch_add(requests.len() as u64, std::sync::atomic::Ordering::SeqCst);
            tick(requests.len() as u64);
            requests
                .iter()
                .map(|r| {
                    if r.query == "fail" {
                        return Err(Error::llm("test", "refused"));
                    }
                    Ok(Annotation {
                        label: (r.query.len() % 3 != 0).then_some(r.query.len() % 2),
                        probs: vec![],
                        raw: String::new(),
                        usage: Usage {
                            prompt_tokens: 10,
                            completion_tokens: 1,
                        },
                    })
                })
                .collect()
        }
        fn generate(&mut self, _: &[GenerateRequest], _: Tick) -> Vec<Result<Generation>> {
            vec![]
        }
    }

    fn request(text: &str) -> ClassifyRequest {
        ClassifyRequest {
            query: text.into(),
            messages: vec![ChatMessage::new(Role::User, text)],
            verbalizers: vec![vec!["a".into()], vec!["b".into()]],
        }
    }

    #[test]
    fn second_pass_is_all_cache_hits_with_identical_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let price = Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        };
        let requests: Vec<_> = (1..=40).map(|n| request(&"x".repeat(n))).collect();
        let mut first = LlmClient::new(
            Box::new(Counting {
                asked: asked.clone(),
            }),
            Some(LlmCache::open(&path).unwrap()),
            price,
        );
        let a = first.classify(&requests, &|_| {}).unwrap();
        let u = first.take_usage();
        assert_eq!((u.calls, u.cache_hits, u.prompt_tokens), (40, 0, 400));
        assert_eq!(u.unparsable, 13); // lengths divisible by 3 in 1..=40
        assert!((u.cost_usd - (400.0 + 80.0) / 1e6).abs() < 1e-12);

        let mut second = LlmClient::new(
            Box::new(Counting {
                asked: asked.clone(),
            }),
            Some(LlmCache::open(&path).unwrap()),
            price,
        );
        let b = second.classify(&requests, &|_| {}).unwrap();
        let u = second.take_usage();
        assert_eq!((u.calls, u.cache_hits, u.prompt_tokens), (0, 40, 0));
        assert_eq!(a, b);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 40);
    }

    #[test]
    fn a_failed_request_keeps_the_answers_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.sqlite");
        let asked = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let requests = vec![request("a"), request("fail"), request("bb")];
        let mut client = LlmClient::new(
            Box::new(Counting {
                asked: asked.clone(),
            }),
            Some(LlmCache::open(&path).unwrap()),
            Price::default(),
        );
        assert!(client.classify(&requests, &|_| {}).is_err());
        assert_eq!(client.take_usage().calls, 2);
        // Both good answers were stored: only the failed one is asked again.
        let ok = vec![request("a"), request("bb")];
        client.classify(&ok, &|_| {}).unwrap();
        assert_eq!(client.take_usage().cache_hits, 2);
        assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
