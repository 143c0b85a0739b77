// SPDX-License-Identifier: Apache-2.0
#pragma once

/// @file
/// @brief The exception types gpulife throws.

#include <cstddef>
#include <memory>
#include <new>
#include <source_location>
#include <stdexcept>
#include <string>

namespace gpulife {

/// @brief Base of gpulife's own run-time errors (device failures, expired handles).
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// @brief A device call failed.
///
/// Thrown by both backends. The CUDA backend reports the CUDA runtime error; the simulated
/// device reports the CUDA error it imitates (an injected fault, an invalid value), so code that
/// handles one handles the other.
class CudaError : public Error {
 public:
  /// @param code       the numeric `cudaError_t` (or the imitated one on the sim)
  /// @param error_name e.g. "cudaErrorMemoryAllocation"
  /// @param call       the API call that failed, e.g. "cudaMemcpyAsync"
  /// @param doing      what gpulife was doing, e.g. "uploading 4096 B for tensor #12"
  /// @param where      the call site in gpulife
  CudaError(int code, std::string error_name, std::string call, std::string doing,
            std::source_location where = std::source_location::current());

  /// @return the numeric error code
  [[nodiscard]] int code() const noexcept { return code_; }
  /// @return the error's symbolic name
  [[nodiscard]] const std::string& error_name() const noexcept { return *error_name_; }
  /// @return the failing call
  [[nodiscard]] const std::string& call() const noexcept { return *call_; }

 private:
  int code_;
  // shared so that copying the exception cannot throw
  std::shared_ptr<const std::string> error_name_;
  std::shared_ptr<const std::string> call_;
};

/// @brief A device allocation failed after gpulife released what it could and retried.
///
/// It is a `std::bad_alloc`, so code that already handles allocation failure handles it. The
/// message names the request, the device and what was in use and cached when it failed.
class OutOfMemoryError : public std::bad_alloc {
 public:
  /// @param message   the full human-readable message
  /// @param requested the size of the request that failed, in bytes
  OutOfMemoryError(std::string message, std::size_t requested);

  /// @return the message given at construction
  [[nodiscard]] const char* what() const noexcept override { return message_->c_str(); }
  /// @return the size of the failed request in bytes
  [[nodiscard]] std::size_t requested_bytes() const noexcept { return requested_; }

 private:
  std::shared_ptr<const std::string> message_;
  std::size_t requested_;
};

/// @brief Access through a `WeakTensor` whose tensor has been released (Python's
/// `ReferenceError` for a dead `weakref.proxy`).
class ExpiredTensorError : public Error {
 public:
  using Error::Error;
};

namespace detail {

/// Throws `CudaError`; out of line so that the checks inlined into hot paths stay small.
[[noreturn]] void throw_cuda_error(int code, const char* error_name, const char* call,
                                   std::string doing,
                                   std::source_location where = std::source_location::current());

}  // namespace detail
}  // namespace gpulife
