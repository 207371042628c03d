//! Editing codes before decoding them: interpolation, unit scaling/setting/zeroing, code
//! arithmetic, binarization (D&B), dropout and random codes from the data's statistics.
//!
//! Units are indices into vector codes (`[D]`) and channels of spatial codes (`[C, H, W]`,
//! applied at every position). Ops are parsed from the command line (`--op "scale 3=2,7=0"`)
//! or from an edit TOML file (`ops = ["zero 1,2", "binarize"]`).
pub mod pose;
mod run;

pub use run::{edit, read_ops_file, EditOptions, EditOutput, PoseReading};

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

fn units_list(s: &str) -> Result<Vec<usize>> {
    s.split(',').filter(|t| !t.trim().is_empty()).map(|t| t.trim().parse().with_context(|| format!("'{t}' is not a unit index"))).collect()
}

fn unit_values(s: &str) -> Result<Vec<(usize, f32)>> {
    s.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            let (u, v) = t.split_once('=').with_context(|| format!("'{t}' should be UNIT=VALUE"))?;
            Ok((u.trim().parse().with_context(|| format!("'{u}' is not a unit index"))?, v.trim().parse().with_context(|| format!("'{v}' is not a number"))?))
        })
        .collect()
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
                let steps = flag("--steps").map(|s| s.parse()).transpose().with_context(|| format!("bad --steps in '{text}'"))?.unwrap_or(8);
                match (words.get(1), words.get(2)) {
                    (Some(a), Some(b)) if !a.starts_with("--") && !b.starts_with("--") => EditOp::Interpolate { a: a.to_string(), b: b.to_string(), steps },
                    _ => bail!("'{text}': expected `interpolate A B --steps N`"),
                }
            }
            Some("scale") => EditOp::Scale(unit_values(&rest)?),
            Some("set") => EditOp::Set(unit_values(&rest)?),
            Some("zero") => EditOp::Zero(units_list(&rest)?),
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
                    bail!("'{text}': expected `add A - B + C`");
                }
                EditOp::Add(terms)
            }
            Some("binarize") => EditOp::Binarize,
            Some("dropout") => {
                let p: f32 = words.get(1).with_context(|| format!("'{text}': expected `dropout P`"))?.parse().with_context(|| format!("'{text}': P must be a number"))?;
                if !(0.0..1.0).contains(&p) {
                    bail!("dropout probability {p} must be in [0, 1)");
                }
                EditOp::Dropout { p, seed }
            }
            Some("random") => {
                let count = flag("--count").map(|s| s.parse()).transpose().with_context(|| format!("bad --count in '{text}'"))?.unwrap_or(8);
                EditOp::Random { count, seed }
            }
            Some("pose") => {
                let arg = words.get(1).with_context(|| format!("'{text}': expected `pose AZ[,EL]`"))?;
                let mut parts = arg.split(',');
                let azimuth = parts.next().unwrap().parse().with_context(|| format!("'{arg}': azimuth must be a number"))?;
                let elevation = parts.next().map(|e| e.parse()).transpose().with_context(|| format!("'{arg}': elevation must be a number"))?;
                let steps = flag("--steps").map(|s| s.parse()).transpose().with_context(|| format!("bad --steps in '{text}'"))?.unwrap_or(pose::STEPS);
                let keep = flag("--keep").map(|s| s.parse()).transpose().with_context(|| format!("bad --keep in '{text}'"))?.unwrap_or(pose::KEEP);
                EditOp::Pose { azimuth, elevation, steps, keep }
            }
            _ => bail!("unknown edit op '{text}'; ops: interpolate, scale, set, zero, add, binarize, dropout, random, pose"),
        };
        Ok(op)
    }
}

/// Codes of one tap: `rows` codes of `shape` (without the batch dimension).
pub struct Codes<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl Codes<'_> {
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim().max(1)
    }
    pub fn row(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.data[i * d..(i + 1) * d]
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
/// id named in the op to its row. Returns the edited codes, one or more per op.
pub fn apply(op: &EditOp, codes: &Codes, selected: &[usize], ids: &[String], id_of: &dyn Fn(&str) -> Result<usize>) -> Result<Vec<Edited>> {
    let mut out = Vec::new();
    match op {
        EditOp::Interpolate { a, b, steps } => {
            if *steps < 2 {
                bail!("interpolate needs --steps of at least 2, got {steps}");
            }
            let (ra, rb) = (codes.row(id_of(a)?), codes.row(id_of(b)?));
            for s in 0..*steps {
                let t = s as f32 / (*steps - 1) as f32;
                out.push(Edited { label: format!("interp_{s:02}_t{t:.2}"), code: ra.iter().zip(rb).map(|(x, y)| (1.0 - t) * x + t * y).collect() });
            }
        }
        EditOp::Add(terms) => {
            let mut c = vec![0.0; codes.dim()];
            for (sign, id) in terms {
                for (v, x) in c.iter_mut().zip(codes.row(id_of(id)?)) {
                    *v += sign * x;
                }
            }
            let label = terms.iter().map(|(s, id)| format!("{}{}", if *s < 0.0 { "-" } else { "+" }, file_label(id))).collect::<String>();
            out.push(Edited { label: format!("add{label}"), code: c });
        }
        EditOp::Random { count, seed } => {
            let mut rng = Rng::new(*seed);
            let n = codes.rows();
            for k in 0..*count {
                let code = (0..codes.dim()).map(|i| codes.data[rng.below(n) * codes.dim() + i]).collect();
                out.push(Edited { label: format!("random_{k:02}"), code });
            }
        }
        EditOp::Pose { .. } => bail!("pose edits need the encoder; use `preimage edit` with a posenet decoder"),
        _ => {
            for &r in selected {
                out.push(Edited { label: file_label(&ids[r]), code: apply_row(op, codes, codes.row(r))? });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes() -> (Vec<usize>, Vec<f32>) {
        // 3 rows of spatial codes [2 channels, 1, 2].
        (vec![2, 1, 2], vec![1.0, 2.0, 0.0, 4.0, /**/ -1.0, 3.0, 5.0, 0.0, /**/ 0.0, 0.0, 1.0, 1.0])
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
    }

    #[test]
    fn row_ops_act_on_channels() {
        let (shape, data) = codes();
        let c = Codes { shape: &shape, data: &data };
        let row = c.row(0).to_vec();
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

    #[test]
    fn multi_row_ops() {
        let (shape, data) = codes();
        let c = Codes { shape: &shape, data: &data };
        let ids: Vec<String> = vec!["a".into(), "b".into(), "c".into()];
        let id_of = |s: &str| ids.iter().position(|i| i == s).ok_or_else(|| anyhow::anyhow!("no id {s}"));
        let e = apply(&EditOp::Interpolate { a: "a".into(), b: "b".into(), steps: 3 }, &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].code, c.row(0));
        assert_eq!(e[1].code, vec![0.0, 2.5, 2.5, 2.0]);
        assert_eq!(e[2].code, c.row(1));
        let e = apply(&EditOp::Add(vec![(1.0, "a".into()), (-1.0, "b".into()), (1.0, "c".into())]), &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e[0].code, vec![2.0, -1.0, -4.0, 5.0]);
        assert!(apply(&EditOp::Add(vec![(1.0, "zz".into())]), &c, &[], &ids, &id_of).is_err());
        // Random codes: every value of unit position i comes from some row at position i.
        let e = apply(&EditOp::Random { count: 5, seed: 2 }, &c, &[], &ids, &id_of).unwrap();
        assert_eq!(e.len(), 5);
        for r in &e {
            for (i, v) in r.code.iter().enumerate() {
                assert!((0..3).any(|row| c.row(row)[i] == *v));
            }
        }
    }
}
