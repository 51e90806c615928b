//! Many runs: the grid's runs as child processes, resumable and parallel (`runner`), the runs an
//! experiment tuned on its first seeds makes on the others (`follow`), a
//! deterministic share of them (`shard`), one sweep per results directory (`lock`), Slurm job
//! arrays (`slurm`) and the union of results directories (`merge`). Depends on `input`, `run`,
//! `record` and `sys`; never on `report`. Owns the commands `sweep`, `list` and `run` (`runner`),
//! `slurm` and `merge`: each one's `clap::Args` struct and entry function.

pub mod follow;
pub mod lock;
pub mod merge;
pub mod runner;
pub mod shard;
pub mod slurm;
