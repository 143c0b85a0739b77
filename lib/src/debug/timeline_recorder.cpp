// SPDX-License-Identifier: Apache-2.0
#include "debug/timeline_recorder.hpp"

#include <algorithm>
#include <unordered_set>
#include <utility>

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "debug/stack_trace.hpp"

namespace gpulife::detail {
namespace {

/// The calling thread's id and name, read once per thread (a name set later is not seen).
struct ThreadIdentity {
  std::uint32_t id = 0;
  std::array<char, 16> name{};
};

const ThreadIdentity& this_thread_identity() noexcept {
  thread_local const ThreadIdentity identity = [] {
    ThreadIdentity made;
    made.id = static_cast<std::uint32_t>(::syscall(SYS_gettid));
    if (::pthread_getname_np(::pthread_self(), made.name.data(), made.name.size()) != 0) {
      made.name[0] = '\0';
    }
    made.name.back() = '\0';
    return made;
  }();
  return identity;
}

AllocationSite site_of(const SourceLocation& where) {
  AllocationSite site;
  site.file = where.file_name();
  site.line = where.line();
  site.column = where.column();
  site.function = where.function_name();
  return site;
}

}  // namespace

std::uint32_t this_thread_os_id() noexcept { return this_thread_identity().id; }

TimelineRecorder::TimelineRecorder(std::string device_name, std::size_t capacity)
    : device_name_(std::move(device_name)),
      capacity_(std::max<std::size_t>(capacity, 1)),
      start_(std::chrono::steady_clock::now()),
      start_wall_(std::chrono::system_clock::now()) {
  // Grown as events come, so that a large capacity costs nothing until it is used; a first
  // block keeps the early events from reallocating under the lock.
  ring_.reserve(std::min<std::size_t>(capacity_, 1024));
}

void TimelineRecorder::record(RecordedEvent&& event) noexcept {
  const ThreadIdentity& thread = this_thread_identity();
  event.thread = thread.id;
  event.thread_name = thread.name;
  std::scoped_lock lock(mutex_);
  ++recorded_;
  try {
    // Timed under the lock, so that the ring is in time order.
    event.time = std::chrono::steady_clock::now() - start_;
    if (ring_.size() < capacity_) {
      ring_.push_back(std::move(event));
    } else {
      ring_[next_] = std::move(event);
      next_ = (next_ + 1) % capacity_;
    }
  } catch (...) {
    // out of host memory: counted in `recorded_` but not stored, so it shows as dropped
  }
}

Timeline TimelineRecorder::snapshot(std::size_t max_events) const {
  Timeline timeline;
  timeline.recording = true;
  timeline.device = device_name_;
  timeline.start = start_wall_;
  timeline.capacity = capacity_;
  timeline.process_id = static_cast<std::uint32_t>(::getpid());
  std::vector<RecordedEvent> copied;
  {
    std::scoped_lock lock(mutex_);
    timeline.recorded = recorded_;
    const std::size_t count = std::min(ring_.size(), max_events);
    timeline.dropped = recorded_ - count;
    copied.reserve(count);
    // oldest first: from `next_` to the end, then the start; the newest `count` of them
    for (std::size_t i = ring_.size() - count; i < ring_.size(); ++i) {
      copied.push_back(ring_[(next_ + i) % ring_.size()]);
    }
  }
  // Symbolising reads debug information: done outside the lock.
  timeline.events.reserve(copied.size());
  std::unordered_set<std::uint32_t> named;
  for (RecordedEvent& recorded : copied) {
    TimelineEvent& event = timeline.events.emplace_back();
    event.kind = recorded.kind;
    event.time = recorded.time;
    event.tensor_id = recorded.tensor_id;
    event.memory_id = recorded.memory_id;
    event.bytes = recorded.bytes;
    event.tag = std::move(recorded.tag);
    event.thread = recorded.thread;
    event.stream_id = recorded.stream_id;
    event.dtype = recorded.dtype;
    event.shape = recorded.shape;
    if (recorded.has_site) event.site = site_of(recorded.where);
    if (recorded.frames && !recorded.frames->empty()) {
      event.stack = symbolise_stack(*recorded.frames);
    }
    if (named.insert(recorded.thread).second) {
      timeline.threads.push_back({recorded.thread, std::string(recorded.thread_name.data())});
    }
    event.bytes_in_use = recorded.bytes_in_use;
    event.pool_cached_bytes = recorded.pool_cached_bytes;
    event.tensor_cache_bytes = recorded.tensor_cache_bytes;
  }
  std::sort(timeline.threads.begin(), timeline.threads.end(),
            [](const TimelineThread& a, const TimelineThread& b) { return a.id < b.id; });
  return timeline;
}

}  // namespace gpulife::detail
