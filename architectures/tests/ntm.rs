//! NTM and DNC through the public interface: shapes for every option, gradients reach every
//! parameter, no NaN on long blank inputs, and the NTM learns short copies.

use membench_architectures::dnc::DncConfig;
use membench_architectures::ntm::{ControllerKind, NtmConfig};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::copy::{Copy, CopyConfig};
use membench_tasks::{InputKind, Inputs, OutputKind, Split, Targets, Task, TaskIo};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

/// tch's generator is process-global and tests run on parallel threads: a test that draws from it
/// holds this lock from seeding on, so its stream (and a learning test's outcome) is its own.
fn seeded(seed: i64) -> std::sync::MutexGuard<'static, ()> {
    static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::manual_seed(seed);
    guard
}

fn dense_io(width: usize, out: usize) -> TaskIo {
    TaskIo {
        input: InputKind::Dense { width },
        output: OutputKind::Bits { width: out },
    }
}

fn small_ntm() -> NtmConfig {
    NtmConfig {
        controller_size: 16,
        memory_slots: 12,
        slot_width: 6,
        ..Default::default()
    }
}

fn small_dnc() -> DncConfig {
    DncConfig {
        controller_size: 16,
        memory_slots: 10,
        slot_width: 6,
        ..Default::default()
    }
}

fn variants() -> Vec<(String, ArchConfig)> {
    let mut v = vec![];
    for controller in [ControllerKind::Lstm, ControllerKind::Feedforward] {
        for (read_heads, write_heads) in [(1, 1), (2, 1), (3, 2)] {
            for shift_range in [0, 1, 2] {
                let cfg = NtmConfig {
                    controller,
                    read_heads,
                    write_heads,
                    shift_range,
                    ..small_ntm()
                };
                v.push((
                    format!("ntm {controller:?} r{read_heads} w{write_heads} s{shift_range}"),
                    ArchConfig::Ntm(cfg),
                ));
            }
        }
        for read_heads in [1, 2, 4] {
            let cfg = DncConfig {
                controller,
                read_heads,
                ..small_dnc()
            };
            v.push((
                format!("dnc {controller:?} r{read_heads}"),
                ArchConfig::Dnc(cfg),
            ));
        }
    }
    v.push((
        "ntm 2 lstm layers".into(),
        ArchConfig::Ntm(NtmConfig {
            controller_layers: 2,
            ..small_ntm()
        }),
    ));
    v.push((
        "ntm 2 ff layers".into(),
        ArchConfig::Ntm(NtmConfig {
            controller: ControllerKind::Feedforward,
            controller_layers: 2,
            ..small_ntm()
        }),
    ));
    v.push((
        "dnc 2 lstm layers".into(),
        ArchConfig::Dnc(DncConfig {
            controller_layers: 2,
            ..small_dnc()
        }),
    ));
    v
}

#[test]
fn every_option_gives_the_right_output_shape() {
    tch::set_num_threads(1);
    let _rng = seeded(0);
    for (name, cfg) in variants() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs, &cfg, dense_io(5, 3)).unwrap();
        let out = net.forward_t(&Tensor::randn([4, 7, 5], (Kind::Float, Device::Cpu)), true);
        assert_eq!(out.size(), [4, 7, 3], "{name}");
        assert!(
            out.isfinite().all().int64_value(&[]) == 1,
            "{name}: non-finite output"
        );
        assert!(
            net.state_size(7) > 0 && net.flops_per_token(7) > 0.0,
            "{name}"
        );
    }
}

/// Token inputs are embedded at controller_size before the core.
#[test]
fn token_inputs_are_embedded() {
    let _rng = seeded(4);
    tch::set_num_threads(1);
    let io = TaskIo {
        input: InputKind::Tokens { vocab: 11 },
        output: OutputKind::Classes { n: 11 },
    };
    for cfg in [ArchConfig::Ntm(small_ntm()), ArchConfig::Dnc(small_dnc())] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs, &cfg, io).unwrap();
        let out = net.forward_t(
            &Tensor::randint(11, [2, 5], (Kind::Int64, Device::Cpu)),
            false,
        );
        assert_eq!(out.size(), [2, 5, 11]);
    }
}

#[test]
fn state_size_counts_memory_reads_weightings_and_controller() {
    let _rng = seeded(4);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &ArchConfig::Ntm(NtmConfig::default()), dense_io(9, 8)).unwrap();
    // 128·20 memory + 20 read vector + 2·128 weightings + 2·100 LSTM state.
    assert_eq!(net.state_size(10), 128 * 20 + 20 + 2 * 128 + 200);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &ArchConfig::Dnc(DncConfig::default()), dense_io(9, 8)).unwrap();
    // 32·16 memory + 2·16 reads + 3·32 weightings + 32 usage + 32² links + 32 precedence + 200.
    assert_eq!(
        net.state_size(10),
        32 * 16 + 32 + 3 * 32 + 32 + 32 * 32 + 32 + 200
    );
}

#[test]
fn configs_are_strict_and_ranges_name_the_field() {
    let _rng = seeded(4);
    let typo = serde_json::from_str::<ArchConfig>(r#"{"name": "ntm", "slot_widht": 4}"#)
        .err()
        .unwrap()
        .to_string();
    assert!(typo.contains("slot_widht"), "{typo}");
    let ok: ArchConfig = serde_json::from_str(r#"{"name": "dnc", "read_heads": 3}"#).unwrap();
    assert_eq!(
        ok,
        ArchConfig::Dnc(DncConfig {
            read_heads: 3,
            ..Default::default()
        })
    );
    let ntm: ArchConfig =
        serde_json::from_str(r#"{"name": "ntm", "controller": "feedforward"}"#).unwrap();
    assert_eq!(
        ntm,
        ArchConfig::Ntm(NtmConfig {
            controller: ControllerKind::Feedforward,
            ..Default::default()
        })
    );
    let vs = nn::VarStore::new(Device::Cpu);
    let bad = ArchConfig::Ntm(NtmConfig {
        memory_slots: 4,
        shift_range: 2,
        ..Default::default()
    });
    let err = Network::new(&vs, &bad, dense_io(3, 3))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("shift_range") && err.contains("0..=1"),
        "{err}"
    );
    let bad = ArchConfig::Dnc(DncConfig {
        clip: -1.0,
        ..Default::default()
    });
    let err = Network::new(&vs, &bad, dense_io(3, 3))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("clip"), "{err}");
}

/// After one backward pass over a short random sequence, every trainable tensor has a gradient
/// that is finite and not all zero (so no parameter is disconnected from the loss).
#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    tch::set_num_threads(1);
    let _rng = seeded(1);
    for (name, cfg) in variants() {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs, &cfg, dense_io(5, 3)).unwrap();
        let x = Tensor::randn([3, 6, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([3, 6, 3], (Kind::Float, Device::Cpu));
        (net.forward_t(&x, true) - y)
            .square()
            .mean(Kind::Float)
            .backward();
        for (pname, p) in vs.variables() {
            let g = p.grad();
            assert!(g.defined(), "{name}: {pname} has no gradient");
            assert!(
                g.isfinite().all().int64_value(&[]) == 1,
                "{name}: {pname} gradient not finite"
            );
            assert!(
                g.abs().max().double_value(&[]) > 0.0,
                "{name}: {pname} gradient is zero"
            );
        }
    }
}

/// All-zero inputs for 200 steps: the memory stays at its constant start, content addressing sees
/// identical slots, and the sharpening sees exact zeros after many shifts. Nothing may turn NaN,
/// forward or backward.
#[test]
fn no_nan_on_long_blank_sequences() {
    tch::set_num_threads(1);
    let _rng = seeded(2);
    let configs = [
        ArchConfig::Ntm(NtmConfig {
            controller_size: 32,
            memory_slots: 32,
            slot_width: 8,
            ..Default::default()
        }),
        ArchConfig::Ntm(NtmConfig {
            controller: ControllerKind::Feedforward,
            controller_size: 32,
            memory_slots: 32,
            slot_width: 8,
            read_heads: 2,
            write_heads: 2,
            ..Default::default()
        }),
        ArchConfig::Dnc(small_dnc()),
    ];
    for cfg in configs {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs, &cfg, dense_io(5, 3)).unwrap();
        let x = Tensor::zeros([2, 200, 5], (Kind::Float, Device::Cpu));
        let out = net.forward_t(&x, true);
        assert!(
            out.isfinite().all().int64_value(&[]) == 1,
            "{}: non-finite output",
            cfg.name()
        );
        out.square().mean(Kind::Float).backward();
        for (pname, p) in vs.variables() {
            let g = p.grad();
            assert!(
                !g.defined() || g.isfinite().all().int64_value(&[]) == 1,
                "{}: {pname} gradient not finite",
                cfg.name()
            );
        }
    }
}

struct Tensors {
    x: Tensor,
    y: Tensor,
    mask: Tensor,
}

fn tensors(task: &Copy, split: Split, seed: u64, index: u64, batch: usize) -> Tensors {
    let b = task.batch(split, seed, index, batch, None);
    let (bt, t) = (b.batch as i64, b.time as i64);
    let (Inputs::Dense(x), Targets::Bits(y)) = (&b.inputs, &b.targets) else {
        panic!("copy is dense bits")
    };
    Tensors {
        x: Tensor::from_slice(x).view([bt, t, -1]),
        y: Tensor::from_slice(y).view([bt, t, -1]),
        mask: Tensor::from_slice(&b.mask).view([bt, t]),
    }
}

/// BCE summed over bits, averaged over scored positions (the harness's loss).
fn masked_bce(logits: &Tensor, d: &Tensors) -> Tensor {
    let per_pos = logits
        .binary_cross_entropy_with_logits::<Tensor>(&d.y, None, None, tch::Reduction::None)
        .sum_dim_intlist(-1, false, Kind::Float);
    (per_pos * &d.mask).sum(Kind::Float) / d.mask.sum(Kind::Float)
}

fn bit_errors_per_seq(net: &Network, task: &Copy, batches: u64, batch: usize) -> f64 {
    let _g = tch::no_grad_guard();
    let mut errors = 0.0;
    for index in 0..batches {
        let d = tensors(task, Split::Test, 0, index, batch);
        let wrong = net
            .forward_t(&d.x, false)
            .gt(0.0)
            .to_kind(Kind::Float)
            .ne_tensor(&d.y)
            .to_kind(Kind::Float);
        errors += (wrong.sum_dim_intlist(-1, false, Kind::Float) * &d.mask)
            .sum(Kind::Float)
            .double_value(&[]);
    }
    errors / (batches as f64 * batch as f64)
}

/// Copy with 8-bit vectors, lengths 1..=5, the issue's bar: fewer than 0.5 bit errors per
/// sequence on 512 held-out sequences. Chance (ignoring the input) is 4 bits per vector, 12 per
/// sequence at the mean length 3; a model that stores only the first vector or two still makes
/// several errors per sequence, so 0.5 means (nearly) every sequence is copied exactly.
///
/// Tuning (all Adam, global-norm clip 10, N = 32 slots of width 20, one read and one write head):
/// controller 100, batch 32, lr 3e-3 crossed the bar after ~1250 steps; lr 1e-2 after 300;
/// controller 64, batch 16, lr 3e-3 (used here: cheaper steps) after 400–600 steps for seeds 3, 4
/// and 5, the error falling abruptly from ~4 to < 0.1 once the model finds the
/// write-then-shift-then-read-back program. The step budget (3000) leaves 5× headroom.
#[test]
fn ntm_learns_short_copies() {
    let cfg = NtmConfig {
        memory_slots: 32,
        controller_size: 64,
        ..Default::default()
    };
    let errors = train_short_copy(ArchConfig::Ntm(cfg), 3000);
    assert!(
        errors < 0.5,
        "NTM copy (len ≤ 5): {errors} bit errors per sequence, want < 0.5"
    );
}

/// The DNC on the same task and bar (allocation writes to fresh slots in order, the forward read
/// mode replays them), at the NTM test's controller size and its default memory.
#[test]
fn dnc_learns_short_copies() {
    let cfg = DncConfig {
        controller_size: 64,
        ..Default::default()
    };
    let errors = train_short_copy(ArchConfig::Dnc(cfg), 3000);
    assert!(
        errors < 0.5,
        "DNC copy (len ≤ 5): {errors} bit errors per sequence, want < 0.5"
    );
}

/// Trains on copy (8 bits, lengths 1..=5) with Adam 3e-3, batch 16, clip 10, until the held-out
/// bit errors per sequence fall below 0.5 or `max_steps` pass; returns the last measurement.
fn train_short_copy(arch: ArchConfig, max_steps: u64) -> f64 {
    tch::set_num_threads(1);
    let _rng = seeded(3);
    let task = Copy::new(CopyConfig {
        bits: 8,
        min_len: 1,
        max_len: 5,
        eval_lengths: vec![],
    })
    .unwrap();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &arch, task.io()).unwrap();
    let mut opt = nn::Adam::default().build(&vs, 3e-3).unwrap();
    let start = std::time::Instant::now();
    let mut errors = f64::INFINITY;
    for step in 0..max_steps {
        let d = tensors(&task, Split::Train, 1, step, 16);
        let loss = masked_bce(&net.forward_t(&d.x, true), &d);
        opt.backward_step_clip_norm(&loss, 10.0);
        if (step + 1) % 100 == 0 {
            errors = bit_errors_per_seq(&net, &task, 4, 128);
            eprintln!(
                "{} step {} loss {:.4} bit errors/seq {errors:.3} ({:.1} s)",
                arch.name(),
                step + 1,
                loss.double_value(&[]),
                start.elapsed().as_secs_f64()
            );
            if errors < 0.5 {
                break;
            }
        }
    }
    errors
}
