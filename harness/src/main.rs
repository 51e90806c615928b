//! `membench`: parse the command line, run one command, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).

mod bench;
mod compare;
mod config;
mod device;
mod eval;
mod grid;
mod plot;
mod record;
mod reproduce;
mod runner;
mod stats;
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
    /// Train one resolved run config (what a sweep's child process does), writing beside it.
    Run {
        config: PathBuf,
        #[arg(long, default_value_t = 1)]
        threads: i32,
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
        /// x axis of the comparison plot (default: every axis the data has).
        #[arg(long, value_enum)]
        x: Option<compare::XAxis>,
        /// Metric name, e.g. seq_acc (default: the task's success metric).
        #[arg(long)]
        metric: Option<String>,
        /// Checkpoint reported: last or best_valid (default: the runs' train.selection).
        #[arg(long, value_enum)]
        selection: Option<compare::Selection>,
        /// Output directory (default: <results>/reports).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Every task with default metric, selection and axes (same as `membench report`).
        #[arg(long)]
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
        Some(Cmd::Run { config, threads }) => runner::run_one(&config, threads).map(|_| ()),
        Some(Cmd::Reproduce { target, results, keep }) => reproduce::reproduce(&reproduce::ReproduceOptions { target, results, keep }),
        Some(Cmd::Compare { results, all: true, .. }) | Some(Cmd::Report { results }) => {
            compare::report(&results, &compare::command_line()).map(print_written)
        }
        Some(Cmd::Compare { results, task, by, x, metric, selection, out, all: false }) => {
            let command = compare::command_line();
            compare::compare(&compare::CompareOptions { results, task, by, x, metric, selection, out, command }).map(print_written)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("membench: {e:#}");
            ExitCode::from(1)
        }
    }
}
