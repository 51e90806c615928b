//! One full training step (forward, cross-entropy, backward, Adam step) of the attention/memory
//! families at benchmark sizes, on the CPU with one libtorch thread (the machine is shared; one
//! thread keeps numbers comparable between runs).
//!
//! `cargo bench -p membench-architectures --bench step`
//!
//! The same run then prints PyTorch eager's time for the same models, shapes and step
//! (`benches/step_pytorch.py`, one thread), when a `python3` with torch is on PATH
//! (`source scripts/env.sh`).

use criterion::{criterion_group, criterion_main, Criterion};
use membench_architectures::memn2n::{MemN2NConfig, Tying};
use membench_architectures::transformer::{PosEncoding, TransformerConfig};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

const VOCAB: i64 = 64;

fn bench_step(c: &mut Criterion, id: &str, cfg: &ArchConfig, batch: i64, time: i64) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let io = TaskIo { input: InputKind::Tokens { vocab: VOCAB as usize }, output: OutputKind::Classes { n: VOCAB as usize } };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, cfg, io).unwrap();
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let xs = Tensor::randint(VOCAB, [batch, time], (Kind::Int64, Device::Cpu));
    let ys = Tensor::randint(VOCAB, [batch * time], (Kind::Int64, Device::Cpu));
    println!("{id}: {} parameters, {:.2} MFLOP/token forward", net.param_count(), net.flops_per_token(time) / 1e6);
    c.bench_function(id, |b| {
        b.iter(|| {
            let logits = net.forward_t(&xs, true).view([batch * time, VOCAB]);
            opt.backward_step(&logits.cross_entropy_for_logits(&ys));
        })
    });
}

fn steps(c: &mut Criterion) {
    let transformer = ArchConfig::Transformer(TransformerConfig { d_model: 128, layers: 2, heads: 4, mlp_ratio: 4.0, dropout: 0.0, pos_encoding: PosEncoding::Sinusoidal, window: None, max_len: 2048 });
    bench_step(c, "transformer d128 L2 H4 T128 B32 train step", &transformer, 32, 128);
    let memn2n = ArchConfig::Memn2n(MemN2NConfig { d_model: 64, hops: 3, memory_size: 50, tying: Tying::Adjacent });
    bench_step(c, "memn2n d64 3 hops M50 T50 B32 train step", &memn2n, 32, 50);
    pytorch_reference();
}

/// Runs the PyTorch eager reference and passes its lines through; a missing python is reported,
/// not fatal, so the Rust numbers still come out.
fn pytorch_reference() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/step_pytorch.py");
    match std::process::Command::new("python3").arg(script).output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!("pytorch reference failed: {}", String::from_utf8_lossy(&out.stderr).trim()),
        Err(e) => println!("pytorch reference not run (python3: {e})"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = steps
}
criterion_main!(benches);
