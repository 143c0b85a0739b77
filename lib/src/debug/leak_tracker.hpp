// SPDX-License-Identifier: Apache-2.0
#pragma once

// Leak mode's registry of live tensors: one record per tensor (TensorImpl::record), kept in
// intrusive lists spread over shards so that threads making and dropping tensors at once rarely
// share a lock.

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <gpulife/source_location.hpp>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include <gpulife/debug/leak_report.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/tensor/detail/tensor_impl.hpp>

namespace gpulife::detail {

/// What leak mode knows about one live tensor beyond its control block.
struct TensorRecord {
  TensorImpl* impl = nullptr;
  std::uint64_t sequence = 0;  // order of creation within the tracker, for checkpoints
  std::chrono::system_clock::time_point created{};
  SourceLocation where{};
  // raw frames, null unless stacks are captured; shared with the timeline's allocate event
  std::shared_ptr<const std::vector<const void*>> stack;
  std::uint32_t shard = 0;
  TensorRecord* prev = nullptr;
  TensorRecord* next = nullptr;
};

/// "tensor #12 'weights'": how reports and sim violations name a tensor.
std::string tensor_name(std::uint64_t id, const std::string& tag);

class LeakTracker {
 public:
  LeakTracker(std::string device_name, bool stacks, std::size_t max_stack_frames);
  LeakTracker(const LeakTracker&) = delete;
  LeakTracker& operator=(const LeakTracker&) = delete;
  ~LeakTracker();

  /// Registers a new tensor; on allocation failure it stays untracked and is counted.
  void track(TensorImpl& impl, const SourceLocation& where) noexcept;
  /// Unregisters a dying tensor (its callbacks have not been taken yet).
  void untrack(TensorImpl& impl) noexcept;

  [[nodiscard]] LeakCheckpoint checkpoint() const noexcept {
    return {sequence_.load(std::memory_order_relaxed)};
  }
  /// The live set made since `since`; `pinned` names the tensors that are not leaks; `pool`,
  /// when not null, is asked for blocks that no live tensor owns.
  [[nodiscard]] LeakReport report(LeakCheckpoint since, std::vector<PinnedEntry> pinned,
                                  const PoolResource* pool) const;
  /// The live tensor whose memory contains [ptr, ptr + bytes), named for a violation report;
  /// "" if none.
  [[nodiscard]] std::string owner_of(const void* ptr, std::size_t bytes) const;

 private:
  struct alignas(64) Shard {
    mutable std::mutex mutex;
    TensorRecord* head = nullptr;
  };
  static constexpr std::size_t shard_count = 16;

  const std::string device_name_;
  const bool stacks_;
  const std::size_t max_stack_frames_;
  std::array<Shard, shard_count> shards_;
  std::atomic<std::uint64_t> sequence_{0};
  std::atomic<std::uint64_t> untracked_{0};
};

}  // namespace gpulife::detail
