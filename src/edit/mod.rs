//! Editing codes before decoding them: interpolation, unit scaling/setting/zeroing, code
//! arithmetic, binarization (D&B), dropout and random codes from the data's statistics.
//!
//! Units are indices into vector codes (`[D]`) and channels of spatial codes (`[C, H, W]`,
//! applied at every position). Ops are parsed from the command line (`--op "scale 3=2,7=0"`)
//! or from an edit TOML file (`ops = ["zero 1,2", "binarize"]`).
pub mod pose;
mod run;

pub use run::{edit, read_ops_file, EditOptions, EditOutput, PoseReading};

use crate::data::codes::TapCodes;
use crate::rng::Rng;
use anyhow::{bail, Context, Result};

#[derive(Clone, Debug, PartialEq)]
pub enum EditOp {
    /// `steps` codes from id A to id B (both ends included).
    Interpolate { a: String, b: String, steps: usize },
    Scale(Vec<(usize, f32)>),
    Set(Vec<(usize, f32)>),
    Zero(Vec<usize>),
    /// Signed sum of codes by id: `add A - B + C`.
    Add(Vec<(f32, String)>),
    /// Keep only which units are non-zero (D&B): positive units become one constant chosen so
    /// that the code keeps its L2 norm.
    Binarize,
    /// Zero each unit with probability `p` and scale the rest by 1/(1-p).
    Dropout { p: f32, seed: u64 },
    /// New codes drawn unit by unit from the code file's empirical distribution (each unit's
    /// value taken from a random row), keeping every unit's marginal, sparsity included.
    Random { count: usize, seed: u64 },
    /// New camera pose for posenet codes: the code is optimized so that the encoder's pose
    /// head reads these angles from the decoded image while staying close to the original
    /// code (`keep` weighs ‖z − z₀‖²/‖z₀‖²); see [`pose`].
    Pose { azimuth: f32, elevation: Option<f32>, steps: usize, keep: f32 },
}

/// Most codes an op makes (`interpolate --steps`, `random --count`): each is decoded to an image.
pub const MAX_CODES: usize = 100_000;

fn units_list(s: &str) -> Result<Vec<usize>> {
    let units: Vec<usize> = s.split(',').filter(|t| !t.trim().is_empty()).map(|t| t.trim().parse().with_context(|| format!("'{t}' is not a unit index"))).collect::<Result<_>>()?;
    if units.is_empty() {
        bail!("no unit given");
    }
    Ok(units)
}

fn unit_values(s: &str) -> Result<Vec<(usize, f32)>> {
    let values: Vec<(usize, f32)> = s
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (u, v) = t.split_once('=').with_context(|| format!("'{t}' should be UNIT=VALUE"))?;
            Ok((u.trim().parse().with_context(|| format!("'{u}' is not a unit index"))?, finite(v.trim())?))
        })
        .collect::<Result<_>>()?;
    if values.is_empty() {
        bail!("no UNIT=VALUE given");
    }
    Ok(values)
}

/// A finite number (NaN or an overflow to infinity decodes to a black image).
fn finite(v: &str) -> Result<f32> {
    let x: f32 = v.parse().with_context(|| format!("'{v}' is not a number"))?;
    if !x.is_finite() {
        bail!("'{v}' is not a finite number (f32)");
    }
    Ok(x)
}

/// The words after the op: `positional` of them first, then `--flag value` pairs of `flags`;
/// anything else is an error naming it.
fn check_words(words: &[&str], positional: usize, flags: &[&str]) -> Result<()> {
    let mut i = 1 + positional;
    while i < words.len() {
        match words[i] {
            f if flags.contains(&f) && i + 1 < words.len() => i += 2,
            f if flags.contains(&f) => bail!("{f} needs a value"),
            other => bail!("unexpected '{other}'{}", if flags.is_empty() { String::new() } else { format!(" (flags: {})", flags.join(", ")) }),
        }
    }
    Ok(())
}

/// A count of codes to make, at least `min` and at most [`MAX_CODES`].
fn codes_count(flag: &str, v: Option<&str>, default: usize, min: usize) -> Result<usize> {
    let n: usize = v.map(|s| s.parse()).transpose().with_context(|| format!("bad {flag} '{}'", v.unwrap_or("")))?.unwrap_or(default);
    if !(min..=MAX_CODES).contains(&n) {
        bail!("{flag} must be from {min} to {MAX_CODES} (each is an image), not {n}");
    }
    Ok(n)
}

impl EditOp {
    /// Parse one op: `interpolate A B --steps N`, `scale 3=2,5=0.5`, `set 3=1`, `zero 1,2`,
    /// `add A - B + C`, `binarize`, `dropout P [--seed S]`, `random --count N [--seed S]`,
    /// `pose AZ[,EL] [--steps N] [--keep W]`.
    pub fn parse(text: &str) -> Result<Self> {
        Self::parse_words(text).with_context(|| format!("edit op '{}'", text.trim()))
    }

    /// Short name for file names: `interpolate`, `scale`, ...
    pub fn name(&self) -> &'static str {
        match self {
            EditOp::Interpolate { .. } => "interpolate",
            EditOp::Scale(_) => "scale",
            EditOp::Set(_) => "set",
            EditOp::Zero(_) => "zero",
            EditOp::Add(_) => "add",
            EditOp::Binarize => "binarize",
            EditOp::Dropout { .. } => "dropout",
            EditOp::Random { .. } => "random",
            EditOp::Pose { .. } => "pose",
        }
    }

    /// Whether the op edits each selected code on its own (as opposed to combining named
    /// codes or drawing new ones).
    pub fn per_row(&self) -> bool {
        !matches!(self, EditOp::Interpolate { .. } | EditOp::Add(_) | EditOp::Random { .. })
    }

    fn parse_words(text: &str) -> Result<Self> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let flag = |name: &str| -> Option<&str> { words.iter().position(|w| *w == name).and_then(|i| words.get(i + 1).copied()) };
        let seed = flag("--seed").map(|s| s.parse::<u64>()).transpose().with_context(|| format!("bad --seed in '{text}'"))?.unwrap_or(0);
        let rest = words.get(1..).unwrap_or(&[]).join(" ");
        let op = match words.first().copied() {
            Some("interpolate") => {
                let steps = codes_count("--steps", flag("--steps"), 8, 2)?;
                match (words.get(1), words.get(2)) {
                    (Some(a), Some(b)) if !a.starts_with("--") && !b.starts_with("--") => {
                        check_words(&words, 2, &["--steps"])?;
                        EditOp::Interpolate { a: a.to_string(), b: b.to_string(), steps }
                    }
                    _ => bail!("expected `interpolate A B --steps N`"),
                }
            }
            Some("scale") => EditOp::Scale(unit_values(&rest).context("expected `scale UNIT=FACTOR,...`")?),
            Some("set") => EditOp::Set(unit_values(&rest).context("expected `set UNIT=VALUE,...`")?),
            Some("zero") => EditOp::Zero(units_list(&rest).context("expected `zero UNIT,...`")?),
            Some("add") => {
                let mut terms = Vec::new();
                let mut sign = 1.0;
                for w in &words[1..] {
                    match *w {
                        "+" => sign = 1.0,
                        "-" => sign = -1.0,
                        id => {
                            terms.push((sign, id.to_string()));
                            sign = 1.0;
                        }
                    }
                }
                if terms.is_empty() {
                    bail!("expected `add A - B + C`");
                }
                EditOp::Add(terms)
            }
            Some("binarize") => {
                check_words(&words, 0, &[])?;
                EditOp::Binarize
            }
            Some("dropout") => {
                let p: f32 = words.get(1).context("expected `dropout P`")?.parse().context("P must be a number")?;
                if !(0.0..1.0).contains(&p) {
                    bail!("dropout probability {p} must be in [0, 1)");
                }
                check_words(&words, 1, &["--seed"])?;
                EditOp::Dropout { p, seed }
            }
            Some("random") => {
                check_words(&words, 0, &["--count", "--seed"])?;
                EditOp::Random { count: codes_count("--count", flag("--count"), 8, 1)?, seed }
            }
            Some("pose") => {
                let arg = words.get(1).filter(|a| !a.starts_with("--")).context("expected `pose AZ[,EL]`")?;
                let mut parts = arg.split(',');
                let azimuth = finite(parts.next().unwrap()).context("the azimuth must be a number of degrees")?;
                let elevation = parts.next().map(finite).transpose().context("the elevation must be a number of degrees")?;
                let steps = flag("--steps").map(|s| s.parse()).transpose().with_context(|| format!("bad --steps in '{text}'"))?.unwrap_or(pose::STEPS);
                let keep = flag("--keep").map(finite).transpose().context("bad --keep")?.unwrap_or(pose::KEEP);
                if keep < 0.0 {
                    bail!("--keep must be at least 0, not {keep}");
                }
                check_words(&words, 1, &["--steps", "--keep"])?;
                EditOp::Pose { azimuth, elevation, steps, keep }
            }
            _ => bail!("unknown edit op; ops: interpolate, scale, set, zero, add, binarize, dropout, random, pose"),
        };
        Ok(op)
    }

    /// The op's units against the codes' (checked for every op before any runs).
    pub fn check_units(&self, codes: &Codes) -> Result<()> {
        match self {
            EditOp::Scale(v) | EditOp::Set(v) => v.iter().try_for_each(|&(u, _)| codes.check_unit(u)),
            EditOp::Zero(v) => v.iter().try_for_each(|&u| codes.check_unit(u)),
            _ => Ok(()),
        }
    }
}

/// The op as it is written on the command line (`scale 3=2,5=0.5`): [`EditOp::parse`] reads it
/// back to the same op.
impl std::fmt::Display for EditOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs = |v: &[(usize, f32)]| v.iter().map(|(u, x)| format!("{u}={x}")).collect::<Vec<_>>().join(",");
        match self {
            EditOp::Interpolate { a, b, steps } => write!(f, "interpolate {a} {b} --steps {steps}"),
            EditOp::Scale(v) => write!(f, "scale {}", pairs(v)),
            EditOp::Set(v) => write!(f, "set {}", pairs(v)),
            EditOp::Zero(v) => write!(f, "zero {}", v.iter().map(usize::to_string).collect::<Vec<_>>().join(",")),
            EditOp::Add(terms) => {
                write!(f, "add")?;
                for (i, (sign, id)) in terms.iter().enumerate() {
                    match (i, *sign < 0.0) {
                        (_, true) => write!(f, " - {id}")?,
                        (0, false) => write!(f, " {id}")?,
                        _ => write!(f, " + {id}")?,
                    }
                }
                Ok(())
            }
            EditOp::Binarize => write!(f, "binarize"),
            EditOp::Dropout { p, seed } => write!(f, "dropout {p} --seed {seed}"),
            EditOp::Random { count, seed } => write!(f, "random --count {count} --seed {seed}"),
            EditOp::Pose { azimuth, elevation, steps, keep } => {
                write!(f, "pose {azimuth}")?;
                if let Some(e) = elevation {
                    write!(f, ",{e}")?;
                }
                write!(f, " --steps {steps} --keep {keep}")
            }
        }
    }
}

/// The codes edits act on: those of one tap (in memory, or read from their file by rows as
/// an op needs them) and their per-code `shape` (the decoder's: a flattened file's rows are
/// still edited by channel).
pub struct Codes<'a> {
    pub shape: &'a [usize],
    pub tap: &'a TapCodes,
}

impl Codes<'_> {
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }
    /// Number of codes.
    pub fn len(&self) -> usize {
        self.tap.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tap.is_empty()
    }
    /// Rows `idx`, one code each.
    pub fn rows(&self, idx: &[usize]) -> Result<Vec<Vec<f32>>> {
        Ok(self.tap.rows(idx)?.chunks_exact(self.dim().max(1)).map(<[f32]>::to_vec).collect())
    }
    /// Number of addressable units: vector length or channel count.
    pub fn units(&self) -> usize {
        self.shape[0]
    }
    /// Element positions of unit `u` within a row.
    fn unit_positions(&self, u: usize) -> std::ops::Range<usize> {
        let per = self.dim() / self.units();
        u * per..(u + 1) * per
    }
    fn check_unit(&self, u: usize) -> Result<()> {
        if u >= self.units() {
            let what = if self.shape.len() > 1 { "channel" } else { "unit" };
            bail!("{what} {u} is out of range: this code has {} {what}s (0..{})", self.units(), self.units() - 1);
        }
        Ok(())
    }
}

/// An id as part of a file name: `chair/000004.png` → `chair_000004`.
pub(crate) fn file_label(id: &str) -> String {
    crate::data::folder::strip_extension(id).replace('/', "_")
}

/// One edited code with a label for file names and captions.
pub struct Edited {
    pub label: String,
    pub code: Vec<f32>,
}

/// Apply a row-wise op to `row` (ops that need other rows or the encoder are handled by
/// [`apply`]).
pub fn apply_row(op: &EditOp, codes: &Codes, row: &[f32]) -> Result<Vec<f32>> {
    let mut c = row.to_vec();
    match op {
        EditOp::Scale(uv) | EditOp::Set(uv) => {
            for &(u, v) in uv {
                codes.check_unit(u)?;
                for i in codes.unit_positions(u) {
                    c[i] = if matches!(op, EditOp::Scale(_)) { c[i] * v } else { v };
                }
            }
        }
        EditOp::Zero(us) => {
            for &u in us {
                codes.check_unit(u)?;
                for i in codes.unit_positions(u) {
                    c[i] = 0.0;
                }
            }
        }
        EditOp::Binarize => {
            let norm = c.iter().map(|v| v * v).sum::<f32>().sqrt();
            let active = c.iter().filter(|&&v| v > 0.0).count();
            let k = if active > 0 { norm / (active as f32).sqrt() } else { 0.0 };
            for v in &mut c {
                *v = if *v > 0.0 { k } else { 0.0 };
            }
        }
        EditOp::Dropout { p, seed } => {
            let mut rng = Rng::new(*seed);
            for v in &mut c {
                *v = if rng.uniform() < *p { 0.0 } else { *v / (1.0 - p) };
            }
        }
        _ => bail!("this op does not apply to a single code"),
    }
    Ok(c)
}

/// Apply `op` to the rows `selected` (indices into the code file) of `codes`; `id_of` maps an
/// id named in the op to its row. Returns the edited codes, one or more per op. Only the rows
/// an op uses are read (and for `random`, only the values it draws).
pub fn apply(op: &EditOp, codes: &Codes, selected: &[usize], ids: &[String], id_of: &dyn Fn(&str) -> Result<usize>) -> Result<Vec<Edited>> {
    let mut out = Vec::new();
    match op {
        EditOp::Interpolate { a, b, steps } => {
            if *steps < 2 {
                bail!("interpolate needs --steps of at least 2, got {steps}");
            }
            let ends = codes.rows(&[id_of(a)?, id_of(b)?])?;
            let (ra, rb) = (&ends[0], &ends[1]);
            for s in 0..*steps {
                let t = s as f32 / (*steps - 1) as f32;
                out.push(Edited { label: format!("interp_{s:02}_t{t:.2}"), code: ra.iter().zip(rb).map(|(x, y)| (1.0 - t) * x + t * y).collect() });
            }
        }
        EditOp::Add(terms) => {
            let rows = codes.rows(&terms.iter().map(|(_, id)| id_of(id)).collect::<Result<Vec<_>>>()?)?;
            let mut c = vec![0.0; codes.dim()];
            for ((sign, _), row) in terms.iter().zip(&rows) {
                for (v, x) in c.iter_mut().zip(row) {
                    *v += sign * x;
                }
            }
            let label = terms.iter().map(|(s, id)| format!("{}{}", if *s < 0.0 { "-" } else { "+" }, file_label(id))).collect::<String>();
            out.push(Edited { label: format!("add{label}"), code: c });
        }
        EditOp::Random { count, seed } => {
            if codes.is_empty() {
                bail!("random codes are drawn from the file's codes, and it holds none");
            }
            // Value i of each new code comes from a random row's value i.
            let mut rng = Rng::new(*seed);
            let (n, d) = (codes.len(), codes.dim());
            let at: Vec<(usize, usize)> = (0..count * d).map(|k| (rng.below(n), k % d)).collect();
            let values = codes.tap.values(&at)?;
            for (k, code) in values.chunks_exact(d.max(1)).enumerate() {
                out.push(Edited { label: format!("random_{k:02}"), code: code.to_vec() });
            }
        }
        EditOp::Pose { .. } => bail!("pose edits need the encoder; use `preimage edit` with a posenet decoder"),
        _ => {
            for (&r, row) in selected.iter().zip(codes.rows(selected)?) {
                out.push(Edited { label: file_label(&ids[r]), code: apply_row(op, codes, &row)? });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: [usize; 3] = [2, 1, 2];

    /// 3 rows of spatial codes [2 channels, 1, 2].
    fn codes() -> TapCodes {
        let data = vec![1.0, 2.0, 0.0, 4.0, /**/ -1.0, 3.0, 5.0, 0.0, /**/ 0.0, 0.0, 1.0, 1.0];
        TapCodes::Memory(crate::tensorfile::Array::F32 { shape: vec![3, 2, 1, 2], data })
    }

    #[test]
    fn parse_all_ops() {
        assert_eq!(EditOp::parse("interpolate a/1 b/2 --steps 5").unwrap(), EditOp::Interpolate { a: "a/1".into(), b: "b/2".into(), steps: 5 });
        assert_eq!(EditOp::parse("scale 3=2,5=0.5").unwrap(), EditOp::Scale(vec![(3, 2.0), (5, 0.5)]));
        assert_eq!(EditOp::parse("zero 1, 2").unwrap(), EditOp::Zero(vec![1, 2]));
        assert_eq!(EditOp::parse("add a - b + c").unwrap(), EditOp::Add(vec![(1.0, "a".into()), (-1.0, "b".into()), (1.0, "c".into())]));
        assert_eq!(EditOp::parse("dropout 0.5 --seed 3").unwrap(), EditOp::Dropout { p: 0.5, seed: 3 });
        assert_eq!(EditOp::parse("random --count 4").unwrap(), EditOp::Random { count: 4, seed: 0 });
        assert_eq!(EditOp::parse("pose 90,20").unwrap(), EditOp::Pose { azimuth: 90.0, elevation: Some(20.0), steps: pose::STEPS, keep: pose::KEEP });
        assert_eq!(EditOp::parse("pose 45 --steps 10 --keep 2").unwrap(), EditOp::Pose { azimuth: 45.0, elevation: None, steps: 10, keep: 2.0 });
        assert!(format!("{:#}", EditOp::parse("explode").unwrap_err()).contains("interpolate"));
        let err = format!("{:#}", EditOp::parse("scale 3").unwrap_err());
        assert!(err.contains("UNIT=VALUE") && err.contains("edit op 'scale 3'"), "{err}");
        assert!(EditOp::parse("dropout 1.5").is_err());
        assert!(format!("{:#}", EditOp::parse("random --count 0").unwrap_err()).contains("from 1 to"));
        // Counts that are no allocation to attempt, values that decode to black, missing and
        // extra words: refused when parsed.
        // Written back as typed, each op parses to itself (edits.json records them so).
        for text in ["interpolate a/1 b/2 --steps 5", "scale 3=2,5=0.5", "set 1=-1.25", "zero 1,2", "add a - b + c", "add - a + b", "binarize", "dropout 0.25 --seed 3", "random --count 4 --seed 7", "pose 90,20 --steps 30 --keep 0.5", "pose -45 --steps 10 --keep 2"] {
            let op = EditOp::parse(text).unwrap();
            assert_eq!(op.to_string(), text);
            assert_eq!(EditOp::parse(&op.to_string()).unwrap(), op);
        }
        for (op, says) in [
            ("random --count 18446744073709551615 --seed 1", "--count must be from 1 to 100000"),
            ("interpolate a b --steps 4294967296", "--steps must be from 2 to 100000"),
            ("scale 3=nan", "not a finite number"),
            ("set 3=1e39", "not a finite number"),
            ("pose 90,nan", "elevation must be a number"),
            ("pose inf", "azimuth must be a number"),
            ("pose 90 --keep -1", "--keep must be at least 0"),
            ("scale", "expected `scale UNIT=FACTOR,...`"),
            ("zero", "expected `zero UNIT,...`"),
            ("set ,", "expected `set UNIT=VALUE,...`"),
            ("binarize extra", "unexpected 'extra'"),
            ("dropout 0.5 --sed 3", "unexpected '--sed'"),
            ("random --count", "--count needs a value"),
        ] {
            let err = format!("{:#}", EditOp::parse(op).unwrap_err());
            assert!(err.contains(says) && err.contains(&format!("edit op '{op}'")), "{op}: {err}");
        }
    }

    #[test]
    fn row_ops_act_on_channels() {
        let tap = codes();
        let c = Codes { shape: &SHAPE, tap: &tap };
        let row = c.rows(&[0]).unwrap().remove(0);
        assert_eq!(apply_row(&EditOp::Scale(vec![(1, 2.0)]), &c, &row).unwrap(), vec![1.0, 2.0, 0.0, 8.0]);
        assert_eq!(apply_row(&EditOp::Set(vec![(0, 7.0)]), &c, &row).unwrap(), vec![7.0, 7.0, 0.0, 4.0]);
        assert_eq!(apply_row(&EditOp::Zero(vec![0]), &c, &row).unwrap(), vec![0.0, 0.0, 0.0, 4.0]);
        let err = apply_row(&EditOp::Zero(vec![2]), &c, &row).unwrap_err().to_string();
        assert!(err.contains("channel 2") && err.contains("2 channels"), "{err}");
        // Binarize keeps the pattern of positive units and the L2 norm.
        let b = apply_row(&EditOp::Binarize, &c, &row).unwrap();
        let k = (21.0f32).sqrt() / 3.0f32.sqrt();
        assert_eq!(b, vec![k, k, 0.0, k]);
        // Dropout: deterministic for a seed, survivors scaled by 1/(1-p).
        let d1 = apply_row(&EditOp::Dropout { p: 0.5, seed: 1 }, &c, &row).unwrap();
        assert_eq!(d1, apply_row(&EditOp::Dropout { p: 0.5, seed: 1 }, &c, &row).unwrap());
        assert!(d1.iter().zip(&row).all(|(d, r)| *d == 0.0 || *d == 2.0 * r));
    }

    /// Codes left in their file (f32 or f16: these values are exact in both) edit as those in
    /// memory do, `random` included: the same rows and values are read.
    #[test]
    fn codes_in_a_file_edit_as_in_memory() {
        use crate::tensorfile::{FileRows, RowWriter};
        use safetensors::Dtype;
        let memory = codes();
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let id_of = |s: &str| ids.iter().position(|i| i == s).ok_or_else(|| anyhow::anyhow!("no id {s}"));
        let ops = [
            EditOp::Interpolate { a: "c".into(), b: "a".into(), steps: 3 },
            EditOp::Add(vec![(1.0, "b".into()), (-1.0, "c".into())]),
            EditOp::Random { count: 4, seed: 7 },
            EditOp::Scale(vec![(1, 3.0)]),
            EditOp::Binarize,
        ];
        for dtype in [Dtype::F32, Dtype::F16] {
            let path = dir.path().join(format!("{dtype:?}.safetensors"));
            let mut w = RowWriter::with_dtype(&path, dtype).unwrap();
            w.append("fc7", &SHAPE, &memory.rows(&[0, 1, 2]).unwrap()).unwrap();
            w.finish::<crate::tensorfile::Array>(&[], &Default::default()).unwrap();
            let file = TapCodes::File(FileRows::open(&path, "fc7").unwrap().unwrap());
            let (m, f) = (Codes { shape: &SHAPE, tap: &memory }, Codes { shape: &SHAPE, tap: &file });
            for op in &ops {
                let (a, b) = (apply(op, &m, &[2, 0], &ids, &id_of).unwrap(), apply(op, &f, &[2, 0], &ids, &id_of).unwrap());
                assert_eq!(a.iter().map(|e| (&e.label, &e.code)).collect::<Vec<_>>(), b.iter().map(|e| (&e.label, &e.code)).collect::<Vec<_>>(), "{op:?} from {dtype:?}");
            }
            // Values come back in the order asked, whatever order the file is read in.
            assert_eq!(file.values(&[(2, 3), (0, 1), (1, 2), (0, 0)]).unwrap(), vec![1.0, 2.0, 5.0, 1.0]);
        }
    }

    #[test]
    fn multi_row_ops() {
        let tap = codes();
        let c = Codes { shape: &SHAPE, tap: &tap };
        let row = |i: usize| c.rows(&[i]).unwrap().remove(0);
        let ids: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let id_of = |s: &str| ids.iter().position(|i| i == s).ok_or_else(|| anyhow::anyhow!("no id {s}"));
        let e = apply(&EditOp::Interpolate { a: "a".into(), b: "b".into(), steps: 3 }, &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].code, row(0));
        assert_eq!(e[1].code, vec![0.0, 2.5, 2.5, 2.0]);
        assert_eq!(e[2].code, row(1));
        let e = apply(&EditOp::Add(vec![(1.0, "a".into()), (-1.0, "b".into()), (1.0, "c".into())]), &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e[0].code, vec![2.0, -1.0, -4.0, 5.0]);
        assert!(apply(&EditOp::Add(vec![(1.0, "zz".into())]), &c, &[], &ids, &id_of).is_err());
        // Random codes: every value of unit position i comes from some row at position i.
        let e = apply(&EditOp::Random { count: 5, seed: 2 }, &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e.len(), 5);
        for r in &e {
            for (i, v) in r.code.iter().enumerate() {
                assert!((0..3).any(|r| row(r)[i] == *v));
            }
        }
    }
}
