//! Test helpers: the harness's metrics recomputed in plain Rust, an oracle check and an empirical
//! chance check shared by every task's tests.

use crate::{Batch, OutputKind, Split, Targets, Task};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The harness's metrics (see harness/src/run/eval.rs) over scored positions (over scored blocks,
/// the decoded tokens, for a `Blocks` output), with a standard error
/// for the one named `metric` (used to judge an empirical chance level):
/// * `token_acc`, `within_tol`, `seq_acc`: binomial proportions, s.e. sqrt(c(1-c)/n) at the
///   claimed chance c, so the check is a z-test of "the claim is the true mean";
/// * `bit_errors_per_seq`, `mse`: means over sequences (values), s.e. = sample sd / sqrt(n).
pub(crate) fn measure(
    kind: OutputKind,
    metric: &str,
    chance: f64,
    pairs: &[(Batch, Targets)],
) -> (f64, f64) {
    let (mut positions, mut correct_positions, mut sequences, mut correct_sequences) =
        (0f64, 0f64, 0f64, 0f64);
    let mut per_seq_bit_errors = vec![];
    let mut per_value_sq = vec![];
    let mut within = 0f64;
    for (b, pred) in pairs {
        let w = kind.width();
        for e in 0..b.batch {
            let (mut seq_ok, mut seq_bits) = (true, 0f64);
            for t in 0..b.time {
                let p = e * b.time + t;
                if b.mask[p] == 0.0 {
                    continue;
                }
                if let OutputKind::Blocks { blocks, n } = kind {
                    // Every block with a target is one decoded token: right when its argmax is.
                    let (Targets::Bits(y), Targets::Bits(q)) = (&b.targets, pred) else {
                        panic!("blocks are predicted and targeted as bits");
                    };
                    let argmax = |v: &[f32]| {
                        (0..v.len()).fold(0, |best, k| if v[k] > v[best] { k } else { best })
                    };
                    for k in 0..blocks {
                        let at = p * w + k * n;
                        let (yk, qk) = (&y[at..at + n], &q[at..at + n]);
                        if yk.iter().sum::<f32>() == 0.0 {
                            continue;
                        }
                        let ok = argmax(yk) == argmax(qk);
                        positions += 1.0;
                        correct_positions += ok as u8 as f64;
                        seq_ok &= ok;
                    }
                    continue;
                }
                positions += 1.0;
                let ok = match (&b.targets, pred, kind) {
                    (Targets::Bits(y), Targets::Bits(q), _) => {
                        let wrong = (0..w)
                            .filter(|&k| (y[p * w + k] > 0.5) != (q[p * w + k] > 0.5))
                            .count();
                        seq_bits += wrong as f64;
                        wrong == 0
                    }
                    (Targets::Classes(y), Targets::Classes(q), _) => y[p] == q[p],
                    (Targets::Real(y), Targets::Real(q), OutputKind::Real { tolerance, .. }) => {
                        let mut all = true;
                        for k in 0..w {
                            let d = (q[p * w + k] - y[p * w + k]) as f64;
                            per_value_sq.push(d * d);
                            let inside = d.abs() <= tolerance as f64;
                            within += inside as u8 as f64;
                            all &= inside;
                        }
                        all
                    }
                    _ => panic!("prediction kind differs from target kind"),
                };
                correct_positions += ok as u8 as f64;
                seq_ok &= ok;
            }
            sequences += 1.0;
            correct_sequences += seq_ok as u8 as f64;
            per_seq_bit_errors.push(seq_bits);
        }
    }
    let binomial_se = |n: f64| (chance * (1.0 - chance) / n).sqrt();
    let mean_se = |xs: &[f64]| {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        (mean, (var / n).sqrt())
    };
    match metric {
        "token_acc" => (correct_positions / positions, binomial_se(positions)),
        "seq_acc" => (correct_sequences / sequences, binomial_se(sequences)),
        "within_tol" => (
            within / per_value_sq.len() as f64,
            binomial_se(per_value_sq.len() as f64),
        ),
        "bit_errors_per_seq" => mean_se(&per_seq_bit_errors),
        "mse" => mean_se(&per_value_sq),
        other => panic!("unknown metric {other}"),
    }
}

/// Property: for any split, data seed, batch index and batch size, in training or at any
/// evaluation point, the oracle's predictions equal the targets on every scored position, so its
/// success metric is perfect. `cases` random draws from a fixed-seed proptest runner (repeatable).
pub(crate) fn assert_oracle_solves(
    task: &dyn Task,
    cases: u32,
    oracle: impl Fn(&Batch) -> Targets,
) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let io = task.io();
    let crit = task.success();
    let points = task.eval_points();
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let splits = prop_oneof![Just(Split::Train), Just(Split::Valid), Just(Split::Test)];
    let args = (
        splits,
        any::<u64>(),
        any::<u64>(),
        1..20usize,
        0..=points.len(),
    );
    runner
        .run(&args, |(split, seed, index, batch_size, which)| {
            // `which == points.len()` draws from the training distribution.
            let b = task.batch(split, seed, index, batch_size, points.get(which).copied());
            for e in 0..b.batch {
                prop_assert!(
                    b.mask[e * b.time..(e + 1) * b.time].contains(&1.0),
                    "example {} scores nothing",
                    e
                );
            }
            let pred = oracle(&b);
            let (value, _) = measure(io.output, &crit.metric, 0.5, &[(b, pred)]);
            let perfect = match crit.metric.as_str() {
                "bit_errors_per_seq" | "mse" => 0.0,
                _ => 1.0,
            };
            prop_assert!(
                (value - perfect).abs() < 1e-9,
                "oracle scores {} = {}",
                crit.metric,
                value
            );
            Ok(())
        })
        .unwrap();
}

/// The documented chance level matches an input-ignoring predictor within 4 standard errors
/// (two-sided false alarm 6e-5 under the claim; the seeds are fixed, so the test is repeatable).
pub(crate) fn assert_chance_matches(
    task: &dyn Task,
    batches: u64,
    mut guess: impl FnMut(&Batch, &mut ChaCha8Rng) -> Targets,
) {
    let io = task.io();
    let crit = task.success();
    let chance = task.chance();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let pairs: Vec<(Batch, Targets)> = (0..batches)
        .map(|i| {
            let b = task.batch(Split::Train, 3, i, 32, None);
            let g = guess(&b, &mut rng);
            (b, g)
        })
        .collect();
    let (value, se) = measure(io.output, &crit.metric, chance, &pairs);
    assert!(
        (value - chance).abs() <= 4.0 * se + 1e-12,
        "{}: empirical {value} vs chance {chance} (s.e. {se})",
        crit.metric
    );
}

/// Input-ignoring guesses: all-zero bits.
pub(crate) fn zero_bits(b: &Batch, width: usize) -> Targets {
    Targets::Bits(vec![0.0; b.batch * b.time * width])
}

/// Input-ignoring guesses: classes uniform over `alphabet`.
pub(crate) fn uniform_classes(
    b: &Batch,
    rng: &mut ChaCha8Rng,
    alphabet: std::ops::Range<i64>,
) -> Targets {
    use rand::Rng;
    Targets::Classes(
        (0..b.batch * b.time)
            .map(|_| rng.random_range(alphabet.clone()))
            .collect(),
    )
}
