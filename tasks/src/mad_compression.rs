//! MAD's compression (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures";
//! athms/mad-lab `mad/data/instances.py`, `generate_compression_instance`, the `AutoEncoder`
//! backbone of `mad/model/auto_encoder.py`, defaults from `configs/tasks/compression.yml`).
//!
//! A random sequence ends in a compression token; the model must encode the whole sequence into
//! its state at that one position, from which the sequence is decoded. MAD's data are L - 1
//! tokens uniform over 0..V-1 and the compression token V - 1, with the sequence itself as the
//! target. MAD trains this task on an auto-encoder backbone: the layers under test run over the
//! sequence, the output at the last position (`global_pool='last'`) is the only thing passed on,
//! and a position-wise MLP decodes it, at each position p from the encoding plus a sinusoidal
//! embedding of p, into logits over the vocabulary; accuracy is over all L decoded tokens (the
//! compression token's own included).
//!
//! Our models are causal sequence models with one output per step, so the bottleneck is the
//! output at the compression step: it carries the whole decoded sequence, as L blocks of V logits
//! (block p = token p, an output of kind `Blocks`). The model's output head is then the decoder,
//! one linear map per block where MAD has an MLP shared over positions; each block is a softmax
//! over V with cross-entropy, as MAD's. Decode steps after the compression token (one class per
//! step) would not do: a model that can read its past inputs (attention) would copy them instead
//! of decoding a compressed state.
//!
//! Per example with L = seq_len (training) or an eval length ℓ ≤ seq_len:
//! * inputs: Tokens [B, ℓ] in 0..V: ℓ - 1 uniform tokens from 0..V-1, then V - 1;
//! * targets: one-hot blocks (`Bits` [B, ℓ, seq_len · V]); at step ℓ - 1, block p < ℓ one-hot at
//!   the p-th input token, blocks p ≥ ℓ zero (not scored); all zero at other steps;
//! * mask: 1 at step ℓ - 1 only.
//!
//! Metrics: `token_acc` is MAD's accuracy, the share of the ℓ decoded tokens (the compression
//! token's own included) whose argmax is right; `seq_acc` the share of sequences decoded without
//! error.
//!
//! Chance: a predictor that ignores the data guesses each data token uniformly over V - 1 and
//! knows the last token is the compression token: (1 + (L - 1)/(V - 1)) / L (0.0958 at MAD's
//! L = 32, V = 16).

use crate::common::{each_in_range, first, in_range, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadCompressionConfig {
    /// Token ids 0..vocab_size, the last the compression token (MAD baseline: 16).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per sequence L, the compression token included (MAD baseline: 32); the output width
    /// is seq_len · vocab_size.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Sequence lengths evaluated at the end of training, each at most seq_len (the decoded
    /// blocks); empty means `[seq_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_vocab_size() -> usize {
    16
}
fn default_seq_len() -> usize {
    32
}

impl Default for MadCompressionConfig {
    fn default() -> Self {
        MadCompressionConfig {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_compression";

/// Most output bits per step (seq_len · vocab_size), so that a typo cannot build a model with an
/// output layer of billions of units.
const MAX_WIDTH: usize = 1 << 20;

impl MadCompressionConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        // At least two data tokens beside the compression token.
        let v_ok = m.ok(in_range(
            NAME,
            "vocab_size",
            self.vocab_size,
            3,
            MAX_WIDTH / 2,
        ));
        let v = if v_ok { self.vocab_size } else { 3 };
        let len_ok = m.ok(in_range(
            NAME,
            "seq_len",
            self.seq_len,
            2,
            (MAX_WIDTH / v).min(MAX_STEPS),
        ));
        let longest = if len_ok { self.seq_len } else { MAX_STEPS };
        m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            2,
            longest,
        ));
        m.into_vec()
    }
}

pub struct MadCompression {
    cfg: MadCompressionConfig,
}

impl MadCompression {
    pub fn new(cfg: MadCompressionConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(MadCompression { cfg })
    }

    fn width(&self) -> usize {
        self.cfg.seq_len * self.cfg.vocab_size
    }
}

impl Task for MadCompression {
    fn io(&self) -> TaskIo {
        TaskIo {
            input: InputKind::Tokens {
                vocab: self.cfg.vocab_size,
            },
            output: OutputKind::Blocks {
                blocks: self.cfg.seq_len,
                n: self.cfg.vocab_size,
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
        let v = self.cfg.vocab_size;
        let width = self.width();
        let time = point.map_or(self.cfg.seq_len, |p| p.length);
        let mut inputs = vec![0i64; batch_size * time];
        let mut targets = vec![0f32; batch_size * time * width];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let x = &mut inputs[e * time..(e + 1) * time];
            x[..time - 1]
                .iter_mut()
                .for_each(|t| *t = rng.random_range(0..v - 1) as i64);
            x[time - 1] = v as i64 - 1;
            let last = e * time + time - 1;
            let code = &mut targets[last * width..(last + 1) * width];
            for (p, &token) in x.iter().enumerate() {
                code[p * v + token as usize] = 1.0;
            }
            mask[last] = 1.0;
        }
        Batch {
            batch: batch_size,
            time,
            inputs: Inputs::Tokens(inputs),
            targets: Targets::Bits(targets),
            mask,
        }
    }

    fn train_max_length(&self) -> usize {
        self.cfg.seq_len
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        crate::common::length_points(&self.cfg.eval_lengths, self.cfg.seq_len)
    }

    fn success(&self) -> SuccessCriterion {
        // As for MAD's other tasks: 99 % of the decoded tokens right.
        SuccessCriterion {
            metric: "token_acc".into(),
            threshold: 0.99,
            lower_is_better: false,
        }
    }

    fn chance(&self) -> f64 {
        let (l, v) = (self.cfg.seq_len as f64, self.cfg.vocab_size as f64);
        (1.0 + (l - 1.0) / (v - 1.0)) / l
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> MadCompression {
        MadCompression::new(MadCompressionConfig {
            eval_lengths: vec![2, 16],
            ..Default::default()
        })
        .unwrap()
    }

    /// Reads the whole input and writes its one-hot code at the compression step.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let width = 32 * 16;
        let mut y = vec![0f32; b.batch * b.time * width];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let last = e * b.time + b.time - 1;
            for (p, &t) in row.iter().enumerate() {
                y[last * width + p * 16 + t as usize] = 1.0;
            }
        }
        Targets::Bits(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    /// Uniform over the data tokens, and the compression token last.
    #[test]
    fn chance_matches_a_uniform_guess() {
        assert!((task().chance() - 46.0 / 480.0).abs() < 1e-12);
        testkit::assert_chance_matches(&task(), 8, |b, rng| {
            let mut y = vec![0f32; b.batch * b.time * 512];
            for e in 0..b.batch {
                let last = e * b.time + b.time - 1;
                for p in 0..b.time {
                    let token = if p + 1 == b.time {
                        15
                    } else {
                        rng.random_range(0..15)
                    };
                    y[last * 512 + p * 16 + token] = 1.0;
                }
            }
            Targets::Bits(y)
        });
    }

    /// An oracle that gets one data token wrong in every sequence still has 31/32 of the tokens
    /// right (MAD's accuracy counts tokens), and no sequence right.
    #[test]
    fn accuracy_counts_decoded_tokens() {
        let t = task();
        let b = t.batch(Split::Test, 1, 0, 8, None);
        let Targets::Bits(mut y) = oracle(&b) else {
            panic!()
        };
        for e in 0..8 {
            let block = (e * 32 + 31) * 512 + 3 * 16;
            let right = (0..16).find(|&k| y[block + k] == 1.0).unwrap();
            y[block + right] = 0.0;
            y[block + (right + 1) % 15] = 1.0;
        }
        let pairs = [(b, Targets::Bits(y))];
        let token = testkit::measure(t.io().output, "token_acc", 0.5, &pairs).0;
        let seq = testkit::measure(t.io().output, "seq_acc", 0.5, &pairs).0;
        assert!((token - 31.0 / 32.0).abs() < 1e-12, "{token}");
        assert_eq!(seq, 0.0);
    }

    /// Data tokens from 0..15 then the compression token; the mask and the code sit at the last
    /// step only, one 1 per decoded position, none past an evaluation length.
    #[test]
    fn layout_and_mask_follow_mad() {
        let t = task();
        for point in [None, Some(t.eval_points()[1])] {
            let b = t.batch(Split::Test, 2, 0, 16, point);
            let len = point.map_or(32, |p| p.length);
            assert_eq!(b.time, len);
            let (Inputs::Tokens(x), Targets::Bits(y)) = (&b.inputs, &b.targets) else {
                panic!()
            };
            for e in 0..16 {
                let row = &x[e * len..(e + 1) * len];
                assert!(row[..len - 1].iter().all(|&t| (0..15).contains(&t)));
                assert_eq!(row[len - 1], 15);
                let mask = &b.mask[e * len..(e + 1) * len];
                assert_eq!(mask.iter().sum::<f32>(), 1.0);
                assert_eq!(mask[len - 1], 1.0);
                let code = &y[(e * len + len - 1) * 512..(e * len + len) * 512];
                for p in 0..32 {
                    let ones = code[p * 16..(p + 1) * 16].iter().sum::<f32>();
                    assert_eq!(ones, if p < len { 1.0 } else { 0.0 }, "block {p}");
                }
                let earlier = &y[e * len * 512..(e * len + len - 1) * 512];
                assert!(earlier.iter().all(|&b| b == 0.0));
            }
        }
        assert_eq!(t.io().output, OutputKind::Blocks { blocks: 32, n: 16 });
        assert_eq!(t.io().output.width(), 512);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: MadCompressionConfig| MadCompression::new(cfg).err().unwrap();
        assert_eq!(
            bad(MadCompressionConfig {
                vocab_size: 2,
                ..Default::default()
            })
            .field,
            "vocab_size"
        );
        assert_eq!(
            bad(MadCompressionConfig {
                seq_len: 1,
                ..Default::default()
            })
            .field,
            "seq_len"
        );
        let e = bad(MadCompressionConfig {
            eval_lengths: vec![64],
            ..Default::default()
        });
        assert_eq!(e.field, "eval_lengths");
        assert!(e.to_string().contains("2..=32"), "{e}");
    }
}
