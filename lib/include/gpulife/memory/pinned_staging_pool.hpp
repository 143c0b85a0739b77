// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `PinnedStagingPool`: uploads from pageable host memory through reusable pinned buffers.

#include <cstddef>
#include <memory>
#include <span>

#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

/// @brief Options of a `PinnedStagingPool`.
struct StagingOptions {
  std::size_t buffer_bytes = std::size_t{4} << 20;  ///< size of one pinned buffer
  std::size_t buffers = 4;                          ///< buffers in the ring
};

/// @brief Copies pageable host bytes to the device through a ring of pinned buffers.
///
/// A copy from pageable memory cannot be a true DMA: CUDA stages it through its own pinned
/// memory, chunk by chunk. Doing the staging here, into buffers that stay pinned, lets the host
/// copy of chunk k+1 overlap the DMA of chunk k and lets a large upload return as soon as its
/// last chunk is staged. The buffers come from the device's `PinnedHostCache` on first use (on
/// the simulated device that is the same code path, with host memory the device treats as
/// pinned) and go back to it, still guarded by their last copy, when the pool is destroyed.
///
/// The buffers form a ring: each chunk takes the free buffer released longest ago, or a later
/// one whose copy has already executed while that one's has not. A buffer is overwritten only
/// after the event recorded behind its last copy has completed; the host waits for that only
/// when no free buffer's copy has executed, so a thread uploading more than the ring holds is
/// paced by the DMA, and one that uploads less never waits for its own previous copy.
///
/// @par Thread safety
/// Thread-safe: concurrent uploads share the ring, each buffer used by one upload at a time.
class PinnedStagingPool {
 public:
  /// @throws std::invalid_argument if `device` is empty or an option is zero
  explicit PinnedStagingPool(Device device, StagingOptions options = {});
  ~PinnedStagingPool();
  PinnedStagingPool(const PinnedStagingPool&) = delete;
  PinnedStagingPool& operator=(const PinnedStagingPool&) = delete;

  /// @brief Copies `src` to the device memory at `dst`, in `stream` order. When it returns the
  /// bytes of `src` have been consumed (as for a pageable `cudaMemcpyAsync`); the device copy
  /// completes in stream order.
  /// @throws std::invalid_argument if `dst` is null while `src` is not empty, or `stream` is empty
  ///         or of another device
  /// @throws OutOfMemoryError if the pinned buffers cannot be allocated
  /// @throws CudaError on device failure
  void upload(void* dst, std::span<const std::byte> src, StreamView stream);

  /// @return the options
  [[nodiscard]] const StagingOptions& options() const noexcept;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace gpulife
