// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `DeviceGuard`: makes a device current on the calling thread for a scope, and restores
/// what was current before (RMM's `cuda_set_device_raii`, PyTorch's `CUDAGuard`).

#include <gpulife/runtime/detail/backend.hpp>
#include <gpulife/runtime/device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife {

/// @brief Makes a device the calling thread's current device until the end of the scope.
///
/// CUDA keeps one current device per host thread: kernels launched with `<<<>>>`, Thrust and
/// CUB algorithms, `cudaStreamLegacy` and every runtime call without a device argument go to
/// it. gpulife holds a guard in every entry that touches the device, so that its calls reach
/// the right device from any thread (finalizers and drops run on whatever thread drops) and the
/// caller's current device is the same afterwards. Hold one yourself around your own launches on
/// a gpulife stream of a device that may not be current:
///
/// ```cpp
/// gpulife::DeviceGuard guard(stream);          // stream's device current until the scope ends
/// my_kernel<<<grid, block, 0, native>>>(...);
/// ```
///
/// On the CUDA backend the constructor costs one `cudaGetDevice` (a thread-local read) when the
/// device is already current, and a `cudaSetDevice` otherwise; the destructor restores the
/// previous device only if it changed it (and, as PyTorch does, not when that device has no
/// primary context yet, so that a restore never creates a context on a GPU the thread never
/// used). The simulated device keeps a current device per thread too, and fails a kernel launch
/// on a stream of another device (`launch_host_kernel`, its `<<<>>>`) as CUDA does; the guard
/// makes and restores it there the same way.
///
/// @par Thread safety
/// A guard belongs to the thread that made it and must be destroyed on that thread, in reverse
/// order of construction (it is a scope object: not copyable, not movable).
class DeviceGuard {
 public:
  /// @brief Makes `device` current.
  /// @throws std::invalid_argument if `device` is empty
  /// @throws CudaError if the device cannot be made current
  explicit DeviceGuard(const Device& device) : DeviceGuard(device.impl()) {}
  /// @brief Makes the device of `stream` current.
  /// @throws std::invalid_argument if `stream` is empty
  /// @throws CudaError if the device cannot be made current
  explicit DeviceGuard(StreamView stream) : DeviceGuard(stream.device()) {}
  /// @brief Makes `device` current (gpulife's own backends use this form).
  /// @throws CudaError if the device cannot be made current
  explicit DeviceGuard(detail::DeviceImpl& device)
      : device_(&device), previous_(device.exchange_current()) {}
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  DeviceGuard(DeviceGuard&&) = delete;
  DeviceGuard& operator=(DeviceGuard&&) = delete;
  /// Restores the device that was current before; a failure is reported, never thrown.
  ~DeviceGuard() { device_->restore_current(previous_); }

 private:
  detail::DeviceImpl* device_;
  int previous_;
};

}  // namespace gpulife
