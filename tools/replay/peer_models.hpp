// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Models of the peers' allocators for gpulife_replay: PyTorch's CUDA caching allocator
/// (`c10/cuda/CUDACachingAllocator.cpp`, with and without expandable segments) and RMM's
/// `pool_memory_resource` (`rmm/mr/device/pool_memory_resource.hpp` over
/// `detail/stream_ordered_memory_resource.hpp`), written from their documented and published
/// behaviour so that a trace replays through each with the same model device, clock and events
/// as through gpulife's pool. Not part of the library: they keep the peers' rules, not their
/// code, and they leave out what a replay never exercises (graph pools, IPC, statistics).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife::replay {

/// @brief PyTorch's caching allocator (its default settings), optionally with
/// `expandable_segments:True`.
///
/// Sizes round up to 512 B; requests up to 1 MiB come from a small pool of 2 MiB segments,
/// larger ones from a large pool (a 20 MiB segment below 10 MiB, else the size rounded up to
/// 2 MiB). Free blocks sit in a set ordered by (stream, size, address): a request takes the
/// smallest block of its own stream that fits, splits off the rest (any rest in the small pool,
/// more than 1 MiB in the large pool), and a freed block merges with its free neighbours.
/// A block belongs to the stream it was allocated on, always: freed after use on other streams
/// (`record_stream`, or freed on another stream than its allocation's, which in PyTorch means
/// the tensor was recorded there), it returns to that stream's pool only once events recorded
/// on those streams have completed, checked at the next allocation (`process_events`). Nothing
/// is given back until an upstream allocation fails; then every free unsplit segment (free
/// mapped pages with expandable segments) goes back after a device synchronisation, and the
/// allocation is retried once. With expandable segments, each stream and pool has one virtual
/// range mapped in pages of 2 MiB (small) or 20 MiB (large) as it grows at its free end.
class PyTorchModel final : public DeviceMemoryResource {
 public:
  /// @param upstream  where segments (or mapped pages) come from
  /// @param expandable PyTorch's `expandable_segments:True`
  PyTorchModel(std::shared_ptr<DeviceMemoryResource> upstream, bool expandable);
  ~PyTorchModel() override;

 private:
  struct State;
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;

  std::shared_ptr<DeviceMemoryResource> upstream_;
  std::unique_ptr<State> state_;
};

/// @brief RMM's `pool_memory_resource` (no maximum size, an empty initial pool).
///
/// Sizes round up to 256 B. Each stream has a free list, coalescing address neighbours that
/// came from the same upstream allocation, searched best fit; a freed block goes to the list of
/// the stream that frees it, and that stream's one event is recorded on every free. A stream
/// that finds nothing in its own list takes the best fit of the first other list that has one,
/// after waiting on the device for that stream's event, and merges that whole list into its
/// own; failing that, it merges the other lists one by one (waiting on each) until one block
/// fits; failing that, the pool grows by the larger of the request and its current size
/// (halving the attempt down to the request if upstream refuses). Nothing is given back until
/// the pool is destroyed. RMM has no `record_stream`: a free after other streams' events waits
/// for them on the freeing stream first (what an RMM user must do).
class RmmPoolModel final : public DeviceMemoryResource {
 public:
  explicit RmmPoolModel(std::shared_ptr<DeviceMemoryResource> upstream);
  ~RmmPoolModel() override;

 private:
  struct State;
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;

  std::shared_ptr<DeviceMemoryResource> upstream_;
  std::unique_ptr<State> state_;
};

}  // namespace gpulife::replay
