// Products on the CPU through oneDNN's matmul (architectures/src/dense.rs routes to them), as
// LibTorch autograd functions whose forward and both backward GEMMs go to oneDNN:
// x·Wᵀ for dense layers (dX = dY·W, dW = dYᵀ·X; dense.rs adds the bias) and batched a·b
// (dA = G·bᵀ, dB = aᵀ·G).
//
// Why: libtorch sends float32 `linear`/`addmm` on the CPU to MKL, whose code path on AMD CPUs is
// AVX2 even where the core has AVX-512 (Zen 4/5); oneDNN, which libtorch also links, dispatches on
// the ISA and runs the same float32 GEMM at ~2.3× the throughput there (240 vs 104 GFLOP/s on one
// Zen 5 core, 1024³ and the Transformer's [4096, 128]×[128, 512] alike). On Intel CPUs both use
// AVX-512 and are on par. Full float32 arithmetic: no TF32/BF16 down-conversion is requested.
// The result differs from MKL's only in summation order (~1e-6 relative).
//
// `at::native::mkldnn_matmul(mat1, mat2, result, beta, alpha)` (result = beta·result +
// alpha·mat1·mat2) is the exported entry libtorch itself uses for oneDNN GEMMs; it takes row-major
// and transposed operands without copies. Its header is not installed with the wheel, hence the
// declaration below.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ffi_guard.h"

namespace at::native {
TORCH_API void mkldnn_matmul(const Tensor& mat1, const Tensor& mat2, const Tensor& result, float beta, float alpha);
}

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

namespace {

struct OnednnLinear : public torch::autograd::Function<OnednnLinear> {
  // x [M, K], w [N, K] → x·wᵀ [M, N] (a fresh tensor, not a view, so the caller may add the
  // bias in place).
  static Tensor forward(AutogradContext* ctx, const Tensor& x, const Tensor& w) {
    const auto x2 = x.contiguous();
    auto y = at::empty({x2.size(0), w.size(0)}, x.options());
    at::native::mkldnn_matmul(x2, w.t(), y, 0.0f, 1.0f);
    ctx->save_for_backward({x2, w});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &x2 = saved[0], &w = saved[1];
    const auto& dy = grad_out[0];
    const auto n = w.size(0), k = w.size(1);
    const auto dy2 = dy.contiguous();
    Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = at::empty({dy2.size(0), k}, dy.options());
      at::native::mkldnn_matmul(dy2, w, dx, 0.0f, 1.0f);
    }
    if (ctx->needs_input_grad(1)) {
      dw = at::empty({n, k}, dy.options());
      at::native::mkldnn_matmul(dy2.t(), x2, dw, 0.0f, 1.0f);
    }
    return {dx, dw};
  }
};

struct OnednnBmm : public torch::autograd::Function<OnednnBmm> {
  // a [B, M, K], b [B, K, N] → a·b [B, M, N]. Operands may be transposed views in their last two
  // dimensions (oneDNN reads them as they are); anything else is made contiguous.
  static Tensor forward(AutogradContext* ctx, const Tensor& a, const Tensor& b) {
    auto y = at::empty({a.size(0), a.size(1), b.size(2)}, a.options());
    at::native::mkldnn_matmul(a, b, y, 0.0f, 1.0f);
    ctx->save_for_backward({a, b});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto saved = ctx->get_saved_variables();
    const auto &a = saved[0], &b = saved[1];
    const auto g = grad_out[0].contiguous();
    Tensor da, db;
    if (ctx->needs_input_grad(0)) {
      da = at::empty(a.sizes(), g.options());
      at::native::mkldnn_matmul(g, b.transpose(1, 2), da, 0.0f, 1.0f);
    }
    if (ctx->needs_input_grad(1)) {
      db = at::empty(b.sizes(), g.options());
      at::native::mkldnn_matmul(a.transpose(1, 2), g, db, 0.0f, 1.0f);
    }
    return {da, db};
  }
};

}  // namespace

extern "C" {

// New tensor a·b (batched), or null on error (see ffi_guard.h).
Tensor* membench_onednn_bmm(const Tensor* a, const Tensor* b) {
  return membench::guarded([&] { return OnednnBmm::apply(*a, *b); });
}


// New tensor x·wᵀ, or null on error (see ffi_guard.h). Arguments are borrowed at::Tensor pointers
// (tch's C_tensor).
Tensor* membench_onednn_matmul_t(const Tensor* x, const Tensor* w) {
  return membench::guarded([&] { return OnednnLinear::apply(*x, *w); });
}
}
