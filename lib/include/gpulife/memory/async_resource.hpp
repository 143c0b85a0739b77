// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `AsyncResource`: cudaMallocAsync / cudaFreeAsync on the device's current memory pool.

#include <cstddef>
#include <limits>
#include <optional>

#include <gpulife/memory/detail/usage_counters.hpp>
#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief Options of an `AsyncResource`.
struct AsyncOptions {
  /// Release threshold to set on the device's current memory pool
  /// (cudaDeviceGetMemPool: the default pool unless the application set another;
  /// cudaMemPoolAttrReleaseThreshold). The driver's default is 0: every synchronisation gives
  /// the pool's free memory back to the system and the next allocation maps it again. The
  /// default here keeps it, as PyTorch's cudaMallocAsync backend does, and `release_cached()`
  /// gives it back on demand. The pool is the device's, shared with the rest of the process;
  /// empty leaves it as it is.
  std::optional<std::size_t> release_threshold = std::numeric_limits<std::size_t>::max();
};

/// @brief Stream-ordered allocation by the driver (cudaMallocAsync / cudaFreeAsync) from the
/// device's current memory pool.
///
/// The driver's pool caches memory itself; this resource adds counting, and `release_cached()`
/// synchronises the device and trims the pool (cudaMemPoolTrimTo), so that memory freed into it
/// after a burst goes back to the system. On the simulated device the memory becomes live when
/// the stream reaches the allocation and dead when it reaches the free (nothing to trim).
class AsyncResource final : public DeviceMemoryResource {
 public:
  /// @param device  the device to allocate on
  /// @param options the pool's release threshold
  /// @throws CudaError if the threshold cannot be set
  explicit AsyncResource(Device device, AsyncOptions options = {});

  /// @return the bytes the device's current stream-ordered pool reserves from the system now
  ///         (cudaMemPoolAttrReservedMemCurrent; 0 on the sim)
  /// @throws CudaError on device failure
  [[nodiscard]] std::size_t pool_reserved_bytes() const;

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  std::string do_name() const override { return "async"; }
  ResourceStatistics do_statistics() const override;
  std::size_t do_mapping_granularity() const noexcept override;
  void* do_reserve_range(std::size_t bytes) override;
  void do_release_range(void* base, std::size_t bytes) noexcept override;
  void do_map(void* ptr, std::size_t bytes) override;
  void do_unmap(void* ptr, std::size_t bytes) noexcept override;
  /// Synchronises the device and trims its current pool to zero unused bytes.
  std::size_t do_release_cached() noexcept override;

  detail::UsageCounters counters_;
};

}  // namespace gpulife
