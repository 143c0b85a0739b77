// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `FaultAdaptor`: a resource adaptor that fails chosen allocations, to test what code
/// does when device memory runs out.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <random>

#include <gpulife/memory/device_memory_resource.hpp>

namespace gpulife {

/// @brief Which allocations a `FaultAdaptor` fails.
struct FaultOptions {
  /// When non-zero, every nth allocation fails (counted over the adaptor's non-zero requests).
  std::uint64_t every_nth = 0;
  /// The chance, in [0, 1], that an allocation fails; drawn from a generator seeded with `seed`.
  double probability = 0.0;
  /// Seeds the probability draws, so that a run can be repeated.
  std::uint64_t seed = 1;
};

/// @brief Wraps an upstream resource and fails chosen allocations with `OutOfMemoryError`
/// (RMM's adaptor pattern: it adds one thing, faults, and forwards everything else).
///
/// An allocation the options choose throws before the upstream is asked, with a message that
/// says the failure was injected; the others, and every deallocation, go to the upstream
/// unchanged. Stacked under a `PoolResource` it makes the pool's trim-and-retry path and the
/// context's memory-pressure chain run on demand:
///
/// ```cpp
/// auto faults = std::make_shared<FaultAdaptor>(std::make_shared<AsyncResource>(device),
///                                              FaultOptions{.probability = 0.01, .seed = 7});
/// Context ctx({.device = device, .resource = std::make_shared<PoolResource>(faults)});
/// ```
///
/// `set_enabled(false)` stops the faults without changing the options (a test turns them off
/// for its verification steps). `statistics()` is the upstream's, with `failed_allocations`
/// counting the adaptor's injected failures as well.
///
/// @par Thread safety
/// All members are thread-safe. With several threads allocating, which call gets the nth
/// fault depends on their interleaving.
class FaultAdaptor final : public DeviceMemoryResource {
 public:
  /// @param upstream where allocations that do not fail go (shared: the adaptor keeps it alive)
  /// @param options  which allocations fail
  /// @throws std::invalid_argument if `upstream` is null or `options.probability` is outside
  ///         [0, 1]
  explicit FaultAdaptor(std::shared_ptr<DeviceMemoryResource> upstream, FaultOptions options = {});

  /// @brief Replaces the options; the draws restart from `options.seed` and `every_nth` counts
  /// from the next allocation.
  /// @throws std::invalid_argument if `options.probability` is outside [0, 1]
  void set_options(const FaultOptions& options);
  /// @brief Turns the faults on (the default) or off.
  void set_enabled(bool enabled) noexcept;
  /// @return true while the adaptor injects faults
  [[nodiscard]] bool enabled() const noexcept;
  /// @return the number of allocations the adaptor has failed
  [[nodiscard]] std::uint64_t injected_failures() const noexcept;

  /// @return the upstream resource
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& upstream() const noexcept {
    return upstream_;
  }

 private:
  void* do_allocate(std::size_t bytes, StreamView stream) override;
  void do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept override;
  void do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                           std::vector<Event> after) noexcept override;
  bool do_is_equal(const DeviceMemoryResource& other) const noexcept override;
  std::string do_name() const override;
  ResourceStatistics do_statistics() const override;
  std::size_t do_release_cached() noexcept override;
  std::size_t do_mapping_granularity() const noexcept override;
  void* do_reserve_range(std::size_t bytes) override;
  void do_release_range(void* base, std::size_t bytes) noexcept override;
  void do_map(void* ptr, std::size_t bytes) override;
  void do_unmap(void* ptr, std::size_t bytes) noexcept override;

  /// True if the next allocation is to fail.
  bool should_fail();

  std::shared_ptr<DeviceMemoryResource> upstream_;
  mutable std::mutex mutex_;
  FaultOptions options_;        // guarded by mutex_
  std::mt19937_64 rng_;         // guarded by mutex_
  std::uint64_t calls_ = 0;     // guarded by mutex_
  bool enabled_ = true;         // guarded by mutex_
  std::uint64_t injected_ = 0;  // guarded by mutex_
};

}  // namespace gpulife
