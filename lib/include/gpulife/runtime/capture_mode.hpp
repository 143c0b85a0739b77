// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Stream capture's vocabulary: capture modes and a stream's capture status.

#include <cstdint>

namespace gpulife {

/// @brief How a capture sequence interacts with potentially unsafe API calls (cudaMalloc,
/// cudaFree, cudaMallocHost...), as `cudaStreamCaptureMode`.
///
/// A thread whose own mode (see `CaptureModeGuard`) is `global` may not make such calls while it
/// has a capture begun in a mode other than `relaxed`, or while any thread has a `global`
/// capture; `per_thread` only looks at the thread's own captures; `relaxed` never forbids them.
/// A forbidden call fails with `cudaErrorStreamCaptureUnsupported` and invalidates the capture.
enum class CaptureMode : int {
  global = 0,      ///< cudaStreamCaptureModeGlobal (CUDA's default)
  per_thread = 1,  ///< cudaStreamCaptureModeThreadLocal
  relaxed = 2,     ///< cudaStreamCaptureModeRelaxed
};

/// @brief Capture state of a stream (cudaStreamCaptureStatus).
enum class CaptureStatus : int {
  none = 0,         ///< not capturing
  active = 1,       ///< capturing: queued work is recorded, not executed
  invalidated = 2,  ///< capturing, but an invalid operation broke the capture: end it
};

/// @brief A stream's capture state and the capture sequence's id (unique in the process while
/// the capture lasts; 0 when not capturing).
struct CaptureInfo {
  CaptureStatus status = CaptureStatus::none;
  std::uint64_t id = 0;
};

}  // namespace gpulife
