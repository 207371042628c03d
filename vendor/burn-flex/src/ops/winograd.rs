//! preimage patch: 3×3 and 5×5 stride-1 convolutions by Winograd's minimal filtering
//! F(2×2, 3×3) and F(2×2, 5×5) (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2016).
//!
//! Each 2×2 block of outputs ("tile") is computed from its A×A input patch `d` (A = 4 for 3×3
//! kernels, 6 for 5×5) and the kernel `g` as `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`: A² multiplications
//! per input channel instead of 4·R² (16 instead of 36; 36 instead of 100). Summed over input
//! channels, the A² element-wise products become A² GEMMs `M[ξ] = U[ξ] · V[ξ]` (`U[ξ]` is
//! `[Co, Ci]`, the transformed kernels; `V[ξ]` is `[Ci, tiles]`, the transformed patches),
//! 2.25× and 2.8× fewer multiply-adds than the direct convolution, which the im2col + GEMM
//! path computes at the same GEMM speed. Tiles are processed in chunks of whole tile rows
//! (transform, A² GEMMs, inverse transform), chunks in parallel, so each chunk's transformed
//! patches are still in cache when its GEMMs read them. F(2×2, 3×3) has hand-written transforms
//! ([`Plan::chunk`]); F(2×2, 5×5) runs through a generic engine over the algorithm's constant
//! matrices ([`Minimal`], [`Plan::chunk_by`]), which was 15 % slower than the hand-written one
//! on VGG16's 3×3 layers (wide rows) and so is not used for them. The results differ from the
//! direct sum by rounding: the 3×3 transforms' coefficients are 0, ±1 and ±½; the 5×5 ones
//! reach 1/24 and ±5, and AlexNet's conv2 came out within 3e-6 of its largest output (1e-6
//! relative RMS) of the im2col GEMM's.
use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};
use core::mem::MaybeUninit;

use super::conv_gemm::{Mat, Shared, gemm_into, threads};
use crate::{FlexTensor, Layout};

/// Transformed patches per chunk (elements, A² · Ci · tiles): 2 MiB of f32.
const CHUNK_BUDGET: usize = 512 << 10;

/// Whether [`conv2d`] takes this convolution: 3×3 or 5×5 kernel, stride and dilation 1, one
/// group, and enough channels, row length and tiles that the GEMMs dominate the transforms: at
/// least 64 channels in and out, output rows of 12 and more (posenet's 8×8 and 16×16 grids with
/// 32–96 channels were as fast or slower than the im2col GEMM), [`MIN_TILES`] tiles.
pub(crate) fn takes(x_shape: &[usize; 4], w_shape: &[usize; 4], o: &ConvOptions<2>) -> bool {
    let [co, ci, kh, kw] = *w_shape;
    if !((kh == 3 || kh == 5) && kw == kh) {
        return false;
    }
    let out = |i: usize| (x_shape[2 + i] + 2 * o.padding[i]).saturating_sub(kh - 1);
    let tiles = x_shape[0] * out(0).div_ceil(2) * out(1).div_ceil(2);
    o.stride == [1, 1] && o.dilation == [1, 1] && o.groups == 1 && ci == x_shape[1] && ci >= 64 && co >= 64 && out(1) >= 12 && tiles >= MIN_TILES
}

/// Fewest tiles (2×2 output blocks, all images) for [`conv2d`]: below, each chunk's GEMMs
/// are a few columns wide and packing `U` dominates (AlexNet's conv3–5 at batch 1 are 49
/// tiles, its conv2 196; they stay with the im2col GEMM: F(2×2, 5×5) took 1.24× its time
/// there, 0.91× at batch 2, 0.69× at batch 32).
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

/// A minimal filtering algorithm F(M×M, R×R) on A×A input tiles, A = M + R − 1: each M×M
/// block of outputs is `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray's notation). The matrices
/// come from Toom–Cook with the points 0, ±1, ±2 and ∞ (exact fractions, checked against the
/// direct correlation when they were derived and by `tests/flex_patch.rs` on every build).
trait Minimal<const A: usize, const M: usize, const R: usize> {
    const BT: [[f32; A]; A];
    const G: [[f32; R]; A];
    const AT: [[f32; A]; M];
}

/// F(2×2, 5×5): 36 products per input channel for 4 outputs instead of 100 (AlexNet's conv2).
struct F2x5;

impl Minimal<6, 2, 5> for F2x5 {
    const BT: [[f32; 6]; 6] = [
        [4.0, 0.0, -5.0, 0.0, 1.0, 0.0],
        [0.0, -4.0, -4.0, 1.0, 1.0, 0.0],
        [0.0, 4.0, -4.0, -1.0, 1.0, 0.0],
        [0.0, -2.0, -1.0, 2.0, 1.0, 0.0],
        [0.0, 2.0, -1.0, -2.0, 1.0, 0.0],
        [0.0, 4.0, 0.0, -5.0, 0.0, 1.0],
    ];
    const G: [[f32; 5]; 6] = [
        [1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
        [0.0, 0.0, 0.0, 0.0, 1.0],
    ];
    const AT: [[f32; 6]; 2] = [[1.0, 1.0, 1.0, 1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 2.0, -2.0, 1.0]];
}

/// `U[ξ][co][ci] = (G g Gᵀ)[ξ]` for every kernel `g = w[co, ci]` (R×R), `ξ = A·row + column`.
fn transform_weights_by<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(w: &[f32], co: usize, ci: usize) -> Vec<f32> {
    let n = co * ci;
    let mut u: Vec<f32> = Vec::with_capacity(A * A * n);
    let dst = Shared(u.as_mut_ptr());
    let channel = |o: usize| {
        let dst = dst;
        for (i, g) in w[o * ci * R * R..][..ci * R * R].chunks_exact(R * R).enumerate() {
            // t = G g (A×R), then U = t Gᵀ (A×A).
            let mut t = [[0.0f32; R]; A];
            for (j, t) in t.iter_mut().enumerate() {
                for (c, t) in t.iter_mut().enumerate() {
                    *t = (0..R).map(|k| W::G[j][k] * g[k * R + c]).sum();
                }
            }
            for (j, t) in t.iter().enumerate() {
                for l in 0..A {
                    let v: f32 = (0..R).map(|c| t[c] * W::G[l][c]).sum();
                    // SAFETY: (ξ, o, i) is written by output channel `o`'s call alone, inside
                    // the A²·n elements.
                    unsafe { *dst.0.add((A * j + l) * n + o * ci + i) = v };
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
    unsafe { u.set_len(A * A * n) };
    u
}

/// The three steps of a generic Winograd convolution over tile rows `r0..r0 + nr` (over
/// (image, tile row); `p = nr · tw` tiles): transformed patches `V[ξ][c][t]`, the products
/// `M[ξ] = U[ξ] · V[ξ]`, and the output transform. Spreading each step of a batch-1
/// convolution over the threads (channels, ξ, output channels) instead of cutting it into
/// chunks of tile rows was tried: slower than the im2col GEMM (AlexNet's conv2 at batch 1, 196
/// tiles: 2.3–2.7 ms against 1.9–2.3), the products being too narrow for `gemm` (its packing
/// took more samples than its micro-kernels).
impl Plan<'_> {
    /// `V[ξ][c][·]` into `v` (`A²·ci·p` elements).
    #[inline(always)]
    fn input_by<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(&self, r0: usize, nr: usize, v: &mut [f32]) {
        let Plan { xd, ci, h, w, ph, pw, th, tw, .. } = *self;
        let p = nr * tw;
        // One channel's input rows under the chunk's tile rows (image after image), zero-padded:
        // tile tx of tile row i reads columns M·tx .. M·tx + A of rows M·i .. M·i + A of its
        // image's block. Each input row is copied once, not once per tile row that reads it.
        let wp = (M * tw + R - 1).next_multiple_of(L);
        let block_rows = M * th + R - 1;
        let (first, last) = (r0 / th, (r0 + nr - 1) / th);
        let mut rows: Vec<f32> = vec![0.0f32; (last - first + 1) * block_rows * wp];
        // Bᵀ d split by column phase (column M·t + φ of row j at [j][φ][t]), so that the column
        // transform reads whole vectors; `per_phase` leaves room for the last vector's reach.
        let per_phase = tw.next_multiple_of(L) + A;
        let mut sp: [[Vec<f32>; M]; A] = core::array::from_fn(|_| core::array::from_fn(|_| vec![0.0f32; per_phase]));
        let plane_v = ci * p;
        for c in 0..ci {
            for b in first..=last {
                let plane = &xd[(b * ci + c) * h * w..][..h * w];
                let block = &mut rows[(b - first) * block_rows * wp..][..block_rows * wp];
                // Only the rows under this chunk's tile rows of image b.
                let ty0 = if b == first { r0 % th } else { 0 };
                let ty1 = if b == last { (r0 + nr - 1) % th } else { th - 1 };
                for (yy, row) in block.chunks_exact_mut(wp).enumerate().take(M * ty1 + A).skip(M * ty0) {
                    let y = yy.wrapping_sub(ph);
                    if y < h {
                        row[pw..pw + w].copy_from_slice(&plane[y * w..][..w]);
                    } else {
                        row.fill(0.0);
                    }
                }
            }
            for (i, row) in (r0..r0 + nr).enumerate() {
                let (b, ty) = (row / th, row % th);
                let d = &rows[((b - first) * block_rows + M * ty) * wp..][..A * wp];
                // Rows: s = Bᵀ d, a vector of columns at a time.
                for x0 in (0..wp).step_by(L) {
                    let s = combine(&W::BT, &vectors(|k| lanes(&d[k * wp + x0..])));
                    for (sj, spj) in s.iter().zip(sp.iter_mut()) {
                        for (e, &val) in sj.iter().enumerate() {
                            let xp = x0 + e;
                            spj[xp % M][xp / M] = val;
                        }
                    }
                }
                // Columns: V[j][l] = Σ_k (Bᵀ d)[j][M·tx + k] Bᵀ[l][k], a vector of tiles at a time.
                let base = c * p + i * tw;
                for (j, spj) in sp.iter().enumerate() {
                    for t0 in (0..tw).step_by(L) {
                        let vj = combine(&W::BT, &vectors(|k| lanes(&spj[k % M][t0 + k / M..])));
                        for (l, vjl) in vj.iter().enumerate() {
                            store(&mut v[(A * j + l) * plane_v + base + t0..], vjl, tw - t0);
                        }
                    }
                }
            }
        }
    }

    /// `M[ξ] = U[ξ] · V[ξ]` (`[Co, Ci] · [Ci, p]`) for every `ξ`, into `m` (`A²·co·p` elements
    /// or more).
    fn products_by<const A: usize>(&self, p: usize, v: &[f32], m: &mut [f32]) {
        let Plan { u, ci, co, .. } = *self;
        assert!(v.len() >= A * A * ci * p && m.len() >= A * A * co * p, "winograd: product buffers too small");
        for xi in 0..A * A {
            // SAFETY: block `xi` of `m` holds co·p elements (checked above).
            unsafe { gemm_into(m[xi * co * p..].as_mut_ptr(), p, Mat::n(&u[xi * co * ci..][..co * ci], ci), Mat::n(&v[xi * ci * p..][..ci * p], p), co, ci, p, false, false) };
        }
    }

    /// `Y = Aᵀ M A` plus the bias, a vector of tiles at a time; the M output rows of a tile row
    /// are assembled in `lines` and copied out. `m` has `L` spare elements at its end, read
    /// into lanes whose results are dropped.
    ///
    /// # Safety
    /// No other thread writes these tile rows' outputs.
    #[inline(always)]
    unsafe fn output_by<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(&self, r0: usize, nr: usize, m: &[f32]) {
        let Plan { bias, dst, co, oh, ow, th, tw, .. } = *self;
        let p = nr * tw;
        for oc in 0..co {
            let bv = bias.map_or(0.0, |b| b[oc]);
            for (i, row) in (r0..r0 + nr).enumerate() {
                let (b, ty) = (row / th, row % th);
                let out_plane = (b * co + oc) * oh * ow;
                for t0 in (0..tw).step_by(L) {
                    let at = |xi: usize| (xi * co + oc) * p + i * tw + t0;
                    // q[l][r] = Σ_j Aᵀ[r][j] M[j][l], then y[r][dx] = Σ_l Aᵀ[dx][l] q[l][r].
                    let mut q = [[[0.0f32; L]; M]; A];
                    for (l, q) in q.iter_mut().enumerate() {
                        *q = combine(&W::AT, &vectors(|j| lanes(&m[at(A * j + l)..])));
                    }
                    for r in 0..M {
                        let y = M * ty + r;
                        if y >= oh {
                            break;
                        }
                        let out = combine(&W::AT, &vectors(|l| q[l][r]));
                        let columns = ow - M * t0;
                        for e in 0..L {
                            for (dx, out) in out.iter().enumerate() {
                                let x = M * e + dx;
                                if x < columns {
                                    // SAFETY: output (y, M·t0 + x) belongs to this tile, written by
                                    // this call alone (the caller's promise), inside the plane.
                                    unsafe { *dst.0.add(out_plane + y * ow + M * t0 + x) = out[e] + bv };
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// All three steps for one chunk of tile rows, on one thread.
    #[inline(always)]
    fn chunk_by_body<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(&self, r0: usize, nr: usize) {
        let p = nr * self.tw;
        let (mut v, mut m) = (scratch(A * A * self.ci * p), scratch(A * A * self.co * p + L));
        self.input_by::<A, M, R, W>(r0, nr, &mut v);
        self.products_by::<A>(p, &v, &mut m);
        // SAFETY: the chunks cover disjoint tile rows, so these outputs are this chunk's alone.
        unsafe { self.output_by::<A, M, R, W>(r0, nr, &m) };
    }

    #[cfg(all(feature = "std", target_arch = "x86_64"))]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunk_by_avx2<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(&self, r0: usize, nr: usize) {
        self.chunk_by_body::<A, M, R, W>(r0, nr)
    }

    /// One chunk of tile rows (transforms compiled for AVX2 and FMA where the CPU has them).
    fn chunk_by<const A: usize, const M: usize, const R: usize, W: Minimal<A, M, R>>(&self, r0: usize, nr: usize) {
        #[cfg(all(feature = "std", target_arch = "x86_64"))]
        if avx2() {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.chunk_by_avx2::<A, M, R, W>(r0, nr) };
        }
        self.chunk_by_body::<A, M, R, W>(r0, nr)
    }
}

/// Whether the CPU runs the transforms' AVX2 and FMA versions.
#[cfg(all(feature = "std", target_arch = "x86_64"))]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// A buffer of `n` f32 whose every element is written before it is read, except the last `L`
/// (the spare elements of `M`, read only into dropped lanes), which are zeroed.
fn scratch(n: usize) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns; the callers write the head before reading it,
    // and the tail is zeroed just below.
    unsafe { v.set_len(n.saturating_sub(L)) };
    v.resize(n, 0.0);
    v
}

/// Lanes of the generic transforms (one AVX2 vector of f32).
const L: usize = 8;
type Lanes = [f32; L];

/// The first `L` elements of `x` as a vector.
#[inline(always)]
fn lanes(x: &[f32]) -> Lanes {
    x[..L].try_into().unwrap()
}

/// `[f(0), …, f(K − 1)]`, unrolled (`core::array::from_fn` was left as a call per vector).
#[inline(always)]
fn vectors<const K: usize>(f: impl Fn(usize) -> Lanes) -> [Lanes; K] {
    let mut x = [[0.0f32; L]; K];
    for (k, x) in x.iter_mut().enumerate() {
        *x = f(k);
    }
    x
}

/// The first `n.min(L)` lanes of `x` into `dst`: a whole vector when it fits (one store
/// instead of a `memmove` call).
#[inline(always)]
fn store(dst: &mut [f32], x: &Lanes, n: usize) {
    if n >= L {
        dst[..L].copy_from_slice(x);
    } else {
        dst[..n].copy_from_slice(&x[..n]);
    }
}

/// `y = mat · x` for vectors `x[k]`: with `mat` a constant and the loops unrolled, the zero
/// coefficients vanish and ±1 need no multiplication.
#[inline(always)]
fn combine<const K: usize, const N: usize>(mat: &[[f32; K]; N], x: &[Lanes; K]) -> [Lanes; N] {
    let mut y = [[0.0f32; L]; N];
    for (y, row) in y.iter_mut().zip(mat) {
        for (xk, &c) in x.iter().zip(row) {
            if c != 0.0 {
                for (y, &x) in y.iter_mut().zip(xk) {
                    *y += c * x;
                }
            }
        }
    }
    y
}

/// Convolution `x [B, Ci, H, W]`, `weight [Co, Ci, 3, 3]` or `[Co, Ci, 5, 5]`, stride 1 (see
/// [`takes`]): F(2×2, 3×3) by the hand-written transforms, F(2×2, 5×5) by the generic engine.
pub(crate) fn conv2d(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, o: &ConvOptions<2>) -> FlexTensor {
    if weight.layout().shape().dims::<4>()[2] == 5 {
        run(x, weight, bias, o, 5, 36, transform_weights_by::<6, 2, 5, F2x5>, |plan, r0, nr| plan.chunk_by::<6, 2, 5, F2x5>(r0, nr))
    } else {
        run(x, weight, bias, o, 3, 16, transform_weights, |plan, r0, nr| plan.chunk(r0, nr))
    }
}

/// The convolution by 2×2 output tiles of an `r`×`r` kernel whose algorithm has `a2` products
/// per tile: transformed weights, then chunks of whole tile rows over (image, tile row) in
/// parallel, each near [`CHUNK_BUDGET`], at least 64 tiles (the GEMMs' width), and at least two
/// per thread when there are enough rows.
fn run(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, o: &ConvOptions<2>, r: usize, a2: usize, transform: fn(&[f32], usize, usize) -> Vec<f32>, chunk: impl Fn(&Plan, usize, usize) + Sync) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let [batch, ci, h, w]: [usize; 4] = x.layout().shape().dims();
    let co = weight.layout().shape().dims::<4>()[0];
    let [ph, pw] = o.padding;
    let (oh, ow) = (h + 2 * ph + 1 - r, w + 2 * pw + 1 - r);
    let (th, tw) = (oh.div_ceil(2), ow.div_ceil(2));
    let u = transform(weight.storage::<f32>(), co, ci);
    let bias = bias.map(|b| b.to_contiguous());
    let bias: Option<&[f32]> = bias.as_ref().map(|b| b.storage::<f32>());
    let xd: &[f32] = x.storage();
    let rows = batch * th;
    let per_chunk = (CHUNK_BUDGET / (a2 * ci * tw)).max(64usize.div_ceil(tw)).min(rows.div_ceil(2 * threads())).max(1);
    let chunks: Vec<(usize, usize)> = (0..rows).step_by(per_chunk).map(|r| (r, per_chunk.min(rows - r))).collect();
    let len = batch * co * oh * ow;
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let dst = Shared(out.as_mut_ptr());
    let plan = Plan { xd, u: &u, bias, dst, ci, co, h, w, ph, pw, oh, ow, th, tw };
    let each = |&(r0, nr): &(usize, usize)| chunk(&plan, r0, nr);
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        chunks.par_iter().for_each(each);
    }
    #[cfg(not(feature = "rayon"))]
    chunks.iter().for_each(each);
    // SAFETY: the chunks cover every (image, tile row), the tiles every output element.
    unsafe { out.set_len(len) };
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(Shape::from(vec![batch, co, oh, ow])), DType::F32)
}
