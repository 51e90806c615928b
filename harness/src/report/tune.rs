//! Tuning protocols in the reports. Runs of an experiment with `tune:` (see `input::grid`) are
//! candidates: runs that differ only in their `tune:<key>` columns. Of the candidates of one
//! setting and seed, the tables keep the one with the best **validation** score at the checkpoint
//! they report (the success metric, then the lower validation loss, as `run::train` chooses its
//! best_valid checkpoint) and score it on test. Test scores never take part in the choice.
//!
//! A chosen row keeps its candidate values under `chosen:<key>` instead of `tune:<key>`, so that
//! the grouping (which splits on every varying column between `arch` and `seed`) pools the
//! seeds of a setting whatever each chose, and the summary can still say what was chosen. With
//! `--candidates` nothing is chosen: each candidate is a group of its own.

use crate::input::config::Selection;
use crate::record::{self, TUNE_PREFIX};
use crate::report::runs::{mode, num, read_csv_rows, Row, Runs};
use crate::report::spec::lower_is_better;
use crate::run::train::{improves, selection_key};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Prefix of a chosen candidate's values in its row (not a runs.csv column).
pub(super) const CHOSEN_PREFIX: &str = "chosen:";

/// What the tuning protocol of one task's runs was and how the choice went.
pub(super) struct Protocol {
    /// The success metric the choice is made on (on validation).
    metric: String,
    /// Each tuned key with its candidate values, as written in runs.csv.
    pub(super) candidates: BTreeMap<String, BTreeSet<String>>,
    /// Choices made (settings × seeds).
    pub(super) choices: usize,
    /// Choices made among fewer candidates than their experiment has (runs not done yet, failed
    /// or timed out).
    pub(super) incomplete: usize,
    /// True with `--candidates`: every candidate shown, none chosen.
    pub(super) every_candidate: bool,
}

impl Protocol {
    /// The tuned keys (without the `tune:` prefix).
    pub(super) fn keys(&self) -> impl Iterator<Item = &str> {
        self.candidates.keys().map(String::as_str)
    }

    /// The protocol in one sentence, for the table intro and the files' header lines.
    pub(super) fn describe(&self, selection: Selection) -> String {
        let metric = self.metric.as_str();
        let grid = self
            .candidates
            .iter()
            .map(|(k, vs)| {
                format!(
                    "{k} ∈ {{{}}}",
                    vs.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join(" × ");
        if self.every_candidate {
            return format!("Tuning protocol {grid}: every candidate shown as its own row (--candidates); nothing chosen");
        }
        let order = if lower_is_better(metric) {
            "lowest"
        } else {
            "highest"
        };
        let mut s = format!(
            "Tuning protocol {grid}: per setting and seed, the candidate with the {order} validation {metric} \
             (ties: lowest validation loss) at the {} checkpoint, scored on test",
            selection.as_str()
        );
        if self.incomplete > 0 {
            s += &format!(
                "; {} of {} choices were made among fewer candidates than the protocol has (runs pending or failed)",
                self.incomplete, self.choices
            );
        }
        s
    }
}

/// The `tune:` columns of runs.csv.
fn tuned_columns(runs: &Runs) -> Vec<String> {
    runs.header
        .iter()
        .filter(|h| h.starts_with(TUNE_PREFIX))
        .cloned()
        .collect()
}

/// The rows of `task` with the tuning protocol applied: per setting and seed the chosen candidate
/// (or, with `every_candidate`, every candidate), and the protocol; None when the task's runs are
/// not tuned. Other tasks' rows are left out.
pub(super) fn choose(
    runs: &Runs,
    task: &str,
    selection: Selection,
    results: &Path,
    every_candidate: bool,
) -> (Runs, Option<Protocol>) {
    let tuned = tuned_columns(runs);
    let rows: Vec<&Row> = runs.of_task(task);
    let cell = |r: &Row, k: &str| r.get(k).cloned().unwrap_or_default();
    let mut candidates: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in &rows {
        for k in &tuned {
            let v = cell(r, k);
            if !v.is_empty() {
                candidates
                    .entry(k[TUNE_PREFIX.len()..].to_string())
                    .or_default()
                    .insert(v);
            }
        }
    }
    let header = runs.header.clone();
    let metric = mode(rows.iter().copied(), "success_metric").unwrap_or_default();
    if candidates.is_empty() || every_candidate {
        let protocol = (!candidates.is_empty()).then_some(Protocol {
            metric,
            candidates,
            choices: 0,
            incomplete: 0,
            every_candidate: true,
        });
        let rows = rows.into_iter().cloned().collect();
        return (Runs { header, rows }, protocol);
    }
    // The setting of a candidate: its experiment, its arch (an experiment may sweep whole arch
    // blocks whose parameters agree), every other column between arch and seed, and the seed.
    // Each experiment's candidate count: the product, over the keys it tunes, of the values that
    // key takes in this task's runs (results do not hold the protocol itself; an
    // experiment whose runs have not all been made yet is then still counted short, and one that
    // tunes a shorter list than another experiment on the same key is counted short too).
    let setting_columns: Vec<String> = ["experiment", "arch"]
        .into_iter()
        .map(String::from)
        .chain(runs.swept_keys().into_iter().filter(|k| !tuned.contains(k)))
        .chain(std::iter::once("seed".to_string()))
        .collect();
    let mut per_experiment: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut settings: BTreeMap<Vec<String>, Vec<&Row>> = BTreeMap::new();
    let mut order = vec![];
    for r in &rows {
        per_experiment
            .entry(cell(r, "experiment"))
            .or_default()
            .extend(tuned.iter().filter(|k| !cell(r, k).is_empty()).cloned());
        let key: Vec<String> = setting_columns.iter().map(|k| cell(r, k)).collect();
        if !settings.contains_key(&key) {
            order.push(key.clone());
        }
        settings.entry(key).or_default().push(r);
    }
    let mut protocol = Protocol {
        metric,
        candidates,
        choices: 0,
        incomplete: 0,
        every_candidate: false,
    };
    let mut chosen_rows = vec![];
    for key in order {
        let group = &settings[&key];
        let expected: usize = per_experiment[&cell(group[0], "experiment")]
            .iter()
            .map(|k| protocol.candidates[&k[TUNE_PREFIX.len()..]].len())
            .product();
        let scored: Vec<(&Row, Score)> = group
            .iter()
            .filter(|r| crate::run::train::is_final(&cell(r, "status")))
            .map(|r| (*r, validation_score(r, selection, results)))
            .collect();
        protocol.choices += 1;
        if scored.len() < expected {
            protocol.incomplete += 1;
        }
        // No finished candidate: the first row stands for the setting (the table counts it as
        // not done).
        let pick = best(&scored).unwrap_or(group[0]);
        let mut row = pick.clone();
        for k in &tuned {
            if let Some(v) = row.remove(k) {
                row.insert(format!("{CHOSEN_PREFIX}{}", &k[TUNE_PREFIX.len()..]), v);
            }
        }
        chosen_rows.push(row);
    }
    (
        Runs {
            header,
            rows: chosen_rows,
        },
        Some(protocol),
    )
}

/// A candidate's validation score: `run::train::selection_key`, the key best_valid ranks
/// checkpoints by (NaN, missing or diverged, ranks worst).
type Score = (f64, f64);

/// The validation metrics of `run` at the checkpoint `selection` reports: the curve point at its
/// best_step (best_valid) or the last one (last). Missing values are NaN.
fn validation_score(run: &Row, selection: Selection, results: &Path) -> Score {
    let nan = selection_key(f64::NAN, f64::NAN);
    let Some(id) = run.get("run_id") else {
        return nan;
    };
    let curve = read_csv_rows(&record::run_dir(results, id).join("curve.csv")).unwrap_or_default();
    let point = match selection {
        Selection::Last => curve.last(),
        Selection::BestValid => {
            num(run, "best_step").and_then(|s| curve.iter().find(|p| num(p, "step") == Some(s)))
        }
    };
    let Some(point) = point else { return nan };
    let metric = run.get("success_metric").cloned().unwrap_or_default();
    let sign = if lower_is_better(&metric) { -1.0 } else { 1.0 };
    let value = num(point, &format!("valid_{metric}")).unwrap_or(f64::NAN);
    let loss = num(point, "valid_loss").unwrap_or(f64::NAN);
    selection_key(sign * value, loss)
}

/// The candidate with the greatest score, by best_valid's rule (`run::train::improves`): the
/// metric decides, the loss breaks ties, an earlier candidate (in runs.csv order) wins a complete
/// tie, and NaN never beats a number.
fn best<'a>(scored: &[(&'a Row, Score)]) -> Option<&'a Row> {
    let mut best: Option<(&Row, Score)> = None;
    for &(r, s) in scored {
        if best.is_none_or(|(_, b)| improves(s, b)) {
            best = Some((r, s));
        }
    }
    best.map(|(r, _)| r)
}

/// Each seed's chosen value of `key` in a group's rows, in row order, as written in runs.csv
/// (`0.00215, 0.00215, 0.01`: rounding could merge two candidates).
pub(super) fn chosen_values(rows: &[Row], key: &str) -> Vec<String> {
    rows.iter()
        .map(|r| {
            r.get(&format!("{CHOSEN_PREFIX}{key}"))
                .cloned()
                .unwrap_or_else(|| "–".into())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::runs::{read_runs, resolve};
    use crate::test_support::fresh_dir;

    /// Results of one tuned MQAR setting, two seeds × lr {0.01, 0.001} (+ an untuned experiment):
    /// each run's validation curve (step 50 and 100, best_step 100 unless said) and its test
    /// score. `(id, lr, seed, status, valid acc at best_step, valid loss there, test acc)`.
    fn tuned_results(dir: &Path, runs: &[(&str, &str, u64, &str, f64, f64, f64)]) -> Runs {
        let mut csv = "run_id,experiment,task,arch,tune:train.lr,seed,status,best_step,best_token_acc,success_metric,success_threshold,selection,membench_version,torch_version\n".to_string();
        for &(id, lr, seed, status, acc, loss, test) in runs {
            let exp = if lr.is_empty() { "plain" } else { "tuned" };
            csv += &format!("{id},{exp},mqar,gla,{lr},{seed},{status},100,{test},token_acc,0.99,best_valid,0.5.0,2.11.0\n");
            let run = record::run_dir(dir, id);
            std::fs::create_dir_all(&run).unwrap();
            // lr 0.01 ends worse than its best point, lr 0.001 ends at it: `last` and `best_valid`
            // can choose differently.
            let last_acc = if lr == "0.01" { acc / 2.0 } else { acc };
            let curve = format!(
                "step,valid_loss,valid_token_acc\n50,9,0.1\n100,{loss},{acc}\n150,{loss},{last_acc}\n"
            );
            std::fs::write(run.join("curve.csv"), curve).unwrap();
        }
        std::fs::write(dir.join("runs.csv"), csv).unwrap();
        let mut runs = read_runs(dir).unwrap();
        resolve(&mut runs, dir);
        runs
    }

    fn chosen_ids(runs: &Runs) -> Vec<&str> {
        runs.rows.iter().map(|r| r["run_id"].as_str()).collect()
    }

    #[test]
    fn the_best_validation_score_is_chosen_per_seed_never_the_test_score() {
        let dir = fresh_dir("tune-choose");
        let runs = tuned_results(
            &dir,
            &[
                // Seed 0: lr 0.01 validates better, lr 0.001 tests better.
                ("a0", "0.01", 0, "done", 0.9, 0.3, 0.5),
                ("b0", "0.001", 0, "done", 0.8, 0.2, 0.99),
                // Seed 1: a tie on accuracy goes to the lower validation loss.
                ("a1", "0.01", 1, "done", 0.7, 0.6, 0.7),
                ("b1", "0.001", 1, "done", 0.7, 0.4, 0.7),
                ("p0", "", 0, "done", 0.5, 1.0, 0.5),
            ],
        );
        let (chosen, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(chosen_ids(&chosen), ["a0", "b1", "p0"]);
        let p = p.unwrap();
        assert_eq!((p.choices, p.incomplete), (3, 0));
        assert_eq!(chosen.rows[0]["chosen:train.lr"], "0.01");
        assert!(
            !chosen.rows[0].contains_key("tune:train.lr"),
            "moved to chosen:"
        );
        assert_eq!(
            chosen_values(&chosen.rows[..2], "train.lr"),
            ["0.01", "0.001"]
        );
        assert!(p.describe(Selection::BestValid).contains(
            "train.lr ∈ {0.001, 0.01}: per setting and seed, the candidate with the highest validation token_acc"
        ));
        // Reported at the last checkpoint, the choice is by the last validation point.
        let (last, _) = choose(&runs, "mqar", Selection::Last, &dir, false);
        assert_eq!(chosen_ids(&last), ["b0", "b1", "p0"]);
    }

    #[test]
    fn unfinished_candidates_are_counted_and_nan_never_wins() {
        let dir = fresh_dir("tune-incomplete");
        let runs = tuned_results(
            &dir,
            &[
                ("a0", "0.01", 0, "diverged", f64::NAN, f64::NAN, 0.0),
                ("b0", "0.001", 0, "done", 0.2, 2.0, 0.2),
                ("a1", "0.01", 1, "failed", 0.99, 0.01, 0.99),
                ("b1", "0.001", 1, "done", 0.3, 2.0, 0.3),
            ],
        );
        let (chosen, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(chosen_ids(&chosen), ["b0", "b1"]);
        let p = p.unwrap();
        assert_eq!(
            (p.choices, p.incomplete),
            (2, 1),
            "the failed run is missing"
        );
        assert!(p.describe(Selection::BestValid).contains("1 of 2 choices"));
        // An experiment of which only one candidate has run is short of the task's candidates.
        let mut runs = runs;
        for r in runs.rows.iter_mut().filter(|r| r["run_id"] == "b1") {
            r.insert("experiment".into(), "started".into());
        }
        let (_, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(p.unwrap().incomplete, 2);
    }

    #[test]
    fn two_archs_of_one_experiment_are_never_candidates_of_each_other() {
        let dir = fresh_dir("tune-archs");
        let mut runs = tuned_results(
            &dir,
            &[
                ("a0", "0.01", 0, "done", 0.9, 0.3, 0.9),
                ("b0", "0.001", 0, "done", 0.8, 0.2, 0.8),
                ("c0", "0.01", 0, "done", 0.2, 2.0, 0.2),
                ("d0", "0.001", 0, "done", 0.3, 1.9, 0.3),
            ],
        );
        // One experiment sweeping two arch blocks with the same parameters: only `arch` differs.
        for r in runs.rows.iter_mut() {
            if ["c0", "d0"].contains(&r["run_id"].as_str()) {
                r.insert("arch".into(), "lstm".into());
            }
        }
        let (chosen, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(chosen_ids(&chosen), ["a0", "d0"], "one choice per arch");
        assert_eq!(p.unwrap().choices, 2);
    }

    #[test]
    fn every_candidate_is_kept_when_asked_and_untuned_runs_pass_through() {
        let dir = fresh_dir("tune-candidates");
        let runs = tuned_results(
            &dir,
            &[
                ("a0", "0.01", 0, "done", 0.9, 0.3, 0.5),
                ("b0", "0.001", 0, "done", 0.8, 0.2, 0.99),
            ],
        );
        let (all, p) = choose(&runs, "mqar", Selection::BestValid, &dir, true);
        assert_eq!(chosen_ids(&all), ["a0", "b0"]);
        assert!(p.unwrap().every_candidate);
        assert_eq!(all.rows[1]["tune:train.lr"], "0.001");
        let dir = fresh_dir("tune-none");
        let plain = tuned_results(&dir, &[("p0", "", 0, "done", 0.5, 1.0, 0.5)]);
        let (rows, p) = choose(&plain, "mqar", Selection::BestValid, &dir, false);
        assert!(p.is_none());
        assert_eq!(chosen_ids(&rows), ["p0"]);
    }
}
