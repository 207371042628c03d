//! preimage patch: 3×3 stride-1 convolutions by Winograd's minimal filtering F(2×2, 3×3)
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Each 2×2 block of outputs ("tile") is computed from its 4×4 input patch `d` and the 3×3
//! kernel `g` as `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: 16 multiplications per input channel instead
//! of 36. Summed over input channels, the 16 element-wise products become 16 GEMMs
//! `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]` is `[Co, Ci]`, the transformed kernels; `V[ξ]` is `[Ci, tiles]`,
//! the transformed patches), 2.25× fewer multiply-adds than the direct convolution, which
//! the im2col + GEMM path computes at the same GEMM speed. Tiles are processed in chunks of
//! whole tile rows (transform, 16 GEMMs, inverse transform), chunks in parallel, so each
//! chunk's transformed patches are still in cache when its GEMMs read them. The results
//! differ from the direct sum by rounding only (the transforms' coefficients are 0, ±1, ±½).
use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};
use core::mem::MaybeUninit;

use super::conv_gemm::{Mat, Shared, gemm_into, threads};
use crate::{FlexTensor, Layout};

/// Transformed patches per chunk (elements, 16 · Ci · tiles): 2 MiB of f32.
const CHUNK_BUDGET: usize = 512 << 10;

/// Whether [`conv2d`] takes this convolution: 3×3 kernel, stride and dilation 1, one group, and
/// enough channels, row length and tiles that the GEMMs dominate the transforms: at least 64
/// channels in and out, output rows of 12 and more (posenet's 8×8 and 16×16 grids with 32–96
/// channels were as fast or slower than the im2col GEMM), [`MIN_TILES`] tiles.
pub(crate) fn takes(x_shape: &[usize; 4], w_shape: &[usize; 4], o: &ConvOptions<2>) -> bool {
    let [co, ci, kh, kw] = *w_shape;
    let out = |i: usize| (x_shape[2 + i] + 2 * o.padding[i]).saturating_sub(2);
    let tiles = x_shape[0] * out(0).div_ceil(2) * out(1).div_ceil(2);
    kh == 3 && kw == 3 && o.stride == [1, 1] && o.dilation == [1, 1] && o.groups == 1 && ci == x_shape[1] && ci >= 64 && co >= 64 && out(1) >= 12 && tiles >= MIN_TILES
}

/// Fewest tiles (2×2 output blocks, all images) for [`conv2d`]: below, each chunk's 16 GEMMs
/// are a few columns wide and packing `U` dominates (AlexNet's conv3–5 at batch 1 are 49
/// tiles; they stay with the im2col GEMM).
const MIN_TILES: usize = 256;

/// `U[ξ][co][ci] = (G g Gᵀ)[ξ]` for every kernel `g = w[co, ci]`, `ξ = 4·row + column`; output
/// channels in parallel (serial, it was ~1 % of AlexNet's forward on the calling thread).
fn transform_weights(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let n = co * ci;
    let mut u: Vec<f32> = Vec::with_capacity(16 * n);
    let dst = Shared(u.as_mut_ptr());
    let channel = |o: usize| {
        let dst = dst;
        for (i, g) in w[o * ci * 9..][..ci * 9].chunks_exact(9).enumerate() {
            // t = G g (4×3), then U = t Gᵀ (4×4); G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
            let mut t = [[0.0f32; 3]; 4];
            for c in 0..3 {
                let (g0, g1, g2) = (g[c], g[3 + c], g[6 + c]);
                t[0][c] = g0;
                t[1][c] = 0.5 * (g0 + g1 + g2);
                t[2][c] = 0.5 * (g0 - g1 + g2);
                t[3][c] = g2;
            }
            for (r, t) in t.iter().enumerate() {
                let row = [t[0], 0.5 * (t[0] + t[1] + t[2]), 0.5 * (t[0] - t[1] + t[2]), t[2]];
                for (c, v) in row.into_iter().enumerate() {
                    // SAFETY: (ξ, o, i) is written by output channel `o`'s call alone, inside
                    // the 16·n elements.
                    unsafe { *dst.0.add((4 * r + c) * n + o * ci + i) = v };
                }
            }
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..co).into_par_iter().for_each(channel);
    }
    #[cfg(not(feature = "rayon"))]
    (0..co).for_each(channel);
    // SAFETY: every (ξ, o, i) was written above.
    unsafe { u.set_len(16 * n) };
    u
}

/// Geometry and operands of one convolution, shared by its chunks.
struct Plan<'a> {
    xd: &'a [f32],
    u: &'a [f32],
    bias: Option<&'a [f32]>,
    dst: Shared<f32>,
    ci: usize,
    co: usize,
    h: usize,
    w: usize,
    ph: usize,
    pw: usize,
    oh: usize,
    ow: usize,
    th: usize,
    tw: usize,
}

impl Plan<'_> {
    /// Tile rows `r0..r0 + nr` (over image, tile row): transform, 16 GEMMs, inverse transform.
    /// The transforms are plain loops; the crate is built for baseline x86-64 (SSE2), so on
    /// CPUs with AVX2 and FMA they run compiled for those ([`Plan::chunk_avx2`]).
    fn chunk(&self, r0: usize, nr: usize) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.chunk_avx2(r0, nr) };
        }
        self.chunk_body(r0, nr)
    }

    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk_avx2(&self, r0: usize, nr: usize) {
        self.chunk_body(r0, nr)
    }

    #[inline(always)]
    fn chunk_body(&self, r0: usize, nr: usize) {
        let Plan { xd, u, bias, dst, ci, co, h, w, ph, pw, oh, ow, th, tw } = *self;
        let p = nr * tw;
        // V[ξ][c][tile], tiles row after row; every element is written below.
        let mut v: Vec<f32> = Vec::with_capacity(16 * ci * p);
        // SAFETY: f32 has no invalid bit patterns; each element is written before it is read.
        unsafe { v.set_len(16 * ci * p) };
        // The patch rows of one tile row, zero-padded (2·tw + 2 ≥ w + 2·pw columns), and their
        // transform s = Bᵀ d, Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1], row by row.
        let wp = 2 * tw + 2;
        let mut d = [vec![0.0f32; wp], vec![0.0f32; wp], vec![0.0f32; wp], vec![0.0f32; wp]];
        let mut sr = [vec![0.0f32; wp], vec![0.0f32; wp], vec![0.0f32; wp], vec![0.0f32; wp]];
        let plane_v = ci * p;
        for c in 0..ci {
            for (i, row) in (r0..r0 + nr).enumerate() {
                let (b, ty) = (row / th, row % th);
                let plane = &xd[(b * ci + c) * h * w..][..h * w];
                for (k, dk) in d.iter_mut().enumerate() {
                    let y = (2 * ty + k).wrapping_sub(ph);
                    let inner = &mut dk[pw..pw + w];
                    if y < h { inner.copy_from_slice(&plane[y * w..][..w]) } else { inner.fill(0.0) }
                }
                let [s0, s1, s2, s3] = &mut sr;
                for xp in 0..wp {
                    let (a0, a1, a2, a3) = (d[0][xp], d[1][xp], d[2][xp], d[3][xp]);
                    s0[xp] = a0 - a2;
                    s1[xp] = a1 + a2;
                    s2[xp] = a2 - a1;
                    s3[xp] = a1 - a3;
                }
                // V = s B along each tile's four columns.
                let base = c * p + i * tw;
                for (r, s) in sr.iter().enumerate() {
                    let at = |k: usize| (4 * r + k) * plane_v + base;
                    let (v0, rest) = v[at(0)..].split_at_mut(plane_v);
                    let (v1, rest) = rest.split_at_mut(plane_v);
                    let (v2, v3) = rest.split_at_mut(plane_v);
                    for tx in 0..tw {
                        // The tile's four columns (names apart from the channel `c` above).
                        let (s0, s1, s2, s3) = (s[2 * tx], s[2 * tx + 1], s[2 * tx + 2], s[2 * tx + 3]);
                        v0[tx] = s0 - s2;
                        v1[tx] = s1 + s2;
                        v2[tx] = s2 - s1;
                        v3[tx] = s1 - s3;
                    }
                }
            }
        }
        // M[ξ] = U[ξ] · V[ξ]: [Co, Ci] · [Ci, p].
        let mut m: Vec<MaybeUninit<f32>> = Vec::with_capacity(16 * co * p);
        // SAFETY: each GEMM below overwrites its [co, p] block (accumulate = false).
        unsafe { m.set_len(16 * co * p) };
        for xi in 0..16 {
            // SAFETY: block `xi` of `m` holds co·p elements, written only here.
            unsafe {
                gemm_into(m[xi * co * p..].as_mut_ptr() as *mut f32, p, Mat::n(&u[xi * co * ci..][..co * ci], ci), Mat::n(&v[xi * ci * p..][..ci * p], p), co, ci, p, false, false)
            };
        }
        // SAFETY: fully written by the GEMMs above.
        let m: Vec<f32> = unsafe { core::mem::transmute::<Vec<MaybeUninit<f32>>, Vec<f32>>(m) };
        // Y = Aᵀ M A per tile, Aᵀ = [1 1 1 0; 0 1 −1 −1], plus the bias; the tile row's
        // columns first (q = Aᵀ M, all tiles at once), then its two output rows.
        let mut q = [vec![0.0f32; 4 * tw], vec![0.0f32; 4 * tw]];
        let mut line = vec![0.0f32; 2 * tw];
        for oc in 0..co {
            let bv = bias.map_or(0.0, |b| b[oc]);
            for (i, row) in (r0..r0 + nr).enumerate() {
                let (b, ty) = (row / th, row % th);
                let ms = |xi: usize| &m[(xi * co + oc) * p + i * tw..][..tw];
                for c in 0..4 {
                    let (m0, m1, m2, m3) = (ms(c), ms(4 + c), ms(8 + c), ms(12 + c));
                    let [q0, q1] = &mut q;
                    let (q0, q1) = (&mut q0[c * tw..][..tw], &mut q1[c * tw..][..tw]);
                    for tx in 0..tw {
                        q0[tx] = m0[tx] + m1[tx] + m2[tx];
                        q1[tx] = m1[tx] - m2[tx] - m3[tx];
                    }
                }
                let out_plane = (b * co + oc) * oh * ow;
                for (dy, q) in q.iter().enumerate() {
                    let y = 2 * ty + dy;
                    if y >= oh {
                        continue;
                    }
                    let (c0, c1, c2, c3) = (&q[..tw], &q[tw..2 * tw], &q[2 * tw..3 * tw], &q[3 * tw..]);
                    for tx in 0..tw {
                        line[2 * tx] = c0[tx] + c1[tx] + c2[tx] + bv;
                        line[2 * tx + 1] = c1[tx] - c2[tx] - c3[tx] + bv;
                    }
                    // SAFETY: each output element belongs to exactly one tile, and each tile to
                    // one chunk; the row holds `ow` elements.
                    unsafe { core::ptr::copy_nonoverlapping(line.as_ptr(), dst.0.add(out_plane + y * ow), ow) };
                }
            }
        }
    }
}

/// Convolution `x [B, Ci, H, W]`, `weight [Co, Ci, 3, 3]`, stride 1 (see [`takes`]).
pub(crate) fn conv2d(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, o: &ConvOptions<2>) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let [batch, ci, h, w]: [usize; 4] = x.layout().shape().dims();
    let co = weight.layout().shape().dims::<4>()[0];
    let [ph, pw] = o.padding;
    let (oh, ow) = (h + 2 * ph - 2, w + 2 * pw - 2);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let u = transform_weights(weight.storage::<f32>(), co, ci);
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[f32]> = bias.as_ref().map(|b| b.storage::<f32>());
    let xd: &[f32] = x.storage();

    // Chunks of whole tile rows over (image, tile row): near CHUNK_BUDGET, at least 64 tiles
    // (the GEMMs' width), and at least two per thread when there are enough rows.
    let rows = batch * th;
    let per_chunk = (CHUNK_BUDGET / (16 * ci * tw)).max(64usize.div_ceil(tw)).min(rows.div_ceil(2 * threads())).max(1);
    let chunks: Vec<(usize, usize)> = (0..rows).step_by(per_chunk).map(|r| (r, per_chunk.min(rows - r))).collect();

    let len = batch * co * oh * ow;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = Shared(out.as_mut_ptr());
    let plan = Plan { xd, u: &u, bias, dst, ci, co, h, w, ph, pw, oh, ow, th, tw };
    let run = |&(r0, nr): &(usize, usize)| plan.chunk(r0, nr);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        chunks.par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    chunks.iter().for_each(run);
    // SAFETY: the chunks cover every (image, tile row), the tiles every output element.
    unsafe { out.set_len(len) };
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(Shape::from(vec![batch, co, oh, ow])), DType::F32)
}
