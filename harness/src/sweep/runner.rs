//! Sweeps: every run of a grid in its own child process, `jobs` at a time.
//!
//! The parent expands the grid, skips runs whose row says they finished, writes each pending run's
//! resolved config, and starts `membench run <config.yaml>` for it. The child trains, writes its
//! curve, eval and result.json; the parent turns result.json (or the child's death) into a row.
//! One run per process because tch's seed is process-global, and so that a crash costs one run.

use crate::input::config::load_run_config;
use crate::input::config::RunConfig;
use crate::record::{self, check_results_dir, log_tail, RunEnv, RunRecord, RunsCsv};
use crate::run::train::{self, is_final, Status};
use crate::sweep::follow::{self, Role};
use crate::sweep::lock::DirLock;
use crate::sweep::shard::Shard;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `membench sweep`: train every run of an experiments file that has not finished yet.
#[derive(clap::Args)]
pub struct SweepArgs {
    #[arg(default_value = "experiments.yaml")]
    pub file: PathBuf,
    /// Runs at once (child processes); default: number of cores.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub jobs: Option<u32>,
    /// LibTorch intra-op threads per run.
    #[arg(long, default_value_t = 1, value_parser = crate::run::thread_count())]
    pub threads: i32,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
    /// Run only shard I of N (0-based; runs split by run-id hash). Under a SLURM job array
    /// it defaults to the array task's index and count.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Print the runs (and their status) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Kill a run that takes longer than this (e.g. 90s, 10m, 2h); its row says `timeout`.
    #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
    pub run_timeout: Option<Duration>,
    /// Run on this device instead of each run's `device` (auto, cpu, cuda, cuda:N).
    #[arg(long)]
    pub device: Option<String>,
    /// Address-space limit per run (e.g. 4GiB, 512MiB); a run over it fails.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub run_memory: Option<u64>,
}

impl SweepArgs {
    /// `--jobs`, else the number of cores.
    fn jobs(&self) -> usize {
        self.jobs.map_or_else(
            || std::thread::available_parallelism().map_or(1, |n| n.get()),
            |j| j as usize,
        )
    }
}

/// `membench list`: every run of an experiments file with its status.
#[derive(clap::Args)]
pub struct ListArgs {
    pub file: PathBuf,
    #[arg(long, default_value = "results")]
    pub out: PathBuf,
}

/// `membench run`: train one resolved run config (what a sweep's child process does).
#[derive(clap::Args)]
pub struct RunArgs {
    pub config: PathBuf,
    #[arg(long, default_value_t = 1, value_parser = crate::run::thread_count())]
    pub threads: i32,
    /// Peak FLOP/s of this machine for the mfu column (a sweep measures it once and passes it).
    #[arg(long, value_parser = parse_peak)]
    pub peak_flops: Option<f64>,
}

/// `90s`, `10m`, `2h`: a positive run time limit.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!(
            "`{s}`: expected a positive duration such as 90s, 10m or 2h"
        )),
        other => other.map_err(|e| format!("`{s}`: {e}")),
    }
}

/// `4GiB`, `512MiB`, `1.5G`, `1000000`: a byte count (K/M/G/T are powers of 1024 here).
fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}`: expected a size such as 4GiB or 512MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1u64,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}`; use B, KiB, MiB, GiB or TiB"
            ))
        }
    };
    let bytes = n * mult as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{s}`: expected a positive size"));
    }
    Ok(bytes as u64)
}

/// A positive, finite FLOP/s figure.
fn parse_peak(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "`{s}`: expected a positive FLOP/s figure such as 2.4e11"
        )),
    }
}

/// The runs of `file` this invocation is responsible for (its shard), checked; nothing is written.
fn planned_runs(file: &Path, shard: Option<Shard>) -> Result<Vec<RunConfig>> {
    let runs = crate::input::grid::load(file)?;
    Ok(match shard {
        Some(s) => runs
            .into_iter()
            .filter(|r| s.contains(&follow::shard_key(r)))
            .collect(),
        None => runs,
    })
}

/// The run's swept and tuned values, as `membench list` and the sweep's progress lines name them.
fn swept_text(run: &RunConfig) -> String {
    let tuned = run.tune.iter().map(|(k, v)| (format!("tune:{k}"), v));
    run.swept
        .iter()
        .map(|(k, v)| (k.clone(), v))
        .chain(tuned)
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `membench list`: every run of the file with its status in `out` (pending when it has no row)
/// and what it will be measured on, its resolved evaluation conditions (an empty `eval_lengths`
/// is the task's longest training length).
pub fn list(args: &ListArgs) -> Result<()> {
    let (file, out) = (&args.file, &args.out);
    check_results_dir(out, "--out")?;
    let runs = crate::input::grid::load(file)?;
    let csv = RunsCsv::read_only(out)?;
    let roles = follow::roles(&runs, &csv, out);
    let mut text = String::from("run_id\texperiment\tseed\tstatus\teval_lengths\tswept\n");
    for (r, role) in runs.iter().zip(&roles) {
        let id = r.run_id();
        let status = csv.status_of(&id).unwrap_or(role.pending_status());
        // The grid was checked: every task builds.
        let points = r.task.build().map(|t| t.eval_points()).unwrap_or_default();
        text.push_str(&format!(
            "{id}\t{}\t{}\t{status}\t{}\t{}\n",
            r.experiment,
            r.seed,
            eval_text(&points),
            swept_text(r)
        ));
    }
    print!("{text}");
    Ok(())
}

/// Evaluation conditions as `list` shows them: `10,20,40` (lengths), `64,128 × depths 0,0.5,1`
/// (passkey's grid of lengths and depths), else each point as `length@depth`.
fn eval_text(points: &[membench_tasks::EvalPoint]) -> String {
    fn distinct<T: PartialEq + Copy>(xs: impl Iterator<Item = T>) -> Vec<T> {
        let mut out = vec![];
        for x in xs {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out
    }
    let join = |xs: Vec<String>| xs.join(",");
    let lengths = distinct(points.iter().map(|p| p.length));
    let depths = distinct(points.iter().filter_map(|p| p.depth));
    let lengths_text = join(lengths.iter().map(usize::to_string).collect());
    if depths.is_empty() {
        lengths_text
    } else if lengths.len() * depths.len() == points.len() {
        let depths_text = join(depths.iter().map(f64::to_string).collect());
        format!("{lengths_text} × depths {depths_text}")
    } else {
        join(
            points
                .iter()
                .map(|p| match p.depth {
                    Some(d) => format!("{}@{d}", p.length),
                    None => p.length.to_string(),
                })
                .collect(),
        )
    }
}

/// `sweep --dry-run`: each run of the plan with its status in `--out`, and what a sweep would
/// run; nothing is written.
fn dry_run(runs: &[RunConfig], opts: &SweepArgs) -> Result<()> {
    let csv = RunsCsv::read_only(&opts.out)?;
    let orphans = orphaned_results(&csv, &opts.out)?;
    let status_of = |id: &str| {
        csv.status_of(id).or_else(|| {
            orphans
                .iter()
                .find(|o| o.run_id == id)
                .map(|o| o.status.as_str())
        })
    };
    let roles = follow::roles(runs, &csv, &opts.out);
    let unfinished = |role: Role| {
        runs.iter()
            .zip(&roles)
            .filter(|(r, x)| **x == role && !status_of(&r.run_id()).is_some_and(is_final))
            .count()
    };
    let (pending, waiting) = (unfinished(Role::Run), unfinished(Role::Waiting));
    for (r, role) in runs.iter().zip(&roles) {
        let status = status_of(&r.run_id())
            .unwrap_or(role.pending_status())
            .to_string();
        println!(
            "{}\t{}\t{}\t{status}\t{}",
            r.run_id(),
            r.experiment,
            r.seed,
            swept_text(r)
        );
    }
    let waits = if waiting > 0 {
        format!(", {waiting} more await their setting's choice on its tuning seeds (only the chosen candidate's will run)")
    } else {
        String::new()
    };
    eprintln!(
        "dry run: {} runs, {pending} would run{waits}; nothing written",
        runs.len()
    );
    Ok(())
}

pub fn sweep(opts: &SweepArgs) -> Result<()> {
    let shard = Shard::resolve(opts.shard.as_deref())?;
    let jobs = opts.jobs();
    check_results_dir(&opts.out, "--out")?;
    let mut runs = planned_runs(&opts.file, shard)?;
    if let Some(spec) = &opts.device {
        let device = crate::input::config::canonical(spec)
            .map_err(|m| crate::input::strict::bad_option(anyhow::anyhow!("--device: {m}")))?;
        runs.iter_mut().for_each(|r| r.device = device.clone());
    }
    if opts.dry_run {
        return dry_run(&runs, opts);
    }
    // Checked before anything is created or locked, so a refused sweep leaves the directory as it was.
    let csv = RunsCsv::read_only(&opts.out)?;
    let orphans = orphaned_results(&csv, &opts.out)?;
    refuse_other_versions(
        csv.rows()
            .iter()
            .cloned()
            .chain(orphans.iter().map(RunRecord::cells)),
        &opts.out,
    )?;
    std::fs::create_dir_all(&opts.out)
        .with_context(|| format!("creating {}", opts.out.display()))?;
    let _lock = DirLock::acquire(&opts.out)?;
    let mut csv = RunsCsv::open(&opts.out)?;
    for rec in orphaned_results(&csv, &opts.out)? {
        eprintln!(
            "sweep: run {id} has runs/{id}/result.json but no row in runs.csv (a sweep stopped \
             before writing it): row recovered from result.json, not trained again",
            id = rec.run_id
        );
        csv.upsert(&rec)?;
    }
    if follow::refresh_protocol(&runs, &mut csv)? > 0 {
        eprintln!("sweep: rows of finished runs now name their experiment's tune_seeds");
    }
    let total = runs.len();
    let finished = |csv: &RunsCsv, r: &RunConfig| csv.status_of(&r.run_id()).is_some_and(is_final);
    let mut roles = follow::roles(&runs, &csv, &opts.out);
    let count = |role: Role| {
        runs.iter()
            .zip(&roles)
            .filter(|(r, x)| **x == role && !finished(&csv, r))
            .count()
    };
    let (to_run, waiting) = (count(Role::Run), count(Role::Waiting));
    let skipped = runs.iter().filter(|r| finished(&csv, r)).count();
    let tty = std::io::stderr().is_terminal();
    if !tty {
        let waits = if waiting > 0 {
            format!(" (and {waiting} await their setting's choice on its tuning seeds)")
        } else {
            String::new()
        };
        eprintln!(
            "sweep: {total} runs, {skipped} already finished, {to_run} to run{waits}, {} at once, in {}",
            jobs,
            opts.out.display()
        );
    }
    let bar = if tty {
        ProgressBar::new((skipped + to_run + waiting) as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} runs  {msg}  {elapsed_precise} ETA {eta}",
        )
        .expect("valid template"),
    );
    bar.set_position(skipped as u64);
    let exe = std::env::current_exe().context("locating the membench binary")?;
    // The CPU's practical peak with the runs' thread count, measured once, for the mfu column.
    let peak_flops = runs
        .iter()
        .any(|r| r.device == "cpu" && !finished(&csv, r))
        .then(|| {
            tch::set_num_threads(opts.threads);
            crate::run::bench::matmul_peak_flops()
        });
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    // Rounds: the runs that can run now; then the followers whose setting's choice the finished
    // tuning runs have made. A run is tried at most once per sweep.
    let mut tried = std::collections::HashSet::new();
    loop {
        let batch: Vec<RunConfig> = runs
            .iter()
            .zip(&roles)
            .filter(|(r, role)| {
                **role == Role::Run && !finished(&csv, r) && !tried.contains(&r.run_id())
            })
            .map(|(r, _)| r.clone())
            .collect();
        let not_chosen = roles.iter().filter(|x| **x == Role::NotChosen).count();
        bar.set_length((total - not_chosen) as u64);
        if batch.is_empty() {
            let waiting: Vec<&RunConfig> = runs
                .iter()
                .zip(&roles)
                .filter(|(r, x)| **x == Role::Waiting && !finished(&csv, r))
                .map(|(r, _)| r)
                .collect();
            if let Some(r) = waiting.first() {
                eprintln!(
                    "sweep: {} runs on later seeds were not run: the runs of their setting's tuning seeds \
                     ({:?}) did not all finish (failed, timed out, or in another results directory), so \
                     no candidate is chosen yet; first: experiment {}, seed {}. Run the sweep again.",
                    waiting.len(),
                    r.tune_seeds,
                    r.experiment,
                    r.seed
                );
            }
            if not_chosen > 0 {
                eprintln!(
                    "sweep: {not_chosen} runs on later seeds are not made: their candidate was not the one \
                     chosen on the tuning seeds (tune_seeds)"
                );
            }
            break;
        }
        tried.extend(batch.iter().map(RunConfig::run_id));
        run_batch(
            batch,
            jobs,
            &exe,
            opts,
            peak_flops,
            &mut csv,
            &bar,
            &mut counts,
        )?;
        roles = follow::roles(&runs, &csv, &opts.out);
    }
    bar.finish_and_clear();
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    eprintln!(
        "sweep: finished ({}); {skipped} were already done; rows in {}",
        if summary.is_empty() {
            "nothing to run".into()
        } else {
            summary.join(", ")
        },
        opts.out.join("runs.csv").display()
    );
    Ok(())
}

/// Runs `batch`, `jobs` at a time, each in its child process, and writes each one's row as it
/// ends; `counts` tallies their statuses.
#[allow(clippy::too_many_arguments)]
fn run_batch(
    batch: Vec<RunConfig>,
    jobs: usize,
    exe: &Path,
    opts: &SweepArgs,
    peak_flops: Option<f64>,
    csv: &mut RunsCsv,
    bar: &ProgressBar,
    counts: &mut BTreeMap<&'static str, usize>,
) -> Result<()> {
    let tty = std::io::stderr().is_terminal();
    let workers = jobs.min(batch.len()).max(1);
    let (tx, rx) = mpsc::channel::<RunRecord>();
    let queue = std::sync::Mutex::new(batch.into_iter());
    let running = AtomicUsize::new(0);
    std::thread::scope(|scope| -> Result<()> {
        // No more workers than runs to do (a huge --jobs must not spawn idle threads).
        for _ in 0..workers {
            let (tx, queue, running) = (tx.clone(), &queue, &running);
            scope.spawn(move || loop {
                let Some(run) = queue.lock().expect("queue lock").next() else {
                    break;
                };
                running.fetch_add(1, Ordering::SeqCst);
                let rec = run_child(exe, &run, opts, peak_flops.filter(|_| run.device == "cpu"));
                running.fetch_sub(1, Ordering::SeqCst);
                if tx.send(rec).is_err() {
                    break;
                }
            });
        }
        drop(tx);
        for rec in rx {
            *counts.entry(rec.status.as_str()).or_default() += 1;
            // A row that cannot be written stops the sweep: later rows would be lost the same way.
            csv.upsert(&rec)?;
            bar.inc(1);
            let bad = counts.get("failed").unwrap_or(&0) + counts.get("timeout").unwrap_or(&0);
            bar.set_message(format!(
                "running {}, failed {bad}",
                running.load(Ordering::SeqCst)
            ));
            let line = format!(
                "{} {} {} {}",
                rec.run_id,
                rec.config.experiment,
                rec.status.as_str(),
                rec.reason
            );
            if tty {
                if rec.status != Status::Done {
                    bar.println(line);
                }
            } else {
                eprintln!("sweep: {line}");
            }
        }
        Ok(())
    })
}

/// Runs whose directory holds a result.json but which have no row in runs.csv: the sweep stopped
/// between a child's end and its row's append, or runs.csv was lost or emptied. The child wrote
/// result.json last, after its curve and eval files, and the sweep removes it before (re)starting a
/// run, so it is that run's whole record: its row is recovered, and training it again would
/// overwrite a finished run. A result.json that cannot be read is bad input (nothing is written).
fn orphaned_results(csv: &RunsCsv, out: &Path) -> Result<Vec<RunRecord>> {
    let runs = out.join("runs");
    let Ok(entries) = std::fs::read_dir(&runs) else {
        return Ok(vec![]);
    };
    let mut found = vec![];
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", runs.display()))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("result.json");
        if csv.status_of(&id).is_some() || !path.is_file() {
            continue;
        }
        let bad = |why: String| {
            crate::input::strict::bad_option(anyhow::anyhow!(
                "{}: {why}; it has no row in runs.csv, so the sweep would train the run again and \
                 overwrite it: move {} away first",
                path.display(),
                entry.path().display()
            ))
        };
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let rec: RunRecord = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("not a membench result ({e})")))?;
        if rec.run_id != id {
            return Err(bad(format!("holds run {}, not {id}", rec.run_id)));
        }
        found.push(rec);
    }
    found.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    Ok(found)
}

/// A results directory holds one version's numbers: resuming a sweep of membench 0.1 with
/// membench 0.2 (or another torch, or another GEMM path on the CPU) would put rows that are not
/// comparable in one table.
fn refuse_other_versions(
    rows: impl Iterator<Item = BTreeMap<String, String>>,
    out: &Path,
) -> Result<()> {
    let stale: Vec<(String, String)> = rows
        .filter(|row| row.get("status").is_some_and(|s| is_final(s)))
        .filter_map(|row| {
            crate::record::version_mismatch(&row)
                .or_else(|| gemm_mismatch(&row))
                .map(|why| (row.get("run_id").cloned().unwrap_or_default(), why))
        })
        .collect();
    match stale.first() {
        None => Ok(()),
        Some((id, why)) => Err(crate::input::strict::bad_option(anyhow::anyhow!(
            "{}: {} finished runs were made by another version (run {id}: {why}); their numbers are not comparable \
             with this binary's, so the sweep will not add to them: pass a new --out directory, or move the old results away",
            out.join("runs.csv").display(),
            stale.len()
        ))),
    }
}

/// Why a CPU row made on another GEMM path than this process's cannot share its directory: the
/// two paths group float32 sums differently, so the same run gives other numbers.
fn gemm_mismatch(row: &BTreeMap<String, String>) -> Option<String> {
    let (stored, here) = (record::gemm_path_of(row), crate::sys::gemm_path_for("cpu"));
    (!stored.is_empty() && stored != here).then(|| {
        format!(
            "stored run used the {stored} GEMM path, this process uses {here} (MEMBENCH_GEMM, \
             or a CPU that cannot run oneDNN's float32 GEMM)"
        )
    })
}

/// Human form of a child's end: exit code or signal.
fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL: killed, e.g. by the kernel OOM killer)",
            libc::SIGABRT => " (SIGABRT: abort, e.g. a failed allocation)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGINT => " (SIGINT)",
            libc::SIGBUS => " (SIGBUS)",
            _ => "",
        };
        format!("killed by signal {sig}{name}")
    } else {
        format!("exit status {}", status.code().unwrap_or(-1))
    }
}

/// Runs one config in a child process and returns its record, synthesizing one if it died.
fn run_child(exe: &Path, run: &RunConfig, opts: &SweepArgs, peak_flops: Option<f64>) -> RunRecord {
    let run_id = run.run_id();
    let dir = record::run_dir(&opts.out, &run_id);
    let started = Instant::now();
    let started_at = crate::sys::now_rfc3339();
    let mut status = Status::Failed;
    let result = (|| -> Result<RunRecord> {
        let log_path = dir.join("run.log");
        let _ = std::fs::remove_file(dir.join("result.json"));
        let config_path = dir.join("config.yaml");
        record::write_atomic(&config_path, serde_yaml::to_string(run)?.as_bytes())?;
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg(&config_path)
            .arg("--threads")
            .arg(opts.threads.to_string());
        if let Some(peak) = peak_flops {
            cmd.arg("--peak-flops").arg(format!("{peak:e}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let memory = opts.run_memory;
        // SAFETY: between fork and exec only async-signal-safe calls (prctl, setrlimit, getppid).
        unsafe {
            cmd.pre_exec(move || {
                // Die with the sweep: a killed sweep must not leave runs writing into its directory.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() == 1 {
                    return Err(std::io::Error::other("the sweep exited"));
                }
                if let Some(bytes) = memory {
                    let lim = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the child process")?;
        let exit = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            if opts.run_timeout.is_some_and(|t| started.elapsed() > t) {
                let _ = child.kill();
                let _ = child.wait();
                status = Status::Timeout;
                anyhow::bail!(
                    "exceeded --run-timeout {}; killed",
                    humantime::format_duration(opts.run_timeout.unwrap_or_default())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        match std::fs::read(dir.join("result.json")) {
            Ok(bytes) if exit.success() => {
                Ok(serde_json::from_slice(&bytes).context("reading result.json")?)
            }
            _ => anyhow::bail!("{}: {}", describe_exit(exit), log_tail(&log_path, 4)),
        }
    })();
    result.unwrap_or_else(|e| RunRecord {
        run_id,
        config: run.clone(),
        status,
        reason: format!("{e:#}"),
        outcome: None,
        env: RunEnv::here(
            run.device.clone(),
            opts.threads,
            started_at,
            started.elapsed().as_secs_f64(),
        ),
    })
}

/// Testing only (feature `fault-injection`, which `make test` turns on and release builds lack):
/// `MEMBENCH_FAULT=kind[:seed],...` makes the child of every run (or of the runs
/// with that seed) fail on purpose: `panic`, `abort`, `exit` (status 3), `hang` (sleeps until
/// killed), `oom` (allocates until the address-space limit; refused without `--run-memory`),
/// `nan` (an Adam lr of 1e37 pushes the f32 weights to ~1e38 in one step, so the next loss is
/// inf/NaN and training diverges through the real detection path; 1e38 and up overflow libtorch's
/// f32 step size and panic instead).
/// Not part of any config, so it cannot change a run id or leak into a results row.
#[cfg(feature = "fault-injection")]
fn inject_fault(cfg: &mut RunConfig) -> Result<()> {
    let Ok(spec) = std::env::var("MEMBENCH_FAULT") else {
        return Ok(());
    };
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (kind, seed) = match item.split_once(':') {
            Some((k, s)) => (
                k,
                Some(
                    s.parse::<u64>()
                        .context("MEMBENCH_FAULT: seed must be an integer")?,
                ),
            ),
            None => (item, None),
        };
        if seed.is_some_and(|s| s != cfg.seed) {
            continue;
        }
        eprintln!("MEMBENCH_FAULT: injecting `{kind}`");
        match kind {
            "panic" => panic!("injected panic (MEMBENCH_FAULT)"),
            "abort" => std::process::abort(),
            "exit" => std::process::exit(3),
            "hang" => loop {
                std::thread::sleep(Duration::from_secs(3600));
            },
            "oom" => {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                // SAFETY: getrlimit writes into the struct we pass.
                if unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } != 0
                    || lim.rlim_cur == libc::RLIM_INFINITY
                {
                    anyhow::bail!("MEMBENCH_FAULT=oom needs --run-memory (it would eat the machine otherwise)");
                }
                let mut hog: Vec<Vec<u8>> = vec![];
                loop {
                    hog.push(vec![1u8; 64 << 20]);
                }
            }
            "nan" => cfg.train.lr = 1e37,
            other => anyhow::bail!("MEMBENCH_FAULT: unknown fault `{other}`"),
        }
    }
    Ok(())
}

/// The child side: train the run whose config is at `config_path` and write its files beside it.
pub fn run_one(args: &RunArgs) -> Result<RunRecord> {
    let (config_path, threads, peak_flops) = (args.config.as_path(), args.threads, args.peak_flops);
    let cfg = load_run_config(config_path)?;
    #[cfg_attr(not(feature = "fault-injection"), allow(unused_mut))]
    let mut trained = cfg.clone();
    #[cfg(feature = "fault-injection")]
    inject_fault(&mut trained)?;
    let dir = config_path.parent().context("config has no directory")?;
    let started = Instant::now();
    let started_at = crate::sys::now_rfc3339();
    if cfg.train.flush_denormals {
        crate::sys::flush_denormals()?; // before any intra-op thread exists: they inherit it
    }
    tch::set_num_threads(threads);
    tch::set_num_interop_threads(1);
    tch::manual_seed(cfg.seed as i64);
    let device = crate::run::device::resolve(&cfg.device)?;
    crate::run::device::reset_peak(device);
    let outcome = train::train(&trained, device, &mut |p| {
        eprintln!(
            "step {} train_loss {:.5} valid_loss {:.5} token_acc {:.4}",
            p.step, p.train_loss, p.valid.loss, p.valid.token_acc
        );
    })?;
    record::write_curve(&dir.join("curve.csv"), &outcome.curve)?;
    record::write_eval(&dir.join("eval.csv"), &outcome.eval)?;
    let rec = RunRecord {
        run_id: cfg.run_id(),
        status: outcome.status,
        reason: outcome.reason.clone(),
        config: cfg,
        env: RunEnv {
            peak_rss_bytes: crate::sys::peak_rss_bytes(),
            peak_device_bytes: crate::run::device::peak_allocated_bytes(device),
            peak_flops,
            ..RunEnv::here(
                crate::run::device::name(device),
                threads,
                started_at,
                started.elapsed().as_secs_f64(),
            )
        },
        outcome: Some(outcome),
    };
    record::write_atomic(&dir.join("result.json"), &serde_json::to_vec_pretty(&rec)?)?;
    Ok(rec)
}
