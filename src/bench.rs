//! `preimage bench`: fixed workloads timed the same way as `bench/pytorch_reference.py`
//! (median of N runs after warm-up, with min and max, and the peak resident memory of each),
//! so that the two can be compared in one table.
use crate::encoder::{self, ConvNet, WeightSource};
use crate::rng::Rng;
use anyhow::{bail, Result};
use burn::module::Module;
use burn::nn::conv::{ConvTranspose2d, ConvTranspose2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, Optimizer};
use crate::decoder::activation::leaky_relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One workload's timing, in milliseconds per run (or images/s for throughput).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Timing {
    pub name: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
    /// Peak resident set size during the workload, MiB (Linux; None elsewhere).
    pub peak_mib: Option<f64>,
    /// GPU memory the workload held: the memory pool's reserved bytes after it, the pool
    /// emptied before (PyTorch: `torch.cuda.max_memory_reserved`), MiB; None on the CPU.
    #[serde(default)]
    pub device_mib: Option<f64>,
    /// Extra derived figure (images/s, speed-up ratio...), with its meaning in `note`.
    pub value: Option<f64>,
    pub note: String,
}

/// Where and how a set of timings was taken, saved beside them (`--json`) so that a file says
/// which program, machine, device and thread count it describes; `bench/pytorch_reference.py`
/// writes the same fields.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Context {
    /// "preimage 0.1.0", "torch 2.15.0".
    pub program: String,
    /// "cpu", "cuda:0", ...
    pub device: String,
    /// The CPU's model name (Linux's `/proc/cpuinfo`), where known.
    pub cpu: Option<String>,
    /// The GPU's name for a CUDA run (from `nvidia-smi`), where known.
    #[serde(default)]
    pub gpu: Option<String>,
    /// Threads of the CPU backend's pool (PyTorch: `torch.get_num_threads()`).
    pub threads: usize,
    /// When the run began, UTC, "YYYY-MM-DD HH:MM".
    pub date: String,
}

impl Context {
    /// This process's context for a run on `device`.
    pub fn here(device: &crate::device::DeviceSpec) -> Self {
        let device = device.to_string();
        let gpu = device.starts_with("cuda").then(|| gpu_name(device.trim_start_matches("cuda").trim_start_matches(':'))).flatten();
        Context { program: format!("preimage {}", env!("CARGO_PKG_VERSION")), device, cpu: cpu_model(), gpu, threads: crate::util::cpu_threads(), date: utc_now() }
    }

    /// One line for the table's head.
    pub fn line(&self) -> String {
        let mut s = format!("{} on {}", self.program, self.device);
        if let Some(g) = &self.gpu {
            s += &format!(" ({g})");
        }
        if let Some(c) = &self.cpu {
            s += &format!(", {c}");
        }
        let plural = if self.threads == 1 { "" } else { "s" };
        format!("{s}, {} thread{plural}, {} UTC", self.threads, self.date)
    }
}

/// The timings of one `preimage bench --json` or `bench/pytorch_reference.py --json` file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// None in files written before the context was saved (a bare list of timings).
    pub context: Option<Context>,
    pub workloads: Vec<Timing>,
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The name `nvidia-smi` gives GPU `index` (the first where none is given).
fn gpu_name(index: &str) -> Option<String> {
    let i = index.split(',').next().filter(|i| !i.is_empty()).unwrap_or("0");
    let out = std::process::Command::new("nvidia-smi").args(["--query-gpu=name", "--format=csv,noheader", "-i", i]).output().ok()?;
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !name.is_empty()).then_some(name)
}

fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    utc_date(secs)
}

/// Unix time `secs` as a UTC date, "YYYY-MM-DD HH:MM" (the proleptic Gregorian calendar from
/// the day count; no time-zone database needed).
pub fn utc_date(secs: u64) -> String {
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", rest / 3600, rest % 3600 / 60)
}

#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Timed runs per workload (after warm-up).
    pub runs: usize,
    pub warmup: usize,
    /// Tiny sizes for a smoke test (CI); the numbers then mean nothing.
    pub quick: bool,
    /// Rendered image folder for the extraction throughput (rendered into a temp dir if None).
    pub data: Option<PathBuf>,
    /// Run only workloads whose name contains one of these (all when empty).
    pub only: Vec<String>,
}

// Every workload's name, as in the table and the JSON (and `bench/pytorch_reference.py`).
const STEP_A: &str = "decoder_step_a_512_to_64";
const STEP_B: &str = "decoder_step_b_fc6_to_227";
const FORWARD_POSENET: &str = "encoder_forward_posenet_64";
const FORWARD_ALEXNET: &str = "encoder_forward_alexnet_224";
const FORWARD_VGG16: &str = "encoder_forward_vgg16_224";
const OPTIM_POSENET: &str = "optim_iteration_posenet_conv5";
const OPTIM_ALEXNET: &str = "optim_iteration_alexnet_conv5";
const OPTIM_VGG16: &str = "optim_iteration_vgg16_conv5_3";
const DECODER_FORWARD: &str = "decoder_forward_1_image";
const EXTRACTION: &str = "extract_posenet_4_taps";
/// All workloads, in the order they run.
pub const WORKLOADS: [&str; 10] = [STEP_A, STEP_B, FORWARD_POSENET, FORWARD_ALEXNET, FORWARD_VGG16, OPTIM_POSENET, OPTIM_ALEXNET, OPTIM_VGG16, DECODER_FORWARD, EXTRACTION];

impl BenchOptions {
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| name.contains(o.as_str()))
    }

    /// A `--only` fragment that names no workload is a typo, not an empty table.
    fn check_only(&self) -> Result<()> {
        for o in &self.only {
            if !WORKLOADS.iter().any(|w| w.contains(o.as_str())) {
                bail!("--only '{o}' matches no workload (workloads: {})", WORKLOADS.join(", "));
            }
        }
        Ok(())
    }
}

/// Device memory of an accelerator, where there is one.
struct DeviceMemory {
    cleanup: Box<dyn Fn()>,
    reserved: Option<Box<dyn Fn() -> u64>>,
}

impl DeviceMemory {
    fn of<B: Backend>(device: &B::Device) -> Self {
        let d = device.clone();
        DeviceMemory { cleanup: Box::new(move || B::memory_cleanup(&d)), reserved: gpu_reserved(device) }
    }
}

#[cfg(feature = "cuda")]
fn gpu_reserved(device: &dyn std::any::Any) -> Option<Box<dyn Fn() -> u64>> {
    use cubecl::Runtime;
    let d = device.downcast_ref::<burn::backend::cuda::CudaDevice>()?.clone();
    Some(Box::new(move || cubecl::cuda::CudaRuntime::client(&d).memory_usage().map(|u| u.bytes_reserved).unwrap_or(0)))
}

#[cfg(not(feature = "cuda"))]
fn gpu_reserved(_: &dyn std::any::Any) -> Option<Box<dyn Fn() -> u64>> {
    None
}

/// Run `f` warm-up + `runs` times; `f` must block until its result is computed.
fn time<F: FnMut()>(name: &str, opts: &BenchOptions, mem: &DeviceMemory, mut f: F) -> Timing {
    (mem.cleanup)();
    reset_peak_rss();
    for _ in 0..opts.warmup {
        f();
    }
    let mut ms: Vec<f64> = (0..opts.runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let timing = Timing {
        name: name.into(),
        median_ms: ms[ms.len() / 2],
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        runs: ms.len(),
        peak_mib: peak_rss_mib(),
        device_mib: mem.reserved.as_ref().map(|r| r() as f64 / (1024.0 * 1024.0)),
        value: None,
        note: String::new(),
    };
    eprintln!("  {name:<34} median {:>9.2} ms  (min {:.2}, max {:.2})", timing.median_ms, timing.min_ms, timing.max_ms);
    timing
}

/// Linux lets a process reset its peak RSS ("5" to clear_refs), so each workload gets its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The benchmark decoder: fc → reshape to 4×4 → stride-2 4×4 up-convolutions with leaky
/// ReLU (the same network as `bench/pytorch_reference.py`).
#[derive(Module, Debug)]
pub struct BenchDecoder<B: Backend> {
    fcs: Vec<Linear<B>>,
    ups: Vec<ConvTranspose2d<B>>,
    #[module(skip)]
    base: [usize; 3],
    #[module(skip)]
    crop: usize,
}

impl<B: Backend> BenchDecoder<B> {
    /// `fc` widths (the last is reshaped to `base` = [C, 4, 4]), then up-conv channels.
    pub fn new(code: usize, fc: &[usize], base: [usize; 3], ups: &[usize], crop: usize, device: &B::Device) -> Self {
        let mut dims = vec![code];
        dims.extend_from_slice(fc);
        dims.push(base.iter().product());
        let fcs = dims.windows(2).map(|w| LinearConfig::new(w[0], w[1]).init(device)).collect();
        let mut ch = vec![base[0]];
        ch.extend_from_slice(ups);
        let ups = ch
            .windows(2)
            .map(|w| ConvTranspose2dConfig::new([w[0], w[1]], [4, 4]).with_stride([2, 2]).with_padding([1, 1]).init(device))
            .collect();
        let m = BenchDecoder { fcs, ups, base, crop };
        m.map(&mut crate::encoder::net::SeededInit::new(1, device.clone()))
    }

    pub fn forward(&self, code: Tensor<B, 2>) -> Tensor<B, 4> {
        let n = code.dims()[0];
        let mut x = code;
        for fc in &self.fcs {
            x = leaky_relu(fc.forward(x), 0.2);
        }
        let mut y = x.reshape([n, self.base[0], self.base[1], self.base[2]]);
        let last = self.ups.len() - 1;
        for (i, up) in self.ups.iter().enumerate() {
            y = crate::decoder::deconv::forward(up, y);
            if i < last {
                y = leaky_relu(y, 0.2);
            }
        }
        let s = y.dims()[2];
        if self.crop < s {
            let o = (s - self.crop) / 2;
            y = y.slice([0..n, 0..3, o..o + self.crop, o..o + self.crop]);
        }
        y
    }
}

fn random<B: Backend, const D: usize>(shape: [usize; D], seed: u64, device: &B::Device) -> Tensor<B, D> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new((0..n).map(|_| rng.uniform()).collect::<Vec<f32>>(), shape), device)
}

fn decoder_step<B: AutodiffBackend>(name: &str, dec: BenchDecoder<B>, batch: usize, code: usize, out: usize, opts: &BenchOptions, device: &B::Device) -> Timing {
    let mut dec = Some(dec);
    let mut optim = crate::train::adam::Adam::default().init::<B, BenchDecoder<B>>();
    let x = random::<B, 2>([batch, code], 2, device);
    let target = random::<B, 4>([batch, 3, out, out], 3, device);
    time(name, opts, &DeviceMemory::of::<B>(device), || {
        let d = dec.take().unwrap();
        let loss = (d.forward(x.clone()) - target.clone()).powf_scalar(2.0).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &d);
        let d = optim.step(1e-4, d, grads);
        // Reading a weight forces the step to complete on asynchronous backends.
        let _ = d.fcs[0].weight.val().slice([0..1, 0..1]).into_data();
        dec = Some(d);
    })
}

fn encoder_forward<B: Backend>(name: &str, net: &ConvNet<B>, batch: usize, opts: &BenchOptions, device: &B::Device) -> Timing {
    let [h, w] = net.spec.input_size;
    let x = random::<B, 4>([batch, 3, h, w], 4, device);
    let last = net.spec.taps().into_iter().find(|t| t == "fc8").unwrap_or_else(|| net.spec.taps().last().unwrap().clone());
    time(name, opts, &DeviceMemory::of::<B>(device), || {
        let _ = net.tap_flat(x.clone(), &last, false).unwrap().into_data();
    })
}

/// One optimization-inversion iteration: M&V's objective (feature match at `tap` + TV² +
/// α⁶-norm, the `invert` preset's weights) through the optimization engine, the gradient
/// with respect to the image, one gradient step.
fn optim_iteration<B: AutodiffBackend>(name: &str, net: &ConvNet<B>, tap: &str, opts: &BenchOptions, device: &B::Device) -> Result<Timing> {
    use crate::optimize::{self, objective::Objective, param::Parameterization, transform::Transforms, Engine};
    use burn::module::AutodiffModule;
    let [h, w] = net.spec.input_size;
    let target = net.valid().tap_flat(random::<B::InnerBackend, 4>([1, 3, h, w], 5, device), tap, false)?;
    let cfg = optimize::preset("invert")?;
    let obj: Objective<B> = optimize::invert_objective(&net.spec, tap, Tensor::from_inner(target), &cfg.weights);
    let engine = Engine::new(net.clone(), obj, Parameterization::new(&cfg.param, [h, w], device), Transforms::default(), 0)?;
    let mut x = random::<B::InnerBackend, 2>([1, 3 * h * w], 6, device);
    Ok(time(name, opts, &DeviceMemory::of::<B>(device), || {
        let e = engine.eval(x.clone(), 0, false).expect("finite loss");
        x = (x.clone() - e.grad * 0.01).clamp(0.0, 1.0);
        let _ = x.clone().slice([0..1, 0..1]).into_data();
    }))
}

/// Run every workload; `pytorch` (from `bench/pytorch_reference.py --json`) adds ratios.
pub fn run<B: AutodiffBackend>(opts: &BenchOptions, device: &B::Device) -> Result<Vec<Timing>> {
    opts.check_only()?;
    let q = opts.quick;
    let mut out = Vec::new();
    eprintln!("decoder training steps");
    let (b, code, ups): (usize, usize, &[usize]) = if q { (4, 32, &[16, 8, 3]) } else { (32, 512, &[128, 64, 32, 3]) };
    let base = if q { [16, 4, 4] } else { [256, 4, 4] };
    let out_a = 4 << ups.len();
    if opts.wants(STEP_A) {
        out.push(decoder_step(STEP_A, BenchDecoder::<B>::new(code, &[], base, ups, out_a, device), b, code, out_a, opts, device));
    }
    // D&B's fc6 decoder: fc 4096-4096-4096 → 4×4×256 → six up-convs to 256×256, cropped to 227.
    let (b, code, fc, ups, crop): (usize, usize, Vec<usize>, Vec<usize>, usize) = if q {
        (2, 64, vec![64], vec![16, 8, 3], 27)
    } else {
        (8, 4096, vec![4096, 4096], vec![256, 128, 64, 32, 16, 3], 227)
    };
    if opts.wants(STEP_B) {
        out.push(decoder_step(STEP_B, BenchDecoder::<B>::new(code, &fc, base, &ups, crop, device), b, code, crop, opts, device));
    }

    eprintln!("encoder forward");
    let (batch, big) = if q { (2, 64) } else { (32, 224) };
    let nets: Vec<(&str, &str, usize)> = vec![("posenet", FORWARD_POSENET, 64), ("alexnet", FORWARD_ALEXNET, big), ("vgg16", FORWARD_VGG16, big)];
    let mut loaded = BTreeMap::new();
    for (arch, name, size) in nets {
        loaded.insert(arch, size);
        if (q && arch == "vgg16") || !opts.wants(name) {
            continue;
        }
        let net = encoder::load::<B::InnerBackend>(arch, &WeightSource::Random(0), Some(size), device)?.net;
        out.push(encoder_forward(name, &net, batch, opts, device));
    }

    // Each workload by its full name, so that any fragment of it selects it. The decoder's
    // speed-up is over posenet's iteration, which then runs (and is reported) too.
    // VGG16 at 224 is left out of --quick, as its forward is.
    let optims = [("posenet", "conv5", OPTIM_POSENET), ("alexnet", "conv5", OPTIM_ALEXNET), ("vgg16", "conv5_3", OPTIM_VGG16)];
    let optims: Vec<_> = optims
        .into_iter()
        .filter(|(arch, _, _)| !(q && *arch == "vgg16"))
        .filter(|(arch, _, name)| opts.wants(name) || (*arch == "posenet" && opts.wants(DECODER_FORWARD)))
        .collect();
    if !optims.is_empty() {
        eprintln!("optimization inversion");
    }
    let mut iter_ms = BTreeMap::new();
    for (arch, tap, name) in optims {
        let net = encoder::load::<B>(arch, &WeightSource::Random(0), Some(loaded[arch]), device)?.net.no_grad();
        let t = optim_iteration(name, &net, tap, opts, device)?;
        iter_ms.insert(arch, t.median_ms);
        out.push(t);
    }
    if opts.wants(DECODER_FORWARD) {
        // M&V's default schedule is 350 iterations; a decoder needs one forward pass per image.
        let dec = BenchDecoder::<B::InnerBackend>::new(if q { 32 } else { 512 }, &[], base, if q { &[16, 8, 3] } else { &[128, 64, 32, 3] }, out_a, device);
        let code_in = random::<B::InnerBackend, 2>([1, if q { 32 } else { 512 }], 7, device);
        let mut t = time(DECODER_FORWARD, opts, &DeviceMemory::of::<B>(device), || {
            let _ = dec.forward(code_in.clone()).into_data();
        });
        let full = 350.0 * iter_ms["posenet"];
        t.value = Some(full / t.median_ms);
        t.note = format!("speed-up of one decoder forward over the full default optimization inversion (350 × {:.2} ms = {:.0} ms, posenet)", iter_ms["posenet"], full);
        eprintln!("  decoder vs optimization: {:.0}× faster", t.value.unwrap());
        out.push(t);
    }

    if opts.wants(EXTRACTION) {
        eprintln!("code extraction");
        out.push(extraction::<B::InnerBackend>(opts, device)?);
    }
    Ok(out)
}

/// Extraction throughput (images/s) including decoding the PNG files.
fn extraction<B: Backend>(opts: &BenchOptions, device: &B::Device) -> Result<Timing> {
    let tmp;
    let data = match &opts.data {
        Some(d) => d.clone(),
        None => {
            tmp = std::env::temp_dir().join(format!("preimage-bench-{}", std::process::id()));
            let count = if opts.quick { 16 } else { 1024 };
            crate::data::render::render_dataset(&tmp, &crate::data::render::RenderOptions { count, size: 64, seed: 0, ..Default::default() })?;
            tmp.clone()
        }
    };
    let skips = crate::data::folder::SkipLog::new();
    let folder = crate::data::folder::ImageFolder::open(&data, &skips)?;
    let enc = encoder::load::<B>("posenet", &WeightSource::Random(0), None, device)?;
    let taps = vec!["conv5".to_string(), "fc6".to_string(), "fc7".to_string(), "fc8".to_string()];
    let n = folder.len();
    let quiet = BenchOptions { runs: opts.runs.clamp(1, 5), warmup: 1, ..opts.clone() };
    let mut t = time(EXTRACTION, &quiet, &DeviceMemory::of::<B>(device), || {
        let _ = crate::extract::extract(&enc, &folder, &taps, 64, device).unwrap();
    });
    t.value = Some(n as f64 / (t.median_ms / 1e3));
    t.note = format!("images/s over {n} rendered 64×64 PNGs, batch 64, taps conv5,fc6,fc7,fc8");
    eprintln!("  extraction: {:.0} images/s", t.value.unwrap());
    if opts.data.is_none() {
        let _ = std::fs::remove_dir_all(&data);
    }
    Ok(t)
}

/// Print the table, with PyTorch's times and the ratio where a reference JSON is given.
pub fn table(ours: &[Timing], pytorch: Option<&[Timing]>) -> String {
    let gpu = ours.iter().any(|t| t.device_mib.is_some());
    let mut s = format!("{:<34} {:>11} {:>11} {:>11} {:>9} {:>11} {:>7}", "workload", "median ms", "min ms", "max ms", "peak MiB", "pytorch ms", "ratio");
    s += if gpu { "   GPU MiB  pytorch GPU MiB\n" } else { "\n" };
    for t in ours {
        let py = pytorch.and_then(|p| p.iter().find(|p| p.name == t.name));
        s += &format!(
            "{:<34} {:>11.2} {:>11.2} {:>11.2} {:>9} {:>11} {:>7}\n",
            t.name,
            t.median_ms,
            t.min_ms,
            t.max_ms,
            t.peak_mib.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into()),
            py.map(|p| format!("{:.2}", p.median_ms)).unwrap_or_else(|| "-".into()),
            py.map(|p| format!("{:.2}", t.median_ms / p.median_ms)).unwrap_or_else(|| "-".into()),
        );
        if gpu {
            let mib = |m: Option<f64>| m.map(|m| format!("{m:.0}")).unwrap_or_else(|| "-".into());
            s.pop();
            s += &format!(" {:>9} {:>16}\n", mib(t.device_mib), mib(py.and_then(|p| p.device_mib)));
        }
        if let Some(v) = t.value {
            s += &format!("    {v:.1}: {}\n", t.note);
        }
    }
    s
}

/// Several rounds of the same workloads as one: per workload, the round whose median is the
/// median of the rounds' medians (the lower middle for an even count), with min and max over
/// all rounds and the runs added up; workloads in order of first appearance. `bench/compare.sh
/// --rounds` alternates PyTorch and preimage workload by workload and merges each side so: this
/// machine's speed drifts by 20–40 % over minutes, which a single run of each would put into
/// the ratio.
pub fn merge_rounds(rounds: &[Vec<Timing>]) -> Vec<Timing> {
    let mut names: Vec<&str> = Vec::new();
    for t in rounds.iter().flatten() {
        if !names.contains(&t.name.as_str()) {
            names.push(&t.name);
        }
    }
    names
        .into_iter()
        .map(|name| {
            let mut all: Vec<&Timing> = rounds.iter().flatten().filter(|t| t.name == name).collect();
            all.sort_by(|a, b| a.median_ms.total_cmp(&b.median_ms));
            let mut pick = all[(all.len() - 1) / 2].clone();
            pick.min_ms = all.iter().map(|t| t.min_ms).fold(f64::INFINITY, f64::min);
            pick.max_ms = all.iter().map(|t| t.max_ms).fold(f64::NEG_INFINITY, f64::max);
            pick.runs = all.iter().map(|t| t.runs).sum();
            pick
        })
        .collect()
}

/// Timing files of one or more rounds, merged by [`merge_rounds`]; the context is the first
/// file's.
pub fn read_rounds(files: &[PathBuf]) -> Result<Report> {
    let reports = files.iter().map(|f| read_report(f)).collect::<Result<Vec<_>>>()?;
    let context = reports.iter().find_map(|r| r.context.clone());
    Ok(Report { context, workloads: merge_rounds(&reports.into_iter().map(|r| r.workloads).collect::<Vec<_>>()) })
}

/// Read a file written by `preimage bench --json FILE` or `bench/pytorch_reference.py --json
/// FILE` (the same fields); a bare list of timings (files from before the context) too.
pub fn read_report(path: &Path) -> Result<Report> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        Report(Report),
        Bare(Vec<Timing>),
    }
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading bench timings {}: {e}", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(File::Report(r)) => Ok(r),
        Ok(File::Bare(workloads)) => Ok(Report { context: None, workloads }),
        // The report's own error says which field is wrong; untagged enums only say "no variant".
        Err(_) => serde_json::from_str::<Report>(&text).map_err(|e| anyhow::anyhow!("{} is not a bench JSON file: {e}", path.display())),
    }
}

/// The timings of [`read_report`].
pub fn read_timings(path: &Path) -> Result<Vec<Timing>> {
    Ok(read_report(path)?.workloads)
}
