//! preimage: turn a frozen CNN's features ("codes") back into images.
//!
//! Data flows image → [`encoder`] tap → code file ([`data::codes`]) → decoder → image.
//! The CLI in `main.rs` only parses arguments and calls into this library.
//!
//! ## As a library
//!
//! The same steps from Rust: an encoder, codes at a tap, Mahendran & Vedaldi's inversion, and
//! an objective of your own (a random-weight posenet here;
//! `WeightSource::File("alexnet.pth".into())` loads a torchvision state_dict):
//!
//! ```
//! use burn::module::AutodiffModule;
//! use burn::tensor::{Distribution, Tensor};
//! use preimage::device::{Cpu, CpuAd};
//! use preimage::encoder::{self, WeightSource};
//! use preimage::optimize::{self, objective, RunOptions};
//!
//! # fn main() -> anyhow::Result<()> {
//! let device = Default::default();
//! let enc = encoder::load::<CpuAd>("posenet", &WeightSource::Random(0), Some(32), &device)?;
//! // Images in [0, 1], as `data::folder::load_rgb` reads a file; the encoder normalizes them.
//! let images = Tensor::<Cpu, 4>::random([2, 3, 32, 32], Distribution::Uniform(0.0, 1.0), &device);
//! let code = enc.net.valid().tap_flat(images, "conv5", false)?;
//! assert_eq!(code.dims(), [2, 64 * 4 * 4]);
//!
//! // The `invert` command's preset, its jitter scaled to this input, cut to a few steps.
//! let mut cfg = optimize::preset("invert")?;
//! cfg.transforms = cfg.transforms.scaled_to(32);
//! (cfg.solver.steps, cfg.solver.final_steps) = (5, 1);
//! let out = optimize::invert(enc.net.clone(), "conv5", code.clone(), None, &cfg, &RunOptions::default())?;
//! assert_eq!((out.images.len(), out.size), (2, [32, 32]));
//!
//! // Any objective, Lucid-style: terms weighted and added.
//! let nat = objective::Natural::new(enc.net.spec.mean, 80.0);
//! let obj = 300.0 * objective::feature("conv5", Tensor::from_inner(code)) + objective::tv(2.0, nat);
//! let out = optimize::render(enc.net, obj, 2, None, &cfg, &RunOptions::default(), &device)?;
//! out.save(0, &std::env::temp_dir().join("preimage-doc-example.png"))?;
//! # Ok(())
//! # }
//! ```

pub mod bench;
pub mod classify;
pub mod compare;
pub mod config;
pub mod data;
pub mod decoder;
pub mod device;
pub mod edit;
pub mod encoder;
pub mod evaluate;
pub mod extract;
pub mod info;
pub mod metrics;
pub mod optimize;
pub mod quickstart;
pub mod reconstruct;
pub mod report;
pub mod rng;
pub mod tensorfile;
pub mod train;
pub mod util;
