//! Encoder + pooling + dropout + head (linear, or RoBERTa's dense-tanh one): the sequence
//! classifier FreeAL trains.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::tanh;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use super::encoder::Encoder;
use super::fused;
use super::tokenize::Batch;
use crate::config::{Head, Pooling};

/// The classification model.
#[derive(Module, Debug)]
pub struct ClassifierModel {
    encoder: Encoder,
    dropout: Dropout,
    /// The hidden layer of `Head::DenseTanh`.
    dense: Option<Linear>,
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
        head: Head,
        device: &Device,
    ) -> Self {
        Self {
            encoder,
            dropout: DropoutConfig::new(dropout).init(),
            dense: (head == Head::DenseTanh)
                .then(|| LinearConfig::new(hidden, hidden).init(device)),
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

    fn embed_tokens(&self, batch: &DeviceBatch) -> Tensor<3> {
        self.encoder
            .embed_tokens(batch.ids.clone(), batch.positions.clone())
    }

    /// Logits from what the head reads, on the last axis: [batch, labels] from pooled vectors,
    /// [batch, seq, labels] from every token's state.
    pub fn head<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        self.output(self.output_input(x))
    }

    /// What the output layer reads, before its dropout: `x` itself under the linear head, the
    /// dense layer's tanh under the dense one.
    fn output_input<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.dense {
            Some(dense) => tanh(dense.forward(fused::dropout(x, &self.dropout))),
            None => x,
        }
    }

    fn output<const D: usize>(&self, read: Tensor<D>) -> Tensor<D> {
        self.head.forward(fused::dropout(read, &self.dropout))
    }

    /// Pooled vectors and logits of a batch.
    pub fn forward(&self, batch: &DeviceBatch) -> (Tensor<2>, Tensor<2>) {
        let pooled = pool(self.hidden_states(batch), batch.pad.clone(), self.mean_pool);
        let logits = self.head(pooled.clone());
        (pooled, logits)
    }

    /// What the output layer reads for each row [batch, hidden], and the logits: the features
    /// of learning-to-reweight's closed form, which covers the output layer.
    pub fn output_inputs_logits(&self, batch: &DeviceBatch) -> (Tensor<2>, Tensor<2>) {
        let pooled = pool(self.hidden_states(batch), batch.pad.clone(), self.mean_pool);
        let read = self.output_input(pooled);
        let logits = self.output(read.clone());
        (read, logits)
    }

    /// Token classification: pooled vectors [batch, hidden] and the head applied to every
    /// token's last hidden state, [batch, seq, labels].
    pub fn token_logits(&self, batch: &DeviceBatch) -> (Tensor<2>, Tensor<3>) {
        let states = self.hidden_states(batch);
        let logits = self.head(states.clone());
        (pool(states, batch.pad.clone(), self.mean_pool), logits)
    }

    /// Token classification with what the output layer reads at every token
    /// [batch, seq, hidden], and the logits [batch, seq, labels].
    pub fn token_output_inputs_logits(&self, batch: &DeviceBatch) -> (Tensor<3>, Tensor<3>) {
        let read = self.output_input(self.hidden_states(batch));
        let logits = self.output(read.clone());
        (read, logits)
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

#[cfg(test)]
mod tests {
    use burn::module::Param;

    use super::*;
    use crate::slm::encoder::EncoderConfig;

    fn model(head: Head) -> ClassifierModel {
        let config: EncoderConfig = serde_json::from_str(
            r#"{"model_type": "bert", "vocab_size": 8, "hidden_size": 2, "num_hidden_layers": 1,
                "num_attention_heads": 1, "intermediate_size": 4, "max_position_embeddings": 8}"#,
        )
        .unwrap();
        let device = Device::flex();
        let mut model = ClassifierModel::new(
            Encoder::new(&config, None, &device),
            2,
            2,
            0.0,
            Pooling::Mean,
            head,
            &device,
        );
        let matrix = |v: [f32; 4]| {
            Param::from_tensor(Tensor::<2>::from_data(
                TensorData::new(v.to_vec(), [2, 2]),
                &device,
            ))
        };
        let vector = |v: [f32; 2]| Some(Param::from_tensor(Tensor::<1>::from_data(v, &device)));
        // burn stores a linear layer's weight as [inputs, outputs].
        model.head.weight = matrix([1.0, -1.0, 2.0, 0.5]);
        model.head.bias = vector([0.1, -0.2]);
        if let Some(dense) = &mut model.dense {
            dense.weight = matrix([0.5, -1.0, 1.5, 2.0]);
            dense.bias = vector([0.0, 0.3]);
        }
        model
    }

    fn logits(model: &ClassifierModel, rows: &[[f32; 2]]) -> Vec<f32> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let x = Tensor::<2>::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex());
        model.head(x).into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn dense_tanh_head_matches_hand_values_and_mixes_nonlinearly() {
        let (a, b) = ([1.0f32, 2.0], [-0.5f32, 0.25]);
        let out = |h: [f32; 2]| [h[0] + 2.0 * h[1] + 0.1, -h[0] + 0.5 * h[1] - 0.2];
        let dense = |x: [f32; 2]| {
            [
                (0.5 * x[0] + 1.5 * x[1]).tanh(),
                (-x[0] + 2.0 * x[1] + 0.3).tanh(),
            ]
        };
        let close = |got: &[f32], want: &[f32]| {
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5)
        };

        let linear = model(Head::Linear);
        let got = logits(&linear, &[a, b]);
        assert!(close(&got, &[out(a), out(b)].concat()), "{got:?}");
        let tanh_head = model(Head::DenseTanh);
        let got = logits(&tanh_head, &[a, b]);
        assert!(
            close(&got, &[out(dense(a)), out(dense(b))].concat()),
            "{got:?}"
        );

        // Embedding mixup through a linear head mixes the two logits; through the dense-tanh
        // head it does not.
        let lambda = 0.7;
        let mixed = [
            lambda * a[0] + (1.0 - lambda) * b[0],
            lambda * a[1] + (1.0 - lambda) * b[1],
        ];
        let mix_logits = |m: &ClassifierModel| {
            let both = logits(m, &[a, b]);
            [
                lambda * both[0] + (1.0 - lambda) * both[2],
                lambda * both[1] + (1.0 - lambda) * both[3],
            ]
        };
        assert!(close(&logits(&linear, &[mixed]), &mix_logits(&linear)));
        assert!(!close(
            &logits(&tanh_head, &[mixed]),
            &mix_logits(&tanh_head)
        ));
    }

    #[test]
    fn the_output_layer_reads_the_pooled_vector_or_the_dense_layers_tanh() {
        let rows = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
        let close = |got: &[f32], want: &[f32]| {
            got.len() == want.len() && got.iter().zip(want).all(|(g, w)| (g - w).abs() < 1e-5)
        };
        let batch = Batch {
            ids: vec![1, 4, 2, 3, 5, 0],
            lengths: vec![3, 2],
            seq: 3,
        };
        for head in [Head::Linear, Head::DenseTanh] {
            let m = model(head);
            let device = m.batch_to_device(&batch, &Device::flex());
            let (pooled, logits) = m.forward(&device);
            let (read, same) = m.output_inputs_logits(&device);
            let (pooled, read) = (rows(pooled), rows(read));
            assert!(close(&rows(same), &rows(logits.clone())), "{head:?}");
            // Learning-to-reweight's features: the output layer's input, from which its
            // weights alone give the logits.
            let out = |h: &[f32]| [h[0] + 2.0 * h[1] + 0.1, -h[0] + 0.5 * h[1] - 0.2];
            let want: Vec<f32> = read.chunks(2).flat_map(out).collect();
            assert!(close(&rows(logits), &want), "{head:?}");
            let expected: Vec<f32> = match head {
                Head::Linear => pooled.clone(),
                Head::DenseTanh => pooled
                    .chunks(2)
                    .flat_map(|x| {
                        [
                            (0.5 * x[0] + 1.5 * x[1]).tanh(),
                            (-x[0] + 2.0 * x[1] + 0.3).tanh(),
                        ]
                    })
                    .collect(),
            };
            assert!(close(&read, &expected), "{head:?}: {read:?}");
        }
    }
}
