//! Span extraction for NER: the answer grammar (a JSON list of `{"span", "type"}`), how gold
//! tags are written as such answers (demonstrations), and how an answer is mapped back onto the
//! sentence's tokens (exact match first, then a normalised match; the rest is counted).

use serde::{Deserialize, Serialize};

use crate::metrics::spans::spans_strict;

/// One extracted entity: its text and its type index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    /// The words of the entity as the LLM wrote them.
    pub span: String,
    /// Index into the entity types.
    pub kind: usize,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    span: String,
    #[serde(rename = "type")]
    kind: String,
}

/// How an extraction answer is constrained (`llm.grammar`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerGrammar {
    /// Exactly the demonstrations' compact JSON: `[{"span": "...", "type": "T"}, ...]`.
    #[default]
    Compact,
    /// The same JSON with up to 8 whitespace characters (newlines, indentation) between its
    /// tokens and an optional Markdown code fence around it: the layout small chat models
    /// prefer, which the compact grammar forbids.
    Json,
    /// Free text through the same parser (unparsable answers masked).
    None,
}

impl AnswerGrammar {
    /// Whether this is the default (kept out of serialised configs so cell ids stay stable).
    pub fn is_compact(&self) -> bool {
        *self == AnswerGrammar::Compact
    }

    /// The GBNF grammar of an answer over `types`; `None` for free text. Answers are `[]` or a
    /// JSON list of `{"span": "...", "type": "<T>"}` objects with `T` one of `types`. Span
    /// strings exclude quotes, backslashes and newlines (entity mentions in these corpora have
    /// none).
    pub fn gbnf(&self, types: &[String]) -> Option<String> {
        let kinds = kind_rule(types);
        let chars = CHARS_RULE;
        match self {
            AnswerGrammar::None => None,
            AnswerGrammar::Compact => Some(format!(
                "root ::= \"[\" ( entity ( \", \" entity )* )? \"]\"\n{COMPACT_ENTITY}{kinds}{chars}"
            )),
            AnswerGrammar::Json => Some(format!(
                "root ::= ( fence ws )? \"[\" ws ( entity ( ws \",\" ws entity )* )? ws \"]\" ( ws \"```\" )?\n\
                 fence ::= \"```json\" | \"```\"\n\
                 entity ::= \"{{\" ws \"\\\"span\\\"\" ws \":\" ws \"\\\"\" chars \"\\\"\" ws \",\" ws \
                 \"\\\"type\\\"\" ws \":\" ws kind ws \"}}\"\n\
                 {kinds}\
                 ws ::= [ \\t\\n]{{0,8}}\n{chars}"
            )),
        }
    }

    /// The GBNF grammar of a written demonstration (FreeAL's round 0 on NER): one JSON object
    /// `{"sentence": "...", "entities": [...]}`, the entities as in a compact answer; `None`
    /// for free text. The sentence excludes quotes, backslashes and newlines, as spans do.
    pub fn generation_gbnf(&self, types: &[String]) -> Option<String> {
        match self {
            AnswerGrammar::None => None,
            AnswerGrammar::Compact | AnswerGrammar::Json => Some(format!(
                "root ::= \"{{\\\"sentence\\\": \\\"\" chars \"\\\", \\\"entities\\\": [\" \
                 ( entity ( \", \" entity )* )? \"]}}\"\n{COMPACT_ENTITY}{}{CHARS_RULE}",
                kind_rule(types)
            )),
        }
    }
}

/// An entity object exactly as demonstrations show it.
const COMPACT_ENTITY: &str =
    "entity ::= \"{\\\"span\\\": \\\"\" chars \"\\\", \\\"type\\\": \" kind \"}\"\n";

/// A span's (or written sentence's) characters.
const CHARS_RULE: &str = "chars ::= [^\"\\\\\\n]+\n";

/// `kind ::= "\"PER\"" | ...`: the quoted type names.
fn kind_rule(types: &[String]) -> String {
    let kinds: Vec<String> = types
        .iter()
        .map(|t| format!("\"\\\"{}\\\"\"", t.replace('\\', "\\\\").replace('"', "")))
        .collect();
    format!("kind ::= {}\n", kinds.join(" | "))
}

/// The answer a demonstration shows for `tokens` tagged with BIO `tags` (names).
pub fn render_answer<S: AsRef<str>>(tokens: &[String], tags: &[S]) -> String {
    let wire: Vec<Wire> = spans_strict(tags)
        .into_iter()
        .map(|s| Wire {
            span: tokens[s.start..s.end].join(" "),
            kind: s.kind,
        })
        .collect();
    serde_json::to_string(&wire).unwrap_or_else(|_| "[]".into())
}

/// What an answer held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// Entities of known types, in answer order.
    pub entities: Vec<Entity>,
    /// Entities whose type is not in the tag set (dropped).
    pub out_of_set: usize,
    /// True when not even one complete entity object could be read and the answer is not `[]`.
    pub unparsable: bool,
}

/// Reads an answer: the whole JSON list when it parses, else every complete `{...}` object in
/// it (a generation cut off by the token limit keeps the entities it finished).
pub fn parse_answer(text: &str, types: &[String]) -> Parsed {
    let text = without_fence(text.trim());
    let (objects, unparsable) = match serde_json::from_str::<Vec<Wire>>(text) {
        Ok(all) => (all, false),
        Err(_) => {
            let found = salvage(text);
            let nothing = found.is_empty();
            (found, nothing)
        }
    };
    Parsed {
        unparsable,
        ..typed(objects, types)
    }
}

/// The entities of `objects` whose type is one of `types`; the others counted as out of set.
fn typed(objects: Vec<Wire>, types: &[String]) -> Parsed {
    let mut parsed = Parsed::default();
    for w in objects {
        let span = w.span.trim();
        if span.is_empty() {
            continue;
        }
        match types
            .iter()
            .position(|t| t.eq_ignore_ascii_case(w.kind.trim()))
        {
            Some(kind) => parsed.entities.push(Entity {
                span: span.to_string(),
                kind,
            }),
            None => parsed.out_of_set += 1,
        }
    }
    parsed
}

#[derive(Deserialize)]
struct WrittenWire {
    sentence: String,
    entities: Vec<Wire>,
}

/// Reads a written demonstration `{"sentence": "...", "entities": [...]}` (a code fence
/// allowed): its sentence and entities; `None` when it does not parse as a whole (a cut-off
/// answer has no complete sentence-and-entities pair to keep) or the sentence is empty.
pub fn parse_written(text: &str, types: &[String]) -> Option<(String, Parsed)> {
    let wire: WrittenWire = serde_json::from_str(without_fence(text.trim())).ok()?;
    let sentence = wire.sentence.trim();
    (!sentence.is_empty()).then(|| (sentence.to_string(), typed(wire.entities, types)))
}

/// A written sentence as corpus tokens: split on whitespace, with the punctuation the corpora
/// write as tokens of their own (`,` `;` `:` `!` `?` double quotes and brackets at either end
/// of a word, the sentence's final `.`, and a possessive `'s`) split off, so a written
/// demonstration reads like the pool sentences it sits beside.
pub fn word_tokens(sentence: &str) -> Vec<String> {
    const EDGE: &[char] = &[',', ';', ':', '!', '?', '"', '(', ')', '[', ']'];
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let mut out = Vec::new();
    for (i, word) in words.iter().enumerate() {
        let last = i + 1 == words.len();
        let mut word = *word;
        while let Some(c) = word.chars().next().filter(|c| EDGE.contains(c)) {
            out.push(c.to_string());
            word = &word[c.len_utf8()..];
        }
        let mut tail = Vec::new();
        loop {
            match word.chars().last() {
                Some(c) if EDGE.contains(&c) || (c == '.' && last) => {
                    tail.push(c.to_string());
                    word = &word[..word.len() - c.len_utf8()];
                }
                _ => break,
            }
        }
        if let Some(stem) = word.strip_suffix("'s").filter(|s| !s.is_empty()) {
            out.push(stem.to_string());
            out.push("'s".into());
        } else if !word.is_empty() {
            out.push(word.to_string());
        }
        out.extend(tail.into_iter().rev());
    }
    out
}

/// `text` without a Markdown code fence around it (```` ```json ... ``` ````).
fn without_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// Every balanced `{...}` object (outside strings) that parses as an entity.
fn salvage(text: &str) -> Vec<Wire> {
    let mut found = Vec::new();
    let (mut depth, mut start, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => {
                if depth == 0 {
                    start = i;
                }
                depth += 1;
            }
            '}' if depth > 0 => {
                depth -= 1;
                if depth == 0
                    && let Ok(w) = serde_json::from_str::<Wire>(&text[start..=i])
                {
                    found.push(w);
                }
            }
            _ => {}
        }
    }
    found
}

/// How the entities of an answer landed on the tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MatchStats {
    /// Entities found verbatim as a run of tokens.
    pub exact: usize,
    /// Entities found after normalisation (case, punctuation, spacing).
    pub fuzzy: usize,
    /// Entities found nowhere in the sentence (dropped).
    pub unmatched: usize,
}

impl MatchStats {
    /// Adds another answer's counts.
    pub fn add(&mut self, other: MatchStats) {
        self.exact += other.exact;
        self.fuzzy += other.fuzzy;
        self.unmatched += other.unmatched;
    }
}

fn normalise(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// BIO tag indices (`O` = 0, `B-t` = 1 + 2t, `I-t` = 2 + 2t) for `tokens` from `entities`.
/// Each entity labels every occurrence of its words that is still untagged (LLMaAA's matching:
/// an answer names a mention, not a position); an entity with no verbatim occurrence is matched
/// on normalised text (lower case, letters and digits only) over token windows.
pub fn tag_tokens(tokens: &[String], entities: &[Entity]) -> (Vec<usize>, MatchStats) {
    let mut tags = vec![0usize; tokens.len()];
    let mut stats = MatchStats::default();
    let norm_tokens: Vec<String> = tokens.iter().map(|t| normalise(t)).collect();
    for entity in entities {
        let words: Vec<&str> = entity.span.split_whitespace().collect();
        let exact = windows_where(tokens.len(), words.len(), |s| {
            tokens[s..s + words.len()]
                .iter()
                .zip(&words)
                .all(|(t, w)| t == w)
        });
        let hits = if exact.is_empty() {
            let target = normalise(&entity.span);
            let mut fuzzy = Vec::new();
            if !target.is_empty() {
                for start in 0..tokens.len() {
                    let mut joined = String::new();
                    for end in start..tokens.len() {
                        joined.push_str(&norm_tokens[end]);
                        if joined.len() >= target.len() {
                            if joined == target && !norm_tokens[start].is_empty() {
                                fuzzy.push((start, end + 1));
                            }
                            break;
                        }
                    }
                }
            }
            if fuzzy.is_empty() {
                stats.unmatched += 1;
            } else {
                stats.fuzzy += 1;
            }
            fuzzy
        } else {
            stats.exact += 1;
            exact.into_iter().map(|s| (s, s + words.len())).collect()
        };
        for (start, end) in hits {
            if tags[start..end].iter().all(|&t| t == 0) {
                tags[start] = 1 + 2 * entity.kind;
                for tag in &mut tags[start + 1..end] {
                    *tag = 2 + 2 * entity.kind;
                }
            }
        }
    }
    (tags, stats)
}

fn windows_where(n: usize, len: usize, matches: impl Fn(usize) -> bool) -> Vec<usize> {
    if len == 0 || len > n {
        return Vec::new();
    }
    (0..=n - len).filter(|&s| matches(s)).collect()
}

/// `PER (person), LOC (location)`: the types as the instruction lists them.
pub fn describe_types(types: &[String], descriptions: &[String]) -> String {
    types
        .iter()
        .zip(
            descriptions
                .iter()
                .map(String::as_str)
                .chain(std::iter::repeat("")),
        )
        .map(|(t, d)| {
            if d.is_empty() {
                t.clone()
            } else {
                format!("{t} ({d})")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn types() -> Vec<String> {
        vec!["PER".into(), "LOC".into()]
    }

    #[test]
    fn demo_answers_are_the_gold_spans_as_json() {
        let tokens = toks("John Smith flew to New York");
        let tags = ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"];
        assert_eq!(
            render_answer(&tokens, &tags),
            r#"[{"span":"John Smith","type":"PER"},{"span":"New York","type":"LOC"}]"#
        );
        assert_eq!(render_answer(&tokens, &["O"; 6]), "[]");
    }

    #[test]
    fn parse_keeps_known_types_counts_others_and_salvages_cut_answers() {
        let p = parse_answer(
            r#"[{"span": "Paris", "type": "LOC"}, {"span": "EU", "type": "ORG"}]"#,
            &types(),
        );
        assert_eq!(
            p.entities,
            vec![Entity {
                span: "Paris".into(),
                kind: 1
            }]
        );
        assert_eq!((p.out_of_set, p.unparsable), (1, false));
        // Cut off by the token limit after one complete object.
        let p = parse_answer(r#"[{"span": "Ann", "type": "per"}, {"span": "Ro"#, &types());
        assert_eq!(p.entities.len(), 1);
        assert_eq!(p.entities[0].kind, 0);
        assert!(!p.unparsable);
        assert!(!parse_answer("[]", &types()).unparsable);
        assert!(parse_answer("no entities here", &types()).unparsable);
        // The layout chat models like: a fenced, pretty-printed list, empty or not.
        assert!(!parse_answer("```json\n[\n]\n```", &types()).unparsable);
        let p = parse_answer(
            "```json\n[\n  {\"span\": \"Ann\", \"type\": \"PER\"}\n]\n```",
            &types(),
        );
        assert_eq!((p.entities.len(), p.unparsable), (1, false));
    }

    #[test]
    fn spans_map_exactly_then_fuzzily_and_unmatched_are_counted() {
        let tokens = toks("U.S. envoy Holbrooke met Holbrooke 's aides in Bosnia");
        let entities = vec![
            Entity {
                span: "Holbrooke".into(),
                kind: 0,
            },
            Entity {
                span: "US".into(),
                kind: 1,
            },
            Entity {
                span: "Sarajevo".into(),
                kind: 1,
            },
        ];
        let (tags, stats) = tag_tokens(&tokens, &entities);
        // Both mentions of Holbrooke (exact), "US" ~ "U.S." (fuzzy), Sarajevo nowhere.
        assert_eq!(tags, vec![3, 0, 1, 0, 1, 0, 0, 0, 0]);
        assert_eq!(
            stats,
            MatchStats {
                exact: 1,
                fuzzy: 1,
                unmatched: 1
            }
        );
        // A multi-word span becomes B- then I-; an overlapping later entity does not overwrite.
        let tokens = toks("New York Times");
        let (tags, _) = tag_tokens(
            &tokens,
            &[
                Entity {
                    span: "New York".into(),
                    kind: 1,
                },
                Entity {
                    span: "York Times".into(),
                    kind: 0,
                },
            ],
        );
        assert_eq!(tags, vec![3, 4, 0]);
    }

    #[test]
    fn answer_grammars_are_pinned_to_the_byte() {
        // Part of every cached extraction's key: a changed byte would re-ask every sentence.
        assert_eq!(
            AnswerGrammar::Compact.gbnf(&types()).unwrap(),
            r#"root ::= "[" ( entity ( ", " entity )* )? "]"
entity ::= "{\"span\": \"" chars "\", \"type\": " kind "}"
kind ::= "\"PER\"" | "\"LOC\""
chars ::= [^"\\\n]+
"#
        );
        assert_eq!(
            AnswerGrammar::Json.gbnf(&types()).unwrap(),
            r#"root ::= ( fence ws )? "[" ws ( entity ( ws "," ws entity )* )? ws "]" ( ws "```" )?
fence ::= "```json" | "```"
entity ::= "{" ws "\"span\"" ws ":" ws "\"" chars "\"" ws "," ws "\"type\"" ws ":" ws kind ws "}"
kind ::= "\"PER\"" | "\"LOC\""
ws ::= [ \t\n]{0,8}
chars ::= [^"\\\n]+
"#
        );
    }

    #[test]
    fn a_written_demonstration_is_one_object_with_the_answer_entities() {
        let g = AnswerGrammar::Json.generation_gbnf(&types()).unwrap();
        assert!(
            g.starts_with(r#"root ::= "{\"sentence\": \"" chars "\", \"entities\": [" ( entity"#),
            "{g}"
        );
        assert!(g.contains(r#"kind ::= "\"PER\"" | "\"LOC\"""#), "{g}");
        assert_eq!(AnswerGrammar::None.generation_gbnf(&types()), None);
        let (sentence, parsed) = parse_written(
            "```json\n{\"sentence\": \" Ann met Bo. \", \"entities\": [{\"span\": \"Ann\", \"type\": \"PER\"}, {\"span\": \"EU\", \"type\": \"ORG\"}]}\n```",
            &types(),
        )
        .unwrap();
        assert_eq!(sentence, "Ann met Bo.");
        assert_eq!((parsed.entities.len(), parsed.out_of_set), (1, 1));
        assert_eq!(parse_written(r#"{"sentence": "Ann met"#, &types()), None);
        assert_eq!(
            parse_written(r#"{"sentence": " ", "entities": []}"#, &types()),
            None
        );
    }

    #[test]
    fn written_sentences_split_into_corpus_tokens() {
        assert_eq!(
            word_tokens("Germany's envoy (U.S.) said: \"talks resume,\" in Oslo."),
            toks("Germany 's envoy ( U.S. ) said : \" talks resume , \" in Oslo .")
        );
        assert_eq!(word_tokens("A.B. met C.D."), toks("A.B. met C.D ."));
        assert!(word_tokens("  ").is_empty());
    }

    #[test]
    fn grammar_names_every_type_and_the_json_shape() {
        let g = AnswerGrammar::Compact.gbnf(&types()).unwrap();
        assert!(g.starts_with("root ::= \"[\""));
        assert!(g.contains(r#"kind ::= "\"PER\"" | "\"LOC\"""#), "{g}");
        assert!(g.contains(r#"entity ::= "{\"span\": \"" chars "\", \"type\": " kind "}""#));
        let json = AnswerGrammar::Json.gbnf(&types()).unwrap();
        assert!(json.contains(r#"fence ::= "```json" | "```""#), "{json}");
        assert!(json.contains(r#"ws ::= [ \t\n]{0,8}"#), "{json}");
        assert!(json.contains(r#"kind ::= "\"PER\"" | "\"LOC\"""#), "{json}");
        assert_eq!(AnswerGrammar::None.gbnf(&types()), None);
        assert_eq!(
            describe_types(&types(), &["person".into()]),
            "PER (person), LOC"
        );
    }
}
