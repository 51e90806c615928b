//! `membench`: parse the command line, run one command, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).

mod input;
mod record;
mod report;
mod run;
mod sweep;
mod sys;
#[cfg(test)]
mod test_support;

use input::{grid, strict};
use report::{compare, reproduce};
use run::bench;
use sweep::{merge, runner, shard, slurm};

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "membench",
    about = "Reproducible benchmark harness for memory architectures",
    disable_version_flag = true
)]
struct Cli {
    /// Print membench, tch and torch versions, the CPU's vector ISA, the GEMM path chosen on it
    /// (MEMBENCH_GEMM) and whether CUDA is usable.
    #[arg(long, short = 'V')]
    version: bool,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train every run of an experiments file that has not finished yet.
    Sweep {
        #[arg(default_value = "experiments.yaml")]
        file: PathBuf,
        /// Runs at once (child processes); default: number of cores.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        jobs: Option<u32>,
        /// LibTorch intra-op threads per run.
        #[arg(long, default_value_t = 1, value_parser = thread_count())]
        threads: i32,
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Run only shard I of N (0-based; runs split by run-id hash). Under a SLURM job array
        /// it defaults to the array task's index and count.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Print the runs (and their status) and write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Kill a run that takes longer than this (e.g. 90s, 10m, 2h); its row says `timeout`.
        #[arg(long, value_name = "DUR", value_parser = parse_timeout)]
        run_timeout: Option<std::time::Duration>,
        /// Run on this device instead of each run's `device` (auto, cpu, cuda, cuda:N).
        #[arg(long)]
        device: Option<String>,
        /// Address-space limit per run (e.g. 4GiB, 512MiB); a run over it fails.
        #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
        run_memory: Option<u64>,
    },
    /// Check an experiments file; print every mistake with file:line:col (exit 2), or the run count.
    Validate { file: PathBuf },
    /// Every run of an experiments file: run_id, experiment, seed, status, swept values.
    List {
        file: PathBuf,
        #[arg(long, default_value = "results")]
        out: PathBuf,
    },
    /// Union of results directories (e.g. shards) into --out, each run once.
    Merge {
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
    },
    /// Time one training step per model family at the reference sizes (optionally against PyTorch eager).
    Bench {
        /// Families to time (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Thread counts to time.
        #[arg(long, value_delimiter = ',', default_value = "1,2", value_parser = thread_count())]
        threads: Vec<i32>,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        warmup: u32,
        /// Timed steps: at least this many, and at least --min-seconds' worth (so that short steps
        /// get a median over many; the PyTorch reference runs the same number).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        steps: u32,
        #[arg(long, default_value_t = 2.0, value_parser = parse_seconds)]
        min_seconds: f64,
        /// Rounds per model and thread count, membench then PyTorch in each (interleaved, so that
        /// a slow spell of a shared machine hits both); the table gives the median over rounds.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
        rounds: u32,
        /// Also time bench/pytorch_reference.py with the bootstrap's python and print the ratio.
        #[arg(long)]
        compare_pytorch: bool,
        /// Python with torch 2.11 (default: $MEMBENCH_PYTHON, else ~/.cache/membench/python).
        #[arg(long)]
        python: Option<String>,
    },
    /// Train families here and in their PyTorch twins from the same weights and batches; compare losses.
    Parity(run::parity::ParityArgs),
    /// Write (and with --submit, submit) a Slurm job array sweeping one shard per task, plus a merge job.
    Slurm {
        file: PathBuf,
        /// Array tasks, one shard of the grid each (at most the number of runs).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        array: u32,
        #[arg(long)]
        partition: Option<String>,
        /// Time limit per task, in Slurm's format (e.g. 2:00:00).
        #[arg(long)]
        time: Option<String>,
        /// Cores per task; the task's sweep runs cpus-per-task / threads runs at once.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
        cpus_per_task: u32,
        /// Memory per task, in Slurm's format (e.g. 8G).
        #[arg(long)]
        mem: Option<String>,
        /// GPUs per task.
        #[arg(long, default_value_t = 0)]
        gpus: usize,
        /// LibTorch intra-op threads per run.
        #[arg(long, default_value_t = 1, value_parser = thread_count())]
        threads: i32,
        #[arg(long, default_value = "results")]
        out: PathBuf,
        /// Submit with sbatch and print the job ids (default: only write the scripts).
        #[arg(long)]
        submit: bool,
        /// Write nothing; list the runs of FILE not finished in OUT/runs.csv (exit 1 if any).
        #[arg(long, conflicts_with = "submit")]
        check: bool,
    },
    /// Train one resolved run config (what a sweep's child process does), writing beside it.
    Run {
        config: PathBuf,
        #[arg(long, default_value_t = 1, value_parser = thread_count())]
        threads: i32,
        /// Peak FLOP/s of this machine for the mfu column (a sweep measures it once and passes it).
        #[arg(long, value_parser = parse_peak)]
        peak_flops: Option<f64>,
    },
    /// Rerun a stored run from its saved config and check its metrics match (exit 1 naming the
    /// columns that differ). TARGET: a run id, or TABLE.csv:ROW for a row of a `compare` table.
    Reproduce {
        target: String,
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Keep the scratch directory of the rerun.
        #[arg(long)]
        keep: bool,
    },
    /// Tables (Markdown + CSV) and plots comparing groups of runs over seeds, per task.
    Compare {
        #[arg(long, default_value = "results")]
        results: PathBuf,
        /// Only this task (default: every task in runs.csv).
        #[arg(long)]
        task: Option<String>,
        /// runs.csv column naming the groups (swept keys other than the seed split them further).
        #[arg(long, default_value = "arch")]
        by: String,
        /// x axis of the comparison plot: eval_len, depth, state_size, param_count, steps, or a
        /// numeric config key such as task.num_kv_pairs (default: every axis the data has).
        #[arg(long)]
        x: Option<compare::XAxis>,
        /// Only runs whose runs.csv column or resolved config key has this value, e.g.
        /// `--where task.num_kv_pairs=8` (repeatable; all must hold).
        #[arg(long = "where", value_name = "KEY=VALUE", value_parser = compare::parse_filter)]
        filters: Vec<(String, String)>,
        /// Metric name, e.g. seq_acc (default: the task's success metric).
        #[arg(long)]
        metric: Option<String>,
        /// Checkpoint reported: last or best_valid (default: the runs' train.selection).
        #[arg(long, value_enum)]
        selection: Option<compare::Selection>,
        /// Output directory (default: <results>/reports).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Every task with default metric, selection and axes (same as `membench report`; --out
        /// still applies).
        #[arg(long, conflicts_with_all = ["task", "x", "filters", "metric", "selection"])]
        all: bool,
    },
    /// Regenerate every table and plot of a results directory under <results>/reports.
    Report {
        #[arg(long, default_value = "results")]
        results: PathBuf,
    },
}

fn print_written(paths: Vec<PathBuf>) {
    for p in paths {
        println!("{}", p.display());
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if cli.version {
        return finish(
            sys::version_text()
                .map(|text| println!("{text}"))
                .map_err(strict::bad_option),
        );
    }
    // Commands that train or time models check MEMBENCH_GEMM (and probe oneDNN) before anything
    // else, so a bad value is exit 2 here and not a failed row in every run.
    let trains = matches!(
        cli.command,
        Some(Cmd::Sweep { .. } | Cmd::Run { .. } | Cmd::Bench { .. } | Cmd::Reproduce { .. })
    );
    if trains {
        if let Err(e) = sys::gemm_choice() {
            return finish(Err(strict::bad_option(e)));
        }
    }
    let result = match cli.command {
        None => {
            eprintln!("membench: no command; see `membench --help`");
            return ExitCode::from(2);
        }
        Some(Cmd::Sweep {
            file,
            jobs,
            threads,
            out,
            shard,
            dry_run,
            run_timeout,
            run_memory,
            device,
        }) => {
            let jobs = jobs.map_or_else(
                || std::thread::available_parallelism().map_or(1, |n| n.get()),
                |j| j as usize,
            );
            shard::Shard::resolve(shard.as_deref())
                .map_err(anyhow::Error::from)
                .and_then(|shard| {
                    runner::sweep(&runner::SweepOptions {
                        file,
                        out,
                        jobs,
                        threads,
                        shard,
                        dry_run,
                        run_timeout,
                        run_memory,
                        device,
                    })
                })
        }
        Some(Cmd::Bench {
            models,
            threads,
            warmup,
            steps,
            min_seconds,
            rounds,
            compare_pytorch,
            python,
        }) => {
            let python = python
                .or_else(|| std::env::var("MEMBENCH_PYTHON").ok())
                .unwrap_or_else(sys::cached_python);
            bench::bench(&bench::BenchOptions {
                models,
                threads,
                warmup: warmup as usize,
                steps: steps as usize,
                min_seconds,
                rounds: rounds as usize,
                compare_pytorch,
                python,
            })
            .map(|rows| print!("{}", bench::markdown(&rows)))
        }
        Some(Cmd::Slurm {
            file,
            array,
            partition,
            time,
            cpus_per_task,
            mem,
            gpus,
            threads,
            out,
            submit,
            check,
        }) => match check {
            true => slurm::check(&file, &out),
            false => slurm::slurm(&slurm::SlurmOptions {
                file,
                out,
                array: array as usize,
                partition,
                time,
                cpus_per_task: cpus_per_task as usize,
                mem,
                gpus,
                threads,
                submit,
            }),
        }
        .map(|report| print!("{report}")),
        Some(Cmd::Parity(args)) => run::parity::run(&args),
        Some(Cmd::Validate { file }) => {
            grid::load(&file).map_err(anyhow::Error::from).map(|runs| {
                println!("{}: ok, {} runs", file.display(), runs.len());
            })
        }
        Some(Cmd::List { file, out }) => runner::list(&file, &out),
        Some(Cmd::Merge { dirs, out }) => merge::merge(&dirs, &out),
        Some(Cmd::Run {
            config,
            threads,
            peak_flops,
        }) => runner::run_one(&config, threads, peak_flops).map(|_| ()),
        Some(Cmd::Reproduce {
            target,
            results,
            keep,
        }) => reproduce::reproduce(&reproduce::ReproduceOptions {
            target,
            results,
            keep,
        }),
        Some(Cmd::Compare {
            results,
            out,
            all: true,
            ..
        }) => compare::report(&results, out, &compare::command_line()).map(print_written),
        Some(Cmd::Report { results }) => {
            compare::report(&results, None, &compare::command_line()).map(print_written)
        }
        Some(Cmd::Compare {
            results,
            task,
            by,
            x,
            filters,
            metric,
            selection,
            out,
            all: false,
        }) => {
            let command = compare::command_line();
            compare::compare(&compare::CompareOptions {
                results,
                task,
                by,
                x,
                filters,
                metric,
                selection,
                out,
                command,
            })
            .map(print_written)
        }
    };
    finish(result)
}

/// The exit code of a command's result, with its error printed as a chain.
fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membench: {e:#}");
            // Bad input (a mistake in a file or flag the user can fix) is 2; anything else 1.
            ExitCode::from(
                if e.downcast_ref::<strict::BadInput>().is_some() || e.is::<strict::BadOption>() {
                    2
                } else {
                    1
                },
            )
        }
    }
}

/// A LibTorch intra-op thread count, 1..=[`run::MAX_THREADS`].
fn thread_count() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(1..=i64::from(run::MAX_THREADS))
}

/// `90s`, `10m`, `2h`: a positive run time limit.
fn parse_timeout(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err(format!(
            "`{s}`: expected a positive duration such as 90s, 10m or 2h"
        )),
        other => other.map_err(|e| format!("`{s}`: {e}")),
    }
}

/// A finite, non-negative number of seconds (at most a day).
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if (0.0..=86_400.0).contains(&x) => Ok(x),
        _ => Err(format!("`{s}`: expected seconds in 0..=86400")),
    }
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
