//! `membench slurm --submit` against a real Slurm (scripts/slurm-up.sh brings up a single-node
//! cluster; CI runs it before `make test`). Without `sbatch` on PATH the tests skip, except
//! under CI, where a missing Slurm is a broken set-up and fails.
//!
//! 1. A job array of 2 tasks over a 5-run grid, then the merge job, gives a runs.csv with every
//!    run exactly once, done, and metrics equal to a local `membench sweep` of the same grid.
//! 2. Cancelling one array task while it runs makes the merge job fail naming the runs it lost;
//!    submitting again completes exactly those.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const MEMBENCH: &str = env!("CARGO_BIN_EXE_membench");

/// True when Slurm is usable; false (after saying so) when the test should skip.
fn have_slurm() -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("sbatch").is_file()));
    if !found {
        assert!(std::env::var_os("CI").is_none(), "sbatch is not on PATH under CI: .ci/run must call `bash scripts/slurm-up.sh` before `make test`");
        eprintln!("skipped: no slurm");
    }
    found
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("membench-slurm-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A grid of `seeds` tiny LSTM runs on copy, each `steps` steps with two validations.
fn write_grid(dir: &Path, steps: u32, seeds: u32) -> PathBuf {
    let yaml = dir.join("grid.yaml");
    std::fs::write(
        &yaml,
        format!(
            "experiments:\n  - name: tiny\n    task: {{name: copy, bits: 4, min_len: 1, max_len: 3, eval_lengths: [3]}}\n    arch: {{name: lstm, hidden_size: 16}}\n    train: {{steps: {steps}, batch_size: 8, eval_interval: {}}}\n    seeds: {seeds}\n",
            steps / 2
        ),
    )
    .unwrap();
    yaml
}

fn membench(args: &[&str]) -> std::process::Output {
    Command::new(MEMBENCH).args(args).output().unwrap()
}

/// Submits the grid; returns (array job id, merge job id) from the printed report.
fn submit(yaml: &Path, out: &Path) -> (String, String) {
    let o = membench(&[
        "slurm",
        yaml.to_str().unwrap(),
        "--array",
        "2",
        "--submit",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "membench slurm failed: {text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = |what: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(what))
            .unwrap_or_else(|| panic!("no `{what}` in {text}"))
            .trim()
            .to_string()
    };
    (id("array job "), id("merge job "))
}

/// Array job ids (%F) of every job Slurm still holds as pending or running.
fn queued() -> Vec<String> {
    let o = Command::new("squeue")
        .args(["-h", "-o", "%F %i %T"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "squeue: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn wait_gone(ids: &[&str], out: &Path) {
    let start = Instant::now();
    while queued()
        .iter()
        .any(|l| ids.contains(&l.split(' ').next().unwrap_or_default()))
    {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "jobs {ids:?} still queued after 3 min:\n{}\n{}",
            queued().join("\n"),
            logs(out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every Slurm log of the submission, for failure messages.
fn logs(out: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(out.join("slurm"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if e.path().extension().is_some_and(|x| x == "out") {
            s += &format!(
                "--- {}\n{}",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
    }
    s
}

/// `scontrol show job` of a finished job (kept in memory for MinJobAge = 300 s): its JobState.
fn job_state(id: &str) -> String {
    let o = Command::new("scontrol")
        .args(["show", "job", id])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("JobState="))
        .unwrap_or("?")
        .to_string()
}

/// runs.csv as run_id -> (column -> cell), asserting each run id appears once.
fn rows(out: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(out.join("runs.csv"))
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", out.display(), logs(out)));
    let header = r.headers().unwrap().clone();
    let mut m = BTreeMap::new();
    for rec in r.records() {
        let row: BTreeMap<String, String> = header
            .iter()
            .map(String::from)
            .zip(rec.unwrap().iter().map(String::from))
            .collect();
        let id = row["run_id"].clone();
        assert!(
            m.insert(id.clone(), row).is_none(),
            "run {id} appears twice in {}",
            out.display()
        );
    }
    m
}

/// The reference: the same grid swept locally with the same threads per run.
fn local_sweep(yaml: &Path, dir: &Path) -> BTreeMap<String, BTreeMap<String, String>> {
    let out = dir.join("local");
    let o = membench(&[
        "sweep",
        yaml.to_str().unwrap(),
        "--jobs",
        "2",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "local sweep: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    rows(&out)
}

/// Runs in shard 0 and 1 of 2 (from `membench sweep --shard i/2 --dry-run`, one line per run).
fn shard_sizes(yaml: &Path) -> [usize; 2] {
    [0, 1].map(|i| {
        let o = membench(&[
            "sweep",
            yaml.to_str().unwrap(),
            "--shard",
            &format!("{i}/2"),
            "--dry-run",
            "--out",
            "/nonexistent",
        ]);
        assert!(
            o.status.success(),
            "dry run: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.contains('\t'))
            .count()
    })
}

/// Columns a rerun of the same run must reproduce bit for bit: the outcome, not the timing.
fn deterministic(col: &str) -> bool {
    col.starts_with("final_")
        || col.starts_with("best_")
        || matches!(
            col,
            "status"
                | "steps"
                | "param_count"
                | "state_size"
                | "steps_to_threshold"
                | "train_tokens"
                | "train_flops"
                | "flops_to_threshold"
                | "seed"
                | "experiment"
        )
}

#[test]
fn job_array_then_merge_matches_a_local_sweep() {
    if !have_slurm() {
        return;
    }
    let dir = tmp("array");
    let yaml = write_grid(&dir, 20, 5);
    // Shards follow run-id hashes; this grid's 5 ids must land in both, or nothing is split.
    let sizes = shard_sizes(&yaml);
    assert!(
        sizes[0] > 0 && sizes[1] > 0,
        "shard sizes {sizes:?}: change the grid so both tasks get runs"
    );
    let out = dir.join("results");
    let (array, merge) = submit(&yaml, &out);
    wait_gone(&[&array, &merge], &out);
    assert_eq!(job_state(&merge), "COMPLETED", "{}", logs(&out));
    let got = rows(&out);
    let want = local_sweep(&yaml, &dir);
    assert_eq!(want.len(), 5);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{}",
        logs(&out)
    );
    for (id, w) in &want {
        assert_eq!(got[id]["status"], "done", "run {id}");
        for (col, v) in w.iter().filter(|(c, _)| deterministic(c)) {
            assert_eq!(&got[id][col], v, "run {id} column {col}: slurm vs local");
        }
    }
    // Both tasks did work: the grid was really split (each shard dir holds some of the runs).
    let shard_runs = |i: usize| rows(&out.join("shards").join(i.to_string())).len();
    assert_eq!([shard_runs(0), shard_runs(1)], sizes, "{}", logs(&out));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn cancelled_task_is_named_by_merge_and_resubmission_completes_it() {
    if !have_slurm() {
        return;
    }
    let dir = tmp("cancel");
    // 6 runs of 300 steps (a few seconds each): a task is still training when the cancel arrives.
    let yaml = write_grid(&dir, 300, 6);
    // Cancel the task with more runs, as soon as it runs (its first run needs over a second to
    // start and train, so at least one of its runs is lost).
    let sizes = shard_sizes(&yaml);
    let victim = if sizes[1] > sizes[0] { 1 } else { 0 };
    assert!(sizes[victim] >= 2, "shard sizes {sizes:?}");
    let out = dir.join("results");
    let (array, merge) = submit(&yaml, &out);
    let task = format!("{array}_{victim}");
    let start = Instant::now();
    while !queued()
        .iter()
        .any(|l| l.split(' ').nth(1) == Some(task.as_str()) && l.ends_with("RUNNING"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "task {task} never ran:\n{}",
            queued().join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = Command::new("scancel").arg(&task).output().unwrap();
    assert!(
        o.status.success(),
        "scancel: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_gone(&[&array, &merge], &out);

    // The merge job ran after the cancelled task (afterany), failed, and named what is missing.
    assert_eq!(job_state(&merge), "FAILED", "{}", logs(&out));
    let merge_log =
        std::fs::read_to_string(out.join("slurm").join(format!("merge-{merge}.out"))).unwrap();
    let missing: BTreeSet<String> = merge_log
        .lines()
        .filter_map(|l| l.split("missing: ").nth(1))
        .map(|r| r.split(' ').next().unwrap().to_string())
        .collect();
    assert!(
        !missing.is_empty(),
        "merge named no missing run:\n{merge_log}"
    );
    let first = rows(&out);
    for id in &missing {
        assert!(
            first.get(id).is_none_or(|r| r["status"] != "done"),
            "{id} named missing but done"
        );
    }
    assert_eq!(
        first.values().filter(|r| r["status"] == "done").count() + missing.len(),
        6,
        "{merge_log}"
    );

    // Submitting the same thing again runs only the missing runs and completes the grid.
    let (array2, merge2) = submit(&yaml, &out);
    wait_gone(&[&array2, &merge2], &out);
    assert_eq!(job_state(&merge2), "COMPLETED", "{}", logs(&out));
    let second = rows(&out);
    assert_eq!(second.len(), 6);
    assert!(
        second.values().all(|r| r["status"] == "done"),
        "{}",
        logs(&out)
    );
    for (id, r) in &first {
        if r["status"] == "done" {
            assert_eq!(
                second[id]["started_at"], r["started_at"],
                "finished run {id} was trained again"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
