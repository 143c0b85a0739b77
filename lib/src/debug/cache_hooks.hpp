// SPDX-License-Identifier: Apache-2.0
#pragma once

// `CacheDebugHooks`: what the tensor cache tells a context's debug layer. Internal: the context
// connects its own cache.

#include <cstddef>
#include <functional>
#include <vector>

#include <gpulife/cache/tensor_cache.hpp>
#include <gpulife/debug/leak_report.hpp>

namespace gpulife {

/// Functions through which the tensor cache tells the debug layer what it holds. Any may be
/// empty.
///
/// Both are called with no gpulife lock held, from the thread that makes a report or records a
/// timeline event; they must be thread-safe and must not take a lock that the cache holds while
/// it tells the arena's observer about a cache event (`cache_hit`, `cache_miss`,
/// `cache_eviction`).
struct CacheDebugHooks {
  /// Bytes the cache holds now: the timeline's "tensor_cache_bytes" counter (0 without it).
  std::function<std::size_t()> cached_bytes{};
  /// The entries pinned now: a leak report names their tensors as pinned, not leaked.
  std::function<std::vector<PinnedEntry>()> pinned_entries{};
  /// The cache's counters: an out-of-memory snapshot includes them.
  std::function<CacheStatistics()> statistics{};
};

}  // namespace gpulife
