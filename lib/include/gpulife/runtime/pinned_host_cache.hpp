// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `PinnedHostCache`: page-locked host blocks that are reused instead of freed
/// (PyTorch's `CachingHostAllocator`).

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

namespace detail {
class DeviceImpl;
class EventImpl;
class StreamImpl;
}  // namespace detail

/// @brief Counters of a `PinnedHostCache`.
struct PinnedHostCacheStatistics {
  std::uint64_t allocations = 0;         ///< blocks handed out
  std::uint64_t reuses = 0;              ///< of which were cached blocks (no cudaMallocHost)
  std::uint64_t system_allocations = 0;  ///< cudaMallocHost calls
  std::uint64_t system_frees = 0;        ///< cudaFreeHost calls
  std::size_t bytes_in_use = 0;          ///< bytes of blocks handed out (their size classes)
  std::size_t bytes_cached = 0;          ///< bytes of returned blocks kept for reuse
};

/// @brief A cache of page-locked host blocks for one device.
///
/// `cudaMallocHost` and `cudaFreeHost` are slow and both synchronise; a program that makes a
/// pinned buffer per upload pays that every time. The cache keeps returned blocks and hands them
/// out again (sizes rounded up to one of four classes per power of two, at least 4 KiB), as
/// PyTorch's caching host allocator does. A returned block is reused only once the work that
/// `record_use` named has executed, so that a copy queued from it, or into it, never sees
/// another owner's bytes: record the stream of every asynchronous copy that reads or writes a
/// block you will give back before the copy has run (gpulife's uploads do this for blocks of the
/// cache). `deallocate` calls no CUDA function, so giving a block back is safe on any thread.
///
/// Every device has one (`Device::pinned_host_cache()`); `HostBuffer::copy_pinned` and the
/// staging pool take their blocks from it. Its blocks are given back to the system at
/// `release_cached()`, when an allocation finds the host out of page-locked memory, and when
/// the device closes.
///
/// @par Thread safety
/// All members are thread-safe. No device call is made under the cache's lock.
class PinnedHostCache {
 public:
  /// A cache over `device`'s `allocate_pinned`/`deallocate_pinned`; the device owns it.
  explicit PinnedHostCache(detail::DeviceImpl& device) noexcept;
  PinnedHostCache(const PinnedHostCache&) = delete;
  PinnedHostCache& operator=(const PinnedHostCache&) = delete;
  /// Frees nothing: the device calls `close()` first.
  ~PinnedHostCache();

  /// @brief A page-locked block of at least `bytes` bytes (nullptr for 0).
  /// @throws OutOfMemoryError when the host cannot provide it, after the cached blocks went back
  /// @throws CudaError on other device failures
  [[nodiscard]] void* allocate(std::size_t bytes);
  /// @brief Gives a block back; it is reused once the work recorded on it has executed. Calls no
  /// device function. A pointer that is not a live block of this cache is reported through the
  /// error handler.
  void deallocate(void* ptr) noexcept;
  /// @brief Records that the work queued on `stream` so far uses the block that contains `ptr`:
  /// the block is not reused before that work has executed.
  /// @return false, recording nothing, when `ptr` lies in no live block of this cache
  /// @throws std::invalid_argument if `stream` is empty or of another device
  /// @throws CudaError if the event cannot be recorded
  bool record_use(const void* ptr, StreamView stream);
  /// @return true if `ptr` lies in a block of this cache that is handed out
  [[nodiscard]] bool owns(const void* ptr) const;
  /// @brief Frees the cached blocks whose recorded work has executed (cudaFreeHost).
  /// @return bytes freed
  std::size_t release_cached() noexcept;
  /// @return a snapshot of the counters
  [[nodiscard]] PinnedHostCacheStatistics statistics() const;
  /// @brief Device teardown: waits for the recorded work and frees every cached block. Later
  /// returns free their block at once.
  void close() noexcept;

 private:
  struct Block {
    std::byte* data = nullptr;
    std::size_t size = 0;
    bool in_use = false;
    std::vector<std::pair<detail::StreamImpl*, detail::EventImpl*>> uses;  // one per stream
  };

  /// Moves the returned blocks whose recorded work has executed to the free lists.
  void sweep();
  void free_blocks(std::vector<Block*>& blocks) noexcept;

  detail::DeviceImpl& device_;
  mutable std::mutex mutex_;
  bool closed_ = false;
  std::map<std::uintptr_t, std::unique_ptr<Block>> blocks_;  // every block, by address
  std::map<std::size_t, std::vector<Block*>> free_;          // returned, reusable, by size
  std::vector<Block*> pending_;                              // returned, work still recorded
  PinnedHostCacheStatistics stats_;
};

}  // namespace gpulife
