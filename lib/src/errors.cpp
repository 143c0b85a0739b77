// SPDX-License-Identifier: Apache-2.0
#include <gpulife/errors.hpp>

#include <string>

namespace gpulife {
namespace {

std::string cuda_error_message(int code, const std::string& error_name, const std::string& call,
                               const std::string& doing, const SourceLocation& where) {
  std::string message = call + " failed: " + error_name + " (" + std::to_string(code) + ")";
  if (!doing.empty()) message += " while " + doing;
  // Appended piece by piece: GCC 12 at -O3 warns (-Wrestrict, a false positive, GCC bug
  // 105329) on `const char* + std::string&&`, and the Release presets treat warnings as errors.
  message += " [";
  message += where.file_name();
  message += ':';
  message += std::to_string(where.line());
  message += ']';
  return message;
}

}  // namespace

CudaError::CudaError(int code, std::string error_name, std::string call, std::string doing,
                     SourceLocation where)
    : Error(cuda_error_message(code, error_name, call, doing, where)),
      code_(code),
      error_name_(std::make_shared<const std::string>(std::move(error_name))),
      call_(std::make_shared<const std::string>(std::move(call))) {}

OutOfMemoryError::OutOfMemoryError(std::string message, std::size_t requested)
    : message_(std::make_shared<const std::string>(std::move(message))), requested_(requested) {}

namespace detail {

void throw_cuda_error(int code, const char* error_name, const char* call, std::string doing,
                      SourceLocation where) {
  throw CudaError(code, error_name != nullptr ? error_name : "unknown error",
                  call != nullptr ? call : "?", std::move(doing), where);
}

}  // namespace detail
}  // namespace gpulife
