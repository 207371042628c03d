//! Reconstruction: decode saved codes, or images' codes, with a trained decoder
//! (`preimage reconstruct`).
//!
//! [`Reconstructor`] is the library entry point: load a decoder run folder once, then decode
//! any rows of a code file (read from the file by rows: a few rows of a large file are a few
//! reads); [`encode_images`] gives images' codes as a code file in memory.
//! Codes of another encoder, tap or shape are refused by [`DecoderInfo::check_tap_codes`],
//! naming both sides.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use preimage::reconstruct::{Input, Reconstructor, Selection};
//! let device = Default::default();
//! let decoder = std::path::Path::new("runs/decoder-fc7");
//! let rec = Reconstructor::<preimage::device::Cpu>::load(decoder, &device)?;
//! let (file, codes) = Input::Codes("runs/codes.safetensors".into()).tap_codes(&rec, decoder)?;
//! let rows = Selection::Range(0, 8).rows(&file.ids)?;
//! let images = rec.decode_rows(&codes, &rows)?; // one [3, H, W] image in `[0,1]` per row
//! # Ok(()) }
//! ```
use crate::data::codes::{CodeFile, TapCodes};
use crate::decoder::{self, Decoder, DecoderInfo};
use crate::encoder::WeightSource;
use crate::report::tensorboard::grid;
use anyhow::{bail, Context, Result};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::path::{Path, PathBuf};

/// Codes decoded per forward pass.
pub const BATCH: usize = 64;

/// A trained decoder ready to decode codes.
pub struct Reconstructor<B: Backend> {
    pub decoder: Decoder<B>,
    pub info: DecoderInfo,
    device: B::Device,
}

impl<B: Backend> Reconstructor<B> {
    /// Load the decoder in `run_dir` (`decoder.json` + `decoder.safetensors`).
    pub fn load(run_dir: &Path, device: &B::Device) -> Result<Self> {
        let (decoder, info) = decoder::load_run::<B>(run_dir, device)?;
        Ok(Reconstructor { decoder, info, device: device.clone() })
    }

    /// Values per code.
    pub fn code_dim(&self) -> usize {
        self.info.code_shape.iter().product()
    }

    /// Decode flat codes (`n × code_dim` values) in batches; one CHW image in `[0,1]` per code.
    pub fn decode(&self, codes: &[f32]) -> Result<Vec<Vec<f32>>> {
        let d = self.code_dim();
        if d == 0 || !codes.len().is_multiple_of(d) {
            bail!("{} values are not a whole number of {} {} codes of shape {:?}", codes.len(), self.info.encoder, self.info.tap, self.info.code_shape);
        }
        let [h, w] = self.info.image_size;
        let mut out = Vec::with_capacity(codes.len() / d);
        for chunk in codes.chunks(BATCH * d) {
            let n = chunk.len() / d;
            let z = Tensor::<B, 2>::from_data(TensorData::new(chunk.to_vec(), [n, d]), &self.device);
            let img = self.decoder.forward(z).clamp(0.0, 1.0);
            let flat = img.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            out.extend(flat.chunks_exact(3 * h * w).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Decode rows `rows` of a tap's codes (from [`Input::tap_codes`]: checked against what
    /// this decoder inverts).
    pub fn decode_rows(&self, codes: &TapCodes, rows: &[usize]) -> Result<Vec<Vec<f32>>> {
        self.decode(&codes.rows(rows)?)
    }
}

/// Which rows of a code file to use.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    All,
    /// By id, in the order given. An id matches the file's id with or without its extension.
    Ids(Vec<String>),
    /// Rows `start..end` (end exclusive, clamped to the file).
    Range(usize, usize),
}

impl Selection {
    /// From `--ids` / `--range START:END` (either side may be empty: `:100`, `50:`).
    pub fn from_args(ids: Option<Vec<String>>, range: Option<&str>) -> Result<Self> {
        match (ids, range) {
            (Some(_), Some(_)) => bail!("give --ids or --range, not both"),
            (Some(ids), None) => Ok(Selection::Ids(ids)),
            (None, Some(r)) => {
                let (a, b) = r.split_once(':').with_context(|| format!("--range '{r}' should be START:END, e.g. 0:100"))?;
                let num = |s: &str, default: usize| -> Result<usize> {
                    if s.trim().is_empty() {
                        Ok(default)
                    } else {
                        s.trim().parse().with_context(|| format!("--range '{r}': '{s}' is not a row number"))
                    }
                };
                let (a, b) = (num(a, 0)?, num(b, usize::MAX)?);
                if a >= b {
                    bail!("--range '{r}' is empty");
                }
                Ok(Selection::Range(a, b))
            }
            (None, None) => Ok(Selection::All),
        }
    }

    /// Row indices into a file with these `ids`, in output order.
    pub fn rows(&self, ids: &[String]) -> Result<Vec<usize>> {
        match self {
            Selection::All => Ok((0..ids.len()).collect()),
            Selection::Range(a, b) => {
                if *a >= ids.len() {
                    bail!("--range starts at row {a}, but the code file has {} rows (0..{})", ids.len(), ids.len().saturating_sub(1));
                }
                Ok((*a..(*b).min(ids.len())).collect())
            }
            Selection::Ids(want) => want.iter().map(|id| row_of(ids, id)).collect(),
        }
    }
}

/// The row of `id`: an id (exact, or without the file extension), else a row number (`0`
/// is the first row, as in `codes[0]`); an unknown one names a few valid ids.
pub fn row_of(ids: &[String], id: &str) -> Result<usize> {
    let id = id.trim();
    let by_id = ids.iter().position(|i| i == id).or_else(|| ids.iter().position(|i| crate::data::folder::strip_extension(i) == id));
    by_id.or_else(|| id.parse::<usize>().ok().filter(|&r| r < ids.len())).with_context(|| {
        let some: Vec<&str> = ids.iter().take(3).map(String::as_str).collect();
        format!("'{id}' is neither an id in the code file ({} ids, e.g. {}) nor a row number below {}", ids.len(), some.join(", "), ids.len())
    })
}

/// Output path for an id: `DIR/<id without extension>.png`, keeping its subfolders (class)
/// but never leaving `dir` (`..`, absolute and empty parts are dropped).
pub fn output_path(dir: &Path, id: &str) -> PathBuf {
    let mut p = dir.to_path_buf();
    let parts: Vec<&str> = crate::data::folder::strip_extension(id).split(['/', '\\']).filter(|s| !s.is_empty() && *s != "." && *s != "..").collect();
    if parts.is_empty() {
        return p.join("unnamed.png");
    }
    for part in &parts[..parts.len() - 1] {
        p.push(part);
    }
    p.join(format!("{}.png", parts[parts.len() - 1]))
}

/// Save CHW images as one grid PNG (`cols` per row; 0 = about square).
pub fn save_grid(path: &Path, images: &[Vec<f32>], [h, w]: [usize; 2], cols: usize) -> Result<()> {
    if images.is_empty() {
        bail!("no images to put in {}", path.display());
    }
    let cols = if cols == 0 { (images.len() as f64).sqrt().ceil() as usize } else { cols };
    let (g, gh, gw) = grid(images, h, w, cols, 2);
    crate::data::folder::save_rgb(path, &g, gh as u32, gw as u32)
}

/// The codes `reconstruct` and `edit` decode.
pub enum Input {
    /// A code file.
    Codes(PathBuf),
    /// Image files and folders, encoded first with the decoder's encoder (`weights`, or the
    /// file recorded in `decoder.json`); ids are the images' names.
    Images { paths: Vec<PathBuf>, weights: Option<WeightSource> },
}

impl Input {
    /// The codes at the decoder's tap, checked against what it inverts, beside the file's ids
    /// and provenance: float codes in safetensors, `.npy` and `np.savez` files stay in the
    /// file, read by rows when decoded (a few rows of a file larger than memory are a few
    /// reads; see [`CodeFile::open_tap_as`]).
    pub fn tap_codes<B: Backend>(&self, rec: &Reconstructor<B>, decoder: &Path) -> Result<(CodeFile, TapCodes)> {
        let path = match self {
            Input::Codes(path) => path,
            Input::Images { paths, weights } => {
                let mut file = encode_images(rec, decoder, paths, weights.as_ref())?;
                let codes = file.codes.remove(&rec.info.tap).expect("encoded at the decoder's tap");
                return Ok((file, TapCodes::Memory(codes)));
            }
        };
        let (tap, cannot) = (&rec.info.tap, || format!("{} cannot decode {}", decoder.display(), path.display()));
        let module = rec.info.encoder_spec.torch_modules().remove(tap);
        let (file, codes) = CodeFile::open_tap_as(path, tap, module.as_deref()).with_context(|| format!("{} inverts {} {} codes", decoder.display(), rec.info.encoder, tap))?;
        rec.info.check_tap_codes(&file, codes.shape()).with_context(cannot)?;
        Ok((file, codes))
    }
}

/// The encoder the decoder was trained on (`weights`, or the file `decoder.json` records).
fn load_encoder<B: Backend>(rec: &Reconstructor<B>, decoder: &Path, weights: Option<&WeightSource>) -> Result<crate::encoder::ConvNet<B>> {
    rec.info.load_encoder::<B>(weights, &rec.device).with_context(|| format!("{} needs its encoder to encode the images", decoder.display()))
}

/// Encode images (files or folders) at the decoder's tap, [`BATCH`] at a time;
/// `each(names, images, codes)` sees every batch (images as the encoder saw them).
fn encode_batches<B: Backend>(rec: &Reconstructor<B>, net: &crate::encoder::ConvNet<B>, paths: &[PathBuf], mut each: impl FnMut(&[String], Vec<f32>, Vec<f32>) -> Result<()>) -> Result<()> {
    use crate::data::folder::{image_list, SkipLog};
    let info = &rec.info;
    let skips = SkipLog::new();
    let items = image_list(paths, &skips)?;
    let pre = crate::data::batch::preprocess_for(&info.encoder_spec);
    let [h, w] = info.image_size;
    let bar = crate::util::progress(items.len() as u64, "encoding");
    let mut any = false;
    for chunk in items.chunks(BATCH) {
        let mut names = Vec::new();
        let mut data = Vec::new();
        for it in chunk {
            if let Some(chw) = it.load(&pre, &skips)? {
                names.push(it.name.clone());
                data.extend(chw);
            }
        }
        bar.inc(chunk.len() as u64);
        if names.is_empty() {
            continue;
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(data.clone(), [names.len(), 3, h, w]), &rec.device);
        let codes = encode_flat(net, x, &info.tap)?;
        each(&names, data, codes)?;
        any = true;
    }
    bar.finish_and_clear();
    skips.report();
    if !any {
        bail!("no image could be read ({})", skips.summary());
    }
    Ok(())
}

/// Flat codes `[N·D]` of `images` at `tap`.
fn encode_flat<B: Backend>(net: &crate::encoder::ConvNet<B>, images: Tensor<B, 4>, tap: &str) -> Result<Vec<f32>> {
    let act = net.encode(images, &[tap], false)?.remove(tap).context("the encoder gave no code at the decoder's tap")?;
    act.flat().into_data().convert::<f32>().to_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))
}

/// Images' codes at the decoder's tap as a code file in memory (ids: the images' names).
pub fn encode_images<B: Backend>(rec: &Reconstructor<B>, decoder: &Path, paths: &[PathBuf], weights: Option<&WeightSource>) -> Result<CodeFile> {
    let info = &rec.info;
    let (mut ids, mut values) = (Vec::new(), Vec::new());
    let net = load_encoder(rec, decoder, weights)?;
    encode_batches(rec, &net, paths, |names, _, codes| {
        ids.extend_from_slice(names);
        values.extend(codes);
        Ok(())
    })?;
    let shape: Vec<usize> = std::iter::once(ids.len()).chain(info.code_shape.iter().copied()).collect();
    Ok(CodeFile {
        codes: [(info.tap.clone(), crate::tensorfile::Array::F32 { data: values, shape })].into(),
        labels: None,
        poses: None,
        ids,
        provenance: Some(crate::data::codes::Provenance {
            encoder: info.encoder.clone(),
            weights_sha256: info.weights_sha256.clone(),
            input_size: info.image_size,
            preprocessing: info.preprocessing.clone(),
            classes: info.classes.clone(),
            label_classes: None,
            spec: serde_json::to_string(&info.encoder_spec)?,
            data_root: None,
            weights_path: info.weights_path.clone(),
        }),
    })
}

/// What `preimage reconstruct` does.
pub struct ReconstructOptions {
    pub decoder: PathBuf,
    pub input: Input,
    /// Rows of a code file (images: all).
    pub selection: Selection,
    pub out: PathBuf,
    pub grid: Option<PathBuf>,
}

/// Decode the selected codes (or the images' codes) to `out/<id>.png` and the grid; returns
/// the files written, in order. From images it also scores each reconstruction against its
/// image (PSNR, SSIM, feature error at the tap) in `out/reconstruct.csv`, and the grid pairs
/// every image with its reconstruction.
pub fn reconstruct<B: Backend>(opts: &ReconstructOptions, device: &B::Device) -> Result<Vec<PathBuf>> {
    let rec = Reconstructor::<B>::load(&opts.decoder, device)?;
    match &opts.input {
        Input::Codes(_) => reconstruct_codes(&rec, opts),
        Input::Images { paths, weights } => reconstruct_images(&rec, opts, paths, weights.as_ref()),
    }
}

fn reconstruct_codes<B: Backend>(rec: &Reconstructor<B>, opts: &ReconstructOptions) -> Result<Vec<PathBuf>> {
    let (file, codes) = opts.input.tap_codes(rec, &opts.decoder)?;
    let rows = opts.selection.rows(&file.ids)?;
    let [h, w] = rec.info.image_size;
    let bar = crate::util::progress(rows.len() as u64, "decoding");
    let mut written = Vec::with_capacity(rows.len());
    let mut all = Vec::new();
    for chunk in rows.chunks(BATCH) {
        let images = rec.decode_rows(&codes, chunk)?;
        for (&r, img) in chunk.iter().zip(&images) {
            let path = output_path(&opts.out, &file.ids[r]);
            crate::data::folder::save_rgb(&path, img, h as u32, w as u32)?;
            written.push(path);
        }
        bar.inc(chunk.len() as u64);
        if opts.grid.is_some() {
            all.extend(images);
        }
    }
    bar.finish_and_clear();
    if let Some(g) = &opts.grid {
        save_grid(g, &all, [h, w], 0)?;
    }
    Ok(written)
}

fn reconstruct_images<B: Backend>(rec: &Reconstructor<B>, opts: &ReconstructOptions, paths: &[PathBuf], weights: Option<&WeightSource>) -> Result<Vec<PathBuf>> {
    let info = &rec.info;
    let [h, w] = info.image_size;
    let d = rec.code_dim();
    let mut written = Vec::new();
    let mut pairs = Vec::new();
    let mut csv = String::from("id,psnr_db,ssim,feature_error\n");
    let (mut sums, mut n, mut n_feat) = ([0.0f64; 3], 0usize, 0usize);
    let net = load_encoder(rec, &opts.decoder, weights)?;
    encode_batches(rec, &net, paths, |names, data, codes| {
        let images = rec.decode(&codes)?;
        // Scored against the image as the encoder saw it, and re-encoded at the tap.
        let flat: Vec<f32> = images.concat();
        let again = encode_flat(&net, Tensor::<B, 4>::from_data(TensorData::new(flat.clone(), [names.len(), 3, h, w]), &rec.device), &info.tap)?;
        let recon = crate::metrics::Images::new(&flat, [names.len(), 3, h, w])?;
        let orig = crate::metrics::Images::new(&data, [names.len(), 3, h, w])?;
        let psnr = crate::metrics::psnrs(recon, orig)?;
        let ssim = crate::metrics::ssims(recon, orig)?;
        let feat = crate::metrics::feature_errors(&again, &codes, d)?;
        for (i, name) in names.iter().enumerate() {
            let path = output_path(&opts.out, name);
            crate::data::folder::save_rgb(&path, &images[i], h as u32, w as u32)?;
            written.push(path);
            let fe = feat[i].map(|v| v.to_string()).unwrap_or_default();
            csv.push_str(&format!("{},{},{},{fe}\n", crate::data::folder::csv_cell(name)?, psnr[i], ssim[i]));
            sums[0] += psnr[i];
            sums[1] += ssim[i];
            if let Some(f) = feat[i] {
                sums[2] += f;
                n_feat += 1;
            }
            n += 1;
            if opts.grid.is_some() {
                pairs.push(data[i * 3 * h * w..(i + 1) * 3 * h * w].to_vec());
                pairs.push(images[i].clone());
            }
        }
        // Rewritten after every batch, so a run that stops keeps the scores of what it wrote.
        crate::util::write_atomic(&opts.out.join("reconstruct.csv"), csv.as_bytes())
    })?;
    println!(
        "{n} images through {} {} and the decoder: mean PSNR {:.2} dB, SSIM {:.3}, feature error {:.4} (‖Φ(x̂) − Φ(x)‖ / ‖Φ(x)‖); per image in {}",
        info.encoder,
        info.tap,
        sums[0] / n as f64,
        sums[1] / n as f64,
        sums[2] / n_feat.max(1) as f64,
        opts.out.join("reconstruct.csv").display()
    );
    if let Some(g) = &opts.grid {
        // Image and reconstruction side by side, pairs in rows.
        let per_row = ((n as f64).sqrt().ceil() as usize).max(1);
        save_grid(g, &pairs, [h, w], 2 * per_row)?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        ["chair/00001.png", "mug/00002.png", "mug/00003.png"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn selection_keeps_order_and_names_errors() {
        let ids = ids();
        assert_eq!(Selection::All.rows(&ids).unwrap(), vec![0, 1, 2]);
        assert_eq!(Selection::from_args(None, Some("1:")).unwrap().rows(&ids).unwrap(), vec![1, 2]);
        assert_eq!(Selection::from_args(None, Some(":2")).unwrap().rows(&ids).unwrap(), vec![0, 1]);
        let by_id = Selection::from_args(Some(vec!["mug/00003".into(), "chair/00001.png".into()]), None).unwrap();
        assert_eq!(by_id.rows(&ids).unwrap(), vec![2, 0]);
        let err = Selection::Ids(vec!["cat/1".into()]).rows(&ids).unwrap_err().to_string();
        assert!(err.contains("cat/1") && err.contains("3 ids"), "{err}");
        // Row numbers where no id matches; an id that looks like a number is still an id.
        assert_eq!(Selection::Ids(vec!["2".into(), "0".into()]).rows(&ids).unwrap(), vec![2, 0]);
        let err = Selection::Ids(vec!["3".into()]).rows(&ids).unwrap_err().to_string();
        assert!(err.contains("'3'") && err.contains("row number below 3"), "{err}");
        let numbered: Vec<String> = ["1.png", "0.png"].map(String::from).to_vec();
        assert_eq!(Selection::Ids(vec!["0".into()]).rows(&numbered).unwrap(), vec![1]);
        assert!(Selection::from_args(None, Some("5:9")).unwrap().rows(&ids).unwrap_err().to_string().contains("3 rows"));
        assert!(Selection::from_args(None, Some("4:2")).is_err());
        assert!(Selection::from_args(None, Some("x:2")).unwrap_err().to_string().contains("'x'"));
        assert!(Selection::from_args(Some(vec![]), Some("0:1")).is_err());
    }

    #[test]
    fn output_paths_stay_inside() {
        let d = Path::new("/out");
        assert_eq!(output_path(d, "chair/00001.png"), Path::new("/out/chair/00001.png"));
        assert_eq!(output_path(d, "../../etc/passwd"), Path::new("/out/etc/passwd.png"));
        assert_eq!(output_path(d, "/abs/x.jpeg"), Path::new("/out/abs/x.png"));
        assert_eq!(output_path(d, "flat"), Path::new("/out/flat.png"));
    }
}
