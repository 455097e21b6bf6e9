//! Loading the old checkpoint format (`pytorch_model.bin`, a torch pickle) through burn: a tiny
//! random BERT's hidden states match what PyTorch + transformers computed from the same file
//! (fixture from scripts/make_bin_fixture.py).

mod common;

use burn::tensor::Device;
use freeal_bench::slm::encoder::Encoder;
use freeal_bench::slm::model::read_config;
use freeal_bench::slm::weights::load_weights;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    rows: Vec<common::StateRow>,
}

#[test]
fn pytorch_bin_weights_give_the_reference_hidden_states() {
    let dir = common::root().join("tests/fixtures/tiny_bert_bin");
    assert!(
        !dir.join("model.safetensors").exists(),
        "the .bin path is the one under test"
    );
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let worst = common::worst_state_difference(&dir, &expected.rows, 0, &Device::flex());
    assert!(worst < 1e-5, "max abs difference {worst}");
}

#[test]
fn a_missing_tensor_is_named() {
    // The same checkpoint under a config with one more layer than it holds.
    let src = common::root().join("tests/fixtures/tiny_bert_bin");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        src.join("pytorch_model.bin"),
        dir.path().join("pytorch_model.bin"),
    )
    .unwrap();
    let config = std::fs::read_to_string(src.join("config.json"))
        .unwrap()
        .replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 3");
    std::fs::write(dir.path().join("config.json"), config).unwrap();
    let device = Device::flex();
    let config = read_config(dir.path()).unwrap();
    let mut encoder = Encoder::new(&config, None, &device);
    let err = load_weights(&mut encoder, dir.path())
        .unwrap_err()
        .to_string();
    assert!(err.contains("layers.2"), "{err}");
}
