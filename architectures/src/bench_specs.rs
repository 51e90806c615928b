//! The reference sizes at which every family is timed: one table shared by `membench bench`, the
//! criterion benches (`architectures/benches/`) and the PyTorch eager reference
//! (`bench/pytorch_reference.py`, whose `SPECS` repeats these names and shapes).
//!
//! Sizes follow the performance issue: LSTM/GRU B32 T40 H128; Transformer d128 L2 H4 T128 B32;
//! NTM B16 T20 N128 M20 controller 100 (Graves et al. 2014 copy sizes) and a DNC of the same
//! memory; MemN2N 3 hops d64 over 50 memories; the key-value memory, linear attention, GLA and
//! Mamba at d128 L2 (kv_memory: 2 hops) T128 B32.

use membench_tasks::{InputKind, OutputKind, TaskIo};

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
pub const BITS: TaskIo = TaskIo { input: InputKind::Dense { width: 9 }, output: OutputKind::Bits { width: 8 } };
/// Token io: 64-symbol vocabulary in and out (associative recall, language-like tasks).
pub const TOKENS: TaskIo = TaskIo { input: InputKind::Tokens { vocab: 64 }, output: OutputKind::Classes { n: 64 } };

pub const SPECS: &[Spec] = &[
    Spec { name: "lstm", arch_yaml: "{name: lstm, hidden_size: 128}", io: BITS, batch: 32, time: 40 },
    Spec { name: "gru", arch_yaml: "{name: gru, hidden_size: 128}", io: BITS, batch: 32, time: 40 },
    Spec { name: "transformer", arch_yaml: "{name: transformer, d_model: 128, layers: 2, heads: 4}", io: TOKENS, batch: 32, time: 128 },
    Spec { name: "memn2n", arch_yaml: "{name: memn2n, d_model: 64, hops: 3, memory_size: 50}", io: TOKENS, batch: 32, time: 50 },
    Spec { name: "kv_memory", arch_yaml: "{name: kv_memory, d_model: 128, hops: 2, memory_size: 50}", io: TOKENS, batch: 32, time: 128 },
    Spec { name: "ntm", arch_yaml: "{name: ntm, controller_size: 100, memory_slots: 128, slot_width: 20}", io: BITS, batch: 16, time: 20 },
    Spec { name: "dnc", arch_yaml: "{name: dnc, controller_size: 100, memory_slots: 128, slot_width: 20, read_heads: 1}", io: BITS, batch: 16, time: 20 },
    Spec { name: "linear_attention", arch_yaml: "{name: linear_attention, d_model: 128, layers: 2, heads: 4}", io: TOKENS, batch: 32, time: 128 },
    Spec { name: "gla", arch_yaml: "{name: gla, d_model: 128, layers: 2, heads: 4}", io: TOKENS, batch: 32, time: 128 },
    Spec { name: "mamba", arch_yaml: "{name: mamba, d_model: 128, layers: 2}", io: TOKENS, batch: 32, time: 128 },
];

/// The spec called `name`.
pub fn spec(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArchConfig, Network};
    use tch::{nn, Device};

    /// Every spec parses strictly and builds, and the names are the families' own.
    #[test]
    fn every_spec_builds_and_names_its_family() {
        for s in SPECS {
            let cfg: ArchConfig = serde_yaml::from_str(s.arch_yaml).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!(cfg.name(), s.name);
            Network::new(&nn::VarStore::new(Device::Cpu), &cfg, s.io).unwrap_or_else(|e| panic!("{}: {e}", s.name));
        }
    }
}
