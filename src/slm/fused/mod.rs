//! Fused layer norm, softmax, GELU and dropout for burn's flex CPU backend, with hand-written
//! backward passes. Under autodiff burn 0.22 composes layer norm from ~10 ops and softmax from
//! 5, each recorded with its own backward (20-30 passes over the activations per layer norm in
//! a training step), computes GELU's erf with scalar libm calls, and builds a dropout mask from
//! one sampler draw per element followed by two multiplications. Here each is one forward and
//! one backward sweep (`kernels`), registered as a burn backend extension so that the model
//! code stays backend-generic: other backends, and `--backend cpu_unfused`, keep burn's own ops.
//! The linear layers (`linear`) and attention's batched products (`batched`) call gemm directly
//! for the same reason: fewer passes over each output than burn-flex's matmul makes.

mod adamw;
mod batched;
mod kernels;
mod linear;

pub use adamw::adamw;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{Flex, FlexDevice, FlexTensor, Layout};
use burn::backend::ops::{FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Backend, Bytes, DType, Dispatch, Distribution, FloatDType, Shape, TensorMetadata,
    backend_extension,
};
use burn::nn::{Dropout, LayerNorm, Linear};
use burn::tensor::activation;
use burn::tensor::{Bool, Device, Tensor};

/// Process-wide, like burn's choice of device: `slm::device::select` sets it.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the fused kernels on or off for this process (off: burn's own ops everywhere, the
/// numbers of runs made before they existed).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the fused kernels run on `device`: switched on, and flex (with or without autodiff).
pub fn applies_to(device: &Device) -> bool {
    ENABLED.load(Ordering::Relaxed) && device.clone().inner() == Device::flex()
}

/// Dropout masks drawn from flex's generator since [`seed`] last reset it. flex keeps its
/// generator's state private; replaying this many draws after the same seed is how a training
/// run restored from an epoch checkpoint gets the masks an uninterrupted run would have drawn.
static DROPOUT_DRAWS: AtomicU64 = AtomicU64::new(0);

/// Seeds the backend's generator for `device` and restarts the count of dropout draws.
pub fn seed(device: &Device, seed: u64) {
    device.seed(seed);
    DROPOUT_DRAWS.store(0, Ordering::Relaxed);
}

/// Fused dropout masks drawn since the last [`seed`].
pub fn dropout_draws() -> u64 {
    DROPOUT_DRAWS.load(Ordering::Relaxed)
}

/// Advances flex's generator past `n` dropout draws, as if their masks had been drawn.
pub fn skip_dropout_draws(n: u64) {
    for _ in 0..n {
        draw_seed();
    }
}

/// Whether `x` goes through the fused kernels (only f32 tensors do).
fn fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == burn::tensor::DType::F32 && applies_to(&x.device())
}

/// GELU (the erf form).
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !fused(&x) {
        return activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch()))
}

/// Attention probabilities from raw scores q.k [batch, heads, queries, keys]: softmax over
/// the keys of scores / sqrt(head_dim), padded keys (`pad` [batch, keys], true at padding) at
/// zero. Fused: scaling, masking and softmax in one sweep, and one backward sweep for all three.
pub fn attention_probs(scores: Tensor<4>, pad: Tensor<2, Bool>, head_dim: usize) -> Tensor<4> {
    if !fused(&scores) {
        let [batch, heads, queries, keys] = scores.dims();
        let scores = scores / (head_dim as f64).sqrt();
        let mask = pad
            .reshape([batch, 1, 1, keys])
            .expand([batch, heads, queries, keys]);
        return activation::softmax(scores.mask_fill(mask, f32::MIN), 3);
    }
    let keep = pad.bool_not().float();
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_attention_softmax(
        scores.into_dispatch(),
        keep.into_dispatch(),
        1.0 / (head_dim as f64).sqrt(),
    ))
}

/// `lhs · rhs` over the last two dimensions of [batch, heads, m, k] and [batch, heads, k, n].
pub fn matmul(lhs: Tensor<4>, rhs: Tensor<4>) -> Tensor<4> {
    if !fused(&lhs) {
        return lhs.matmul(rhs);
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_matmul(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
    ))
}

/// `layer` applied over the last dimension of `x`.
pub fn linear<const D: usize>(x: Tensor<D>, layer: &Linear) -> Tensor<D> {
    let Some(bias) = layer.bias.as_ref().filter(|_| fused(&x)) else {
        return layer.forward(x);
    };
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(
        x.into_dispatch(),
        layer.weight.val().into_dispatch(),
        bias.val().into_dispatch(),
    ))
}

/// `norm` applied over the last dimension; `eps` must be the one `norm` was built with (burn
/// keeps it private).
pub fn layer_norm<const D: usize>(x: Tensor<D>, norm: &LayerNorm, eps: f64) -> Tensor<D> {
    let Some(beta) = norm.beta.as_ref().filter(|_| fused(&x)) else {
        return norm.forward(x);
    };
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        eps,
    ))
}

/// `dropout` as burn's `Dropout::forward` applies it: only while training on an autodiff
/// device. The mask comes from a counter-based hash keyed by one draw from the backend's
/// seeded generator, so it follows the cell's seed like burn's own masks do (not the same
/// masks: burn draws one number per element).
pub fn dropout<const D: usize>(x: Tensor<D>, dropout: &Dropout) -> Tensor<D> {
    if !fused(&x) {
        return dropout.forward(x);
    }
    if !dropout.training.is_enabled() || !x.device().is_autodiff() || dropout.prob == 0.0 {
        return x;
    }
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_dropout(
        x.into_dispatch(),
        dropout.prob,
    ))
}

/// The fused operations as a burn backend extension (flex, and autodiff over flex).
#[backend_extension(Autodiff, Flex)]
pub trait FusedOps: Backend {
    /// GELU (the erf form).
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Softmax over the last dimension of `scale * scores` ([batch, heads, queries, keys]),
    /// keys with `keep` ([batch, keys]) 0 at probability 0; no gradient flows to `keep`.
    fn fused_attention_softmax(
        scores: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self>;
    /// `lhs · rhs` over the last two dimensions of 4-D tensors with the same leading two.
    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x · weight + bias` over the last dimension of `x` (`weight`: [d_in, d_out]).
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;
    /// Layer norm over the last dimension with scale `gamma` and shift `beta`.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self>;
    /// Zeroes each element with probability `prob`, scales the rest by 1 / (1 - prob).
    fn fused_dropout(x: FloatTensor<Self>, prob: f64) -> FloatTensor<Self>;
}

impl FusedOps for Flex {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        gelu_forward(&x)
    }

    fn fused_attention_softmax(
        scores: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let (scores, keep) = (contiguous(scores), contiguous(keep));
        let row = last_dim(&scores);
        let mut out = vec![0.0f32; scores.shape().num_elements()];
        kernels::attention_softmax(f32s(&scores), f32s(&keep), scale as f32, row, &mut out);
        from_vec(out, scores.shape())
    }

    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        batched::forward(&lhs, &rhs)
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        linear::forward(x, &weight, &bias)
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        <Flex as ModuleOps<Flex>>::layer_norm(x, gamma, Some(beta), eps)
    }

    fn fused_dropout(x: FloatTensor<Self>, prob: f64) -> FloatTensor<Self> {
        let seed = draw_seed();
        in_place(x, |v| kernels::dropout(v, seed, prob))
    }
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluBackward;

        impl Backward<Flex, 1> for GeluBackward {
            // The input.
            type State = FlexTensor;

            fn backward(
                self,
                ops: Ops<FlexTensor, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let x = contiguous(ops.state);
                unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                    in_place(grad, |g| kernels::gelu_backward(f32s(&x), g))
                });
            }
        }

        match GeluBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = x.into_primitive();
                let output = gelu_forward(&input);
                prep.finish(input, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(gelu_forward(x.primitive())),
        }
    }

    fn fused_attention_softmax(
        scores: FloatTensor<Self>,
        keep: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionSoftmaxBackward;

        impl Backward<Flex, 1> for AttentionSoftmaxBackward {
            // The output and the scale.
            type State = (FlexTensor, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (y, scale) = ops.state;
                let y = contiguous(y);
                let row = last_dim(&y);
                unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                    in_place(grad, |g| {
                        kernels::softmax_backward(f32s(&y), g, row, scale as f32)
                    })
                });
            }
        }

        let prep = AttentionSoftmaxBackward
            .prepare::<C>([scores.node()])
            .compute_bound()
            .stateful();
        let output = <Flex as FusedOps>::fused_attention_softmax(
            scores.into_primitive(),
            keep.into_primitive(),
            scale,
        );
        match prep {
            OpsKind::Tracked(prep) => prep.finish((output.clone(), scale), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MatmulBackward;

        impl Backward<Flex, 2> for MatmulBackward {
            // Both operands, as the (possibly strided) views the product read.
            type State = (FlexTensor, FlexTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node_lhs, node_rhs] = ops.parents;
                // Read through its strides: no copy to a contiguous buffer first.
                let grad = grads.consume::<Flex>(&ops.node);
                let (lhs, rhs) = ops.state;
                let wanted = [node_lhs.is_some(), node_rhs.is_some()];
                let (dlhs, drhs) = batched::backward(&lhs, &rhs, &grad, wanted);
                for (node, grad) in [(node_lhs, dlhs), (node_rhs, drhs)] {
                    if let (Some(node), Some(grad)) = (node, grad) {
                        grads.register::<Flex>(node.id, grad);
                    }
                }
            }
        }

        let prep = MatmulBackward
            .prepare::<C>([lhs.node(), rhs.node()])
            .compute_bound()
            .stateful();
        let (lhs, rhs) = (lhs.into_primitive(), rhs.into_primitive());
        let output = batched::forward(&lhs, &rhs);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((lhs, rhs), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LinearBackward;

        impl Backward<Flex, 3> for LinearBackward {
            // The input and the weight.
            type State = (FlexTensor, FlexTensor);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node_x, node_weight, node_bias] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, weight) = ops.state;
                let wanted = linear::Wanted {
                    x: node_x.is_some(),
                    weight: node_weight.is_some(),
                    bias: node_bias.is_some(),
                };
                let (dx, dweight, dbias) = linear::backward(&contiguous(x), &weight, &grad, wanted);
                for (node, grad) in [(node_x, dx), (node_weight, dweight), (node_bias, dbias)] {
                    if let (Some(node), Some(grad)) = (node, grad) {
                        grads.register::<Flex>(node.id, grad);
                    }
                }
            }
        }

        let prep = LinearBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful();
        let (x, weight, bias) = (
            contiguous(x.into_primitive()),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let output = linear::forward(x.clone(), &weight, &bias);
        match prep {
            OpsKind::Tracked(prep) => prep.finish((x, weight), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNormBackward;

        impl Backward<Flex, 3> for LayerNormBackward {
            // The input, gamma and epsilon.
            type State = (FlexTensor, FlexTensor, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = contiguous(grads.consume::<Flex>(&ops.node));
                let (x, gamma, eps) = ops.state;
                let (x, gamma) = (contiguous(x), contiguous(gamma));
                let (dx, dgamma, dbeta) =
                    kernels::layer_norm_backward(f32s(&x), f32s(&gamma), f32s(&grad), eps);
                if let Some(node) = node_x {
                    grads.register::<Flex>(node.id, from_vec(dx, x.shape()));
                }
                if let Some(node) = node_gamma {
                    grads.register::<Flex>(node.id, from_vec(dgamma, gamma.shape()));
                }
                if let Some(node) = node_beta {
                    grads.register::<Flex>(node.id, from_vec(dbeta, gamma.shape()));
                }
            }
        }

        let prep = LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful();
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match prep {
            OpsKind::Tracked(prep) => {
                let output =
                    <Flex as FusedOps>::fused_layer_norm(x.clone(), gamma.clone(), beta, eps);
                prep.finish((x, gamma, eps), output)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(<Flex as FusedOps>::fused_layer_norm(x, gamma, beta, eps))
            }
        }
    }

    fn fused_dropout(x: FloatTensor<Self>, prob: f64) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct DropoutBackward;

        impl Backward<Flex, 1> for DropoutBackward {
            // The mask's key and the drop probability: the backward pass redraws the mask.
            type State = (u64, f64);

            fn backward(
                self,
                ops: Ops<(u64, f64), 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                let (seed, prob) = ops.state;
                unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
                    in_place(grad, |g| kernels::dropout(g, seed, prob))
                });
            }
        }

        let prep = DropoutBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful();
        let seed = draw_seed();
        let output = in_place(x.into_primitive(), |v| kernels::dropout(v, seed, prob));
        match prep {
            OpsKind::Tracked(prep) => prep.finish((seed, prob), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        }
    }
}

/// A dropout call's mask key: two 32-bit draws from flex's seeded generator.
fn draw_seed() -> u64 {
    DROPOUT_DRAWS.fetch_add(1, Ordering::Relaxed);
    let draws = Flex::float_random(
        Shape::new([2]),
        Distribution::Uniform(0.0, 4_294_967_296.0),
        &FlexDevice,
        FloatDType::F64,
    );
    let draws = contiguous(draws);
    let halves = draws
        .as_slice::<f64>()
        .expect("a fresh f64 tensor is contiguous");
    ((halves[0] as u64) << 32) | (halves[1] as u64 & 0xffff_ffff)
}

fn gelu_forward(x: &FlexTensor) -> FlexTensor {
    let x = x.to_contiguous();
    let mut out = vec![0.0f32; x.shape().num_elements()];
    kernels::gelu(f32s(&x), &mut out);
    from_vec(out, x.shape())
}

/// A contiguous tensor covering its whole buffer (what `f32s` and `in_place` read).
fn contiguous(t: FlexTensor) -> FlexTensor {
    let c = t.to_contiguous();
    // Drop the original so that a buffer it shared with `c` is unique again for `in_place`.
    drop(t);
    c
}

/// The elements of a contiguous f32 tensor.
fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("fused kernels run on contiguous f32 tensors (checked by the callers)")
}

/// Applies `f` to the elements of `t`, in its own buffer when nothing else holds it.
fn in_place(t: FlexTensor, f: impl FnOnce(&mut [f32])) -> FlexTensor {
    let mut t = contiguous(t);
    f(t.storage_mut::<f32>());
    t
}

fn from_vec(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

fn last_dim(t: &FlexTensor) -> usize {
    let shape = t.shape();
    shape[shape.num_dims() - 1]
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::nn::{DropoutConfig, LayerNormConfig, LinearConfig};
    use burn::tensor::{Distribution, Gradients, TensorData};

    use super::*;

    fn train_device() -> Device {
        let device = Device::flex().autodiff();
        device.seed(7);
        device
    }

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().expect("f32 tensor")
    }

    fn assert_close(a: &[f32], b: &[f32], tolerance: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= tolerance, "{what}: max difference {worst}");
    }

    /// Output and input gradient of `op` against burn's `reference` on the same input and the
    /// same upstream gradient (a fixed random weighting of the output).
    fn compare(
        op: impl Fn(Tensor<3>) -> Tensor<3>,
        reference: impl Fn(Tensor<3>) -> Tensor<3>,
        tolerance: f32,
    ) {
        let device = train_device();
        let x = Tensor::<3>::random([3, 5, 24], Distribution::Normal(0.0, 2.0), &device);
        let w = Tensor::<3>::random([3, 5, 24], Distribution::Normal(0.0, 1.0), &device);
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let x = x.clone().detach().require_grad();
            let y = f(x.clone());
            let grads = (y.clone() * w.clone()).sum().backward();
            let dx = x.grad(&grads).expect("input gradient");
            (values(y), values(dx))
        };
        let (y, dx) = run(&op);
        let (y_ref, dx_ref) = run(&reference);
        assert_close(&y, &y_ref, tolerance, "output");
        assert_close(&dx, &dx_ref, tolerance, "input gradient");
    }

    /// The two parameter gradients `grads_of` reads after `op` and after burn's `reference`, on
    /// the input `x` and one fixed random weighting of the output.
    fn compare_parameter_gradients(
        op: impl Fn(Tensor<3>) -> Tensor<3>,
        reference: impl Fn(Tensor<3>) -> Tensor<3>,
        x: Tensor<3>,
        grads_of: impl Fn(&Gradients) -> [Vec<f32>; 2],
        names: [&str; 2],
        tolerance: f32,
    ) {
        let w = Tensor::<3>::random(x.dims(), Distribution::Normal(0.0, 1.0), &x.device());
        let run = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            grads_of(&(f(x.clone()) * w.clone()).sum().backward())
        };
        let fused = run(&op);
        let burns = run(&reference);
        for ((a, b), name) in fused.iter().zip(&burns).zip(names) {
            assert_close(a, b, tolerance, name);
        }
    }

    #[test]
    fn gelu_matches_burns_op_forward_and_backward() {
        compare(gelu, activation::gelu, 1e-5);
    }

    #[test]
    fn attention_probs_match_the_unfused_composition_forward_and_backward() {
        let device = train_device();
        // 2 sentences of 6 and 4 tokens, padded to 6; 3 heads.
        let pad = Tensor::<2, Bool>::from_data(
            TensorData::new(
                [[false; 6], [false, false, false, false, true, true]].concat(),
                [2, 6],
            ),
            &device,
        );
        let scores = Tensor::<4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 4.0), &device);
        let w = Tensor::<4>::random([2, 3, 6, 6], Distribution::Normal(0.0, 1.0), &device);
        // The unfused branch of `attention_probs`, spelled out: the switch is process-wide and
        // other tests run meanwhile.
        let unfused = |x: Tensor<4>| {
            let mask = pad.clone().reshape([2, 1, 1, 6]).expand([2, 3, 6, 6]);
            activation::softmax((x / 4.0).mask_fill(mask, f32::MIN), 3)
        };
        let run = |on: bool| {
            let x = scores.clone().detach().require_grad();
            let y = if on {
                attention_probs(x.clone(), pad.clone(), 16)
            } else {
                unfused(x.clone())
            };
            let grads = (y.clone() * w.clone()).sum().backward();
            (values(y), values(x.grad(&grads).expect("gradient")))
        };
        let (y, dx) = run(true);
        let (y_ref, dx_ref) = run(false);
        assert_close(&y, &y_ref, 1e-6, "probabilities");
        assert_close(&dx, &dx_ref, 1e-6, "score gradient");
        // Padded keys of the second sentence: no probability, no gradient.
        for (i, (&p, &d)) in y.iter().zip(&dx).enumerate().skip(3 * 36) {
            if i % 6 >= 4 {
                assert_eq!((p, d), (0.0, 0.0));
            }
        }
    }

    #[test]
    fn layer_norm_matches_burns_forward_and_backward_including_parameters() {
        let device = train_device();
        let mut norm = LayerNormConfig::new(24).with_epsilon(1e-12).init(&device);
        // Non-trivial scale and shift, so that their gradients and effects are checked.
        let param = |mean| {
            Param::from_tensor(Tensor::random(
                [24],
                Distribution::Normal(mean, 0.5),
                &device,
            ))
        };
        norm.gamma = param(1.0);
        norm.beta = Some(param(0.0));
        compare(|x| layer_norm(x, &norm, 1e-12), |x| norm.forward(x), 2e-5);

        let x = Tensor::<3>::random([2, 4, 24], Distribution::Normal(1.0, 3.0), &device);
        compare_parameter_gradients(
            |x| layer_norm(x, &norm, 1e-12),
            |x| norm.forward(x),
            x,
            |grads| {
                let beta = norm.beta.as_ref().expect("beta");
                [
                    values(norm.gamma.grad(grads).expect("gamma gradient")),
                    values(beta.grad(grads).expect("beta gradient")),
                ]
            },
            ["gamma gradient", "beta gradient"],
            2e-5,
        );
    }

    #[test]
    fn linear_matches_burns_forward_and_backward_including_parameters() {
        let device = train_device();
        let layer = LinearConfig::new(24, 24).init(&device);
        compare(|x| linear(x, &layer), |x| layer.forward(x), 1e-5);

        let x = Tensor::<3>::random([2, 4, 24], Distribution::Normal(0.0, 2.0), &device);
        compare_parameter_gradients(
            |x| linear(x, &layer),
            |x| layer.forward(x),
            x,
            |grads| {
                let bias = layer.bias.as_ref().expect("bias");
                [
                    values(layer.weight.grad(grads).expect("weight gradient")),
                    values(bias.grad(grads).expect("bias gradient")),
                ]
            },
            ["weight gradient", "bias gradient"],
            1e-5,
        );
    }

    #[test]
    fn attention_products_match_burns_matmul_on_head_split_views() {
        let device = train_device();
        let x = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let y = Tensor::<3>::random([2, 5, 12], Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random([2, 3, 5, 5], Distribution::Normal(0.0, 1.0), &device);
        let split = |t: Tensor<3>| t.reshape([2, 5, 3, 4]).swap_dims(1, 2);
        let run = |on: bool| {
            let (x, y) = (x.clone().require_grad(), y.clone().require_grad());
            let (q, k) = (split(x.clone()), split(y.clone()).swap_dims(2, 3));
            let scores = if on { matmul(q, k) } else { q.matmul(k) };
            let grads = (scores.clone() * w.clone()).sum().backward();
            (
                values(scores),
                values(x.grad(&grads).expect("lhs gradient")),
                values(y.grad(&grads).expect("rhs gradient")),
            )
        };
        let (s, dx, dy) = run(true);
        let (s_ref, dx_ref, dy_ref) = run(false);
        assert_close(&s, &s_ref, 1e-5, "products");
        assert_close(&dx, &dx_ref, 1e-5, "lhs gradient");
        assert_close(&dy, &dy_ref, 1e-5, "rhs gradient");
    }

    #[test]
    fn dropout_backward_uses_the_forward_mask() {
        let dropout = DropoutConfig::new(0.25).init();
        // Which mask a seed gives is checked in `kernels` and end to end in tests/train_toy.rs:
        // burn's generator is process-wide, so here other tests may draw from it meanwhile.
        let draw = || {
            let device = Device::flex().autodiff();
            let x = Tensor::<2>::from_data(
                TensorData::new((1..=4000).map(|i| i as f32).collect::<Vec<_>>(), [40, 100]),
                &device,
            )
            .require_grad();
            let y = super::dropout(x.clone(), &dropout);
            let grads = (y.clone() * 3.0).sum().backward();
            (values(y), values(x.grad(&grads).expect("gradient")))
        };
        let (y, dx) = draw();
        let kept = y.iter().filter(|&&v| v != 0.0).count();
        assert!(
            (2850..=3150).contains(&kept),
            "kept {kept} of 4000 at p = 0.25"
        );
        for (i, (&y, &d)) in y.iter().zip(&dx).enumerate() {
            let x = (i + 1) as f32;
            if y == 0.0 {
                assert_eq!(d, 0.0, "a dropped element passes no gradient");
            } else {
                assert!((y - x / 0.75).abs() <= 1e-3 * x, "kept values are scaled");
                assert!((d - 3.0 / 0.75).abs() < 1e-5, "and so are their gradients");
            }
        }
    }

    #[test]
    fn dropout_is_the_identity_outside_training() {
        let dropout = DropoutConfig::new(0.5).init();
        let x = Tensor::<2>::ones([4, 8], &Device::flex());
        assert_eq!(values(super::dropout(x, &dropout)), vec![1.0; 32]);
    }
}
