// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The two device backends.

#include <cstdint>
#include <string_view>

namespace gpulife {

/// @brief Which backend a `Device` runs on.
enum class BackendKind : std::uint8_t {
  cuda,  ///< a CUDA device through the CUDA runtime API
  sim,   ///< the simulated device: host memory, one worker thread per stream
};

/// @return "cuda" or "sim"
[[nodiscard]] constexpr std::string_view to_string(BackendKind kind) noexcept {
  return kind == BackendKind::cuda ? "cuda" : "sim";
}

}  // namespace gpulife
