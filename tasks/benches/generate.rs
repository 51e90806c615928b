//! Time to generate one batch of each task at reference sizes, to compare with a training step
//! (the bar: generation under 2% of a step; an LSTM H128 B32 T41 step is ~4 ms on the 2-core
//! reference machine, so under ~80 µs for tasks of that size).
//!
//! Two measurements of the same code: wall time (what a training loop waits for when it generates
//! inline) and the generating thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), which stays honest on
//! a machine shared with other jobs, where wall time also counts the time the thread waits for a
//! core.

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use membench_tasks::{copy, example_rng, mqar, passkey, Split, TaskConfig};
use rand::{Rng, RngCore};
use std::hint::black_box;

fn reference_configs() -> Vec<(String, TaskConfig)> {
    TaskConfig::all_defaults()
        .into_iter()
        .map(|c| match c {
            TaskConfig::Copy(_) => (
                "copy B32 len 1-20 bits 8".to_string(),
                TaskConfig::Copy(copy::CopyConfig::default()),
            ),
            TaskConfig::Mqar(_) => (
                "mqar B32 seq 128 vocab 256 pairs 16".to_string(),
                TaskConfig::Mqar(mqar::MqarConfig {
                    vocab_size: 256,
                    num_kv_pairs: 16,
                    seq_len: 128,
                    ..Default::default()
                }),
            ),
            TaskConfig::Passkey(_) => (
                "passkey B32 L 512".to_string(),
                TaskConfig::Passkey(passkey::PasskeyConfig {
                    length: 512,
                    ..Default::default()
                }),
            ),
            other => (format!("{} B32 defaults", other.name()), other),
        })
        .collect()
}

fn generate<M: Measurement>(c: &mut Criterion<M>, group_name: &str) {
    let mut group = c.benchmark_group(group_name);
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
    // The floor every task pays: one blake3-seeded ChaCha8 stream per example, and raw draws.
    let mut group = c.benchmark_group(format!("{group_name} rng"));
    group.sample_size(20);
    group.bench_function("example_rng x32", |b| {
        b.iter(|| {
            (0..32)
                .map(|e| example_rng(0, Split::Train, 1, e).next_u32())
                .sum::<u32>()
        })
    });
    let mut rng = example_rng(0, Split::Train, 0, 0);
    group.bench_function("1024 next_u32", |b| {
        b.iter(|| (0..1024).map(|_| rng.next_u32()).fold(0u32, |a, x| a ^ x))
    });
    group.bench_function("1024 random_range u32 0..16", |b| {
        b.iter(|| (0..1024).map(|_| rng.random_range(0..16u32)).sum::<u32>())
    });
    group.finish();
}

fn wall(c: &mut Criterion) {
    generate(c, "wall");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    generate(c, "thread_cpu");
}

/// CPU time of the calling thread, in nanoseconds.
struct ThreadCpuTime;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_ns() - start
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, v: &u64) -> f64 {
        *v as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &MicrosCpu
    }
}

struct MicrosCpu;

impl ValueFormatter for MicrosCpu {
    fn scale_values(&self, _typical: f64, values: &mut [f64]) -> &'static str {
        values.iter_mut().for_each(|v| *v /= 1e3);
        "µs cpu"
    }
    fn scale_throughputs(
        &self,
        _typical: f64,
        _throughput: &Throughput,
        _values: &mut [f64],
    ) -> &'static str {
        "(no throughput)"
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
