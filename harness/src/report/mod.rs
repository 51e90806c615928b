//! What results say. Reads results through `record`; depends on `input`, `run` and `sys`; never on
//! `sweep`. Low to high: `runs` (runs.csv, resolved configs, eval.csv and curve.csv read; `--where`
//! filters), `spec` (what a set of files is about; a metric's direction and range), `groups` (runs
//! grouped over seeds, each group's numbers; medians, intervals and tests from `stats`), `tune` (the
//! candidate kept per setting and seed when the runs were tuned, before grouping), `summary`
//! (the summary table), `mad` (MAD's summary over its six tasks) and `series` (metric against x
//! or step, plotted by `plot`), all rendered through `table` (rows and one column list to
//! Markdown and CSV); `compare` owns the commands
//! `compare` and `report`, `reproduce` the rerun of a stored row: each one's `clap::Args` struct
//! and entry function.

pub mod compare;
mod groups;
mod mad;
pub mod plot;
pub mod reproduce;
mod runs;
mod series;
mod spec;
pub mod stats;
mod summary;
pub mod table;
mod tune;
