//! JPEGs decode to the same bytes as in PIL (libjpeg-turbo), so codes computed here match a
//! torchvision pipeline's: the patched zune-jpeg (vendor/zune-jpeg/PREIMAGE_PATCH.md) with
//! libjpeg's IDCT, chroma upsampling, colour conversion and edge replication. The expected
//! images are PIL's decodes saved losslessly (tests/data/pil/make.py).
use std::path::PathBuf;

fn check(name: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pil");
    let ours = preimage::data::folder::to_rgb8(&preimage::data::folder::decode(&dir.join(format!("{name}.jpg"))).unwrap());
    let pil = image::open(dir.join(format!("{name}.pil.png"))).unwrap().to_rgb8();
    assert_eq!(ours.dimensions(), pil.dimensions(), "{name}: size");
    let w = ours.width() as usize;
    let differ: Vec<(usize, usize, i32)> = ours
        .as_raw()
        .iter()
        .zip(pil.as_raw())
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, (a, b))| ((i / 3) % w, (i / 3) / w, *a as i32 - *b as i32))
        .collect();
    assert!(differ.is_empty(), "{name}: {} of {} values differ from PIL's, first (x, y, ours - PIL): {:?}", differ.len(), ours.as_raw().len(), &differ[..differ.len().min(8)]);
}

#[test]
fn subsampled_420_with_restart_markers_and_edges_off_the_grid() {
    check("420_38x26_restarts");
}

#[test]
fn subsampled_422_progressive() {
    check("422_46x23_progressive");
}

#[test]
fn full_chroma_444() {
    check("444_64x48");
}

#[test]
fn grayscale() {
    check("gray_30x18");
}

#[test]
fn subsampled_420_on_the_16_pixel_grid() {
    check("420_32x32");
}
