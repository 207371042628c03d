//! Learned inversion: decoders from a tap's codes back to images.
//!
//! [`upconv`] builds the network (Dosovitskiy & Brox 2016), with [`activation`]'s leaky ReLU
//! and [`deconv`]'s up-convolution (one-pass gradients on the CPU), [`deepsim`] the feature and
//! adversarial losses (DeePSiM); training lives in [`crate::train::decoder`]. A trained decoder
//! is a run folder holding `decoder.json` ([`DecoderInfo`]: what it inverts) and
//! `decoder.safetensors` (its best weights in PyTorch's layout, which
//! `python/preimage.py` loads into a `torch.nn.Module`).
pub mod activation;
pub mod deconv;
pub mod deepsim;
pub mod upconv;

// How many of the CPU training backend's own nodes this thread has recorded.
#[cfg(test)]
thread_local!(static OWN_NODES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });

/// Counts one of the CPU training backend's own nodes ([`activation`], [`deconv`]) in tests,
/// which check that the generic functions take them on `Autodiff<Flex>` (results equal to
/// Burn's alone would not show it); nothing otherwise.
fn own_node() {
    #[cfg(test)]
    OWN_NODES.with(|n| n.set(n.get() + 1));
}

#[cfg(test)]
fn own_nodes() -> usize {
    OWN_NODES.with(|n| n.get())
}

pub use upconv::{Decoder, DecoderArch, OutputAct, Plan, Upsample};

use crate::data::codes::{CodeFile, Preprocessing};
use crate::encoder::EncoderSpec;
use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// File names inside a decoder run folder.
pub const INFO_FILE: &str = "decoder.json";
pub const WEIGHTS_FILE: &str = "decoder.safetensors";
/// The weights of runs saved before [`WEIGHTS_FILE`] (Burn's record format), still read.
pub const LEGACY_WEIGHTS_FILE: &str = "decoder.mpk";
/// Metadata key of [`WEIGHTS_FILE`] holding the [`DecoderInfo`] as JSON, so the file alone
/// rebuilds the network.
pub const INFO_KEY: &str = "decoder";

/// What a decoder inverts: recorded with its weights so that codes from another encoder, tap
/// or shape are refused instead of decoded into garbage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DecoderInfo {
    pub encoder: String,
    pub tap: String,
    /// SHA-256 of the encoder weights the codes came from.
    pub weights_sha256: String,
    /// Where those weights were read from, when known (to re-encode reconstructions).
    #[serde(default)]
    pub weights_path: Option<String>,
    /// Code shape without the batch dimension.
    pub code_shape: Vec<usize>,
    /// `[height, width]` of the decoded images (the encoder's input size).
    pub image_size: [usize; 2],
    /// How images became encoder input (the decoder outputs `[0,1]` RGB before normalization).
    pub preprocessing: Preprocessing,
    pub classes: Vec<String>,
    /// The encoder's full spec, to re-encode reconstructions.
    pub encoder_spec: EncoderSpec,
    /// The network (arch + derived shapes).
    pub plan: Plan,
    /// Epoch whose weights are in `decoder.safetensors`, and its validation loss.
    pub epoch: usize,
    pub val_loss: f64,
}

impl DecoderInfo {
    /// Refuse codes that this decoder was not trained on, naming both sides.
    pub fn check_codes(&self, encoder: &str, tap: &str, shape: &[usize], weights_sha256: &str) -> Result<()> {
        if encoder != self.encoder || tap != self.tap || shape != self.code_shape.as_slice() {
            bail!(
                "this decoder inverts {} {} codes of shape {:?}, but the codes are {encoder} {tap} of shape {shape:?}",
                self.encoder,
                self.tap,
                self.code_shape
            );
        }
        if weights_sha256 != self.weights_sha256 {
            eprintln!(
                "warning: the codes come from other {encoder} weights (sha256 {}…) than the decoder was trained on ({}…)",
                &weights_sha256[..weights_sha256.len().min(12)],
                &self.weights_sha256[..self.weights_sha256.len().min(12)]
            );
        }
        Ok(())
    }

    /// Check codes of `shape` (`[N, ...]`) at this decoder's tap of `file` (in memory or left
    /// on disk) against what it inverts: the encoder, tap and weights the file records, or for
    /// a file written elsewhere the shape alone (flattened rows fit).
    pub fn check_tap_codes(&self, file: &CodeFile, shape: &[usize]) -> Result<()> {
        match &file.provenance {
            Some(pv) => self.check_codes(&pv.encoder, &self.tap, &shape[1..], &pv.weights_sha256),
            // Written elsewhere: only the shape can be checked (the reader said so).
            None if crate::data::codes::fits_shape(&self.tap, &shape[1..], &self.code_shape) => Ok(()),
            None => bail!("this decoder inverts {} {} codes of shape {:?}, but the file's '{}' codes have shape {:?}", self.encoder, self.tap, self.code_shape, self.tap, &shape[1..]),
        }
    }
}

impl DecoderInfo {
    /// The frozen encoder this decoder inverts, loaded from `source` or else from the
    /// recorded weights file; its SHA-256 must match the one the codes came from.
    pub fn load_encoder<B: Backend>(&self, source: Option<&crate::encoder::WeightSource>, device: &B::Device) -> Result<crate::encoder::ConvNet<B>> {
        let source = match source.cloned().or_else(|| crate::encoder::WeightSource::recorded(self.weights_path.as_deref(), &self.weights_sha256)) {
            Some(s) => s,
            None => bail!(
                "the {} weights this decoder was trained with are not recorded or moved ({}); pass --weights FILE or --run DIR",
                self.encoder,
                self.weights_path.as_deref().unwrap_or("none recorded")
            ),
        };
        // Fed as the decoder's images were (their recorded resize, not the network's default).
        let input = crate::encoder::Input { size: Some(self.encoder_spec.input_size), resize: Some(self.encoder_spec.resize) };
        let loaded = crate::encoder::load::<B>(&self.encoder, &source, input, device)?;
        if loaded.weights_sha256 != self.weights_sha256 {
            bail!(
                "the {} weights given (sha256 {}) are not those this decoder was trained on ({})",
                self.encoder,
                loaded.weights_sha256,
                self.weights_sha256
            );
        }
        Ok(loaded.net)
    }
}

/// Read a decoder run folder's `decoder.json`.
pub fn read_info(run_dir: &Path) -> Result<DecoderInfo> {
    let path = run_dir.join(INFO_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!("{} is not a decoder run folder: no {INFO_FILE} (train one with `preimage train-decoder --out {}`)", run_dir.display(), run_dir.display())
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is damaged or from another version", path.display()))
}

/// Load a trained decoder and what it inverts.
pub fn load_run<B: Backend>(run_dir: &Path, device: &B::Device) -> Result<(Decoder<B>, DecoderInfo)> {
    let info = read_info(run_dir)?;
    let dec = Decoder::init(&info.plan, 0, device);
    let (path, legacy) = (run_dir.join(WEIGHTS_FILE), run_dir.join(LEGACY_WEIGHTS_FILE));
    let dec = if !path.exists() && legacy.exists() { crate::train::load_module(&legacy, dec, device)? } else { load_weights(&path, dec)? };
    Ok((dec, info))
}

/// Save a decoder and its info into a run folder (each file atomically).
pub fn save_run<B: Backend>(run_dir: &Path, dec: &Decoder<B>, info: &DecoderInfo) -> Result<()> {
    save_weights(&run_dir.join(WEIGHTS_FILE), dec, info)?;
    crate::util::write_atomic(&run_dir.join(INFO_FILE), serde_json::to_string_pretty(info)?.as_bytes())
}

/// The decoder's weights as safetensors in PyTorch's layout (linear weights `[out, in]`), keyed
/// by the module path (`fcs.0.weight`, `stages.1.deconv.weight`, `stages.1.convs.0.bias`,
/// `out.weight`), with `info` in the metadata; written atomically.
pub fn save_weights<B: Backend>(path: &Path, dec: &Decoder<B>, info: &DecoderInfo) -> Result<()> {
    use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter).metadata(INFO_KEY, serde_json::to_string(info)?);
    dec.save_into(&mut store).map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    let bytes = store.get_bytes().map_err(|e| anyhow::anyhow!("encoding {}: {e}", path.display()))?;
    crate::util::write_atomic(path, &bytes)
}

/// Weights saved by [`save_weights`] into `dec` (built from the same plan); a key missing,
/// left over or of another shape is an error naming it.
pub fn load_weights<B: Backend>(path: &Path, mut dec: Decoder<B>) -> Result<Decoder<B>> {
    use burn_store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
    if !path.exists() {
        bail!("decoder weights {} not found", path.display());
    }
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true);
    let r = dec.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: not decoder weights: {e}", path.display()))?;
    let mut problems = Vec::new();
    if !r.missing.is_empty() {
        problems.push(format!("missing {}", r.missing.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")));
    }
    if !r.unused.is_empty() {
        problems.push(format!("unexpected {}", r.unused.join(", ")));
    }
    if let Some(e) = r.errors.first() {
        problems.push(format!("{e}"));
    }
    if !problems.is_empty() {
        bail!("{} does not fit the decoder its decoder.json describes: {}", path.display(), problems.join("; "));
    }
    Ok(dec)
}
