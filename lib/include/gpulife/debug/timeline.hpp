// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Timeline`: the lifetime events a context recorded, exportable as a Chrome trace.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gpulife {

/// @brief What happened.
enum class TimelineEventKind : std::uint8_t {
  allocate,        ///< a tensor got memory
  free,            ///< a tensor's memory went back (stream-ordered)
  upload,          ///< bytes were copied host to device for a tensor
  cache_hit,       ///< the tensor cache returned an existing tensor
  cache_miss,      ///< the tensor cache had to upload
  cache_eviction,  ///< the tensor cache dropped a retained entry
  finalizer_run,   ///< a finalizer or expiry callback ran
  out_of_memory,   ///< an allocation failed after the memory-pressure chain
};

/// @return the event's name in traces: "allocate", "free", "upload", "cache_hit", ...
[[nodiscard]] std::string_view to_string(TimelineEventKind kind) noexcept;

/// @brief One recorded event, with the memory counters sampled just after it.
struct TimelineEvent {
  TimelineEventKind kind = TimelineEventKind::allocate;  ///< what happened
  std::chrono::nanoseconds time{};  ///< since the timeline started (the context was made)
  std::uint64_t tensor_id = 0;      ///< 0 where no tensor is involved (out-of-memory)
  std::size_t bytes = 0;            ///< the tensor's bytes, the upload's, or the failed request
  std::string tag;                     ///< the tensor's tag
  std::uint32_t thread = 0;            ///< small per-process number of the thread that caused it
  std::size_t bytes_in_use = 0;        ///< device memory owned by the context's live tensors
  std::size_t pool_cached_bytes = 0;   ///< free bytes the memory resource caches
  std::size_t tensor_cache_bytes = 0;  ///< bytes the tensor cache holds (0 without a cache)
};

/// @brief A snapshot of a context's timeline (see `Context::timeline`).
///
/// Counters are sampled right after each event on the thread that caused it. When several
/// threads make events at once, two samples may be recorded in the other order than taken, so
/// a counter can briefly show an older value; from one thread the samples are exact.
struct Timeline {
  bool recording = false;  ///< the timeline was on; otherwise `events` is empty
  std::string device;      ///< the context's device
  std::chrono::system_clock::time_point start{};  ///< wall-clock time of `time == 0`
  std::size_t capacity = 0;                       ///< events the ring keeps
  std::uint64_t recorded = 0;                     ///< events recorded in all
  std::uint64_t dropped = 0;          ///< of those, overwritten because the ring was full
  std::vector<TimelineEvent> events;  ///< oldest first

  /// @brief The Chrome Trace Event format (JSON object form), which Perfetto
  /// (ui.perfetto.dev) and chrome://tracing open: an instant event ("ph":"i") per event with
  /// args id, bytes and tag, and counter events ("ph":"C") for the tracks "bytes_in_use",
  /// "pool_cached_bytes" and "tensor_cache_bytes" wherever a value changes. Times are in
  /// microseconds.
  [[nodiscard]] std::string to_chrome_trace() const;
  /// @brief Writes `to_chrome_trace()` to `path`.
  /// @throws std::runtime_error if the file cannot be written
  void write_chrome_trace(const std::filesystem::path& path) const;
};

}  // namespace gpulife
