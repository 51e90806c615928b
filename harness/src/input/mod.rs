//! What a user gives membench, read strictly: experiments files and their key positions
//! (`strict`), the config types of a run (`config`), and the grid's expansion into resolved runs
//! (`grid`). Depends on nothing else of the harness but `sys`; everything else depends on it.
//! Owns the command `validate` (`grid::ValidateArgs`, `grid::validate`).

pub mod config;
pub mod grid;
pub mod strict;
