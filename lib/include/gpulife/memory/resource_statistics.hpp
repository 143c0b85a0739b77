// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief What a memory resource reports about itself.

#include <cstddef>
#include <cstdint>

namespace gpulife {

/// @brief Counters of a memory resource. Fields a resource has no notion of stay zero.
struct ResourceStatistics {
  std::size_t bytes_in_use = 0;       ///< handed out and not yet deallocated
  std::size_t peak_bytes_in_use = 0;  ///< high-water mark of `bytes_in_use`
  std::size_t bytes_cached = 0;       ///< held from upstream, free for reuse (pools)
  std::uint64_t allocations = 0;      ///< successful `allocate` calls
  std::uint64_t deallocations = 0;    ///< `deallocate` calls
  std::uint64_t hits = 0;             ///< allocations served from cached memory (pools)
  std::uint64_t misses = 0;           ///< allocations that went upstream (pools)
  std::uint64_t upstream_allocations = 0;    ///< calls into the device or upstream resource
  std::uint64_t upstream_deallocations = 0;  ///< frees into the device or upstream resource
  std::uint64_t failed_allocations = 0;      ///< allocations that threw
};

}  // namespace gpulife
