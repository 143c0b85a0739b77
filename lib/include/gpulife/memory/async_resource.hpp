// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `AsyncResource`: cudaMallocAsync / cudaFreeAsync on the device's default memory pool.

#include <gpulife/memory/detail/usage_counters.hpp>
#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief Stream-ordered allocation by the driver (cudaMallocAsync / cudaFreeAsync).
///
/// The driver's pool caches memory itself; this resource adds only counting. On the simulated
/// device the memory becomes live when the stream reaches the allocation and dead when it
/// reaches the free.
class AsyncResource final : public DeviceMemoryResource {
 public:
  /// @param device the device to allocate on
  explicit AsyncResource(Device device);

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  std::string do_name() const override { return "async"; }
  ResourceStatistics do_statistics() const override;

  detail::UsageCounters counters_;
};

}  // namespace gpulife
