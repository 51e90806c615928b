//! A metric against an x (`XAxis`: eval length or depth from eval.csv, or a per-run number from
//! runs.csv, such as the training FLOPs, or the resolved config) and against the training step (curve.csv): one line per group
//! or configuration, the mean over seeds with its 95 % t band, drawn by `plot`; each x plot with
//! its numbers as a Markdown table beside it.

use crate::record;
use crate::report::groups::{median, Group};
use crate::report::plot::{self, Figure, Series};
use crate::report::runs::{cfg_key, num, pretty, read_csv_rows, read_eval};
use crate::report::spec::{header_lines, metric_bounds, range_text, Spec};
use crate::report::stats;
use crate::report::table::{self, fmt, Column};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The x axis of the comparison plot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum XAxis {
    EvalLen,
    Depth,
    StateSize,
    ParamCount,
    Steps,
    /// Training FLOPs of the whole run (runs.csv `train_flops`: 3 × forward FLOPs per token ×
    /// tokens trained), to compare families at equal compute.
    TrainFlops,
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
            "train_flops" => XAxis::TrainFlops,
            k if ["task.", "arch.", "train."].iter().any(|p| k.starts_with(p)) => XAxis::Key(k.to_string()),
            _ => {
                return Err("expected eval_len, depth, state_size, param_count, steps, train_flops, or a config \
                            key such as task.num_kv_pairs or arch.d_model"
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
            XAxis::TrainFlops => "train_flops",
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
            XAxis::TrainFlops => {
                "training FLOPs (3 × forward FLOPs per token × tokens trained)".into()
            }
            XAxis::Key(k) => k.clone(),
        }
    }
    /// Sizes and compute can span orders of magnitude across architectures (plot.rs uses a log
    /// axis only when the data spans more than [`plot::LOG_SPAN`]).
    fn log(&self) -> bool {
        matches!(
            self,
            XAxis::StateSize | XAxis::ParamCount | XAxis::TrainFlops
        )
    }
    /// runs.csv column (or resolved `cfg:` key) holding the x value of a run.
    pub(super) fn run_column(&self) -> String {
        match self {
            XAxis::Key(k) => cfg_key(k),
            x => x.as_str().to_string(),
        }
    }
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

pub(super) fn write_x_plot(
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
        XAxis::StateSize | XAxis::ParamCount | XAxis::Steps | XAxis::TrainFlops | XAxis::Key(_) => {
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

/// A numeric arch setting on a size or compute plot: given, whatever its value.
const SET: &str = "set";

/// Metric against a per-run x (state size, parameter count, steps, training FLOPs or a config
/// key): one point per group at its median x, with the t band over its seeds.
fn joined_series(groups: &[Group], x: &XAxis, column: &str, bounds: (f64, f64)) -> Vec<Series> {
    // One point per group at its x. Points join into one line when they share the `by`
    // value, every resolved task and train setting and every arch setting but the sizes (against
    // a config key, every arch setting but that key), so that along a line only x varies: MQAR
    // runs with 2, 4 and 8 pairs at one width are three points on three lines, never one pooled
    // point.
    let xcol = x.run_column();
    let fixed = |g: &Group| -> BTreeMap<String, String> {
        let Some(r) = g
            .rows
            .iter()
            .find(|r| r.keys().any(|k| k.starts_with("cfg:")))
        else {
            return BTreeMap::new();
        };
        // A tuned setting (`chosen:K`, each seed's choice of the tuning protocol) is not a setting
        // of the line: taken from one row, it would split a family's line by its first seed's lr.
        let keep = |k: &str| {
            k != xcol
                && !r.contains_key(&k.replacen("cfg:", "chosen:", 1))
                && (k.starts_with("cfg:task.")
                    || k.starts_with("cfg:train.")
                    || k.starts_with("cfg:arch."))
        };
        r.iter()
            .filter(|(k, _)| keep(k))
            .map(|(k, v)| {
                // Against a size or compute, a line may run through the numeric arch settings
                // (widths, slots, layers), but not join a variant with another: a flag or a
                // named option (`selective: false`, `mlp: swiglu`) and whether a setting is
                // given at all (a short convolution) stay fixed along it.
                let free = k.starts_with("cfg:arch.")
                    && !matches!(x, XAxis::Key(_))
                    && v.parse::<f64>().is_ok();
                (k.clone(), if free { SET.to_string() } else { v.clone() })
            })
            .collect()
    };
    // Each group's x and line: its `by` value and fixed columns.
    type LineKey = (String, BTreeMap<String, String>);
    let mut placed: Vec<(&Group, OrdF64, LineKey)> = groups
        .iter()
        .filter_map(|g| {
            let xv = median(&g.values(&xcol))?;
            Some((g, OrdF64(xv), (pretty(&g.key[0].1), fixed(g))))
        })
        .collect();
    // A line never pools two groups at one x (Mamba and its time-invariant ablation have one
    // state size and the same task and train settings): where two would meet, that line splits by
    // experiment, and where they still meet, by group.
    let experiment = |g: &Group| {
        g.rows
            .first()
            .and_then(|r| r.get("experiment"))
            .cloned()
            .unwrap_or_default()
    };
    let tellers: [(&str, &dyn Fn(&Group) -> String); 2] =
        [("experiment", &experiment), ("group", &Group::label)];
    for (name, tell) in tellers {
        let mut at: BTreeMap<(&LineKey, OrdF64), usize> = BTreeMap::new();
        for (_, xv, line) in &placed {
            *at.entry((line, *xv)).or_default() += 1;
        }
        let met: BTreeSet<LineKey> = at
            .into_iter()
            .filter(|&(_, n)| n > 1)
            .map(|((line, _), _)| line.clone())
            .collect();
        for (g, _, line) in placed.iter_mut() {
            if met.contains(line) {
                line.1.insert(name.to_string(), tell(g));
            }
        }
    }
    // Line → x → the y values at x.
    let mut lines: BTreeMap<LineKey, BTreeMap<OrdF64, Vec<f64>>> = BTreeMap::new();
    for (g, xv, line) in placed {
        lines
            .entry(line)
            .or_default()
            .entry(xv)
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
                // Only the lines that met another carry an experiment or group.
                if !k.starts_with("cfg:") && !settings.contains_key(*k) {
                    continue;
                }
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

pub(super) fn write_curve_plot(
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
    use crate::report::groups::groups;
    use crate::report::runs::mqar_like;
    use crate::test_support::fresh_dir;

    /// The lines `joined_series` draws of `best_token_acc` against `x`: label → points, each value
    /// rounded to 6 decimals.
    fn lines_of(g: &[Group], x: &XAxis) -> BTreeMap<String, Vec<(f64, f64)>> {
        joined_series(g, x, "best_token_acc", (0.0, 1.0))
            .into_iter()
            .map(|s| {
                let points = s.points.iter().map(|p| (p.0, (p.1 * 1e6).round() / 1e6));
                (s.label, points.collect())
            })
            .collect()
    }

    /// The labels of [`lines_of`].
    fn labels_of(g: &[Group], x: &XAxis) -> BTreeSet<String> {
        lines_of(g, x).into_keys().collect()
    }

    #[test]
    fn size_plots_join_only_runs_that_differ_in_size_and_key_plots_only_in_that_key() {
        let dir = fresh_dir("compare-lines");
        let runs = mqar_like(&dir);
        let g = groups(&runs, "mqar", "arch").unwrap();
        // Against state size: the 2-pair run is never pooled with the 8-pair runs at the same size.
        let lines = lines_of(&g, &XAxis::StateSize);
        assert_eq!(lines["transformer num_kv_pairs=2"], vec![(100.0, 0.85)]);
        assert_eq!(
            lines["transformer num_kv_pairs=8"],
            vec![(100.0, 0.25), (400.0, 0.55)]
        );
        assert_eq!(lines.len(), 2);
        // Against the number of pairs: one line per width.
        let lines = lines_of(&g, &XAxis::Key("task.num_kv_pairs".into()));
        assert_eq!(
            lines["transformer d_model=64"],
            vec![(2.0, 0.85), (8.0, 0.25)]
        );
        assert_eq!(lines["transformer d_model=128"], vec![(8.0, 0.55)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Two experiments of one family at one size (Mamba and its time-invariant ablation): two
    /// lines, told apart by experiment, never one pooled point.
    #[test]
    fn groups_at_one_x_are_never_pooled_into_one_point() {
        let dir = fresh_dir("compare-lines-apart");
        let mut runs = mqar_like(&dir);
        for r in runs.rows.iter_mut().filter(|r| r["experiment"] == "width") {
            r.insert("state_size".into(), "100".into());
        }
        let g = groups(&runs, "mqar", "arch").unwrap();
        let lines = lines_of(&g, &XAxis::StateSize);
        assert_eq!(
            lines["transformer num_kv_pairs=8 experiment=pairs"],
            vec![(100.0, 0.25)]
        );
        assert_eq!(
            lines["transformer num_kv_pairs=8 experiment=width"],
            vec![(100.0, 0.55)]
        );
        assert_eq!(lines["transformer num_kv_pairs=2"], vec![(100.0, 0.85)]);
        assert_eq!(lines.len(), 3, "{lines:?}");
        // A variant (a flag, here on the wider runs) is not a size: its own line, named.
        for r in runs.rows.iter_mut().filter(|r| r["experiment"] == "width") {
            r.insert("state_size".into(), "400".into());
            r.insert("cfg:arch.selective".into(), "false".into());
        }
        let g = groups(&runs, "mqar", "arch").unwrap();
        let labels = labels_of(&g, &XAxis::StateSize);
        assert!(
            labels.contains("transformer selective=false num_kv_pairs=8"),
            "{labels:?}"
        );
        assert!(
            labels.contains("transformer selective=– num_kv_pairs=8"),
            "{labels:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Seeds of a tuned group chose different lrs: one line still, labelled without an lr.
    #[test]
    fn a_tuned_setting_neither_splits_nor_labels_a_line() {
        let dir = fresh_dir("compare-lines-tuned");
        let mut runs = mqar_like(&dir);
        for r in runs.rows.iter_mut() {
            let lr = if r["seed"] == "0" { "0.01" } else { "0.001" };
            r.insert("cfg:train.lr".into(), lr.into());
            r.insert("chosen:train.lr".into(), lr.into());
        }
        let g = groups(&runs, "mqar", "arch").unwrap();
        let lines: BTreeMap<String, usize> = lines_of(&g, &XAxis::StateSize)
            .into_iter()
            .map(|(label, points)| (label, points.len()))
            .collect();
        let want: BTreeMap<String, usize> = [
            ("transformer num_kv_pairs=2".to_string(), 1),
            ("transformer num_kv_pairs=8".to_string(), 2),
        ]
        .into();
        assert_eq!(lines, want);
        // Where the lr is a setting of each group (candidates shown, no `chosen:`), lines differ.
        for r in runs.rows.iter_mut() {
            r.remove("chosen:train.lr");
            let lr = if r["cfg:arch.d_model"] == "128" {
                "0.001"
            } else {
                "0.01"
            };
            r.insert("cfg:train.lr".into(), lr.into());
        }
        let g = groups(&runs, "mqar", "arch").unwrap();
        let labels = labels_of(&g, &XAxis::StateSize);
        assert!(
            labels.contains("transformer num_kv_pairs=8 lr=0.001"),
            "{labels:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn x_axis_is_a_named_axis_or_a_config_key() {
        assert!(
            "task.num_kv_pairs".parse::<XAxis>().unwrap() == XAxis::Key("task.num_kv_pairs".into())
        );
        assert_eq!("train_flops".parse::<XAxis>(), Ok(XAxis::TrainFlops));
        assert_eq!(XAxis::TrainFlops.run_column(), "train_flops");
        assert!(XAxis::TrainFlops.log());
        let e = "num_kv_pairs".parse::<XAxis>().unwrap_err();
        assert!(e.contains("train_flops") && e.contains("state_size"), "{e}");
    }
}
