//! `membench bench` end to end on tiny settings: the table it prints (one row per model and thread
//! count, rounds folded into one row) and its refusals. Timings themselves are never asserted.

mod common;
use common::{membench, stderr, stdout};

#[test]
fn prints_one_row_per_model_and_thread_count_over_rounds() {
    let o = membench(
        &[
            "bench",
            "--models",
            "lstm,memn2n",
            "--threads",
            "1,2",
            "--warmup",
            "1",
            "--steps",
            "2",
            "--min-seconds",
            "0",
            "--rounds",
            "2",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("| lstm") || l.starts_with("| memn2n"))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let keys: Vec<(&str, &str)> = rows.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(
        keys,
        [
            ("lstm", "1"),
            ("memn2n", "1"),
            ("lstm", "2"),
            ("memn2n", "2")
        ]
    );
    for r in &rows {
        assert_eq!(r.len(), 14, "{r:?}");
        assert!(r[4].parse::<f64>().unwrap() > 0.0, "step ms {r:?}");
        assert!(r[5].parse::<f64>().unwrap() > 0.0, "CPU ms {r:?}");
        // No --compare-pytorch: the PyTorch and ratio columns are empty.
        assert_eq!(&r[10..], ["–", "–", "–", "–"]);
    }
    // Two rounds per model and thread count, each logged.
    assert_eq!(stderr(&o).matches("bench: memn2n ×2:").count(), 2);
}

#[test]
fn unknown_models_and_zero_rounds_are_refused() {
    let o = membench(&["bench", "--models", "lstm,nope", "--threads", "1"], &[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no spec called `nope`"),
        "{}",
        stderr(&o)
    );
    let o = membench(&["bench", "--rounds", "0"], &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--rounds"), "{}", stderr(&o));
}
