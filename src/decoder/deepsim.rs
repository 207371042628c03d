//! DeePSiM losses (Dosovitskiy & Brox 2016, "Generating images with perceptual similarity
//! metrics based on deep networks"): a feature loss ‖C(x̂) − C(x)‖² at a tap of a frozen
//! comparator network, and an adversarial loss from a discriminator that sees the image and
//! the code, trained alongside the decoder and paused while it is too strong.
use crate::encoder::ConvNet;
use anyhow::Result;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use super::activation::leaky_relu;
use burn::tensor::activation::softplus;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// A frozen comparator network read at one tap.
#[derive(Clone)]
pub struct Comparator<B: Backend> {
    net: ConvNet<B>,
    pub tap: String,
}

impl<B: Backend> Comparator<B> {
    /// Freezes `net` (no parameter gradients: only the image gets them).
    pub fn new(net: ConvNet<B>, tap: &str) -> Result<Self> {
        net.spec.check_tap(tap)?;
        Ok(Self { net: net.no_grad(), tap: tap.to_string() })
    }

    /// A copy on `device` (data-parallel training keeps one per device).
    pub fn fork(&self, device: &B::Device) -> Self {
        Self { net: self.net.clone().fork(device), tap: self.tap.clone() }
    }

    pub fn net(&self) -> &ConvNet<B> {
        &self.net
    }

    /// Features of `[0,1]` images, `[N, D]`, with BatchNorm in inference mode.
    pub fn features(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.net.tap_flat(images, &self.tap, false).expect("tap checked in Comparator::new")
    }

    /// Mean squared feature difference between reconstructions and the targets' features.
    pub fn loss(&self, recon: Tensor<B, 4>, target_features: Tensor<B, 2>) -> Tensor<B, 1> {
        (self.features(recon) - target_features).powf_scalar(2.0).mean()
    }
}

/// `[discriminator]` section of a decoder config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscriminatorConfig {
    /// Channels of the stride-2 4×4 convolutions on the image.
    pub channels: Vec<usize>,
    /// Width of the fc layer on the code and of the joint hidden layer.
    pub hidden: usize,
    pub lr: f64,
    pub betas: [f64; 2],
    /// L2 penalty on its weights (as `[train] weight_decay` for the decoder).
    #[serde(skip_serializing_if = "crate::train::is_zero")]
    pub weight_decay: f64,
    /// Skip the discriminator's update while its loss is below this fraction of the
    /// generator's adversarial loss (DeePSiM uses 0.1).
    pub pause_ratio: f64,
}

impl Default for DiscriminatorConfig {
    fn default() -> Self {
        Self { channels: vec![32, 64, 128, 128], hidden: 256, lr: 2e-4, betas: [0.5, 0.999], weight_decay: 0.0, pause_ratio: 0.1 }
    }
}

/// Image + code → one logit (real vs reconstructed).
#[derive(Module, Debug)]
pub struct Discriminator<B: Backend> {
    convs: Vec<Conv2d<B>>,
    code_fc: Linear<B>,
    hidden: Linear<B>,
    out: Linear<B>,
}

const SLOPE: f64 = 0.2;

impl<B: Backend> Discriminator<B> {
    pub fn init(cfg: &DiscriminatorConfig, code_dim: usize, seed: u64, device: &B::Device) -> Self {
        let mut c = 3;
        let convs = cfg
            .channels
            .iter()
            .map(|&o| {
                let conv = Conv2dConfig::new([c, o], [4, 4]).with_stride([2, 2]).with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1)).init(device);
                c = o;
                conv
            })
            .collect();
        let d = Discriminator {
            convs,
            code_fc: LinearConfig::new(code_dim, cfg.hidden).init(device),
            hidden: LinearConfig::new(c + cfg.hidden, cfg.hidden).init(device),
            out: LinearConfig::new(cfg.hidden, 1).init(device),
        };
        d.map(&mut crate::encoder::net::SeededInit::new(seed, device.clone()))
    }

    /// Logits `[N, 1]` for `[0,1]` images `[N, 3, H, W]` and their codes `[N, D]`.
    pub fn forward(&self, images: Tensor<B, 4>, codes: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = images * 2.0 - 1.0;
        for conv in &self.convs {
            x = leaky_relu(conv.forward(x), SLOPE);
        }
        let [n, c, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([n, c]);
        let code = leaky_relu(self.code_fc.forward(codes), SLOPE);
        let h = leaky_relu(self.hidden.forward(Tensor::cat(vec![pooled, code], 1)), SLOPE);
        self.out.forward(h)
    }
}

/// Non-saturating generator loss: −log σ(D(x̂)).
pub fn generator_loss<B: Backend>(fake_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    softplus(fake_logits.neg(), 1.0).mean()
}

/// Discriminator loss: −log σ(D(x)) − log(1 − σ(D(x̂))).
pub fn discriminator_loss<B: Backend>(real_logits: Tensor<B, 2>, fake_logits: Tensor<B, 2>) -> Tensor<B, 1> {
    softplus(real_logits.neg(), 1.0).mean() + softplus(fake_logits, 1.0).mean()
}

/// DeePSiM's rule: pause the discriminator while it wins too clearly.
pub fn discriminator_paused(disc_loss: f64, generator_adv_loss: f64, ratio: f64) -> bool {
    disc_loss < ratio * generator_adv_loss
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    type B = crate::device::Cpu;

    fn scalar(t: Tensor<B, 1>) -> f32 {
        t.into_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn adversarial_losses_match_their_formulas() {
        let dev = Default::default();
        let real = Tensor::<B, 2>::from_data(TensorData::new(vec![2.0f32, -1.0], [2, 1]), &dev);
        let fake = Tensor::<B, 2>::from_data(TensorData::new(vec![0.5f32, -3.0], [2, 1]), &dev);
        let sp = |x: f32| (1.0 + x.exp()).ln();
        let g = scalar(generator_loss(fake.clone()));
        assert!((g - 0.5 * (sp(-0.5) + sp(3.0))).abs() < 1e-5, "{g}");
        let d = scalar(discriminator_loss(real, fake));
        let want = 0.5 * (sp(-2.0) + sp(1.0)) + 0.5 * (sp(0.5) + sp(-3.0));
        assert!((d - want).abs() < 1e-5, "{d} vs {want}");
        assert!(discriminator_paused(0.05, 1.0, 0.1));
        assert!(!discriminator_paused(0.2, 1.0, 0.1));
    }

    #[test]
    fn feature_loss_is_the_mean_squared_feature_difference_and_only_images_get_gradients() {
        type A = crate::device::CpuAd;
        let dev = Default::default();
        let spec = crate::encoder::default_spec("posenet", 3, Some(16)).unwrap();
        let net = ConvNet::<A>::init(&spec, 1, &dev).unwrap();
        assert!(Comparator::new(net.clone(), "fc9").is_err());
        let c = Comparator::new(net.clone(), "conv2").unwrap();
        let a = Tensor::<A, 4>::from_data(TensorData::new((0..3 * 16 * 16).map(|i| (i % 7) as f32 / 7.0).collect::<Vec<_>>(), [1, 3, 16, 16]), &dev);
        let b = a.clone().flip([3]);
        let zero = c.loss(a.clone(), c.features(a.clone())).into_scalar();
        assert_eq!(zero, 0.0);
        let fa = net.tap_flat(a.clone(), "conv2", false).unwrap().into_data().to_vec::<f32>().unwrap();
        let fb = net.tap_flat(b.clone(), "conv2", false).unwrap().into_data().to_vec::<f32>().unwrap();
        let want = fa.iter().zip(&fb).map(|(x, y)| (x - y) * (x - y)).sum::<f32>() / fa.len() as f32;
        let x = a.require_grad();
        let loss = c.loss(x.clone(), c.features(b).detach());
        assert!((loss.clone().into_scalar() - want).abs() <= 1e-5 * want.max(1e-6), "{want}");
        let grads = loss.backward();
        assert!(x.grad(&grads).is_some(), "the image gets a gradient");
        assert!(c.net().convs[0].weight.grad(&grads).is_none(), "the comparator is frozen");
    }

    #[test]
    fn discriminator_reads_image_and_code() {
        let dev = Default::default();
        let cfg = DiscriminatorConfig { channels: vec![4, 8], hidden: 6, ..Default::default() };
        let d = Discriminator::<B>::init(&cfg, 5, 0, &dev);
        let imgs = Tensor::<B, 4>::ones([3, 3, 16, 12], &dev) * 0.3;
        let codes = Tensor::<B, 2>::ones([3, 5], &dev);
        let a = d.forward(imgs.clone(), codes.clone());
        assert_eq!(a.dims(), [3, 1]);
        let b = d.forward(imgs, codes * 2.0).into_data().to_vec::<f32>().unwrap();
        assert_ne!(a.into_data().to_vec::<f32>().unwrap(), b, "the code changes the logit");
    }
}
