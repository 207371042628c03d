//! Optimization inversion and its relatives (the "natural pre-image" family): one small engine
//! (objective + parameterization + transforms + solver) and one driver per method:
//! - [`invert`]: Mahendran & Vedaldi's inversion of a code at a tap (noise, image or decoder start);
//! - [`visualize`]: activation maximization, one target unit per image of a batch;
//! - [`dream`]: DeepDream (layer L2, normalized-gradient ascent over octaves);
//! - [`caricature`]: M&V's caricatures (maximize ⟨Φ(x), Φ₀⟩);
//! - [`transform()`]: class-targeted edits that stay visibly the same image (content, style,
//!   TV and thresholded similarity to the original, optional gradient mask).
//!
//! Each method is a preset (`configs/optimize-*.toml`, built into the binary) over the same
//! engine; every weight can be overridden from the command line.
pub mod commands;
pub mod objective;
pub mod param;
pub mod solver;
pub mod transform;

use crate::encoder::ConvNet;
use crate::report::tensorboard::TbWriter;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Tensor, TensorData};
use objective::{Natural, Objective, Target};
use param::{ParamConfig, ParamKind, Parameterization};
use serde::{Deserialize, Serialize};
use solver::{Eval, Problem, SolverConfig, SolverKind};
use std::path::{Path, PathBuf};
use transform::Transforms;

/// A method's settings: objective weights, parameterization, transforms, solver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizeConfig {
    pub weights: Weights,
    pub param: ParamConfig,
    pub transforms: Transforms,
    pub solver: SolverConfig,
}

/// Objective weights (0 switches a term off). The regularizers are normalized as in
/// Mahendran & Vedaldi (2016): weight 1 on `tv` means (6.5/B)^β per pixel, weight 1 on
/// `alpha_norm` means (1/B)^α, with pixels in the mean-subtracted 0–255 range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Weights {
    /// M&V's C: weight of ‖Φ(x) − Φ₀‖² / ‖Φ₀‖².
    pub feature: f32,
    pub tv: f32,
    pub tv_beta: f32,
    pub alpha_norm: f32,
    pub alpha: f32,
    /// M&V's B: the typical pixel norm of natural images (mean-subtracted 0–255 scale).
    pub natural_scale: f32,
    /// Activation maximization (visualize).
    pub activation: f32,
    /// DeepDream's layer L2.
    pub l2: f32,
    pub caricature: f32,
    /// Class-target cross-entropy (transform).
    pub class: f32,
    pub content: f32,
    /// Tap of the content term (default: the last conv tap before the classifier).
    pub content_layer: String,
    pub style: f32,
    pub style_layers: Vec<String>,
    pub similarity: f32,
    /// Changes below this (fraction of the `[0,1]` range, per channel) are free.
    pub similarity_threshold: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            feature: 0.0,
            tv: 0.0,
            tv_beta: 2.0,
            alpha_norm: 0.0,
            alpha: 6.0,
            natural_scale: 80.0,
            activation: 0.0,
            l2: 0.0,
            caricature: 0.0,
            class: 0.0,
            content: 0.0,
            content_layer: String::new(),
            style: 0.0,
            style_layers: Vec::new(),
            similarity: 0.0,
            similarity_threshold: 0.3,
        }
    }
}

/// The methods with a built-in preset.
pub const METHODS: &[&str] = &["invert", "visualize", "dream", "caricature", "transform"];

/// The built-in preset of `method` (the files in `configs/`, compiled in so the binary works
/// from any folder).
pub fn preset(method: &str) -> Result<OptimizeConfig> {
    let text = match method {
        "invert" => include_str!("../../configs/optimize-invert.toml"),
        "visualize" => include_str!("../../configs/optimize-visualize.toml"),
        "dream" => include_str!("../../configs/optimize-dream.toml"),
        "caricature" => include_str!("../../configs/optimize-caricature.toml"),
        "transform" => include_str!("../../configs/optimize-transform.toml"),
        _ => bail!("no preset for '{method}'; presets: {}", METHODS.join(", ")),
    };
    crate::config::parse(text).with_context(|| format!("in built-in preset configs/optimize-{method}.toml"))
}

/// `--config FILE` when given, else the method's built-in preset.
pub fn load_config(path: Option<&Path>, method: &str) -> Result<OptimizeConfig> {
    match path {
        Some(p) => crate::config::load(p),
        None => preset(method),
    }
}

/// Where and when to report progress.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Steps after which to save the image (0 = the start).
    pub snapshots: Vec<usize>,
    /// Folder for snapshot PNGs (`step_00050.png`, or `step_00050_3.png` for batch item 3).
    pub snapshot_dir: Option<PathBuf>,
    /// TensorBoard log folder: loss and terms every step, images at the snapshot steps.
    pub tensorboard: Option<PathBuf>,
    pub seed: u64,
    /// Show a progress bar (the CLI does; library callers and tests usually don't).
    pub progress: bool,
    /// Names of the batch items: snapshots go to `snapshot_dir/<name>/step_00050.png` and
    /// TensorBoard tags are `image/<name>` (empty: numbered by position).
    pub names: Vec<String>,
    /// Every item starts from item 0's noise, so an item's result does not depend on the
    /// items it is batched with (`invert` over many codes, `visualize` over many targets).
    pub shared_start: bool,
}

/// The engine: a frozen encoder, an objective, a parameterization, transforms and an
/// optional gradient mask. Only the parameter receives gradients.
pub struct Engine<B: AutodiffBackend> {
    pub net: ConvNet<B>,
    pub objective: Objective<B>,
    pub param: Parameterization<B>,
    pub transforms: Transforms,
    /// `(mask [1 or N,1,H,W], original [N,3,H,W])`: changes outside the white region are undone.
    pub mask: Option<(Tensor<B, 4>, Tensor<B, 4>)>,
    pub seed: u64,
    taps: Vec<String>,
}

impl<B: AutodiffBackend> Engine<B> {
    /// Freezes `net` (its parameters get no gradient) and checks the objective's taps.
    pub fn new(net: ConvNet<B>, objective: Objective<B>, param: Parameterization<B>, transforms: Transforms, seed: u64) -> Result<Self> {
        let objective = objective.pruned();
        let taps = objective.taps();
        for t in &taps {
            net.spec.check_tap(t)?;
        }
        Ok(Engine { net: net.no_grad(), objective, param, transforms, mask: None, seed, taps })
    }

    /// Restrict changes to the white part of `mask` (values in `[0,1]`: `[H, W]` for every
    /// image, or `[N, H, W]` one per image) around `original`.
    pub fn with_mask(mut self, mask: &[f32], original: Tensor<B, 4>) -> Result<Self> {
        let [n, _, h, w] = original.dims();
        let masks = match mask.len() {
            l if l == h * w => 1,
            l if l == n * h * w => n,
            _ => bail!("mask has {} pixels; the {n} image(s) are {w}×{h}, so one mask is {} and one per image {}", mask.len(), h * w, n * h * w),
        };
        let m = Tensor::from_data(TensorData::new(mask.to_vec(), [masks, 1, h, w]), &original.device());
        self.mask = Some((m, original));
        Ok(self)
    }

    /// The images a parameter stands for (mask applied).
    fn image_ad(&self, p: Tensor<B, 2>) -> Tensor<B, 4> {
        let img = self.param.image(p);
        match &self.mask {
            Some((m, orig)) => transform::apply_mask(img, orig.clone(), m.clone()),
            None => img,
        }
    }

    /// Images `[N, 3, H, W]` for parameter `p` (no gradient).
    pub fn images(&self, p: &Tensor<B::InnerBackend, 2>) -> Tensor<B::InnerBackend, 4> {
        self.image_ad(Tensor::from_inner(p.clone())).inner()
    }

    /// Loss and per-term values of `image` (transformed first when `stochastic`); images of
    /// another size than the encoder's input are resized for encoders with vector taps.
    fn loss(&self, image: Tensor<B, 4>, step: usize, stochastic: bool) -> Result<objective::Evaluated<B>> {
        let mut x = image.clone();
        if stochastic && !self.transforms.is_identity() {
            let mut rng = Rng::derive(self.seed ^ 0x7472_616e_7366, step as u64);
            let size = self.net.spec.input_size[0].min(self.net.spec.input_size[1]);
            x = self.transforms.scaled_to(size).apply(x, &mut rng);
        }
        let [_, _, h, w] = x.dims();
        if [h, w] != self.net.spec.input_size && self.needs_native_size()? {
            x = interpolate(x, self.net.spec.input_size, InterpolateOptions::new(InterpolateMode::Bilinear));
        }
        let taps: Vec<&str> = self.taps.iter().map(String::as_str).collect();
        let acts = if taps.is_empty() { Default::default() } else { self.net.encode(x, &taps, false)? };
        self.objective.eval(&image, &acts)
    }

    /// Vector taps (fc) only accept the encoder's own input size.
    fn needs_native_size(&self) -> Result<bool> {
        let shapes = self.net.spec.tap_shapes()?;
        Ok(self.taps.iter().any(|t| shapes.get(t).is_some_and(|s| s.len() == 1)))
    }

    /// Loss and gradient with respect to the parameter.
    pub fn eval(&self, p: Tensor<B::InnerBackend, 2>, step: usize, stochastic: bool) -> Result<Eval<B::InnerBackend>> {
        let pa = Tensor::<B, 2>::from_inner(p).require_grad();
        let ev = self.loss(self.image_ad(pa.clone()), step, stochastic)?;
        let (loss, terms) = finish(&ev, step)?;
        let grads = ev.loss.backward();
        let grad = pa.grad(&grads).context("the parameter received no gradient")?;
        check_finite_grad(&grad, step)?;
        Ok(Eval { loss, grad, terms })
    }

    /// Loss and gradient with respect to an image `[N,3,h,w]` (pixel solvers that change the
    /// image size, i.e. DeepDream's octaves).
    pub fn eval_image(&self, img: Tensor<B::InnerBackend, 4>, step: usize, stochastic: bool) -> Result<Eval<B::InnerBackend, 4>> {
        let x = Tensor::<B, 4>::from_inner(img).require_grad();
        let ev = self.loss(x.clone(), step, stochastic)?;
        let (loss, terms) = finish(&ev, step)?;
        let grads = ev.loss.backward();
        let grad = x.grad(&grads).context("the image received no gradient")?;
        check_finite_grad(&grad, step)?;
        Ok(Eval { loss, grad, terms })
    }

    /// Per-item values of every weighted term for parameter `p`, without transforms
    /// (what the result achieves).
    pub fn term_values(&self, p: &Tensor<B::InnerBackend, 2>) -> Result<Vec<(String, Vec<f32>)>> {
        let ev = self.loss(self.image_ad(Tensor::from_inner(p.clone())), 0, false)?;
        Ok(ev.terms.into_iter().map(|(name, _, v)| (name, to_vec(v.inner()))).collect())
    }
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("f32 tensor")
}

/// Scalar loss and mean weighted term values; a NaN/inf loss stops the run with the terms.
fn finish<B: Backend>(ev: &objective::Evaluated<B>, step: usize) -> Result<(f64, Vec<(String, f64)>)> {
    let loss = to_vec(ev.loss.clone())[0] as f64;
    let terms: Vec<(String, f64)> = ev
        .terms
        .iter()
        .map(|(name, w, v)| {
            let vals = to_vec(v.clone());
            (name.clone(), *w as f64 * vals.iter().map(|&x| x as f64).sum::<f64>() / vals.len().max(1) as f64)
        })
        .collect();
    if !loss.is_finite() {
        let parts: Vec<String> = terms.iter().map(|(n, v)| format!("{n} = {v}")).collect();
        bail!(
            "the loss became {loss} at step {step} ({}); stopping. Lower the learning rate (--lr) or the weights; \
             snapshots before this step are kept",
            parts.join(", ")
        );
    }
    Ok((loss, terms))
}

fn check_finite_grad<B: Backend, const D: usize>(g: &Tensor<B, D>, step: usize) -> Result<()> {
    let s = to_vec(g.clone().abs().sum())[0];
    if !s.is_finite() {
        bail!("the gradient became {s} at step {step} although the loss is finite; stopping (check the regularizer exponents and the learning rate)");
    }
    Ok(())
}

impl Transforms {
    /// Jitter and padding in the presets are pixels of a `reference_size` image (224 for the
    /// papers' ImageNet networks); scale them to an input of `size` pixels.
    pub fn scaled_to(&self, size: usize) -> Transforms {
        let mut t = self.clone();
        if self.reference_size > 0 && size != self.reference_size {
            let r = size as f64 / self.reference_size as f64;
            let px = |v: usize| if v == 0 { 0 } else { ((v as f64 * r).round() as usize).max(1) };
            t.jitter = px(self.jitter);
            t.pad = px(self.pad);
        }
        t.reference_size = 0;
        t
    }
}

/// Progress bar, snapshots and TensorBoard logging for one run.
struct Monitor<'a, B: AutodiffBackend> {
    engine: &'a Engine<B>,
    opts: &'a RunOptions,
    bar: Option<indicatif::ProgressBar>,
    tb: Option<TbWriter>,
    clamp: bool,
}

impl<'a, B: AutodiffBackend> Monitor<'a, B> {
    fn new(engine: &'a Engine<B>, opts: &'a RunOptions, total: usize, what: &str) -> Result<Self> {
        let tb = opts.tensorboard.as_deref().map(TbWriter::new).transpose()?;
        let bar = opts.progress.then(|| crate::util::progress(total as u64, what));
        Ok(Monitor { engine, opts, bar, tb, clamp: engine.param.needs_clamp() })
    }

    /// Save the images of `p` as snapshot `step` (PNG and/or TensorBoard).
    fn snapshot(&mut self, step: usize, images: Tensor<B::InnerBackend, 4>) -> Result<()> {
        if !self.opts.snapshots.contains(&step) {
            return Ok(());
        }
        let [n, _, h, w] = images.dims();
        let all = to_vec(images);
        for (i, chw) in all.chunks(3 * h * w).enumerate() {
            let name = self.opts.names.get(i).map(|s| crate::data::folder::strip_extension(s));
            if let Some(dir) = &self.opts.snapshot_dir {
                let file = format!("step_{step:05}.png");
                let path = match name {
                    // DIR/<name>/step_…png, the name's subfolders kept (never leaving DIR).
                    Some(name) => crate::reconstruct::output_path(dir, name).with_extension("").join(file),
                    None if n == 1 => dir.join(file),
                    None => dir.join(format!("step_{step:05}_{i}.png")),
                };
                crate::data::folder::save_rgb(&path, chw, h as u32, w as u32)?;
            }
            if let Some(tb) = &mut self.tb {
                let tag = match name {
                    Some(name) => format!("image/{name}"),
                    None => format!("image/{i}"),
                };
                tb.image(&tag, chw, h, w, step);
            }
        }
        Ok(())
    }

    fn log(&mut self, step: usize, loss: f64, terms: &[(String, f64)]) {
        if let Some(tb) = &mut self.tb {
            tb.scalar("loss", loss as f32, step);
            for (name, v) in terms {
                tb.scalar(&format!("term/{name}"), *v as f32, step);
            }
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!("loss {loss:.4}"));
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if let Some(tb) = &mut self.tb {
            tb.flush();
        }
    }
}

impl<B: AutodiffBackend> Problem<B::InnerBackend> for Monitor<'_, B> {
    fn eval(&mut self, x: Tensor<B::InnerBackend, 2>, step: usize, stochastic: bool) -> Result<Eval<B::InnerBackend>> {
        self.engine.eval(x, step, stochastic)
    }
    fn project(&self, x: Tensor<B::InnerBackend, 2>) -> Tensor<B::InnerBackend, 2> {
        if self.clamp {
            x.clamp(0.0, 1.0)
        } else {
            x
        }
    }
    fn observe(&mut self, step: usize, x: &Tensor<B::InnerBackend, 2>, eval: &Eval<B::InnerBackend>) -> Result<()> {
        self.log(step, eval.loss, &eval.terms);
        if self.opts.snapshots.contains(&(step + 1)) {
            let images = self.engine.images(x);
            self.snapshot(step + 1, images)?;
        }
        Ok(())
    }
}

/// Run the configured solver from `x0`; returns the final parameter.
pub fn optimize<B: AutodiffBackend>(engine: &Engine<B>, x0: Tensor<B::InnerBackend, 2>, cfg: &SolverConfig, opts: &RunOptions, what: &str) -> Result<Tensor<B::InnerBackend, 2>> {
    let mut monitor = Monitor::new(engine, opts, cfg.total_steps(), what)?;
    monitor.snapshot(0, engine.images(&x0))?;
    let stochastic = !engine.transforms.is_identity();
    let x0 = monitor.project(x0);
    let out = solver::minimize(cfg, x0, &mut monitor, stochastic);
    monitor.finish();
    out
}

/// The result of a run: one CHW image per batch item and the final term values.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub images: Vec<Vec<f32>>,
    pub size: [usize; 2],
    /// Weighted-term name → per-item value (unweighted), measured without transforms.
    pub terms: Vec<(String, Vec<f32>)>,
}

impl Outcome {
    fn from<B: AutodiffBackend>(engine: &Engine<B>, p: &Tensor<B::InnerBackend, 2>) -> Result<Outcome> {
        let images = engine.images(p);
        let [_, _, h, w] = images.dims();
        let all = to_vec(images);
        Ok(Outcome { images: all.chunks(3 * h * w).map(<[f32]>::to_vec).collect(), size: [h, w], terms: engine.term_values(p)? })
    }

    /// Per-item values of the first term whose name starts with `prefix`.
    pub fn term(&self, prefix: &str) -> Option<&[f32]> {
        self.terms.iter().find(|(n, _)| n.starts_with(prefix)).map(|(_, v)| v.as_slice())
    }

    /// Write image `i` as a PNG.
    pub fn save(&self, i: usize, path: &Path) -> Result<()> {
        crate::data::folder::save_rgb(path, &self.images[i], self.size[0] as u32, self.size[1] as u32)
    }
}

/// How `invert` starts.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    /// Grey plus Gaussian noise (M&V).
    Noise,
    /// The image the code came from (a sanity check: the result should barely move).
    Image,
    /// A trained decoder's reconstruction of the code (the refiner).
    Decoder(PathBuf),
}

impl std::str::FromStr for Init {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "noise" => Init::Noise,
            "image" => Init::Image,
            _ => match s.strip_prefix("decoder:") {
                Some(dir) if !dir.is_empty() => Init::Decoder(PathBuf::from(dir)),
                _ => bail!("unknown --init '{s}'; valid: noise, image, decoder:RUN_DIR"),
            },
        })
    }
}

fn natural(spec: &crate::encoder::EncoderSpec, w: &Weights) -> Natural {
    Natural::new(spec.mean, w.natural_scale)
}

/// The regularizers every method shares (TV^β and α-norm), weighted by the preset.
fn regularizers<B: Backend>(spec: &crate::encoder::EncoderSpec, w: &Weights) -> Objective<B> {
    let nat = natural(spec, w);
    w.tv * objective::tv(w.tv_beta, nat) + w.alpha_norm * objective::alpha_norm(w.alpha, nat)
}

/// Images `[N,3,H,W]` as a constant on the autodiff backend.
fn constant<B: AutodiffBackend, const D: usize>(t: Tensor<B::InnerBackend, D>) -> Tensor<B, D> {
    Tensor::from_inner(t)
}

/// Encode `images` at `taps` on the inner backend (targets: no graph kept).
fn encode_inner<B: AutodiffBackend>(net: &ConvNet<B>, images: Tensor<B::InnerBackend, 4>, taps: &[&str]) -> Result<std::collections::BTreeMap<String, crate::encoder::Act<B::InnerBackend>>> {
    net.valid().encode(images, taps, false)
}

/// Initial parameter: noise or the given images.
fn start<B: AutodiffBackend>(engine: &Engine<B>, n: usize, cfg: &OptimizeConfig, images: Option<Tensor<B::InnerBackend, 4>>, opts: &RunOptions, device: &B::Device) -> Result<Tensor<B::InnerBackend, 2>> {
    match images {
        Some(img) => Ok(engine.param.from_image(constant::<B, 4>(img))?.inner()),
        None if opts.shared_start => Ok(engine.param.noise(1, cfg.param.init_sd, opts.seed, device).inner().repeat_dim(0, n)),
        None => Ok(engine.param.noise(n, cfg.param.init_sd, opts.seed, device).inner()),
    }
}

/// Images that minimize `objective` (Lucid's `render_vis`): `n` images from noise, or from
/// `init` images, through the parameterization, transforms and solver of `cfg`. Visualize and
/// caricature are this with their objectives; compose your own from [`objective`]'s terms
/// (`300.0 * feature(..) + tv(2.0, nat)`).
pub fn render<B: AutodiffBackend>(net: ConvNet<B>, objective: Objective<B>, n: usize, init: Option<Tensor<B::InnerBackend, 4>>, cfg: &OptimizeConfig, opts: &RunOptions, device: &B::Device) -> Result<Outcome> {
    let (param, _) = make_param::<B>(&cfg.param, &net.spec, device)?;
    let engine = Engine::new(net, objective, param, cfg.transforms.clone(), opts.seed)?;
    let x0 = start(&engine, n, cfg, init, opts, device)?;
    let p = optimize(&engine, x0, &cfg.solver, opts, "optimize")?;
    Outcome::from(&engine, &p)
}

/// Mahendran & Vedaldi's inversion: find x with Φ(x) ≈ `code` at `layer` (`code` `[N, D]`,
/// the tap's flattened shape). `init_images` starts from those images (`Init::Image`, or a
/// decoder's reconstructions for the refiner). Returns the images and, per item, the feature
/// error ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² as the term `feature(layer)`.
pub fn invert<B: AutodiffBackend>(net: ConvNet<B>, layer: &str, code: Tensor<B::InnerBackend, 2>, init_images: Option<Tensor<B::InnerBackend, 4>>, cfg: &OptimizeConfig, opts: &RunOptions) -> Result<Outcome> {
    net.spec.check_tap(layer)?;
    let shapes = net.spec.tap_shapes()?;
    let d: usize = shapes[layer].iter().product();
    let [n, dc] = code.dims();
    if dc != d {
        bail!("the code has {dc} values per image but tap {layer} of {} has {d} ({:?})", net.spec.arch, shapes[layer]);
    }
    let device = code.device();
    let obj = invert_objective(&net.spec, layer, constant::<B, 2>(code.clone()), &cfg.weights);
    let (param, dec_tap) = make_param::<B>(&cfg.param, &net.spec, &device)?;
    let engine = Engine::new(net, obj, param, cfg.transforms.clone(), opts.seed)?;
    // A decoder of this very tap starts from the code itself (DGN-AM refinement).
    let x0 = match (dec_tap, init_images) {
        (Some(t), None) if t == layer => code,
        (_, init) => start(&engine, n, cfg, init, opts, &device)?,
    };
    let p = optimize(&engine, x0, &cfg.solver, opts, "invert")?;
    Outcome::from(&engine, &p)
}

/// M&V's inversion objective: C·feature(layer) + TV^β + α-norm (weights from `w`; C = 1
/// when the preset leaves it at 0).
pub fn invert_objective<B: Backend>(spec: &crate::encoder::EncoderSpec, layer: &str, code: Tensor<B, 2>, w: &Weights) -> Objective<B> {
    let c = if w.feature == 0.0 { 1.0 } else { w.feature };
    c * objective::feature(layer, code) + regularizers(spec, w)
}

/// The refiner's start: a trained decoder's reconstruction of `code` (`[N, D]` at `layer`),
/// after checking that the decoder inverts this encoder's tap.
pub fn decoder_start<B: AutodiffBackend>(dir: &Path, spec: &crate::encoder::EncoderSpec, weights_sha256: &str, layer: &str, code: Tensor<B::InnerBackend, 2>, device: &B::Device) -> Result<Tensor<B::InnerBackend, 4>> {
    let (dec, info) = crate::decoder::load_run::<B::InnerBackend>(dir, device)?;
    let shapes = spec.tap_shapes()?;
    info.check_codes(&spec.arch, layer, &shapes[layer], weights_sha256).with_context(|| format!("--init decoder:{}", dir.display()))?;
    check_decoder_size(&info, spec, dir)?;
    Ok(dec.forward(code).clamp(0.0, 1.0))
}

fn check_decoder_size(info: &crate::decoder::DecoderInfo, spec: &crate::encoder::EncoderSpec, dir: &Path) -> Result<()> {
    if info.encoder != spec.arch || info.image_size != spec.input_size {
        bail!(
            "decoder {} makes {:?} images for {}, but the encoder is {} with input {:?}",
            dir.display(),
            info.image_size,
            info.encoder,
            spec.arch,
            spec.input_size
        );
    }
    Ok(())
}

/// The parameterization a config asks for; `decoder` kind loads the run folder (DGN-AM).
/// Returns the decoder's tap too, so a caller can start from a code at that tap.
pub fn make_param<B: AutodiffBackend>(cfg: &ParamConfig, spec: &crate::encoder::EncoderSpec, device: &B::Device) -> Result<(Parameterization<B>, Option<String>)> {
    if cfg.kind != ParamKind::Decoder {
        return Ok((Parameterization::new(cfg, spec.input_size, device), None));
    }
    if cfg.decoder.is_empty() {
        bail!("the decoder parameterization needs a run folder: --param decoder:RUN_DIR");
    }
    let dir = Path::new(&cfg.decoder);
    let (dec, info) = crate::decoder::load_run::<B>(dir, device)?;
    check_decoder_size(&info, spec, dir)?;
    let dim = info.code_shape.iter().product();
    Ok((Parameterization::decoder(dec, dim, spec.input_size), Some(info.tap)))
}

/// Feature error ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² of `images` against `code` at `layer`, per item.
pub fn feature_error<B: Backend>(net: &ConvNet<B>, layer: &str, images: Tensor<B, 4>, code: Tensor<B, 2>) -> Result<Vec<f32>> {
    let f = net.tap_flat(images, layer, false)?;
    let n = f.dims()[0];
    let num = (f - code.clone()).powf_scalar(2.0).sum_dim(1);
    Ok(to_vec((num / (code.powf_scalar(2.0).sum_dim(1) + 1e-12)).reshape([n])))
}

/// Activation maximization: one image per target (a unit or a weighted sum of units), all in
/// one batch.
pub fn visualize<B: AutodiffBackend>(net: ConvNet<B>, targets: &[Target], cfg: &OptimizeConfig, opts: &RunOptions, device: &B::Device) -> Result<Outcome> {
    if targets.is_empty() {
        bail!("no target given (e.g. --target fc8:3,conv5:12)");
    }
    let n = targets.len();
    let shapes = net.spec.tap_shapes()?;
    let w = &cfg.weights;
    let aw = if w.activation == 0.0 { 1.0 } else { w.activation };
    let mut obj = regularizers::<B>(&net.spec, w);
    // One activation term per tap; rows of items whose target does not read it are zero.
    for tap in Target::taps_of(targets) {
        let shape = &shapes[tap];
        let d: usize = shape.iter().product();
        let sel: Vec<f32> = targets.iter().flat_map(|t| t.select_row(tap, shape)).collect();
        let labels: Vec<&str> = targets.iter().filter(|t| t.taps().contains(&tap)).map(|t| t.label.as_str()).collect();
        let select = Tensor::<B, 2>::from_data(TensorData::new(sel, [n, d]), device);
        obj = obj + aw * objective::activation(tap, select, &labels.join(","));
    }
    render(net, obj, n, None, cfg, opts, device)
}

/// The value each target reaches on `images` (item i → `targets[i]`), without transforms.
pub fn unit_values<B: Backend>(net: &ConvNet<B>, targets: &[Target], images: Tensor<B, 4>) -> Result<Vec<f32>> {
    let taps = Target::taps_of(targets);
    let shapes = net.spec.tap_shapes()?;
    let acts = net.encode(images, &taps, false)?;
    let rows: std::collections::BTreeMap<&str, Vec<f32>> = taps.iter().map(|&t| (t, to_vec(acts[t].clone().flat()))).collect();
    let mut out = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let mut v = 0.0;
        for tap in target.taps() {
            let d: usize = shapes[tap].iter().product();
            let sel = target.select_row(tap, &shapes[tap]);
            v += rows[tap][i * d..(i + 1) * d].iter().zip(&sel).map(|(a, s)| a * s).sum::<f32>();
        }
        out.push(v);
    }
    Ok(out)
}

/// DeepDream: maximize the L2 of `layer` on `image` (`[1,3,H,W]`) with normalized-gradient
/// ascent over `octaves` scales (smallest first); details found at one scale are carried up.
pub fn dream<B: AutodiffBackend>(net: ConvNet<B>, layer: &str, image: Tensor<B::InnerBackend, 4>, cfg: &OptimizeConfig, opts: &RunOptions) -> Result<Outcome> {
    let w = &cfg.weights;
    let lw = if w.l2 == 0.0 { 1.0 } else { w.l2 };
    let obj = lw * objective::layer_l2::<B>(layer) + regularizers(&net.spec, w);
    let [_, _, h, wd] = image.dims();
    let device = image.device();
    let param = Parameterization::new(&ParamConfig { kind: ParamKind::Pixel, ..cfg.param.clone() }, [h, wd], &device);
    let engine = Engine::new(net, obj, param, cfg.transforms.clone(), opts.seed)?;
    let s = &cfg.solver;
    // A conv tap sees the image at its size (an fc tap sees it resized to the input), so the
    // image, and each octave, must be large enough for the layers up to the tap.
    let spatial = engine.net.spec.tap_shapes()?.get(layer).is_some_and(|s| s.len() == 3);
    let fits = |sz: [usize; 2]| !spatial || engine.net.spec.tap_shape_for(layer, sz).is_ok();
    if spatial {
        engine.net.spec.tap_shape_for(layer, [h, wd]).map_err(|err| {
            anyhow::anyhow!("the image ({wd}×{h} pixels) is too small for {} up to {layer}: {err}; use a larger image, or a tap nearer the input", engine.net.spec.arch)
        })?;
    }
    // Octave sizes, smallest first; stop shrinking below 16 px (no features left to find) or
    // where the layers up to the tap no longer fit.
    let mut sizes = vec![[h, wd]];
    for i in 1..s.octaves.max(1) {
        let f = s.octave_scale.powi(i as i32);
        let sz = [(h as f32 / f).round() as usize, (wd as f32 / f).round() as usize];
        if sz[0] < 16 || sz[1] < 16 || !fits(sz) {
            break;
        }
        sizes.push(sz);
    }
    sizes.reverse();
    let resize = |t: Tensor<B::InnerBackend, 4>, sz: [usize; 2]| {
        if t.dims()[2..] == sz[..] {
            t
        } else {
            interpolate(t, sz, InterpolateOptions::new(InterpolateMode::Bilinear))
        }
    };
    let per_octave = s.total_steps();
    let mut monitor = Monitor::new(&engine, opts, per_octave * sizes.len(), "dream")?;
    monitor.snapshot(0, image.clone())?;
    let mut detail: Option<Tensor<B::InnerBackend, 4>> = None;
    let mut x = image.clone();
    let mut step = 0;
    for sz in &sizes {
        let base = resize(image.clone(), *sz);
        x = match &detail {
            Some(d) => base.clone() + resize(d.clone(), *sz),
            None => base.clone(),
        };
        for t in 0..per_octave {
            let (lr, jitter) = s.phase(t);
            let Eval { loss, grad: g, terms } = engine.eval_image(x.clone(), step, jitter)?;
            x = (x - solver::normalized(g) * lr).clamp(0.0, 1.0);
            monitor.log(step, loss, &terms);
            step += 1;
            // Snapshots are full-size images: intermediate octaves are shown enlarged.
            if opts.snapshots.contains(&step) {
                monitor.snapshot(step, resize(x.clone(), [h, wd]))?;
            }
        }
        detail = Some(x.clone() - base);
    }
    monitor.finish();
    let p = x.flatten(1, 3);
    Outcome::from(&engine, &p)
}

/// M&V's caricature: maximize ⟨Φ(x), Φ₀⟩ / ‖Φ₀‖² at `layer` for the image's own code Φ₀,
/// with the natural-image regularizers; starts from the image (or noise with `from_noise`).
pub fn caricature<B: AutodiffBackend>(net: ConvNet<B>, layer: &str, image: Tensor<B::InnerBackend, 4>, from_noise: bool, cfg: &OptimizeConfig, opts: &RunOptions) -> Result<Outcome> {
    net.spec.check_tap(layer)?;
    let device = image.device();
    let code = encode_inner(&net, image.clone(), &[layer])?.remove(layer).unwrap().flat();
    let w = &cfg.weights;
    let cw = if w.caricature == 0.0 { 1.0 } else { w.caricature };
    let obj = cw * objective::caricature(layer, constant::<B, 2>(code)) + regularizers(&net.spec, w);
    let n = image.dims()[0];
    render(net, obj, n, (!from_noise).then_some(image), cfg, opts, &device)
}

/// What `transform` changes an image into.
pub struct TransformTarget<'a> {
    /// Class index per image.
    pub classes: Vec<usize>,
    /// Gradient mask (white = free): `[H, W]` shared by the batch, or `[N, H, W]` one per image.
    pub mask: Option<&'a [f32]>,
    /// Style source (default: the image itself, i.e. keep its look).
    pub style_image: Option<Vec<f32>>,
}

/// Class-targeted transformation (Anosheh et al. style): push the encoder's logits toward
/// `target.classes` while content (features at `content_layer`), style (Gram matrices at
/// `style_layers`), TV and the thresholded similarity keep it the same picture.
pub fn transform<B: AutodiffBackend>(net: ConvNet<B>, image: Tensor<B::InnerBackend, 4>, target: &TransformTarget, cfg: &OptimizeConfig, opts: &RunOptions) -> Result<Outcome> {
    let spec = net.spec.clone();
    let [n, _, h, wd] = image.dims();
    let device = image.device();
    let k = spec.classes.len();
    if target.classes.len() != n {
        bail!("{} target classes for {n} images", target.classes.len());
    }
    let logits = class_tap(&spec)?;
    let w = &cfg.weights;
    let content_layer = if w.content_layer.is_empty() { default_content_layer(&spec)? } else { w.content_layer.clone() };
    spec.check_tap(&content_layer)?;
    for t in &w.style_layers {
        spec.check_tap(t)?;
    }
    let mut onehot = vec![0f32; n * k];
    for (i, &c) in target.classes.iter().enumerate() {
        if c >= k {
            bail!("class index {c} is out of range: the encoder has {k} classes (0..={})", k - 1);
        }
        onehot[i * k + c] = 1.0;
    }
    let label: Vec<String> = target.classes.iter().map(|&c| spec.classes[c].clone()).collect();
    let onehot = Tensor::<B, 2>::from_data(TensorData::new(onehot, [n, k]), &device);
    let mut obj = w.class * objective::class_target(&logits, onehot, &label.join(",")) + regularizers(&spec, w);
    if w.content != 0.0 {
        let c = encode_inner(&net, image.clone(), &[&content_layer])?.remove(&content_layer).unwrap().flat();
        obj = obj + w.content * objective::content(&content_layer, constant::<B, 2>(c));
    }
    if w.style != 0.0 && !w.style_layers.is_empty() {
        let style_src = match &target.style_image {
            Some(v) => Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(v.clone(), [1, 3, h, wd]), &device).repeat_dim(0, n),
            None => image.clone(),
        };
        let taps: Vec<&str> = w.style_layers.iter().map(String::as_str).collect();
        let mut acts = encode_inner(&net, style_src, &taps)?;
        let mut grams = Vec::new();
        for t in &w.style_layers {
            match acts.remove(t.as_str()) {
                Some(crate::encoder::Act::Map(m)) => grams.push(constant::<B, 3>(objective::gram(m))),
                _ => bail!("style layer '{t}' is not a convolutional tap; use conv or pool taps"),
            }
        }
        obj = obj + w.style * objective::style(&w.style_layers, grams);
    }
    if w.similarity != 0.0 {
        obj = obj + w.similarity * objective::similarity(constant::<B, 4>(image.clone()), w.similarity_threshold);
    }
    let (param, _) = make_param::<B>(&cfg.param, &spec, &device)?;
    let mut engine = Engine::new(net, obj, param, cfg.transforms.clone(), opts.seed)?;
    if let Some(m) = target.mask {
        engine = engine.with_mask(m, constant::<B, 4>(image.clone()))?;
    }
    let x0 = start(&engine, n, cfg, Some(image), opts, &device)?;
    let p = optimize(&engine, x0, &cfg.solver, opts, "transform")?;
    Outcome::from(&engine, &p)
}

/// The encoder's logits tap (`fc8` by convention).
fn class_tap(spec: &crate::encoder::EncoderSpec) -> Result<String> {
    let shapes = spec.tap_shapes()?;
    if shapes.get("fc8").is_some_and(|s| s == &vec![spec.classes.len()]) {
        return Ok("fc8".into());
    }
    bail!("encoder {} has no fc8 logits tap with {} classes; valid taps: {}", spec.arch, spec.classes.len(), spec.taps().join(", "))
}

/// The last convolutional tap (content layer of the class transform by default).
fn default_content_layer(spec: &crate::encoder::EncoderSpec) -> Result<String> {
    let shapes = spec.tap_shapes()?;
    spec.taps()
        .into_iter()
        .rfind(|t| t.starts_with("conv") && shapes[t].len() == 3)
        .with_context(|| format!("encoder {} has no conv tap for the content term", spec.arch))
}

/// Predicted class and its probability for each image.
pub fn predict<B: Backend>(net: &ConvNet<B>, images: Tensor<B, 4>) -> Result<Vec<(usize, f32)>> {
    Ok(probabilities(net, images)?.iter().map(|p| top_class(p)).collect())
}

/// The encoder's class probabilities (softmax of its logits), one row per image.
pub fn probabilities<B: Backend>(net: &ConvNet<B>, images: Tensor<B, 4>) -> Result<Vec<Vec<f32>>> {
    let logits = class_tap(&net.spec)?;
    let p = burn::tensor::activation::softmax(net.tap_flat(images, &logits, false)?, 1);
    let k = net.spec.classes.len();
    Ok(to_vec(p).chunks(k).map(<[f32]>::to_vec).collect())
}

/// The most probable class of a probability row and its probability.
pub fn top_class(p: &[f32]) -> (usize, f32) {
    let (i, &pmax) = p.iter().enumerate().fold((0, &f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
    (i, pmax)
}

/// The solver kinds a method may use (DeepDream has its own octave loop).
pub fn check_solver(method: &str, kind: SolverKind) -> Result<()> {
    match (method, kind) {
        ("dream", SolverKind::Dream) => Ok(()),
        ("dream", k) => bail!("dream uses normalized-gradient ascent over octaves; --solver {k:?} is not available for it"),
        (_, _) => Ok(()),
    }
}

#[cfg(test)]
mod tests;
