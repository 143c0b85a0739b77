// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `PoolStatistics`: what a `PoolResource` reports about its memory (`memory_stats()`).

#include <cstddef>
#include <cstdint>
#include <vector>

namespace gpulife {

/// @brief Byte and block counts of one part of a pool (a size pool, a stream, or all of it).
///
/// The names follow `torch.cuda.memory_stats`: *reserved* is what the pool holds from its
/// upstream (segments, or the mapped part of expandable segments), *allocated* what blocks handed
/// out occupy, *requested* what their callers asked for (allocated minus rounding), *cached* the
/// reserved bytes not allocated, and *inactive split* the cached bytes that sit in segments which
/// also hold allocated blocks (fragmentation: they cannot be given back while those live).
struct PoolCounters {
  std::size_t reserved_bytes = 0;        ///< held from upstream (mapped, for expandable segments)
  std::size_t allocated_bytes = 0;       ///< in blocks handed out
  std::size_t requested_bytes = 0;       ///< asked for by the callers of those blocks
  std::size_t cached_bytes = 0;          ///< reserved and free
  std::size_t inactive_split_bytes = 0;  ///< free bytes in segments that also hold live blocks
  std::size_t peak_reserved_bytes = 0;   ///< high-water mark of `reserved_bytes`
  std::size_t peak_allocated_bytes = 0;  ///< high-water mark of `allocated_bytes`
  std::size_t peak_requested_bytes = 0;  ///< high-water mark of `requested_bytes`
  std::size_t segments = 0;              ///< segments (expandable ones count once)
  std::size_t allocated_blocks = 0;      ///< blocks handed out
  std::size_t free_blocks = 0;           ///< free blocks, mapped or not
  std::size_t largest_free_block = 0;    ///< the largest free mapped block, in bytes
};

/// @brief Counters of one stream's use of a pool.
struct PoolStreamCounters {
  std::uint64_t stream_id = 0;          ///< the stream
  std::size_t allocated_bytes = 0;      ///< in blocks allocated on it and not yet freed
  std::size_t requested_bytes = 0;      ///< asked for by those blocks' callers
  std::size_t reserved_bytes = 0;       ///< mapped in its expandable segments
  std::uint64_t allocations = 0;        ///< allocations made on it
  std::uint64_t cross_stream_reuses = 0;  ///< of those, blocks last used by another stream
  std::uint64_t stream_waits = 0;       ///< device-side waits the pool made it do
};

/// @brief Everything `PoolResource::memory_stats()` reports.
struct PoolStatistics {
  PoolCounters total;  ///< the whole pool
  PoolCounters small;  ///< the small pool (requests up to `PoolOptions::small_size`)
  PoolCounters large;  ///< the large pool
  std::vector<PoolStreamCounters> streams;  ///< one entry per stream the pool has served

  std::uint64_t allocations = 0;           ///< successful allocations
  std::uint64_t deallocations = 0;         ///< deallocations
  std::uint64_t failed_allocations = 0;    ///< allocations that threw
  std::uint64_t splits = 0;                ///< blocks split to serve a smaller request
  std::uint64_t merges = 0;                ///< free neighbours coalesced
  std::uint64_t upstream_allocations = 0;  ///< segments allocated from the upstream resource
  std::uint64_t upstream_deallocations = 0;  ///< segments given back to it
  std::uint64_t map_calls = 0;             ///< times physical memory was mapped (expandable)
  std::uint64_t unmap_calls = 0;           ///< times physical memory was unmapped (expandable)
  std::uint64_t device_synchronizations = 0;  ///< device-wide synchronisations (out of memory)
  std::uint64_t oom_retries = 0;           ///< allocations retried after upstream ran out
  std::uint64_t events_recorded = 0;       ///< events the pool recorded
  std::uint64_t stream_waits = 0;          ///< device-side waits for another stream's frees
  std::uint64_t released_segments = 0;     ///< segments given back by the release policy
};

}  // namespace gpulife
