//! preimage patch: element-wise maps over rayon's threads.
//!
//! Upstream runs every `unary_op`, `scalar_op` and `binary_op` loop on one thread at any size
//! (its SIMD in-place ops from 4M elements). Between two convolutions on all cores that leaves
//! the other cores idle: `perf` put the main thread alone at ~8 % of the decoder step (a) (leaky
//! ReLU and its gradient on 0.3–1M elements) and of AlexNet's optimization iteration (ReLUs,
//! TV and α-norm on the 150K-element image). From [`PARALLEL`] elements the maps below split
//! the work into chunks of [`CHUNK`]; results are element by element, so they do not depend
//! on the split.
use alloc::vec::Vec;

/// Elements from which a map is split over the threads.
pub(crate) const PARALLEL: usize = 64 * 1024;
/// Elements per task: 64 KiB of f32, a few microseconds of work.
#[cfg(feature = "rayon")]
const CHUNK: usize = 16 * 1024;

/// `data[i] = f(data[i])`.
pub(crate) fn map_inplace<E: Copy + Send + Sync, F: Fn(E) -> E + Sync>(data: &mut [E], f: F) {
    #[cfg(feature = "rayon")]
    if data.len() >= PARALLEL {
        use rayon::prelude::*;
        data.par_chunks_mut(CHUNK).for_each(|c| c.iter_mut().for_each(|x| *x = f(*x)));
        return;
    }
    data.iter_mut().for_each(|x| *x = f(*x));
}

/// `a[i] = f(a[i], b[i])` (`b` at least as long as `a`).
pub(crate) fn zip_inplace<E: Copy + Send + Sync, F: Fn(E, E) -> E + Sync>(a: &mut [E], b: &[E], f: F) {
    let b = &b[..a.len()];
    #[cfg(feature = "rayon")]
    if a.len() >= PARALLEL {
        use rayon::prelude::*;
        a.par_chunks_mut(CHUNK).zip(b.par_chunks(CHUNK)).for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(x, y)| *x = f(*x, *y)));
        return;
    }
    a.iter_mut().zip(b).for_each(|(x, y)| *x = f(*x, *y));
}

/// `[f(src[0]), f(src[1]), ...]`.
pub(crate) fn map_collect<E: Copy + Sync, R: Copy + Send + Sync, F: Fn(E) -> R + Sync>(src: &[E], f: F) -> Vec<R> {
    #[cfg(feature = "rayon")]
    if src.len() >= PARALLEL {
        use rayon::prelude::*;
        let mut out = Vec::with_capacity(src.len());
        out.spare_capacity_mut()[..src.len()]
            .par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(o, s)| o.iter_mut().zip(s).for_each(|(o, s)| { o.write(f(*s)); }));
        // SAFETY: the chunks cover all `src.len()` elements and each was written above.
        unsafe { out.set_len(src.len()) };
        return out;
    }
    src.iter().map(|x| f(*x)).collect()
}

/// `[f(a[0], b[0]), f(a[1], b[1]), ...]` over the shorter of the two.
pub(crate) fn zip_collect<E: Copy + Sync, R: Copy + Send + Sync, F: Fn(E, E) -> R + Sync>(a: &[E], b: &[E], f: F) -> Vec<R> {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    #[cfg(feature = "rayon")]
    if n >= PARALLEL {
        use rayon::prelude::*;
        let mut out = Vec::with_capacity(n);
        out.spare_capacity_mut()[..n]
            .par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (a, b))| { o.write(f(*a, *b)); }));
        // SAFETY: the chunks cover all `n` elements and each was written above.
        unsafe { out.set_len(n) };
        return out;
    }
    a.iter().zip(b).map(|(a, b)| f(*a, *b)).collect()
}
