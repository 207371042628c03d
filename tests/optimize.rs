//! The optimization commands from the CLI: outputs written and read back, determinism for a
//! seed, snapshots and TensorBoard files, the refiner and the decoder parameterization, and
//! the error messages for bad input (taps, unit ranges, classes, masks, codes).
use std::path::{Path, PathBuf};
use std::process::Command;

fn preimage(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_preimage")).args(args).output().expect("run preimage");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn ok(args: &[&str]) -> String {
    let (success, text) = preimage(args);
    assert!(success, "preimage {args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str]) -> String {
    let (success, text) = preimage(args);
    assert!(!success, "preimage {args:?} should fail:\n{text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A random-weight posenet at 32×32 (same seed everywhere, so codes and decoder match).
const ENC: [&str; 6] = ["--encoder", "posenet", "--input-size", "32", "--seed", "4"];

fn with_enc<'a>(cmd: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![cmd];
    v.extend_from_slice(&ENC);
    v.extend_from_slice(rest);
    v
}

/// 24 rendered 32×32 images.
fn data(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    ok(&["render", "--out", s(&data), "--count", "24", "--size", "32", "--seed", "2", "--classes", "chair,mug,arrow"]);
    data
}

fn first_image(data: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(data.join("mug")).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v[0].clone()
}

fn png(path: &Path) -> image::RgbImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8()
}

/// The number after `key = ` in a command's output.
fn number_after(text: &str, key: &str) -> f64 {
    let i = text.find(key).unwrap_or_else(|| panic!("no '{key}' in:\n{text}")) + key.len();
    text[i..].trim_start().split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-')).next().unwrap().parse().unwrap()
}

#[test]
fn invert_from_image_and_code_file_is_deterministic_with_snapshots_and_tensorboard() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let img = first_image(&data);
    let (a, b, c) = (dir.path().join("a.png"), dir.path().join("b.png"), dir.path().join("c.png"));
    // Same seed: the same file (noise start and jitter are seeded).
    let tb = dir.path().join("tb");
    let common = ["--layer", "conv3", "--steps", "30", "--final-steps", "5", "--quiet"];
    let mut args = with_enc("invert", &common);
    args.extend(["--image", s(&img), "--out", s(&a), "--snapshots", "0,10,35", "--tensorboard", s(&tb)]);
    let text = ok(&args);
    let e = number_after(&text, "feature error at conv3 =");
    assert!(e < 0.5, "30 steps reduce the feature error well below its noise start:\n{text}");
    assert_eq!(png(&a).dimensions(), (32, 32));
    for step in ["step_00000.png", "step_00010.png", "step_00035.png"] {
        assert_eq!(png(&dir.path().join("a_snapshots").join(step)).dimensions(), (32, 32), "{step}");
    }
    assert!(std::fs::read_dir(&tb).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("events.out.tfevents")));
    let mut args = with_enc("invert", &common);
    args.extend(["--image", s(&img), "--out", s(&b)]);
    ok(&args);
    assert_eq!(png(&a), png(&b));
    // Codes from `extract`: the same code inverts to the same image as from --image.
    let codes = dir.path().join("codes.safetensors");
    let mut args = with_enc("extract", &["--layer", "conv3,fc7", "--data", s(&data), "--out", s(&codes)]);
    ok(&args);
    let file = preimage::data::codes::CodeFile::read(&codes).unwrap();
    let index = file.ids.iter().position(|id| data.join(id) == img).unwrap().to_string();
    args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--index", &index, "--out", s(&c)]);
    ok(&args);
    assert_eq!(png(&a), png(&c), "inverting the saved code equals inverting the image's code");

    let mut args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--index", "24", "--out", s(&c)]);
    let err = fails(&args);
    assert!(err.contains("out of range") && err.contains("0..=23"), "{err}");
    // Codes of other weights are refused, naming them (without weights, the file's are taken).
    let other = dir.path().join("other.safetensors");
    let net = preimage::encoder::load::<preimage::device::Cpu>("posenet", &preimage::encoder::WeightSource::Random(5), Some(32), &Default::default()).unwrap().net;
    preimage::encoder::weights::save(&net, &other).unwrap();
    let args = vec!["invert", "--weights", s(&other), "--layer", "conv3", "--codes", s(&codes), "--out", s(&c)];
    assert!(fails(&args).contains("random:4"), "codes of other weights are refused, naming them");
    let mut args = with_enc("invert", &["--layer", "conv9", "--image", s(&img), "--out", s(&c)]);
    assert!(fails(&args).contains("valid taps: conv1"));
    args = with_enc("invert", &["--layer", "conv3", "--image", s(&img), "--out", s(&c), "--solver", "lbfgs"]);
    assert!(fails(&args).contains("L-BFGS needs a deterministic objective"));
    args = with_enc("invert", &["--layer", "conv3", "--image", s(&img), "--out", s(&c), "--lr=-0.5"]);
    assert!(fails(&args).contains("--lr (solver.lr) must be a positive number, got -0.5"));
    args = with_enc("invert", &["--layer", "conv3", "--image", s(&img), "--out", s(&c), "--momentum", "1"]);
    assert!(fails(&args).contains("--momentum (solver.momentum) must be in [0, 1), got 1"));
    args = with_enc("invert", &["--layer", "conv3", "--image", s(&img), "--out", s(&c), "--solver", "lbfgs", "--jitter", "0", "--steps", "10", "--final-steps", "0", "--quiet"]);
    let e = number_after(&ok(&args), "feature error at conv3 =");
    assert!(e < 0.5, "L-BFGS without jitter runs: {e}");
}

#[test]
fn invert_many_codes_writes_one_image_per_id_independent_of_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let [inv, grid, one, rows_dir, x, x_png, snaps] = ["inv", "grid.png", "one.png", "rows", "x", "x.png", "inv_snapshots"].map(|n| dir.path().join(n));
    let common = ["--layer", "conv3", "--steps", "12", "--final-steps", "2", "--quiet"];
    // A folder of images, three at a time: one PNG per image, errors in invert.csv, a grid,
    // and snapshots in one folder per image.
    let mut args = with_enc("invert", &common);
    let mug = data.join("mug");
    args.extend(["--image", s(&mug), "--out", s(&inv), "--batch", "3", "--grid", s(&grid), "--snapshots", "0"]);
    let text = ok(&args);
    let names: Vec<String> = {
        let mut v: Vec<String> = std::fs::read_dir(data.join("mug")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(names.len(), 8);
    assert!(text.contains("batch 3/3") && text.contains("inverted 8 codes"), "{text}");
    let csv = std::fs::read_to_string(inv.join("invert.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "id,feature_error,relative_error");
    assert_eq!(rows.len(), 9, "{csv}");
    for (row, name) in rows[1..].iter().zip(&names) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[0], name);
        let (e, r): (f64, f64) = (f[1].parse().unwrap(), f[2].parse().unwrap());
        assert!(e.is_finite() && (r - e.sqrt()).abs() < 1e-4, "{row}");
        assert_eq!(png(&inv.join(name)).dimensions(), (32, 32));
        let stem = name.trim_end_matches(".png");
        assert_eq!(png(&snaps.join(stem).join("step_00000.png")).dimensions(), (32, 32));
    }
    assert!(png(&grid).width() > 2 * 32);
    // Started from the images themselves, every code's start error is 0.
    let mut args = with_enc("invert", &["--layer", "conv3", "--steps", "2", "--final-steps", "0", "--quiet", "--init", "image"]);
    args.extend(["--image", s(&mug), "--out", s(&x)]);
    ok(&args);
    let csv = std::fs::read_to_string(x.join("invert.csv")).unwrap();
    assert!(csv.starts_with("id,feature_error,relative_error,start_feature_error\n"), "{csv}");
    for row in csv.lines().skip(1) {
        assert!(row.rsplit(',').next().unwrap().parse::<f64>().unwrap() < 1e-6, "{row}");
    }
    // Inverted alone, an image gives the same result as in its batch of three (same start).
    let last = data.join("mug").join(&names[7]);
    let mut args = with_enc("invert", &common);
    args.extend(["--image", s(&last), "--out", s(&one)]);
    ok(&args);
    let (alone, batched) = (png(&one), png(&inv.join(&names[7])));
    let diff = alone.as_raw().iter().zip(batched.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
    assert!(diff <= 2, "alone vs batched differ by {diff}/255");

    // Rows of a code file, by range and by id: outputs keep the class folder of the id.
    let codes = dir.path().join("codes.safetensors");
    ok(&with_enc("extract", &["--layer", "conv3", "--data", s(&data), "--out", s(&codes)]));
    let file = preimage::data::codes::CodeFile::read(&codes).unwrap();
    let mut args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--range", "1:4", "--batch", "2", "--out", s(&rows_dir)]);
    ok(&args);
    let csv = std::fs::read_to_string(rows_dir.join("invert.csv")).unwrap();
    let ids: Vec<&str> = csv.lines().skip(1).map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(ids, file.ids[1..4].iter().map(String::as_str).collect::<Vec<_>>());
    for id in &file.ids[1..4] {
        assert!(rows_dir.join(id).with_extension("png").is_file(), "{id}");
    }
    // Without --encoder and weights, the encoder is the one the code file records (posenet,
    // random seed 4, 32 px): the same image as with them named (`--seed` is then the noise's).
    let from_file = dir.path().join("from_file.png");
    let mut args = vec!["invert", "--seed", "4", "--codes", s(&codes), "--index", "1", "--out", s(&from_file)];
    args.extend(common);
    ok(&args);
    let (a, b) = (png(&from_file), png(&rows_dir.join(&file.ids[1]).with_extension("png")));
    let diff = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
    assert!(diff <= 2, "recorded encoder vs named differ by {diff}/255");
    let id = file.ids[5].trim_end_matches(".png").to_string();
    let mut args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--ids", &id, "--index", "1", "--out", s(&x)]);
    assert!(fails(&args).contains("cannot be used with"));
    let mut args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--ids", &id, "--init", "image", "--out", s(&x)]);
    assert!(fails(&args).contains("--init image needs --image"));
    let mut args = with_enc("invert", &common);
    args.extend(["--codes", s(&codes), "--index", "0,2", "--out", s(&x_png)]);
    let err = fails(&args);
    assert!(err.contains("2 codes to invert") && err.contains("must be a folder"), "{err}");
    let mut args = with_enc("invert", &common);
    args.extend(["--image", s(&data), "--index", "2", "--out", s(&x)]);
    assert!(fails(&args).contains("pick rows of --codes"));
}

#[test]
fn visualize_dream_caricature_and_transform_write_their_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let img = first_image(&data);
    let vis = dir.path().join("vis");
    let text = ok(&with_enc("visualize", &["--target", "fc8:class_2,conv5:3,conv4:1@1:2", "--out", s(&vis), "--steps", "8", "--quiet"]));
    for f in ["fc8_class_2.png", "conv5_3.png", "conv4_1_1_2.png"] {
        assert_eq!(png(&vis.join(f)).dimensions(), (32, 32), "{f}");
    }
    assert!(png(&vis.join("grid.png")).width() > 3 * 32);
    assert!(text.contains("fc8:class_2") && text.contains("activation"), "{text}");
    // Ranges and `all` write one image per unit; a unit's image does not depend on the batch.
    let (v2, v3) = (dir.path().join("v2"), dir.path().join("v3"));
    let text = ok(&with_enc("visualize", &["--target", "conv5:0-2,fc8:all", "--batch", "2", "--out", s(&v2), "--steps", "6", "--quiet"]));
    assert!(text.contains("batch 2/"), "{text}");
    let classes = std::fs::read_dir(&v2).unwrap().filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("fc8_")).count();
    assert!(classes >= 2, "fc8:all gives one image per class: {classes}");
    ok(&with_enc("visualize", &["--target", "conv5:0,conv5:1,conv5:2", "--batch", "3", "--out", s(&v3), "--steps", "6", "--quiet"]));
    for f in ["conv5_0.png", "conv5_1.png", "conv5_2.png"] {
        let (a, b) = (png(&v2.join(f)), png(&v3.join(f)));
        let diff = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
        assert!(diff <= 2, "{f}: batch of 2 vs 3 differ by {diff}/255");
    }
    // A weighted sum of units is one target, one image, named by it.
    let text = ok(&with_enc("visualize", &["--target", "conv5:1+0.5*conv5:2", "--target", "-fc8:class_1", "--out", s(&vis), "--steps", "4", "--quiet"]));
    assert!(text.contains("conv5:1+0.5*conv5:2") && text.contains("-fc8:class_1"), "{text}");
    for f in ["conv5_1+0_5_conv5_2.png", "-fc8_class_1.png"] {
        assert_eq!(png(&vis.join(f)).dimensions(), (32, 32), "{f}");
    }
    assert!(fails(&with_enc("visualize", &["--target", "conv5:1+conv5:64", "--out", s(&vis)])).contains("in target 'conv5:1+conv5:64'"));
    assert!(fails(&with_enc("visualize", &["--target", "conv5:3-1", "--out", s(&vis)])).contains("range 3-1 is empty"));
    // A range past the tap is refused before it is written out (it had aborted, out of memory).
    let text = fails(&with_enc("visualize", &["--target", "conv5:0-18446744073709551615", "--out", s(&vis)]));
    assert!(text.contains("conv5 has ") && text.contains("not 18446744073709551615") && !text.contains("panicked"), "{text}");
    let out = dir.path().join("x.png");
    assert!(fails(&with_enc("visualize", &["--target", "conv5:64", "--out", s(&vis)])).contains("valid 0..=63"));
    assert!(fails(&with_enc("visualize", &["--target", "conv5:1@9:0", "--out", s(&vis)])).contains("y in 0..="));
    assert!(fails(&with_enc("visualize", &["--target", "fc8:spaceship", "--out", s(&vis)])).contains("class_0"));

    ok(&with_enc("dream", &["--layer", "conv4", "--image", s(&img), "--octaves", "2", "--steps", "3", "--out", s(&out), "--quiet"]));
    let (orig, dreamt) = (image::open(&img).unwrap().to_rgb8(), png(&out));
    assert_eq!(dreamt.dimensions(), (32, 32));
    assert_ne!(dreamt, orig, "dream changes the image");
    // A photo dreams at its own size (not cropped to the encoder input), scaled down past
    // --max-size; an fc tap sees it resized to the input.
    let wide = dir.path().join("wide.png");
    image::imageops::resize(&orig, 60, 40, image::imageops::FilterType::Triangle).save(&wide).unwrap();
    ok(&with_enc("dream", &["--layer", "conv4", "--image", s(&wide), "--octaves", "2", "--steps", "2", "--out", s(&out), "--quiet"]));
    assert_eq!(png(&out).dimensions(), (60, 40));
    let text = ok(&with_enc("dream", &["--layer", "fc7", "--image", s(&wide), "--max-size", "30", "--octaves", "1", "--steps", "2", "--out", s(&out), "--quiet"]));
    assert_eq!(png(&out).dimensions(), (30, 20));
    assert!(text.contains("dreaming at 30×20") && text.contains("is 60×40"), "{text}");
    // Several images, one at a time, each at its own size and as it dreams alone.
    let (dreams, two) = (dir.path().join("dreams"), dir.path().join("two"));
    std::fs::create_dir_all(&two).unwrap();
    std::fs::copy(&wide, two.join("wide.png")).unwrap();
    std::fs::copy(&img, two.join("square.png")).unwrap();
    std::fs::write(two.join("broken.png"), b"not a png").unwrap();
    let text = ok(&with_enc("dream", &["--layer", "conv4", "--image", s(&two), "--octaves", "2", "--steps", "2", "--out", s(&dreams), "--quiet"]));
    assert!(text.contains("broken.png"), "a broken file in a folder is skipped by name: {text}");
    assert_eq!(png(&dreams.join("wide.png")).dimensions(), (60, 40));
    assert_eq!(png(&dreams.join("square.png")).dimensions(), (32, 32));
    ok(&with_enc("dream", &["--layer", "conv4", "--image", s(&wide), "--octaves", "2", "--steps", "2", "--out", s(&out), "--quiet"]));
    assert_eq!(png(&out), png(&dreams.join("wide.png")));
    // An image too small for the layers up to a conv tap is an error naming its size.
    let err = fails(&with_enc("dream", &["--layer", "conv5", "--image", s(&wide), "--max-size", "6", "--out", s(&out)]));
    assert!(err.contains("(6×4 pixels) is too small for posenet up to conv5"), "{err}");
    assert!(fails(&with_enc("dream", &["--layer", "conv4", "--image", s(&wide), "--octaves", "0", "--out", s(&out)])).contains("--octaves must be at least 1"));
    // NaN passes comparisons that fail; it is refused by name, as are negative regularizers.
    for (flag, value, says) in [
        ("--octave-scale", "nan", "--octave-scale must be > 1"),
        ("--rotate", "nan", "--rotate must be a finite number"),
        ("--scales", "0", "--scales must be positive"),
        ("--tv-beta", "-1", "--tv-beta (an exponent) must be a number ≥ 1"),
        ("--tv", "-1", "--tv (a regularizer's weight) must be a number ≥ 0"),
        ("--pad", "100000", "--pad must be at most the input's side"),
    ] {
        let arg = format!("{flag}={value}");
        let err = fails(&with_enc("dream", &["--layer", "conv4", "--image", s(&wide), &arg, "--out", s(&out)]));
        assert!(err.contains(says), "{flag} {value}: {err}");
    }
    ok(&with_enc("caricature", &["--layer", "conv4", "--image", s(&img), "--steps", "5", "--final-steps", "1", "--out", s(&out), "--quiet"]));
    assert_eq!(png(&out).dimensions(), (32, 32));
    // A folder, three at a time: one PNG per image, each as the image caricatured alone.
    let (cars, cgrid, mug) = (dir.path().join("cars"), dir.path().join("cars.png"), img.parent().unwrap().to_path_buf());
    let text = ok(&with_enc("caricature", &["--layer", "conv4", "--image", s(&mug), "--batch", "3", "--grid", s(&cgrid), "--steps", "5", "--final-steps", "1", "--out", s(&cars), "--quiet"]));
    assert!(text.contains("batch 3/3"), "{text}");
    let alone = png(&out);
    let batched = png(&cars.join(img.file_name().unwrap()));
    let diff = alone.as_raw().iter().zip(batched.as_raw()).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
    assert!(diff <= 2, "alone vs batched differ by {diff}/255");
    assert_eq!(std::fs::read_dir(&cars).unwrap().count(), 8);
    assert_eq!(png(&cgrid).dimensions(), (3 * 34 + 2, 3 * 34 + 2));
    let err = fails(&with_enc("caricature", &["--layer", "conv4", "--image", s(&mug), "--out", s(&out)]));
    assert!(err.contains("8 images to caricature") && err.contains("must be a folder"), "{err}");

    let text = ok(&with_enc("transform", &["--image", s(&img), "--class", "class_3", "--steps", "10", "--out", s(&out), "--quiet"]));
    assert!(text.contains("target class_3") && text.contains("SSIM to the original"), "{text}");
    let err = fails(&with_enc("transform", &["--image", s(&img), "--class", "spaceship", "--out", s(&out)]));
    assert!(err.contains("class_0") && err.contains("0..=9"), "{err}");
    // Masks: the image's or the encoder input's size; anything else names both.
    let mask = dir.path().join("mask.png");
    let mut m = image::GrayImage::new(32, 32);
    for y in 0..16 {
        for x in 0..32 {
            m.put_pixel(x, y, image::Luma([255]));
        }
    }
    m.save(&mask).unwrap();
    ok(&with_enc("transform", &["--image", s(&img), "--class", "3", "--mask", s(&mask), "--steps", "10", "--lr", "0.05", "--out", s(&out), "--quiet"]));
    let (before, after) = (image::open(&img).unwrap().to_rgb8(), png(&out));
    for y in 17..32 {
        for x in 0..32 {
            assert_eq!(before.get_pixel(x, y), after.get_pixel(x, y), "black mask region ({x},{y}) is unchanged");
        }
    }
    assert!((0..15).any(|y| (0..32).any(|x| before.get_pixel(x, y) != after.get_pixel(x, y))), "the white region changed");
    image::GrayImage::new(20, 10).save(&mask).unwrap();
    let err = fails(&with_enc("transform", &["--image", s(&img), "--class", "3", "--mask", s(&mask), "--out", s(&out)]));
    assert!(err.contains("20×10") && err.contains("32×32"), "{err}");

    // A folder of images with a folder of masks named as they are (any image type), three at a
    // time: each image keeps its own black region, and comes out as it does alone.
    let masks = dir.path().join("masks");
    std::fs::create_dir_all(&masks).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&mug).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    names.sort();
    let top_free = |k: usize| k.is_multiple_of(2);
    for (k, name) in names.iter().enumerate() {
        let m = image::GrayImage::from_fn(32, 32, |_, y| image::Luma([if (y < 16) == top_free(k) { 255 } else { 0 }]));
        m.save(masks.join(name.replace(".png", if k == 1 { ".bmp" } else { ".png" }))).unwrap();
    }
    let (tr, tgrid) = (dir.path().join("tr"), dir.path().join("tr.png"));
    let flags = ["--class", "3", "--mask", s(&masks), "--steps", "8", "--lr", "0.05", "--quiet"];
    let text = ok(&with_enc("transform", &[&["--image", s(&mug), "--batch", "3", "--grid", s(&tgrid), "--out", s(&tr)], &flags[..]].concat()));
    assert!(text.contains("batch 3/3") && text.contains("transformed 8 images"), "{text}");
    for (k, name) in names.iter().enumerate() {
        let (before, after) = (png(&mug.join(name)), png(&tr.join(name)));
        let kept = |y: u32| (y < 16) != top_free(k);
        for y in (0..32).filter(|&y| kept(y)) {
            for x in 0..32 {
                assert_eq!(before.get_pixel(x, y), after.get_pixel(x, y), "{name}: black mask region ({x},{y}) is unchanged");
            }
        }
        assert!((0..32).filter(|&y| !kept(y)).any(|y| (0..32).any(|x| before.get_pixel(x, y) != after.get_pixel(x, y))), "{name}: the white region changed");
    }
    let alone = dir.path().join("alone.png");
    ok(&with_enc("transform", &[&["--image", s(&mug.join(&names[4])), "--out", s(&alone)], &flags[..]].concat()));
    let diff = png(&alone).as_raw().iter().zip(png(&tr.join(&names[4])).as_raw()).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
    assert!(diff <= 2, "alone vs batched differ by {diff}/255");
    assert_eq!(png(&tgrid).dimensions(), (3 * 34 + 2, 3 * 34 + 2));
    // The verdicts per image: the target's probability before and after, SSIM to the original.
    let csv = std::fs::read_to_string(tr.join("transform.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0], ["id", "class_before", "p_before", "class_after", "p_after", "p_target_before", "p_target_after", "ssim"]);
    assert_eq!(rows[1..].iter().map(|r| r[0].to_string()).collect::<Vec<_>>(), names);
    for r in &rows[1..] {
        let p = |i: usize| r[i].parse::<f64>().unwrap();
        assert!(p(6) > p(5), "the target class gained: {r:?}");
        assert!((0.0..=1.0).contains(&p(7)) && p(7) > 0.5, "still the same picture: {r:?}");
        if r[3] == "class_3" {
            assert_eq!(p(4), p(6), "{r:?}");
        }
    }
    // A mask missing for one image stops the run before any step, naming the image.
    std::fs::remove_file(masks.join(&names[6])).unwrap();
    let err = fails(&with_enc("transform", &[&["--image", s(&mug), "--out", s(&tr)], &flags[..]].concat()));
    assert!(err.contains(&format!("no mask for {}", mug.join(&names[6]).display())), "{err}");
}

#[test]
fn refiner_and_decoder_parameterization_use_a_trained_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let data = data(dir.path());
    let img = first_image(&data);
    let codes = dir.path().join("codes.safetensors");
    ok(&with_enc("extract", &["--layer", "fc7", "--data", s(&data), "--out", s(&codes)]));
    let cfg = dir.path().join("dec.toml");
    std::fs::write(&cfg, "[model]\nfc = [16]\nbase_channels = 8\nup_channels = [8, 8, 4]\nconvs_per_stage = 1\n[train]\nepochs = 1\nbatch_size = 8\nlr = 0.003\nseed = 5\n").unwrap();
    let run = dir.path().join("dec");
    ok(&["train-decoder", "--config", s(&cfg), "--codes", s(&codes), "--layer", "fc7", "--out", s(&run)]);
    let init = format!("decoder:{}", run.display());
    let out = dir.path().join("r.png");
    let text = ok(&with_enc("invert", &["--layer", "fc7", "--image", s(&img), "--init", &init, "--steps", "20", "--final-steps", "0", "--out", s(&out), "--quiet"]));
    let start = number_after(&text, "start: feature error at fc7 =");
    let refined = number_after(text.split("wrote").nth(1).unwrap(), "fc7 =");
    assert!(refined < start, "the refiner lowers the decoder's feature error: {start} → {refined}\n{text}");
    // A decoder of another tap is refused, naming both.
    let err = fails(&with_enc("invert", &["--layer", "conv3", "--image", s(&img), "--init", &init, "--out", s(&out)]));
    assert!(err.contains("fc7") && err.contains("conv3"), "{err}");
    // DGN-AM: the code of the decoder is optimized.
    let param = format!("decoder:{}", run.display());
    let vis = dir.path().join("vis");
    ok(&with_enc("visualize", &["--target", "fc8:1", "--param", &param, "--steps", "5", "--out", s(&vis), "--quiet"]));
    assert_eq!(png(&vis.join("fc8_1.png")).dimensions(), (32, 32));
    let text = ok(&with_enc("invert", &["--layer", "fc7", "--image", s(&img), "--param", &param, "--steps", "10", "--final-steps", "0", "--jitter", "0", "--out", s(&out), "--quiet"]));
    assert!(text.contains("feature error at fc7"), "{text}");
    let err = fails(&with_enc("invert", &["--layer", "fc7", "--image", s(&img), "--param", "decoder:/nonexistent", "--out", s(&out)]));
    assert!(err.contains("/nonexistent"), "{err}");
}
