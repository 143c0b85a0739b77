// SPDX-License-Identifier: Apache-2.0
// The first PoolResource, verbatim apart from its names: the reference the replays compare with.
#include "v1_pool.hpp"

#include <algorithm>
#include <bit>
#include <iterator>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"

namespace gpulife::replay {
namespace {

constexpr std::size_t granule = 256;
constexpr std::size_t class_count = 256;  // index 4 + 4 * 61 + 3 covers every 64-bit size
// Blocks of another stream whose events are probed per allocation: the oldest are the likeliest
// to have completed, and a bound keeps a miss cheap.
constexpr int cross_stream_probes = 4;

std::size_t class_index(std::size_t size) noexcept {
  if (size <= 4 * granule) return size / granule - 1;
  // 2^(p-1) < size <= 2^p, classes 2^(p-1) + k * 2^(p-3) for k = 1..4
  const auto p = static_cast<std::size_t>(std::bit_width(size - 1));
  const std::size_t step = std::size_t{1} << (p - 3);
  const std::size_t k = (size - (std::size_t{1} << (p - 1))) / step;
  return 4 + (p - 11) * 4 + (k - 1);
}

bool all_complete(std::vector<Event>& events) {
  for (const Event& event : events) {
    if (!event.query()) return false;
  }
  events.clear();  // back to the device's event pool
  return true;
}

}  // namespace

struct V1PoolResource::State {
  struct Block {
    void* ptr = nullptr;
    std::size_t size = 0;                  // its own size class
    std::size_t lent_as = 0;               // the class of the request it serves now
    detail::StreamImpl* stream = nullptr;  // of the last allocation or free
    Event freed;                           // recorded on `stream` at the last free
    bool freed_recorded = false;           // false: only `stream` may take the block
    std::vector<Event> after;              // other streams' work that must finish first
    bool cached = false;
    Block* lru_prev = nullptr;
    Block* lru_next = nullptr;
  };
  struct StreamList {
    std::uint64_t stream_id = 0;
    std::vector<Block*> blocks;  // least recently freed first
  };

  mutable std::mutex mutex;
  std::unordered_map<void*, std::unique_ptr<Block>> blocks;  // every block the pool holds
  std::vector<std::vector<StreamList>> bins = std::vector<std::vector<StreamList>>(class_count);
  Block* lru_head = nullptr;  // cached blocks, least recently freed first
  Block* lru_tail = nullptr;
  ResourceStatistics stats;

  void lru_push(Block* block) noexcept {
    block->lru_prev = lru_tail;
    block->lru_next = nullptr;
    (lru_tail != nullptr ? lru_tail->lru_next : lru_head) = block;
    lru_tail = block;
  }
  void lru_unlink(Block* block) noexcept {
    (block->lru_prev != nullptr ? block->lru_prev->lru_next : lru_head) = block->lru_next;
    (block->lru_next != nullptr ? block->lru_next->lru_prev : lru_tail) = block->lru_prev;
    block->lru_prev = block->lru_next = nullptr;
  }

  StreamList& list_for(std::size_t index, std::uint64_t stream_id) {
    auto& lists = bins[index];
    for (StreamList& list : lists) {
      if (list.stream_id == stream_id) return list;
    }
    // A stream seen for the first time here: drop the lists streams left empty, so that a
    // program that makes short-lived streams does not grow every lookup. Lists of streams that
    // keep freeing here stay, with their capacity, and make steady state allocation-free.
    std::erase_if(lists, [](const StreamList& list) { return list.blocks.empty(); });
    lists.push_back(StreamList{stream_id, {}});
    return lists.back();
  }

  void take(Block* block) noexcept {
    lru_unlink(block);
    block->cached = false;
    stats.bytes_cached -= block->size;
  }

  /// A cached block of class `index` that work on `stream` may use now, or null.
  Block* take_cached(std::size_t index, StreamView stream) {
    auto& lists = bins[index];
    const std::uint64_t id = stream.id();
    for (StreamList& list : lists) {
      if (list.stream_id != id) continue;
      // Most recently freed first: on its own stream a block is ready at once, unless other
      // streams' work (record_stream) still uses it.
      for (auto it = list.blocks.rbegin(); it != list.blocks.rend(); ++it) {
        Block* block = *it;
        if (!block->after.empty() && !all_complete(block->after)) continue;
        list.blocks.erase(std::next(it).base());
        take(block);
        return block;
      }
    }
    for (StreamList& list : lists) {
      if (list.stream_id == id) continue;
      int probes = 0;
      for (auto it = list.blocks.begin(); it != list.blocks.end() && probes < cross_stream_probes;
           ++it, ++probes) {
        Block* block = *it;
        if (!block->freed_recorded || !block->freed.query()) continue;
        if (!block->after.empty() && !all_complete(block->after)) continue;
        list.blocks.erase(it);
        take(block);
        block->stream = stream.impl();
        return block;
      }
    }
    return nullptr;
  }

  /// Removes `block` from the free lists and from `blocks`, handing over its ownership.
  std::unique_ptr<Block> extract_cached(Block* block) {
    auto& lists = bins[class_index(block->size)];
    for (StreamList& list : lists) {
      auto it = std::find(list.blocks.begin(), list.blocks.end(), block);
      if (it != list.blocks.end()) {
        list.blocks.erase(it);
        break;
      }
    }
    take(block);
    auto node = blocks.extract(block->ptr);
    return std::move(node.mapped());
  }
};

std::size_t V1PoolResource::size_class(std::size_t bytes) noexcept {
  if (bytes <= 4 * granule) return std::max<std::size_t>((bytes + granule - 1) / granule, 1) * granule;
  const auto p = static_cast<std::size_t>(std::bit_width(bytes - 1));
  const std::size_t step = std::size_t{1} << (p - 3);
  return (bytes + step - 1) / step * step;
}

std::size_t V1PoolResource::largest_block_for(std::size_t bytes) const noexcept {
  std::size_t size = size_class(bytes);
  for (std::size_t step = 0; step < options_.larger_classes; ++step) {
    if (class_index(size) + 1 >= class_count) break;
    size = size_class(size + 1);
  }
  return size;
}

V1PoolResource::V1PoolResource(std::shared_ptr<DeviceMemoryResource> upstream,
                               V1PoolOptions options)
    : DeviceMemoryResource(upstream ? upstream->device()
                                    : throw std::invalid_argument("upstream: null resource")),
      upstream_(std::move(upstream)),
      options_(options),
      state_(std::make_unique<State>()) {}

V1PoolResource::~V1PoolResource() {
  trim();
  std::vector<std::unique_ptr<State::Block>> live;
  {
    std::scoped_lock lock(state_->mutex);
    for (auto& [ptr, block] : state_->blocks) live.push_back(std::move(block));
    state_->blocks.clear();
  }
  if (!live.empty()) {
    std::size_t bytes = 0;
    for (const auto& block : live) bytes += block->size;
    report_error("PoolResource destroyed with " + std::to_string(live.size()) + " blocks (" +
                 detail::format_bytes(bytes) + ") still allocated; freeing them in stream order");
  }
  for (auto& block : live) {
    upstream_->deallocate(block->ptr, block->size, StreamView{block->stream});
  }
}

void* V1PoolResource::do_allocate(std::size_t bytes, StreamView stream) {
  const std::size_t size = size_class(bytes);
  const std::size_t index = class_index(size);
  State& state = *state_;
  {
    std::scoped_lock lock(state.mutex);
    State::Block* block = state.take_cached(index, stream);
    const std::size_t last = std::min(index + options_.larger_classes, class_count - 1);
    for (std::size_t larger = index + 1; block == nullptr && larger <= last; ++larger) {
      block = state.take_cached(larger, stream);
    }
    if (block != nullptr) {
      block->lent_as = size;
      ++state.stats.hits;
      ++state.stats.allocations;
      state.stats.bytes_in_use += block->size;
      state.stats.peak_bytes_in_use =
          std::max(state.stats.peak_bytes_in_use, state.stats.bytes_in_use);
      // Queued while the lock is held, so that it lands before any later free of the block.
      device().impl().mark_allocated(block->ptr, block->size, *stream.impl());
      return block->ptr;
    }
  }

  void* ptr = nullptr;
  try {
    ptr = upstream_->allocate(size, stream);
  } catch (const OutOfMemoryError&) {
    // Give everything cached back and let the stream-ordered frees land before retrying.
    const std::size_t released = trim();
    try {
      device().synchronize();
      ptr = upstream_->allocate(size, stream);
    } catch (const OutOfMemoryError& e) {
      ResourceStatistics stats;
      {
        std::scoped_lock lock(state.mutex);
        ++state.stats.failed_allocations;
        stats = state.stats;
      }
      throw OutOfMemoryError(
          "out of memory: " + name() + " could not allocate " + detail::format_bytes(bytes) +
              " (size class " + detail::format_bytes(size) + ") on " + device().name() +
              ", stream " + std::to_string(stream.id()) + ": " +
              detail::format_bytes(stats.bytes_in_use) + " in use, " +
              detail::format_bytes(stats.bytes_cached) + " cached after releasing " +
              detail::format_bytes(released) + "; upstream said: " + e.what(),
          bytes);
    }
  } catch (...) {
    std::scoped_lock lock(state.mutex);
    ++state.stats.failed_allocations;
    throw;
  }

  auto block = std::make_unique<State::Block>();
  block->ptr = ptr;
  block->size = size;
  block->lent_as = size;
  block->stream = stream.impl();
  std::scoped_lock lock(state.mutex);
  try {
    state.blocks.emplace(ptr, std::move(block));
  } catch (...) {
    upstream_->deallocate(ptr, size, stream);
    throw;
  }
  ++state.stats.misses;
  ++state.stats.upstream_allocations;
  ++state.stats.allocations;
  state.stats.bytes_in_use += size;
  state.stats.peak_bytes_in_use = std::max(state.stats.peak_bytes_in_use, state.stats.bytes_in_use);
  device().impl().mark_allocated(ptr, size, *stream.impl());
  return ptr;
}

void V1PoolResource::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  do_deallocate_after(ptr, bytes, stream, {});
}

void V1PoolResource::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                       std::vector<Event> after) noexcept {
  State& state = *state_;
  std::vector<std::unique_ptr<State::Block>> evicted;
  {
    std::scoped_lock lock(state.mutex);
    auto it = state.blocks.find(ptr);
    if (it == state.blocks.end() || it->second->cached) {
      report_error("PoolResource: deallocate of " + detail::format_pointer(ptr) + " (" +
                   detail::format_bytes(bytes) + "): " +
                   (it == state.blocks.end() ? "not allocated by this pool"
                                             : "already deallocated (double free)"));
      return;
    }
    State::Block* block = it->second.get();
    if (size_class(bytes) != block->lent_as) {
      report_error("PoolResource: deallocate of " + detail::format_pointer(ptr) + " with " +
                   detail::format_bytes(bytes) + ", but it was allocated in size class " +
                   detail::format_bytes(block->lent_as));
    }
    block->stream = stream.impl();
    try {
      std::vector<detail::EventImpl*> pending;
      pending.reserve(after.size());
      for (const Event& event : after) pending.push_back(event.impl());
      // The mark goes first, so that whoever sees the event complete also sees the block dead.
      device().impl().mark_freed(ptr, block->size, *stream.impl(), pending);
      if (!block->freed.valid()) block->freed = Event(device());
      stream.record(block->freed);
      block->freed_recorded = true;
    } catch (const std::exception& e) {
      // Without a recorded event no other stream can know when the block is free; it stays
      // reusable on its own stream only.
      block->freed_recorded = false;
      report_error(std::string("PoolResource: recording the free of a block failed: ") + e.what());
    }
    block->after = std::move(after);
    bool listed = true;
    try {
      state.list_for(class_index(block->size), stream.id()).blocks.push_back(block);
    } catch (...) {
      listed = false;  // no room to cache it: it goes back upstream instead
    }
    state.stats.bytes_in_use -= block->size;
    ++state.stats.deallocations;
    if (listed) {
      block->cached = true;
      state.lru_push(block);
      state.stats.bytes_cached += block->size;
      while (state.stats.bytes_cached > options_.max_cached_bytes && state.lru_head != nullptr) {
        evicted.push_back(state.extract_cached(state.lru_head));
      }
    } else {
      evicted.push_back(std::move(it->second));
      state.blocks.erase(it);
    }
    state.stats.upstream_deallocations += evicted.size();
  }
  for (auto& victim : evicted) {
    upstream_->deallocate_after(victim->ptr, victim->size, StreamView{victim->stream},
                                std::move(victim->after));
  }
}

std::size_t V1PoolResource::trim() noexcept {
  State& state = *state_;
  std::vector<std::unique_ptr<State::Block>> victims;
  std::size_t bytes = 0;
  {
    std::scoped_lock lock(state.mutex);
    while (state.lru_head != nullptr) {
      bytes += state.lru_head->size;
      victims.push_back(state.extract_cached(state.lru_head));
    }
    state.stats.upstream_deallocations += victims.size();
  }
  for (auto& victim : victims) {
    upstream_->deallocate_after(victim->ptr, victim->size, StreamView{victim->stream},
                                std::move(victim->after));
  }
  return bytes;
}

std::vector<V1PoolResource::LiveBlock> V1PoolResource::live_blocks() const {
  std::scoped_lock lock(state_->mutex);
  std::vector<LiveBlock> live;
  for (const auto& [ptr, block] : state_->blocks) {
    if (!block->cached) {
      live.push_back({ptr, block->lent_as, block->size,
                      block->stream != nullptr ? block->stream->id() : 0});
    }
  }
  return live;
}

std::string V1PoolResource::do_name() const { return "v1pool(" + upstream_->name() + ")"; }

ResourceStatistics V1PoolResource::do_statistics() const {
  std::scoped_lock lock(state_->mutex);
  return state_->stats;
}

}  // namespace gpulife::replay
