// SPDX-License-Identifier: Apache-2.0
#include "debug/debug_observer.hpp"

#include <mutex>
#include <string>

#include <gpulife/memory/pool_resource.hpp>

namespace gpulife::detail {

DebugObserver::DebugObserver(const DebugOptions& options, TensorArena& arena) : arena_(arena) {
  const std::string device_name = arena.device().name();
  if (options.leaks) {
    tracker_ = std::make_unique<LeakTracker>(device_name, options.stacks, options.max_stack_frames);
    // The sim names misused memory by its label; memory that no label covers yet (a tensor used
    // on another stream before its allocation got there) is named by asking the live set.
    resolver_token_ = arena.device().impl().add_owner_resolver(
        [tracker = tracker_.get()](const void* ptr, std::size_t bytes) {
          return tracker->owner_of(ptr, bytes);
        });
  }
  if (options.timeline) {
    timeline_ = std::make_unique<TimelineRecorder>(device_name, options.timeline_capacity);
  }
}

DebugObserver::~DebugObserver() {
  // The arena, which owns this observer, still holds the device here.
  if (tracker_) arena_.device().impl().remove_owner_resolver(resolver_token_);
}

void DebugObserver::on_create(TensorImpl& impl, const SourceLocation& where) noexcept {
  const bool root = impl.base == nullptr;
  if (tracker_) {
    tracker_->track(impl, where);
    if (root && !impl.external && impl.data != nullptr) {
      // Stream-ordered after the allocation's own mark, so that it names this tensor's block
      // and not the previous owner's (whose use-after-free reports keep the old name).
      try {
        arena_.device().impl().label(impl.data, tensor_name(impl.id, impl.tag), *impl.stream);
      } catch (...) {
        // a missing label only makes a violation report less specific
      }
    }
  }
  if (timeline_ && root) record(TimelineEventKind::allocate, impl.id, impl.alloc_bytes, impl.tag);
}

void DebugObserver::on_release(TensorImpl& impl) noexcept {
  if (tracker_) tracker_->untrack(impl);
  if (timeline_ && impl.base == nullptr) {
    record(TimelineEventKind::free, impl.id, impl.alloc_bytes, impl.tag);
  }
}

void DebugObserver::on_event(LifetimeEvent event, std::uint64_t tensor_id, std::size_t bytes,
                             std::string_view tag) noexcept {
  if (timeline_) record(event, tensor_id, bytes, tag);
}

void DebugObserver::record(TimelineEventKind kind, std::uint64_t tensor_id, std::size_t bytes,
                           std::string_view tag) noexcept {
  TimelineRecorder::Counters counters;
  counters.bytes_in_use = arena_.statistics().live_bytes;
  try {
    counters.pool_cached_bytes = arena_.resource().statistics().bytes_cached;
  } catch (...) {
    // a resource that cannot say leaves the counter at 0
  }
  try {
    std::shared_lock lock(hooks_mutex_);
    if (hooks_.cached_bytes) counters.tensor_cache_bytes = hooks_.cached_bytes();
  } catch (...) {
    // as above
  }
  timeline_->record(kind, tensor_id, bytes, tag, counters);
}

LeakCheckpoint DebugObserver::checkpoint() const noexcept {
  return tracker_ ? tracker_->checkpoint() : LeakCheckpoint{};
}

LeakReport DebugObserver::leak_report(LeakCheckpoint since) const {
  std::vector<PinnedEntry> pinned;
  {
    std::shared_lock lock(hooks_mutex_);
    if (hooks_.pinned_entries) pinned = hooks_.pinned_entries();
  }
  const auto* pool = dynamic_cast<const PoolResource*>(&arena_.resource());
  return tracker_->report(since, std::move(pinned), pool);
}

Timeline DebugObserver::timeline() const { return timeline_->snapshot(); }

void DebugObserver::set_cache_hooks(CacheDebugHooks hooks) {
  std::unique_lock lock(hooks_mutex_);
  std::swap(hooks_, hooks);
  lock.unlock();
  // the old hooks (and whatever they captured) go here, outside the lock
}

}  // namespace gpulife::detail
