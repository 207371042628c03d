//! One sequential CNN module that serves every encoder (posenet, AlexNet, VGG): a plan of
//! layers, each optionally exposing a named tap. Keeping one module means one forward pass,
//! one weight loader and one tap mechanism for all architectures.
use anyhow::{bail, Result};
use burn::module::{Module, ModuleMapper, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2dConfig, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, softmax};
use burn::tensor::module::conv2d;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::rng::Rng;

/// One step of an encoder's plan. `key` is the state_dict prefix (torchvision layout),
/// `tap` the Caffe-style name under which the step's output can be read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Layer {
    /// Convolution, optional BatchNorm, then ReLU.
    Conv { out: usize, kernel: usize, stride: usize, pad: usize, key: String, bn_key: Option<String>, tap: String },
    MaxPool { kernel: usize, stride: usize, pad: usize, tap: Option<String> },
    /// torchvision's AdaptiveAvgPool2d before the classifier (identity at the native size).
    AdaptiveAvg { size: usize },
    Flatten,
    /// Fully connected layer reading the previous output or, for side heads, the tap `from`.
    Fc { out: usize, relu: bool, key: String, tap: String, from: Option<String> },
    Softmax { tap: String },
}

impl Layer {
    pub fn tap(&self) -> Option<&str> {
        match self {
            Layer::Conv { tap, .. } | Layer::Fc { tap, .. } | Layer::Softmax { tap } => Some(tap),
            Layer::MaxPool { tap, .. } => tap.as_deref(),
            _ => None,
        }
    }
}

/// How an image is resized before the centre crop to the network's input.
///
/// In JSON (spec, code files) a number is [`Resize::Short`], `[h, w]` [`Resize::Exact`], as
/// torchvision's `Resize(256)` and `Resize((256, 256))` take them; on the command line `256`
/// and `256x256`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Resize {
    /// The shorter side to this many pixels, the aspect kept (torchvision's `Resize(S)`).
    Short(usize),
    /// Exactly `[height, width]`, the aspect not kept (torchvision's `Resize((H, W))`,
    /// Caffe's ImageNet images warped to 256×256 before the 227 crop).
    Exact([usize; 2]),
}

impl Resize {
    /// Scaled by `f` (rounded, at least 1 pixel), for scale jitter.
    pub fn scaled(self, f: f64) -> Resize {
        let s = |v: usize| ((v as f64 * f).round() as usize).max(1);
        match self {
            Resize::Short(v) => Resize::Short(s(v)),
            Resize::Exact([h, w]) => Resize::Exact([s(h), s(w)]),
        }
    }
    pub fn is_valid(self) -> bool {
        match self {
            Resize::Short(v) => v > 0,
            Resize::Exact([h, w]) => h > 0 && w > 0,
        }
    }
    /// In words, for messages and `taps`.
    pub fn describe(self) -> String {
        match self {
            Resize::Short(v) => format!("shorter side resized to {v}"),
            Resize::Exact([h, w]) => format!("resized to {h}×{w}, aspect not kept"),
        }
    }
}

impl std::fmt::Display for Resize {
    /// As `--resize` takes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resize::Short(v) => write!(f, "{v}"),
            Resize::Exact([h, w]) => write!(f, "{h}x{w}"),
        }
    }
}

impl std::str::FromStr for Resize {
    type Err = String;
    /// `256` (shorter side) or `256x256` / `256,256` (height × width).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let num = |t: &str| {
            t.trim()
                .parse::<usize>()
                .ok()
                .filter(|&v| v > 0)
                .ok_or_else(|| format!("'{s}' is not a resize: give the shorter side (256) or height x width (256x256), positive whole pixels"))
        };
        match s.split_once(['x', 'X', ',', '×']) {
            Some((h, w)) => Ok(Resize::Exact([num(h)?, num(w)?])),
            None => Ok(Resize::Short(num(s)?)),
        }
    }
}

/// Everything that defines an encoder besides its weights; saved with checkpoints and code
/// files so that a file says what produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EncoderSpec {
    /// Architecture name as given on the command line (`posenet`, `alexnet`, `vgg16_bn`, ...).
    pub arch: String,
    pub layers: Vec<Layer>,
    /// Network input (height, width) after resize and centre crop.
    pub input_size: [usize; 2],
    /// How the image is resized before the centre crop.
    pub resize: Resize,
    /// Per-channel normalization applied to `[0,1]` RGB inside [`ConvNet::encode`].
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Class names, index = logit index in `fc8`.
    pub classes: Vec<String>,
}

/// Activation at a tap: spatial maps `[N, C, H, W]` or vectors `[N, D]`.
#[derive(Clone, Debug)]
pub enum Act<B: Backend> {
    Map(Tensor<B, 4>),
    Vec(Tensor<B, 2>),
}

impl<B: Backend> Act<B> {
    /// Shape without the batch dimension.
    pub fn item_shape(&self) -> Vec<usize> {
        match self {
            Act::Map(t) => t.dims()[1..].to_vec(),
            Act::Vec(t) => t.dims()[1..].to_vec(),
        }
    }
    /// `[N, D]` view (row-major flatten of each item).
    pub fn flat(self) -> Tensor<B, 2> {
        match self {
            Act::Map(t) => t.flatten(1, 3),
            Act::Vec(t) => t,
        }
    }
    pub fn batch(&self) -> usize {
        match self {
            Act::Map(t) => t.dims()[0],
            Act::Vec(t) => t.dims()[0],
        }
    }
}

impl EncoderSpec {
    /// Tap names in forward order.
    pub fn taps(&self) -> Vec<String> {
        self.layers.iter().filter_map(|l| l.tap().map(str::to_string)).collect()
    }

    /// Error listing the valid taps when `name` is not one of them.
    pub fn check_tap(&self, name: &str) -> Result<()> {
        if self.taps().iter().any(|t| t == name) {
            return Ok(());
        }
        // A PyTorch user may name the module a forward hook would sit on.
        if let Some((tap, _)) = self.torch_modules().into_iter().find(|(_, m)| m == name) {
            bail!("'{name}' is torchvision's module for tap '{tap}' of {}: pass {tap} (`preimage taps` lists each tap's module)", self.arch);
        }
        bail!("unknown tap '{name}' for encoder {}; valid taps: {}", self.arch, self.taps().join(", "))
    }

    /// Shapes (without batch) of the input to every layer and at every tap, walking the plan
    /// symbolically. Also yields the input width of every conv and fc.
    fn walk(&self) -> Result<Walk> {
        let mut shape = vec![3usize, self.input_size[0], self.input_size[1]];
        let mut taps: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut conv_in = Vec::new();
        let mut fc_in = Vec::new();
        for layer in &self.layers {
            match layer {
                Layer::Conv { out, kernel, stride, pad, tap, .. } => {
                    conv_in.push(shape[0]);
                    let h = conv_out(shape[1], *kernel, *stride, *pad, &self.arch)?;
                    let w = conv_out(shape[2], *kernel, *stride, *pad, &self.arch)?;
                    shape = vec![*out, h, w];
                    taps.insert(tap.clone(), shape.clone());
                }
                Layer::MaxPool { kernel, stride, pad, tap } => {
                    let h = conv_out(shape[1], *kernel, *stride, *pad, &self.arch)?;
                    let w = conv_out(shape[2], *kernel, *stride, *pad, &self.arch)?;
                    shape = vec![shape[0], h, w];
                    if let Some(t) = tap {
                        taps.insert(t.clone(), shape.clone());
                    }
                }
                Layer::AdaptiveAvg { size } => shape = vec![shape[0], *size, *size],
                Layer::Flatten => shape = vec![shape.iter().product()],
                Layer::Fc { out, tap, from, .. } => {
                    let input = match from {
                        Some(f) => taps.get(f).cloned().unwrap_or_default(),
                        None => shape.clone(),
                    };
                    fc_in.push(input.iter().product());
                    let s = vec![*out];
                    taps.insert(tap.clone(), s.clone());
                    if from.is_none() {
                        shape = s;
                    }
                }
                Layer::Softmax { tap } => {
                    taps.insert(tap.clone(), shape.clone());
                }
            }
        }
        Ok(Walk { taps, conv_in, fc_in })
    }

    /// Feed `[h, w]` images instead: torchvision's networks take any size, their adaptive
    /// pooling evening it out before the classifier; a network whose fully connected layers
    /// would then get another number of inputs than their weights (posenet) is an error.
    pub fn set_input_size(&mut self, size: [usize; 2]) -> Result<()> {
        let before = self.walk()?.fc_in;
        let resized = EncoderSpec { input_size: size, ..self.clone() };
        let after = resized.walk()?.fc_in;
        if let Some((i, (a, b))) = before.iter().zip(&after).enumerate().find(|(_, (a, b))| a != b) {
            bail!(
                "{} cannot take a {}×{} input: its fully connected layer {} reads {a} values at {}×{} and would get {b} (no adaptive pooling evens the size out)",
                self.arch,
                size[0],
                size[1],
                i + 1,
                self.input_size[0],
                self.input_size[1]
            );
        }
        *self = resized;
        Ok(())
    }

    /// Shape (without batch) of the code at each tap for this input size.
    pub fn tap_shapes(&self) -> Result<BTreeMap<String, Vec<usize>>> {
        Ok(self.walk()?.taps)
    }

    /// The code shape at `tap` for an input of `size` (`[h, w]`), looking only at the layers up
    /// to the tap: an input too small for them is an error.
    pub fn tap_shape_for(&self, tap: &str, size: [usize; 2]) -> Result<Vec<usize>> {
        self.check_tap(tap)?;
        let end = self.layers.iter().position(|l| l.tap() == Some(tap)).expect("checked tap") + 1;
        let upto = EncoderSpec { input_size: size, layers: self.layers[..end].to_vec(), ..self.clone() };
        Ok(upto.walk()?.taps.remove(tap).expect("the walk reaches its last tap"))
    }

    /// For each tap, the torchvision module whose output it is (`conv1` → `features.1`, the
    /// ReLU after `features.0`), so PyTorch code can be lined up with ours; taps without one
    /// (`prob`, a softmax) are left out, and so are modules of keys not in `prefix.N` form.
    pub fn torch_modules(&self) -> BTreeMap<String, String> {
        let index = |key: &str| key.rsplit_once('.').and_then(|(p, i)| Some((p.to_string(), i.parse::<usize>().ok()?)));
        let mut out = BTreeMap::new();
        let mut last: Option<(String, usize)> = None;
        for layer in &self.layers {
            let module = match layer {
                Layer::Conv { key, bn_key, .. } => index(key).map(|(p, i)| (p, i + 1 + bn_key.is_some() as usize)),
                Layer::MaxPool { .. } => last.clone().map(|(p, i)| (p, i + 1)),
                Layer::Fc { key, relu, .. } => index(key).map(|(p, i)| (p, i + *relu as usize)),
                _ => continue,
            };
            last = module.clone();
            if let (Some(tap), Some((p, i))) = (layer.tap(), module) {
                out.insert(tap.to_string(), format!("{p}.{i}"));
            }
        }
        out
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// The state_dict this spec expects: key → shape (PyTorch layout), in plan order.
    pub fn expected_params(&self) -> Result<Vec<(String, Vec<usize>)>> {
        let walk = self.walk()?;
        let (mut ci, mut fi) = (0, 0);
        let mut out = Vec::new();
        for layer in &self.layers {
            match layer {
                Layer::Conv { out: o, kernel: k, key, bn_key, .. } => {
                    out.push((format!("{key}.weight"), vec![*o, walk.conv_in[ci], *k, *k]));
                    out.push((format!("{key}.bias"), vec![*o]));
                    if let Some(b) = bn_key {
                        for p in ["weight", "bias", "running_mean", "running_var"] {
                            out.push((format!("{b}.{p}"), vec![*o]));
                        }
                    }
                    ci += 1;
                }
                Layer::Fc { out: o, key, .. } => {
                    out.push((format!("{key}.weight"), vec![*o, walk.fc_in[fi]]));
                    out.push((format!("{key}.bias"), vec![*o]));
                    fi += 1;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

struct Walk {
    taps: BTreeMap<String, Vec<usize>>,
    conv_in: Vec<usize>,
    fc_in: Vec<usize>,
}

fn conv_out(size: usize, kernel: usize, stride: usize, pad: usize, arch: &str) -> Result<usize> {
    if size + 2 * pad < kernel {
        bail!("input too small for {arch}: a {size}-pixel map cannot take a {kernel}×{kernel} window (padding {pad})");
    }
    Ok((size + 2 * pad - kernel) / stride + 1)
}

/// The network: parameters in `convs`/`norms`/`fcs` (plan order), the plan in `spec`.
#[derive(Module, Debug)]
pub struct ConvNet<B: Backend> {
    pub convs: Vec<Conv2d<B>>,
    pub norms: Vec<Option<BatchNorm<B>>>,
    pub fcs: Vec<Linear<B>>,
    #[module(skip)]
    pub spec: EncoderSpec,
}

impl<B: Backend> ConvNet<B> {
    /// A freshly initialised network (He-uniform weights, zero biases) drawn from `seed`,
    /// so that the same seed gives the same network on every backend.
    pub fn init(spec: &EncoderSpec, seed: u64, device: &B::Device) -> Result<Self> {
        Ok(Self::uninit(spec, device)?.map(&mut SeededInit::new(seed, device.clone())).with_fc_layout())
    }

    /// The network with parameters not yet drawn (Burn draws them when first read), for
    /// loading weights into; read before they are set, they are Burn's defaults, not seeded.
    pub(crate) fn uninit(spec: &EncoderSpec, device: &B::Device) -> Result<Self> {
        let walk = spec.walk()?;
        let (mut convs, mut norms, mut fcs) = (Vec::new(), Vec::new(), Vec::new());
        for layer in &spec.layers {
            match layer {
                Layer::Conv { out, kernel, stride, pad, bn_key, .. } => {
                    let cin = walk.conv_in[convs.len()];
                    convs.push(
                        Conv2dConfig::new([cin, *out], [*kernel, *kernel])
                            .with_stride([*stride, *stride])
                            .with_padding(PaddingConfig2d::Explicit(*pad, *pad, *pad, *pad))
                            .init(device),
                    );
                    norms.push(bn_key.as_ref().map(|_| BatchNormConfig::new(*out).init(device)));
                }
                Layer::Fc { out, .. } => {
                    fcs.push(LinearConfig::new(walk.fc_in[fcs.len()], *out).init(device));
                }
                _ => {}
            }
        }
        Ok(ConvNet { convs, norms, fcs, spec: spec.clone() })
    }

    /// Fully connected weights stored as [`fc_weight`] lays them out. (Training keeps it for one
    /// step only: the optimizer's update is a new, contiguous tensor, as a checkpoint loads.)
    fn with_fc_layout(mut self) -> Self {
        for fc in &mut self.fcs {
            fc.weight = fc.weight.clone().map(|w| {
                // Read before the transpose: a fresh leaf does not inherit it.
                let trainable = w.is_require_grad();
                fc_weight(w.transpose()).set_require_grad(trainable)
            });
        }
        self
    }

    /// Encode `[0,1]` RGB images `[N,3,H,W]`: normalize as the encoder declares, then run to
    /// the requested taps. `train` selects BatchNorm's batch statistics (training only).
    pub fn encode(&self, images: Tensor<B, 4>, taps: &[&str], train: bool) -> Result<BTreeMap<String, Act<B>>> {
        self.forward_taps(self.normalize(images), taps, train)
    }

    /// `(x - mean) / std` per channel (the CPU backend's per-row broadcast covers `[1, 3, 1, 1]`
    /// against `[N, 3, H, W]` on every core: vendored burn-flex patch 19).
    pub fn normalize(&self, images: Tensor<B, 4>) -> Tensor<B, 4> {
        let device = images.device();
        let per_channel = |v: [f32; 3]| Tensor::<B, 1>::from_floats(v, &device).reshape([1, 3, 1, 1]);
        (images - per_channel(self.spec.mean)) / per_channel(self.spec.std)
    }

    /// Run already-normalized input up to the deepest requested tap and return those taps.
    pub fn forward_taps(&self, x: Tensor<B, 4>, taps: &[&str], train: bool) -> Result<BTreeMap<String, Act<B>>> {
        for t in taps {
            self.spec.check_tap(t)?;
        }
        let mut want: Vec<&str> = taps.to_vec();
        let mut out = BTreeMap::new();
        // Side heads read earlier taps: keep every tap until the end of the pass.
        let mut seen: BTreeMap<String, Act<B>> = BTreeMap::new();
        let mut cur = Act::Map(x);
        let (mut ci, mut fi) = (0, 0);
        for layer in &self.spec.layers {
            if want.is_empty() {
                break;
            }
            cur = match layer {
                Layer::Conv { .. } => {
                    let y = conv_bn(&self.convs[ci], self.norms[ci].as_ref(), map(cur), train);
                    ci += 1;
                    Act::Map(relu(y))
                }
                Layer::MaxPool { kernel, stride, pad, .. } => Act::Map(
                    MaxPool2dConfig::new([*kernel, *kernel])
                        .with_strides([*stride, *stride])
                        .with_padding(PaddingConfig2d::Explicit(*pad, *pad, *pad, *pad))
                        .init()
                        .forward(map(cur)),
                ),
                Layer::AdaptiveAvg { size } => {
                    Act::Map(AdaptiveAvgPool2dConfig::new([*size, *size]).init().forward(map(cur)))
                }
                Layer::Flatten => Act::Vec(cur.flat()),
                Layer::Fc { relu: r, from, .. } => {
                    let input = match from {
                        Some(f) => seen.get(f).cloned().map(|a| a.flat()).expect("plan reads a tap computed earlier"),
                        None => cur.clone().flat(),
                    };
                    let mut y = self.fcs[fi].forward(input);
                    fi += 1;
                    if *r {
                        y = relu(y);
                    }
                    if from.is_some() {
                        // A side head does not feed the trunk.
                        let tap = layer.tap().unwrap().to_string();
                        want.retain(|w| *w != tap);
                        out.insert(tap, Act::Vec(y));
                        continue;
                    }
                    Act::Vec(y)
                }
                Layer::Softmax { .. } => Act::Vec(softmax(cur.flat(), 1)),
            };
            if let Some(tap) = layer.tap() {
                seen.insert(tap.to_string(), cur.clone());
                if want.contains(&tap) {
                    want.retain(|w| *w != tap);
                    out.insert(tap.to_string(), cur.clone());
                }
            }
        }
        Ok(out)
    }

    /// One tap as a flat `[N, D]` tensor (the common case for losses).
    pub fn tap_flat(&self, images: Tensor<B, 4>, tap: &str, train: bool) -> Result<Tensor<B, 2>> {
        let mut acts = self.encode(images, &[tap], train)?;
        Ok(acts.remove(tap).expect("requested tap computed").flat())
    }
}

fn map<B: Backend>(a: Act<B>) -> Tensor<B, 4> {
    match a {
        Act::Map(t) => t,
        Act::Vec(t) => {
            let [n, d] = t.dims();
            t.reshape([n, d, 1, 1])
        }
    }
}

/// Convolution, then BatchNorm (if any) with an explicit mode: Burn picks batch statistics
/// whenever autodiff is on, but a frozen encoder inside an optimization must keep its running
/// statistics. With running statistics BatchNorm is a per-channel affine map, folded into the
/// convolution's weight and bias: one pass over the activation instead of five (the CPU
/// backend has no fused kernel for it), same result up to rounding.
fn conv_bn<B: Backend>(conv: &Conv2d<B>, bn: Option<&BatchNorm<B>>, x: Tensor<B, 4>, train: bool) -> Tensor<B, 4> {
    let Some(bn) = bn else { return conv.forward(x) };
    if train {
        return bn.forward(conv.forward(x));
    }
    let (scale, shift) = bn_affine(bn);
    let c = scale.dims()[0];
    // Folding needs the padding up front; `Same` depends on the input size (our encoders
    // never use it), so it gets the affine map after the convolution instead.
    let [top, left, bottom, right] = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r],
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => return conv.forward(x) * scale.reshape([1, c, 1, 1]) + shift.reshape([1, c, 1, 1]),
    };
    let weight = conv.weight.val() * scale.clone().reshape([c, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(b) => b.val() * scale + shift,
        None => shift,
    };
    let options = PaddedConvOptions::asymmetric(conv.stride, [top, left], [bottom, right], conv.dilation, conv.groups);
    conv2d(x, weight, Some(bias), options)
}

/// BatchNorm with running statistics as `x · scale + shift` per channel. `value_sync`, not
/// `value`: Burn keeps a training forward's update pending until the next one (or a save), so
/// `value` lags one training step behind.
fn bn_affine<B: Backend>(bn: &BatchNorm<B>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scale = bn.gamma.val() / (bn.running_var.value_sync() + bn.epsilon).sqrt();
    let shift = bn.beta.val() - bn.running_mean.value_sync() * scale.clone();
    (scale, shift)
}

/// Deterministic initialisation from our own RNG (Burn's CPU backend reseeds only its next
/// random op, so `B::seed` alone does not make a whole network reproducible).
/// A fully connected weight from PyTorch's `[out, in]` layout to Burn's `[in, out]`, kept as a
/// view of `[out, in]` storage: the CPU matmul then reads each output's weights in place
/// (contiguous along the sum) instead of packing the whole matrix, e.g. AlexNet's fc6 at
/// batch 32 in ~11 ms instead of ~27 ms (`vendor/burn-flex/PREIMAGE_PATCH.md`, patch 8).
/// The result is a leaf that does not require gradients; a trainable parameter sets that.
pub fn fc_weight<B: Backend>(out_in: Tensor<B, 2>) -> Tensor<B, 2> {
    let device = out_in.device();
    Tensor::<B, 2>::from_data(out_in.into_data(), &device).transpose()
}

pub struct SeededInit<B: Backend> {
    rng: Rng,
    path: Vec<String>,
    device: B::Device,
}

impl<B: Backend> SeededInit<B> {
    pub fn new(seed: u64, device: B::Device) -> Self {
        Self { rng: Rng::new(seed), path: Vec::new(), device }
    }
}

impl<B: Backend> ModuleMapper<B> for SeededInit<B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.dims();
        let name = self.path.last().map(String::as_str).unwrap_or("");
        let n: usize = shape.iter().product();
        let values: Option<Vec<f32>> = match (name, D) {
            ("weight", 4) | ("weight", 2) => {
                // Conv [out, in, k, k]: fan_in = in·k·k. Burn's Linear is [in, out]: fan_in = in.
                let fan_in = if D == 4 { shape[1] * shape[2] * shape[3] } else { shape[0] };
                let bound = (6.0 / fan_in as f32).sqrt();
                Some((0..n).map(|_| self.rng.range(-bound, bound)).collect())
            }
            ("bias", _) => Some(vec![0.0; n]),
            _ => None, // BatchNorm gamma/beta keep their 1/0 init
        };
        let tensor = match values {
            // A fresh tensor does not inherit the trainable flag: carry it over.
            Some(v) => Tensor::from_data(TensorData::new(v, shape), &self.device).set_require_grad(tensor.is_require_grad()),
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuAd;
    use burn::module::ModuleVisitor;
    use burn::optim::{GradientsParams, Optimizer};

    #[test]
    fn taps_line_up_with_torchvision_modules() {
        // Read off torchvision 0.29's alexnet(), vgg16() and vgg16_bn() printouts.
        for (arch, want) in [
            ("alexnet", &[("conv1", "features.1"), ("pool2", "features.5"), ("conv5", "features.11"), ("pool5", "features.12"), ("fc6", "classifier.2"), ("fc7", "classifier.5"), ("fc8", "classifier.6")][..]),
            ("vgg16", &[("conv1_1", "features.1"), ("pool1", "features.4"), ("conv5_3", "features.29"), ("pool5", "features.30"), ("fc6", "classifier.1"), ("fc7", "classifier.4")][..]),
            ("vgg16_bn", &[("conv1_1", "features.2"), ("pool1", "features.6"), ("pool5", "features.43"), ("fc8", "classifier.6")][..]),
        ] {
            let modules = crate::encoder::default_spec(arch, 1000, None).unwrap().torch_modules();
            for (tap, module) in want {
                assert_eq!(modules.get(*tap).map(String::as_str), Some(*module), "{arch} {tap}");
            }
            assert!(!modules.contains_key("prob"));
        }
    }

    /// Trainable parameters' values (not the batch norms' running statistics), by field name.
    #[derive(Default)]
    struct Values(Vec<(String, Vec<f32>)>, String);
    impl<B: Backend> ModuleVisitor<B> for Values {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.1 = name.to_string();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if !self.1.starts_with("running_") {
                self.0.push((self.1.clone(), param.val().into_data().convert::<f32>().to_vec::<f32>().unwrap()));
            }
        }
    }
    fn values(net: &ConvNet<CpuAd>) -> Vec<(String, Vec<f32>)> {
        let mut v = Values::default();
        net.visit(&mut v);
        v.0
    }

    /// A training forward's update of the running statistics is what the next evaluation uses
    /// (Burn keeps it pending; reading it unsynced lags one step).
    #[test]
    fn evaluation_uses_the_latest_running_statistics() {
        let device = Default::default();
        let cfg = crate::encoder::posenet::PoseNetConfig { input_size: 32, ..Default::default() };
        let spec = crate::encoder::posenet::spec(&cfg, vec!["a".into(), "b".into()]);
        let net = ConvNet::<CpuAd>::init(&spec, 1, &device).unwrap();
        let x = Tensor::<CpuAd, 4>::from_data(TensorData::new((0..2 * 3 * 32 * 32).map(|i| ((i as f32) * 0.37).sin() + 0.5).collect::<Vec<_>>(), [2, 3, 32, 32]), &device);
        // On the training module itself (as the optimization engine and in-process evaluation
        // use it); `valid()` would sync on its own.
        let eval = |net: &ConvNet<CpuAd>| net.encode(x.clone(), &["conv1"], false).unwrap().remove("conv1").unwrap().flat().into_data().to_vec::<f32>().unwrap();
        let before = eval(&net);
        let _ = net.encode(x.clone(), &["conv1"], true).unwrap();
        let after = eval(&net);
        let moved = before.iter().zip(&after).filter(|(a, b)| (*a - *b).abs() > 1e-5).count();
        assert!(moved > after.len() / 4, "evaluation ignored the update: {moved} of {} values changed", after.len());
        // Fresh statistics are mean 0, variance 1; one update with momentum 0.1 moves them
        // (read after the evaluation: reading syncs).
        let bn = net.norms[0].as_ref().expect("posenet's conv1 has BatchNorm");
        let mean = bn.running_mean.value_sync().into_data().to_vec::<f32>().unwrap();
        assert!(mean.iter().any(|&m| m.abs() > 1e-4), "running mean did not move: {mean:?}");
    }

    /// Every parameter of a fresh encoder gets a gradient and moves with an optimizer step,
    /// the fully connected weights (views of `[out, in]` storage, see [`fc_weight`]) included.
    #[test]
    fn a_training_step_moves_every_parameter() {
        let device = Default::default();
        let cfg = crate::encoder::posenet::PoseNetConfig { input_size: 32, ..Default::default() };
        let spec = crate::encoder::posenet::spec(&cfg, vec!["a".into(), "b".into()]);
        let net = ConvNet::<CpuAd>::init(&spec, 1, &device).unwrap();
        let x = Tensor::<CpuAd, 4>::from_data(TensorData::new((0..2 * 3 * 32 * 32).map(|i| ((i as f32) * 0.37).sin()).collect::<Vec<_>>(), [2, 3, 32, 32]), &device);
        let before = values(&net);
        // Every tap's squares: the class and pose heads both on the path.
        let taps = spec.taps();
        let acts = net.forward_taps(net.normalize(x), &taps.iter().map(String::as_str).collect::<Vec<_>>(), true).unwrap();
        let loss = acts.into_values().map(|a| a.flat().powf_scalar(2.0).sum()).reduce(|a, b| a + b).unwrap();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let after = values(&crate::train::adam::Adam::default().init::<CpuAd, ConvNet<CpuAd>>().step(1e-2, net, grads));
        assert_eq!(before.len(), 2 * (5 + 5 + spec.layers.iter().filter(|l| matches!(l, Layer::Fc { .. })).count()));
        for (i, ((name, b), (_, a))) in before.iter().zip(&after).enumerate() {
            assert!(b != a, "parameter {i} ({name}, {} values) of {} did not move", b.len(), before.len());
        }
    }
}
