//! Training loops (encoder here; decoders build on the same pieces).
//!
//! We run our own epoch loop over Burn's autodiff and optimizers rather than burn-train's
//! `SupervisedTraining`: the runs here must write checkpoints atomically, resume a killed run
//! with the same data order, stop on a NaN loss keeping the last good checkpoint and log to
//! TensorBoard, none of which burn-train 0.21's learner does.
pub mod adam;
pub mod decoder;
pub mod encoder;
pub mod parallel;

use anyhow::{bail, Context, Result};
use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// Progress of a run, saved after each epoch beside the checkpoint (and, for decoders with
/// `checkpoint_every`, within an epoch).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    /// Within the epoch after `epoch`: batches done and their summed loss, so that a run
    /// resumed there takes the same remaining steps and reports the same epoch loss.
    #[serde(default)]
    pub epoch_batches: usize,
    #[serde(default)]
    pub epoch_loss: f64,
    #[serde(default)]
    pub epoch_steps: usize,
    /// Epochs completed.
    pub epoch: usize,
    /// Optimizer steps taken.
    pub step: usize,
    /// Best validation score so far (lower is better) and its epoch.
    pub best: Option<(f64, usize)>,
    /// Per-epoch validation metrics, for reports.
    pub history: Vec<serde_json::Value>,
    /// Epochs since the best one (early stopping).
    pub stale_epochs: usize,
}

impl RunState {
    /// Record epoch `epoch`'s validation loss; true when it is the best so far (save it).
    pub fn record_epoch(&mut self, epoch: usize, val_loss: f64) -> bool {
        self.epoch = epoch;
        if self.best.is_none_or(|(b, _)| val_loss < b) {
            self.best = Some((val_loss, epoch));
            self.stale_epochs = 0;
            true
        } else {
            self.stale_epochs += 1;
            false
        }
    }

    /// Whether early stopping ends the run now (`patience` 0: never); says why.
    pub fn early_stop(&self, patience: usize) -> bool {
        let stop = patience > 0 && self.stale_epochs >= patience;
        if stop {
            println!("early stop: validation loss has not improved for {} epochs", self.stale_epochs);
        }
        stop
    }
}

/// Serde defaults shared by the `[train]` sections of encoder and decoder configs.
pub(crate) fn default_betas() -> [f64; 2] {
    [0.9, 0.999]
}
pub(crate) fn default_val() -> f64 {
    0.1
}
pub(crate) fn default_log_every() -> usize {
    20
}

/// Deterministic train/validation split: a seeded shuffle, the first `fraction` held out (at
/// least one image when `fraction` is positive, so that a fraction sized for a large set still
/// validates on a small one; never all of them).
pub fn split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::derive(seed, 0x5317).shuffle(&mut idx);
    let at_least = usize::from(fraction > 0.0);
    let n_val = ((n as f64 * fraction).round() as usize).max(at_least).min(n.saturating_sub(1));
    let mut val = idx[..n_val].to_vec();
    let mut train = idx[n_val..].to_vec();
    val.sort_unstable();
    train.sort_unstable();
    (train, val)
}

/// The training order of `epoch`: depends only on the seed and the epoch, so a resumed run
/// sees exactly the batches the killed one would have.
pub fn epoch_order(train: &[usize], seed: u64, epoch: usize) -> Vec<usize> {
    let mut order = train.to_vec();
    Rng::derive(seed, 1000 + epoch as u64).shuffle(&mut order);
    order
}

/// Learning-rate schedule over the whole run.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Cosine decay to 1 % of the base rate.
    Cosine,
    /// ×0.1 at 50 % and 75 % of the steps.
    Step,
}

/// Adam's settings under config section `section`, checked as `torch.optim.Adam` checks them:
/// a rate and a weight decay of at least 0, betas in [0, 1).
pub(crate) fn check_adam(section: &str, lr: f64, betas: [f64; 2], weight_decay: f64) -> anyhow::Result<()> {
    if !(lr >= 0.0 && lr.is_finite()) {
        anyhow::bail!("{section}.lr must be a number of at least 0, got {lr}");
    }
    if let Some(b) = betas.iter().find(|b| !(0.0..1.0).contains(*b)) {
        anyhow::bail!("{section}.betas must lie in [0, 1), got {b} in {betas:?}");
    }
    if !(weight_decay >= 0.0 && weight_decay.is_finite()) {
        anyhow::bail!("{section}.weight_decay must be a number of at least 0, got {weight_decay}");
    }
    Ok(())
}

/// `train.val_fraction`: the share of images held out, below 1 (at 1.5 every image but one
/// was held out, silently).
pub(crate) fn check_val_fraction(fraction: f64) -> anyhow::Result<()> {
    if !(0.0..1.0).contains(&fraction) {
        anyhow::bail!("train.val_fraction must be in [0, 1) (the share of images held out for validation), got {fraction}");
    }
    Ok(())
}

/// For `skip_serializing_if`: a setting left at zero is not written into a run's config.
pub(crate) fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

pub fn lr_at(schedule: Schedule, base: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())),
        Schedule::Step => base * if t < 0.5 { 1.0 } else if t < 0.75 { 0.1 } else { 0.01 },
    }
}

/// The checkpoint of a run folder: `checkpoint/` holds one Burn record per part (`model.mpk`,
/// `optim.mpk`, and for adversarial decoder training `disc.mpk`, `disc_optim.mpk`; Burn
/// records keep parameter ids so the optimizer state matches on resume) and `state.json`.
///
/// A checkpoint is written whole into `checkpoint.tmp/` and swapped in by renaming folders,
/// so a run killed at any moment leaves either the previous checkpoint or the new one,
/// never a mix of parts from two epochs.
pub struct Checkpoint {
    dir: PathBuf,
}

type Rec = NamedMpkBytesRecorder<FullPrecisionSettings>;

impl Checkpoint {
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("checkpoint") }
    }

    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.dir.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.dir.with_file_name(name)
    }

    /// The folder holding the last complete checkpoint: `checkpoint/`, or `checkpoint.old/`
    /// when a run was killed between the two renames of a swap.
    fn live(&self) -> Option<PathBuf> {
        [self.dir.clone(), self.sibling(".old")].into_iter().find(|d| d.join("state.json").exists())
    }

    pub fn exists(&self) -> bool {
        self.live().is_some()
    }

    /// Start writing a new checkpoint; nothing replaces the current one until `commit`.
    pub fn writer(&self) -> Result<CheckpointWriter> {
        let tmp = self.sibling(".tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("removing stale {}", tmp.display()))?;
        }
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(CheckpointWriter { tmp, dir: self.dir.clone(), old: self.sibling(".old") })
    }

    /// Save one model and its optimizer as parts `model` and `optim`.
    pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&self, model: &M, optim: &O, state: &RunState) -> Result<()> {
        let mut w = self.writer()?;
        w.module("model", model)?;
        w.optim::<B, M, O>("optim", optim)?;
        w.commit(state)
    }

    fn live_or_err(&self) -> Result<PathBuf> {
        self.live().with_context(|| format!("no checkpoint in {}", self.dir.display()))
    }

    pub fn state(&self) -> Result<RunState> {
        let path = self.live_or_err()?.join("state.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }

    /// Load part `name` into `module` (which must have the same structure).
    pub fn load_module<B: Backend, M: Module<B>>(&self, name: &str, module: M, device: &B::Device) -> Result<M> {
        load_module(&self.live_or_err()?.join(format!("{name}.mpk")), module, device)
    }

    pub fn load_optim<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&self, name: &str, optim: O, device: &B::Device) -> Result<O> {
        let path = self.live_or_err()?.join(format!("{name}.mpk"));
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let rec = Recorder::<B>::load(&Rec::new(), bytes, device)
            .map_err(|e| anyhow::anyhow!("{}: not an optimizer state of this run ({e})", path.display()))?;
        Ok(optim.load_record(rec))
    }

    /// Load model and optimizer (parts `model`, `optim`) and the run state.
    pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&self, model: M, optim: O, device: &B::Device) -> Result<(M, O, RunState)> {
        Ok((self.load_module("model", model, device)?, self.load_optim::<B, M, O>("optim", optim, device)?, self.state()?))
    }
}

/// Parts of a checkpoint being written; see [`Checkpoint::writer`].
pub struct CheckpointWriter {
    tmp: PathBuf,
    dir: PathBuf,
    old: PathBuf,
}

impl CheckpointWriter {
    pub fn module<B: Backend, M: Module<B>>(&mut self, name: &str, module: &M) -> Result<()> {
        save_module(&self.tmp.join(format!("{name}.mpk")), module)
    }

    pub fn optim<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&mut self, name: &str, optim: &O) -> Result<()> {
        let path = self.tmp.join(format!("{name}.mpk"));
        let bytes = Recorder::<B>::record(&Rec::new(), optim.to_record(), ()).map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    /// Write `state.json` and swap the new checkpoint in.
    pub fn commit(self, state: &RunState) -> Result<()> {
        std::fs::write(self.tmp.join("state.json"), serde_json::to_string_pretty(state)?).with_context(|| format!("writing {}/state.json", self.tmp.display()))?;
        let rename = |a: &Path, b: &Path| std::fs::rename(a, b).with_context(|| format!("renaming {} to {}", a.display(), b.display()));
        if self.old.exists() {
            std::fs::remove_dir_all(&self.old).with_context(|| format!("removing {}", self.old.display()))?;
        }
        if self.dir.exists() {
            rename(&self.dir, &self.old)?;
        }
        rename(&self.tmp, &self.dir)?;
        if self.old.exists() {
            std::fs::remove_dir_all(&self.old).with_context(|| format!("removing {}", self.old.display()))?;
        }
        Ok(())
    }
}

/// Save a module's weights as a Burn record, atomically.
pub fn save_module<B: Backend, M: Module<B>>(path: &Path, module: &M) -> Result<()> {
    let bytes = Recorder::<B>::record(&Rec::new(), module.clone().into_record(), ()).map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    crate::util::write_atomic(path, &bytes)
}

/// Load weights saved by [`save_module`] into `module` (same structure).
pub fn load_module<B: Backend, M: Module<B>>(path: &Path, module: M, device: &B::Device) -> Result<M> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let rec = Recorder::<B>::load(&Rec::new(), bytes, device)
        .map_err(|e| anyhow::anyhow!("{}: weights do not fit this model (saved by another version or config?): {e}", path.display()))?;
    Ok(module.load_record(rec))
}

/// Refuse to continue on a non-finite loss; the caller keeps its last good checkpoint.
pub fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<()> {
    if !loss.is_finite() {
        bail!("loss became {loss} at epoch {} step {step}; stopping. The last good checkpoint is kept; lower the learning rate and run again with --resume", epoch + 1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_holds_out_a_seeded_share_and_at_least_one() {
        let (train, val) = split(100, 0.1, 3);
        assert_eq!((train.len(), val.len()), (90, 10));
        let mut all = [train.clone(), val.clone()].concat();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_eq!(split(100, 0.1, 3), (train, val.clone()), "same seed, same split");
        assert_ne!(split(100, 0.1, 4).1, val, "another seed, another split");
        // A fraction sized for ImageNet on a small set still validates on one image.
        assert_eq!(split(24, 0.01, 0).1.len(), 1);
        assert_eq!(split(24, 0.0, 0).1.len(), 0);
        // Never all of them, nor one of one.
        assert_eq!(split(3, 0.9, 0).1.len(), 2);
        assert_eq!(split(1, 0.5, 0).1.len(), 0);
    }
}
