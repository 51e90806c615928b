//! Issue #10: `kill -9` the sweep parent at random moments (and sometimes one of its children
//! first), 20 times, rerunning into the same results directory; every directory that completes
//! must hold every run exactly once, status done, with metrics bit-identical to an uninterrupted
//! sweep. When a directory completes mid-loop it is checked and the loop starts a fresh one, so
//! every kill lands in a sweep that still has work to do.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KILLS: usize = 20;
const RUNS: usize = 4;

/// Deterministic "random" delays (xorshift64): the test is reproducible, the moments still vary.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn children_of(pid: u32) -> Vec<i32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

fn start(file: &std::path::Path, out: &std::path::Path) -> Child {
    Command::new(BIN)
        .args([
            "sweep",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--jobs",
            "2",
        ])
        .env_remove("MEMBENCH_FAULT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Every run exactly once, done, with the reference's deterministic columns.
fn check_complete(out: &std::path::Path, reference: &std::collections::BTreeMap<String, Row>) {
    let rs = rows(out);
    let ids: Vec<&String> = rs.iter().map(|r| &r["run_id"]).collect();
    let unique: std::collections::BTreeSet<&&String> = ids.iter().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "a run id appears twice in {}",
        out.display()
    );
    assert_eq!(rs.len(), RUNS, "{}", out.display());
    for r in &rs {
        assert_eq!(r["status"], "done", "{r:?}");
        assert_eq!(
            deterministic(r),
            deterministic(&reference[&r["run_id"]]),
            "metrics differ from the uninterrupted sweep"
        );
    }
}

fn is_complete(out: &std::path::Path) -> bool {
    out.join("runs.csv").exists() && {
        let rs = rows(out);
        rs.len() == RUNS && rs.iter().all(|r| r["status"] == "done")
    }
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_the_uninterrupted_results() {
    let t0 = Instant::now();
    let d = temp_dir("killloop");
    let f = write(&d.join("e.yaml"), &tiny_yaml(&RUNS.to_string(), ""));
    let reference_dir = d.join("reference");
    sweep_ok(&f, &reference_dir, &[], &[]);
    let reference = by_id(&rows(&reference_dir));
    assert_eq!(reference.len(), RUNS);
    let one_sweep = t0.elapsed().as_secs_f64();

    let mut rng = Rng(0x9e3779b97f4a7c15);
    let (mut interrupted, mut children_killed, mut completed_dirs) = (0, 0, 0);
    let mut generation = 0;
    let mut out = d.join(format!("killed{generation}"));
    for i in 0..KILLS {
        let mut sweep = start(&f, &out);
        // Anywhere from parsing the grid to the end of a whole sweep.
        std::thread::sleep(Duration::from_secs_f64(rng.next_f64() * one_sweep.min(4.0)));
        if i % 4 == 3 {
            if let Some(&child) = children_of(sweep.id()).first() {
                // SAFETY: kill(2) on a pid we just read as our grandchild.
                unsafe { libc::kill(child, libc::SIGKILL) };
                children_killed += 1;
                std::thread::sleep(Duration::from_secs_f64(rng.next_f64() * 0.5));
            }
        }
        if sweep.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        sweep.kill().ok();
        sweep.wait().unwrap();
        if is_complete(&out) {
            check_complete(&out, &reference);
            completed_dirs += 1;
            generation += 1;
            out = d.join(format!("killed{generation}"));
        }
    }
    // Resume the last directory to completion.
    sweep_ok(&f, &out, &[], &[]);
    check_complete(&out, &reference);
    completed_dirs += 1;
    eprintln!(
        "kill loop: {KILLS} kill -9 of the sweep ({interrupted} while it was running), {children_killed} children killed first, \
         {completed_dirs} directories completed and checked, {:.1} s (one sweep {one_sweep:.1} s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        interrupted >= KILLS / 2,
        "most kills must land mid-sweep ({interrupted}/{KILLS})"
    );
}
