// SPDX-License-Identifier: Apache-2.0
#pragma once

// The timeline's bounded ring of events. A mutex guards it: the timeline is a debug mode, each
// event is a few stores under it (the tag is copied before the lock is taken), and the
// benchmark (bench/debug) shows the cost per tensor.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/debug/timeline.hpp>

namespace gpulife::detail {

class TimelineRecorder {
 public:
  struct Counters {
    std::size_t bytes_in_use = 0;
    std::size_t pool_cached_bytes = 0;
    std::size_t tensor_cache_bytes = 0;
  };

  TimelineRecorder(std::string device_name, std::size_t capacity);

  /// Appends an event, overwriting the oldest when full. Never throws: an event that cannot be
  /// stored is counted as dropped.
  void record(TimelineEventKind kind, std::uint64_t tensor_id, std::size_t bytes,
              std::string_view tag, const Counters& counters) noexcept;
  [[nodiscard]] Timeline snapshot() const;

 private:
  const std::string device_name_;
  const std::size_t capacity_;
  const std::chrono::steady_clock::time_point start_;
  const std::chrono::system_clock::time_point start_wall_;
  mutable std::mutex mutex_;
  std::vector<TimelineEvent> ring_;  // grows to capacity_, then `next_` wraps
  std::size_t next_ = 0;
  std::uint64_t recorded_ = 0;  // events that could not be stored count here too (as dropped)
};

}  // namespace gpulife::detail
