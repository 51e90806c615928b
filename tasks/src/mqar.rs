//! Multi-query associative recall, MQAR (Arora et al. 2023, "Zoology: Measuring and Improving
//! Recall in Efficient Language Models"; generator after zoology's `multiquery_ar`).
//!
//! A sequence of `num_kv_pairs` key-value token pairs is followed by a region in which some of the
//! keys reappear, among random tokens; at each reappearing key the model must predict the value
//! bound to it. As in zoology, keys come from the lower half of the vocabulary (ids 1..V/2, 0 is
//! never a key) and values from the upper half (V/2..V), each drawn without replacement, and the
//! query keys sit at even offsets 2g of the query region, where the slots g are drawn without
//! replacement with probability ∝ (g+1)^(a-1) (a = `power_a` = 0.01: short gaps are likely, long
//! ones possible). Zoology queries every key (`num_queries` = `num_kv_pairs`); a smaller
//! `num_queries` queries a uniformly random subset. Which pair goes to which slot is uniformly
//! random. All remaining positions of the query region hold tokens uniform over the whole
//! vocabulary (zoology's `random_non_queries`).
//!
//! Per example, N = num_kv_pairs, Q = num_queries, T = seq_len:
//! * steps 0..2N: k_0 v_0 k_1 v_1 …;
//! * steps 2N..T: query key k_j at 2N + 2g_j with target v_j (zoology's labels after its shift);
//!   random tokens elsewhere.
//!
//! * inputs: Tokens [B, T] in 0..vocab_size;
//! * targets: Classes [B, T] in 0..vocab_size (the value ids);
//! * mask: 1 at the Q query positions of each example.
//!
//! The length is `seq_len` in training; an `eval_lengths` entry sets T (with the same N and Q).
//!
//! Chance: without the context the best guess is a value id, uniform over the V - V/2 of them:
//! token accuracy 1 / (V - ⌊V/2⌋).

use crate::common::{
    each_in_range, first, in_range, length_points, real_in_range, Mistakes, MAX_STEPS,
};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::seq::{index, SliceRandom};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqarConfig {
    /// Token ids 0..vocab_size; keys from 1..V/2, values from V/2..V (zoology's defaults: 8192;
    /// ours is small so that it trains on CPU).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Key-value pairs per sequence.
    #[serde(default = "default_num_kv_pairs")]
    pub num_kv_pairs: usize,
    /// Training sequence length T.
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Keys queried per sequence; absent means every key (zoology).
    #[serde(default)]
    pub num_queries: Option<usize>,
    /// Exponent a of the gap distribution p(g) ∝ (g+1)^(a-1) (zoology: 0.01).
    #[serde(default = "default_power_a")]
    pub power_a: f64,
    /// Sequence lengths evaluated at the end of training; empty means `[seq_len]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_vocab_size() -> usize {
    256
}
fn default_num_kv_pairs() -> usize {
    16
}
fn default_seq_len() -> usize {
    128
}
fn default_power_a() -> f64 {
    0.01
}

impl Default for MqarConfig {
    fn default() -> Self {
        MqarConfig {
            vocab_size: default_vocab_size(),
            num_kv_pairs: default_num_kv_pairs(),
            seq_len: default_seq_len(),
            num_queries: None,
            power_a: default_power_a(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mqar";

impl MqarConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let n_ok = m.ok(in_range(
            NAME,
            "num_kv_pairs",
            self.num_kv_pairs,
            1,
            MAX_STEPS / 4,
        ));
        let n = if n_ok { self.num_kv_pairs } else { 1 };
        // Keys are drawn without replacement from 1..V/2 and values from V/2..V: V/2 - 1 >= N.
        m.ok(in_range(
            NAME,
            "vocab_size",
            self.vocab_size,
            2 * n + 2,
            1 << 30,
        ));
        // Left out, num_queries is num_kv_pairs, whose mistake is its own.
        let q_ok = match self.num_queries {
            Some(q) => {
                let most = if n_ok { n } else { MAX_STEPS / 4 };
                m.ok(in_range(NAME, "num_queries", q, 1, most))
            }
            None => n_ok,
        };
        let q = if q_ok {
            self.num_queries.unwrap_or(n)
        } else {
            1
        };
        // Q query slots at even offsets of the T - 2N tokens after the pairs.
        let shortest = 2 * n + 2 * q;
        m.ok(in_range(NAME, "seq_len", self.seq_len, shortest, MAX_STEPS));
        m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            shortest,
            MAX_STEPS,
        ));
        m.ok(real_in_range(
            NAME,
            "power_a",
            self.power_a,
            f64::MIN_POSITIVE,
            1.0,
        ));
        m.into_vec()
    }
}

pub struct Mqar {
    cfg: MqarConfig,
    num_queries: usize,
}

impl Mqar {
    pub fn new(cfg: MqarConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        let q = cfg.num_queries.unwrap_or(cfg.num_kv_pairs);
        Ok(Mqar {
            cfg,
            num_queries: q,
        })
    }
}

impl Task for Mqar {
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
        let c = &self.cfg;
        let (v, n, q) = (c.vocab_size, c.num_kv_pairs, self.num_queries);
        let time = point.map_or(c.seq_len, |p| p.length);
        let half = v / 2;
        let slots = (time - 2 * n) / 2;
        // p(g) ∝ (g+1)^(a-1), computed once per batch rather than once per example.
        let weights: Vec<f64> = (0..slots)
            .map(|g| ((g + 1) as f64).powf(c.power_a - 1.0))
            .collect();
        let mut inputs = vec![0i64; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let x = &mut inputs[e * time..(e + 1) * time];
            // Noise first, then the pairs and queries overwrite their positions.
            x[2 * n..]
                .iter_mut()
                .for_each(|t| *t = rng.random_range(0..v as u32) as i64);
            let keys = index::sample(&mut rng, half - 1, n);
            let values = index::sample(&mut rng, v - half, n);
            for (j, (key, value)) in keys.iter().zip(values.iter()).enumerate() {
                x[2 * j] = (1 + key) as i64;
                x[2 * j + 1] = (half + value) as i64;
            }
            let mut gaps: Vec<usize> = index::sample_weighted(&mut rng, slots, |g| weights[g], q)
                .expect("weights are positive and finite")
                .into_vec();
            gaps.sort_unstable();
            let mut queried = index::sample(&mut rng, n, q).into_vec();
            queried.shuffle(&mut rng);
            for (&g, &j) in gaps.iter().zip(&queried) {
                let at = 2 * n + 2 * g;
                x[at] = x[2 * j];
                targets[e * time + at] = x[2 * j + 1];
                mask[e * time + at] = 1.0;
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
        // Zoology reports MQAR accuracy over query positions; architectures that solve a setting
        // sit at ~99-100% and those that fail far lower, so 0.99 separates them.
        SuccessCriterion {
            metric: "token_acc".into(),
            threshold: 0.99,
            lower_is_better: false,
        }
    }

    fn chance(&self) -> f64 {
        let v = self.cfg.vocab_size;
        1.0 / (v - v / 2) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> Mqar {
        Mqar::new(MqarConfig {
            eval_lengths: vec![64, 256],
            ..Default::default()
        })
        .unwrap()
    }

    /// At each position, answers the value that followed the latest earlier occurrence of the
    /// token as a key in the pair region.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let n = 16;
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            for t in 2 * n..b.time {
                if let Some(j) = (0..n).find(|&j| row[2 * j] == row[t]) {
                    y[e * b.time + t] = row[2 * j + 1];
                }
            }
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_uniform_value_guesses() {
        testkit::assert_chance_matches(&task(), 40, |b, rng| {
            testkit::uniform_classes(b, rng, 128..256)
        });
    }

    #[test]
    fn keys_and_values_come_from_their_halves_and_are_distinct() {
        let t = task();
        let b = t.batch(Split::Train, 4, 0, 32, None);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        for e in 0..32 {
            let row = &x[e * 128..(e + 1) * 128];
            let mut keys: Vec<i64> = (0..16).map(|j| row[2 * j]).collect();
            let mut values: Vec<i64> = (0..16).map(|j| row[2 * j + 1]).collect();
            assert!(
                keys.iter().all(|k| (1..128).contains(k))
                    && values.iter().all(|v| (128..256).contains(v))
            );
            keys.sort();
            keys.dedup();
            values.sort();
            values.dedup();
            assert_eq!((keys.len(), values.len()), (16, 16));
            assert_eq!(b.mask[e * 128..(e + 1) * 128].iter().sum::<f32>(), 16.0);
        }
    }

    #[test]
    fn short_gaps_are_more_likely_than_long_ones() {
        // With a = 0.01, p(g) ∝ (g+1)^-0.99: a query sits in the first quarter of the 48 slots
        // far more often than in the last quarter (weights sum ≈ 3.1 vs ≈ 0.28).
        let t = Mqar::new(MqarConfig {
            num_queries: Some(1),
            ..Default::default()
        })
        .unwrap();
        let b = t.batch(Split::Train, 0, 0, 2000, None);
        let (mut early, mut late) = (0, 0);
        for e in 0..2000 {
            let at = (32..128).find(|&s| b.mask[e * 128 + s] == 1.0).unwrap();
            let g = (at - 32) / 2;
            early += (g < 12) as usize;
            late += (g >= 36) as usize;
        }
        assert!(early > 5 * late, "early {early}, late {late}");
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: MqarConfig| Mqar::new(cfg).err().unwrap();
        let e = bad(MqarConfig {
            vocab_size: 32,
            ..Default::default()
        });
        assert_eq!(e.field, "vocab_size");
        assert!(e.to_string().contains("34..="), "{e}");
        assert_eq!(
            bad(MqarConfig {
                seq_len: 63,
                ..Default::default()
            })
            .field,
            "seq_len"
        );
        assert_eq!(
            bad(MqarConfig {
                num_queries: Some(17),
                ..Default::default()
            })
            .field,
            "num_queries"
        );
        assert_eq!(
            bad(MqarConfig {
                num_kv_pairs: 0,
                ..Default::default()
            })
            .field,
            "num_kv_pairs"
        );
        assert_eq!(
            bad(MqarConfig {
                eval_lengths: vec![40],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
        assert_eq!(
            bad(MqarConfig {
                power_a: 0.0,
                ..Default::default()
            })
            .field,
            "power_a"
        );
        assert!(Mqar::new(MqarConfig {
            seq_len: 64,
            vocab_size: 34,
            ..Default::default()
        })
        .is_ok());
    }
}
