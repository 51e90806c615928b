//! The training loop of one run: the only place that owns an optimizer and steps it.
//!
//! Per step: take the next training batch (generated ahead on a second thread, a pure function of
//! (seed, step) so prefetching cannot change the numbers), forward, masked loss, backward, optional
//! global-norm clipping, optimizer step. Every `eval_interval` steps the model is scored on the
//! valid split; with `selection: best_valid` the best parameters are kept in memory. At the end the
//! last and the best-valid checkpoints are both scored on the test split, at the training
//! distribution and at every evaluation point of the task.

use crate::input::config::{Optimizer, RunConfig, Selection, TrainConfig};
use crate::run::eval::{self, BatchTensors, MetricSums, Metrics};
use anyhow::{Context, Result};
use membench_architectures::Network;
use membench_tasks::{EvalPoint, Split, SuccessCriterion, Task};
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
    pub wall_s: f64,
    /// Mean training loss over the steps since the previous point.
    pub train_loss: f64,
    pub valid: Metrics,
    pub lr: f64,
    pub grad_norm: f64,
    pub rss_bytes: u64,
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
    /// Test metrics of the last checkpoint, at the training distribution.
    pub final_metrics: Option<Metrics>,
    /// Test metrics of the best-valid checkpoint, at the training distribution.
    pub best_metrics: Option<Metrics>,
    pub best_step: Option<u64>,
    /// First validation step at which the success criterion held.
    pub steps_to_threshold: Option<u64>,
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

fn evaluate(
    net: &Network,
    task: &dyn Task,
    split: Split,
    seed: u64,
    batches: u64,
    batch_size: usize,
    point: Option<EvalPoint>,
    device: Device,
) -> Metrics {
    let _guard = tch::no_grad_guard();
    let kind = task.io().output;
    let mut sums = MetricSums::default();
    for index in 0..batches {
        let b = task.batch(split, seed, index, batch_size, point);
        let bt = BatchTensors::new(&b, device);
        sums.add(kind, &net.forward_t(&bt.x, false), &bt);
    }
    sums.finish(kind)
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
    let finite_or_worst = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    let v = m.get(&c.metric).unwrap_or(f64::NAN);
    let v = if c.lower_is_better { -v } else { v };
    (finite_or_worst(v), finite_or_worst(-m.loss))
}

/// Whether a checkpoint scoring `new` replaces the kept one scoring `kept`: strictly better, so
/// of two checkpoints that tie on both keys the earlier is kept.
fn improves(new: (f64, f64), kept: (f64, f64)) -> bool {
    new > kept
}

/// Trains and scores one run in this process. The caller has set the seed and thread count.
pub fn train(
    cfg: &RunConfig,
    device: Device,
    progress: &mut dyn FnMut(&CurvePoint),
) -> Result<TrainOutcome> {
    let task = cfg.task.build().context("task")?;
    let io = task.io();
    let vs = nn::VarStore::new(device);
    let net = Network::new(&vs, &cfg.arch, io).context("architecture")?;
    let mut opt = build_optimizer(&cfg.train, &vs)?;
    let params = vs.trainable_variables();
    let t = &cfg.train;
    let mut success = task.success();
    if let Some(th) = t.success_threshold {
        success.threshold = th;
    }
    let eval_len = task
        .eval_points()
        .iter()
        .map(|p| p.length)
        .max()
        .unwrap_or(1) as i64;
    let mut out = TrainOutcome {
        status: Status::Done,
        reason: String::new(),
        steps: 0,
        train_wall_s: 0.0,
        train_samples_per_s: 0.0,
        train_tokens_per_s: 0.0,
        step_ms_median: f64::NAN,
        harness_overhead_pct: f64::NAN,
        batch_wait_pct: f64::NAN,
        param_count: net.param_count(),
        state_size: net.state_size(eval_len),
        flops_per_token: net.flops_per_token(eval_len),
        final_metrics: None,
        best_metrics: None,
        best_step: None,
        steps_to_threshold: None,
        success,
        curve: vec![],
        eval: vec![],
    };

    let start = Instant::now();
    let mut step_ms = Vec::with_capacity(t.steps as usize);
    let (mut core_s, mut overhead_s, mut wait_s) = (0.0f64, 0.0f64, 0.0f64);
    let mut tokens = 0u64;
    let (mut loss_sum, mut loss_n) = (Tensor::zeros([], (Kind::Float, device)), 0u64);
    let mut best: Option<((f64, f64), Vec<Tensor>)> = None;
    let train_seed = train_data_seed(cfg);
    let task_ref: &dyn Task = task.as_ref();

    std::thread::scope(|scope| -> Result<()> {
        // Batches are generated up to PREFETCH steps ahead; each is a pure function of (seed,
        // step). The depth absorbs the generator thread's scheduling gaps when runs share cores.
        let (tx, rx) = mpsc::sync_channel(PREFETCH);
        scope.spawn(move || {
            for step in 0..t.steps {
                if tx
                    .send(task_ref.batch(Split::Train, train_seed, step, t.batch_size, None))
                    .is_err()
                {
                    break;
                }
            }
        });
        for step in 1..=t.steps {
            let t_wait = Instant::now();
            let batch = rx.recv().context("batch generator stopped")?;
            let t0 = Instant::now();
            let lr = t.lr_at(step);
            opt.set_lr(lr);
            let bt = BatchTensors::new(&batch, device);
            let t_core = Instant::now();
            let loss = eval::loss(io.output, &net.forward_t(&bt.x, true), &bt);
            opt.zero_grad();
            loss.backward();
            let t_backward = Instant::now();
            let is_eval = step % t.eval_interval == 0 || step == t.steps;
            // The norm is reported at evaluation points only; without clipping, other steps skip it.
            let norm = (t.grad_clip.is_some() || is_eval)
                .then(|| grad_norm_and_clip(&params, t.grad_clip));
            let t_norm = Instant::now();
            opt.step();
            let loss = loss.detach();
            // A non-finite loss is checked every step: continuing would only produce NaN weights.
            let loss_value = loss.double_value(&[]);
            // The loss read above already waits for the device; the explicit sync keeps the clock
            // honest should that read ever move.
            crate::run::device::synchronize(device);
            let t_step = Instant::now();
            loss_sum += &loss;
            loss_n += 1;
            tokens += (batch.batch * batch.time) as u64;
            out.steps = step;
            step_ms.push((t_step - t0).as_secs_f64() * 1e3);
            // Clipping is part of the training algorithm the run is configured with, like the
            // optimizer step; a norm computed only to be logged is harness work.
            let norm_s = (t_norm - t_backward).as_secs_f64();
            let (clip_s, log_norm_s) = if t.grad_clip.is_some() {
                (norm_s, 0.0)
            } else {
                (0.0, norm_s)
            };
            core_s +=
                (t_backward - t_core).as_secs_f64() + clip_s + (t_step - t_norm).as_secs_f64();
            wait_s += (t0 - t_wait).as_secs_f64();
            overhead_s +=
                (t_core - t_wait).as_secs_f64() + log_norm_s + t_step.elapsed().as_secs_f64();
            if !loss_value.is_finite() {
                out.status = Status::Diverged;
                out.reason = format!("non-finite training loss {loss_value} at step {step}");
                break;
            }
            if is_eval {
                let valid = evaluate(
                    &net,
                    task_ref,
                    Split::Valid,
                    cfg.data_seed,
                    t.valid_batches,
                    t.batch_size,
                    None,
                    device,
                );
                let point = CurvePoint {
                    step,
                    wall_s: start.elapsed().as_secs_f64(),
                    train_loss: loss_sum.double_value(&[]) / loss_n as f64,
                    valid,
                    lr,
                    grad_norm: norm.as_ref().map_or(f64::NAN, |n| n.double_value(&[])),
                    rss_bytes: crate::sys::peak_rss_bytes().unwrap_or(0),
                };
                loss_sum = Tensor::zeros([], (Kind::Float, device));
                loss_n = 0;
                progress(&point);
                if !valid.loss.is_finite() {
                    out.status = Status::Diverged;
                    out.reason = format!("non-finite validation loss at step {step}");
                    out.curve.push(point);
                    break;
                }
                let hit = crosses(&out.success, &valid);
                if hit && out.steps_to_threshold.is_none() {
                    out.steps_to_threshold = Some(step);
                }
                let s = score(&out.success, &valid);
                if t.selection == Selection::BestValid
                    && best.as_ref().is_none_or(|(b, _)| improves(s, *b))
                {
                    let snapshot =
                        tch::no_grad(|| params.iter().map(|p| p.detach().copy()).collect());
                    best = Some((s, snapshot));
                    out.best_step = Some(step);
                }
                out.curve.push(point);
                if hit && t.early_stop {
                    break;
                }
            }
        }
        Ok(())
    })?;

    out.train_wall_s = start.elapsed().as_secs_f64();
    let train_s: f64 = step_ms.iter().sum::<f64>() / 1e3;
    out.train_samples_per_s = (out.steps as f64 * t.batch_size as f64) / train_s.max(1e-9);
    out.train_tokens_per_s = tokens as f64 / train_s.max(1e-9);
    out.step_ms_median = crate::run::median(&step_ms);
    out.harness_overhead_pct = 100.0 * overhead_s / core_s.max(1e-12);
    out.batch_wait_pct = 100.0 * wait_s / core_s.max(1e-12);
    if out.status == Status::Diverged {
        return Ok(out);
    }

    let score_checkpoint = |which: Selection, out: &mut TrainOutcome| -> Metrics {
        let test = |p| {
            evaluate(
                &net,
                task_ref,
                Split::Test,
                cfg.data_seed,
                t.test_batches,
                t.batch_size,
                p,
                device,
            )
        };
        let at_train = test(None);
        out.eval.push(EvalRow {
            checkpoint: which,
            point: None,
            metrics: at_train,
        });
        for p in task_ref.eval_points() {
            out.eval.push(EvalRow {
                checkpoint: which,
                point: Some(p),
                metrics: test(Some(p)),
            });
        }
        at_train
    };
    out.final_metrics = Some(score_checkpoint(Selection::Last, &mut out));
    if let Some((_, snapshot)) = &best {
        tch::no_grad(|| {
            for (p, s) in params.iter().zip(snapshot) {
                p.detach().copy_(s);
            }
        });
        out.best_metrics = Some(score_checkpoint(Selection::BestValid, &mut out));
    }
    Ok(out)
}

/// Statuses that are final: rerunning would give the same row. Failed and timed-out runs are
/// retried by the next sweep.
pub fn is_final(status: &str) -> bool {
    status == Status::Done.as_str() || status == Status::Diverged.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_criterion() -> SuccessCriterion {
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
