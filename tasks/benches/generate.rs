//! Time to generate one batch of each task at reference sizes, to compare with a training step
//! (the lead's bar: generation under 2% of a step; an LSTM H128 B32 T41 step is ~4 ms on the
//! 2-core reference machine, so under ~80 µs).

use criterion::{criterion_group, criterion_main, Criterion};
use membench_tasks::{copy, mqar, passkey, Split, TaskConfig};
use std::hint::black_box;

fn reference_configs() -> Vec<(String, TaskConfig)> {
    TaskConfig::all_defaults()
        .into_iter()
        .map(|c| match c {
            TaskConfig::Copy(_) => ("copy B32 len 1-20 bits 8".to_string(), TaskConfig::Copy(copy::CopyConfig::default())),
            TaskConfig::Mqar(_) => (
                "mqar B32 seq 128 vocab 256 pairs 16".to_string(),
                TaskConfig::Mqar(mqar::MqarConfig { vocab_size: 256, num_kv_pairs: 16, seq_len: 128, ..Default::default() }),
            ),
            TaskConfig::Passkey(_) => (
                "passkey B32 L 512".to_string(),
                TaskConfig::Passkey(passkey::PasskeyConfig { length: 512, ..Default::default() }),
            ),
            other => (format!("{} B32 defaults", other.name()), other),
        })
        .collect()
}

fn generate(c: &mut Criterion) {
    let mut group = c.benchmark_group("batch");
    group.sample_size(20);
    for (label, cfg) in reference_configs() {
        let task = cfg.build().expect("reference configs are valid");
        let mut index = 0u64;
        group.bench_function(label, |b| {
            b.iter(|| {
                index += 1;
                black_box(task.batch(Split::Train, 0, index, 32, None))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, generate);
criterion_main!(benches);
