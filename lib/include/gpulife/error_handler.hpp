// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief Where gpulife reports errors it cannot throw (destructors, finalizers, stream workers).

#include <functional>
#include <string_view>

namespace gpulife {

/// @brief Receives one message per error that gpulife contained instead of throwing: a
/// finalizer that threw, a failed free in a destructor, a violation seen by the simulated device.
///
/// A handler must not throw. It may be called from any thread, including a stream worker.
using ErrorHandler = std::function<void(std::string_view message)>;

/// @brief The handler used by contexts and devices that were not given one.
///
/// The initial handler writes the message to stderr with a "gpulife: " prefix.
/// @return the current default handler (never empty)
/// @par Thread safety
/// Safe to call concurrently with `set_default_error_handler`.
[[nodiscard]] ErrorHandler default_error_handler();

/// @brief Replaces the process-wide default handler; an empty function restores stderr.
/// @return the previous handler
ErrorHandler set_default_error_handler(ErrorHandler handler);

/// @brief Sends `message` to the default handler, containing any exception it throws.
void report_error(std::string_view message) noexcept;

}  // namespace gpulife
