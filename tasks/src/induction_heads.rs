//! Induction heads (Olsson et al. 2022, "In-context Learning and Induction Heads"; the synthetic
//! form of Fu et al. 2023, "Hungry Hungry Hippos", §3.1, also used by Gu & Dao 2023, §4.1.2).
//!
//! A sequence of random tokens contains a special trigger token once; the sequence ends with the
//! trigger again, and the model must predict the token that followed the first trigger ("…[A] B …
//! [A] → B"). Only that last position is scored.
//!
//! Token ids: 0 = trigger, 1..=data_vocab = data. Per example of length L:
//! * steps 0..L-1: data tokens uniform over 1..=data_vocab, except step p = trigger, p uniform in
//!   0..=L-3 (so its successor p+1 is a data token before the end);
//! * step L-1: trigger; target = the token at p+1.
//!
//! * inputs: Tokens [B, T] in 0..=data_vocab, T = the longest L of the batch (shorter examples
//!   are padded after their end with the trigger id 0 and masked);
//! * targets: Classes [B, T] in 0..=data_vocab;
//! * mask: 1 at step L-1 of each example only.
//!
//! Training draws L uniform in `min_len..=max_len`; an `eval_lengths` entry fixes L.
//!
//! Chance: the answer is uniform over the data tokens: token accuracy 1 / data_vocab (and, with
//! one scored position per sequence, sequence accuracy is the same).

use crate::common::{first, in_range, length_points, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InductionHeadsConfig {
    /// Number of data tokens, besides the trigger (Mamba: 16; H3: 20).
    #[serde(default = "default_data_vocab")]
    pub data_vocab: usize,
    /// Shortest training sequence (Mamba: 256; H3: 30).
    #[serde(default = "default_len")]
    pub min_len: usize,
    /// Longest training sequence.
    #[serde(default = "default_len")]
    pub max_len: usize,
    /// Lengths evaluated at the end of training; empty means `[max_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_data_vocab() -> usize {
    16
}
fn default_len() -> usize {
    64
}

impl Default for InductionHeadsConfig {
    fn default() -> Self {
        InductionHeadsConfig {
            data_vocab: default_data_vocab(),
            min_len: default_len(),
            max_len: default_len(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "induction_heads";
const TRIGGER: i64 = 0;

impl InductionHeadsConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        m.ok(in_range(NAME, "data_vocab", self.data_vocab, 2, 1 << 30));
        // Trigger, its successor, and the final trigger need 3 steps.
        let min_ok = m.ok(in_range(NAME, "min_len", self.min_len, 3, MAX_STEPS));
        m.lengths(
            NAME,
            (self.min_len, min_ok),
            self.max_len,
            &self.eval_lengths,
            3,
            MAX_STEPS,
        );
        m.into_vec()
    }
}

pub struct InductionHeads {
    cfg: InductionHeadsConfig,
}

impl InductionHeads {
    pub fn new(cfg: InductionHeadsConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(InductionHeads { cfg })
    }
}

impl Task for InductionHeads {
    fn io(&self) -> TaskIo {
        let v = self.cfg.data_vocab + 1;
        TaskIo {
            input: InputKind::Tokens { vocab: v },
            output: OutputKind::Classes { n: v },
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
        let mut rngs: Vec<_> = (0..batch_size)
            .map(|e| crate::example_rng(seed, split, index, e))
            .collect();
        let lengths: Vec<usize> = rngs
            .iter_mut()
            .map(|rng| match point {
                Some(p) => p.length,
                None => rng.random_range(c.min_len..=c.max_len),
            })
            .collect();
        let time = lengths.iter().copied().max().unwrap_or(0);
        let mut inputs = vec![TRIGGER; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for (e, (rng, &len)) in rngs.iter_mut().zip(&lengths).enumerate() {
            let row = &mut inputs[e * time..e * time + len];
            row[..len - 1]
                .iter_mut()
                .for_each(|t| *t = rng.random_range(1..=c.data_vocab as u32) as i64);
            let p = rng.random_range(0..=len - 3);
            row[p] = TRIGGER;
            row[len - 1] = TRIGGER;
            targets[e * time + len - 1] = row[p + 1];
            mask[e * time + len - 1] = 1.0;
        }
        Batch {
            batch: batch_size,
            time,
            inputs: Inputs::Tokens(inputs),
            targets: Targets::Classes(targets),
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
        // H3 and Mamba report induction accuracy at the final position; models with an induction
        // mechanism reach ~100%, others stay near chance. 0.99 counts only the former.
        SuccessCriterion {
            metric: "token_acc".into(),
            threshold: 0.99,
            lower_is_better: false,
        }
    }

    fn chance(&self) -> f64 {
        1.0 / self.cfg.data_vocab as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> InductionHeads {
        InductionHeads::new(InductionHeadsConfig {
            min_len: 3,
            max_len: 40,
            eval_lengths: vec![3, 200],
            ..Default::default()
        })
        .unwrap()
    }

    /// Finds the scored step (the example's last), then the first trigger, and answers its
    /// successor.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let first = row.iter().position(|&t| t == TRIGGER).expect("trigger");
            let second = first
                + 1
                + row[first + 1..]
                    .iter()
                    .position(|&t| t == TRIGGER)
                    .expect("second trigger");
            y[e * b.time + second] = row[first + 1];
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn trigger_appears_exactly_twice() {
        let b = task().batch(Split::Train, 8, 0, 64, None);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        for e in 0..64 {
            let len = (0..b.time)
                .rfind(|&s| b.mask[e * b.time + s] == 1.0)
                .unwrap()
                + 1;
            assert_eq!(
                x[e * b.time..e * b.time + len]
                    .iter()
                    .filter(|&&t| t == TRIGGER)
                    .count(),
                2,
                "example {e}"
            );
        }
    }

    #[test]
    fn chance_matches_uniform_data_guesses() {
        testkit::assert_chance_matches(&task(), 100, |b, rng| {
            testkit::uniform_classes(b, rng, 1..17)
        });
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: InductionHeadsConfig| InductionHeads::new(cfg).err().unwrap();
        assert_eq!(
            bad(InductionHeadsConfig {
                min_len: 2,
                ..Default::default()
            })
            .field,
            "min_len"
        );
        assert_eq!(
            bad(InductionHeadsConfig {
                min_len: 10,
                max_len: 9,
                ..Default::default()
            })
            .field,
            "max_len"
        );
        assert_eq!(
            bad(InductionHeadsConfig {
                data_vocab: 0,
                ..Default::default()
            })
            .field,
            "data_vocab"
        );
        assert_eq!(
            bad(InductionHeadsConfig {
                eval_lengths: vec![64, 2],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
