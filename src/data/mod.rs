//! Data: image folders, the built-in renderer, code files and batching.
pub mod batch;
pub mod codes;
pub mod folder;
pub mod meshes;
pub mod npy;
pub mod render;
pub mod resize;
pub mod torchsave;
