//! The burn encoder against PyTorch + transformers on the same weights: all-MiniLM-L6-v2 (the
//! default SLM) and all-mpnet-base-v2 (the base-size one), fixtures from
//! scripts/make_parity_fixture.py.

mod common;

use burn::tensor::Device;
use freeal_bench::slm::classifier::ClassifierModel;
use freeal_bench::slm::device::CUBECL_PAD_MULTIPLE;
use freeal_bench::slm::tokenize::{Batch, TextTokenizer, pad_batch};
use serde::Deserialize;

#[derive(Deserialize)]
struct Row {
    text: String,
    ids: Vec<u32>,
    last_hidden_state: Vec<Vec<f32>>,
    mean_pooled: Vec<f32>,
}

#[derive(Deserialize)]
struct Fixture {
    rows: Vec<Row>,
}

fn fixture(file: &str) -> Fixture {
    let path = common::root().join("tests/fixtures").join(file);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_on(device: Device) {
    check_model_on(device, "all-MiniLM-L6-v2", "minilm_parity.json", 0);
}

/// Compares the fetched `model` (padding with `pad_id`) with the fixture `file`.
fn check_model_on(device: Device, model: &str, file: &str, pad_id: u32) {
    let dir = common::fetched_encoder_dir(model);
    let model = common::pretrained_classifier(&dir, &device);
    let tokenizer = TextTokenizer::from_file(&dir.join("tokenizer.json"), 128, pad_id).unwrap();
    let fixture = fixture(file);
    let texts: Vec<&str> = fixture.rows.iter().map(|r| r.text.as_str()).collect();
    let encoded = tokenizer.encode(&texts).unwrap();
    for (e, row) in encoded.iter().zip(&fixture.rows) {
        assert_eq!(e.ids, row.ids, "token ids of {:?}", row.text);
    }
    // One padded batch, so that the padding mask is exercised too; then the same batch padded
    // further, as on wgpu (lengths rounded up to a multiple), which must not change any state.
    let rows: Vec<usize> = (0..encoded.len()).collect();
    for padding in [tokenizer.padding(1), tokenizer.padding(CUBECL_PAD_MULTIPLE)] {
        let host = pad_batch(&encoded, &rows, padding);
        let worst = worst_difference(&model, &host, &device, &fixture);
        assert!(
            worst < 1e-4,
            "max abs difference {worst} exceeds 1e-4 (padded to {})",
            host.seq
        );
    }
}

/// Largest absolute difference between the model's hidden states and mean-pooled outputs for
/// `host` and the fixture's.
fn worst_difference(
    model: &ClassifierModel,
    host: &Batch,
    device: &Device,
    fixture: &Fixture,
) -> f32 {
    let batch = model.batch_to_device(host, device);
    let mut worst = common::states_difference(
        model.hidden_states(&batch),
        fixture.rows.iter().map(|r| &r.last_hidden_state),
    );
    let (pooled, _) = model.forward(&batch);
    let hidden = pooled.dims()[1];
    let pooled = pooled.into_data().try_into_vec::<f32>().unwrap();
    for (b, row) in fixture.rows.iter().enumerate() {
        for (h, want) in row.mean_pooled.iter().enumerate() {
            worst = worst.max((pooled[b * hidden + h] - want).abs());
        }
    }
    worst
}

#[test]
fn hidden_states_match_pytorch_on_cpu() {
    check_on(Device::flex());
}

// The CPU only: the tiny random MPNet of tests/encoder_mpnet.rs covers wgpu, and this
// 110M-parameter model on software Vulkan would cost CI minutes.
#[test]
fn mpnet_hidden_states_match_pytorch_on_cpu() {
    check_model_on(Device::flex(), "all-mpnet-base-v2", "mpnet_parity.json", 1);
}

// CI runs this on lavapipe (software Vulkan); on a GPU it checks the driver's shader compiler too.
#[test]
fn hidden_states_match_pytorch_on_wgpu() {
    check_on(common::wgpu_device());
}

#[cfg(feature = "tch")]
#[test]
fn hidden_states_match_pytorch_on_libtorch() {
    let (device, _) =
        freeal_bench::slm::device::select(freeal_bench::config::BackendChoice::Libtorch).unwrap();
    check_on(device);
}
