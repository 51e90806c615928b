//! `membench`: parse the command line, run one command, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).

mod bench;
mod config;
mod eval;
mod grid;
mod record;
mod runner;
mod slurm;
mod sys;
mod train;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "membench", about = "Reproducible benchmark harness for memory architectures", disable_version_flag = true)]
struct Cli {
    /// Print membench, tch and torch versions and whether CUDA is usable.
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
        #[arg(long)]
        jobs: Option<usize>,
        /// LibTorch intra-op threads per run.
        #[arg(long, default_value_t = 1)]
        threads: i32,
        #[arg(long, default_value = "results")]
        out: PathBuf,
    },
    /// Time one training step per model family at the reference sizes (optionally against PyTorch eager).
    Bench {
        /// Families to time (default: all).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Thread counts to time.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<i32>,
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        #[arg(long, default_value_t = 20)]
        steps: usize,
        /// Also time bench/pytorch_reference.py with the bootstrap's python and print the ratio.
        #[arg(long)]
        compare_pytorch: bool,
        /// Python with torch 2.11 (default: $MEMBENCH_PYTHON, else ~/.cache/membench/python).
        #[arg(long)]
        python: Option<String>,
    },
    /// Write (and with --submit, submit) a Slurm job array sweeping one shard per task, plus a merge job.
    Slurm {
        file: PathBuf,
        /// Array tasks, one shard of the grid each (at most the number of runs).
        #[arg(long, default_value_t = 1)]
        array: usize,
        #[arg(long)]
        partition: Option<String>,
        /// Time limit per task, in Slurm's format (e.g. 2:00:00).
        #[arg(long)]
        time: Option<String>,
        /// Cores per task; the task's sweep runs cpus-per-task / threads runs at once.
        #[arg(long, default_value_t = 1)]
        cpus_per_task: usize,
        /// Memory per task, in Slurm's format (e.g. 8G).
        #[arg(long)]
        mem: Option<String>,
        /// GPUs per task.
        #[arg(long, default_value_t = 0)]
        gpus: usize,
        /// LibTorch intra-op threads per run.
        #[arg(long, default_value_t = 1)]
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
        #[arg(long, default_value_t = 1)]
        threads: i32,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    if cli.version {
        println!("{}", sys::version_text());
        return ExitCode::SUCCESS;
    }
    let result = match cli.command {
        None => {
            eprintln!("membench: no command; see `membench --help`");
            return ExitCode::from(2);
        }
        Some(Cmd::Sweep { file, jobs, threads, out }) => {
            let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            runner::sweep(&runner::SweepOptions { file, out, jobs, threads })
        }
        Some(Cmd::Bench { models, threads, warmup, steps, compare_pytorch, python }) => {
            let python = python.or_else(|| std::env::var("MEMBENCH_PYTHON").ok()).unwrap_or_else(sys::cached_python);
            bench::bench(&bench::BenchOptions { models, threads, warmup, steps, compare_pytorch, python }).map(|rows| print!("{}", bench::markdown(&rows)))
        }
        Some(Cmd::Slurm { file, array, partition, time, cpus_per_task, mem, gpus, threads, out, submit, check }) => match check {
            true => slurm::check(&file, &out),
            false => slurm::slurm(&slurm::SlurmOptions { file, out, array, partition, time, cpus_per_task, mem, gpus, threads, submit }),
        }
        .map(|report| print!("{report}")),
        Some(Cmd::Run { config, threads }) => runner::run_one(&config, threads).map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membench: {e:#}");
            ExitCode::from(if e.is::<slurm::BadInput>() { 2 } else { 1 })
        }
    }
}
