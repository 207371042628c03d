//! What the encoder sees in images: its top classes, and its accuracy on a class-folder set.
//! The check a PyTorch user runs first on a weights file ("does it call the goldfish a
//! goldfish?") before inverting its codes.
use crate::data::folder::ImageFolder;
use crate::encoder::Loaded;
use anyhow::{bail, Result};
use burn::tensor::backend::Backend;
use std::fmt::Write as _;

/// One image's top classes, best first: (class index, probability).
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    pub id: String,
    /// The image's class as an index into the network's classes, where the folder gives one
    /// that maps to them (see [`label_map`]).
    pub label: Option<usize>,
    pub top: Vec<(usize, f32)>,
}

/// Top-1 and top-k accuracy over the predictions that have a label.
#[derive(Clone, Debug, PartialEq)]
pub struct Accuracy {
    pub count: usize,
    pub top1: f64,
    pub topk: f64,
    pub k: usize,
}

/// The network's class of each folder class, and how it was found.
#[derive(Clone, Debug, PartialEq)]
pub enum LabelMap {
    /// Each folder named as one of the network's classes (any case).
    ByName(Vec<usize>),
    /// No folder named as a class, but as many folders as classes: taken in order.
    ByPosition(usize),
}

impl LabelMap {
    /// The network's class of folder class `i`.
    pub fn get(&self, i: usize) -> Option<usize> {
        match self {
            LabelMap::ByName(m) => m.get(i).copied(),
            LabelMap::ByPosition(n) => (i < *n).then_some(i),
        }
    }
}

/// How the folder's classes map to the network's: each by name (any case), or, when none
/// matches by name but there are as many (ImageNet's `n01440764`-style folders, whose sorted
/// order is torchvision's class order), by position; the reason otherwise.
pub fn label_map(folder_classes: &[String], net_classes: &[String]) -> std::result::Result<LabelMap, String> {
    let by_name: Vec<Option<usize>> = folder_classes.iter().map(|c| net_classes.iter().position(|n| n.eq_ignore_ascii_case(c))).collect();
    if by_name.iter().all(Option::is_some) {
        return Ok(LabelMap::ByName(by_name.into_iter().flatten().collect()));
    }
    if by_name.iter().all(Option::is_none) && folder_classes.len() == net_classes.len() {
        return Ok(LabelMap::ByPosition(folder_classes.len()));
    }
    let unknown: Vec<&str> = folder_classes.iter().zip(&by_name).filter(|(_, m)| m.is_none()).map(|(c, _)| c.as_str()).take(5).collect();
    Err(format!(
        "the folder's classes are not the network's ({} of {} not among its {} classes, e.g. {}), so there is no accuracy",
        by_name.iter().filter(|m| m.is_none()).count(),
        folder_classes.len(),
        net_classes.len(),
        unknown.join(", ")
    ))
}

/// Softmax of `logits` and its `k` largest entries, best first (ties: lower index first).
pub fn top_k(logits: &[f32], k: usize) -> Vec<(usize, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&v| ((v - max) as f64).exp()).collect();
    let sum: f64 = exp.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order.into_iter().take(k).map(|i| (i, (exp[i] / sum) as f32)).collect()
}

/// The `k` top classes of every readable image of `folder` (`fc8`, the logits), with its label
/// where the folder's classes map to the network's, or where a list gives class numbers (they
/// index the network's classes); the reason when they do not.
pub fn classify<B: Backend>(enc: &Loaded<B>, folder: &ImageFolder, k: usize, batch_size: usize, device: &B::Device) -> Result<(Vec<Prediction>, Option<String>)> {
    let spec = &enc.net.spec;
    if !spec.taps().iter().any(|t| t == "fc8") {
        bail!("{} has no fc8 (class logits) to classify with", spec.arch);
    }
    let file = crate::extract::extract(enc, folder, &["fc8".to_string()], batch_size, device)?;
    let logits = file.codes["fc8"].to_f32();
    let n_classes = spec.classes.len();
    let (map, note) = match (&file.labels, folder.classes.is_empty()) {
        (Some(_), false) => match label_map(&folder.classes, &spec.classes) {
            Ok(m @ LabelMap::ByName(_)) => (Some(m), None),
            Ok(m @ LabelMap::ByPosition(n)) => (Some(m), Some(format!("no class folder is named as one of the network's classes; the {n} folders are taken in order as its classes (ImageNet's n01440764-style folders)"))),
            Err(why) => (None, Some(why)),
        },
        // A list's class numbers (Caffe's `val.txt`) are the network's class indices.
        (Some(labels), true) => {
            let outside = labels.iter().filter(|&&l| l >= n_classes as i64).count();
            let note = (outside > 0).then(|| {
                let (s, have) = if outside == 1 { ("", "has") } else { ("s", "have") };
                format!("{outside} image{s} {have} class numbers beyond the network's {n_classes} classes; left out of the accuracy")
            });
            (Some(LabelMap::ByPosition(n_classes)), note)
        }
        _ => (None, None),
    };
    let predictions = file
        .ids
        .iter()
        .enumerate()
        .map(|(i, id)| Prediction {
            id: id.clone(),
            label: map.as_ref().zip(file.labels.as_ref()).and_then(|(m, l)| usize::try_from(l[i]).ok().and_then(|l| m.get(l))),
            top: top_k(&logits[i * n_classes..(i + 1) * n_classes], k.max(1)),
        })
        .collect();
    Ok((predictions, note))
}

/// Accuracy over the labelled predictions (`None` when none has a label).
pub fn accuracy(predictions: &[Prediction]) -> Option<Accuracy> {
    let labelled: Vec<&Prediction> = predictions.iter().filter(|p| p.label.is_some()).collect();
    let k = predictions.first().map_or(1, |p| p.top.len());
    if labelled.is_empty() {
        return None;
    }
    let hits = |within: usize| labelled.iter().filter(|p| p.top.iter().take(within).any(|&(c, _)| Some(c) == p.label)).count() as f64 / labelled.len() as f64;
    Some(Accuracy { count: labelled.len(), top1: hits(1), topk: hits(k), k })
}

/// `id,label,class_1,p_1,...,class_k,p_k` (class names; label empty where unknown), one row
/// per image; commas in names are quoted.
pub fn csv(predictions: &[Prediction], classes: &[String]) -> String {
    let quote = |s: &str| if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() };
    let k = predictions.first().map_or(0, |p| p.top.len());
    let mut out = String::from("id,label");
    for i in 1..=k {
        let _ = write!(out, ",class_{i},p_{i}");
    }
    out.push('\n');
    for p in predictions {
        let _ = write!(out, "{},{}", quote(&p.id), p.label.map(|l| quote(&classes[l])).unwrap_or_default());
        for &(c, prob) in &p.top {
            let _ = write!(out, ",{},{prob:.6}", quote(&classes[c]));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn top_k_is_the_softmax_best_first() {
        let t = top_k(&[1.0, 3.0, 2.0, 3.0], 3);
        let e: Vec<f64> = [1.0f64, 3.0, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let sum: f64 = e.iter().sum();
        assert_eq!(t.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 3, 2]);
        for (i, p) in t {
            assert!((p as f64 - e[i] / sum).abs() < 1e-6);
        }
        // Huge logits do not overflow.
        assert!((top_k(&[1000.0, 0.0], 1)[0].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn folder_classes_map_by_name_or_by_position() {
        let net = names(&["tench", "goldfish", "great white shark"]);
        assert_eq!(label_map(&names(&["Goldfish", "tench"]), &net), Ok(LabelMap::ByName(vec![1, 0])));
        let wnids = label_map(&names(&["n01440764", "n01443537", "n01484850"]), &net).unwrap();
        assert_eq!(wnids, LabelMap::ByPosition(3));
        assert_eq!((wnids.get(2), wnids.get(3)), (Some(2), None));
        let err = label_map(&names(&["goldfish", "cat"]), &net).unwrap_err();
        assert!(err.contains("1 of 2") && err.contains("cat"), "{err}");
        assert!(label_map(&names(&["a", "b"]), &net).is_err(), "neither names nor the count match");
    }

    #[test]
    fn accuracy_counts_labelled_images_and_csv_names_classes() {
        let p = |label, top: &[usize]| Prediction { id: "x,1".into(), label, top: top.iter().map(|&c| (c, 0.5)).collect() };
        let preds = vec![p(Some(0), &[0, 1]), p(Some(1), &[0, 1]), p(Some(2), &[0, 1]), p(None, &[2, 0])];
        let a = accuracy(&preds).unwrap();
        assert_eq!((a.count, a.k), (3, 2));
        assert!((a.top1 - 1.0 / 3.0).abs() < 1e-12 && (a.topk - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(accuracy(&[p(None, &[0])]), None);
        let text = csv(&preds[..1], &names(&["a", "b, c", "d"]));
        assert_eq!(text, "id,label,class_1,p_1,class_2,p_2\n\"x,1\",a,a,0.500000,\"b, c\",0.500000\n");
    }
}
