// SPDX-License-Identifier: Apache-2.0
#pragma once

// Factories of the backends; only device.cpp calls them.

#include <memory>

#include <gpulife/runtime/device.hpp>

namespace gpulife::detail {

std::shared_ptr<DeviceImpl> make_sim_device(SimOptions options);

#if defined(GPULIFE_HAS_CUDA)
/// The device object of CUDA device `ordinal`: the same one while any handle to it lives.
std::shared_ptr<DeviceImpl> make_cuda_device(int ordinal);
CudaProbe probe_cuda_runtime() noexcept;
/// True for the errors that leave the CUDA context corrupt (every later call fails the same way).
bool is_sticky_cuda_error(int code) noexcept;
#endif

}  // namespace gpulife::detail
