//! Encoder + pooling + dropout + linear head: the sequence classifier FreeAL trains.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::encoder::Encoder;
use super::fused;
use super::tokenize::Batch;
use crate::config::Pooling;

/// The classification model.
#[derive(Module, Debug)]
pub struct ClassifierModel {
    encoder: Encoder,
    dropout: Dropout,
    head: Linear,
    mean_pool: bool,
}

/// A batch on the device.
#[derive(Debug, Clone)]
pub struct DeviceBatch {
    /// Token ids [batch, seq].
    pub ids: Tensor<2, Int>,
    /// Position ids [batch, seq].
    pub positions: Tensor<2, Int>,
    /// True at padding [batch, seq].
    pub pad: Tensor<2, Bool>,
}

impl ClassifierModel {
    /// Wraps an encoder with a fresh head of `num_labels` outputs.
    pub fn new(
        encoder: Encoder,
        hidden: usize,
        num_labels: usize,
        dropout: f64,
        pooling: Pooling,
        device: &Device,
    ) -> Self {
        Self {
            encoder,
            dropout: DropoutConfig::new(dropout).init(),
            head: LinearConfig::new(hidden, num_labels).init(device),
            mean_pool: pooling == Pooling::Mean,
        }
    }

    /// The encoder (for parity checks and embeddings).
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// Moves a padded host batch to `device`.
    pub fn batch_to_device(&self, batch: &Batch, device: &Device) -> DeviceBatch {
        let rows = batch.lengths.len();
        let shape = [rows, batch.seq];
        let ids = Tensor::<2, Int>::from_data(TensorData::new(batch.ids.clone(), shape), device);
        let positions = Tensor::<2, Int>::from_data(
            TensorData::new(self.encoder.position_ids(&batch.lengths, batch.seq), shape),
            device,
        );
        let mut pad = Vec::with_capacity(rows * batch.seq);
        for &len in &batch.lengths {
            pad.extend((0..batch.seq).map(|i| i >= len));
        }
        let pad = Tensor::<2, Bool>::from_data(TensorData::new(pad, shape), device);
        DeviceBatch {
            ids,
            positions,
            pad,
        }
    }

    /// Token embeddings (the mixup point) of a batch.
    pub fn embed_tokens(&self, batch: &DeviceBatch) -> Tensor<3> {
        self.encoder
            .embed_tokens(batch.ids.clone(), batch.positions.clone())
    }

    /// Pooled sentence vectors [batch, hidden] from embedded tokens.
    pub fn pool_embedded(&self, embedded: Tensor<3>, pad: Tensor<2, Bool>) -> Tensor<2> {
        let states = self.encoder.encode(embedded, pad.clone());
        pool(states, pad, self.mean_pool)
    }

    /// Logits [batch, labels] from pooled vectors.
    pub fn head(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.head.forward(fused::dropout(pooled, &self.dropout))
    }

    /// Pooled vectors and logits of a batch.
    pub fn forward(&self, batch: &DeviceBatch) -> (Tensor<2>, Tensor<2>) {
        let pooled = self.pool_embedded(self.embed_tokens(batch), batch.pad.clone());
        let logits = self.head(pooled.clone());
        (pooled, logits)
    }

    /// Token classification: pooled vectors [batch, hidden] and the head applied to every
    /// token's last hidden state, [batch, seq, labels].
    pub fn token_logits(&self, batch: &DeviceBatch) -> (Tensor<2>, Tensor<3>) {
        let (states, logits) = self.token_states_logits(batch);
        (pool(states, batch.pad.clone(), self.mean_pool), logits)
    }

    /// Token classification with what the head reads: last hidden states [batch, seq, hidden]
    /// and the head on every token, [batch, seq, labels].
    pub fn token_states_logits(&self, batch: &DeviceBatch) -> (Tensor<3>, Tensor<3>) {
        let states = self.hidden_states(batch);
        let logits = self
            .head
            .forward(fused::dropout(states.clone(), &self.dropout));
        (states, logits)
    }

    /// Last hidden states [batch, seq, hidden].
    pub fn hidden_states(&self, batch: &DeviceBatch) -> Tensor<3> {
        self.encoder
            .encode(self.embed_tokens(batch), batch.pad.clone())
    }
}

/// CLS or masked-mean pooling.
pub fn pool(states: Tensor<3>, pad: Tensor<2, Bool>, mean: bool) -> Tensor<2> {
    let [batch, seq, hidden] = states.dims();
    if !mean {
        return states
            .slice([0..batch, 0..1, 0..hidden])
            .reshape([batch, hidden]);
    }
    let keep = pad.bool_not().float().reshape([batch, seq, 1]);
    let summed = (states * keep.clone()).sum_dim(1).reshape([batch, hidden]);
    let counts = keep.sum_dim(1).reshape([batch, 1]).clamp_min(1.0);
    summed / counts
}
