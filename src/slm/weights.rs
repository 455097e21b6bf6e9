//! Loads Hugging Face checkpoints (`model.safetensors` or `pytorch_model.bin`) into [`Encoder`].

use std::path::Path;

use burn::module::Module;
use burn::store::{
    KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

use super::encoder::Encoder;
use crate::error::{Error, Result};

/// Hugging Face names -> this crate's module paths. The optional `bert.`/`roberta.`/`mpnet.`
/// prefix of task checkpoints is stripped. MPNet names its attention projections `attn.q` ..
/// `attn.o` and puts the attention layer norm one level up.
const KEY_MAP: &[(&str, &str)] = &[
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?embeddings\.word_embeddings\.",
        "embeddings.word.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?embeddings\.position_embeddings\.",
        "embeddings.position.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?embeddings\.token_type_embeddings\.",
        "embeddings.token_type.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?embeddings\.LayerNorm\.",
        "embeddings.norm.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.self\.query\.",
        "layers.$1.query.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.self\.key\.",
        "layers.$1.key.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.self\.value\.",
        "layers.$1.value.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "layers.$1.attn_out.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        "layers.$1.attn_norm.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.intermediate\.dense\.",
        "layers.$1.inter.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.output\.dense\.",
        "layers.$1.out.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.output\.LayerNorm\.",
        "layers.$1.out_norm.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.attn\.q\.",
        "layers.$1.query.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.attn\.k\.",
        "layers.$1.key.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.attn\.v\.",
        "layers.$1.value.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.attn\.o\.",
        "layers.$1.attn_out.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.layer\.(\d+)\.attention\.LayerNorm\.",
        "layers.$1.attn_norm.",
    ),
    (
        r"^(?:bert\.|roberta\.|mpnet\.)?encoder\.relative_attention_bias\.",
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
