//! The summary table of one task and metric, `<stem>.md` and `<stem>.csv`: one row per group with
//! its median and mean and their 95 % intervals, success rate, steps, seconds and training FLOPs
//! to threshold, training budget, sizes and Welch's p against the best group, as rows of one
//! column list rendered by `table`.

use crate::record;
use crate::report::groups::{group_stats, Group, GroupStats};
use crate::report::runs::{mode, pretty};
use crate::report::spec::{header_lines, lower_is_better, metric_bounds, range_text, Spec};
use crate::report::stats;
use crate::report::table::{self, csv_cell, csv_num, fmt, fmt_p, Column};
use crate::report::tune::{chosen_values, Protocol};
use anyhow::Result;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The summary table of one task and metric, `<stem>.md` and `<stem>.csv`: one row per group,
/// from one column list ([`summary_columns`]).
pub(super) fn write_table(
    spec: &Spec,
    groups: &[Group],
    tuning: Option<&Protocol>,
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
    let mut columns = summary_columns(&keys, spec, &within);
    // The chosen candidates right after the group's key columns.
    if let Some(p) = tuning.filter(|p| !p.every_candidate) {
        let at = keys.len();
        columns.splice(at..at, chosen_columns(p));
    }
    let mut md = String::new();
    for l in &header {
        writeln!(md, "<!-- {l} -->")?;
    }
    md.push_str(&table_intro(spec, groups, &within));
    if let Some(t) = &spec.tuning {
        writeln!(md, "{t}.\n")?;
    }
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
    md.push_str(
        "Compute (medians over seeds): *to thr.* over the seeds that reached the threshold, at the \
         first validation over it: steps (how many reached), wall seconds since training started \
         (validation included) and training FLOPs (3 × forward FLOPs per token × tokens trained); \
         *budget* over all seeds: steps and training FLOPs of the whole run.\n\n",
    );
    md
}

/// One column per tuned key: each seed's chosen value, in the group's row order (Markdown
/// `chosen lr`: `0.001, 0.001, 0.003`; CSV `chosen_train.lr`: space-separated).
fn chosen_columns<'a>(p: &Protocol) -> Vec<Column<'a, SummaryRow<'a>>> {
    p.keys()
        .map(|k| {
            let (k1, k2) = (k.to_string(), k.to_string());
            let short = k.rsplit('.').next().unwrap_or(k);
            Column::new(
                format!("chosen {short}"),
                move |r: &SummaryRow| chosen_values(&r.group.rows, &k1).join(", "),
                vec![(
                    format!("chosen_{k}").as_str(),
                    csv_cell(move |r: &SummaryRow| chosen_values(&r.group.rows, &k2).join(" ")),
                )],
            )
        })
        .collect()
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
            "s / FLOPs to thr.",
            move |r: &R| {
                let c = &r.stats.compute;
                match (c.wall_s_to_threshold, c.flops_to_threshold) {
                    (None, None) => "–".into(),
                    (s, f) => format!("{} / {}", or_dash(s.map(fmt)), or_dash(f.map(fmt))),
                }
            },
            vec![
                (
                    "wall_s_to_threshold_median",
                    csv_cell(|r: &R| csv_num(r.stats.compute.wall_s_to_threshold)),
                ),
                (
                    "flops_to_threshold_median",
                    csv_cell(|r: &R| csv_num(r.stats.compute.flops_to_threshold)),
                ),
            ],
        ),
        Column::new(
            "budget: steps / FLOPs",
            move |r: &R| {
                format!(
                    "{} / {}",
                    or_dash(r.stats.compute.steps.map(fmt)),
                    or_dash(r.stats.compute.train_flops.map(fmt))
                )
            },
            vec![
                (
                    "steps_median",
                    csv_cell(|r: &R| csv_num(r.stats.compute.steps)),
                ),
                (
                    "train_flops_median",
                    csv_cell(|r: &R| csv_num(r.stats.compute.train_flops)),
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
