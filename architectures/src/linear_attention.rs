//! Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), with the
//! `elu1` feature map φ(x) = elu(x) + 1 of that paper or the 2nd-order Taylor map of Based
//! (Arora et al. 2024), φ(x) = [1, x/f^¼, vec(x xᵀ)/(√2·√f)], so φ(q)·φ(k) = 1 + s + s²/2 with
//! s = q·k/√f ≈ exp(s).
//!
//! Per head, with φ applied to f-dimensional projections of the input,
//!
//!   o_t = φ(q_t)ᵀ S_t / (φ(q_t)ᵀ z_t + ε),  S_t = S_{t−1} + φ(k_t) v_tᵀ,  z_t = z_{t−1} + φ(k_t),
//!
//! S ∈ R^{F×d_v}, z ∈ R^F (F = f for elu1, 1 + f + f² for taylor). The recurrent form runs this
//! step by step; the chunked form computes, within a chunk of C positions, the masked quadratic
//! form (φ(Q)φ(K)ᵀ ⊙ M) V and adds the state summed over earlier chunks (an exclusive cumulative sum
//! of per-chunk φ(K)ᵀV), so with C ≥ T it is exactly the paper's parallel form. Each layer is a
//! pre-norm residual block with an MLP (see [`crate::residual`]).
//!
//! **Initialisation**: the paper and Based's code use PyTorch's module defaults: q, k, v, o as
//! `nn.Linear(bias=False)` (U(±1/√d_model), [`crate::init`]), the short convolution as `nn.Conv1d`,
//! the block's norms, MLP and input projection as in [`crate::residual`].

use crate::residual::{
    check_heads, check_shape, conv_state, pad_to_chunks, Mixer, MlpKind, Scan, ShortConv, Stack,
};
use crate::{dense, first, init, ArchError, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureMap {
    /// elu(x) + 1 (Katharopoulos et al. 2020); F = f.
    #[default]
    Elu1,
    /// 2nd-order Taylor expansion of exp (Based); F = 1 + f + f².
    Taylor,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearAttentionConfig {
    /// Residual stream width; must be divisible by `heads`.
    pub d_model: i64,
    /// Residual blocks. Default 2.
    #[serde(default = "two")]
    pub layers: i64,
    /// Attention heads; each reads d_v = d_model / heads values. Default 4.
    #[serde(default = "four")]
    pub heads: i64,
    /// Width f of each head's query/key projection before the feature map. Default 16
    /// (Based uses 16 with the Taylor map, which then has 273 features).
    #[serde(default = "sixteen")]
    pub feature_dim: i64,
    /// Default `elu1`.
    #[serde(default)]
    pub feature_map: FeatureMap,
    /// MLP hidden width = mlp_ratio · d_model; 0 drops the MLP. Default 4.
    #[serde(default = "four")]
    pub mlp_ratio: i64,
    /// The MLP's kind: `gelu` (default) or `swiglu` (SwiGLU, hidden width ⌈⌊2/3 · mlp_ratio ·
    /// d_model⌋⌉₁₆ as MAD; see `residual::MlpKind`).
    #[serde(default, skip_serializing_if = "MlpKind::is_gelu")]
    pub mlp: MlpKind,
    /// Positions per chunk in the chunked form. Default 64.
    #[serde(default = "sixty_four")]
    pub chunk_size: i64,
    /// Taps of an optional causal depthwise convolution over the block input before the
    /// projections (Based's short convolution); 0 = none (the original model). Without it the
    /// layer has no notion of order beyond causality, so it cannot bind a value token to the key
    /// token just before it (MQAR). Default 0.
    #[serde(default)]
    pub conv_kernel: i64,
    /// Default `chunked`.
    #[serde(default)]
    pub scan: Scan,
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
fn sixty_four() -> i64 {
    64
}

const ARCH: &str = "linear_attention";
/// Keeps the normaliser away from 0; φ > 0 for both maps, so it is only a guard.
const EPS: f64 = 1e-6;

impl LinearAttentionConfig {
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
        m.range("feature_dim", self.feature_dim, 1, 256);
        if !(0..=64).contains(&self.conv_kernel) {
            m.bad(
                "conv_kernel",
                self.conv_kernel,
                "expected 0..=64 (0: no convolution)",
            );
        }
        m.range("chunk_size", self.chunk_size, 1, 4096);
        m.into_vec()
    }
}

/// The family: a pre-norm residual stack of linear-attention layers.
pub type LinearAttention = Stack<LinearAttentionLayer>;

impl LinearAttention {
    pub fn new(vs: &nn::Path, cfg: &LinearAttentionConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        Ok(Stack::build(
            vs,
            d_in,
            cfg.d_model,
            cfg.layers,
            (cfg.mlp_ratio, cfg.mlp),
            |p, _| LinearAttentionLayer::new(p, cfg),
        ))
    }
}

pub struct LinearAttentionLayer {
    wq: nn::Linear,
    wk: nn::Linear,
    wv: nn::Linear,
    wo: nn::Linear,
    conv: Option<ShortConv>,
    cfg: LinearAttentionConfig,
}

impl LinearAttentionLayer {
    fn new(vs: &nn::Path, cfg: &LinearAttentionConfig) -> Self {
        let (d, hf) = (cfg.d_model, cfg.heads * cfg.feature_dim);
        LinearAttentionLayer {
            wq: init::linear_no_bias(vs / "wq", d, hf),
            wk: init::linear_no_bias(vs / "wk", d, hf),
            wv: init::linear_no_bias(vs / "wv", d, d),
            wo: init::linear_no_bias(vs / "wo", d, d),
            conv: (cfg.conv_kernel > 0).then(|| ShortConv::new(vs, d, cfg.conv_kernel)),
            cfg: cfg.clone(),
        }
    }

    /// Features per head after the map.
    fn features(&self) -> i64 {
        let f = self.cfg.feature_dim;
        match self.cfg.feature_map {
            FeatureMap::Elu1 => f,
            FeatureMap::Taylor => 1 + f + f * f,
        }
    }

    /// x: [B, H, T, f] → [B, H, T, F]
    fn phi(&self, x: &Tensor) -> Tensor {
        match self.cfg.feature_map {
            FeatureMap::Elu1 => x.elu() + 1.0,
            FeatureMap::Taylor => {
                let f = self.cfg.feature_dim as f64;
                let mut shape = x.size();
                let ones = Tensor::ones(&shape[..3], (x.kind(), x.device())).unsqueeze(-1);
                shape.pop();
                shape.push(-1);
                // [B, H, T, f, f] → [B, H, T, f²]
                let outer = (x.unsqueeze(-1) * x.unsqueeze(-2)).reshape(&shape[..]);
                Tensor::cat(
                    &[ones, x / f.powf(0.25), outer / (2.0f64.sqrt() * f.sqrt())],
                    -1,
                )
            }
        }
    }

    /// [B, T, d] → φ(q), φ(k): [B, H, T, F]; v: [B, H, T, d_v]
    fn qkv(&self, xs: &Tensor) -> (Tensor, Tensor, Tensor) {
        let convolved = self.conv.as_ref().map(|c| c.forward(xs));
        let xs = convolved.as_ref().unwrap_or(xs);
        let (b, t) = (xs.size()[0], xs.size()[1]);
        let h = self.cfg.heads;
        let split = |y: Tensor| y.view([b, t, h, -1]).transpose(1, 2);
        let q = self.phi(&split(dense::linear(&self.wq, xs)));
        let k = self.phi(&split(dense::linear(&self.wk, xs)));
        (q, k, split(dense::linear(&self.wv, xs)))
    }

    /// [B, H, T, d_v] → [B, T, d]
    fn merge(&self, o: &Tensor) -> Tensor {
        let (b, t) = (o.size()[0], o.size()[2]);
        dense::linear(
            &self.wo,
            &o.transpose(1, 2).reshape([b, t, self.cfg.d_model]),
        )
    }

    /// Chunked parallel form; see the module doc.
    pub fn forward_chunked(&self, xs: &Tensor) -> Tensor {
        let (q, k, v) = self.qkv(xs);
        let (b, h, t) = (q.size()[0], q.size()[1], q.size()[2]);
        let c = self.cfg.chunk_size.min(t);
        let (f, dv) = (self.features(), v.size()[3]);
        // [B, H, N, C, ·]; padded keys are φ = 0 after zero padding, so they add nothing.
        let chunks = |x: Tensor, w: i64| pad_to_chunks(&x, 2, c).view([b, h, -1, c, w]);
        let (q, k, v) = (chunks(q, f), chunks(k, f), chunks(v, dv));
        let causal = Tensor::ones([c, c], (Kind::Bool, xs.device())).tril(0);
        // Within the chunk: [B, H, N, C, C], zero above the diagonal.
        let scores = q
            .matmul(&k.transpose(-1, -2))
            .masked_fill(&causal.logical_not(), 0.0);
        let num_intra = scores.matmul(&v);
        let den_intra = scores.sum_dim_intlist(-1, false, None);
        // State before each chunk: exclusive cumulative sum over chunks of φ(K)ᵀV and Σφ(K).
        let kv = k.transpose(-1, -2).matmul(&v); // [B, H, N, F, d_v]
        let s_prev = kv.cumsum(2, None) - &kv;
        let ksum = k.sum_dim_intlist(-2, false, None); // [B, H, N, F]
        let z_prev = ksum.cumsum(2, None) - &ksum;
        let num = num_intra + q.matmul(&s_prev);
        let den = den_intra + q.matmul(&z_prev.unsqueeze(-1)).squeeze_dim(-1);
        let o = (num / (den.unsqueeze(-1) + EPS))
            .view([b, h, -1, dv])
            .narrow(2, 0, t);
        self.merge(&o)
    }

    /// Recurrent form, one position at a time, carrying S and z.
    pub fn forward_recurrent(&self, xs: &Tensor) -> Tensor {
        let (q, k, v) = self.qkv(xs);
        let (b, h, t) = (q.size()[0], q.size()[1], q.size()[2]);
        let (f, dv) = (self.features(), v.size()[3]);
        let mut s = Tensor::zeros([b, h, f, dv], (q.kind(), q.device()));
        let mut z = Tensor::zeros([b, h, f], (q.kind(), q.device()));
        // unbind, not select: select's backward writes a full-size zero tensor per step.
        let (qs, ks, vs) = (q.unbind(2), k.unbind(2), v.unbind(2));
        let outs: Vec<Tensor> = (0..t as usize)
            .map(|i| {
                let (qi, ki, vi) = (&qs[i], &ks[i], &vs[i]);
                s = &s + ki.unsqueeze(-1) * vi.unsqueeze(-2);
                z = &z + ki;
                let num = qi.unsqueeze(-2).matmul(&s).squeeze_dim(-2); // [B, H, d_v]
                let den = (qi * &z).sum_dim_intlist(-1, true, None);
                num / (den + EPS)
            })
            .collect();
        self.merge(&Tensor::stack(&outs, 2))
    }
}

impl Mixer for LinearAttentionLayer {
    fn forward(&self, xs: &Tensor) -> Tensor {
        match self.cfg.scan {
            Scan::Chunked => self.forward_chunked(xs),
            Scan::Recurrent => self.forward_recurrent(xs),
        }
    }

    /// S (F × d_v) and z (F) per head, plus the convolution's last K − 1 inputs.
    fn state_size(&self, _seq_len: i64) -> i64 {
        let dv = self.cfg.d_model / self.cfg.heads;
        self.cfg.heads * self.features() * (dv + 1) + conv_state(&self.conv, self.cfg.d_model)
    }

    /// Projections 2·d·(2Hf + 2d); the Taylor map H·f²; then per head in the recurrent form
    /// 2·F·d_v for the state update and again for the read-out, plus 4F for z; the chunked form
    /// instead does the within-chunk scores and products (2·C·(F + d_v), C = chunk) and the
    /// inter-chunk state work, which is about the recurrent cost.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let c = &self.cfg;
        let (d, h, f) = (c.d_model as f64, c.heads as f64, c.feature_dim as f64);
        let (big_f, dv) = (self.features() as f64, d / h);
        let proj = 2.0 * d * (2.0 * h * f + 2.0 * d);
        let map = match c.feature_map {
            FeatureMap::Elu1 => 0.0,
            FeatureMap::Taylor => h * f * f,
        };
        let state = h * (4.0 * big_f * dv + 4.0 * big_f);
        let intra = match c.scan {
            Scan::Chunked => h * 2.0 * c.chunk_size.min(seq_len) as f64 * (big_f + dv),
            Scan::Recurrent => 0.0,
        };
        proj + map + state + intra + 2.0 * (c.conv_kernel as f64) * d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::residual::testing::{assert_causal, assert_grads, input, max_diff};
    use crate::Core;
    use tch::{nn::VarStore, Device};

    fn cfg(feature_map: FeatureMap, chunk_size: i64) -> LinearAttentionConfig {
        LinearAttentionConfig {
            d_model: 16,
            layers: 2,
            heads: 2,
            feature_dim: 4,
            feature_map,
            mlp_ratio: 2,
            mlp: MlpKind::Gelu,
            chunk_size,
            conv_kernel: 0,
            scan: Scan::Chunked,
        }
    }

    /// Max |chunked − recurrent| over both maps and chunk sizes that do and do not divide T = 23
    /// (1: every chunk is a single step; 64 > T: the fully parallel masked form).
    fn forms_diff(kind: Kind) -> f64 {
        let mut worst: f64 = 0.0;
        for map in [FeatureMap::Elu1, FeatureMap::Taylor] {
            for chunk in [1, 5, 8, 64] {
                let mut vs = VarStore::new(Device::Cpu);
                let m = LinearAttentionLayer::new(
                    &vs.root(),
                    &LinearAttentionConfig {
                        conv_kernel: 2,
                        ..cfg(map, chunk)
                    },
                );
                vs.set_kind(kind);
                let x = input(3, 3, 23, 16, kind);
                worst = worst.max(max_diff(&m.forward_chunked(&x), &m.forward_recurrent(&x)));
            }
        }
        worst
    }

    #[test]
    fn chunked_equals_recurrent_in_f64() {
        tch::set_num_threads(1);
        let d = forms_diff(Kind::Double);
        assert!(d < 1e-10, "max |chunked − recurrent| = {d}");
    }

    /// In f32 the two forms sum in different orders; outputs are O(1), so ~1e-6 relative noise
    /// over 23 steps stays well below 1e-4.
    #[test]
    fn chunked_equals_recurrent_in_f32() {
        tch::set_num_threads(1);
        let d = forms_diff(Kind::Float);
        assert!(d < 1e-4, "max |chunked − recurrent| = {d}");
    }

    #[test]
    fn shapes_state_size_and_params() {
        tch::set_num_threads(1);
        let vs = VarStore::new(Device::Cpu);
        let mut c = cfg(FeatureMap::Taylor, 8);
        c.layers = 3;
        let core = LinearAttention::new(&vs.root(), &c, 5).unwrap();
        let y = core.forward_t(&input(0, 2, 11, 5, Kind::Float), true);
        assert_eq!(y.size(), [2, 11, 16]);
        // Per layer and head: F = 1 + 4 + 16 = 21 features, S is 21 × 8 and z is 21.
        assert_eq!(core.state_size(100), 3 * 2 * 21 * (8 + 1));
        let params: i64 = vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum();
        // input 5·16+16; per layer: q, k 16·8 each, v, o 16·16 each, MLP 16·32+32+32·16+16,
        // two LayerNorms 2·32; final LayerNorm 32.
        let per_layer = 2 * 16 * 8 + 2 * 16 * 16 + (16 * 32 + 32 + 32 * 16 + 16) + 2 * 32;
        assert_eq!(params, 5 * 16 + 16 + 3 * per_layer + 32);
        assert!(core.flops_per_token(128) > 0.0);
    }

    #[test]
    fn causal() {
        tch::set_num_threads(1);
        for (map, conv_kernel) in [
            (FeatureMap::Elu1, 0),
            (FeatureMap::Taylor, 0),
            (FeatureMap::Taylor, 3),
        ] {
            let mut vs = VarStore::new(Device::Cpu);
            let core = LinearAttention::new(
                &vs.root(),
                &LinearAttentionConfig {
                    conv_kernel,
                    ..cfg(map, 8)
                },
                16,
            )
            .unwrap();
            vs.set_kind(Kind::Double);
            assert_causal(|x| core.forward_t(x, false), 16);
        }
    }

    #[test]
    fn every_parameter_gets_a_gradient() {
        tch::set_num_threads(1);
        for (map, conv_kernel) in [(FeatureMap::Elu1, 3), (FeatureMap::Taylor, 3)] {
            let vs = VarStore::new(Device::Cpu);
            let core = LinearAttention::new(
                &vs.root(),
                &LinearAttentionConfig {
                    conv_kernel,
                    ..cfg(map, 8)
                },
                6,
            )
            .unwrap();
            assert_grads(&vs, |x| core.forward_t(x, true), 6);
        }
    }

    #[test]
    fn rejects_bad_configs() {
        let vs = VarStore::new(Device::Cpu);
        let mut c = cfg(FeatureMap::Elu1, 8);
        c.heads = 3;
        let err = LinearAttention::new(&vs.root(), &c, 4)
            .err()
            .expect("heads 3 ∤ 16")
            .to_string();
        assert!(err.contains("heads"), "{err}");
        let yaml = "name: linear_attention\nd_model: 16\nfeature_dims: 4\n";
        assert!(
            serde_yaml::from_str::<crate::ArchConfig>(yaml).is_err(),
            "typo accepted"
        );
        let ok: crate::ArchConfig =
            serde_yaml::from_str("name: linear_attention\nd_model: 16\nfeature_map: taylor\n")
                .unwrap();
        assert!(matches!(
            ok,
            crate::ArchConfig::LinearAttention(LinearAttentionConfig {
                feature_map: FeatureMap::Taylor,
                heads: 4,
                ..
            })
        ));
    }
}
