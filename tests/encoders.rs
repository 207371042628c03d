//! Encoders against torchvision: every tap of every fixture network, from both file formats,
//! matches the activation PyTorch computed (max abs difference < 1e-4).
use burn::tensor::{Tensor, TensorData};
use preimage::encoder::{self, WeightSource};
use preimage::tensorfile;
use std::path::PathBuf;

mod common;

type B = preimage::device::Cpu;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torchvision")
}

fn check(arch: &str, name: &str, ext: &str) {
    check_weights(arch, name, &fixtures().join(format!("{name}.{ext}")));
}

/// Every tap of `arch` loaded from `weights` matches fixture `name`'s reference activations.
fn check_weights(arch: &str, name: &str, weights: &std::path::Path) {
    let file = weights.display();
    let (taps, _) = tensorfile::read(&fixtures().join(format!("{name}_taps.safetensors"))).unwrap();
    let input = &taps["input"];
    let shape = input.shape().to_vec();
    let device = Default::default();
    let src = WeightSource::File(weights.to_path_buf());
    let enc = encoder::load::<B>(arch, &src, Some(shape[2]), &device).unwrap();
    let x = Tensor::<B, 4>::from_data(TensorData::new(input.to_f32(), [shape[0], shape[1], shape[2], shape[3]]), &device);
    let names = enc.net.spec.taps();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let acts = enc.net.forward_taps(x, &refs, false).unwrap();
    let mut checked = 0;
    for tap in &names {
        let want = taps.get(tap).unwrap_or_else(|| panic!("{name}: fixture lacks tap {tap}"));
        let got = acts[tap].clone();
        let mut got_shape = vec![got.batch()];
        got_shape.extend(got.item_shape());
        assert_eq!(got_shape, want.shape(), "{file} {tap}: shape");
        let got = got.flat().into_data().to_vec::<f32>().unwrap();
        let diff = got.iter().zip(want.to_f32()).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "{file} tap {tap}: max abs diff {diff}");
        checked += 1;
    }
    // Every tap the fixture stores is one we expose (and vice versa).
    assert_eq!(checked, taps.len() - 1, "{name}: taps in fixture {:?}", taps.keys().collect::<Vec<_>>());
}

#[test]
fn alexnet_mini_pth() {
    check("alexnet", "alexnet_mini", "pth");
}
#[test]
fn alexnet_mini_safetensors() {
    check("alexnet", "alexnet_mini", "safetensors");
}
#[test]
fn vgg11_mini_pth() {
    check("vgg11", "vgg11_mini", "pth");
}
#[test]
fn vgg11_mini_safetensors() {
    check("vgg11", "vgg11_mini", "safetensors");
}
#[test]
fn vgg16_bn_mini_pth() {
    check("vgg16_bn", "vgg16_bn_mini", "pth");
}
#[test]
fn vgg16_bn_mini_safetensors() {
    check("vgg16_bn", "vgg16_bn_mini", "safetensors");
}

/// `--encoder auto`: the network a file holds, at every tap as if named.
#[test]
fn auto_encoder_is_the_network_the_file_holds() {
    check(encoder::AUTO, "vgg16_bn_mini", "pth");
    check(encoder::AUTO, "alexnet_mini", "safetensors");
    check(encoder::AUTO, "vgg11_mini", "safetensors");
    let load = |src: &WeightSource| encoder::load::<B>(encoder::AUTO, src, None, &Default::default());
    assert_eq!(load(&WeightSource::File(fixtures().join("vgg11_mini.pth"))).unwrap().net.spec.arch, "vgg11");
    // Our own checkpoints carry their network.
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("posenet.safetensors");
    let posenet = encoder::load::<B>("posenet", &WeightSource::Random(3), None, &Default::default()).unwrap();
    encoder::weights::save(&posenet.net, &ours).unwrap();
    assert_eq!(load(&WeightSource::File(ours.clone())).unwrap().net.spec.arch, "posenet");
    // Another input size changes posenet's first fc layer: the error says to pass the size.
    let err = format!("{:#}", encoder::load::<B>("posenet", &WeightSource::File(ours), Some(40), &Default::default()).err().unwrap());
    assert!(err.contains("made at another input size; pass theirs with --input-size"), "{err}");
    // Random weights need a name; a file that is no network says so.
    let err = load(&WeightSource::Random(0)).err().unwrap().to_string();
    assert!(err.contains("random weights need --encoder") && err.contains("vgg16_bn"), "{err}");
    let taps = fixtures().join("vgg11_mini_taps.safetensors");
    let err = format!("{:#}", load(&WeightSource::File(taps)).err().unwrap());
    assert!(err.contains("cannot tell which network") && err.contains("vgg11_mini_taps.safetensors") && err.contains("pass --encoder"), "{err}");
    assert!(err.contains("0 conv weights under `features.`"), "{err}");
    // A torchvision file that lost a key: the network it looks like and what does not fit.
    let (mut t, _) = preimage::tensorfile::read(&fixtures().join("alexnet_mini.safetensors")).unwrap();
    t.remove("features.3.bias");
    let cut = dir.path().join("cut.safetensors");
    preimage::tensorfile::write(&cut, &t.into_iter().collect::<Vec<_>>(), &Default::default()).unwrap();
    let err = format!("{:#}", load(&WeightSource::File(cut)).err().unwrap());
    assert!(err.contains("looks like torchvision's alexnet") && err.contains("missing keys (1): features.3.bias"), "{err}");
}

#[test]
fn wrong_architecture_lists_missing_unexpected_and_mismatch() {
    let src = WeightSource::File(fixtures().join("vgg16_bn_mini.pth"));
    let err = encoder::load::<B>("vgg11", &src, Some(64), &Default::default()).err().expect("must fail").to_string();
    assert!(err.contains("vgg16_bn_mini.pth"), "{err}");
    assert!(err.contains("missing keys"), "{err}");
    assert!(err.contains("unexpected keys") && err.contains("running_mean"), "{err}");
    assert!(err.contains("first shape mismatch"), "{err}");
    // And says which network the weights are.
    assert!(err.contains("the file holds vgg16_bn's weights: use --encoder vgg16_bn"), "{err}");
    let src = WeightSource::File(fixtures().join("alexnet_mini.safetensors"));
    let err = encoder::load::<B>("vgg11", &src, Some(64), &Default::default()).err().expect("must fail").to_string();
    assert!(err.contains("use --encoder alexnet"), "{err}");
}

#[test]
fn unknown_encoder_and_tap_are_errors_listing_valid_ones() {
    let err = encoder::load::<B>("resnet50", &WeightSource::Random(0), None, &Default::default()).err().unwrap().to_string();
    assert!(err.contains("resnet50") && err.contains("vgg16_bn"), "{err}");
    let enc = encoder::load::<B>("posenet", &WeightSource::Random(0), None, &Default::default()).unwrap();
    let err = enc.net.spec.check_tap("conv9").unwrap_err().to_string();
    assert!(err.contains("conv9") && err.contains("fc7") && err.contains("pose"), "{err}");
    // torchvision's module name for a tap points to the tap.
    let vgg = encoder::load::<B>("vgg11", &WeightSource::Random(0), Some(32), &Default::default()).unwrap();
    let err = vgg.net.spec.check_tap("features.2").unwrap_err().to_string();
    assert!(err.contains("'features.2' is torchvision's module for tap 'pool1'") && err.contains("pass pool1"), "{err}");
}

/// Training scripts' checkpoints load as they are: the state_dict nested beside optimizer state
/// and other entries, with (Distributed)DataParallel's `module.` in front of the keys or inside
/// them (PyTorch's ImageNet example wraps only AlexNet's `features`).
#[test]
fn training_checkpoints_with_wrappers_load() {
    let (sd, _) = tensorfile::read(&fixtures().join("alexnet_mini.safetensors")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let extra = |name: &str| (name.to_string(), tensorfile::Array::F32 { shape: vec![3], data: vec![0.5; 3] });
    let layouts: [(&str, Box<dyn Fn(&str) -> String>, Vec<&str>); 3] = [
        // pytorch/examples imagenet/main.py: {'state_dict', 'optimizer', 'best_acc1', ...}.
        ("imagenet_example", Box::new(|k: &str| format!("state_dict.{}", k.replacen("features.", "features.module.", 1))), vec!["optimizer.state.0.momentum_buffer", "best_acc1"]),
        // torchvision references/classification/train.py: {'model', 'model_ema', 'optimizer', ...}.
        ("torchvision_reference", Box::new(|k: &str| format!("model.{k}")), vec!["model_ema.module.features.0.weight", "optimizer.state.0.momentum_buffer"]),
        // A bare DistributedDataParallel state_dict.
        ("ddp", Box::new(|k: &str| format!("module.{k}")), vec![]),
    ];
    for (name, rename, extras) in &layouts {
        let mut tensors: Vec<(String, tensorfile::Array)> = sd.iter().map(|(k, v)| (rename(k), v.clone())).collect();
        tensors.extend(extras.iter().map(|e| extra(e)));
        let p = dir.path().join(format!("{name}.safetensors"));
        tensorfile::write(&p, &tensors, &Default::default()).unwrap();
        check_weights("alexnet", "alexnet_mini", &p);
    }
}

/// `torch.save` keeps a tensor's strides: a model trained in channels_last saves its conv weights
/// so, and views keep their offset into a larger storage. Read in row-major order regardless
/// (burn-store's reader ignored strides: vendor/burn-store/PREIMAGE_PATCH.md).
#[test]
fn pth_tensors_are_read_through_their_strides() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth/strided.pth");
    let sd = encoder::weights::read_state_dict(&path).unwrap().tensors;
    let ramp = |n: usize| (0..n).map(|v| v as f32).collect::<Vec<_>>();
    let want: [(&str, Vec<usize>, Vec<f32>); 4] = [
        ("row_major", vec![2, 3], ramp(6)),
        ("transposed", vec![3, 2], ramp(6)),
        ("channels_last", vec![2, 3, 2, 2], ramp(24)),
        ("offset_view", vec![2, 3], vec![7.0, 8.0, 9.0, 13.0, 14.0, 15.0]),
    ];
    for (name, shape, values) in want {
        assert_eq!(sd[name], tensorfile::Array::F32 { shape, data: values }, "{name}");
    }
}

/// `torch.save(model)` (the whole module, not its state_dict) cannot be read; the error says how
/// to save the weights instead (tests/data/pth/module.pt, made by make.py).
#[test]
fn a_whole_module_pickle_is_refused_with_the_fix() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth/module.pt");
    let err = format!("{:#}", encoder::load::<B>("posenet", &WeightSource::File(path), None, &Default::default()).err().unwrap());
    assert!(err.contains("module.pt") && err.contains("torch.save(model, F)") && err.contains(".state_dict()"), "{err}");
    // A file cut short (an interrupted download) and an empty one are called so.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("alexnet_mini.pth")).unwrap();
    let (cut, empty) = (dir.path().join("cut.pth"), dir.path().join("empty.pth"));
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(&empty, b"").unwrap();
    let load = |p: &PathBuf| format!("{:#}", encoder::load::<B>("alexnet", &WeightSource::File(p.clone()), None, &Default::default()).err().unwrap());
    let err = load(&cut);
    assert!(err.contains("cut.pth is a zip archive (PyTorch's format) that ends before its directory: truncated"), "{err}");
    assert!(load(&empty).contains("empty.pth is empty (0 bytes)"));
}

#[test]
fn own_checkpoint_round_trip_and_pytorch_layout() {
    let device = Default::default();
    let enc = encoder::load::<B>("posenet", &WeightSource::Random(3), None, &device).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("enc.safetensors");
    encoder::weights::save(&enc.net, &p).unwrap();
    let back = encoder::load::<B>("posenet", &WeightSource::File(p.clone()), None, &device).unwrap();
    assert_eq!(back.net.spec, enc.net.spec);
    let x = Tensor::<B, 4>::from_data(TensorData::new((0..2 * 3 * 64 * 64).map(|i| (i % 17) as f32 / 17.0).collect::<Vec<_>>(), [2, 3, 64, 64]), &device);
    let a = enc.net.tap_flat(x.clone(), "pose", false).unwrap().into_data().to_vec::<f32>().unwrap();
    let b = back.net.tap_flat(x, "pose", false).unwrap().into_data().to_vec::<f32>().unwrap();
    let sa = encoder::weights::state_dict(&enc.net);
    let sb = encoder::weights::state_dict(&back.net);
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x, y, "param {}", x.0);
    }
    // Same parameters; the matmul may sum in another order (transposed weight layout).
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-4 * (1.0 + x.abs()), "{x} vs {y}");
    }
    // Linear weights are saved [out, in] like PyTorch.
    let (t, _) = tensorfile::read(&p).unwrap();
    assert_eq!(t["classifier.4.weight"].shape(), &[10, 512]);
    // Same seed → same network.
    let again = encoder::load::<B>("posenet", &WeightSource::Random(3), None, &device).unwrap();
    let (t2, _) = (encoder::weights::state_dict(&again.net), ());
    assert_eq!(t2, encoder::weights::state_dict(&enc.net));
}

/// Our encoder files rebuild in PyTorch (`python/preimage.py`): posenet with BatchNorm running
/// statistics of its own, every tap equal to ours (where a Python with torch is at hand).
#[test]
fn posenet_files_run_in_pytorch() {
    use preimage::tensorfile::Array;
    let device = Default::default();
    let enc = encoder::load::<B>("posenet", &WeightSource::Random(5), Some(48), &device).unwrap();
    // Running statistics away from PyTorch's defaults (mean 0, var 1), so they are really read.
    let mut state = encoder::weights::state_dict(&enc.net);
    for (k, a) in &mut state {
        if let Array::F32 { data, .. } = a {
            if k.ends_with("running_mean") || k.ends_with("running_var") {
                data.iter_mut().enumerate().for_each(|(i, v)| *v = 0.5 + 0.1 * (i % 7) as f32);
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("encoder.safetensors");
    let meta = [(encoder::weights::SPEC_KEY.to_string(), serde_json::to_string(&enc.net.spec).unwrap())].into();
    tensorfile::write(&path, &state, &meta).unwrap();
    let net = encoder::load::<B>("posenet", &WeightSource::File(path.clone()), None, &device).unwrap().net;
    assert_eq!(net.spec.input_size, [48, 48], "the spec in the file gives the size");
    let x: Vec<f32> = (0..3 * 3 * 48 * 48).map(|i| ((i * 37) % 101) as f32 / 101.0).collect();
    let names = net.spec.taps();
    let taps: Vec<&str> = names.iter().map(String::as_str).collect();
    let acts = net.encode(Tensor::from_data(TensorData::new(x.clone(), [3, 3, 48, 48]), &device), &taps, false).unwrap();
    let mut arrays = vec![("images".to_string(), Array::F32 { shape: vec![3, 3, 48, 48], data: x })];
    for (tap, a) in acts {
        let mut shape = vec![3];
        shape.extend(a.item_shape());
        arrays.push((tap, Array::F32 { shape, data: a.flat().into_data().to_vec::<f32>().unwrap() }));
    }
    let check = dir.path().join("check.safetensors");
    tensorfile::write(&check, &arrays, &Default::default()).unwrap();
    let Some(python) = common::python_with_torch() else {
        eprintln!("skipped: no Python with torch and safetensors (set PREIMAGE_PYTHON)");
        return;
    };
    let text = common::run_python(
        &python,
        &format!(
            "import torch, preimage; from safetensors.torch import load_file\n\
             enc = preimage.load_encoder({path:?}); t = load_file({check:?})\n\
             taps = [k for k in t if k != 'images']\n\
             with torch.no_grad(): out = enc(t['images'], taps)\n\
             for k in sorted(taps):\n\
             \x20   d = (out[k] - t[k]).abs().max().item(); print(k, tuple(out[k].shape), d)\n\
             \x20   assert out[k].shape == t[k].shape and d <= 1e-4 * (1 + t[k].abs().max().item()), k\n",
            path = path.display().to_string(),
            check = check.display().to_string(),
        ),
    );
    assert!(text.contains("pose (3, 4)") && text.contains("conv1 (3, 32, 24, 24)"), "{text}");
    eprintln!("posenet in PyTorch, max abs difference per tap:\n{text}");
    // A photo of another size and shape preprocessed by torchvision as `image_transform` says
    // gives our pixels (where torchvision is at hand too).
    if !common::python_has(&python, "torchvision") {
        eprintln!("skipped image_transform: no torchvision");
        return;
    }
    let photo = dir.path().join("photo.png");
    image::RgbImage::from_fn(75, 53, |x, y| image::Rgb([(x * 3) as u8, (y * 5 + x) as u8, ((x * y) % 251) as u8])).save(&photo).unwrap();
    let ours = preimage::data::folder::load_rgb(&photo, &preimage::data::batch::preprocess_for(&net.spec)).unwrap();
    // And resized to an exact size (torchvision's `Resize((60, 40))`), narrower than the crop.
    let exact = preimage::data::folder::Preprocess { resize: preimage::encoder::Resize::Exact([60, 40]), crop_h: 48, crop_w: 48 };
    let squashed = preimage::data::folder::load_rgb(&photo, &exact).unwrap();
    let pixels = dir.path().join("pixels.safetensors");
    let arrays = [("x".to_string(), Array::F32 { shape: vec![3, 48, 48], data: ours }), ("exact".to_string(), Array::F32 { shape: vec![3, 48, 48], data: squashed })];
    tensorfile::write(&pixels, &arrays, &Default::default()).unwrap();
    let text = common::run_python(
        &python,
        &format!(
            "import torch, preimage, PIL.Image; from safetensors.torch import load_file\n\
             enc = preimage.load_encoder({path:?}); img = PIL.Image.open({photo:?}).convert('RGB'); ref = load_file({pixels:?})\n\
             x = preimage.image_transform(enc)(img)\n\
             d = (x - ref['x']).abs().max().item(); print('pixels differ by', d); assert d < 1e-6, d\n\
             x = preimage.image_transform({{'preprocessing': {{'resize': [60, 40], 'crop': [48, 48]}}}})(img)\n\
             d = (x - ref['exact']).abs().max().item(); print('exact resize: pixels differ by', d); assert d < 1e-6, d\n",
            path = path.display().to_string(),
            photo = photo.display().to_string(),
            pixels = pixels.display().to_string(),
        ),
    );
    eprintln!("{}", text.trim());
}

/// `classify`: each image's top classes are the softmax of the encoder's fc8 logits (as
/// `extract` writes them), best first; a folder whose classes are the network's (by name) gets
/// top-1 / top-k accuracy; one whose classes are not says so.
#[test]
fn classify_lists_top_classes_and_accuracy() {
    use common::{ok, s};
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    // Folder names match the network's classes in any case.
    for (folder, k) in [("class_3", 0u32), ("class_3", 1), ("Class_7", 2), ("Class_7", 3), ("Class_7", 4)] {
        std::fs::create_dir_all(p(&format!("set/{folder}"))).unwrap();
        image::RgbImage::from_fn(70, 64, |x, y| image::Rgb([(x * 3 + k * 50) as u8, (y * 4 * (k + 1)) as u8, ((x * y + 7 * k) % 251) as u8])).save(p(&format!("set/{folder}/{k}.png"))).unwrap();
    }
    let weights = fixtures().join("vgg11_mini.safetensors");
    let csv = p("preds.csv");
    let text = ok(&["classify", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--data", s(&p("set")), "--top", "3", "--out", s(&csv)]);
    ok(&["extract", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--layer", "fc8", "--data", s(&p("set")), "--out", s(&p("c.safetensors"))]);
    let codes = preimage::data::codes::CodeFile::read(&p("c.safetensors")).unwrap();
    let logits = codes.codes["fc8"].to_f32();
    let rows: Vec<Vec<String>> = std::fs::read_to_string(&csv).unwrap().lines().skip(1).map(|l| l.split(',').map(String::from).collect()).collect();
    assert_eq!(rows.len(), 5);
    let (mut hits1, mut hits3) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let l = &logits[i * 10..(i + 1) * 10];
        let mut order: Vec<usize> = (0..10).collect();
        order.sort_by(|&a, &b| l[b].total_cmp(&l[a]));
        let sum: f64 = l.iter().map(|&v| (v as f64).exp()).sum();
        assert_eq!(row[0], codes.ids[i]);
        let label = if row[0].starts_with("class_3") { 3 } else { 7 };
        assert_eq!(row[1], format!("class_{label}"));
        for j in 0..3 {
            assert_eq!(row[2 + 2 * j], format!("class_{}", order[j]), "image {i}, rank {j}");
            let prob: f64 = row[3 + 2 * j].parse().unwrap();
            assert!((prob - (l[order[j]] as f64).exp() / sum).abs() < 2e-6, "image {i}, rank {j}");
        }
        hits1 += (order[0] == label) as usize;
        hits3 += order[..3].contains(&label) as usize;
    }
    let want = format!("accuracy on 5 images: top-1 {:.2} %, top-3 {:.2} %", 20.0 * hits1 as f64, 20.0 * hits3 as f64);
    assert!(text.contains(&want) && text.contains("Class_7/2.png [class_7]: class_"), "{want}\n{text}");
    // A Caffe-style list (`path class`, ImageNet's val.txt) gives the same labels as numbers.
    let list = p("set/val.txt");
    std::fs::write(&list, "class_3/0.png 3\nclass_3/1.png 3\nClass_7/2.png 7\nClass_7/3.png 7\nClass_7/4.png 7\n").unwrap();
    let from_list = ok(&["classify", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--data", s(&list), "--top", "3"]);
    assert!(from_list.contains(&want), "{want}\n{from_list}");
    ok(&["extract", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--layer", "fc8", "--data", s(&list), "--out", s(&p("l.safetensors"))]);
    let listed = preimage::data::codes::CodeFile::read(&p("l.safetensors")).unwrap();
    assert_eq!(listed.labels.as_deref(), Some([3, 3, 7, 7, 7].as_slice()));
    assert_eq!(listed.provenance.unwrap().label_classes, None, "the labels index the encoder's classes");
    std::fs::write(&list, "class_3/0.png 3\nClass_7/2.png 12\n").unwrap();
    // (Without --encoder: the network the weights file holds.)
    let text = ok(&["classify", "--weights", s(&weights), "--input-size", "64", "--data", s(&list)]);
    assert!(text.contains("1 image has class numbers beyond the network's 10 classes") && text.contains("accuracy on 1 images"), "{text}");
    // As many folders as classes, none named as one (ImageNet's wnids): taken in order, said so.
    for c in 0..10u32 {
        std::fs::create_dir_all(p(&format!("wnids/n{c:08}"))).unwrap();
        image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([(x * c) as u8, y as u8, 9])).save(p(&format!("wnids/n{c:08}/a.png"))).unwrap();
    }
    let text = ok(&["classify", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--data", s(&p("wnids"))]);
    assert!(text.contains("taken in order as its classes") && text.contains("accuracy on 10 images") && text.contains("n00000003/a.png [class_3]"), "{text}");
    // Classes that are not the network's: predictions, no accuracy, and why.
    std::fs::rename(p("set/Class_7"), p("set/cat")).unwrap();
    let text = ok(&["classify", "--encoder", "vgg11", "--weights", s(&weights), "--input-size", "64", "--data", s(&p("set"))]);
    assert!(text.contains("not the network's") && text.contains("cat") && !text.contains("accuracy on"), "{text}");
    assert!(text.contains("class_3/0.png: class_"), "{text}");
}
