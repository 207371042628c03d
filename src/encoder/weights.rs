//! Weight import/export in torchvision's state_dict layout.
//!
//! Reads `.pth` (PyTorch zip/pickle, through burn-store's reader) and `.safetensors`; our own
//! checkpoints are safetensors in the same layout plus the encoder spec in the metadata, so
//! they also load in PyTorch. A file that does not fit is rejected with the missing and
//! unexpected keys and the first shape mismatch.
use super::net::{ConvNet, EncoderSpec, Layer};
use crate::tensorfile::{self, Array};
use anyhow::{anyhow, bail, Context, Result};
use burn::module::{Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// File name of the final weights in a `train-encoder` run folder.
pub const RUN_WEIGHTS: &str = "encoder.safetensors";
/// Metadata key holding the spec (JSON) in our checkpoints.
pub const SPEC_KEY: &str = "preimage_encoder_spec";

pub struct StateDict {
    pub tensors: BTreeMap<String, Array>,
    /// Present in our own checkpoints.
    pub spec: Option<EncoderSpec>,
}

/// Read a state_dict from `.pth`/`.pt` or `.safetensors` (format sniffed from the content).
pub fn read_state_dict(path: &Path) -> Result<StateDict> {
    let (mut tensors, spec) = if is_safetensors(path).with_context(|| format!("opening weights {}", path.display()))? {
        let (t, meta) = tensorfile::read(path)?;
        let spec = match meta.get(SPEC_KEY) {
            Some(s) => Some(serde_json::from_str(s).with_context(|| format!("{}: bad {SPEC_KEY} metadata", path.display()))?),
            None => None,
        };
        (t, spec)
    } else {
        (read_pytorch(path, |_| true)?, None)
    };
    if tensors.is_empty() {
        bail!("{} holds no tensors", path.display());
    }
    strip_wrappers(&mut tensors);
    Ok(StateDict { tensors, spec })
}

/// Whether a file is safetensors (a u64 header length, then '{'), sniffed from its content; the
/// alternative is PyTorch's zip ("PK") or legacy pickle (0x80).
pub fn is_safetensors(path: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let mut head = Vec::with_capacity(9);
    std::fs::File::open(path)?.take(9).read_to_end(&mut head)?;
    Ok(head.len() == 9 && head[8] == b'{')
}

/// The name, kind (`float`, `int` or PyTorch's dtype) and shape of every tensor of a file
/// written by `torch.save`, from its pickle alone (the storages are not read).
pub fn pytorch_shapes(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>> {
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| unreadable(path, &e.to_string()))?;
    let mut out: Vec<(String, String, Vec<usize>)> = reader
        .into_tensors()
        .into_iter()
        .map(|(k, snap)| {
            let kind = if snap.dtype.is_float() { "float".to_string() } else if snap.dtype.is_int() || snap.dtype.is_uint() || matches!(snap.dtype, burn::tensor::DType::Bool(_)) { "int".to_string() } else { format!("{:?}", snap.dtype).to_lowercase() };
            // A tensor saved alone is the root, named as a `.npy` file's array.
            (if k.is_empty() { crate::data::npy::UNNAMED.to_string() } else { k }, kind, snap.shape.to_vec())
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The tensors of a file written by `torch.save` (a dict of tensors, nested dicts giving dotted
/// names) whose names `keep` accepts, as f32 (integers too: they are read as their values).
pub fn read_pytorch(path: &Path, mut keep: impl FnMut(&str) -> bool) -> Result<BTreeMap<String, Array>> {
    let reader = burn_store::pytorch::PytorchReader::new(path).map_err(|e| unreadable(path, &e.to_string()))?;
    let mut t = BTreeMap::new();
    for (k, snap) in reader.into_tensors() {
        if !keep(&k) {
            continue;
        }
        let data = snap.to_data().map_err(|e| anyhow!("{}: reading tensor '{k}': {e:?}", path.display()))?;
        let shape = data.shape.to_vec();
        let values = data
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| anyhow!("{}: tensor '{k}' is not numeric: {e:?}", path.display()))?;
        t.insert(k, Array::F32 { shape, data: values });
    }
    Ok(t)
}

/// Why `path` (not safetensors) cannot be read as a `torch.save` file, from the reader's
/// `text` and what the file looks like.
fn unreadable(path: &Path, text: &str) -> anyhow::Error {
    let p = path.display();
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let mut head = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        std::io::Read::read_to_end(&mut std::io::Read::take(f, 2), &mut head).ok();
    }
    if len == 0 {
        return anyhow!("{p} is empty (0 bytes): neither a safetensors nor a PyTorch file");
    }
    // A zip archive whose directory (at its end) is gone: cut short.
    if head == b"PK" && std::fs::File::open(path).ok().is_some_and(|f| zip::ZipArchive::new(std::io::BufReader::new(f)).is_err()) {
        return anyhow!("{p} is a zip archive (PyTorch's format) that ends before its directory: truncated ({len} bytes; an interrupted download or copy?) or damaged");
    }
    // `torch.save(model, F)` pickles the module's Python classes, which only Python can rebuild.
    let hint = if text.contains("full model save") {
        "\nIt looks like a whole module saved with `torch.save(model, F)`; save its weights instead: \
         `torch.save(torch.load(F, weights_only=False).state_dict(), \"weights.pth\")`"
    } else {
        ""
    };
    anyhow!("{p} is neither a safetensors nor a PyTorch file that can be read: {}{hint}", text.replace("..", "."))
}

/// Tensor `name` (`""`: a tensor saved alone) of a file written by `torch.save`, left in the
/// file to be read by rows, as `torch.load(F, mmap=True)` leaves it: `None` where it is not a
/// float tensor laid out row-major in an uncompressed, little-endian zip archive (the legacy
/// formats before PyTorch 1.6, views with other strides), which are read whole instead.
pub fn pytorch_rows(path: &Path, name: &str) -> Result<Option<tensorfile::FileRows>> {
    use burn::tensor::DType;
    use safetensors::Dtype;
    // The legacy formats are not zip archives ("PK"); their reader would load the storages.
    let mut magic = [0u8; 2];
    let zip = std::io::Read::read_exact(&mut std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?, &mut magic).is_ok() && magic == *b"PK";
    let Some(reader) = zip.then(|| burn_store::pytorch::PytorchReader::new(path).ok()).flatten() else { return Ok(None) };
    let Some(snap) = reader.into_tensors().remove(name) else { return Ok(None) };
    let (Some(at), shape) = (snap.storage.clone(), snap.shape.to_vec()) else { return Ok(None) };
    let dtype = match snap.dtype {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::F16 => Dtype::F16,
        DType::BF16 => Dtype::BF16,
        _ => return Ok(None),
    };
    // Row-major: each dimension of more than one element steps over all later ones.
    let row_major = (0..shape.len()).all(|d| shape[d] <= 1 || at.strides.get(d) == Some(&shape[d + 1..].iter().product()));
    if shape.is_empty() || !row_major {
        return Ok(None);
    }
    let open = || std::fs::File::open(path).with_context(|| format!("opening {}", path.display()));
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(open()?)).map_err(|e| anyhow!("{} is not a zip archive: {e}", path.display()))?;
    // Written on a big-endian machine, the storages are big-endian (`<archive>/byteorder`).
    let order = zip.file_names().find(|n| *n == "byteorder" || n.ends_with("/byteorder")).map(str::to_string);
    let big_endian = order.and_then(|n| {
        let mut order = String::new();
        std::io::Read::read_to_string(&mut zip.by_name(&n).ok()?, &mut order).ok()?;
        Some(order.trim() == "big")
    });
    if big_endian == Some(true) {
        return Ok(None);
    }
    let member = zip.by_name(&at.member).map_err(|e| anyhow!("{}: storage '{}' of tensor '{name}': {e}", path.display(), at.member))?;
    let (zip::CompressionMethod::Stored, false, Some(start)) = (member.compression(), member.encrypted(), member.data_start()) else { return Ok(None) };
    let bytes = (at.element_offset as u64 + shape.iter().product::<usize>() as u64) * dtype.size() as u64;
    if bytes > member.size() {
        bail!("{}: tensor '{name}' of shape {shape:?} runs past its storage '{}' ({} bytes, {bytes} needed)", path.display(), at.member, member.size());
    }
    Ok(Some(tensorfile::FileRows::at(path, open()?, start + (at.element_offset * dtype.size()) as u64, dtype, shape)))
}

/// Training checkpoints keep the state_dict beside other entries: PyTorch's ImageNet example
/// saves `{epoch, arch, state_dict, best_acc1, optimizer, scheduler}`, torchvision's reference
/// scripts `{model, model_ema, optimizer, lr_scheduler, epoch, args}`. (Distributed)DataParallel
/// puts `module.` in front of every key, or inside one for a wrapped submodule (the ImageNet
/// example wraps AlexNet's and VGG's `features`: `features.module.0.weight`). Keep the nested
/// state_dict where there is one (optimizer moments and the like are dropped) and drop `module`
/// path segments, which no torchvision key has.
fn strip_wrappers(tensors: &mut BTreeMap<String, Array>) {
    for container in ["state_dict.", "model_state_dict.", "model."] {
        if tensors.keys().any(|k| k.starts_with(container)) {
            let old = std::mem::take(tensors);
            *tensors = old
                .into_iter()
                .filter_map(|(k, v)| k.strip_prefix(container).map(|k| (k.to_string(), v)))
                .collect();
        }
    }
    if tensors.keys().any(|k| k.split('.').any(|s| s == "module")) {
        let old = std::mem::take(tensors);
        *tensors = old
            .into_iter()
            .map(|(k, v)| (k.split('.').filter(|s| *s != "module").collect::<Vec<_>>().join("."), v))
            .collect();
    }
}

/// Adapt a default spec's widths and class count to the shapes found in a state_dict.
pub fn infer_spec(mut spec: EncoderSpec, tensors: &BTreeMap<String, Array>) -> EncoderSpec {
    let mut last_fc_out = None;
    for layer in &mut spec.layers {
        match layer {
            Layer::Conv { out, key, .. } => {
                if let Some(a) = tensors.get(&format!("{key}.weight")) {
                    *out = a.shape()[0];
                }
            }
            Layer::Fc { out, key, from: None, .. } => {
                if let Some(a) = tensors.get(&format!("{key}.weight")) {
                    *out = a.shape()[0];
                    last_fc_out = Some(*out);
                }
            }
            _ => {}
        }
    }
    if let Some(n) = last_fc_out {
        if n != spec.classes.len() {
            spec.classes = super::default_classes(&spec.arch, n);
        }
    }
    spec
}

/// Check a state_dict against the spec and build the network from it.
pub fn build<B: Backend>(spec: &EncoderSpec, mut tensors: BTreeMap<String, Array>, path: &Path, device: &B::Device) -> Result<ConvNet<B>> {
    check(spec, &tensors, path)?;
    // Each array moves into its tensor and the network starts without weights (Burn draws
    // a parameter's initial values only when first read), so memory peaks near the file's
    // size: VGG19's 575 MB took 1.57 GB when a random network was drawn first and every
    // array copied.
    let mut take = |k: &str| -> TensorData {
        let a = tensors.remove(k).expect("checked above");
        let shape = a.shape().to_vec();
        TensorData::new(a.into_f32(), shape)
    };
    let mut net = ConvNet::<B>::uninit(spec, device)?;
    let (mut ci, mut fi) = (0, 0);
    for layer in &spec.layers {
        match layer {
            Layer::Conv { key, bn_key, .. } => {
                let conv = &mut net.convs[ci];
                conv.weight = Param::from_tensor(Tensor::from_data(take(&format!("{key}.weight")), device));
                conv.bias = Some(Param::from_tensor(Tensor::from_data(take(&format!("{key}.bias")), device)));
                if let (Some(b), Some(bn)) = (bn_key, net.norms[ci].as_mut()) {
                    bn.gamma = Param::from_tensor(Tensor::from_data(take(&format!("{b}.weight")), device));
                    bn.beta = Param::from_tensor(Tensor::from_data(take(&format!("{b}.bias")), device));
                    bn.running_mean = RunningState::new(Tensor::from_data(take(&format!("{b}.running_mean")), device));
                    bn.running_var = RunningState::new(Tensor::from_data(take(&format!("{b}.running_var")), device));
                }
                ci += 1;
            }
            Layer::Fc { key, .. } => {
                // A fresh leaf already: fc_weight's layout (the transposed view) without its copy.
                let w: Tensor<B, 2> = Tensor::from_data(take(&format!("{key}.weight")), device);
                net.fcs[fi].weight = Param::from_tensor(w.transpose());
                net.fcs[fi].bias = Some(Param::from_tensor(Tensor::from_data(take(&format!("{key}.bias")), device)));
                fi += 1;
            }
            _ => {}
        }
    }
    Ok(net)
}

/// Whether `tensors` fit `spec`: an error listing the missing and unexpected keys and the
/// first shape mismatch.
pub fn check(spec: &EncoderSpec, tensors: &BTreeMap<String, Array>, path: &Path) -> Result<()> {
    let expected = spec.expected_params()?;
    let expected_keys: HashMap<&str, &Vec<usize>> = expected.iter().map(|(k, s)| (k.as_str(), s)).collect();
    let missing: Vec<&str> = expected.iter().map(|(k, _)| k.as_str()).filter(|k| !tensors.contains_key(*k)).collect();
    let unexpected: Vec<&str> = tensors
        .keys()
        .map(String::as_str)
        .filter(|k| !expected_keys.contains_key(k) && !k.ends_with("num_batches_tracked"))
        .collect();
    let mismatch = expected.iter().find_map(|(k, s)| {
        tensors.get(k).filter(|a| a.shape() != s.as_slice()).map(|a| format!("'{k}': expected {:?}, found {:?}", s, a.shape()))
    });
    if !missing.is_empty() || !unexpected.is_empty() || mismatch.is_some() {
        let mut msg = format!("weights {} do not fit encoder {}", path.display(), spec.arch);
        if !missing.is_empty() {
            msg += &format!("\n  missing keys ({}): {}", missing.len(), missing.join(", "));
        }
        if !unexpected.is_empty() {
            msg += &format!("\n  unexpected keys ({}): {}", unexpected.len(), unexpected.join(", "));
        }
        if let Some(m) = mismatch {
            msg += &format!("\n  first shape mismatch: {m}");
        }
        // Posenet's first fully connected layer's inputs follow the input size (no adaptive
        // pooling, as AlexNet's and VGG's have): a width that differs there is most often
        // another --input-size.
        let first_fc = spec.layers.iter().find_map(|l| if let Layer::Fc { key, .. } = l { Some(format!("{key}.weight")) } else { None }).filter(|_| spec.arch == "posenet");
        if let Some((s, a)) = first_fc.and_then(|k| expected.iter().find(|(e, _)| *e == k).map(|(_, s)| s).zip(tensors.get(&k))) {
            if a.shape().len() == 2 && s.len() == 2 && a.shape()[0] == s[0] && a.shape()[1] != s[1] {
                msg += &format!(
                    "\n  (the first fully connected layer takes {} inputs at input {}×{}: these weights were likely made at another input size; pass theirs with --input-size)",
                    s[1], spec.input_size[0], spec.input_size[1]
                );
            }
        }
        bail!(msg);
    }
    Ok(())
}

/// The torchvision network whose state_dict `tensors` is, told by its convolutions (AlexNet 5,
/// VGG 8/10/13/16, BatchNorm for `_bn`) and confirmed by checking every key and shape.
pub fn torchvision_arch(tensors: &BTreeMap<String, Array>, path: &Path) -> Option<EncoderSpec> {
    torchvision_arch_checked(tensors, path).ok()
}

/// [`torchvision_arch`], or why not: the network the convolutions point to and what of its
/// state_dict does not fit (missing and unexpected keys, the first shape mismatch), or that
/// they point to none.
pub fn torchvision_arch_checked(tensors: &BTreeMap<String, Array>, path: &Path) -> Result<EncoderSpec> {
    let convs = tensors.iter().filter(|(k, a)| k.starts_with("features.") && k.ends_with(".weight") && a.shape().len() == 4).count();
    let bn = tensors.keys().any(|k| k.ends_with(".running_mean"));
    let arch = match (convs, bn) {
        (5, false) => "alexnet".to_string(),
        (8 | 10 | 13 | 16, _) => format!("vgg{}{}", convs + 3, if bn { "_bn" } else { "" }),
        _ => bail!(
            "{} is not AlexNet or VGG in torchvision's layout ({convs} conv weights under `features.`; AlexNet has 5, VGG 8, 10, 13 or 16)",
            path.display()
        ),
    };
    let spec = infer_spec(super::default_spec(&arch, 1000, None)?, tensors);
    check(&spec, tensors, path).with_context(|| format!("{} looks like torchvision's {arch} but does not load as it", path.display()))?;
    Ok(spec)
}

/// The network's state_dict in PyTorch layout.
pub fn state_dict<B: Backend>(net: &ConvNet<B>) -> Vec<(String, Array)> {
    fn arr<B: Backend, const D: usize>(t: Tensor<B, D>) -> Array {
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor");
        Array::F32 { shape, data }
    }
    let mut out = Vec::new();
    let (mut ci, mut fi) = (0, 0);
    for layer in &net.spec.layers {
        match layer {
            Layer::Conv { key, bn_key, .. } => {
                let conv = &net.convs[ci];
                out.push((format!("{key}.weight"), arr(conv.weight.val())));
                if let Some(b) = &conv.bias {
                    out.push((format!("{key}.bias"), arr(b.val())));
                }
                if let (Some(k), Some(bn)) = (bn_key, &net.norms[ci]) {
                    out.push((format!("{k}.weight"), arr(bn.gamma.val())));
                    out.push((format!("{k}.bias"), arr(bn.beta.val())));
                    out.push((format!("{k}.running_mean"), arr(bn.running_mean.value_sync())));
                    out.push((format!("{k}.running_var"), arr(bn.running_var.value_sync())));
                }
                ci += 1;
            }
            Layer::Fc { key, .. } => {
                let fc = &net.fcs[fi];
                out.push((format!("{key}.weight"), arr(fc.weight.val().transpose())));
                if let Some(b) = &fc.bias {
                    out.push((format!("{key}.bias"), arr(b.val())));
                }
                fi += 1;
            }
            _ => {}
        }
    }
    out
}

/// Save the network as safetensors (PyTorch layout) with its spec, atomically.
pub fn save<B: Backend>(net: &ConvNet<B>, path: &Path) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert(SPEC_KEY.to_string(), serde_json::to_string(&net.spec)?);
    meta.insert("format".to_string(), "pt".to_string());
    tensorfile::write(path, &state_dict(net), &meta)
}
