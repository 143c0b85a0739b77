// SPDX-License-Identifier: Apache-2.0
// CUDA's API rules on the simulated device: the current device of each host thread, no CUDA
// call from a host function, the directions of copies.

#include "runtime/sim_device.hpp"

#include <gpulife/runtime/detail/enqueue_site.hpp>

namespace gpulife::detail::sim {

namespace {

// The calling thread's current simulated device: its ordinal (which no other simulated device
// of the process shares) and a token that expires with it. CUDA starts every thread on device
// 0; simulated devices have no device 0 that all code agrees on, so a thread that never made a
// device current, or whose current device is gone, may launch on any.
struct Current {
  int ordinal = -1;
  std::weak_ptr<const void> alive;
};
thread_local Current current_device;
// What `DeviceGuard`s on this thread replaced, innermost last (guards nest strictly).
thread_local std::vector<Current> replaced_devices;

// Depth of host functions running on this thread (nested only through a destructor that
// queues one, itself a violation).
thread_local int host_function_depth = 0;

struct HostFunctionScope {
  HostFunctionScope() noexcept { ++host_function_depth; }
  ~HostFunctionScope() { --host_function_depth; }
  HostFunctionScope(const HostFunctionScope&) = delete;
  HostFunctionScope& operator=(const HostFunctionScope&) = delete;
};

bool overlaps(const void* a, const void* b, std::size_t bytes) noexcept {
  const auto x = address(a);
  const auto y = address(b);
  return x < y + bytes && y < x + bytes;
}

}  // namespace

void SimDevice::make_current() const { current_device = {ordinal_, alive_}; }

int SimDevice::exchange_current() {
  if (current_device.ordinal == ordinal_ && !current_device.alive.expired()) return -1;
  replaced_devices.push_back(current_device);
  current_device = {ordinal_, alive_};
  return static_cast<int>(replaced_devices.size() - 1);
}

void SimDevice::restore_current(int previous) noexcept {
  if (previous < 0 || static_cast<std::size_t>(previous) >= replaced_devices.size()) return;
  current_device = std::move(replaced_devices[static_cast<std::size_t>(previous)]);
  replaced_devices.resize(static_cast<std::size_t>(previous));
}

void SimDevice::report_api_misuse(std::string call, std::string rule, const void* ptr,
                                  std::size_t bytes, std::uint64_t stream_id) noexcept {
  try {
    SimViolation violation;
    violation.kind = SimViolation::Kind::api_misuse;
    violation.operation = std::move(call);
    violation.ptr = ptr;
    violation.bytes = bytes;
    violation.stream_id = stream_id;
    violation.site = current_site();
    violation.rule = std::move(rule);
    if (ptr != nullptr) violation.owner = owner_of(ptr, bytes);
    report(std::move(violation));
  } catch (...) {
    report_error("sim: could not report a CUDA API misuse");
  }
}

bool SimDevice::called_from_host_function(const char* call) noexcept {
  if (host_function_depth == 0) return false;
  report_api_misuse(call,
                    "called from a host function (cudaLaunchHostFunc), or from a destructor of "
                    "what one captured; CUDA forbids any CUDA call there");
  return true;
}

void SimDevice::check_launch_device(std::string_view kernel, std::uint64_t stream_id) {
  const int current = current_device.ordinal;
  if (current < 0 || current == ordinal_ || current_device.alive.expired()) return;
  const std::string what = "launching kernel " + std::string(kernel) +
                           " on a stream of sim:" + std::to_string(ordinal_) +
                           " while sim:" + std::to_string(current) +
                           " is the calling thread's current device";
  report_api_misuse("cudaLaunchKernel " + std::string(kernel),
                    "a kernel launch needs the stream's device current on the calling thread",
                    nullptr, 0, stream_id);
  throw_cuda_error(400, "cudaErrorInvalidResourceHandle", "cudaLaunchKernel", what);
}

bool SimDevice::check_copy(void* dst, const void* src, std::size_t bytes, CopyKind kind,
                           std::uint64_t stream_id) {
  auto in_device_memory = [this](const void* ptr) {
    std::shared_lock lock(memory_mutex_);
    auto it = find_alloc(address(ptr));
    return it != allocs_.end() && (!it->second.external || it->second.vmm);
  };
  switch (kind) {
    case CopyKind::host_to_device:
      if (in_device_memory(src)) {
        report_api_misuse("cudaMemcpyAsync host_to_device",
                          "the source is device memory, not host memory; the copy is not done", src,
                          bytes, stream_id);
        return false;
      }
      return true;
    case CopyKind::device_to_host:
      if (in_device_memory(dst)) {
        report_api_misuse("cudaMemcpyAsync device_to_host",
                          "the destination is device memory, not host memory; the copy is not done",
                          dst, bytes, stream_id);
        return false;
      }
      return true;
    case CopyKind::device_to_device:
      if (overlaps(dst, src, bytes)) {
        report_api_misuse("cudaMemcpyAsync device_to_device",
                          "source and destination overlap, which cudaMemcpyAsync does not "
                          "support (the result is undefined); the copy is not done",
                          dst, bytes, stream_id);
        return false;
      }
      return true;
  }
  return true;
}

void SimDevice::run_host_function(std::function<void()>& fn) {
  std::unique_lock<std::mutex> serial;
  if (options_.serialize_host_functions) serial = std::unique_lock(host_function_mutex_);
  const HostFunctionScope scope;
  try {
    fn();
  } catch (...) {
    fn = nullptr;  // the captures' destructors run inside the host function too
    throw;
  }
  fn = nullptr;
}

void SimDevice::host_access(const void* ptr, std::size_t bytes, Access mode) noexcept {
  if (races_ == nullptr || ptr == nullptr || bytes == 0) return;
  try {
    const RangeUse use{ptr, bytes,
                       mode == Access::read    ? Use::read
                       : mode == Access::write ? Use::write
                                               : Use::read_write};
    RaceDetector::Step(races()).host_op("host access by gpulife", std::span(&use, 1));
  } catch (...) {
    report_error("sim: could not check a host access");
  }
}

void* SimDevice::device_view(const void* ptr) noexcept {
  return guard_ ? guard_->device_view(ptr) : const_cast<void*>(ptr);
}

}  // namespace gpulife::detail::sim
