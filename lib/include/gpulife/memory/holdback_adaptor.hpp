// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `HoldbackAdaptor`: a debugging resource adaptor that keeps freed blocks from being
/// reused for a while, so that a stale pointer meets freed memory rather than a new tensor.

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief How much a `HoldbackAdaptor` holds back.
struct HoldbackOptions {
  std::size_t bytes = std::size_t{64} << 20;  ///< at most this many bytes held at once
  std::size_t blocks = 1024;                  ///< and at most this many blocks
};

/// @brief Wraps an upstream resource (a pool, typically) and gives each freed block back to it
/// only after later frees have pushed it out of a bounded queue (RMM's adaptor pattern: it adds
/// one thing and forwards everything else).
///
/// A pool hands a freed block to the next request of its size at once, so a stale pointer to a
/// released tensor usually reaches a new tensor's data, and nothing notices. Held back, the
/// block stays freed: on the simulated device it is poisoned and every queued access through a
/// stale pointer is reported as a use after free (the adaptor marks the block freed when it
/// takes it, and live again just before the upstream gets it back, at which point the sim also
/// verifies that nothing wrote the poison meanwhile). On a GPU it only delays reuse. A debugging
/// aid: it costs up to `bytes` of device memory.
///
/// ```cpp
/// auto pool = std::make_shared<PoolResource>(std::make_shared<AsyncResource>(device));
/// Context ctx({.device = device, .resource = std::make_shared<HoldbackAdaptor>(pool)});
/// ```
///
/// `release_cached()` (the first step of memory pressure) gives every held block back first.
/// `statistics()` is the upstream's: held blocks count as in use there.
///
/// @par Thread safety
/// All members are thread-safe.
class HoldbackAdaptor final : public DeviceMemoryResource {
 public:
  /// @param upstream where allocations come from and blocks finally go back to
  /// @param options  how much is held back
  /// @throws std::invalid_argument if `upstream` is null
  explicit HoldbackAdaptor(std::shared_ptr<DeviceMemoryResource> upstream,
                           HoldbackOptions options = {});
  /// Gives every held block back to the upstream.
  ~HoldbackAdaptor() override;

  /// @return the upstream resource
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& upstream() const noexcept {
    return upstream_;
  }
  /// @return the bytes held back now
  [[nodiscard]] std::size_t held_bytes() const;

 private:
  struct Held {
    void* ptr = nullptr;
    std::size_t bytes = 0;
    StreamView stream;
    std::vector<Event> after;
  };

  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;
  std::size_t do_release_cached() noexcept override;
  /// Gives `held` back to the upstream (no lock held).
  void give_back(Held& held) noexcept;

  std::shared_ptr<DeviceMemoryResource> upstream_;
  const HoldbackOptions options_;
  mutable std::mutex mutex_;
  std::deque<Held> held_;  // oldest first
  std::size_t held_bytes_ = 0;
};

}  // namespace gpulife
