// The C ABI of this crate's kernels: exceptions never cross into Rust; a failed call returns null
// and leaves its message for membench_kernel_error() (one message per thread, until the next
// failure).
#pragma once
#include <ATen/ATen.h>

#include <string>

namespace membench {

inline thread_local std::string last_error;

// Runs `f` (which returns a tensor) and hands the result to Rust as a new at::Tensor (tch's
// C_tensor), or returns null and keeps the exception's message.
template <typename F>
at::Tensor* guarded(F f) {
  try {
    return new at::Tensor(f());
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return nullptr;
}

// As `guarded`, for a function returning `count` tensors: fills out[0..count) and returns 0, or
// returns 1 and keeps the message.
template <typename F>
int guarded_many(at::Tensor** out, size_t count, F f) {
  try {
    auto results = f();
    TORCH_CHECK(results.size() == count, "expected ", count, " outputs, got ", results.size());
    for (size_t k = 0; k < count; ++k) out[k] = new at::Tensor(std::move(results[k]));
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return 1;
}

}  // namespace membench
