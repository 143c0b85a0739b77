// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief A range of device memory that a queued operation touches.

#include <cstddef>

namespace gpulife {

/// @brief A device range an operation reads or writes.
///
/// Kernels launched on the simulated device declare their ranges so that the device can check,
/// when the kernel executes, that each lies inside live memory.
struct MemoryRange {
  const void* ptr = nullptr;  ///< first byte
  std::size_t bytes = 0;      ///< length; an empty range is never checked
};

/// @brief Direction of a copy.
enum class CopyKind : unsigned char {
  host_to_device,
  device_to_host,
  device_to_device,
};

}  // namespace gpulife
