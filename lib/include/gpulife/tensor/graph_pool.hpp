// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `GraphPool`: the private memory of CUDA graphs captured with `Context::capture`
/// (PyTorch's `graph_pool_handle`).

#include <cstddef>
#include <cstdint>
#include <memory>

namespace gpulife {

namespace detail {
class GraphPoolState;
}  // namespace detail

/// @brief What a `GraphPool` holds.
struct GraphPoolStatistics {
  std::size_t reserved_bytes = 0;          ///< device memory taken for its blocks
  std::uint64_t upstream_allocations = 0;  ///< cudaMalloc calls made for it (all at capture)
  std::size_t blocks = 0;                  ///< blocks it holds
  std::size_t live_blocks = 0;             ///< of those, owned by live tensors
  std::size_t deferred_tensors = 0;  ///< tensors released during a capture, kept until it dies
};

/// @brief A private memory pool for tensors made during stream capture.
///
/// Made by `Context::graph_pool()`, passed to `Context::capture`. While a capture scope is open,
/// tensors made on the capturing stream (or on a stream that joined its capture) take memory
/// from this pool: blocks taken from the device with cudaMalloc under a relaxed capture mode,
/// never through the context's pool (which queries events) and never stream-ordered, so that
/// allocation cannot break the capture. A block freed during the capture is reused in it only
/// where the graph's order allows (same stream), and by later captures into the same pool
/// (which must then be replayed in capture order, never concurrently, as PyTorch requires for
/// shared pools); a block of a tensor that outlived its capture (an output) is reused only once
/// that graph is gone. The memory returns to the device, and the finalizers of tensors released
/// during a capture run, when this handle, every `Graph` captured into it and every tensor of it
/// are gone.
///
/// @par Thread safety
/// A handle is a shared pointer: copy it freely; `statistics()` may be called from any thread.
class GraphPool {
 public:
  /// An empty handle; `Context::graph_pool()` makes a usable one.
  GraphPool() noexcept = default;

  /// @return true unless empty
  [[nodiscard]] bool valid() const noexcept { return state_ != nullptr; }
  /// @return what the pool holds now
  /// @throws std::invalid_argument if empty
  [[nodiscard]] GraphPoolStatistics statistics() const;

  /// Internal: the pool's state (used by the capture scope).
  [[nodiscard]] const std::shared_ptr<detail::GraphPoolState>& state() const noexcept {
    return state_;
  }
  /// Internal: wraps a state (Context::graph_pool).
  explicit GraphPool(std::shared_ptr<detail::GraphPoolState> state) noexcept
      : state_(std::move(state)) {}

  friend bool operator==(const GraphPool&, const GraphPool&) noexcept = default;

 private:
  std::shared_ptr<detail::GraphPoolState> state_;
};

}  // namespace gpulife
