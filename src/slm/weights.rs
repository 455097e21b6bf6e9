//! Loads Hugging Face checkpoints (`model.safetensors` or `pytorch_model.bin`) into [`Encoder`].

use std::path::Path;

use burn::module::Module;
use burn::store::{
    KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use super::encoder::Encoder;
use crate::error::{Error, Result};

/// A pattern for a Hugging Face tensor name, after the optional `bert.`/`roberta.`/`mpnet.`
/// prefix that task checkpoints put in front of the encoder's names.
macro_rules! hf {
    ($rest:literal) => {
        concat!(r"^(?:bert\.|roberta\.|mpnet\.)?", $rest)
    };
}

/// Hugging Face names -> this crate's module paths. MPNet names its attention projections
/// `attn.q` .. `attn.o` and puts the attention layer norm one level up.
const KEY_MAP: &[(&str, &str)] = &[
    (hf!(r"embeddings\.word_embeddings\."), "embeddings.word."),
    (
        hf!(r"embeddings\.position_embeddings\."),
        "embeddings.position.",
    ),
    (
        hf!(r"embeddings\.token_type_embeddings\."),
        "embeddings.token_type.",
    ),
    (hf!(r"embeddings\.LayerNorm\."), "embeddings.norm."),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.self\.query\."),
        "layers.$1.query.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.self\.key\."),
        "layers.$1.key.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.self\.value\."),
        "layers.$1.value.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.output\.dense\."),
        "layers.$1.attn_out.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\."),
        "layers.$1.attn_norm.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.intermediate\.dense\."),
        "layers.$1.inter.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.output\.dense\."),
        "layers.$1.out.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.output\.LayerNorm\."),
        "layers.$1.out_norm.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.attn\.q\."),
        "layers.$1.query.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.attn\.k\."),
        "layers.$1.key.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.attn\.v\."),
        "layers.$1.value.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.attn\.o\."),
        "layers.$1.attn_out.",
    ),
    (
        hf!(r"encoder\.layer\.(\d+)\.attention\.LayerNorm\."),
        "layers.$1.attn_norm.",
    ),
    (
        hf!(r"encoder\.relative_attention_bias\."),
        "relative_attention_bias.",
    ),
];

/// Loads the weights found in `dir` into `encoder`; every encoder tensor must be present.
pub fn load_weights(encoder: &mut Encoder, dir: &Path) -> Result<()> {
    let name = dir.display().to_string();
    let remap = KeyRemapper::from_patterns(KEY_MAP.to_vec())
        .map_err(|e| Error::model(&name, format!("internal key map: {e}")))?;
    let safetensors = dir.join("model.safetensors");
    let pytorch = dir.join("pytorch_model.bin");
    let result = if safetensors.is_file() {
        let mut store = SafetensorsStore::from_file(&safetensors)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remap)
            .allow_partial(true);
        encoder
            .load_from(&mut store)
            .map_err(|e| Error::model(&name, format!("{}: {e}", safetensors.display())))?
    } else if pytorch.is_file() {
        let mut store = PytorchStore::from_file(&pytorch)
            .remap(remap)
            .allow_partial(true);
        encoder
            .load_from(&mut store)
            .map_err(|e| Error::model(&name, format!("{}: {e}", pytorch.display())))?
    } else {
        return Err(Error::model(
            &name,
            "neither model.safetensors nor pytorch_model.bin is in the directory",
        ));
    };
    if !result.errors.is_empty() {
        return Err(Error::model(
            &name,
            format!(
                "tensors could not be applied (shape or dtype mismatch): {:?}",
                result.errors
            ),
        ));
    }
    if !result.missing.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        return Err(Error::model(
            &name,
            format!(
                "checkpoint lacks {} encoder tensors, e.g. {:?}; is this a BERT/RoBERTa/MPNet \
                 checkpoint?",
                missing.len(),
                &missing[..missing.len().min(5)]
            ),
        ));
    }
    let expected = encoder.num_params();
    if expected == 0 {
        return Err(Error::model(&name, "encoder has no parameters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name` as the loader's remapper rewrites it: every matching pattern in turn, as burn's
    /// `KeyRemapper::remap` applies them.
    fn mapped(name: &str) -> String {
        let remap = KeyRemapper::from_patterns(KEY_MAP.to_vec()).unwrap();
        remap
            .to_regex_pairs()
            .iter()
            .fold(name.to_string(), |n, (from, to)| {
                from.replace_all(&n, to.as_str()).into_owned()
            })
    }

    #[test]
    fn names_map_with_or_without_a_task_checkpoint_prefix() {
        for prefix in ["", "bert.", "roberta.", "mpnet."] {
            for (name, want) in [
                (
                    "embeddings.word_embeddings.weight",
                    "embeddings.word.weight",
                ),
                (
                    "encoder.layer.3.attention.self.query.bias",
                    "layers.3.query.bias",
                ),
                (
                    "encoder.layer.3.attention.attn.q.bias",
                    "layers.3.query.bias",
                ),
                (
                    "encoder.layer.11.attention.LayerNorm.weight",
                    "layers.11.attn_norm.weight",
                ),
                (
                    "encoder.relative_attention_bias.weight",
                    "relative_attention_bias.weight",
                ),
            ] {
                assert_eq!(mapped(&format!("{prefix}{name}")), want, "{prefix}{name}");
            }
        }
        // Only at the start: a head's own copy of a name is not the encoder's.
        assert_eq!(
            mapped("classifier.embeddings.word_embeddings.weight"),
            "classifier.embeddings.word_embeddings.weight"
        );
    }
}
