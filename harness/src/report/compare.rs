//! `membench compare` and `membench report`: tables and plots that compare architectures over seeds.
//!
//! Reads `<results>/runs.csv` and each run's `eval.csv` / `curve.csv` (layout in record.rs), groups
//! the runs of a task by `--by` (default `arch`) plus every swept key other than the seed, and writes
//! under `<results>/reports/` (or `--out`):
//! - `<task>_<metric>_<selection>.md` and `.csv`: one row per group with n, median and the 95 %
//!   percentile-bootstrap CI of the median, mean and the 95 % Student t CI of the mean (clipped to
//!   the metric's range, `eval::Metrics::RANGES`, as are the bands of the plots), the success
//!   rate, the median steps to threshold, param count, state size, and Welch's p-value against the
//!   best group (protocol in stats.rs);
//! - `<task>_<metric>_<selection>_vs_<x>.{png,svg}`: metric against x (eval_len or depth from
//!   eval.csv, or state_size / param_count / steps / a config key from runs.csv), one line per
//!   group, mean with a 95 % t band over seeds; and `.md`, the same numbers as a table;
//! - `<task>_<metric>_<selection>_curve.{png,svg}`: validation metric against step, same band.
//!
//! Every file names the selection protocol (`last`: the final checkpoint, runs.csv `final_*` and
//! eval.csv `checkpoint = last`; `best_valid`: the checkpoint with the best validation score,
//! `best_*` and `checkpoint = best_valid`) and carries the command that produced it.

use crate::record;
use crate::report::plot::{self, Figure, Series};
use crate::report::stats::{self, Summary};
use crate::report::table::{self, csv_cell, csv_num, fmt, fmt_p, Column};
use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub use crate::input::config::Selection;

/// The x axis of the comparison plot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XAxis {
    EvalLen,
    Depth,
    StateSize,
    ParamCount,
    Steps,
    /// A numeric setting from the runs' resolved configs, e.g. `task.num_kv_pairs` or
    /// `arch.d_model` (swept or set by an experiment).
    Key(String),
}

impl std::str::FromStr for XAxis {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "eval_len" => XAxis::EvalLen,
            "depth" => XAxis::Depth,
            "state_size" => XAxis::StateSize,
            "param_count" => XAxis::ParamCount,
            "steps" => XAxis::Steps,
            k if ["task.", "arch.", "train."].iter().any(|p| k.starts_with(p)) => XAxis::Key(k.to_string()),
            _ => {
                return Err("expected eval_len, depth, state_size, param_count, steps, or a config key such as \
                            task.num_kv_pairs or arch.d_model"
                    .into())
            }
        })
    }
}

impl XAxis {
    fn as_str(&self) -> &str {
        match self {
            XAxis::EvalLen => "eval_len",
            XAxis::Depth => "depth",
            XAxis::StateSize => "state_size",
            XAxis::ParamCount => "param_count",
            XAxis::Steps => "steps",
            XAxis::Key(k) => k,
        }
    }
    fn label(&self) -> String {
        match self {
            XAxis::EvalLen => "evaluation sequence length".into(),
            XAxis::Depth => "evaluation depth".into(),
            XAxis::StateSize => "state size (floats carried between steps)".into(),
            XAxis::ParamCount => "parameter count".into(),
            XAxis::Steps => "training steps".into(),
            XAxis::Key(k) => k.clone(),
        }
    }
    /// Sizes can span orders of magnitude across architectures (plot.rs uses a log axis only when
    /// the data spans more than [`plot::LOG_SPAN`]).
    fn log(&self) -> bool {
        matches!(self, XAxis::StateSize | XAxis::ParamCount)
    }
    /// runs.csv column (or resolved `cfg:` key) holding the x value of a run.
    fn run_column(&self) -> String {
        match self {
            XAxis::Key(k) => cfg_key(k),
            x => x.as_str().to_string(),
        }
    }
}

/// `membench compare`: tables (Markdown + CSV) and plots comparing groups of runs over seeds.
#[derive(clap::Args)]
pub struct CompareArgs {
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Only this task (default: every task in runs.csv).
    #[arg(long)]
    pub task: Option<String>,
    /// runs.csv column naming the groups (swept keys other than the seed split them further).
    #[arg(long, default_value = "arch")]
    pub by: String,
    /// x axis of the comparison plot: eval_len, depth, state_size, param_count, steps, or a
    /// numeric config key such as task.num_kv_pairs (default: every axis the data has).
    #[arg(long)]
    pub x: Option<XAxis>,
    /// Only runs whose runs.csv column or resolved config key has this value, e.g.
    /// `--where task.num_kv_pairs=8` (repeatable; all must hold).
    #[arg(long = "where", value_name = "KEY=VALUE", value_parser = parse_filter)]
    pub filters: Vec<(String, String)>,
    /// Metric name, e.g. seq_acc (default: the task's success metric).
    #[arg(long)]
    pub metric: Option<String>,
    /// Checkpoint reported: last or best_valid (default: the runs' train.selection).
    #[arg(long, value_enum)]
    pub selection: Option<Selection>,
    /// Output directory (default: <results>/reports).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Every task with default metric, selection and axes (same as `membench report`; --out
    /// still applies).
    #[arg(long, conflicts_with_all = ["task", "x", "filters", "metric", "selection"])]
    pub all: bool,
}

impl CompareArgs {
    /// What `report` and `compare --all` ask for: every task, default metric, selection, axes and
    /// grouping (an `--all` with `--by` still groups by arch).
    fn every_task(results: PathBuf, out: Option<PathBuf>) -> Self {
        CompareArgs {
            results,
            task: None,
            by: "arch".into(),
            x: None,
            filters: vec![],
            metric: None,
            selection: None,
            out,
            all: true,
        }
    }
}

/// `membench report`: every table and plot of a results directory under <results>/reports.
#[derive(clap::Args)]
pub struct ReportArgs {
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
}

/// `membench compare`: writes the tables and plots asked for and prints their paths.
pub fn compare(args: &CompareArgs) -> Result<()> {
    let written = if args.all {
        write_reports(
            &CompareArgs::every_task(args.results.clone(), args.out.clone()),
            &command_line(),
        )?
    } else {
        write_reports(args, &command_line())?
    };
    print_paths(&written);
    Ok(())
}

/// `membench report` (= `compare --all`): every task's tables and plots with the default metric,
/// selection and axes; prints their paths.
pub fn report(args: &ReportArgs) -> Result<()> {
    let every = CompareArgs::every_task(args.results.clone(), None);
    print_paths(&write_reports(&every, &command_line())?);
    Ok(())
}

fn print_paths(paths: &[PathBuf]) {
    for p in paths {
        println!("{}", p.display());
    }
}

type Row = BTreeMap<String, String>;

/// runs.csv as the tables read it: header and rows, in file order.
pub struct Runs {
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

/// Reads `<results>/runs.csv` through the sweep's own reader, without writing: a torn last line
/// (a crash mid-append) is ignored, any other malformed row (or a metric cell that is not a
/// number) is an error naming its line, and a missing file is an error (a table of nothing would
/// hide a wrong path).
pub fn read_runs(results: &Path) -> Result<Runs> {
    let path = results.join("runs.csv");
    if !path.is_file() {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{}: no runs.csv here (expected the --out directory of a membench sweep)",
            path.display()
        )));
    }
    let csv = record::RunsCsv::read_only(results)?;
    csv.check_numbers()?;
    let (header, rows) = csv.into_parts();
    Ok(Runs { header, rows })
}

impl Runs {
    /// Swept keys: the columns between `arch` and `seed` (record.rs puts them there; a whole
    /// swept section is named `<section>_config`).
    fn swept_keys(&self) -> Vec<String> {
        let pos = |c: &str| self.header.iter().position(|h| h == c);
        match (pos("arch"), pos("seed")) {
            (Some(a), Some(s)) if a < s => self.header[a + 1..s].to_vec(),
            _ => vec![],
        }
    }
    fn tasks(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter_map(|r| r.get("task").cloned())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// Row key of a run's resolved config value `key` (`task.num_kv_pairs` → `cfg:task.num_kv_pairs`).
fn cfg_key(key: &str) -> String {
    format!("cfg:{key}")
}

/// A config value as a table cell: numbers and strings as written, lists and maps as JSON.
fn cell(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::Null => None,
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        other => serde_json::to_string(other).ok(),
    }
}

/// Adds to every row the settings of its resolved config (`runs/<id>/config.yaml`): each scalar of
/// the task, arch and train sections as `cfg:<section>.<key>`, and fills the row's swept-key cells
/// that are empty because its experiment set the value directly instead of sweeping it (a width
/// sweep at 8 pairs then shows `task.num_kv_pairs = 8`, not a blank). Runs without a config file
/// (failed before writing one) keep their cells as they are.
fn resolve(runs: &mut Runs, results: &Path) {
    let swept = runs.swept_keys();
    for row in &mut runs.rows {
        let Some(id) = row.get("run_id") else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(record::run_dir(results, id).join("config.yaml"))
        else {
            continue;
        };
        let Ok(cfg) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
            continue;
        };
        for section in ["task", "arch", "train"] {
            let Some(map) = cfg.get(section).and_then(|m| m.as_mapping()) else {
                continue;
            };
            for (k, v) in map {
                if let (Some(k), Some(v)) = (k.as_str(), cell(v)) {
                    row.insert(cfg_key(&format!("{section}.{k}")), v);
                }
            }
        }
        for k in &swept {
            if row.get(k).is_none_or(|v| v.is_empty()) {
                if let Some(v) = row.get(&cfg_key(k)).cloned() {
                    row.insert(k.clone(), v);
                }
            }
        }
    }
}

/// The value of `key` in a row: its runs.csv column, else its resolved config value.
fn lookup<'a>(row: &'a Row, key: &str) -> Option<&'a str> {
    row.get(key)
        .filter(|v| !v.is_empty())
        .or_else(|| row.get(&cfg_key(key)))
        .map(String::as_str)
}

/// Equal as numbers when both parse (`0.003` = `3e-3`), else as text.
fn same_value(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// Keeps the rows that satisfy every `--where KEY=VALUE`; a key no row has is an error.
fn apply_filters(runs: &mut Runs, filters: &[(String, String)]) -> Result<()> {
    for (k, v) in filters {
        if !runs.rows.iter().any(|r| lookup(r, k).is_some()) {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "--where {k}={v}: no run has `{k}` (runs.csv columns or resolved config keys such as task.num_kv_pairs)"
            )));
        }
        runs.rows
            .retain(|r| lookup(r, k).is_some_and(|x| same_value(x, v)));
    }
    Ok(())
}

/// Parses `KEY=VALUE` for `--where`.
pub fn parse_filter(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!(
            "expected KEY=VALUE (e.g. task.num_kv_pairs=8), got `{s}`"
        )),
    }
}

/// Metrics where smaller is better (the rest, accuracies, grow).
pub fn lower_is_better(metric: &str) -> bool {
    matches!(metric, "loss" | "bit_errors_per_seq" | "mse")
}

/// Range a metric can take ([`crate::run::eval::Metrics::RANGES`]), to clip intervals and bands that
/// would leave it.
fn metric_bounds(metric: &str) -> (f64, f64) {
    crate::run::eval::Metrics::range(metric).unwrap_or((f64::NEG_INFINITY, f64::INFINITY))
}

/// A metric's range in words, for table headers: `[0, 1]` or `≥ 0`.
fn range_text((lo, hi): (f64, f64)) -> String {
    match (lo.is_finite(), hi.is_finite()) {
        (true, true) => format!("[{}, {}]", fmt(lo), fmt(hi)),
        (true, false) => format!("≥ {}", fmt(lo)),
        (false, true) => format!("≤ {}", fmt(hi)),
        (false, false) => "unbounded".into(),
    }
}

fn num(row: &Row, col: &str) -> Option<f64> {
    row.get(col).and_then(|s| s.parse::<f64>().ok())
}

/// `{"name":"lstm","hidden_size":32}` (a swept mapping) → `lstm(hidden_size=32)`; other cells as is.
fn pretty(cell: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(cell) {
        Ok(serde_json::Value::Object(m)) => {
            let name = m.get("name").and_then(|v| v.as_str()).map(String::from);
            let rest: Vec<String> = m
                .iter()
                .filter(|(k, _)| k.as_str() != "name")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            match name {
                Some(n) if rest.is_empty() => n,
                Some(n) => format!("{n}({})", rest.join(", ")),
                None => rest.join(", "),
            }
        }
        _ => cell.to_string(),
    }
}

/// Most common value of a column among rows (ties: smallest).
fn mode<'a>(rows: impl Iterator<Item = &'a Row>, col: &str) -> Option<String> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows {
        if let Some(v) = r.get(col).filter(|v| !v.is_empty()) {
            *counts.entry(v.clone()).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .map(|(k, _)| k)
}

/// The runs of one group (all seeds of one configuration).
struct Group {
    /// (column, cell) pairs that define it: `by` first, then swept keys.
    key: Vec<(String, String)>,
    rows: Vec<Row>,
}

impl Group {
    fn label(&self) -> String {
        let mut parts: Vec<String> = vec![];
        for (i, (k, v)) in self.key.iter().enumerate() {
            // `arch.hidden_size` reads as `hidden_size` next to the arch name.
            let k = k.strip_prefix("arch.").unwrap_or(k);
            parts.push(if i == 0 {
                pretty(v)
            } else {
                format!("{k}={}", pretty(v))
            });
        }
        parts.join(" ")
    }
    fn values(&self, col: &str) -> Vec<f64> {
        self.rows.iter().filter_map(|r| num(r, col)).collect()
    }
}

fn groups(runs: &Runs, task: &str, by: &str) -> Result<Vec<Group>> {
    if !runs.header.iter().any(|h| h == by) {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "--by {by}: no such column in runs.csv (columns: {})",
            runs.header.join(", ")
        )));
    }
    let task_rows: Vec<&Row> = runs
        .rows
        .iter()
        .filter(|r| r.get("task").map(String::as_str) == Some(task))
        .collect();
    let cell = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
    let varies = |k: &str| {
        task_rows
            .iter()
            .map(|r| cell(r, k))
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    };
    let swept: Vec<String> = runs
        .swept_keys()
        .into_iter()
        .filter(|k| k != by && k != "seed" && varies(k))
        .collect();
    // Runs of different experiments differ in settings that need not be swept (steps, lr, ...),
    // so they are never pooled; the experiment becomes part of the key only where `by` and the
    // swept keys do not already tell the experiments apart (copy_lstm vs copy_ntm needs no column).
    let mut experiment_of: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    for r in &task_rows {
        let k = std::iter::once(by)
            .chain(swept.iter().map(String::as_str))
            .map(|k| cell(r, k))
            .collect();
        experiment_of
            .entry(k)
            .or_default()
            .insert(cell(r, "experiment"));
    }
    let experiment_needed = by != "experiment" && experiment_of.values().any(|e| e.len() > 1);
    let keys: Vec<String> = std::iter::once(by.to_string())
        .chain(experiment_needed.then(|| "experiment".to_string()))
        .chain(swept)
        .collect();
    let mut map: BTreeMap<Vec<(String, String)>, Vec<Row>> = BTreeMap::new();
    for r in task_rows {
        let key = keys
            .iter()
            .map(|k| (k.clone(), r.get(k).cloned().unwrap_or_default()))
            .collect();
        map.entry(key).or_default().push(r.clone());
    }
    Ok(map
        .into_iter()
        .map(|(key, rows)| Group { key, rows })
        .collect())
}

/// One table row's numbers.
struct GroupStats {
    summary: Summary,
    runs: usize,
    not_done: usize,
    success: Option<(usize, usize)>,
    steps_to_threshold: Option<(f64, usize)>,
    param_count: Option<f64>,
    state_size: Option<f64>,
    welch_p: Option<f64>,
    best: bool,
}

fn median(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| stats::median(xs))
}

fn group_stats(g: &Group, col: &str, prefix: &str, range: (f64, f64)) -> GroupStats {
    let mut success = (0, 0);
    for r in &g.rows {
        let (Some(metric), Some(th)) = (r.get("success_metric"), num(r, "success_threshold"))
        else {
            continue;
        };
        let Some(v) = num(r, &format!("{prefix}{metric}")).filter(|v| v.is_finite()) else {
            continue;
        };
        success.1 += 1;
        if if lower_is_better(metric) {
            v <= th
        } else {
            v >= th
        } {
            success.0 += 1;
        }
    }
    let reached = g.values("steps_to_threshold");
    GroupStats {
        summary: stats::summarize(&g.values(col), range),
        runs: g.rows.len(),
        not_done: g
            .rows
            .iter()
            .filter(|r| r.get("status").map(String::as_str) != Some("done"))
            .count(),
        success: (success.1 > 0).then_some(success),
        steps_to_threshold: median(&reached).map(|m| (m, reached.len())),
        param_count: median(&g.values("param_count")),
        state_size: median(&g.values("state_size")),
        welch_p: None,
        best: false,
    }
}

/// What one table/plot set is about.
struct Spec<'a> {
    task: &'a str,
    metric: String,
    selection: Selection,
}

impl Spec<'_> {
    fn stem(&self) -> String {
        format!("{}_{}_{}", self.task, self.metric, self.selection.as_str())
    }
    fn column(&self) -> String {
        format!("{}{}", self.selection.prefix(), self.metric)
    }
    fn direction(&self) -> &'static str {
        if lower_is_better(&self.metric) {
            "lower is better"
        } else {
            "higher is better"
        }
    }
}

/// Shell-quotes the arguments of this process into a command a reader can paste.
fn command_line() -> String {
    std::env::args()
        .enumerate()
        .map(|(i, a)| {
            let a = if i == 0 { "membench".to_string() } else { a };
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes the tables and plots of `opts`, each file headed by `command`; returns their paths.
fn write_reports(opts: &CompareArgs, command: &str) -> Result<Vec<PathBuf>> {
    crate::record::check_results_dir(&opts.results, "--results")?;
    if let Some(out) = &opts.out {
        crate::record::check_results_dir(out, "--out")?;
    }
    let mut runs = read_runs(&opts.results)?;
    resolve(&mut runs, &opts.results);
    apply_filters(&mut runs, &opts.filters)?;
    let tasks = tasks_to_report(opts, &runs)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.results.join("reports"));
    let mut written = vec![];
    for task in &tasks {
        let spec = spec_of(task, wanted_metric(opts), opts, &runs)?;
        let groups = groups(&runs, task, &opts.by)?;
        written.extend(write_table(&spec, &groups, &opts.by, &out, command)?);
        let axes = match &opts.x {
            Some(x) => vec![x.clone()],
            None => default_axes(&opts.results, &runs, &groups),
        };
        for x in &axes {
            written.extend(write_x_plot(
                &spec,
                &groups,
                x,
                &opts.results,
                &out,
                command,
            )?);
        }
        written.extend(write_curve_plot(
            &spec,
            &groups,
            &opts.results,
            &out,
            command,
        )?);
    }
    Ok(written)
}

/// `--metric` without its checkpoint prefix (it may name one, `best_seq_acc`, or not).
fn wanted_metric(opts: &CompareArgs) -> Option<&str> {
    opts.metric
        .as_deref()
        .map(|m| m.trim_start_matches("final_").trim_start_matches("best_"))
}

/// The tasks to report on: `--task` or every task, less those without a value of an explicit
/// `--metric`; every mistake of the options is bad input, found before anything is written.
fn tasks_to_report(opts: &CompareArgs, runs: &Runs) -> Result<Vec<String>> {
    if let Some(XAxis::Key(k)) = &opts.x {
        if !runs
            .rows
            .iter()
            .any(|r| lookup(r, k).is_some_and(|v| v.parse::<f64>().is_ok()))
        {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "--x {k}: no run has a numeric `{k}` in runs.csv or its resolved config (swept keys here: {})",
                runs.swept_keys().join(", ")
            )));
        }
    }
    let tasks = match &opts.task {
        Some(t) if runs.tasks().contains(t) => vec![t.clone()],
        Some(t) => {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "--task {t}: no runs of that task in runs.csv (tasks: {})",
                runs.tasks().join(", ")
            )))
        }
        None => runs.tasks(),
    };
    if tasks.is_empty() && !opts.filters.is_empty() {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{}: no run matches every --where",
            opts.results.join("runs.csv").display()
        )));
    }
    if tasks.is_empty() {
        bail!("{}: no runs", opts.results.join("runs.csv").display());
    }
    let wanted = wanted_metric(opts);
    // An explicit --metric: only the tasks whose runs have it (mse is the adding task's, say),
    // and none is bad input, found before anything is written.
    Ok(match wanted {
        None => tasks,
        Some(m) => {
            let has = |t: &String| {
                runs.rows.iter().any(|r| {
                    r.get("task") == Some(t)
                        && ["final_", "best_"]
                            .iter()
                            .any(|p| r.get(&format!("{p}{m}")).is_some_and(|v| !v.is_empty()))
                })
            };
            let (with, without): (Vec<String>, Vec<String>) = tasks.into_iter().partition(has);
            if with.is_empty() {
                return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                    "--metric {m}: no run of {} has a value for it in runs.csv",
                    without.join(", ")
                )));
            }
            if !without.is_empty() {
                eprintln!(
                    "compare: --metric {m}: skipping {} (no values)",
                    without.join(", ")
                );
            }
            with
        }
    })
}

/// What the files of one task are about: its metric (`--metric`, else the runs' success metric)
/// and checkpoint (`--selection`, else the runs' `train.selection`).
fn spec_of<'a>(
    task: &'a str,
    wanted: Option<&str>,
    opts: &CompareArgs,
    runs: &Runs,
) -> Result<Spec<'a>> {
    let task_rows = || {
        runs.rows
            .iter()
            .filter(|r| r.get("task").map(String::as_str) == Some(task))
    };
    let metric = match wanted {
        Some(m) => m.to_string(),
        None => mode(task_rows(), "success_metric")
            .with_context(|| format!("task {task}: no success_metric; pass --metric"))?,
    };
    let selection = match opts.selection {
        Some(s) => s,
        None => mode(task_rows(), "selection")
            .and_then(|s| Selection::parse(&s))
            .unwrap_or(Selection::BestValid),
    };
    let spec = Spec {
        task,
        metric,
        selection,
    };
    if !runs.header.contains(&spec.column()) {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "--metric {}: runs.csv has no column {}",
            spec.metric,
            spec.column()
        )));
    }
    Ok(spec)
}

/// eval_len and depth when eval.csv has them; state_size and param_count when they vary; every
/// swept task setting with two or more numeric values (e.g. the number of key-value pairs).
fn default_axes(results: &Path, runs: &Runs, groups: &[Group]) -> Vec<XAxis> {
    let mut axes = vec![];
    // A plot against eval length or depth needs at least two of them (MQAR evaluates at its one length).
    let mut seen: [BTreeSet<String>; 2] = Default::default();
    for g in groups {
        for r in g.rows.iter().take(1) {
            for e in read_eval(results, r).unwrap_or_default() {
                for (set, col) in seen.iter_mut().zip(["eval_len", "depth"]) {
                    if let Some(v) = e.get(col).filter(|v| v.parse::<f64>().is_ok()) {
                        set.insert(v.clone());
                    }
                }
            }
        }
    }
    if seen[0].len() > 1 {
        axes.push(XAxis::EvalLen);
    }
    if seen[1].len() > 1 {
        axes.push(XAxis::Depth);
    }
    // Keys zipped together (min_len and max_len advanced in step) would draw the same plot twice:
    // a key whose value equals an earlier key's in every run is skipped.
    let task_keys = runs
        .swept_keys()
        .into_iter()
        .filter(|k| k.starts_with("task."));
    let mut swept_task_keys: Vec<String> = vec![];
    for k in task_keys {
        let twin = |other: &String| {
            groups
                .iter()
                .flat_map(|g| &g.rows)
                .all(|r| r.get(&k) == r.get(other))
        };
        if !swept_task_keys.iter().any(twin) {
            swept_task_keys.push(k);
        }
    }
    for x in [XAxis::StateSize, XAxis::ParamCount]
        .into_iter()
        .chain(swept_task_keys.into_iter().map(XAxis::Key))
    {
        let distinct: BTreeSet<String> = groups
            .iter()
            .flat_map(|g| {
                g.rows.iter().filter_map(|r| {
                    r.get(&x.run_column())
                        .filter(|v| v.parse::<f64>().is_ok())
                        .cloned()
                })
            })
            .collect();
        if distinct.len() > 1 {
            axes.push(x);
        }
    }
    axes
}

fn header_lines(spec: &Spec, command: &str, what: &str) -> Vec<String> {
    vec![
        format!("generated by: {command}"),
        format!(
            "{what}; task {}; metric {} ({}); {}",
            spec.task,
            spec.column(),
            spec.direction(),
            spec.selection.describe()
        ),
    ]
}

/// The summary table of one task and metric, `<stem>.md` and `<stem>.csv`: one row per group,
/// from one column list ([`summary_columns`]).
fn write_table(
    spec: &Spec,
    groups: &[Group],
    by: &str,
    out: &Path,
    command: &str,
) -> Result<Vec<PathBuf>> {
    let range = metric_bounds(&spec.metric);
    let rows = summary_rows(spec, groups, range);
    let keys: Vec<&str> = groups
        .first()
        .map(|g| g.key.iter().map(|(k, _)| k.as_str()).collect())
        .unwrap_or_else(|| vec![by]);
    // Said in the header of both files: the t interval is clipped to what the metric can take.
    let within = range_text(range);
    let mut header = header_lines(spec, command, "table");
    header.push(format!(
        "mean_t95_lo, mean_t95_hi: the 95 % Student t CI of the mean clipped to the metric's range ({within})"
    ));
    let columns = summary_columns(&keys, spec, &within);
    let mut md = String::new();
    for l in &header {
        writeln!(md, "<!-- {l} -->")?;
    }
    md.push_str(&table_intro(spec, groups, &within));
    md.push_str(&table::markdown(&columns, &rows));
    let csv_bytes = table::csv(&columns, &rows, &header)?;
    let (md_path, csv_path) = (
        out.join(format!("{}.md", spec.stem())),
        out.join(format!("{}.csv", spec.stem())),
    );
    record::write_atomic(&md_path, md.as_bytes())?;
    record::write_atomic(&csv_path, &csv_bytes)?;
    Ok(vec![md_path, csv_path])
}

/// One row of the summary table: a group and its numbers.
struct SummaryRow<'a> {
    group: &'a Group,
    stats: GroupStats,
}

/// Each group's numbers, the best group (by mean: the quantity Welch's test compares) marked and
/// every other group tested against it.
fn summary_rows<'a>(spec: &Spec, groups: &'a [Group], range: (f64, f64)) -> Vec<SummaryRow<'a>> {
    let col = spec.column();
    let mut st: Vec<GroupStats> = groups
        .iter()
        .map(|g| group_stats(g, &col, spec.selection.prefix(), range))
        .collect();
    let sign = if lower_is_better(&spec.metric) {
        -1.0
    } else {
        1.0
    };
    let best = (0..st.len())
        .filter(|&i| st[i].summary.n > 0)
        .max_by(|&a, &b| (sign * st[a].summary.mean).total_cmp(&(sign * st[b].summary.mean)));
    if let Some(b) = best {
        st[b].best = true;
        let best_values = groups[b].values(&col);
        for (i, s) in st.iter_mut().enumerate() {
            if i != b {
                s.welch_p = stats::welch(&groups[i].values(&col), &best_values).map(|w| w.p);
            }
        }
    }
    groups
        .iter()
        .zip(st)
        .map(|(group, stats)| SummaryRow { group, stats })
        .collect()
}

/// The heading, protocol and success criterion above the Markdown table.
fn table_intro(spec: &Spec, groups: &[Group], within: &str) -> String {
    let mut md = format!(
        "### {} — {} ({})\n\n",
        spec.task,
        spec.column(),
        spec.direction()
    );
    md.push_str(&format!(
        "Selection protocol: **{}** ({}). Over seeds: median with the 95 % percentile-bootstrap CI of the median \
         ({} resamples, fixed seed), mean with the 95 % Student t CI of the mean clipped to the metric's range \
         ({within}; the symmetric t interval leaves it near a bound); success = share of seeds whose \
         `success_metric` crosses `success_threshold`; p = Welch's t-test of the mean against the best group.\n\n",
        spec.selection.as_str(),
        spec.selection.describe(),
        stats::BOOTSTRAP_RESAMPLES
    ));
    let rows = || groups.iter().flat_map(|g| g.rows.iter());
    if let (Some(m), Some(th)) = (
        mode(rows(), "success_metric"),
        mode(rows(), "success_threshold"),
    ) {
        let op = if lower_is_better(&m) { "≤" } else { "≥" };
        md.push_str(&format!(
            "Success criterion: `{}{m}` {op} {th}.\n\n",
            spec.selection.prefix()
        ));
    }
    md
}

/// The summary table's columns: the group's key columns, then its numbers. Markdown shows an
/// interval as `median [lo, hi]` in one cell; the CSV gives each number its own column.
fn summary_columns<'a>(
    keys: &[&str],
    spec: &Spec,
    within: &str,
) -> Vec<Column<'a, SummaryRow<'a>>> {
    type R<'r> = SummaryRow<'r>;
    let mut columns: Vec<Column<R>> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Column::new(
                *k,
                move |r: &R| pretty(&r.group.key[i].1),
                vec![(*k, csv_cell(move |r: &R| r.group.key[i].1.clone()))],
            )
        })
        .collect();
    let (metric, selection) = (spec.column(), spec.selection.as_str());
    let interval =
        |(m, (lo, hi)): (f64, (f64, f64))| format!("{} [{}, {}]", fmt(m), fmt(lo), fmt(hi));
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "–".into());
    columns.extend([
        Column::csv_only("metric", move |_: &R| metric.clone()),
        Column::csv_only("selection", move |_: &R| selection.into()),
        Column::new(
            "n",
            |r: &R| match r.stats.not_done {
                0 => r.stats.summary.n.to_string(),
                k => format!("{} ({k} of {} not done)", r.stats.summary.n, r.stats.runs),
            },
            vec![
                ("n", csv_cell(|r: &R| r.stats.summary.n.to_string())),
                ("runs", csv_cell(|r: &R| r.stats.runs.to_string())),
            ],
        ),
        Column::new(
            "median [boot95]",
            move |r: &R| interval((r.stats.summary.median, r.stats.summary.boot_ci)),
            vec![
                (
                    "median",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.median))),
                ),
                (
                    "median_boot95_lo",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.boot_ci.0))),
                ),
                (
                    "median_boot95_hi",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.boot_ci.1))),
                ),
            ],
        ),
        Column::new(
            format!("mean [t95, clipped to {within}]"),
            move |r: &R| interval((r.stats.summary.mean, r.stats.summary.t_ci)),
            vec![
                (
                    "mean",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.mean))),
                ),
                ("sd", csv_cell(|r: &R| csv_num(Some(r.stats.summary.sd)))),
                (
                    "mean_t95_lo",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.t_ci.0))),
                ),
                (
                    "mean_t95_hi",
                    csv_cell(|r: &R| csv_num(Some(r.stats.summary.t_ci.1))),
                ),
            ],
        ),
        Column::new(
            "success",
            move |r: &R| or_dash(r.stats.success.map(|(k, n)| format!("{k}/{n}"))),
            vec![
                (
                    "successes",
                    csv_cell(|r: &R| r.stats.success.map(|x| x.0.to_string()).unwrap_or_default()),
                ),
                (
                    "success_n",
                    csv_cell(|r: &R| r.stats.success.map(|x| x.1.to_string()).unwrap_or_default()),
                ),
            ],
        ),
        Column::new(
            "steps to thr. (reached)",
            |r: &R| match r.stats.steps_to_threshold {
                Some((m, k)) => format!("{} ({k}/{})", fmt(m), r.stats.runs),
                None => format!("– (0/{})", r.stats.runs),
            },
            vec![
                (
                    "steps_to_threshold_median",
                    csv_cell(|r: &R| csv_num(r.stats.steps_to_threshold.map(|x| x.0))),
                ),
                (
                    "reached",
                    csv_cell(|r: &R| r.stats.steps_to_threshold.map_or(0, |x| x.1).to_string()),
                ),
            ],
        ),
        Column::new(
            "params",
            move |r: &R| or_dash(r.stats.param_count.map(fmt)),
            vec![(
                "param_count",
                csv_cell(|r: &R| csv_num(r.stats.param_count)),
            )],
        ),
        Column::new(
            "state size",
            move |r: &R| or_dash(r.stats.state_size.map(fmt)),
            vec![("state_size", csv_cell(|r: &R| csv_num(r.stats.state_size)))],
        ),
        Column::new(
            "Welch p vs best",
            move |r: &R| match r.stats.best {
                true => "best".into(),
                false => or_dash(r.stats.welch_p.map(fmt_p)),
            },
            vec![
                (
                    "welch_p_vs_best",
                    csv_cell(|r: &R| csv_num(r.stats.welch_p)),
                ),
                ("best", csv_cell(|r: &R| r.stats.best.to_string())),
            ],
        ),
        // Every row names its runs, so any one can be checked with `membench reproduce <id>`.
        Column::new(
            "run ids",
            |r: &R| {
                run_ids(r.group)
                    .map(|id| format!("`{id}`"))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            vec![(
                "run_ids",
                csv_cell(|r: &R| run_ids(r.group).cloned().collect::<Vec<_>>().join(" ")),
            )],
        ),
    ]);
    columns
}

fn run_ids(g: &Group) -> impl Iterator<Item = &String> {
    g.rows.iter().filter_map(|r| r.get("run_id"))
}

fn read_csv_rows(path: &Path) -> Result<Vec<Row>> {
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

fn read_eval(results: &Path, run: &Row) -> Result<Vec<Row>> {
    let id = run.get("run_id").context("row without run_id")?;
    read_csv_rows(&record::run_dir(results, id).join("eval.csv"))
}

/// Mean and 95 % t band (clipped to the metric's range) of each x's values; one value gives no band.
fn band(points: BTreeMap<OrdF64, Vec<f64>>, bounds: (f64, f64)) -> Vec<(f64, f64, f64, f64)> {
    points
        .into_iter()
        .filter_map(|(x, ys)| {
            let s = stats::summarize(&ys, bounds);
            if s.n == 0 {
                return None;
            }
            let (lo, hi) = if s.n > 1 { s.t_ci } else { (s.mean, s.mean) };
            Some((x.0, s.mean, lo, hi))
        })
        .collect()
}

/// f64 as a map key (x values are finite numbers parsed from CSV).
#[derive(Debug, Clone, Copy)]
struct OrdF64(f64);
impl PartialEq for OrdF64 {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrdF64 {}
impl PartialOrd for OrdF64 {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdF64 {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

fn write_x_plot(
    spec: &Spec,
    groups: &[Group],
    x: &XAxis,
    results: &Path,
    out: &Path,
    command: &str,
) -> Result<Vec<PathBuf>> {
    let bounds = metric_bounds(&spec.metric);
    let mut series = vec![];
    match x {
        XAxis::EvalLen | XAxis::Depth => {
            for g in groups {
                let mut pts: BTreeMap<OrdF64, Vec<f64>> = BTreeMap::new();
                for r in &g.rows {
                    // A failed run has no eval.csv; it is counted as "not done" in the table.
                    for e in read_eval(results, r).unwrap_or_default() {
                        if e.get("checkpoint").map(String::as_str) != Some(spec.selection.as_str())
                        {
                            continue;
                        }
                        if let (Some(xv), Some(y)) = (num(&e, x.as_str()), num(&e, &spec.metric)) {
                            pts.entry(OrdF64(xv)).or_default().push(y);
                        }
                    }
                }
                series.push(Series {
                    label: g.label(),
                    points: band(pts, bounds),
                });
            }
        }
        XAxis::StateSize | XAxis::ParamCount | XAxis::Steps | XAxis::Key(_) => {
            series = joined_series(groups, x, &spec.column(), bounds);
        }
    }
    if series.iter().all(|s| s.points.is_empty()) {
        bail!(
            "task {}: no {} values to plot against {}",
            spec.task,
            spec.metric,
            x.as_str()
        );
    }
    let mut source = match x {
        XAxis::EvalLen | XAxis::Depth => format!(
            "eval.csv rows with checkpoint = {}",
            spec.selection.as_str()
        ),
        _ => format!("runs.csv column {}", spec.column()),
    };
    // Against a config key, a configuration run at one value only (a width sweep at 8 pairs on a
    // plot against pairs) says nothing about the dependence: it is left out, and the caption says so.
    if matches!(x, XAxis::Key(_)) && series.iter().any(|s| s.points.len() > 1) {
        let before = series.len();
        series.retain(|s| s.points.len() > 1);
        if series.len() < before {
            source += &format!(
                "; {} one-point configurations left out",
                before - series.len()
            );
        }
    }
    let fig = Figure {
        title: format!(
            "{}: {} vs {} (selection: {})",
            spec.task,
            spec.metric,
            x.as_str(),
            spec.selection.as_str()
        ),
        caption: format!(
            "test split, {source}; line = mean over seeds, band = 95 % t CI of the mean"
        ),
        x_label: x.label(),
        y_label: format!("{} ({})", spec.metric, spec.direction()),
        log_x: x.log(),
        y_limits: bounds,
        series,
    };
    // `task.num_kv_pairs` → `_vs_task_num_kv_pairs` (a dot would read as the file extension).
    let stem = out.join(format!(
        "{}_vs_{}",
        spec.stem(),
        x.as_str().replace('.', "_")
    ));
    let mut written = plot::write(&fig, &stem, command)?;
    written.push(write_x_table(
        spec,
        x,
        &fig,
        &stem.with_extension("md"),
        command,
    )?);
    Ok(written)
}

/// The numbers behind an x plot, as a Markdown table beside it: one row per line of the plot, one
/// column per x value, each cell the plotted mean over seeds with its 95 % t CI.
fn write_x_table(
    spec: &Spec,
    x: &XAxis,
    fig: &Figure,
    path: &Path,
    command: &str,
) -> Result<PathBuf> {
    let mut xs: Vec<OrdF64> = fig
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| OrdF64(p.0)))
        .collect();
    xs.sort();
    xs.dedup();
    let mut md = String::new();
    for l in header_lines(spec, command, &format!("table vs {}", x.as_str())) {
        writeln!(md, "<!-- {l} -->")?;
    }
    writeln!(
        md,
        "### {} — {} vs {} ({})\n",
        spec.task,
        spec.metric,
        x.as_str(),
        spec.direction()
    )?;
    writeln!(
        md,
        "{}. Cells: mean over seeds [95 % t CI, clipped to the metric's range {}]; – where a line has no point.\n",
        fig.caption.split(';').next().unwrap_or(""),
        range_text(fig.y_limits)
    )?;
    // One row per line of the plot; a column per x value.
    let mut columns = vec![Column::md_only("group", |s: &Series| s.label.clone())];
    columns.extend(xs.iter().map(|&OrdF64(xv)| {
        Column::md_only(fmt(xv), move |s: &Series| {
            match s.points.iter().find(|p| p.0 == xv) {
                Some(&(_, mean, lo, hi)) if lo == hi => fmt(mean),
                Some(&(_, mean, lo, hi)) => format!("{} [{}, {}]", fmt(mean), fmt(lo), fmt(hi)),
                None => "–".into(),
            }
        })
    }));
    md.push_str(&table::markdown(&columns, &fig.series));
    record::write_atomic(path, md.as_bytes())?;
    Ok(path.to_path_buf())
}

/// Metric against a per-run x (state size, parameter count, steps or a config key): one point per
/// group at its x, with the t band over its seeds.
fn joined_series(groups: &[Group], x: &XAxis, column: &str, bounds: (f64, f64)) -> Vec<Series> {
    // One point per group at its x. Points join into one line when they share the `by`
    // value and every resolved task and train setting (against a config key, also every
    // arch setting but that key), so that along a line only x varies: MQAR runs with 2, 4
    // and 8 pairs at one width are three points on three lines, never one pooled point.
    let xcol = x.run_column();
    let fixed = |g: &Group| -> BTreeMap<String, String> {
        let Some(r) = g
            .rows
            .iter()
            .find(|r| r.keys().any(|k| k.starts_with("cfg:")))
        else {
            return BTreeMap::new();
        };
        let keep = |k: &str| {
            k != xcol
                && (k.starts_with("cfg:task.")
                    || k.starts_with("cfg:train.")
                    || (matches!(x, XAxis::Key(_)) && k.starts_with("cfg:arch.")))
        };
        r.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    // (line label, its fixed columns) → x → the y values at x.
    type Lines = BTreeMap<(String, BTreeMap<String, String>), BTreeMap<OrdF64, Vec<f64>>>;
    let mut lines: Lines = BTreeMap::new();
    for g in groups {
        let Some(xv) = median(&g.values(&xcol)) else {
            continue;
        };
        lines
            .entry((pretty(&g.key[0].1), fixed(g)))
            .or_default()
            .entry(OrdF64(xv))
            .or_default()
            .extend(g.values(column));
    }
    // Labels name, beside the `by` value, the settings that tell lines of one `by` value apart.
    let mut varying: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (by_value, settings) in lines.keys() {
        for k in settings.keys() {
            let others = lines
                .keys()
                .filter(|(b, _)| b == by_value)
                .map(|(_, s)| s.get(k).map(String::as_str));
            if others.collect::<BTreeSet<_>>().len() > 1 {
                varying.entry(by_value).or_default().insert(k);
            }
        }
    }
    lines
        .iter()
        .map(|((by_value, settings), pts)| {
            let mut label = by_value.clone();
            for k in varying.get(by_value.as_str()).into_iter().flatten() {
                let short = k.rsplit('.').next().unwrap_or(k);
                label += &format!(
                    " {short}={}",
                    settings
                        .get(*k)
                        .map(|v| pretty(v))
                        .unwrap_or_else(|| "–".into())
                );
            }
            Series {
                label,
                points: band(pts.clone(), bounds),
            }
        })
        .collect()
}

fn write_curve_plot(
    spec: &Spec,
    groups: &[Group],
    results: &Path,
    out: &Path,
    command: &str,
) -> Result<Vec<PathBuf>> {
    let col = format!("valid_{}", spec.metric);
    let mut series = vec![];
    for g in groups {
        let mut pts: BTreeMap<OrdF64, Vec<f64>> = BTreeMap::new();
        for r in &g.rows {
            let Some(id) = r.get("run_id") else { continue };
            for p in
                read_csv_rows(&record::run_dir(results, id).join("curve.csv")).unwrap_or_default()
            {
                if let (Some(step), Some(y)) = (num(&p, "step"), num(&p, &col)) {
                    pts.entry(OrdF64(step)).or_default().push(y);
                }
            }
        }
        series.push(Series {
            label: g.label(),
            points: band(pts, metric_bounds(&spec.metric)),
        });
    }
    if series.iter().all(|s| s.points.is_empty()) {
        return Ok(vec![]);
    }
    let fig = Figure {
        title: format!("{}: validation {} during training", spec.task, spec.metric),
        caption: format!(
            "valid split (curve.csv); line = mean over seeds, band = 95 % t CI; selection {} picks from this curve",
            spec.selection.as_str()
        ),
        x_label: "training step".into(),
        y_label: format!("valid {} ({})", spec.metric, spec.direction()),
        log_x: false,
        y_limits: metric_bounds(&spec.metric),
        series,
    };
    plot::write(&fig, &out.join(format!("{}_curve", spec.stem())), command)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::welch;
    use crate::test_support::fresh_dir;

    #[test]
    fn runs_csv_is_read_strictly_except_for_a_torn_tail() {
        let dir = fresh_dir("compare-read-runs");
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_runs(&dir).err().expect("no runs.csv").to_string();
        assert!(err.contains("no runs.csv here"), "{err}");
        let head =
            "run_id,experiment,task,arch,seed,status,final_loss,membench_version,torch_version\n";
        let a = "a,x,copy,lstm,1,done,0.5,0.4.0,2.11.0\n";
        std::fs::write(dir.join("runs.csv"), format!("{head}{a}b,x,copy,lstm,2,do")).unwrap();
        let runs = read_runs(&dir).unwrap();
        assert_eq!(runs.rows.len(), 1, "the torn tail is ignored");
        assert_eq!(runs.header.len(), 9);
        // A short row in the middle is damage, not a crash mid-append: say where, drop nothing silently.
        std::fs::write(dir.join("runs.csv"), format!("{head}a,x\n{a}")).unwrap();
        let err = format!("{:#}", read_runs(&dir).err().expect("short row"));
        assert!(err.contains("runs.csv:2: 2 fields, expected 9"), "{err}");
        // A metric that is not a number would drop the run from the statistics: refused.
        let bad = a.replace("0.5", "0,5").replacen("0,5", "\"0,5\"", 1);
        std::fs::write(dir.join("runs.csv"), format!("{head}{bad}")).unwrap();
        let err = read_runs(&dir).err().expect("bad metric");
        assert!(err
            .downcast_ref::<crate::input::strict::BadInput>()
            .is_some());
        assert!(
            format!("{err:#}").contains("runs.csv:2: final_loss `0,5`: expected a number"),
            "{err:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pretty_flattens_swept_mappings() {
        assert_eq!(
            pretty(r#"{"name":"lstm","hidden_size":32}"#),
            "lstm(hidden_size=32)"
        );
        assert_eq!(pretty("gru"), "gru");
        assert_eq!(pretty("64"), "64");
    }

    /// runs.csv with the columns compare reads: lstm reaches seq_acc 1.0, 0.9, 0.95; gru 0.5, 0.6, 0.4.
    fn synthetic_results(dir: &Path) {
        let header = "run_id,experiment,task,arch,seed,status,steps,param_count,state_size,final_seq_acc,best_seq_acc,\
                      steps_to_threshold,success_metric,success_threshold,selection,membench_version,torch_version\n";
        let mut text = header.to_string();
        for (arch, accs, reached) in [
            ("lstm", [1.0, 0.9, 0.95], ["100", "", "300"]),
            ("gru", [0.5, 0.6, 0.4], ["", "", ""]),
        ] {
            for (seed, (acc, r)) in accs.iter().zip(reached).enumerate() {
                text += &format!("{arch}{seed},e,copy,{arch},{seed},done,400,1000,64,{acc},{acc},{r},seq_acc,0.95,last,0.4.0,2.11.0\n");
            }
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("runs.csv"), text).unwrap();
    }

    #[test]
    fn table_counts_successes_and_tests_against_the_best_group() {
        let dir = fresh_dir("compare-table");
        synthetic_results(&dir);
        let opts = CompareArgs {
            results: dir.clone(),
            task: None,
            by: "arch".into(),
            x: Some(XAxis::StateSize),
            filters: vec![],
            metric: None,
            selection: None,
            out: None,
            all: false,
        };
        // No eval.csv / curve.csv exist: the table and the state-size plot are still written.
        let written = write_reports(&opts, "membench compare").unwrap();
        assert!(
            written
                .iter()
                .any(|p| p.ends_with("copy_seq_acc_last_vs_state_size.png")),
            "{written:?}"
        );
        let md = std::fs::read_to_string(dir.join("reports/copy_seq_acc_last.md")).unwrap();
        let row = |arch: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {arch} |")))
                .unwrap()
                .to_string()
        };
        // lstm: seeds 1.0 and 0.95 cross 0.95 (≥), 0.9 does not; median steps of the two that reached = 200.
        let lstm = row("lstm");
        assert!(
            lstm.contains("| 2/3 |")
                && lstm.contains("| 200 (2/3) |")
                && lstm.ends_with("| best | `lstm0` `lstm1` `lstm2` |"),
            "{lstm}"
        );
        // Issue #27: lstm's t CI 0.95 ± t(0.975, 2)·0.05/√3 = 0.95 ± 0.1242 would end at 1.0742, above
        // any accuracy: it is clipped to 1, in the Markdown and the CSV, and the header says so.
        assert!(lstm.contains("| 0.95 [0.8258, 1] |"), "{lstm}");
        assert!(
            md.contains("| mean [t95, clipped to [0, 1]] |")
                && md.contains("Student t CI of the mean clipped to the metric's range ([0, 1]"),
            "{md}"
        );
        let csv = std::fs::read_to_string(dir.join("reports/copy_seq_acc_last.csv")).unwrap();
        assert!(
            csv.contains("# mean_t95_lo, mean_t95_hi: the 95 % Student t CI of the mean clipped to the metric's range ([0, 1])"),
            "{csv}"
        );
        let lstm_csv = csv.lines().find(|l| l.starts_with("lstm,")).unwrap();
        let hi_col = csv
            .lines()
            .find(|l| l.starts_with("arch,"))
            .unwrap()
            .split(',')
            .position(|c| c == "mean_t95_hi")
            .unwrap();
        assert_eq!(lstm_csv.split(',').nth(hi_col), Some("1.0"), "{lstm_csv}");
        // gru against lstm: Welch p from scipy 1.17.1 `ttest_ind([0.5, 0.6, 0.4], [1.0, 0.9, 0.95],
        // equal_var=False)`: p = 0.006457589202672629 (t = -6.9714, ν = 2.94), printed to 4 decimals.
        let gru = row("gru");
        assert!(gru.contains("| 0/3 |") && gru.contains("– (0/3)"), "{gru}");
        assert!(
            (welch(&[0.5, 0.6, 0.4], &[1.0, 0.9, 0.95]).unwrap().p - 0.006457589202672629).abs()
                < 1e-9
        );
        assert!(gru.ends_with("| 0.0065 | `gru0` `gru1` `gru2` |"), "{gru}");
        // The numbers behind the state-size plot: one column (every run has state size 64), the
        // mean and its t CI: gru 0.5 ± t(0.975, 2)·0.1/√3 = 0.5 ± 0.2484.
        let x_md = std::fs::read_to_string(dir.join("reports/copy_seq_acc_last_vs_state_size.md"))
            .unwrap();
        assert!(x_md.contains("| group | 64 |"), "{x_md}");
        assert!(x_md.contains("| gru | 0.5 [0.2516, 0.7484] |"), "{x_md}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn swept_keys_sit_between_arch_and_seed() {
        let header: Vec<String> = [
            "run_id",
            "experiment",
            "task",
            "arch",
            "arch.hidden_size",
            "train.lr",
            "seed",
            "status",
        ]
        .map(String::from)
        .to_vec();
        let runs = Runs {
            header,
            rows: vec![],
        };
        assert_eq!(
            runs.swept_keys(),
            vec!["arch.hidden_size".to_string(), "train.lr".to_string()]
        );
    }

    #[test]
    fn experiments_are_never_pooled_and_constant_swept_keys_add_nothing() {
        let header: Vec<String> = ["run_id", "experiment", "task", "arch", "task.bits", "seed"]
            .map(String::from)
            .to_vec();
        let row = |id: &str, exp: &str, task: &str, bits: &str| -> Row {
            header
                .iter()
                .cloned()
                .zip([id, exp, task, "lstm", bits, "0"].map(String::from))
                .collect()
        };
        // Two copy experiments with the same arch (e.g. other step counts); `task.bits` is swept
        // only by a third experiment on another task.
        let runs = Runs {
            header: header.clone(),
            rows: vec![
                row("a", "short", "copy", ""),
                row("b", "long", "copy", ""),
                row("c", "other", "adding", "4"),
            ],
        };
        let g = groups(&runs, "copy", "arch").unwrap();
        assert_eq!(g.len(), 2, "one group per experiment");
        assert!(
            g.iter().all(|g| g
                .key
                .iter()
                .map(|(k, _)| k.as_str())
                .eq(["arch", "experiment"])),
            "{:?}",
            g[0].key
        );
        assert_eq!(
            groups(&runs, "adding", "arch").unwrap()[0].key.len(),
            1,
            "nothing varies within adding"
        );
    }

    /// MQAR-like results with config files: the `pairs` experiment sweeps task.num_kv_pairs at
    /// d_model 64 (set directly, so its arch.d_model cell is empty); the `width` experiment sweeps
    /// arch.d_model at 8 pairs (set directly, so its task.num_kv_pairs cell is empty).
    fn mqar_like(dir: &Path) -> Runs {
        let mut csv = "run_id,experiment,task,arch,task.num_kv_pairs,arch.d_model,seed,status,param_count,state_size,best_token_acc,membench_version,torch_version\n".to_string();
        for (id, exp, pairs_cell, d_cell, pairs, d, state, acc) in [
            ("a0", "pairs", "2", "", 2, 64, 100, 0.9),
            ("a1", "pairs", "2", "", 2, 64, 100, 0.8),
            ("b0", "pairs", "8", "", 8, 64, 100, 0.2),
            ("b1", "pairs", "8", "", 8, 64, 100, 0.3),
            ("c0", "width", "", "128", 8, 128, 400, 0.5),
            ("c1", "width", "", "128", 8, 128, 400, 0.6),
        ] {
            let seed = &id[1..];
            csv += &format!("{id},{exp},mqar,transformer,{pairs_cell},{d_cell},{seed},done,1000,{state},{acc},0.4.0,2.11.0\n");
            let run = record::run_dir(dir, id);
            std::fs::create_dir_all(&run).unwrap();
            let cfg = format!("task:\n  name: mqar\n  num_kv_pairs: {pairs}\narch:\n  name: transformer\n  d_model: {d}\ntrain:\n  steps: 100\nseed: {seed}\n");
            std::fs::write(run.join("config.yaml"), cfg).unwrap();
        }
        std::fs::write(dir.join("runs.csv"), csv).unwrap();
        let mut runs = read_runs(dir).unwrap();
        resolve(&mut runs, dir);
        runs
    }

    #[test]
    fn settings_an_experiment_set_directly_are_read_from_the_resolved_config() {
        let dir = fresh_dir("compare-resolve");
        let runs = mqar_like(&dir);
        let row = |id: &str| runs.rows.iter().find(|r| r["run_id"] == id).unwrap();
        assert_eq!(row("c0")["task.num_kv_pairs"], "8");
        assert_eq!(row("a0")["arch.d_model"], "64");
        assert_eq!(row("a0")["task.num_kv_pairs"], "2", "swept cells are kept");
        // Three configurations, one experiment each: no experiment column is needed to tell them apart.
        let g = groups(&runs, "mqar", "arch").unwrap();
        assert_eq!(g.len(), 3);
        assert!(
            g.iter()
                .all(|g| g.key.iter().all(|(k, _)| k != "experiment")),
            "{:?}",
            g[0].key
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn size_plots_join_only_runs_that_differ_in_size_and_key_plots_only_in_that_key() {
        let dir = fresh_dir("compare-lines");
        let runs = mqar_like(&dir);
        let g = groups(&runs, "mqar", "arch").unwrap();
        let by_label = |series: Vec<Series>| -> BTreeMap<String, Vec<(f64, f64)>> {
            series
                .into_iter()
                .map(|s| {
                    (
                        s.label,
                        s.points
                            .iter()
                            .map(|p| (p.0, (p.1 * 1e6).round() / 1e6))
                            .collect(),
                    )
                })
                .collect()
        };
        // Against state size: the 2-pair run is never pooled with the 8-pair runs at the same size.
        let lines = by_label(joined_series(
            &g,
            &XAxis::StateSize,
            "best_token_acc",
            (0.0, 1.0),
        ));
        assert_eq!(lines["transformer num_kv_pairs=2"], vec![(100.0, 0.85)]);
        assert_eq!(
            lines["transformer num_kv_pairs=8"],
            vec![(100.0, 0.25), (400.0, 0.55)]
        );
        assert_eq!(lines.len(), 2);
        // Against the number of pairs: one line per width.
        let lines = by_label(joined_series(
            &g,
            &XAxis::Key("task.num_kv_pairs".into()),
            "best_token_acc",
            (0.0, 1.0),
        ));
        assert_eq!(
            lines["transformer d_model=64"],
            vec![(2.0, 0.85), (8.0, 0.25)]
        );
        assert_eq!(lines["transformer d_model=128"], vec![(8.0, 0.55)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn where_filters_on_resolved_values_and_rejects_unknown_keys() {
        let dir = fresh_dir("compare-where");
        let mut runs = mqar_like(&dir);
        apply_filters(&mut runs, &[("task.num_kv_pairs".into(), "8.0".into())]).unwrap();
        let ids: Vec<&str> = runs.rows.iter().map(|r| r["run_id"].as_str()).collect();
        assert_eq!(ids, ["b0", "b1", "c0", "c1"]);
        let e = apply_filters(&mut runs, &[("task.num_pairs".into(), "8".into())]).unwrap_err();
        assert!(
            format!("{e:#}").contains("no run has `task.num_pairs`"),
            "{e:#}"
        );
        assert!(
            parse_filter("task.num_kv_pairs").is_err()
                && parse_filter("a=1").unwrap() == ("a".into(), "1".into())
        );
        assert!(
            "task.num_kv_pairs".parse::<XAxis>().unwrap() == XAxis::Key("task.num_kv_pairs".into())
        );
        assert!("num_kv_pairs".parse::<XAxis>().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
