//! The choice a tuning protocol makes among candidates (runs that differ only in their tuned
//! values, see `input::grid`), from their recorded validation scores. Shared by the reports
//! (`report::tune`, which keep the chosen candidate of each setting) and the sweep (which, for
//! an experiment with `tune_seeds`, runs on the later seeds only the candidate chosen on the first
//! ones), so that both make the same choice.
//!
//! A candidate's score is `run::train::selection_key` of its validation metrics at the checkpoint
//! it reports (best_valid: the curve point at its best step; last: the last point): the success
//! metric, then the lower validation loss. With several tuning seeds the candidate's score is the
//! mean of its seeds' scores, key by key; a candidate that diverged (NaN) on any of them ranks
//! last. Test scores never take part.

use crate::input::config::Selection;
use crate::record::{self, num, read_csv_rows};
use crate::run::train::{improves, selection_key};
use std::collections::BTreeMap;
use std::path::Path;

/// A runs.csv row (column → text).
pub type Row = BTreeMap<String, String>;

/// A candidate's validation score: higher is better, NaN ranks worst.
pub type Score = (f64, f64);

/// The validation score of `run` (a runs.csv row) at the checkpoint `selection` reports, read
/// from its curve.csv in `results`. Missing values are NaN.
pub fn validation_score(run: &Row, selection: Selection, results: &Path) -> Score {
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
    let sign = if crate::run::eval::lower_is_better(&metric) {
        -1.0
    } else {
        1.0
    };
    let value = num(point, &format!("valid_{metric}")).unwrap_or(f64::NAN);
    let loss = num(point, "valid_loss").unwrap_or(f64::NAN);
    selection_key(sign * value, loss)
}

/// The mean of several seeds' scores, key by key (a NaN, ranked as −∞, stays the worst).
pub fn pooled(scores: &[Score]) -> Score {
    let n = scores.len().max(1) as f64;
    let (a, b) = scores
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let fix = |v: f64| if v.is_nan() { f64::NEG_INFINITY } else { v };
    (fix(a / n), fix(b / n))
}

/// The index of the greatest score by best_valid's rule (`run::train::improves`): the metric
/// decides, the loss breaks ties, the earlier candidate wins a complete tie, and NaN never beats a
/// number. None when there are no scores.
pub fn best(scores: &[Score]) -> Option<usize> {
    let mut best: Option<(usize, Score)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if best.is_none_or(|(_, b)| improves(s, b)) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// The candidate chosen on pooled scores: `scored` holds each tuning run as (its candidate, its
/// score); each candidate's score is the [`pooled`] mean over its runs, and the [`best`] candidate
/// (the first to appear wins a tie) is returned. None without any runs.
pub fn pooled_choice<K: PartialEq>(scored: impl IntoIterator<Item = (K, Score)>) -> Option<K> {
    let mut candidates: Vec<(K, Vec<Score>)> = vec![];
    for (k, s) in scored {
        match candidates.iter_mut().find(|(c, _)| *c == k) {
            Some((_, scores)) => scores.push(s),
            None => candidates.push((k, vec![s])),
        }
    }
    let means: Vec<Score> = candidates.iter().map(|(_, s)| pooled(s)).collect();
    let i = best(&means)?;
    candidates.into_iter().nth(i).map(|(k, _)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_decides_the_loss_breaks_ties_and_nan_never_wins() {
        let s = |m: f64, loss: f64| selection_key(m, loss);
        assert_eq!(best(&[s(0.5, 1.0), s(0.9, 2.0)]), Some(1));
        assert_eq!(best(&[s(0.9, 1.0), s(0.9, 0.5)]), Some(1), "lower loss");
        assert_eq!(best(&[s(0.9, 1.0), s(0.9, 1.0)]), Some(0), "earlier");
        assert_eq!(best(&[s(f64::NAN, 1.0), s(0.1, 9.0)]), Some(1));
        assert_eq!(best(&[]), None);
        // Pooled over seeds: the mean, and a diverged seed sinks the candidate.
        let a = pooled(&[s(0.9, 1.0), s(0.5, 1.0)]);
        let b = pooled(&[s(0.6, 1.0), s(0.7, 1.0)]);
        assert_eq!(best(&[a, b]), Some(0), "mean 0.7 beats mean 0.65");
        let diverged = pooled(&[s(1.0, 0.0), s(f64::NAN, f64::NAN)]);
        assert_eq!(best(&[diverged, b]), Some(1));
        assert_eq!(
            pooled(&[s(0.9, 2.0)]),
            s(0.9, 2.0),
            "one seed: its own score"
        );
        // Runs grouped by candidate, pooled, the best taken.
        let runs = [
            ("a", s(0.9, 1.0)),
            ("b", s(0.6, 1.0)),
            ("a", s(0.5, 1.0)),
            ("b", s(0.7, 1.0)),
        ];
        assert_eq!(pooled_choice(runs), Some("a"));
        assert_eq!(pooled_choice(Vec::<(&str, Score)>::new()), None);
    }
}
