// A model's core run as independent batch shards, one per LibTorch intra-op thread (CPU), with
// one autograd function around them. Used by lib.rs `Network` when a run has 2+ threads.
//
// Why: with T threads LibTorch splits every op over the T threads and joins them after it. The
// cores' ops are small (one LSTM time step is a 32×128 by 128×512 GEMM; NTM, DNC and MemN2N
// addressing ops are smaller still), so a step is thousands of fork/join barriers, and oneDNN's LSTM
// at 2 threads is barely faster than at 1 (2.70 against 3.01 ms forward + backward at B = 32,
// T = 40, H = 128). No core mixes examples (no batch statistics, no cross-example attention), so
// the batch is cut into T contiguous shards and each thread runs its shard's forward, and later its
// backward, alone, with single-threaded ops (ATen, oneDNN and MKL run serially inside a parallel
// region): one join per pass instead of one per op.
//
// Math: each example's output is that of the unsharded core (the same ops on fewer rows). A
// parameter's gradient is the sum of the shards' gradients, added in shard order, so a run is
// deterministic for a given thread count; it is not bit-identical to the unsharded core (the sum
// over examples is grouped differently), which is why one-thread runs never shard.
//
// How: forward gives each shard a detached slice of the input (a leaf that requires grad when the
// input does) and calls the core (a Rust callback) under grad mode, so each shard builds its own
// graph from the core's parameters; the function's output is the shards' outputs, concatenated.
// Backward runs torch::autograd::grad on each shard's graph with its slice of the output gradient,
// in parallel; input gradients are concatenated, parameter gradients summed in shard order. Without
// grad mode (evaluation) the shards only run forward. C ABI below; errors as in ffi_guard.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include "ffi_guard.h"

#include <algorithm>

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The core's forward on one shard: a new at::Tensor (tch's C_tensor), or null when it failed
// (the Rust side keeps the message). `core` is the caller's context, passed through; `x` is borrowed.
using CoreForward = Tensor* (*)(const void* core, const Tensor* x, int32_t train);

namespace {

// x [B, ...] cut along the batch into `shards` contiguous views, the first B mod shards of them
// one example longer. The output gradient is cut the same way in backward.
std::vector<Tensor> split_shards(const Tensor& x, int64_t shards) {
  const int64_t batch = x.size(0);
  std::vector<int64_t> sizes(shards, batch / shards);
  for (int64_t s = 0; s < batch % shards; ++s) sizes[s] += 1;
  return x.split_with_sizes(sizes, 0);
}

// f(s) for s in [0, shards), one shard per intra-op thread.
template <typename F>
void each_shard(int64_t shards, const F& f) {
  at::parallel_for(0, shards, 1, [&](int64_t begin, int64_t end) {
    for (int64_t s = begin; s < end; ++s) f(s);
  });
}

Tensor call_core(CoreForward fn, const void* core, const Tensor& x, bool train) {
  Tensor* out = fn(core, &x, train ? 1 : 0);
  TORCH_CHECK(out != nullptr, "the core's forward failed on a batch shard");
  Tensor y = std::move(*out);
  delete out;
  return y;
}

// Forward of every shard with grad mode `grad` (each worker thread has its own grad-mode flag).
std::vector<Tensor> run_shards(const std::vector<Tensor>& ins, CoreForward fn, const void* core, bool train,
                               bool grad) {
  std::vector<Tensor> outs(ins.size());
  each_shard(static_cast<int64_t>(ins.size()), [&](int64_t s) {
    at::AutoGradMode mode(grad);
    outs[s] = call_core(fn, core, ins[s], train);
  });
  return outs;
}

struct BatchShards : public torch::autograd::Function<BatchShards> {
  static Tensor forward(AutogradContext* ctx, const Tensor& x, at::TensorList params, int64_t shards,
                        CoreForward fn, const void* core, bool train) {
    const bool x_grad = x.requires_grad();
    std::vector<Tensor> ins;
    for (const Tensor& part : split_shards(x, shards)) ins.push_back(part.detach().requires_grad_(x_grad));
    std::vector<Tensor> outs = run_shards(ins, fn, core, train, /*grad=*/true);
    std::vector<Tensor> detached;
    for (const Tensor& y : outs) detached.push_back(y.detach());
    ctx->saved_data["ins"] = ins;
    ctx->saved_data["outs"] = outs;
    ctx->saved_data["params"] = params.vec();
    ctx->saved_data["x_grad"] = x_grad;
    return at::cat(detached, 0);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_out) {
    const auto ins = ctx->saved_data["ins"].toTensorVector();
    const auto outs = ctx->saved_data["outs"].toTensorVector();
    const auto params = ctx->saved_data["params"].toTensorVector();
    const bool x_grad = ctx->saved_data["x_grad"].toBool();
    const int64_t shards = static_cast<int64_t>(ins.size());
    // One result per forward argument: x, each parameter, then shards, fn, core, train.
    variable_list result(1 + params.size() + 4);
    const Tensor& g = grad_out[0];
    if (!g.defined()) return result;

    const std::vector<Tensor> gs = split_shards(g, shards);
    std::vector<variable_list> grads(shards);
    each_shard(shards, [&](int64_t s) {
      variable_list inputs;
      if (x_grad) inputs.push_back(ins[s]);
      inputs.insert(inputs.end(), params.begin(), params.end());
      grads[s] = torch::autograd::grad({outs[s]}, inputs, {gs[s]},
                                       /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    });

    const size_t first_param = x_grad ? 1 : 0;
    if (x_grad) {
      std::vector<Tensor> dx;
      for (const auto& gs : grads) dx.push_back(gs[0]);
      result[0] = at::cat(dx, 0);
    }
    for (size_t p = 0; p < params.size(); ++p) {
      Tensor sum;
      for (const auto& gs : grads) {
        const Tensor& gp = gs[first_param + p];
        if (gp.defined()) sum = sum.defined() ? sum + gp : gp;
      }
      result[1 + p] = sum;
    }
    return result;
  }
};

}  // namespace

extern "C" {

// The core's output for x [B, ...] → [B, ...], computed as `shards` batch shards (see above); a
// new tensor, or null on error. `params` are the core's trainable parameters (borrowed), `core` is
// passed back to `fn` unchanged.
Tensor* membench_batch_shards(const Tensor* x, const Tensor* const* params, size_t n_params, int64_t shards,
                              CoreForward fn, const void* core, int32_t train) {
  return membench::guarded([&] {
    TORCH_CHECK(shards >= 1 && shards <= x->size(0), "batch shards: ", shards, " shards for a batch of ",
                x->size(0));
    std::vector<Tensor> ps;
    for (size_t k = 0; k < n_params; ++k) ps.push_back(*params[k]);
    const bool needs_graph =
        at::GradMode::is_enabled() &&
        (x->requires_grad() || std::any_of(ps.begin(), ps.end(), [](const Tensor& p) { return p.requires_grad(); }));
    if (needs_graph) return BatchShards::apply(*x, at::TensorList(ps), shards, fn, core, train != 0);
    return at::cat(run_shards(split_shards(*x, shards), fn, core, train != 0, /*grad=*/false), 0);
  });
}
}
