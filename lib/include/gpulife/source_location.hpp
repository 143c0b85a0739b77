// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief `SourceLocation`: `std::source_location` where the standard library provides it, and
/// an equivalent built on the compiler's location builtins where it does not.
///
/// libstdc++ 12 offers `std::source_location` only to compilers with
/// `__builtin_source_location` (GCC 11+, Clang 15+); Clang 14 with libstdc++ 12, which the
/// libFuzzer build uses, finds no `std::source_location` at all. gpulife's API names this alias
/// instead, so the same headers compile with both. Where the standard type exists the alias is
/// that type, so code that passes a `std::source_location` keeps working unchanged.
///
/// A program must see one definition: build gpulife and the code that includes its headers with
/// compilers that agree on whether `std::source_location` exists.

#include <cstdint>
#include <version>

#if defined(__cpp_lib_source_location)
#include <source_location>
#endif

namespace gpulife {

#if defined(__cpp_lib_source_location)

/// @brief The call site a defaulted `where` parameter captures (`std::source_location`).
using SourceLocation = std::source_location;

#else

/// @brief The call site a defaulted `where` parameter captures: the subset of
/// `std::source_location` gpulife uses, from the compiler's `__builtin_FILE` family.
class SourceLocation {
 public:
  /// An unknown location: empty names, line and column 0.
  constexpr SourceLocation() noexcept = default;

  /// @return the location of the call site, when used as a default argument
  [[nodiscard]] static constexpr SourceLocation current(
      const char* file = __builtin_FILE(), const char* function = __builtin_FUNCTION(),
      std::uint_least32_t line = __builtin_LINE(),
#if defined(__has_builtin) && __has_builtin(__builtin_COLUMN)
      std::uint_least32_t column = __builtin_COLUMN()
#else
      std::uint_least32_t column = 0
#endif
          ) noexcept {
    SourceLocation where;
    where.file_ = file;
    where.function_ = function;
    where.line_ = line;
    where.column_ = column;
    return where;
  }

  /// @return the source file's name
  [[nodiscard]] constexpr const char* file_name() const noexcept { return file_; }
  /// @return the enclosing function's name
  [[nodiscard]] constexpr const char* function_name() const noexcept { return function_; }
  /// @return the line number
  [[nodiscard]] constexpr std::uint_least32_t line() const noexcept { return line_; }
  /// @return the column number (0 where the compiler does not say)
  [[nodiscard]] constexpr std::uint_least32_t column() const noexcept { return column_; }

 private:
  const char* file_ = "";
  const char* function_ = "";
  std::uint_least32_t line_ = 0;
  std::uint_least32_t column_ = 0;
};

#endif

}  // namespace gpulife
