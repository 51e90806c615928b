//! MAD's noisy in-context recall (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures"; athms/mad-lab `mad/data/instances.py`, `generate_noisy_in_context_recall_instance`,
//! defaults from `configs/tasks/noisy-in-context-recall.yml`).
//!
//! In-context recall (see [`crate::mad_in_context_recall`], whose generator this shares) where each
//! of the L/2 - 1 random pairs is, with probability `frac_noise`, replaced by two noise tokens
//! drawn uniformly from a separate noise vocabulary; one random pair is never noise. Noise is never
//! scored in evaluation; with `train_on_all_tokens` (MAD's training shift) it is a next-token
//! target in training, as in MAD.
//!
//! Token ids, with S = V - noise_vocab_size (multi-query; one fewer with the single-query copy
//! prefix V - 1): keys 0..S/2, values S/2..S, noise S..S + noise_vocab_size. MAD's baseline is
//! V = 32 with 16 noise tokens ("adding 16 for noise vocab", its config says), so keys 0..8,
//! values 8..16, noise 16..32, and `frac_noise` 0.2 (its harder settings: 0.4, 0.6, 0.8).
//!
//! Shapes, mask and lengths as in `mad_in_context_recall`: T = L - 1 (multi-query) or L;
//! inputs Tokens [B, T] in 0..V; targets Classes [B, T] (the next token); mask 1 at repeated keys
//! (every step in training with `train_on_all_tokens`). An `eval_lengths` entry sets L.
//!
//! Chance: a uniform guess over the S - S/2 values, 1/8 at the defaults.

use crate::common::{first, fraction_below_one, in_range, Mistakes};
use crate::mad_in_context_recall::{recall_mistakes, yes, MadInContextRecall};
use crate::TaskError;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadNoisyInContextRecallConfig {
    /// Token ids 0..vocab_size, noise tokens included (MAD baseline: 32).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Noise tokens, the top of the non-special vocabulary (MAD: 16).
    #[serde(default = "default_noise_vocab_size")]
    pub noise_vocab_size: usize,
    /// Probability that a random pair is replaced by two noise tokens, in [0, 1) (MAD: 0.2).
    #[serde(default = "default_frac_noise")]
    pub frac_noise: f64,
    /// Tokens per sequence L, an even number (MAD baseline: 128).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Score every repeated key (MAD's `multi_query`: true); false scores only a final probe.
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
    32
}
fn default_noise_vocab_size() -> usize {
    16
}
fn default_frac_noise() -> f64 {
    0.2
}
fn default_seq_len() -> usize {
    128
}

impl Default for MadNoisyInContextRecallConfig {
    fn default() -> Self {
        MadNoisyInContextRecallConfig {
            vocab_size: default_vocab_size(),
            noise_vocab_size: default_noise_vocab_size(),
            frac_noise: default_frac_noise(),
            seq_len: default_seq_len(),
            multi_query: true,
            train_on_all_tokens: true,
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_noisy_in_context_recall";

impl MadNoisyInContextRecallConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let noise_ok = m.ok(in_range(
            NAME,
            "noise_vocab_size",
            self.noise_vocab_size,
            1,
            1 << 29,
        ));
        m.ok(fraction_below_one(NAME, "frac_noise", self.frac_noise));
        recall_mistakes(
            &mut m,
            NAME,
            self.vocab_size,
            self.multi_query,
            (self.noise_vocab_size, noise_ok),
            self.seq_len,
            &self.eval_lengths,
        );
        m.into_vec()
    }
}

/// The task is [`MadInContextRecall`] with noise tokens; this is its constructor.
impl MadInContextRecall {
    pub fn noisy(cfg: MadNoisyInContextRecallConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(MadInContextRecall {
            vocab_size: cfg.vocab_size,
            seq_len: cfg.seq_len,
            multi_query: cfg.multi_query,
            train_on_all_tokens: cfg.train_on_all_tokens,
            noise_vocab_size: cfg.noise_vocab_size,
            frac_noise: cfg.frac_noise,
            eval_lengths: cfg.eval_lengths,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mad_in_context_recall::testing::recall_oracle;
    use crate::{testkit, Inputs, Split, Task};

    fn task(frac_noise: f64) -> MadInContextRecall {
        MadInContextRecall::noisy(MadNoisyInContextRecallConfig {
            frac_noise,
            train_on_all_tokens: false,
            eval_lengths: vec![4, 256],
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(0.2), 64, |b| recall_oracle(b, 0..8));
        testkit::assert_oracle_solves(&task(0.95), 32, |b| recall_oracle(b, 0..8));
    }

    #[test]
    fn chance_matches_uniform_value_guesses() {
        testkit::assert_chance_matches(&task(0.2), 20, |b, rng| {
            testkit::uniform_classes(b, rng, 8..16)
        });
    }

    /// Noise comes in whole pairs from 16..32, at MAD's rate, and is never scored in evaluation.
    #[test]
    fn noise_pairs_at_the_configured_rate() {
        let t = task(0.4);
        let b = t.batch(Split::Test, 1, 0, 256, None);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        let (mut noise_pairs, mut pairs) = (0usize, 0usize);
        for e in 0..256 {
            let row = &x[e * 127..(e + 1) * 127];
            // The 63 random pairs; the probe key sits at step 126.
            for p in 0..63 {
                let (k, v) = (row[2 * p], row[2 * p + 1]);
                let noise = (16..32).contains(&k);
                assert_eq!(noise, (16..32).contains(&v), "noise comes in pairs");
                if noise {
                    assert_eq!(b.mask[e * 127 + 2 * p], 0.0);
                } else {
                    assert!((0..8).contains(&k) && (8..16).contains(&v));
                }
                noise_pairs += noise as usize;
                pairs += 1;
            }
        }
        // One pair per sequence is kept, so the rate is 0.4 · 62/63; s.e. ≈ 0.004.
        let rate = noise_pairs as f64 / pairs as f64;
        assert!((rate - 0.4 * 62.0 / 63.0).abs() < 0.02, "{rate}");
        let default = MadInContextRecall::noisy(Default::default()).unwrap();
        let train = default.batch(Split::Train, 1, 0, 4, None);
        assert!(
            train.mask.iter().all(|&m| m == 1.0),
            "MAD trains on every step"
        );
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad =
            |cfg: MadNoisyInContextRecallConfig| MadInContextRecall::noisy(cfg).err().unwrap();
        let e = bad(MadNoisyInContextRecallConfig {
            vocab_size: 17,
            ..Default::default()
        });
        assert_eq!(e.field, "vocab_size");
        assert!(e.to_string().contains("18..="), "{e}");
        assert_eq!(
            bad(MadNoisyInContextRecallConfig {
                frac_noise: 1.0,
                ..Default::default()
            })
            .field,
            "frac_noise"
        );
        assert_eq!(
            bad(MadNoisyInContextRecallConfig {
                noise_vocab_size: 0,
                ..Default::default()
            })
            .field,
            "noise_vocab_size"
        );
        assert_eq!(
            bad(MadNoisyInContextRecallConfig {
                seq_len: 3,
                ..Default::default()
            })
            .field,
            "seq_len"
        );
    }
}
