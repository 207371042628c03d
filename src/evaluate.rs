//! Scoring reconstructions against their originals: the image metrics of [`crate::metrics`]
//! plus, when the frozen encoder is at hand, what it reads from both: the relative feature
//! error at the inverted tap, top-1 agreement of the classes (the network's class for the
//! original, so a 1.0 means the reconstruction keeps what the network saw) and, for posenet,
//! the median azimuth difference. One path for decoder validation, quality tables and
//! `compare`.
use crate::encoder::ConvNet;
use crate::metrics::{pair_distance, Accumulator, ClassRef, Images, Metrics, PoseRef};
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

pub struct Evaluator<'a, B: Backend> {
    encoder: Option<&'a ConvNet<B>>,
    tap: String,
    acc: Accumulator,
    /// Originals seen so far (for the random-pair distance that normalizes the image error).
    originals: Vec<f32>,
    item: [usize; 3],
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
}

impl<'a, B: Backend> Evaluator<'a, B> {
    /// `encoder`: the frozen encoder whose tap `tap` was inverted (None: image metrics only).
    pub fn new(encoder: Option<&'a ConvNet<B>>, tap: &str) -> Self {
        Self { encoder, tap: tap.to_string(), acc: Accumulator::default(), originals: Vec::new(), item: [0; 3] }
    }

    /// Add a batch: reconstructions and originals `[n, 3, h, w]` in `[0,1]`; `symmetry` is each
    /// image's rotational symmetry order (posenet pose; 1 when unknown).
    pub fn add(&mut self, recon: Tensor<B, 4>, orig: Tensor<B, 4>, symmetry: &[u32]) -> Result<()> {
        let [n, c, h, w] = orig.dims();
        self.item = [c, h, w];
        let recon = recon.clamp(0.0, 1.0);
        let (r, o) = (to_vec(recon.clone()), to_vec(orig.clone()));
        self.acc.add_images(Images::new(&r, [n, c, h, w])?, Images::new(&o, [n, c, h, w])?)?;
        self.originals.extend_from_slice(&o);
        let Some(enc) = self.encoder else { return Ok(()) };
        let taps = enc.spec.taps();
        let mut want = vec![self.tap.as_str()];
        for extra in ["fc8", "pose"] {
            if taps.iter().any(|t| t == extra) && self.tap != extra {
                want.push(extra);
            }
        }
        let mut ra = enc.encode(recon, &want, false)?;
        let mut oa = enc.encode(orig, &want, false)?;
        let mut take = |name: &str| (to_vec(ra.remove(name).unwrap().flat()), to_vec(oa.remove(name).unwrap().flat()));
        let (rf, of) = take(&self.tap);
        self.acc.add_features(&rf, &of, rf.len() / n)?;
        let classes = enc.spec.num_classes();
        let logits = if self.tap == "fc8" { Some((rf.clone(), of.clone())) } else if want.contains(&"fc8") { Some(take("fc8")) } else { None };
        if let Some((rl, ol)) = logits.filter(|_| classes > 0) {
            self.acc.add_classes(&rl, classes, ClassRef::Logits(&ol))?;
        }
        let pose = if self.tap == "pose" { Some((rf, of)) } else if want.contains(&"pose") { Some(take("pose")) } else { None };
        if let Some((rp, op)) = pose {
            self.acc.add_pose(&rp, PoseRef::Rows(&op), symmetry)?;
        }
        Ok(())
    }

    /// The set's metrics (the image error normalized by random pairs drawn from `seed`).
    pub fn finish(&self, seed: u64) -> Result<Metrics> {
        let n = self.originals.len() / self.item.iter().product::<usize>().max(1);
        let pd = if n >= 2 { Some(pair_distance(Images::new(&self.originals, [n, self.item[0], self.item[1], self.item[2]])?, seed)?) } else { None };
        Ok(self.acc.finish(pd))
    }
}
