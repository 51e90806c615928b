//! Sweeps: every run of a grid in its own child process, `jobs` at a time.
//!
//! The parent expands the grid, skips runs whose row says they finished, writes each pending run's
//! resolved config, and starts `membench run <config.yaml>` for it. The child trains, writes its
//! curve, eval and result.json; the parent turns result.json (or the child's death) into a row.
//! One run per process because tch's seed is process-global, and so that a crash costs one run.

use crate::config::RunConfig;
use crate::record::{self, RunEnv, RunRecord, RunsCsv};
use crate::train::{self, Status};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Instant;

pub struct SweepOptions {
    pub file: PathBuf,
    pub out: PathBuf,
    pub jobs: usize,
    pub threads: i32,
}

/// Statuses that are final: rerunning would give the same row. Failed and timed-out runs are
/// retried by the next sweep.
pub fn is_final(status: &str) -> bool {
    status == Status::Done.as_str() || status == Status::Diverged.as_str()
}

pub fn sweep(opts: &SweepOptions) -> Result<()> {
    let text = std::fs::read_to_string(&opts.file).with_context(|| format!("reading {}", opts.file.display()))?;
    let runs = crate::grid::expand(&text).with_context(|| format!("{}", opts.file.display()))?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("creating {}", opts.out.display()))?;
    let mut csv = RunsCsv::open(&opts.out)?;
    let pending: Vec<RunConfig> = runs.into_iter().filter(|r| !csv.status_of(&r.run_id()).is_some_and(is_final)).collect();
    eprintln!("sweep: {} runs pending in {}", pending.len(), opts.out.display());
    let exe = std::env::current_exe().context("locating the membench binary")?;
    let (tx, rx) = mpsc::channel::<RunRecord>();
    let queue = std::sync::Mutex::new(pending.into_iter());
    std::thread::scope(|scope| -> Result<()> {
        for _ in 0..opts.jobs.max(1) {
            let (tx, queue, exe) = (tx.clone(), &queue, &exe);
            scope.spawn(move || loop {
                let Some(run) = queue.lock().expect("queue lock").next() else { break };
                let rec = run_child(exe, &run, &opts.out, opts.threads);
                if tx.send(rec).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for rec in rx {
            eprintln!("sweep: {} {} {}", rec.run_id, rec.status.as_str(), rec.reason);
            csv.upsert(&rec)?;
        }
        Ok(())
    })
}

/// Runs one config in a child process and returns its record, synthesizing one if it died.
fn run_child(exe: &Path, run: &RunConfig, out: &Path, threads: i32) -> RunRecord {
    let run_id = run.run_id();
    let dir = record::run_dir(out, &run_id);
    let started = Instant::now();
    let started_at = crate::sys::now_rfc3339();
    let result = (|| -> Result<RunRecord> {
        let _ = std::fs::remove_file(dir.join("result.json"));
        let config_path = dir.join("config.yaml");
        record::write_atomic(&config_path, serde_yaml::to_string(run)?.as_bytes())?;
        let log = std::fs::File::create(dir.join("run.log"))?;
        let status = Command::new(exe)
            .arg("run")
            .arg(&config_path)
            .arg("--threads")
            .arg(threads.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .context("starting the child process")?;
        match std::fs::read(dir.join("result.json")) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).context("reading result.json")?),
            Err(_) => anyhow::bail!("child exited ({status}) without a result; see {}", dir.join("run.log").display()),
        }
    })();
    result.unwrap_or_else(|e| RunRecord {
        run_id,
        config: run.clone(),
        status: Status::Failed,
        reason: format!("{e:#}"),
        outcome: None,
        env: RunEnv {
            device: "cpu".into(),
            threads,
            membench_version: crate::sys::MEMBENCH_VERSION.into(),
            git_commit: crate::sys::GIT_COMMIT.into(),
            tch_version: crate::sys::TCH_VERSION.into(),
            torch_version: crate::sys::TORCH_VERSION.into(),
            host: crate::sys::host(),
            started_at,
            wall_s: started.elapsed().as_secs_f64(),
            peak_rss_bytes: None,
            peak_device_bytes: None,
            peak_flops: None,
        },
    })
}

/// The child side: train the run whose config is at `config_path` and write its files beside it.
pub fn run_one(config_path: &Path, threads: i32) -> Result<RunRecord> {
    let text = std::fs::read_to_string(config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let cfg: RunConfig = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", config_path.display()))?;
    let dir = config_path.parent().context("config has no directory")?;
    let started = Instant::now();
    let started_at = crate::sys::now_rfc3339();
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    tch::manual_seed(cfg.seed as i64);
    let device = tch::Device::Cpu;
    let outcome = train::train(&cfg, device, &mut |p| {
        eprintln!("step {} train_loss {:.5} valid_loss {:.5} token_acc {:.4}", p.step, p.train_loss, p.valid.loss, p.valid.token_acc);
    })?;
    record::write_curve(&dir.join("curve.csv"), &outcome.curve)?;
    record::write_eval(&dir.join("eval.csv"), &outcome.eval)?;
    let rec = RunRecord {
        run_id: cfg.run_id(),
        status: outcome.status,
        reason: outcome.reason.clone(),
        config: cfg,
        env: RunEnv {
            device: format!("{device:?}").to_lowercase(),
            threads,
            membench_version: crate::sys::MEMBENCH_VERSION.into(),
            git_commit: crate::sys::GIT_COMMIT.into(),
            tch_version: crate::sys::TCH_VERSION.into(),
            torch_version: crate::sys::TORCH_VERSION.into(),
            host: crate::sys::host(),
            started_at,
            wall_s: started.elapsed().as_secs_f64(),
            peak_rss_bytes: crate::sys::peak_rss_bytes(),
            peak_device_bytes: None,
            peak_flops: None,
        },
        outcome: Some(outcome),
    };
    record::write_atomic(&dir.join("result.json"), &serde_json::to_vec_pretty(&rec)?)?;
    Ok(rec)
}
