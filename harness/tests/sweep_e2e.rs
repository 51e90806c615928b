//! End-to-end tests of `membench sweep/validate/list/merge` on the real binary (issue #6).

mod common;
use common::*;
use std::collections::BTreeSet;

#[test]
fn grid_zip_and_seed_counts() {
    let d = temp_dir("counts");
    let extra = "    grid: {arch.hidden_size: [8, 16, 32], train.lr: [0.1, 0.01]}\n    zip: {task.max_len: [3, 4], train.steps: [5, 6]}\n";
    let f = write(&d.join("e.yaml"), &tiny_yaml("[3, 7]", extra));
    let o = membench(&["validate", f.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 3 × 2 grid combinations × 2 zip positions × 2 seeds.
    assert!(stdout(&o).contains("ok, 24 runs"), "{}", stdout(&o));
    let runs = listed(&f, &d.join("results"));
    assert_eq!(runs.len(), 24);
    assert!(runs.iter().all(|(_, s)| s == "pending"));
    assert_eq!(
        runs.iter().map(|(id, _)| id).collect::<BTreeSet<_>>().len(),
        24,
        "run ids are distinct"
    );
    assert!(!d.join("results").exists(), "list writes nothing");
    // dry run prints every run and writes nothing.
    let o = membench(
        &[
            "sweep",
            f.to_str().unwrap(),
            "--out",
            d.join("results").to_str().unwrap(),
            "--dry-run",
        ],
        &[],
    );
    assert!(o.status.success());
    assert_eq!(stdout(&o).lines().count(), 24);
    assert!(!d.join("results").exists(), "dry run writes nothing");
}

#[test]
fn strict_errors_point_at_line_key_and_suggest() {
    let d = temp_dir("strict");
    let out = d.join("results");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "x").unwrap();
    let before = dir_digest(&out);
    // Line 9 is the grid key; the bad value only shows after expansion.
    let f = write(
        &d.join("bad.yaml"),
        &tiny_yaml("2", "    grid:\n      train.lr: [0.1, -0.5]\n"),
    );
    let o = membench(
        &["sweep", f.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("bad.yaml:9:7:") && e.contains("grid.train.lr") && e.contains("-0.5"),
        "{e}"
    );
    // A typo in the train section of defaults, with a suggestion.
    let f = write(
        &d.join("typo.yaml"),
        &tiny_yaml("2", "").replace("eval_interval", "eval_intervall"),
    );
    let o = membench(&["validate", f.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("typo.yaml:2:")
            && e.contains("defaults.train.eval_intervall")
            && e.contains("did you mean `eval_interval`"),
        "{e}"
    );
    assert_eq!(dir_digest(&out), before, "nothing written on bad input");
}

/// The compute columns of a run's row agree with each other and with its curve.csv: training
/// FLOPs are 3 × forward FLOPs per token × tokens trained, the curve's last `train_tokens` is the
/// run's, and the `*_to_threshold` cells are the curve's at `steps_to_threshold`.
fn assert_compute_agrees_with_curve(out: &std::path::Path, row: &Row) {
    let num = |c: &str| -> f64 { row[c].parse().unwrap_or_else(|_| panic!("{c}: {row:?}")) };
    let (fpt, tokens) = (num("flops_per_token"), num("train_tokens"));
    assert!(fpt > 0.0 && tokens > 0.0, "{row:?}");
    assert_eq!(num("train_flops"), 3.0 * fpt * tokens, "{row:?}");
    let curve = rows_of(&out.join("runs").join(&row["run_id"]).join("curve.csv"));
    let at = |r: &Row, c: &str| -> f64 { r[c].parse().unwrap() };
    assert!(
        curve
            .windows(2)
            .all(|w| at(&w[0], "train_tokens") < at(&w[1], "train_tokens")),
        "train_tokens grows with the step: {curve:?}"
    );
    assert_eq!(at(curve.last().unwrap(), "train_tokens"), tokens);
    let reached = curve
        .iter()
        .find(|p| p["step"] == row["steps_to_threshold"])
        .expect("the threshold step is a curve point");
    assert_eq!(num("wall_s_to_threshold"), at(reached, "wall_s"));
    assert_eq!(
        num("flops_to_threshold"),
        3.0 * fpt * at(reached, "train_tokens")
    );
}

#[test]
fn rerun_skips_finished_runs_repairs_torn_csv_and_is_deterministic() {
    let d = temp_dir("rerun");
    // A threshold every run crosses at its first validation (a copy sequence of at most 4 vectors
    // of 4 bits has at most 16 wrong bits), so that the *_to_threshold columns are filled.
    let yaml = tiny_yaml("2", "").replace(
        "test_batches: 1}",
        "test_batches: 1, success_threshold: 16.0}",
    );
    let f = write(&d.join("e.yaml"), &yaml);
    let (a, b) = (d.join("a"), d.join("b"));
    sweep_ok(&f, &a, &[], &[]);
    let first = rows(&a);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|r| r["status"] == "done"), "{first:?}");
    for r in &first {
        assert_eq!(r["steps_to_threshold"], "6", "{r:?}");
        assert_compute_agrees_with_curve(&a, r);
    }
    let csv_bytes = std::fs::read(a.join("runs.csv")).unwrap();

    // Rerun: nothing to do, the file is untouched.
    let o = sweep_ok(&f, &a, &[], &[]);
    assert!(
        stderr(&o).contains("2 already finished, 0 to run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(a.join("runs.csv")).unwrap(), csv_bytes);

    // A torn last line (a crash mid-append) is cut off and nothing is redone.
    let mut torn = csv_bytes.clone();
    torn.extend_from_slice(b"0123456789ab,tiny,copy,lstm,5,do");
    std::fs::write(a.join("runs.csv"), &torn).unwrap();
    assert_eq!(
        listed(&f, &a).iter().filter(|(_, s)| s == "done").count(),
        2,
        "list reads past a torn line"
    );
    let o = sweep_ok(&f, &a, &[], &[]);
    assert!(stderr(&o).contains("0 to run"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(a.join("runs.csv")).unwrap(),
        csv_bytes,
        "torn line cut, rows intact"
    );

    // A second, separate sweep of the same config, seeds and threads gives identical metrics.
    sweep_ok(&f, &b, &["--threads", "1"], &[]);
    let (ra, rb) = (by_id(&first), by_id(&rows(&b)));
    assert_eq!(ra.keys().collect::<Vec<_>>(), rb.keys().collect::<Vec<_>>());
    for (id, row) in &ra {
        assert_eq!(
            deterministic(row),
            deterministic(&rb[id]),
            "run {id} differs between sweeps"
        );
    }

    // A changed config is a new run id, pending until swept.
    let f2 = write(&d.join("e2.yaml"), &yaml.replace("lr: 0.01", "lr: 0.02"));
    let l = listed(&f2, &a);
    assert!(
        l.iter()
            .all(|(id, s)| s == "pending" && !ra.contains_key(id)),
        "{l:?}"
    );
}

#[test]
fn a_sweep_never_adds_to_results_of_another_version() {
    let d = temp_dir("version");
    let f = write(&d.join("e.yaml"), &tiny_yaml("2", ""));
    let a = d.join("a");
    sweep_ok(&f, &a, &[], &[]);
    // Pretend the finished rows were made by an older minor release whose numbers differ.
    let csv = std::fs::read_to_string(a.join("runs.csv")).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(csv.contains(version), "rows carry the membench version");
    let old = csv.replace(version, "0.0.9");
    std::fs::write(a.join("runs.csv"), &old).unwrap();
    let before = dir_digest(&a);
    let o = membench(
        &["sweep", f.to_str().unwrap(), "--out", a.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("runs.csv")
            && e.contains("another version")
            && e.contains("membench 0.0.9")
            && e.contains("--out"),
        "{e}"
    );
    assert_eq!(dir_digest(&a), before, "the old results are untouched");
}

#[test]
fn shards_partition_the_grid_and_merge_rebuilds_it() {
    let d = temp_dir("shards");
    let f = write(&d.join("e.yaml"), &tiny_yaml("4", ""));
    let all: BTreeSet<String> = listed(&f, &d.join("none"))
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let shard_ids = |i: &str, env: &[(&str, &str)], flag: bool| -> BTreeSet<String> {
        let mut a = vec!["sweep", f.to_str().unwrap(), "--dry-run", "--out", "unused"];
        if flag {
            a.extend(["--shard", i]);
        }
        let o = membench(&a, env);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    let (s0, s1) = (shard_ids("0/2", &[], true), shard_ids("1/2", &[], true));
    assert!(s0.is_disjoint(&s1));
    assert_eq!(s0.union(&s1).cloned().collect::<BTreeSet<_>>(), all);
    // SLURM array variables select the same shard when --shard is absent (MIN defaults to 0).
    assert_eq!(
        shard_ids(
            "",
            &[
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "2")
            ],
            false
        ),
        s1
    );
    assert_eq!(
        shard_ids(
            "",
            &[
                ("SLURM_ARRAY_TASK_ID", "2"),
                ("SLURM_ARRAY_TASK_COUNT", "2"),
                ("SLURM_ARRAY_TASK_MIN", "1")
            ],
            false
        ),
        s1
    );

    let (o0, o1, m) = (d.join("s0"), d.join("s1"), d.join("merged"));
    sweep_ok(&f, &o0, &["--shard", "0/2"], &[]);
    sweep_ok(&f, &o1, &["--shard", "1/2"], &[]);
    // Merging a shard twice is harmless: duplicates are kept once.
    let o = membench(
        &[
            "merge",
            o0.to_str().unwrap(),
            o1.to_str().unwrap(),
            o0.to_str().unwrap(),
            "--out",
            m.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let merged = rows(&m);
    assert_eq!(merged.len(), all.len());
    assert_eq!(
        merged
            .iter()
            .map(|r| r["run_id"].clone())
            .collect::<BTreeSet<_>>(),
        all
    );
    for id in &all {
        assert!(
            m.join("runs").join(id).join("result.json").is_file(),
            "run dir {id} copied"
        );
    }
    assert!(listed(&f, &m).iter().all(|(_, s)| s == "done"));

    // A conflicting duplicate (same run, different metrics) is reported and fails the merge.
    let c = d.join("conflict");
    std::fs::create_dir_all(&c).unwrap();
    let text = std::fs::read_to_string(o0.join("runs.csv")).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().clone();
    let col = header.iter().position(|h| h == "final_loss").unwrap();
    let mut w = csv::Writer::from_path(c.join("runs.csv")).unwrap();
    w.write_record(&header).unwrap();
    let mut rec: Vec<String> = r
        .records()
        .next()
        .unwrap()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    rec[col] = "123.0".into();
    w.write_record(&rec).unwrap();
    w.flush().unwrap();
    let o = membench(
        &[
            "merge",
            o0.to_str().unwrap(),
            c.to_str().unwrap(),
            "--out",
            d.join("m2").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("conflict") && stderr(&o).contains("final_loss"),
        "{}",
        stderr(&o)
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects faults: needs --features fault-injection, as make test passes"
)]
fn lock_refuses_a_second_sweep_and_a_stale_lock_is_taken_over() {
    let d = temp_dir("lock");
    let out = d.join("results");
    let f = write(&d.join("e.yaml"), &tiny_yaml("1", ""));
    // A sweep whose only run hangs holds the lock.
    let mut first = std::process::Command::new(BIN)
        .args([
            "sweep",
            f.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--run-timeout",
            "60s",
        ])
        .env("MEMBENCH_FAULT", "hang")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".membench.lock");
    let t0 = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| !s.trim().is_empty()) {
        assert!(
            t0.elapsed().as_secs() < 30,
            "first sweep never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let o = membench(
        &["sweep", f.to_str().unwrap(), "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("is in use by") && e.contains(&first.id().to_string()),
        "{e}"
    );
    // kill -9: the lock file stays, naming a dead process; the next sweep takes it over.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(std::fs::read_to_string(&lock)
        .unwrap()
        .contains(&first.id().to_string()));
    let o = sweep_ok(&f, &out, &[], &[]);
    assert!(
        stderr(&o).contains("taking over the stale lock"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        rows(&out).iter().filter(|r| r["status"] == "done").count(),
        1
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects faults: needs --features fault-injection, as make test passes"
)]
fn failing_runs_get_rows_while_the_others_finish() {
    let d = temp_dir("faults");
    let out = d.join("results");
    let f = write(&d.join("e.yaml"), &tiny_yaml("[0, 1, 2, 3, 4]", ""));
    // Seed 0 is healthy; the others panic, diverge, hang past the timeout, abort.
    let faults = [("MEMBENCH_FAULT", "panic:1,nan:2,hang:3,abort:4")];
    let o = sweep_ok(&f, &out, &["--run-timeout", "10s"], &faults);
    let by_seed: std::collections::BTreeMap<String, Row> = rows(&out)
        .into_iter()
        .map(|r| (r["seed"].clone(), r))
        .collect();
    let st = |s: &str| (by_seed[s]["status"].as_str(), by_seed[s]["reason"].as_str());
    assert_eq!(by_seed.len(), 5, "{}", stderr(&o));
    assert_eq!(st("0").0, "done");
    assert_eq!(st("1").0, "failed");
    assert!(
        st("1").1.contains("exit status 101") && st("1").1.contains("injected panic"),
        "{:?}",
        st("1")
    );
    assert_eq!(st("2").0, "diverged");
    assert!(st("2").1.contains("non-finite"), "{:?}", st("2"));
    assert_eq!(st("3").0, "timeout");
    assert!(st("3").1.contains("run-timeout"), "{:?}", st("3"));
    assert_eq!(st("4").0, "failed");
    assert!(st("4").1.contains("signal 6"), "{:?}", st("4"));

    // Rerun without faults: failed and timed-out runs are retried; done and diverged are final.
    let o = sweep_ok(&f, &out, &[], &[]);
    assert!(
        stderr(&o).contains("2 already finished, 3 to run"),
        "{}",
        stderr(&o)
    );
    let after: Vec<(String, String)> = rows(&out)
        .into_iter()
        .map(|r| (r["seed"].clone(), r["status"].clone()))
        .collect();
    assert_eq!(
        after.len(),
        5,
        "one row per run, replaced in place: {after:?}"
    );
    for (seed, status) in after {
        assert_eq!(status, if seed == "2" { "diverged" } else { "done" });
    }
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects faults: needs --features fault-injection, as make test passes"
)]
fn memory_limits_produce_failed_rows() {
    let d = temp_dir("memory");
    let f = write(&d.join("e.yaml"), &tiny_yaml("[0, 1]", ""));
    // 4 GiB of address space fits a run (the CUDA-enabled libtorch maps ~3 GB at start), not the
    // injected allocation loop of seed 0.
    let out = d.join("oom");
    sweep_ok(
        &f,
        &out,
        &["--run-memory", "4GiB"],
        &[("MEMBENCH_FAULT", "oom:0")],
    );
    let r = by_id(&rows(&out));
    let by_seed: std::collections::BTreeMap<&str, &Row> =
        r.values().map(|r| (r["seed"].as_str(), r)).collect();
    assert_eq!(by_seed["0"]["status"], "failed");
    assert!(
        by_seed["0"]["reason"].contains("memory allocation")
            || by_seed["0"]["reason"].contains("signal"),
        "{:?}",
        by_seed["0"]
    );
    assert_eq!(by_seed["1"]["status"], "done", "{:?}", by_seed["1"]);
    // A limit too small to even load libtorch: every run fails with a reason, the sweep finishes.
    let out = d.join("tiny-limit");
    sweep_ok(&f, &out, &["--run-memory", "512MiB"], &[]);
    let rs = rows(&out);
    assert_eq!(rs.len(), 2);
    assert!(
        rs.iter()
            .all(|r| r["status"] == "failed" && !r["reason"].is_empty()),
        "{rs:?}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "injects faults: needs --features fault-injection, as make test passes"
)]
fn a_failed_row_write_is_a_clear_error_and_leaves_a_valid_csv() {
    let d = temp_dir("writefail");
    let out = d.join("results");
    let f = write(&d.join("e.yaml"), &tiny_yaml("2", ""));
    let mut a = vec![
        "sweep",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--jobs",
        "1",
    ];
    // The first row creates runs.csv (atomic write); the second is the first append: make it fail.
    let o = membench(&a, &[("MEMBENCH_FAULT_WRITE", "1")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("appending a row to") && e.contains("injected write failure"),
        "{e}"
    );
    let text = std::fs::read_to_string(out.join("runs.csv")).unwrap();
    assert!(text.ends_with('\n'), "no torn line left: {text:?}");
    assert_eq!(rows(&out).len(), 1);
    a.truncate(4);
    let o = membench(&a, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rows(&out).len(), 2);
}

/// `text` with the cells of one column replaced in every data row.
fn with_cell(text: &str, column: &str, value: &str) -> String {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().clone();
    let col = header.iter().position(|h| h == column).unwrap();
    let mut w = csv::Writer::from_writer(vec![]);
    w.write_record(&header).unwrap();
    for rec in r.records() {
        let mut rec: Vec<String> = rec.unwrap().iter().map(String::from).collect();
        rec[col] = value.into();
        w.write_record(&rec).unwrap();
    }
    String::from_utf8(w.into_inner().unwrap()).unwrap()
}

fn merge_into(inputs: &[&std::path::Path], out: &std::path::Path) -> std::process::Output {
    let mut a = vec!["merge".to_string()];
    a.extend(inputs.iter().map(|p| p.display().to_string()));
    a.extend(["--out".to_string(), out.display().to_string()]);
    membench(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

#[test]
fn merge_never_overwrites_or_mixes_versions_in_its_out_directory() {
    let d = temp_dir("merge-into");
    let f = write(&d.join("e.yaml"), &tiny_yaml("2", ""));
    let a = d.join("a");
    sweep_ok(&f, &a, &[], &[]);
    let text = std::fs::read_to_string(a.join("runs.csv")).unwrap();
    let input = |name: &str, csv: &str| {
        let p = d.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("runs.csv"), csv).unwrap();
        p
    };

    // A failed row never replaces a done one; a conflicting row never replaces --out's own.
    let failed = input("failed", &with_cell(&text, "status", "failed"));
    let conflict = input("conflict", &with_cell(&text, "final_loss", "123.0"));
    let before = dir_digest(&a);
    let o = merge_into(&[&failed], &a);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(dir_digest(&a), before, "done rows kept");
    let o = merge_into(&[&conflict], &a);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("conflict") && stderr(&o).contains("final_loss"),
        "{}",
        stderr(&o)
    );
    assert_eq!(dir_digest(&a), before, "--out's rows kept on a conflict");

    // Rows of another membench minor version: refused, nothing written.
    let old = input("old", &with_cell(&text, "membench_version", "0.0.9"));
    let o = merge_into(&[&old], &a);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("membench 0.0"), "{}", stderr(&o));
    assert_eq!(dir_digest(&a), before, "nothing written");
    let fresh = d.join("fresh");
    let o = merge_into(&[&a, &old], &fresh);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!fresh.exists(), "nothing created");

    // Rows of the other CPU GEMM path (oneDNN or LibTorch's own): refused, nothing written.
    let here = rows(&a)[0]["gemm_path"].clone();
    let there = if here == "libtorch" {
        "onednn"
    } else {
        "libtorch"
    };
    let other = input("other-gemm", &with_cell(&text, "gemm_path", there));
    let o = merge_into(&[&other], &a);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(&format!("gemm {there}"))
            && stderr(&o).contains(&format!("gemm {here}")),
        "{}",
        stderr(&o)
    );
    assert_eq!(dir_digest(&a), before, "nothing written");

    // A done row from an input replaces --out's failed one, with its run directory.
    let g = input("g", &with_cell(&text, "status", "failed"));
    let o = merge_into(&[&a], &g);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(by_id(&rows(&g)), by_id(&rows(&a)));
    for id in by_id(&rows(&a)).keys() {
        assert!(g.join("runs").join(id).join("result.json").is_file());
    }
}

#[test]
fn a_damaged_runs_csv_is_refused_and_lost_rows_are_recovered_not_retrained() {
    let d = temp_dir("recover");
    let f = write(&d.join("e.yaml"), &tiny_yaml("2", ""));
    let a = d.join("a");
    sweep_ok(&f, &a, &[], &[]);
    let text = std::fs::read_to_string(a.join("runs.csv")).unwrap();
    let runs_before = dir_digest(&a.join("runs"));
    let original = by_id(&rows(&a));
    let sweep = || {
        membench(
            &["sweep", f.to_str().unwrap(), "--out", a.to_str().unwrap()],
            &[],
        )
    };

    // A whole last row without its newline is kept (and terminated), not trained again.
    std::fs::write(a.join("runs.csv"), text.trim_end()).unwrap();
    let o = sweep();
    assert!(
        o.status.success() && stderr(&o).contains("0 to run"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read_to_string(a.join("runs.csv")).unwrap(), text);

    // A damaged header or an unknown status: exit 2 naming line and column, nothing written.
    for (bad, want) in [
        (
            text.replacen("run_id", "runid", 1),
            "runs.csv:1: missing column run_id",
        ),
        (
            with_cell(&text, "status", "finished"),
            "runs.csv:2: status `finished`",
        ),
    ] {
        std::fs::write(a.join("runs.csv"), &bad).unwrap();
        let before = dir_digest(&a);
        let o = sweep();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
        assert_eq!(dir_digest(&a), before, "nothing written");
    }

    // A lost row (the sweep died before appending it), an emptied or a missing runs.csv: the rows
    // come back from result.json and no run is trained again.
    let first_row = text.lines().take(2).collect::<Vec<_>>().join("\n") + "\n";
    for lost in [Some(first_row.as_str()), Some(""), None] {
        match lost {
            Some(t) => std::fs::write(a.join("runs.csv"), t).unwrap(),
            None => std::fs::remove_file(a.join("runs.csv")).unwrap(),
        }
        let o = sweep();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("row recovered from result.json")
                && stderr(&o).contains("0 to run"),
            "{}",
            stderr(&o)
        );
        assert_eq!(dir_digest(&a.join("runs")), runs_before, "no run retrained");
        assert_eq!(by_id(&rows(&a)), original, "rows as they were");
    }
}

/// The validation score a copy run is chosen by: (−bit errors, −loss) at its best step.
fn valid_score(out: &std::path::Path, row: &Row) -> (f64, f64) {
    let curve = rows_of(&out.join("runs").join(&row["run_id"]).join("curve.csv"));
    let p = curve
        .iter()
        .find(|p| p["step"] == row["best_step"])
        .expect("the best step is a curve point");
    let num = |k: &str| -p[k].parse::<f64>().unwrap();
    (num("valid_bit_errors_per_seq"), num("valid_loss"))
}

#[test]
fn tune_seeds_runs_only_the_candidate_chosen_on_the_first_seed() {
    let d = temp_dir("tune-seeds");
    let extra = "    tune: {train.lr: [0.01, 0.0003]}\n    tune_seeds: 1\n";
    let f = write(&d.join("e.yaml"), &tiny_yaml("3", extra));
    let out = d.join("results");
    let statuses = |l: &[(String, String)], s: &str| l.iter().filter(|(_, x)| x == s).count();
    let l = listed(&f, &out);
    assert_eq!(
        (statuses(&l, "pending"), statuses(&l, "awaits choice")),
        (2, 4),
        "{l:?}"
    );
    let o = sweep_ok(&f, &out, &[], &[]);
    let err = stderr(&o);
    assert!(err.contains("2 to run (and 4 await"), "{err}");
    assert!(err.contains("2 runs on later seeds are not made"), "{err}");
    let rs = rows(&out);
    assert_eq!(
        rs.len(),
        4,
        "2 candidates on seed 0, the chosen one on seeds 1 and 2"
    );
    assert!(rs
        .iter()
        .all(|r| r["tune_seeds"] == "0" && r["status"] == "done"));
    // The followers run the candidate whose seed-0 run validated better.
    let seed0: Vec<&Row> = rs.iter().filter(|r| r["seed"] == "0").collect();
    let winner = if valid_score(&out, seed0[1]) > valid_score(&out, seed0[0]) {
        seed0[1]
    } else {
        seed0[0]
    };
    let followers: Vec<&Row> = rs.iter().filter(|r| r["seed"] != "0").collect();
    assert!(
        followers
            .iter()
            .all(|r| r["tune:train.lr"] == winner["tune:train.lr"]),
        "{rs:?}"
    );
    let l = listed(&f, &out);
    assert_eq!((statuses(&l, "done"), statuses(&l, "not chosen")), (4, 2));
    // Resumed: nothing to do; the report makes the same choice and says how it was made.
    let o = sweep_ok(&f, &out, &[], &[]);
    assert!(
        stderr(&o).contains("4 already finished, 0 to run"),
        "{}",
        stderr(&o)
    );
    let reports = d.join("reports");
    let o = membench(
        &[
            "compare",
            "--results",
            out.to_str().unwrap(),
            "--out",
            reports.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let md = std::fs::read_dir(&reports)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .find(|t| t.contains("Tuning protocol"))
        .expect("a table names the tuning protocol");
    assert!(
        md.contains("on seed 0, the only candidate run on the other seeds"),
        "{md}"
    );
    assert!(!md.contains("fewer candidates"), "no choice is short: {md}");
}

#[test]
fn a_setting_s_tuning_runs_and_followers_share_a_shard() {
    let d = temp_dir("tune-seeds-shards");
    let extra = "    grid: {arch.hidden_size: [8, 16, 24, 32]}\n    tune: {train.lr: [0.01, 0.0003]}\n    tune_seeds: 1\n";
    let f = write(&d.join("e.yaml"), &tiny_yaml("3", extra));
    let mut seen = 0;
    for i in ["0/3", "1/3", "2/3"] {
        let o = membench(
            &[
                "sweep",
                f.to_str().unwrap(),
                "--dry-run",
                "--out",
                "unused",
                "--shard",
                i,
            ],
            &[],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let text = stdout(&o);
        // Whole settings only: each hidden size in a shard brings its 2 × 3 runs.
        for size in ["8", "16", "24", "32"] {
            let n = text
                .lines()
                .filter(|l| l.contains(&format!("arch.hidden_size={size} ")))
                .count();
            assert!(
                n == 0 || n == 6,
                "shard {i}, hidden {size}: {n} runs\n{text}"
            );
            seen += n;
        }
    }
    assert_eq!(seen, 24);
}

#[test]
fn runs_made_before_tune_seeds_take_the_protocol_and_still_reproduce() {
    let d = temp_dir("tune-seeds-later");
    let tuned = tiny_yaml("2", "    tune: {train.lr: [0.01, 0.0003]}\n");
    let out = d.join("results");
    sweep_ok(&write(&d.join("a.yaml"), &tuned), &out, &[], &[]);
    let before = rows(&out);
    assert_eq!(before.len(), 4);
    assert!(before.iter().all(|r| !r.contains_key("tune_seeds")));
    // The same grid choosing on seed 0: the same run ids, nothing retrained, the rows take the key.
    let later = write(&d.join("b.yaml"), &format!("{tuned}    tune_seeds: 1\n"));
    let o = sweep_ok(&later, &out, &[], &[]);
    assert!(
        stderr(&o).contains("4 already finished, 0 to run"),
        "{}",
        stderr(&o)
    );
    let after = rows(&out);
    assert!(after.iter().all(|r| r["tune_seeds"] == "0"), "{after:?}");
    assert_eq!(
        before.iter().map(deterministic).collect::<Vec<_>>(),
        after
            .iter()
            .map(|r| {
                let mut r = deterministic(r);
                r.remove("tune_seeds");
                r
            })
            .collect::<Vec<_>>(),
        "only the protocol column changed"
    );
    // Its saved config has no tune_seeds; the rerun's row lacks the column, and that is no failure.
    let id = &after[0]["run_id"];
    let o = membench(&["reproduce", id, "--results", out.to_str().unwrap()], &[]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}
