// SPDX-License-Identifier: Apache-2.0
#include <gpulife/error_handler.hpp>

#include <cstdio>
#include <mutex>
#include <string>

namespace gpulife {
namespace {

void write_to_stderr(std::string_view message) {
  std::string line = "gpulife: ";
  line.append(message);
  line.push_back('\n');
  std::fwrite(line.data(), 1, line.size(), stderr);
}

// The one piece of process-wide state: it exists so that errors raised where no context is in
// reach (a stream worker, a destructor) still go somewhere the user chose.
struct HandlerSlot {
  std::mutex mutex;
  ErrorHandler handler{write_to_stderr};
};

HandlerSlot& slot() {
  static HandlerSlot instance;
  return instance;
}

}  // namespace

ErrorHandler default_error_handler() {
  std::scoped_lock lock(slot().mutex);
  return slot().handler;
}

ErrorHandler set_default_error_handler(ErrorHandler handler) {
  if (!handler) handler = write_to_stderr;
  std::scoped_lock lock(slot().mutex);
  std::swap(slot().handler, handler);
  return handler;
}

void report_error(std::string_view message) noexcept {
  try {
    default_error_handler()(message);
  } catch (...) {
    // A throwing handler must not turn a contained error into a crash.
    write_to_stderr(message);
  }
}

}  // namespace gpulife
