// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief A range of device memory that a queued operation touches, and how it touches it.

#include <cstddef>

namespace gpulife {

/// @brief How an operation uses a range of memory.
enum class Access : unsigned char {
  read,        ///< only reads the bytes
  write,       ///< only writes the bytes (reads none of them before writing)
  read_write,  ///< may do both; the default where a kernel does not say
};

/// @brief A device range an operation reads or writes.
///
/// Kernels launched on the simulated device declare their ranges so that the device can check,
/// when the kernel executes, that each lies inside live memory, and, when it is queued, that no
/// operation of another stream touches the same bytes without an order between them (two reads
/// never conflict). Say `Access::read` for inputs: a range left at `read_write` counts as a
/// write, so two streams reading the same weights through it would be reported as a race.
struct MemoryRange {
  const void* ptr = nullptr;         ///< first byte
  std::size_t bytes = 0;             ///< length; an empty range is never checked
  Access mode = Access::read_write;  ///< how the operation uses the bytes
};

/// @brief Direction of a copy.
enum class CopyKind : unsigned char {
  host_to_device,
  device_to_host,
  device_to_device,
};

}  // namespace gpulife
