//! Training loops (encoder here; decoders build on the same pieces).
//!
//! We run our own epoch loop over Burn's autodiff and optimizers rather than burn-train's
//! `SupervisedTraining`: the runs here must write checkpoints atomically, resume a killed run
//! with the same data order, stop on a NaN loss keeping the last good checkpoint and log to
//! TensorBoard, none of which burn-train 0.21's learner does.
pub mod encoder;

use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use crate::rng::Rng;

/// Progress of a run, saved after each epoch beside the checkpoint.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
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

/// Deterministic train/validation split: a seeded shuffle, the first `fraction` held out.
pub fn split(n: usize, fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    Rng::derive(seed, 0x5317).shuffle(&mut idx);
    let n_val = ((n as f64 * fraction).round() as usize).min(n.saturating_sub(1));
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

pub fn lr_at(schedule: Schedule, base: f64, step: usize, total: usize) -> f64 {
    let t = step as f64 / total.max(1) as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * (0.01 + 0.99 * 0.5 * (1.0 + (std::f64::consts::PI * t.min(1.0)).cos())),
        Schedule::Step => base * if t < 0.5 { 1.0 } else if t < 0.75 { 0.1 } else { 0.01 },
    }
}

/// Checkpoint files of a run folder: `checkpoint/{model,optim}.bin` (Burn records, which keep
/// parameter ids so the optimizer state matches on resume) and `checkpoint/state.json`.
pub struct Checkpoint {
    dir: PathBuf,
}

type Rec = BinFileRecorder<FullPrecisionSettings>;

impl Checkpoint {
    pub fn new(run_dir: &Path) -> Self {
        Self { dir: run_dir.join("checkpoint") }
    }

    pub fn exists(&self) -> bool {
        self.dir.join("state.json").exists()
    }

    /// Save model, optimizer and state; each file is written under a temp name and renamed,
    /// and state.json (which marks the checkpoint complete) goes last.
    pub fn save<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&self, model: &M, optim: &O, state: &RunState) -> Result<()> {
        std::fs::create_dir_all(&self.dir).with_context(|| format!("creating {}", self.dir.display()))?;
        // The recorder picks the extension itself, so write into a temp folder and rename.
        let tmp = self.dir.join("tmp");
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let rec = Rec::new();
        for (name, result) in [
            ("model", rec.record(model.clone().into_record(), tmp.join("model"))),
            ("optim", rec.record(optim.to_record(), tmp.join("optim"))),
        ] {
            result.with_context(|| format!("saving the {name} checkpoint in {}", tmp.display()))?;
            let (from, to) = (tmp.join(format!("{name}.bin")), self.dir.join(format!("{name}.bin")));
            std::fs::rename(&from, &to).with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        }
        crate::util::write_atomic(&self.dir.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())
    }

    /// Load the checkpoint into `model` and `optim` (which must have the same structure).
    pub fn load<B: AutodiffBackend, M: AutodiffModule<B>, O: Optimizer<M, B>>(&self, model: M, optim: O, device: &B::Device) -> Result<(M, O, RunState)> {
        let rec = Rec::new();
        let state: RunState = serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("state.json")).with_context(|| format!("reading {}/state.json", self.dir.display()))?,
        )
        .with_context(|| format!("{}/state.json is damaged", self.dir.display()))?;
        let model_rec = rec
            .load(self.dir.join("model.bin"), device)
            .with_context(|| format!("loading {}/model.bin (was it saved by another version or config?)", self.dir.display()))?;
        let optim_rec = rec.load(self.dir.join("optim.bin"), device).with_context(|| format!("loading {}/optim.bin", self.dir.display()))?;
        Ok((model.load_record(model_rec), optim.load_record(optim_rec), state))
    }
}

/// Refuse to continue on a non-finite loss; the caller keeps its last good checkpoint.
pub fn check_finite(loss: f64, epoch: usize, step: usize) -> Result<()> {
    if !loss.is_finite() {
        bail!("loss became {loss} at epoch {} step {step}; stopping. The last good checkpoint is kept; lower the learning rate and run again with --resume", epoch + 1);
    }
    Ok(())
}
