//! Loss and metrics from a task's batch and a model's outputs.
//!
//! Every sum runs over scored positions only (mask = 1); for a `Blocks` output, over the scored
//! blocks of those positions (the decoded tokens: blocks whose one-hot target is not all zero),
//! which then take the place of positions below. Definitions:
//! * `loss`: the training loss averaged over scored positions (bits: BCE summed over the bits of a
//!   position; classes and blocks: cross-entropy; real: squared error averaged over the output
//!   width);
//! * `token_acc`: share of scored positions whose whole output is right (every bit, or the argmax);
//! * `seq_acc`: share of sequences with every scored position right;
//! * `bit_errors_per_seq` (bits): wrong bits per sequence, summed over its scored positions;
//! * `mse` and `within_tol` (real): mean squared error, and the share of values within the task's
//!   tolerance (0.04 for the adding problem).

use membench_tasks::{Batch, Inputs, OutputKind, Targets};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// A batch moved into tensors: x [B, T, W] f32 or [B, T] i64, y likewise, mask [B, T] f32.
pub struct BatchTensors {
    pub x: Tensor,
    pub y: Tensor,
    pub mask: Tensor,
}

impl BatchTensors {
    pub fn new(b: &Batch, device: Device) -> Self {
        let (bt, t) = (b.batch as i64, b.time as i64);
        let shaped = |flat: Tensor| {
            let n = flat.size()[0];
            if n == bt * t {
                flat.view([bt, t])
            } else {
                flat.view([bt, t, n / (bt * t).max(1)])
            }
        };
        let x = match &b.inputs {
            Inputs::Dense(v) => shaped(Tensor::from_slice(v)),
            Inputs::Tokens(v) => shaped(Tensor::from_slice(v)),
        };
        let y = match &b.targets {
            Targets::Bits(v) | Targets::Real(v) => {
                let w = v.len() as i64 / (bt * t).max(1);
                Tensor::from_slice(v).view([bt, t, w])
            }
            Targets::Classes(v) => Tensor::from_slice(v).view([bt, t]),
        };
        let mask = Tensor::from_slice(&b.mask).view([bt, t]);
        BatchTensors {
            x: x.to_device(device),
            y: y.to_device(device),
            mask: mask.to_device(device),
        }
    }
}

/// The scored units: the mask [B, T], or for a `Blocks` output a [B, T, blocks] weight that is 1
/// for each scored block (a one-hot target at a scored position).
fn scored(kind: OutputKind, bt: &BatchTensors) -> Tensor {
    match kind {
        OutputKind::Blocks { blocks, n } => {
            one_hot_blocks(&bt.y, blocks, n).sum_dim_intlist(-1, false, Kind::Float)
                * bt.mask.unsqueeze(-1)
        }
        _ => bt.mask.shallow_clone(),
    }
}

/// [B, T, blocks · n] viewed as [B, T, blocks, n].
fn one_hot_blocks(t: &Tensor, blocks: usize, n: usize) -> Tensor {
    let s = t.size();
    t.view([s[0], s[1], blocks as i64, n as i64])
}

/// Scalar training loss, averaged over scored positions (scored blocks for `Blocks`).
pub fn loss(kind: OutputKind, out: &Tensor, bt: &BatchTensors) -> Tensor {
    loss_over(kind, out, bt, &scored(kind, bt))
}

/// [`loss`] with the scored units already computed (`scored(kind, bt)`).
fn loss_over(kind: OutputKind, out: &Tensor, bt: &BatchTensors, units: &Tensor) -> Tensor {
    let count = units.sum(Kind::Float).clamp_min(1.0);
    let per_unit = match kind {
        OutputKind::Bits { .. } => out
            .binary_cross_entropy_with_logits::<Tensor>(&bt.y, None, None, tch::Reduction::None)
            .sum_dim_intlist(-1, false, out.kind()),
        OutputKind::Classes { n } => out
            .view([-1, n as i64])
            .cross_entropy_loss::<Tensor>(&bt.y.view([-1]), None, tch::Reduction::None, -100, 0.0)
            .view_as(&bt.mask),
        OutputKind::Real { .. } => (out - &bt.y).square().mean_dim(-1, false, out.kind()),
        OutputKind::Blocks { blocks, n } => -(one_hot_blocks(&bt.y, blocks, n)
            * one_hot_blocks(out, blocks, n).log_softmax(-1, out.kind()))
        .sum_dim_intlist(-1, false, out.kind()),
    };
    (per_unit * units).sum(out.kind()) / count
}

/// Running sums over evaluation batches; [`MetricSums::finish`] turns them into [`Metrics`].
#[derive(Debug, Default, Clone)]
pub struct MetricSums {
    loss: f64,
    positions: f64,
    sequences: f64,
    correct_positions: f64,
    correct_sequences: f64,
    bit_errors: f64,
    squared_error: f64,
    within_tol: f64,
    values: f64,
}

impl MetricSums {
    pub fn add(&mut self, kind: OutputKind, out: &Tensor, bt: &BatchTensors) {
        let _guard = tch::no_grad_guard();
        let mask = &bt.mask;
        let units = scored(kind, bt);
        let positions = units.sum(Kind::Float).double_value(&[]);
        self.loss += loss_over(kind, out, bt, &units).double_value(&[]) * positions;
        self.positions += positions;
        self.sequences += mask.size()[0] as f64;
        let wrong_per_position = match kind {
            OutputKind::Bits { .. } => {
                let wrong_bits =
                    out.gt(0.0).ne_tensor(&bt.y.gt(0.5)).to_kind(Kind::Float) * mask.unsqueeze(-1);
                self.bit_errors += wrong_bits.sum(Kind::Float).double_value(&[]);
                wrong_bits
                    .sum_dim_intlist(-1, false, Kind::Float)
                    .gt(0.0)
                    .to_kind(Kind::Float)
            }
            OutputKind::Classes { .. } => {
                out.argmax(-1, false).ne_tensor(&bt.y).to_kind(Kind::Float) * mask
            }
            OutputKind::Real { width, tolerance } => {
                let diff = out - &bt.y;
                let m3 = mask.unsqueeze(-1);
                self.squared_error += (diff.square() * &m3).sum(Kind::Float).double_value(&[]);
                let within = diff.abs().le(tolerance as f64).to_kind(Kind::Float) * &m3;
                self.within_tol += within.sum(Kind::Float).double_value(&[]);
                self.values += positions * width as f64;
                within
                    .sum_dim_intlist(-1, false, Kind::Float)
                    .lt(width as f64)
                    .to_kind(Kind::Float)
                    * mask
            }
            OutputKind::Blocks { blocks, n } => one_hot_blocks(out, blocks, n)
                .argmax(-1, false)
                .ne_tensor(&one_hot_blocks(&bt.y, blocks, n).argmax(-1, false))
                .to_kind(Kind::Float),
        };
        let wrong_per_position = wrong_per_position * &units;
        self.correct_positions += positions - wrong_per_position.sum(Kind::Float).double_value(&[]);
        let wrong_seqs = wrong_per_position
            .view([mask.size()[0], -1])
            .sum_dim_intlist(-1, false, Kind::Float)
            .gt(0.0)
            .sum(Kind::Float);
        self.correct_sequences += mask.size()[0] as f64 - wrong_seqs.double_value(&[]);
    }

    pub fn finish(&self, kind: OutputKind) -> Metrics {
        let per = |num: f64, den: f64| if den > 0.0 { num / den } else { f64::NAN };
        let (bits, real) = (
            matches!(kind, OutputKind::Bits { .. }),
            matches!(kind, OutputKind::Real { .. }),
        );
        Metrics {
            loss: per(self.loss, self.positions),
            token_acc: per(self.correct_positions, self.positions),
            seq_acc: per(self.correct_sequences, self.sequences),
            bit_errors_per_seq: bits.then(|| per(self.bit_errors, self.sequences)),
            mse: real.then(|| per(self.squared_error, self.values)),
            within_tol: real.then(|| per(self.within_tol, self.values)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub loss: f64,
    pub token_acc: f64,
    pub seq_acc: f64,
    pub bit_errors_per_seq: Option<f64>,
    pub mse: Option<f64>,
    pub within_tol: Option<f64>,
}

/// Metrics where smaller is better (the rest, accuracies, grow).
pub fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "loss" | "bit_errors_per_seq" | "mse")
}

impl Metrics {
    /// Names of the metric columns, in CSV order.
    pub const NAMES: [&'static str; 6] = [
        "loss",
        "token_acc",
        "seq_acc",
        "bit_errors_per_seq",
        "mse",
        "within_tol",
    ];

    /// The values each metric can take, in [`Metrics::NAMES`] order: the losses (BCE, cross-entropy,
    /// squared error), bit errors and squared errors are ≥ 0; accuracies and shares are in [0, 1].
    /// Confidence intervals and plot bands are clipped to these ranges
    /// (`report::spec::metric_bounds`, read by every table and plot).
    pub const RANGES: [(f64, f64); 6] = [
        (0.0, f64::INFINITY),
        (0.0, 1.0),
        (0.0, 1.0),
        (0.0, f64::INFINITY),
        (0.0, f64::INFINITY),
        (0.0, 1.0),
    ];

    /// The range of the metric `name` (see [`Metrics::RANGES`]); None for a name that is not one.
    pub fn range(name: &str) -> Option<(f64, f64)> {
        let i = Self::NAMES.iter().position(|&n| n == name)?;
        Some(Self::RANGES[i])
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        match name {
            "loss" => Some(self.loss),
            "token_acc" => Some(self.token_acc),
            "seq_acc" => Some(self.seq_acc),
            "bit_errors_per_seq" => self.bit_errors_per_seq,
            "mse" => self.mse,
            "within_tol" => self.within_tol,
            _ => None,
        }
    }

    /// The values in [`Metrics::NAMES`] order, missing ones as None.
    pub fn values(&self) -> [Option<f64>; 6] {
        Self::NAMES.map(|n| self.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(targets: Targets, mask: Vec<f32>) -> Batch {
        Batch {
            batch: 2,
            time: 2,
            inputs: Inputs::Tokens(vec![0; 4]),
            targets,
            mask,
        }
    }

    #[test]
    fn every_metric_has_its_range() {
        assert_eq!(Metrics::range("token_acc"), Some((0.0, 1.0)));
        assert_eq!(Metrics::range("within_tol"), Some((0.0, 1.0)));
        assert_eq!(
            Metrics::range("bit_errors_per_seq"),
            Some((0.0, f64::INFINITY))
        );
        assert_eq!(Metrics::range("mse"), Some((0.0, f64::INFINITY)));
        assert_eq!(Metrics::range("loss"), Some((0.0, f64::INFINITY)));
        assert_eq!(Metrics::range("accuracy"), None);
    }

    #[test]
    fn bit_metrics_count_only_scored_positions() {
        // Two sequences of two steps, 2 bits; second step of each scored.
        let b = batch(
            Targets::Bits(vec![1., 1., 1., 0., 0., 0., 1., 1.]),
            vec![0., 1., 0., 1.],
        );
        let bt = BatchTensors::new(&b, Device::Cpu);
        // Predictions: seq 0 step 1 → (1, 1) one bit wrong; seq 1 step 1 → (1, 1) right.
        // Unscored step 0 predictions are all wrong and must not count.
        let out = Tensor::from_slice(&[-5f32, -5., 5., 5., 5., 5., 5., 5.]).view([2, 2, 2]);
        let kind = OutputKind::Bits { width: 2 };
        let mut sums = MetricSums::default();
        sums.add(kind, &out, &bt);
        let m = sums.finish(kind);
        assert_eq!(m.bit_errors_per_seq, Some(0.5));
        assert_eq!(m.token_acc, 0.5);
        assert_eq!(m.seq_acc, 0.5);
    }

    #[test]
    fn class_metrics_and_loss() {
        let b = batch(Targets::Classes(vec![0, 1, 2, 2]), vec![1., 1., 0., 1.]);
        let bt = BatchTensors::new(&b, Device::Cpu);
        // argmax: [0, 1, 0, 0] → seq 0 fully right, seq 1: scored step 1 wrong.
        let logits =
            Tensor::from_slice(&[9f32, 0., 0., 0., 9., 0., 9., 0., 0., 9., 0., 0.]).view([2, 2, 3]);
        let kind = OutputKind::Classes { n: 3 };
        let mut sums = MetricSums::default();
        sums.add(kind, &logits, &bt);
        let m = sums.finish(kind);
        assert!((m.token_acc - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(m.seq_acc, 0.5);
        // Two near-certain right answers (~0) and one confident wrong one (~9 nats), over 3.
        assert!((m.loss - 3.0).abs() < 0.01, "{}", m.loss);
    }

    /// Blocks count decoded tokens: only scored blocks of scored positions, each by its argmax.
    #[test]
    fn block_metrics_and_loss_count_decoded_tokens() {
        // Two blocks of 3 classes; step 1 scored. Seq 0 decodes (1, 2); seq 1 decodes (0) and its
        // second block has no target (not scored).
        let y = [
            [0., 0., 0., 0., 0., 0.],
            [0., 1., 0., 0., 0., 1.],
            [0., 0., 0., 0., 0., 0.],
            [1., 0., 0., 0., 0., 0.],
        ];
        let b = batch(Targets::Bits(y.concat()), vec![0., 1., 0., 1.]);
        let bt = BatchTensors::new(&b, Device::Cpu);
        // Seq 0: block 0 right, block 1 wrong (argmax 0); seq 1: block 0 right, the unscored
        // block and the unscored steps are wrong and must not count.
        let out = [
            [0., 0., 9., 9., 0., 0.],
            [0., 9., 0., 9., 0., 0.],
            [0., 0., 9., 9., 0., 0.],
            [9., 0., 0., 0., 9., 0.],
        ];
        let out = Tensor::from_slice(&out.concat()).view([2, 2, 6]);
        let kind = OutputKind::Blocks { blocks: 2, n: 3 };
        let mut sums = MetricSums::default();
        sums.add(kind, &out.to_kind(Kind::Float), &bt);
        let m = sums.finish(kind);
        assert!((m.token_acc - 2.0 / 3.0).abs() < 1e-12, "{}", m.token_acc);
        assert_eq!(m.seq_acc, 0.5);
        assert_eq!(m.bit_errors_per_seq, None);
        // Two near-certain right tokens and one confidently wrong (~9 nats), over 3 tokens.
        assert!((m.loss - 3.0).abs() < 0.01, "{}", m.loss);
        let l = loss(kind, &out.to_kind(Kind::Float), &bt).double_value(&[]);
        assert!((l - m.loss).abs() < 1e-6);
    }
}
