//! MAD's fuzzy in-context recall (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures"; athms/mad-lab `mad/data/instances.py`, `generate_fuzzy_in_context_recall_instance`,
//! defaults from `configs/tasks/fuzzy-in-context-recall.yml`).
//!
//! In-context recall where keys and values are motifs of several adjacent tokens: a key is an
//! ordered tuple of 1..=`k_motif_size` distinct key tokens, a value one of 1..=`v_motif_size`
//! distinct value tokens (MAD's `generate_vocab_permutations`; a motif's size is drawn uniformly,
//! then the motif uniformly among the ordered tuples of that size). Within a sequence a key keeps
//! the value it was first shown with; at every repeat of a key (multi-query) the model must
//! predict each token of its value.
//!
//! Token ids, with S = V - 1 (multi-query) or V - 2 (single-query): keys 0..S/2, values S/2..S,
//! pad S (multi-query: V - 1; else V - 2), copy prefix V - 1 (single-query). At MAD's V = 16:
//! keys 0..7, values 7..15, pad 15.
//!
//! Per example (L = `seq_len`), as in MAD: a probe pair is drawn first; random pairs fill the
//! sequence until it reaches L - |probe| - (k_motif_size + v_motif_size) tokens, the probe pair
//! being inserted once the sequence has passed a uniformly drawn position; then [copy prefix] and
//! the probe pair close the sequence, and pad tokens fill its front to L + 1 tokens S_0..S_L.
//! Training keys (the train split) have uniformly random sizes 1..=k_motif_size; evaluation keys
//! (valid and test, MAD's `is_training=False`) always have k_motif_size tokens. As MAD trains a
//! language model on the shift, the model reads S_0..S_{L-1} and predicts S_1..S_L:
//! * inputs: Tokens [B, L] in 0..V;
//! * targets: Classes [B, L], the next token;
//! * mask, valid and test: 1 at the steps whose next token is a value token of a key shown earlier
//!   (the key's last token, and the value's tokens but its last), the probe included; in
//!   single-query mode the probe's only;
//! * mask, train: 1 at every step with `train_on_all_tokens` (MAD's training shift, the default);
//!   else as in evaluation.
//!
//! The length is `seq_len` in training; an `eval_lengths` entry sets L.
//!
//! Chance: a scored target is a token of a uniformly drawn value motif, uniform over the S - S/2
//! value tokens: 1/8 at the defaults.
//!
//! Differences from MAD's code: MAD draws the probe's position in 0..L - 2|probe| and can stop
//! adding pairs before reaching it, so a few percent of its training sequences end on a probe whose
//! key was never shown (unanswerable, yet scored). Here the position is drawn below the length at
//! which pairs stop, and the probe takes the place of the last random pair if that pair would end
//! the sequence first, so the probe is always answerable. MAD's optional noise (unused by its
//! fuzzy configs) is left out.

use crate::common::{each_in_range, first, in_range, length_points, Mistakes, MAX_STEPS};
use crate::mad_in_context_recall::{token_acc_success, yes};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::seq::index;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MadFuzzyInContextRecallConfig {
    /// Token ids 0..vocab_size (MAD baseline: 16).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Tokens per sequence L (MAD baseline: 128).
    #[serde(default = "default_seq_len")]
    pub seq_len: usize,
    /// Most tokens in a key; evaluation keys have exactly this many (MAD: 3).
    #[serde(default = "default_motif_size")]
    pub k_motif_size: usize,
    /// Most tokens in a value (MAD: 3).
    #[serde(default = "default_motif_size")]
    pub v_motif_size: usize,
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
    16
}
fn default_seq_len() -> usize {
    128
}
fn default_motif_size() -> usize {
    3
}

impl Default for MadFuzzyInContextRecallConfig {
    fn default() -> Self {
        MadFuzzyInContextRecallConfig {
            vocab_size: default_vocab_size(),
            seq_len: default_seq_len(),
            k_motif_size: default_motif_size(),
            v_motif_size: default_motif_size(),
            multi_query: true,
            train_on_all_tokens: true,
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "mad_fuzzy_in_context_recall";

impl MadFuzzyInContextRecallConfig {
    /// Special tokens: the pad, and the copy prefix in single-query mode.
    fn special(&self) -> usize {
        1 + usize::from(!self.multi_query)
    }

    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let v_ok = m.ok(in_range(
            NAME,
            "vocab_size",
            self.vocab_size,
            self.special() + 2,
            1 << 30,
        ));
        // Motifs are tuples of distinct tokens: no longer than the key (value) vocabulary.
        let s = if v_ok {
            self.vocab_size - self.special()
        } else {
            1 << 30
        };
        let k_ok = m.ok(in_range(
            NAME,
            "k_motif_size",
            self.k_motif_size,
            1,
            (s / 2).min(MAX_STEPS / 8),
        ));
        let val_ok = m.ok(in_range(
            NAME,
            "v_motif_size",
            self.v_motif_size,
            1,
            (s - s / 2).min(MAX_STEPS / 8),
        ));
        // The probe pair and one random pair of the largest sizes, and a position to insert at.
        let motifs =
            if k_ok { self.k_motif_size } else { 1 } + if val_ok { self.v_motif_size } else { 1 };
        let shortest = 2 * motifs + 1;
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

pub struct MadFuzzyInContextRecall {
    cfg: MadFuzzyInContextRecallConfig,
    /// Key tokens 0..keys, value tokens keys..keys + values.
    keys: usize,
    values: usize,
}

impl MadFuzzyInContextRecall {
    pub fn new(cfg: MadFuzzyInContextRecallConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        let s = cfg.vocab_size - cfg.special();
        Ok(MadFuzzyInContextRecall {
            cfg,
            keys: s / 2,
            values: s - s / 2,
        })
    }

    fn pad(&self) -> i64 {
        (self.keys + self.values) as i64
    }

    /// An ordered tuple of `size` distinct tokens from `first..first + n`, uniform among them.
    fn motif(rng: &mut ChaCha8Rng, first: usize, n: usize, size: usize) -> Vec<i64> {
        index::sample(rng, n, size)
            .into_iter()
            .map(|i| (first + i) as i64)
            .collect()
    }

    /// One example's token stream S_0..S_L and whether each token is a scored target.
    fn stream(&self, rng: &mut ChaCha8Rng, len: usize, training: bool) -> (Vec<i64>, Vec<bool>) {
        let c = &self.cfg;
        let (km, vm) = (c.k_motif_size, c.v_motif_size);
        let key_size = |rng: &mut ChaCha8Rng| {
            if training {
                rng.random_range(1..=km)
            } else {
                km
            }
        };
        let probe_k_size = key_size(rng);
        let probe_v_size = rng.random_range(1..=vm);
        let probe_k = Self::motif(rng, 0, self.keys, probe_k_size);
        let probe_v = Self::motif(rng, self.keys, self.values, probe_v_size);
        let probe_len = probe_k.len() + probe_v.len();
        let stop = len - probe_len - (km + vm);
        let insert_at = rng.random_range(0..stop);
        let mut tokens = Vec::with_capacity(len + 1);
        let mut scored = Vec::with_capacity(len + 1);
        let mut bound: BTreeMap<Vec<i64>, Vec<i64>> = BTreeMap::new();
        let mut probe_shown = false;
        while tokens.len() < stop {
            let k_size = key_size(rng);
            let v_size = rng.random_range(1..=vm);
            let last_pair = tokens.len() + k_size + v_size >= stop;
            if !probe_shown && (tokens.len() >= insert_at || last_pair) {
                tokens.extend(probe_k.iter().chain(&probe_v));
                scored.resize(tokens.len(), false);
                bound.insert(probe_k.clone(), probe_v.clone());
                probe_shown = true;
                continue;
            }
            let key = Self::motif(rng, 0, self.keys, k_size);
            let seen = bound.contains_key(&key);
            probe_shown |= key == probe_k;
            let value = match bound.get(&key) {
                Some(v) => v.clone(),
                None if key == probe_k => probe_v.clone(),
                None => Self::motif(rng, self.keys, self.values, v_size),
            };
            tokens.extend(&key);
            scored.resize(tokens.len(), false);
            tokens.extend(&value);
            scored.resize(tokens.len(), c.multi_query && seen);
            bound.insert(key, value);
        }
        if !c.multi_query {
            tokens.push(c.vocab_size as i64 - 1);
            scored.push(false);
        }
        tokens.extend(&probe_k);
        scored.resize(tokens.len(), false);
        tokens.extend(&probe_v);
        scored.resize(tokens.len(), true);
        // Pad the front to L + 1 tokens, as MAD does before its shift.
        let pad = len + 1 - tokens.len();
        let mut padded = vec![self.pad(); pad];
        padded.extend(tokens);
        let mut padded_scored = vec![false; pad];
        padded_scored.extend(scored);
        (padded, padded_scored)
    }
}

impl Task for MadFuzzyInContextRecall {
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
        let training = split == Split::Train;
        let all_tokens = training && self.cfg.train_on_all_tokens;
        let mut inputs = vec![0i64; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for e in 0..batch_size {
            let mut rng = crate::example_rng(seed, split, index, e);
            let (tokens, scored) = self.stream(&mut rng, time, training);
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
        1.0 / self.values as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task(multi_query: bool) -> MadFuzzyInContextRecall {
        MadFuzzyInContextRecall::new(MadFuzzyInContextRecallConfig {
            multi_query,
            train_on_all_tokens: false,
            eval_lengths: vec![13, 256],
            ..Default::default()
        })
        .unwrap()
    }

    /// Maximal runs of key tokens (0..7) in a row, as (start, end).
    fn key_runs(row: &[i64]) -> Vec<(usize, usize)> {
        let mut runs = vec![];
        let mut t = 0;
        while t < row.len() {
            if (0..7).contains(&row[t]) {
                let start = t;
                while t < row.len() && (0..7).contains(&row[t]) {
                    t += 1;
                }
                runs.push((start, t));
            } else {
                t += 1;
            }
        }
        runs
    }

    /// Reads the row as runs of key tokens each followed by value tokens (7..15); at a key run
    /// shown before, predicts the earlier value from the key's last token on.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let mut bound: BTreeMap<&[i64], &[i64]> = BTreeMap::new();
            for (a, z) in key_runs(row) {
                let end = (z..row.len())
                    .find(|&t| !(7..15).contains(&row[t]))
                    .unwrap_or(row.len());
                if let Some(value) = bound.get(&row[a..z]) {
                    for (i, &v) in value.iter().enumerate() {
                        if z - 1 + i < b.time {
                            y[e * b.time + z - 1 + i] = v;
                        }
                    }
                } else {
                    bound.insert(&row[a..z], &row[z..end]);
                }
            }
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(true), 64, oracle);
        testkit::assert_oracle_solves(&task(false), 32, oracle);
    }

    #[test]
    fn chance_matches_uniform_value_guesses() {
        testkit::assert_chance_matches(&task(true), 20, |b, rng| {
            testkit::uniform_classes(b, rng, 7..15)
        });
    }

    /// Evaluation keys have k_motif_size tokens; training keys every size 1..=3. Each row is pad
    /// tokens, then key runs each followed by a value run, all motifs of distinct tokens.
    #[test]
    fn motif_sizes_follow_the_split() {
        let t = task(true);
        for split in [Split::Train, Split::Valid, Split::Test] {
            let b = t.batch(split, 3, 0, 64, None);
            assert_eq!(b.time, 128);
            let Inputs::Tokens(x) = &b.inputs else {
                panic!()
            };
            let mut sizes = [0usize; 4];
            for e in 0..64 {
                let row = &x[e * 128..(e + 1) * 128];
                let first = row.iter().position(|&t| t != 15).unwrap();
                assert!(
                    first > 0 && row[first..].iter().all(|&t| t != 15),
                    "front pad"
                );
                assert!((0..7).contains(&row[first]), "a key comes first");
                for (a, z) in key_runs(row) {
                    let mut motif = row[a..z].to_vec();
                    motif.sort();
                    motif.dedup();
                    assert_eq!(motif.len(), z - a, "distinct tokens in a key");
                    assert!(z - a <= 3);
                    sizes[z - a] += 1;
                }
            }
            if split == Split::Train {
                assert!(sizes[1] > 0 && sizes[2] > 0 && sizes[3] > 0, "{sizes:?}");
            } else {
                assert_eq!((sizes[1], sizes[2]), (0, 0), "{split:?}");
            }
        }
    }

    /// The scored steps are exactly those whose next token belongs to the value of a key seen
    /// before (what the oracle answers), and the probe at the end is always one of them.
    #[test]
    fn mask_marks_the_values_of_repeated_keys() {
        let t = task(true);
        let b = t.batch(Split::Test, 8, 0, 64, None);
        let Targets::Classes(want) = oracle(&b) else {
            panic!()
        };
        let Targets::Classes(y) = &b.targets else {
            panic!()
        };
        for p in 0..64 * 128 {
            assert_eq!(b.mask[p] == 1.0, want[p] != 0, "at {p}");
            if want[p] != 0 {
                assert_eq!(y[p], want[p], "at {p}");
            }
        }
        for e in 0..64 {
            assert_eq!(b.mask[e * 128 + 127], 1.0, "the probe value's last token");
        }
        let default = MadFuzzyInContextRecall::new(Default::default()).unwrap();
        assert!(default
            .batch(Split::Train, 8, 0, 4, None)
            .mask
            .iter()
            .all(|&m| m == 1.0));
        assert_eq!(
            default.batch(Split::Test, 8, 0, 64, None),
            b,
            "evaluation does not depend on train_on_all_tokens"
        );
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad =
            |cfg: MadFuzzyInContextRecallConfig| MadFuzzyInContextRecall::new(cfg).err().unwrap();
        let e = bad(MadFuzzyInContextRecallConfig {
            k_motif_size: 8,
            ..Default::default()
        });
        assert_eq!(e.field, "k_motif_size");
        assert!(e.to_string().contains("1..=7"), "{e}");
        assert_eq!(
            bad(MadFuzzyInContextRecallConfig {
                v_motif_size: 0,
                ..Default::default()
            })
            .field,
            "v_motif_size"
        );
        let e = bad(MadFuzzyInContextRecallConfig {
            seq_len: 12,
            ..Default::default()
        });
        assert_eq!(e.field, "seq_len");
        assert!(e.to_string().contains("13..="), "{e}");
        assert_eq!(
            bad(MadFuzzyInContextRecallConfig {
                vocab_size: 3,
                multi_query: false,
                ..Default::default()
            })
            .field,
            "vocab_size"
        );
        assert_eq!(
            bad(MadFuzzyInContextRecallConfig {
                eval_lengths: vec![12],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
