// Peak device memory from LibTorch's caching device allocator: the numbers behind
// torch.cuda.max_memory_allocated() / reset_peak_memory_stats(). Goes through c10's generic
// DeviceAllocator interface, so it needs neither CUDA headers nor libc10_cuda at build time; the
// CUDA allocator registers itself when libtorch_cuda is loaded. C ABI, so Rust calls it directly.
#include <c10/core/CachingDeviceAllocator.h>
#include <cstdint>

extern "C" {

// Fills the aggregate peak and current allocated bytes and the peak reserved bytes of CUDA device
// `device`; 0 on success, 1 on any error (no CUDA allocator in this LibTorch, bad index, ...).
int membench_cuda_memory(int device, int64_t* peak_allocated, int64_t* allocated, int64_t* peak_reserved) {
  try {
    const auto stats = c10::getDeviceAllocator(c10::DeviceType::CUDA)->getDeviceStats(static_cast<c10::DeviceIndex>(device));
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *peak_allocated = stats.allocated_bytes[all].peak;
    *allocated = stats.allocated_bytes[all].current;
    *peak_reserved = stats.reserved_bytes[all].peak;
    return 0;
  } catch (...) {
    return 1;
  }
}

int membench_cuda_reset_peak(int device) {
  try {
    c10::getDeviceAllocator(c10::DeviceType::CUDA)->resetPeakStats(static_cast<c10::DeviceIndex>(device));
    return 0;
  } catch (...) {
    return 1;
  }
}
}
