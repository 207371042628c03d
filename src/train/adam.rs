//! Adam (Kingma & Ba 2015) with Burn's update rule, in one pass per parameter on the CPU.
//!
//! Burn's `Adam` updates a parameter with about fourteen element-wise tensor ops, each a full
//! pass that allocates a fresh buffer; for the 50 M parameters of D&B's fc6 decoder `perf` put
//! about half of a training step there (page faults included). On the CPU backend this one does
//! the same f32 arithmetic, in the same order, in one loop over the parameter, its gradient and
//! both moments, in place (Flex hands over a uniquely owned buffer without copying). Other
//! backends (CUDA) take Burn's own tensor ops. The state is Burn's [`AdamState`] record, so
//! checkpoints written with Burn's Adam load, and the results equal Burn's (tested).

use std::any::TypeId;

use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, SimpleOptimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData};

/// What [`Adam::step_host`] hands back when it cannot take a tensor: (parameter, gradient, state).
type StepInputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>, Option<AdamState<B, D>>);

/// Below this many elements one thread does the update (spawning costs more).
const PARALLEL_MIN: usize = 1 << 16;

/// Adam with Burn's defaults (β₁ 0.9, β₂ 0.999, ε 1e-5, no weight decay); no AMSGrad.
#[derive(Clone, Debug)]
pub struct Adam {
    pub beta_1: f32,
    pub beta_2: f32,
    pub epsilon: f32,
    /// L2 penalty added to the gradient (`weight_decay · θ`), as `torch.optim.Adam`'s
    /// `weight_decay` and Caffe's (D&B's solver) do: not AdamW's decoupled decay.
    pub weight_decay: f32,
}

impl Default for Adam {
    fn default() -> Self {
        Adam { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-5, weight_decay: 0.0 }
    }
}

impl Adam {
    /// Adam with these betas and Burn's default ε.
    pub fn new(betas: [f64; 2]) -> Self {
        Adam { beta_1: betas[0] as f32, beta_2: betas[1] as f32, ..Default::default() }
    }

    pub fn with_epsilon(self, epsilon: f32) -> Self {
        Adam { epsilon, ..self }
    }

    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        Adam { weight_decay: weight_decay as f32, ..self }
    }

    /// The optimizer for module `M` (what `AdamConfig::init` returns for Burn's Adam).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(self) -> OptimizerAdaptor<Adam, M, B> {
        OptimizerAdaptor::from(self)
    }

    /// Burn's `AdamConfig` with the same settings (the reference for tests and other backends).
    pub fn burn_config(&self) -> AdamConfig {
        let decay = (self.weight_decay != 0.0).then(|| WeightDecayConfig::new(self.weight_decay));
        AdamConfig::new().with_beta_1(self.beta_1).with_beta_2(self.beta_2).with_epsilon(self.epsilon).with_weight_decay(decay)
    }

    /// Both bias corrections folded into one factor `sqrt(1 − β₂ᵗ) / (1 − β₁ᵗ)` and ε scaled
    /// to match, `ε · sqrt(1 − β₂ᵗ)` (Burn's and PyTorch's rule), computed as Burn does.
    fn factors(&self, time: usize) -> (f32, f32) {
        let t = time as i32;
        let bc2 = (1.0 - self.beta_2.powi(t)).sqrt();
        (bc2 / (1.0 - self.beta_1.powi(t)), self.epsilon * bc2)
    }

    /// Update one run of elements in place.
    #[allow(clippy::too_many_arguments)]
    fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], (factor, eps): (f32, f32), lr: f32) {
        let (b1, b2, wd) = (self.beta_1, self.beta_2, self.weight_decay);
        let (f1, f2) = (1.0 - b1, 1.0 - b2);
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            // Burn's order: θ·λ + g (skipped at λ = 0, where it is g exactly anyway).
            let g = if wd != 0.0 { *p * wd + g } else { g };
            *m = *m * b1 + g * f1;
            *v = *v * b2 + (g * g) * f2;
            *p -= (*m * factor) / (v.sqrt() + eps) * lr;
        }
    }

    /// The host-memory step; hands its inputs back when a tensor is not f32 (the caller then
    /// takes Burn's path).
    fn step_host<B: Backend, const D: usize>(&self, lr: LearningRate, tensor: Tensor<B, D>, grad: Tensor<B, D>, state: Option<AdamState<B, D>>) -> Result<(Tensor<B, D>, AdamState<B, D>), StepInputs<B, D>> {
        let f32_only = tensor.dtype() == DType::F32 && grad.dtype() == DType::F32 && state.as_ref().is_none_or(|s| s.momentum.max_moment_2.is_none() && s.momentum.moment_1.dtype() == DType::F32 && s.momentum.moment_2.dtype() == DType::F32);
        if !f32_only {
            return Err((tensor, grad, state));
        }
        let (device, shape) = (tensor.device(), tensor.shape());
        let (time, m, v) = match state {
            Some(s) => (s.momentum.time + 1, s.momentum.moment_1.into_data(), s.momentum.moment_2.into_data()),
            None => (1, TensorData::zeros::<f32, _>(shape.clone()), TensorData::zeros::<f32, _>(shape.clone())),
        };
        let (mut p, g, mut m, mut v) = (tensor.into_data(), grad.into_data(), m, v);
        let factors = self.factors(time);
        {
            let (ps, gs) = (p.as_mut_slice::<f32>().expect("f32 checked"), g.as_slice::<f32>().expect("f32 checked"));
            let (ms, vs) = (m.as_mut_slice::<f32>().expect("f32 checked"), v.as_mut_slice::<f32>().expect("f32 checked"));
            let threads = crate::util::cpu_threads().min(ps.len() / PARALLEL_MIN).max(1);
            let chunk = ps.len().div_ceil(threads).max(1);
            if threads == 1 {
                self.update(ps, gs, ms, vs, factors, lr as f32);
            } else {
                std::thread::scope(|s| {
                    let parts = ps.chunks_mut(chunk).zip(gs.chunks(chunk)).zip(ms.chunks_mut(chunk)).zip(vs.chunks_mut(chunk));
                    for (((p, g), m), v) in parts {
                        s.spawn(move || self.update(p, g, m, v, factors, lr as f32));
                    }
                });
            }
        }
        let t = |d: TensorData| Tensor::<B, D>::from_data(d, &device);
        Ok((t(p), AdamState::new(AdaptiveMomentumState::new(time, t(m), t(v)))))
    }
}

impl<B: Backend> SimpleOptimizer<B> for Adam {
    type State<const D: usize> = AdamState<B, D>;

    fn step<const D: usize>(&self, lr: LearningRate, tensor: Tensor<B, D>, grad: Tensor<B, D>, state: Option<Self::State<D>>) -> (Tensor<B, D>, Option<Self::State<D>>) {
        // The one-pass update reads and writes host memory: only for the CPU backend.
        let (tensor, grad, state) = if TypeId::of::<B>() == TypeId::of::<crate::device::Cpu>() {
            match self.step_host(lr, tensor, grad, state) {
                Ok((t, s)) => return (t, Some(s)),
                Err(back) => back,
            }
        } else {
            (tensor, grad, state)
        };
        SimpleOptimizer::<B>::step(&self.burn_config().build(), lr, tensor, grad, state)
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        <burn::optim::Adam as SimpleOptimizer<B>>::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::CpuAd;
    use burn::module::{Module, Param};
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, Optimizer};

    fn params(m: &Linear<CpuAd>) -> Vec<f32> {
        let mut v = m.weight.val().into_data().to_vec::<f32>().unwrap();
        v.extend(m.bias.as_ref().unwrap().val().into_data().to_vec::<f32>().unwrap());
        v
    }

    /// Same start, same data: our Adam and Burn's give the same parameters after every step
    /// (weight 300×500 takes the threaded path, the bias the single-thread one).
    #[test]
    fn matches_burns_adam_step_for_step() {
        let device = Default::default();
        // Explicit values: Burn initializes parameters lazily, each clone on its own.
        let mut start: Linear<CpuAd> = LinearConfig::new(300, 500).init(&device);
        let data = |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.73).sin() * 0.1).collect::<Vec<f32>>();
        start.weight = Param::from_tensor(Tensor::from_data(TensorData::new(data(300 * 500, 1.0), [300, 500]), &device));
        start.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(data(500, 2.0), [500]), &device)));
        for decay in [0.0, 0.3] {
        let (mut ours, mut theirs) = (start.clone(), start.clone().fork(&device));
        let adam = Adam::new([0.8, 0.99]).with_epsilon(1e-6).with_weight_decay(decay);
        let (mut o1, mut o2) = (adam.clone().init::<CpuAd, Linear<CpuAd>>(), adam.burn_config().init::<CpuAd, Linear<CpuAd>>());
        let x = Tensor::<CpuAd, 2>::from_data(TensorData::new((0..4 * 300).map(|i| ((i as f32) * 0.37).sin()).collect::<Vec<_>>(), [4, 300]), &device);
        for step in 0..4 {
            let lr = 1e-2 / (1 + step) as f64;
            let g1 = GradientsParams::from_grads(ours.forward(x.clone()).powf_scalar(2.0).mean().backward(), &ours);
            let g2 = GradientsParams::from_grads(theirs.forward(x.clone()).powf_scalar(2.0).mean().backward(), &theirs);
            ours = o1.step(lr, ours, g1);
            theirs = o2.step(lr, theirs, g2);
            let (a, b) = (params(&ours), params(&theirs));
            let worst = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-6, "weight decay {decay}, step {step}: differs from Burn's Adam by {worst}");
            assert!(a != params(&start), "step {step}: parameters did not move");
        }
        // The CPU backend takes the one-pass path (the comparison above is not Burn vs Burn).
        let t = Tensor::<crate::device::Cpu, 1>::from_data(TensorData::new(data(10, 3.0), [10]), &device);
        assert!(adam.step_host(1e-3, t.clone(), t, None).is_ok());
        // Its state record round-trips: a reloaded optimizer goes on exactly the same.
        let mut o3 = adam.init::<CpuAd, Linear<CpuAd>>().load_record(o1.to_record());
        let g1 = GradientsParams::from_grads(ours.forward(x.clone()).sum().backward(), &ours);
        let g3 = GradientsParams::from_grads(ours.forward(x.clone()).sum().backward(), &ours);
        assert_eq!(params(&o1.step(1e-3, ours.clone(), g1)), params(&o3.step(1e-3, ours, g3)));
        }
    }
}
