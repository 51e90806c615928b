//! `membench merge DIR... --out DIR`: the union of shard (or machine) results directories.
//!
//! Rows are taken by run id: a run present in several inputs is kept once. `--out`'s own rows
//! count as the first input, so a merge never overwrites what it already holds. A final row
//! (done/diverged) always wins over a failed or timed-out one, wherever either is. Two final rows
//! of one run conflict when their deterministic columns differ (status, steps, model size, test
//! metrics); timings, host and start time may differ between machines and never conflict. On a
//! conflict the first row (`--out`'s, else the first input's) is kept, every conflict is listed,
//! and the command fails (exit 1) after writing, so a script notices. A run's directory comes from
//! the input whose row was kept. Finished runs of two membench minor versions or two torch versions
//! are refused (exit 2) before anything is written, as `sweep` refuses to add to them.

use crate::record::{self, RunsCsv};
use crate::run::train::is_final;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Columns that legitimately differ between two executions of the same run: measurements,
/// provenance, and where and why it ran (device, threads, the reason of a failure).
fn varies(column: &str) -> bool {
    record::MEASURED_COLUMNS.contains(&column)
        || record::PROVENANCE_COLUMNS.contains(&column)
        || matches!(column, "reason" | "device" | "threads")
}

/// The deterministic columns in which two rows of one run differ. A row holds every column of its
/// file, so only columns both files have are compared: one an older membench did not write
/// (`train_flops`, say) is no conflict.
fn conflicting_columns(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> Vec<String> {
    a.iter()
        .filter(|(k, v)| !varies(k) && b.get(*k).is_some_and(|w| w != *v))
        .map(|(k, _)| k.clone())
        .collect()
}

/// What a merge will do, decided before anything is written.
struct Plan {
    /// Rows to write into `--out`, each with the input directory its run directory comes from
    /// (`--out`'s own rows are already there).
    take: Vec<(BTreeMap<String, String>, PathBuf)>,
    runs: usize,
    conflicts: Vec<String>,
}

/// The version of a row whose numbers it can be compared with: membench minor, torch and, on
/// the CPU, the GEMM path.
fn version(row: &BTreeMap<String, String>) -> String {
    let get = |k: &str| row.get(k).map_or("", String::as_str);
    let gemm = match record::gemm_path_of(row) {
        "" => String::new(),
        path => format!(" / gemm {path}"),
    };
    format!(
        "membench {} / torch {}{gemm}",
        crate::record::minor(get("membench_version")),
        get("torch_version")
    )
}

/// Merges `sources` in order (the first is `--out` itself): a final row (done/diverged) wins over
/// a non-final one wherever it is; otherwise the first row of a run is kept, and two final rows
/// that differ in a deterministic column are a conflict. Finished runs of two versions are refused.
fn plan(sources: &[(PathBuf, RunsCsv)]) -> Result<Plan> {
    // run id → (row, source, line)
    let mut kept: BTreeMap<String, (BTreeMap<String, String>, usize, u64)> = BTreeMap::new();
    let mut order = vec![];
    let mut conflicts = vec![];
    let mut first_version: Option<(String, String)> = None;
    for (i, (_, csv)) in sources.iter().enumerate() {
        for (j, row) in csv.rows().iter().enumerate() {
            let at = format!("{}:{}", csv.path().display(), csv.line_of(j));
            let id = row.get("run_id").cloned().unwrap_or_default();
            let status = row.get("status").map_or("", String::as_str);
            if is_final(status) {
                let v = version(row);
                match &first_version {
                    None => first_version = Some((v, format!("{at} (run {id})"))),
                    Some((v0, where0)) if *v0 != v => {
                        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                            "{at}: run {id} was made by {v}, but {where0} by {v0}: their numbers are \
                             not comparable, so merge will not put them in one results directory \
                             (merge each version into its own --out)"
                        )));
                    }
                    Some(_) => {}
                }
            }
            match kept.get_mut(&id) {
                None => {
                    order.push(id.clone());
                    kept.insert(id, (row.clone(), i, csv.line_of(j)));
                }
                Some((first, from, line)) => {
                    let s1 = first.get("status").map_or("", String::as_str);
                    if !is_final(s1) && is_final(status) {
                        // A retried run finished elsewhere: the finished row wins, no conflict.
                        (*first, *from, *line) = (row.clone(), i, csv.line_of(j));
                    } else if is_final(s1) && is_final(status) {
                        let cols = conflicting_columns(first, row);
                        if !cols.is_empty() {
                            conflicts.push(format!(
                                "run {id}: {}:{line} and {at} differ in {}; kept the first",
                                sources[*from].1.path().display(),
                                cols.join(", ")
                            ));
                        }
                    }
                }
            }
        }
    }
    let runs = order.len();
    let take = order
        .into_iter()
        .filter_map(|id| {
            let (row, from, _) = kept.remove(&id)?;
            (from != 0).then(|| (row, sources[from].0.clone()))
        })
        .collect();
    Ok(Plan {
        take,
        runs,
        conflicts,
    })
}

/// `membench merge`: the union of results directories (e.g. shards) into --out, each run once.
#[derive(clap::Args)]
pub struct MergeArgs {
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn merge(args: &MergeArgs) -> Result<()> {
    let (inputs, out) = (args.dirs.as_slice(), args.out.as_path());
    if inputs.is_empty() {
        bail!("merge: no input directories");
    }
    let out_canon = std::fs::canonicalize(out).ok();
    let mut sources = vec![(out.to_path_buf(), RunsCsv::read_only(out)?)];
    for dir in inputs {
        if !dir.join("runs.csv").is_file() {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "{} has no runs.csv",
                dir.display()
            )));
        }
        if out_canon.is_some() && std::fs::canonicalize(dir).ok() == out_canon {
            return Err(crate::input::strict::bad_option(anyhow::anyhow!(
                "{} is both an input and --out",
                dir.display()
            )));
        }
        sources.push((dir.clone(), RunsCsv::read_only(dir)?));
    }
    // Checked before anything is created or locked, so a refused merge leaves --out as it was.
    plan(&sources)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let _lock = crate::sweep::lock::DirLock::acquire(out)?;
    // Planned again from --out as it is under the lock.
    sources[0].1 = RunsCsv::open(out)?;
    let plan = plan(&sources)?;
    let mut csv = sources.swap_remove(0).1;
    for (row, from) in &plan.take {
        let id = row.get("run_id").map_or("", String::as_str);
        let src = record::run_dir(from, id);
        if src.is_dir() {
            record::copy_run_dir(&src, &record::run_dir(out, id))?;
        }
        csv.upsert_row(row.clone())?;
    }
    eprintln!(
        "merge: {} runs from {} directories into {} ({} rows written)",
        plan.runs,
        inputs.len(),
        out.display(),
        plan.take.len()
    );
    if !plan.conflicts.is_empty() {
        for c in &plan.conflicts {
            eprintln!("merge: conflict: {c}");
        }
        bail!(
            "{} conflicting duplicate run(s); see above",
            plan.conflicts.len()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cells: &[(&str, &str)]) -> BTreeMap<String, String> {
        cells
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn only_deterministic_columns_of_both_files_conflict() {
        let old = row(&[("final_loss", "0.5"), ("steps", "12"), ("wall_s", "3.0")]);
        let new = row(&[
            ("final_loss", "0.5"),
            ("steps", "12"),
            ("wall_s", "4.0"),
            ("train_flops", "6000.0"),
        ]);
        assert!(conflicting_columns(&old, &new).is_empty());
        assert!(conflicting_columns(&new, &old).is_empty());
        let other = row(&[
            ("final_loss", "0.25"),
            ("steps", "12"),
            ("train_flops", "7.0"),
        ]);
        assert_eq!(
            conflicting_columns(&new, &other),
            ["final_loss", "train_flops"]
        );
    }
}
