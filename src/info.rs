//! `preimage info PATH`: what a code file, a decoder or encoder run, or a weights file holds,
//! as `safetensors`' or `torch.load`'s keys would tell a PyTorch user, without loading more than
//! needed: headers alone, whatever the file's size (safetensors' header, NumPy's array headers,
//! torch.save's pickle), and which code arrays commands read by rows or whole.
use crate::decoder::{self, DecoderInfo};
use crate::encoder::weights::{self, is_safetensors};
use crate::encoder::EncoderSpec;
use crate::tensorfile;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::Path;

/// A description of `path`, one fact per line; a code file's stopped extraction (`extract
/// --resume` goes on with it) is described too, also before the file exists.
pub fn describe(path: &Path) -> Result<String> {
    let stopped = crate::extract::stopped(path)?;
    match stopped {
        Some(s) if !path.exists() => Ok(s),
        Some(s) => Ok(describe_path(path)? + &s),
        None => describe_path(path),
    }
}

fn describe_path(path: &Path) -> Result<String> {
    if path.is_dir() {
        if path.join(decoder::INFO_FILE).is_file() {
            return decoder_run(path);
        }
        if path.join(weights::RUN_WEIGHTS).is_file() {
            return encoder_run(path);
        }
        bail!("{} is neither a decoder run (no {}) nor an encoder run (no {})", path.display(), decoder::INFO_FILE, weights::RUN_WEIGHTS);
    }
    if !path.is_file() {
        bail!("{} does not exist", path.display());
    }
    let shapes: Vec<(String, String, Vec<usize>)>;
    let meta: HashMap<String, String>;
    if is_safetensors(path).with_context(|| format!("reading {}", path.display()))? {
        let (t, m) = tensorfile::read_header(path)?;
        shapes = t.into_iter().map(|(n, d, s)| (n, format!("{d:?}").to_lowercase(), s)).collect();
        meta = m;
    } else {
        // NumPy's and torch.save's files: the arrays' headers and the ids, not the data.
        use crate::data::npy;
        shapes = if npy::is_npy(path)? || npy::is_npz(path)? { npy::shapes(path)? } else { weights::pytorch_shapes(path)? };
        meta = crate::data::codes::read_tensors(path, |_| false)?.1;
    }
    let mut out = String::new();
    if let Some(text) = meta.get("decoder") {
        let info: DecoderInfo = serde_json::from_str(text).with_context(|| format!("{}: metadata 'decoder' is damaged", path.display()))?;
        writeln!(out, "{}: decoder weights ({} tensors, {} values)", path.display(), shapes.len(), params(&shapes))?;
        out += &decoder_lines(&info);
        return Ok(out);
    }
    if let Some(text) = meta.get(weights::SPEC_KEY) {
        let spec: EncoderSpec = serde_json::from_str(text).with_context(|| format!("{}: metadata '{}' is damaged", path.display(), weights::SPEC_KEY))?;
        writeln!(out, "{}: {} encoder weights ({} tensors, {} values)", path.display(), spec.arch, shapes.len(), params(&shapes))?;
        out += &spec_lines(&spec);
        return Ok(out);
    }
    let rows: Vec<usize> = shapes.iter().filter_map(|(_, _, s)| s.first().copied()).collect();
    let same_rows = !rows.is_empty() && rows.len() == shapes.len() && rows.iter().all(|&r| r == rows[0]);
    if meta.contains_key("encoder") || (same_rows && shapes.len() <= 64) {
        let ours = meta.contains_key("encoder");
        let n = rows.first().copied().unwrap_or(0);
        writeln!(out, "{}: code file{}, {n} rows", path.display(), if ours { " from `preimage extract`" } else { " written elsewhere" })?;
        let named: Vec<(&str, &[usize])> = shapes.iter().map(|(k, _, s)| (k.as_str(), s.as_slice())).collect();
        let pose = crate::data::codes::pose_tensor(&named);
        let taps: Vec<String> = shapes
            .iter()
            .filter(|(k, _, _)| k != "label" && Some(k.as_str()) != pose)
            .map(|(k, d, s)| {
                let unnamed = if k == crate::data::npy::UNNAMED { ", unnamed: read as the codes of the tap asked for" } else { "" };
                // Whether commands read its rows as needed or the whole array (CodeFile::open_tap_as).
                let by_rows = crate::data::codes::file_rows(path, k).ok().flatten().is_some();
                format!("{k} {:?} ({d}{}){unnamed}", &s[1..], if by_rows { "" } else { ", read whole" })
            })
            .collect();
        writeln!(out, "  taps: {}", taps.join(", "))?;
        let label_classes: Option<Vec<String>> = meta.get("label_classes").and_then(|t| serde_json::from_str(t).ok());
        if shapes.iter().any(|(k, _, _)| k == "label") {
            let names = label_classes.map(|c| format!(" indexing {} classes: {}", c.len(), preview(&c, 8))).unwrap_or_default();
            writeln!(out, "  label: yes{names}")?;
        }
        if pose.is_some() {
            writeln!(out, "  pose: azimuth, elevation in degrees")?;
        }
        let ids: Option<Vec<String>> = meta.get("ids").and_then(|t| serde_json::from_str(t).ok());
        match &ids {
            Some(ids) => writeln!(out, "  ids: {}", preview(ids, 3))?,
            None => writeln!(out, "  ids: none (rows are named 000000, 000001, …)")?,
        }
        if ours {
            let field = |k: &str| meta.get(k).map(String::as_str).unwrap_or("?");
            let weights = meta.get("weights_path").map(|p| format!("{p}, ")).unwrap_or_default();
            writeln!(out, "  encoder: {} ({weights}sha256 {}), input {}", field("encoder"), short_sha(field("weights_sha256")), field("input_size"))?;
            if let Some(root) = meta.get("data_root") {
                writeln!(out, "  images: {root}")?;
            }
        } else {
            writeln!(out, "  provenance: unknown (no encoder in the metadata): decoders check only the code shape")?;
        }
        return Ok(out);
    }
    writeln!(out, "{}: {} tensors, {} values", path.display(), shapes.len(), params(&shapes))?;
    match torchvision_arch(path) {
        Ok((arch, spec)) => writeln!(
            out,
            "  loads as: {arch} in torchvision's layout, {} classes (`--encoder {arch} --weights {}`; `preimage taps` lists its taps)",
            spec.classes.len(),
            path.display()
        )?,
        Err(e) => {
            // Why not, indented (for a near miss: the missing keys or the shape that differs).
            let why = format!("{e:#}").replace('\n', "\n    ");
            writeln!(out, "  loads as: none of our encoders ({}): {why}", crate::encoder::ARCHS.join(", "))?
        }
    }
    // Numeric parts in numeric order (features.2 before features.10).
    let mut sorted: Vec<&(String, String, Vec<usize>)> = shapes.iter().collect();
    sorted.sort_by_cached_key(|(k, _, _)| k.split('.').map(|p| p.parse::<u64>().map_or_else(|_| (1, 0, p.to_string()), |n| (0, n, String::new()))).collect::<Vec<_>>());
    for (k, d, s) in sorted.iter().take(24) {
        writeln!(out, "  {k} {s:?} ({d})")?;
    }
    if sorted.len() > 24 {
        writeln!(out, "  … ({} more)", sorted.len() - 24)?;
    }
    Ok(out)
}

/// The torchvision network whose state_dict `path` holds, and its spec.
fn torchvision_arch(path: &Path) -> Result<(String, EncoderSpec)> {
    let state = weights::read_state_dict(path)?;
    weights::torchvision_arch_checked(&state.tensors, path).map(|spec| (spec.arch.clone(), spec))
}

fn decoder_run(dir: &Path) -> Result<String> {
    let info = decoder::read_info(dir)?;
    let mut out = format!("{}: decoder run\n", dir.display());
    out += &decoder_lines(&info);
    if let Ok(text) = std::fs::read_to_string(dir.join("provenance.json")) {
        if let Ok(p) = serde_json::from_str::<serde_json::Value>(&text) {
            for key in ["codes", "images", "val_images"] {
                match &p[key] {
                    serde_json::Value::String(s) => writeln!(out, "  {key}: {s}")?,
                    serde_json::Value::Object(o) => writeln!(out, "  {key}: {} images below {}", o.get("ids").and_then(|i| i.as_array()).map_or(0, Vec::len), o.get("root").and_then(|r| r.as_str()).unwrap_or("?"))?,
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}

fn decoder_lines(info: &DecoderInfo) -> String {
    format!(
        "  inverts: {} {} codes {:?} → {}×{} images\n  encoder weights: {}sha256 {}\n  best epoch: {} (validation loss {:.5})\n",
        info.encoder,
        info.tap,
        info.code_shape,
        info.image_size[0],
        info.image_size[1],
        info.weights_path.as_ref().map(|p| format!("{p}, ")).unwrap_or_default(),
        short_sha(&info.weights_sha256),
        info.epoch,
        info.val_loss
    )
}

fn encoder_run(dir: &Path) -> Result<String> {
    let path = dir.join(weights::RUN_WEIGHTS);
    let (shapes, meta) = tensorfile::read_header(&path)?;
    let spec: EncoderSpec = serde_json::from_str(meta.get(weights::SPEC_KEY).with_context(|| format!("{} has no encoder spec in its metadata", path.display()))?)
        .with_context(|| format!("{}: metadata '{}' is damaged", path.display(), weights::SPEC_KEY))?;
    let shapes: Vec<(String, String, Vec<usize>)> = shapes.into_iter().map(|(n, d, s)| (n, format!("{d:?}"), s)).collect();
    let mut out = format!("{}: {} encoder run ({} values)\n", dir.display(), spec.arch, params(&shapes));
    out += &spec_lines(&spec);
    if let Ok(text) = std::fs::read_to_string(dir.join("metrics.json")) {
        if let Ok(epochs) = serde_json::from_str::<Vec<serde_json::Value>>(&text) {
            if let Some(best) = epochs.iter().min_by(|a, b| a["loss"].as_f64().unwrap_or(f64::MAX).total_cmp(&b["loss"].as_f64().unwrap_or(f64::MAX))) {
                writeln!(out, "  best epoch: {} of {} (validation loss {:.4}, accuracy {:.1} %)", best["epoch"], epochs.len(), best["loss"].as_f64().unwrap_or(f64::NAN), 100.0 * best["accuracy"].as_f64().unwrap_or(f64::NAN))?;
            }
        }
    }
    Ok(out)
}

fn spec_lines(spec: &EncoderSpec) -> String {
    format!(
        "  input: {}×{} (resize {}, mean {:?}, std {:?})\n  classes: {} ({})\n  taps: {}\n",
        spec.input_size[0],
        spec.input_size[1],
        spec.resize,
        spec.mean,
        spec.std,
        spec.classes.len(),
        preview(&spec.classes, 8),
        spec.taps().join(", ")
    )
}

fn params(shapes: &[(String, String, Vec<usize>)]) -> String {
    shapes.iter().map(|(_, _, s)| s.iter().product::<usize>()).sum::<usize>().to_string()
}

fn short_sha(sha: &str) -> String {
    if sha.len() == 64 { format!("{}…", &sha[..12]) } else { sha.to_string() }
}

/// The first `n` items, then how many more.
fn preview(items: &[String], n: usize) -> String {
    let mut s = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        write!(s, ", … ({} more)", items.len() - n).unwrap();
    }
    s
}
