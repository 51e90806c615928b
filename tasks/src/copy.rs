//! Copy (Graves, Wayne & Danihelka 2014, "Neural Turing Machines", §4.1).
//!
//! The model reads L random `bits`-wide vectors, then a delimiter (an extra input channel set to 1),
//! and must then write the L vectors back, in order, while its input is blank.
//!
//! * inputs: Dense [B, T, bits + 1], T = 2·L_max + 1 over the batch;
//! * targets: Bits [B, T, bits], the pattern placed in the output phase;
//! * mask: 1 on the L output steps of each example (after its delimiter), 0 elsewhere.
//!
//! Training lengths are uniform in `min_len..=max_len`; each `eval_lengths` entry is evaluated at
//! exactly that length. Chance: a predictor that ignores its input gets each bit right half the
//! time, so `bits / 2` bit errors per vector, `bits / 2 · L` per sequence (4·L for 8 bits).

use crate::common::{first, in_range, length_points, BitDraws, Mistakes};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyConfig {
    /// Width of each random vector.
    #[serde(default = "default_bits")]
    pub bits: usize,
    /// Shortest training sequence (vectors before the delimiter).
    #[serde(default = "default_min_len")]
    pub min_len: usize,
    /// Longest training sequence.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
    /// Lengths evaluated at the end of training; empty means `[max_len]`.
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
    20
}

impl Default for CopyConfig {
    fn default() -> Self {
        CopyConfig {
            bits: default_bits(),
            min_len: default_min_len(),
            max_len: default_max_len(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "copy";
/// Longest pattern (`max_len` and each of `eval_lengths`).
const MAX_LEN: usize = 100_000;

impl CopyConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        m.ok(in_range(NAME, "bits", self.bits, 1, 1024));
        let min_ok = m.ok(in_range(NAME, "min_len", self.min_len, 1, MAX_LEN));
        m.lengths(
            NAME,
            (self.min_len, min_ok),
            self.max_len,
            &self.eval_lengths,
            1,
            MAX_LEN,
        );
        m.into_vec()
    }
}

pub struct Copy {
    cfg: CopyConfig,
}

impl Copy {
    pub fn new(cfg: CopyConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(Copy { cfg })
    }
}

impl Task for Copy {
    fn io(&self) -> TaskIo {
        TaskIo {
            input: InputKind::Dense {
                width: self.cfg.bits + 1,
            },
            output: OutputKind::Bits {
                width: self.cfg.bits,
            },
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
        let bits = self.cfg.bits;
        let mut rngs: Vec<_> = (0..batch_size)
            .map(|e| crate::example_rng(seed, split, index, e))
            .collect();
        // Each example's stream gives its length first, then its bits.
        let lengths: Vec<usize> = rngs
            .iter_mut()
            .map(|rng| match point {
                Some(p) => p.length,
                None => rng.random_range(self.cfg.min_len..=self.cfg.max_len),
            })
            .collect();
        let l_max = lengths.iter().copied().max().unwrap_or(0);
        let time = 2 * l_max + 1;
        let (in_w, out_w) = (bits + 1, bits);
        let mut inputs = vec![0f32; batch_size * time * in_w];
        let mut targets = vec![0f32; batch_size * time * out_w];
        let mut mask = vec![0f32; batch_size * time];
        for (b, (rng, &len)) in rngs.iter_mut().zip(&lengths).enumerate() {
            let mut draws = BitDraws::default();
            for t in 0..len {
                let (x, y) = ((b * time + t) * in_w, (b * time + len + 1 + t) * out_w);
                for k in 0..bits {
                    let bit = draws.next(rng);
                    inputs[x + k] = bit;
                    targets[y + k] = bit;
                }
            }
            inputs[(b * time + len) * in_w + bits] = 1.0;
            mask[b * time + len + 1..b * time + 2 * len + 1].fill(1.0);
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
        // Graves et al. report copy as solved when the cost falls to ~0; 0.1 bit errors per sequence
        // is "one wrong bit in ten sequences".
        SuccessCriterion {
            metric: "bit_errors_per_seq".into(),
            threshold: 0.1,
            lower_is_better: true,
        }
    }

    fn chance(&self) -> f64 {
        let mean_len = (self.cfg.min_len + self.cfg.max_len) as f64 / 2.0;
        self.cfg.bits as f64 / 2.0 * mean_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Copy {
        Copy::new(CopyConfig {
            bits: 8,
            min_len: 1,
            max_len: 20,
            eval_lengths: vec![40],
        })
        .unwrap()
    }

    /// The oracle: read the pattern before the delimiter and write it after. It must score every
    /// masked position exactly.
    #[test]
    fn oracle_solves_every_batch() {
        let t = task();
        for index in 0..20 {
            let b = t.batch(Split::Train, 7, index, 16, None);
            let (Inputs::Dense(x), Targets::Bits(y)) = (&b.inputs, &b.targets) else {
                panic!("kinds")
            };
            for e in 0..b.batch {
                let delim = (0..b.time)
                    .find(|&s| x[(e * b.time + s) * 9 + 8] == 1.0)
                    .expect("delimiter");
                for s in 0..b.time {
                    let scored = b.mask[e * b.time + s] == 1.0;
                    assert_eq!(
                        scored,
                        s > delim && s <= 2 * delim,
                        "mask at {s}, delimiter {delim}"
                    );
                    if scored {
                        for k in 0..8 {
                            assert_eq!(
                                y[(e * b.time + s) * 8 + k],
                                x[(e * b.time + s - delim - 1) * 9 + k]
                            );
                        }
                    }
                }
            }
        }
    }

    /// The same oracle as a function, for the shared property test over seeds, splits, indices,
    /// batch sizes and evaluation points.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Dense(x) = &b.inputs else {
            panic!("dense inputs")
        };
        let mut y = vec![0f32; b.batch * b.time * 8];
        for e in 0..b.batch {
            let delim = (0..b.time)
                .find(|&s| x[(e * b.time + s) * 9 + 8] == 1.0)
                .expect("delimiter");
            for s in 0..delim {
                for k in 0..8 {
                    y[(e * b.time + delim + 1 + s) * 8 + k] = x[(e * b.time + s) * 9 + k];
                }
            }
        }
        Targets::Bits(y)
    }

    #[test]
    fn oracle_solves_any_batch() {
        crate::testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_an_all_zero_predictor() {
        crate::testkit::assert_chance_matches(&task(), 40, |b, _| crate::testkit::zero_bits(b, 8));
    }

    #[test]
    fn same_arguments_same_bytes_other_split_other_data() {
        let t = task();
        assert_eq!(
            t.batch(Split::Train, 1, 3, 8, None),
            t.batch(Split::Train, 1, 3, 8, None)
        );
        assert_ne!(
            t.batch(Split::Train, 1, 3, 8, None),
            t.batch(Split::Test, 1, 3, 8, None)
        );
        assert_ne!(
            t.batch(Split::Train, 1, 3, 8, None),
            t.batch(Split::Train, 2, 3, 8, None)
        );
    }

    #[test]
    fn eval_point_fixes_the_length() {
        let b = task().batch(
            Split::Test,
            1,
            0,
            4,
            Some(EvalPoint {
                length: 40,
                depth: None,
            }),
        );
        assert_eq!(b.time, 81);
        assert_eq!(b.mask.iter().sum::<f32>(), 4.0 * 40.0);
    }

    #[test]
    fn bad_lengths_name_the_field() {
        let err = Copy::new(CopyConfig {
            min_len: 5,
            max_len: 2,
            ..Default::default()
        })
        .err()
        .unwrap();
        assert_eq!(err.field, "max_len");
        assert!(err.to_string().contains("min_len (5)"), "{err}");
    }
}
