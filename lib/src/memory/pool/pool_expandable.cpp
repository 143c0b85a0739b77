// SPDX-License-Identifier: Apache-2.0
// Expandable segments: one reserved virtual address range per stream and size pool, tiled by
// blocks like any segment. Blocks are either wholly mapped or wholly unmapped; free unmapped
// blocks are kept per range (not in the index), and a range grows by mapping the cheapest run of
// chunks, next to a free mapped block when there is one. Free mapped chunks whose users are
// known to be done are unmapped by the release policy, trim() and the out-of-memory path. Chunks
// are mapped and unmapped outside the block mutex; the blocks concerned are claimed (marked
// allocated, in no structure) meanwhile, so that nothing else touches them.

#include <algorithm>
#include <exception>
#include <limits>
#include <string>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"
#include "memory/pool/pool_state.hpp"

namespace gpulife {

using detail::pool::Block;
using detail::pool::Fence;
using detail::pool::PoolKind;
using detail::pool::Segment;
using detail::pool::StreamState;

namespace {

std::size_t kind_index(PoolKind kind) noexcept { return static_cast<std::size_t>(kind); }
std::size_t round_up(std::size_t v, std::size_t to) noexcept { return (v + to - 1) / to * to; }
std::size_t round_down(std::size_t v, std::size_t to) noexcept { return v / to * to; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// State: the range bookkeeping (block mutex held)

Segment* PoolResource::State::range_of(const StreamState& state, PoolKind kind) const {
  const std::size_t i = static_cast<std::size_t>(state.index) * 2 + kind_index(kind);
  return i < ranges.size() ? ranges[i] : nullptr;
}

Segment* PoolResource::State::add_range(std::uintptr_t base, const StreamState& state,
                                        PoolKind kind) {
  const std::size_t i = static_cast<std::size_t>(state.index) * 2 + kind_index(kind);
  if (ranges.size() <= i) ranges.resize(i + 1, nullptr);
  Block* block = add_segment(base, range_bytes, kind, state.index, true);
  Segment* range = block->segment;
  try {
    range->unmapped.emplace(block->addr, block);
  } catch (...) {
    remove_segment(range);
    throw;
  }
  ranges[i] = range;
  return range;
}

void PoolResource::State::insert_unmapped(Block* block) {
  Segment& range = *block->segment;
  auto mergeable = [](const Block* n) { return n != nullptr && !n->allocated && !n->mapped; };
  if (Block* prev = block->prev; mergeable(prev)) {
    range.unmapped.erase(prev->addr);
    block->addr = prev->addr;
    block->size += prev->size;
    block->prev = prev->prev;
    if (prev->prev != nullptr) prev->prev->next = block;
    if (range.first == prev) range.first = block;
    blocks.recycle(prev);
  }
  if (Block* next = block->next; mergeable(next)) {
    range.unmapped.erase(next->addr);
    block->size += next->size;
    block->next = next->next;
    if (next->next != nullptr) next->next->prev = block;
    blocks.recycle(next);
  }
  block->fences.clear();
  range.unmapped[block->addr] = block;  // may throw: the block is then simply not reused
}

PoolResource::State::Growth PoolResource::State::claim_growth(Segment* range, std::size_t size,
                                                              const StreamState& state) {
  Growth best;
  best.range = range;
  std::size_t best_cost = std::numeric_limits<std::size_t>::max();
  for (const auto& [addr, u] : range->unmapped) {
    Block* p = u->prev;
    const bool use_prefix = p != nullptr && !p->allocated && p->mapped && p->after == nullptr &&
                            p->size < size && streams.ready_for(p->fences, state.index);
    const std::size_t have = use_prefix ? p->size : 0;
    const std::size_t map = round_up(size - have, granularity);
    if (map > u->size || map >= best_cost) continue;
    best_cost = map;
    best.prefix = use_prefix ? p : nullptr;
    best.fresh = u;
    best.map_bytes = map;
  }
  if (best.fresh == nullptr) return best;
  // Claim: split the unmapped block after the part to map, take the prefix out of the index.
  Block* u = best.fresh;
  Block* rest = u->size > best.map_bytes ? blocks.make() : nullptr;
  range->unmapped.erase(u->addr);
  if (rest != nullptr) {
    rest->addr = u->addr + best.map_bytes;
    rest->size = u->size - best.map_bytes;
    rest->segment = range;
    rest->mapped = false;
    rest->prev = u;
    rest->next = u->next;
    if (u->next != nullptr) u->next->prev = rest;
    u->next = rest;
    u->size = best.map_bytes;
    range->unmapped[rest->addr] = rest;  // a failure here loses the rest for reuse, no more
  }
  u->allocated = true;  // claimed
  if (best.prefix != nullptr) {
    if (best.prefix->indexed) unindex(best.prefix);
    best.prefix->allocated = true;
  }
  return best;
}

Block* PoolResource::State::finish_growth(const Growth& growth) {
  Segment& range = *growth.range;
  Block* fresh = growth.fresh;
  fresh->mapped = true;
  range.mapped_bytes += growth.map_bytes;
  note_reserved(range.kind, static_cast<std::ptrdiff_t>(growth.map_bytes));
  streams.at(range.stream).mapped_bytes += growth.map_bytes;
  ++counters.map_calls;
  Block* block = fresh;
  if (Block* p = growth.prefix) {
    p->size += fresh->size;
    p->next = fresh->next;
    if (fresh->next != nullptr) fresh->next->prev = p;
    blocks.recycle(fresh);
    block = p;
  }
  block->allocated = false;
  // Not merged with its neighbours here: they may hold other streams' fences, and the block is
  // handed out without waiting. The caller merges the rest it splits off.
  return block;
}

void PoolResource::State::abandon_growth(const Growth& growth) noexcept {
  growth.fresh->allocated = false;
  try {
    insert_unmapped(growth.fresh);
  } catch (...) {
  }
  if (Block* p = growth.prefix) {
    p->allocated = false;
    merge(p);  // a neighbour may have been freed meanwhile
    index(p);
  }
}

void PoolResource::State::claim_unmaps(std::uint64_t idle_after, std::size_t want,
                                       std::vector<Block*>& out, const Segment* keep) {
  // Oldest indexed first. A growth (a finite `want`, no idle age) gives up after a few blocks
  // whose users may still run: the older ones were tried first, the younger are likelier busy.
  const bool bounded = idle_after == 0 && want != std::numeric_limits<std::size_t>::max();
  constexpr int max_busy = 16;
  int busy = 0;
  std::vector<Block*> candidates;
  std::size_t found = 0;
  for (auto it = unmappable.begin(); it != unmappable.end() && found < want; ++it) {
    Block* b = &*it;
    if (b->segment == keep) continue;
    if (idle_after != 0 && tick - b->freed_at < idle_after) continue;
    if (!streams.ready_for(b->fences, 0)) {  // users may still run: not ordered
      if (bounded && ++busy > max_busy) break;
      continue;
    }
    candidates.push_back(b);
    found += round_down(b->end(), granularity) - round_up(b->addr, granularity);
  }
  std::size_t claimed = 0;
  for (Block* b : candidates) {
    if (claimed >= want) break;
    const std::uintptr_t hi = round_down(b->end(), granularity);
    // As many whole chunks as still wanted, from the block's end: the rest stays mapped.
    const std::uintptr_t lo = std::max<std::uintptr_t>(
        round_up(b->addr, granularity),
        want - claimed >= hi ? 0 : hi - round_up(want - claimed, granularity));
    // Split into a mapped head, the whole chunks, and a mapped tail.
    Block* middle = blocks.make();
    Block* tail = hi < b->end() ? blocks.make() : nullptr;
    if (b->indexed) unindex(b);
    b->fences.clear();  // all complete (checked above)
    Block* head = nullptr;
    std::uint64_t made = 0;
    if (lo > b->addr) {
      head = b;
      split(b, lo - b->addr, middle);  // middle = [lo, end)
      ++made;
    } else {
      blocks.recycle(middle);
      middle = b;
    }
    if (tail != nullptr) {
      split(middle, hi - lo, tail);
      ++made;
    }
    counters.splits -= made;  // not splits for allocations
    middle->allocated = true;  // claimed while it is unmapped
    middle->mapped = false;
    if (head != nullptr) index(head);
    if (tail != nullptr) index(tail);
    claimed += middle->size;
    out.push_back(middle);
  }
}

void PoolResource::State::finish_unmap(Block* block) noexcept {
  Segment& range = *block->segment;
  range.mapped_bytes -= block->size;
  note_reserved(range.kind, -static_cast<std::ptrdiff_t>(block->size));
  streams.at(range.stream).mapped_bytes -= block->size;
  ++counters.unmap_calls;
  block->allocated = false;
  try {
    insert_unmapped(block);
  } catch (...) {
  }
}

// ---------------------------------------------------------------------------------------------
// PoolResource: growing and unmapping (the upstream calls happen here, outside the lock)

std::size_t PoolResource::unmap_free(std::uint64_t idle_after, std::size_t want,
                                     const void* keep_range) noexcept {
  State& s = *state_;
  if (!s.expandable) return 0;
  std::vector<Block*> claimed;
  try {
    std::scoped_lock lock(s.mutex);
    const Segment* keep = nullptr;
    if (keep_range != nullptr) {
      auto it = s.by_address.find(reinterpret_cast<std::uintptr_t>(keep_range));
      if (it != s.by_address.end()) keep = it->second;
    }
    s.claim_unmaps(idle_after, want, claimed, keep);
  } catch (...) {
    // no room for the list or a split: what was claimed is unmapped below
  }
  std::size_t bytes = 0;
  for (Block* b : claimed) {
    upstream_->unmap(b->ptr(), b->size);
    bytes += b->size;
  }
  if (!claimed.empty()) {
    std::scoped_lock lock(s.mutex);
    for (Block* b : claimed) s.finish_unmap(b);
  }
  return bytes;
}

void* PoolResource::allocate_expandable(std::size_t bytes, std::size_t size, bool large,
                                        StreamView stream) {
  State& s = *state_;
  const PoolKind kind = large ? PoolKind::large : PoolKind::small;
  detail::StreamImpl& impl = *stream.impl();
  auto failed = [&] {
    std::scoped_lock lock(s.mutex);
    ++s.counters.failed_allocations;
  };
  std::size_t released = 0;
  int retries = 0;  // out-of-memory retries so far
  while (true) {
    State::Growth growth;
    bool need_range = false;
    {
      std::scoped_lock lock(s.mutex);
      StreamState& state = s.streams.of(impl);
      Segment* range = s.range_of(state, kind);
      if (range == nullptr) {
        need_range = true;
      } else {
        growth = s.claim_growth(range, size, state);
      }
    }
    if (need_range) {
      void* base = nullptr;
      try {
        base = upstream_->reserve_range(s.range_bytes);
      } catch (...) {
        failed();
        throw;
      }
      std::scoped_lock lock(s.mutex);
      StreamState& state = s.streams.of(impl);
      if (s.range_of(state, kind) == nullptr) {
        try {
          (void)s.add_range(reinterpret_cast<std::uintptr_t>(base), state, kind);
          // The whole range is the segment tools see (compute-sanitizer, through NVTX); only
          // the blocks marked live in it may be touched.
          device().impl().register_pool_segment(base, s.range_bytes);
          continue;
        } catch (...) {
          upstream_->release_range(base, s.range_bytes);
          throw;
        }
      }
      upstream_->release_range(base, s.range_bytes);  // another thread made it meanwhile
      continue;
    }
    if (growth.fresh == nullptr) {
      failed();
      throw OutOfMemoryError("out of memory: " + name() + " could not allocate " +
                                 detail::format_bytes(bytes) + " on " + device().name() +
                                 ": the stream's expandable segment of " +
                                 detail::format_bytes(s.range_bytes) + " is full",
                             bytes);
    }
    if (options_.give_back_before_growing && retries == 0) {
      (void)give_back_for_growth(growth.map_bytes,
                                 reinterpret_cast<const void*>(growth.range->base));
    }
    try {
      upstream_->map(growth.fresh->ptr(), growth.map_bytes);
    } catch (const OutOfMemoryError& e) {
      {
        std::scoped_lock lock(s.mutex);
        s.abandon_growth(growth);
        ++s.counters.oom_retries;
      }
      if (retries < 2) {
        // First what goes without synchronising, then everything after a synchronisation.
        released += release_for_retry(retries == 1);
        ++retries;
        continue;
      }
      failed();
      const PoolStatistics stats = memory_stats();
      throw OutOfMemoryError(
          "out of memory: " + name() + " could not allocate " + detail::format_bytes(bytes) +
              " (mapping " + detail::format_bytes(growth.map_bytes) + ") on " + device().name() +
              ", stream " + std::to_string(stream.id()) + ": " +
              detail::format_bytes(stats.total.allocated_bytes) + " in use, " +
              detail::format_bytes(stats.total.cached_bytes) +
              " reserved but unallocated (largest free block " +
              detail::format_bytes(stats.total.largest_free_block) + "), " +
              detail::format_bytes(stats.total.reserved_bytes) + " mapped, after releasing " +
              detail::format_bytes(released) +
              " and synchronising the device; upstream said: " + e.what(),
          bytes);
    } catch (...) {
      {
        std::scoped_lock lock(s.mutex);
        s.abandon_growth(growth);
      }
      failed();
      throw;
    }
    std::scoped_lock lock(s.mutex);
    StreamState& state = s.streams.of(impl);
    Block* block = s.finish_growth(growth);
    try {
      s.hand_out(block, size, bytes, state);
    } catch (...) {
      s.merge(block);
      s.index(block);
      ++s.counters.failed_allocations;
      throw;
    }
    // The rest split off may border a free block (a hole mapped whole, or a neighbour freed
    // while the growth was claimed): merge them.
    if (Block* rest = block->next; rest != nullptr && rest->indexed && rest->after == nullptr) {
      s.unindex(rest);
      s.merge(rest);
      s.index(rest);
    }
    ++s.misses;
    device().impl().mark_allocated(block->ptr(), block->size, impl);
    return block->ptr();
  }
}

}  // namespace gpulife
