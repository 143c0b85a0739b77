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

  // (events) events that close epochs, oldest first
  std::deque<std::pair<std::uint64_t, Event>> recorded;
};

/// record_stream events a free block waits for (`deallocate_after`). Owned by the pool's list
/// of pending groups; `block` is reset when the block is handed out or given back first.
struct AfterGroup {
  std::vector<Event> events;  // (events)
  Block* block = nullptr;     // (pool)
  bool complete = false;      // (pool)
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
