//! Associative recall (Graves, Wayne & Danihelka 2014, "Neural Turing Machines", §4.3).
//!
//! The model reads n items, each `item_len` random `bits`-wide vectors preceded by an item
//! delimiter, then a query item enclosed by query delimiters; it must then write the item that
//! followed the query in the list. Items within an example are distinct, so the answer is unique.
//!
//! Per example with n items and k = item_len (channels: 0..W data, W item delimiter, W+1 query
//! delimiter):
//! * item i occupies steps i·(k+1) (delimiter) and i·(k+1)+1 ..= i·(k+1)+k (vectors);
//! * q0 = n·(k+1): query delimiter; q0+1 ..= q0+k: item q (q uniform in 0..n-1, so it has a
//!   successor); q0+k+1: query delimiter again;
//! * steps q0+k+2 .. q0+2k+2: target = item q+1, blank input.
//!
//! * inputs: Dense [B, T, bits + 2], T = max over the batch of n·(k+1) + 2k + 2;
//! * targets: Bits [B, T, bits];
//! * mask: 1 on the k answer steps of each example.
//!
//! Training draws n uniform in `min_items..=max_items`; an `eval_lengths` entry fixes n (the
//! evaluation "length" of this task is its number of items).
//!
//! Chance: an input-ignoring predictor (all zeros, or coin flips) gets each answer bit wrong half
//! the time: bits/2 · item_len bit errors per sequence (9 for Graves's 6 bits × 3 vectors).

use crate::common::{each_in_range, first, in_range, length_points, BitDraws, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssociativeRecallConfig {
    /// Width of each vector (Graves: 6).
    #[serde(default = "default_bits")]
    pub bits: usize,
    /// Vectors per item (Graves: 3).
    #[serde(default = "default_item_len")]
    pub item_len: usize,
    /// Fewest items in a training list (Graves: 2).
    #[serde(default = "default_min_items")]
    pub min_items: usize,
    /// Most items in a training list (Graves: 6).
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// Numbers of items evaluated at the end of training; empty means `[max_items]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_bits() -> usize {
    6
}
fn default_item_len() -> usize {
    3
}
fn default_min_items() -> usize {
    2
}
fn default_max_items() -> usize {
    6
}

impl Default for AssociativeRecallConfig {
    fn default() -> Self {
        AssociativeRecallConfig {
            bits: default_bits(),
            item_len: default_item_len(),
            min_items: default_min_items(),
            max_items: default_max_items(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "associative_recall";

impl AssociativeRecallConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let bits_ok = m.ok(in_range(NAME, "bits", self.bits, 1, 1024));
        let k_ok = m.ok(in_range(NAME, "item_len", self.item_len, 1, 1024));
        let k = if k_ok { self.item_len } else { 1 };
        // n·(k+1) + 2k + 2 steps must fit in MAX_STEPS.
        let most_items = (MAX_STEPS - 2 * k - 2) / (k + 1);
        let min_ok = m.ok(in_range(NAME, "min_items", self.min_items, 2, most_items));
        let max_ok = m.at_least(
            NAME,
            "max_items",
            self.max_items,
            ("min_items", self.min_items, min_ok),
            2,
            most_items,
        );
        let eval_ok = m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            2,
            most_items,
        ));
        // Distinct items by rejection: keep at least twice as many possible items as drawn ones,
        // so a redraw is needed less than half the time. Judged only on valid sizes.
        if bits_ok && k_ok && max_ok && eval_ok {
            let n_max = self
                .eval_lengths
                .iter()
                .copied()
                .chain([self.max_items])
                .max()
                .unwrap_or(0);
            let item_bits = self.bits * k;
            if item_bits < 64 && (1u128 << item_bits) < 2 * n_max as u128 {
                m.push(TaskError::new(
                    NAME,
                    "bits",
                    self.bits,
                    format!("bits · item_len must be >= log2(2 · {n_max} items) so that items can be distinct"),
                ));
            }
        }
        m.into_vec()
    }
}

pub struct AssociativeRecall {
    cfg: AssociativeRecallConfig,
}

impl AssociativeRecall {
    pub fn new(cfg: AssociativeRecallConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(AssociativeRecall { cfg })
    }
}

impl Task for AssociativeRecall {
    fn io(&self) -> TaskIo {
        TaskIo {
            input: InputKind::Dense {
                width: self.cfg.bits + 2,
            },
            output: OutputKind::Bits {
                width: self.cfg.bits,
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
        let c = &self.cfg;
        let (w, k) = (c.bits, c.item_len);
        let (in_w, item_size) = (w + 2, w * k);
        let mut rngs: Vec<_> = (0..batch_size)
            .map(|e| crate::example_rng(seed, split, index, e))
            .collect();
        let counts: Vec<usize> = rngs
            .iter_mut()
            .map(|rng| match point {
                Some(p) => p.length,
                None => rng.random_range(c.min_items..=c.max_items),
            })
            .collect();
        let steps = |n: usize| n * (k + 1) + 2 * k + 2;
        let time = counts.iter().map(|&n| steps(n)).max().unwrap_or(0);
        let mut inputs = vec![0f32; batch_size * time * in_w];
        let mut targets = vec![0f32; batch_size * time * w];
        let mut mask = vec![0f32; batch_size * time];
        // The items of one example, item-major: [n, k·W]; reused across examples.
        let mut items = Vec::with_capacity(counts.iter().copied().max().unwrap_or(0) * item_size);
        for (e, (rng, &n)) in rngs.iter_mut().zip(&counts).enumerate() {
            items.clear();
            let mut draws = BitDraws::default();
            while items.len() < n * item_size {
                let start = items.len();
                items.extend((0..item_size).map(|_| draws.next(rng)));
                let new = &items[start..];
                if items[..start].chunks_exact(item_size).any(|old| old == new) {
                    items.truncate(start);
                }
            }
            let q = rng.random_range(0..n - 1);
            let x = &mut inputs[e * time * in_w..(e + 1) * time * in_w];
            let vector = |i: usize, j: usize| &items[(i * k + j) * w..(i * k + j + 1) * w];
            for i in 0..n {
                let t0 = i * (k + 1);
                x[t0 * in_w + w] = 1.0;
                for j in 0..k {
                    x[(t0 + 1 + j) * in_w..(t0 + 1 + j) * in_w + w].copy_from_slice(vector(i, j));
                }
            }
            let q0 = n * (k + 1);
            x[q0 * in_w + w + 1] = 1.0;
            for j in 0..k {
                x[(q0 + 1 + j) * in_w..(q0 + 1 + j) * in_w + w].copy_from_slice(vector(q, j));
            }
            x[(q0 + k + 1) * in_w + w + 1] = 1.0;
            let answer0 = e * time + q0 + k + 2;
            for j in 0..k {
                targets[(answer0 + j) * w..(answer0 + j + 1) * w].copy_from_slice(vector(q + 1, j));
            }
            mask[answer0..answer0 + k].fill(1.0);
        }
        Batch {
            batch: batch_size,
            time,
            inputs: Inputs::Dense(inputs),
            targets: Targets::Bits(targets),
            mask,
        }
    }

    fn train_max_length(&self) -> usize {
        self.cfg.max_items
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        length_points(&self.cfg.eval_lengths, self.cfg.max_items)
    }

    fn success(&self) -> SuccessCriterion {
        // Graves et al. train to a cost near 0 bits per sequence; 0.1 is one wrong bit in ten
        // answers, far below chance (bits/2 · item_len = 9 with the defaults).
        SuccessCriterion {
            metric: "bit_errors_per_seq".into(),
            threshold: 0.1,
            lower_is_better: true,
        }
    }

    fn chance(&self) -> f64 {
        self.cfg.bits as f64 / 2.0 * self.cfg.item_len as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> AssociativeRecall {
        AssociativeRecall::new(AssociativeRecallConfig {
            eval_lengths: vec![6, 12],
            ..Default::default()
        })
        .unwrap()
    }

    /// Parses the items by their delimiters, finds the one equal to the query and answers its
    /// successor.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Dense(x) = &b.inputs else {
            panic!("dense inputs")
        };
        let (w, k) = (6, 3);
        let in_w = w + 2;
        let mut y = vec![0f32; b.batch * b.time * w];
        for e in 0..b.batch {
            let step = |t: usize| &x[(e * b.time + t) * in_w..(e * b.time + t + 1) * in_w];
            let item = |t0: usize| {
                (0..k)
                    .flat_map(|j| step(t0 + 1 + j)[..w].to_vec())
                    .collect::<Vec<f32>>()
            };
            let starts: Vec<usize> = (0..b.time).filter(|&t| step(t)[w] == 1.0).collect();
            let q0 = (0..b.time)
                .find(|&t| step(t)[w + 1] == 1.0)
                .expect("query delimiter");
            let query = item(q0);
            let hit = starts
                .iter()
                .position(|&s| item(s) == query)
                .expect("query is in the list");
            let answer = item(starts[hit + 1]);
            let a0 = e * b.time + q0 + k + 2;
            y[a0 * w..(a0 + k) * w].copy_from_slice(&answer);
        }
        Targets::Bits(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_an_all_zero_predictor() {
        testkit::assert_chance_matches(&task(), 40, |b, _| testkit::zero_bits(b, 6));
    }

    #[test]
    fn items_are_distinct_even_when_the_item_space_is_small() {
        // 2 bits · 2 vectors = 16 possible items for up to 8 items: collisions would be common.
        let t = AssociativeRecall::new(AssociativeRecallConfig {
            bits: 2,
            item_len: 2,
            min_items: 8,
            max_items: 8,
            eval_lengths: vec![],
        })
        .unwrap();
        let b = t.batch(Split::Train, 0, 0, 32, None);
        let Inputs::Dense(x) = &b.inputs else {
            panic!()
        };
        for e in 0..32 {
            let mut seen: Vec<Vec<f32>> = vec![];
            for i in 0..8 {
                let t0 = e * b.time + i * 3 + 1;
                let item: Vec<f32> = (0..2)
                    .flat_map(|j| x[(t0 + j) * 4..(t0 + j) * 4 + 2].to_vec())
                    .collect();
                assert!(!seen.contains(&item), "example {e}: item {i} repeats");
                seen.push(item);
            }
        }
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: AssociativeRecallConfig| AssociativeRecall::new(cfg).err().unwrap();
        assert_eq!(
            bad(AssociativeRecallConfig {
                item_len: 0,
                ..Default::default()
            })
            .field,
            "item_len"
        );
        assert_eq!(
            bad(AssociativeRecallConfig {
                min_items: 1,
                ..Default::default()
            })
            .field,
            "min_items"
        );
        assert_eq!(
            bad(AssociativeRecallConfig {
                min_items: 5,
                max_items: 3,
                ..Default::default()
            })
            .field,
            "max_items"
        );
        assert_eq!(
            bad(AssociativeRecallConfig {
                eval_lengths: vec![1],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
        // 1 bit · 2 vectors = 4 possible items cannot hold 6 distinct ones comfortably.
        assert_eq!(
            bad(AssociativeRecallConfig {
                bits: 1,
                item_len: 2,
                ..Default::default()
            })
            .field,
            "bits"
        );
    }
}
