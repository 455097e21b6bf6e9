//! Training and inference throughput of the default encoder on the CPU backend (burn's own ops
//! without the fused kernels with `FREEAL_BENCH_BACKEND=cpu_unfused`, wgpu with
//! `FREEAL_BENCH_BACKEND=wgpu`, burn's ndarray backend with `FREEAL_BENCH_BACKEND=ndarray` and
//! `--features ndarray`, libtorch with `FREEAL_BENCH_BACKEND=libtorch` and `--features tch`):
//! examples/s and tokens/s for batch 32 at max_len 64 and 128.
//! Every text is exactly max_len tokens, as in scripts/bench_slm_torch.py, so both sides do the
//! same work.
//!
//!   cargo bench --bench slm_throughput            (scripts/bench_slm.sh runs PyTorch beside it)

use std::path::PathBuf;
use std::time::Instant;

use freeal_bench::config::{BackendChoice, GradClipScope, Head, Pooling, SlmSpec};
use freeal_bench::progress::Progress;
use freeal_bench::slm::Slm;
use freeal_bench::slm::model::default_models_dir;
use freeal_bench::slm::tokenize::Encoded;

const BATCH: usize = 32;
const WARMUP_STEPS: usize = 2;

/// Timed training steps: `FREEAL_BENCH_TRAIN_STEPS`, default 6 (a GPU finishes 6 steps in a
/// fraction of a second, so timings there want more); scripts/bench_slm_torch.py reads the same.
fn train_steps() -> usize {
    std::env::var("FREEAL_BENCH_TRAIN_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(6)
}

fn spec(max_len: usize) -> SlmSpec {
    SlmSpec {
        model: "all-MiniLM-L6-v2".into(),
        random_init: None,
        max_len,
        batch_size: BATCH,
        eval_batch_size: BATCH,
        epochs: 1,
        lr: 3e-5,
        weight_decay: 0.01,
        warmup_ratio: 0.0,
        grad_clip: 1.0,
        // As scripts/bench_slm_torch.py clips (clip_grad_norm_).
        grad_clip_scope: GradClipScope::Global,
        dropout: 0.1,
        attention_dropout: None,
        pooling: Pooling::Mean,
        head: Head::Linear,
    }
}

/// `n` synthetic sequences of exactly `len` ids: [CLS] + words + [SEP].
fn sequences(n: usize, len: usize) -> Vec<Encoded> {
    (0..n)
        .map(|i| {
            let mut ids = vec![101u32];
            ids.extend((0..len - 2).map(|j| 2000 + ((i * 31 + j * 7) % 20000) as u32));
            ids.push(102);
            Encoded { ids }
        })
        .collect()
}

/// One-hot rows alternating between the two labels.
fn alternating_targets(n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        })
        .collect()
}

fn main() {
    // As the binary does: without it every step pays page faults for freed tensor buffers.
    freeal_bench::slm::allocator::keep_freed_memory();
    let (device, name) = match std::env::var("FREEAL_BENCH_BACKEND").as_deref() {
        // burn 0.22 deprecates ndarray in favour of flex: measured here to show that choice.
        #[cfg(feature = "ndarray")]
        #[allow(deprecated)]
        Ok("ndarray") => (
            burn::tensor::Device::ndarray(),
            "cpu (burn ndarray)".to_string(),
        ),
        Ok("libtorch") => {
            freeal_bench::slm::device::select(BackendChoice::Libtorch).expect("device")
        }
        Ok("wgpu") => freeal_bench::slm::device::select(BackendChoice::Wgpu).expect("device"),
        Ok("cpu_unfused") => {
            freeal_bench::slm::device::select(BackendChoice::CpuUnfused).expect("device")
        }
        _ => freeal_bench::slm::device::select(BackendChoice::Cpu).expect("device"),
    };
    let models: PathBuf = std::env::var_os("FREEAL_BENCH_RUN__MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(default_models_dir);
    let progress = Progress::hidden();
    println!("device: {name}");
    for max_len in [64, 128] {
        let mut slm = Slm::load(&spec(max_len), &models, 2, &device, 0).expect("model");
        let warm = sequences(BATCH * WARMUP_STEPS, max_len);
        let targets = alternating_targets(warm.len());
        slm.fit(&warm, &targets, &vec![1.0; warm.len()], &progress)
            .expect("warm-up");
        let data = sequences(BATCH * train_steps(), max_len);
        let targets = alternating_targets(data.len());
        let start = Instant::now();
        slm.fit(&data, &targets, &vec![1.0; data.len()], &progress)
            .expect("train");
        let train_s = start.elapsed().as_secs_f64();
        let n = data.len() as f64;
        println!(
            "train  max_len {max_len:>3} batch {BATCH}: {:>7.2} examples/s {:>9.1} tokens/s",
            n / train_s,
            n * max_len as f64 / train_s
        );
        let eval = sequences(BATCH * 8, max_len);
        slm.infer(&eval[..BATCH], &progress)
            .expect("warm-up inference");
        let start = Instant::now();
        slm.infer(&eval, &progress).expect("inference");
        let infer_s = start.elapsed().as_secs_f64();
        println!(
            "embed  max_len {max_len:>3} batch {BATCH}: {:>7.2} examples/s {:>9.1} tokens/s",
            eval.len() as f64 / infer_s,
            (eval.len() * max_len) as f64 / infer_s
        );
    }
}
