//! JPEGs decode to the same bytes as in PIL (libjpeg-turbo), so codes computed here match a
//! torchvision pipeline's: the patched zune-jpeg (vendor/zune-jpeg/PREIMAGE_PATCH.md) with
//! libjpeg's IDCT, chroma upsampling, colour conversion and edge replication. The expected
//! images are PIL's decodes saved losslessly (tests/data/pil/make.py).
use std::path::PathBuf;

fn check(name: &str) {
    check_file(&format!("{name}.jpg"), &format!("{name}.pil.png"));
}

/// `file` (under tests/data/pil) decodes to the bytes of PIL's decode saved as `pil`.
fn check_file(file: &str, pil: &str) {
    let name = file;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pil");
    let ours = preimage::data::folder::to_rgb8(&preimage::data::folder::decode(&dir.join(file)).unwrap());
    let pil = image::open(dir.join(pil)).unwrap().to_rgb8();
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
fn other_formats_decode_like_pil() {
    // CMYK JPEG and TIFF, LZW and RGBA TIFF, a palette with a transparent entry, gray + alpha,
    // 1-bit, lossy and lossless RGBA WebP, an animated GIF, BMP, PPM, PGM, a JPEG with an EXIF
    // orientation and one with an ICC profile, neither applied (make.py).
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pil/formats");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".pil.png"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 15, "{files:?}");
    for f in files {
        check_file(&format!("formats/{f}"), &format!("formats/{f}.pil.png"));
    }
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

/// Every prefix of `name`'s file either fails to decode or decodes to exactly the whole file's
/// image: a truncated JPEG is never a silently wrong picture (the unpatched decoder filled the
/// missing rows with gray, or decoded them from zeros, and returned Ok). Returns, per prefix
/// length, whether it decoded.
fn prefixes_never_decode_wrong(name: &str) -> Vec<bool> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/pil/{name}.jpg"));
    let bytes = std::fs::read(&path).unwrap();
    let whole = image::load_from_memory(&bytes).unwrap().to_rgb8();
    let mut decoded = Vec::new();
    for len in 0..bytes.len() {
        match image::load_from_memory(&bytes[..len]) {
            Ok(img) => {
                assert!(img.to_rgb8() == whole, "{name}: its first {len} of {} bytes decode to a different image", bytes.len());
                decoded.push(true);
            }
            Err(_) => decoded.push(false),
        }
    }
    decoded
}

#[test]
fn truncated_baseline_jpegs_fail_unless_only_the_end_marker_is_missing() {
    for name in ["420_38x26_restarts", "444_64x48", "gray_30x18", "420_32x32"] {
        let decoded = prefixes_never_decode_wrong(name);
        let n = decoded.len();
        // Without its EOI marker the image data is complete: it decodes (to the same image).
        assert!(decoded[n - 2], "{name}: all but the EOI marker should decode");
        // Losing image data is an error, wherever the file ends.
        assert!(decoded[..n - 3].iter().all(|ok| !ok), "{name}: a prefix missing image data decoded");
    }
}

#[test]
fn truncated_progressive_jpegs_fail_like_pil() {
    // PIL reads a progressive JPEG to its EOI before output, so even the missing marker fails.
    let decoded = prefixes_never_decode_wrong("422_46x23_progressive");
    assert!(decoded.iter().all(|ok| !ok), "a truncated progressive JPEG decoded");
}

#[test]
fn a_truncated_jpeg_is_named_as_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/pil/444_64x48.jpg");
    let bytes = std::fs::read(src).unwrap();
    let cut = dir.path().join("half.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", preimage::data::folder::decode(&cut).unwrap_err());
    assert!(err.contains("half.jpg") && err.contains("truncated"), "{err}");
}
