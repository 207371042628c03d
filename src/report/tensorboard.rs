//! TensorBoard event-file writer: scalars, images and text, one writer per run directory.
//!
//! `tensorboard-rs` 0.5.9 is used only for its record framing (length + masked CRC32C) and its
//! scalar summary; the rest is built here from `tensorboard-proto` because its `add_image`
//! takes HWC bytes (despite documenting CHW) and swaps width/height for non-square images, it
//! has no text summaries, and its `EventFileWriter` panics on I/O errors (in a background
//! thread) and names files by the second, so two writers opened in the same second in one
//! directory would truncate each other's file.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use image::ImageEncoder;
use protobuf::{Message, RepeatedField};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::{
    Summary, SummaryMetadata, SummaryMetadata_PluginData, Summary_Image, Summary_Value,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::TensorShapeProto;
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

/// Distinguishes event files opened by this process within the same second.
static FILE_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Appends summaries to one `events.out.tfevents.*` file in a run directory.
///
/// Writes are buffered: call [`TbWriter::flush`] to make them visible to a running
/// TensorBoard (dropping the writer flushes too). Logging must not abort training, so
/// write errors after creation are reported once on stderr and otherwise ignored.
pub struct TbWriter {
    path: PathBuf,
    records: RecordWriter<BufWriter<File>>,
    failed: bool,
}

impl TbWriter {
    /// Creates `dir` (and parents) and a new event file in it.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating TensorBoard log dir {}", dir.display()))?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let name = format!(
            "events.out.tfevents.{:010}.preimage.{}.{}",
            now.as_secs(),
            std::process::id(),
            FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let file = File::create(&path)
            .with_context(|| format!("creating TensorBoard event file {}", path.display()))?;
        let mut w = TbWriter { path, records: RecordWriter::new(BufWriter::new(file)), failed: false };

        // Every event file starts with a version record; readers rely on it.
        let mut ev = Event::new();
        ev.set_wall_time(now.as_secs_f64());
        ev.set_file_version("brain.Event:2".to_string());
        w.write_event(&ev).with_context(|| format!("writing {}", w.path.display()))?;
        w.records.flush().with_context(|| format!("writing {}", w.path.display()))?;
        Ok(w)
    }

    /// Path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn scalar(&mut self, tag: &str, value: f32, step: usize) {
        self.summary(tensorboard_rs::summary::scalar(tag, value), step);
    }

    /// Logs an RGB image given as CHW floats (`3*h*w` values) in `[0,1]`; values are clamped
    /// (NaN becomes 0) and stored as an 8-bit PNG.
    pub fn image(&mut self, tag: &str, chw: &[f32], h: usize, w: usize, step: usize) {
        assert_eq!(chw.len(), 3 * h * w, "TbWriter::image({tag}): expected 3x{h}x{w} CHW values");
        let plane = h * w;
        let mut rgb = Vec::with_capacity(3 * plane);
        for i in 0..plane {
            for c in 0..3 {
                let v = chw[c * plane + i];
                // `clamp` keeps NaN, and `NaN as u8` is 0, which is what we want.
                rgb.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        let mut png = Vec::new();
        let encoded = image::codecs::png::PngEncoder::new(&mut png).write_image(
            &rgb,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        );
        if let Err(e) = encoded {
            self.report(&format!("encoding image {tag}: {e}"));
            return;
        }

        let mut img = Summary_Image::new();
        img.set_height(h as i32);
        img.set_width(w as i32);
        img.set_colorspace(3); // RGB
        img.set_encoded_image_string(png);
        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_image(img);
        self.summary(summary_of(value), step);
    }

    /// Logs a text entry; TensorBoard's Text tab renders it as Markdown.
    pub fn text(&mut self, tag: &str, text: &str, step: usize) {
        // The text plugin finds its data by plugin name; `content` is a serialized
        // `TextPluginData { version: 0 }`, which encodes to zero bytes.
        let mut plugin = SummaryMetadata_PluginData::new();
        plugin.set_plugin_name("text".to_string());
        plugin.set_content(Vec::new());
        let mut meta = SummaryMetadata::new();
        meta.set_plugin_data(plugin);

        // A rank-0 (empty shape) DT_STRING tensor holding the UTF-8 text.
        let mut tensor = TensorProto::new();
        tensor.set_dtype(DataType::DT_STRING);
        tensor.set_tensor_shape(TensorShapeProto::new());
        tensor.set_string_val(RepeatedField::from_vec(vec![text.as_bytes().to_vec()]));

        let mut value = Summary_Value::new();
        value.set_tag(tag.to_string());
        value.set_metadata(meta);
        value.set_tensor(tensor);
        self.summary(summary_of(value), step);
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.records.flush() {
            self.report(&format!("flush: {e}"));
        }
    }

    fn summary(&mut self, summary: Summary, step: usize) {
        let mut ev = Event::new();
        ev.set_wall_time(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        ev.set_step(step as i64);
        ev.set_summary(summary);
        if let Err(e) = self.write_event(&ev) {
            self.report(&e.to_string());
        }
    }

    fn write_event(&mut self, ev: &Event) -> anyhow::Result<()> {
        let bytes = ev.write_to_bytes()?;
        self.records.write(&bytes)?;
        Ok(())
    }

    /// Warns once per writer so a full disk doesn't flood the log.
    fn report(&mut self, msg: &str) {
        if !self.failed {
            self.failed = true;
            eprintln!("warning: TensorBoard event file {}: {msg} (further errors not shown)", self.path.display());
        }
    }
}

impl Drop for TbWriter {
    fn drop(&mut self) {
        self.flush();
    }
}

fn summary_of(value: Summary_Value) -> Summary {
    let mut s = Summary::new();
    s.set_value(RepeatedField::from_vec(vec![value]));
    s
}

/// Padding colour for [`grid`]: white, so it stands apart from dark images.
const GRID_PAD: f32 = 1.0;

/// Tiles RGB CHW images (each `3*h*w`) into one CHW image, row by row, left to right, `cols`
/// per row, with `pad` pixels of white around and between tiles. Returns `(chw, H, W)`;
/// no images gives `(vec![], 0, 0)`.
pub fn grid<T: AsRef<[f32]>>(images: &[T], h: usize, w: usize, cols: usize, pad: usize) -> (Vec<f32>, usize, usize) {
    if images.is_empty() {
        return (Vec::new(), 0, 0);
    }
    let cols = cols.clamp(1, images.len());
    let rows = images.len().div_ceil(cols);
    let gh = rows * h + (rows + 1) * pad;
    let gw = cols * w + (cols + 1) * pad;
    let mut out = vec![GRID_PAD; 3 * gh * gw];
    for (k, img) in images.iter().enumerate() {
        let img = img.as_ref();
        assert_eq!(img.len(), 3 * h * w, "grid: image {k} is not 3x{h}x{w} CHW");
        let y0 = pad + (k / cols) * (h + pad);
        let x0 = pad + (k % cols) * (w + pad);
        for c in 0..3 {
            for y in 0..h {
                let src = &img[(c * h + y) * w..][..w];
                out[(c * gh + y0 + y) * gw + x0..][..w].copy_from_slice(src);
            }
        }
    }
    (out, gh, gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_places_tiles_row_major() {
        // 3 images of 1x2, 2 columns, pad 1 -> 2 rows: H = 2*1 + 3 = 5, W = 2*2 + 3 = 7.
        let imgs: Vec<Vec<f32>> = (0..3).map(|k| vec![k as f32 * 0.1; 6]).collect();
        let (g, gh, gw) = grid(&imgs, 1, 2, 2, 1);
        assert_eq!((gh, gw), (5, 7));
        assert_eq!(g.len(), 3 * 5 * 7);
        let at = |c: usize, y: usize, x: usize| g[(c * gh + y) * gw + x];
        assert_eq!(at(0, 1, 1), 0.0); // image 0, top-left
        assert_eq!(at(1, 1, 4), 0.1); // image 1, same row, second column
        assert_eq!(at(2, 3, 2), 0.2); // image 2, second row, first column
        assert_eq!(at(0, 0, 0), GRID_PAD);
        assert_eq!(at(0, 3, 4), GRID_PAD); // empty last cell stays padding
    }
}
