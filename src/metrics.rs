//! Reconstruction quality metrics, shared by decoder training (validation), optimization
//! inversion and `compare`.
//!
//! Everything here is a plain function over CPU slices, so any caller can use it on the
//! output of `Tensor::into_data().to_vec::<f32>()` without a backend. Images are CHW `f32`
//! RGB in `[0, 1]` (the pixel space the whole tool works in), batches are NCHW row-major.
//! Image metrics first clamp every value to `[0, 1]` (NaN as 0), exactly as images are shown
//! and saved, so they score what the user sees.
//!
//! - [`normalized_image_error`]: mean ‖x̂ − x‖₂ over the mean ‖xᵢ − xⱼ‖₂ of random pairs of
//!   originals (Dosovitskiy & Brox 2016): 0 = perfect, 1.0 = as far as a random other image.
//! - [`psnr`] (per image, max value 1.0) and [`ssim`] (Gaussian 11×11, σ 1.5, K1 0.01,
//!   K2 0.03, per channel then mean; matches scikit-image's
//!   `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
//!   data_range=1)`).
//! - [`feature_errors`]: ‖Φ(x̂) − Φ(x)‖ / ‖Φ(x)‖ per image at the inverted tap.
//! - [`top1_agreement`]: re-encoded reconstruction's class vs the original's.
//! - [`median_pose_error`]: posenet azimuth error of the re-encoded reconstruction.
//!
//! Set-level numbers are bundled in [`Metrics`]; [`Accumulator`] gathers them batch by batch.
use crate::rng::Rng;
use crate::train::encoder::{azimuth_error, median, predicted_azimuth};
use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};

/// At most this many pair distances are computed for the normalizer of
/// [`normalized_image_error`]; sets with at most this many pairs (n ≤ 91) use all of them.
pub const MAX_PAIRS: usize = 4096;

/// PSNR of a reconstruction equal to its original (MSE 0) and the upper bound of every PSNR
/// value: 100 dB is an RMS error of 1e-5, far below 8-bit quantization (≈ 59 dB), so the cap
/// never changes a real comparison but keeps means and JSON finite.
pub const PSNR_CAP_DB: f64 = 100.0;

/// SSIM window side (skimage: `2 * int(3.5 * sigma + 0.5) + 1` for σ = 1.5).
pub const SSIM_WIN: usize = 11;
/// SSIM Gaussian window standard deviation.
pub const SSIM_SIGMA: f64 = 1.5;
const SSIM_K1: f64 = 0.01;
const SSIM_K2: f64 = 0.03;
/// Data range L of the SSIM constants C1 = (K1·L)², C2 = (K2·L)²: images are in `[0, 1]`.
const SSIM_DATA_RANGE: f64 = 1.0;

/// A batch of images borrowed from a flat NCHW buffer.
#[derive(Clone, Copy, Debug)]
pub struct Images<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl<'a> Images<'a> {
    /// `data` must hold exactly n·c·h·w values.
    pub fn new(data: &'a [f32], [n, c, h, w]: [usize; 4]) -> Result<Self> {
        ensure!(
            data.len() == n * c * h * w,
            "image buffer holds {} values, shape {n}×{c}×{h}×{w} needs {}",
            data.len(),
            n * c * h * w
        );
        Ok(Self { data, n, c, h, w })
    }

    pub fn shape(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    /// Values per image (c·h·w).
    pub fn image_len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// Image `i` as a CHW slice.
    pub fn image(&self, i: usize) -> &'a [f32] {
        let l = self.image_len();
        &self.data[i * l..(i + 1) * l]
    }
}

fn same_shape(recon: &Images, orig: &Images) -> Result<()> {
    ensure!(
        recon.shape() == orig.shape(),
        "reconstructions have shape {:?} (N×C×H×W) but originals {:?}",
        recon.shape(),
        orig.shape()
    );
    Ok(())
}

fn l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum::<f64>().sqrt()
}

/// A pixel value as it is shown and saved (`report::html::png_bytes`, PNG files): clamped to
/// `[0, 1]`, NaN as 0. Image metrics score what the user sees, so a reconstruction cannot gain
/// or lose by values outside the displayable range.
fn pixel(v: f32) -> f64 {
    if v.is_nan() {
        0.0
    } else {
        v.clamp(0.0, 1.0) as f64
    }
}

fn pixel_l2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| (pixel(x) - pixel(y)).powi(2)).sum::<f64>().sqrt()
}

fn mean(v: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// ‖x̂ᵢ − xᵢ‖₂ per image.
pub fn image_distances(recon: Images, orig: Images) -> Result<Vec<f64>> {
    same_shape(&recon, &orig)?;
    Ok((0..orig.n).map(|i| pixel_l2(recon.image(i), orig.image(i))).collect())
}

/// The pairs (i, j), i ≠ j, whose distances normalize the image error.
///
/// If the set has at most [`MAX_PAIRS`] unordered pairs, all of them (i < j), in order.
/// Otherwise [`MAX_PAIRS`] pairs drawn independently (with replacement) from `Rng::new(seed)`:
/// i uniform in 0..n, then j uniform over the other n − 1 indices, so every unordered pair
/// is equally likely and an image is never paired with itself.
pub fn random_pairs(n: usize, seed: u64) -> Vec<(usize, usize)> {
    if n < 2 {
        return Vec::new();
    }
    if n * (n - 1) / 2 <= MAX_PAIRS {
        return (0..n).flat_map(|i| (i + 1..n).map(move |j| (i, j))).collect();
    }
    let mut rng = Rng::new(seed);
    (0..MAX_PAIRS)
        .map(|_| {
            let i = rng.below(n);
            let j = rng.below(n - 1);
            (i, if j >= i { j + 1 } else { j })
        })
        .collect()
}

/// Mean ‖xᵢ − xⱼ‖₂ over [`random_pairs`] of a set: how far apart two images of the set
/// typically are. Errors if the set has fewer than two images.
pub fn pair_distance(images: Images, seed: u64) -> Result<f64> {
    ensure!(images.n >= 2, "the distance between random pairs needs at least 2 images, got {}", images.n);
    let pairs = random_pairs(images.n, seed);
    Ok(mean(pairs.iter().map(|&(i, j)| pixel_l2(images.image(i), images.image(j)))).unwrap())
}

/// Mean ‖x̂ − x‖₂ over images divided by [`pair_distance`] of the originals (the same seed
/// gives the same pairs, so every method evaluated on one set shares the normalizer).
/// 0 = exact, 1.0 = as far from the original as a random other image of the set.
///
/// For a set evaluated in batches, compute [`pair_distance`] of all originals once and use
/// [`Accumulator`] (or average [`image_distances`] yourself).
pub fn normalized_image_error(recon: Images, orig: Images, seed: u64) -> Result<f64> {
    let d = image_distances(recon, orig)?;
    let norm = pair_distance(orig, seed)?;
    ensure!(norm > 0.0, "all {} original images are identical: the image error has no scale", orig.n);
    Ok(mean(d).unwrap() / norm)
}

/// Peak signal-to-noise ratio of one image in dB with peak value 1.0: 10·log₁₀(1 / MSE),
/// capped at [`PSNR_CAP_DB`] (identical images give the cap, not infinity).
pub fn psnr(recon: &[f32], orig: &[f32]) -> f64 {
    assert_eq!(recon.len(), orig.len(), "psnr of images with {} and {} values", recon.len(), orig.len());
    let mse = recon.iter().zip(orig).map(|(&x, &y)| (pixel(x) - pixel(y)).powi(2)).sum::<f64>() / orig.len().max(1) as f64;
    if mse <= 0.0 {
        return PSNR_CAP_DB;
    }
    (-10.0 * mse.log10()).min(PSNR_CAP_DB)
}

/// PSNR per image (the set's PSNR in [`Metrics`] is their mean, as is usual in papers).
pub fn psnrs(recon: Images, orig: Images) -> Result<Vec<f64>> {
    same_shape(&recon, &orig)?;
    Ok((0..orig.n).map(|i| psnr(recon.image(i), orig.image(i))).collect())
}

/// The normalized 1-D Gaussian window (scipy's `_gaussian_kernel1d`: exp(−x²/2σ²) over
/// x = −5..=5, divided by its sum).
fn gaussian_window() -> [f64; SSIM_WIN] {
    let r = (SSIM_WIN / 2) as f64;
    let mut k = [0.0; SSIM_WIN];
    for (i, v) in k.iter_mut().enumerate() {
        let x = i as f64 - r;
        *v = (-0.5 * x * x / (SSIM_SIGMA * SSIM_SIGMA)).exp();
    }
    let s: f64 = k.iter().sum();
    k.map(|v| v / s)
}

/// Separable "valid" filtering of an h×w plane: output (h−10)×(w−10), one value per window
/// lying entirely inside the image.
fn filter_valid(x: &[f64], h: usize, w: usize, k: &[f64; SSIM_WIN]) -> Vec<f64> {
    let (oh, ow) = (h + 1 - SSIM_WIN, w + 1 - SSIM_WIN);
    let mut rows = vec![0.0; h * ow];
    for y in 0..h {
        for x0 in 0..ow {
            rows[y * ow + x0] = k.iter().enumerate().map(|(t, kt)| kt * x[y * w + x0 + t]).sum();
        }
    }
    let mut out = vec![0.0; oh * ow];
    for y0 in 0..oh {
        for x0 in 0..ow {
            out[y0 * ow + x0] = k.iter().enumerate().map(|(t, kt)| kt * rows[(y0 + t) * ow + x0]).sum();
        }
    }
    out
}

/// Mean SSIM of one h×w plane pair.
fn ssim_plane(a: &[f32], b: &[f32], h: usize, w: usize, k: &[f64; SSIM_WIN]) -> f64 {
    let x: Vec<f64> = a.iter().map(|&v| pixel(v)).collect();
    let y: Vec<f64> = b.iter().map(|&v| pixel(v)).collect();
    let prod = |p: &[f64], q: &[f64]| p.iter().zip(q).map(|(u, v)| u * v).collect::<Vec<f64>>();
    let [ux, uy, uxx, uyy, uxy] = [x.clone(), y.clone(), prod(&x, &x), prod(&y, &y), prod(&x, &y)].map(|p| filter_valid(&p, h, w, k));
    let (c1, c2) = ((SSIM_K1 * SSIM_DATA_RANGE).powi(2), (SSIM_K2 * SSIM_DATA_RANGE).powi(2));
    let s = (0..ux.len()).map(|i| {
        let (mx, my) = (ux[i], uy[i]);
        // Population (not sample) covariance: use_sample_covariance=False.
        let (vx, vy, vxy) = (uxx[i] - mx * mx, uyy[i] - my * my, uxy[i] - mx * my);
        ((2.0 * mx * my + c1) * (2.0 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    });
    mean(s).unwrap()
}

/// Structural similarity of one CHW image pair with data range 1: Gaussian-weighted local
/// statistics (11×11, σ 1.5, K1 0.01, K2 0.03, population covariance), SSIM map per
/// channel, mean over channels.
///
/// Borders: the map is averaged only over pixels whose whole 11×11 window lies inside the
/// image, i.e. 5 pixels are dropped on each side. That is exactly what scikit-image reports
/// (it filters with reflected borders and then crops (win−1)/2 from each side, so border
/// values never reach its mean), and no padding convention leaks into the number.
/// Errors if the image is smaller than 11×11.
pub fn ssim(recon: &[f32], orig: &[f32], c: usize, h: usize, w: usize) -> Result<f64> {
    ensure!(
        recon.len() == c * h * w && orig.len() == c * h * w,
        "ssim of {}- and {}-value images with shape {c}×{h}×{w}",
        recon.len(),
        orig.len()
    );
    ensure!(h >= SSIM_WIN && w >= SSIM_WIN, "SSIM needs images of at least {SSIM_WIN}×{SSIM_WIN} pixels (its window), got {h}×{w}");
    ensure!(c > 0, "SSIM of an image with 0 channels");
    let k = gaussian_window();
    let p = h * w;
    Ok(mean((0..c).map(|ch| ssim_plane(&recon[ch * p..(ch + 1) * p], &orig[ch * p..(ch + 1) * p], h, w, &k))).unwrap())
}

/// SSIM per image.
pub fn ssims(recon: Images, orig: Images) -> Result<Vec<f64>> {
    same_shape(&recon, &orig)?;
    (0..orig.n).map(|i| ssim(recon.image(i), orig.image(i), orig.c, orig.h, orig.w)).collect()
}

/// Relative feature error ‖Φ(x̂) − Φ(x)‖₂ / ‖Φ(x)‖₂ per row of `dim` features (flat codes,
/// e.g. `Act::flat()` rows). `None` for a row whose original features are all zero (a
/// relative error is undefined there); [`Metrics`] averages over the other rows.
pub fn feature_errors(recon: &[f32], orig: &[f32], dim: usize) -> Result<Vec<Option<f64>>> {
    ensure!(dim > 0, "feature rows of width 0");
    ensure!(
        recon.len() == orig.len() && orig.len().is_multiple_of(dim),
        "feature buffers of {} and {} values do not hold the same rows of {dim}",
        recon.len(),
        orig.len()
    );
    Ok(recon
        .chunks(dim)
        .zip(orig.chunks(dim))
        .map(|(r, o)| {
            let norm = o.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            (norm > 0.0).then(|| l2(r, o) / norm)
        })
        .collect())
}

/// Mean of [`feature_errors`] over rows with a non-zero original; errors if there is none.
pub fn feature_error(recon: &[f32], orig: &[f32], dim: usize) -> Result<f64> {
    let e = feature_errors(recon, orig, dim)?;
    match mean(e.iter().flatten().copied()) {
        Some(m) => Ok(m),
        None => bail!("all {} original feature rows are zero: relative feature error undefined", e.len()),
    }
}

/// Index of the largest value; the first one on ties (as `torch.argmax`), NaNs ignored,
/// `None` for an empty or all-NaN row.
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// What a reconstruction's class is compared with.
#[derive(Clone, Copy, Debug)]
pub enum ClassRef<'a> {
    /// The original images' logits (or probabilities), rows of the same width: agreement
    /// with what the network saw in the original.
    Logits(&'a [f32]),
    /// Class indices, one per image (e.g. the dataset labels).
    Labels(&'a [usize]),
}

/// Whether argmax of each reconstruction's logits row equals the reference class; `classes`
/// is the row width. An all-NaN row counts as disagreeing.
pub fn top1_matches(recon_logits: &[f32], classes: usize, reference: ClassRef) -> Result<Vec<bool>> {
    ensure!(classes > 0, "logit rows of width 0");
    ensure!(recon_logits.len().is_multiple_of(classes), "{} logits are not rows of {classes} classes", recon_logits.len());
    let n = recon_logits.len() / classes;
    let truth: Vec<Option<usize>> = match reference {
        ClassRef::Logits(l) => {
            ensure!(l.len() == recon_logits.len(), "reconstruction logits have {} values, original logits {}", recon_logits.len(), l.len());
            l.chunks(classes).map(argmax).collect()
        }
        ClassRef::Labels(l) => {
            ensure!(l.len() == n, "{n} logit rows but {} labels", l.len());
            if let Some(&bad) = l.iter().find(|&&c| c >= classes) {
                bail!("label {bad} out of range for {classes} classes");
            }
            l.iter().map(|&c| Some(c)).collect()
        }
    };
    Ok(recon_logits.chunks(classes).zip(truth).map(|(r, t)| t.is_some() && argmax(r) == t).collect())
}

/// Fraction of rows where the reconstruction's top-1 class matches the reference.
pub fn top1_agreement(recon_logits: &[f32], classes: usize, reference: ClassRef) -> Result<f64> {
    let m = top1_matches(recon_logits, classes, reference)?;
    ensure!(!m.is_empty(), "top-1 agreement of an empty set");
    Ok(m.iter().filter(|&&b| b).count() as f64 / m.len() as f64)
}

/// What a reconstruction's azimuth is compared with.
#[derive(Clone, Copy, Debug)]
pub enum PoseRef<'a> {
    /// posenet `pose` rows (width 4) of the original images: agreement with what the
    /// network read from the original.
    Rows(&'a [f32]),
    /// True azimuths in degrees (e.g. the manifest's), `None` where unknown.
    Azimuths(&'a [Option<f32>]),
}

/// Azimuth error in degrees per image between posenet `pose` rows of the re-encoded
/// reconstructions (`(sin k·az, cos k·az, sin el, cos el)`,
/// [`POSE_DIM`](crate::encoder::posenet::POSE_DIM) wide) and the
/// reference, modulo each image's rotational symmetry `k` (`symmetry[i]`, 1 for most classes).
/// `None` where the azimuth is undefined (k = 0, a cone) or the true azimuth is unknown.
pub fn pose_errors(recon_pose: &[f32], reference: PoseRef, symmetry: &[u32]) -> Result<Vec<Option<f64>>> {
    let d = crate::encoder::posenet::POSE_DIM;
    ensure!(recon_pose.len().is_multiple_of(d), "{} pose values are not rows of {d}", recon_pose.len());
    let n = recon_pose.len() / d;
    ensure!(symmetry.len() == n, "{n} pose rows but {} symmetry orders", symmetry.len());
    let truth: Vec<Option<f32>> = match reference {
        PoseRef::Rows(r) => {
            ensure!(r.len() == recon_pose.len(), "reconstruction pose has {} values, original pose {}", recon_pose.len(), r.len());
            r.chunks(d).zip(symmetry).map(|(row, &k)| Some(predicted_azimuth(row, k))).collect()
        }
        PoseRef::Azimuths(a) => {
            ensure!(a.len() == n, "{n} pose rows but {} azimuths", a.len());
            a.to_vec()
        }
    };
    Ok(recon_pose
        .chunks(d)
        .zip(truth)
        .zip(symmetry)
        .map(|((row, t), &k)| match (t, k) {
            (Some(t), k) if k != 0 => Some(azimuth_error(predicted_azimuth(row, k), t, k) as f64),
            _ => None,
        })
        .collect())
}

/// Median of [`pose_errors`] over images with a defined azimuth (`None` if there is none).
pub fn median_pose_error(recon_pose: &[f32], reference: PoseRef, symmetry: &[u32]) -> Result<Option<f64>> {
    Ok(median(pose_errors(recon_pose, reference, symmetry)?.into_iter().flatten().collect()))
}

/// Set-level metrics of a reconstruction method, `None` where not measured (no comparator
/// features, no classifier, no pose head ...). Serializes to JSON with `null` for `None`;
/// all values are finite (PSNR is capped).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    /// Number of images evaluated.
    pub count: usize,
    /// [`normalized_image_error`] (lower is better, 1.0 = random other image).
    pub image_error: Option<f64>,
    /// Mean per-image PSNR in dB.
    pub psnr_db: Option<f64>,
    /// Mean per-image SSIM.
    pub ssim: Option<f64>,
    /// Mean relative feature error at the inverted tap.
    pub feature_error: Option<f64>,
    /// Fraction of reconstructions classified as the original.
    pub top1_agreement: Option<f64>,
    /// Median azimuth error in degrees.
    pub pose_error_deg: Option<f64>,
}

impl Metrics {
    /// Column names of [`Metrics::cells`], for tables and CSV.
    pub const COLUMNS: [&'static str; 7] = ["count", "image_error", "psnr_db", "ssim", "feature_error", "top1_agreement", "pose_error_deg"];

    /// Image error, PSNR and SSIM of a whole set in memory (SSIM left out for images
    /// smaller than its 11×11 window, image error left out when all originals are identical).
    /// Errors if the shapes differ or the set has fewer than 2 images.
    pub fn images(recon: Images, orig: Images, seed: u64) -> Result<Metrics> {
        let mut acc = Accumulator::default();
        acc.add_images(recon, orig)?;
        Ok(acc.finish(Some(pair_distance(orig, seed)?)))
    }

    /// The values formatted for a table row (`-` where not measured), in [`Metrics::COLUMNS`] order.
    pub fn cells(&self) -> Vec<String> {
        let f = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |x| format!("{x:.digits$}"));
        vec![
            self.count.to_string(),
            f(self.image_error, 4),
            f(self.psnr_db, 2),
            f(self.ssim, 4),
            f(self.feature_error, 4),
            f(self.top1_agreement, 4),
            f(self.pose_error_deg, 2),
        ]
    }
}

/// Per-image values gathered batch by batch (a validation loop), reduced by [`Accumulator::finish`].
#[derive(Clone, Debug, Default)]
pub struct Accumulator {
    /// Rows added per kind (images, features, classes, pose); `count` is the largest.
    rows: [usize; 4],
    distances: Vec<f64>,
    psnr: Vec<f64>,
    ssim: Vec<f64>,
    feature: Vec<f64>,
    top1: Vec<bool>,
    pose: Vec<f64>,
}

impl Accumulator {
    /// Distances, PSNR and SSIM (SSIM only for images of at least 11×11).
    pub fn add_images(&mut self, recon: Images, orig: Images) -> Result<()> {
        self.distances.extend(image_distances(recon, orig)?);
        self.rows[0] += orig.n;
        self.psnr.extend(psnrs(recon, orig)?);
        if orig.h >= SSIM_WIN && orig.w >= SSIM_WIN {
            self.ssim.extend(ssims(recon, orig)?);
        }
        Ok(())
    }

    pub fn add_features(&mut self, recon: &[f32], orig: &[f32], dim: usize) -> Result<()> {
        let e = feature_errors(recon, orig, dim)?;
        self.rows[1] += e.len();
        self.feature.extend(e.into_iter().flatten());
        Ok(())
    }

    pub fn add_classes(&mut self, recon_logits: &[f32], classes: usize, reference: ClassRef) -> Result<()> {
        let m = top1_matches(recon_logits, classes, reference)?;
        self.rows[2] += m.len();
        self.top1.extend(m);
        Ok(())
    }

    pub fn add_pose(&mut self, recon_pose: &[f32], reference: PoseRef, symmetry: &[u32]) -> Result<()> {
        let e = pose_errors(recon_pose, reference, symmetry)?;
        self.rows[3] += e.len();
        self.pose.extend(e.into_iter().flatten());
        Ok(())
    }

    /// Means (median for pose). `pair_distance` is [`pair_distance`] of all the originals;
    /// without it (or if it is 0) the image error is left out.
    pub fn finish(&self, pair_distance: Option<f64>) -> Metrics {
        let non_empty = |v: &[f64]| if v.is_empty() { None } else { mean(v.iter().copied()) };
        Metrics {
            count: self.rows.into_iter().max().unwrap_or(0),
            image_error: pair_distance.filter(|&p| p > 0.0).and_then(|p| non_empty(&self.distances).map(|d| d / p)),
            psnr_db: non_empty(&self.psnr),
            ssim: non_empty(&self.ssim),
            feature_error: non_empty(&self.feature),
            top1_agreement: (!self.top1.is_empty()).then(|| self.top1.iter().filter(|&&b| b).count() as f64 / self.top1.len() as f64),
            pose_error_deg: median(self.pose.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Integer patterns over powers of two, so f32 (here) and float64 (scikit-image) hold
    /// exactly the same values. Mirrored in the Python script below.
    fn pat_a(c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(c * h * w);
        for z in 0..c {
            for y in 0..h {
                for x in 0..w {
                    v.push(((z * 7 + y * 13 + x * 29 + (x * y) % 11) % 33) as f32 / 32.0);
                }
            }
        }
        v
    }
    fn pat_b(c: usize, h: usize, w: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(c * h * w);
        for z in 0..c {
            for y in 0..h {
                for x in 0..w {
                    v.push(((z * 5 + y * y * 3 + x * 11 + (x * y) % 7) % 65) as f32 / 64.0);
                }
            }
        }
        v
    }

    fn random_images(n: usize, len: usize, seed: u64) -> Vec<f32> {
        let mut r = Rng::new(seed);
        (0..n * len).map(|_| r.uniform()).collect()
    }

    #[test]
    fn psnr_of_known_mse() {
        let a = vec![0.5f32; 48];
        let b: Vec<f32> = a.iter().map(|v| v + 0.25).collect(); // MSE 1/16 exactly
        assert!(close(psnr(&b, &a), 10.0 * 16f64.log10(), 1e-12));
        // Half the values off by 0.5, half exact: MSE 0.125 → 10·log10(8) ≈ 9.0309 dB.
        let c: Vec<f32> = a.iter().enumerate().map(|(i, v)| if i % 2 == 0 { v + 0.5 } else { *v }).collect();
        assert!(close(psnr(&c, &a), 9.030899869919435, 1e-12), "{}", psnr(&c, &a));
        assert_eq!(psnr(&a, &a), PSNR_CAP_DB, "identical images give the documented cap");
        let tiny: Vec<f32> = a.iter().map(|v| v + 1e-7).collect();
        assert!(psnr(&tiny, &a) <= PSNR_CAP_DB);
        // Mean over images in Metrics: (10·log10 16 + cap) / 2.
        let ab: Vec<f32> = [b.clone(), a.clone()].concat();
        let aa: Vec<f32> = [a.clone(), a.clone()].concat();
        let m = Metrics::images(Images::new(&ab, [2, 3, 4, 4]).unwrap(), Images::new(&aa, [2, 3, 4, 4]).unwrap(), 0).unwrap();
        assert!(close(m.psnr_db.unwrap(), (10.0 * 16f64.log10() + PSNR_CAP_DB) / 2.0, 1e-12));
        // 4×4 images are too small for SSIM, and identical originals give the image error no scale.
        assert_eq!((m.ssim, m.image_error, m.count), (None, None, 2));
        let e = normalized_image_error(Images::new(&ab, [2, 3, 4, 4]).unwrap(), Images::new(&aa, [2, 3, 4, 4]).unwrap(), 0);
        assert!(e.unwrap_err().to_string().contains("identical"));
    }

    // Reference values from scikit-image 0.26.0 (numpy float64), produced by:
    //
    //   import numpy as np
    //   from skimage.metrics import structural_similarity, peak_signal_noise_ratio
    //   def pat_a(c, h, w):
    //       z, y, x = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    //       return ((z * 7 + y * 13 + x * 29 + (x * y) % 11) % 33) / 32.0
    //   def pat_b(c, h, w):
    //       z, y, x = np.meshgrid(np.arange(c), np.arange(h), np.arange(w), indexing="ij")
    //       return ((z * 5 + y * y * 3 + x * 11 + (x * y) % 7) % 65) / 64.0
    //   ssim = lambda p, q: structural_similarity(p, q, channel_axis=0, gaussian_weights=True,
    //                                             sigma=1.5, use_sample_covariance=False, data_range=1)
    //   for (c, h, w) in [(3, 13, 20), (1, 11, 11), (3, 16, 16)]:
    //       a, b = pat_a(c, h, w), pat_b(c, h, w)
    //       print((c, h, w), float(ssim(a, b)), float(ssim(a, 0.75 * a + 0.125)),
    //             float(ssim(a, (a + b) / 2)), float(peak_signal_noise_ratio(a, b, data_range=1)))
    const SKIMAGE: [([usize; 3], [f64; 4]); 3] = [
        ([3, 13, 20], [-0.06517292788752005, 0.9600693591455317, 0.6291469807447224, 7.453452277776142]),
        ([1, 11, 11], [0.29082609830949735, 0.9602350867030502, 0.7885940973922344, 8.059669168744058]),
        ([3, 16, 16], [-0.00482106781416674, 0.9601056186482438, 0.6601225734800256, 7.563772925638858]),
    ];

    #[test]
    fn ssim_and_psnr_match_scikit_image() {
        for ([c, h, w], [s_ab, s_scaled, s_mix, p_ab]) in SKIMAGE {
            let (a, b) = (pat_a(c, h, w), pat_b(c, h, w));
            let scaled: Vec<f32> = a.iter().map(|v| 0.75 * v + 0.125).collect();
            let mix: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / 2.0).collect();
            // skimage's argument order is (image, reference); SSIM is symmetric anyway.
            for (got, want) in [
                (ssim(&b, &a, c, h, w).unwrap(), s_ab),
                (ssim(&scaled, &a, c, h, w).unwrap(), s_scaled),
                (ssim(&mix, &a, c, h, w).unwrap(), s_mix),
                (psnr(&b, &a), p_ab),
            ] {
                assert!(close(got, want, 1e-10), "{c}×{h}×{w}: got {got}, scikit-image {want}");
            }
        }
    }

    /// Straightforward SSIM: for every pixel whose 11×11 window fits, weighted statistics
    /// with the 2-D Gaussian g(i)·g(j) computed on the spot, no separable filtering.
    fn ssim_direct(a: &[f32], b: &[f32], c: usize, h: usize, w: usize) -> f64 {
        let g: Vec<f64> = (-5i32..=5).map(|i| (-(i * i) as f64 / (2.0 * 1.5 * 1.5)).exp()).collect();
        let gs: f64 = g.iter().sum();
        let (c1, c2) = (0.01f64 * 0.01, 0.03f64 * 0.03);
        let mut total = 0.0;
        for ch in 0..c {
            let (mut sum, mut count) = (0.0, 0);
            for cy in 5..h - 5 {
                for cx in 5..w - 5 {
                    let (mut mx, mut my, mut mxx, mut myy, mut mxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
                    for i in 0..11 {
                        for j in 0..11 {
                            let wt = g[i] * g[j] / (gs * gs);
                            let k = ch * h * w + (cy + i - 5) * w + cx + j - 5;
                            let (x, y) = (a[k] as f64, b[k] as f64);
                            mx += wt * x;
                            my += wt * y;
                            mxx += wt * x * x;
                            myy += wt * y * y;
                            mxy += wt * x * y;
                        }
                    }
                    let (vx, vy, vxy) = (mxx - mx * mx, myy - my * my, mxy - mx * my);
                    sum += (2.0 * mx * my + c1) * (2.0 * vxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2));
                    count += 1;
                }
            }
            total += sum / count as f64;
        }
        total / c as f64
    }

    #[test]
    fn ssim_matches_direct_window_sum_on_random_images() {
        let (c, h, w) = (3, 14, 19);
        let a = random_images(1, c * h * w, 1);
        let noise = random_images(1, c * h * w, 2);
        let b: Vec<f32> = a.iter().zip(&noise).map(|(x, n)| (x + 0.3 * (n - 0.5)).clamp(0.0, 1.0)).collect();
        let got = ssim(&b, &a, c, h, w).unwrap();
        let want = ssim_direct(&b, &a, c, h, w);
        assert!(close(got, want, 1e-12), "separable {got} vs direct {want}");
        // Signal variance 1/12 per value, noise variance 0.3²/12: the structure term alone
        // predicts 2·(1/12) / (2·(1/12) + 0.09/12) ≈ 0.957.
        assert!((0.93..0.98).contains(&got), "noisy copy: {got}");
    }

    #[test]
    fn ssim_of_identical_images_is_one_and_small_images_are_rejected() {
        let a = random_images(1, 3 * 12 * 15, 3);
        assert!(close(ssim(&a, &a, 3, 12, 15).unwrap(), 1.0, 1e-12));
        let flat = vec![0.3f32; 3 * 11 * 11];
        assert!(close(ssim(&flat, &flat, 3, 11, 11).unwrap(), 1.0, 1e-12));
        // Constant images of different levels: only the luminance term is left,
        // (2·0.3·0.7 + C1) / (0.3² + 0.7² + C1).
        let other = vec![0.7f32; 3 * 11 * 11];
        let lum = (2.0 * 0.3f32 as f64 * 0.7f32 as f64 + 1e-4) / ((0.3f32 as f64).powi(2) + (0.7f32 as f64).powi(2) + 1e-4);
        assert!(close(ssim(&other, &flat, 3, 11, 11).unwrap(), lum, 1e-9));
        let e = ssim(&a[..3 * 10 * 12], &a[..3 * 10 * 12], 3, 10, 12).unwrap_err().to_string();
        assert!(e.contains("11×11") && e.contains("10×12"), "{e}");
        assert!(ssim(&a, &a[1..], 3, 12, 15).is_err());
    }

    #[test]
    fn image_metrics_score_the_displayed_clamped_image() {
        // Out-of-range values display as 0 and 1, NaN as 0: this reconstruction shows exactly the original.
        let orig = [1.0f32, 0.0, 0.0, 0.5];
        let recon = [1.5f32, -0.3, f32::NAN, 0.5];
        assert_eq!(psnr(&recon, &orig), PSNR_CAP_DB);
        assert_eq!(image_distances(Images::new(&recon, [1, 1, 2, 2]).unwrap(), Images::new(&orig, [1, 1, 2, 2]).unwrap()).unwrap(), [0.0]);
        let big: Vec<f32> = pat_a(1, 11, 11);
        let over: Vec<f32> = big.iter().map(|&v| if v == 1.0 { 7.0 } else if v == 0.0 { -2.0 } else { v }).collect();
        assert_ne!(over, big);
        assert!(close(ssim(&over, &big, 1, 11, 11).unwrap(), 1.0, 1e-12));
        // Feature errors are not pixels: no clamping there.
        assert!(close(feature_error(&[4.0, 0.0], &[2.0, 0.0], 2).unwrap(), 1.0, 1e-12));
    }

    #[test]
    fn image_error_by_hand() {
        // Three 1×1×2 images: |x0 x1| = 0.5, |x1 x2| = 0.5, |x0 x2| = 1.0, mean pair distance 2/3.
        let x = [0.0f32, 0.0, 0.3, 0.4, 0.6, 0.8];
        let orig = Images::new(&x, [3, 1, 1, 2]).unwrap();
        assert!(close(pair_distance(orig, 7).unwrap(), 2.0 / 3.0, 1e-7));
        assert_eq!(normalized_image_error(orig, orig, 7).unwrap(), 0.0);
        // Each reconstruction replaced by the next image: distances 0.5, 0.5, 1.0 → exactly 1.0.
        let rolled = [0.3f32, 0.4, 0.6, 0.8, 0.0, 0.0];
        let e = normalized_image_error(Images::new(&rolled, [3, 1, 1, 2]).unwrap(), orig, 7).unwrap();
        assert!(close(e, 1.0, 1e-6), "{e}");
        // Every reconstruction off by 0.1 in one value: 0.1 / (2/3) = 0.15.
        let off: Vec<f32> = x.iter().enumerate().map(|(i, v)| if i % 2 == 0 { v + 0.1 } else { *v }).collect();
        let e = normalized_image_error(Images::new(&off, [3, 1, 1, 2]).unwrap(), orig, 7).unwrap();
        assert!(close(e, 0.15, 1e-6), "{e}");
    }

    #[test]
    fn image_error_of_a_shuffled_large_set_is_about_one() {
        let (n, len) = (300, 3 * 8 * 8);
        let x = random_images(n, len, 11);
        let orig = Images::new(&x, [n, 3, 8, 8]).unwrap();
        // A derangement (cyclic shift of a shuffled order): every image replaced by another one.
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(4).shuffle(&mut order);
        let mut shuffled = vec![0.0f32; n * len];
        for k in 0..n {
            let (dst, src) = (order[k], order[(k + 1) % n]);
            shuffled[dst * len..(dst + 1) * len].copy_from_slice(orig.image(src));
        }
        let e = normalized_image_error(Images::new(&shuffled, [n, 3, 8, 8]).unwrap(), orig, 5).unwrap();
        assert!(close(e, 1.0, 0.02), "shuffled set error {e}");
        // Deterministic per seed; another seed draws other pairs but estimates the same scale.
        let (p5, p5b, p6) = (pair_distance(orig, 5).unwrap(), pair_distance(orig, 5).unwrap(), pair_distance(orig, 6).unwrap());
        assert_eq!(p5, p5b);
        assert_ne!(p5, p6);
        assert!(close(p5, p6, 0.01 * p5));
        // Uniform [0,1) values: E|xi − xj|² = 1/6 per value, so the distance is ≈ sqrt(len/6).
        assert!(close(p5, (len as f64 / 6.0).sqrt(), 0.02 * p5), "{p5}");
        assert!(normalized_image_error(orig, Images::new(&x[..len], [1, 3, 8, 8]).unwrap(), 0).is_err());
        assert!(pair_distance(Images::new(&x[..len], [1, 3, 8, 8]).unwrap(), 0).is_err());
    }

    #[test]
    fn pairs_are_distinct_exhaustive_when_small_and_seeded_when_large() {
        let all = random_pairs(10, 3);
        assert_eq!(all.len(), 45);
        assert!(all.iter().all(|&(i, j)| i < j && j < 10));
        assert_eq!(random_pairs(91, 1).len(), 91 * 90 / 2, "4095 pairs: still exhaustive");
        let many = random_pairs(200, 3);
        assert_eq!(many.len(), MAX_PAIRS);
        assert!(many.iter().all(|&(i, j)| i != j && i < 200 && j < 200));
        assert_eq!(many, random_pairs(200, 3));
        assert_ne!(many, random_pairs(200, 4));
        let mut seen = vec![0usize; 200];
        for &(i, j) in &many {
            seen[i] += 1;
            seen[j] += 1;
        }
        assert!(seen.iter().all(|&s| s > 10), "every image takes part ({:?})", seen.iter().min());
        assert!(random_pairs(1, 0).is_empty());
        assert!(Images::new(&[0.0; 5], [1, 1, 2, 2]).is_err());
    }

    #[test]
    fn feature_error_by_hand() {
        // Row 0: orig (3, 4) norm 5, recon off by (0, 1) → 0.2. Row 1: exact → 0. Row 2: zero original → None.
        let orig = [3.0f32, 4.0, 1.0, 2.0, 0.0, 0.0];
        let recon = [3.0f32, 5.0, 1.0, 2.0, 0.5, 0.0];
        let e = feature_errors(&recon, &orig, 2).unwrap();
        assert!(close(e[0].unwrap(), 0.2, 1e-7));
        assert_eq!(e[1], Some(0.0));
        assert_eq!(e[2], None);
        assert!(close(feature_error(&recon, &orig, 2).unwrap(), 0.1, 1e-7));
        assert!(feature_error(&recon, &[0.0; 6], 2).unwrap_err().to_string().contains("zero"));
        assert!(feature_errors(&recon, &orig, 4).is_err(), "6 values are not rows of 4");
        assert!(feature_errors(&recon[..4], &orig, 2).is_err());
    }

    #[test]
    fn argmax_and_top1_agreement() {
        assert_eq!(argmax(&[0.1, 0.9, 0.9, -1.0]), Some(1), "first of ties");
        assert_eq!(argmax(&[f32::NAN, -2.0, -3.0]), Some(1));
        assert_eq!(argmax(&[f32::NAN]), None);
        assert_eq!(argmax(&[]), None);
        // 4 rows of 3 classes: argmax 2, 0, 1, none.
        let recon = [0.0f32, 1.0, 2.0, 5.0, 1.0, 1.0, 0.0, 3.0, 2.0, f32::NAN, f32::NAN, f32::NAN];
        let orig = [0.0f32, 0.0, 9.0, 1.0, 0.0, 0.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.0]; // 2, 0, 0, 0
        assert_eq!(top1_matches(&recon, 3, ClassRef::Logits(&orig)).unwrap(), [true, true, false, false]);
        assert_eq!(top1_agreement(&recon, 3, ClassRef::Logits(&orig)).unwrap(), 0.5);
        assert_eq!(top1_agreement(&recon, 3, ClassRef::Labels(&[2, 0, 1, 1])).unwrap(), 0.75);
        assert!(top1_agreement(&recon, 3, ClassRef::Labels(&[2, 0, 3, 1])).unwrap_err().to_string().contains("label 3"));
        assert!(top1_agreement(&recon, 3, ClassRef::Labels(&[2, 0])).is_err());
        assert!(top1_agreement(&recon, 5, ClassRef::Labels(&[2, 0])).is_err(), "12 logits are not rows of 5");
        assert!(top1_agreement(&[], 3, ClassRef::Labels(&[])).is_err());
    }

    /// A posenet pose row for azimuth `az`, elevation `el` (degrees) and symmetry order k.
    fn pose_row(az: f32, el: f32, k: u32) -> [f32; 4] {
        let (a, e) = ((az * k as f32).to_radians(), el.to_radians());
        [a.sin(), a.cos(), e.sin(), e.cos()]
    }

    #[test]
    fn pose_error_by_hand() {
        // Image 0: 10° vs true 350° → 20°. Image 1: 4-fold symmetric, 85° vs 5° → 80° ≡ 10° (mod 90).
        // Image 2: cone (k = 0) → undefined. Image 3: 100° vs 130° → 30°. Image 4: no true azimuth.
        let recon: Vec<f32> = [pose_row(10.0, 20.0, 1), pose_row(85.0, 0.0, 4), pose_row(40.0, 0.0, 0), pose_row(100.0, 5.0, 1), pose_row(1.0, 0.0, 1)].concat();
        let sym = [1, 4, 0, 1, 1];
        let truth = [Some(350.0), Some(5.0), Some(40.0), Some(130.0), None];
        let e = pose_errors(&recon, PoseRef::Azimuths(&truth), &sym).unwrap();
        let want = [Some(20.0), Some(10.0), None, Some(30.0), None];
        for (g, w) in e.iter().zip(want) {
            assert_eq!(g.is_some(), w.is_some(), "{e:?}");
            if let (Some(g), Some(w)) = (g, w) {
                assert!(close(*g, w, 1e-3), "{e:?}");
            }
        }
        let med = median_pose_error(&recon, PoseRef::Azimuths(&truth), &sym).unwrap().unwrap();
        assert!(close(med, 20.0, 1e-3), "{med}");
        // Against the originals' own pose rows (what the network read from the original).
        let orig: Vec<f32> = [pose_row(350.0, 0.0, 1), pose_row(5.0, 0.0, 4), pose_row(0.0, 0.0, 0), pose_row(130.0, 0.0, 1), pose_row(3.0, 0.0, 1)].concat();
        let med = median_pose_error(&recon, PoseRef::Rows(&orig), &sym).unwrap().unwrap();
        assert!(close(med, 15.0, 1e-3), "errors 20, 10, 30, 2 → median 15, got {med}");
        assert_eq!(median_pose_error(&recon[..8], PoseRef::Azimuths(&[None, None]), &sym[..2]).unwrap(), None);
        assert!(pose_errors(&recon, PoseRef::Azimuths(&truth), &sym[..3]).is_err());
        assert!(pose_errors(&recon[..7], PoseRef::Rows(&orig[..7]), &sym).is_err());
    }

    #[test]
    fn accumulated_batches_equal_the_whole_set_and_metrics_round_trip() {
        let (n, shape) = (6, [3, 12, 13]);
        let len = shape.iter().product::<usize>();
        let orig = random_images(n, len, 21);
        let noise = random_images(n, len, 22);
        let recon: Vec<f32> = orig.iter().zip(&noise).map(|(x, e)| (x + 0.2 * (e - 0.5)).clamp(0.0, 1.0)).collect();
        fn im(d: &[f32], k: usize) -> Images<'_> {
            Images::new(d, [k, 3, 12, 13]).unwrap()
        }
        let whole = Metrics::images(im(&recon, n), im(&orig, n), 9).unwrap();
        assert_eq!(whole.count, n);
        let mut acc = Accumulator::default();
        acc.add_images(im(&recon[..2 * len], 2), im(&orig[..2 * len], 2)).unwrap();
        acc.add_images(im(&recon[2 * len..], 4), im(&orig[2 * len..], 4)).unwrap();
        let pd = pair_distance(im(&orig, n), 9).unwrap();
        let batched = acc.finish(Some(pd));
        for (a, b) in [(whole.image_error, batched.image_error), (whole.psnr_db, batched.psnr_db), (whole.ssim, batched.ssim)] {
            assert!(close(a.unwrap(), b.unwrap(), 1e-12), "{whole:?} vs {batched:?}");
        }
        let direct = normalized_image_error(im(&recon, n), im(&orig, n), 9).unwrap();
        assert!(close(whole.image_error.unwrap(), direct, 1e-12));
        let mean_ssim = ssims(im(&recon, n), im(&orig, n)).unwrap().iter().sum::<f64>() / n as f64;
        assert!(close(whole.ssim.unwrap(), mean_ssim, 1e-12));
        assert_eq!((whole.feature_error, whole.top1_agreement, whole.pose_error_deg), (None, None, None));

        acc.add_classes(&[0.0, 1.0, 1.0, 0.0], 2, ClassRef::Labels(&[1, 1])).unwrap();
        acc.add_features(&[1.0, 0.0], &[2.0, 0.0], 2).unwrap();
        acc.add_pose(&pose_row(30.0, 0.0, 1), PoseRef::Azimuths(&[Some(20.0)]), &[1]).unwrap();
        let m = acc.finish(None);
        assert_eq!(m.image_error, None, "no pair distance, no normalized error");
        assert_eq!(m.top1_agreement, Some(0.5));
        assert!(close(m.feature_error.unwrap(), 0.5, 1e-12));
        assert!(close(m.pose_error_deg.unwrap(), 10.0, 1e-3));

        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"image_error\":null"), "{json}");
        let back: Metrics = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
        let partial: Metrics = serde_json::from_str("{\"count\": 3, \"ssim\": 0.5}").unwrap();
        assert_eq!((partial.count, partial.ssim, partial.psnr_db), (3, Some(0.5), None));
        assert!(serde_json::from_str::<Metrics>("{\"ssmi\": 0.5}").is_err(), "typos are rejected");
        let cells = m.cells();
        assert_eq!(cells.len(), Metrics::COLUMNS.len());
        assert_eq!((cells[1].as_str(), cells[5].as_str()), ("-", "0.5000"));
    }
}
