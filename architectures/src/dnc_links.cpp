// The DNC's temporal links on the CPU (architectures/src/dnc.rs `link_step`): the link update and
// the forward/backward read weightings it feeds, as one LibTorch autograd function with a
// hand-derived backward pass. For each example, with write weighting w, precedence p, previous
// read weightings v_r (r = 1..R) and i ≠ j:
//
//   L'[i,j] = (1 − w[i] − w[j])·L[i,j] + w[i]·p[j],   L'[i,i] = 0
//   f_r[i]  = Σ_j L'[i,j]·v_r[j]          (forward weighting,  L'·v_r)
//   b_r[j]  = Σ_i L'[i,j]·v_r[i]          (backward weighting, L'ᵀ·v_r)
//
// Why: written with tensor ops this is four [B, N, N] passes for the update (scale, product,
// outer product, diagonal mask), each an N²-sized tensor that autograd keeps, two batched
// matrix-vector products, and in the backward about eight more N² passes, two N²-sized outer
// products for the reads and the N²-sized sum of the link's three gradients. The link matrix is
// the DNC's only N²-sized state, so these passes were the largest part of its step. Here the
// forward is one pass over L, and the backward one pass over (G, L, L') with
//   Ĝ[i,j]  = G[i,j] + Σ_r (g_f,r[i]·v_r[j] + v_r[i]·g_b,r[j])      (total gradient of L')
//   dL[i,j] = Ĝ[i,j]·(1 − w[i] − w[j])
//   dw[i]   = Σ_j Ĝ[i,j]·(p[j] − L[i,j]) − Σ_j Ĝ[j,i]·L[j,i]
//   dp[j]   = Σ_i Ĝ[i,j]·w[i]
//   dv_r[j] = Σ_i g_f,r[i]·L'[i,j] + Σ_k g_b,r[k]·L'[j,k]
// with the diagonal excluded throughout. Examples are split over LibTorch's intra-op threads
// (`at::parallel_for`, the same OpenMP pool); each example is computed by one thread in a fixed
// order and each SIMD reduction has a lane order fixed at compile time, so the result is
// deterministic and the same for every thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>

#include <vector>

#include "ffi_guard.h"

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

// Sizes of one call: examples, memory slots, read heads.
struct Shape {
  int64_t batch, n, heads;
};

template <typename scalar_t>
void forward_pass(const Shape& s, const scalar_t* link, const scalar_t* prec, const scalar_t* w, const scalar_t* v,
                  scalar_t* out, scalar_t* fwd, scalar_t* bwd) {
  const int64_t N = s.n, R = s.heads;
  at::parallel_for(0, s.batch, 1, [&](int64_t b_begin, int64_t b_end) {
  for (int64_t b = b_begin; b < b_end; ++b) {
    const scalar_t *wb = w + b * N, *pb = prec + b * N, *vb = v + b * R * N;
    scalar_t *fb = fwd + b * R * N, *bb = bwd + b * R * N;
    for (int64_t k = 0; k < R * N; ++k) bb[k] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t* l = link + (b * N + i) * N;
      scalar_t* o = out + (b * N + i) * N;
      const scalar_t keep = 1 - wb[i], wi = wb[i];
      for (int64_t j = 0; j < N; ++j) o[j] = (keep - wb[j]) * l[j] + wi * pb[j];
      o[i] = 0;
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t* vr = vb + r * N;
        scalar_t* br = bb + r * N;
        const scalar_t vi = vr[i];
        scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < N; ++j) {
          dot += o[j] * vr[j];
          br[j] += o[j] * vi;
        }
        fb[r * N + i] = dot;
      }
    }
  }
  });
}

// Gradients of one call; dw, dp and dv arrive zeroed. `g` may be null (L' unused downstream).
template <typename scalar_t>
void backward_pass(const Shape& s, const scalar_t* link, const scalar_t* prec, const scalar_t* w, const scalar_t* v,
                   const scalar_t* out, const scalar_t* g, const scalar_t* gf, const scalar_t* gb, scalar_t* dlink,
                   scalar_t* dw, scalar_t* dp, scalar_t* dv) {
  const int64_t N = s.n, R = s.heads;
  at::parallel_for(0, s.batch, 1, [&](int64_t b_begin, int64_t b_end) {
  std::vector<scalar_t> column(N), total(N);  // −Σ_i Ĝ[i,j]·L[i,j]; the row Ĝ[i, ·]
  scalar_t *col = column.data(), *gt = total.data();
  for (int64_t b = b_begin; b < b_end; ++b) {
    const scalar_t *wb = w + b * N, *pb = prec + b * N, *vb = v + b * R * N;
    const scalar_t *gfb = gf + b * R * N, *gbb = gb + b * R * N;
    scalar_t *dwb = dw + b * N, *dpb = dp + b * N, *dvb = dv + b * R * N;
    for (int64_t j = 0; j < N; ++j) col[j] = 0;
    for (int64_t i = 0; i < N; ++i) {
      const scalar_t* l = link + (b * N + i) * N;
      const scalar_t* lp = out + (b * N + i) * N;
      scalar_t* dl = dlink + (b * N + i) * N;
      for (int64_t j = 0; j < N; ++j) gt[j] = g ? g[(b * N + i) * N + j] : scalar_t(0);
      for (int64_t r = 0; r < R; ++r) {
        const scalar_t *vr = vb + r * N, *gbr = gbb + r * N;
        const scalar_t gfi = gfb[r * N + i], vi = vr[i];
        scalar_t* dvr = dvb + r * N;
        scalar_t dot = 0;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < N; ++j) {
          gt[j] += gfi * vr[j] + vi * gbr[j];
          dvr[j] += gfi * lp[j];
          dot += gbr[j] * lp[j];
        }
        dvr[i] += dot;
      }
      gt[i] = 0;
      const scalar_t keep = 1 - wb[i], wi = wb[i];
      scalar_t row = 0;
#pragma omp simd reduction(+ : row)
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t gl = gt[j] * l[j];
        dl[j] = gt[j] * (keep - wb[j]);
        row += gt[j] * pb[j] - gl;
        col[j] -= gl;
        dpb[j] += gt[j] * wi;
      }
      dwb[i] += row;
    }
    for (int64_t j = 0; j < N; ++j) dwb[j] += col[j];
  }
  });
}

struct LinkStep : public torch::autograd::Function<LinkStep> {
  // link [B, N, N], precedence and write weighting [B, N], read weightings [B, R, N]
  //   → (link' [B, N, N], forward [B, R, N], backward [B, R, N])
  static variable_list forward(AutogradContext* ctx, const Tensor& link_in, const Tensor& prec_in, const Tensor& w_in,
                               const Tensor& v_in) {
    const auto link = link_in.contiguous(), prec = prec_in.contiguous(), w = w_in.contiguous(), v = v_in.contiguous();
    const Shape s{link.size(0), link.size(1), v.size(1)};
    auto out = at::empty_like(link);
    auto fwd = at::empty_like(v), bwd = at::empty_like(v);
    AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "membench_dnc_link_step", [&] {
      forward_pass<scalar_t>(s, link.data_ptr<scalar_t>(), prec.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                             v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), fwd.data_ptr<scalar_t>(),
                             bwd.data_ptr<scalar_t>());
    });
    // L' is saved as an output: it is the next step's L, so the two share storage.
    ctx->save_for_backward({link, prec, w, v, out});
    return {out, fwd, bwd};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &link = saved[0], &prec = saved[1], &w = saved[2], &v = saved[3], &out = saved[4];
    const Shape s{link.size(0), link.size(1), v.size(1)};
    const auto g = grad_out[0].defined() ? grad_out[0].contiguous() : Tensor();
    const auto gf = grad_out[1].defined() ? grad_out[1].contiguous() : at::zeros_like(v);
    const auto gb = grad_out[2].defined() ? grad_out[2].contiguous() : at::zeros_like(v);
    auto dlink = at::empty_like(link);
    auto dw = at::zeros_like(w), dp = at::zeros_like(prec), dv = at::zeros_like(v);
    AT_DISPATCH_FLOATING_TYPES(link.scalar_type(), "membench_dnc_link_step_backward", [&] {
      backward_pass<scalar_t>(s, link.data_ptr<scalar_t>(), prec.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                              v.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                              g.defined() ? g.data_ptr<scalar_t>() : nullptr, gf.data_ptr<scalar_t>(),
                              gb.data_ptr<scalar_t>(), dlink.data_ptr<scalar_t>(), dw.data_ptr<scalar_t>(),
                              dp.data_ptr<scalar_t>(), dv.data_ptr<scalar_t>());
    });
    return {dlink, dp, dw, dv};
  }
};

}  // namespace

extern "C" {

// New tensors link' [B, N, N], forward and backward weightings [B, R, N] in out[0..3]; 0 on
// success, 1 on error (see ffi_guard.h). Arguments are borrowed at::Tensor pointers (tch's C_tensor).
int membench_dnc_link_step(const Tensor* link, const Tensor* precedence, const Tensor* write_w, const Tensor* read_w,
                           Tensor** out) {
  return membench::guarded_many(out, 3, [&] { return LinkStep::apply(*link, *precedence, *write_w, *read_w); });
}
}
