//! `membench reproduce`: rerun a stored run from its resolved config and check that it gives the
//! same numbers.
//!
//! The run's `runs/<id>/config.yaml` is copied into a scratch directory under the system temp dir
//! (never under results/), and this same binary's `run` subcommand trains it there with the stored
//! thread count, exactly as a sweep's child would. Then every metric column of the stored runs.csv
//! row is compared with the new record's, and the stored eval.csv and curve.csv with the new ones,
//! column by column as the stored files have them: a results directory of an older membench lacks
//! columns added since (curve.csv `train_tokens`), which are named, not compared.
//!
//! Equality rule:
//! - CPU runs (`device` = cpu): cells must be identical strings. record/mod.rs writes floats in their
//!   shortest round-trip form, so this is bit-for-bit equality of the numbers.
//! - GPU runs (`device` = cuda*): numbers may differ by |a − b| ≤ 1e-3 · max(|a|, |b|) + 1e-6
//!   ([`GPU_REL_TOL`], [`GPU_ABS_TOL`]), because cuDNN/cuBLAS kernels are not bit-deterministic; the
//!   absolute floor keeps metrics that should be 0 from failing on a 1e-9. Text cells must match.
//!
//! Not compared: timings and where/when the run happened ([`is_unchecked`]). Refused up front: a stored
//! run made with another torch version, or another membench major.minor (either changes numbers).

use crate::record::{self, version_mismatch, RunRecord};
use anyhow::{bail, Context, Result};
use membench_architectures::dense;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const GPU_REL_TOL: f64 = 1e-3;
pub const GPU_ABS_TOL: f64 = 1e-6;

/// runs.csv columns that a rerun may legitimately change: timings, memory, and provenance.
/// Versions are checked separately, before rerunning. `tune_seeds` is the experiment's tuning
/// protocol, not part of the run (nor of its id): a run made before its experiment chose on its
/// first seeds reruns from a saved config without it.
pub fn is_unchecked(column: &str) -> bool {
    record::MEASURED_COLUMNS.contains(&column)
        || record::PROVENANCE_COLUMNS.contains(&column)
        || column == record::TUNE_SEEDS
}

/// curve.csv columns that are timings or memory, not results.
fn curve_unchecked(column: &str) -> bool {
    matches!(column, "wall_s" | "rss_bytes")
}

/// `membench reproduce`: rerun a stored run from its saved config and check its metrics match.
#[derive(clap::Args)]
pub struct ReproduceArgs {
    // A run id, or `TABLE.csv:ROW` (1-based data row of a table written by `compare`).
    pub target: String,
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Keep the scratch directory of the rerun.
    #[arg(long)]
    pub keep: bool,
}

/// Run ids named by the target: the id itself, or the `run_id` / `run_ids` cell of a table row.
fn run_ids(target: &str) -> Result<Vec<String>> {
    let Some((table, row)) = target.rsplit_once(':').filter(|(t, _)| t.ends_with(".csv")) else {
        return Ok(vec![target.to_string()]);
    };
    let row: usize = row
        .parse()
        .ok()
        .filter(|&r| r >= 1)
        .with_context(|| format!("{target}: ROW must be a data row number ≥ 1"))?;
    let text = std::fs::read_to_string(table).with_context(|| format!("reading {table}"))?;
    // Tables start with `# ` comment lines (the command that made them).
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let header: Vec<String> = r.headers()?.iter().map(String::from).collect();
    let rec = r
        .records()
        .nth(row - 1)
        .with_context(|| format!("{table}: no data row {row}"))??;
    let cell = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .and_then(|i| rec.get(i))
            .map(String::from)
    };
    let ids = cell("run_id")
        .or_else(|| cell("run_ids"))
        .with_context(|| format!("{table}: no run_id or run_ids column"))?;
    let ids: Vec<String> = ids.split_whitespace().map(String::from).collect();
    if ids.is_empty() {
        bail!("{table} row {row}: empty run id");
    }
    Ok(ids)
}

fn same(a: &str, b: &str, gpu: bool) -> bool {
    if a == b {
        return true;
    }
    if !gpu {
        return false;
    }
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => (x - y).abs() <= GPU_REL_TOL * x.abs().max(y.abs()) + GPU_ABS_TOL,
        _ => false,
    }
}

fn read_table(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = r.headers()?.iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.map(|r| r.iter().map(String::from).collect()))
        .collect::<Result<_, _>>()?;
    Ok((header, rows))
}

/// How a rerun's per-run CSV file compares with the stored one.
#[derive(Debug, PartialEq)]
struct FileDiff {
    /// `file:row:column (stored vs new)` per differing cell (row 1 = first data row), or one
    /// entry for a stored column the rerun lacks or for a different row count.
    differing: Vec<String>,
    /// Columns of the rerun that the stored file lacks (it was written by an older membench,
    /// e.g. curve.csv before `train_tokens`): not compared.
    added: Vec<String>,
}

/// Compares the columns the stored file has, by name, with the rerun's; `skip` names columns
/// that may differ (timings).
fn diff_files(
    name: &str,
    stored: &Path,
    new: &Path,
    gpu: bool,
    skip: fn(&str) -> bool,
) -> Result<FileDiff> {
    let (h1, r1) = read_table(stored)?;
    let (h2, r2) = read_table(new)?;
    let added = h2.iter().filter(|c| !h1.contains(c)).cloned().collect();
    let mut differing: Vec<String> = h1
        .iter()
        .filter(|c| !h2.contains(c))
        .map(|c| format!("{name}:{c} (not in the rerun)"))
        .collect();
    if r1.len() != r2.len() {
        differing.push(format!(
            "{name}:rows ({} stored, {} new)",
            r1.len(),
            r2.len()
        ));
        return Ok(FileDiff { differing, added });
    }
    // (column, its index in the stored file, in the rerun's)
    let compared: Vec<(&String, usize, usize)> = h1
        .iter()
        .enumerate()
        .filter(|(_, c)| !skip(c))
        .filter_map(|(i, c)| h2.iter().position(|h| h == c).map(|j| (c, i, j)))
        .collect();
    for (row, (a, b)) in r1.iter().zip(&r2).enumerate() {
        for &(col, i, j) in &compared {
            let (x, y) = (&a[i], &b[j]);
            if !same(x, y, gpu) {
                differing.push(format!("{name}:{}:{col} ({x} vs {y})", row + 1));
            }
        }
    }
    Ok(FileDiff { differing, added })
}

pub fn reproduce(opts: &ReproduceArgs) -> Result<()> {
    // A target that names nothing is bad input (exit 2): exit 1 means "not reproduced".
    let ids = run_ids(&opts.target).map_err(crate::input::strict::bad_option)?;
    let runs = crate::report::runs::read_runs(&opts.results)?;
    let mut failed = vec![];
    for id in &ids {
        let row = runs
            .rows
            .iter()
            .rev()
            .find(|r| r.get("run_id") == Some(id))
            .with_context(|| {
                format!(
                    "run {id}: not in {}",
                    opts.results.join("runs.csv").display()
                )
            })
            .map_err(crate::input::strict::bad_option)?;
        let differing = reproduce_one(id, row, &runs.header, opts)?;
        if !differing.is_empty() {
            failed.push(format!("{id}: {}", differing.join(", ")));
        }
    }
    if !failed.is_empty() {
        bail!("not reproduced; differing columns: {}", failed.join("; "));
    }
    println!("reproduced: {}", ids.join(", "));
    Ok(())
}

/// Why a CPU rerun may differ although it ran the stored row's GEMM path: another vector ISA
/// (libtorch and its MKL pick their float32 kernels by it, and so group sums differently) or
/// another CPU model, or a row that does not say which CPU it ran on (before 0.4.2); None on the
/// same kind of CPU.
fn other_cpu(
    stored: &BTreeMap<String, String>,
    rerun: &BTreeMap<String, String>,
) -> Option<String> {
    let get = |row: &BTreeMap<String, String>, k: &str| row.get(k).cloned().unwrap_or_default();
    let (isa, cpu) = (get(stored, "cpu_isa"), get(stored, "cpu"));
    let (isa2, cpu2) = (get(rerun, "cpu_isa"), get(rerun, "cpu"));
    if isa.is_empty() {
        return Some(format!(
            "(note: the stored row does not name its CPU (made before membench 0.4.2); rerun on a \
             {isa2} CPU ({cpu2}): on another kind of CPU than the row's, libtorch picks other \
             float32 kernels, so sums may be grouped differently)"
        ));
    }
    if isa == isa2 && cpu == cpu2 {
        return None;
    }
    Some(format!(
        "(note: stored on a {isa} CPU ({cpu}), rerun on a {isa2} CPU ({cpu2}): libtorch picks its \
         float32 kernels by the CPU, so sums may be grouped differently)"
    ))
}

/// The GEMM path a CPU rerun of `stored` must take: the row's own (see [`record::gemm_path_of`]).
/// Refused (exit 2, with the reason) where this process cannot take it: oneDNN on a CPU whose
/// probe failed, or with `MEMBENCH_GEMM=libtorch` set. None for a GPU row.
fn gemm_for_rerun(id: &str, stored: &BTreeMap<String, String>) -> Result<Option<dense::GemmPath>> {
    let name = record::gemm_path_of(stored);
    if name.is_empty() {
        return Ok(None);
    }
    let bad = |why: String| {
        crate::input::strict::bad_option(anyhow::anyhow!("run {id}: refusing to reproduce: {why}"))
    };
    let path = dense::GemmPath::parse(name).ok_or_else(|| {
        bad(format!(
            "runs.csv gemm_path `{name}`: expected onednn or libtorch"
        ))
    })?;
    let here = crate::sys::gemm_choice().map_err(crate::input::strict::bad_option)?;
    if path == dense::GemmPath::Onednn && here.path != path {
        return Err(bad(format!(
            "it was made on the oneDNN GEMM path and this process runs {here}; the libtorch path \
             groups float32 sums differently, so its numbers would differ for that reason alone. \
             Reproduce it on a CPU with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT, without \
             MEMBENCH_GEMM=libtorch"
        )));
    }
    Ok(Some(path))
}

/// Reruns one stored run; returns the names of the columns (and eval/curve cells) that differ.
fn reproduce_one(
    id: &str,
    stored: &BTreeMap<String, String>,
    header: &[String],
    opts: &ReproduceArgs,
) -> Result<Vec<String>> {
    if let Some(why) = version_mismatch(stored) {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!("run {id}: refusing to reproduce: {why}; numbers are only comparable within one torch version and membench minor version")));
    }
    let stored_dir = record::run_dir(&opts.results, id);
    let config_path = stored_dir.join("config.yaml");
    // The saved config must still be the one the id names: an edited file would rerun another run.
    let config = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let hashed = crate::input::config::parse_run_config(&config_path, &config)?.run_id();
    if hashed != id {
        return Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{}: hashes to run id {hashed}, not {id}: the file was changed after the run",
            config_path.display()
        )));
    }
    let threads: i32 = match stored.get("threads").map(String::as_str) {
        None | Some("") => 1,
        Some(t) => t
            .parse()
            .ok()
            .filter(|n| (1..=crate::run::MAX_THREADS).contains(n))
            .with_context(|| {
                format!(
                    "run {id}: runs.csv threads cell `{t}`: expected an integer in 1..={}",
                    crate::run::MAX_THREADS
                )
            })
            .map_err(crate::input::strict::bad_option)?,
    };
    let gemm = gemm_for_rerun(id, stored)?;
    let scratch =
        std::env::temp_dir().join(format!("membench-reproduce-{id}-{}", std::process::id()));
    let dir = record::run_dir(&scratch, id);
    record::write_atomic(&dir.join("config.yaml"), config.as_bytes())?;
    let exe = std::env::current_exe().context("locating the membench binary")?;
    eprintln!(
        "reproduce: rerunning {id} with {threads} thread(s) in {}",
        dir.display()
    );
    let log = std::fs::File::create(dir.join("run.log"))?;
    let mut cmd = Command::new(&exe);
    if let Some(path) = gemm {
        // The rerun takes the stored row's path; this process's own choice does not matter.
        cmd.env(dense::GEMM_ENV, path.as_str());
    }
    let status = cmd
        .arg("run")
        .arg(dir.join("config.yaml"))
        .arg("--threads")
        .arg(threads.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .context("starting the rerun")?;
    let result = dir.join("result.json");
    let Ok(bytes) = std::fs::read(&result) else {
        let tail = crate::record::log_tail(&dir.join("run.log"), 3);
        if !opts.keep {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        bail!("the rerun of {id} failed ({status}) and wrote no result: {tail}");
    };
    let rec: RunRecord =
        serde_json::from_slice(&bytes).with_context(|| format!("reading {}", result.display()))?;
    let new = rec.cells();
    let gpu = stored.get("device").is_some_and(|d| d.starts_with("cuda"));

    let mut differing = vec![];
    println!(
        "run {id} ({} on {}; {})",
        stored.get("arch").map(String::as_str).unwrap_or("?"),
        stored.get("device").map(String::as_str).unwrap_or("?"),
        if gpu {
            format!("GPU: numbers within rel {GPU_REL_TOL:e} + abs {GPU_ABS_TOL:e}")
        } else {
            format!(
                "CPU: identical cells, GEMM path {}",
                record::gemm_path_of(stored)
            )
        }
    );
    println!("{:<26} {:>24} {:>24}  ", "column", "stored", "rerun");
    for col in header.iter().filter(|c| !is_unchecked(c)) {
        let a = stored.get(col).map(String::as_str).unwrap_or("");
        let b = new.get(col).map(String::as_str).unwrap_or("");
        let ok = same(a, b, gpu);
        println!(
            "{col:<26} {a:>24} {b:>24}  {}",
            if ok { "" } else { "DIFFERS" }
        );
        if !ok {
            differing.push(col.clone());
        }
    }
    for (file, skip) in [
        ("eval.csv", (|_: &str| false) as fn(&str) -> bool),
        ("curve.csv", curve_unchecked),
    ] {
        let FileDiff {
            differing: d,
            added,
        } = diff_files(file, &stored_dir.join(file), &dir.join(file), gpu, skip)?;
        if !added.is_empty() {
            println!(
                "{file}: note: the stored file has no {} column (an older membench wrote it); \
                 its other columns are compared",
                added.join(", ")
            );
        }
        println!(
            "{file}: {}",
            if d.is_empty() {
                "identical".to_string()
            } else {
                format!("{} cell(s) differ", d.len())
            }
        );
        for line in d.iter().take(20) {
            println!("  {line}");
        }
        differing.extend(d);
    }
    if !differing.is_empty() && !gpu {
        differing.extend(other_cpu(stored, &new));
    }
    if opts.keep {
        eprintln!("reproduce: scratch kept at {}", scratch.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    Ok(differing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_tolerance_is_relative_with_an_absolute_floor() {
        assert!(same("0.5", "0.5", false));
        assert!(!same("0.5", "0.50001", false));
        assert!(same("0.5", "0.50001", true));
        assert!(!same("0.5", "0.51", true));
        assert!(same("0", "1e-7", true));
        assert!(!same("lstm", "gru", true));
    }

    /// The stored file's columns are compared by name: a column only the rerun writes (curve.csv
    /// `train_tokens` since it was added) is named, not a difference; one only the stored file
    /// has is.
    #[test]
    fn files_compare_the_stored_columns_and_name_the_rerun_s_new_ones() {
        let dir = crate::test_support::fresh_dir("reproduce-columns");
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let old = file(
            "old.csv",
            "step,wall_s,valid_loss\n6,0.5,0.25\n12,1.0,0.125\n",
        );
        let new = file(
            "new.csv",
            "step,wall_s,train_tokens,valid_loss\n6,0.7,48,0.25\n12,1.3,96,0.125\n",
        );
        let diff =
            |a: &Path, b: &Path| diff_files("curve.csv", a, b, false, curve_unchecked).unwrap();
        assert_eq!(
            diff(&old, &new),
            FileDiff {
                differing: vec![],
                added: vec!["train_tokens".into()],
            }
        );
        let changed = file(
            "changed.csv",
            "step,wall_s,train_tokens,valid_loss\n6,0.7,48,0.25\n12,1.3,96,0.5\n",
        );
        assert_eq!(
            diff(&old, &changed).differing,
            ["curve.csv:2:valid_loss (0.125 vs 0.5)"]
        );
        assert_eq!(
            diff(&new, &old),
            FileDiff {
                differing: vec!["curve.csv:train_tokens (not in the rerun)".into()],
                added: vec![],
            }
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_timings_and_provenance_are_unchecked() {
        for c in [
            "wall_s",
            "wall_s_to_threshold",
            "train_tokens_per_s",
            "step_ms_median",
            "peak_rss_bytes",
            "host",
            "started_at",
            "tune_seeds",
        ] {
            assert!(is_unchecked(c), "{c}");
        }
        for c in [
            "final_seq_acc",
            "best_loss",
            "steps",
            "best_step",
            "steps_to_threshold",
            "train_tokens",
            "train_flops",
            "flops_to_threshold",
            "param_count",
            "state_size",
            "status",
            "seed",
            "threads",
            "device",
        ] {
            assert!(!is_unchecked(c), "{c}");
        }
    }
}
