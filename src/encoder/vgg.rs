//! VGG 11/13/16/19 (optionally with BatchNorm) in torchvision's exact layout.
use super::net::{EncoderSpec, Layer};
use anyhow::{bail, Result};

pub const DEFAULT_CONV: [usize; 5] = [64, 128, 256, 512, 512];
pub const DEFAULT_FC: [usize; 2] = [4096, 4096];

/// Convolutions per block for each depth (torchvision configs A, B, D, E).
pub fn blocks(depth: usize) -> Result<[usize; 5]> {
    Ok(match depth {
        11 => [1, 1, 2, 2, 2],
        13 => [2, 2, 2, 2, 2],
        16 => [2, 2, 3, 3, 3],
        19 => [2, 2, 4, 4, 4],
        _ => bail!("unknown VGG depth {depth}: valid depths are 11, 13, 16, 19"),
    })
}

pub fn spec(depth: usize, bn: bool, conv: [usize; 5], fc: [usize; 2], classes: Vec<String>, input: usize) -> Result<EncoderSpec> {
    let mut layers = Vec::new();
    // `features` indices advance over conv, (bn), relu and pool modules, as in torchvision.
    let mut idx = 0;
    for (b, &n) in blocks(depth)?.iter().enumerate() {
        for i in 0..n {
            layers.push(Layer::Conv {
                out: conv[b],
                kernel: 3,
                stride: 1,
                pad: 1,
                key: format!("features.{idx}"),
                bn_key: bn.then(|| format!("features.{}", idx + 1)),
                tap: format!("conv{}_{}", b + 1, i + 1),
            });
            idx += if bn { 3 } else { 2 };
        }
        layers.push(Layer::MaxPool { kernel: 2, stride: 2, pad: 0, tap: Some(format!("pool{}", b + 1)) });
        idx += 1;
    }
    let n = classes.len();
    layers.push(Layer::AdaptiveAvg { size: 7 });
    layers.push(Layer::Flatten);
    for (out, relu, key, tap) in [(fc[0], true, 0, "fc6"), (fc[1], true, 3, "fc7"), (n, false, 6, "fc8")] {
        layers.push(Layer::Fc { out, relu, key: format!("classifier.{key}"), tap: tap.into(), from: None });
    }
    layers.push(Layer::Softmax { tap: "prob".into() });
    Ok(EncoderSpec {
        arch: format!("vgg{depth}{}", if bn { "_bn" } else { "" }),
        layers,
        input_size: [input, input],
        resize: super::torchvision_resize(input),
        mean: super::IMAGENET_MEAN,
        std: super::IMAGENET_STD,
        classes,
    })
}
