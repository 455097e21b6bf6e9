//! Prompts as data: a per-dataset TOML file (`configs/prompts/<dataset>.toml`) holds the task
//! instruction, how a demonstration and a query are written, and the demo-generation prompt.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::locate::line_of;
use crate::data::def::DatasetDef;
use crate::error::{Error, Result};
use crate::llm::annotator::{ChatMessage, ClassifyRequest, GenerateRequest, Role};

/// How demonstrations are laid out in the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DemoStyle {
    /// Each demonstration is a user turn (the query format) and an assistant turn (the answer):
    /// chat models then answer the real query the same way.
    Turns,
    /// All demonstrations inside the one user message, before the query.
    Inline,
}

/// The prompt of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplate {
    /// System message; `{labels}` becomes the label words joined by ", ".
    pub instruction: String,
    /// How an input is written (user turn); `{text}` is the input.
    pub query: String,
    /// How an answer is written; `{label}` is the label's first verbalizer.
    #[serde(default = "default_answer")]
    pub answer: String,
    /// Demonstration layout.
    #[serde(default = "default_style")]
    pub demo_style: DemoStyle,
    /// Between inline demonstrations.
    #[serde(default = "default_separator")]
    pub demo_separator: String,
    /// Demo generation (FreeAL's initial round). A span-extraction prompt's own asks for one
    /// JSON object `{"sentence", "entities"}` (the default is classification's, which NER
    /// refuses).
    #[serde(default = "default_generation")]
    pub generation: GenerationTemplate,
    /// Paraphrasing (FreeAL's consistency view with `augmentation = "llm_paraphrase"`);
    /// `{text}` is the input.
    #[serde(default = "default_paraphrase")]
    pub paraphrase: GenerationTemplate,
}

/// The prompt that asks the LLM to write a labelled example imitating unlabelled ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationTemplate {
    /// User message; `{examples}` becomes the imitated inputs (one per line), `{label}` the
    /// requested label word, `{labels}` all label words.
    pub prompt: String,
    /// Upper bound on generated tokens.
    #[serde(default = "default_gen_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature.
    #[serde(default = "default_gen_temperature")]
    pub temperature: f32,
}

/// Classification's demo-generation prompt, used when a prompt file has no `[generation]`.
pub fn default_generation() -> GenerationTemplate {
    GenerationTemplate {
        prompt: "Here are examples of the inputs:\n{examples}\nWrite one new input in the same \
                 style whose label is {label}. Reply with the input only."
            .into(),
        max_tokens: default_gen_tokens(),
        temperature: default_gen_temperature(),
    }
}

fn default_paraphrase() -> GenerationTemplate {
    GenerationTemplate {
        prompt: "Rewrite the following text in different words, keeping its meaning and \
                 tone.\n\n{text}\n\nReply with the rewritten text only."
            .into(),
        max_tokens: 96,
        temperature: 0.7,
    }
}

fn default_answer() -> String {
    "{label}".into()
}
fn default_style() -> DemoStyle {
    DemoStyle::Turns
}
fn default_separator() -> String {
    "\n\n".into()
}
fn default_gen_tokens() -> u32 {
    64
}
fn default_gen_temperature() -> f32 {
    0.8
}

/// Where a dataset's prompt lives when the spec names none.
pub fn default_prompt_path(root: &Path, dataset: &str) -> PathBuf {
    root.join("configs")
        .join("prompts")
        .join(format!("{dataset}.toml"))
}

impl PromptTemplate {
    /// Reads and checks a prompt file.
    pub fn load(path: &Path) -> Result<PromptTemplate> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            location: path.display().to_string(),
            key: "llm.prompts".into(),
            message: format!("cannot read the prompt file: {e}"),
        })?;
        let template: PromptTemplate = toml::from_str(&text).map_err(|e| Error::Config {
            location: format!(
                "{}:{}",
                path.display(),
                e.span().map(|s| line_of(&text, s.start)).unwrap_or(0)
            ),
            key: "prompt".into(),
            message: e.message().to_string(),
        })?;
        for (key, value, needed) in [
            ("query", &template.query, "{text}"),
            ("answer", &template.answer, "{label}"),
            ("generation.prompt", &template.generation.prompt, "{label}"),
        ] {
            if !value.contains(needed) {
                return Err(Error::Config {
                    location: path.display().to_string(),
                    key: key.into(),
                    message: format!("must contain the placeholder {needed}"),
                });
            }
        }
        Ok(template)
    }

    /// The same prompt with the instruction's `{labels}` written out as each label's first
    /// verbalizer and its description from `dataset`'s `[labels.descriptions]` (LLMaAA's label
    /// verbalisation). `dataset_path` and `prompt_path` name the files in errors.
    pub fn describing_labels(
        mut self,
        dataset: &DatasetDef,
        dataset_path: &Path,
        prompt_path: &Path,
    ) -> Result<Self> {
        let error = |location: String, key: &str, message: String| Error::Config {
            location,
            key: key.into(),
            message,
        };
        if !self.instruction.contains("{labels}") {
            return Err(error(
                prompt_path.display().to_string(),
                "instruction",
                "label_descriptions = true needs the placeholder {labels} in the instruction, \
                 where the described labels go"
                    .into(),
            ));
        }
        let verbalizers = dataset.verbalizers();
        let mut described = Vec::with_capacity(verbalizers.len());
        for (label, name) in dataset.labels.names.iter().enumerate() {
            let description = dataset
                .labels
                .descriptions
                .get(name)
                .map(|d| d.trim())
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    error(
                        dataset_path.display().to_string(),
                        "labels.descriptions",
                        format!(
                            "llm.label_descriptions = true needs a description of every label; \
                             `{name}` has none"
                        ),
                    )
                })?;
            described.push(format!(
                "{} ({description})",
                first_word(&verbalizers, label)
            ));
        }
        self.instruction = self.instruction.replace("{labels}", &described.join("; "));
        Ok(self)
    }

    fn system(&self, verbalizers: &[Vec<String>]) -> ChatMessage {
        ChatMessage::new(
            Role::System,
            self.instruction
                .replace("{labels}", &label_words(verbalizers)),
        )
    }

    fn query_text(&self, text: &str) -> String {
        self.query.replace("{text}", text.trim())
    }

    fn answer_text(&self, label: usize, verbalizers: &[Vec<String>]) -> String {
        self.answer
            .replace("{label}", first_word(verbalizers, label))
    }

    /// `system`, the demonstrations `(input, answer)` laid out in `demo_style`, then the query.
    fn chat(&self, system: ChatMessage, demos: &[(&str, String)], text: &str) -> Vec<ChatMessage> {
        let mut messages = vec![system];
        match self.demo_style {
            DemoStyle::Turns => {
                for (demo, answer) in demos {
                    messages.push(ChatMessage::new(Role::User, self.query_text(demo)));
                    messages.push(ChatMessage::new(Role::Assistant, answer.clone()));
                }
                messages.push(ChatMessage::new(Role::User, self.query_text(text)));
            }
            DemoStyle::Inline => {
                let mut parts: Vec<String> = demos
                    .iter()
                    .map(|(demo, answer)| format!("{} {answer}", self.query_text(demo)))
                    .collect();
                parts.push(self.query_text(text));
                messages.push(ChatMessage::new(
                    Role::User,
                    parts.join(&self.demo_separator),
                ));
            }
        }
        messages
    }

    /// The request that labels `text` given demonstrations `(text, label)` (most similar last).
    pub fn classify(
        &self,
        text: &str,
        demos: &[(&str, usize)],
        verbalizers: &[Vec<String>],
    ) -> ClassifyRequest {
        let shown: Vec<(&str, String)> = demos
            .iter()
            .map(|&(demo, label)| (demo, self.answer_text(label, verbalizers)))
            .collect();
        let messages = self.chat(self.system(verbalizers), &shown, text);
        ClassifyRequest {
            query: text.to_string(),
            messages,
            verbalizers: verbalizers.to_vec(),
        }
    }

    /// The request that writes a new example of `label` imitating `examples`.
    pub fn generate(
        &self,
        examples: &[&str],
        label: usize,
        verbalizers: &[Vec<String>],
        seed: u64,
    ) -> GenerateRequest {
        self.writing(
            Some(self.system(verbalizers)),
            examples,
            first_word(verbalizers, label),
            &label_words(verbalizers),
            None,
            seed,
        )
    }

    /// The `[generation]` prompt filled in (`{examples}` bulleted), after `system` if any.
    fn writing(
        &self,
        system: Option<ChatMessage>,
        examples: &[&str],
        label: &str,
        labels: &str,
        grammar: Option<&str>,
        seed: u64,
    ) -> GenerateRequest {
        let lines: Vec<String> = examples.iter().map(|e| format!("- {}", e.trim())).collect();
        let prompt = self
            .generation
            .prompt
            .replace("{examples}", &lines.join("\n"))
            .replace("{labels}", labels)
            .replace("{label}", label);
        GenerateRequest {
            messages: system
                .into_iter()
                .chain([ChatMessage::new(Role::User, prompt)])
                .collect(),
            max_tokens: self.generation.max_tokens,
            temperature: self.generation.temperature,
            seed,
            query: None,
            grammar: grammar.map(str::to_string),
        }
    }
}

impl PromptTemplate {
    /// The request that extracts the entities of `text`: `{labels}` in the instruction becomes
    /// `types` (each entity type with its description), demonstrations `(text, answer)` show
    /// their JSON answers, and the answer is decoded under `grammar` greedily.
    pub fn extract(
        &self,
        text: &str,
        demos: &[(&str, String)],
        types: &str,
        grammar: Option<&str>,
        max_tokens: u32,
    ) -> GenerateRequest {
        let system = ChatMessage::new(Role::System, self.instruction.replace("{labels}", types));
        let messages = self.chat(system, demos, text);
        GenerateRequest {
            messages,
            max_tokens,
            temperature: 0.0,
            seed: 0,
            query: Some(text.to_string()),
            grammar: grammar.map(str::to_string),
        }
    }

    /// The request that writes a new sentence imitating `examples` that holds an entity of
    /// `kind`, with its entities of `types`, as one JSON object under `grammar` (FreeAL's round
    /// 0 on NER), sampled with `seed`. No system message: the extraction instruction would ask
    /// for a list, not a sentence.
    pub fn write_tagged(
        &self,
        examples: &[&str],
        kind: &str,
        types: &str,
        grammar: Option<&str>,
        seed: u64,
    ) -> GenerateRequest {
        self.writing(None, examples, kind, types, grammar, seed)
    }

    /// The request that paraphrases `text` (sampled with `seed`).
    pub fn paraphrase(&self, text: &str, seed: u64) -> GenerateRequest {
        GenerateRequest {
            messages: vec![ChatMessage::new(
                Role::User,
                self.paraphrase.prompt.replace("{text}", text.trim()),
            )],
            max_tokens: self.paraphrase.max_tokens,
            temperature: self.paraphrase.temperature,
            seed,
            query: None,
            grammar: None,
        }
    }
}

fn first_word(verbalizers: &[Vec<String>], label: usize) -> &str {
    verbalizers
        .get(label)
        .and_then(|w| w.first())
        .map_or("", String::as_str)
}

fn label_words(verbalizers: &[Vec<String>]) -> String {
    (0..verbalizers.len())
        .map(|l| first_word(verbalizers, l))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders messages as plain text (for `plan --show-prompt` and completion endpoints).
pub fn render_plain(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .map(|m| {
            let role = m.role.as_str();
            format!("[{role}]\n{}", m.content)
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(style: DemoStyle) -> PromptTemplate {
        PromptTemplate {
            instruction: "Classify as {labels}.".into(),
            query: "Review: {text}".into(),
            answer: "{label}".into(),
            demo_style: style,
            demo_separator: "\n".into(),
            generation: GenerationTemplate {
                prompt: "Like these:\n{examples}\nWrite a {label} one.".into(),
                max_tokens: 10,
                temperature: 0.5,
            },
            paraphrase: default_paraphrase(),
        }
    }

    #[test]
    fn described_labels_replace_the_label_list_and_a_missing_one_is_named() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sst2/dataset.toml");
        let mut def = DatasetDef::from_file(&path).unwrap();
        def.labels.descriptions = [("negative", " bad "), ("positive", "good")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        def.labels
            .verbalizers
            .insert("positive".into(), vec!["great".into(), "good".into()]);
        let prompt_path = Path::new("p.toml");
        let t = template(DemoStyle::Turns)
            .describing_labels(&def, &path, prompt_path)
            .unwrap();
        // The first verbalizer names the label, as in the undescribed list.
        assert_eq!(t.instruction, "Classify as negative (bad); great (good).");
        let r = t.classify("a film", &[], &def.verbalizers());
        assert_eq!(r.messages[0].content, t.instruction);

        def.labels.descriptions.remove("positive");
        let err = template(DemoStyle::Turns)
            .describing_labels(&def, &path, prompt_path)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with(&path.display().to_string()), "{err}");
        assert!(
            err.contains("labels.descriptions") && err.contains("`positive`"),
            "{err}"
        );

        let mut no_list = template(DemoStyle::Turns);
        no_list.instruction = "Classify.".into();
        def.labels
            .descriptions
            .insert("positive".into(), "good".into());
        let err = no_list
            .describing_labels(&def, &path, prompt_path)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml") && err.contains("`instruction`") && err.contains("{labels}"),
            "{err}"
        );
    }

    #[test]
    fn paraphrase_request_carries_the_text_alone() {
        let r = template(DemoStyle::Turns).paraphrase("  a fine film ", 9);
        assert_eq!(r.messages.len(), 1);
        assert!(r.messages[0].content.contains("\n\na fine film\n\n"));
        assert_eq!((r.seed, r.max_tokens), (9, 96));
    }

    #[test]
    fn extraction_request_carries_types_demos_query_and_optional_grammar() {
        let t = template(DemoStyle::Turns);
        let demos = [("Bob ran", r#"[{"span":"Bob","type":"PER"}]"#.to_string())];
        let r = t.extract(
            "Ann sat",
            &demos,
            "PER (person)",
            Some("root ::= \"[]\""),
            40,
        );
        assert_eq!(r.messages[0].content, "Classify as PER (person).");
        let turns: Vec<&str> = r.messages[1..].iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            turns,
            [
                "Review: Bob ran",
                r#"[{"span":"Bob","type":"PER"}]"#,
                "Review: Ann sat"
            ]
        );
        assert_eq!(r.grammar.as_deref(), Some("root ::= \"[]\""));
        assert_eq!((r.query.as_deref(), r.max_tokens), (Some("Ann sat"), 40));
        // llm.grammar = false: free text, no grammar on the wire or in the cache key.
        assert_eq!(t.extract("Ann sat", &[], "PER", None, 40).grammar, None);
    }

    fn verbs() -> Vec<Vec<String>> {
        vec![
            vec!["negative".into()],
            vec!["positive".into(), "good".into()],
        ]
    }

    #[test]
    fn turns_put_each_demo_in_its_own_pair() {
        let r =
            template(DemoStyle::Turns).classify(" fine ", &[("bad", 0), ("great", 1)], &verbs());
        let contents: Vec<&str> = r.messages.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(
            contents,
            [
                "Classify as negative, positive.",
                "Review: bad",
                "negative",
                "Review: great",
                "positive",
                "Review: fine"
            ]
        );
        assert_eq!(r.messages[2].role, Role::Assistant);
        assert_eq!(r.query, " fine ");
    }

    #[test]
    fn inline_puts_demos_before_the_query() {
        let r = template(DemoStyle::Inline).classify("fine", &[("bad", 0)], &verbs());
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content, "Review: bad negative\nReview: fine");
    }

    #[test]
    fn generation_fills_examples_and_label() {
        let g = template(DemoStyle::Turns).generate(&["a", "b"], 1, &verbs(), 7);
        assert_eq!(
            g.messages[1].content,
            "Like these:\n- a\n- b\nWrite a positive one."
        );
        assert_eq!((g.max_tokens, g.seed), (10, 7));
    }

    #[test]
    fn every_shipped_prompt_file_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/prompts");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            PromptTemplate::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(
            n >= 5,
            "expected a prompt per classification dataset, found {n}"
        );
    }
}
