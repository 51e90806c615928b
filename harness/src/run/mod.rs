//! One run in this process: the training loop and checkpoint selection (`train`), the training
//! data stream, fresh or a finite pool (`pool`), the metrics
//! (`eval`), the device and its memory (`device`), and the timing of training steps (`bench`).
//! Depends on `input` and `sys`; knows nothing of results directories, sweeps or reports. Owns
//! the command `bench` (its `BenchArgs` and entry function) and the `--threads` parser.

pub mod bench;
pub mod device;
pub mod eval;
pub mod init_stats;
pub mod parity;
pub mod pool;
pub mod train;

/// Most LibTorch intra-op threads a run may ask for (command line, or a runs.csv row to reproduce).
pub const MAX_THREADS: i32 = 1024;

/// The `--threads` value parser of every command that trains or times: 1..=[`MAX_THREADS`].
pub fn thread_count() -> clap::builder::RangedI64ValueParser<i32> {
    clap::value_parser!(i32).range(1..=i64::from(MAX_THREADS))
}

/// Median of `xs` (NaN when empty): the statistic of every timing and of table cells.
pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        f64::NAN
    } else {
        use statrs::statistics::Median;
        statrs::statistics::Data::new(xs.to_vec()).median()
    }
}
