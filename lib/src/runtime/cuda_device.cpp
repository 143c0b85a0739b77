// SPDX-License-Identifier: Apache-2.0
// The CUDA backend: the device interface on the CUDA runtime API. It is host code built by the
// host compiler; kernels come from nvcc translation units through `for_each_index`.
//
// Rules honoured throughout (CUDA runtime API reference):
// - every entry makes its device current for the call and restores the caller's device
//   (`Current`, the backend's own `DeviceGuard`), on whatever thread it runs;
// - a call's own return code is what is checked; the thread's "last error" is cleared only when
//   it holds exactly the error the call just returned, so that an error the application left
//   pending is never swallowed;
// - a sticky error (the context is corrupt: cudaErrorIllegalAddress, cudaErrorLaunchFailure, ...)
//   marks the device lost: reported once (and thrown where it was found); later frees,
//   destructors, records, waits and synchronisations skip CUDA (nothing runs any more), while
//   calls that make new work or memory still fail with the error;
// - cudaErrorCudartUnloading (the process is exiting and the runtime went first) is quiet:
//   everything the device owned went with the runtime.

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <gpulife/error_handler.hpp>
#include <gpulife/errors.hpp>

#include "detail/format.hpp"
#include "runtime/cuda_graph.hpp"
#include "runtime/backends.hpp"
#include "runtime/cuda_nvtx.hpp"
#include "runtime/cuda_vmm.hpp"
#include "runtime/stream_ids.hpp"

namespace gpulife::detail {

bool is_sticky_cuda_error(int code) noexcept {
  // The errors whose description in driver_types.h says the process is left in an inconsistent
  // state and must be relaunched.
  switch (static_cast<cudaError_t>(code)) {
    case cudaErrorContained:
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchTimeout:
    case cudaErrorAssert:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchFailure:
    case cudaErrorTensorMemoryLeak:
    case cudaErrorMpsClientTerminated:
    case cudaErrorExternalDevice:
      return true;
    default:
      return false;
  }
}

namespace {

/// Clears the thread's last error if it is exactly `err`, the error a call of ours just
/// returned: an error the application left pending stays for the application to see.
void clear_if_pending(cudaError_t err) noexcept {
  if (cudaPeekAtLastError() == err) (void)cudaGetLastError();
}

/// Reports "prefix: detail" without letting the string building escape a noexcept path.
void report(std::string_view prefix, const char* detail) noexcept {
  try {
    std::string message(prefix);
    message += ": ";
    message += detail;
    report_error(message);
  } catch (...) {
    report_error(prefix);
  }
}

cudaMemcpyKind to_cuda(CopyKind kind) noexcept {
  switch (kind) {
    case CopyKind::host_to_device:
      return cudaMemcpyHostToDevice;
    case CopyKind::device_to_host:
      return cudaMemcpyDeviceToHost;
    case CopyKind::device_to_device:
      return cudaMemcpyDeviceToDevice;
  }
  return cudaMemcpyDefault;
}

const char* to_text(CopyKind kind) noexcept {
  switch (kind) {
    case CopyKind::host_to_device:
      return "host to device";
    case CopyKind::device_to_host:
      return "device to host";
    case CopyKind::device_to_device:
      return "device to device";
  }
  return "?";
}

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // the macros are C casts in driver_types.h
// The legacy default stream by its explicit handle rather than 0: the handle escapes through
// native_handle() into nvcc translation units, where 0 means the per-thread default stream if
// they are built with --default-stream per-thread.
cudaStream_t legacy_default_stream() noexcept { return cudaStreamLegacy; }
cudaStream_t per_thread_default_stream() noexcept { return cudaStreamPerThread; }
#pragma GCC diagnostic pop

// Runs on a thread of the CUDA driver. CUDA calls from here are forbidden, so a failure can
// only be reported; an exception must not unwind into the driver. gpulife queues no host
// function whose captures own CUDA resources (see the tensor cache's keep-alive).
void CUDART_CB run_host_callback(void* data) noexcept {
  std::unique_ptr<std::function<void()>> fn(static_cast<std::function<void()>*>(data));
  try {
    (*fn)();
  } catch (const std::exception& e) {
    report("cuda host callback threw", e.what());
  } catch (...) {
    report_error("cuda host callback threw an unknown exception");
  }
}

/// True if `ordinal`'s primary context exists (cuDevicePrimaryCtxGetState through the
/// runtime's driver entry point, so that gpulife needs no link to libcuda). True when it cannot
/// tell: restoring a device is then what the caller had, at worst a context made early.
bool has_primary_context(int ordinal) noexcept {
  using GetState = int (*)(int, unsigned int*, int*);  // CUresult (CUdevice, flags, active)
  static const GetState get_state = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (const cudaError_t err = cudaGetDriverEntryPointByVersion(
            "cuDevicePrimaryCtxGetState", &fn, 12000, cudaEnableDefault, &found);
        err != cudaSuccess) {
      clear_if_pending(err);
      return GetState{nullptr};
    }
    if (found != cudaDriverEntryPointSuccess) return GetState{nullptr};
    return reinterpret_cast<GetState>(fn);
  }();
  if (get_state == nullptr) return true;
  unsigned int flags = 0;
  int active = 0;
  // The driver's CUdevice for a runtime ordinal is the ordinal (both honour
  // CUDA_VISIBLE_DEVICES); PyTorch's hasPrimaryContext relies on the same.
  if (get_state(ordinal, &flags, &active) != 0) return true;
  return active != 0;
}

class CudaDevice;

// ---- CudaEvent ---------------------------------------------------------------------------------

class CudaEvent final : public EventImpl {
 public:
  CudaEvent(CudaDevice& device, cudaEvent_t handle) noexcept : device_(device), handle_(handle) {}
  ~CudaEvent() override;

  bool query() override;
  void synchronize() override;
  void* native_handle() noexcept override { return handle_; }

  cudaEvent_t handle() const noexcept { return handle_; }
  bool recorded() const noexcept { return recorded_.load(std::memory_order_acquire); }
  void mark_recorded() noexcept { recorded_.store(true, std::memory_order_release); }
  // A CUDA event cannot forget its last record; the flag makes a pooled event behave as a new
  // one (nothing recorded: query() true, waits are no-ops), as the interface promises.
  void forget() noexcept { recorded_.store(false, std::memory_order_release); }

 private:
  CudaDevice& device_;
  const cudaEvent_t handle_;
  std::atomic<bool> recorded_{false};
};

// ---- CudaStream --------------------------------------------------------------------------------

class CudaStream final : public StreamImpl {
 public:
  CudaStream(CudaDevice& device, cudaStream_t handle, bool owned) noexcept
      : device_(device), handle_(handle), owned_(owned), id_(next_stream_id()) {}
  ~CudaStream() override;

  DeviceImpl& device() noexcept override;
  std::uint64_t id() const noexcept override { return id_; }
  void* native_handle() noexcept override { return handle_; }

  void copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) override;
  void memset(void* dst, int value, std::size_t bytes) override;
  void host_callback(std::function<void()> fn) override;
  void record(EventImpl& event) override;
  void wait(EventImpl& event) override;
  void synchronize() override;
  bool query() override;
  using StreamImpl::launch_host_kernel;
  void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                          std::function<void()> body, KernelWork work) override;
  void begin_capture(CaptureMode mode) override;  // cuda_graph.cpp does the work
  std::unique_ptr<GraphImpl> end_capture() override;
  CaptureInfo capture_info() override;

  cudaStream_t handle() const noexcept { return handle_; }

 private:
  std::string describe() const;

  CudaDevice& device_;
  const cudaStream_t handle_;
  const bool owned_;  // false for the default streams and other owners' streams
  const std::uint64_t id_;
};

// ---- CudaDevice --------------------------------------------------------------------------------

class CudaDevice final : public DeviceImpl {
 public:
  explicit CudaDevice(int ordinal);
  ~CudaDevice() override;

  BackendKind kind() const noexcept override { return BackendKind::cuda; }
  int ordinal() const noexcept override { return ordinal_; }
  std::string name() const override { return name_; }
  MemoryInfo memory_info() override;
  void synchronize() override;
  void make_current() const override;
  int exchange_current() override;
  CaptureMode exchange_capture_mode(CaptureMode mode) override {
    return cuda_graph::exchange_mode(mode);
  }
  void restore_current(int previous) noexcept override;

  StreamImpl& default_stream() noexcept override { return *default_stream_; }
  StreamImpl& acquire_stream() override;
  void release_stream(StreamImpl& stream) noexcept override;
  EventImpl& acquire_event() override;
  void release_event(EventImpl& event) noexcept override;
  std::shared_ptr<StreamImpl> native_stream(void* native) override;

  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr, std::size_t bytes) noexcept override;
  void* allocate_async(std::size_t bytes, StreamImpl& stream) override;
  void deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
  void* allocate_pinned(std::size_t bytes) override;
  void deallocate_pinned(void* ptr) noexcept override;
  bool is_pinned(const void* ptr, std::size_t bytes) override;
  void set_async_release_threshold(std::size_t bytes) override;
  std::size_t trim_async_pool(std::size_t keep_bytes) noexcept override;
  std::size_t async_pool_reserved_bytes() override;

  void mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
  void mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                  std::span<EventImpl* const> after) noexcept override;
  void register_pool_segment(const void* ptr, std::size_t bytes) noexcept override;
  void unregister_pool_segment(const void* ptr) noexcept override;

  // Virtual memory management (cuda_vmm.cpp), probed on first use.
  std::size_t vmm_granularity() const noexcept override;
  void* reserve_address_range(std::size_t bytes) override;
  void release_address_range(void* base, std::size_t bytes) noexcept override;
  void map_memory(void* ptr, std::size_t bytes) override;
  void unmap_memory(void* ptr, std::size_t bytes) noexcept override;

  const std::string& display_name() const noexcept { return name_; }

  /// The one check for CUDA calls. `doing` is a string literal or a callable returning
  /// std::string, so that the success path builds no string.
  template <class Doing>
  void check(cudaError_t err, const char* call, const Doing& doing,
             SourceLocation where = SourceLocation::current()) {
    if (err == cudaSuccess) return;  // the failure path calls a [[noreturn]]: kept cold
    if constexpr (std::is_invocable_r_v<std::string, const Doing&>) {
      fail(err, call, doing(), where);
    } else {
      fail(err, call, std::string(doing), where);
    }
  }
  /// `check` for a call that waits for work: once the runtime has unloaded (process exit) there
  /// is no work left to wait for, and nothing to say.
  template <class Doing>
  void check_wait(cudaError_t err, const char* call, const Doing& doing,
                  SourceLocation where = SourceLocation::current()) {
    if (err == cudaErrorCudartUnloading) {
      health_.store(Health::unloaded, std::memory_order_release);
      return;
    }
    check(err, call, doing, where);
  }
  /// Runs `fn` for a noexcept path (a destructor, a free): a failure is reported, not thrown;
  /// nothing is reported for a device already reported lost, or after the runtime unloaded.
  template <class Fn>
  void contain(std::string_view what, Fn&& fn) noexcept {
    if (!usable()) return;
    try {
      std::forward<Fn>(fn)();
    } catch (const CudaError& e) {
      if (usable()) report_error(e.what());
    } catch (const std::exception& e) {
      report(what, e.what());
    } catch (...) {
      report(what, "unknown exception");
    }
  }
  /// False once a sticky error made the device unusable, or once the runtime has unloaded.
  bool usable() const noexcept { return health_.load(std::memory_order_acquire) == Health::ok; }

 private:
  enum class Health : std::uint8_t { ok, lost, unloaded };

  [[noreturn]] void fail(cudaError_t err, const char* call, std::string doing,
                         SourceLocation where);
  [[noreturn]] void throw_out_of_memory(cudaError_t err, const char* call, std::size_t bytes,
                                        bool host);
  CudaStream& own_stream(StreamImpl& stream, const char* call) const;
  bool host_pinned(const void* ptr);  // device current

  CudaVmm& vmm() const noexcept {
    // The probe asks the driver about the device by ordinal: no context needs to be current.
    std::call_once(vmm_once_, [this] { vmm_.emplace(ordinal_); });
    return *vmm_;
  }

  const int ordinal_;
  std::string name_;
  bool memory_pools_supported_ = false;
  std::atomic<Health> health_{Health::ok};
  std::atomic<bool> lost_reported_{false};
  NvtxMemory nvtx_;
  mutable std::once_flag vmm_once_;
  mutable std::optional<CudaVmm> vmm_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<CudaStream>> streams_;
  std::vector<CudaStream*> free_streams_;
  std::vector<std::unique_ptr<CudaEvent>> events_;
  std::vector<CudaEvent*> free_events_;
  std::unique_ptr<CudaStream> default_stream_;
};

/// The backend's scope guard: `DeviceGuard` without the virtual calls.
class Current {
 public:
  explicit Current(CudaDevice& device) : device_(device), previous_(device.exchange_current()) {}
  Current(const Current&) = delete;
  Current& operator=(const Current&) = delete;
  ~Current() {
    if (previous_ >= 0) device_.restore_current(previous_);
  }

 private:
  CudaDevice& device_;
  int previous_;
};

// ---- virtual memory management (cuda_vmm.cpp) -------------------------------------------------

std::size_t CudaDevice::vmm_granularity() const noexcept { return vmm().granularity(); }

void* CudaDevice::reserve_address_range(std::size_t bytes) {
  Current current(*this);
  return vmm().reserve(bytes);
}

void CudaDevice::release_address_range(void* base, std::size_t bytes) noexcept {
  contain("cuMemAddressFree", [&] {
    Current current(*this);
    vmm().release(base, bytes);
  });
}

void CudaDevice::map_memory(void* ptr, std::size_t bytes) {
  Current current(*this);
  vmm().map(ptr, bytes);
}

void CudaDevice::unmap_memory(void* ptr, std::size_t bytes) noexcept {
  contain("cuMemUnmap", [&] {
    Current current(*this);
    vmm().unmap(ptr, bytes);
  });
}

void CudaDevice::fail(cudaError_t err, const char* call, std::string doing, SourceLocation where) {
  if (err == cudaErrorCudartUnloading) {
    health_.store(Health::unloaded, std::memory_order_release);
  } else if (is_sticky_cuda_error(static_cast<int>(err))) {
    // Every later call returns the same error; the context cannot be recovered.
    Health expected = Health::ok;
    health_.compare_exchange_strong(expected, Health::lost, std::memory_order_acq_rel);
    if (!lost_reported_.exchange(true, std::memory_order_acq_rel)) {
      report_error(name_ + " is lost: " + call + " failed with " + cudaGetErrorName(err) + " (" +
                   cudaGetErrorString(err) + ") while " + doing +
                   ". The CUDA context is corrupt and the process must restart to use the GPU "
                   "again; gpulife skips CUDA in later frees and destructors.");
    }
  } else {
    clear_if_pending(err);
  }
  throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), call, std::move(doing), where);
}

// ---- CudaEvent ---------------------------------------------------------------------------------

CudaEvent::~CudaEvent() {
  device_.contain("destroying a CUDA event", [&] {
    device_.check(cudaEventDestroy(handle_), "cudaEventDestroy",
                  [&] { return "destroying an event of " + device_.display_name(); });
  });
}

bool CudaEvent::query() {
  if (!recorded() || !device_.usable()) return true;  // a lost device runs nothing any more
  Current current(device_);
  const cudaError_t err = cudaEventQuery(handle_);
  if (err == cudaErrorNotReady) {
    // Not an error. The runtime may still keep it as the thread's last error (PyTorch's
    // CUDAEvent::query clears it for the same reason); only then is it cleared.
    clear_if_pending(err);
    return false;
  }
  device_.check_wait(err, "cudaEventQuery",
                     [&] { return "querying an event of " + device_.display_name(); });
  return true;
}

void CudaEvent::synchronize() {
  if (!recorded() || !device_.usable()) return;
  Current current(device_);
  device_.check_wait(cudaEventSynchronize(handle_), "cudaEventSynchronize", [&] {
    return "waiting on the host for an event of " + device_.display_name();
  });
}

// ---- CudaStream --------------------------------------------------------------------------------

CudaStream::~CudaStream() {
  if (!owned_) return;
  device_.contain("destroying a CUDA stream", [&] {
    // Work still queued does not block this: CUDA releases the stream once it has drained.
    device_.check(cudaStreamDestroy(handle_), "cudaStreamDestroy",
                  [&] { return "destroying " + describe(); });
  });
}

DeviceImpl& CudaStream::device() noexcept { return device_; }

std::string CudaStream::describe() const {
  return "stream " + std::to_string(id_) + " of " + device_.display_name();
}

void CudaStream::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  Current current(device_);
  device_.check(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), handle_), "cudaMemcpyAsync", [&] {
    return "copying " + format_bytes(bytes) + " " + to_text(kind) + " from " + format_pointer(src) +
           " to " + format_pointer(dst) + " on " + describe();
  });
  // The interface promises that a copy to pageable memory has completed when it returns; the
  // runtime reference says such a copy only "might be synchronous" (API synchronization
  // behavior), so wait for it. (From pageable memory the runtime stages the bytes before it
  // returns, which is what the interface promises there.)
  if (kind == CopyKind::device_to_host && !device_.is_pinned(dst, bytes)) {
    device_.check_wait(cudaStreamSynchronize(handle_), "cudaStreamSynchronize", [&] {
      return "waiting for a copy of " + format_bytes(bytes) + " to pageable memory at " +
             format_pointer(dst) + " on " + describe();
    });
  }
}

void CudaStream::memset(void* dst, int value, std::size_t bytes) {
  Current current(device_);
  device_.check(cudaMemsetAsync(dst, value, bytes, handle_), "cudaMemsetAsync", [&] {
    return "setting " + format_bytes(bytes) + " at " + format_pointer(dst) + " on " + describe();
  });
}

void CudaStream::host_callback(std::function<void()> fn) {
  Current current(device_);
  auto owned = std::make_unique<std::function<void()>>(std::move(fn));
  device_.check(cudaLaunchHostFunc(handle_, run_host_callback, owned.get()), "cudaLaunchHostFunc",
                [&] { return "queueing a host callback on " + describe(); });
  // Queued: the trampoline owns it now. (CUDA skips host functions once the context has failed;
  // the function object then leaks, as the context does.)
  (void)owned.release();
}

void CudaStream::record(EventImpl& event) {
  auto& cuda_event = static_cast<CudaEvent&>(event);
  if (!device_.usable()) return;  // nothing runs on a lost device: nothing to mark
  Current current(device_);
  device_.check(cudaEventRecord(cuda_event.handle(), handle_), "cudaEventRecord",
                [&] { return "recording an event on " + describe(); });
  cuda_event.mark_recorded();
}

void CudaStream::begin_capture(CaptureMode mode) {
  Current current(device_);
  cuda_graph::begin_capture(handle_, mode, describe());
}

std::unique_ptr<GraphImpl> CudaStream::end_capture() {
  Current current(device_);
  return cuda_graph::end_capture(device_, handle_, describe());
}

CaptureInfo CudaStream::capture_info() {
  Current current(device_);
  return cuda_graph::capture_info(handle_, describe());
}

void CudaStream::wait(EventImpl& event) {
  auto& cuda_event = static_cast<CudaEvent&>(event);
  if (!cuda_event.recorded()) return;  // nothing captured since it left the pool: no dependency
  if (!device_.usable()) return;
  Current current(device_);
  device_.check(cudaStreamWaitEvent(handle_, cuda_event.handle(), 0), "cudaStreamWaitEvent",
                [&] { return "making " + describe() + " wait for an event"; });
}

void CudaStream::synchronize() {
  if (!device_.usable()) return;  // the loss was reported (and thrown) where it was found
  Current current(device_);
  device_.check_wait(cudaStreamSynchronize(handle_), "cudaStreamSynchronize",
                     [&] { return "waiting on the host for " + describe(); });
}

bool CudaStream::query() {
  if (!device_.usable()) return true;
  Current current(device_);
  const cudaError_t err = cudaStreamQuery(handle_);
  if (err == cudaErrorNotReady) {
    clear_if_pending(err);  // not an error; see CudaEvent::query
    return false;
  }
  device_.check_wait(err, "cudaStreamQuery", [&] { return "querying " + describe(); });
  return true;
}

void CudaStream::launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                    std::function<void()> body, KernelWork work) {
  (void)ranges, (void)body, (void)work;
  throw std::logic_error("launch_host_kernel: kernel " + std::string(name) +
                         " is host code, which only the simulated device runs; on " +
                         device_.display_name() +
                         " launch it with for_each_index from a translation unit built by nvcc");
}

// ---- CudaDevice --------------------------------------------------------------------------------

CudaDevice::CudaDevice(int ordinal) : ordinal_(ordinal) {
  const auto opening = [&] { return "opening cuda:" + std::to_string(ordinal_); };
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount", opening);
  if (ordinal_ < 0 || ordinal_ >= count) {
    throw_cuda_error(static_cast<int>(cudaErrorInvalidDevice), "cudaErrorInvalidDevice",
                     "Device::cuda",
                     opening() + ": the process sees " + std::to_string(count) + " CUDA device" +
                         (count == 1 ? "" : "s"));
  }
  {
    // Creates the primary context (cudaSetDevice initialises it since CUDA 12), so a device that
    // cannot be used (prohibited, exclusive and taken) fails here; the caller's device stays.
    Current current(*this);
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, ordinal_), "cudaGetDeviceProperties", opening);
    name_ = "cuda:" + std::to_string(ordinal_) + " (" + prop.name + ", " +
            format_bytes(prop.totalGlobalMem) + ")";
    int pools = 0;
    check(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ordinal_),
          "cudaDeviceGetAttribute", opening);
    memory_pools_supported_ = pools != 0;
  }
  nvtx_.enable();  // after the runtime's initialisation, as compute-sanitizer requires
  default_stream_ = std::make_unique<CudaStream>(*this, legacy_default_stream(), false);
}

CudaDevice::~CudaDevice() {
  close_pinned_host_cache();
  // Streams and events may still have work queued (stream-ordered frees above all): let it
  // finish before the handles go.
  contain("closing a CUDA device", [&] {
    Current current(*this);
    check_wait(cudaDeviceSynchronize(), "cudaDeviceSynchronize",
               [&] { return "closing " + name_ + ": waiting for its queued work"; });
  });
  events_.clear();
  streams_.clear();
}

void CudaDevice::make_current() const {
  auto& self = const_cast<CudaDevice&>(*this);  // the checks record the device's health
  int current = -1;
  self.check(cudaGetDevice(&current), "cudaGetDevice",
             "finding the calling thread's current device");
  if (current == ordinal_) return;
  self.check(cudaSetDevice(ordinal_), "cudaSetDevice", [&] { return "making " + name_ + " current"; });
}

int CudaDevice::exchange_current() {
  // Compares first (as PyTorch's c10::cuda::ExchangeDevice does): cudaGetDevice is a
  // thread-local read, and a thread that already uses this device pays no cudaSetDevice.
  int current = -1;
  check(cudaGetDevice(&current), "cudaGetDevice", "finding the calling thread's current device");
  if (current == ordinal_) return -1;
  check(cudaSetDevice(ordinal_), "cudaSetDevice", [&] { return "making " + name_ + " current"; });
  return current;
}

void CudaDevice::restore_current(int previous) noexcept {
  if (previous < 0 || previous == ordinal_) return;
  if (health_.load(std::memory_order_acquire) == Health::unloaded) return;
  // As PyTorch's MaybeSetDevice: a thread that never used `previous` (cudaGetDevice says 0 on a
  // fresh thread) must not get a context on it because gpulife borrowed the thread.
  if (!has_primary_context(previous)) return;
  if (const cudaError_t err = cudaSetDevice(previous); err != cudaSuccess) {
    clear_if_pending(err);
    report(name_ + ": restoring the caller's current device cuda:" + std::to_string(previous),
           cudaGetErrorName(err));
  }
}

MemoryInfo CudaDevice::memory_info() {
  Current current(*this);
  MemoryInfo info;
  check(cudaMemGetInfo(&info.free_bytes, &info.total_bytes), "cudaMemGetInfo",
        [&] { return "reading the memory use of " + name_; });
  return info;
}

void CudaDevice::synchronize() {
  if (!usable()) return;  // the loss was reported (and thrown) where it was found
  Current current(*this);
  check_wait(cudaDeviceSynchronize(), "cudaDeviceSynchronize",
             [&] { return "waiting on the host for all work on " + name_; });
}

StreamImpl& CudaDevice::acquire_stream() {
  {
    std::scoped_lock lock(pool_mutex_);
    if (!free_streams_.empty()) {
      CudaStream* stream = free_streams_.back();
      free_streams_.pop_back();
      return *stream;
    }
  }
  // Created outside the lock: stream creation can take a while and needs no pool state.
  Current current(*this);
  cudaStream_t handle = nullptr;
  // Non-blocking: gpulife's streams must not serialise with the legacy default stream, which
  // other code in the process may use freely.
  check(cudaStreamCreateWithFlags(&handle, cudaStreamNonBlocking), "cudaStreamCreateWithFlags",
        [&] { return "creating a stream on " + name_; });
  std::unique_ptr<CudaStream> stream;
  try {
    stream = std::make_unique<CudaStream>(*this, handle, true);
  } catch (...) {
    contain("destroying a CUDA stream", [&] {
      check(cudaStreamDestroy(handle), "cudaStreamDestroy",
            [&] { return "dropping a new stream of " + name_; });
    });
    throw;
  }
  CudaStream& result = *stream;
  std::scoped_lock lock(pool_mutex_);
  // Room for every stream in the free list, so that release_stream (noexcept) never allocates.
  free_streams_.reserve(streams_.size() + 1);
  streams_.push_back(std::move(stream));
  return result;
}

void CudaDevice::release_stream(StreamImpl& stream) noexcept {
  std::scoped_lock lock(pool_mutex_);
  free_streams_.push_back(&static_cast<CudaStream&>(stream));  // capacity reserved on creation
}

EventImpl& CudaDevice::acquire_event() {
  {
    std::scoped_lock lock(pool_mutex_);
    if (!free_events_.empty()) {
      CudaEvent* event = free_events_.back();
      free_events_.pop_back();
      return *event;
    }
  }
  Current current(*this);
  cudaEvent_t handle = nullptr;
  // Without timing an event is cheapest to record, query and wait on (cudaEventCreateWithFlags).
  check(cudaEventCreateWithFlags(&handle, cudaEventDisableTiming), "cudaEventCreateWithFlags",
        [&] { return "creating an event on " + name_; });
  std::unique_ptr<CudaEvent> event;
  try {
    event = std::make_unique<CudaEvent>(*this, handle);
  } catch (...) {
    contain("destroying a CUDA event", [&] {
      check(cudaEventDestroy(handle), "cudaEventDestroy",
            [&] { return "dropping a new event of " + name_; });
    });
    throw;
  }
  CudaEvent& result = *event;
  std::scoped_lock lock(pool_mutex_);
  free_events_.reserve(events_.size() + 1);  // release_event (noexcept) never allocates
  events_.push_back(std::move(event));
  return result;
}

void CudaDevice::release_event(EventImpl& event) noexcept {
  auto& cuda_event = static_cast<CudaEvent&>(event);
  cuda_event.forget();
  std::scoped_lock lock(pool_mutex_);
  free_events_.push_back(&cuda_event);  // capacity reserved on creation
}

std::shared_ptr<StreamImpl> CudaDevice::native_stream(void* native) {
  const auto handle = static_cast<cudaStream_t>(native);
  if (handle == legacy_default_stream()) {
    // gpulife's own view of it: no owner, the device keeps it.
    return std::shared_ptr<StreamImpl>(std::shared_ptr<void>(), default_stream_.get());
  }
  if (handle == nullptr) {
    throw std::invalid_argument(
        "stream: the null cudaStream_t is ambiguous (legacy or per-thread default stream, "
        "depending on how the caller was compiled); pass cudaStreamLegacy or cudaStreamPerThread");
  }
  if (handle != per_thread_default_stream()) {
    Current current(*this);
    int device = -1;
    if (const cudaError_t err = cudaStreamGetDevice(handle, &device); err != cudaSuccess) {
      clear_if_pending(err);
      throw std::invalid_argument("stream: " + format_pointer(native) +
                                  " is not a CUDA stream (cudaStreamGetDevice: " +
                                  cudaGetErrorName(err) + ")");
    }
    if (device != ordinal_) {
      throw std::invalid_argument("stream: " + format_pointer(native) + " belongs to cuda:" +
                                  std::to_string(device) + ", not to " + name_);
    }
  }
  return std::make_shared<CudaStream>(*this, handle, false);
}

void CudaDevice::throw_out_of_memory(cudaError_t err, const char* call, std::size_t bytes,
                                     bool host) {
  // cudaErrorMemoryAllocation is not sticky; clear it so that the application does not find it
  // as its own pending error.
  clear_if_pending(err);
  std::string message = std::string("out of memory: ") + call + " of " + format_bytes(bytes) +
                        (host ? " of page-locked host memory for " : " on ") + name_ +
                        (host ? " (device memory: " : ": ");
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  if (const cudaError_t info = cudaMemGetInfo(&free_bytes, &total_bytes); info == cudaSuccess) {
    message += format_bytes(total_bytes - free_bytes) + " in use, " + format_bytes(free_bytes) +
               " free of " + format_bytes(total_bytes);
  } else {
    clear_if_pending(info);
    message += std::string("use unknown, cudaMemGetInfo failed with ") + cudaGetErrorName(info);
  }
  if (host) message += ")";
  throw OutOfMemoryError(std::move(message), bytes);
}

CudaStream& CudaDevice::own_stream(StreamImpl& stream, const char* call) const {
  if (&stream.device() != this) {
    throw std::invalid_argument(std::string("stream: ") + call + " on " + name_ +
                                " with a stream of " + stream.device().name());
  }
  return static_cast<CudaStream&>(stream);
}

void* CudaDevice::allocate(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  Current current(*this);
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory(err, "cudaMalloc", bytes, false);
  check(err, "cudaMalloc", [&] { return "allocating " + format_bytes(bytes) + " on " + name_; });
  return ptr;
}

void CudaDevice::deallocate(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  contain("freeing device memory (cudaFree)", [&] {
    const auto doing = [&] {
      return "freeing " + format_bytes(bytes) + " at " + format_pointer(ptr) + " on " + name_;
    };
    Current current(*this);
    // The interface promises that the free waits for the device. cudaFree of cudaMalloc memory
    // only "may perform implicit synchronization" (CUDA 13 cuda_runtime_api.h), so wait
    // explicitly; when cudaFree does synchronize, the second wait finds the device idle.
    check_wait(cudaDeviceSynchronize(), "cudaDeviceSynchronize", doing);
    if (!usable()) return;
    check(cudaFree(ptr), "cudaFree", doing);
  });
}

void* CudaDevice::allocate_async(std::size_t bytes, StreamImpl& stream) {
  if (bytes == 0) return nullptr;
  CudaStream& cuda_stream = own_stream(stream, "cudaMallocAsync");
  Current current(*this);
  void* ptr = nullptr;
  // From the device's current memory pool (its default pool unless the application set one).
  const cudaError_t err = cudaMallocAsync(&ptr, bytes, cuda_stream.handle());
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory(err, "cudaMallocAsync", bytes, false);
  check(err, "cudaMallocAsync", [&] {
    return "allocating " + format_bytes(bytes) + " on stream " + std::to_string(stream.id()) +
           " of " + name_ +
           (memory_pools_supported_ ? ""
                                    : " (the device does not support stream-ordered allocation:"
                                      " cudaDevAttrMemoryPoolsSupported is 0)");
  });
  return ptr;
}

void CudaDevice::deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  if (ptr == nullptr) return;
  contain("freeing device memory in stream order (cudaFreeAsync)", [&] {
    CudaStream& cuda_stream = own_stream(stream, "cudaFreeAsync");
    Current current(*this);
    check(cudaFreeAsync(ptr, cuda_stream.handle()), "cudaFreeAsync", [&] {
      return "freeing " + format_bytes(bytes) + " at " + format_pointer(ptr) + " on stream " +
             std::to_string(stream.id()) + " of " + name_;
    });
  });
}

void* CudaDevice::allocate_pinned(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  Current current(*this);
  void* ptr = nullptr;
  const cudaError_t err = cudaMallocHost(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory(err, "cudaMallocHost", bytes, true);
  check(err, "cudaMallocHost", [&] {
    return "allocating " + format_bytes(bytes) + " of page-locked host memory for " + name_;
  });
  return ptr;
}

void CudaDevice::deallocate_pinned(void* ptr) noexcept {
  if (ptr == nullptr) return;
  contain("freeing page-locked host memory (cudaFreeHost)", [&] {
    Current current(*this);
    check(cudaFreeHost(ptr), "cudaFreeHost", [&] {
      return "freeing page-locked host memory at " + format_pointer(ptr) + " for " + name_;
    });
  });
}

void CudaDevice::set_async_release_threshold(std::size_t bytes) {
  Current current(*this);
  cudaMemPool_t pool = nullptr;
  // The pool cudaMallocAsync draws from: the default one unless the application set another.
  check(cudaDeviceGetMemPool(&pool, ordinal_), "cudaDeviceGetMemPool",
        [&] { return "finding the current memory pool of " + name_; });
  auto threshold = static_cast<std::uint64_t>(bytes);
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
        "cudaMemPoolSetAttribute", [&] {
          return "setting the release threshold of " + name_ + "'s current memory pool to " +
                 format_bytes(bytes);
        });
}

std::size_t CudaDevice::async_pool_reserved_bytes() {
  Current current(*this);
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetMemPool(&pool, ordinal_), "cudaDeviceGetMemPool",
        [&] { return "finding the current memory pool of " + name_; });
  std::uint64_t reserved = 0;
  check(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReservedMemCurrent, &reserved),
        "cudaMemPoolGetAttribute",
        [&] { return "reading the reserved memory of " + name_ + "'s current memory pool"; });
  return static_cast<std::size_t>(reserved);
}

std::size_t CudaDevice::trim_async_pool(std::size_t keep_bytes) noexcept {
  std::size_t released = 0;
  contain("trimming the stream-ordered memory pool", [&] {
    Current current(*this);
    // Frees made with cudaFreeAsync reach the pool when their streams do.
    check_wait(cudaDeviceSynchronize(), "cudaDeviceSynchronize",
               [&] { return "waiting for the stream-ordered frees on " + name_; });
    if (!usable()) return;
    const std::size_t before = async_pool_reserved_bytes();
    cudaMemPool_t pool = nullptr;
    check(cudaDeviceGetMemPool(&pool, ordinal_), "cudaDeviceGetMemPool",
          [&] { return "finding the current memory pool of " + name_; });
    check(cudaMemPoolTrimTo(pool, keep_bytes), "cudaMemPoolTrimTo", [&] {
      return "giving the unused memory of " + name_ + "'s memory pool back, keeping " +
             format_bytes(keep_bytes);
    });
    const std::size_t after = async_pool_reserved_bytes();
    released = before > after ? before - after : 0;
  });
  return released;
}

bool CudaDevice::host_pinned(const void* ptr) {
  cudaPointerAttributes attributes{};
  if (const cudaError_t err = cudaPointerGetAttributes(&attributes, ptr); err != cudaSuccess) {
    // Not a pointer the runtime knows: ordinary pageable memory (older runtimes say so with
    // cudaErrorInvalidValue). Only that error is cleared.
    clear_if_pending(err);
    return false;
  }
  // Mapped and managed memory are not pageable either: copies to them are asynchronous.
  return attributes.type != cudaMemoryTypeUnregistered;
}

bool CudaDevice::is_pinned(const void* ptr, std::size_t bytes) {
  (void)bytes;  // a registration covers whole allocations; the first byte decides
  // With this device current: on a thread without a current context the runtime would
  // otherwise create one on device 0 to answer.
  Current current(*this);
  return host_pinned(ptr);
}

void CudaDevice::mark_allocated(const void* ptr, std::size_t bytes, StreamImpl& stream) noexcept {
  (void)stream;
  nvtx_.register_block(ptr, bytes);
}

void CudaDevice::mark_freed(const void* ptr, std::size_t bytes, StreamImpl& stream,
                            std::span<EventImpl* const> after) noexcept {
  (void)bytes, (void)stream, (void)after;
  // In host order, as RMM does: the sanitizer checks a kernel against the registrations of the
  // moment it is launched, so a kernel launched after the release is reported.
  nvtx_.unregister_block(ptr);
}

void CudaDevice::register_pool_segment(const void* ptr, std::size_t bytes) noexcept {
  nvtx_.register_segment(ptr, bytes);
}

void CudaDevice::unregister_pool_segment(const void* ptr) noexcept {
  nvtx_.unregister_segment(ptr);
}

}  // namespace

std::shared_ptr<DeviceImpl> make_cuda_device(int ordinal) {
  // One device object per ordinal while any handle lives: two objects on one GPU would reject
  // each other's streams and events, and each destructor would synchronise the whole device.
  static std::mutex mutex;
  static std::vector<std::weak_ptr<CudaDevice>> devices;
  std::scoped_lock lock(mutex);
  if (ordinal >= 0 && static_cast<std::size_t>(ordinal) < devices.size()) {
    if (auto device = devices[static_cast<std::size_t>(ordinal)].lock()) return device;
  }
  auto device = std::make_shared<CudaDevice>(ordinal);  // validates the ordinal
  if (static_cast<std::size_t>(ordinal) >= devices.size()) {
    devices.resize(static_cast<std::size_t>(ordinal) + 1);
  }
  devices[static_cast<std::size_t>(ordinal)] = device;
  return device;
}

CudaProbe probe_cuda_runtime() noexcept {
  CudaProbe probe;
  probe.compiled = true;
  try {
    int count = 0;
    // No driver (35), no device (100), a broken installation (3, 999, 803, ...): all of them
    // mean "not available", never a crash.
    if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
      clear_if_pending(err);
      probe.reason = std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
      return probe;
    }
    probe.device_count = count;
    if (count <= 0) {
      probe.reason = "cudaErrorNoDevice: the CUDA runtime reports no device";
      return probe;
    }
    probe.available = true;
  } catch (...) {
    // Only the reason's string can throw; without it the probe still says "not available".
    probe.available = false;
  }
  return probe;
}

}  // namespace gpulife::detail
