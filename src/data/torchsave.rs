//! `torch.save`'s file format, written: a code file named `.pt` or `.pth` is what
//! `torch.load(F)` opens (also with `weights_only=True`, its default since PyTorch 2.6, and
//! `mmap=True`), as `.npz` is NumPy's. Since PyTorch 1.6 the format is a zip archive (entries
//! stored, not compressed): `archive/data.pkl`, a pickle (protocol 2) of the saved object whose
//! tensors refer by key to raw little-endian storages `archive/data/<key>`, beside
//! `archive/byteorder` and `archive/version`.
//!
//! A code file is saved as the dict `{tap: tensor, ..., "label": ..., "pose": ..., "ids": [str],
//! "__metadata__": {str: str}}`: the tensors by name, the row ids as a list of strings, and the
//! rest of the metadata (encoder, weights, preprocessing) as a dict of strings, what a safetensors
//! code file keeps in its header. Only the opcodes and globals `torch.load`'s weights-only
//! unpickler accepts are written: dicts, lists, tuples, strings, ints, `False`,
//! `torch._utils._rebuild_tensor_v2`, `collections.OrderedDict` and the storage types.
use super::npy;
use safetensors::Dtype;

/// The folder of every entry in the archive (PyTorch takes it from the first entry).
pub const ARCHIVE: &str = "archive";

/// The format version PyTorch writes in `archive/version` (1.6 up to now).
pub const VERSION: &str = "3\n";

/// PyTorch's legacy storage class for a dtype, which the pickle names (`torch.FloatStorage`).
pub fn storage_type(dtype: Dtype) -> Option<&'static str> {
    Some(match dtype {
        Dtype::F32 => "FloatStorage",
        Dtype::F64 => "DoubleStorage",
        Dtype::F16 => "HalfStorage",
        Dtype::BF16 => "BFloat16Storage",
        Dtype::I64 => "LongStorage",
        Dtype::I32 => "IntStorage",
        Dtype::U8 => "ByteStorage",
        Dtype::BOOL => "BoolStorage",
        _ => return None,
    })
}

/// One tensor of the saved dict: its name, element type and shape; its storage is
/// `archive/data/<index in the list>`, holding exactly its elements, row-major.
pub struct Tensor<'a> {
    pub name: &'a str,
    pub dtype: Dtype,
    pub shape: &'a [usize],
}

/// The pickle (`archive/data.pkl`) of the dict of `tensors`, `ids` (a list of strings) and
/// `metadata` (a dict of strings under [`npy::METADATA`], left out when empty).
pub fn pickle(tensors: &[Tensor], ids: Option<&[String]>, metadata: &[(&str, &str)]) -> Result<Vec<u8>, String> {
    let mut p = Pickle(vec![PROTO, 2]);
    p.0.push(EMPTY_DICT);
    p.0.push(MARK);
    for (key, t) in tensors.iter().enumerate() {
        let storage = storage_type(t.dtype).ok_or_else(|| format!("tensor '{}': PyTorch has no storage for {:?}", t.name, t.dtype))?;
        p.str(t.name);
        p.tensor(storage, &key.to_string(), t.shape);
    }
    if let Some(ids) = ids {
        p.str("ids");
        p.0.push(EMPTY_LIST);
        // Appended in batches of 1000, as Python's pickler does, so a reader's stack stays small.
        for chunk in ids.chunks(1000) {
            p.0.push(MARK);
            chunk.iter().for_each(|id| p.str(id));
            p.0.push(APPENDS);
        }
    }
    if !metadata.is_empty() {
        p.str(npy::METADATA);
        p.0.push(EMPTY_DICT);
        p.0.push(MARK);
        for (k, v) in metadata {
            p.str(k);
            p.str(v);
        }
        p.0.push(SETITEMS);
    }
    p.0.push(SETITEMS);
    p.0.push(STOP);
    Ok(p.0)
}

// The pickle opcodes used (Python's `pickletools` names them).
const PROTO: u8 = 0x80;
const STOP: u8 = b'.';
const MARK: u8 = b'(';
const TUPLE: u8 = b't';
const EMPTY_TUPLE: u8 = b')';
const EMPTY_DICT: u8 = b'}';
const SETITEMS: u8 = b'u';
const EMPTY_LIST: u8 = b']';
const APPENDS: u8 = b'e';
const BINUNICODE: u8 = b'X';
const BININT1: u8 = b'K';
const BININT2: u8 = b'M';
const BININT: u8 = b'J';
const LONG1: u8 = 0x8a;
const NEWFALSE: u8 = 0x89;
const GLOBAL: u8 = b'c';
const REDUCE: u8 = b'R';
const BINPERSID: u8 = b'Q';

struct Pickle(Vec<u8>);

impl Pickle {
    fn str(&mut self, s: &str) {
        self.0.push(BINUNICODE);
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.as_bytes());
    }

    fn int(&mut self, v: usize) {
        match v {
            0..=0xff => self.0.extend([BININT1, v as u8]),
            0x100..=0xffff => {
                self.0.push(BININT2);
                self.0.extend((v as u16).to_le_bytes());
            }
            _ if v <= i32::MAX as usize => {
                self.0.push(BININT);
                self.0.extend((v as i32).to_le_bytes());
            }
            // Eight bytes, two's complement: positive below 2^63.
            _ => {
                self.0.extend([LONG1, 8]);
                self.0.extend((v as u64).to_le_bytes());
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) {
        self.0.push(GLOBAL);
        self.0.extend(format!("{module}\n{name}\n").as_bytes());
    }

    fn ints(&mut self, values: impl IntoIterator<Item = usize>) {
        self.0.push(MARK);
        values.into_iter().for_each(|v| self.int(v));
        self.0.push(TUPLE);
    }

    /// `torch._utils._rebuild_tensor_v2(storage, 0, shape, strides, False, OrderedDict())`, the
    /// storage being the persistent id `("storage", torch.<storage>, key, "cpu", numel)`.
    fn tensor(&mut self, storage: &str, key: &str, shape: &[usize]) {
        let numel: usize = shape.iter().product();
        let strides: Vec<usize> = (0..shape.len()).map(|d| shape[d + 1..].iter().product()).collect();
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.0.push(MARK);
        self.0.push(MARK);
        self.str("storage");
        self.global("torch", storage);
        self.str(key);
        self.str("cpu");
        self.int(numel);
        self.0.push(TUPLE);
        self.0.push(BINPERSID);
        self.int(0);
        self.ints(shape.iter().copied());
        self.ints(strides);
        self.0.push(NEWFALSE);
        self.global("collections", "OrderedDict");
        self.0.push(EMPTY_TUPLE);
        self.0.push(REDUCE);
        self.0.push(TUPLE);
        self.0.push(REDUCE);
    }
}
