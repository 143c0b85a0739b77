// SPDX-License-Identifier: Apache-2.0
#pragma once

// The state behind a PoolResource, shared by the files that implement it: the segment map and
// block index (pool_blocks.hpp, pool_segments.cpp), the stream policy (pool_streams.hpp,
// pool_events.cpp) and the reports (pool_report.cpp).

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>

#include "memory/pool/pool_blocks.hpp"
#include "memory/pool/pool_streams.hpp"

namespace gpulife {

struct PoolResource::State {
  using Block = detail::pool::Block;
  using Segment = detail::pool::Segment;
  using PoolKind = detail::pool::PoolKind;
  using StreamIndex = detail::pool::StreamIndex;

  /// Counters of one size pool, kept up to date under the block mutex.
  struct KindCounters {
    std::size_t reserved = 0;
    std::size_t allocated = 0;
    std::size_t requested = 0;
    std::size_t peak_reserved = 0;
    std::size_t peak_allocated = 0;
    std::size_t peak_requested = 0;
    std::size_t segments = 0;
    std::size_t allocated_blocks = 0;
  };

  /// A segment taken out of the pool, to be given back upstream outside the block mutex: freed
  /// on `stream` after the events recorded on `wait_on` (the other streams whose work may still
  /// use it).
  struct Release {
    void* ptr = nullptr;
    std::size_t bytes = 0;
    detail::StreamImpl* stream = nullptr;
    std::vector<detail::StreamImpl*> wait_on;
    std::vector<std::shared_ptr<detail::pool::AfterGroup>> groups;
  };

  /// What a search of the index found: a block, and whether taking it needs the stream to wait.
  struct Found {
    Block* block = nullptr;
    bool needs_wait = false;
  };

  explicit State(const PoolOptions& o) : options(o) {}

  const PoolOptions& options;
  Device device;
  bool expandable = false;       // segments are virtual ranges mapped in chunks
  std::size_t granularity = 0;   // of the mapping, when expandable
  std::size_t range_bytes = 0;   // reserved per range

  mutable std::mutex mutex;  // the block mutex: everything below unless marked otherwise
  std::mutex event_mutex;    // events: see pool_streams.hpp

  detail::pool::StreamTable streams;
  detail::pool::BlockPool blocks;
  std::array<detail::pool::FreeIndex, 2> free;
  detail::pool::LiveMap live;
  detail::pool::UnmapList unmappable;  // indexed free blocks that hold a whole chunk
  std::vector<std::unique_ptr<Segment>> segments;
  std::map<std::uintptr_t, Segment*> by_address;
  // Expandable ranges by (stream, kind): index stream * 2 + kind.
  std::vector<Segment*> ranges;
  detail::pool::PendingGroups after_groups;

  std::array<KindCounters, 2> kinds{};
  std::size_t peak_reserved = 0;
  std::size_t peak_allocated = 0;
  std::size_t peak_requested = 0;
  std::uint64_t tick = 0;  // allocations so far: the release policy's clock
  std::uint64_t frees = 0;  // frees so far: least recently used order
  PoolStatistics counters;  // the event counters; sizes are filled in by memory_stats()
  std::uint64_t hits = 0;
  std::uint64_t misses = 0;

  // ---- the segment map (pool_segments.cpp); block mutex held ----

  /// Adds a segment of `bytes` at `base` with one free block covering it (not indexed).
  Block* add_segment(std::uintptr_t base, std::size_t bytes, PoolKind kind, StreamIndex stream,
                     bool expandable_range);
  /// Removes a wholly free segment whose block is not indexed.
  void remove_segment(Segment* segment) noexcept;
  /// Splits `block` (not indexed) after `size` bytes; returns the new free tail (not indexed).
  /// `spare` is a block from `blocks.make()` for the tail.
  Block* split(Block* block, std::size_t size, Block* spare) noexcept;
  /// Merges free `block` (not indexed) with its free neighbours.
  void merge(Block* block) noexcept;
  /// Computes the home of free `block` and puts it in the index.
  void index(Block* block) noexcept;
  void unindex(Block* block) noexcept;
  /// Merges and indexes every stream's quick-listed blocks.
  void drain_quick() noexcept;
  /// True if the rest of `block` after `size` bytes is worth a block of its own.
  [[nodiscard]] bool should_split(const Block* block, std::size_t size) const noexcept;
  /// True if `block` may serve a request of `size` under the oversize rules.
  [[nodiscard]] bool acceptable(const Block* block, std::size_t size) const noexcept;
  /// Bytes of the free mapped blocks in segments that also hold live blocks.
  [[nodiscard]] std::size_t inactive_split(PoolKind kind) const noexcept;
  /// The largest free mapped block of `kind`.
  [[nodiscard]] std::size_t largest_free(PoolKind kind) noexcept;
  /// Takes a wholly free segment out of the pool and describes its release.
  Release detach_segment(Segment* segment);
  void note_reserved(PoolKind kind, std::ptrdiff_t delta) noexcept;

  // ---- allocation and release (pool_resource.cpp); block mutex held ----

  /// The best-fitting free block that work on `state`'s stream may use at once, or, with
  /// `any_stream`, the best-fitting one of any stream (then perhaps needing a wait).
  Found find_block(PoolKind kind, std::size_t size, const detail::pool::StreamState& state,
                   bool any_stream);
  /// Takes free `block` for a request of `size` (`requested` asked) on `state`'s stream:
  /// splits off the rest and records it as live. Does not tell the device.
  void hand_out(Block* block, std::size_t size, std::size_t requested,
                detail::pool::StreamState& state);
  /// Wholly free segments to give back: all of them with `all`; else the least recently used
  /// while the cached bytes exceed `max_cached_bytes` or until `want` bytes, and with `idle`
  /// those idle too long.
  void collect_releases(bool all, bool idle, std::vector<Release>& out, std::size_t want = 0);
  [[nodiscard]] std::size_t cached_bytes() const noexcept {
    return kinds[0].reserved + kinds[1].reserved - kinds[0].allocated - kinds[1].allocated;
  }

  // ---- expandable segments (pool_expandable.cpp); block mutex held ----

  /// Where a range grows: the free mapped block before the unmapped one (may be null), the
  /// claimed unmapped part to map, and its size.
  struct Growth {
    Segment* range = nullptr;
    Block* prefix = nullptr;
    Block* fresh = nullptr;
    std::size_t map_bytes = 0;
  };
  /// The range of `state`'s stream and `kind`, or null.
  [[nodiscard]] Segment* range_of(const detail::pool::StreamState& state, PoolKind kind) const;
  /// Registers a new range reserved at `base`.
  Segment* add_range(std::uintptr_t base, const detail::pool::StreamState& state, PoolKind kind);
  /// Claims the cheapest place in `range` to map memory for `size` bytes (fresh is null if the
  /// range has no room).
  Growth claim_growth(Segment* range, std::size_t size, const detail::pool::StreamState& state);
  /// The mapping succeeded: joins prefix and fresh memory into one free block (not indexed).
  Block* finish_growth(const Growth& growth);
  /// The mapping failed: gives the claimed blocks back.
  void abandon_growth(const Growth& growth) noexcept;
  /// Claims the whole free chunks of free mapped blocks whose users are known to be done, for
  /// unmapping: with `idle_after` those freed that many allocations ago or earlier, else the
  /// least recently freed until `want` bytes (all with `want` at its maximum); none of `keep`.
  void claim_unmaps(std::uint64_t idle_after, std::size_t want, std::vector<Block*>& out,
                    const Segment* keep = nullptr);
  /// The unmapping of claimed `block` is done.
  void finish_unmap(Block* block) noexcept;
  /// Merges free unmapped `block` with its free unmapped neighbours and records it.
  void insert_unmapped(Block* block);

  // ---- the stream policy's events (pool_events.cpp); block mutex NOT held ----

  /// Closes the open epochs of `close` with events, queries the recorded events (each stream's
  /// oldest first, until one has not completed), the record_stream groups in `candidates` and
  /// up to `group_budget` more pending groups in turn (all of them with the maximum), and
  /// applies what completed. Takes the event mutex.
  /// @return true if something new is known to have completed
  bool sweep(const std::vector<StreamIndex>& close,
             std::size_t group_budget = ~std::size_t{0},
             std::vector<std::shared_ptr<detail::pool::AfterGroup>> candidates = {}) noexcept;
  /// The record_stream groups of the free blocks of `kind` that would best fit `size` if their
  /// events had completed (those a sweep for this allocation should query first).
  void candidate_groups(PoolKind kind, std::size_t size,
                        std::vector<std::shared_ptr<detail::pool::AfterGroup>>& out);
  /// Makes `waiter`'s stream wait on the device for `fences` (but for those an earlier wait
  /// already covers) and `groups` (event mutex held by the caller). Falls back to waiting on the
  /// host for an event it cannot make the stream wait for.
  /// @return the number of device-side waits
  std::size_t wait_for(detail::pool::StreamState& waiter, const detail::pool::FenceSet& fences,
                       const std::vector<std::shared_ptr<detail::pool::AfterGroup>>& groups);
  /// Gives `releases` back to `upstream` in stream order (takes the event mutex for the events
  /// that order a release after other streams' work).
  void give_back(DeviceMemoryResource& upstream, std::vector<Release>& releases) noexcept;
};

}  // namespace gpulife
