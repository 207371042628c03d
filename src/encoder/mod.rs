//! Frozen encoders with named taps: posenet (ours), AlexNet and VGG (torchvision layout).
//!
//! All share one module ([`net::ConvNet`]) driven by an [`net::EncoderSpec`]; the spec is
//! built from the architecture name, and widths/class count are read from the weight file
//! when one is given, so reduced-width torchvision networks load without extra flags.
pub mod alexnet;
pub mod net;
pub mod posenet;
pub mod vgg;
pub mod weights;

use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use std::path::{Path, PathBuf};

pub use net::{Act, ConvNet, EncoderSpec, Layer, Resize};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Names accepted by `--encoder`.
pub const ARCHS: &[&str] = &[
    "posenet", "alexnet", "vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn",
];

/// torchvision's evaluation transform resizes to 256 before a 224 crop; keep that ratio.
pub fn torchvision_resize(input: usize) -> Resize {
    Resize::Short((input as f64 * 256.0 / 224.0).round() as usize)
}

/// Generic class names when a weight file carries none.
pub fn numbered_classes(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class_{i}")).collect()
}

/// ImageNet-1k's class names in torchvision's order and spelling (its
/// `weights.meta["categories"]`), one per line.
const IMAGENET_CLASSES: &str = include_str!("imagenet_classes.txt");

/// Class names of `arch` with `n` outputs when the weight file carries none: a torchvision
/// network with 1000 outputs has ImageNet's classes (its weights are ImageNet's), any other
/// network numbered ones.
pub fn default_classes(arch: &str, n: usize) -> Vec<String> {
    if arch != "posenet" && n == 1000 {
        IMAGENET_CLASSES.lines().map(str::to_string).collect()
    } else {
        numbered_classes(n)
    }
}

/// The spec for an architecture name at default widths (torchvision's for AlexNet/VGG).
pub fn default_spec(arch: &str, num_classes: usize, input: Option<usize>) -> Result<EncoderSpec> {
    let classes = default_classes(arch, num_classes);
    if arch == "posenet" {
        let mut cfg = posenet::PoseNetConfig::default();
        if let Some(s) = input {
            cfg.input_size = s;
        }
        return Ok(posenet::spec(&cfg, classes));
    }
    if arch == "alexnet" {
        return Ok(alexnet::spec(alexnet::DEFAULT_CONV, alexnet::DEFAULT_FC, classes, input.unwrap_or(224)));
    }
    if let Some(rest) = arch.strip_prefix("vgg") {
        let (depth, bn) = match rest.strip_suffix("_bn") {
            Some(d) => (d, true),
            None => (rest, false),
        };
        if let Ok(depth) = depth.parse::<usize>() {
            return vgg::spec(depth, bn, vgg::DEFAULT_CONV, vgg::DEFAULT_FC, classes, input.unwrap_or(224));
        }
    }
    bail!("unknown encoder '{arch}'; valid encoders: {}", ARCHS.join(", "))
}

/// Where an encoder's weights come from.
#[derive(Clone, Debug)]
pub enum WeightSource {
    /// A torchvision state_dict (.pth/.safetensors) or one of our encoder checkpoints.
    File(PathBuf),
    /// A `train-encoder` run folder (its final `encoder.safetensors`).
    Run(PathBuf),
    /// Random weights drawn from a seed (benchmarks, tests).
    Random(u64),
}

impl WeightSource {
    pub fn from_args(weights: Option<&Path>, run: Option<&Path>, seed: u64) -> Result<Self> {
        Ok(match (weights, run) {
            (Some(_), Some(_)) => bail!("give either --weights or --run, not both"),
            (Some(w), None) => WeightSource::File(w.to_path_buf()),
            (None, Some(r)) => WeightSource::Run(r.to_path_buf()),
            (None, None) => WeightSource::Random(seed),
        })
    }

    /// `--weights FILE` or `--run DIR` where one is given, else `None` (the caller's default:
    /// the weights a code file or decoder records, or random ones).
    pub fn given(weights: Option<&Path>, run: Option<&Path>) -> Result<Option<Self>> {
        (weights.is_some() || run.is_some()).then(|| Self::from_args(weights, run, 0)).transpose()
    }

    /// The weights a code file or decoder records: the file where it still exists, or the
    /// seed of random weights (`sha256` "random:N" redraws them); `None` when neither is known.
    pub fn recorded(weights_path: Option<&str>, sha256: &str) -> Option<Self> {
        match (weights_path, sha256.strip_prefix("random:").and_then(|n| n.parse::<u64>().ok())) {
            (Some(p), _) if Path::new(p).exists() => Some(WeightSource::File(p.into())),
            (None, Some(seed)) => Some(WeightSource::Random(seed)),
            _ => None,
        }
    }
}

/// A loaded encoder and where its weights came from.
pub struct Loaded<B: Backend> {
    pub net: ConvNet<B>,
    /// SHA-256 of the weight file (`"random:<seed>"` for random weights).
    pub weights_sha256: String,
    pub weights_path: Option<PathBuf>,
}

/// What the network is fed, where not its own: the input `[height, width]` and the resize
/// before the centre crop (`--input-size`, `--resize`). `Some(s)` / `None` convert to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Input {
    pub size: Option<[usize; 2]>,
    pub resize: Option<Resize>,
}

impl From<Option<usize>> for Input {
    fn from(size: Option<usize>) -> Self {
        Input { size: size.map(|s| [s, s]), resize: None }
    }
}

impl Input {
    pub fn is_default(&self) -> bool {
        *self == Input::default()
    }
}

/// `--input-size`: `224`, or `HxW` (`240x320`) for networks whose adaptive pooling takes any
/// size (torchvision's).
pub fn parse_input_size(s: &str) -> std::result::Result<[usize; 2], String> {
    let hw = match s.parse::<Resize>() {
        Ok(Resize::Short(v)) => [v, v],
        Ok(Resize::Exact(hw)) => hw,
        Err(_) => return Err(format!("'{s}' is not an input size: give the side (224) or height x width (240x320), positive whole pixels")),
    };
    // Beyond it one image's first activations alone outgrow memory (it had aborted).
    if hw.iter().any(|&v| v > MAX_INPUT_SIDE) {
        return Err(format!("'{s}': an input side is at most {MAX_INPUT_SIDE} pixels"));
    }
    Ok(hw)
}

/// Largest `--input-size` side.
pub const MAX_INPUT_SIDE: usize = 4096;

/// Build `arch` and load its weights. `input` overrides the input size (the resize following
/// its shorter side in proportion) and the resize.
pub fn load<B: Backend>(arch: &str, source: &WeightSource, input: impl Into<Input>, device: &B::Device) -> Result<Loaded<B>> {
    let input = input.into();
    let mut loaded = load_sized(arch, source, input.size.map(|[h, w]| h.min(w)), device)?;
    if let Some([h, w]) = input.size.filter(|[h, w]| h != w) {
        loaded.net.spec.set_input_size([h, w])?;
    }
    if let Some(r) = input.resize {
        loaded.net.spec.resize = r;
    }
    Ok(loaded)
}

/// The encoder for the codes in `codes`: with weights `given`, those; without, the encoder the
/// file records (its weights file where it still exists, or its random seed; `arch` may be
/// [`AUTO`]), fed as its images were (unless `input` says otherwise), as `train-decoder
/// --codes` takes it; for a file written elsewhere, or no file, random weights from `seed`.
pub fn load_for_codes<B: Backend>(arch: &str, given: Option<WeightSource>, seed: u64, input: Input, codes: Option<&Path>, device: &B::Device) -> Result<Loaded<B>> {
    let recorded = match (&given, codes) {
        (None, Some(path)) => crate::data::codes::CodeFile::read_provenance(path)?.map(|pv| (path, pv)),
        _ => None,
    };
    let Some((path, pv)) = recorded else { return load(arch, &given.unwrap_or(WeightSource::Random(seed)), input, device) };
    let Some(source) = WeightSource::recorded(pv.weights_path.as_deref(), &pv.weights_sha256) else {
        bail!("the weights {} came from ({}) are not where it says; pass them with --weights FILE", path.display(), pv.weights_path.as_deref().unwrap_or("unknown"));
    };
    let arch = if arch == AUTO { pv.encoder.as_str() } else { arch };
    let input = Input { size: input.size.or(Some(pv.input_size)), resize: input.resize.or(Some(pv.preprocessing.resize)) };
    load(arch, &source, input, device)
}

/// `--encoder auto`: the network a weights file holds (our checkpoint's, or the torchvision
/// network its keys and shapes fit).
pub const AUTO: &str = "auto";

fn load_sized<B: Backend>(arch: &str, source: &WeightSource, input: Option<usize>, device: &B::Device) -> Result<Loaded<B>> {
    match source {
        WeightSource::Random(_) if arch == AUTO => {
            bail!("which network? random weights need --encoder (one of {}); `auto` takes it from --weights or --run", ARCHS.join(", "))
        }
        WeightSource::Random(seed) => {
            let spec = default_spec(arch, if arch == "posenet" { 10 } else { 1000 }, input)?;
            Ok(Loaded { net: ConvNet::init(&spec, *seed, device)?, weights_sha256: format!("random:{seed}"), weights_path: None })
        }
        WeightSource::File(path) => load_file(arch, path, input, device),
        WeightSource::Run(dir) => {
            let path = dir.join(weights::RUN_WEIGHTS);
            if !path.exists() {
                bail!("run folder {} has no {} (train it with `preimage train-encoder --out {}`)", dir.display(), weights::RUN_WEIGHTS, dir.display());
            }
            load_file(arch, &path, input, device)
        }
    }
}

fn load_file<B: Backend>(arch: &str, path: &Path, input: Option<usize>, device: &B::Device) -> Result<Loaded<B>> {
    let state = weights::read_state_dict(path)?;
    let detected;
    let arch = match (arch, &state.spec) {
        (AUTO, Some(spec)) => spec.arch.as_str(),
        (AUTO, None) => {
            detected = weights::torchvision_arch_checked(&state.tensors, path)
                .with_context(|| format!("cannot tell which network {} holds: pass --encoder", path.display()))?
                .arch;
            detected.as_str()
        }
        (arch, _) => arch,
    };
    let spec = match &state.spec {
        // Our own checkpoints carry their spec.
        Some(spec) => {
            if spec.arch != arch {
                bail!("{} holds a '{}' encoder, not '{arch}'", path.display(), spec.arch);
            }
            let mut spec = spec.clone();
            if let Some(s) = input {
                spec.input_size = [s, s];
                spec.resize = if arch == "posenet" { Resize::Short(s) } else { torchvision_resize(s) };
            }
            spec
        }
        None => weights::infer_spec(default_spec(arch, 1000, input)?, &state.tensors),
    };
    if let Err(e) = weights::check(&spec, &state.tensors, path) {
        // Another torchvision network's weights (vgg19's given as vgg16): say which.
        return Err(match weights::torchvision_arch(&state.tensors, path) {
            Some(other) if other.arch != arch => anyhow::anyhow!("{e:#}\n  the file holds {}'s weights: use --encoder {}", other.arch, other.arch),
            _ => e,
        });
    }
    let net = weights::build(&spec, state.tensors, path, device)?;
    Ok(Loaded { net, weights_sha256: crate::util::sha256_file(path)?, weights_path: Some(path.to_path_buf()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_are_a_side_or_height_x_width_within_bounds() {
        assert_eq!(parse_input_size("224"), Ok([224, 224]));
        assert_eq!(parse_input_size("240x320"), Ok([240, 320]));
        assert!(parse_input_size("240x").unwrap_err().contains("not an input size"));
        assert!(parse_input_size("100000").unwrap_err().contains("at most 4096 pixels"));
        assert!(parse_input_size("64x5000").unwrap_err().contains("at most 4096"));
    }
}
