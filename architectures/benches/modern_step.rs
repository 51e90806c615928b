//! One training step (forward, backward, Adam update) of each recurrent-memory family at
//! d_model 128, 2 layers, T 128, batch 32, token inputs (vocab 32) and a 32-class read-out,
//! on one libtorch thread. The PyTorch eager comparison for Mamba is
//! `bench/pytorch_mamba_ref.py` (same shapes, same thread count); this bench runs it at the end
//! when `MEMBENCH_PYTHON` (or `python` on PATH, as `source scripts/env.sh` sets) has torch.

use criterion::{criterion_group, criterion_main, Criterion};
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

const B: i64 = 32;
const T: i64 = 128;
const VOCAB: i64 = 32;

const FAMILIES: [(&str, &str); 8] = [
    ("linear_attention_elu1", "name: linear_attention\nd_model: 128\nlayers: 2\nheads: 4\nfeature_dim: 32\nfeature_map: elu1\n"),
    ("linear_attention_taylor", "name: linear_attention\nd_model: 128\nlayers: 2\nheads: 4\nfeature_dim: 16\nfeature_map: taylor\n"),
    ("gla_chunked", "name: gla\nd_model: 128\nlayers: 2\nheads: 4\n"),
    ("gla_chunked_c4", "name: gla\nd_model: 128\nlayers: 2\nheads: 4\nchunk_size: 4\n"),
    ("gla_recurrent", "name: gla\nd_model: 128\nlayers: 2\nheads: 4\nscan: recurrent\n"),
    ("mamba_chunked", "name: mamba\nd_model: 128\nlayers: 2\nscan: chunked\n"),
    ("rmt_s16_m4", "name: rmt\nd_model: 128\nlayers: 2\nheads: 4\n"),
    ("mamba_sequential", "name: mamba\nd_model: 128\nlayers: 2\nscan: recurrent\n"),
];

fn train_step(c: &mut Criterion) {
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("train_step_d128_L2_T128_B32");
    group.sample_size(10);
    for (label, yaml) in FAMILIES {
        tch::manual_seed(0);
        let cfg: ArchConfig = serde_yaml::from_str(yaml).expect("bench config parses");
        let store = nn::VarStore::new(Device::Cpu);
        let io = TaskIo { input: InputKind::Tokens { vocab: VOCAB as usize }, output: OutputKind::Classes { n: VOCAB as usize } };
        let net = Network::new(&store, &cfg, io).expect("bench config is valid");
        let mut opt = nn::Adam::default().build(&store, 1e-3).expect("adam");
        let x = Tensor::randint(VOCAB, [B, T], (Kind::Int64, Device::Cpu));
        let y = Tensor::randint(VOCAB, [B * T], (Kind::Int64, Device::Cpu));
        eprintln!("{label}: {} params, state {} floats, {:.0} forward FLOPs/token", net.param_count(), net.state_size(T), net.flops_per_token(T));
        group.bench_function(label, |bench| {
            bench.iter(|| {
                let loss = net.forward_t(&x, true).view([-1, VOCAB]).cross_entropy_for_logits(&y);
                opt.backward_step(&loss);
            })
        });
    }
    group.finish();
    pytorch_reference();
}

/// Runs the PyTorch eager Mamba reference on the same shapes and prints its timings.
fn pytorch_reference() {
    let python = std::env::var("MEMBENCH_PYTHON").unwrap_or_else(|_| "python".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_mamba_ref.py");
    match std::process::Command::new(&python).args([script, "--threads", "1"]).output() {
        Ok(out) if out.status.success() => eprintln!("PyTorch eager reference:\n{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => eprintln!("PyTorch reference failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("PyTorch reference not run ({python}: {e})"),
    }
}

criterion_group!(benches, train_step);
criterion_main!(benches);
