//! Decode the first codes of a code file with a trained decoder and save them as PNGs.
//!
//! cargo run --release --example reconstruct -- runs/quickstart/decoder-fc7 runs/quickstart/codes.safetensors out/
use preimage::reconstruct::{output_path, Input, Reconstructor, Selection};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [decoder, codes, out] = args.as_slice() else { anyhow::bail!("usage: reconstruct DECODER_RUN CODES.safetensors OUT_DIR") };
    let device = Default::default();
    let rec = Reconstructor::<preimage::device::Cpu>::load(decoder.as_ref(), &device)?;
    // The codes at the decoder's tap, checked against it; rows are read from the file as decoded.
    let (file, tap_codes) = Input::Codes(codes.into()).tap_codes(&rec, decoder.as_ref())?;
    let rows = Selection::Range(0, 16).rows(&file.ids)?;
    let [h, w] = rec.info.image_size;
    for (&row, image) in rows.iter().zip(rec.decode_rows(&tap_codes, &rows)?) {
        preimage::data::folder::save_rgb(&output_path(out.as_ref(), &file.ids[row]), &image, h as u32, w as u32)?;
    }
    println!("decoded {} {} codes into {out}", rows.len(), rec.info.tap);
    Ok(())
}
