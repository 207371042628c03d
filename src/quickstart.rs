//! The one-command pipeline on data it renders itself: render the pose set, train posenet,
//! extract codes at conv5, fc6, fc7, fc8, train those decoders, compare learned and
//! optimization inversion, and write a self-contained HTML report.
//!
//! Each stage leaves a marker in `OUT/.done/` when it finishes; a re-run skips finished
//! stages and resumes a training stage from its checkpoint. The effective configs are written
//! to `OUT/configs/`, so every stage can be re-run by hand with the command the report shows.
use crate::compare::{self, CompareOptions, Method, Row};
use crate::data::folder::{ImageFolder, SkipLog};
use crate::data::render::{render_dataset, RenderOptions};
use crate::encoder::{self, WeightSource};
use crate::report::html::Page;
use crate::train::decoder::{CodeSource, DecoderRun, DecoderTrainConfig};
use crate::train::encoder::{EncoderRun, EncoderTrainConfig};
use anyhow::{Context, Result};
use burn::tensor::backend::AutodiffBackend;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The taps the quickstart inverts.
pub const TAPS: [&str; 4] = ["conv5", "fc6", "fc7", "fc8"];

/// Sizes of one quickstart profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub images: usize,
    pub size: usize,
    pub held_out: usize,
    pub encoder_epochs: usize,
    pub decoder_epochs: usize,
    pub compare_count: usize,
    pub optim_steps: usize,
    pub optim_final_steps: usize,
    /// Narrower networks (the `--fast` profile).
    pub small: bool,
}

impl Profile {
    /// Defaults: about 20 minutes on a 2-core CPU.
    pub fn default_run() -> Self {
        Profile { images: 4000, size: 64, held_out: 200, encoder_epochs: 5, decoder_epochs: 4, compare_count: 8, optim_steps: 150, optim_final_steps: 30, small: false }
    }
    /// `--fast`: a few minutes, for trying it out and for tests.
    pub fn fast() -> Self {
        Profile { images: 1000, size: 32, held_out: 60, encoder_epochs: 4, decoder_epochs: 3, compare_count: 6, optim_steps: 40, optim_final_steps: 10, small: true }
    }
}

pub struct QuickstartOptions {
    pub out: PathBuf,
    pub profile: Profile,
    pub seed: u64,
}

struct Stages {
    done_dir: PathBuf,
}

impl Stages {
    fn done(&self, name: &str) -> bool {
        self.done_dir.join(name).exists()
    }
    fn finish(&self, name: &str, started: Instant) -> Result<()> {
        crate::util::write_atomic(&self.done_dir.join(name), format!("{:.1} s\n", started.elapsed().as_secs_f64()).as_bytes())
    }
    /// Run `f` unless stage `name` is done.
    fn run(&self, name: &str, what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.done(name) {
            println!("== {what}: done earlier, skipping ({})", self.done_dir.join(name).display());
            return Ok(());
        }
        println!("== {what}");
        let t = Instant::now();
        f().with_context(|| format!("quickstart stage '{name}' ({what})"))?;
        self.finish(name, t)
    }
    fn seconds(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.done_dir.join(name)).ok().map(|s| s.trim().to_string())
    }
}

/// The shipped configs (compiled in, so the binary works from any folder).
fn posenet_config(p: &Profile, data: &Path, seed: u64) -> Result<EncoderTrainConfig> {
    let mut cfg: EncoderTrainConfig = crate::config::parse(include_str!("../configs/posenet.toml")).context("built-in configs/posenet.toml")?;
    cfg.model.input_size = p.size;
    if p.small {
        cfg.model.conv = [16, 32, 48, 48, 32];
        cfg.model.fc = [128, 128];
    }
    cfg.train.data = Some(data.to_path_buf());
    cfg.train.epochs = p.encoder_epochs;
    cfg.train.seed = seed;
    Ok(cfg)
}

fn decoder_config(tap: &str, p: &Profile, codes: &Path, seed: u64) -> Result<DecoderTrainConfig> {
    let text = match tap {
        "conv5" => include_str!("../configs/decoder-conv5.toml"),
        "fc6" => include_str!("../configs/decoder-fc6.toml"),
        "fc7" => include_str!("../configs/decoder-fc7.toml"),
        _ => include_str!("../configs/decoder-fc8.toml"),
    };
    let mut cfg: DecoderTrainConfig = crate::config::parse(text).with_context(|| format!("built-in configs/decoder-{tap}.toml"))?;
    if p.small {
        cfg.model.fc = vec![128];
        cfg.model.base_channels = 64;
        cfg.model.up_channels = vec![32, 16, 8];
        cfg.model.spatial_convs = vec![32];
    }
    cfg.train.codes = Some(codes.to_path_buf());
    cfg.train.epochs = p.decoder_epochs;
    cfg.train.seed = seed;
    cfg.train.early_stop_patience = 0;
    Ok(cfg)
}

/// Run (or resume) the whole pipeline; returns the path of the report.
pub fn quickstart<B: AutodiffBackend>(opts: &QuickstartOptions, device: &B::Device) -> Result<PathBuf> {
    let out = &opts.out;
    let p = &opts.profile;
    let st = Stages { done_dir: out.join(".done") };
    std::fs::create_dir_all(&st.done_dir).with_context(|| format!("creating {}", st.done_dir.display()))?;
    let (data, held, enc_run, codes) = (out.join("data"), out.join("held_out"), out.join("posenet"), out.join("codes.safetensors"));
    let cfg_dir = out.join("configs");
    let enc_cfg = posenet_config(p, &data, opts.seed)?;
    crate::util::write_atomic(&cfg_dir.join("posenet.toml"), crate::config::to_toml(&enc_cfg)?.as_bytes())?;

    st.run("render", &format!("render {} training and {} held-out images ({}×{})", p.images, p.held_out, p.size, p.size), || {
        render_dataset(&data, &RenderOptions { count: p.images, size: p.size as u32, seed: opts.seed, ..Default::default() })?;
        render_dataset(&held, &RenderOptions { count: p.held_out, size: p.size as u32, seed: opts.seed + 1, ..Default::default() })?;
        Ok(())
    })?;
    st.run("posenet", "train posenet", || {
        let resume = crate::train::Checkpoint::new(&enc_run).exists();
        crate::train::encoder::train::<B>(&EncoderRun { config: enc_cfg.clone(), data: data.clone(), out: enc_run.clone(), resume }, device).map(|_| ())
    })?;
    st.run("extract", "extract codes at conv5, fc6, fc7, fc8", || {
        let loaded = encoder::load::<B::InnerBackend>("posenet", &WeightSource::Run(enc_run.clone()), None, device)?;
        let folder = ImageFolder::open(&data, &SkipLog::new())?;
        let taps: Vec<String> = TAPS.iter().map(|t| t.to_string()).collect();
        crate::extract::extract_to_file(&loaded, &folder, &taps, &codes, &crate::extract::ToFile { resume: true, ..Default::default() }, device).map(|_| ())
    })?;
    for tap in TAPS {
        let cfg = decoder_config(tap, p, &codes, opts.seed)?;
        crate::util::write_atomic(&cfg_dir.join(format!("decoder-{tap}.toml")), crate::config::to_toml(&cfg)?.as_bytes())?;
        let dir = out.join(format!("decoder-{tap}"));
        st.run(&format!("decoder-{tap}"), &format!("train the {tap} decoder"), || {
            let resume = crate::train::Checkpoint::new(&dir).exists();
            let run = DecoderRun { config: cfg, source: CodeSource::File { codes: codes.clone(), data: None, encoder: None, arch: None, input: Default::default() }, layer: tap.into(), out: dir.clone(), resume };
            crate::train::decoder::train::<B>(&run, device).map(|_| ())
        })?;
    }
    let cmp_dir = out.join("compare");
    let decoders: Vec<PathBuf> = TAPS.iter().map(|t| out.join(format!("decoder-{t}"))).collect();
    let mut optimize = crate::optimize::preset("invert")?;
    optimize.solver.steps = p.optim_steps;
    optimize.solver.final_steps = p.optim_final_steps;
    let cmp = CompareOptions {
        decoders: decoders.clone(),
        data: vec![held.clone()],
        count: p.compare_count,
        methods: vec![Method::Decoder, Method::Optim, Method::Refined],
        out: cmp_dir.clone(),
        weights: None,
        optimize,
        seed: opts.seed,
    };
    st.run("compare", "compare decoder, optimization and refined inversion on held-out images", || compare::compare::<B>(&cmp, device).map(|_| ()))?;
    let rows = compare::read_rows(&cmp_dir.join("compare.json"))?;
    let report = out.join("report").join("index.html");
    write_report(opts, &st, &rows, &report)?;
    println!("\n{}", compare::table(&rows));
    println!("report: {}", report.display());
    println!("TensorBoard: tensorboard --logdir {}", out.display());
    Ok(report)
}

fn epoch_series(path: &Path, x: &str, ys: &[&str]) -> Vec<(String, Vec<(f64, f64)>)> {
    let history: Vec<serde_json::Value> = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
    ys.iter()
        .map(|y| (y.to_string(), history.iter().filter_map(|e| Some((e[x].as_f64()?, e[*y].as_f64()?))).collect()))
        .collect()
}

/// The report: comparison table, side-by-side grids per tap, loss curves, the commands.
fn write_report(opts: &QuickstartOptions, st: &Stages, rows: &[Row], path: &Path) -> Result<()> {
    let out = &opts.out;
    let o = out.display();
    let mut page = Page::new("preimage quickstart report");
    page.paragraph(&format!(
        "posenet trained on {} rendered {}×{} images; decoders invert its conv5, fc6, fc7 and fc8 codes; compared with Mahendran & Vedaldi optimization (from noise, and refined from the decoder's output) on {} held-out images. TensorBoard: tensorboard --logdir {o}",
        opts.profile.images, opts.profile.size, opts.profile.size, opts.profile.compare_count
    ));
    page.heading(2, "Comparison");
    page.paragraph("image error: mean distance to the original over the mean distance between random originals (0 perfect, 1 = a random other image); feature error at the inverted tap; top-1: the re-encoded reconstruction keeps the network's class; pose: median azimuth difference in degrees.");
    page.table(&compare::columns(), &compare::cells(rows));
    page.command(&format!("preimage compare --decoder {} --data {o}/held_out --count {} --steps {} --final-steps {} --out {o}/compare", TAPS.iter().map(|t| format!("{o}/decoder-{t}")).collect::<Vec<_>>().join(","), opts.profile.compare_count, opts.profile.optim_steps, opts.profile.optim_final_steps));
    page.heading(2, "Reconstructions");
    page.paragraph("Rows: original, decoder, optimization from noise, optimization refined from the decoder; one column per held-out image.");
    for tap in TAPS {
        let png_path = out.join("compare").join(format!("{tap}.png"));
        let (w, _) = image::image_dimensions(&png_path).with_context(|| format!("reading {}", png_path.display()))?;
        let png = std::fs::read(&png_path).with_context(|| format!("reading {}", png_path.display()))?;
        page.image(&format!("{tap}: original / decoder / optim / refined"), &png, w as usize, 3);
    }
    page.heading(2, "Training curves");
    page.plot("posenet validation loss", &epoch_series(&out.join("posenet/metrics.json"), "epoch", &["loss"]), true);
    page.plot("posenet validation accuracy", &epoch_series(&out.join("posenet/metrics.json"), "epoch", &["accuracy"]), false);
    let mut train_curves = Vec::new();
    let mut val_curves = Vec::new();
    for tap in TAPS {
        let s = epoch_series(&out.join(format!("decoder-{tap}/metrics.json")), "epoch", &["train_loss", "val_loss"]);
        train_curves.push((tap.to_string(), s[0].1.clone()));
        val_curves.push((tap.to_string(), s[1].1.clone()));
    }
    page.plot("decoder training loss per epoch", &train_curves, true);
    page.plot("decoder validation loss per epoch", &val_curves, true);
    page.heading(2, "Reproduce each part");
    let time = |name: &str| st.seconds(name).map(|s| format!(" (took {s})")).unwrap_or_default();
    page.paragraph(&format!("Render{}:", time("render")));
    page.command(&format!(
        "preimage render --out {o}/data --count {} --size {} --seed {}\npreimage render --out {o}/held_out --count {} --size {} --seed {}",
        opts.profile.images, opts.profile.size, opts.seed, opts.profile.held_out, opts.profile.size, opts.seed + 1
    ));
    page.paragraph(&format!("Train posenet{}:", time("posenet")));
    page.command(&format!("preimage train-encoder --config {o}/configs/posenet.toml --data {o}/data --out {o}/posenet"));
    page.paragraph(&format!("Extract codes{}:", time("extract")));
    page.command(&format!("preimage extract --encoder posenet --run {o}/posenet --layer conv5,fc6,fc7,fc8 --data {o}/data --out {o}/codes.safetensors"));
    for tap in TAPS {
        page.paragraph(&format!("Train the {tap} decoder{}:", time(&format!("decoder-{tap}"))));
        page.command(&format!("preimage train-decoder --config {o}/configs/decoder-{tap}.toml --codes {o}/codes.safetensors --layer {tap} --out {o}/decoder-{tap}"));
    }
    page.paragraph(&format!("The whole pipeline again (finished stages are skipped){}:", time("compare")));
    page.command(&format!("preimage quickstart --out {o}{}", if opts.profile.small { " --fast" } else { "" }));
    page.write(path)
}
