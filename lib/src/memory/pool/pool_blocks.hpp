// SPDX-License-Identifier: Apache-2.0
#pragma once

// The pool's block index: blocks and segments, the size-ordered index of free blocks (best fit
// per stream in O(log n)), and the address-to-block map of blocks handed out. Nothing here
// allocates on the pool's fast path: blocks come from a free list, the index is intrusive and
// the map is open-addressed.

#include <compare>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include <boost/intrusive/list.hpp>
#include <boost/intrusive/set.hpp>

namespace gpulife::detail::pool {

struct Segment;
struct AfterGroup;

/// Index of a stream in the pool's stream table; 0 is no stream.
using StreamIndex = std::uint32_t;

/// Work on `stream` up to the point that the pool's epoch `epoch` of that stream ends may still
/// use a free block.
struct Fence {
  StreamIndex stream = 0;
  std::uint64_t epoch = 0;
};
/// At most one fence per stream (a later epoch covers an earlier one). Blocks are recycled with
/// their sets' capacity, so that steady state allocates nothing here.
using FenceSet = std::vector<Fence>;

/// Adds `fence` to `set`, keeping one fence per stream, the latest.
inline void add_fence(FenceSet& set, Fence fence) {
  for (Fence& f : set) {
    if (f.stream == fence.stream) {
      if (f.epoch < fence.epoch) f.epoch = fence.epoch;
      return;
    }
  }
  set.push_back(fence);
}

enum class PoolKind : std::uint8_t { small = 0, large = 1 };

/// Home of a free block in the index: the one stream that may take it without a dependency, or
/// `home_any` (its users are known to be done), or `home_mixed` (several streams' work, or
/// record_stream events, may still use it).
constexpr StreamIndex home_any = 0;
constexpr StreamIndex home_mixed = 0xFFFFFFFFU;

using IndexHook =
    boost::intrusive::set_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>>;
using ListHook =
    boost::intrusive::list_member_hook<boost::intrusive::link_mode<boost::intrusive::normal_link>>;

struct Block {
  std::uintptr_t addr = 0;
  std::size_t size = 0;
  Segment* segment = nullptr;
  Block* prev = nullptr;  // address neighbours within the segment
  Block* next = nullptr;
  std::size_t requested = 0;  // allocated: the bytes asked for
  StreamIndex stream = 0;     // allocated: the stream it was allocated on
  StreamIndex home = home_any;  // free and indexed: its key in the index
  bool allocated = false;
  bool mapped = true;   // expandable segments: physical memory behind the whole block
  bool indexed = false;
  bool binned = false;  // free, in its stream's quick list (not merged, not indexed)
  Block* next_binned = nullptr;
  AfterGroup* after = nullptr;  // free: record_stream events still pending
  FenceSet fences;              // free: work that may still use it
  std::uint64_t freed_at = 0;   // the pool's allocation count when it was last freed
  IndexHook hook;
  bool unmappable = false;  // indexed, in an expandable range, holding a whole chunk
  ListHook unmap_hook;      // its place in the pool's UnmapList

  [[nodiscard]] std::uintptr_t end() const noexcept { return addr + size; }
  [[nodiscard]] void* ptr() const noexcept { return reinterpret_cast<void*>(addr); }
  [[nodiscard]] bool is_free() const noexcept { return !allocated; }
};

/// A range from upstream (or an expandable virtual range) that blocks tile without gaps.
struct Segment {
  std::uintptr_t base = 0;
  std::size_t size = 0;         // bytes from upstream, or the reserved virtual range
  PoolKind kind = PoolKind::large;
  bool expandable = false;
  StreamIndex stream = 0;       // the stream it was allocated on (expandable: its owner)
  Block* first = nullptr;
  std::size_t allocated_bytes = 0;  // in allocated blocks
  std::size_t live_blocks = 0;
  std::size_t mapped_bytes = 0;     // expandable: physical memory mapped
  std::uint64_t used_at = 0;        // the pool's allocation count when a block was last freed
  std::uint64_t freed_seq = 0;      // the pool's free count then (orders equal counts)
  std::map<std::uintptr_t, Block*> unmapped;  // expandable: its free unmapped blocks

  [[nodiscard]] std::size_t reserved_bytes() const noexcept {
    return expandable ? mapped_bytes : size;
  }
  [[nodiscard]] bool wholly_free() const noexcept {
    return live_blocks == 0 && first != nullptr && first->next == nullptr &&
           first->after == nullptr && !first->binned;
  }
};

/// Blocks recycled through a free list: splitting and merging allocate nothing once warm.
class BlockPool {
 public:
  Block* make() {
    if (free_.empty()) {
      auto chunk = std::make_unique<Block[]>(chunk_blocks);
      // Room for every block ever made, so that recycle() never reallocates.
      free_.reserve((chunks_.size() + 1) * chunk_blocks);
      chunks_.push_back(std::move(chunk));
      for (std::size_t i = 0; i < chunk_blocks; ++i) free_.push_back(&chunks_.back()[i]);
    }
    Block* block = free_.back();
    free_.pop_back();
    return block;
  }
  void recycle(Block* block) noexcept {
    block->fences.clear();
    block->after = nullptr;
    block->prev = block->next = nullptr;
    block->segment = nullptr;
    block->allocated = false;
    block->indexed = false;
    block->binned = false;
    block->next_binned = nullptr;
    block->mapped = true;
    block->home = home_any;
    block->requested = 0;
    block->stream = 0;
    block->unmappable = false;
    free_.push_back(block);  // capacity reserved in make(): cannot throw
  }

 private:
  static constexpr std::size_t chunk_blocks = 256;
  std::vector<std::unique_ptr<Block[]>> chunks_;
  std::vector<Block*> free_;
};

/// Free blocks of one size pool ordered by (home, size, address): the best fit for a stream is
/// one lower_bound. Counts per home tell which homes hold any block.
class FreeIndex {
  struct Key {
    StreamIndex home = 0;
    std::size_t size = 0;
    std::uintptr_t addr = 0;
    friend auto operator<=>(const Key&, const Key&) = default;
  };
  struct KeyOf {
    using type = Key;
    Key operator()(const Block& block) const noexcept {
      return {block.home, block.size, block.addr};
    }
  };
  using Set =
      boost::intrusive::set<Block, boost::intrusive::member_hook<Block, IndexHook, &Block::hook>,
                            boost::intrusive::key_of_value<KeyOf>,
                            boost::intrusive::constant_time_size<true>>;

 public:
  FreeIndex() = default;
  FreeIndex(const FreeIndex&) = delete;
  FreeIndex& operator=(const FreeIndex&) = delete;
  ~FreeIndex() { set_.clear(); }

  void insert(Block* block) {
    set_.insert(*block);
    block->indexed = true;
    count(block->home) += 1;
  }
  void erase(Block* block) noexcept {
    set_.erase(set_.iterator_to(*block));
    block->indexed = false;
    count(block->home) -= 1;
  }
  /// The smallest block of `home` with at least `size` bytes, or null.
  [[nodiscard]] Block* best_fit(StreamIndex home, std::size_t size) {
    auto it = set_.lower_bound(Key{home, size, 0});
    if (it == set_.end() || it->home != home) return nullptr;
    return &*it;
  }
  /// The block after `block` in the same home, or null.
  [[nodiscard]] Block* next_in_home(Block* block) {
    auto it = std::next(set_.iterator_to(*block));
    if (it == set_.end() || it->home != block->home) return nullptr;
    return &*it;
  }
  /// The largest block of `home`, or null.
  [[nodiscard]] Block* largest(StreamIndex home) {
    auto it = set_.upper_bound(Key{home, ~std::size_t{0}, ~std::uintptr_t{0}});
    if (it == set_.begin()) return nullptr;
    --it;
    return it->home == home ? &*it : nullptr;
  }
  [[nodiscard]] std::size_t blocks_in(StreamIndex home) const noexcept {
    if (home == home_mixed) return mixed_;
    return home < per_home_.size() ? per_home_[home] : 0;
  }
  [[nodiscard]] std::size_t size() const noexcept { return set_.size(); }
  /// Makes room for the counters of homes up to `home` (called when a stream is added).
  void add_home(StreamIndex home) {
    if (per_home_.size() <= home) per_home_.resize(home + 1, 0);
  }
  template <typename Fn>
  void for_each(Fn&& fn) {
    for (Block& block : set_) fn(block);
  }

 private:
  std::size_t& count(StreamIndex home) noexcept {
    return home == home_mixed ? mixed_ : per_home_[home];
  }

  Set set_;
  std::vector<std::size_t> per_home_ = std::vector<std::size_t>(1, 0);
  std::size_t mixed_ = 0;
};

/// The free blocks of expandable ranges that hold at least one whole chunk (what unmapping can
/// give back), in the order they were indexed, oldest first: the release policy and growth walk
/// them from the front instead of every free block.
class UnmapList {
  using List =
      boost::intrusive::list<Block,
                             boost::intrusive::member_hook<Block, ListHook, &Block::unmap_hook>,
                             boost::intrusive::constant_time_size<true>>;

 public:
  UnmapList() = default;
  UnmapList(const UnmapList&) = delete;
  UnmapList& operator=(const UnmapList&) = delete;
  ~UnmapList() { list_.clear(); }

  void push(Block* block) noexcept {
    list_.push_back(*block);
    block->unmappable = true;
  }
  void erase(Block* block) noexcept {
    if (!block->unmappable) return;
    list_.erase(list_.iterator_to(*block));
    block->unmappable = false;
  }
  [[nodiscard]] std::size_t size() const noexcept { return list_.size(); }
  [[nodiscard]] List::iterator begin() noexcept { return list_.begin(); }
  [[nodiscard]] List::iterator end() noexcept { return list_.end(); }

 private:
  List list_;
};

/// A stream's quick lists: blocks it freed, kept by exact size without merging or indexing, so
/// that the steady state of a program that allocates the same sizes every step (inference)
/// reuses a block in O(1) (dlmalloc's fast bins). The pool merges and indexes them (`drain`)
/// before anything that needs the whole picture: a miss, growth, trimming, the release policy.
class QuickLists {
 public:
  /// Adds free `block`; false if there is no room or the lists are paused (the caller merges
  /// and indexes it instead).
  bool push(Block* block) noexcept {
    if (paused_ > 0) {
      --paused_;
      return false;
    }
    if (count_ >= max_blocks) return false;
    const std::size_t key = key_of(block);
    for (std::size_t probe = 0; probe < max_probes; ++probe) {
      Slot& slot = slots_[(hash(key) + probe) % slots];
      if (slot.key == key || slot.head == nullptr) {
        slot.key = key;
        block->next_binned = slot.head;
        block->binned = true;
        slot.head = block;
        ++count_;
        return true;
      }
    }
    return false;
  }
  /// A block of exactly `size` bytes in the pool `kind` (0 small, 1 large), or null.
  Block* take(std::size_t size, std::size_t kind) noexcept {
    if (count_ == 0) return nullptr;
    const std::size_t key = size | kind;
    for (std::size_t probe = 0; probe < max_probes; ++probe) {
      Slot& slot = slots_[(hash(key) + probe) % slots];
      if (slot.head == nullptr && slot.key != key) return nullptr;
      if (slot.key == key && slot.head != nullptr) {
        Block* block = slot.head;
        slot.head = block->next_binned;
        block->next_binned = nullptr;
        block->binned = false;
        --count_;
        ++taken_;
        return block;
      }
    }
    return nullptr;
  }
  /// Empties the lists, calling `fn` on each block (which is no longer binned). When most blocks
  /// listed since the last drain were never taken again (sizes that do not repeat: nothing to
  /// gain, and unmerged blocks fragment the pool), the lists pause for a while.
  template <typename Fn>
  void drain(Fn&& fn) {
    if (count_ > 2 * taken_ + min_useless) paused_ = pause_frees;
    taken_ = 0;
    if (count_ == 0) return;
    for (Slot& slot : slots_) {
      while (slot.head != nullptr) {
        Block* block = slot.head;
        slot.head = block->next_binned;
        block->next_binned = nullptr;
        block->binned = false;
        --count_;
        fn(block);
      }
      slot.key = 0;
    }
  }
  [[nodiscard]] std::size_t size() const noexcept { return count_; }

 private:
  static constexpr std::size_t slots = 64;
  static constexpr std::size_t max_probes = 4;
  static constexpr std::size_t max_blocks = 256;
  static constexpr std::size_t min_useless = 16;
  static constexpr std::size_t pause_frees = 4096;
  struct Slot {
    std::size_t key = 0;
    Block* head = nullptr;
  };
  // Sizes are multiples of 512: the low bit tells the size pool.
  static std::size_t key_of(const Block* block) noexcept;
  static std::size_t hash(std::size_t key) noexcept {
    return static_cast<std::size_t>((key >> 9) * 0x9E3779B97F4A7C15ULL >> 58);
  }
  Slot slots_[slots];
  std::size_t count_ = 0;
  std::size_t taken_ = 0;   // blocks taken since the last drain
  std::size_t paused_ = 0;  // frees left before the lists take blocks again
};

/// Blocks handed out, by address: open addressing with linear probing and backward-shift
/// deletion, so that the hot path allocates nothing once the table has grown.
class LiveMap {
 public:
  LiveMap() : slots_(initial_slots) {}

  [[nodiscard]] Block* find(std::uintptr_t key) const noexcept {
    std::size_t i = slot_of(key);
    while (true) {
      const Slot& slot = slots_[i];
      if (slot.key == key) return slot.block;
      if (slot.key == 0) return nullptr;
      i = (i + 1) & mask();
    }
  }
  void insert(std::uintptr_t key, Block* block) {
    if ((size_ + 1) * 2 > slots_.size()) grow();  // at most half full: short probe runs
    place(key, block);
    ++size_;
  }
  void erase(std::uintptr_t key) noexcept {
    std::size_t i = slot_of(key);
    while (slots_[i].key != key) {
      if (slots_[i].key == 0) return;
      i = (i + 1) & mask();
    }
    // Backward shift: move later members of the probe run into the hole.
    std::size_t hole = i;
    std::size_t j = i;
    while (true) {
      j = (j + 1) & mask();
      if (slots_[j].key == 0) break;
      const std::size_t home = slot_of(slots_[j].key);
      // j's element may move to `hole` if its home is not cyclically in (hole, j].
      const bool stays = hole <= j ? (hole < home && home <= j) : (hole < home || home <= j);
      if (!stays) {
        slots_[hole] = slots_[j];
        hole = j;
      }
    }
    slots_[hole] = Slot{};
    --size_;
  }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const Slot& slot : slots_) {
      if (slot.key != 0) fn(slot.block);
    }
  }

 private:
  struct Slot {
    std::uintptr_t key = 0;
    Block* block = nullptr;
  };
  static constexpr std::size_t initial_slots = 256;  // 2^8: see shift_

  [[nodiscard]] std::size_t mask() const noexcept { return slots_.size() - 1; }
  [[nodiscard]] std::size_t slot_of(std::uintptr_t key) const noexcept {
    // Fibonacci hashing: the product's top bits, as many as the table has.
    return static_cast<std::size_t>((key * 0x9E3779B97F4A7C15ULL) >> shift_);
  }
  void place(std::uintptr_t key, Block* block) noexcept {
    std::size_t i = slot_of(key);
    while (slots_[i].key != 0) i = (i + 1) & mask();
    slots_[i] = Slot{key, block};
  }
  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    --shift_;
    for (const Slot& slot : old) {
      if (slot.key != 0) place(slot.key, slot.block);
    }
  }

  std::vector<Slot> slots_;
  std::size_t size_ = 0;
  unsigned shift_ = 64 - 8;  // 64 - log2(slots)
};

inline std::size_t QuickLists::key_of(const Block* block) noexcept {
  return block->size | static_cast<std::size_t>(block->segment->kind);
}

}  // namespace gpulife::detail::pool
