//! Batch shards (`batch_shards.cpp`): with 2 intra-op threads a network runs its core as two
//! batch shards side by side. The sharded core must compute the unsharded core's function and
//! gradients (float32, to rounding: every family at the bench sizes, shorter sequences, and the
//! fused scans of Mamba and GLA, whose kernels split their own work over the threads), be
//! deterministic, and pass a failing core's message back to the caller.

use membench_architectures::bench_specs::SPECS;
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, TaskIo};
use std::panic::{catch_unwind, AssertUnwindSafe};
use tch::{nn, Device, Kind, Tensor};

const BATCH: i64 = 16;

fn inputs(io: TaskIo, t: i64) -> Tensor {
    tch::manual_seed(1);
    match io.input {
        InputKind::Dense { width } => {
            Tensor::rand([BATCH, t, width as i64], (Kind::Float, Device::Cpu)).round()
        }
        InputKind::Tokens { vocab } => {
            Tensor::randint(vocab as i64, [BATCH, t], (Kind::Int64, Device::Cpu))
        }
    }
}

fn build(cfg: &ArchConfig, io: TaskIo) -> (nn::VarStore, Network) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, cfg, io).unwrap();
    (vs, net)
}

/// Output, and every parameter's gradient (by name) of a fixed random projection of it.
fn output_and_grads(
    vs: &nn::VarStore,
    net: &Network,
    xs: &Tensor,
) -> (Tensor, Vec<(String, Tensor)>) {
    let ys = net.forward_t(xs, true);
    tch::manual_seed(2);
    let w = Tensor::randn(ys.size(), (Kind::Float, Device::Cpu));
    for mut p in vs.trainable_variables() {
        p.zero_grad();
    }
    (&ys * &w).sum(Kind::Float).backward();
    let mut grads: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(name, p)| (name, p.grad().copy()))
        .collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (ys.detach(), grads)
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let scale = a.abs().max().double_value(&[]).max(1e-30);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn sharded_cores_compute_the_unsharded_function_and_gradients() {
    // GLA and Mamba run with their default and with their fused scans (`gla_fused`, `mamba_fused`).
    for spec in SPECS {
        let cfg: ArchConfig = serde_yaml::from_str(spec.arch_yaml).unwrap();
        let t = (spec.time as i64).min(24);
        let (vs, net) = build(&cfg, spec.io);
        let xs = inputs(spec.io, t);

        tch::set_num_threads(1);
        assert_eq!(net.shards(&xs, true), 1);
        let (y1, g1) = output_and_grads(&vs, &net, &xs);
        tch::set_num_threads(2);
        assert_eq!(net.shards(&xs, true), 2, "{}: not sharded", spec.name);
        let (y2, g2) = output_and_grads(&vs, &net, &xs);
        tch::set_num_threads(1);

        let d = max_rel_diff(&y1, &y2);
        assert!(
            d < 1e-5,
            "{}: outputs differ by {d:e} (relative)",
            spec.name
        );
        for ((name, a), (_, b)) in g1.iter().zip(&g2) {
            assert!(
                a.abs().max().double_value(&[]) > 0.0,
                "{}: {name} has a zero gradient",
                spec.name
            );
            let d = max_rel_diff(a, b);
            assert!(
                d < 1e-4,
                "{}: gradient of {name} differs by {d:e} (relative)",
                spec.name
            );
        }
    }
}

#[test]
fn sharded_steps_are_deterministic_and_evaluation_matches_training_mode() {
    let cfg: ArchConfig =
        serde_yaml::from_str("{name: ntm, controller_size: 32, memory_slots: 16, slot_width: 8}")
            .unwrap();
    let io = SPECS.iter().find(|s| s.name == "ntm").unwrap().io;
    let (vs, net) = build(&cfg, io);
    let xs = inputs(io, 12);
    tch::set_num_threads(2);
    let (ya, ga) = output_and_grads(&vs, &net, &xs);
    let (yb, gb) = output_and_grads(&vs, &net, &xs);
    let y_eval = tch::no_grad(|| net.forward_t(&xs, false));
    tch::set_num_threads(1);
    assert!(ya.equal(&yb));
    assert!(
        ga.iter().zip(&gb).all(|((_, a), (_, b))| a.equal(b)),
        "two sharded steps differ"
    );
    assert!(
        y_eval.equal(&ya),
        "no-grad sharded forward differs from the training one"
    );
}

#[test]
fn random_draws_and_small_batches_are_never_sharded() {
    let io = SPECS.iter().find(|s| s.name == "transformer").unwrap().io;
    let cfg: ArchConfig =
        serde_yaml::from_str("{name: transformer, d_model: 32, layers: 1, heads: 2, dropout: 0.1}")
            .unwrap();
    let (_vs, net) = build(&cfg, io);
    tch::set_num_threads(2);
    let (full, small) = (inputs(io, 8), inputs(io, 8).narrow(0, 0, 15));
    let shards = [
        net.shards(&full, true),
        net.shards(&full, false),
        net.shards(&small, false),
    ];
    tch::set_num_threads(1);
    // Dropout draws in training; evaluation draws nothing; 15 examples < 2 × 8.
    assert_eq!(shards, [1, 2, 1]);
}

#[test]
fn a_failing_core_reports_its_message() {
    let spec = SPECS.iter().find(|s| s.name == "gru").unwrap();
    let cfg: ArchConfig = serde_yaml::from_str(spec.arch_yaml).unwrap();
    let (_vs, net) = build(&cfg, spec.io);
    // 5 input channels where the GRU expects 9: the shape error is raised inside a shard.
    let xs = Tensor::zeros([BATCH, 4, 5], (Kind::Float, Device::Cpu));
    tch::set_num_threads(2);
    let err = catch_unwind(AssertUnwindSafe(|| net.forward_t(&xs, true))).unwrap_err();
    tch::set_num_threads(1);
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("shapes cannot be multiplied"),
        "message: {msg}"
    );
}
