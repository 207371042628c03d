//! NumPy's `.npy` and `.npz` files read as code files: what `np.save("fc7.npy", feats)` and
//! `np.savez("codes.npz", fc7=feats, ids=names, label=labels)` write, so codes computed with
//! NumPy or PyTorch (`.numpy()`) decode without a conversion step.
//!
//! Numbers of any byte order and width become f32 (floats) or i64 (integers, booleans); a
//! string array (`U`/`S`) named `ids` names the rows. Fortran-order arrays (`np.save(F, x.T)`)
//! are reordered. Object arrays (pickles) are refused: they need Python to read.
use crate::tensorfile::{f16_to_f32, read_elements, Array, FileRows};
use anyhow::{anyhow, bail, Context, Result};
use safetensors::Dtype;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// One array of a `.npy` file.
#[derive(Clone, Debug, PartialEq)]
pub enum NpyArray {
    Numbers(Array),
    Strings { shape: Vec<usize>, data: Vec<String> },
}

/// Whether `path` starts as a `.npy` file does.
pub fn is_npy(path: &Path) -> Result<bool> {
    let mut head = [0u8; 6];
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(f.read(&mut head)? == 6 && head == MAGIC)
}

/// Whether `path` is a zip archive of `.npy` files (`np.savez`, `np.savez_compressed`).
pub fn is_npz(path: &Path) -> Result<bool> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let Ok(zip) = zip::ZipArchive::new(BufReader::new(f)) else { return Ok(false) };
    Ok(!zip.is_empty() && zip.file_names().all(|n| n.ends_with(".npy")))
}

/// NumPy's name for an array saved without one (`np.savez(F, x)`); a `.npy` file's array is
/// named so too. Such an array stands for whichever tap is asked for (see `CodeFile::read_tap`).
pub const UNNAMED: &str = "arr_0";

/// The member of a `.npz` written here that holds the metadata a safetensors code file keeps
/// in its header (encoder, weights, preprocessing...), as JSON in a 0-d string array
/// (`json.loads(str(np.load(F)["__metadata__"]))`), so a `.npz` from `extract` is a code file
/// in full.
pub const METADATA: &str = "__metadata__";

/// The header of a `.npy` stream (format 1.0): magic, version, the dict padded so that the
/// data starts 64-byte aligned, as `np.save` writes it.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!("({})", shape.iter().map(usize::to_string).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {dims}, }}");
    let unpadded = 10 + dict.len() + 1;
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([1, 0]);
    out.extend((dict.len() as u16).to_le_bytes());
    out.extend(dict.as_bytes());
    out
}

/// A whole `.npy` stream of strings (`<U`, UTF-32, each padded to the longest), shape `shape`.
pub fn strings(values: &[String], shape: &[usize]) -> Vec<u8> {
    let width = values.iter().map(|v| v.chars().count()).max().unwrap_or(0).max(1);
    let mut out = header(&format!("<U{width}"), shape);
    for v in values {
        let n = v.chars().count();
        out.extend(v.chars().chain(std::iter::repeat_n('\0', width - n)).flat_map(|c| (c as u32).to_le_bytes()));
    }
    out
}

/// Every array `keep` accepts (by name: [`UNNAMED`] for a `.npy` file, the member's name
/// without `.npy` in a `.npz`) as tensors; a string array named `ids` goes into the metadata as
/// JSON, as a safetensors code file keeps it.
pub fn read(path: &Path, mut keep: impl FnMut(&str) -> bool) -> Result<(BTreeMap<String, Array>, HashMap<String, String>)> {
    let mut arrays = Vec::new();
    if is_npy(path)? {
        let name = UNNAMED.to_string();
        if keep(&name) {
            let mut f = BufReader::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
            arrays.push((name, parse(&mut f).with_context(|| format!("reading {}", path.display()))?));
        }
    } else {
        let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut zip = zip::ZipArchive::new(BufReader::new(f)).map_err(|e| anyhow!("{} is not a .npz file: {e}", path.display()))?;
        for i in 0..zip.len() {
            let mut member = zip.by_index(i).with_context(|| format!("reading {}", path.display()))?;
            let name = member.name().trim_end_matches(".npy").to_string();
            if name == "ids" || name == METADATA || keep(&name) {
                let arr = parse(&mut member).with_context(|| format!("reading '{name}' of {}", path.display()))?;
                arrays.push((name, arr));
            }
        }
    }
    let (mut tensors, mut meta) = (BTreeMap::new(), HashMap::new());
    for (name, arr) in arrays {
        match arr {
            NpyArray::Numbers(a) => {
                tensors.insert(name, a);
            }
            NpyArray::Strings { data, .. } if name == "ids" => {
                meta.insert("ids".to_string(), serde_json::to_string(&data)?);
            }
            NpyArray::Strings { data, .. } if name == METADATA => {
                let json = data.first().map(String::as_str).unwrap_or("{}");
                let fields: HashMap<String, String> = serde_json::from_str(json).with_context(|| format!("{}: '{METADATA}' is not our metadata", path.display()))?;
                meta.extend(fields.into_iter().filter(|(k, _)| k != "ids"));
            }
            NpyArray::Strings { .. } => bail!("{}: array '{name}' holds strings; only 'ids' may", path.display()),
        }
    }
    Ok((tensors, meta))
}

/// The header of a `.npy` stream: dtype, layout, shape, and its length in bytes (the data
/// follows it).
struct Header {
    descr: String,
    fortran: bool,
    shape: Vec<usize>,
    len: u64,
}

fn read_header(f: &mut impl Read) -> Result<Header> {
    let mut magic = [0u8; 8];
    f.read_exact(&mut magic).context("shorter than a .npy header")?;
    if &magic[..6] != MAGIC {
        bail!("not a .npy array (no \\x93NUMPY at the start)");
    }
    let (header_len, prefix) = match magic[6] {
        1 => {
            let mut n = [0u8; 2];
            f.read_exact(&mut n)?;
            (u16::from_le_bytes(n) as usize, 10)
        }
        2 | 3 => {
            let mut n = [0u8; 4];
            f.read_exact(&mut n)?;
            (u32::from_le_bytes(n) as usize, 12)
        }
        v => bail!(".npy format version {v} is not known (1, 2 and 3 are)"),
    };
    let mut header = vec![0u8; header_len];
    f.read_exact(&mut header).context("the .npy header is cut short")?;
    let header = String::from_utf8_lossy(&header);
    let descr = dict_value(&header, "descr").with_context(|| format!("no 'descr' in the .npy header {header}"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = dict_value(&header, "fortran_order").with_context(|| format!("no 'fortran_order' in the .npy header {header}"))? == "True";
    let shape_text = dict_value(&header, "shape").with_context(|| format!("no 'shape' in the .npy header {header}"))?;
    let shape = shape_text
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| anyhow!("shape {shape_text} in the .npy header is not a tuple of sizes")))
        .collect::<Result<Vec<usize>>>()?;
    Ok(Header { descr, fortran, shape, len: (prefix + header_len) as u64 })
}

/// The float array `name` of a `.npy` file (its one array, [`UNNAMED`]) or `.npz` file, left
/// in the file and read by rows, `np.load(F, mmap_mode="r")`'s way: when it lies there as
/// NumPy writes it, little-endian floats in C order (in an uncompressed member: `np.savez`;
/// `np.savez_compressed`'s are read whole). `None` when it does not, or there is no such array.
pub fn file_rows(path: &Path, name: &str) -> Result<Option<FileRows>> {
    let open = || File::open(path).with_context(|| format!("opening {}", path.display()));
    let start = if is_npy(path)? {
        if name != UNNAMED {
            return Ok(None);
        }
        0
    } else {
        let mut zip = zip::ZipArchive::new(BufReader::new(open()?)).map_err(|e| anyhow!("{} is not a .npz file: {e}", path.display()))?;
        let Ok(member) = zip.by_name(&format!("{name}.npy")) else { return Ok(None) };
        match (member.compression(), member.encrypted(), member.data_start()) {
            (zip::CompressionMethod::Stored, false, Some(start)) => start,
            _ => return Ok(None),
        }
    };
    let mut f = open()?;
    f.seek(SeekFrom::Start(start)).with_context(|| format!("reading {}", path.display()))?;
    let h = read_header(&mut BufReader::new(&mut f)).with_context(|| format!("reading '{name}' of {}", path.display()))?;
    let dtype = match split_descr(&h.descr)? {
        ('<' | '|', 'f', 4) => Dtype::F32,
        ('<' | '|', 'f', 8) => Dtype::F64,
        ('<' | '|', 'f', 2) => Dtype::F16,
        _ => return Ok(None),
    };
    if h.fortran || h.shape.is_empty() {
        return Ok(None);
    }
    let n = h.shape.iter().try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64)).with_context(|| format!("shape {:?} is too large", h.shape))?;
    let size = f.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    if start + h.len + n > size {
        bail!("{}: '{name}' of shape {:?} ({}) needs {n} bytes, but the file ends before them", path.display(), h.shape, h.descr);
    }
    Ok(Some(FileRows::at(path, f, start + h.len, dtype, h.shape)))
}

/// Every array's name, kind (`float`, `int`, `str`, or NumPy's dtype) and shape, from the
/// headers alone (`preimage info` on a file of any size; a compressed member is inflated only
/// as far as its header). `ids` and our metadata member are left out, as [`read`] leaves them.
pub fn shapes(path: &Path) -> Result<Vec<(String, String, Vec<usize>)>> {
    let kind = |descr: &str| -> String {
        match split_descr(descr).map(|(_, k, _)| k) {
            Ok('f') => "float".into(),
            Ok('i' | 'u' | 'b') => "int".into(),
            Ok('U' | 'S' | 'a') => "str".into(),
            _ => descr.to_string(),
        }
    };
    let open = || File::open(path).with_context(|| format!("opening {}", path.display()));
    let mut out = Vec::new();
    if is_npy(path)? {
        let h = read_header(&mut BufReader::new(open()?)).with_context(|| format!("reading {}", path.display()))?;
        out.push((UNNAMED.to_string(), kind(&h.descr), h.shape));
        return Ok(out);
    }
    let mut zip = zip::ZipArchive::new(BufReader::new(open()?)).map_err(|e| anyhow!("{} is not a .npz file: {e}", path.display()))?;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).with_context(|| format!("reading {}", path.display()))?;
        let name = member.name().trim_end_matches(".npy").to_string();
        if name == "ids" || name == METADATA {
            continue;
        }
        let h = read_header(&mut member).with_context(|| format!("reading '{name}' of {}", path.display()))?;
        out.push((name, kind(&h.descr), h.shape));
    }
    Ok(out)
}

/// One `.npy` stream: the header, then the data, read straight into the array.
pub fn parse(f: &mut impl Read) -> Result<NpyArray> {
    let Header { descr, fortran, shape, .. } = read_header(f)?;
    let descr = descr.as_str();
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).with_context(|| format!("shape {shape:?} is too large"))?;

    let (order, kind, width) = split_descr(descr)?;
    let big = order == '>';
    macro_rules! num {
        ($w:literal, $conv:expr) => {
            read_elements(f, n, |c: [u8; $w]| $conv(if big { reversed(c) } else { c })).context("the data is cut short")?
        };
    }
    let arr = match (kind, width) {
        ('f', 4) => NpyArray::Numbers(Array::F32 { shape: shape.clone(), data: num!(4, f32::from_le_bytes) }),
        ('f', 8) => NpyArray::Numbers(Array::F32 { shape: shape.clone(), data: num!(8, |c| f64::from_le_bytes(c) as f32) }),
        ('f', 2) => NpyArray::Numbers(Array::F32 { shape: shape.clone(), data: num!(2, |c| f16_to_f32(u16::from_le_bytes(c))) }),
        ('i', 8) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(8, i64::from_le_bytes) }),
        ('i', 4) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(4, |c| i32::from_le_bytes(c) as i64) }),
        ('i', 2) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(2, |c| i16::from_le_bytes(c) as i64) }),
        ('i', 1) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(1, |c: [u8; 1]| c[0] as i8 as i64) }),
        ('u', 8) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(8, |c| u64::from_le_bytes(c) as i64) }),
        ('u', 4) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(4, |c| u32::from_le_bytes(c) as i64) }),
        ('u', 2) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(2, |c| u16::from_le_bytes(c) as i64) }),
        ('u' | 'b', 1) => NpyArray::Numbers(Array::I64 { shape: shape.clone(), data: num!(1, |c: [u8; 1]| c[0] as i64) }),
        ('U', chars) => {
            // UTF-32 code units, NUL-padded to `chars` per element.
            let mut raw = vec![0u8; n * chars * 4];
            f.read_exact(&mut raw).context("the data is cut short")?;
            let data = raw
                .chunks_exact(chars * 4)
                .map(|e| {
                    e.chunks_exact(4)
                        .map(|c| u32::from_le_bytes(if big { reversed(c.try_into().unwrap()) } else { c.try_into().unwrap() }))
                        .take_while(|&u| u != 0)
                        .map(|u| char::from_u32(u).context("a string that is not Unicode"))
                        .collect::<Result<String>>()
                })
                .collect::<Result<Vec<_>>>()?;
            NpyArray::Strings { shape: shape.clone(), data }
        }
        ('S' | 'a', bytes) => {
            let mut raw = vec![0u8; n * bytes];
            f.read_exact(&mut raw).context("the data is cut short")?;
            let data = raw.chunks_exact(bytes.max(1)).map(|e| String::from_utf8_lossy(e.split(|&b| b == 0).next().unwrap_or(&[])).into_owned()).collect();
            NpyArray::Strings { shape: shape.clone(), data }
        }
        ('O', _) => bail!("an object array (Python objects, pickled) cannot be read without Python; save numbers (and ids as np.array(names, dtype=str))"),
        _ => bail!("dtype '{descr}' is not supported (floats, integers, booleans and strings are)"),
    };
    Ok(if fortran { to_c_order(arr, &shape) } else { arr })
}

/// The value of `key` in the header's Python dict literal, as text.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let at = header.find(&format!("'{key}'")).or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':')?.trim_start();
    let end = if rest.starts_with('(') { rest.find(')')? + 1 } else if rest.starts_with('\'') || rest.starts_with('"') { rest[1..].find(&rest[..1])? + 2 } else { rest.find([',', '}'])? };
    Some(rest[..end].trim())
}

/// `<f4` → ('<', 'f', 4); `|b1`, `<U12`, `|S7`.
fn split_descr(descr: &str) -> Result<(char, char, usize)> {
    let mut chars = descr.chars();
    let (order, kind) = match chars.next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, chars.next()),
        other => ('=', other),
    };
    let kind = kind.with_context(|| format!("dtype '{descr}' is not understood"))?;
    // Object arrays ('|O') carry no width.
    let width = match chars.as_str() {
        "" => 0,
        w => w.parse::<usize>().map_err(|_| anyhow!("dtype '{descr}' is not supported (floats, integers, booleans and strings are)"))?,
    };
    // '=' is the writer's native order; NumPy writes '<' or '>' for multi-byte types itself.
    Ok((if order == '=' { '<' } else { order }, kind, width))
}

fn reversed<const W: usize>(mut c: [u8; W]) -> [u8; W] {
    c.reverse();
    c
}

/// Fortran order (first index fastest) to C order (last index fastest).
fn to_c_order(arr: NpyArray, shape: &[usize]) -> NpyArray {
    fn reorder<T: Clone>(data: Vec<T>, shape: &[usize]) -> Vec<T> {
        let n = data.len();
        // Fortran strides: 1, d0, d0·d1, …
        let mut strides = vec![1usize; shape.len()];
        for k in 1..shape.len() {
            strides[k] = strides[k - 1] * shape[k - 1];
        }
        let mut out = Vec::with_capacity(n);
        let mut idx = vec![0usize; shape.len()];
        for _ in 0..n {
            out.push(data[idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>()].clone());
            for k in (0..shape.len()).rev() {
                idx[k] += 1;
                if idx[k] < shape[k] {
                    break;
                }
                idx[k] = 0;
            }
        }
        out
    }
    match arr {
        NpyArray::Numbers(Array::F32 { shape: s, data }) => NpyArray::Numbers(Array::F32 { data: reorder(data, shape), shape: s }),
        NpyArray::Numbers(Array::I64 { shape: s, data }) => NpyArray::Numbers(Array::I64 { data: reorder(data, shape), shape: s }),
        NpyArray::Strings { shape: s, data } => NpyArray::Strings { data: reorder(data, shape), shape: s },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What we write reads back, with the data 64-byte aligned as `np.save` aligns it.
    #[test]
    fn written_headers_and_strings_read_back() {
        for shape in [vec![], vec![3], vec![2, 64, 4, 4]] {
            let h = header("<f4", &shape);
            assert_eq!(h.len() % 64, 0, "{shape:?}");
            let n: usize = shape.iter().product();
            let mut bytes = h;
            bytes.extend((0..n).flat_map(|i| (i as f32 * 0.5).to_le_bytes()));
            match parse(&mut bytes.as_slice()).unwrap() {
                NpyArray::Numbers(Array::F32 { shape: s, data }) => {
                    assert_eq!(s, shape);
                    assert_eq!(data, (0..n).map(|i| i as f32 * 0.5).collect::<Vec<_>>());
                }
                _ => panic!("f32 expected"),
            }
        }
        let ids = vec!["chair/0.png".to_string(), "ü".to_string(), String::new()];
        match parse(&mut strings(&ids, &[3]).as_slice()).unwrap() {
            NpyArray::Strings { shape, data } => assert_eq!((shape, data), (vec![3], ids)),
            _ => panic!("strings expected"),
        }
        match parse(&mut strings(&["{\"a\": 1}".to_string()], &[]).as_slice()).unwrap() {
            NpyArray::Strings { shape, data } => assert_eq!((shape, data), (vec![], vec!["{\"a\": 1}".to_string()])),
            _ => panic!("strings expected"),
        }
    }

    fn npy(version: u8, header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend([version, 0]);
        if version == 1 {
            v.extend((header.len() as u16).to_le_bytes());
        } else {
            v.extend((header.len() as u32).to_le_bytes());
        }
        v.extend(header.as_bytes());
        v.extend(data);
        v
    }

    #[test]
    fn headers_dtypes_and_orders() {
        let ints: Vec<u8> = [1i32, -2, 3].iter().flat_map(|v| v.to_le_bytes()).collect();
        let got = parse(&mut &npy(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3,), }", &ints)[..]).unwrap();
        assert_eq!(got, NpyArray::Numbers(Array::I64 { shape: vec![3], data: vec![1, -2, 3] }));
        // Version 2 (4-byte header length), a scalar, big-endian f4.
        let got = parse(&mut &npy(2, "{'descr': '>f4', 'fortran_order': False, 'shape': (), }", &1.5f32.to_be_bytes())[..]).unwrap();
        assert_eq!(got, NpyArray::Numbers(Array::F32 { shape: vec![], data: vec![1.5] }));
        // Booleans; strings (UTF-32, NUL-padded; non-ASCII kept).
        let got = parse(&mut &npy(1, "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }", &[1, 0])[..]).unwrap();
        assert_eq!(got, NpyArray::Numbers(Array::I64 { shape: vec![2], data: vec![1, 0] }));
        let text: Vec<u8> = ["é/1", "ab"].iter().flat_map(|s| {
            let mut u: Vec<u32> = s.chars().map(|c| c as u32).collect();
            u.resize(3, 0);
            u.into_iter().flat_map(u32::to_le_bytes).collect::<Vec<u8>>()
        }).collect();
        let got = parse(&mut &npy(1, "{'descr': '<U3', 'fortran_order': False, 'shape': (2,), }", &text)[..]).unwrap();
        assert_eq!(got, NpyArray::Strings { shape: vec![2], data: vec!["é/1".into(), "ab".into()] });
        // Fortran order: [[0, 1, 2], [3, 4, 5]] is stored column by column.
        let f: Vec<u8> = [0u8, 3, 1, 4, 2, 5].to_vec();
        let got = parse(&mut &npy(1, "{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }", &f)[..]).unwrap();
        assert_eq!(got, NpyArray::Numbers(Array::I64 { shape: vec![2, 3], data: vec![0, 1, 2, 3, 4, 5] }));
        // Errors say what is wrong.
        let err = format!("{:#}", parse(&mut &npy(1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", &[0; 8])[..]).unwrap_err());
        assert!(err.contains("'<c8' is not supported"), "{err}");
        let err = format!("{:#}", parse(&mut &npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", &[0; 8])[..]).unwrap_err());
        assert!(err.contains("cut short"), "{err}");
        let err = format!("{:#}", parse(&mut &b"PK\x03\x04 not npy"[..]).unwrap_err());
        assert!(err.contains("not a .npy array"), "{err}");
    }
}
