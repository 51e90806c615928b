//! Recurrent Memory Transformer (Bulatov et al. 2022): the sequence is cut into segments of S
//! steps; each segment runs through a small causal transformer as [mem; x_seg; mem] — the memory
//! tokens at the front are read by every position, those at the end see the whole segment and
//! their outputs become the memory for the next segment. Gradients flow through the memory
//! across all segments (full BPTT).
//!
//! The transformer is minimal and self-contained (it does not use `transformer.rs`, written in
//! parallel): pre-norm blocks from [`crate::residual`] with causal softmax attention through
//! `Tensor::scaled_dot_product_attention`, and a learned position embedding over the 2M + S slots.
//!
//! **Initialisation**: the attention and MLP layers as PyTorch's `nn.Linear` (U(±1/√fan_in),
//! [`crate::init`]), norms 1 and 0; the memory tokens and the position table N(0, 0.02), GPT-2's
//! scale for embeddings (Bulatov et al. start from a pretrained model and do not specify one).

use crate::residual::{check_heads, check_shape, Mixer, MlpKind, Stack};
use crate::{dense, first, init, ArchError, Core, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmtConfig {
    /// Residual stream width; must be divisible by `heads`.
    pub d_model: i64,
    /// Transformer blocks. Default 2.
    #[serde(default = "two")]
    pub layers: i64,
    /// Attention heads. Default 4.
    #[serde(default = "four")]
    pub heads: i64,
    /// MLP hidden width = mlp_ratio · d_model; 0 drops the MLP. Default 4.
    #[serde(default = "four")]
    pub mlp_ratio: i64,
    /// The MLP's kind: `gelu` (default) or `swiglu` (SwiGLU, hidden width ⌈⌊2/3 · mlp_ratio ·
    /// d_model⌋⌉₁₆ as MAD; see `residual::MlpKind`).
    #[serde(default, skip_serializing_if = "MlpKind::is_gelu")]
    pub mlp: MlpKind,
    /// Steps per segment, S. Default 16.
    #[serde(default = "sixteen")]
    pub segment_len: i64,
    /// Memory tokens carried between segments, M. Default 4.
    #[serde(default = "four")]
    pub memory_tokens: i64,
}

fn two() -> i64 {
    2
}
fn four() -> i64 {
    4
}
fn sixteen() -> i64 {
    16
}

const ARCH: &str = "rmt";

/// Causal multi-head softmax attention over the slots of one segment.
struct CausalAttention {
    qkv: nn::Linear,
    out: nn::Linear,
    heads: i64,
    d: i64,
}

impl Mixer for CausalAttention {
    /// xs: [B, L, d] → [B, L, d]
    fn forward(&self, xs: &Tensor) -> Tensor {
        let (b, l) = (xs.size()[0], xs.size()[1]);
        let qkv = dense::linear(&self.qkv, xs)
            .view([b, l, 3, self.heads, -1])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2)); // [B, H, L, d_h]
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<Tensor>,
            0.0,
            true,
            None,
            false,
        );
        dense::linear(&self.out, &o.transpose(1, 2).reshape([b, l, self.d]))
    }

    /// Memory is counted by the RMT as a whole, not per layer.
    fn state_size(&self, _seq_len: i64) -> i64 {
        0
    }

    /// qkv and out projections 8·d², scores and weighted sum 4·L·d at the window length L.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.d as f64;
        8.0 * d * d + 4.0 * seq_len as f64 * d
    }
}

pub struct Rmt {
    input: Option<nn::Linear>,
    /// [M, d]: the memory before the first segment.
    memory_init: Tensor,
    /// [2M + S, d]
    positions: Tensor,
    stack: Stack<CausalAttention>,
    cfg: RmtConfig,
}

impl RmtConfig {
    /// Checks every field without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Every impossible value, in check order; empty when the config is valid.
    pub fn mistakes(&self) -> Vec<ArchError> {
        let mut m = Mistakes::new(ARCH);
        let d_ok = check_shape(&mut m, self.d_model, self.layers, self.mlp_ratio);
        check_heads(&mut m, self.heads, self.d_model, d_ok);
        m.range("segment_len", self.segment_len, 1, 4096);
        m.range("memory_tokens", self.memory_tokens, 1, 256);
        m.into_vec()
    }
}

impl Rmt {
    pub fn new(vs: &nn::Path, cfg: &RmtConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        let d = cfg.d_model;
        let slots = 2 * cfg.memory_tokens + cfg.segment_len;
        let stack = Stack::build(
            &(vs / "transformer"),
            d,
            d,
            cfg.layers,
            (cfg.mlp_ratio, cfg.mlp),
            |p, _| CausalAttention {
                qkv: init::linear(p / "qkv", d, 3 * d),
                out: init::linear(p / "out", d, d),
                heads: cfg.heads,
                d,
            },
        );
        Ok(Rmt {
            input: (d_in != d).then(|| init::linear(vs / "input", d_in, d)),
            memory_init: vs.var(
                "memory_init",
                &[cfg.memory_tokens, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            positions: vs.var(
                "positions",
                &[slots, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            ),
            stack,
            cfg: cfg.clone(),
        })
    }
}

impl Core for Rmt {
    /// xs: [B, T, d_in] → [B, T, d_model], one segment at a time.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = match &self.input {
            Some(l) => dense::linear(l, xs),
            None => xs.shallow_clone(),
        };
        let (b, t, m) = (xs.size()[0], xs.size()[1], self.cfg.memory_tokens);
        let mut memory = self
            .memory_init
            .unsqueeze(0)
            .expand([b, m, self.cfg.d_model], true);
        let mut outs = Vec::new();
        let mut start = 0;
        while start < t {
            let s = self.cfg.segment_len.min(t - start);
            let seg = xs.narrow(1, start, s);
            // [B, 2M + s, d]: read memory, segment, write memory, plus positions.
            let slots =
                Tensor::cat(&[&memory, &seg, &memory], 1) + self.positions.narrow(0, 0, 2 * m + s);
            let h = self.stack.forward_t(&slots, train);
            outs.push(h.narrow(1, m, s));
            memory = h.narrow(1, m + s, m);
            start += s;
        }
        Tensor::cat(&outs, 1)
    }

    fn out_width(&self) -> i64 {
        self.cfg.d_model
    }

    /// The M memory vectors carried between segments (the KV cache inside a segment is not
    /// carried across segments).
    fn state_size(&self, _seq_len: i64) -> i64 {
        self.cfg.memory_tokens * self.cfg.d_model
    }

    /// Every segment also processes 2M memory slots: the stack's cost at window 2M + S, scaled by
    /// (2M + S) / S slots per real token.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let s = self.cfg.segment_len.min(seq_len.max(1));
        let slots = 2 * self.cfg.memory_tokens + s;
        self.stack.flops_per_token(slots) * slots as f64 / s as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::residual::testing::{assert_causal, assert_grads, input};
    use tch::{nn::VarStore, Device, Kind};

    fn cfg() -> RmtConfig {
        RmtConfig {
            d_model: 16,
            layers: 2,
            heads: 2,
            mlp_ratio: 2,
            mlp: MlpKind::Gelu,
            segment_len: 4,
            memory_tokens: 2,
        }
    }

    #[test]
    fn shapes_and_state() {
        tch::set_num_threads(1);
        let vs = VarStore::new(Device::Cpu);
        let core = Rmt::new(&vs.root(), &cfg(), 5).unwrap();
        // 11 = two full segments and a partial one.
        assert_eq!(
            core.forward_t(&input(0, 2, 11, 5, Kind::Float), false)
                .size(),
            [2, 11, 16]
        );
        assert_eq!(core.state_size(11), 2 * 16);
    }

    /// Outputs before a changed step do not move, and the output at the changed step does (the
    /// carry of information across segments is `memory_carries_across_segments`).
    #[test]
    fn causal() {
        tch::set_num_threads(1);
        let mut vs = VarStore::new(Device::Cpu);
        let core = Rmt::new(&vs.root(), &cfg(), 16).unwrap();
        vs.set_kind(Kind::Double);
        assert_causal(|x| core.forward_t(x, false), 16);
    }

    #[test]
    fn memory_carries_across_segments() {
        tch::set_num_threads(1);
        let mut vs = VarStore::new(Device::Cpu);
        let core = Rmt::new(&vs.root(), &cfg(), 16).unwrap();
        vs.set_kind(Kind::Double);
        let x = input(1, 1, 8, 16, Kind::Double);
        let x2 = x.copy();
        let _ = x2.narrow(1, 0, 1).fill_(3.0); // first segment only
        let moved = crate::residual::testing::max_diff(
            &core.forward_t(&x, false).narrow(1, 4, 4),
            &core.forward_t(&x2, false).narrow(1, 4, 4),
        );
        assert!(moved > 1e-6, "second segment ignores the first ({moved})");
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        let vs = VarStore::new(Device::Cpu);
        let core = Rmt::new(&vs.root(), &cfg(), 6).unwrap();
        assert_grads(&vs, |x| core.forward_t(x, true), 6);
    }
}
