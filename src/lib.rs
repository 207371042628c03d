//! preimage: turn a frozen CNN's features ("codes") back into images.
//!
//! Data flows image → [`encoder`] tap → code file ([`data::codes`]) → decoder → image.
//! The CLI in `main.rs` only parses arguments and calls into this library.

pub mod bench;
pub mod compare;
pub mod config;
pub mod data;
pub mod decoder;
pub mod device;
pub mod edit;
pub mod encoder;
pub mod evaluate;
pub mod extract;
pub mod metrics;
pub mod optimize;
pub mod quickstart;
pub mod reconstruct;
pub mod report;
pub mod rng;
pub mod tensorfile;
pub mod train;
pub mod util;
