// Gated linear attention's recurrence on the CPU (architectures/src/gla.rs, `scan: fused`), one
// LibTorch autograd function with a hand-derived backward pass. Per example and head, with q_t,
// k_t, α_t ∈ R^K (α_t = e^{log α_t}), v_t ∈ R^V and the state S ∈ R^{K×V}:
//
//   S_t[d] = α_t[d]·S_{t−1}[d] + k_t[d]·v_t,   o_t = Σ_d q_t[d]·S_t[d],   S_{−1} = 0,
//
// S_t[d] being row d (V values). Backward, with G_t = ∂L/∂S_t:
//
//   G_t[d]       = q_t[d]·do_t + α_{t+1}[d]·G_{t+1}[d]
//   dq_t[d]      = S_t[d]·do_t         dk_t[d] = G_t[d]·v_t        dv_t = Σ_d k_t[d]·G_t[d]
//   dlog α_t[d]  = α_t[d]·(G_t[d]·S_{t−1}[d])
//
// Why: the chunked form (gla.rs `forward_chunked`) is many small tensor ops per chunk and keeps
// their results for autograd; at Zoology's MQAR size it made GLA the slowest attention-like
// family per step. Here the forward is one pass that keeps its inputs and α, and the backward
// recomputes one example's S_t (T·K·V values) before walking back through time.
//
// Layout: q, k, log α [B, H, T, K] and v [B, H, T, V], contiguous; the inner loops run over the V
// values of one state row, so they vectorise. The B·H (example, head) pairs are split over
// LibTorch's intra-op threads, each computed by one thread in a fixed order, and the file is
// compiled for the baseline instruction set (torch-link.rs passes no -march: no FMA, and the SIMD
// reductions' lane order is fixed at compile time), so the result is the same on every x86-64
// CPU and for every thread count. C ABI below; errors as in ffi_guard.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <vector>

#include "ffi_guard.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Sizes of one call: (example, head) pairs, steps, key and value widths.
struct Dims {
  int64_t bh, t, k, v;
  Dims(const Tensor& q, const Tensor& v) : bh(q.size(0) * q.size(1)), t(q.size(2)), k(q.size(3)), v(v.size(3)) {}
};

// One pair's forward through time: o ([T][V]); `s` ([K][V]) is scratch.
template <typename scalar_t>
void scan_pair(const Dims& d, const scalar_t* q, const scalar_t* k, const scalar_t* v, const scalar_t* alpha,
               scalar_t* o, scalar_t* s) {
  const int64_t K = d.k, V = d.v;
  std::fill(s, s + K * V, scalar_t(0));
  for (int64_t t = 0; t < d.t; ++t) {
    const scalar_t *q_t = q + t * K, *k_t = k + t * K, *v_t = v + t * V, *a_t = alpha + t * K;
    scalar_t* o_t = o + t * V;
    std::fill(o_t, o_t + V, scalar_t(0));
    for (int64_t r = 0; r < K; ++r) {
      scalar_t* s_r = s + r * V;
      const scalar_t a = a_t[r], kr = k_t[r], qr = q_t[r];
      for (int64_t e = 0; e < V; ++e) {
        s_r[e] = s_r[e] * a + kr * v_t[e];
        o_t[e] += qr * s_r[e];
      }
    }
  }
}

// One pair's backward pass: recomputes every S_t into `ss` ([T][K][V], the forward's arithmetic,
// so the same values bit for bit), then walks back through time. Writes dq, dk, dlog α ([T][K])
// and dv ([T][V]). `zeros` is K·V zeros (S_{−1}); `g` ([K][V]) is scratch.
template <typename scalar_t>
void backward_pair(const Dims& d, const scalar_t* q, const scalar_t* k, const scalar_t* v, const scalar_t* alpha,
                   const scalar_t* dout, scalar_t* dq, scalar_t* dk, scalar_t* dv, scalar_t* dla, scalar_t* ss,
                   const scalar_t* zeros, scalar_t* g) {
  const int64_t K = d.k, V = d.v, KV = K * V;
  for (int64_t t = 0; t < d.t; ++t) {
    const scalar_t *k_t = k + t * K, *v_t = v + t * V, *a_t = alpha + t * K;
    const scalar_t* prev = t > 0 ? ss + (t - 1) * KV : zeros;
    scalar_t* s_t = ss + t * KV;
    for (int64_t r = 0; r < K; ++r) {
      const scalar_t a = a_t[r], kr = k_t[r];
      const scalar_t* p_r = prev + r * V;
      scalar_t* s_r = s_t + r * V;
      for (int64_t e = 0; e < V; ++e) s_r[e] = p_r[e] * a + kr * v_t[e];
    }
  }
  std::fill(g, g + KV, scalar_t(0));  // α_{t+1}·G_{t+1}: zero after the last step
  for (int64_t t = d.t - 1; t >= 0; --t) {
    const scalar_t *q_t = q + t * K, *k_t = k + t * K, *v_t = v + t * V, *a_t = alpha + t * K;
    const scalar_t* do_t = dout + t * V;
    const scalar_t* s_t = ss + t * KV;
    const scalar_t* prev = t > 0 ? ss + (t - 1) * KV : zeros;
    scalar_t* dv_t = dv + t * V;
    std::fill(dv_t, dv_t + V, scalar_t(0));
    for (int64_t r = 0; r < K; ++r) {
      const scalar_t *s_r = s_t + r * V, *p_r = prev + r * V;
      scalar_t* g_r = g + r * V;
      const scalar_t a = a_t[r], kr = k_t[r], qr = q_t[r];
      scalar_t sq = 0, sk = 0, sa = 0;
#pragma omp simd reduction(+ : sq, sk, sa)
      for (int64_t e = 0; e < V; ++e) {
        const scalar_t gt = g_r[e] + qr * do_t[e];
        sq += s_r[e] * do_t[e];
        sk += gt * v_t[e];
        sa += gt * p_r[e];
        dv_t[e] += gt * kr;
        g_r[e] = gt * a;
      }
      dq[t * K + r] = sq;
      dk[t * K + r] = sk;
      dla[t * K + r] = sa * a;
    }
  }
}

struct GlaScan : public torch::autograd::Function<GlaScan> {
  // q, k, log α [B, H, T, K]; v [B, H, T, V] → o [B, H, T, V]
  static Tensor forward(AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                        const Tensor& la_in) {
    TORCH_CHECK(q_in.is_cpu() && k_in.is_cpu() && v_in.is_cpu() && la_in.is_cpu(),
                "gla scan: the fused kernel runs on the CPU only (use scan: chunked or recurrent on a GPU)");
    TORCH_CHECK(q_in.dim() == 4 && v_in.dim() == 4, "gla scan: q ", q_in.sizes(), " and v ", v_in.sizes(),
                " must be [B, H, T, width]");
    TORCH_CHECK(k_in.sizes() == q_in.sizes() && la_in.sizes() == q_in.sizes(), "gla scan: q ", q_in.sizes(), ", k ",
                k_in.sizes(), " and log α ", la_in.sizes(), " must agree");
    TORCH_CHECK(v_in.sizes().slice(0, 3) == q_in.sizes().slice(0, 3), "gla scan: v ", v_in.sizes(), " for q ",
                q_in.sizes());
    const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const auto alpha = la_in.exp().contiguous();  // ATen's vectorised exp, chosen at run time
    const Dims d(q, v);
    auto o = at::empty(v.sizes(), v.options());
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "membench_gla_scan_forward", [&] {
      const int64_t TK = d.t * d.k, TV = d.t * d.v;
      at::parallel_for(0, d.bh, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> s(d.k * d.v);
        for (int64_t p = begin; p < end; ++p) {
          scan_pair<scalar_t>(d, q.data_ptr<scalar_t>() + p * TK, k.data_ptr<scalar_t>() + p * TK,
                              v.data_ptr<scalar_t>() + p * TV, alpha.data_ptr<scalar_t>() + p * TK,
                              o.data_ptr<scalar_t>() + p * TV, s.data());
        }
      });
    });
    ctx->save_for_backward({q, k, v, alpha});
    return o;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &q = saved[0], &k = saved[1], &v = saved[2], &alpha = saved[3];
    const Dims d(q, v);
    const auto dout = grad_out[0].defined() ? grad_out[0].contiguous() : at::zeros_like(v);
    auto dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v), dla = at::empty_like(q);
    AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "membench_gla_scan_backward", [&] {
      const int64_t TK = d.t * d.k, TV = d.t * d.v, KV = d.k * d.v;
      at::parallel_for(0, d.bh, 1, [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> ss(d.t * KV), zeros(KV), g(KV);
        for (int64_t p = begin; p < end; ++p) {
          backward_pair<scalar_t>(d, q.data_ptr<scalar_t>() + p * TK, k.data_ptr<scalar_t>() + p * TK,
                                  v.data_ptr<scalar_t>() + p * TV, alpha.data_ptr<scalar_t>() + p * TK,
                                  dout.data_ptr<scalar_t>() + p * TV, dq.data_ptr<scalar_t>() + p * TK,
                                  dk.data_ptr<scalar_t>() + p * TK, dv.data_ptr<scalar_t>() + p * TV,
                                  dla.data_ptr<scalar_t>() + p * TK, ss.data(), zeros.data(), g.data());
        }
      });
    });
    return {dq, dk, dv, dla};
  }
};

}  // namespace

extern "C" {

// New tensor o [B, H, T, V], or null on error. Tensor arguments are borrowed at::Tensor pointers
// (tch's C_tensor).
Tensor* membench_gla_scan(const Tensor* q, const Tensor* k, const Tensor* v, const Tensor* log_alpha) {
  return membench::guarded([&] { return GlaScan::apply(*q, *k, *v, *log_alpha); });
}
}
