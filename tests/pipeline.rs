//! End-to-end CLI tests of the spine: render → train-encoder → extract, with bad input.
use preimage::data::codes::CodeFile;
use preimage::encoder::Resize;
use std::path::Path;

mod common;
use common::{ok, preimage, s};

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn render_is_deterministic_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    ok(&["render", "--out", s(&a), "--count", "40", "--size", "32", "--seed", "7"]);
    ok(&["render", "--out", s(&b), "--count", "40", "--size", "32", "--seed", "7"]);
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.len(), 40 + 2, "40 images + manifest.csv + classes.csv");
    assert_eq!(fa, fb);
    let c = dir.path().join("c");
    ok(&["render", "--out", s(&c), "--count", "40", "--size", "32", "--seed", "8"]);
    assert_ne!(files(&c), fa, "another seed gives other images");
    let (success, text) = preimage(&["render", "--out", s(&c), "--count", "4", "--classes", "chair,spaceship"]);
    assert!(!success && text.contains("spaceship") && text.contains("chair"), "{text}");
}

#[test]
fn train_extract_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&["render", "--out", s(&data), "--count", "60", "--size", "32", "--seed", "1", "--classes", "chair,mug,cone"]);
    // A corrupt file, an empty one and a text file among the images: skipped, named, counted.
    std::fs::write(data.join("chair/zz_corrupt.png"), b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    std::fs::write(data.join("mug/zz_empty.jpg"), b"").unwrap();
    std::fs::write(data.join("mug/notes.txt"), b"hello").unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(
        &cfg,
        "[model]\ninput_size = 32\nconv = [4, 4, 4, 4, 4]\nfc = [8, 8]\n\n[train]\nepochs = 1\nbatch_size = 16\nlr = 0.001\nseed = 3\n",
    )
    .unwrap();
    let run = dir.path().join("run");
    let text = ok(&["train-encoder", "--config", s(&cfg), "--data", s(&data), "--out", s(&run)]);
    assert!(text.contains("zz_corrupt.png") && text.contains("zz_empty.jpg") && text.contains("notes.txt"), "{text}");
    assert!(text.contains("val accuracy"), "{text}");
    for f in ["encoder.safetensors", "checkpoint/model.mpk", "checkpoint/optim.mpk", "checkpoint/state.json", "config.toml", "metrics.json"] {
        assert!(run.join(f).exists(), "missing {f}");
    }
    assert!(std::fs::read_dir(run.join("tb")).unwrap().count() > 0);
    // Same run folder without --resume: refused; with --resume and more epochs: continues.
    let (success, text) = preimage(&["train-encoder", "--config", s(&cfg), "--data", s(&data), "--out", s(&run)]);
    assert!(!success && text.contains("--resume"), "{text}");
    let text = ok(&["train-encoder", "--config", s(&cfg), "--data", s(&data), "--out", s(&run), "--resume", "--epochs", "2"]);
    assert!(text.contains("resuming") && text.contains("epoch   2/2"), "{text}");
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("checkpoint/state.json")).unwrap()).unwrap();
    assert_eq!(state["epoch"], 2);
    // Resuming gives the same training as running two epochs straight (same seed, same order).
    let straight = dir.path().join("straight");
    ok(&["train-encoder", "--config", s(&cfg), "--data", s(&data), "--out", s(&straight), "--epochs", "2"]);
    let metrics = |run: &Path| -> Vec<(f64, f64)> {
        let m: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
        m.iter().map(|e| (e["loss"].as_f64().unwrap(), e["accuracy"].as_f64().unwrap())).collect()
    };
    assert_eq!(metrics(&run), metrics(&straight));

    // Extract two taps; unreadable files are skipped without shifting labels. (`--batch-size`
    // is `--batch`'s alias, as `--batch` is train-decoder's `--batch-size`'s, below.)
    let codes = dir.path().join("codes.safetensors");
    let text = ok(&["extract", "--encoder", "posenet", "--run", s(&run), "--layer", "conv5,fc7", "--data", s(&data), "--out", s(&codes), "--batch-size", "7"]);
    assert!(text.contains("skipped 3"), "{text}");
    let cf = CodeFile::read(&codes).unwrap();
    assert_eq!(cf.len(), 60);
    assert_eq!(cf.tap("fc7").unwrap().shape(), &[60, 8]);
    assert_eq!(cf.tap("conv5").unwrap().shape(), &[60, 4, 4, 4]);
    let labels = cf.labels.as_ref().unwrap();
    let classes = ["chair", "cone", "mug"];
    for (id, &l) in cf.ids.iter().zip(labels) {
        assert_eq!(id.split('/').next().unwrap(), classes[l as usize], "label of {id}");
    }
    let poses = cf.poses.as_ref().unwrap();
    assert!(poses.iter().all(|p| (0.0..360.0).contains(&p[0])));
    let pv = cf.provenance.as_ref().expect("extract records where the codes came from");
    assert_eq!(pv.encoder, "posenet");
    assert_eq!(pv.input_size, [32, 32]);
    assert_eq!(pv.label_classes.as_deref(), Some(&classes.map(String::from)[..]), "label indexes the folder's classes");
    assert_eq!(pv.weights_sha256, preimage::util::sha256_file(&run.join("encoder.safetensors")).unwrap());
    // One tap alone: the others are not loaded; a missing tap names those the file holds.
    let fc7 = CodeFile::read_tap(&codes, "fc7").unwrap();
    assert_eq!(fc7.codes.keys().collect::<Vec<_>>(), ["fc7"]);
    assert_eq!(fc7.codes["fc7"], cf.codes["fc7"]);
    assert_eq!((&fc7.ids, &fc7.labels, &fc7.provenance), (&cf.ids, &cf.labels, &cf.provenance));
    let err = format!("{:#}", CodeFile::read_tap(&codes, "fc6").unwrap_err());
    assert!(err.contains("codes.safetensors") && err.contains("'fc6'") && err.contains("conv5, fc7"), "{err}");
    // Round trip through write/read keeps everything.
    let again = dir.path().join("again.safetensors");
    cf.write(&again).unwrap();
    assert_eq!(CodeFile::read(&again).unwrap(), cf);
    // The file the command streamed batch by batch holds what extraction in memory gives, and
    // no part file is left beside it.
    let device = Default::default();
    let loaded = preimage::encoder::load::<preimage::device::Cpu>("posenet", &preimage::encoder::WeightSource::Run(run.clone()), None, &device).unwrap();
    let folder = preimage::data::folder::ImageFolder::open(&data, &preimage::data::folder::SkipLog::new()).unwrap();
    let taps = ["conv5".to_string(), "fc7".to_string()];
    let mut in_memory = preimage::extract::extract(&loaded, &folder, &taps, 7, &device).unwrap();
    for (tap, a) in std::mem::take(&mut in_memory.codes) {
        let (x, y) = (a.to_f32(), cf.tap(&tap).unwrap().to_f32());
        assert_eq!(a.shape(), cf.tap(&tap).unwrap().shape(), "{tap}");
        assert!(x.iter().zip(&y).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + x.abs())), "{tap} differs");
    }
    assert_eq!(in_memory, CodeFile { codes: Default::default(), ..cf.clone() });
    let parts: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".part")).collect();
    assert!(parts.is_empty(), "part files left: {parts:?}");
    // `--resume` with no stopped extraction to go on with starts afresh (what it continues is
    // tested in src/extract.rs); `--dtype float16` stores halves, read back as f32.
    let resumed = dir.path().join("resumed.safetensors");
    let text = ok(&["extract", "--run", s(&run), "--layer", "conv5,fc7", "--data", s(&data), "--out", s(&resumed), "--batch", "16", "--resume", "--dtype", "float16"]);
    assert!(text.contains("wrote 60 codes") && !text.contains("resuming"), "{text}");
    let halves = CodeFile::read(&resumed).unwrap();
    assert_eq!(halves.ids, cf.ids);
    let (x, y) = (halves.tap("fc7").unwrap().to_f32(), cf.tap("fc7").unwrap().to_f32());
    assert!(x.iter().zip(&y).all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs() + 1e-6), "halves round to nearest");
    let (header, _) = preimage::tensorfile::read_header(&resumed).unwrap();
    let dtypes: Vec<String> = header.iter().map(|(name, dtype, _)| format!("{name} {dtype:?}")).collect();
    assert!(dtypes.contains(&"conv5 F16".into()) && dtypes.contains(&"fc7 F16".into()), "{dtypes:?}");
    let (success, text) = preimage(&["extract", "--run", s(&run), "--layer", "fc7", "--data", s(&data), "--out", s(&resumed), "--dtype", "int8"]);
    assert!(!success && text.contains("'int8' is not a float type to store codes in: f32, f16 or bf16"), "{text}");
    assert!(!dir.path().join("resumed.safetensors.progress.json").exists());

    // A folder as --out is refused before any encoding, and so is a batch of 0.
    let (success, text) = preimage(&["extract", "--run", s(&run), "--layer", "fc7", "--data", s(&data), "--out", s(dir.path())]);
    assert!(!success && text.contains("is a folder; name the code file"), "{text}");
    let (success, text) = preimage(&["extract", "--run", s(&run), "--layer", "fc7", "--data", s(&data), "--out", s(&codes), "--batch", "0"]);
    assert!(!success && text.contains("'0' for '--batch <BATCH>': must be at least 1"), "{text}");

    // Unknown tap: error listing valid ones.
    let (success, text) = preimage(&["extract", "--encoder", "posenet", "--run", s(&run), "--layer", "fc9", "--data", s(&data), "--out", s(&codes)]);
    assert!(!success && text.contains("fc9") && text.contains("conv1") && text.contains("pose"), "{text}");
}

#[test]
fn extract_from_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    ok(&["render", "--out", s(&data), "--count", "24", "--size", "32", "--seed", "2", "--classes", "chair,mug,cone"]);
    // Photos picked by hand: two files beside a folder of others, one file named twice.
    let photos = dir.path().join("photos");
    std::fs::create_dir_all(photos.join("more")).unwrap();
    let picked = ["chair/000000.png", "chair/000003.png", "mug/000001.png", "cone/000002.png", "mug/000004.png"];
    for (i, rel) in picked.iter().enumerate() {
        let to = if i < 2 { photos.join(format!("p{i}.png")) } else { photos.join(format!("more/q{i}.png")) };
        std::fs::copy(data.join(rel), to).unwrap();
    }
    let enc = ["extract", "--encoder", "posenet", "--input-size", "32", "--seed", "4", "--layer", "fc6,fc7"];
    let all = dir.path().join("all.safetensors");
    ok(&[&enc[..], &["--data", s(&data), "--out", s(&all)]].concat());
    let picked_codes = dir.path().join("picked.safetensors");
    let (p0, p1, more) = (photos.join("p0.png"), photos.join("p1.png"), photos.join("more"));
    ok(&[&enc[..], &["--data", s(&p1), s(&more), s(&p0), s(&p1), "--out", s(&picked_codes)]].concat());
    let (all, cf) = (CodeFile::read(&all).unwrap(), CodeFile::read(&picked_codes).unwrap());
    // Ids are the paths below the folder holding them all, in the order given, each once.
    assert_eq!(cf.ids, ["p1.png", "more/q2.png", "more/q3.png", "more/q4.png", "p0.png"]);
    assert_eq!((cf.labels.as_ref(), cf.poses.as_ref()), (None, None), "files carry no label or pose");
    let pv = cf.provenance.as_ref().unwrap();
    assert_eq!(pv.data_root.as_deref(), Some(std::fs::canonicalize(&photos).unwrap().to_str().unwrap()));
    assert_eq!(pv.weights_sha256, "random:4");
    // Each code is the one the whole folder's extraction gives for the same image.
    let source = ["chair/000003.png", "mug/000001.png", "cone/000002.png", "mug/000004.png", "chair/000000.png"];
    for tap in ["fc6", "fc7"] {
        let (a, b) = (all.tap(tap).unwrap(), cf.tap(tap).unwrap());
        let d = b.shape()[1];
        let (a, b) = (a.to_f32(), b.to_f32());
        for (row, src) in source.iter().enumerate() {
            let j = all.ids.iter().position(|id| id == src).unwrap();
            let (x, y) = (&b[row * d..(row + 1) * d], &a[j * d..(j + 1) * d]);
            assert!(x.iter().zip(y).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "{tap} of {src}");
        }
    }
    // A decoder trains from them: its targets are found by those ids (p0.png lies beside the
    // folder `more`, which a scan of `photos` would take for a class), the random encoder by its seed.
    let run = dir.path().join("dec");
    let text = ok(&["train-decoder", "--config", "configs/decoder-fc7.toml", "--codes", s(&picked_codes), "--out", s(&run), "--epochs", "1", "--batch", "2"]);
    assert!(text.contains("best epoch 1"), "{text}");
    // A file that is not there is named.
    let (success, text) = preimage(&[&enc[..], &["--data", s(&p0), "nothere.png", "--out", s(&picked_codes)]].concat());
    assert!(!success && text.contains("nothere.png"), "{text}");
}

#[test]
fn config_errors_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[train]\nepochs = 1\nbatch_size = 4\nlr = 0.1\nlearning_rate = 3\n").unwrap();
    let (success, text) = preimage(&["train-encoder", "--config", s(&cfg), "--data", "/nonexistent"]);
    assert!(!success, "{text}");
    assert!(text.contains("bad.toml") && text.contains("learning_rate"), "{text}");
    std::fs::write(&cfg, "[train]\nepochs = \"many\"\nbatch_size = 4\nlr = 0.1\n").unwrap();
    let (_, text) = preimage(&["train-encoder", "--config", s(&cfg), "--data", "/nonexistent"]);
    assert!(text.contains("bad.toml") && text.contains("epochs"), "{text}");
    // Adam's settings are checked as torch.optim.Adam checks them, before any data is read.
    for (line, want) in [("lr = -0.1", "train.lr must be a number of at least 0, got -0.1"), ("lr = 0.1\nbetas = [0.9, 1.0]", "train.betas must lie in [0, 1), got 1"), ("lr = 0.1\nweight_decay = -1e-4", "train.weight_decay must be a number of at least 0, got -0.0001"), ("lr = 0.1\nval_fraction = 1.5", "train.val_fraction must be in [0, 1)")] {
        std::fs::write(&cfg, format!("[train]\nepochs = 1\nbatch_size = 4\n{line}\n")).unwrap();
        let (success, text) = preimage(&["train-encoder", "--config", s(&cfg), "--data", "/nonexistent"]);
        assert!(!success && text.contains(want), "{line}: {text}");
    }
    // The shipped config parses.
    let shipped: preimage::train::encoder::EncoderTrainConfig =
        preimage::config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/posenet.toml")).unwrap();
    assert_eq!(shipped.model.input_size, 64);
}

#[test]
fn cuda_request_without_cuda_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let (success, text) = preimage(&["train-encoder", "--device", "cuda", "--data", "/nonexistent"]);
    assert!(!success && text.contains("CUDA") && !text.contains("panicked"), "{text}");
}

/// Several devices are for data-parallel training; elsewhere they are an error naming that.
#[test]
fn several_devices_for_a_one_device_command_is_an_error() {
    let (success, text) = preimage(&["reconstruct", "--decoder", "/nonexistent", "--codes", "/nonexistent.safetensors", "--out", "/tmp/x", "--device", "cuda:0,cuda:1"]);
    assert!(!success && text.contains("one device") && text.contains("train-decoder"), "{text}");
    let (success, text) = preimage(&["train-decoder", "--config", "/nonexistent.toml", "--device", "cuda:0,cpu"]);
    assert!(!success && text.contains("'cuda:0,cpu'") && text.contains("the CPU is one device"), "{text}");
}

#[test]
fn bench_dates_are_utc_calendar_dates() {
    use preimage::bench::utc_date;
    // Against Python's calendar.timegm: the epoch, a leap day, a century's March, a year's end.
    for (secs, date) in [(0, "1970-01-01 00:00"), (1_709_210_040, "2024-02-29 12:34"), (951_868_800, "2000-03-01 00:00"), (946_684_740, "1999-12-31 23:59"), (1_796_601_540, "2026-12-06 23:59")] {
        assert_eq!(utc_date(secs), date, "{secs}");
    }
}

#[test]
fn bench_smoke_at_tiny_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let text = ok(&["bench", "--quick", "--runs", "2", "--warmup", "1", "--json", s(&json)]);
    let timings = preimage::bench::read_timings(&json).unwrap();
    // The file says where it was measured, and the table's head repeats it.
    let context = preimage::bench::read_report(&json).unwrap().context.expect("a context in the JSON");
    assert!(context.program.starts_with("preimage ") && context.device == "cpu" && context.gpu.is_none() && context.threads >= 1, "{context:?}");
    assert!(context.date.len() == 16 && context.date.starts_with("20"), "{context:?}");
    assert!(text.lines().next().unwrap().starts_with(&format!("{} on cpu", context.program)), "{text}");
    let names: Vec<&str> = timings.iter().map(|t| t.name.as_str()).collect();
    for w in ["decoder_step_a_512_to_64", "decoder_step_b_fc6_to_227", "encoder_forward_posenet_64", "optim_iteration_posenet_conv5", "decoder_forward_1_image", "extract_posenet_4_taps"] {
        assert!(names.contains(&w), "{w} missing from {names:?}");
        assert!(text.contains(w));
    }
    assert!(timings.iter().all(|t| t.min_ms <= t.median_ms && t.median_ms <= t.max_ms && t.runs == 2));
    // A reference file adds the ratio column: compare the run with itself → ratio 1.00.
    let text = ok(&["bench", "--quick", "--runs", "2", "--warmup", "0", "--pytorch", s(&json)]);
    assert!(text.contains("ratio"), "{text}");
    // Rounds merge per workload to the round with the median median: three copies of the
    // timings with medians ×1, ×3, ×2 give the ×2 round, min and max over all, runs added up.
    let scaled = |k: f64| {
        let path = dir.path().join(format!("round-{k}.json"));
        let t: Vec<_> = timings.iter().cloned().map(|mut t| {
            (t.median_ms, t.min_ms, t.max_ms) = (t.median_ms * k, t.min_ms * k, t.max_ms * k);
            t
        }).collect();
        std::fs::write(&path, serde_json::to_string(&t).unwrap()).unwrap();
        path
    };
    let rounds = [scaled(1.0), scaled(3.0), scaled(2.0)];
    let merged = dir.path().join("merged.json");
    let text = ok(&["bench", "--table", s(&rounds[0]), s(&rounds[1]), s(&rounds[2]), "--pytorch", s(&json), "--json", s(&merged)]);
    let merged = preimage::bench::read_timings(&merged).unwrap();
    assert_eq!(merged.len(), timings.len());
    for (m, t) in merged.iter().zip(&timings) {
        assert_eq!(m.name, t.name);
        assert!((m.median_ms - 2.0 * t.median_ms).abs() < 1e-9 && (m.min_ms - t.min_ms).abs() < 1e-9 && (m.max_ms - 3.0 * t.max_ms).abs() < 1e-9 && m.runs == 6, "{m:?} from {t:?}");
    }
    assert!(text.contains("decoder_step_a_512_to_64") && text.contains("2.00"), "{text}");
    // Bare lists of timings (files from before the context) merge too; the reference's context
    // is printed above the table.
    assert!(preimage::bench::read_report(&rounds[0]).unwrap().context.is_none());
    assert!(text.lines().next().unwrap().starts_with(&format!("{} on cpu", context.program)), "{text}");
    std::fs::write(dir.path().join("bad.json"), r#"{"context": null, "workloads": [{"name": "x"}]}"#).unwrap();
    let (success, text) = preimage(&["bench", "--table", s(&dir.path().join("bad.json"))]);
    assert!(!success && text.contains("bad.json is not a bench JSON file") && text.contains("median_ms"), "{text}");
    let (success, text) = preimage(&["bench", "--table", "/nonexistent.json"]);
    assert!(!success && text.contains("/nonexistent.json"), "{text}");
    let (success, text) = preimage(&["bench", "--quick", "--pytorch", "/nonexistent.json"]);
    assert!(!success && text.contains("/nonexistent.json"), "{text}");
    // `--only` selects by any fragment of a workload's name.
    let only = |sel: &str| {
        let json = dir.path().join(format!("only-{sel}.json"));
        ok(&["bench", "--quick", "--runs", "1", "--warmup", "0", "--only", sel, "--json", s(&json)]);
        preimage::bench::read_timings(&json).unwrap().into_iter().map(|t| t.name).collect::<Vec<_>>()
    };
    assert_eq!(only("optim_iteration_posenet"), ["optim_iteration_posenet_conv5"]);
    assert_eq!(only("posenet"), ["encoder_forward_posenet_64", "optim_iteration_posenet_conv5", "extract_posenet_4_taps"]);
    let (success, text) = preimage(&["bench", "--quick", "--only", "posenet,alexnt"]);
    assert!(!success && text.contains("'alexnt' matches no workload"), "{text}");
}

/// `--val-data`: a validation folder of its own (ImageNet's `val/` beside `train/`), its class
/// folders matched to the training classes by name; every training image trains.
#[test]
fn train_encoder_validates_on_a_folder_of_its_own() {
    use preimage::data::folder::{ImageFolder, SkipLog};
    let dir = tempfile::tempdir().unwrap();
    let (train, val, odd) = (dir.path().join("train"), dir.path().join("val"), dir.path().join("odd"));
    ok(&["render", "--out", s(&train), "--count", "48", "--size", "32", "--seed", "1", "--classes", "chair,mug,cone"]);
    // Two of the three classes: sorted, mug is class 1 here but class 2 (chair, cone, mug) in training.
    ok(&["render", "--out", s(&val), "--count", "12", "--size", "32", "--seed", "9", "--classes", "mug,chair"]);
    ok(&["render", "--out", s(&odd), "--count", "4", "--size", "32", "--seed", "9", "--classes", "star,chair"]);
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, "[model]\ninput_size = 32\nconv = [4, 4, 4, 4, 4]\nfc = [8, 8]\n\n[train]\nepochs = 1\nbatch_size = 16\nlr = 0.001\nseed = 3\n").unwrap();
    let run = dir.path().join("run");
    let text = ok(&["train-encoder", "--config", s(&cfg), "--data", s(&train), "--val-data", s(&val), "--out", s(&run)]);
    assert!(text.contains("48 train / 12 val"), "{text}");
    let saved: preimage::train::encoder::EncoderTrainConfig = preimage::config::load(&run.join("config.toml")).unwrap();
    assert_eq!(saved.train.val_data.as_deref(), Some(val.as_path()), "the run records its validation folder");

    // The validation folder's labels index the training classes.
    let skips = SkipLog::new();
    let classes = ImageFolder::open(&train, &skips).unwrap().classes;
    let mut v = ImageFolder::open(&val, &skips).unwrap();
    v.relabel_to(&classes, &Default::default()).unwrap();
    for r in &v.records {
        let want = classes.iter().position(|c| r.rel_path.starts_with(&format!("{c}/"))).unwrap();
        assert_eq!(r.label, Some(want), "{}", r.rel_path);
    }
    // What was logged is the trained network on those images, so labelled.
    let m: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let dev = Default::default();
    let net = preimage::encoder::load::<preimage::device::Cpu>("posenet", &preimage::encoder::WeightSource::Run(run.clone()), None, &dev).unwrap().net;
    let (loss, acc, _) = preimage::train::encoder::evaluate(&net, &v, &(0..v.len()).collect::<Vec<_>>(), 64, 1.0, &dev).unwrap();
    assert!((m[0]["loss"].as_f64().unwrap() - loss).abs() <= 1e-5 * loss && m[0]["accuracy"].as_f64().unwrap() == acc, "{m:?} vs {loss} {acc}");

    // A class the network was not trained on has no label: an error naming it.
    let (success, text) = preimage(&["train-encoder", "--config", s(&cfg), "--data", s(&train), "--val-data", s(&odd), "--out", s(&dir.path().join("x"))]);
    assert!(!success && text.contains("'star'") && text.contains("chair, cone, mug"), "{text}");
}

/// `--resize` sets the shorter side before the centre crop (torchvision's `Resize(R)` +
/// `CenterCrop(S)`): with R = S a 96×64 image is only cropped, so its codes are those of its
/// centre 64×64 pixels; the code file records it.
#[test]
fn resize_shorter_side_or_exact_size_before_the_crop() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let wide = image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 5 + y * 3) as u8, ((x * y) % 251) as u8, (x ^ y) as u8 * 4]));
    wide.save(p("wide.png")).unwrap();
    image::imageops::crop_imm(&wide, 16, 0, 64, 64).to_image().save(p("centre.png")).unwrap();
    let extract = |img: &str, out: &str, resize: Option<&str>| {
        let mut args = vec!["extract", "--encoder", "alexnet", "--input-size", "64", "--layer", "conv2", "--data"];
        let (img, out) = (p(img), p(out));
        args.extend([s(&img), "--out", s(&out)]);
        if let Some(r) = resize {
            args.extend(["--resize", r]);
        }
        ok(&args);
        CodeFile::read(&out).unwrap()
    };
    let (cropped, centre, resized) = (extract("wide.png", "a.safetensors", Some("64")), extract("centre.png", "b.safetensors", Some("64")), extract("wide.png", "c.safetensors", None));
    let (a, b, c) = (cropped.tap("conv2").unwrap().to_f32(), centre.tap("conv2").unwrap().to_f32(), resized.tap("conv2").unwrap().to_f32());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "cropping alone gives the centre's codes");
    assert!(a.iter().zip(&c).any(|(x, y)| (x - y).abs() > 1e-3), "the default resizes first (to 73)");
    assert_eq!(cropped.provenance.unwrap().preprocessing.resize, Resize::Short(64));
    assert_eq!(resized.provenance.unwrap().preprocessing.resize, Resize::Short(73));
    let text = ok(&["taps", "--encoder", "alexnet", "--input-size", "64", "--resize", "64"]);
    assert!(text.contains("input 64×64: shorter side resized to 64, then centre crop"), "{text}");

    // HxW resizes to exactly that, the aspect not kept (torchvision's `Resize((64, 64))`): the
    // codes of the image squashed to 64×64 beforehand.
    preimage::data::resize::pil_bilinear(&wide, 64, 64).save(p("squashed.png")).unwrap();
    let (exact, squashed) = (extract("wide.png", "d.safetensors", Some("64x64")), extract("squashed.png", "e.safetensors", Some("64")));
    let (d, e) = (exact.tap("conv2").unwrap().to_f32(), squashed.tap("conv2").unwrap().to_f32());
    assert!(d.iter().zip(&e).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs())), "64x64 squashes the whole image");
    assert!(d.iter().zip(&a).any(|(x, y)| (x - y).abs() > 1e-3), "squashing differs from cropping");
    let recorded = exact.provenance.unwrap();
    assert_eq!(recorded.preprocessing.resize, Resize::Exact([64, 64]));
    assert!(recorded.preprocessing.pixel_range.contains("resized to 64×64, aspect not kept"), "{}", recorded.preprocessing.pixel_range);
    let text = ok(&["taps", "--encoder", "alexnet", "--input-size", "64", "--resize", "72x96"]);
    assert!(text.contains("input 64×64: resized to 72×96, aspect not kept, then centre crop"), "{text}");
    for bad in ["0", "64x0", "x64", "64x64x3", "big"] {
        let (success, text) = preimage(&["taps", "--encoder", "alexnet", "--resize", bad]);
        assert!(!success && text.contains("--resize") && text.contains(&format!("'{bad}'")), "{bad}: {text}");
    }
}

/// Annotations beside the images in every class folder (Tiny ImageNet's `*_boxes.txt`): the
/// first ten are named, the rest counted, and the summary tells them from unreadable images.
#[test]
fn files_that_are_not_images_are_named_ten_times_then_counted() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    for c in 0..15 {
        let class = data.join(format!("n{c:02}"));
        std::fs::create_dir_all(class.join("images")).unwrap();
        image::RgbImage::from_pixel(8, 8, image::Rgb([c * 10, 0, 0])).save(class.join("images/a.png")).unwrap();
        std::fs::write(class.join(format!("n{c:02}_boxes.txt")), "a.png 0 0 1 1").unwrap();
    }
    std::fs::write(data.join("n03/images/broken.png"), b"not a png").unwrap();
    let out = dir.path().join("codes.safetensors");
    let text = ok(&["extract", "--encoder", "posenet", "--input-size", "32", "--layer", "fc7", "--data", s(&data), "--out", s(&out)]);
    assert_eq!(text.matches("not an image file").count(), 10, "{text}");
    assert!(text.contains("n00_boxes.txt") && !text.contains("n14_boxes.txt") && text.contains("counted at the end"), "{text}");
    assert!(text.contains("broken.png") && text.contains("skipped 16 files: 15 not images, 1 unreadable"), "{text}");
    assert_eq!(CodeFile::read(&out).unwrap().len(), 15);
}

/// `extract --out F.npz` writes NumPy's format: the same code file as the safetensors one when
/// read back (codes, labels, poses, ids, provenance), so decoders train from it; NumPy reads
/// each tap, the labels and the ids (checked where a Python with NumPy is at hand). A `.npy`
/// (one array) is refused with the reason.
#[test]
fn extract_writes_npz_and_torch_code_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["render", "--out", s(&p("data")), "--count", "10", "--size", "32", "--seed", "3", "--classes", "chair,mug"]);
    for out in ["c.npz", "c.safetensors", "c.pt"] {
        ok(&["extract", "--encoder", "posenet", "--input-size", "32", "--layer", "conv5,fc7", "--data", s(&p("data")), "--out", s(&p(out))]);
    }
    let (npz, st, pt) = (CodeFile::read(&p("c.npz")).unwrap(), CodeFile::read(&p("c.safetensors")).unwrap(), CodeFile::read(&p("c.pt")).unwrap());
    assert!(npz.provenance.is_some() && npz.poses.is_some() && npz.labels.is_some());
    assert_eq!(npz, st);
    assert_eq!(pt, st);
    // A `.pt` from extract is a code file in full (its metadata in the pickle), read by rows.
    let (_, rows) = CodeFile::open_tap_as(&p("c.pt"), "fc7", None).unwrap();
    assert!(matches!(rows, preimage::data::codes::TapCodes::File(_)));
    assert_eq!(rows.rows(&[7, 2]).unwrap(), [&st.codes["fc7"].to_f32()[7 * 512..8 * 512], &st.codes["fc7"].to_f32()[2 * 512..3 * 512]].concat());
    let cfg = p("dec.toml");
    std::fs::write(&cfg, "[model]\nfc = [16]\nbase_channels = 8\nup_channels = [8, 4, 4]\n[train]\nepochs = 1\nbatch_size = 4\nlr = 0.001\n").unwrap();
    for (codes, out) in [("c.npz", "dec"), ("c.pt", "dec-pt")] {
        let text = ok(&["train-decoder", "--config", s(&cfg), "--codes", s(&p(codes)), "--layer", "fc7", "--out", s(&p(out))]);
        assert!(text.contains("posenet fc7"), "{text}");
    }
    let losses = |run: &str| -> Vec<f64> {
        let m: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(p(run).join("metrics.json")).unwrap()).unwrap();
        m.iter().flat_map(|e| [e["train_loss"].as_f64().unwrap(), e["val_loss"].as_f64().unwrap()]).collect()
    };
    assert_eq!(losses("dec-pt"), losses("dec"));
    if let Some(python) = common::python_with_torch() {
        // PyTorch's own loader, as safe (weights only, its default since 2.6) and mapped.
        let script = format!(
            "import torch\nfor kw in [dict(weights_only=True), dict(mmap=True, weights_only=True)]:\n    f = torch.load({:?}, **kw)\n    print(tuple(f['conv5'].shape), f['conv5'].dtype, ' '.join(repr(float(v)) for v in f['fc7'][2, :3]), '|', ' '.join(map(str, f['label'].tolist())), f['ids'][:2], f['__metadata__']['encoder'])\nimport preimage\nt, ids, meta = preimage.load_codes({:?})\nprint('load_codes', sorted(t), ids[:2], meta['encoder'])\n",
            s(&p("c.pt")),
            s(&p("c.pt"))
        );
        let text = common::run_python(&python, &script);
        assert!(text.contains(&format!("load_codes ['conv5', 'fc7', 'label', 'pose'] ['{}', '{}'] posenet", st.ids[0], st.ids[1])), "{text}");
        let labels: Vec<String> = st.labels.as_ref().unwrap().iter().map(i64::to_string).collect();
        let row: Vec<String> = st.codes["fc7"].to_f32()[2 * 512..2 * 512 + 3].iter().map(|&v| format!("{:?}", v as f64)).collect();
        let want = format!("(10, 64, 4, 4) torch.float32 {} | {} ['{}', '{}'] posenet", row.join(" "), labels.join(" "), st.ids[0], st.ids[1]);
        assert_eq!(text.lines().filter(|l| *l == want).count(), 2, "{want}\n{text}");
    } else {
        eprintln!("skipped the torch.load read-back: no Python with torch (set PREIMAGE_PYTHON)");
    }
    let (success, text) = preimage(&["extract", "--encoder", "posenet", "--input-size", "32", "--layer", "fc7", "--data", s(&p("data")), "--out", s(&p("c.npy"))]);
    assert!(!success && text.contains("c.npy") && text.contains(".npz"), "{text}");
    let (success, text) = preimage(&["extract", "--encoder", "posenet", "--input-size", "32", "--layer", "fc7", "--data", s(&p("data")), "--out", s(&p("c.txt"))]);
    assert!(!success && text.contains("c.txt: name the code file .safetensors, .npz (NumPy) or .pt"), "{text}");
    let python = std::path::PathBuf::from(std::env::var_os("PREIMAGE_PYTHON").unwrap_or_else(|| "python3".into()));
    if !common::python_has(&python, "numpy") {
        eprintln!("skipped the NumPy read-back: no Python with numpy (set PREIMAGE_PYTHON)");
        return;
    }
    let labels: Vec<String> = st.labels.as_ref().unwrap().iter().map(i64::to_string).collect();
    let script = format!(
        "import numpy as np, json\nf = np.load({:?})\nprint(f['conv5'].shape, f['conv5'].dtype, ' '.join(repr(float(v)) for v in f['fc7'][2, :3]), '|', ' '.join(map(str, f['label'])), [str(i) for i in f['ids'][:2]], json.loads(str(f['__metadata__']))['encoder'])\n",
        s(&p("c.npz"))
    );
    let text = common::run_python(&python, &script);
    let fc7 = st.codes["fc7"].to_f32();
    assert!(text.contains("(10, 64, 4, 4) float32") && text.contains(&labels.join(" ")) && text.contains(&format!("['{}', '{}']", st.ids[0], st.ids[1])) && text.contains("posenet"), "{text}");
    let row: Vec<String> = fc7[2 * 512..2 * 512 + 3].iter().map(|&v| format!("{:?}", v as f64)).collect();
    assert!(text.contains(&format!("float32 {} |", row.join(" "))), "{row:?}: {text}");
}
