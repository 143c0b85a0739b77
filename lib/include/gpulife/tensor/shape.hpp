// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `Shape`: the extents of a tensor, up to `Shape::max_rank` dimensions, stored inline.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>

namespace gpulife {

/// @brief Extents (or strides) of up to eight dimensions, with no heap allocation.
class Shape {
 public:
  /// The most dimensions a shape holds.
  static constexpr std::size_t max_rank = 8;

  /// A rank-0 shape (one element).
  constexpr Shape() noexcept = default;
  /// @throws std::invalid_argument for more than `max_rank` dimensions or a negative extent
  Shape(std::initializer_list<std::int64_t> dims) : Shape(std::span(dims.begin(), dims.size())) {}
  /// @throws std::invalid_argument for more than `max_rank` dimensions or a negative extent
  explicit Shape(std::span<const std::int64_t> dims) {
    if (dims.size() > max_rank) {
      throw std::invalid_argument("shape: " + std::to_string(dims.size()) +
                                  " dimensions, at most " + std::to_string(max_rank));
    }
    for (std::size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] < 0) {
        throw std::invalid_argument("shape: extent " + std::to_string(dims[i]) +
                                    " of dimension " + std::to_string(i) + " is negative");
      }
      dims_[i] = dims[i];
    }
    rank_ = static_cast<std::uint8_t>(dims.size());
  }

  /// @return the number of dimensions
  [[nodiscard]] constexpr std::size_t rank() const noexcept { return rank_; }
  /// @return extent `i`; @pre i < rank()
  [[nodiscard]] constexpr std::int64_t operator[](std::size_t i) const noexcept { return dims_[i]; }
  /// @return the extents
  [[nodiscard]] constexpr std::span<const std::int64_t> dims() const noexcept {
    return {dims_.data(), rank_};
  }
  /// @return the product of the extents (1 for rank 0)
  [[nodiscard]] constexpr std::int64_t numel() const noexcept {
    std::int64_t n = 1;
    for (std::size_t i = 0; i < rank_; ++i) n *= dims_[i];
    return n;
  }
  /// @return true if some extent is zero
  [[nodiscard]] constexpr bool has_zero_extent() const noexcept {
    return std::find(dims_.begin(), dims_.begin() + rank_, 0) != dims_.begin() + rank_;
  }
  /// @return row-major strides, in elements, of a contiguous tensor of this shape
  [[nodiscard]] Shape contiguous_strides() const noexcept {
    Shape strides;
    strides.rank_ = rank_;
    std::int64_t stride = 1;
    for (std::size_t i = rank_; i-- > 0;) {
      strides.dims_[i] = stride;
      stride *= std::max<std::int64_t>(dims_[i], 1);
    }
    return strides;
  }
  /// @return e.g. "[2, 3, 4]"
  [[nodiscard]] std::string to_string() const {
    std::string text = "[";
    for (std::size_t i = 0; i < rank_; ++i) {
      if (i != 0) text += ", ";
      text += std::to_string(dims_[i]);
    }
    return text + "]";
  }

  /// Sets one extent; for views. @pre i < rank()
  constexpr void set(std::size_t i, std::int64_t value) noexcept { dims_[i] = value; }

  /// @return true for the same rank and extents
  friend constexpr bool operator==(const Shape& a, const Shape& b) noexcept {
    if (a.rank_ != b.rank_) return false;
    for (std::size_t i = 0; i < a.rank_; ++i) {
      if (a.dims_[i] != b.dims_[i]) return false;
    }
    return true;
  }

 private:
  std::array<std::int64_t, max_rank> dims_{};
  std::uint8_t rank_ = 0;
};

}  // namespace gpulife
