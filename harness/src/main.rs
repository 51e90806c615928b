//! `membench`: parse the command line, run one command, map errors to exit codes
//! (0 ok, 1 runtime failure, 2 bad input).
//!
//! Each command's options are one `clap::Args` struct beside the code that runs it, and that
//! code's entry function takes it whole; a new command is its `XxxArgs` struct and function,
//! plus its variant in [`Cmd`] and its line in [`Cmd::run`].

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
use sweep::{merge, runner, slurm};

use clap::{Parser, Subcommand};
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
    Sweep(runner::SweepArgs),
    /// Check an experiments file; print every mistake with file:line:col (exit 2), or the run count.
    Validate(grid::ValidateArgs),
    /// Every run of an experiments file: run_id, experiment, seed, status, swept values.
    List(runner::ListArgs),
    /// Union of results directories (e.g. shards) into --out, each run once.
    Merge(merge::MergeArgs),
    /// Time one training step per model family at the reference sizes (optionally against PyTorch eager).
    Bench(bench::BenchArgs),
    /// Train families here and in their PyTorch twins from the same weights and batches; compare losses.
    Parity(run::parity::ParityArgs),
    /// Write (and with --submit, submit) a Slurm job array sweeping one shard per task, plus a merge job.
    Slurm(slurm::SlurmArgs),
    /// Train one resolved run config (what a sweep's child process does), writing beside it.
    Run(runner::RunArgs),
    /// Rerun a stored run from its saved config and check its metrics match (exit 1 naming the
    /// columns that differ). TARGET: a run id, or TABLE.csv:ROW for a row of a `compare` table.
    Reproduce(reproduce::ReproduceArgs),
    /// Tables (Markdown + CSV) and plots comparing groups of runs over seeds, per task.
    Compare(compare::CompareArgs),
    /// Regenerate every table and plot of a results directory under <results>/reports.
    Report(compare::ReportArgs),
}

impl Cmd {
    /// Commands that train or time models check MEMBENCH_GEMM (and probe oneDNN) before anything
    /// else, so a bad value is exit 2 here and not a failed row in every run.
    fn trains(&self) -> bool {
        matches!(
            self,
            Cmd::Sweep(_) | Cmd::Run(_) | Cmd::Bench(_) | Cmd::Parity(_) | Cmd::Reproduce(_)
        )
    }

    fn run(&self) -> anyhow::Result<()> {
        match self {
            Cmd::Sweep(args) => runner::sweep(args),
            Cmd::Validate(args) => grid::validate(args),
            Cmd::List(args) => runner::list(args),
            Cmd::Merge(args) => merge::merge(args),
            Cmd::Bench(args) => bench::bench(args),
            Cmd::Parity(args) => run::parity::run(args),
            Cmd::Slurm(args) => slurm::slurm(args),
            Cmd::Run(args) => runner::run_one(args).map(|_| ()),
            Cmd::Reproduce(args) => reproduce::reproduce(args),
            Cmd::Compare(args) => compare::compare(args),
            Cmd::Report(args) => compare::report(args),
        }
    }
}

fn main() -> ExitCode {
    // Like other Unix tools, end quietly when a reader closes the pipe (`membench list … | head`):
    // Rust ignores SIGPIPE, so `println!` would panic with a backtrace instead.
    // SAFETY: called first in main, before any thread exists; SIG_DFL is a valid disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
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
    let Some(command) = cli.command else {
        eprintln!("membench: no command; see `membench --help`");
        return ExitCode::from(2);
    };
    if command.trains() {
        if let Err(e) = sys::gemm_choice() {
            return finish(Err(strict::bad_option(e)));
        }
    }
    finish(command.run())
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
