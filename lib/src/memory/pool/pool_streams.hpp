// SPDX-License-Identifier: Apache-2.0
#pragma once

// The pool's stream policy: a table of the streams the pool has served, the epochs that stand
// for batches of frees on each stream, the events recorded lazily to close an epoch, and what
// is known to have completed. Fields marked (pool) are read and written under the pool's block
// mutex; fields marked (events) under its event mutex, the only one held while the pool records,
// queries or waits on an event (the block mutex never is). Lock order: events, then pool.

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <utility>
#include <vector>
#include <algorithm>

#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/event.hpp>

#include "memory/pool/pool_blocks.hpp"

namespace gpulife::detail::pool {

struct StreamState {
  StreamImpl* impl = nullptr;
  std::uint64_t id = 0;
  StreamIndex index = 0;

  // (pool) Frees on this stream are tagged with `epoch`; an event recorded after the epoch was
  // closed covers every free tagged with it or earlier.
  std::uint64_t epoch = 1;
  std::uint64_t recorded_epoch = 0;   // (pool) the latest epoch an event covers
  std::uint64_t completed_epoch = 0;  // (pool) epochs up to this one are known complete
  std::size_t open_frees = 0;          // (pool) frees tagged with the open epoch

  // (pool) per-stream counters
  std::size_t allocated_bytes = 0;
  std::size_t requested_bytes = 0;
  std::size_t mapped_bytes = 0;
  std::uint64_t allocations = 0;
  std::uint64_t cross_stream_reuses = 0;
  std::uint64_t stream_waits = 0;

  QuickLists quick;  // (pool) blocks this stream freed, not yet merged
  // (pool) per other stream's index: the latest of its epochs this stream's queue was made to
  // wait for (later work here is ordered after it: no second wait needed)
  std::vector<std::uint64_t> waited;

  // (events) events that close epochs, oldest first
  std::deque<std::pair<std::uint64_t, Event>> recorded;
};

/// record_stream events a free block waits for (`deallocate_after`). Owned by the pool's list
/// of pending groups (`slot` is its place there) until its events complete or its block is
/// handed out (then the allocation waits for the events and drops the group).
struct AfterGroup {
  static constexpr std::size_t no_slot = ~std::size_t{0};
  std::vector<Event> events;      // (events)
  Block* block = nullptr;         // (pool)
  std::size_t slot = no_slot;     // (pool) index in the pool's pending groups, or no_slot
};

/// The pending record_stream groups: insertion and removal in O(1) (each group knows its
/// slot), and a cursor that lets every sweep query a bounded number of them in turn, so that no
/// allocation pays for all of them.
class PendingGroups {
 public:
  /// Adds `group` (capacity must have been reserved: see `reserve_one`).
  void add(std::shared_ptr<AfterGroup> group) noexcept {
    group->slot = groups_.size();
    groups_.push_back(std::move(group));
  }
  /// Makes room for one more, so that `add` cannot throw.
  void reserve_one() { groups_.reserve(groups_.size() + 1); }
  /// Removes `group` if pending; returns the owning pointer (null if it was not pending).
  std::shared_ptr<AfterGroup> remove(AfterGroup* group) noexcept {
    const std::size_t i = group->slot;
    if (i == AfterGroup::no_slot) return nullptr;
    std::shared_ptr<AfterGroup> owned = std::move(groups_[i]);
    if (i + 1 != groups_.size()) {
      groups_[i] = std::move(groups_.back());
      groups_[i]->slot = i;
    }
    groups_.pop_back();
    group->slot = AfterGroup::no_slot;
    if (cursor_ >= groups_.size()) cursor_ = 0;
    return owned;
  }
  /// The owning pointer of pending `group`.
  [[nodiscard]] const std::shared_ptr<AfterGroup>& owner(const AfterGroup* group) const noexcept {
    return groups_[group->slot];
  }
  /// Appends up to `count` pending groups to `out`, going round from where the last call
  /// stopped; all of them if `count` is at least their number.
  void next(std::size_t count, std::vector<std::shared_ptr<AfterGroup>>& out) {
    const std::size_t n = groups_.size();
    if (count >= n) {
      out.insert(out.end(), groups_.begin(), groups_.end());
      return;
    }
    for (std::size_t k = 0; k < count; ++k) {
      out.push_back(groups_[cursor_]);
      cursor_ = cursor_ + 1 == n ? 0 : cursor_ + 1;
    }
  }
  [[nodiscard]] bool empty() const noexcept { return groups_.empty(); }
  [[nodiscard]] std::size_t size() const noexcept { return groups_.size(); }
  /// Takes every pending group out (destruction).
  std::vector<std::shared_ptr<AfterGroup>> take_all() noexcept {
    for (const auto& g : groups_) g->slot = AfterGroup::no_slot;
    cursor_ = 0;
    return std::exchange(groups_, {});
  }

 private:
  std::vector<std::shared_ptr<AfterGroup>> groups_;
  std::size_t cursor_ = 0;
};

/// The streams a pool has served. States are never removed: streams come from the device's
/// pool and live as long as the device.
class StreamTable {
 public:
  /// The state of `stream`, added if new (pool mutex held).
  StreamState& of(StreamImpl& stream) {
    if (last_ != nullptr && last_->impl == &stream) return *last_;
    for (const auto& state : states_) {
      if (state->impl == &stream) return *(last_ = state.get());
    }
    auto state = std::make_unique<StreamState>();
    state->impl = &stream;
    state->id = stream.id();
    state->index = static_cast<StreamIndex>(states_.size() + 1);
    states_.push_back(std::move(state));
    return *(last_ = states_.back().get());
  }
  /// The state with index `index` (1-based).
  [[nodiscard]] StreamState& at(StreamIndex index) const noexcept { return *states_[index - 1]; }
  [[nodiscard]] std::size_t size() const noexcept { return states_.size(); }
  [[nodiscard]] const std::vector<std::unique_ptr<StreamState>>& all() const noexcept {
    return states_;
  }

  /// True if the work that `fence` stands for is known to have completed (pool mutex held).
  [[nodiscard]] bool complete(const Fence& fence) const noexcept {
    return at(fence.stream).completed_epoch >= fence.epoch;
  }
  /// Drops the fences known complete.
  void prune(FenceSet& fences) const noexcept {
    fences.erase(std::remove_if(fences.begin(), fences.end(),
                                [this](const Fence& f) { return complete(f); }),
                 fences.end());
  }
  /// The index home of a free block with `fences` (pruned first) and no pending group.
  [[nodiscard]] StreamIndex home_of(FenceSet& fences) const noexcept {
    prune(fences);
    if (fences.empty()) return home_any;
    const StreamIndex first = fences.front().stream;
    for (const Fence& f : fences) {
      if (f.stream != first) return home_mixed;
    }
    return first;
  }
  /// True if a block with `fences` may serve an allocation on `stream` with no dependency.
  [[nodiscard]] bool ready_for(const FenceSet& fences, StreamIndex stream) const noexcept {
    for (const Fence& f : fences) {
      if (f.stream != stream && !complete(f)) return false;
    }
    return true;
  }

 private:
  std::vector<std::unique_ptr<StreamState>> states_;
  StreamState* last_ = nullptr;
};

}  // namespace gpulife::detail::pool
