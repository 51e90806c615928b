//! The pre-norm residual stack shared by the sequence-mixing families (linear attention, GLA,
//! Mamba, RMT): x ← x + mixer(LN(x)); x ← x + MLP(LN(x)) per layer, then a final LayerNorm
//! (the GPT-2 / Mamba layout). The MLP is GPT-2's GELU MLP or a SwiGLU ([`MlpKind`]; MAD's
//! layout is two blocks of [mixer, SwiGLU]). Each family only supplies its [`Mixer`]; the stack owns the
//! input projection, norms, MLPs and the bookkeeping that [`Core`] asks for.
//!
//! **Initialisation**: input projection and MLP (either kind) as PyTorch's `nn.Linear` (U(±1/√fan_in),
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

/// Which position-wise MLP a block has: `mlp:` in the configs of the families with `mlp_ratio`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MlpKind {
    /// GPT-2's: W2 GELU(W1 x + b1) + b2, hidden width h = round(mlp_ratio · d_model).
    #[default]
    Gelu,
    /// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer"): W2 (SiLU(W1 x) ⊙ W3 x), no
    /// biases. As MAD's `SwiGLU` (mad-lab `mad/model/layers/mlp.py`, itself LLaMA's), the hidden
    /// width is scaled by 2/3 so that its three matrices hold about the parameters of a GELU
    /// MLP's two: h = ⌊2/3 · mlp_ratio · d_model⌋ rounded up to a multiple of 16 (MAD fixes
    /// mlp_ratio = 4: d_model 128 → h = 352).
    Swiglu,
}

impl MlpKind {
    /// The default, left out of the canonical YAML so run ids of configs without `mlp` stay.
    pub fn is_gelu(&self) -> bool {
        *self == MlpKind::Gelu
    }

    /// Hidden width h for `ratio` at width `d`.
    pub fn hidden(self, ratio: f64, d: i64) -> i64 {
        match self {
            MlpKind::Gelu => ((ratio * d as f64).round() as i64).max(1),
            MlpKind::Swiglu => {
                let h = ((2.0 * ratio * d as f64 / 3.0).floor() as i64).max(1);
                (h + 15) / 16 * 16
            }
        }
    }

    /// Forward FLOPs per token of one MLP of width d and hidden width h: 2 per multiply-add of
    /// its two (GELU) or three (SwiGLU) matrices; the activation and gate (O(h)) left out.
    pub fn flops_per_token(self, d: i64, h: i64) -> f64 {
        let matrices = match self {
            MlpKind::Gelu => 2.0,
            MlpKind::Swiglu => 3.0,
        };
        2.0 * matrices * d as f64 * h as f64
    }
}

/// Position-wise MLP d → h → d of either kind.
pub(crate) struct Mlp {
    /// GELU: W1 (with bias); SwiGLU: W3, the value branch (no bias).
    up: nn::Linear,
    /// SwiGLU's W1, the SiLU-gated branch; None for GELU.
    gate: Option<nn::Linear>,
    down: nn::Linear,
}

impl Mlp {
    /// Layers as PyTorch's `nn.Linear`, under `p` as `mlp_up`, `mlp_down` (and `mlp_gate`).
    fn new(p: &nn::Path, kind: MlpKind, d: i64, hidden: i64) -> Self {
        match kind {
            MlpKind::Gelu => Mlp {
                up: init::linear(p / "mlp_up", d, hidden),
                gate: None,
                down: init::linear(p / "mlp_down", hidden, d),
            },
            MlpKind::Swiglu => Mlp {
                gate: Some(init::linear_no_bias(p / "mlp_gate", d, hidden)),
                up: init::linear_no_bias(p / "mlp_up", d, hidden),
                down: init::linear_no_bias(p / "mlp_down", hidden, d),
            },
        }
    }

    /// xs: [.., d] → [.., d]
    fn forward(&self, xs: &Tensor) -> Tensor {
        let h = match &self.gate {
            None => dense::linear(&self.up, xs).gelu("none"),
            Some(gate) => dense::linear(gate, xs).silu() * dense::linear(&self.up, xs),
        };
        dense::linear(&self.down, &h)
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
    mlp: MlpKind,
    /// MLP hidden width; 0 without MLPs.
    mlp_hidden: i64,
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
        (mlp_ratio, mlp_kind): (i64, MlpKind),
        mut make_mixer: impl FnMut(&nn::Path, i64) -> M,
    ) -> Self {
        let input = (d_in != d_model).then(|| init::linear(vs / "input", d_in, d_model));
        let mlp_hidden = if mlp_ratio > 0 {
            mlp_kind.hidden(mlp_ratio as f64, d_model)
        } else {
            0
        };
        let blocks = (0..layers)
            .map(|l| {
                let p = vs / format!("layer{l}");
                let mlp = (mlp_ratio > 0).then(|| {
                    let mlp = Mlp::new(&p, mlp_kind, d_model, mlp_hidden);
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
            mlp: mlp_kind,
            mlp_hidden,
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

    /// Mixers + MLPs ([`MlpKind::flops_per_token`]: 4·d·h GELU, 6·d·h SwiGLU) + input projection; norms and residual adds (~10·d per
    /// layer) included for honesty, though they are small.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.d_model as f64;
        let input = if self.input.is_some() {
            2.0 * self.d_in as f64 * d
        } else {
            0.0
        };
        let mlp = self.mlp.flops_per_token(self.d_model, self.mlp_hidden);
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

    /// Two forms of one layer (`forms[0]` the reference) compute the same function: on `x` ([B, T,
    /// d] of `kind`), the outputs, the input's gradient and every variable's gradient agree to
    /// `tol` (gradients relative to their own scale, at least 1). The loss is a fixed random
    /// projection of the outputs, so no gradient vanishes by symmetry. `what` names the case.
    pub fn assert_same_function_and_grads<M>(
        store: &nn::VarStore,
        layer: &M,
        forms: [fn(&M, &Tensor) -> Tensor; 2],
        x: &Tensor,
        tol: f64,
        what: &str,
    ) {
        let x = x.detach().set_requires_grad(true);
        let mut w = None;
        let mut runs = Vec::new();
        for forward in forms {
            for mut v in store.trainable_variables() {
                v.zero_grad();
            }
            let mut x = x.shallow_clone();
            x.zero_grad();
            let y = forward(layer, &x);
            let w = w.get_or_insert_with(|| Tensor::randn(y.size(), (y.kind(), y.device())));
            (&y * &*w).sum(y.kind()).backward();
            let mut grads: Vec<(String, Tensor)> = store
                .variables()
                .into_iter()
                .map(|(name, v)| (name, v.grad().copy()))
                .collect();
            grads.sort_by(|a, b| a.0.cmp(&b.0));
            grads.push(("input".into(), x.grad().copy()));
            runs.push((y.detach(), grads));
        }
        let out = max_diff(&runs[0].0, &runs[1].0);
        assert!(out < tol, "{what}: outputs differ by {out}");
        for ((name, a), (_, b)) in runs[0].1.iter().zip(&runs[1].1) {
            let scale = a.abs().max().double_value(&[]).max(1.0);
            let d = max_diff(a, b) / scale;
            assert!(d < tol, "{what}: ∂/∂{name} differs by {d}");
        }
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

#[cfg(test)]
mod tests {
    use super::testing::{assert_causal, assert_grads, input, max_diff};
    use super::*;
    use crate::gla::{Gla, GlaConfig};
    use crate::transformer::{PosEncoding, Transformer, TransformerConfig};
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn swiglu_hidden_width_is_mad_s() {
        // MAD: int(2 · dim · 4 / 3) rounded up to a multiple of 16.
        assert_eq!(MlpKind::Swiglu.hidden(4.0, 128), 352);
        assert_eq!(MlpKind::Swiglu.hidden(4.0, 96), 256);
        assert_eq!(MlpKind::Swiglu.hidden(2.0, 16), 32);
        assert_eq!(MlpKind::Gelu.hidden(4.0, 128), 512);
        assert_eq!(MlpKind::Gelu.hidden(2.5, 10), 25);
    }

    /// The module computes W2 (SiLU(W1 x) ⊙ W3 x), with three bias-free nn.Linear-init maps.
    #[test]
    fn a_swiglu_mlp_is_the_gated_formula() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let (d, h) = (8, 16);
        let mlp = Mlp::new(&vs.root(), MlpKind::Swiglu, d, h);
        let names: std::collections::BTreeSet<String> = vs.variables().into_keys().collect();
        assert_eq!(
            names,
            ["mlp_down.weight", "mlp_gate.weight", "mlp_up.weight"]
                .map(String::from)
                .into()
        );
        let bound = 1.0 / (d as f64).sqrt();
        let w1 = &mlp.gate.as_ref().unwrap().ws;
        assert!(w1.abs().max().double_value(&[]) <= bound);
        let x = input(4, 2, 5, d, Kind::Float);
        let y = mlp.forward(&x);
        assert_eq!(y.size(), [2, 5, d]);
        let expected =
            (x.matmul(&w1.tr()).silu() * x.matmul(&mlp.up.ws.tr())).matmul(&mlp.down.ws.tr());
        assert!(max_diff(&y, &expected) < 1e-5);
    }

    fn gla(mlp: MlpKind) -> GlaConfig {
        serde_yaml::from_str::<GlaConfig>(
            "{d_model: 16, layers: 2, heads: 2, mlp_ratio: 2, chunk_size: 4, conv_kernel: 3}",
        )
        .map(|c| GlaConfig { mlp, ..c })
        .unwrap()
    }

    fn params(vs: &VarStore) -> i64 {
        vs.trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// A stack with SwiGLU MLPs: d → d shapes, each layer's GELU MLP (2·d·h + h + d parameters)
    /// replaced by three bias-free maps (3·d·h'), FLOPs to match, causal, every parameter trained.
    #[test]
    fn a_stack_with_swiglu_mlps() {
        tch::set_num_threads(1);
        let (d, layers) = (16, 2);
        let build = |kind| {
            let vs = VarStore::new(Device::Cpu);
            let core = Gla::new(&vs.root(), &gla(kind), d).unwrap();
            (vs, core)
        };
        let (vs_g, gelu) = build(MlpKind::Gelu);
        let (vs_s, swiglu) = build(MlpKind::Swiglu);
        let (h, h2) = (32, MlpKind::Swiglu.hidden(2.0, d));
        assert_eq!(
            params(&vs_s) - params(&vs_g),
            layers * (3 * d * h2 - (2 * d * h + h + d))
        );
        let flops = swiglu.flops_per_token(20) - gelu.flops_per_token(20);
        assert_eq!(flops, (layers * (6 * d * h2 - 4 * d * h)) as f64);
        let x = input(1, 2, 11, d, Kind::Float);
        assert_eq!(swiglu.forward_t(&x, false).size(), [2, 11, d]);
        assert_grads(&vs_s, |x| swiglu.forward_t(x, true), d);
        let (mut vs, core) = build(MlpKind::Swiglu);
        vs.set_kind(Kind::Double);
        assert_causal(|x| core.forward_t(x, false), d);
    }

    fn transformer(mlp: MlpKind) -> TransformerConfig {
        TransformerConfig {
            d_model: 16,
            layers: 2,
            heads: 2,
            mlp_ratio: 4.0,
            mlp,
            dropout: 0.0,
            pos_encoding: PosEncoding::Rope,
            window: None,
            max_len: 64,
            conv_kernel: 0,
        }
    }

    /// The Transformer's own MLP: fc1 and fc2 lose their biases and a gate joins them.
    #[test]
    fn a_transformer_with_swiglu_mlps() {
        tch::set_num_threads(1);
        let (d, layers) = (16, 2);
        let build = |kind| {
            let vs = VarStore::new(Device::Cpu);
            let core = Transformer::new(&vs.root(), &transformer(kind), d).unwrap();
            (vs, core)
        };
        let (vs_g, gelu) = build(MlpKind::Gelu);
        let (vs_s, swiglu) = build(MlpKind::Swiglu);
        let (h, h2) = (64, MlpKind::Swiglu.hidden(4.0, d));
        assert_eq!(h2, 48);
        assert_eq!(
            params(&vs_s) - params(&vs_g),
            layers * (3 * d * h2 - (2 * d * h + h + d))
        );
        let flops = swiglu.flops_per_token(20) - gelu.flops_per_token(20);
        assert_eq!(flops, (layers * (6 * d * h2 - 4 * d * h)) as f64);
        let x = input(1, 2, 11, d, Kind::Float);
        assert_eq!(swiglu.forward_t(&x, false).size(), [2, 11, d]);
        assert_grads(&vs_s, |x| swiglu.forward_t(x, true), d);
        let (mut vs, core) = build(MlpKind::Swiglu);
        vs.set_kind(Kind::Double);
        assert_causal(|x| core.forward_t(x, false), d);
    }

    /// `mlp` is left out of the canonical YAML at its default (run ids of existing configs stay)
    /// and written when it is `swiglu`.
    #[test]
    fn the_default_mlp_is_not_serialized() {
        let gelu = serde_yaml::to_string(&gla(MlpKind::Gelu)).unwrap();
        assert!(!gelu.contains("mlp:"), "{gelu}");
        let swiglu = serde_yaml::to_string(&transformer(MlpKind::Swiglu)).unwrap();
        assert!(swiglu.contains("mlp: swiglu"), "{swiglu}");
        let back: TransformerConfig = serde_yaml::from_str(&swiglu).unwrap();
        assert_eq!(back.mlp, MlpKind::Swiglu);
    }
}
