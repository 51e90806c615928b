//! Causal Transformer decoder (Vaswani et al. 2017), GPT-style pre-norm (Radford et al. 2019).
//!
//! A sequence task maps onto the model directly: position t attends to positions i ≤ t (or
//! t − window < i ≤ t with a sliding window), so the "memory" is the key/value cache of the past.
//!
//! ```text
//! h_0 = W_in x + p                              (p: positional encoding, if additive)
//! a_l = h_{l-1} + Proj(MHA(LN(h_{l-1})))         MHA_h = softmax(q_h k_hᵀ / √d_head + M) v_h
//! h_l = a_l + W_2 GELU(W_1 LN(a_l))               M: causal (or causal band) mask, −∞ outside
//! y   = LN(h_L)                                   [B, T, d_model]
//! ```
//!
//! Attention goes through libtorch's fused `scaled_dot_product_attention`: `is_causal` for full
//! causal attention, an explicit boolean band mask for sliding-window attention.
//!
//! Positional encodings (`pos_encoding`):
//! - `sinusoidal` (default): the fixed table of Vaswani et al., added after the input projection;
//! - `learned`: a trained [max_len, d_model] table (GPT-2). A sequence longer than `max_len` has no
//!   encoding for its tail: `membench validate` refuses a `max_len` below the task's longest
//!   sequence ([`crate::ArchConfig::check_length`]), and forward still panics naming both numbers;
//! - `rope`: rotary embeddings (Su et al. 2021, base 10000, "rotate-half" layout as in GPT-NeoX /
//!   Llama) applied to queries and keys in every layer; nothing added to h_0;
//! - `none`: no positional information beyond the causal mask (Haviv et al. 2022).
//!
//! Initialisation follows GPT-2 inside the blocks: weights N(0, 0.02), biases 0, and the two
//! residual projections of each block scaled by 1/√(2·layers) so the residual stream's variance
//! does not grow with depth; LayerNorms 1 and 0. The input projection is drawn N(0, 1/d_in) with
//! nn.Linear's bias, so unit-scale inputs enter at per-unit std 1 as Vaswani et al.'s √d_model-scaled
//! embeddings do (see `new`, with the measurements that chose it). Optional (`conv_kernel` > 0): a
//! short causal depthwise convolution over each block's normed input before q, k, v, initialised as
//! nn.Conv1d.
//!
//! The sinusoid table, RoPE cos/sin tables and window mask depend only on (T, device); they are
//! computed on first use and cached in the model (a `LengthCache` keyed by (T, device)), so a
//! training step allocates none of them.

use crate::residual::{conv_state, MlpKind, ShortConv};
use crate::{dense, first, init, ArchError, Core, LengthCache, Mistakes, Shallow};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

const ARCH: &str = "transformer";
const ROPE_BASE: f64 = 10_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PosEncoding {
    #[default]
    Sinusoidal,
    Learned,
    Rope,
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformerConfig {
    /// Width of the residual stream.
    pub d_model: i64,
    /// Decoder blocks.
    pub layers: i64,
    /// Attention heads; must divide `d_model`.
    pub heads: i64,
    /// MLP hidden width = round(mlp_ratio · d_model). Default 4.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// The MLP's kind: `gelu` (default, GPT-2's) or `swiglu` (SwiGLU without biases, hidden
    /// width ⌈⌊2/3 · mlp_ratio · d_model⌋⌉₁₆ as MAD; see `residual::MlpKind`). Its matrices take
    /// the GPT-2 init of the GELU MLP's: N(0, 0.02) in, residual-scaled out.
    #[serde(default, skip_serializing_if = "MlpKind::is_gelu")]
    pub mlp: MlpKind,
    /// Dropout on attention weights, residual branches and the embedding (training only). Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Default `sinusoidal`.
    #[serde(default)]
    pub pos_encoding: PosEncoding,
    /// Sliding-window attention: position t sees the `window` most recent positions, itself
    /// included. Default: none (full causal attention).
    #[serde(default)]
    pub window: Option<i64>,
    /// Longest sequence a `learned` positional table covers. Default 2048. Ignored otherwise.
    #[serde(default = "default_max_len")]
    pub max_len: i64,
    /// Taps of an optional causal depthwise convolution over each block's normed input before
    /// the q, k, v projection: the short convolution that linear attention and GLA have
    /// (`conv_kernel` there), and Zoology's later attention baseline (a short conv + attention
    /// hybrid), so that MQAR comparisons can be made like for like. 0 = none (the original
    /// model). Default 0, and then absent from the resolved config, so run ids of configs
    /// without it are unchanged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub conv_kernel: i64,
}

fn is_zero(k: &i64) -> bool {
    *k == 0
}

fn default_mlp_ratio() -> f64 {
    4.0
}

fn default_max_len() -> i64 {
    2048
}

impl TransformerConfig {
    /// Checks every field without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Every impossible value, in check order, one per field; empty when the config is valid.
    pub fn mistakes(&self) -> Vec<ArchError> {
        let mut m = Mistakes::new(ARCH);
        let d_ok = m.range("d_model", self.d_model, 1, 65_536);
        m.range("layers", self.layers, 1, 256);
        // Whether heads divides d_model is known only for a valid d_model; so is the head width.
        let width_ok = if self.heads < 1 || (d_ok && self.d_model % self.heads != 0) {
            m.bad(
                "heads",
                self.heads,
                format!("expected a divisor of d_model = {}", self.d_model),
            )
        } else {
            d_ok
        };
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0 && self.mlp_ratio <= 64.0) {
            m.bad("mlp_ratio", self.mlp_ratio, "expected 0 < mlp_ratio <= 64");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            m.bad("dropout", self.dropout, "expected 0 <= dropout < 1");
        }
        if let Some(w) = self.window {
            if w < 1 {
                m.bad("window", w, "expected a window of at least 1 position");
            }
        }
        if !(0..=64).contains(&self.conv_kernel) {
            m.bad(
                "conv_kernel",
                self.conv_kernel,
                "expected 0..=64 (0: no convolution)",
            );
        }
        match self.pos_encoding {
            PosEncoding::Sinusoidal if d_ok && self.d_model % 2 != 0 => {
                m.bad(
                    "d_model",
                    self.d_model,
                    "expected an even d_model for sinusoidal positions",
                );
            }
            PosEncoding::Rope if width_ok && (self.d_model / self.heads) % 2 != 0 => {
                m.bad(
                    "heads",
                    self.heads,
                    "expected an even head width d_model / heads for rope",
                );
            }
            PosEncoding::Learned if !(1..=1 << 20).contains(&self.max_len) => {
                m.bad("max_len", self.max_len, "expected 1..=1048576");
            }
            _ => {}
        }
        m.into_vec()
    }

    fn mlp_width(&self) -> i64 {
        self.mlp.hidden(self.mlp_ratio, self.d_model)
    }

    fn head_width(&self) -> i64 {
        self.d_model / self.heads
    }
}

struct Block {
    ln1: nn::LayerNorm,
    /// The short convolution before q, k, v (`conv_kernel` > 0).
    conv: Option<ShortConv>,
    /// Fused q, k, v projection: d_model → 3·d_model.
    qkv: nn::Linear,
    proj: nn::Linear,
    ln2: nn::LayerNorm,
    /// GELU: the MLP's input layer; SwiGLU: its value branch W3.
    fc1: nn::Linear,
    /// SwiGLU's SiLU-gated branch W1; None for GELU.
    gate: Option<nn::Linear>,
    fc2: nn::Linear,
}

/// Position-dependent constants for one (T, device).
struct Tables {
    /// Sinusoidal encoding [T, d_model].
    sinusoid: Option<Tensor>,
    /// RoPE cos and sin, [T, d_head/2] each.
    rope: Option<(Tensor, Tensor)>,
    /// Band mask [T, T], true where position t may attend to i (t − window < i ≤ t).
    window_mask: Option<Tensor>,
}

impl Shallow for Tables {
    fn shallow(&self) -> Self {
        Tables {
            sinusoid: self.sinusoid.as_ref().map(Tensor::shallow_clone),
            rope: self
                .rope
                .as_ref()
                .map(|(c, s)| (c.shallow_clone(), s.shallow_clone())),
            window_mask: self.window_mask.as_ref().map(Tensor::shallow_clone),
        }
    }
}

pub struct Transformer {
    cfg: TransformerConfig,
    d_in: i64,
    input: nn::Linear,
    learned_pos: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
    tables: LengthCache<Tables>,
}

fn gpt2_linear(vs: nn::Path, d_in: i64, d_out: i64, stdev: f64) -> nn::Linear {
    gpt2_linear_bias(vs, d_in, d_out, stdev, true)
}

/// GPT-2's init, N(0, stdev) weights and zero bias; `bias` false leaves the bias out (SwiGLU).
fn gpt2_linear_bias(vs: nn::Path, d_in: i64, d_out: i64, stdev: f64, bias: bool) -> nn::Linear {
    let cfg = nn::LinearConfig {
        ws_init: nn::Init::Randn { mean: 0.0, stdev },
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    };
    nn::linear(vs, d_in, d_out, cfg)
}

impl Transformer {
    pub fn new(vs: &nn::Path, cfg: &TransformerConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        let d = cfg.d_model;
        let residual_std = 0.02 / (2.0 * cfg.layers as f64).sqrt();
        // Vaswani et al. (§3.4) scale the embedding by √d_model, its weights drawn N(0, 1/d_model)
        // (tensor2tensor): content enters with per-unit std 1 beside the sinusoid's ≈ 0.71. Our
        // input projection of unit-scale inputs gets the same from N(0, 1/d_in). Measured on the
        // sinusoidal MQAR test (tests/attention_learning.rs): nn.Linear's default (std ≈ 0.58)
        // stayed at 0.34 accuracy for 4000 steps, this init solves it in 600, tch's √6× wider
        // default (std ≈ 1.41) in 550; GPT-2's N(0, 0.02) drowned the content and stalled.
        let input = nn::linear(
            vs / "input",
            d_in,
            d,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0 / (d_in as f64).sqrt(),
                },
                bs_init: Some(init::uniform(1.0 / (d_in as f64).sqrt())),
                bias: true,
            },
        );
        let learned_pos = (cfg.pos_encoding == PosEncoding::Learned).then(|| {
            vs.var(
                "pos",
                &[cfg.max_len, d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.02,
                },
            )
        });
        let swiglu = cfg.mlp == MlpKind::Swiglu;
        let blocks = (0..cfg.layers)
            .map(|l| {
                let p = vs / "blocks" / l;
                Block {
                    ln1: nn::layer_norm(&p / "ln1", vec![d], Default::default()),
                    conv: (cfg.conv_kernel > 0).then(|| ShortConv::new(&p, d, cfg.conv_kernel)),
                    qkv: gpt2_linear(&p / "qkv", d, 3 * d, 0.02),
                    proj: gpt2_linear(&p / "proj", d, d, residual_std),
                    ln2: nn::layer_norm(&p / "ln2", vec![d], Default::default()),
                    fc1: gpt2_linear_bias(&p / "fc1", d, cfg.mlp_width(), 0.02, !swiglu),
                    gate: swiglu
                        .then(|| gpt2_linear_bias(&p / "gate", d, cfg.mlp_width(), 0.02, false)),
                    fc2: gpt2_linear_bias(&p / "fc2", cfg.mlp_width(), d, residual_std, !swiglu),
                }
            })
            .collect();
        let ln_f = nn::layer_norm(vs / "ln_f", vec![d], Default::default());
        Ok(Transformer {
            cfg: cfg.clone(),
            d_in,
            input,
            learned_pos,
            blocks,
            ln_f,
            tables: LengthCache::default(),
        })
    }

    fn build_tables(&self, t: i64, device: Device) -> Tables {
        let opts = (Kind::Float, device);
        // angles[t, j] = t · base^(−2j/width), j < width/2: [T, width/2]
        let angles = |width: i64| {
            let pos = Tensor::arange(t, opts).unsqueeze(1);
            let inv_freq = (Tensor::arange_start_step(0, width, 2, opts)
                * (-ROPE_BASE.ln() / width as f64))
                .exp();
            pos * inv_freq.unsqueeze(0)
        };
        let sinusoid = (self.cfg.pos_encoding == PosEncoding::Sinusoidal).then(|| {
            // Interleaved [sin, cos] pairs as in Vaswani et al.: [T, d_model/2, 2] → [T, d_model]
            let a = angles(self.cfg.d_model);
            Tensor::stack(&[a.sin(), a.cos()], -1).reshape([t, self.cfg.d_model])
        });
        let rope = (self.cfg.pos_encoding == PosEncoding::Rope).then(|| {
            let a = angles(self.cfg.head_width());
            (a.cos(), a.sin())
        });
        let window_mask = self.cfg.window.map(|w| {
            // offset[t, i] = t − i; allowed iff 0 ≤ t − i < w.
            let idx = Tensor::arange(t, (Kind::Int64, device));
            let offset = idx.unsqueeze(1) - idx.unsqueeze(0);
            offset.ge(0).logical_and(&offset.lt(w))
        });
        Tables {
            sinusoid,
            rope,
            window_mask,
        }
    }

    /// Rotates the first two of q, k, v: qkv [3, B, H, T, d_head].
    fn apply_rope(qk: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
        let half = qk.size()[qk.dim() - 1] / 2;
        let (x1, x2) = (qk.narrow(-1, 0, half), qk.narrow(-1, half, half));
        Tensor::cat(&[&x1 * cos - &x2 * sin, &x1 * sin + &x2 * cos], -1)
    }

    fn attention(&self, block: &Block, xs: &Tensor, tables: &Tables, train: bool) -> Tensor {
        let (b, t, d) = xs.size3().unwrap();
        let (h, dh) = (self.cfg.heads, self.cfg.head_width());
        let convolved = block.conv.as_ref().map(|c| c.forward(xs));
        let xs = convolved.as_ref().unwrap_or(xs);
        // [B, T, 3·D] → [B, T, 3, H, dh] → [3, B, H, T, dh]
        let qkv = dense::linear(&block.qkv, xs)
            .view([b, t, 3, h, dh])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = match &tables.rope {
            Some((cos, sin)) => {
                let qk = Self::apply_rope(&qkv.narrow(0, 0, 2), cos, sin);
                (qk.get(0), qk.get(1), qkv.get(2))
            }
            None => (qkv.get(0), qkv.get(1), qkv.get(2)),
        };
        let p = if train { self.cfg.dropout } else { 0.0 };
        // [B, H, T, dh]
        let ys = match &tables.window_mask {
            Some(mask) => {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), p, false, None, false)
            }
            None => Tensor::scaled_dot_product_attention::<Tensor>(
                &q, &k, &v, None, p, true, None, false,
            ),
        };
        let ys = ys.transpose(1, 2).reshape([b, t, d]);
        dense::linear(&block.proj, &ys).dropout(p, train)
    }
}

impl Core for Transformer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (_, t, _) = xs.size3().unwrap();
        let tables = &self
            .tables
            .get(t, xs.device(), || self.build_tables(t, xs.device()));
        let p = if train { self.cfg.dropout } else { 0.0 };

        // [B, T, d_in] → [B, T, D]. Residual adds are out of place (`&hs + …`): layer norms save
        // their input for backward, so an in-place `+=` would corrupt the graph.
        let mut hs = dense::linear(&self.input, xs);
        if let Some(s) = &tables.sinusoid {
            hs = &hs + s;
        }
        if let Some(pos) = &self.learned_pos {
            assert!(t <= self.cfg.max_len, "transformer: sequence length {t} exceeds the learned positional table's max_len = {}", self.cfg.max_len);
            hs = &hs + pos.narrow(0, 0, t);
        }
        hs = hs.dropout(p, train);
        for block in &self.blocks {
            hs = &hs + self.attention(block, &block.ln1.forward(&hs), tables, train);
            let x = block.ln2.forward(&hs);
            let up = match &block.gate {
                None => dense::linear(&block.fc1, &x).gelu("none"),
                Some(gate) => dense::linear(gate, &x).silu() * dense::linear(&block.fc1, &x),
            };
            let mlp = dense::linear(&block.fc2, &up).dropout(p, train);
            hs = &hs + mlp;
        }
        self.ln_f.forward(&hs)
    }

    fn out_width(&self) -> i64 {
        self.cfg.d_model
    }

    /// Not with dropout in training (random draws).
    fn shardable(&self, train: bool) -> bool {
        !(train && self.cfg.dropout > 0.0)
    }

    /// The KV cache: keys and values of every layer for the positions still visible,
    /// 2 · layers · min(len, window) · d_model, plus each layer's convolution's last K − 1 inputs.
    fn state_size(&self, seq_len: i64) -> i64 {
        let visible = self.cfg.window.map_or(seq_len, |w| seq_len.min(w));
        let conv: i64 = self
            .blocks
            .iter()
            .map(|b| conv_state(&b.conv, self.cfg.d_model))
            .sum();
        2 * self.cfg.layers * visible * self.cfg.d_model + conv
    }

    /// Per token, with D = d_model, F = MLP width, L̄ = mean number of positions attended:
    /// input 2·d_in·D + per layer [conv 2KD + qkv 6D² + proj 2D² + MLP 4DF (SwiGLU 6DF) + scores
    /// 2D·L̄ + weighted sum 2D·L̄].
    /// Causal: L̄ = (len+1)/2; with a window w, L̄ = (1/len)·Σ_t min(t+1, w). Norms, softmax and
    /// GELU (O(D) per token) are left out.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.cfg.d_model as f64;
        let mean_attended = mean_attended(seq_len, self.cfg.window);
        let conv = 2.0 * self.cfg.conv_kernel as f64 * d;
        let mlp = self
            .cfg
            .mlp
            .flops_per_token(self.cfg.d_model, self.cfg.mlp_width());
        let per_layer = conv + 8.0 * d * d + mlp + 4.0 * d * mean_attended;
        2.0 * self.d_in as f64 * d + self.cfg.layers as f64 * per_layer
    }
}

/// Mean over t < len of the number of positions i ≤ t within the window: (1/len)·Σ_t min(t+1, w).
pub(crate) fn mean_attended(len: i64, window: Option<i64>) -> f64 {
    if len < 1 {
        return 0.0;
    }
    let w = window.unwrap_or(len).min(len);
    // Σ_{t<w} (t+1) + (len − w)·w
    let total = w * (w + 1) / 2 + (len - w) * w;
    total as f64 / len as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pos_encoding: PosEncoding, window: Option<i64>) -> (nn::VarStore, Transformer) {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = TransformerConfig {
            d_model: 8,
            layers: 1,
            heads: 2,
            mlp_ratio: 2.0,
            mlp: MlpKind::Gelu,
            dropout: 0.0,
            pos_encoding,
            window,
            max_len: 32,
            conv_kernel: 0,
        };
        let net = Transformer::new(&vs.root(), &cfg, 8).unwrap();
        (vs, net)
    }

    /// RoPE makes q·k depend on positions only through their offset: shifting both by c leaves
    /// every score unchanged.
    #[test]
    fn rope_scores_depend_only_on_the_offset() {
        let (_vs, net) = model(PosEncoding::Rope, None);
        let t = 12;
        let tables = net.build_tables(t, Device::Cpu);
        let (cos, sin) = tables.rope.as_ref().unwrap();
        // The same q and k vector at every position: [2, 1, 1, T, d_head]
        let q = Tensor::randn([4], (Kind::Float, Device::Cpu));
        let k = Tensor::randn([4], (Kind::Float, Device::Cpu));
        let qk = Tensor::stack(&[q.expand([t, 4], false), k.expand([t, 4], false)], 0)
            .view([2, 1, 1, t, 4]);
        let r = Transformer::apply_rope(&qk, cos, sin).view([2, t, 4]);
        let score = |i: i64, j: i64| f64::try_from(r.get(0).get(i).dot(&r.get(1).get(j))).unwrap();
        for (i, j) in [(5, 2), (3, 3), (2, 7)] {
            for c in [1, 4] {
                assert!(
                    (score(i, j) - score(i + c, j + c)).abs() < 1e-5,
                    "score({i},{j}) changes with shift {c}"
                );
            }
        }
        assert!(
            (score(5, 2) - score(5, 3)).abs() > 1e-4,
            "rope leaves scores position-blind"
        );
    }

    /// The fused attention (is_causal, or the boolean band mask) equals
    /// softmax(q kᵀ/√d_head + M) v written out with an additive −∞ mask.
    #[test]
    fn fused_attention_matches_the_explicit_formula() {
        for window in [None, Some(3)] {
            let (_vs, net) = model(PosEncoding::None, window);
            let (b, t, d, h, dh) = (2, 9, 8, 2, 4);
            let xs = Tensor::randn([b, t, d], (Kind::Float, Device::Cpu));
            let tables = net.build_tables(t, Device::Cpu);
            let block = &net.blocks[0];
            let fused = net.attention(block, &xs, &tables, false);

            let qkv = block
                .qkv
                .forward(&xs)
                .view([b, t, 3, h, dh])
                .permute([2, 0, 3, 1, 4]);
            let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
            let idx = Tensor::arange(t, (Kind::Int64, Device::Cpu));
            let offset = idx.unsqueeze(1) - idx.unsqueeze(0); // t − i
            let hidden = offset.lt(0).logical_or(&offset.ge(window.unwrap_or(t)));
            let scores = q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt();
            let p = scores
                .masked_fill(&hidden, f64::NEG_INFINITY)
                .softmax(-1, Kind::Float);
            let explicit = block
                .proj
                .forward(&p.matmul(&v).transpose(1, 2).reshape([b, t, d]));
            let diff = f64::try_from((fused - explicit).abs().max()).unwrap();
            assert!(
                diff < 1e-5,
                "window {window:?}: fused and explicit attention differ by {diff}"
            );
        }
    }

    #[test]
    fn mean_attended_counts_window_positions() {
        assert_eq!(mean_attended(4, None), (1 + 2 + 3 + 4) as f64 / 4.0);
        assert_eq!(mean_attended(5, Some(2)), (1 + 2 + 2 + 2 + 2) as f64 / 5.0);
        assert_eq!(mean_attended(2, Some(10)), 1.5);
    }
}
