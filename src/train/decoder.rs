//! Training a decoder from a tap's codes back to images (D&B 2016, DeePSiM).
//!
//! Codes come from a code file (computed once: fast) or are computed on the fly from images
//! through the frozen encoder (needed when augmenting: random crops and flips happen before
//! encoding). Losses: pixel L2, feature L2 at a comparator tap, adversarial with a
//! discriminator; the comparator and discriminator are only built when their weight is > 0.
use super::{check_finite, epoch_order, lr_at, split, Checkpoint, RunState, Schedule};
use crate::data::batch::{self, HostBatch};
use crate::data::codes::{CodeFile, Preprocessing, Provenance, TapCodes};
use crate::data::folder::{ImageFolder, Preprocess, SkipLog};
use crate::decoder::deepsim::{self, Comparator, Discriminator, DiscriminatorConfig};
use crate::decoder::{self, Decoder, DecoderArch, DecoderInfo, Plan};
use crate::encoder::{self, ConvNet, EncoderSpec, Input, WeightSource};
use crate::evaluate::Evaluator;
use crate::metrics::Metrics;
use crate::report::tensorboard::TbWriter;
use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer};
use super::adam::Adam;
use super::parallel::{self, Shard};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `configs/decoder-<layer>.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecoderTrainConfig {
    #[serde(default)]
    pub model: DecoderArch,
    #[serde(default)]
    pub loss: LossConfig,
    #[serde(default)]
    pub discriminator: DiscriminatorConfig,
    pub train: DecoderTrainSection,
}

/// Loss weights. Pixel-only training builds neither comparator nor discriminator.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Mean squared pixel error in `[0,1]` RGB (D&B).
    pub pixel: f64,
    /// Mean squared feature error at `feature_tap` of the comparator (DeePSiM).
    pub feature: f64,
    pub feature_tap: Option<String>,
    /// Comparator network: `None` = the encoder itself; else an architecture name, with
    /// `comparator_weights` (a file) or random weights if none are given.
    pub comparator: Option<String>,
    pub comparator_weights: Option<PathBuf>,
    /// Generator's adversarial loss weight (DeePSiM); > 0 trains a discriminator alongside.
    pub adversarial: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self { pixel: 1.0, feature: 0.0, feature_tap: None, comparator: None, comparator_weights: None, adversarial: 0.0 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecoderTrainSection {
    /// Tap to invert (the `--layer` flag overrides it).
    pub layer: Option<String>,
    /// Code file to train from (`--codes`).
    pub codes: Option<PathBuf>,
    /// Image folder: the targets of a code file (default: the folder recorded in it), or the
    /// images to encode on the fly: a folder, or a list of image files and folders.
    #[serde(default, with = "crate::config::one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default = "super::default_betas")]
    pub betas: [f64; 2],
    /// L2 penalty on the weights, added to their gradients (`torch.optim.Adam`'s and Caffe
    /// solvers' `weight_decay`; 0: none).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub weight_decay: f64,
    #[serde(default)]
    pub schedule: Schedule,
    #[serde(default = "super::default_val")]
    pub val_fraction: f64,
    /// Validation images of their own (a folder, or files and folders), encoded on the fly by
    /// the encoder: every training image then trains, and `val_fraction` is not used.
    #[serde(default, with = "crate::config::one_or_many", skip_serializing_if = "Vec::is_empty")]
    pub val_data: Vec<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    /// Train on at most this many images (quick runs); validation is taken first.
    #[serde(default)]
    pub max_images: Option<usize>,
    /// Random crops and flips before encoding (on-the-fly codes only).
    #[serde(default)]
    pub augment: bool,
    #[serde(default = "super::default_log_every")]
    pub log_every: usize,
    /// Log the validation image grid every this many steps (and after each epoch).
    #[serde(default = "default_image_every")]
    pub image_every: usize,
    /// Stop when validation loss has not improved for this many epochs (0 = never).
    #[serde(default)]
    pub early_stop_patience: usize,
    /// Also checkpoint every this many steps within an epoch (0 = after each epoch only), so
    /// a run killed in a long epoch (ImageNet's) resumes where it was.
    #[serde(default)]
    pub checkpoint_every: usize,
}

fn default_image_every() -> usize {
    200
}

/// Where the codes come from.
#[derive(Clone, Debug)]
pub enum CodeSource {
    /// A code file; `data` overrides the image folder recorded in it, `encoder` the weights
    /// recorded in it (needed for a feature loss with the encoder as comparator, and for
    /// feature error / class agreement in validation). A file written elsewhere (PyTorch,
    /// NumPy: no provenance) needs `arch` and `encoder`, the network its codes came from, and
    /// `data`, the folder its ids are paths below, and `input` how its images were fed where
    /// that is not the network's default (ours record it; giving it for them is an error).
    File { codes: PathBuf, data: Option<PathBuf>, encoder: Option<WeightSource>, arch: Option<String>, input: Input },
    /// Images encoded on the fly: a folder (its class folders give labels), or image files and
    /// folders as one unlabelled set ([`ImageFolder::from_paths`]), fed to the encoder at its
    /// default size and resize unless `input` says otherwise.
    Images { data: Vec<PathBuf>, encoder: String, weights: WeightSource, input: Input },
}

impl CodeSource {
    /// From command-line style arguments: a code file (with optional image folder and
    /// encoder weights), or images (a folder, or files and folders) with an encoder.
    pub fn from_args(codes: Option<PathBuf>, data: Vec<PathBuf>, encoder: Option<String>, weights: Option<WeightSource>, input: Input) -> Result<Self> {
        match (codes, data.as_slice(), encoder) {
            (Some(codes), [], arch) => Ok(CodeSource::File { codes, data: None, encoder: weights, arch, input }),
            (Some(codes), [one], arch) => Ok(CodeSource::File { codes, data: Some(one.clone()), encoder: weights, arch, input }),
            (Some(codes), _, _) => bail!(
                "with --codes, --data is the one folder the images of {} are in (their ids are paths below it); {} paths were given",
                codes.display(),
                data.len()
            ),
            (None, [], _) => bail!("no training data: pass --codes FILE (from `preimage extract`) or --data DIR|FILES with --weights FILE or --run DIR"),
            (None, _, Some(encoder)) => Ok(CodeSource::Images { data, encoder, weights: weights.unwrap_or(WeightSource::Random(0)), input }),
            // Without a name, the network the weights hold (`--encoder auto`).
            (None, _, None) => match weights {
                Some(w @ (WeightSource::File(_) | WeightSource::Run(_))) => Ok(CodeSource::Images { data, encoder: encoder::AUTO.to_string(), weights: w, input }),
                _ => bail!("codes computed on the fly need --weights FILE or --run DIR (and --encoder NAME for random weights)"),
            },
        }
    }
}

/// One `train-decoder` invocation.
pub struct DecoderRun {
    pub config: DecoderTrainConfig,
    pub source: CodeSource,
    pub layer: String,
    pub out: PathBuf,
    pub resume: bool,
}

/// Validation numbers of one epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DecoderEpoch {
    pub epoch: usize,
    pub step: usize,
    pub train_loss: f64,
    /// Weighted pixel + feature loss on the validation split (selects the best epoch).
    pub val_loss: f64,
    pub val_pixel_mse: f64,
    /// Reconstruction metrics on the validation split.
    pub val: Metrics,
    pub seconds: f64,
}

/// The data of a run: images in a folder, their codes from a file or from the encoder.
struct Data<B: AutodiffBackend> {
    folder: ImageFolder,
    pre: Preprocess,
    /// Folder record of each item.
    records: Vec<usize>,
    /// Item of each folder record.
    item_of: HashMap<usize, usize>,
    /// Codes of each item, by item (code-file source).
    codes: Option<TapCodes>,
    code_dim: usize,
    /// The frozen encoder when known (on-the-fly codes, feature loss, validation metrics).
    encoder: Option<ConvNet<B>>,
    tap: String,
}

/// A batch made on the host: decoded images and, from a code file, their codes' rows.
struct HostItems {
    images: HostBatch,
    codes: Option<Vec<f32>>,
}

/// A batch: target images `[n, 3, h, w]`, codes `[n, D]`, the items kept.
struct Batch<B: Backend> {
    images: Tensor<B, 4>,
    codes: Tensor<B, 2>,
    /// Folder records of the images kept.
    records: Vec<usize>,
}

impl<B: AutodiffBackend> Data<B> {
    /// Other images (`paths`: a folder, or files and folders) with codes from this data's
    /// encoder, computed on the fly: a validation set of its own.
    fn other_images(&self, paths: &[PathBuf], skips: &SkipLog) -> Result<Data<B>> {
        let Some(encoder) = &self.encoder else {
            bail!("validation images (--val-data) are encoded on the fly, but the encoder weights the codes came from are unknown: pass --weights or --run");
        };
        let folder = ImageFolder::from_paths(paths, skips).context("opening the validation images (--val-data)")?;
        let records: Vec<usize> = (0..folder.len()).collect();
        let item_of = records.iter().map(|&r| (r, r)).collect();
        Ok(Data { folder, pre: self.pre, records, item_of, codes: None, code_dim: self.code_dim, encoder: Some(encoder.clone()), tap: self.tap.clone() })
    }

    fn batch(&self, items: &[usize], augment: Option<u64>, device: &B::Device) -> Result<Option<Batch<B>>> {
        self.decode(items, augment)?.map(|b| self.with_codes(b, device)).transpose()
    }

    /// The images of `items` decoded on the host with their codes from the file, if any (the
    /// part a prefetching thread can do: reading codes from disk overlaps the step too).
    fn decode(&self, items: &[usize], augment: Option<u64>) -> Result<Option<HostItems>> {
        let recs: Vec<usize> = items.iter().map(|&i| self.records[i]).collect();
        let Some(images) = batch::decode(&self.folder, &recs, &self.pre, augment) else { return Ok(None) };
        let codes = match &self.codes {
            Some(all) => Some(all.rows(&images.indices.iter().map(|r| self.item_of[r]).collect::<Vec<_>>())?),
            None => None,
        };
        Ok(Some(HostItems { images, codes }))
    }

    /// A host batch on the device, with its codes (from the file, or encoded now).
    fn with_codes(&self, b: HostItems, device: &B::Device) -> Result<Batch<B>> {
        let HostItems { images, codes } = b;
        let b = images.to_device::<B>(device);
        let n = b.indices.len();
        let codes = match codes {
            Some(rows) => Tensor::from_data(TensorData::new(rows, [n, self.code_dim]), device),
            None => {
                let enc = self.encoder.as_ref().expect("on-the-fly codes need the encoder").valid();
                Tensor::from_inner(enc.tap_flat(b.images.clone().inner(), &self.tap, false)?)
            }
        };
        Ok(Batch { images: b.images, codes, records: b.indices })
    }
}

/// Load the encoder named by a spec and weights onto the autodiff backend, frozen.
fn load_encoder<B: AutodiffBackend>(arch: &str, source: &WeightSource, input: Input, device: &B::Device) -> Result<(ConvNet<B>, String)> {
    let loaded = encoder::load::<B>(arch, source, input, device)?;
    Ok((loaded.net.no_grad(), loaded.weights_sha256))
}

struct Setup<B: AutodiffBackend> {
    data: Data<B>,
    spec: EncoderSpec,
    weights_sha256: String,
    weights_path: Option<String>,
    code_shape: Vec<usize>,
    provenance: serde_json::Value,
}

fn setup<B: AutodiffBackend>(run: &DecoderRun, skips: &SkipLog, device: &B::Device) -> Result<Setup<B>> {
    let tap = run.layer.clone();
    match &run.source {
        CodeSource::File { codes, data, encoder: enc_source, arch, input } => {
            // Codes written elsewhere, weights given but no --encoder: the network the weights
            // hold (`--encoder auto`), as for images encoded on the fly.
            let mut auto = None;
            if arch.is_none() && matches!(enc_source, Some(WeightSource::File(_) | WeightSource::Run(_))) && CodeFile::read_provenance(codes)?.is_none() {
                auto = Some(encoder::load::<B>(encoder::AUTO, enc_source.as_ref().expect("matched"), *input, device)?);
            }
            let arch = &arch.clone().or_else(|| auto.as_ref().map(|l| l.net.spec.arch.clone()));
            // Codes written elsewhere may be named by the torchvision module of the tap.
            let module = match arch {
                Some(a) => encoder::default_spec(a, 1000, None)?.torch_modules().remove(&tap),
                None => None,
            };
            let (file, arr) = CodeFile::open_tap_as(codes, &tap, module.as_deref())?;
            let mut code_shape = arr.shape()[1..].to_vec();
            // Codes written elsewhere: what `extract` would have recorded, from the encoder named.
            let (pv, preloaded) = match (&file.provenance, arch) {
                (Some(pv), Some(arch)) if *arch != pv.encoder => bail!("{} holds {} codes, not {arch} codes", codes.display(), pv.encoder),
                (Some(pv), _) if !input.is_default() => bail!(
                    "{} records how its images were fed to the encoder (input {:?}, resize {}); --input-size and --resize are for codes written elsewhere and images encoded on the fly",
                    codes.display(),
                    pv.input_size,
                    pv.preprocessing.resize
                ),
                (Some(pv), _) => (pv.clone(), None),
                (None, None) => bail!(
                    "{} holds codes without preimage's metadata (it was not written by `preimage extract`): training from it needs \
                     the network its codes came from (--weights FILE or --run DIR; --encoder NAME for random weights) and its images \
                     (--data DIR, the folder its ids are paths below)",
                    codes.display()
                ),
                (None, Some(arch)) => {
                    let (source, dir) = match (enc_source, data) {
                        (Some(s), Some(d)) => (s, d),
                        _ => bail!("{} was written elsewhere: training from it needs the weights its codes came from (--weights FILE or --run DIR) and its images (--data DIR, the folder its ids are paths below)", codes.display()),
                    };
                    let loaded = match auto.take() {
                        Some(loaded) => loaded,
                        None => encoder::load::<B>(arch, source, *input, device)?,
                    };
                    let spec = loaded.net.spec.clone();
                    spec.check_tap(&tap)?;
                    let want = spec.tap_shapes()?.remove(&tap).expect("checked tap");
                    if !crate::data::codes::fits_shape(&tap, &code_shape, &want) {
                        bail!("{arch}'s {tap} codes at input {}×{} have shape {want:?}, but those in {} have shape {code_shape:?}", spec.input_size[0], spec.input_size[1], codes.display());
                    }
                    // Flattened codes decode as the maps they are.
                    code_shape = want;
                    let pv = Provenance {
                        encoder: arch.clone(),
                        weights_sha256: loaded.weights_sha256.clone(),
                        input_size: spec.input_size,
                        preprocessing: Preprocessing::of(&spec),
                        classes: spec.classes.clone(),
                        label_classes: None,
                        spec: serde_json::to_string(&spec)?,
                        data_root: Some(dir.display().to_string()),
                        weights_path: loaded.weights_path.as_deref().map(crate::extract::absolute),
                    };
                    (pv, Some(loaded.net.no_grad()))
                }
            };
            let spec: EncoderSpec = serde_json::from_str(&pv.spec).with_context(|| format!("{}: metadata 'spec' is not an encoder spec", codes.display()))?;
            let root = match (data, &pv.data_root) {
                (Some(d), _) => d.clone(),
                (None, Some(r)) => PathBuf::from(r),
                (None, None) => bail!("{} does not record its image folder; pass --data DIR (the folder the codes were extracted from)", codes.display()),
            };
            let mut folder = ImageFolder::open(&root, skips).with_context(|| format!("opening the images of {}", codes.display()))?;
            // Codes of files picked from a folder (`extract --data a.jpg sub/b.jpg`): the scan
            // of the folder may not list them (a flat file beside class folders); take them
            // by their paths.
            let listed: std::collections::HashSet<&str> = folder.records.iter().map(|r| r.rel_path.as_str()).collect();
            let unlisted = file.ids.iter().any(|id| !listed.contains(id.as_str()));
            if unlisted && file.ids.iter().all(|id| root.join(id).is_file()) {
                folder = ImageFolder::of_files(&root, file.ids.iter().cloned(), skips);
            }
            let by_path: HashMap<&str, usize> = folder.records.iter().enumerate().map(|(i, r)| (r.rel_path.as_str(), i)).collect();
            let mut records = Vec::with_capacity(file.len());
            for id in &file.ids {
                match by_path.get(id.as_str()) {
                    Some(&i) => records.push(i),
                    // A file written elsewhere without ids names its rows by their index.
                    None if file.provenance.is_none() && file.ids.first().is_some_and(|f| f == "000000") => bail!(
                        "{} does not name the image of each code (its rows are numbered 000000, …), which training needs: \
                         save the images' paths below --data with the codes, as `ids` (np.savez(F, {tap}=codes, ids=paths), \
                         safetensors metadata {{\"ids\": json.dumps(paths)}}, torch.save({{\"{tap}\": codes, \"ids\": paths}}, F), \
                         or python/preimage.py's save_codes(F, codes, ids=paths))",
                        codes.display()
                    ),
                    None => bail!("code id '{id}' of {} has no image in {}; pass --data with the folder the codes were extracted from", codes.display(), root.display()),
                }
            }
            // The encoder: explicit weights, else those the codes were extracted with.
            let source = match enc_source {
                Some(s) => Some(s.clone()),
                None => WeightSource::recorded(pv.weights_path.as_deref(), &pv.weights_sha256),
            };
            let weights_path = match &source {
                Some(WeightSource::File(p)) => Some(crate::extract::absolute(p)),
                Some(WeightSource::Run(d)) => Some(crate::extract::absolute(&d.join(encoder::weights::RUN_WEIGHTS))),
                _ => None,
            };
            let encoder = match source {
                _ if preloaded.is_some() => preloaded,
                Some(s) => {
                    let (net, sha) = load_encoder::<B>(&spec.arch, &s, Input { size: Some(spec.input_size), resize: Some(spec.resize) }, device)?;
                    if sha != pv.weights_sha256 {
                        bail!("the encoder weights ({sha}) are not those the codes in {} came from ({})", codes.display(), pv.weights_sha256);
                    }
                    Some(net)
                }
                None => None,
            };
            let item_of = records.iter().enumerate().map(|(i, &r)| (r, i)).collect();
            let provenance = serde_json::json!({
                "codes": std::fs::canonicalize(codes).unwrap_or(codes.clone()),
                "codes_sha256": crate::util::sha256_file(codes)?,
                "images": root,
                "tap": tap,
                "encoder": pv.encoder,
                "weights_sha256": pv.weights_sha256,
                "weights_path": pv.weights_path,
            });
            Ok(Setup {
                data: Data { pre: batch::preprocess_for(&spec), folder, records, item_of, code_dim: code_shape.iter().product(), codes: Some(arr), encoder, tap },
                weights_sha256: pv.weights_sha256.clone(),
                weights_path,
                spec,
                code_shape,
                provenance,
            })
        }
        CodeSource::Images { data, encoder: arch, weights, input } => {
            let loaded = encoder::load::<B>(arch, weights, *input, device)?;
            let spec = loaded.net.spec.clone();
            spec.check_tap(&tap)?;
            let code_shape = spec.tap_shapes()?[&tap].clone();
            let folder = ImageFolder::from_paths(data, skips)?;
            let records: Vec<usize> = (0..folder.len()).collect();
            let item_of = records.iter().map(|&r| (r, r)).collect();
            let provenance = serde_json::json!({
                "images": images_json(data, &folder),
                "tap": tap,
                "encoder": spec.arch,
                "weights_sha256": loaded.weights_sha256,
                "weights_path": loaded.weights_path.as_deref().map(crate::extract::absolute),
                "codes": "computed on the fly",
            });
            Ok(Setup {
                data: Data { pre: batch::preprocess_for(&spec), folder, records, item_of, code_dim: code_shape.iter().product(), codes: None, encoder: Some(loaded.net.no_grad()), tap },
                weights_sha256: loaded.weights_sha256,
                weights_path: loaded.weights_path.as_deref().map(crate::extract::absolute),
                spec,
                code_shape,
                provenance,
            })
        }
    }
}

/// The images of `paths` for provenance.json: one folder as its path, files and folders as
/// the set's root and ids.
fn images_json(paths: &[PathBuf], folder: &ImageFolder) -> serde_json::Value {
    match paths {
        [one] if one.is_dir() => serde_json::json!(std::fs::canonicalize(one).unwrap_or(one.clone())),
        _ => serde_json::json!({ "root": folder.root, "ids": folder.records.iter().map(|r| &r.rel_path).collect::<Vec<_>>() }),
    }
}

/// Validation over `items` without gradients: the weighted loss (selects the best epoch),
/// the pixel MSE and the reconstruction metrics (feature error, class and pose agreement
/// when the encoder is known). The loss weights and the seed of the metrics' image pairs come
/// from `cfg`; batches are at least 64 (no gradients to keep).
fn validate<B: AutodiffBackend>(
    dec: &Decoder<B::InnerBackend>,
    data: &Data<B>,
    comparator: Option<&Comparator<B::InnerBackend>>,
    cfg: &DecoderTrainConfig,
    items: &[usize],
    device: &B::Device,
) -> Result<(f64, f64, Metrics)> {
    let (loss, batch_size, seed) = (&cfg.loss, cfg.train.batch_size.max(64), cfg.train.seed);
    let encoder = data.encoder.as_ref().map(|e| e.valid());
    let mut eval = Evaluator::new(encoder.as_ref(), &data.tap);
    let (mut total, mut pix, mut n) = (0.0, 0.0, 0usize);
    let chunks: Vec<&[usize]> = items.chunks(batch_size).collect();
    batch::prefetched(chunks.len(), |k| data.decode(chunks[k], None), |decoded| -> Result<()> {
        for b in decoded {
            let Some(b) = b? else { continue };
            let b = data.with_codes(b, device)?;
            let (images, codes) = (b.images.inner(), b.codes.inner());
            let k = images.dims()[0];
            let recon = dec.forward(codes);
            let p = (recon.clone() - images.clone()).powf_scalar(2.0).mean().into_scalar().elem::<f64>();
            let mut t = loss.pixel * p;
            if let Some(c) = comparator {
                t += loss.feature * c.loss(recon.clone(), c.features(images.clone())).into_scalar().elem::<f64>();
            }
            let symmetry: Vec<u32> = b.records.iter().map(|&r| data.folder.symmetry_of(r)).collect();
            eval.add(recon, images, &symmetry)?;
            total += t * k as f64;
            pix += p * k as f64;
            n += k;
        }
        Ok(())
    })?;
    if n == 0 {
        bail!("no readable validation image");
    }
    Ok((total / n as f64, pix / n as f64, eval.finish(seed)?))
}

/// Originals above, reconstructions below, for a fixed set of validation items.
fn log_grid<B: AutodiffBackend>(tb: &mut TbWriter, dec: &Decoder<B::InnerBackend>, data: &Data<B>, items: &[usize], step: usize, device: &B::Device) -> Result<()> {
    let Some(b) = data.batch(items, None, device)? else { return Ok(()) };
    let images = b.images.inner();
    let [n, _, h, w] = images.dims();
    let recon = dec.forward(b.codes.inner()).clamp(0.0, 1.0);
    let both = Tensor::cat(vec![images, recon], 0).into_data().convert::<f32>().to_vec::<f32>().unwrap();
    let tiles: Vec<&[f32]> = both.chunks_exact(3 * h * w).collect();
    let (g, gh, gw) = crate::report::tensorboard::grid(&tiles, h, w, n, 1);
    tb.image("val/reconstructions", &g, gh, gw, step);
    Ok(())
}

/// Train a decoder; returns the per-epoch validation history. Writes into the run folder:
/// `config.toml`, `provenance.json`, `checkpoint/` (each epoch), `decoder.json` +
/// `decoder.safetensors` (best by validation loss), `metrics.json` and `tb/`.
pub fn train<B: AutodiffBackend>(run: &DecoderRun, device: &B::Device) -> Result<Vec<DecoderEpoch>> {
    train_on::<B>(run, std::slice::from_ref(device))
}

/// [`train`] data-parallel over `devices` (see [`parallel`]): each batch is
/// split over them, the model, optimizer, validation and files stay on the first.
pub fn train_on<B: AutodiffBackend>(run: &DecoderRun, devices: &[B::Device]) -> Result<Vec<DecoderEpoch>> {
    let Some(device) = devices.first() else { bail!("train-decoder needs at least one device") };
    let cfg = &run.config;
    let t = &cfg.train;
    if t.batch_size == 0 || t.epochs == 0 {
        bail!("train.batch_size and train.epochs must be positive");
    }
    super::check_adam("train", t.lr, t.betas, t.weight_decay)?;
    super::check_val_fraction(t.val_fraction)?;
    let dc = &cfg.discriminator;
    super::check_adam("discriminator", dc.lr, dc.betas, dc.weight_decay)?;
    let l = &cfg.loss;
    if l.pixel < 0.0 || l.feature < 0.0 || l.adversarial < 0.0 || l.pixel + l.feature + l.adversarial == 0.0 {
        bail!("loss weights must be non-negative and not all zero (pixel {}, feature {}, adversarial {})", l.pixel, l.feature, l.adversarial);
    }
    if t.augment && matches!(run.source, CodeSource::File { .. }) {
        bail!("train.augment needs codes computed on the fly: give --data and --encoder instead of --codes (a code file holds codes of the unaugmented images)");
    }
    let skips = SkipLog::new();
    let s = setup::<B>(run, &skips, device)?;
    let data = &s.data;
    let image_size = s.spec.input_size;
    let plan = Plan::new(&s.code_shape, image_size, &cfg.model)?;

    // Comparator (feature loss) and discriminator only when their losses are on.
    let comparator: Option<Comparator<B>> = if l.feature > 0.0 {
        let tap = l.feature_tap.clone().with_context(|| "loss.feature > 0 needs loss.feature_tap (a tap of the comparator, e.g. \"conv5\")")?;
        let net = match (&l.comparator, &data.encoder) {
            (None, Some(enc)) => enc.clone(),
            (None, None) => bail!("the feature loss compares at the encoder's tap '{tap}', but the encoder weights are unknown: pass --weights or --run"),
            (Some(arch), _) => {
                let source = l.comparator_weights.clone().map(WeightSource::File).unwrap_or(WeightSource::Random(t.seed));
                load_encoder::<B>(arch, &source, Input { size: Some(image_size), resize: None }, device)?.0
            }
        };
        Some(Comparator::new(net, &tap)?)
    } else {
        None
    };
    // The frozen comparator on every device, once.
    let comparators: Vec<Option<Comparator<B>>> = devices.iter().enumerate().map(|(i, d)| comparator.as_ref().map(|c| if i == 0 { c.clone() } else { c.fork(d) })).collect();
    let comparator_valid = comparator.as_ref().map(|c| Comparator::new(c_net(c), &c.tap)).transpose()?;

    let n_all = data.records.len();
    // Validation: images of its own, or a seeded share of the training data.
    let own_val = (!t.val_data.is_empty()).then(|| data.other_images(&t.val_data, &skips)).transpose()?;
    let (mut train_items, val_items) = match &own_val {
        Some(v) => ((0..n_all).collect(), (0..v.records.len()).collect()),
        None => split(n_all, t.val_fraction, t.seed),
    };
    if val_items.is_empty() {
        bail!("validation split is empty: {n_all} images with train.val_fraction = {}; hold some out (a positive val_fraction, 2 images or more) or give validation images with --val-data", t.val_fraction);
    }
    let val_data = own_val.as_ref().unwrap_or(data);
    if let Some(m) = t.max_images {
        train_items.truncate(m.max(1));
    }
    std::fs::create_dir_all(&run.out).with_context(|| format!("creating run folder {}", run.out.display()))?;
    let ckpt = Checkpoint::new(&run.out);
    let mut dec = Decoder::<B>::init(&plan, t.seed, device);
    let mut optim = Adam::new(t.betas).with_weight_decay(t.weight_decay).init::<B, Decoder<B>>();
    let adversarial = l.adversarial > 0.0;
    let dc = &cfg.discriminator;
    let mut disc = adversarial.then(|| Discriminator::<B>::init(dc, plan.code_dim(), t.seed ^ 0xd15c, device));
    let mut disc_optim = Adam::new(dc.betas).with_weight_decay(dc.weight_decay).init::<B, Discriminator<B>>();
    let mut state = RunState::default();
    let config_path = run.out.join("config.toml");
    if run.resume && ckpt.exists() {
        if let Ok(old) = crate::config::load::<DecoderTrainConfig>(&config_path) {
            if old.model != cfg.model || old.loss != cfg.loss {
                bail!("cannot resume {}: its [model] or [loss] differs from this config (delete the folder or drop --resume)", run.out.display());
            }
        }
        dec = ckpt.load_module("model", dec, device)?;
        optim = ckpt.load_optim::<B, _, _>("optim", optim, device)?;
        if let Some(d) = disc.take() {
            disc = Some(ckpt.load_module("disc", d, device)?);
            disc_optim = ckpt.load_optim::<B, _, _>("disc_optim", disc_optim, device)?;
        }
        state = ckpt.state()?;
        let within = if state.epoch_batches > 0 { format!(" and {} batches of epoch {}", state.epoch_batches, state.epoch + 1) } else { String::new() };
        println!("resuming {} after epoch {}{within} (step {})", run.out.display(), state.epoch, state.step);
    } else if ckpt.exists() {
        bail!("{} already holds a training run; pass --resume to continue it or choose another --out", run.out.display());
    }
    crate::util::write_atomic(&config_path, crate::config::to_toml(cfg)?.as_bytes())?;
    let mut provenance = s.provenance.clone();
    if let Some(v) = &own_val {
        provenance["val_images"] = images_json(&t.val_data, &v.folder);
    }
    crate::util::write_atomic(&run.out.join("provenance.json"), serde_json::to_string_pretty(&provenance)?.as_bytes())?;
    let mut tb = TbWriter::new(&run.out.join("tb"))?;
    if state.step == 0 {
        tb.text("config", &format!("```toml\n{}\n```", crate::config::to_toml(cfg)?), 0);
    }
    println!(
        "train-decoder: {} {} codes {:?} → {}×{} images; {} train / {} val; {} epochs of batch {}; losses pixel {} feature {} adversarial {}",
        s.spec.arch,
        run.layer,
        s.code_shape,
        image_size[0],
        image_size[1],
        train_items.len(),
        val_items.len(),
        t.epochs,
        t.batch_size,
        l.pixel,
        l.feature,
        l.adversarial
    );
    println!("{}", dec.summary());

    let preview: Vec<usize> = val_items.iter().copied().take(8).collect();
    let steps_per_epoch = train_items.len().div_ceil(t.batch_size);
    let total_steps = steps_per_epoch * t.epochs;
    let mut history: Vec<DecoderEpoch> = state.history.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
    for epoch in state.epoch..t.epochs {
        let start = Instant::now();
        let order = epoch_order(&train_items, t.seed, epoch);
        let bar = crate::util::progress(steps_per_epoch as u64, &format!("epoch {}/{}", epoch + 1, t.epochs));
        // Resumed within this epoch: skip the batches done (the order is the seeded one).
        let done = std::mem::take(&mut state.epoch_batches);
        let (mut run_loss, mut run_n) = (std::mem::take(&mut state.epoch_loss), std::mem::take(&mut state.epoch_steps));
        bar.inc(done as u64);
        let chunks: Vec<&[usize]> = order.chunks(t.batch_size).collect();
        let decode = |j: usize| {
            let k = done + j;
            let augment = t.augment.then(|| crate::rng::Rng::derive(t.seed, 0xa06 + (epoch * steps_per_epoch + k) as u64).next_u64());
            (k, data.decode(chunks[k], augment))
        };
        // The decoder moves through each optimizer step, so the loop takes it and gives it back.
        dec = batch::prefetched(chunks.len().saturating_sub(done), decode, |decoded| -> Result<Decoder<B>> {
            let mut dec = dec;
            for (k, b) in decoded {
                let Some(b) = b? else { continue };
                let b = data.with_codes(b, device)?;
                let n = b.records.len();
                let replicas: Vec<Replica<B>> = parallel::shards(n, devices.len())
                    .into_iter()
                    .map(|shard| {
                        let dev = &devices[shard.device];
                        Replica {
                            dec: shard.replica(&dec, dev),
                            disc: disc.as_ref().map(|d| shard.replica(d, dev)),
                            comparator: comparators[shard.device].clone(),
                            images: shard.rows(b.images.clone(), dev),
                            codes: shard.rows(b.codes.clone(), dev),
                            shard,
                        }
                    })
                    .collect();
                let outs = parallel::each(replicas, |r| shard_step(r, l, device))?;
                let loss_value: f64 = outs.iter().map(|o| o.loss).sum();
                check_finite(loss_value, epoch, state.step)?;
                let lr = lr_at(t.schedule, t.lr, state.step, total_steps);
                let mut grads = Vec::with_capacity(outs.len());
                let mut terms: Vec<(&str, f64, Tensor<B, 1>)> = Vec::new();
                let mut disc_parts = Vec::new();
                let (mut dv, mut gv) = (0.0, 0.0);
                for o in outs {
                    grads.push(o.dec_grads);
                    terms.extend(o.terms);
                    if let Some(d) = o.disc {
                        dv += d.dv;
                        gv += d.gv;
                        disc_parts.push(d);
                    }
                }
                let g = parallel::sum_grads(&dec, grads);
                dec = optim.step(lr, dec, g);
                let mut paused = false;
                if let Some(d) = disc.take() {
                    paused = deepsim::discriminator_paused(dv, gv, dc.pause_ratio);
                    disc = Some(if paused {
                        d
                    } else {
                        let parts = disc_parts.into_iter().map(|p| parallel::shard_grads(p.loss, &p.shard, &p.model, device)).collect();
                        let g = parallel::sum_grads(&d, parts);
                        disc_optim.step(lr_at(t.schedule, dc.lr, state.step, total_steps), d, g)
                    });
                    if state.step % t.log_every.max(1) == 0 {
                        tb.scalar("train/discriminator", dv as f32, state.step + 1);
                    }
                }
                state.step += 1;
                run_loss += loss_value;
                run_n += 1;
                if state.step % t.log_every.max(1) == 0 {
                    tb.scalar("train/loss", loss_value as f32, state.step);
                    let mut by_name: Vec<(&str, f64)> = Vec::new();
                    for (name, w, v) in terms {
                        let v = w * v.into_scalar().elem::<f64>();
                        match by_name.iter_mut().find(|(k, _)| *k == name) {
                            Some((_, sum)) => *sum += v,
                            None => by_name.push((name, v)),
                        }
                    }
                    for (name, v) in by_name {
                        tb.scalar(&format!("train/{name}"), v as f32, state.step);
                    }
                    tb.scalar("train/lr", lr as f32, state.step);
                    if adversarial {
                        tb.scalar("train/discriminator_paused", paused as u8 as f32, state.step);
                    }
                }
                if state.step % t.image_every.max(1) == 0 {
                    log_grid(&mut tb, &dec.valid(), val_data, &preview, state.step, device)?;
                }
                bar.inc(1);
                if t.checkpoint_every > 0 && state.step % t.checkpoint_every == 0 && k + 1 < steps_per_epoch {
                    let within = RunState { epoch_batches: k + 1, epoch_loss: run_loss, epoch_steps: run_n, ..state.clone() };
                    save_checkpoint(&ckpt, &dec, &optim, disc.as_ref().map(|d| (d, &disc_optim)), &within)?;
                    tb.flush();
                }
            }
            Ok(dec)
        })?;
        bar.finish_and_clear();
        let valid = dec.valid();
        let (val_loss, val_pix, metrics) = validate(&valid, val_data, comparator_valid.as_ref(), cfg, &val_items, device)?;
        log_grid(&mut tb, &valid, val_data, &preview, state.step, device)?;
        let m = DecoderEpoch { epoch: epoch + 1, step: state.step, train_loss: run_loss / run_n.max(1) as f64, val_loss, val_pixel_mse: val_pix, val: metrics, seconds: start.elapsed().as_secs_f64() };
        tb.scalar("val/loss", val_loss as f32, state.step);
        tb.scalar("val/pixel_mse", val_pix as f32, state.step);
        for (name, v) in metric_values(&m.val) {
            tb.scalar(&format!("val/{name}"), v as f32, state.step);
        }
        tb.flush();
        let shown: Vec<String> = metric_values(&m.val).iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
        println!("epoch {:>3}/{}: train loss {:.5}  val loss {:.5}  {}  ({:.0}s)", epoch + 1, t.epochs, m.train_loss, val_loss, shown.join("  "), m.seconds);
        history.push(m.clone());
        state.history.push(serde_json::to_value(&m)?);
        if state.record_epoch(epoch + 1, val_loss) {
            let info = DecoderInfo {
                encoder: s.spec.arch.clone(),
                tap: run.layer.clone(),
                weights_sha256: s.weights_sha256.clone(),
                weights_path: s.weights_path.clone(),
                code_shape: s.code_shape.clone(),
                image_size,
                preprocessing: Preprocessing::of(&s.spec),
                classes: s.spec.classes.clone(),
                encoder_spec: s.spec.clone(),
                plan: plan.clone(),
                epoch: epoch + 1,
                val_loss,
            };
            decoder::save_run(&run.out, &valid, &info)?;
        }
        save_checkpoint(&ckpt, &dec, &optim, disc.as_ref().map(|d| (d, &disc_optim)), &state)?;
        crate::util::write_atomic(&run.out.join("metrics.json"), serde_json::to_string_pretty(&history)?.as_bytes())?;
        if state.early_stop(t.early_stop_patience) {
            break;
        }
    }
    skips.report();
    if let Some((_, e)) = state.best {
        println!("best epoch {e}; decoder in {}", run.out.display());
    }
    Ok(history)
}

/// Write the checkpoint (models, optimizer states, progress) beside the old one and swap it in.
fn save_checkpoint<B: AutodiffBackend, O: Optimizer<Decoder<B>, B>, P: Optimizer<Discriminator<B>, B>>(
    ckpt: &Checkpoint,
    dec: &Decoder<B>,
    optim: &O,
    disc: Option<(&Discriminator<B>, &P)>,
    state: &RunState,
) -> Result<()> {
    let mut w = ckpt.writer()?;
    w.module("model", dec)?;
    w.optim::<B, _, _>("optim", optim)?;
    if let Some((d, o)) = disc {
        w.module("disc", d)?;
        w.optim::<B, _, _>("disc_optim", o)?;
    }
    w.commit(state)
}

/// One device's share of a training step: forks of the models, its rows of the batch.
struct Replica<B: AutodiffBackend> {
    shard: Shard,
    dec: Decoder<B>,
    disc: Option<Discriminator<B>>,
    comparator: Option<Comparator<B>>,
    images: Tensor<B, 4>,
    codes: Tensor<B, 2>,
}

/// What a device hands back: its weighted loss, loss terms (weight, value), decoder
/// gradients on the main device, and the discriminator's loss for its own step, which
/// waits for the pause decision over the whole batch.
struct ShardOut<B: AutodiffBackend> {
    loss: f64,
    terms: Vec<(&'static str, f64, Tensor<B, 1>)>,
    dec_grads: GradientsParams,
    disc: Option<DiscPart<B>>,
}

struct DiscPart<B: AutodiffBackend> {
    loss: Tensor<B, 1>,
    model: Discriminator<B>,
    shard: Shard,
    /// Weighted discriminator and generator adversarial losses.
    dv: f64,
    gv: f64,
}

/// Forward and backward of one device's rows: pixel, feature and adversarial losses.
fn shard_step<B: AutodiffBackend>(r: Replica<B>, l: &LossConfig, main: &B::Device) -> Result<ShardOut<B>> {
    let w = r.shard.weight;
    let recon = r.dec.forward(r.codes.clone());
    let pixel = (recon.clone() - r.images.clone()).powf_scalar(2.0).mean();
    let mut total = pixel.clone() * l.pixel;
    let mut terms = vec![("pixel", w, pixel)];
    if let Some(c) = &r.comparator {
        let f = c.loss(recon.clone(), c.features(r.images.clone()).detach());
        total = total + f.clone() * l.feature;
        terms.push(("feature", w, f));
    }
    let mut disc = None;
    if let Some(d) = r.disc {
        let g_adv = deepsim::generator_loss(d.forward(recon.clone(), r.codes.clone()));
        total = total + g_adv.clone() * l.adversarial;
        let d_loss = deepsim::discriminator_loss(d.forward(r.images.clone(), r.codes.clone()), d.forward(recon.clone().detach(), r.codes.clone()));
        let (dv, gv) = (d_loss.clone().into_scalar().elem::<f64>(), g_adv.clone().into_scalar().elem::<f64>());
        terms.push(("adversarial", w, g_adv));
        disc = Some(DiscPart { loss: d_loss, model: d, shard: r.shard.clone(), dv: w * dv, gv: w * gv });
    }
    let loss = w * total.clone().into_scalar().elem::<f64>();
    let dec_grads = parallel::shard_grads(total, &r.shard, &r.dec, main);
    Ok(ShardOut { loss, terms, dec_grads, disc })
}

fn c_net<B: AutodiffBackend>(c: &Comparator<B>) -> ConvNet<B::InnerBackend> {
    c.net().valid()
}

/// The measured metrics as (name, value) pairs, for logs and TensorBoard.
pub fn metric_values(m: &Metrics) -> Vec<(&'static str, f64)> {
    let all = [
        ("image_error", m.image_error),
        ("psnr_db", m.psnr_db),
        ("ssim", m.ssim),
        ("feature_error", m.feature_error),
        ("top1_agreement", m.top1_agreement),
        ("pose_error_deg", m.pose_error_deg),
    ];
    all.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).collect()
}

/// Load a decoder config file, or fail naming it.
pub fn load_config(path: &Path) -> Result<DecoderTrainConfig> {
    crate::config::load(path)
}
