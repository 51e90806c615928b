//! Repeat copy (Graves, Wayne & Danihelka 2014, "Neural Turing Machines", §4.2).
//!
//! The model reads L random `bits`-wide vectors, then one delimiter step that also carries the
//! number of repeats r on its own channel, and must then write the pattern r times in a row and
//! finally raise an end marker, while its input is blank. Counting the copies and knowing when to
//! stop is the point of the task.
//!
//! Per example (L, r), with W = bits:
//! * steps 0..L: the pattern on channels 0..W;
//! * step L: delimiter channel W = 1 and repeat channel W+1 = r / max_repeats (in (0, 1]; Graves
//!   normalised r to zero mean and unit variance instead, we keep a value that needs no training
//!   statistics and is still exact at evaluation);
//! * steps L+1 .. L+1+r·L: target = pattern[(s - L - 1) mod L] on output channels 0..W, end
//!   channel W = 0; step L+1+r·L: all data targets 0, end channel = 1 (Graves's end marker).
//!
//! * inputs: Dense [B, T, bits + 2], T = max over the batch of L + r·L + 2 (at an evaluation
//!   point L·(max_repeats + 1) + 2, so that its shape does not depend on the drawn r);
//! * targets: Bits [B, T, bits + 1];
//! * mask: 1 on the r·L + 1 output steps of each example (pattern copies and the end step).
//!
//! Training draws L uniform in `min_len..=max_len` and r uniform in `min_repeats..=max_repeats`;
//! an `eval_lengths` entry fixes L and still draws r from the training range.
//!
//! Chance: the best input-ignoring predictor writes zeros everywhere; it gets every pattern bit
//! wrong half the time and misses the one end marker, so
//! E[bit errors per sequence] = bits/2 · E[L] · E[r] + 1 (L and r independent).

use crate::common::{first, in_range, length_points, BitDraws, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatCopyConfig {
    /// Width of each random vector (Graves: 8).
    #[serde(default = "default_bits")]
    pub bits: usize,
    /// Shortest training pattern (Graves: 1).
    #[serde(default = "default_min_len")]
    pub min_len: usize,
    /// Longest training pattern (Graves: 10).
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Fewest repeats (Graves: 1).
    #[serde(default = "default_min_repeats")]
    pub min_repeats: usize,
    /// Most repeats; also the normaliser of the repeat channel (Graves: 10).
    #[serde(default = "default_max_repeats")]
    pub max_repeats: usize,
    /// Pattern lengths evaluated at the end of training; empty means `[max_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_bits() -> usize {
    8
}
fn default_min_len() -> usize {
    1
}
fn default_max_len() -> usize {
    10
}
fn default_min_repeats() -> usize {
    1
}
fn default_max_repeats() -> usize {
    10
}

impl Default for RepeatCopyConfig {
    fn default() -> Self {
        RepeatCopyConfig {
            bits: default_bits(),
            min_len: default_min_len(),
            max_len: default_max_len(),
            min_repeats: default_min_repeats(),
            max_repeats: default_max_repeats(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "repeat_copy";

impl RepeatCopyConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        m.ok(in_range(NAME, "bits", self.bits, 1, 1024));
        let min_r_ok = m.ok(in_range(NAME, "min_repeats", self.min_repeats, 1, 1000));
        let max_r_ok = m.at_least(
            NAME,
            "max_repeats",
            self.max_repeats,
            ("min_repeats", self.min_repeats, min_r_ok),
            1,
            1000,
        );
        // The longest example, L·(r + 1) + 2 steps, must fit in MAX_STEPS.
        let max_repeats = if max_r_ok { self.max_repeats } else { 1 };
        let max_pattern = (MAX_STEPS - 2) / (max_repeats + 1);
        let min_ok = m.ok(in_range(NAME, "min_len", self.min_len, 1, max_pattern));
        m.lengths(
            NAME,
            (self.min_len, min_ok),
            self.max_len,
            &self.eval_lengths,
            1,
            max_pattern,
        );
        m.into_vec()
    }
}

pub struct RepeatCopy {
    cfg: RepeatCopyConfig,
}

impl RepeatCopy {
    pub fn new(cfg: RepeatCopyConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(RepeatCopy { cfg })
    }
}

impl Task for RepeatCopy {
    fn io(&self) -> TaskIo {
        let bits = self.cfg.bits;
        TaskIo {
            input: InputKind::Dense { width: bits + 2 },
            output: OutputKind::Bits { width: bits + 1 },
        }
    }

    fn batch(
        &self,
        split: Split,
        seed: u64,
        index: u64,
        batch_size: usize,
        point: Option<EvalPoint>,
    ) -> Batch {
        let c = &self.cfg;
        let (in_w, out_w) = (c.bits + 2, c.bits + 1);
        let mut rngs: Vec<_> = (0..batch_size)
            .map(|e| crate::example_rng(seed, split, index, e))
            .collect();
        // (L, r) per example, drawn first from each example's own stream.
        let shapes: Vec<(usize, usize)> = rngs
            .iter_mut()
            .map(|rng| {
                let len = match point {
                    Some(p) => p.length,
                    None => rng.random_range(c.min_len..=c.max_len),
                };
                (len, rng.random_range(c.min_repeats..=c.max_repeats))
            })
            .collect();
        // At an evaluation point r is still random, so pad to the most repeats: the shape of an
        // evaluation batch then depends on the point alone, not on the draws.
        let time = match point {
            Some(p) => p.length * (c.max_repeats + 1) + 2,
            None => shapes
                .iter()
                .map(|&(l, r)| l * (r + 1) + 2)
                .max()
                .unwrap_or(0),
        };
        let mut inputs = vec![0f32; batch_size * time * in_w];
        let mut targets = vec![0f32; batch_size * time * out_w];
        let mut mask = vec![0f32; batch_size * time];
        for (e, (rng, &(len, repeats))) in rngs.iter_mut().zip(&shapes).enumerate() {
            let x = &mut inputs[e * time * in_w..(e + 1) * time * in_w];
            let y = &mut targets[e * time * out_w..(e + 1) * time * out_w];
            let mut draws = BitDraws::default();
            for t in 0..len {
                for k in 0..c.bits {
                    x[t * in_w + k] = draws.next(rng);
                }
            }
            x[len * in_w + c.bits] = 1.0;
            x[len * in_w + c.bits + 1] = repeats as f32 / c.max_repeats as f32;
            for s in 0..repeats * len {
                let src = s % len;
                let dst = len + 1 + s;
                for k in 0..c.bits {
                    y[dst * out_w + k] = x[src * in_w + k];
                }
            }
            let end = len + 1 + repeats * len;
            y[end * out_w + c.bits] = 1.0;
            mask[e * time + len + 1..=e * time + end].fill(1.0);
        }
        Batch {
            batch: batch_size,
            time,
            inputs: Inputs::Dense(inputs),
            targets: Targets::Bits(targets),
            mask,
        }
    }

    fn train_max_length(&self) -> usize {
        self.cfg.max_len
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        length_points(&self.cfg.eval_lengths, self.cfg.max_len)
    }

    fn success(&self) -> SuccessCriterion {
        // As for copy: Graves et al. count the task learned when the cost is ~0; 0.1 bit errors per
        // sequence is one wrong bit (or one misplaced end marker) in ten sequences.
        SuccessCriterion {
            metric: "bit_errors_per_seq".into(),
            threshold: 0.1,
            lower_is_better: true,
        }
    }

    fn chance(&self) -> f64 {
        let c = &self.cfg;
        let mean_len = (c.min_len + c.max_len) as f64 / 2.0;
        let mean_repeats = (c.min_repeats + c.max_repeats) as f64 / 2.0;
        c.bits as f64 / 2.0 * mean_len * mean_repeats + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> RepeatCopy {
        RepeatCopy::new(RepeatCopyConfig {
            eval_lengths: vec![5, 20],
            ..Default::default()
        })
        .unwrap()
    }

    /// Reads the pattern up to the delimiter and the repeat count from its channel, then writes
    /// the pattern that many times and the end marker.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Dense(x) = &b.inputs else {
            panic!("dense inputs")
        };
        let (bits, max_repeats) = (8, 10);
        let (in_w, out_w) = (bits + 2, bits + 1);
        let mut y = vec![0f32; b.batch * b.time * out_w];
        for e in 0..b.batch {
            let at = |t: usize, k: usize| x[(e * b.time + t) * in_w + k];
            let len = (0..b.time)
                .find(|&t| at(t, bits) == 1.0)
                .expect("delimiter");
            let repeats = (at(len, bits + 1) * max_repeats as f32).round() as usize;
            for s in 0..repeats * len {
                for k in 0..bits {
                    y[(e * b.time + len + 1 + s) * out_w + k] = at(s % len, k);
                }
            }
            y[(e * b.time + len + 1 + repeats * len) * out_w + bits] = 1.0;
        }
        Targets::Bits(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_an_all_zero_predictor() {
        testkit::assert_chance_matches(&task(), 40, |b, _| testkit::zero_bits(b, 9));
    }

    #[test]
    fn eval_point_fixes_the_pattern_length() {
        let b = task().batch(
            Split::Test,
            1,
            0,
            16,
            Some(EvalPoint {
                length: 20,
                depth: None,
            }),
        );
        let Inputs::Dense(x) = &b.inputs else {
            panic!()
        };
        for e in 0..16 {
            assert_eq!(
                x[(e * b.time + 20) * 10 + 8],
                1.0,
                "delimiter of example {e} at step 20"
            );
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: RepeatCopyConfig| RepeatCopy::new(cfg).err().unwrap();
        assert_eq!(
            bad(RepeatCopyConfig {
                bits: 0,
                ..Default::default()
            })
            .field,
            "bits"
        );
        assert_eq!(
            bad(RepeatCopyConfig {
                min_len: 4,
                max_len: 3,
                ..Default::default()
            })
            .field,
            "max_len"
        );
        assert_eq!(
            bad(RepeatCopyConfig {
                min_repeats: 0,
                ..Default::default()
            })
            .field,
            "min_repeats"
        );
        let e = bad(RepeatCopyConfig {
            min_repeats: 5,
            max_repeats: 2,
            ..Default::default()
        });
        assert_eq!(e.field, "max_repeats");
        assert!(e.to_string().contains("min_repeats (5)"), "{e}");
        assert_eq!(
            bad(RepeatCopyConfig {
                eval_lengths: vec![3, 0],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
        assert_eq!(
            bad(RepeatCopyConfig {
                max_len: MAX_STEPS,
                ..Default::default()
            })
            .field,
            "max_len"
        );
    }
}
