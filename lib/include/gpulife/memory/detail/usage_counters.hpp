// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include <gpulife/memory/resource_statistics.hpp>

namespace gpulife::detail {

/// Lock-free counters for resources that pass every call through to the device.
class UsageCounters {
 public:
  void on_allocate(std::size_t bytes) noexcept {
    const std::size_t now = in_use_.fetch_add(bytes, std::memory_order_relaxed) + bytes;
    std::size_t peak = peak_.load(std::memory_order_relaxed);
    while (now > peak && !peak_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    allocations_.fetch_add(1, std::memory_order_relaxed);
  }
  void on_deallocate(std::size_t bytes) noexcept {
    in_use_.fetch_sub(bytes, std::memory_order_relaxed);
    deallocations_.fetch_add(1, std::memory_order_relaxed);
  }
  void on_failure() noexcept { failures_.fetch_add(1, std::memory_order_relaxed); }

  /// The counters of a resource whose every call reaches the device.
  [[nodiscard]] ResourceStatistics snapshot() const noexcept {
    ResourceStatistics stats;
    stats.bytes_in_use = in_use_.load(std::memory_order_relaxed);
    stats.peak_bytes_in_use = peak_.load(std::memory_order_relaxed);
    stats.allocations = allocations_.load(std::memory_order_relaxed);
    stats.deallocations = deallocations_.load(std::memory_order_relaxed);
    stats.misses = stats.allocations;
    stats.upstream_allocations = stats.allocations;
    stats.upstream_deallocations = stats.deallocations;
    stats.failed_allocations = failures_.load(std::memory_order_relaxed);
    return stats;
  }

 private:
  std::atomic<std::size_t> in_use_{0};
  std::atomic<std::size_t> peak_{0};
  std::atomic<std::uint64_t> allocations_{0};
  std::atomic<std::uint64_t> deallocations_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace gpulife::detail
