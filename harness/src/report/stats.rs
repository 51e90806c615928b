//! Statistics over seeds: summaries with confidence intervals, and Welch's two-sample t-test.
//!
//! Protocol used by every table and plot (`membench compare`):
//! - **t CI of the mean** (labelled `mean [t95, clipped to …]`): x̄ ± t_{0.975, n−1} · s/√n with s the
//!   sample standard deviation (n−1 denominator), intersected with the metric's range
//!   ([`crate::run::eval::Metrics::RANGES`]: accuracies in [0, 1], errors and losses ≥ 0). Exact when
//!   seeds are normal; with 2–5 seeds it is wide on purpose, and being symmetric about the mean it
//!   leaves a bounded metric's range near the bound (0.05 ± 0.23 bit errors), where it is clipped:
//!   the clipped interval holds every value of the metric the unclipped one holds.
//! - **Percentile bootstrap CI of the median** (labelled `median [boot95]`): always reported beside the
//!   t CI, because most metrics are bounded (accuracies in [0, 1], error counts ≥ 0) and heavily skewed
//!   near the bounds, where a symmetric t interval leaves the metric's range. [`BOOTSTRAP_RESAMPLES`]
//!   resamples from a ChaCha8 stream with the fixed seed [`BOOTSTRAP_SEED`], so tables are
//!   byte-identical across reruns. With n ≤ 3 it can only span the observed values: read it as a range.
//! - **Welch's t-test** (unequal variances): t = (x̄₁ − x̄₂) / √(s₁²/n₁ + s₂²/n₂), with the
//!   Welch–Satterthwaite degrees of freedom
//!   ν = (s₁²/n₁ + s₂²/n₂)² / ((s₁²/n₁)²/(n₁−1) + (s₂²/n₂)²/(n₂−1)),
//!   and the two-sided p = 2·(1 − F_ν(|t|)) with F_ν the Student t CDF.

pub use crate::run::median;
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::{Data, Median, OrderStatistics, Statistics};

/// Bootstrap resamples per interval: enough for the 2.5 % / 97.5 % quantiles to be stable to ~1 %.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;
/// Fixed seed of the bootstrap stream (tables must not change from one `report` to the next).
pub const BOOTSTRAP_SEED: u64 = 0x6d65_6d62;

/// Summary of one metric over the seeds of a group. NaN values (diverged runs) are dropped first.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n−1); NaN when n < 2.
    pub sd: f64,
    pub median: f64,
    /// 95 % Student t interval of the mean, clipped to the metric's range; NaN bounds when n < 2.
    pub t_ci: (f64, f64),
    /// 95 % percentile-bootstrap interval of the median.
    pub boot_ci: (f64, f64),
}

fn finite(xs: &[f64]) -> Vec<f64> {
    xs.iter().copied().filter(|x| x.is_finite()).collect()
}

/// Two-sided `level` interval of the mean, x̄ ± t_{(1+level)/2, n−1}·s/√n.
pub fn t_interval(xs: &[f64], level: f64) -> (f64, f64) {
    let xs = finite(xs);
    if xs.len() < 2 {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().mean();
    let sd = xs.iter().std_dev();
    let t = StudentsT::new(0.0, 1.0, n - 1.0)
        .expect("n ≥ 2 gives ν ≥ 1")
        .inverse_cdf(0.5 + level / 2.0);
    let half = t * sd / n.sqrt();
    (mean - half, mean + half)
}

/// Percentile bootstrap interval (`level`) of the median, from a fixed-seed stream.
pub fn bootstrap_median_interval(xs: &[f64], level: f64) -> (f64, f64) {
    let xs = finite(xs);
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(BOOTSTRAP_SEED);
    let mut medians = Vec::with_capacity(BOOTSTRAP_RESAMPLES);
    let mut resample = vec![0.0; xs.len()];
    for _ in 0..BOOTSTRAP_RESAMPLES {
        for slot in resample.iter_mut() {
            *slot = xs[rng.random_range(0..xs.len())];
        }
        medians.push(Data::new(resample.clone()).median());
    }
    let mut medians = Data::new(medians);
    let tail = (1.0 - level) / 2.0;
    (medians.quantile(tail), medians.quantile(1.0 - tail))
}

/// `interval` intersected with `range` (the values a metric can take); NaN bounds stay NaN.
pub fn clip(interval: (f64, f64), range: (f64, f64)) -> (f64, f64) {
    let (lo, hi) = interval;
    (
        if lo.is_nan() { lo } else { lo.max(range.0) },
        if hi.is_nan() { hi } else { hi.min(range.1) },
    )
}

/// Summary of the finite values of `xs`, a metric whose values lie in `range`.
pub fn summarize(xs: &[f64], range: (f64, f64)) -> Summary {
    let xs = finite(xs);
    let n = xs.len();
    Summary {
        n,
        mean: if n > 0 { xs.iter().mean() } else { f64::NAN },
        sd: if n > 1 { xs.iter().std_dev() } else { f64::NAN },
        median: if n > 0 {
            Data::new(xs.clone()).median()
        } else {
            f64::NAN
        },
        t_ci: clip(t_interval(&xs, 0.95), range),
        boot_ci: bootstrap_median_interval(&xs, 0.95),
    }
}

/// Result of Welch's unequal-variance t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Welch {
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Welch's t-test of mean(a) vs mean(b); None when a side has fewer than 2 finite values.
/// Two samples with zero variance give p = 1 when their means are equal and p = 0 otherwise.
pub fn welch(a: &[f64], b: &[f64]) -> Option<Welch> {
    let (a, b) = (finite(a), finite(b));
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (va, vb) = (a.iter().variance() / na, b.iter().variance() / nb);
    let diff = a.iter().mean() - b.iter().mean();
    let se2 = va + vb;
    if se2 == 0.0 {
        let p = if diff == 0.0 { 1.0 } else { 0.0 };
        return Some(Welch {
            t: if diff == 0.0 {
                0.0
            } else {
                diff.signum() * f64::INFINITY
            },
            df: na + nb - 2.0,
            p,
        });
    }
    let t = diff / se2.sqrt();
    let df = se2 * se2 / (va * va / (na - 1.0) + vb * vb / (nb - 1.0));
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p = (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0);
    Some(Welch { t, df, p })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn t_interval_matches_hand_computed_value() {
        // xs = 1..=5: mean 3, s = √2.5 = 1.5811388, t_{0.975,4} = 2.7764451 (standard t table),
        // half-width = 2.7764451 · 1.5811388 / √5 = 1.9632432 → [1.0367568, 4.9632432]
        // (scipy 1.17.1 `stats.t.interval(0.95, 4, loc=3, scale=s/√5)` agrees to 1e-10).
        let (lo, hi) = t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95);
        assert!(close(lo, 1.0367568, 1e-6), "lo = {lo}");
        assert!(close(hi, 4.9632432, 1e-6), "hi = {hi}");
        // n = 2: t_{0.975,1} = 12.706205; xs = {0, 1}: s = 0.7071068, half = 12.706205·0.5 = 6.3531024.
        let (lo, hi) = t_interval(&[0.0, 1.0], 0.95);
        assert!(
            close(lo, 0.5 - 6.3531024, 1e-5) && close(hi, 0.5 + 6.3531024, 1e-5),
            "[{lo}, {hi}]"
        );
        assert!(t_interval(&[1.0], 0.95).0.is_nan());
    }

    #[test]
    fn welch_matches_scipy() {
        // Reference: scipy 1.17.1 `scipy.stats.ttest_ind(a, b, equal_var=False)` with
        // a = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
        // b = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]
        // gives t = -2.455356398286006, p = 0.021378001462866992, df = 24.988529290231416.
        let a = [
            27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7,
            21.4,
        ];
        let b = [
            27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5,
            24.4,
        ];
        let w = welch(&a, &b).unwrap();
        assert!(close(w.t, -2.455356398286006, 1e-9), "t = {}", w.t);
        assert!(close(w.df, 24.988529290231416, 1e-9), "df = {}", w.df);
        assert!(close(w.p, 0.021378001462866992, 1e-9), "p = {}", w.p);
        // Symmetric in its arguments up to the sign of t.
        let r = welch(&b, &a).unwrap();
        assert!(close(r.p, w.p, 1e-12) && close(r.t, -w.t, 1e-12));
    }

    #[test]
    fn welch_small_unequal_samples_match_scipy() {
        // scipy 1.17.1 `ttest_ind([0.9, 0.95, 1.0], [0.5, 0.7], equal_var=False)`:
        // t = 3.3626912299068312, p = 0.15449159081679564, df = 1.1695501730103808 (a fractional ν,
        // which exercises the t CDF away from integer degrees of freedom).
        let w = welch(&[0.9, 0.95, 1.0], &[0.5, 0.7]).unwrap();
        let (t, df, p) = (3.3626912299068312, 1.1695501730103808, 0.15449159081679564);
        assert!(
            close(w.t, t, 1e-9) && close(w.df, df, 1e-9) && close(w.p, p, 1e-7),
            "{w:?}"
        );
        assert!(welch(&[1.0], &[1.0, 2.0]).is_none());
        assert_eq!(welch(&[1.0, 1.0], &[1.0, 1.0]).unwrap().p, 1.0);
    }

    #[test]
    fn bootstrap_is_deterministic_and_within_the_data() {
        let xs = [0.2, 0.9, 0.95, 1.0, 0.97];
        let a = bootstrap_median_interval(&xs, 0.95);
        assert_eq!(a, bootstrap_median_interval(&xs, 0.95));
        assert!(
            a.0 >= 0.2 && a.1 <= 1.0 && a.0 <= 0.95 && a.1 >= 0.95,
            "{a:?}"
        );
        let s = summarize(&[3.0, f64::NAN, 1.0, 2.0], (0.0, f64::INFINITY));
        assert_eq!((s.n, s.median, s.mean), (3, 2.0, 2.0));
    }

    /// Issue #27: the NTM's best bit errors on copy (0, 0, 0.16015625 over three seeds) have the t
    /// interval 0.0534 ± 0.2297 = [−0.1763, 0.2831]; bit errors are ≥ 0, so the summary's is
    /// [0, 0.2831]. Accuracies near 1 are clipped at 1 the same way.
    #[test]
    fn t_interval_of_a_summary_stays_in_the_metric_range() {
        let errors = [0.0, 0.0, 0.16015625];
        let raw = t_interval(&errors, 0.95);
        assert!(close(raw.0, -0.17631349208297936, 1e-12), "{raw:?}");
        let s = summarize(&errors, (0.0, f64::INFINITY));
        assert_eq!(s.t_ci, (0.0, raw.1));
        let acc = [1.0, 1.0, 0.9];
        let raw = t_interval(&acc, 0.95);
        assert!(raw.1 > 1.0, "{raw:?}");
        assert_eq!(summarize(&acc, (0.0, 1.0)).t_ci, (raw.0, 1.0));
        // Inside the range nothing changes, and one value still has no interval.
        assert_eq!(
            summarize(&[1.0, 2.0, 3.0, 4.0, 5.0], (0.0, f64::INFINITY)).t_ci,
            t_interval(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95)
        );
        let one = summarize(&[0.5], (0.0, 1.0)).t_ci;
        assert!(one.0.is_nan() && one.1.is_nan(), "{one:?}");
    }

    /// For 1, 2, …, 21 the resampled median is the 11th order statistic of 21 draws, so
    /// P(median ≤ j) = P(Binomial(21, j/21) ≥ 11): 0.018 at j = 6, 0.056 at 7, 0.944 at 14, 0.982 at
    /// 15. The 95 % percentile interval is therefore about [7, 15], far inside [1, 21].
    #[test]
    fn bootstrap_interval_matches_the_order_statistic_distribution() {
        let xs: Vec<f64> = (1..=21).map(f64::from).collect();
        let (lo, hi) = bootstrap_median_interval(&xs, 0.95);
        assert!(
            (6.0..=8.0).contains(&lo) && (14.0..=16.0).contains(&hi),
            "({lo}, {hi})"
        );
    }
}
