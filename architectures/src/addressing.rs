//! Memory addressing shared by the NTM ([`crate::ntm`]) and the DNC ([`crate::dnc`]).
//!
//! Every function works on all heads of all examples at once: weightings are `[B, H, N]` over N
//! memory slots, memory is `[B, N, M]`. Nothing here loops over heads or slots in Rust, because
//! these run once per time step inside the recurrent loop and the number of LibTorch calls per step
//! is what sets the speed at benchmark sizes.

use tch::{Kind, Tensor};

/// Guards the norms in cosine similarity (memory starts at a small constant, keys may be zero).
pub const NORM_EPS: f64 = 1e-8;
/// Floor under a weighting before its logarithm in [`sharpen`].
pub const LOG_EPS: f64 = 1e-12;

/// Content weighting (Graves et al. 2014, eq. 5–6):
/// `w[b,h,i] = softmax_i(β[b,h] · cos(k[b,h], M[b,i]))`, `cos(u, v) = u·v / ((|u|+ε)(|v|+ε))`.
/// β/(|k|+ε) scales the key before the matmul and 1/(|M_i|+ε) the [B, H, N] scores after it, so
/// no [B, N, M]-sized tensor is divided.
///
/// mem: [B, N, M], keys: [B, H, M], beta: [B, H, 1] (already made non-negative) → [B, H, N]
pub fn content_weights(mem: &Tensor, keys: &Tensor, beta: &Tensor) -> Tensor {
    let key_scaled = keys * (beta / (keys.norm_scalaropt_dim(2, [-1], true) + NORM_EPS)); // [B, H, M]
    let mem_norm = mem.norm_scalaropt_dim(2, [-1], false).unsqueeze(1) + NORM_EPS; // [B, 1, N]
    (key_scaled.bmm(&mem.transpose(1, 2)) / mem_norm).softmax(-1, mem.kind())
}

/// Gather index for [`circular_shift`]: row k holds `(i − (k − R)) mod N` for i in 0..N, flattened
/// to [S·N] with S = 2R + 1. Built once per forward pass, outside the time loop.
pub fn shift_index(slots: i64, shift_range: i64, device: tch::Device) -> Tensor {
    let offsets = Tensor::arange_start(-shift_range, shift_range + 1, (Kind::Int64, device)); // [S]
    let slots_t = Tensor::arange(slots, (Kind::Int64, device)); // [N]
    (slots_t.unsqueeze(0) - offsets.unsqueeze(1))
        .remainder(slots)
        .reshape([-1])
}

/// Circular convolution of each weighting with its shift distribution (Graves et al. 2014, eq. 8):
/// `w̃[i] = Σ_{j=−R..R} w[(i − j) mod N] · s[j + R]`, so a one-hot s at j = +1 moves the focus one
/// slot forward. One gather and one batched matmul.
///
/// w: [B, H, N], s: [B, H, S], index from [`shift_index`] → [B, H, N]
pub fn circular_shift(w: &Tensor, s: &Tensor, index: &Tensor) -> Tensor {
    let (b, h, n) = w.size3().expect("weighting [B, H, N]");
    let shifts = s.size()[2];
    let rolled = w.index_select(2, index).view([b * h, shifts, n]); // [B·H, S, N]
    s.view([b * h, 1, shifts]).bmm(&rolled).view([b, h, n]) // [B·H, 1, S]·[B·H, S, N]
}

/// Sharpening (Graves et al. 2014, eq. 9): `w[i]^γ / Σ_j w[j]^γ`, computed as
/// `softmax(γ · log max(w, ε))`, which equals it for w ≥ ε, sums to 1 by construction and has no
/// `0^γ` (whose derivative in γ is NaN).
///
/// w: [B, H, N], gamma: [B, H, 1] (≥ 1) → [B, H, N]
pub fn sharpen(w: &Tensor, gamma: &Tensor) -> Tensor {
    (w.clamp_min(LOG_EPS).log() * gamma).softmax(-1, w.kind())
}

/// Erase-then-add write by H_w heads (Graves et al. 2014, eq. 3–4; erasures multiply, adds sum):
/// `M ← M ∘ Π_h (1 − w_h e_hᵀ) + Σ_h w_h a_hᵀ`.
///
/// mem: [B, N, M], w: [B, H_w, N], erase (in [0, 1]) and add: [B, H_w, M] → [B, N, M]
pub fn write(mem: &Tensor, w: &Tensor, erase: &Tensor, add: &Tensor) -> Tensor {
    let w_t = w.transpose(1, 2); // [B, N, H_w]
    let keep = if w.size()[1] == 1 {
        // 1 − w eᵀ as one baddbmm from a broadcast 1.
        mem.ones_like().baddbmm(&w_t, erase, 1.0, -1.0) // [B, N, M]
    } else {
        let keep_each: Tensor = 1.0 - w.unsqueeze(-1) * erase.unsqueeze(2); // [B, H_w, N, M]
        keep_each.prod_dim_int(1, false, keep_each.kind()) // Π over heads
    };
    (mem * keep).baddbmm(&w_t, add, 1.0, 1.0)
}

/// Reads: `r[b,h] = Σ_i w[b,h,i] M[b,i]`. w: [B, H, N], mem: [B, N, M] → [B, H, M]
pub fn read(mem: &Tensor, w: &Tensor) -> Tensor {
    w.bmm(mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    fn assert_close(a: &Tensor, b: &Tensor, tol: f64) {
        let diff = (a - b).abs().max().double_value(&[]);
        assert!(diff <= tol, "max |a − b| = {diff}\na = {a}\nb = {b}");
    }

    /// Two slots, one key: cos = [1, 0] for slot 0 = k, slot 1 ⟂ k; with β = ln 3 the weights are
    /// e^{ln 3}/(e^{ln 3} + 1) = 3/4 and 1/4. With β = 0 they are uniform.
    #[test]
    fn content_weights_match_hand_computation() {
        let mem = t(&[2.0, 0.0, 0.0, 5.0], &[1, 2, 2]);
        let keys = t(&[1.0, 0.0, 3.0, 0.0], &[1, 2, 2]);
        let beta = t(&[3f32.ln(), 0.0], &[1, 2, 1]);
        let w = content_weights(&mem, &keys, &beta);
        assert_close(&w, &t(&[0.75, 0.25, 0.5, 0.5], &[1, 2, 2]), 1e-6);
    }

    /// cos between k = (1, 1) and slots (1, 0), (0, 1), (−1, −1): 1/√2, 1/√2, −1.
    #[test]
    fn content_weights_use_cosine_not_dot_product() {
        let mem = t(&[10.0, 0.0, 0.0, 1.0, -1.0, -1.0], &[1, 3, 2]);
        let keys = t(&[1.0, 1.0], &[1, 1, 2]);
        let beta = t(&[2.0], &[1, 1, 1]);
        let c = 2.0f32 * 0.5f32.sqrt();
        let z = 2.0 * c.exp() + (-2.0f32).exp();
        let expected = t(&[c.exp() / z, c.exp() / z, (-2.0f32).exp() / z], &[1, 1, 3]);
        assert_close(&content_weights(&mem, &keys, &beta), &expected, 1e-6);
    }

    #[test]
    fn zero_memory_and_zero_key_give_uniform_finite_weights() {
        let mem = Tensor::zeros([2, 4, 3], (Kind::Float, Device::Cpu));
        let keys = Tensor::zeros([2, 2, 3], (Kind::Float, Device::Cpu));
        let beta = Tensor::full([2, 2, 1], 5.0, (Kind::Float, Device::Cpu));
        let w = content_weights(&mem, &keys, &beta);
        assert_close(
            &w,
            &Tensor::full([2, 2, 4], 0.25, (Kind::Float, Device::Cpu)),
            1e-7,
        );
    }

    /// A one-hot at slot 2 of 5, shifted by +1 (s one-hot at offset +1) lands at slot 3; by −1 at
    /// slot 1; at the end it wraps around: slot 4 shifted +1 is slot 0. A split s = (½, 0, ½) blurs.
    #[test]
    fn circular_shift_moves_a_one_hot() {
        let index = shift_index(5, 1, Device::Cpu);
        let w = t(
            &[
                0., 0., 1., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0., 1., 0., 0., 1., 0., 0.,
            ],
            &[1, 4, 5],
        );
        let s = t(
            &[0., 0., 1., 1., 0., 0., 0., 0., 1., 0.5, 0., 0.5],
            &[1, 4, 3],
        );
        let expected = t(
            &[
                0., 0., 0., 1., 0., 0., 1., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0.5, 0., 0.5, 0.,
            ],
            &[1, 4, 5],
        );
        assert_close(&circular_shift(&w, &s, &index), &expected, 0.0);
    }

    #[test]
    fn wider_shift_range_reaches_two_slots() {
        let index = shift_index(6, 2, Device::Cpu);
        let w = t(&[1., 0., 0., 0., 0., 0.], &[1, 1, 6]);
        let s = t(&[1., 0., 0., 0., 0.], &[1, 1, 5]); // offset −2
        assert_close(
            &circular_shift(&w, &s, &index),
            &t(&[0., 0., 0., 0., 1., 0.], &[1, 1, 6]),
            0.0,
        );
    }

    /// (0.5, 0.3, 0.2) with γ = 2 → (0.25, 0.09, 0.04)/0.38; any γ leaves a distribution.
    #[test]
    fn sharpening_matches_power_and_normalises() {
        let w = t(&[0.5, 0.3, 0.2, 0.5, 0.3, 0.2], &[1, 2, 3]);
        let gamma = t(&[2.0, 7.5], &[1, 2, 1]);
        let out = sharpen(&w, &gamma);
        let first = t(&[0.25 / 0.38, 0.09 / 0.38, 0.04 / 0.38], &[1, 3]);
        assert_close(&out.select(1, 0), &first, 1e-6);
        let sums = out.sum_dim_intlist(-1, false, Kind::Float);
        assert_close(
            &sums,
            &Tensor::ones([1, 2], (Kind::Float, Device::Cpu)),
            1e-6,
        );
        // Exact zeros stay finite (and get no weight against non-zero entries).
        let z = sharpen(&t(&[0.0, 1.0], &[1, 1, 2]), &t(&[3.0], &[1, 1, 1]));
        assert_close(&z, &t(&[0.0, 1.0], &[1, 1, 2]), 1e-12);
    }

    /// M = [[1, 2], [3, 4]], w = (1, 0.5), e = (1, 0.5), a = (10, 20):
    /// slot 0: (1, 2)∘(0, 0.5) + (10, 20) = (10, 21);
    /// slot 1: (3, 4)∘(0.5, 0.75) + (5, 10) = (6.5, 13).
    #[test]
    fn erase_add_write_matches_hand_computation() {
        let mem = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let w = t(&[1.0, 0.5], &[1, 1, 2]);
        let e = t(&[1.0, 0.5], &[1, 1, 2]);
        let a = t(&[10., 20.], &[1, 1, 2]);
        assert_close(
            &write(&mem, &w, &e, &a),
            &t(&[10., 21., 6.5, 13.], &[1, 2, 2]),
            1e-6,
        );
    }

    /// Two write heads: erasures multiply, adds sum. Head 0 erases slot 0 fully, head 1 half of
    /// slot 0; head 0 adds (1, 1) to slot 0, head 1 adds (2, 2) to slot 1.
    #[test]
    fn two_write_heads_multiply_erasures_and_sum_adds() {
        let mem = t(&[4., 4., 4., 4.], &[1, 2, 2]);
        let w = t(&[1., 0., 1., 1.], &[1, 2, 2]);
        let e = t(&[1., 0., 0.5, 0.5], &[1, 2, 2]);
        let a = t(&[1., 1., 0., 0.], &[1, 2, 2]);
        // slot 0: 4·(0, 1)·(0.5, 0.5) + (1, 1) + (0, 0) = (1, 3); slot 1: 4·(0.5, 0.5) + 0 = (2, 2).
        assert_close(
            &write(&mem, &w, &e, &a),
            &t(&[1., 3., 2., 2.], &[1, 2, 2]),
            1e-6,
        );
    }

    #[test]
    fn read_is_weighted_sum_of_slots() {
        let mem = t(&[1., 2., 3., 4.], &[1, 2, 2]);
        let w = t(&[0.25, 0.75], &[1, 1, 2]);
        assert_close(&read(&mem, &w), &t(&[2.5, 3.5], &[1, 1, 2]), 1e-6);
    }
}
