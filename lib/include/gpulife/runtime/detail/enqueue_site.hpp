// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Where the work being queued comes from, for the simulated device's reports.

#include <gpulife/source_location.hpp>

namespace gpulife::detail {

/// @brief Names, for the calling thread, the user's call site of the gpulife call that is
/// queueing work (a copy, a kernel, an allocation).
///
/// Public entry points that queue work open one with their defaulted `SourceLocation` argument.
/// Scopes nest and the outermost wins, so that a copy queued deep inside `DeviceTensor::upload`
/// is reported at the user's `upload` call rather than inside gpulife. The simulated device reads
/// it when it records an operation; other backends ignore it. Costs two thread-local accesses.
class EnqueueSite {
 public:
  /// @param where the call site; it must outlive the scope (a parameter of the enclosing call)
  explicit EnqueueSite(const SourceLocation& where) noexcept;
  ~EnqueueSite();
  EnqueueSite(const EnqueueSite&) = delete;
  EnqueueSite& operator=(const EnqueueSite&) = delete;

  /// @return the outermost open scope's site on this thread, or null when none is open
  [[nodiscard]] static const SourceLocation* current() noexcept;

 private:
  bool outermost_;
};

}  // namespace gpulife::detail
