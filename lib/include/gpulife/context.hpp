// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Context`: one per device; makes tensors and owns what they share.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include <gpulife/cache/digest_workers.hpp>
#include <gpulife/cache/tensor_cache.hpp>
#include <gpulife/debug/debug_options.hpp>
#include <gpulife/debug/leak_report.hpp>
#include <gpulife/debug/timeline.hpp>
#include <gpulife/debug/timeline_view.hpp>
#include <gpulife/error_handler.hpp>
#include <gpulife/memory/device_memory_resource.hpp>
#include <gpulife/memory/memory_pressure.hpp>
#include <gpulife/memory/pinned_staging_pool.hpp>
#include <gpulife/memory/pool_resource.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/source_location.hpp>
#include <gpulife/tensor/device_tensor.hpp>
#include <gpulife/tensor/graph_capture.hpp>
#include <gpulife/tensor/graph_pool.hpp>
#include <gpulife/weak/weak_set.hpp>

namespace gpulife {

namespace detail {
class TensorArena;
class DebugObserver;
}  // namespace detail

/// @brief How a `Context` is set up. Every field has a default; use designated initialisers:
/// `Context ctx({.device = Device::sim(), .pool = {.max_cached_bytes = 1 << 30}});`
struct ContextOptions {
  /// The device; empty: `Device::select()` (CUDA if a device answers, else the simulated one).
  Device device{};
  /// Where tensor memory comes from; empty: a `PoolResource` over an `AsyncResource`.
  std::shared_ptr<DeviceMemoryResource> resource{};
  /// Options of the default pool (ignored when `resource` is given).
  PoolOptions pool{};
  /// Receives contained errors (finalizers that threw, failed frees); empty: the default handler.
  ErrorHandler error_handler{};
  /// The tensor cache's retention, warm budget, verification and sharding.
  TensorCacheOptions cache{};
  /// Threads that hash one large upload for the cache, the calling thread included (0: the
  /// hardware concurrency).
  std::size_t digest_threads = 0;
  /// The pinned buffers that uploads from pageable memory are staged through.
  StagingOptions staging{};
  /// Pageable uploads of at least this many bytes are staged; smaller ones go directly.
  std::size_t staging_min_bytes = std::size_t{1} << 20;
  /// Leak mode, stack traces, timeline; all off by default (then free: one predictable branch
  /// per tensor hook). The environment (GPULIFE_DEBUG) can turn them on; see `DebugOptions`.
  DebugOptions debug{};
};

/// @brief Counters of a context.
struct ContextStatistics {
  std::size_t live_tensors = 0;  ///< tensors alive now (views included)
  std::size_t live_bytes = 0;    ///< device memory owned by live tensors
  std::uint64_t tensors_created = 0;   ///< tensors made since the context was, views included
  /// The program's finalizers (`DeviceTensor::on_release`) that have run, at release or at
  /// shutdown, those that threw included. gpulife's own callbacks (the tensor cache's and
  /// `WeakKeyMap`'s bookkeeping, `wrap`'s release function) are not counted.
  std::uint64_t finalizers_run = 0;
  /// The program's `WeakTensor` expiry callbacks that have run, those that threw included.
  std::uint64_t expiry_callbacks_run = 0;
  /// Callbacks that threw: finalizers, expiry callbacks, `wrap`'s release functions.
  std::uint64_t finalizer_errors = 0;
  ResourceStatistics resource{};       ///< of the context's memory resource
};

/// @brief One device's tensors: it makes them, owns the memory resource stack, the default
/// stream and the tensor cache, and at destruction runs the finalizers of the tensors still
/// alive.
///
/// Destroying a context synchronises the device, empties the tensor cache (warm and pinned
/// entries go), runs the pending finalizers of live tensors
/// (like `weakref.finalize` at exit; a finalizer whose `atexit` is false is skipped), reports how
/// many tensors are still alive, and gives the pool's cached memory back. Tensors that outlive
/// the context stay valid: their memory is released when they drop.
///
/// In leak mode (`ContextOptions::debug`, or GPULIFE_DEBUG=leaks) the destructor first makes a
/// leak report (unless `DebugOptions::report_at_shutdown` is off), before any finalizer runs, so
/// that it shows what the program left alive: it goes to stderr (one line when nothing leaked) and,
/// with `DebugOptions::report_path` or GPULIFE_LEAK_REPORT, to that file. With
/// `DebugOptions::exit_on_leak` a leak makes the process's exit status `leak_exit_code`: the
/// destructor records it, and when the process exits normally (`exit`, a return from `main`,
/// `quick_exit`) a handler registered when the context was made flushes stdio and ends the process
/// with `std::_Exit(leak_exit_code)`; destructors and handlers that would have run after it do not.
/// A context destroyed after that handler has run (a static object destroyed late) ends the process
/// at once, at the end of its destructor, the same way. With the timeline on and
/// `DebugOptions::timeline_path` set, the destructor writes the Chrome trace there last (the
/// offline HTML view for a ".html" name).
///
/// With `DebugOptions::oom_dump`, an allocation that fails after the memory-pressure chain
/// first writes an out-of-memory snapshot (see `DebugOptions::oom_dump`), then throws.
///
/// @par Thread safety
/// All members are thread-safe. The context must not be destroyed while other threads use it.
class Context {
 public:
  /// @throws std::invalid_argument if the resource is on another device than `device`, or
  ///         GPULIFE_DEBUG names an unknown item (see `resolve_debug_options`)
  /// @throws CudaError if the device cannot be opened
  explicit Context(ContextOptions options = {});
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;
  ~Context();

  /// @return the device the context's tensors live on
  [[nodiscard]] const Device& device() const noexcept;
  /// @return the device's default stream, used where a stream argument is left empty
  [[nodiscard]] StreamView default_stream() const noexcept;
  /// @return the memory resource tensors are allocated from
  [[nodiscard]] DeviceMemoryResource& resource() const noexcept;

  /// @brief A new tensor with uninitialised memory, allocated in stream order on `stream`.
  /// @param shape  extents; a zero extent gives a tensor without memory
  /// @param dtype  element type
  /// @param stream the tensor's stream (empty: the default stream)
  /// @param tag    a name for reports
  /// @param where  the allocation site (leak reports); leave defaulted
  /// @throws std::invalid_argument if `stream` belongs to another device
  /// @throws OutOfMemoryError if the memory cannot be had after the memory-pressure chain
  [[nodiscard]] DeviceTensor empty(const Shape& shape, DType dtype, StreamView stream = {},
                                   std::string_view tag = {},
                                   SourceLocation where = SourceLocation::current());

  /// @brief A new tensor holding a copy of `host`, uploaded asynchronously on `stream`.
  ///
  /// From pageable memory the bytes are consumed before the call returns (CUDA stages them);
  /// from pinned memory they are read when the copy executes, so keep them unchanged until then.
  /// @throws std::invalid_argument if `host.size()` is not `shape.numel() * size_of(dtype)`,
  ///         if `host` is null with a non-zero size, or `stream` belongs to another device
  /// @throws OutOfMemoryError as `empty`
  [[nodiscard]] DeviceTensor upload(std::span<const std::byte> host, const Shape& shape,
                                    DType dtype, StreamView stream = {}, std::string_view tag = {},
                                    SourceLocation where = SourceLocation::current());

  /// @brief Typed `upload`: the dtype is `T`'s.
  template <TensorElement T>
  [[nodiscard]] DeviceTensor upload(std::span<const T> host, const Shape& shape,
                                    StreamView stream = {}, std::string_view tag = {},
                                    SourceLocation where = SourceLocation::current()) {
    return upload(std::as_bytes(host), shape, dtype_of_v<T>, stream, tag, where);
  }

  /// @brief A tensor over memory that gpulife does not own: another framework's, a DLPack
  /// producer's.
  ///
  /// gpulife never frees the memory: `release` runs once when the last handle drops (and, unlike
  /// finalizers, not at context shutdown while the tensor is still alive), after the tensor's
  /// own finalizers. It runs on the host at once: before it runs, `stream` is made to wait (on
  /// the device) for the work queued on the streams named with `record_stream`, so an owner that
  /// frees in stream order on `stream`, or synchronises it, is ordered after all of gpulife's use.
  /// @param data    first element (may be null only if the shape has a zero extent)
  /// @param shape   extents
  /// @param strides strides in elements, `shape.rank()` of them (an empty `Shape` means
  ///                contiguous)
  /// @param dtype   element type
  /// @param stream  the stream the producer's work on the memory is ordered on
  /// @param release gives the memory back to its owner
  /// @param tag     a name for reports
  /// @param where   the call site (leak reports); leave defaulted
  /// @throws std::invalid_argument for a null `data` with elements, strides of the wrong rank or
  ///         negative, an empty `release`, or a `stream` of another device
  [[nodiscard]] DeviceTensor wrap(void* data, const Shape& shape, const Shape& strides, DType dtype,
                                  StreamView stream, FinalizerFunction release,
                                  std::string_view tag = {},
                                  SourceLocation where = SourceLocation::current());

  /// @brief A new private memory pool for graphs captured with `capture` (PyTorch's
  /// `graph_pool_handle()`); see `GraphPool`.
  [[nodiscard]] GraphPool graph_pool();

  /// @brief Begins capturing `stream` into a CUDA graph (cudaStreamBeginCapture), with the
  /// context's tensors made capture-safe: see `CaptureScope` and README "CUDA graphs".
  ///
  /// ```cpp
  /// GraphPool pool = ctx.graph_pool();
  /// CaptureScope scope = ctx.capture(stream, pool);
  /// DeviceTensor y = step(x);            // queued work is captured, memory comes from `pool`
  /// Graph graph = scope.end();
  /// for (int i = 0; i < n; ++i) graph.launch(stream);  // y is written at every replay
  /// ```
  /// @param stream a stream of this context's device other than the legacy default stream
  /// @param pool   a pool of this context (one pool may serve several captures in sequence)
  /// @param mode   the capture's mode (cudaStreamCaptureMode)
  /// @throws std::invalid_argument for an empty or foreign stream or pool; CudaError if the
  ///         capture cannot begin
  [[nodiscard]] CaptureScope capture(StreamView stream, const GraphPool& pool,
                                     CaptureMode mode = CaptureMode::global);

  /// @return a snapshot of the counters
  [[nodiscard]] ContextStatistics statistics() const;

  /// @return the context's content-addressed tensor cache
  [[nodiscard]] TensorCache& cache() noexcept { return *cache_; }
  /// @return the threads that hash large buffers for the cache
  [[nodiscard]] const DigestWorkers& digest_workers() const noexcept { return *digest_workers_; }
  /// @return the debug options in force (the given ones with the environment applied)
  [[nodiscard]] const DebugOptions& debug_options() const noexcept;
  /// @return a point from which `leak_report(checkpoint)` lists only tensors made afterwards
  ///         (what a test's leak guard uses); an empty checkpoint without leak mode
  [[nodiscard]] LeakCheckpoint leak_checkpoint() const noexcept;
  /// @brief The live tensors, with their allocation sites and why they are alive.
  ///
  /// Without leak mode this returns an empty report whose `tracking` is false rather than
  /// throwing, so that a server's debug endpoint can always call it; a test that must know uses
  /// the flag (the test helpers in gpulife/testing fail when it is false).
  /// @param since list only tensors made after this checkpoint (default: all)
  /// @throws what the cache's `pinned_entries` hook throws; std::bad_alloc
  /// @par Thread safety
  /// May run concurrently with tensors being made and dropped: each tensor listed was alive at
  /// some moment during the call. A tensor being made at that moment may be missing, and its
  /// pool block may be listed as unowned. The `kept_by_callback` status relies on a count
  /// measured when the callback was registered, which is exact unless another thread copied or
  /// dropped a handle to that tensor at that very moment, and which does not see handles to
  /// views of the tensor that the callback captured.
  [[nodiscard]] LeakReport leak_report(LeakCheckpoint since = {}) const;
  /// @brief The events recorded so far, oldest first (empty, with `recording` false, when the
  /// timeline is off). `ctx.timeline().write_chrome_trace("trace.json")` makes a file that
  /// Perfetto opens and `gpulife_view` turns into an offline page; `write_timeline_view` writes
  /// that page directly.
  [[nodiscard]] Timeline timeline() const;

  /// @return the listeners told when an allocation fails (held weakly)
  [[nodiscard]] WeakSet<MemoryPressureListener>& pressure_listeners() noexcept;

 private:
  StreamView resolve(StreamView stream) const;
  void on_memory_pressure(std::size_t requested, StreamView stream) noexcept;
  /// The leak report at destruction; true if the process must exit for a leak.
  bool report_leaks_at_shutdown() noexcept;

  Device device_;
  std::shared_ptr<DeviceMemoryResource> resource_;
  ErrorHandler error_handler_;
  DebugOptions debug_options_;
  detail::TensorArena* arena_ = nullptr;  // one reference; live tensors hold the others
  std::shared_ptr<detail::DebugObserver> debug_;  // null unless leak mode or the timeline is on
  WeakSet<MemoryPressureListener> pressure_listeners_;
  std::unique_ptr<DigestWorkers> digest_workers_;
  std::unique_ptr<TensorCache> cache_;
};

/// @brief The process-wide context, made with default options on first use.
/// @throws what `Context`'s constructor throws, on first use
[[nodiscard]] std::shared_ptr<Context> default_context();

/// @brief Replaces the process-wide context; null goes back to making one on next use.
/// @return the previous one
std::shared_ptr<Context> set_default_context(std::shared_ptr<Context> context);

}  // namespace gpulife
