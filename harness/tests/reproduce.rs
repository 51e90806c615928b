//! End to end: a real tiny sweep, then `reproduce` (identical → 0, tampered → 1 naming the column,
//! other torch → refused) and `compare` (the Markdown table has one row per group).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXE: &str = env!("CARGO_BIN_EXE_membench");

/// LSTM with 16 hidden units on copies of length ≤ 3: 20 steps and 2 seeds keep the whole test at a
/// few seconds; the numbers need not be good, only reproducible.
const YAML: &str = "
defaults:
  train: {steps: 20, batch_size: 8, eval_interval: 10, valid_batches: 1, test_batches: 2, selection: best_valid}
experiments:
  - name: tiny
    task: {name: copy, bits: 4, min_len: 1, max_len: 3, eval_lengths: [3, 5]}
    arch: {name: lstm, hidden_size: 16}
    seeds: 2
";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("membench-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn membench(args: &[&str], cwd: &Path) -> Output {
    membench_env(args, cwd, &[])
}

/// `membench` with `env` set; a variable given as empty is removed.
fn membench_env(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(EXE);
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        match v.is_empty() {
            true => c.env_remove(k),
            false => c.env(k, v),
        };
    }
    c.output().expect("running membench")
}

/// The cells of `column`, in file order.
fn column(results: &Path, column: &str) -> Vec<String> {
    let mut r = csv::Reader::from_path(results.join("runs.csv")).unwrap();
    let i = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == column)
        .unwrap();
    r.records().map(|rec| rec.unwrap()[i].to_string()).collect()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Replaces the cell of `column` in the runs.csv row of `run_id`.
fn tamper(results: &Path, run_id: &str, column: &str, value: &str) {
    let path = results.join("runs.csv");
    let mut r = csv::Reader::from_path(&path).unwrap();
    let header = r.headers().unwrap().clone();
    let col = header.iter().position(|h| h == column).unwrap();
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(&header).unwrap();
    for rec in r.records() {
        let mut cells: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        if cells[0] == run_id {
            cells[col] = value.to_string();
        }
        w.write_record(&cells).unwrap();
    }
    std::fs::write(&path, w.into_inner().unwrap()).unwrap();
}

/// Removes `columns` from the CSV file at `path`, as an older membench, which did not write them,
/// would have left it.
fn drop_columns(path: &Path, columns: &[&str]) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let header = r.headers().unwrap().clone();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| !columns.contains(&&header[i]))
        .collect();
    assert!(keep.len() < header.len(), "{columns:?} not in {header:?}");
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(keep.iter().map(|&i| &header[i])).unwrap();
    for rec in r.records() {
        let rec = rec.unwrap();
        w.write_record(keep.iter().map(|&i| &rec[i])).unwrap();
    }
    std::fs::write(path, w.into_inner().unwrap()).unwrap();
}

fn run_ids(results: &Path) -> Vec<String> {
    let mut r = csv::Reader::from_path(results.join("runs.csv")).unwrap();
    r.records().map(|rec| rec.unwrap()[0].to_string()).collect()
}

#[test]
fn sweep_reproduce_tamper_and_compare() {
    let dir = scratch("reproduce");
    std::fs::write(dir.join("tiny.yaml"), YAML).unwrap();
    let o = membench(&["sweep", "tiny.yaml", "--jobs", "1", "--out", "res"], &dir);
    assert!(o.status.success(), "sweep failed: {}", text(&o));
    let res = dir.join("res");
    let ids = run_ids(&res);
    assert_eq!(ids.len(), 2, "two seeds, two rows");

    // Same binary, same config, same thread count: every metric cell identical on CPU; and the
    // stored results are left alone (the rerun happens in a scratch directory).
    let before = (
        std::fs::read(res.join("runs.csv")).unwrap(),
        std::fs::read(res.join("runs").join(&ids[0]).join("result.json")).unwrap(),
    );
    let o = membench(&["reproduce", &ids[0], "--results", "res"], &dir);
    assert!(o.status.success(), "reproduce should match: {}", text(&o));
    assert!(
        text(&o).contains("eval.csv: identical") && text(&o).contains("curve.csv: identical"),
        "{}",
        text(&o)
    );
    let after = (
        std::fs::read(res.join("runs.csv")).unwrap(),
        std::fs::read(res.join("runs").join(&ids[0]).join("result.json")).unwrap(),
    );
    assert!(
        before == after,
        "reproduce wrote into the results directory"
    );
    let visible = std::fs::read_dir(&res)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(
        visible, 2,
        "only runs.csv and runs/ (and the sweep's lock file) under results"
    );

    // compare: a table with one row for the one group (lstm, 2 seeds), and the plots.
    let o = membench(
        &[
            "compare",
            "--results",
            "res",
            "--selection",
            "last",
            "--metric",
            "seq_acc",
        ],
        &dir,
    );
    assert!(o.status.success(), "compare failed: {}", text(&o));
    let md = std::fs::read_to_string(res.join("reports/copy_seq_acc_last.md")).unwrap();
    assert!(md.starts_with("<!-- generated by: membench compare --results res --selection last --metric seq_acc -->"), "{md}");
    assert!(md.contains("Selection protocol: **last**"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 2, "header + one group row:\n{md}");
    assert!(
        rows[1].starts_with("| lstm | 2 |") && rows[1].contains("| best |"),
        "{}",
        rows[1]
    );
    // The last cell names the row's runs: both seeds' ids.
    let id_cell = rows[1].trim_end_matches(" |").rsplit(" | ").next().unwrap();
    assert_eq!(
        id_cell
            .split(' ')
            .filter(|id| id.len() == 14 && id.starts_with('`') && id.ends_with('`'))
            .count(),
        2,
        "{}",
        rows[1]
    );
    for plot in [
        "copy_seq_acc_last_vs_eval_len.png",
        "copy_seq_acc_last_vs_eval_len.svg",
        "copy_seq_acc_last_curve.png",
    ] {
        assert!(res.join("reports").join(plot).exists(), "{plot} missing");
    }

    // A table row names its runs: reproducing it reruns both seeds.
    let o = membench(
        &[
            "reproduce",
            "res/reports/copy_seq_acc_last.csv:1",
            "--results",
            "res",
        ],
        &dir,
    );
    assert!(
        o.status.success(),
        "table row should reproduce: {}",
        text(&o)
    );
    assert!(
        text(&o).contains(&ids[0]) && text(&o).contains(&ids[1]),
        "{}",
        text(&o)
    );

    // Results of a membench before the compute columns: what the stored files have is compared,
    // and the curve.csv column they lack is named.
    drop_columns(
        &res.join("runs.csv"),
        &[
            "train_tokens",
            "train_flops",
            "wall_s_to_threshold",
            "flops_to_threshold",
        ],
    );
    drop_columns(
        &res.join("runs").join(&ids[0]).join("curve.csv"),
        &["train_tokens"],
    );
    let o = membench(&["reproduce", &ids[0], "--results", "res"], &dir);
    assert!(
        o.status.success(),
        "older results should reproduce: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("curve.csv: note: the stored file has no train_tokens column")
            && text(&o).contains("curve.csv: identical"),
        "{}",
        text(&o)
    );

    // A stored metric that the rerun cannot give: exit 1, the column named.
    tamper(&res, &ids[1], "final_loss", "0.123");
    let o = membench(&["reproduce", &ids[1], "--results", "res"], &dir);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("differing columns") && text(&o).contains("final_loss"),
        "{}",
        text(&o)
    );

    // Another torch version: refused before rerunning, as bad input (exit 1 means "differs").
    tamper(&res, &ids[0], "torch_version", "1.13.0");
    let o = membench(&["reproduce", &ids[0], "--results", "res"], &dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("refusing to reproduce") && text(&o).contains("torch 1.13.0"),
        "{}",
        text(&o)
    );

    // A run id that is not there, and a saved config edited after the run: exit 2, said plainly.
    let o = membench(&["reproduce", "0123456789ab", "--results", "res"], &dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("not in"), "{}", text(&o));
    let cfg = res.join("runs").join(&ids[1]).join("config.yaml");
    let text_of_cfg = std::fs::read_to_string(&cfg).unwrap();
    let edited: String = text_of_cfg
        .lines()
        .map(|l| {
            if l.starts_with("seed:") {
                "seed: 99\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(edited, text_of_cfg, "the config has a top-level seed");
    std::fs::write(&cfg, edited).unwrap();
    let o = membench(&["reproduce", &ids[1], "--results", "res"], &dir);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("changed after the run"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The GEMM path is recorded with each run and honoured: a row made on the portable (libtorch)
/// path is rerun on it whatever this machine would choose; a oneDNN row is refused (exit 2, with
/// the reason) by a process that may not run oneDNN; and a sweep does not add rows of one path to
/// a directory holding the other's, rows of 0.4.1 and earlier (no gemm_path cell) counting as
/// oneDNN. Every refusal leaves runs.csv as it was.
#[test]
fn gemm_path_is_recorded_and_honoured() {
    let dir = scratch("gemm");
    std::fs::write(dir.join("tiny.yaml"), YAML).unwrap();
    let portable = [("MEMBENCH_GEMM", "libtorch")];
    let sweep = |env: &[(&str, &str)]| {
        membench_env(
            &["sweep", "tiny.yaml", "--jobs", "1", "--out", "res"],
            &dir,
            env,
        )
    };
    let o = sweep(&portable);
    assert!(o.status.success(), "sweep failed: {}", text(&o));
    let res = dir.join("res");
    assert_eq!(column(&res, "gemm_path"), ["libtorch", "libtorch"]);
    for c in ["cpu_isa", "cpu"] {
        assert!(
            column(&res, c).iter().all(|v| !v.is_empty()),
            "{c} is empty"
        );
    }
    let ids = run_ids(&res);

    // Default environment (oneDNN where the CPU has it): the rerun still takes the row's path.
    let auto = [("MEMBENCH_GEMM", "")];
    let o = membench_env(&["reproduce", &ids[0], "--results", "res"], &dir, &auto);
    assert!(o.status.success(), "reproduce failed: {}", text(&o));
    assert!(text(&o).contains("GEMM path libtorch"), "{}", text(&o));

    for claimed in ["onednn", ""] {
        tamper(&res, &ids[0], "gemm_path", claimed);
        let before = std::fs::read(res.join("runs.csv")).unwrap();
        let o = membench_env(&["reproduce", &ids[0], "--results", "res"], &dir, &portable);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("made on the oneDNN GEMM path"),
            "{}",
            text(&o)
        );
        let o = sweep(&portable);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(
            text(&o).contains("stored run used the onednn GEMM path, this process uses libtorch"),
            "{}",
            text(&o)
        );
        assert_eq!(std::fs::read(res.join("runs.csv")).unwrap(), before);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
