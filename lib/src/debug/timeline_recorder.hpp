// SPDX-License-Identifier: Apache-2.0
#pragma once

// The timeline's bounded ring of events. A mutex guards it: the timeline is a debug mode, each
// event is a few stores under it (the tag is copied before the lock is taken), and the
// benchmark (bench/debug) shows the cost per tensor.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/debug/timeline.hpp>
#include <gpulife/source_location.hpp>

namespace gpulife::detail {

/// An event as the ring keeps it: the allocation site as the compiler gave it and the stack as
/// raw frames (shared with the leak tracker's record); both are turned into text only when a
/// snapshot is taken.
struct RecordedEvent {
  LifetimeEvent kind = LifetimeEvent::allocate;
  std::chrono::nanoseconds time{};
  std::uint64_t tensor_id = 0;
  std::uint64_t memory_id = 0;
  std::uint64_t stream_id = 0;
  std::size_t bytes = 0;
  std::string tag;
  DType dtype = DType::byte;
  Shape shape{};
  bool has_site = false;
  SourceLocation where{};
  std::shared_ptr<const std::vector<const void*>> frames;
  std::uint32_t thread = 0;
  std::array<char, 16> thread_name{};  // as the thread was named when it first recorded
  std::size_t bytes_in_use = 0;
  std::size_t pool_cached_bytes = 0;
  std::size_t tensor_cache_bytes = 0;
};

class TimelineRecorder {
 public:
  TimelineRecorder(std::string device_name, std::size_t capacity);

  /// Appends an event (its time and thread are filled in here), overwriting the oldest when
  /// full. Never throws: an event that cannot be stored is counted as dropped.
  void record(RecordedEvent&& event) noexcept;
  /// The events, oldest first; at most the newest `max_events` of them.
  [[nodiscard]] Timeline snapshot(std::size_t max_events = static_cast<std::size_t>(-1)) const;

 private:
  const std::string device_name_;
  const std::size_t capacity_;
  const std::chrono::steady_clock::time_point start_;
  const std::chrono::system_clock::time_point start_wall_;
  mutable std::mutex mutex_;
  std::vector<RecordedEvent> ring_;  // grows to capacity_, then `next_` wraps
  std::size_t next_ = 0;
  std::uint64_t recorded_ = 0;  // events that could not be stored count here too (as dropped)
};

/// The calling thread's operating-system id (Linux: gettid), read once per thread.
std::uint32_t this_thread_os_id() noexcept;

}  // namespace gpulife::detail
