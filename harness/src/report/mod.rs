//! What results say: runs grouped into tables with medians and intervals (`compare`, `stats`),
//! plots (`plot`), and the rerun of a stored row (`reproduce`). Reads results through `record`;
//! depends on `input`, `run` and `sys`; never on `sweep`.

pub mod compare;
pub mod plot;
pub mod reproduce;
pub mod stats;
pub mod table;
