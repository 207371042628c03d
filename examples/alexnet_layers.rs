//! Per-layer times of AlexNet's forward pass on the CPU backend (torchvision's layer shapes,
//! random weights), to set beside `bench/alexnet_layers.py` (the same layers in PyTorch).
//! Median of RUNS after one warm-up, in ms.
//!
//! cargo run --release --example alexnet_layers -- [BATCH=32] [RUNS=10]
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation::relu, Distribution, Tensor};
use preimage::device::Cpu as B;
use std::time::Instant;

fn median_ms(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut v: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).map_or(default, |s| s.parse().expect("BATCH and RUNS are whole numbers"));
    let (n, runs) = (arg(1, 32), arg(2, 10));
    // As the `preimage` binary does: ops start on a pool worker instead of waking one.
    preimage::util::on_cpu_workers(|| {
        let d = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let mut times = Vec::new();
        // (in, out, kernel, stride, padding, input side)
        let convs = [(3, 64, 11, 4, 2, 224), (64, 192, 5, 1, 2, 27), (192, 384, 3, 1, 1, 13), (384, 256, 3, 1, 1, 13), (256, 256, 3, 1, 1, 13)];
        for (i, &(ci, co, k, s, p, side)) in convs.iter().enumerate() {
            let x = Tensor::<B, 4>::random([n, ci, side, side], normal, &d);
            let w = Tensor::<B, 4>::random([co, ci, k, k], normal, &d);
            let b = Tensor::<B, 1>::random([co], normal, &d);
            let opts = ConvOptions::new([s, s], [p, p], [1, 1], 1);
            times.push((format!("conv{}", i + 1), median_ms(runs, || drop(relu(conv2d(x.clone(), w.clone(), Some(b.clone()), opts.clone())).into_data()))));
        }
        for &(c, side) in &[(64usize, 55usize), (192, 27), (256, 13)] {
            let x = Tensor::<B, 4>::random([n, c, side, side], normal, &d);
            times.push((format!("pool{c}x{side}"), median_ms(runs, || drop(max_pool2d(x.clone(), [3, 3], [2, 2], [0, 0], [1, 1], false).into_data()))));
        }
        for &(i, o) in &[(9216usize, 4096usize), (4096, 4096), (4096, 1000)] {
            let x = Tensor::<B, 2>::random([n, i], normal, &d);
            let w = preimage::encoder::net::fc_weight(Tensor::<B, 2>::random([o, i], normal, &d));
            let b = Tensor::<B, 1>::random([o], normal, &d).unsqueeze();
            times.push((format!("fc{i}x{o}"), median_ms(runs, || drop(relu(x.clone().matmul(w.clone()) + b.clone()).into_data()))));
        }
        println!("{}", times.iter().map(|(k, v)| format!("{k}={v:.1}")).collect::<Vec<_>>().join(" "));
    })
}
