//! Copy memory (Arjovsky, Shah & Bengio 2016, "Unitary Evolution Recurrent Neural Networks",
//! §4.1; after Hochreiter & Schmidhuber 1997).
//!
//! The model reads K = `num_symbols` symbols drawn from an alphabet of `alphabet` data symbols,
//! waits through T-1 blanks, sees a delimiter, and must output the K symbols in order during the
//! K blank steps that follow. The delay T makes it a pure long-memory test.
//!
//! Token ids: 0 = blank, 1..=alphabet = data, alphabet+1 = delimiter. Per example with delay T
//! (Arjovsky: K = 10, alphabet 8, T in {100, 200, 300, 500}):
//! * steps 0..K: the symbols; steps K..K+T-1: blank; step K+T-1: delimiter; steps K+T..2K+T:
//!   blank, target = the symbols in order. Total length T + 2K.
//!
//! * inputs: Tokens [B, S] in 0..alphabet+2, S = the longest T + 2K of the batch;
//! * targets: Classes [B, S] in 0..alphabet+1 (0 = blank on every unscored step, as Arjovsky's
//!   targets);
//! * mask: 1 on the K recall steps only. Arjovsky average the cross-entropy over all T + 2K steps,
//!   whose blanks are trivial to predict; scoring only the recall keeps the metric comparable
//!   across T.
//!
//! Training draws T uniform in `min_delay..=max_delay`; an `eval_lengths` entry fixes T.
//!
//! Chance ("memoryless" baseline): a model that outputs blanks until the delimiter and then a
//! uniform guess over the data symbols has cross-entropy ln(alphabet) per recalled symbol — in
//! Arjovsky's all-step average K·ln(alphabet)/(T + 2K), 10·ln 8/(T+20) for their setting — and
//! token accuracy 1/alphabet on the scored steps, which is what `chance()` returns.

use crate::common::{each_in_range, first, in_range, length_points, Mistakes, MAX_STEPS};
use crate::{
    Batch, EvalPoint, InputKind, Inputs, OutputKind, Split, SuccessCriterion, Targets, Task,
    TaskError, TaskIo,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyMemoryConfig {
    /// Symbols to remember, K (Arjovsky: 10).
    #[serde(default = "default_num_symbols")]
    pub num_symbols: usize,
    /// Data symbols to draw from (Arjovsky: 8).
    #[serde(default = "default_alphabet")]
    pub alphabet: usize,
    /// Shortest training delay T (blanks + delimiter between the symbols and the recall).
    #[serde(default = "default_delay")]
    pub min_delay: usize,
    /// Longest training delay T.
    #[serde(default = "default_delay")]
    pub max_delay: usize,
    /// Delays evaluated at the end of training; empty means `[max_delay]`.
    #[serde(default)]
    pub eval_lengths: Vec<usize>,
}

fn default_num_symbols() -> usize {
    10
}
fn default_alphabet() -> usize {
    8
}
fn default_delay() -> usize {
    100
}

impl Default for CopyMemoryConfig {
    fn default() -> Self {
        CopyMemoryConfig {
            num_symbols: default_num_symbols(),
            alphabet: default_alphabet(),
            min_delay: default_delay(),
            max_delay: default_delay(),
            eval_lengths: vec![],
        }
    }
}

const NAME: &str = "copy_memory";

impl CopyMemoryConfig {
    /// Every impossible value, in check order (see [`Mistakes`]); empty when the config is valid.
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut m = Mistakes::default();
        let k_ok = m.ok(in_range(
            NAME,
            "num_symbols",
            self.num_symbols,
            1,
            MAX_STEPS / 4,
        ));
        m.ok(in_range(NAME, "alphabet", self.alphabet, 2, 1 << 30));
        let longest = MAX_STEPS - 2 * if k_ok { self.num_symbols } else { 1 };
        let min_ok = m.ok(in_range(NAME, "min_delay", self.min_delay, 1, longest));
        m.at_least(
            NAME,
            "max_delay",
            self.max_delay,
            ("min_delay", self.min_delay, min_ok),
            1,
            longest,
        );
        m.ok(each_in_range(
            NAME,
            "eval_lengths",
            &self.eval_lengths,
            1,
            longest,
        ));
        m.into_vec()
    }
}

pub struct CopyMemory {
    cfg: CopyMemoryConfig,
}

impl CopyMemory {
    pub fn new(cfg: CopyMemoryConfig) -> Result<Self, TaskError> {
        first(cfg.mistakes())?;
        Ok(CopyMemory { cfg })
    }

    fn delimiter(&self) -> i64 {
        self.cfg.alphabet as i64 + 1
    }
}

impl Task for CopyMemory {
    fn io(&self) -> TaskIo {
        let a = self.cfg.alphabet;
        TaskIo {
            input: InputKind::Tokens { vocab: a + 2 },
            output: OutputKind::Classes { n: a + 1 },
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
        let k = c.num_symbols;
        let mut rngs: Vec<_> = (0..batch_size)
            .map(|e| crate::example_rng(seed, split, index, e))
            .collect();
        let delays: Vec<usize> = rngs
            .iter_mut()
            .map(|rng| match point {
                Some(p) => p.length,
                None => rng.random_range(c.min_delay..=c.max_delay),
            })
            .collect();
        let time = delays.iter().max().map_or(0, |d| d + 2 * k);
        let mut inputs = vec![0i64; batch_size * time];
        let mut targets = vec![0i64; batch_size * time];
        let mut mask = vec![0f32; batch_size * time];
        for (e, (rng, &delay)) in rngs.iter_mut().zip(&delays).enumerate() {
            let row = e * time;
            let recall = row + k + delay;
            for i in 0..k {
                let symbol = rng.random_range(1..=c.alphabet as u32) as i64;
                inputs[row + i] = symbol;
                targets[recall + i] = symbol;
            }
            inputs[recall - 1] = self.delimiter();
            mask[recall..recall + k].fill(1.0);
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
        self.cfg.max_delay
    }

    fn eval_points(&self) -> Vec<EvalPoint> {
        length_points(&self.cfg.eval_lengths, self.cfg.max_delay)
    }

    fn success(&self) -> SuccessCriterion {
        // Arjovsky et al. judge by the loss falling to ~0 below the memoryless baseline; on the
        // recalled symbols that is accuracy ~1. 0.99 allows one wrong symbol in ten sequences.
        SuccessCriterion {
            metric: "token_acc".into(),
            threshold: 0.99,
            lower_is_better: false,
        }
    }

    fn chance(&self) -> f64 {
        1.0 / self.cfg.alphabet as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn task() -> CopyMemory {
        CopyMemory::new(CopyMemoryConfig {
            min_delay: 1,
            max_delay: 30,
            eval_lengths: vec![1, 100],
            ..Default::default()
        })
        .unwrap()
    }

    /// Remembers the first 10 tokens, finds the delimiter and writes them back after it.
    fn oracle(b: &Batch) -> Targets {
        let Inputs::Tokens(x) = &b.inputs else {
            panic!("tokens")
        };
        let mut y = vec![0i64; b.batch * b.time];
        for e in 0..b.batch {
            let row = &x[e * b.time..(e + 1) * b.time];
            let delim = row.iter().position(|&t| t == 9).expect("delimiter");
            y[e * b.time + delim + 1..e * b.time + delim + 11].copy_from_slice(&row[..10]);
        }
        Targets::Classes(y)
    }

    #[test]
    fn oracle_solves_every_batch() {
        testkit::assert_oracle_solves(&task(), 64, oracle);
    }

    #[test]
    fn chance_matches_the_memoryless_guess() {
        testkit::assert_chance_matches(&task(), 20, |b, rng| {
            testkit::uniform_classes(b, rng, 1..9)
        });
    }

    #[test]
    fn layout_matches_arjovsky() {
        let b =
            CopyMemory::new(CopyMemoryConfig::default())
                .unwrap()
                .batch(Split::Test, 0, 0, 2, None);
        let Inputs::Tokens(x) = &b.inputs else {
            panic!()
        };
        assert_eq!(b.time, 120, "T + 20");
        assert!(x[..10].iter().all(|&s| (1..=8).contains(&s)));
        assert!(x[10..109].iter().all(|&s| s == 0), "T - 1 = 99 blanks");
        assert_eq!(x[109], 9);
        assert!(x[110..120].iter().all(|&s| s == 0));
        assert_eq!(b.mask[..120].iter().sum::<f32>(), 10.0);
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |cfg: CopyMemoryConfig| CopyMemory::new(cfg).err().unwrap();
        assert_eq!(
            bad(CopyMemoryConfig {
                alphabet: 1,
                ..Default::default()
            })
            .field,
            "alphabet"
        );
        assert_eq!(
            bad(CopyMemoryConfig {
                num_symbols: 0,
                ..Default::default()
            })
            .field,
            "num_symbols"
        );
        assert_eq!(
            bad(CopyMemoryConfig {
                min_delay: 0,
                ..Default::default()
            })
            .field,
            "min_delay"
        );
        assert_eq!(
            bad(CopyMemoryConfig {
                min_delay: 50,
                max_delay: 20,
                ..Default::default()
            })
            .field,
            "max_delay"
        );
        assert_eq!(
            bad(CopyMemoryConfig {
                eval_lengths: vec![0],
                ..Default::default()
            })
            .field,
            "eval_lengths"
        );
    }
}
