//! Code extraction: run a frozen encoder over an image folder (or image files) and save the codes at taps.
use crate::data::batch;
use crate::data::codes::{CodeFile, Preprocessing, Provenance};
use crate::data::folder::ImageFolder;
use crate::encoder::Loaded;
use crate::tensorfile::{Array, PartRows, RowWriter};
use safetensors::Dtype;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use burn::tensor::backend::Backend;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Encode every readable image of `folder` at `taps`, in record order, into a code file in
/// memory.
pub fn extract<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], batch_size: usize, device: &B::Device) -> Result<CodeFile> {
    let mut data: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
    let mut file = encode_folder(enc, folder, taps, batch_size, device, Done::default(), |codes, _| {
        for (tap, shape, values) in codes {
            data.entry(tap.to_string()).or_insert_with(|| (shape.to_vec(), Vec::new())).1.extend_from_slice(values);
        }
        Ok(())
    })?;
    let n = file.len();
    file.codes = data
        .into_iter()
        .map(|(tap, (shape, values))| {
            let mut full = vec![n];
            full.extend(shape);
            (tap, Array::F32 { shape: full, data: values })
        })
        .collect();
    Ok(file)
}

/// [`extract`] straight into the code file `out` (safetensors, NumPy's `.npz` or `torch.save`'s `.pt` when it ends so),
/// batch by batch: memory stays that of a batch
/// however many images there are (conv1 codes of AlexNet are 0.8 MB an image). The codes wait in
/// part files beside `out` until the last batch, so the folder needs twice their size for a
/// moment; `out` is replaced only once complete. Returns the number of images encoded.
///
/// A run that stops (killed, or an error) leaves its parts and `<out>.progress.json`, which
/// says how far it got (written every few seconds); with `resume` the same extraction goes on
/// from there (any batch size), otherwise their presence is an error, so that hours of
/// encoding are not overwritten by accident. `resume` with nothing to go on from starts afresh.
pub fn extract_to_file<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], out: &Path, opts: &ToFile, device: &B::Device) -> Result<usize> {
    write_codes(enc, folder, taps, out, opts, device, JOURNAL_EVERY, |_| Ok(()))
}

/// How [`extract_to_file`] writes.
#[derive(Clone, Debug)]
pub struct ToFile {
    /// Images encoded at once.
    pub batch_size: usize,
    /// Go on with a stopped extraction into the same file.
    pub resume: bool,
    /// What the codes are stored as: f32, or f16 / bf16 for half the size (rounded to nearest;
    /// every reader here takes them back as f32).
    pub dtype: Dtype,
}

impl Default for ToFile {
    fn default() -> Self {
        ToFile { batch_size: 64, resume: false, dtype: Dtype::F32 }
    }
}

/// [`extract_to_file`] recording progress every `every`, with `after_batch` called after each
/// batch (tests stop a run there, as a crash would).
#[allow(clippy::too_many_arguments)]
fn write_codes<B: Backend>(
    enc: &Loaded<B>,
    folder: &ImageFolder,
    taps: &[String],
    out: &Path,
    opts: &ToFile,
    device: &B::Device,
    every: std::time::Duration,
    mut after_batch: impl FnMut(&Done) -> Result<()>,
) -> Result<usize> {
    if out.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy")) {
        bail!("{}: a .npy file holds one array; write a .npz (NumPy's np.load gives every tap, the labels and ids), a .pt (torch.load) or a .safetensors", out.display());
    }
    if out.is_dir() {
        bail!("--out {} is a folder; name the code file, e.g. {}", out.display(), out.join("codes.safetensors").display());
    }
    // The name says the format; another name would hide a safetensors file behind it.
    let ext = out.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    if !matches!(ext.as_deref(), Some("safetensors" | "npz" | "pt" | "pth")) {
        bail!("--out {}: name the code file .safetensors, .npz (NumPy) or .pt (PyTorch), which says its format", out.display());
    }
    let journal = progress_path(out);
    let mut progress = Progress::new(enc, folder, taps, opts.dtype);
    let mut writer = if let Some(stopped) = Progress::read(&journal)? {
        if !opts.resume {
            bail!(
                "{}: an extraction into {} stopped after {} of {} images; pass --resume to go on with it, or delete {} and its part files ({}.*.part) to start over",
                journal.display(),
                out.display(),
                stopped.done.records,
                stopped.images,
                journal.display(),
                out.display()
            );
        }
        if let Some(diff) = stopped.differs_from(&progress) {
            bail!("{}: cannot resume: the stopped extraction had {diff}; rerun it as it was, or delete {} and its part files to start over", journal.display(), journal.display());
        }
        let w = RowWriter::reopen(out, opts.dtype, &stopped.parts).with_context(|| format!("resuming from {}", journal.display()))?;
        eprintln!("resuming {}: {} of {} images done ({} unreadable)", out.display(), stopped.done.records, stopped.images, stopped.done.skipped.len());
        progress.done = stopped.done;
        progress.parts = stopped.parts;
        w
    } else {
        RowWriter::with_dtype(out, opts.dtype)?
    };
    writer.keep_parts(true);
    let mut saved = std::time::Instant::now();
    let start = progress.done.clone();
    let mut last = start.clone();
    let encoded = encode_folder(
        enc,
        folder,
        taps,
        opts.batch_size,
        device,
        start,
        |codes, done| {
            for (tap, shape, values) in codes {
                writer.append(tap, shape, values)?;
            }
            last = done.clone();
            // Every few seconds: a journal entry costs a flush and a rename, not worth each batch.
            if saved.elapsed() >= every {
                progress.done = done.clone();
                progress.parts = writer.flush()?;
                crate::util::write_atomic(&journal, serde_json::to_string(&progress)?.as_bytes())?;
                saved = std::time::Instant::now();
            }
            after_batch(done)
        },
    );
    let file = match encoded {
        Ok(file) => file,
        Err(e) if journal.exists() => {
            return Err(e.context(format!("extraction stopped; its progress is kept in {}: the same command with --resume goes on from there", journal.display())));
        }
        Err(e) => {
            // Nothing was journalled: nothing to go on from.
            writer.keep_parts(false);
            return Err(e);
        }
    };
    let (extra, meta) = file.labels_poses_and_metadata(taps.iter().any(|t| t == "pose"))?;
    // Every image is encoded: recorded first, so that a failed write of the file (a full
    // disk) keeps the codes for `--resume` to write, instead of leaving unnamed part files.
    progress.done = last;
    progress.parts = writer.flush()?;
    crate::util::write_atomic(&journal, serde_json::to_string(&progress)?.as_bytes())?;
    writer.finish(&extra, &meta).map_err(|e| {
        e.context(format!("the codes of every image are kept in part files beside it, recorded in {}: the same command with --resume writes the file", journal.display()))
    })?;
    if journal.exists() {
        std::fs::remove_file(&journal).with_context(|| format!("removing {}", journal.display()))?;
    }
    Ok(file.len())
}

/// How often a running extraction records its progress.
const JOURNAL_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// `<out>.progress.json`: a stopped extraction's progress.
pub fn progress_path(out: &Path) -> PathBuf {
    crate::util::beside(out, ".progress.json")
}

/// A stopped extraction into `out`, in words (how far it got, what it was), or `None`.
pub fn stopped(out: &Path) -> Result<Option<String>> {
    let journal = progress_path(out);
    let Some(p) = Progress::read(&journal)? else { return Ok(None) };
    Ok(Some(format!(
        "{}: a stopped extraction into {}: {} of {} images done ({} unreadable), taps {}, {} (weights {}), codes as {:?}; the same `preimage extract` command with --resume goes on with it\n",
        journal.display(),
        out.display(),
        p.done.records,
        p.images,
        p.done.skipped.len(),
        p.taps.join(","),
        p.encoder,
        p.weights_sha256,
        p.dtype
    )))
}

/// Records the folder's images up to `records` went through the encoder, and which of them
/// could not be read (in order).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Done {
    pub records: usize,
    pub skipped: Vec<usize>,
}

/// What an extraction is (it must be the same to go on with it) and how far it got.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    encoder: String,
    weights_sha256: String,
    /// The encoder's spec as JSON: its layers, input size and preprocessing.
    spec: String,
    taps: Vec<String>,
    dtype: Dtype,
    images: usize,
    /// SHA-256 of the images' ids in order: the same files in the same order.
    ids_sha256: String,
    done: Done,
    parts: Vec<PartRows>,
}

impl Progress {
    /// The record at `journal`, if there is one.
    fn read(journal: &Path) -> Result<Option<Self>> {
        if !journal.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(journal).with_context(|| format!("reading {}", journal.display()))?;
        serde_json::from_str(&text).map(Some).with_context(|| format!("{}: not a progress file of `preimage extract`", journal.display()))
    }

    fn new<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, taps: &[String], dtype: Dtype) -> Self {
        let ids: Vec<&str> = folder.records.iter().map(|r| r.rel_path.as_str()).collect();
        Progress {
            encoder: enc.net.spec.arch.clone(),
            weights_sha256: enc.weights_sha256.clone(),
            spec: serde_json::to_string(&enc.net.spec).expect("specs serialize"),
            taps: taps.to_vec(),
            dtype,
            images: folder.len(),
            ids_sha256: crate::util::sha256_hex(ids.join("\n").as_bytes()),
            done: Done::default(),
            parts: Vec::new(),
        }
    }

    /// What of the extraction itself differs from `now`'s, in words; `None` when it can go on.
    fn differs_from(&self, now: &Progress) -> Option<String> {
        if self.encoder != now.encoder {
            Some(format!("encoder {} (now {})", self.encoder, now.encoder))
        } else if self.weights_sha256 != now.weights_sha256 {
            Some(format!("weights {} (now {})", self.weights_sha256, now.weights_sha256))
        } else if self.spec != now.spec {
            Some("another input size or preprocessing".into())
        } else if self.taps != now.taps {
            Some(format!("taps {} (now {})", self.taps.join(","), now.taps.join(",")))
        } else if self.dtype != now.dtype {
            Some(format!("codes stored as {:?} (now {:?})", self.dtype, now.dtype))
        } else if self.images != now.images {
            Some(format!("{} images (now {})", self.images, now.images))
        } else if self.ids_sha256 != now.ids_sha256 {
            Some("other image files, or the same in another order".into())
        } else {
            None
        }
    }
}

/// The one encoding loop, from record `start.records` on: hands each batch's codes to `sink`
/// (tap, shape of one code, values of the batch), with the records done after it, and returns
/// the code file without codes (ids, labels, poses, provenance) of every record done.
fn encode_folder<B: Backend>(
    enc: &Loaded<B>,
    folder: &ImageFolder,
    taps: &[String],
    batch_size: usize,
    device: &B::Device,
    start: Done,
    mut sink: impl FnMut(&[(String, Vec<usize>, Vec<f32>)], &Done) -> Result<()>,
) -> Result<CodeFile> {
    let spec = &enc.net.spec;
    for t in taps {
        spec.check_tap(t)?;
    }
    if taps.is_empty() {
        bail!("no tap given; valid taps: {}", spec.taps().join(", "));
    }
    let pre = batch::preprocess_for(spec);
    let tap_refs: Vec<&str> = taps.iter().map(String::as_str).collect();
    let all: Vec<usize> = (start.records.min(folder.len())..folder.len()).collect();
    let batches: Vec<&[usize]> = all.chunks(batch_size.max(1)).collect();
    let bar = crate::util::progress(folder.len() as u64, "extract");
    bar.inc(start.records as u64);
    let mut done = start;
    let decode = |k: usize| (batches[k], batch::decode(folder, batches[k], &pre, None));
    batch::prefetched(batches.len(), decode, |loaded| -> Result<()> {
        for (records, b) in loaded {
            bar.inc(records.len() as u64);
            let mut codes = Vec::with_capacity(taps.len());
            let kept = b.as_ref().map_or(&[][..], |b| &b.indices[..]);
            done.skipped.extend(records.iter().filter(|i| !kept.contains(i)));
            done.records = records.last().map_or(done.records, |&i| i + 1);
            if let Some(b) = b {
                let b = b.to_device::<B>(device);
                for (tap, act) in enc.net.encode(b.images, &tap_refs, false)? {
                    let shape = act.item_shape();
                    let values = act.flat().into_data().convert::<f32>().to_vec::<f32>().expect("float codes");
                    codes.push((tap, shape, values));
                }
            }
            sink(&codes, &done)?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let kept: Vec<usize> = {
        let skipped: std::collections::HashSet<usize> = done.skipped.iter().copied().collect();
        (0..done.records).filter(|i| !skipped.contains(i)).collect()
    };
    if kept.is_empty() {
        bail!("no readable image in {}", folder.root.display());
    }
    // Class folders' labels index `label_classes`; a list's class numbers index the encoder's.
    let labelled = !folder.classes.is_empty() || kept.iter().any(|&i| folder.records[i].label.is_some());
    let labels = labelled.then(|| kept.iter().map(|&i| folder.records[i].label.map_or(-1, |l| l as i64)).collect());
    let poses = kept
        .iter()
        .any(|&i| folder.records[i].pose.is_some())
        .then(|| kept.iter().map(|&i| folder.records[i].pose.unwrap_or([f32::NAN, f32::NAN])).collect());
    Ok(CodeFile {
        codes: BTreeMap::new(),
        labels,
        poses,
        ids: kept.iter().map(|&i| folder.records[i].rel_path.clone()).collect(),
        provenance: Some(Provenance {
            encoder: spec.arch.clone(),
            weights_sha256: enc.weights_sha256.clone(),
            input_size: spec.input_size,
            preprocessing: Preprocessing::of(spec),
            // Class names come from the encoder (its logits), not from the folder.
            classes: spec.classes.clone(),
            label_classes: (!folder.classes.is_empty()).then(|| folder.classes.clone()),
            spec: serde_json::to_string(spec)?,
            data_root: Some(absolute(&folder.root)),
            weights_path: enc.weights_path.as_deref().map(absolute),
        }),
    })
}

/// `p` made absolute (canonical when it exists), as recorded in metadata.
pub fn absolute(p: &std::path::Path) -> String {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::folder::SkipLog;
    use crate::encoder::{self, WeightSource};
    use crate::device::Cpu;
    use std::io::Write;
    use std::time::Duration;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("preimage-extract-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A rendered folder of 11 images, the third of them broken, and a small random posenet.
    fn setup(dir: &Path) -> (Loaded<Cpu>, ImageFolder) {
        let data = dir.join("data");
        crate::data::render::render_dataset(&data, &crate::data::render::RenderOptions { count: 11, size: 32, seed: 5, ..Default::default() }).unwrap();
        let folder = ImageFolder::open(&data, &SkipLog::new()).unwrap();
        std::fs::write(data.join(&folder.records[2].rel_path), b"not an image").unwrap();
        let enc = encoder::load::<Cpu>("posenet", &WeightSource::Random(3), Some(32), &Default::default()).unwrap();
        (enc, folder)
    }

    fn opts(batch_size: usize, resume: bool) -> ToFile {
        ToFile { batch_size, resume, ..ToFile::default() }
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("codes")).collect();
        v.sort();
        v
    }

    /// A write of the file that fails once every image is encoded (here: a folder appears
    /// where the file goes) keeps the codes for --resume, which writes the file from them.
    #[test]
    fn a_failed_final_write_is_resumed_without_encoding_again() {
        let dir = scratch("final");
        let (enc, folder) = setup(&dir);
        let (taps, dev) = (vec!["fc7".to_string()], Default::default());
        let whole = dir.join("whole.safetensors");
        extract_to_file(&enc, &folder, &taps, &whole, &opts(4, false), &dev).unwrap();
        let out = dir.join("codes.safetensors");
        let block = |d: &Done| {
            if d.records == 11 {
                std::fs::create_dir_all(out.join("in-the-way"))?;
            }
            Ok(())
        };
        let err = format!("{:#}", write_codes(&enc, &folder, &taps, &out, &opts(4, false), &dev, Duration::from_secs(3600), block).unwrap_err());
        assert!(err.contains("--resume writes the file"), "{err}");
        std::fs::remove_dir_all(&out).unwrap();
        let encoded = std::cell::Cell::new(0);
        let count = |d: &Done| {
            encoded.set(d.records);
            Ok(())
        };
        write_codes(&enc, &folder, &taps, &out, &opts(4, true), &dev, Duration::ZERO, count).unwrap();
        assert_eq!(encoded.get(), 0, "nothing encoded again");
        assert_eq!(leftovers(&dir), ["codes.safetensors"]);
        assert_eq!(CodeFile::read(&out).unwrap(), CodeFile::read(&whole).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Posenet's `pose` tap beside the rendered images' camera pose: the tap keeps its name,
    /// the camera pose is `camera_pose`, in every format; without a camera pose, `pose` is the tap.
    #[test]
    fn the_pose_tap_and_the_camera_pose_are_both_kept() {
        let dir = scratch("pose");
        let (enc, folder) = setup(&dir);
        let (taps, dev) = (vec!["pose".to_string(), "fc7".to_string()], Default::default());
        let whole = CodeFile::read(&{
            let p = dir.join("plain.safetensors");
            extract_to_file(&enc, &folder, &taps[1..], &p, &opts(4, false), &dev).unwrap();
            p
        })
        .unwrap();
        for name in ["codes.safetensors", "codes.npz", "codes.pt"] {
            let out = dir.join(name);
            extract_to_file(&enc, &folder, &taps, &out, &opts(4, false), &dev).unwrap();
            let file = CodeFile::read(&out).unwrap();
            assert_eq!(file.codes["pose"].shape(), [10, crate::encoder::posenet::POSE_DIM], "{name}");
            assert_eq!((&file.poses, &file.labels, &file.codes["fc7"]), (&whole.poses, &whole.labels, &whole.codes["fc7"]), "{name}");
            assert!(file.poses.is_some());
            let (_, rows) = CodeFile::open_tap_as(&out, "pose", None).unwrap();
            assert_eq!(rows.rows(&[3]).unwrap(), file.codes["pose"].to_f32()[3 * 4..4 * 4], "{name}");
            let said = crate::info::describe(&out).unwrap();
            assert!(said.contains("pose [4] (") && said.contains("pose: azimuth, elevation"), "{name}: {said}");
        }
        // The same file without camera poses: `pose` is the tap.
        let mut bare = CodeFile::read(&dir.join("codes.safetensors")).unwrap();
        bare.poses = None;
        bare.write(&dir.join("bare.safetensors")).unwrap();
        let back = CodeFile::read(&dir.join("bare.safetensors")).unwrap();
        assert_eq!((back.poses.is_none(), back.codes["pose"].shape()), (true, [10, 4].as_slice()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_stopped_extraction_resumes_to_the_same_file() {
        let dir = scratch("resume");
        let (enc, folder) = setup(&dir);
        let taps = vec!["conv5".to_string(), "fc7".to_string()];
        let dev = Default::default();
        let whole = dir.join("whole.safetensors");
        assert_eq!(extract_to_file(&enc, &folder, &taps, &whole, &opts(4, false), &dev).unwrap(), 10);
        let out = dir.join("codes.safetensors");
        let stop = |records: usize| move |d: &Done| if d.records >= records { bail!("stopped at {}", d.records) } else { Ok(()) };
        // Stopped after the second batch of 3 (records 0..6 done, record 2 unreadable).
        let err = write_codes(&enc, &folder, &taps, &out, &opts(3, false), &dev, Duration::ZERO, stop(6)).unwrap_err();
        assert!(format!("{err:#}").contains("--resume"), "{err:#}");
        assert_eq!(leftovers(&dir), ["codes.safetensors.0.part", "codes.safetensors.1.part", "codes.safetensors.progress.json"]);
        let said = stopped(&out).unwrap().expect("a stopped extraction");
        assert!(said.contains("6 of 11 images done (1 unreadable), taps conv5,fc7, posenet (weights random:3), codes as F32"), "{said}");
        assert_eq!(crate::info::describe(&out).unwrap(), said, "`info` on the file to be");
        // A kill between writing rows and recording them leaves rows the journal does not count.
        std::fs::OpenOptions::new().append(true).open(dir.join("codes.safetensors.0.part")).unwrap().write_all(&[7u8; 20]).unwrap();
        // Without --resume the stopped run is not overwritten; with other taps it cannot go on.
        let err = extract_to_file(&enc, &folder, &taps, &out, &opts(3, false), &dev).unwrap_err().to_string();
        assert!(err.contains("stopped after 6 of 11 images") && err.contains("--resume"), "{err}");
        let err = extract_to_file(&enc, &folder, &taps[1..], &out, &opts(3, true), &dev).unwrap_err().to_string();
        assert!(err.contains("taps conv5,fc7 (now fc7)"), "{err}");
        let other = encoder::load::<Cpu>("posenet", &WeightSource::Random(4), Some(32), &dev).unwrap();
        let err = extract_to_file(&other, &folder, &taps, &out, &opts(3, true), &dev).unwrap_err().to_string();
        assert!(err.contains("weights random:3 (now random:4)"), "{err}");
        // Stopped once more, then finished with another batch size.
        write_codes(&enc, &folder, &taps, &out, &opts(2, true), &dev, Duration::ZERO, stop(8)).unwrap_err();
        assert_eq!(extract_to_file(&enc, &folder, &taps, &out, &opts(5, true), &dev).unwrap(), 10);
        assert_eq!(leftovers(&dir), ["codes.safetensors"], "parts and journal are gone");
        let (a, b) = (CodeFile::read(&whole).unwrap(), CodeFile::read(&out).unwrap());
        assert_eq!(a.codes, b.codes);
        assert_eq!((a.ids.len(), &a.ids, &a.labels, &a.poses), (10, &b.ids, &b.labels, &b.poses));
        assert!(!b.ids.contains(&folder.records[2].rel_path));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn codes_stored_as_halves_read_back_as_the_rounded_f32_codes() {
        let dir = scratch("dtype");
        let (enc, folder) = setup(&dir);
        let (taps, dev) = (vec!["conv5".to_string(), "fc7".to_string()], Default::default());
        let whole = CodeFile::read(&{
            let p = dir.join("f32.safetensors");
            extract_to_file(&enc, &folder, &taps, &p, &opts(4, false), &dev).unwrap();
            p
        })
        .unwrap();
        let round: [(Dtype, fn(f32) -> f32); 2] = [(Dtype::F16, |v| half::f16::from_f32(v).to_f32()), (Dtype::BF16, |v| half::bf16::from_f32(v).to_f32())];
        for (dtype, round) in round {
            for name in ["codes.safetensors", "codes.npz", "codes.pt"] {
                let out = dir.join(format!("{dtype:?}-{name}"));
                let written = extract_to_file(&enc, &folder, &taps, &out, &ToFile { dtype, ..opts(3, false) }, &dev);
                if dtype == Dtype::BF16 && name.ends_with("npz") {
                    assert!(written.unwrap_err().to_string().contains("NumPy has no bfloat16"));
                    continue;
                }
                written.unwrap();
                let half = CodeFile::read(&out).unwrap();
                for tap in &taps {
                    let want: Vec<f32> = whole.codes[tap].to_f32().iter().map(|&v| round(v)).collect();
                    assert_eq!(half.codes[tap].to_f32(), want, "{dtype:?} {name} {tap}");
                    assert!(want.iter().zip(whole.codes[tap].to_f32()).any(|(a, b)| *a != b), "rounded");
                }
                assert_eq!((&half.ids, &half.labels, &half.provenance), (&whole.ids, &whole.labels, &whole.provenance));
                let (_, rows) = CodeFile::open_tap_as(&out, "fc7", None).unwrap();
                assert!(matches!(rows, crate::data::codes::TapCodes::File(_)), "{dtype:?} {name}");
                let (all, d) = (half.codes["fc7"].to_f32(), half.codes["fc7"].shape()[1]);
                assert!(rows.rows(&[9, 0]).unwrap() == [&all[9 * d..10 * d], &all[..d]].concat(), "rows of the {dtype:?} {name}");
            }
        }
        // A stopped run goes on only in the type it began with.
        let out = dir.join("codes.safetensors");
        let stop = |d: &Done| if d.records >= 4 { bail!("stopped") } else { Ok(()) };
        write_codes(&enc, &folder, &taps, &out, &ToFile { dtype: Dtype::F16, ..opts(2, false) }, &dev, Duration::ZERO, stop).unwrap_err();
        let err = extract_to_file(&enc, &folder, &taps, &out, &opts(2, true), &dev).unwrap_err().to_string();
        assert!(err.contains("codes stored as F16 (now F32)"), "{err}");
        extract_to_file(&enc, &folder, &taps, &out, &ToFile { dtype: Dtype::F16, ..opts(5, true) }, &dev).unwrap();
        assert_eq!(CodeFile::read(&out).unwrap(), CodeFile::read(&dir.join("F16-codes.safetensors")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_error_before_progress_is_recorded_leaves_nothing() {
        let dir = scratch("early");
        let (enc, folder) = setup(&dir);
        let out = dir.join("codes.npz");
        let err = write_codes(&enc, &folder, &["fc7".into()], &out, &opts(3, false), &Default::default(), Duration::from_secs(3600), |_| bail!("boom")).unwrap_err();
        assert_eq!(err.to_string(), "boom");
        assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
        // --resume with nothing to go on from starts afresh.
        assert_eq!(extract_to_file(&enc, &folder, &["fc7".into()], &out, &opts(4, true), &Default::default()).unwrap(), 10);
        assert_eq!(leftovers(&dir), ["codes.npz"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
