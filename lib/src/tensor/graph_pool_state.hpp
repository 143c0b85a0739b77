// SPDX-License-Identifier: Apache-2.0
#pragma once

// The memory of a `GraphPool` (tensor/graph_pool.hpp): blocks for tensors made on capturing
// streams, taken from the device with cudaMalloc under a relaxed capture mode (as PyTorch's
// private pools do) and never returned before the pool dies; no events, no stream-ordered
// allocation, nothing that could break or enter a capture.
//
// A block's reuse follows what replays allow:
//   * freed during the capture that allocated it, on the stream it was allocated on (after
//     graph edges from the streams recorded on it): reusable at once in that capture by the
//     same stream, whose captured order the graph keeps;
//   * at the end of that capture, such blocks are free for later captures into the pool (which
//     must replay in capture order, never concurrently: PyTorch's rule for shared pools);
//   * freed otherwise (an output dropped after its capture, or freed while another capture of
//     the pool runs): reusable only once the graph that allocated it is gone.
// The pool gives its memory back (synchronous cudaFree) when the last of the GraphPool handle,
// the graphs captured into it and its live tensors is gone; then it runs the releases and
// finalizers it deferred (of tensors released during a capture), on that thread.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <gpulife/runtime/device.hpp>
#include <gpulife/tensor/graph_pool.hpp>

#include "tensor/tensor_arena.hpp"

namespace gpulife::detail {

class GraphPoolState {
 public:
  explicit GraphPoolState(TensorArena& arena);
  GraphPoolState(const GraphPoolState&) = delete;
  GraphPoolState& operator=(const GraphPoolState&) = delete;
  ~GraphPoolState();

  [[nodiscard]] TensorArena& arena() const noexcept { return arena_; }

  /// A block for capture `capture` on `stream`; `life` lives as long as that capture's graph.
  void* allocate(std::size_t bytes, StreamImpl& stream, std::uint64_t capture,
                 const std::shared_ptr<void>& life);
  /// Gives a block back. `capture` is the capture under way on `stream` (0: none); `ordered`
  /// says that every stream that used the block is ordered before `stream` in that capture.
  void free(void* ptr, StreamImpl* stream, std::uint64_t capture, bool ordered) noexcept;
  /// Capture `capture` ended: what it freed is free for the captures that follow.
  void settle(std::uint64_t capture) noexcept;
  /// Keeps a release (of memory from elsewhere) or a tensor's callbacks until the pool dies.
  void defer(std::function<void()> release) noexcept;
  void defer(std::vector<std::shared_ptr<CallbackState>> callbacks) noexcept;
  /// Leak mode: `impl` (one weak reference given) is told released when the pool dies.
  void defer_observed(TensorImpl* impl) noexcept;

  [[nodiscard]] GraphPoolStatistics statistics() const;

 private:
  enum class State : std::uint8_t { live, free_in_capture, free, free_after_graph };
  struct Block {
    std::size_t size = 0;
    State state = State::live;
    std::uint64_t capture = 0;     // the capture that allocated it (and freed it, in capture)
    StreamImpl* stream = nullptr;  // free_in_capture: the stream it was freed on
    std::weak_ptr<void> graph;     // the graph of the capture that allocated it
  };

  TensorArena& arena_;
  mutable std::mutex mutex_;
  std::map<std::uintptr_t, Block> blocks_;
  std::uint64_t upstream_allocations_ = 0;
  std::size_t reserved_bytes_ = 0;
  std::vector<std::function<void()>> deferred_releases_;
  std::vector<std::shared_ptr<CallbackState>> deferred_callbacks_;
  std::vector<TensorImpl*> observed_;  // weak references
  std::size_t deferred_tensors_ = 0;
};

}  // namespace gpulife::detail
