//! Learned vs optimization inversion on the same held-out images: for each decoder (one tap
//! each), reconstruct with the decoder, with Mahendran & Vedaldi's optimization from noise
//! and with the optimization started from the decoder's output (the refiner); score every
//! method with [`crate::evaluate::Evaluator`] and time it.
use crate::data::batch;
use crate::data::folder::{ImageFolder, SkipLog};
use crate::decoder;
use crate::encoder::WeightSource;
use crate::evaluate::Evaluator;
use crate::metrics::Metrics;
use crate::optimize::{self, OptimizeConfig, RunOptions};
use crate::report::tensorboard::{grid, TbWriter};
use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A reconstruction method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// One decoder forward pass.
    Decoder,
    /// Optimization from noise (M&V).
    Optim,
    /// Optimization started from the decoder's reconstruction.
    Refined,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Decoder => "decoder",
            Method::Optim => "optim",
            Method::Refined => "refined",
        }
    }
}

impl std::str::FromStr for Method {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim() {
            "decoder" => Method::Decoder,
            "optim" => Method::Optim,
            "refined" => Method::Refined,
            other => bail!("unknown method '{other}'; valid: decoder, optim, refined"),
        })
    }
}

pub struct CompareOptions {
    /// Decoder run folders (one tap each).
    pub decoders: Vec<PathBuf>,
    /// Held-out images (not the decoders' training images): a folder, or image files and
    /// folders (as `extract --data` takes them).
    pub data: Vec<PathBuf>,
    /// How many images (the first of a seeded shuffle of the folder).
    pub count: usize,
    pub methods: Vec<Method>,
    pub out: PathBuf,
    /// Encoder weights (default: the file each decoder recorded).
    pub weights: Option<WeightSource>,
    /// Optimization settings (the `invert` preset by default).
    pub optimize: OptimizeConfig,
    pub seed: u64,
}

/// One line of the table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Row {
    pub tap: String,
    pub method: Method,
    pub decoder: PathBuf,
    pub metrics: Metrics,
    pub seconds_per_image: f64,
}

/// Side-by-side images of one tap: originals, then each method, as CHW `[0,1]` images.
pub struct Panel {
    pub tap: String,
    pub rows: Vec<(String, Vec<Vec<f32>>)>,
    pub size: [usize; 2],
}

impl Panel {
    /// One grid: a row per method (originals first), a column per image.
    pub fn grid(&self) -> (Vec<f32>, usize, usize) {
        let tiles: Vec<&[f32]> = self.rows.iter().flat_map(|(_, imgs)| imgs.iter().map(Vec::as_slice)).collect();
        let cols = self.rows.first().map_or(1, |(_, v)| v.len());
        grid(&tiles, self.size[0], self.size[1], cols, 1)
    }
}

fn to_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
}

fn split_images(data: &[f32], h: usize, w: usize) -> Vec<Vec<f32>> {
    data.chunks_exact(3 * h * w).map(<[f32]>::to_vec).collect()
}

/// Run the comparison; writes `OUT/compare.csv`, `OUT/compare.json`, `OUT/<tap>.png`
/// (side by side) and `OUT/tb/` (one TensorBoard run per method: metrics as scalars, plus
/// `OUT/tb/grids` with the side-by-side images).
pub fn compare<B: AutodiffBackend>(opts: &CompareOptions, device: &B::Device) -> Result<(Vec<Row>, Vec<Panel>)> {
    if opts.decoders.is_empty() || opts.methods.is_empty() || opts.count == 0 {
        bail!("compare needs at least one decoder, one method and one image");
    }
    let skips = SkipLog::new();
    let folder = ImageFolder::from_paths(&opts.data, &skips)?;
    let mut order: Vec<usize> = (0..folder.len()).collect();
    crate::rng::Rng::derive(opts.seed, 0xc0de).shuffle(&mut order);
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut rows = Vec::new();
    let mut panels = Vec::new();
    let mut grids_tb = TbWriter::new(&opts.out.join("tb").join("grids"))?;
    let mut method_tb: Vec<(Method, TbWriter)> = opts.methods.iter().map(|&m| Ok((m, TbWriter::new(&opts.out.join("tb").join(m.name()))?))).collect::<Result<_>>()?;
    for (k, dir) in opts.decoders.iter().enumerate() {
        let (dec, info) = decoder::load_run::<B::InnerBackend>(dir, device)?;
        let net = info.load_encoder::<B>(opts.weights.as_ref(), device)?;
        let inner = net.valid();
        let pre = batch::preprocess_for(&inner.spec);
        // The first `count` readable images of the shuffled folder.
        let mut chosen = Vec::new();
        let mut images = Vec::new();
        for chunk in order.chunks(opts.count) {
            if let Some(b) = batch::load::<B::InnerBackend>(&folder, chunk, &pre, None, device) {
                chosen.extend(b.indices);
                images.push(b.images);
            }
            if chosen.len() >= opts.count {
                break;
            }
        }
        if chosen.is_empty() {
            bail!("no readable image in {}", folder.root.display());
        }
        let n = chosen.len().min(opts.count);
        chosen.truncate(n);
        let orig = Tensor::cat(images, 0).narrow(0, 0, n);
        let [_, _, h, w] = orig.dims();
        if [h, w] != info.image_size {
            bail!("{} decodes {:?} images but the encoder reads {h}×{w}", dir.display(), info.image_size);
        }
        let symmetry: Vec<u32> = chosen.iter().map(|&i| folder.symmetry_of(i)).collect();
        let codes = inner.tap_flat(orig.clone(), &info.tap, false)?;
        println!("compare: {} ({} {}) on {n} images from {}", dir.display(), info.encoder, info.tap, folder.root.display());
        let mut panel = Panel { tap: info.tap.clone(), rows: vec![("original".into(), split_images(&to_vec(orig.clone()), h, w))], size: [h, w] };
        let start = Instant::now();
        let decoded = dec.forward(codes.clone()).clamp(0.0, 1.0);
        let _ = to_vec(decoded.clone().slice([0..1, 0..1, 0..1, 0..1]));
        let decoder_secs = start.elapsed().as_secs_f64();
        for &m in &opts.methods {
            let run = RunOptions { seed: opts.seed, progress: true, ..Default::default() };
            let start = Instant::now();
            let recon = match m {
                Method::Decoder => decoded.clone(),
                Method::Optim | Method::Refined => {
                    let init = (m == Method::Refined).then(|| decoded.clone());
                    let out = optimize::invert::<B>(net.clone(), &info.tap, codes.clone(), init, &opts.optimize, &run)?;
                    let flat: Vec<f32> = out.images.concat();
                    Tensor::from_data(TensorData::new(flat, [n, 3, h, w]), device)
                }
            };
            let mut secs = start.elapsed().as_secs_f64();
            if m != Method::Optim {
                secs += decoder_secs;
            }
            let mut eval = Evaluator::new(Some(&inner), &info.tap);
            eval.add(recon.clone(), orig.clone(), &symmetry)?;
            let metrics = eval.finish(opts.seed)?;
            panel.rows.push((m.name().into(), split_images(&to_vec(recon), h, w)));
            let tb = &mut method_tb.iter_mut().find(|(mm, _)| *mm == m).unwrap().1;
            for (name, v) in crate::train::decoder::metric_values(&metrics) {
                tb.scalar(&format!("{}/{name}", info.tap), v as f32, k);
            }
            tb.scalar(&format!("{}/seconds_per_image", info.tap), (secs / n as f64) as f32, k);
            rows.push(Row { tap: info.tap.clone(), method: m, decoder: dir.clone(), metrics, seconds_per_image: secs / n as f64 });
        }
        let (g, gh, gw) = panel.grid();
        grids_tb.image(&format!("{}/original_{}", info.tap, panel.rows[1..].iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join("_")), &g, gh, gw, 0);
        crate::data::folder::save_rgb(&opts.out.join(format!("{}.png", info.tap)), &g, gh as u32, gw as u32)?;
        panels.push(panel);
    }
    for (_, tb) in &mut method_tb {
        tb.flush();
    }
    grids_tb.flush();
    crate::util::write_atomic(&opts.out.join("compare.json"), serde_json::to_string_pretty(&rows)?.as_bytes())?;
    crate::util::write_atomic(&opts.out.join("compare.csv"), csv(&rows).as_bytes())?;
    skips.report();
    Ok((rows, panels))
}

/// Header of [`table`] and the CSV.
pub fn columns() -> Vec<&'static str> {
    let mut c = vec!["tap", "method"];
    c.extend(Metrics::COLUMNS);
    c.push("seconds_per_image");
    c
}

/// Table cells of each row, in [`columns`] order.
pub fn cells(rows: &[Row]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| {
            let mut c = vec![r.tap.clone(), r.method.name().to_string()];
            c.extend(r.metrics.cells());
            c.push(format!("{:.4}", r.seconds_per_image));
            c
        })
        .collect()
}

pub fn csv(rows: &[Row]) -> String {
    let mut s = columns().join(",") + "\n";
    for c in cells(rows) {
        s += &(c.iter().map(|v| if v == "-" { String::new() } else { v.clone() }).collect::<Vec<_>>().join(",") + "\n");
    }
    s
}

/// A Markdown table of the rows.
pub fn table(rows: &[Row]) -> String {
    let cols = columns();
    let mut s = format!("| {} |\n|{}\n", cols.join(" | "), "---|".repeat(cols.len()));
    for c in cells(rows) {
        s += &format!("| {} |\n", c.join(" | "));
    }
    s
}

/// Read a `compare.json` back.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a compare result", path.display()))
}
