//! The training loop of one run: the only place that owns an optimizer and steps it.
//!
//! Per step: take the next training batch (generated ahead on a second thread, a pure function of
//! (seed, step) so prefetching cannot change the numbers; fresh, or from a finite pool, see
//! `run::pool`), forward, masked loss, backward, optional
//! global-norm clipping, optimizer step. Every `eval_interval` steps the model is scored on the
//! valid split; with `selection: best_valid` the best parameters are kept in memory. At the end the
//! last and the best-valid checkpoints are both scored on the test split, at the training
//! distribution and at every evaluation point of the task.

use crate::input::config::{Optimizer, RunConfig, Selection, TrainConfig};
use crate::run::eval::{self, BatchTensors, MetricSums, Metrics};
use crate::run::pool::{Pool, TrainStream};
use anyhow::{Context, Result};
use membench_architectures::Network;
use membench_tasks::{Batch, EvalPoint, OutputKind, Split, SuccessCriterion, Task};
use serde::{Deserialize, Serialize};
use std::sync::mpsc;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Done,
    Diverged,
    Failed,
    Timeout,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Diverged => "diverged",
            Status::Failed => "failed",
            Status::Timeout => "timeout",
        }
    }
}

/// One row of curve.csv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: u64,
    /// Wall clock since the start of training, validation included.
    pub wall_s: f64,
    /// Tokens trained on up to and including this step (every position of every training batch).
    /// 0 when read from a record written before membench counted them.
    #[serde(default)]
    pub train_tokens: u64,
    /// Mean training loss over the steps since the previous point.
    pub train_loss: f64,
    pub valid: Metrics,
    pub lr: f64,
    pub grad_norm: f64,
    pub rss_bytes: u64,
    /// The 1-based epoch over the finite training pool of this step's batch (at a step that ends
    /// an epoch, the number of complete passes); None with fresh data every step, and in records
    /// written before membench had pools.
    #[serde(default)]
    pub epoch: Option<u64>,
}

/// One row of eval.csv: a checkpoint scored on the test split at one condition.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalRow {
    pub checkpoint: Selection,
    /// None: the training distribution.
    pub point: Option<EvalPoint>,
    pub metrics: Metrics,
}

/// What a finished training loop reports; the runner adds the environment columns.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainOutcome {
    pub status: Status,
    pub reason: String,
    pub steps: u64,
    pub train_wall_s: f64,
    pub train_samples_per_s: f64,
    pub train_tokens_per_s: f64,
    pub step_ms_median: f64,
    /// Harness overhead of the training loop, in % of the model's own step time: waiting for the
    /// batch, host→tensor conversion, learning-rate set, a gradient norm computed only for the
    /// log, and loss bookkeeping, over forward + loss + backward + gradient clipping (when
    /// configured) + optimizer step + loss read (evaluation is excluded: it is part of the
    /// protocol, not overhead). Wall time, summed over all steps.
    #[serde(default)]
    pub harness_overhead_pct: f64,
    /// Of which: time blocked waiting for the batch generator thread, in % of the same step time.
    #[serde(default)]
    pub batch_wait_pct: f64,
    pub param_count: i64,
    pub state_size: i64,
    pub flops_per_token: f64,
    /// Tokens trained on over the whole run; None in records written before membench counted
    /// them.
    #[serde(default)]
    pub train_tokens: Option<u64>,
    /// Test metrics of the last checkpoint, at the training distribution.
    pub final_metrics: Option<Metrics>,
    /// Test metrics of the best-valid checkpoint, at the training distribution.
    pub best_metrics: Option<Metrics>,
    pub best_step: Option<u64>,
    /// First validation step at which the success criterion held.
    pub steps_to_threshold: Option<u64>,
    /// The curve's `wall_s` and `train_tokens` at that step: the compute it took to get there.
    /// None when not reached (or in records written before membench kept them).
    #[serde(default)]
    pub wall_s_to_threshold: Option<f64>,
    #[serde(default)]
    pub tokens_to_threshold: Option<u64>,
    pub success: SuccessCriterion,
    pub curve: Vec<CurvePoint>,
    pub eval: Vec<EvalRow>,
}

/// Batches generated ahead of the training step (a few MiB at most for the largest tasks).
const PREFETCH: usize = 8;

/// Seed of the training stream: distinct per model seed, and apart from valid/test by the split.
fn train_data_seed(cfg: &RunConfig) -> u64 {
    let h = blake3::hash(&[cfg.data_seed.to_le_bytes(), cfg.seed.to_le_bytes()].concat());
    u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The run's training stream: fresh batches from the model seed's stream, or epochs over the
/// finite pool of `train.train_examples`, drawn from the data seed.
pub(crate) fn train_stream<'a>(cfg: &RunConfig, task: &'a dyn Task) -> TrainStream<'a> {
    let batch_size = cfg.train.batch_size;
    match cfg.train.train_examples {
        None => TrainStream::Fresh {
            task,
            seed: train_data_seed(cfg),
            batch_size,
        },
        Some(n) => TrainStream::Pool(Pool::new(task, cfg.data_seed, n as usize, batch_size)),
    }
}

/// The optimizer of `t` over every trainable variable of `vs` (also `membench parity`'s).
pub(crate) fn build_optimizer(t: &TrainConfig, vs: &nn::VarStore) -> Result<nn::Optimizer> {
    let opt = match t.optimizer {
        Optimizer::Adam => nn::Adam {
            wd: t.weight_decay,
            ..Default::default()
        }
        .build(vs, t.lr),
        Optimizer::Adamw => nn::AdamW {
            wd: t.weight_decay,
            ..Default::default()
        }
        .build(vs, t.lr),
        Optimizer::Rmsprop => nn::RmsProp {
            wd: t.weight_decay,
            momentum: t.momentum,
            ..Default::default()
        }
        .build(vs, t.lr),
        Optimizer::Sgd => nn::Sgd {
            wd: t.weight_decay,
            momentum: t.momentum,
            ..Default::default()
        }
        .build(vs, t.lr),
    };
    opt.context("building the optimizer")
}

/// Global L2 norm of all gradients, and in-place clipping to `max` without a host sync.
fn grad_norm_and_clip(params: &[Tensor], max: Option<f64>) -> Tensor {
    let _guard = tch::no_grad_guard();
    let grads: Vec<Tensor> = params
        .iter()
        .map(|p| p.grad())
        .filter(|g| g.defined())
        .collect();
    if grads.is_empty() {
        return Tensor::zeros([], (Kind::Float, Device::Cpu));
    }
    let norm = Tensor::stack(&grads.iter().map(|g| g.norm()).collect::<Vec<_>>(), 0).norm();
    if let Some(max) = max {
        let scale = (max / (&norm + 1e-6)).clamp_max(1.0);
        for mut g in grads {
            let _ = g.g_mul_(&scale);
        }
    }
    norm
}

/// Scores the network on the valid or test split: fixed batches, a pure function of the data
/// seed, never the training stream.
struct Scorer<'a> {
    net: &'a Network,
    task: &'a dyn Task,
    data_seed: u64,
    batch_size: usize,
    device: Device,
}

impl Scorer<'_> {
    fn score(&self, split: Split, batches: u64, point: Option<EvalPoint>) -> Metrics {
        let _guard = tch::no_grad_guard();
        let kind = self.task.io().output;
        let mut sums = MetricSums::default();
        for index in 0..batches {
            let b = self
                .task
                .batch(split, self.data_seed, index, self.batch_size, point);
            let bt = BatchTensors::new(&b, self.device);
            sums.add(kind, &self.net.forward_t(&bt.x, false), &bt);
        }
        sums.finish(kind)
    }

    /// The validation metrics at the training distribution (the curve and checkpoint selection).
    fn valid(&self, batches: u64) -> Metrics {
        self.score(Split::Valid, batches, None)
    }

    /// The current parameters as checkpoint `which`, on the test split at the training
    /// distribution and at every evaluation point of the task, appended to `eval`; returns the
    /// metrics at the training distribution.
    fn test_checkpoint(&self, which: Selection, batches: u64, eval: &mut Vec<EvalRow>) -> Metrics {
        let at_train = self.score(Split::Test, batches, None);
        eval.push(EvalRow {
            checkpoint: which,
            point: None,
            metrics: at_train,
        });
        for p in self.task.eval_points() {
            eval.push(EvalRow {
                checkpoint: which,
                point: Some(p),
                metrics: self.score(Split::Test, batches, Some(p)),
            });
        }
        at_train
    }
}

fn crosses(c: &SuccessCriterion, m: &Metrics) -> bool {
    match m.get(&c.metric) {
        Some(v) if c.lower_is_better => v <= c.threshold,
        Some(v) => v >= c.threshold,
        None => false,
    }
}

/// Validation score of a checkpoint for `best_valid` selection, higher is better: the success
/// metric first, then the validation loss (lower is better) to break ties. Success metrics
/// saturate (0 bit errors, accuracy 1.0) long before training ends; without the tie-break the
/// earliest checkpoint to saturate would be kept, which can be far worse off the training
/// distribution than a later one with the same validation score.
fn score(c: &SuccessCriterion, m: &Metrics) -> (f64, f64) {
    let v = m.get(&c.metric).unwrap_or(f64::NAN);
    selection_key(if c.lower_is_better { -v } else { v }, m.loss)
}

/// The ranking key of [`score`] from the success metric already oriented so that higher is
/// better, and the validation loss; NaN ranks worst. The reports' tuning protocol
/// (`report::tune`) ranks candidates with the same key.
pub(crate) fn selection_key(oriented_metric: f64, loss: f64) -> (f64, f64) {
    let finite_or_worst = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    (finite_or_worst(oriented_metric), finite_or_worst(-loss))
}

/// Whether a checkpoint scoring `new` replaces the kept one scoring `kept`: strictly better, so
/// of two checkpoints that tie on both keys the earlier is kept.
pub(crate) fn improves(new: (f64, f64), kept: (f64, f64)) -> bool {
    new > kept
}

/// The checkpoint kept for `selection: best_valid`: a copy of the parameters at the best
/// validation score so far (nothing is kept under `selection: last`, whose checkpoint is the end).
struct Checkpoints {
    keep_best: bool,
    best: Option<((f64, f64), Vec<Tensor>)>,
}

impl Checkpoints {
    fn new(selection: Selection) -> Self {
        Checkpoints {
            keep_best: selection == Selection::BestValid,
            best: None,
        }
    }

    /// Keeps the parameters if their validation score improves on the kept one; says whether.
    fn offer(&mut self, score: (f64, f64), params: &[Tensor]) -> bool {
        if !self.keep_best
            || self
                .best
                .as_ref()
                .is_some_and(|(b, _)| !improves(score, *b))
        {
            return false;
        }
        let snapshot = tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect());
        self.best = Some((score, snapshot));
        true
    }

    /// Puts the kept parameters back into `params`; false when none was kept.
    fn restore_best(&self, params: &[Tensor]) -> bool {
        let Some((_, snapshot)) = &self.best else {
            return false;
        };
        tch::no_grad(|| {
            for (p, s) in params.iter().zip(snapshot) {
                p.detach().copy_(s);
            }
        });
        true
    }
}

/// The instants of one training step, in order.
struct StepMarks {
    /// Before waiting for the batch.
    wait: Instant,
    /// The batch arrived.
    got_batch: Instant,
    /// The batch is on the device; forward starts.
    core: Instant,
    /// Backward done; the gradient norm (and clipping) starts.
    backward: Instant,
    /// Norm done; the optimizer step starts.
    norm: Instant,
    /// Optimizer step done and the loss read (the device synchronized).
    step: Instant,
}

/// The step-time columns: each step's time, the model's own time (forward, loss, backward,
/// clipping, optimizer step) and the harness's around it (`TrainOutcome::harness_overhead_pct`).
struct StepTimer {
    start: Instant,
    step_ms: Vec<f64>,
    core_s: f64,
    overhead_s: f64,
    wait_s: f64,
    tokens: u64,
    samples: u64,
}

impl StepTimer {
    fn new(steps: u64) -> Self {
        StepTimer {
            start: Instant::now(),
            step_ms: Vec::with_capacity(steps as usize),
            core_s: 0.0,
            overhead_s: 0.0,
            wait_s: 0.0,
            tokens: 0,
            samples: 0,
        }
    }

    fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Adds one step. Clipping is part of the training algorithm the run is configured with, like
    /// the optimizer step; a norm computed only to be logged is harness work.
    fn record(&mut self, m: &StepMarks, clipping: bool, batch: &Batch) {
        self.tokens += (batch.batch * batch.time) as u64;
        self.samples += batch.batch as u64;
        self.step_ms
            .push((m.step - m.got_batch).as_secs_f64() * 1e3);
        let norm_s = (m.norm - m.backward).as_secs_f64();
        let (clip_s, log_norm_s) = if clipping {
            (norm_s, 0.0)
        } else {
            (0.0, norm_s)
        };
        self.core_s +=
            (m.backward - m.core).as_secs_f64() + clip_s + (m.step - m.norm).as_secs_f64();
        self.wait_s += (m.got_batch - m.wait).as_secs_f64();
        self.overhead_s +=
            (m.core - m.wait).as_secs_f64() + log_norm_s + m.step.elapsed().as_secs_f64();
    }

    /// The timing columns of `out`.
    fn finish(&self, out: &mut TrainOutcome) {
        out.train_wall_s = self.elapsed_s();
        out.train_tokens = Some(self.tokens);
        let train_s: f64 = self.step_ms.iter().sum::<f64>() / 1e3;
        out.train_samples_per_s = self.samples as f64 / train_s.max(1e-9);
        out.train_tokens_per_s = self.tokens as f64 / train_s.max(1e-9);
        out.step_ms_median = crate::run::median(&self.step_ms);
        out.harness_overhead_pct = 100.0 * self.overhead_s / self.core_s.max(1e-12);
        out.batch_wait_pct = 100.0 * self.wait_s / self.core_s.max(1e-12);
    }
}

/// Mean training loss since the last validation, summed on the device (no host sync per step).
struct RunningLoss {
    sum: Tensor,
    n: u64,
    device: Device,
}

impl RunningLoss {
    fn new(device: Device) -> Self {
        RunningLoss {
            sum: Tensor::zeros([], (Kind::Float, device)),
            n: 0,
            device,
        }
    }
    fn add(&mut self, loss: &Tensor) {
        self.sum += loss;
        self.n += 1;
    }
    fn take_mean(&mut self) -> f64 {
        let mean = self.sum.double_value(&[]) / self.n as f64;
        *self = RunningLoss::new(self.device);
        mean
    }
}

/// What one training step leaves: the detached loss (and its value), the gradient norm when it
/// was computed, and the step's instants.
struct Step {
    loss: Tensor,
    loss_value: f64,
    norm: Option<Tensor>,
    marks: StepMarks,
}

/// The network with its optimizer: what a training step changes.
struct Learner<'a> {
    net: &'a Network,
    opt: nn::Optimizer,
    params: &'a [Tensor],
    output: OutputKind,
    grad_clip: Option<f64>,
    device: Device,
}

impl Learner<'_> {
    /// One optimizer step on `batch` (waited for since `wait`): forward, masked loss, backward,
    /// gradient norm (computed when clipping or when `log_norm`) and clipping, optimizer step,
    /// loss read.
    fn step(&mut self, batch: &Batch, lr: f64, log_norm: bool, wait: Instant) -> Step {
        let got_batch = Instant::now();
        self.opt.set_lr(lr);
        let bt = BatchTensors::new(batch, self.device);
        let core = Instant::now();
        let loss = eval::loss(self.output, &self.net.forward_t(&bt.x, true), &bt);
        self.opt.zero_grad();
        loss.backward();
        let backward = Instant::now();
        let norm = (self.grad_clip.is_some() || log_norm)
            .then(|| grad_norm_and_clip(self.params, self.grad_clip));
        let norm_done = Instant::now();
        self.opt.step();
        let loss = loss.detach();
        // A non-finite loss is checked every step: continuing would only produce NaN weights.
        let loss_value = loss.double_value(&[]);
        // The loss read above already waits for the device; the explicit sync keeps the clock
        // honest should that read ever move.
        crate::run::device::synchronize(self.device);
        Step {
            loss,
            loss_value,
            norm,
            marks: StepMarks {
                wait,
                got_batch,
                core,
                backward,
                norm: norm_done,
                step: Instant::now(),
            },
        }
    }
}

impl TrainOutcome {
    /// Before the first step: the model's sizes, no metrics yet.
    fn start(net: &Network, task: &dyn Task, success: SuccessCriterion) -> Self {
        let eval_len = task
            .eval_points()
            .iter()
            .map(|p| p.length)
            .max()
            .unwrap_or(1) as i64;
        Self::sized(
            net.param_count(),
            net.state_size(eval_len),
            net.flops_per_token(eval_len),
            success,
        )
    }

    /// Nothing trained yet, for a model of these sizes.
    fn sized(
        param_count: i64,
        state_size: i64,
        flops_per_token: f64,
        success: SuccessCriterion,
    ) -> Self {
        TrainOutcome {
            status: Status::Done,
            reason: String::new(),
            steps: 0,
            train_wall_s: 0.0,
            train_samples_per_s: 0.0,
            train_tokens_per_s: 0.0,
            step_ms_median: f64::NAN,
            harness_overhead_pct: f64::NAN,
            batch_wait_pct: f64::NAN,
            param_count,
            state_size,
            flops_per_token,
            train_tokens: None,
            final_metrics: None,
            best_metrics: None,
            best_step: None,
            steps_to_threshold: None,
            wall_s_to_threshold: None,
            tokens_to_threshold: None,
            success,
            curve: vec![],
            eval: vec![],
        }
    }

    fn diverged(&mut self, reason: String) {
        self.status = Status::Diverged;
        self.reason = reason;
    }

    /// Records a validation point: the curve, the first step over the threshold, the checkpoint
    /// kept. Returns whether training stops here (a non-finite validation loss, or early stopping).
    fn validated(
        &mut self,
        point: CurvePoint,
        checkpoints: &mut Checkpoints,
        params: &[Tensor],
        early_stop: bool,
    ) -> bool {
        let (step, valid) = (point.step, point.valid);
        if !valid.loss.is_finite() {
            self.diverged(format!("non-finite validation loss at step {step}"));
            self.curve.push(point);
            return true;
        }
        let hit = crosses(&self.success, &valid);
        if hit && self.steps_to_threshold.is_none() {
            self.steps_to_threshold = Some(step);
            self.wall_s_to_threshold = Some(point.wall_s);
            self.tokens_to_threshold = Some(point.train_tokens);
        }
        if checkpoints.offer(score(&self.success, &valid), params) {
            self.best_step = Some(step);
        }
        self.curve.push(point);
        hit && early_stop
    }

    /// Testing only: the outcome of a run whose validation curve was `curve` (no checkpoint kept),
    /// trained on as many tokens as its last point says.
    #[cfg(test)]
    pub(crate) fn replayed(
        curve: Vec<CurvePoint>,
        flops_per_token: f64,
        success: SuccessCriterion,
    ) -> Self {
        let mut out = Self::sized(1, 1, flops_per_token, success);
        let mut checkpoints = Checkpoints::new(Selection::Last);
        for p in curve {
            (out.steps, out.train_tokens) = (p.step, Some(p.train_tokens));
            out.validated(p, &mut checkpoints, &[], false);
        }
        out
    }
}

/// Trains and scores one run in this process. The caller has set the seed and thread count.
pub fn train(
    cfg: &RunConfig,
    device: Device,
    progress: &mut dyn FnMut(&CurvePoint),
) -> Result<TrainOutcome> {
    let task = cfg.task.build().context("task")?;
    let task_ref: &dyn Task = task.as_ref();
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs, &cfg.arch, task.io()).context("architecture")?;
    let params = vs.trainable_variables();
    let t = &cfg.train;
    let mut learner = Learner {
        net: &net,
        opt: build_optimizer(&cfg.train, &vs)?,
        params: &params,
        output: task.io().output,
        grad_clip: t.grad_clip,
        device,
    };
    let mut success = task.success();
    if let Some(th) = t.success_threshold {
        success.threshold = th;
    }
    let mut out = TrainOutcome::start(&net, task_ref, success);
    let scorer = Scorer {
        net: &net,
        task: task_ref,
        data_seed: cfg.data_seed,
        batch_size: t.batch_size,
        device,
    };
    let mut checkpoints = Checkpoints::new(t.selection);
    let mut timer = StepTimer::new(t.steps);
    let mut train_loss = RunningLoss::new(device);
    let mut stream = train_stream(cfg, task_ref);

    std::thread::scope(|scope| -> Result<()> {
        // Batches are generated up to PREFETCH steps ahead; each is a pure function of (seed,
        // step). The depth absorbs the generator thread's scheduling gaps when runs share cores.
        let (tx, rx) = mpsc::sync_channel(PREFETCH);
        scope.spawn(move || {
            for step in 0..t.steps {
                if tx.send(stream.batch(step)).is_err() {
                    break;
                }
            }
        });
        for step in 1..=t.steps {
            let wait = Instant::now();
            let (batch, epoch) = rx.recv().context("batch generator stopped")?;
            let lr = t.lr_at(step);
            // The norm is reported at evaluation points only; without clipping, other steps skip it.
            let is_eval = step % t.eval_interval == 0 || step == t.steps;
            let s = learner.step(&batch, lr, is_eval, wait);
            train_loss.add(&s.loss);
            out.steps = step;
            timer.record(&s.marks, t.grad_clip.is_some(), &batch);
            if !s.loss_value.is_finite() {
                out.diverged(format!(
                    "non-finite training loss {} at step {step}",
                    s.loss_value
                ));
                break;
            }
            if is_eval {
                let valid = scorer.valid(t.valid_batches);
                let point = CurvePoint {
                    step,
                    wall_s: timer.elapsed_s(),
                    train_tokens: timer.tokens,
                    train_loss: train_loss.take_mean(),
                    valid,
                    lr,
                    grad_norm: s.norm.as_ref().map_or(f64::NAN, |n| n.double_value(&[])),
                    rss_bytes: crate::sys::peak_rss_bytes().unwrap_or(0),
                    epoch,
                };
                progress(&point);
                if out.validated(point, &mut checkpoints, &params, t.early_stop) {
                    break;
                }
            }
        }
        Ok(())
    })?;

    timer.finish(&mut out);
    if out.status == Status::Diverged {
        return Ok(out);
    }
    out.final_metrics =
        Some(scorer.test_checkpoint(Selection::Last, t.test_batches, &mut out.eval));
    if checkpoints.restore_best(&params) {
        out.best_metrics =
            Some(scorer.test_checkpoint(Selection::BestValid, t.test_batches, &mut out.eval));
    }
    Ok(out)
}

/// Statuses that are final: rerunning would give the same row. Failed and timed-out runs are
/// retried by the next sweep.
pub fn is_final(status: &str) -> bool {
    status == Status::Done.as_str() || status == Status::Diverged.as_str()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn copy_criterion() -> SuccessCriterion {
        SuccessCriterion {
            metric: "bit_errors_per_seq".into(),
            threshold: 0.1,
            lower_is_better: true,
        }
    }

    fn metrics(loss: f64, bit_errors: f64) -> Metrics {
        Metrics {
            loss,
            token_acc: 0.0,
            seq_acc: 0.0,
            bit_errors_per_seq: Some(bit_errors),
            mse: None,
            within_tol: None,
        }
    }

    /// A curve point at `step`, `wall_s` seconds and `tokens` tokens into training.
    pub(crate) fn point(step: u64, wall_s: f64, tokens: u64, bit_errors: f64) -> CurvePoint {
        CurvePoint {
            step,
            wall_s,
            train_tokens: tokens,
            train_loss: 1.0,
            valid: metrics(1.0, bit_errors),
            lr: 0.01,
            grad_norm: 1.0,
            rss_bytes: 0,
            epoch: None,
        }
    }

    /// The one run of an experiments file of one experiment (`train:` and the rest as given).
    fn run_of(task: &str, arch: &str, train: &str) -> RunConfig {
        let text = format!(
            "experiments:\n  - name: t\n    task: {task}\n    arch: {arch}\n    train: {train}\n"
        );
        let mut runs = crate::input::grid::expand_file("t.yaml", &text).unwrap();
        assert_eq!(runs.len(), 1);
        runs.remove(0)
    }

    /// Through the run's own stream: with a pool of K batches, the batch of step s + K holds the
    /// examples of step s's epoch again — every example of the epoch, reordered.
    #[test]
    fn a_run_with_a_pool_of_k_batches_trains_on_the_same_examples_every_epoch() {
        let (k, b) = (3u64, 4u64);
        let cfg = run_of(
            "{name: copy_memory, num_symbols: 3, alphabet: 8, min_delay: 2, max_delay: 2}",
            "{name: lstm, hidden_size: 8}",
            &format!("{{steps: 10, batch_size: {b}, train_examples: {}}}", k * b),
        );
        let task = cfg.task.build().unwrap();
        let mut stream = train_stream(&cfg, task.as_ref());
        // The examples of a batch as a set of rows (the fixed length makes rows comparable).
        let rows = |batch: &Batch| -> std::collections::BTreeSet<Vec<i64>> {
            let membench_tasks::Inputs::Tokens(x) = &batch.inputs else {
                panic!("copy_memory reads tokens")
            };
            x.chunks(batch.time).map(<[i64]>::to_vec).collect()
        };
        let mut epochs = vec![];
        for epoch in 0..3 {
            let mut seen = std::collections::BTreeSet::new();
            for s in epoch * k..(epoch + 1) * k {
                let (batch, e) = stream.batch(s);
                assert_eq!(e, Some(epoch + 1), "1-based epoch of step {s}");
                assert_eq!(batch.batch, b as usize);
                seen.extend(rows(&batch));
            }
            assert_eq!(seen.len(), (k * b) as usize, "distinct examples");
            epochs.push(seen);
        }
        assert!(epochs.iter().all(|e| *e == epochs[0]));
        // The order differs: some step's batch is not the batch K steps earlier.
        assert!((0..2 * k).any(|s| stream.batch(s).0 != stream.batch(s + k).0));
        // Without the key the stream is fresh and its steps carry no epoch.
        let mut fresh_cfg = cfg.clone();
        fresh_cfg.train.train_examples = None;
        let mut fresh = train_stream(&fresh_cfg, task.as_ref());
        assert_eq!(fresh.batch(0).1, None);
        assert!((0..k).all(|s| rows(&fresh.batch(s + k).0) != rows(&stream.batch(s).0)));
    }

    /// A small model trained for 300 epochs on a pool of 8 examples drives its training loss on
    /// them to ~0 while its validation loss stays high, and on fresh data of the same task the
    /// same budget leaves the training loss far from 0: the pool is learned by heart.
    #[test]
    fn a_small_model_memorizes_a_tiny_pool() {
        let task = "{name: copy_memory, num_symbols: 4, alphabet: 8, min_delay: 4, max_delay: 4}";
        let arch = "{name: lstm, hidden_size: 32}";
        let train = |extra: &str| {
            format!("{{steps: 300, batch_size: 8, lr: 0.01, eval_interval: 50, valid_batches: 1, test_batches: 1, selection: last{extra}}}")
        };
        let last_train_loss = |cfg: &RunConfig| {
            tch::manual_seed(0);
            let out = super::train(cfg, Device::Cpu, &mut |_| {}).unwrap();
            assert_eq!(out.status, Status::Done);
            out.curve.last().unwrap().clone()
        };
        let pool = last_train_loss(&run_of(task, arch, &train(", train_examples: 8")));
        let fresh = last_train_loss(&run_of(task, arch, &train("")));
        assert_eq!((pool.epoch, fresh.epoch), (Some(300), None));
        assert!(pool.train_loss < 0.05, "pool: {}", pool.train_loss);
        // Learned by heart: on unseen (valid) examples the loss stays far above.
        assert!(pool.valid.loss > 1.0, "pool valid: {}", pool.valid.loss);
        assert!(
            fresh.train_loss > 10.0 * pool.train_loss,
            "fresh: {}",
            fresh.train_loss
        );
    }

    /// MAD's compression through the whole training loop: an LSTM learns to decode 8 tokens
    /// from the one output at the compression step (one softmax per decoded token), and its
    /// test token accuracy, MAD's per-token metric, crosses the task's 0.99 bar; an untrained
    /// model is near chance.
    #[test]
    fn an_lstm_learns_to_decode_a_compressed_sequence() {
        let task = "{name: mad_compression, vocab_size: 6, seq_len: 8}";
        let arch = "{name: lstm, hidden_size: 64}";
        let run = |steps: u64| {
            let cfg = run_of(
                task,
                arch,
                &format!("{{steps: {steps}, batch_size: 32, lr: 0.003, eval_interval: {steps}, valid_batches: 1, test_batches: 4, selection: last}}"),
            );
            tch::manual_seed(0);
            let out = super::train(&cfg, Device::Cpu, &mut |_| {}).unwrap();
            assert_eq!(out.status, Status::Done);
            out.curve.last().unwrap().valid.token_acc
        };
        let untrained = run(1);
        // Chance: (1 + 7/5) / 8 = 0.3; a step of Adam does not leave it far.
        assert!(untrained < 0.5, "untrained: {untrained}");
        let trained = run(500);
        assert!(trained >= 0.99, "trained: {trained}");
    }

    #[test]
    fn the_first_crossing_gives_the_steps_seconds_and_tokens_to_threshold() {
        let out = TrainOutcome::replayed(
            vec![
                point(6, 0.5, 48, 1.0),
                point(12, 1.25, 96, 0.05),
                point(18, 2.0, 150, 0.5),
                point(24, 3.0, 200, 0.0),
            ],
            10.0,
            copy_criterion(),
        );
        assert_eq!(out.steps_to_threshold, Some(12));
        assert_eq!(out.wall_s_to_threshold, Some(1.25));
        assert_eq!(out.tokens_to_threshold, Some(96));
        assert_eq!(out.train_tokens, Some(200));
        let never = TrainOutcome::replayed(vec![point(6, 0.5, 48, 1.0)], 10.0, copy_criterion());
        assert_eq!(
            (never.wall_s_to_threshold, never.tokens_to_threshold),
            (None, None)
        );
    }

    /// Replays a validation curve through the selection rule; returns the index kept.
    fn selected(curve: &[Metrics]) -> usize {
        let c = copy_criterion();
        let mut best: Option<((f64, f64), usize)> = None;
        for (i, m) in curve.iter().enumerate() {
            let s = score(&c, m);
            if best.is_none_or(|(b, _)| improves(s, b)) {
                best = Some((s, i));
            }
        }
        best.unwrap().1
    }

    #[test]
    fn the_success_metric_decides_first() {
        assert_eq!(
            selected(&[metrics(0.1, 3.0), metrics(0.5, 1.0), metrics(0.05, 2.0)]),
            1
        );
    }

    #[test]
    fn ties_on_the_success_metric_go_to_the_lower_validation_loss() {
        // Saturated at 0 bit errors from the second checkpoint on; the loss keeps falling.
        let curve = [
            metrics(0.9, 4.0),
            metrics(0.08, 0.0),
            metrics(0.02, 0.0),
            metrics(0.03, 0.0),
        ];
        assert_eq!(selected(&curve), 2);
    }

    #[test]
    fn a_complete_tie_keeps_the_earlier_checkpoint_and_nan_never_wins() {
        assert_eq!(selected(&[metrics(0.1, 0.0), metrics(0.1, 0.0)]), 0);
        assert_eq!(
            selected(&[
                metrics(0.1, 1.0),
                metrics(f64::NAN, f64::NAN),
                metrics(0.2, f64::NAN)
            ]),
            0
        );
    }
}
