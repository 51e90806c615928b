//! Helpers shared by the end-to-end tests: run the real `membench` binary on tiny YAML files in
//! temporary directories and read runs.csv back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_membench");

/// A tiny experiment: copy task with 4-bit vectors of length ≤ 4, LSTM with 16 units, 12 steps,
/// so a run costs about the libtorch start-up (~0.5 s idle, ~2 s on a loaded 2-core machine).
pub fn tiny_yaml(seeds: &str, extra: &str) -> String {
    format!(
        "defaults:\n  train: {{steps: 12, batch_size: 8, lr: 0.01, eval_interval: 6, valid_batches: 1, test_batches: 1}}\n\
         experiments:\n  - name: tiny\n    task: {{name: copy, bits: 4, min_len: 1, max_len: 4}}\n    arch: {{name: lstm, hidden_size: 16}}\n    seeds: {seeds}\n{extra}"
    )
}

/// A fresh, empty directory under the system temp dir, unique to this test.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("membench-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn write(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

pub fn membench(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("MEMBENCH_FAULT")
        .env_remove("MEMBENCH_FAULT_WRITE")
        .env_remove("SLURM_ARRAY_TASK_ID");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("running membench")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `membench sweep FILE --out OUT --jobs 2 ARGS...` and asserts it succeeded.
pub fn sweep_ok(file: &Path, out: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut a = vec![
        "sweep",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "2",
    ];
    a.extend_from_slice(args);
    let o = membench(&a, env);
    assert!(
        o.status.success(),
        "sweep failed: {}\n{}",
        o.status,
        stderr(&o)
    );
    o
}

pub type Row = BTreeMap<String, String>;

/// runs.csv of `out` as rows (column → cell).
pub fn rows(out: &Path) -> Vec<Row> {
    rows_of(&out.join("runs.csv"))
}

/// A CSV file (runs.csv, a run's curve.csv or eval.csv) as rows (column → cell).
pub fn rows_of(path: &Path) -> Vec<Row> {
    let mut r =
        csv::Reader::from_path(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    r.records()
        .map(|rec| {
            header
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(String::from))
                .collect()
        })
        .collect()
}

pub fn by_id(rows: &[Row]) -> BTreeMap<String, Row> {
    rows.iter()
        .map(|r| (r["run_id"].clone(), r.clone()))
        .collect()
}

/// Columns that must be bit-identical between two executions of one run on the same machine.
pub fn deterministic(row: &Row) -> BTreeMap<String, String> {
    row.iter()
        .filter(|(k, _)| {
            k.starts_with("final_")
                || k.starts_with("best_")
                || [
                    "run_id",
                    "status",
                    "steps",
                    "param_count",
                    "state_size",
                    "steps_to_threshold",
                    "train_tokens",
                    "train_flops",
                    "flops_to_threshold",
                    "seed",
                ]
                .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// run ids of `membench list FILE` (all runs of the grid).
pub fn listed(file: &Path, out: &Path) -> Vec<(String, String)> {
    let o = membench(
        &[
            "list",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[3].to_string())
        })
        .collect()
}

/// A digest of every file (path, size, bytes) under `dir`, to prove nothing was written.
pub fn dir_digest(dir: &Path) -> String {
    fn walk(d: &Path, base: &Path, acc: &mut Vec<(String, Vec<u8>)>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                acc.push((
                    p.strip_prefix(base).unwrap().display().to_string() + "/",
                    vec![],
                ));
                walk(&p, base, acc);
            } else {
                acc.push((
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                ));
            }
        }
    }
    let mut acc = vec![];
    walk(dir, dir, &mut acc);
    acc.sort();
    let mut h = blake3::Hasher::new();
    for (p, b) in &acc {
        h.update(p.as_bytes());
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    h.finalize().to_hex().to_string()
}
