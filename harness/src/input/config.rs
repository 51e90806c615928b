//! The typed, fully resolved configuration of one run, and the training section of the YAML.
//!
//! A [`RunConfig`] is what a child process receives and what `results/runs/<run_id>/config.yaml`
//! stores: everything needed to redo the run, nothing that only describes where it ran. Its
//! canonical YAML plus the seed hash to the run id.

use membench_architectures::ArchConfig;
use membench_tasks::TaskConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adam,
    Adamw,
    Rmsprop,
    Sgd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    /// lr throughout (after warm-up).
    Constant,
    /// Cosine decay from lr to 0 over the steps after warm-up.
    Cosine,
    /// Linear decay from lr to 0 over the steps after warm-up.
    Linear,
}

/// Which checkpoint a run reports: the last one, or the one with the best validation score
/// (selected on the valid split, reported on the test split — never selected on test).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Selection {
    Last,
    BestValid,
}

impl Selection {
    pub fn as_str(self) -> &'static str {
        match self {
            Selection::Last => "last",
            Selection::BestValid => "best_valid",
        }
    }

    /// runs.csv column prefix of this checkpoint's test metrics.
    pub fn prefix(self) -> &'static str {
        match self {
            Selection::Last => "final_",
            Selection::BestValid => "best_",
        }
    }

    /// What a table says about the checkpoint its numbers come from.
    pub fn describe(self) -> &'static str {
        match self {
            Selection::Last => "selection = last: the final checkpoint, scored on test",
            Selection::BestValid => "selection = best_valid: the checkpoint with the best validation score, scored on test",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as clap::ValueEnum>::from_str(s, false).ok()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: u64,
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    #[serde(default = "default_optimizer")]
    pub optimizer: Optimizer,
    #[serde(default = "default_lr")]
    pub lr: f64,
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD and RMSprop momentum.
    #[serde(default)]
    pub momentum: f64,
    #[serde(default = "default_schedule")]
    pub schedule: Schedule,
    /// Linear warm-up from 0 to lr over this many steps.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this value; none when absent.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Validate every this many steps (and at the last step).
    #[serde(default = "default_eval_interval")]
    pub eval_interval: u64,
    /// Batches per validation.
    #[serde(default = "default_valid_batches")]
    pub valid_batches: u64,
    /// Batches per test condition at the end.
    #[serde(default = "default_test_batches")]
    pub test_batches: u64,
    /// Stop once the validation score crosses the task's success threshold.
    #[serde(default)]
    pub early_stop: bool,
    /// Overrides the task's success threshold (for early stop and steps_to_threshold).
    #[serde(default)]
    pub success_threshold: Option<f64>,
    #[serde(default = "default_selection")]
    pub selection: Selection,
    /// A finite training set: epochs over a fixed pool of this many examples, reshuffled every
    /// epoch (`run::pool`). Absent: fresh data every step. Absent from the canonical YAML when
    /// absent, so the ids of runs without it do not depend on this field's existence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_examples: Option<u64>,
    /// CPU float arithmetic flushes subnormal results and inputs to zero (x86 MXCSR FTZ and DAZ,
    /// `sys::flush_denormals`) for the whole run. Subnormals (|x| < 1.2e-38 in float32) arise where
    /// a softmax saturates, and x86 cores compute with them at a fraction of the normal speed: a
    /// MAD MemN2N step took 926 ms without and 131 ms with it, at identical losses. Off by default,
    /// as in PyTorch; a run's setting is part of its config (absent from the canonical YAML when
    /// false, so the ids of runs without it are unchanged), so `reproduce` applies it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flush_denormals: bool,
}

/// Most examples a finite training pool may hold; a larger pool is fresh data in all but cost
/// (its epoch order takes 4 bytes per example).
pub const MAX_TRAIN_EXAMPLES: u64 = 100_000_000;

fn default_batch_size() -> usize {
    32
}
fn default_optimizer() -> Optimizer {
    Optimizer::Adam
}
fn default_lr() -> f64 {
    1e-3
}
fn default_schedule() -> Schedule {
    Schedule::Constant
}
fn default_eval_interval() -> u64 {
    100
}
fn default_valid_batches() -> u64 {
    4
}
fn default_test_batches() -> u64 {
    16
}
fn default_selection() -> Selection {
    Selection::BestValid
}

impl TrainConfig {
    /// Learning rate at `step` (1-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step <= self.warmup_steps && self.warmup_steps > 0 {
            return self.lr * step as f64 / self.warmup_steps as f64;
        }
        let span = self.steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps.min(step)) as f64 / span).min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => self.lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            Schedule::Linear => self.lr * (1.0 - progress),
        }
    }

    /// Every impossible value, as (key under `train`, message); serde has already checked names
    /// and types.
    pub fn check(&self) -> Vec<(&'static str, String)> {
        let mut found = vec![];
        let mut bad = |key: &'static str, value: String, expected: &str| {
            found.push((key, format!("{value}: {expected}")))
        };
        if self.steps == 0 || self.steps > 100_000_000 {
            bad("steps", self.steps.to_string(), "expected 1..=100000000");
        }
        if self.batch_size == 0 || self.batch_size > 65_536 {
            bad(
                "batch_size",
                self.batch_size.to_string(),
                "expected 1..=65536",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bad("lr", self.lr.to_string(), "expected a finite number > 0");
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            bad(
                "weight_decay",
                self.weight_decay.to_string(),
                "expected a finite number >= 0",
            );
        }
        if !(0.0..1.0).contains(&self.momentum) {
            bad(
                "momentum",
                self.momentum.to_string(),
                "expected 0 <= momentum < 1",
            );
        }
        if let Some(c) = self.grad_clip {
            if !(c.is_finite() && c > 0.0) {
                bad("grad_clip", c.to_string(), "expected a finite number > 0");
            }
        }
        if let Some(t) = self.success_threshold {
            // Every success metric (accuracies, within_tol, bit errors) is a finite number >= 0.
            if !(t.is_finite() && t >= 0.0) {
                bad(
                    "success_threshold",
                    t.to_string(),
                    "expected a finite number >= 0",
                );
            }
        }
        if self.eval_interval == 0 {
            bad("eval_interval", "0".into(), "expected >= 1");
        }
        if self.valid_batches == 0 {
            bad("valid_batches", "0".into(), "expected >= 1");
        }
        if self.test_batches == 0 {
            bad("test_batches", "0".into(), "expected >= 1");
        }
        if let Some(n) = self.train_examples {
            if !(1..=MAX_TRAIN_EXAMPLES).contains(&n) {
                bad(
                    "train_examples",
                    n.to_string(),
                    &format!("expected 1..={MAX_TRAIN_EXAMPLES} (leave it out for fresh data every step)"),
                );
            }
        }
        // Against a steps value that is itself out of range, the comparison says nothing.
        if self.warmup_steps > self.steps && self.steps != 0 {
            bad(
                "warmup_steps",
                self.warmup_steps.to_string(),
                "expected <= steps",
            );
        }
        found
    }
}

/// Everything one run needs. Serialized canonically (fields in this order, maps sorted) for the id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub experiment: String,
    pub task: TaskConfig,
    pub arch: ArchConfig,
    pub train: TrainConfig,
    /// Seed of the model initialisation and of the training data stream.
    pub seed: u64,
    /// Seed of the validation and test data: the same for every architecture and model seed of an
    /// experiment, so all of them are scored on identical examples.
    #[serde(default)]
    pub data_seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; `auto` is resolved by the sweep (CUDA when usable) and
    /// the resolved name is what the run's config stores. CPU is the default and is left out of
    /// the canonical YAML, so CPU run ids do not depend on this field's existence.
    #[serde(default = "default_device", skip_serializing_if = "is_cpu")]
    pub device: String,
    /// The swept keys of this run and their values, for the runs.csv columns.
    #[serde(default)]
    pub swept: BTreeMap<String, serde_yaml::Value>,
    /// This run's values of the experiment's tuned keys (`tune:`): the run is one candidate of a
    /// tuning protocol, and the reports keep, per setting and seed, the candidate with the best
    /// validation score (runs.csv columns `tune:<key>`). Absent from the canonical YAML when
    /// empty, so the ids of untuned runs do not depend on this field's existence.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tune: BTreeMap<String, serde_yaml::Value>,
    /// The experiment's tuning seeds (`tune_seeds: K`, its first K seeds): one candidate is chosen
    /// per setting on these seeds, and only that candidate runs on the other seeds (see
    /// `record::choice`). Empty: each seed chooses its own. The protocol, not the training: left
    /// out of the run id, so a run made under either protocol is the same run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tune_seeds: Vec<u64>,
}

fn default_device() -> String {
    "cpu".into()
}

fn is_cpu(device: &String) -> bool {
    device == "cpu"
}

impl RunConfig {
    /// Short blake3 of the canonical YAML of the resolved config (which includes the seed),
    /// without `tune_seeds` (how the candidate was chosen is not part of what it trains).
    pub fn run_id(&self) -> String {
        let trained = RunConfig {
            tune_seeds: vec![],
            ..self.clone()
        };
        let canonical = serde_yaml::to_string(&trained).expect("a RunConfig always serializes");
        blake3::hash(canonical.as_bytes()).to_hex()[..12].to_string()
    }

    /// Whether this run follows a choice made on other seeds: its experiment is tuned on its first
    /// seeds and this run's seed is not one of them.
    pub fn follows_choice(&self) -> bool {
        !self.tune_seeds.is_empty() && !self.tune_seeds.contains(&self.seed)
    }

    /// The run's setting: its experiment and swept values, shared by its candidates and seeds.
    pub fn setting_key(&self) -> String {
        format!(
            "{}\u{0}{}",
            self.experiment,
            serde_json::to_string(&self.swept).unwrap_or_default()
        )
    }
}

/// A saved, resolved run config (`runs/<run_id>/config.yaml`); a file that does not parse is bad
/// input located at its line and column.
pub fn load_run_config(path: &std::path::Path) -> anyhow::Result<RunConfig> {
    let text = anyhow::Context::with_context(std::fs::read_to_string(path), || {
        format!("reading {}", path.display())
    })?;
    parse_run_config(path, &text)
}

/// [`load_run_config`] of text already read from `path`.
pub fn parse_run_config(path: &std::path::Path, text: &str) -> anyhow::Result<RunConfig> {
    serde_yaml::from_str(text).map_err(|e| {
        let (line, col) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        crate::input::strict::BadInput::one(
            path.display().to_string(),
            line,
            col,
            "",
            format!("not a resolved run config: {e}"),
        )
        .into()
    })
}

/// The canonical name of a device spec, as run configs store it: `auto` becomes `cuda:0` when
/// CUDA is usable on this machine (the one expanding the grid) and `cpu` otherwise; `cuda` becomes
/// `cuda:0`. Whether a named CUDA device exists is checked where the run executes.
pub fn canonical(spec: &str) -> Result<String, String> {
    match spec {
        "auto" => Ok(if tch::Cuda::is_available() {
            "cuda:0".into()
        } else {
            "cpu".into()
        }),
        "cpu" => Ok("cpu".into()),
        "cuda" => Ok("cuda:0".into()),
        s if s
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<u16>().is_ok()) =>
        {
            Ok(s.into())
        }
        s => Err(format!("device `{s}`: expected auto, cpu, cuda or cuda:N")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every committed reference run's saved config still hashes to its run id: fields added to
    /// the configs since (`train.train_examples`, `tune`, architecture options) are left out of
    /// the canonical YAML at their defaults.
    #[test]
    fn the_reference_runs_keep_their_ids() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/reference");
        let mut checked = 0;
        for experiment in std::fs::read_dir(&root).unwrap() {
            let runs = experiment.unwrap().path().join("runs");
            let Ok(dirs) = std::fs::read_dir(&runs) else {
                continue;
            };
            for dir in dirs {
                let dir = dir.unwrap().path();
                let cfg = load_run_config(&dir.join("config.yaml")).unwrap();
                let id = dir.file_name().unwrap().to_str().unwrap();
                assert_eq!(cfg.run_id(), id, "{}", dir.display());
                checked += 1;
            }
        }
        assert!(checked >= 100, "only {checked} reference runs found");
    }
}
