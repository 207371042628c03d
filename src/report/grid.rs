//! Image grids: many CHW [0,1] images tiled into one, for TensorBoard, `--grid` files and
//! the HTML report.

/// A CHW image with its size.
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub chw: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

/// Tile `images` (all `h`×`w`, CHW, concatenated or given one by one) row by row, `cols` per
/// row, with `pad` pixels of white between and around them.
pub fn grid(images: &[&[f32]], h: usize, w: usize, cols: usize, pad: usize) -> Image {
    let cols = cols.max(1).min(images.len().max(1));
    let rows = images.len().div_ceil(cols).max(1);
    let (gh, gw) = (rows * h + (rows + 1) * pad, cols * w + (cols + 1) * pad);
    let mut chw = vec![1.0f32; 3 * gh * gw];
    for (k, img) in images.iter().enumerate() {
        assert_eq!(img.len(), 3 * h * w, "grid: image {k} has {} values, expected 3×{h}×{w}", img.len());
        let (oy, ox) = (pad + (k / cols) * (h + pad), pad + (k % cols) * (w + pad));
        for c in 0..3 {
            for y in 0..h {
                let src = &img[c * h * w + y * w..c * h * w + (y + 1) * w];
                let dst = c * gh * gw + (oy + y) * gw + ox;
                chw[dst..dst + w].copy_from_slice(src);
            }
        }
    }
    Image { chw, h: gh, w: gw }
}

/// Split `[N, 3, h, w]` data into per-image slices.
pub fn items(data: &[f32], h: usize, w: usize) -> Vec<&[f32]> {
    data.chunks_exact(3 * h * w).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn tiles_row_major_with_padding() {
        let (h, w) = (2, 3);
        let a = vec![0.0; 3 * h * w];
        let b = vec![0.5; 3 * h * w];
        let c = vec![0.25; 3 * h * w];
        let g = grid(&[&a, &b, &c], h, w, 2, 1);
        assert_eq!((g.h, g.w), (2 * 2 + 3, 2 * 3 + 3));
        let at = |ch: usize, y: usize, x: usize| g.chw[ch * g.h * g.w + y * g.w + x];
        assert_eq!(at(0, 0, 0), 1.0, "padding is white");
        assert_eq!(at(1, 1, 1), 0.0, "first image at the top left");
        assert_eq!(at(2, 1, 5), 0.5, "second to its right");
        assert_eq!(at(0, 4, 1), 0.25, "third on the next row");
        assert_eq!(at(0, 4, 5), 1.0, "empty cell stays white");
    }
}
