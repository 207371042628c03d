//! Reporting: TensorBoard event files and image grids.
pub mod html;
pub mod tensorboard;
