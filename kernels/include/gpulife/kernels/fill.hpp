// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `fill`: sets every element of a device array to one value.

#include <cstddef>
#include <cstdint>

#include <gpulife/runtime/host_device.hpp>
#include <gpulife/runtime/stream_view.hpp>

namespace gpulife::kernels {

/// @brief The kernel body: element `i` of `data` becomes `value`.
template <class T>
struct FillBody {
  T* data;  ///< the array
  T value;  ///< what every element becomes
  /// Sets element `i`.
  GPULIFE_HOST_DEVICE void operator()(std::size_t i) const { data[i] = value; }
};

/// @brief Sets `data[0, n)` to `value`, as a kernel on `stream` (either backend).
///
/// Instantiated for float, double, std::int8_t, std::uint8_t, std::int32_t, std::int64_t and
/// std::uint16_t (the bit pattern of f16 and bf16 values).
/// @throws std::invalid_argument if `data` is null while `n` is non-zero, or `stream` is empty
/// @throws CudaError if the launch fails
template <class T>
void fill(StreamView stream, T* data, std::size_t n, T value);

}  // namespace gpulife::kernels
