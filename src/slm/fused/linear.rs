//! Linear layers on flex through `gemm` directly. burn-flex allocates every matmul output as a
//! zeroed byte vector that `Bytes` then copies into a 16-byte-aligned buffer (two extra passes
//! over each output), adds the bias in a third pass, and sums the bias gradient through a
//! broadcast reduction; here the output starts as the bias rows and gemm accumulates into it,
//! and the backward products write into buffers nothing zeroed.

use burn::backend::flex::FlexTensor;
use burn::backend::{Shape, TensorMetadata};
use rayon::prelude::*;

use super::{contiguous, f32s, from_vec, last_dim};

/// Below this many multiply-adds a product runs on one thread (burn-flex's own threshold).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// Columns per parallel task of the bias-gradient sum.
const COLUMNS_PER_TASK: usize = 64;

/// A matrix operand: first element and strides, in elements, between rows and columns.
#[derive(Clone, Copy)]
pub(super) struct Operand {
    pub ptr: *const f32,
    pub row_stride: isize,
    pub col_stride: isize,
}

impl Operand {
    /// A row-major matrix with `cols` columns starting at `values[0]`.
    fn row_major(values: &[f32], cols: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            row_stride: cols as isize,
            col_stride: 1,
        }
    }

    pub(super) fn transposed(self) -> Self {
        Self {
            ptr: self.ptr,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// All threads for a product worth splitting, one otherwise.
fn parallelism(m: usize, n: usize, k: usize) -> gemm::Parallelism {
    if m * n * k >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    }
}

/// The weight [d_in, d_out] as stored (loaded weights may be transposed views), with its shape.
fn weight_operand(weight: &FlexTensor) -> (usize, usize, Operand) {
    let layout = weight.layout();
    let (rows, cols, row_stride, col_stride) = layout
        .as_2d_strides()
        .expect("a linear layer's weight is a matrix");
    let values: &[f32] = weight.storage();
    let ptr = values[layout.start_offset()..].as_ptr();
    let operand = Operand {
        ptr,
        row_stride,
        col_stride,
    };
    (rows, cols, operand)
}

/// `m` x `n` row-major `lhs · rhs` (inner dimension `k`), added to `out`'s first m * n values
/// when `accumulate`, written over them (read or not) otherwise.
///
/// # Safety
/// `out` must have room for m * n values, and the operands must address m x k and k x n
/// matrices inside live buffers.
pub(super) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    out: *mut f32,
    accumulate: bool,
    (lhs, rhs): (Operand, Operand),
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract; gemm writes every output value when it does not read them.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out,
            1,
            n as isize,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// An m x n product into a fresh buffer that nothing zeroes first.
fn product_into_new(m: usize, n: usize, k: usize, lhs: Operand, rhs: Operand) -> Vec<f32> {
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: capacity for m * n values; gemm writes all of them before `set_len` exposes them.
    unsafe {
        product(
            (m, n, k),
            out.as_mut_ptr(),
            false,
            (lhs, rhs),
            parallelism(m, n, k),
        );
        out.set_len(m * n);
    }
    out
}

/// `x · weight + bias` over the last dimension of `x`.
pub fn forward(x: FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let x = contiguous(x);
    let (d_in, d_out, w) = weight_operand(weight);
    assert_eq!(last_dim(&x), d_in, "linear: input width vs weight rows");
    let rows = x.shape().num_elements() / d_in.max(1);
    let bias = bias.to_contiguous();
    let mut out = Vec::with_capacity(rows * d_out);
    for _ in 0..rows {
        out.extend_from_slice(f32s(&bias));
    }
    // SAFETY: `out` holds rows x d_out values; x is rows x d_in, the weight d_in x d_out.
    unsafe {
        product(
            (rows, d_out, d_in),
            out.as_mut_ptr(),
            true,
            (Operand::row_major(f32s(&x), d_in), w),
            parallelism(rows, d_out, d_in),
        );
    }
    let mut shape = x.shape();
    let last = shape.num_dims() - 1;
    shape.as_mut_slice()[last] = d_out;
    from_vec(out, shape)
}

/// Which gradients of a linear layer to compute.
pub struct Wanted {
    pub x: bool,
    pub weight: bool,
    pub bias: bool,
}

/// The gradients of `x · weight + bias` for the upstream gradient `grad`: (input, weight,
/// bias), each computed only where wanted.
pub fn backward(
    x: &FlexTensor,
    weight: &FlexTensor,
    grad: &FlexTensor,
    wanted: Wanted,
) -> (Option<FlexTensor>, Option<FlexTensor>, Option<FlexTensor>) {
    let (d_in, d_out, w) = weight_operand(weight);
    let g = f32s(grad);
    let rows = g.len() / d_out.max(1);
    let dy = Operand::row_major(g, d_out);
    let dx = wanted.x.then(|| {
        let values = product_into_new(rows, d_in, d_out, dy, w.transposed());
        from_vec(values, x.shape())
    });
    let dw = wanted.weight.then(|| {
        let xs = Operand::row_major(f32s(x), d_in).transposed();
        let values = product_into_new(d_in, d_out, rows, xs, dy);
        from_vec(values, Shape::new([d_in, d_out]))
    });
    let db = wanted
        .bias
        .then(|| from_vec(column_sums(g, d_out), Shape::new([d_out])));
    (dx, dw, db)
}

/// Sums of a row-major matrix's columns, each added up in row order whatever the thread count.
pub fn column_sums(values: &[f32], cols: usize) -> Vec<f32> {
    let mut sums = vec![0.0f32; cols];
    sums.par_chunks_mut(COLUMNS_PER_TASK)
        .enumerate()
        .for_each(|(task, sums)| {
            let first = task * COLUMNS_PER_TASK;
            for row in values.chunks_exact(cols) {
                super::kernels::add_assign(sums, &row[first..first + sums.len()]);
            }
        });
    sums
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::Layout;
    use burn::backend::{Bytes, DType};

    fn tensor(values: Vec<f32>, dims: &[usize]) -> FlexTensor {
        from_vec(values, Shape::from(dims.to_vec()))
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        f32s(&t.to_contiguous()).to_vec()
    }

    /// x [2, 3], weight [3, 2], bias [2], worked by hand.
    fn example() -> (FlexTensor, FlexTensor, FlexTensor) {
        (
            tensor(vec![1.0, 2.0, 3.0, -1.0, 0.0, 2.0], &[2, 3]),
            tensor(vec![1.0, 0.5, -1.0, 2.0, 0.0, 1.0], &[3, 2]),
            tensor(vec![0.25, -0.5], &[2]),
        )
    }

    #[test]
    fn forward_adds_the_bias_to_the_product() {
        let (x, w, b) = example();
        // Row 1: [1-2+0, 0.5+4+3] + bias; row 2: [-1+0+0, -0.5+0+2] + bias.
        assert_eq!(values(&forward(x, &w, &b)), vec![-0.75, 7.0, -0.75, 1.0]);
    }

    #[test]
    fn forward_reads_a_transposed_weight_view() {
        let (x, _, b) = example();
        // The same weight stored as [2, 3] and viewed transposed, as a loader may leave it.
        let stored = [1.0f32, -1.0, 0.0, 0.5, 2.0, 1.0];
        let w = FlexTensor::new(
            Bytes::from_elems(stored.to_vec()),
            Layout::new(Shape::new([3, 2]), vec![1, 3], 0),
            DType::F32,
        );
        assert_eq!(values(&forward(x, &w, &b)), vec![-0.75, 7.0, -0.75, 1.0]);
    }

    #[test]
    fn backward_gives_the_three_gradients() {
        let (x, w, _) = example();
        let grad = tensor(vec![1.0, 2.0, -1.0, 0.5], &[2, 2]);
        let all = Wanted {
            x: true,
            weight: true,
            bias: true,
        };
        let (dx, dw, db) = backward(&x, &w, &grad, all);
        // dx = grad · wᵀ; dw = xᵀ · grad; db = column sums of grad.
        assert_eq!(
            values(&dx.expect("dx")),
            vec![2.0, 3.0, 2.0, -0.75, 2.0, 0.5]
        );
        assert_eq!(values(&dw.expect("dw")), vec![2.0, 1.5, 2.0, 4.0, 1.0, 7.0]);
        assert_eq!(values(&db.expect("db")), vec![0.0, 2.5]);
        let none = Wanted {
            x: false,
            weight: false,
            bias: true,
        };
        let (dx, dw, _) = backward(&x, &w, &grad, none);
        assert!(dx.is_none() && dw.is_none());
    }

    #[test]
    fn column_sums_cover_columns_past_one_task() {
        let cols = COLUMNS_PER_TASK + 3;
        let values: Vec<f32> = (0..4 * cols).map(|i| (i % cols) as f32).collect();
        let sums = column_sums(&values, cols);
        assert_eq!(sums, (0..cols).map(|c| 4.0 * c as f32).collect::<Vec<_>>());
    }
}
