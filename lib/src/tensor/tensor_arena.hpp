// SPDX-License-Identifier: Apache-2.0
#pragma once

// The shared state of one context's tensors: device, memory resource, control-block slab,
// counters, and the registry of pending finalizers. Tensors keep it alive, so that a handle
// dropped after its context was destroyed still releases its memory correctly.

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/source_location.hpp>
#include <gpulife/tensor/detail/tensor_impl.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/finalizer.hpp>
#include <gpulife/tensor/lifetime_event.hpp>

namespace gpulife::detail {

class TensorArena;
class GraphPoolState;

/// A finalizer or an expiry callback registered on a tensor.
struct CallbackState {
  enum class Status : std::uint8_t { pending, running, done, detached };
  enum class Kind : std::uint8_t { finalizer, expiry };

  CallbackState(Kind kind_in, FinalizerFunction fn_in, TensorInfo info_in, TensorArena& arena_in,
                bool internal_in = false)
      : kind(kind_in),
        internal(internal_in),
        fn(std::move(fn_in)),
        info(std::move(info_in)),
        arena(&arena_in) {}

  /// Runs the function unless it already ran or was detached; contains its exceptions.
  bool run() noexcept;
  /// Cancels; true if it was pending.
  bool detach() noexcept;

  std::atomic<Status> status{Status::pending};
  std::atomic<bool> atexit{true};
  const Kind kind;
  /// gpulife's own bookkeeping (the tensor cache's and WeakKeyMap's expiry callbacks, the
  /// release function of `Context::wrap`): neither counted in the statistics nor reported as a
  /// lifetime event, since the program did not register it.
  const bool internal;
  FinalizerFunction fn;  // touched only by whoever moved status away from pending
  const TensorInfo info;
  TensorArena* arena;  // for error reports; the tensor holding this state keeps it alive
  /// Leak mode: strong handles to the tensor that `fn` holds (captured by value), measured when
  /// it was registered. Written before the state is published, read-only afterwards.
  std::uint32_t tensor_handles = 0;
};

/// Grants gpulife's own layers the handle internals.
struct TensorAccess {
  static DeviceTensor adopt(TensorImpl* impl) noexcept { return DeviceTensor(impl); }
  static TensorImpl* impl(const DeviceTensor& tensor) noexcept { return tensor.impl_; }
};

/// Told about every tensor's birth and death and about lifetime events; the debug layer (leak
/// tracker, timeline) implements it. When no observer is installed each hook costs one
/// predictable branch. Hooks run on the thread that caused the event, with no gpulife lock held,
/// and must not throw.
class TensorObserver {
 public:
  virtual ~TensorObserver() = default;
  /// A tensor (root or view) was made; its fields are final. Roots have their memory.
  virtual void on_create(TensorImpl& impl, const SourceLocation& where) noexcept = 0;
  /// A tensor died: its memory has been given back (stream-ordered) and the arena's counters
  /// updated; its callbacks have not run yet and its block is still valid.
  virtual void on_release(TensorImpl& impl) noexcept = 0;
  /// `tensor_id` is 0 where no tensor is involved. `memory_id`, for a cache hit or miss, is the
  /// id of the tensor that owns the memory handed out (whose upload a hit reuses); else 0.
  virtual void on_event(LifetimeEvent event, std::uint64_t tensor_id, std::size_t bytes,
                        std::string_view tag, std::uint64_t memory_id) noexcept = 0;
  /// An allocation of `requested` bytes on `stream` failed after the memory-pressure chain, and
  /// an `OutOfMemoryError` whose message is `message` is about to be thrown. The default reports
  /// it as an `out_of_memory` event.
  virtual void on_out_of_memory(std::size_t requested, StreamView stream,
                                std::string_view message) noexcept {
    (void)stream;
    (void)message;
    on_event(LifetimeEvent::out_of_memory, 0, requested, {}, 0);
  }
};

/// Counters of one arena.
struct ArenaStatistics {
  std::size_t live_tensors = 0;  ///< roots and views
  std::size_t live_bytes = 0;    ///< memory owned by live roots
  std::uint64_t tensors_created = 0;
  std::uint64_t finalizers_run = 0;        // the program's finalizers, those that threw included
  std::uint64_t expiry_callbacks_run = 0;  // the program's expiry callbacks, likewise
  std::uint64_t finalizer_errors = 0;      // callbacks of every kind that threw
};

class TensorArena {
 public:
  struct Config {
    Device device;
    std::shared_ptr<DeviceMemoryResource> resource;
    ErrorHandler error_handler;  // empty: the default handler
    StagingOptions staging{};
    /// Pageable uploads of at least this many bytes go through the pinned staging buffers.
    std::size_t staging_min_bytes = std::size_t{1} << 20;
  };
  /// Called when an allocation failed; frees what it can. Must not throw.
  using PressureHandler = std::function<void(std::size_t requested, StreamView stream)>;

  /// A new arena with one reference, owned by the caller.
  static TensorArena* create(Config config);
  void ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref() noexcept;

  [[nodiscard]] const Device& device() const noexcept { return config_.device; }
  [[nodiscard]] DeviceMemoryResource& resource() const noexcept { return *config_.resource; }
  [[nodiscard]] const std::shared_ptr<DeviceMemoryResource>& shared_resource() const noexcept {
    return config_.resource;
  }
  /// Set once by the owner before tensors are made. The arena keeps the observer alive as long
  /// as itself, because tensors that outlive their context still report their release.
  void set_observer(std::shared_ptr<TensorObserver> observer) noexcept {
    observer_owner_ = std::move(observer);
    observer_ = observer_owner_.get();
  }
  [[nodiscard]] TensorObserver* observer() const noexcept { return observer_; }
  void set_pressure_handler(PressureHandler handler) { pressure_handler_ = std::move(handler); }

  /// Allocates with the memory-pressure chain: on out-of-memory the handler frees what it can
  /// and the allocation is retried once.
  void* allocate(std::size_t bytes, StreamView stream);

  /// Copies host bytes to device memory in `stream` order: pageable sources of at least
  /// `staging_min_bytes` through the pinned staging buffers, the rest directly. The host bytes
  /// are consumed when it returns unless they are pinned.
  void copy_to_device(void* dst, std::span<const std::byte> src, StreamView stream);

  /// A new root tensor with fresh memory on `stream`.
  TensorImpl* create(const Shape& shape, DType dtype, StreamImpl& stream, std::string_view tag,
                     const SourceLocation& where);
  /// A new root tensor over memory someone else owns; `on_release` gives it back.
  TensorImpl* create_external(void* data, std::size_t bytes, const Shape& shape,
                              const Shape& strides, DType dtype, StreamImpl& stream,
                              std::string_view tag, const SourceLocation& where);
  /// A new view held by `parent` (which gains a strong reference): the memory's owner, or an
  /// anchor view (see `view_parent`).
  TensorImpl* create_view(TensorImpl& parent, void* data, std::size_t bytes, const Shape& shape,
                          const Shape& strides, const SourceLocation& where);

  /// The strong count reached zero.
  void release(TensorImpl* impl) noexcept;
  /// The weak count reached zero.
  void free_block(TensorImpl* impl) noexcept;

  /// Registers a callback on `impl`; finalizers also join the shutdown registry. With an
  /// observer installed (leak mode), it first measures how many handles to `impl` the function
  /// holds: see `CallbackState::tensor_handles`.
  std::shared_ptr<CallbackState> add_callback(TensorImpl& impl, CallbackState::Kind kind,
                                              FinalizerFunction fn, bool internal = false);
  /// Runs the pending finalizers whose `atexit` is set, newest first (context shutdown), as
  /// `weakref.finalize`'s exit handler does: a finalizer registered while they run (by one of
  /// them) runs too, before the older ones still pending.
  std::size_t run_atexit_finalizers() noexcept;

  [[nodiscard]] ArenaStatistics statistics() const noexcept;
  /// Sends `message` to the configured error handler.
  void report(std::string_view message) const noexcept;
  /// Counts a callback that ran (`failed`: it threw).
  void count_callback(const CallbackState& state, bool failed) noexcept {
    if (!state.internal) {
      (state.kind == CallbackState::Kind::finalizer ? finalizers_run_ : expiry_callbacks_run_)
          .fetch_add(1, std::memory_order_relaxed);
    }
    if (failed) finalizer_errors_.fetch_add(1, std::memory_order_relaxed);
  }

  /// The description callbacks receive.
  static TensorInfo info_of(const TensorImpl& impl);

  // ---- stream capture (tensor/graph_capture.hpp, graph_pool_state.hpp) ----
  /// True while a capture scope of this arena is open (the hot paths' check).
  [[nodiscard]] bool capturing() const noexcept {
    return captures_.load(std::memory_order_acquire) > 0;
  }
  /// A capture scope opened: tensors made on streams of capture `capture` take memory from
  /// `pool`; `life` lives as long as the graph it makes.
  void begin_graph_capture(std::uint64_t capture, std::shared_ptr<GraphPoolState> pool,
                           std::shared_ptr<void> life);
  /// The scope closed: returns the strong references it kept (see `record_stream_hook`), which
  /// the caller adopts, and lets the pool settle what the capture freed.
  std::vector<TensorImpl*> end_graph_capture(std::uint64_t capture) noexcept;
  /// `record_stream(stream)` on `root`: while `stream` captures, the graph keeps the tensor.
  void record_stream_hook(TensorImpl& root, StreamImpl& stream);

 private:
  explicit TensorArena(Config config);
  ~TensorArena();

  TensorImpl* new_block();
  /// Fills in a new root's fields, counts it and tells the observer; a root's bytes are counted
  /// by the caller, since only memory from the resource is.
  TensorImpl* made_root(TensorImpl* impl, void* data, std::size_t bytes, const Shape& shape,
                        const Shape& strides, DType dtype, StreamImpl& stream,
                        const SourceLocation& where) noexcept;
  /// Returns the graph pool that keeps the tensor's callbacks (released during a capture).
  std::shared_ptr<GraphPoolState> release_memory(TensorImpl& root) noexcept;
  void release_memory_now(void* data, std::size_t bytes, StreamImpl* home,
                          const std::vector<StreamImpl*>& recorded, bool external) noexcept;
  /// The pool and id of the open capture scope `stream` is captured in (null: none).
  /// @throws std::logic_error if `stream` captures outside every scope and `strict`
  std::shared_ptr<GraphPoolState> capture_of(StreamImpl& stream, std::uint64_t& capture,
                                             bool strict, std::shared_ptr<void>* life = nullptr);

  Config config_;
  PinnedStagingPool staging_;
  TensorObserver* observer_ = nullptr;  // the hot path reads this plain pointer
  std::shared_ptr<TensorObserver> observer_owner_;
  PressureHandler pressure_handler_;
  std::atomic<std::uint32_t> refs_{1};

  // control blocks: a free list over chunks, so that a tensor costs no malloc in steady state
  std::mutex slab_mutex_;
  std::vector<void*> free_blocks_;
  std::vector<std::unique_ptr<std::byte[]>> chunks_;

  std::atomic<std::size_t> live_tensors_{0};
  std::atomic<std::size_t> live_bytes_{0};
  std::atomic<std::uint64_t> created_{0};
  std::atomic<std::uint64_t> finalizers_run_{0};
  std::atomic<std::uint64_t> expiry_callbacks_run_{0};
  std::atomic<std::uint64_t> finalizer_errors_{0};

  struct ActiveCapture {
    std::uint64_t id = 0;
    std::shared_ptr<GraphPoolState> pool;
    std::shared_ptr<void> life;
    std::vector<TensorImpl*> kept;  // strong references
  };
  std::atomic<std::size_t> captures_{0};
  std::mutex capture_mutex_;
  std::vector<ActiveCapture> active_captures_;
  std::map<std::uintptr_t, std::shared_ptr<GraphPoolState>> graph_blocks_;

  std::mutex registry_mutex_;
  std::vector<std::weak_ptr<CallbackState>> registry_;  // finalizers, oldest first
  std::size_t registry_sweep_at_ = 64;
};

}  // namespace gpulife::detail
