// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DirectResource`: cudaMalloc / cudaFree, the reallocation baseline.

#include <gpulife/memory/detail/usage_counters.hpp>
#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief Every allocation is a cudaMalloc and every deallocation a cudaFree.
///
/// cudaFree waits for the whole device, so this resource is the slow baseline the benchmarks
/// measure reuse against; it is also the simplest correct resource.
class DirectResource final : public DeviceMemoryResource {
 public:
  /// @param device the device to allocate on
  explicit DirectResource(Device device);

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  std::string do_name() const override { return "direct"; }
  ResourceStatistics do_statistics() const override;
  std::size_t do_mapping_granularity() const noexcept override;
  void* do_reserve_range(std::size_t bytes) override;
  void do_release_range(void* base, std::size_t bytes) noexcept override;
  void do_map(void* ptr, std::size_t bytes) override;
  void do_unmap(void* ptr, std::size_t bytes) noexcept override;

  detail::UsageCounters counters_;
};

}  // namespace gpulife
