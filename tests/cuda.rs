//! The CUDA backend, on a machine with a GPU (`cargo test --release --features cuda`):
//! encoders match torchvision's activations there too, forward passes and gradients agree
//! with the CPU, the commands run with `--device cuda`, and data-parallel training over a
//! device listed twice (`cuda:0,cuda:0`) takes the steps of one device.
//!
//! Without the `cuda` feature this file is empty; with it and no usable GPU, every test
//! fails naming the reason (a CUDA build is only tested where CUDA runs).
#![cfg(feature = "cuda")]

use burn::backend::cuda::CudaDevice;
use burn::module::Module;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use preimage::device::{Cpu, CpuAd, Cuda, CudaAd};
use preimage::encoder::{self, WeightSource};
use std::path::{Path, PathBuf};

mod common;
use common::{ok, s};

/// Relative agreement of f32 results with the CPU's: autotuned and GEMM kernels use the tensor
/// cores (TF32-like inputs, 1.8e-3 measured on posenet's conv5), the plain ones full f32.
const TOL: f32 = if cfg!(any(feature = "cuda-autotune", feature = "cuda-tune", feature = "cuda-gemm")) { 1e-2 } else { 1e-3 };

fn gpu() -> CudaDevice {
    preimage::device::cuda_device(0).unwrap_or_else(|e| panic!("the CUDA tests need a GPU: {e:#}"))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// Max |a - b| relative to the larger of max |b| and 1.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    d / max_abs(b).max(1.0)
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torchvision")
}

/// Every tap of the torchvision fixture networks, computed on the GPU, against PyTorch's.
#[test]
fn encoders_match_torchvision_on_the_gpu() {
    let dev = gpu();
    for (arch, name, ext) in [("alexnet", "alexnet_mini", "pth"), ("vgg11", "vgg11_mini", "safetensors"), ("vgg16_bn", "vgg16_bn_mini", "pth")] {
        let dir = fixtures();
        let (taps, _) = preimage::tensorfile::read(&dir.join(format!("{name}_taps.safetensors"))).unwrap();
        let input = &taps["input"];
        let sh = input.shape().to_vec();
        let enc = encoder::load::<Cuda>(arch, &WeightSource::File(dir.join(format!("{name}.{ext}"))), Some(sh[2]), &dev).unwrap();
        let x = Tensor::<Cuda, 4>::from_data(TensorData::new(input.to_f32(), [sh[0], sh[1], sh[2], sh[3]]), &dev);
        let names = enc.net.spec.taps();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let acts = enc.net.forward_taps(x, &refs, false).unwrap();
        for tap in &names {
            let got = acts[tap].clone().flat().into_data().to_vec::<f32>().unwrap();
            let d = rel_diff(&got, &taps[tap].to_f32());
            assert!(d < TOL, "{name}.{ext} tap {tap} on the GPU: relative difference {d}");
        }
    }
}

/// Random-weight networks at full input size: the same activations on both devices.
#[test]
fn forward_passes_agree_with_the_cpu() {
    let dev = gpu();
    for (arch, size) in [("posenet", 64), ("alexnet", 224), ("vgg16", 64)] {
        let c = encoder::load::<Cpu>(arch, &WeightSource::Random(3), Some(size), &Default::default()).unwrap().net;
        let g = encoder::load::<Cuda>(arch, &WeightSource::Random(3), Some(size), &dev).unwrap().net;
        let mut rng = preimage::rng::Rng::new(9);
        let data: Vec<f32> = (0..2 * 3 * size * size).map(|_| rng.uniform()).collect();
        let xc = Tensor::<Cpu, 4>::from_data(TensorData::new(data.clone(), [2, 3, size, size]), &Default::default());
        let xg = Tensor::<Cuda, 4>::from_data(TensorData::new(data, [2, 3, size, size]), &dev);
        let taps = c.spec.taps();
        for tap in [&taps[1], &taps[taps.len() / 2], &"fc8".to_string()] {
            let a = g.tap_flat(xg.clone(), tap, false).unwrap().into_data().to_vec::<f32>().unwrap();
            let b = c.tap_flat(xc.clone(), tap, false).unwrap().into_data().to_vec::<f32>().unwrap();
            let d = rel_diff(&a, &b);
            assert!(d < TOL, "{arch} {tap}: GPU vs CPU relative difference {d}");
        }
    }
}

/// One optimization-inversion evaluation (M&V's objective: feature match + TV + α-norm):
/// loss and gradient with respect to the image.
fn inversion_step<B: AutodiffBackend>(device: &B::Device) -> (f64, Vec<f32>) {
    use preimage::optimize::{self, param::Parameterization, transform::Transforms, Engine};
    let net = encoder::load::<B>("alexnet", &WeightSource::Random(1), Some(96), device).unwrap().net.no_grad();
    let mut rng = preimage::rng::Rng::new(5);
    let img: Vec<f32> = (0..3 * 96 * 96).map(|_| rng.uniform()).collect();
    let target = burn::module::AutodiffModule::valid(&net).tap_flat(Tensor::from_data(TensorData::new(img, [1, 3, 96, 96]), device), "conv4", false).unwrap();
    let cfg = optimize::preset("invert").unwrap();
    let obj = optimize::invert_objective(&net.spec, "conv4", Tensor::from_inner(target), &cfg.weights);
    let engine = Engine::new(net, obj, Parameterization::new(&cfg.param, [96, 96], device), Transforms::default(), 0).unwrap();
    let p: Vec<f32> = (0..3 * 96 * 96).map(|_| rng.uniform()).collect();
    let e = engine.eval(Tensor::from_data(TensorData::new(p, [1, 3 * 96 * 96]), device), 0, false).unwrap();
    (e.loss, e.grad.into_data().to_vec::<f32>().unwrap())
}

#[test]
fn inversion_gradients_agree_with_the_cpu() {
    let (lg, gg) = inversion_step::<CudaAd>(&gpu());
    let (lc, gc) = inversion_step::<CpuAd>(&Default::default());
    assert!((lg - lc).abs() <= TOL as f64 * lc.abs(), "loss GPU {lg} vs CPU {lc}");
    let d = gg.iter().zip(&gc).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / max_abs(&gc);
    assert!(d < 1e-2, "gradient GPU vs CPU relative difference {d}");
}

fn history(run: &Path) -> Vec<(f64, f64)> {
    let v: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    v.iter().map(|e| (e["train_loss"].as_f64().unwrap(), e["val_loss"].as_f64().unwrap())).collect()
}

fn close(a: &[(f64, f64)], b: &[(f64, f64)], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for ((ta, va), (tb, vb)) in a.iter().zip(b) {
        assert!((ta - tb).abs() <= tol * tb.abs() && (va - vb).abs() <= tol * vb.abs(), "{what}: {a:?} vs {b:?}");
    }
}

/// The commands on the GPU: decoder training (CPU vs GPU, one worker vs two), reconstruction,
/// optimization inversion and the benchmark at tiny sizes.
#[test]
fn commands_run_on_the_gpu_and_two_workers_take_the_steps_of_one() {
    gpu();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    ok(&["render", "--out", s(&data), "--count", "48", "--size", "32", "--seed", "2", "--classes", "chair,mug,arrow"]);
    // Codes extracted on the GPU are the CPU's.
    let extract = |dev: &str, name: &str| {
        let path = d.join(name);
        ok(&["extract", "--encoder", "posenet", "--input-size", "32", "--seed", "4", "--layer", "fc7", "--data", s(&data), "--out", s(&path), "--device", dev]);
        let cf = preimage::data::codes::CodeFile::read(&path).unwrap();
        (path, cf.tap("fc7").unwrap().to_f32())
    };
    let ((codes, g), (_, c)) = (extract("cuda", "gpu.safetensors"), extract("cpu", "cpu.safetensors"));
    assert!(rel_diff(&g, &c) < TOL, "GPU vs CPU codes: {}", rel_diff(&g, &c));

    // Pixel and feature losses: the same run on the CPU, the GPU and two workers sharing the
    // GPU. With the adversarial term too, two workers against one: the first epoch (a GAN's
    // runs drift apart from rounding alone after a few steps: measured 0.4 % in epoch 2).
    let model = "[model]\nfc = [16]\nbase_channels = 8\nspatial_convs = [8]\nup_channels = [8, 8, 4]\nconvs_per_stage = 1\n";
    let train_section = "[train]\nepochs = 2\nbatch_size = 7\nlr = 0.003\nseed = 5\nlog_every = 1\nimage_every = 2\n";
    let feature = "[loss]\npixel = 1.0\nfeature = 0.5\nfeature_tap = \"conv2\"\n";
    let adversarial = "adversarial = 0.1\n[discriminator]\nchannels = [4, 8]\nhidden = 8\n";
    let train = |cfg: &str, dev: &str, name: &str| {
        let (path, run) = (d.join(format!("{name}.toml")), d.join(name));
        std::fs::write(&path, cfg).unwrap();
        ok(&["train-decoder", "--config", s(&path), "--data", s(&data), "--encoder", "posenet", "--layer", "conv5", "--out", s(&run), "--device", dev]);
        history(&run)
    };
    let plain = format!("{model}{feature}{train_section}");
    let gpu = train(&plain, "cuda", "gpu");
    close(&gpu, &train(&plain, "cpu", "cpu"), 2.0 * TOL as f64, "GPU vs CPU");
    close(&train(&plain, "cuda:0,cuda:0", "gpu2"), &gpu, 2.0 * TOL as f64, "two workers vs one");
    let gan = format!("{model}{feature}{adversarial}{train_section}");
    close(&train(&gan, "cuda:0,cuda:0", "gan2")[..1], &train(&gan, "cuda", "gan1")[..1], 2.0 * TOL as f64, "GAN, two workers vs one");

    // A pixel-loss decoder from the GPU's code file, then reconstruction on the GPU.
    let cfg_fc7 = d.join("fc7.toml");
    std::fs::write(&cfg_fc7, format!("{model}{train_section}")).unwrap();
    let fc7 = d.join("fc7");
    ok(&["train-decoder", "--config", s(&cfg_fc7), "--codes", s(&codes), "--layer", "fc7", "--out", s(&fc7), "--device", "cuda"]);
    // Reconstructions keep the ids' class folders (`rec/chair/00001.png`); the GPU's PNGs are
    // the CPU's to a rounding step.
    let rec = |dev: &str| {
        let out = d.join(format!("rec-{dev}"));
        let text = ok(&["reconstruct", "--decoder", s(&fc7), "--codes", s(&codes), "--range", "0:4", "--out", s(&out), "--device", dev]);
        assert!(text.contains("wrote 4 images"), "{text}");
        out
    };
    let (rec_gpu, rec_cpu) = (rec("cuda"), rec("cpu"));
    let ids = preimage::data::codes::CodeFile::read(&codes).unwrap().ids;
    for id in &ids[..4] {
        let (a, b) = (preimage::reconstruct::output_path(&rec_gpu, id), preimage::reconstruct::output_path(&rec_cpu, id));
        let (a, b) = (image::open(&a).unwrap().to_rgb8(), image::open(&b).unwrap().to_rgb8());
        assert_eq!(a.dimensions(), b.dimensions());
        let worst = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert!(worst <= 1, "{id}: GPU and CPU reconstructions differ by {worst}/255");
    }
    let img = std::fs::read_dir(data.join("chair")).unwrap().next().unwrap().unwrap().path();
    let inv = d.join("inv.png");
    ok(&["invert", "--encoder", "posenet", "--input-size", "32", "--seed", "4", "--layer", "conv3", "--image", s(&img), "--steps", "20", "--final-steps", "2", "--out", s(&inv), "--quiet", "--device", "cuda"]);
    assert!(image::open(&inv).is_ok());
    let json = d.join("bench.json");
    let text = ok(&["bench", "--device", "cuda", "--quick", "--runs", "2", "--warmup", "1", "--json", s(&json)]);
    assert!(text.contains("decoder_step_a") && json.exists(), "{text}");
}
