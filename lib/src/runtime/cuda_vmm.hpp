// SPDX-License-Identifier: Apache-2.0
#pragma once

// The CUDA driver's virtual memory management for one device (cuMemAddressReserve,
// cuMemCreate, cuMemMap, cuMemSetAccess, cuMemUnmap, cuMemRelease, cuMemAddressFree), which
// pools with expandable segments grow their ranges with. The driver's functions come through
// the runtime's driver entry points, so that gpulife links no libcuda (an executable that did
// would not start on a machine without a driver, where the simulated device is what runs).

#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>

namespace gpulife::detail {

class CudaVmm {
 public:
  /// Probes `ordinal` (whose context must be current): granularity() is 0 where the device or
  /// driver has no virtual memory management.
  explicit CudaVmm(int ordinal) noexcept;
  CudaVmm(const CudaVmm&) = delete;
  CudaVmm& operator=(const CudaVmm&) = delete;

  [[nodiscard]] std::size_t granularity() const noexcept { return granularity_; }
  /// cuMemAddressReserve. @throws OutOfMemoryError, CudaError
  void* reserve(std::size_t bytes);
  /// cuMemAddressFree; failures are reported.
  void release(void* base, std::size_t bytes) noexcept;
  /// One cuMemCreate + cuMemMap per chunk, then cuMemSetAccess (read/write for the device).
  /// @throws OutOfMemoryError when the device has no memory left; CudaError otherwise. Nothing
  /// stays mapped on failure.
  void map(void* ptr, std::size_t bytes);
  /// cuMemUnmap + cuMemRelease per chunk; failures are reported.
  void unmap(void* ptr, std::size_t bytes) noexcept;

 private:
  int ordinal_;
  std::size_t granularity_ = 0;
  std::mutex mutex_;
  std::map<std::uintptr_t, unsigned long long> handles_;  // chunk -> CUmemGenericAllocationHandle
};

}  // namespace gpulife::detail
