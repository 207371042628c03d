//! PIL's bilinear resize of 8-bit RGB, bit for bit (Pillow's `Resample.c`): what
//! torchvision's `Resize` does to the PIL images of `ImageFolder`. A generic triangle filter
//! (the `image` crate's) rounds differently and orders its passes the other way; on photos
//! resized 500×375 → 341×256 that moved AlexNet's fc6 codes by 0.3–0.5 % (relative L2)
//! from PyTorch's, where this matches them exactly.
//!
//! The filter is a triangle whose support widens by the scale when downscaling
//! (antialiasing). Weights are normalized per output pixel, turned into fixed point with 22
//! fractional bits, and one pass runs into an 8-bit image before the other, as Pillow does:
//! the horizontal pass first, unless the height shrinks by more than twice as many pixels as
//! the width (Pillow 13's order, python-pillow/Pillow#9549; Pillow 12 and before always ran
//! the horizontal pass first, so on such images, tall photos under `Resize(256)` among them,
//! they differ from Pillow 13 by a level in some pixels).
use image::RgbImage;

/// Fractional bits of the fixed-point weights (Pillow: `32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// For each output position: the first input index, and fixed-point weights of the inputs
/// from there on (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support is 1
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's `(int)` truncates toward zero, then clamps.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| (1.0 - ((x as f64 - center + 0.5) / filterscale).abs()).max(0.0)).collect();
            let total: f64 = w.iter().sum();
            let fixed = w
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    // The triangle's weights are never negative: round half up.
                    (0.5 + k * (1u32 << PRECISION_BITS) as f64) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

/// Σ pixel·weight in fixed point, rounded and clamped to a byte.
#[inline]
fn weighted(pixels: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let sum = pixels.zip(weights).fold(1i32 << (PRECISION_BITS - 1), |s, (p, &k)| s + p as i32 * k);
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize to `width`×`height` like `PIL.Image.resize((width, height), Image.BILINEAR)`.
pub fn pil_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (img.width() as i64, img.height() as i64);
    // Pillow's `ImagingResampleInner`: vertical first when the height loses more than twice
    // the pixels the width does (the horizontal pass then has fewer rows to do).
    let vertical_first = h - height as i64 > 0 && h - height as i64 > (w - width as i64) * 2;
    let (need_h, need_v) = (width != img.width(), height != img.height());
    match (need_h, need_v) {
        (true, true) if vertical_first => horizontal_pass(&vertical_pass(img, height), width),
        (true, true) => vertical_pass(&horizontal_pass(img, width), height),
        (true, false) => horizontal_pass(img, width),
        (false, true) => vertical_pass(img, height),
        (false, false) => img.clone(),
    }
}

/// Resamples each row to `width` pixels.
fn horizontal_pass(img: &RgbImage, width: u32) -> RgbImage {
    let (w, h, nw) = (img.width() as usize, img.height() as usize, width as usize);
    let coeffs = coefficients(w, nw);
    let mut out = vec![0u8; nw * h * 3];
    for (y, row) in img.as_raw().chunks_exact(w * 3).enumerate() {
        for (x, (first, k)) in coeffs.iter().enumerate() {
            for c in 0..3 {
                out[(y * nw + x) * 3 + c] = weighted((*first..first + k.len()).map(|i| row[i * 3 + c]), k);
            }
        }
    }
    RgbImage::from_raw(width, h as u32, out).expect("buffer sized for the image")
}

/// Resamples each column to `height` pixels.
fn vertical_pass(img: &RgbImage, height: u32) -> RgbImage {
    let (w, h, nh) = (img.width() as usize, img.height() as usize, height as usize);
    let (coeffs, src, stride) = (coefficients(h, nh), img.as_raw(), w * 3);
    let mut out = vec![0u8; stride * nh];
    for (y, (first, k)) in coeffs.iter().enumerate() {
        for i in 0..stride {
            out[y * stride + i] = weighted((*first..first + k.len()).map(|r| src[r * stride + i]), k);
        }
    }
    RgbImage::from_raw(w as u32, height, out).expect("buffer sized for the image")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    const PIL_DOWN_RED: [u8; 6] = [33, 97, 161, 47, 111, 175];
    const PIL_DOWN_BLUE: [u8; 6] = [224, 147, 70, 224, 147, 70];
    #[rustfmt::skip]
    const PIL_UP_GREEN: [u8; 80] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 22, 22, 22, 22, 22, 22, 22, 22, 22, 22, 53, 53, 53, 53, 53, 53, 53, 53, 53, 53, 84, 84, 84, 84, 84, 84, 84, 84, 84, 84, 116, 116, 116, 116, 116, 116, 116, 116, 116, 116, 147, 147, 147, 147, 147, 147, 147, 147, 147, 147, 178, 178, 178, 178, 178, 178, 178, 178, 178, 178, 200, 200, 200, 200, 200, 200, 200, 200, 200, 200];
    #[rustfmt::skip]
    const PIL_UP_RED: [u8; 80] = [0, 16, 38, 59, 80, 100, 121, 143, 164, 180, 3, 19, 41, 62, 83, 103, 124, 146, 167, 183, 7, 23, 45, 66, 87, 107, 128, 150, 171, 187, 12, 28, 50, 71, 92, 112, 133, 155, 176, 192, 16, 32, 54, 75, 96, 116, 137, 159, 180, 196, 21, 37, 59, 80, 101, 121, 142, 164, 185, 201, 25, 41, 63, 84, 105, 125, 146, 168, 189, 205, 28, 44, 66, 87, 108, 128, 149, 171, 192, 208];

    /// Values from Pillow 13 (`Image.fromarray(a).resize((w, h), Image.BILINEAR)`) for the
    /// 7×5 ramp below: a downscale to 3×2 and an upscale to 10×8, both axes.
    #[test]
    fn matches_pillow_on_a_ramp() {
        let img = RgbImage::from_fn(7, 5, |x, y| Rgb([(x * 30 + y * 7) as u8, (y * 50) as u8, (255 - x * 36) as u8]));
        let down = pil_bilinear(&img, 3, 2);
        let red: Vec<u8> = down.pixels().map(|p| p[0]).collect();
        let blue: Vec<u8> = down.pixels().map(|p| p[2]).collect();
        assert_eq!(red, PIL_DOWN_RED, "downscale, red");
        assert_eq!(blue, PIL_DOWN_BLUE, "downscale, blue");
        let up = pil_bilinear(&img, 10, 8);
        let green: Vec<u8> = up.pixels().map(|p| p[1]).collect();
        let red: Vec<u8> = up.pixels().map(|p| p[0]).collect();
        assert_eq!(green, PIL_UP_GREEN, "upscale, green");
        assert_eq!(red, PIL_UP_RED, "upscale, red");
    }

    #[rustfmt::skip]
    const PIL13_TALL_RED: [u8; 56] = [21, 37, 70, 119, 158, 122, 128, 132, 61, 87, 129, 163, 109, 110, 120, 102, 105, 141, 169, 116, 102, 152, 110, 140, 149, 174, 115, 90, 163, 124, 148, 105, 186, 150, 71, 140, 122, 141, 107, 148, 184, 63, 136, 131, 110, 110, 151, 103, 64, 101, 146, 115, 150, 142, 129, 176];
    #[rustfmt::skip]
    const PIL13_TALL_BLUE: [u8; 56] = [215, 173, 107, 65, 132, 141, 95, 166, 123, 48, 75, 135, 143, 95, 145, 119, 51, 87, 140, 146, 92, 145, 112, 154, 95, 143, 175, 123, 126, 134, 143, 127, 140, 170, 110, 109, 117, 113, 146, 155, 173, 140, 82, 156, 135, 143, 130, 139, 187, 55, 142, 145, 133, 115, 141, 135];

    /// Pillow 13 runs the vertical pass first where the height shrinks by more than twice the
    /// pixels the width does: 9×23 → 8×7 (values from Pillow 13.0.0, `Image.fromarray(a)
    /// .resize((8, 7), Image.BILINEAR)` of the pattern below; horizontal first, 31 of its 168
    /// values differ).
    #[test]
    fn matches_pillow_13_where_it_resizes_vertically_first() {
        let img = RgbImage::from_fn(9, 23, |x, y| Rgb([0, 1, 2].map(|c| ((x * x * 7 + y * 13 + c * 101 + x * y * 3) % 256) as u8)));
        let out = pil_bilinear(&img, 8, 7);
        let red: Vec<u8> = out.pixels().map(|p| p[0]).collect();
        let blue: Vec<u8> = out.pixels().map(|p| p[2]).collect();
        assert_eq!((red.as_slice(), blue.as_slice()), (PIL13_TALL_RED.as_slice(), PIL13_TALL_BLUE.as_slice()));
        assert_ne!(vertical_pass(&horizontal_pass(&img, 8), 7), out, "the order matters here");
    }

    #[test]
    fn same_size_is_unchanged_and_constant_stays_constant() {
        let img = RgbImage::from_fn(5, 4, |x, y| Rgb([x as u8, y as u8, 9]));
        assert_eq!(pil_bilinear(&img, 5, 4), img);
        let flat = RgbImage::from_pixel(37, 23, Rgb([201, 3, 77]));
        for (w, h) in [(11, 7), (80, 61), (37, 5), (1, 1)] {
            let r = pil_bilinear(&flat, w, h);
            assert_eq!(r.dimensions(), (w, h));
            assert!(r.pixels().all(|p| *p == Rgb([201, 3, 77])), "{w}x{h}");
        }
    }
}
