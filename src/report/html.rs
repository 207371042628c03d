//! A self-contained HTML report: tables, images embedded as PNG data URIs, line plots drawn
//! as inline SVG and the commands that reproduce each part. One file, no scripts, no network.
use anyhow::Result;
use std::fmt::Write;
use std::path::Path;

pub struct Page {
    title: String,
    body: String,
}

/// Escape text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Encode CHW `[0,1]` floats as PNG bytes.
pub fn png_bytes(chw: &[f32], h: usize, w: usize) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    assert_eq!(chw.len(), 3 * h * w, "CHW buffer of {} values for {h}×{w}", chw.len());
    let mut rgb = vec![0u8; 3 * h * w];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = chw[c * h * w + y * w + x];
                rgb[(y * w + x) * 3 + c] = (if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) } * 255.0).round() as u8;
            }
        }
    }
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out).write_image(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)?;
    Ok(out)
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

impl Page {
    pub fn new(title: &str) -> Self {
        Self { title: title.into(), body: String::new() }
    }

    pub fn heading(&mut self, level: u8, text: &str) -> &mut Self {
        let _ = writeln!(self.body, "<h{level}>{}</h{level}>", escape(text));
        self
    }

    pub fn paragraph(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.body, "<p>{}</p>", escape(text));
        self
    }

    /// A command in a copyable code block.
    pub fn command(&mut self, cmd: &str) -> &mut Self {
        let _ = writeln!(self.body, "<pre><code>{}</code></pre>", escape(cmd));
        self
    }

    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) -> &mut Self {
        self.body += "<table><thead><tr>";
        for h in headers {
            let _ = write!(self.body, "<th>{}</th>", escape(h));
        }
        self.body += "</tr></thead><tbody>\n";
        for r in rows {
            self.body += "<tr>";
            for c in r {
                let _ = write!(self.body, "<td>{}</td>", escape(c));
            }
            self.body += "</tr>\n";
        }
        self.body += "</tbody></table>\n";
        self
    }

    /// An image embedded as a PNG data URI, with a caption; shown at `scale`× its pixel size.
    pub fn image(&mut self, caption: &str, png: &[u8], width: usize, scale: usize) -> &mut Self {
        let _ = writeln!(
            self.body,
            "<figure><img alt=\"{}\" width=\"{}\" style=\"image-rendering:pixelated\" src=\"data:image/png;base64,{}\"><figcaption>{}</figcaption></figure>",
            escape(caption),
            width * scale,
            base64(png),
            escape(caption)
        );
        self
    }

    /// Line plot of named series (x, y) as inline SVG; `log_y` for losses.
    pub fn plot(&mut self, title: &str, series: &[(String, Vec<(f64, f64)>)], log_y: bool) -> &mut Self {
        self.body += &svg_plot(title, series, log_y);
        self
    }

    pub fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>\
body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:3px 8px;text-align:right}}\
th{{background:#eee}}pre{{background:#f4f4f4;padding:6px;overflow-x:auto}}figure{{display:inline-block;margin:6px}}\
figcaption{{font-size:90%;color:#555}}svg{{background:#fff;border:1px solid #ddd;margin:6px}}\
</style></head><body><h1>{t}</h1>\n{b}</body></html>\n",
            t = escape(&self.title),
            b = self.body
        )
    }

    /// Write atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::util::write_atomic(path, self.html().as_bytes())
    }
}

const COLORS: [&str; 8] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

fn svg_plot(title: &str, series: &[(String, Vec<(f64, f64)>)], log_y: bool) -> String {
    let (w, h, m) = (520.0, 300.0, 50.0);
    let ty = |y: f64| if log_y { y.max(1e-12).log10() } else { y };
    let pts: Vec<(f64, f64)> = series.iter().flat_map(|(_, p)| p.iter().map(|&(x, y)| (x, ty(y)))).filter(|p| p.1.is_finite()).collect();
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\">");
    let _ = write!(s, "<text x=\"{}\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">{}</text>", w / 2.0, escape(title));
    if pts.is_empty() {
        s += "<text x=\"50\" y=\"150\">no data</text></svg>\n";
        return s;
    }
    let (x0, x1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.0), a.1.max(p.0)));
    let (y0, y1) = pts.iter().fold((f64::MAX, f64::MIN), |a, p| (a.0.min(p.1), a.1.max(p.1)));
    let (x1, y1) = (if x1 > x0 { x1 } else { x0 + 1.0 }, if y1 > y0 { y1 } else { y0 + 1.0 });
    let px = |x: f64| m + (x - x0) / (x1 - x0) * (w - 1.6 * m);
    let py = |y: f64| h - m + (y0 - y) / (y1 - y0) * (h - 1.8 * m);
    let _ = write!(s, "<line x1=\"{m}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/>", h - m, w - 0.6 * m, h - m);
    let _ = write!(s, "<line x1=\"{m}\" y1=\"{}\" x2=\"{m}\" y2=\"{}\" stroke=\"#444\"/>", 0.8 * m, h - m);
    let fmt_y = |y: f64| if log_y { format!("{:.3}", 10f64.powf(y)) } else { format!("{y:.3}") };
    for (v, anchor) in [(y0, "end"), (y1, "end")] {
        let _ = write!(s, "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"{anchor}\">{}</text>", m - 4.0, py(v) + 4.0, fmt_y(v));
    }
    for v in [x0, x1] {
        let _ = write!(s, "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{v:.0}</text>", px(v), h - m + 16.0);
    }
    for (i, (name, p)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let path: Vec<String> = p.iter().filter(|q| ty(q.1).is_finite()).map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(ty(y)))).collect();
        let _ = write!(s, "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.5\" points=\"{}\"/>", path.join(" "));
        let _ = write!(s, "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{c}\">{}</text>", w - 1.5 * m - 60.0, 0.8 * m + 14.0 * (i as f64 + 1.0), escape(name));
    }
    s += "</svg>\n";
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn page_has_table_image_plot_and_escapes() {
        let mut p = Page::new("a <report>");
        let png = png_bytes(&[0.5; 3 * 2 * 3], 2, 3).unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (3, 2));
        p.table(&["tap", "error"], &[vec!["fc6".into(), "0.5".into()]])
            .image("grid", &png, 3, 4)
            .plot("loss", &[("train".into(), vec![(0.0, 1.0), (1.0, 0.5)])], true)
            .command("preimage render --out x");
        let html = p.html();
        assert!(html.contains("a &lt;report&gt;"));
        assert!(html.contains("<td>fc6</td>") && html.contains("data:image/png;base64,") && html.contains("<polyline"));
        assert!(html.contains("preimage render --out x"));
    }
}
