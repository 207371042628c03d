//! Pose edits: a new view of the same object from its code.
//!
//! The code z (any posenet tap the decoder inverts) is optimized with Adam so that the frozen
//! encoder's pose head, reading the decoded image, reports the target angles, while a
//! penalty `keep · ‖z − z₀‖² / ‖z₀‖²` holds it near the original code (same object, colour,
//! light). Going through the decoder makes this work for every tap, fc8 included, and means
//! the result is judged on the image the user sees, not on a code the decoder may not honour.
use crate::decoder::Decoder;
use crate::encoder::ConvNet;
use crate::optimize::solver::{self, Eval, Problem, SolverConfig, SolverKind};
use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};

/// Default Adam steps and code-closeness weight.
pub const STEPS: usize = 150;
pub const KEEP: f32 = 10.0;
/// Adam's step as a fraction of the original codes' RMS value.
pub const LR_FRACTION: f64 = 0.05;

/// Target pose for one code: the pose head's `(sin k·az, cos k·az, sin el, cos el)` and which of
/// the four entries count.
pub type PoseTarget = ([f32; 4], [f32; 4]);

/// What the encoder reads from images: a pose row each and, when it classifies, the class.
pub type PoseReading = (Vec<Vec<f32>>, Option<Vec<usize>>);

/// [`PoseTarget`] for an azimuth and elevation (azimuth is free for classes with continuous
/// symmetry, `k = 0`).
pub fn target_row(azimuth: f32, elevation: f32, symmetry: u32) -> PoseTarget {
    let k = symmetry as f32;
    let (a, e) = ((azimuth * k).to_radians(), elevation.to_radians());
    let m = if symmetry == 0 { 0.0 } else { 1.0 };
    ([a.sin(), a.cos(), e.sin(), e.cos()], [m, m, 1.0, 1.0])
}

/// Elevation (degrees) read from a pose output row.
pub fn elevation_of(row: &[f32]) -> f32 {
    row[2].atan2(row[3]).to_degrees()
}

/// The pose head's output `[n, 4]` for images `[n, 3, H, W]` in `[0,1]`.
pub fn read_pose<B: Backend>(net: &ConvNet<B>, images: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
    let mut acts = net.encode(images, &["pose"], false)?;
    Ok(acts.remove("pose").context("the encoder returned no pose")?.flat())
}

/// Pose rows and, when the encoder classifies, the class index per image.
pub fn read_pose_and_class<B: Backend>(net: &ConvNet<B>, images: Tensor<B, 4>) -> Result<PoseReading> {
    let has_fc8 = net.spec.num_classes() > 0 && net.spec.taps().iter().any(|t| t == "fc8");
    let taps: &[&str] = if has_fc8 { &["pose", "fc8"] } else { &["pose"] };
    let mut acts = net.encode(images, taps, false)?;
    let pose = rows(acts.remove("pose").context("the encoder returned no pose")?.flat());
    let class = acts.remove("fc8").map(|a| rows(a.flat()).iter().map(|r| crate::metrics::argmax(r).unwrap_or(0)).collect());
    Ok((pose, class))
}

/// The rows of a `[n, d]` tensor.
pub fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let d = t.dims()[1].max(1);
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor").chunks_exact(d).map(<[f32]>::to_vec).collect()
}

struct PoseProblem<'a, B: AutodiffBackend> {
    decoder: &'a Decoder<B>,
    net: &'a ConvNet<B>,
    z0: Tensor<B::InnerBackend, 2>,
    /// ‖z₀‖² per row, `[n, 1]`.
    z0_norm2: Tensor<B::InnerBackend, 2>,
    target: Tensor<B::InnerBackend, 2>,
    mask: Tensor<B::InnerBackend, 2>,
    keep: f64,
    /// Mean pose term per code at the first and the latest step.
    first: Option<f64>,
    last: f64,
}

impl<B: AutodiffBackend> Problem<B::InnerBackend> for PoseProblem<'_, B> {
    fn eval(&mut self, x: Tensor<B::InnerBackend, 2>, step: usize, _stochastic: bool) -> Result<Eval<B::InnerBackend>> {
        let z = Tensor::<B, 2>::from_inner(x).require_grad();
        let pose = read_pose(self.net, self.decoder.forward(z.clone()))?;
        let pose_term = ((pose - Tensor::from_inner(self.target.clone())).powf_scalar(2.0) * Tensor::from_inner(self.mask.clone())).sum();
        let dz = z.clone() - Tensor::from_inner(self.z0.clone());
        let keep_term = (dz.powf_scalar(2.0).sum_dim(1) / Tensor::from_inner(self.z0_norm2.clone())).sum() * self.keep;
        let (p, k) = (pose_term.clone().into_scalar().elem::<f64>(), keep_term.clone().into_scalar().elem::<f64>());
        if !(p + k).is_finite() {
            bail!("pose edit: the loss became {} at step {step}; try a smaller --keep or fewer --steps", p + k);
        }
        let grads = (pose_term + keep_term).backward();
        let grad = z.grad(&grads).context("the code received no gradient")?;
        let n = self.z0.dims()[0] as f64;
        self.first.get_or_insert(p / n);
        self.last = p / n;
        Ok(Eval { loss: p + k, grad, terms: vec![("pose".into(), p / n), ("keep".into(), k / n)] })
    }
}

/// Optimize codes `z0` (`[n, d]`) toward the target pose rows (`[n, 4]` with masks); returns
/// the edited codes.
pub fn edit_codes<B: AutodiffBackend>(decoder: &Decoder<B>, net: &ConvNet<B>, z0: Tensor<B::InnerBackend, 2>, targets: &[PoseTarget], steps: usize, keep: f32) -> Result<Tensor<B::InnerBackend, 2>> {
    let [n, _] = z0.dims();
    if targets.len() != n {
        bail!("{} pose targets for {n} codes", targets.len());
    }
    let device = z0.device();
    let rows = |f: fn(&PoseTarget) -> [f32; 4]| Tensor::from_data(TensorData::new(targets.iter().flat_map(f).collect::<Vec<f32>>(), [n, 4]), &device);
    let z0_norm2 = z0.clone().powf_scalar(2.0).sum_dim(1).clamp_min(1e-12);
    let rms = (z0_norm2.clone().sum().into_scalar().elem::<f64>() / z0.dims().iter().product::<usize>() as f64).sqrt().max(1e-3);
    let decoder = decoder.clone().no_grad();
    let net = net.clone().no_grad();
    let mut problem = PoseProblem::<B> { decoder: &decoder, net: &net, z0: z0.clone(), z0_norm2, target: rows(|t| t.0), mask: rows(|t| t.1), keep: keep as f64, first: None, last: 0.0 };
    let cfg = SolverConfig { kind: SolverKind::Adam, steps, final_steps: 0, lr: LR_FRACTION * rms, momentum: 0.9, ..Default::default() };
    let z = solver::minimize(&cfg, z0, &mut problem, false)?;
    println!("pose edit: squared pose-head error per code {:.4} → {:.4} (before the last step)", problem.first.unwrap_or(0.0), problem.last);
    Ok(z)
}
