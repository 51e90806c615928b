//! Scale-out on a Slurm cluster: one job array over `membench sweep --shard i/N`, then one
//! dependent job that merges the shards and names any run of the grid that did not finish.
//!
//! Layout under `<out>`:
//! ```text
//! <out>/slurm/sweep.sbatch        the array script: task i runs `membench sweep FILE --shard i/N`
//! <out>/slurm/merge.sbatch        the merge script, submitted with --dependency=afterany:<array>
//! <out>/slurm/shard_count         N, so a resubmission cannot silently re-shard the grid
//! <out>/slurm/<array>_<i>.out     each task's stdout and stderr; merge-<job>.out for the merge
//! <out>/shards/<i>/               task i's own results directory (runs.csv, runs/<run_id>/...)
//! <out>/runs.csv, <out>/runs/     the merged results
//! ```
//! Each task writes its own shard directory rather than all tasks sharing `<out>`: the tasks run
//! on different nodes, and the sweep's results-dir lock and runs.csv appends rely on `flock` and
//! O_APPEND, which NFS does not make atomic across clients. Per-shard directories need no
//! cross-node coordination at all, and the one process that writes `<out>` is the merge job.
//!
//! Both scripts are idempotent: submitting them again after failures or cancellations runs only
//! what is missing, because each task's sweep resumes from its shard's runs.csv, and the merge
//! is recomputed from all shards.

use crate::record;
use crate::run::train::is_final;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `membench slurm`: write (and with --submit, submit) a Slurm job array sweeping one shard per
/// task, plus a merge job; with --check, only say which runs are not finished.
#[derive(clap::Args)]
pub struct SlurmArgs {
    pub file: PathBuf,
    /// Array tasks, one shard of the grid each (at most the number of runs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub array: u32,
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit per task, in Slurm's format (e.g. 2:00:00).
    #[arg(long)]
    pub time: Option<String>,
    /// Cores per task; the task's sweep runs cpus-per-task / threads runs at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub cpus_per_task: u32,
    /// Memory per task, in Slurm's format (e.g. 8G).
    #[arg(long)]
    pub mem: Option<String>,
    /// GPUs per task.
    #[arg(long, default_value_t = 0)]
    pub gpus: usize,
    /// LibTorch intra-op threads per run.
    #[arg(long, default_value_t = 1, value_parser = crate::run::thread_count())]
    pub threads: i32,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Submit with sbatch and print the job ids (default: only write the scripts).
    #[arg(long)]
    pub submit: bool,
    /// Write nothing; list the runs of FILE not finished in OUT/runs.csv (exit 1 if any).
    #[arg(long, conflicts_with = "submit")]
    pub check: bool,
}

/// `membench slurm`: the check, or the scripts (submitted with --submit); prints the report.
pub fn slurm(args: &SlurmArgs) -> Result<()> {
    let report = if args.check {
        check(&args.file, &args.out)?
    } else {
        write_scripts(args)?
    };
    print!("{report}");
    Ok(())
}

use crate::input::strict::bad_option as bad;

/// Reads and expands the grid; any mistake is bad input (file:line:col, from `grid::load`).
fn expand_grid(file: &Path) -> Result<Vec<crate::input::config::RunConfig>> {
    let runs = crate::input::grid::load(file)?;
    if runs.is_empty() {
        return Err(bad(anyhow::anyhow!(
            "{}: the grid has no runs",
            file.display()
        )));
    }
    Ok(runs)
}

/// Quotes `s` for bash: single quotes, each embedded `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Checks a value passed through to an `#SBATCH` line: Slurm splits those lines on whitespace and
/// expands `%` patterns, so neither may appear.
fn directive_value(name: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || v.chars()
            .any(|c| c.is_whitespace() || c == '%' || c.is_control())
    {
        return Err(bad(anyhow::anyhow!(
            "--{name} {v:?}: must be non-empty, without spaces or '%'"
        )));
    }
    Ok(())
}

/// The absolute paths and sizes both scripts are written from.
struct Plan {
    exe: PathBuf,
    file: PathBuf,
    out: PathBuf,
    shards: usize,
    jobs: usize,
    runs: usize,
}

fn path_str(p: &Path) -> Result<&str> {
    let s = p
        .to_str()
        .with_context(|| format!("{}: not UTF-8", p.display()))
        .map_err(bad)?;
    directive_value("out", s).map_err(|_| {
        bad(anyhow::anyhow!(
            "{s}: paths in sbatch scripts must not contain spaces or '%'"
        ))
    })?;
    Ok(s)
}

fn common_directives(o: &SlurmArgs, name: &str, cpus: usize) -> String {
    let mut s = format!("#SBATCH --job-name={name}\n#SBATCH --cpus-per-task={cpus}\n");
    for (k, v) in [("partition", &o.partition), ("time", &o.time)] {
        if let Some(v) = v {
            let _ = writeln!(s, "#SBATCH --{k}={v}");
        }
    }
    s
}

/// The job-array script: task `i` sweeps shard `i` of `N` into `<out>/shards/<i>`.
fn sweep_script(o: &SlurmArgs, p: &Plan) -> Result<String> {
    let (exe, file, out) = (path_str(&p.exe)?, path_str(&p.file)?, path_str(&p.out)?);
    let mut s = String::from("#!/bin/bash\n");
    let _ = writeln!(
        s,
        "# Written by `membench slurm`: task i of {} sweeps shard i of the grid {file}",
        p.shards
    );
    s.push_str("# into its own results directory. Submitting again runs only what is missing.\n");
    s.push_str(&common_directives(
        o,
        "membench-sweep",
        o.cpus_per_task as usize,
    ));
    let _ = writeln!(s, "#SBATCH --array=0-{}", p.shards - 1);
    let _ = writeln!(s, "#SBATCH --output={out}/slurm/%A_%a.out");
    if let Some(m) = &o.mem {
        let _ = writeln!(s, "#SBATCH --mem={m}");
    }
    if o.gpus > 0 {
        let _ = writeln!(s, "#SBATCH --gres=gpu:{}", o.gpus);
    }
    s.push_str("set -euo pipefail\n");
    let _ = writeln!(
        s,
        "exec {} sweep {} --shard \"$SLURM_ARRAY_TASK_ID/{}\" --jobs {} --threads {} --out {}\"/shards/$SLURM_ARRAY_TASK_ID\"",
        sh_quote(exe),
        sh_quote(file),
        p.shards,
        p.jobs,
        o.threads,
        sh_quote(out)
    );
    Ok(s)
}

/// The merge script: merge every shard present into `<out>`, then fail naming each run of the grid
/// that is not finished there (`membench slurm --check`).
fn merge_script(o: &SlurmArgs, p: &Plan) -> Result<String> {
    let (exe, file, out) = (path_str(&p.exe)?, path_str(&p.file)?, path_str(&p.out)?);
    let (qexe, qfile, qout) = (sh_quote(exe), sh_quote(file), sh_quote(out));
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(
        "# Written by `membench slurm`: runs after every array task ended (afterany), merges the\n",
    );
    let _ = writeln!(
        s,
        "# shards into {out} and lists the runs of the grid still missing (exit 1 if any)."
    );
    s.push_str(&common_directives(o, "membench-merge", 1));
    let _ = writeln!(s, "#SBATCH --output={out}/slurm/merge-%j.out");
    s.push_str("set -uo pipefail\nshopt -s nullglob\n");
    // A task cancelled before its first run finished leaves no runs.csv; merge only what exists.
    s.push_str("shards=()\n");
    let _ = writeln!(
        s,
        "for d in {qout}/shards/*/; do [[ -f $d/runs.csv ]] && shards+=(\"$d\"); done"
    );
    s.push_str("status=0\n");
    let _ = writeln!(s, "if ((${{#shards[@]}})); then {qexe} merge \"${{shards[@]}}\" --out {qout} || status=$?; fi");
    let _ = writeln!(s, "{qexe} slurm {qfile} --out {qout} --check || status=$?");
    s.push_str("exit $status\n");
    Ok(s)
}

/// Slurm's time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (and UNLIMITED).
fn is_slurm_time(t: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit());
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return true;
    }
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(d), r),
        None => (None, t),
    };
    let fields: Vec<&str> = rest.split(':').collect();
    days.is_none_or(digits) && fields.iter().all(|f| digits(f)) && (1..=3).contains(&fields.len())
}

/// Slurm's memory size: a whole number with an optional K, M, G or T unit.
fn is_slurm_mem(m: &str) -> bool {
    let num = m.trim_end_matches(|c: char| "KMGTkmgt".contains(c));
    m.len() - num.len() <= 1
        && !num.is_empty()
        && num.len() <= 12
        && num.bytes().all(|b| b.is_ascii_digit())
}

/// Writes both scripts under `<out>/slurm/`, and with `submit` submits them; returns a report for
/// stdout (job ids, or the commands to submit by hand).
fn write_scripts(o: &SlurmArgs) -> Result<String> {
    crate::record::check_results_dir(&o.out, "--out")?;
    let runs = expand_grid(&o.file)?;
    if o.array == 0 || o.cpus_per_task == 0 || o.threads < 1 {
        return Err(bad(anyhow::anyhow!(
            "--array, --cpus-per-task and --threads must be at least 1"
        )));
    }
    if o.threads as usize > o.cpus_per_task as usize {
        return Err(bad(anyhow::anyhow!(
            "--threads {} exceeds --cpus-per-task {}: each run would have fewer cores than threads",
            o.threads,
            o.cpus_per_task
        )));
    }
    for (k, v) in [
        ("partition", &o.partition),
        ("time", &o.time),
        ("mem", &o.mem),
    ] {
        if let Some(v) = v {
            directive_value(k, v)?;
        }
    }
    if let Some(t) = &o.time {
        if !is_slurm_time(t) {
            return Err(bad(anyhow::anyhow!(
                "--time {t}: expected Slurm's MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
            )));
        }
    }
    if let Some(m) = &o.mem {
        if !is_slurm_mem(m) {
            return Err(bad(anyhow::anyhow!(
                "--mem {m}: expected a whole number with an optional K, M, G or T unit, e.g. 8G"
            )));
        }
    }
    // More tasks than runs would only queue empty shards.
    let shards = (o.array as usize).min(runs.len());
    let jobs = (o.cpus_per_task as usize / o.threads as usize).max(1);
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("locating the membench binary")?;
    let file = o
        .file
        .canonicalize()
        .with_context(|| format!("resolving {}", o.file.display()))?;
    std::fs::create_dir_all(&o.out).with_context(|| format!("creating {}", o.out.display()))?;
    let out = o
        .out
        .canonicalize()
        .with_context(|| format!("resolving {}", o.out.display()))?;
    let plan = Plan {
        exe,
        file,
        out,
        shards,
        jobs,
        runs: runs.len(),
    };
    let (sweep, merge) = (sweep_script(o, &plan)?, merge_script(o, &plan)?);

    // A different N would reassign runs to shards, so a shard directory's resume would no longer
    // cover its runs; refuse rather than redo (or duplicate) finished work.
    let count_path = plan.out.join("slurm").join("shard_count");
    if let Ok(prev) = std::fs::read_to_string(&count_path) {
        if prev.trim() != shards.to_string() {
            return Err(bad(anyhow::anyhow!(
                "{} was sharded {} ways before; resubmit with --array {} or use a fresh --out",
                plan.out.display(),
                prev.trim(),
                prev.trim()
            )));
        }
    }
    let dir = plan.out.join("slurm");
    record::write_atomic(&count_path, format!("{shards}\n").as_bytes())?;
    let (sweep_path, merge_path) = (dir.join("sweep.sbatch"), dir.join("merge.sbatch"));
    record::write_atomic(&sweep_path, sweep.as_bytes())?;
    record::write_atomic(&merge_path, merge.as_bytes())?;

    let mut report = format!(
        "wrote {} ({} runs in {shards} tasks, {jobs} at a time per task) and {}\n",
        sweep_path.display(),
        plan.runs,
        merge_path.display()
    );
    if !o.submit {
        let _ = writeln!(
            report,
            "submit with:\n  id=$(sbatch --parsable {})\n  sbatch --dependency=afterany:$id {}",
            sweep_path.display(),
            merge_path.display()
        );
        return Ok(report);
    }
    let array_id = sbatch(&[], &sweep_path)?;
    let merge_id = sbatch(&[format!("--dependency=afterany:{array_id}")], &merge_path)
        .with_context(|| format!("array job {array_id} is queued without its merge job; `scancel {array_id}` or submit {} by hand", merge_path.display()))?;
    let _ = writeln!(report, "array job {array_id}\nmerge job {merge_id}");
    Ok(report)
}

/// Submits `script` with `sbatch --parsable` and returns the job id.
fn sbatch(args: &[String], script: &Path) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .arg(script)
        .output()
        .context("running sbatch (is Slurm installed and on PATH?)")?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // --parsable prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
        bail!("sbatch printed {text:?}, expected a job id");
    }
    Ok(id)
}

/// Compares `<out>/runs.csv` with the grid of `file`: Ok(report) when every run is finished
/// (done or diverged), otherwise an error naming each missing or unfinished run.
pub fn check(file: &Path, out: &Path) -> Result<String> {
    crate::record::check_results_dir(out, "--out")?;
    let runs = expand_grid(file)?;
    // Read-only: the check may run while another process holds the directory's lock.
    let csv = record::RunsCsv::read_only(out)?;
    let rows: HashMap<&str, &str> = csv
        .rows()
        .iter()
        .filter_map(|r| {
            Some((
                r.get("run_id")?.as_str(),
                r.get("status").map_or("", String::as_str),
            ))
        })
        .collect();
    let roles = crate::sweep::follow::roles(&runs, &csv, out);
    let mut missing = String::new();
    let mut n_missing = 0;
    let not_chosen = roles
        .iter()
        .filter(|r| **r == crate::sweep::follow::Role::NotChosen)
        .count();
    for (r, role) in runs.iter().zip(&roles) {
        if *role == crate::sweep::follow::Role::NotChosen {
            continue; // a candidate the tuning seeds did not choose is never run on the others
        }
        let id = r.run_id();
        match rows.get(id.as_str()) {
            Some(s) if is_final(s) => {}
            found => {
                n_missing += 1;
                let why = found.map_or("no row".to_string(), |s| format!("status {s}"));
                let _ = writeln!(
                    missing,
                    "missing: {id} (experiment {}, seed {}: {why})",
                    r.experiment, r.seed
                );
            }
        }
    }
    let expected = runs.len() - not_chosen;
    if n_missing > 0 {
        bail!(
            "{missing}{n_missing} of {expected} runs missing or unfinished in {}; submit again to run them",
            out.display()
        );
    }
    let skipped = if not_chosen > 0 {
        format!(" ({not_chosen} candidates not chosen on their tuning seeds are not made on the other seeds)")
    } else {
        String::new()
    };
    Ok(format!(
        "check: all {expected} runs finished in {}{skipped}\n",
        out.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::fresh_dir;

    fn opts(dir: &Path) -> SlurmArgs {
        SlurmArgs {
            file: dir.join("g.yaml"),
            out: dir.join("out"),
            array: 8,
            partition: Some("main".into()),
            time: Some("1:00:00".into()),
            cpus_per_task: 4,
            mem: None,
            gpus: 1,
            threads: 2,
            submit: false,
            check: false,
        }
    }

    fn grid(dir: &Path, seeds: usize) {
        std::fs::create_dir_all(dir).unwrap();
        let y = format!("experiments:\n  - task: {{name: copy, max_len: 3}}\n    arch: {{name: lstm, hidden_size: 16}}\n    train: {{steps: 20}}\n    seeds: {seeds}\n");
        std::fs::write(dir.join("g.yaml"), y).unwrap();
    }

    #[test]
    fn scripts_shard_the_grid_and_clamp_tasks_to_runs() {
        let d = fresh_dir("slurm-scripts");
        grid(&d, 3);
        let report = write_scripts(&opts(&d)).unwrap();
        assert!(
            report.contains("3 runs in 3 tasks, 2 at a time"),
            "{report}"
        );
        let out = d.join("out").canonicalize().unwrap();
        let s = std::fs::read_to_string(out.join("slurm/sweep.sbatch")).unwrap();
        assert!(s.contains("#SBATCH --array=0-2\n"), "{s}");
        assert!(
            s.contains("#SBATCH --gres=gpu:1\n#SBATCH") || s.contains("#SBATCH --gres=gpu:1\n"),
            "{s}"
        );
        assert!(
            s.contains("--shard \"$SLURM_ARRAY_TASK_ID/3\" --jobs 2 --threads 2"),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "'{}'\"/shards/$SLURM_ARRAY_TASK_ID\"",
                out.display()
            )),
            "{s}"
        );
        let m = std::fs::read_to_string(out.join("slurm/merge.sbatch")).unwrap();
        assert!(m.contains(" merge \"${shards[@]}\" --out "), "{m}");
        assert!(m.contains(" --check || status=$?"), "{m}");
        // Same N again is fine (idempotent); a different N is refused.
        write_scripts(&opts(&d)).unwrap();
        let e = write_scripts(&SlurmArgs {
            array: 2,
            ..opts(&d)
        })
        .unwrap_err();
        assert!(
            e.is::<crate::input::strict::BadOption>() && format!("{e:#}").contains("--array 3"),
            "{e:#}"
        );
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn bad_grid_or_options_write_nothing() {
        let d = fresh_dir("slurm-bad");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("g.yaml"), "experiments:\n  - task: {name: copy, max_len: 3}\n    arch: {name: lstm, hidden_sise: 16}\n").unwrap();
        let e = write_scripts(&opts(&d)).unwrap_err();
        assert!(e.is::<crate::input::strict::BadInput>(), "{e:#}");
        assert!(!d.join("out").exists());
        grid(&d, 1);
        let e = write_scripts(&SlurmArgs {
            time: Some("1 hour".into()),
            ..opts(&d)
        })
        .unwrap_err();
        assert!(
            e.is::<crate::input::strict::BadOption>() && format!("{e}").contains("--time"),
            "{e:#}"
        );
        assert!(!d.join("out").exists());
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn time_and_memory_follow_slurm_formats() {
        for t in [
            "30",
            "30:00",
            "2:00:00",
            "1-12",
            "1-12:30",
            "1-12:30:00",
            "UNLIMITED",
        ] {
            assert!(is_slurm_time(t), "{t}");
        }
        for t in ["abc", "", "1:2:3:4", "-5", "1-", "2h", "1.5"] {
            assert!(!is_slurm_time(t), "{t}");
        }
        for m in ["8G", "512M", "4000", "1t"] {
            assert!(is_slurm_mem(m), "{m}");
        }
        for m in ["lots", "", "8GB", "G", "1.5G", "-1G"] {
            assert!(!is_slurm_mem(m), "{m}");
        }
    }

    #[test]
    fn check_names_every_missing_run() {
        let d = fresh_dir("slurm-check");
        grid(&d, 2);
        std::fs::create_dir_all(d.join("out")).unwrap();
        let e = format!(
            "{:#}",
            check(&d.join("g.yaml"), &d.join("out")).unwrap_err()
        );
        assert_eq!(e.matches("missing: ").count(), 2, "{e}");
        assert!(e.contains("2 of 2 runs missing"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn quoting_survives_single_quotes() {
        assert_eq!(sh_quote("a'b"), r"'a'\''b'");
    }
}
