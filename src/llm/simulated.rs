//! The simulated annotator, for fast tests only: it answers the gold label passed through a
//! seeded, class-conditional noise matrix (for NER: each gold entity's type passes through the
//! matrix over entity types, and a changed entity is dropped half the time). Never a default;
//! its id says what it is.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::llm::annotator::{
    Annotation, Annotator, ClassifyRequest, GenerateRequest, Generation, Tick, refuse_all,
};

/// Gold labels behind a noise matrix.
pub struct SimulatedAnnotator {
    gold: HashMap<String, usize>,
    /// NER: gold entities `(words, type)` per sentence text.
    entities: HashMap<String, Vec<(String, usize)>>,
    /// NER: entity type names, as answers spell them.
    types: Vec<String>,
    /// `noise[g][a]` = probability of answering `a` when the gold label is `g`.
    noise: Vec<Vec<f64>>,
    seed: u64,
}

/// A noise matrix with `accuracy` on the diagonal and the rest spread evenly.
pub fn symmetric_noise(num_labels: usize, accuracy: f64) -> Vec<Vec<f64>> {
    let off = if num_labels > 1 {
        (1.0 - accuracy) / (num_labels - 1) as f64
    } else {
        0.0
    };
    (0..num_labels)
        .map(|g| {
            (0..num_labels)
                .map(|a| if a == g { accuracy } else { off })
                .collect()
        })
        .collect()
}

impl SimulatedAnnotator {
    /// Answers for the texts in `gold`; `noise` must be square, rows summing to 1.
    pub fn new(gold: HashMap<String, usize>, noise: Vec<Vec<f64>>, seed: u64) -> Result<Self> {
        let n = noise.len();
        for (g, row) in noise.iter().enumerate() {
            let sum: f64 = row.iter().sum();
            if row.len() != n || (sum - 1.0).abs() > 1e-6 || row.iter().any(|p| *p < 0.0) {
                return Err(Error::Config {
                    location: "spec".into(),
                    key: "llm.simulated.noise".into(),
                    message: format!(
                        "row {g} must have {n} non-negative probabilities summing to 1, got {row:?}"
                    ),
                });
            }
        }
        Ok(SimulatedAnnotator {
            gold,
            entities: HashMap::new(),
            types: Vec::new(),
            noise,
            seed,
        })
    }

    /// Adds gold entities (NER sentences, keyed by their text) answered to span-extraction
    /// requests; `noise` is then over these `types`.
    pub fn with_entities(
        mut self,
        entities: HashMap<String, Vec<(String, usize)>>,
        types: Vec<String>,
    ) -> Self {
        self.entities = entities;
        self.types = types;
        self
    }

    /// A seeded generator for `key`: a pure function of (seed, key), so order and batching
    /// never change an answer.
    fn rng_for(&self, key: &str) -> ChaCha8Rng {
        let digest = Sha256::digest(key.as_bytes());
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&digest[..8]);
        ChaCha8Rng::seed_from_u64(self.seed ^ u64::from_le_bytes(bytes))
    }

    fn noisy(&self, gold: usize, rng: &mut ChaCha8Rng) -> usize {
        let u: f64 = rng.random();
        let mut acc = 0.0;
        for (label, p) in self.noise[gold].iter().enumerate() {
            acc += p;
            if u < acc {
                return label;
            }
        }
        self.noise.len() - 1
    }

    /// The answer for one text.
    fn answer(&self, text: &str) -> Option<usize> {
        let gold = *self.gold.get(text)?;
        Some(self.noisy(gold, &mut self.rng_for(text)))
    }

    /// The span-extraction answer (JSON) for one sentence.
    fn extract(&self, text: &str) -> Option<String> {
        let gold = self.entities.get(text)?;
        let mut out = Vec::new();
        for (j, (span, kind)) in gold.iter().enumerate() {
            let mut rng = self.rng_for(&format!("{text}\u{0}{j}"));
            let answered = self.noisy(*kind, &mut rng);
            if answered != *kind && rng.random::<bool>() {
                continue;
            }
            out.push(serde_json::json!({"span": span, "type": self.types[answered]}));
        }
        Some(serde_json::Value::Array(out).to_string())
    }
}

impl Annotator for SimulatedAnnotator {
    fn id(&self) -> String {
        "simulated:gold-with-noise".into()
    }

    fn decoding(&self) -> serde_json::Value {
        serde_json::json!({ "noise": self.noise, "seed": self.seed })
    }

    fn classify(&mut self, requests: &[ClassifyRequest], tick: Tick) -> Vec<Result<Annotation>> {
        let n = self.noise.len();
        let out = requests
            .iter()
            .map(|r| {
                let label = self.answer(&r.query);
                Ok(Annotation::certain(label, n))
            })
            .collect();
        tick(requests.len() as u64);
        out
    }

    fn generate(&mut self, requests: &[GenerateRequest], tick: Tick) -> Vec<Result<Generation>> {
        let answers: Option<Vec<String>> = requests
            .iter()
            .map(|r| r.query.as_deref().and_then(|q| self.extract(q)))
            .collect();
        let Some(answers) = answers else {
            return refuse_all(
                self.id(),
                requests.len(),
                "the simulated annotator writes no free text, only span-extraction answers for \
                 sentences of the dataset; use an LLM backend for methods that generate \
                 demonstrations",
            );
        };
        tick(requests.len() as u64);
        answers
            .into_iter()
            .map(|text| {
                Ok(Generation {
                    text,
                    usage: Default::default(),
                })
            })
            .collect()
    }

    fn cacheable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::annotator::{ChatMessage, Role};

    fn requests(n: usize) -> Vec<ClassifyRequest> {
        (0..n)
            .map(|i| ClassifyRequest {
                query: format!("text {i}"),
                messages: vec![ChatMessage::new(Role::User, "x")],
                verbalizers: vec![vec!["a".into()], vec!["b".into()], vec!["c".into()]],
            })
            .collect()
    }

    #[test]
    fn noise_matrix_is_honoured_and_answers_are_stable() {
        let gold: HashMap<String, usize> =
            (0..3000).map(|i| (format!("text {i}"), i % 3)).collect();
        let noise = vec![
            vec![0.8, 0.2, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.1, 0.1, 0.8],
        ];
        let mut sim = SimulatedAnnotator::new(gold, noise.clone(), 5).unwrap();
        let reqs = requests(3000);
        let answers: Vec<Annotation> = sim
            .classify(&reqs, &|_| {})
            .into_iter()
            .map(|a| a.unwrap())
            .collect();
        let mut counts = vec![vec![0usize; 3]; 3];
        for (i, a) in answers.iter().enumerate() {
            counts[i % 3][a.label.unwrap()] += 1;
        }
        for g in 0..3 {
            for a in 0..3 {
                let rate = counts[g][a] as f64 / 1000.0;
                assert!((rate - noise[g][a]).abs() < 0.04, "{g}->{a}: {rate}");
            }
        }
        // Same seed, reversed order: same answers per text.
        let mut rev = reqs.clone();
        rev.reverse();
        let again: Vec<Annotation> = sim
            .classify(&rev, &|_| {})
            .into_iter()
            .map(|a| a.unwrap())
            .collect();
        assert_eq!(again[0].label, answers[2999].label);
        let row = &symmetric_noise(3, 0.7)[1];
        for (got, want) in row.iter().zip([0.15, 0.7, 0.15]) {
            assert!((got - want).abs() < 1e-12, "{row:?}");
        }
    }

    #[test]
    fn entities_keep_their_type_at_the_noise_rate_or_are_dropped_or_retyped() {
        let entities: HashMap<String, Vec<(String, usize)>> = (0..2000)
            .map(|i| (format!("s{i}"), vec![(format!("Name{i}"), i % 2)]))
            .collect();
        let mut sim = SimulatedAnnotator::new(HashMap::new(), symmetric_noise(2, 0.8), 3)
            .unwrap()
            .with_entities(entities, vec!["PER".into(), "LOC".into()]);
        let reqs: Vec<GenerateRequest> = (0..2000)
            .map(|i| GenerateRequest {
                messages: vec![ChatMessage::new(Role::User, "x")],
                max_tokens: 8,
                temperature: 0.0,
                seed: 0,
                query: Some(format!("s{i}")),
                grammar: None,
            })
            .collect();
        let (mut kept, mut retyped, mut dropped) = (0, 0, 0);
        for (i, g) in sim.generate(&reqs, &|_| {}).into_iter().enumerate() {
            let answer: Vec<serde_json::Value> = serde_json::from_str(&g.unwrap().text).unwrap();
            match answer.first() {
                None => dropped += 1,
                Some(e) if e["type"] == ["PER", "LOC"][i % 2] => kept += 1,
                Some(_) => retyped += 1,
            }
        }
        assert!((kept as f64 / 2000.0 - 0.8).abs() < 0.03, "{kept}");
        assert!((retyped as f64 / 2000.0 - 0.1).abs() < 0.03, "{retyped}");
        assert!((dropped as f64 / 2000.0 - 0.1).abs() < 0.03, "{dropped}");
        let mut stranger = reqs[0].clone();
        stranger.query = Some("not in the data".into());
        assert!(sim.generate(&[stranger], &|_| {})[0].is_err());
    }

    #[test]
    fn unknown_text_is_masked_and_bad_matrix_rejected() {
        let mut sim = SimulatedAnnotator::new(HashMap::new(), symmetric_noise(2, 0.9), 0).unwrap();
        let r = sim.classify(&requests(1), &|_| {});
        assert_eq!(r[0].as_ref().unwrap().label, None);
        assert!(
            SimulatedAnnotator::new(HashMap::new(), vec![vec![0.5, 0.6], vec![1.0, 0.0]], 0)
                .is_err()
        );
    }
}
