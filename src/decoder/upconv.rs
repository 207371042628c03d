//! Up-convolutional decoders (Dosovitskiy & Brox 2016, "Inverting visual representations with
//! convolutional networks"), built from the code's shape and the image size instead of one
//! hand-written network per layer:
//!
//! - vector codes (`fc6`, `fc7`, `fc8`, `pose`, `prob`): fully connected layers → reshape to a
//!   small map (e.g. 4×4) → up-sampling stages;
//! - spatial codes (`conv*`, `pool*`): 3×3 convolutions on the map → up-sampling stages.
//!
//! Each stage doubles the map: a stride-2 4×4 up-convolution, or (`upsample = "resize"`) a
//! nearest-neighbour 2× upsample followed by a 3×3 convolution, which avoids checkerboard
//! artifacts; then `convs_per_stage` 3×3 convolutions; leaky ReLU after each. A final 3×3
//! convolution gives RGB and the chain's overshoot is centre-cropped to the exact image size
//! (as D&B crop 256 → 227).
use anyhow::{bail, Result};
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig, ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use super::activation::leaky_relu;
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// How a stage doubles the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Upsample {
    /// Stride-2 4×4 transposed convolution (D&B).
    #[default]
    Deconv,
    /// Nearest-neighbour 2× upsample, then a 3×3 convolution.
    Resize,
}

/// Activation of the RGB output; the decoder's images live in `[0,1]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputAct {
    #[default]
    Sigmoid,
    /// (tanh + 1) / 2.
    Tanh,
    /// Linear output clamped to `[0,1]` (gradient zero outside).
    Clamp,
    /// Linear output, unbounded (D&B's choice for mean-subtracted images).
    None,
}

/// The `[model]` section of a decoder config: widths and depth, not tied to a layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecoderArch {
    /// Hidden fully connected widths for vector codes (one more fc then makes the base map).
    pub fc: Vec<usize>,
    /// Channels of the base map that vector codes are reshaped to.
    pub base_channels: usize,
    /// Side of the base map (its larger side for non-square images).
    pub base_size: usize,
    /// 3×3 convolutions applied to spatial codes before up-sampling.
    pub spatial_convs: Vec<usize>,
    /// Widths of the up-sampling stages, listed for the last stages: a chain that needs fewer
    /// stages uses the last entries, one that needs more repeats the first.
    pub up_channels: Vec<usize>,
    pub convs_per_stage: usize,
    pub upsample: Upsample,
    pub leaky_slope: f64,
    pub output: OutputAct,
}

impl Default for DecoderArch {
    fn default() -> Self {
        Self {
            fc: vec![512],
            base_channels: 256,
            base_size: 4,
            spatial_convs: vec![128],
            up_channels: vec![128, 64, 32, 16],
            convs_per_stage: 1,
            upsample: Upsample::Deconv,
            leaky_slope: 0.2,
            output: OutputAct::Sigmoid,
        }
    }
}

/// The concrete network for one code shape and image size, derived from a [`DecoderArch`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Code shape without the batch dimension: `[D]` or `[C, H, W]`.
    pub code_shape: Vec<usize>,
    /// Output image `[height, width]`.
    pub image_size: [usize; 2],
    pub arch: DecoderArch,
    /// Map entering the first stage: `[C, H, W]`.
    pub base: [usize; 3],
    /// Channels out of each stage.
    pub stages: Vec<usize>,
}

fn stages_needed(from: usize, to: usize) -> usize {
    let mut k = 0;
    while from << k < to {
        k += 1;
    }
    k
}

impl Plan {
    pub fn new(code_shape: &[usize], image_size: [usize; 2], arch: &DecoderArch) -> Result<Self> {
        let [h, w] = image_size;
        if h == 0 || w == 0 {
            bail!("image size must be positive, got {h}×{w}");
        }
        if arch.up_channels.is_empty() && code_shape.len() == 1 {
            bail!("model.up_channels is empty: a vector code needs at least one up-sampling stage");
        }
        let (base, k) = match code_shape {
            [d] => {
                if *d == 0 || arch.base_size == 0 || arch.base_channels == 0 {
                    bail!("code dimension, model.base_size and model.base_channels must be positive");
                }
                let k = stages_needed(arch.base_size, h.max(w));
                let (bh, bw) = (h.div_ceil(1 << k), w.div_ceil(1 << k));
                ([arch.base_channels, bh, bw], k)
            }
            [c, ch, cw] => {
                let k = stages_needed(*ch, h).max(stages_needed(*cw, w));
                let c_in = arch.spatial_convs.last().copied().unwrap_or(*c);
                ([c_in, *ch, *cw], k)
            }
            other => bail!("cannot decode codes of shape {other:?}: expected [D] or [C, H, W]"),
        };
        let n = arch.up_channels.len();
        let stages = (0..k)
            .map(|i| if k <= n { arch.up_channels[n - k + i] } else { arch.up_channels[i.saturating_sub(k - n)] })
            .collect::<Vec<_>>();
        if stages.is_empty() && arch.up_channels.is_empty() && code_shape.len() == 3 && code_shape[1] < h {
            bail!("model.up_channels is empty but the code map is smaller than the image");
        }
        Ok(Self { code_shape: code_shape.to_vec(), image_size, arch: arch.clone(), base, stages })
    }

    pub fn code_dim(&self) -> usize {
        self.code_shape.iter().product()
    }

    /// Map size after all stages, before the crop.
    pub fn uncropped(&self) -> [usize; 2] {
        let k = self.stages.len();
        [self.base[1] << k, self.base[2] << k]
    }
}

/// One up-sampling stage.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    deconv: Option<ConvTranspose2d<B>>,
    resize_conv: Option<Conv2d<B>>,
    convs: Vec<Conv2d<B>>,
}

/// A decoder from codes to `[0,1]` RGB images.
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    fcs: Vec<Linear<B>>,
    pre: Vec<Conv2d<B>>,
    stages: Vec<Stage<B>>,
    out: Conv2d<B>,
    #[module(skip)]
    pub plan: Plan,
}

fn conv3<B: Backend>(cin: usize, cout: usize, device: &B::Device) -> Conv2d<B> {
    Conv2dConfig::new([cin, cout], [3, 3]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device)
}

impl<B: Backend> Decoder<B> {
    /// A freshly initialised decoder (He-uniform weights from `seed`, zero biases).
    pub fn init(plan: &Plan, seed: u64, device: &B::Device) -> Self {
        let a = &plan.arch;
        let mut fcs = Vec::new();
        let mut pre = Vec::new();
        if plan.code_shape.len() == 1 {
            let mut dims = vec![plan.code_dim()];
            dims.extend(&a.fc);
            dims.push(plan.base.iter().product());
            fcs = dims.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
        } else {
            let mut c = plan.code_shape[0];
            for &o in &a.spatial_convs {
                pre.push(conv3(c, o, device));
                c = o;
            }
        }
        let mut c = plan.base[0];
        let mut stages = Vec::new();
        for &o in &plan.stages {
            let (deconv, resize_conv) = match a.upsample {
                Upsample::Deconv => (Some(ConvTranspose2dConfig::new([c, o], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(device)), None),
                Upsample::Resize => (None, Some(conv3(c, o, device))),
            };
            let convs = (0..a.convs_per_stage).map(|_| conv3(o, o, device)).collect();
            stages.push(Stage { deconv, resize_conv, convs });
            c = o;
        }
        let dec = Decoder { fcs, pre, stages, out: conv3(c, 3, device), plan: plan.clone() };
        dec.map(&mut crate::encoder::net::SeededInit::new(seed, device.clone()))
    }

    /// Codes `[N, D]` (each item flattened row-major) → images `[N, 3, H, W]` in `[0,1]`
    /// (unbounded for `output = "none"`).
    pub fn forward(&self, codes: Tensor<B, 2>) -> Tensor<B, 4> {
        let slope = self.plan.arch.leaky_slope;
        let n = codes.dims()[0];
        let [c, bh, bw] = self.plan.base;
        let mut x = if self.fcs.is_empty() {
            let s = &self.plan.code_shape;
            let mut m = codes.reshape([n, s[0], s[1], s[2]]);
            for conv in &self.pre {
                m = leaky_relu(conv.forward(m), slope);
            }
            m
        } else {
            let mut v = codes;
            for fc in &self.fcs {
                v = leaky_relu(fc.forward(v), slope);
            }
            v.reshape([n, c, bh, bw])
        };
        for stage in &self.stages {
            x = match (&stage.deconv, &stage.resize_conv) {
                (Some(d), _) => super::deconv::forward(d, x),
                (None, Some(conv)) => {
                    let [_, _, h, w] = x.dims();
                    conv.forward(interpolate(x, [2 * h, 2 * w], InterpolateOptions::new(InterpolateMode::Nearest)))
                }
                (None, None) => unreachable!("a stage has one up-sampling layer"),
            };
            x = leaky_relu(x, slope);
            for conv in &stage.convs {
                x = leaky_relu(conv.forward(x), slope);
            }
        }
        let y = self.out.forward(x);
        let y = match self.plan.arch.output {
            OutputAct::Sigmoid => sigmoid(y),
            OutputAct::Tanh => (y.tanh() + 1.0) * 0.5,
            OutputAct::Clamp => y.clamp(0.0, 1.0),
            OutputAct::None => y,
        };
        crop_center(y, self.plan.image_size)
    }

    /// Layer-by-layer description with output shapes and parameter counts.
    pub fn summary(&self) -> String {
        let p = &self.plan;
        let a = &p.arch;
        let mut lines = vec![format!("decoder for codes {:?} → images 3×{}×{}", p.code_shape, p.image_size[0], p.image_size[1])];
        let mut push = |what: String, shape: String, params: usize| lines.push(format!("  {what:<34} → {shape:<14} {params:>10} params"));
        let [c, bh, bw] = p.base;
        for (i, fc) in self.fcs.iter().enumerate() {
            let out = fc.weight.dims()[1];
            let shape = if i + 1 == self.fcs.len() { format!("{c}×{bh}×{bw}") } else { format!("{out}") };
            push(format!("fc {} → {out}, leaky {}", fc.weight.dims()[0], a.leaky_slope), shape, fc.num_params());
        }
        for conv in &self.pre {
            let [o, i, ..] = conv.weight.dims();
            push(format!("conv 3×3 {i} → {o}, leaky"), format!("{o}×{bh}×{bw}"), conv.num_params());
        }
        let (mut h, mut w) = (bh, bw);
        for (s, stage) in self.stages.iter().enumerate() {
            (h, w) = (2 * h, 2 * w);
            let o = p.stages[s];
            let what = match a.upsample {
                Upsample::Deconv => format!("up-conv 4×4/2 → {o}, leaky"),
                Upsample::Resize => format!("resize 2× + conv 3×3 → {o}, leaky"),
            };
            let first = stage.deconv.as_ref().map(|d| d.num_params()).or(stage.resize_conv.as_ref().map(|c| c.num_params())).unwrap_or(0);
            push(what, format!("{o}×{h}×{w}"), first);
            for conv in &stage.convs {
                push(format!("conv 3×3 {o} → {o}, leaky"), format!("{o}×{h}×{w}"), conv.num_params());
            }
        }
        push(format!("conv 3×3 → 3, {:?}", a.output).to_lowercase(), format!("3×{h}×{w}"), self.out.num_params());
        if [h, w] != p.image_size {
            push("centre crop".into(), format!("3×{}×{}", p.image_size[0], p.image_size[1]), 0);
        }
        lines.push(format!("  total {} parameters", self.num_params()));
        lines.join("\n")
    }
}

/// Centre-crop `[N, C, H, W]` to `size` (no-op when it already fits).
pub fn crop_center<B: Backend>(x: Tensor<B, 4>, size: [usize; 2]) -> Tensor<B, 4> {
    let [n, c, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let (oy, ox) = ((h - size[0]) / 2, (w - size[1]) / 2);
    x.slice([0..n, 0..c, oy..oy + size[0], ox..ox + size[1]])
}

#[cfg(test)]
mod tests {
    use super::*;
    type B = crate::device::Cpu;

    fn out_shape(code: &[usize], image: [usize; 2], arch: &DecoderArch) -> [usize; 4] {
        let plan = Plan::new(code, image, arch).unwrap();
        let dec = Decoder::<B>::init(&plan, 0, &Default::default());
        let d: usize = code.iter().product();
        let y = dec.forward(Tensor::zeros([2, d], &Default::default()));
        y.dims()
    }

    #[test]
    fn every_code_kind_decodes_to_the_image_size() {
        let small = DecoderArch { fc: vec![16], base_channels: 8, up_channels: vec![8, 4], spatial_convs: vec![6], ..Default::default() };
        // Vector codes (fc6/fc7/fc8/pose): square, non-square, and an overshoot that is cropped.
        assert_eq!(out_shape(&[12], [16, 16], &small), [2, 3, 16, 16]);
        assert_eq!(out_shape(&[12], [16, 12], &small), [2, 3, 16, 12]);
        assert_eq!(out_shape(&[4], [27, 27], &small), [2, 3, 27, 27]);
        // Spatial codes (conv/pool): map smaller than the image, and of odd size.
        assert_eq!(out_shape(&[5, 4, 4], [16, 16], &small), [2, 3, 16, 16]);
        assert_eq!(out_shape(&[5, 3, 3], [22, 22], &small), [2, 3, 22, 22]);
        let resize = DecoderArch { upsample: Upsample::Resize, output: OutputAct::Tanh, ..small.clone() };
        assert_eq!(out_shape(&[12], [16, 8], &resize), [2, 3, 16, 8]);
        assert_eq!(out_shape(&[5, 8, 8], [16, 16], &resize), [2, 3, 16, 16]);
    }

    #[test]
    fn plan_uses_the_last_widths_and_doubles_to_cover_the_image() {
        let arch = DecoderArch::default();
        let p = Plan::new(&[512], [64, 64], &arch).unwrap();
        assert_eq!(p.base, [256, 4, 4]);
        assert_eq!(p.stages, vec![128, 64, 32, 16]);
        let p = Plan::new(&[64, 8, 8], [64, 64], &arch).unwrap();
        assert_eq!(p.base, [128, 8, 8]);
        assert_eq!(p.stages, vec![64, 32, 16]);
        // D&B's fc6 decoder: 4×4 doubled six times is 256, cropped to 227.
        let p = Plan::new(&[4096], [227, 227], &arch).unwrap();
        assert_eq!((p.base, p.uncropped()), ([256, 4, 4], [256, 256]));
        assert_eq!(p.stages, vec![128, 128, 128, 64, 32, 16]);
        assert!(Plan::new(&[2, 3], [8, 8], &arch).unwrap_err().to_string().contains("[2, 3]"));
    }

    #[test]
    fn outputs_stay_in_the_unit_range_and_init_is_seeded() {
        let arch = DecoderArch { fc: vec![], base_channels: 4, up_channels: vec![4], ..Default::default() };
        let plan = Plan::new(&[3], [8, 8], &arch).unwrap();
        let dev = Default::default();
        let code = Tensor::<B, 2>::from_floats([[50.0, -80.0, 3.0]], &dev);
        let a = Decoder::<B>::init(&plan, 7, &dev).forward(code.clone()).into_data().to_vec::<f32>().unwrap();
        let b = Decoder::<B>::init(&plan, 7, &dev).forward(code.clone()).into_data().to_vec::<f32>().unwrap();
        let c = Decoder::<B>::init(&plan, 8, &dev).forward(code).into_data().to_vec::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
