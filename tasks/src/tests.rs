//! Properties every task must have: shapes that match its `io()`, determinism across calls,
//! threads and batch sizes, and strict YAML configs.

use super::*;
use rayon::prelude::*;

fn tasks() -> Vec<(TaskConfig, Box<dyn Task>)> {
    TaskConfig::all_defaults()
        .into_iter()
        .map(|c| (c.clone(), c.build().expect("defaults are valid")))
        .collect()
}

/// The batch as the exact bytes a consumer would read.
fn bytes(b: &Batch) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend((b.batch as u64).to_le_bytes());
    out.extend((b.time as u64).to_le_bytes());
    match &b.inputs {
        Inputs::Dense(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        Inputs::Tokens(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
    }
    match &b.targets {
        Targets::Bits(v) | Targets::Real(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
        Targets::Classes(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
    }
    b.mask.iter().for_each(|x| out.extend(x.to_le_bytes()));
    out
}

#[test]
fn batches_match_the_declared_io() {
    for (cfg, task) in tasks() {
        let io = task.io();
        let mut batches: Vec<Batch> = (0..4)
            .map(|i| task.batch(Split::Train, 0, i, 8, None))
            .collect();
        batches.extend(
            task.eval_points()
                .into_iter()
                .map(|p| task.batch(Split::Test, 0, 0, 8, Some(p))),
        );
        for b in batches {
            let (n, name) = (b.batch * b.time, cfg.name());
            assert_eq!(b.batch, 8, "{name}");
            assert_eq!(b.mask.len(), n, "{name}");
            assert!(
                b.mask.iter().all(|&m| m == 0.0 || m == 1.0),
                "{name}: mask is 0/1"
            );
            for e in 0..b.batch {
                assert!(
                    b.mask[e * b.time..(e + 1) * b.time].contains(&1.0),
                    "{name}: example {e} scores nothing"
                );
            }
            match (&b.inputs, io.input) {
                (Inputs::Dense(x), InputKind::Dense { width }) => {
                    assert_eq!(x.len(), n * width, "{name}")
                }
                (Inputs::Tokens(x), InputKind::Tokens { vocab }) => {
                    assert_eq!(x.len(), n, "{name}");
                    assert!(
                        x.iter().all(|&t| (0..vocab as i64).contains(&t)),
                        "{name}: token outside the vocabulary"
                    );
                }
                _ => panic!("{name}: inputs differ from io().input"),
            }
            match (&b.targets, io.output) {
                (Targets::Bits(y), OutputKind::Bits { width }) => {
                    assert_eq!(y.len(), n * width, "{name}");
                    assert!(
                        y.iter().all(|&v| v == 0.0 || v == 1.0),
                        "{name}: bits are 0/1"
                    );
                }
                (Targets::Classes(y), OutputKind::Classes { n: classes }) => {
                    assert_eq!(y.len(), n, "{name}");
                    assert!(
                        y.iter().all(|&c| (0..classes as i64).contains(&c)),
                        "{name}: class outside 0..n"
                    );
                }
                (Targets::Real(y), OutputKind::Real { width, .. }) => {
                    assert_eq!(y.len(), n * width, "{name}")
                }
                (Targets::Bits(y), OutputKind::Blocks { blocks, n: classes }) => {
                    assert_eq!(y.len(), n * blocks * classes, "{name}");
                    // One-hot or all-zero (not scored) blocks.
                    assert!(
                        y.chunks(classes).all(|block| {
                            block.iter().all(|&v| v == 0.0 || v == 1.0)
                                && block.iter().sum::<f32>() <= 1.0
                        }),
                        "{name}: blocks are one-hot or zero"
                    );
                }
                _ => panic!("{name}: targets differ from io().output"),
            }
        }
    }
}

#[test]
fn same_arguments_same_bytes_other_split_or_seed_other_data() {
    for (cfg, task) in tasks() {
        let name = cfg.name();
        let a = bytes(&task.batch(Split::Train, 1, 3, 8, None));
        assert_eq!(a, bytes(&task.batch(Split::Train, 1, 3, 8, None)), "{name}");
        assert_ne!(
            a,
            bytes(&task.batch(Split::Valid, 1, 3, 8, None)),
            "{name}: split"
        );
        // Model selection on valid must not see the test examples.
        assert_ne!(
            bytes(&task.batch(Split::Valid, 1, 3, 8, None)),
            bytes(&task.batch(Split::Test, 1, 3, 8, None)),
            "{name}: valid vs test"
        );
        assert_ne!(
            a,
            bytes(&task.batch(Split::Train, 2, 3, 8, None)),
            "{name}: seed"
        );
        assert_ne!(
            a,
            bytes(&task.batch(Split::Train, 1, 4, 8, None)),
            "{name}: index"
        );
    }
}

#[test]
fn rayon_thread_count_does_not_change_the_bytes() {
    let generate = |threads: usize| -> Vec<Vec<u8>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            tasks()
                .par_iter()
                .flat_map(|(_, task)| {
                    (0..6u64)
                        .into_par_iter()
                        .map(|i| bytes(&task.batch(Split::Train, 9, i, 8, None)))
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    };
    assert_eq!(generate(1), generate(2));
}

/// The test set of a task is a function of (config, data seed, index) alone: a task rebuilt from
/// its YAML gives the same batches, in any order and after any other work, and an example does not
/// depend on how many others share its batch.
#[test]
fn test_split_depends_only_on_config_seed_and_index() {
    for (cfg, task) in tasks() {
        let name = cfg.name();
        let point = task.eval_points()[0];
        let first: Vec<Vec<u8>> = (0..3)
            .map(|i| bytes(&task.batch(Split::Test, 7, i, 8, Some(point))))
            .collect();
        let yaml = serde_yaml::to_string(&cfg).unwrap();
        let rebuilt = serde_yaml::from_str::<TaskConfig>(&yaml)
            .unwrap()
            .build()
            .unwrap();
        for other in tasks() {
            other.1.batch(Split::Train, 7, 0, 4, None);
        }
        for i in (0..3).rev() {
            assert_eq!(
                bytes(&rebuilt.batch(Split::Test, 7, i, 8, Some(point))),
                first[i as usize],
                "{name}: index {i}"
            );
        }
        let (big, small) = (
            task.batch(Split::Test, 7, 0, 8, Some(point)),
            task.batch(Split::Test, 7, 0, 3, Some(point)),
        );
        assert_eq!(
            big.time, small.time,
            "{name}: an eval point fixes the length"
        );
        let rows = 3 * small.time;
        assert_eq!(&big.mask[..rows], &small.mask[..], "{name}");
        match (&big.inputs, &small.inputs) {
            (Inputs::Dense(a), Inputs::Dense(b)) => assert_eq!(&a[..b.len()], &b[..], "{name}"),
            (Inputs::Tokens(a), Inputs::Tokens(b)) => assert_eq!(&a[..b.len()], &b[..], "{name}"),
            _ => unreachable!(),
        }
        match (&big.targets, &small.targets) {
            (Targets::Classes(a), Targets::Classes(b)) => {
                assert_eq!(&a[..b.len()], &b[..], "{name}")
            }
            (Targets::Bits(a), Targets::Bits(b)) | (Targets::Real(a), Targets::Real(b)) => {
                assert_eq!(&a[..b.len()], &b[..], "{name}")
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn yaml_round_trip_and_defaults_from_the_name_alone() {
    for cfg in TaskConfig::all_defaults() {
        let yaml = serde_yaml::to_string(&cfg).unwrap();
        assert_eq!(
            serde_yaml::from_str::<TaskConfig>(&yaml).unwrap(),
            cfg,
            "{yaml}"
        );
        let minimal: TaskConfig = serde_yaml::from_str(&format!("name: {}", cfg.name())).unwrap();
        assert_eq!(
            minimal,
            cfg,
            "{}: omitted fields take the documented defaults",
            cfg.name()
        );
    }
    // Non-default values survive the round trip too (floats, options, lists).
    let custom = [
        TaskConfig::Passkey(passkey::PasskeyConfig {
            length: 512,
            min_depth: 0.1,
            eval_depths: vec![0.1, 0.9],
            ..Default::default()
        }),
        TaskConfig::Mqar(mqar::MqarConfig {
            num_queries: Some(4),
            power_a: 0.5,
            eval_lengths: vec![256],
            ..Default::default()
        }),
        TaskConfig::Adding(adding::AddingConfig {
            tolerance: 0.01,
            ..Default::default()
        }),
    ];
    for cfg in custom {
        let yaml = serde_yaml::to_string(&cfg).unwrap();
        assert_eq!(
            serde_yaml::from_str::<TaskConfig>(&yaml).unwrap(),
            cfg,
            "{yaml}"
        );
    }
}

#[test]
fn unknown_keys_and_names_are_errors() {
    for cfg in TaskConfig::all_defaults() {
        let err =
            serde_yaml::from_str::<TaskConfig>(&format!("name: {}\nmax_lenght: 3", cfg.name()))
                .unwrap_err();
        assert!(
            err.to_string().contains("max_lenght"),
            "{}: {err}",
            cfg.name()
        );
    }
    assert!(serde_yaml::from_str::<TaskConfig>("name: no_such_task").is_err());
}

#[test]
fn chance_is_below_the_success_threshold() {
    for (cfg, task) in tasks() {
        let (s, c) = (task.success(), task.chance());
        let worse = if s.lower_is_better {
            c > s.threshold
        } else {
            c < s.threshold
        };
        assert!(
            worse,
            "{}: chance {c} already meets {} {}",
            cfg.name(),
            s.metric,
            s.threshold
        );
        assert!([
            "loss",
            "token_acc",
            "seq_acc",
            "bit_errors_per_seq",
            "mse",
            "within_tol"
        ]
        .contains(&s.metric.as_str()));
    }
}

/// The chance column of the table in the crate docs, for the default configs.
#[test]
fn documented_default_chance_levels() {
    let expected = [
        42.0,
        122.0,
        9.0,
        1.0 / 128.0,
        1.0 / 16.0,
        1.0 / 16.0,
        1.0 / 8.0,
        0.0784,
        1e-5,
        1.0 / 8.0,
        1.0 / 8.0,
        1.0 / 8.0,
        1.0 / 14.0,
        (1.0 + 31.0 / 15.0) / 32.0,
        1.0 / 127.0,
    ];
    assert_eq!(
        expected.len(),
        tasks().len(),
        "one documented chance per task"
    );
    for ((cfg, task), want) in tasks().into_iter().zip(expected) {
        assert!(
            (task.chance() - want).abs() < 1e-6 * want.max(1e-3),
            "{}: {} vs {want}",
            cfg.name(),
            task.chance()
        );
    }
}

#[test]
fn max_time_bounds_every_training_and_evaluation_batch() {
    for (cfg, task) in tasks() {
        let max = task.max_time();
        let mut longest = 0;
        for i in 0..64 {
            longest = longest.max(task.batch(Split::Train, 3, i, 16, None).time);
        }
        for p in task.eval_points() {
            longest = longest.max(task.batch(Split::Test, 3, 0, 16, Some(p)).time);
        }
        assert!(
            longest <= max,
            "{}: a batch of {longest} steps > max_time {max}",
            cfg.name()
        );
    }
}

/// Issue #27: every impossible value of a config is reported, one mistake per field, in check
/// order; a bound taken from a bad field is not held against the fields it bounds (no mistake is
/// reported as the consequence of another); `build` refuses with the first.
#[test]
fn every_impossible_value_is_reported_once() {
    let cases: &[(&str, &[&str])] = &[
        ("{name: copy, bits: 0, min_len: 5, max_len: 2}", &["bits", "max_len"]),
        (
            "{name: copy, bits: 2000, min_len: 0, max_len: 200000, eval_lengths: [0, 3]}",
            &["bits", "min_len", "max_len", "eval_lengths"],
        ),
        // A bad min_len does not make max_len: 3 wrong.
        ("{name: copy, min_len: 0, max_len: 3}", &["min_len"]),
        (
            "{name: repeat_copy, bits: 0, min_repeats: 0, max_repeats: 5000, min_len: 0, max_len: 0}",
            &["bits", "min_repeats", "max_repeats", "min_len", "max_len"],
        ),
        // max_len 5000 is too long for 1000 repeats, but max_repeats is the mistake here.
        ("{name: repeat_copy, max_repeats: 2000, max_len: 5000}", &["max_repeats"]),
        (
            "{name: associative_recall, bits: 0, item_len: 0, min_items: 1, max_items: 1, eval_lengths: [1]}",
            &["bits", "item_len", "min_items", "max_items", "eval_lengths"],
        ),
        // Left out, num_queries is num_kv_pairs: not a second mistake.
        (
            "{name: mqar, num_kv_pairs: 0, vocab_size: 2, seq_len: 2, power_a: 0}",
            &["num_kv_pairs", "vocab_size", "seq_len", "power_a"],
        ),
        (
            "{name: mqar, num_kv_pairs: 8, num_queries: 9, vocab_size: 8, eval_lengths: [3]}",
            &["vocab_size", "num_queries", "eval_lengths"],
        ),
        (
            "{name: selective_copy, data_vocab: 1, num_tokens: 0, min_len: 0, max_len: 0, eval_lengths: [0]}",
            &["data_vocab", "num_tokens", "min_len", "max_len", "eval_lengths"],
        ),
        (
            "{name: induction_heads, data_vocab: 0, min_len: 2, max_len: 1}",
            &["data_vocab", "min_len", "max_len"],
        ),
        (
            "{name: copy_memory, num_symbols: 0, alphabet: 1, min_delay: 0, max_delay: 0}",
            &["num_symbols", "alphabet", "min_delay", "max_delay"],
        ),
        (
            "{name: adding, min_len: 1, max_len: 1, tolerance: 0}",
            &["min_len", "max_len", "tolerance"],
        ),
        (
            "{name: passkey, key_len: 0, key_vocab: 1, filler_vocab: 0, length: 1, min_depth: -1, max_depth: 2, eval_depths: [0.5, 0.5]}",
            &["key_len", "key_vocab", "filler_vocab", "length", "min_depth", "max_depth", "eval_depths"],
        ),
        (
            "{name: mad_in_context_recall, vocab_size: 1, seq_len: 7, eval_lengths: [2]}",
            &["vocab_size", "seq_len", "eval_lengths"],
        ),
        // A bad k_motif_size does not make the lengths too short.
        (
            "{name: mad_fuzzy_in_context_recall, k_motif_size: 9, v_motif_size: 0, seq_len: 9}",
            &["k_motif_size", "v_motif_size"],
        ),
        (
            "{name: mad_fuzzy_in_context_recall, vocab_size: 2, seq_len: 12, eval_lengths: [12]}",
            &["vocab_size", "seq_len", "eval_lengths"],
        ),
        // A bad noise vocabulary does not make vocab_size too small.
        (
            "{name: mad_noisy_in_context_recall, noise_vocab_size: 0, frac_noise: 1, vocab_size: 3, seq_len: 5}",
            &["noise_vocab_size", "frac_noise", "seq_len"],
        ),
        (
            "{name: mad_selective_copying, vocab_size: 3, num_tokens_to_copy: 0, seq_len: 3, eval_lengths: [3]}",
            &["vocab_size", "num_tokens_to_copy", "seq_len", "eval_lengths"],
        ),
        (
            "{name: mad_compression, vocab_size: 2, seq_len: 1, eval_lengths: [33]}",
            &["vocab_size", "seq_len"],
        ),
        (
            "{name: mad_memorization, vocab_size: 4, seq_len: 3, eval_lengths: [5]}",
            &["vocab_size", "seq_len", "eval_lengths"],
        ),
        // A repeated condition beside another mistake; a list out of range is one mistake.
        (
            "{name: copy, bits: 0, eval_lengths: [10, 10]}",
            &["bits", "eval_lengths"],
        ),
        ("{name: copy, eval_lengths: [0, 0]}", &["eval_lengths"]),
        (
            "{name: passkey, eval_lengths: [64, 64], eval_depths: [1, 1]}",
            &["eval_lengths", "eval_depths"],
        ),
    ];
    for (yaml, fields) in cases {
        let cfg: TaskConfig = serde_yaml::from_str(yaml).unwrap();
        let found = cfg.mistakes();
        let got: Vec<&str> = found.iter().map(|e| e.field).collect();
        assert_eq!(&got, fields, "{yaml}: {found:#?}");
        assert_eq!(cfg.build().err().as_ref(), found.first(), "{yaml}");
    }
    // The messages are those one check at a time gave.
    let cfg: TaskConfig = serde_yaml::from_str(cases[0].0).unwrap();
    let texts: Vec<String> = cfg.mistakes().iter().map(|e| e.to_string()).collect();
    assert_eq!(
        texts,
        [
            "task copy: `bits` = 0: expected 1..=1024",
            "task copy: `max_len` = 2: expected min_len (5)..=100000",
        ]
    );
    let cfg: TaskConfig =
        serde_yaml::from_str("{name: copy, bits: 0, eval_lengths: [10, 10]}").unwrap();
    assert_eq!(
        cfg.mistakes()[1].to_string(),
        "task copy: `eval_lengths` = 10: listed twice; expected distinct evaluation conditions"
    );
}
