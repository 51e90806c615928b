//! Synthetic memory tasks as plain arrays.
//!
//! A task turns (split, seed, batch index, batch size, optional eval point) into a [`Batch`]:
//! inputs, targets and a score mask, all row-major `Vec`s. Nothing here depends on tch, so batches
//! can be generated on rayon threads while the model trains, and the bytes are the same on every
//! machine and thread count: every example draws from its own ChaCha8 stream seeded by
//! `blake3(seed, split, batch index, example index)`.
//!
//! Shapes, with B = batch size and T = the batch's time steps (the longest example; shorter ones
//! are padded with zeros and masked out):
//! * inputs: `Dense` [B, T, width] floats, or `Tokens` [B, T] ids in `0..vocab`;
//! * targets: `Bits` [B, T, width] in {0, 1}, `Classes` [B, T] ids, or `Real` [B, T, width]
//!   (an output of `Blocks` has `Bits` targets: one one-hot block per decoded token, all zero
//!   where a block is not scored);
//! * mask: [B, T], 1.0 where the position is scored (and trained on), 0.0 elsewhere.
//!
//! The tasks (`name:` in YAML; each file cites its source and documents layout and chance):
//!
//! | name | source | "length" of an eval point | success metric | chance (defaults) |
//! |---|---|---|---|---|
//! | `copy` | Graves et al. 2014 | pattern length | bit_errors_per_seq ≤ 0.1 | bits/2 · E[L] (42) |
//! | `repeat_copy` | Graves et al. 2014 | pattern length | bit_errors_per_seq ≤ 0.1 | bits/2 · E[L] E[r] + 1 (122) |
//! | `associative_recall` | Graves et al. 2014 | number of items | bit_errors_per_seq ≤ 0.1 | bits/2 · item_len (9) |
//! | `mqar` | Arora et al. 2023 (Zoology) | sequence length | token_acc ≥ 0.99 | 1 / (V - V/2) (1/128) |
//! | `selective_copy` | Gu & Dao 2023 (Mamba) | noise region length | token_acc ≥ 0.99 | 1 / data_vocab (1/16) |
//! | `induction_heads` | Olsson et al. 2022; Fu et al. 2023 | sequence length | token_acc ≥ 0.99 | 1 / data_vocab (1/16) |
//! | `copy_memory` | Arjovsky et al. 2016 | delay T | token_acc ≥ 0.99 | 1 / alphabet (1/8) |
//! | `adding` | Hochreiter & Schmidhuber 1997 | sequence length | within_tol ≥ 0.95 | 1 - (1 - τ)² (0.0784) |
//! | `passkey` | Mohtashami & Jaggi 2023 | haystack length, with a depth | seq_acc ≥ 0.95 | key_vocab^-key_len (1e-5) |
//! | `mad_in_context_recall` | Poli et al. 2024 (MAD) | sequence length | token_acc ≥ 0.99 | 1 / values (1/8) |
//! | `mad_fuzzy_in_context_recall` | Poli et al. 2024 (MAD) | sequence length | token_acc ≥ 0.99 | 1 / values (1/8) |
//! | `mad_noisy_in_context_recall` | Poli et al. 2024 (MAD) | sequence length | token_acc ≥ 0.99 | 1 / values (1/8) |
//! | `mad_selective_copying` | Poli et al. 2024 (MAD) | sequence length | token_acc ≥ 0.99 | 1 / (V - 2) (1/14) |
//! | `mad_compression` | Poli et al. 2024 (MAD) | sequence length (≤ seq_len) | token_acc ≥ 0.99 | (1 + (L-1)/(V-1)) / L (0.096) |
//! | `mad_memorization` | Poli et al. 2024 (MAD) | sequence length | token_acc ≥ 0.99 | 1 / ⌊(V-1)/2⌋ (1/127) |
//!
//! Chance is the expected success metric of the best predictor that ignores its input (zeros for
//! bits, a uniform guess over the answer alphabet for classes, the constant 1 for adding).
//!
//! MAD's recall tasks train, as MAD does, on the next token at every step (`train_on_all_tokens`)
//! and score only the recalled values on the valid and test splits; the other tasks train on what
//! they score.

pub mod adding;
pub mod associative_recall;
mod common;
pub mod copy;
pub mod copy_memory;
pub mod induction_heads;
pub mod mad_compression;
pub mod mad_fuzzy_in_context_recall;
pub mod mad_in_context_recall;
pub mod mad_memorization;
pub mod mad_noisy_in_context_recall;
pub mod mad_selective_copying;
pub mod mqar;
pub mod passkey;
pub mod repeat_copy;
mod rng;
pub mod selective_copy;
#[cfg(test)]
mod testkit;

pub use common::MAX_STEPS;

pub use rng::example_rng;
use serde::{Deserialize, Serialize};

/// Which stream of data a batch belongs to. The splits draw from independent seeds, so the test set
/// of a task config is the same for every architecture and every model seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Valid,
    Test,
}

/// What the model reads at each time step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    Dense { width: usize },
    Tokens { vocab: usize },
}

/// What the model predicts at each time step, and so which loss and metrics apply.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Independent bits: sigmoid + binary cross-entropy; bit errors per sequence.
    Bits { width: usize },
    /// One class per position: softmax + cross-entropy; token and sequence accuracy.
    Classes { n: usize },
    /// Real values: mean squared error, and the share of predictions within a tolerance.
    Real { width: usize, tolerance: f32 },
    /// Several classes at one position: `blocks` softmaxes over `n` classes each, side by side
    /// (MAD's compression decodes a whole sequence from one position). Targets are `Bits`, one
    /// one-hot block of `n` per decoded token, all zero for a block that is not scored;
    /// cross-entropy and accuracy count decoded tokens, not positions.
    Blocks { blocks: usize, n: usize },
}

impl OutputKind {
    /// Number of output units the model must produce per time step.
    pub fn width(&self) -> usize {
        match *self {
            OutputKind::Bits { width } | OutputKind::Real { width, .. } => width,
            OutputKind::Classes { n } => n,
            OutputKind::Blocks { blocks, n } => blocks * n,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TaskIo {
    pub input: InputKind,
    pub output: OutputKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Dense(Vec<f32>),
    Tokens(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    Bits(Vec<f32>),
    Classes(Vec<i64>),
    Real(Vec<f32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub batch: usize,
    pub time: usize,
    pub inputs: Inputs,
    pub targets: Targets,
    pub mask: Vec<f32>,
}

/// A fixed evaluation condition: the task's length parameter, and for tasks with a depth (passkey)
/// the relative depth in [0, 1] of the thing to recall.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    pub length: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
}

/// Which metric says whether a run solved the task, and the bar it must clear.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuccessCriterion {
    pub metric: String,
    pub threshold: f64,
    /// true when smaller is better (bit errors, mse).
    pub lower_is_better: bool,
}

/// Invalid task parameters, named by field with the allowed range.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("task {task}: `{field}` = {value}: {expected}")]
pub struct TaskError {
    pub task: &'static str,
    pub field: &'static str,
    pub value: String,
    pub expected: String,
}

impl TaskError {
    pub fn new(
        task: &'static str,
        field: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        TaskError {
            task,
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }
}

/// One synthetic task. Implementations are pure functions of their arguments.
pub trait Task: Send + Sync {
    fn io(&self) -> TaskIo;
    /// Batch of the training distribution (`point = None`) or of one evaluation condition.
    fn batch(
        &self,
        split: Split,
        seed: u64,
        index: u64,
        batch_size: usize,
        point: Option<EvalPoint>,
    ) -> Batch;
    /// Evaluation conditions listed in the config (length generalization).
    fn eval_points(&self) -> Vec<EvalPoint>;
    /// The longest training condition, in the unit of [`EvalPoint::length`]: a batch at that
    /// point is at least as long as any training batch.
    fn train_max_length(&self) -> usize;
    /// Time steps of the longest batch the task produces, in training or at any evaluation
    /// condition (for models with a fixed maximum length, checked before a run starts).
    fn max_time(&self) -> usize {
        let train = EvalPoint {
            length: self.train_max_length(),
            depth: None,
        };
        self.eval_points()
            .into_iter()
            .chain([train])
            .map(|p| self.batch(Split::Test, 0, 0, 1, Some(p)).time)
            .max()
            .unwrap_or(0)
    }
    /// The metric and bar that count as solving the task.
    fn success(&self) -> SuccessCriterion;
    /// Expected value of the success metric for a predictor that ignores its input.
    fn chance(&self) -> f64;
}

/// Every task, as the `task:` section of the YAML; `name` selects the variant. Each variant's
/// fields and defaults are documented on its config struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum TaskConfig {
    Copy(copy::CopyConfig),
    RepeatCopy(repeat_copy::RepeatCopyConfig),
    AssociativeRecall(associative_recall::AssociativeRecallConfig),
    Mqar(mqar::MqarConfig),
    SelectiveCopy(selective_copy::SelectiveCopyConfig),
    InductionHeads(induction_heads::InductionHeadsConfig),
    CopyMemory(copy_memory::CopyMemoryConfig),
    Adding(adding::AddingConfig),
    Passkey(passkey::PasskeyConfig),
    MadInContextRecall(mad_in_context_recall::MadInContextRecallConfig),
    MadFuzzyInContextRecall(mad_fuzzy_in_context_recall::MadFuzzyInContextRecallConfig),
    MadNoisyInContextRecall(mad_noisy_in_context_recall::MadNoisyInContextRecallConfig),
    MadSelectiveCopying(mad_selective_copying::MadSelectiveCopyingConfig),
    MadCompression(mad_compression::MadCompressionConfig),
    MadMemorization(mad_memorization::MadMemorizationConfig),
}

impl TaskConfig {
    /// Checks the parameters and builds the task; the error is the first of [`Self::mistakes`].
    pub fn build(&self) -> Result<Box<dyn Task>, TaskError> {
        common::first(self.mistakes())?;
        self.build_unchecked()
    }

    /// Every impossible value of the config, in check order, one per field; empty when it is
    /// valid. A field's mistake hides no other field's (see `common::Mistakes`).
    pub fn mistakes(&self) -> Vec<TaskError> {
        let mut found = match self {
            TaskConfig::Copy(c) => c.mistakes(),
            TaskConfig::RepeatCopy(c) => c.mistakes(),
            TaskConfig::AssociativeRecall(c) => c.mistakes(),
            TaskConfig::Mqar(c) => c.mistakes(),
            TaskConfig::SelectiveCopy(c) => c.mistakes(),
            TaskConfig::InductionHeads(c) => c.mistakes(),
            TaskConfig::CopyMemory(c) => c.mistakes(),
            TaskConfig::Adding(c) => c.mistakes(),
            TaskConfig::Passkey(c) => c.mistakes(),
            TaskConfig::MadInContextRecall(c) => c.mistakes(),
            TaskConfig::MadFuzzyInContextRecall(c) => c.mistakes(),
            TaskConfig::MadNoisyInContextRecall(c) => c.mistakes(),
            TaskConfig::MadSelectiveCopying(c) => c.mistakes(),
            TaskConfig::MadCompression(c) => c.mistakes(),
            TaskConfig::MadMemorization(c) => c.mistakes(),
        };
        // A condition listed twice would be evaluated twice and give eval.csv two identical rows.
        // Passkey evaluates every (length, depth) pair, so a repeat in either list repeats a pair.
        let (lengths, depths) = self.eval_lists();
        let repeats = [
            ("eval_lengths", repeated(lengths).map(|v| v.to_string())),
            ("eval_depths", repeated(depths).map(|v| v.to_string())),
        ];
        for (field, value) in repeats {
            // One mistake per field: a list with a value out of range was reported already.
            if let Some(value) = value.filter(|_| found.iter().all(|e| e.field != field)) {
                found.push(TaskError::new(
                    self.name(),
                    field,
                    value,
                    "listed twice; expected distinct evaluation conditions",
                ));
            }
        }
        found
    }

    /// The listed evaluation lengths, and depths (passkey; empty for the others).
    fn eval_lists(&self) -> (&[usize], &[f64]) {
        match self {
            TaskConfig::Copy(c) => (&c.eval_lengths, &[]),
            TaskConfig::RepeatCopy(c) => (&c.eval_lengths, &[]),
            TaskConfig::AssociativeRecall(c) => (&c.eval_lengths, &[]),
            TaskConfig::Mqar(c) => (&c.eval_lengths, &[]),
            TaskConfig::SelectiveCopy(c) => (&c.eval_lengths, &[]),
            TaskConfig::InductionHeads(c) => (&c.eval_lengths, &[]),
            TaskConfig::CopyMemory(c) => (&c.eval_lengths, &[]),
            TaskConfig::Adding(c) => (&c.eval_lengths, &[]),
            TaskConfig::Passkey(c) => (&c.eval_lengths, &c.eval_depths),
            TaskConfig::MadInContextRecall(c) => (&c.eval_lengths, &[]),
            TaskConfig::MadFuzzyInContextRecall(c) => (&c.eval_lengths, &[]),
            TaskConfig::MadNoisyInContextRecall(c) => (&c.eval_lengths, &[]),
            TaskConfig::MadSelectiveCopying(c) => (&c.eval_lengths, &[]),
            TaskConfig::MadCompression(c) => (&c.eval_lengths, &[]),
            TaskConfig::MadMemorization(c) => (&c.eval_lengths, &[]),
        }
    }

    fn build_unchecked(&self) -> Result<Box<dyn Task>, TaskError> {
        Ok(match self {
            TaskConfig::Copy(c) => Box::new(copy::Copy::new(c.clone())?),
            TaskConfig::RepeatCopy(c) => Box::new(repeat_copy::RepeatCopy::new(c.clone())?),
            TaskConfig::AssociativeRecall(c) => {
                Box::new(associative_recall::AssociativeRecall::new(c.clone())?)
            }
            TaskConfig::Mqar(c) => Box::new(mqar::Mqar::new(c.clone())?),
            TaskConfig::SelectiveCopy(c) => {
                Box::new(selective_copy::SelectiveCopy::new(c.clone())?)
            }
            TaskConfig::InductionHeads(c) => {
                Box::new(induction_heads::InductionHeads::new(c.clone())?)
            }
            TaskConfig::CopyMemory(c) => Box::new(copy_memory::CopyMemory::new(c.clone())?),
            TaskConfig::Adding(c) => Box::new(adding::Adding::new(c.clone())?),
            TaskConfig::Passkey(c) => Box::new(passkey::Passkey::new(c.clone())?),
            TaskConfig::MadInContextRecall(c) => {
                Box::new(mad_in_context_recall::MadInContextRecall::new(c.clone())?)
            }
            TaskConfig::MadNoisyInContextRecall(c) => {
                Box::new(mad_in_context_recall::MadInContextRecall::noisy(c.clone())?)
            }
            TaskConfig::MadFuzzyInContextRecall(c) => Box::new(
                mad_fuzzy_in_context_recall::MadFuzzyInContextRecall::new(c.clone())?,
            ),
            TaskConfig::MadSelectiveCopying(c) => {
                Box::new(mad_selective_copying::MadSelectiveCopying::new(c.clone())?)
            }
            TaskConfig::MadCompression(c) => {
                Box::new(mad_compression::MadCompression::new(c.clone())?)
            }
            TaskConfig::MadMemorization(c) => {
                Box::new(mad_memorization::MadMemorization::new(c.clone())?)
            }
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            TaskConfig::Copy(_) => "copy",
            TaskConfig::RepeatCopy(_) => "repeat_copy",
            TaskConfig::AssociativeRecall(_) => "associative_recall",
            TaskConfig::Mqar(_) => "mqar",
            TaskConfig::SelectiveCopy(_) => "selective_copy",
            TaskConfig::InductionHeads(_) => "induction_heads",
            TaskConfig::CopyMemory(_) => "copy_memory",
            TaskConfig::Adding(_) => "adding",
            TaskConfig::Passkey(_) => "passkey",
            TaskConfig::MadInContextRecall(_) => "mad_in_context_recall",
            TaskConfig::MadFuzzyInContextRecall(_) => "mad_fuzzy_in_context_recall",
            TaskConfig::MadNoisyInContextRecall(_) => "mad_noisy_in_context_recall",
            TaskConfig::MadSelectiveCopying(_) => "mad_selective_copying",
            TaskConfig::MadCompression(_) => "mad_compression",
            TaskConfig::MadMemorization(_) => "mad_memorization",
        }
    }

    /// Every task with its default parameters, in declaration order (for tests, benches and docs).
    pub fn all_defaults() -> Vec<TaskConfig> {
        vec![
            TaskConfig::Copy(Default::default()),
            TaskConfig::RepeatCopy(Default::default()),
            TaskConfig::AssociativeRecall(Default::default()),
            TaskConfig::Mqar(Default::default()),
            TaskConfig::SelectiveCopy(Default::default()),
            TaskConfig::InductionHeads(Default::default()),
            TaskConfig::CopyMemory(Default::default()),
            TaskConfig::Adding(Default::default()),
            TaskConfig::Passkey(Default::default()),
            TaskConfig::MadInContextRecall(Default::default()),
            TaskConfig::MadFuzzyInContextRecall(Default::default()),
            TaskConfig::MadNoisyInContextRecall(Default::default()),
            TaskConfig::MadSelectiveCopying(Default::default()),
            TaskConfig::MadCompression(Default::default()),
            TaskConfig::MadMemorization(Default::default()),
        ]
    }
}

/// The first item of `items` that repeats an earlier one.
fn repeated<T: PartialEq>(items: &[T]) -> Option<&T> {
    (0..items.len())
        .find(|&i| items[..i].contains(&items[i]))
        .map(|i| &items[i])
}

#[cfg(test)]
mod tests;
