// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The interface each device backend implements. Nothing above the runtime layer
/// includes this header's implementations; they see `Device`, `StreamView` and `Event`.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/runtime/capture_mode.hpp>
#include <gpulife/runtime/device_profile.hpp>
#include <gpulife/runtime/kernel_work.hpp>
#include <gpulife/runtime/memory_range.hpp>
#include <gpulife/runtime/sim_options.hpp>

namespace gpulife {

class PinnedHostCache;

/// @brief Free and total device memory in bytes.
struct MemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

namespace detail {

class DeviceImpl;
class StreamImpl;

/// An instantiated graph (cudaGraphExec_t).
class GraphExecImpl {
 public:
  GraphExecImpl() = default;
  GraphExecImpl(const GraphExecImpl&) = delete;
  GraphExecImpl& operator=(const GraphExecImpl&) = delete;
  virtual ~GraphExecImpl() = default;
  virtual DeviceImpl& device() noexcept = 0;
  /// cudaGraphLaunch: the whole graph in `stream`'s order, after the previous launch.
  virtual void launch(StreamImpl& stream) = 0;
};

/// A captured graph (cudaGraph_t).
class GraphImpl {
 public:
  GraphImpl() = default;
  GraphImpl(const GraphImpl&) = delete;
  GraphImpl& operator=(const GraphImpl&) = delete;
  virtual ~GraphImpl() = default;
  virtual std::size_t node_count() const = 0;
  virtual std::unique_ptr<GraphExecImpl> instantiate() = 0;
};

/// A recorded point in a stream. Backends pool them; see `DeviceImpl::acquire_event`.
class EventImpl {
 public:
  EventImpl() = default;
  EventImpl(const EventImpl&) = delete;
  EventImpl& operator=(const EventImpl&) = delete;
  virtual ~EventImpl() = default;

  /// True when the work captured by the latest record has executed (or nothing was recorded).
  virtual bool query() = 0;
  /// Blocks the host until `query()` would return true.
  virtual void synchronize() = 0;
  virtual void* native_handle() noexcept = 0;
};

/// An in-order queue of device work.
class StreamImpl {
 public:
  StreamImpl() = default;
  StreamImpl(const StreamImpl&) = delete;
  StreamImpl& operator=(const StreamImpl&) = delete;
  virtual ~StreamImpl() = default;

  virtual DeviceImpl& device() noexcept = 0;
  /// Unique within the process, never reused.
  virtual std::uint64_t id() const noexcept = 0;
  /// `cudaStream_t` on the CUDA backend; the impl itself on the sim.
  virtual void* native_handle() noexcept = 0;

  virtual void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) = 0;
  virtual void memset(void* dst, int value, std::size_t bytes) = 0;
  /// Runs `fn` on a host thread once the preceding work has executed. `fn` must not enqueue work
  /// and wait for it (CUDA forbids device calls from host functions).
  virtual void host_callback(std::function<void()> fn) = 0;
  virtual void record(EventImpl& event) = 0;
  /// Later work waits, on the device, for the work captured by the event's latest record.
  virtual void wait(EventImpl& event) = 0;
  virtual void synchronize() = 0;
  /// True when everything queued so far has executed.
  virtual bool query() = 0;
  /// Runs `body` on the stream as a kernel that touches `ranges` and does `work` (a hint for the
  /// simulated device's virtual time). Only the simulated device can run host code as a kernel;
  /// the CUDA backend throws `std::logic_error`.
  virtual void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                  std::function<void()> body, KernelWork work) = 0;
  /// As above, without a work hint.
  void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                          std::function<void()> body) {
    launch_host_kernel(name, ranges, std::move(body), KernelWork{});
  }

  /// Stream capture (cudaStreamBeginCapture, cudaStreamEndCapture, cudaStreamGetCaptureInfo):
  /// while capturing, queued work is recorded into a graph instead of executed. A backend
  /// without graphs throws `std::logic_error`.
  virtual void begin_capture(CaptureMode mode) {
    (void)mode;
    throw std::logic_error("this backend has no stream capture");
  }
  /// Ends the capture begun on this stream; the graph of what was captured.
  virtual std::unique_ptr<GraphImpl> end_capture() {
    throw std::logic_error("this backend has no stream capture");
  }
  virtual CaptureInfo capture_info() { return {}; }
};

/// One device. Owns its default stream and pools of streams and events.
class DeviceImpl {
 public:
  DeviceImpl();
  DeviceImpl(const DeviceImpl&) = delete;
  DeviceImpl& operator=(const DeviceImpl&) = delete;
  virtual ~DeviceImpl();

  /// The device's cache of page-locked host blocks (see `PinnedHostCache`). A backend's
  /// destructor calls `close_pinned_host_cache()` before its own state goes, so that the cached
  /// blocks are freed through it.
  [[nodiscard]] PinnedHostCache& pinned_host_cache() noexcept { return *pinned_host_cache_; }

  virtual BackendKind kind() const noexcept = 0;
  virtual int ordinal() const noexcept = 0;
  virtual std::string name() const = 0;
  virtual MemoryInfo memory_info() = 0;
  virtual void synchronize() = 0;
  /// Makes this device the calling thread's current device where the backend has such a notion
  /// (cudaSetDevice); kernels launched with <<<>>> go to the current device. It does not restore
  /// the previous one: gpulife's own code uses `DeviceGuard` (runtime/device_guard.hpp).
  virtual void make_current() const {}
  /// `DeviceGuard`'s first half: makes this device current on the calling thread and returns
  /// what `restore_current` needs to undo it: the previous current device's ordinal within this
  /// backend, or -1 when nothing has to be restored (the device was current already, or the
  /// backend has no current device: the default). A backend that models a current device per
  /// thread (the sim, later) overrides both.
  /// @throws CudaError if the device cannot be made current
  virtual int exchange_current() { return -1; }
  /// `DeviceGuard`'s second half: makes `previous` (from `exchange_current`) current again on
  /// the calling thread. Never throws; failures go to the error handler.
  virtual void restore_current(int previous) noexcept { (void)previous; }
  /// cudaThreadExchangeStreamCaptureMode: sets the calling thread's capture interaction mode,
  /// returns the previous one.
  virtual CaptureMode exchange_capture_mode(CaptureMode mode) { return mode; }

  virtual StreamImpl& default_stream() noexcept = 0;
  /// A stream from the device's pool (created when the pool is empty). Pooled streams are never
  /// destroyed while the device lives, so a late stream-ordered free on a stream whose `Stream`
  /// handle is gone still lands on a valid queue.
  virtual StreamImpl& acquire_stream() = 0;
  virtual void release_stream(StreamImpl& stream) noexcept = 0;
  virtual EventImpl& acquire_event() = 0;
  virtual void release_event(EventImpl& event) noexcept = 0;

  /// cudaMalloc: synchronous, usable on every stream at once.
  virtual void* allocate(std::size_t bytes) = 0;
  /// cudaFree: waits for the device, then frees.
  virtual void deallocate(void* ptr, std::size_t bytes) noexcept = 0;
  /// cudaMallocAsync: usable in stream order.
  virtual void* allocate_async(std::size_t bytes, StreamImpl& stream) = 0;
  /// cudaFreeAsync: takes effect when the stream reaches it.
  virtual void deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept = 0;
  /// cudaMallocHost: page-locked host memory. Copies from it are truly asynchronous.
  virtual void* allocate_pinned(std::size_t bytes) = 0;
  virtual void deallocate_pinned(void* ptr) noexcept = 0;
  /// Sets the release threshold of the device's current stream-ordered memory pool
  /// (cudaDeviceGetMemPool: the default pool unless the application set another): memory the
  /// pool holds beyond it goes back to the system at each synchronisation. No-op on the sim.
  virtual void set_async_release_threshold(std::size_t bytes) { (void)bytes; }
  /// Gives the memory that the device's current stream-ordered pool holds unused back to the
  /// system, down to `keep_bytes` (cudaDeviceSynchronize, then cudaMemPoolTrimTo): frees made
  /// with `deallocate_async` take effect only when their stream reaches them, so the device is
  /// synchronised first. Returns the bytes the pool reserved before minus after. The sim's
  /// stream-ordered frees give memory back at once: nothing to trim there (0).
  /// Never throws; failures go to the error handler.
  virtual std::size_t trim_async_pool(std::size_t keep_bytes) noexcept {
    (void)keep_bytes;
    return 0;
  }
  /// Bytes the device's current stream-ordered pool reserves from the system now
  /// (cudaMemPoolAttrReservedMemCurrent); 0 on the sim.
  virtual std::size_t async_pool_reserved_bytes() { return 0; }
  /// The calling thread's virtual time in nanoseconds under the device's time model (the
  /// simulated device with a profile); nullopt without one.
  virtual std::optional<double> virtual_time_ns() { return std::nullopt; }
  /// The profile of the device's time model; nullopt without one.
  virtual std::optional<DeviceProfile> time_profile() const { return std::nullopt; }
  /// True if `[ptr, ptr + bytes)` is page-locked host memory (a copy from it is a true DMA).
  virtual bool is_pinned(const void* ptr, std::size_t bytes) = 0;
  /// gpulife's own host code is about to access `[ptr, ptr + bytes)` of a pinned buffer (a
  /// staging buffer it fills, say): the sim checks the access against the queued copies that
  /// use the buffer, as it checks queued work. No-op on CUDA.
  virtual void host_access(const void* ptr, std::size_t bytes, Access mode) noexcept {
    (void)ptr, (void)bytes, (void)mode;
  }

  /// Virtual memory management (the CUDA driver's cuMemAddressReserve, cuMemCreate, cuMemMap,
  /// cuMemSetAccess, cuMemUnmap, cuMemRelease), for pools that grow one address range in place.
  /// The granularity physical memory is mapped in; 0 where the backend has none (the other
  /// calls then throw `std::logic_error`).
  virtual std::size_t vmm_granularity() const noexcept { return 0; }
  /// Reserves `bytes` (a multiple of the granularity) of device address space with no memory
  /// behind it. @throws OutOfMemoryError when the address space is exhausted.
  virtual void* reserve_address_range(std::size_t bytes);
  /// Frees a range from `reserve_address_range`; nothing may be mapped in it any more.
  virtual void release_address_range(void* base, std::size_t bytes) noexcept;
  /// Maps new physical memory at `[ptr, ptr + bytes)`, granularity-aligned and inside a reserved
  /// range, readable and writable by the device, counted against its capacity, one physical
  /// chunk per granule so that any granule can be unmapped later. Synchronous: usable on every
  /// stream when it returns. @throws OutOfMemoryError when the device has no memory left.
  virtual void map_memory(void* ptr, std::size_t bytes);
  /// Unmaps `[ptr, ptr + bytes)` (whole mapped granules) and frees their physical memory. Not
  /// stream-ordered: the caller makes sure no queued work still uses them.
  virtual void unmap_memory(void* ptr, std::size_t bytes) noexcept;

  /// Sub-allocator hooks (the sanitizer's manual-poisoning idea): a pool tells the device which
  /// parts of its chunks are handed out. The sim checks every queued access against them; the
  /// CUDA backend ignores them.
  /// `mark_allocated`: the block is live from `stream`'s current position on.
  virtual void mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
    (void)ptr, (void)bytes, (void)stream;
  }
  /// `mark_freed`: the block is dead once `stream` reaches its current position and every event
  /// in `after` has completed (their latest records at the time of the call).
  virtual void mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                          std::span<EventImpl* const> after) noexcept {
    (void)ptr, (void)bytes, (void)stream, (void)after;
  }
  /// The owner of the block or allocation that starts at `ptr` uses only its first `bytes` (a
  /// pool rounds requests up to its size classes): from `stream`'s current position on, the sim
  /// checks accesses against them rather than against the rounded size.
  virtual void mark_requested(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
    (void)ptr, (void)bytes, (void)stream;
  }
  /// A sub-allocator (the pool) took `[ptr, ptr + bytes)` from its upstream to carve blocks out
  /// of: until `unregister_pool_segment(ptr)`, only the blocks marked with `mark_allocated` (and
  /// not yet freed) may be touched. The CUDA backend registers the segment with the NVTX memory
  /// API as a sub-allocator heap (and the blocks as its regions) when a tool collects NVTX
  /// (compute-sanitizer's memcheck then reports a kernel that touches a released block); the
  /// default does nothing. No cost when no tool is attached.
  virtual void register_pool_segment(const void* ptr, std::size_t bytes) noexcept {
    (void)ptr, (void)bytes;
  }
  /// The sub-allocator gives the segment at `ptr` back to its upstream.
  virtual void unregister_pool_segment(const void* ptr) noexcept { (void)ptr; }
  /// Names, from `stream`'s current position on, the live block that contains `ptr` in
  /// violation reports (the tensor layer labels blocks with a tensor's id and tag in leak mode).
  virtual void label(const void* ptr, std::string label, StreamImpl& stream) noexcept {
    (void)ptr, (void)label, (void)stream;
  }
  /// Memory another owner lends to the device (a DLPack producer's host memory on the sim): the
  /// sim treats [ptr, ptr + bytes) as live device memory until `unregister_external`, and never
  /// frees or poisons it. Returns false, registering nothing, where the range already lies in
  /// memory the device knows, or on CUDA (which checks no accesses).
  virtual bool register_external(const void* ptr, std::size_t bytes) noexcept {
    (void)ptr, (void)bytes;
    return false;
  }
  /// Ends a registration; later accesses to the range are violations again.
  virtual void unregister_external(const void* ptr) noexcept { (void)ptr; }
  /// Names the owner of a range that no label covers (memory a tensor uses before its
  /// allocation reached the stream, or memory that was never allocated), for violation reports.
  /// Called on a stream worker with no device lock held; must be thread-safe and not call into
  /// the device. Returns "" when it knows no owner.
  using OwnerResolver = std::function<std::string(const void* ptr, std::size_t bytes)>;
  /// Adds a resolver (leak mode adds one per context); the token removes it.
  virtual std::uint64_t add_owner_resolver(OwnerResolver resolver) {
    (void)resolver;
    return 0;
  }
  /// Removes a resolver; when it returns, no report is still calling it.
  virtual void remove_owner_resolver(std::uint64_t token) noexcept { (void)token; }
  /// A stream of this device given by its native handle, as DLPack's `__dlpack__(stream=...)`
  /// passes a consumer's stream: `native` is a `cudaStream_t` on CUDA (cudaStreamLegacy and
  /// cudaStreamPerThread included), and on the sim the native handle of one of its own streams.
  /// The result refers to the stream without owning it: the caller keeps the stream alive while
  /// it uses the result.
  /// @throws std::invalid_argument naming `stream` when the handle is not such a stream
  virtual std::shared_ptr<StreamImpl> native_stream(void* native) = 0;
  /// Violations recorded so far, cleared by the call. Always empty on CUDA.
  virtual std::vector<SimViolation> take_violations() { return {}; }
  virtual std::size_t violation_count() const noexcept { return 0; }
  /// Replaces the injected faults (the sim's `SimOptions::faults`); CUDA injects none.
  virtual void set_faults(const SimFaults& faults) { (void)faults; }
  /// Turns injection on or off without changing the faults chosen.
  virtual void set_faults_enabled(bool enabled) noexcept { (void)enabled; }
  virtual bool faults_enabled() const noexcept { return false; }
  /// Faults injected so far.
  virtual std::uint64_t injected_faults() const noexcept { return 0; }
  /// The sim in seeded mode: the GPULIFE_SIM_SEED value that replays its schedule; else "".
  virtual std::string replay_seed() const { return {}; }
  /// The sim in seeded mode: synchronises, then restarts the scheduler from `seed`.
  virtual void reseed(std::uint64_t seed) { (void)seed; }

 protected:
  /// Frees the pinned host cache's blocks; backends call it first in their destructors.
  void close_pinned_host_cache() noexcept;

 private:
  std::unique_ptr<PinnedHostCache> pinned_host_cache_;
};

}  // namespace detail
}  // namespace gpulife
