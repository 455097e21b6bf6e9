//! BERT-family encoder (BERT, RoBERTa, MiniLM, MPNet) on burn, laid out like Hugging Face's so
//! that dropout sits exactly where the original puts it.

use burn::module::Module;
use burn::nn::{
    Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear,
    LinearConfig,
};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::fused;

/// The fields of a Hugging Face `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EncoderConfig {
    /// `bert`, `roberta` (`xlm-roberta` and `camembert` are RoBERTa-shaped) or `mpnet`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Feed-forward size.
    pub intermediate_size: usize,
    /// Activation (`gelu` is the erf form).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Dropout on hidden states.
    #[serde(default = "default_dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Position embeddings.
    pub max_position_embeddings: usize,
    /// Token-type embeddings.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id (RoBERTa offsets positions by it).
    #[serde(default)]
    pub pad_token_id: usize,
    /// Buckets of MPNet's relative-position attention bias (unused by BERT and RoBERTa).
    #[serde(default = "default_buckets")]
    pub relative_attention_num_buckets: usize,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_dropout() -> f64 {
    0.1
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
/// transformers' `MPNetConfig` default.
fn default_buckets() -> usize {
    32
}

impl EncoderConfig {
    /// Whether positions are offset by `pad_token_id + 1` (RoBERTa family and MPNet).
    pub fn roberta_positions(&self) -> bool {
        matches!(
            self.model_type.as_str(),
            "roberta" | "xlm-roberta" | "camembert" | "mpnet"
        )
    }

    /// Whether attention scores get MPNet's learned relative-position bias; MPNet also has no
    /// token-type embeddings.
    pub fn relative_attention(&self) -> bool {
        self.model_type == "mpnet"
    }

    /// Checks the architecture is one this encoder implements.
    pub fn check(&self) -> Result<(), String> {
        if !matches!(
            self.model_type.as_str(),
            "bert" | "roberta" | "xlm-roberta" | "camembert" | "mpnet"
        ) {
            return Err(format!(
                "model_type `{}` is not supported (supported: bert, roberta, xlm-roberta, \
                 camembert, mpnet)",
                self.model_type
            ));
        }
        // transformers buckets offsets into 32 whatever the config says (its
        // compute_position_bias never passes the config's count on), so another count would
        // leave it unclear which model the checkpoint's numbers come from.
        if self.relative_attention() && self.relative_attention_num_buckets != 32 {
            return Err(format!(
                "relative_attention_num_buckets must be 32 for mpnet (as transformers computes \
                 it), not {}",
                self.relative_attention_num_buckets
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (only the erf `gelu`)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err("num_attention_heads must divide hidden_size".into());
        }
        Ok(())
    }
}

/// Word + position (+ token-type, absent in MPNet) embeddings, layer norm, dropout.
#[derive(Module, Debug)]
pub struct Embeddings {
    word: Embedding,
    position: Embedding,
    token_type: Option<Embedding>,
    norm: LayerNorm,
    dropout: Dropout,
    /// The layer norms' epsilon (burn's `LayerNorm` keeps its own private).
    eps: f64,
}

/// One post-norm transformer layer, as in BERT.
#[derive(Module, Debug)]
pub struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
    attn_dropout: Dropout,
    hidden_dropout: Dropout,
    heads: usize,
    /// The layer norms' epsilon.
    eps: f64,
}

impl Layer {
    fn new(
        config: &EncoderConfig,
        hidden_dropout: f64,
        attn_dropout: f64,
        device: &Device,
    ) -> Self {
        let h = config.hidden_size;
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let norm = || {
            LayerNormConfig::new(h)
                .with_epsilon(config.layer_norm_eps)
                .init(device)
        };
        Self {
            query: linear(h, h),
            key: linear(h, h),
            value: linear(h, h),
            attn_out: linear(h, h),
            attn_norm: norm(),
            inter: linear(h, config.intermediate_size),
            out: linear(config.intermediate_size, h),
            out_norm: norm(),
            attn_dropout: DropoutConfig::new(attn_dropout).init(),
            hidden_dropout: DropoutConfig::new(hidden_dropout).init(),
            heads: config.num_attention_heads,
            eps: config.layer_norm_eps,
        }
    }

    /// `x`: [batch, seq, hidden]; `pad`: [batch, seq], true at padding; `bias`: MPNet's
    /// position bias [batch, heads, seq, seq], added to the scaled scores.
    fn forward(&self, x: Tensor<3>, pad: Tensor<2, Bool>, bias: Option<Tensor<4>>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let head_dim = hidden / self.heads;
        let split = |t: Tensor<3>| {
            t.reshape([batch, seq, self.heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = split(fused::linear(x.clone(), &self.query));
        let k = split(fused::linear(x.clone(), &self.key));
        let v = split(fused::linear(x.clone(), &self.value));
        let mut scores = fused::matmul(q, k.swap_dims(2, 3));
        if let Some(bias) = bias {
            // attention_probs scales by 1/sqrt(head_dim) as it masks; scaling the bias up by
            // the same factor adds it after the scaling, as transformers does.
            scores = scores + bias * (head_dim as f64).sqrt();
        }
        let probs = fused::dropout(
            fused::attention_probs(scores, pad, head_dim),
            &self.attn_dropout,
        );
        let context = fused::matmul(probs, v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden]);
        let attended = fused::dropout(fused::linear(context, &self.attn_out), &self.hidden_dropout);
        let x = fused::layer_norm(attended + x, &self.attn_norm, self.eps);
        let inner = fused::gelu(fused::linear(x.clone(), &self.inter));
        let out = fused::dropout(fused::linear(inner, &self.out), &self.hidden_dropout);
        fused::layer_norm(out + x, &self.out_norm, self.eps)
    }
}

/// Dropout rates while training: on hidden states (embeddings, sublayer outputs) and on
/// attention probabilities, as Hugging Face's `hidden_dropout_prob` and
/// `attention_probs_dropout_prob`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropouts {
    /// Hidden-state dropout.
    pub hidden: f64,
    /// Attention-probability dropout.
    pub attention: f64,
}

/// The encoder: embeddings and a stack of layers; outputs the last hidden states.
#[derive(Module, Debug)]
pub struct Encoder {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    /// MPNet's relative-position bias: one value per bucket and head, shared by the layers.
    relative_attention_bias: Option<Embedding>,
    roberta_positions: bool,
    pad_token_id: usize,
}

impl Encoder {
    /// A randomly initialised encoder of the given shape; `dropout` overrides the config's
    /// hidden and attention dropout.
    pub fn new(config: &EncoderConfig, dropout: Option<Dropouts>, device: &Device) -> Self {
        let hidden_dropout = dropout.map_or(config.hidden_dropout_prob, |d| d.hidden);
        let attn_dropout = dropout.map_or(config.attention_probs_dropout_prob, |d| d.attention);
        let embedding = |n| EmbeddingConfig::new(n, config.hidden_size).init(device);
        Self {
            embeddings: Embeddings {
                word: embedding(config.vocab_size),
                position: embedding(config.max_position_embeddings),
                token_type: (!config.relative_attention())
                    .then(|| embedding(config.type_vocab_size.max(1))),
                norm: LayerNormConfig::new(config.hidden_size)
                    .with_epsilon(config.layer_norm_eps)
                    .init(device),
                dropout: DropoutConfig::new(hidden_dropout).init(),
                eps: config.layer_norm_eps,
            },
            layers: (0..config.num_hidden_layers)
                .map(|_| Layer::new(config, hidden_dropout, attn_dropout, device))
                .collect(),
            relative_attention_bias: config.relative_attention().then(|| {
                EmbeddingConfig::new(
                    config.relative_attention_num_buckets,
                    config.num_attention_heads,
                )
                .init(device)
            }),
            roberta_positions: config.roberta_positions(),
            pad_token_id: config.pad_token_id,
        }
    }

    /// Position ids for right-padded rows of the given lengths (RoBERTa offsets them past pad).
    pub fn position_ids(&self, lengths: &[usize], seq: usize) -> Vec<i64> {
        let mut ids = Vec::with_capacity(lengths.len() * seq);
        for &len in lengths {
            for i in 0..seq {
                let id = if !self.roberta_positions {
                    i
                } else if i < len {
                    self.pad_token_id + 1 + i
                } else {
                    self.pad_token_id
                };
                ids.push(id as i64);
            }
        }
        ids
    }

    /// Embedding-layer output: [batch, seq, hidden] (the point where mixup interpolates).
    pub fn embed_tokens(&self, ids: Tensor<2, Int>, positions: Tensor<2, Int>) -> Tensor<3> {
        let e = &self.embeddings;
        let types = e.token_type.as_ref().map(|t| t.forward(ids.zeros_like()));
        let mut x = e.word.forward(ids) + e.position.forward(positions);
        if let Some(types) = types {
            x = x + types;
        }
        fused::dropout(fused::layer_norm(x, &e.norm, e.eps), &e.dropout)
    }

    /// Runs the layers over embedded tokens.
    pub fn encode(&self, mut x: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<3> {
        let bias = self.position_bias(&x);
        for layer in &self.layers {
            x = layer.forward(x, pad.clone(), bias.clone());
        }
        x
    }

    /// MPNet's attention bias [batch, heads, seq, seq] for `x` [batch, seq, hidden]: the
    /// learned value of each (query, key) offset's bucket. Offsets count padding positions,
    /// as transformers' `compute_position_bias` does; padded keys are masked anyway.
    fn position_bias(&self, x: &Tensor<3>) -> Option<Tensor<4>> {
        let table = self.relative_attention_bias.as_ref()?;
        let [batch, seq, _] = x.dims();
        let [buckets, heads] = table.weight.dims();
        let ids: Vec<i64> = (0..seq)
            .flat_map(|query| {
                (0..seq).map(move |key| {
                    relative_position_bucket(key as i64 - query as i64, buckets, MAX_DISTANCE)
                        as i64
                })
            })
            .collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [seq, seq]), &x.device());
        Some(
            table
                .forward(ids)
                .permute([2, 0, 1])
                .reshape([1, heads, seq, seq])
                .expand([batch, heads, seq, seq]),
        )
    }
}

/// The offset at which MPNet's buckets stop growing (transformers' `max_distance`).
const MAX_DISTANCE: usize = 128;

/// The bucket of a key's offset from its query (`key - query`), as transformers'
/// `MPNetEncoder.relative_position_bucket` computes it: keys after the query take the upper
/// half of the buckets; within a half, offsets below a quarter of the buckets have one bucket
/// each and larger ones share log-spaced buckets up to `max_distance`. The logarithm is taken
/// in f32, as torch does, so that offsets on a bucket boundary fall the same way.
pub fn relative_position_bucket(offset: i64, buckets: usize, max_distance: usize) -> usize {
    let half = buckets / 2;
    let base = if offset > 0 { half } else { 0 };
    let n = offset.unsigned_abs() as usize;
    let exact = half / 2;
    if n < exact {
        return base + n;
    }
    let ratio = (n as f32 / exact as f32).ln() / ((max_distance as f64 / exact as f64).ln() as f32);
    let far = exact + (ratio * (half - exact) as f32) as usize;
    base + far.min(half - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_config() -> EncoderConfig {
        serde_json::from_str(
            r#"{"model_type": "bert", "vocab_size": 8, "hidden_size": 4, "num_hidden_layers": 2,
                "num_attention_heads": 2, "intermediate_size": 8, "max_position_embeddings": 8,
                "hidden_dropout_prob": 0.2, "attention_probs_dropout_prob": 0.05}"#,
        )
        .unwrap()
    }

    fn rates(encoder: &Encoder) -> Vec<(f64, f64)> {
        encoder
            .layers
            .iter()
            .map(|l| (l.hidden_dropout.prob, l.attn_dropout.prob))
            .collect()
    }

    #[test]
    fn relative_position_buckets_follow_the_formula() {
        // 32 buckets, 16 a side, 8 exact; beyond 8 the bucket is 8 + floor(8 log(n/8) / log 16).
        let cases = [
            (0, 0),
            (-1, 1),
            (1, 17),
            (-7, 7),
            (7, 23),
            (-8, 8),
            (-15, 9),
            (-23, 11),
            (-100, 15),
            (-128, 15),
            (-1000, 15),
            (1000, 31),
        ];
        for (offset, bucket) in cases {
            assert_eq!(
                relative_position_bucket(offset, 32, MAX_DISTANCE),
                bucket,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn mpnet_has_a_position_bias_and_no_token_types() {
        let device = Device::flex();
        let mut config = tiny_config();
        let bert = Encoder::new(&config, None, &device);
        assert!(bert.relative_attention_bias.is_none() && bert.embeddings.token_type.is_some());
        config.model_type = "mpnet".into();
        assert_eq!(config.check(), Ok(()));
        let mpnet = Encoder::new(&config, None, &device);
        assert_eq!(
            mpnet
                .relative_attention_bias
                .as_ref()
                .map(|b| b.weight.dims()),
            Some([32, 2])
        );
        assert!(mpnet.embeddings.token_type.is_none());
        config.relative_attention_num_buckets = 64;
        assert!(config.check().unwrap_err().contains("must be 32"));
    }

    #[test]
    fn dropout_rates_come_from_the_override_or_the_config() {
        let device = Device::flex();
        let config = tiny_config();
        let own = Encoder::new(&config, None, &device);
        assert_eq!(own.embeddings.dropout.prob, 0.2);
        assert_eq!(rates(&own), vec![(0.2, 0.05); 2]);
        let split = Dropouts {
            hidden: 0.3,
            attention: 0.1,
        };
        let overridden = Encoder::new(&config, Some(split), &device);
        assert_eq!(overridden.embeddings.dropout.prob, 0.3);
        assert_eq!(rates(&overridden), vec![(0.3, 0.1); 2]);
    }
}
