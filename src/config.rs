//! TOML configs read into typed structs. Unknown keys are errors (serde's
//! `deny_unknown_fields` on every config struct) and each error names the file.
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Read a TOML file into `T`; the error names the file and the offending key/value.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
    parse(&text).with_context(|| format!("in config {}", path.display()))
}

/// Parse TOML text into `T` (errors carry toml's message: the key, line and column).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

/// Serialize a config back to TOML (saved in run folders so a run records what it used).
pub fn to_toml<T: serde::Serialize>(cfg: &T) -> Result<String> {
    Ok(toml::to_string_pretty(cfg)?)
}
