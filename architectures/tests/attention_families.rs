//! Shapes, gradients, causality and config strictness of the attention/memory families
//! (Transformer, MemN2N, KV memory network). Learning tests live in `attention_learning.rs`.

use membench_architectures::kv_memory::{KeySource, KvMemoryConfig};
use membench_architectures::memn2n::{MemN2NConfig, Tying};
use membench_architectures::transformer::{PosEncoding, TransformerConfig};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::{nn, Device, Kind, Tensor};

const D_IN: usize = 5;
const D_OUT: usize = 3;

fn dense_io() -> TaskIo {
    TaskIo {
        input: InputKind::Dense { width: D_IN },
        output: OutputKind::Bits { width: D_OUT },
    }
}

fn transformer(pos: PosEncoding, window: Option<i64>, layers: i64) -> ArchConfig {
    ArchConfig::Transformer(TransformerConfig {
        d_model: 16,
        layers,
        heads: 2,
        mlp_ratio: 2.0,
        mlp: Default::default(),
        dropout: 0.0,
        pos_encoding: pos,
        window,
        max_len: 64,
        conv_kernel: 0,
    })
}

/// `cfg` (a Transformer) with a short convolution of `k` taps before attention.
fn with_conv(cfg: ArchConfig, k: i64) -> ArchConfig {
    match cfg {
        ArchConfig::Transformer(c) => ArchConfig::Transformer(TransformerConfig {
            conv_kernel: k,
            ..c
        }),
        other => other,
    }
}

fn memn2n(hops: i64, memory_size: i64, tying: Tying) -> ArchConfig {
    ArchConfig::Memn2n(MemN2NConfig {
        d_model: 12,
        hops,
        memory_size,
        tying,
    })
}

fn kv(hops: i64, memory_size: i64, key_source: KeySource) -> ArchConfig {
    ArchConfig::KvMemory(KvMemoryConfig {
        d_model: 12,
        hops,
        memory_size,
        key_source,
    })
}

/// Every option of every family, each at a memory/window smaller than the test sequences so the
/// band masks are exercised.
fn all_configs() -> Vec<ArchConfig> {
    let mut cfgs = vec![];
    for pos in [
        PosEncoding::Sinusoidal,
        PosEncoding::Learned,
        PosEncoding::Rope,
        PosEncoding::None,
    ] {
        cfgs.push(transformer(pos, None, 2));
        cfgs.push(transformer(pos, Some(3), 2));
    }
    cfgs.push(with_conv(transformer(PosEncoding::Rope, None, 2), 3));
    cfgs.push(with_conv(
        transformer(PosEncoding::Sinusoidal, Some(3), 2),
        4,
    ));
    for tying in [Tying::Adjacent, Tying::Layerwise] {
        cfgs.push(memn2n(1, 4, tying));
        cfgs.push(memn2n(3, 4, tying));
        cfgs.push(memn2n(2, 100, tying));
    }
    for key_source in [KeySource::Current, KeySource::Previous] {
        cfgs.push(kv(1, 4, key_source));
        cfgs.push(kv(2, 100, key_source));
    }
    cfgs
}

fn build(cfg: &ArchConfig) -> (nn::VarStore, Network) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, cfg, dense_io()).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
    (vs, net)
}

#[test]
fn shapes_for_every_family_and_option() {
    tch::set_num_threads(1);
    for cfg in all_configs() {
        let (_vs, net) = build(&cfg);
        // Several lengths through one model: the per-(T, device) caches must not mix them up.
        for t in [1, 7, 9, 7] {
            let xs = Tensor::randn([3, t, D_IN as i64], (Kind::Float, Device::Cpu));
            let ys = net.forward_t(&xs, true);
            assert_eq!(ys.size(), [3, t, D_OUT as i64], "{cfg:?} at T = {t}");
            assert!(
                bool::try_from(ys.isfinite().all()).unwrap(),
                "{cfg:?}: non-finite output"
            );
        }
        assert!(net.param_count() > 0);
        assert!(net.state_size(9) > 0);
        assert!(net.flops_per_token(9) > 0.0);
    }
}

#[test]
fn token_inputs_use_the_embedding_width() {
    tch::set_num_threads(1);
    let io = TaskIo {
        input: InputKind::Tokens { vocab: 10 },
        output: OutputKind::Classes { n: 10 },
    };
    for cfg in [
        transformer(PosEncoding::Rope, None, 1),
        memn2n(2, 8, Tying::Adjacent),
        kv(2, 8, KeySource::Previous),
    ] {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&vs, &cfg, io).unwrap();
        let xs = Tensor::randint(10, [2, 6], (Kind::Int64, Device::Cpu));
        assert_eq!(net.forward_t(&xs, false).size(), [2, 6, 10]);
    }
}

/// One backward pass of Σ y² reaches every parameter with a finite, non-zero gradient: no
/// parameter is dead (built but unused) and no path produces NaN (e.g. a fully masked softmax row).
#[test]
fn every_parameter_gets_a_finite_nonzero_gradient() {
    tch::set_num_threads(1);
    for cfg in all_configs() {
        let (vs, net) = build(&cfg);
        let xs = Tensor::randn([2, 9, D_IN as i64], (Kind::Float, Device::Cpu));
        net.forward_t(&xs, true)
            .square()
            .sum(Kind::Float)
            .backward();
        for (name, var) in vs.variables() {
            let g = var.grad();
            assert!(g.defined(), "{cfg:?}: `{name}` has no gradient");
            assert!(
                bool::try_from(g.isfinite().all()).unwrap(),
                "{cfg:?}: `{name}` has a non-finite gradient"
            );
            assert!(
                f64::try_from(g.abs().sum(Kind::Float)).unwrap() > 0.0,
                "{cfg:?}: `{name}` has an all-zero gradient"
            );
        }
    }
}

/// Changing the input at position s leaves every output before s unchanged (and does change the
/// output at s, so the test is not vacuous).
#[test]
fn outputs_never_depend_on_future_inputs() {
    tch::set_num_threads(1);
    let (t, s) = (10, 6);
    for cfg in all_configs() {
        let (_vs, net) = build(&cfg);
        let xs = Tensor::randn([2, t, D_IN as i64], (Kind::Float, Device::Cpu));
        let changed = xs.copy();
        changed.narrow(1, s, 1).copy_(&Tensor::randn(
            [2, 1, D_IN as i64],
            (Kind::Float, Device::Cpu),
        ));
        let (a, b) = (net.forward_t(&xs, false), net.forward_t(&changed, false));
        let past = (a.narrow(1, 0, s) - b.narrow(1, 0, s)).abs().max();
        assert_eq!(
            f64::try_from(past).unwrap(),
            0.0,
            "{cfg:?}: outputs before {s} changed"
        );
        let now = (a.narrow(1, s, 1) - b.narrow(1, s, 1)).abs().max();
        assert!(
            f64::try_from(now).unwrap() > 1e-6,
            "{cfg:?}: output at {s} ignores its own input"
        );
    }
}

/// With one layer (memory networks: any number of hops, all reading the same window), a window
/// of w positions means x_s cannot reach outputs at t ≥ s + w, yet does reach t = s + w − 1.
#[test]
fn windows_bound_how_far_back_an_input_reaches() {
    tch::set_num_threads(1);
    let (t, s, w) = (12, 2, 4);
    for cfg in [
        transformer(PosEncoding::Rope, Some(w), 1),
        transformer(PosEncoding::Sinusoidal, Some(w), 1),
        memn2n(3, w, Tying::Adjacent),
        memn2n(2, w, Tying::Layerwise),
        kv(2, w, KeySource::Current),
    ] {
        let (_vs, net) = build(&cfg);
        let xs = Tensor::randn([2, t, D_IN as i64], (Kind::Float, Device::Cpu));
        let changed = xs.copy();
        changed.narrow(1, s, 1).copy_(&Tensor::randn(
            [2, 1, D_IN as i64],
            (Kind::Float, Device::Cpu),
        ));
        let (a, b) = (net.forward_t(&xs, false), net.forward_t(&changed, false));
        let beyond = (a.narrow(1, s + w, t - s - w) - b.narrow(1, s + w, t - s - w))
            .abs()
            .max();
        assert_eq!(
            f64::try_from(beyond).unwrap(),
            0.0,
            "{cfg:?}: input at {s} reached beyond the window"
        );
        let edge = (a.narrow(1, s + w - 1, 1) - b.narrow(1, s + w - 1, 1))
            .abs()
            .max();
        assert!(
            f64::try_from(edge).unwrap() > 1e-6,
            "{cfg:?}: input at {s} does not reach the window's far edge"
        );
    }
}

#[test]
fn learned_positions_cover_at_most_max_len() {
    tch::set_num_threads(1);
    let (_vs, net) = build(&transformer(PosEncoding::Learned, None, 1)); // max_len 64
    let _ = net.forward_t(
        &Tensor::zeros([1, 64, D_IN as i64], (Kind::Float, Device::Cpu)),
        false,
    );
    let too_long = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        net.forward_t(
            &Tensor::zeros([1, 65, D_IN as i64], (Kind::Float, Device::Cpu)),
            false,
        )
    }));
    let msg = too_long.expect_err("T = 65 > max_len = 64 must fail");
    let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("65") && msg.contains("max_len = 64"),
        "unclear message: {msg}"
    );
    assert_eq!(
        transformer(PosEncoding::Learned, None, 1).max_seq_len(),
        Some(64)
    );
    assert_eq!(transformer(PosEncoding::Rope, None, 1).max_seq_len(), None);
}

#[test]
fn state_size_and_flops_follow_the_formulas() {
    let (_vs, tf) = build(&transformer(PosEncoding::Rope, None, 2));
    // KV cache: 2 · layers · len · d_model
    assert_eq!(tf.state_size(100), 2 * 2 * 100 * 16);
    let (_vs, tfw) = build(&transformer(PosEncoding::Rope, Some(3), 2));
    assert_eq!(tfw.state_size(100), 2 * 2 * 3 * 16);
    // Attention cost grows with length without a window; with one it saturates at the window
    // (the first w−1 positions see fewer, so the mean creeps up by O(w²/len)).
    assert!(tf.flops_per_token(1000) > tf.flops_per_token(100));
    let (short, long) = (tfw.flops_per_token(100), tfw.flops_per_token(1000));
    assert!(
        long >= short && long - short < 1e-3 * short,
        "{short} vs {long}"
    );
    // The short convolution keeps its last K − 1 inputs per channel and layer: 2 · 2 · 16 more.
    let (_vs, tfc) = build(&with_conv(transformer(PosEncoding::Rope, None, 2), 3));
    assert_eq!(tfc.state_size(100), 2 * 2 * 100 * 16 + 2 * 2 * 16);
    let conv_flops = tfc.flops_per_token(100) - tf.flops_per_token(100);
    assert!(
        (conv_flops - 2.0 * 2.0 * 3.0 * 16.0).abs() < 1e-9,
        "{conv_flops}"
    );
    let (_vs, mn) = build(&memn2n(3, 4, Tying::Adjacent));
    assert_eq!(mn.state_size(100), 4 * 4 * 12); // (K+1) embeddings · slots · d
    let (_vs, mnl) = build(&memn2n(3, 4, Tying::Layerwise));
    assert_eq!(mnl.state_size(2), 2 * 2 * 12);
    let (_vs, k) = build(&kv(2, 4, KeySource::Current));
    assert_eq!(k.state_size(100), 2 * 4 * 12);
}

#[test]
fn configs_are_strict_and_defaults_are_documented_ones() {
    let cfg: ArchConfig =
        serde_yaml::from_str("{name: transformer, d_model: 32, layers: 2, heads: 4}").unwrap();
    let ArchConfig::Transformer(t) = &cfg else {
        panic!("wrong variant: {cfg:?}")
    };
    assert_eq!(
        (t.mlp_ratio, t.dropout, t.pos_encoding, t.window, t.max_len),
        (4.0, 0.0, PosEncoding::Sinusoidal, None, 2048)
    );
    let cfg: ArchConfig = serde_yaml::from_str("{name: memn2n, d_model: 32}").unwrap();
    assert_eq!(
        cfg,
        ArchConfig::Memn2n(MemN2NConfig {
            d_model: 32,
            hops: 3,
            memory_size: 50,
            tying: Tying::Adjacent
        })
    );
    let cfg: ArchConfig =
        serde_yaml::from_str("{name: kv_memory, d_model: 32, key_source: previous}").unwrap();
    assert_eq!(
        cfg,
        ArchConfig::KvMemory(KvMemoryConfig {
            d_model: 32,
            hops: 2,
            memory_size: 50,
            key_source: KeySource::Previous
        })
    );
    for bad in [
        "{name: transformer, d_model: 32, layers: 2, heads: 4, head: 4}",
        "{name: transformer, d_model: 32, layers: 2, heads: 4, pos_encoding: alibi}",
        "{name: memn2n, d_model: 32, tying: none}",
        "{name: kv_memory, d_model: 32, window: 3}",
    ] {
        assert!(
            serde_yaml::from_str::<ArchConfig>(bad).is_err(),
            "accepted {bad}"
        );
    }
    let io = dense_io();
    let rejected = [
        (
            "{name: transformer, d_model: 30, layers: 2, heads: 4}",
            "heads",
        ),
        (
            "{name: transformer, d_model: 32, layers: 0, heads: 4}",
            "layers",
        ),
        (
            "{name: transformer, d_model: 32, layers: 1, heads: 4, dropout: 1.0}",
            "dropout",
        ),
        (
            "{name: transformer, d_model: 32, layers: 1, heads: 4, window: 0}",
            "window",
        ),
        (
            "{name: transformer, d_model: 12, layers: 1, heads: 4, pos_encoding: rope}",
            "heads",
        ),
        ("{name: memn2n, d_model: 32, hops: 0}", "hops"),
        ("{name: memn2n, d_model: 32, memory_size: 0}", "memory_size"),
        ("{name: kv_memory, d_model: 0}", "d_model"),
    ];
    for (yaml, field) in rejected {
        let cfg: ArchConfig = serde_yaml::from_str(yaml).unwrap();
        let err = cfg.validate().expect_err(yaml).to_string();
        assert!(
            err.contains(&format!("`{field}`")),
            "{yaml}: error does not name `{field}`: {err}"
        );
        // Building must refuse the same config with the same error.
        assert_eq!(
            Network::new(&nn::VarStore::new(Device::Cpu), &cfg, io)
                .err()
                .map(|e| e.to_string()),
            Some(err)
        );
    }
    assert!(transformer(PosEncoding::Rope, Some(3), 2)
        .validate()
        .is_ok());
}
