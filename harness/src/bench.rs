//! `membench bench`: one full training step (forward, masked loss, backward, Adam) per model family
//! at the reference sizes, timed the same way as `bench/pytorch_reference.py` times PyTorch eager
//! on the same shapes, so the two can be compared in one run.
//!
//! Statistic: median over `steps` timed steps after `warmup` untimed ones; each step ends with a
//! host read of the loss (as the training loop does), so no work is left in flight. GFLOP/s counts
//! 3 × forward FLOPs per token (forward + backward); MFU divides by a matmul peak measured here,
//! with the same thread count, just before the models run.

use crate::eval::{self, BatchTensors};
use anyhow::{Context, Result};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{Batch, InputKind, Inputs, OutputKind, Targets, TaskIo};
use serde::Serialize;
use std::process::Command;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// A reference size from the architectures issue.
pub struct Spec {
    pub name: &'static str,
    pub arch_yaml: &'static str,
    pub io: TaskIo,
    pub batch: usize,
    pub time: usize,
}

const BITS: TaskIo = TaskIo { input: InputKind::Dense { width: 9 }, output: OutputKind::Bits { width: 8 } };
const TOKENS: TaskIo = TaskIo { input: InputKind::Tokens { vocab: 64 }, output: OutputKind::Classes { n: 64 } };

pub const SPECS: &[Spec] = &[
    Spec { name: "lstm", arch_yaml: "{name: lstm, hidden_size: 128}", io: BITS, batch: 32, time: 40 },
    Spec { name: "gru", arch_yaml: "{name: gru, hidden_size: 128}", io: BITS, batch: 32, time: 40 },
    Spec { name: "transformer", arch_yaml: "{name: transformer, d_model: 128, layers: 2, heads: 4}", io: TOKENS, batch: 32, time: 128 },
    Spec { name: "ntm", arch_yaml: "{name: ntm, controller_size: 100, memory_slots: 128, slot_width: 20}", io: BITS, batch: 16, time: 20 },
    Spec { name: "dnc", arch_yaml: "{name: dnc, controller_size: 100, memory_slots: 128, slot_width: 20, read_heads: 1}", io: BITS, batch: 16, time: 20 },
    Spec { name: "memn2n", arch_yaml: "{name: memn2n, d_model: 64, hops: 3, memory_size: 50}", io: TOKENS, batch: 32, time: 50 },
];

#[derive(Debug, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub threads: i32,
    pub batch: usize,
    pub time: usize,
    pub params: i64,
    pub step_ms_median: f64,
    pub samples_per_s: f64,
    pub gflops_per_s: f64,
    pub mfu: f64,
    pub peak_rss_bytes: u64,
    pub pytorch_ms_median: Option<f64>,
    /// membench step time / PyTorch eager step time (lower is better).
    pub ratio: Option<f64>,
}

/// A random batch with every position scored, of the spec's shapes, made by a fixed seed.
pub fn random_batch(spec: &Spec) -> Batch {
    let (b, t) = (spec.batch, spec.time);
    let _ = tch::manual_seed(0);
    let inputs = match spec.io.input {
        InputKind::Dense { width } => Inputs::Dense(Vec::<f32>::try_from(Tensor::rand([(b * t * width) as i64], (Kind::Float, Device::Cpu)).round()).expect("f32")),
        InputKind::Tokens { vocab } => Inputs::Tokens(Vec::<i64>::try_from(Tensor::randint(vocab as i64, [(b * t) as i64], (Kind::Int64, Device::Cpu))).expect("i64")),
    };
    let targets = match spec.io.output {
        OutputKind::Bits { width } => Targets::Bits(Vec::<f32>::try_from(Tensor::rand([(b * t * width) as i64], (Kind::Float, Device::Cpu)).round()).expect("f32")),
        OutputKind::Classes { n } => Targets::Classes(Vec::<i64>::try_from(Tensor::randint(n as i64, [(b * t) as i64], (Kind::Int64, Device::Cpu))).expect("i64")),
        OutputKind::Real { width, .. } => Targets::Real(vec![0.5; b * t * width]),
    };
    Batch { batch: b, time: t, inputs, targets, mask: vec![1.0; b * t] }
}

/// Dense matmul throughput with the current thread count: the machine's practical peak (FLOP/s).
pub fn matmul_peak_flops() -> f64 {
    let n = 1024i64;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b);
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t0 = Instant::now();
        let c = a.matmul(&b);
        let _ = c.double_value(&[0, 0]);
        best = best.min(t0.elapsed().as_secs_f64());
    }
    2.0 * (n * n * n) as f64 / best
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Median ms of one training step of `spec` in this process.
pub fn time_step(spec: &Spec, warmup: usize, steps: usize) -> Result<(f64, i64, f64)> {
    let cfg: ArchConfig = serde_yaml::from_str(spec.arch_yaml).with_context(|| format!("{}: {}", spec.name, spec.arch_yaml))?;
    let _ = tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &cfg, spec.io)?;
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let bt = BatchTensors::new(&random_batch(spec), Device::Cpu);
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let loss = eval::loss(spec.io.output, &net.forward_t(&bt.x, true), &bt);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let _ = loss.double_value(&[]);
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok((median(times), net.param_count(), net.flops_per_token(spec.time as i64)))
}

/// Runs the PyTorch eager reference for one spec; None when it has no such model or fails.
fn pytorch_ms(python: &str, spec: &Spec, threads: i32, warmup: usize, steps: usize) -> Option<f64> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_reference.py");
    let out = Command::new(python)
        .args([script, "--model", spec.name, "--threads", &threads.to_string(), "--warmup", &warmup.to_string(), "--steps", &steps.to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("bench: pytorch reference for {} failed: {}", spec.name, String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("step_ms_median")?.as_f64()
}

pub struct BenchOptions {
    pub models: Vec<String>,
    pub threads: Vec<i32>,
    pub warmup: usize,
    pub steps: usize,
    pub compare_pytorch: bool,
    pub python: String,
}

pub fn bench(opts: &BenchOptions) -> Result<Vec<BenchRow>> {
    let mut rows = vec![];
    for &threads in &opts.threads {
        tch::set_num_threads(threads);
        let peak = matmul_peak_flops();
        eprintln!("bench: {threads} thread(s), matmul peak {:.1} GFLOP/s", peak / 1e9);
        for spec in SPECS.iter().filter(|s| opts.models.is_empty() || opts.models.iter().any(|m| m == s.name)) {
            let (ms, params, fpt) = match time_step(spec, opts.warmup, opts.steps) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("bench: skipping {}: {e:#}", spec.name);
                    continue;
                }
            };
            let tokens = (spec.batch * spec.time) as f64;
            let flops = 3.0 * fpt * tokens / (ms / 1e3);
            let py = opts.compare_pytorch.then(|| pytorch_ms(&opts.python, spec, threads, opts.warmup, opts.steps)).flatten();
            rows.push(BenchRow {
                model: spec.name.into(),
                threads,
                batch: spec.batch,
                time: spec.time,
                params,
                step_ms_median: ms,
                samples_per_s: spec.batch as f64 / (ms / 1e3),
                gflops_per_s: flops / 1e9,
                mfu: flops / peak,
                peak_rss_bytes: crate::sys::peak_rss_bytes().unwrap_or(0),
                pytorch_ms_median: py,
                ratio: py.map(|p| ms / p),
            });
        }
    }
    Ok(rows)
}

/// The Markdown table of the README's Performance section.
pub fn markdown(rows: &[BenchRow]) -> String {
    let mut s = String::from("| model | threads | B×T | params | step ms (median) | samples/s | GFLOP/s | MFU | PyTorch eager ms | ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let py = r.pytorch_ms_median.map_or("–".into(), |v| format!("{v:.2}"));
        let ratio = r.ratio.map_or("–".into(), |v| format!("{v:.2}×"));
        s += &format!(
            "| {} | {} | {}×{} | {} | {:.2} | {:.0} | {:.2} | {:.1} % | {} | {} |\n",
            r.model, r.threads, r.batch, r.time, r.params, r.step_ms_median, r.samples_per_s, r.gflops_per_s, 100.0 * r.mfu, py, ratio
        );
    }
    s
}
