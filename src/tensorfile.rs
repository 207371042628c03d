//! Reading and writing safetensors files (weights and code files) as plain f32/i64 arrays.
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A tensor read from or written to a file, in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    I64 { shape: Vec<usize>, data: Vec<i64> },
}

impl Array {
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::I64 { shape, .. } => shape,
        }
    }
    /// Float data (integers converted), for weights stored in any numeric dtype.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Array::F32 { data, .. } => data.clone(),
            Array::I64 { data, .. } => data.iter().map(|&v| v as f32).collect(),
        }
    }
}

/// Read every tensor and the `__metadata__` of a safetensors file. Half precision and f64
/// are converted to f32; integer types to i64.
pub fn read(path: &Path) -> Result<(BTreeMap<String, Array>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid safetensors file: {e}", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let d = view.data();
        let arr = match view.dtype() {
            Dtype::F32 => Array::F32 { shape, data: d.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect() },
            Dtype::F64 => Array::F32 { shape, data: d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect() },
            Dtype::F16 => Array::F32 { shape, data: d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect() },
            Dtype::BF16 => Array::F32 { shape, data: d.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect() },
            Dtype::I64 => Array::I64 { shape, data: d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect() },
            Dtype::I32 => Array::I64 { shape, data: d.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64).collect() },
            Dtype::U8 => Array::I64 { shape, data: d.iter().map(|&v| v as i64).collect() },
            Dtype::BOOL => Array::I64 { shape, data: d.iter().map(|&v| v as i64).collect() },
            other => bail!("{}: tensor '{name}' has unsupported dtype {other:?}", path.display()),
        };
        out.insert(name, arr);
    }
    let metadata = meta.metadata().clone().unwrap_or_default();
    Ok((out, metadata))
}

/// Write tensors and metadata atomically (temp file + rename).
pub fn write(path: &Path, tensors: &[(String, Array)], metadata: &HashMap<String, String>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Dtype, Vec<usize>)> = tensors
        .iter()
        .map(|(name, a)| match a {
            Array::F32 { shape, data } => (name.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect(), Dtype::F32, shape.clone()),
            Array::I64 { shape, data } => (name.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect(), Dtype::I64, shape.clone()),
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, dt, s)| Ok((n.clone(), TensorView::new(*dt, s.clone(), b)?)))
        .collect::<std::result::Result<_, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow::anyhow!("building {}: {e}", path.display()))?;
    let meta = if metadata.is_empty() { None } else { Some(metadata.clone()) };
    let data = safetensors::serialize(views, &meta).map_err(|e| anyhow::anyhow!("serializing {}: {e}", path.display()))?;
    crate::util::write_atomic(path, &data)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // Subnormal: renormalize.
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trip_and_f16() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let t = vec![
            ("a".to_string(), Array::F32 { shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5] }),
            ("b".to_string(), Array::I64 { shape: vec![2], data: vec![-1, 7] }),
        ];
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        write(&p, &t, &meta).unwrap();
        let (back, m) = read(&p).unwrap();
        assert_eq!(back["a"], t[0].1);
        assert_eq!(back["b"], t[1].1);
        assert_eq!(m["k"], "v");
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert!((f16_to_f32(0x0001) - 5.96e-8).abs() < 1e-9);
    }
}
