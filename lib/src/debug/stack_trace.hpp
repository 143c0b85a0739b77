// SPDX-License-Identifier: Apache-2.0
#pragma once

// Stack traces for leak reports: captured cheaply (raw return addresses) when a tensor is made,
// symbolised with file:line (Boost.Stacktrace over libbacktrace, in process) only when a report
// asks for them.

#include <cstddef>
#include <span>
#include <string>
#include <vector>

namespace gpulife::detail {

/// The return addresses of the calling thread's stack, innermost first, at most `max_frames`.
std::vector<const void*> capture_stack(std::size_t max_frames);

/// "function at file:line" for each frame, innermost first, without gpulife's own frames at the
/// top of the stack (the caller of the gpulife API comes first). Thread-safe; results are
/// cached per address.
std::vector<std::string> symbolise_stack(std::span<const void* const> frames);

}  // namespace gpulife::detail
