//! The optimization subcommands (`invert`, `visualize`, `dream`, `caricature`, `transform`):
//! their flags, and the glue from files to the drivers in [`super`]. `main.rs` loads the
//! encoder and calls these.
use super::objective::{class_index, Target};
use super::param::ParamKind;
use super::solver::SolverKind;
use super::{Init, OptimizeConfig, Outcome, RunOptions};
use crate::data::batch::preprocess_for;
use crate::data::codes::{CodeFile, TapCodes};
use crate::encoder::Loaded;
use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Flags shared by every optimization command. Each overrides the preset's value.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct OptFlags {
    /// Preset TOML (default: the method's built-in configs/optimize-METHOD.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// mv (momentum, M&V schedule), adam, lbfgs (no random transforms), dream.
    #[arg(long)]
    pub solver: Option<SolverKind>,
    /// Steps of the first phase (with transforms).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Steps of the final phase (no transforms, lr × final-lr-factor).
    #[arg(long)]
    pub final_steps: Option<usize>,
    /// Learning rate (step size) of the first phase.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Momentum of the mv solver.
    #[arg(long)]
    pub momentum: Option<f64>,
    /// pixel, fourier (decorrelated colour, 1/f spectrum) or decoder:RUN_DIR (optimize a
    /// trained decoder's code, DGN-AM).
    #[arg(long)]
    pub param: Option<String>,
    /// Random shift in pixels of the encoder input (0 = off).
    #[arg(long)]
    pub jitter: Option<usize>,
    /// Padding in pixels before the random transforms.
    #[arg(long)]
    pub pad: Option<usize>,
    /// Maximum random rotation in degrees.
    #[arg(long)]
    pub rotate: Option<f32>,
    /// Random scales to choose from, comma-separated (1 = none).
    #[arg(long, value_delimiter = ',')]
    pub scales: Option<Vec<f32>>,
    /// M&V's C (feature-match weight).
    #[arg(long)]
    pub feature: Option<f32>,
    /// TV weight, in units of M&V's (6.5/B)^β.
    #[arg(long)]
    pub tv: Option<f32>,
    /// TV exponent β (M&V: 2).
    #[arg(long)]
    pub tv_beta: Option<f32>,
    /// α-norm weight, in units of M&V's (1/B)^α.
    #[arg(long)]
    pub alpha_norm: Option<f32>,
    /// α-norm exponent α (M&V: 6).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// M&V's B (natural pixel norm, 0–255 scale).
    #[arg(long)]
    pub natural_scale: Option<f32>,
    /// Activation weight (visualize).
    #[arg(long)]
    pub activation: Option<f32>,
    /// Layer-L2 weight (dream).
    #[arg(long)]
    pub l2: Option<f32>,
    /// Caricature weight.
    #[arg(long)]
    pub caricature: Option<f32>,
    /// Class cross-entropy weight (transform).
    #[arg(long)]
    pub class_weight: Option<f32>,
    /// Content weight (transform).
    #[arg(long)]
    pub content: Option<f32>,
    /// Tap of the content term (transform; default: the last conv tap).
    #[arg(long)]
    pub content_layer: Option<String>,
    /// Style weight (transform).
    #[arg(long)]
    pub style: Option<f32>,
    /// Style taps, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub style_layers: Option<Vec<String>>,
    /// Similarity weight (transform).
    #[arg(long)]
    pub similarity: Option<f32>,
    /// Changes below this fraction of the `[0,1]` range are free.
    #[arg(long)]
    pub similarity_threshold: Option<f32>,
    /// Save the image after these steps (comma-separated; 0 = the start).
    #[arg(long, value_delimiter = ',')]
    pub snapshots: Vec<usize>,
    /// Folder for snapshot PNGs (default: beside --out).
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// TensorBoard log folder (loss and terms per step, snapshot images).
    #[arg(long)]
    pub tensorboard: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl OptFlags {
    /// The preset for `method` with these flags applied; `input` is the encoder's input side
    /// (transform flags are absolute pixels, so the preset's are scaled to it first).
    pub fn config(&self, method: &str, input: usize) -> Result<OptimizeConfig> {
        let mut c = super::load_config(self.config.as_deref(), method)?;
        let s = &mut c.solver;
        set(&mut s.kind, self.solver);
        set(&mut s.steps, self.steps);
        set(&mut s.final_steps, self.final_steps);
        set(&mut s.lr, self.lr);
        set(&mut s.momentum, self.momentum);
        super::check_solver(method, c.solver.kind)?;
        if let Some(p) = &self.param {
            c.param.kind = match p.as_str() {
                "pixel" => ParamKind::Pixel,
                "fourier" => ParamKind::Fourier,
                _ => match p.strip_prefix("decoder:") {
                    Some(dir) if !dir.is_empty() => {
                        c.param.decoder = dir.to_string();
                        ParamKind::Decoder
                    }
                    _ => bail!("unknown --param '{p}'; valid: pixel, fourier, decoder:RUN_DIR"),
                },
            };
        }
        let t = &mut c.transforms;
        *t = t.scaled_to(input);
        set(&mut t.jitter, self.jitter);
        set(&mut t.pad, self.pad);
        set(&mut t.rotate, self.rotate);
        set(&mut t.scales, self.scales.clone());
        let w = &mut c.weights;
        set(&mut w.feature, self.feature);
        set(&mut w.tv, self.tv);
        set(&mut w.tv_beta, self.tv_beta);
        set(&mut w.alpha_norm, self.alpha_norm);
        set(&mut w.alpha, self.alpha);
        set(&mut w.natural_scale, self.natural_scale);
        set(&mut w.activation, self.activation);
        set(&mut w.l2, self.l2);
        set(&mut w.caricature, self.caricature);
        set(&mut w.class, self.class_weight);
        set(&mut w.content, self.content);
        set(&mut w.content_layer, self.content_layer.clone());
        set(&mut w.style, self.style);
        set(&mut w.style_layers, self.style_layers.clone());
        set(&mut w.similarity, self.similarity);
        set(&mut w.similarity_threshold, self.similarity_threshold);
        if w.natural_scale <= 0.0 {
            bail!("--natural-scale (B) must be positive, got {}", w.natural_scale);
        }
        // A negative step climbs the objective; a momentum of 1 or more never forgets.
        let s = &c.solver;
        if !(s.lr > 0.0 && s.lr.is_finite()) {
            bail!("--lr (solver.lr) must be a positive number, got {}", s.lr);
        }
        if !(0.0..1.0).contains(&s.momentum) {
            bail!("--momentum (solver.momentum) must be in [0, 1), got {}", s.momentum);
        }
        if !(0.0..1.0).contains(&w.similarity_threshold) || w.similarity_threshold == 0.0 {
            bail!("--similarity-threshold must be in (0, 1), got {}", w.similarity_threshold);
        }
        // NaN passes every comparison above it fails; a negative regularizer rewards noise.
        let weights = [
            ("feature", w.feature),
            ("activation", w.activation),
            ("caricature", w.caricature),
            ("class-weight", w.class),
            ("content", w.content),
            ("style", w.style),
        ];
        if let Some((k, v)) = weights.iter().find(|(_, v)| !v.is_finite()) {
            bail!("--{k} must be a finite number, got {v}");
        }
        let regularizers = [("tv", w.tv), ("alpha-norm", w.alpha_norm), ("l2", w.l2), ("similarity", w.similarity)];
        if let Some((k, v)) = regularizers.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            bail!("--{k} (a regularizer's weight) must be a number ≥ 0, got {v}");
        }
        for (k, v) in [("tv-beta", w.tv_beta), ("alpha", w.alpha)] {
            if !(v.is_finite() && v >= 1.0) {
                bail!("--{k} (an exponent) must be a number ≥ 1, got {v}");
            }
        }
        let t = &c.transforms;
        if !t.rotate.is_finite() {
            bail!("--rotate must be a finite number of degrees, got {}", t.rotate);
        }
        if let Some(v) = t.scales.iter().find(|v| !(v.is_finite() && **v > 0.0)) {
            bail!("--scales must be positive numbers, got {v}");
        }
        let total = c.solver.steps + c.solver.final_steps;
        let late: Vec<&usize> = self.snapshots.iter().filter(|&&k| k > total).collect();
        if method != "dream" && !late.is_empty() {
            eprintln!("note: --snapshots {late:?} come after the run's last step ({total}); they are not written");
        }
        // Pixels of the encoder's input: more is an image mostly of padding.
        for (k, v) in [("jitter", t.jitter), ("pad", t.pad)] {
            if v > input {
                bail!("--{k} must be at most the input's side ({input} pixels), got {v}");
            }
        }
        Ok(c)
    }

    pub fn run_options(&self, seed: u64, out: &Path) -> RunOptions {
        let dir = self.snapshot_dir.clone().or_else(|| {
            (!self.snapshots.is_empty()).then(|| {
                let stem = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
                out.with_file_name(format!("{stem}_snapshots"))
            })
        });
        RunOptions { snapshots: self.snapshots.clone(), snapshot_dir: dir, tensorboard: self.tensorboard.clone(), seed, progress: !self.quiet, ..Default::default() }
    }
}

fn set<T>(slot: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *slot = v;
    }
}

/// One image file, preprocessed for the encoder, as `[1, 3, H, W]`.
pub fn load_image<B: Backend>(path: &Path, spec: &crate::encoder::EncoderSpec, device: &B::Device) -> Result<Tensor<B, 4>> {
    let [h, w] = spec.input_size;
    let chw = crate::data::folder::load_rgb(path, &preprocess_for(spec))?;
    Ok(Tensor::from_data(TensorData::new(chw, [1, 3, h, w]), device))
}

/// Where a run over named items writes: `--out` itself for one item given as an image file,
/// else `OUT/<name>.png` (names keep their class folder).
struct Outputs {
    out: PathBuf,
    single_file: bool,
}

impl Outputs {
    fn new(out: &Path, n: usize, what: &str) -> Result<Self> {
        let is_file = crate::data::folder::has_image_extension(out);
        if n > 1 && is_file {
            bail!("{n} {what}, so --out must be a folder (OUT/<id>.png), not the image file {}", out.display());
        }
        Ok(Outputs { out: out.to_path_buf(), single_file: n == 1 && is_file })
    }

    fn path(&self, name: &str) -> PathBuf {
        if self.single_file {
            self.out.clone()
        } else {
            crate::reconstruct::output_path(&self.out, name)
        }
    }

    /// Run options for batch `k` of `batches`: items named for their snapshot folders, a shared
    /// noise start, and a TensorBoard folder per batch when there are several.
    fn run_options(&self, opt: &OptFlags, seed: u64, names: &[String], k: usize, batches: usize) -> RunOptions {
        let mut run = opt.run_options(seed, &self.out);
        run.shared_start = true;
        if !self.single_file {
            run.names = names.to_vec();
        }
        if batches > 1 {
            run.tensorboard = run.tensorboard.map(|d| d.join(format!("batch_{k:03}")));
        }
        run
    }
}

/// The readable images of `items` as one batch `[n, 3, H, W]` for the encoder, with their names;
/// `None` when none could be read (broken folder images are recorded in `skips`).
fn load_batch<B: Backend>(items: &[&crate::data::folder::NamedImage], spec: &crate::encoder::EncoderSpec, skips: &crate::data::folder::SkipLog, device: &B::Device) -> Result<Option<(Vec<String>, Tensor<B, 4>)>> {
    let pre = preprocess_for(spec);
    let (mut names, mut data) = (Vec::new(), Vec::new());
    for it in items {
        if let Some(chw) = it.load(&pre, skips)? {
            names.push(it.name.clone());
            data.extend(chw);
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    let [h, w] = spec.input_size;
    let n = names.len();
    Ok(Some((names, Tensor::from_data(TensorData::new(data, [n, 3, h, w]), device))))
}

#[derive(clap::Args, Clone, Debug)]
pub struct InvertArgs {
    /// Tap whose code is inverted.
    #[arg(long)]
    pub layer: String,
    /// Invert these images' codes: files, or folders (every image in them, read as `extract`
    /// reads a folder).
    #[arg(long, num_args = 1.., conflicts_with = "codes")]
    pub image: Vec<PathBuf>,
    /// ...or codes from a code file (`preimage extract`, or PyTorch's).
    #[arg(long)]
    pub codes: Option<PathBuf>,
    /// Rows of --codes, comma-separated (default: 0 unless --ids or --range is given).
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["ids", "range"])]
    pub index: Vec<usize>,
    /// Ids of --codes, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with = "range")]
    pub ids: Option<Vec<String>>,
    /// Rows START:END of --codes (end exclusive; either side may be left out).
    #[arg(long)]
    pub range: Option<String>,
    /// noise (M&V baseline), image (start from --image), decoder:RUN_DIR (refiner: start from
    /// the decoder's reconstruction).
    #[arg(long, default_value = "noise")]
    pub init: Init,
    /// Output PNG for one code; a folder for several (`OUT/<id>.png` and `OUT/invert.csv`).
    #[arg(long)]
    pub out: PathBuf,
    /// Codes optimized together; more is faster per code and uses more memory. With the mv
    /// and adam solvers a code's result does not depend on it (every code starts from the
    /// same noise); lbfgs's line search treats the batch as one problem.
    #[arg(long, visible_alias = "batch-size", default_value_t = 8, value_parser = crate::util::at_least_one)]
    pub batch: usize,
    /// Also tile the results into one PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    #[command(flatten)]
    pub opt: OptFlags,
}

/// What `invert` inverts: named codes from images or from a code file.
enum Targets {
    Images(Vec<crate::data::folder::NamedImage>),
    Codes { file: Box<CodeFile>, tap: TapCodes, rows: Vec<usize> },
}

impl Targets {
    fn from_args(a: &InvertArgs, enc: &Loaded<impl Backend>, skips: &crate::data::folder::SkipLog) -> Result<Targets> {
        match (&a.image[..], &a.codes) {
            ([], Some(path)) => {
                let module = enc.net.spec.torch_modules().remove(&a.layer);
                // The codes stay on disk where their file allows (`open_tap_as`), read by
                // rows: inverting a few codes of a file larger than memory reads those few.
                let (file, tap) = CodeFile::open_tap_as(path, &a.layer, module.as_deref())?;
                check_codes(&file, tap.shape(), path, &a.layer, enc)?;
                let rows = if a.index.is_empty() {
                    crate::reconstruct::Selection::from_args(a.ids.clone(), a.range.as_deref())
                        .map(|s| if s == crate::reconstruct::Selection::All { crate::reconstruct::Selection::Range(0, 1) } else { s })?
                        .rows(&file.ids)?
                } else {
                    a.index.clone()
                };
                if let Some(&bad) = rows.iter().find(|&&r| r >= file.ids.len()) {
                    let n = file.ids.len();
                    bail!("--index {bad} is out of range: {} holds {n} codes (0..={})", path.display(), n.saturating_sub(1));
                }
                Ok(Targets::Codes { file: Box::new(file), tap, rows })
            }
            ([], None) => bail!("give the codes to invert with --image FILE|FOLDER... or --codes FILE [--index I,J | --ids | --range A:B]"),
            (images, None) => {
                if !a.index.is_empty() || a.ids.is_some() || a.range.is_some() {
                    bail!("--index, --ids and --range pick rows of --codes; with --image every image given is inverted");
                }
                let items = crate::data::folder::image_list(images, skips)?;
                Ok(Targets::Images(items))
            }
            (_, Some(_)) => unreachable!("clap: --image conflicts with --codes"),
        }
    }

    fn len(&self) -> usize {
        match self {
            Targets::Images(v) => v.len(),
            Targets::Codes { rows, .. } => rows.len(),
        }
    }
}

/// `preimage invert`: one code → `--out` PNG; several → `--out/<id>.png` and `invert.csv`
/// (feature error per code), optimized `--batch` at a time. Returns the outcome of the last batch.
pub fn invert<B: AutodiffBackend>(enc: Loaded<B>, seed: u64, a: &InvertArgs, device: &B::Device) -> Result<Outcome> {
    let spec = enc.net.spec.clone();
    spec.check_tap(&a.layer)?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = a.opt.config("invert", spec.input_size[0].min(spec.input_size[1]))?;
    let skips = crate::data::folder::SkipLog::new();
    let targets = Targets::from_args(a, &enc, &skips)?;
    let outputs = Outputs::new(&a.out, targets.len(), "codes to invert")?;
    if matches!(a.init, Init::Image) && matches!(targets, Targets::Codes { .. }) {
        bail!("--init image needs --image (a code file holds no image)");
    }
    let order: Vec<usize> = (0..targets.len()).collect();
    let chunks: Vec<&[usize]> = order.chunks(a.batch).collect();
    let mut csv = String::from(if matches!(a.init, Init::Noise) { "id,feature_error,relative_error\n" } else { "id,feature_error,relative_error,start_feature_error\n" });
    let (mut all, mut sum, mut count) = (Vec::new(), 0.0f64, 0usize);
    let mut last = None;
    for (k, chunk) in chunks.iter().enumerate() {
        // Codes (and the images they came from) of this batch; unreadable folder images are skipped.
        let (names, code, image) = match &targets {
            Targets::Images(items) => {
                let batch: Vec<_> = chunk.iter().map(|&i| &items[i]).collect();
                let Some((names, x)) = load_batch::<B::InnerBackend>(&batch, &spec, &skips, device)? else { continue };
                let code = super::encode_inner(&enc.net, x.clone(), &[&a.layer])?.remove(&a.layer).unwrap().flat();
                (names, code, Some(x))
            }
            Targets::Codes { file, tap, rows } => {
                let rows: Vec<usize> = chunk.iter().map(|&i| rows[i]).collect();
                let code = Tensor::from_data(TensorData::new(tap.rows(&rows)?, [rows.len(), tap.row_len()]), device);
                (rows.iter().map(|&r| file.ids[r].clone()).collect::<Vec<_>>(), code, None)
            }
        };
        let init = match &a.init {
            Init::Noise => None,
            Init::Image => image.clone(),
            Init::Decoder(dir) => Some(super::decoder_start::<B>(dir, &spec, &enc.weights_sha256, &a.layer, code.clone(), device)?),
        };
        let start_err = match &init {
            Some(start) => Some(super::feature_error(&enc.net.valid(), &a.layer, start.clone(), code.clone())?),
            None => None,
        };
        if let (Some(e), 1) = (&start_err, targets.len()) {
            println!("start: feature error at {} = {:.4} (relative {:.4})", a.layer, e[0], e[0].sqrt());
        }
        if chunks.len() > 1 {
            println!("batch {}/{}: {}", k + 1, chunks.len(), names.join(", "));
        }
        let run = outputs.run_options(&a.opt, seed, &names, k, chunks.len());
        let out = super::invert::<B>(enc.net.clone(), &a.layer, code, init, &cfg, &run)?;
        let errs = out.term("feature(").map(<[f32]>::to_vec).unwrap_or_else(|| vec![f32::NAN; names.len()]);
        for (i, name) in names.iter().enumerate() {
            let path = outputs.path(name);
            out.save(i, &path)?;
            let e = errs[i];
            let start = start_err.as_ref().filter(|_| targets.len() > 1).map(|s| format!(" (start {:.4})", s[i])).unwrap_or_default();
            println!(
                "wrote {}: feature error at {} = {e:.4}{start} (‖Φ(x) − Φ₀‖² / ‖Φ₀‖², M&V's term; relative ‖Φ(x) − Φ₀‖ / ‖Φ₀‖ = {:.4})",
                path.display(),
                a.layer,
                e.sqrt()
            );
            csv.push_str(&format!("{},{e},{}", crate::data::folder::csv_cell(name)?, e.sqrt()));
            if let Some(s) = &start_err {
                csv.push_str(&format!(",{}", s[i]));
            }
            csv.push('\n');
            sum += e as f64;
            count += 1;
        }
        if !outputs.single_file {
            // Rewritten after every batch, so a run that stops keeps the errors of what it wrote.
            crate::util::write_atomic(&a.out.join("invert.csv"), csv.as_bytes())?;
        }
        if a.grid.is_some() {
            all.extend(out.images.iter().cloned());
        }
        last = Some(out);
    }
    skips.report();
    let out = last.with_context(|| format!("no image could be read ({})", skips.summary()))?;
    if !outputs.single_file {
        println!("inverted {count} codes: mean feature error at {} = {:.4}; per code in {}", a.layer, sum / count as f64, a.out.join("invert.csv").display());
    }
    if let Some(g) = &a.grid {
        crate::reconstruct::save_grid(g, &all, out.size, 0)?;
    }
    Ok(out)
}

/// Check that a code file's `layer` codes, of `shape` (`[N, ...]`), fit the encoder that will
/// invert them: the same encoder, weights and input size where the file records them, and
/// codes of the tap's shape.
fn check_codes(file: &CodeFile, shape: &[usize], path: &Path, layer: &str, enc: &Loaded<impl Backend>) -> Result<()> {
    if let Some(pv) = &file.provenance {
        if pv.encoder != enc.net.spec.arch || pv.weights_sha256 != enc.weights_sha256 {
            bail!(
                "{} holds codes of encoder {} (weights {}), but the encoder given is {} (weights {}); pass the same --encoder and --weights/--run",
                path.display(),
                pv.encoder,
                short(&pv.weights_sha256),
                enc.net.spec.arch,
                short(&enc.weights_sha256)
            );
        }
        if pv.input_size != enc.net.spec.input_size {
            let [h, w] = pv.input_size;
            bail!("{} holds codes of {h}×{w} images, but the encoder is set to {:?}: pass --input-size {h}x{w}, or leave it out to take the file's", path.display(), enc.net.spec.input_size);
        }
    }
    let want = enc.net.spec.tap_shapes()?.remove(layer).with_context(|| format!("{} has no tap '{layer}'", enc.net.spec.arch))?;
    // Written elsewhere, only the shape can be checked (the reader said so); ours were
    // written by this encoder, perhaps at another input size.
    if !crate::data::codes::fits_shape(layer, &shape[1..], &want) {
        bail!("{}: its '{layer}' codes have shape {:?}, but {} {layer} codes have shape {want:?}", path.display(), &shape[1..], enc.net.spec.arch);
    }
    Ok(())
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[derive(clap::Args, Clone, Debug)]
pub struct VisualizeArgs {
    /// Units to maximize, comma-separated: TAP:INDEX (fc units, class logits by index or
    /// name: fc8:chair), TAP:CHANNEL (a conv channel's mean), TAP:CHANNEL@Y:X (one neuron);
    /// TAP:A-B is every index from A to B, TAP:all every unit of the tap. A target may be a
    /// weighted sum of units: conv5:12+conv5:30, fc8:chair-0.5*fc8:table, -conv5:3.
    #[arg(long, value_delimiter = ',', required = true, allow_hyphen_values = true)]
    pub target: Vec<String>,
    /// Output folder: one PNG per target and grid.png.
    #[arg(long)]
    pub out: PathBuf,
    /// Targets optimized together; more is faster per target and uses more memory. A
    /// target's image does not depend on it (every target starts from the same noise).
    #[arg(long, visible_alias = "batch-size", default_value_t = 16, value_parser = crate::util::at_least_one)]
    pub batch: usize,
    #[command(flatten)]
    pub opt: OptFlags,
}

/// Targets with `TAP:A-B` ranges and `TAP:all` written out, one per unit (`@Y:X` kept).
fn expand_targets(targets: &[String], spec: &crate::encoder::EncoderSpec) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for t in targets {
        let Some((tap, rest)) = t.split_once(':') else {
            out.push(t.clone());
            continue;
        };
        let (idx, pos) = match rest.split_once('@') {
            Some((i, p)) => (i.trim(), format!("@{p}")),
            None => (rest.trim(), String::new()),
        };
        let range = if idx.eq_ignore_ascii_case("all") {
            spec.check_tap(tap.trim())?;
            let count = spec.tap_shapes()?[tap.trim()][0];
            Some((0, count - 1))
        } else {
            // Only numbers on both sides: class names may hold a '-' (fc8:jack-o'-lantern).
            idx.split_once('-').and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)))
        };
        match range {
            Some((a, b)) if a > b => bail!("target '{t}': the range {a}-{b} is empty (write the smaller index first)"),
            Some((a, b)) => {
                // Checked before writing the range out: `0-4294967296` is no allocation to attempt.
                spec.check_tap(tap.trim())?;
                let units = spec.tap_shapes()?[tap.trim()][0];
                if b >= units {
                    bail!("target '{t}': {} has {units} units (0-{}), not {b}", tap.trim(), units - 1);
                }
                out.extend((a..=b).map(|i| format!("{}:{i}{pos}", tap.trim())));
            }
            None => out.push(t.clone()),
        }
    }
    Ok(out)
}

/// `preimage visualize`: one image per target, `--batch` targets at a time. Returns the
/// outcome of all targets (images in target order; terms of the last batch).
pub fn visualize<B: AutodiffBackend>(enc: Loaded<B>, seed: u64, a: &VisualizeArgs, device: &B::Device) -> Result<Outcome> {
    let spec = enc.net.spec.clone();
    let targets = expand_targets(&a.target, &spec)?;
    let units: Vec<Target> = targets.iter().map(|t| Target::parse(t, &spec)).collect::<Result<_>>()?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = a.opt.config("visualize", spec.input_size[0].min(spec.input_size[1]))?;
    let net_inner = enc.net.valid();
    let file_name = |u: &Target| -> String { u.label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '+' { c } else { '_' }).collect() };
    let chunks: Vec<&[Target]> = units.chunks(a.batch).collect();
    let width = units.iter().map(|u| u.label.chars().count()).max().unwrap_or(0).max(20);
    let mut all: Option<Outcome> = None;
    for (k, chunk) in chunks.iter().enumerate() {
        if chunks.len() > 1 {
            println!("batch {}/{}: {} targets from {}", k + 1, chunks.len(), chunk.len(), chunk[0].label);
        }
        let mut run = a.opt.run_options(seed, &a.out.join("grid.png"));
        run.shared_start = true;
        run.names = chunk.iter().map(file_name).collect();
        if chunks.len() > 1 {
            run.tensorboard = run.tensorboard.map(|d| d.join(format!("batch_{k:03}")));
        }
        let out = super::visualize::<B>(enc.net.clone(), chunk, &cfg, &run, device)?;
        let [h, w] = out.size;
        let imgs = Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(out.images.concat(), [chunk.len(), 3, h, w]), device);
        let values = super::unit_values(&net_inner, chunk, imgs)?;
        for (i, u) in chunk.iter().enumerate() {
            let path = a.out.join(format!("{}.png", file_name(u)));
            out.save(i, &path)?;
            println!("{:<width$} activation {:>10.4}  → {}", u.label, values[i], path.display());
        }
        all = Some(match all {
            None => out,
            Some(mut prev) => {
                prev.images.extend(out.images);
                prev.terms = out.terms;
                prev
            }
        });
    }
    let out = all.context("no target given (e.g. --target fc8:3,conv5:12)")?;
    let [h, w] = out.size;
    let (g, gh, gw) = crate::report::tensorboard::grid(&out.images, h, w, units.len().min(8), 2);
    crate::data::folder::save_rgb(&a.out.join("grid.png"), &g, gh as u32, gw as u32)?;
    Ok(out)
}

#[derive(clap::Args, Clone, Debug)]
pub struct DreamArgs {
    /// Tap whose L2 is maximized.
    #[arg(long)]
    pub layer: String,
    /// The images to dream on, files or folders, each at its own size (as the deepdream
    /// notebook; fc taps see it resized to the encoder input).
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Scale the image down so that its longer side is at most this many pixels (0 = keep
    /// its size): memory grows with the pixels.
    #[arg(long, default_value_t = 1024)]
    pub max_size: u32,
    /// Number of octaves (image scales), smallest first.
    #[arg(long)]
    pub octaves: Option<usize>,
    /// Size ratio between successive octaves.
    #[arg(long)]
    pub octave_scale: Option<f32>,
    /// Output PNG for one image; a folder for several (`OUT/<id>.png`).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub opt: OptFlags,
}

/// `preimage dream`, one image at a time (each at its own size); returns the last outcome.
pub fn dream<B: AutodiffBackend>(enc: Loaded<B>, seed: u64, a: &DreamArgs, device: &B::Device) -> Result<Outcome> {
    let spec = enc.net.spec.clone();
    spec.check_tap(&a.layer)?;
    let mut cfg = a.opt.config("dream", spec.input_size[0].min(spec.input_size[1]))?;
    set(&mut cfg.solver.octaves, a.octaves);
    set(&mut cfg.solver.octave_scale, a.octave_scale);
    if !(cfg.solver.octave_scale > 1.0 && cfg.solver.octave_scale.is_finite()) {
        bail!("--octave-scale must be > 1, got {}", cfg.solver.octave_scale);
    }
    if cfg.solver.octaves == 0 {
        bail!("--octaves must be at least 1 (0 would return the image unchanged)");
    }
    let skips = crate::data::folder::SkipLog::new();
    let items = crate::data::folder::image_list(&a.image, &skips)?;
    let outputs = Outputs::new(&a.out, items.len(), "images to dream on")?;
    let mut last = None;
    for (k, it) in items.iter().enumerate() {
        let Some((chw, [h, w], [ih, iw])) = it.read(&skips, |p| crate::data::folder::load_rgb_native(p, a.max_size))? else { continue };
        if (iw, ih) != (w, h) {
            eprintln!("note: dreaming at {w}×{h}: {} is {iw}×{ih} (--max-size {} scales it down; 0 keeps it)", it.path.display(), a.max_size);
        }
        let x = Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(chw, [1, 3, h, w]), device);
        let names = [it.name.clone()];
        let out = super::dream::<B>(enc.net.clone(), &a.layer, x, &cfg, &outputs.run_options(&a.opt, seed, &names, k, items.len()))?;
        let path = outputs.path(&it.name);
        out.save(0, &path)?;
        println!("wrote {}", path.display());
        last = Some(out);
    }
    skips.report();
    last.with_context(|| format!("no image could be read ({})", skips.summary()))
}

#[derive(clap::Args, Clone, Debug)]
pub struct CaricatureArgs {
    /// Tap whose code of the image is exaggerated.
    #[arg(long)]
    pub layer: String,
    /// The images to caricature: files, or folders (every image in them).
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// image (start from the image) or noise.
    #[arg(long, default_value = "image")]
    pub init: String,
    /// Output PNG for one image, at the encoder's input size; a folder for several (`OUT/<id>.png`).
    #[arg(long)]
    pub out: PathBuf,
    /// Images optimized together; more is faster per image and uses more memory.
    #[arg(long, visible_alias = "batch-size", default_value_t = 8, value_parser = crate::util::at_least_one)]
    pub batch: usize,
    /// Also tile the results into one PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    #[command(flatten)]
    pub opt: OptFlags,
}

/// `preimage caricature`, `--batch` images at a time; returns the outcome of the last batch.
pub fn caricature<B: AutodiffBackend>(enc: Loaded<B>, seed: u64, a: &CaricatureArgs, device: &B::Device) -> Result<Outcome> {
    let spec = enc.net.spec.clone();
    spec.check_tap(&a.layer)?;
    let from_noise = match a.init.as_str() {
        "image" => false,
        "noise" => true,
        other => bail!("unknown --init '{other}' for caricature; valid: image, noise"),
    };
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = a.opt.config("caricature", spec.input_size[0].min(spec.input_size[1]))?;
    let skips = crate::data::folder::SkipLog::new();
    let items = crate::data::folder::image_list(&a.image, &skips)?;
    let outputs = Outputs::new(&a.out, items.len(), "images to caricature")?;
    let chunks: Vec<&[crate::data::folder::NamedImage]> = items.chunks(a.batch).collect();
    let (mut all, mut last) = (Vec::new(), None);
    for (k, chunk) in chunks.iter().enumerate() {
        let batch: Vec<_> = chunk.iter().collect();
        let Some((names, x)) = load_batch::<B::InnerBackend>(&batch, &spec, &skips, device)? else { continue };
        if chunks.len() > 1 {
            println!("batch {}/{}: {}", k + 1, chunks.len(), names.join(", "));
        }
        let run = outputs.run_options(&a.opt, seed, &names, k, chunks.len());
        let out = super::caricature::<B>(enc.net.clone(), &a.layer, x, from_noise, &cfg, &run)?;
        for (i, name) in names.iter().enumerate() {
            let path = outputs.path(name);
            out.save(i, &path)?;
            println!("wrote {}", path.display());
        }
        if a.grid.is_some() {
            all.extend(out.images.iter().cloned());
        }
        last = Some(out);
    }
    skips.report();
    let out = last.with_context(|| format!("no image could be read ({})", skips.summary()))?;
    if let Some(g) = &a.grid {
        crate::reconstruct::save_grid(g, &all, out.size, 0)?;
    }
    Ok(out)
}

#[derive(clap::Args, Clone, Debug)]
pub struct TransformArgs {
    /// The images to change: files, or folders (every image in them).
    #[arg(long, num_args = 1.., required = true)]
    pub image: Vec<PathBuf>,
    /// Target class: a name from the encoder's class list or an index.
    #[arg(long)]
    pub class: String,
    /// Gradient mask (white = may change): one image for all, of each image's size or the
    /// encoder input's; or a folder of masks named as the images (`MASKS/<id>.png`).
    #[arg(long)]
    pub mask: Option<PathBuf>,
    /// Style source for the style term (default: each image itself).
    #[arg(long)]
    pub style_image: Option<PathBuf>,
    /// Output PNG for one image, at the encoder's input size; a folder for several
    /// (`OUT/<id>.png` and `OUT/transform.csv`).
    #[arg(long)]
    pub out: PathBuf,
    /// Images optimized together; more is faster per image and uses more memory.
    #[arg(long, visible_alias = "batch-size", default_value_t = 8, value_parser = crate::util::at_least_one)]
    pub batch: usize,
    /// Also tile the results into one PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    #[command(flatten)]
    pub opt: OptFlags,
}

/// One transformed image: the encoder's verdict before and after, and how much it changed.
#[derive(Clone, Debug)]
pub struct Transformed {
    pub id: String,
    /// (top class, its probability) of the original and of the result.
    pub before: (usize, f32),
    pub after: (usize, f32),
    /// The target class's probability before and after.
    pub target_before: f32,
    pub target_after: f32,
    /// SSIM of the result to the original (as the encoder sees it); `None` when too small.
    pub ssim: Option<f64>,
}

/// The mask file of `item`: `mask` itself, or its namesake in a mask folder (`MASKS/<id>.*`).
fn mask_file(mask: &Path, item: &crate::data::folder::NamedImage) -> Result<PathBuf> {
    Ok(if mask.is_dir() {
        let want = mask.join(crate::data::folder::strip_extension(&item.name));
        let dir = want.parent().unwrap_or(mask);
        let stem = want.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| crate::data::folder::has_image_extension(p) && p.file_stem().is_some_and(|s| s.to_string_lossy() == stem))
            .collect();
        found.sort();
        match &found[..] {
            [one] => one.clone(),
            [] => bail!("no mask for {} in {} (looked for {}.png or another image type)", item.path.display(), mask.display(), want.display()),
            [a, b, ..] => bail!("two masks for {}: {} and {}; keep one", item.path.display(), a.display(), b.display()),
        }
    } else {
        mask.to_path_buf()
    })
}

/// `preimage transform`: one image → `--out` PNG; several → `--out/<id>.png` and
/// `transform.csv` (the encoder's verdict before and after, SSIM to the original), `--batch`
/// at a time. Returns every image's verdict.
pub fn transform<B: AutodiffBackend>(enc: Loaded<B>, seed: u64, a: &TransformArgs, device: &B::Device) -> Result<Vec<Transformed>> {
    let spec = enc.net.spec.clone();
    let class = class_index(&a.class, &spec.classes)?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let cfg = a.opt.config("transform", spec.input_size[0].min(spec.input_size[1]))?;
    let style_image = match &a.style_image {
        Some(p) => Some(crate::data::folder::load_rgb(p, &preprocess_for(&spec))?),
        None => None,
    };
    let skips = crate::data::folder::SkipLog::new();
    let items = crate::data::folder::image_list(&a.image, &skips)?;
    let outputs = Outputs::new(&a.out, items.len(), "images to transform")?;
    // Every image's mask is found before the first step: a missing one stops nothing midway.
    let masks: Option<HashMap<&str, PathBuf>> = match &a.mask {
        Some(m) => Some(items.iter().map(|it| Ok((it.name.as_str(), mask_file(m, it)?))).collect::<Result<_>>()?),
        None => None,
    };
    let net_inner = enc.net.valid();
    let [h, w] = spec.input_size;
    let chunks: Vec<&[crate::data::folder::NamedImage]> = items.chunks(a.batch).collect();
    let mut csv = String::from("id,class_before,p_before,class_after,p_after,p_target_before,p_target_after,ssim\n");
    let (mut all, mut results) = (Vec::new(), Vec::new());
    for (k, chunk) in chunks.iter().enumerate() {
        let batch: Vec<_> = chunk.iter().collect();
        let Some((names, x)) = load_batch::<B::InnerBackend>(&batch, &spec, &skips, device)? else { continue };
        if chunks.len() > 1 {
            println!("batch {}/{}: {}", k + 1, chunks.len(), names.join(", "));
        }
        let mask = match &masks {
            Some(files) => {
                let mut v = Vec::with_capacity(names.len() * h * w);
                for name in &names {
                    let item = chunk.iter().find(|it| &it.name == name).expect("a loaded item");
                    let (iw, ih) = image::image_dimensions(&item.path).with_context(|| format!("reading {}", item.path.display()))?;
                    v.extend(super::transform::load_mask(&files[name.as_str()], Some([iw, ih]), spec.input_size, &preprocess_for(&spec))?);
                }
                Some(v)
            }
            None => None,
        };
        let original = super::to_vec(x.clone());
        let target = super::TransformTarget { classes: vec![class; names.len()], mask: mask.as_deref(), style_image: style_image.clone() };
        let before = super::probabilities(&net_inner, x.clone())?;
        let run = outputs.run_options(&a.opt, seed, &names, k, chunks.len());
        let out = super::transform::<B>(enc.net.clone(), x, &target, &cfg, &run)?;
        let y = Tensor::<B::InnerBackend, 4>::from_data(TensorData::new(out.images.concat(), [names.len(), 3, h, w]), device);
        let after = super::probabilities(&net_inner, y)?;
        for (i, name) in names.iter().enumerate() {
            let path = outputs.path(name);
            out.save(i, &path)?;
            let plane = 3 * h * w;
            let r = Transformed {
                id: name.clone(),
                before: super::top_class(&before[i]),
                after: super::top_class(&after[i]),
                target_before: before[i][class],
                target_after: after[i][class],
                ssim: crate::metrics::ssim(&out.images[i], &original[i * plane..(i + 1) * plane], 3, h, w).ok(),
            };
            let ssim = r.ssim.map(|s| format!("{s:.3}")).unwrap_or_else(|| "n/a".into());
            println!(
                "wrote {}: {} ({:.1} %) → {} ({:.1} %), target {} {:.1} % → {:.1} %, SSIM to the original {ssim}",
                path.display(),
                spec.classes[r.before.0],
                100.0 * r.before.1,
                spec.classes[r.after.0],
                100.0 * r.after.1,
                spec.classes[class],
                100.0 * r.target_before,
                100.0 * r.target_after,
            );
            use crate::data::folder::csv_cell;
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                csv_cell(name)?,
                csv_cell(&spec.classes[r.before.0])?,
                r.before.1,
                csv_cell(&spec.classes[r.after.0])?,
                r.after.1,
                r.target_before,
                r.target_after,
                r.ssim.map(|s| s.to_string()).unwrap_or_default()
            ));
            results.push(r);
        }
        if !outputs.single_file {
            // Rewritten after every batch, so a run that stops keeps the rows of what it wrote.
            crate::util::write_atomic(&a.out.join("transform.csv"), csv.as_bytes())?;
        }
        if a.grid.is_some() {
            all.extend(out.images.iter().cloned());
        }
    }
    skips.report();
    if results.is_empty() {
        bail!("no image could be read ({})", skips.summary());
    }
    if !outputs.single_file {
        let reached = results.iter().filter(|r| r.after.0 == class).count();
        println!("transformed {} images: {reached} now classified {}; per image in {}", results.len(), spec.classes[class], a.out.join("transform.csv").display());
    }
    if let Some(g) = &a.grid {
        crate::reconstruct::save_grid(g, &all, [h, w], 0)?;
    }
    Ok(results)
}
