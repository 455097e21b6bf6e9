//! A tiny randomly initialised encoder learns a toy task, on the CPU backend and on wgpu
//! (Mesa's software Vulkan in CI), with seeded, reproducible results.

mod common;

use std::sync::Mutex;

use burn::tensor::Device;
use freeal_bench::config::{GradClipScope, Head, Pooling, RandomInit, SlmSpec};
use freeal_bench::metrics::argmax;
use freeal_bench::progress::Progress;
use freeal_bench::slm::Slm;
use freeal_bench::slm::model::weighted_cross_entropy;

fn spec() -> SlmSpec {
    SlmSpec {
        model: common::minilm_dir().to_string_lossy().into_owned(),
        random_init: Some(RandomInit {
            layers: 1,
            hidden: 32,
            heads: 2,
            intermediate: 64,
        }),
        max_len: 16,
        batch_size: 8,
        eval_batch_size: 32,
        epochs: 12,
        lr: 3e-3,
        weight_decay: 0.0,
        warmup_ratio: 0.0,
        grad_clip: 0.0,
        grad_clip_scope: GradClipScope::Tensor,
        dropout: 0.0,
        attention_dropout: None,
        pooling: Pooling::Mean,
        head: Head::Linear,
    }
}

/// Label 1 iff the text mentions "good": learnable from one token.
fn toy() -> (Vec<String>, Vec<usize>) {
    let words = [
        "movie", "plot", "actor", "scene", "music", "story", "film", "ending",
    ];
    let mut texts = Vec::new();
    let mut labels = Vec::new();
    for (i, a) in words.iter().enumerate() {
        for (j, b) in words.iter().enumerate() {
            let positive = (i + j) % 2 == 0;
            let mood = if positive { "good" } else { "bad" };
            texts.push(format!("the {a} and {b} were {mood}"));
            labels.push(usize::from(positive));
        }
    }
    (texts, labels)
}

fn train_and_score(device: &Device, seed: u64) -> (f64, Vec<f32>) {
    train_with(&spec(), device, seed)
}

/// burn seeds its random draws per device for the whole process, so two trainings on parallel
/// test threads would interleave them: one training at a time keeps "same seed, same numbers".
static ONE_TRAINING: Mutex<()> = Mutex::new(());

fn train_with(spec: &SlmSpec, device: &Device, seed: u64) -> (f64, Vec<f32>) {
    let _one = ONE_TRAINING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let (texts, labels) = toy();
    let mut slm = Slm::load(spec, std::path::Path::new("/nonexistent"), 2, device, seed).unwrap();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let encoded = slm.tokenize(&refs).unwrap();
    let targets: Vec<Vec<f32>> = labels
        .iter()
        .map(|&l| {
            if l == 1 {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        })
        .collect();
    let progress = Progress::hidden();
    slm.fit(&encoded, &targets, &vec![1.0; texts.len()], &progress)
        .unwrap();
    let probs = slm.infer(&encoded, &progress).unwrap().probs;
    let correct = probs
        .iter()
        .zip(&labels)
        .filter(|(p, l)| argmax(p) == **l)
        .count();
    (correct as f64 / labels.len() as f64, probs[0].clone())
}

#[test]
fn tiny_encoder_fits_toy_task_on_cpu_reproducibly() {
    let device = Device::flex();
    let (accuracy, first) = train_and_score(&device, 5);
    assert!(accuracy >= 0.95, "training accuracy {accuracy}");
    let (again, first_again) = train_and_score(&device, 5);
    assert_eq!(
        (accuracy, first),
        (again, first_again),
        "same seed, same numbers"
    );
}

#[test]
fn dropout_follows_the_seed() {
    let device = Device::flex();
    let spec = SlmSpec {
        dropout: 0.1,
        attention_dropout: None,
        ..spec()
    };
    let run = train_with(&spec, &device, 5);
    assert_eq!(train_with(&spec, &device, 5), run, "same seed, same masks");
    assert_ne!(
        train_with(&spec, &device, 6).1,
        run.1,
        "another seed (other masks and head), another run"
    );
    // Dropout is on: without it the same seed trains to other numbers.
    assert_ne!(train_with(&self::spec(), &device, 5).1, run.1);
}

#[test]
fn the_dense_tanh_head_trains_reproducibly_to_other_numbers() {
    let device = Device::flex();
    let spec = SlmSpec {
        head: Head::DenseTanh,
        ..spec()
    };
    let (accuracy, first) = train_with(&spec, &device, 5);
    assert!(accuracy >= 0.95, "training accuracy {accuracy}");
    assert_eq!(train_with(&spec, &device, 5), (accuracy, first.clone()));
    assert_ne!(train_with(&self::spec(), &device, 5).1, first);
}

#[test]
fn global_clipping_acts_only_above_the_joint_norm() {
    let device = Device::flex();
    let clipped = |grad_clip, grad_clip_scope| {
        let spec = SlmSpec {
            grad_clip,
            grad_clip_scope,
            ..spec()
        };
        train_with(&spec, &device, 5)
    };
    let unclipped = clipped(0.0, GradClipScope::Global);
    // A threshold no gradient of this toy reaches: training is bit-identical to no clipping.
    assert_eq!(clipped(1e6, GradClipScope::Global), unclipped);
    // A threshold below every step's norm: every update is scaled, so the run differs.
    let tight = clipped(1e-3, GradClipScope::Global);
    assert_ne!(tight.1, unclipped.1);
    // Per-tensor at the same threshold bounds each of ~40 tensors separately: another run.
    assert_ne!(clipped(1e-3, GradClipScope::Tensor).1, tight.1);
}

#[test]
fn tiny_encoder_fits_toy_task_on_wgpu() {
    let (accuracy, _) = train_and_score(&common::wgpu_device(), 5);
    assert!(accuracy >= 0.95, "training accuracy on wgpu {accuracy}");
}

#[cfg(feature = "tch")]
#[test]
fn tiny_encoder_fits_toy_task_on_libtorch_reproducibly() {
    let (device, _) =
        freeal_bench::slm::device::select(freeal_bench::config::BackendChoice::Libtorch).unwrap();
    let (accuracy, first) = train_and_score(&device, 5);
    assert!(accuracy >= 0.95, "training accuracy on libtorch {accuracy}");
    assert_eq!(
        (accuracy, first),
        train_and_score(&device, 5),
        "same seed, same numbers"
    );
}

#[test]
fn training_restored_from_a_snapshot_continues_as_if_never_stopped() {
    let _one = ONE_TRAINING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Everything that carries state across epochs: dropout masks, the warm-up/decay schedule,
    // weight decay and AdamW's moments, clipping, the shuffles.
    let spec = SlmSpec {
        dropout: 0.1,
        warmup_ratio: 0.2,
        weight_decay: 0.01,
        grad_clip: 0.5,
        epochs: 5,
        ..spec()
    };
    let device = Device::flex();
    let (texts, labels) = toy();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let targets: Vec<Vec<f32>> = labels
        .iter()
        .map(|&l| vec![(1 - l) as f32, l as f32])
        .collect();
    let weights = vec![1.0; texts.len()];
    let rows: Vec<usize> = (0..texts.len()).collect();
    let progress = Progress::hidden();
    let load = || Slm::load(&spec, std::path::Path::new("/nonexistent"), 2, &device, 9).unwrap();
    let epoch = |slm: &mut Slm, trainer: &mut _, encoded: &[_]| {
        slm.train_epoch(trainer, encoded, &rows, "epoch", &progress, |s| {
            Ok(weighted_cross_entropy(s, &targets, &weights))
        })
        .unwrap();
    };
    let dir = tempfile::tempdir().unwrap();
    let (model, optim) = (dir.path().join("m.bpk"), dir.path().join("o.bpk"));

    let mut unbroken = load();
    let encoded = unbroken.tokenize(&refs).unwrap();
    let mut trainer = unbroken.trainer(unbroken.steps_per_epoch(rows.len()) * 5);
    for _ in 0..2 {
        epoch(&mut unbroken, &mut trainer, &encoded);
    }
    assert!(unbroken.can_snapshot());
    let state = unbroken.save_training(&trainer, &model, &optim).unwrap();
    let at_save = unbroken.infer(&encoded, &progress).unwrap().probs;
    for _ in 2..5 {
        epoch(&mut unbroken, &mut trainer, &encoded);
    }
    let want = unbroken.infer(&encoded, &progress).unwrap().probs;

    let mut resumed = load();
    let fresh = resumed.trainer(resumed.steps_per_epoch(rows.len()) * 5);
    let mut trainer = resumed
        .restore_training(fresh, &state, &model, &optim)
        .unwrap();
    assert_eq!(resumed.infer(&encoded, &progress).unwrap().probs, at_save);
    for _ in 2..5 {
        epoch(&mut resumed, &mut trainer, &encoded);
    }
    assert_eq!(resumed.infer(&encoded, &progress).unwrap().probs, want);
}
