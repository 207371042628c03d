//! Training posenet: class cross-entropy + pose regression, Adam, per-epoch validation
//! (accuracy, median azimuth error), atomic checkpoints, resume, TensorBoard scalars.
//!
//! Pose targets are (sin k·az, cos k·az, sin el, cos el) where k is the class's rotational
//! symmetry order about the vertical axis (1 for most classes): a 4-fold pyramid's azimuth
//! is only defined modulo 90°, so we regress 4·az. Classes with continuous symmetry (k = 0,
//! a cone) get no azimuth loss and are left out of the azimuth error.
use super::{check_finite, epoch_order, lr_at, split, Checkpoint, RunState, Schedule};
use crate::data::batch;
use crate::data::folder::{ImageFolder, SkipLog};
use crate::encoder::posenet::{self, PoseNetConfig};
use crate::encoder::{weights, ConvNet};
use crate::report::tensorboard::TbWriter;
use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use super::adam::Adam;
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `configs/posenet.toml`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EncoderTrainConfig {
    #[serde(default)]
    pub model: PoseNetConfig,
    pub train: TrainSection,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrainSection {
    /// Image folder with class subfolders (and optionally manifest.csv with pose).
    pub data: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    #[serde(default = "super::default_betas")]
    pub betas: [f64; 2],
    /// L2 penalty on the weights, added to their gradients (`torch.optim.Adam`'s `weight_decay`).
    #[serde(default, skip_serializing_if = "super::is_zero")]
    pub weight_decay: f64,
    #[serde(default)]
    pub schedule: Schedule,
    /// Weight of the pose loss relative to cross-entropy.
    #[serde(default = "one")]
    pub pose_weight: f64,
    #[serde(default = "super::default_val")]
    pub val_fraction: f64,
    /// A validation folder with the same class folders (ImageNet's `val/` beside `train/`):
    /// every training image then trains, and `val_fraction` is not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_data: Option<PathBuf>,
    #[serde(default)]
    pub seed: u64,
    /// Log training scalars every this many steps.
    #[serde(default = "super::default_log_every")]
    pub log_every: usize,
    /// Stop when validation loss has not improved for this many epochs (0 = never).
    #[serde(default)]
    pub early_stop_patience: usize,
}

fn one() -> f64 {
    1.0
}

/// Validation metrics of one epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EncoderMetrics {
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    /// Median azimuth error in degrees over images whose class shows its pose (None if no pose).
    pub azimuth_error_deg: Option<f64>,
    pub seconds: f64,
}

/// Per-image pose targets and masks for a batch.
struct PoseTargets {
    target: Vec<f32>,
    mask: Vec<f32>,
}

fn pose_targets(folder: &ImageFolder, idx: &[usize]) -> PoseTargets {
    let mut target = Vec::with_capacity(idx.len() * 4);
    let mut mask = Vec::with_capacity(idx.len() * 4);
    for &i in idx {
        let k = folder.symmetry_of(i) as f32;
        match folder.records[i].pose {
            Some([az, el]) => {
                let (a, e) = ((az * k).to_radians(), el.to_radians());
                target.extend([a.sin(), a.cos(), e.sin(), e.cos()]);
                let m = if k == 0.0 { 0.0 } else { 1.0 };
                mask.extend([m, m, 1.0, 1.0]);
            }
            None => {
                target.extend([0.0; 4]);
                mask.extend([0.0; 4]);
            }
        }
    }
    PoseTargets { target, mask }
}

/// Azimuth (degrees) predicted from a pose output row, undoing the symmetry fold.
pub fn predicted_azimuth(row: &[f32], symmetry: u32) -> f32 {
    let k = symmetry.max(1) as f32;
    (row[0].atan2(row[1]).to_degrees() / k).rem_euclid(360.0 / k)
}

/// Angular distance between azimuths modulo the symmetry period.
pub fn azimuth_error(pred: f32, truth: f32, symmetry: u32) -> f32 {
    let period = 360.0 / symmetry.max(1) as f32;
    let d = (pred - truth).rem_euclid(period);
    d.min(period - d)
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) })
}

/// Loss terms of a batch and the outputs they came from.
struct Losses<B: Backend> {
    total: Tensor<B, 1>,
    ce: Tensor<B, 1>,
    pose: Tensor<B, 1>,
    logits: Tensor<B, 2>,
    pose_out: Tensor<B, 2>,
}

fn losses<B: Backend>(net: &ConvNet<B>, images: Tensor<B, 4>, labels: &[i64], pose: &PoseTargets, pose_weight: f64, train: bool) -> Result<Losses<B>> {
    let device = images.device();
    let n = labels.len();
    let mut acts = net.encode(images, &["fc8", "pose"], train)?;
    let logits = acts.remove("fc8").unwrap().flat();
    let pose_out = acts.remove("pose").unwrap().flat();
    let y = Tensor::<B, 1, Int>::from_data(TensorData::new(labels.to_vec(), [n]), &device).reshape([n, 1]);
    let ce = log_softmax(logits.clone(), 1).gather(1, y).mean().neg();
    let target = Tensor::<B, 2>::from_data(TensorData::new(pose.target.clone(), [n, 4]), &device);
    let mask = Tensor::<B, 2>::from_data(TensorData::new(pose.mask.clone(), [n, 4]), &device);
    let count = pose.mask.iter().sum::<f32>().max(1.0);
    let pl = ((pose_out.clone() - target).powf_scalar(2.0) * mask).sum() / count;
    let total = ce.clone() + pl.clone() * pose_weight;
    Ok(Losses { total, ce, pose: pl, logits, pose_out })
}

fn labels_of(folder: &ImageFolder, idx: &[usize]) -> Vec<i64> {
    idx.iter().map(|&i| folder.records[i].label.map(|l| l as i64).unwrap_or(0)).collect()
}

/// Evaluate on `val` with running BatchNorm statistics.
pub fn evaluate<B: Backend>(net: &ConvNet<B>, folder: &ImageFolder, val: &[usize], batch_size: usize, pose_weight: f64, device: &B::Device) -> Result<(f64, f64, Option<f64>)> {
    let pre = batch::preprocess_for(&net.spec);
    let (mut loss_sum, mut correct, mut count) = (0.0, 0usize, 0usize);
    let mut az_errors = Vec::new();
    let chunks: Vec<&[usize]> = val.chunks(batch_size).collect();
    batch::prefetched(chunks.len(), |k| batch::decode(folder, chunks[k], &pre, None), |decoded| -> Result<()> {
        for b in decoded {
            let Some(b) = b else { continue };
            let b = b.to_device::<B>(device);
            let labels = labels_of(folder, &b.indices);
            let pose = pose_targets(folder, &b.indices);
            let Losses { total, logits, pose_out, .. } = losses(net, b.images, &labels, &pose, pose_weight, false)?;
            let n = labels.len();
            loss_sum += total.into_scalar().elem::<f64>() * n as f64;
            let pred: Vec<i64> = logits.argmax(1).into_data().convert::<i64>().to_vec::<i64>().unwrap();
            correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
            count += n;
            let rows = pose_out.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            for (j, &i) in b.indices.iter().enumerate() {
                let sym = folder.symmetry_of(i);
                if let (Some([az, _]), true) = (folder.records[i].pose, sym != 0) {
                    let pred = predicted_azimuth(&rows[j * 4..j * 4 + 4], sym);
                    az_errors.push(azimuth_error(pred, az, sym) as f64);
                }
            }
        }
        Ok(())
    })?;
    if count == 0 {
        bail!("no readable validation images");
    }
    Ok((loss_sum / count as f64, correct as f64 / count as f64, median(az_errors)))
}

use burn::tensor::ElementConversion;

/// Options of one `train-encoder` invocation (config plus command-line overrides).
pub struct EncoderRun {
    pub config: EncoderTrainConfig,
    pub data: PathBuf,
    pub out: PathBuf,
    pub resume: bool,
}

/// Train posenet; returns the final validation metrics. Writes `RUN/encoder.safetensors`
/// (best by validation loss), `RUN/checkpoint/`, `RUN/config.toml`, `RUN/metrics.json`, `RUN/tb/`.
pub fn train<B: AutodiffBackend>(run: &EncoderRun, device: &B::Device) -> Result<Vec<EncoderMetrics>> {
    let cfg = &run.config;
    let t = &cfg.train;
    if t.batch_size == 0 || t.epochs == 0 {
        bail!("train.batch_size and train.epochs must be positive");
    }
    super::check_adam("train", t.lr, t.betas, t.weight_decay)?;
    super::check_val_fraction(t.val_fraction)?;
    let skips = SkipLog::new();
    let folder = ImageFolder::open(&run.data, &skips)?;
    if folder.classes.is_empty() {
        bail!("{} has no class subfolders: posenet needs labelled images (DIR/<class>/<image>)", run.data.display());
    }
    let spec = posenet::spec(&cfg.model, folder.classes.clone());
    // Validation: a folder of its own, or a seeded share of the training folder.
    let own_val = match &t.val_data {
        Some(dir) => {
            let mut val = ImageFolder::open(dir, &skips)?;
            val.relabel_to(&folder.classes, &folder.symmetry)?;
            Some(val)
        }
        None => None,
    };
    let (train_idx, val_idx) = match &own_val {
        Some(val) => ((0..folder.len()).collect(), (0..val.len()).collect()),
        None => split(folder.len(), t.val_fraction, t.seed),
    };
    if val_idx.is_empty() {
        bail!("validation split is empty: {} images with train.val_fraction = {}; hold some out (a positive val_fraction, 2 images or more) or give a validation folder with --val-data", folder.len(), t.val_fraction);
    }
    let val_folder = own_val.as_ref().unwrap_or(&folder);
    std::fs::create_dir_all(&run.out).with_context(|| format!("creating run folder {}", run.out.display()))?;
    let ckpt = Checkpoint::new(&run.out);
    let mut net = ConvNet::<B>::init(&spec, t.seed, device)?;
    let mut optim = Adam::new(t.betas).with_epsilon(1e-8).with_weight_decay(t.weight_decay).init::<B, ConvNet<B>>();
    let mut state = RunState::default();
    if run.resume && ckpt.exists() {
        let (n, o, s) = ckpt.load(net, optim, device)?;
        (net, optim, state) = (n, o, s);
        if net.spec != spec {
            bail!("cannot resume {}: its model differs from the config (delete the folder or drop --resume)", run.out.display());
        }
        println!("resuming {} after epoch {} (step {})", run.out.display(), state.epoch, state.step);
    } else if ckpt.exists() {
        bail!("{} already holds a training run; pass --resume to continue it or choose another --out", run.out.display());
    }
    crate::util::write_atomic(&run.out.join("config.toml"), crate::config::to_toml(cfg)?.as_bytes())?;
    let mut tb = TbWriter::new(&run.out.join("tb"))?;
    if state.step == 0 {
        tb.text("config", &format!("```toml\n{}\n```", crate::config::to_toml(cfg)?), 0);
    }
    println!(
        "posenet: {} classes, {} train / {} val images from {}{}, {} epochs of batch {}",
        spec.classes.len(),
        train_idx.len(),
        val_idx.len(),
        run.data.display(),
        t.val_data.as_ref().map(|d| format!(" / {}", d.display())).unwrap_or_default(),
        t.epochs,
        t.batch_size
    );
    let pre = batch::preprocess_for(&spec);
    let steps_per_epoch = train_idx.len().div_ceil(t.batch_size);
    let total_steps = steps_per_epoch * t.epochs;
    let mut history: Vec<EncoderMetrics> = state.history.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect();
    for epoch in state.epoch..t.epochs {
        let start = Instant::now();
        let order = epoch_order(&train_idx, t.seed, epoch);
        let bar = crate::util::progress(steps_per_epoch as u64, &format!("epoch {}/{}", epoch + 1, t.epochs));
        let (mut run_loss, mut run_n) = (0.0, 0usize);
        let chunks: Vec<&[usize]> = order.chunks(t.batch_size).collect();
        let decode = |k: usize| batch::decode(&folder, chunks[k], &pre, None);
        // The network moves through each optimizer step, so the loop takes it and gives it back.
        net = batch::prefetched(chunks.len(), decode, |decoded| -> Result<ConvNet<B>> {
            let mut net = net;
            for b in decoded {
                let Some(b) = b else { continue };
                let b = b.to_device::<B>(device);
                let labels = labels_of(&folder, &b.indices);
                let pose = pose_targets(&folder, &b.indices);
                let Losses { total, ce, pose: pl, .. } = losses(&net, b.images, &labels, &pose, t.pose_weight, true)?;
                let loss_value = total.clone().into_scalar().elem::<f64>();
                check_finite(loss_value, epoch, state.step)?;
                let lr = lr_at(t.schedule, t.lr, state.step, total_steps);
                let grads = GradientsParams::from_grads(total.backward(), &net);
                net = optim.step(lr, net, grads);
                state.step += 1;
                run_loss += loss_value;
                run_n += 1;
                if state.step % t.log_every.max(1) == 0 {
                    tb.scalar("train/loss", loss_value as f32, state.step);
                    tb.scalar("train/cross_entropy", ce.into_scalar().elem::<f32>(), state.step);
                    tb.scalar("train/pose_loss", pl.into_scalar().elem::<f32>(), state.step);
                    tb.scalar("train/lr", lr as f32, state.step);
                }
                bar.inc(1);
            }
            Ok(net)
        })?;
        bar.finish_and_clear();
        let valid = net.valid();
        let (val_loss, acc, az) = evaluate(&valid, val_folder, &val_idx, t.batch_size.max(64), t.pose_weight, device)?;
        let m = EncoderMetrics { epoch: epoch + 1, loss: val_loss, accuracy: acc, azimuth_error_deg: az, seconds: start.elapsed().as_secs_f64() };
        tb.scalar("val/loss", val_loss as f32, state.step);
        tb.scalar("val/accuracy", acc as f32, state.step);
        if let Some(a) = az {
            tb.scalar("val/azimuth_error_deg", a as f32, state.step);
        }
        tb.flush();
        println!(
            "epoch {:>3}/{}: train loss {:.4}  val loss {:.4}  val accuracy {:.2}%  median azimuth error {}  ({:.0}s)",
            epoch + 1,
            t.epochs,
            run_loss / run_n.max(1) as f64,
            val_loss,
            100.0 * acc,
            az.map(|a| format!("{a:.1}°")).unwrap_or_else(|| "n/a".into()),
            m.seconds
        );
        history.push(m.clone());
        state.history.push(serde_json::to_value(&m)?);
        if state.record_epoch(epoch + 1, val_loss) {
            weights::save(&valid, &run.out.join(weights::RUN_WEIGHTS))?;
        }
        ckpt.save(&net, &optim, &state)?;
        crate::util::write_atomic(&run.out.join("metrics.json"), serde_json::to_string_pretty(&history)?.as_bytes())?;
        if state.early_stop(t.early_stop_patience) {
            break;
        }
    }
    skips.report();
    if let Some((_, e)) = state.best {
        println!("best epoch {e}; weights in {}", run.out.join(weights::RUN_WEIGHTS).display());
    }
    Ok(history)
}

/// Load a config file, or fail naming it.
pub fn load_config(path: &Path) -> Result<EncoderTrainConfig> {
    crate::config::load(path)
}
