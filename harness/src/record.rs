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
//! the file is next opened.
//!
//! The runs.csv columns (what each means, which are deterministic) are documented in README.md,
//! "Results: layout and CSV schema", from [`RunRecord::cells`] and `tail_columns` below.

use crate::config::RunConfig;
use crate::eval::Metrics;
use crate::train::{CurvePoint, EvalRow, Status, TrainOutcome};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Where and how a run executed; not part of the run id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunEnv {
    pub device: String,
    pub threads: i32,
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
    Ok(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)
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
    let mut header: Vec<String> = ["step", "wall_s", "train_loss"].map(String::from).to_vec();
    header.extend(metric_header("valid_"));
    header.extend(["lr", "grad_norm", "rss_bytes"].map(String::from));
    let rows = curve.iter().map(|p| {
        let mut r = vec![p.step.to_string(), fmt_f64(p.wall_s), fmt_f64(p.train_loss)];
        r.extend(metric_cells(Some(&p.valid)));
        r.extend([fmt_f64(p.lr), fmt_f64(p.grad_norm), p.rss_bytes.to_string()]);
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
            "success_metric",
            "success_threshold",
            "selection",
            "device",
            "threads",
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
        // Training FLOPs ≈ 3 × forward (forward + backward of activations and weights).
        let mfu = o
            .zip(self.env.peak_flops)
            .map(|(o, peak)| 3.0 * o.flops_per_token * o.train_tokens_per_s / peak);
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
            "success_metric",
            o.map(|o| o.success.metric.clone()).unwrap_or_default(),
        );
        put("success_threshold", opt(o.map(|o| o.success.threshold)));
        put("selection", c.train.selection.as_str().into());
        let e = &self.env;
        put("device", e.device.clone());
        put("threads", e.threads.to_string());
        put("membench_version", e.membench_version.clone());
        put("git_commit", e.git_commit.clone());
        put("tch_version", e.tch_version.clone());
        put("torch_version", e.torch_version.clone());
        put("host", e.host.clone());
        put("started_at", e.started_at.clone());
        m
    }
}

/// runs.csv: one row per run id. Opened once per sweep, by the process holding the sweep lock.
pub struct RunsCsv {
    path: PathBuf,
    header: Vec<String>,
    rows: Vec<BTreeMap<String, String>>,
}

impl RunsCsv {
    /// Opens (or starts) `<out>/runs.csv`, cutting off a torn last line. Only the holder of the
    /// directory's lock may call this (it may write).
    pub fn open(out: &Path) -> Result<Self> {
        let path = out.join("runs.csv");
        if path.exists() {
            repair_torn_tail(&path)?;
        }
        Self::read_from(path, false)
    }

    /// Reads `<out>/runs.csv` without writing anything (a torn last line is ignored, not cut);
    /// empty when there is no such file. For `list`, `--dry-run` and readers of results.
    pub fn read_only(out: &Path) -> Result<Self> {
        Self::read_from(out.join("runs.csv"), true)
    }

    fn read_from(path: PathBuf, skip_torn: bool) -> Result<Self> {
        let mut header = vec![];
        let mut rows = vec![];
        if path.exists() {
            let mut bytes =
                fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            if skip_torn && bytes.last().is_some_and(|&b| b != b'\n') {
                bytes.truncate(bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1));
            }
            let mut r = csv::Reader::from_reader(bytes.as_slice());
            header = r
                .headers()
                .with_context(|| format!("reading {}", path.display()))?
                .iter()
                .map(String::from)
                .collect();
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
        }
        Ok(RunsCsv { path, header, rows })
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
            None => self.rows.push(cells.clone()),
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

/// Appends and syncs one row. Testing only: `MEMBENCH_FAULT_WRITE=N` makes the N-th append of
/// this process write half its bytes and fail, as a full disk would.
fn append_row(f: &mut File, body: &[u8]) -> std::io::Result<()> {
    static APPENDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = APPENDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if std::env::var("MEMBENCH_FAULT_WRITE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        == Some(n)
    {
        f.write_all(&body[..body.len() / 2])?;
        f.sync_data()?;
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "injected write failure (MEMBENCH_FAULT_WRITE)",
        ));
    }
    f.write_all(body)?;
    f.sync_data()
}

/// Cuts a file back to its last complete line (a crash can leave half a row).
fn repair_torn_tail(path: &Path) -> Result<()> {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut bytes = vec![];
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut bytes)?;
    let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    tracing::warn!(
        "{}: cutting a torn last line ({} bytes)",
        path.display(),
        bytes.len() - keep
    );
    f.set_len(keep as u64)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_swept_section_keeps_the_fixed_column() {
        assert_eq!(swept_column("arch.hidden_size"), "arch.hidden_size");
        assert_eq!(swept_column("arch"), "arch_config");
        assert_eq!(swept_column("task"), "task_config");
        assert_eq!(swept_column("seed"), "seed_config");
    }
}
