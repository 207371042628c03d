//! `preimage reconstruct` and `preimage edit` on a tiny trained pipeline: ids and order kept,
//! images equal to the library's decoding, wrong codes refused, each op's effect on the codes.
use preimage::tensorfile::Array;
use preimage::data::codes::{CodeFile, TapCodes};
use preimage::edit::{apply_row, Codes, EditOp, EditOutput};
use preimage::reconstruct::{Reconstructor, Selection};
use std::path::{Path, PathBuf};
mod common;
use common::{ok, preimage, s};

type B = preimage::device::Cpu;

/// Render, train a tiny posenet (32 px) and an fc7 decoder; returns (dir, codes, decoder run).
fn pipeline(dir: &Path) -> (PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    ok(&["render", "--out", s(&p("data")), "--count", "40", "--size", "32", "--seed", "2", "--classes", "chair,mug,arrow,car"]);
    std::fs::write(p("enc.toml"), "[model]\ninput_size = 32\nconv = [4, 4, 4, 4, 4]\nfc = [8, 8]\n[train]\nepochs = 1\nbatch_size = 16\nlr = 0.001\n").unwrap();
    ok(&["train-encoder", "--config", s(&p("enc.toml")), "--data", s(&p("data")), "--out", s(&p("enc"))]);
    ok(&["extract", "--encoder", "posenet", "--run", s(&p("enc")), "--layer", "conv5,fc7", "--data", s(&p("data")), "--out", s(&p("codes.safetensors"))]);
    std::fs::write(p("dec.toml"), "[model]\nfc = [16]\nbase_channels = 8\nup_channels = [8, 8, 4]\n[train]\nepochs = 1\nbatch_size = 8\nlr = 0.003\n").unwrap();
    ok(&["train-decoder", "--config", s(&p("dec.toml")), "--codes", s(&p("codes.safetensors")), "--layer", "fc7", "--out", s(&p("dec"))]);
    (p("codes.safetensors"), p("dec"))
}

/// CHW [0,1] floats of a PNG.
fn read_png(path: &Path) -> (Vec<f32>, u32, u32) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    let (w, h) = img.dimensions();
    let mut chw = vec![0.0; 3 * (w * h) as usize];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            chw[(c * h as usize + y as usize) * w as usize + x as usize] = px[c] as f32 / 255.0;
        }
    }
    (chw, h, w)
}

/// Max difference between a saved PNG and a float image (PNG rounds to 1/255).
fn png_diff(path: &Path, img: &[f32]) -> f32 {
    let (png, _, _) = read_png(path);
    assert_eq!(png.len(), img.len(), "{}", path.display());
    png.iter().zip(img).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

#[test]
fn reconstruct_and_edit() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (codes, dec) = pipeline(dir.path());
    let file = CodeFile::read(&codes).unwrap();
    let dev = Default::default();
    let rec = Reconstructor::<B>::load(&dec, &dev).unwrap();
    // The library's decoding reads the rows from the file (ours), as `reconstruct` does.
    let (opened, rows) = preimage::reconstruct::Input::Codes(codes.clone()).tap_codes(&rec, &dec).unwrap();
    assert!(matches!(rows, preimage::data::codes::TapCodes::File(_)));
    assert_eq!(opened.ids, file.ids);

    // --- reconstruct: the ids asked for, in that order, equal to the library's decoding.
    let want = [file.ids[7].clone(), file.ids[2].clone(), file.ids[30].clone()];
    let out = p("rec");
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&codes), "--ids", &want.join(","), "--out", s(&out), "--grid", s(&p("rec.png"))]);
    assert!(text.contains("wrote 3 images"), "{text}");
    let direct = rec.decode_rows(&rows, &[7, 2, 30]).unwrap();
    for (id, img) in want.iter().zip(&direct) {
        let path = preimage::reconstruct::output_path(&out, id);
        assert!(png_diff(&path, img) <= 0.5 / 255.0 + 1e-6, "{} differs from the library's decoding", path.display());
    }
    // The grid tiles them in the same order (2 columns for 3 images, 2 px padding).
    let (grid, gh, gw) = read_png(&p("rec.png"));
    assert_eq!((gh, gw), (2 * 32 + 3 * 2, 2 * 32 + 3 * 2));
    let tile = |k: usize, c: usize, y: usize, x: usize| grid[(c * gh as usize + 2 + (k / 2) * 34 + y) * gw as usize + 2 + (k % 2) * 34 + x];
    for k in 0..3 {
        assert!((tile(k, 1, 10, 20) - direct[k][32 * 10 + 20 + 32 * 32]).abs() <= 0.5 / 255.0 + 1e-6, "grid tile {k} is not image {k}");
    }
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&codes), "--range", "35:", "--out", s(&p("range"))]);
    assert!(text.contains("wrote 5 images"), "{text}");
    for id in &file.ids[35..] {
        assert!(preimage::reconstruct::output_path(&p("range"), id).exists());
    }

    // Straight from images: encoded with the weights the decoder recorded, decoded as the
    // extracted codes of the same images are, scored in reconstruct.csv, paired in the grid.
    let mug = p("data").join("mug");
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--image", s(&mug), "--out", s(&p("from_images")), "--grid", s(&p("pairs.png"))]);
    let mug_rows: Vec<usize> = (0..file.ids.len()).filter(|&r| file.ids[r].starts_with("mug/")).collect();
    assert!(text.contains(&format!("{} images through posenet fc7", mug_rows.len())) && text.contains("mean PSNR"), "{text}");
    let from_codes = rec.decode_rows(&rows, &mug_rows).unwrap();
    let csv = std::fs::read_to_string(p("from_images").join("reconstruct.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "id,psnr_db,ssim,feature_error");
    assert_eq!(lines.len(), mug_rows.len() + 1);
    for ((&r, img), line) in mug_rows.iter().zip(&from_codes).zip(&lines[1..]) {
        let name = &file.ids[r]["mug/".len()..];
        assert!(png_diff(&p("from_images").join(name), img) <= 1.0 / 255.0 + 1e-6, "{name}");
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f[0], name);
        let (original, _, _) = read_png(&mug.join(name));
        let psnr: f64 = f[1].parse().unwrap();
        assert!((psnr - preimage::metrics::psnr(img, &original)).abs() < 0.05, "{line}");
        let (ssim, fe): (f64, f64) = (f[2].parse().unwrap(), f[3].parse().unwrap());
        assert!((-1.0..=1.0).contains(&ssim) && fe.is_finite() && fe >= 0.0, "{line}");
    }
    let (_, gh, gw) = read_png(&p("pairs.png"));
    let cols = 2 * (mug_rows.len() as f64).sqrt().ceil() as u32;
    assert_eq!((gw, gh), (cols * 34 + 2, (2 * mug_rows.len() as u32).div_ceil(cols) * 34 + 2), "image and reconstruction side by side");
    // edit --image: the images' codes, ids named by file; interpolation ends are the images'
    // reconstructions, per-row outputs are named without a doubled extension.
    let (n0, n1) = (&file.ids[mug_rows[0]]["mug/".len()..], &file.ids[mug_rows[1]]["mug/".len()..]);
    let (i0, i1) = (mug.join(n0), mug.join(n1));
    let stem0 = n0.trim_end_matches(".png");
    let interp = format!("interpolate {stem0} {n1} --steps 3");
    ok(&["edit", "--decoder", s(&dec), "--image", s(&i0), s(&i1), "--op", &interp, "--op", "scale 0=2", "--out", s(&p("edit_img"))]);
    assert!(png_diff(&p("edit_img/0_interpolate/interp_00_t0.00.png"), &from_codes[0]) <= 1.0 / 255.0 + 1e-6);
    assert!(png_diff(&p("edit_img/0_interpolate/interp_02_t1.00.png"), &from_codes[1]) <= 1.0 / 255.0 + 1e-6);
    assert!(p("edit_img/1_scale").join(format!("{stem0}.png")).is_file(), "per-row outputs are named by the id's stem");
    // A broken file among several given (`photos/*.jpg`) is skipped, as in a folder; the one
    // image named is an error.
    let broken = p("broken.png");
    std::fs::write(&broken, b"not an image").unwrap();
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--image", s(&i0), s(&broken), "--out", s(&p("with_broken"))]);
    assert!(text.contains("skipped 1 unreadable file") && p("with_broken").join(format!("{stem0}.png")).is_file(), "{text}");
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--image", s(&broken), "--out", s(&p("x"))]);
    assert!(!success && text.contains("broken.png"), "{text}");
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&codes), "--weights", s(&p("enc")), "--out", s(&p("x"))]);
    assert!(!success && text.contains("for encoding --image"), "{text}");
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--image", s(&mug), "--ids", "a", "--out", s(&p("x"))]);
    assert!(!success && text.contains("cannot be used with"), "{text}");

    // Wrong codes: another tap, another shape, an unknown id.
    let conv5_only = CodeFile { codes: file.codes.iter().filter(|(k, _)| *k == "conv5").map(|(k, v)| (k.clone(), v.clone())).collect(), ..file.clone() };
    conv5_only.write(&p("conv5.safetensors")).unwrap();
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&p("conv5.safetensors")), "--out", s(&p("x"))]);
    assert!(!success && text.contains("inverts posenet fc7") && text.contains("conv5"), "{text}");
    ok(&["extract", "--encoder", "posenet", "--input-size", "32", "--layer", "fc7", "--data", s(&p("data")), "--out", s(&p("other.safetensors"))]);
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&p("other.safetensors")), "--out", s(&p("x"))]);
    assert!(!success && text.contains("of shape [8]") && text.contains("of shape [512]"), "{text}");
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&codes), "--ids", "nope/1", "--out", s(&p("x"))]);
    assert!(!success && text.contains("'nope/1'"), "{text}");

    // Codes saved by PyTorch (`safetensors.torch.save_file({'fc7': codes.double()})`): no
    // metadata, f64. Decoded as the decoder's codes (shape checked), rows named by index.
    let foreign = p("torch.safetensors");
    write_bare_f64(&foreign, "fc7", &file.codes["fc7"]);
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&foreign), "--range", "1:3", "--out", s(&p("foreign"))]);
    assert!(text.contains("wrote 2 images") && text.contains("not written by `preimage extract`"), "{text}");
    for (row, id) in [(1, "000001"), (2, "000002")] {
        assert!(png_diff(&preimage::reconstruct::output_path(&p("foreign"), id), &direct_of(&rec, &file, row)) <= 0.5 / 255.0 + 1e-6);
    }
    write_bare_f64(&p("torch-conv5.safetensors"), "fc7", &file.codes["conv5"]);
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&p("torch-conv5.safetensors")), "--out", s(&p("x"))]);
    assert!(!success && text.contains("of shape [8]") && text.contains("have shape [4, 4, 4]"), "{text}");
    // And codes saved with torch.save (f64 codes and int64 labels; made by tests/data/pth/make.py).
    let pt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth/codes.pt");
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&pt), "--out", s(&p("pt"))]);
    assert!(text.contains("wrote 3 images"), "{text}");
    let from_pt = CodeFile::read(&pt).unwrap();
    assert_eq!((from_pt.ids.len(), from_pt.labels.as_deref()), (3, Some([2, 0, 1].as_slice())));
    for i in 0..3 {
        let code: Vec<f32> = (0..8).map(|j| ((i * 8 + j) as f64 / 10.0 - 1.0) as f32).collect();
        assert!(png_diff(&preimage::reconstruct::output_path(&p("pt"), &format!("{i:06}")), &rec.decode(&code).unwrap()[0]) <= 0.5 / 255.0 + 1e-6);
    }
    // And NumPy's files (tests/data/npy/make.py, the same codes): a .npy's one array and a
    // positional .npz array stand for the decoder's tap; a .npz names its rows by `ids`. So do
    // a tensor saved alone with torch.save and a torch.save'd dict's `ids` list.
    let npy = |f: &str| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/npy").join(f);
    for (f, ids, tol) in [
        ("../pth/codes_bare.pt", ["000000", "000001", "000002"], 0.5),
        ("../pth/codes_ids.pt", ["a.jpg", "sub/b.png", "c.jpg"], 0.5),
        ("fc7.npy", ["000000", "000001", "000002"], 0.5),
        ("fortran.npy", ["000000", "000001", "000002"], 0.5),
        ("codes.npz", ["a.jpg", "sub/b.png", "c.jpg"], 0.5),
        ("compressed.npz", ["000000", "000001", "000002"], 2.0), // float16 codes
    ] {
        let out = p(&format!("npy-{}", Path::new(f).file_name().unwrap().to_str().unwrap()));
        let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&npy(f)), "--out", s(&out)]);
        assert!(text.contains("wrote 3 images"), "{f}: {text}");
        let read = CodeFile::read_tap(&npy(f), "fc7").unwrap();
        assert_eq!(read.ids, ids, "{f}");
        for (i, id) in ids.iter().enumerate() {
            let code: Vec<f32> = (0..8).map(|j| ((i * 8 + j) as f64 / 10.0 - 1.0) as f32).collect();
            let got = read.codes["fc7"].to_f32();
            assert!(got[i * 8..(i + 1) * 8].iter().zip(&code).all(|(a, b)| (a - b).abs() <= 1e-3), "{f} row {i}: {got:?}");
            assert!(png_diff(&preimage::reconstruct::output_path(&out, id), &rec.decode(&code).unwrap()[0]) <= tol / 255.0 + 1e-6, "{f} row {i}");
        }
    }
    assert_eq!(CodeFile::read(&npy("codes.npz")).unwrap().labels.as_deref(), Some([2, 0, 1].as_slice()));
    let (success, text) = preimage(&["reconstruct", "--decoder", s(&dec), "--codes", s(&npy("objects.npy")), "--out", s(&p("x"))]);
    assert!(!success && text.contains("objects.npy") && text.contains("object array"), "{text}");

    // Inverting one by optimization needs only the encoder; training needs the images.
    let text = ok(&["invert", "--encoder", "posenet", "--run", s(&p("enc")), "--layer", "fc7", "--codes", s(&foreign), "--index", "2", "--steps", "3", "--final-steps", "0", "--out", s(&p("inv.png"))]);
    assert!(text.contains("feature error at fc7") && p("inv.png").exists(), "{text}");
    let (success, text) = preimage(&["train-decoder", "--config", s(&p("dec.toml")), "--codes", s(&foreign), "--layer", "fc7", "--out", s(&p("never"))]);
    assert!(!success && text.contains("torch.safetensors holds codes without preimage's metadata") && text.contains("--weights FILE or --run DIR") && text.contains("--data DIR"), "{text}");
    // Given the network they came from and their images, codes written elsewhere train a
    // decoder: with ids naming the images, the same steps as from our own code file.
    let named = p("named.safetensors");
    let meta = std::collections::HashMap::from([("ids".to_string(), serde_json::to_string(&file.ids).unwrap())]);
    preimage::tensorfile::write(&named, &[("fc7".to_string(), file.codes["fc7"].clone())], &meta).unwrap();
    let train = |codes: &Path, out: &str, extra: &[&str]| {
        let (cfg, out) = (p("dec.toml"), p(out));
        let mut args = vec!["train-decoder", "--config", s(&cfg), "--codes", s(codes), "--layer", "fc7", "--out", s(&out)];
        args.extend(extra);
        preimage(&args)
    };
    let (success, text) = train(&named, "from-named", &["--encoder", "posenet", "--run", s(&p("enc")), "--data", s(&p("data"))]);
    assert!(success, "{text}");
    assert!(train(&codes, "from-ours", &[]).0);
    let losses = |run: &str| -> Vec<f64> {
        let m: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(p(run).join("metrics.json")).unwrap()).unwrap();
        m.iter().flat_map(|e| [e["train_loss"].as_f64().unwrap(), e["val_loss"].as_f64().unwrap()]).collect()
    };
    assert_eq!(losses("from-named"), losses("from-ours"));
    // Without --encoder, the network the weights hold, as for images encoded on the fly.
    let (success, text) = train(&named, "from-named-auto", &["--run", s(&p("enc")), "--data", s(&p("data"))]);
    assert!(success, "{text}");
    assert_eq!(losses("from-named-auto"), losses("from-ours"));
    let info = preimage::decoder::read_info(&p("from-named")).unwrap();
    assert_eq!((info.encoder.as_str(), info.weights_sha256.as_str()), ("posenet", file.provenance.as_ref().unwrap().weights_sha256.as_str()));
    // Named by the torchvision module of the tap (`create_feature_extractor(m, [module])`).
    let module = file.provenance.as_ref().map(|pv| serde_json::from_str::<preimage::encoder::EncoderSpec>(&pv.spec).unwrap().torch_modules()["fc7"].clone()).unwrap();
    let by_module = p("by-module.safetensors");
    preimage::tensorfile::write(&by_module, &[(module.clone(), file.codes["fc7"].clone())], &meta).unwrap();
    let text = ok(&["reconstruct", "--decoder", s(&dec), "--codes", s(&by_module), "--range", "1:3", "--out", s(&p("by-module"))]);
    assert!(text.contains(&format!("'{module}' codes are read as tap fc7")), "{text}");
    for (row, id) in [(1, &file.ids[1]), (2, &file.ids[2])] {
        assert!(png_diff(&preimage::reconstruct::output_path(&p("by-module"), id), &direct_of(&rec, &file, row)) <= 0.5 / 255.0 + 1e-6);
    }
    let (success, text) = train(&by_module, "from-module", &["--encoder", "posenet", "--run", s(&p("enc")), "--data", s(&p("data"))]);
    assert!(success, "{text}");
    assert_eq!(losses("from-module"), losses("from-ours"));
    let (success, text) = train(&named, "x", &["--encoder", "posenet", "--run", s(&p("enc"))]);
    assert!(!success && text.contains("--data DIR"), "{text}");
    // Without ids the rows' images are unknown: the error says how to save them.
    let (success, text) = train(&foreign, "x", &["--encoder", "posenet", "--run", s(&p("enc")), "--data", s(&p("data"))]);
    assert!(!success && text.contains("does not name the image of each code") && text.contains("ids=paths"), "{text}");
    let (success, text) = train(&named, "x", &["--encoder", "alexnet", "--data", s(&p("data")), "--weights", s(&p("enc/encoder.safetensors"))]);
    assert!(!success && text.contains("posenet"), "{text}");
    let (success, text) = train(&codes, "x", &["--encoder", "alexnet"]);
    assert!(!success && text.contains("holds posenet codes, not alexnet codes"), "{text}");
    // Spatial codes saved flattened (`torch.flatten(feats, 1)`: [N, 64] for conv5's [4, 4, 4])
    // are the maps they were: a conv5 decoder trains on them with the steps of our own file,
    // decodes them to the same images, and optimization inverts them.
    let flat = p("flat.safetensors");
    let Array::F32 { shape, data } = &file.codes["conv5"] else { panic!("f32 codes") };
    let flat_codes = Array::F32 { shape: vec![shape[0], shape[1..].iter().product()], data: data.clone() };
    preimage::tensorfile::write(&flat, &[("conv5".to_string(), flat_codes)], &meta).unwrap();
    let conv5 = |codes: &Path, out: &str, extra: &[&str]| {
        let (cfg, out) = (p("dec.toml"), p(out));
        let mut args = vec!["train-decoder", "--config", s(&cfg), "--codes", s(codes), "--layer", "conv5", "--epochs", "1", "--out", s(&out)];
        args.extend(extra);
        ok(&args)
    };
    let text = conv5(&flat, "conv5-flat", &["--encoder", "posenet", "--run", s(&p("enc")), "--data", s(&p("data"))]);
    assert!(text.contains("codes of shape [64] are read as [4, 4, 4]"), "{text}");
    conv5(&codes, "conv5-ours", &[]);
    assert_eq!(losses("conv5-flat"), losses("conv5-ours"));
    assert_eq!(preimage::decoder::read_info(&p("conv5-flat")).unwrap().code_shape, vec![4, 4, 4]);
    let (flat_out, ours_out) = (p("recon-flat"), p("recon-ours"));
    let text = ok(&["reconstruct", "--decoder", s(&p("conv5-ours")), "--codes", s(&flat), "--range", "0:2", "--out", s(&flat_out)]);
    assert_eq!(text.matches("codes of shape [64] are read as [4, 4, 4]").count(), 1, "said once: {text}");
    ok(&["reconstruct", "--decoder", s(&p("conv5-ours")), "--codes", s(&codes), "--range", "0:2", "--out", s(&ours_out)]);
    for id in &file.ids[..2] {
        let ours = image::open(preimage::reconstruct::output_path(&ours_out, id)).unwrap().to_rgb8();
        assert_eq!(image::open(preimage::reconstruct::output_path(&flat_out, id)).unwrap().to_rgb8(), ours, "{id}");
    }
    let text = ok(&["invert", "--encoder", "posenet", "--run", s(&p("enc")), "--layer", "conv5", "--codes", s(&flat), "--index", "1", "--steps", "2", "--final-steps", "0", "--out", s(&p("inv-flat.png"))]);
    assert!(text.contains("feature error at conv5"), "{text}");

    // --- edit: ops from flags and from a TOML file.
    std::fs::write(p("ops.toml"), "ops = [\"random --count 3 --seed 4\", \"binarize\"]\n").unwrap();
    let (a, b) = (&file.ids[0], &file.ids[1]);
    let out = p("edit");
    ok(&[
        "edit", "--decoder", s(&dec), "--codes", s(&codes), "--ids", &format!("{a},{b}"), "--out", s(&out),
        "--op", &format!("interpolate {a} {b} --steps 4"), "--op", "scale 0=0,3=2", "--op", &format!("add {a} - {b} + {a}"), "--ops", s(&p("ops.toml")),
    ]);
    let outputs: Vec<EditOutput> = serde_json::from_str(&std::fs::read_to_string(out.join("edits.json")).unwrap()).unwrap();
    assert_eq!(outputs.iter().map(|o| o.images.len()).collect::<Vec<_>>(), vec![4, 2, 1, 3, 2]);
    let tap = TapCodes::Memory(file.codes["fc7"].clone());
    let c = Codes { shape: &tap.shape()[1..], tap: &tap };
    let rows = c.rows(&[0, 1]).unwrap();
    let row = |i: usize| &rows[i][..];
    let decode_one = |code: Vec<f32>| rec.decode(&code).unwrap().remove(0);
    // Interpolation: the ends are the two codes' reconstructions, the middle is 1/3 of the way.
    let interp = &outputs[0];
    assert_eq!(interp.sources, vec![a.clone(), b.clone()]);
    assert!(png_diff(&interp.images[0].1, &direct_of(&rec, &file, 0)) <= 0.5 / 255.0 + 1e-6);
    assert!(png_diff(&interp.images[3].1, &direct_of(&rec, &file, 1)) <= 0.5 / 255.0 + 1e-6);
    let third: Vec<f32> = row(0).iter().zip(row(1)).map(|(x, y)| x + (y - x) / 3.0).collect();
    assert!(png_diff(&interp.images[1].1, &decode_one(third)) <= 0.5 / 255.0 + 1e-5);
    // Scale: the image of the scaled code, per selected id.
    let scaled = apply_row(&EditOp::Scale(vec![(0, 0.0), (3, 2.0)]), &c, row(1)).unwrap();
    assert_eq!(scaled[0], 0.0);
    assert_eq!(scaled[3], 2.0 * row(1)[3]);
    assert!(png_diff(&outputs[1].images[1].1, &decode_one(scaled)) <= 0.5 / 255.0 + 1e-6);
    // Arithmetic: A - B + A.
    let sum: Vec<f32> = row(0).iter().zip(row(1)).map(|(x, y)| x - y + x).collect();
    assert!(png_diff(&outputs[2].images[0].1, &decode_one(sum)) <= 0.5 / 255.0 + 1e-5);
    // Grids: per-code ops put the unedited row above the edited one; strips are one row.
    let dims = |o: &EditOutput| image::image_dimensions(&o.grid).unwrap();
    assert_eq!(dims(&outputs[1]), (2 * 34 + 2, 2 * 34 + 2));
    assert_eq!(dims(&outputs[0]), (6 * 34 + 2, 34 + 2));
    assert!(outputs[3].sources.is_empty());

    // Ops that do not fit the code are errors naming the valid range.
    let (success, text) = preimage(&["edit", "--decoder", s(&dec), "--codes", s(&codes), "--op", "zero 8", "--out", s(&p("y"))]);
    assert!(!success && text.contains("unit 8 is out of range") && text.contains("0..7"), "{text}");
    let (success, text) = preimage(&["edit", "--decoder", s(&dec), "--codes", s(&codes), "--op", "twist 3", "--out", s(&p("y"))]);
    assert!(!success && text.contains("unknown edit op"), "{text}");

    // Pose: the encoder's pose head, reading the edited reconstructions, is closer to the
    // target than for the unedited ones (this 1-epoch encoder barely sees pose, so the
    // azimuth itself is checked on the real posenet: README "Editing codes").
    let sel = Selection::Range(0, 6).rows(&file.ids).unwrap();
    assert_eq!(sel.len(), 6);
    let text = ok(&["edit", "--decoder", s(&dec), "--codes", s(&codes), "--range", "0:6", "--op", "pose 270 --steps 40 --keep 0.1", "--out", s(&p("pose"))]);
    let outputs: Vec<EditOutput> = serde_json::from_str(&std::fs::read_to_string(p("pose").join("edits.json")).unwrap()).unwrap();
    let readings = &outputs[0].pose;
    assert!(text.contains("pose edit: 6 code(s) toward azimuth 270°"), "{text}");
    assert_eq!(readings.len(), 6);
    for r in readings {
        assert!(r.after_loss < r.before_loss, "pose edit did not move {} toward 270°: {r:?}", r.id);
        assert_eq!(r.target_azimuth, 270.0);
    }
    assert_eq!(outputs[0].images.len(), 6);
    assert!(outputs[0].images[0].1.ends_with(format!("{}_az270.png", preimage::data::folder::strip_extension(&file.ids[0]).replace('/', "_"))));
}

/// A safetensors file as PyTorch writes it: one f64 tensor, no `__metadata__`.
fn write_bare_f64(path: &Path, name: &str, codes: &preimage::tensorfile::Array) {
    let data: Vec<u8> = codes.to_f32().iter().flat_map(|&v| (v as f64).to_le_bytes()).collect();
    let header = format!(r#"{{"{name}":{{"dtype":"F64","shape":{:?},"data_offsets":[0,{}]}}}}"#, codes.shape(), data.len());
    let header = format!("{header:<width$}", width = header.len().div_ceil(8) * 8);
    let bytes = [(header.len() as u64).to_le_bytes().as_slice(), header.as_bytes(), &data].concat();
    std::fs::write(path, bytes).unwrap();
}

fn direct_of(rec: &Reconstructor<B>, file: &CodeFile, row: usize) -> Vec<f32> {
    let codes = preimage::data::codes::TapCodes::Memory(file.tap(&rec.info.tap).unwrap().clone());
    rec.decode_rows(&codes, &[row]).unwrap().remove(0)
}

/// `info` says what each kind of file holds: our code files and runs, NumPy's and PyTorch's
/// files, torchvision weights; a path that is none of them is an error naming it.
#[test]
fn info_describes_files_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (codes, dec) = pipeline(dir.path());
    let file = CodeFile::read(&codes).unwrap();
    let text = ok(&["info", s(&codes)]);
    for want in [
        "code file from `preimage extract`, 40 rows".to_string(),
        "conv5 [4, 4, 4] (f32), fc7 [8] (f32)".into(),
        "indexing 4 classes: arrow, car, chair, mug".into(),
        format!("ids: {}, {}, {}, … (37 more)", file.ids[0], file.ids[1], file.ids[2]),
        "encoder: posenet (".into(),
        format!("images: {}", std::fs::canonicalize(p("data")).unwrap().display()),
    ] {
        assert!(text.contains(&want), "{want:?} not in:\n{text}");
    }
    let text = ok(&["info", s(&dec), s(&dec.join("decoder.safetensors")), s(&p("enc"))]);
    assert!(text.contains("decoder run") && text.contains("inverts: posenet fc7 codes [8] → 32×32 images") && text.contains("best epoch: 1"), "{text}");
    assert!(text.contains(&format!("codes: {}", std::fs::canonicalize(&codes).unwrap().display())), "{text}");
    assert!(text.contains("decoder weights (") && text.contains("posenet encoder run (") && text.contains("classes: 4 (arrow, car, chair, mug)"), "{text}");
    let npy = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/npy");
    let text = ok(&["info", s(&npy.join("codes.npz")), s(&npy.join("fc7.npy"))]);
    assert!(text.contains("codes.npz: code file written elsewhere, 3 rows") && text.contains("ids: a.jpg, sub/b.png, c.jpg") && text.contains("arr_0 [8] (float), unnamed"), "{text}");
    // Read from the headers; arrays that commands read whole (not by rows) are marked so.
    let pth = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pth");
    let text = ok(&["info", s(&npy.join("compressed.npz")), s(&pth.join("codes_bare.pt")), s(&pth.join("codes_ids.pt")), s(&pth.join("codes_transposed.pt"))]);
    assert!(text.contains("compressed.npz: code file written elsewhere, 3 rows\n  taps: arr_0 [8] (float, read whole)"), "{text}");
    assert!(text.contains("codes_bare.pt: code file written elsewhere, 3 rows\n  taps: arr_0 [8] (float), unnamed"), "{text}");
    assert!(text.contains("codes_ids.pt: code file written elsewhere, 3 rows\n  taps: fc7 [8] (float)\n") && text.contains("ids: a.jpg, sub/b.png, c.jpg"), "{text}");
    assert!(text.contains("codes_transposed.pt: code file written elsewhere, 3 rows\n  taps: fc7 [8] (float, read whole)"), "{text}");
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/torchvision/alexnet_mini.pth");
    let text = ok(&["info", s(&weights)]);
    assert!(text.contains("16 tensors, 404786 values") && text.contains("features.0.weight [8, 3, 11, 11]"), "{text}");
    assert!(text.contains("loads as: alexnet in torchvision's layout, 10 classes"), "{text}");
    let text = ok(&["info", s(&weights.with_file_name("vgg16_bn_mini.safetensors"))]);
    assert!(text.contains("loads as: vgg16_bn"), "{text}");
    use preimage::tensorfile::{self, Array};
    let other = p("other.safetensors");
    let t = |shape: Vec<usize>| Array::F32 { data: vec![0.0; shape.iter().product()], shape };
    tensorfile::write(&other, &[("a.weight".to_string(), t(vec![2, 3])), ("a.bias".to_string(), t(vec![3]))], &Default::default()).unwrap();
    let text = ok(&["info", s(&other)]);
    assert!(text.contains("2 tensors, 9 values") && text.contains("loads as: none of our encoders"), "{text}");
    let (success, text) = preimage(&["info", s(&p("data"))]);
    assert!(!success && text.contains("neither a decoder run"), "{text}");
    let (success, text) = preimage(&["info", s(&p("nothing.safetensors"))]);
    assert!(!success && text.contains("nothing.safetensors does not exist"), "{text}");
}
