//! Code extraction: run a frozen encoder over an image folder (or image files) and save the codes at taps.
use crate::data::batch;
use crate::data::codes::{CodeFile, Preprocessing, Provenance};
use crate::data::folder::ImageFolder;
use crate::encoder::Loaded;
use crate::tensorfile::{Array, RowWriter};
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use std::collections::BTreeMap;
use std::path::Path;

/// Encode every readable image of `folder` at `taps`, in record order, into a code file in
/// memory.
pub fn extract<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], batch_size: usize, device: &B::Device) -> Result<CodeFile> {
    let mut data: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut file = encode_folder(enc, folder, taps, batch_size, device, |tap, shape, values| {
        data.entry(tap.to_string()).or_insert_with(|| (shape.to_vec(), Vec::new())).1.extend_from_slice(values);
        Ok(())
    })?;
    let n = file.len();
    file.codes = data
        .into_iter()
        .map(|(tap, (shape, values))| {
            let mut full = vec![n];
            full.extend(shape);
            (tap, Array::F32 { shape: full, data: values })
        })
        .collect();
    Ok(file)
}

/// [`extract`] straight into the code file `out` (safetensors, or NumPy's `.npz` when it ends so),
/// batch by batch: memory stays that of a batch
/// however many images there are (conv1 codes of AlexNet are 0.8 MB an image). The codes wait in
/// part files beside `out` until the last batch, so the folder needs twice their size for a
/// moment; `out` is replaced only once complete. Returns the number of images encoded.
pub fn extract_to_file<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], batch_size: usize, device: &B::Device, out: &Path) -> Result<usize> {
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        bail!("{}: a .npy file holds one array; write a .npz (NumPy's np.load gives every tap, the labels and ids) or a .safetensors", out.display());
    }
    let mut writer = RowWriter::new(out);
    let file = encode_folder(enc, folder, taps, batch_size, device, |tap, shape, values| writer.append(tap, shape, values))?;
    let (extra, meta) = file.labels_poses_and_metadata()?;
    writer.finish(&extra, &meta)?;
    Ok(file.len())
}

/// The one encoding loop: hands each batch's codes to `sink` (tap, shape of one code, values of
/// the batch) and returns the code file without codes (ids, labels, poses, provenance).
fn encode_folder<B: Backend>(
    enc: &Loaded<B>,
    folder: &ImageFolder,
    taps: &[String],
    batch_size: usize,
    device: &B::Device,
    mut sink: impl FnMut(&str, &[usize], &[f32]) -> Result<()>,
) -> Result<CodeFile> {
    let spec = &enc.net.spec;
    for t in taps {
        spec.check_tap(t)?;
    }
    if taps.is_empty() {
        bail!("no tap given; valid taps: {}", spec.taps().join(", "));
    }
    let pre = batch::preprocess_for(spec);
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let mut kept = Vec::new();
    let all: Vec<usize> = (0..folder.len()).collect();
    let batches: Vec<&[usize]> = all.chunks(batch_size.max(1)).collect();
    let bar = crate::util::progress(folder.len() as u64, "extract");
    let decode = |k: usize| (batches[k].len(), batch::decode(folder, batches[k], &pre, None));
    batch::prefetched(batches.len(), decode, |loaded| -> Result<()> {
        for (count, b) in loaded {
            bar.inc(count as u64);
            let Some(b) = b else { continue };
            let b = b.to_device::<B>(device);
            let acts = enc.net.encode(b.images, &tap_refs, false)?;
            for (tap, act) in acts {
                let shape = act.item_shape();
                let values = act.flat().into_data().convert::<f32>().to_vec::<f32>().expect("float codes");
                sink(&tap, &shape, &values)?;
            }
            kept.extend(b.indices);
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    if kept.is_empty() {
        bail!("no readable image in {}", folder.root.display());
    }
    // Class folders' labels index `label_classes`; a list's class numbers index the encoder's.
    let labelled = !folder.classes.is_empty() || kept.iter().any(|&i| folder.records[i].label.is_some());
    let labels = labelled.then(|| kept.iter().map(|&i| folder.records[i].label.map_or(-1, |l| l as i64)).collect());
    let poses = kept
        .iter()
        .any(|&i| folder.records[i].pose.is_some())
        .then(|| kept.iter().map(|&i| folder.records[i].pose.unwrap_or([f32::NAN, f32::NAN])).collect());
    Ok(CodeFile {
        codes: BTreeMap::new(),
        labels,
        poses,
        ids: kept.iter().map(|&i| folder.records[i].rel_path.clone()).collect(),
        provenance: Some(Provenance {
            encoder: spec.arch.clone(),
            weights_sha256: enc.weights_sha256.clone(),
            input_size: spec.input_size,
            preprocessing: Preprocessing::of(spec),
            // Class names come from the encoder (its logits), not from the folder.
            classes: spec.classes.clone(),
            label_classes: (!folder.classes.is_empty()).then(|| folder.classes.clone()),
            spec: serde_json::to_string(spec)?,
            data_root: Some(absolute(&folder.root)),
            weights_path: enc.weights_path.as_deref().map(absolute),
        }),
    })
}

/// `p` made absolute (canonical when it exists), as recorded in metadata.
pub fn absolute(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}
