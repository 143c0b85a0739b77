// SPDX-License-Identifier: Apache-2.0
// A GraphPool's memory; see graph_pool_state.hpp.

#include "tensor/graph_pool_state.hpp"

#include <stdexcept>
#include <string>

#include <gpulife/runtime/graph.hpp>

namespace gpulife {

GraphPoolStatistics GraphPool::statistics() const {
  if (!state_) throw std::invalid_argument("pool: empty GraphPool");
  return state_->statistics();
}

namespace detail {
namespace {

constexpr std::size_t block_granularity = 512;

}  // namespace

GraphPoolState::GraphPoolState(TensorArena& arena) : arena_(arena) { arena_.ref(); }

GraphPoolState::~GraphPoolState() {
  {
    // cudaFree under a relaxed capture mode: the pool may die while another capture runs.
    const CaptureModeGuard relaxed(arena_.device(), CaptureMode::relaxed);
    for (auto& [address, block] : blocks_) {
      arena_.device().impl().deallocate(reinterpret_cast<void*>(address), block.size);
    }
  }
  blocks_.clear();
  for (auto& release : deferred_releases_) release();
  deferred_releases_.clear();
  // newest first, as a tensor's own callbacks run
  for (auto it = deferred_callbacks_.rbegin(); it != deferred_callbacks_.rend(); ++it) (*it)->run();
  deferred_callbacks_.clear();
  for (TensorImpl* impl : observed_) {
    impl->kept_by_graph_pool.store(false, std::memory_order_release);
    if (TensorObserver* observer = arena_.observer()) observer->on_release(*impl);
    drop_weak(impl);
  }
  arena_.unref();
}

void* GraphPoolState::allocate(std::size_t bytes, StreamImpl& stream, std::uint64_t capture,
                               const std::shared_ptr<void>& life) {
  const std::size_t size = (bytes + block_granularity - 1) / block_granularity * block_granularity;
  std::scoped_lock lock(mutex_);
  auto best = blocks_.end();
  for (auto it = blocks_.begin(); it != blocks_.end(); ++it) {
    Block& block = it->second;
    if (block.size < size || block.size > 2 * size) continue;
    const bool reusable =
        block.state == State::free ||
        (block.state == State::free_in_capture && block.capture == capture &&
         block.stream == &stream) ||
        (block.state == State::free_after_graph && block.graph.expired());
    if (reusable && (best == blocks_.end() || block.size < best->second.size)) best = it;
  }
  if (best == blocks_.end()) {
    void* ptr = nullptr;
    {
      const CaptureModeGuard relaxed(arena_.device(), CaptureMode::relaxed);
      ptr = arena_.device().impl().allocate(size);
    }
    try {
      best = blocks_.emplace(reinterpret_cast<std::uintptr_t>(ptr), Block{}).first;
    } catch (...) {
      const CaptureModeGuard relaxed(arena_.device(), CaptureMode::relaxed);
      arena_.device().impl().deallocate(ptr, size);
      throw;
    }
    best->second.size = size;
    ++upstream_allocations_;
    reserved_bytes_ += size;
  }
  Block& block = best->second;
  block.state = State::live;
  block.capture = capture;
  block.stream = nullptr;
  block.graph = life;
  return reinterpret_cast<void*>(best->first);
}

void GraphPoolState::free(void* ptr, StreamImpl* stream, std::uint64_t capture,
                          bool ordered) noexcept {
  std::scoped_lock lock(mutex_);
  const auto it = blocks_.find(reinterpret_cast<std::uintptr_t>(ptr));
  if (it == blocks_.end()) {
    arena_.report("GraphPool: freeing a block it does not hold");
    return;
  }
  Block& block = it->second;
  if (capture != 0 && block.capture == capture && ordered && stream != nullptr) {
    block.state = State::free_in_capture;
    block.stream = stream;
  } else {
    block.state = State::free_after_graph;
  }
}

void GraphPoolState::settle(std::uint64_t capture) noexcept {
  std::scoped_lock lock(mutex_);
  for (auto& [address, block] : blocks_) {
    if (block.state == State::free_in_capture && block.capture == capture) {
      block.state = State::free;
      block.stream = nullptr;
    }
  }
}

void GraphPoolState::defer(std::function<void()> release) noexcept {
  std::scoped_lock lock(mutex_);
  try {
    deferred_releases_.push_back(std::move(release));
  } catch (...) {
    arena_.report("GraphPool: out of host memory keeping a release; its memory is not released");
  }
}

void GraphPoolState::defer(std::vector<std::shared_ptr<CallbackState>> callbacks) noexcept {
  std::scoped_lock lock(mutex_);
  try {
    deferred_callbacks_.insert(deferred_callbacks_.end(), callbacks.begin(), callbacks.end());
    ++deferred_tensors_;
  } catch (...) {
    arena_.report("GraphPool: out of host memory keeping finalizers; they run at shutdown");
  }
}

void GraphPoolState::defer_observed(TensorImpl* impl) noexcept {
  std::scoped_lock lock(mutex_);
  try {
    observed_.push_back(impl);
  } catch (...) {
    impl->kept_by_graph_pool.store(false, std::memory_order_release);
    if (TensorObserver* observer = arena_.observer()) observer->on_release(*impl);
    drop_weak(impl);
  }
}

GraphPoolStatistics GraphPoolState::statistics() const {
  std::scoped_lock lock(mutex_);
  GraphPoolStatistics stats;
  stats.reserved_bytes = reserved_bytes_;
  stats.upstream_allocations = upstream_allocations_;
  stats.blocks = blocks_.size();
  for (const auto& [address, block] : blocks_) {
    if (block.state == State::live) ++stats.live_blocks;
  }
  stats.deferred_tensors = deferred_tensors_;
  return stats;
}

}  // namespace detail
}  // namespace gpulife
