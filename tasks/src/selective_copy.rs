//! Selective copying (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective State
//! Spaces", §3.1 and Figure 2; a content-aware variant of Arjovsky et al.'s copy memory).
//!
//! `num_tokens` data tokens are scattered at random positions among noise tokens in a region of L
//! steps; then `num_tokens` marker steps follow, during which the model must output the data
//! tokens in their order of appearance. Unlike copy memory the spacing varies, so a fixed delay
//! line (a convolution) cannot solve it: the model must select by content.
//!
//! Token ids: 0 = noise, 1 = copy marker, 2..2+data_vocab = data tokens.
//! Per example with region length L and K = num_tokens:
//! * steps 0..L: K data tokens (uniform, with replacement) at K distinct uniformly random
//!   positions, kept in order; noise elsewhere;
//! * steps L..L+K: marker; target at step L+i = the i-th data token.
//!
//! * inputs: Tokens [B, T] in 0..data_vocab+2, T = max over the batch of L + K;
//! * targets: Classes [B, T] in 0..data_vocab+2 (data ids on scored steps);
//! * mask: 1 on the K marker steps of each example.
//!
//! Training draws L uniform in `min_len..=max_len`; an `eval_lengths` entry fixes L.
//!
//! Chance: an input-ignoring predictor guesses a data token: token accuracy 1 / data_vocab.

use crate::common::{first, in_range, length_points, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::seq::index;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectiveCopyConfig {
    /// Number of distinct data tokens (Mamba: 16).
    #[serde(default = "default_data_vocab")]
    pub data_vocab: usize,
    /// Data tokens to copy per sequence (Mamba: 16).
    #[serde(default = "default_num_tokens")]
    pub num_tokens: usize,
    /// Shortest training region L holding the data and noise (Mamba: 4096; ours trains on CPU).
    #[serde(default = "default_len")]
    pub min_len: usize,
    /// Longest training region L.
    #[serde(default = "default_len")]
    pub max_len: usize,
    /// Region lengths evaluated at the end of training; empty means `[max_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_data_vocab() -> usize {
    16
}
fn default_num_tokens() -> usize {
    16
}
fn default_len() -> usize {
    128
}

impl Default for SelectiveCopyConfig {
    fn default() -> Self {
        SelectiveCopyConfig {
            data_vocab: default_data_vocab(),
            num_tokens: default_num_tokens(),
            min_len: default_len(),
            max_len: default_len(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "selective_copy";
const NOISE: i64 = 0;
const MARKER: i64 = 1;
const FIRST_DATA: i64 = 2;

impl SelectiveCopyConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        m.ok(in_range(NAME, "data_vocab", self.data_vocab, 2, 1 << 30));
        let k_ok = m.ok(in_range(
            NAME,
            "num_tokens",
            self.num_tokens,
            1,
            MAX_STEPS / 2,
        ));
        let k = if k_ok { self.num_tokens } else { 1 };
        let longest = MAX_STEPS - k;
        // The K data tokens need K distinct positions in the region.
        let min_ok = m.at_least(
            NAME,
            "min_len",
            self.min_len,
            ("num_tokens", self.num_tokens, k_ok),
            1,
            longest,
        );
        m.lengths(
            NAME,
            (self.min_len, min_ok),
            self.max_len,
            &self.eval_lengths,
            k,
            longest,
        );
        m.into_vec()
    }
}

pub struct SelectiveCopy {
    cfg: SelectiveCopyConfig,
}

impl SelectiveCopy {
    pub fn new(cfg: SelectiveCopyConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(SelectiveCopy { cfg })
    }
}

impl Task for SelectiveCopy {
    fn io(&self) -> TaskIo {
        let v = self.cfg.data_vocab + 2;
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
        let k = c.num_tokens;
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
        let time = lengths.iter().max().map_or(0, |l| l + k);
        let mut inputs = vec![NOISE; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for (e, (rng, &len)) in rngs.iter_mut().zip(&lengths).enumerate() {
            let row = e * time;
            let mut positions = index::sample(rng, len, k).into_vec();
            positions.sort_unstable();
            for (i, &p) in positions.iter().enumerate() {
                let token = FIRST_DATA + rng.random_range(0..c.data_vocab as u32) as i64;
                inputs[row + p] = token;
                targets[row + len + i] = token;
            }
            inputs[row + len..row + len + k].fill(MARKER);
            mask[row + len..row + len + k].fill(1.0);
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
        // Mamba's Table 1 reports accuracy on the copied tokens: near 100% with selective (S6)
        // layers, far lower with time-invariant ones. 0.99 counts only near-perfect copying.
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

    fn task() -> SelectiveCopy {
        SelectiveCopy::new(SelectiveCopyConfig {
            min_len: 20,
            max_len: 64,
            eval_lengths: vec![16, 256],
            ..Default::default()
        })
        .unwrap()
    }

    /// Collects the data tokens before the first marker and writes them in order on the markers.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let start = row.iter().position(|&t| t == MARKER).expect("marker");
            let data = row[..start].iter().filter(|&&t| t >= FIRST_DATA);
            for (i, &t) in data.enumerate() {
                y[e * b.time + start + i] = t;
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
            testkit::uniform_classes(b, rng, FIRST_DATA..FIRST_DATA + 16)
        });
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: SelectiveCopyConfig| SelectiveCopy::new(cfg).err().unwrap();
        let e = bad(SelectiveCopyConfig {
            min_len: 8,
            ..Default::default()
        });
        assert_eq!(e.field, "min_len");
        assert!(e.to_string().contains("num_tokens (16)"), "{e}");
        assert_eq!(
            bad(SelectiveCopyConfig {
                min_len: 64,
                max_len: 32,
                ..Default::default()
            })
            .field,
            "max_len"
        );
        assert_eq!(
            bad(SelectiveCopyConfig {
                data_vocab: 1,
                ..Default::default()
            })
            .field,
            "data_vocab"
        );
        assert_eq!(
            bad(SelectiveCopyConfig {
                num_tokens: 0,
                ..Default::default()
            })
            .field,
            "num_tokens"
        );
        assert_eq!(
            bad(SelectiveCopyConfig {
                eval_lengths: vec![15],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
