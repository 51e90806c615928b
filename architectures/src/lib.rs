//! Memory architectures behind one interface.
//!
//! A [`Network`] maps a task's inputs to per-step outputs: `[B, T, width]` floats (or `[B, T]`
//! token ids, embedded first) → `[B, T, out]` logits or values. Each family lives in its own file
//! and implements [`Core`], which maps `[B, T, d_in]` → `[B, T, core.out_width()]`; the network adds
//! the token embedding and the linear read-out so that every family is scored the same way. Which
//! positions count is the task's business (its mask), never the model's.

pub mod addressing;
pub mod bench_specs;
pub mod controller;
pub mod dense;
pub mod dnc;
pub mod gla;
pub mod init;
mod kernels;
pub mod kv_memory;
pub mod linear_attention;
pub mod mamba;
pub mod memn2n;
pub mod ntm;
mod residual;
pub mod rmt;
pub mod rnn;
pub mod transformer;

pub use residual::{MlpKind, Scan};

use membench_tasks::{InputKind, TaskIo};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use tch::{nn, nn::Module, Device, Tensor};

/// A sequence model without its input embedding and read-out.
pub trait Core: Send {
    /// xs: [B, T, d_in] → [B, T, out_width]
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
    fn out_width(&self) -> i64;
    /// Floats carried from one time step to the next when the model runs over `seq_len` steps
    /// (for attention: the KV cache at that length).
    fn state_size(&self, seq_len: i64) -> i64;
    /// Forward FLOPs per token (a multiply-add counts 2) at `seq_len`.
    fn flops_per_token(&self, seq_len: i64) -> f64;
    /// Whether `forward_t(xs, train)` may run as batch shards on several threads at once
    /// ([`Network`] does so with 2+ intra-op threads): every example's output depends on that
    /// example alone, and the forward draws no random numbers (whose order would then depend on
    /// thread timing). `forward_t` must then only read `self` (caches behind a lock:
    /// [`LengthCache`]).
    fn shardable(&self, _train: bool) -> bool {
        true
    }
}

/// Tensors a core derives from the sequence length alone (masks, position tables), built once per
/// (length, device). Behind a lock, as a core's forward may run on several threads at once (batch
/// shards); `get` hands out shallow copies, so the lock is held only for the lookup.
pub(crate) struct LengthCache<T = Tensor>(Mutex<HashMap<(i64, Device), T>>);

/// A value whose copy shares its tensors' storage (what a [`LengthCache`] hands out).
pub(crate) trait Shallow {
    fn shallow(&self) -> Self;
}

impl Shallow for Tensor {
    fn shallow(&self) -> Self {
        self.shallow_clone()
    }
}

impl<T> Default for LengthCache<T> {
    fn default() -> Self {
        LengthCache(Mutex::new(HashMap::new()))
    }
}

impl<T: Shallow> LengthCache<T> {
    pub(crate) fn get(&self, len: i64, device: Device, build: impl FnOnce() -> T) -> T {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry((len, device)).or_insert_with(build).shallow()
    }
}

/// Fewest examples per batch shard: below this the per-thread GEMMs get too thin to gain.
pub const MIN_SHARD_ROWS: i64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum ArchError {
    #[error("architecture {arch}: `{field}` = {value}: {expected}")]
    Invalid {
        arch: &'static str,
        field: &'static str,
        value: String,
        expected: String,
    },
}

impl ArchError {
    pub fn invalid(
        arch: &'static str,
        field: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> Self {
        ArchError::Invalid {
            arch,
            field,
            value: value.to_string(),
            expected: expected.into(),
        }
    }

    /// `Ok` when `value` lies in `lo..=hi`, else the error "expected lo..=hi" naming the field.
    pub fn check_range(
        arch: &'static str,
        field: &'static str,
        value: i64,
        lo: i64,
        hi: i64,
    ) -> Result<(), Self> {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(ArchError::invalid(
                arch,
                field,
                value,
                format!("expected {lo}..={hi}"),
            ))
        }
    }
}

/// Every mistake of one architecture config, in check order, so that one bad value hides no other.
///
/// Each check records its error, if any, and says whether the value passed. A check that needs
/// another field (heads dividing d_model, shift_range below memory_slots / 2) trusts that field
/// only when it passed: when it did not, the check falls back to a bound at least as wide as any
/// valid value of that field would give, or is skipped, so a mistake is reported once, at its key,
/// and never as a consequence of another.
pub(crate) struct Mistakes {
    arch: &'static str,
    found: Vec<ArchError>,
}

impl Mistakes {
    pub(crate) fn new(arch: &'static str) -> Self {
        Mistakes {
            arch,
            found: vec![],
        }
    }

    /// Records `check`'s error; true when it passed.
    pub(crate) fn ok(&mut self, check: Result<(), ArchError>) -> bool {
        match check {
            Ok(()) => true,
            Err(e) => {
                self.found.push(e);
                false
            }
        }
    }

    /// `value` in `lo..=hi` ([`ArchError::check_range`]); true when it is.
    pub(crate) fn range(&mut self, field: &'static str, value: i64, lo: i64, hi: i64) -> bool {
        self.ok(ArchError::check_range(self.arch, field, value, lo, hi))
    }

    /// Records that `field` = `value` is wrong; returns false (the value did not pass).
    pub(crate) fn bad(
        &mut self,
        field: &'static str,
        value: impl ToString,
        expected: impl Into<String>,
    ) -> bool {
        self.found
            .push(ArchError::invalid(self.arch, field, value, expected));
        false
    }

    pub(crate) fn into_vec(self) -> Vec<ArchError> {
        self.found
    }
}

/// The first of `mistakes` (what a constructor reports), or `Ok` when there are none.
pub(crate) fn first(mistakes: Vec<ArchError>) -> Result<(), ArchError> {
    mistakes.into_iter().next().map_or(Ok(()), Err)
}

/// The `arch:` section of the YAML; `name` selects the family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum ArchConfig {
    Lstm(rnn::RnnConfig),
    Gru(rnn::RnnConfig),
    Transformer(transformer::TransformerConfig),
    Memn2n(memn2n::MemN2NConfig),
    KvMemory(kv_memory::KvMemoryConfig),
    Ntm(ntm::NtmConfig),
    Dnc(dnc::DncConfig),
    LinearAttention(linear_attention::LinearAttentionConfig),
    Gla(gla::GlaConfig),
    Mamba(mamba::MambaConfig),
    Rmt(rmt::RmtConfig),
}

impl ArchConfig {
    pub fn name(&self) -> &'static str {
        match self {
            ArchConfig::Lstm(_) => "lstm",
            ArchConfig::Gru(_) => "gru",
            ArchConfig::Transformer(_) => "transformer",
            ArchConfig::Memn2n(_) => "memn2n",
            ArchConfig::KvMemory(_) => "kv_memory",
            ArchConfig::Ntm(_) => "ntm",
            ArchConfig::Dnc(_) => "dnc",
            ArchConfig::LinearAttention(_) => "linear_attention",
            ArchConfig::Gla(_) => "gla",
            ArchConfig::Mamba(_) => "mamba",
            ArchConfig::Rmt(_) => "rmt",
        }
    }

    /// Checks that the model takes sequences as long as the task's longest (`max_time`, computed
    /// only for a model with a fixed maximum length: a learned position table).
    pub fn check_length(&self, max_time: impl FnOnce() -> usize) -> Result<(), ArchError> {
        match self {
            ArchConfig::Transformer(c) if c.pos_encoding == transformer::PosEncoding::Learned => {
                let t = max_time();
                if t as i64 > c.max_len {
                    return Err(ArchError::invalid(
                        "transformer",
                        "max_len",
                        c.max_len,
                        format!("expected at least {t}: the task's longest sequence (training or an eval length) has {t} steps, and learned positions end at max_len"),
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Every impossible value of the config, in check order, one per field; empty when it is
    /// valid. Checked field by field without building anything, so a sweep can reject a bad grid
    /// before it starts; a field's mistake hides no other field's (see `Mistakes`).
    pub fn mistakes(&self) -> Vec<ArchError> {
        match self {
            ArchConfig::Lstm(c) => c.mistakes(rnn::Cell::Lstm),
            ArchConfig::Gru(c) => c.mistakes(rnn::Cell::Gru),
            ArchConfig::Transformer(c) => c.mistakes(),
            ArchConfig::Memn2n(c) => c.mistakes(),
            ArchConfig::KvMemory(c) => c.mistakes(),
            ArchConfig::Ntm(c) => c.mistakes(),
            ArchConfig::Dnc(c) => c.mistakes(),
            ArchConfig::LinearAttention(c) => c.mistakes(),
            ArchConfig::Gla(c) => c.mistakes(),
            ArchConfig::Mamba(c) => c.mistakes(),
            ArchConfig::Rmt(c) => c.mistakes(),
        }
    }

    /// The first of [`Self::mistakes`], the error [`Network::new`] refuses the config with.
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Longest sequence the architecture can read, if it has a limit (a Transformer with
    /// `learned` positions: `max_len`). A harness compares it with the task's longest training and
    /// evaluation length before starting, instead of letting the run panic at that length.
    pub fn max_seq_len(&self) -> Option<i64> {
        match self {
            ArchConfig::Transformer(c) if c.pos_encoding == transformer::PosEncoding::Learned => {
                Some(c.max_len)
            }
            _ => None,
        }
    }

    /// Width of the token embedding when the task's inputs are token ids.
    fn embed_width(&self) -> i64 {
        match self {
            ArchConfig::Lstm(c) | ArchConfig::Gru(c) => c.hidden_size,
            ArchConfig::Transformer(c) => c.d_model,
            ArchConfig::Memn2n(c) => c.d_model,
            ArchConfig::KvMemory(c) => c.d_model,
            ArchConfig::Ntm(c) => c.controller_size,
            ArchConfig::Dnc(c) => c.controller_size,
            ArchConfig::LinearAttention(c) => c.d_model,
            ArchConfig::Gla(c) => c.d_model,
            ArchConfig::Mamba(c) => c.d_model,
            ArchConfig::Rmt(c) => c.d_model,
        }
    }

    fn build_core(&self, vs: &nn::Path, d_in: i64) -> Result<Box<dyn Core>, ArchError> {
        Ok(match self {
            ArchConfig::Lstm(c) => Box::new(rnn::Rnn::new(vs, c, rnn::Cell::Lstm, d_in)?),
            ArchConfig::Gru(c) => Box::new(rnn::Rnn::new(vs, c, rnn::Cell::Gru, d_in)?),
            ArchConfig::Transformer(c) => Box::new(transformer::Transformer::new(vs, c, d_in)?),
            ArchConfig::Memn2n(c) => Box::new(memn2n::MemN2N::new(vs, c, d_in)?),
            ArchConfig::KvMemory(c) => Box::new(kv_memory::KvMemory::new(vs, c, d_in)?),
            ArchConfig::Ntm(c) => Box::new(ntm::Ntm::new(vs, c, d_in)?),
            ArchConfig::Dnc(c) => Box::new(dnc::Dnc::new(vs, c, d_in)?),
            ArchConfig::LinearAttention(c) => {
                Box::new(linear_attention::LinearAttention::new(vs, c, d_in)?)
            }
            ArchConfig::Gla(c) => Box::new(gla::Gla::new(vs, c, d_in)?),
            ArchConfig::Mamba(c) => Box::new(mamba::Mamba::new(vs, c, d_in)?),
            ArchConfig::Rmt(c) => Box::new(rmt::Rmt::new(vs, c, d_in)?),
        })
    }
}

/// Embedding (for token inputs) → core → linear read-out.
pub struct Network {
    embed: Option<nn::Embedding>,
    core: Box<dyn Core>,
    /// The core's parameters, by name (the order of batch-shard gradient arguments).
    core_params: Vec<Tensor>,
    head: nn::Linear,
    d_in: i64,
    d_out: i64,
    params: i64,
}

impl Network {
    /// Builds the network's parameters in `store`, which must hold nothing else (so that the
    /// parameter count is this network's).
    pub fn new(store: &nn::VarStore, cfg: &ArchConfig, io: TaskIo) -> Result<Self, ArchError> {
        // Before anything is built: the embedding's width is the core's, so a bad width is
        // refused before a tensor is made with it.
        cfg.validate()?;
        let vs = &store.root();
        let (embed, d_in) = match io.input {
            InputKind::Dense { width } => (None, width as i64),
            InputKind::Tokens { vocab } => {
                let d = cfg.embed_width();
                (
                    Some(nn::embedding(
                        vs / "embed",
                        vocab as i64,
                        d,
                        Default::default(),
                    )),
                    d,
                )
            }
        };
        let core = cfg.build_core(&(vs / "core"), d_in)?;
        let d_out = io.output.width() as i64;
        let head = init::linear(vs / "head", core.out_width(), d_out);
        let params = store
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        let mut named: Vec<(String, Tensor)> = store
            .variables()
            .into_iter()
            .filter(|(name, _)| name.starts_with("core."))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Network {
            embed,
            core,
            core_params: named.into_iter().map(|(_, t)| t).collect(),
            head,
            d_in,
            d_out,
            params,
        })
    }

    /// inputs: [B, T, width] float or [B, T] int64 → [B, T, out]
    pub fn forward_t(&self, inputs: &Tensor, train: bool) -> Tensor {
        let xs = match &self.embed {
            Some(e) => e.forward(inputs),
            None => inputs.shallow_clone(),
        };
        let shards = self.shards(&xs, train);
        let hs = if shards > 1 {
            let params: Vec<Tensor> = self
                .core_params
                .iter()
                .filter(|p| p.requires_grad())
                .map(Tensor::shallow_clone)
                .collect();
            kernels::batch_shards(self.core.as_ref(), &params, &xs, train, shards)
        } else {
            self.core.forward_t(&xs, train)
        };
        dense::linear(&self.head, &hs)
    }

    /// Batch shards for the core on xs: one per intra-op thread when the run has 2+ threads on
    /// the CPU, the core allows it, and every shard gets at least [`MIN_SHARD_ROWS`] examples;
    /// else 1 (the core runs whole, its ops split over the threads). See `batch_shards.cpp`.
    pub fn shards(&self, xs: &Tensor, train: bool) -> i64 {
        let threads = i64::from(tch::get_num_threads());
        let shardable = xs.device() == Device::Cpu && self.core.shardable(train);
        if shardable && threads >= 2 && xs.size()[0] >= threads * MIN_SHARD_ROWS {
            threads
        } else {
            1
        }
    }

    /// Trainable parameters, counted when the network was built.
    pub fn param_count(&self) -> i64 {
        self.params
    }

    pub fn state_size(&self, seq_len: i64) -> i64 {
        self.core.state_size(seq_len)
    }

    /// Forward FLOPs per token, read-out included (the embedding is a lookup: 0).
    pub fn flops_per_token(&self, seq_len: i64) -> f64 {
        self.core.flops_per_token(seq_len) + 2.0 * (self.core.out_width() * self.d_out) as f64
    }

    pub fn d_in(&self) -> i64 {
        self.d_in
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use membench_tasks::OutputKind;

    /// Issue #27: every impossible value of a config is reported, one mistake per field, in check
    /// order; a check that needs a bad field is not held against the field it bounds; building
    /// refuses with the first mistake (token inputs too: nothing is built with a bad width).
    #[test]
    fn every_impossible_value_is_reported_once() {
        let cases: &[(&str, &[&str])] = &[
            ("{name: ntm, memory_slots: 0, slot_width: -1}", &["memory_slots", "slot_width"]),
            // shift_range 3 needs 7 slots; with memory_slots wrong, it is not judged by them.
            (
                "{name: ntm, controller_size: 0, memory_slots: 0, write_heads: 65, shift_range: 3, clip: 0}",
                &["controller_size", "memory_slots", "write_heads", "clip"],
            ),
            ("{name: ntm, memory_slots: 5, read_heads: 0, shift_range: 3}", &["read_heads", "shift_range"]),
            (
                "{name: dnc, controller_size: 0, controller_layers: 65, memory_slots: 5000, slot_width: 0, read_heads: 0, clip: -1}",
                &["controller_size", "controller_layers", "memory_slots", "slot_width", "read_heads", "clip"],
            ),
            (
                "{name: lstm, hidden_size: 0, layers: 0, dropout: 1, forget_bias: .nan}",
                &["hidden_size", "layers", "dropout", "forget_bias"],
            ),
            ("{name: gru, hidden_size: 8, dropout: -0.5, forget_bias: 1}", &["dropout", "forget_bias"]),
            // heads 3 divides no d_model here: d_model 0 is the mistake.
            (
                "{name: transformer, d_model: 0, layers: 0, heads: 3, mlp_ratio: 0, dropout: 1, window: 0}",
                &["d_model", "layers", "mlp_ratio", "dropout", "window"],
            ),
            (
                "{name: transformer, d_model: 12, layers: 1, heads: 5, pos_encoding: learned, max_len: 0}",
                &["heads", "max_len"],
            ),
            (
                "{name: transformer, d_model: 13, layers: 300, heads: 1, pos_encoding: sinusoidal}",
                &["layers", "d_model"],
            ),
            ("{name: memn2n, d_model: 0, hops: 0, memory_size: 0}", &["d_model", "hops", "memory_size"]),
            ("{name: kv_memory, d_model: -1, hops: 65}", &["d_model", "hops"]),
            (
                "{name: linear_attention, d_model: 0, layers: 0, heads: 0, mlp_ratio: 17, feature_dim: 0, conv_kernel: 65, chunk_size: 0}",
                &["d_model", "layers", "mlp_ratio", "heads", "feature_dim", "conv_kernel", "chunk_size"],
            ),
            (
                "{name: gla, d_model: 12, heads: 5, gate_temperature: 0.5, conv_kernel: -1, chunk_size: 257}",
                &["heads", "gate_temperature", "conv_kernel", "chunk_size"],
            ),
            // dt_rank 100 is too big only for d_model < 100; d_model 0 is the mistake.
            ("{name: mamba, d_model: 0, state_dim: 0, dt_rank: 100}", &["d_model", "state_dim"]),
            (
                "{name: mamba, d_model: 16, expand: 9, conv_kernel: 0, dt_rank: 17, chunk_size: 17}",
                &["expand", "conv_kernel", "dt_rank", "chunk_size"],
            ),
            (
                "{name: rmt, d_model: 16, heads: 3, segment_len: 0, memory_tokens: 257}",
                &["heads", "segment_len", "memory_tokens"],
            ),
        ];
        let dense = TaskIo {
            input: InputKind::Dense { width: 3 },
            output: OutputKind::Bits { width: 2 },
        };
        let tokens = TaskIo {
            input: InputKind::Tokens { vocab: 5 },
            output: OutputKind::Classes { n: 5 },
        };
        for (yaml, fields) in cases {
            let cfg: ArchConfig = serde_yaml::from_str(yaml).unwrap();
            let found = cfg.mistakes();
            let got: Vec<&str> = found
                .iter()
                .map(|ArchError::Invalid { field, .. }| *field)
                .collect();
            assert_eq!(&got, fields, "{yaml}: {found:#?}");
            let first = found.first().map(|e| e.to_string());
            assert_eq!(cfg.validate().err().map(|e| e.to_string()), first, "{yaml}");
            for io in [dense, tokens] {
                let built = Network::new(&nn::VarStore::new(Device::Cpu), &cfg, io);
                assert_eq!(built.err().map(|e| e.to_string()), first, "{yaml}");
            }
        }
        // The messages are those one check at a time gave.
        let cfg: ArchConfig = serde_yaml::from_str(cases[0].0).unwrap();
        let texts: Vec<String> = cfg.mistakes().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            texts,
            [
                "architecture ntm: `memory_slots` = 0: expected 1..=1048576",
                "architecture ntm: `slot_width` = -1: expected 1..=65536",
            ]
        );
        let cfg: ArchConfig = serde_yaml::from_str(cases[2].0).unwrap();
        assert_eq!(
            cfg.mistakes()[1].to_string(),
            "architecture ntm: `shift_range` = 3: expected 0..=2"
        );
    }
}
