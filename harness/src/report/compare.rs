//! `membench compare` and `membench report`: tables and plots that compare architectures over seeds.
//!
//! Reads `<results>/runs.csv` and each run's `eval.csv` / `curve.csv` (layout in record/mod.rs), groups
//! the runs of a task by `--by` (default `arch`) plus every swept key other than the seed, and writes
//! under `<results>/reports/` (or `--out`):
//! - `<task>_<metric>_<selection>.md` and `.csv`: one row per group with n, median and the 95 %
//!   percentile-bootstrap CI of the median, mean and the 95 % Student t CI of the mean (clipped to
//!   the metric's range, `eval::Metrics::RANGES`, as are the bands of the plots), the success
//!   rate, the median steps, wall seconds and training FLOPs to threshold, the training budget
//!   (steps, FLOPs), param count, state size, and Welch's p-value against the best group
//!   (protocol in stats.rs);
//! - `<task>_<metric>_<selection>_vs_<x>.{png,svg}`: metric against x (eval_len or depth from
//!   eval.csv, or state_size / param_count / steps / train_flops / a config key from runs.csv), one line per
//!   group, mean with a 95 % t band over seeds; and `.md`, the same numbers as a table;
//! - `<task>_<metric>_<selection>_curve.{png,svg}`: validation metric against step, same band;
//! - `mad_summary.md` and `.csv` (when the runs include one of MAD's six `mad_*` tasks and every
//!   task is reported at its default metric, or with `--mad` alone): per group the test token_acc
//!   of each MAD task at its training length and the MAD mean over the six (protocol in mad.rs).
//!
//! Every file names the selection protocol (`last`: the final checkpoint, runs.csv `final_*` and
//! eval.csv `checkpoint = last`; `best_valid`: the checkpoint with the best validation score,
//! `best_*` and `checkpoint = best_valid`) and carries the command that produced it.
//!
//! This file holds the commands: their options, entry points and the choice of what to write
//! (tasks, metric, selection, axes); the pieces are `runs` (reading results), `spec` (what a set of
//! files is about), `groups`, `summary` (the table) and `series` (the plots and their tables).

use crate::input::config::Selection;
use crate::report::groups::{groups, median, Group};
use crate::report::mad;
use crate::report::runs::{
    apply_filters, lookup, mode, parse_filter, read_eval, read_runs, resolve, Runs,
};
use crate::report::series::{write_curve_plot, write_x_plot, XAxis};
use crate::report::spec::{selection_of, Spec};
use crate::report::summary::write_table;
use crate::report::tune;
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

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
    /// x axis of the comparison plot: eval_len, depth, state_size, param_count, steps,
    /// train_flops (training FLOPs), or a numeric config key such as task.num_kv_pairs (default:
    /// every axis the data has).
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
    /// Tuned runs (`tune:` in the experiments file): show every candidate as its own group
    /// instead of the one with the best validation score per setting and seed.
    #[arg(long)]
    pub candidates: bool,
    /// Only MAD's summary, mad_summary.{md,csv}: per group the test token_acc of each of MAD's six
    /// mad_* tasks at its training length, and their mean (`report` writes it too).
    #[arg(long, conflicts_with_all = ["task", "x", "metric", "all"])]
    pub mad: bool,
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
            candidates: false,
            mad: false,
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
        let mut every = CompareArgs::every_task(args.results.clone(), args.out.clone());
        every.candidates = args.candidates;
        write_reports(&every, &command_line())?
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
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| opts.results.join("reports"));
    let mad_summary = |command: &str| {
        mad::write_summary(
            &runs,
            &opts.by,
            opts.selection,
            opts.candidates,
            &opts.results,
            &out,
            command,
        )
    };
    if opts.mad {
        if !mad::has_mad_task(&runs) {
            return Err(no_mad_task(opts, &runs));
        }
        return mad_summary(command);
    }
    let tasks = tasks_to_report(opts, &runs)?;
    let mut written = vec![];
    for task in &tasks {
        let mut spec = spec_of(task, wanted_metric(opts), opts, &runs)?;
        let (chosen, protocol) =
            tune::choose(&runs, task, spec.selection, &opts.results, opts.candidates);
        spec.tuning = protocol.as_ref().map(|p| p.describe(spec.selection));
        let groups = groups(&chosen, task, &opts.by)?;
        written.extend(write_table(
            &spec,
            &groups,
            protocol.as_ref(),
            &opts.by,
            &out,
            command,
        )?);
        let axes = match &opts.x {
            Some(x) => vec![x.clone()],
            None => default_axes(&opts.results, &chosen, &groups),
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
    // Every task at its default metric: MAD's summary too, when MAD's tasks are among them.
    if opts.task.is_none() && opts.metric.is_none() && mad::has_mad_task(&runs) {
        written.extend(mad_summary(command)?);
    }
    Ok(written)
}

/// `--mad` on runs without a MAD task: bad input, naming the tasks there are.
fn no_mad_task(opts: &CompareArgs, runs: &Runs) -> anyhow::Error {
    let tasks = runs.tasks();
    crate::input::strict::bad_option(anyhow::anyhow!(
        "--mad: no runs of MAD's tasks ({}) in {}{}; tasks there: {}",
        mad::MAD_TASKS.map(|(t, _)| t).join(", "),
        opts.results.join("runs.csv").display(),
        if opts.filters.is_empty() {
            ""
        } else {
            " that match every --where"
        },
        if tasks.is_empty() {
            "none".to_string()
        } else {
            tasks.join(", ")
        }
    ))
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
    if opts.x == Some(XAxis::TrainFlops) && !runs.header.iter().any(|h| h == "train_flops") {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "--x train_flops: {} has no train_flops column (its runs were made by a membench \
             that did not record training FLOPs)",
            opts.results.join("runs.csv").display()
        )));
    }
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
    let selection = selection_of(task_rows(), opts.selection);
    let spec = Spec {
        task,
        metric,
        selection,
        tuning: None,
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

/// eval_len and depth when eval.csv has them; state_size, param_count and train_flops when they
/// vary between groups; every swept task setting with two or more numeric values (e.g. the
/// number of key-value pairs).
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
    // A plot puts each group at its median x, so an axis is drawn when those differ: training
    // FLOPs also vary between the seeds of one group (tokens per batch do, on tasks of variable
    // length), which alone would give a plot of one x. The column is absent from older results.
    for x in [XAxis::StateSize, XAxis::ParamCount, XAxis::TrainFlops]
        .into_iter()
        .chain(swept_task_keys.into_iter().map(XAxis::Key))
    {
        let distinct: BTreeSet<u64> = groups
            .iter()
            .filter_map(|g| median(&g.values(&x.run_column())))
            .map(f64::to_bits)
            .collect();
        if distinct.len() > 1 {
            axes.push(x);
        }
    }
    axes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::stats::welch;
    use crate::test_support::fresh_dir;

    /// runs.csv with the columns compare reads: lstm reaches seq_acc 1.0, 0.9, 0.95; gru 0.5, 0.6,
    /// 0.4. With `compute`, the compute columns too: lstm reaches the threshold at 100 steps, 10 s
    /// and 3e5 FLOPs and at 300 steps, 20 s and 9e5 FLOPs; every run trains 400 steps, 1.2e6 FLOPs.
    fn synthetic_results(dir: &Path, compute: bool) {
        let header = "run_id,experiment,task,arch,seed,status,steps,param_count,state_size,final_seq_acc,best_seq_acc,\
                      steps_to_threshold,success_metric,success_threshold,selection,membench_version,torch_version";
        let mut text = header.to_string();
        if compute {
            text += ",train_flops,wall_s_to_threshold,flops_to_threshold";
        }
        text += "\n";
        for (arch, accs, reached) in [
            (
                "lstm",
                [1.0, 0.9, 0.95],
                [(100, 10, 3e5), (0, 0, 0.0), (300, 20, 9e5)],
            ),
            ("gru", [0.5, 0.6, 0.4], [(0, 0, 0.0); 3]),
        ] {
            for (seed, (acc, (steps, s, flops))) in accs.iter().zip(reached).enumerate() {
                let cell = |v: String| if steps > 0 { v } else { String::new() };
                let r = cell(steps.to_string());
                text += &format!("{arch}{seed},e,copy,{arch},{seed},done,400,1000,64,{acc},{acc},{r},seq_acc,0.95,last,0.4.0,2.11.0");
                if compute {
                    text += &format!(",1.2e6,{},{}", cell(s.to_string()), cell(flops.to_string()));
                }
                text += "\n";
            }
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("runs.csv"), text).unwrap();
    }

    #[test]
    fn table_counts_successes_and_tests_against_the_best_group() {
        let dir = fresh_dir("compare-table");
        synthetic_results(&dir, true);
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
            candidates: false,
            mad: false,
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
        // lstm: seeds 1.0 and 0.95 cross 0.95 (≥), 0.9 does not; medians of the two that reached:
        // 200 steps, 15 s, 6e5 FLOPs; of all three: 400 steps, 1.2e6 FLOPs.
        let lstm = row("lstm");
        assert!(
            lstm.contains("| 2/3 |")
                && lstm.contains("| 200 (2/3) | 15 / 6.000e5 | 400 / 1.200e6 |")
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
        let header = csv.lines().find(|l| l.starts_with("arch,")).unwrap();
        let cell = |line: &str, col: &str| {
            let i = header.split(',').position(|c| c == col).unwrap();
            line.split(',').nth(i).unwrap().to_string()
        };
        assert_eq!(
            [
                "wall_s_to_threshold_median",
                "flops_to_threshold_median",
                "steps_median",
                "train_flops_median"
            ]
            .map(|c| cell(lstm_csv, c)),
            ["15.0", "600000.0", "400.0", "1200000.0"]
        );
        let gru_csv = csv.lines().find(|l| l.starts_with("gru,")).unwrap();
        assert_eq!(cell(gru_csv, "flops_to_threshold_median"), "");
        // gru against lstm: Welch p from scipy 1.17.1 `ttest_ind([0.5, 0.6, 0.4], [1.0, 0.9, 0.95],
        // equal_var=False)`: p = 0.006457589202672629 (t = -6.9714, ν = 2.94), printed to 4 decimals.
        let gru = row("gru");
        assert!(
            gru.contains("| 0/3 |") && gru.contains("| – (0/3) | – | 400 / 1.200e6 |"),
            "{gru}"
        );
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

    /// Training FLOPs are a default axis when the groups' medians differ, not merely the seeds'.
    #[test]
    fn train_flops_is_a_default_axis_when_groups_differ_in_it() {
        let dir = fresh_dir("compare-axes");
        let axes = |dir: &Path| {
            let runs = read_runs(dir).unwrap();
            default_axes(dir, &runs, &groups(&runs, "copy", "arch").unwrap())
        };
        // `train_flops` of each run, in file order (lstm0..2, gru0..2).
        let with_flops = |flops: [&str; 6]| {
            synthetic_results(&dir, true);
            let path = dir.join("runs.csv");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut lines = text.lines();
            let mut out = format!("{}\n", lines.next().unwrap());
            for (line, f) in lines.zip(flops) {
                out += &format!("{}\n", line.replacen(",1.2e6,", &format!(",{f},"), 1));
            }
            std::fs::write(&path, out).unwrap();
        };
        let lstm_seeds_differ = ["1.1e6", "1.2e6", "1.3e6", "1.2e6", "1.2e6", "1.2e6"];
        with_flops(lstm_seeds_differ);
        assert!(!axes(&dir).contains(&XAxis::TrainFlops));
        with_flops(["1.2e6", "1.2e6", "1.2e6", "2.4e6", "2.4e6", "2.4e6"]);
        assert!(axes(&dir).contains(&XAxis::TrainFlops));
        synthetic_results(&dir, false);
        assert!(!axes(&dir).contains(&XAxis::TrainFlops), "no such column");
        let opts = CompareArgs {
            x: Some(XAxis::TrainFlops),
            all: false,
            candidates: false,
            ..CompareArgs::every_task(dir.clone(), None)
        };
        let e = write_reports(&opts, "membench compare --x train_flops").unwrap_err();
        assert!(
            e.downcast_ref::<crate::input::strict::BadOption>()
                .is_some()
                && format!("{e:#}").contains("no train_flops column"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `report` writes MAD's summary beside the per-task tables; `--mad` writes only it, with
    /// `--where` and `--by` applied; a compare of one task writes none.
    #[test]
    fn mad_summary_is_written_with_every_task_or_alone_with_mad() {
        let dir = fresh_dir("compare-mad");
        let mut runs = vec![];
        for t in 0..6 {
            for (arch, score) in [("lstm", 0.9), ("gru", 0.5)] {
                for seed in 0..2 {
                    runs.push((arch, t, 32, seed, Some(score - 0.1 * seed as f64)));
                }
            }
        }
        mad::mad_like(&dir, &runs);
        let written = write_reports(
            &CompareArgs::every_task(dir.clone(), None),
            "membench report",
        )
        .unwrap();
        let reports = dir.join("reports");
        assert!(
            written.contains(&reports.join("mad_summary.md"))
                && written.contains(&reports.join("mad_in_context_recall_token_acc_best_valid.md")),
            "{written:?}"
        );
        let md = std::fs::read_to_string(reports.join("mad_summary.md")).unwrap();
        assert!(
            md.starts_with("<!-- generated by: membench report -->"),
            "{md}"
        );
        // lstm: 0.9 and 0.8 on every task, so each seed's mean is its score.
        assert!(
            md.contains("| lstm | 0.85 [0.8, 0.9] n=2 |") && md.contains(", median 0.85 n=2 |"),
            "{md}"
        );
        let out = dir.join("only-mad");
        let opts = CompareArgs {
            all: false,
            mad: true,
            filters: vec![("arch".into(), "gru".into())],
            ..CompareArgs::every_task(dir.clone(), Some(out.clone()))
        };
        let written = write_reports(&opts, "membench compare --mad --where arch=gru").unwrap();
        assert_eq!(
            written,
            [out.join("mad_summary.md"), out.join("mad_summary.csv")]
        );
        let csv = std::fs::read_to_string(out.join("mad_summary.csv")).unwrap();
        let rows: Vec<&str> = csv
            .lines()
            .filter(|l| !l.starts_with('#'))
            .skip(1)
            .collect();
        assert!(rows.len() == 1 && rows[0].starts_with("gru,"), "{csv}");
        // --by experiment: each experiment has one task, so no group has a MAD mean.
        let by_experiment = CompareArgs {
            by: "experiment".into(),
            filters: vec![],
            ..opts
        };
        write_reports(&by_experiment, "membench compare --mad --by experiment").unwrap();
        let md = std::fs::read_to_string(out.join("mad_summary.md")).unwrap();
        assert!(
            md.contains("| mad_memorization_lstm | – | – | – | – | – | 0.85 [0.8, 0.9] n=2 | — (1/6 tasks) |"),
            "{md}"
        );
        // One task asked for: no MAD summary.
        std::fs::remove_dir_all(&reports).unwrap();
        let one = CompareArgs {
            task: Some("mad_memorization".into()),
            all: false,
            x: Some(XAxis::EvalLen),
            ..CompareArgs::every_task(dir.clone(), None)
        };
        let written = write_reports(&one, "membench compare --task mad_memorization").unwrap();
        assert!(
            !written.iter().any(|p| p.ends_with("mad_summary.md"))
                && !reports.join("mad_summary.md").exists(),
            "{written:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// `--mad` on results without a MAD task is bad input (exit 2) naming the tasks there are.
    #[test]
    fn mad_without_mad_tasks_names_the_tasks_present() {
        let dir = fresh_dir("compare-no-mad");
        synthetic_results(&dir, false);
        let opts = CompareArgs {
            all: false,
            mad: true,
            ..CompareArgs::every_task(dir.clone(), None)
        };
        let e = write_reports(&opts, "membench compare --mad").unwrap_err();
        assert!(
            e.downcast_ref::<crate::input::strict::BadOption>()
                .is_some(),
            "{e:#}"
        );
        assert_eq!(
            format!("{e:#}"),
            format!(
                "--mad: no runs of MAD's tasks (mad_in_context_recall, mad_fuzzy_in_context_recall, \
                 mad_noisy_in_context_recall, mad_selective_copying, mad_compression, \
                 mad_memorization) in {}; tasks there: copy",
                dir.join("runs.csv").display()
            )
        );
        assert!(!dir.join("reports").exists(), "nothing written");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A runs.csv of a membench without the compute columns: the table is written, their cells
    /// are dashes (Markdown) and empty (CSV).
    #[test]
    fn runs_without_compute_columns_leave_those_cells_empty() {
        let dir = fresh_dir("compare-old");
        synthetic_results(&dir, false);
        write_reports(
            &CompareArgs::every_task(dir.clone(), None),
            "membench report",
        )
        .unwrap();
        let md = std::fs::read_to_string(dir.join("reports/copy_seq_acc_last.md")).unwrap();
        let lstm = md.lines().find(|l| l.starts_with("| lstm |")).unwrap();
        assert!(lstm.contains("| 200 (2/3) | – | 400 / – |"), "{lstm}");
        let csv = std::fs::read_to_string(dir.join("reports/copy_seq_acc_last.csv")).unwrap();
        assert!(csv.contains(",200.0,2,,,400.0,,"), "{csv}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
