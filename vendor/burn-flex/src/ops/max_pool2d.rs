//! preimage patch: 2-D max pooling, forward (with or without indices) and backward.
//!
//! Upstream pools through its 3-D implementation one output element at a time, with a bounds
//! check and a data-dependent branch per tap, always computes the indices, and runs the
//! backward pass on one thread. Here each image plane is pooled tap by tap over whole output
//! rows: for tap `(ky, kx)` the valid output columns are one contiguous range (the window
//! geometry of the convolutions, [`super::conv_gemm::Axis`]), so the inner loops are
//! branch-free and vectorize. Each output starts from its window's first valid tap and takes
//! any strictly greater one, in row-major tap order; its index (only when asked for) moves with
//! it in the same pass, so it names the first tap that reaches the maximum. This is upstream's
//! result exactly (including a NaN in the first tap, which stays); indices are flat `y·W + x`
//! positions in the input plane. 2×2 windows at stride 2 inside the plane take one pass over
//! each pair of rows instead ([`pool_pairs`]). Planes run in parallel. Checked in preimage's
//! `tests/flex_patch.rs`.

use burn_backend::DType;
use burn_std::{Bytes, Shape};

use super::conv_gemm::{Axis, for_each_chunk};
use super::pool::pool_output_size;
use crate::{FlexTensor, Layout};

/// `x [B, C, H, W]` → (max `[B, C, OH, OW]`, flat input indices `[B, C, OH, OW]` when `indices`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn max_pool2d<T>(x: FlexTensor, kernel: [usize; 2], stride: [usize; 2], padding: [usize; 2], dilation: [usize; 2], ceil_mode: bool, dtype: DType, neg_inf: T, indices: bool) -> (FlexTensor, Option<FlexTensor>)
where
    T: bytemuck::Pod + PartialOrd + Send + Sync + burn_backend::Element,
{
    let x = x.to_contiguous();
    let s = x.layout().shape().to_vec();
    let axis = |i: usize| Axis {
        grid: pool_output_size(s[2 + i], kernel[i], padding[i], stride[i], dilation[i], ceil_mode),
        other: s[2 + i],
        kernel: kernel[i],
        stride: stride[i],
        dilation: dilation[i],
        padding: padding[i],
    };
    let (ya, xa) = (axis(0), axis(1));
    let (plane_in, plane_out, planes) = (ya.other * xa.other, ya.grid * xa.grid, s[0] * s[1]);
    let (first_ky, first_kx) = (first_taps(ya), first_taps(xa));
    // 2×2 windows, stride 2, every window inside the input (posenet's and VGG's pools).
    let full = |a: Axis| a.kernel == 2 && a.stride == 2 && a.padding == 0 && a.dilation == 1 && 2 * a.grid <= a.other;
    let pairs = full(ya) && full(xa);
    // Every window inside the input without padding or dilation (AlexNet's 3×3 stride-2 pools).
    let inside = |a: Axis| a.padding == 0 && a.dilation == 1 && a.grid > 0 && (a.grid - 1) * a.stride + a.kernel <= a.other;
    let inside = inside(ya) && inside(xa);
    let src: &[T] = x.storage();
    let mut values = alloc::vec![neg_inf; planes * plane_out];
    let mut idx = alloc::vec![-1i64; if indices { planes * plane_out } else { 0 }];
    let idx_ptr = super::conv_gemm::Shared(idx.as_mut_ptr());
    let work = values.len() * ya.kernel * xa.kernel;
    for_each_chunk(&mut values, plane_out, work, |p, out| {
        let idx_ptr = idx_ptr;
        // SAFETY: each plane `p` is handed to exactly one call, so its index block is disjoint
        // and inside `idx` (which holds `planes · plane_out` elements when `indices`).
        let out_idx = indices.then(|| unsafe { core::slice::from_raw_parts_mut(idx_ptr.0.add(p * plane_out), plane_out) });
        let plane = &src[p * plane_in..][..plane_in];
        if pairs {
            pool_pairs(plane, xa.other, out, out_idx, xa.grid);
        } else if inside {
            pool_inside(plane, out, out_idx, ya, xa);
        } else {
            pool_plane(plane, out, out_idx, ya, xa, &first_ky, &first_kx);
        }
    });
    let shape = Shape::from(vec![s[0], s[1], ya.grid, xa.grid]);
    let idx = indices.then(|| FlexTensor::new(Bytes::from_elems(idx), Layout::contiguous(shape.clone()), DType::I64));
    (FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), dtype), idx)
}

/// [`pool_plane`] for 2×2 windows at stride 2 that all lie inside the plane (`width` input
/// columns, `ow` output columns): one pass over each pair of input rows, the four taps in
/// row-major order with the same strictly-greater rule (and index) as the general path.
/// Per tap row-wise passes over 16 outputs cost more in loop setup than in comparisons.
fn pool_pairs<T: Copy + PartialOrd>(src: &[T], width: usize, out: &mut [T], mut idx: Option<&mut [i64]>, ow: usize) {
    if ow == 0 {
        return;
    }
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        let (r0, r1) = (&src[2 * oy * width..][..2 * ow], &src[(2 * oy + 1) * width..][..2 * ow]);
        match idx.as_deref_mut() {
            None => {
                for ((m, a), b) in row.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)) {
                    let mut v = a[0];
                    v = if a[1] > v { a[1] } else { v };
                    v = if b[0] > v { b[0] } else { v };
                    *m = if b[1] > v { b[1] } else { v };
                }
            }
            Some(idx) => {
                let base = 2 * oy * width;
                for (ox, (m, i)) in row.iter_mut().zip(&mut idx[oy * ow..][..ow]).enumerate() {
                    let at = [base + 2 * ox, base + 2 * ox + 1, base + width + 2 * ox, base + width + 2 * ox + 1];
                    let (mut v, mut best) = (src[at[0]], at[0]);
                    for &j in &at[1..] {
                        let gt = src[j] > v;
                        (v, best) = (core::hint::select_unpredictable(gt, src[j], v), core::hint::select_unpredictable(gt, j, best));
                    }
                    (*m, *i) = (v, best as i64);
                }
            }
        }
    }
}

/// [`pool_plane`] when every window lies inside the plane (no padding, dilation 1): every tap
/// covers the whole output row, so a row is its first tap copied, then one strided run per
/// further tap, with none of the general path's per-tap range arithmetic, which cost more
/// than the comparisons on AlexNet's 27-wide rows (64×55×55 at 3×3 stride 2, with indices:
/// 1.67 ms, ~200 ns per 27-element run).
fn pool_inside<T: Copy + PartialOrd>(src: &[T], out: &mut [T], mut idx: Option<&mut [i64]>, ya: Axis, xa: Axis) {
    let (ow, width, s) = (xa.grid, xa.other, xa.stride);
    if ow == 0 {
        return;
    }
    for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
        let top = oy * ya.stride * width;
        let mut row_idx = idx.as_deref_mut().map(|i| &mut i[oy * ow..][..ow]);
        for (ox, m) in row.iter_mut().enumerate() {
            *m = src[top + ox * s];
        }
        if let Some(i) = row_idx.as_deref_mut() {
            i.iter_mut().enumerate().for_each(|(ox, i)| *i = (top + ox * s) as i64);
        }
        for ky in 0..ya.kernel {
            for kx in (0..xa.kernel).skip(usize::from(ky == 0)) {
                let first = top + ky * width + kx;
                let line = &src[first..];
                match row_idx.as_deref_mut() {
                    None => with_stride!(s, S, max_run::<T, S>(line, row, s)),
                    Some(i) => with_stride!(s, S, max_index_run::<T, S>(line, row, i, first as i64, s)),
                }
            }
        }
    }
}

/// For each grid position along an axis, the first kernel tap that lands inside the input
/// (`None` for a window over padding only, which `ceil_mode` can produce).
fn first_taps(a: Axis) -> alloc::vec::Vec<Option<usize>> {
    (0..a.grid).map(|i| (0..a.kernel).find(|&k| a.valid(k).contains(&i))).collect()
}

/// Pool one plane into `out` (and `idx`), both preset to `(neg_inf, -1)`, which windows
/// without a valid tap keep, as upstream.
fn pool_plane<T: Copy + PartialOrd>(src: &[T], out: &mut [T], mut idx: Option<&mut [i64]>, ya: Axis, xa: Axis, first_ky: &[Option<usize>], first_kx: &[Option<usize>]) {
    let width = xa.grid.max(1);
    for (oy, row) in out.chunks_mut(width).enumerate() {
        let Some(ky0) = first_ky[oy] else { continue };
        let mut row_idx = idx.as_deref_mut().map(|i| &mut i[oy * xa.grid..][..xa.grid]);
        // Start every output from its first valid tap.
        let iy0 = ya.at(oy, ky0);
        for (ox, kx0) in first_kx.iter().enumerate() {
            if let Some(kx0) = *kx0 {
                let ix = xa.at(ox, kx0);
                row[ox] = src[iy0 * xa.other + ix];
                if let Some(i) = row_idx.as_deref_mut() {
                    i[ox] = (iy0 * xa.other + ix) as i64;
                }
            }
        }
        // The valid taps of this row in row-major order (reversible, no allocation).
        let taps = || {
            (ky0..ya.kernel)
                .filter(move |&ky| ya.valid(ky).contains(&oy))
                .flat_map(move |ky| (0..xa.kernel).filter(move |&kx| !xa.valid(kx).is_empty()).map(move |kx| (ky, kx)))
        };
        match row_idx {
            None => {
                for (ky, kx) in taps() {
                    let (line, xs, _) = tap_line(src, ya, xa, oy, ky, kx);
                    with_stride!(xa.stride, S, max_run::<T, S>(line, &mut row[xs], xa.stride));
                }
            }
            // Values and indices in the same pass: a tap strictly greater than the maximum so
            // far takes both, so the index ends on the first tap that reaches the maximum.
            Some(i) => {
                for (ky, kx) in taps() {
                    let (line, xs, first) = tap_line(src, ya, xa, oy, ky, kx);
                    let base = (ya.at(oy, ky) * xa.other + first) as i64;
                    with_stride!(xa.stride, S, max_index_run::<T, S>(line, &mut row[xs.clone()], &mut i[xs], base, xa.stride));
                }
            }
        }
    }
}

/// The input row of tap `(ky, kx)` for output row `oy`, from its first valid column on, with
/// the output columns it covers and that first input column.
fn tap_line<T>(src: &[T], ya: Axis, xa: Axis, oy: usize, ky: usize, kx: usize) -> (&[T], core::ops::Range<usize>, usize) {
    let xs = xa.valid(kx);
    let first = xa.at(xs.start, kx);
    (&src[ya.at(oy, ky) * xa.other + first..][..xa.other - first], xs, first)
}

/// Calls `$call` with the const `$S` set to the stride when it is 1 or 2 (so the loop
/// vectorizes with a known stride), 0 otherwise (the loop reads the run-time stride).
macro_rules! with_stride {
    ($stride:expr, $S:ident, $call:expr) => {
        match $stride {
            1 => {
                const $S: usize = 1;
                $call
            }
            2 => {
                const $S: usize = 2;
                $call
            }
            _ => {
                const $S: usize = 0;
                $call
            }
        }
    };
}
use with_stride;

/// `m[j] = line[j·stride]` where strictly greater (NaN never is, and a NaN `m[j]` stays).
#[inline(always)]
fn max_run<T: Copy + PartialOrd, const S: usize>(line: &[T], m: &mut [T], stride: usize) {
    let stride = if S == 0 { stride } else { S };
    let n = m.len();
    assert!(n == 0 || line.len() > (n - 1) * stride);
    for j in 0..n {
        let v = line[j * stride];
        m[j] = core::hint::select_unpredictable(v > m[j], v, m[j]);
    }
}

/// [`max_run`] that also sets `i[j] = base + j·stride` where it takes the value.
#[inline(always)]
fn max_index_run<T: Copy + PartialOrd, const S: usize>(line: &[T], m: &mut [T], i: &mut [i64], base: i64, stride: usize) {
    let stride = if S == 0 { stride } else { S };
    let n = m.len().min(i.len());
    assert!(n == 0 || line.len() > (n - 1) * stride);
    for j in 0..n {
        let v = line[j * stride];
        // Selects, not branches: on random data a branch mispredicts on most early taps
        // (the loop does not vectorize on baseline x86-64, its i64 lanes against f32 ones).
        let gt = v > m[j];
        m[j] = core::hint::select_unpredictable(gt, v, m[j]);
        i[j] = core::hint::select_unpredictable(gt, base + (j * stride) as i64, i[j]);
    }
}

/// Gradient of max pooling: each output gradient goes to the input position its index names
/// (summed where windows overlap), planes in parallel.
pub(crate) fn max_pool2d_backward<T>(x_shape: &[usize], grad: FlexTensor, indices: FlexTensor, dtype: DType) -> FlexTensor
where
    T: bytemuck::Pod + Send + Sync + burn_backend::Element + core::ops::Add<Output = T> + Default,
{
    let (grad, indices) = (grad.to_contiguous(), indices.to_contiguous());
    let gs = grad.layout().shape().to_vec();
    let (plane_in, plane_out) = (x_shape[2] * x_shape[3], gs[2] * gs[3]);
    let (gd, id): (&[T], &[i64]) = (grad.storage(), indices.storage());
    let mut dx = alloc::vec![T::default(); x_shape[0] * x_shape[1] * plane_in];
    let work = dx.len();
    for_each_chunk(&mut dx, plane_in, work, |p, plane| {
        let (g, i) = (&gd[p * plane_out..][..plane_out], &id[p * plane_out..][..plane_out]);
        // A negative index marks a window without input (see `pool_plane`): no gradient.
        for (g, &i) in g.iter().zip(i).filter(|(_, i)| **i >= 0) {
            let cell = &mut plane[i as usize];
            *cell = *cell + *g;
        }
    });
    FlexTensor::new(Bytes::from_elems(dx), Layout::contiguous(Shape::from(x_shape.to_vec())), dtype)
}
