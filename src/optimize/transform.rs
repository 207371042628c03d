//! Random transforms applied to the image before the encoder at each step (pad, jitter,
//! scale, rotate), and the gradient mask. Transforming the input makes the result explain
//! the features under small shifts, which suppresses the aliasing patterns that exact
//! matching finds (M&V's jitter; Lucid's transformation robustness). All are differentiable,
//! so the gradient reaches the untransformed image.
use crate::rng::Rng;
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use burn::tensor::ops::{GridSampleOptions, GridSamplePaddingMode, InterpolateMode, PadMode};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `[transforms]` section of presets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transforms {
    /// Pixels of constant padding (value `pad_value`) on each side before jitter; the result
    /// is cropped back to the input size afterwards, so padding turns jitter into shifts
    /// with a grey border instead of wrap-around.
    pub pad: usize,
    pub pad_value: f32,
    /// Maximum random shift in pixels (each axis, uniform in [−jitter, jitter]).
    pub jitter: usize,
    /// Scale factors to choose from at random (empty: no scaling).
    pub scales: Vec<f32>,
    /// Maximum rotation in degrees (uniform in [−rotate, rotate]).
    pub rotate: f32,
    /// `jitter` and `pad` are pixels of an image this size and scale with the encoder input
    /// (the papers used 224-pixel ImageNet networks); 0 = absolute pixels.
    pub reference_size: usize,
}

impl Transforms {
    /// True when the transforms draw nothing at random (the objective is deterministic).
    pub fn is_identity(&self) -> bool {
        self.jitter == 0 && self.rotate == 0.0 && self.scales.iter().all(|&s| s == 1.0)
    }

    /// Transform a batch `[N, 3, H, W]` (one draw for the whole batch); output has the same size.
    pub fn apply<B: Backend>(&self, x: Tensor<B, 4>, rng: &mut Rng) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        let p = self.pad;
        let mut y = if p > 0 { x.pad((p, p, p, p), PadMode::Constant(self.pad_value)) } else { x };
        if self.jitter > 0 {
            let j = self.jitter as i64;
            let dy = rng.below(2 * self.jitter + 1) as i64 - j;
            let dx = rng.below(2 * self.jitter + 1) as i64 - j;
            y = y.roll(&[dy, dx], &[2, 3]);
        }
        let scale = if self.scales.is_empty() { 1.0 } else { self.scales[rng.below(self.scales.len())] };
        let angle = if self.rotate > 0.0 { rng.range(-self.rotate, self.rotate) } else { 0.0 };
        if scale != 1.0 || angle != 0.0 {
            let [_, _, hp, wp] = y.dims();
            let grid = affine_grid::<B>(n, hp, wp, scale, angle, &y.device());
            let opts = GridSampleOptions::new(InterpolateMode::Bilinear).with_padding_mode(GridSamplePaddingMode::Border);
            y = y.grid_sample_2d(grid, opts);
        }
        if p > 0 {
            y = y.slice([0..n, 0..c, p..p + h, p..p + w]);
        }
        y
    }
}

/// Sampling grid `[N, H, W, 2]` (x, y in [−1, 1]) that scales by `scale` and rotates by
/// `deg` degrees about the centre, in pixel units so non-square images are not sheared.
pub(crate) fn affine_grid<B: Backend>(n: usize, h: usize, w: usize, scale: f32, deg: f32, device: &B::Device) -> Tensor<B, 4> {
    let (s, c) = (deg.to_radians().sin(), deg.to_radians().cos());
    let mut g = Vec::with_capacity(h * w * 2);
    for i in 0..h {
        for j in 0..w {
            // Output pixel centre relative to the image centre, in pixels.
            let (px, py) = (j as f32 + 0.5 - w as f32 / 2.0, i as f32 + 0.5 - h as f32 / 2.0);
            // Inverse map: rotate back and shrink, to find where the output pixel reads.
            let (sx, sy) = ((c * px + s * py) / scale, (-s * px + c * py) / scale);
            g.push(sx / (w as f32 / 2.0));
            g.push(sy / (h as f32 / 2.0));
        }
    }
    let one = Tensor::<B, 4>::from_data(TensorData::new(g, [1, h, w, 2]), device);
    one.repeat_dim(0, n)
}

/// A gradient mask: white (1) = free to change, black (0) = kept as the original.
/// Applied as `x = x₀ + m ⊙ (x − x₀)`, so the masked-out region receives no gradient and
/// stays exactly the original whatever the parameterization.
pub fn apply_mask<B: Backend>(image: Tensor<B, 4>, original: Tensor<B, 4>, mask: Tensor<B, 4>) -> Tensor<B, 4> {
    original.clone() + mask * (image - original)
}

/// Read a mask image as `[H, W]` values in `[0,1]` (grey level). It must have the size of the
/// image it masks (`image_size`, width × height) or of the encoder input (`input`), in which
/// case it is preprocessed like the image (resize + centre crop). Other sizes are errors.
pub fn load_mask(path: &Path, image_size: Option<[u32; 2]>, input: [usize; 2], pre: &crate::data::folder::Preprocess) -> Result<Vec<f32>> {
    let img = crate::data::folder::decode(path)?;
    let (w, h) = (img.width(), img.height());
    let native = [input[1] as u32, input[0] as u32];
    let rgb = if [w, h] == native {
        crate::data::folder::preprocess_image(&img, &crate::data::folder::Preprocess { resize: crate::encoder::Resize::Short(input[0].min(input[1])), crop_h: input[0] as u32, crop_w: input[1] as u32 })
    } else if Some([w, h]) == image_size {
        crate::data::folder::preprocess_image(&img, pre)
    } else {
        let image = match image_size {
            Some([iw, ih]) => format!("the image's {iw}×{ih} or "),
            None => String::new(),
        };
        bail!("mask {} is {w}×{h} pixels (width × height); it must have {image}the encoder input's {}×{} size", path.display(), native[0], native[1]);
    };
    let plane = input[0] * input[1];
    Ok((0..plane).map(|i| (rgb[i] + rgb[plane + i] + rgb[2 * plane + i]) / 3.0).collect())
}
