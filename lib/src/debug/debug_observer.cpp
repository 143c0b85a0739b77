// SPDX-License-Identifier: Apache-2.0
#include "debug/debug_observer.hpp"

#include <cstdio>
#include <mutex>
#include <string>

#include <gpulife/memory/pool_resource.hpp>

#include "detail/format.hpp"

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
  if (options.oom_dump) oom_dumper_ = std::make_unique<OomDumper>(options);
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
  if (timeline_ && root) {
    try {
      RecordedEvent event;
      event.kind = LifetimeEvent::allocate;
      event.tensor_id = impl.id;
      event.bytes = impl.alloc_bytes;
      event.tag = impl.tag;
      event.stream_id = impl.stream != nullptr ? impl.stream->id() : 0;
      event.dtype = impl.dtype;
      event.shape = impl.shape;
      event.has_site = true;
      event.where = where;
      // The leak tracker's frames, when stacks are captured: taken once, shared.
      if (impl.record != nullptr) event.frames = impl.record->stack;
      record(std::move(event));
    } catch (...) {
      // out of host memory for the tag: the event is lost, nothing else
    }
  }
}

void DebugObserver::on_release(TensorImpl& impl) noexcept {
  if (timeline_ && impl.base == nullptr) {
    try {
      RecordedEvent event;
      event.kind = LifetimeEvent::free;
      event.tensor_id = impl.id;
      event.bytes = impl.alloc_bytes;
      event.tag = impl.tag;
      event.stream_id = impl.stream != nullptr ? impl.stream->id() : 0;
      record(std::move(event));
    } catch (...) {
      // as above
    }
  }
  if (tracker_) tracker_->untrack(impl);
}

void DebugObserver::on_event(LifetimeEvent kind, std::uint64_t tensor_id, std::size_t bytes,
                             std::string_view tag, std::uint64_t memory_id) noexcept {
  if (!timeline_) return;
  try {
    RecordedEvent event;
    event.kind = kind;
    event.tensor_id = tensor_id;
    event.memory_id = memory_id;
    event.bytes = bytes;
    event.tag.assign(tag);
    record(std::move(event));
  } catch (...) {
    // as above
  }
}

void DebugObserver::on_out_of_memory(std::size_t requested, StreamView stream,
                                     std::string_view message) noexcept {
  if (timeline_) {
    RecordedEvent event;
    event.kind = LifetimeEvent::out_of_memory;
    event.bytes = requested;
    event.stream_id = stream.valid() ? stream.id() : 0;
    record(std::move(event));
  }
  if (oom_dumper_ && oom_dumper_->claim()) dump_out_of_memory(requested, stream, message);
}

void DebugObserver::dump_out_of_memory(std::size_t requested, StreamView stream,
                                       std::string_view message) noexcept {
  const std::string device = arena_.device().name();
  try {
    OomSnapshot snapshot;
    snapshot.device = device;
    snapshot.requested = requested;
    snapshot.stream_id = stream.valid() ? stream.id() : 0;
    snapshot.message.assign(message);
    try {
      snapshot.device_memory = arena_.device().memory_info();
    } catch (...) {
      // left out of the snapshot
    }
    const DeviceMemoryResource& resource = arena_.resource();
    snapshot.resource_name = resource.name();
    snapshot.resource = resource.statistics();
    snapshot.pool = describe_pool(resource);
    {
      std::shared_lock lock(hooks_mutex_);
      if (hooks_.statistics) snapshot.cache = hooks_.statistics();
    }
    const ArenaStatistics arena = arena_.statistics();
    snapshot.live_tensors = arena.live_tensors;
    snapshot.live_bytes = arena.live_bytes;
    if (tracker_) {
      snapshot.report = leak_report({});
      snapshot.report.keep_largest(oom_dumper_->max_tensors());
    }
    if (timeline_) snapshot.timeline = timeline_->snapshot(oom_dumper_->max_events());
    const std::filesystem::path dir = oom_dumper_->write(snapshot);
    std::fprintf(stderr, "gpulife: out of memory on %s, %s requested: snapshot written to %s\n",
                 device.c_str(), format_bytes(requested).c_str(), dir.c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpulife: out of memory on %s: the snapshot could not be written: %s\n",
                 device.c_str(), e.what());
  } catch (...) {
    std::fprintf(stderr, "gpulife: out of memory on %s: the snapshot could not be written\n",
                 device.c_str());
  }
  std::fflush(stderr);
}

void DebugObserver::record(RecordedEvent&& event) noexcept {
  event.bytes_in_use = arena_.statistics().live_bytes;
  try {
    event.pool_cached_bytes = arena_.resource().statistics().bytes_cached;
  } catch (...) {
    // a resource that cannot say leaves the counter at 0
  }
  try {
    std::shared_lock lock(hooks_mutex_);
    if (hooks_.cached_bytes) event.tensor_cache_bytes = hooks_.cached_bytes();
  } catch (...) {
    // as above
  }
  timeline_->record(std::move(event));
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
