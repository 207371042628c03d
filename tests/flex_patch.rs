//! The vendored burn-flex patch (row-wise strided copies and broadcast binary ops) must give
//! exactly what the element-by-element definition gives.
use burn::tensor::{Tensor, TensorData};

type B = preimage::device::Cpu;

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn swapped_dims_copy_matches_manual_transpose() {
    let (n, c, h, w) = (3, 4, 5, 6);
    let data: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [n, c, h, w]), &Default::default());
    // swap_dims + reshape forces a contiguous copy of a [C, N, H·W] layout.
    let got = x.swap_dims(0, 1).reshape([c, n, h, w]);
    let got = values(got);
    for ci in 0..c {
        for ni in 0..n {
            for k in 0..h * w {
                assert_eq!(got[(ci * n + ni) * h * w + k], data[(ni * c + ci) * h * w + k]);
            }
        }
    }
}

/// Per-channel `[1, C, 1, 1]` against `[N, C, H, W]` (rows cycling through C scalars, patch
/// 19), below and above the size that splits rows over the threads, on a lhs that is shared
/// (copied), unique (in place) and permuted (general path); and a `[N, 1, H, 1]` rhs that no
/// fast path takes.
#[test]
fn broadcast_binary_ops_match_manual() {
    for (n, c, h, w) in [(2, 3, 4, 5), (2, 3, 112, 96), (1, 5, 7, 3)] {
        let device = Default::default();
        let data: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
        let per_c: Vec<f32> = (0..c).map(|i| 1.0 + i as f32).collect();
        let per_ny: Vec<f32> = (0..n * h).map(|i| 0.5 - i as f32).collect();
        let x = || Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [n, c, h, w]), &device);
        let s = Tensor::<B, 4>::from_data(TensorData::new(per_c.clone(), [1, c, 1, 1]), &device);
        let t = Tensor::<B, 4>::from_data(TensorData::new(per_ny.clone(), [n, 1, h, 1]), &device);
        let shared = x();
        let xt = shared.clone().permute([0, 1, 3, 2]);
        let sub = values(shared.clone() - s.clone());
        let div = values(xt / s.clone().permute([0, 1, 3, 2]));
        let mul = values(s.clone() * shared.clone());
        let add = values(x() + s.clone());
        let div_unique = values(x() / s.clone());
        let sub_t = values(x() - t.clone());
        for ni in 0..n {
            for ci in 0..c {
                for y in 0..h {
                    for z in 0..w {
                        let i = ((ni * c + ci) * h + y) * w + z;
                        assert_eq!(sub[i], data[i] - per_c[ci], "sub {n}x{c}x{h}x{w} at {i}");
                        assert_eq!(mul[i], per_c[ci] * data[i], "mul {n}x{c}x{h}x{w} at {i}");
                        assert_eq!(add[i], data[i] + per_c[ci], "add {n}x{c}x{h}x{w} at {i}");
                        assert_eq!(div_unique[i], data[i] / per_c[ci], "div {n}x{c}x{h}x{w} at {i}");
                        assert_eq!(sub_t[i], data[i] - per_ny[ni * h + y], "[n,1,h,1] at {i}");
                        let it = ((ni * c + ci) * w + z) * h + y;
                        assert_eq!(div[it], data[i] / per_c[ci], "permuted div at {i}");
                    }
                }
            }
        }
    }
}

// ---- Whole-batch GEMM convolutions (vendor/burn-flex/src/ops/conv_gemm.rs) ----------------
// Forward values and the gradients of Σ out·r with respect to x, weight and bias are checked
// against the definition summed term by term, for stride, padding, dilation, groups and
// output padding that differ per axis.

type Ad = preimage::device::CpuAd;
use burn::tensor::module::{conv2d, conv_transpose2d};
use burn::tensor::ops::{ConvOptions, ConvTransposeOptions};

fn seq(n: usize, seed: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32 + seed) * 0.7137).sin()).collect()
}

fn leaf(data: &[f32], shape: [usize; 4]) -> Tensor<Ad, 4> {
    Tensor::from_data(TensorData::new(data.to_vec(), shape), &Default::default()).require_grad()
}

/// One window of a (transposed) convolution: `small` grid position and kernel tap → the
/// position on the `large` side, if inside.
fn meet(i: usize, k: usize, s: usize, d: usize, p: usize, large: usize) -> Option<usize> {
    (i * s + k * d).checked_sub(p).filter(|&o| o < large)
}

struct Case {
    b: usize,
    ci: usize,
    co: usize,
    small: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    p: [usize; 2],
    d: [usize; 2],
    po: [usize; 2],
    g: usize,
}

const CASES: [Case; 20] = [
    // The decoders' up-convolution: 4×4, stride 2, padding 1 (its own scatter), also on a
    // grid of one row, and with output padding (the general scatter).
    Case { b: 2, ci: 4, co: 6, small: [3, 5], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    Case { b: 2, ci: 3, co: 5, small: [1, 2], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    Case { b: 2, ci: 3, co: 5, small: [3, 2], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [1, 0], g: 1 },
    Case { b: 3, ci: 4, co: 6, small: [4, 3], k: [3, 2], s: [2, 3], p: [1, 0], d: [2, 1], po: [1, 0], g: 2 },
    Case { b: 1, ci: 3, co: 2, small: [5, 4], k: [3, 3], s: [1, 1], p: [1, 2], d: [1, 1], po: [0, 0], g: 1 },
    // Large enough that the tiled gradients split an image into several bands of rows
    // (transposed conv: 16·4·4 gathered rows × 64 columns; conv: 16·3·3 rows × 70 columns).
    Case { b: 1, ci: 2, co: 16, small: [64, 64], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    Case { b: 2, ci: 16, co: 2, small: [40, 70], k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    // Read as a convolution: the tiled GEMM forward (more than 4 input channels), grouped,
    // strided and dilated differently per axis.
    Case { b: 2, ci: 6, co: 8, small: [5, 7], k: [3, 5], s: [2, 1], p: [1, 2], d: [1, 2], po: [0, 0], g: 2 },
    // Stride 2 with odd kernels: taps added in pairs and one alone, with columns where only
    // one tap of a pair lands.
    Case { b: 2, ci: 3, co: 4, small: [4, 6], k: [3, 5], s: [2, 2], p: [0, 2], d: [1, 1], po: [1, 1], g: 1 },
    // The convolution's tiles are spans of positions in multiples of 16, not whole rows:
    // 64·3·3 gathered rows split the 23×41 grid at positions 320 and 640, in the middle of
    // rows 7 and 15 (grid rows of 32 and more are copied row-wise, shorter ones by table).
    Case { b: 2, ci: 64, co: 4, small: [23, 41], k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    // Small grids: several images per tile (9 images of 3×5), and weight gradients of 16K
    // elements a group over a short sum, computed by columns of 16 channels' taps, grouped.
    Case { b: 9, ci: 64, co: 64, small: [3, 5], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 2 },
    // By columns with the sum in blocks: of 4 whole 16×16 images, then of bands of 16 rows of
    // a 32×64 image.
    Case { b: 9, ci: 32, co: 32, small: [16, 16], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    Case { b: 2, ci: 32, co: 32, small: [32, 64], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    // The input gradient's gather of the up-convolution, tap rows copied two source elements
    // apart, in tiles that end in the middle of grid rows (spans of 16·k positions of a
    // 24-wide grid).
    Case { b: 2, ci: 3, co: 32, small: [30, 24], k: [4, 4], s: [2, 2], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    // Stride 4 (AlexNet's conv1): the gather reads whole strides of 4.
    Case { b: 2, ci: 5, co: 3, small: [3, 4], k: [3, 5], s: [4, 4], p: [1, 2], d: [1, 1], po: [0, 0], g: 1 },
    // Stride 1: the convolution's input gradient as a convolution with the flipped kernel
    // (upstream's column matrix 32·3·2 × 2·48·61 × 4 bytes ≥ 4 MiB), dilated and padded
    // differently per axis; then padding beyond the kernel's reach on one axis, which keeps
    // upstream's transposed convolution although its column matrix is as large.
    Case { b: 2, ci: 32, co: 8, small: [48, 60], k: [3, 2], s: [1, 1], p: [2, 0], d: [2, 1], po: [0, 0], g: 1 },
    Case { b: 1, ci: 6, co: 5, small: [244, 246], k: [1, 3], s: [1, 1], p: [1, 2], d: [1, 1], po: [0, 0], g: 1 },
    // Short rows at stride 1 (posenet's 8×8 grids): each plane copied once with its zero
    // border, every tap's row one copy from it; grouped, a 3×2 kernel padded on one axis.
    Case { b: 3, ci: 8, co: 6, small: [8, 7], k: [3, 2], s: [1, 1], p: [1, 0], d: [1, 1], po: [0, 0], g: 2 },
    // Rows of 16 and 4 (fixed-size copies).
    Case { b: 2, ci: 5, co: 3, small: [5, 16], k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
    Case { b: 2, ci: 5, co: 3, small: [3, 4], k: [3, 3], s: [1, 1], p: [1, 1], d: [1, 1], po: [0, 0], g: 1 },
];

impl Case {
    /// The transposed convolution's output size (the convolution's input size).
    fn large(&self) -> [usize; 2] {
        [0, 1].map(|a| (self.small[a] - 1) * self.s[a] + self.d[a] * (self.k[a] - 1) + self.po[a] + 1 - 2 * self.p[a])
    }

    /// Every term of the sum: image `b`, channel `i` on the small side and `o` on the large side
    /// (same group), kernel tap `(ky, kx)`, small position `(y, z)` and large position `(ly, lz)`.
    fn each_term(&self, mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize, usize, usize)) {
        let large = self.large();
        let (cig, cog) = (self.ci / self.g, self.co / self.g);
        for b in 0..self.b {
            for i in 0..self.ci {
                for o in (i / cig) * cog..(i / cig + 1) * cog {
                    for ky in 0..self.k[0] {
                        for kx in 0..self.k[1] {
                            for y in 0..self.small[0] {
                                for z in 0..self.small[1] {
                                    let (Some(ly), Some(lz)) = (meet(y, ky, self.s[0], self.d[0], self.p[0], large[0]), meet(z, kx, self.s[1], self.d[1], self.p[1], large[1])) else { continue };
                                    f(b, i, o, ky, kx, y, z, ly, lz);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn assert_close(name: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        // f32 sums of up to ~10⁴ terms against f64: a wrong window would be off by O(1).
        assert!((*g as f64 - w).abs() <= 1e-3 * (1.0 + w.abs()), "{name}[{i}]: {g} vs {w}");
    }
}

/// Runs `f` on the default pool and on one of 7 threads: tiles are cut by the thread count
/// (a single image's positions in equal shares), so the two cut differently.
fn on_pools(f: impl Fn() + Send + Sync) {
    f();
    rayon::ThreadPoolBuilder::new().num_threads(7).build().unwrap().install(&f);
}

#[test]
fn conv_transpose2d_and_its_gradients_match_the_definition() {
    on_pools(|| for c in &CASES {
        let cog = c.co / c.g;
        let large = c.large();
        let (xs, ws) = ([c.b, c.ci, c.small[0], c.small[1]], [c.ci, cog, c.k[0], c.k[1]]);
        let (xv, wv, bv) = (seq(xs.iter().product(), 1.0), seq(ws.iter().product(), 2.0), seq(c.co, 3.0));
        let rv = seq(c.b * c.co * large[0] * large[1], 4.0);
        let (x, w) = (leaf(&xv, xs), leaf(&wv, ws));
        let bias = Tensor::<Ad, 1>::from_data(TensorData::new(bv.clone(), [c.co]), &Default::default()).require_grad();
        let out = conv_transpose2d(x.clone(), w.clone(), Some(bias.clone()), ConvTransposeOptions::new(c.s, c.p, c.po, c.d, c.g));
        assert_eq!(out.dims(), [c.b, c.co, large[0], large[1]]);
        let r = Tensor::<Ad, 4>::from_data(TensorData::new(rv.clone(), out.dims()), &Default::default());
        let grads = (out.clone() * r).sum().backward();

        let mut want = vec![0f64; rv.len()];
        let (mut gx, mut gw, mut gb) = (vec![0f64; xv.len()], vec![0f64; wv.len()], vec![0f64; c.co]);
        let oi = |b: usize, o: usize, y: usize, z: usize| ((b * c.co + o) * large[0] + y) * large[1] + z;
        for b in 0..c.b {
            for o in 0..c.co {
                for y in 0..large[0] {
                    for z in 0..large[1] {
                        want[oi(b, o, y, z)] += bv[o] as f64;
                        gb[o] += rv[oi(b, o, y, z)] as f64;
                    }
                }
            }
        }
        c.each_term(|b, i, o, ky, kx, y, z, oy, ox| {
            let wi = ((i * cog + o % cog) * c.k[0] + ky) * c.k[1] + kx;
            let xi = ((b * c.ci + i) * c.small[0] + y) * c.small[1] + z;
            let ro = oi(b, o, oy, ox);
            want[ro] += xv[xi] as f64 * wv[wi] as f64;
            gx[xi] += wv[wi] as f64 * rv[ro] as f64;
            gw[wi] += xv[xi] as f64 * rv[ro] as f64;
        });
        assert_close("conv_transpose2d", &out.into_data().to_vec::<f32>().unwrap(), &want);
        assert_close("x grad", &x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gx);
        assert_close("weight grad", &w.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gw);
        assert_close("bias grad", &bias.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gb);
    });
}

#[test]
fn conv2d_and_its_gradients_match_the_definition() {
    on_pools(|| for c in &CASES {
        // Read each case as a convolution from the large grid to the small one.
        let cig = c.ci / c.g;
        let large = c.large();
        let (xs, ws) = ([c.b, c.ci, large[0], large[1]], [c.co, cig, c.k[0], c.k[1]]);
        let (xv, wv) = (seq(xs.iter().product(), 5.0), seq(ws.iter().product(), 6.0));
        let bv = seq(c.co, 10.0);
        let (x, w) = (leaf(&xv, xs), leaf(&wv, ws));
        let bias = Tensor::<Ad, 1>::from_data(TensorData::new(bv.clone(), [c.co]), &Default::default()).require_grad();
        let out = conv2d(x.clone(), w.clone(), Some(bias.clone()), ConvOptions::new(c.s, c.p, c.d, c.g));
        let os = out.dims();
        assert_eq!(&os[2..], &c.small[..], "conv2d output size");
        let mut want: Vec<f64> = (0..os.iter().product()).map(|i| bv[i / (c.small[0] * c.small[1]) % c.co] as f64).collect();
        let rv = seq(os.iter().product(), 7.0);
        let r = Tensor::<Ad, 4>::from_data(TensorData::new(rv.clone(), os), &Default::default());
        let grads = (out.clone() * r).sum().backward();
        let (mut gx, mut gw) = (vec![0f64; xv.len()], vec![0f64; wv.len()]);
        c.each_term(|b, i, o, ky, kx, y, z, iy, ix| {
            let wi = ((o * cig + i % cig) * c.k[0] + ky) * c.k[1] + kx;
            let xi = ((b * c.ci + i) * large[0] + iy) * large[1] + ix;
            let ro = ((b * c.co + o) * c.small[0] + y) * c.small[1] + z;
            want[ro] += xv[xi] as f64 * wv[wi] as f64;
            gx[xi] += wv[wi] as f64 * rv[ro] as f64;
            gw[wi] += xv[xi] as f64 * rv[ro] as f64;
        });
        assert_close("conv2d", &out.clone().into_data().to_vec::<f32>().unwrap(), &want);
        assert_close("conv2d x grad", &x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gx);
        assert_close("conv2d weight grad", &w.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gw);
        let plane = c.small[0] * c.small[1];
        let mut gb = vec![0f64; c.co];
        rv.iter().enumerate().for_each(|(i, r)| gb[i / plane % c.co] += *r as f64);
        assert_close("conv2d bias grad", &bias.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap(), &gb);
    });
}

#[test]
fn tiled_weight_gradients_are_bit_reproducible() {
    // Same inputs, same gradients to the last bit: the tiled sums have a fixed order, so a
    // seed fixes a training run whatever the thread scheduling.
    let c = &CASES[3];
    let xs = [4, c.ci, c.small[0], c.small[1]];
    let ws = [c.ci, c.co, c.k[0], c.k[1]];
    let grads = || {
        let (x, w) = (leaf(&seq(xs.iter().product(), 8.0), xs), leaf(&seq(ws.iter().product(), 9.0), ws));
        let out = conv_transpose2d(x, w.clone(), None, ConvTransposeOptions::new(c.s, c.p, c.po, c.d, 1));
        let g = out.powf_scalar(2.0).sum().backward();
        w.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap()
    };
    let first = grads();
    for _ in 0..5 {
        assert_eq!(grads(), first);
    }
}

// ---- Row-wise max pooling (vendor/burn-flex/src/ops/max_pool2d.rs) -------------------------
// Values, indices and the gradient against the definition: the first valid tap in row-major
// order starts the maximum, a later tap replaces it only when strictly greater.

use burn::tensor::module::{max_pool2d, max_pool2d_with_indices};

/// (value, flat input index) per output of a `[h, w]` plane, or `(-inf, -1)` without a valid tap.
#[allow(clippy::too_many_arguments)]
fn pool_definition(plane: &[f32], h: usize, w: usize, out: [usize; 2], k: [usize; 2], s: [usize; 2], p: [usize; 2], d: [usize; 2]) -> Vec<(f32, i64)> {
    let mut res = Vec::new();
    for oy in 0..out[0] {
        for ox in 0..out[1] {
            let mut best = (f32::NEG_INFINITY, -1i64);
            for ky in 0..k[0] {
                for kx in 0..k[1] {
                    let (Some(y), Some(x)) = (meet(oy, ky, s[0], d[0], p[0], h), meet(ox, kx, s[1], d[1], p[1], w)) else { continue };
                    let v = plane[y * w + x];
                    if best.1 < 0 || v > best.0 {
                        best = (v, (y * w + x) as i64);
                    }
                }
            }
            res.push(best);
        }
    }
    res
}

#[test]
fn max_pool2d_matches_the_definition() {
    // (input [h, w], kernel, stride, padding, dilation, ceil_mode)
    let cases: [([usize; 2], [usize; 2], [usize; 2], [usize; 2], [usize; 2], bool); 12] = [
        // 2×2 at stride 2 inside the plane: `pool_pairs`; odd sizes leave a row and a column out.
        ([8, 8], [2, 2], [2, 2], [0, 0], [1, 1], false),
        ([9, 7], [2, 2], [2, 2], [0, 0], [1, 1], false),
        // ceil_mode on an odd size: a partial last window, the general path.
        ([9, 7], [2, 2], [2, 2], [0, 0], [1, 1], true),
        ([11, 9], [3, 3], [2, 2], [1, 1], [1, 1], false),
        ([10, 9], [3, 2], [2, 3], [0, 1], [1, 1], true),
        ([9, 12], [3, 3], [1, 2], [1, 0], [2, 3], false),
        ([7, 7], [3, 3], [1, 1], [1, 1], [1, 1], false),
        // ceil_mode with padding: the last window starts in the right padding.
        ([5, 5], [2, 2], [2, 2], [1, 1], [1, 1], true),
        // Every window inside the plane without padding: `pool_inside` (AlexNet's 3×3 stride 2;
        // a 3×2 kernel at strides 2×3; stride 1, whose runs are contiguous).
        ([11, 13], [3, 3], [2, 2], [0, 0], [1, 1], false),
        ([10, 11], [3, 2], [2, 3], [0, 0], [1, 1], false),
        ([7, 8], [3, 3], [1, 1], [0, 0], [1, 1], false),
        // Planes in parallel when the taps (6·47·44 outputs × 9) are worth it, although the
        // output alone is below the parallel threshold (a single image's pool1, pool2).
        ([96, 90], [3, 3], [2, 2], [0, 0], [1, 1], false),
    ];
    let (b, c) = (2, 3);
    for (n, &(hw, k, s, p, d, ceil)) in cases.iter().enumerate() {
        let len = b * c * hw[0] * hw[1];
        // Coarse values so windows hold ties; a NaN in two planes tests that it is kept only
        // where it is a window's first tap.
        let mut xv: Vec<f32> = (0..len).map(|i| ((i as f32 * 0.7137 + n as f32).sin() * 3.0).round()).collect();
        xv[0] = f32::NAN;
        xv[hw[0] * hw[1] + hw[1] + 1] = f32::NAN;
        let shape = [b, c, hw[0], hw[1]];
        let x = Tensor::<B, 4>::from_data(TensorData::new(xv.clone(), shape), &Default::default());
        let (out, idx) = max_pool2d_with_indices(x.clone(), k, s, p, d, ceil);
        let os = out.dims();
        let plain = max_pool2d(x, k, s, p, d, ceil);
        assert_eq!(plain.dims(), os);
        let (got, got_plain) = (values(out), values(plain));
        let got_idx = idx.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let plane = hw[0] * hw[1];
        let mut want = Vec::new();
        for q in 0..b * c {
            want.extend(pool_definition(&xv[q * plane..][..plane], hw[0], hw[1], [os[2], os[3]], k, s, p, d));
        }
        assert_eq!(want.len(), got.len(), "case {n}: output size");
        let same = |a: f32, b: f32| a == b || (a.is_nan() && b.is_nan());
        for (i, (wv, wi)) in want.iter().enumerate() {
            assert!(same(got[i], *wv) && same(got_plain[i], *wv), "case {n} value {i}: {} / {} vs {wv}", got[i], got_plain[i]);
            assert_eq!(got_idx[i], *wi, "case {n} index {i}");
        }

        // Gradient of Σ out·r: each r lands on its window's argmax (summed where shared).
        let xa = Tensor::<Ad, 4>::from_data(TensorData::new(xv.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect::<Vec<_>>(), shape), &Default::default()).require_grad();
        let (out, idx) = max_pool2d_with_indices(xa.clone(), k, s, p, d, ceil);
        let idx = idx.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let rv = seq(out.dims().iter().product(), 11.0);
        let r = Tensor::<Ad, 4>::from_data(TensorData::new(rv.clone(), out.dims()), &Default::default());
        let g = (out * r).sum().backward();
        let mut gx = vec![0f64; len];
        let per_plane = os[2] * os[3];
        for (o, (&i, rv)) in idx.iter().zip(&rv).enumerate() {
            if i >= 0 {
                gx[o / per_plane * plane + i as usize] += *rv as f64;
            }
        }
        assert_close(&format!("case {n} max_pool2d grad"), &xa.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap(), &gx);
    }
}

// ---- Products with one short side (vendor/burn-flex/src/ops/matmul.rs, `split_long_side`) ----
// The long side is cut into one block per thread; a long right operand contiguous along the
// sum goes through a column-major buffer. Each layout against the f64 definition, on a pool of
// three threads so that the blocks (384, 384, 232 of 1 000) are cut whatever the machine.

/// `[rows, cols]` holding `data` (row-major), stored row-major or as the transposed view of
/// `[cols, rows]` storage.
fn matrix(data: &[f32], [rows, cols]: [usize; 2], transposed_storage: bool) -> Tensor<B, 2> {
    let d = Default::default();
    if !transposed_storage {
        return Tensor::from_data(TensorData::new(data.to_vec(), [rows, cols]), &d);
    }
    let t: Vec<f32> = (0..cols * rows).map(|i| data[(i % rows) * cols + i / rows]).collect();
    Tensor::<B, 2>::from_data(TensorData::new(t, [cols, rows]), &d).transpose()
}

#[test]
fn short_side_products_match_the_definition() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let (short, k, long) = (7, 1100, 1000);
    // A side of 1 (a matrix-vector product) splits from 1 Mi matrix elements: 1 100 000 here.
    for (m, n) in [(short, long), (long, short), (1, long), (long, 1)] {
        let (a, b) = (seq(m * k, 10.0), seq(k * n, 11.0));
        let want: Vec<f64> = (0..m * n).map(|o| (0..k).map(|i| a[o / n * k + i] as f64 * b[i * n + o % n] as f64).sum()).collect();
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            let got = pool.install(|| matrix(&a, [m, k], ta).matmul(matrix(&b, [k, n], tb)).into_data().to_vec::<f32>().unwrap());
            assert_close(&format!("[{m},{k}]·[{k},{n}] transposed storage {ta}/{tb}"), &got, &want);
        }
    }
}

/// Twelfth patch: Flex's `empty`/`zeros` allocate zeroed buffers with the element's own
/// alignment instead of copying a byte vector into a 16-byte-aligned one. Every width must read
/// back as zeros of the right length and take in-place and fresh results alike.
#[test]
fn zeros_of_every_element_width_read_back_as_zeros() {
    use burn::tensor::{Bool, Int};
    let device = Default::default();
    let f = Tensor::<B, 3>::zeros([2, 3, 5], &device);
    assert_eq!(f.clone().into_data().to_vec::<f32>().unwrap(), vec![0.0; 30]);
    let sum: f32 = (f + 2.5).sum().into_scalar();
    assert_eq!(sum, 75.0);
    let i = Tensor::<B, 2, Int>::zeros([3, 7], &device);
    assert_eq!(i.clone().into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![0; 21]);
    assert_eq!((i + 4).sum().into_data().convert::<i64>().to_vec::<i64>().unwrap(), vec![84]);
    let b = Tensor::<B, 2, Bool>::empty([4, 3], &device);
    assert_eq!(b.into_data().to_vec::<bool>().unwrap(), vec![false; 12]);
    // A matmul writes its product into an `empty` output.
    let a = Tensor::<B, 2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3]), &device);
    let p = a.clone().matmul(a.transpose());
    assert_eq!(p.into_data().to_vec::<f32>().unwrap(), vec![14.0, 32.0, 32.0, 77.0]);
}

/// `powf_scalar(3.0)` is cubed by multiplications (the α-norm's `(Σ x²)³`): values, NaN and
/// the gradient 3x² against f64.
#[test]
fn cubes_match_the_definition() {
    let xv = [-2.5f32, -1.0, -0.0, 0.0, 0.3, 1.7, 3.0, 1e12, -7.25e-3, f32::NAN];
    let x = Tensor::<Ad, 1>::from_data(TensorData::new(xv.to_vec(), [xv.len()]), &Default::default()).require_grad();
    let y = x.clone().powf_scalar(3.0);
    let got = y.clone().into_data().to_vec::<f32>().unwrap();
    let g = y.sum().backward();
    let gx = x.grad(&g).unwrap().into_data().to_vec::<f32>().unwrap();
    for (i, &v) in xv.iter().enumerate() {
        let (want, dwant) = ((v as f64).powi(3), 3.0 * (v as f64).powi(2));
        if v.is_nan() {
            assert!(got[i].is_nan() && gx[i].is_nan(), "NaN³ is NaN, got {} and {}", got[i], gx[i]);
            continue;
        }
        assert!((got[i] as f64 - want).abs() <= 1e-6 * want.abs(), "{v}³ = {} vs {want}", got[i]);
        assert!((gx[i] as f64 - dwant).abs() <= 1e-6 * dwant.abs(), "d{v}³/dx = {} vs {dwant}", gx[i]);
    }
}

/// Element-wise maps over 300 001 elements (above the patch's 64 Ki split, not a multiple of its
/// chunk): in place on a unique tensor, into a new buffer for a shared one, from an offset slice,
/// and binary ops in both forms, each against the element-by-element result.
#[test]
fn large_elementwise_ops_match_the_definition() {
    let n = 300_001;
    let dev = Default::default();
    let av: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0).collect();
    let bv: Vec<f32> = (0..n).map(|i| ((i * 104729) % 997) as f32 / 100.0 + 0.5).collect();
    let a = || Tensor::<B, 1>::from_data(TensorData::new(av.clone(), [n]), &dev);
    let b = || Tensor::<B, 1>::from_data(TensorData::new(bv.clone(), [n]), &dev);
    let check = |what: &str, t: Tensor<B, 1>, want: &dyn Fn(usize) -> f32, offset: usize| {
        let got = t.into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), n - offset, "{what}: length");
        for (i, g) in got.iter().enumerate() {
            let w = want(i + offset);
            assert!((g - w).abs() <= 1e-6 * w.abs().max(1.0), "{what}[{i}] = {g}, want {w}");
        }
    };
    check("exp in place", a().exp(), &|i| av[i].exp(), 0);
    let shared = a();
    check("exp of a shared tensor", shared.clone().exp(), &|i| av[i].exp(), 0);
    check("exp of a slice", shared.clone().slice([1..n]).exp(), &|i| av[i].exp(), 1);
    check("relu", a().clamp_min(0.0), &|i| av[i].max(0.0), 0);
    check("mul_scalar in place", a().mul_scalar(1.5), &|i| av[i] * 1.5, 0);
    check("mul_scalar of a shared tensor", shared.clone().mul_scalar(1.5), &|i| av[i] * 1.5, 0);
    check("add in place", a() + b(), &|i| av[i] + bv[i], 0);
    check("div of shared tensors", shared.clone() / b(), &|i| av[i] / bv[i], 0);
    let bs = b();
    check("sub of two shared tensors", shared.clone() - bs.clone(), &|i| av[i] - bv[i], 0);
    check("mul of two shared tensors", shared * bs, &|i| av[i] * bv[i], 0);
}

/// 3×3 and 5×5 stride-1 convolutions with at least 64 channels each way go through Winograd's
/// F(2×2, 3×3) and F(2×2, 5×5) (vendor/burn-flex/src/ops/winograd.rs): odd output sizes (a
/// partial last tile row and column), padding 0, 1 and 2, several images per chunk and images
/// split into chunks.
#[test]
fn winograd_convolutions_match_the_definition() {
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions;
    // (kernel, batch, ci, co, h, w, padding): at least 64 channels, output rows of 12 and 256
    // tiles (the patch's conditions).
    let cases = [(3, 6, 64, 64, 13, 13, 1), (3, 1, 64, 72, 42, 27, 0), (3, 3, 64, 64, 22, 13, 2), (3, 2, 80, 64, 27, 30, 1)];
    let cases_5x5 = [(5, 6, 64, 64, 13, 13, 2), (5, 1, 64, 72, 44, 40, 0), (5, 4, 64, 64, 22, 16, 1), (5, 3, 80, 64, 25, 17, 2)];
    for &(k, b, ci, co, h, w, p) in cases.iter().chain(&cases_5x5) {
        let (xs, ws) = ([b, ci, h, w], [co, ci, k, k]);
        let (xv, wv, bv) = (seq(xs.iter().product(), 5.0), seq(ws.iter().product(), 6.0), seq(co, 10.0));
        let dev = Default::default();
        let x = Tensor::<B, 4>::from_data(TensorData::new(xv.clone(), xs), &dev);
        let wt = Tensor::<B, 4>::from_data(TensorData::new(wv.clone(), ws), &dev);
        let bias = Tensor::<B, 1>::from_data(TensorData::new(bv.clone(), [co]), &dev);
        let out = conv2d(x, wt, Some(bias), ConvOptions::new([1, 1], [p, p], [1, 1], 1));
        let (oh, ow) = (h + 2 * p + 1 - k, w + 2 * p + 1 - k);
        assert_eq!(out.dims(), [b, co, oh, ow], "output shape");
        let mut want = vec![0f64; b * co * oh * ow];
        for n in 0..b {
            for o in 0..co {
                for y in 0..oh {
                    for z in 0..ow {
                        let mut s = bv[o] as f64;
                        for i in 0..ci {
                            for ky in 0..k {
                                for kx in 0..k {
                                    let (iy, ix) = ((y + ky) as isize - p as isize, (z + kx) as isize - p as isize);
                                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                        s += xv[((n * ci + i) * h + iy as usize) * w + ix as usize] as f64 * wv[((o * ci + i) * k + ky) * k + kx] as f64;
                                    }
                                }
                            }
                        }
                        want[((n * co + o) * oh + y) * ow + z] = s;
                    }
                }
            }
        }
        assert_close(&format!("winograd {k}×{k} conv2d {b}×{ci}×{h}×{w} → {co}, padding {p}"), &values(out), &want);
    }
}
