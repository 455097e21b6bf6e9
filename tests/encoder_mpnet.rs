//! MPNet through burn: a tiny random MPNet's hidden states match what PyTorch + transformers
//! computed from the same checkpoint, over sequences long enough to reach the relative-position
//! bias's log-spaced buckets, and the buckets themselves match transformers' for every offset
//! in -300..300 (fixture from scripts/make_mpnet_fixture.py).

mod common;

use burn::tensor::Device;
use freeal_bench::slm::encoder::relative_position_bucket;
use serde::Deserialize;

#[derive(Deserialize)]
struct Expected {
    rows: Vec<common::StateRow>,
    bucket_offsets: Vec<i64>,
    buckets: Vec<usize>,
}

fn fixture_dir() -> std::path::PathBuf {
    common::root().join("tests/fixtures/tiny_mpnet")
}

fn expected() -> Expected {
    serde_json::from_slice(&std::fs::read(fixture_dir().join("expected.json")).unwrap()).unwrap()
}

fn check_on(device: Device) {
    // MPNet pads with id 1; the second row is padded to the first's length.
    let worst = common::worst_state_difference(&fixture_dir(), &expected().rows, 1, &device);
    assert!(worst < 1e-5, "max abs difference {worst}");
}

#[test]
fn relative_position_buckets_match_transformers() {
    let expected = expected();
    assert_eq!(expected.bucket_offsets.len(), expected.buckets.len());
    for (&offset, &want) in expected.bucket_offsets.iter().zip(&expected.buckets) {
        assert_eq!(
            relative_position_bucket(offset, 32, 128),
            want,
            "offset {offset}"
        );
    }
}

#[test]
fn mpnet_hidden_states_match_pytorch_on_cpu() {
    check_on(Device::flex());
}

#[test]
fn mpnet_hidden_states_match_pytorch_on_wgpu() {
    check_on(common::wgpu_device());
}
