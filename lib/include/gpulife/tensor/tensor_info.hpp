// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `TensorInfo`: what a finalizer learns about the tensor it outlives.

#include <cstddef>
#include <cstdint>
#include <string>

#include <gpulife/tensor/dtype.hpp>
#include <gpulife/tensor/shape.hpp>

namespace gpulife {

/// @brief A description of a tensor that holds no reference to it.
///
/// Finalizers and expiry callbacks receive this, never the handle, so they cannot resurrect or
/// pin the tensor (the trap of a Python finalizer that references its object). `data` is for
/// identification only: when a finalizer runs, the memory has been given back.
struct TensorInfo {
  const void* data = nullptr;  ///< first byte of the tensor's memory
  std::size_t bytes = 0;       ///< size of the memory in bytes
  Shape shape{};               ///< the tensor's extents
  DType dtype = DType::byte;   ///< the tensor's element type
  std::uint64_t id = 0;        ///< the tensor's process-unique id
  std::string tag;             ///< the tensor's tag, for reports
  std::uint64_t stream_id = 0; ///< the stream the tensor lived on
};

}  // namespace gpulife
