//! The HTML report in a real browser: a page built with `report::html::Page` (table, embedded
//! image, SVG plot, command) must render in headless Chromium without console errors and with
//! every image loaded, and a page with broken images and script errors must be reported as
//! failing (so the check itself can fail). Chromium is found or installed by
//! `common::chromium`; without it the browser part is skipped with a message, while the
//! browser-free image decoding still runs.

mod common;

use common::{base64_decode, check_in_chromium, decode_images_offline};
use preimage::report::html::{png_bytes, Page};
use std::path::{Path, PathBuf};

/// Where screenshots are kept after the test, for a human to look at.
fn keep_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report_html");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A W×H CHW image: left half pure red, right half pure blue.
fn red_blue(h: usize, w: usize) -> Vec<f32> {
    let mut chw = vec![0.0f32; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            let c = if x < w / 2 { 0 } else { 2 };
            chw[c * h * w + y * w + x] = 1.0;
        }
    }
    chw
}

fn report_page() -> Page {
    let (h, w) = (4, 6);
    let png = png_bytes(&red_blue(h, w), h, w).unwrap();
    let mut p = Page::new("preimage report <test>");
    p.heading(2, "Comparison")
        .table(&["tap", "image error", "SSIM"], &[vec!["fc6".into(), "0.4321".into(), "0.55".into()], vec!["fc8".into(), "0.8765".into(), "0.31".into()]])
        .heading(2, "Reconstructions")
        .image("fc6 decoder", &png, w, 8)
        .heading(2, "Training")
        .plot("loss", &[("train".into(), vec![(0.0, 1.0), (10.0, 0.3), (20.0, 0.1)]), ("val".into(), vec![(0.0, 1.2), (20.0, 0.2)])], true)
        .command("preimage quickstart --fast --out runs/quick");
    p
}

fn count_near(img: &image::RgbImage, rgb: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 8)).count()
}

#[test]
fn base64_decoder_matches_rfc4648() {
    for (plain, enc) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
        assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes(), "{enc}");
    }
    assert_eq!(base64_decode("Zm9v\nYmE=").unwrap(), b"fooba");
    assert_eq!(base64_decode("Zm9v!"), None);
}

#[test]
fn report_page_renders_cleanly_in_chromium() {
    // A space and a plus in the path: the file URL must be encoded right.
    let dir = tempfile::Builder::new().prefix("report page+").tempdir().unwrap();
    let html = dir.path().join("index.html");
    report_page().write(&html).unwrap();

    // Without a browser: the embedded image decodes to its true size.
    let offline = decode_images_offline(&html);
    assert_eq!(offline.len(), 1, "{offline:?}");
    assert_eq!(offline[0].1, Ok((6, 4)));

    let shot = keep_dir().join("clean.png");
    let _ = std::fs::remove_file(&shot);
    let Some(check) = check_in_chromium(&html, &shot) else { return };
    eprintln!("screenshot: {}", shot.display());
    check.assert_clean();
    assert_eq!(check.title, "preimage report <test>");
    assert_eq!((check.tables, check.svgs), (1, 1));
    assert_eq!(check.images.len(), 1);
    assert_eq!((check.images[0].natural_width, check.images[0].natural_height), (6, 4));
    for shown in ["fc8", "0.8765", "fc6 decoder", "preimage quickstart --fast --out runs/quick", "Training"] {
        assert!(check.text.contains(shown), "page text lacks {shown:?}:\n{}", check.text);
    }
    // The screenshot is the rendered page: the 8× scaled image shows as 24×32 red and blue blocks.
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), check.screenshot_size);
    assert!(img.width() >= 1000 && img.height() >= 600, "{:?}", check.screenshot_size);
    let (red, blue) = (count_near(&img, [255, 0, 0]), count_near(&img, [0, 0, 255]));
    assert!(red >= 24 * 32 && blue >= 24 * 32, "embedded image not visible in the screenshot: {red} red, {blue} blue pixels");
    // The plot's first series colour (#1f77b4) is drawn too.
    assert!(count_near(&img, [0x1f, 0x77, 0xb4]) > 50, "plot line not visible");
}

#[test]
fn broken_images_and_script_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("broken.html");
    // A good image beside the page (relative src), one missing file, one corrupt data URI,
    // plus a console.error and an uncaught exception.
    let good = png_bytes(&red_blue(3, 5), 3, 5).unwrap();
    std::fs::write(dir.path().join("beside.png"), &good).unwrap();
    let mut page = Page::new("broken");
    page.image("corrupt", b"this is not a PNG", 4, 2).paragraph("text after the images");
    let extra = "<img alt=\"beside\" src=\"beside.png\"><img alt=\"missing\" src=\"missing.png\">\
        <script>console.error('boom from test'); throw new Error('uncaught from test');</script>";
    std::fs::write(&html, page.html().replace("</body>", &format!("{extra}</body>"))).unwrap();

    let offline = decode_images_offline(&html);
    assert_eq!(offline.len(), 3, "{offline:?}");
    assert!(offline[0].1.as_ref().unwrap_err().contains("not a decodable image"), "{offline:?}");
    assert_eq!(offline[1], ("beside.png".to_string(), Ok((5, 3))));
    assert!(offline[2].1.as_ref().unwrap_err().contains("missing.png"), "{offline:?}");

    let shot = keep_dir().join("broken.png");
    let Some(check) = check_in_chromium(&html, &shot) else { return };
    let problems = check.problems();
    eprintln!("problems found (as expected):\n  {}", problems.join("\n  "));
    let broken: Vec<&str> = check.broken_images().iter().map(|i| i.src.as_str()).collect();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert!(broken[0].starts_with("data:image/png;base64,") && broken[1] == "missing.png", "{broken:?}");
    let beside = check.images.iter().find(|i| i.src == "beside.png").unwrap();
    assert_eq!((beside.natural_width, beside.natural_height), (5, 3), "a relative image beside the page loads");
    let errors = check.console_errors.join("\n");
    for want in ["boom from test", "uncaught from test", "ERR_FILE_NOT_FOUND"] {
        assert!(errors.contains(want), "console errors lack {want:?}:\n{errors}");
    }
    let failed = std::panic::catch_unwind(|| check.assert_clean());
    assert!(failed.is_err(), "assert_clean must fail on this page");
    assert!(check.text.contains("text after the images"));
    assert!(shot.is_file());
}
