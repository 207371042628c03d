//! Reading and writing safetensors files (weights and code files) as plain f32/i64 arrays.
use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, Metadata as StHeader, TensorInfo};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A file's metadata (safetensors' `__metadata__`: string keys and values).
pub type Metadata = HashMap<String, String>;
/// A safetensors header's entries: name, dtype, shape, in file order.
pub type Header = Vec<(String, Dtype, Vec<usize>)>;

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
    /// [`Array::to_f32`] without a copy when the data already is f32.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            Array::F32 { data, .. } => data,
            other => other.to_f32(),
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
/// are converted to f32; integer types to i64. Tensors are read from the file a megabyte at a
/// time into their arrays, so memory peaks at the arrays themselves (not twice: a code file can
/// be most of memory).
pub fn read(path: &Path) -> Result<(BTreeMap<String, Array>, HashMap<String, String>)> {
    read_where(path, |_| true)
}

/// The names, dtypes and shapes of a safetensors file's tensors (in file order) and its
/// metadata, from the header alone: `preimage info` on a file of any size.
pub fn read_header(path: &Path) -> Result<(Header, Metadata)> {
    let o = open_checked(path, true)?;
    Ok((o.tensors.into_iter().map(|(n, i)| (n, i.dtype, i.shape)).collect(), o.metadata))
}

/// Metadata key naming the `U8` tensor that holds the row ids (the JSON text the `ids` key
/// would hold) when they are too many for the header: the format caps it at 100 MB, which
/// ~2.5 million image paths reach (ImageNet-21k, OpenImages). Readers here put them back
/// under `ids`; in Python, `json.loads(bytes(f.get_tensor(meta["ids_tensor"])))`.
pub const IDS_TENSOR: &str = "ids_tensor";
/// Ids whose JSON is longer than this go into a tensor ([`IDS_TENSOR`]).
const IDS_IN_HEADER_MAX: usize = 64 << 20;

/// A safetensors file opened and checked (the tensors' bytes tile the data section exactly),
/// positioned at the start of its data section.
struct Opened {
    file: BufReader<File>,
    /// The tensors in file order, without the ids tensor, whose text is in `metadata["ids"]`
    /// when asked for.
    tensors: Vec<(String, TensorInfo)>,
    metadata: Metadata,
}

/// `with_ids`: read the ids tensor's text into the metadata (a reader of rows needs none).
fn open_checked(path: &Path, with_ids: bool) -> Result<Opened> {
    let invalid = |why: String| anyhow::anyhow!("{} is not a valid safetensors file: {why}", path.display());
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let file_len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
    let mut f = BufReader::new(file);
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8).map_err(|_| invalid(format!("{file_len} bytes, shorter than the header's length")))?;
    let n = u64::from_le_bytes(n8);
    // The format's own limit on the header (100 MB).
    if n > 100_000_000 || n > file_len - 8 {
        return Err(invalid(format!("header length {n} does not fit a file of {file_len} bytes")));
    }
    let mut head = vec![0; n as usize];
    f.read_exact(&mut head).with_context(|| format!("reading {}", path.display()))?;
    let meta: StHeader = serde_json::from_slice(&head).map_err(|e| invalid(format!("header: {e}")))?;
    // Tensors in file order; their bytes must tile the data section exactly.
    let mut tensors: Vec<(String, TensorInfo)> = meta.tensors().into_iter().map(|(k, i)| (k, i.clone())).collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let mut end = 0;
    for (name, info) in &tensors {
        let (start, stop) = info.data_offsets;
        let numel = info.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if start != end || numel.and_then(|n| n.checked_mul(info.dtype.size())) != Some(stop.wrapping_sub(start)) {
            return Err(invalid(format!("tensor '{name}': offsets {start}..{stop} do not follow the previous tensor or hold its shape {:?}", info.shape)));
        }
        end = stop;
    }
    if 8 + n + end as u64 != file_len {
        return Err(invalid(format!("the tensors end at byte {}, the file at {file_len}", 8 + n + end as u64)));
    }
    let mut metadata = meta.metadata().clone().unwrap_or_default();
    if let Some(name) = metadata.remove(IDS_TENSOR) {
        let at = tensors.iter().position(|(k, i)| *k == name && i.dtype == Dtype::U8 && i.shape.len() == 1);
        let at = at.ok_or_else(|| invalid(format!("metadata '{IDS_TENSOR}' names '{name}', which is not a U8 tensor of the file")))?;
        let (_, info) = tensors.remove(at);
        if !with_ids {
            return Ok(Opened { file: f, tensors, metadata });
        }
        let mut text = vec![0u8; info.shape[0]];
        f.seek_relative(info.data_offsets.0 as i64)
            .and_then(|_| f.read_exact(&mut text))
            .and_then(|_| f.seek(std::io::SeekFrom::Start(8 + n)))
            .with_context(|| format!("reading the ids of {}", path.display()))?;
        let text = String::from_utf8(text).map_err(|_| invalid(format!("tensor '{name}' (the ids) is not UTF-8 text")))?;
        metadata.insert("ids".into(), text);
    }
    Ok(Opened { file: f, tensors, metadata })
}

/// [`read`] of only the tensors whose names `keep` accepts (it sees every name in the file);
/// the others are skipped on disk, never loaded.
pub fn read_where(path: &Path, mut keep: impl FnMut(&str) -> bool) -> Result<(BTreeMap<String, Array>, HashMap<String, String>)> {
    let Opened { file: mut f, tensors, metadata } = open_checked(path, true)?;
    let mut out = BTreeMap::new();
    let mut at = 0; // where the reader is in the data section
    for (name, info) in tensors {
        if !keep(&name) {
            continue;
        }
        let skip = info.data_offsets.0 - at;
        f.seek_relative(skip as i64).with_context(|| format!("reading {}", path.display()))?;
        at = info.data_offsets.1;
        let (shape, n) = (info.shape.clone(), info.shape.iter().product());
        let f32s = |data| Array::F32 { shape: shape.clone(), data };
        let i64s = |data| Array::I64 { shape: shape.clone(), data };
        let arr = match info.dtype {
            Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16 => read_floats(&mut f, n, info.dtype).map(f32s),
            Dtype::I64 => read_elements(&mut f, n, i64::from_le_bytes).map(i64s),
            Dtype::I32 => read_elements(&mut f, n, |c: [u8; 4]| i32::from_le_bytes(c) as i64).map(i64s),
            Dtype::U8 | Dtype::BOOL => read_elements(&mut f, n, |c: [u8; 1]| c[0] as i64).map(i64s),
            other => bail!("{}: tensor '{name}' has unsupported dtype {other:?}", path.display()),
        }
        .with_context(|| format!("reading tensor '{name}' of {}", path.display()))?;
        out.insert(name, arr);
    }
    Ok((out, metadata))
}

/// A float tensor left in its safetensors file, whose rows are read when asked: codes larger
/// than memory (a conv tap of ImageNet) can still train a decoder, the OS's page cache holding
/// what fits instead of our heap.
pub struct FileRows {
    path: PathBuf,
    file: std::sync::Mutex<File>,
    /// Byte offset of row 0.
    start: u64,
    dtype: Dtype,
    pub shape: Vec<usize>,
}

impl FileRows {
    /// Tensor `name` of the safetensors file `path`, checked as [`read`] checks it; `None` when
    /// the file has no such tensor or it is not of floats.
    pub fn open(path: &Path, name: &str) -> Result<Option<Self>> {
        let Opened { file: mut f, tensors, .. } = open_checked(path, false)?;
        let Some((_, info)) = tensors.into_iter().find(|(n, _)| n == name) else { return Ok(None) };
        if !matches!(info.dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) || info.shape.is_empty() {
            return Ok(None);
        }
        let data = f.stream_position().with_context(|| format!("reading {}", path.display()))?;
        Ok(Some(Self::at(path, f.into_inner(), data + info.data_offsets.0 as u64, info.dtype, info.shape.clone())))
    }

    /// Rows of `shape` stored from byte `start` of `file` (opened at `path`) as little-endian
    /// `dtype` floats in C order: a safetensors tensor, a `.npy` array, an uncompressed `.npz`
    /// member.
    pub(crate) fn at(path: &Path, file: File, start: u64, dtype: Dtype, shape: Vec<usize>) -> Self {
        debug_assert!(matches!(dtype, Dtype::F32 | Dtype::F64 | Dtype::F16 | Dtype::BF16) && !shape.is_empty());
        FileRows { path: path.to_path_buf(), file: std::sync::Mutex::new(file), start, dtype, shape }
    }

    /// Values in a row.
    pub fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Rows `idx` (each below `shape[0]`), in that order, as f32, appended to `out`.
    pub fn read_rows(&self, idx: &[usize], out: &mut Vec<f32>) -> Result<()> {
        let width = self.dtype.size();
        let row_bytes = self.row_len() * width;
        let mut buf = vec![0u8; row_bytes];
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        out.reserve(idx.len() * self.row_len());
        for &i in idx {
            assert!(i < self.shape[0], "row {i} of {}", self.shape[0]);
            file.seek(std::io::SeekFrom::Start(self.start + (i * row_bytes) as u64)).and_then(|_| file.read_exact(&mut buf)).with_context(|| format!("reading row {i} of {}", self.path.display()))?;
            push_floats(self.dtype, &buf, out);
        }
        Ok(())
    }

    /// Single values `(row, position in the row)`, in that order, as f32. They are read in the
    /// file's order (forward, as the disk's read-ahead expects), values less than a page apart
    /// in one read of up to 1 MiB, then put back in `at`'s order: `random`'s draws of a value
    /// per unit from every row are a few thousand reads, not one per value.
    pub fn read_values(&self, at: &[(usize, usize)]) -> Result<Vec<f32>> {
        const GAP: u64 = 4096;
        const SPAN: u64 = 1 << 20;
        let (width, d) = (self.dtype.size(), self.row_len());
        let offset = |k: usize| {
            let (r, i) = at[k];
            assert!(r < self.shape[0] && i < d, "value {i} of row {r} of {:?}", self.shape);
            ((r * d + i) * width) as u64
        };
        let mut order: Vec<usize> = (0..at.len()).collect();
        order.sort_unstable_by_key(|&k| at[k]);
        let (mut out, mut one, mut buf) = (vec![0.0; at.len()], Vec::with_capacity(1), Vec::new());
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            // One read: the values from `first` on that lie close together.
            let from = offset(first);
            let mut n = 1;
            while n < rest.len() && offset(rest[n]) - offset(rest[n - 1]) <= GAP && offset(rest[n]) + width as u64 - from <= SPAN {
                n += 1;
            }
            let (run, after) = rest.split_at(n);
            buf.resize((offset(run[n - 1]) - from) as usize + width, 0);
            file.seek(std::io::SeekFrom::Start(self.start + from))
                .and_then(|_| file.read_exact(&mut buf))
                .with_context(|| format!("reading row {} of {}", at[first].0, self.path.display()))?;
            for &k in run {
                let o = (offset(k) - from) as usize;
                one.clear();
                push_floats(self.dtype, &buf[o..o + width], &mut one);
                out[k] = one[0];
            }
            rest = after;
        }
        Ok(out)
    }
}

/// `bytes`, little-endian floats of `dtype` (F32, F64, F16, BF16), as f32 appended to `out`.
fn push_floats(dtype: Dtype, bytes: &[u8], out: &mut Vec<f32>) {
    match dtype {
        Dtype::F32 => out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))),
        Dtype::F64 => out.extend(bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)),
        Dtype::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]])))),
        Dtype::BF16 => out.extend(bytes.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))),
        other => unreachable!("{other:?} is not a float type"),
    }
}

/// `n` floats of `dtype` from `f` as f32.
fn read_floats(f: &mut impl Read, n: usize, dtype: Dtype) -> std::io::Result<Vec<f32>> {
    let mut out = Vec::with_capacity(n);
    read_in_chunks(f, n, dtype.size(), |c| push_floats(dtype, c, &mut out))?;
    Ok(out)
}

/// `n` little-endian elements of `W` bytes from `f`, each converted by `one`.
pub(crate) fn read_elements<T, const W: usize>(f: &mut impl Read, n: usize, one: impl Fn([u8; W]) -> T) -> std::io::Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    read_in_chunks(f, n, W, |c| out.extend(c.chunks_exact(W).map(|c| one(c.try_into().unwrap()))))?;
    Ok(out)
}

/// The next `n` elements of `width` bytes of `f`, handed to `each` a megabyte (of whole
/// elements) at a time: no second copy of a tensor.
fn read_in_chunks(f: &mut impl Read, n: usize, width: usize, mut each: impl FnMut(&[u8])) -> std::io::Result<()> {
    let step = (1 << 20) / width * width;
    let mut buf = vec![0u8; step.min(n * width)];
    let mut left = n * width;
    while left > 0 {
        let chunk = &mut buf[..left.min(step)];
        f.read_exact(chunk)?;
        each(chunk);
        left -= chunk.len();
    }
    Ok(())
}

/// Write tensors and metadata atomically (temp file + rename), streaming each tensor's bytes
/// from memory: no serialized copy of the file is built (a code file can be most of memory).
pub fn write<A: Borrow<Array>>(path: &Path, tensors: &[(String, A)], metadata: &HashMap<String, String>) -> Result<()> {
    let items = tensors.iter().map(|(name, a)| Ok((Entry::of(name, a.borrow())?, Bytes::Memory(a.borrow())))).collect::<Result<_>>();
    write_items(path, items.with_context(|| format!("building {}", path.display()))?, metadata)
}

/// Where a tensor's bytes come from when the file is written.
enum Bytes<'a> {
    Memory(&'a Array),
    /// A [`RowWriter`] part file, already in its entry's dtype, little-endian.
    Part(&'a Path),
    /// Bytes as they are (the ids' JSON, [`IDS_TENSOR`]).
    Raw(Vec<u8>),
}

impl Bytes<'_> {
    /// The tensor's bytes, little-endian, as they go into every format.
    fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        match self {
            Bytes::Memory(Array::F32 { data, .. }) => write_le(w, data, |v| v.to_le_bytes()),
            Bytes::Memory(Array::I64 { data, .. }) => write_le(w, data, |v| v.to_le_bytes()),
            Bytes::Part(p) => std::io::copy(&mut File::open(p)?, w).map(drop),
            Bytes::Raw(b) => w.write_all(b),
        }
    }
}

/// Write the header and the tensors' bytes (temp file + rename). Wider types come first, as
/// the format's own writer orders them, so that every tensor is aligned to its element size
/// (readers that map the file in place need it).
fn is_npz(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npz"))
}

/// Whether a file written here is in `torch.save`'s format: named `.pt` or `.pth`.
pub fn is_torch(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("pt") || e.eq_ignore_ascii_case("pth"))
}

fn write_items(path: &Path, items: Vec<(Entry, Bytes)>, metadata: &HashMap<String, String>) -> Result<()> {
    write_items_with(path, items, metadata, IDS_IN_HEADER_MAX)
}

/// [`write_items`], ids longer than `ids_max` bytes of JSON going into a tensor.
fn write_items_with(path: &Path, mut items: Vec<(Entry, Bytes)>, metadata: &HashMap<String, String>, ids_max: usize) -> Result<()> {
    // Checked here for every format: a dict (`.pt`) would keep one silently.
    let mut names = std::collections::HashSet::new();
    if let Some((e, _)) = items.iter().find(|(e, _)| !names.insert(e.name.as_str())) {
        bail!("building {}: tensor '{}' appears twice", path.display(), e.name);
    }
    if is_npz(path) {
        return write_npz(path, &items, metadata);
    }
    if is_torch(path) {
        return write_torch(path, &items, metadata);
    }
    let mut metadata = std::borrow::Cow::Borrowed(metadata);
    if let Some(ids) = metadata.get("ids").filter(|ids| ids.len() > ids_max).cloned() {
        let m = metadata.to_mut();
        m.remove("ids");
        m.insert(IDS_TENSOR.into(), "ids".into());
        items.push((Entry { name: "ids".into(), dtype: Dtype::U8, shape: vec![ids.len()] }, Bytes::Raw(ids.into_bytes())));
    }
    items.sort_by_key(|(e, _)| std::cmp::Reverse(e.dtype.size()));
    let entries: Vec<&Entry> = items.iter().map(|(e, _)| e).collect();
    let head = header(&entries, &metadata).with_context(|| format!("building {}", path.display()))?;
    crate::util::write_atomic_with(path, |w| {
        w.write_all(&head)?;
        for (_, bytes) in &items {
            bytes.write_to(w)?;
        }
        Ok(())
    })
}

/// The same items as NumPy's `.npz` (stored, not compressed; zip64 past 4 GB): a `NAME.npy`
/// per tensor, the row ids as a string array `ids`, the rest of the metadata as JSON in
/// [`npy::METADATA`]. `np.load(F)["fc7"]`, `np.load(F)["ids"]` read them.
fn write_npz(path: &Path, items: &[(Entry, Bytes)], metadata: &HashMap<String, String>) -> Result<()> {
    use crate::data::npy;
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    crate::util::write_atomic_with(path, |w| {
        let mut zip = zip::ZipWriter::new(w);
        let io = |e: zip::result::ZipError| std::io::Error::other(e.to_string());
        for (e, bytes) in items {
            let descr = match e.dtype {
                Dtype::F32 => "<f4",
                Dtype::F16 => "<f2",
                Dtype::I64 => "<i8",
                other => return Err(std::io::Error::other(format!("cannot write {other:?} to .npz"))),
            };
            zip.start_file(format!("{}.npy", e.name), opts).map_err(io)?;
            zip.write_all(&npy::header(descr, &e.shape))?;
            bytes.write_to(&mut zip)?;
        }
        if let Some(ids) = metadata.get("ids") {
            let ids: Vec<String> = serde_json::from_str(ids).map_err(std::io::Error::other)?;
            zip.start_file("ids.npy", opts).map_err(io)?;
            zip.write_all(&npy::strings(&ids, &[ids.len()]))?;
        }
        let rest: BTreeMap<&String, &String> = metadata.iter().filter(|(k, _)| k.as_str() != "ids").collect();
        if !rest.is_empty() {
            zip.start_file(format!("{}.npy", npy::METADATA), opts).map_err(io)?;
            zip.write_all(&npy::strings(&[serde_json::to_string(&rest).map_err(std::io::Error::other)?], &[]))?;
        }
        zip.finish().map_err(io)?;
        Ok(())
    })
}

/// The same items as `torch.save` writes them ([`torchsave`]): `torch.load(F)["fc7"]`,
/// `torch.load(F)["ids"]`, `torch.load(F)["__metadata__"]`; each storage 64-byte aligned in the
/// archive, as PyTorch aligns them, so that `torch.load(F, mmap=True)` maps them.
fn write_torch(path: &Path, items: &[(Entry, Bytes)], metadata: &HashMap<String, String>) -> Result<()> {
    use crate::data::torchsave::{self, ARCHIVE};
    let ids: Option<Vec<String>> = match metadata.get("ids") {
        Some(ids) => Some(serde_json::from_str(ids).with_context(|| format!("building {}: metadata 'ids' is not a list of strings", path.display()))?),
        None => None,
    };
    let rest: BTreeMap<&str, &str> = metadata.iter().filter(|(k, _)| k.as_str() != "ids").map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let tensors: Vec<torchsave::Tensor> = items.iter().map(|(e, _)| torchsave::Tensor { name: &e.name, dtype: e.dtype, shape: &e.shape }).collect();
    let pickle = torchsave::pickle(&tensors, ids.as_deref(), &rest.into_iter().collect::<Vec<_>>()).map_err(|e| anyhow::anyhow!("building {}: {e}", path.display()))?;
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true).with_alignment(64);
    crate::util::write_atomic_with(path, |w| {
        let mut zip = zip::ZipWriter::new(w);
        let io = |e: zip::result::ZipError| std::io::Error::other(e.to_string());
        zip.start_file(format!("{ARCHIVE}/data.pkl"), opts).map_err(io)?;
        zip.write_all(&pickle)?;
        zip.start_file(format!("{ARCHIVE}/byteorder"), opts).map_err(io)?;
        zip.write_all(b"little")?;
        for (key, (_, bytes)) in items.iter().enumerate() {
            zip.start_file(format!("{ARCHIVE}/data/{key}"), opts).map_err(io)?;
            bytes.write_to(&mut zip)?;
        }
        zip.start_file(format!("{ARCHIVE}/version"), opts).map_err(io)?;
        zip.write_all(torchsave::VERSION.as_bytes())?;
        zip.finish().map_err(io)?;
        Ok(())
    })
}

/// Writes a safetensors file whose f32 tensors arrive a few rows at a time (code extraction),
/// without holding them: the rows of each tensor go to a part file beside `path`
/// (`<name>.<i>.part`), and [`RowWriter::finish`] writes the file from them (temp file +
/// rename), then removes the parts. Dropped unfinished, it removes the parts and writes nothing,
/// unless told to keep them ([`RowWriter::keep_parts`]) for a run that [`RowWriter::reopen`]
/// continues.
pub struct RowWriter {
    path: PathBuf,
    parts: Vec<Part>,
    keep: bool,
    /// How the appended tensors are stored (from f32).
    dtype: Dtype,
}

/// A float type that codes can be stored in (`extract --dtype`): `f32`, `f16` (half the size;
/// PyTorch's `.half()`) or `bf16`.
pub fn parse_float_dtype(s: &str) -> std::result::Result<Dtype, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" | "float" => Ok(Dtype::F32),
        "f16" | "float16" | "half" => Ok(Dtype::F16),
        "bf16" | "bfloat16" => Ok(Dtype::BF16),
        other => Err(format!("'{other}' is not a float type to store codes in: f32, f16 or bf16")),
    }
}

/// How many rows of which tensor a part file holds: the state [`RowWriter::reopen`] goes on from.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PartRows {
    pub name: String,
    pub item_shape: Vec<usize>,
    pub rows: usize,
}

struct Part {
    name: String,
    /// Shape of one row.
    item_shape: Vec<usize>,
    rows: usize,
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl RowWriter {
    pub fn new(path: &Path) -> Self {
        RowWriter { path: path.to_path_buf(), parts: Vec::new(), keep: false, dtype: Dtype::F32 }
    }

    /// A writer storing the appended tensors as `dtype` (F32, F16 or BF16), rounded to nearest.
    pub fn with_dtype(path: &Path, dtype: Dtype) -> Result<Self> {
        if !matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16) {
            bail!("{}: codes are stored as f32, f16 or bf16, not {dtype:?}", path.display());
        }
        if dtype == Dtype::BF16 && is_npz(path) {
            bail!("{}: NumPy has no bfloat16; write f16 to a .npz, or bf16 to a .safetensors", path.display());
        }
        Ok(RowWriter { path: path.to_path_buf(), parts: Vec::new(), keep: false, dtype })
    }

    /// A writer going on from the parts a stopped one left (`state`, from its
    /// [`RowWriter::flush`]): each part file is cut back to the rows `state` counts (rows written
    /// after it was taken are dropped), then appended to.
    pub fn reopen(path: &Path, dtype: Dtype, state: &[PartRows]) -> Result<Self> {
        let mut w = RowWriter::with_dtype(path, dtype)?;
        for (i, s) in state.iter().enumerate() {
            let part = w.part_path(i);
            let bytes = (s.rows * s.item_shape.iter().product::<usize>() * dtype.size()) as u64;
            let file = std::fs::OpenOptions::new().write(true).open(&part).with_context(|| format!("opening {} to go on with '{}'", part.display(), s.name))?;
            let have = file.metadata().with_context(|| format!("reading {}", part.display()))?.len();
            if have < bytes {
                bail!("{}: holds {have} bytes, fewer than the {bytes} of the {} rows of '{}' it had", part.display(), s.rows, s.name);
            }
            file.set_len(bytes).with_context(|| format!("cutting {} back to {} rows", part.display(), s.rows))?;
            let mut file = BufWriter::new(file);
            file.seek(std::io::SeekFrom::End(0)).with_context(|| format!("opening {}", part.display()))?;
            w.parts.push(Part { name: s.name.clone(), item_shape: s.item_shape.clone(), rows: s.rows, path: part, file: Some(file) });
        }
        Ok(w)
    }

    /// Whether to keep the part files when dropped unfinished (by an error), so that
    /// [`RowWriter::reopen`] can go on from them.
    pub fn keep_parts(&mut self, keep: bool) {
        self.keep = keep;
    }

    /// Write out what is buffered, to the disk itself (so that a record of these rows made
    /// next survives a machine's crash with them), and say how many rows each part holds now.
    pub fn flush(&mut self) -> Result<Vec<PartRows>> {
        self.parts
            .iter_mut()
            .map(|p| {
                let file = p.file.as_mut().expect("open until finish");
                file.flush().and_then(|_| file.get_ref().sync_data()).with_context(|| format!("writing {}", p.path.display()))?;
                Ok(PartRows { name: p.name.clone(), item_shape: p.item_shape.clone(), rows: p.rows })
            })
            .collect()
    }

    /// The `i`th part file: `<name>.<i>.part` beside the file.
    fn part_path(&self, i: usize) -> PathBuf {
        crate::util::beside(&self.path, &format!(".{i}.part"))
    }

    /// Append rows (`values.len()` a multiple of the row size) to tensor `name`, whose rows have
    /// shape `item_shape`: the same for every call with this name.
    pub fn append(&mut self, name: &str, item_shape: &[usize], values: &[f32]) -> Result<()> {
        let row: usize = item_shape.iter().product();
        if row == 0 || !values.len().is_multiple_of(row) {
            bail!("{}: {} values for '{name}' are not whole rows of shape {item_shape:?}", self.path.display(), values.len());
        }
        let i = match self.parts.iter().position(|p| p.name == name) {
            Some(i) => i,
            None => {
                let path = self.part_path(self.parts.len());
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).with_context(|| format!("creating folder {}", dir.display()))?;
                }
                let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
                self.parts.push(Part { name: name.to_string(), item_shape: item_shape.to_vec(), rows: 0, path, file: Some(BufWriter::new(file)) });
                self.parts.len() - 1
            }
        };
        let part = &mut self.parts[i];
        if part.item_shape != item_shape {
            bail!("{}: rows of '{name}' changed shape from {:?} to {item_shape:?}", self.path.display(), part.item_shape);
        }
        let file = part.file.as_mut().expect("open until finish");
        match self.dtype {
            Dtype::F16 => write_le(file, values, |v| half::f16::from_f32(v).to_bits().to_le_bytes()),
            Dtype::BF16 => write_le(file, values, |v| half::bf16::from_f32(v).to_bits().to_le_bytes()),
            _ => write_le(file, values, |v| v.to_le_bytes()),
        }
        .with_context(|| format!("writing {}", part.path.display()))?;
        part.rows += values.len() / row;
        Ok(())
    }

    /// Write the file: the appended tensors (`[rows, ...item_shape]`), `extra` (small tensors
    /// held in memory) and `metadata`, laid out as [`write()`] lays them out.
    pub fn finish<A: Borrow<Array>>(mut self, extra: &[(String, A)], metadata: &HashMap<String, String>) -> Result<()> {
        for p in &mut self.parts {
            let mut file = p.file.take().expect("open until finish");
            file.flush().with_context(|| format!("writing {}", p.path.display()))?;
        }
        let mut items: Vec<(Entry, Bytes)> = Vec::new();
        for p in &self.parts {
            let mut shape = vec![p.rows];
            shape.extend(&p.item_shape);
            items.push((Entry { name: p.name.clone(), dtype: self.dtype, shape }, Bytes::Part(&p.path)));
        }
        for (name, a) in extra {
            let entry = Entry::of(name, a.borrow()).with_context(|| format!("building {}", self.path.display()))?;
            items.push((entry, Bytes::Memory(a.borrow())));
        }
        write_items(&self.path, items, metadata)?;
        // Written: the parts have served even in a resumable run.
        self.keep = false;
        Ok(())
    }
}

impl Drop for RowWriter {
    fn drop(&mut self) {
        for p in &mut self.parts {
            drop(p.file.take());
            if !self.keep {
                let _ = std::fs::remove_file(&p.path);
            }
        }
    }
}

/// One tensor's header entry.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
}

impl Entry {
    /// The entry of an array whose data fills its shape (checked: the header is built from the
    /// shape, the bytes written from the data).
    fn of(name: &str, a: &Array) -> Result<Self> {
        let (dtype, len) = match a {
            Array::F32 { data, .. } => (Dtype::F32, data.len()),
            Array::I64 { data, .. } => (Dtype::I64, data.len()),
        };
        if a.shape().iter().product::<usize>() != len {
            bail!("tensor '{name}': shape {:?} does not hold its {len} values", a.shape());
        }
        Ok(Entry { name: name.to_string(), dtype, shape: a.shape().to_vec() })
    }
}

/// The safetensors header for `entries` laid out in order: its length (u64 LE), then the JSON,
/// padded with spaces to a multiple of 8 bytes as the format's own writer does.
fn header(entries: &[&Entry], metadata: &HashMap<String, String>) -> Result<Vec<u8>> {
    let mut json = serde_json::Map::new();
    if !metadata.is_empty() {
        json.insert("__metadata__".into(), serde_json::to_value(metadata)?);
    }
    let mut offset = 0;
    for e in entries {
        let bytes = e.shape.iter().product::<usize>() * e.dtype.size();
        if json.contains_key(&e.name) {
            bail!("tensor '{}' appears twice", e.name);
        }
        let dtype = match e.dtype {
            Dtype::I64 => "I64",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::U8 => "U8",
            _ => "F32",
        };
        json.insert(e.name.clone(), serde_json::json!({ "dtype": dtype, "shape": e.shape, "data_offsets": [offset, offset + bytes] }));
        offset += bytes;
    }
    let mut text = serde_json::to_vec(&json)?;
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    Ok(out)
}

/// Write numbers as little-endian bytes through a small buffer (no copy of the whole slice).
fn write_le<T: Copy, const N: usize>(w: &mut impl Write, data: &[T], le: impl Fn(T) -> [u8; N]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(N * 16384);
    for chunk in data.chunks(16384) {
        buf.clear();
        buf.extend(chunk.iter().flat_map(|&v| le(v)));
        w.write_all(&buf)?;
    }
    Ok(())
}

pub(crate) fn f16_to_f32(h: u16) -> f32 {
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
        // Data that does not fill its shape is refused, and nothing is written.
        let q = dir.path().join("bad.safetensors");
        let err = format!("{:#}", write(&q, &[("x".to_string(), Array::F32 { shape: vec![2, 2], data: vec![1.0] })], &meta).unwrap_err());
        assert!(err.contains("bad.safetensors") && err.contains("'x'") && err.contains("[2, 2]"), "{err}");
        assert!(!q.exists());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert!((f16_to_f32(0x0001) - 5.96e-8).abs() < 1e-9);
    }

    #[test]
    fn rows_read_from_the_file_are_those_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let a = Array::F32 { shape: vec![5, 2, 3], data: (0..30).map(|v| v as f32 * 0.5 - 3.0).collect() };
        write(&p, &[("label".to_string(), Array::I64 { shape: vec![5], data: vec![0; 5] }), ("codes".to_string(), a.clone())], &HashMap::new()).unwrap();
        let rows = FileRows::open(&p, "codes").unwrap().expect("f32 codes");
        assert_eq!((rows.shape.as_slice(), rows.row_len()), (&[5, 2, 3][..], 6));
        let mut got = Vec::new();
        rows.read_rows(&[4, 0, 4, 2], &mut got).unwrap();
        let whole = a.to_f32();
        let want: Vec<f32> = [4, 0, 4, 2].iter().flat_map(|&i| whole[i * 6..(i + 1) * 6].to_vec()).collect();
        assert_eq!(got, want);
        assert!(FileRows::open(&p, "label").unwrap().is_none(), "integers are read whole");
        assert!(FileRows::open(&p, "fc7").unwrap().is_none());
        // Half precision (as `torch.save(codes.half())` converted, or `safetensors.torch`).
        let halves: Vec<u8> = [0x3c00u16, 0xc000, 0x3800, 0x0000].iter().flat_map(|h| h.to_le_bytes()).collect();
        let bf: Vec<u8> = [1.5f32, -2.0, 0.25, 8.0].iter().flat_map(|f| ((f.to_bits() >> 16) as u16).to_le_bytes()).collect();
        let views = [
            ("h", safetensors::tensor::TensorView::new(Dtype::F16, vec![2, 2], &halves).unwrap()),
            ("b", safetensors::tensor::TensorView::new(Dtype::BF16, vec![2, 2], &bf).unwrap()),
        ];
        let q = dir.path().join("half.safetensors");
        safetensors::serialize_to_file(views, &None, &q).unwrap();
        let (mut h, mut b) = (Vec::new(), Vec::new());
        FileRows::open(&q, "h").unwrap().unwrap().read_rows(&[1, 0], &mut h).unwrap();
        FileRows::open(&q, "b").unwrap().unwrap().read_rows(&[1], &mut b).unwrap();
        assert_eq!((h, b), (vec![0.5, 0.0, 1.0, -2.0], vec![0.25, 8.0]));
    }

    /// Single values: near ones share a read, far ones (beyond a page, beyond 1 MiB) do not,
    /// repeats and any order come back as asked.
    #[test]
    fn values_read_from_the_file_are_those_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.safetensors");
        let (n, d) = (7, 100_000);
        let a = Array::F32 { shape: vec![n, d], data: (0..n * d).map(|v| v as f32).collect() };
        write(&p, &[("codes".to_string(), a)], &HashMap::new()).unwrap();
        let rows = FileRows::open(&p, "codes").unwrap().unwrap();
        let mut rng = crate::rng::Rng::new(3);
        let mut at: Vec<(usize, usize)> = (0..5000).map(|_| (rng.below(n), rng.below(d))).collect();
        at.extend([(6, d - 1), (0, 0), (3, 5), (3, 5), (3, 1030), (3, 1029), (5, 0), (2, 99_000)]);
        let got = rows.read_values(&at).unwrap();
        assert_eq!(got, at.iter().map(|&(r, i)| (r * d + i) as f32).collect::<Vec<_>>());
        assert!(rows.read_values(&[]).unwrap().is_empty());
    }

    /// Ids too long for the header (the format caps it at 100 MB) go into a U8 tensor named by
    /// the metadata; every reader here gives them back under `ids`, and no tensor `ids`.
    #[test]
    fn ids_too_long_for_the_header_go_into_a_tensor_and_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let a = Array::F32 { shape: vec![3, 2], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] };
        let ids = serde_json::to_string(&["a/ä.jpg", "b.jpg", "c\nd.jpg"]).unwrap();
        let meta = HashMap::from([("ids".to_string(), ids.clone()), ("encoder".to_string(), "alexnet".to_string())]);
        for (max, in_tensor) in [(1 << 20, false), (10, true)] {
            let items = vec![(Entry::of("fc7", &a).unwrap(), Bytes::Memory(&a))];
            write_items_with(&p, items, &meta, max).unwrap();
            let (names, m) = read_header(&p).unwrap();
            assert_eq!((names.len(), &m), (1, &meta), "ids_max {max}");
            let (tensors, m) = read(&p).unwrap();
            assert_eq!((tensors.keys().collect::<Vec<_>>(), &m), (vec![&"fc7".to_string()], &meta));
            let mut rows = Vec::new();
            FileRows::open(&p, "fc7").unwrap().unwrap().read_rows(&[2], &mut rows).unwrap();
            assert_eq!(rows, [5.0, 6.0]);
            assert!(FileRows::open(&p, "ids").unwrap().is_none());
            // What other readers see: the tensor, named in the metadata.
            let bytes = std::fs::read(&p).unwrap();
            let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
            let (_, raw) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
            assert_eq!(raw.metadata().as_ref().unwrap().get(IDS_TENSOR).is_some(), in_tensor);
            if in_tensor {
                assert_eq!(st.tensor("ids").unwrap().data(), ids.as_bytes());
            }
        }
        // A metadata naming a tensor that is not there is an error naming both.
        let a = Array::F32 { shape: vec![1], data: vec![0.0] };
        write(&p, &[("x".to_string(), a)], &HashMap::from([(IDS_TENSOR.to_string(), "names".to_string())])).unwrap();
        let err = format!("{:#}", read(&p).unwrap_err());
        assert!(err.contains("t.safetensors") && err.contains("'names'"), "{err}");
    }

    #[test]
    fn damaged_files_are_errors_naming_the_file_and_the_fault() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.safetensors");
        let t = vec![("w".to_string(), Array::F32 { shape: vec![300_000], data: vec![0.25; 300_000] })];
        write(&p, &t, &HashMap::new()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(read(&p).unwrap().0["w"], t[0].1, "a tensor over several read chunks");
        let bad = dir.path().join("bad.safetensors");
        let cases: [(&[u8], &str); 4] = [
            (&bytes[..5], "shorter than the header"),
            (&bytes[..bytes.len() - 4], "the file at"),
            (&[8, 0, 0, 0, 0, 0, 0, 0, b'{', b'x'], "header length"),
            (&[2, 0, 0, 0, 0, 0, 0, 0, b'{', b'x'], "header"),
        ];
        for (content, why) in cases {
            std::fs::write(&bad, content).unwrap();
            let err = format!("{:#}", read(&bad).unwrap_err());
            assert!(err.contains("bad.safetensors") && err.contains("not a valid safetensors file") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn rows_streamed_to_a_file_read_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("codes.safetensors");
        let mut w = RowWriter::new(&p);
        // Two tensors appended in interleaved batches of 2 and 1 rows.
        w.append("fc", &[3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        w.append("conv", &[2, 1], &[-1.0, -2.0, -3.0, -4.0]).unwrap();
        w.append("fc", &[3], &[7.0, 8.0, 9.0]).unwrap();
        w.append("conv", &[2, 1], &[-5.0, -6.0]).unwrap();
        assert!(!p.exists(), "nothing at the target before finish");
        let err = w.append("fc", &[2], &[0.0, 0.0]).unwrap_err().to_string();
        assert!(err.contains("'fc'") && err.contains("[3]") && err.contains("[2]"), "{err}");
        let err = w.append("fc", &[3], &[0.0; 4]).unwrap_err().to_string();
        assert!(err.contains("4 values") && err.contains("codes.safetensors"), "{err}");
        let label = Array::I64 { shape: vec![3], data: vec![2, -1, 0] };
        w.finish(&[("label".to_string(), &label)], &HashMap::from([("ids".to_string(), "[]".to_string())])).unwrap();
        let (back, meta) = read(&p).unwrap();
        assert_eq!(back["fc"], Array::F32 { shape: vec![3, 3], data: (1..=9).map(|v| v as f32).collect() });
        assert_eq!(back["conv"], Array::F32 { shape: vec![3, 2, 1], data: (1..=6).map(|v| -v as f32).collect() });
        assert_eq!(back["label"], label);
        assert_eq!(meta["ids"], "[]");
        // The i64 tensor is laid out first, so aligned to 8 bytes though 15 floats precede it
        // in append order.
        let bytes = std::fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let head: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(head["label"]["data_offsets"][0], 0, "{head}");
        assert_eq!(n % 8, 0);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("codes.safetensors")], "part files removed");
    }

    #[test]
    fn an_unfinished_row_writer_leaves_the_old_file_and_no_parts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("codes.safetensors");
        let old = vec![("a".to_string(), Array::F32 { shape: vec![1], data: vec![42.0] })];
        write(&p, &old, &HashMap::new()).unwrap();
        let mut w = RowWriter::new(&p);
        w.append("a", &[1], &[1.0, 2.0]).unwrap();
        drop(w); // a run that failed before its last batch
        assert_eq!(read(&p).unwrap().0["a"], old[0].1);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "part files removed");
    }
}
