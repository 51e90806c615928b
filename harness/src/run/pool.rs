//! The training stream of one run: fresh batches every step (the default), or epochs over a
//! finite pool of `train.train_examples` examples, as MAD (12,800), Zoology (100k) and most papers
//! train.
//!
//! **The pool.** Example `i` of a pool is the task's training example at batch index `i` of a
//! batch of one, drawn from a seed derived from the data seed: a pure function of the task config,
//! the data seed and `i`, so it does not depend on the batch size, and the pool of N examples is
//! the first N of one stream (a larger pool contains a smaller one). Every model seed of an
//! experiment trains on the same pool, as in MAD. Examples are regenerated when a batch needs
//! them, at the cost of fresh data, so a pool takes no memory beyond its epoch order (4 bytes per
//! example): 100k examples of 256 tokens cost what one training batch costs.
//!
//! **Epochs.** Epoch `e` (0-based here, 1-based in curve.csv) visits every example once, in a
//! permutation drawn by a ChaCha8 stream seeded from `blake3(data seed, e)`. Step `s` (0-based)
//! takes batch `s mod k` of epoch `s div k`, with `k = ceil(N / batch_size)` steps per epoch:
//! batches are consecutive slices of the epoch order, and the last one of an epoch holds the
//! `N mod batch_size` examples left over when that is not 0 — PyTorch's `DataLoader` default
//! (`drop_last=False`). A pool smaller than a batch is one batch of all N examples per step.
//!
//! **Padding.** Tasks with variable lengths pad a batch to its longest example with zeros, mask 0
//! (`membench_tasks` docs). A batch gathered from examples generated one at a time is padded the
//! same way: each row is its example, zeros after its end, mask 0 there.

use membench_tasks::{Batch, Inputs, Split, Targets, Task};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Where training batches come from.
pub enum TrainStream<'a> {
    /// A new batch every step, from `seed` (distinct per model seed).
    Fresh {
        task: &'a dyn Task,
        seed: u64,
        batch_size: usize,
    },
    /// Epochs over a finite pool.
    Pool(Pool<'a>),
}

impl TrainStream<'_> {
    /// The batch of 0-based step `step`, and for a pool the 1-based epoch it belongs to.
    pub fn batch(&mut self, step: u64) -> (Batch, Option<u64>) {
        match self {
            TrainStream::Fresh {
                task,
                seed,
                batch_size,
            } => (
                task.batch(Split::Train, *seed, step, *batch_size, None),
                None,
            ),
            TrainStream::Pool(pool) => (pool.batch(step), Some(pool.epoch_of(step) + 1)),
        }
    }
}

/// A finite training set of `examples` examples, visited in epochs (module docs).
pub struct Pool<'a> {
    task: &'a dyn Task,
    data_seed: u64,
    examples: usize,
    batch_size: usize,
    /// The epoch whose order was drawn last, and that order.
    order: Option<(u64, Vec<u32>)>,
}

impl<'a> Pool<'a> {
    pub fn new(task: &'a dyn Task, data_seed: u64, examples: usize, batch_size: usize) -> Self {
        assert!(examples >= 1 && batch_size >= 1, "checked with the config");
        assert!(u32::try_from(examples).is_ok(), "checked with the config");
        Pool {
            task,
            data_seed,
            examples,
            batch_size,
            order: None,
        }
    }

    /// Optimizer steps per epoch: ceil(examples / batch_size).
    pub fn steps_per_epoch(&self) -> u64 {
        self.examples.div_ceil(self.batch_size) as u64
    }

    /// The 0-based epoch of 0-based step `step`.
    pub fn epoch_of(&self, step: u64) -> u64 {
        step / self.steps_per_epoch()
    }

    /// Example `i` of the pool, as a batch of one (time = its own length).
    pub fn example(&self, i: usize) -> Batch {
        let seed = seed_of(b"membench-train-pool-v1", &[self.data_seed]);
        self.task.batch(Split::Train, seed, i as u64, 1, None)
    }

    /// The order in which 0-based epoch `epoch` visits the pool's examples: a permutation of
    /// `0..examples`.
    pub fn epoch_order(&self, epoch: u64) -> Vec<u32> {
        let seed = seed_of(b"membench-train-pool-order-v1", &[self.data_seed, epoch]);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..self.examples as u32).collect();
        order.shuffle(&mut rng);
        order
    }

    /// The pool indices of the examples of 0-based step `step`.
    pub fn indices(&mut self, step: u64) -> Vec<u32> {
        let epoch = self.epoch_of(step);
        if self.order.as_ref().is_none_or(|(e, _)| *e != epoch) {
            self.order = Some((epoch, self.epoch_order(epoch)));
        }
        let order = &self.order.as_ref().expect("drawn above").1;
        let start = (step % self.steps_per_epoch()) as usize * self.batch_size;
        order[start..(start + self.batch_size).min(self.examples)].to_vec()
    }

    /// The training batch of 0-based step `step`.
    pub fn batch(&mut self, step: u64) -> Batch {
        let rows: Vec<Batch> = self
            .indices(step)
            .into_iter()
            .map(|i| self.example(i as usize))
            .collect();
        gather(&rows)
    }
}

/// A u64 seed from a domain tag and numbers.
fn seed_of(tag: &[u8], values: &[u64]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(tag);
    for v in values {
        h.update(&v.to_le_bytes());
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().expect("8 bytes"))
}

/// One batch of the single-example batches `rows`, each padded with zeros (mask 0) to the
/// longest.
pub fn gather(rows: &[Batch]) -> Batch {
    gather_to(rows, rows.iter().map(|r| r.time).max().unwrap_or(0))
}

/// [`gather`] padded to `time` steps (at least the longest row's).
fn gather_to(rows: &[Batch], time: usize) -> Batch {
    assert!(rows.iter().all(|r| r.batch == 1 && r.time <= time));
    let pad = |row: &[f32], t: usize, out: &mut Vec<f32>| {
        // A row of t steps of width row.len() / t, then zeros up to `time` steps.
        let width = row.len() / t.max(1);
        out.extend_from_slice(row);
        out.resize(out.len() + (time - t) * width, 0.0);
    };
    let pad_i = |row: &[i64], t: usize, out: &mut Vec<i64>| {
        out.extend_from_slice(row);
        out.resize(out.len() + (time - t) * (row.len() / t.max(1)), 0);
    };
    let (mut mask, mut f_in, mut i_in, mut f_out, mut i_out) =
        (vec![], vec![], vec![], vec![], vec![]);
    for r in rows {
        pad(&r.mask, r.time, &mut mask);
        match &r.inputs {
            Inputs::Dense(x) => pad(x, r.time, &mut f_in),
            Inputs::Tokens(x) => pad_i(x, r.time, &mut i_in),
        }
        match &r.targets {
            Targets::Bits(y) | Targets::Real(y) => pad(y, r.time, &mut f_out),
            Targets::Classes(y) => pad_i(y, r.time, &mut i_out),
        }
    }
    let first = rows.first().expect("a batch has at least one example");
    Batch {
        batch: rows.len(),
        time,
        inputs: match first.inputs {
            Inputs::Dense(_) => Inputs::Dense(f_in),
            Inputs::Tokens(_) => Inputs::Tokens(i_in),
        },
        targets: match first.targets {
            Targets::Bits(_) => Targets::Bits(f_out),
            Targets::Real(_) => Targets::Real(f_out),
            Targets::Classes(_) => Targets::Classes(i_out),
        },
        mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membench_tasks::TaskConfig;
    use std::collections::BTreeSet;

    /// Copy with lengths 1..=6: rows of a gathered batch differ in length.
    fn copy_task() -> Box<dyn Task> {
        serde_yaml::from_str::<TaskConfig>("{name: copy, bits: 4, min_len: 1, max_len: 6}")
            .unwrap()
            .build()
            .unwrap()
    }

    #[test]
    fn the_pool_is_a_pure_function_of_the_task_data_seed_and_index() {
        let task = copy_task();
        let mut a = Pool::new(task.as_ref(), 7, 50, 8);
        let mut b = Pool::new(task.as_ref(), 7, 50, 8);
        for step in [0, 3, 6, 7, 13, 40] {
            assert_eq!(a.batch(step), b.batch(step), "step {step}");
        }
        // Example i does not depend on the batch size nor on the pool size.
        let c = Pool::new(task.as_ref(), 7, 80, 3);
        assert!((0..50).all(|i| a.example(i) == c.example(i)));
        // Another data seed, another pool.
        let d = Pool::new(task.as_ref(), 8, 50, 8);
        assert!((0..50).any(|i| a.example(i) != d.example(i)));
    }

    #[test]
    fn an_epoch_visits_every_example_once_and_the_last_batch_is_partial() {
        let task = copy_task();
        // 50 = 6 * 8 + 2: six full batches and one of the 2 examples left, as drop_last=False.
        let mut pool = Pool::new(task.as_ref(), 1, 50, 8);
        assert_eq!(pool.steps_per_epoch(), 7);
        for epoch in 0..3u64 {
            let steps = epoch * 7..(epoch + 1) * 7;
            let sizes: Vec<usize> = steps.clone().map(|s| pool.indices(s).len()).collect();
            assert_eq!(sizes, [8, 8, 8, 8, 8, 8, 2]);
            let seen: Vec<u32> = steps.clone().flat_map(|s| pool.indices(s)).collect();
            let distinct: BTreeSet<u32> = seen.iter().copied().collect();
            assert_eq!((seen.len(), distinct.len()), (50, 50));
            assert_eq!(distinct, (0..50).collect());
            assert!(steps.clone().all(|s| pool.epoch_of(s) == epoch));
        }
    }

    #[test]
    fn each_epoch_has_its_own_order() {
        let task = copy_task();
        let pool = Pool::new(task.as_ref(), 1, 64, 8);
        let orders: Vec<Vec<u32>> = (0..4).map(|e| pool.epoch_order(e)).collect();
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(orders[i], orders[j], "epochs {i} and {j}");
            }
        }
        assert_ne!(orders[0], (0..64).collect::<Vec<_>>(), "shuffled");
        assert_eq!(
            orders[2],
            pool.epoch_order(2),
            "a pure function of the epoch"
        );
    }

    #[test]
    fn a_pool_smaller_than_a_batch_is_the_whole_pool_every_step() {
        let task = copy_task();
        let mut pool = Pool::new(task.as_ref(), 1, 5, 8);
        assert_eq!(pool.steps_per_epoch(), 1);
        for step in 0..4 {
            let set: BTreeSet<u32> = pool.indices(step).into_iter().collect();
            assert_eq!(set, (0..5).collect());
            assert_eq!(pool.epoch_of(step), step);
        }
    }

    /// A batch of K steps later holds the same examples, as a set, when the pool is K batches.
    #[test]
    fn a_pool_of_k_batches_repeats_its_examples_every_k_steps() {
        let task = copy_task();
        let (k, b) = (4u64, 8usize);
        let mut pool = Pool::new(task.as_ref(), 3, k as usize * b, b);
        let rows = |pool: &mut Pool, s: u64| -> BTreeSet<Vec<u32>> {
            // The examples themselves (their inputs' bits), not their indices.
            pool.indices(s)
                .into_iter()
                .map(|i| match pool.example(i as usize).inputs {
                    Inputs::Dense(x) => x.iter().map(|v| v.to_bits()).collect(),
                    Inputs::Tokens(_) => unreachable!("copy is dense"),
                })
                .collect()
        };
        let epoch0: BTreeSet<_> = (0..k).flat_map(|s| rows(&mut pool, s)).collect();
        let epoch1: BTreeSet<_> = (k..2 * k).flat_map(|s| rows(&mut pool, s)).collect();
        assert_eq!(epoch0.len(), k as usize * b);
        assert_eq!(
            epoch0, epoch1,
            "the second epoch trains on the first's examples"
        );
        // Fresh data would not repeat them.
        let mut fresh = TrainStream::Fresh {
            task: task.as_ref(),
            seed: 3,
            batch_size: b,
        };
        assert_ne!(fresh.batch(0).0, fresh.batch(k).0);
    }

    #[test]
    fn a_gathered_batch_is_each_example_padded_with_zeros() {
        let task = copy_task();
        let pool = Pool::new(task.as_ref(), 2, 40, 8);
        let rows: Vec<Batch> = (0..8).map(|i| pool.example(i)).collect();
        assert!(
            rows.iter().any(|r| r.time != rows[0].time),
            "lengths differ"
        );
        let g = gather(&rows);
        let time = rows.iter().map(|r| r.time).max().unwrap();
        assert_eq!((g.batch, g.time), (8, time));
        let (Inputs::Dense(x), Targets::Bits(y)) = (&g.inputs, &g.targets) else {
            panic!("copy is dense bits");
        };
        let (w_in, w_out) = (5, 4);
        for (e, r) in rows.iter().enumerate() {
            let (Inputs::Dense(rx), Targets::Bits(ry)) = (&r.inputs, &r.targets) else {
                unreachable!()
            };
            let t = r.time;
            assert_eq!(&x[e * time * w_in..][..t * w_in], &rx[..]);
            assert_eq!(&y[e * time * w_out..][..t * w_out], &ry[..]);
            assert_eq!(&g.mask[e * time..][..t], &r.mask[..]);
            assert!(x[e * time * w_in..][t * w_in..time * w_in]
                .iter()
                .all(|&v| v == 0.0));
            assert!(g.mask[e * time..][t..time].iter().all(|&m| m == 0.0));
        }
        // Gathering one example gives it back unchanged.
        assert_eq!(gather(&rows[..1]), rows[0]);
    }

    /// Every task's batch is its examples padded with zeros: gathering the rows of a task's own
    /// batch, each cut to its last nonzero step, rebuilds the batch. Checks that zero is every
    /// task's padding, which a gathered batch relies on.
    #[test]
    fn every_task_pads_with_zeros_as_a_gathered_batch_does() {
        for cfg in TaskConfig::all_defaults() {
            let task = cfg.build().unwrap();
            let b = task.batch(Split::Train, 5, 0, 6, None);
            let rows: Vec<Batch> = (0..b.batch).map(|e| row(&b, e)).collect();
            assert_eq!(gather_to(&rows, b.time), b, "{}", cfg.name());
        }
    }

    /// Row `e` of `b` as a batch of one, cut after its last step with a nonzero input, target
    /// or mask.
    fn row(b: &Batch, e: usize) -> Batch {
        let t = b.time;
        let w_in = |n: usize| n / (b.batch * t);
        let nonzero_f =
            |v: &[f32], w: usize, s: usize| v[s * w..(s + 1) * w].iter().any(|&x| x != 0.0);
        let nonzero_i =
            |v: &[i64], w: usize, s: usize| v[s * w..(s + 1) * w].iter().any(|&x| x != 0);
        let base = e * t;
        let used = |s: usize| {
            b.mask[base + s] != 0.0
                || match &b.inputs {
                    Inputs::Dense(x) => nonzero_f(x, w_in(x.len()), base + s),
                    Inputs::Tokens(x) => nonzero_i(x, 1, base + s),
                }
                || match &b.targets {
                    Targets::Bits(y) | Targets::Real(y) => nonzero_f(y, w_in(y.len()), base + s),
                    Targets::Classes(y) => nonzero_i(y, 1, base + s),
                }
        };
        let len = (0..t).rev().find(|&s| used(s)).map_or(1, |s| s + 1);
        let cut_f = |v: &[f32]| {
            let w = w_in(v.len());
            v[base * w..(base + len) * w].to_vec()
        };
        let cut_i = |v: &[i64]| v[base..base + len].to_vec();
        Batch {
            batch: 1,
            time: len,
            inputs: match &b.inputs {
                Inputs::Dense(x) => Inputs::Dense(cut_f(x)),
                Inputs::Tokens(x) => Inputs::Tokens(cut_i(x)),
            },
            targets: match &b.targets {
                Targets::Bits(y) => Targets::Bits(cut_f(y)),
                Targets::Real(y) => Targets::Real(cut_f(y)),
                Targets::Classes(y) => Targets::Classes(cut_i(y)),
            },
            mask: b.mask[base..base + len].to_vec(),
        }
    }
}
