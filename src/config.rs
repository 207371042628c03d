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

/// A path or a list of paths (`data = "photos"` or `data = ["a.jpg", "more/"]`), for config
/// keys that take image files and folders as `--data` does.
pub mod one_or_many {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::path::PathBuf;

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(p)) => Ok(vec![p]),
            Ok(OneOrMany::Many(v)) => Ok(v),
            Err(_) => Err(serde::de::Error::custom("expected a path or a list of paths")),
        }
    }

    /// One path is written as a string, so a config that gave one reads as it was written.
    pub fn serialize<S: Serializer>(v: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        match v {
            [one] => one.serialize(s),
            _ => v.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(default, with = "one_or_many", skip_serializing_if = "Vec::is_empty")]
        data: Vec<PathBuf>,
    }

    #[test]
    fn a_path_or_a_list_of_paths_reads_back_as_written() {
        for (text, paths) in [("data = \"photos\"\n", vec!["photos"]), ("data = [\"a.jpg\", \"more\"]\n", vec!["a.jpg", "more"]), ("", vec![])] {
            let t: T = parse(text).unwrap();
            assert_eq!(t.data, paths.iter().map(PathBuf::from).collect::<Vec<_>>());
            let written = to_toml(&t).unwrap();
            assert_eq!(parse::<T>(&written).unwrap(), t, "{written}");
        }
        assert_eq!(to_toml(&T { data: vec!["photos".into()] }).unwrap(), "data = \"photos\"\n");
        let err = parse::<T>("data = 3").unwrap_err().to_string();
        assert!(err.contains("data = 3") && err.contains("a path or a list of paths"), "{err}");
    }
}
