//! Memory architectures behind one interface.
//!
//! A [`Network`] maps a task's inputs to per-step outputs: `[B, T, width]` floats (or `[B, T]`
//! token ids, embedded first) → `[B, T, out]` logits or values. Each family lives in its own file
//! and implements [`Core`], which maps `[B, T, d_in]` → `[B, T, core.out_width()]`; the network adds
//! the token embedding and the linear read-out so that every family is scored the same way. Which
//! positions count is the task's business (its mask), never the model's.

pub mod addressing;
pub mod bench_specs;
pub mod dense;
pub mod dnc;
pub mod gla;
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

pub use residual::Scan;

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

    /// Validates the config against a task's io without training anything, so a sweep can reject
    /// a bad grid before it starts. Families with a standalone validator are checked field by
    /// field; the others are built once in a scratch CPU store (cheap at benchmark sizes).
    pub fn check(&self, io: TaskIo) -> Result<(), ArchError> {
        match self {
            ArchConfig::Transformer(c) => c.validate(),
            ArchConfig::Memn2n(c) => c.validate(),
            ArchConfig::KvMemory(c) => c.validate(),
            #[allow(unreachable_patterns)]
            _ => Network::new(&nn::VarStore::new(Device::Cpu), self, io).map(|_| ()),
        }
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
            ArchConfig::LinearAttention(c) => Box::new(linear_attention::build(vs, c, d_in)?),
            ArchConfig::Gla(c) => Box::new(gla::build(vs, c, d_in)?),
            ArchConfig::Mamba(c) => Box::new(mamba::build(vs, c, d_in)?),
            ArchConfig::Rmt(c) => Box::new(rmt::build(vs, c, d_in)?),
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
        let head = nn::linear(vs / "head", core.out_width(), d_out, Default::default());
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
