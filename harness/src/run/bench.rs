//! `membench bench`: one full training step (forward, masked loss, backward, Adam) per model family
//! at the reference sizes, timed the same way as `bench/pytorch_reference.py` times PyTorch eager
//! on the same shapes, so the two can be compared in one run.
//!
//! Statistics, over the timed steps after `warmup` untimed ones (at least `steps`, and at least
//! `min_seconds` of them; the PyTorch reference is given the same count): the median wall time of
//! a step, and the CPU time of all timed steps divided by their number (a per-step CPU median would
//! be biased with 2+ threads: the kernel adds the other threads' CPU time to the process clock in
//! scheduler ticks of 1–4 ms, coarser than a short step). Each step ends with a
//! host read of the loss (as the training loop does), so no work is left in flight. GFLOP/s counts
//! 3 × forward FLOPs per token (forward + backward); MFU divides by a matmul peak measured here,
//! with the same thread count, just before the models run.

use crate::run::eval::{self, BatchTensors};
use anyhow::{Context, Result};
use membench_architectures::bench_specs::{Spec, SPECS};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{Batch, InputKind, Inputs, OutputKind, Targets};
use serde::Serialize;
use std::process::Command;
use std::time::Instant;
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

#[derive(Debug, Serialize)]
pub struct BenchRow {
    pub model: String,
    pub threads: i32,
    pub batch: usize,
    pub time: usize,
    pub params: i64,
    /// Median wall time of one step.
    pub step_ms_median: f64,
    /// CPU time per step, mean over the timed steps (this thread's with 1 thread, the process's
    /// with more).
    pub cpu_ms: f64,
    pub samples_per_s: f64,
    pub gflops_per_s: f64,
    pub mfu: f64,
    /// Peak RSS while this model trained (the high-water mark is reset before each model).
    pub peak_rss_bytes: u64,
    pub pytorch_ms_median: Option<f64>,
    pub pytorch_cpu_ms: Option<f64>,
    /// membench CPU time / PyTorch eager CPU time per step (lower is better); CPU time because
    /// wall time on a shared machine also counts other processes.
    pub ratio: Option<f64>,
    /// membench median wall time / PyTorch eager median wall time per step.
    pub ratio_wall: Option<f64>,
}

/// A random batch with every position scored, of the spec's shapes, made by a fixed seed.
pub fn random_batch(spec: &Spec) -> Batch {
    let (b, t) = (spec.batch, spec.time);
    tch::manual_seed(0);
    let inputs = match spec.io.input {
        InputKind::Dense { width } => Inputs::Dense(
            Vec::<f32>::try_from(
                Tensor::rand([(b * t * width) as i64], (Kind::Float, Device::Cpu)).round(),
            )
            .expect("f32"),
        ),
        InputKind::Tokens { vocab } => Inputs::Tokens(
            Vec::<i64>::try_from(Tensor::randint(
                vocab as i64,
                [(b * t) as i64],
                (Kind::Int64, Device::Cpu),
            ))
            .expect("i64"),
        ),
    };
    let targets = match spec.io.output {
        OutputKind::Bits { width } => Targets::Bits(
            Vec::<f32>::try_from(
                Tensor::rand([(b * t * width) as i64], (Kind::Float, Device::Cpu)).round(),
            )
            .expect("f32"),
        ),
        OutputKind::Classes { n } => Targets::Classes(
            Vec::<i64>::try_from(Tensor::randint(
                n as i64,
                [(b * t) as i64],
                (Kind::Int64, Device::Cpu),
            ))
            .expect("i64"),
        ),
        OutputKind::Real { width, .. } => Targets::Real(vec![0.5; b * t * width]),
        OutputKind::Blocks { blocks, n } => Targets::Bits(
            Vec::<f32>::try_from(
                Tensor::randint(
                    n as i64,
                    [(b * t * blocks) as i64],
                    (Kind::Int64, Device::Cpu),
                )
                .one_hot(n as i64)
                .to_kind(Kind::Float)
                .view([-1]),
            )
            .expect("f32"),
        ),
    };
    Batch {
        batch: b,
        time: t,
        inputs,
        targets,
        mask: vec![1.0; b * t],
    }
}

/// Dense float32 matmul throughput with the current thread count, 1024³, best of 5: the
/// machine's practical peak (FLOP/s). The faster of libtorch's `matmul` (MKL) and the models' own
/// dense path (`dense::matmul_t`: oneDNN on the CPU where this process's GEMM path is oneDNN), so
/// MFU is measured against the best GEMM this process can run.
pub fn matmul_peak_flops() -> f64 {
    let n = 1024i64;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let best_of_5 = |product: &dyn Fn() -> Tensor| {
        let _ = product();
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                let _ = product().double_value(&[0, 0]);
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let best = best_of_5(&|| a.matmul(&b)).min(best_of_5(&|| {
        membench_architectures::dense::matmul_t(&a, &b)
    }));
    2.0 * (n * n * n) as f64 / best
}

/// What [`time_step`] measured.
pub struct StepTiming {
    /// Timed steps (after warm-up).
    pub steps: usize,
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub params: i64,
    pub flops_per_token: f64,
}

/// Median wall ms and mean CPU ms of one training step of `spec` in this process, on `threads` threads
/// (already set with `tch::set_num_threads`), over at least `steps` timed steps and at least
/// `min_seconds` of them (estimated from the warm-up steps).
pub fn time_step(
    spec: &Spec,
    threads: i32,
    warmup: usize,
    steps: usize,
    min_seconds: f64,
) -> Result<StepTiming> {
    let cfg: ArchConfig = serde_yaml::from_str(spec.arch_yaml)
        .with_context(|| format!("{}: {}", spec.name, spec.arch_yaml))?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &cfg, spec.io)?;
    let mut opt = nn::Adam::default().build(&vs, 1e-3)?;
    let bt = BatchTensors::new(&random_batch(spec), Device::Cpu);
    let mut step = || {
        let t0 = Instant::now();
        let loss = eval::loss(spec.io.output, &net.forward_t(&bt.x, true), &bt);
        opt.zero_grad();
        loss.backward();
        opt.step();
        let _ = loss.double_value(&[]);
        t0.elapsed().as_secs_f64() * 1e3
    };
    let warm: Vec<f64> = (0..warmup).map(|_| step()).collect();
    let per_step_ms = if warm.is_empty() {
        f64::INFINITY
    } else {
        crate::run::median(&warm)
    };
    let steps = steps.max(((min_seconds * 1e3 / per_step_ms).ceil() as usize).min(100_000));
    let c0 = crate::sys::cpu_seconds(threads);
    let wall: Vec<f64> = (0..steps).map(|_| step()).collect();
    let cpu_ms = (crate::sys::cpu_seconds(threads) - c0) * 1e3 / steps as f64;
    Ok(StepTiming {
        steps,
        wall_ms: crate::run::median(&wall),
        cpu_ms,
        params: net.param_count(),
        flops_per_token: net.flops_per_token(spec.time as i64),
    })
}

/// The PyTorch eager reference's line for one spec: median wall ms, mean CPU ms, params.
pub struct PytorchTiming {
    pub wall_ms: f64,
    pub cpu_ms: f64,
    pub params: i64,
}

/// Runs `bench/pytorch_reference.py` for one spec; None (with a note on stderr) when it fails.
pub fn pytorch_reference(
    python: &str,
    name: &str,
    threads: i32,
    warmup: usize,
    steps: usize,
) -> Option<PytorchTiming> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_reference.py");
    let out = match Command::new(python)
        .args([
            script,
            "--model",
            name,
            "--threads",
            &threads.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--steps",
            &steps.to_string(),
        ])
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("bench: cannot run {python}: {e}");
            return None;
        }
    };
    if !out.status.success() {
        eprintln!(
            "bench: pytorch reference for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(PytorchTiming {
        wall_ms: v.get("step_ms_median")?.as_f64()?,
        cpu_ms: v.get("cpu_ms_mean")?.as_f64()?,
        params: v.get("params")?.as_i64()?,
    })
}

/// Resets this process's peak-RSS high-water mark (Linux: `5` to /proc/self/clear_refs), so that
/// each model's peak is its own; a no-op where unsupported. Freed heap is handed back to the
/// kernel first (glibc `malloc_trim`): otherwise the memory a larger model left in malloc's free
/// lists would count as the next model's resident set.
fn reset_peak_rss() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the heap; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// `membench bench`: time one training step per model family at the reference sizes.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Families to time (default: all).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Thread counts to time.
    #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = crate::run::thread_count())]
    pub threads: Vec<i32>,
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub warmup: u32,
    /// Timed steps: at least this many, and at least --min-seconds' worth (so that short steps
    /// get a median over many; the PyTorch reference runs the same number).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub steps: u32,
    #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
    pub min_seconds: f64,
    /// Rounds per model and thread count, membench then PyTorch in each (interleaved, so that
    /// a slow spell of a shared machine hits both); the table gives the median over rounds.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Also time bench/pytorch_reference.py with the bootstrap's python and print the ratio.
    #[arg(long)]
    pub compare_pytorch: bool,
    /// Python with torch 2.11 (default: $MEMBENCH_PYTHON, else ~/.cache/membench/python).
    #[arg(long)]
    pub python: Option<String>,
}

/// A finite, non-negative number of seconds (at most a day).
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}`: expected seconds in 0..=86400")),
    }
}

/// `membench bench`: times every asked-for family at every thread count and prints the table.
pub fn bench(args: &BenchArgs) -> Result<()> {
    let rows = measure(args)?;
    print!("{}", markdown(&rows));
    Ok(())
}

fn measure(opts: &BenchArgs) -> Result<Vec<BenchRow>> {
    let python = opts
        .python
        .clone()
        .or_else(|| std::env::var("MEMBENCH_PYTHON").ok())
        .unwrap_or_else(crate::sys::cached_python);
    let (warmup, steps, rounds) = (
        opts.warmup as usize,
        opts.steps as usize,
        opts.rounds as usize,
    );
    if let Some(unknown) = opts
        .models
        .iter()
        .find(|m| !SPECS.iter().any(|s| &s.name == m))
    {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "bench: no spec called `{unknown}`; known: {}",
            SPECS.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut rows = vec![];
    for &threads in &opts.threads {
        tch::set_num_threads(threads);
        let peak = matmul_peak_flops();
        eprintln!(
            "bench: {threads} thread(s), matmul peak {:.1} GFLOP/s",
            peak / 1e9
        );
        for spec in SPECS
            .iter()
            .filter(|s| opts.models.is_empty() || opts.models.iter().any(|m| m == s.name))
        {
            reset_peak_rss();
            // Rounds interleave membench and PyTorch; each side's statistic is its median over
            // the rounds.
            let (mut ours, mut theirs) = (vec![], vec![]);
            for _ in 0..rounds {
                let st = match time_step(spec, threads, warmup, steps, opts.min_seconds) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("bench: skipping {}: {e:#}", spec.name);
                        break;
                    }
                };
                let py = opts
                    .compare_pytorch
                    .then(|| pytorch_reference(&python, spec.name, threads, warmup, st.steps))
                    .flatten();
                eprintln!(
                    "bench: {} ×{threads}: {} steps, {:.2} ms wall, {:.2} ms cpu{}",
                    spec.name,
                    st.steps,
                    st.wall_ms,
                    st.cpu_ms,
                    py.as_ref().map_or(String::new(), |p| format!(
                        "; pytorch {:.2} ms wall, {:.2} ms cpu",
                        p.wall_ms, p.cpu_ms
                    ))
                );
                ours.push(st);
                theirs.extend(py);
            }
            let Some(st) = ours.first() else { continue };
            let med = |v: Vec<f64>| crate::run::median(&v);
            let ms = med(ours.iter().map(|s| s.wall_ms).collect());
            let cpu_ms = med(ours.iter().map(|s| s.cpu_ms).collect());
            // PyTorch's medians only when it answered every round.
            let py = (theirs.len() == ours.len()).then(|| PytorchTiming {
                wall_ms: med(theirs.iter().map(|p| p.wall_ms).collect()),
                cpu_ms: med(theirs.iter().map(|p| p.cpu_ms).collect()),
                params: theirs[0].params,
            });
            if let Some(p) = &py {
                if p.params != st.params {
                    eprintln!(
                        "bench: note: {} has {} parameters here and {} in the PyTorch reference",
                        spec.name, st.params, p.params
                    );
                }
            }
            let peak_rss_bytes = crate::sys::peak_rss_bytes().unwrap_or(0);
            let tokens = (spec.batch * spec.time) as f64;
            let flops = 3.0 * st.flops_per_token * tokens / (ms / 1e3);
            rows.push(BenchRow {
                model: spec.name.into(),
                threads,
                batch: spec.batch,
                time: spec.time,
                params: st.params,
                step_ms_median: ms,
                cpu_ms,
                samples_per_s: spec.batch as f64 / (ms / 1e3),
                gflops_per_s: flops / 1e9,
                mfu: flops / peak,
                peak_rss_bytes,
                pytorch_ms_median: py.as_ref().map(|p| p.wall_ms),
                pytorch_cpu_ms: py.as_ref().map(|p| p.cpu_ms),
                ratio: py.as_ref().map(|p| cpu_ms / p.cpu_ms),
                ratio_wall: py.as_ref().map(|p| ms / p.wall_ms),
            });
        }
    }
    Ok(rows)
}

/// The Markdown table of the README's Performance section.
pub fn markdown(rows: &[BenchRow]) -> String {
    // Timings mean nothing without the CPU and the GEMM path they were taken on.
    let gemm = crate::sys::gemm_choice().map_or_else(|e| format!("{e:#}"), |c| c.to_string());
    let mut s = format!(
        "CPU: {}; GEMM path: {gemm}; torch {}\n\n",
        crate::sys::cpu_text(),
        crate::sys::TORCH_VERSION,
    );
    s.push_str(
        "| model | threads | B×T | params | step ms (median, wall) | CPU ms (mean) | samples/s | GFLOP/s | MFU | peak RSS MiB | PyTorch eager ms (wall) | PyTorch CPU ms (mean) | ratio (CPU) | ratio (wall) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let opt =
            |v: Option<f64>, suffix: &str| v.map_or("–".into(), |v| format!("{v:.2}{suffix}"));
        s += &format!(
            "| {} | {} | {}×{} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.1} % | {:.0} | {} | {} | {} | {} |\n",
            r.model,
            r.threads,
            r.batch,
            r.time,
            r.params,
            r.step_ms_median,
            r.cpu_ms,
            r.samples_per_s,
            r.gflops_per_s,
            100.0 * r.mfu,
            r.peak_rss_bytes as f64 / (1 << 20) as f64,
            opt(r.pytorch_ms_median, ""),
            opt(r.pytorch_cpu_ms, ""),
            opt(r.ratio, "×"),
            opt(r.ratio_wall, "×")
        );
    }
    s
}
