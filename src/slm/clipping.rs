//! Gradient-norm clipping in a fixed summation order: per tensor (burn's rule, the default) or
//! global (PyTorch's `clip_grad_norm_`, one factor for every parameter's gradient).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Added to the norm before dividing, as PyTorch does, so a zero gradient stays finite.
const EPS: f64 = 1e-6;

/// The sum of `grad`'s squared entries, added up row by row (over its last dimension) and then
/// over the rows in order. burn-flex sums a tensor of 4M+ values (the word embeddings'
/// gradient, 11.7M) in chunks on rayon threads in an order that depends on work stealing: 15 of
/// 3,000 such sums of one tensor came out 1 ulp apart, enough for two runs of a full-size cell
/// to drift apart in the last bits. A row is summed by one thread, and the row sums are few.
pub fn squared_norm<const D: usize>(grad: Tensor<D>) -> Tensor<1> {
    let cols = grad.dims()[D - 1].max(1);
    let rows = grad.shape().num_elements() / cols;
    grad.square().reshape([rows, cols]).sum_dim(1).sum()
}

/// Sums the squared entries of every gradient the module's parameters have.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = squared_norm(grad);
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

/// Scales each gradient so its own L2 norm is at most `max_norm`, as burn's
/// `GradientClipping::Norm` does (factor `max_norm / (norm + f32::MIN_POSITIVE)`, at most 1),
/// on the device: no host read per tensor.
struct PerTensor<'a> {
    grads: &'a mut GradientsParams,
    max_norm: f32,
}

impl ModuleVisitor for PerTensor<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let norm = squared_norm(grad.clone()).sqrt();
            let factor = (self.max_norm / norm.add_scalar(f32::MIN_POSITIVE)).clamp_max(1.0);
            self.grads
                .register(param.id, grad.mul(factor.unsqueeze::<D>()));
        }
    }
}

/// Clips every gradient of `module`'s parameters to L2 norm `max_norm`, each on its own.
pub fn clip_tensor_norms<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) {
    module.visit(&mut PerTensor {
        grads,
        max_norm: max_norm as f32,
    });
}

/// Multiplies every gradient the module's parameters have by one factor.
struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

/// Scales `grads` so their joint L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut norm = SquaredNorm { grads, total: None };
    module.visit(&mut norm);
    // One host read per step: the factor decides whether any tensor is touched at all.
    let total = norm
        .total
        .map_or(0.0, |t| f64::from(t.into_scalar::<f32>()).sqrt());
    let factor = max_norm / (total + EPS);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    total
}

#[cfg(test)]
mod tests {
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    use super::*;

    fn grads_for(linear: &Linear, weight: Vec<f32>, bias: Vec<f32>) -> GradientsParams {
        let device = Device::flex();
        let mut grads = GradientsParams::new();
        grads.register(
            linear.weight.id,
            Tensor::<2>::from_data(TensorData::new(weight, [2, 2]), &device),
        );
        let bias_id = linear.bias.as_ref().expect("bias").id;
        grads.register(
            bias_id,
            Tensor::<1>::from_data(TensorData::new(bias, [2]), &device),
        );
        grads
    }

    fn values<const D: usize>(grads: &GradientsParams, id: burn::module::ParamId) -> Vec<f32> {
        grads
            .get::<D>(id)
            .expect("gradient")
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32")
    }

    #[test]
    fn scales_all_gradients_by_one_factor_above_the_threshold() {
        let linear = LinearConfig::new(2, 2).init(&Device::flex());
        // Squares sum to 9 + 16 + 0 + 0 (weight) + 144 + 0 (bias) = 169: norm 13. Per tensor,
        // the weight's norm is 5 and the bias's 12, so a per-tensor clip at 6.5 would leave the
        // weight alone; the global clip halves both.
        let mut grads = grads_for(&linear, vec![3.0, 4.0, 0.0, 0.0], vec![12.0, 0.0]);
        let norm = clip_global_norm(&linear, &mut grads, 6.5);
        assert!((norm - 13.0).abs() < 1e-5);
        let factor = 6.5 / (13.0 + EPS);
        let weight = values::<2>(&grads, linear.weight.id);
        let bias = values::<1>(&grads, linear.bias.as_ref().unwrap().id);
        for (got, want) in weight
            .iter()
            .chain(&bias)
            .zip([3.0, 4.0, 0.0, 0.0, 12.0, 0.0])
        {
            assert!(
                (f64::from(*got) - want * factor).abs() < 1e-5,
                "{got} vs {want}"
            );
        }
    }

    #[test]
    fn leaves_gradients_below_the_threshold_unchanged() {
        let linear = LinearConfig::new(2, 2).init(&Device::flex());
        let mut grads = grads_for(&linear, vec![0.3, 0.4, 0.0, 0.0], vec![1.2, 0.0]);
        let norm = clip_global_norm(&linear, &mut grads, 1.5);
        assert!((norm - 1.3).abs() < 1e-5);
        assert_eq!(
            values::<2>(&grads, linear.weight.id),
            vec![0.3, 0.4, 0.0, 0.0]
        );
        assert_eq!(
            values::<1>(&grads, linear.bias.as_ref().unwrap().id),
            vec![1.2, 0.0]
        );
    }

    #[test]
    fn per_tensor_clipping_scales_each_gradient_by_its_own_norm() {
        let linear = LinearConfig::new(2, 2).init(&Device::flex());
        // The weight's norm is 5 (under the 6.5 bound: untouched), the bias's 12 (scaled).
        let mut grads = grads_for(&linear, vec![3.0, 4.0, 0.0, 0.0], vec![12.0, 0.0]);
        clip_tensor_norms(&linear, &mut grads, 6.5);
        assert_eq!(
            values::<2>(&grads, linear.weight.id),
            vec![3.0, 4.0, 0.0, 0.0]
        );
        let bias = values::<1>(&grads, linear.bias.as_ref().unwrap().id);
        assert!((bias[0] - 6.5).abs() < 1e-5 && bias[1] == 0.0, "{bias:?}");
    }

    #[test]
    fn per_tensor_clipping_agrees_with_burns_rule() {
        use burn::optim::grad_clipping::GradientClippingConfig;
        use burn::tensor::Distribution;
        let device = Device::flex();
        let linear = LinearConfig::new(64, 48).init(&device);
        let weight = Tensor::<2>::random([64, 48], Distribution::Normal(0.0, 1.0), &device);
        let mut grads = GradientsParams::new();
        grads.register(linear.weight.id, weight.clone());
        clip_tensor_norms(&linear, &mut grads, 2.0);
        let ours = values::<2>(&grads, linear.weight.id);
        let burns: Vec<f32> = GradientClippingConfig::Norm(2.0)
            .init()
            .clip_gradient(weight)
            .into_data()
            .try_to_vec()
            .unwrap();
        let worst = ours
            .iter()
            .zip(&burns)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "differs from burn's clipping by {worst}");
        let norm: f32 = ours.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 2.0).abs() < 1e-4, "clipped norm {norm}");
    }

    #[test]
    fn squared_norm_of_an_embedding_sized_gradient_ignores_the_thread_count() {
        use burn::tensor::Distribution;
        let device = Device::flex();
        // Past burn-flex's 4M-value threshold for summing chunks on rayon threads, where the
        // reduction order follows the threads: the result must not.
        let grad = Tensor::<2>::random([30522, 384], Distribution::Normal(0.0, 1e-3), &device);
        let on = |threads: usize| -> f32 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| squared_norm(grad.clone()).into_scalar())
        };
        let one = on(1);
        for threads in [2, 3, 7, 16] {
            assert_eq!(on(threads).to_bits(), one.to_bits(), "{threads} threads");
        }
        let whole: f32 = grad.square().sum().into_scalar();
        assert!(((one - whole) / whole).abs() < 1e-5, "{one} vs {whole}");
    }
}
