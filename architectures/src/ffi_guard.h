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

}  // namespace membench
