//! Reading an arbitrary folder of images as a dataset.
//!
//! Two layouts are recognised:
//! * **class subfolders** (torchvision `ImageFolder` convention): every non-hidden
//!   subfolder of the root is a class, classes are the sorted folder names and a
//!   record's label is the index of its class. Files directly in the root are
//!   ignored; nested subfolders belong to the class folder that contains them.
//! * **flat**: the root holds only image files; records carry no label.
//!
//! An optional `manifest.csv` in the root attaches a pose (azimuth, elevation in
//! degrees) to records, and an optional `classes.csv` gives each class's rotational
//! symmetry order about the vertical axis (used by the pose metrics).
//!
//! Decoding and preprocessing mirror the usual PIL/torchvision pipeline
//! (`convert('RGB')`, `Resize(short side)`, `CenterCrop`, `ToTensor`) so that codes
//! computed here match the ones a PyTorch reference would compute. Normalisation
//! (mean/std) is left to the encoder.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use crate::encoder::Resize;

/// Name of the optional pose manifest in the dataset root.
pub const MANIFEST_FILE: &str = "manifest.csv";
/// Name of the optional per-class symmetry table in the dataset root.
pub const CLASSES_FILE: &str = "classes.csv";

/// File extensions (lower-case) accepted at scan time. The actual format is then
/// detected from the file content, so a mislabelled extension still decodes.
pub const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "jfif", "bmp", "dib", "webp", "tif", "tiff", "gif", "ppm", "pgm", "pbm", "pnm",
];

/// Whether `path` has one of [`IMAGE_EXTENSIONS`] (case-insensitive).
pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------
// Skip log
// ---------------------------------------------------------------------------

/// Thread-safe collection of files that were skipped (not an image, or failed to
/// decode). Clones share the same log, so one log can be handed to loader threads.
#[derive(Clone, Default)]
pub struct SkipLog {
    inner: Arc<Mutex<SkipInner>>,
}

#[derive(Default)]
struct SkipInner {
    seen: HashSet<PathBuf>,
    order: Vec<PathBuf>,
    /// How many of them are files that are not images (annotations beside the images).
    not_images: usize,
}

/// Files that are not images (Tiny ImageNet's `*_boxes.txt` in each of its 200 class folders)
/// are named up to this many times, then only counted.
const NOT_IMAGES_NAMED: usize = 10;

impl SkipLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a skipped file and prints `warning: skipping <path>: <reason>` to
    /// stderr. A file is reported (and counted) only once, however often it is hit
    /// (e.g. once per epoch).
    pub fn record(&self, path: impl AsRef<Path>, reason: impl fmt::Display) {
        let path = path.as_ref();
        let first = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            let first = inner.seen.insert(path.to_path_buf());
            if first {
                inner.order.push(path.to_path_buf());
            }
            first
        };
        if first {
            // The reason often names the file again ("cannot read image P: ..."); say it once.
            let reason = reason.to_string();
            let lead = format!("cannot read image {}: ", path.display());
            eprintln!("warning: skipping {}: {}", path.display(), reason.strip_prefix(&lead).unwrap_or(&reason).trim_end());
        }
    }

    /// Records a file that is not an image (unknown extension): named like [`SkipLog::record`]
    /// for the first few, then only counted, so that a folder of annotations beside its images
    /// does not bury the other warnings.
    pub fn record_not_image(&self, path: impl AsRef<Path>) {
        let path = path.as_ref();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !inner.seen.insert(path.to_path_buf()) {
            return;
        }
        inner.order.push(path.to_path_buf());
        inner.not_images += 1;
        match inner.not_images {
            n if n <= NOT_IMAGES_NAMED => eprintln!("warning: skipping {}: not an image file (unknown extension)", path.display()),
            n if n == NOT_IMAGES_NAMED + 1 => eprintln!("warning: more files that are not images are skipped; they are counted at the end"),
            _ => {}
        }
    }

    /// Number of distinct skipped files.
    pub fn count(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .len()
    }

    /// Skipped files, in the order they were first recorded.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .order
            .clone()
    }

    /// One-line summary for the end of a run, e.g. `skipped 3 unreadable files`, or
    /// `skipped 203 files: 200 not images, 3 unreadable`.
    pub fn summary(&self) -> String {
        let n = self.count();
        let not_images = self.inner.lock().unwrap_or_else(|e| e.into_inner()).not_images;
        let s = |k: usize| if k == 1 { "" } else { "s" };
        match not_images {
            0 => format!("skipped {n} unreadable file{}", s(n)),
            k if k == n => format!("skipped {n} file{} that {} not images", s(n), if n == 1 { "is" } else { "are" }),
            k => format!("skipped {n} files: {k} not image{}, {} unreadable", s(k), n - k),
        }
    }

    /// Print [`SkipLog::summary`] at the end of a run, when any file was skipped.
    pub fn report(&self) {
        if self.count() > 0 {
            println!("{}", self.summary());
        }
    }
}

impl fmt::Debug for SkipLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SkipLog")
            .field("count", &self.count())
            .finish()
    }
}

// ---------------------------------------------------------------------------
// Decoding and preprocessing
// ---------------------------------------------------------------------------

/// Geometry of the encoder input: resize (the shorter side, or to an exact size), then crop
/// `crop_h` × `crop_w` at the centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preprocess {
    pub resize: Resize,
    pub crop_h: u32,
    pub crop_w: u32,
}

impl Preprocess {
    fn validate(&self) -> Result<()> {
        if !self.resize.is_valid() || self.crop_h == 0 || self.crop_w == 0 {
            bail!("invalid preprocessing {self:?}: sizes must be positive");
        }
        Ok(())
    }
}

/// Decodes an image file, detecting the format from its content (the extension is
/// only a fallback). Animated GIFs yield their first frame. The error names the file.
pub fn decode(path: &Path) -> Result<DynamicImage> {
    decode_reason(path).with_context(|| format!("cannot read image {}", path.display()))
}

/// Like [`decode`] but the error is only the reason (for the skip log, which names
/// the file itself).
fn decode_reason(path: &Path) -> Result<DynamicImage> {
    let meta = fs::metadata(path)?;
    if meta.len() == 0 {
        bail!("empty file");
    }
    let reader = ImageReader::open(path)?.with_guessed_format()?;
    if reader.format().is_none() {
        bail!("unrecognised image format");
    }
    // Flattened to a message: image errors repeat their source in Display, so
    // keeping the chain would print the reason twice with `{:#}`.
    reader.decode().map_err(|e| anyhow!("{e}"))
}

/// Converts any decoded image to 8-bit RGB like PIL's `convert('RGB')`: gray is
/// replicated, alpha is dropped (not composited), 16-bit samples keep their high byte (PIL's
/// reading of 16-bit RGB PNGs; `v / 257` rounded would differ by one level, e.g. 65280 → 254
/// instead of 255), float is scaled. One deliberate difference: PIL clips 16-bit gray to 255
/// (its `I;16` mode), which whitens most of such an image; here it keeps its high byte too.
pub fn to_rgb8(img: &DynamicImage) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    let high = |v: u16| (v >> 8) as u8;
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        DynamicImage::ImageRgb16(i) => RgbImage::from_fn(w, h, |x, y| i.get_pixel(x, y).0.map(high).into()),
        DynamicImage::ImageRgba16(i) => RgbImage::from_fn(w, h, |x, y| {
            let [r, g, b, _] = i.get_pixel(x, y).0.map(high);
            [r, g, b].into()
        }),
        DynamicImage::ImageLuma16(i) => RgbImage::from_fn(w, h, |x, y| [high(i.get_pixel(x, y).0[0]); 3].into()),
        DynamicImage::ImageLumaA16(i) => RgbImage::from_fn(w, h, |x, y| [high(i.get_pixel(x, y).0[0]); 3].into()),
        other => other.to_rgb8(),
    }
}

/// Resizes as torchvision's `Resize` does, with PIL's antialiased bilinear filter
/// ([`super::resize::pil_bilinear`]): the shorter side to `Short(s)` (aspect kept, the longer
/// side truncated like torchvision's `int(s * long / short)`), or to `Exact([h, w])`.
fn resize_image(img: &RgbImage, resize: Resize) -> RgbImage {
    let (w, h) = img.dimensions();
    let (nw, nh) = match resize {
        Resize::Short(short) => {
            let short = short.max(1) as u64;
            if w <= h {
                (short as u32, ((short * h as u64) / w as u64).max(1) as u32)
            } else {
                (((short * w as u64) / h as u64).max(1) as u32, short as u32)
            }
        }
        Resize::Exact([rh, rw]) => (rw.max(1) as u32, rh.max(1) as u32),
    };
    super::resize::pil_bilinear(img, nw, nh)
}

/// Python's `round(d / 2)` for a non-negative integer `d` (round half to even), as
/// used by torchvision's `center_crop` for the crop offset.
fn half_round_even(d: u32) -> i64 {
    let half = (d / 2) as i64;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Offset of a centred crop of length `crop` in a side of length `size`. Negative
/// means the side is padded with zeros (torchvision pads `(crop - size) // 2` before).
fn center_offset(size: u32, crop: u32) -> i64 {
    if crop > size {
        -(((crop - size) / 2) as i64)
    } else {
        half_round_even(size - crop)
    }
}

/// Crops `crop_h` × `crop_w` starting at (`top`, `left`) in source coordinates
/// (out-of-range pixels are zero) and returns CHW floats in `[0, 1]`. With `flip` the
/// crop is mirrored horizontally.
fn crop_to_chw(
    img: &RgbImage,
    top: i64,
    left: i64,
    crop_h: u32,
    crop_w: u32,
    flip: bool,
) -> Vec<f32> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (ch, cw) = (crop_h as usize, crop_w as usize);
    let plane = ch * cw;
    let mut out = vec![0f32; 3 * plane];
    let raw = img.as_raw();
    for y in 0..ch {
        let sy = top + y as i64;
        if sy < 0 || sy >= h {
            continue;
        }
        for x in 0..cw {
            let xo = if flip { cw - 1 - x } else { x };
            let sx = left + xo as i64;
            if sx < 0 || sx >= w {
                continue;
            }
            let p = ((sy * w + sx) * 3) as usize;
            let o = y * cw + x;
            for c in 0..3 {
                out[c * plane + o] = raw[p + c] as f32 / 255.0;
            }
        }
    }
    out
}

/// Deterministic preprocessing of a decoded image: RGB, resize shorter side, centre
/// crop (zero padding if too small). Returns `3 * crop_h * crop_w` floats, CHW, `[0, 1]`.
pub fn preprocess_image(img: &DynamicImage, pre: &Preprocess) -> Vec<f32> {
    let resized = resize_image(&to_rgb8(img), pre.resize);
    let (w, h) = resized.dimensions();
    let top = center_offset(h, pre.crop_h);
    let left = center_offset(w, pre.crop_w);
    crop_to_chw(&resized, top, left, pre.crop_h, pre.crop_w, false)
}

/// Loads one image file and preprocesses it (see [`preprocess_image`]).
pub fn load_rgb(path: &Path, pre: &Preprocess) -> Result<Vec<f32>> {
    pre.validate()?;
    Ok(preprocess_image(&decode(path)?, pre))
}

/// Loads one image file at its own size, CHW in `[0, 1]`, with its `[height, width]` and the
/// file's; when its longer side exceeds `max_side` (0 = no limit) it is scaled down to it
/// first (PIL's bilinear, as in [`preprocess_image`]).
pub fn load_rgb_native(path: &Path, max_side: u32) -> Result<(Vec<f32>, [usize; 2], [usize; 2])> {
    let mut img = to_rgb8(&decode(path)?);
    let (w, h) = img.dimensions();
    let original = [h as usize, w as usize];
    if max_side > 0 && w.max(h) > max_side {
        let scaled = |side: u32| ((side as f64 * max_side as f64 / w.max(h) as f64).round() as u32).clamp(1, max_side);
        img = super::resize::pil_bilinear(&img, scaled(w), scaled(h));
    }
    let (w, h) = img.dimensions();
    Ok((crop_to_chw(&img, 0, 0, h, w, false), [h as usize, w as usize], original))
}

/// Upper bound of the scale jitter used by [`load_augmented`]: the shorter side is
/// resized to `resize * s` with `s` uniform in `[1, 1 + AUG_SCALE_JITTER]`.
pub const AUG_SCALE_JITTER: f64 = 0.15;

/// Small deterministic generator (SplitMix64) so augmentation needs no extra crate
/// and is reproducible for a seed.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform integer in [lo, hi] (inclusive).
    fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }
}

/// Augmented preprocessing of a decoded image: resized as `resize` says, scaled by `s`
/// (`s` uniform in `[1, 1 + AUG_SCALE_JITTER]`), crop at a uniformly
/// random position (zero padding at a random place if the image is smaller than the
/// crop), then a horizontal flip with probability 1/2. Deterministic for a seed.
pub fn augment_image(img: &DynamicImage, pre: &Preprocess, rng_seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(rng_seed);
    let scale = 1.0 + AUG_SCALE_JITTER * rng.next_f64();
    let resized = resize_image(&to_rgb8(img), pre.resize.scaled(scale));
    let (w, h) = resized.dimensions();
    let mut random_offset = |size: u32, crop: u32| {
        if crop > size {
            rng.range_i64(-((crop - size) as i64), 0)
        } else {
            rng.range_i64(0, (size - crop) as i64)
        }
    };
    let top = random_offset(h, pre.crop_h);
    let left = random_offset(w, pre.crop_w);
    let flip = rng.next_u64() & 1 == 1;
    crop_to_chw(&resized, top, left, pre.crop_h, pre.crop_w, flip)
}

/// Loads one image file with random crop, scale jitter and horizontal flip (see
/// [`augment_image`]). Deterministic for a seed.
pub fn load_augmented(path: &Path, pre: &Preprocess, rng_seed: u64) -> Result<Vec<f32>> {
    pre.validate()?;
    Ok(augment_image(&decode(path)?, pre, rng_seed))
}

/// Writes CHW floats (RGB, `[0, 1]`; clamped and rounded, NaN → 0) as a PNG. The file
/// is written as `<path>.tmp` next to the target and renamed, so readers never see a
/// partial image. Missing parent folders are created.
pub fn save_rgb(path: &Path, chw: &[f32], h: u32, w: u32) -> Result<()> {
    let plane = h as usize * w as usize;
    if h == 0 || w == 0 || chw.len() != 3 * plane {
        bail!(
            "cannot save {}: expected 3x{h}x{w} = {} values, got {}",
            path.display(),
            3 * plane,
            chw.len()
        );
    }
    let mut buf = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for c in 0..3 {
            let v = chw[c * plane + i];
            // `NaN.clamp` stays NaN and `NaN as u8` is 0, which is what we want.
            buf.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
        }
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| anyhow!("image buffer size mismatch"))?;
    // The format the name says (`--out x.jpg` is a JPEG); PNG where it names none.
    let format = match path.extension() {
        None => ImageFormat::Png,
        Some(_) => match ImageFormat::from_path(path) {
            Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp | ImageFormat::Tiff | ImageFormat::WebP | ImageFormat::Pnm)) => f,
            _ => bail!("cannot write image {}: name it .png (or .jpg, .bmp, .tif, .webp, .ppm)", path.display()),
        },
    };

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create folder {}", parent.display()))?;
    }
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let result = write_image(&img, &tmp, format).and_then(|_| fs::rename(&tmp, path).map_err(anyhow::Error::from));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write image {}", path.display()))
}

/// `img` to `path` as `format`; JPEG at quality 95 (the `image` crate's default is 75).
fn write_image(img: &RgbImage, path: &Path, format: ImageFormat) -> Result<()> {
    if format == ImageFormat::Jpeg {
        let mut out = std::io::BufWriter::new(fs::File::create(path)?);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95).encode_image(img)?;
        std::io::Write::flush(&mut out)?;
        return Ok(());
    }
    Ok(img.save_with_format(path, format)?)
}

// ---------------------------------------------------------------------------
// CSV (tiny reader: header row, comma separated, optional double quotes)
// ---------------------------------------------------------------------------

/// Splits one CSV line. Quoted fields may contain commas and `""` escapes; unquoted
/// fields are trimmed. Multi-line quoted fields are not supported.
fn split_csv_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        // Skip leading blanks of the field.
        while matches!(chars.peek(), Some(' ') | Some('\t')) {
            chars.next();
        }
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err("unterminated quoted field".into()),
                }
            }
            while matches!(chars.peek(), Some(' ') | Some('\t')) {
                chars.next();
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(c) => return Err(format!("unexpected character '{c}' after quoted field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field.trim().to_string());
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
            fields.push(field.trim().to_string());
        }
    }
}

/// A CSV cell, quoted when it holds a comma, quote or edge blank (our reader, like
/// Python's csv module, reads it back); line breaks cannot be stored in a line-based file.
pub(crate) fn csv_cell(text: &str) -> Result<String> {
    if text.contains(['\n', '\r']) {
        bail!("{text:?} contains a line break and cannot go into a CSV file; rename it");
    }
    if text.contains([',', '"']) || text.trim() != text {
        return Ok(format!("\"{}\"", text.replace('"', "\"\"")));
    }
    Ok(text.to_string())
}

/// A parsed CSV file: header names (trimmed) and data rows with their 1-based line
/// numbers. Blank lines are skipped; every row must have as many fields as the header.
pub(crate) struct Csv {
    pub(crate) header: Vec<String>,
    pub(crate) rows: Vec<(usize, Vec<String>)>,
}

impl Csv {
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut header: Option<Vec<String>> = None;
        let mut rows = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line_no = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let fields =
                split_csv_line(raw).map_err(|e| anyhow!("{}:{line_no}: {e}", path.display()))?;
            match &header {
                None => header = Some(fields),
                Some(h) => {
                    if fields.len() != h.len() {
                        bail!(
                            "{}:{line_no}: expected {} fields (as in the header), found {}",
                            path.display(),
                            h.len(),
                            fields.len()
                        );
                    }
                    rows.push((line_no, fields));
                }
            }
        }
        let header = header
            .ok_or_else(|| anyhow!("{}: empty file (a header row is required)", path.display()))?;
        Ok(Self { header, rows })
    }

    /// Index of a column by (case-insensitive) name.
    pub(crate) fn column(&self, name: &str) -> Option<usize> {
        self.header
            .iter()
            .position(|h| h.eq_ignore_ascii_case(name))
    }
}

/// Error for a bad cell, naming file, line and column.
fn cell_error(
    path: &Path,
    line: usize,
    col: usize,
    name: &str,
    msg: impl fmt::Display,
) -> anyhow::Error {
    anyhow!(
        "{}:{line}: column {} ('{name}'): {msg}",
        path.display(),
        col + 1
    )
}

/// Optional finite float cell; empty → `None`.
fn parse_opt_f32(path: &Path, line: usize, col: usize, name: &str, s: &str) -> Result<Option<f32>> {
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(cell_error(
            path,
            line,
            col,
            name,
            format!("'{s}' is not a finite number"),
        )),
    }
}

/// Manifest contents: join key (`<class>/<id>` or `<id>`) → (line, pose).
type Manifest = HashMap<String, (usize, Option<[f32; 2]>)>;

/// Reads `manifest.csv` (see [`Manifest`]).
fn read_manifest(path: &Path) -> Result<Manifest> {
    let csv = Csv::read(path)?;
    let id_col = csv
        .column("id")
        .ok_or_else(|| anyhow!("{}: header has no 'id' column", path.display()))?;
    let class_col = csv.column("class");
    let az_col = csv.column("azimuth_deg");
    let el_col = csv.column("elevation_deg");
    let mut map = HashMap::with_capacity(csv.rows.len());
    for (line, fields) in &csv.rows {
        let id = fields[id_col].as_str();
        if id.is_empty() {
            return Err(cell_error(path, *line, id_col, "id", "empty id"));
        }
        let key = match class_col.map(|c| fields[c].as_str()) {
            Some(class) if !class.is_empty() => format!("{class}/{id}"),
            _ => id.to_string(),
        };
        let cell = |col: Option<usize>, name: &str| match col {
            Some(c) => parse_opt_f32(path, *line, c, name, &fields[c]),
            None => Ok(None),
        };
        let az = cell(az_col, "azimuth_deg")?;
        let el = cell(el_col, "elevation_deg")?;
        let pose = match (az, el) {
            (Some(a), Some(e)) => Some([a, e]),
            _ => None,
        };
        if let Some((prev, _)) = map.insert(key.clone(), (*line, pose)) {
            bail!(
                "{}:{line}: duplicate entry '{key}' (first on line {prev})",
                path.display()
            );
        }
    }
    Ok(map)
}

/// Reads `classes.csv` (`class,symmetry`): class → rotational symmetry order about
/// the vertical axis (1 none, n n-fold, 0 continuous). Rows with an empty symmetry
/// cell are left out (callers treat a missing class as 1).
pub fn read_symmetry(path: &Path) -> Result<HashMap<String, u32>> {
    let csv = Csv::read(path)?;
    let (Some(class_col), Some(sym_col)) = (csv.column("class"), csv.column("symmetry")) else {
        bail!(
            "{}: header must have 'class' and 'symmetry' columns",
            path.display()
        );
    };
    let mut map = HashMap::new();
    for (line, fields) in &csv.rows {
        let class = fields[class_col].as_str();
        let sym = fields[sym_col].as_str();
        if class.is_empty() {
            return Err(cell_error(
                path,
                *line,
                class_col,
                "class",
                "empty class name",
            ));
        }
        if sym.is_empty() {
            continue;
        }
        let order: u32 = sym.parse().map_err(|_| {
            cell_error(
                path,
                *line,
                sym_col,
                "symmetry",
                format!("'{sym}' is not a non-negative integer"),
            )
        })?;
        if map.insert(class.to_string(), order).is_some() {
            bail!("{}:{line}: duplicate class '{class}'", path.display());
        }
    }
    Ok(map)
}

/// An image given on the command line, named for its output file.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedImage {
    /// The file name, or the path below a folder that was given (keeping class folders).
    pub name: String,
    pub path: PathBuf,
    /// Found in a folder or a list, or one of several files given (`photos/*.jpg`): a broken
    /// file is skipped, while the one image named is an error.
    pub from_folder: bool,
    /// The class number a list gives it (Caffe's `path label`).
    pub label: Option<usize>,
}

impl NamedImage {
    /// The preprocessed image; `None` (recorded in `skips`) for a broken file from a folder.
    pub fn load(&self, pre: &Preprocess, skips: &SkipLog) -> Result<Option<Vec<f32>>> {
        self.read(skips, |p| load_rgb(p, pre))
    }

    /// `read(path)`, with a broken file from a folder recorded in `skips` (`None`) and one
    /// named by the user an error.
    pub fn read<T>(&self, skips: &SkipLog, read: impl FnOnce(&Path) -> Result<T>) -> Result<Option<T>> {
        match read(&self.path) {
            Ok(v) => Ok(Some(v)),
            Err(e) if self.from_folder => {
                skips.record(&self.path, format!("{e:#}"));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether `path` is a list of images (`.txt` or `.lst`, one path per line) rather than one.
pub fn is_image_list(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("txt") || e.eq_ignore_ascii_case("lst")) && path.is_file()
}

/// The images a list file names, one per line, each with the class number that follows it in
/// Caffe's `path label` lists (ImageNet's `val.txt`: indices in torchvision's class order):
/// relative paths are below the list's folder (or, where nothing is there, the current one);
/// empty lines and `#` comments are skipped. More paths than a command line holds (ImageNet's
/// 50 000 validation images) go through a list.
pub fn read_image_list(list: &Path) -> Result<Vec<(PathBuf, Option<usize>)>> {
    let text = fs::read_to_string(list).with_context(|| format!("reading image list {}", list.display()))?;
    let base = list.parent().unwrap_or(Path::new(""));
    let resolve = |p: &str| {
        let p = Path::new(p);
        let below = base.join(p);
        if p.is_absolute() || below.exists() || !p.exists() { below } else { p.to_path_buf() }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (mut path, mut label) = (resolve(line), None);
        if !path.exists() {
            if let Some((head, last)) = line.rsplit_once(char::is_whitespace) {
                if resolve(head.trim_end()).exists() {
                    if let Ok(n) = last.parse::<i64>() {
                        path = resolve(head.trim_end());
                        label = Some(usize::try_from(n).with_context(|| format!("{}:{}: class number {n} is negative", list.display(), i + 1))?);
                    }
                }
            }
        }
        if !path.is_file() {
            bail!("{}:{}: image {} does not exist", list.display(), i + 1, path.display());
        }
        out.push((path, label));
    }
    if out.is_empty() {
        bail!("image list {} names no images", list.display());
    }
    Ok(out)
}

/// Image files, folders (every image in them, as [`ImageFolder`] finds them) and lists of
/// images ([`read_image_list`]), in the order given, named by file name or by the path below
/// their folder. Images from folders and lists are skipped when broken; files named on the
/// command line are errors then.
fn image_files(paths: &[PathBuf], skips: &SkipLog) -> Result<Vec<NamedImage>> {
    let mut items = Vec::new();
    for p in paths {
        if is_image_list(p) {
            // Named by their path below the list's folder (keeping class folders), else by file name.
            let base = p.parent().unwrap_or(Path::new(""));
            items.extend(read_image_list(p)?.into_iter().map(|(path, label)| {
                let below = path.strip_prefix(base).ok().filter(|_| !base.as_os_str().is_empty() || path.is_relative());
                let name = below.and_then(|r| r.to_str()).map(|r| r.replace('\\', "/")).unwrap_or_else(|| file_name(&path));
                NamedImage { name, path, from_folder: true, label }
            }));
        } else if p.is_dir() {
            let folder = ImageFolder::open(p, skips)?;
            items.extend(folder.records.iter().enumerate().map(|(i, r)| NamedImage { name: r.rel_path.clone(), path: folder.path(i), from_folder: true, label: None }));
        } else {
            items.push(NamedImage { name: file_name(p), path: p.clone(), from_folder: paths.len() > 1, label: None });
        }
    }
    Ok(items)
}

/// `p` made absolute without resolving symlinks, `.` and `..` taken out as written.
fn absolute(p: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in std::path::absolute(p)?.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| p.display().to_string())
}

/// Image files and folders (every image in them, as [`ImageFolder`] finds them) as one list;
/// two that would be written under the same name are an error naming both.
pub fn image_list(paths: &[PathBuf], skips: &SkipLog) -> Result<Vec<NamedImage>> {
    let items = image_files(paths, skips)?;
    let mut seen = HashMap::new();
    for it in &items {
        if let Some(other) = seen.insert(strip_extension(&it.name).to_string(), &it.path) {
            bail!("{} and {} would both be written as {}.png; give them in separate runs", other.display(), it.path.display(), strip_extension(&it.name));
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------
// Folder scanning
// ---------------------------------------------------------------------------

/// One image of the dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageRecord {
    /// Path relative to the root, '/'-separated.
    pub rel_path: String,
    /// Class index (class-subfolder layout only).
    pub label: Option<usize>,
    /// (azimuth, elevation) in degrees, from `manifest.csv`.
    pub pose: Option<[f32; 2]>,
}

/// A folder of images: class subfolders or flat. Records are sorted by relative
/// path (component-wise, so they are also grouped by class in class order).
#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    /// Sorted class folder names; empty for a flat folder.
    pub classes: Vec<String>,
    /// Rotational symmetry order per class, from `classes.csv` (empty if absent).
    pub symmetry: HashMap<String, u32>,
    pub records: Vec<ImageRecord>,
    /// Where load-time skips are recorded (shares state with the log given to `open`).
    pub skips: SkipLog,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

fn is_metadata_file(name: &str) -> bool {
    name == MANIFEST_FILE || name == CLASSES_FILE
}

/// Entries of a folder, sorted by name, non-UTF-8 names reported and left out.
fn sorted_entries(dir: &Path, skips: &SkipLog) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).with_context(|| format!("cannot list folder {}", dir.display()))?;
    for entry in rd {
        let entry = entry.with_context(|| format!("cannot list folder {}", dir.display()))?;
        let path = entry.path();
        match entry.file_name().into_string() {
            Ok(name) => out.push((name, path)),
            Err(_) => skips.record(&path, "file name is not valid UTF-8"),
        }
    }
    out.sort();
    Ok(out)
}

/// Recursively collects image files under `dir` as '/'-separated paths prefixed by
/// `rel`. Symlinks are followed, as torchvision's `os.walk(followlinks=True)` does, so a
/// folder linked from two places is read in both (a class folder linked twice gives its
/// images under both classes); `ancestors` (the canonical folders above) stops a link
/// back up the tree, which torchvision would follow forever.
fn walk(
    dir: &Path,
    rel: &str,
    out: &mut Vec<String>,
    skips: &SkipLog,
    ancestors: &mut Vec<PathBuf>,
) -> Result<()> {
    let canon = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    if ancestors.contains(&canon) {
        eprintln!("warning: not following {}: it links to a folder above it", dir.display());
        return Ok(());
    }
    ancestors.push(canon);
    let walked = walk_entries(dir, rel, out, skips, ancestors);
    ancestors.pop();
    walked
}

fn walk_entries(
    dir: &Path,
    rel: &str,
    out: &mut Vec<String>,
    skips: &SkipLog,
    ancestors: &mut Vec<PathBuf>,
) -> Result<()> {
    for (name, path) in sorted_entries(dir, skips)? {
        if is_hidden(&name) {
            continue;
        }
        let child_rel = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                skips.record(&path, format!("cannot stat: {e}"));
                continue;
            }
        };
        if meta.is_dir() {
            walk(&path, &child_rel, out, skips, ancestors)?;
        } else if is_metadata_file(&name) {
            continue;
        } else if has_image_extension(&path) {
            out.push(child_rel);
        } else {
            skips.record_not_image(&path);
        }
    }
    Ok(())
}

/// `a/b/c.png` → `a/b/c` (only the last extension of the file name is removed).
pub fn strip_extension(rel: &str) -> &str {
    let file_start = rel.rfind('/').map(|i| i + 1).unwrap_or(0);
    match rel[file_start..].rfind('.') {
        Some(dot) if dot > 0 => &rel[..file_start + dot],
        _ => rel,
    }
}

impl ImageFolder {
    /// Scans `root`. Non-image files are reported to `skips` now; undecodable images
    /// are only found when loaded (see [`ImageFolder::load_or_skip`]). Errors if the
    /// folder holds no images, or if `manifest.csv` / `classes.csv` is malformed.
    pub fn open(root: &Path, skips: &SkipLog) -> Result<Self> {
        let meta = fs::metadata(root)
            .with_context(|| format!("cannot open dataset folder {}", root.display()))?;
        if !meta.is_dir() {
            bail!("dataset path {} is not a folder", root.display());
        }

        // Layout: any visible subfolder makes this a class-subfolder dataset.
        let entries = sorted_entries(root, skips)?;
        let mut class_dirs = Vec::new();
        let mut root_files = Vec::new();
        for (name, path) in entries {
            if is_hidden(&name) {
                continue;
            }
            if fs::metadata(&path).map(|m| m.is_dir()).unwrap_or(false) {
                class_dirs.push((name, path));
            } else {
                root_files.push((name, path));
            }
        }

        let mut rels: Vec<String> = Vec::new();
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut classes = Vec::new();
        let mut ancestors = vec![fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf())];
        if !class_dirs.is_empty() {
            let ignored = root_files
                .iter()
                .filter(|(_, p)| has_image_extension(p))
                .count();
            if ignored > 0 {
                eprintln!(
                    "note: ignoring {ignored} image file(s) directly in {} (class-subfolder layout: only images inside class folders are used)",
                    root.display()
                );
            }
            for (label, (name, path)) in class_dirs.into_iter().enumerate() {
                let before = rels.len();
                walk(&path, &name, &mut rels, skips, &mut ancestors)?;
                if rels.len() == before {
                    eprintln!("warning: class folder {} has no images", path.display());
                }
                labels.insert(name.clone(), label);
                classes.push(name);
            }
        } else {
            for (name, path) in root_files {
                if is_metadata_file(&name) {
                    continue;
                }
                if has_image_extension(&path) {
                    rels.push(name);
                } else {
                    skips.record_not_image(&path);
                }
            }
        }
        if rels.is_empty() {
            bail!("no images found in {}", root.display());
        }
        // Component-wise order keeps records grouped by class in class order
        // ("a/x" < "a-b/y"), and is deterministic across platforms.
        rels.sort_by(|a, b| a.split('/').cmp(b.split('/')));

        let manifest_path = root.join(MANIFEST_FILE);
        let manifest = if manifest_path.is_file() {
            Some(read_manifest(&manifest_path)?)
        } else {
            None
        };
        let symmetry_path = root.join(CLASSES_FILE);
        let symmetry = if symmetry_path.is_file() {
            read_symmetry(&symmetry_path)?
        } else {
            HashMap::new()
        };

        let mut matched = 0usize;
        let records: Vec<ImageRecord> = rels
            .into_iter()
            .map(|rel_path| {
                let label = if classes.is_empty() {
                    None
                } else {
                    let class = rel_path.split('/').next().unwrap_or("");
                    labels.get(class).copied()
                };
                let pose = manifest
                    .as_ref()
                    .and_then(|m| m.get(strip_extension(&rel_path)))
                    .and_then(|&(_, pose)| {
                        matched += 1;
                        pose
                    });
                ImageRecord {
                    rel_path,
                    label,
                    pose,
                }
            })
            .collect();
        if let Some(m) = &manifest {
            // Rows without an image are usually images that were removed or skipped;
            // worth a note since a wrong id/class convention shows up here too.
            if matched < m.len() {
                eprintln!(
                    "note: {} of {} rows in {} match no image (join key is '<class>/<id>' = image path without extension)",
                    m.len() - matched,
                    m.len(),
                    manifest_path.display()
                );
            }
        }

        Ok(Self {
            root: root.to_path_buf(),
            classes,
            symmetry,
            records,
            skips: skips.clone(),
        })
    }

    /// One folder as [`ImageFolder::open`] reads it; several paths (image files and folders,
    /// as a shell glob gives them) as one unlabelled set whose root is the deepest folder
    /// holding them all, so each id is the image's path below it: `a.jpg` for `photos/a.jpg`,
    /// `val/x.png` for a folder `val` beside `photos`. A file given twice is kept once. Class
    /// numbers from lists ([`read_image_list`]) become labels that index the network's classes
    /// (`classes` stays empty: the list names none).
    pub fn from_paths(paths: &[PathBuf], skips: &SkipLog) -> Result<Self> {
        match paths {
            [] => bail!("no image or folder given"),
            [one] if one.is_dir() => return Self::open(one, skips),
            _ => {}
        }
        let mut files = Vec::new();
        let mut labels = Vec::new();
        let mut bases = Vec::new();
        for it in image_files(paths, skips)? {
            labels.push(it.label);
            if !it.path.is_file() {
                bail!("{} does not exist (neither an image nor a folder)", it.path.display());
            }
            // Made absolute as written, symlinks kept: a file through a linked folder keeps
            // that folder's name in its id, as the user wrote it.
            let file = absolute(&it.path).with_context(|| format!("cannot open the folder of {}", it.path.display()))?;
            // The folder the item's name is below: a list's own folder (its lines' paths
            // name them), a given folder, or a given file's folder.
            let depth = it.name.split('/').filter(|p| !p.is_empty()).count().max(1);
            bases.push(file.ancestors().nth(depth).unwrap_or(Path::new("/")).to_path_buf());
            files.push(file);
        }
        let mut root = bases[0].clone();
        for b in &bases {
            while !b.starts_with(&root) {
                root = root.parent().expect("absolute paths share the file system root").to_path_buf();
            }
        }
        let rels = files
            .iter()
            .map(|f| {
                let rel = f.strip_prefix(&root).expect("below the common folder");
                rel.components()
                    .map(|c| c.as_os_str().to_str().map(str::to_string).with_context(|| format!("file name {} is not valid UTF-8", f.display())))
                    .collect::<Result<Vec<_>>>()
                    .map(|parts| parts.join("/"))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut set = Self::of_files(&root, rels.iter().cloned(), skips);
        if labels.iter().any(Option::is_some) {
            let by_rel: HashMap<&str, Option<usize>> = rels.iter().map(String::as_str).zip(labels.iter().copied()).rev().collect();
            for r in &mut set.records {
                r.label = by_rel[r.rel_path.as_str()];
            }
        }
        Ok(set)
    }

    /// The files `rels` ('/'-separated paths below `root`) as an unlabelled set, in the order
    /// given, each once.
    pub fn of_files(root: &Path, rels: impl IntoIterator<Item = String>, skips: &SkipLog) -> Self {
        let mut seen = HashSet::new();
        let records = rels.into_iter().filter(|r| seen.insert(r.clone())).map(|rel_path| ImageRecord { rel_path, label: None, pose: None }).collect();
        Self { root: root.to_path_buf(), classes: Vec::new(), symmetry: HashMap::new(), records, skips: skips.clone() }
    }

    /// Labels as indices into `classes` (the training folder's), so that a validation folder's
    /// labels mean the same classes; a class folder not among them is an error naming it. The
    /// training folder's symmetry table serves where this folder has none.
    pub fn relabel_to(&mut self, classes: &[String], symmetry: &HashMap<String, u32>) -> Result<()> {
        if self.classes.is_empty() {
            bail!("{} has no class subfolders, so its images have no labels to validate with", self.root.display());
        }
        let mut map = Vec::with_capacity(self.classes.len());
        for c in &self.classes {
            match classes.iter().position(|t| t == c) {
                Some(i) => map.push(i),
                None => bail!("class folder '{c}' of {} is not a training class (those are: {})", self.root.display(), classes.join(", ")),
            }
        }
        for r in &mut self.records {
            r.label = r.label.map(|l| map[l]);
        }
        self.classes = classes.to_vec();
        if self.symmetry.is_empty() {
            self.symmetry = symmetry.clone();
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Number of classes (0 for a flat folder).
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Full path of record `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.root.join(&self.records[i].rel_path)
    }

    /// Rotational symmetry order of record `i`'s class (1 if unknown or unlabelled).
    pub fn symmetry_of(&self, i: usize) -> u32 {
        self.records[i]
            .label
            .and_then(|l| self.symmetry.get(&self.classes[l]).copied())
            .unwrap_or(1)
    }

    /// Decodes and preprocesses record `i`. The error names the file; nothing is
    /// recorded in the skip log (use [`ImageFolder::load_or_skip`] for that).
    pub fn load(&self, i: usize, pre: &Preprocess) -> Result<Vec<f32>> {
        load_rgb(&self.path(i), pre)
    }

    /// Augmented version of [`ImageFolder::load`] (see [`augment_image`]).
    pub fn load_augmented(&self, i: usize, pre: &Preprocess, rng_seed: u64) -> Result<Vec<f32>> {
        load_augmented(&self.path(i), pre, rng_seed)
    }

    /// Like [`ImageFolder::load`], but an undecodable file is recorded in the skip
    /// log (warning printed once) and `None` is returned, so a caller can move on.
    pub fn load_or_skip(&self, i: usize, pre: &Preprocess) -> Option<Vec<f32>> {
        self.decode_or_skip(i)
            .map(|img| preprocess_image(&img, pre))
    }

    /// Augmented version of [`ImageFolder::load_or_skip`].
    pub fn load_augmented_or_skip(
        &self,
        i: usize,
        pre: &Preprocess,
        rng_seed: u64,
    ) -> Option<Vec<f32>> {
        self.decode_or_skip(i)
            .map(|img| augment_image(&img, pre, rng_seed))
    }

    fn decode_or_skip(&self, i: usize) -> Option<DynamicImage> {
        let path = self.path(i);
        match decode_reason(&path) {
            Ok(img) => Some(img),
            Err(e) => {
                self.skips.record(&path, e);
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageBuffer, Rgb, Rgb32FImage, Rgba, RgbaImage};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Unique scratch folder, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "preimage-folder-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Self(p)
        }
        fn path(&self, rel: &str) -> PathBuf {
            let p = self.0.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            p
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn solid(w: u32, h: u32, c: [u8; 3]) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb(c))
    }

    fn save_png(dir: &TempDir, rel: &str, img: &RgbImage) -> PathBuf {
        let p = dir.path(rel);
        img.save_with_format(&p, ImageFormat::Png).unwrap();
        p
    }

    const PRE4: Preprocess = Preprocess {
        resize: Resize::Short(4),
        crop_h: 4,
        crop_w: 4,
    };

    fn assert_constant(v: &[f32], c: [u8; 3], tol: f32, what: &str) {
        let plane = v.len() / 3;
        for ch in 0..3 {
            for (i, &x) in v[ch * plane..(ch + 1) * plane].iter().enumerate() {
                let want = c[ch] as f32 / 255.0;
                assert!(
                    (x - want).abs() <= tol,
                    "{what}: channel {ch} pixel {i}: got {x}, want {want}"
                );
            }
        }
    }

    /// A class folder linked from two places is read under both (torchvision follows links
    /// with `os.walk(followlinks=True)`; ImageNet subsets are often made of links), and a
    /// link back up the tree is not followed.
    #[cfg(unix)]
    #[test]
    fn linked_class_folders_and_cycles() {
        use std::os::unix::fs::symlink;
        let d = TempDir::new("links");
        save_png(&d, "store/dog/a.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "set/cat/b.png", &solid(5, 5, [1, 2, 3]));
        symlink(d.path("store/dog"), d.path("set/dog")).unwrap();
        symlink(d.path("store/dog"), d.path("set/hound")).unwrap();
        symlink(d.path("set/cat"), d.path("set/cat/again")).unwrap();
        let skips = SkipLog::new();
        let f = ImageFolder::open(&d.path("set"), &skips).unwrap();
        assert_eq!(f.classes, vec!["cat", "dog", "hound"]);
        let got: Vec<(&str, Option<usize>)> = f.records.iter().map(|r| (r.rel_path.as_str(), r.label)).collect();
        assert_eq!(got, vec![("cat/b.png", Some(0)), ("dog/a.png", Some(1)), ("hound/a.png", Some(2))]);
        assert_eq!(skips.count(), 0);
    }

    #[test]
    fn class_layout_labels_order_and_hidden() {
        let d = TempDir::new("classes");
        save_png(&d, "dog/b.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "dog/a.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "cat/sub/deep.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "cat/z.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "cat-x/q.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "root_ignored.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, "dog/.hidden.png", &solid(5, 5, [1, 2, 3]));
        save_png(&d, ".cache/x.png", &solid(5, 5, [1, 2, 3]));
        fs::write(d.path("README.md"), "hi").unwrap();

        let skips = SkipLog::new();
        let f = ImageFolder::open(&d.0, &skips).unwrap();
        assert_eq!(f.classes, vec!["cat", "cat-x", "dog"]);
        let got: Vec<(&str, Option<usize>)> = f
            .records
            .iter()
            .map(|r| (r.rel_path.as_str(), r.label))
            .collect();
        assert_eq!(
            got,
            vec![
                ("cat/sub/deep.png", Some(0)),
                ("cat/z.png", Some(0)),
                ("cat-x/q.png", Some(1)),
                ("dog/a.png", Some(2)),
                ("dog/b.png", Some(2)),
            ]
        );
        assert_eq!(
            skips.count(),
            0,
            "root files and hidden files are not skips"
        );
        assert_eq!(f.path(0), d.0.join("cat/sub/deep.png"));
        assert!(f.records.iter().all(|r| r.pose.is_none()));
    }

    #[test]
    fn image_lists_name_their_images() {
        let d = TempDir::new("list");
        for f in ["imgs/cat/a.png", "imgs/dog/a.png", "imgs/b c.png"] {
            save_png(&d, f, &solid(3, 3, [9, 9, 9]));
        }
        let outside = TempDir::new("list-outside");
        save_png(&outside, "z.png", &solid(3, 3, [1, 1, 1]));
        let abs = outside.0.join("z.png");
        // Relative to the list's folder, a Caffe-style class number, a space in a name, an
        // absolute path, comments and blank lines.
        fs::write(d.path("imgs/val.txt"), format!("# val\ncat/a.png 3\n\ndog/a.png\nb c.png\t7\n{}\n", abs.display())).unwrap();
        let list = d.0.join("imgs/val.txt");
        assert!(is_image_list(&list) && !is_image_list(&d.0.join("imgs/cat/a.png")));
        let read = read_image_list(&list).unwrap();
        let want = [(d.0.join("imgs/cat/a.png"), Some(3)), (d.0.join("imgs/dog/a.png"), None), (d.0.join("imgs/b c.png"), Some(7)), (abs.clone(), None)];
        assert_eq!(read, want);
        // As command-line images: named below the list's folder (two a.png stay apart).
        let skips = SkipLog::new();
        let names: Vec<String> = image_list(std::slice::from_ref(&list), &skips).unwrap().into_iter().map(|n| n.name).collect();
        assert_eq!(names, ["cat/a.png", "dog/a.png", "b c.png", "z.png"]);
        // As a data set: ids below the folder holding them all.
        let set = ImageFolder::from_paths(std::slice::from_ref(&list), &skips).unwrap();
        let common = fs::canonicalize(std::env::temp_dir()).unwrap();
        assert!(fs::canonicalize(&set.root).unwrap().starts_with(&common) && set.len() == 4);
        assert!(set.records[0].rel_path.ends_with("imgs/cat/a.png"), "{:?}", set.records);
        // The class numbers are the records' labels (indices into the network's classes).
        assert_eq!(set.records.iter().map(|r| r.label).collect::<Vec<_>>(), [Some(3), None, Some(7), None]);
        assert!(set.classes.is_empty());
        // A missing image is an error naming the line.
        fs::write(d.path("imgs/bad.txt"), "cat/a.png\ncat/nope.png\n").unwrap();
        let err = format!("{:#}", read_image_list(&d.0.join("imgs/bad.txt")).unwrap_err());
        assert!(err.contains("bad.txt:2") && err.contains("nope.png"), "{err}");
        fs::write(d.path("imgs/neg.txt"), "cat/a.png -1\n").unwrap();
        let err = format!("{:#}", read_image_list(&d.0.join("imgs/neg.txt")).unwrap_err());
        assert!(err.contains("neg.txt:1") && err.contains("negative"), "{err}");
        fs::write(d.path("imgs/empty.txt"), "# nothing\n").unwrap();
        assert!(format!("{:#}", read_image_list(&d.0.join("imgs/empty.txt")).unwrap_err()).contains("names no images"));
        // A list of images in one class folder: ids keep that folder (below the list's own),
        // and a folder reached through a symlink keeps the name it was given by.
        fs::write(d.path("imgs/cats.txt"), "cat/a.png
").unwrap();
        let set = ImageFolder::from_paths(&[d.0.join("imgs/cats.txt")], &skips).unwrap();
        assert_eq!((set.root.clone(), set.records[0].rel_path.as_str()), (d.0.join("imgs"), "cat/a.png"));
        #[cfg(unix)]
        {
            save_png(&outside, "zebra/zz.png", &solid(3, 3, [1, 1, 1]));
            std::os::unix::fs::symlink(outside.0.join("zebra"), d.path("imgs/zebra")).unwrap();
            fs::write(d.path("imgs/linked.txt"), "cat/a.png\nzebra/zz.png\n").unwrap();
            let set = ImageFolder::from_paths(&[d.0.join("imgs/linked.txt")], &skips).unwrap();
            let ids: Vec<&str> = set.records.iter().map(|r| r.rel_path.as_str()).collect();
            assert_eq!((set.root.clone(), ids), (d.0.join("imgs"), vec!["cat/a.png", "zebra/zz.png"]));
            let set = ImageFolder::from_paths(&[d.0.join("imgs/cat/a.png"), d.0.join("imgs/zebra/zz.png")], &skips).unwrap();
            assert_eq!(set.records[1].rel_path, "zebra/zz.png");
        }
    }

    #[test]
    fn flat_layout_and_empty_errors() {
        let d = TempDir::new("flat");
        save_png(&d, "b.png", &solid(3, 3, [9, 9, 9]));
        save_png(&d, "a.PNG", &solid(3, 3, [9, 9, 9]));
        fs::write(d.path("notes.txt"), "x").unwrap();
        fs::write(d.path("manifest.csv"), "id\n").unwrap();
        let skips = SkipLog::new();
        let f = ImageFolder::open(&d.0, &skips).unwrap();
        assert!(f.classes.is_empty());
        assert_eq!(f.len(), 2);
        assert_eq!(f.records[0].rel_path, "a.PNG");
        assert!(f.records.iter().all(|r| r.label.is_none()));
        assert_eq!(skips.paths(), vec![d.0.join("notes.txt")]);

        let empty = TempDir::new("empty");
        fs::write(empty.path("notes.txt"), "x").unwrap();
        let err = format!(
            "{:#}",
            ImageFolder::open(&empty.0, &SkipLog::new()).unwrap_err()
        );
        assert!(
            err.contains("no images") && err.contains(&empty.0.display().to_string()),
            "{err}"
        );

        let missing = d.0.join("does-not-exist");
        let err = format!(
            "{:#}",
            ImageFolder::open(&missing, &SkipLog::new()).unwrap_err()
        );
        assert!(err.contains("does-not-exist"), "{err}");
    }

    #[test]
    fn all_formats_decode_to_rgb() {
        let d = TempDir::new("formats");
        let c = [200u8, 100, 50];
        let rgb = solid(6, 6, c);

        rgb.save_with_format(d.path("x.png"), ImageFormat::Png)
            .unwrap();
        rgb.save_with_format(d.path("x.jpg"), ImageFormat::Jpeg)
            .unwrap();
        rgb.save_with_format(d.path("x.bmp"), ImageFormat::Bmp)
            .unwrap();
        rgb.save_with_format(d.path("x.webp"), ImageFormat::WebP)
            .unwrap();
        rgb.save_with_format(d.path("x.tiff"), ImageFormat::Tiff)
            .unwrap();
        rgb.save_with_format(d.path("x.gif"), ImageFormat::Gif)
            .unwrap();
        // Netpbm, as torchvision's ImageFolder takes them (GTSRB's images are PPM).
        rgb.save_with_format(d.path("x.ppm"), ImageFormat::Pnm)
            .unwrap();
        for ext in ["png", "bmp", "webp", "tiff", "gif", "ppm"] {
            assert_constant(
                &load_rgb(&d.0.join(format!("x.{ext}")), &PRE4).unwrap(),
                c,
                1e-6,
                ext,
            );
        }
        assert_constant(
            &load_rgb(&d.0.join("x.jpg"), &PRE4).unwrap(),
            c,
            4.0 / 255.0,
            "jpeg",
        );

        // Content detection: a PNG with a .jpg extension.
        rgb.save_with_format(d.path("png_named.jpg"), ImageFormat::Png)
            .unwrap();
        assert_constant(
            &load_rgb(&d.0.join("png_named.jpg"), &PRE4).unwrap(),
            c,
            1e-6,
            "mislabelled",
        );

        // 16-bit PNG: the high byte, as PIL reads it (51400 = 0xC8C8 → 200).
        let img16: ImageBuffer<Rgb<u16>, Vec<u16>> =
            ImageBuffer::from_pixel(6, 6, Rgb([51400, 25700, 12850]));
        img16
            .save_with_format(d.path("x16.png"), ImageFormat::Png)
            .unwrap();
        let img = decode(&d.0.join("x16.png")).unwrap();
        assert!(matches!(img, DynamicImage::ImageRgb16(_)));
        assert_constant(
            &load_rgb(&d.0.join("x16.png"), &PRE4).unwrap(),
            c,
            1e-6,
            "png16",
        );

        // Gray → replicated.
        GrayImage::from_pixel(6, 6, image::Luma([77]))
            .save(d.path("g.png"))
            .unwrap();
        assert_constant(
            &load_rgb(&d.0.join("g.png"), &PRE4).unwrap(),
            [77, 77, 77],
            1e-6,
            "gray",
        );
        GrayImage::from_pixel(6, 6, image::Luma([77]))
            .save(d.path("g.pgm"))
            .unwrap();
        assert_constant(&load_rgb(&d.0.join("g.pgm"), &PRE4).unwrap(), [77, 77, 77], 1e-6, "pgm");
        assert!(["a.PPM", "b.pgm", "c.pbm", "d.pnm"].iter().all(|n| has_image_extension(Path::new(n))));

        // Gray + alpha, RGBA: alpha dropped, colour kept even where fully transparent.
        image::GrayAlphaImage::from_pixel(6, 6, image::LumaA([90, 0]))
            .save(d.path("ga.png"))
            .unwrap();
        assert_constant(
            &load_rgb(&d.0.join("ga.png"), &PRE4).unwrap(),
            [90, 90, 90],
            1e-6,
            "gray+alpha",
        );
        RgbaImage::from_pixel(6, 6, Rgba([10, 20, 30, 0]))
            .save(d.path("rgba.png"))
            .unwrap();
        assert_constant(
            &load_rgb(&d.0.join("rgba.png"), &PRE4).unwrap(),
            [10, 20, 30],
            1e-6,
            "rgba",
        );

        // Float TIFF, values outside [0,1] are clamped.
        let f32img = Rgb32FImage::from_pixel(6, 6, Rgb([1.5, 0.2, -0.3]));
        DynamicImage::ImageRgb32F(f32img)
            .save_with_format(d.path("f.tiff"), ImageFormat::Tiff)
            .unwrap();
        assert_constant(
            &load_rgb(&d.0.join("f.tiff"), &PRE4).unwrap(),
            [255, 51, 0],
            1e-6,
            "float tiff",
        );

        // Animated GIF: first frame only.
        {
            use image::codecs::gif::GifEncoder;
            use image::Frame;
            let file = fs::File::create(d.path("anim.gif")).unwrap();
            let mut enc = GifEncoder::new(file);
            let f1 = Frame::new(RgbaImage::from_pixel(6, 6, Rgba([255, 0, 0, 255])));
            let f2 = Frame::new(RgbaImage::from_pixel(6, 6, Rgba([0, 0, 255, 255])));
            enc.encode_frames(vec![f1, f2]).unwrap();
        }
        assert_constant(
            &load_rgb(&d.0.join("anim.gif"), &PRE4).unwrap(),
            [255, 0, 0],
            1e-6,
            "gif frame 0",
        );
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte_like_pil() {
        // PIL 13 reads these 16-bit RGB PNG samples as 0 1 127 128 255 200 0 0 1 255 255 255.
        let v: [u16; 12] = [0, 383, 32767, 32895, 65535, 51400, 128, 255, 256, 65280, 65407, 65408];
        let img = ImageBuffer::<Rgb<u16>, Vec<u16>>::from_fn(4, 1, |x, _| Rgb([v[3 * x as usize], v[3 * x as usize + 1], v[3 * x as usize + 2]]));
        let got = to_rgb8(&DynamicImage::ImageRgb16(img)).into_raw();
        assert_eq!(got, vec![0, 1, 127, 128, 255, 200, 0, 0, 1, 255, 255, 255]);
        let gray = ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(2, 1, |x, _| image::Luma([[65280, 511][x as usize]]));
        assert_eq!(to_rgb8(&DynamicImage::ImageLuma16(gray)).into_raw(), vec![255, 255, 255, 1, 1, 1]);
    }

    #[test]
    fn resize_and_center_crop_values() {
        // 8x4 horizontal gradient v(x) = 20x + 10 (constant down columns). Shorter side
        // 4 → 2 gives 4x2 (downscale by 2: triangle support 2, symmetric weights, so an
        // interior output pixel is the gradient at its centre); centre crop 2x2 at
        // left = round((4-2)/2) = 1 takes output columns 1 and 2, centred on input
        // coordinates 3.0 and 5.0 → v = 20*2.5+10 = 60 and 20*4.5+10 = 100.
        let img = RgbImage::from_fn(8, 4, |x, _| {
            let v = (20 * x + 10) as u8;
            Rgb([v, v / 2, 255 - v])
        });
        let pre = Preprocess {
            resize: Resize::Short(2),
            crop_h: 2,
            crop_w: 2,
        };
        let out = preprocess_image(&DynamicImage::ImageRgb8(img), &pre);
        assert_eq!(out.len(), 3 * 2 * 2);
        let want = |v: f32| [v, v, v / 2.0, v / 2.0, 255.0 - v, 255.0 - v];
        let r = want(60.0);
        let s = want(100.0);
        let expect: Vec<f32> = vec![
            r[0], s[0], r[0], s[0], r[2], s[2], r[2], s[2], r[4], s[4], r[4], s[4],
        ]
        .into_iter()
        .map(|x| x / 255.0)
        .collect();
        for (i, (a, b)) in out.iter().zip(&expect).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6,
                "value {i}: got {}, want {}",
                a * 255.0,
                b * 255.0
            );
        }

        // No resize needed (short side already 2): 5x2 → crop 2x2 at left =
        // round(3/2) = 2 (half to even, like torchvision) → columns 2 and 3.
        let img = RgbImage::from_fn(5, 2, |x, y| Rgb([(x * 10 + y) as u8, 0, 0]));
        let out = preprocess_image(&DynamicImage::ImageRgb8(img), &pre);
        let red: Vec<u8> = out[..4].iter().map(|v| (v * 255.0).round() as u8).collect();
        assert_eq!(red, vec![20, 30, 21, 31]);

        // Shapes for a non-square photo-like size (portrait): 30 wide x 45 high,
        // resize 16 → 16 x 24, crop 12 x 14.
        let pre = Preprocess {
            resize: Resize::Short(16),
            crop_h: 12,
            crop_w: 14,
        };
        let out = preprocess_image(&DynamicImage::ImageRgb8(solid(30, 45, [3, 4, 5])), &pre);
        assert_eq!(out.len(), 3 * 12 * 14);
        assert_constant(&out, [3, 4, 5], 1e-6, "constant stays constant");
        assert_eq!(
            resize_image(&solid(500, 375, [0; 3]), Resize::Short(256)).dimensions(),
            (341, 256)
        );
    }

    #[test]
    fn crop_larger_than_image_is_zero_padded() {
        // 2x3 (w x h) image, resize 2 leaves it unchanged; crop 5 high x 4 wide:
        // pad top (5-3)//2 = 1, left (4-2)//2 = 1.
        let img = solid(2, 3, [255, 255, 255]);
        let pre = Preprocess {
            resize: Resize::Short(2),
            crop_h: 5,
            crop_w: 4,
        };
        let out = preprocess_image(&DynamicImage::ImageRgb8(img), &pre);
        let mask: Vec<u8> = out[..20].iter().map(|&v| v as u8).collect();
        #[rustfmt::skip]
        assert_eq!(mask, vec![
            0, 0, 0, 0,
            0, 1, 1, 0,
            0, 1, 1, 0,
            0, 1, 1, 0,
            0, 0, 0, 0,
        ]);
    }

    #[test]
    fn files_that_are_not_images_are_counted_in_the_summary() {
        // Tiny ImageNet's layout: annotations beside the images in every class folder.
        let d = TempDir::new("notimages");
        for c in 0..15 {
            save_png(&d, &format!("n{c:02}/images/a.png"), &solid(2, 2, [1, 2, 3]));
            fs::write(d.path(&format!("n{c:02}/n{c:02}_boxes.txt")), "a.png 0 0 1 1").unwrap();
        }
        let skips = SkipLog::new();
        let f = ImageFolder::open(&d.0, &skips).unwrap();
        assert_eq!((f.len(), f.num_classes(), skips.count()), (15, 15, 15));
        assert_eq!(skips.summary(), "skipped 15 files that are not images");
        skips.record(d.0.join("x.png"), "truncated");
        assert_eq!(skips.summary(), "skipped 16 files: 15 not images, 1 unreadable");
        assert_eq!(SkipLog::new().summary(), "skipped 0 unreadable files");
    }

    #[test]
    fn unreadable_files_are_skipped_without_shifting_labels() {
        let d = TempDir::new("skips");
        save_png(&d, "a/good1.png", &solid(4, 4, [10, 10, 10]));
        let good = save_png(&d, "b/good2.png", &solid(4, 4, [20, 20, 20]));
        save_png(&d, "c/good3.png", &solid(4, 4, [30, 30, 30]));
        fs::write(d.path("a/corrupt.png"), b"this is not an image at all").unwrap();
        let bytes = fs::read(&good).unwrap();
        fs::write(d.path("b/truncated.png"), &bytes[..bytes.len() / 2]).unwrap();
        fs::write(d.path("b/empty.jpg"), b"").unwrap();
        fs::write(d.path("c/notes.txt"), b"notes").unwrap();

        let skips = SkipLog::new();
        let f = ImageFolder::open(&d.0, &skips).unwrap();
        assert_eq!(skips.count(), 1, "the .txt file is skipped at scan time");
        assert_eq!(skips.paths()[0], d.0.join("c/notes.txt"));
        assert_eq!(f.len(), 6);

        let mut loaded = Vec::new();
        for _epoch in 0..2 {
            loaded.clear();
            for i in 0..f.len() {
                if let Some(v) = f.load_or_skip(i, &PRE4) {
                    loaded.push((
                        f.records[i].rel_path.clone(),
                        f.records[i].label,
                        (v[0] * 255.0).round() as u8,
                    ));
                }
            }
        }
        assert_eq!(
            loaded,
            vec![
                ("a/good1.png".to_string(), Some(0), 10),
                ("b/good2.png".to_string(), Some(1), 20),
                ("c/good3.png".to_string(), Some(2), 30),
            ]
        );
        assert_eq!(skips.count(), 4, "each bad file counted once across epochs");
        assert_eq!(skips.summary(), "skipped 4 files: 1 not image, 3 unreadable");
        for bad in ["a/corrupt.png", "b/truncated.png", "b/empty.jpg"] {
            assert!(skips.paths().contains(&d.0.join(bad)), "{bad} not recorded");
        }
        // Plain `load` reports the file in its error.
        let i = f
            .records
            .iter()
            .position(|r| r.rel_path == "b/truncated.png")
            .unwrap();
        let err = format!("{:#}", f.load(i, &PRE4).unwrap_err());
        assert!(err.contains("truncated.png"), "{err}");
    }

    #[test]
    fn manifest_join_and_symmetry() {
        let d = TempDir::new("manifest");
        save_png(&d, "chair/000042.png", &solid(4, 4, [1, 1, 1]));
        save_png(&d, "chair/000043.jpg", &solid(4, 4, [1, 1, 1]));
        save_png(&d, "table/000042.png", &solid(4, 4, [1, 1, 1]));
        save_png(&d, "table/7.png", &solid(4, 4, [1, 1, 1]));
        fs::write(
            d.path("manifest.csv"),
            "\u{feff}id,class,azimuth_deg,elevation_deg,extra\r\n\
             000042,chair,30.5,10,x\r\n\
             000043,chair,,10,x\r\n\
             \"000042\",table,-90,  5 ,\"a, b\"\r\n\
             999,table,1,1,\r\n",
        )
        .unwrap();
        fs::write(d.path("classes.csv"), "class,symmetry\nchair,1\ntable,4\n").unwrap();
        let f = ImageFolder::open(&d.0, &SkipLog::new()).unwrap();
        let poses: Vec<(&str, Option<[f32; 2]>)> = f
            .records
            .iter()
            .map(|r| (r.rel_path.as_str(), r.pose))
            .collect();
        assert_eq!(
            poses,
            vec![
                ("chair/000042.png", Some([30.5, 10.0])),
                ("chair/000043.jpg", None),
                ("table/000042.png", Some([-90.0, 5.0])),
                ("table/7.png", None),
            ]
        );
        assert_eq!(f.symmetry.get("table"), Some(&4));
        assert_eq!(f.symmetry_of(0), 1);
        assert_eq!(f.symmetry_of(2), 4);

        // Flat folder, no class column.
        let flat = TempDir::new("manifest-flat");
        save_png(&flat, "000001.png", &solid(4, 4, [1, 1, 1]));
        fs::write(flat.path("manifest.csv"), "azimuth_deg,id\n12,000001\n").unwrap();
        let f = ImageFolder::open(&flat.0, &SkipLog::new()).unwrap();
        assert_eq!(f.records[0].pose, None, "no elevation column → no pose");
        fs::write(
            flat.path("manifest.csv"),
            "elevation_deg,azimuth_deg,id\n-3,12,000001\n",
        )
        .unwrap();
        let f = ImageFolder::open(&flat.0, &SkipLog::new()).unwrap();
        assert_eq!(f.records[0].pose, Some([12.0, -3.0]));

        // Bad number: error names file, line and column.
        fs::write(
            d.path("manifest.csv"),
            "id,class,azimuth_deg,elevation_deg\n000042,chair,30,10\n\n000043,chair,3O,10\n",
        )
        .unwrap();
        let err = format!(
            "{:#}",
            ImageFolder::open(&d.0, &SkipLog::new()).unwrap_err()
        );
        assert!(
            err.contains("manifest.csv:4:")
                && err.contains("column 3")
                && err.contains("azimuth_deg"),
            "{err}"
        );
        assert!(err.contains("'3O'"), "{err}");

        // Bad symmetry value.
        fs::write(d.path("manifest.csv"), "id,class\n").unwrap();
        fs::write(d.path("classes.csv"), "class,symmetry\nchair,one\n").unwrap();
        let err = format!(
            "{:#}",
            ImageFolder::open(&d.0, &SkipLog::new()).unwrap_err()
        );
        assert!(
            err.contains("classes.csv:2:") && err.contains("column 2"),
            "{err}"
        );
    }

    #[test]
    fn csv_splitting() {
        assert_eq!(
            split_csv_line("a, b ,\"c,\"\"d\"\"\",").unwrap(),
            vec!["a", "b", "c,\"d\"", ""]
        );
        assert!(split_csv_line("\"open").is_err());
    }

    #[test]
    fn save_rgb_round_trip() {
        let d = TempDir::new("save");
        let (h, w) = (3u32, 5u32);
        let plane = (h * w) as usize;
        let chw: Vec<f32> = (0..3 * plane).map(|i| (i % 7) as f32 / 6.0).collect();
        let mut with_outliers = chw.clone();
        with_outliers[0] = -0.5;
        with_outliers[1] = 1.7;
        with_outliers[2] = f32::NAN;
        let p = d.0.join("out/sub/img.png");
        save_rgb(&p, &with_outliers, h, w).unwrap();
        assert!(!d.0.join("out/sub/img.png.tmp").exists());
        let pre = Preprocess {
            resize: Resize::Short(h as usize),
            crop_h: h,
            crop_w: w,
        };
        let back = load_rgb(&p, &pre).unwrap();
        assert_eq!(back.len(), chw.len());
        assert_eq!(back[0], 0.0);
        assert_eq!(back[1], 1.0);
        assert_eq!(back[2], 0.0);
        for i in 3..chw.len() {
            assert!((back[i] - chw[i]).abs() <= 0.5 / 255.0 + 1e-6, "value {i}");
        }
        assert!(save_rgb(&p, &chw[1..], h, w).is_err());
        // The format the name says: a `.jpg` is a JPEG, a `.bmp` a BMP; a `.txt` is refused.
        for (name, format) in [("a.jpg", ImageFormat::Jpeg), ("a.JPEG", ImageFormat::Jpeg), ("a.bmp", ImageFormat::Bmp), ("a", ImageFormat::Png)] {
            let p = d.0.join(name);
            save_rgb(&p, &chw, h, w).unwrap();
            assert_eq!(image::guess_format(&fs::read(&p).unwrap()).unwrap(), format, "{name}");
        }
        let err = save_rgb(&d.0.join("a.txt"), &chw, h, w).unwrap_err().to_string();
        assert!(err.contains("a.txt") && err.contains("name it .png"), "{err}");
    }

    #[test]
    fn augmentation_is_deterministic_per_seed() {
        let d = TempDir::new("aug");
        let img = RgbImage::from_fn(40, 30, |x, y| {
            Rgb([(x * 6) as u8, (y * 8) as u8, ((x * y) % 256) as u8])
        });
        let p = save_png(&d, "a.png", &img);
        let pre = Preprocess {
            resize: Resize::Short(24),
            crop_h: 20,
            crop_w: 20,
        };
        let a = load_augmented(&p, &pre, 7).unwrap();
        let b = load_augmented(&p, &pre, 7).unwrap();
        assert_eq!(a.len(), 3 * 20 * 20);
        assert_eq!(a, b);
        let distinct = (0..8u64)
            .filter(|&s| load_augmented(&p, &pre, s).unwrap() != a)
            .count();
        assert!(
            distinct >= 6,
            "seeds should give different crops ({distinct} of 8 differ)"
        );
        // Both flip outcomes occur.
        let flips: HashSet<bool> = (0..32u64)
            .map(|s| {
                let mut r = SplitMix64(s);
                r.next_f64();
                r.next_u64();
                r.next_u64();
                r.next_u64() & 1 == 1
            })
            .collect();
        assert_eq!(flips.len(), 2);
    }
}
