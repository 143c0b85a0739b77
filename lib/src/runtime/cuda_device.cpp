// SPDX-License-Identifier: Apache-2.0
// The CUDA backend: the device interface on the CUDA runtime API. It is host code built by the
// host compiler; kernels come from nvcc translation units through `for_each_index`.

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
#include "runtime/backends.hpp"
#include "runtime/cuda_vmm.hpp"
#include "runtime/stream_ids.hpp"

namespace gpulife::detail {
namespace {

// ---- error checking ----------------------------------------------------------------------------

[[noreturn]] void fail(cudaError_t err, const char* call, std::string doing, SourceLocation where) {
  // The runtime also keeps the error as the thread's "last error". Clear it: gpulife reports it
  // here, and a later cudaGetLastError (the launch check in for_each_index) must not see it
  // again. Sticky errors (a dead context) survive the clear and fail the next call anyway.
  (void)cudaGetLastError();
  throw_cuda_error(static_cast<int>(err), cudaGetErrorName(err), call, std::move(doing), where);
}

/// The one check for CUDA calls. `doing` is a string literal or a callable returning
/// std::string, so that the success path builds no string.
template <class Doing>
void check(cudaError_t err, const char* call, const Doing& doing,
           SourceLocation where = SourceLocation::current()) {
  if (err == cudaSuccess) return;  // the failure path calls a [[noreturn]]: compilers keep it cold
  if constexpr (std::is_invocable_r_v<std::string, const Doing&>) {
    fail(err, call, doing(), where);
  } else {
    fail(err, call, std::string(doing), where);
  }
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

/// Runs `fn` for a noexcept path (a destructor, a free): a failure is reported, not thrown.
template <class Fn>
void contain(std::string_view what, Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
  } catch (const CudaError& e) {
    // At process exit the runtime may be unloaded before static objects that hold a device are
    // destroyed; everything they owned is gone with it, so there is nothing to report.
    if (e.code() != static_cast<int>(cudaErrorCudartUnloading)) report_error(e.what());
  } catch (const std::exception& e) {
    report(what, e.what());
  } catch (...) {
    report(what, "unknown exception");
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

// The legacy default stream by its explicit handle rather than 0: the handle escapes through
// native_handle() into nvcc translation units, where 0 means the per-thread default stream if
// they are built with --default-stream per-thread.
cudaStream_t legacy_default_stream() noexcept {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wold-style-cast"  // the macro is a C cast in driver_types.h
  return cudaStreamLegacy;
#pragma GCC diagnostic pop
}

// Runs on a thread of the CUDA driver. CUDA calls from here are forbidden, so a failure can
// only be reported; an exception must not unwind into the driver.
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
  void launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                          std::function<void()> body) override;

  cudaStream_t handle() const noexcept { return handle_; }

 private:
  CudaDevice& device_;
  const cudaStream_t handle_;
  const bool owned_;  // false for the legacy default stream, which CUDA owns
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

  StreamImpl& default_stream() noexcept override { return *default_stream_; }
  StreamImpl& acquire_stream() override;
  void release_stream(StreamImpl& stream) noexcept override;
  EventImpl& acquire_event() override;
  void release_event(EventImpl& event) noexcept override;

  void* allocate(std::size_t bytes) override;
  void deallocate(void* ptr, std::size_t bytes) noexcept override;
  void* allocate_async(std::size_t bytes, StreamImpl& stream) override;
  void deallocate_async(void* ptr, std::size_t bytes, StreamImpl& stream) noexcept override;
  void* allocate_pinned(std::size_t bytes) override;
  void deallocate_pinned(void* ptr) noexcept override;
  bool is_pinned(const void* ptr, std::size_t bytes) override;
  void set_async_release_threshold(std::size_t bytes) override;

  // Virtual memory management (cuda_vmm.cpp), probed on first use.
  std::size_t vmm_granularity() const noexcept override { return vmm().granularity(); }
  void* reserve_address_range(std::size_t bytes) override {
    make_current();
    return vmm().reserve(bytes);
  }
  void release_address_range(void* base, std::size_t bytes) noexcept override {
    vmm().release(base, bytes);
  }
  void map_memory(void* ptr, std::size_t bytes) override {
    make_current();
    vmm().map(ptr, bytes);
  }
  void unmap_memory(void* ptr, std::size_t bytes) noexcept override { vmm().unmap(ptr, bytes); }

  /// Makes this device current on the calling thread. Compares first (as PyTorch's
  /// c10::cuda::SetDevice does): cudaGetDevice is a thread-local read, and a thread that
  /// already uses this device pays no cudaSetDevice. Unlike a cached flag it stays right when
  /// the application switches devices itself.
  void make_current() const override;
  const std::string& display_name() const noexcept { return name_; }

 private:
  [[noreturn]] void throw_out_of_memory(const char* call, std::size_t bytes, bool host) const;
  CudaStream& own_stream(StreamImpl& stream, const char* call) const;

  CudaVmm& vmm() const noexcept {
    std::call_once(vmm_once_, [this] {
      try {
        make_current();
      } catch (...) {
        // the probe then finds no support: the pool uses segments
      }
      vmm_.emplace(ordinal_);
    });
    return *vmm_;
  }

  const int ordinal_;
  std::string name_;
  bool memory_pools_supported_ = false;
  mutable std::once_flag vmm_once_;
  mutable std::optional<CudaVmm> vmm_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<CudaStream>> streams_;
  std::vector<CudaStream*> free_streams_;
  std::vector<std::unique_ptr<CudaEvent>> events_;
  std::vector<CudaEvent*> free_events_;
  std::unique_ptr<CudaStream> default_stream_;
};

// ---- CudaEvent ---------------------------------------------------------------------------------

CudaEvent::~CudaEvent() {
  contain("destroying a CUDA event", [&] {
    check(cudaEventDestroy(handle_), "cudaEventDestroy",
          [&] { return "destroying an event of " + device_.display_name(); });
  });
}

bool CudaEvent::query() {
  if (!recorded()) return true;
  device_.make_current();
  const cudaError_t err = cudaEventQuery(handle_);
  if (err == cudaErrorNotReady) {
    // Not an error, but the runtime may still keep it as the thread's last error (PyTorch's
    // CUDAEvent::query clears it for the same reason).
    (void)cudaGetLastError();
    return false;
  }
  check(err, "cudaEventQuery", [&] { return "querying an event of " + device_.display_name(); });
  return true;
}

void CudaEvent::synchronize() {
  if (!recorded()) return;
  device_.make_current();
  check(cudaEventSynchronize(handle_), "cudaEventSynchronize",
        [&] { return "waiting on the host for an event of " + device_.display_name(); });
}

// ---- CudaStream --------------------------------------------------------------------------------

CudaStream::~CudaStream() {
  if (!owned_) return;
  contain("destroying a CUDA stream", [&] {
    // Work still queued does not block this: CUDA releases the stream once it has drained.
    check(cudaStreamDestroy(handle_), "cudaStreamDestroy", [&] {
      return "destroying stream " + std::to_string(id_) + " of " + device_.display_name();
    });
  });
}

DeviceImpl& CudaStream::device() noexcept { return device_; }

void CudaStream::copy(void* dst, const void* src, std::size_t bytes, CopyKind kind) {
  device_.make_current();
  // Pageable host memory behaves as the sim assumes: a copy from it returns once the source has
  // been staged, a copy to it once the copy has completed (CUDA runtime API reference, "API
  // synchronization behavior").
  check(cudaMemcpyAsync(dst, src, bytes, to_cuda(kind), handle_), "cudaMemcpyAsync", [&] {
    return "copying " + format_bytes(bytes) + " " + to_text(kind) + " from " + format_pointer(src) +
           " to " + format_pointer(dst) + " on stream " + std::to_string(id_) + " of " +
           device_.display_name();
  });
}

void CudaStream::memset(void* dst, int value, std::size_t bytes) {
  device_.make_current();
  check(cudaMemsetAsync(dst, value, bytes, handle_), "cudaMemsetAsync", [&] {
    return "setting " + format_bytes(bytes) + " at " + format_pointer(dst) + " on stream " +
           std::to_string(id_) + " of " + device_.display_name();
  });
}

void CudaStream::host_callback(std::function<void()> fn) {
  device_.make_current();
  auto owned = std::make_unique<std::function<void()>>(std::move(fn));
  const cudaError_t err = cudaLaunchHostFunc(handle_, run_host_callback, owned.get());
  check(err, "cudaLaunchHostFunc", [&] {
    return "queueing a host callback on stream " + std::to_string(id_) + " of " +
           device_.display_name();
  });
  // Queued: the trampoline owns it now. (CUDA skips host functions once the context has failed;
  // the function object then leaks, as the context does.)
  (void)owned.release();
}

void CudaStream::record(EventImpl& event) {
  auto& cuda_event = static_cast<CudaEvent&>(event);
  device_.make_current();
  check(cudaEventRecord(cuda_event.handle(), handle_), "cudaEventRecord", [&] {
    return "recording an event on stream " + std::to_string(id_) + " of " + device_.display_name();
  });
  cuda_event.mark_recorded();
}

void CudaStream::wait(EventImpl& event) {
  auto& cuda_event = static_cast<CudaEvent&>(event);
  if (!cuda_event.recorded()) return;  // nothing captured since it left the pool: no dependency
  device_.make_current();
  check(cudaStreamWaitEvent(handle_, cuda_event.handle(), 0), "cudaStreamWaitEvent", [&] {
    return "making stream " + std::to_string(id_) + " of " + device_.display_name() +
           " wait for an event";
  });
}

void CudaStream::synchronize() {
  device_.make_current();
  check(cudaStreamSynchronize(handle_), "cudaStreamSynchronize", [&] {
    return "waiting on the host for stream " + std::to_string(id_) + " of " +
           device_.display_name();
  });
}

bool CudaStream::query() {
  device_.make_current();
  const cudaError_t err = cudaStreamQuery(handle_);
  if (err == cudaErrorNotReady) {
    (void)cudaGetLastError();  // not an error; see CudaEvent::query
    return false;
  }
  check(err, "cudaStreamQuery",
        [&] { return "querying stream " + std::to_string(id_) + " of " + device_.display_name(); });
  return true;
}

void CudaStream::launch_host_kernel(std::string_view name, std::span<const MemoryRange> ranges,
                                    std::function<void()> body) {
  (void)ranges, (void)body;
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
  // cudaSetDevice rejects a bad ordinal with cudaErrorInvalidDevice; it also creates the primary
  // context, so a device that cannot be used (prohibited, exclusive and taken) fails here.
  check(cudaSetDevice(ordinal_), "cudaSetDevice", [&] {
    return opening() + " (the process sees " + std::to_string(count) + " CUDA device" +
           (count == 1 ? "" : "s") + ")";
  });
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, ordinal_), "cudaGetDeviceProperties", opening);
  name_ = "cuda:" + std::to_string(ordinal_) + " (" + prop.name + ", " +
          format_bytes(prop.totalGlobalMem) + ")";
  int pools = 0;
  check(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, ordinal_),
        "cudaDeviceGetAttribute", opening);
  memory_pools_supported_ = pools != 0;
  default_stream_ = std::make_unique<CudaStream>(*this, legacy_default_stream(), false);
}

CudaDevice::~CudaDevice() {
  // Streams and events may still have work queued (stream-ordered frees above all): let it
  // finish before the handles go.
  contain("closing a CUDA device", [&] {
    make_current();
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize",
          [&] { return "closing " + name_ + ": waiting for its queued work"; });
  });
  events_.clear();
  streams_.clear();
}

void CudaDevice::make_current() const {
  int current = -1;
  check(cudaGetDevice(&current), "cudaGetDevice", "finding the calling thread's current device");
  if (current == ordinal_) return;
  check(cudaSetDevice(ordinal_), "cudaSetDevice", [&] { return "making " + name_ + " current"; });
}

MemoryInfo CudaDevice::memory_info() {
  make_current();
  MemoryInfo info;
  check(cudaMemGetInfo(&info.free_bytes, &info.total_bytes), "cudaMemGetInfo",
        [&] { return "reading the memory use of " + name_; });
  return info;
}

void CudaDevice::synchronize() {
  make_current();
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize",
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
  make_current();
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
  make_current();
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

void CudaDevice::throw_out_of_memory(const char* call, std::size_t bytes, bool host) const {
  // cudaErrorMemoryAllocation is not sticky; clear it so that a later launch check does not
  // mistake it for its own failure.
  (void)cudaGetLastError();
  std::string message = std::string("out of memory: ") + call + " of " + format_bytes(bytes) +
                        (host ? " of page-locked host memory for " : " on ") + name_ +
                        (host ? " (device memory: " : ": ");
  std::size_t free_bytes = 0;
  std::size_t total_bytes = 0;
  if (const cudaError_t err = cudaMemGetInfo(&free_bytes, &total_bytes); err == cudaSuccess) {
    message += format_bytes(total_bytes - free_bytes) + " in use, " + format_bytes(free_bytes) +
               " free of " + format_bytes(total_bytes);
  } else {
    (void)cudaGetLastError();
    message += std::string("use unknown, cudaMemGetInfo failed with ") + cudaGetErrorName(err);
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
  make_current();
  void* ptr = nullptr;
  const cudaError_t err = cudaMalloc(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory("cudaMalloc", bytes, false);
  check(err, "cudaMalloc", [&] { return "allocating " + format_bytes(bytes) + " on " + name_; });
  return ptr;
}

void CudaDevice::deallocate(void* ptr, std::size_t bytes) noexcept {
  if (ptr == nullptr) return;
  contain("freeing device memory (cudaFree)", [&] {
    const auto doing = [&] {
      return "freeing " + format_bytes(bytes) + " at " + format_pointer(ptr) + " on " + name_;
    };
    make_current();
    // The interface promises that the free waits for the device. cudaFree of cudaMalloc memory
    // only "may perform implicit synchronization" (CUDA 13 cuda_runtime_api.h), so wait
    // explicitly; when cudaFree does synchronize, the second wait finds the device idle.
    check(cudaDeviceSynchronize(), "cudaDeviceSynchronize", doing);
    check(cudaFree(ptr), "cudaFree", doing);
  });
}

void* CudaDevice::allocate_async(std::size_t bytes, StreamImpl& stream) {
  if (bytes == 0) return nullptr;
  CudaStream& cuda_stream = own_stream(stream, "cudaMallocAsync");
  make_current();
  void* ptr = nullptr;
  // From the device's current memory pool (its default pool unless the application set one).
  const cudaError_t err = cudaMallocAsync(&ptr, bytes, cuda_stream.handle());
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory("cudaMallocAsync", bytes, false);
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
    make_current();
    check(cudaFreeAsync(ptr, cuda_stream.handle()), "cudaFreeAsync", [&] {
      return "freeing " + format_bytes(bytes) + " at " + format_pointer(ptr) + " on stream " +
             std::to_string(stream.id()) + " of " + name_;
    });
  });
}

void* CudaDevice::allocate_pinned(std::size_t bytes) {
  if (bytes == 0) return nullptr;
  make_current();
  void* ptr = nullptr;
  const cudaError_t err = cudaMallocHost(&ptr, bytes);
  if (err == cudaErrorMemoryAllocation) throw_out_of_memory("cudaMallocHost", bytes, true);
  check(err, "cudaMallocHost", [&] {
    return "allocating " + format_bytes(bytes) + " of page-locked host memory for " + name_;
  });
  return ptr;
}

void CudaDevice::deallocate_pinned(void* ptr) noexcept {
  if (ptr == nullptr) return;
  contain("freeing page-locked host memory (cudaFreeHost)", [&] {
    make_current();
    check(cudaFreeHost(ptr), "cudaFreeHost", [&] {
      return "freeing page-locked host memory at " + format_pointer(ptr) + " for " + name_;
    });
  });
}

void CudaDevice::set_async_release_threshold(std::size_t bytes) {
  make_current();
  cudaMemPool_t pool = nullptr;
  check(cudaDeviceGetDefaultMemPool(&pool, ordinal_), "cudaDeviceGetDefaultMemPool",
        [&] { return "finding the default memory pool of " + name_; });
  auto threshold = static_cast<std::uint64_t>(bytes);
  check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
        "cudaMemPoolSetAttribute", [&] {
          return "setting the release threshold of " + name_ + "'s default memory pool to " +
                 format_bytes(bytes);
        });
}

bool CudaDevice::is_pinned(const void* ptr, std::size_t bytes) {
  (void)bytes;  // a registration covers whole allocations; the first byte decides
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) != cudaSuccess) {
    // Not a pointer the runtime knows: ordinary pageable memory. Clear the error so that a
    // later cudaGetLastError (a launch check) does not see it.
    (void)cudaGetLastError();
    return false;
  }
  return attributes.type == cudaMemoryTypeHost;
}

}  // namespace

std::shared_ptr<DeviceImpl> make_cuda_device(int ordinal) {
  return std::make_shared<CudaDevice>(ordinal);
}

CudaProbe probe_cuda_runtime() noexcept {
  CudaProbe probe;
  probe.compiled = true;
  try {
    int count = 0;
    // No driver (35), no device (100), a broken installation (3, 999, 803, ...): all of them
    // mean "not available", never a crash.
    if (const cudaError_t err = cudaGetDeviceCount(&count); err != cudaSuccess) {
      (void)cudaGetLastError();
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
