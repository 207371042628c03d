//! Image parameterizations: what the solver actually changes. Every kind stores its parameter
//! as one flat row per batch item (`[N, dim]`), so the solvers never care which it is.
//! - pixels (M&V): the image itself;
//! - Fourier (Olah et al. 2017): a 1/f-scaled spectrum in a decorrelated colour space,
//!   squashed by a sigmoid; steps move all frequencies at the same pace, which removes the
//!   high-frequency patterns that pixel-space ascent produces;
//! - a decoder's code (DGN-AM): the image is `decoder(code)`.
use anyhow::{bail, Result};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::f64::consts::TAU;

/// Lucid's colour correlation (square root of the ImageNet colour covariance, from its SVD).
const COLOR_SVD_SQRT: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    Pixel,
    Fourier,
    /// A trained decoder's code (`decoder` names the run folder).
    Decoder,
}

/// Settings of the image parameterization (the `[param]` section of presets).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParamConfig {
    pub kind: ParamKind,
    /// Standard deviation of the initial noise (pixels: around grey 0.5; Fourier: spectrum).
    pub init_sd: f32,
    /// Fourier: the spectrum is scaled by 1/f^decay (Lucid: 1).
    pub decay: f32,
    /// Fourier: optimize in a decorrelated colour space.
    pub decorrelate: bool,
    /// Decoder: the `train-decoder` run folder whose code is optimized.
    pub decoder: String,
}

impl Default for ParamConfig {
    fn default() -> Self {
        ParamConfig { kind: ParamKind::Pixel, init_sd: 0.1, decay: 1.0, decorrelate: true, decoder: String::new() }
    }
}

/// The map from the flat parameter to images `[N, 3, H, W]` in `[0,1]`.
#[derive(Clone, Debug)]
pub struct Parameterization<B: Backend> {
    pub kind: ParamKind,
    pub size: [usize; 2],
    fourier: Option<Fourier<B>>,
    /// Frozen decoder and its code size (decoder kind).
    decoder: Option<(crate::decoder::Decoder<B>, usize)>,
}

/// Real inverse-DFT bases (separable: rows then columns) and the 1/f scale.
#[derive(Clone, Debug)]
struct Fourier<B: Backend> {
    /// `[Wf, W]`: cos/sin along x, with the half-spectrum weights of a real inverse DFT.
    cx: Tensor<B, 2>,
    sx: Tensor<B, 2>,
    /// `[H, H]`: cos/sin along y (transposed for right-multiplication).
    cy_t: Tensor<B, 2>,
    sy_t: Tensor<B, 2>,
    /// `[1, 1, H, Wf]` spectrum scale.
    scale: Tensor<B, 4>,
    /// Colour mixing `m[c][k]`: rgb_c = Σ_k m[c][k]·t_k.
    color: [[f32; 3]; 3],
}

impl<B: Backend> Parameterization<B> {
    /// Pixel or Fourier parameterization (a decoder one comes from [`Self::decoder`]).
    pub fn new(cfg: &ParamConfig, size: [usize; 2], device: &B::Device) -> Self {
        let fourier = (cfg.kind == ParamKind::Fourier).then(|| Fourier::new(size, cfg.decay, cfg.decorrelate, device));
        let kind = if cfg.kind == ParamKind::Decoder { ParamKind::Pixel } else { cfg.kind.clone() };
        Parameterization { kind, size, fourier, decoder: None }
    }

    /// DGN-AM: the parameter is a code of `code_dim` values and the image `decoder(code)`.
    /// The decoder is frozen (no gradient to its weights).
    pub fn decoder(decoder: crate::decoder::Decoder<B>, code_dim: usize, size: [usize; 2]) -> Self {
        use burn::module::Module;
        Parameterization { kind: ParamKind::Decoder, size, fourier: None, decoder: Some((decoder.no_grad(), code_dim)) }
    }

    /// Parameter values per batch item.
    pub fn dim(&self) -> usize {
        let [h, w] = self.size;
        match self.kind {
            ParamKind::Pixel => 3 * h * w,
            ParamKind::Fourier => 3 * 2 * h * (w / 2 + 1),
            ParamKind::Decoder => self.decoder.as_ref().map_or(0, |d| d.1),
        }
    }

    /// Pixels must stay in `[0,1]` after each step; the other kinds are bounded by construction.
    pub fn needs_clamp(&self) -> bool {
        self.kind == ParamKind::Pixel
    }

    /// Images `[N, 3, H, W]` in `[0,1]` from parameters `[N, dim]`.
    pub fn image(&self, p: Tensor<B, 2>) -> Tensor<B, 4> {
        let [h, w] = self.size;
        let n = p.dims()[0];
        match (&self.fourier, &self.decoder) {
            (Some(f), _) => f.image(p, n, h, w),
            (None, Some((dec, _))) => dec.forward(p),
            (None, None) => p.reshape([n, 3, h, w]),
        }
    }

    /// Initial parameters: noise drawn from `seed` (one stream per item, so item i does not
    /// depend on how many items the batch holds).
    pub fn noise(&self, n: usize, sd: f32, seed: u64, device: &B::Device) -> Tensor<B, 2> {
        let d = self.dim();
        let base = if self.kind == ParamKind::Pixel { 0.5 } else { 0.0 };
        let mut v = Vec::with_capacity(n * d);
        for i in 0..n {
            let mut rng = crate::rng::Rng::derive(seed, i as u64);
            v.extend((0..d).map(|_| (base + sd * rng.normal()).clamp(if base > 0.0 { 0.0 } else { f32::MIN }, if base > 0.0 { 1.0 } else { f32::MAX })));
        }
        Tensor::from_data(TensorData::new(v, [n, d]), device)
    }

    /// Parameters that reproduce `images` (`[N, 3, H, W]` in `[0,1]`); pixels only.
    pub fn from_image(&self, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        match self.kind {
            ParamKind::Pixel => Ok(images.flatten(1, 3)),
            ParamKind::Fourier | ParamKind::Decoder => {
                bail!("starting from an image needs the pixel parameterization (--param pixel); Fourier and decoder codes start from noise")
            }
        }
    }
}

impl<B: Backend> Fourier<B> {
    fn new(size: [usize; 2], decay: f32, decorrelate: bool, device: &B::Device) -> Self {
        let [h, w] = size;
        let wf = w / 2 + 1;
        // Real inverse DFT along x: coefficient kx and W−kx are conjugates, so the interior
        // half-spectrum counts twice; DC (and Nyquist for even W) once.
        let weight = |k: usize| if k == 0 || (w % 2 == 0 && k == w / 2) { 1.0 } else { 2.0 };
        let mut cx = vec![0f32; wf * w];
        let mut sx = vec![0f32; wf * w];
        for k in 0..wf {
            for x in 0..w {
                let a = TAU * (k * x) as f64 / w as f64;
                cx[k * w + x] = (weight(k) * a.cos()) as f32;
                sx[k * w + x] = (weight(k) * a.sin()) as f32;
            }
        }
        let mut cy_t = vec![0f32; h * h];
        let mut sy_t = vec![0f32; h * h];
        for ky in 0..h {
            for y in 0..h {
                let a = TAU * (ky * y) as f64 / h as f64;
                // Stored [ky, y]: right-multiplying rows indexed by ky gives rows indexed by y.
                cy_t[ky * h + y] = a.cos() as f32;
                sy_t[ky * h + y] = a.sin() as f32;
            }
        }
        // Lucid: scale = 1 / max(f, 1/max(H,W))^decay · sqrt(H·W), and irfft2's 1/(H·W), and a
        // final /4 so that unit-variance spectra give images of moderate contrast.
        let mut scale = vec![0f32; h * wf];
        let norm = ((h * w) as f64).sqrt() / (h * w) as f64 / 4.0;
        for ky in 0..h {
            let fy = if ky <= h / 2 { ky as f64 } else { ky as f64 - h as f64 } / h as f64;
            for kx in 0..wf {
                let fx = kx as f64 / w as f64;
                let f = (fx * fx + fy * fy).sqrt().max(1.0 / h.max(w) as f64);
                scale[ky * wf + kx] = (norm / f.powf(decay as f64)) as f32;
            }
        }
        let color = if decorrelate {
            let max_norm = (0..3)
                .map(|k| (0..3).map(|c| COLOR_SVD_SQRT[c][k] * COLOR_SVD_SQRT[c][k]).sum::<f32>().sqrt())
                .fold(0.0f32, f32::max);
            COLOR_SVD_SQRT.map(|row| row.map(|v| v / max_norm))
        } else {
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        };
        let t = |v: Vec<f32>, s: [usize; 2]| Tensor::<B, 2>::from_data(TensorData::new(v, s), device);
        Fourier {
            cx: t(cx, [wf, w]),
            sx: t(sx, [wf, w]),
            cy_t: t(cy_t, [h, h]),
            sy_t: t(sy_t, [h, h]),
            scale: Tensor::from_data(TensorData::new(scale, [1, 1, h, wf]), device),
            color,
        }
    }

    fn image(&self, p: Tensor<B, 2>, n: usize, h: usize, w: usize) -> Tensor<B, 4> {
        let wf = w / 2 + 1;
        let spec = p.reshape([n, 3, 2 * h, wf]);
        let re = spec.clone().slice([0..n, 0..3, 0..h, 0..wf]) * self.scale.clone();
        let im = spec.slice([0..n, 0..3, h..2 * h, 0..wf]) * self.scale.clone();
        // Re[(A + iB)·e^{i(θy+θx)}] = Cy(A·Cx − B·Sx) − Sy(A·Sx + B·Cx), as 2-D matmuls.
        let a = re.reshape([n * 3 * h, wf]);
        let b = im.reshape([n * 3 * h, wf]);
        let u = a.clone().matmul(self.cx.clone()) - b.clone().matmul(self.sx.clone());
        let v = a.matmul(self.sx.clone()) + b.matmul(self.cx.clone());
        // Along y: move H last, multiply by the [ky, y] bases, move it back.
        let along_y = |t: Tensor<B, 2>, m: Tensor<B, 2>| t.reshape([n, 3, h, w]).swap_dims(2, 3).reshape([n * 3 * w, h]).matmul(m);
        let x = (along_y(u, self.cy_t.clone()) - along_y(v, self.sy_t.clone())).reshape([n, 3, w, h]).swap_dims(2, 3);
        // Decorrelated colour → RGB, then squash into [0,1].
        let ch: Vec<Tensor<B, 4>> = (0..3).map(|k| x.clone().slice([0..n, k..k + 1, 0..h, 0..w])).collect();
        let rgb: Vec<Tensor<B, 4>> = (0..3)
            .map(|c| ch[0].clone() * self.color[c][0] + ch[1].clone() * self.color[c][1] + ch[2].clone() * self.color[c][2])
            .collect();
        sigmoid(Tensor::cat(rgb, 1))
    }
}
