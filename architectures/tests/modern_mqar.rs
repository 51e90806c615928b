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
    let keys = Tensor::rand([b, KEYS], (Kind::Float, Device::Cpu)).argsort(-1, false).narrow(1, 0, PAIRS);
    let values = Tensor::randint_low(KEYS, VOCAB, [b, PAIRS], opts);
    let pick = Tensor::randint(PAIRS, [b, QUERIES], opts);
    let (queries, answers) = (keys.gather(1, &pick, false), values.gather(1, &pick, false));
    let context = Tensor::stack(&[keys, values], 2).view([b, 2 * PAIRS]);
    (Tensor::cat(&[context, queries], 1), answers)
}

/// Trains for `steps` Adam steps (batch 64) and returns query accuracy on 512 fresh examples.
fn train_mqar(yaml: &str, steps: usize, lr: f64) -> f64 {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let cfg: ArchConfig = serde_yaml::from_str(yaml).unwrap();
    let store = nn::VarStore::new(Device::Cpu);
    let io = TaskIo { input: InputKind::Tokens { vocab: VOCAB as usize }, output: OutputKind::Classes { n: VOCAB as usize } };
    let net = Network::new(&store, &cfg, io).unwrap();
    let mut opt = nn::Adam::default().build(&store, lr).unwrap();
    let logits_at_queries = |x: &Tensor, train: bool| net.forward_t(x, train).narrow(1, 2 * PAIRS, QUERIES);
    let start = std::time::Instant::now();
    for step in 0..steps {
        if step % 50 == 0 {
            eprintln!("step {step} at {:.1}s", start.elapsed().as_secs_f64());
        }
        let (x, y) = mqar_batch(BATCH);
        let loss = logits_at_queries(&x, true).reshape([-1, VOCAB]).cross_entropy_for_logits(&y.reshape([-1]));
        opt.backward_step(&loss);
    }
    tch::no_grad(|| {
        let (x, y) = mqar_batch(512);
        let hits = logits_at_queries(&x, false).argmax(-1, false).eq_tensor(&y);
        hits.to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
    })
}

#[test]
fn linear_attention_learns_mqar() {
    let steps = std::env::var("MQAR_STEPS").map(|s| s.parse().unwrap()).unwrap_or(400);
    let acc = train_mqar("name: linear_attention\nd_model: 64\nlayers: 2\nheads: 4\nfeature_dim: 16\nfeature_map: taylor\n", steps, 3e-3);
    eprintln!("linear attention (taylor) MQAR accuracy {acc:.3}");
    assert!(acc > 0.9, "accuracy {acc}");
}

#[test]
fn gla_learns_mqar() {
    let acc = train_mqar("name: gla\nd_model: 64\nlayers: 2\nheads: 4\n", 400, 3e-3);
    eprintln!("GLA MQAR accuracy {acc:.3}");
    assert!(acc > 0.9, "accuracy {acc}");
}

#[test]
fn mamba_learns_mqar() {
    let acc = train_mqar("name: mamba\nd_model: 64\nlayers: 2\n", 400, 3e-3);
    eprintln!("Mamba MQAR accuracy {acc:.3}");
    assert!(acc > 0.9, "accuracy {acc}");
}

#[test]
#[ignore]
fn explore() {
    let yaml = std::env::var("MQAR_YAML").unwrap().replace(';', "\n");
    let steps = std::env::var("MQAR_STEPS").map(|s| s.parse().unwrap()).unwrap_or(400);
    let lr = std::env::var("MQAR_LR").map(|s| s.parse().unwrap()).unwrap_or(3e-3);
    let acc = train_mqar(&yaml, steps, lr);
    eprintln!("explore accuracy {acc:.3}");
}
