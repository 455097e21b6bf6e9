//! Attention's batched matrix products ([batch, heads, rows, cols]) on flex through gemm
//! directly, one product per (batch, head) on rayon's pool. The operands are read through their
//! strides (the head split and the key transpose are views), and outputs and gradients go into
//! buffers nothing zeroed: burn-flex zeroes each output and copies it into an aligned buffer.

use std::mem::MaybeUninit;

use burn::backend::flex::FlexTensor;
use burn::backend::{Shape, TensorMetadata};
use rayon::prelude::*;

use super::from_vec;
use super::linear::{self, Operand as Matrix};

/// A [b0, b1, rows, cols] operand: first element (as an address, so tasks can share it) and
/// strides in elements.
#[derive(Clone, Copy)]
struct Operand {
    addr: usize,
    batch_strides: [isize; 2],
    row_stride: isize,
    col_stride: isize,
}

impl Operand {
    fn of(t: &FlexTensor) -> Self {
        let layout = t.layout();
        let strides = layout.strides();
        assert_eq!(strides.len(), 4, "batched products take 4-D tensors");
        let values: &[f32] = t.storage();
        Self {
            addr: values[layout.start_offset()..].as_ptr() as usize,
            batch_strides: [strides[0], strides[1]],
            row_stride: strides[2],
            col_stride: strides[3],
        }
    }

    fn transposed(self) -> Self {
        Self {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    /// The matrix of batch `(i, j)`.
    fn at(self, i: usize, j: usize) -> Matrix {
        let offset = i as isize * self.batch_strides[0] + j as isize * self.batch_strides[1];
        Matrix {
            ptr: (self.addr as *const f32).wrapping_offset(offset),
            row_stride: self.row_stride,
            col_stride: self.col_stride,
        }
    }
}

/// `lhs · rhs` per batch: [b0, b1, m, k] x [b0, b1, k, n] -> [b0, b1, m, n], contiguous.
fn products(
    batch: [usize; 2],
    (m, n, k): (usize, usize, usize),
    lhs: Operand,
    rhs: Operand,
) -> FlexTensor {
    let size = m * n;
    let count = batch[0] * batch[1];
    let mut out: Vec<f32> = Vec::with_capacity(count * size);
    let spare: &mut [MaybeUninit<f32>] = &mut out.spare_capacity_mut()[..count * size];
    spare
        .par_chunks_mut(size.max(1))
        .enumerate()
        .for_each(|(b, dst)| {
            let (i, j) = (b / batch[1], b % batch[1]);
            // Batches already fill the pool: each product on one thread.
            // SAFETY: `dst` has room for m x n values; the operands address m x k and k x n
            // matrices inside the live tensors they were taken from; gemm writes every output
            // value because it is told not to read them.
            unsafe {
                linear::product(
                    (m, n, k),
                    dst.as_mut_ptr().cast::<f32>(),
                    false,
                    (lhs.at(i, j), rhs.at(i, j)),
                    gemm::Parallelism::None,
                );
            }
        });
    // SAFETY: every batch's m x n values were written above.
    unsafe { out.set_len(count * size) };
    from_vec(out, Shape::new([batch[0], batch[1], m, n]))
}

/// The 4-D dims of a batched operand.
fn dims(t: &FlexTensor) -> [usize; 4] {
    t.shape().dims::<4>()
}

/// `lhs · rhs` over the last two dimensions of [b0, b1, m, k] and [b0, b1, k, n] tensors.
pub fn forward(lhs: &FlexTensor, rhs: &FlexTensor) -> FlexTensor {
    let ([b0, b1, m, k], [r0, r1, k2, n]) = (dims(lhs), dims(rhs));
    assert_eq!(
        (b0, b1, k),
        (r0, r1, k2),
        "batched product: mismatched shapes"
    );
    products([b0, b1], (m, n, k), Operand::of(lhs), Operand::of(rhs))
}

/// The gradients (lhs, rhs) of `lhs · rhs` for the upstream gradient `grad` (any strides),
/// each computed only where wanted.
pub fn backward(
    lhs: &FlexTensor,
    rhs: &FlexTensor,
    grad: &FlexTensor,
    wanted: [bool; 2],
) -> (Option<FlexTensor>, Option<FlexTensor>) {
    let ([b0, b1, m, k], [_, _, _, n]) = (dims(lhs), dims(rhs));
    let dc = Operand::of(grad);
    let dlhs = wanted[0].then(|| products([b0, b1], (m, k, n), dc, Operand::of(rhs).transposed()));
    let drhs = wanted[1].then(|| products([b0, b1], (k, n, m), Operand::of(lhs).transposed(), dc));
    (dlhs, drhs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::flex::Layout;
    use burn::backend::{Bytes, DType};

    fn tensor(values: Vec<f32>, dims: [usize; 4]) -> FlexTensor {
        from_vec(values, Shape::new(dims))
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        super::super::f32s(&t.to_contiguous()).to_vec()
    }

    /// Plain triple loop over contiguous [b, m, k] x [b, k, n].
    fn reference(a: &[f32], b: &[f32], batches: usize, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; batches * m * n];
        for t in 0..batches {
            for i in 0..m {
                for j in 0..n {
                    out[(t * m + i) * n + j] = (0..k)
                        .map(|l| a[(t * m + i) * k + l] * b[(t * k + l) * n + j])
                        .sum();
                }
            }
        }
        out
    }

    fn ramp(n: usize, step: f32) -> Vec<f32> {
        (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) * step).collect()
    }

    #[test]
    fn forward_and_backward_match_the_triple_loop() {
        let (m, k, n) = (3, 4, 2);
        let a = ramp(2 * 3 * m * k, 0.5);
        let b = ramp(2 * 3 * k * n, 0.25);
        let out = forward(
            &tensor(a.clone(), [2, 3, m, k]),
            &tensor(b.clone(), [2, 3, k, n]),
        );
        assert_eq!(values(&out), reference(&a, &b, 6, m, k, n));

        let g = ramp(2 * 3 * m * n, 1.0);
        let (da, db) = backward(
            &tensor(a.clone(), [2, 3, m, k]),
            &tensor(b.clone(), [2, 3, k, n]),
            &tensor(g.clone(), [2, 3, m, n]),
            [true, true],
        );
        // dA = G · Bᵀ and dB = Aᵀ · G, batch by batch.
        let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            x.chunks(rows * cols)
                .flat_map(|t| (0..cols).flat_map(move |c| (0..rows).map(move |r| t[r * cols + c])))
                .collect()
        };
        assert_eq!(
            values(&da.expect("dA")),
            reference(&g, &transpose(&b, k, n), 6, m, n, k)
        );
        assert_eq!(
            values(&db.expect("dB")),
            reference(&transpose(&a, m, k), &g, 6, k, m, n)
        );
    }

    #[test]
    fn reads_a_head_split_view_through_its_strides() {
        // [batch 1, seq 2, heads 2 x dim 2] viewed as [1, heads, seq, dim]: the attention split.
        let x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let view = FlexTensor::new(
            Bytes::from_elems(x),
            Layout::new(Shape::new([1, 2, 2, 2]), vec![8, 2, 4, 1], 0),
            DType::F32,
        );
        let identity = tensor(vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], [1, 2, 2, 2]);
        // Head 0 holds tokens' first halves (1 2 / 5 6), head 1 the second (3 4 / 7 8).
        assert_eq!(
            values(&forward(&view, &identity)),
            vec![1.0, 2.0, 5.0, 6.0, 3.0, 4.0, 7.0, 8.0]
        );
    }
}
