//! Unit tests of the engine: every objective term's gradient against central finite
//! differences on a tiny random posenet (16×16 input), the parameterizations and transforms,
//! the solvers, determinism and error messages.
use super::objective::{self as o, Natural, Objective, Target, Unit};
use super::param::{ParamConfig, ParamKind, Parameterization};
use super::solver::{SolverConfig, SolverKind};
use super::*;
use crate::encoder::{self, WeightSource};

type A = crate::device::CpuAd;
type I = crate::device::Cpu;

fn dev() -> burn::backend::flex::FlexDevice {
    Default::default()
}

fn net(size: usize) -> ConvNet<A> {
    encoder::load::<A>("posenet", &WeightSource::Random(3), Some(size), &dev()).unwrap().net
}

fn rand<Bk: Backend, const D: usize>(shape: [usize; D], seed: u64, lo: f32, hi: f32) -> Tensor<Bk, D> {
    let mut r = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new((0..n).map(|_| r.range(lo, hi)).collect::<Vec<f32>>(), shape), &Default::default())
}

fn acts_inner(net: &ConvNet<A>, x: Tensor<I, 4>, tap: &str) -> Tensor<I, 2> {
    encode_inner(net, x, &[tap]).unwrap().remove(tap).unwrap().flat()
}

fn nat() -> Natural {
    Natural::new([0.5, 0.5, 0.5], 80.0)
}

/// Directional derivative from the autodiff gradient vs finite differences of the loss,
/// along two random directions. A random ReLU/max-pool network has kinks everywhere, and
/// autodiff takes one side of a kink at the point itself, so the check passes when the
/// central or one of the one-sided differences agrees within 3 % at one of three step sizes;
/// a wrong gradient (sign, factor, missing path) fails them all.
fn grad_check(engine: &Engine<A>, p: Tensor<I, 2>, stochastic: bool, what: &str) {
    let e = engine.eval(p.clone(), 5, stochastic).unwrap();
    for k in 0..2 {
        let d = rand::<I, 2>(p.dims(), 100 + k, -1.0, 1.0);
        let ad: f64 = to_vec(e.grad.clone() * d.clone()).iter().map(|&v| v as f64).sum();
        assert!(ad.abs() > 1e-4, "{what}: gradient is (numerically) zero, the check would be vacuous");
        let mut fds = Vec::new();
        for eps in [1e-3f32, 3e-4, 1e-4] {
            let fp = engine.eval(p.clone() + d.clone() * eps, 5, stochastic).unwrap().loss;
            let fm = engine.eval(p.clone() - d.clone() * eps, 5, stochastic).unwrap().loss;
            let h = eps as f64;
            fds.extend([(fp - fm) / (2.0 * h), (fp - e.loss) / h, (e.loss - fm) / h]);
        }
        let ok = fds.iter().any(|fd| (ad - fd).abs() <= 0.03 * ad.abs().max(fd.abs()) + 1e-5);
        assert!(ok, "{what}: autodiff {ad} vs finite differences {fds:?} (direction {k})");
    }
}

fn pixel_engine(obj: Objective<A>, size: usize) -> Engine<A> {
    let param = Parameterization::new(&ParamConfig::default(), [size, size], &dev());
    Engine::new(net(size), obj, param, Transforms::default(), 0).unwrap()
}

fn start_pixels(n: usize, size: usize, seed: u64) -> Tensor<I, 2> {
    rand::<I, 2>([n, 3 * size * size], seed, 0.2, 0.8)
}

#[test]
fn gradient_of_feature_match() {
    let n = net(16);
    let target = acts_inner(&n, rand([2, 3, 16, 16], 1, 0.0, 1.0), "conv3");
    let e = pixel_engine(o::feature("conv3", Tensor::from_inner(target)), 16);
    grad_check(&e, start_pixels(2, 16, 2), false, "feature(conv3)");
}

#[test]
fn gradient_of_activation_terms() {
    let n = net(16);
    let shapes = n.spec.tap_shapes().unwrap();
    // Item 0: a conv channel's mean; item 1: one neuron of the same tap.
    let ch = Unit::parse("conv5:3", &n.spec).unwrap();
    let nr = Unit::parse("conv5:7@1:0", &n.spec).unwrap();
    let mut sel = ch.select_row(&shapes["conv5"]);
    sel.extend(nr.select_row(&shapes["conv5"]));
    let d = sel.len() / 2;
    let select = Tensor::<A, 2>::from_data(TensorData::new(sel, [2, d]), &dev());
    let fc = Unit::parse("fc8:4", &n.spec).unwrap();
    let fsel = Tensor::<A, 2>::from_data(TensorData::new([fc.select_row(&shapes["fc8"]), fc.select_row(&shapes["fc8"])].concat(), [2, 10]), &dev());
    let obj = o::activation("conv5", select, "conv5") + 0.5 * o::activation("fc8", fsel, "fc8:4");
    grad_check(&pixel_engine(obj, 16), start_pixels(2, 16, 3), false, "activation");
}

#[test]
fn gradient_of_layer_l2_and_caricature() {
    let n = net(16);
    let target = acts_inner(&n, rand([1, 3, 16, 16], 4, 0.0, 1.0), "conv4");
    grad_check(&pixel_engine(o::layer_l2("conv4"), 16), start_pixels(1, 16, 5), false, "l2(conv4)");
    grad_check(&pixel_engine(o::caricature("conv4", Tensor::from_inner(target)), 16), start_pixels(1, 16, 6), false, "caricature(conv4)");
}

#[test]
fn gradient_of_content_and_style() {
    let n = net(16);
    let src = rand::<I, 4>([1, 3, 16, 16], 7, 0.0, 1.0);
    let c = acts_inner(&n, src.clone(), "conv3");
    let taps = vec!["conv1".to_string(), "conv2".to_string()];
    let mut acts = encode_inner(&n, src, &["conv1", "conv2"]).unwrap();
    let grams: Vec<Tensor<A, 3>> = taps
        .iter()
        .map(|t| match acts.remove(t.as_str()).unwrap() {
            crate::encoder::Act::Map(m) => Tensor::from_inner(o::gram(m)),
            _ => unreachable!(),
        })
        .collect();
    grad_check(&pixel_engine(o::content("conv3", Tensor::from_inner(c)), 16), start_pixels(1, 16, 8), false, "content");
    grad_check(&pixel_engine(100.0 * o::style(&taps, grams), 16), start_pixels(1, 16, 9), false, "style");
}

#[test]
fn gradient_of_class_target() {
    let onehot = Tensor::<A, 2>::from_data(TensorData::new([vec![0.0, 1.0], vec![0.0; 8], vec![0.0; 9], vec![1.0]].concat(), [2, 10]), &dev());
    grad_check(&pixel_engine(o::class_target("fc8", onehot, "1,9"), 16), start_pixels(2, 16, 10), false, "class");
}

#[test]
fn gradient_of_regularizers() {
    grad_check(&pixel_engine(o::tv(2.0, nat()), 16), start_pixels(1, 16, 11), false, "tv(2)");
    grad_check(&pixel_engine(o::tv(1.0, nat()), 16), start_pixels(1, 16, 12), false, "tv(1)");
    grad_check(&pixel_engine(o::alpha_norm(6.0, nat()), 16), start_pixels(1, 16, 13), false, "alpha(6)");
    // Similarity: the start differs from the original by up to 0.8 per channel.
    let orig = rand::<A, 4>([1, 3, 16, 16], 14, 0.0, 1.0);
    grad_check(&pixel_engine(o::similarity(orig, 0.3), 16), start_pixels(1, 16, 15), false, "similarity");
}

#[test]
fn regularizer_values_match_their_definitions() {
    // A horizontal ramp in natural scale: every Δx = 255·0.1 = 25.5, Δy = 0.
    let w = 5;
    let row: Vec<f32> = (0..w).map(|x| 0.3 + 0.1 * x as f32).collect();
    let img: Vec<f32> = (0..3).flat_map(|_| (0..4).flat_map(|_| row.clone())).collect();
    let x = Tensor::<I, 4>::from_data(TensorData::new(img.clone(), [1, 3, 4, w]), &Default::default());
    let acts = Default::default();
    let tv = o::tv::<I>(2.0, nat()).eval(&x, &acts).unwrap();
    let v = 80.0f32 / 6.5;
    let expect = 3.0 * (25.5f32 / v).powi(2); // Σ over 3 channels of (Δx/V)²
    assert!((to_vec(tv.loss)[0] - expect).abs() < 1e-3 * expect, "tv {:?} vs {expect}", to_vec(tv.terms[0].2.clone()));
    let a = o::alpha_norm::<I>(2.0, nat()).eval(&x, &acts).unwrap();
    let expect_a: f32 = row.iter().map(|p| 3.0 * (255.0 * (p - 0.5) / 80.0).powi(2)).sum::<f32>() / w as f32;
    assert!((to_vec(a.loss)[0] - expect_a).abs() < 1e-3 * expect_a.max(1e-3), "alpha");
    // Similarity ignores changes below the threshold.
    let y = x.clone() + 0.25;
    let s = o::similarity::<I>(x.clone(), 0.3).eval(&y, &acts).unwrap();
    assert_eq!(to_vec(s.loss)[0], 0.0);
    let s = o::similarity::<I>(x.clone(), 0.3).eval(&(x + 0.45), &acts).unwrap();
    assert!((to_vec(s.loss)[0] - 0.25).abs() < 1e-4, "(0.15/0.3)² = 0.25");
}

#[test]
fn objective_algebra_weights_and_sums() {
    let a: Objective<I> = o::tv(2.0, nat());
    let b: Objective<I> = o::alpha_norm(6.0, nat());
    let c = 2.0 * a.clone() + b.clone() * 0.5 - 0.25 * a;
    let w: Vec<(f32, String)> = c.terms.iter().map(|(w, t)| (*w, t.name())).collect();
    assert_eq!(w, vec![(2.0, "tv(2)".to_string()), (0.5, "alpha(6)".to_string()), (-0.25, "tv(2)".to_string())]);
    let x = rand::<I, 4>([2, 3, 6, 6], 16, 0.0, 1.0);
    let acts = Default::default();
    let total = to_vec(c.eval(&x, &acts).unwrap().loss)[0];
    let tv = to_vec(o::tv::<I>(2.0, nat()).eval(&x, &acts).unwrap().loss)[0];
    let al = to_vec(o::alpha_norm::<I>(6.0, nat()).eval(&x, &acts).unwrap().loss)[0];
    assert!((total - (1.75 * tv + 0.5 * al)).abs() < 1e-4 * total.abs().max(1.0));
    assert_eq!((0.0 * b).pruned().terms.len(), 0);
}

#[test]
fn fourier_parameterization_is_a_scaled_inverse_dft() {
    for (h, w) in [(4, 6), (5, 5)] {
        let cfg = ParamConfig { kind: ParamKind::Fourier, decorrelate: false, decay: 1.0, ..Default::default() };
        let p = Parameterization::<I>::new(&cfg, [h, w], &Default::default());
        let wf = w / 2 + 1;
        assert_eq!(p.dim(), 3 * 2 * h * wf);
        let params = rand::<I, 2>([1, p.dim()], 17, -1.0, 1.0);
        let img = to_vec(p.image(params.clone()));
        let v = to_vec(params);
        let norm = ((h * w) as f64).sqrt() / (h * w) as f64 / 4.0;
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let mut s = 0.0f64;
                    for ky in 0..h {
                        for kx in 0..wf {
                            let fy = if ky <= h / 2 { ky as f64 } else { ky as f64 - h as f64 } / h as f64;
                            let f = ((kx as f64 / w as f64).powi(2) + fy * fy).sqrt().max(1.0 / h.max(w) as f64);
                            let wt = if kx == 0 || (w % 2 == 0 && kx == w / 2) { 1.0 } else { 2.0 };
                            let re = v[((c * 2) * h + ky) * wf + kx] as f64;
                            let im = v[((c * 2 + 1) * h + ky) * wf + kx] as f64;
                            let th = std::f64::consts::TAU * (ky as f64 * y as f64 / h as f64 + kx as f64 * x as f64 / w as f64);
                            s += wt * norm / f * (re * th.cos() - im * th.sin());
                        }
                    }
                    let got = img[(c * h + y) * w + x] as f64;
                    let want = 1.0 / (1.0 + (-s).exp());
                    assert!((got - want).abs() < 1e-5, "{h}x{w} c{c} ({y},{x}): {got} vs {want}");
                }
            }
        }
    }
}

#[test]
fn gradient_through_fourier_and_transforms() {
    let n = net(16);
    let target = acts_inner(&n, rand([1, 3, 16, 16], 18, 0.0, 1.0), "conv3");
    let cfg = ParamConfig { kind: ParamKind::Fourier, ..Default::default() };
    let param = Parameterization::new(&cfg, [16, 16], &dev());
    let t = Transforms { pad: 2, pad_value: 0.5, jitter: 2, scales: vec![0.9, 1.1], rotate: 10.0, reference_size: 0 };
    let e = Engine::new(n, o::feature("conv3", Tensor::from_inner(target)), param, t, 1).unwrap();
    let p = e.param.noise(1, 0.5, 19, &dev()).inner();
    grad_check(&e, p.clone(), false, "fourier");
    // The transform drawn for a step is fixed by (seed, step): the loss is a function of p.
    grad_check(&e, p, true, "fourier + pad/jitter/scale/rotate");
}

#[test]
fn transforms_are_seeded_shifts_and_rotations() {
    let x = rand::<I, 4>([1, 3, 12, 12], 20, 0.0, 1.0);
    let t = Transforms { jitter: 3, ..Default::default() };
    let a = t.apply(x.clone(), &mut Rng::new(1));
    let b = t.apply(x.clone(), &mut Rng::new(1));
    assert_eq!(to_vec(a.clone()), to_vec(b));
    // A roll keeps every value: same sorted multiset.
    let (mut va, mut vx) = (to_vec(a), to_vec(x.clone()));
    va.sort_by(f32::total_cmp);
    vx.sort_by(f32::total_cmp);
    assert_eq!(va, vx);
    assert!(Transforms::default().is_identity());
    assert_eq!(to_vec(Transforms::default().apply(x.clone(), &mut Rng::new(0))), to_vec(x.clone()));
    // The affine grid at exactly 90° reproduces a quarter turn.
    assert!(transform_grid_check(x), "rotation by the affine grid reproduces a 90° turn");
}

/// Rotating by exactly 90° with the affine grid equals transposing + flipping.
fn transform_grid_check(x: Tensor<I, 4>) -> bool {
    use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode};
    let [_, _, h, w] = x.dims();
    let grid = super::transform::affine_grid::<I>(1, h, w, 1.0, 90.0, &Default::default());
    let y = x.clone().grid_sample_2d(grid, GridSampleOptions::new(InterpolateMode::Bilinear).with_padding_mode(GridSamplePaddingMode::Border));
    let (vx, vy) = (to_vec(x), to_vec(y));
    // out(i, j) reads in(x = c·px + s·py, y = −s·px + c·py) with s = 1: in(row = w−1−j, col = i).
    (0..h).all(|i| (0..w).all(|j| (vy[i * w + j] - vx[(w - 1 - j) * w + i]).abs() < 1e-5))
}

#[test]
fn mask_blocks_changes_outside_the_white_region() {
    let n = net(16);
    let orig = rand::<I, 4>([1, 3, 16, 16], 21, 0.0, 1.0);
    let mut mask = vec![0.0f32; 256];
    mask[..128].fill(1.0); // top half free
    let e = pixel_engine(o::layer_l2("conv3"), 16).with_mask(&mask, Tensor::from_inner(orig.clone())).unwrap();
    let _ = n;
    let p = start_pixels(1, 16, 22);
    let g = to_vec(e.eval(p.clone(), 0, false).unwrap().grad);
    for c in 0..3 {
        assert!(g[c * 256 + 128..(c + 1) * 256].iter().all(|&v| v == 0.0), "masked-out pixels get no gradient");
        assert!(g[c * 256..c * 256 + 128].iter().any(|&v| v != 0.0));
    }
    let img = to_vec(e.images(&p));
    let o = to_vec(orig);
    assert_eq!(img[200], o[200], "outside the mask the image is the original");
    assert!(pixel_engine(o::layer_l2("conv3"), 16).with_mask(&mask[..100], Tensor::from_inner(rand([1, 3, 16, 16], 0, 0.0, 1.0))).is_err());
}

fn quick(kind: SolverKind, steps: usize, lr: f64) -> OptimizeConfig {
    let mut c = preset("invert").unwrap();
    c.solver = SolverConfig { kind, steps, final_steps: 2, lr, ..c.solver };
    c.transforms = Transforms::default();
    c
}

#[test]
fn invert_lowers_the_feature_error_with_each_solver() {
    let n = net(16);
    let x = rand::<I, 4>([1, 3, 16, 16], 23, 0.1, 0.9);
    let code = acts_inner(&n, x, "conv2");
    let start = Parameterization::<I>::new(&ParamConfig::default(), [16, 16], &Default::default()).noise(1, 0.1, 0, &Default::default());
    let e0 = feature_error(&n.valid(), "conv2", start.reshape([1, 3, 16, 16]), code.clone()).unwrap()[0];
    for (kind, lr) in [(SolverKind::Mv, 0.002), (SolverKind::Adam, 0.02), (SolverKind::Lbfgs, 1.0)] {
        let out = invert::<A>(n.clone(), "conv2", code.clone(), None, &quick(kind, 25, lr), &RunOptions::default()).unwrap();
        let e = out.term("feature(").unwrap()[0];
        assert!(e < 0.5 * e0, "{kind:?}: feature error {e} from {e0}");
        assert!(out.images[0].iter().all(|v| (0.0..=1.0).contains(v) || kind == SolverKind::Lbfgs));
    }
}

#[test]
fn same_seed_same_result() {
    let n = net(16);
    let code = acts_inner(&n, rand([1, 3, 16, 16], 24, 0.0, 1.0), "conv3");
    let mut cfg = quick(SolverKind::Mv, 6, 0.002);
    cfg.transforms = Transforms { jitter: 2, ..Default::default() };
    let run = |seed| invert::<A>(n.clone(), "conv3", code.clone(), None, &cfg, &RunOptions { seed, ..Default::default() }).unwrap().images;
    assert_eq!(run(5), run(5));
    assert_ne!(run(5), run(6));
}

#[test]
fn visualize_raises_each_target_and_dream_raises_the_layer_norm() {
    let n = net(16);
    // The last target is a weighted sum over two taps (Lucid's `a - 0.5 * b`).
    let units: Vec<Target> = ["fc8:2", "conv5:4", "conv4:1@0:1", "conv5:1-0.5*fc8:3"].iter().map(|t| Target::parse(t, &n.spec).unwrap()).collect();
    let mut cfg = preset("visualize").unwrap();
    cfg.solver.steps = 15;
    // A random 16-px net's units are not shift-invariant: the transforms would make this a
    // test of robustness, not of the ascent.
    cfg.transforms = Transforms::default();
    let inner = n.valid();
    let grey = Tensor::<I, 4>::full([4, 3, 16, 16], 0.5, &Default::default());
    let before = unit_values(&inner, &units, grey).unwrap();
    let out = visualize::<A>(n.clone(), &units, &cfg, &RunOptions::default(), &dev()).unwrap();
    let imgs = Tensor::<I, 4>::from_data(TensorData::new(out.images.concat(), [4, 3, 16, 16]), &Default::default());
    let after = unit_values(&inner, &units, imgs.clone()).unwrap();
    for i in 0..4 {
        assert!(after[i] > before[i] + 0.1, "{}: {} → {}", units[i].label, before[i], after[i]);
    }
    // The sum's value is the weighted sum of its units' values on the same image.
    let parts: Vec<Target> = ["conv5:1", "fc8:3"].iter().map(|t| Target::parse(t, &n.spec).unwrap()).collect();
    let last = imgs.narrow(0, 3, 1);
    let v: Vec<f32> = parts.iter().map(|p| unit_values(&inner, std::slice::from_ref(p), last.clone()).unwrap()[0]).collect();
    assert!((after[3] - (v[0] - 0.5 * v[1])).abs() < 1e-4 * (1.0 + after[3].abs()), "{} vs {} - 0.5 * {}", after[3], v[0], v[1]);
    // DeepDream on a 32-px net: two octaves, layer L2 goes up.
    let n32 = net(32);
    let x = rand::<I, 4>([1, 3, 32, 32], 25, 0.2, 0.8);
    let l2 = |img: Tensor<I, 4>| to_vec(n32.valid().tap_flat(img, "conv3", false).unwrap().powf_scalar(2.0).mean())[0];
    let mut cfg = preset("dream").unwrap();
    cfg.solver.octaves = 2;
    cfg.solver.lr = 0.02;
    let out = dream::<A>(n32.clone(), "conv3", x.clone(), &cfg, &RunOptions::default()).unwrap();
    let y = Tensor::<I, 4>::from_data(TensorData::new(out.images[0].clone(), [1, 3, 32, 32]), &Default::default());
    assert!(l2(y) > 1.2 * l2(x), "dream raises the layer's L2");
}

#[test]
fn transform_moves_toward_the_target_class() {
    let n = net(16);
    let x = rand::<I, 4>([1, 3, 16, 16], 26, 0.2, 0.8);
    let inner = n.valid();
    let (c0, _) = predict(&inner, x.clone()).unwrap()[0];
    let target = (c0 + 1) % 10;
    let prob = |img: Tensor<I, 4>| to_vec(burn::tensor::activation::softmax(inner.tap_flat(img, "fc8", false).unwrap(), 1))[target];
    let mut cfg = preset("transform").unwrap();
    cfg.solver.steps = 20;
    cfg.solver.lr = 0.02;
    let t = TransformTarget { classes: vec![target], mask: None, style_image: None };
    let out = transform::<A>(n.clone(), x.clone(), &t, &cfg, &RunOptions::default()).unwrap();
    let y = Tensor::<I, 4>::from_data(TensorData::new(out.images[0].clone(), [1, 3, 16, 16]), &Default::default());
    assert!(prob(y) > prob(x.clone()) + 0.05, "target probability rises");
    let bad = TransformTarget { classes: vec![10], mask: None, style_image: None };
    let err = transform::<A>(n, x, &bad, &cfg, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("0..=9"), "{err}");
}

#[test]
fn nan_stops_with_a_clear_message() {
    let n = net(16);
    let mut code = vec![0.0f32; n.spec.tap_shapes().unwrap()["conv3"].iter().product()];
    code[0] = f32::NAN;
    let d = code.len();
    let code = Tensor::<I, 2>::from_data(TensorData::new(code, [1, d]), &Default::default());
    let err = invert::<A>(n, "conv3", code, None, &quick(SolverKind::Mv, 3, 0.01), &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("NaN") && err.contains("step 0") && err.contains("feature(conv3)"), "{err}");
}

#[test]
fn unit_and_class_errors_name_the_valid_range() {
    let spec = net(16).spec;
    let e = |t: &str| Unit::parse(t, &spec).unwrap_err().to_string();
    assert!(e("conv5:64").contains("0..=63"), "{}", e("conv5:64"));
    assert!(e("fc8:10").contains("0..=9"));
    assert!(e("conv9:1").contains("valid taps: conv1"));
    assert!(e("conv5:1@2:9").contains("x in 0..="));
    assert!(e("fc7:1@0:0").contains("no spatial position"));
    assert!(e("fc8:spaceship").contains("class_0"));
    assert_eq!(Unit::parse("fc8:class_3", &spec).unwrap().index, 3);
    assert_eq!(Unit::parse("conv5:2@1:0", &spec).unwrap().pos, Some((1, 0)));
    let c = o::class_index("99", &spec.classes).unwrap_err().to_string();
    assert!(c.contains("10 classes") && c.contains("0..=9"), "{c}");
    assert_eq!(o::class_index("CLASS_4", &spec.classes).unwrap(), 4);
    // ImageNet's names for torchvision networks with 1000 outputs: by name in any case, and
    // a part of a name lists the classes that contain it.
    let alex = crate::encoder::default_spec("alexnet", 1000, Some(64)).unwrap();
    assert_eq!((alex.classes[1].as_str(), alex.classes[999].as_str()), ("goldfish", "toilet tissue"));
    assert_eq!(o::class_index("Great White Shark", &alex.classes).unwrap(), 2);
    assert_eq!(Unit::parse("fc8:goldfish", &alex).unwrap().index, 1);
    let c = o::class_index("shark", &alex.classes).unwrap_err().to_string();
    assert!(c.contains("great white shark (2), tiger shark (3)"), "{c}");
    let c = o::class_index("tabby cat", &alex.classes).unwrap_err().to_string();
    assert!(c.contains("tabby (281)") && c.contains("Persian cat (283)"), "{c}");
}

#[test]
fn targets_are_units_or_weighted_sums_of_units() {
    let spec = net(16).spec;
    let terms = |t: &str| Target::parse(t, &spec).unwrap().terms.into_iter().map(|(w, u)| (w, u.tap, u.index, u.pos)).collect::<Vec<_>>();
    let c = |w: f32, tap: &str, i: usize| (w, tap.to_string(), i, None);
    assert_eq!(terms("conv5:12"), [c(1.0, "conv5", 12)]);
    assert_eq!(terms("conv5:12+conv5:30"), [c(1.0, "conv5", 12), c(1.0, "conv5", 30)]);
    assert_eq!(terms(" -conv5:3 + 2*fc8:1 - 0.25 * conv4:2"), [c(-1.0, "conv5", 3), c(2.0, "fc8", 1), c(-0.25, "conv4", 2)]);
    assert_eq!(terms("1e-3*conv5:1"), [c(1e-3, "conv5", 1)]);
    assert_eq!(terms("conv5:2@1:0-conv5:2")[0].3, Some((1, 0)));
    // Class names with dashes stay whole; a dash starts a term only before a tap.
    let alex = crate::encoder::default_spec("alexnet", 1000, Some(64)).unwrap();
    let t = Target::parse("fc8:jack-o'-lantern-0.5*fc8:goldfish", &alex).unwrap();
    assert_eq!(t.terms.iter().map(|(w, u)| (*w, u.index)).collect::<Vec<_>>(), [(1.0, 607), (-0.5, 1)]);
    // Selection rows: each term's row, weighted, at its tap; zeros at a tap it does not read.
    let shapes = spec.tap_shapes().unwrap();
    let t = Target::parse("fc8:2-0.5*fc8:3+conv5:0", &spec).unwrap();
    assert_eq!(t.taps(), ["fc8", "conv5"]);
    assert_eq!(&t.select_row("fc8", &shapes["fc8"])[..5], [0.0, 0.0, 1.0, -0.5, 0.0]);
    assert!(t.select_row("conv4", &shapes["conv4"]).iter().all(|&v| v == 0.0));
    // Errors name the target and the term at fault.
    let e = |t: &str| format!("{:#}", Target::parse(t, &spec).unwrap_err());
    // The target once (a lone unit's error names it; a sum's adds the whole).
    assert!(e("conv5:1+").matches("target 'conv5:1+'").count() == 1, "{}", e("conv5:1+"));
    assert!(e("conv5:1+conv5:99").contains("in target 'conv5:1+conv5:99'"), "{}", e("conv5:1+conv5:99"));
    assert!(e("conv5:1+conv5:99").contains("channel 99 is out of range"), "{}", e("conv5:1+conv5:99"));
    assert!(e("inf*conv5:1").contains("not a finite number"), "{}", e("inf*conv5:1"));
}

#[test]
fn presets_parse_and_follow_the_papers() {
    for m in METHODS {
        preset(m).unwrap();
    }
    let inv = preset("invert").unwrap();
    assert_eq!((inv.weights.alpha, inv.weights.tv_beta, inv.weights.natural_scale), (6.0, 2.0, 80.0));
    assert_eq!((inv.solver.kind, inv.solver.steps, inv.solver.final_steps, inv.solver.final_lr_factor, inv.solver.momentum), (SolverKind::Mv, 300, 50, 0.1, 0.9));
    let d = preset("dream").unwrap();
    assert_eq!((d.solver.octaves, d.solver.octave_scale, d.transforms.jitter), (4, 1.4, 32));
    assert_eq!(preset("visualize").unwrap().param.kind, ParamKind::Fourier);
    let err = crate::config::parse::<OptimizeConfig>("[weights]\nfeatur = 1.0\n").unwrap_err().to_string();
    assert!(err.contains("featur"), "{err}");
    // Preset jitter is in pixels of a 224-px image and scales with the input.
    assert_eq!(d.transforms.scaled_to(64).jitter, 9);
    assert_eq!(d.transforms.scaled_to(224).jitter, 32);
}

#[test]
fn mask_of_the_wrong_size_is_an_error_naming_the_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.png");
    image::RgbImage::new(10, 7).save(&p).unwrap();
    let pre = crate::data::folder::Preprocess { resize: crate::encoder::Resize::Short(16), crop_h: 16, crop_w: 16 };
    let err = super::transform::load_mask(&p, Some([40, 30]), [16, 16], &pre).unwrap_err().to_string();
    assert!(err.contains("10×7") && err.contains("40×30") && err.contains("16×16"), "{err}");
    image::RgbImage::from_pixel(40, 30, image::Rgb([255, 255, 255])).save(&p).unwrap();
    let m = super::transform::load_mask(&p, Some([40, 30]), [16, 16], &pre).unwrap();
    assert_eq!(m.len(), 256);
    assert!(m.iter().all(|&v| (v - 1.0).abs() < 1e-6));
}

