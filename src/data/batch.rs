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

/// Decode records `idx` (with augmentation when `augment_seed` is given: each image gets
/// its own seed derived from it and the record index).
pub fn load<B: Backend>(folder: &ImageFolder, idx: &[usize], pre: &Preprocess, augment_seed: Option<u64>, device: &B::Device) -> Option<ImageBatch<B>> {
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
    if indices.is_empty() {
        return None;
    }
    let images = Tensor::from_data(TensorData::new(data, [indices.len(), 3, h, w]), device);
    Some(ImageBatch { images, indices })
}

/// The preprocessing an encoder declares.
pub fn preprocess_for(spec: &crate::encoder::EncoderSpec) -> Preprocess {
    Preprocess { resize: spec.resize, crop_h: spec.input_size[0] as u32, crop_w: spec.input_size[1] as u32 }
}
