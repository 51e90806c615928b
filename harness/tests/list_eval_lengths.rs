//! Issue #27: `membench list` shows, before anything trains, the evaluation conditions each run
//! will be measured at, resolved: an empty (or absent) `eval_lengths` is the task's longest
//! training length, per run (so a swept `max_len` gives each run its own), and passkey's lengths
//! come with its depths.

mod common;
use common::*;

#[test]
fn list_shows_each_runs_resolved_evaluation_lengths() {
    let d = temp_dir("list-eval-lengths");
    let yaml = "defaults:\n  train: {steps: 3}\n  arch: {name: lstm, hidden_size: 8}\n\
                experiments:\n  \
                - name: copy_empty\n    task: {name: copy, bits: 4, max_len: 6, eval_lengths: []}\n    grid: {task.max_len: [5, 7]}\n  \
                - name: copy_listed\n    task: {name: copy, bits: 4, max_len: 6, eval_lengths: [6, 12]}\n  \
                - name: mqar_absent\n    task: {name: mqar, vocab_size: 32, seq_len: 24, num_kv_pairs: 2}\n  \
                - name: passkey_lengths\n    task: {name: passkey, length: 32, eval_lengths: [32, 64]}\n  \
                - name: passkey_depths\n    task: {name: passkey, length: 32, eval_depths: [0, 0.5]}\n";
    let file = write(&d.join("eval.yaml"), yaml);
    let o = membench(
        &[
            "list",
            file.to_str().unwrap(),
            "--out",
            d.join("results").to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(
        header,
        [
            "run_id",
            "experiment",
            "seed",
            "status",
            "eval_lengths",
            "swept"
        ]
    );
    let rows: Vec<(String, String, String)> = lines
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            assert_eq!(c.len(), header.len(), "{l}");
            (c[1].to_string(), c[4].to_string(), c[5].to_string())
        })
        .collect();
    let expected = [
        ("copy_empty", "5", "task.max_len=5"),
        ("copy_empty", "7", "task.max_len=7"),
        ("copy_listed", "6,12", ""),
        ("mqar_absent", "24", ""),
        ("passkey_lengths", "32,64 × depths 0,0.25,0.5,0.75,1", ""),
        ("passkey_depths", "32 × depths 0,0.5", ""),
    ];
    assert_eq!(
        rows,
        expected.map(|(e, l, s)| (e.to_string(), l.to_string(), s.to_string())),
        "{out}"
    );
    // Nothing was trained or written.
    assert!(!d.join("results").exists());
    std::fs::remove_dir_all(&d).unwrap();
}
