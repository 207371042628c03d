//! Code extraction: run a frozen encoder over an image folder and save the codes at taps.
use crate::data::batch;
use crate::data::codes::{CodeFile, Preprocessing, Provenance};
use crate::data::folder::ImageFolder;
use crate::encoder::Loaded;
use crate::tensorfile::Array;
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use std::collections::BTreeMap;

/// Encode every readable image of `folder` at `taps`, in record order.
pub fn extract<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], batch_size: usize, device: &B::Device) -> Result<CodeFile> {
    let spec = &enc.net.spec;
    for t in taps {
        spec.check_tap(t)?;
    }
    if taps.is_empty() {
        bail!("no tap given; valid taps: {}", spec.taps().join(", "));
    }
    let pre = batch::preprocess_for(spec);
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let mut data: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut kept = Vec::new();
    let all: Vec<usize> = (0..folder.len()).collect();
    let bar = crate::util::progress(folder.len() as u64, "extract");
    for chunk in all.chunks(batch_size.max(1)) {
        bar.inc(chunk.len() as u64);
        let Some(b) = batch::load::<B>(folder, chunk, &pre, None, device) else { continue };
        let acts = enc.net.encode(b.images, &tap_refs, false)?;
        for (tap, act) in acts {
            let shape = act.item_shape();
            let values = act.flat().into_data().convert::<f32>().to_vec::<f32>().expect("float codes");
            let entry = data.entry(tap).or_insert_with(|| (shape, Vec::new()));
            entry.1.extend(values);
        }
        kept.extend(b.indices);
    }
    bar.finish_and_clear();
    if kept.is_empty() {
        bail!("no readable image in {}", folder.root.display());
    }
    let n = kept.len();
    let codes = data
        .into_iter()
        .map(|(tap, (shape, values))| {
            let mut full = vec![n];
            full.extend(shape);
            (tap, Array::F32 { shape: full, data: values })
        })
        .collect();
    let labels = (!folder.classes.is_empty()).then(|| kept.iter().map(|&i| folder.records[i].label.map_or(-1, |l| l as i64)).collect());
    let poses = kept
        .iter()
        .any(|&i| folder.records[i].pose.is_some())
        .then(|| kept.iter().map(|&i| folder.records[i].pose.unwrap_or([f32::NAN, f32::NAN])).collect());
    Ok(CodeFile {
        codes,
        labels,
        poses,
        ids: kept.iter().map(|&i| folder.records[i].rel_path.clone()).collect(),
        provenance: Provenance {
            encoder: spec.arch.clone(),
            weights_sha256: enc.weights_sha256.clone(),
            input_size: spec.input_size,
            preprocessing: Preprocessing::of(spec),
            // Class names come from the encoder (its logits), not from the folder.
            classes: spec.classes.clone(),
            spec: serde_json::to_string(spec)?,
            data_root: Some(absolute(&folder.root)),
            weights_path: enc.weights_path.as_deref().map(absolute),
        },
    })
}

/// `p` made absolute (canonical when it exists), as recorded in metadata.
pub fn absolute(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}
