// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Timeline`: the lifetime events a context recorded, exportable as a Chrome trace and
/// as a self-contained HTML view.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/debug/leak_report.hpp>
#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/lifetime_event.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife {

/// @brief What a timeline event records: the tensor layer's lifetime events, which the debug
/// layer observes.
using TimelineEventKind = LifetimeEvent;

/// @brief One recorded event, with the memory counters sampled just after it.
struct TimelineEvent {
  TimelineEventKind kind = TimelineEventKind::allocate;  ///< what happened
  std::chrono::nanoseconds time{};  ///< since the timeline started (the context was made)
  std::uint64_t tensor_id = 0;      ///< 0 where no tensor is involved (out-of-memory)
  /// For a cache hit or miss: the id of the tensor that owns the memory handed out, whose
  /// `upload` (or `allocate`) event a hit reuses; otherwise 0.
  std::uint64_t memory_id = 0;
  std::size_t bytes = 0;        ///< the tensor's bytes, the upload's, or the failed request
  std::string tag;              ///< the tensor's tag
  std::uint32_t thread = 0;     ///< the operating system's id of the thread that caused it
  std::uint64_t stream_id = 0;  ///< allocate, free, out_of_memory: the stream (0: unknown)
  DType dtype = DType::byte;    ///< allocate: the tensor's element type
  Shape shape{};                ///< allocate: the tensor's extents
  AllocationSite site{};        ///< allocate: where the tensor was made
  /// allocate, with `DebugOptions::stacks`: the call stack, innermost first, as leak reports
  /// give it ("function at file:line"); otherwise empty.
  std::vector<std::string> stack;
  std::size_t bytes_in_use = 0;        ///< device memory owned by the context's live tensors
  std::size_t pool_cached_bytes = 0;   ///< free bytes the memory resource caches
  std::size_t tensor_cache_bytes = 0;  ///< bytes the tensor cache holds (0 without a cache)
};

/// @brief A thread that caused events, as the operating system names it.
struct TimelineThread {
  std::uint32_t id = 0;  ///< the operating system's thread id (`TimelineEvent::thread`)
  std::string name;      ///< its name when it first caused an event (Linux: 15 characters)
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
  std::uint32_t process_id = 0;                   ///< the process that recorded it
  std::size_t capacity = 0;                       ///< events the ring keeps
  std::uint64_t recorded = 0;                     ///< events recorded in all
  std::uint64_t dropped = 0;            ///< of those, overwritten because the ring was full
  std::vector<TimelineEvent> events;    ///< oldest first
  std::vector<TimelineThread> threads;  ///< the threads of `events`, by id

  /// @brief The Chrome Trace Event format (JSON object form), which Perfetto (ui.perfetto.dev)
  /// opens, and which `write_timeline_view` / `gpulife_view` turn into an offline page.
  ///
  /// - `pid` is `process_id` and `tid` the operating system's thread id; metadata events name
  ///   the process after the device and each thread by its name.
  /// - Each event is an instant event ("ph":"i") named after its kind, on the thread that
  ///   caused it, with args `id`, `bytes`, `tag` (and `memory_id`, `stream` where known).
  /// - Each tensor's life is an async span ("ph":"b" at its allocation, "e" at its release;
  ///   category "tensor", id the tensor id) with args `id`, `bytes`, `tag`, `dtype`, `shape`,
  ///   `stream`, `site` and, with stacks, `stack`. A tensor still alive has no "e"; one made
  ///   before the oldest recorded event has no span.
  /// - A cache hit is linked to the upload (or allocation) whose memory it reuses by a flow
  ///   ("ph":"s" at the upload, "f" at the hit; category "cache_reuse").
  /// - Counter events ("ph":"C") for the tracks "bytes_in_use", "pool_cached_bytes" and
  ///   "tensor_cache_bytes" wherever a value changes.
  /// Times are in microseconds. Strings are escaped by a JSON library, so the file is valid
  /// JSON whatever a tag holds (invalid UTF-8 becomes U+FFFD).
  [[nodiscard]] std::string to_chrome_trace() const;
  /// @brief Writes `to_chrome_trace()` to `path`.
  /// @throws std::runtime_error if the file cannot be written
  void write_chrome_trace(const std::filesystem::path& path) const;
};

}  // namespace gpulife
