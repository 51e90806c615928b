// Fused CPU recurrence of the GRU (architectures/src/rnn.rs), a LibTorch autograd function with a
// hand-derived backward pass.
//
// Why: libtorch's CPU `gru` has no oneDNN path (its `lstm` has one, and rnn.rs keeps using it) and
// runs each time step as ~8 small autograd ops; the backward replays ~15 more per step, plus one
// [3H, B]×[B, H] GEMM per step for the recurrent weight gradient. Here the input projection
// x·W_ihᵀ + b_ih stays a normal autograd op over all steps (rnn.rs), and one function runs the
// recurrence:
//   forward, per step:  gh = b_hh + h·W_hhᵀ (one GEMM), the gate arithmetic in plain loops, the
//                       sigmoid/tanh through ATen's vectorised kernels on the step's slice;
//   backward, per step: the gate gradients in one plain loop (no transcendentals: the saved
//                       activations give σ' = σ(1−σ), tanh' = 1−tanh²) and one GEMM for dh_{t−1};
//   after the loop:     dW_hh and db_hh from all steps at once (one GEMM, one sum).
// Layouts are batch-first and contiguous: gi [B, T, 3H], hs [B, T, H]. Gate order is PyTorch's
// (r, z, n), so the weights are nn.GRU's. Equations (⊙ elementwise, a = gi_t + gh_t):
//   r = σ(a_r), z = σ(a_z), n = tanh(gi_n + r⊙gh_n), h_t = n + z⊙(h_{t−1} − n)
//
// The loops are sequential and the GEMMs are MKL's, so results are deterministic for a given
// thread count, like every other op of the step. C ABI below; errors as in ffi_guard.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ffi_guard.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Sizes of one recurrence call: batch, steps, hidden units.
struct Dims {
  int64_t b, t, h;
  explicit Dims(const Tensor& gi, const Tensor& h0) : b(gi.size(0)), t(gi.size(1)), h(h0.size(1)) {}
};

// h_{t−1} of every step: [h0, h_0 … h_{T−2}] as [B, T, H].
Tensor previous_states(const Tensor& h0, const Tensor& hs) {
  return at::cat({h0.unsqueeze(1), hs.narrow(1, 0, hs.size(1) - 1)}, 1);
}

// dW_hh = Σ_t dghᵀ·h_{t−1} and db_hh = Σ_t dgh over all steps at once.
variable_list weight_grads(const Tensor& dgh, const Tensor& h_prev) {
  const auto g = dgh.size(2);
  const auto flat = dgh.reshape({-1, g});
  return {flat.t().mm(h_prev.reshape({-1, h_prev.size(2)})), flat.sum(0)};
}

struct GruRecurrence : public torch::autograd::Function<GruRecurrence> {
  // gi [B, T, 3H] (input projection with b_ih), h0 [B, H], w_hh [3H, H], b_hh [3H] → hs [B, T, H]
  static Tensor forward(AutogradContext* ctx, const Tensor& gi_in, const Tensor& h0_in, const Tensor& w_hh, const Tensor& b_hh) {
    const auto gi = gi_in.contiguous();
    const auto h0 = h0_in.contiguous();
    const Dims d(gi, h0);
    const auto opts = gi.options();
    auto hs = at::empty({d.b, d.t, d.h}, opts);
    auto gates = at::empty({d.b, d.t, 3 * d.h}, opts);  // r, z, n after their nonlinearities
    auto ghn = at::empty({d.b, d.t, d.h}, opts);        // gh_n = (b_hh + h·W_hhᵀ)_n, for dr
    auto gh = at::empty({d.b, 3 * d.h}, opts);
    const auto w_t = w_hh.t();
    AT_DISPATCH_FLOATING_TYPES(gi.scalar_type(), "membench_gru_forward", [&] {
      const int64_t H = d.h, G = 3 * d.h, T = d.t;
      for (int64_t t = 0; t < T; ++t) {
        const auto h_prev = t == 0 ? h0 : hs.select(1, t - 1);
        at::addmm_out(gh, b_hh, h_prev, w_t);
        const scalar_t* gi_p = gi.data_ptr<scalar_t>() + t * G;
        const scalar_t* gh_p = gh.data_ptr<scalar_t>();
        scalar_t* g_p = gates.data_ptr<scalar_t>() + t * G;
        scalar_t* ghn_p = ghn.data_ptr<scalar_t>() + t * H;
        for (int64_t b = 0; b < d.b; ++b) {
          const scalar_t* x = gi_p + b * T * G;
          const scalar_t* y = gh_p + b * G;
          scalar_t* a = g_p + b * T * G;
          for (int64_t j = 0; j < 2 * H; ++j) a[j] = x[j] + y[j];
        }
        const auto step = gates.select(1, t);
        step.narrow(1, 0, 2 * H).sigmoid_();
        for (int64_t b = 0; b < d.b; ++b) {
          const scalar_t* x = gi_p + b * T * G + 2 * H;
          const scalar_t* y = gh_p + b * G + 2 * H;
          scalar_t* a = g_p + b * T * G;
          scalar_t* keep = ghn_p + b * T * H;
          for (int64_t j = 0; j < H; ++j) {
            keep[j] = y[j];
            a[2 * H + j] = x[j] + a[j] * y[j];
          }
        }
        step.narrow(1, 2 * H, H).tanh_();
        const scalar_t* hp = h_prev.data_ptr<scalar_t>();
        const int64_t hp_stride = t == 0 ? H : T * H;
        scalar_t* out = hs.data_ptr<scalar_t>() + t * H;
        for (int64_t b = 0; b < d.b; ++b) {
          const scalar_t* a = g_p + b * T * G;
          const scalar_t* p = hp + b * hp_stride;
          scalar_t* o = out + b * T * H;
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t z = a[H + j], n = a[2 * H + j];
            o[j] = n + z * (p[j] - n);
          }
        }
      }
    });
    ctx->save_for_backward({h0, w_hh, hs, gates, ghn});
    return hs;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &h0 = saved[0], &w_hh = saved[1], &hs = saved[2], &gates = saved[3], &ghn = saved[4];
    const int64_t B = hs.size(0), T = hs.size(1), H = hs.size(2), G = 3 * H;
    const auto opts = hs.options();
    const auto dhs = grad_out[0].defined() ? grad_out[0].contiguous() : at::zeros_like(hs);
    auto dgi = at::empty({B, T, G}, opts);
    auto dgh = at::empty({B, T, G}, opts);
    auto dh = at::zeros({B, H}, opts);
    auto direct = at::empty({B, H}, opts);
    const auto h_prev = previous_states(h0, hs);
    AT_DISPATCH_FLOATING_TYPES(hs.scalar_type(), "membench_gru_backward", [&] {
      for (int64_t t = T - 1; t >= 0; --t) {
        const scalar_t* dh_p = dh.data_ptr<scalar_t>();
        scalar_t* dir_p = direct.data_ptr<scalar_t>();
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = b * T + t;
          const scalar_t* a = gates.data_ptr<scalar_t>() + row * G;
          const scalar_t* keep = ghn.data_ptr<scalar_t>() + row * H;
          const scalar_t* p = h_prev.data_ptr<scalar_t>() + row * H;
          const scalar_t* up = dhs.data_ptr<scalar_t>() + row * H;
          scalar_t* di = dgi.data_ptr<scalar_t>() + row * G;
          scalar_t* dg = dgh.data_ptr<scalar_t>() + row * G;
          for (int64_t j = 0; j < H; ++j) {
            const scalar_t r = a[j], z = a[H + j], n = a[2 * H + j];
            const scalar_t g = up[j] + dh_p[b * H + j];
            const scalar_t da_n = g * (1 - z) * (1 - n * n);
            const scalar_t da_z = g * (p[j] - n) * z * (1 - z);
            const scalar_t da_r = da_n * keep[j] * r * (1 - r);
            di[j] = da_r;
            di[H + j] = da_z;
            di[2 * H + j] = da_n;
            dg[j] = da_r;
            dg[H + j] = da_z;
            dg[2 * H + j] = da_n * r;
            dir_p[b * H + j] = g * z;
          }
        }
        at::addmm_out(dh, direct, dgh.select(1, t), w_hh);
      }
    });
    const auto w = weight_grads(dgh, h_prev);
    return {dgi, dh, w[0], w[1]};
  }
};

}  // namespace

extern "C" {

// The message of the last failed call of any kernel of this crate on this thread.
const char* membench_kernel_error() { return membench::last_error.c_str(); }

// New tensor hs [B, T, H], or null on error. Arguments are borrowed at::Tensor pointers (tch's C_tensor).
Tensor* membench_gru_recurrence(const Tensor* gi, const Tensor* h0, const Tensor* w_hh, const Tensor* b_hh) {
  return membench::guarded([&] { return GruRecurrence::apply(*gi, *h0, *w_hh, *b_hh); });
}
}
