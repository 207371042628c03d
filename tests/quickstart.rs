//! The README's main command in its `--fast` form: the whole pipeline on rendered data, the
//! report's contents, resuming finished stages, and the report rendered in headless Chromium.
mod common;

use common::ok as run;

#[test]
fn quickstart_fast_builds_a_report_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("qs");
    let o = out.to_str().unwrap();
    let text = run(&["quickstart", "--fast", "--out", o]);
    let report = out.join("report/index.html");
    assert!(text.contains(&format!("report: {}", report.display())), "{text}");
    let rows = preimage::compare::read_rows(&out.join("compare/compare.json")).unwrap();
    assert_eq!(rows.len(), 12, "4 taps × 3 methods");
    for tap in ["conv5", "fc6", "fc7", "fc8"] {
        assert_eq!(rows.iter().filter(|r| r.tap == tap).count(), 3);
        assert!(out.join(format!("decoder-{tap}/decoder.safetensors")).exists());
        assert!(out.join(format!("configs/decoder-{tap}.toml")).exists());
    }
    let html = std::fs::read_to_string(&report).unwrap();
    // Every table cell of compare.json is in the report, plus grids, plots and commands.
    for cells in preimage::compare::cells(&rows) {
        let row = cells.iter().map(|c| format!("<td>{c}</td>")).collect::<String>();
        assert!(html.contains(&row), "report lacks row {row}");
    }
    assert_eq!(html.matches("data:image/png;base64,").count(), 4, "one side-by-side grid per tap");
    assert!(html.matches("<svg").count() >= 4, "loss curves");
    assert!(html.contains("preimage train-decoder --config") && html.contains("preimage quickstart --out"));

    // A second run skips every finished stage and leaves the results alone.
    let before = std::fs::read(out.join("compare/compare.json")).unwrap();
    let again = run(&["quickstart", "--fast", "--out", o]);
    assert_eq!(again.matches("done earlier, skipping").count(), 8, "{again}");
    assert_eq!(std::fs::read(out.join("compare/compare.json")).unwrap(), before);

    // The report in a real browser: no console errors, every image loads.
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("quickstart_report.png");
    match common::check_in_chromium(&report, &shot) {
        Some(check) => {
            check.assert_clean();
            assert_eq!(check.images.len(), 4);
            assert!(check.images.iter().all(|i| i.natural_width > 0));
            assert!(check.text.contains("Comparison") && check.tables == 1);
            println!("screenshot: {}", shot.display());
        }
        None => eprintln!("SKIPPED browser check: Chromium is not available (see tests/common/mod.rs)"),
    }
}
