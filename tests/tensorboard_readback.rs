//! Writes scalars, a non-square image and text with `TbWriter`, then reads the run back
//! with TensorBoard's own Python loaders (tests/tb_read.py) and checks everything survived:
//! tags, steps, values, image size and orientation, text content and plugin routing.

mod common;

use std::path::PathBuf;
use std::process::Command;

use preimage::report::tensorboard::{grid, TbWriter};
use serde_json::Value;

const READER: &str = include_str!("tb_read.py");

/// `$PREIMAGE_TB_PYTHON` if set (must have tensorboard), else python3 (+ a cached venv).
fn tensorboard_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PREIMAGE_TB_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            common::python_has(&p, "tensorboard"),
            "PREIMAGE_TB_PYTHON={} cannot `import tensorboard`",
            p.display()
        );
        return Some(p);
    }
    common::python_with("tensorboard", &["tensorboard"])
}

const H: usize = 24;
const W: usize = 40;

/// Quadrants: red top-left, green top-right, blue bottom-left, and out-of-range
/// (1.5, -0.3, 1.0) bottom-right, which must clamp to magenta. One grey pixel at the
/// bottom-right corner checks rounding.
fn test_image() -> Vec<f32> {
    let mut chw = vec![0.0f32; 3 * H * W];
    for y in 0..H {
        for x in 0..W {
            let rgb = match (y < H / 2, x < W / 2) {
                (true, true) => [1.0, 0.0, 0.0],
                (true, false) => [0.0, 1.0, 0.0],
                (false, true) => [0.0, 0.0, 1.0],
                (false, false) => [1.5, -0.3, 1.0],
            };
            for c in 0..3 {
                chw[(c * H + y) * W + x] = rgb[c];
            }
        }
    }
    for c in 0..3 {
        chw[(c * H + H - 1) * W + W - 1] = 0.5;
    }
    chw
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn tensorboard_reads_back_what_tbwriter_wrote() {
    let Some(python) = tensorboard_python() else {
        eprintln!("SKIPPED: Python tensorboard package not available (set PREIMAGE_TB_PYTHON)");
        return;
    };

    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("runs").join("exp1"); // nested: `new` must create parents
    let scalars: Vec<(&str, Vec<(usize, f32)>)> = vec![
        ("loss/train", (0..5).map(|s| (s, 1.0 / (s as f32 + 1.0))).collect()),
        ("loss/val", vec![(0, 0.75), (10, 0.5), (20, 0.123_456_79)]),
        ("lr", vec![(0, 1e-3), (1000, 3.3e-7)]),
    ];
    let config = "## Config\n\n```toml\nlr = 0.001\nname = \"café\"\n```\n";
    let img = test_image();
    let (grid_chw, gh, gw) = grid(&[img.clone(), img.clone(), img.clone()], H, W, 2, 2);
    {
        let mut tb = TbWriter::new(&run).unwrap();
        for (tag, points) in &scalars {
            for &(step, v) in points {
                tb.scalar(tag, v, step);
            }
        }
        tb.image("recon", &img, H, W, 7);
        tb.image("grid", &grid_chw, gh, gw, 7);
        tb.text("config", config, 0);
        tb.flush();
    }

    let out = Command::new(&python).arg("-c").arg(READER).arg(&run).output().unwrap();
    assert!(
        out.status.success(),
        "tb_read.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));

    // Scalars: every tag, step and value.
    let got = json["scalars"].as_object().unwrap();
    assert_eq!(got.len(), scalars.len(), "scalar tags: {:?}", got.keys());
    for (tag, points) in &scalars {
        let series = got[*tag].as_array().unwrap_or_else(|| panic!("missing scalar tag {tag}"));
        assert_eq!(series.len(), points.len(), "{tag}");
        for (e, &(step, v)) in series.iter().zip(points) {
            assert_eq!(e[0].as_u64().unwrap(), step as u64, "{tag} step");
            let got_v = e[1].as_f64().unwrap();
            assert!((got_v - v as f64).abs() <= 1e-6, "{tag}@{step}: {got_v} vs {v}");
        }
    }

    // Image: declared size, PNG size, and orientation.
    let recon = &json["images"]["recon"][0];
    assert_eq!(recon["step"], 7);
    assert_eq!((recon["width"].as_u64(), recon["height"].as_u64()), (Some(W as u64), Some(H as u64)));
    let png = image::load_from_memory(&decode_hex(recon["png_hex"].as_str().unwrap())).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (W as u32, H as u32));
    let px = |x: u32, y: u32| png.get_pixel(x, y).0;
    assert_eq!(px(0, 0), [255, 0, 0], "top-left should be red");
    assert_eq!(px(19, 11), [255, 0, 0]);
    assert_eq!(px(20, 0), [0, 255, 0], "top-right should be green");
    assert_eq!(px(39, 11), [0, 255, 0]);
    assert_eq!(px(0, 12), [0, 0, 255], "bottom-left should be blue");
    assert_eq!(px(19, 23), [0, 0, 255]);
    assert_eq!(px(20, 12), [255, 0, 255], "out-of-range values should clamp");
    assert_eq!(px(39, 23), [128, 128, 128], "0.5 rounds to 128");

    // Grid: 3 tiles in 2 columns with 2px padding -> 2 rows.
    assert_eq!((gh, gw), (2 * H + 3 * 2, 2 * W + 3 * 2));
    let g = &json["images"]["grid"][0];
    assert_eq!((g["width"].as_u64(), g["height"].as_u64()), (Some(gw as u64), Some(gh as u64)));
    let gpng = image::load_from_memory(&decode_hex(g["png_hex"].as_str().unwrap())).unwrap().to_rgb8();
    assert_eq!(gpng.dimensions(), (gw as u32, gh as u32));
    assert_eq!(gpng.get_pixel(0, 0).0, [255, 255, 255], "padding is white");
    assert_eq!(gpng.get_pixel(2, 2).0, [255, 0, 0], "tile 0 top-left");
    assert_eq!(gpng.get_pixel((2 + W + 2) as u32, 2).0, [255, 0, 0], "tile 1 top-left");
    assert_eq!(gpng.get_pixel(2, (2 + H + 2) as u32).0, [255, 0, 0], "tile 2 top-left");
    assert_eq!(gpng.get_pixel((2 + W + 2) as u32, (2 + H + 2) as u32).0, [255, 255, 255], "empty cell");

    // Text: a rank-0 string tensor routed to the text plugin.
    let text = &json["texts"]["config"];
    assert_eq!(text["plugin"], "text");
    assert_eq!(text["entries"][0]["step"], 0);
    assert_eq!(text["entries"][0]["shape"].as_array().unwrap().len(), 0);
    assert_eq!(text["entries"][0]["text"], config);

    // What the dashboards see.
    let plugins = &json["plugins"];
    assert_eq!(plugins["config"]["plugin"], "text");
    assert_eq!(plugins["loss/train"]["plugin"], "scalars");
    assert_eq!(plugins["recon"]["plugin"], "images");
    assert_eq!((plugins["recon"]["width"].as_u64(), plugins["recon"]["height"].as_u64()), (Some(W as u64), Some(H as u64)));
}

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_preimage")).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "preimage {args:?} failed:\n{text}");
    text
}

/// A real `train-decoder` run, read back by TensorBoard: loss terms and learning rate per
/// step, validation values equal to metrics.json, the config text, and the validation grid
/// (6 originals above 6 reconstructions: a non-square image) at its true size.
#[test]
fn tensorboard_reads_a_decoder_training_run() {
    let Some(python) = tensorboard_python() else {
        eprintln!("SKIPPED: Python tensorboard package not available (set PREIMAGE_TB_PYTHON)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let p = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    run_ok(&["render", "--out", &p("data"), "--count", "60", "--size", "24", "--seed", "3", "--classes", "chair,mug"]);
    run_ok(&["extract", "--encoder", "posenet", "--input-size", "24", "--layer", "fc7", "--data", &p("data"), "--out", &p("codes.safetensors")]);
    std::fs::write(
        tmp.path().join("cfg.toml"),
        "[model]\nfc = [16]\nbase_channels = 8\nbase_size = 3\nup_channels = [8, 4, 4]\n[train]\nepochs = 2\nbatch_size = 16\nlr = 0.003\nlog_every = 1\nimage_every = 3\n",
    )
    .unwrap();
    run_ok(&["train-decoder", "--config", &p("cfg.toml"), "--codes", &p("codes.safetensors"), "--layer", "fc7", "--out", &p("run")]);
    let out = Command::new(&python).arg("-c").arg(READER).arg(tmp.path().join("run/tb")).output().unwrap();
    assert!(out.status.success(), "tb_read.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let scalars = json["scalars"].as_object().unwrap();
    // 54 training images in batches of 16: 4 steps per epoch, logged at every step.
    for tag in ["train/loss", "train/pixel", "train/lr"] {
        let steps: Vec<u64> = scalars[tag].as_array().unwrap().iter().map(|e| e[0].as_u64().unwrap()).collect();
        assert_eq!(steps, (1..=8).collect::<Vec<u64>>(), "{tag}");
    }
    let history: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("run/metrics.json")).unwrap()).unwrap();
    let val = scalars["val/loss"].as_array().unwrap();
    assert_eq!(val.len(), 2);
    for (e, h) in val.iter().zip(&history) {
        assert_eq!(e[0].as_u64(), h["step"].as_u64());
        assert!((e[1].as_f64().unwrap() - h["val_loss"].as_f64().unwrap()).abs() < 1e-6, "{e} vs {h}");
    }
    assert!(json["texts"]["config"]["entries"][0]["text"].as_str().unwrap().contains("[train]"));
    // Grids at steps 3 and 6 and after each epoch (4, 8), each 6 tiles wide and 2 high.
    let grids = json["images"]["val/reconstructions"].as_array().unwrap();
    let steps: Vec<u64> = grids.iter().map(|g| g["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, vec![3, 4, 6, 8]);
    let (w, h) = (6 * 25 + 1, 2 * 25 + 1);
    for g in grids {
        assert_eq!((g["width"].as_u64(), g["height"].as_u64()), (Some(w), Some(h)));
        let png = image::load_from_memory(&decode_hex(g["png_hex"].as_str().unwrap())).unwrap();
        assert_eq!((png.width() as u64, png.height() as u64), (w, h));
    }
}
