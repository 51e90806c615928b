//! MAD's memorization (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures"; athms/mad-lab `mad/data/instances.py`, `generate_kv_map` and
//! `generate_memorization_instance`, defaults from `configs/tasks/memorization.yml` and
//! `mad/configs.py`).
//!
//! A fixed key→value map, the same in every sequence, every split and every data seed, must be
//! learned in the weights: no sequence shows a key's value before asking for it. As in MAD, the
//! non-special tokens S = V - 1 split into keys 0..S/2 and values S/2..S, and the map sends each
//! key to a distinct value (MAD zips shuffled keys with shuffled values: a uniformly random
//! injection). The map is a pure function of the config — drawn from a ChaCha8 stream seeded by
//! `map_seed` (MAD seeds NumPy with its config seed, 12345), so it is not MAD's exact map — and
//! never of the data seed or split, so training and test share it.
//!
//! Token ids: keys 0..S/2, values S/2..S, insert token V - 1. Per example with L = `seq_len`:
//! L/2 pairs, each a key drawn uniformly (with replacement) followed by the insert token, whose
//! target is the key's value (MAD's targets, no shift):
//! * inputs: Tokens [B, L] in 0..V, k_0 I k_1 I …;
//! * targets: Classes [B, L], the value at odd steps;
//! * mask: 1 at the odd steps (the insert tokens), in training as in evaluation.
//!
//! The length is `seq_len` in training; an `eval_lengths` entry sets L (more pairs, the same map).
//!
//! Meant to be run with a finite training pool, as MAD does: its baseline trains on 256 sequences
//! for many epochs (`num_train_examples: 256`). A pool is the harness's `train.train_examples`
//! (issue #26), not part of the task; with fresh sequences every step (the default) the map is
//! still only learnable by memorizing, but the model sees far more key occurrences than MAD's.
//!
//! Chance: without the key, the best guess is any value in the map's image, uniform over its S/2
//! values: token accuracy 1 / ⌊S/2⌋ (1/127 at MAD's V = 256).

use crate::common::{
    each_even_in_range, even_in_range, first, in_range, length_points, Mistakes, MAX_STEPS,
};
use crate::mad_in_context_recall::token_acc_success;
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadMemorizationConfig {
    /// Token ids 0..vocab_size, the last the insert token (MAD baseline: 256; its harder settings
    /// 512..8192).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per sequence L, an even number: L/2 key-insert pairs (MAD: 32).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Seed of the key→value map, part of the task (MAD's config seed: 12345).
    #[serde(default = "default_map_seed")]
    pub map_seed: u64,
    /// Sequence lengths evaluated at the end of training; empty means `[seq_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_vocab_size() -> usize {
    256
}
fn default_seq_len() -> usize {
    32
}
fn default_map_seed() -> u64 {
    12345
}

impl Default for MadMemorizationConfig {
    fn default() -> Self {
        MadMemorizationConfig {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            map_seed: default_map_seed(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_memorization";

impl MadMemorizationConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        // At least two keys (else one constant answer) beside the insert token.
        m.ok(in_range(NAME, "vocab_size", self.vocab_size, 5, 1 << 30));
        m.ok(even_in_range(NAME, "seq_len", self.seq_len, 2, MAX_STEPS));
        m.ok(each_even_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            2,
            MAX_STEPS,
        ));
        m.into_vec()
    }

    /// The key→value map: entry k is key k's value. A function of `map_seed` and `vocab_size`
    /// alone.
    pub fn map(&self) -> Vec<i64> {
        let s = self.vocab_size - 1;
        let mut h = blake3::Hasher::new();
        h.update(b"membench-mad-memorization-map-v1");
        h.update(&self.map_seed.to_le_bytes());
        let mut rng = ChaCha8Rng::from_seed(*h.finalize().as_bytes());
        let mut values: Vec<i64> = (s / 2..s).map(|v| v as i64).collect();
        values.shuffle(&mut rng);
        values.truncate(s / 2);
        values
    }
}

pub struct MadMemorization {
    cfg: MadMemorizationConfig,
    map: Vec<i64>,
}

impl MadMemorization {
    pub fn new(cfg: MadMemorizationConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        let map = cfg.map();
        Ok(MadMemorization { cfg, map })
    }

    fn insert(&self) -> i64 {
        self.cfg.vocab_size as i64 - 1
    }
}

impl Task for MadMemorization {
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
        let time = point.map_or(self.cfg.seq_len, |p| p.length);
        let keys = self.map.len();
        let mut inputs = vec![self.insert(); batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            for p in (e * time..(e + 1) * time).step_by(2) {
                let k = rng.random_range(0..keys);
                inputs[p] = k as i64;
                targets[p + 1] = self.map[k];
                mask[p + 1] = 1.0;
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
        1.0 / self.map.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> MadMemorization {
        MadMemorization::new(MadMemorizationConfig {
            eval_lengths: vec![2, 128],
            ..Default::default()
        })
        .unwrap()
    }

    /// The key→value pairs a batch shows, from its inputs and targets.
    fn pairs(b: &Batch) -> Vec<(i64, i64)> {
        let (Inputs::Tokens(x), Targets::Classes(y)) = (&b.inputs, &b.targets) else {
            panic!()
        };
        (0..b.batch * b.time)
            .filter(|&p| b.mask[p] == 1.0)
            .map(|p| (x[p - 1], y[p]))
            .collect()
    }

    #[test]
    fn oracle_solves_every_batch() {
        let t = task();
        let map = t.map.clone();
        testkit::assert_oracle_solves(&t, 64, |b| {
            let Inputs::Tokens(x) = &b.inputs else {
                panic!()
            };
            // The learned weights: the map, applied to the token before each step.
            let y = (0..x.len())
                .map(|p| {
                    if p % 2 == 1 {
                        map[x[p - 1] as usize]
                    } else {
                        0
                    }
                })
                .collect();
            Targets::Classes(y)
        });
    }

    #[test]
    fn chance_matches_a_constant_value_guess() {
        let t = task();
        let guess = t.map[0];
        testkit::assert_chance_matches(&t, 40, |b, _| {
            Targets::Classes(vec![guess; b.batch * b.time])
        });
    }

    /// Keys at even steps from 0..127, the insert token at odd steps, scored there and only there.
    #[test]
    fn layout_and_mask_follow_mad() {
        let b = task().batch(Split::Train, 1, 0, 8, None);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        for (p, token) in x.iter().enumerate() {
            if p % 2 == 0 {
                assert!((0..127).contains(token));
                assert_eq!(b.mask[p], 0.0);
            } else {
                assert_eq!(*token, 255);
                assert_eq!(b.mask[p], 1.0);
            }
        }
    }

    /// The map is an injection of the 127 keys into the 128 values, identical in every split and
    /// for every data seed (what a test batch asks is what training taught), and it changes with
    /// `map_seed`.
    #[test]
    fn the_map_is_shared_by_splits_and_seeds_and_set_by_map_seed() {
        let t = task();
        let mut values = t.map.clone();
        assert_eq!(values.len(), 127);
        values.sort();
        values.dedup();
        assert_eq!(values.len(), 127);
        assert!(values.iter().all(|v| (127..255).contains(v)));
        for split in [Split::Train, Split::Valid, Split::Test] {
            for seed in [0, 1, 99] {
                for (k, v) in pairs(&t.batch(split, seed, 3, 16, None)) {
                    assert_eq!(t.map[k as usize], v, "{split:?} seed {seed}");
                }
            }
        }
        let rebuilt = MadMemorization::new(MadMemorizationConfig::default()).unwrap();
        assert_eq!(rebuilt.map, t.map, "a pure function of the config");
        let other = MadMemorization::new(MadMemorizationConfig {
            map_seed: 1,
            ..Default::default()
        })
        .unwrap();
        let same = (0..127).filter(|&k| other.map[k] == t.map[k]).count();
        assert!(same < 10, "{same} of 127 keys keep their value");
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: MadMemorizationConfig| MadMemorization::new(cfg).err().unwrap();
        assert_eq!(
            bad(MadMemorizationConfig {
                vocab_size: 4,
                ..Default::default()
            })
            .field,
            "vocab_size"
        );
        let e = bad(MadMemorizationConfig {
            seq_len: 31,
            ..Default::default()
        });
        assert_eq!(e.field, "seq_len");
        assert!(e.to_string().contains("even"), "{e}");
        assert_eq!(
            bad(MadMemorizationConfig {
                eval_lengths: vec![0],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
