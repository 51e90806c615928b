//! What results say: runs grouped into tables with medians and intervals (`compare`, `stats`),
//! tables as rows and one column list rendered to Markdown and CSV (`table`),
//! plots (`plot`), and the rerun of a stored row (`reproduce`). Reads results through `record`;
//! depends on `input`, `run` and `sys`; never on `sweep`. Owns the commands `compare` and `report`
//! (`compare`) and `reproduce`: each one's `clap::Args` struct and entry function.

pub mod compare;
pub mod plot;
pub mod reproduce;
pub mod stats;
pub mod table;
