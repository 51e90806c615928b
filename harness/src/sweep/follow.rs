//! Experiments tuned on their first seeds (`tune_seeds`, see `input::grid`): which of their runs a
//! sweep makes. The runs on the tuning seeds always run. A run on a later seed (a follower) runs
//! only when its candidate is the one `record::choice` picks from the tuning runs' validation
//! scores, and waits while those runs are not all finished. The choice is read from the rows and
//! curves in the results directory, so a resumed sweep, and the reports, make the same one.
//!
//! Shards keep a setting whole (its candidates and seeds hash together, [`shard_key`]), so that
//! every shard can make its own settings' choices.

use crate::input::config::RunConfig;
use crate::record::choice::{pooled_choice, validation_score, Row};
use crate::record::{tune_seeds_cell, RunsCsv, TUNE_SEEDS};
use crate::run::train::is_final;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// What the sweep does with a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Run it (unless it has finished already).
    Run,
    /// A follower whose candidate was not chosen on the tuning seeds: never run.
    NotChosen,
    /// A follower whose setting's tuning runs have not all finished: run once they have, if chosen.
    Waiting,
}

impl Role {
    /// The status `list` and `sweep --dry-run` show for a run without a row.
    pub fn pending_status(self) -> &'static str {
        match self {
            Role::Run => "pending",
            Role::NotChosen => "not chosen",
            Role::Waiting => "awaits choice",
        }
    }
}

/// The hash the sweep's `--shard` splits on: the run id, or for an experiment with
/// `tune_seeds` the run's setting, so that a setting's tuning runs and followers share a shard.
pub fn shard_key(run: &RunConfig) -> String {
    if run.tune_seeds.is_empty() {
        run.run_id()
    } else {
        blake3::hash(run.setting_key().as_bytes()).to_hex()[..12].to_string()
    }
}

/// The role of each of `runs` (same order), given the rows already in `csv` (in `out`).
pub fn roles(runs: &[RunConfig], csv: &RunsCsv, out: &Path) -> Vec<Role> {
    let rows: HashMap<&str, &Row> = csv
        .rows()
        .iter()
        .filter_map(|r| Some((r.get("run_id")?.as_str(), r)))
        .collect();
    // Each setting's tuning runs, in grid order.
    let mut tuning: BTreeMap<String, Vec<&RunConfig>> = BTreeMap::new();
    for r in runs
        .iter()
        .filter(|r| !r.tune_seeds.is_empty() && !r.follows_choice())
    {
        tuning.entry(r.setting_key()).or_default().push(r);
    }
    let mut chosen: HashMap<String, Option<&RunConfig>> = HashMap::new();
    runs.iter()
        .map(|r| {
            if !r.follows_choice() {
                return Role::Run;
            }
            let key = r.setting_key();
            let pick = *chosen.entry(key.clone()).or_insert_with(|| {
                choose(tuning.get(&key).map_or(&[][..], Vec::as_slice), &rows, out)
            });
            match pick {
                None => Role::Waiting,
                Some(c) if c.tune == r.tune => Role::Run,
                Some(_) => Role::NotChosen,
            }
        })
        .collect()
}

/// The chosen candidate among a setting's tuning runs (one of them stands for it), or None while
/// any of them has no final row.
fn choose<'a>(
    tuning: &[&'a RunConfig],
    rows: &HashMap<&str, &Row>,
    out: &Path,
) -> Option<&'a RunConfig> {
    let mut scored = vec![];
    for run in tuning {
        let row = rows
            .get(run.run_id().as_str())
            .filter(|row| row.get("status").is_some_and(|s| is_final(s)))?;
        scored.push((
            Candidate(run),
            validation_score(row, run.train.selection, out),
        ));
    }
    pooled_choice(scored).map(|c| c.0)
}

/// A tuning run standing for its candidate: two are equal when their tuned values are.
struct Candidate<'a>(&'a RunConfig);

impl PartialEq for Candidate<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.tune == other.0.tune
    }
}

/// Writes each planned run's `tune_seeds` into its row where the row says otherwise: the protocol
/// belongs to the experiment, not to the run (it is not part of the run id), so a run finished
/// under another protocol (or before `tune_seeds` existed) keeps its numbers and takes the
/// experiment's protocol, as the reports must read it. Returns how many rows changed.
pub fn refresh_protocol(runs: &[RunConfig], csv: &mut RunsCsv) -> anyhow::Result<usize> {
    let index: HashMap<String, usize> = csv
        .rows()
        .iter()
        .enumerate()
        .filter_map(|(i, r)| Some((r.get("run_id")?.clone(), i)))
        .collect();
    let mut changed = 0;
    for run in runs {
        let Some(&i) = index.get(&run.run_id()) else {
            continue;
        };
        let want = tune_seeds_cell(run);
        let row = &csv.rows()[i];
        if row.get(TUNE_SEEDS).map_or("", String::as_str) == want {
            continue;
        }
        let mut row = row.clone();
        if want.is_empty() {
            row.remove(TUNE_SEEDS);
        } else {
            row.insert(TUNE_SEEDS.to_string(), want);
        }
        csv.upsert_row(row)?;
        changed += 1;
    }
    Ok(changed)
}
