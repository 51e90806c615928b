//! The reference sizes at which every family is timed: one table shared by `membench bench`, the
//! criterion benches (`architectures/benches/`) and the PyTorch eager reference
//! (`bench/pytorch_reference.py`, whose `SPECS` repeats these names and shapes).
//!
//! Sizes follow the performance issue: LSTM/GRU B32 T40 H128; Transformer d128 L2 H4 T128 B32;
//! NTM B16 T20 N128 M20 controller 100 (Graves et al. 2014 copy sizes) and a DNC of the same
//! memory; MemN2N 3 hops d64 over 50 memories; the key-value memory, linear attention, GLA and
//! Mamba at d128 L2 (kv_memory: 2 hops) T128 B32; the Recurrent Memory Transformer at d128 L2 H4
//! with 16-step segments and 4 memory tokens, T128 B32. GLA and Mamba are timed twice: with their
//! default scans (`gla`, `mamba`) and with their fused CPU kernels (`gla_fused`, `mamba_fused`).

use crate::{ArchConfig, Network};
use membench_tasks::{InputKind, OutputKind, TaskIo};
use tch::{nn, nn::OptimizerConfig, Device, Kind, Reduction, Tensor};

/// One reference size: a family's config as YAML (the `arch:` section of an experiment), the task
/// io it is timed on, and the batch shape.
pub struct Spec {
    pub name: &'static str,
    pub arch_yaml: &'static str,
    pub io: TaskIo,
    pub batch: usize,
    pub time: usize,
}

/// Copy-task io: 8 bits plus a delimiter channel in, 8 bits out.
pub const BITS: TaskIo = TaskIo {
    input: InputKind::Dense { width: 9 },
    output: OutputKind::Bits { width: 8 },
};
/// Token io: 64-symbol vocabulary in and out (associative recall, language-like tasks).
pub const TOKENS: TaskIo = TaskIo {
    input: InputKind::Tokens { vocab: 64 },
    output: OutputKind::Classes { n: 64 },
};

pub const SPECS: &[Spec] = &[
    Spec {
        name: "lstm",
        arch_yaml: "{name: lstm, hidden_size: 128}",
        io: BITS,
        batch: 32,
        time: 40,
    },
    Spec {
        name: "gru",
        arch_yaml: "{name: gru, hidden_size: 128}",
        io: BITS,
        batch: 32,
        time: 40,
    },
    Spec {
        name: "transformer",
        arch_yaml: "{name: transformer, d_model: 128, layers: 2, heads: 4}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "memn2n",
        arch_yaml: "{name: memn2n, d_model: 64, hops: 3, memory_size: 50}",
        io: TOKENS,
        batch: 32,
        time: 50,
    },
    Spec {
        name: "kv_memory",
        arch_yaml: "{name: kv_memory, d_model: 128, hops: 2, memory_size: 50}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "ntm",
        arch_yaml: "{name: ntm, controller_size: 100, memory_slots: 128, slot_width: 20}",
        io: BITS,
        batch: 16,
        time: 20,
    },
    Spec {
        name: "dnc",
        arch_yaml:
            "{name: dnc, controller_size: 100, memory_slots: 128, slot_width: 20, read_heads: 1}",
        io: BITS,
        batch: 16,
        time: 20,
    },
    Spec {
        name: "linear_attention",
        arch_yaml: "{name: linear_attention, d_model: 128, layers: 2, heads: 4}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "gla",
        arch_yaml: "{name: gla, d_model: 128, layers: 2, heads: 4}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "mamba",
        arch_yaml: "{name: mamba, d_model: 128, layers: 2}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    // The fused CPU scans (`scan: fused`: gla_scan.cpp, selective_scan.cpp) at the same sizes.
    // Their PyTorch eager reference is the same model as `gla` / `mamba`: eager PyTorch has no
    // fused scan, so the ratio is the kernel's gain over what a PyTorch user would write.
    Spec {
        name: "gla_fused",
        arch_yaml: "{name: gla, d_model: 128, layers: 2, heads: 4, scan: fused}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "mamba_fused",
        arch_yaml: "{name: mamba, d_model: 128, layers: 2, scan: fused}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
    Spec {
        name: "rmt",
        arch_yaml:
            "{name: rmt, d_model: 128, layers: 2, heads: 4, segment_len: 16, memory_tokens: 4}",
        io: TOKENS,
        batch: 32,
        time: 128,
    },
];

/// The spec called `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

/// A network of one spec with Adam and a fixed random batch, ready to time training steps. The
/// loss is the harness's (masked mean over positions; the mask is all ones here, so the mean).
pub struct StepBench {
    pub net: Network,
    opt: nn::Optimizer,
    x: Tensor,
    y: Tensor,
    io: TaskIo,
    _store: nn::VarStore,
}

impl StepBench {
    pub fn new(spec: &Spec) -> Self {
        tch::manual_seed(0);
        let cfg: ArchConfig = serde_yaml::from_str(spec.arch_yaml).expect("bench spec parses");
        let store = nn::VarStore::new(Device::Cpu);
        let net = Network::new(&store, &cfg, spec.io).expect("bench spec is valid");
        let opt = nn::Adam::default().build(&store, 1e-3).expect("adam");
        let (b, t) = (spec.batch as i64, spec.time as i64);
        let opts = (Kind::Float, Device::Cpu);
        let x = match spec.io.input {
            InputKind::Dense { width } => Tensor::randint(2, [b, t, width as i64], opts),
            InputKind::Tokens { vocab } => {
                Tensor::randint(vocab as i64, [b, t], (Kind::Int64, Device::Cpu))
            }
        };
        let y = match spec.io.output {
            OutputKind::Bits { width } => Tensor::randint(2, [b, t, width as i64], opts),
            OutputKind::Classes { n } => {
                Tensor::randint(n as i64, [b * t], (Kind::Int64, Device::Cpu))
            }
            OutputKind::Real { width, .. } => Tensor::zeros([b, t, width as i64], opts),
            OutputKind::Blocks { blocks, n } => Tensor::randint(
                n as i64,
                [b * t * blocks as i64],
                (Kind::Int64, Device::Cpu),
            ),
        };
        StepBench {
            net,
            opt,
            x,
            y,
            io: spec.io,
            _store: store,
        }
    }

    /// One training step: forward, loss, backward, Adam, and a host read of the loss (so no work
    /// is left in flight). Returns the loss.
    pub fn step(&mut self) -> f64 {
        let out = self.net.forward_t(&self.x, true);
        let loss = match self.io.output {
            OutputKind::Classes { n } | OutputKind::Blocks { n, .. } => {
                out.view([-1, n as i64]).cross_entropy_for_logits(&self.y)
            }
            OutputKind::Bits { .. } => out
                .binary_cross_entropy_with_logits::<Tensor>(&self.y, None, None, Reduction::None)
                .sum_dim_intlist(-1, false, Kind::Float)
                .mean(Kind::Float),
            OutputKind::Real { .. } => out.mse_loss(&self.y, Reduction::Mean),
        };
        self.opt.zero_grad();
        loss.backward();
        self.opt.step();
        loss.double_value(&[])
    }
}

/// Runs `bench/pytorch_reference.py --model <name>` with `python` and returns its JSON line, or
/// a sentence saying why there is none (the Rust numbers stay useful without it).
pub fn pytorch_reference_line(python: &str, name: &str, threads: i32) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/pytorch_reference.py");
    match std::process::Command::new(python)
        .args([script, "--model", name, "--threads", &threads.to_string()])
        .output()
    {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "pytorch reference for {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => format!("pytorch reference not run ({python}: {e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchConfig, Network};
    use tch::{nn, Device};

    /// Every spec parses strictly and builds, and the names are the families' own.
    #[test]
    fn every_spec_builds_and_names_its_family() {
        // Every family has a spec: serde names all of them, in backticks, when refusing an unknown one.
        let families: Vec<&str> = SPECS.iter().map(|s| s.name).collect();
        let refusal = serde_yaml::from_str::<ArchConfig>("{name: no_such_family}")
            .unwrap_err()
            .to_string();
        let known: Vec<&str> = refusal.split('`').skip(1).step_by(2).skip(1).collect();
        assert!(known.len() >= 11 && known.contains(&"lstm"), "{refusal}");
        for name in known {
            assert!(families.contains(&name), "no bench spec for {name}");
        }
        for s in SPECS {
            let cfg: ArchConfig =
                serde_yaml::from_str(s.arch_yaml).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            // A variant of a family (`gla_fused`) is named by the family, `_`, the variant.
            let variant = s.name.strip_prefix(cfg.name());
            assert!(
                variant.is_some_and(|v| v.is_empty() || v.starts_with('_')),
                "{} is not named by its family {}",
                s.name,
                cfg.name()
            );
            Network::new(&nn::VarStore::new(Device::Cpu), &cfg, s.io)
                .unwrap_or_else(|e| panic!("{}: {e}", s.name));
        }
    }
}
