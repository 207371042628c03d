//! preimage patch: 2-D transposed convolution (forward, input gradient, weight gradient) and
//! the 2-D convolution weight gradient as whole-batch GEMMs.
//!
//! Upstream computes a transposed convolution with one small GEMM per image, one image after
//! another, and its gradients through generic convolutions on swapped dimensions (the weight
//! gradient becomes a convolution whose kernel is the whole input image). Here each op is a
//! gather or scatter between an image tensor and a column matrix `[C·KH·KW, positions]` plus
//! GEMMs:
//!
//! - transposed conv forward: `cols = Wᵀ · Xᵀ` over the whole batch (`Xᵀ` is `[C, B·H·W]`, one
//!   GEMM that `gemm` spreads over all cores), then `scatter_add(cols)` into the output;
//! - its input gradient:      `dX[b, :, span] = W · gather(G)` per tile;
//! - its weight gradient:     `dW += X[b, :, band] · gather(G)ᵀ` per tile;
//! - conv weight gradient:    `dW += G[b, :, band] · gather(X)ᵀ` per tile.
//!
//! A tile is one image's band of grid rows (for the products with `W`, a span of grid positions
//! in multiples of 16) whose gathered block fits [`TILE_BUDGET`], so the GEMM reads it from
//! cache, or several whole images when an image's block is small (a 4×4 grid is 16 columns);
//! tiles run in parallel (partial sums for weight gradients). Large weight gradients over a
//! short sum (small grids, [`weight_grad_by_columns`]) are split by columns of `dW` instead.
//! Short grid rows are gathered through a table of window offsets ([`window_table`]), and for
//! weight gradients transposed ([`gather_transposed`]), the layout `gemm` reads without packing.
//! `gather` reads the window positions `in·stride + k·dilation − padding` of a grid, which is
//! both the transposed convolution's output position and the convolution's input position. The
//! forward pass takes the batch in chunks so its column matrix stays under [`COLUMN_BUDGET`].
//! Checked against the definition in preimage's `tests/flex_patch.rs`.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::{ConvOptions, ConvTransposeOptions};
use burn_backend::ops::conv::{calculate_conv_output_size, calculate_conv_transpose_output_size};
use burn_std::{Bytes, Shape, f16};
use core::mem::MaybeUninit;
use core::ops::{Add, Range};

use crate::{FlexTensor, Layout};

/// Largest column matrix built at once (elements); larger batches are processed in chunks.
const COLUMN_BUDGET: usize = 16 << 20;

/// Gathered column block per tile in the tiled gradients (elements; 1 MiB of f32).
const TILE_BUDGET: usize = 256 << 10;

/// Weight gradients (per group) of at least this many elements summed over at most
/// [`SHORT_SUM`] positions (batch × grid) are computed by columns ([`weight_grad_by_columns`]);
/// the others with partial sums over tiles of the batch. With a short sum, [`PARTS`] tiles
/// leave each GEMM a few dozen terms to add into a large partial sum: 256×128×4×4 from a 4×4
/// grid at batch 32 took 10.6 ms that way and takes 3.0 ms by columns; at 8×8 both take
/// 3.8 ms, at 16×16 the tiles are faster (5.8 against 6.2 ms).
const SPLIT_COLUMNS: usize = 16 << 10;
const SHORT_SUM: usize = 4096;

/// Columns of dW per task in [`weight_grad_by_columns`].
const COLUMN_CHUNK: usize = 256;

/// Largest weight (elements) whose gradient [`conv_transpose2d_backward`] sums over tiles when
/// the sum is short: the decoder's second up-convolution (128·64·4·4, 8×8 grid, batch 32) gathers
/// less that way than by columns plus the input gradient's own gather (the gathers and `gemm`'s
/// packing 0.34 → 0.26 of the GEMM kernel's samples); the first (256·128·4·4 on 4×4) more
/// (its partial sums: packing alone 0.34 of the kernel's samples).
const SHARED_MAX_WEIGHT: usize = 128 << 10;

/// Partial sums of a tiled weight gradient (fixed, so the summation order is too).
const PARTS: usize = 8;

pub(crate) trait GemmElem: bytemuck::Pod + Send + Sync + 'static + Add<Output = Self> + burn_backend::Element {
    const ZERO: Self;
    const ONE: Self;
}
impl GemmElem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmElem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
}
impl GemmElem for f16 {
    const ZERO: Self = f16::ZERO;
    const ONE: Self = f16::ONE;
}

/// Window geometry along one axis: grid position `i` and kernel tap `k` meet at
/// `i·stride + k·dilation − padding` on the other side, which must lie in `0..other`.
#[derive(Clone, Copy)]
pub(crate) struct Axis {
    pub(crate) grid: usize,
    pub(crate) other: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) dilation: usize,
    pub(crate) padding: usize,
}

impl Axis {
    /// Grid positions whose tap `k` lands inside `0..other`.
    pub(crate) fn valid(&self, k: usize) -> Range<usize> {
        let off = k * self.dilation;
        let lo = if self.padding > off { (self.padding - off).div_ceil(self.stride) } else { 0 };
        let hi = if self.other + self.padding > off {
            (self.other + self.padding - off).div_ceil(self.stride).min(self.grid)
        } else {
            0
        };
        lo..hi.max(lo)
    }

    /// Position on the other side for grid position `i` (in `valid(k)`) and tap `k`.
    #[inline(always)]
    pub(crate) fn at(&self, i: usize, k: usize) -> usize {
        i * self.stride + k * self.dilation - self.padding
    }
}

/// A tile of the grid: the positions `ps` (`y·grid + x`, rows may be partial) of each image in
/// `images`; several images only when one image's block is small, and then `ps` is the whole
/// grid, so that the GEMMs on small grids (a 4×4 code grid is 16 columns an image) are not
/// 16 columns wide.
#[derive(Clone)]
struct Tile {
    images: Range<usize>,
    ps: Range<usize>,
}

impl Tile {
    /// Columns of the tile's block: its positions, image after image.
    fn width(&self) -> usize {
        self.images.len() * self.ps.len()
    }
}

/// The column block of a tile for the channels `chans`:
/// `cols[(c, ky, kx), (i, p)] = src[images.start + i, chans.start + c, y·s + ky·d − p, x·s + kx·d − p]` for
/// `p = y·grid + x` in `ps` (0 outside); `src` is `[B, C, ya.other, xa.other]`. Tiles run in
/// parallel, so one tile's gather does not.
fn gather<T: GemmElem>(src: &[T], channels: usize, chans: Range<usize>, ya: Axis, xa: Axis, t: &Tile) -> Vec<T> {
    let (w, stride, k, plane) = (t.ps.len(), t.width(), ya.kernel * xa.kernel, ya.other * xa.other);
    let padded = padded_rows(&ya, &xa, &t.ps);
    let doubled = doubling(&ya) && doubling(&xa) && xa.grid >= 8;
    let table = (short_rows(&xa) && !padded && !doubled).then(|| window_table(ya, xa, t.ps.clone()));
    // Channel `c`'s rows of the block: `k` rows, `stride` apart.
    let channel = |c: usize, rows: &mut [MaybeUninit<T>]| {
        let mut pad = Vec::new();
        for (i, b) in t.images.clone().enumerate() {
            let src = &src[(b * channels + chans.start + c) * plane..][..plane];
            let dst = &mut rows[i * w..];
            match &table {
                _ if doubled => gather_doubled(src, ya, xa, t.ps.clone(), dst, stride),
                _ if padded => gather_padded(src, &mut pad, ya, xa, t.ps.clone(), dst, stride),
                Some(table) => gather_table(src, table, w, dst, stride),
                None => gather_span(src, ya, xa, t.ps.clone(), dst, stride),
            }
        }
    };
    per_group(chans.len(), k * stride, channel)
}

/// [`gather`] transposed, `[(i, p), (c, ky, kx)]`, for short grid rows (`None` for the others):
/// the right operand of a weight gradient, which `gemm` reads best with its columns (here the
/// taps) contiguous; from the `[(c, ky, kx), (i, p)]` block it packed a transposed copy for
/// every product (27 % of the 8×8 up-convolution's weight gradient).
fn gather_transposed<T: GemmElem>(src: &[T], channels: usize, chans: Range<usize>, ya: Axis, xa: Axis, t: &Tile) -> Option<Vec<T>> {
    if !short_rows(&xa) || xa.dilation != 1 {
        return None;
    }
    let (w, kh, kw, plane) = (t.ps.len(), ya.kernel, xa.kernel, ya.other * xa.other);
    // Per position: the taps `kx` inside the plane (a run of neighbours, x is not dilated),
    // where the run starts in the plane's row, and each kernel row's offset (or `usize::MAX`).
    let runs: Vec<(Range<usize>, usize)> = t.ps.clone().map(|p| {
        let x = p % xa.grid;
        let inside = |kx: &usize| xa.valid(*kx).contains(&x);
        match (0..kw).find(inside) {
            Some(lo) => (lo..lo + (lo..kw).take_while(inside).count(), xa.at(x, lo)),
            None => (0..0, 0),
        }
    }).collect();
    let row_at: Vec<usize> = t.ps.clone().flat_map(|p| (0..kh).map(move |ky| (p / xa.grid, ky))).map(|(y, ky)| {
        if ya.valid(ky).contains(&y) { ya.at(y, ky) * xa.other } else { usize::MAX }
    }).collect();
    let rows = chans.len() * kh * kw;
    let len = t.width() * rows;
    let mut cols = Vec::with_capacity(len);
    for (row, col) in cols.spare_capacity_mut()[..len].chunks_exact_mut(rows.max(1)).enumerate() {
        let (b, j) = (t.images.start + row / w.max(1), row % w.max(1));
        let ((xs, x0), at) = (runs[j].clone(), &row_at[j * kh..][..kh]);
        // A window wholly inside the plane with rows of 4 taps (the decoders' 4×4 kernels, all
        // but the border positions): its rows are copied as arrays, with no per-row checks.
        if kw == 4 && xs == (0..4) && !at.contains(&usize::MAX) {
            let base = b * channels * plane + x0;
            for (c, taps) in chans.clone().zip(col.chunks_exact_mut(kh * 4)) {
                let src = &src[base + c * plane..];
                for (&r, out) in at.iter().zip(taps.chunks_exact_mut(4)) {
                    let out: &mut [MaybeUninit<T>; 4] = out.try_into().expect("4 taps");
                    let from: &[T; 4] = src[r..r + 4].try_into().expect("4 taps");
                    *out = from.map(MaybeUninit::new);
                }
            }
            continue;
        }
        for (c, taps) in chans.clone().zip(col.chunks_exact_mut(kh * kw)) {
            let src = &src[(b * channels + c) * plane..][..plane];
            for (&r, out) in at.iter().zip(taps.chunks_exact_mut(kw)) {
                if r == usize::MAX || xs.is_empty() {
                    out.iter_mut().for_each(|d| {
                        d.write(T::ZERO);
                    });
                    continue;
                }
                let (head, rest) = out.split_at_mut(xs.start);
                let (mid, tail) = rest.split_at_mut(xs.len());
                head.iter_mut().chain(tail).for_each(|d| {
                    d.write(T::ZERO);
                });
                let from = &src[r + x0..][..xs.len()];
                // A whole run of 4 (the decoders' 4×4 kernels) as one move: the loop below
                // becomes a `memmove` call per run, which cost more than the copy.
                if let (Ok(d), Ok(s)) = (<&mut [MaybeUninit<T>; 4]>::try_from(&mut *mid), <&[T; 4]>::try_from(from)) {
                    *d = s.map(MaybeUninit::new);
                    continue;
                }
                for (d, s) in mid.iter_mut().zip(from) {
                    d.write(*s);
                }
            }
        }
    }
    // SAFETY: every row of every column was written.
    unsafe { cols.set_len(len) };
    Some(cols)
}

/// A weight gradient's gathered block as its right operand `[(i, p), (c, ky, kx)]`: from
/// [`gather_transposed`] on short rows, as it is, else [`gather`]'s block read transposed.
struct Gathered<T> {
    data: Vec<T>,
    /// Columns of the stored block (its row stride).
    stride: usize,
    transposed: bool,
}

impl<T: GemmElem> Gathered<T> {
    fn new(src: &[T], channels: usize, chans: Range<usize>, ya: Axis, xa: Axis, t: &Tile) -> Self {
        match gather_transposed(src, channels, chans.clone(), ya, xa, t) {
            Some(data) => Gathered { data, stride: chans.len() * ya.kernel * xa.kernel, transposed: false },
            None => Gathered { data: gather(src, channels, chans, ya, xa, t), stride: t.width(), transposed: true },
        }
    }
    /// The operand from gathered row `(c, ky, kx)` = `first` on.
    fn rhs(&self, first: usize) -> Mat<'_, T> {
        if self.transposed { Mat::t(&self.data[first * self.stride..], self.stride) } else { Mat::n(&self.data[first..], self.stride) }
    }
}

/// Whether grid rows are short enough to gather through a [`window_table`]: below 16
/// positions, or 32 when strided. On a 4×4 or 8×8 grid the row-wise copies of [`gather_span`]
/// move 2–8 elements per row between their bookkeeping (the gather was 41 % of the first
/// up-convolution's input gradient in the decoder step, and is 5 %; stride 2 at 8×8: 4.0 →
/// 2.7 ms, at 16×16: 4.3 → 3.9 ms); for stride 1 on 16×16 (posenet's conv2) the copies were
/// faster (1.8 against 2.4 ms).
fn short_rows(xa: &Axis) -> bool {
    xa.grid < if xa.stride == 1 { 16 } else { 32 }
}

/// For each tap `(ky, kx)` and position `p` in `ps`, the offset in a source plane it reads, or
/// `usize::MAX` in the padding: `table[(ky·kw + kx)·|ps| + j]` for position `ps.start + j`.
fn window_table(ya: Axis, xa: Axis, ps: Range<usize>) -> Vec<usize> {
    let mut table = Vec::with_capacity(ya.kernel * xa.kernel * ps.len());
    for ky in 0..ya.kernel {
        for kx in 0..xa.kernel {
            let (vy, vx) = (ya.valid(ky), xa.valid(kx));
            table.extend(ps.clone().map(|p| {
                let (y, x) = (p / xa.grid, p % xa.grid);
                if vy.contains(&y) && vx.contains(&x) { ya.at(y, ky) * xa.other + xa.at(x, kx) } else { usize::MAX }
            }));
        }
    }
    table
}

/// Whether [`gather_padded`] takes a tile's gather: short rows (see [`short_rows`]) at stride 1
/// and dilation 1 on both axes, windows within the padded plane, and whole grid rows.
fn padded_rows(ya: &Axis, xa: &Axis, ps: &Range<usize>) -> bool {
    let fits = |a: &Axis| a.stride == 1 && a.dilation == 1 && a.grid > 0 && a.grid + a.kernel - 1 <= a.other + 2 * a.padding;
    xa.grid <= 16 && fits(ya) && fits(xa) && ps.start % xa.grid == 0 && ps.end % xa.grid == 0
}

/// One source plane's rows of [`gather`] for whole grid rows `ps` at stride 1: the plane is
/// copied once into `pad` with its zero border, and then every tap's row is one copy of
/// `xa.grid` elements from it, without bounds tests. On posenet's 8×8 grids the
/// [`window_table`] gather (one tested load per element) was ~14 % of the forward pass.
fn gather_padded<T: GemmElem>(src: &[T], pad: &mut Vec<T>, ya: Axis, xa: Axis, ps: Range<usize>, dst: &mut [MaybeUninit<T>], stride: usize) {
    let (g, pw) = (xa.grid, xa.other + 2 * xa.padding);
    pad.clear();
    pad.resize((ya.other + 2 * ya.padding) * pw, T::ZERO);
    for (y, row) in src.chunks_exact(xa.other).enumerate() {
        pad[(y + ya.padding) * pw + xa.padding..][..xa.other].copy_from_slice(row);
    }
    let ys = ps.start / g..ps.end / g;
    for ky in 0..ya.kernel {
        for kx in 0..xa.kernel {
            let block = &mut dst[(ky * xa.kernel + kx) * stride..][..ys.len() * g];
            for (y, d) in ys.clone().zip(block.chunks_exact_mut(g)) {
                copy_row(d, &pad[(y + ky) * pw + kx..][..g]);
            }
        }
    }
}

/// `dst = src` for a short row; 4, 8 and 16 elements (posenet's and the decoders' small grids) as
/// fixed-size copies, which compile to a few moves instead of a call to `memmove`.
#[inline(always)]
fn copy_row<T: GemmElem>(dst: &mut [MaybeUninit<T>], src: &[T]) {
    fn fixed<T: Copy, const N: usize>(dst: &mut [MaybeUninit<T>], src: &[T]) {
        let (d, s): (&mut [MaybeUninit<T>; N], &[T; N]) = (dst.try_into().unwrap(), src.try_into().unwrap());
        // SAFETY: both are N elements (checked above) and distinct borrows. A constant-size
        // copy compiles to vector moves (element-wise writes stayed one scalar move each).
        unsafe { core::ptr::copy_nonoverlapping(s.as_ptr(), d.as_mut_ptr() as *mut T, N) };
    }
    match src.len() {
        16 => fixed::<T, 16>(dst, src),
        8 => fixed::<T, 8>(dst, src),
        4 => fixed::<T, 4>(dst, src),
        _ => dst.iter_mut().zip(src).for_each(|(d, s)| {
            d.write(*s);
        }),
    }
}

/// One source plane's rows of [`gather`] through a [`window_table`] of `width` positions (tap
/// `t`'s row to `dst[t·stride..]`): one indexed load per element.
fn gather_table<T: GemmElem>(src: &[T], table: &[usize], width: usize, dst: &mut [MaybeUninit<T>], stride: usize) {
    for (tap, at) in table.chunks_exact(width.max(1)).enumerate() {
        for (d, &i) in dst[tap * stride..][..width].iter_mut().zip(at) {
            d.write(src.get(i).copied().unwrap_or(T::ZERO));
        }
    }
}

/// One source plane's rows of [`gather`] for the grid positions `ps` (rows may be partial),
/// row-wise copies for long grid rows: tap `t`'s row to `dst[t·stride..][..ps.len()]`.
fn gather_span<T: GemmElem>(src_plane: &[T], ya: Axis, xa: Axis, ps: Range<usize>, dst: &mut [MaybeUninit<T>], stride: usize) {
    let width = ps.len();
    let ys = ps.start / xa.grid.max(1)..ps.end.div_ceil(xa.grid.max(1));
    if width == 0 {
        return;
    }
    if xa.stride == 1 && xa.grid > 0 && ps.start % xa.grid == 0 && ps.end % xa.grid == 0 {
        return gather_rows(src_plane, dst, stride, ya, xa, ys);
    }
    for tap in 0..ya.kernel * xa.kernel {
        let row = &mut dst[tap * stride..][..width];
        let (ky, kx) = (tap / xa.kernel, tap % xa.kernel);
        let (valid_y, valid_x) = (ya.valid(ky), xa.valid(kx));
        let mut rest_row = row;
        for y in ys.clone() {
            // This row's part of the span, as x positions.
            let x0 = ps.start.max(y * xa.grid) - y * xa.grid;
            let x1 = ps.end.min((y + 1) * xa.grid) - y * xa.grid;
            let (dst, after) = rest_row.split_at_mut(x1 - x0);
            rest_row = after;
            let xs = if valid_y.contains(&y) { valid_x.start.clamp(x0, x1)..valid_x.end.clamp(x0, x1) } else { x0..x0 };
            let (head, rest) = dst.split_at_mut(if xs.is_empty() { x1 - x0 } else { xs.start - x0 });
            let (mid, tail) = rest.split_at_mut(xs.len());
            head.iter_mut().chain(tail).for_each(|d| {
                d.write(T::ZERO);
            });
            if mid.is_empty() {
                continue;
            }
            copy_strided(mid, &src_plane[ya.at(y, ky) * xa.other + xa.at(xs.start, kx)..], xa.stride);
        }
    }
}

/// `dst[i] = from[i·s]`, for a non-empty `dst`. Whole strides rather than `step_by`: vector
/// loads and a de-interleaving shuffle (the decoders' stride-2 gradients and AlexNet's stride-4
/// conv1), which LLVM emits only for a constant stride, hence 1, 2 and 4 spelled out; the last
/// position's stride may run past the row.
#[inline(always)]
fn copy_strided<T: GemmElem>(dst: &mut [MaybeUninit<T>], from: &[T], s: usize) {
    let (last, body) = dst.split_last_mut().expect("dst is not empty");
    match s {
        1 => body.iter_mut().zip(from).for_each(|(d, v)| {
            d.write(*v);
        }),
        2 => body.iter_mut().zip(from.chunks_exact(2)).for_each(|(d, pair)| {
            d.write(pair[0]);
        }),
        4 => body.iter_mut().zip(from.chunks_exact(4)).for_each(|(d, quad)| {
            d.write(quad[0]);
        }),
        _ => body.iter_mut().zip(from.chunks_exact(s)).for_each(|(d, run)| {
            d.write(run[0]);
        }),
    }
    last.write(from[s * body.len()]);
}

/// One source plane's rows of [`gather`] when both axes are [`doubling`] (the decoders'
/// up-convolutions and their input gradients): the taps of a grid row all read two source
/// rows per `ky`, tap `kx` at `x` the element `2x + kx − 1`, so each tap row is one stride-2
/// copy whose valid columns are known (`kx` = 0 misses `x` = 0, `kx` = 3 the last `x`),
/// without a [`window_table`]'s tested load per element.
fn gather_doubled<T: GemmElem>(src_plane: &[T], ya: Axis, xa: Axis, ps: Range<usize>, dst: &mut [MaybeUninit<T>], stride: usize) {
    let g = xa.grid;
    for y in ps.start / g..ps.end.div_ceil(g) {
        // This row's part of the tile, as x positions, and where it starts in the block.
        let xs = ps.start.max(y * g) - y * g..ps.end.min((y + 1) * g) - y * g;
        let at = y * g + xs.start - ps.start;
        for ky in 0..4 {
            let source = (2 * y + ky).checked_sub(1).filter(|&r| r < ya.other);
            for kx in 0..4 {
                let d = &mut dst[(ky * 4 + kx) * stride + at..][..xs.len()];
                let lo = if kx == 0 { xs.start.max(1) } else { xs.start };
                let hi = if kx == 3 { xs.end.min(g - 1) } else { xs.end };
                let (Some(r), true) = (source, lo < hi) else {
                    d.iter_mut().for_each(|v| {
                        v.write(T::ZERO);
                    });
                    continue;
                };
                let (head, rest) = d.split_at_mut(lo - xs.start);
                let (mid, tail) = rest.split_at_mut(hi - lo);
                head.iter_mut().chain(tail).for_each(|v| {
                    v.write(T::ZERO);
                });
                copy_strided(mid, &src_plane[r * xa.other + 2 * lo + kx - 1..], 2);
            }
        }
    }
}

/// [`gather_span`] for stride 1 along x and a span of whole grid rows `ys`: a tap's valid
/// columns are the same on every row, so each row is zeros, one copy, zeros, without the
/// partial-row bookkeeping.
fn gather_rows<T: GemmElem>(src_plane: &[T], cols: &mut [MaybeUninit<T>], stride: usize, ya: Axis, xa: Axis, ys: Range<usize>) {
    let g = xa.grid;
    let width = ys.len() * g;
    for tap in 0..ya.kernel * xa.kernel {
        let block = &mut cols[tap * stride..][..width];
        let (ky, kx) = (tap / xa.kernel, tap % xa.kernel);
        let (valid_y, xs) = (ya.valid(ky), xa.valid(kx));
        for (y, dst) in ys.clone().zip(block.chunks_exact_mut(g)) {
            if !valid_y.contains(&y) || xs.is_empty() {
                dst.iter_mut().for_each(|d| {
                    d.write(T::ZERO);
                });
                continue;
            }
            let line = &src_plane[ya.at(y, ky) * xa.other + xa.at(xs.start, kx)..][..xs.len()];
            let (head, rest) = dst.split_at_mut(xs.start);
            let (mid, tail) = rest.split_at_mut(xs.len());
            head.iter_mut().chain(tail).for_each(|d| {
                d.write(T::ZERO);
            });
            mid.iter_mut().zip(line).for_each(|(d, s)| {
                d.write(*s);
            });
        }
    }
}

/// A `len`-element vector whose chunks of `size` are written by `f(index, chunk)` (in parallel
/// where rayon is on); `f` must write every element of its chunk.
fn filled<T: GemmElem, F: Fn(usize, &mut [MaybeUninit<T>]) + Send + Sync>(len: usize, size: usize, f: F) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    for_each_chunk(&mut v.spare_capacity_mut()[..len], size, len, f);
    // SAFETY: `f` initialized all `len` elements.
    unsafe { v.set_len(len) };
    v
}

/// The adjoint of [`gather_band`] over whole images: adds `cols` into `dst` (`[B, C, ya.other, xa.other]`).
fn scatter_add<T: GemmElem>(dst: &mut [T], cols: &[T], channels: usize, ya: Axis, xa: Axis, b0: usize, nb: usize) {
    let grid = ya.grid * xa.grid;
    let n = nb * grid;
    let plane = ya.other * xa.other;
    let k = ya.kernel * xa.kernel;
    let dst = &mut dst[b0 * channels * plane..(b0 + nb) * channels * plane];
    // Stride 2, dilation 1 (the decoders' up-convolutions): taps kx and kx + 1 land on
    // neighbouring output columns, so they are added as pairs, a full interleaved store
    // that vectorizes, instead of two half-strided passes.
    let paired = xa.stride == 2 && xa.dilation == 1;
    let doubled = doubling(&ya) && doubling(&xa);
    let work = dst.len() * k;
    for_each_chunk(dst, plane, work, |i, out| {
        let (b, c) = (i / channels, i % channels);
        let row_of = |ky: usize, kx: usize| &cols[(c * k + ky * xa.kernel + kx) * n + b * grid..][..grid];
        if doubled {
            add_doubled(out, row_of, ya.grid, xa.grid);
            return;
        }
        for ky in 0..ya.kernel {
            let mut kx = 0;
            while kx < xa.kernel {
                if paired && kx + 1 < xa.kernel {
                    let (ra, rb) = (row_of(ky, kx), row_of(ky, kx + 1));
                    let (xa_, xb) = (xa.valid(kx), xa.valid(kx + 1));
                    let both = xa_.start.max(xb.start)..xa_.end.min(xb.end);
                    for y in ya.valid(ky) {
                        let out_row = &mut out[ya.at(y, ky) * xa.other..][..xa.other];
                        let (ra, rb) = (&ra[y * xa.grid..][..xa.grid], &rb[y * xa.grid..][..xa.grid]);
                        if both.is_empty() {
                            add_strided(out_row, ra, &xa, kx, xa_.clone());
                            add_strided(out_row, rb, &xa, kx + 1, xb.clone());
                            continue;
                        }
                        add_strided(out_row, ra, &xa, kx, xa_.start..both.start);
                        add_strided(out_row, ra, &xa, kx, both.end..xa_.end.max(both.end));
                        add_strided(out_row, rb, &xa, kx + 1, xb.start..both.start);
                        add_strided(out_row, rb, &xa, kx + 1, both.end..xb.end.max(both.end));
                        let pairs = &mut out_row[xa.at(both.start, kx)..][..2 * both.len()];
                        let (va, vb) = (&ra[both.clone()], &rb[both.clone()]);
                        for (j, o) in pairs.chunks_exact_mut(2).enumerate() {
                            o[0] = o[0] + va[j];
                            o[1] = o[1] + vb[j];
                        }
                    }
                    kx += 2;
                    continue;
                }
                let row = row_of(ky, kx);
                let xs = xa.valid(kx);
                if !xs.is_empty() {
                    for y in ya.valid(ky) {
                        add_strided(&mut out[ya.at(y, ky) * xa.other..][..xa.other], &row[y * xa.grid..][..xa.grid], &xa, kx, xs.clone());
                    }
                }
                kx += 1;
            }
        }
    });
}

/// The decoders' up-convolution on this axis: kernel 4, stride 2, padding 1, dilation 1, the
/// output twice the grid. Each output position then takes exactly the taps of its parity
/// (`2m` from taps 1 at `m` and 3 at `m − 1`, `2m + 1` from taps 2 at `m` and 0 at `m + 1`).
fn doubling(a: &Axis) -> bool {
    a.kernel == 4 && a.stride == 2 && a.padding == 1 && a.dilation == 1 && a.grid > 0 && a.other == 2 * a.grid
}

/// [`scatter_add`] of one `[2h, 2w]` plane when both axes are [`doubling`]: each output row is
/// summed from the rows of its two vertical taps, each giving its even and odd columns from
/// two horizontal taps, in one pass of pairs. The general loop spent its time on range
/// arithmetic at rows of 4–16 grid columns: 42 % of the first up-convolution's forward
/// (4×4 → 8×8) was scatter. preimage patch.
fn add_doubled<'a, T: GemmElem>(out: &mut [T], row_of: impl Fn(usize, usize) -> &'a [T], h: usize, w: usize) {
    for oy in 0..2 * h {
        let (m, odd) = (oy / 2, oy % 2 == 1);
        let taps = if odd { [(2, Some(m)), (0, (m + 1 < h).then_some(m + 1))] } else { [(1, Some(m)), (3, m.checked_sub(1))] };
        let out_row = &mut out[oy * 2 * w..][..2 * w];
        for (ky, iy) in taps {
            let Some(iy) = iy else { continue };
            let r = |kx: usize| &row_of(ky, kx)[iy * w..][..w];
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            out_row[0] = out_row[0] + r1[0];
            out_row[2 * w - 1] = out_row[2 * w - 1] + r2[w - 1];
            // Columns 2l + 1 and 2l + 2 for l < w − 1.
            for (l, o) in out_row[1..2 * w - 1].chunks_exact_mut(2).enumerate() {
                o[0] = o[0] + (r2[l] + r0[l + 1]);
                o[1] = o[1] + (r1[l + 1] + r3[l]);
            }
        }
    }
}

/// `out[xa.at(x, kx)] += row[x]` for the grid columns `xs` (all in `xa.valid(kx)`).
#[inline]
fn add_strided<T: GemmElem>(out: &mut [T], row: &[T], xa: &Axis, kx: usize, xs: Range<usize>) {
    if xs.is_empty() {
        return;
    }
    if xa.stride == 1 {
        // A plain zip vectorizes; `step_by(1)` does not (the convolutions' input gradients).
        for (o, v) in out[xa.at(xs.start, kx)..][..xs.len()].iter_mut().zip(&row[xs]) {
            *o = *o + *v;
        }
        return;
    }
    let out_row = out[xa.at(xs.start, kx)..].iter_mut().step_by(xa.stride);
    for (o, v) in out_row.zip(&row[xs]) {
        *o = *o + *v;
    }
}

/// `[B, C, HW]` images `b0..b0+nb` → `[C, nb·HW]`.
fn to_channel_major<T: GemmElem>(src: &[T], channels: usize, hw: usize, b0: usize, nb: usize) -> Vec<T> {
    filled(channels * nb * hw, nb * hw, |c, row| {
        for b in 0..nb {
            let src = &src[((b0 + b) * channels + c) * hw..][..hw];
            for (d, s) in row[b * hw..][..hw].iter_mut().zip(src) {
                d.write(*s);
            }
        }
    })
}

/// `[B, C, HW]` → `[B·HW, C]` (each image's positions × channels), in blocks of 16 × 16.
fn to_position_major<T: GemmElem>(src: &[T], channels: usize, hw: usize) -> Vec<T> {
    let batch = src.len() / (channels * hw).max(1);
    filled(batch * hw * channels, hw * channels, |b, img| {
        let src = &src[b * channels * hw..][..channels * hw];
        for c0 in (0..channels).step_by(16) {
            for p0 in (0..hw).step_by(16) {
                for c in c0..(c0 + 16).min(channels) {
                    for p in p0..(p0 + 16).min(hw) {
                        img[p * channels + c].write(src[c * hw + p]);
                    }
                }
            }
        }
    })
}

/// Run `f(index, chunk)` over `data.chunks_mut(size)`, in parallel where rayon is on and
/// `work` (about how many element operations all the calls make) is worth it. preimage patch:
/// the threshold was on `data.len()`, which kept a single image's col2im scatter (each element
/// the sum of `k` taps) and max pooling (each output `k` taps) on one thread: at batch 1 (the
/// optimization inversion) AlexNet's conv2/conv3/conv5 scatters and both pools ran serially.
pub(crate) fn for_each_chunk<T: Send, F: Fn(usize, &mut [T]) + Send + Sync>(data: &mut [T], size: usize, work: usize, f: F) {
    if size == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if work >= super::PARALLEL_THRESHOLD / 4 && data.len() > size {
            data.par_chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
            return;
        }
    }
    data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
}

/// A matrix operand: row-major `[rows, cols]` storage, used as is or transposed.
pub(crate) struct Mat<'a, T> {
    data: &'a [T],
    /// Columns of the stored matrix (its row stride).
    stride: usize,
    transposed: bool,
}

impl<'a, T> Mat<'a, T> {
    pub(crate) fn n(data: &'a [T], stride: usize) -> Self {
        Mat { data, stride, transposed: false }
    }
    fn t(data: &'a [T], stride: usize) -> Self {
        Mat { data, stride, transposed: true }
    }
    /// (row stride, column stride) of the operand as used.
    fn strides(&self) -> (isize, isize) {
        if self.transposed { (1, self.stride as isize) } else { (self.stride as isize, 1) }
    }
}

/// `groups` consecutive blocks of `block` elements, block `i` written by `f(i, block)`, which
/// must write all of it (a GEMM that does not accumulate does).
fn per_group<T: GemmElem, F: FnMut(usize, &mut [MaybeUninit<T>])>(groups: usize, block: usize, mut f: F) -> Vec<T> {
    let mut v = Vec::with_capacity(groups * block);
    for (i, c) in v.spare_capacity_mut()[..groups * block].chunks_mut(block.max(1)).enumerate() {
        f(i, c);
    }
    // SAFETY: every block was written by `f`.
    unsafe { v.set_len(groups * block) };
    v
}

/// An initialized slice seen as a GEMM destination (only valid values are written to it).
fn as_uninit<T>(s: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has `T`'s layout, and the callers only write initialized values.
    unsafe { &mut *(s as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `c[m×n] (+)= a[m×k] · b[k×n]`, row-major `c`; accumulates into `c` when `accumulate`
/// (then `c` must be initialized).
fn matmul<T: GemmElem>(c: &mut [MaybeUninit<T>], a: Mat<T>, b: Mat<T>, m: usize, k: usize, n: usize, accumulate: bool) {
    assert!(c.len() >= m * n);
    #[cfg(feature = "rayon")]
    let parallel = m * n * k >= 48 * 48 * 48;
    #[cfg(not(feature = "rayon"))]
    let parallel = false;
    // SAFETY: `c` holds m·n elements and is not aliased.
    unsafe { gemm_into(c.as_mut_ptr() as *mut T, n, a, b, m, k, n, accumulate, parallel) }
}

/// `c[m×n] (+)= a·b` with `c`'s rows `c_rs` elements apart.
///
/// # Safety
/// `c` must be valid for writes (and reads when `accumulate`) at `i·c_rs + j` for
/// `i < m, j < n`, and no other thread may touch those elements meanwhile.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_into<T: GemmElem>(c: *mut T, c_rs: usize, a: Mat<T>, b: Mat<T>, m: usize, k: usize, n: usize, accumulate: bool, parallel: bool) {
    let fits = |mat: &Mat<T>, rows: usize, cols: usize| {
        let (r, c) = if mat.transposed { (cols, rows) } else { (rows, cols) };
        r == 0 || c == 0 || mat.data.len() >= (r - 1) * mat.stride + c
    };
    assert!(fits(&a, m, k) && fits(&b, k, n), "conv_gemm: operand out of bounds");
    let (a_rs, a_cs) = a.strides();
    let (b_rs, b_cs) = b.strides();
    #[cfg(feature = "rayon")]
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    #[cfg(not(feature = "rayon"))]
    let parallelism = {
        let _ = parallel;
        gemm::Parallelism::None
    };
    // SAFETY: operand extents checked above; the destination is the caller's promise.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            if accumulate { T::ONE } else { T::ZERO },
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A raw pointer that rayon tasks writing disjoint elements may share.
#[derive(Clone, Copy)]
pub(crate) struct Shared<T>(pub(crate) *mut T);
// SAFETY: only used for disjoint writes, see the call sites.
unsafe impl<T> Send for Shared<T> {}
unsafe impl<T> Sync for Shared<T> {}

/// Tiles of the grid: several whole images when an image's gathered block (`rows` rows) is
/// small (see [`images_per_tile`]), otherwise (image, band of grid rows) whose block stays near
/// [`TILE_BUDGET`] elements, so it is still in cache when its GEMM reads it. Bands of one image
/// are of equal height (±1 row), and a batch smaller than the thread count cuts each image
/// into a multiple of the threads: one image on two cores was 11 + 2 rows for AlexNet's conv3
/// (13 rows), one core doing 85 % of the work, and is 7 + 6 now. At least [`PARTS`] tiles
/// (whatever the thread count, so the weight gradients' summation order is fixed).
fn tiles(batch: usize, ya: Axis, xa: Axis, rows: usize) -> Vec<Tile> {
    let grid = ya.grid * xa.grid;
    if let Some(nb) = images_per_tile(batch, rows * grid, PARTS) {
        return whole_images(batch, nb, grid);
    }
    let n = cuts(batch, ya.grid, (TILE_BUDGET / (rows * xa.grid).max(1)).max(1));
    bands(batch, ya.grid, xa.grid, ya.grid.div_ceil(n).max(1))
}

/// Each image cut into bands of `band` grid rows (`rows` × `width`), the last band shorter.
fn bands(batch: usize, rows: usize, width: usize, band: usize) -> Vec<Tile> {
    (0..batch).flat_map(|b| (0..rows).step_by(band).map(move |y| Tile { images: b..b + 1, ps: y * width..(y + band).min(rows) * width })).collect()
}

/// Tiles of [`gathered_product`]: several whole images when an image's block is small,
/// otherwise each image's grid positions cut into equal spans whose length is a multiple of 16
/// (the span is the GEMM's width, which the `gemm` crate's micro-kernels take in blocks of 16:
/// bands of whole rows of a 13-wide grid left 1- and 7-column remainders), gathering near
/// [`TILE_BUDGET`] elements, balanced over the threads as in [`tiles`].
fn spans(batch: usize, positions: usize, rows: usize) -> Vec<Tile> {
    if let Some(nb) = images_per_tile(batch, rows * positions, 2 * threads()) {
        return whole_images(batch, nb, positions);
    }
    let n = cuts(batch, positions, (TILE_BUDGET / rows.max(1)).max(16));
    let len = positions.div_ceil(n).next_multiple_of(16).max(1);
    (0..batch).flat_map(|b| (0..positions).step_by(len).map(move |p| Tile { images: b..b + 1, ps: p..(p + len).min(positions) })).collect()
}

/// Images per tile when one image's gathered block (`block` elements) is at most half of
/// [`TILE_BUDGET`]: as many as fit the budget while leaving at least `min_tiles` tiles (for
/// the threads). A 4×4 grid is 16 GEMM columns an image; eight images make it 128, and the
/// GEMM packs the weights once for them instead of once per image.
fn images_per_tile(batch: usize, block: usize, min_tiles: usize) -> Option<usize> {
    (block.max(1) * 2 <= TILE_BUDGET).then(|| (TILE_BUDGET / block.max(1)).min(batch.div_ceil(min_tiles.max(1))).max(1))
}

/// Tiles of `nb` whole images (the last may have fewer).
fn whole_images(batch: usize, nb: usize, grid: usize) -> Vec<Tile> {
    (0..batch).step_by(nb).map(|b0| Tile { images: b0..(b0 + nb).min(batch), ps: 0..grid }).collect()
}

pub(crate) fn threads() -> usize {
    #[cfg(feature = "rayon")]
    return rayon::current_num_threads().max(1);
    #[cfg(not(feature = "rayon"))]
    1
}

/// How many pieces of at most `most` to cut each of `batch` images' `extent` into: at least
/// enough for every thread when the batch is smaller than the thread count, and then a
/// multiple of the threads so that they get equal shares.
fn cuts(batch: usize, extent: usize, most: usize) -> usize {
    let threads = threads();
    let batch = batch.max(1);
    let mut n = extent.div_ceil(most.max(1));
    if batch < threads {
        n = n.max(threads.div_ceil(batch)).next_multiple_of(threads / batch);
    }
    n.max(1)
}

/// Run `f` on every tile and add up the results (each a vector of `len`); `f` accumulates into
/// the vector it is given. The tiles are cut into at most [`PARTS`] fixed runs, each summed on
/// its own (in parallel where rayon is on), and the runs are added in order: the result does
/// not depend on the thread count or on scheduling, so a seed still fixes a training run.
fn sum_over<T: GemmElem, F: Fn(&mut Vec<T>, &Tile) + Send + Sync>(tiles: &[Tile], len: usize, f: F) -> Vec<T> {
    let run = |part: &[Tile]| {
        let mut acc = vec![T::ZERO; len];
        part.iter().for_each(|t| f(&mut acc, t));
        acc
    };
    let parts = tiles.chunks(tiles.len().div_ceil(PARTS).max(1));
    #[cfg(feature = "rayon")]
    let sums: Vec<Vec<T>> = {
        use rayon::prelude::*;
        parts.collect::<Vec<_>>().into_par_iter().map(run).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let sums: Vec<Vec<T>> = parts.map(run).collect();
    let mut sums = sums.into_iter();
    let mut total = sums.next().unwrap_or_else(|| vec![T::ZERO; len]);
    for s in sums {
        total.iter_mut().zip(&s).for_each(|(x, y)| *x = *x + *y);
    }
    total
}

/// Run `f` on every tile, in parallel where rayon is on.
fn each_tile<F: Fn(&Tile) + Send + Sync>(tiles: &[Tile], f: F) {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        tiles.par_iter().for_each(f);
    }
    #[cfg(not(feature = "rayon"))]
    tiles.iter().for_each(f);
}

/// The weight gradient shared by both convolutions: for each group,
/// `dW[a, (c, ky, kx)] = Σ_(b, y, x) A[b, a, y, x] · gather(S)[(c, ky, kx), (b, y, x)]`, where `A`
/// (`a_channels`) lives on the grid and `S` (`s_channels`) on the other side.
/// Transposed conv: `A` = input, `S` = output gradient; conv: `A` = output gradient, `S` = input.
#[allow(clippy::too_many_arguments)]
fn weight_grad<T: GemmElem>(a: &[T], a_channels: usize, s: &[T], s_channels: usize, ya: Axis, xa: Axis, groups: usize, batch: usize) -> Vec<T> {
    let (a_g, s_g, k, grid) = (a_channels / groups, s_channels / groups, ya.kernel * xa.kernel, ya.grid * xa.grid);
    let len = a_channels * s_g * k;
    if a_g * s_g * k >= SPLIT_COLUMNS && batch * grid <= SHORT_SUM {
        return weight_grad_by_columns(a, a_channels, s, s_channels, ya, xa, groups, batch);
    }
    let tiles = tiles(batch, ya, xa, s_channels * k);
    sum_over(&tiles, len, |acc, t| {
        let cols = Gathered::new(s, s_channels, 0..s_channels, ya, xa, t);
        let width = t.width();
        // `A`'s columns for the tile: in place for one image, side by side for several.
        let (a_cm, a_at, a_stride);
        if t.images.len() == 1 {
            (a_cm, a_at, a_stride) = (None, t.images.start * a_channels * grid + t.ps.start, grid);
        } else {
            (a_cm, a_at, a_stride) = (Some(to_channel_major(a, a_channels, grid, t.images.start, t.images.len())), 0, width);
        }
        let a = a_cm.as_deref().unwrap_or(a);
        for grp in 0..groups {
            let a_tile = &a[a_at + grp * a_g * a_stride..];
            let d = &mut acc[grp * a_g * s_g * k..][..a_g * s_g * k];
            matmul(as_uninit(d), Mat::n(a_tile, a_stride), cols.rhs(grp * s_g * k), a_g, width, s_g * k, true);
        }
    })
}

/// [`weight_grad`] for large weights: each task computes whole columns of dW (the taps of
/// [`COLUMN_CHUNK`]`/k` channels of `S`) over the whole batch, so there are no partial sums of
/// the weight to allocate and add up (they were most of the time of the first up-convolution's
/// weight gradient, 256×128×4×4 from a 4×4 grid). The column chunks and the blocks along the
/// sum do not depend on the thread count, nor does the result.
#[allow(clippy::too_many_arguments)]
fn weight_grad_by_columns<T: GemmElem>(a: &[T], a_channels: usize, s: &[T], s_channels: usize, ya: Axis, xa: Axis, groups: usize, batch: usize) -> Vec<T> {
    let (a_g, s_g, k, grid) = (a_channels / groups, s_channels / groups, ya.kernel * xa.kernel, ya.grid * xa.grid);
    let ld = s_g * k;
    let ch = (COLUMN_CHUNK / k).clamp(1, s_g.max(1));
    let tasks: Vec<(usize, Range<usize>)> = (0..groups).flat_map(|g| (0..s_g).step_by(ch).map(move |c| (g, c..(c + ch).min(s_g)))).collect();
    let blocks = sum_blocks(batch, ya, xa, ch * k);
    // Position-major `A` is a column-major left operand, which `gemm` reads as it is instead
    // of packing it again (with a transposition) in every task.
    let a = to_position_major(a, a_channels, grid);
    let len = a_channels * ld;
    let mut dw: Vec<T> = Vec::with_capacity(len);
    let dst = Shared(dw.as_mut_ptr());
    let run = |(g, cs): &(usize, Range<usize>)| {
        let dst = dst;
        for (i, t) in blocks.iter().enumerate() {
            let chans = g * s_g + cs.start..g * s_g + cs.end;
            let rhs = Gathered::new(s, s_channels, chans, ya, xa, t);
            let a_at = (t.images.start * grid + t.ps.start) * a_channels + g * a_g;
            // SAFETY: the tasks write disjoint column ranges of the group's rows of `dw`; the
            // first block writes them, the later ones add to them.
            unsafe { gemm_into(dst.0.add(g * a_g * ld + cs.start * k), ld, Mat::t(&a[a_at..], a_channels), rhs.rhs(0), a_g, t.width(), cs.len() * k, i > 0, false) };
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
    #[cfg(not(feature = "rayon"))]
    tasks.iter().for_each(run);
    // SAFETY: the tasks cover every group and column, every row; `blocks` is not empty.
    unsafe { dw.set_len(len) };
    dw
}

/// Blocks along a weight gradient's sum for `rows` gathered rows: whole images or bands of grid
/// rows near [`TILE_BUDGET`], independent of the thread count.
fn sum_blocks(batch: usize, ya: Axis, xa: Axis, rows: usize) -> Vec<Tile> {
    let grid = ya.grid * xa.grid;
    if let Some(nb) = images_per_tile(batch, rows * grid, 1) {
        return whole_images(batch, nb, grid);
    }
    bands(batch, ya.grid, xa.grid, (TILE_BUDGET / (rows * xa.grid).max(1)).clamp(1, ya.grid.max(1)))
}

/// Everything the transposed convolution needs to know about its shapes.
struct Geometry {
    batch: usize,
    c_in: usize,
    c_out: usize,
    groups: usize,
    /// Axes with the small (input) grid and the large (output) side.
    ya: Axis,
    xa: Axis,
}

impl Geometry {
    fn transposed(x_shape: &[usize], w_shape: &[usize], o: &ConvTransposeOptions<2>) -> Self {
        let axis = |i: usize| Axis {
            grid: x_shape[2 + i],
            other: calculate_conv_transpose_output_size(w_shape[2 + i], o.stride[i], o.padding[i], o.padding_out[i], o.dilation[i], x_shape[2 + i]),
            kernel: w_shape[2 + i],
            stride: o.stride[i],
            dilation: o.dilation[i],
            padding: o.padding[i],
        };
        Geometry { batch: x_shape[0], c_in: x_shape[1], c_out: w_shape[1] * o.groups, groups: o.groups, ya: axis(0), xa: axis(1) }
    }
    fn k(&self) -> usize {
        self.ya.kernel * self.xa.kernel
    }
    fn grid(&self) -> usize {
        self.ya.grid * self.xa.grid
    }
    fn out_plane(&self) -> usize {
        self.ya.other * self.xa.other
    }
    /// Batch chunks whose column matrix (`rows` × images × grid) fits the budget.
    fn chunks(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> {
        let per_image = (rows * self.grid()).max(1);
        let step = (COLUMN_BUDGET / per_image).clamp(1, self.batch.max(1));
        let batch = self.batch;
        (0..batch).step_by(step).map(move |b0| (b0, step.min(batch - b0)))
    }
}

fn tensor<T: GemmElem>(data: Vec<T>, shape: Vec<usize>, dtype: DType) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(data), Layout::contiguous(Shape::from(shape)), dtype)
}

/// Transposed convolution `x [B, Ci, H, W]`, `weight [Ci, Co/groups, KH, KW]`.
pub(crate) fn conv_transpose2d<T: GemmElem>(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, o: &ConvTransposeOptions<2>, dtype: DType) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let g = Geometry::transposed(x.layout().shape(), weight.layout().shape(), o);
    let (xd, wd): (&[T], &[T]) = (x.storage(), weight.storage());
    let (ci_g, co_g, k) = (g.c_in / g.groups, g.c_out / g.groups, g.k());
    // The output starts as the bias (or zero), its planes written in parallel; upstream zeroed it
    // and added the bias afterwards, both on one thread. preimage patch.
    let bias = bias.map(|b| b.to_contiguous());
    let bias_values: Option<&[T]> = bias.as_ref().map(|b| b.storage::<T>());
    let mut out = filled(g.batch * g.c_out * g.out_plane(), g.out_plane(), |i, plane| {
        let v = bias_values.map_or(T::ZERO, |b| b[i % g.c_out]);
        plane.iter_mut().for_each(|x| {
            x.write(v);
        });
    });
    for (b0, nb) in g.chunks(g.c_out * k) {
        let n = nb * g.grid();
        let xt = to_channel_major(xd, g.c_in, g.grid(), b0, nb);
        let cols = per_group(g.groups, co_g * k * n, |grp, c| {
            let w = &wd[grp * ci_g * co_g * k..][..ci_g * co_g * k];
            matmul(c, Mat::t(w, co_g * k), Mat::n(&xt[grp * ci_g * n..], n), co_g * k, ci_g, n, false);
        });
        scatter_add(&mut out, &cols, g.c_out, g.ya, g.xa, b0, nb);
    }
    tensor(out, vec![g.batch, g.c_out, g.ya.other, g.xa.other], dtype)
}

/// `dst[b, grp·m + i, span] = Σ_j W[grp·m + i, j] · gather(src)[grp·kdim + j, span]` for every
/// tile, written in place: `weight` is `[out_channels, src_channels/groups, KH, KW]`, `src`
/// `[B, src_channels, ya.other, xa.other]`, the result `[B, out_channels, ya.grid, xa.grid]`.
/// The convolution's forward pass (weight `[Co, Ci/g, ..]`, src = input) and the transposed
/// convolution's input gradient (weight `[Ci, Co/g, ..]`, src = output gradient) are both this.
#[allow(clippy::too_many_arguments)]
fn gathered_product<T: GemmElem>(wd: &[T], out_channels: usize, src: &[T], src_channels: usize, ya: Axis, xa: Axis, groups: usize, batch: usize) -> Vec<T> {
    let (m, k, grid) = (out_channels / groups, src_channels / groups * ya.kernel * xa.kernel, ya.grid * xa.grid);
    let len = batch * out_channels * grid;
    let mut out: Vec<T> = Vec::with_capacity(len);
    let dst = Shared(out.as_mut_ptr());
    let tiles = spans(batch, grid, src_channels * ya.kernel * xa.kernel);
    each_tile(&tiles, |t| {
        let dst = dst;
        let cols = gather(src, src_channels, 0..src_channels, ya, xa, t);
        let (width, b0) = (t.width(), t.images.start);
        if t.images.len() == 1 {
            for grp in 0..groups {
                let w = &wd[grp * m * k..][..m * k];
                let at = (b0 * out_channels + grp * m) * grid + t.ps.start;
                // SAFETY: tiles cover disjoint (image, positions) blocks of `out`; each element
                // is written by exactly one tile and group, inside the allocation.
                unsafe { gemm_into(dst.0.add(at), grid, Mat::n(w, k), Mat::n(&cols[grp * k * width..], width), m, k, width, false, false) };
            }
            return;
        }
        // Several whole images: the product's columns are image after image, the output's
        // images are `out_channels` planes apart, so it goes through a block of the tile's own.
        let block = per_group(groups, m * width, |grp, c| {
            let w = &wd[grp * m * k..][..m * k];
            // SAFETY: `c` holds m·width elements.
            unsafe { gemm_into(c.as_mut_ptr() as *mut T, width, Mat::n(w, k), Mat::n(&cols[grp * k * width..], width), m, k, width, false, false) };
        });
        for (i, b) in t.images.clone().enumerate() {
            for (oc, row) in block.chunks_exact(width).enumerate() {
                // SAFETY: image `b`'s planes belong to this tile alone.
                unsafe { core::ptr::copy_nonoverlapping(row[i * grid..].as_ptr(), dst.0.add((b * out_channels + oc) * grid), grid) };
            }
        }
    });
    // SAFETY: the tiles cover every image and grid row, so every element was written.
    unsafe { out.set_len(len) };
    out
}

/// Gradient of the transposed convolution with respect to its input:
/// `dx[b, :, span] = W · gather(G)` per tile.
pub(crate) fn conv_transpose2d_x_backward<T: GemmElem>(x_shape: [usize; 4], weight: FlexTensor, grad: FlexTensor, o: &ConvTransposeOptions<2>, dtype: DType) -> FlexTensor {
    let (weight, grad) = (weight.to_contiguous(), grad.to_contiguous());
    let g = Geometry::transposed(&x_shape, weight.layout().shape(), o);
    let dx = gathered_product::<T>(weight.storage(), g.c_in, grad.storage(), g.c_out, g.ya, g.xa, g.groups, g.batch);
    tensor(dx, x_shape.to_vec(), dtype)
}

/// Both gradients of the transposed convolution, its input's and its weight's, from one gather
/// of the output gradient per tile. Separately each gathers the same windows of `grad` (the
/// input gradient `dx = W · gather(G)`, the weight gradient `dW = Σ X · gather(G)ᵀ`); here the
/// block `[(i, p), (c, ky, kx)]` of [`gather_transposed`] serves both products, read in place,
/// and `dx` is computed position-major so that `gemm` packs the weight rather than the block.
/// Taken for one group and short grid rows (where `gather_transposed` applies), with
/// [`weight_grad`]'s tiles and fixed partial sums (the result does not depend on the threads),
/// up to [`SHARED_MAX_WEIGHT`] over a short sum; otherwise the two functions run as before.
/// preimage patch (twenty-third).
pub(crate) fn conv_transpose2d_backward<T: GemmElem>(x: FlexTensor, weight: FlexTensor, grad: FlexTensor, o: &ConvTransposeOptions<2>, dtype: DType) -> (FlexTensor, FlexTensor) {
    let (x, weight, grad) = (x.to_contiguous(), weight.to_contiguous(), grad.to_contiguous());
    let x_shape: [usize; 4] = x.layout().shape().dims();
    let w_shape: [usize; 4] = weight.layout().shape().dims();
    let g = Geometry::transposed(&x_shape, &w_shape, o);
    let (ci, co, k, grid) = (g.c_in, g.c_out, g.k(), g.grid());
    // A weight larger than SHARED_MAX_WEIGHT over a short sum keeps `weight_grad_by_columns`:
    // the tiles' partial sums of dW (PARTS copies) would cost more than the shared gather saves.
    let by_columns = ci * co * k > SHARED_MAX_WEIGHT && g.batch * grid <= SHORT_SUM;
    if g.groups != 1 || !short_rows(&g.xa) || g.xa.dilation != 1 || by_columns {
        let dx = conv_transpose2d_x_backward::<T>(x_shape, weight, grad.clone(), o, dtype);
        return (dx, conv_transpose2d_weight_backward::<T>(x, w_shape, grad, o, dtype));
    }
    let (xd, wd, gd): (&[T], &[T], &[T]) = (x.storage(), weight.storage(), grad.storage());
    let taps = co * k;
    let len = g.batch * ci * grid;
    let mut dx: Vec<T> = Vec::with_capacity(len);
    let dst = Shared(dx.as_mut_ptr());
    let tiles = tiles(g.batch, g.ya, g.xa, taps);
    let dw = sum_over(&tiles, ci * taps, |acc, t| {
        let dst = dst;
        let cols = gather_transposed(gd, co, 0..co, g.ya, g.xa, t).expect("short rows");
        let (width, b0) = (t.width(), t.images.start);
        // dW += X[:, tile] · cols, as `weight_grad` does it.
        let x_cm = (t.images.len() > 1).then(|| to_channel_major(xd, ci, grid, b0, t.images.len()));
        let (a, a_stride) = match &x_cm {
            Some(v) => (&v[..], width),
            None => (&xd[b0 * ci * grid + t.ps.start..], grid),
        };
        matmul(as_uninit(&mut acc[..]), Mat::n(a, a_stride), Mat::n(&cols[..], taps), ci, width, taps, true);
        // dx[:, tile]ᵀ = cols · Wᵀ, position-major, then transposed into place: `gemm` packs the
        // operand whose rows are the output's rows unless they are contiguous along them, which
        // the block's rows are not for dx (their taps are); packing W (Ci × Co·k) is cheaper.
        let block = per_group(1, width * ci, |_, c| {
            // SAFETY: `c` holds width·ci elements.
            unsafe { gemm_into(c.as_mut_ptr() as *mut T, ci, Mat::n(&cols[..], taps), Mat::t(wd, taps), width, taps, ci, false, false) };
        });
        let n = t.ps.len();
        for (i, b) in t.images.clone().enumerate() {
            let block = &block[i * n * ci..][..n * ci];
            for c0 in (0..ci).step_by(16) {
                for p0 in (0..n).step_by(16) {
                    for c in c0..(c0 + 16).min(ci) {
                        // SAFETY: tiles cover disjoint (image, positions) blocks of `dx`, each
                        // element written once, inside the allocation.
                        let row = unsafe { dst.0.add((b * ci + c) * grid + t.ps.start) };
                        for p in p0..(p0 + 16).min(n) {
                            unsafe { row.add(p).write(block[p * ci + c]) };
                        }
                    }
                }
            }
        }
    });
    // SAFETY: the tiles cover every image and position, so every element of `dx` was written.
    unsafe { dx.set_len(len) };
    (tensor(dx, x_shape.to_vec(), dtype), tensor(dw, w_shape.to_vec(), dtype))
}

/// The convolution's window geometry: its output grid gathers from its input, the same windows
/// as the transposed convolution with the roles of the two sides exchanged.
fn conv_axes(x_shape: &[usize], out_grid: [usize; 2], w_shape: &[usize], o: &ConvOptions<2>) -> (Axis, Axis) {
    let axis = |i: usize| Axis { grid: out_grid[i], other: x_shape[2 + i], kernel: w_shape[2 + i], stride: o.stride[i], dilation: o.dilation[i], padding: o.padding[i] };
    (axis(0), axis(1))
}

/// Whether [`conv2d`] computes this convolution; upstream keeps the shapes where its fast paths
/// need no gather: 1×1 kernels at stride 1 without padding, depthwise, and at most 4 input and
/// 16 output channels.
pub(crate) fn takes_conv2d(x_shape: &[usize; 4], w_shape: &[usize; 4], o: &ConvOptions<2>) -> bool {
    let pointwise = w_shape[2] == 1 && w_shape[3] == 1 && o.stride == [1, 1] && o.padding == [0, 0];
    let depthwise = w_shape[1] == 1 && o.groups == x_shape[1] && w_shape[0] == x_shape[1];
    let tiny = o.groups == 1 && x_shape[1] <= 4 && w_shape[0] <= 16;
    !(pointwise || depthwise || tiny)
}

/// Convolution `x [B, Ci, H, W]`, `weight [Co, Ci/groups, KH, KW]`: `out[b, :, span] = W · gather(X)` per tile.
pub(crate) fn conv2d<T: GemmElem>(x: FlexTensor, weight: FlexTensor, bias: Option<FlexTensor>, o: &ConvOptions<2>, dtype: DType) -> FlexTensor {
    let (x, weight) = (x.to_contiguous(), weight.to_contiguous());
    let (xs, ws) = (x.layout().shape().to_vec(), weight.layout().shape().to_vec());
    let out_grid = [0, 1].map(|i| calculate_conv_output_size(ws[2 + i], o.stride[i], o.padding[i], o.dilation[i], xs[2 + i]));
    let (ya, xa) = conv_axes(&xs, out_grid, &ws, o);
    let mut out = gathered_product::<T>(weight.storage(), ws[0], x.storage(), xs[1], ya, xa, o.groups, xs[0]);
    if let Some(bias) = bias {
        let bias = bias.to_contiguous();
        super::conv_common::add_bias(&mut out, bias.storage::<T>(), xs[0], ws[0], ya.grid * xa.grid, |a, b| a + b);
    }
    tensor(out, vec![xs[0], ws[0], ya.grid, xa.grid], dtype)
}

/// Whether [`conv2d_x_backward`] takes this convolution's input gradient: stride 1, one group,
/// padding within the kernel's reach (else the flipped convolution's padding is negative), and
/// a column matrix of upstream's way (`[Ci·KH·KW, B·H·W]`) that no longer stays in cache: from
/// 4 MiB when the gradient has at least as many channels as the output (the gather then costs
/// no more per product than upstream's scatter), from 32 MiB otherwise. Measured on AlexNet's
/// conv2–conv5 at batch 1–32 (`PREIMAGE_PATCH.md`, ninth patch).
pub(crate) fn x_backward_as_conv(x_shape: &[usize; 4], w_shape: &[usize; 4], o: &ConvOptions<2>) -> bool {
    let [co, ci, kh, kw] = *w_shape;
    let columns = ci * kh * kw * x_shape[0] * x_shape[2] * x_shape[3] * 4;
    let cached = if ci >= co { 4 << 20 } else { 32 << 20 };
    o.stride == [1, 1] && o.groups == 1 && (0..2).all(|i| o.padding[i] <= o.dilation[i] * (w_shape[2 + i] - 1)) && columns >= cached
}

/// Gradient of the convolution `weight [Co, Ci, KH, KW]` (stride 1, one group) with respect to
/// its input of `x_shape`, given `grad [B, Co, OH, OW]`: the convolution of `grad` with the
/// kernel flipped and its channel axes exchanged (`[Ci, Co, KH, KW]`), padded
/// `dilation·(k − 1) − padding`. The same tiles as the forward pass (each gathered band
/// multiplied while in cache) instead of upstream's transposed convolution, whose GEMM writes
/// the whole batch's column matrix (`[Ci·KH·KW, B·H·W]`, 75 MB for AlexNet's conv4 at batch
/// 32) before scattering it.
pub(crate) fn conv2d_x_backward<T: GemmElem>(x_shape: [usize; 4], weight: FlexTensor, grad: FlexTensor, o: &ConvOptions<2>, dtype: DType) -> FlexTensor {
    let (weight, grad) = (weight.to_contiguous(), grad.to_contiguous());
    let ws: [usize; 4] = weight.layout().shape().dims();
    let gs: [usize; 4] = grad.layout().shape().dims();
    let [co, ci, kh, kw] = ws;
    let (wd, kk): (&[T], usize) = (weight.storage(), kh * kw);
    // Row `i` of the flipped kernel: each output channel's taps of input channel `i`, reversed.
    // In parallel, by index: AlexNet's conv4 weight is 3.5 MB, a serial `extend` per 9 taps
    // took as long as the whole gradient at batch 1.
    let mut flipped = vec![T::ZERO; wd.len()];
    let flip_row = |i: usize, row: &mut [T]| {
        for (oc, taps) in row.chunks_exact_mut(kk).enumerate() {
            let src = &wd[(oc * ci + i) * kk..][..kk];
            for (t, v) in taps.iter_mut().enumerate() {
                *v = src[kk - 1 - t];
            }
        }
    };
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        flipped.par_chunks_mut(co * kk).enumerate().for_each(|(i, row)| flip_row(i, row));
    }
    #[cfg(not(feature = "rayon"))]
    flipped.chunks_mut(co * kk).enumerate().for_each(|(i, row)| flip_row(i, row));
    let axis = |i: usize| Axis {
        grid: x_shape[2 + i],
        other: gs[2 + i],
        kernel: ws[2 + i],
        stride: 1,
        dilation: o.dilation[i],
        padding: o.dilation[i] * (ws[2 + i] - 1) - o.padding[i],
    };
    let dx = gathered_product::<T>(&flipped, ci, grad.storage(), co, axis(0), axis(1), 1, x_shape[0]);
    tensor(dx, x_shape.to_vec(), dtype)
}

/// Gradient of the transposed convolution with respect to its weight.
pub(crate) fn conv_transpose2d_weight_backward<T: GemmElem>(x: FlexTensor, weight_shape: [usize; 4], grad: FlexTensor, o: &ConvTransposeOptions<2>, dtype: DType) -> FlexTensor {
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let g = Geometry::transposed(x.layout().shape(), &weight_shape, o);
    let dw = weight_grad::<T>(x.storage(), g.c_in, grad.storage(), g.c_out, g.ya, g.xa, g.groups, g.batch);
    tensor(dw, weight_shape.to_vec(), dtype)
}

/// Gradient of the convolution `x [B, Ci, H, W]`, `weight [Co, Ci/groups, KH, KW]` with respect
/// to its weight, given the output gradient `grad [B, Co, OH, OW]`.
pub(crate) fn conv2d_weight_backward<T: GemmElem>(x: FlexTensor, weight_shape: [usize; 4], grad: FlexTensor, o: &ConvOptions<2>, dtype: DType) -> FlexTensor {
    let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
    let xs = x.layout().shape().to_vec();
    let gs = grad.layout().shape().to_vec();
    let (ya, xa) = conv_axes(&xs, [gs[2], gs[3]], &weight_shape, o);
    let dw = weight_grad::<T>(grad.storage(), gs[1], x.storage(), xs[1], ya, xa, o.groups, xs[0]);
    tensor(dw, weight_shape.to_vec(), dtype)
}

/// Gradient of a convolution's (or transposed convolution's) bias, `db[c] = Σ_(b, y, x)
/// grad[b, c, y, x]`, summed where the gradient lies. Upstream swaps the batch and channel axes
/// and reshapes, which copies the whole output gradient before summing it (thirteenth patch).
/// Channels in parallel, each in a fixed order: the result does not depend on the threads.
pub(crate) fn bias_backward<T: GemmElem>(grad: FlexTensor, bias_shape: Vec<usize>, dtype: DType) -> FlexTensor {
    let grad = grad.to_contiguous();
    let dims = grad.layout().shape().to_vec();
    let (batch, channels) = (dims[0], dims[1]);
    let plane: usize = dims[2..].iter().product();
    let g: &[T] = grad.storage();
    let channel = |c: usize| (0..batch).fold(T::ZERO, |acc, b| acc + lane_sum(&g[(b * channels + c) * plane..][..plane]));
    #[cfg(feature = "rayon")]
    let sums: Vec<T> = if g.len() >= super::PARALLEL_THRESHOLD {
        use rayon::prelude::*;
        (0..channels).into_par_iter().map(channel).collect()
    } else {
        (0..channels).map(channel).collect()
    };
    #[cfg(not(feature = "rayon"))]
    let sums: Vec<T> = (0..channels).map(channel).collect();
    tensor(sums, bias_shape, dtype)
}

/// Sum of `v` in 16 interleaved lanes (vectorizes; also a shorter rounding chain than one
/// running sum). Generic over the float types; `reduce.rs`'s SIMD sum is f32 only.
fn lane_sum<T: GemmElem>(v: &[T]) -> T {
    let mut lanes = [T::ZERO; 16];
    let chunks = v.chunks_exact(16);
    let rest = chunks.remainder().iter().fold(T::ZERO, |a, &x| a + x);
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = *l + x;
        }
    }
    lanes.iter().fold(rest, |a, &l| a + l)
}
