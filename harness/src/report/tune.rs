//! Tuning protocols in the reports. Runs of an experiment with `tune:` (see `input::grid`) are
//! candidates: runs that differ only in their `tune:<key>` columns. Of the candidates of one
//! setting and seed, the tables keep the one with the best **validation** score at the checkpoint
//! they report (the success metric, then the lower validation loss, as `run::train` chooses its
//! best_valid checkpoint) and score it on test. Test scores never take part in the choice.
//! An experiment with `tune_seeds` (its rows' `tune_seeds` column) chooses once per setting, on
//! those seeds, and every seed of the setting reports that candidate (`record::choice`, the same
//! choice the sweep made when it ran the chosen candidate alone on the other seeds).
//!
//! A chosen row keeps its candidate values under `chosen:<key>` instead of `tune:<key>`, so that
//! the grouping (which splits on every varying column between `arch` and `seed`) pools the
//! seeds of a setting whatever each chose, and the summary can still say what was chosen. With
//! `--candidates` nothing is chosen: each candidate is a group of its own.

use crate::input::config::Selection;
use crate::record::choice::{best, pooled_choice, validation_score, Score};
use crate::record::{TUNE_PREFIX, TUNE_SEEDS};
use crate::report::runs::{mode, Row, Runs};
use crate::report::spec::lower_is_better;
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
    /// The `tune_seeds` cells of the task's rows: empty for a choice per seed, else the seeds one
    /// choice per setting was made on (`0`, `0 1`).
    tune_seeds: BTreeSet<String>,
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
        let on = |seeds: &str| match seeds.split_whitespace().count() {
            1 => format!("on seed {seeds}"),
            _ => format!(
                "on the mean over seeds {}",
                seeds.split_whitespace().collect::<Vec<_>>().join(", ")
            ),
        };
        let sel = selection.as_str();
        let per_seed = format!(
            "per setting and seed, the candidate with the {order} validation {metric} (ties: lowest \
             validation loss) at the {sel} checkpoint, scored on test"
        );
        let pooled_text = |seeds: &str| {
            format!(
                "per setting, the candidate with the {order} validation {metric} (ties: lowest validation \
                 loss) at the {sel} checkpoint {}, the only candidate run on the other seeds; every seed \
                 scored on test",
                on(seeds)
            )
        };
        let modes: Vec<&String> = self.tune_seeds.iter().collect();
        let mut s = match modes.as_slice() {
            [one] if !one.is_empty() => format!("Tuning protocol {grid}: {}", pooled_text(one)),
            [_] | [] => format!("Tuning protocol {grid}: {per_seed}"),
            _ => format!(
                "Tuning protocol {grid}: {per_seed}; in the experiments with `tune_seeds`, {}",
                modes
                    .iter()
                    .filter(|m| !m.is_empty())
                    .map(|m| pooled_text(m))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
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
            tune_seeds: BTreeSet::new(),
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
        .collect();
    let mut per_experiment: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Setting (without the seed) → seed → its rows, both in file order.
    let mut settings: Vec<(Vec<String>, Vec<SeedRows>)> = vec![];
    for r in &rows {
        per_experiment
            .entry(cell(r, "experiment"))
            .or_default()
            .extend(tuned.iter().filter(|k| !cell(r, k).is_empty()).cloned());
        let key: Vec<String> = setting_columns.iter().map(|k| cell(r, k)).collect();
        let at = match settings.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                settings.push((key, vec![]));
                settings.len() - 1
            }
        };
        let seeds = &mut settings[at].1;
        let seed = cell(r, "seed");
        match seeds.iter_mut().find(|(s, _)| *s == seed) {
            Some((_, group)) => group.push(r),
            None => seeds.push((seed, vec![r])),
        }
    }
    let mut protocol = Protocol {
        metric,
        candidates,
        choices: 0,
        incomplete: 0,
        every_candidate: false,
        tune_seeds: rows
            .iter()
            .filter(|r| tuned.iter().any(|k| !cell(r, k).is_empty()))
            .map(|r| cell(r, TUNE_SEEDS))
            .collect(),
    };
    let ctx = Scoring {
        tuned: &tuned,
        selection,
        results,
    };
    let mut chosen_rows = vec![];
    for (_, seeds) in settings {
        let first = seeds[0].1[0];
        let expected: usize = per_experiment[&cell(first, "experiment")]
            .iter()
            .map(|k| protocol.candidates[&k[TUNE_PREFIX.len()..]].len())
            .product();
        let tune_seeds: Vec<String> = cell(first, TUNE_SEEDS)
            .split_whitespace()
            .map(String::from)
            .collect();
        let picks = if tune_seeds.is_empty() {
            ctx.per_seed(&seeds, expected, &mut protocol)
        } else {
            ctx.on_tuning_seeds(&seeds, &tune_seeds, expected, &mut protocol)
        };
        for pick in picks {
            let mut row = pick.clone();
            for k in &tuned {
                if let Some(v) = row.remove(k) {
                    row.insert(format!("{CHOSEN_PREFIX}{}", &k[TUNE_PREFIX.len()..]), v);
                }
            }
            chosen_rows.push(row);
        }
    }
    (
        Runs {
            header,
            rows: chosen_rows,
        },
        Some(protocol),
    )
}

/// One seed of a setting and its rows (its candidates), in file order.
type SeedRows<'a> = (String, Vec<&'a Row>);

/// A setting's rows, seed by seed.
type Seeds<'a> = [SeedRows<'a>];

/// How candidates are told apart and scored.
struct Scoring<'a> {
    /// The `tune:` columns.
    tuned: &'a [String],
    selection: Selection,
    results: &'a Path,
}

impl Scoring<'_> {
    fn candidate(&self, r: &Row) -> Vec<String> {
        self.tuned
            .iter()
            .map(|k| r.get(k).cloned().unwrap_or_default())
            .collect()
    }

    fn finished(r: &&Row) -> bool {
        r.get("status")
            .is_some_and(|s| crate::run::train::is_final(s))
    }

    /// Each seed chooses its own candidate: the finished one with the best validation score. A
    /// seed with no finished candidate is stood for by its first row (which the table counts as
    /// not done).
    fn per_seed<'r>(&self, seeds: &Seeds<'r>, expected: usize, p: &mut Protocol) -> Vec<&'r Row> {
        seeds
            .iter()
            .map(|(_, group)| {
                let scored: Vec<&Row> = group.iter().copied().filter(Self::finished).collect();
                let scores: Vec<Score> = scored
                    .iter()
                    .map(|r| validation_score(r, self.selection, self.results))
                    .collect();
                p.choices += 1;
                if scored.len() < expected {
                    p.incomplete += 1;
                }
                best(&scores).map_or(group[0], |i| scored[i])
            })
            .collect()
    }

    /// One choice on the tuning seeds (the candidate with the best mean score there), reported on
    /// every seed: each seed's run of the chosen candidate. A seed without one is left out and the
    /// choice counted incomplete; with nothing chosen yet, the tuning seeds' first rows stand for
    /// the setting (the table counts them as not done).
    fn on_tuning_seeds<'r>(
        &self,
        seeds: &Seeds<'r>,
        tune_seeds: &[String],
        expected: usize,
        p: &mut Protocol,
    ) -> Vec<&'r Row> {
        let tuning: Vec<&Row> = seeds
            .iter()
            .filter(|(s, _)| tune_seeds.contains(s))
            .flat_map(|(_, g)| g.iter().copied())
            .filter(Self::finished)
            .collect();
        let chosen = pooled_choice(tuning.iter().map(|r| {
            (
                self.candidate(r),
                validation_score(r, self.selection, self.results),
            )
        }));
        let picks: Vec<&Row> = seeds
            .iter()
            .filter_map(|(seed, group)| match &chosen {
                Some(c) => {
                    let mut of_chosen = group.iter().copied().filter(|r| self.candidate(r) == *c);
                    let first = of_chosen.clone().next();
                    of_chosen.find(Self::finished).or(first)
                }
                None => tune_seeds.contains(seed).then_some(group[0]),
            })
            .collect();
        p.choices += 1;
        if tuning.len() < expected * tune_seeds.len() || picks.len() < seeds.len() {
            p.incomplete += 1;
        }
        picks
    }
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
    use crate::record;
    use crate::record::TUNE_SEEDS;
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
    fn with_tune_seeds_one_choice_on_the_tuning_seeds_is_reported_on_every_seed() {
        let dir = fresh_dir("tune-seeds");
        let mut runs = tuned_results(
            &dir,
            &[
                // Seed 0 chooses lr 0.01 on validation (lr 0.001 tests better: never looked at).
                ("a0", "0.01", 0, "done", 0.9, 0.3, 0.5),
                ("b0", "0.001", 0, "done", 0.8, 0.2, 0.99),
                // Seed 1 follows: lr 0.01 is reported although a stale lr 0.001 run validates better.
                ("a1", "0.01", 1, "done", 0.2, 2.0, 0.2),
                ("b1", "0.001", 1, "done", 0.99, 0.1, 0.99),
                // Seed 2 has no run of the chosen candidate: left out, the choice counted short.
                ("b2", "0.001", 2, "done", 0.99, 0.1, 0.99),
            ],
        );
        for r in runs.rows.iter_mut() {
            r.insert(TUNE_SEEDS.into(), "0".into());
        }
        let (chosen, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(chosen_ids(&chosen), ["a0", "a1"]);
        assert_eq!(chosen_values(&chosen.rows, "train.lr"), ["0.01", "0.01"]);
        let p = p.unwrap();
        assert_eq!((p.choices, p.incomplete), (1, 1), "one choice per setting");
        let text = p.describe(Selection::BestValid);
        assert!(
            text.contains("per setting, the candidate with the highest validation token_acc")
                && text.contains("on seed 0, the only candidate run on the other seeds"),
            "{text}"
        );
        // Two tuning seeds: the mean decides (0.01: 0.9 and 0.2; 0.001: 0.8 and 0.99).
        for r in runs.rows.iter_mut() {
            r.insert(TUNE_SEEDS.into(), "0 1".into());
        }
        let (chosen, p) = choose(&runs, "mqar", Selection::BestValid, &dir, false);
        assert_eq!(chosen_ids(&chosen), ["b0", "b1", "b2"]);
        let p = p.unwrap();
        assert_eq!((p.choices, p.incomplete), (1, 0));
        assert!(p
            .describe(Selection::BestValid)
            .contains("on the mean over seeds 0, 1"));
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
