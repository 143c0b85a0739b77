// SPDX-License-Identifier: Apache-2.0
// A model of PyTorch's CUDA caching allocator for gpulife_replay (see peer_models.hpp): the
// rules of c10/cuda/CUDACachingAllocator.cpp (DeviceCachingAllocator::malloc, free,
// process_events, release_cached_blocks, the expandable segments' growth), in our own code.
// Single-threaded use is all the replay needs; a mutex keeps it safe anyway.

#include <algorithm>
#include <deque>
#include <map>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/event.hpp>

#include "peer_models.hpp"

namespace gpulife::replay {
namespace {

constexpr std::size_t min_block = 512;                       // kMinBlockSize
constexpr std::size_t small_size = std::size_t{1} << 20;     // kSmallSize
constexpr std::size_t small_buffer = std::size_t{2} << 20;   // kSmallBuffer
constexpr std::size_t large_buffer = std::size_t{20} << 20;  // kLargeBuffer
constexpr std::size_t min_large_alloc = std::size_t{10} << 20;  // kMinLargeAlloc
constexpr std::size_t round_large = std::size_t{2} << 20;    // kRoundLarge

std::size_t round_up(std::size_t v, std::size_t to) { return (v + to - 1) / to * to; }

}  // namespace

struct PyTorchModel::State {
  struct Segment;
  struct Block {
    std::uintptr_t ptr = 0;
    std::size_t size = 0;
    std::size_t requested = 0;
    int stream = 0;
    bool small = false;
    bool allocated = false;
    bool mapped = true;
    int event_count = 0;  // events (record_stream, frees on other streams) still pending
    Block* prev = nullptr;
    Block* next = nullptr;
    Segment* segment = nullptr;
    [[nodiscard]] std::uintptr_t end() const { return ptr + size; }
  };
  struct Segment {
    std::uintptr_t base = 0;
    std::size_t size = 0;
    bool expandable = false;
    bool small = false;
    StreamView stream;
    Block* first = nullptr;
    std::set<std::uintptr_t> unmapped;  // expandable: starts of its unmapped blocks
  };
  struct ByStreamSize {
    bool operator()(const Block* a, const Block* b) const {
      return std::tie(a->stream, a->size, a->ptr) < std::tie(b->stream, b->size, b->ptr);
    }
  };
  struct Pending {
    Event event;
    Block* block = nullptr;
  };

  explicit State(bool e) : expandable(e) {}

  bool expandable;
  std::size_t range_bytes = 0;
  std::mutex mutex;
  std::set<Block*, ByStreamSize> pools[2];  // [small, large]: free mapped blocks, no events
  std::unordered_map<std::uintptr_t, Block*> live;
  std::vector<std::unique_ptr<Segment>> segments;
  std::map<std::pair<int, bool>, std::vector<Segment*>> ranges;  // expandable: (stream, small)
  std::map<std::pair<int, bool>, std::deque<Pending>> events;  // (stream, record_stream?)
  std::unordered_map<const detail::StreamImpl*, int> stream_index;
  std::map<std::uintptr_t, Block*> unmapped_blocks;  // expandable: by address
  ResourceStatistics stats;

  int index_of(StreamView stream) {
    auto [it, added] = stream_index.emplace(stream.impl(), static_cast<int>(stream_index.size()));
    (void)added;
    return it->second;
  }
  std::set<Block*, ByStreamSize>& pool_of(bool small) { return pools[small ? 0 : 1]; }
  static bool mergeable(const Block* b, const Block* with) {
    return b != nullptr && !b->allocated && b->event_count == 0 && b->mapped == with->mapped;
  }

  /// free_block: merges with free neighbours and returns the block to its pool.
  void free_block(Block* b) {
    auto& pool = pool_of(b->small);
    if (Block* p = b->prev; mergeable(p, b)) {
      pool.erase(p);
      b->ptr = p->ptr;
      b->size += p->size;
      b->prev = p->prev;
      if (p->prev != nullptr) p->prev->next = b;
      if (b->segment->first == p) b->segment->first = b;
      delete p;
    }
    if (Block* n = b->next; mergeable(n, b)) {
      pool.erase(n);
      b->size += n->size;
      b->next = n->next;
      if (n->next != nullptr) n->next->prev = b;
      delete n;
    }
    pool.insert(b);
  }

  /// process_events: blocks whose every event has completed go back to their pools. Events of
  /// one queue were recorded on one stream in order: the first that has not completed stops it.
  void process_events() {
    for (auto& [key, queue] : events) {
      while (!queue.empty() && queue.front().event.query()) {
        Block* b = queue.front().block;
        queue.pop_front();
        if (--b->event_count == 0) free_block(b);
      }
    }
  }

  /// Splits `b` after `size` bytes; the rest (free) goes to the pool.
  void split(Block* b, std::size_t size) {
    auto* rest = new Block;
    rest->ptr = b->ptr + size;
    rest->size = b->size - size;
    rest->stream = b->stream;
    rest->small = b->small;
    rest->segment = b->segment;
    rest->prev = b;
    rest->next = b->next;
    if (b->next != nullptr) b->next->prev = rest;
    b->next = rest;
    b->size = size;
    free_block(rest);
  }

  static bool should_split(const Block* b, std::size_t size) {
    const std::size_t remaining = b->size - size;
    return b->small ? remaining >= min_block : remaining > small_size;
  }
};

PyTorchModel::PyTorchModel(std::shared_ptr<DeviceMemoryResource> upstream, bool expandable)
    : DeviceMemoryResource(upstream->device()),
      upstream_(std::move(upstream)),
      state_(std::make_unique<State>(expandable && upstream_->mapping_granularity() != 0)) {
  if (state_->expandable) {
    // PyTorch reserves the device's whole memory per expandable segment.
    state_->range_bytes = round_up(device().memory_info().total_bytes, large_buffer);
  }
}

PyTorchModel::~PyTorchModel() {
  State& s = *state_;
  for (auto& segment : s.segments) {
    for (State::Block* b = segment->first; b != nullptr;) {
      State::Block* next = b->next;
      if (segment->expandable && b->mapped) upstream_->unmap(reinterpret_cast<void*>(b->ptr), b->size);
      delete b;
      b = next;
    }
    if (segment->expandable) {
      upstream_->release_range(reinterpret_cast<void*>(segment->base), segment->size);
    } else {
      upstream_->deallocate(reinterpret_cast<void*>(segment->base), segment->size,
                            segment->stream);
    }
  }
}

void* PyTorchModel::do_allocate(std::size_t bytes, StreamView stream) {
  State& s = *state_;
  std::scoped_lock lock(s.mutex);
  using Block = State::Block;
  using Segment = State::Segment;
  s.process_events();
  const std::size_t size = std::max(min_block, round_up(bytes, min_block));
  const bool small = size <= small_size;
  const int si = s.index_of(stream);
  auto& pool = s.pool_of(small);

  auto get_free_block = [&]() -> Block* {
    Block key;
    key.stream = si;
    key.size = size;
    auto it = pool.lower_bound(&key);
    if (it == pool.end() || (*it)->stream != si) return nullptr;
    Block* b = *it;
    pool.erase(it);
    return b;
  };

  // A new segment of the allocation size (null if upstream is out of memory).
  auto alloc_segment = [&]() -> Block* {
    const std::size_t alloc = small ? small_buffer
                              : size < min_large_alloc ? large_buffer
                                                       : round_up(size, round_large);
    void* ptr = nullptr;
    try {
      ptr = upstream_->allocate(alloc, stream);
    } catch (const OutOfMemoryError&) {
      return nullptr;
    }
    auto segment = std::make_unique<Segment>();
    segment->base = reinterpret_cast<std::uintptr_t>(ptr);
    segment->size = alloc;
    segment->small = small;
    segment->stream = stream;
    auto* b = new Block;
    b->ptr = segment->base;
    b->size = alloc;
    b->stream = si;
    b->small = small;
    b->segment = segment.get();
    segment->first = b;
    s.segments.push_back(std::move(segment));
    ++s.stats.upstream_allocations;
    return b;
  };

  // Expandable: map pages at the free end of this stream's range (null if out of memory).
  auto alloc_expandable = [&]() -> Block* {
    const std::size_t page = small ? small_buffer : large_buffer;
    std::vector<Segment*>& ranges = s.ranges[{si, small}];
    // The lowest unmapped block of the stream's ranges that, with the free mapped block before
    // it, has room; a new range when none has.
    for (std::size_t r = 0;; ++r) {
    if (r == ranges.size()) {
      void* base = upstream_->reserve_range(s.range_bytes);
      auto segment = std::make_unique<Segment>();
      segment->base = reinterpret_cast<std::uintptr_t>(base);
      segment->size = s.range_bytes;
      segment->expandable = true;
      segment->small = small;
      segment->stream = stream;
      auto* b = new Block;
      b->ptr = segment->base;
      b->size = s.range_bytes;
      b->stream = si;
      b->small = small;
      b->mapped = false;
      b->segment = segment.get();
      segment->first = b;
      segment->unmapped.insert(b->ptr);
      s.unmapped_blocks[b->ptr] = b;
      ranges.push_back(segment.get());
      s.segments.push_back(std::move(segment));
    }
    Segment* range = ranges[r];
    for (std::uintptr_t start : range->unmapped) {
      Block* u = s.unmapped_blocks.at(start);
      Block* p = u->prev;
      const bool use_prev = p != nullptr && !p->allocated && p->event_count == 0 && p->mapped;
      const std::size_t have = use_prev ? p->size : 0;
      const std::size_t map = round_up(size - std::min(size, have), page);
      if (map > u->size) continue;
      try {
        upstream_->map(reinterpret_cast<void*>(u->ptr), map);
      } catch (const OutOfMemoryError&) {
        return nullptr;
      }
      ++s.stats.upstream_allocations;
      range->unmapped.erase(u->ptr);
      s.unmapped_blocks.erase(u->ptr);
      if (map < u->size) {  // the rest stays unmapped
        auto* rest = new Block;
        rest->ptr = u->ptr + map;
        rest->size = u->size - map;
        rest->stream = si;
        rest->small = small;
        rest->mapped = false;
        rest->segment = range;
        rest->prev = u;
        rest->next = u->next;
        if (u->next != nullptr) u->next->prev = rest;
        u->next = rest;
        u->size = map;
        range->unmapped.insert(rest->ptr);
        s.unmapped_blocks[rest->ptr] = rest;
      }
      u->mapped = true;
      if (use_prev) {
        pool.erase(p);
        p->size += u->size;
        p->next = u->next;
        if (u->next != nullptr) u->next->prev = p;
        delete u;
        return p;
      }
      return u;
    }
    if (r + 1 == ranges.size() && size > s.range_bytes) return nullptr;
    }
  };

  auto alloc_block = [&]() { return s.expandable ? alloc_expandable() : alloc_segment(); };

  // release_cached_blocks: synchronise, retire every event, give back what is wholly free.
  auto release_cached = [&]() {
    device().synchronize();
    for (auto& [key, queue] : s.events) {
      while (!queue.empty()) {
        Block* b = queue.front().block;
        queue.pop_front();
        if (--b->event_count == 0) s.free_block(b);
      }
    }
    for (auto& p : s.pools) {
      std::vector<Block*> candidates(p.begin(), p.end());
      for (Block* b : candidates) {
        Segment* segment = b->segment;
        if (!segment->expandable) {
          if (b->prev != nullptr || b->next != nullptr) continue;  // split: stays
          p.erase(b);
          upstream_->deallocate(reinterpret_cast<void*>(segment->base), segment->size,
                                segment->stream);
          ++s.stats.upstream_deallocations;
          delete b;
          std::erase_if(s.segments, [&](const auto& x) { return x.get() == segment; });
          continue;
        }
        // Unmap the whole pages inside the free block.
        const std::size_t page = segment->small ? small_buffer : large_buffer;
        const std::uintptr_t lo = segment->base + round_up(b->ptr - segment->base, page);
        const std::uintptr_t hi = segment->base + (b->end() - segment->base) / page * page;
        if (hi <= lo) continue;
        p.erase(b);
        auto carve = [&](std::uintptr_t from, std::uintptr_t to, bool mapped, Block* after) {
          auto* x = new Block;
          x->ptr = from;
          x->size = to - from;
          x->stream = b->stream;
          x->small = b->small;
          x->mapped = mapped;
          x->segment = segment;
          x->prev = after;
          x->next = after->next;
          if (after->next != nullptr) after->next->prev = x;
          after->next = x;
          return x;
        };
        const std::uintptr_t end = b->end();
        Block* middle = b;
        if (lo > b->ptr) {
          b->size = lo - b->ptr;
          p.insert(b);
          middle = carve(lo, end, false, b);
        }
        middle->mapped = false;
        middle->size = hi - lo;
        if (hi < end) p.insert(carve(hi, end, true, middle));
        upstream_->unmap(reinterpret_cast<void*>(lo), hi - lo);
        ++s.stats.upstream_deallocations;
        // Merge with unmapped neighbours.
        if (Block* prev = middle->prev; prev != nullptr && !prev->mapped && !prev->allocated) {
          segment->unmapped.erase(prev->ptr);
          s.unmapped_blocks.erase(prev->ptr);
          middle->ptr = prev->ptr;
          middle->size += prev->size;
          middle->prev = prev->prev;
          if (prev->prev != nullptr) prev->prev->next = middle;
          if (segment->first == prev) segment->first = middle;
          delete prev;
        }
        if (Block* next = middle->next; next != nullptr && !next->mapped && !next->allocated) {
          segment->unmapped.erase(next->ptr);
          s.unmapped_blocks.erase(next->ptr);
          middle->size += next->size;
          middle->next = next->next;
          if (next->next != nullptr) next->next->prev = middle;
          delete next;
        }
        segment->unmapped.insert(middle->ptr);
        s.unmapped_blocks[middle->ptr] = middle;
      }
    }
  };

  Block* b = get_free_block();
  if (b == nullptr) b = alloc_block();
  if (b == nullptr) {
    release_cached();
    b = alloc_block();
  }
  if (b == nullptr) {
    ++s.stats.failed_allocations;
    throw OutOfMemoryError("out of memory: " + name() + " could not allocate " +
                               std::to_string(bytes) + " bytes",
                           bytes);
  }
  b->allocated = true;  // first: the rest split off must not merge back into it
  if (State::should_split(b, size)) s.split(b, size);
  b->requested = bytes;
  s.live[b->ptr] = b;
  ++s.stats.allocations;
  s.stats.bytes_in_use += b->size;
  s.stats.peak_bytes_in_use = std::max(s.stats.peak_bytes_in_use, s.stats.bytes_in_use);
  return reinterpret_cast<void*>(b->ptr);
}

void PyTorchModel::do_deallocate(void* ptr, std::size_t bytes, StreamView stream) noexcept {
  do_deallocate_after(ptr, bytes, stream, {});
}

void PyTorchModel::do_deallocate_after(void* ptr, std::size_t bytes, StreamView stream,
                                       std::vector<Event> after) noexcept {
  (void)bytes;
  State& s = *state_;
  std::scoped_lock lock(s.mutex);
  auto it = s.live.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == s.live.end()) return;
  State::Block* b = it->second;
  s.live.erase(it);
  b->allocated = false;
  ++s.stats.deallocations;
  s.stats.bytes_in_use -= b->size;
  const int si = s.index_of(stream);
  try {
    // Used on another stream than its allocation's (a PyTorch program records the tensor
    // there): an event on that stream at the free.
    if (si != b->stream) {
      Event event(device());
      stream.record(event);
      s.events[{si, false}].push_back({std::move(event), b});
      ++b->event_count;
    }
    for (Event& event : after) {
      s.events[{si, true}].push_back({std::move(event), b});
      ++b->event_count;
    }
  } catch (...) {
    // the model device does not fail here
  }
  if (b->event_count == 0) s.free_block(b);
}

std::string PyTorchModel::do_name() const {
  return std::string("pytorch") + (state_->expandable ? "-expandable" : "") + "(" +
         upstream_->name() + ")";
}

ResourceStatistics PyTorchModel::do_statistics() const {
  std::scoped_lock lock(state_->mutex);
  return state_->stats;
}

}  // namespace gpulife::replay
