//! Differentiable Neural Computer, DNC-style (Graves et al. 2016, "Hybrid computing using a neural
//! network with dynamic external memory", Methods): the NTM's controller and N×W memory with
//! dynamic allocation by usage and a temporal link matrix instead of shift-based location
//! addressing.
//!
//! Per step t, from the clipped interface vector ξ_t = clip(W_ξ h_t + b_ξ, ±clip):
//! read keys k^r_i, read strengths β^r_i = oneplus(·), write key k^w, strength β^w = oneplus(·),
//! erase e = σ(·), write vector v, free gates f_i = σ(·), allocation gate g^a = σ(·), write gate
//! g^w = σ(·), read modes π_i = softmax(·) over (backward, content, forward);
//! oneplus(x) = 1 + softplus(x).
//!
//! * usage: ψ = Π_i (1 − f_i w^r_{t−1,i}); u_t = (u_{t−1} + w^w_{t−1} − u_{t−1}∘w^w_{t−1}) ∘ ψ;
//! * allocation: φ = slots sorted by ascending usage,
//!   a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i] (sort, exclusive cumprod, scatter back; batched);
//! * write weighting: w^w = g^w (g^a a + (1 − g^a) C(M_{t−1}, k^w, β^w));
//! * memory: M_t = M_{t−1} ∘ (1 − w^w eᵀ) + w^w vᵀ;
//! * links: L_t[i,j] = (1 − w^w[i] − w^w[j]) L_{t−1}[i,j] + w^w[i] p_{t−1}[j], L_t[i,i] = 0;
//!   precedence p_t = (1 − Σ_i w^w[i]) p_{t−1} + w^w;
//! * reads: f_i = L_t w^r_{t−1,i}, b_i = L_tᵀ w^r_{t−1,i}, c_i = C(M_t, k^r_i, β^r_i),
//!   w^r_i = π_i[0] b_i + π_i[1] c_i + π_i[2] f_i, r_i = M_tᵀ w^r_i;
//! * output [h_t, r_1 … r_R].
//!
//! C is the cosine content weighting of [`crate::addressing::content_weights`].
//!
//! Simplifications and choices, stated plainly:
//! * one write head (the paper's DNC has one; `read_heads` is configurable);
//! * the dense N×N link matrix (no sparse links as in Rae et al. 2016's SAM/SDNC), so time and
//!   state grow with N²;
//! * the allocation sort passes gradients through the sorted usage values but not the permutation
//!   (as in DeepMind's reference implementation), and usage is nudged to ε + (1 − ε)u with
//!   ε = 10⁻⁶ before sorting, as there, so that the products never vanish exactly;
//! * memory starts at 10⁻⁶ in every cell instead of 0 (as our NTM), so cosine similarity is never
//!   0/0; usage, links, precedence, weightings and read vectors start at 0 as in the paper;
//! * the interface vector is clipped to ±clip (Collier & Beel 2018), the write vector is left
//!   unsquashed as in the paper.
//!
//! **Initialisation**: the controller as the NTM's ([`crate::controller`]: PyTorch's `nn.LSTM`
//! init), the interface layer as `nn.Linear` (U(±1/√controller_size)); memory at 10⁻⁶; usage,
//! links, precedence, weightings and read vectors at 0, as in the paper.

use crate::addressing;
use crate::controller::{default_controller, default_controller_size, Controller, ControllerKind};
use crate::ntm::{check_clip, default_clip, one, MEMORY_INIT};
use crate::{first, kernels, ArchError, Core, Mistakes};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DncConfig {
    /// `lstm` (default) or `feedforward`.
    #[serde(default = "default_controller")]
    pub controller: ControllerKind,
    /// Units per controller layer (default 100).
    #[serde(default = "default_controller_size")]
    pub controller_size: i64,
    /// Controller layers (default 1).
    #[serde(default = "one")]
    pub controller_layers: i64,
    /// N, memory rows (default 32); links cost N² per step.
    #[serde(default = "default_slots")]
    pub memory_slots: i64,
    /// W, width of one memory row (default 16).
    #[serde(default = "default_slot_width")]
    pub slot_width: i64,
    /// Read heads (default 2). There is always one write head.
    #[serde(default = "default_read_heads")]
    pub read_heads: i64,
    /// The interface vector is clamped to ±clip (default 20).
    #[serde(default = "default_clip")]
    pub clip: f64,
}

fn default_slots() -> i64 {
    32
}
fn default_slot_width() -> i64 {
    16
}
fn default_read_heads() -> i64 {
    2
}

impl Default for DncConfig {
    fn default() -> Self {
        DncConfig {
            controller: default_controller(),
            controller_size: default_controller_size(),
            controller_layers: 1,
            memory_slots: default_slots(),
            slot_width: default_slot_width(),
            read_heads: default_read_heads(),
            clip: default_clip(),
        }
    }
}

/// Usage is kept away from exactly 0 before the allocation products (DeepMind's reference code).
const USAGE_EPS: f64 = 1e-6;

/// Allocation weighting (Graves et al. 2016, Methods, "Dynamic memory allocation"):
/// with φ the slots in ascending order of usage, `a[φ_j] = (1 − u[φ_j]) Π_{i<j} u[φ_i]`.
///
/// usage: [B, N] in [0, 1] → [B, N]
pub fn allocation_weights(usage: &Tensor) -> Tensor {
    let n = usage.size()[1];
    let u = usage * (1.0 - USAGE_EPS) + USAGE_EPS;
    let (sorted, order) = u.sort_stable(true, 1, false); // [B, N] each; ties keep slot order
                                                         // Exclusive cumulative product: Π_{i<j} sorted[i], with an empty product 1 at j = 0.
    let shifted = Tensor::cat(
        &[
            &sorted.ones_like().narrow(1, 0, 1),
            &sorted.narrow(1, 0, n - 1),
        ],
        1,
    );
    let a_sorted: Tensor = (1.0 - &sorted) * shifted.cumprod(1, shifted.kind());
    a_sorted.zeros_like().scatter(1, &order, &a_sorted)
}

/// Temporal links and precedence (Graves et al. 2016, Methods, "Temporal memory linkage"):
/// `L[i,j] ← (1 − w[i] − w[j]) L[i,j] + w[i] p[j]` off the diagonal, `L[i,i] = 0`;
/// `p ← (1 − Σ_i w[i]) p + w`; then the forward and backward read weightings through the new
/// links, `f_r = L v_r` and `b_r = Lᵀ v_r`, from the previous read weightings v. On the CPU the
/// links and both weightings are one fused kernel each way (`dnc_links.cpp`); elsewhere tensor
/// ops ([`link_step_ops`]).
///
/// link: [B, N, N], precedence and write_w: [B, N], read_w: [B, R, N], off_diagonal: 1 − I [N, N]
/// → (link, precedence, forward [B, R, N], backward [B, R, N])
pub fn link_step(
    link: &Tensor,
    precedence: &Tensor,
    write_w: &Tensor,
    read_w: &Tensor,
    off_diagonal: &Tensor,
) -> (Tensor, Tensor, Tensor, Tensor) {
    if link.device() == Device::Cpu && matches!(link.kind(), Kind::Float | Kind::Double) {
        let (link, forward, backward) = kernels::dnc_link_step(link, precedence, write_w, read_w);
        (
            link,
            next_precedence(precedence, write_w),
            forward,
            backward,
        )
    } else {
        link_step_ops(link, precedence, write_w, read_w, off_diagonal)
    }
}

/// [`link_step`] as tensor ops: the outer product w pᵀ is one baddbmm, the reads two bmm's.
pub fn link_step_ops(
    link: &Tensor,
    precedence: &Tensor,
    write_w: &Tensor,
    read_w: &Tensor,
    off_diagonal: &Tensor,
) -> (Tensor, Tensor, Tensor, Tensor) {
    let (w_i, w_j) = (write_w.unsqueeze(2), write_w.unsqueeze(1)); // [B, N, 1], [B, 1, N]
    let scale: Tensor = 1.0 - w_i.shallow_clone() - w_j; // [B, N, N]
    let link = (scale * link).baddbmm(&w_i, &precedence.unsqueeze(1), 1.0, 1.0) * off_diagonal;
    let forward = read_w.bmm(&link.transpose(1, 2)); // f_i[k] = Σ_j L[k, j] w[j]
    let backward = read_w.bmm(&link); // b_i[k] = Σ_j L[j, k] w[j]
    (
        link,
        next_precedence(precedence, write_w),
        forward,
        backward,
    )
}

fn next_precedence(precedence: &Tensor, write_w: &Tensor) -> Tensor {
    (1.0 - write_w.sum_dim_intlist(1, true, write_w.kind())) * precedence + write_w
}

pub struct Dnc {
    cfg: DncConfig,
    d_in: i64,
    controller: Controller,
    w_iface: Tensor,
    b_iface: Tensor,
}

impl DncConfig {
    /// Checks every field without building anything; the error is the first of
    /// [`Self::mistakes`].
    pub fn validate(&self) -> Result<(), ArchError> {
        first(self.mistakes())
    }

    /// Every impossible value, in check order; empty when the config is valid.
    pub fn mistakes(&self) -> Vec<ArchError> {
        let mut m = Mistakes::new("dnc");
        m.range("controller_size", self.controller_size, 1, 65_536);
        m.range("controller_layers", self.controller_layers, 1, 64);
        // The link matrix is N² per example.
        m.range("memory_slots", self.memory_slots, 1, 4096);
        m.range("slot_width", self.slot_width, 1, 65_536);
        m.range("read_heads", self.read_heads, 1, 64);
        m.ok(check_clip("dnc", self.clip));
        m.into_vec()
    }
}

impl Dnc {
    pub fn new(vs: &nn::Path, cfg: &DncConfig, d_in: i64) -> Result<Self, ArchError> {
        cfg.validate()?;
        let (w, r) = (cfg.slot_width, cfg.read_heads);
        let controller = Controller::new(
            &(vs / "controller"),
            cfg.controller,
            cfg.controller_size,
            cfg.controller_layers,
            d_in,
            r * w,
        );
        let p = Self::interface_sizes(cfg).iter().sum::<i64>();
        let bound = 1.0 / (cfg.controller_size as f64).sqrt();
        let init = nn::Init::Uniform {
            lo: -bound,
            up: bound,
        };
        let w_iface = vs.var("interface_weight", &[p, cfg.controller_size], init);
        let b_iface = vs.var("interface_bias", &[p], init);
        Ok(Dnc {
            cfg: cfg.clone(),
            d_in,
            controller,
            w_iface,
            b_iface,
        })
    }

    /// Interface layout: read keys R·W, write key W, strengths R + 1 (reads, then write), erase W,
    /// write vector W, gates R + 2 (free gates, allocation, write), read modes 3R. Entries that get
    /// the same activation sit together so that each activation is one call.
    fn interface_sizes(cfg: &DncConfig) -> [i64; 7] {
        let (w, r) = (cfg.slot_width, cfg.read_heads);
        [r * w, w, r + 1, w, w, r + 2, 3 * r]
    }
}

impl Core for Dnc {
    /// xs: [B, T, d_in] → [B, T, controller_size + R·W]
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let c = &self.cfg;
        let (b, t, _) = xs.size3().expect("[B, T, d_in]");
        let (n, w, r) = (c.memory_slots, c.slot_width, c.read_heads);
        let opts = (xs.kind(), xs.device());
        let off_diagonal = 1.0 - Tensor::eye(n, opts); // [N, N]

        let x_proj = self.controller.project_inputs(xs).unbind(1); // T × [B, G], see ntm.rs
        let mut state = self.controller.initial_state(b, opts);
        let mut mem = Tensor::full([b, n, w], MEMORY_INIT, opts); // [B, N, W]
        let mut usage = Tensor::zeros([b, n], opts);
        let mut write_w = Tensor::zeros([b, n], opts);
        let mut read_w = Tensor::zeros([b, r, n], opts);
        let mut link = Tensor::zeros([b, n, n], opts);
        let mut precedence = Tensor::zeros([b, n], opts);
        let mut reads = Tensor::zeros([b, r * w], opts);
        let mut outputs = Vec::with_capacity(t as usize);
        for x_t in &x_proj {
            let h = self.controller.step(x_t, &reads, &mut state); // [B, C]
            let iface = h
                .linear(&self.w_iface, Some(&self.b_iface))
                .clamp(-c.clip, c.clip);
            let p = iface.split_with_sizes(Self::interface_sizes(c), 1);
            let read_keys = p[0].view([b, r, w]);
            let write_key = p[1].view([b, 1, w]);
            let strengths = p[2].softplus() + 1.0; // [B, R + 1]
            let erase = p[3].sigmoid().view([b, 1, w]);
            let write_vec = p[4].view([b, 1, w]);
            let gates = p[5].sigmoid(); // [B, R + 2]
            let modes = p[6].view([b, r, 3]).softmax(-1, p[6].kind());

            // Usage and allocation from the previous step's weightings: [B, N].
            let kept: Tensor = 1.0 - gates.narrow(1, 0, r).unsqueeze(-1) * &read_w; // [B, R, N]
            let retention = kept.prod_dim_int(1, false, kept.kind());
            usage = (&usage + &write_w - &usage * &write_w) * retention;
            let alloc = allocation_weights(&usage);

            // Write weighting and write, on M_{t−1}.
            let content_w = addressing::content_weights(
                &mem,
                &write_key,
                &strengths.narrow(1, r, 1).unsqueeze(-1),
            )
            .squeeze_dim(1);
            let (alloc_gate, write_gate) = (gates.narrow(1, r, 1), gates.narrow(1, r + 1, 1)); // [B, 1]
            write_w = content_w.lerp_tensor(&alloc, &alloc_gate) * write_gate; // [B, N]
            mem = addressing::write(&mem, &write_w.unsqueeze(1), &erase, &write_vec);

            // Temporal links and precedence, and the forward/backward weightings through them.
            let (forward, backward);
            (link, precedence, forward, backward) =
                link_step(&link, &precedence, &write_w, &read_w, &off_diagonal);

            // Read weightings: backward, content and forward modes mixed by π. [B, R, N]
            let content_r = addressing::content_weights(
                &mem,
                &read_keys,
                &strengths.narrow(1, 0, r).unsqueeze(-1),
            );
            let stacked = Tensor::stack(&[backward, content_r, forward], 2).view([b * r, 3, n]); // [B·R, 3, N]
            read_w = modes.view([b * r, 1, 3]).bmm(&stacked).view([b, r, n]);
            reads = addressing::read(&mem, &read_w).view([b, r * w]);
            outputs.push(Tensor::cat(&[&h, &reads], 1));
        }
        Tensor::stack(&outputs, 1)
    }

    fn out_width(&self) -> i64 {
        self.cfg.controller_size + self.cfg.read_heads * self.cfg.slot_width
    }

    /// Memory N·W, read vectors R·W, read and write weightings (R + 1)·N, usage N, links N²,
    /// precedence N, and the controller's (h, c).
    fn state_size(&self, _seq_len: i64) -> i64 {
        let c = &self.cfg;
        let (n, w, r) = (c.memory_slots, c.slot_width, c.read_heads);
        n * w + r * w + (r + 1) * n + n + n * n + n + self.controller.state_size()
    }

    /// Controller + interface linear; memory norms 3NW twice (before and after the write); write
    /// content 2NW; usage ~(3R + 4)N; sort ~N log₂N; allocation ~4N; write weighting ~4N; write
    /// ~6NW; links ~6N²; forward/backward 4RN²; read content 2RNW; mode mix 6RN; reads 2RNW.
    fn flops_per_token(&self, _seq_len: i64) -> f64 {
        let c = &self.cfg;
        let (n, w, r) = (
            c.memory_slots as f64,
            c.slot_width as f64,
            c.read_heads as f64,
        );
        let p = Self::interface_sizes(c).iter().sum::<i64>() as f64;
        let controller = self
            .controller
            .flops(self.d_in + c.read_heads * c.slot_width);
        let iface = 2.0 * c.controller_size as f64 * p;
        let memory = 6.0 * n * w + 2.0 * n * w + 6.0 * n * w + 2.0 * r * n * w + 2.0 * r * n * w;
        let weights = (3.0 * r + 4.0) * n + n * n.log2().max(1.0) + 8.0 * n + 6.0 * r * n;
        let links = 6.0 * n * n + 4.0 * r * n * n;
        controller + iface + memory + weights + links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Usage (0.4, 0.1, 0.9, 0.6): ascending order φ = (1, 0, 3, 2), so
    /// a[1] = 1 − 0.1 = 0.9; a[0] = (1 − 0.4)·0.1 = 0.06; a[3] = (1 − 0.6)·0.1·0.4 = 0.016;
    /// a[2] = (1 − 0.9)·0.1·0.4·0.6 = 0.0024 (up to the 10⁻⁶ usage nudge).
    #[test]
    fn allocation_matches_the_papers_formula_by_hand() {
        let usage = Tensor::from_slice(&[0.4f32, 0.1, 0.9, 0.6, 0.0, 0.0, 1.0, 1.0]).view([2, 4]);
        let a = allocation_weights(&usage);
        let expected =
            Tensor::from_slice(&[0.06f32, 0.9, 0.0024, 0.016, 1.0, 0.0, 0.0, 0.0]).view([2, 4]);
        // Second row: two free slots; the first in sort order gets everything (1·… = 1 − ε), the
        // other gets (1 − ε)·ε ≈ 10⁻⁶.
        let diff = (&a - &expected).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "allocation {a} vs {expected}");
    }

    /// The fused CPU link step equals the tensor-op version in float64: the new links, both read
    /// weightings and the gradients of links, precedence, write and read weightings (random values,
    /// two read heads, a weighted loss on every output so that every entry's gradient counts), to
    /// 1e-12; also when the new links get no gradient of their own (the last step).
    #[test]
    fn fused_link_step_matches_tensor_ops() {
        let opts = (Kind::Double, tch::Device::Cpu);
        tch::manual_seed(11);
        let (b, n, r) = (3, 17, 2);
        let link = Tensor::rand([b, n, n], opts).set_requires_grad(true);
        let prec = Tensor::rand([b, n], opts).set_requires_grad(true);
        let w = (Tensor::rand([b, n], opts) / n as f64).set_requires_grad(true);
        let v = Tensor::rand([b, r, n], opts).set_requires_grad(true);
        let weights = [[b, n, n], [b, r, n], [b, r, n]].map(|shape| Tensor::randn(shape, opts));
        let off = 1.0 - Tensor::eye(n, opts);
        let run = |fused: bool, link_loss: bool| {
            for mut t in [&link, &prec, &w, &v].map(|t| t.shallow_clone()) {
                t.zero_grad();
            }
            let step = if fused { link_step } else { link_step_ops };
            let (l, p, f, bw) = step(&link, &prec, &w, &v, &off);
            let mut loss = (&f * &weights[1]).sum(Kind::Double)
                + (&bw * &weights[2]).sum(Kind::Double)
                + p.sum(Kind::Double);
            if link_loss {
                loss += (&l * &weights[0]).sum(Kind::Double);
            }
            loss.backward();
            let grads = [&link, &prec, &w, &v].map(|t| t.grad().copy());
            [l, p, f, bw]
                .map(|t| t.detach())
                .into_iter()
                .chain(grads)
                .collect::<Vec<_>>()
        };
        for link_loss in [true, false] {
            let (fused, ops) = (run(true, link_loss), run(false, link_loss));
            for (i, (a, b)) in fused.iter().zip(&ops).enumerate() {
                let diff = (a - b).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-12,
                    "link loss {link_loss}, tensor {i}: max |fused − ops| = {diff:e}"
                );
            }
        }
    }

    /// Writing slots 0, 1, 2 in turn (one-hot) links 1 → 0 and 2 → 1: the forward weighting
    /// L w from slot 0 is slot 1, the backward weighting Lᵀ w from slot 2 is slot 1. Then a half
    /// write to slot 0 with precedence (0, 0, 1): L[0, 2] = ½·1, L[1, 0] = (1 − 0 − ½)·1 = ½,
    /// L[2, 0] = (1 − ½)·0 = 0, L[2, 1] = 1 untouched, p = ½·(0, 0, 1) + (½, 0, 0).
    #[test]
    fn links_record_write_order() {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let off = 1.0 - Tensor::eye(3, cpu);
        let mut link = Tensor::zeros([1, 3, 3], cpu);
        let mut prec = Tensor::zeros([1, 3], cpu);
        // Head 0 reads from slot 0, head 1 from slot 2.
        let v = Tensor::from_slice(&[1f32, 0., 0., 0., 0., 1.]).view([1, 2, 3]);
        let (mut forward, mut backward) =
            (Tensor::zeros([1, 2, 3], cpu), Tensor::zeros([1, 2, 3], cpu));
        for slot in 0..3 {
            let w = Tensor::zeros([1, 3], cpu);
            let _ = w.narrow(1, slot, 1).fill_(1.0);
            (link, prec, forward, backward) = link_step(&link, &prec, &w, &v, &off);
        }
        let expected = Tensor::from_slice(&[0f32, 0., 0., 1., 0., 0., 0., 1., 0.]).view([1, 3, 3]);
        assert_eq!(link, expected);
        let slot1 = Tensor::from_slice(&[0f32, 1., 0.]).view([1, 3]);
        assert_eq!(forward.select(1, 0), slot1, "forward from slot 0");
        assert_eq!(backward.select(1, 1), slot1, "backward from slot 2");

        let half = Tensor::from_slice(&[0.5f32, 0., 0.]).view([1, 3]);
        let (link, prec, _, _) = link_step(&link, &prec, &half, &v, &off);
        let expected =
            Tensor::from_slice(&[0f32, 0., 0.5, 0.5, 0., 0., 0., 1., 0.]).view([1, 3, 3]);
        assert!(
            (&link - &expected).abs().max().double_value(&[]) < 1e-7,
            "{link}"
        );
        let expected_p = Tensor::from_slice(&[0.5f32, 0., 0.5]).view([1, 3]);
        assert!(
            (&prec - &expected_p).abs().max().double_value(&[]) < 1e-7,
            "{prec}"
        );
    }
}
