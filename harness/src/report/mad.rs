//! MAD's summary table (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
//! Architectures"; athms/mad-lab `mad/analysis.py`), `mad_summary.md` and `.csv`: one row per
//! group, its test token accuracy on each of MAD's six tasks and the MAD mean over them.
//!
//! - Groups: `--by` plus every swept key other than the seed and the tasks' own settings
//!   (`task.*`, `task_config`) that varies among the MAD runs, so that a group lines up across the
//!   six tasks, whose task configs differ. Experiments are no part of the key: each task has its
//!   own.
//! - Metric: `token_acc` of every task, whatever its success metric, on test at the reported
//!   checkpoint and the task's training length, where MAD evaluates: the eval.csv row at
//!   `eval_len` = the run's `task.seq_len` (or, where `eval_lengths` leaves that length out, the
//!   `train` row: the training distribution, of that same length).
//! - Tuning: per setting and seed the candidate `tune::choose` keeps (best validation score; with
//!   `tune_seeds`, the one chosen on those seeds for every seed), scored on test. MAD keeps the best of its grid by test score, never lower on the same runs.
//! - A seed's task score: the mean over the task's settings in the group (its experiments and
//!   `task.*` values), as MAD's task score averages its settings; a seed without a score at one of
//!   them has none for the task.
//! - Task cell: over seeds, the median with the 95 % percentile-bootstrap CI of the median, and n.
//! - MAD mean: for each seed with a score on all six tasks, the mean of the six; over those seeds
//!   the mean with its 95 % Student t CI clipped to [0, 1], the median and n. A group without all
//!   six tasks, or without a seed that has all six, has none: never a mean over fewer tasks.

use crate::input::config::Selection;
use crate::record;
use crate::report::groups::{check_by, group_by, Group};
use crate::report::runs::{lookup, num, pretty, read_eval, Row, Runs};
use crate::report::spec::{generated_by, metric_bounds, range_text, selection_of};
use crate::report::stats::{self, Summary};
use crate::report::table::{self, csv_cell, csv_num, fmt, Column};
use crate::report::tune;
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// MAD's six tasks in its order, each with its column name.
pub(super) const MAD_TASKS: [(&str, &str); 6] = [
    ("mad_in_context_recall", "in-context recall"),
    ("mad_fuzzy_in_context_recall", "fuzzy recall"),
    ("mad_noisy_in_context_recall", "noisy recall"),
    ("mad_selective_copying", "selective copying"),
    ("mad_compression", "compression"),
    ("mad_memorization", "memorization"),
];

/// The metric of every task in the summary.
const METRIC: &str = "token_acc";

/// Whether `runs` hold a run of one of MAD's tasks.
pub(super) fn has_mad_task(runs: &Runs) -> bool {
    runs.tasks().iter().any(|t| is_mad(t))
}

fn is_mad(task: &str) -> bool {
    MAD_TASKS.iter().any(|(t, _)| *t == task)
}

/// The summary of the MAD runs among `runs` (at least one), `<out>/mad_summary.md` and `.csv`,
/// each headed by `command`; `by`, `selection` and `candidates` as `compare`'s options.
pub(super) fn write_summary(
    runs: &Runs,
    by: &str,
    selection: Option<Selection>,
    candidates: bool,
    results: &Path,
    out: &Path,
    command: &str,
) -> Result<Vec<PathBuf>> {
    let summary = summarize(runs, by, selection, candidates, results)?;
    let header = header_lines(&summary, command);
    let columns = columns(&summary);
    let mut md = String::new();
    for l in &header {
        writeln!(md, "<!-- {l} -->")?;
    }
    md.push_str(&intro(&summary));
    md.push_str(&table::markdown(&columns, &summary.rows));
    let csv_bytes = table::csv(&columns, &summary.rows, &header)?;
    let (md_path, csv_path) = (out.join("mad_summary.md"), out.join("mad_summary.csv"));
    record::write_atomic(&md_path, md.as_bytes())?;
    record::write_atomic(&csv_path, &csv_bytes)?;
    Ok(vec![md_path, csv_path])
}

/// The summary's rows and what they were made with.
struct MadSummary {
    selection: Selection,
    /// The columns that define a group: `--by`, then the swept keys that split it further.
    keys: Vec<String>,
    /// Each MAD task with runs, and its tuning protocol in words (None: not tuned).
    tuning: Vec<(&'static str, Option<String>)>,
    /// Whether candidates were chosen (some task tuned, and not `--candidates`).
    chosen: bool,
    /// Per task (MAD's order), the most settings it has in one group.
    settings: [usize; 6],
    rows: Vec<MadRow>,
}

/// One group's numbers.
struct MadRow {
    group: Group,
    /// Per task (MAD's order), each seed's score.
    scores: [BTreeMap<i64, f64>; 6],
    /// Per task, the scores over seeds.
    tasks: [Summary; 6],
    /// Each seed with a score on all six tasks, and the mean of the six.
    seed_means: BTreeMap<i64, f64>,
    /// The seed means over seeds; n = 0 when there is none.
    mean: Summary,
}

impl MadRow {
    /// How many of the six tasks the group has a score on.
    fn task_count(&self) -> usize {
        self.scores.iter().filter(|s| !s.is_empty()).count()
    }
}

fn summarize(
    runs: &Runs,
    by: &str,
    asked: Option<Selection>,
    candidates: bool,
    results: &Path,
) -> Result<MadSummary> {
    check_by(runs, by)?;
    let task_of = |r: &Row| r.get("task").cloned().unwrap_or_default();
    let selection = selection_of(runs.rows.iter().filter(|r| is_mad(&task_of(r))), asked);
    let present = runs.tasks();
    let mut chosen: Vec<Row> = vec![];
    let mut tuning = vec![];
    for (task, _) in MAD_TASKS
        .iter()
        .filter(|(t, _)| present.iter().any(|p| p == t))
    {
        let (rows, protocol) = tune::choose(runs, task, selection, results, candidates);
        tuning.push((*task, protocol.map(|p| p.describe(selection))));
        chosen.extend(rows.rows);
    }
    let swept = runs.swept_keys();
    let is_setting = |k: &str| k.starts_with("task.") || k == "task_config";
    let varies = |k: &str| {
        chosen
            .iter()
            .map(|r| r.get(k).cloned().unwrap_or_default())
            .collect::<BTreeSet<_>>()
            .len()
            > 1
    };
    // A chosen row keeps its candidate under `chosen:`, so a tuned key varies only with
    // `--candidates`, where each candidate is a group.
    let keys: Vec<String> = std::iter::once(by.to_string())
        .chain(
            swept
                .iter()
                .filter(|k| *k != by && *k != "seed" && !is_setting(k) && varies(k))
                .cloned(),
        )
        .collect();
    let setting_keys: Vec<String> = std::iter::once("experiment".to_string())
        .chain(swept.iter().filter(|k| is_setting(k)).cloned())
        .collect();
    let rows: Vec<MadRow> = group_by(&chosen, &keys)
        .into_iter()
        .map(|g| mad_row(g, &setting_keys, selection, results))
        .collect();
    let settings = std::array::from_fn(|i| {
        rows.iter()
            .map(|r| settings_of(&r.group, MAD_TASKS[i].0, &setting_keys).len())
            .max()
            .unwrap_or(0)
    });
    Ok(MadSummary {
        selection,
        keys,
        chosen: !candidates && tuning.iter().any(|(_, p)| p.is_some()),
        tuning,
        settings,
        rows,
    })
}

/// The settings of `task` among a group's rows: their cells of `setting_keys`.
fn settings_of(g: &Group, task: &str, setting_keys: &[String]) -> BTreeSet<Vec<String>> {
    g.rows
        .iter()
        .filter(|r| r.get("task").map(String::as_str) == Some(task))
        .map(|r| setting(r, setting_keys))
        .collect()
}

fn setting(r: &Row, setting_keys: &[String]) -> Vec<String> {
    setting_keys
        .iter()
        .map(|k| r.get(k).cloned().unwrap_or_default())
        .collect()
}

fn mad_row(group: Group, setting_keys: &[String], selection: Selection, results: &Path) -> MadRow {
    let range = metric_bounds(METRIC);
    let scores: [BTreeMap<i64, f64>; 6] = std::array::from_fn(|i| {
        let task = MAD_TASKS[i].0;
        let settings = settings_of(&group, task, setting_keys).len();
        // Seed → setting → score; tune::choose leaves one row per setting and seed.
        let mut by_seed: BTreeMap<i64, BTreeMap<Vec<String>, f64>> = BTreeMap::new();
        for r in group
            .rows
            .iter()
            .filter(|r| r.get("task").map(String::as_str) == Some(task))
        {
            let seed = r.get("seed").and_then(|s| s.parse::<i64>().ok());
            if let (Some(seed), Some(v)) = (seed, score_at_training_length(r, selection, results)) {
                by_seed
                    .entry(seed)
                    .or_default()
                    .insert(setting(r, setting_keys), v);
            }
        }
        by_seed
            .into_iter()
            .filter(|(_, at)| at.len() == settings)
            .map(|(seed, at)| (seed, at.values().sum::<f64>() / at.len() as f64))
            .collect()
    });
    let tasks = std::array::from_fn(|i| {
        stats::summarize(&scores[i].values().copied().collect::<Vec<_>>(), range)
    });
    let seed_means: BTreeMap<i64, f64> = scores[0]
        .keys()
        .filter(|seed| scores.iter().all(|s| s.contains_key(seed)))
        .map(|seed| {
            let sum: f64 = scores.iter().map(|s| s[seed]).sum();
            (*seed, sum / MAD_TASKS.len() as f64)
        })
        .collect();
    let mean = stats::summarize(&seed_means.values().copied().collect::<Vec<_>>(), range);
    MadRow {
        group,
        scores,
        tasks,
        seed_means,
        mean,
    }
}

/// A run's test `token_acc` at the `selection` checkpoint and its training length: the eval.csv
/// row at `eval_len` = its `task.seq_len`, else the `train` row (the training distribution, of
/// that length). None without eval.csv (a failed run) or without a finite value.
fn score_at_training_length(run: &Row, selection: Selection, results: &Path) -> Option<f64> {
    let eval = read_eval(results, run).ok()?;
    let at_checkpoint = || {
        eval.iter()
            .filter(|e| e.get("checkpoint").map(String::as_str) == Some(selection.as_str()))
    };
    let seq_len = lookup(run, "task.seq_len").and_then(|v| v.parse::<f64>().ok());
    let row = at_checkpoint()
        .find(|e| seq_len.is_some() && num(e, "eval_len") == seq_len)
        .or_else(|| {
            at_checkpoint().find(|e| e.get("eval_len").map(String::as_str) == Some("train"))
        })?;
    num(row, METRIC).filter(|v| v.is_finite())
}

/// The header lines of both files: the command, the metric and checkpoint, the tuning protocol
/// and how the cells are made.
fn header_lines(s: &MadSummary, command: &str) -> Vec<String> {
    let mut lines = vec![
        generated_by(command),
        format!(
            "MAD summary (Poli et al. 2024); metric {METRIC} (higher is better) of every task on test \
             at its training length (eval.csv eval_len = task.seq_len); {}",
            s.selection.describe()
        ),
    ];
    lines.extend(tuning_lines(s));
    lines.push(
        "task columns (CSV <task>_median, <task>_median_boot95_lo, <task>_median_boot95_hi, \
         <task>_n): median over seeds with the 95 % percentile-bootstrap CI of the median, and n"
            .into(),
    );
    lines.push(format!(
        "MAD mean (CSV mad_mean, mad_mean_t95_lo, mad_mean_t95_hi, mad_mean_median, mad_mean_n, \
         tasks, mad_mean_per_seed as seed:mean): per seed with all six tasks the mean over the \
         six; over those seeds the mean with its 95 % Student t CI clipped to {}, the median and \
         n; none for a group without all six tasks or a seed that has all six",
        range_text(metric_bounds(METRIC))
    ));
    if let Some(note) = settings_note(s) {
        lines.push(note);
    }
    lines
}

/// The tuning protocol of the tasks, one line per protocol with the tasks that share it, and
/// that MAD chooses otherwise.
fn tuning_lines(s: &MadSummary) -> Vec<String> {
    if s.tuning.iter().all(|(_, p)| p.is_none()) {
        return vec![
            "Not tuned: one run per setting and seed (MAD reports, per setting, the best of its \
             grid of learning rates and weight decays by test score)"
                .into(),
        ];
    }
    // (protocol, its tasks) in MAD's order of their first task.
    let mut shared: Vec<(&str, Vec<&str>)> = vec![];
    for (task, p) in &s.tuning {
        let p = p.as_deref().unwrap_or("not tuned");
        match shared.iter_mut().find(|(q, _)| *q == p) {
            Some((_, tasks)) => tasks.push(task),
            None => shared.push((p, vec![task])),
        }
    }
    let mut lines: Vec<String> = match &shared[..] {
        [(p, _)] => vec![p.to_string()],
        _ => shared
            .iter()
            .map(|(p, tasks)| format!("{}: {p}", tasks.join(", ")))
            .collect(),
    };
    lines.push(if s.chosen {
        "Candidates are chosen on validation and reported on test; MAD itself reports, per \
         setting, the best candidate of its grid by test score, never lower on the same runs"
            .into()
    } else {
        "Every candidate is its own row, scored on test; MAD itself reports, per setting, the \
         best candidate of its grid by test score"
            .into()
    });
    lines
}

/// Which tasks were run at several settings in one group, and what a seed's score is then.
fn settings_note(s: &MadSummary) -> Option<String> {
    let several: Vec<String> = MAD_TASKS
        .iter()
        .zip(s.settings)
        .filter(|(_, n)| *n > 1)
        .map(|((_, name), n)| format!("{name} {n}"))
        .collect();
    (!several.is_empty()).then(|| {
        format!(
            "settings per task (experiments and task.* values) where more than one: {}; a seed's \
             score on such a task is the mean over its settings, as MAD's task score is, and \
             none when it misses one",
            several.join(", ")
        )
    })
}

/// The heading and protocol above the Markdown table.
fn intro(s: &MadSummary) -> String {
    let within = range_text(metric_bounds(METRIC));
    let mut md =
        format!("### MAD summary — test {METRIC} at the training length (higher is better)\n\n");
    md.push_str(&format!(
        "Selection protocol: **{}** ({}). Metric: `{METRIC}` of every task, whatever its success \
         metric, on test at the task's training length (eval.csv `eval_len` = `task.seq_len`), \
         where MAD evaluates. Task columns in MAD's order: median over seeds [95 % \
         percentile-bootstrap CI of the median] ({} resamples, fixed seed), n seeds. MAD mean: for \
         each seed with all six tasks, the mean over the six; over those seeds the mean [95 % \
         Student t CI clipped to {within}], the median and n; where a group lacks a task or a seed \
         with all six, — and its task count, never a mean over fewer tasks.\n\n",
        s.selection.as_str(),
        s.selection.describe(),
        stats::BOOTSTRAP_RESAMPLES
    ));
    md.push_str(&format!("{}.\n\n", tuning_lines(s).join(". ")));
    if let Some(note) = settings_note(s) {
        md.push_str(&format!("{}{}.\n\n", note[..1].to_uppercase(), &note[1..]));
    }
    md
}

/// The group's key columns, then one column per task in MAD's order, then the MAD mean; the CSV
/// gives each number its own cell.
fn columns(s: &MadSummary) -> Vec<Column<'_, MadRow>> {
    let mut columns: Vec<Column<MadRow>> = s
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            Column::new(
                k.as_str(),
                move |r: &MadRow| pretty(&r.group.key[i].1),
                vec![(
                    k.as_str(),
                    csv_cell(move |r: &MadRow| r.group.key[i].1.clone()),
                )],
            )
        })
        .collect();
    let selection = s.selection.as_str();
    columns.push(Column::csv_only("metric", |_: &MadRow| METRIC.into()));
    columns.push(Column::csv_only("selection", move |_: &MadRow| {
        selection.into()
    }));
    for (i, (task, name)) in MAD_TASKS.iter().enumerate() {
        columns.push(Column::new(
            *name,
            move |r: &MadRow| task_cell(&r.tasks[i]),
            vec![
                (
                    format!("{task}_median").as_str(),
                    csv_cell(move |r: &MadRow| csv_num(Some(r.tasks[i].median))),
                ),
                (
                    format!("{task}_median_boot95_lo").as_str(),
                    csv_cell(move |r: &MadRow| csv_num(Some(r.tasks[i].boot_ci.0))),
                ),
                (
                    format!("{task}_median_boot95_hi").as_str(),
                    csv_cell(move |r: &MadRow| csv_num(Some(r.tasks[i].boot_ci.1))),
                ),
                (
                    format!("{task}_n").as_str(),
                    csv_cell(move |r: &MadRow| r.tasks[i].n.to_string()),
                ),
            ],
        ));
    }
    let within = range_text(metric_bounds(METRIC));
    columns.push(Column::new(
        format!("MAD mean [t95, clipped to {within}]"),
        mean_cell,
        vec![
            (
                "mad_mean",
                csv_cell(|r: &MadRow| csv_num(Some(r.mean.mean))),
            ),
            (
                "mad_mean_t95_lo",
                csv_cell(|r: &MadRow| csv_num(Some(r.mean.t_ci.0))),
            ),
            (
                "mad_mean_t95_hi",
                csv_cell(|r: &MadRow| csv_num(Some(r.mean.t_ci.1))),
            ),
            (
                "mad_mean_median",
                csv_cell(|r: &MadRow| csv_num(Some(r.mean.median))),
            ),
            ("mad_mean_n", csv_cell(|r: &MadRow| r.mean.n.to_string())),
            ("tasks", csv_cell(|r: &MadRow| r.task_count().to_string())),
            (
                "mad_mean_per_seed",
                csv_cell(|r: &MadRow| {
                    r.seed_means
                        .iter()
                        .map(|(seed, m)| format!("{seed}:{}", csv_num(Some(*m))))
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            ),
        ],
    ));
    // Every row names its runs, so `membench reproduce mad_summary.csv:ROW` can check them.
    columns.push(Column::csv_only("run_ids", |r: &MadRow| {
        r.group
            .rows
            .iter()
            .filter_map(|r| r.get("run_id").cloned())
            .collect::<Vec<_>>()
            .join(" ")
    }));
    columns
}

/// `0.8 [0.7, 0.9] n=3`, or `–` without a seed.
fn task_cell(s: &Summary) -> String {
    if s.n == 0 {
        return "–".into();
    }
    format!(
        "{} [{}, {}] n={}",
        fmt(s.median),
        fmt(s.boot_ci.0),
        fmt(s.boot_ci.1),
        s.n
    )
}

/// `0.59 [0.06, 1], median 0.59 n=2`, or `— (5/6 tasks)` without a MAD mean.
fn mean_cell(r: &MadRow) -> String {
    let m = &r.mean;
    if m.n > 0 {
        return format!(
            "{} [{}, {}], median {} n={}",
            fmt(m.mean),
            fmt(m.t_ci.0),
            fmt(m.t_ci.1),
            fmt(m.median),
            m.n
        );
    }
    match r.task_count() {
        6 => "— (6/6 tasks, no seed has all six)".into(),
        k => format!("— ({k}/6 tasks)"),
    }
}

/// A results directory of MAD runs, each entry `(arch, task index in MAD's order, seq_len, seed,
/// score)` made two `train.lr` candidates: lr 0.01 validates better (valid token_acc 0.9, bit
/// errors 0.1; compression is given bit errors as its success metric, as results of membench
/// before its per-token compression metric have, so that one task is chosen on a metric where
/// lower is better) and tests at `score`, lr 0.001 validates worse and
/// tests at `score + 0.1`; `None`: both failed, with no eval.csv. One experiment per task and
/// arch, as `tune::choose` needs (it tells settings apart by experiment and swept keys). Each run's eval.csv has the
/// `train` row and `seq_len` (both `score` at best_valid, `score − 0.2` at last) and twice
/// `seq_len` (half those), which the summary must not read. `task.seq_len` is swept (a runs.csv
/// column) and differs between tasks; runs.csv and eval.csv have bit errors too (1 − token_acc),
/// for the per-task tables. A fixture of the report modules' unit tests.
#[cfg(test)]
pub(super) fn mad_like(dir: &Path, runs: &[(&str, usize, usize, u64, Option<f64>)]) {
    let mut csv = "run_id,experiment,task,arch,task.seq_len,tune:train.lr,seed,status,best_step,\
                   final_token_acc,best_token_acc,final_bit_errors_per_seq,best_bit_errors_per_seq,\
                   success_metric,success_threshold,selection,membench_version,torch_version\n"
        .to_string();
    for &(arch, t, seq_len, seed, score) in runs {
        let task = MAD_TASKS[t].0;
        let (metric, threshold) = match task {
            "mad_compression" => ("bit_errors_per_seq", 0.1),
            _ => ("token_acc", 0.99),
        };
        for (lr, valid_acc, valid_errors, valid_loss, bonus) in
            [("0.01", 0.9, 0.1, 0.5, 0.0), ("0.001", 0.5, 5.0, 1.0, 0.1)]
        {
            let id = format!("{arch}{t}l{seq_len}s{seed}-{lr}");
            let run = record::run_dir(dir, &id);
            std::fs::create_dir_all(&run).unwrap();
            let config = format!(
                "experiment: {task}_{arch}\ntask:\n  name: {task}\n  seq_len: {seq_len}\narch:\n  name: {arch}\n\
                 train:\n  lr: {lr}\nseed: {seed}\n"
            );
            std::fs::write(run.join("config.yaml"), config).unwrap();
            let Some(score) = score.map(|s| s + bonus) else {
                csv += &format!("{id},{task}_{arch},{task},{arch},{seq_len},{lr},{seed},failed,,,,,,{metric},{threshold},best_valid,0.5.0,2.11.0\n");
                continue;
            };
            let last = score - 0.2;
            csv += &format!(
                "{id},{task}_{arch},{task},{arch},{seq_len},{lr},{seed},done,100,{last},{score},{},{},\
                 {metric},{threshold},best_valid,0.5.0,2.11.0\n",
                1.0 - last,
                1.0 - score
            );
            let curve = format!(
                "step,valid_loss,valid_token_acc,valid_bit_errors_per_seq\n100,{valid_loss},{valid_acc},{valid_errors}\n"
            );
            std::fs::write(run.join("curve.csv"), curve).unwrap();
            let mut eval = "checkpoint,eval_len,depth,token_acc,bit_errors_per_seq\n".to_string();
            for (checkpoint, v) in [("last", last), ("best_valid", score)] {
                for (len, v) in [
                    ("train".into(), v),
                    (seq_len.to_string(), v),
                    ((2 * seq_len).to_string(), v / 2.0),
                ] {
                    eval += &format!("{checkpoint},{len},,{v},{}\n", 1.0 - v);
                }
            }
            std::fs::write(run.join("eval.csv"), eval).unwrap();
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("runs.csv"), csv).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::runs::{read_runs, resolve};
    use crate::test_support::fresh_dir;

    /// Each task at its own training length (16, 32, ... 96), as MAD's tasks differ.
    fn seq_len(task: usize) -> usize {
        16 * (task + 1)
    }

    /// Scores of the chosen (lr 0.01) candidates, per task in MAD's order and seed. lstm, seeds
    /// 0–2: compression failed at seed 2, so only seeds 0 and 1 have all six tasks; gru, seeds 0–1:
    /// no memorization runs.
    const LSTM: [[Option<f64>; 3]; 6] = [
        [Some(0.9), Some(0.8), Some(0.7)],
        [Some(0.5), Some(0.6), Some(0.4)],
        [Some(0.8), Some(0.8), Some(0.6)],
        [Some(0.3), Some(0.5), Some(0.4)],
        [Some(0.2), Some(0.4), None],
        [Some(0.6), Some(0.7), Some(0.8)],
    ];
    const GRU: [[f64; 2]; 5] = [[0.4, 0.6], [0.3, 0.3], [0.2, 0.4], [0.1, 0.3], [0.5, 0.7]];

    fn two_groups(dir: &Path) -> Runs {
        let mut runs = vec![];
        for (t, seeds) in LSTM.iter().enumerate() {
            for (seed, score) in seeds.iter().enumerate() {
                runs.push(("lstm", t, seq_len(t), seed as u64, *score));
            }
        }
        for (t, seeds) in GRU.iter().enumerate() {
            for (seed, score) in seeds.iter().enumerate() {
                runs.push(("gru", t, seq_len(t), seed as u64, Some(*score)));
            }
        }
        mad_like(dir, &runs);
        let mut runs = read_runs(dir).unwrap();
        resolve(&mut runs, dir);
        runs
    }

    fn row<'a>(s: &'a MadSummary, arch: &str) -> &'a MadRow {
        s.rows
            .iter()
            .find(|r| r.group.key[0].1 == arch)
            .unwrap_or_else(|| panic!("no {arch} row"))
    }

    fn medians(r: &MadRow) -> [f64; 6] {
        std::array::from_fn(|i| r.tasks[i].median)
    }

    #[test]
    fn each_task_is_scored_on_the_candidate_chosen_on_validation() {
        let dir = fresh_dir("mad-summary");
        let runs = two_groups(&dir);
        let s = summarize(&runs, "arch", None, false, &dir).unwrap();
        // One group per arch although task.seq_len (swept) differs between the tasks.
        assert_eq!(s.keys, ["arch"]);
        assert_eq!(s.rows.len(), 2);
        // The lr 0.01 candidate (better validation, test 0.1 worse) at best_valid and seq_len:
        // lr 0.001 would give 0.9 on in-context recall, the last checkpoint 0.6, 2 × seq_len 0.4.
        let lstm = row(&s, "lstm");
        assert_eq!(medians(lstm), [0.8, 0.5, 0.8, 0.4, (0.2 + 0.4) / 2.0, 0.7]);
        assert_eq!(lstm.tasks.each_ref().map(|t| t.n), [3, 3, 3, 3, 2, 3]);
        // Seed 2 misses compression: the MAD mean is over seeds 0 and 1, each the mean of six.
        let seed0 = (0.9 + 0.5 + 0.8 + 0.3 + 0.2 + 0.6) / 6.0;
        let seed1 = (0.8 + 0.6 + 0.8 + 0.5 + 0.4 + 0.7) / 6.0;
        assert_eq!(
            lstm.seed_means
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect::<Vec<_>>(),
            [(0, seed0), (1, seed1)]
        );
        assert_eq!(lstm.mean.n, 2);
        assert!((lstm.mean.mean - (seed0 + seed1) / 2.0).abs() < 1e-15);
        // t CI over two seeds: mean ± t(0.975, 1)·|seed0 − seed1|/2 = 0.5917 ± 12.7062·0.0333,
        // whose top (1.0153) is clipped to 1.
        let half = 12.706204736174694 * (seed1 - seed0) / 2.0;
        assert!((lstm.mean.t_ci.0 - (lstm.mean.mean - half)).abs() < 1e-9);
        assert_eq!(lstm.mean.t_ci.1, 1.0);
        // gru has no memorization runs: five tasks, no MAD mean.
        let gru = row(&s, "gru");
        assert_eq!(medians(gru)[..5], GRU.map(|[a, b]| (a + b) / 2.0));
        assert!(gru.tasks[5].n == 0 && gru.seed_means.is_empty() && gru.mean.n == 0);
        assert_eq!(gru.task_count(), 5);

        let out = dir.join("reports");
        let written = write_summary(
            &runs,
            "arch",
            None,
            false,
            &dir,
            &out,
            "membench compare --mad",
        )
        .unwrap();
        assert_eq!(
            written,
            [out.join("mad_summary.md"), out.join("mad_summary.csv")]
        );
        let md = std::fs::read_to_string(out.join("mad_summary.md")).unwrap();
        let md_row = |arch: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {arch} |")))
                .unwrap()
                .to_string()
        };
        assert!(
            md.contains("| arch | in-context recall | fuzzy recall | noisy recall | selective copying | compression | memorization | MAD mean [t95, clipped to [0, 1]] |"),
            "{md}"
        );
        let lstm_md = md_row("lstm");
        assert!(
            lstm_md.starts_with("| lstm | 0.8 [0.7, 0.9] n=3 | 0.5 "),
            "{lstm_md}"
        );
        assert!(
            lstm_md.ends_with(&format!(
                "| 0.3 [0.2, 0.4] n=2 | 0.7 [0.6, 0.8] n=3 | 0.5917 [{}, 1], median 0.5917 n=2 |",
                fmt(lstm.mean.t_ci.0)
            )),
            "{lstm_md}"
        );
        let gru_md = md_row("gru");
        assert!(
            gru_md.ends_with("| 0.6 [0.5, 0.7] n=2 | – | — (5/6 tasks) |"),
            "{gru_md}"
        );
        for said in [
            "<!-- generated by: membench compare --mad -->",
            // The fixture's compression is chosen on its own success metric, lower bit errors.
            "<!-- mad_in_context_recall, mad_fuzzy_in_context_recall, mad_noisy_in_context_recall, \
             mad_selective_copying, mad_memorization: Tuning protocol train.lr ∈ {0.001, 0.01}",
            "<!-- mad_compression: Tuning protocol train.lr ∈ {0.001, 0.01}: per setting and seed, \
             the candidate with the lowest validation bit_errors_per_seq",
            "metric token_acc (higher is better) of every task on test at its training length",
            "selection = best_valid: the checkpoint with the best validation score, scored on test",
            "Tuning protocol train.lr ∈ {0.001, 0.01}: per setting and seed, the candidate with the highest validation token_acc",
            "Candidates are chosen on validation and reported on test; MAD itself reports, per setting, the best candidate of its grid by test score",
        ] {
            assert!(md.contains(said), "{said}\n{md}");
        }
        // The CSV: the same numbers, one per cell, and the runs behind them (lr 0.01 only).
        let csv = std::fs::read_to_string(out.join("mad_summary.csv")).unwrap();
        assert!(
            csv.starts_with("# generated by: membench compare --mad\n"),
            "{csv}"
        );
        let header = csv.lines().find(|l| l.starts_with("arch,")).unwrap();
        let cell = |arch: &str, col: &str| {
            let line = csv
                .lines()
                .find(|l| l.starts_with(&format!("{arch},")))
                .unwrap();
            let i = header
                .split(',')
                .position(|c| c == col)
                .unwrap_or_else(|| panic!("{col}"));
            line.split(',').nth(i).unwrap().to_string()
        };
        assert_eq!(
            [
                "mad_in_context_recall_median",
                "mad_in_context_recall_median_boot95_lo",
                "mad_in_context_recall_median_boot95_hi",
                "mad_in_context_recall_n",
                "mad_compression_n",
                "mad_mean_t95_hi",
                "mad_mean_n",
                "tasks",
                "selection",
                "metric",
            ]
            .map(|c| cell("lstm", c)),
            [
                "0.8",
                "0.7",
                "0.9",
                "3",
                "2",
                "1.0",
                "2",
                "6",
                "best_valid",
                "token_acc"
            ]
        );
        let parse = |v: String| v.parse::<f64>().unwrap();
        assert!((parse(cell("lstm", "mad_mean")) - (seed0 + seed1) / 2.0).abs() < 1e-15);
        assert_eq!(
            cell("lstm", "mad_mean_per_seed"),
            format!("0:{seed0:?} 1:{seed1:?}")
        );
        assert_eq!(
            [
                "mad_memorization_median",
                "mad_memorization_n",
                "mad_mean",
                "mad_mean_n",
                "tasks"
            ]
            .map(|c| cell("gru", c)),
            ["", "0", "", "0", "5"]
        );
        let ids = cell("gru", "run_ids");
        assert_eq!(ids.split(' ').count(), 10, "{ids}");
        assert!(ids.split(' ').all(|id| id.ends_with("-0.01")), "{ids}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--selection last` reads the last checkpoint's rows; `--candidates` makes each candidate a
    /// group of its own.
    #[test]
    fn selection_and_candidates_are_honoured() {
        let dir = fresh_dir("mad-options");
        let runs = two_groups(&dir);
        let last = summarize(&runs, "arch", Some(Selection::Last), false, &dir).unwrap();
        let lstm = row(&last, "lstm");
        assert!(
            medians(lstm)
                .iter()
                .zip([0.6, 0.3, 0.6, 0.2, 0.1, 0.5])
                .all(|(m, want)| (m - want).abs() < 1e-12),
            "{:?}",
            medians(lstm)
        );
        let every = summarize(&runs, "arch", None, true, &dir).unwrap();
        assert_eq!(every.keys, ["arch", "tune:train.lr"]);
        assert_eq!(every.rows.len(), 4);
        let lr = |r: &MadRow| (r.group.key[0].1.clone(), r.group.key[1].1.clone());
        let better_test = every
            .rows
            .iter()
            .find(|r| lr(r) == ("lstm".into(), "0.001".into()))
            .unwrap();
        assert!((better_test.tasks[0].median - 0.9).abs() < 1e-12);
        assert!(!every.chosen);
        assert!(tuning_lines(&every)[0].contains("every candidate shown as its own row"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A task run at two settings in one group: a seed's score is the mean over both, and a seed
    /// that misses one (its run failed) has none; the header says so.
    #[test]
    fn a_task_at_several_settings_scores_their_mean() {
        let dir = fresh_dir("mad-settings");
        let mut runs = vec![("lstm", 0, 64, 0, Some(0.5)), ("lstm", 0, 64, 1, None)];
        for t in 0..6 {
            for seed in 0..2 {
                runs.push((
                    "lstm",
                    t,
                    seq_len(t),
                    seed,
                    Some(0.1 * (t + 1) as f64 + 0.01 * seed as f64),
                ));
            }
        }
        mad_like(&dir, &runs);
        let mut runs = read_runs(&dir).unwrap();
        resolve(&mut runs, &dir);
        let s = summarize(&runs, "arch", None, false, &dir).unwrap();
        assert_eq!(s.settings, [2, 1, 1, 1, 1, 1]);
        let lstm = row(&s, "lstm");
        assert_eq!(
            lstm.scores[0]
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect::<Vec<_>>(),
            [(0, (0.5 + 0.1) / 2.0)]
        );
        assert_eq!(lstm.seed_means.keys().copied().collect::<Vec<_>>(), [0]);
        assert!(settings_note(&s).unwrap().contains("in-context recall 2"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
