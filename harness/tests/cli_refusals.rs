//! Bad command-line input is exit 2 with a message naming the flag, before anything is run or
//! written; a finished results directory is left byte for byte as it was.

mod common;
use common::*;

#[test]
fn bad_flags_and_paths_are_exit_2_and_touch_nothing() {
    let d = temp_dir("cli-refusals");
    let f = write(&d.join("e.yaml"), &tiny_yaml("1", ""));
    let res = d.join("res");
    sweep_ok(&f, &res, &[], &[]);
    let before = dir_digest(&res);
    let (file, res_s) = (f.to_str().unwrap(), res.to_str().unwrap());
    let nothing = d.join("nothing");
    let cases: &[(&[&str], &str)] = &[
        (&["sweep", file, "--out", res_s, "--jobs", "0"], "--jobs"),
        (
            &["sweep", file, "--out", res_s, "--jobs", "99999999999"],
            "--jobs",
        ),
        (
            &["sweep", file, "--out", res_s, "--run-timeout", "0"],
            "--run-timeout",
        ),
        (&["sweep", file, "--out", file], "is a file"),
        (&["list", file, "--out", file], "is a file"),
        (&["run", file, "--threads", "0"], "--threads"),
        (&["bench", "--threads", "0"], "--threads"),
        (&["bench", "--steps", "0"], "--steps"),
        (&["bench", "--min-seconds", "nan"], "--min-seconds"),
        (&["bench", "--models", "no_such_family"], "no_such_family"),
        (
            &["compare", "--results", res_s, "--task", "no_such_task"],
            "--task",
        ),
        (
            &["compare", "--results", res_s, "--by", "no_such_column"],
            "--by",
        ),
        (
            &["compare", "--results", res_s, "--metric", "mse"],
            "--metric mse",
        ),
        (
            &["compare", "--results", res_s, "--where", "task.bits=99"],
            "--where",
        ),
        (
            &["compare", "--results", nothing.to_str().unwrap()],
            "no runs.csv",
        ),
        (&["reproduce", "0123456789ab", "--results", res_s], "not in"),
        (&["reproduce", "table.csv:0", "--results", res_s], "ROW"),
    ];
    for (args, says) in cases {
        let o = membench(args, &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    // A GEMM path that does not exist is refused by every command that trains or times a model,
    // and by --version, before anything runs.
    let bad_gemm = [("MEMBENCH_GEMM", "mkl")];
    let gemm_cases: &[&[&str]] = &[
        &["sweep", file, "--out", res_s],
        &["run", file],
        &["bench", "--models", "lstm"],
        &["--version"],
    ];
    for args in gemm_cases {
        let o = membench(args, &bad_gemm);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("MEMBENCH_GEMM=`mkl`: expected auto, onednn or libtorch"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(dir_digest(&res), before, "results untouched");
    assert!(!res.join("reports").exists(), "no partial report");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A reader that closes the pipe early (`membench --version | head -1`) ends membench quietly, as
/// it does any Unix tool, instead of a `println!` panic with a backtrace (exit 101).
#[test]
fn a_closed_stdout_pipe_is_no_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(BIN)
        .arg("--version")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // no reader left: the write gets SIGPIPE
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
}
