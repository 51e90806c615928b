//! The pre-norm residual stack shared by the sequence-mixing families (linear attention, GLA,
//! Mamba): x ← x + mixer(LN(x)); x ← x + MLP(LN(x)) per layer, then a final LayerNorm
//! (the GPT-2 / Mamba layout). Each family only supplies its [`Mixer`]; the stack owns the
//! input projection, norms, MLPs and the bookkeeping that [`Core`] asks for.
//!
//! **Initialisation**: input projection and MLP as PyTorch's `nn.Linear` (U(±1/√fan_in),
//! [`crate::init`]), LayerNorms weight 1 and bias 0, [`ShortConv`] as `nn.Conv1d`
//! (U(±1/√K) for weight and bias); each family's mixer documents its own.

use crate::{dense, init, Core, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Tensor};

/// Which of a family's two equal forms runs: `chunked` (parallel within chunks) or `recurrent`
/// (one step at a time, carrying the state; the definition the chunked form is tested against,
/// and how the model would run at inference). They compute the same function; which is faster
/// depends on the family and shapes, so each family's config documents its measured default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scan {
    #[default]
    Chunked,
    Recurrent,
}

/// Pads [.., T, ..] along `dim` with zeros to a multiple of `chunk` (outputs past T are dropped
/// again; causality means the padding never reaches a real position).
pub(crate) fn pad_to_chunks(x: &Tensor, dim: i64, chunk: i64) -> Tensor {
    let t = x.size()[dim as usize];
    let rem = (chunk - t % chunk) % chunk;
    if rem == 0 {
        return x.shallow_clone();
    }
    let mut shape = x.size();
    shape[dim as usize] = rem;
    Tensor::cat(
        &[
            x.shallow_clone(),
            Tensor::zeros(shape, (x.kind(), x.device())),
        ],
        dim,
    )
}

/// A causal sequence mixer: [B, T, d_model] → [B, T, d_model].
pub trait Mixer: Send {
    fn forward(&self, xs: &Tensor) -> Tensor;
    /// Floats this layer carries from one step to the next.
    fn state_size(&self, seq_len: i64) -> i64;
    /// Forward FLOPs per token of this layer (a multiply-add counts 2).
    fn flops_per_token(&self, seq_len: i64) -> f64;
}

/// Causal depthwise convolution over time, K taps per channel (Mamba's and Based's "short
/// convolution"): y_t = b + Σ_{s<K} w_s ⊙ x_{t−s}. It lets a layer see the previous few tokens,
/// which linear attention alone cannot (it has no notion of position).
pub(crate) struct ShortConv {
    /// [C, 1, K]
    w: Tensor,
    /// [C]
    b: Tensor,
    k: i64,
}

impl ShortConv {
    pub(crate) fn new(vs: &nn::Path, channels: i64, k: i64) -> Self {
        // PyTorch's Conv1d init: U(±1/√fan_in), fan_in = K for a depthwise filter.
        let bound = 1.0 / (k as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        ShortConv {
            w: vs.var("conv_w", &[channels, 1, k], init),
            b: vs.var("conv_b", &[channels], init),
            k,
        }
    }

    /// x: [B, T, C] → [B, T, C]. Pads K−1 on both sides and keeps the first T outputs.
    pub(crate) fn forward(&self, x: &Tensor) -> Tensor {
        let (t, c) = (x.size()[1], x.size()[2]);
        let y = x
            .transpose(1, 2)
            .conv1d(&self.w, Some(&self.b), [1], [self.k - 1], [1], c);
        y.narrow(2, 0, t).transpose(1, 2)
    }

    /// Inputs it must remember between steps, per channel.
    pub(crate) fn state_per_channel(&self) -> i64 {
        self.k - 1
    }
}

/// State of an optional short convolution over `channels`.
pub(crate) fn conv_state(conv: &Option<ShortConv>, channels: i64) -> i64 {
    conv.as_ref()
        .map_or(0, |c| c.state_per_channel() * channels)
}

/// Position-wise MLP d → r·d → d with GELU.
struct Mlp {
    up: nn::Linear,
    down: nn::Linear,
}

impl Mlp {
    fn forward(&self, xs: &Tensor) -> Tensor {
        dense::linear(&self.down, &dense::linear(&self.up, xs).gelu("none"))
    }
}

struct Block<M> {
    norm_mix: nn::LayerNorm,
    mixer: M,
    /// None when `mlp_ratio` is 0 (Mamba's own layout has no MLP).
    mlp: Option<(nn::LayerNorm, Mlp)>,
}

/// The stack of one family's mixer type `M` (each family names its own: `pub type Gla =
/// Stack<GlaLayer>`, with its `new(vs, &cfg, d_in)` beside the config).
pub struct Stack<M> {
    /// d_in → d_model; None when they are equal (token inputs are embedded at d_model).
    input: Option<nn::Linear>,
    blocks: Vec<Block<M>>,
    final_norm: nn::LayerNorm,
    d_in: i64,
    d_model: i64,
    mlp_ratio: i64,
}

/// Checks the fields every stacked family shares into `m`; true when `d_model` is valid (checks
/// that divide it may then rely on it).
pub(crate) fn check_shape(m: &mut Mistakes, d_model: i64, layers: i64, mlp_ratio: i64) -> bool {
    let d_ok = m.range("d_model", d_model, 1, 65_536);
    m.range("layers", layers, 1, 64);
    if !(0..=16).contains(&mlp_ratio) {
        m.bad("mlp_ratio", mlp_ratio, "expected 0..=16 (0: no MLP)");
    }
    d_ok
}

/// Checks `heads` of a stacked family: at least 1, and a divisor of a valid `d_model` (`d_ok`).
pub(crate) fn check_heads(m: &mut Mistakes, heads: i64, d_model: i64, d_ok: bool) -> bool {
    if heads < 1 || (d_ok && d_model % heads != 0) {
        return m.bad(
            "heads",
            heads,
            format!("expected ≥ 1 and a divisor of d_model = {d_model}"),
        );
    }
    true
}

impl<M: Mixer> Stack<M> {
    /// `make_mixer(path, layer)` builds layer `layer`'s mixer under `path`.
    pub(crate) fn build(
        vs: &nn::Path,
        d_in: i64,
        d_model: i64,
        layers: i64,
        mlp_ratio: i64,
        mut make_mixer: impl FnMut(&nn::Path, i64) -> M,
    ) -> Self {
        let input = (d_in != d_model).then(|| init::linear(vs / "input", d_in, d_model));
        let blocks = (0..layers)
            .map(|l| {
                let p = vs / format!("layer{l}");
                let mlp = (mlp_ratio > 0).then(|| {
                    let hidden = mlp_ratio * d_model;
                    let mlp = Mlp {
                        up: init::linear(&p / "mlp_up", d_model, hidden),
                        down: init::linear(&p / "mlp_down", hidden, d_model),
                    };
                    (
                        nn::layer_norm(&p / "norm_mlp", vec![d_model], Default::default()),
                        mlp,
                    )
                });
                Block {
                    norm_mix: nn::layer_norm(&p / "norm_mix", vec![d_model], Default::default()),
                    mixer: make_mixer(&(&p / "mixer"), l),
                    mlp,
                }
            })
            .collect();
        let final_norm = nn::layer_norm(vs / "final_norm", vec![d_model], Default::default());
        Stack {
            input,
            blocks,
            final_norm,
            d_in,
            d_model,
            mlp_ratio,
        }
    }
}

impl<M: Mixer> Core for Stack<M> {
    /// xs: [B, T, d_in] → [B, T, d_model]
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let mut h = match &self.input {
            Some(l) => dense::linear(l, xs),
            None => xs.shallow_clone(),
        };
        for b in &self.blocks {
            h = &h + b.mixer.forward(&b.norm_mix.forward(&h));
            if let Some((norm, mlp)) = &b.mlp {
                h = &h + mlp.forward(&norm.forward(&h));
            }
        }
        self.final_norm.forward(&h)
    }

    fn out_width(&self) -> i64 {
        self.d_model
    }

    fn state_size(&self, seq_len: i64) -> i64 {
        self.blocks
            .iter()
            .map(|b| b.mixer.state_size(seq_len))
            .sum()
    }

    /// Mixers + MLPs (2·2·r·d² per layer) + input projection; norms and residual adds (~10·d per
    /// layer) included for honesty, though they are small.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.d_model as f64;
        let input = if self.input.is_some() {
            2.0 * self.d_in as f64 * d
        } else {
            0.0
        };
        let mlp = 4.0 * self.mlp_ratio as f64 * d * d;
        input
            + self
                .blocks
                .iter()
                .map(|b| b.mixer.flops_per_token(seq_len) + mlp + 10.0 * d)
                .sum::<f64>()
    }
}

/// Checks shared by the families' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use tch::{nn, Kind, Tensor};

    pub fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Random [B, T, d] input of `kind`, seeded.
    pub fn input(seed: i64, b: i64, t: i64, d: i64, kind: Kind) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([b, t, d], (kind, tch::Device::Cpu))
    }

    /// Changing the input at step `t0` must leave every output before `t0` bit-for-bit
    /// unchanged (up to float noise), and must change the output at `t0`.
    pub fn assert_causal(f: impl Fn(&Tensor) -> Tensor, d: i64) {
        let t0 = 9;
        let x = input(1, 2, 20, d, Kind::Double);
        let x2 = x.copy();
        let _ = x2.narrow(1, t0, 1).fill_(3.0);
        let (y, y2) = (f(&x), f(&x2));
        let before = max_diff(&y.narrow(1, 0, t0), &y2.narrow(1, 0, t0));
        assert!(before < 1e-12, "outputs before t0 moved by {before}");
        let at = max_diff(&y.narrow(1, t0, 1), &y2.narrow(1, t0, 1));
        assert!(at > 1e-6, "output at t0 did not react ({at})");
    }

    /// Every trainable variable gets a finite gradient that is not all zeros.
    pub fn assert_grads(store: &nn::VarStore, f: impl Fn(&Tensor) -> Tensor, d: i64) {
        let x = input(2, 2, 19, d, Kind::Float);
        let y = f(&x);
        // A random projection of the outputs, so no gradient is zero by symmetry.
        let w = Tensor::randn(y.size(), (Kind::Float, tch::Device::Cpu));
        (y * w).sum(Kind::Float).backward();
        for (name, v) in store.variables() {
            let g = v.grad();
            assert!(g.defined(), "{name}: no gradient");
            let (finite, norm) = (
                g.isfinite().all().int64_value(&[]) == 1,
                g.abs().sum(Kind::Double).double_value(&[]),
            );
            assert!(
                finite && norm > 0.0,
                "{name}: gradient finite={finite}, |g|₁={norm}"
            );
        }
    }
}
