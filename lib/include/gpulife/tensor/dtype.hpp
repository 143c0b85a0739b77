// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Element types of device tensors.

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace gpulife {

/// @brief The element type of a tensor.
enum class DType : std::uint8_t {
  f32,   ///< float
  f16,   ///< IEEE half, stored as `Half`
  bf16,  ///< bfloat16, stored as `BFloat16`
  f64,   ///< double
  i8,    ///< std::int8_t
  u8,    ///< std::uint8_t
  i32,   ///< std::int32_t
  i64,   ///< std::int64_t
  byte,  ///< std::byte: raw bytes
};

/// @brief Storage type of an f16 element (its IEEE bit pattern); arithmetic happens in kernels.
struct Half {
  std::uint16_t bits;  ///< the IEEE binary16 bit pattern
};
/// @brief Storage type of a bf16 element (its bit pattern).
struct BFloat16 {
  std::uint16_t bits;  ///< the upper 16 bits of the IEEE binary32 pattern
};

/// @return the size of one element in bytes
[[nodiscard]] constexpr std::size_t size_of(DType dtype) noexcept {
  switch (dtype) {
    case DType::f64:
    case DType::i64:
      return 8;
    case DType::f32:
    case DType::i32:
      return 4;
    case DType::f16:
    case DType::bf16:
      return 2;
    case DType::i8:
    case DType::u8:
    case DType::byte:
      return 1;
  }
  return 0;
}

/// @return "f32", "f16", ...
[[nodiscard]] constexpr std::string_view to_string(DType dtype) noexcept {
  switch (dtype) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::f64: return "f64";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::byte: return "byte";
  }
  return "?";
}

/// @brief The dtype whose storage type is `T`; only defined for the storage types above.
template <class T>
struct dtype_of;
/// @cond specialisations: each holds `static constexpr DType value`, the dtype of its type
template <> struct dtype_of<float> { static constexpr DType value = DType::f32; };
template <> struct dtype_of<Half> { static constexpr DType value = DType::f16; };
template <> struct dtype_of<BFloat16> { static constexpr DType value = DType::bf16; };
template <> struct dtype_of<double> { static constexpr DType value = DType::f64; };
template <> struct dtype_of<std::int8_t> { static constexpr DType value = DType::i8; };
template <> struct dtype_of<std::uint8_t> { static constexpr DType value = DType::u8; };
template <> struct dtype_of<std::int32_t> { static constexpr DType value = DType::i32; };
template <> struct dtype_of<std::int64_t> { static constexpr DType value = DType::i64; };
template <> struct dtype_of<std::byte> { static constexpr DType value = DType::byte; };
/// @endcond

/// @brief `dtype_of<T>::value`
template <class T>
inline constexpr DType dtype_of_v = dtype_of<T>::value;

/// @brief True for the types `dtype_of` knows.
template <class T>
concept TensorElement = requires { dtype_of<T>::value; };

}  // namespace gpulife
