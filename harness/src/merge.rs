//! `membench merge DIR... --out DIR`: the union of shard (or machine) results directories.
//!
//! Rows are taken by run id: a run present in several inputs is kept once. Two rows of one run
//! conflict when their deterministic columns differ (status, steps, model size, test metrics);
//! timings, host and start time may differ between machines and never conflict. On a conflict the
//! first final row (done/diverged) in argument order is kept, every conflict is listed, and the
//! command fails (exit 1) after writing, so a script notices. A run's directory comes from the
//! input whose row was kept.

use crate::record::{self, RunsCsv};
use crate::runner::is_final;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Columns that legitimately differ between two executions of the same run.
fn varies(column: &str) -> bool {
    matches!(
        column,
        "reason"
            | "wall_s"
            | "train_samples_per_s"
            | "train_tokens_per_s"
            | "step_ms_median"
            | "peak_rss_bytes"
            | "peak_device_bytes"
            | "mfu"
            | "host"
            | "started_at"
            | "device"
            | "threads"
            | "membench_version"
            | "git_commit"
            | "tch_version"
            | "torch_version"
    )
}

fn conflicting_columns(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).filter(|k| !varies(k)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k).map_or("", String::as_str) != b.get(*k).map_or("", String::as_str))
        .cloned()
        .collect()
}

pub fn merge(inputs: &[PathBuf], out: &Path) -> Result<()> {
    if inputs.is_empty() {
        bail!("merge: no input directories");
    }
    let out_canon = std::fs::canonicalize(out).ok();
    let mut kept: BTreeMap<String, (BTreeMap<String, String>, usize)> = BTreeMap::new();
    let mut order = vec![];
    let mut conflicts = vec![];
    for (i, dir) in inputs.iter().enumerate() {
        if !dir.join("runs.csv").is_file() {
            bail!("{} has no runs.csv", dir.display());
        }
        if out_canon.is_some() && std::fs::canonicalize(dir).ok() == out_canon {
            bail!("{} is both an input and --out", dir.display());
        }
        let csv = RunsCsv::read_only(dir)?;
        for row in csv.rows() {
            let id = row.get("run_id").cloned().unwrap_or_default();
            match kept.get_mut(&id) {
                None => {
                    order.push(id.clone());
                    kept.insert(id, (row.clone(), i));
                }
                Some((first, from)) => {
                    let cols = conflicting_columns(first, row);
                    let (s1, s2) = (
                        first.get("status").cloned().unwrap_or_default(),
                        row.get("status").cloned().unwrap_or_default(),
                    );
                    if !is_final(&s1) && is_final(&s2) {
                        // A retried run finished elsewhere: the finished row wins, no conflict.
                        *first = row.clone();
                        *from = i;
                    } else if is_final(&s1) && is_final(&s2) && !cols.is_empty() {
                        conflicts.push(format!(
                            "run {id}: {} and {} differ in {}; kept the first",
                            inputs[*from].display(),
                            dir.display(),
                            cols.join(", ")
                        ));
                    }
                }
            }
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = crate::lock::DirLock::acquire(out)?;
    let mut csv = RunsCsv::open(out)?;
    for id in &order {
        let (row, from) = &kept[id];
        let src = record::run_dir(&inputs[*from], id);
        if src.is_dir() {
            record::copy_run_dir(&src, &record::run_dir(out, id))?;
        }
        csv.upsert_row(row.clone())?;
    }
    eprintln!(
        "merge: {} runs from {} directories into {}",
        order.len(),
        inputs.len(),
        out.display()
    );
    if !conflicts.is_empty() {
        for c in &conflicts {
            eprintln!("merge: conflict: {c}");
        }
        bail!(
            "{} conflicting duplicate run(s); see above",
            conflicts.len()
        );
    }
    Ok(())
}
