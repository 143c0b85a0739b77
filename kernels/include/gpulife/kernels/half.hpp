// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief IEEE 754 binary16 (f16) conversions, on the device and on the host.
///
/// f16 values are stored as their `std::uint16_t` bit patterns. The conversions are written out
/// rather than taken from cuda_fp16.h so that the same code compiles without the CUDA toolkit.

#include <cstdint>
#include <cstring>

#include <gpulife/runtime/host_device.hpp>

namespace gpulife::kernels {

namespace detail {

GPULIFE_HOST_DEVICE inline float float_from_bits(std::uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
#endif
}

GPULIFE_HOST_DEVICE inline std::uint32_t bits_from_float(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
#endif
}

}  // namespace detail

/// @brief The value of the f16 bit pattern `half` as a float (exact: every f16 is a float).
///
/// Subnormals, infinities and NaNs convert like the hardware conversion (NaN payloads are kept).
GPULIFE_HOST_DEVICE inline float half_to_float(std::uint16_t half) {
  const std::uint32_t sign = static_cast<std::uint32_t>(half & 0x8000U) << 16;
  const std::uint32_t exponent = (static_cast<std::uint32_t>(half) >> 10) & 0x1FU;
  const std::uint32_t mantissa = static_cast<std::uint32_t>(half) & 0x3FFU;
  if (exponent == 0) {
    // zero or subnormal: mantissa * 2^-24, exact in float
    const float magnitude = static_cast<float>(mantissa) * 0x1p-24F;
    return sign != 0 ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return detail::float_from_bits(sign | 0x7F800000U | (mantissa << 13));
  // rebias the exponent from 15 to 127
  return detail::float_from_bits(sign | ((exponent + 112U) << 23) | (mantissa << 13));
}

/// @brief The f16 bit pattern nearest to `value` (round to nearest, ties to even; overflow to
/// infinity; NaN to a quiet NaN of the same sign).
GPULIFE_HOST_DEVICE inline std::uint16_t float_to_half(float value) {
  const std::uint32_t bits = detail::bits_from_float(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000U;
  const std::uint32_t magnitude = bits & 0x7FFFFFFFU;
  std::uint32_t half = 0;
  if (magnitude > 0x7F800000U) {
    half = 0x7E00U;  // NaN
  } else if (magnitude >= 0x477FF000U) {
    half = 0x7C00U;  // at or above 65520, the midpoint between 65504 and 2^16: infinity
  } else if (magnitude >= 0x38800000U) {
    // normal in f16 (>= 2^-14): rebias the exponent and round off 13 mantissa bits
    half = (magnitude >> 13) - (112U << 10);
    const std::uint32_t rest = magnitude & 0x1FFFU;
    if (rest > 0x1000U || (rest == 0x1000U && (half & 1U) != 0)) ++half;  // may carry: correct
  } else if (magnitude > 0x33000000U) {
    // subnormal in f16: value / 2^-24 = significand >> shift, rounded
    const std::uint32_t exponent = magnitude >> 23;
    const std::uint32_t significand = (magnitude & 0x7FFFFFU) | 0x800000U;
    const std::uint32_t shift = 126U - exponent;  // 14..24
    half = significand >> shift;
    const std::uint32_t rest = significand & ((1U << shift) - 1U);
    const std::uint32_t midpoint = 1U << (shift - 1U);
    if (rest > midpoint || (rest == midpoint && (half & 1U) != 0)) ++half;
  }
  // else: at most 2^-25, which rounds to zero (2^-25 itself is a tie, and zero is even)
  return static_cast<std::uint16_t>(sign | half);
}

}  // namespace gpulife::kernels
