// Mamba's selective scan on the CPU (architectures/src/mamba.rs, `scan: fused`), one LibTorch
// autograd function with a hand-derived backward pass. Per example b, channel e and state n, with
// Δ = dt[b,t,e], A[e,n] ≤ 0, and the per-step log-decay floored as in mamba.rs:
//
//   λ_t = max(Δ_t·A, −floor),   u_t = Δ_t·x_t,
//   h_t[n] = e^{λ_t}·h_{t−1}[n] + u_t·B_t[n],   y_t = Σ_n h_t[n]·C_t[n],   h_{−1} = 0.
//
// Why: as tensor ops (mamba.rs `forward_recurrent`) each step is a handful of ops on [B, E, N]
// and autograd keeps every step's h; at Zoology's MQAR size (B 64, T 64, E 128, N 16, 2 layers)
// those ~2,000 small ops per training step were 90 % of its 0.65 s. Here the forward is one pass
// that keeps nothing but its inputs, and the backward recomputes one example's h_t and e^{λ_t}
// (T·E·N values, ~0.5 MB at that size) before walking back through time:
//
//   g_t[n]   = ∂L/∂h_t[n] = dy_t·C_t[n] + e^{λ_{t+1}}·g_{t+1}[n]
//   dC_t[n]  = Σ_e dy_t·h_t[n]         dB_t[n] = Σ_e g_t[n]·u_t       du_t = Σ_n g_t[n]·B_t[n]
//   dλ_t[n]  = g_t[n]·h_{t−1}[n]·e^{λ_t}  where Δ_t·A ≥ −floor (clamp_min's mask), else 0
//   dΔ_t     = du_t·x_t + Σ_n dλ_t[n]·A[n]     dx_t = du_t·Δ_t     dA[n] = Σ_{b,t} dλ_t[n]·Δ_t
//
// Layout: inputs are batch-first and contiguous (dt, x [B, T, E]; B, C [B, T, N]; A [E, N]); the
// inner loops run over the E channels of one (t, n), contiguous in a per-example [N][E] scratch,
// so they vectorise. Examples are split over LibTorch's intra-op threads; each is computed by one
// thread in a fixed order, dA is summed over examples after the loop, and the file is compiled
// for the baseline instruction set (torch-link.rs passes no -march: no FMA, and the SIMD
// reductions' lane order is fixed at compile time), so the result is the same on every x86-64
// CPU for a given thread count. C ABI below; errors as in ffi_guard.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "ffi_guard.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Sizes of one call: examples, steps, channels, states per channel.
struct Dims {
  int64_t b, t, e, n;
  Dims(const Tensor& dt, const Tensor& a) : b(dt.size(0)), t(dt.size(1)), e(dt.size(2)), n(a.size(1)) {}
};

// e^{λ_t} of every step of one example into `decay` ([T][N][E]), the exponentials taken by ATen's
// vectorised exp over the whole example at once (its kernel is chosen at run time for the CPU's
// vector ISA, as for every other exp of the step).
template <typename scalar_t>
void decays(const Dims& d, scalar_t floor, const scalar_t* dt, const scalar_t* a_t, scalar_t* decay) {
  const int64_t E = d.e, N = d.n;
  for (int64_t t = 0; t < d.t; ++t) {
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t *dt_t = dt + t * E, *a_n = a_t + n * E;
      scalar_t* l = decay + (t * N + n) * E;
      for (int64_t e = 0; e < E; ++e) l[e] = std::max(dt_t[e] * a_n[e], -floor);
    }
  }
  at::from_blob(decay, {d.t * N * E}, at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value)).exp_();
}

// One example's forward through time: y ([T][E]) only; `h` ([N][E]), `u` ([E]) and `decay`
// ([T][N][E]) are scratch.
template <typename scalar_t>
void scan_example(const Dims& d, scalar_t floor, const scalar_t* dt, const scalar_t* x, const scalar_t* a_t,
                  const scalar_t* bm, const scalar_t* cm, scalar_t* y, scalar_t* h, scalar_t* u, scalar_t* decay) {
  const int64_t E = d.e, N = d.n;
  decays<scalar_t>(d, floor, dt, a_t, decay);
  std::fill(h, h + N * E, scalar_t(0));
  for (int64_t t = 0; t < d.t; ++t) {
    const scalar_t *dt_t = dt + t * E, *x_t = x + t * E, *b_t = bm + t * N, *c_t = cm + t * N;
    scalar_t* y_t = y + t * E;
    for (int64_t e = 0; e < E; ++e) {
      u[e] = dt_t[e] * x_t[e];
      y_t[e] = 0;
    }
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* dec_n = decay + (t * N + n) * E;
      scalar_t* h_n = h + n * E;
      const scalar_t bn = b_t[n], cn = c_t[n];
      for (int64_t e = 0; e < E; ++e) {
        h_n[e] = h_n[e] * dec_n[e] + u[e] * bn;
        y_t[e] += h_n[e] * cn;
      }
    }
  }
}

// The backward pass's recompute of one example: e^{λ_t} into `decay` and every h_t into `hs` (both
// [T][N][E]), scanned in place in `hs` with the forward's arithmetic (same values, bit for bit); no
// y. `h0` is N·E zeros for h_{−1}; `u` ([E]) is scratch.
template <typename scalar_t>
void states_example(const Dims& d, scalar_t floor, const scalar_t* dt, const scalar_t* x, const scalar_t* a_t,
                    const scalar_t* bm, scalar_t* hs, const scalar_t* h0, scalar_t* u, scalar_t* decay) {
  const int64_t E = d.e, N = d.n;
  decays<scalar_t>(d, floor, dt, a_t, decay);
  for (int64_t t = 0; t < d.t; ++t) {
    const scalar_t *dt_t = dt + t * E, *x_t = x + t * E, *b_t = bm + t * N;
    for (int64_t e = 0; e < E; ++e) u[e] = dt_t[e] * x_t[e];
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* dec_n = decay + (t * N + n) * E;
      const scalar_t* prev = t > 0 ? hs + ((t - 1) * N + n) * E : h0;
      scalar_t* h_n = hs + (t * N + n) * E;
      const scalar_t bn = b_t[n];
      for (int64_t e = 0; e < E; ++e) h_n[e] = prev[e] * dec_n[e] + u[e] * bn;
    }
  }
}

// One example's backward pass: recomputes h_t and e^{λ_t} (`hs`, `decay`: [T][N][E] scratch, `h0`:
// N·E zeros for h_{−1}), then walks back through time. Writes dΔ, dx ([T][E]), dB, dC ([T][N]) and
// this example's share of dA ([N][E]). `u`, `g`, `du`, `dd` are scratch.
template <typename scalar_t>
void backward_example(const Dims& d, scalar_t floor, const scalar_t* dt, const scalar_t* x, const scalar_t* a_t,
                      const scalar_t* bm, const scalar_t* cm, const scalar_t* dy, scalar_t* ddt, scalar_t* dx,
                      scalar_t* dbm, scalar_t* dcm, scalar_t* da, scalar_t* hs, scalar_t* decay, const scalar_t* h0,
                      scalar_t* u, scalar_t* g, scalar_t* du, scalar_t* dd) {
  const int64_t E = d.e, N = d.n;
  states_example<scalar_t>(d, floor, dt, x, a_t, bm, hs, h0, u, decay);
  std::fill(g, g + N * E, scalar_t(0));  // e^{λ_{t+1}}·g_{t+1}: zero after the last step
  std::fill(da, da + N * E, scalar_t(0));
  for (int64_t t = d.t - 1; t >= 0; --t) {
    const scalar_t *dt_t = dt + t * E, *x_t = x + t * E, *dy_t = dy + t * E;
    for (int64_t e = 0; e < E; ++e) {
      u[e] = dt_t[e] * x_t[e];
      du[e] = 0;
      dd[e] = 0;
    }
    for (int64_t n = 0; n < N; ++n) {
      const scalar_t* h_n = hs + (t * N + n) * E;
      const scalar_t* prev = t > 0 ? hs + ((t - 1) * N + n) * E : h0;
      const scalar_t* dec_n = decay + (t * N + n) * E;
      const scalar_t *a_n = a_t + n * E, bn = bm[t * N + n], cn = cm[t * N + n];
      scalar_t *g_n = g + n * E, *da_n = da + n * E;
      scalar_t dc = 0, db = 0;
#pragma omp simd reduction(+ : dc, db)
      for (int64_t e = 0; e < E; ++e) {
        const scalar_t gt = g_n[e] + dy_t[e] * cn;
        dc += dy_t[e] * h_n[e];
        db += gt * u[e];
        du[e] += gt * bn;
        const scalar_t dl = dt_t[e] * a_n[e] >= -floor ? gt * prev[e] * dec_n[e] : scalar_t(0);
        dd[e] += dl * a_n[e];
        da_n[e] += dl * dt_t[e];
        g_n[e] = gt * dec_n[e];
      }
      dcm[t * N + n] = dc;
      dbm[t * N + n] = db;
    }
    for (int64_t e = 0; e < E; ++e) {
      ddt[t * E + e] = dd[e] + du[e] * x_t[e];
      dx[t * E + e] = du[e] * dt_t[e];
    }
  }
}

struct SelectiveScan : public torch::autograd::Function<SelectiveScan> {
  // dt, x [B, T, E]; a [E, N]; bm, cm [B, T, N] → y [B, T, E]
  static Tensor forward(AutogradContext* ctx, const Tensor& dt_in, const Tensor& x_in, const Tensor& a_in,
                        const Tensor& bm_in, const Tensor& cm_in, double floor) {
    const auto dt = dt_in.contiguous(), x = x_in.contiguous(), bm = bm_in.contiguous(), cm = cm_in.contiguous();
    const auto a_t = a_in.t().contiguous();  // [N, E]
    const Dims d(dt, a_in);
    TORCH_CHECK(dt.is_cpu() && x.is_cpu() && a_in.is_cpu() && bm.is_cpu() && cm.is_cpu(),
                "selective scan: the fused kernel runs on the CPU only (use scan: recurrent or chunked on a GPU)");
    TORCH_CHECK(x.sizes() == dt.sizes(), "selective scan: x ", x.sizes(), " vs dt ", dt.sizes());
    TORCH_CHECK(a_in.dim() == 2 && a_in.size(0) == d.e, "selective scan: A ", a_in.sizes(), " for E = ", d.e);
    TORCH_CHECK(bm.dim() == 3 && bm.size(0) == d.b && bm.size(1) == d.t && bm.size(2) == d.n && bm.sizes() == cm.sizes(),
                "selective scan: B ", bm.sizes(), " and C ", cm.sizes(), " for [", d.b, ", ", d.t, ", ", d.n, "]");
    auto y = at::empty({d.b, d.t, d.e}, dt.options());
    AT_DISPATCH_FLOATING_TYPES(dt.scalar_type(), "membench_selective_scan_forward", [&] {
      const int64_t TE = d.t * d.e, TN = d.t * d.n;
      at::parallel_for(0, d.b, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> h(d.n * d.e), u(d.e), decay(d.t * d.n * d.e);
        for (int64_t b = begin; b < end; ++b) {
          scan_example<scalar_t>(d, scalar_t(floor), dt.data_ptr<scalar_t>() + b * TE, x.data_ptr<scalar_t>() + b * TE,
                                 a_t.data_ptr<scalar_t>(), bm.data_ptr<scalar_t>() + b * TN,
                                 cm.data_ptr<scalar_t>() + b * TN, y.data_ptr<scalar_t>() + b * TE, h.data(), u.data(),
                                 decay.data());
        }
      });
    });
    ctx->save_for_backward({dt, x, a_t, bm, cm});
    ctx->saved_data["floor"] = floor;
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &dt = saved[0], &x = saved[1], &a_t = saved[2], &bm = saved[3], &cm = saved[4];
    const double floor = ctx->saved_data["floor"].toDouble();
    const Dims d(dt, a_t.t());
    const auto dy = grad_out[0].defined() ? grad_out[0].contiguous() : at::zeros_like(dt);
    auto ddt = at::empty_like(dt), dx = at::empty_like(x), dbm = at::empty_like(bm), dcm = at::empty_like(cm);
    auto da_each = at::empty({d.b, d.n, d.e}, dt.options());  // dA per example, [N][E]
    AT_DISPATCH_FLOATING_TYPES(dt.scalar_type(), "membench_selective_scan_backward", [&] {
      const int64_t E = d.e, N = d.n, T = d.t, TE = T * E, TN = T * N, NE = N * E;
      at::parallel_for(0, d.b, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> hs(T * NE), decay(T * NE), h0(NE), u(E), g(NE), du(E), dd(E);
        for (int64_t b = begin; b < end; ++b) {
          backward_example<scalar_t>(
              d, scalar_t(floor), dt.data_ptr<scalar_t>() + b * TE, x.data_ptr<scalar_t>() + b * TE,
              a_t.data_ptr<scalar_t>(), bm.data_ptr<scalar_t>() + b * TN, cm.data_ptr<scalar_t>() + b * TN,
              dy.data_ptr<scalar_t>() + b * TE, ddt.data_ptr<scalar_t>() + b * TE, dx.data_ptr<scalar_t>() + b * TE,
              dbm.data_ptr<scalar_t>() + b * TN, dcm.data_ptr<scalar_t>() + b * TN, da_each.data_ptr<scalar_t>() + b * NE,
              hs.data(), decay.data(), h0.data(), u.data(), g.data(), du.data(), dd.data());
        }
      });
    });
    const auto da = da_each.sum(0).t();  // [E, N]
    return {ddt, dx, da, dbm, dcm, Tensor()};
  }
};

}  // namespace

extern "C" {

// New tensor y [B, T, E], or null on error. Tensor arguments are borrowed at::Tensor pointers
// (tch's C_tensor); `floor` is the per-step log-decay floor (mamba.rs LOG_DECAY_FLOOR).
Tensor* membench_selective_scan(const Tensor* dt, const Tensor* x, const Tensor* a, const Tensor* bm, const Tensor* cm,
                                double floor) {
  return membench::guarded([&] { return SelectiveScan::apply(*dt, *x, *a, *bm, *cm, floor); });
}
}
