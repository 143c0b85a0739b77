// SPDX-License-Identifier: Apache-2.0
#pragma once

// The CUDA backend's NVTX memory annotations: a pool's segments as sub-allocator heaps and the
// blocks it hands out as their regions, so that compute-sanitizer's memcheck reports a kernel
// that touches a block the pool holds but has not handed out (rmm#1899's idea). Only the CUDA
// backend includes this.

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

namespace gpulife::detail {

/// One device's heaps and regions. Every member is a no-op unless a tool collects NVTX (the
/// domain handle is null without one): then the cost is one branch per call.
class NvtxMemory {
 public:
  /// Looks for a tool: creates the process's gpulife domain on first use. Call after the CUDA
  /// runtime is initialised (compute-sanitizer requires it); until then every member is a no-op.
  void enable() noexcept;

  [[nodiscard]] bool enabled() const noexcept { return domain_ != nullptr; }
  void register_segment(const void* ptr, std::size_t bytes) noexcept;
  void unregister_segment(const void* ptr) noexcept;
  void register_block(const void* ptr, std::size_t bytes) noexcept;
  void unregister_block(const void* ptr) noexcept;

 private:
  struct Segment {
    std::size_t bytes = 0;
    void* heap = nullptr;  // nvtxMemHeapHandle_t
  };

  void* domain_ = nullptr;  // nvtxDomainHandle_t
  std::mutex mutex_;
  std::map<std::uintptr_t, Segment> segments_;
};

}  // namespace gpulife::detail
