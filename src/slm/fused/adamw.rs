//! AdamW in one sweep per parameter on flex. burn's AdamW composes ~15 tensor ops per
//! parameter and step (each a full pass over 22.7M values for MiniLM, ~10% of a training step
//! here); this one reads the parameter, its gradient and both moments once and writes them
//! back in place. Same update rule and state record as burn's (`AdamWState`).

use burn::backend::flex::Flex;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::optim::{AdamWState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer};
use burn::tensor::{Device, Tensor};

use super::kernels::{self, AdamWStep};
use super::{contiguous, f32s};

/// A ModuleOptimizer running fused AdamW with burn's default betas (0.9, 0.999); gradients
/// arrive clipped (`super::super::clipping`).
pub fn adamw(weight_decay: f32, epsilon: f32) -> ModuleOptimizer {
    ModuleOptimizer::from(FusedAdamW {
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon,
        weight_decay,
    })
}

/// AdamW whose step is one fused kernel; only for parameters on flex.
#[derive(Debug, Clone)]
struct FusedAdamW {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: f32,
}

impl Optimizer for FusedAdamW {
    type State<const D: usize> = AdamWState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        // A first step from zero moments is burn's first step: m = (1 - b1) g, v = (1 - b2) g^2.
        let (time, m, v) = match state {
            Some(state) => (
                state.momentum.time + 1,
                state.momentum.moment_1,
                state.momentum.moment_2,
            ),
            None => (1, grad.zeros_like(), grad.zeros_like()),
        };
        let step = AdamWStep {
            lr: lr as f32,
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            epsilon: self.epsilon,
            weight_decay: self.weight_decay,
            time: time as i32,
        };
        let (param, m, v) = <Dispatch as FusedOptimOps>::fused_adamw(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            m.into_dispatch(),
            v.into_dispatch(),
            step,
        );
        let momentum =
            AdaptiveMomentumState::new(time, Tensor::from_dispatch(m), Tensor::from_dispatch(v));
        (
            Tensor::from_dispatch(param),
            Some(AdamWState::new(momentum)),
        )
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

/// The fused optimiser step as a burn backend extension (flex only: optimisers see parameters
/// without autodiff).
#[backend_extension(Flex)]
pub trait FusedOptimOps: Backend {
    /// One AdamW step: the parameter and both moments after it.
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl FusedOptimOps for Flex {
    fn fused_adamw(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamWStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let grad = contiguous(grad);
        let (mut param, mut m, mut v) = (
            contiguous(param),
            contiguous(moment_1),
            contiguous(moment_2),
        );
        kernels::adamw(
            param.storage_mut::<f32>(),
            f32s(&grad),
            m.storage_mut::<f32>(),
            v.storage_mut::<f32>(),
            step,
        );
        (param, m, v)
    }
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::Distribution;

    use super::*;

    fn weights(linear: &Linear) -> Vec<f32> {
        let values = |t: Tensor<1>| t.into_data().try_into_vec::<f32>().unwrap();
        let mut all = values(linear.weight.val().flatten(0, 1));
        all.extend(values(linear.bias.as_ref().expect("bias").val()));
        all
    }

    #[test]
    fn fused_adamw_takes_burns_adamw_steps() {
        let device = Device::flex().autodiff();
        let start = LinearConfig::new(16, 8).init(&device);
        let x = Tensor::<2>::random([4, 16], Distribution::Normal(0.0, 1.0), &device);
        let mut fused = adamw(0.01, 1e-8);
        let mut reference = AdamWConfig::new()
            .with_weight_decay(0.01)
            .with_epsilon(1e-8)
            .init();
        let (mut a, mut b) = (start.clone(), start.clone());
        for step in 0..5 {
            let lr = 1e-2 / (step + 1) as f64;
            let grads = |m: &Linear| {
                let loss = m.forward(x.clone()).powf_scalar(2.0).mean();
                GradientsParams::from_grads(loss.backward(), m)
            };
            let (ga, gb) = (grads(&a), grads(&b));
            a = fused.step(lr, a, ga);
            b = reference.step(lr, b, gb);
        }
        let (wa, wb, w0) = (weights(&a), weights(&b), weights(&start));
        let moved = wb
            .iter()
            .zip(&w0)
            .map(|(b, s)| (b - s).abs())
            .fold(0.0, f32::max);
        assert!(moved > 1e-3, "the steps changed the weights ({moved})");
        let worst = wa
            .iter()
            .zip(&wb)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-6, "fused and burn's AdamW differ by {worst}");
    }
}
