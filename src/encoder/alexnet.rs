//! AlexNet in torchvision's exact layout (`features.{0,3,6,8,10}`, `classifier.{1,4,6}`).
use super::net::{EncoderSpec, Layer};

/// torchvision's widths: conv 64,192,384,256,256; fc 4096,4096; 1000 classes.
pub const DEFAULT_CONV: [usize; 5] = [64, 192, 384, 256, 256];
pub const DEFAULT_FC: [usize; 2] = [4096, 4096];

pub fn spec(conv: [usize; 5], fc: [usize; 2], classes: Vec<String>, input: usize) -> EncoderSpec {
    let c = |i: usize, out, kernel, stride, pad, key: usize| Layer::Conv {
        out,
        kernel,
        stride,
        pad,
        key: format!("features.{key}"),
        bn_key: None,
        tap: format!("conv{}", i),
    };
    let pool = |tap: &str| Layer::MaxPool { kernel: 3, stride: 2, pad: 0, tap: Some(tap.into()) };
    let fc_layer = |out, relu, key: usize, tap: &str| Layer::Fc { out, relu, key: format!("classifier.{key}"), tap: tap.into(), from: None };
    let n = classes.len();
    EncoderSpec {
        arch: "alexnet".into(),
        layers: vec![
            c(1, conv[0], 11, 4, 2, 0),
            pool("pool1"),
            c(2, conv[1], 5, 1, 2, 3),
            pool("pool2"),
            c(3, conv[2], 3, 1, 1, 6),
            c(4, conv[3], 3, 1, 1, 8),
            c(5, conv[4], 3, 1, 1, 10),
            pool("pool5"),
            Layer::AdaptiveAvg { size: 6 },
            Layer::Flatten,
            fc_layer(fc[0], true, 1, "fc6"),
            fc_layer(fc[1], true, 4, "fc7"),
            fc_layer(n, false, 6, "fc8"),
            Layer::Softmax { tap: "prob".into() },
        ],
        input_size: [input, input],
        resize: super::torchvision_resize(input),
        mean: super::IMAGENET_MEAN,
        std: super::IMAGENET_STD,
        classes,
    }
}
