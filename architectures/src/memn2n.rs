//! End-To-End Memory Network, MemN2N (Sukhbaatar, Szlam, Weston & Fergus, NeurIPS 2015).
//!
//! **From a sequence task to memory + query.** The paper reads a story of sentences into memory
//! and answers one question. Here every position t asks a question: the query is the current
//! input x_t and the memory holds the inputs of the `memory_size` most recent positions
//! i with t − memory_size < i ≤ t — the current one included, so memory is never empty and the
//! model stays causal (the temporal encoding of offset 0 lets it learn to ignore or use itself).
//! With K hops (k = 1..K), for every t at once:
//!
//! ```text
//! u¹_t   = B x_t
//! m^k_ti = A^k x_i + T_A^k[t − i]          c^k_ti = C^k x_i + T_C^k[t − i]
//! p^k_ti = softmax_i(u^kᵀ_t m^k_ti)        over the window t − M < i ≤ t
//! o^k_t  = Σ_i p^k_ti c^k_ti
//! u^{k+1}_t = u^k_t + o^k_t   (adjacent)    or   H u^k_t + o^k_t   (layer-wise)
//! y_t    = u^{K+1}_t                        [B, T, d_model]; the network's head plays W
//! ```
//!
//! Weight tying (`tying`): `adjacent` (default) sets A^{k+1} = C^k, T_A^{k+1} = T_C^k and B = A¹,
//! so K hops own K+1 embeddings; `layerwise` shares one A, one C, one T_A, one T_C across hops, has
//! its own B and adds the linear map H between hops. The paper's W = (C^K)ᵀ tie is not applied:
//! the read-out belongs to the [`crate::Network`], the same for every family.
//!
//! **What this can and cannot do.** A slot holds one step, so a fact must arrive as one input
//! vector (as in the paper, and in `tests/attention_learning.rs`, where it is learned in ~50
//! steps). On token streams where a fact spans two steps (MQAR's `k v`), matching the query finds
//! the key's slot, not the value after it, in one hop; a probe with 3 hops, d 64, either tying,
//! stayed at ~25–29% after 1000 Adam steps (the rate of guessing one of the 4 stored values).
//! Later hops can still reach the value: the temporal encoding lets a hop address "one slot after
//! the one just read". The reference MQAR grid (results/reference/mqar, 8 pairs, 1000 steps)
//! shows that this is found, but not reliably: d 32 reaches 100 % in 3/3 seeds while d 64 and
//! 128 stay near the 1/8 plateau. `kv_memory` with `key_source: previous` is the variant built
//! for token-pair facts.
//!
//! **Encodings.** Each memory slot is one time step's vector (the token's embedding, or the dense
//! input), not a bag of words, so the paper's *position encoding* (PE, weighting the words inside a
//! sentence) has nothing to act on and is not implemented. *Temporal encoding* is kept: learned
//! T_A, T_C rows per relative offset t − i ∈ [0, memory_size), which is what lets the model tell
//! recent from old slots.
//!
//! **Initialisation.** The paper draws every weight from N(0, 0.1); its A, B, C act on one-hot
//! (bag-of-words) vectors, so an embedded memory or query has per-unit std 0.1 at any width. Here
//! A, B, C act on dense inputs of d_in unit-scale entries (the network's N(0, 1) token embedding,
//! or the task's dense vector), so they are drawn from N(0, 0.1²/d_in): the embedded vectors keep
//! the paper's per-unit 0.1 and the initial scores uᵀm have std ≈ 0.01·√(2·d_model) (0.08 / 0.11 /
//! 0.16 at d 32 / 64 / 128; √2 because u and m share A¹ = B), so attention starts far from
//! saturated. With the paper's 0.1 applied to dense inputs the score std grew as ≈ 0.014·d^1.5
//! (2.6 / 7.2 / 20), and attention was saturated from step 0 at the larger widths. Temporal rows T_A, T_C (added to embedded
//! vectors) and H (layer-wise tying) keep the paper's N(0, 0.1). Scores are unscaled (no 1/√d), as
//! in the paper.
//!
//! **Batched.** All positions are computed together: scores are [B, T, T] with a causal band mask
//! (no Rust loop over time). The temporal terms are u·T_Aᵀ ([B, T, M]) moved into [B, T, T] by
//! the offset t − i, and p moved back from [B, T, T] to offsets [B, T, M] before multiplying T_C,
//! each as a strided view of a zero-padded copy (`by_slot`, `by_offset`), not a gather. The mask
//! depends only on (T, device) and is cached.

use crate::transformer::mean_attended;
use crate::{dense, first, ArchError, Core, LengthCache, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

const ARCH: &str = "memn2n";
/// The paper's initialisation: N(0, 0.1) for every embedding, temporal table and H.
const PAPER_STD: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tying {
    #[default]
    Adjacent,
    Layerwise,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemN2NConfig {
    /// Embedding width d of queries and memories.
    pub d_model: i64,
    /// Memory hops K. Default 3 (the paper's setting).
    #[serde(default = "default_hops")]
    pub hops: i64,
    /// Most recent positions in memory (the current one included). Default 50 (the paper keeps
    /// the 50 most recent sentences).
    #[serde(default = "default_memory_size")]
    pub memory_size: i64,
    /// Default `adjacent`.
    #[serde(default)]
    pub tying: Tying,
}

fn default_hops() -> i64 {
    3
}

fn default_memory_size() -> i64 {
    50
}

impl MemN2NConfig {
    /// Checks every field without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Every impossible value, in check order; empty when the config is valid.
    pub fn mistakes(&self) -> Vec<ArchError> {
        let mut m = Mistakes::new(ARCH);
        m.range("d_model", self.d_model, 1, 65_536);
        m.range("hops", self.hops, 1, 64);
        m.range("memory_size", self.memory_size, 1, 1 << 20);
        m.into_vec()
    }

    /// Distinct input embeddings: K+1 with adjacent tying, A, C, B with layer-wise tying.
    fn embeddings(&self) -> i64 {
        match self.tying {
            Tying::Adjacent => self.hops + 1,
            Tying::Layerwise => 3,
        }
    }

    /// Distinct temporal tables: K+1 adjacent, T_A and T_C layer-wise.
    fn temporal_tables(&self) -> i64 {
        match self.tying {
            Tying::Adjacent => self.hops + 1,
            Tying::Layerwise => 2,
        }
    }

    /// (A^k, C^k) as indices into the embeddings and temporal tables, for hop k = 1..=K.
    fn hop_indices(&self, k: i64) -> (i64, i64) {
        match self.tying {
            Tying::Adjacent => (k - 1, k),
            Tying::Layerwise => (0, 1),
        }
    }

    /// Index of the question embedding B.
    fn query_index(&self) -> i64 {
        match self.tying {
            Tying::Adjacent => 0,
            Tying::Layerwise => 2,
        }
    }
}

/// Relative-offset bookkeeping without gathers (the "skew" of Transformer-XL, Dai et al. 2019):
/// a row-wise shift is a strided view of a zero-padded copy, whose backward is a strided copy
/// instead of a scatter-add.
///
/// `by_slot`: r [B, T, M'] with r[t, j] = v_t·T[M'−1−j] (T's rows reversed) → s [B, T, T] with
/// s[t, i] = v_t·T[t − i] for 0 ≤ t − i < M'; other entries are finite filler (the caller masks
/// them).
fn by_slot(r: &Tensor, t: i64, m: i64) -> Tensor {
    let b = r.size()[0];
    let w = m + t; // r padded with T zero columns on the right: [B, T, W]
    let padded = r.constant_pad_nd([0, t]);
    // s[t, i] = padded[t, (M' − 1) − (t − i)]: one element left per row.
    padded.as_strided([b, t, t], [t * w, w - 1, 1], Some(m - 1))
}

/// `by_offset`: p [B, T, T] → q [B, T, M'] with q[t, j] = p[t, t − (M'−1−j)] (offsets reversed,
/// as `by_slot` takes them), 0 where that slot precedes the sequence.
fn by_offset(p: &Tensor, t: i64, m: i64) -> Tensor {
    let b = p.size()[0];
    let w = t + m - 1; // p padded with M' − 1 zero columns on the left: [B, T, W]
    let padded = p.constant_pad_nd([m - 1, 0]);
    // q[t, j] = padded[t, t + j]: one element right per row.
    padded.as_strided([b, t, m], [t * w, w + 1, 1], Some(0))
}

pub struct MemN2N {
    cfg: MemN2NConfig,
    d_in: i64,
    /// All input embeddings in one matrix: [d_in, n_embeddings · d].
    embed: Tensor,
    /// [n_tables, memory_size, d]
    temporal: Tensor,
    /// Layer-wise tying only: u^{k+1} = H u^k + o^k.
    h: Option<nn::Linear>,
    /// Per (T, device): [T, T] float32, −∞ outside the window (t − i < 0 or ≥ M'), where
    /// M' = min(memory_size, T), else 0; added to the scores (bit-identical to filling them with
    /// −∞, and its backward is no copy: the softmax already gives those entries zero gradient).
    outside: LengthCache,
}

impl MemN2N {
    pub fn new(vs: &nn::Path, cfg: &MemN2NConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        let d = cfg.d_model;
        let init = nn::Init::Randn {
            mean: 0.0,
            stdev: PAPER_STD,
        };
        // The paper's N(0, 0.1) acts on one-hot words, so each embedded unit has std 0.1. Our
        // inputs are dense vectors of d_in unit-scale entries: 0.1/√d_in keeps that per-unit 0.1.
        let embed_init = nn::Init::Randn {
            mean: 0.0,
            stdev: PAPER_STD / (d_in as f64).sqrt(),
        };
        let embed = vs.var("embed", &[d_in, cfg.embeddings() * d], embed_init);
        let temporal = vs.var(
            "temporal",
            &[cfg.temporal_tables(), cfg.memory_size, d],
            init,
        );
        let h = (cfg.tying == Tying::Layerwise).then(|| {
            let c = nn::LinearConfig {
                ws_init: init,
                bs_init: None,
                bias: false,
            };
            nn::linear(vs / "h", d, d, c)
        });
        Ok(MemN2N {
            cfg: cfg.clone(),
            d_in,
            embed,
            temporal,
            h,
            outside: LengthCache::default(),
        })
    }

    fn build_outside(&self, t: i64, device: Device) -> Tensor {
        let m = self.cfg.memory_size.min(t);
        let idx = Tensor::arange(t, (Kind::Int64, device));
        // offset[t, i] = t − i
        let offset = idx.unsqueeze(1) - idx.unsqueeze(0);
        let outside = offset.lt(0).logical_or(&offset.ge(m));
        Tensor::zeros([t, t], (Kind::Float, device)).masked_fill(&outside, f64::NEG_INFINITY)
    }
}

impl Core for MemN2N {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let (b, t, _) = xs.size3().unwrap();
        let (d, m) = (self.cfg.d_model, self.cfg.memory_size.min(t));
        let outside = self
            .outside
            .get(t, xs.device(), || self.build_outside(t, xs.device()))
            .to_kind(xs.kind());

        // Every embedding of every position in one matmul, then one copy to [n_emb, B, T, d] so
        // that each embedding below is a contiguous [B, T, d] block (strided ones would be copied
        // by every product that reads them, forward and backward).
        let emb = dense::matmul(xs, &self.embed)
            .view([b, t, self.cfg.embeddings(), d])
            .permute([2, 0, 1, 3])
            .contiguous();
        let mut u = emb.get(self.cfg.query_index()); // [B, T, d]
        for k in 1..=self.cfg.hops {
            let (ia, ic) = self.cfg.hop_indices(k);
            let (a, c) = (emb.get(ia), emb.get(ic)); // [B, T, d] each
            let t_a = self.temporal.get(ia).narrow(0, 0, m); // [M', d]
            let t_c = self.temporal.get(ic).narrow(0, 0, m);
            // uᵀ(A x_i + T_A[t − i]): [B, T, T]
            let content = dense::matmul(&u, &a.transpose(1, 2));
            let temporal = by_slot(&dense::matmul(&u, &t_a.flip([0]).tr()), t, m);
            let mut scores = content + temporal;
            scores += &outside;
            let p = scores.softmax(-1, scores.kind());
            // Σ_i p_ti (C x_i + T_C[t − i]) = p·(C x) + p_by_offset·T_C: [B, T, d]
            let p_by_offset = by_offset(&p, t, m); // [B, T, M'], offsets reversed
            let o = dense::matmul(&p, &c) + dense::matmul(&p_by_offset, &t_c.flip([0]));
            u = match &self.h {
                Some(h) => dense::linear(h, &u) + o,
                None => u + o,
            };
        }
        u
    }

    fn out_width(&self) -> i64 {
        self.cfg.d_model
    }

    /// The embedded memory slots: min(len, memory_size) · d_model per distinct memory-side
    /// embedding, K+1 with adjacent tying (A¹..A^K and C^K, since A^{k+1} = C^k), 2 (A and C)
    /// layer-wise.
    fn state_size(&self, seq_len: i64) -> i64 {
        let slots = seq_len.min(self.cfg.memory_size);
        let tables = match self.cfg.tying {
            Tying::Adjacent => self.cfg.hops + 1,
            Tying::Layerwise => 2,
        };
        tables * slots * self.cfg.d_model
    }

    /// Per token: embeddings 2·d_in·d·n_emb, then per hop, with L̄ = mean slots in the window and
    /// M' = min(len, memory_size): content scores 2d·L̄, temporal scores 2d·M', weighted sums
    /// 2d·L̄ + 2d·M', and H: 2d² (layer-wise only). Softmax and adds left out.
    fn flops_per_token(&self, seq_len: i64) -> f64 {
        let d = self.cfg.d_model as f64;
        let mean_slots = mean_attended(seq_len, Some(self.cfg.memory_size));
        let m = seq_len.min(self.cfg.memory_size) as f64;
        let h = if self.h.is_some() { 2.0 * d * d } else { 0.0 };
        let per_hop = 4.0 * d * mean_slots + 4.0 * d * m + h;
        2.0 * self.d_in as f64 * d * self.cfg.embeddings() as f64 + self.cfg.hops as f64 * per_hop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batched forward (gathers by offset, band mask) equals the paper's equations evaluated
    /// one query position and one slot at a time.
    #[test]
    fn batched_forward_matches_the_equations_position_by_position() {
        tch::set_num_threads(1);
        for tying in [Tying::Adjacent, Tying::Layerwise] {
            tch::manual_seed(3);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = MemN2NConfig {
                d_model: 6,
                hops: 3,
                memory_size: 4,
                tying,
            };
            let (b, t, d_in) = (2, 7, 5);
            let net = MemN2N::new(&vs.root(), &cfg, d_in).unwrap();
            let xs = Tensor::randn([b, t, d_in], (Kind::Float, Device::Cpu));
            let batched = net.forward_t(&xs, false);

            let embed = |j: i64, x: &Tensor| x.matmul(&net.embed.narrow(1, j * 6, 6)); // [d]
            for bi in 0..b {
                for ti in 0..t {
                    let x = |i: i64| xs.get(bi).get(i);
                    let mut u = embed(cfg.query_index(), &x(ti));
                    for k in 1..=cfg.hops {
                        let (ia, ic) = cfg.hop_indices(k);
                        let slots: Vec<i64> =
                            (0..=ti).filter(|i| ti - i < cfg.memory_size).collect();
                        let m: Vec<Tensor> = slots
                            .iter()
                            .map(|&i| embed(ia, &x(i)) + net.temporal.get(ia).get(ti - i))
                            .collect();
                        let c: Vec<Tensor> = slots
                            .iter()
                            .map(|&i| embed(ic, &x(i)) + net.temporal.get(ic).get(ti - i))
                            .collect();
                        let scores =
                            Tensor::stack(&m.iter().map(|mi| u.dot(mi)).collect::<Vec<_>>(), 0);
                        let p = scores.softmax(0, Kind::Float);
                        let o = p.unsqueeze(0).matmul(&Tensor::stack(&c, 0)).squeeze_dim(0);
                        u = match &net.h {
                            Some(h) => u.linear(&h.ws, h.bs.as_ref()) + o,
                            None => u + o,
                        };
                    }
                    let diff = f64::try_from((u - batched.get(bi).get(ti)).abs().max()).unwrap();
                    assert!(
                        diff < 1e-5,
                        "{tying:?}: b {bi}, t {ti}: batched and per-position differ by {diff}"
                    );
                }
            }
        }
    }

    /// Issue #23: at initialisation, on unit-scale inputs of width d_in = d_model (the network's
    /// token embedding), the first hop's content scores uᵀm have std ≈ 0.01·√(2·d_model) and attention
    /// over 50 slots is far from saturated at the reference grid's widths (the query's own slot
    /// scores |u|² ≈ 0.01·d, 1.3 at d 128); with the paper's N(0, 0.1) applied to dense
    /// inputs it was ≈ 0.014·d^1.5 (2.6 / 7.2 / 20 at d 32 / 64 / 128) and the softmax saturated.
    #[test]
    fn initial_attention_is_not_saturated_at_any_width() {
        tch::set_num_threads(1);
        let slots = 50;
        for d in [32, 64, 128] {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = MemN2NConfig {
                d_model: d,
                hops: 3,
                memory_size: slots,
                tying: Tying::Adjacent,
            };
            let net = MemN2N::new(&vs.root(), &cfg, d).unwrap();
            let xs = Tensor::randn([8, slots, d], (Kind::Float, Device::Cpu));
            let emb = xs.matmul(&net.embed).view([8, slots, cfg.embeddings(), d]);
            let u = emb.select(2, cfg.query_index());
            let m = emb.select(2, cfg.hop_indices(1).0);
            let scores = u.matmul(&m.transpose(1, 2)); // [8, T, T], every pair
                                                       // Off the diagonal: with adjacent tying B = A¹, so u_t·m_t = |u_t|² ≈ 0.01·d there.
            let off = Tensor::eye(slots, (Kind::Bool, Device::Cpu)).logical_not();
            let std = scores.masked_select(&off).std(true).double_value(&[]);
            // Σ over d of products of per-unit-0.1 vectors, √2 for the matrix u and m share.
            let want = 0.01 * (2.0 * d as f64).sqrt();
            assert!(
                (0.7 * want..1.4 * want).contains(&std),
                "d {d}: score std {std}, expected ≈ {want}"
            );
            let p_max = scores.softmax(-1, Kind::Float).amax(-1, false);
            let mean_max = p_max.mean(Kind::Float).double_value(&[]);
            assert!(
                mean_max < 0.1, // uniform: 0.02; saturated: 1
                "d {d}: mean largest attention weight {mean_max} over {slots} slots"
            );
        }
    }
}
