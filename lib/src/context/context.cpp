// SPDX-License-Identifier: Apache-2.0
#include <gpulife/context.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <string>

#include <gpulife/debug/timeline_view.hpp>
#include <gpulife/memory/async_resource.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>

#include "debug/debug_observer.hpp"
#include "debug/exit_on_leak.hpp"
#include "detail/format.hpp"
#include "tensor/graph_pool_state.hpp"
#include "tensor/tensor_arena.hpp"

namespace gpulife {

Context::Context(ContextOptions options)
    : device_(options.device.valid() ? std::move(options.device) : Device::select()),
      resource_(options.resource ? std::move(options.resource)
                                 : std::make_shared<PoolResource>(
                                       std::make_shared<AsyncResource>(device_), options.pool)),
      error_handler_(std::move(options.error_handler)),
      debug_options_(resolve_debug_options(std::move(options.debug))) {
  arena_ = detail::TensorArena::create(
      {device_, resource_, error_handler_, options.staging, options.staging_min_bytes});
  try {
    digest_workers_ = std::make_unique<DigestWorkers>(
        options.digest_threads != 0 ? options.digest_threads : DigestWorkers::default_thread_count());
    cache_ = std::make_unique<TensorCache>(*arena_, digest_workers_.get(), options.cache);
  } catch (...) {
    arena_->unref();
    throw;
  }
  arena_->set_pressure_handler(
      [this](std::size_t requested, StreamView stream) { on_memory_pressure(requested, stream); });
  if (debug_options_.leaks || debug_options_.timeline) {
    try {
      debug_ = std::make_shared<detail::DebugObserver>(debug_options_, *arena_);
    } catch (...) {
      cache_.reset();
      arena_->unref();
      throw;
    }
    arena_->set_observer(debug_);
    TensorCache* cache = cache_.get();
    debug_->set_cache_hooks(
        {[cache] { return cache->cached_bytes(); },
         [cache] {
           std::vector<PinnedEntry> pinned;
           for (PinnedCacheEntry& entry : cache->pinned_entries()) {
             pinned.push_back({entry.tensor_id, entry.bytes, std::move(entry.tag),
                               std::move(entry.key)});
           }
           return pinned;
         },
         [cache] { return cache->statistics(); }});
    if (debug_options_.exit_on_leak) detail::arm_exit_on_leak();
  }
}

bool Context::report_leaks_at_shutdown() noexcept {
  try {
    const LeakReport report = debug_->leak_report({});
    const std::string text = report.to_text();
    if (report.has_leaks() || debug_options_.report_when_clean) {
      std::fputs(text.c_str(), stderr);
      std::fflush(stderr);
    }
    if (const std::string& path = debug_options_.report_path; !path.empty()) {
      const bool json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
      std::ofstream file(path, std::ios::binary | std::ios::trunc);
      file << (json ? report.to_json() : text);
      file.close();
      if (!file) arena_->report("context shutdown: cannot write the leak report to " + path);
    }
    return debug_options_.exit_on_leak && report.has_leaks();
  } catch (const std::exception& e) {
    arena_->report(std::string("context shutdown: the leak report failed: ") + e.what());
  }
  return false;
}

Context::~Context() {
  try {
    device_.synchronize();
  } catch (const std::exception& e) {
    arena_->report(std::string("context shutdown: device synchronize failed: ") + e.what());
  }
  // The warm tier is the cache's own reference, not something the program left alive: it goes
  // before the report. Pinned entries are reported as pinned (through the hooks).
  cache_->clear_warm();
  // Before the finalizers run: a finalizer that holds its own tensor would otherwise end the
  // cycle here and hide it, and the report is about what the program left alive.
  const bool exit_for_leak = debug_ && debug_->tracking_leaks() &&
                             debug_options_.report_at_shutdown && report_leaks_at_shutdown();
  if (debug_) debug_->set_cache_hooks({});
  // The cache's pinned entries go next, so that what remains alive is what users still hold.
  cache_->clear();
  const std::size_t ran = arena_->run_atexit_finalizers();
  const detail::ArenaStatistics stats = arena_->statistics();
  if (stats.live_tensors > 0) {
    arena_->report("context on " + device_.name() + " destroyed with " +
                   detail::count_of(stats.live_tensors, "tensor", "tensors") + " still alive (" +
                   detail::format_bytes(stats.live_bytes) + "); ran " +
                   detail::count_of(ran, "finalizer", "finalizers") +
                   " at shutdown; a live tensor's memory is released when it drops");
  }
  arena_->set_pressure_handler({});
  cache_.reset();
  resource_->release_cached();
  if (debug_ && debug_->recording_timeline() && !debug_options_.timeline_path.empty()) {
    try {
      const std::string& path = debug_options_.timeline_path;
      const bool html = path.size() >= 5 && path.compare(path.size() - 5, 5, ".html") == 0;
      if (html) {
        write_timeline_view(debug_->timeline(), path);
      } else {
        debug_->timeline().write_chrome_trace(path);
      }
    } catch (const std::exception& e) {
      arena_->report(std::string("context shutdown: ") + e.what());
    }
  }
  debug_.reset();  // the arena keeps the observer as long as tensors need it
  arena_->unref();
  if (exit_for_leak) detail::exit_on_leak(debug_options_.leak_exit_code);
}

const Device& Context::device() const noexcept { return device_; }

StreamView Context::default_stream() const noexcept { return device_.default_stream(); }

DeviceMemoryResource& Context::resource() const noexcept { return *resource_; }

WeakSet<MemoryPressureListener>& Context::pressure_listeners() noexcept {
  return pressure_listeners_;
}

StreamView Context::resolve(StreamView stream) const {
  if (!stream.valid()) return device_.default_stream();
  if (&stream.device() != &device_.impl()) {
    throw std::invalid_argument("stream: belongs to " + stream.device().name() +
                                ", the context to " + device_.name());
  }
  return stream;
}

GraphPool Context::graph_pool() {
  return GraphPool(std::make_shared<detail::GraphPoolState>(*arena_));
}

CaptureScope Context::capture(StreamView stream, const GraphPool& pool, CaptureMode mode) {
  if (!stream.valid()) throw std::invalid_argument("stream: empty StreamView");
  const StreamView on = resolve(stream);
  return CaptureScope(*arena_, on, pool, mode);
}

DeviceTensor Context::empty(const Shape& shape, DType dtype, StreamView stream,
                            std::string_view tag, SourceLocation where) {
  const StreamView on = resolve(stream);
  return detail::TensorAccess::adopt(arena_->create(shape, dtype, *on.impl(), tag, where));
}

DeviceTensor Context::upload(std::span<const std::byte> host, const Shape& shape, DType dtype,
                             StreamView stream, std::string_view tag, SourceLocation where) {
  const detail::EnqueueSite site(where);  // the caller's line in reports of the copy
  const auto expected = static_cast<std::size_t>(shape.numel()) * size_of(dtype);
  if (host.size() != expected) {
    throw std::invalid_argument("host: " + std::to_string(host.size()) + " bytes, but shape " +
                                shape.to_string() + " of " + std::string(to_string(dtype)) +
                                " needs " + std::to_string(expected));
  }
  if (host.data() == nullptr && !host.empty()) {
    throw std::invalid_argument("host: null pointer");
  }
  const StreamView on = resolve(stream);
  DeviceTensor tensor =
      detail::TensorAccess::adopt(arena_->create(shape, dtype, *on.impl(), tag, where));
  tensor.upload(host, on);
  if (detail::TensorObserver* observer = arena_->observer()) {
    observer->on_event(LifetimeEvent::upload, tensor.id(), host.size(), tag, 0);
  }
  return tensor;
}

DeviceTensor Context::wrap(void* data, const Shape& shape, const Shape& strides, DType dtype,
                           StreamView stream, FinalizerFunction release, std::string_view tag,
                           SourceLocation where) {
  if (!release) throw std::invalid_argument("release: empty function");
  const Shape layout = strides.rank() == 0 && shape.rank() != 0 ? shape.contiguous_strides() : strides;
  if (layout.rank() != shape.rank()) {
    throw std::invalid_argument("strides: " + std::to_string(layout.rank()) + " of them for a " +
                                std::to_string(shape.rank()) + "-dimensional shape");
  }
  std::size_t bytes = 0;
  if (shape.numel() != 0) {
    std::int64_t last = 0;
    for (std::size_t i = 0; i < shape.rank(); ++i) last += (shape[i] - 1) * layout[i];
    bytes = static_cast<std::size_t>(last + 1) * size_of(dtype);
    if (data == nullptr) throw std::invalid_argument("data: null pointer for a non-empty tensor");
  }
  const StreamView on = resolve(stream);
  DeviceTensor tensor = detail::TensorAccess::adopt(
      arena_->create_external(data, bytes, shape, layout, dtype, *on.impl(), tag, where));
  // Bookkeeping, not one of the program's finalizers; the memory is the producer's: it goes
  // back only at the real release, never at shutdown.
  const auto owner = arena_->add_callback(*detail::TensorAccess::impl(tensor),
                                          detail::CallbackState::Kind::finalizer,
                                          std::move(release), /*internal=*/true);
  owner->atexit.store(false, std::memory_order_release);
  return tensor;
}

const DebugOptions& Context::debug_options() const noexcept { return debug_options_; }

LeakCheckpoint Context::leak_checkpoint() const noexcept {
  return debug_ ? debug_->checkpoint() : LeakCheckpoint{};
}

LeakReport Context::leak_report(LeakCheckpoint since) const {
  if (!debug_ || !debug_->tracking_leaks()) {
    LeakReport report;
    report.device = device_.name();
    report.taken = std::chrono::system_clock::now();
    return report;
  }
  return debug_->leak_report(since);
}

Timeline Context::timeline() const {
  if (!debug_ || !debug_->recording_timeline()) {
    Timeline timeline;
    timeline.device = device_.name();
    return timeline;
  }
  return debug_->timeline();
}

ContextStatistics Context::statistics() const {
  const detail::ArenaStatistics arena = arena_->statistics();
  ContextStatistics stats;
  stats.live_tensors = arena.live_tensors;
  stats.live_bytes = arena.live_bytes;
  stats.tensors_created = arena.tensors_created;
  stats.finalizers_run = arena.finalizers_run;
  stats.expiry_callbacks_run = arena.expiry_callbacks_run;
  stats.finalizer_errors = arena.finalizer_errors;
  stats.resource = resource_->statistics();
  return stats;
}

void Context::on_memory_pressure(std::size_t requested, StreamView /*stream*/) noexcept {
  // Cheapest first: what the cache keeps for possible reuse, the pool's free blocks, then what
  // listeners can spare. Entries in use are never evicted.
  cache_->clear_warm();
  resource_->release_cached();
  try {
    pressure_listeners_.notify([&](MemoryPressureListener& listener) {
      listener.on_memory_pressure(requested, device_);
    });
  } catch (const std::exception& e) {
    arena_->report(std::string("memory pressure: notifying listeners failed: ") + e.what());
  }
  try {
    // Stream-ordered frees must land before the retry can use their memory.
    device_.synchronize();
  } catch (const std::exception& e) {
    arena_->report(std::string("memory pressure: device synchronize failed: ") + e.what());
  }
}

// ---- the default context -----------------------------------------------------------------------

namespace {

struct DefaultContextSlot {
  std::mutex mutex;
  std::shared_ptr<Context> context;
};

DefaultContextSlot& default_slot() {
  static DefaultContextSlot slot;
  return slot;
}

void drop_default_context_at_exit() noexcept {
  std::shared_ptr<Context> context;
  {
    auto& slot = default_slot();
    std::scoped_lock lock(slot.mutex);
    context.swap(slot.context);
  }
  // Destroyed here, outside the lock, unless the program still holds it.
}

}  // namespace

std::shared_ptr<Context> default_context() {
  auto& slot = default_slot();
  std::scoped_lock lock(slot.mutex);
  if (!slot.context) {
    slot.context = std::make_shared<Context>();
    // The slot is a static made before the context, so it would be destroyed after whatever
    // initialised on the way, the CUDA runtime included: the context would then close its device
    // after the runtime unloaded (cudaErrorCudartUnloading). A handler registered now runs
    // before the runtime's own teardown and closes the context while CUDA still works.
    static const bool registered = std::atexit(drop_default_context_at_exit) == 0;
    (void)registered;
  }
  return slot.context;
}

std::shared_ptr<Context> set_default_context(std::shared_ptr<Context> context) {
  auto& slot = default_slot();
  std::scoped_lock lock(slot.mutex);
  std::swap(slot.context, context);
  return context;
}

}  // namespace gpulife
