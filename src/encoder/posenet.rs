//! posenet: our own small pose/classification CNN for rendered objects (64×64 by default).
//! AlexNet-like taps (conv1..conv5, pool1, pool2, pool5, fc6, fc7, fc8, prob) plus a `pose`
//! head reading fc7: (sin az, cos az, sin el, cos el), with the azimuth folded by the class's
//! rotational symmetry (see `train::encoder`).
use super::net::{EncoderSpec, Layer};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoseNetConfig {
    /// Input side in pixels (images are resized/cropped to it).
    #[serde(default = "default_input")]
    pub input_size: usize,
    /// Channels of conv1..conv5.
    #[serde(default = "default_conv")]
    pub conv: [usize; 5],
    /// Widths of fc6, fc7.
    #[serde(default = "default_fc")]
    pub fc: [usize; 2],
    #[serde(default = "default_true")]
    pub batch_norm: bool,
}

fn default_input() -> usize {
    64
}
fn default_conv() -> [usize; 5] {
    [32, 64, 96, 96, 64]
}
fn default_fc() -> [usize; 2] {
    [512, 512]
}
fn default_true() -> bool {
    true
}

impl Default for PoseNetConfig {
    fn default() -> Self {
        Self { input_size: default_input(), conv: default_conv(), fc: default_fc(), batch_norm: true }
    }
}

/// Size of the pose head output.
pub const POSE_DIM: usize = 4;

pub fn spec(cfg: &PoseNetConfig, classes: Vec<String>) -> EncoderSpec {
    let bn = cfg.batch_norm;
    let mut idx = 0;
    let mut conv = |i: usize, out: usize, kernel: usize, stride: usize| {
        let l = Layer::Conv {
            out,
            kernel,
            stride,
            pad: kernel / 2,
            key: format!("features.{idx}"),
            bn_key: bn.then(|| format!("features.{}", idx + 1)),
            tap: format!("conv{i}"),
        };
        idx += if bn { 3 } else { 2 };
        l
    };
    // A stride-2 first layer and early pooling keep training within minutes on two cores.
    let c1 = conv(1, cfg.conv[0], 5, 2);
    let c2 = conv(2, cfg.conv[1], 3, 1);
    let c3 = conv(3, cfg.conv[2], 3, 1);
    let c4 = conv(4, cfg.conv[3], 3, 1);
    let c5 = conv(5, cfg.conv[4], 3, 1);
    let pool = |tap: &str| Layer::MaxPool { kernel: 2, stride: 2, pad: 0, tap: Some(tap.into()) };
    let n = classes.len();
    EncoderSpec {
        arch: "posenet".into(),
        layers: vec![
            c1,
            pool("pool1"),
            c2,
            pool("pool2"),
            c3,
            c4,
            c5,
            pool("pool5"),
            Layer::Flatten,
            Layer::Fc { out: cfg.fc[0], relu: true, key: "classifier.0".into(), tap: "fc6".into(), from: None },
            Layer::Fc { out: cfg.fc[1], relu: true, key: "classifier.2".into(), tap: "fc7".into(), from: None },
            Layer::Fc { out: n, relu: false, key: "classifier.4".into(), tap: "fc8".into(), from: None },
            Layer::Softmax { tap: "prob".into() },
            Layer::Fc { out: POSE_DIM, relu: false, key: "pose".into(), tap: "pose".into(), from: Some("fc7".into()) },
        ],
        input_size: [cfg.input_size, cfg.input_size],
        resize: super::Resize::Short(cfg.input_size),
        mean: [0.5, 0.5, 0.5],
        std: [0.25, 0.25, 0.25],
        classes,
    }
}
