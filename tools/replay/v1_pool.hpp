// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The first PoolResource (gpulife before issue 16), kept verbatim apart from its names
/// as the reference that gpulife_replay and the pool benchmarks compare the current pool with.
/// Not part of the library.

#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include <gpulife/memory/device_memory_resource.hpp>

// NOLINTBEGIN: a verbatim copy, kept as it was.

namespace gpulife::replay {

/// @brief Options of a `PoolResource`.
struct V1PoolOptions {
  /// Cached free bytes above this are given back upstream, least recently freed first.
  std::size_t max_cached_bytes = std::numeric_limits<std::size_t>::max();
  /// A request whose size class has no reusable block takes one cached in up to this many
  /// larger classes before it goes upstream (four classes make a power of two: 3, the default,
  /// hands out at most 1.75 times the class). 0 serves every request from its own class.
  std::size_t larger_classes = 3;
};

/// @brief A caching allocator over an upstream resource: steady-state allocation makes no
/// upstream call.
///
/// Requests are rounded up to a size class: multiples of 256 bytes up to 1 KiB, then four classes
/// per power of two (at most 25 % internal waste). Blocks are never split: a request its class
/// cannot serve may take a block of a slightly larger class (`V1PoolOptions::larger_classes`),
/// which keeps mixed-size traces from caching a block per class. A freed block is cached on the
/// stream it was freed on and reused:
/// - by the next allocation of its class on that stream at once (stream order makes it safe);
/// - by another stream only after an event recorded at the free has completed, checked without
///   blocking (CUB's rule);
/// - never before the events passed to `deallocate_after` have completed (the streams that
///   `DeviceTensor::record_stream` named), which adds no dependency between streams
///   (PyTorch's rule).
///
/// When the upstream fails, the pool gives all its cached blocks back, waits for the device and
/// retries once; then it throws `OutOfMemoryError` with the request, the bytes in use and cached,
/// and the device.
///
/// On the simulated device the pool reports which blocks it has handed out
/// (`mark_allocated`/`mark_freed`), so that a kernel that touches a block after its release is
/// caught even though the pool still holds the memory.
///
/// @par Thread safety
/// All members are thread-safe; one mutex guards the free lists, and upstream calls happen
/// outside it.
class V1PoolResource final : public DeviceMemoryResource {
 public:
  /// A block handed out and not yet returned.
  struct LiveBlock {
    void* ptr = nullptr;    ///< the block's address
    std::size_t bytes = 0;  ///< the size class of the request it serves
    std::size_t capacity = 0;  ///< its own size class: `bytes`, or a larger class's
    std::uint64_t stream_id = 0;  ///< the stream it was allocated on
  };

  /// @param upstream where blocks come from (shared: the pool keeps it alive)
  /// @param options  caching limits
  /// @throws std::invalid_argument if `upstream` is null
  explicit V1PoolResource(std::shared_ptr<DeviceMemoryResource> upstream, V1PoolOptions options = {});
  /// Gives every cached block back upstream. Blocks still handed out are reported through the
  /// error handler and freed in their stream's order.
  ~V1PoolResource() override;

  /// @brief Gives every cached block back upstream, in the order of the stream it was freed on.
  /// @return bytes released
  std::size_t trim() noexcept;

  /// @return the blocks handed out and not yet returned (leak reports use it)
  [[nodiscard]] std::vector<LiveBlock> live_blocks() const;

  /// @return the upstream resource
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& upstream() const noexcept {
    return upstream_;
  }

  /// @return the size class a request of `bytes` bytes is served from
  [[nodiscard]] static std::size_t size_class(std::size_t bytes) noexcept;
  /// @return the largest block a request of `bytes` bytes may be handed: its size class, or
  ///         up to `V1PoolOptions::larger_classes` classes above it
  [[nodiscard]] std::size_t largest_block_for(std::size_t bytes) const noexcept;

 private:
  struct State;

  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;
  std::size_t do_release_cached() noexcept override { return trim(); }

  std::shared_ptr<DeviceMemoryResource> upstream_;
  V1PoolOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace gpulife::replay
// NOLINTEND
