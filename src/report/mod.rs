//! Reporting: TensorBoard event files and image grids.
pub mod tensorboard;
