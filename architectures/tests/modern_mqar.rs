//! Learning tests for the recurrent-memory families: multi-query associative recall (MQAR;
//! Arora et al. 2023, "Zoology"), trained end to end through [`Network`] on token inputs with a
//! class read-out, cross-entropy on the query positions only.
//!
//! Sequence (T = 2P + Q = 24): k₁ v₁ … k_P v_P q₁ … q_Q with P = 4 distinct keys from tokens
//! 0..16, values from 16..32 (repeats allowed), and Q = 16 queries, each one of the P keys; the
//! target at a query is its key's value. A model without recall can at best spread its guess over
//! the P values in context: 1/P = 25% accuracy. Thresholds sit far above that, so passing means
//! the model stores and retrieves bindings.

use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

const KEYS: i64 = 16;
const VOCAB: i64 = 32;
const PAIRS: i64 = 4;
const QUERIES: i64 = 16;
const BATCH: i64 = 32;

/// (inputs [B, 2P + Q] i64, targets [B, Q] i64) from tch's global generator.
fn mqar_batch(b: i64) -> (Tensor, Tensor) {
    let opts = (Kind::Int64, Device::Cpu);
    // P distinct keys per example: the first P of a random permutation of 0..16.
    let keys = Tensor::rand([b, KEYS], (Kind::Float, Device::Cpu))
        .argsort(-1, false)
        .narrow(1, 0, PAIRS);
    let values = Tensor::randint_low(KEYS, VOCAB, [b, PAIRS], opts);
    let pick = Tensor::randint(PAIRS, [b, QUERIES], opts);
    let (queries, answers) = (keys.gather(1, &pick, false), values.gather(1, &pick, false));
    let context = Tensor::stack(&[keys, values], 2).view([b, 2 * PAIRS]);
    (Tensor::cat(&[context, queries], 1), answers)
}

/// tch's generator is process-global and the test harness runs tests on parallel threads: each
/// training holds this lock so its seed-0 stream (init and data) is its own and the result is the
/// same on every run.
static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Trains for `steps` Adam steps (batch 32) and returns query accuracy on 512 fresh examples.
fn train_mqar(yaml: &str, steps: usize, lr: f64) -> f64 {
    let _rng = GLOBAL_RNG.lock().unwrap_or_else(|e| e.into_inner());
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg: ArchConfig = serde_yaml::from_str(yaml).unwrap();
    let store = nn::VarStore::new(Device::Cpu);
    let io = TaskIo {
        input: InputKind::Tokens {
            vocab: VOCAB as usize,
        },
        output: OutputKind::Classes { n: VOCAB as usize },
    };
    let net = Network::new(&store, &cfg, io).unwrap();
    let mut opt = nn::Adam::default().build(&store, lr).unwrap();
    let logits_at_queries =
        |x: &Tensor, train: bool| net.forward_t(x, train).narrow(1, 2 * PAIRS, QUERIES);
    for _ in 0..steps {
        let (x, y) = mqar_batch(BATCH);
        let loss = logits_at_queries(&x, true)
            .reshape([-1, VOCAB])
            .cross_entropy_for_logits(&y.reshape([-1]));
        opt.backward_step(&loss);
    }
    tch::no_grad(|| {
        let (x, y) = mqar_batch(512);
        let hits = logits_at_queries(&x, false).argmax(-1, false).eq_tensor(&y);
        hits.to_kind(Kind::Float)
            .mean(Kind::Float)
            .double_value(&[])
    })
}

/// Trains `yaml` as [`train_mqar`] does and asserts that its query accuracy exceeds `threshold`.
fn assert_learns(label: &str, yaml: &str, steps: usize, lr: f64, threshold: f64) {
    let acc = train_mqar(yaml, steps, lr);
    eprintln!("{label} MQAR accuracy {acc:.3}");
    assert!(
        acc > threshold,
        "{label}: accuracy {acc} after {steps} steps"
    );
}

// Sizes and step counts: the smallest that learn reliably within ~10–20 s on one idle core (on
// this shared machine, under a load of ~5 per core, 40–60 s). Accuracies reached at these settings
// (seed 0): linear attention 0.94 at 300 steps, 0.994 at 400; GLA 0.91 at 600; Mamba 0.75 at 400
// and 0.91 at 600 (600 steps took 72 s here, over the per-test budget, so the test runs 400).
// Each threshold sits well above the 0.25 that needs no recall and below what the model reaches,
// so it fails when recall breaks, not on noise.

/// Based-style: Taylor feature map plus a 3-tap short convolution. Without the convolution the
/// layer cannot tie a value token to the key before it (it has no notion of order), and it stays
/// at ~0.33–0.41 after 800 steps.
#[test]
fn linear_attention_learns_mqar() {
    assert_learns(
        "linear attention (taylor)",
        "name: linear_attention\nd_model: 32\nlayers: 2\nheads: 2\nfeature_dim: 8\nfeature_map: taylor\nmlp_ratio: 2\nconv_kernel: 3\n",
        400,
        3e-3,
        0.9,
    );
}

#[test]
fn gla_learns_mqar() {
    assert_learns(
        "GLA",
        "name: gla\nd_model: 32\nlayers: 2\nheads: 2\nmlp_ratio: 2\nconv_kernel: 3\nchunk_size: 8\n",
        600,
        3e-3,
        0.8,
    );
}

/// chunk_size 8 divides T = 24 (no padding). 1200 steps: with the reference's initialisation
/// (nn.Linear's for in_proj and x_proj, out_proj ÷ √layers; issue #23) this run is at 0.35 after
/// 400 steps and 0.87 after 1200; with tch's √6× wider linear init it passed 0.6 in 400.
#[test]
fn mamba_learns_mqar() {
    assert_learns(
        "Mamba",
        "name: mamba\nd_model: 32\nlayers: 2\nstate_dim: 8\nchunk_size: 8\nscan: chunked\n",
        1200,
        1e-2,
        0.6,
    );
}

/// The same training through the fused CPU kernel (`scan: fused`, its own backward pass): it must
/// learn as the tensor-op scans do (seed 0: 0.895 after 1200 steps, 15 s on a loaded machine).
#[test]
fn mamba_fused_learns_mqar() {
    assert_learns(
        "Mamba (fused scan)",
        "name: mamba\nd_model: 32\nlayers: 2\nstate_dim: 8\nscan: fused\n",
        1200,
        1e-2,
        0.6,
    );
}

/// GLA through its fused CPU kernel (`scan: fused`, `gla_scan.cpp`): it must learn as the chunked
/// form does, at the same size, steps and threshold.
#[test]
fn gla_fused_learns_mqar() {
    assert_learns(
        "GLA (fused scan)",
        "name: gla\nd_model: 32\nlayers: 2\nheads: 2\nmlp_ratio: 2\nconv_kernel: 3\nscan: fused\n",
        600,
        3e-3,
        0.8,
    );
}
