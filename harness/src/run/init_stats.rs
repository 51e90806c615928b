//! `membench parity --init-stats`: every family's initialisation against its PyTorch twin's
//! (issue #23). Per family at the bench size (`--size small` also works), membench builds its
//! [`Network`] with seed 0 as a run does, and `bench/pytorch_parity.py --init-stats` builds the twin
//! of `bench/pytorch_reference.py` with seed 1 and its *own* initialisation (PyTorch's module
//! defaults, and in Python what each model file's doc says beyond them), exports it under
//! membench's names through the parity mapping, and writes each parameter's moments and bounds.
//! Nothing is copied between the two sides, so each compares two independent draws of one
//! distribution. Per membench parameter:
//!
//! * **shape**: equal;
//! * **constant** (either side has min = max: LayerNorm, D, read_init): both sides the same
//!   constant, exactly;
//! * **deterministic** (the twin draws the same tensor with another seed: A_log, the NTM's
//!   weighting logits): mean, std, min and max equal to float rounding (10⁻⁶ relative);
//! * **std**: |s − s'| ≤ 5 standard errors of the difference, SE(s) ≈ √((m₄ − s⁴)/n) / (2s) per
//!   side from its own fourth central moment m₄ (σ/√(2n) for a normal, σ·√(0.2/n) for a uniform),
//!   plus 10⁻⁶·s for float rounding;
//! * **mean**: |m − m'| ≤ 5·√((s² + s'²)/n) + 10⁻⁶·max(|m|, |m'|);
//! * **bounds**, for a uniform init (the twin's max|x| within 10 % of √3·s, n ≥ 64; a normal's
//!   extreme at n ≥ 64 is ≥ 1.4× that): membench's max|x| within the twin's max|x| · (1 ± 12/n),
//!   i.e. at most the bound and close to it, as two draws of U(±b) both lie in [b(1 − 12/n), b]
//!   except with probability 2e^{−12}.
//!
//! The table lists every parameter; the command fails (exit 1) on any mismatch.

use super::parity::{out_root, python, run_script, specs, write_spec, ParityArgs};
use anyhow::{bail, Context, Result};
use membench_architectures::bench_specs::Spec;
use membench_architectures::{ArchConfig, Network};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Standard errors allowed between the two sides' std and mean.
const SIGMAS: f64 = 5.0;
/// Float rounding allowed in deterministic inits, relative.
const ROUNDING: f64 = 1e-6;
/// The twin's seed (membench's is 0).
const TWIN_SEED: i64 = 1;

/// Moments and bounds of one tensor (population moments, float64).
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    pub shape: Vec<i64>,
    pub n: f64,
    pub mean: f64,
    pub std: f64,
    /// Fourth central moment.
    pub m4: f64,
    pub min: f64,
    pub max: f64,
    /// The same with another seed (known for the twin's side only).
    pub deterministic: bool,
}

impl Stats {
    pub fn of(t: &Tensor) -> Self {
        let x = t.detach().to_kind(Kind::Double).flatten(0, -1);
        let mean = x.mean(Kind::Double);
        let dev = &x - &mean;
        let moment = |p: f64| {
            dev.pow_tensor_scalar(p)
                .mean(Kind::Double)
                .double_value(&[])
        };
        Stats {
            shape: t.size(),
            n: x.numel() as f64,
            mean: mean.double_value(&[]),
            std: moment(2.0).sqrt(),
            m4: moment(4.0),
            min: x.min().double_value(&[]),
            max: x.max().double_value(&[]),
            deterministic: false,
        }
    }

    fn from_json(v: &serde_json::Value) -> Result<Self> {
        let num = |k: &str| v[k].as_f64().with_context(|| format!("no number `{k}`"));
        Ok(Stats {
            shape: v["shape"]
                .as_array()
                .context("no `shape`")?
                .iter()
                .map(|d| d.as_i64().context("a shape entry"))
                .collect::<Result<_>>()?,
            n: num("n")?,
            mean: num("mean")?,
            std: num("std")?,
            m4: num("m4")?,
            min: num("min")?,
            max: num("max")?,
            deterministic: v["deterministic"]
                .as_bool()
                .context("no boolean `deterministic`")?,
        })
    }

    fn max_abs(&self) -> f64 {
        self.min.abs().max(self.max.abs())
    }

    fn constant(&self) -> bool {
        self.min == self.max
    }

    /// Standard error of the sample std, from the fourth moment (delta method).
    fn std_error(&self) -> f64 {
        if self.std == 0.0 {
            return 0.0;
        }
        ((self.m4 - self.std.powi(4)).max(0.0) / self.n).sqrt() / (2.0 * self.std)
    }

    /// Uniform-like: max|x| ≈ √3·std (a symmetric uniform's bound), with enough samples to tell.
    fn uniform(&self) -> bool {
        self.n >= 64.0 && !self.constant() && {
            let r = self.max_abs() / (3f64.sqrt() * self.std);
            (0.9..=1.1).contains(&r)
        }
    }
}

/// One parameter on both sides.
pub struct Row {
    pub family: String,
    pub name: String,
    pub ours: Stats,
    pub twin: Stats,
}

impl Row {
    /// How the twin's draw looks: `constant`, `deterministic`, `uniform` or `random`.
    pub fn init(&self) -> &'static str {
        if self.twin.constant() {
            "constant"
        } else if self.twin.deterministic {
            "deterministic"
        } else if self.twin.uniform() {
            "uniform"
        } else {
            "random"
        }
    }

    /// Allowed |std − std'| (rounding only for deterministic inits).
    pub fn std_tolerance(&self) -> f64 {
        if self.twin.deterministic {
            return ROUNDING * self.ours.std.max(self.twin.std);
        }
        SIGMAS * self.ours.std_error().hypot(self.twin.std_error())
            + ROUNDING * self.ours.std.max(self.twin.std)
    }

    /// Every check that fails, in words; empty when the row agrees.
    pub fn mismatches(&self) -> Vec<String> {
        let (a, b) = (&self.ours, &self.twin);
        let mut bad = vec![];
        if a.shape != b.shape {
            bad.push(format!("shape {:?} vs {:?}", a.shape, b.shape));
            return bad;
        }
        if a.constant() || b.constant() {
            if !(a.constant() && b.constant() && a.min == b.min) {
                bad.push(format!(
                    "constant: [{}, {}] vs [{}, {}]",
                    a.min, a.max, b.min, b.max
                ));
            }
            return bad;
        }
        if b.deterministic {
            let close = |x: f64, y: f64| (x - y).abs() <= ROUNDING * x.abs().max(y.abs());
            if !(close(a.mean, b.mean)
                && close(a.std, b.std)
                && close(a.min, b.min)
                && close(a.max, b.max))
            {
                bad.push(format!(
                    "deterministic: mean {:.6e}, std {:.6e}, [{}, {}] vs mean {:.6e}, std {:.6e}, [{}, {}]",
                    a.mean, a.std, a.min, a.max, b.mean, b.std, b.min, b.max
                ));
            }
            return bad;
        }
        if (a.std - b.std).abs() > self.std_tolerance() {
            bad.push(format!(
                "std {:.4e} vs {:.4e} (±{:.1e})",
                a.std,
                b.std,
                self.std_tolerance()
            ));
        }
        let mean_tol = SIGMAS * ((a.std.powi(2) + b.std.powi(2)) / a.n).sqrt()
            + ROUNDING * a.mean.abs().max(b.mean.abs());
        if (a.mean - b.mean).abs() > mean_tol {
            bad.push(format!(
                "mean {:.3e} vs {:.3e} (±{mean_tol:.1e})",
                a.mean, b.mean
            ));
        }
        if b.uniform() {
            let slack = (12.0 / a.n).min(1.0);
            let bound = b.max_abs();
            if (a.max_abs() - bound).abs() > bound * slack {
                bad.push(format!(
                    "max|x| {:.4e}, the twin's bound {bound:.4e} (±{:.1}%)",
                    a.max_abs(),
                    100.0 * slack
                ));
            }
        }
        bad
    }
}

/// Writes membench's initial weights' stats and the spec the twin needs under `dir`.
fn membench_side(spec: &Spec, dir: &Path) -> Result<BTreeMap<String, Stats>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let arch: ArchConfig = serde_yaml::from_str(spec.arch_yaml)
        .with_context(|| format!("{}: arch `{}`", spec.name, spec.arch_yaml))?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    Network::new(&vs, &arch, spec.io).with_context(|| spec.name.to_string())?;
    write_spec(
        dir,
        spec,
        &arch,
        serde_json::json!({"init_seed": TWIN_SEED}),
    )?;
    Ok(vs
        .variables()
        .into_iter()
        .map(|(name, t)| (name, Stats::of(&t)))
        .collect())
}

fn twin_side(dir: &Path) -> Result<BTreeMap<String, Stats>> {
    let path = dir.join("init_stats.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text)?;
    v.iter()
        .map(|(k, s)| Ok((k.clone(), Stats::from_json(s).with_context(|| k.clone())?)))
        .collect()
}

/// Both sides of every requested family, paired by membench name.
fn compare(args: &ParityArgs, root: &Path) -> Result<Vec<Row>> {
    let table = specs(args, "bench")?;
    let mut ours = vec![];
    for spec in &table {
        ours.push(membench_side(spec, &root.join(spec.name))?);
    }
    let dirs: Vec<_> = table.iter().map(|s| root.join(s.name)).collect();
    let mut script_args = vec![std::ffi::OsStr::new("--init-stats")];
    script_args.extend(dirs.iter().map(|d| d.as_os_str()));
    run_script(&python(args), &script_args)?;
    let mut rows = vec![];
    for ((spec, dir), ours) in table.iter().zip(&dirs).zip(ours) {
        let mut twin = twin_side(dir)?;
        for (name, stats) in ours {
            let twin = twin
                .remove(&name)
                .with_context(|| format!("{}: the twin has no `{name}`", spec.name))?;
            rows.push(Row {
                family: spec.name.to_string(),
                name,
                ours: stats,
                twin,
            });
        }
        if !twin.is_empty() {
            bail!(
                "{}: the twin exports parameters membench lacks: {:?}",
                spec.name,
                twin.keys().collect::<Vec<_>>()
            );
        }
    }
    Ok(rows)
}

/// The Markdown table of `rows`.
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| family | parameter | shape | init | membench std | twin std | std tolerance | membench mean | twin mean | max abs membench / twin | ok |\n|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let bad = r.mismatches();
        s += &format!(
            "| {} | {} | {:?} | {} | {:.4e} | {:.4e} | {:.1e} | {:.2e} | {:.2e} | {:.4e} / {:.4e} | {} |\n",
            r.family,
            r.name,
            r.ours.shape,
            r.init(),
            r.ours.std,
            r.twin.std,
            r.std_tolerance(),
            r.ours.mean,
            r.twin.mean,
            r.ours.max_abs(),
            r.twin.max_abs(),
            if bad.is_empty() {
                "ok".to_string()
            } else {
                format!("**{}**", bad.join("; "))
            },
        );
    }
    s
}

/// Compares every requested family's initial parameters with the twin's; prints the table and a
/// summary; an error when any parameter mismatches.
pub fn run(args: &ParityArgs) -> Result<()> {
    let (root, scratch) = out_root(args);
    let rows = compare(args, &root);
    if scratch {
        let _ = std::fs::remove_dir_all(&root);
    }
    let rows = rows?;
    print!("{}", markdown(&rows));
    let bad: Vec<String> = rows
        .iter()
        .filter(|r| !r.mismatches().is_empty())
        .map(|r| format!("{} {}", r.family, r.name))
        .collect();
    let families = rows
        .iter()
        .map(|r| r.family.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    println!(
        "{} parameters of {families} families, {} mismatched",
        rows.len(),
        bad.len()
    );
    if !bad.is_empty() {
        bail!(
            "parity --init-stats: initial statistics differ from the twin's: {}",
            bad.join(", ")
        );
    }
    Ok(())
}
