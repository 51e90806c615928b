//! Everything written under the results directory goes through here.
//!
//! Layout:
//! ```text
//! <out>/runs.csv                    one row per run (any status); the row's status says finished
//! <out>/runs/<run_id>/config.yaml   the resolved RunConfig
//! <out>/runs/<run_id>/result.json   the child's record, turned into the row by the sweep
//! <out>/runs/<run_id>/curve.csv     validation curve
//! <out>/runs/<run_id>/eval.csv      test metrics per checkpoint and evaluation condition
//! <out>/runs/<run_id>/run.log       the child's stdout and stderr (streamed, not written here)
//! ```
//! Files are written to a temporary name, synced and renamed, so a reader never sees half a file.
//! runs.csv grows by appended, synced rows; a torn last line (a crash mid-append) is cut off when
//! the file is next opened, and a whole last row that lacks only its newline gets it. Reading
//! runs.csv checks it: the fixed columns, one row per run id, known statuses, integer seeds.
//!
//! The runs.csv columns (what each means, which are deterministic) are documented in README.md,
//! "Results: layout and CSV schema", from [`RunRecord::cells`] and `tail_columns` below.

pub mod choice;

use crate::input::config::RunConfig;
use crate::run::eval::Metrics;
use crate::run::train::{CurvePoint, EvalRow, Status, TrainOutcome};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where and how a run executed; not part of the run id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnv {
    pub device: String,
    pub threads: i32,
    /// The GEMM path of the run's dense products (`onednn` or `libtorch`; see
    /// `membench_architectures::dense`). Empty in records of membench 0.4.1 and earlier, which
    /// ran oneDNN on the CPU: see [`gemm_path_of`].
    #[serde(default)]
    pub gemm_path: String,
    /// The CPU's vector ISA (`avx512`, `avx2`, ...) and model name: timings and the float32
    /// kernels libtorch dispatches to depend on them.
    #[serde(default)]
    pub cpu_isa: String,
    #[serde(default)]
    pub cpu: String,
    pub membench_version: String,
    pub git_commit: String,
    pub tch_version: String,
    pub torch_version: String,
    pub host: String,
    pub started_at: String,
    pub wall_s: f64,
    pub peak_rss_bytes: Option<u64>,
    pub peak_device_bytes: Option<u64>,
    /// Peak FLOP/s of this machine used for `mfu`, when measured.
    pub peak_flops: Option<f64>,
}

impl RunEnv {
    /// This process's environment for a run that started at `started_at` and took `wall_s`;
    /// memory peaks and the FLOP/s peak are the caller's to fill in.
    pub fn here(device: String, threads: i32, started_at: String, wall_s: f64) -> Self {
        RunEnv {
            gemm_path: crate::sys::gemm_path_for(&device).into(),
            cpu_isa: crate::sys::cpu_isa().into(),
            cpu: crate::sys::cpu_model(),
            device,
            threads,
            membench_version: crate::sys::MEMBENCH_VERSION.into(),
            git_commit: crate::sys::GIT_COMMIT.into(),
            tch_version: crate::sys::TCH_VERSION.into(),
            torch_version: crate::sys::TORCH_VERSION.into(),
            host: crate::sys::host(),
            started_at,
            wall_s,
            peak_rss_bytes: None,
            peak_device_bytes: None,
            peak_flops: None,
        }
    }
}

/// A finished run: what result.json holds and what a runs.csv row is made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub config: RunConfig,
    pub status: Status,
    pub reason: String,
    pub outcome: Option<TrainOutcome>,
    pub env: RunEnv,
}

pub fn run_dir(out: &Path, run_id: &str) -> PathBuf {
    out.join("runs").join(run_id)
}

/// Copies a run directory's files (not subdirectories, not temp files) into `dst`, each atomically.
pub fn copy_run_dir(src: &Path, dst: &Path) -> Result<()> {
    for entry in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if !entry.file_type()?.is_file() || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let bytes = fs::read(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        write_atomic(&dst.join(&name), &bytes)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("path has no parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().and_then(|s| s.to_str()).unwrap_or("f"),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn fmt_f64(v: f64) -> String {
    // Shortest representation that round-trips: the CSV numbers are bit-exact.
    if v.is_nan() {
        "nan".into()
    } else {
        format!("{v:?}")
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(fmt_f64).unwrap_or_default()
}

fn csv_bytes(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(header)?;
    for r in rows {
        w.write_record(&r)?;
    }
    w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))
}

fn metric_header(prefix: &str) -> Vec<String> {
    Metrics::NAMES
        .iter()
        .map(|n| format!("{prefix}{n}"))
        .collect()
}

fn metric_cells(m: Option<&Metrics>) -> Vec<String> {
    match m {
        Some(m) => m.values().into_iter().map(opt).collect(),
        None => vec![String::new(); Metrics::NAMES.len()],
    }
}

pub fn write_curve(path: &Path, curve: &[CurvePoint]) -> Result<()> {
    let mut header: Vec<String> = ["step", "wall_s", "train_tokens", "train_loss"]
        .map(String::from)
        .to_vec();
    header.extend(metric_header("valid_"));
    header.extend(["lr", "grad_norm", "rss_bytes", "epoch"].map(String::from));
    let rows = curve.iter().map(|p| {
        let mut r = vec![
            p.step.to_string(),
            fmt_f64(p.wall_s),
            p.train_tokens.to_string(),
            fmt_f64(p.train_loss),
        ];
        r.extend(metric_cells(Some(&p.valid)));
        r.extend([
            fmt_f64(p.lr),
            fmt_f64(p.grad_norm),
            p.rss_bytes.to_string(),
            p.epoch.map(|e| e.to_string()).unwrap_or_default(),
        ]);
        r
    });
    write_atomic(
        path,
        &csv_bytes(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows)?,
    )
}

pub fn write_eval(path: &Path, rows: &[EvalRow]) -> Result<()> {
    let mut header: Vec<String> = ["checkpoint", "eval_len", "depth"]
        .map(String::from)
        .to_vec();
    header.extend(metric_header(""));
    let rows = rows.iter().map(|e| {
        let mut r = vec![
            e.checkpoint.as_str().to_string(),
            e.point
                .map(|p| p.length.to_string())
                .unwrap_or_else(|| "train".into()),
            e.point
                .and_then(|p| p.depth)
                .map(fmt_f64)
                .unwrap_or_default(),
        ];
        r.extend(metric_cells(Some(&e.metrics)));
        r
    });
    write_atomic(
        path,
        &csv_bytes(&header.iter().map(String::as_str).collect::<Vec<_>>(), rows)?,
    )
}

/// Columns of runs.csv before the swept keys.
const LEAD: [&str; 4] = ["run_id", "experiment", "task", "arch"];

/// Columns of runs.csv after the swept keys.
fn tail_columns() -> Vec<String> {
    let mut c: Vec<String> = [
        "seed",
        "status",
        "reason",
        "steps",
        "wall_s",
        "train_samples_per_s",
        "train_tokens_per_s",
        "step_ms_median",
        "peak_rss_bytes",
        "peak_device_bytes",
        "param_count",
        "state_size",
        "flops_per_token",
        "train_tokens",
        "train_flops",
        "mfu",
    ]
    .map(String::from)
    .to_vec();
    c.extend(metric_header("final_"));
    c.extend(metric_header("best_"));
    c.extend(
        [
            "best_step",
            "steps_to_threshold",
            "wall_s_to_threshold",
            "flops_to_threshold",
            "success_metric",
            "success_threshold",
            "selection",
            "device",
            "threads",
            "gemm_path",
            "cpu_isa",
            "cpu",
            "membench_version",
            "git_commit",
            "tch_version",
            "torch_version",
            "host",
            "started_at",
        ]
        .map(String::from),
    );
    c
}

/// Prefix of the runs.csv column of a tuned key (`tune:train.lr`): the run is one candidate of a
/// tuning protocol (see `input::grid`), and reports choose among the candidates.
pub const TUNE_PREFIX: &str = "tune:";

/// The rows of a CSV file written here (curve.csv, eval.csv), each a map from column to text.
pub fn read_csv_rows(path: &Path) -> Result<Vec<BTreeMap<String, String>>> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header: Vec<String> = r.headers()?.iter().map(String::from).collect();
    let mut rows = vec![];
    for rec in r.records() {
        let rec = rec.with_context(|| format!("reading {}", path.display()))?;
        rows.push(
            header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect(),
        );
    }
    Ok(rows)
}

/// The number in a row's cell `col`; None when it is missing or not a number.
pub fn num(row: &BTreeMap<String, String>, col: &str) -> Option<f64> {
    row.get(col).and_then(|s| s.parse::<f64>().ok())
}

/// The `tune_seeds` cell of a run: its tuning seeds, space-separated; empty without any.
pub fn tune_seeds_cell(c: &crate::input::config::RunConfig) -> String {
    let seeds: Vec<String> = c.tune_seeds.iter().map(u64::to_string).collect();
    seeds.join(" ")
}

/// The runs.csv column of an experiment's tuning seeds (`tune_seeds`, e.g. `0` or `0 1`): the
/// seeds its one choice per setting is made on. Present only in results that have such
/// experiments, and empty in the rows of the others.
pub const TUNE_SEEDS: &str = "tune_seeds";

/// The runs.csv column of a swept key. A whole section swept at once (`grid: {arch: [...]}`) would
/// collide with the fixed `arch`/`task` column, so it becomes `arch_config`/`task_config`.
fn swept_column(key: &str) -> String {
    if LEAD.contains(&key) || tail_columns().iter().any(|c| c == key) {
        format!("{key}_config")
    } else {
        key.to_string()
    }
}

fn swept_cell(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Training FLOPs of `tokens` tokens (or FLOP/s at `tokens` tokens/s): 3 × the forward's, as
/// forward + backward (gradients of activations and of weights) ≈ 3 forwards. `flops_per_token`
/// is counted at the longest evaluation length, so for a family whose cost per token grows with
/// the length (attention) trained on shorter sequences this is an upper bound.
fn train_flops(o: &TrainOutcome, tokens: f64) -> f64 {
    3.0 * o.flops_per_token * tokens
}

impl RunRecord {
    /// The runs.csv cells of this record, by column name.
    pub fn cells(&self) -> BTreeMap<String, String> {
        let c = &self.config;
        let o = self.outcome.as_ref();
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put("run_id", self.run_id.clone());
        put("experiment", c.experiment.clone());
        put("task", c.task.name().into());
        put("arch", c.arch.name().into());
        for (k, v) in &c.swept {
            put(&swept_column(k), swept_cell(v));
        }
        for (k, v) in &c.tune {
            put(&format!("{TUNE_PREFIX}{k}"), swept_cell(v));
        }
        if !c.tune_seeds.is_empty() {
            put(TUNE_SEEDS, tune_seeds_cell(c));
        }
        put("seed", c.seed.to_string());
        put("status", self.status.as_str().into());
        put("reason", self.reason.clone());
        put("steps", o.map(|o| o.steps.to_string()).unwrap_or_default());
        put("wall_s", fmt_f64(self.env.wall_s));
        put("train_samples_per_s", opt(o.map(|o| o.train_samples_per_s)));
        put("train_tokens_per_s", opt(o.map(|o| o.train_tokens_per_s)));
        put("step_ms_median", opt(o.map(|o| o.step_ms_median)));
        put(
            "peak_rss_bytes",
            self.env
                .peak_rss_bytes
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        put(
            "peak_device_bytes",
            self.env
                .peak_device_bytes
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        put(
            "param_count",
            o.map(|o| o.param_count.to_string()).unwrap_or_default(),
        );
        put(
            "state_size",
            o.map(|o| o.state_size.to_string()).unwrap_or_default(),
        );
        put("flops_per_token", opt(o.map(|o| o.flops_per_token)));
        let tokens = o.and_then(|o| o.train_tokens);
        put(
            "train_tokens",
            tokens.map(|t| t.to_string()).unwrap_or_default(),
        );
        let flops = |tokens: Option<u64>| o.zip(tokens).map(|(o, t)| train_flops(o, t as f64));
        put("train_flops", opt(flops(tokens)));
        let mfu = o
            .zip(self.env.peak_flops)
            .map(|(o, peak)| train_flops(o, o.train_tokens_per_s) / peak);
        put("mfu", opt(mfu));
        for (prefix, metrics) in [
            ("final_", o.and_then(|o| o.final_metrics.as_ref())),
            ("best_", o.and_then(|o| o.best_metrics.as_ref())),
        ] {
            for (name, cell) in metric_header(prefix).into_iter().zip(metric_cells(metrics)) {
                put(&name, cell);
            }
        }
        put(
            "best_step",
            o.and_then(|o| o.best_step)
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        put(
            "steps_to_threshold",
            o.and_then(|o| o.steps_to_threshold)
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        put(
            "wall_s_to_threshold",
            opt(o.and_then(|o| o.wall_s_to_threshold)),
        );
        put(
            "flops_to_threshold",
            opt(flops(o.and_then(|o| o.tokens_to_threshold))),
        );
        put(
            "success_metric",
            o.map(|o| o.success.metric.clone()).unwrap_or_default(),
        );
        put("success_threshold", opt(o.map(|o| o.success.threshold)));
        put("selection", c.train.selection.as_str().into());
        let e = &self.env;
        put("device", e.device.clone());
        put("threads", e.threads.to_string());
        put("gemm_path", e.gemm_path.clone());
        put("cpu_isa", e.cpu_isa.clone());
        put("cpu", e.cpu.clone());
        put("membench_version", e.membench_version.clone());
        put("git_commit", e.git_commit.clone());
        put("tch_version", e.tch_version.clone());
        put("torch_version", e.torch_version.clone());
        put("host", e.host.clone());
        put("started_at", e.started_at.clone());
        m
    }
}

/// Columns without which a runs.csv is not one: the run's identity, its status, and the
/// provenance a sweep checks before adding to it.
const REQUIRED: [&str; 8] = [
    "run_id",
    "experiment",
    "task",
    "arch",
    "seed",
    "status",
    "membench_version",
    "torch_version",
];

const STATUSES: [Status; 4] = [
    Status::Done,
    Status::Diverged,
    Status::Failed,
    Status::Timeout,
];

fn known_status(s: &str) -> bool {
    STATUSES.iter().any(|k| k.as_str() == s)
}

/// Columns that measure one execution (time, throughput, memory): two executions of one run
/// differ in them.
pub const MEASURED_COLUMNS: [&str; 8] = [
    "wall_s",
    "wall_s_to_threshold",
    "train_samples_per_s",
    "train_tokens_per_s",
    "step_ms_median",
    "peak_rss_bytes",
    "peak_device_bytes",
    "mfu",
];

/// Columns saying where, when and with which build a run executed.
pub const PROVENANCE_COLUMNS: [&str; 9] = [
    "host",
    "cpu",
    "cpu_isa",
    "gemm_path",
    "started_at",
    "git_commit",
    "membench_version",
    "tch_version",
    "torch_version",
];

/// The CPU GEMM path a runs.csv row was made with: its `gemm_path` cell, or for a CPU row without
/// one (membench 0.4.1 and earlier, which always ran oneDNN on the CPU and panicked where it could
/// not) `onednn`. Empty for a GPU row, where every product is libtorch's and the CPU path does not
/// matter.
pub fn gemm_path_of(row: &BTreeMap<String, String>) -> &str {
    if row.get("device").is_none_or(|d| d != "cpu") {
        return "";
    }
    match row.get("gemm_path").map(String::as_str) {
        Some(p) if !p.is_empty() => p,
        _ => "onednn",
    }
}

/// Columns holding numbers (or nothing): what readers of results parse as floats.
pub fn numeric_column(c: &str) -> bool {
    let metric = |p: &str| {
        c.strip_prefix(p)
            .is_some_and(|m| Metrics::NAMES.contains(&m))
    };
    metric("final_")
        || metric("best_")
        || MEASURED_COLUMNS.contains(&c)
        || matches!(
            c,
            "steps"
                | "param_count"
                | "state_size"
                | "flops_per_token"
                | "train_tokens"
                | "train_flops"
                | "best_step"
                | "steps_to_threshold"
                | "flops_to_threshold"
                | "success_threshold"
        )
}

/// Bad input at `path:line` (exit code 2).
fn bad_line(path: &Path, line: u64, message: String) -> anyhow::Error {
    anyhow::Error::new(crate::input::strict::BadInput::one(
        path.display().to_string(),
        line as usize,
        0,
        "",
        message,
    ))
}

fn csv_error(path: &Path, e: csv::Error) -> anyhow::Error {
    let line = e.position().map_or(1, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{len} fields, expected {expected_len} (the header's)"),
        _ => e.to_string(),
    };
    bad_line(path, line, message)
}

/// The end of runs.csv: a row is one line, appended with its newline.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tail {
    /// Empty, or ends with a newline.
    Whole,
    /// The last line is a whole row (or the header) without its newline.
    Unterminated,
    /// The last line is half a row (a crash mid-append); the file's first `keep` bytes are whole.
    Torn { keep: usize },
}

/// Whether `line`, the last line of a file with `header`, is a whole row: the header's field
/// count, a known status and, when last, a whole start time (a cut row ends early).
fn whole_row(header: &[String], line: &[u8]) -> bool {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line);
    let Some(Ok(rec)) = r.records().next() else {
        return false;
    };
    let cell = |c: &str| header.iter().position(|h| h == c).and_then(|i| rec.get(i));
    rec.len() == header.len()
        && cell("status").is_some_and(known_status)
        && (header.last().map(String::as_str) != Some("started_at")
            || cell("started_at").is_some_and(|t| humantime::parse_rfc3339(t).is_ok()))
}

/// runs.csv: one row per run id. Opened once per sweep, by the process holding the sweep lock.
pub struct RunsCsv {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<BTreeMap<String, String>>,
    /// The file line of each row as read (0 for rows added since).
    lines: Vec<u64>,
}

impl RunsCsv {
    /// Opens (or starts) `<out>/runs.csv`, checked as [`RunsCsv::read_only`] does; then cuts off
    /// a torn last line (saying so), or adds the newline a whole last row lacks. Only the holder
    /// of the directory's lock may call this (it may write).
    pub fn open(out: &Path) -> Result<Self> {
        let (csv, tail) = Self::read_from(out.join("runs.csv"))?;
        let fix = |f: &mut File| -> std::io::Result<()> {
            match tail {
                Tail::Whole => return Ok(()),
                Tail::Unterminated => f.write_all(b"\n")?,
                Tail::Torn { keep } => {
                    eprintln!(
                        "{}: cutting a torn last line ({} bytes; a crash mid-append)",
                        csv.path.display(),
                        f.metadata()?.len() - keep as u64
                    );
                    f.set_len(keep as u64)?
                }
            }
            f.sync_all()
        };
        if tail != Tail::Whole {
            OpenOptions::new()
                .append(true)
                .open(&csv.path)
                .and_then(|mut f| fix(&mut f))
                .with_context(|| format!("repairing the end of {}", csv.path.display()))?;
        }
        Ok(csv)
    }

    /// Reads `<out>/runs.csv` without writing anything (a torn last line is ignored, not cut);
    /// empty when there is no such file or it is empty. A file without the fixed columns, a
    /// malformed row, a duplicated run id, an unknown status or a non-integer seed is bad input
    /// naming its line. For `list`, `--dry-run` and readers of results.
    pub fn read_only(out: &Path) -> Result<Self> {
        Ok(Self::read_from(out.join("runs.csv"))?.0)
    }

    fn read_from(path: PathBuf) -> Result<(Self, Tail)> {
        let mut csv = RunsCsv {
            path,
            header: vec![],
            rows: vec![],
            lines: vec![],
        };
        let path = csv.path.clone();
        let mut bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((csv, Tail::Whole)),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if bytes.is_empty() {
            return Ok((csv, Tail::Whole));
        }
        let mut r = csv::Reader::from_reader(bytes.as_slice());
        csv.header = r
            .headers()
            .map_err(|e| csv_error(&path, e))?
            .iter()
            .map(String::from)
            .collect();
        for c in REQUIRED {
            if !csv.header.iter().any(|h| h == c) {
                return Err(bad_line(&path, 1, format!("missing column {c}")));
            }
        }
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let tail = match bytes.last() {
            Some(b'\n') => Tail::Whole,
            _ if keep == 0 || whole_row(&csv.header, &bytes[keep..]) => Tail::Unterminated,
            _ => Tail::Torn { keep },
        };
        if let Tail::Torn { keep } = tail {
            bytes.truncate(keep);
        }
        let mut r = csv::Reader::from_reader(bytes.as_slice());
        let mut seen: BTreeMap<String, u64> = BTreeMap::new();
        for rec in r.records() {
            let rec = rec.map_err(|e| csv_error(&path, e))?;
            let line = rec.position().map_or(0, |p| p.line());
            let row: BTreeMap<String, String> = csv
                .header
                .iter()
                .cloned()
                .zip(rec.iter().map(String::from))
                .collect();
            let bad = |m: String| bad_line(&path, line, m);
            let id = &row["run_id"];
            if id.is_empty() {
                return Err(bad("run_id is empty".into()));
            }
            if let Some(first) = seen.insert(id.clone(), line) {
                return Err(bad(format!(
                    "run_id {id} is a duplicate of line {first} (one row per run)"
                )));
            }
            let status = &row["status"];
            if !known_status(status) {
                return Err(bad(format!(
                    "status `{status}`: expected done, diverged, failed or timeout"
                )));
            }
            let seed = &row["seed"];
            if seed.parse::<u64>().is_err() {
                return Err(bad(format!(
                    "seed `{seed}`: expected a non-negative integer"
                )));
            }
            csv.rows.push(row);
            csv.lines.push(line);
        }
        Ok((csv, tail))
    }

    /// Checks that every non-empty cell of a numeric column (metrics, sizes, timings) is a number
    /// (`nan` included): a reader that skipped it would compute statistics over fewer runs.
    pub fn check_numbers(&self) -> Result<()> {
        for (row, line) in self.rows.iter().zip(&self.lines) {
            for (col, v) in row {
                if numeric_column(col) && !v.is_empty() && v.parse::<f64>().is_err() {
                    return Err(bad_line(
                        &self.path,
                        *line,
                        format!("{col} `{v}`: expected a number (or an empty cell)"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The file line each row was read from (0 for a row added since).
    pub fn line_of(&self, index: usize) -> u64 {
        self.lines.get(index).copied().unwrap_or(0)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rows(&self) -> &[BTreeMap<String, String>] {
        &self.rows
    }

    /// Header and rows, for readers that keep no handle on the file.
    pub fn into_parts(self) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
        (self.header, self.rows)
    }

    pub fn status_of(&self, run_id: &str) -> Option<&str> {
        self.rows
            .iter()
            .rev()
            .find(|r| r.get("run_id").map(String::as_str) == Some(run_id))
            .and_then(|r| r.get("status"))
            .map(String::as_str)
    }

    /// Adds or replaces the row of `rec.run_id`. Appends and syncs when the columns fit; otherwise
    /// (new swept columns, or a replaced row) rewrites the file atomically.
    pub fn upsert(&mut self, rec: &RunRecord) -> Result<()> {
        self.upsert_row(rec.cells())
    }

    /// [`RunsCsv::upsert`] of a row given by its cells (column name → text); `run_id` is required.
    pub fn upsert_row(&mut self, cells: BTreeMap<String, String>) -> Result<()> {
        anyhow::ensure!(
            cells.contains_key("run_id"),
            "a runs.csv row needs a run_id"
        );
        // One row is one line: the torn-line repair cuts at the last newline.
        let cells: BTreeMap<String, String> = cells
            .into_iter()
            .map(|(k, v)| (k, v.replace(['\n', '\r'], " ")))
            .collect();
        let replaced = self
            .rows
            .iter()
            .position(|r| r.get("run_id") == cells.get("run_id"));
        let fits = !self.header.is_empty() && cells.keys().all(|k| self.header.contains(k));
        match replaced {
            Some(i) => self.rows[i] = cells.clone(),
            None => {
                self.rows.push(cells.clone());
                self.lines.push(0);
            }
        }
        if fits && replaced.is_none() {
            let line = csv_bytes(
                &self.header.iter().map(String::as_str).collect::<Vec<_>>(),
                std::iter::once(self.row_cells(&cells)),
            )?;
            // Skip the header line that csv_bytes wrote.
            let body = &line[line.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1)..];
            let mut f = OpenOptions::new()
                .append(true)
                .open(&self.path)
                .with_context(|| format!("opening {}", self.path.display()))?;
            let before = f.metadata()?.len();
            let written = append_row(&mut f, body);
            if written.is_err() {
                // Best effort: take back a partial row now; otherwise the next open cuts it.
                let _ = f.set_len(before).and_then(|_| f.sync_all());
                self.rows.pop();
                self.lines.pop();
            }
            return written.with_context(|| format!("appending a row to {}", self.path.display()));
        }
        self.header = self.columns();
        let header: Vec<&str> = self.header.iter().map(String::as_str).collect();
        let bytes = csv_bytes(&header, self.rows.iter().map(|r| self.row_cells(r)))?;
        write_atomic(&self.path, &bytes)
    }

    fn row_cells(&self, row: &BTreeMap<String, String>) -> Vec<String> {
        self.header
            .iter()
            .map(|h| row.get(h).cloned().unwrap_or_default())
            .collect()
    }

    /// Lead columns, then every swept key seen (sorted), then the fixed tail.
    fn columns(&self) -> Vec<String> {
        let tail = tail_columns();
        let mut swept: Vec<String> = self
            .rows
            .iter()
            .flat_map(|r| r.keys())
            .filter(|k| !LEAD.contains(&k.as_str()) && !tail.contains(k))
            .cloned()
            .collect();
        swept.sort();
        swept.dedup();
        LEAD.iter()
            .map(|s| s.to_string())
            .chain(swept)
            .chain(tail)
            .collect()
    }
}

/// Appends and syncs one row.
fn append_row(f: &mut File, body: &[u8]) -> std::io::Result<()> {
    #[cfg(feature = "fault-injection")]
    if let Some(half) = injected_write_failure(body) {
        f.write_all(half)?;
        f.sync_data()?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected write failure (MEMBENCH_FAULT_WRITE)",
        ));
    }
    f.write_all(body)?;
    f.sync_data()
}

/// Testing only (feature `fault-injection`): `MEMBENCH_FAULT_WRITE=N` makes the N-th append of
/// this process write half its bytes (returned) and fail, as a full disk would.
#[cfg(feature = "fault-injection")]
fn injected_write_failure(body: &[u8]) -> Option<&[u8]> {
    static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = APPENDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    let nth = std::env::var("MEMBENCH_FAULT_WRITE")
        .ok()?
        .parse::<u64>()
        .ok()?;
    (nth == n).then(|| &body[..body.len() / 2])
}

/// Refuses an `--out`/`--results` path that exists and is not a directory (exit 2): read as a
/// results directory it would look empty, and every run would seem pending.
pub fn check_results_dir(dir: &Path, option: &str) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{option} {}: is a file; expected a results directory",
            dir.display()
        )));
    }
    Ok(())
}

/// The last non-empty lines of a run's log, for the reason column; for a Rust panic, the panic
/// line and its message instead (a backtrace would fill the tail).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b[b.len().saturating_sub(65536)..]).into_owned())
        .unwrap_or_default();
    let all: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = match all.iter().rposition(|l| l.contains("panicked at")) {
        Some(i) => i,
        None => all.len().saturating_sub(lines),
    };
    let s = all[start..(start + lines).min(all.len())].join(" | ");
    if s.len() > 600 {
        let cut = (s.len() - 600..s.len())
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("...{}", &s[cut..])
    } else {
        s
    }
}

/// `major.minor` of a semver string.
pub fn minor(v: &str) -> &str {
    match v.match_indices('.').nth(1) {
        Some((i, _)) => &v[..i],
        None => v,
    }
}

/// Why this binary cannot be expected to reproduce a row made by `stored`, if it cannot.
pub fn version_mismatch(stored: &BTreeMap<String, String>) -> Option<String> {
    let get = |k: &str| stored.get(k).map(String::as_str).unwrap_or("");
    let torch = get("torch_version");
    if torch != crate::sys::TORCH_VERSION {
        return Some(format!(
            "stored run used torch {torch}, this binary links torch {}",
            crate::sys::TORCH_VERSION
        ));
    }
    let mb = get("membench_version");
    if minor(mb) != minor(crate::sys::MEMBENCH_VERSION) {
        return Some(format!(
            "stored run used membench {mb}, this binary is membench {}",
            crate::sys::MEMBENCH_VERSION
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row's GEMM path: its cell; a CPU row of 0.4.1 and earlier (no cell) ran oneDNN; a GPU
    /// row has no CPU path.
    #[test]
    fn gemm_path_of_rows_old_and_new() {
        let row = |cells: &[(&str, &str)]| -> BTreeMap<String, String> {
            cells
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            gemm_path_of(&row(&[("device", "cpu"), ("gemm_path", "libtorch")])),
            "libtorch"
        );
        assert_eq!(
            gemm_path_of(&row(&[("device", "cpu"), ("gemm_path", "")])),
            "onednn"
        );
        assert_eq!(gemm_path_of(&row(&[("device", "cpu")])), "onednn");
        assert_eq!(
            gemm_path_of(&row(&[("device", "cuda:0"), ("gemm_path", "libtorch")])),
            ""
        );
    }

    #[test]
    fn versions_that_change_numbers_are_refused() {
        let row = |torch: &str, mb: &str| -> BTreeMap<String, String> {
            [("torch_version", torch), ("membench_version", mb)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(version_mismatch(&row(
            crate::sys::TORCH_VERSION,
            crate::sys::MEMBENCH_VERSION
        ))
        .is_none());
        assert!(
            version_mismatch(&row("1.0.0", crate::sys::MEMBENCH_VERSION))
                .unwrap()
                .contains("torch")
        );
        let patch = format!("{}.999", minor(crate::sys::MEMBENCH_VERSION));
        assert!(
            version_mismatch(&row(crate::sys::TORCH_VERSION, &patch)).is_none(),
            "a patch release keeps numbers"
        );
        assert!(version_mismatch(&row(crate::sys::TORCH_VERSION, "99.0.0"))
            .unwrap()
            .contains("membench"));
    }

    use crate::test_support::fresh_dir;

    const HEADER: &str =
        "run_id,experiment,task,arch,seed,status,final_loss,membench_version,torch_version,started_at\n";

    fn row(id: &str, seed: &str, status: &str) -> String {
        format!("{id},e,copy,lstm,{seed},{status},0.5,0.4.0,2.11.0,2026-11-28T10:00:00Z\n")
    }

    /// A results dir whose runs.csv holds `text`.
    fn dir_with(name: &str, text: &str) -> PathBuf {
        let d = fresh_dir(name);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("runs.csv"), text).unwrap();
        d
    }

    /// The error of reading `text` through open (and read_only: the same), and that open wrote nothing.
    fn refused(name: &str, text: &str) -> String {
        let d = dir_with(name, text);
        let e = RunsCsv::read_only(&d).err().expect("read_only refuses");
        let e2 = RunsCsv::open(&d).err().expect("open refuses");
        assert!(
            e.downcast_ref::<crate::input::strict::BadInput>().is_some(),
            "{e:#}"
        );
        assert_eq!(format!("{e:#}"), format!("{e2:#}"));
        assert_eq!(fs::read_to_string(d.join("runs.csv")).unwrap(), text);
        fs::remove_dir_all(&d).unwrap();
        let path = d.join("runs.csv").display().to_string();
        format!("{e:#}").replace(&path, "runs.csv")
    }

    #[test]
    fn a_whole_last_row_without_its_newline_is_kept_and_terminated() {
        let whole = format!("{HEADER}{}{}", row("a", "1", "done"), row("b", "2", "done"));
        let d = dir_with("unterminated", whole.trim_end());
        assert_eq!(RunsCsv::read_only(&d).unwrap().rows().len(), 2);
        let csv = RunsCsv::open(&d).unwrap();
        assert_eq!(csv.status_of("b"), Some("done"));
        assert_eq!(fs::read_to_string(d.join("runs.csv")).unwrap(), whole);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_last_row_is_cut_even_inside_its_last_cell() {
        let good = format!("{HEADER}{}", row("a", "1", "done"));
        for cut in [20, 40, row("b", "2", "done").len() - 4] {
            let torn = format!("{good}{}", &row("b", "2", "done")[..cut]);
            let d = dir_with("torn", &torn);
            assert_eq!(RunsCsv::read_only(&d).unwrap().rows().len(), 1);
            assert_eq!(fs::read_to_string(d.join("runs.csv")).unwrap(), torn);
            let csv = RunsCsv::open(&d).unwrap();
            assert_eq!(
                (csv.rows().len(), csv.status_of("b")),
                (1, None),
                "cut {cut}"
            );
            assert_eq!(fs::read_to_string(d.join("runs.csv")).unwrap(), good);
            fs::remove_dir_all(&d).unwrap();
        }
    }

    #[test]
    fn a_header_without_a_fixed_column_is_refused() {
        let text = format!("{HEADER}{}", row("a", "1", "done")).replacen("run_id", "runid", 1);
        assert_eq!(
            refused("header", &text),
            "runs.csv:1: missing column run_id"
        );
        let text = format!("{HEADER}{}", row("a", "1", "done")).replace("torch_version", "torch");
        assert_eq!(
            refused("header2", &text),
            "runs.csv:1: missing column torch_version"
        );
    }

    #[test]
    fn invalid_rows_are_refused_naming_line_column_and_value() {
        let (a, b) = (row("a", "1", "done"), row("b", "2", "done"));
        let cases = [
            (
                format!("{HEADER}{a}{b}{a}"),
                "runs.csv:4: run_id a is a duplicate of line 2 (one row per run)",
            ),
            (
                format!("{HEADER}{a}{}", row("b", "2", "finished")),
                "runs.csv:3: status `finished`: expected done, diverged, failed or timeout",
            ),
            (
                format!("{HEADER}{}{b}", row("a", "1.5", "done")),
                "runs.csv:2: seed `1.5`: expected a non-negative integer",
            ),
            (
                format!("{HEADER}a,e,copy\n{b}"),
                "runs.csv:2: 3 fields, expected 10 (the header's)",
            ),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            assert_eq!(refused(&format!("rows{i}"), text), *want);
        }
    }

    #[test]
    fn a_metric_that_is_not_a_number_is_refused_by_check_numbers() {
        let text = format!(
            "{HEADER}{}{}{}",
            row("a", "1", "done"),
            row("b", "2", "done").replace("0.5", "nan"),
            row("c", "3", "failed").replace("0.5", "")
        );
        let d = dir_with("numbers", &text);
        RunsCsv::read_only(&d).unwrap().check_numbers().unwrap();
        fs::write(d.join("runs.csv"), text.replacen("0.5", "0.5x", 1)).unwrap();
        let e = RunsCsv::read_only(&d).unwrap().check_numbers().unwrap_err();
        assert!(e.downcast_ref::<crate::input::strict::BadInput>().is_some());
        assert!(
            format!("{e:#}")
                .ends_with("runs.csv:2: final_loss `0.5x`: expected a number (or an empty cell)"),
            "{e:#}"
        );
        fs::remove_dir_all(&d).unwrap();
    }

    use crate::run::train::tests::{copy_criterion, point};

    /// The compute columns: what a runs.csv written before they existed lacks.
    const COMPUTE: [&str; 4] = [
        "train_tokens",
        "train_flops",
        "wall_s_to_threshold",
        "flops_to_threshold",
    ];

    /// A done copy run of 10 forward FLOPs per token over `curve`.
    fn record_of(seed: u64, curve: Vec<CurvePoint>) -> RunRecord {
        let config: RunConfig = serde_yaml::from_str(&format!(
            "experiment: e\ntask: {{name: copy, bits: 4, min_len: 1, max_len: 4}}\n\
             arch: {{name: lstm, hidden_size: 16}}\ntrain: {{steps: 24}}\nseed: {seed}\n"
        ))
        .unwrap();
        RunRecord {
            run_id: config.run_id(),
            config,
            status: Status::Done,
            reason: String::new(),
            outcome: Some(TrainOutcome::replayed(curve, 10.0, copy_criterion())),
            env: RunEnv::here("cpu".into(), 1, "2026-01-01T00:00:00Z".into(), 4.0),
        }
    }

    #[test]
    fn training_flops_are_three_forwards_per_token_trained() {
        // Crosses 0.1 bit errors at step 12, 1.25 s and 96 tokens in; 200 tokens in all.
        let cells = record_of(0, vec![point(12, 1.25, 96, 0.05), point(24, 3.0, 200, 0.0)]).cells();
        let cell = |c: &str| cells[c].as_str();
        assert_eq!(cell("train_tokens"), "200");
        assert_eq!(cell("train_flops"), "6000.0", "3 × 10 × 200");
        assert_eq!(cell("steps_to_threshold"), "12");
        assert_eq!(cell("wall_s_to_threshold"), "1.25");
        assert_eq!(cell("flops_to_threshold"), "2880.0", "3 × 10 × 96");
        let cells = record_of(0, vec![point(24, 3.0, 200, 1.0)]).cells();
        assert_eq!(
            [
                "steps_to_threshold",
                "wall_s_to_threshold",
                "flops_to_threshold"
            ]
            .map(|c| cells[c].as_str()),
            ["", "", ""],
            "not reached"
        );
        assert_eq!(cells["train_flops"], "6000.0");
        // What readers parse and what a rerun may change.
        assert!(COMPUTE.iter().all(|c| numeric_column(c)));
        assert!(MEASURED_COLUMNS.contains(&"wall_s_to_threshold"));
        assert!(!MEASURED_COLUMNS.contains(&"flops_to_threshold"));
    }

    #[test]
    fn a_runs_csv_without_the_compute_columns_gains_them_on_the_next_row() {
        let d = fresh_dir("old-columns");
        let old = record_of(1, vec![point(24, 3.0, 200, 1.0)]).cells();
        let old_header: Vec<String> = RunsCsv {
            path: d.join("runs.csv"),
            header: vec![],
            rows: vec![old.clone()],
            lines: vec![],
        }
        .columns()
        .into_iter()
        .filter(|c| !COMPUTE.contains(&c.as_str()))
        .collect();
        let row: Vec<String> = old_header.iter().map(|c| old[c].clone()).collect();
        let text = csv_bytes(
            &old_header.iter().map(String::as_str).collect::<Vec<_>>(),
            std::iter::once(row),
        )
        .unwrap();
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("runs.csv"), text).unwrap();

        let mut csv = RunsCsv::open(&d).unwrap();
        let new = record_of(2, vec![point(24, 3.0, 200, 0.0)]);
        csv.upsert(&new).unwrap();
        let back = RunsCsv::read_only(&d).unwrap();
        back.check_numbers().unwrap();
        assert!(COMPUTE.iter().all(|c| back.header.iter().any(|h| h == c)));
        let (a, b) = (&back.rows()[0], &back.rows()[1]);
        assert_eq!(a["run_id"], old["run_id"]);
        assert!(COMPUTE.iter().all(|c| a[*c].is_empty()), "{a:?}");
        assert!(old_header.iter().all(|c| a[c] == old[c]), "old cells kept");
        assert_eq!(
            (b["train_flops"].as_str(), b["flops_to_threshold"].as_str()),
            ("6000.0", "6000.0")
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_whole_swept_section_keeps_the_fixed_column() {
        assert_eq!(swept_column("arch.hidden_size"), "arch.hidden_size");
        assert_eq!(swept_column("arch"), "arch_config");
        assert_eq!(swept_column("task"), "task_config");
        assert_eq!(swept_column("seed"), "seed_config");
    }
}
