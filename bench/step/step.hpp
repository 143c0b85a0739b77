// SPDX-License-Identifier: Apache-2.0
#pragma once

// One inference step of the benchmark model, run four ways on the same work:
//
//   realloc  cudaMalloc / cudaFree for every tensor of every step (DirectResource); the weights
//            are uploaded every step
//   async    cudaMallocAsync / cudaFreeAsync instead (AsyncResource); weights uploaded every step
//   pool     a PoolResource over the async resource for every tensor; weights uploaded every step
//   cache    the pool, and the weights through the TensorCache (warm retention): uploaded by the
//            first step, hits afterwards
//
// A step uploads the input batch, runs the layers (each output a new tensor, each input dropped
// as soon as the layer that reads it is queued, as eager frameworks do) and downloads the output.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include <gpulife/context.hpp>
#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/runtime/stream.hpp>

#include "support/model.hpp"

namespace gpulife::bench {

/// @brief How a step gets its memory and its weights.
enum class Strategy : unsigned char { realloc, async, pool, cache };

/// @return "realloc", "async", "pool" or "cache"
[[nodiscard]] std::string_view to_string(Strategy strategy) noexcept;

/// @brief What a strategy has cost so far; differences between two snapshots give per-step
/// figures.
struct StepCounters {
  std::uint64_t steps = 0;
  std::uint64_t bytes_uploaded = 0;        ///< host-to-device bytes (weights, input)
  std::uint64_t upstream_allocations = 0;  ///< allocations that reached the device
  std::size_t device_bytes_peak = 0;       ///< most device memory held at once
  std::size_t device_bytes_held = 0;       ///< device memory held now (pool cache, warm weights)
};

/// @brief A context set up for one strategy, and the model's steps on one stream.
class StepRunner {
 public:
  /// @throws what creating a context or a stream throws
  StepRunner(Strategy strategy, const HostModel& model, const Device& device);
  StepRunner(const StepRunner&) = delete;
  StepRunner& operator=(const StepRunner&) = delete;

  /// @brief One inference step. Every tensor it makes is dropped before it returns; the output
  /// has been downloaded (`output()`).
  void step();

  [[nodiscard]] StreamView stream() const noexcept { return stream_.view(); }
  [[nodiscard]] Context& context() noexcept { return context_; }
  [[nodiscard]] StepCounters counters();
  /// @return the output of the last step, [batch, hidden]
  [[nodiscard]] std::span<const float> output() const noexcept { return output_; }

 private:
  DeviceTensor load(const HostBuffer& host, const Shape& shape, std::string_view tag);

  Strategy strategy_;
  const HostModel& model_;
  std::shared_ptr<DeviceMemoryResource> device_resource_;  // the one that calls the device
  Context context_;
  Stream stream_;
  std::uint64_t steps_ = 0;
  std::uint64_t bytes_uploaded_ = 0;  // by Context::upload; the cache counts its own
  std::vector<float> output_;
};

}  // namespace gpulife::bench
