//! Data-parallel training over several devices (`--device cuda:0,cuda:1`).
//!
//! The scheme of burn-train's multi-device strategy (`MultiDeviceOptim::OptimMainDevice`),
//! on Burn's own pieces: each device gets a fork of the model and a slice of the batch and
//! works in its own thread; the gradients move to the first (main) device
//! (`GradientsParams::to_device`), are summed there (`GradientsAccumulator`) and the
//! optimizer steps there once. Unlike burn-train, each slice's loss is weighted by its share
//! of the batch, so the summed gradient is the whole batch's mean-loss gradient: a step on
//! two devices is the step on one, up to rounding, and learning rates carry over.
use anyhow::Result;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use std::ops::Range;

/// One device's part of a batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Shard {
    /// Index into the device list.
    pub device: usize,
    /// Rows of the batch.
    pub rows: Range<usize>,
    /// Share of the batch, `rows.len() / n`: the weight of this slice's mean loss.
    pub weight: f64,
}

/// Split `n` rows over `devices` devices in contiguous slices as even as can be (the first
/// `n % devices` get one more); devices left without rows get no shard.
pub fn shards(n: usize, devices: usize) -> Vec<Shard> {
    let k = devices.max(1);
    let (base, extra) = (n / k, n % k);
    let mut start = 0;
    let mut out = Vec::new();
    for d in 0..k {
        let len = base + usize::from(d < extra);
        if len > 0 {
            out.push(Shard { device: d, rows: start..start + len, weight: len as f64 / n as f64 });
        }
        start += len;
    }
    out
}

impl Shard {
    /// Whether this shard is the whole batch (one device): no copies, no weighting.
    pub fn whole(&self) -> bool {
        self.weight == 1.0
    }

    /// This shard's rows of `t`, on its device.
    pub fn rows<B: Backend, const D: usize>(&self, t: Tensor<B, D>, device: &B::Device) -> Tensor<B, D> {
        if self.whole() {
            t
        } else {
            t.narrow(0, self.rows.start, self.rows.len()).to_device(device)
        }
    }

    /// This shard's copy of `module`, on its device (a fork: its own autodiff leaves).
    pub fn replica<B: Backend, M: Module<B>>(&self, module: &M, device: &B::Device) -> M {
        if self.whole() {
            module.clone()
        } else {
            module.clone().fork(device)
        }
    }
}

/// Run `work` once per item, each in its own thread when there are several (so that devices
/// compute at once), inline when there is one; results in input order. A panic in a worker
/// is re-raised here. Also inline, one item after another, when this thread is the only
/// worker of the CPU pool (`RAYON_NUM_THREADS=1`): the threads' CPU ops would wait for it
/// while it waits for them.
pub fn each<T: Send, R: Send>(items: Vec<T>, work: impl Fn(T) -> Result<R> + Sync) -> Result<Vec<R>> {
    let only_worker = rayon::current_thread_index().is_some() && crate::util::cpu_threads() < 2;
    if items.len() == 1 || only_worker {
        return items.into_iter().map(&work).collect();
    }
    std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = items.into_iter().map(|item| s.spawn(move || work(item))).collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    })
}

/// Sum per-device gradients of `module` (already on its device) into one set.
pub fn sum_grads<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, parts: Vec<GradientsParams>) -> GradientsParams {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap();
    }
    let mut acc = GradientsAccumulator::<M>::new();
    for g in parts {
        acc.accumulate(module, g);
    }
    acc.grads()
}

/// Gradients of `loss` (the shard's mean loss) for `module`'s parameters, weighted by the
/// shard's share of the batch and moved to `main`.
pub fn shard_grads<B: AutodiffBackend, M: AutodiffModule<B>>(loss: Tensor<B, 1>, shard: &Shard, module: &M, main: &B::Device) -> GradientsParams {
    if shard.whole() {
        return GradientsParams::from_grads(loss.backward(), module);
    }
    GradientsParams::from_grads((loss * shard.weight).backward(), module).to_device(main, module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_runs_in_threads_except_on_the_only_worker() {
        let where_ = |items: Vec<u32>| each(items, |i| Ok((i * 10, rayon::current_thread_index(), std::thread::current().id()))).unwrap();
        let caller = std::thread::current().id();
        // Outside a one-thread pool: each item in its own thread, results in order.
        let out = where_(vec![1, 2, 3]);
        assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), [10, 20, 30]);
        assert!(out.iter().all(|r| r.1.is_none() && r.2 != caller), "{out:?}");
        // On the only worker of a pool, inline on that worker (threads of their own would
        // queue their CPU ops behind it while it waits for them).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
        let (out, worker) = pool.install(|| (where_(vec![1, 2]), std::thread::current().id()));
        assert_eq!(out.iter().map(|r| r.0).collect::<Vec<_>>(), [10, 20]);
        assert!(out.iter().all(|r| r.1 == Some(0) && r.2 == worker), "{out:?}");
    }

    #[test]
    fn shards_cover_the_batch_evenly() {
        let s = shards(7, 3);
        assert_eq!(s.iter().map(|s| s.rows.clone()).collect::<Vec<_>>(), vec![0..3, 3..5, 5..7]);
        assert!((s.iter().map(|s| s.weight).sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(shards(1, 2), vec![Shard { device: 0, rows: 0..1, weight: 1.0 }]);
        assert_eq!(shards(4, 1), vec![Shard { device: 0, rows: 0..4, weight: 1.0 }]);
    }

    #[test]
    fn each_keeps_order_and_passes_errors() {
        assert_eq!(each(vec![1, 2, 3], |x| Ok(x * 10)).unwrap(), vec![10, 20, 30]);
        let err = each(vec![1, 2], |x| if x == 2 { anyhow::bail!("shard {x} failed") } else { Ok(x) }).unwrap_err();
        assert!(err.to_string().contains("shard 2"));
    }
}
