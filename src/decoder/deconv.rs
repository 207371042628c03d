//! The up-convolution (transposed convolution), with its input and weight gradients from one
//! pass when training on the CPU.
//!
//! Burn 0.21's autodiff asks the backend for a transposed convolution's input gradient and its
//! weight gradient in two calls, and on Flex each gathers the same windows of the output
//! gradient (a fifth of the decoder training step's samples went to these gathers). On the CPU
//! training backend (`Autodiff<Flex>`) [`forward`] records a node of its own whose backward
//! asks for both at once (burn-flex's `conv_transpose2d_input_weight_backward`, one gather per
//! tile); every other backend, and a layer without bias, keeps Burn's `ConvTranspose2d`. The
//! forward pass is Flex's, unchanged.
use burn::nn::conv::ConvTranspose2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{ConvTransposeOptions, FloatTensor, ModuleOps};
use burn::tensor::{Tensor, TensorPrimitive};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::NoCheckpointing;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_flex::{Flex, FlexTensor};

use crate::device::{cast, CpuAd};

/// `layer.forward(x)`, with the one-pass gradients on `Autodiff<Flex>`.
pub fn forward<B: Backend>(layer: &ConvTranspose2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    // A type test rather than a trait bound, as for `leaky_relu`: the generic decoder would
    // otherwise need a backend-extension bound for this one op.
    let Some(bias) = &layer.bias else { return layer.forward(x) };
    let options = ConvTransposeOptions::new(layer.stride, layer.padding, layer.padding_out, layer.dilation, layer.groups);
    match cast::<_, (Tensor<CpuAd, 4>, Tensor<CpuAd, 4>, Tensor<CpuAd, 1>)>((x, layer.weight.val(), bias.val())) {
        Ok((x, w, b)) => {
            super::own_node();
            let y = recorded(x.into_primitive().tensor(), w.into_primitive().tensor(), b.into_primitive().tensor(), options);
            cast(Tensor::<CpuAd, 4>::from_primitive(TensorPrimitive::Float(y))).unwrap_or_else(|_| unreachable!("B is CpuAd"))
        }
        Err((x, _, _)) => layer.forward(x),
    }
}

#[derive(Debug)]
struct ConvTransposeBackward;

impl Backward<Flex, 3> for ConvTransposeBackward {
    /// The input, the weight and the bias (its shape for the bias gradient), and the options.
    type State = (FlexTensor, FlexTensor, FlexTensor, ConvTransposeOptions<2>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, weight, bias, options) = ops.state;
        if let Some(node) = node_b {
            grads.register::<Flex>(node.id, Flex::conv_transpose2d_bias_backward(x.clone(), bias, grad.clone()));
        }
        match (node_x, node_w) {
            (Some(nx), Some(nw)) => {
                let (dx, dw) = burn_flex::ops::conv_transpose::conv_transpose2d_input_weight_backward(x, weight, grad, &options);
                grads.register::<Flex>(nx.id, dx);
                grads.register::<Flex>(nw.id, dw);
            }
            (Some(nx), None) => grads.register::<Flex>(nx.id, Flex::conv_transpose2d_x_backward(weight, grad, options)),
            (None, Some(nw)) => grads.register::<Flex>(nw.id, Flex::conv_transpose2d_weight_backward(x, weight, grad, options)),
            (None, None) => {}
        }
    }
}

fn recorded(x: FloatTensor<CpuAd>, w: FloatTensor<CpuAd>, b: FloatTensor<CpuAd>, options: ConvTransposeOptions<2>) -> FloatTensor<CpuAd> {
    let forward = |x: FlexTensor, w: FlexTensor, b: FlexTensor| Flex::conv_transpose2d(x, w, Some(b), options.clone());
    match ConvTransposeBackward.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone(), b.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = forward(x.primitive.clone(), w.primitive.clone(), b.primitive.clone());
            prep.finish((x.primitive, w.primitive, b.primitive, options.clone()), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive, w.primitive, b.primitive)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Cpu;
    use burn::nn::conv::ConvTranspose2dConfig;
    use burn::tensor::{Distribution, TensorData};

    /// Values and all three gradients on the recorded path equal Burn's node, for the decoders'
    /// up-convolution on grids that take the one-gather backward (whole images per tile, and
    /// bands of one image) and for geometries that do not (stride 1 with a 3×3 kernel, two
    /// groups); also when the input needs no gradient (the weight's alone).
    #[test]
    fn recorded_node_matches_burns() {
        let device = Default::default();
        // (batch, grid, kernel, stride, [in, out] channels, padding, groups)
        let cases: [(usize, [usize; 2], usize, usize, [usize; 2], usize, usize); 6] = [
            // Three whole images per tile; bands of grid rows of one image; one odd-sized image.
            (18, [5, 7], 4, 2, [4, 6], 1, 1),
            (2, [28, 24], 4, 2, [6, 32], 1, 1),
            (2, [9, 11], 4, 2, [3, 5], 1, 1),
            // Another geometry through the same pass (stride 1, 3×3).
            (2, [6, 5], 3, 1, [4, 4], 1, 1),
            // Not taken: two groups; grid rows of 32 and more.
            (2, [5, 6], 4, 2, [4, 6], 1, 2),
            (1, [3, 33], 4, 2, [2, 3], 1, 1),
        ];
        for (i, &(batch, [h, w], k, stride, [ci, co], pad, groups)) in cases.iter().enumerate() {
            let layer = ConvTranspose2dConfig::new([ci, co], [k, k]).with_stride([stride, stride]).with_padding([pad, pad]).with_groups(groups).init::<CpuAd>(&device);
            let x0 = Tensor::<Cpu, 4>::random([batch, ci, h, w], Distribution::Normal(0.0, 1.0), &device);
            for input_grad in [true, false] {
                let run = |ours: bool| {
                    let x = Tensor::<CpuAd, 4>::from_inner(x0.clone());
                    let x = if input_grad { x.require_grad() } else { x };
                    let y = if ours { forward(&layer, x.clone()) } else { layer.forward(x.clone()) };
                    // A non-uniform output gradient: the sum of the output times a fixed pattern.
                    let pattern = Tensor::<CpuAd, 4>::from_data(TensorData::new((0..y.shape().num_elements()).map(|j| ((j * 7 % 13) as f32 - 6.0) / 6.0).collect::<Vec<f32>>(), y.dims()), &device);
                    let grads = (y.clone() * pattern).sum().backward();
                    let get = |t: Option<Tensor<Cpu, 4>>| t.map(|t| t.into_data().to_vec::<f32>().unwrap());
                    let dx = get(x.grad(&grads));
                    let dw = get(layer.weight.val().grad(&grads));
                    let db = layer.bias.as_ref().unwrap().val().grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                    (y.into_data().to_vec::<f32>().unwrap(), dx, dw.unwrap(), db)
                };
                let start = super::super::own_nodes();
                let ours = run(true);
                assert_eq!(super::super::own_nodes() - start, 1, "case {i}: forward records its own node");
                let burns = run(false);
                assert_eq!(super::super::own_nodes() - start, 1, "case {i}: Burn's layer records none");
                let close = |name: &str, a: &[f32], b: &[f32]| {
                    let scale = b.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
                    let worst = a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                    assert!(a.len() == b.len() && worst <= 1e-5 * scale, "case {i} ({input_grad}) {name}: {worst} of {scale}");
                };
                close("output", &ours.0, &burns.0);
                assert_eq!(ours.1.is_some(), input_grad, "case {i}: an input gradient exactly when asked");
                if let (Some(a), Some(b)) = (&ours.1, &burns.1) {
                    close("input gradient", a, b);
                }
                close("weight gradient", &ours.2, &burns.2);
                close("bias gradient", &ours.3, &burns.3);
            }
        }
    }

    /// Other backends, and layers without bias, take Burn's layer unchanged.
    #[test]
    fn plain_backend_is_unchanged() {
        let device = Default::default();
        let layer = ConvTranspose2dConfig::new([2, 3], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init::<Cpu>(&device);
        let x = Tensor::<Cpu, 4>::random([1, 2, 3, 3], Distribution::Normal(0.0, 1.0), &device);
        let want = layer.forward(x.clone()).into_data();
        let start = super::super::own_nodes();
        assert_eq!(forward(&layer, x).into_data(), want);
        assert_eq!(super::super::own_nodes(), start, "no own node off Autodiff<Flex>");
    }
}
