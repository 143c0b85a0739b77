// SPDX-License-Identifier: Apache-2.0
#include "tensor/tensor_arena.hpp"

#include <algorithm>
#include <limits>
#include <new>
#include <stdexcept>

#include <gpulife/errors.hpp>
#include <gpulife/runtime/detail/enqueue_site.hpp>
#include <gpulife/runtime/pinned_host_cache.hpp>

#include "detail/format.hpp"
#include "tensor/graph_pool_state.hpp"

namespace gpulife::detail {
namespace {

constexpr std::size_t blocks_per_chunk = 64;

/// Tensor ids are unique in the process. Threads take them in batches so that creating tensors
/// on several threads does not contend on one counter.
std::uint64_t next_tensor_id() noexcept {
  constexpr std::uint64_t batch = 1024;
  static std::atomic<std::uint64_t> next_batch{1};
  thread_local std::uint64_t next = 0;
  thread_local std::uint64_t end = 0;
  if (next == end) {
    next = next_batch.fetch_add(batch, std::memory_order_relaxed);
    end = next + batch;
  }
  return next++;
}

std::string describe(const TensorInfo& info) {
  std::string text = "tensor #" + std::to_string(info.id);
  if (!info.tag.empty()) text += " '" + info.tag + "'";
  return text;
}

}  // namespace

// ---- callbacks ---------------------------------------------------------------------------------

bool CallbackState::run() noexcept {
  Status expected = Status::pending;
  if (!status.compare_exchange_strong(expected, Status::running, std::memory_order_acq_rel)) {
    return false;
  }
  bool failed = false;
  try {
    fn(info);
  } catch (const std::exception& e) {
    failed = true;
    arena->report(std::string(kind == Kind::finalizer ? "finalizer" : "expiry callback") +
                  " of " + describe(info) + " threw: " + e.what());
  } catch (...) {
    failed = true;
    arena->report(std::string(kind == Kind::finalizer ? "finalizer" : "expiry callback") +
                  " of " + describe(info) + " threw a non-standard exception");
  }
  // Dropping the function releases what it captured, which may be the last handle to a tensor
  // (a finalizer that captured its own tensor ends its cycle here).
  FinalizerFunction done = std::move(fn);
  status.store(Status::done, std::memory_order_release);
  done = nullptr;
  arena->count_callback(*this, failed);
  // The program's callbacks only: gpulife's own bookkeeping is not news.
  if (TensorObserver* observer = arena->observer(); observer != nullptr && !internal) {
    observer->on_event(
        kind == Kind::finalizer ? LifetimeEvent::finalizer_run : LifetimeEvent::expiry_callback_run,
        info.id, info.bytes, info.tag, 0);
  }
  return true;
}

bool CallbackState::detach() noexcept {
  Status expected = Status::pending;
  if (!status.compare_exchange_strong(expected, Status::detached, std::memory_order_acq_rel)) {
    return false;
  }
  fn = nullptr;
  return true;
}

// ---- arena -------------------------------------------------------------------------------------

TensorArena* TensorArena::create(Config config) { return new TensorArena(std::move(config)); }

TensorArena::TensorArena(Config config)
    : config_(std::move(config)), staging_(config_.device, config_.staging) {
  if (!config_.device.valid()) throw std::invalid_argument("device: empty Device");
  if (!config_.resource) throw std::invalid_argument("resource: null memory resource");
  if (config_.resource->device() != config_.device) {
    throw std::invalid_argument("resource: allocates on " + config_.resource->device().name() +
                                ", not on " + config_.device.name());
  }
}

TensorArena::~TensorArena() = default;

void TensorArena::unref() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

void TensorArena::report(std::string_view message) const noexcept {
  if (!config_.error_handler) {
    report_error(message);
    return;
  }
  try {
    config_.error_handler(message);
  } catch (...) {
    report_error(message);
  }
}

TensorImpl* TensorArena::new_block() {
  void* slot = nullptr;
  {
    std::scoped_lock lock(slab_mutex_);
    if (free_blocks_.empty()) {
      auto chunk = std::make_unique<std::byte[]>(blocks_per_chunk * sizeof(TensorImpl));
      free_blocks_.reserve(free_blocks_.size() + blocks_per_chunk);
      for (std::size_t i = blocks_per_chunk; i-- > 0;) {
        free_blocks_.push_back(chunk.get() + i * sizeof(TensorImpl));
      }
      chunks_.push_back(std::move(chunk));
    }
    slot = free_blocks_.back();
    free_blocks_.pop_back();
  }
  auto* impl = new (slot) TensorImpl();
  impl->arena = this;
  ref();
  return impl;
}

void TensorArena::free_block(TensorImpl* impl) noexcept {
  impl->~TensorImpl();
  {
    std::scoped_lock lock(slab_mutex_);
    // capacity was reserved when the chunk was made: this cannot throw
    free_blocks_.push_back(impl);
  }
  unref();
}

void* TensorArena::allocate(std::size_t bytes, StreamView stream) {
  try {
    return config_.resource->allocate(bytes, stream);
  } catch (const OutOfMemoryError& first) {
    if (pressure_handler_) {
      pressure_handler_(bytes, stream);
      try {
        return config_.resource->allocate(bytes, stream);
      } catch (const OutOfMemoryError&) {
        // fall through to the message below, which says what is still alive
      }
    }
    const ArenaStatistics stats = statistics();
    std::string message = std::string(first.what()) +
                          "; live tensors: " + std::to_string(stats.live_tensors) + " holding " +
                          format_bytes(stats.live_bytes);
    if (observer_ != nullptr) observer_->on_out_of_memory(bytes, stream, message);
    throw OutOfMemoryError(std::move(message), bytes);
  }
}

void TensorArena::copy_to_device(void* dst, std::span<const std::byte> src, StreamView stream) {
  // In a capture the staging ring's events would be captured and queried: copy directly (the
  // graph's copy node reads the host buffer at every replay).
  const bool captured = capturing() && stream.capture_info().status != CaptureStatus::none;
  if (!captured && src.size() >= config_.staging_min_bytes &&
      !config_.device.impl().is_pinned(src.data(), src.size())) {
    staging_.upload(dst, src, stream);
    return;
  }
  stream.copy(dst, src.data(), src.size(), CopyKind::host_to_device);
  // A block of the pinned host cache (a pinned HostBuffer's) is read when the copy executes:
  // the cache must not hand it out again before then, even if its owner drops it at once.
  // (In a capture the graph reads the buffer at every replay: its owner keeps it alive.)
  if (!src.empty() && !captured) {
    try {
      (void)config_.device.pinned_host_cache().record_use(src.data(), stream);
    } catch (...) {
      stream.synchronize();  // the copy has read the block once the stream has run
    }
  }
}

TensorImpl* TensorArena::create(const Shape& shape, DType dtype, StreamImpl& stream,
                                std::string_view tag, const SourceLocation& where) {
  const EnqueueSite site(where);  // the caller's line in reports of the allocation
  const auto numel = static_cast<std::uint64_t>(shape.numel());
  if (numel > std::numeric_limits<std::size_t>::max() / size_of(dtype)) {
    throw std::invalid_argument("shape: " + shape.to_string() + " of " +
                                std::string(to_string(dtype)) + " overflows the address space");
  }
  const std::size_t bytes = numel * size_of(dtype);
  // In an open capture scope, memory for a capturing stream comes from the scope's GraphPool.
  std::uint64_t capture = 0;
  std::shared_ptr<void> life;
  std::shared_ptr<GraphPoolState> pool =
      bytes != 0 && capturing() ? capture_of(stream, capture, true, &life) : nullptr;
  void* data = nullptr;
  if (pool) {
    data = pool->allocate(bytes, stream, capture, life);
    try {
      std::scoped_lock lock(capture_mutex_);
      graph_blocks_.emplace(reinterpret_cast<std::uintptr_t>(data), pool);
    } catch (...) {
      pool->free(data, &stream, capture, true);
      throw;
    }
  } else if (bytes != 0) {
    data = allocate(bytes, StreamView{&stream});
  }
  TensorImpl* impl = nullptr;
  try {
    impl = new_block();
    impl->tag.assign(tag);
  } catch (...) {
    if (impl != nullptr) free_block(impl);
    if (pool) {
      {
        std::scoped_lock lock(capture_mutex_);
        graph_blocks_.erase(reinterpret_cast<std::uintptr_t>(data));
      }
      pool->free(data, &stream, capture, true);
    } else {
      config_.resource->deallocate(data, bytes, StreamView{&stream});
    }
    throw;
  }
  impl->graph_block = pool != nullptr;
  live_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  return made_root(impl, data, bytes, shape, shape.contiguous_strides(), dtype, stream, where);
}

TensorImpl* TensorArena::create_external(void* data, std::size_t bytes, const Shape& shape,
                                         const Shape& strides, DType dtype, StreamImpl& stream,
                                         std::string_view tag, const SourceLocation& where) {
  TensorImpl* impl = new_block();
  try {
    impl->tag.assign(tag);
  } catch (...) {
    free_block(impl);
    throw;
  }
  impl->external = true;
  return made_root(impl, data, bytes, shape, strides, dtype, stream, where);
}

TensorImpl* TensorArena::made_root(TensorImpl* impl, void* data, std::size_t bytes,
                                   const Shape& shape, const Shape& strides, DType dtype,
                                   StreamImpl& stream, const SourceLocation& where) noexcept {
  impl->dtype = dtype;
  impl->data = data;
  impl->bytes = bytes;
  impl->alloc_bytes = bytes;
  impl->stream = &stream;
  impl->id = next_tensor_id();
  impl->shape = shape;
  impl->strides = strides;
  live_tensors_.fetch_add(1, std::memory_order_relaxed);
  created_.fetch_add(1, std::memory_order_relaxed);
  if (observer_ != nullptr) observer_->on_create(*impl, where);
  return impl;
}

TensorImpl* TensorArena::create_view(TensorImpl& parent, void* data, std::size_t bytes,
                                     const Shape& shape, const Shape& strides,
                                     const SourceLocation& where) {
  const TensorImpl& owner = memory_owner(parent);
  TensorImpl* impl = new_block();
  try {
    impl->tag = owner.tag;
  } catch (...) {
    free_block(impl);
    throw;
  }
  retain_strong(&parent);
  impl->base = &parent;
  impl->dtype = owner.dtype;
  impl->external = owner.external;
  impl->data = data;
  impl->bytes = bytes;
  impl->stream = owner.stream;
  impl->id = next_tensor_id();
  impl->shape = shape;
  impl->strides = strides;
  live_tensors_.fetch_add(1, std::memory_order_relaxed);
  created_.fetch_add(1, std::memory_order_relaxed);
  if (observer_ != nullptr) observer_->on_create(*impl, where);
  return impl;
}

std::shared_ptr<GraphPoolState> TensorArena::release_memory(TensorImpl& root) noexcept {
  if (root.data == nullptr) return nullptr;
  static const std::vector<StreamImpl*> none;
  const std::vector<StreamImpl*>& recorded = root.recorded != nullptr ? *root.recorded : none;
  if (!root.graph_block && !capturing()) {
    release_memory_now(root.data, root.alloc_bytes, root.stream, recorded, root.external);
    return nullptr;
  }
  try {
    // The open capture scope that the tensor's stream, or a stream recorded on it, is in.
    std::uint64_t capture = 0;
    std::shared_ptr<GraphPoolState> pool;
    bool home_captures = false;
    if (capturing()) {
      pool = capture_of(*root.stream, capture, false);
      home_captures = pool != nullptr;
      for (std::size_t i = 0; !pool && i < recorded.size(); ++i) {
        pool = capture_of(*recorded[i], capture, false);
      }
      if (!pool && root.stream->capture_info().status != CaptureStatus::none) {
        report("tensor #" + std::to_string(root.id) + " released on stream " +
               std::to_string(root.stream->id()) +
               ", which captures outside every Context::capture scope: its memory is kept "
               "(leaked) rather than break the capture");
        return nullptr;
      }
    }
    if (root.graph_block) {
      std::shared_ptr<GraphPoolState> owner;
      {
        std::scoped_lock lock(capture_mutex_);
        auto it = graph_blocks_.find(reinterpret_cast<std::uintptr_t>(root.data));
        if (it != graph_blocks_.end()) {
          owner = std::move(it->second);
          graph_blocks_.erase(it);
        }
      }
      if (!owner) {
        report("tensor #" + std::to_string(root.id) + ": its GraphPool block is unknown");
        return nullptr;
      }
      if (home_captures && pool == owner) {
        // Released in the capture: graph edges from the recorded streams of the same capture
        // order their captured work before the block's reuse on the home stream.
        bool ordered = true;
        for (StreamImpl* other : recorded) {
          if (other->capture_info().id != capture) {
            ordered = false;  // a stream outside the capture: no edge possible
            continue;
          }
          Event event(config_.device);
          StreamView{other}.record(event);
          StreamView{root.stream}.wait(event);
        }
        owner->free(root.data, root.stream, capture, ordered);
        return owner;
      }
      owner->free(root.data, nullptr, 0, false);
      return pool;  // null unless released during a capture (then it keeps the callbacks)
    }
    if (pool) {
      // Memory from elsewhere released during a capture: the graph may use it at every replay,
      // so the pool keeps it (and the tensor's callbacks) until it gives its own memory back.
      pool->defer([this, data = root.data, bytes = root.alloc_bytes, home = root.stream,
                   streams = recorded, external = root.external] {
        release_memory_now(data, bytes, home, streams, external);
      });
      return pool;
    }
  } catch (const std::exception& e) {
    report(std::string("releasing tensor #") + std::to_string(root.id) +
           " during a capture failed (" + e.what() + "); its memory is kept");
    return nullptr;
  }
  release_memory_now(root.data, root.alloc_bytes, root.stream, recorded, root.external);
  return nullptr;
}

void TensorArena::release_memory_now(void* data, std::size_t bytes, StreamImpl* home_stream,
                                     const std::vector<StreamImpl*>& recorded,
                                     bool external) noexcept {
  StreamView home{home_stream};
  std::vector<Event> after;
  {
    for (StreamImpl* other : recorded) {
      try {
        Event event(config_.device);
        StreamView{other}.record(event);
        after.push_back(std::move(event));
      } catch (const std::exception& e) {
        // Without an event the only safe order left is the host's.
        report(std::string("record_stream: recording an event failed (") + e.what() +
               "); waiting for the stream on the host");
        try {
          StreamView{other}.synchronize();
        } catch (...) {
          report("record_stream: stream synchronize failed; the memory is not released");
          return;
        }
      }
    }
  }
  if (external) {
    // The owner's release function gives the memory back; queue the recorded streams' work
    // before anything its owner queues on the home stream afterwards (or waits for there).
    for (const Event& event : after) {
      try {
        home.wait(event);
      } catch (const std::exception& e) {
        report(std::string("record_stream: waiting for an event failed (") + e.what() +
               "); waiting for it on the host");
        try {
          event.synchronize();
        } catch (...) {
          report("record_stream: event synchronize failed");
        }
      }
    }
    return;
  }
  if (after.empty()) {
    config_.resource->deallocate(data, bytes, home);
  } else {
    config_.resource->deallocate_after(data, bytes, home, std::move(after));
  }
}

void TensorArena::release(TensorImpl* impl) noexcept {
  std::shared_ptr<GraphPoolState> keeper;  // released in a capture: the pool runs the callbacks
  if (impl->base == nullptr) {
    keeper = release_memory(*impl);
    live_bytes_.fetch_sub(impl->external ? 0 : impl->alloc_bytes, std::memory_order_relaxed);
  }
  live_tensors_.fetch_sub(1, std::memory_order_relaxed);
  if (keeper && observer_ != nullptr) {
    // Leak mode: the tensor stays listed (kept by the pool) until the pool gives it back; the
    // control block stays valid for the tracker until then.
    retain_weak(impl);
    {
      std::scoped_lock lock(impl->lock);  // the tracker reads the callbacks under it
      impl->kept_by_graph_pool.store(true, std::memory_order_release);
      auto callbacks = std::unique_ptr<std::vector<std::shared_ptr<CallbackState>>>(impl->callbacks);
      impl->callbacks = nullptr;
      keeper->defer(callbacks ? std::move(*callbacks) : std::vector<std::shared_ptr<CallbackState>>{});
    }
    keeper->defer_observed(impl);
    keeper.reset();
  }
  // After the memory went back, so that the timeline's counters include this free; before the
  // callbacks are taken, so that a leak report that still sees the tensor registered (under the
  // tracker's lock) may read them.
  if (observer_ != nullptr && !impl->kept_by_graph_pool.load(std::memory_order_relaxed)) {
    observer_->on_release(*impl);
  }

  // No other thread can reach the callbacks now: no strong handle is left, and registering
  // needs one.
  std::unique_ptr<std::vector<std::shared_ptr<CallbackState>>> callbacks(impl->callbacks);
  impl->callbacks = nullptr;
  delete impl->recorded;
  impl->recorded = nullptr;
  if (keeper) {
    keeper->defer(callbacks ? std::move(*callbacks) : std::vector<std::shared_ptr<CallbackState>>{});
    keeper.reset();
  } else if (callbacks) {
    // newest first, like a stack of cleanups
    for (auto it = callbacks->rbegin(); it != callbacks->rend(); ++it) (*it)->run();
  }
  TensorImpl* base = impl->base;
  drop_weak(impl);
  if (base != nullptr) drop_strong(base);
}

TensorInfo TensorArena::info_of(const TensorImpl& impl) {
  TensorInfo info;
  info.data = impl.data;
  info.bytes = impl.base == nullptr ? impl.alloc_bytes : impl.bytes;
  info.shape = impl.shape;
  info.dtype = impl.dtype;
  info.id = impl.id;
  info.tag = impl.tag;
  info.stream_id = impl.stream != nullptr ? impl.stream->id() : 0;
  return info;
}

std::shared_ptr<CallbackState> TensorArena::add_callback(TensorImpl& impl, CallbackState::Kind kind,
                                                         FinalizerFunction fn, bool internal) {
  auto state = std::make_shared<CallbackState>(kind, std::move(fn), info_of(impl), *this, internal);
  if (observer_ != nullptr) {
    // std::function hides its captures, but copying it copies them: the rise of the strong
    // count is the number of handles to this tensor that the callback holds. Exact unless
    // another thread copies or drops a handle to the tensor meanwhile (then only a report may be
    // wrong, never the tensor's lifetime).
    try {
      const std::uint32_t before = impl.strong.load(std::memory_order_relaxed);
      FinalizerFunction probe = state->fn;
      const std::uint32_t after = impl.strong.load(std::memory_order_relaxed);
      state->tensor_handles = after > before ? after - before : 0;
    } catch (...) {
      // a function that cannot be copied is registered all the same, just not measured
    }
  }
  {
    std::scoped_lock lock(impl.lock);
    if (impl.callbacks == nullptr) {
      impl.callbacks = new std::vector<std::shared_ptr<CallbackState>>();
    }
    auto& list = *impl.callbacks;
    // Detached callbacks (erased WeakKeyMap entries, dropped weak references) would pile up on a
    // long-lived tensor; sweeping at each doubling keeps the list proportional to live ones.
    if (list.size() >= 8 && (list.size() & (list.size() - 1)) == 0) {
      std::erase_if(list, [](const auto& s) {
        return s->status.load(std::memory_order_acquire) != CallbackState::Status::pending;
      });
    }
    list.push_back(state);
  }
  if (kind == CallbackState::Kind::finalizer) {
    std::scoped_lock lock(registry_mutex_);
    if (registry_.size() >= registry_sweep_at_) {
      std::erase_if(registry_, [](const std::weak_ptr<CallbackState>& w) {
        const auto s = w.lock();
        return !s || s->status.load(std::memory_order_acquire) != CallbackState::Status::pending;
      });
      registry_sweep_at_ = std::max<std::size_t>(64, registry_.size() * 2);
    }
    registry_.push_back(state);
  }
  return state;
}

std::size_t TensorArena::run_atexit_finalizers() noexcept {
  std::vector<std::weak_ptr<CallbackState>> pending;  // oldest first; run from the back
  std::size_t ran = 0;
  for (;;) {
    {
      // Whatever was registered since the last look is newer than everything pending.
      std::scoped_lock lock(registry_mutex_);
      if (pending.empty()) {
        pending.swap(registry_);
      } else if (!registry_.empty()) {
        try {
          pending.insert(pending.end(), std::make_move_iterator(registry_.begin()),
                         std::make_move_iterator(registry_.end()));
          registry_.clear();
        } catch (...) {
          // Out of host memory: they stay registered and are taken once `pending` is empty.
        }
      }
    }
    if (pending.empty()) return ran;
    const std::shared_ptr<CallbackState> state = pending.back().lock();
    pending.pop_back();
    if (state && state->atexit.load(std::memory_order_acquire) && state->run()) ++ran;
  }
}

ArenaStatistics TensorArena::statistics() const noexcept {
  ArenaStatistics stats;
  stats.live_tensors = live_tensors_.load(std::memory_order_relaxed);
  stats.live_bytes = live_bytes_.load(std::memory_order_relaxed);
  stats.tensors_created = created_.load(std::memory_order_relaxed);
  stats.finalizers_run = finalizers_run_.load(std::memory_order_relaxed);
  stats.expiry_callbacks_run = expiry_callbacks_run_.load(std::memory_order_relaxed);
  stats.finalizer_errors = finalizer_errors_.load(std::memory_order_relaxed);
  return stats;
}

// ---- stream capture ----------------------------------------------------------------------------

void TensorArena::begin_graph_capture(std::uint64_t capture, std::shared_ptr<GraphPoolState> pool,
                                      std::shared_ptr<void> life) {
  std::scoped_lock lock(capture_mutex_);
  active_captures_.push_back({capture, std::move(pool), std::move(life), {}});
  captures_.fetch_add(1, std::memory_order_acq_rel);
}

std::vector<TensorImpl*> TensorArena::end_graph_capture(std::uint64_t capture) noexcept {
  std::vector<TensorImpl*> kept;
  std::shared_ptr<GraphPoolState> pool;
  {
    std::scoped_lock lock(capture_mutex_);
    auto it = std::find_if(active_captures_.begin(), active_captures_.end(),
                           [capture](const ActiveCapture& c) { return c.id == capture; });
    if (it == active_captures_.end()) return kept;
    kept = std::move(it->kept);
    pool = std::move(it->pool);
    active_captures_.erase(it);
    captures_.fetch_sub(1, std::memory_order_acq_rel);
  }
  pool->settle(capture);
  return kept;
}

std::shared_ptr<GraphPoolState> TensorArena::capture_of(StreamImpl& stream, std::uint64_t& capture,
                                                        bool strict, std::shared_ptr<void>* life) {
  const CaptureInfo info = stream.capture_info();
  if (info.status == CaptureStatus::none) return nullptr;
  {
    std::scoped_lock lock(capture_mutex_);
    for (const ActiveCapture& active : active_captures_) {
      if (active.id == info.id) {
        capture = active.id;
        if (life != nullptr) *life = active.life;
        return active.pool;
      }
    }
  }
  if (strict) {
    throw std::logic_error("allocating on stream " + std::to_string(stream.id()) +
                           ", which captures outside every Context::capture scope: the "
                           "context's pool would break the capture; capture with "
                           "Context::capture(stream, pool)");
  }
  return nullptr;
}

void TensorArena::record_stream_hook(TensorImpl& root, StreamImpl& stream) {
  // A GraphPool block is protected by the pool's own rules (reused only as replays allow); other
  // memory would go back to its owner when dropped after the capture, while replays still use it.
  if (root.graph_block) return;
  const CaptureInfo info = stream.capture_info();
  if (info.status == CaptureStatus::none) return;
  std::scoped_lock lock(capture_mutex_);
  for (ActiveCapture& active : active_captures_) {
    if (active.id != info.id) continue;
    if (std::find(active.kept.begin(), active.kept.end(), &root) != active.kept.end()) return;
    active.kept.push_back(&root);
    retain_strong(&root);  // the graph reads it at every replay: it keeps it
    return;
  }
}

// ---- the control block's slow paths ------------------------------------------------------------

void release_strong(TensorImpl* impl) noexcept { impl->arena->release(impl); }

void release_weak(TensorImpl* impl) noexcept { impl->arena->free_block(impl); }

}  // namespace gpulife::detail
