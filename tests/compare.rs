//! `preimage compare` on a tiny trained pipeline: rows for every method, the decoder row equal
//! to metrics computed directly with the library, CSV/JSON/grid/TensorBoard files written.
use preimage::compare::{read_rows, Method};
use preimage::data::batch;
use preimage::data::folder::{ImageFolder, SkipLog};
use preimage::evaluate::Evaluator;
mod common;
use common::{ok, s};

#[test]
fn compare_scores_every_method_like_the_library_does() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    ok(&["render", "--out", s(&p("train")), "--count", "48", "--size", "32", "--seed", "1", "--classes", "chair,mug,arrow"]);
    ok(&["render", "--out", s(&p("held")), "--count", "12", "--size", "32", "--seed", "9", "--classes", "chair,mug,arrow"]);
    std::fs::write(p("enc.toml"), "[model]\ninput_size = 32\nconv = [4, 4, 4, 4, 4]\nfc = [8, 8]\n[train]\nepochs = 1\nbatch_size = 16\nlr = 0.001\n").unwrap();
    ok(&["train-encoder", "--config", s(&p("enc.toml")), "--data", s(&p("train")), "--out", s(&p("enc"))]);
    ok(&["extract", "--encoder", "posenet", "--run", s(&p("enc")), "--layer", "fc7", "--data", s(&p("train")), "--out", s(&p("codes.safetensors"))]);
    std::fs::write(p("dec.toml"), "[model]\nfc = [16]\nbase_channels = 8\nup_channels = [8, 8, 4]\n[train]\nepochs = 1\nbatch_size = 8\nlr = 0.003\n").unwrap();
    ok(&["train-decoder", "--config", s(&p("dec.toml")), "--codes", s(&p("codes.safetensors")), "--layer", "fc7", "--out", s(&p("dec"))]);
    let out = p("cmp");
    let text = ok(&[
        "compare", "--decoder", s(&p("dec")), "--data", s(&p("held")), "--count", "4", "--steps", "4", "--final-steps", "2", "--out", s(&out), "--seed", "3",
    ]);
    assert!(text.contains("| fc7 | decoder |") && text.contains("| fc7 | refined |"), "{text}");
    let rows = read_rows(&out.join("compare.json")).unwrap();
    assert_eq!(rows.iter().map(|r| r.method).collect::<Vec<_>>(), vec![Method::Decoder, Method::Optim, Method::Refined]);
    for r in &rows {
        assert_eq!(r.metrics.count, 4);
        assert!(r.seconds_per_image > 0.0);
        assert!(r.metrics.feature_error.is_some() && r.metrics.top1_agreement.is_some() && r.metrics.pose_error_deg.is_some());
    }
    let csv = std::fs::read_to_string(out.join("compare.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.starts_with("tap,method,count,image_error"));

    // The decoder row, recomputed with the library on the same 4 images (same seeded choice).
    type B = preimage::device::Cpu;
    let dev = Default::default();
    let (dec, info) = preimage::decoder::load_run::<B>(&p("dec"), &dev).unwrap();
    let net = info.load_encoder::<B>(None, &dev).unwrap();
    let folder = ImageFolder::open(&p("held"), &SkipLog::new()).unwrap();
    let mut order: Vec<usize> = (0..folder.len()).collect();
    preimage::rng::Rng::derive(3, 0xc0de).shuffle(&mut order);
    let b = batch::load::<B>(&folder, &order[..4], &batch::preprocess_for(&net.spec), None, &dev).unwrap();
    let recon = dec.forward(net.tap_flat(b.images.clone(), "fc7", false).unwrap());
    let mut eval = Evaluator::new(Some(&net), "fc7");
    let sym: Vec<u32> = b.indices.iter().map(|&i| folder.symmetry_of(i)).collect();
    eval.add(recon, b.images, &sym).unwrap();
    let direct = eval.finish(3).unwrap();
    let got = &rows[0].metrics;
    for (a, b) in [(got.image_error, direct.image_error), (got.psnr_db, direct.psnr_db), (got.ssim, direct.ssim), (got.feature_error, direct.feature_error)] {
        assert!((a.unwrap() - b.unwrap()).abs() < 1e-5, "{got:?} vs {direct:?}");
    }
    assert_eq!(got.top1_agreement, direct.top1_agreement);
    // Side by side: original, decoder, optim, refined rows of 4 images of 32 px.
    let grid = image::open(out.join("fc7.png")).unwrap();
    assert_eq!((grid.width(), grid.height()), (4 * 33 + 1, 4 * 33 + 1));
    for run in ["decoder", "optim", "refined", "grids"] {
        assert!(std::fs::read_dir(out.join("tb").join(run)).unwrap().count() > 0, "no TensorBoard run {run}");
    }
    // Picked files: the decoder row on those two alone.
    let (a, b) = (folder.path(order[0]), folder.path(order[1]));
    let two = p("cmp2");
    ok(&["compare", "--decoder", s(&p("dec")), "--data", s(&a), s(&b), "--methods", "decoder", "--out", s(&two)]);
    let rows = read_rows(&two.join("compare.json")).unwrap();
    assert_eq!((rows.len(), rows[0].metrics.count), (1, 2));
}
