//! Passkey retrieval (Mohtashami & Jaggi 2023, "Landmark Attention: Random-Access Infinite
//! Context Length for Transformers"), as a token task whose two axes, context length and
//! depth of the key, form the evaluation grid.
//!
//! A key of `key_len` digit tokens, announced by a key marker, is hidden in a haystack of random
//! filler tokens; after the haystack the model sees `key_len` query markers and must output the
//! key, one digit per query step. The paper's filler is a repeated sentence; random filler tokens
//! (disjoint from the digits) keep the haystack incompressible, so only the key needs remembering.
//!
//! Token ids: 0 = key marker, 1 = query marker, 2..2+key_vocab = digits,
//! 2+key_vocab..2+key_vocab+filler_vocab = filler. Per example with length L and depth d ∈ [0, 1]:
//! * steps 0..L: filler, except the key block [key marker, digit_1 … digit_k] starting at
//!   s = round(d · (L - k - 1)): d = 0 puts it first, d = 1 last, right before the query;
//! * steps L..L+k: query marker; target at step L+i = digit_{i+1}.
//!
//! * inputs: Tokens [B, T] in 0..vocab, T = L + key_len (one L per batch);
//! * targets: Classes [B, T] in 0..vocab (digit ids on scored steps);
//! * mask: 1 on the key_len query steps.
//!
//! Training uses L = `length` and draws d uniform in [`min_depth`, `max_depth`] per example; the
//! evaluation points are every (length, depth) of `eval_lengths` × `eval_depths`, and a point
//! without a depth draws it from the training range.
//!
//! Chance: digits are uniform, so an input-ignoring guess has token accuracy 1/key_vocab and
//! retrieves the whole key (the success metric, sequence accuracy) with probability
//! key_vocab^-key_len (1e-5 with the defaults).

use crate::common::{each_in_range, first, in_range, real_in_range, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyConfig {
    /// Training haystack length L in tokens (including the key block).
    #[serde(default = "default_length")]
    pub length: usize,
    /// Shallowest training depth, in [0, 1].
    #[serde(default)]
    pub min_depth: f64,
    /// Deepest training depth, in [min_depth, 1].
    #[serde(default = "default_max_depth")]
    pub max_depth: f64,
    /// Digits in the key (the paper's keys are 5-digit numbers).
    #[serde(default = "default_key_len")]
    pub key_len: usize,
    /// Distinct digit tokens (10 for decimal keys).
    #[serde(default = "default_key_vocab")]
    pub key_vocab: usize,
    /// Distinct filler tokens.
    #[serde(default = "default_filler_vocab")]
    pub filler_vocab: usize,
    /// Haystack lengths evaluated at the end of training; empty means `[length]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
    /// Depths evaluated at each length; empty means `[0, 0.25, 0.5, 0.75, 1]`.
    #[serde(default)]
    pub eval_depths: Vec<f64>,
}

fn default_length() -> usize {
    256
}
fn default_max_depth() -> f64 {
    1.0
}
fn default_key_len() -> usize {
    5
}
fn default_key_vocab() -> usize {
    10
}
fn default_filler_vocab() -> usize {
    16
}

impl Default for PasskeyConfig {
    fn default() -> Self {
        PasskeyConfig {
            length: default_length(),
            min_depth: 0.0,
            max_depth: default_max_depth(),
            key_len: default_key_len(),
            key_vocab: default_key_vocab(),
            filler_vocab: default_filler_vocab(),
            eval_lengths: vec![],
            eval_depths: vec![],
        }
    }
}

const NAME: &str = "passkey";
const KEY_MARKER: i64 = 0;
const QUERY_MARKER: i64 = 1;
const FIRST_DIGIT: i64 = 2;

impl PasskeyConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let kl_ok = m.ok(in_range(NAME, "key_len", self.key_len, 1, 1024));
        m.ok(in_range(NAME, "key_vocab", self.key_vocab, 2, 1 << 20));
        m.ok(in_range(
            NAME,
            "filler_vocab",
            self.filler_vocab,
            1,
            1 << 20,
        ));
        // The key block (marker + digits) must fit in the haystack.
        let key_len = if kl_ok { self.key_len } else { 1 };
        let (shortest, longest) = (key_len + 1, MAX_STEPS - key_len);
        m.ok(in_range(NAME, "length", self.length, shortest, longest));
        m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            shortest,
            longest,
        ));
        let min_ok = m.ok(real_in_range(NAME, "min_depth", self.min_depth, 0.0, 1.0));
        let min_depth = if min_ok { self.min_depth } else { 0.0 };
        m.ok(real_in_range(
            NAME,
            "max_depth",
            self.max_depth,
            min_depth,
            1.0,
        ));
        if let Some(&bad) = self.eval_depths.iter().find(|d| !(0.0..=1.0).contains(*d)) {
            m.push(TaskError::new(
                NAME,
                "eval_depths",
                bad,
                "each expected 0..=1",
            ));
        }
        m.into_vec()
    }
}

pub struct Passkey {
    cfg: PasskeyConfig,
}

impl Passkey {
    pub fn new(cfg: PasskeyConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(Passkey { cfg })
    }

    fn vocab(&self) -> usize {
        2 + self.cfg.key_vocab + self.cfg.filler_vocab
    }
}

impl Task for Passkey {
    fn io(&self) -> TaskIo {
        let v = self.vocab();
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
        let k = c.key_len;
        let len = point.map_or(c.length, |p| p.length);
        let time = len + k;
        let first_filler = FIRST_DIGIT + c.key_vocab as i64;
        let mut inputs = vec![QUERY_MARKER; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let depth = match point.and_then(|p| p.depth) {
                Some(d) => d,
                None => rng.random_range(c.min_depth..=c.max_depth),
            };
            let row = &mut inputs[e * time..(e + 1) * time];
            let start = (depth * (len - k - 1) as f64).round() as usize;
            row[..start].iter_mut().for_each(|t| {
                *t = first_filler + rng.random_range(0..c.filler_vocab as u32) as i64
            });
            row[start + k + 1..len].iter_mut().for_each(|t| {
                *t = first_filler + rng.random_range(0..c.filler_vocab as u32) as i64
            });
            row[start] = KEY_MARKER;
            for i in 0..k {
                let digit = FIRST_DIGIT + rng.random_range(0..c.key_vocab as u32) as i64;
                row[start + 1 + i] = digit;
                targets[e * time + len + i] = digit;
            }
            mask[e * time + len..(e + 1) * time].fill(1.0);
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
        self.cfg.length
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        let lengths = if self.cfg.eval_lengths.is_empty() {
            vec![self.cfg.length]
        } else {
            self.cfg.eval_lengths.clone()
        };
        let depths = if self.cfg.eval_depths.is_empty() {
            vec![0.0, 0.25, 0.5, 0.75, 1.0]
        } else {
            self.cfg.eval_depths.clone()
        };
        lengths
            .iter()
            .flat_map(|&length| {
                depths.iter().map(move |&d| EvalPoint {
                    length,
                    depth: Some(d),
                })
            })
            .collect()
    }

    fn success(&self) -> SuccessCriterion {
        // Passkey accuracy counts a retrieval right only when the whole key is; 0.95 allows one
        // miss in twenty keys, far above chance (key_vocab^-key_len).
        SuccessCriterion {
            metric: "seq_acc".into(),
            threshold: 0.95,
            lower_is_better: false,
        }
    }

    fn chance(&self) -> f64 {
        (self.cfg.key_vocab as f64).powi(-(self.cfg.key_len as i32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn cfg() -> PasskeyConfig {
        PasskeyConfig {
            length: 64,
            eval_lengths: vec![6, 300],
            ..Default::default()
        }
    }

    /// Finds the key marker and answers the digits after it on the query steps.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let s = row
                .iter()
                .position(|&t| t == KEY_MARKER)
                .expect("key marker");
            let q = b.time - 5;
            y[e * b.time + q..(e + 1) * b.time].copy_from_slice(&row[s + 1..s + 6]);
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&Passkey::new(cfg()).unwrap(), 64, oracle);
    }

    #[test]
    fn chance_matches_uniform_digit_guesses() {
        let guess = |b: &Batch, rng: &mut _| {
            testkit::uniform_classes(b, rng, FIRST_DIGIT..FIRST_DIGIT + 10)
        };
        testkit::assert_chance_matches(&Passkey::new(cfg()).unwrap(), 100, guess);
        // Per digit the guess is right 1/10 of the time: a chance level with room to miss.
        let easy = Passkey::new(PasskeyConfig {
            key_len: 1,
            ..cfg()
        })
        .unwrap();
        testkit::assert_chance_matches(&easy, 100, guess);
    }

    #[test]
    fn depth_places_the_key() {
        let t = Passkey::new(cfg()).unwrap();
        for (depth, start) in [(0.0, 0), (0.5, 29), (1.0, 58)] {
            let b = t.batch(
                Split::Test,
                1,
                0,
                4,
                Some(EvalPoint {
                    length: 64,
                    depth: Some(depth),
                }),
            );
            let Inputs::Tokens(x) = &b.inputs else {
                panic!()
            };
            assert_eq!(b.time, 69);
            for e in 0..4 {
                assert_eq!(x[e * 69 + start], KEY_MARKER, "depth {depth}");
                assert_eq!(
                    x[e * 69..(e + 1) * 69]
                        .iter()
                        .filter(|&&t| t == KEY_MARKER)
                        .count(),
                    1
                );
            }
        }
    }

    #[test]
    fn eval_points_are_the_grid() {
        let t = Passkey::new(PasskeyConfig {
            eval_lengths: vec![32, 64],
            eval_depths: vec![0.0, 1.0],
            ..cfg()
        })
        .unwrap();
        let got: Vec<(usize, Option<f64>)> = t
            .eval_points()
            .iter()
            .map(|p| (p.length, p.depth))
            .collect();
        assert_eq!(
            got,
            vec![
                (32, Some(0.0)),
                (32, Some(1.0)),
                (64, Some(0.0)),
                (64, Some(1.0))
            ]
        );
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |c: PasskeyConfig| Passkey::new(c).err().unwrap();
        assert_eq!(bad(PasskeyConfig { length: 5, ..cfg() }).field, "length");
        assert_eq!(
            bad(PasskeyConfig {
                eval_lengths: vec![5],
                ..cfg()
            })
            .field,
            "eval_lengths"
        );
        assert_eq!(
            bad(PasskeyConfig {
                min_depth: -0.1,
                ..cfg()
            })
            .field,
            "min_depth"
        );
        assert_eq!(
            bad(PasskeyConfig {
                min_depth: 0.6,
                max_depth: 0.5,
                ..cfg()
            })
            .field,
            "max_depth"
        );
        assert_eq!(
            bad(PasskeyConfig {
                max_depth: 1.5,
                ..cfg()
            })
            .field,
            "max_depth"
        );
        assert_eq!(
            bad(PasskeyConfig {
                eval_depths: vec![0.5, 1.01],
                ..cfg()
            })
            .field,
            "eval_depths"
        );
        assert_eq!(
            bad(PasskeyConfig {
                key_len: 0,
                ..cfg()
            })
            .field,
            "key_len"
        );
        assert_eq!(
            bad(PasskeyConfig {
                key_vocab: 1,
                ..cfg()
            })
            .field,
            "key_vocab"
        );
        assert_eq!(
            bad(PasskeyConfig {
                filler_vocab: 0,
                ..cfg()
            })
            .field,
            "filler_vocab"
        );
    }
}
