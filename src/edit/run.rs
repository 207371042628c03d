//! `preimage edit`: apply edit ops to saved codes, decode, and write images and grids.
//!
//! Op `i` writes `OUT/<i>_<op>/<label>.png` and the grid `OUT/<i>_<op>.png`: the unedited
//! reconstructions first (the selected codes, or the codes the op names), then the edited
//! ones. `OUT/edits.json` lists every file, and for pose edits the angles the encoder reads
//! before and after.
use super::pose;
use super::{apply, Codes, EditOp, Edited};
use crate::data::codes::CodeFile;
use crate::encoder::WeightSource;
use crate::reconstruct::{row_of, save_grid, Input, Reconstructor, Selection};
use anyhow::{bail, Context, Result};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub struct EditOptions {
    pub decoder: PathBuf,
    /// A code file, or images encoded with the decoder's encoder (`weights` below).
    pub input: Input,
    pub ops: Vec<EditOp>,
    /// The codes per-row ops act on (default: the first 8 of a code file, every image given).
    pub selection: Selection,
    pub out: PathBuf,
    /// Encoder weights for pose edits (default: the file the decoder recorded).
    pub weights: Option<WeightSource>,
}

/// Rows edited when no selection is given.
pub const DEFAULT_ROWS: usize = 8;

/// What one op wrote.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EditOutput {
    pub op: String,
    pub grid: PathBuf,
    /// Ids whose unedited reconstructions open the grid.
    pub sources: Vec<String>,
    /// `(label, file)` of each edited image, in grid order.
    pub images: Vec<(String, PathBuf)>,
    /// Pose edits: azimuth/elevation the encoder reads from the unedited and the edited
    /// reconstruction, per image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pose: Vec<PoseReading>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PoseReading {
    pub id: String,
    pub target_azimuth: f32,
    pub target_elevation: f32,
    pub before_azimuth: f32,
    pub after_azimuth: f32,
    pub before_elevation: f32,
    pub after_elevation: f32,
    /// Azimuth error (degrees, modulo the class's symmetry) before and after; None when the
    /// class has no visible azimuth.
    pub before_error: Option<f32>,
    pub after_error: Option<f32>,
    /// What the optimization lowers: the squared distance of the pose head's output to the
    /// target (sin/cos of azimuth and elevation), before and after.
    pub before_loss: f32,
    pub after_loss: f32,
    /// The encoder's class for the unedited and the edited reconstruction (same object?).
    #[serde(default)]
    pub before_class: Option<String>,
    #[serde(default)]
    pub after_class: Option<String>,
}

/// Ops from an edit TOML file: `ops = ["scale 3=2", "interpolate a b --steps 8"]`.
pub fn read_ops_file(path: &Path) -> Result<Vec<EditOp>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        ops: Vec<String>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading edit file {}", path.display()))?;
    let f: File = toml::from_str(&text).with_context(|| format!("{}: expected `ops = [\"scale 3=2\", ...]`", path.display()))?;
    f.ops.iter().map(|o| EditOp::parse(o).with_context(|| format!("in {}", path.display()))).collect()
}

/// Apply every op, decode, write images, grids and `edits.json`.
pub fn edit<B: AutodiffBackend>(opts: &EditOptions, device: &B::Device) -> Result<Vec<EditOutput>> {
    if opts.ops.is_empty() {
        bail!("no edit op given: pass --op \"scale 3=2\" (repeatable) or --ops FILE.toml");
    }
    let rec = Reconstructor::<B::InnerBackend>::load(&opts.decoder, device)?;
    let (file, tap) = opts.input.tap_codes(&rec, &opts.decoder)?;
    let codes = Codes { shape: &rec.info.code_shape, tap: &tap };
    let selected = match (&opts.selection, &opts.input) {
        (Selection::All, Input::Codes(_)) => (0..file.len().min(DEFAULT_ROWS)).collect(),
        (s, _) => s.rows(&file.ids)?,
    };
    let id_of = |id: &str| row_of(&file.ids, id);
    let size = rec.info.image_size;
    let [h, w] = size;
    // Every op's units and ids first: an error after some ops' images are written would leave
    // a half-done folder.
    for (i, op) in opts.ops.iter().enumerate() {
        let ids: Vec<&str> = match op {
            EditOp::Interpolate { a, b, .. } => vec![a, b],
            EditOp::Add(terms) => terms.iter().map(|(_, id)| id.as_str()).collect(),
            _ => vec![],
        };
        op.check_units(&codes).and_then(|_| ids.iter().try_for_each(|id| id_of(id).map(drop))).with_context(|| format!("op {i} ({})", op.name()))?;
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut outputs = Vec::new();
    for (i, op) in opts.ops.iter().enumerate() {
        let name = format!("{i}_{}", op.name());
        let dir = opts.out.join(&name);
        // The codes the op starts from, shown unedited first.
        let sources: Vec<usize> = match op {
            EditOp::Interpolate { a, b, .. } => vec![id_of(a)?, id_of(b)?],
            EditOp::Add(terms) => terms.iter().map(|(_, id)| id_of(id)).collect::<Result<_>>()?,
            EditOp::Random { .. } => vec![],
            _ => selected.clone(),
        };
        let mut pose_readings = Vec::new();
        let edited: Vec<Edited> = match op {
            EditOp::Pose { azimuth, elevation, steps, keep } => {
                let (e, readings) = pose_edit::<B>(opts, &rec, &file, &codes, &selected, (*azimuth, *elevation, *steps, *keep), device)?;
                pose_readings = readings;
                e
            }
            _ => apply(op, &codes, &selected, &file.ids, &id_of)?,
        };
        let unedited = rec.decode(&tap.rows(&sources)?)?;
        let flat: Vec<f32> = edited.iter().flat_map(|e| e.code.iter().copied()).collect();
        let images = rec.decode(&flat)?;
        let mut files = Vec::new();
        // Ids that differ only by '/' and '_' (`a/b_c`, `a_b/c`) flatten to one label: the
        // later ones are numbered rather than written over the first.
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        for (e, img) in edited.iter().zip(&images) {
            let n = seen.entry(e.label.as_str()).or_default();
            *n += 1;
            let label = if *n == 1 { e.label.clone() } else { format!("{}-{n}", e.label) };
            let path = dir.join(format!("{label}.png"));
            crate::data::folder::save_rgb(&path, img, h as u32, w as u32)?;
            files.push((label, path));
        }
        // Per-row ops: unedited above, edited below; the others: one strip.
        let cols = if op.per_row() { sources.len() } else { unedited.len() + images.len() };
        let tiles: Vec<Vec<f32>> = unedited.into_iter().chain(images).collect();
        let grid = opts.out.join(format!("{name}.png"));
        save_grid(&grid, &tiles, size, cols.min(16))?;
        println!("{name}: {} image(s) in {}, grid {}", files.len(), dir.display(), grid.display());
        outputs.push(EditOutput {
            op: op.to_string(),
            grid,
            sources: sources.iter().map(|&r| file.ids[r].clone()).collect(),
            images: files,
            pose: pose_readings,
        });
    }
    crate::util::write_atomic(&opts.out.join("edits.json"), serde_json::to_string_pretty(&outputs)?.as_bytes())?;
    Ok(outputs)
}

/// Pose edit of the selected rows; returns the edited codes and what the encoder reads.
fn pose_edit<B: AutodiffBackend>(
    opts: &EditOptions,
    rec: &Reconstructor<B::InnerBackend>,
    file: &CodeFile,
    codes: &Codes,
    selected: &[usize],
    (azimuth, elevation, steps, keep): (f32, Option<f32>, usize, f32),
    device: &B::Device,
) -> Result<(Vec<Edited>, Vec<PoseReading>)> {
    use crate::train::encoder::{azimuth_error, predicted_azimuth};
    let info = &rec.info;
    if !info.encoder_spec.taps().iter().any(|t| t == "pose") {
        bail!("pose edits need an encoder with a pose head (posenet); {} decodes {} {} codes", opts.decoder.display(), info.encoder, info.tap);
    }
    let net = info.load_encoder::<B>(opts.weights.as_ref(), device)?;
    let (decoder, _) = crate::decoder::load_run::<B>(&opts.decoder, device)?;
    let symmetry = symmetry_table(file);
    let sym_of = |r: usize| -> u32 {
        let class = file.labels.as_ref().and_then(|l| usize::try_from(l[r]).ok()).and_then(|l| {
            // Files from before label_classes: posenet's classes were the folder's.
            let pv = file.provenance.as_ref()?;
            pv.label_classes.as_ref().unwrap_or(&pv.classes).get(l)
        });
        class.and_then(|c| symmetry.get(c).copied()).unwrap_or(1)
    };
    let d = codes.dim();
    let n = selected.len();
    let z0 = codes.tap.rows(selected)?;
    let z0 = Tensor::<B::InnerBackend, 2>::from_data(TensorData::new(z0, [n, d]), device);
    let inner = net.clone().valid();
    let (before, class_before) = pose::read_pose_and_class(&inner, rec.decoder.forward(z0.clone()))?;
    let targets: Vec<_> = selected
        .iter()
        .zip(&before)
        .map(|(&r, b)| pose::target_row(azimuth, elevation.unwrap_or_else(|| pose::elevation_of(b)), sym_of(r)))
        .collect();
    if selected.iter().all(|&r| sym_of(r) == 0) && elevation.is_none() {
        bail!("the selected objects look the same from every azimuth (continuous symmetry); give an elevation: `pose AZ,EL`");
    }
    println!("pose edit: {n} code(s) toward azimuth {azimuth}°{}, {steps} Adam steps, keep {keep}", elevation.map(|e| format!(", elevation {e}°")).unwrap_or_default());
    let z = pose::edit_codes::<B>(&decoder, &net, z0, &targets, steps, keep)?;
    let (after, class_after) = pose::read_pose_and_class(&inner, rec.decoder.forward(z.clone()))?;
    let class_name = |c: &Option<Vec<usize>>, k: usize| c.as_ref().and_then(|c| info.encoder_spec.classes.get(c[k]).cloned());
    let z = pose::rows(z);
    let mut edited = Vec::new();
    let mut readings = Vec::new();
    for (k, &r) in selected.iter().enumerate() {
        let s = sym_of(r);
        let err = |row: &[f32]| (s != 0).then(|| azimuth_error(predicted_azimuth(row, s), azimuth.rem_euclid(360.0), s));
        let (t, m) = targets[k];
        let loss = |row: &[f32]| (0..4).map(|i| m[i] * (row[i] - t[i]).powi(2)).sum::<f32>();
        readings.push(PoseReading {
            id: file.ids[r].clone(),
            target_azimuth: azimuth,
            target_elevation: pose::elevation_of(&targets[k].0),
            before_azimuth: predicted_azimuth(&before[k], s.max(1)),
            after_azimuth: predicted_azimuth(&after[k], s.max(1)),
            before_elevation: pose::elevation_of(&before[k]),
            after_elevation: pose::elevation_of(&after[k]),
            before_error: err(&before[k]),
            after_error: err(&after[k]),
            before_loss: loss(&before[k]),
            after_loss: loss(&after[k]),
            before_class: class_name(&class_before, k),
            after_class: class_name(&class_after, k),
        });
        let stem = super::file_label(&file.ids[r]);
        edited.push(Edited { label: format!("{stem}_az{azimuth}"), code: z[k].clone() });
    }
    for p in &readings {
        println!(
            "  {}: azimuth {:.0}° → {:.0}° (target {:.0}°), elevation {:.0}° → {:.0}°, class {} → {}",
            p.id,
            p.before_azimuth,
            p.after_azimuth,
            p.target_azimuth,
            p.before_elevation,
            p.after_elevation,
            p.before_class.as_deref().unwrap_or("-"),
            p.after_class.as_deref().unwrap_or("-")
        );
    }
    Ok((edited, readings))
}

/// Class → rotational symmetry, from the `classes.csv` of the folder the codes came from
/// (empty when unknown: every class then counts as asymmetric).
fn symmetry_table(file: &CodeFile) -> std::collections::HashMap<String, u32> {
    file.provenance
        .as_ref()
        .and_then(|pv| pv.data_root.as_ref())
        .map(|root| Path::new(root).join(crate::data::folder::CLASSES_FILE))
        .filter(|p| p.exists())
        .and_then(|p| crate::data::folder::read_symmetry(&p).ok())
        .unwrap_or_default()
}
