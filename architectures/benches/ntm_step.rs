//! One full training step (forward, masked BCE, backward, Adam) of the NTM at the paper's copy
//! sizes (B 16, T 20, N 128, M 20, LSTM controller 100, one read and one write head) and of the DNC
//! at a comparable size (N 128, W 20, one read head), on one CPU thread.
//!
//! Reference point: `ntm_step_ref.py`, a straightforward PyTorch eager NTM on the same shapes, is
//! run at the end and prints its median step time (skipped with a note when `python` cannot import
//! torch; `source scripts/env.sh` puts the venv's python on PATH). Target: ≤ 0.6× its step time.

use criterion::{criterion_group, Criterion};
use membench_architectures::dnc::DncConfig;
use membench_architectures::ntm::NtmConfig;
use membench_architectures::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Tensor};

const BATCH: i64 = 16;
const TIME: i64 = 20;
const BITS: i64 = 8;

fn bench_arch(c: &mut Criterion, name: &str, cfg: ArchConfig) {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let io = TaskIo { input: InputKind::Dense { width: BITS as usize + 1 }, output: OutputKind::Bits { width: BITS as usize } };
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Network::new(&vs, &cfg, io).unwrap();
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let x = Tensor::randint(2, [BATCH, TIME, BITS + 1], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(2, [BATCH, TIME, BITS], (Kind::Float, Device::Cpu));
    let mask = Tensor::ones([BATCH, TIME], (Kind::Float, Device::Cpu));
    c.bench_function(name, |bench| {
        bench.iter(|| {
            let out = net.forward_t(&x, true);
            let per_pos = out
                .binary_cross_entropy_with_logits::<Tensor>(&y, None, None, tch::Reduction::None)
                .sum_dim_intlist(-1, false, Kind::Float);
            let loss = (per_pos * &mask).sum(Kind::Float) / mask.sum(Kind::Float);
            opt.backward_step(&loss);
        })
    });
}

fn steps(c: &mut Criterion) {
    bench_arch(c, "ntm_train_step_b16_t20_n128_m20_c100", ArchConfig::Ntm(NtmConfig::default()));
    let dnc = DncConfig { memory_slots: 128, slot_width: 20, read_heads: 1, ..Default::default() };
    bench_arch(c, "dnc_train_step_b16_t20_n128_w20_c100_r1", ArchConfig::Dnc(dnc));
    bench_arch(c, "dnc_train_step_b16_t20_default_n32_w16_r2", ArchConfig::Dnc(DncConfig::default()));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = steps
}

/// Runs the PyTorch eager reference on the same shapes and prints its line.
fn pytorch_reference() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/ntm_step_ref.py");
    match std::process::Command::new("python").arg(script).output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        Ok(out) => println!("pytorch reference failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")),
        Err(e) => println!("pytorch reference not run: {e}"),
    }
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    pytorch_reference();
}
