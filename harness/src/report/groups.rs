//! Groups of runs, each all seeds of one configuration of a task (`--by`, every swept key that
//! varies, and the experiment where only it tells runs apart), and a group's numbers over its seeds
//! (`GroupStats`: the metric's summary, success rate, steps to threshold, compute, sizes).

use crate::report::runs::{num, pretty, Row, Runs};
use crate::report::spec::lower_is_better;
use crate::report::stats::{self, Summary};
use anyhow::Result;
use std::collections::{BTreeMap, BTreeSet};

/// The runs of one group (all seeds of one configuration).
pub(super) struct Group {
    /// (column, cell) pairs that define it: `by` first, then swept keys.
    pub(super) key: Vec<(String, String)>,
    pub(super) rows: Vec<Row>,
}

impl Group {
    pub(super) fn label(&self) -> String {
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
    pub(super) fn values(&self, col: &str) -> Vec<f64> {
        self.rows.iter().filter_map(|r| num(r, col)).collect()
    }
}

/// `--by` names a runs.csv column, or it is bad input.
pub(super) fn check_by(runs: &Runs, by: &str) -> Result<()> {
    if !runs.header.iter().any(|h| h == by) {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "--by {by}: no such column in runs.csv (columns: {})",
            runs.header.join(", ")
        )));
    }
    Ok(())
}

pub(super) fn groups(runs: &Runs, task: &str, by: &str) -> Result<Vec<Group>> {
    check_by(runs, by)?;
    let task_rows: Vec<&Row> = runs.of_task(task);
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
    Ok(group_by(task_rows, &keys))
}

/// `rows` grouped by their cells of `keys` (an absent cell is empty), in key order.
pub(super) fn group_by<'a>(rows: impl IntoIterator<Item = &'a Row>, keys: &[String]) -> Vec<Group> {
    let mut map: BTreeMap<Vec<(String, String)>, Vec<Row>> = BTreeMap::new();
    for r in rows {
        let key = keys
            .iter()
            .map(|k| (k.clone(), r.get(k).cloned().unwrap_or_default()))
            .collect();
        map.entry(key).or_default().push(r.clone());
    }
    map.into_iter()
        .map(|(key, rows)| Group { key, rows })
        .collect()
}

/// One table row's numbers.
pub(super) struct GroupStats {
    pub(super) summary: Summary,
    pub(super) runs: usize,
    pub(super) not_done: usize,
    pub(super) success: Option<(usize, usize)>,
    pub(super) steps_to_threshold: Option<(f64, usize)>,
    pub(super) compute: Compute,
    pub(super) param_count: Option<f64>,
    pub(super) state_size: Option<f64>,
    pub(super) welch_p: Option<f64>,
    pub(super) best: bool,
}

pub(super) fn median(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| stats::median(xs))
}

/// What a group's training cost, so families can be compared at equal compute and not only at
/// equal steps: medians over the runs that reached the threshold of the wall seconds and training
/// FLOPs it took them (runs.csv `wall_s_to_threshold`, `flops_to_threshold`), and over all runs
/// of the whole run's steps and training FLOPs (the budget). None where no run has the value
/// (rows of a membench without the column, or no run reached the threshold).
pub(super) struct Compute {
    pub(super) wall_s_to_threshold: Option<f64>,
    pub(super) flops_to_threshold: Option<f64>,
    pub(super) steps: Option<f64>,
    pub(super) train_flops: Option<f64>,
}

impl Compute {
    fn of(g: &Group) -> Self {
        let m = |col: &str| median(&g.values(col));
        Compute {
            wall_s_to_threshold: m("wall_s_to_threshold"),
            flops_to_threshold: m("flops_to_threshold"),
            steps: m("steps"),
            train_flops: m("train_flops"),
        }
    }
}

pub(super) fn group_stats(g: &Group, col: &str, prefix: &str, range: (f64, f64)) -> GroupStats {
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
        compute: Compute::of(g),
        param_count: median(&g.values("param_count")),
        state_size: median(&g.values("state_size")),
        welch_p: None,
        best: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
