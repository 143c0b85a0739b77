// SPDX-License-Identifier: Apache-2.0
#pragma once

// DebugOptions::oom_dump: the snapshot a context writes when an OutOfMemoryError is about to
// be thrown, PyTorch's `_dump_snapshot` on OOM. The observer gathers what the debug layer knows
// (the live set, the timeline's newest events, the resource's and the cache's statistics) and
// this writes it into a new directory, at most once per second and `oom_dump_limit` times.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>

#include <gpulife/cache/tensor_cache.hpp>
#include <gpulife/debug/debug_options.hpp>
#include <gpulife/debug/leak_report.hpp>
#include <gpulife/debug/timeline.hpp>
#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/memory/pool_statistics.hpp>
#include <gpulife/memory/resource_statistics.hpp>
#include <gpulife/runtime/device.hpp>

namespace gpulife::detail {

/// What the pool adds to a snapshot beyond `ResourceStatistics`, gathered in one place
/// (`describe_pool` in oom_dump.cpp): its `memory_stats()` and `memory_summary()`, and the
/// blocks it has handed out.
struct PoolSection {
  std::size_t live_blocks = 0;       ///< blocks handed out
  std::size_t live_block_bytes = 0;  ///< the capacity of those blocks
  std::size_t largest_live_block = 0;
  PoolStatistics stats{};  ///< `PoolResource::memory_stats()`
  std::string summary;     ///< `PoolResource::memory_summary()`
};

struct OomSnapshot {
  std::string device;
  std::size_t requested = 0;
  std::uint64_t stream_id = 0;
  std::string message;
  std::optional<MemoryInfo> device_memory;
  std::string resource_name;
  ResourceStatistics resource{};
  std::optional<PoolSection> pool;
  std::optional<CacheStatistics> cache;
  std::size_t live_tensors = 0;
  std::size_t live_bytes = 0;
  LeakReport report;
  Timeline timeline;
};

class OomDumper {
 public:
  explicit OomDumper(const DebugOptions& options);

  /// True if a snapshot may be written now (none in the last second, fewer than the limit so
  /// far); it then counts as written.
  bool claim() noexcept;
  /// Writes the snapshot into a new directory and returns its path.
  /// @throws std::filesystem::filesystem_error, std::runtime_error if a file cannot be written
  std::filesystem::path write(const OomSnapshot& snapshot) const;

  [[nodiscard]] std::size_t max_tensors() const noexcept { return max_tensors_; }
  [[nodiscard]] std::size_t max_events() const noexcept { return max_events_; }

 private:
  const std::filesystem::path dir_;
  const std::size_t max_tensors_;
  const std::size_t max_events_;
  const std::size_t limit_;
  std::mutex mutex_;
  std::optional<std::chrono::steady_clock::time_point> last_;
  std::size_t claimed_ = 0;
};

/// The pool's part of a snapshot, or nothing if `resource` is not a `PoolResource`.
std::optional<PoolSection> describe_pool(const DeviceMemoryResource& resource);

}  // namespace gpulife::detail
