//! MAD's in-context recall (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures", §3 and Appendix B; generator after athms/mad-lab `mad/data/instances.py`,
//! `generate_in_context_recall_instance`, defaults from `configs/tasks/in-context-recall.yml`).
//!
//! A sequence of key-value pairs in which keys repeat: within a sequence each key is bound to one
//! value, and at every repeat of a key the model must predict its value. As in MAD, the vocabulary
//! of V tokens splits into keys 0..S/2 and values S/2..S, with S the non-special tokens (V in
//! multi-query mode, V - 1 otherwise, less the noise tokens of the noisy variant); keys are drawn
//! uniformly with replacement, and a key's value is drawn uniformly when the key first appears (two
//! keys may share a value). The sequence is L/2 pairs (L = `seq_len`): L/2 - 1 random pairs, then
//! a probe pair whose key is drawn uniformly from the keys already shown. In single-query mode a
//! copy prefix (token V - 1) precedes the probe and only the probe is scored.
//!
//! MAD builds the L (+1) tokens S_0 S_1 … and trains a language model on the shift (inputs S_0..,
//! next tokens S_1..); so the model reads a key at step t and predicts its value at the same step.
//! Per example, with N = L/2 pairs and T = L - 1 (multi-query) or L (single-query):
//! * inputs: S_0..S_T (k_0 v_0 k_1 v_1 … [prefix] k_probe), Tokens [B, T] in 0..V;
//! * targets: the next token S_{t+1}, Classes [B, T] in 0..V;
//! * mask, test and valid splits (MAD's `is_training=False` targets): 1 at the key steps whose key
//!   appeared earlier in the sequence (multi-query) or at the probe key only (single-query); the
//!   value is then determined by the context;
//! * mask, train split: with `train_on_all_tokens` (MAD's `is_training=True`, the default) 1 at
//!   every step, the full next-token loss MAD trains with; without it, the test mask.
//!
//! The length is `seq_len` in training; an `eval_lengths` entry sets L (the same vocabulary).
//!
//! Chance: on scored steps the target is a value, uniform over the S - S/2 value tokens (1/8 at
//! MAD's V = 16, multi-query).
//!
//! Differences from MAD's code: MAD draws the pair that is never noise (`not_noise_idx`, noisy
//! variant) from all N slots, including the probe's, so an all-noise sequence would leave nothing
//! to probe and crash; here it is drawn from the N - 1 random pairs. MAD trains on a finite pool of
//! 12,800 sequences; that pool is the harness's `train.train_examples` (issue #26), not the
//! task's: the task draws fresh sequences for every batch index.

use crate::common::{
    each_even_in_range, even_in_range, first, in_range, length_points, Mistakes, MAX_STEPS,
};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadInContextRecallConfig {
    /// Token ids 0..vocab_size (MAD baseline: 16).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per sequence L, an even number: L/2 key-value pairs (MAD baseline: 128).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Score every repeated key (MAD's `multi_query`, true in all its task configs); false scores
    /// only a final probe after a copy prefix.
    #[serde(default = "yes")]
    pub multi_query: bool,
    /// Train on the next token at every step, as MAD does; false trains on the scored steps only.
    #[serde(default = "yes")]
    pub train_on_all_tokens: bool,
    /// Sequence lengths evaluated at the end of training; empty means `[seq_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_vocab_size() -> usize {
    16
}
fn default_seq_len() -> usize {
    128
}
pub(crate) fn yes() -> bool {
    true
}

impl Default for MadInContextRecallConfig {
    fn default() -> Self {
        MadInContextRecallConfig {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            multi_query: true,
            train_on_all_tokens: true,
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_in_context_recall";

impl MadInContextRecallConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        recall_mistakes(
            &mut m,
            NAME,
            self.vocab_size,
            self.multi_query,
            (0, true),
            self.seq_len,
            &self.eval_lengths,
        );
        m.into_vec()
    }
}

/// The checks of the recall layout shared with the noisy variant: the vocabulary holds at least
/// one key and one value beside the special and noise tokens (`noise`: the noise vocabulary and
/// whether it passed its own check), and the lengths are whole pairs, at least two (one random
/// pair and the probe).
pub(crate) fn recall_mistakes(
    m: &mut Mistakes,
    task: &'static str,
    vocab_size: usize,
    multi_query: bool,
    (noise, noise_ok): (usize, bool),
    seq_len: usize,
    eval_lengths: &[usize],
) {
    let noise = if noise_ok { noise } else { 0 };
    let special = usize::from(!multi_query);
    m.ok(in_range(
        task,
        "vocab_size",
        vocab_size,
        special + noise + 2,
        1 << 30,
    ));
    m.ok(even_in_range(task, "seq_len", seq_len, 4, MAX_STEPS));
    m.ok(each_even_in_range(
        task,
        "eval_lengths",
        eval_lengths,
        4,
        MAX_STEPS,
    ));
}

/// MAD's in-context recall generator with its noise option (`generate_in_context_recall_instance`):
/// the task `mad_in_context_recall` ([`MadInContextRecall::new`], no noise) and
/// `mad_noisy_in_context_recall` ([`MadInContextRecall::noisy`], in that task's file).
pub struct MadInContextRecall {
    pub(crate) vocab_size: usize,
    pub(crate) seq_len: usize,
    pub(crate) multi_query: bool,
    pub(crate) train_on_all_tokens: bool,
    pub(crate) noise_vocab_size: usize,
    pub(crate) frac_noise: f64,
    pub(crate) eval_lengths: Vec<usize>,
}

impl MadInContextRecall {
    pub fn new(cfg: MadInContextRecallConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(MadInContextRecall {
            vocab_size: cfg.vocab_size,
            seq_len: cfg.seq_len,
            multi_query: cfg.multi_query,
            train_on_all_tokens: cfg.train_on_all_tokens,
            noise_vocab_size: 0,
            frac_noise: 0.0,
            eval_lengths: cfg.eval_lengths,
        })
    }

    /// Non-special tokens S: keys 0..S/2, values S/2..S; noise S..S+noise; prefix V - 1.
    fn plain_tokens(&self) -> usize {
        self.vocab_size - usize::from(!self.multi_query) - self.noise_vocab_size
    }

    fn copy_prefix(&self) -> i64 {
        self.vocab_size as i64 - 1
    }

    /// One example's full token stream S (L tokens, L + 1 with a copy prefix) and whether each
    /// token is a scored target (a value the context determines).
    fn stream(&self, rng: &mut ChaCha8Rng, len: usize) -> (Vec<i64>, Vec<bool>) {
        let s = self.plain_tokens();
        let (keys, values) = (s / 2, s - s / 2);
        let pairs = len / 2;
        let mut tokens = Vec::with_capacity(len + 1);
        let mut scored = Vec::with_capacity(len + 1);
        let mut bound: Vec<Option<i64>> = vec![None; keys];
        let mut shown = vec![false; keys];
        let noisy = self.frac_noise > 0.0;
        // One random pair is never noise, so there is always a key to probe.
        let kept = if noisy {
            rng.random_range(0..pairs - 1)
        } else {
            0
        };
        for i in 0..pairs - 1 {
            if noisy && i != kept && rng.random::<f64>() < self.frac_noise {
                for _ in 0..2 {
                    tokens.push((s + rng.random_range(0..self.noise_vocab_size)) as i64);
                    scored.push(false);
                }
                continue;
            }
            let k = rng.random_range(0..keys);
            let v = *bound[k].get_or_insert_with(|| (keys + rng.random_range(0..values)) as i64);
            tokens.extend([k as i64, v]);
            scored.extend([false, self.multi_query && shown[k]]);
            shown[k] = true;
        }
        let candidates: Vec<usize> = (0..keys).filter(|&k| shown[k]).collect();
        let probe = candidates[rng.random_range(0..candidates.len())];
        if !self.multi_query {
            tokens.push(self.copy_prefix());
            scored.push(false);
        }
        tokens.extend([probe as i64, bound[probe].expect("shown keys are bound")]);
        scored.extend([false, true]);
        (tokens, scored)
    }

    /// Steps per example at sequence length `len`: the stream less its last token.
    fn time(&self, len: usize) -> usize {
        len - usize::from(self.multi_query)
    }
}

/// MAD reports accuracy on the scored steps, with no bar; 0.99 counts only near-perfect recall, as
/// for MQAR.
pub(crate) fn token_acc_success() -> SuccessCriterion {
    SuccessCriterion {
        metric: "token_acc".into(),
        threshold: 0.99,
        lower_is_better: false,
    }
}

impl Task for MadInContextRecall {
    fn io(&self) -> TaskIo {
        let v = self.vocab_size;
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
        let len = point.map_or(self.seq_len, |p| p.length);
        let time = self.time(len);
        let all_tokens = split == Split::Train && self.train_on_all_tokens;
        let mut inputs = vec![0i64; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let (tokens, scored) = self.stream(&mut rng, len);
            debug_assert_eq!(tokens.len(), time + 1);
            let row = e * time;
            inputs[row..row + time].copy_from_slice(&tokens[..time]);
            targets[row..row + time].copy_from_slice(&tokens[1..]);
            for (t, m) in mask[row..row + time].iter_mut().enumerate() {
                *m = f32::from(u8::from(all_tokens || scored[t + 1]));
            }
        }
        Batch {
            batch: batch_size,
            time,
            inputs: Inputs::Tokens(inputs),
            targets: Targets::Classes(targets),
            mask,
        }
    }

    fn chance(&self) -> f64 {
        let s = self.plain_tokens();
        1.0 / (s - s / 2) as f64
    }

    fn train_max_length(&self) -> usize {
        self.seq_len
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        length_points(&self.eval_lengths, self.seq_len)
    }

    fn success(&self) -> SuccessCriterion {
        token_acc_success()
    }
}

/// Oracle and mask checks shared with the noisy variant.
#[cfg(test)]
pub(crate) mod testing {
    use crate::{Batch, Inputs, Targets};

    /// At each step holding a key (a token in `keys`), the token that followed the latest earlier
    /// occurrence of that key; 0 elsewhere.
    pub(crate) fn recall_oracle(b: &Batch, keys: std::ops::Range<i64>) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            for t in (0..b.time).filter(|&t| keys.contains(&row[t])) {
                if let Some(s) = (0..t).rev().find(|&s| row[s] == row[t]) {
                    y[e * b.time + t] = row[s + 1];
                }
            }
        }
        Targets::Classes(y)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::recall_oracle;
    use super::*;
    use crate::testkit;

    /// Scored steps only in training too, so that the oracle and chance checks see the test mask.
    fn task(multi_query: bool) -> MadInContextRecall {
        MadInContextRecall::new(MadInContextRecallConfig {
            multi_query,
            train_on_all_tokens: false,
            eval_lengths: vec![4, 256],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(true), 64, |b| recall_oracle(b, 0..8));
        testkit::assert_oracle_solves(&task(false), 32, |b| recall_oracle(b, 0..7));
    }

    #[test]
    fn chance_matches_uniform_value_guesses() {
        testkit::assert_chance_matches(&task(true), 20, |b, rng| {
            testkit::uniform_classes(b, rng, 8..16)
        });
        // Single-query: S = 15, values 7..15.
        testkit::assert_chance_matches(&task(false), 200, |b, rng| {
            testkit::uniform_classes(b, rng, 7..15)
        });
    }

    /// Keys at even steps from 0..8 and values at odd steps from 8..16, each key bound to one
    /// value; the mask is 1 exactly at the keys seen before (in every split but a default training
    /// batch, which scores every step on the next token).
    #[test]
    fn layout_and_mask_follow_mad() {
        let t = task(true);
        for split in [Split::Train, Split::Valid, Split::Test] {
            let b = t.batch(split, 5, 1, 16, None);
            assert_eq!(b.time, 127);
            let (Inputs::Tokens(x), Targets::Classes(y)) = (&b.inputs, &b.targets) else {
                panic!()
            };
            for e in 0..16 {
                let (row, ys) = (&x[e * 127..(e + 1) * 127], &y[e * 127..(e + 1) * 127]);
                let mut bound = [None; 8];
                for t in 0..127 {
                    let tok = row[t];
                    if t % 2 == 0 {
                        assert!((0..8).contains(&tok), "key at {t}: {tok}");
                        let k = tok as usize;
                        assert_eq!(ys[t], if t + 1 < 127 { row[t + 1] } else { ys[t] });
                        let seen = bound[k].is_some();
                        assert_eq!(b.mask[e * 127 + t] == 1.0, seen, "step {t}");
                        let v = *bound[k].get_or_insert(ys[t]);
                        assert_eq!(ys[t], v, "a key keeps its value");
                    } else {
                        assert!((8..16).contains(&tok), "value at {t}: {tok}");
                        assert_eq!(b.mask[e * 127 + t], 0.0);
                    }
                }
                assert_eq!(b.mask[e * 127 + 126], 1.0, "the probe is scored");
            }
        }
        let default = MadInContextRecall::new(Default::default()).unwrap();
        let train = default.batch(Split::Train, 5, 1, 16, None);
        assert!(train.mask.iter().all(|&m| m == 1.0));
        for split in [Split::Valid, Split::Test] {
            assert_eq!(
                default.batch(split, 5, 1, 16, None),
                t.batch(split, 5, 1, 16, None),
                "evaluation splits do not depend on train_on_all_tokens"
            );
        }
        // Training on every step keeps the same inputs, with next tokens as targets.
        let scored_only = t.batch(Split::Train, 5, 1, 16, None);
        assert_eq!(train.inputs, scored_only.inputs);
        assert_eq!(train.targets, scored_only.targets);
    }

    #[test]
    fn single_query_scores_the_probe_after_the_copy_prefix() {
        let b = task(false).batch(Split::Test, 2, 0, 32, None);
        assert_eq!(b.time, 128);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        for e in 0..32 {
            let mask = &b.mask[e * 128..(e + 1) * 128];
            assert_eq!(mask.iter().sum::<f32>(), 1.0);
            assert_eq!(mask[127], 1.0);
            assert_eq!(x[e * 128 + 126], 15, "copy prefix");
        }
    }

    #[test]
    fn an_eval_point_sets_the_sequence_length() {
        let t = task(true);
        assert_eq!(
            t.batch(Split::Test, 0, 0, 2, Some(t.eval_points()[1])).time,
            255
        );
        assert_eq!(t.max_time(), 255);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: MadInContextRecallConfig| MadInContextRecall::new(cfg).err().unwrap();
        let e = bad(MadInContextRecallConfig {
            vocab_size: 1,
            ..Default::default()
        });
        assert_eq!(e.field, "vocab_size");
        assert!(e.to_string().contains("2..="), "{e}");
        let e = bad(MadInContextRecallConfig {
            seq_len: 127,
            ..Default::default()
        });
        assert_eq!(e.field, "seq_len");
        assert!(e.to_string().contains("even"), "{e}");
        assert_eq!(
            bad(MadInContextRecallConfig {
                eval_lengths: vec![2],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
        assert_eq!(
            bad(MadInContextRecallConfig {
                vocab_size: 2,
                multi_query: false,
                ..Default::default()
            })
            .field,
            "vocab_size"
        );
    }
}
