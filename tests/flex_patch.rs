//! The vendored burn-flex patch (row-wise strided copies and broadcast binary ops) must give
//! exactly what the element-by-element definition gives.
use burn::tensor::{Tensor, TensorData};

type B = preimage::device::Cpu;

fn values(t: Tensor<B, 4>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn swapped_dims_copy_matches_manual_transpose() {
    let (n, c, h, w) = (3, 4, 5, 6);
    let data: Vec<f32> = (0..n * c * h * w).map(|i| i as f32).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [n, c, h, w]), &Default::default());
    // swap_dims + reshape forces a contiguous copy of a [C, N, H·W] layout.
    let got = x.swap_dims(0, 1).reshape([c, n, h, w]);
    let got = values(got);
    for ci in 0..c {
        for ni in 0..n {
            for k in 0..h * w {
                assert_eq!(got[(ci * n + ni) * h * w + k], data[(ni * c + ci) * h * w + k]);
            }
        }
    }
}

#[test]
fn broadcast_binary_ops_match_manual() {
    let (n, c, h, w) = (2, 3, 4, 5);
    let device = Default::default();
    let data: Vec<f32> = (0..n * c * h * w).map(|i| (i as f32 * 0.37).sin()).collect();
    let per_c: Vec<f32> = (0..c).map(|i| 1.0 + i as f32).collect();
    let x = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [n, c, h, w]), &device);
    let s = Tensor::<B, 4>::from_data(TensorData::new(per_c.clone(), [1, c, 1, 1]), &device);
    // Non-contiguous lhs too (a permuted view), to exercise the general path.
    let xt = x.clone().permute([0, 1, 3, 2]);
    let sub = values(x.clone() - s.clone());
    let div = values(xt.clone() / s.clone().permute([0, 1, 3, 2]));
    let mul = values(s.clone() * x.clone());
    for ni in 0..n {
        for ci in 0..c {
            for y in 0..h {
                for z in 0..w {
                    let i = ((ni * c + ci) * h + y) * w + z;
                    assert_eq!(sub[i], data[i] - per_c[ci]);
                    assert_eq!(mul[i], per_c[ci] * data[i]);
                    let it = ((ni * c + ci) * w + z) * h + y;
                    assert_eq!(div[it], data[i] / per_c[ci]);
                }
            }
        }
    }
}
