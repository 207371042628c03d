//! Deterministic software renderer and pose-annotated dataset writer.
//!
//! # Camera convention
//! The world is right-handed with **y up**. The camera orbits the origin and always
//! looks at it:
//!
//! ```text
//! eye = distance * (cos(el) * sin(az),  sin(el),  cos(el) * cos(az))
//! ```
//!
//! so **azimuth 0 puts the camera on the +z axis** and increasing azimuth moves it
//! **counter-clockwise seen from above** (towards +x at 90°, -z at 180°, -x at 270°).
//! Elevation is the angle above the horizontal plane. Built-in meshes face +z, so
//! azimuth 0 is a front view. The image's up vector is the projection of world +y.
//! The perspective camera has a [`FOV_DEG`] field of view (square images); with
//! meshes normalized to the unit sphere and the dataset's distance range, objects
//! fill roughly 50–90 % of the image width.
//!
//! # Shading
//! Flat (per-face) Lambert shading plus ambient, lit from both sides (`|n·l|`) so
//! the triangle winding of OBJ files does not matter; the light is directional and
//! given in world coordinates (the direction *towards* the light).
//!
//! # Colours
//! With [`Colours::Class`] (the default) every class has a typical hue, spread evenly round the
//! colour wheel in dataset order (class `k` of `n`: hue `k/n`), and [`CLASS_HUE_SHARE`] of its
//! objects take it (±[`CLASS_HUE_JITTER`]); the rest get any hue. Colour then hints at the class
//! without giving it away, as for real object categories, so a class code (fc8) keeps the
//! typical colour the way AlexNet's fc8 does on ImageNet. [`Colours::Random`] draws every hue
//! uniformly, independent of the class.
//!
//! # Determinism
//! Image `i` of a dataset draws all its randomness from
//! `Rng::new(seed_i)` with `seed_i = Rng::derive(seed, i).next_u64()` (the `seed`
//! column of the manifest), and pose values are rounded to the 4 decimals written
//! to the manifest before rendering. Output is therefore byte-identical for the
//! same arguments whatever the number of threads, and re-rendering a manifest row
//! reproduces its image (with the same colour rule and class order, which decide the hue).

use std::fmt;
use std::fs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use image::{ImageEncoder, RgbImage};

use crate::data::folder::csv_cell;
use crate::data::meshes::{self, Axis, Mesh};
use crate::rng::Rng;
use crate::util::write_atomic;

/// Full field of view of the (square) camera, in degrees.
pub const FOV_DEG: f32 = 46.0;
/// Dataset camera azimuth range in degrees (uniform, `[lo, hi)`).
pub const AZIMUTH_RANGE: (f32, f32) = (0.0, 360.0);
/// Dataset camera elevation range in degrees (uniform).
pub const ELEVATION_RANGE: (f32, f32) = (5.0, 45.0);
/// Dataset camera distance range in units of the mesh's bounding-sphere radius (uniform).
pub const DISTANCE_RANGE: (f32, f32) = (2.6, 3.4);
/// Supersampling factor per axis (SS×SS samples per output pixel).
const SS: u32 = 3;
const AMBIENT: f32 = 0.25;
const DIFFUSE: f32 = 0.75;
/// Share of a class's objects drawn in its typical hue under [`Colours::Class`].
pub const CLASS_HUE_SHARE: f32 = 0.8;
/// Largest hue offset from the class's typical hue (fraction of the wheel: ±0.04 = ±14°).
pub const CLASS_HUE_JITTER: f32 = 0.04;
/// Manifest header, exactly as written.
/// `mesh` is the OBJ file drawn (relative to the mesh folder, `/`-separated; empty for the
/// built-ins), so images of one ShapeNet model can be told apart.
pub const MANIFEST_HEADER: &str = "id,class,azimuth_deg,elevation_deg,distance,light,seed,mesh";
/// Class table header, exactly as written.
pub const CLASSES_HEADER: &str = "class,symmetry";

/// Everything that determines one rendered view of a mesh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewParams {
    /// Camera azimuth in degrees (0 = on +z, counter-clockwise seen from above).
    pub azimuth_deg: f32,
    /// Camera elevation above the horizontal plane in degrees (clamped to ±89.9).
    pub elevation_deg: f32,
    /// Camera distance from the origin (meshes fit the unit sphere).
    pub distance: f32,
    /// Direction towards the light, world coordinates (need not be normalized).
    pub light: [f32; 3],
    /// Object albedo, RGB in `[0, 1]`.
    pub color: [f32; 3],
    /// Background colour, RGB in `[0, 1]`.
    pub background: [f32; 3],
}

/// Rounds to 4 decimals, the precision written to the manifest.
fn q4(x: f32) -> f32 {
    (x * 1e4).round() / 1e4
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let c = v * s;
    let x = c * (1.0 - ((h6 % 2.0) - 1.0).abs());
    let (r, g, b) = match h6 as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    [r + m, g + m, b + m]
}

/// How object colours are drawn (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Colours {
    /// Each class has a typical hue that most of its objects take.
    #[default]
    Class,
    /// Any hue, independent of the class.
    Random,
}

impl Colours {
    /// The typical hue of class `k` of `n` under this rule, `None` for random hues.
    pub fn class_hue(self, k: usize, n: usize) -> Option<f32> {
        match self {
            Colours::Class => Some(k as f32 / n.max(1) as f32),
            Colours::Random => None,
        }
    }
}

/// Draws a random dataset view: pose uniform in the dataset ranges, light from
/// above (elevation 15–75°, any azimuth), a saturated object colour, and a
/// background that is either a uniform grey or a light pastel colour. Pose and
/// light are rounded to 4 decimals. The object's hue is uniform, or near `class_hue`
/// for [`CLASS_HUE_SHARE`] of the draws when given (the same single draw decides both, so
/// the pose does not depend on the colour rule). The dataset renders image `i` with
/// `random_view(&mut Rng::new(seed_i), class_hue)` (see the module docs).
pub fn random_view(rng: &mut Rng, class_hue: Option<f32>) -> ViewParams {
    let mut azimuth_deg = q4(rng.range(AZIMUTH_RANGE.0, AZIMUTH_RANGE.1));
    if azimuth_deg >= 360.0 {
        azimuth_deg -= 360.0;
    }
    let elevation_deg = q4(rng.range(ELEVATION_RANGE.0, ELEVATION_RANGE.1));
    let distance = q4(rng.range(DISTANCE_RANGE.0, DISTANCE_RANGE.1));
    let la = rng.range(0.0, 360.0).to_radians();
    let le = rng.range(15.0, 75.0).to_radians();
    let light = [
        q4(le.cos() * la.sin()),
        q4(le.sin()),
        q4(le.cos() * la.cos()),
    ];
    let u = rng.uniform();
    let hue = match class_hue {
        Some(h) if u < CLASS_HUE_SHARE => h + (u / CLASS_HUE_SHARE - 0.5) * 2.0 * CLASS_HUE_JITTER,
        Some(_) => (u - CLASS_HUE_SHARE) / (1.0 - CLASS_HUE_SHARE),
        None => u,
    };
    let color = hsv_to_rgb(hue, rng.range(0.55, 0.95), rng.range(0.75, 1.0));
    let background = if rng.uniform() < 0.5 {
        let g = rng.range(0.1, 0.9);
        [g, g, g]
    } else {
        hsv_to_rgb(rng.uniform(), rng.range(0.08, 0.3), rng.range(0.8, 0.97))
    };
    ViewParams {
        azimuth_deg,
        elevation_deg,
        distance,
        light,
        color,
        background,
    }
}

fn sub(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn dot(a: [f32; 3], b: [f32; 3]) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}
fn cross(a: [f32; 3], b: [f32; 3]) -> [f32; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn normalize(a: [f32; 3]) -> Option<[f32; 3]> {
    let n = dot(a, a).sqrt();
    (n > 0.0 && n.is_finite()).then(|| [a[0] / n, a[1] / n, a[2] / n])
}

/// Renders `mesh` from the camera described by `params` into a `size`×`size` RGB
/// image (3×3 supersampled). Triangles with a vertex closer than 0.01 to the
/// camera plane are skipped, which never happens for unit-sphere meshes at
/// distance > 1.01.
pub fn render_one(mesh: &Mesh, params: &ViewParams, size: u32) -> RgbImage {
    let n = (size * SS) as usize;
    let el = params.elevation_deg.clamp(-89.9, 89.9).to_radians();
    let az = params.azimuth_deg.to_radians();
    let eye = [
        params.distance * el.cos() * az.sin(),
        params.distance * el.sin(),
        params.distance * el.cos() * az.cos(),
    ];
    let fwd = normalize(sub([0.0; 3], eye)).unwrap_or([0.0, 0.0, -1.0]);
    let right = normalize(cross(fwd, [0.0, 1.0, 0.0])).unwrap_or([1.0, 0.0, 0.0]);
    let up = cross(right, fwd);
    let light = normalize(params.light).unwrap_or([0.0, 1.0, 0.0]);
    let inv_tan = 1.0 / (FOV_DEG.to_radians() / 2.0).tan();
    let half = n as f32 / 2.0;

    // Project every vertex once: screen x, screen y (pixels, y down), 1/depth.
    const NEAR: f32 = 0.01;
    let proj: Vec<[f32; 3]> = mesh
        .vertices
        .iter()
        .map(|&v| {
            let d = sub(v, eye);
            let z = dot(d, fwd);
            if z < NEAR {
                return [f32::NAN; 3];
            }
            let iz = 1.0 / z;
            [
                (1.0 + dot(d, right) * iz * inv_tan) * half,
                (1.0 - dot(d, up) * iz * inv_tan) * half,
                iz,
            ]
        })
        .collect();

    // Depth buffer holds 1/depth (larger = closer); id buffer the face's shade index.
    let mut zbuf = vec![0.0f32; n * n];
    let mut idbuf = vec![u32::MAX; n * n];
    let mut shades: Vec<[f32; 3]> = Vec::with_capacity(mesh.triangles.len());
    for tri in &mesh.triangles {
        let [a, b, c] = tri.map(|i| proj.get(i as usize).copied().unwrap_or([f32::NAN; 3]));
        if a.iter().chain(&b).chain(&c).any(|x| !x.is_finite()) {
            continue;
        }
        let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
        if area.abs() < 1e-9 {
            continue;
        }
        let [va, vb, vc] = tri.map(|i| mesh.vertices[i as usize]);
        let Some(normal) = normalize(cross(sub(vb, va), sub(vc, va))) else {
            continue;
        };
        let k = AMBIENT + DIFFUSE * dot(normal, light).abs();
        let id = shades.len() as u32;
        shades.push(params.color.map(|c| c * k));

        // Edge functions w_i(x, y) = A_i x + B_i y + C_i, signed so inside is >= 0;
        // each is proportional to the barycentric weight of the opposite vertex.
        let s = area.signum();
        let edge = |p: [f32; 3], q: [f32; 3]| {
            let (ea, eb) = (-(q[1] - p[1]) * s, (q[0] - p[0]) * s);
            (ea, eb, -(ea * p[0] + eb * p[1]))
        };
        let (e0, e1, e2) = (edge(b, c), edge(c, a), edge(a, b));
        let inv_area = 1.0 / area.abs();
        let (za, zb, zc) = (a[2] * inv_area, b[2] * inv_area, c[2] * inv_area);

        // Samples sit at pixel centres (x + 0.5, y + 0.5).
        let lo = |m: f32| ((m - 0.5).ceil().max(0.0)) as usize;
        let hi = |m: f32| ((m - 0.5).floor().min(n as f32 - 1.0)) as isize;
        let (x0, x1) = (lo(a[0].min(b[0]).min(c[0])), hi(a[0].max(b[0]).max(c[0])));
        let (y0, y1) = (lo(a[1].min(b[1]).min(c[1])), hi(a[1].max(b[1]).max(c[1])));
        if x1 < x0 as isize || y1 < y0 as isize {
            continue;
        }
        for y in y0..=y1 as usize {
            let py = y as f32 + 0.5;
            let (r0, r1, r2) = (e0.1 * py + e0.2, e1.1 * py + e1.2, e2.1 * py + e2.2);
            let row = y * n;
            for x in x0..=x1 as usize {
                let px = x as f32 + 0.5;
                let (w0, w1, w2) = (e0.0 * px + r0, e1.0 * px + r1, e2.0 * px + r2);
                if w0 < 0.0 || w1 < 0.0 || w2 < 0.0 {
                    continue;
                }
                let iz = w0 * za + w1 * zb + w2 * zc;
                if iz > zbuf[row + x] {
                    zbuf[row + x] = iz;
                    idbuf[row + x] = id;
                }
            }
        }
    }

    // Box-filter the SS×SS samples of each output pixel.
    let norm = 1.0 / (SS * SS) as f32;
    RgbImage::from_fn(size, size, |px, py| {
        let mut acc = [0.0f32; 3];
        for sy in 0..SS {
            let row = (py * SS + sy) as usize * n;
            for sx in 0..SS {
                let id = idbuf[row + (px * SS + sx) as usize];
                let c = if id == u32::MAX {
                    params.background
                } else {
                    shades[id as usize]
                };
                acc = [acc[0] + c[0], acc[1] + c[1], acc[2] + c[2]];
            }
        }
        image::Rgb(acc.map(|v| (v * norm * 255.0).round().clamp(0.0, 255.0) as u8))
    })
}

/// Options for [`render_dataset`].
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// Number of images.
    pub count: usize,
    /// Image width and height in pixels.
    pub size: u32,
    /// Master seed.
    pub seed: u64,
    /// Restrict to (and order) these classes; `None` = all available.
    pub classes: Option<Vec<String>>,
    /// Directory of OBJ meshes (see [`meshes::find_mesh_classes`]) instead of the built-ins.
    pub meshes: Option<PathBuf>,
    /// How object colours relate to the class.
    pub colours: Colours,
    /// The up axis of the OBJ files (turned to our +y).
    pub up: Axis,
    /// The axis the OBJ files' front faces (turned to our +z, seen at azimuth 0).
    pub front: Axis,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            count: 1000,
            size: 64,
            seed: 0,
            classes: None,
            meshes: None,
            colours: Colours::Class,
            up: Axis::UP,
            front: Axis::FRONT,
        }
    }
}

/// What [`render_dataset`] produced.
#[derive(Debug, Clone)]
pub struct RenderSummary {
    /// Total images written.
    pub count: usize,
    /// Images per class, in class order.
    pub per_class: Vec<(String, usize)>,
    /// Wall-clock time spent.
    pub elapsed: Duration,
    /// Worker threads used.
    pub threads: usize,
    /// OBJ files that could not be loaded (each was replaced by the next instance of its
    /// class), with the reason.
    pub skipped_meshes: Vec<(PathBuf, String)>,
}

impl fmt::Display for RenderSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rendered {} images in {:.2}s on {} thread(s)",
            self.count,
            self.elapsed.as_secs_f64(),
            self.threads
        )?;
        for (name, n) in &self.per_class {
            write!(f, "\n  {name}: {n}")?;
        }
        if !self.skipped_meshes.is_empty() {
            write!(f, "\nskipped {} mesh file(s) that could not be loaded (see the warnings)", self.skipped_meshes.len())?;
        }
        Ok(())
    }
}

struct ClassEntry {
    name: String,
    symmetry: u32,
    instances: Instances,
}

enum Instances {
    Builtin(Arc<Mesh>),
    /// OBJ files, loaded through the [`MeshCache`] when drawn.
    Files(Vec<PathBuf>),
}

/// Memory the loaded OBJ meshes may keep (beyond it they are loaded again on each use):
/// a ShapeNet class has thousands of models, too many to hold at once.
const MESH_CACHE_BYTES: usize = 1 << 30;

/// OBJ meshes loaded on first use, shared by the render workers. A file that fails to
/// load is remembered with its error and reported once.
struct MeshCache {
    up: Axis,
    front: Axis,
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    loaded: HashMap<PathBuf, Arc<Mesh>>,
    failed: Vec<(PathBuf, String)>,
    bytes: usize,
}

impl MeshCache {
    fn get(&self, path: &Path) -> std::result::Result<Arc<Mesh>, String> {
        {
            let state = self.state.lock().expect("mesh cache poisoned");
            if let Some(m) = state.loaded.get(path) {
                return Ok(m.clone());
            }
            if let Some((_, e)) = state.failed.iter().find(|(p, _)| p == path) {
                return Err(e.clone());
            }
        }
        // Loaded outside the lock so workers parse in parallel; two may load one file.
        let loaded = meshes::load_obj(path)
            .and_then(|m| m.oriented(self.up, self.front))
            .map(Arc::new)
            .map_err(|e| format!("{e:#}"));
        let mut state = self.state.lock().expect("mesh cache poisoned");
        match loaded {
            Ok(m) => {
                let bytes = m.vertices.len() * 12 + m.triangles.len() * 12;
                if state.bytes + bytes <= MESH_CACHE_BYTES && !state.loaded.contains_key(path) {
                    state.bytes += bytes;
                    state.loaded.insert(path.to_path_buf(), m.clone());
                }
                Ok(m)
            }
            Err(e) => {
                if !state.failed.iter().any(|(p, _)| p == path) {
                    eprintln!("warning: skipping a mesh (another of its class is drawn instead): {e}");
                    state.failed.push((path.to_path_buf(), e.clone()));
                }
                Err(e)
            }
        }
    }
}

impl ClassEntry {
    /// The mesh of one image and its file (`None` for built-ins). The instance is drawn from
    /// `rng` (only when there are several); one that fails to load is replaced by the next
    /// file of the class, so the choice depends on the seed and the files alone.
    fn draw(&self, rng: &mut Rng, cache: &MeshCache) -> Result<(Arc<Mesh>, Option<&Path>)> {
        let files = match &self.instances {
            Instances::Builtin(m) => return Ok((m.clone(), None)),
            Instances::Files(files) => files,
        };
        let first = if files.len() > 1 { rng.below(files.len()) } else { 0 };
        let mut first_error = None;
        for k in 0..files.len() {
            let path = &files[(first + k) % files.len()];
            match cache.get(path) {
                Ok(m) => return Ok((m, Some(path))),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        bail!(
            "none of the {} OBJ file(s) of class {:?} could be loaded; the first error: {}",
            files.len(),
            self.name,
            first_error.unwrap_or_default()
        )
    }
}

/// The classes to render, in dataset order, after applying `opts.classes`.
fn resolve_classes(opts: &RenderOptions) -> Result<Vec<ClassEntry>> {
    let available: Vec<ClassEntry> = match &opts.meshes {
        Some(dir) => {
            // Symmetry orders the user knows (a table's 2, a bottle's 0) come from
            // DIR/classes.csv, as written here; other classes are taken as asymmetric.
            let table = dir.join(crate::data::folder::CLASSES_FILE);
            let symmetry = if table.is_file() { crate::data::folder::read_symmetry(&table)? } else { Default::default() };
            let classes = meshes::find_mesh_classes(dir)?;
            // A ShapeNet class may be listed by its name or by its synset id.
            if let Some(unknown) = symmetry.keys().find(|k| !classes.iter().any(|c| &c.name == *k || c.synset.as_ref() == Some(*k))) {
                bail!("{}: class {unknown:?} has no meshes in {}", table.display(), dir.display());
            }
            let named: Vec<String> = classes.iter().filter_map(|c| c.synset.as_ref().map(|id| format!("{id} → {}", c.name))).collect();
            if !named.is_empty() {
                eprintln!("note: ShapeNet synset folders take ShapeNet's names: {}", named.join(", "));
            }
            classes
                .into_iter()
                .map(|c| ClassEntry {
                    symmetry: symmetry.get(&c.name).or_else(|| c.synset.as_ref().and_then(|id| symmetry.get(id))).copied().unwrap_or(1),
                    name: c.name,
                    instances: Instances::Files(c.files),
                })
                .collect()
        }
        None => meshes::builtin_classes()
            .into_iter()
            .map(|(name, symmetry)| ClassEntry {
                name: name.to_string(),
                symmetry,
                instances: Instances::Builtin(Arc::new(
                    meshes::builtin_mesh(name).expect("every built-in class has a mesh"),
                )),
            })
            .collect(),
    };
    let Some(wanted) = &opts.classes else {
        return Ok(available);
    };
    if wanted.is_empty() {
        bail!("the class list is empty");
    }
    let valid = || {
        available
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(bad) = wanted
        .iter()
        .find(|w| !available.iter().any(|c| c.name == **w))
    {
        if let Some(name) = meshes::shapenet_name(bad) {
            bail!("unknown class {bad:?}: ShapeNet's synset folders are named after their category; pass {name:?}");
        }
        bail!("unknown class {bad:?}; valid classes are: {}", valid());
    }
    let mut available: Vec<Option<ClassEntry>> = available.into_iter().map(Some).collect();
    let mut out = Vec::new();
    for w in wanted {
        // Taking the entry out also drops duplicates in `wanted`.
        if let Some(slot) = available
            .iter_mut()
            .find(|c| c.as_ref().is_some_and(|c| c.name == *w))
        {
            out.push(slot.take().expect("checked is_some"));
        }
    }
    Ok(out)
}

/// `path` below `root`, `/`-separated whatever the platform (its file name when `root` is
/// the file itself).
fn relative_slash_path(path: &Path, root: &Path) -> String {
    let rel = match path.strip_prefix(root) {
        Ok(r) if r.as_os_str().is_empty() => Path::new(path.file_name().unwrap_or_default()),
        Ok(r) => r,
        Err(_) => path,
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn encode_png(img: &RgbImage) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(img.len() + 1024);
    image::codecs::png::PngEncoder::new(&mut buf)
        .write_image(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .context("PNG encoding failed")?;
    Ok(buf)
}

/// Renders a dataset of `opts.count` images into `out` (created if needed):
/// - `out/<class>/<id>.png`: RGB 8-bit, `id` = global index zero-padded to 6+ digits;
///   image `i` shows class `i % n_classes` (balanced), a random instance of it if
///   the class has several meshes, from the view `random_view(&mut Rng::new(seed_i), class_hue)`
///   (`class_hue` from `opts.colours` and the class's position `i % n_classes`);
/// - `out/manifest.csv`: [`MANIFEST_HEADER`], one row per image in id order
///   (`light` is the world-space light direction as `x y z`);
/// - `out/classes.csv`: [`CLASSES_HEADER`], symmetry order about the vertical axis
///   (1 = none, n = n-fold, 0 = continuous; OBJ classes are 1).
///
/// Uses [`crate::util::cpu_threads`] threads; the output does not depend on the thread count.
pub fn render_dataset(out: &Path, opts: &RenderOptions) -> Result<RenderSummary> {
    render_dataset_with_threads(out, opts, crate::util::cpu_threads())
}

fn render_dataset_with_threads(
    out: &Path,
    opts: &RenderOptions,
    threads: usize,
) -> Result<RenderSummary> {
    let start = Instant::now();
    if opts.count == 0 {
        bail!("the image count must be at least 1");
    }
    if opts.size == 0 || opts.size > 4096 {
        bail!(
            "image size must be between 1 and 4096 pixels, got {}",
            opts.size
        );
    }
    let classes = resolve_classes(opts)?;
    if opts.meshes.is_none() && (opts.up, opts.front) != (Axis::UP, Axis::FRONT) {
        bail!("up and front axes apply to OBJ files (--meshes); the built-in meshes are +y up, front +z");
    }
    // Checked before anything is written (the mesh cache applies it).
    Mesh::default().oriented(opts.up, opts.front)?;
    for c in &classes {
        fs::create_dir_all(out.join(&c.name)).with_context(|| {
            format!(
                "cannot create output directory {}",
                out.join(&c.name).display()
            )
        })?;
    }
    let width = opts.count.saturating_sub(1).to_string().len().max(6);
    let threads = threads.clamp(1, opts.count.max(1));

    // Workers pull indices from a shared counter; each returns (index, manifest row).
    let cache = MeshCache { up: opts.up, front: opts.front, state: Mutex::default() };
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let worker = || -> Result<Vec<(usize, String)>> {
        let mut rows = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= opts.count || failed.load(Ordering::Relaxed) {
                return Ok(rows);
            }
            let image_seed = Rng::derive(opts.seed, i as u64).next_u64();
            let mut rng = Rng::new(image_seed);
            let k = i % classes.len();
            let class = &classes[k];
            let view = random_view(&mut rng, opts.colours.class_hue(k, classes.len()));
            // Drawn after the view so the view depends on the seed alone.
            let (mesh, file) = match class.draw(&mut rng, &cache) {
                Ok(drawn) => drawn,
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            };
            let mesh_cell = match (file, &opts.meshes) {
                (Some(f), Some(root)) => csv_cell(&relative_slash_path(f, root))?,
                _ => String::new(),
            };
            let id = format!("{i:0width$}");
            let png = encode_png(&render_one(&mesh, &view, opts.size))?;
            if let Err(e) = write_atomic(&out.join(&class.name).join(format!("{id}.png")), &png) {
                failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            let l = view.light;
            rows.push((
                i,
                format!(
                    "{id},{},{:.4},{:.4},{:.4},{:.4} {:.4} {:.4},{image_seed},{mesh_cell}\n",
                    class.name,
                    view.azimuth_deg,
                    view.elevation_deg,
                    view.distance,
                    l[0],
                    l[1],
                    l[2]
                ),
            ));
        }
    };
    let results: Vec<Result<Vec<(usize, String)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("render worker panicked")))
            })
            .collect()
    });
    let mut rows = Vec::with_capacity(opts.count);
    for r in results {
        rows.extend(r?);
    }
    rows.sort_unstable_by_key(|r| r.0);

    let mut manifest = String::with_capacity(64 * (rows.len() + 1));
    manifest.push_str(MANIFEST_HEADER);
    manifest.push('\n');
    rows.iter().for_each(|r| manifest.push_str(&r.1));
    write_atomic(&out.join("manifest.csv"), manifest.as_bytes())?;

    let mut table = format!("{CLASSES_HEADER}\n");
    for c in &classes {
        table.push_str(&format!("{},{}\n", c.name, c.symmetry));
    }
    write_atomic(&out.join("classes.csv"), table.as_bytes())?;

    let per_class = classes
        .iter()
        .enumerate()
        .map(|(k, c)| {
            (
                c.name.clone(),
                (opts.count + classes.len() - 1 - k) / classes.len(),
            )
        })
        .collect();
    Ok(RenderSummary {
        count: opts.count,
        per_class,
        elapsed: start.elapsed(),
        threads,
        skipped_meshes: cache.state.into_inner().expect("mesh cache poisoned").failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::Csv;

    fn scratch(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let d = std::env::temp_dir().join(format!(
            "preimage-render-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    /// All files under `dir` as (relative path, bytes), sorted.
    fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((
                        p.strip_prefix(dir).unwrap().to_path_buf(),
                        fs::read(&p).unwrap(),
                    ));
                }
            }
        }
        out.sort();
        out
    }

    fn view(az: f32) -> ViewParams {
        ViewParams {
            azimuth_deg: az,
            elevation_deg: 25.0,
            distance: 3.0,
            light: [0.3, 0.8, 0.5],
            color: [0.9, 0.3, 0.2],
            background: [0.5, 0.5, 0.5],
        }
    }

    fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| (*x as f64 - *y as f64).abs())
            .sum::<f64>()
            / a.len() as f64
    }

    /// Hue in `[0, 1)` of an RGB colour (its saturation is well above 0 here).
    fn hue(c: [f32; 3]) -> f32 {
        let (max, min) = (c[0].max(c[1]).max(c[2]), c[0].min(c[1]).min(c[2]));
        let d = max - min;
        let h = if max == c[0] { ((c[1] - c[2]) / d).rem_euclid(6.0) } else if max == c[1] { (c[2] - c[0]) / d + 2.0 } else { (c[0] - c[1]) / d + 4.0 };
        h / 6.0
    }

    #[test]
    fn class_colours_cluster_round_the_class_hue() {
        let near = |h: f32, c: f32| {
            let d = (h - c).rem_euclid(1.0);
            d.min(1.0 - d) <= CLASS_HUE_JITTER + 1e-3
        };
        let (n, class_hue) = (2000, 0.3);
        let share = |rule: Option<f32>| {
            (0..n).filter(|i| near(hue(random_view(&mut Rng::new(*i as u64), rule).color), class_hue)).count() as f32 / n as f32
        };
        // 80 % in the class's hue band plus the random rest's 8 % share of it, vs 8 % alone.
        let (class, random) = (share(Some(class_hue)), share(None));
        assert!((class - (CLASS_HUE_SHARE + (1.0 - CLASS_HUE_SHARE) * 2.0 * CLASS_HUE_JITTER)).abs() < 0.03, "class rule: {class}");
        assert!((random - 2.0 * CLASS_HUE_JITTER).abs() < 0.03, "random rule: {random}");
        // The colour rule does not move the pose.
        let (a, b) = (random_view(&mut Rng::new(5), Some(0.7)), random_view(&mut Rng::new(5), None));
        assert_eq!((a.azimuth_deg, a.elevation_deg, a.light, a.background), (b.azimuth_deg, b.elevation_deg, b.light, b.background));
        assert_eq!(Colours::Class.class_hue(3, 13), Some(3.0 / 13.0));
        assert_eq!(Colours::Random.class_hue(3, 13), None);
    }

    #[test]
    fn deterministic_across_runs_and_thread_counts() {
        let opts = RenderOptions {
            count: 40,
            size: 24,
            seed: 9,
            ..Default::default()
        };
        let (a, b) = (scratch("det-a"), scratch("det-b"));
        render_dataset_with_threads(&a, &opts, 1).unwrap();
        render_dataset_with_threads(&b, &opts, 3).unwrap();
        let (sa, sb) = (snapshot(&a), snapshot(&b));
        assert_eq!(sa.len(), 42);
        assert!(sa == sb, "outputs differ between runs");
        let c = scratch("det-c");
        render_dataset_with_threads(&c, &RenderOptions { seed: 10, ..opts }, 2).unwrap();
        assert!(snapshot(&c) != sa, "different seeds should differ");
        for d in [a, b, c] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn manifest_and_layout() {
        let out = scratch("manifest");
        let opts = RenderOptions {
            count: 7,
            size: 20,
            seed: 3,
            classes: Some(vec!["mug".into(), "chair".into(), "mug".into()]),
            meshes: None,
            colours: Colours::Class,
            ..Default::default()
        };
        let summary = render_dataset(&out, &opts).unwrap();
        assert_eq!(summary.count, 7);
        assert_eq!(
            summary.per_class,
            vec![("mug".to_string(), 4), ("chair".to_string(), 3)]
        );
        let manifest = fs::read_to_string(out.join("manifest.csv")).unwrap();
        let lines: Vec<&str> = manifest.lines().collect();
        assert_eq!(lines[0], MANIFEST_HEADER);
        assert_eq!(lines.len(), 8);
        for (i, line) in lines[1..].iter().enumerate() {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 8, "{line}");
            assert_eq!(f[7], "", "built-ins have no mesh file");
            assert_eq!(f[0], format!("{i:06}"));
            assert_eq!(f[1], if i % 2 == 0 { "mug" } else { "chair" });
            let az: f32 = f[2].parse().unwrap();
            let el: f32 = f[3].parse().unwrap();
            let d: f32 = f[4].parse().unwrap();
            assert!(
                (0.0..360.0).contains(&az)
                    && (5.0..=45.0).contains(&el)
                    && (2.6..=3.4).contains(&d)
            );
            assert_eq!(f[2].split('.').nth(1).unwrap().len(), 4);
            let l: Vec<f32> = f[5].split(' ').map(|x| x.parse().unwrap()).collect();
            assert_eq!(l.len(), 3);
            assert!((l.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-3);
            let seed: u64 = f[6].parse().unwrap();
            // The manifest seed alone reproduces the pose.
            let v = random_view(&mut Rng::new(seed), Colours::Class.class_hue(i % 2, 2));
            assert_eq!(format!("{:.4}", v.azimuth_deg), f[2]);
            let img = image::open(out.join(f[1]).join(format!("{}.png", f[0])))
                .unwrap()
                .to_rgb8();
            assert_eq!(img.dimensions(), (20, 20));
        }
        assert_eq!(
            fs::read_to_string(out.join("classes.csv")).unwrap(),
            "class,symmetry\nmug,1\nchair,1\n"
        );
        // No temp files left behind.
        assert!(snapshot(&out)
            .iter()
            .all(|(p, _)| !p.to_string_lossy().contains(".tmp")));
        fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn unknown_class_lists_valid_names() {
        let opts = RenderOptions {
            count: 1,
            classes: Some(vec!["chair".into(), "spaceship".into()]),
            ..Default::default()
        };
        let err = render_dataset(&scratch("unknown"), &opts)
            .unwrap_err()
            .to_string();
        assert!(err.contains("spaceship"), "{err}");
        for (name, _) in meshes::builtin_classes() {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn renders_obj_directory() {
        let dir = scratch("objdir");
        fs::create_dir_all(&dir).unwrap();
        fs::write(
            dir.join("tetra.obj"),
            "v 0 0 0\nv 2 0 0\nv 0 2 0\nv 0 0 2\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n",
        )
        .unwrap();
        let out = scratch("objout");
        let opts = RenderOptions {
            count: 3,
            size: 32,
            seed: 1,
            classes: None,
            meshes: Some(dir.clone()),
            colours: Colours::Random,
            ..Default::default()
        };
        render_dataset(&out, &opts).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("classes.csv")).unwrap(),
            "class,symmetry\ntetra,1\n"
        );
        let img = image::open(out.join("tetra/000002.png")).unwrap().to_rgb8();
        let bg = *img.get_pixel(0, 0);
        let covered = img.pixels().filter(|p| **p != bg).count();
        assert!(
            covered > 32 * 32 / 10,
            "tetrahedron barely visible: {covered} px"
        );
        let bad = RenderOptions {
            classes: Some(vec!["chair".into()]),
            ..opts
        };
        let err = render_dataset(&out, &bad).unwrap_err().to_string();
        assert!(err.contains("tetra"), "{err}");
        fs::remove_dir_all(dir).unwrap();
        fs::remove_dir_all(out).unwrap();
    }

    #[test]
    fn mesh_instances_are_recorded_and_broken_files_skipped() {
        const TETRA: &str = "v 0 0 0\nv 2 0 0\nv 0 2 0\nv 0 0 2\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n";
        let dir = scratch("instances");
        for (rel, text) in [
            ("box/a, b/models/model_normalized.obj", TETRA),
            ("box/c/models/model_normalized.obj", "v 0 0 0\nf 1 2 3\n"),
            ("box/d/models/model_normalized.obj", TETRA),
            ("wedge.obj", TETRA),
        ] {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, text).unwrap();
        }
        // Symmetry orders given beside the meshes are kept; other classes are asymmetric.
        fs::write(dir.join("classes.csv"), "class,symmetry\nwedge,0\n").unwrap();
        let out = scratch("instances-out");
        let opts = RenderOptions { count: 24, size: 16, seed: 2, meshes: Some(dir.clone()), ..Default::default() };
        let summary = render_dataset(&out, &opts).unwrap();
        assert_eq!(fs::read_to_string(out.join("classes.csv")).unwrap(), "class,symmetry\nbox,1\nwedge,0\n");
        assert_eq!(summary.skipped_meshes.len(), 1, "{:?}", summary.skipped_meshes);
        assert_eq!(summary.skipped_meshes[0].0, dir.join("box/c/models/model_normalized.obj"));
        assert!(summary.to_string().contains("skipped 1 mesh file"), "{summary}");
        // The reader gives every row its mesh; the broken file is never one of them.
        let manifest = Csv::read(&out.join("manifest.csv")).unwrap();
        assert_eq!(manifest.header.join(","), MANIFEST_HEADER);
        let mesh = manifest.column("mesh").unwrap();
        let mut used: Vec<&str> = manifest.rows.iter().map(|(_, f)| f[mesh].as_str()).collect();
        used.sort();
        used.dedup();
        assert_eq!(used, ["box/a, b/models/model_normalized.obj", "box/d/models/model_normalized.obj", "wedge.obj"]);
        // The same arguments give the same files, also on one thread.
        let again = scratch("instances-again");
        render_dataset_with_threads(&again, &opts, 1).unwrap();
        assert!(snapshot(&out) == snapshot(&again));

        fs::write(dir.join("classes.csv"), "class,symmetry\nwedgie,0\n").unwrap();
        let err = render_dataset(&out, &opts).unwrap_err().to_string();
        assert!(err.contains("class \"wedgie\" has no meshes"), "{err}");
        fs::remove_file(dir.join("classes.csv")).unwrap();

        // A class none of whose files loads is an error naming the class and the fault.
        fs::write(dir.join("box/a, b/models/model_normalized.obj"), "f 1 2 3\n").unwrap();
        fs::write(dir.join("box/d/models/model_normalized.obj"), "").unwrap();
        let err = format!("{:#}", render_dataset(&out, &opts).unwrap_err());
        assert!(err.contains("none of the 3 OBJ file(s) of class \"box\"") && err.contains("model_normalized.obj"), "{err}");
        for d in [dir, out, again] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn shapenet_synset_folders_render_under_shapenets_names() {
        const TETRA: &str = "v 0 0 0\nv 2 0 0\nv 0 2 0\nv 0 0 2\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n";
        let dir = scratch("synsets");
        for rel in ["03001627/1a2b/models/model_normalized.obj", "04379243/77ee/models/model_normalized.obj", "02691156/9f/models/model_normalized.obj"] {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, TETRA).unwrap();
        }
        // Symmetry may be given by synset id; classes are picked by name.
        fs::write(dir.join("classes.csv"), "class,symmetry\n04379243,2\n").unwrap();
        let out = scratch("synsets-out");
        let by_id = RenderOptions { count: 6, size: 16, seed: 2, meshes: Some(dir.clone()), classes: Some(vec!["04379243".into()]), ..Default::default() };
        let err = render_dataset(&out, &by_id).unwrap_err().to_string();
        assert!(err.contains("pass \"table\""), "{err}");
        let opts = RenderOptions { classes: Some(vec!["table".into(), "chair".into()]), ..by_id };
        render_dataset(&out, &opts).unwrap();
        assert_eq!(fs::read_to_string(out.join("classes.csv")).unwrap(), "class,symmetry\ntable,2\nchair,1\n");
        let manifest = Csv::read(&out.join("manifest.csv")).unwrap();
        let (class, mesh) = (manifest.column("class").unwrap(), manifest.column("mesh").unwrap());
        for (_, f) in &manifest.rows {
            let id = if f[class] == "chair" { "03001627/" } else { "04379243/" };
            assert!(f[mesh].starts_with(id), "{f:?}");
            assert!(out.join(&f[class]).is_dir());
        }
        for d in [dir, out] {
            fs::remove_dir_all(d).unwrap();
        }
    }

    #[test]
    fn azimuth_is_visible_only_for_asymmetric_classes() {
        for name in [
            "chair", "car", "lblock", "arrow", "mug", "plane", "lamp", "house",
        ] {
            let m = meshes::builtin_mesh(name).unwrap();
            let d = mean_abs_diff(
                &render_one(&m, &view(30.0), 48),
                &render_one(&m, &view(120.0), 48),
            );
            assert!(d > 3.0, "{name}: views 90° apart nearly identical ({d})");
        }
        // Rotating a 4-fold symmetric object by 90° (and its light with it) changes nothing.
        let m = meshes::builtin_mesh("pyramid").unwrap();
        let mut v2 = view(120.0);
        v2.light = [view(30.0).light[2], 0.8, -0.3];
        let d = mean_abs_diff(&render_one(&m, &view(30.0), 48), &render_one(&m, &v2, 48));
        assert!(d < 0.5, "pyramid should be 4-fold symmetric ({d})");
    }

    #[test]
    fn objects_fill_a_good_part_of_the_frame() {
        for (name, _) in meshes::builtin_classes() {
            let m = meshes::builtin_mesh(name).unwrap();
            for d in [DISTANCE_RANGE.0, DISTANCE_RANGE.1] {
                let mut v = view(30.0);
                v.distance = d;
                v.background = [1.0, 0.0, 1.0];
                let img = render_one(&m, &v, 64);
                let cols: Vec<u32> = img
                    .enumerate_pixels()
                    .filter(|p| p.2 .0 != [255, 0, 255])
                    .map(|p| p.0)
                    .collect();
                let w = cols.iter().max().unwrap() - cols.iter().min().unwrap() + 1;
                assert!(
                    (20..=64).contains(&w),
                    "{name} at distance {d}: width {w}px of 64"
                );
                // Unit-sphere meshes never touch the border at dataset distances.
                assert!(
                    img.enumerate_pixels()
                        .filter(|p| p.0 == 0 || p.0 == 63)
                        .all(|p| p.2 .0 == [255, 0, 255]),
                    "{name} clipped"
                );
            }
        }
    }

    #[test]
    fn render_one_handles_odd_inputs() {
        let m = meshes::builtin_mesh("cone").unwrap();
        assert_eq!(render_one(&m, &view(0.0), 0).dimensions(), (0, 0));
        let mut v = view(0.0);
        v.elevation_deg = 90.0;
        v.distance = 0.5; // camera inside the mesh: near-plane triangles are skipped
        let _ = render_one(&m, &v, 16);
        let broken = Mesh {
            vertices: vec![[0.0; 3]],
            triangles: vec![[0, 1, 2]],
        };
        let _ = render_one(&broken, &view(0.0), 16);
    }
}
