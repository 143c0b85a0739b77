// SPDX-License-Identifier: Apache-2.0
// PoolResource: allocation and release, the release policy and the out-of-memory path. The
// segment map lives in pool/pool_segments.cpp, the stream policy's events in
// pool/pool_events.cpp, expandable segments in pool/pool_expandable.cpp and the reports in
// pool/pool_report.cpp.

#include <gpulife/memory/pool_resource.hpp>

#include <algorithm>
#include <array>
#include <exception>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"
#include "memory/pool/pool_state.hpp"

namespace gpulife {

using detail::pool::AfterGroup;
using detail::pool::Block;
using detail::pool::Fence;
using detail::pool::FenceSet;
using detail::pool::home_any;
using detail::pool::home_mixed;
using detail::pool::PoolKind;
using detail::pool::Segment;
using detail::pool::StreamIndex;
using detail::pool::StreamState;

namespace {

constexpr std::size_t block_rounding = 512;
// Blocks of other streams probed per home before the pool looks elsewhere: the index is
// ordered by size, not by age, so a few candidates are tried and a miss stays cheap.
constexpr int cross_stream_probes = 4;
// Pending record_stream groups a slow-path allocation queries besides those of the blocks that
// would fit it: bounded, so that an allocation costs the same however many are pending.
constexpr std::size_t sweep_group_budget = 4;
// The release policy's idle scan runs once per this many allocations.
constexpr std::uint64_t idle_scan_interval = 1024;

std::size_t kind_index(PoolKind kind) noexcept { return static_cast<std::size_t>(kind); }

std::size_t round_up(std::size_t bytes, std::size_t to) noexcept {
  return (bytes + to - 1) / to * to;
}

void check_options(const PoolOptions& o) {
  auto require = [](bool ok, const char* what) {
    if (!ok) throw std::invalid_argument(what);
  };
  require(o.small_size >= block_rounding && o.small_size % block_rounding == 0,
          "options.small_size: must be a positive multiple of 512");
  require(o.small_segment >= o.small_size && o.small_segment % block_rounding == 0,
          "options.small_segment: must be a multiple of 512 and at least small_size");
  require(o.large_rounding >= block_rounding && o.large_rounding % block_rounding == 0,
          "options.large_rounding: must be a positive multiple of 512");
  require(o.medium_segment % o.large_rounding == 0 && o.medium_segment >= o.medium_limit,
          "options.medium_segment: must be a multiple of large_rounding and at least "
          "medium_limit");
  require(o.max_split_size > o.small_size, "options.max_split_size: must exceed small_size");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Sizes

std::size_t PoolResource::size_class(std::size_t bytes) noexcept {
  if (bytes <= block_rounding) return block_rounding;
  if (bytes > std::numeric_limits<std::size_t>::max() - block_rounding) {
    return std::numeric_limits<std::size_t>::max() / block_rounding * block_rounding;
  }
  return round_up(bytes, block_rounding);
}

PoolResource::PoolResource(std::shared_ptr<DeviceMemoryResource> upstream, PoolOptions options)
    : DeviceMemoryResource(upstream ? upstream->device()
                                    : throw std::invalid_argument("upstream: null resource")),
      upstream_(std::move(upstream)),
      options_(options),
      state_((check_options(options_), make_state())) {}

std::unique_ptr<PoolResource::State> PoolResource::make_state() const {
  auto state = std::make_unique<State>(options_);
  state->device = device();
  if (options_.expandable_segments) {
    state->granularity = upstream_->mapping_granularity();
    state->expandable = state->granularity != 0;
    if (state->expandable) {
      // Address space is cheap, memory is not: each range spans four times the device, so that a range whose middle was unmapped still has room to
      // map a large block contiguously.
      const std::size_t total = device().memory_info().total_bytes;
      state->range_bytes = round_up(std::max(total, state->granularity), state->granularity) * 4;
    }
  }
  return state;
}

bool PoolResource::uses_expandable_segments() const noexcept { return state_->expandable; }

// ---------------------------------------------------------------------------------------------
// Finding a block

PoolResource::State::Found PoolResource::State::find_block(PoolKind kind, std::size_t size,
                                                           const StreamState& state,
                                                           bool any_stream) {
  auto& index = free[kind_index(kind)];
  const CrossStreamReuse policy = options.cross_stream;
  Found best;
  auto better = [&](const Block* c) { return best.block == nullptr || c->size < best.block->size; };
  auto consider_home = [&](StreamIndex home) {
    if (index.blocks_in(home) == 0) return;
    Block* c = index.best_fit(home, size);
    if (c != nullptr && acceptable(c, size) && better(c)) best = {c, false};
  };
  consider_home(state.index);
  if (policy == CrossStreamReuse::own_stream) return best;
  consider_home(home_any);
  if (best.block != nullptr && best.block->size == size) return best;  // exact: nothing is better

  // Other streams' blocks whose users are known to be done; with `any_stream`, any of them.
  auto probe_home = [&](StreamIndex home) {
    if (home == state.index || index.blocks_in(home) == 0) return;
    int probes = 0;
    for (Block* c = index.best_fit(home, size); c != nullptr && probes < cross_stream_probes;
         c = index.next_in_home(c), ++probes) {
      if (!better(c) || !acceptable(c, size)) return;
      if (c->after == nullptr && streams.ready_for(c->fences, state.index)) {
        best = {c, false};
        return;
      }
      if (any_stream) {
        best = {c, true};
        return;
      }
    }
  };
  for (const auto& other : streams.all()) probe_home(other->index);
  probe_home(home_mixed);
  return best;
}

void PoolResource::State::candidate_groups(PoolKind kind, std::size_t size,
                                           std::vector<std::shared_ptr<AfterGroup>>& out) {
  auto& index = free[kind_index(kind)];
  if (index.blocks_in(home_mixed) == 0) return;
  int probes = 0;
  for (Block* c = index.best_fit(home_mixed, size); c != nullptr && probes < cross_stream_probes;
       c = index.next_in_home(c), ++probes) {
    if (c->after != nullptr && acceptable(c, size)) out.push_back(after_groups.owner(c->after));
  }
}

// ---------------------------------------------------------------------------------------------
// Handing a block out

void PoolResource::State::hand_out(Block* block, std::size_t size, std::size_t requested,
                                   StreamState& state) {
  // Everything that may throw first, so that a failure leaves the block where it was. A block
  // that record_stream events still guard goes whole: a rest split off would lose them.
  Block* spare = block->after == nullptr && should_split(block, size) ? blocks.make() : nullptr;
  try {
    live.insert(block->addr, block);
  } catch (...) {
    if (spare != nullptr) blocks.recycle(spare);
    throw;
  }
  if (block->indexed) unindex(block);
  if (block->after != nullptr) {
    // The caller holds the group and waits for its events; it is no longer pending here.
    block->after->block = nullptr;
    (void)after_groups.remove(block->after);
    block->after = nullptr;
  }
  const bool cross = std::any_of(block->fences.begin(), block->fences.end(),
                                 [&](const Fence& f) { return f.stream != state.index; });
  if (spare != nullptr) index(split(block, size, spare));
  block->allocated = true;
  block->requested = requested;
  block->stream = state.index;
  block->fences.clear();
  Segment& segment = *block->segment;
  segment.allocated_bytes += block->size;
  ++segment.live_blocks;
  KindCounters& k = kinds[kind_index(segment.kind)];
  k.allocated += block->size;
  k.requested += requested;
  ++k.allocated_blocks;
  k.peak_allocated = std::max(k.peak_allocated, k.allocated);
  k.peak_requested = std::max(k.peak_requested, k.requested);
  peak_allocated = std::max(peak_allocated, kinds[0].allocated + kinds[1].allocated);
  peak_requested = std::max(peak_requested, kinds[0].requested + kinds[1].requested);
  state.allocated_bytes += block->size;
  state.requested_bytes += requested;
  ++state.allocations;
  if (cross) ++state.cross_stream_reuses;
  ++counters.allocations;
}

// ---------------------------------------------------------------------------------------------
// Releasing segments

PoolResource::State::Release PoolResource::State::detach_segment(Segment* segment) {
  Release release;
  release.ptr = reinterpret_cast<void*>(segment->base);
  release.bytes = segment->size;
  Block* block = segment->first;
  // The free goes on the stream of one unfinished user; the others' work is waited for.
  streams.prune(block->fences);
  if (block->fences.empty()) {
    release.stream = streams.at(segment->stream).impl;
  } else {
    release.stream = streams.at(block->fences.front().stream).impl;
    for (std::size_t i = 1; i < block->fences.size(); ++i) {
      release.wait_on.push_back(streams.at(block->fences[i].stream).impl);
    }
  }
  remove_segment(segment);
  ++counters.upstream_deallocations;
  ++counters.released_segments;
  return release;
}

void PoolResource::State::collect_releases(bool all, bool idle, std::vector<Release>& out,
                                           std::size_t want) {
  std::vector<Segment*> candidates;
  for (const auto& segment : segments) {
    if (segment->expandable || !segment->wholly_free()) continue;
    // Making room to grow takes only segments whose users are known to be done: one still in
    // use would be given back only to be needed again.
    if (want != 0) {
      streams.prune(segment->first->fences);
      if (!segment->first->fences.empty()) continue;
    }
    candidates.push_back(segment.get());
  }
  if (candidates.empty()) return;
  std::sort(candidates.begin(), candidates.end(),
            [](const Segment* a, const Segment* b) { return a->freed_seq < b->freed_seq; });
  out.reserve(out.size() + candidates.size());
  std::size_t released = 0;
  for (Segment* segment : candidates) {
    const bool idle_enough = idle && options.release_after_allocations != 0 &&
                             tick - segment->used_at >= options.release_after_allocations;
    if (!all && !idle_enough && released >= want && cached_bytes() <= options.max_cached_bytes) {
      continue;
    }
    released += segment->size;
    out.push_back(detach_segment(segment));
  }
}

// ---------------------------------------------------------------------------------------------
// allocate

void* PoolResource::do_allocate(std::size_t bytes, StreamView stream) {
  const std::size_t size = size_class(bytes);
  if (size < bytes || size > std::numeric_limits<std::size_t>::max() / 2) {
    throw OutOfMemoryError("out of memory: " + name() + " cannot allocate " +
                               std::to_string(bytes) + " bytes on " + device().name(),
                           bytes);
  }
  const bool large = size > options_.small_size;
  State& s = *state_;
  detail::StreamImpl& impl = *stream.impl();
  std::vector<State::Release> releases;
  void* ptr = nullptr;
  bool idle_scan = false;
  {
    std::scoped_lock lock(s.mutex);
    StreamState& state = s.streams.of(impl);
    for (auto& index : s.free) index.add_home(state.index);
    ++s.tick;
    State::Found found;
    // The steady state: a block of exactly this size that this stream freed.
    if (Block* quick = large ? nullptr : state.quick.take(size, 0)) {
      found.block = quick;
    } else {
      found = s.find_block(large ? PoolKind::large : PoolKind::small, size, state,
                           options_.cross_stream == CrossStreamReuse::wait);
    }
    if (found.block != nullptr && !found.needs_wait) {
      s.hand_out(found.block, size, bytes, state);
      ++s.hits;
      // Queued while the lock is held, so that it lands before any later free of the block.
      device().impl().mark_allocated(found.block->ptr(), found.block->size, impl);
      ptr = found.block->ptr();
      const std::uint64_t interval =
          std::max(idle_scan_interval, options_.release_after_allocations / 16);
      if (options_.release_after_allocations != 0 && s.tick % interval == 0) {
        idle_scan = true;
        s.drain_quick();
        s.collect_releases(false, true, releases);
      }
    }
  }
  if (ptr == nullptr) return allocate_slow(bytes, size, large, stream);
  if (!releases.empty()) s.give_back(*upstream_, releases);
  if (idle_scan) (void)unmap_free(options_.release_after_allocations,
                                  std::numeric_limits<std::size_t>::max());
  return ptr;
}

void* PoolResource::allocate_slow(std::size_t bytes, std::size_t size, bool large,
                                  StreamView stream) {
  State& s = *state_;
  const PoolKind kind = large ? PoolKind::large : PoolKind::small;
  detail::StreamImpl& impl = *stream.impl();
  const CrossStreamReuse policy = options_.cross_stream;

  // Take a block as a ready one (block mutex held).
  auto take_ready = [&](const State::Found& found, StreamState& state) -> void* {
    s.hand_out(found.block, size, bytes, state);
    ++s.hits;
    device().impl().mark_allocated(found.block->ptr(), found.block->size, impl);
    return found.block->ptr();
  };

  // 0. Merge what the streams' quick lists hold, and look again.
  {
    std::scoped_lock lock(s.mutex);
    StreamState& state = s.streams.of(impl);
    s.drain_quick();
    const State::Found found = s.find_block(kind, size, state, policy == CrossStreamReuse::wait);
    if (found.block != nullptr && !found.needs_wait) return take_ready(found, state);
  }

  // 1. Learn which other streams' frees have executed: close their open batches with events
  //    (only streams that hold free blocks of this size pool) and query what was recorded.
  if (policy != CrossStreamReuse::own_stream) {
    std::vector<StreamIndex> close;
    std::vector<std::shared_ptr<AfterGroup>> candidates;
    bool worth_it = false;
    {
      std::scoped_lock lock(s.mutex);
      const StreamState& state = s.streams.of(impl);
      const auto& index = s.free[kind_index(kind)];
      for (const auto& other : s.streams.all()) {
        if (other->index == state.index) continue;
        if (index.blocks_in(other->index) == 0 && index.blocks_in(home_mixed) == 0) continue;
        worth_it = true;
        if (other->open_frees > 0) close.push_back(other->index);
      }
      worth_it = worth_it || !s.after_groups.empty();
      if (worth_it) s.candidate_groups(kind, size, candidates);
    }
    // The groups of the blocks that would fit, and a few more in turn: an allocation never
    // queries every pending group.
    if (worth_it && s.sweep(close, sweep_group_budget, std::move(candidates))) {
      std::scoped_lock lock(s.mutex);
      StreamState& state = s.streams.of(impl);
      const State::Found found =
          s.find_block(kind, size, state, policy == CrossStreamReuse::wait);
      if (found.block != nullptr && !found.needs_wait) return take_ready(found, state);
    }
  }

  // 2. Rather than grow, wait on the device for another stream's block.
  if (policy == CrossStreamReuse::wait_before_growing || policy == CrossStreamReuse::wait) {
    Block* block = nullptr;
    FenceSet fences;
    std::vector<std::shared_ptr<AfterGroup>> groups;
    StreamState* state = nullptr;
    {
      std::scoped_lock lock(s.mutex);
      state = &s.streams.of(impl);
      const State::Found found = s.find_block(kind, size, *state, true);
      if (found.block != nullptr && !found.needs_wait) return take_ready(found, *state);
      if (found.block != nullptr) {
        block = found.block;
        for (const Fence& f : block->fences) {
          if (f.stream != state->index && !s.streams.complete(f)) fences.push_back(f);
        }
        if (block->after != nullptr) groups.push_back(s.after_groups.owner(block->after));
        s.hand_out(block, size, bytes, *state);
        ++s.hits;
      }
    }
    if (block != nullptr) {
      std::size_t waits = 0;
      try {
        std::scoped_lock events(s.event_mutex);
        waits = s.wait_for(*state, fences, groups);
      } catch (const std::exception& e) {
        // Neither a device-side nor a host wait worked: order everything on the host.
        report_error(std::string("PoolResource: waiting for another stream failed, "
                                 "synchronising the device: ") + e.what());
        device().synchronize();
        std::scoped_lock lock(s.mutex);
        ++s.counters.device_synchronizations;
      }
      {
        std::scoped_lock lock(s.mutex);
        state->stream_waits += waits;
        s.counters.stream_waits += waits;
      }
      // After the waits: the device sees the block live only once the stream may use it.
      device().impl().mark_allocated(block->ptr(), block->size, impl);
      return block->ptr();
    }
  }

  // 3. Grow: map more of this stream's range, or a new segment from upstream.
  if (s.expandable) return allocate_expandable(bytes, size, large, stream);
  std::size_t segment_bytes = options_.small_segment;
  if (large) {
    segment_bytes = size < options_.medium_limit ? options_.medium_segment
                                                 : round_up(size, options_.large_rounding);
  }
  if (options_.give_back_before_growing) (void)give_back_for_growth(segment_bytes);
  void* base = allocate_segment(segment_bytes, bytes, stream);
  // Tools that check the pool's blocks (compute-sanitizer, through NVTX) learn the segment's
  // extent before any block in it is marked live.
  device().impl().register_pool_segment(base, segment_bytes);
  try {
    std::scoped_lock lock(s.mutex);
    StreamState& state = s.streams.of(impl);
    Block* block = nullptr;
    try {
      block = s.add_segment(reinterpret_cast<std::uintptr_t>(base), segment_bytes, kind,
                            state.index, false);
    } catch (...) {
      device().impl().unregister_pool_segment(base);
      upstream_->deallocate(base, segment_bytes, stream);
      throw;
    }
    // Stream-ordered memory: usable on this stream now, on others once it reaches this point.
    block->fences.push_back(Fence{state.index, state.epoch});
    ++state.open_frees;
    block->freed_at = s.tick;
    try {
      s.hand_out(block, size, bytes, state);
    } catch (...) {
      s.index(block);  // cached for later; the request fails
      throw;
    }
    ++s.misses;
    ++s.counters.upstream_allocations;
    device().impl().mark_allocated(block->ptr(), block->size, impl);
    return block->ptr();
  } catch (const std::bad_alloc&) {
    std::scoped_lock lock(s.mutex);
    ++s.counters.failed_allocations;
    throw;
  }
}

std::size_t PoolResource::give_back_for_growth(std::size_t want,
                                               const void* growing_range) noexcept {
  State& s = *state_;
  std::vector<StreamIndex> close;
  {
    std::scoped_lock lock(s.mutex);
    // Below its high-water mark the pool grows freely (that memory was held before); beyond
    // it, only by what it cannot find free.
    const std::size_t reserved = s.kinds[0].reserved + s.kinds[1].reserved;
    if (reserved + want <= s.peak_reserved) return 0;
    want = reserved + want - s.peak_reserved;
    // Nothing worth a sweep: less free memory than one chunk or one segment, or no free chunk
    // outside the growing range among the oldest.
    if (s.cached_bytes() < (s.expandable ? s.granularity : options_.small_segment)) return 0;
    if (s.expandable) {
      auto range = s.by_address.find(reinterpret_cast<std::uintptr_t>(growing_range));
      const Segment* keep = range == s.by_address.end() ? nullptr : range->second;
      int looked = 0;
      bool any = false;
      for (auto it = s.unmappable.begin(); it != s.unmappable.end() && looked < 64;
           ++it, ++looked) {
        if (it->segment != keep) {
          any = true;
          break;
        }
      }
      if (!any) return 0;
    }
    try {
      for (const auto& state : s.streams.all()) {
        if (state->open_frees > 0) close.push_back(state->index);
      }
    } catch (...) {
      return 0;
    }
  }
  // own_stream never polls an event: it gives back only what is already known to be done.
  if (options_.cross_stream != CrossStreamReuse::own_stream) {
    (void)s.sweep(close, sweep_group_budget);
  }
  std::size_t bytes = 0;
  if (!s.expandable) {
    std::vector<State::Release> releases;
    try {
      std::scoped_lock lock(s.mutex);
      s.drain_quick();
      s.collect_releases(false, false, releases, want);
    } catch (...) {
      // no room for the list: what was detached is still given back below
    }
    for (const auto& r : releases) bytes += r.bytes;
    s.give_back(*upstream_, releases);
    return bytes;
  }
  return unmap_free(0, want, growing_range);
}

std::size_t PoolResource::release_for_retry(bool sync) noexcept {
  State& s = *state_;
  if (sync) {
    try {
      device().synchronize();
    } catch (const std::exception& e) {
      report_error(std::string("PoolResource: synchronising after out of memory failed: ") +
                   e.what());
    }
  }
  std::vector<StreamIndex> close;
  {
    std::scoped_lock lock(s.mutex);
    if (sync) ++s.counters.device_synchronizations;
    for (const auto& state : s.streams.all()) {
      if (state->open_frees > 0) close.push_back(state->index);
    }
  }
  (void)s.sweep(close);
  std::vector<State::Release> releases;
  std::size_t bytes = 0;
  try {
    std::scoped_lock lock(s.mutex);
    s.drain_quick();
    s.collect_releases(true, false, releases);
  } catch (...) {
    // no room for the list: what was detached is still given back below
  }
  for (const auto& r : releases) bytes += r.bytes;
  s.give_back(*upstream_, releases);
  bytes += unmap_free(0, std::numeric_limits<std::size_t>::max());
  if (sync) bytes += upstream_->release_cached();
  return bytes;
}

void* PoolResource::allocate_segment(std::size_t segment_bytes, std::size_t bytes,
                                     StreamView stream) {
  State& s = *state_;
  auto failed = [&] {
    std::scoped_lock lock(s.mutex);
    ++s.counters.failed_allocations;
  };
  try {
    return upstream_->allocate(segment_bytes, stream);
  } catch (const OutOfMemoryError&) {
  } catch (...) {
    failed();
    throw;
  }
  // The gentler out-of-memory path: first what goes without synchronising the device (whole
  // free segments, in stream order), then, only if that was not enough, a synchronisation,
  // everything cached here and what the upstream caches.
  std::size_t released = 0;
  for (const bool sync : {false, true}) {
    {
      std::scoped_lock lock(s.mutex);
      ++s.counters.oom_retries;
    }
    released += release_for_retry(sync);
    try {
      return upstream_->allocate(segment_bytes, stream);
    } catch (const OutOfMemoryError& e) {
      if (!sync) continue;
      failed();
      const PoolStatistics stats = memory_stats();
      throw OutOfMemoryError(
          "out of memory: " + name() + " could not allocate " + detail::format_bytes(bytes) +
              " (a segment of " + detail::format_bytes(segment_bytes) + ") on " +
              device().name() + ", stream " + std::to_string(stream.id()) + ": " +
              detail::format_bytes(stats.total.allocated_bytes) + " in use, " +
              detail::format_bytes(stats.total.cached_bytes) +
              " reserved but unallocated (largest free block " +
              detail::format_bytes(stats.total.largest_free_block) + "), " +
              detail::format_bytes(stats.total.reserved_bytes) + " reserved in " +
              std::to_string(stats.total.segments) + " segments, after releasing " +
              detail::format_bytes(released) +
              " and synchronising the device; upstream said: " + e.what(),
          bytes);
    } catch (...) {
      failed();
      throw;
    }
  }
  return nullptr;  // not reached
}

// ---------------------------------------------------------------------------------------------
// deallocate

void PoolResource::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  do_deallocate_after(ptr, bytes, stream, {});
}

void PoolResource::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                       std::vector<Event> after) noexcept {
  State& s = *state_;
  std::vector<State::Release> releases;
  std::size_t over_cap = 0;
  std::string error;
  try {
    std::shared_ptr<AfterGroup> group;
    std::vector<detail::EventImpl*> pending;
    if (!after.empty()) {
      group = std::make_shared<AfterGroup>();
      pending.reserve(after.size());
      for (const Event& event : after) pending.push_back(event.impl());
    }
    std::scoped_lock lock(s.mutex);
    const auto addr = reinterpret_cast<std::uintptr_t>(ptr);
    Block* block = s.live.find(addr);
    if (block == nullptr) {
      bool freed = false;
      if (auto it = s.by_address.upper_bound(addr); it != s.by_address.begin()) {
        const Segment* segment = std::prev(it)->second;
        for (const Block* b = segment->first; b != nullptr; b = b->next) {
          if (b->addr <= addr && addr < b->end()) freed = !b->allocated;
        }
      }
      error = "PoolResource: deallocate of " + detail::format_pointer(ptr) + " (" +
              detail::format_bytes(bytes) + "): " +
              (freed ? "already deallocated (double free)" : "not allocated by this pool");
    } else {
      if (size_class(bytes) != size_class(block->requested)) {
        error = "PoolResource: deallocate of " + detail::format_pointer(ptr) + " with " +
                detail::format_bytes(bytes) + ", but it was allocated with " +
                detail::format_bytes(block->requested);
      }
      StreamState& state = s.streams.of(*stream.impl());
      if (group) s.after_groups.reserve_one();
      // The mark goes first, so that whoever sees the block free also sees it dead.
      device().impl().mark_freed(ptr, block->size, *stream.impl(), pending);
      s.live.erase(addr);
      Segment& segment = *block->segment;
      segment.allocated_bytes -= block->size;
      --segment.live_blocks;
      segment.used_at = s.tick;
      segment.freed_seq = ++s.frees;
      State::KindCounters& k = s.kinds[kind_index(segment.kind)];
      k.allocated -= block->size;
      k.requested -= block->requested;
      --k.allocated_blocks;
      StreamState& owner = s.streams.at(block->stream);
      owner.allocated_bytes -= block->size;
      owner.requested_bytes -= block->requested;
      block->allocated = false;
      block->fences.clear();
      block->fences.push_back(Fence{state.index, state.epoch});
      ++state.open_frees;
      block->freed_at = s.tick;
      ++s.counters.deallocations;
      if (group) {
        group->events = std::move(after);
        group->block = block;
        block->after = group.get();
        s.after_groups.add(std::move(group));  // capacity reserved above
        s.index(block);
      } else if (options_.cross_stream == CrossStreamReuse::wait ||
                 segment.kind == PoolKind::large || !state.quick.push(block)) {
        // Only small blocks are quick-listed: large ones merge at once, so that they do not
        // fragment the large pool. (`wait` looks for the best fit among every stream's blocks:
        // none stays private.)
        s.merge(block);
        s.index(block);
      }
      if (s.cached_bytes() > options_.max_cached_bytes) {
        s.drain_quick();
        s.collect_releases(false, false, releases);
        over_cap = s.cached_bytes() > options_.max_cached_bytes
                       ? s.cached_bytes() - options_.max_cached_bytes
                       : 0;
      }
    }
  } catch (const std::exception& e) {
    error = std::string("PoolResource: deallocate failed: ") + e.what();
  }
  if (!releases.empty()) s.give_back(*upstream_, releases);
  if (over_cap != 0) (void)unmap_free(0, over_cap);
  if (!error.empty()) report_error(error);
}

// ---------------------------------------------------------------------------------------------
// trim, destruction, queries

std::size_t PoolResource::trim() noexcept { return release_for_retry(false); }

std::size_t PoolResource::do_release_cached() noexcept {
  const std::size_t released = trim();
  // What the pool gave back may sit in the upstream's own cache (the driver's pool of an
  // AsyncResource): ask it too, so that the memory reaches the system.
  (void)upstream_->release_cached();
  return released;
}

PoolResource::~PoolResource() {
  State& s = *state_;
  std::vector<StreamIndex> close;
  {
    std::scoped_lock lock(s.mutex);
    for (const auto& state : s.streams.all()) close.push_back(state->index);
  }
  (void)s.sweep(close);
  std::vector<State::Release> releases;
  std::vector<std::shared_ptr<AfterGroup>> groups;  // destroyed outside the block mutex
  std::size_t live_blocks = 0;
  std::size_t live_bytes = 0;
  {
    std::scoped_lock lock(s.mutex);
    for (const auto& segment : s.segments) {
      if (segment->expandable) {
        for (const Block* b = segment->first; b != nullptr; b = b->next) {
          if (b->allocated && b->mapped) {
            ++live_blocks;
            live_bytes += b->size;
          }
        }
        continue;
      }
      // Every stream whose work may still use the segment: the free waits for all of them.
      std::vector<detail::StreamImpl*> users;
      State::Release release;
      release.ptr = reinterpret_cast<void*>(segment->base);
      release.bytes = segment->size;
      for (const Block* b = segment->first; b != nullptr; b = b->next) {
        if (b->allocated) {
          ++live_blocks;
          live_bytes += b->size;
          users.push_back(s.streams.at(b->stream).impl);
        } else {
          for (const Fence& f : b->fences) {
            if (!s.streams.complete(f)) users.push_back(s.streams.at(f.stream).impl);
          }
          if (b->after != nullptr) release.groups.push_back(s.after_groups.owner(b->after));
        }
      }
      std::sort(users.begin(), users.end());
      users.erase(std::unique(users.begin(), users.end()), users.end());
      release.stream = users.empty() ? s.streams.at(segment->stream).impl : users.front();
      if (!users.empty()) release.wait_on.assign(users.begin() + 1, users.end());
      releases.push_back(std::move(release));
    }
    groups = s.after_groups.take_all();
  }
  if (live_blocks != 0) {
    report_error("PoolResource destroyed with " + std::to_string(live_blocks) + " blocks (" +
                 detail::format_bytes(live_bytes) +
                 ") still allocated; freeing them in stream order");
  }
  s.give_back(*upstream_, releases);
  release_ranges();
}

bool PoolResource::reset_if_unused() noexcept {
  State& s = *state_;
  {
    std::scoped_lock lock(s.mutex);
    if (s.live.size() != 0) return false;
  }
  std::unique_ptr<State> fresh;
  std::vector<State::Release> releases;
  try {
    fresh = make_state();  // first: once memory has gone back, nothing may fail
    std::scoped_lock lock(s.mutex);
    releases.reserve(s.segments.size());
  } catch (const std::exception& e) {
    report_error(std::string("PoolResource: reset_if_unused could not make the new state: ") +
                 e.what());
    return false;
  }
  // Every user of every block has finished after this: the segments go back without waiting,
  // the pending record_stream events have completed, the ranges may be unmapped.
  try {
    device().synchronize();
  } catch (const std::exception& e) {
    report_error(std::string("PoolResource: reset_if_unused could not synchronise: ") + e.what());
    return false;
  }
  std::vector<std::shared_ptr<AfterGroup>> groups;  // destroyed outside the block mutex
  {
    std::scoped_lock lock(s.mutex);
    for (const auto& segment : s.segments) {
      if (segment->expandable) continue;
      State::Release release;
      release.ptr = reinterpret_cast<void*>(segment->base);
      release.bytes = segment->size;
      release.stream = s.streams.at(segment->stream).impl;
      releases.push_back(std::move(release));  // room reserved: cannot throw
    }
    groups = s.after_groups.take_all();
  }
  s.give_back(*upstream_, releases);
  release_ranges();
  groups.clear();
  state_ = std::move(fresh);  // the old state's events go back to the device
  return true;
}

void PoolResource::release_ranges() noexcept {
  State& s = *state_;
  std::vector<std::pair<void*, std::size_t>> runs;  // mapped runs to unmap
  std::vector<void*> ranges;
  {
    std::scoped_lock lock(s.mutex);
    for (const auto& segment : s.segments) {
      if (!segment->expandable) continue;
      ranges.push_back(reinterpret_cast<void*>(segment->base));
      for (const Block* b = segment->first; b != nullptr; b = b->next) {
        if (!b->mapped) continue;
        if (!runs.empty() && static_cast<char*>(runs.back().first) + runs.back().second == b->ptr()) {
          runs.back().second += b->size;
        } else {
          runs.emplace_back(b->ptr(), b->size);
        }
      }
    }
  }
  if (ranges.empty()) return;
  if (!runs.empty()) {
    // Unmapping is not stream-ordered: the work that used the memory must be done.
    try {
      device().synchronize();
    } catch (const std::exception& e) {
      report_error(std::string("PoolResource: synchronising before unmapping failed: ") +
                   e.what());
    }
  }
  for (const auto& [ptr, bytes] : runs) upstream_->unmap(ptr, bytes);
  for (void* base : ranges) {
    device().impl().unregister_pool_segment(base);
    upstream_->release_range(base, s.range_bytes);
  }
}

std::vector<PoolResource::LiveBlock> PoolResource::live_blocks() const {
  std::scoped_lock lock(state_->mutex);
  std::vector<LiveBlock> live;
  live.reserve(state_->live.size());
  state_->live.for_each([&](const Block* b) {
    live.push_back({b->ptr(), b->requested, b->size, state_->streams.at(b->stream).id});
  });
  return live;
}

std::string PoolResource::do_name() const { return "pool(" + upstream_->name() + ")"; }

ResourceStatistics PoolResource::do_statistics() const {
  const State& s = *state_;
  std::scoped_lock lock(s.mutex);
  ResourceStatistics stats;
  stats.bytes_in_use = s.kinds[0].allocated + s.kinds[1].allocated;
  stats.peak_bytes_in_use = s.peak_allocated;
  stats.bytes_cached = s.cached_bytes();
  stats.allocations = s.counters.allocations;
  stats.deallocations = s.counters.deallocations;
  stats.hits = s.hits;
  stats.misses = s.misses;
  stats.upstream_allocations = s.counters.upstream_allocations + s.counters.map_calls;
  stats.upstream_deallocations = s.counters.upstream_deallocations + s.counters.unmap_calls;
  stats.failed_allocations = s.counters.failed_allocations;
  return stats;
}

}  // namespace gpulife
