//! Selective state-space layer in the spirit of Mamba (Gu & Dao 2023), written in libtorch ops.
//!
//! Per layer, with E = expand · d_model channels and N = `state_dim` states per channel:
//!
//!   [x, z] = in_proj(u);  x ← SiLU(causal depthwise conv_K(x));
//!   Δ = softplus(dt_proj(W_Δ x)) ∈ R^E,  B = W_B x ∈ R^N,  C = W_C x ∈ R^N   (input-dependent);
//!   h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t ⊙ x_t) B_tᵀ   (h ∈ R^{E×N}, A = −exp(A_log) diagonal),
//!   y_t = h_t C_t + D ⊙ x_t;   out = out_proj(y ⊙ SiLU(z)).
//!
//! **Initialisation** (the reference `mamba_simple.py` and `_init_weights`): A_log starts at
//! log(1..N) in every channel (S4D-real); dt_proj's weight U(±1/√dt_rank) (`dt_init="random"`,
//! dt_scale 1, which is also nn.Linear's bound) and its bias so that softplus(bias) is log-uniform
//! in [1e-3, 1e-1]; D at 1; the conv as nn.Conv1d; in_proj and x_proj as nn.Linear; out_proj as
//! nn.Linear divided by √layers (`rescale_prenorm_residual`). Not followed: the reference's
//! N(0, 0.02) embedding (membench's token embedding is the network's, N(0, 1) for every family), and
//! with `mlp_ratio` > 0 the MLP's down projection keeps nn.Linear's init unscaled.
//!
//! Two scans compute the same h. The recurrent one steps through time, each step batched over
//! [B, E, N]. The chunked one, within chunks of C steps with cumulative log-decay
//! c_i = Σ_{s ≤ i} Δ_s A, writes h_i = e^{c_i} (h₀ + Σ_{j ≤ i} e^{−c_j} u_j), u_j = Δ_j x_j B_j:
//! two cumulative sums over the chunk and one recurrence per chunk for h₀. To keep e^{−c_j} inside
//! f32 range, the per-step log-decay is floored at −[`LOG_DECAY_FLOOR`] in *both* scans (a step
//! forgets at most 1 − e^{−4} ≈ 98% of its state; at initialisation |Δ A| ≤ 0.1·N, so the floor
//! does not bind there for N ≤ 40), and chunks hold at most 16 steps, so |c_j| ≤ 64 < 88.
//! **`selective: false`** is the time-invariant ablation of Gu & Dao's Table 1 (the Mamba block with
//! an S4 layer instead of S6, 56.4 % on selective copying against 99.8 %): Δ, B and C are
//! parameters instead of functions of x — Δ = softplus(dt_bias) ∈ R^E with Mamba's Δ₀ init,
//! B, C ∈ R^{E×N} per channel with S4D-real's init (B = 1, C ~ N(0, 1); Gu et al. 2022, "On the
//! Parameterization and Initialization of Diagonal State Space Models") — so the scan is a linear
//! time-invariant system; the block around it (in_proj, conv, gate, out_proj) is unchanged.
//!
//! Those two materialise h for every step ([B, T, E, N] floats). The third, **`scan: fused`**, is
//! the recurrent scan as one CPU kernel with its own backward pass (`selective_scan.cpp`, like
//! Mamba's fused CUDA kernel it keeps no per-step state and recomputes h in the backward pass), for
//! the selective layer on the CPU; it computes the same function as the other two (tested in
//! float64) with its own rounding, so it is a kernel path of its own: a run reproduces with the scan
//! it was made with.

use crate::residual::{check_shape, pad_to_chunks, Mixer, MlpKind, ShortConv, Stack};
use crate::{dense, first, init, kernels, ArchError, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MambaConfig {
    /// Residual stream width.
    pub d_model: i64,
    /// Residual blocks. Default 2.
    #[serde(default = "two")]
    pub layers: i64,
    /// N, states per channel. Default 16.
    #[serde(default = "sixteen")]
    pub state_dim: i64,
    /// E / d_model. Default 2.
    #[serde(default = "two")]
    pub expand: i64,
    /// Width K of the causal depthwise convolution. Default 4.
    #[serde(default = "four")]
    pub conv_kernel: i64,
    /// Rank of Δ's projection; 0 means ⌈d_model / 16⌉ (Mamba's default). Default 0.
    #[serde(default)]
    pub dt_rank: i64,
    /// MLP hidden width = mlp_ratio · d_model; 0 (Mamba's layout: mixer-only blocks). Default 0.
    #[serde(default)]
    pub mlp_ratio: i64,
    /// The MLP's kind: `gelu` (default) or `swiglu` (SwiGLU, hidden width ⌈⌊2/3 · mlp_ratio ·
    /// d_model⌋⌉₁₆ as MAD; see `residual::MlpKind`).
    #[serde(default, skip_serializing_if = "MlpKind::is_gelu")]
    pub mlp: MlpKind,
    /// Steps per chunk in the chunked scan, 1..=16 (see the module doc). Default 16.
    #[serde(default = "sixteen")]
    pub chunk_size: i64,
    /// `recurrent` (default), `chunked` or `fused` (see [`MambaScan`]).
    #[serde(default)]
    pub scan: MambaScan,
    /// Δ, B, C functions of the input (S6, Mamba) or parameters (`false`: the LTI ablation of
    /// the module doc). Default true, and then absent from the resolved config, so run ids of
    /// configs without it are unchanged.
    #[serde(default = "yes", skip_serializing_if = "is_yes")]
    pub selective: bool,
}

fn yes() -> bool {
    true
}
fn is_yes(b: &bool) -> bool {
    *b
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

/// Which of Mamba's three forms of the scan runs; the same function (module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MambaScan {
    /// One step at a time in tensor ops (`forward_recurrent`). The default: on CPU it is faster
    /// than `chunked`, which materialises several [B, T, E, N] tensors (at d 128, L 2, T 128,
    /// B 32 a training step took 4.3 s recurrent vs 8.3 s chunked, and the same in PyTorch eager).
    #[default]
    Recurrent,
    /// Parallel within chunks of `chunk_size` steps (`forward_chunked`).
    Chunked,
    /// The recurrence as one CPU kernel each way (`selective_scan.cpp`); selective layers on the
    /// CPU only.
    Fused,
}

const ARCH: &str = "mamba";
/// Per-step log-decay floor: Δ·A ≥ −4. With chunks ≤ 16 steps, |c| ≤ 64, so e^{±c} fits in f32.
pub const LOG_DECAY_FLOOR: f64 = 4.0;
const MAX_CHUNK: i64 = 16;

impl MambaConfig {
    /// Checks every field without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Every impossible value, in check order; empty when the config is valid.
    pub fn mistakes(&self) -> Vec<ArchError> {
        let mut m = Mistakes::new(ARCH);
        let d_ok = check_shape(&mut m, self.d_model, self.layers, self.mlp_ratio);
        m.range("state_dim", self.state_dim, 1, 256);
        m.range("expand", self.expand, 1, 8);
        m.range("conv_kernel", self.conv_kernel, 1, 64);
        // With a bad d_model, the widest bound any valid one gives.
        let most = if d_ok { self.d_model } else { 65_536 };
        if !(0..=most).contains(&self.dt_rank) {
            m.bad(
                "dt_rank",
                self.dt_rank,
                format!("expected 0..={most} (0: ⌈d_model/16⌉)"),
            );
        }
        m.range("chunk_size", self.chunk_size, 1, MAX_CHUNK);
        if self.scan == MambaScan::Fused && !self.selective {
            m.bad(
                "scan",
                "fused",
                "the fused kernel scans the selective layer only: with `selective: false` use `recurrent` or `chunked`",
            );
        }
        m.into_vec()
    }
}

/// The family: a stack of Mamba layers (pre-norm residual; no MLP by default, as in the paper).
pub type Mamba = Stack<MambaLayer>;

impl Mamba {
    pub fn new(vs: &nn::Path, cfg: &MambaConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        Ok(Stack::build(
            vs,
            d_in,
            cfg.d_model,
            cfg.layers,
            (cfg.mlp_ratio, cfg.mlp),
            |p, _| MambaLayer::new(p, cfg),
        ))
    }
}

/// Where Δ, B and C come from.
enum Ssm {
    /// S6: x_proj (E → dt_rank + 2N: the low-rank Δ input, B and C) and dt_proj (dt_rank → E).
    Selective {
        x_proj: nn::Linear,
        dt_proj: nn::Linear,
    },
    /// LTI: Δ = softplus(dt_bias) [E]; B, C [E, N].
    Invariant {
        dt_bias: Tensor,
        b: Tensor,
        c: Tensor,
    },
}

/// C of the read-out y = h C: per sequence and step ([B, T, N], shared by the channels), or fixed
/// per channel ([E, N]).
enum ReadOut {
    PerStep(Tensor),
    Fixed(Tensor),
}

impl ReadOut {
    fn c(&self) -> &Tensor {
        match self {
            ReadOut::PerStep(c) | ReadOut::Fixed(c) => c,
        }
    }

    /// h [.., E, N] → y [.., E]; `step` is the C of h's steps ([.., N]) for `PerStep`, unused for
    /// `Fixed`.
    fn read(&self, h: &Tensor, step: &Tensor) -> Tensor {
        match self {
            ReadOut::PerStep(_) => h.matmul(&step.unsqueeze(-1)).squeeze_dim(-1),
            ReadOut::Fixed(c) => (h * c).sum_dim_intlist(-1, false, None),
        }
    }
}

pub struct MambaLayer {
    in_proj: nn::Linear,
    conv: ShortConv,
    ssm: Ssm,
    /// [E, N]
    a_log: Tensor,
    /// [E]
    d_skip: Tensor,
    out_proj: nn::Linear,
    cfg: MambaConfig,
    e: i64,
    dt_rank: i64,
}

impl MambaLayer {
    fn new(vs: &nn::Path, cfg: &MambaConfig) -> Self {
        let (d, n, k) = (cfg.d_model, cfg.state_dim, cfg.conv_kernel);
        let e = cfg.expand * d;
        let dt_rank = if cfg.dt_rank == 0 {
            (d + 15) / 16
        } else {
            cfg.dt_rank
        };
        // Δ₀ = exp(U(log 1e-3, log 1e-1)); bias = softplus⁻¹(Δ₀) = Δ₀ + log(1 − e^{−Δ₀}).
        let dt_bias_init = |bias: &mut Tensor| {
            tch::no_grad(|| {
                let dt0 = (Tensor::rand([e], (Kind::Float, vs.device()))
                    * (0.1f64.ln() - 0.001f64.ln())
                    + 0.001f64.ln())
                .exp();
                let inv = &dt0 + (-(-&dt0).exp()).log1p();
                bias.copy_(&inv);
            })
        };
        let ssm = if cfg.selective {
            // Drawn in the order 0.5.0 drew them (x_proj after the conv), so selective runs keep
            // their weights.
            let mut dt_proj = init::linear(vs / "dt_proj", dt_rank, e);
            dt_bias_init(dt_proj.bs.as_mut().expect("dt_proj has a bias"));
            Some(dt_proj)
        } else {
            None
        };
        let a_log = vs.var_copy(
            "a_log",
            &Tensor::arange_start(1, n + 1, (Kind::Float, vs.device()))
                .log()
                .repeat([e, 1]),
        );
        // The reference's `_init_weights(rescale_prenorm_residual=True)`: out_proj, the layer's
        // write into the residual stream, is nn.Linear's init divided by √layers.
        let mut out_proj = init::linear_no_bias(vs / "out_proj", e, d);
        tch::no_grad(|| {
            let _ = out_proj.ws.g_mul_scalar_(1.0 / (cfg.layers as f64).sqrt());
        });
        let in_proj = init::linear_no_bias(vs / "in_proj", d, 2 * e);
        let conv = ShortConv::new(vs, e, k);
        let ssm = match ssm {
            Some(dt_proj) => Ssm::Selective {
                x_proj: init::linear_no_bias(vs / "x_proj", e, dt_rank + 2 * n),
                dt_proj,
            },
            None => {
                let mut dt_bias = vs.zeros("dt_bias", &[e]);
                dt_bias_init(&mut dt_bias);
                Ssm::Invariant {
                    dt_bias,
                    b: vs.ones("b", &[e, n]),
                    c: vs.randn_standard("c", &[e, n]),
                }
            }
        };
        MambaLayer {
            in_proj,
            conv,
            ssm,
            a_log,
            d_skip: vs.var("d_skip", &[e], nn::Init::Const(1.0)),
            out_proj,
            cfg: cfg.clone(),
            e,
            dt_rank,
        }
    }

    /// u: [B, T, d] → (x [B, T, E], z [B, T, E], log-decay Δ·A [B, T, E, N], input Δ·x·B
    /// [B, T, E, N], C)
    fn prepare(&self, u: &Tensor) -> (Tensor, Tensor, Tensor, Tensor, ReadOut) {
        let (e, n) = (self.e, self.cfg.state_dim);
        let (x, z) = self.branches(u);
        let a = -self.a_log.exp(); // [E, N]
        match &self.ssm {
            Ssm::Selective { x_proj, dt_proj } => {
                let (dt, bmat, cmat) = self.selection(x_proj, dt_proj, &x);
                let log_decay = (dt.unsqueeze(-1) * a).clamp_min(-LOG_DECAY_FLOOR);
                let input = (&dt * &x).unsqueeze(-1) * bmat.unsqueeze(2);
                (x, z, log_decay, input, ReadOut::PerStep(cmat))
            }
            Ssm::Invariant { dt_bias, b, c } => {
                let (bsz, t) = (u.size()[0], u.size()[1]);
                let dt = dt_bias.softplus(); // [E]
                let log_decay = (dt.unsqueeze(-1) * a)
                    .clamp_min(-LOG_DECAY_FLOOR)
                    .expand([bsz, t, e, n], false)
                    .contiguous();
                let input = (&x * &dt).unsqueeze(-1) * b;
                (x, z, log_decay, input, ReadOut::Fixed(c.shallow_clone()))
            }
        }
    }

    /// u [B, T, d] → the scan's input x = SiLU(conv(in_proj(u)_x)) and the gate branch z, each
    /// [B, T, E].
    fn branches(&self, u: &Tensor) -> (Tensor, Tensor) {
        let e = self.e;
        let xz = dense::linear(&self.in_proj, u);
        let (x, z) = (xz.narrow(-1, 0, e), xz.narrow(-1, e, e));
        (self.conv.forward(&x).silu(), z)
    }

    /// S6's input-dependent parameters of x [B, T, E]: (Δ [B, T, E], B [B, T, N], C [B, T, N]).
    fn selection(
        &self,
        x_proj: &nn::Linear,
        dt_proj: &nn::Linear,
        x: &Tensor,
    ) -> (Tensor, Tensor, Tensor) {
        let n = self.cfg.state_dim;
        let proj = dense::linear(x_proj, x);
        let dt = dense::linear(dt_proj, &proj.narrow(-1, 0, self.dt_rank)).softplus();
        let bmat = proj.narrow(-1, self.dt_rank, n);
        let cmat = proj.narrow(-1, self.dt_rank + n, n);
        (dt, bmat, cmat)
    }

    /// y: [B, T, E] → out: [B, T, d]
    fn finish(&self, x: &Tensor, z: &Tensor, y: Tensor) -> Tensor {
        dense::linear(&self.out_proj, &((y + x * &self.d_skip) * z.silu()))
    }

    /// Δ's bias (before the softplus), [E]: dt_proj's bias (selective) or dt_bias.
    #[cfg(test)]
    fn dt_bias(&self) -> Tensor {
        match &self.ssm {
            Ssm::Selective { dt_proj, .. } => dt_proj
                .bs
                .as_ref()
                .expect("dt_proj has a bias")
                .shallow_clone(),
            Ssm::Invariant { dt_bias, .. } => dt_bias.shallow_clone(),
        }
    }

    /// Sequential scan: T steps, each over [B, E, N].
    pub fn forward_recurrent(&self, u: &Tensor) -> Tensor {
        let (x, z, log_decay, input, read) = self.prepare(u);
        let (b, t) = (u.size()[0], u.size()[1]);
        let decay = log_decay.exp();
        let mut h = Tensor::zeros([b, self.e, self.cfg.state_dim], (u.kind(), u.device()));
        // unbind, not select: select's backward writes a full-size [B, T, E, N] zero tensor per
        // step (T of them), which dominated the training step.
        let (decays, inputs) = (decay.unbind(1), input.unbind(1));
        // PerStep: C of each step; Fixed: none (its read ignores the step argument).
        let cs = match &read {
            ReadOut::PerStep(c) => c.unbind(1),
            ReadOut::Fixed(_) => Vec::new(),
        };
        let ys: Vec<Tensor> = (0..t as usize)
            .map(|i| {
                h = &h * &decays[i] + &inputs[i];
                read.read(&h, cs.get(i).unwrap_or(read.c())) // [B, E]
            })
            .collect();
        self.finish(&x, &z, Tensor::stack(&ys, 1))
    }

    /// The recurrent scan as one kernel each way (`selective_scan.cpp`); selective layers only
    /// (`validate` rejects the other).
    pub fn forward_fused(&self, u: &Tensor) -> Tensor {
        let Ssm::Selective { x_proj, dt_proj } = &self.ssm else {
            panic!(
                "mamba: the fused scan needs the selective layer (validate rejects this config)"
            );
        };
        let (x, z) = self.branches(u);
        let (dt, bmat, cmat) = self.selection(x_proj, dt_proj, &x);
        let a = -self.a_log.exp(); // [E, N]
        let y = kernels::selective_scan(&dt, &x, &a, &bmat, &cmat, LOG_DECAY_FLOOR);
        self.finish(&x, &z, y)
    }

    /// Chunked scan; see the module doc.
    pub fn forward_chunked(&self, u: &Tensor) -> Tensor {
        let (x, z, log_decay, input, read) = self.prepare(u);
        let (b, t, e, n) = (u.size()[0], u.size()[1], self.e, self.cfg.state_dim);
        let c = self.cfg.chunk_size.min(t);
        // [B, Nc, C, E, N]; padding has log-decay 0 and input 0.
        let chunks = |x: &Tensor| pad_to_chunks(x, 1, c).view([b, -1, c, e, n]);
        // Cumulative sums within a chunk as a product with the lower-triangular ones matrix: one
        // batched GEMM over [C, C] × [C, E·N] (and another in the backward pass) instead of
        // libtorch's strided cumsum (and the flips of its backward): 50 MQAR training steps at d 32,
        // T 24 took 8.1 s instead of 11.3 s (shared, loaded machine).
        let tri = Tensor::ones([c, c], (u.kind(), u.device())).tril(0);
        let chunk_cumsum = |x: &Tensor| {
            tri.matmul(&x.reshape([-1, c, e * n]))
                .view([b, -1, c, e, n])
        };
        let cum = chunk_cumsum(&chunks(&log_decay)); // c_i ≤ 0
        let acc = chunk_cumsum(&(chunks(&input) * (-&cum).exp())); // Σ_{j≤i} e^{−c_j} u_j
        let nc = cum.size()[1];
        // State at each chunk's end without the carried h₀, and the chunk's total decay.
        let grow = cum.exp();
        let local_end = (&grow * &acc).select(2, c - 1); // [B, Nc, E, N]
        let decay_end = grow.select(2, c - 1);
        let mut h0 = Tensor::zeros([b, e, n], (u.kind(), u.device()));
        let mut entering = Vec::with_capacity(nc as usize);
        for (decay, local) in decay_end.unbind(1).iter().zip(local_end.unbind(1).iter()) {
            entering.push(h0.shallow_clone());
            h0 = &h0 * decay + local;
        }
        let h0 = Tensor::stack(&entering, 1).unsqueeze(2); // [B, Nc, 1, E, N]
        let h = grow * (h0 + acc); // [B, Nc, C, E, N]
        let h = h.view([b, -1, e, n]).narrow(1, 0, t);
        let y = read.read(&h, read.c()); // [B, T, E]
        self.finish(&x, &z, y)
    }
}

impl Mixer for MambaLayer {
    fn forward(&self, u: &Tensor) -> Tensor {
        match self.cfg.scan {
            MambaScan::Chunked => self.forward_chunked(u),
            MambaScan::Recurrent => self.forward_recurrent(u),
            MambaScan::Fused => self.forward_fused(u),
        }
    }

    /// h (E × N) plus the convolution's last K − 1 inputs (E each).
    fn state_size(&self, _seq_len: i64) -> i64 {
        self.e * self.cfg.state_dim + self.e * self.conv.state_per_channel()
    }

    /// in_proj 2·d·2E, conv 2·K·E, x_proj 2·E·(r + 2N) and dt_proj 2·r·E (selective only),
    /// out_proj 2·E·d; the scan
    /// ≈ 9·E·N (decay, input, update, read-out; the chunked scan's extra exp and cumsums are of the
    /// same order), gates ≈ 10·E.
    fn flops_per_token(&self, _seq_len: i64) -> f64 {
        let (d, e, n, k, r) = (
            self.cfg.d_model as f64,
            self.e as f64,
            self.cfg.state_dim as f64,
            self.cfg.conv_kernel as f64,
            self.dt_rank as f64,
        );
        let projections = match self.ssm {
            Ssm::Selective { .. } => 2.0 * e * (r + 2.0 * n) + 2.0 * r * e,
            Ssm::Invariant { .. } => 0.0,
        };
        4.0 * d * e + 2.0 * k * e + projections + 2.0 * e * d + 9.0 * e * n + 10.0 * e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::residual::testing::{
        assert_causal, assert_grads, assert_same_function_and_grads, input, max_diff,
    };
    use crate::Core;
    use tch::{nn::VarStore, Device};

    fn cfg(chunk_size: i64) -> MambaConfig {
        MambaConfig {
            d_model: 8,
            layers: 2,
            state_dim: 4,
            expand: 2,
            conv_kernel: 4,
            dt_rank: 0,
            mlp_ratio: 0,
            mlp: MlpKind::Gelu,
            chunk_size,
            scan: MambaScan::Chunked,
            selective: true,
        }
    }

    fn lti(chunk_size: i64) -> MambaConfig {
        MambaConfig {
            selective: false,
            ..cfg(chunk_size)
        }
    }

    /// Max |chunked − recurrent| at T = 29 for chunk sizes that do and do not divide T; with
    /// `dt_bias` = 5 the steps hit the decay floor (Δ ≈ 5, A up to −4).
    fn forms_diff(kind: Kind, dt_bias: Option<f64>) -> f64 {
        let mut worst: f64 = 0.0;
        for config in [cfg, lti] {
            worst = worst.max(forms_diff_of(config, kind, dt_bias));
        }
        worst
    }

    fn forms_diff_of(config: fn(i64) -> MambaConfig, kind: Kind, dt_bias: Option<f64>) -> f64 {
        let mut worst: f64 = 0.0;
        for chunk in [1, 4, 7, 16] {
            let mut vs = VarStore::new(Device::Cpu);
            let m = MambaLayer::new(&vs.root(), &config(chunk));
            if let Some(bias) = dt_bias {
                tch::no_grad(|| {
                    let _ = m.dt_bias().fill_(bias);
                });
            }
            vs.set_kind(kind);
            let x = input(3, 3, 29, 8, kind);
            let (a, b) = (m.forward_chunked(&x), m.forward_recurrent(&x));
            assert!(
                a.isfinite().all().int64_value(&[]) == 1,
                "chunked output not finite"
            );
            worst = worst.max(max_diff(&a, &b));
        }
        worst
    }

    #[test]
    fn chunked_equals_recurrent_in_f64() {
        tch::set_num_threads(1);
        for bias in [None, Some(5.0)] {
            let d = forms_diff(Kind::Double, bias);
            assert!(
                d < 1e-10,
                "dt bias {bias:?}: max |chunked − recurrent| = {d}"
            );
        }
    }

    /// f32: within a chunk e^{−c_j} spans up to e^{64}; products with e^{c_i} are exact to
    /// relative 1e-7 and the sums are dominated by the most recent terms, so the outputs (O(0.1–1))
    /// agree to ~1e-6; 1e-4 is a wide margin.
    #[test]
    fn chunked_equals_recurrent_in_f32() {
        tch::set_num_threads(1);
        for bias in [None, Some(5.0)] {
            let d = forms_diff(Kind::Float, bias);
            assert!(
                d < 1e-4,
                "dt bias {bias:?}: max |chunked − recurrent| = {d}"
            );
        }
    }

    /// The fused kernel against the recurrent scan in float64, on T = 29 with and without the
    /// decay floor binding: the outputs, the input's gradient and every parameter's gradient.
    /// In float32 (the training kind) the outputs agree to float rounding.
    #[test]
    fn fused_equals_recurrent_with_gradients() {
        tch::set_num_threads(1);
        for (kind, tol) in [(Kind::Double, 1e-10), (Kind::Float, 1e-4)] {
            for bias in [None, Some(5.0)] {
                let mut vs = VarStore::new(Device::Cpu);
                let m = MambaLayer::new(&vs.root(), &cfg(4));
                if let Some(bias) = bias {
                    tch::no_grad(|| {
                        let _ = m.dt_bias().fill_(bias);
                    });
                }
                vs.set_kind(kind);
                assert_same_function_and_grads(
                    &vs,
                    &m,
                    [MambaLayer::forward_recurrent, MambaLayer::forward_fused],
                    &input(4, 3, 29, 8, kind),
                    tol,
                    &format!("{kind:?} dt bias {bias:?}"),
                );
            }
        }
    }

    #[test]
    fn the_fused_scan_needs_the_selective_layer() {
        let bad = MambaConfig {
            scan: MambaScan::Fused,
            ..lti(4)
        };
        let err = bad.validate().expect_err("fused LTI").to_string();
        assert!(err.contains("scan") && err.contains("selective"), "{err}");
        assert!(MambaConfig {
            scan: MambaScan::Fused,
            ..cfg(4)
        }
        .validate()
        .is_ok());
        // As YAML: `fused` is Mamba's and GLA's; linear attention's `scan` knows only its two forms.
        let yaml: crate::ArchConfig =
            serde_yaml::from_str("{name: mamba, d_model: 8, scan: fused}").unwrap();
        assert!(matches!(yaml, crate::ArchConfig::Mamba(c) if c.scan == MambaScan::Fused));
        let err = serde_yaml::from_str::<crate::ArchConfig>(
            "{name: linear_attention, d_model: 8, scan: fused}",
        )
            .unwrap_err()
            .to_string();
        assert!(err.contains("fused"), "{err}");
    }

    #[test]
    fn shapes_state_size_and_params() {
        tch::set_num_threads(1);
        let vs = VarStore::new(Device::Cpu);
        let core = Mamba::new(&vs.root(), &cfg(8), 3).unwrap();
        let y = core.forward_t(&input(0, 2, 11, 3, Kind::Float), true);
        assert_eq!(y.size(), [2, 11, 8]);
        // E = 16 channels × (N = 4 states + K − 1 = 3 conv inputs) per layer.
        assert_eq!(core.state_size(50), 2 * 16 * (4 + 3));
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // r = 1. in_proj 8·32, conv 16·4+16, x_proj 16·(1+8), dt_proj 1·16+16, A_log 16·4, D 16,
        // out_proj 16·8, LayerNorm 16; input 3·8+8 and the final LayerNorm 16.
        let per_layer = 8 * 32 + 16 * 4 + 16 + 16 * 9 + 16 + 16 + 16 * 4 + 16 + 16 * 8 + 16;
        assert_eq!(params, 3 * 8 + 8 + 2 * per_layer + 16);
    }

    #[test]
    fn time_invariant_parameters_and_state() {
        tch::set_num_threads(1);
        let vs = VarStore::new(Device::Cpu);
        let core = Mamba::new(&vs.root(), &lti(8), 3).unwrap();
        assert_eq!(core.state_size(50), 2 * 16 * (4 + 3));
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // in_proj 8·32, conv 16·4+16, dt_bias 16, B and C 16·4 each, A_log 16·4, D 16,
        // out_proj 16·8, LayerNorm 16; no x_proj or dt_proj.
        let per_layer = 8 * 32 + 16 * 4 + 16 + 16 + 2 * 16 * 4 + 16 * 4 + 16 + 16 * 8 + 16;
        assert_eq!(params, 3 * 8 + 8 + 2 * per_layer + 16);
        let vs_sel = VarStore::new(Device::Cpu);
        let sel = Mamba::new(&vs_sel.root(), &cfg(8), 3).unwrap();
        // One layer's x_proj (16·(1 + 8)) and dt_proj (1·16) FLOPs fewer per token, twice.
        let gap = sel.flops_per_token(10) - core.flops_per_token(10);
        assert_eq!(gap, 2.0 * (2.0 * 16.0 * 9.0 + 2.0 * 16.0));
    }

    /// `selective: false`: the per-step decay is one [E, N] matrix for every step and every
    /// input, and the write Δ·x·B is x times a fixed [E, N] matrix; with `selective: true` both
    /// depend on the input.
    #[test]
    fn only_the_selective_layer_makes_decay_and_write_depend_on_the_input() {
        tch::set_num_threads(1);
        for (config, selective) in [(lti(4), false), (cfg(4), true)] {
            let vs = VarStore::new(Device::Cpu);
            let m = MambaLayer::new(&vs.root(), &config);
            let (u1, u2) = (
                input(1, 2, 6, 8, Kind::Float),
                input(2, 2, 6, 8, Kind::Float),
            );
            let (x1, _, d1, w1, _) = tch::no_grad(|| m.prepare(&u1));
            let (x2, _, d2, w2, _) = tch::no_grad(|| m.prepare(&u2));
            let first = d1.select(0, 0).select(0, 0);
            let decay_varies = max_diff(&d1, &first.expand_as(&d1)).max(max_diff(&d1, &d2));
            // The write per unit of x at the first step and sequence of one input, applied to
            // the other input's x.
            let ratio = (&w1 / x1.unsqueeze(-1)).select(0, 0).select(0, 0);
            let write_varies = max_diff(&w2, &(x2.unsqueeze(-1) * &ratio));
            if selective {
                assert!(
                    decay_varies > 1e-6 && write_varies > 1e-6,
                    "{decay_varies} {write_varies}"
                );
            } else {
                assert!(decay_varies == 0.0, "decay varies by {decay_varies}");
                assert!(write_varies < 1e-4, "write varies by {write_varies}");
            }
        }
    }

    #[test]
    fn selective_is_left_out_of_the_resolved_config_unless_false() {
        let text = serde_yaml::to_string(&crate::ArchConfig::Mamba(cfg(4))).unwrap();
        assert!(!text.contains("selective"), "{text}");
        let text = serde_yaml::to_string(&crate::ArchConfig::Mamba(lti(4))).unwrap();
        assert!(text.contains("selective: false"), "{text}");
        let back: crate::ArchConfig = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back, crate::ArchConfig::Mamba(lti(4)));
    }

    #[test]
    fn causal() {
        tch::set_num_threads(1);
        for config in [cfg(4), lti(4)] {
            let mut vs = VarStore::new(Device::Cpu);
            let core = Mamba::new(&vs.root(), &config, 8).unwrap();
            vs.set_kind(Kind::Double);
            assert_causal(|x| core.forward_t(x, false), 8);
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        for config in [cfg(4), lti(4)] {
            let vs = VarStore::new(Device::Cpu);
            let core = Mamba::new(&vs.root(), &config, 5).unwrap();
            assert_grads(&vs, |x| core.forward_t(x, true), 5);
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let vs = VarStore::new(Device::Cpu);
        let err = Mamba::new(&vs.root(), &cfg(32), 4)
            .err()
            .expect("chunk 32 > 16")
            .to_string();
        assert!(err.contains("chunk_size"), "{err}");
        assert!(serde_yaml::from_str::<crate::ArchConfig>(
            "name: mamba\nd_model: 16\nstate_size: 4\n"
        )
        .is_err());
    }
}
