//! Turning image-folder records into batched tensors, decoding files on all cores.
use super::folder::{ImageFolder, Preprocess};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Images `[n, 3, h, w]` in `[0,1]` and the record indices they came from (unreadable files
/// are skipped and logged by the folder's `SkipLog`, so `indices` can be shorter).
pub struct ImageBatch<B: Backend> {
    pub images: Tensor<B, 4>,
    pub indices: Vec<usize>,
}

/// A batch decoded on the host, not yet a tensor: what the prefetching thread hands over.
pub struct HostBatch {
    data: Vec<f32>,
    pub indices: Vec<usize>,
    size: [usize; 2],
}

impl HostBatch {
    pub fn to_device<B: Backend>(self, device: &B::Device) -> ImageBatch<B> {
        let [h, w] = self.size;
        let images = Tensor::from_data(TensorData::new(self.data, [self.indices.len(), 3, h, w]), device);
        ImageBatch { images, indices: self.indices }
    }
}

/// Decode records `idx` (with augmentation when `augment_seed` is given: each image gets
/// its own seed derived from it and the record index).
pub fn load<B: Backend>(folder: &ImageFolder, idx: &[usize], pre: &Preprocess, augment_seed: Option<u64>, device: &B::Device) -> Option<ImageBatch<B>> {
    decode(folder, idx, pre, augment_seed).map(|b| b.to_device(device))
}

/// [`load`]'s decoding, on all cores; `None` when no file of `idx` could be read.
pub fn decode(folder: &ImageFolder, idx: &[usize], pre: &Preprocess, augment_seed: Option<u64>) -> Option<HostBatch> {
    let threads = crate::util::cpu_threads().min(idx.len().max(1));
    let chunk = idx.len().div_ceil(threads).max(1);
    let decoded: Vec<(usize, Option<Vec<f32>>)> = std::thread::scope(|s| {
        let handles: Vec<_> = idx
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    part.iter()
                        .map(|&i| {
                            let img = match augment_seed {
                                Some(seed) => folder.load_augmented_or_skip(i, pre, crate::rng::Rng::derive(seed, i as u64).next_u64()),
                                None => folder.load_or_skip(i, pre),
                            };
                            (i, img)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("decoder thread")).collect()
    });
    let (h, w) = (pre.crop_h as usize, pre.crop_w as usize);
    let mut data = Vec::with_capacity(idx.len() * 3 * h * w);
    let mut indices = Vec::new();
    for (i, img) in decoded {
        if let Some(img) = img {
            data.extend_from_slice(&img);
            indices.push(i);
        }
    }
    (!indices.is_empty()).then_some(HostBatch { data, indices, size: [h, w] })
}

/// Run `consume` over `produce(0)`, `produce(1)`, ... `produce(n - 1)`, each made on a background
/// thread one ahead, so that reading and decoding the files of the next batch overlaps the work
/// on this one (PyTorch's `DataLoader` with workers and its prefetch), in order. When `consume`
/// returns early (an error), the thread stops after the batch in hand. `PREIMAGE_PREFETCH=0`
/// makes each batch in turn on the calling thread (`num_workers=0`), to compare or debug.
pub fn prefetched<T: Send, R>(n: usize, produce: impl Fn(usize) -> T + Sync, consume: impl FnOnce(&mut dyn Iterator<Item = T>) -> R) -> R {
    if std::env::var("PREIMAGE_PREFETCH").is_ok_and(|v| v.trim() == "0") {
        return consume(&mut (0..n).map(produce));
    }
    std::thread::scope(|s| {
        // One batch waiting in the channel and one being made: memory for two batches ahead.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let produce = &produce;
        s.spawn(move || {
            for k in 0..n {
                if tx.send(produce(k)).is_err() {
                    break;
                }
            }
        });
        // The receiver goes before the scope joins the thread: a send blocked on a full
        // channel then fails and the thread ends.
        let mut received = rx.into_iter();
        let out = consume(&mut received);
        drop(received);
        out
    })
}

/// The preprocessing an encoder declares.
pub fn preprocess_for(spec: &crate::encoder::EncoderSpec) -> Preprocess {
    Preprocess { resize: spec.resize, crop_h: spec.input_size[0] as u32, crop_w: spec.input_size[1] as u32 }
}

#[cfg(test)]
mod tests {
    use super::prefetched;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn prefetched_batches_come_in_order() {
        let made = AtomicUsize::new(0);
        let produce = |k: usize| {
            made.fetch_add(1, Ordering::SeqCst);
            // Later batches are made faster: the order must not depend on timing.
            std::thread::sleep(std::time::Duration::from_millis(5 - k as u64));
            k * k
        };
        let got: Vec<usize> = prefetched(5, produce, |it| it.collect());
        assert_eq!(got, [0, 1, 4, 9, 16]);
        assert_eq!(made.load(Ordering::SeqCst), 5);
        let none: Vec<usize> = prefetched(0, |k| k, |it| it.collect());
        assert!(none.is_empty());
    }

    #[test]
    fn an_early_return_stops_the_thread() {
        let made = AtomicUsize::new(0);
        let produce = |k: usize| {
            made.fetch_add(1, Ordering::SeqCst);
            k
        };
        let out: Result<usize, String> = prefetched(1000, produce, |it| {
            for k in it {
                if k == 3 {
                    return Err(format!("batch {k} failed"));
                }
            }
            Ok(0)
        });
        assert_eq!(out.unwrap_err(), "batch 3 failed");
        // Batches 0..=3 consumed, at most two more made ahead (one in the channel, one in hand).
        let made = made.load(Ordering::SeqCst);
        assert!((4..=6).contains(&made), "{made} batches made for 4 consumed");
    }

    #[test]
    fn a_panic_while_making_a_batch_is_not_a_short_epoch() {
        // The consumer sees the channel end after batch 0, but the panic reaches the caller
        // rather than a result over fewer batches.
        let run = std::panic::catch_unwind(|| prefetched(3, |k| if k == 1 { panic!("unreadable batch") } else { k }, |it| it.count()));
        assert!(run.is_err(), "got {run:?}");
    }
}
