// The DNC's temporal link update (architectures/src/dnc.rs `update_links`) as one LibTorch
// autograd function with a hand-derived backward pass, on the CPU:
//
//   L'[i,j] = (1 − w[i] − w[j])·L[i,j] + w[i]·p[j]   for i ≠ j,   L'[i,i] = 0
//
// Why: written with tensor ops this is four [B, N, N] passes forward (scale, product, outer
// product, diagonal mask), each allocating an N²-sized tensor that autograd keeps, and about
// eight backward (two products, two broadcast reductions, the outer product's two bmm's, masks);
// the link matrix is the DNC's only N²-sized state, so these passes were the largest part of its
// step. Here the forward is one pass, and the backward one pass over (G, L) that produces
//   dL[i,j] = G[i,j]·(1 − w[i] − w[j])
//   dw[i]   = Σ_j G[i,j]·(p[j] − L[i,j]) − Σ_j G[j,i]·L[j,i]
//   dp[j]   = Σ_i G[i,j]·w[i]
// with the diagonal excluded throughout (G is taken as 0 there). Loops are single-threaded and the
// one SIMD reduction has a lane order fixed at compile time, so the result is deterministic.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "ffi_guard.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// dL, dw and dp of one call (see the file's header); dw and dp arrive zeroed.
template <typename scalar_t>
void backward_pass(const Tensor& link, const Tensor& prec, const Tensor& w, const Tensor& g_all, Tensor& dlink, Tensor& dw, Tensor& dprec) {
  const int64_t B = link.size(0), N = link.size(1);
  std::vector<scalar_t> column(N);  // −Σ_i G[i,j]·L[i,j] for the current example
  scalar_t* col = column.data();
  for (int64_t b = 0; b < B; ++b) {
    const scalar_t* wb = w.data_ptr<scalar_t>() + b * N;
    const scalar_t* pb = prec.data_ptr<scalar_t>() + b * N;
    scalar_t* dwb = dw.data_ptr<scalar_t>() + b * N;
    scalar_t* dpb = dprec.data_ptr<scalar_t>() + b * N;
    for (int64_t j = 0; j < N; ++j) col[j] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t* l = link.data_ptr<scalar_t>() + (b * N + i) * N;
      const scalar_t* g = g_all.data_ptr<scalar_t>() + (b * N + i) * N;
      scalar_t* dl = dlink.data_ptr<scalar_t>() + (b * N + i) * N;
      const scalar_t keep = 1 - wb[i], wi = wb[i];
      scalar_t row = 0;
      // A SIMD reduction: its lane order is fixed by the compiled binary, so still deterministic.
#pragma omp simd reduction(+ : row)
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t gj = j == i ? scalar_t(0) : g[j];
        const scalar_t gl = gj * l[j];
        dl[j] = gj * (keep - wb[j]);
        row += gj * pb[j] - gl;
        col[j] -= gl;
        dpb[j] += gj * wi;
      }
      dwb[i] += row;
    }
    for (int64_t j = 0; j < N; ++j) dwb[j] += col[j];
  }
}

struct LinkUpdate : public torch::autograd::Function<LinkUpdate> {
  // link [B, N, N], precedence [B, N], write weighting [B, N] → link' [B, N, N]
  static Tensor forward(AutogradContext* ctx, const Tensor& link_in, const Tensor& prec_in, const Tensor& w_in) {
    const auto link = link_in.contiguous(), prec = prec_in.contiguous(), w = w_in.contiguous();
    const int64_t B = link.size(0), N = link.size(1);
    auto out = at::empty_like(link);
    AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "membench_dnc_links_forward", [&] {
      for (int64_t b = 0; b < B; ++b) {
        const scalar_t* wb = w.data_ptr<scalar_t>() + b * N;
        const scalar_t* pb = prec.data_ptr<scalar_t>() + b * N;
        for (int64_t i = 0; i < N; ++i) {
          const scalar_t* l = link.data_ptr<scalar_t>() + (b * N + i) * N;
          scalar_t* o = out.data_ptr<scalar_t>() + (b * N + i) * N;
          const scalar_t keep = 1 - wb[i], wi = wb[i];
          for (int64_t j = 0; j < N; ++j) o[j] = (keep - wb[j]) * l[j] + wi * pb[j];
          o[i] = 0;
        }
      }
    });
    ctx->save_for_backward({link, prec, w});
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &link = saved[0], &prec = saved[1], &w = saved[2];
    const auto g_all = grad_out[0].contiguous();
    const int64_t B = link.size(0), N = link.size(1);
    auto dlink = at::empty_like(link);
    auto dw = at::zeros_like(w);
    auto dprec = at::zeros_like(prec);
    AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "membench_dnc_links_backward", [&] {
      backward_pass<scalar_t>(link, prec, w, g_all, dlink, dw, dprec);
    });
    return {dlink, dprec, dw};
  }
};

}  // namespace

extern "C" {

// New tensor link' [B, N, N], or null on error (see ffi_guard.h). Arguments are borrowed
// at::Tensor pointers (tch's C_tensor).
Tensor* membench_dnc_link_update(const Tensor* link, const Tensor* precedence, const Tensor* write_w) {
  return membench::guarded([&] { return LinkUpdate::apply(*link, *precedence, *write_w); });
}
}
