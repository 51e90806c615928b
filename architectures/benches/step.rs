//! One full training step (forward, loss, backward, Adam, host read of the loss) of every family
//! at the reference sizes of `membench bench` (`membench_architectures::bench_specs::SPECS`, the
//! one table both use, with GLA's and Mamba's fused scans), on one libtorch thread, plus variants at
//! the same sizes: the other scans of the linear-attention, GLA and Mamba families and the Taylor
//! feature map. Names must be unique across both tables (criterion refuses a repeated one).
//!
//! `source scripts/env.sh && cargo bench -p membench-architectures --bench step [-- <filter>]`
//!
//! The same run then prints PyTorch eager's median step for the same specs
//! (`bench/pytorch_reference.py --model <name> --threads 1`, JSON lines with wall and CPU ms), when
//! `$MEMBENCH_PYTHON` or `python` on PATH (as `scripts/env.sh` sets) has torch.

use criterion::{criterion_group, Criterion};
use membench_architectures::bench_specs::{Spec, StepBench, SPECS, TOKENS};

/// Variants at the reference shapes (d128 L2 T128 B32): the scans the specs do not time.
const VARIANTS: &[Spec] = &[
    Spec {
        name: "linear_attention_recurrent",
        arch_yaml: "{name: linear_attention, d_model: 128, layers: 2, heads: 4, scan: recurrent}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "linear_attention_taylor",
        arch_yaml:
            "{name: linear_attention, d_model: 128, layers: 2, heads: 4, feature_map: taylor}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "gla_chunked_c4",
        arch_yaml: "{name: gla, d_model: 128, layers: 2, heads: 4, chunk_size: 4}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "gla_recurrent",
        arch_yaml: "{name: gla, d_model: 128, layers: 2, heads: 4, scan: recurrent}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "mamba_chunked",
        arch_yaml: "{name: mamba, d_model: 128, layers: 2, scan: chunked}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
];

fn steps(c: &mut Criterion) {
    tch::set_num_threads(1);
    let mut group = c.benchmark_group("train_step");
    group.sample_size(10);
    for spec in SPECS.iter().chain(VARIANTS) {
        let mut bench = StepBench::new(spec);
        eprintln!(
            "{}: B{} T{}, {} params, {:.2} MFLOP/token forward",
            spec.name,
            spec.batch,
            spec.time,
            bench.net.param_count(),
            bench.net.flops_per_token(spec.time as i64) / 1e6
        );
        group.bench_function(spec.name, |b| b.iter(|| bench.step()));
    }
    group.finish();
}

criterion_group!(benches, steps);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    let python = std::env::var("MEMBENCH_PYTHON").unwrap_or_else(|_| "python".into());
    // Only the specs a filter selected (`cargo bench --bench step -- ntm`), or all.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    println!("PyTorch eager reference (bench/pytorch_reference.py, 1 thread):");
    for spec in SPECS
        .iter()
        .filter(|s| filter.is_empty() || filter.iter().any(|f| s.name.contains(f.as_str())))
    {
        println!(
            "{}",
            membench_architectures::bench_specs::pytorch_reference_line(&python, spec.name, 1)
        );
    }
}
