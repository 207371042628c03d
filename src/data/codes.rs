//! Code files: the activations of many images at one or more taps, in one safetensors file.
//!
//! Layout: one f32 tensor per tap named by the tap, shape `[N, ...]`; `label` (i64 `[N]`,
//! -1 where unknown) and `pose` (f32 `[N, 2]`: azimuth, elevation in degrees, NaN where
//! unknown) when known; `__metadata__` holds `ids` (JSON array of image paths relative to
//! the data folder, in row order), `encoder`, `weights_sha256`, `input_size`,
//! `preprocessing`, `classes` (the encoder's, for its logits) and the full encoder `spec`; and
//! `label_classes` (the folder's class names, which `label` indexes) when there are labels.
//!
//! Files written elsewhere (safetensors from PyTorch or NumPy, `torch.save` of a dict or of a
//! tensor alone, NumPy's `.npy`/`.npz`, with codes of the same torchvision network) are read
//! too: tensors named by the tap (or one unnamed array), `label`, and `ids` naming the rows (in
//! the metadata, a `.npz` string array or a `torch.save`d list; else the rows are named by their
//! index, `000000`, `000001`, …). Their provenance is unknown, so commands that need it
//! (training: the encoder and images) ask for it, and the others check only the code shape.
use super::npy;
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
    /// The encoder's classes (its logits' names).
    pub classes: Vec<String>,
    /// The image folder's classes, which `label` indexes (not the encoder's: AlexNet's codes
    /// of a cats-and-dogs folder have labels 0 and 1 for cat and dog); `None` when unknown.
    pub label_classes: Option<Vec<String>>,
    /// The encoder's full spec (JSON), so a decoder can re-encode its reconstructions.
    pub spec: String,
    /// Where the images and the encoder weights were read from (absolute paths when known),
    /// so that `train-decoder --codes FILE` finds its targets without being told again.
    pub data_root: Option<String>,
    pub weights_path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    pub resize: crate::encoder::Resize,
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
            pixel_range: format!("RGB in [0,1], {} (PIL bilinear, antialiased), centre crop, then (x-mean)/std", spec.resize.describe()),
        }
    }
}

/// [`CodeFile::fits_shape`] for codes of per-item shape `have`.
pub fn fits_shape(tap: &str, have: &[usize], want: &[usize]) -> bool {
    if have == want {
        return true;
    }
    let same_values = have.iter().product::<usize>() == want.iter().product::<usize>();
    let fits = same_values && (have.len() == 1 || want.len() == 1);
    // Said once, not at every batch that checks it.
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let note = format!("note: the file's {tap} codes of shape {have:?} are read as {want:?} (row-major, as torch.flatten lays them out)");
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if fits && !said.contains(&note) {
        eprintln!("{note}");
        said.push(note);
    }
    fits
}

/// One tap's codes `[N, ...]`: in memory, or left in their file and read by rows.
pub enum TapCodes {
    Memory(Array),
    File(tensorfile::FileRows),
}

impl TapCodes {
    pub fn shape(&self) -> &[usize] {
        match self {
            TapCodes::Memory(a) => a.shape(),
            TapCodes::File(f) => &f.shape,
        }
    }

    /// Number of codes (rows).
    pub fn len(&self) -> usize {
        self.shape()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Values in one code.
    pub fn row_len(&self) -> usize {
        self.shape()[1..].iter().product()
    }

    /// Rows `idx`, in that order, flattened, as f32.
    pub fn rows(&self, idx: &[usize]) -> Result<Vec<f32>> {
        let d = self.row_len();
        let mut out = Vec::with_capacity(idx.len() * d);
        match self {
            TapCodes::Memory(Array::F32 { data, .. }) => idx.iter().for_each(|&i| out.extend_from_slice(&data[i * d..(i + 1) * d])),
            TapCodes::Memory(Array::I64 { data, .. }) => idx.iter().for_each(|&i| out.extend(data[i * d..(i + 1) * d].iter().map(|&v| v as f32))),
            TapCodes::File(f) => f.read_rows(idx, &mut out)?,
        }
        // A NaN or infinite value decodes to a black image and trains to a NaN loss.
        if let Some(k) = out.iter().position(|v| !v.is_finite()) {
            let (row, at) = (idx[k / d.max(1)], k % d.max(1));
            bail!("code {row} holds {} at position {at}: codes must be finite numbers", out[k]);
        }
        Ok(out)
    }

    /// Single values `(row, position in the row)`, in that order, as f32: a few values from
    /// many rows without reading the rows.
    pub fn values(&self, at: &[(usize, usize)]) -> Result<Vec<f32>> {
        let d = self.row_len();
        Ok::<_, anyhow::Error>(match self {
            TapCodes::Memory(Array::F32 { data, .. }) => at.iter().map(|&(r, i)| data[r * d + i]).collect(),
            TapCodes::Memory(Array::I64 { data, .. }) => at.iter().map(|&(r, i)| data[r * d + i] as f32).collect(),
            TapCodes::File(f) => f.read_values(at)?,
        })
        .and_then(|v: Vec<f32>| match v.iter().position(|x| !x.is_finite()) {
            Some(k) => bail!("code {} holds {} at position {}: codes must be finite numbers", at[k].0, v[k], at[k].1),
            None => Ok(v),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CodeFile {
    /// Tap name → `[N, ...]` codes.
    pub codes: BTreeMap<String, Array>,
    pub labels: Option<Vec<i64>>,
    pub poses: Option<Vec<[f32; 2]>>,
    pub ids: Vec<String>,
    /// `None` for a file written elsewhere (see the module docs).
    pub provenance: Option<Provenance>,
}

impl CodeFile {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Where the codes came from; for a file written elsewhere an error that says what
    /// `needed_for` needs instead.
    pub fn provenance(&self, path: &Path, needed_for: &str) -> Result<&Provenance> {
        self.provenance.as_ref().with_context(|| {
            format!(
                "{} holds codes without preimage's metadata (the encoder, its weights and the images they came from: \
                 it was not written by `preimage extract`), which {needed_for} needs",
                path.display()
            )
        })
    }

    /// Whether the codes at `tap` of a file written elsewhere are codes of shape `want` (per
    /// item): the same shape, or flattened (`torch.flatten(feats, 1)`, `feats.reshape(N, -1)`:
    /// `[9216]` for `[256, 6, 6]`, row-major as ours), or the reverse (`[4096, 1, 1]` for `[4096]`).
    /// Codes are used as flat rows, so a flattened file needs no copy; a note says how it is read.
    pub fn fits_shape(&self, tap: &str, want: &[usize]) -> Result<bool> {
        Ok(fits_shape(tap, &self.tap(tap)?.shape()[1..], want))
    }

    /// The codes at `tap`; an unknown tap is an error listing those in the file.
    pub fn tap(&self, tap: &str) -> Result<&Array> {
        self.codes.get(tap).ok_or_else(|| {
            anyhow::anyhow!("the code file has no tap '{tap}'; it holds: {}", self.codes.keys().cloned().collect::<Vec<_>>().join(", "))
        })
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let (extra, meta) = self.labels_poses_and_metadata(self.codes.contains_key("pose"))?;
        let tensors: Vec<(String, &Array)> = self.codes.iter().map(|(k, v)| (k.clone(), v)).chain(extra.iter().map(|(k, v)| (k.clone(), v))).collect();
        tensorfile::write(path, &tensors, &meta)
    }

    /// What is written beside the codes: the `label` and `pose` tensors (when known; the pose
    /// as [`CAMERA_POSE`] where `pose_is_tap`, a tap named `pose` being written) and the
    /// metadata. Public to the crate for extraction, which streams the codes themselves.
    pub(crate) fn labels_poses_and_metadata(&self, pose_is_tap: bool) -> Result<(Vec<(String, Array)>, tensorfile::Metadata)> {
        let n = self.len();
        let mut tensors = Vec::new();
        if let Some(l) = &self.labels {
            tensors.push(("label".into(), Array::I64 { shape: vec![n], data: l.clone() }));
        }
        if let Some(p) = &self.poses {
            let name = if pose_is_tap { CAMERA_POSE } else { "pose" };
            tensors.push((name.into(), Array::F32 { shape: vec![n, 2], data: p.iter().flatten().copied().collect() }));
        }
        let mut meta: HashMap<String, String> = HashMap::from([("ids".into(), serde_json::to_string(&self.ids)?)]);
        let Some(pv) = &self.provenance else {
            return Ok((tensors, meta));
        };
        meta.extend([
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
        if let Some(names) = &pv.label_classes {
            meta.insert("label_classes".into(), serde_json::to_string(names)?);
        }
        Ok((tensors, meta))
    }

    pub fn read(path: &Path) -> Result<Self> {
        Self::read_from(path, read_tensors(path, |_| true)?, None)
    }

    /// [`CodeFile::read`] with only the codes at `tap` (other taps are skipped on disk: a file
    /// of many taps can outgrow memory). A tap the file lacks is an error listing those it holds.
    ///
    /// An array without a name of its own (a `.npy` file's, or `np.savez(F, x)`'s `arr_0`) is
    /// read as the codes at `tap` when it is the file's only one.
    pub fn read_tap(path: &Path, tap: &str) -> Result<Self> {
        Self::read_tap_as(path, tap, None)
    }

    /// Where a code file's codes came from, without reading them; `None` for a file written
    /// elsewhere (no encoder in its metadata).
    pub fn read_provenance(path: &Path) -> Result<Option<Provenance>> {
        let (tensors, meta) = read_tensors(path, |_| false)?;
        if !meta.contains_key("encoder") {
            return Ok(None);
        }
        Ok(Self::read_from(path, (tensors, meta), None)?.provenance)
    }

    /// [`CodeFile::read_tap`] where the codes may also be named by `module`, the torchvision
    /// module whose output the tap is (`features.11` for AlexNet's `conv5`), as
    /// `create_feature_extractor(model, ["features.11"])` names them.
    pub fn read_tap_as(path: &Path, tap: &str, module: Option<&str>) -> Result<Self> {
        let mut taps = Vec::new();
        let mut read = read_tensors(path, |name| {
            if !is_beside_codes(name) {
                taps.push(name.to_string());
            }
            name == tap || Some(name) == module || is_beside_codes(name) || name == npy::UNNAMED
        })?;
        if let Some(m) = module.filter(|m| !taps.iter().any(|t| t == tap) && taps.iter().any(|t| t == m)) {
            let arr = read.0.remove(m).expect("read above");
            eprintln!("note: {}'s '{m}' codes are read as tap {tap} (torchvision's module for it)", path.display());
            read.0.insert(tap.to_string(), arr);
            read.0.remove(npy::UNNAMED);
            return Self::read_from(path, read, None);
        }
        if let Some(m) = module {
            read.0.remove(m);
        }
        if !taps.iter().any(|t| t == tap) {
            if let ([only], Some(arr)) = (taps.as_slice(), read.0.remove(npy::UNNAMED)) {
                debug_assert_eq!(only, npy::UNNAMED);
                read.0.insert(tap.to_string(), arr);
                return Self::read_from(path, read, None);
            }
            taps.sort();
            bail!("{} has no tap '{tap}'; it holds: {}", path.display(), taps.join(", "));
        }
        read.0.remove(npy::UNNAMED);
        Self::read_from(path, read, None)
    }

    /// [`CodeFile::read_tap_as`] whose codes at `tap` stay in their file, read by rows when
    /// asked ([`TapCodes::File`]; `np.load(F, mmap_mode="r")`'s way): a decoder trains on,
    /// and a few codes decode from, a file larger than memory. That is so for float codes in a
    /// safetensors file (ours or written elsewhere), a `.npy` file, an uncompressed `.npz`
    /// (`np.savez`) and a `torch.save` file (since PyTorch 1.6); other files
    /// (`np.savez_compressed`'s, legacy `torch.save`, integers, Fortran order, strided views)
    /// are read into memory.
    pub fn open_tap_as(path: &Path, tap: &str, module: Option<&str>) -> Result<(Self, TapCodes)> {
        // One pass over the header: the names of the arrays, and the rest of the file.
        let mut names = Vec::new();
        let rest = read_tensors(path, |n| {
            names.push(n.to_string());
            is_beside_codes(n)
        })?;
        let has = |n: &str| names.iter().any(|m| m == n);
        let arrays: Vec<&String> = names.iter().filter(|n| !is_beside_codes(n)).collect();
        let name = if has(tap) {
            Some(tap)
        } else if let Some(m) = module.filter(|m| has(m)) {
            Some(m)
        } else if arrays.len() == 1 && arrays[0] == npy::UNNAMED {
            Some(npy::UNNAMED)
        } else {
            None
        };
        let rows = match name {
            Some(n) => file_rows(path, n)?,
            None => None,
        };
        let Some(rows) = rows else {
            let mut file = Self::read_tap_as(path, tap, module)?;
            let codes = file.codes.remove(tap).expect("read_tap keeps its tap");
            check_rows(path, tap, codes.shape())?;
            return Ok((file, TapCodes::Memory(codes)));
        };
        check_rows(path, tap, &rows.shape)?;
        if let Some(m) = module.filter(|&m| name == Some(m)) {
            eprintln!("note: {}'s '{m}' codes are read as tap {tap} (torchvision's module for it)", path.display());
        }
        let file = Self::read_from(path, rest, Some(rows.shape[0]))?;
        if rows.shape[0] != file.len() {
            bail!("{}: tap '{tap}' has {} rows but the file lists {} ids", path.display(), rows.shape[0], file.len());
        }
        Ok((file, TapCodes::File(rows)))
    }

    /// The code file of `tensors` and `meta`; `rows`: the number of codes when they are left
    /// on disk (it names the rows of a file without ids).
    fn read_from(path: &Path, (mut tensors, meta): (BTreeMap<String, Array>, HashMap<String, String>), rows: Option<usize>) -> Result<Self> {
        let field = |k: &str| -> Result<&String> {
            meta.get(k).with_context(|| format!("{} is not a preimage code file: metadata '{k}' is missing", path.display()))
        };
        let json_err = |k: &str| format!("{}: metadata '{k}' is not valid", path.display());
        let labels = match tensors.remove("label") {
            Some(Array::I64 { data, .. }) => Some(data),
            Some(Array::F32 { data, .. }) => Some(data.iter().map(|&v| v as i64).collect()),
            None => None,
        };
        let shapes: Vec<(&str, &[usize])> = tensors.iter().map(|(k, a)| (k.as_str(), a.shape())).collect();
        let poses = pose_tensor(&shapes).map(str::to_string).and_then(|k| tensors.remove(&k)).map(|a| a.to_f32().chunks_exact(2).map(|c| [c[0], c[1]]).collect());
        // A file without an encoder was written elsewhere: its rows are named by their index.
        let foreign = !meta.contains_key("encoder");
        let ids_text = if foreign { meta.get("ids") } else { Some(field("ids")?) };
        let ids: Vec<String> = match ids_text {
            Some(ids) => serde_json::from_str(ids).with_context(|| json_err("ids"))?,
            None => {
                let rows = rows.or_else(|| tensors.values().next().and_then(|a| a.shape().first().copied())).unwrap_or(0);
                (0..rows).map(|i| format!("{i:06}")).collect()
            }
        };
        for (k, a) in &tensors {
            if a.shape().first() != Some(&ids.len()) {
                let rows = a.shape().first().map_or("no".to_string(), |n| n.to_string());
                if foreign && !meta.contains_key("ids") {
                    bail!("{}: tensors '{}' and '{k}' have different numbers of rows ({} and {rows})", path.display(), tensors.keys().next().unwrap(), ids.len());
                }
                bail!("{}: tap '{k}' has {rows} rows but the file lists {} ids", path.display(), ids.len());
            }
        }
        if foreign {
            let rows = if ids_text.is_some() { "its rows are named by its metadata 'ids'" } else { "its rows are named by their index (000000, …)" };
            eprintln!(
                "note: {} was not written by `preimage extract` (no encoder in its metadata): {rows}, and only the \
                 codes' shape can be checked, not the encoder weights they came from",
                path.display()
            );
            return Ok(CodeFile { codes: tensors, labels, poses, ids, provenance: None });
        }
        let provenance = Provenance {
            encoder: field("encoder")?.clone(),
            weights_sha256: field("weights_sha256")?.clone(),
            input_size: serde_json::from_str(field("input_size")?).with_context(|| json_err("input_size"))?,
            preprocessing: serde_json::from_str(field("preprocessing")?).with_context(|| json_err("preprocessing"))?,
            classes: serde_json::from_str(field("classes")?).with_context(|| json_err("classes"))?,
            spec: field("spec")?.clone(),
            label_classes: meta.get("label_classes").map(|s| serde_json::from_str(s).with_context(|| json_err("label_classes"))).transpose()?,
            data_root: meta.get("data_root").cloned(),
            weights_path: meta.get("weights_path").cloned(),
        };
        Ok(CodeFile { codes: tensors, labels, poses, ids, provenance: Some(provenance) })
    }
}

/// The tensors `keep` accepts and the metadata of a safetensors file, a NumPy `.npy`/`.npz` or a
/// file written by `torch.save` (`{"fc6": codes, "ids": names}` or a tensor alone), told apart
/// by their content.
pub(crate) fn read_tensors(path: &Path, keep: impl FnMut(&str) -> bool) -> Result<(BTreeMap<String, Array>, HashMap<String, String>)> {
    if crate::encoder::weights::is_safetensors(path).with_context(|| format!("opening code file {}", path.display()))? {
        tensorfile::read_where(path, keep)
    } else if npy::is_npy(path)? || npy::is_npz(path)? {
        npy::read(path, keep)
    } else {
        // `torch.save(codes, F)`: the root tensor is unnamed, as a .npy file's array.
        let mut keep = keep;
        let mut tensors = crate::encoder::weights::read_pytorch(path, |k| keep(if k.is_empty() { npy::UNNAMED } else { k }))?;
        if let Some(root) = tensors.remove("") {
            tensors.insert(npy::UNNAMED.to_string(), root);
        }
        Ok((tensors, pytorch_meta(path)))
    }
}

/// Codes are rows, one per image: `[N, ...]` with N ≥ 1.
fn check_rows(path: &Path, tap: &str, shape: &[usize]) -> Result<()> {
    match shape {
        [] | [_] => bail!(
            "{}: the '{tap}' codes have shape {shape:?}, but codes are rows, one per image ([N, ...]); one code saved alone is [1, ...] (`x[None]`, `x.unsqueeze(0)`)",
            path.display()
        ),
        [0, ..] => bail!("{}: the '{tap}' codes have no rows (shape {shape:?})", path.display()),
        _ => Ok(()),
    }
}

/// The images' camera pose (azimuth, elevation) where a tap is named `pose` (posenet's pose
/// head), which then keeps the name `pose`.
pub const CAMERA_POSE: &str = "camera_pose";

/// Whether an array of a code file is read beside the codes (the labels, the camera pose, and
/// `pose`, which may be either a tap or the camera pose: [`pose_tensor`] tells).
fn is_beside_codes(name: &str) -> bool {
    matches!(name, "label" | "pose" | CAMERA_POSE)
}

/// Which array of a file (names and shapes) holds the images' camera pose: [`CAMERA_POSE`],
/// else `pose` when its rows are pairs (a `pose` of other rows is posenet's pose tap).
pub fn pose_tensor<'a>(arrays: &[(&'a str, &[usize])]) -> Option<&'a str> {
    let pairs = |s: &[usize]| s.len() == 2 && s[1] == 2;
    arrays.iter().find(|(k, _)| *k == CAMERA_POSE).or_else(|| arrays.iter().find(|(k, s)| *k == "pose" && pairs(s))).map(|(k, _)| *k)
}

/// Array `name` of a code file in any format, left in the file to be read by rows; `None` where
/// it is not so kept (see [`CodeFile::open_tap_as`]) and is read whole.
pub fn file_rows(path: &Path, name: &str) -> Result<Option<tensorfile::FileRows>> {
    if crate::encoder::weights::is_safetensors(path).with_context(|| format!("opening code file {}", path.display()))? {
        tensorfile::FileRows::open(path, name)
    } else if npy::is_npy(path)? || npy::is_npz(path)? {
        npy::file_rows(path, name)
    } else {
        crate::encoder::weights::pytorch_rows(path, if name == npy::UNNAMED { "" } else { name })
    }
}

/// The `ids` list of strings beside the tensors of a `torch.save`d dict (`{"fc7": codes, "ids":
/// names}`), and the dict of strings under [`npy::METADATA`] (a file from `extract --out F.pt`),
/// as metadata.
fn pytorch_meta(path: &Path) -> HashMap<String, String> {
    use burn_store::pytorch::{PickleValue, PytorchReader};
    let mut meta = HashMap::new();
    if let Ok(PickleValue::Dict(d)) = PytorchReader::read_pickle_data(path, None) {
        if let Some(PickleValue::List(items)) = d.get("ids") {
            let ids: Option<Vec<&str>> = items.iter().map(|v| if let PickleValue::String(s) = v { Some(s.as_str()) } else { None }).collect();
            if let Some(ids) = ids {
                meta.insert("ids".to_string(), serde_json::to_string(&ids).expect("strings serialize"));
            }
        }
        if let Some(PickleValue::Dict(m)) = d.get(npy::METADATA) {
            meta.extend(m.iter().filter_map(|(k, v)| if let PickleValue::String(s) = v { Some((k.clone(), s.clone())) } else { None }));
        }
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize) -> Array {
        Array::F32 { shape: vec![n, d], data: (0..n * d).map(|v| v as f32).collect() }
    }

    #[test]
    fn files_written_elsewhere_read_with_row_ids_and_no_provenance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("numpy.safetensors");
        tensorfile::write(&path, &[("fc6".to_string(), rows(3, 2)), ("label".to_string(), Array::I64 { shape: vec![3], data: vec![4, 5, 6] })], &HashMap::new()).unwrap();
        let file = CodeFile::read(&path).unwrap();
        assert_eq!(file.ids, ["000000", "000001", "000002"]);
        assert_eq!((file.codes["fc6"].shape(), file.labels.as_deref()), ([3, 2].as_slice(), Some([4, 5, 6].as_slice())));
        assert!(file.provenance.is_none());
        let err = file.provenance(&path, "training").unwrap_err().to_string();
        assert!(err.contains("numpy.safetensors") && err.contains("which training needs"), "{err}");
        // Written back, it stays such a file (with its ids).
        file.write(&dir.path().join("again.safetensors")).unwrap();
        assert_eq!(CodeFile::read(&dir.path().join("again.safetensors")).unwrap(), file);

        // Tensors that disagree on the row count, and our own files missing a field, are errors.
        tensorfile::write(&path, &[("fc6".to_string(), rows(3, 2)), ("fc7".to_string(), rows(4, 2))], &HashMap::new()).unwrap();
        let err = CodeFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("'fc6' and 'fc7' have different numbers of rows (3 and 4)"), "{err}");
        let meta = HashMap::from([("encoder".to_string(), "alexnet".to_string())]);
        tensorfile::write(&path, &[("fc6".to_string(), rows(3, 2))], &meta).unwrap();
        let err = CodeFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("metadata 'ids' is missing"), "{err}");
    }

    #[test]
    fn a_tap_of_an_extracted_file_stays_on_disk_and_reads_as_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("codes.safetensors");
        let spec = crate::encoder::default_spec("alexnet", 1000, None).unwrap();
        let provenance = Provenance {
            encoder: "alexnet".into(),
            weights_sha256: "random:0".into(),
            input_size: spec.input_size,
            preprocessing: Preprocessing::of(&spec),
            classes: spec.classes.clone(),
            label_classes: None,
            spec: serde_json::to_string(&spec).unwrap(),
            data_root: None,
            weights_path: None,
        };
        let ids: Vec<String> = ["a.jpg", "b.jpg", "c.jpg", "d.jpg"].map(String::from).to_vec();
        let file = CodeFile { codes: BTreeMap::from([("fc6".into(), rows(4, 3)), ("fc7".into(), rows(4, 2))]), labels: Some(vec![1, 2, 3, -1]), poses: None, ids, provenance: Some(provenance) };
        file.write(&path).unwrap();
        let (opened, codes) = CodeFile::open_tap_as(&path, "fc6", None).unwrap();
        assert!(matches!(codes, TapCodes::File(_)), "left in the file");
        assert_eq!(codes.shape(), [4, 3]);
        assert_eq!(codes.rows(&[3, 0]).unwrap(), [9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        assert_eq!(opened, CodeFile { codes: BTreeMap::new(), ..file.clone() });
        let err = CodeFile::open_tap_as(&path, "conv5", None).err().unwrap().to_string();
        assert!(err.contains("no tap 'conv5'; it holds: fc6, fc7"), "{err}");
        // A file written elsewhere stays on disk too (its names may be modules'), its rows
        // named by their index.
        let foreign = dir.path().join("foreign.safetensors");
        tensorfile::write(&foreign, &[("classifier.1".to_string(), rows(4, 3))], &HashMap::new()).unwrap();
        let (opened, codes) = CodeFile::open_tap_as(&foreign, "fc6", Some("classifier.1")).unwrap();
        assert!(matches!(codes, TapCodes::File(_)));
        assert_eq!(codes.rows(&[3, 0]).unwrap(), [9.0, 10.0, 11.0, 0.0, 1.0, 2.0]);
        assert_eq!((opened.ids.len(), opened.provenance.is_none()), (4, true));
    }

    /// NumPy's files (tests/data/npy/make.py): a `.npy` of little-endian floats in C order and
    /// an `np.savez` member stay on disk; Fortran order, big-endian and `np.savez_compressed`
    /// are read whole. Either way the rows and ids are those of reading the file whole.
    #[test]
    fn numpy_codes_stay_on_disk_where_numpy_leaves_them_readable() {
        let npy = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/npy").join(f);
        for (f, on_disk) in [("fc7.npy", true), ("codes.npz", true), ("fortran.npy", false), ("compressed.npz", false)] {
            let (file, codes) = CodeFile::open_tap_as(&npy(f), "fc7", None).unwrap();
            assert_eq!(matches!(codes, TapCodes::File(_)), on_disk, "{f}");
            let mut whole = CodeFile::read_tap(&npy(f), "fc7").unwrap();
            let want = whole.codes.remove("fc7").unwrap();
            assert_eq!(codes.shape(), want.shape(), "{f}");
            let got = codes.rows(&[2, 0, 1]).unwrap();
            let want = TapCodes::Memory(want).rows(&[2, 0, 1]).unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-3), "{f}: {got:?} vs {want:?}");
            assert_eq!(codes.values(&[(1, 3), (0, 0)]).unwrap(), [want[8 + 8 + 3], want[8]], "{f}");
            assert_eq!((file.ids, file.labels), (whole.ids, whole.labels), "{f}");
        }
        // A data section cut short is an error naming the file, not a short read later.
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.npy");
        let bytes = std::fs::read(npy("fc7.npy")).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() - 4]).unwrap();
        let err = format!("{:#}", CodeFile::open_tap_as(&cut, "fc7", None).err().unwrap());
        assert!(err.contains("cut.npy") && err.contains("ends before"), "{err}");
    }

    /// A vector saved alone and an empty array are not codes; the errors say what codes are.
    #[test]
    fn codes_are_rows_and_some_rows() {
        let dir = tempfile::tempdir().unwrap();
        let (one, none) = (dir.path().join("one.safetensors"), dir.path().join("none.safetensors"));
        tensorfile::write(&one, &[("fc7".to_string(), Array::F32 { shape: vec![4], data: vec![0.0; 4] })], &HashMap::new()).unwrap();
        tensorfile::write(&none, &[("fc7".to_string(), Array::F32 { shape: vec![0, 4], data: vec![] })], &HashMap::new()).unwrap();
        let err = CodeFile::open_tap_as(&one, "fc7", None).err().unwrap().to_string();
        assert!(err.contains("shape [4], but codes are rows, one per image ([N, ...])") && err.contains("x[None]"), "{err}");
        let err = CodeFile::open_tap_as(&none, "fc7", None).err().unwrap().to_string();
        assert!(err.contains("none.safetensors: the 'fc7' codes have no rows"), "{err}");
    }

    /// A NaN or infinite code is an error naming its row, not a black image.
    #[test]
    fn codes_that_are_not_finite_are_refused_by_row() {
        let codes = TapCodes::Memory(Array::F32 { shape: vec![3, 2], data: vec![0.0, 1.0, 2.0, f32::NAN, 4.0, f32::INFINITY] });
        assert_eq!(codes.rows(&[0, 2]).err().map(|e| e.to_string()), Some("code 2 holds inf at position 1: codes must be finite numbers".into()));
        assert!(codes.rows(&[1]).unwrap_err().to_string().contains("code 1 holds NaN at position 1"));
        assert_eq!(codes.rows(&[0]).unwrap(), [0.0, 1.0]);
        assert!(codes.values(&[(0, 1), (1, 1)]).unwrap_err().to_string().contains("code 1 holds NaN"));
    }

    /// `torch.save` files (tests/data/pth/make.py) stay on disk where `torch.load(F, mmap=True)`
    /// could map them: a tensor alone or in a dict, f64 or f32, a row-major view into a larger
    /// storage (rows 1..4 of 5: the storage offset counts). A transposed view and the legacy
    /// format (before PyTorch 1.6) are read whole. Either way, the rows are PyTorch's.
    #[test]
    fn torch_save_codes_are_read_by_rows() {
        let pth = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth").join(f);
        let fc7 = |i: usize, j: usize| (i * 8 + j) as f32 / 10.0 - 1.0;
        for (f, on_disk, first) in [
            ("codes_ids.pt", true, 0),
            ("codes_bare.pt", true, 0),
            ("codes_view.pt", true, 1),
            ("codes_transposed.pt", false, 0),
            ("codes_legacy.pt", false, 0),
        ] {
            let (file, codes) = CodeFile::open_tap_as(&pth(f), "fc7", None).unwrap();
            assert_eq!(matches!(codes, TapCodes::File(_)), on_disk, "{f}");
            assert_eq!(codes.shape(), [3, 8], "{f}");
            let want: Vec<f32> = [2, 0].iter().flat_map(|&i| (0..8).map(move |j| fc7(first + i, j))).collect();
            let got = codes.rows(&[2, 0]).unwrap();
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-6), "{f}: {got:?} vs {want:?}");
            let got = codes.values(&[(1, 3), (2, 7)]).unwrap();
            assert!((got[0] - fc7(first + 1, 3)).abs() < 1e-6 && (got[1] - fc7(first + 2, 7)).abs() < 1e-6, "{f}: {got:?}");
            assert_eq!(file.ids.len(), 3, "{f}");
        }
        let (file, _) = CodeFile::open_tap_as(&pth("codes_ids.pt"), "fc7", None).unwrap();
        assert_eq!(file.ids, ["a.jpg", "sub/b.png", "c.jpg"]);
    }
}
