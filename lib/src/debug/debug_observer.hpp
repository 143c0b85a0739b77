// SPDX-License-Identifier: Apache-2.0
#pragma once

// The debug layer as the tensor arena sees it: one observer per context that feeds the leak
// tracker and the timeline, and writes the out-of-memory snapshot. The arena owns it, so it
// outlives the context for as long as tensors do.

#include <cstdint>
#include <memory>
#include <shared_mutex>

#include "debug/cache_hooks.hpp"
#include <gpulife/debug/debug_options.hpp>
#include <gpulife/debug/leak_report.hpp>
#include <gpulife/debug/timeline.hpp>

#include "debug/leak_tracker.hpp"
#include "debug/oom_dump.hpp"
#include "debug/timeline_recorder.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife::detail {

class DebugObserver final : public TensorObserver {
 public:
  /// `options` resolved (see `resolve_debug_options`), with leak mode or the timeline on.
  DebugObserver(const DebugOptions& options, TensorArena& arena);
  DebugObserver(const DebugObserver&) = delete;
  DebugObserver& operator=(const DebugObserver&) = delete;
  ~DebugObserver() override;

  void on_create(TensorImpl& impl, const SourceLocation& where) noexcept override;
  void on_release(TensorImpl& impl) noexcept override;
  void on_event(LifetimeEvent event, std::uint64_t tensor_id, std::size_t bytes,
                std::string_view tag, std::uint64_t memory_id) noexcept override;
  void on_out_of_memory(std::size_t requested, StreamView stream,
                        std::string_view message) noexcept override;

  [[nodiscard]] bool tracking_leaks() const noexcept { return tracker_ != nullptr; }
  [[nodiscard]] bool recording_timeline() const noexcept { return timeline_ != nullptr; }
  [[nodiscard]] LeakCheckpoint checkpoint() const noexcept;
  /// @pre tracking_leaks()
  [[nodiscard]] LeakReport leak_report(LeakCheckpoint since) const;
  /// @pre recording_timeline()
  [[nodiscard]] Timeline timeline() const;
  void set_cache_hooks(CacheDebugHooks hooks);

 private:
  void record(RecordedEvent&& event) noexcept;
  /// Gathers and writes the out-of-memory snapshot, and says where on stderr.
  void dump_out_of_memory(std::size_t requested, StreamView stream,
                          std::string_view message) noexcept;

  TensorArena& arena_;
  std::unique_ptr<LeakTracker> tracker_;
  std::unique_ptr<TimelineRecorder> timeline_;
  std::unique_ptr<OomDumper> oom_dumper_;
  std::uint64_t resolver_token_ = 0;
  // Shared while a hook runs, so that replacing the hooks (the cache going away) waits for it.
  mutable std::shared_mutex hooks_mutex_;
  CacheDebugHooks hooks_;
};

}  // namespace gpulife::detail
