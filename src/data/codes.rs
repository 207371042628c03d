//! Code files: the activations of many images at one or more taps, in one safetensors file.
//!
//! Layout: one f32 tensor per tap named by the tap, shape `[N, ...]`; `label` (i64 `[N]`,
//! -1 where unknown) and `pose` (f32 `[N, 2]`: azimuth, elevation in degrees, NaN where
//! unknown) when known; `__metadata__` holds `ids` (JSON array of image paths relative to
//! the data folder, in row order), `encoder`, `weights_sha256`, `input_size`,
//! `preprocessing`, `classes` and the full encoder `spec`.
use crate::tensorfile::{self, Array};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Where a code file's codes came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub encoder: String,
    pub weights_sha256: String,
    /// `[height, width]` of the encoder input.
    pub input_size: [usize; 2],
    /// How images were turned into the encoder input (resize, crop, mean, std).
    pub preprocessing: Preprocessing,
    pub classes: Vec<String>,
    /// The encoder's full spec (JSON), so a decoder can re-encode its reconstructions.
    pub spec: String,
    /// Where the images and the encoder weights were read from (absolute paths when known),
    /// so that `train-decoder --codes FILE` finds its targets without being told again.
    pub data_root: Option<String>,
    pub weights_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub resize: usize,
    pub crop: [usize; 2],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub pixel_range: String,
}

impl Preprocessing {
    /// The preprocessing an encoder declares.
    pub fn of(spec: &crate::encoder::EncoderSpec) -> Self {
        Preprocessing {
            resize: spec.resize,
            crop: spec.input_size,
            mean: spec.mean,
            std: spec.std,
            pixel_range: "RGB in [0,1], resize shorter side (PIL bilinear, antialiased), centre crop, then (x-mean)/std".into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CodeFile {
    /// Tap name → `[N, ...]` codes.
    pub codes: BTreeMap<String, Array>,
    pub labels: Option<Vec<i64>>,
    pub poses: Option<Vec<[f32; 2]>>,
    pub ids: Vec<String>,
    pub provenance: Provenance,
}

impl CodeFile {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The codes at `tap`; an unknown tap is an error listing those in the file.
    pub fn tap(&self, tap: &str) -> Result<&Array> {
        self.codes.get(tap).ok_or_else(|| {
            anyhow::anyhow!("the code file has no tap '{tap}'; it holds: {}", self.codes.keys().cloned().collect::<Vec<_>>().join(", "))
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let (extra, meta) = self.labels_poses_and_metadata()?;
        let tensors: Vec<(String, &Array)> = self.codes.iter().map(|(k, v)| (k.clone(), v)).chain(extra.iter().map(|(k, v)| (k.clone(), v))).collect();
        tensorfile::write(path, &tensors, &meta)
    }

    /// What is written beside the codes: the `label` and `pose` tensors (when known) and the
    /// metadata. Public to the crate for extraction, which streams the codes themselves.
    pub(crate) fn labels_poses_and_metadata(&self) -> Result<(Vec<(String, Array)>, HashMap<String, String>)> {
        let n = self.len();
        let mut tensors = Vec::new();
        if let Some(l) = &self.labels {
            tensors.push(("label".into(), Array::I64 { shape: vec![n], data: l.clone() }));
        }
        if let Some(p) = &self.poses {
            tensors.push(("pose".into(), Array::F32 { shape: vec![n, 2], data: p.iter().flatten().copied().collect() }));
        }
        let pv = &self.provenance;
        let mut meta: HashMap<String, String> = HashMap::from([
            ("ids".into(), serde_json::to_string(&self.ids)?),
            ("encoder".into(), pv.encoder.clone()),
            ("weights_sha256".into(), pv.weights_sha256.clone()),
            ("input_size".into(), serde_json::to_string(&pv.input_size)?),
            ("preprocessing".into(), serde_json::to_string(&pv.preprocessing)?),
            ("classes".into(), serde_json::to_string(&pv.classes)?),
            ("spec".into(), pv.spec.clone()),
        ]);
        for (k, v) in [("data_root", &pv.data_root), ("weights_path", &pv.weights_path)] {
            if let Some(v) = v {
                meta.insert(k.into(), v.clone());
            }
        }
        Ok((tensors, meta))
    }

    pub fn read(path: &Path) -> Result<Self> {
        Self::read_from(path, tensorfile::read(path)?)
    }

    /// [`CodeFile::read`] with only the codes at `tap` (other taps are skipped on disk: a file
    /// of many taps can outgrow memory). A tap the file lacks is an error listing those it holds.
    pub fn read_tap(path: &Path, tap: &str) -> Result<Self> {
        let mut taps = Vec::new();
        let read = tensorfile::read_where(path, |name| {
            if !matches!(name, "label" | "pose") {
                taps.push(name.to_string());
            }
            name == tap || matches!(name, "label" | "pose")
        })?;
        if !taps.iter().any(|t| t == tap) {
            taps.sort();
            bail!("{} has no tap '{tap}'; it holds: {}", path.display(), taps.join(", "));
        }
        Self::read_from(path, read)
    }

    fn read_from(path: &Path, (mut tensors, meta): (BTreeMap<String, Array>, HashMap<String, String>)) -> Result<Self> {
        let field = |k: &str| -> Result<&String> {
            meta.get(k).with_context(|| format!("{} is not a preimage code file: metadata '{k}' is missing", path.display()))
        };
        let json_err = |k: &str| format!("{}: metadata '{k}' is not valid", path.display());
        let ids: Vec<String> = serde_json::from_str(field("ids")?).with_context(|| json_err("ids"))?;
        let provenance = Provenance {
            encoder: field("encoder")?.clone(),
            weights_sha256: field("weights_sha256")?.clone(),
            input_size: serde_json::from_str(field("input_size")?).with_context(|| json_err("input_size"))?,
            preprocessing: serde_json::from_str(field("preprocessing")?).with_context(|| json_err("preprocessing"))?,
            classes: serde_json::from_str(field("classes")?).with_context(|| json_err("classes"))?,
            spec: field("spec")?.clone(),
            data_root: meta.get("data_root").cloned(),
            weights_path: meta.get("weights_path").cloned(),
        };
        let labels = match tensors.remove("label") {
            Some(Array::I64 { data, .. }) => Some(data),
            Some(Array::F32 { data, .. }) => Some(data.iter().map(|&v| v as i64).collect()),
            None => None,
        };
        let poses = tensors.remove("pose").map(|a| a.to_f32().chunks_exact(2).map(|c| [c[0], c[1]]).collect());
        for (k, a) in &tensors {
            if a.shape().first() != Some(&ids.len()) {
                bail!("{}: tap '{k}' has {:?} rows but the file lists {} ids", path.display(), a.shape().first(), ids.len());
            }
        }
        Ok(CodeFile { codes: tensors, labels, poses, ids, provenance })
    }
}
