// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The interface each device backend implements. Nothing above the runtime layer
/// includes this header's implementations; they see `Device`, `StreamView` and `Event`.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <gpulife/runtime/backend_kind.hpp>
#include <gpulife/runtime/memory_range.hpp>
#include <gpulife/runtime/sim_options.hpp>

namespace gpulife {

/// @brief Free and total device memory in bytes.
struct MemoryInfo {
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
};

namespace detail {

class DeviceImpl;

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
  /// Runs `body` on the stream as a kernel that touches `ranges`. Only the simulated device can
  /// run host code as a kernel; the CUDA backend throws `std::logic_error`.
  virtual void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                  std::function<void()> body) = 0;
};

/// One device. Owns its default stream and pools of streams and events.
class DeviceImpl {
 public:
  DeviceImpl() = default;
  DeviceImpl(const DeviceImpl&) = delete;
  DeviceImpl& operator=(const DeviceImpl&) = delete;
  virtual ~DeviceImpl() = default;

  virtual BackendKind kind() const noexcept = 0;
  virtual int ordinal() const noexcept = 0;
  virtual std::string name() const = 0;
  virtual MemoryInfo memory_info() = 0;
  virtual void synchronize() = 0;
  /// Makes this device the calling thread's current device where the backend has such a notion
  /// (cudaSetDevice); kernels launched with <<<>>> go to the current device.
  virtual void make_current() const {}

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
  /// Sets the release threshold of the device's default stream-ordered memory pool: memory the
  /// pool holds beyond it goes back to the system at each synchronisation. No-op on the sim.
  virtual void set_async_release_threshold(std::size_t bytes) { (void)bytes; }
  /// True if `[ptr, ptr + bytes)` is page-locked host memory (a copy from it is a true DMA).
  virtual bool is_pinned(const void* ptr, std::size_t bytes) = 0;

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
};

}  // namespace detail
}  // namespace gpulife
