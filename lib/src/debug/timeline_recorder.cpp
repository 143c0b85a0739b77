// SPDX-License-Identifier: Apache-2.0
#include "debug/timeline_recorder.hpp"

#include <algorithm>
#include <atomic>
#include <utility>

namespace gpulife::detail {
namespace {

std::uint32_t this_thread_number() noexcept {
  static std::atomic<std::uint32_t> next{1};
  thread_local const std::uint32_t number = next.fetch_add(1, std::memory_order_relaxed);
  return number;
}

}  // namespace

TimelineRecorder::TimelineRecorder(std::string device_name, std::size_t capacity)
    : device_name_(std::move(device_name)),
      capacity_(std::max<std::size_t>(capacity, 1)),
      start_(std::chrono::steady_clock::now()),
      start_wall_(std::chrono::system_clock::now()) {
  // Grown as events come, so that a large capacity costs nothing until it is used; a first
  // block keeps the early events from reallocating under the lock.
  ring_.reserve(std::min<std::size_t>(capacity_, 1024));
}

void TimelineRecorder::record(TimelineEventKind kind, std::uint64_t tensor_id, std::size_t bytes,
                              std::string_view tag, const Counters& counters) noexcept {
  try {
    TimelineEvent event;
    event.kind = kind;
    event.tensor_id = tensor_id;
    event.bytes = bytes;
    event.tag.assign(tag);
    event.thread = this_thread_number();
    event.bytes_in_use = counters.bytes_in_use;
    event.pool_cached_bytes = counters.pool_cached_bytes;
    event.tensor_cache_bytes = counters.tensor_cache_bytes;
    std::scoped_lock lock(mutex_);
    // Timed under the lock, so that the ring is in time order.
    event.time = std::chrono::steady_clock::now() - start_;
    ++recorded_;
    if (ring_.size() < capacity_) {
      ring_.push_back(std::move(event));
    } else {
      ring_[next_] = std::move(event);
      next_ = (next_ + 1) % capacity_;
    }
  } catch (...) {
    std::scoped_lock lock(mutex_);
    ++recorded_;
  }
}

Timeline TimelineRecorder::snapshot() const {
  Timeline timeline;
  timeline.recording = true;
  timeline.device = device_name_;
  timeline.start = start_wall_;
  timeline.capacity = capacity_;
  std::scoped_lock lock(mutex_);
  timeline.recorded = recorded_;
  timeline.dropped = recorded_ - ring_.size();
  timeline.events.reserve(ring_.size());
  // oldest first: from `next_` to the end, then the start
  timeline.events.insert(timeline.events.end(), ring_.begin() + static_cast<std::ptrdiff_t>(next_),
                         ring_.end());
  timeline.events.insert(timeline.events.end(), ring_.begin(),
                         ring_.begin() + static_cast<std::ptrdiff_t>(next_));
  return timeline;
}

}  // namespace gpulife::detail
