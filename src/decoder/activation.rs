//! Leaky ReLU, with one pass forward and one pass backward when training on the CPU.
//!
//! Burn 0.21's autodiff has no leaky-ReLU node: it records `lower_elem`, `mul_scalar` and
//! `mask_where`, and the backward allocates two zero tensors for two `mask_where` passes plus a
//! `mul_scalar` and a sum. On the CPU training backend (`Autodiff<Flex>`) [`leaky_relu`] records
//! one node instead: its forward is Flex's fused `leaky_relu`, its backward one pass over the
//! input and the gradient. Every other backend (Flex without autodiff, CUDA) keeps Burn's own
//! function. The results are the same: slope where the input is below zero, 1 elsewhere.
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ActivationOps, FloatTensor};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

use crate::device::{cast, CpuAd};

/// `x` where `x ≥ 0`, `slope · x` elsewhere (Burn's `leaky_relu`, faster on `Autodiff<Flex>`).
pub fn leaky_relu<B: Backend, const D: usize>(x: Tensor<B, D>, slope: f64) -> Tensor<B, D> {
    // A type test rather than a trait bound: every generic model and loop would otherwise need
    // a backend-extension bound for this one op.
    match cast::<_, Tensor<CpuAd, D>>(x) {
        Ok(x) => {
            super::own_node();
            let y = Tensor::<CpuAd, D>::from_primitive(TensorPrimitive::Float(fused(x.into_primitive().tensor(), slope)));
            cast(y).unwrap_or_else(|_| unreachable!("B is CpuAd"))
        }
        Err(x) => burn::tensor::activation::leaky_relu(x, slope),
    }
}

#[derive(Debug)]
struct LeakyReluBackward;

impl Backward<Flex, 1> for LeakyReluBackward {
    /// A tensor whose sign is the input's (the output when the slope is positive: the next
    /// layer keeps it anyway, so nothing more stays in memory) and the slope.
    type State = (FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, slope) = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| input_gradient(x, grad, slope));
    }
}

fn fused(x: FloatTensor<CpuAd>, slope: f64) -> FloatTensor<CpuAd> {
    match LeakyReluBackward.prepare::<NoCheckpointing>([x.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = Flex::leaky_relu(x.primitive.clone(), slope.into());
            let sign = if slope > 0.0 { y.clone() } else { x.primitive };
            prep.finish((sign, slope), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(Flex::leaky_relu(x.primitive, slope.into())),
    }
}

/// `grad` where `x ≥ 0`, `slope · grad` elsewhere, in one pass (`x` may be the output: same sign).
fn input_gradient(x: FlexTensor, grad: FlexTensor, slope: f64) -> FlexTensor {
    let s32 = slope as f32;
    burn_flex::ops::binary::binary_op(
        x,
        grad,
        move |x: f32, g: f32| if x >= 0.0 { g } else { s32 * g },
        move |x: f64, g: f64| if x >= 0.0 { g } else { slope * g },
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Cpu;
    use burn::tensor::TensorData;

    /// Values and gradients on the fused path equal Burn's composition, including at zero and
    /// for a tensor used twice (the gradients of both uses add up).
    #[test]
    fn fused_path_matches_burns_composition() {
        let device = Default::default();
        let data = TensorData::new(vec![-2.0f32, -0.5, 0.0, 0.25, 3.0, -1e-3, 7.5, -4.0], [2, 4]);
        let weights = TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5, -1.0, 2.0, 0.25, 4.0], [2, 4]);
        let run = |fused_path: bool, slope: f64| {
            let x = Tensor::<CpuAd, 2>::from_data(data.clone(), &device).require_grad();
            let w = Tensor::<CpuAd, 2>::from_data(weights.clone(), &device);
            let act = |t: Tensor<CpuAd, 2>| {
                if fused_path {
                    leaky_relu(t, slope)
                } else {
                    burn::tensor::activation::leaky_relu(t, slope)
                }
            };
            let y = act(x.clone() * 3.0) + act(x.clone()) * w;
            let grads = y.clone().sum().backward();
            let g = x.grad(&grads).expect("x has a gradient");
            (y.into_data().to_vec::<f32>().unwrap(), g.into_data().to_vec::<f32>().unwrap())
        };
        let start = super::super::own_nodes();
        let (y_fused, g_fused) = run(true, 0.2);
        assert_eq!(super::super::own_nodes() - start, 2, "both activations take the fused node");
        let (y_burn, g_burn) = run(false, 0.2);
        assert_eq!(super::super::own_nodes() - start, 2, "Burn's function records none");
        assert_eq!(y_fused, y_burn);
        assert_eq!(g_fused, g_burn);
        // A zero or negative slope (the state is then the input, not the output).
        for slope in [0.0, -0.3] {
            assert_eq!(run(true, slope), run(false, slope), "slope {slope}");
        }
        // d/dx [leaky(3x) + w·leaky(x)] at x = -2: 3·0.2 + 1·0.2 = 0.8; at x = 0.25: 3 + 0.5.
        assert!((g_fused[0] - 0.8).abs() < 1e-6 && (g_fused[3] - 3.5).abs() < 1e-6, "{g_fused:?}");
    }

    /// Other backends take Burn's function unchanged.
    #[test]
    fn plain_backend_is_unchanged() {
        let x = Tensor::<Cpu, 1>::from_floats([-1.0, 2.0], &Default::default());
        let start = super::super::own_nodes();
        assert_eq!(leaky_relu(x, 0.1).into_data().to_vec::<f32>().unwrap(), vec![-0.1, 2.0]);
        assert_eq!(super::super::own_nodes(), start);
    }
}
