//! MAD's selective copying (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures"; athms/mad-lab `mad/data/instances.py`, `generate_selective_copying_instance` →
//! `generate_copying_instance(selective=True)`, defaults from `configs/tasks/selective-copying.yml`).
//!
//! K = `num_tokens_to_copy` data tokens, with blank tokens scattered among them, then a copy token,
//! then K blanks during which the model must write the data tokens in their order of appearance.
//! MAD's variant of Mamba's task (our `selective_copy`): the sequence length is fixed and the
//! blanks fill it, each of the L - 2K - 1 blanks placed independently and uniformly in one of the
//! K gaps *before* a data token (MAD's `np.insert` at indices drawn from 0..K), so the last data
//! token always sits just before the copy token.
//!
//! Token ids: data 0..V-2 (uniform, with replacement), blank V-2, copy V-1. Per example with
//! L = `seq_len`, K = num_tokens_to_copy, N = L - 2K - 1 blanks:
//! * steps 0..K+N: the data tokens in order with the N blanks among them;
//! * step K+N: copy; steps K+N+1..L: blank, target the i-th data token (MAD's targets, no shift);
//!
//! * inputs: Tokens [B, L] in 0..V;
//! * targets: Classes [B, L] (data ids on scored steps, 0 elsewhere);
//! * mask: 1 on the last K steps, in training as in evaluation (MAD's copying targets do not
//!   depend on `is_training`).
//!
//! The length is `seq_len` in training; an `eval_lengths` entry sets L (the same K, so more
//! blanks).
//!
//! Chance: a uniform guess over the V - 2 data tokens, 1/14 at MAD's V = 16.
//!
//! Difference from MAD's code: MAD draws the blank positions from NumPy's global generator
//! instead of the instance's seeded one; here every draw comes from the example's stream.

use crate::common::{each_in_range, first, in_range, length_points, Mistakes, MAX_STEPS};
use crate::mad_in_context_recall::token_acc_success;
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadSelectiveCopyingConfig {
    /// Token ids 0..vocab_size: V - 2 data tokens, blank, copy (MAD baseline: 16).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per sequence L (MAD baseline: 256).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Data tokens to copy K (MAD baseline: 16).
    #[serde(default = "default_num_tokens_to_copy")]
    pub num_tokens_to_copy: usize,
    /// Sequence lengths evaluated at the end of training; empty means `[seq_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_vocab_size() -> usize {
    16
}
fn default_seq_len() -> usize {
    256
}
fn default_num_tokens_to_copy() -> usize {
    16
}

impl Default for MadSelectiveCopyingConfig {
    fn default() -> Self {
        MadSelectiveCopyingConfig {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            num_tokens_to_copy: default_num_tokens_to_copy(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_selective_copying";

impl MadSelectiveCopyingConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        // At least two data tokens beside blank and copy.
        m.ok(in_range(NAME, "vocab_size", self.vocab_size, 4, 1 << 30));
        let k_ok = m.ok(in_range(
            NAME,
            "num_tokens_to_copy",
            self.num_tokens_to_copy,
            1,
            MAX_STEPS / 2 - 1,
        ));
        let k = if k_ok { self.num_tokens_to_copy } else { 1 };
        // MAD asserts seq_len > 2K + 1: at least one blank.
        let shortest = 2 * k + 2;
        m.ok(in_range(NAME, "seq_len", self.seq_len, shortest, MAX_STEPS));
        m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            shortest,
            MAX_STEPS,
        ));
        m.into_vec()
    }
}

pub struct MadSelectiveCopying {
    cfg: MadSelectiveCopyingConfig,
}

impl MadSelectiveCopying {
    pub fn new(cfg: MadSelectiveCopyingConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(MadSelectiveCopying { cfg })
    }

    fn blank(&self) -> i64 {
        self.cfg.vocab_size as i64 - 2
    }

    fn copy(&self) -> i64 {
        self.cfg.vocab_size as i64 - 1
    }
}

impl Task for MadSelectiveCopying {
    fn io(&self) -> TaskIo {
        let v = self.cfg.vocab_size;
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
        let k = self.cfg.num_tokens_to_copy;
        let data = self.cfg.vocab_size - 2;
        let time = point.map_or(self.cfg.seq_len, |p| p.length);
        let blanks = time - 2 * k - 1;
        let copy_at = time - k - 1;
        let mut inputs = vec![self.blank(); batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        let mut gaps = vec![0usize; k];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let row = e * time;
            gaps.fill(0);
            for _ in 0..blanks {
                gaps[rng.random_range(0..k)] += 1;
            }
            let mut at = row;
            for (i, &gap) in gaps.iter().enumerate() {
                at += gap;
                let token = rng.random_range(0..data) as i64;
                inputs[at] = token;
                targets[row + copy_at + 1 + i] = token;
                at += 1;
            }
            debug_assert_eq!(at, row + copy_at);
            inputs[row + copy_at] = self.copy();
            mask[row + copy_at + 1..row + time].fill(1.0);
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
        self.cfg.seq_len
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        length_points(&self.cfg.eval_lengths, self.cfg.seq_len)
    }

    fn success(&self) -> SuccessCriterion {
        token_acc_success()
    }

    fn chance(&self) -> f64 {
        1.0 / (self.cfg.vocab_size - 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> MadSelectiveCopying {
        MadSelectiveCopying::new(MadSelectiveCopyingConfig {
            eval_lengths: vec![34, 512],
            ..Default::default()
        })
        .unwrap()
    }

    /// Collects the data tokens before the copy token and writes them in order after it.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let copy = row.iter().position(|&t| t == 15).expect("copy token");
            let data = row[..copy].iter().filter(|&&t| t < 14);
            for (i, &t) in data.enumerate() {
                y[e * b.time + copy + 1 + i] = t;
            }
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_uniform_data_guesses() {
        testkit::assert_chance_matches(&task(), 20, |b, rng| {
            testkit::uniform_classes(b, rng, 0..14)
        });
    }

    /// K data tokens and L - 2K - 1 blanks before the copy token, the last data token just before
    /// it; blanks after it, and the mask on exactly those K steps.
    #[test]
    fn layout_and_mask_follow_mad() {
        let b = task().batch(Split::Train, 6, 0, 32, None);
        assert_eq!(b.time, 256);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        let mut first_gap = 0;
        for e in 0..32 {
            let row = &x[e * 256..(e + 1) * 256];
            let mask = &b.mask[e * 256..(e + 1) * 256];
            assert_eq!(row[239], 15, "copy token at L - K - 1");
            assert!(row[238] < 14, "the last data token precedes the copy token");
            assert_eq!(row[..239].iter().filter(|&&t| t < 14).count(), 16);
            assert_eq!(row[..239].iter().filter(|&&t| t == 14).count(), 223);
            assert!(row[240..].iter().all(|&t| t == 14));
            assert!(mask[..240].iter().all(|&m| m == 0.0));
            assert!(mask[240..].iter().all(|&m| m == 1.0));
            first_gap += row.iter().position(|&t| t < 14).unwrap();
        }
        // Each blank lands before the first data token with probability 1/16: 223/16 ≈ 14 each.
        let mean = first_gap as f64 / 32.0;
        assert!((mean - 223.0 / 16.0).abs() < 4.0, "{mean}");
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: MadSelectiveCopyingConfig| MadSelectiveCopying::new(cfg).err().unwrap();
        let e = bad(MadSelectiveCopyingConfig {
            seq_len: 33,
            ..Default::default()
        });
        assert_eq!(e.field, "seq_len");
        assert!(e.to_string().contains("34..="), "{e}");
        assert_eq!(
            bad(MadSelectiveCopyingConfig {
                vocab_size: 3,
                ..Default::default()
            })
            .field,
            "vocab_size"
        );
        assert_eq!(
            bad(MadSelectiveCopyingConfig {
                num_tokens_to_copy: 0,
                ..Default::default()
            })
            .field,
            "num_tokens_to_copy"
        );
        assert_eq!(
            bad(MadSelectiveCopyingConfig {
                eval_lengths: vec![20],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
