// SPDX-License-Identifier: Apache-2.0
// A model of RMM's pool_memory_resource for gpulife_replay (see peer_models.hpp): the rules of
// stream_ordered_memory_resource (per-stream free lists, one event per stream recorded on every
// free, stealing from other streams after a device-side wait and merging their lists) and of
// pool_memory_resource (coalescing best-fit lists, growth by the larger of the request and the
// pool's size), in our own code.

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/event.hpp>

#include "peer_models.hpp"

namespace gpulife::replay {
namespace {

constexpr std::size_t alignment = 256;  // CUDA_ALLOCATION_ALIGNMENT

std::size_t align_up(std::size_t v) { return (v + alignment - 1) / alignment * alignment; }

/// A free block; `head`: it starts an upstream allocation (nothing merges across one).
struct Blk {
  std::uintptr_t ptr = 0;
  std::size_t size = 0;
  bool head = false;
};

/// coalescing_free_list: address-ordered, merging contiguous neighbours, best fit.
class FreeList {
 public:
  void insert(Blk b) {
    auto next = by_addr_.lower_bound(b.ptr);
    if (next != by_addr_.end() && b.ptr + b.size == next->first && !next->second.head) {
      b.size += next->second.size;
      erase(next);
      next = by_addr_.lower_bound(b.ptr);
    }
    if (next != by_addr_.begin()) {
      auto prev = std::prev(next);
      if (prev->first + prev->second.size == b.ptr && !b.head) {
        Blk merged = prev->second;
        merged.size += b.size;
        erase(prev);
        add(merged);
        return;
      }
    }
    add(b);
  }
  std::optional<Blk> take_best(std::size_t size) {
    auto it = by_size_.lower_bound({size, 0});
    if (it == by_size_.end()) return std::nullopt;
    auto a = by_addr_.find(it->second);
    Blk b = a->second;
    erase(a);
    return b;
  }
  void absorb(FreeList&& other) {
    for (const auto& [ptr, b] : other.by_addr_) insert(b);
    other.by_addr_.clear();
    other.by_size_.clear();
  }
  [[nodiscard]] bool empty() const { return by_addr_.empty(); }

 private:
  void add(const Blk& b) {
    by_addr_.emplace(b.ptr, b);
    by_size_.emplace(b.size, b.ptr);
  }
  void erase(std::map<std::uintptr_t, Blk>::iterator it) {
    by_size_.erase({it->second.size, it->first});
    by_addr_.erase(it);
  }
  std::map<std::uintptr_t, Blk> by_addr_;
  std::set<std::pair<std::size_t, std::uintptr_t>> by_size_;
};

}  // namespace

struct RmmPoolModel::State {
  struct PerStream {
    StreamView stream;
    Event event;
    FreeList blocks;
  };
  std::mutex mutex;
  std::map<std::uint64_t, PerStream> lists;  // one per stream, by id
  std::unordered_map<std::uintptr_t, std::size_t> live;
  std::map<std::uintptr_t, std::pair<std::size_t, StreamView>> upstream_blocks;
  std::size_t pool_size = 0;
  ResourceStatistics stats;
};

RmmPoolModel::RmmPoolModel(std::shared_ptr<DeviceMemoryResource> upstream)
    : DeviceMemoryResource(upstream->device()),
      upstream_(std::move(upstream)),
      state_(std::make_unique<State>()) {}

RmmPoolModel::~RmmPoolModel() {
  for (const auto& [ptr, block] : state_->upstream_blocks) {
    upstream_->deallocate(reinterpret_cast<void*>(ptr), block.first, block.second);
  }
}

void* RmmPoolModel::do_allocate(std::size_t bytes, StreamView stream) {
  State& s = *state_;
  std::scoped_lock lock(s.mutex);
  const std::size_t size = align_up(bytes);
  // Not a structured binding: the lambda below captures the iterator, and clang before 16 rejects
  // a lambda that captures a binding (C++20 allows it).
  const auto emplaced = s.lists.try_emplace(stream.id());
  const auto mine_it = emplaced.first;
  State::PerStream& mine = mine_it->second;
  if (emplaced.second) {
    mine.stream = stream;
    mine.event = Event(device());
  }

  auto get_block = [&]() -> std::optional<Blk> {
    if (auto b = mine.blocks.take_best(size)) return b;
    // Another stream's best fit; that stream's whole list moves over, after a wait.
    for (auto it = s.lists.begin(); it != s.lists.end(); ++it) {
      if (it == mine_it || it->second.blocks.empty()) continue;
      if (auto b = it->second.blocks.take_best(size)) {
        stream.wait(it->second.event);
        mine.blocks.absorb(std::move(it->second.blocks));
        return b;
      }
    }
    // Merge the other lists one by one (each after a wait) until a block fits.
    for (auto it = s.lists.begin(); it != s.lists.end(); ++it) {
      if (it == mine_it || it->second.blocks.empty()) continue;
      stream.wait(it->second.event);
      mine.blocks.absorb(std::move(it->second.blocks));
      if (auto b = mine.blocks.take_best(size)) return b;
    }
    // Grow: the larger of the request and the pool, halved down to the request on failure.
    std::size_t attempt = std::max(size, s.pool_size);
    while (true) {
      try {
        void* ptr = upstream_->allocate(attempt, stream);
        const auto p = reinterpret_cast<std::uintptr_t>(ptr);
        s.upstream_blocks.emplace(p, std::make_pair(attempt, stream));
        s.pool_size += attempt;
        ++s.stats.upstream_allocations;
        return Blk{p, attempt, true};
      } catch (const OutOfMemoryError&) {
        if (attempt == size) return std::nullopt;
        attempt = std::max(size, attempt / 2);
      }
    }
  };

  const std::optional<Blk> b = get_block();
  if (!b) {
    ++s.stats.failed_allocations;
    throw OutOfMemoryError("out of memory: " + name() + " could not allocate " +
                               std::to_string(bytes) + " bytes",
                           bytes);
  }
  if (b->size > size) mine.blocks.insert(Blk{b->ptr + size, b->size - size, false});
  s.live[b->ptr] = size;
  ++s.stats.allocations;
  s.stats.bytes_in_use += size;
  s.stats.peak_bytes_in_use = std::max(s.stats.peak_bytes_in_use, s.stats.bytes_in_use);
  return reinterpret_cast<void*>(b->ptr);
}

void RmmPoolModel::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  (void)bytes;
  State& s = *state_;
  std::scoped_lock lock(s.mutex);
  const auto p = reinterpret_cast<std::uintptr_t>(ptr);
  auto it = s.live.find(p);
  if (it == s.live.end()) return;
  const std::size_t size = it->second;
  s.live.erase(it);
  ++s.stats.deallocations;
  s.stats.bytes_in_use -= size;
  try {
    auto [list, added] = s.lists.try_emplace(stream.id());
    if (added) {
      list->second.stream = stream;
      list->second.event = Event(device());
    }
    // RMM records the stream's event on every free.
    stream.record(list->second.event);
    list->second.blocks.insert(Blk{p, size, s.upstream_blocks.count(p) != 0});
  } catch (...) {
    // the model device does not fail here
  }
}

std::string RmmPoolModel::do_name() const { return "rmm_pool(" + upstream_->name() + ")"; }

ResourceStatistics RmmPoolModel::do_statistics() const {
  std::scoped_lock lock(state_->mutex);
  return state_->stats;
}

}  // namespace gpulife::replay
