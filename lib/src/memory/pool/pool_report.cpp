// SPDX-License-Identifier: Apache-2.0
// What a PoolResource says about itself: memory_stats() and memory_summary().

#include <array>
#include <cstdio>
#include <mutex>
#include <string>

#include "detail/format.hpp"
#include "memory/pool/pool_state.hpp"

namespace gpulife {

using detail::pool::PoolKind;

PoolStatistics PoolResource::memory_stats() const {
  State& s = *state_;
  std::scoped_lock lock(s.mutex);
  PoolStatistics stats = s.counters;
  auto fill = [&](PoolCounters& c, PoolKind kind) {
    const State::KindCounters& k = s.kinds[static_cast<std::size_t>(kind)];
    c.reserved_bytes = k.reserved;
    c.allocated_bytes = k.allocated;
    c.requested_bytes = k.requested;
    c.cached_bytes = k.reserved - k.allocated;
    c.inactive_split_bytes = s.inactive_split(kind);
    c.peak_reserved_bytes = k.peak_reserved;
    c.peak_allocated_bytes = k.peak_allocated;
    c.peak_requested_bytes = k.peak_requested;
    c.segments = k.segments;
    c.allocated_blocks = k.allocated_blocks;
    c.free_blocks = 0;
    for (const auto& segment : s.segments) {
      if (segment->kind != kind) continue;
      for (const auto* b = segment->first; b != nullptr; b = b->next) {
        if (!b->allocated) ++c.free_blocks;
      }
    }
    c.largest_free_block = s.largest_free(kind);
  };
  fill(stats.small, PoolKind::small);
  fill(stats.large, PoolKind::large);
  PoolCounters& t = stats.total;
  const PoolCounters& a = stats.small;
  const PoolCounters& b = stats.large;
  t.reserved_bytes = a.reserved_bytes + b.reserved_bytes;
  t.allocated_bytes = a.allocated_bytes + b.allocated_bytes;
  t.requested_bytes = a.requested_bytes + b.requested_bytes;
  t.cached_bytes = a.cached_bytes + b.cached_bytes;
  t.inactive_split_bytes = a.inactive_split_bytes + b.inactive_split_bytes;
  t.peak_reserved_bytes = s.peak_reserved;
  t.peak_allocated_bytes = s.peak_allocated;
  t.peak_requested_bytes = s.peak_requested;
  t.segments = a.segments + b.segments;
  t.allocated_blocks = a.allocated_blocks + b.allocated_blocks;
  t.free_blocks = a.free_blocks + b.free_blocks;
  t.largest_free_block = std::max(a.largest_free_block, b.largest_free_block);
  for (const auto& state : s.streams.all()) {
    PoolStreamCounters c;
    c.stream_id = state->id;
    c.allocated_bytes = state->allocated_bytes;
    c.requested_bytes = state->requested_bytes;
    c.reserved_bytes = state->mapped_bytes;
    c.allocations = state->allocations;
    c.cross_stream_reuses = state->cross_stream_reuses;
    c.stream_waits = state->stream_waits;
    stats.streams.push_back(c);
  }
  return stats;
}

std::string PoolResource::validate() const {
  const State& s = *state_;
  std::scoped_lock lock(s.mutex);
  std::array<std::size_t, 2> allocated{};
  std::array<std::size_t, 2> requested{};
  std::array<std::size_t, 2> reserved{};
  std::size_t indexed = 0;
  std::size_t binned = 0;
  std::size_t live = 0;
  auto at = [](const detail::pool::Block* b) {
    return " at " + detail::format_pointer(b->ptr()) + " (+" + std::to_string(b->size) + ")";
  };
  for (const auto& segment : s.segments) {
    const auto k = static_cast<std::size_t>(segment->kind);
    std::uintptr_t expect = segment->base;
    std::size_t mapped = 0;
    std::size_t seg_allocated = 0;
    std::size_t seg_live = 0;
    const detail::pool::Block* prev = nullptr;
    for (const auto* b = segment->first; b != nullptr; prev = b, b = b->next) {
      if (b->segment != segment.get()) return "a block points to another segment" + at(b);
      if (b->prev != prev) return "a block's prev link is wrong" + at(b);
      if (b->addr != expect) return "blocks leave a gap or overlap" + at(b);
      if (b->size == 0) return "an empty block" + at(b);
      expect = b->end();
      if (b->mapped) mapped += b->size;
      if (b->allocated) {
        // Claimed blocks (mapping in flight) are allocated but not live.
        if (s.live.find(b->addr) != b) continue;
        ++live;
        ++seg_live;
        seg_allocated += b->size;
        allocated[k] += b->size;
        requested[k] += b->requested;
        if (b->indexed) return "a live block is in the free index" + at(b);
        continue;
      }
      if (b->binned) {
        ++binned;
        if (b->indexed || !b->mapped) return "a quick-listed block is indexed or unmapped" + at(b);
        continue;
      }
      if (b->mapped != b->indexed) return "a free block is indexed iff mapped, not so" + at(b);
      if (b->indexed) ++indexed;
      if (!b->mapped && segment->unmapped.find(b->addr) == segment->unmapped.end()) {
        return "a free unmapped block is not listed with its range" + at(b);
      }
      const bool own_stream = s.options.cross_stream == CrossStreamReuse::own_stream;
      if (prev != nullptr && !prev->allocated && !prev->binned && prev->mapped == b->mapped &&
          prev->after == nullptr && b->after == nullptr && !own_stream) {
        return "two free neighbours were not merged" + at(b);
      }
    }
    if (expect != segment->base + segment->size) return "blocks do not cover their segment";
    if (segment->expandable) {
      if (mapped != segment->mapped_bytes) return "a range's mapped bytes are not its blocks'";
      if (mapped % s.granularity != 0) return "a range maps part of a chunk";
    } else if (mapped != segment->size) {
      return "a segment from upstream has an unmapped block";
    }
    if (seg_allocated != segment->allocated_bytes || seg_live != segment->live_blocks) {
      return "a segment's allocated bytes or live blocks are not its blocks'";
    }
    reserved[k] += segment->reserved_bytes();
  }
  for (std::size_t k = 0; k < 2; ++k) {
    if (allocated[k] != s.kinds[k].allocated) return "allocated bytes are not the blocks'";
    if (requested[k] != s.kinds[k].requested) return "requested bytes are not the blocks'";
    if (reserved[k] != s.kinds[k].reserved) return "reserved bytes are not the segments'";
  }
  if (indexed != s.free[0].size() + s.free[1].size()) return "the free index holds other blocks";
  if (live != s.live.size()) return "the live map holds other blocks";
  std::size_t listed = 0;
  for (const auto& state : s.streams.all()) listed += state->quick.size();
  if (listed != binned) return "the quick lists hold other blocks";
  // No two live blocks overlap: they tile disjoint segments, and segments do not overlap.
  std::uintptr_t end = 0;
  for (const auto& [base, segment] : s.by_address) {
    if (base < end) return "two segments overlap";
    end = base + segment->size;
  }
  return {};
}

namespace {

std::string row(const char* name, std::size_t total, std::size_t small, std::size_t large,
                bool bytes) {
  auto cell = [&](std::size_t v) { return bytes ? detail::format_bytes(v) : std::to_string(v); };
  char line[160];
  std::snprintf(line, sizeof line, "| %-24s | %14s | %14s | %14s |\n", name, cell(total).c_str(),
                cell(small).c_str(), cell(large).c_str());
  return line;
}

}  // namespace

std::string PoolResource::memory_summary() const {
  const PoolStatistics st = memory_stats();
  const std::string rule =
      "|--------------------------+----------------+----------------+----------------|\n";
  std::string text;
  text += "gpulife PoolResource memory summary: " + name() + " on " + device().name() +
          (uses_expandable_segments() ? ", expandable segments\n" : "\n");
  text += rule;
  text += "| metric                   |          total |     small pool |     large pool |\n";
  text += rule;
  auto bytes_row = [&](const char* name, std::size_t PoolCounters::*field) {
    text += row(name, st.total.*field, st.small.*field, st.large.*field, true);
  };
  auto count_row = [&](const char* name, std::size_t PoolCounters::*field) {
    text += row(name, st.total.*field, st.small.*field, st.large.*field, false);
  };
  bytes_row("reserved", &PoolCounters::reserved_bytes);
  bytes_row("  peak", &PoolCounters::peak_reserved_bytes);
  bytes_row("allocated", &PoolCounters::allocated_bytes);
  bytes_row("  peak", &PoolCounters::peak_allocated_bytes);
  bytes_row("requested", &PoolCounters::requested_bytes);
  bytes_row("  peak", &PoolCounters::peak_requested_bytes);
  bytes_row("reserved, not allocated", &PoolCounters::cached_bytes);
  bytes_row("  inactive split", &PoolCounters::inactive_split_bytes);
  bytes_row("  largest free block", &PoolCounters::largest_free_block);
  count_row("segments", &PoolCounters::segments);
  count_row("allocated blocks", &PoolCounters::allocated_blocks);
  count_row("free blocks", &PoolCounters::free_blocks);
  text += rule;
  char line[256];
  std::snprintf(line, sizeof line,
                "allocations %llu, frees %llu, failed %llu; splits %llu, merges %llu\n"
                "upstream: %llu segment allocations, %llu frees, %llu maps, %llu unmaps; "
                "%llu device synchronisations, %llu out-of-memory retries\n"
                "streams: %llu events recorded, %llu device-side waits\n",
                static_cast<unsigned long long>(st.allocations),
                static_cast<unsigned long long>(st.deallocations),
                static_cast<unsigned long long>(st.failed_allocations),
                static_cast<unsigned long long>(st.splits),
                static_cast<unsigned long long>(st.merges),
                static_cast<unsigned long long>(st.upstream_allocations),
                static_cast<unsigned long long>(st.upstream_deallocations),
                static_cast<unsigned long long>(st.map_calls),
                static_cast<unsigned long long>(st.unmap_calls),
                static_cast<unsigned long long>(st.device_synchronizations),
                static_cast<unsigned long long>(st.oom_retries),
                static_cast<unsigned long long>(st.events_recorded),
                static_cast<unsigned long long>(st.stream_waits));
  text += line;
  for (const PoolStreamCounters& c : st.streams) {
    std::snprintf(line, sizeof line,
                  "  stream %llu: %s allocated (%s requested), %llu allocations, %llu from other "
                  "streams, %llu waits\n",
                  static_cast<unsigned long long>(c.stream_id),
                  detail::format_bytes(c.allocated_bytes).c_str(),
                  detail::format_bytes(c.requested_bytes).c_str(),
                  static_cast<unsigned long long>(c.allocations),
                  static_cast<unsigned long long>(c.cross_stream_reuses),
                  static_cast<unsigned long long>(c.stream_waits));
    text += line;
  }
  return text;
}

}  // namespace gpulife
