// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `MemoryPressureListener`: told when an allocation failed, to free what it can.

#include <cstddef>

namespace gpulife {

class Device;

/// @brief Something that can give device memory back when asked (a user cache, a pool of
/// scratch buffers). Register with `Context::pressure_listeners()`; the set holds it weakly.
class MemoryPressureListener {
 public:
  virtual ~MemoryPressureListener() = default;
  /// @brief An allocation of `requested_bytes` on `device` failed; free what you can.
  ///
  /// Called on the allocating thread with no gpulife lock held, after the tensor cache's warm
  /// tier was evicted and the pool trimmed, before the one retry. Must not throw.
  virtual void on_memory_pressure(std::size_t requested_bytes, const Device& device) noexcept = 0;
};

}  // namespace gpulife
