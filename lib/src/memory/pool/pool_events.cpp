// SPDX-License-Identifier: Apache-2.0
// The pool's stream policy, event side: events that close a stream's batch of frees are recorded
// lazily, when another stream (or a release) needs to know where that batch ends, and queried
// when the pool would otherwise take more memory. All of it under the event mutex; the block
// mutex is taken only briefly to read and apply epochs, never around an event call.

#include <algorithm>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gpulife/error_handler.hpp>

#include "memory/pool/pool_state.hpp"

namespace gpulife {

using detail::pool::AfterGroup;
using detail::pool::Fence;
using detail::pool::FenceSet;
using detail::pool::StreamState;

namespace {

struct Claim {
  StreamState* state = nullptr;
  std::uint64_t epoch = 0;
};

/// Closes `state`'s open epoch (block mutex held): frees after this point belong to the next.
Claim claim(StreamState& state) noexcept {
  const std::uint64_t epoch = state.epoch++;
  state.open_frees = 0;
  return {&state, epoch};
}

/// Records an event on the claimed stream (event mutex held). False if the device refused.
bool record(const Device& device, const Claim& c) noexcept {
  try {
    Event event(device);
    c.state->impl->record(*event.impl());
    c.state->recorded.emplace_back(c.epoch, std::move(event));
    return true;
  } catch (const std::exception& e) {
    // A later event covers this epoch as well (see `unrecorded`): the blocks wait a little
    // longer, nothing breaks.
    report_error(std::string("PoolResource: recording an event failed: ") + e.what());
    return false;
  }
}

/// The event that was to close `c`'s epoch could not be recorded (block mutex held): the epoch
/// is closed, but no event covers it. Its frees count as open again, so that the next sweep
/// closes the stream's next epoch with an event that covers this one too (stream order). Without
/// this, a stream that frees nothing more would leave the epoch's blocks forever of unknown
/// state: never unmapped by trim() or the release policy, a leak of the pool's memory.
void unrecorded(const Claim& c) noexcept { c.state->open_frees += 1; }

bool query(const Event& event) noexcept {
  try {
    return event.query();
  } catch (...) {
    return false;  // unknown: treated as still running
  }
}

}  // namespace

bool PoolResource::State::sweep(const std::vector<StreamIndex>& close, std::size_t group_budget,
                                std::vector<std::shared_ptr<AfterGroup>> candidates) noexcept {
  std::scoped_lock events(event_mutex);
  std::vector<Claim> claims;
  std::vector<StreamState*> states;
  std::vector<std::shared_ptr<AfterGroup>> groups = std::move(candidates);
  try {
    std::scoped_lock lock(mutex);
    for (StreamIndex index : close) {
      StreamState& state = streams.at(index);
      if (state.open_frees > 0) claims.push_back(claim(state));
    }
    for (const auto& state : streams.all()) states.push_back(state.get());
    // A group taken meanwhile (its block handed out) is no longer pending: skipped below.
    after_groups.next(group_budget, groups);
  } catch (...) {
    return false;  // no memory for the lists: nothing learnt this time
  }

  std::size_t recorded = 0;
  std::vector<bool> ok(claims.size(), false);
  for (std::size_t i = 0; i < claims.size(); ++i) {
    ok[i] = record(device, claims[i]);
    if (ok[i]) ++recorded;
  }
  std::vector<std::uint64_t> completed(states.size(), 0);
  for (std::size_t i = 0; i < states.size(); ++i) {
    auto& queue = states[i]->recorded;
    while (!queue.empty() && query(queue.front().second)) {
      completed[i] = queue.front().first;
      queue.pop_front();
    }
  }
  std::vector<bool> done(groups.size(), false);
  for (std::size_t i = 0; i < groups.size(); ++i) {
    done[i] = std::all_of(groups[i]->events.begin(), groups[i]->events.end(),
                          [](const Event& e) { return query(e); });
  }

  bool progress = false;
  {
    std::scoped_lock lock(mutex);
    counters.events_recorded += recorded;
    for (std::size_t i = 0; i < claims.size(); ++i) {
      if (!ok[i]) {
        unrecorded(claims[i]);
        continue;
      }
      claims[i].state->recorded_epoch = std::max(claims[i].state->recorded_epoch, claims[i].epoch);
    }
    for (std::size_t i = 0; i < states.size(); ++i) {
      if (completed[i] > states[i]->completed_epoch) {
        states[i]->completed_epoch = completed[i];
        progress = true;
      }
    }
    for (std::size_t i = 0; i < groups.size(); ++i) {
      AfterGroup& group = *groups[i];
      if (!done[i] || group.slot == AfterGroup::no_slot) continue;  // running, or taken
      progress = true;
      if (Block* block = group.block) {
        group.block = nullptr;
        if (block->indexed) unindex(block);
        block->after = nullptr;
        merge(block);
        index(block);
      }
      (void)after_groups.remove(&group);  // `groups` still owns it: nothing is destroyed here
    }
  }
  // `groups` dies here, with the event mutex held and the block mutex not: the completed
  // groups' events go back to the device's pool.
  return progress;
}

std::size_t PoolResource::State::wait_for(
    StreamState& waiter, const FenceSet& fences,
    const std::vector<std::shared_ptr<AfterGroup>>& groups) {
  detail::StreamImpl& stream = *waiter.impl;
  std::size_t waits = 0;
  auto wait_on = [&](const Event& event) {
    try {
      stream.wait(*event.impl());
      ++waits;
    } catch (const std::exception& e) {
      // Without the device-side wait the only safe order left is the host's.
      report_error(std::string("PoolResource: stream wait failed, waiting on the host: ") +
                   e.what());
      event.synchronize();
    }
  };
  for (const Fence& fence : fences) {
    std::vector<Claim> claims;
    StreamState* state = nullptr;
    {
      std::scoped_lock lock(mutex);
      state = &streams.at(fence.stream);
      if (state->completed_epoch >= fence.epoch) continue;
      // Already ordered after that work by an earlier wait: stream order is transitive.
      if (fence.stream < waiter.waited.size() && waiter.waited[fence.stream] >= fence.epoch) {
        continue;
      }
      if (state->recorded_epoch < fence.epoch) claims.push_back(claim(*state));
    }
    if (!claims.empty()) {
      if (!record(device, claims.front())) {
        // No event: the host waits for the whole stream instead. Everything the closed epoch
        // stands for was queued before the synchronisation: it is complete now.
        state->impl->synchronize();
        std::scoped_lock lock(mutex);
        state->completed_epoch = std::max(state->completed_epoch, claims.front().epoch);
        continue;
      }
      std::scoped_lock lock(mutex);
      ++counters.events_recorded;
      state->recorded_epoch = std::max(state->recorded_epoch, claims.front().epoch);
    }
    // The first event that covers the fence: the queue is in epoch order.
    const auto it = std::lower_bound(state->recorded.begin(), state->recorded.end(), fence.epoch,
                                     [](const std::pair<std::uint64_t, Event>& e,
                                        std::uint64_t epoch) { return e.first < epoch; });
    if (it != state->recorded.end()) {
      wait_on(it->second);
      std::scoped_lock lock(mutex);
      if (waiter.waited.size() <= fence.stream) waiter.waited.resize(fence.stream + 1, 0);
      waiter.waited[fence.stream] = std::max(waiter.waited[fence.stream], it->first);
    } else {
      state->impl->synchronize();  // completed meanwhile, or never recorded
    }
  }
  for (const auto& group : groups) {
    for (const Event& event : group->events) wait_on(event);
  }
  return waits;
}

void PoolResource::State::give_back(DeviceMemoryResource& upstream,
                                    std::vector<Release>& releases) noexcept {
  for (Release& release : releases) {
    std::vector<Event> after;
    {
      std::scoped_lock events(event_mutex);
      try {
        for (detail::StreamImpl* other : release.wait_on) {
          Event event(device);
          other->record(*event.impl());
          after.push_back(std::move(event));
        }
        for (const auto& group : release.groups) {
          for (Event& event : group->events) after.push_back(std::move(event));
        }
      } catch (const std::exception& e) {
        // Cannot order the free after the other streams: wait for them on the host instead.
        report_error(std::string("PoolResource: ordering a release failed, synchronising: ") +
                     e.what());
        for (detail::StreamImpl* other : release.wait_on) {
          try {
            other->synchronize();
          } catch (...) {
          }
        }
        for (const Event& event : after) {
          try {
            event.synchronize();
          } catch (...) {
          }
        }
        after.clear();
      }
      release.groups.clear();
    }
    StreamView stream{release.stream};
    device.impl().unregister_pool_segment(release.ptr);
    if (after.empty()) {
      upstream.deallocate(release.ptr, release.bytes, stream);
    } else {
      upstream.deallocate_after(release.ptr, release.bytes, stream, std::move(after));
    }
  }
  releases.clear();
}

}  // namespace gpulife
