//! Global gradient-norm clipping: one factor for every parameter's gradient, as PyTorch's
//! `clip_grad_norm_` does (burn's own clipping bounds each tensor's norm separately).

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

/// Added to the norm before dividing, as PyTorch does, so a zero gradient stays finite.
const EPS: f64 = 1e-6;

/// Sums the squared entries of every gradient the module's parameters have.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    total: Option<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            let squares = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
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
}
