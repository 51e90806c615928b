//! `membench parity`: training parity with PyTorch (issue #23). For each family, membench and its
//! eager-PyTorch twin (`bench/pytorch_parity.py`, built from `bench/pytorch_reference.py`'s
//! classes) start from the same weights, see the same batches and take the same Adam steps; the
//! per-step losses must agree.
//!
//! Per family, under `DIR/<family>/` (`--out`, else a scratch directory removed afterwards):
//! 1. seed 0, build the real [`Network`] from the family's `arch:` YAML (as a run does), convert
//!    its VarStore to float64 for `--dtype f64`, and write its initial weights under their
//!    VarStore names to `init.safetensors`;
//! 2. draw `--steps` batches (random bits or tokens as `bench_specs` does, targets likewise, and a
//!    mask with ~25 % of positions unscored) into `batches.safetensors` (`x`, `y`, `mask`, the
//!    step first), and write `spec.json` (family, resolved arch config, io, batch, time, dtype,
//!    optimizer and its hyper-parameters, steps, threads);
//! 3. take the steps here with the harness's loss ([`eval::loss`]) and optimizer
//!    ([`train::build_optimizer`]: Adam, no clipping, constant lr) at `--threads` intra-op threads
//!    (2+ threads run the core as batch shards where the family allows it), then run
//!    `python bench/pytorch_parity.py DIR/<family>`, which loads the same weights into the twin,
//!    takes the same steps with `torch.optim.Adam` and writes `pytorch_losses.json`;
//! 4. compare per step: relative difference |a − b| / max(|a|, |b|).
//!
//! Tolerances: float64, every step within [`F64_TOL`] (the two sides differ only in rounding:
//! summation order inside fused kernels, batch shards, Adam's `lerp` in PyTorch against `mul_add`
//! in LibTorch's C++ Adam); float32, the first [`F32_STEPS`] steps within [`F32_TOL`] (later float32
//! steps are printed but not judged: rounding differences of ~1e-7 grow with training).
//!
//! `--init-stats` compares initialisations instead (see `init_stats.rs`).
//!
//! **Adding a family** (all eleven have one): one entry in [`SMALL`] (its
//! small `arch:` YAML, io, batch ≥ 16 so that 2 threads make 2 shards, and length), and in
//! `bench/pytorch_parity.py` one entry of `TWINS`: a function building the twin from the resolved
//! arch config, and its parameter mapping (membench name ↔ twin parameter, with any transpose,
//! reordering or concatenation written out both ways). `--size bench` takes the family's sizes from
//! `bench_specs::SPECS`, which every family already has.

use crate::input::config::TrainConfig;
use crate::run::eval::{self, BatchTensors};
use crate::run::train;
use anyhow::{bail, Context, Result};
use membench_architectures::bench_specs::{self, Spec, BITS, TOKENS};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::{nn, Device, Kind, Tensor};

/// Float64: every step's losses within this relative difference.
pub const F64_TOL: f64 = 1e-9;
/// Float32: the first [`F32_STEPS`] steps' losses within this relative difference.
pub const F32_TOL: f64 = 1e-5;
pub const F32_STEPS: usize = 5;

/// The small sizes (`--size small`): every family with a PyTorch twin, tiny widths, batch 16 (two
/// shards of [`membench_architectures::MIN_SHARD_ROWS`] at 2 threads), a few steps long, so that
/// 50 float64 steps take well under a second each.
pub const SMALL: &[Spec] = &[
    Spec {
        name: "lstm",
        arch_yaml: "{name: lstm, hidden_size: 8, forget_bias: 1.0}",
        io: BITS,
        batch: 16,
        time: 7,
    },
    Spec {
        name: "gru",
        arch_yaml: "{name: gru, hidden_size: 8}",
        io: BITS,
        batch: 16,
        time: 7,
    },
    Spec {
        name: "transformer",
        arch_yaml: "{name: transformer, d_model: 8, layers: 2, heads: 2}",
        io: TOKENS,
        batch: 16,
        time: 9,
    },
    Spec {
        name: "memn2n",
        arch_yaml: "{name: memn2n, d_model: 8, hops: 3, memory_size: 5}",
        io: TOKENS,
        batch: 16,
        time: 9,
    },
    Spec {
        name: "kv_memory",
        arch_yaml: "{name: kv_memory, d_model: 8, hops: 2, memory_size: 5}",
        io: TOKENS,
        batch: 16,
        time: 9,
    },
    Spec {
        name: "linear_attention",
        arch_yaml: "{name: linear_attention, d_model: 8, layers: 2, heads: 2, feature_dim: 4, chunk_size: 4}",
        io: TOKENS,
        batch: 16,
        time: 10,
    },
    Spec {
        name: "ntm",
        arch_yaml: "{name: ntm, controller_size: 8, memory_slots: 6, slot_width: 4}",
        io: BITS,
        batch: 16,
        time: 7,
    },
    Spec {
        name: "dnc",
        arch_yaml: "{name: dnc, controller_size: 8, memory_slots: 6, slot_width: 4, read_heads: 2}",
        io: BITS,
        batch: 16,
        time: 7,
    },
    Spec {
        name: "gla",
        arch_yaml: "{name: gla, d_model: 8, layers: 2, heads: 2, chunk_size: 4}",
        io: TOKENS,
        batch: 16,
        time: 10,
    },
    Spec {
        name: "mamba",
        arch_yaml: "{name: mamba, d_model: 8, layers: 2, state_dim: 4, conv_kernel: 3}",
        io: TOKENS,
        batch: 16,
        time: 10,
    },
    Spec {
        name: "rmt",
        arch_yaml: "{name: rmt, d_model: 8, layers: 2, heads: 2, segment_len: 4, memory_tokens: 2}",
        io: TOKENS,
        batch: 16,
        time: 10,
    },
];

#[derive(clap::Args)]
pub struct ParityArgs {
    /// Families to compare (default: every family with a twin).
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
    /// Optimizer steps on each side.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub steps: u32,
    #[arg(long, default_value = "f64", value_parser = ["f64", "f32"])]
    pub dtype: String,
    /// small: tiny widths (seconds); bench: the sizes of `membench bench`. Default: small, and
    /// bench with --init-stats.
    #[arg(long, value_parser = ["small", "bench"])]
    pub size: Option<String>,
    /// Instead of training: compare each parameter's initial statistics (std, mean, bounds) with
    /// the twin's own, independently seeded initialisation (`init_stats.rs`).
    #[arg(long)]
    pub init_stats: bool,
    /// LibTorch intra-op threads on both sides (2+: membench runs batch shards).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1024))]
    pub threads: i32,
    /// Adam's learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Keep the weights, batches, specs and losses here (default: a scratch directory, removed).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Python with torch 2.11 (default: $MEMBENCH_PYTHON, else ~/.cache/membench/python).
    #[arg(long)]
    pub python: Option<String>,
}

/// One family's comparison.
pub struct ParityRow {
    pub family: String,
    pub shards: i64,
    pub membench: Vec<f64>,
    pub pytorch: Vec<f64>,
}

fn rel(a: f64, b: f64) -> f64 {
    let scale = a.abs().max(b.abs());
    if a == b {
        0.0
    } else if scale > 0.0 && a.is_finite() && b.is_finite() {
        (a - b).abs() / scale
    } else {
        f64::INFINITY
    }
}

impl ParityRow {
    /// Largest relative difference over the first `n` steps (all when `n` is larger).
    pub fn max_rel(&self, n: usize) -> f64 {
        self.membench
            .iter()
            .zip(&self.pytorch)
            .take(n)
            .map(|(&a, &b)| rel(a, b))
            .fold(0.0, f64::max)
    }

    /// Whether the losses agree within the dtype's tolerance.
    pub fn passes(&self, dtype: Kind) -> bool {
        self.membench.len() == self.pytorch.len()
            && match dtype {
                Kind::Double => self.max_rel(usize::MAX) <= F64_TOL,
                _ => self.max_rel(F32_STEPS) <= F32_TOL,
            }
    }
}

pub(crate) fn io_json(io: TaskIo) -> serde_json::Value {
    let input = match io.input {
        InputKind::Dense { width } => serde_json::json!(["dense", width]),
        InputKind::Tokens { vocab } => serde_json::json!(["tokens", vocab]),
    };
    let output = match io.output {
        OutputKind::Bits { width } => serde_json::json!(["bits", width]),
        OutputKind::Classes { n } => serde_json::json!(["classes", n]),
        OutputKind::Real { width, .. } => serde_json::json!(["real", width]),
        OutputKind::Blocks { blocks, n } => serde_json::json!(["blocks", blocks, n]),
    };
    serde_json::json!({"input": input, "output": output})
}

/// `steps` batches of `spec`'s shape, the step first: x, y and mask.
fn batches(spec: &Spec, steps: i64, kind: Kind) -> (Tensor, Tensor, Tensor) {
    let (b, t) = (spec.batch as i64, spec.time as i64);
    let opts = (kind, Device::Cpu);
    let x = match spec.io.input {
        InputKind::Dense { width } => Tensor::randint(2, [steps, b, t, width as i64], opts),
        InputKind::Tokens { vocab } => {
            Tensor::randint(vocab as i64, [steps, b, t], (Kind::Int64, Device::Cpu))
        }
    };
    let y = match spec.io.output {
        OutputKind::Bits { width } => Tensor::randint(2, [steps, b, t, width as i64], opts),
        OutputKind::Classes { n } => {
            Tensor::randint(n as i64, [steps, b, t], (Kind::Int64, Device::Cpu))
        }
        OutputKind::Real { width, .. } => Tensor::randn([steps, b, t, width as i64], opts),
        OutputKind::Blocks { blocks, n } => Tensor::randint(
            n as i64,
            [steps, b, t, blocks as i64],
            (Kind::Int64, Device::Cpu),
        )
        .one_hot(n as i64)
        .to_kind(kind)
        .view([steps, b, t, (blocks * n) as i64]),
    };
    let mask = Tensor::rand([steps, b, t], opts).ge(0.25).to_kind(kind);
    (x, y, mask)
}

pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `dir/spec.json` for the twin: the model and its batch (family, resolved arch config,
/// io, batch, time), which `parity` and `parity --init-stats` share, plus `extra`'s fields.
pub(crate) fn write_spec(
    dir: &Path,
    spec: &Spec,
    arch: &ArchConfig,
    extra: serde_json::Value,
) -> Result<()> {
    let mut fields = serde_json::json!({
        "family": spec.name,
        "arch": serde_json::to_value(arch)?,
        "io": io_json(spec.io),
        "batch": spec.batch,
        "time": spec.time,
    });
    if let (Some(f), serde_json::Value::Object(extra)) = (fields.as_object_mut(), extra) {
        f.extend(extra);
    }
    write_json(&dir.join("spec.json"), &fields)
}

/// Trains `spec` here for `args.steps` steps after writing what the twin needs under `dir`;
/// returns the shard count of the core and the per-step losses.
fn train_membench(
    spec: &Spec,
    args: &ParityArgs,
    kind: Kind,
    dir: &Path,
) -> Result<(i64, Vec<f64>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let arch: ArchConfig = serde_yaml::from_str(spec.arch_yaml)
        .with_context(|| format!("{}: arch `{}`", spec.name, spec.arch_yaml))?;
    let train_cfg: TrainConfig = serde_yaml::from_str(&format!(
        "{{steps: {}, optimizer: adam, lr: {:e}, batch_size: {}}}",
        args.steps, args.lr, spec.batch
    ))?;
    tch::manual_seed(0);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &arch, spec.io).with_context(|| spec.name.to_string())?;
    if kind == Kind::Double {
        vs.double();
    }
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Tensor::write_safetensors(&named, dir.join("init.safetensors"))?;
    let steps = i64::from(args.steps);
    let (xs, ys, masks) = batches(spec, steps, kind);
    Tensor::write_safetensors(
        &[("x", &xs), ("y", &ys), ("mask", &masks)],
        dir.join("batches.safetensors"),
    )?;
    write_spec(
        dir,
        spec,
        &arch,
        serde_json::json!({
            "dtype": if kind == Kind::Double { "f64" } else { "f32" },
            // tch's nn::Adam defaults, as train.rs builds it.
            "optimizer": {"name": "adam", "lr": args.lr, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0},
            "steps": steps,
            "threads": args.threads,
        }),
    )?;
    let mut opt = train::build_optimizer(&train_cfg, &vs)?;
    let mut losses = Vec::with_capacity(steps as usize);
    let shards = net.shards(&xs.get(0), true);
    for i in 0..steps {
        let bt = BatchTensors {
            x: xs.get(i),
            y: ys.get(i),
            mask: masks.get(i),
        };
        let out = net.forward_t(&bt.x, true);
        let loss = eval::loss(spec.io.output, &out, &bt);
        opt.zero_grad();
        loss.backward();
        opt.step();
        losses.push(loss.double_value(&[]));
    }
    write_json(
        &dir.join("membench_losses.json"),
        &serde_json::json!({ "losses": losses }),
    )?;
    Ok((shards, losses))
}

/// Runs `python bench/pytorch_parity.py ARGS…`; an error with its stderr when it fails.
pub(crate) fn run_script(python: &str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_parity.py");
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .with_context(|| format!("running {python} {script}"))?;
    if !out.status.success() {
        bail!(
            "{script} {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    Ok(())
}

fn run_twin(python: &str, dir: &Path) -> Result<Vec<f64>> {
    run_script(python, &[dir.as_os_str()])?;
    let path = dir.join("pytorch_losses.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["losses"]
        .as_array()
        .context("pytorch_losses.json: no `losses` list")?
        .iter()
        .map(|x| x.as_f64().context("a loss that is not a number"))
        .collect()
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[ParityRow], kind: Kind, threads: i32, gemm: &str) -> String {
    let (dtype, tol) = match kind {
        Kind::Double => ("f64", format!("{F64_TOL:.0e}, all steps")),
        _ => ("f32", format!("{F32_TOL:.0e}, first {F32_STEPS}")),
    };
    let mut s = String::from(
        "| family | dtype | threads | shards | GEMM | steps | first loss | last loss | max rel. diff, all steps | max rel. diff, first 5 | tolerance | result |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        s += &format!(
            "| {} | {dtype} | {threads} | {} | {gemm} | {} | {:.6} | {:.6} | {:.2e} | {:.2e} | {tol} | {} |\n",
            r.family,
            r.shards,
            r.membench.len(),
            r.membench.first().copied().unwrap_or(f64::NAN),
            r.membench.last().copied().unwrap_or(f64::NAN),
            r.max_rel(usize::MAX),
            r.max_rel(5),
            if r.passes(kind) { "pass" } else { "**FAIL**" },
        );
    }
    s
}

/// The requested families' specs at the requested size (`default_size` when none is given).
pub(crate) fn specs(args: &ParityArgs, default_size: &str) -> Result<Vec<&'static Spec>> {
    let table: Vec<&Spec> = if args.models.is_empty() {
        SMALL.iter().collect()
    } else {
        let mut picked = vec![];
        for m in &args.models {
            let Some(small) = SMALL.iter().find(|s| s.name == m) else {
                return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                    "parity: no twin for `{m}`; known: {}",
                    SMALL.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                )));
            };
            picked.push(small);
        }
        picked
    };
    Ok(match args.size.as_deref().unwrap_or(default_size) {
        "bench" => table
            .iter()
            .map(|s| bench_specs::spec(s.name).expect("every family has a bench spec"))
            .collect(),
        _ => table,
    })
}

/// The python with torch: --python, else $MEMBENCH_PYTHON, else the bootstrap's.
pub(crate) fn python(args: &ParityArgs) -> String {
    args.python
        .clone()
        .or_else(|| std::env::var("MEMBENCH_PYTHON").ok())
        .unwrap_or_else(crate::sys::cached_python)
}

/// Where the per-family directories go: --out, else a scratch directory (true: remove it after).
pub(crate) fn out_root(args: &ParityArgs) -> (PathBuf, bool) {
    match &args.out {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("membench-parity-{}", std::process::id())),
            true,
        ),
    }
}

/// Runs every requested family on both sides, prints the table; an error when any family fails.
pub fn run(args: &ParityArgs) -> Result<()> {
    if args.init_stats {
        return super::init_stats::run(args);
    }
    let gemm = crate::sys::gemm_choice().map_err(crate::input::strict::bad_option)?;
    let table = specs(args, "small")?;
    let kind = if args.dtype == "f64" {
        Kind::Double
    } else {
        Kind::Float
    };
    let python = python(args);
    let (root, scratch) = out_root(args);
    tch::set_num_threads(args.threads);
    let mut rows = vec![];
    let result = (|| -> Result<()> {
        for spec in &table {
            let dir = root.join(spec.name);
            let (shards, membench) = train_membench(spec, args, kind, &dir)?;
            let pytorch = run_twin(&python, &dir)?;
            rows.push(ParityRow {
                family: spec.name.to_string(),
                shards,
                membench,
                pytorch,
            });
        }
        Ok(())
    })();
    if scratch {
        let _ = std::fs::remove_dir_all(&root);
    }
    result?;
    println!(
        "CPU: {}; torch {}",
        crate::sys::cpu_text(),
        crate::sys::TORCH_VERSION
    );
    print!("{}", markdown(&rows, kind, args.threads, &gemm.to_string()));
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passes(kind))
        .map(|r| r.family.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!(
            "parity: the losses of {} differ beyond tolerance",
            failed.join(", ")
        )
    }
}
