// SPDX-License-Identifier: Apache-2.0
#pragma once

// Factories of the backends; only device.cpp calls them.

#include <memory>

#include <gpulife/runtime/device.hpp>

namespace gpulife::detail {

std::shared_ptr<DeviceImpl> make_sim_device(SimOptions options);

#if defined(GPULIFE_HAS_CUDA)
std::shared_ptr<DeviceImpl> make_cuda_device(int ordinal);
CudaProbe probe_cuda_runtime() noexcept;
#endif

}  // namespace gpulife::detail
