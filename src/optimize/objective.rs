//! Objectives: what an optimization minimizes, built as weighted sums of terms with Lucid's
//! algebra (`feature(..) + 0.1 * tv(2.0, nat)`). Every term yields one value per batch item;
//! the loss is the weighted sum over terms and items, so items never influence each other and
//! one batch can hold many independent problems (one visualization target per image).
//!
//! "Maximize" terms (activations, layer L2, caricature) are written as their negatives, so
//! the solver always minimizes.
use crate::encoder::Act;
use anyhow::{bail, Context, Result};
use burn::tensor::activation::{log_softmax, relu};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use std::collections::BTreeMap;
use std::ops::{Add, Mul, Sub};

/// M&V's natural image scale: pixels are measured as `255·(x − mean)` (Caffe's mean-subtracted
/// 0–255 range) and the regularizers are normalized by `B`, the typical pixel norm (80 for
/// ImageNet), so their default weights are 1 whatever the image size.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Natural {
    pub mean: [f32; 3],
    pub b: f32,
}

impl Natural {
    pub fn new(mean: [f32; 3], b: f32) -> Self {
        Natural { mean, b }
    }
    /// `255·(x − mean)`.
    fn apply<B: Backend>(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mean = Tensor::<B, 1>::from_data(TensorData::new(self.mean.to_vec(), [3]), &x.device()).reshape([1, 3, 1, 1]);
        (x - mean) * 255.0
    }
}

/// One objective term. Targets are constants (no gradient); `[N, D]` rows match batch items.
#[derive(Clone, Debug)]
pub enum Term<B: Backend> {
    /// ‖Φ(x) − Φ₀‖² / ‖Φ₀‖² at a tap (Mahendran & Vedaldi); the weight is their C.
    FeatureMatch { tap: String, target: Tensor<B, 2> },
    /// −⟨Φ(x), S⟩: `S` selects a neuron, a channel's spatial mean or a class logit per item.
    Activation { tap: String, select: Tensor<B, 2>, label: String },
    /// −mean Φ(x)² at a tap (DeepDream's objective).
    LayerL2 { tap: String },
    /// −⟨Φ(x), Φ₀⟩ / ‖Φ₀‖²: exaggerate what the tap sees in the original (M&V caricature).
    Caricature { tap: String, target: Tensor<B, 2> },
    /// mean (Φ(x) − Φc)²: content of another image (Gatys et al.).
    Content { tap: String, target: Tensor<B, 2> },
    /// Σ_taps mean (G(x) − Gs)², G = F Fᵀ / (H·W) per item (Gatys et al.).
    Style { taps: Vec<String>, grams: Vec<Tensor<B, 3>> },
    /// Softmax cross-entropy of the logits at `tap` toward one class per item
    /// (raises the target logit and pushes the others down). `onehot` is `[N, K]`.
    ClassTarget { tap: String, onehot: Tensor<B, 2>, label: String },
    /// M&V's TV^β: mean over pixels of Σ_c (Δx² + Δy²)^{β/2} / V^β in natural scale, V = B/6.5.
    TotalVariation { beta: f32, natural: Natural },
    /// M&V's α-norm: mean over pixels of ‖x(v)‖^α / B^α in natural scale.
    AlphaNorm { alpha: f32, natural: Natural },
    /// Stay close to the original, counting only pixels whose change exceeds `threshold`
    /// (fraction of the `[0,1]` range): mean relu(|x − x₀| − t)² / t².
    Similarity { original: Tensor<B, 4>, threshold: f32 },
}

impl<B: Backend> Term<B> {
    /// Short name for logs: `feature(conv5)`, `tv(2)`...
    pub fn name(&self) -> String {
        match self {
            Term::FeatureMatch { tap, .. } => format!("feature({tap})"),
            Term::Activation { label, .. } => format!("activation({label})"),
            Term::LayerL2 { tap } => format!("l2({tap})"),
            Term::Caricature { tap, .. } => format!("caricature({tap})"),
            Term::Content { tap, .. } => format!("content({tap})"),
            Term::Style { taps, .. } => format!("style({})", taps.join(",")),
            Term::ClassTarget { label, .. } => format!("class({label})"),
            Term::TotalVariation { beta, .. } => format!("tv({beta})"),
            Term::AlphaNorm { alpha, .. } => format!("alpha({alpha})"),
            Term::Similarity { threshold, .. } => format!("similarity({threshold})"),
        }
    }

    /// Encoder taps this term reads.
    pub fn taps(&self) -> Vec<String> {
        match self {
            Term::FeatureMatch { tap, .. }
            | Term::Activation { tap, .. }
            | Term::LayerL2 { tap }
            | Term::Caricature { tap, .. }
            | Term::Content { tap, .. }
            | Term::ClassTarget { tap, .. } => vec![tap.clone()],
            Term::Style { taps, .. } => taps.clone(),
            _ => vec![],
        }
    }

    /// Per-item values `[N]` for `image` (the untransformed image in `[0,1]`) and the
    /// activations of its (possibly transformed) version.
    pub fn eval(&self, image: &Tensor<B, 4>, acts: &BTreeMap<String, Act<B>>) -> Result<Tensor<B, 1>> {
        let flat = |tap: &str| -> Result<Tensor<B, 2>> {
            match acts.get(tap) {
                Some(a) => Ok(a.clone().flat()),
                None => bail!("objective needs tap '{tap}' but it was not computed"),
            }
        };
        let n = image.dims()[0];
        Ok(match self {
            Term::FeatureMatch { tap, target } => {
                let f = flat(tap)?;
                let num = (f - target.clone()).powf_scalar(2.0).sum_dim(1);
                (num / (target.clone().powf_scalar(2.0).sum_dim(1) + 1e-12)).reshape([n])
            }
            Term::Activation { tap, select, .. } => (flat(tap)? * select.clone()).sum_dim(1).reshape([n]).neg(),
            Term::LayerL2 { tap } => flat(tap)?.powf_scalar(2.0).mean_dim(1).reshape([n]).neg(),
            Term::Caricature { tap, target } => {
                let dot = (flat(tap)? * target.clone()).sum_dim(1);
                (dot / (target.clone().powf_scalar(2.0).sum_dim(1) + 1e-12)).reshape([n]).neg()
            }
            Term::Content { tap, target } => (flat(tap)? - target.clone()).powf_scalar(2.0).mean_dim(1).reshape([n]),
            Term::Style { taps, grams } => {
                let mut total = Tensor::<B, 1>::zeros([n], &image.device());
                for (tap, g0) in taps.iter().zip(grams) {
                    let map = match acts.get(tap) {
                        Some(Act::Map(t)) => t.clone(),
                        Some(Act::Vec(_)) => bail!("style needs convolutional taps; '{tap}' is a vector"),
                        None => bail!("objective needs tap '{tap}' but it was not computed"),
                    };
                    let g = gram(map);
                    total = total + (g - g0.clone()).powf_scalar(2.0).mean_dims(&[1, 2]).reshape([n]);
                }
                total
            }
            Term::ClassTarget { tap, onehot, .. } => (log_softmax(flat(tap)?, 1) * onehot.clone()).sum_dim(1).reshape([n]).neg(),
            Term::TotalVariation { beta, natural } => {
                let x = natural.apply(image.clone());
                let [_, c, h, w] = x.dims();
                let base = x.clone().slice([0..n, 0..c, 0..h - 1, 0..w - 1]);
                let dx = x.clone().slice([0..n, 0..c, 0..h - 1, 1..w]) - base.clone();
                let dy = x.slice([0..n, 0..c, 1..h, 0..w - 1]) - base;
                let v = natural.b / 6.5;
                // The small offset keeps the gradient finite where the image is flat (β < 2).
                let d = (dx.powf_scalar(2.0) + dy.powf_scalar(2.0)) / (v * v) + 1e-8;
                d.powf_scalar(beta / 2.0).sum_dim(1).mean_dims(&[2, 3]).reshape([n])
            }
            Term::AlphaNorm { alpha, natural } => {
                let x = natural.apply(image.clone()) / natural.b;
                (x.powf_scalar(2.0).sum_dim(1) + 1e-8).powf_scalar(alpha / 2.0).mean_dims(&[2, 3]).reshape([n])
            }
            Term::Similarity { original, threshold } => {
                let excess = relu((image.clone() - original.clone()).abs() - *threshold) / threshold.max(1e-6);
                excess.powf_scalar(2.0).mean_dims(&[1, 2, 3]).reshape([n])
            }
        })
    }
}

/// Gram matrices `[N, C, C]` of `[N, C, H, W]` maps, normalized by H·W.
pub fn gram<B: Backend>(map: Tensor<B, 4>) -> Tensor<B, 3> {
    let [n, c, h, w] = map.dims();
    let f = map.reshape([n, c, h * w]);
    f.clone().matmul(f.swap_dims(1, 2)) / (h * w) as f32
}

/// A weighted sum of terms.
#[derive(Clone, Debug)]
pub struct Objective<B: Backend> {
    pub terms: Vec<(f32, Term<B>)>,
}

/// Values of one evaluation: the scalar loss (for backward) and each weighted term's
/// per-item values (for logs and stopping rules).
pub struct Evaluated<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub terms: Vec<(String, f32, Tensor<B, 1>)>,
}

impl<B: Backend> Objective<B> {
    pub fn empty() -> Self {
        Objective { terms: Vec::new() }
    }

    /// Encoder taps any term reads, without repeats, in first-use order.
    pub fn taps(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for (_, t) in &self.terms {
            for tap in t.taps() {
                if !out.contains(&tap) {
                    out.push(tap);
                }
            }
        }
        out
    }

    /// Terms with a zero weight are skipped (presets switch terms off that way).
    pub fn eval(&self, image: &Tensor<B, 4>, acts: &BTreeMap<String, Act<B>>) -> Result<Evaluated<B>> {
        let mut loss = Tensor::<B, 1>::zeros([1], &image.device());
        let mut terms = Vec::new();
        for (w, t) in &self.terms {
            if *w == 0.0 {
                continue;
            }
            let v = t.eval(image, acts)?;
            loss = loss + v.clone().sum() * *w;
            terms.push((t.name(), *w, v));
        }
        Ok(Evaluated { loss, terms })
    }

    /// Drop zero-weight terms (so that their taps are not computed).
    pub fn pruned(self) -> Self {
        Objective { terms: self.terms.into_iter().filter(|(w, _)| *w != 0.0).collect() }
    }
}

impl<B: Backend> From<Term<B>> for Objective<B> {
    fn from(t: Term<B>) -> Self {
        Objective { terms: vec![(1.0, t)] }
    }
}

impl<B: Backend> Add for Objective<B> {
    type Output = Objective<B>;
    fn add(mut self, rhs: Objective<B>) -> Objective<B> {
        self.terms.extend(rhs.terms);
        self
    }
}

impl<B: Backend> Sub for Objective<B> {
    type Output = Objective<B>;
    fn sub(self, rhs: Objective<B>) -> Objective<B> {
        self + (-1.0 * rhs)
    }
}

impl<B: Backend> Mul<f32> for Objective<B> {
    type Output = Objective<B>;
    fn mul(mut self, k: f32) -> Objective<B> {
        for (w, _) in &mut self.terms {
            *w *= k;
        }
        self
    }
}

impl<B: Backend> Mul<Objective<B>> for f32 {
    type Output = Objective<B>;
    fn mul(self, o: Objective<B>) -> Objective<B> {
        o * self
    }
}

// Constructors, so that objectives read like the papers: `feature(..) + 0.1 * tv(..)`.

pub fn feature<B: Backend>(tap: &str, target: Tensor<B, 2>) -> Objective<B> {
    Term::FeatureMatch { tap: tap.into(), target }.into()
}
pub fn activation<B: Backend>(tap: &str, select: Tensor<B, 2>, label: &str) -> Objective<B> {
    Term::Activation { tap: tap.into(), select, label: label.into() }.into()
}
pub fn layer_l2<B: Backend>(tap: &str) -> Objective<B> {
    Term::LayerL2 { tap: tap.into() }.into()
}
pub fn caricature<B: Backend>(tap: &str, target: Tensor<B, 2>) -> Objective<B> {
    Term::Caricature { tap: tap.into(), target }.into()
}
pub fn content<B: Backend>(tap: &str, target: Tensor<B, 2>) -> Objective<B> {
    Term::Content { tap: tap.into(), target }.into()
}
pub fn style<B: Backend>(taps: &[String], grams: Vec<Tensor<B, 3>>) -> Objective<B> {
    Term::Style { taps: taps.to_vec(), grams }.into()
}
pub fn class_target<B: Backend>(tap: &str, onehot: Tensor<B, 2>, label: &str) -> Objective<B> {
    Term::ClassTarget { tap: tap.into(), onehot, label: label.into() }.into()
}
pub fn tv<B: Backend>(beta: f32, natural: Natural) -> Objective<B> {
    Term::TotalVariation { beta, natural }.into()
}
pub fn alpha_norm<B: Backend>(alpha: f32, natural: Natural) -> Objective<B> {
    Term::AlphaNorm { alpha, natural }.into()
}
pub fn similarity<B: Backend>(original: Tensor<B, 4>, threshold: f32) -> Objective<B> {
    Term::Similarity { original, threshold }.into()
}

/// Which unit an activation term maximizes.
#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    pub tap: String,
    /// Channel (conv taps) or index (vector taps: fc units, class logits).
    pub index: usize,
    /// `(y, x)` for one neuron of a conv map; `None` = the channel's spatial mean.
    pub pos: Option<(usize, usize)>,
    /// As written by the user (for file names and logs).
    pub label: String,
}

impl Unit {
    /// Parse `TAP:INDEX`, `TAP:CLASS_NAME` (class taps) or `TAP:CHANNEL@Y:X`, checking the
    /// tap, the index range and the position against the encoder. Errors name the valid range.
    pub fn parse(text: &str, spec: &crate::encoder::EncoderSpec) -> Result<Unit> {
        let Some((tap, rest)) = text.split_once(':') else {
            bail!("target '{text}' must be TAP:INDEX, TAP:CLASS or TAP:CHANNEL@Y:X (e.g. fc8:3, conv5:12@2:2)");
        };
        let tap = tap.trim();
        spec.check_tap(tap)?;
        let shapes = spec.tap_shapes()?;
        let shape = &shapes[tap];
        let (idx_text, pos_text) = match rest.split_once('@') {
            Some((i, p)) => (i.trim(), Some(p.trim())),
            None => (rest.trim(), None),
        };
        let count = shape[0];
        let class_tap = shape.len() == 1 && count == spec.classes.len() && (tap == "fc8" || tap == "prob");
        let index = match idx_text.parse::<usize>() {
            Ok(i) => i,
            Err(_) if class_tap => class_index(idx_text, &spec.classes)?,
            Err(_) => bail!("target '{text}': '{idx_text}' is not a unit index of {tap} (0..={})", count - 1),
        };
        if index >= count {
            let what = if shape.len() == 3 { "channel" } else { "unit" };
            bail!("target '{text}': {what} {index} is out of range for {tap}: valid 0..={} ({count} {what}s)", count - 1);
        }
        let pos = match pos_text {
            None => None,
            Some(p) => {
                if shape.len() != 3 {
                    bail!("target '{text}': {tap} is a vector ({count} units) and has no spatial position");
                }
                let (h, w) = (shape[1], shape[2]);
                let parsed = p.split_once([':', ',']).and_then(|(y, x)| Some((y.trim().parse::<usize>().ok()?, x.trim().parse::<usize>().ok()?)));
                match parsed {
                    Some((y, x)) if y < h && x < w => Some((y, x)),
                    Some((y, x)) => bail!("target '{text}': position ({y},{x}) is outside {tap}'s {h}×{w} map: y in 0..={}, x in 0..={}", h - 1, w - 1),
                    None => bail!("target '{text}': position '{p}' must be Y:X"),
                }
            }
        };
        Ok(Unit { tap: tap.to_string(), index, pos, label: text.to_string() })
    }

    /// The selection row (length D = the tap's flattened size) for [`Term::Activation`].
    pub fn select_row(&self, shape: &[usize]) -> Vec<f32> {
        let d: usize = shape.iter().product();
        let mut row = vec![0.0f32; d];
        if shape.len() == 3 {
            let (h, w) = (shape[1], shape[2]);
            match self.pos {
                Some((y, x)) => row[self.index * h * w + y * w + x] = 1.0,
                None => row[self.index * h * w..(self.index + 1) * h * w].fill(1.0 / (h * w) as f32),
            }
        } else {
            row[self.index] = 1.0;
        }
        row
    }
}

/// A `visualize` target: one unit, or a weighted sum of units (Lucid's objective algebra, as
/// its neuron-interaction pictures: `conv5:12+conv5:30`, `fc8:chair-0.5*fc8:table`, and
/// `-conv5:3` to minimize). Each term is `[±][W*]UNIT`.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub terms: Vec<(f32, Unit)>,
    /// As written by the user (for file names and logs).
    pub label: String,
}

impl Target {
    /// Parse a target; a `+` or `-` starts a term only where a tap of the encoder follows
    /// (after an optional `W*`), so class names with dashes (`fc8:jack-o'-lantern`) and index
    /// ranges stay whole.
    pub fn parse(text: &str, spec: &crate::encoder::EncoderSpec) -> Result<Target> {
        let unweighted = |t: &str| -> (f32, String) {
            match t.split_once('*') {
                Some((w, rest)) if w.trim().parse::<f32>().is_ok() => (w.trim().parse().unwrap(), rest.trim().to_string()),
                _ => (1.0, t.trim().to_string()),
            }
        };
        let starts_term = |rest: &str| unweighted(rest).1.split_once(':').is_some_and(|(tap, _)| spec.check_tap(tap.trim()).is_ok());
        let mut pieces: Vec<(f32, &str)> = Vec::new();
        let (mut start, mut sign) = (0, 1.0f32);
        // A sign after a digit and `e` is an exponent's (`1e-3*conv5:1`).
        let exponent = |i: usize| text[..i].ends_with(['e', 'E']) && text[..i - 1].ends_with(|c: char| c.is_ascii_digit() || c == '.');
        for (i, c) in text.char_indices() {
            if (c == '+' || c == '-') && !exponent(i) && starts_term(&text[i + 1..]) {
                // A sign in front of the first term leaves nothing before it.
                if !(pieces.is_empty() && text[..i].trim().is_empty()) {
                    pieces.push((sign, &text[start..i]));
                }
                sign = if c == '-' { -1.0 } else { 1.0 };
                start = i + 1;
            }
        }
        pieces.push((sign, &text[start..]));
        let mut terms = Vec::new();
        for (sign, piece) in pieces {
            if piece.trim().is_empty() {
                bail!("target '{text}': an empty term (write TAP:INDEX+TAP:INDEX, W*TAP:INDEX)");
            }
            let (w, unit) = unweighted(piece);
            if !w.is_finite() {
                bail!("target '{text}': the weight of '{}' is not a finite number", piece.trim());
            }
            // A sum's term names itself in its error; the whole target is added where it differs.
            let unit = if unit.trim() == text.trim() { Unit::parse(&unit, spec)? } else { Unit::parse(&unit, spec).with_context(|| format!("in target '{text}'"))? };
            terms.push((sign * w, unit));
        }
        Ok(Target { terms, label: text.trim().to_string() })
    }

    /// One unit, weight 1.
    pub fn unit(unit: Unit) -> Self {
        Target { label: unit.label.clone(), terms: vec![(1.0, unit)] }
    }

    /// The taps its terms read, in order, once each.
    pub fn taps(&self) -> Vec<&str> {
        Target::taps_of(std::slice::from_ref(self))
    }

    /// The taps any of `targets` reads, in order, once each.
    pub fn taps_of(targets: &[Target]) -> Vec<&str> {
        let mut taps: Vec<&str> = Vec::new();
        for (_, u) in targets.iter().flat_map(|t| &t.terms) {
            if !taps.contains(&u.tap.as_str()) {
                taps.push(&u.tap);
            }
        }
        taps
    }

    /// The selection row at `tap` (`shape`: its code shape): the weighted sum of its terms'
    /// rows there, zeros where none reads it.
    pub fn select_row(&self, tap: &str, shape: &[usize]) -> Vec<f32> {
        let mut row = vec![0.0f32; shape.iter().product()];
        for (w, u) in self.terms.iter().filter(|(_, u)| u.tap == tap) {
            for (r, s) in row.iter_mut().zip(u.select_row(shape)) {
                *r += w * s;
            }
        }
        row
    }
}

/// A class given by name (any case) or index; errors list the classes whose names contain the
/// text, else the encoder's classes (or their range).
pub fn class_index(text: &str, classes: &[String]) -> Result<usize> {
    let text = text.trim();
    if let Some(i) = classes.iter().position(|c| c == text).or_else(|| classes.iter().position(|c| c.eq_ignore_ascii_case(text))) {
        // ImageNet names two classes each `crane` and `maillot`: say which is taken.
        let same: Vec<usize> = classes.iter().enumerate().filter(|(_, c)| c.eq_ignore_ascii_case(text)).map(|(j, _)| j).collect();
        if same.len() > 1 {
            eprintln!("note: classes {same:?} are all named '{text}'; taking {i} (give another by its index)");
        }
        return Ok(i);
    }
    if let Ok(i) = text.parse::<usize>() {
        if i < classes.len() {
            return Ok(i);
        }
        bail!("class index {i} is out of range: the encoder has {} classes (0..={})", classes.len(), classes.len() - 1);
    }
    // Classes containing the text, else any of its words ("tabby cat" finds "tabby").
    let lower = text.to_lowercase();
    let containing = |words: &[&str]| -> Vec<String> {
        classes.iter().enumerate().filter(|(_, c)| words.iter().any(|w| c.to_lowercase().contains(w))).map(|(i, c)| format!("{c} ({i})")).collect()
    };
    let mut close = if lower.is_empty() { Vec::new() } else { containing(&[lower.as_str()]) };
    if close.is_empty() {
        close = containing(&lower.split_whitespace().filter(|w| w.len() >= 3).collect::<Vec<_>>());
    }
    if !close.is_empty() {
        let more = if close.len() > 20 { format!(", ... ({} in all)", close.len()) } else { String::new() };
        bail!("class '{text}' is not one of the encoder's classes; those like it: {}{more}", close[..close.len().min(20)].join(", "));
    }
    let shown: Vec<&str> = classes.iter().take(30).map(String::as_str).collect();
    let more = if classes.len() > 30 { format!(", ... ({} in all)", classes.len()) } else { String::new() };
    bail!("class '{text}' is not one of the encoder's classes: {}{more} (or an index 0..={})", shown.join(", "), classes.len() - 1)
}
